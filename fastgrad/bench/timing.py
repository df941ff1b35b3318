"""Measurement core: calibrated loops, repeats, robust statistics.

The approach follows pyperf/asv: a warm-up iteration (which doubles as the
correctness check), a loop count calibrated so one repeat takes roughly the
target time, several repeats, the garbage collector disabled while timing, and
median/IQR statistics over the repeats.

A benchmark is a :class:`Bench`: ``setup()`` builds fresh inputs (untimed),
then a list of phases runs in order.  Each phase is timed on its own, so one
pass through a graph yields separate forward, backward and ``del`` times.
"""
import gc
import math
import resource
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional


@dataclass
class Phase:
    """One step of an iteration; untimed phases (e.g. capturing results) are
    only run in the checking iteration."""

    name: str
    fn: Callable
    timed: bool = True


@dataclass
class Bench:
    """A runnable benchmark for one (case, peer) pair.

    ``setup`` returns a fresh mutable state object that every phase receives.
    ``result`` reads the captured outputs (a dict name -> array-like) after
    the checking iteration so they can be compared with the reference.
    """

    setup: Callable
    phases: List[Phase]
    result: Callable = field(default=lambda state: {})
    # One untimed iteration before anything is measured, for peers whose
    # first call pays one-off costs (torch starts its thread pool on the
    # first large op): otherwise an over-budget single sample would be that.
    prewarm: bool = False


@dataclass
class Settings:
    """Knobs of the measurement loop."""

    target: float = 0.15        # seconds per repeat the loop count aims for
    repeats: int = 5            # timed repeats (the spec asks for >= 5)
    max_loops: int = 1_000_000
    noise_threshold: float = 0.10  # IQR/median above this is flagged noisy


class State:
    """Attribute bag handed to phases; ``graph`` holds references whose
    release the ``del`` phase times."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


def _minflt():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _iteration(bench, accum, capture):
    """Run one pass over the phases, adding each timed phase's duration."""
    perf = time.perf_counter
    state = bench.setup()
    for k, phase in enumerate(bench.phases):
        if phase.timed:
            t0 = perf()
            phase.fn(state)
            accum[k] += perf() - t0
        elif capture:
            phase.fn(state)
    return state


def quantiles(values):
    """Return (q1, median, q3) of ``values`` (inclusive method, works for n>=1)."""
    values = sorted(values)
    if len(values) == 1:
        return values[0], values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], statistics.median(values), q[2]


def summarize(samples):
    """Median, quartiles and IQR of per-call times from all repeats."""
    q1, med, q3 = quantiles(samples)
    return {
        "median": med,
        "q1": q1,
        "q3": q3,
        "iqr": q3 - q1,
        "samples": list(samples),
    }


def measure(bench: Bench, settings: Settings, repeats: Optional[int] = None,
            max_iteration: Optional[float] = None):
    """Time ``bench`` and return ``(stats, result)``.

    ``stats`` maps each timed phase name to :func:`summarize` output (seconds
    per iteration) plus ``total`` (sum of the timed phases), and carries
    ``loops``, ``repeats`` and ``page_faults`` (minor faults per iteration,
    median over repeats).  ``result`` is what ``bench.result`` captured in the
    warm-up iteration, for the correctness check.

    If the warm-up iteration alone takes longer than ``max_iteration``
    seconds, it is kept as the only sample (``stats["single"]`` is True)
    rather than repeated: one honest data point instead of minutes of wait.
    """
    repeats = repeats or settings.repeats
    timed = [k for k, p in enumerate(bench.phases) if p.timed]
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()  # keep collector pauses out of the timings
    try:
        if bench.prewarm:
            _iteration(bench, [0.0] * len(bench.phases), capture=False)
        # Warm-up + correctness: one full iteration with capture.
        accum = [0.0] * len(bench.phases)
        f0 = _minflt()
        state = _iteration(bench, accum, capture=True)
        first_faults = _minflt() - f0
        result = bench.result(state)
        del state
        first = sum(accum[k] for k in timed)
        if max_iteration is not None and first > max_iteration:
            return _single(bench, timed, accum, first_faults), result

        # Calibrate the loop count from a second, clean warm-up iteration
        # (the first one pays for lazy imports and cold caches).
        estimate = first
        if first < settings.target / 4:  # long iterations need no calibration
            accum = [0.0] * len(bench.phases)
            n = max(1, min(settings.max_loops, int(0.01 / max(first, 1e-9))))
            for _ in range(n):
                _iteration(bench, accum, capture=False)
            estimate = sum(accum[k] for k in timed) / n
        loops = max(1, min(settings.max_loops,
                           int(round(settings.target / max(estimate, 1e-9)))))

        per_phase = {k: [] for k in timed}
        faults = []
        for _ in range(repeats):
            gc.collect()  # untimed: cycles from earlier repeats go now
            accum = [0.0] * len(bench.phases)
            f0 = _minflt()
            for _ in range(loops):
                _iteration(bench, accum, capture=False)
            faults.append((_minflt() - f0) / loops)
            for k in timed:
                per_phase[k].append(accum[k] / loops)
    finally:
        if gc_was_enabled:
            gc.enable()
        gc.collect()

    stats = {"loops": loops, "repeats": repeats, "single": False,
             "page_faults": statistics.median(faults), "phases": {}}
    for k in timed:
        stats["phases"][bench.phases[k].name] = summarize(per_phase[k])
    totals = [sum(per_phase[k][r] for k in timed) for r in range(repeats)]
    stats["phases"]["total"] = summarize(totals)
    return stats, result


def _single(bench, timed, accum, faults):
    """Stats made of the warm-up iteration only (see :func:`measure`)."""
    stats = {"loops": 1, "repeats": 1, "single": True, "page_faults": faults,
             "phases": {}}
    for k in timed:
        stats["phases"][bench.phases[k].name] = summarize([accum[k]])
    stats["phases"]["total"] = summarize([sum(accum[k] for k in timed)])
    return stats


def is_noisy(summary, threshold):
    """True when the spread of a summary is large relative to its median."""
    med = summary["median"]
    return med > 0 and summary["iqr"] / med > threshold


def fit_exponent(ns, times):
    """Least-squares slope of log(time) against log(N).

    Returns ``None`` when fewer than two usable points exist.  A slope near 1
    means linear growth, near 2 quadratic.
    """
    pts = [(math.log(n), math.log(t)) for n, t in zip(ns, times)
           if n > 0 and t is not None and t > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    if sxx == 0:
        return None
    sxy = sum((p[0] - mx) * (p[1] - my) for p in pts)
    return sxy / sxx
