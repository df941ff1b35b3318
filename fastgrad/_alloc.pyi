"""Typing stub for the allocator of large results (fastgrad/_alloc.pyx)."""
from typing import TypedDict

class _CacheInfo(TypedDict):
    entries: int
    bytes: int
    max_entries: int
    max_bytes: int
    decay_ms: float
    min_bytes: int
    hits: int
    misses: int
    purged: int
    heap_trims: int

def buffer_cache_info() -> _CacheInfo: ...
def set_buffer_cache(max_entries: int | None = ..., max_bytes: int | None = ...,
                     decay_ms: float | None = ...) -> None: ...
def clear_buffer_cache() -> None: ...
