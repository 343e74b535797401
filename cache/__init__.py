"""Loupe's content-addressed artifact cache (diskcache underneath)."""

from cache.errors import CacheError
from cache.keys import stable_hash
from cache.numba_dir import configure_numba_cache
from cache.store import Artifact, ArtifactStore, default_cache_dir

__all__ = ["Artifact", "ArtifactStore", "CacheError", "configure_numba_cache",
           "default_cache_dir", "stable_hash"]
