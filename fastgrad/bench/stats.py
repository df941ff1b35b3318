"""Statistics of a run: summaries, geometric means, growth exponents.

Plain functions of numbers and of a results document, imported by the
measurement, the targets and the tables alike (it imports none of them).
"""
import math
import statistics

import numpy as np


def summary(samples):
    """Median and quartiles (inclusive method) of a list of numbers."""
    s = sorted(samples)
    q = statistics.quantiles(s, n=4, method="inclusive") if len(s) > 1 else [s[0]] * 3
    return {"median": statistics.median(s), "q1": q[0], "q3": q[2],
            "min": s[0], "max": s[-1], "samples": list(samples)}


def percentile(sorted_values, p):
    """The ``p``-th percentile (0..100) of sorted values, linear between
    closest ranks (NumPy's default method)."""
    if not sorted_values:
        return None
    k = (len(sorted_values) - 1) * p / 100.0
    lo = math.floor(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def tail(samples):
    """Median, 95th percentile and worst of single-iteration times."""
    s = sorted(samples)
    return {"n": len(s), "median": percentile(s, 50), "p95": percentile(s, 95),
            "max": s[-1] if s else None, "samples": list(samples)}


def geomean(values):
    vals = [v for v in values if v and v > 0 and math.isfinite(v)]
    return math.exp(sum(map(math.log, vals)) / len(vals)) if vals else None


def paired_ratio(rec, peer, base, phase):
    """Median over rounds of ``peer`` time / ``base`` time in the record
    ``rec`` (rounds paired in order); the ratio of medians when either was
    timed once.  None when either has no such phase."""
    a, b = rec["peers"].get(peer, {}), rec["peers"].get(base, {})
    if a.get("status") != "ok" or b.get("status") != "ok":
        return None
    sa, sb = a["phases"].get(phase), b["phases"].get(phase)
    if sa is None or sb is None:
        return None
    pairs = list(zip(sa["samples"], sb["samples"]))
    if a.get("single") or b.get("single") or not pairs:
        pairs = [(sa["median"], sb["median"])]
    return statistics.median([x / y for x, y in pairs])


def exponents(doc, phase="bwd", lo=1_000, hi=100_000):
    """Growth exponent of ``phase`` time against N per (workload, peer): the
    least-squares slope of log t on log N over lo <= N <= hi (all N if
    fewer than two are in that window)."""
    series = {}
    for rec in doc["results"]:
        if rec["suite"] != "scaling":
            continue
        for peer, info in rec["peers"].items():
            if info["status"] == "ok" and phase in info["phases"]:
                series.setdefault((rec["workload"], peer), []).append(
                    (rec["params"]["n"], info["phases"][phase]["median"]))
    out = []
    for (workload, peer), pts in sorted(series.items()):
        use = [p for p in sorted(pts) if lo <= p[0] <= hi]
        use = use if len(use) >= 2 else sorted(pts)
        if len(use) >= 2:
            x, y = np.log([p[0] for p in use]), np.log([p[1] for p in use])
            out.append({"workload": workload, "peer": peer, "phase": phase,
                        "exponent": float(np.polyfit(x, y, 1)[0]),
                        "n_min": use[0][0], "n_max": use[-1][0]})
    return out
