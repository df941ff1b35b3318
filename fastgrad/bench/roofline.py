"""The roofline: this machine's memory bandwidth, and each cell's share of it.

Once per run, STREAM's copy and triad (``fastgrad._stream``, on fastgrad's
own thread pool) are timed on float64 arrays that fit in the last-level
cache and on arrays that do not, at each thread setting of the run.  The
best of many calls is the bandwidth (STREAM's rule: the machine can give
at least that).  A kernels or unary cell's effective bandwidth is the
workload's minimal bytes (``suites.Traffic``) over its median time; its
fraction is that over the triad bandwidth of the same regime (cache when
the phase's minimal bytes fit in the last-level cache, else DRAM) at the
same thread count.
"""
import glob
import os
import time

import numpy as np

GB = 1e9
# The kernels' mix of reads and writes is closest to the triad's (2 reads,
# 1 write); copy is measured and reported beside it.
ROOF_KERNEL = "triad"
ASSUMED_LLC = 32 * 2 ** 20


def llc_bytes():
    """Size of the last-level cache from sysfs (``None`` if unknown)."""
    best = None
    for d in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*"):
        try:
            with open(os.path.join(d, "level")) as f:
                level = int(f.read())
            with open(os.path.join(d, "type")) as f:
                kind = f.read().strip()
            with open(os.path.join(d, "size")) as f:
                text = f.read().strip()
        except (OSError, ValueError):
            continue
        if kind == "Instruction":
            continue
        scale = {"K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30}.get(text[-1:], 1)
        try:
            size = int(text.rstrip("KMG")) * scale
        except ValueError:
            continue
        if best is None or level > best[0]:
            best = (level, size)
    return best and best[1]


def sizes(llc):
    """Elements of the in-cache and the DRAM probe: the triad's three
    arrays take half the cache, or at least four times it (and 10^7)."""
    return {"cache": max(1 << 14, llc // 48), "dram": max(10 ** 7, -(-4 * llc // 24))}


def regime(nbytes, llc):
    return "cache" if nbytes <= llc else "dram"


def _time_call(fn, min_time, min_calls):
    fn()  # warm: pages touched, threads started
    times, started = [], time.perf_counter()
    while len(times) < min_calls or time.perf_counter() - started < min_time:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)


def measure(thread_counts, min_time=0.2, min_calls=10):
    """Bandwidth of copy and triad, in cache and DRAM, at each thread count.

    Returns the run document's ``roofline`` entry: ``status``, ``llc_bytes``
    (and whether it was assumed), the probe sizes and one row per
    (kernel, regime, threads) with the best and median GB/s.
    """
    try:
        import fastgrad
        from fastgrad import _stream
    except ImportError as exc:
        return {"status": "skipped", "reason": f"fastgrad._stream unavailable ({exc})"}
    llc = llc_bytes()
    out = {"status": "ok", "reason": None, "llc_bytes": llc or ASSUMED_LLC,
           "llc_assumed": llc is None, "kernel": ROOF_KERNEL, "rows": []}
    out["sizes"] = sizes(out["llc_bytes"])
    saved = fastgrad.get_num_threads()
    try:
        for where, n in out["sizes"].items():
            a, b, c = np.zeros(n), np.full(n, 1.0), np.full(n, 2.0)
            for threads in thread_counts:
                fastgrad.set_num_threads(threads)
                for kernel, nbytes, fn in (
                        ("copy", 16 * n, lambda: _stream.copy(a, b)),
                        ("triad", 24 * n, lambda: _stream.triad(a, b, c, 3.0))):
                    t = _time_call(fn, min_time, min_calls)
                    out["rows"].append({
                        "kernel": kernel, "regime": where, "n": n, "threads": threads,
                        "bytes": nbytes, "calls": len(t), "best_s": t[0],
                        "median_s": t[len(t) // 2], "gbps": nbytes / t[0] / GB,
                        "gbps_median": nbytes / t[len(t) // 2] / GB})
            del a, b, c
    finally:
        fastgrad.set_num_threads(saved)
    return out


def roof(probe, where, threads):
    """The triad bandwidth (GB/s) of ``where`` at ``threads``, or None."""
    if not probe or probe.get("status") != "ok":
        return None
    for row in probe["rows"]:
        if (row["kernel"], row["regime"], row["threads"]) == (probe["kernel"], where, threads):
            return row["gbps"]
    return None


def annotate(rec, suite, case, probe):
    """Add to the record of ``case`` its minimal bytes per phase, each
    phase's regime, and every peer's effective GB/s and roofline fraction."""
    traffic = getattr(suite, "traffic_bytes", None)
    if traffic is None or not suite.traffic:
        return
    llc = (probe or {}).get("llc_bytes") or ASSUMED_LLC
    phases = {}
    for phase in suite.rows:
        nbytes = traffic(case, phase)
        if nbytes is not None:
            where = regime(nbytes, llc)
            phases[phase] = {"bytes": nbytes, "regime": where,
                             "roof_gbps": roof(probe, where, rec["threads"])}
    rec["traffic"] = phases
    rec["bandwidth"] = {}
    for peer, info in rec["peers"].items():
        if info.get("status") != "ok":
            continue
        got = {}
        for phase, t in phases.items():
            st = info["phases"].get(phase)
            if st and st["median"] > 0:
                gbps = t["bytes"] / st["median"] / GB
                got[phase] = {"gbps": gbps,
                              "fraction": gbps / t["roof_gbps"] if t["roof_gbps"] else None}
        rec["bandwidth"][peer] = got
