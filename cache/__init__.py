"""Loupe's content-addressed artifact cache (diskcache underneath)."""

from cache.keys import stable_hash
from cache.store import Artifact, ArtifactStore, default_cache_dir

__all__ = ["Artifact", "ArtifactStore", "default_cache_dir", "stable_hash"]
