"""Leaf package: settings, domain errors, logging and time helpers shared by every stage."""
