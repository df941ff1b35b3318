"""The instruments: exact array bytes, process RSS and page faults.

* :func:`numpy_traced_bytes` -- tracemalloc's NumPy domain
  (``np.lib.tracemalloc_domain``): the bytes of the array buffers alive now,
  exactly, whatever the allocator does with them.
* :func:`rss_bytes`, :func:`rss_peak_bytes`, :func:`reset_rss_peak` -- the
  process's resident set size, as the second opinion (Linux ``/proc``,
  psutil elsewhere).
* :func:`rss_after_idle_purge` -- RSS once fastgrad's allocator has handed
  its idle blocks back: freed large blocks stay mapped for ``decay_ms``
  (250 ms by default) for reuse, then a purge thread unmaps them.
* :func:`minor_faults`, :func:`faults_without_thp` -- minor page faults:
  how much fresh memory a computation wrote.

Only the standard library and NumPy are imported (see
:mod:`fastgrad.profiling.workers`).
"""
import os
import resource
import sys
import time
import tracemalloc

import numpy as np


def numpy_traced_bytes():
    """Bytes of NumPy data buffers currently traced by tracemalloc (exact)."""
    domain = np.lib.tracemalloc_domain
    snap = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.DomainFilter(True, domain)]
    )
    return sum(t.size for t in snap.traces)


def rss_bytes():
    """Current resident set size of this process, in bytes (or None)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        pass
    try:
        import psutil
    except ImportError:
        return None
    return psutil.Process().memory_info().rss


def reset_rss_peak():
    """Reset the kernel's RSS high-water mark (VmHWM); False if impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def rss_peak_bytes():
    """Peak RSS of this process, in bytes (VmHWM, or ru_maxrss)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    # ru_maxrss is the lifetime peak (KiB on Linux); in a fresh worker whose
    # workload dwarfs its imports that is still the workload's peak.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def rss_after_idle_purge():
    """RSS once fastgrad's allocator has unmapped its idle blocks.

    The allocator keeps freed large blocks mapped for ``decay_ms`` for reuse;
    this waits that long plus 0.1 s (only the 0.1 s where fastgrad is not
    loaded: a peer's worker does not import it).
    """
    info = getattr(sys.modules.get("fastgrad"), "buffer_cache_info", None)
    decay = info()["decay_ms"] / 1e3 if info is not None else 0.0
    time.sleep(decay + 0.1)
    return rss_bytes()


def minor_faults():
    """Minor page faults of this process so far (``ru_minflt``)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def faults_without_thp(run):
    """Minor page faults of ``run()`` with transparent huge pages disabled.

    With 4 KiB pages only, a fresh array of ``n`` bytes costs exactly
    ``n / 4096`` faults, so this count is deterministic: it says how much
    fresh memory ``run`` writes.  None if prctl is unavailable (non-Linux).
    Call it last: it changes the process for good.
    """
    try:
        import ctypes

        pr_set_thp_disable = 41
        if ctypes.CDLL(None).prctl(pr_set_thp_disable, 1, 0, 0, 0) != 0:
            return None
    except (OSError, AttributeError):
        return None
    start = minor_faults()
    run()
    return minor_faults() - start


class Baseline:
    """The readings before a run, to measure the run against.

    Create it (with tracemalloc tracing) just before the run, call
    :meth:`after_run` as soon as it returns; :meth:`numpy_bytes` and
    :meth:`rss_after_idle_purge` read later states against the same
    baseline.  ``pause`` seconds of sleep before the run make the phases
    visible to a sampling profiler.
    """

    def __init__(self, pause=0.0):
        self.numpy = numpy_traced_bytes()
        self.traced = tracemalloc.get_traced_memory()[0]
        self.rss = rss_bytes()
        self._hwm_reset = reset_rss_peak()
        time.sleep(pause)
        tracemalloc.reset_peak()
        self.faults = minor_faults()      # last: nothing after it faults

    def after_run(self):
        """What the run did, in bytes above the baseline (and its faults).

        ``faults``: minor page faults; ``peak``: tracemalloc's peak, both
        domains; ``held``: NumPy's domain now; ``rss_held``, ``rss_peak``:
        RSS now and at its high-water mark (None where it cannot be reset).
        """
        faults = minor_faults() - self.faults   # first: the readings fault too
        return {
            "faults": faults,
            "peak": tracemalloc.get_traced_memory()[1] - self.traced,
            "held": self.numpy_bytes(),
            "rss_held": rss_bytes() - self.rss,
            "rss_peak": rss_peak_bytes() - self.rss if self._hwm_reset else None,
        }

    def numpy_bytes(self):
        """NumPy-domain bytes traced now, above the baseline."""
        return numpy_traced_bytes() - self.numpy

    def rss_after_idle_purge(self):
        """RSS above the baseline once the allocator's idle blocks are gone."""
        return rss_after_idle_purge() - self.rss
