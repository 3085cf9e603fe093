"""Pydantic contracts shared by every stage: readings, catalogue, keys, pages."""
