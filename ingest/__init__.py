"""Ingest stage: sources, units, QC flags and the pipeline that batches readings into the store."""
