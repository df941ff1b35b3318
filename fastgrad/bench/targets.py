"""Evaluation of the acceptance targets on a run.

The targets are data: ``targets.json`` beside this module (installed with
the package, so the installed CLI finds it), or any file given with
``--targets``.  Its ``targets`` list holds one object per target:

* ``kind``: ``ratio`` (one case: ``case`` is its label without the thread
  setting), ``geomean`` or ``min`` (over every case of ``suite``), or
  ``exponent`` (fastgrad's growth exponent of the scaling ``workload``);
* ``peer``, ``phase``, and ``base`` (the peer measured against; default
  fastgrad): a ratio is peer time / base time, the median of per-round
  ratios;
* ``at_least`` (ratios) or ``at_most`` (exponents); ``why`` optional.

A target on a threaded suite is evaluated at each thread setting the run
measured (both peers at that same thread count).  A target whose cells
were not measured is "n/a", never a pass.
"""
import json
import os

from . import peers as P
from .stats import exponents, geomean, paired_ratio

DEFAULT_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "targets.json")
KINDS = ("ratio", "geomean", "min", "exponent")
_SCOPE = {"ratio": "case", "geomean": "suite", "min": "suite", "exponent": "workload"}


def load(path=None):
    """The list of targets in ``path`` (default: the shipped file); raises
    ValueError naming the file and the problem."""
    path = path or DEFAULT_PATH
    try:
        with open(path) as f:
            doc = json.load(f)
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the targets ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None
    rows = doc.get("targets") if isinstance(doc, dict) else None
    if not isinstance(rows, list):
        raise ValueError(f"{path}: no 'targets' list")
    for i, t in enumerate(rows):
        where = f"{path}: target {i + 1}"
        if not isinstance(t, dict) or t.get("kind") not in KINDS:
            raise ValueError(f"{where}: 'kind' must be one of {', '.join(KINDS)}")
        bound = "at_most" if t["kind"] == "exponent" else "at_least"
        missing = [k for k in (_SCOPE[t["kind"]], "peer", "phase", bound) if k not in t]
        if missing:
            raise ValueError(f"{where} ({t['kind']}): missing {', '.join(missing)}")
        if not isinstance(t[bound], (int, float)) or isinstance(t[bound], bool):
            raise ValueError(f"{where}: {bound} must be a number, not {t[bound]!r}")
    return rows


def _fmt_ratio(r):
    return f"{r:.3g}x" if r < 100 else f"{r:,.0f}x"


def _base_label(rec):
    return rec.get("base_label", rec["label"])


def _groups(recs):
    """Records by thread setting: {threads or None: [records]}."""
    out = {}
    for rec in recs:
        out.setdefault(rec.get("threads") if rec.get("threaded") else None, []).append(rec)
    return out


def _ratio(rec, peer, base, phase):
    if base == P.REFERENCE:
        r = rec["ratios"].get(peer, {}).get(phase)
        return r and r["median"]
    return paired_ratio(rec, peer, base, phase)


def _result(text, value, ok, threads, shown):
    return {"target": text, "value": value, "ok": ok, "threads": threads,
            "shown": "n/a" if value is None else shown}


def evaluate(doc, targets=None):
    """One dict per target and thread setting: its text, the measured value,
    ``ok`` (True, False, or None when not measured)."""
    targets = load() if targets is None else targets
    out = []
    for t in targets:
        kind, peer, phase = t["kind"], t["peer"], t["phase"]
        if kind == "exponent":
            e = {(x["workload"], x["peer"], x["phase"]): x
                 for x in exponents(doc)}.get((t["workload"], peer, phase))
            value = e and e["exponent"]
            out.append(_result(f"{t['workload']} {phase} growth exponent of {peer} <= "
                               f"{t['at_most']}", value,
                               None if value is None else value <= t["at_most"], None,
                               f"{value:.3f}" if value is not None else ""))
            continue
        base, bound = t.get("base", P.REFERENCE), t["at_least"]
        if kind == "ratio":
            recs = [r for r in doc["results"] if _base_label(r) == t["case"]]
        else:
            recs = [r for r in doc["results"] if r["suite"] == t["suite"]]
        groups = _groups(recs) or {None: []}
        for threads, group in groups.items():
            values = [v for v in (_ratio(r, peer, base, phase) for r in group) if v]
            if kind == "ratio":
                value, scope = (values[0] if values else None), t["case"]
            else:
                value = (geomean(values) if kind == "geomean" else min(values)) if values else None
                scope = f"{t['suite']} ({kind} of {len(values)} cases)"
            thr = "" if threads is None else f" thr={threads}"
            text = f"{scope}{thr} {phase}: {peer}/{base} >= {bound}x"
            out.append(_result(text, value, None if value is None else value >= bound,
                               threads, _fmt_ratio(value) if value else ""))
    return out


def format_targets(results, path=None):
    if not results:
        return ""
    where = "benchmarks/README.md" if path in (None, DEFAULT_PATH) else path
    lines = [f"== targets ({where}) =="]
    lines += [f"  {'PASS' if t['ok'] else 'MISS'}  {t['target']}: {t['shown']}"
              for t in results if t["ok"] is not None]
    missing = sum(t["ok"] is None for t in results)
    if missing:
        lines.append(f"  ({missing} target(s) not measured in this run)")
    return "\n".join(lines)
