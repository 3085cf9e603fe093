"""Composition root: the CLI and the processes it runs (api, worker, serve, demo)."""
