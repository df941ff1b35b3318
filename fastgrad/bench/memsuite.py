"""Suite ``memory``: a thin wrapper around ``fastgrad.memory.collect``.

The measurements themselves live in ``fastgrad.memory`` (owned by the memory
tooling); this module only calls it, normalises the rows and reports the
suite as skipped when it is unavailable.
"""
import importlib

SUITE = "memory"
# (array size, depth): the memory issue's workload is 10^7 float64, depth 10.
# The default run uses 10^6 to stay within its time budget.
SIZES = {"quick": (100_000, 10), "default": (1_000_000, 10), "full": (10_000_000, 10)}


def run(opts, peers):
    """Return ``{"status", "reason", "size", "depth", "rows"}``; status is
    "ok", "skipped" (no fastgrad.memory) or "failed" (it raised).

    ``peers`` are the names of the peers available in this run.
    """
    size, depth = SIZES[opts.tier]
    if opts.sizes:
        size = opts.sizes[0]
    info = {"suite": SUITE, "size": size, "depth": depth, "rows": [],
            "status": "ok", "reason": None}
    try:
        memory = importlib.import_module("fastgrad.memory")
        collect = memory.collect
    except Exception as exc:
        info.update(status="skipped",
                    reason=f"fastgrad.memory.collect unavailable ({exc!r})")
        return info
    # collect() always measures fastgrad and accepts only the peers it knows.
    known = getattr(memory, "PEERS", ())
    wanted = [p for p in peers if p in known]
    try:
        rows = collect(size=size, depth=depth, peers=wanted)
    except Exception as exc:  # a crash in the memory tooling is a failure
        info.update(status="failed",
                    reason=f"fastgrad.memory.collect failed: {exc!r}".splitlines()[0])
        return info
    info["rows"] = [dict(r) for r in rows]
    if opts.filter:
        info["rows"] = [r for r in info["rows"]
                        if any(f in f"memory {r.get('workload', '')} {r.get('impl', '')}"
                               for f in opts.filter)]
    return info
