"""The engine-speed issue's targets, evaluated on a run's records.

Each target is a ratio ``peer time / fastgrad time`` (or a fitted exponent, or
a bandwidth fraction) with a threshold.  Targets whose cells were not measured
in this run are reported as "n/a", never as passed.
"""
import math

from .cases import fmt_n
from .compare import geomean
from .report import fmt_ratio


def _median(index, label, peer, phase):
    r = index.get((label, peer))
    if not r or r["status"] != "ok":
        return None
    ph = r["stats"]["phases"].get(phase)
    return ph["median"] if ph else None


def _ratio(index, label, peer, phase):
    a = _median(index, label, peer, phase)
    b = _median(index, label, "fastgrad", phase)
    return a / b if a and b else None


def evaluate(records, exponents, ceiling):
    """Return a list of {"target", "value", "threshold", "ok"} dicts."""
    idx = {(r["label"], r["peer"]): r for r in records}
    out = []

    def add(text, value, threshold, higher_is_better=True, fmt=None):
        if value is None:
            ok, shown = None, "n/a"
        else:
            ok = value >= threshold if higher_is_better else value <= threshold
            shown = fmt.format(value) if fmt else fmt_ratio(value)
        out.append({"target": text, "value": value, "threshold": threshold,
                    "ok": ok, "shown": shown})

    for label, name in (("overhead goldstein", "Goldstein-Price"),
                        ("overhead chain 1e3", "1000-step chain")):
        for peer in ("dezero", "torch"):
            add(f"{name} fwd+bwd: {peer}/fastgrad >= 8x",
                _ratio(idx, label, peer, "total"), 8)
    add("user-Function chain 1e4 fwd+bwd: dezero/fastgrad >= 1x",
        _ratio(idx, "overhead userfunc 1e4", "dezero", "total"), 1)
    add("wide sum N=1e4 backward: dezero/fastgrad >= 100x",
        _ratio(idx, "scaling wide 1e4", "dezero", "bwd"), 100)
    add("wide sum N=1e4 backward: torch/fastgrad >= 10x",
        _ratio(idx, "scaling wide 1e4", "torch", "bwd"), 10)
    for e in exponents:
        if e["peer"] == "fastgrad" and e["exponent"] is not None:
            add(f"{e['workload']} backward growth exponent (N {fmt_n(e['n_min'])}.."
                f"{fmt_n(e['n_max'])}) <= 1.1", e["exponent"], 1.1,
                higher_is_better=False, fmt="{:.3f}")
    add("deep chain 1e5 backward: dezero/fastgrad >= 8x",
        _ratio(idx, "scaling deep 1e5", "dezero", "bwd"), 8)
    deep6 = idx.get(("scaling deep 1e6", "fastgrad"))
    if deep6:
        add("deep chain 1e6 fwd/bwd/del completes", 1.0 if deep6["status"] == "ok"
            else 0.0, 1.0, fmt="{:.0f}")
        add("deep chain 1e6 del: dezero/fastgrad >= 1x",
            _ratio(idx, "scaling deep 1e6", "dezero", "del"), 1)

    kern = sorted({r["label"] for r in records if r["suite"] == "kernels"})
    for peer, threshold in (("dezero", 3), ("torch", 1.5)):
        ratios = [_ratio(idx, lb, peer, "total") for lb in kern]
        gm = geomean([r for r in ratios if r]) if any(ratios) else None
        add(f"kernels fwd+bwd geomean: {peer}/fastgrad >= {threshold}x", gm, threshold)
    dz = [r for r in (_ratio(idx, lb, "dezero", "total") for lb in kern) if r]
    add("kernels: slowest cell dezero/fastgrad >= 1x", min(dz) if dz else None, 1)
    two = [c for c in ceiling or [] if c.get("threads") == 2 and "triad" in c["method"]]
    if two:
        cap = two[0]["gbps"]
        for lb in kern:
            if (" add " in lb or " mul " in lb) and lb.endswith(" 1e7"):
                r = idx.get((lb, "fastgrad"))
                g = r["gbps"].get("total") if r and r["status"] == "ok" else None
                add(f"{lb.replace('kernels ', '')}: fastgrad GB/s >= 2-thread "
                    f"STREAM/1.5 ({cap / 1.5:.1f})", g, cap / 1.5, fmt="{:.1f} GB/s")
    else:
        add("add/mul 1e7 within 1.5x of the 2-thread STREAM ceiling", None, math.nan)
    return out


def format_targets(results):
    """Text block: one line per target with PASS/MISS/n/a."""
    lines = ["== engine-speed targets (this run) =="]
    for t in results:
        if t["ok"] is None:
            continue
        mark = "PASS" if t["ok"] else "MISS"
        lines.append(f"  {mark}  {t['target']}: {t['shown']}")
    missing = sum(t["ok"] is None for t in results)
    if missing:
        lines.append(f"  ({missing} target(s) not measured in this run; see --json)")
    return "\n".join(lines)
