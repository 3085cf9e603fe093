"""HJ 212-2017/2025 uploads from monitoring stations: the pure protocol codec and its API."""

from ingest.sources.hj212 import protocol
from ingest.sources.hj212.protocol import *  # noqa: F403 (the codec's API is its __all__)

__all__ = protocol.__all__
