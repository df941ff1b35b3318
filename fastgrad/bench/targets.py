"""The acceptance targets, as data, and their evaluation on a run.

A row is ``(kind, case, peer, phase, threshold)``, optionally followed by
the peer it is measured against (fastgrad by default: ratios are peer time /
base time, paired round by round):

* ``ratio``: the median per-round ratio peer / fastgrad of ``case`` must be
  at least ``threshold``;
* ``geomean`` / ``min``: the geometric mean / the smallest of those ratios
  over every case of the suite named in ``case``;
* ``exponent``: fastgrad's growth exponent of ``phase`` time for the scaling
  workload ``case`` must be at most ``threshold``.

A target whose cells were not measured in a run is "n/a", never a pass.
"""
import statistics

from . import peers as P
from .report import exponents, fmt_ratio, geomean

TARGETS = (
    ("ratio", "overhead goldstein", "dezero", "total", 8),
    ("ratio", "overhead goldstein", "torch", "total", 8),
    ("ratio", "overhead chain 1e3", "dezero", "total", 8),
    ("ratio", "overhead chain 1e3", "torch", "total", 8),
    ("ratio", "overhead userfunc 1e4", "dezero", "total", 1),
    ("ratio", "scaling wide 1e4", "dezero", "bwd", 100),
    ("ratio", "scaling wide 1e4", "torch", "bwd", 10),
    ("ratio", "scaling deep 1e5", "dezero", "bwd", 8),
    ("ratio", "scaling deep 1e6", "dezero", "del", 1),
    ("exponent", "wide", "fastgrad", "bwd", 1.1),
    # Memory-bound kernels: their floor is the bytes they must move, and add
    # cannot match DeZero, whose two input grads share one array (which
    # fastgrad's no-alias rule forbids); see benchmarks/README.md.
    ("geomean", "kernels", "dezero", "total", 1),
    ("geomean", "kernels", "torch", "total", 1.5),
    # The full API (fastgrad.dezero against DeZero's full core).
    ("geomean", "unary", "dezero-full", "total", 2),
    ("geomean", "unary", "torch", "total", 1),
    ("ratio", "scalar-fns expr", "dezero-full", "total", 20),
    ("ratio", "newton quartic 10", "dezero-full", "total", 1),
    ("geomean", "lstsq", "dezero-full", "total", 1),
    ("ratio", "mlp spiral 10", "dezero-full", "total", 5),
    ("ratio", "mlp spiral 10", "torch", "total", 2),
    # Convolution and pooling (compiled kernels, DeZero's BLAS calls).
    ("ratio", "conv small 1 4 16", "dezero-full", "total", 3),
    ("ratio", "conv small 1 4 16", "torch", "total", 1),
    ("ratio", "conv rgb 3 8 32", "dezero-full", "total", 3),
    ("ratio", "conv rgb 3 8 32", "torch", "total", 1),
    ("ratio", "conv vgg16 224 float32", "dezero-full", "total", 2),
    # fastgrad.trace.
    ("ratio", "overhead goldstein", "jax-jit", "total", 2, "fastgrad-trace"),
    ("ratio", "overhead goldstein", "dezero", "total", 100, "fastgrad-trace"),
    ("ratio", "overhead chain 1e3", "jax-jit", "total", 2, "fastgrad-trace"),
    ("ratio", "loop rosenbrock", "fastgrad", "total", 5, "fastgrad-trace"),
)


def _paired(rec, peer, base, phase):
    """Median over rounds of peer time / base time in ``rec``."""
    a = rec["peers"].get(peer, {})
    b = rec["peers"].get(base, {})
    if a.get("status") != "ok" or b.get("status") != "ok":
        return None
    sa, sb = a["phases"].get(phase), b["phases"].get(phase)
    if sa is None or sb is None:
        return None
    pairs = list(zip(sa["samples"], sb["samples"]))
    if a.get("single") or b.get("single") or len(pairs) < 1:
        pairs = [(sa["median"], sb["median"])]
    return statistics.median([x / y for x, y in pairs])


def evaluate(doc, targets=TARGETS):
    """One dict per target: its text, the measured value and PASS/MISS/n/a."""
    ratios = {(r["label"], peer, ph): v["median"] for r in doc["results"]
              for peer, by_phase in r["ratios"].items() for ph, v in by_phase.items()}
    exps = {(e["workload"], e["peer"], e["phase"]): e for e in exponents(doc)}
    by_label = {r["label"]: r for r in doc["results"]}
    out = []
    for kind, case, peer, phase, threshold, *rest in targets:
        base = rest[0] if rest else P.REFERENCE
        if base != P.REFERENCE:
            rec = by_label.get(case)
            value = rec and _paired(rec, peer, base, phase)
            text = f"{case} {phase}: {peer}/{base} >= {threshold}x"
        elif kind == "exponent":
            e = exps.get((case, peer, phase))
            value = e and e["exponent"]
            text = f"{case} {phase} growth exponent of {peer} <= {threshold}"
        else:
            if kind == "ratio":
                values = [ratios.get((case, peer, phase))]
            else:
                values = [v for (lb, p, ph), v in ratios.items()
                          if lb.split(" ")[0] == case and p == peer and ph == phase]
            value = {"ratio": values[0], "geomean": geomean(values),
                     "min": min(values, default=None)}[kind] if any(values) else None
            scope = case if kind == "ratio" else f"{case} ({kind} of {len(values)} cases)"
            text = f"{scope} {phase}: {peer}/fastgrad >= {threshold}x"
        ok = None if value is None else (value <= threshold if kind == "exponent"
                                         else value >= threshold)
        out.append({"target": text, "value": value, "ok": ok,
                    "shown": "n/a" if value is None else
                    (f"{value:.3f}" if kind == "exponent" else fmt_ratio(value))})
    return out


def format_targets(results):
    if not results:
        return ""
    lines = ["== targets (benchmarks/README.md) =="]
    lines += [f"  {'PASS' if t['ok'] else 'MISS'}  {t['target']}: {t['shown']}"
              for t in results if t["ok"] is not None]
    missing = sum(t["ok"] is None for t in results)
    if missing:
        lines.append(f"  ({missing} target(s) not measured in this run)")
    return "\n".join(lines)
