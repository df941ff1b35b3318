"""fastgrad: fast reverse-mode automatic differentiation with DeZero's API.

``import fastgrad as dezero`` runs code written for DeZero's stage 2
(``dezero.core_simple``) unchanged, on a compiled engine.
"""
from fastgrad._core import PURE
from fastgrad.core_simple import *  # noqa: F401,F403 - the public API
from fastgrad.core_simple import __all__, setup_variable
from fastgrad._trace import TraceMismatchError, Traced, TraceWarning, run_on_replay, trace

# Large results reuse hot memory, handed back when idle (see README, "Memory").
from fastgrad._alloc import buffer_cache_info, clear_buffer_cache, set_buffer_cache
from fastgrad._threads import get_num_threads, set_num_threads

__version__ = "0.1.0"

setup_variable()
