"""``fastgrad-bench compare A.json B.json``: per-row verdicts and geomean."""
import json
import math

from .report import SCHEMA, fmt_num, pick_unit, render


def load(path):
    """Read a results file, checking that it is one of ours."""
    with open(path) as f:
        doc = json.load(f)
    if doc.get("schema") != SCHEMA:
        raise ValueError(f"{path}: not a {SCHEMA} results file")
    return doc


def rows_of(doc):
    """{(label, peer, phase): phase stats} for every measured cell."""
    out = {}
    for r in doc.get("results", []):
        if r.get("status") != "ok" or not r.get("stats"):
            continue
        for phase, st in r["stats"]["phases"].items():
            out[(r["label"], r["peer"], phase)] = st
    return out


def verdict(a, b, factor=1.05):
    """Classify B against A from medians and interquartile ranges.

    "not significant" when the [q1, q3] intervals overlap or the change is
    smaller than ``factor``; otherwise "faster" (B takes less time) or
    "slower".  Returns ``(verdict, ratio B/A)``.
    """
    ratio = b["median"] / a["median"] if a["median"] > 0 else math.inf
    overlap = a["q1"] <= b["q3"] and b["q1"] <= a["q3"]
    if overlap or (1 / factor < ratio < factor):
        return "not significant", ratio
    return ("faster" if ratio < 1 else "slower"), ratio


def geomean(values):
    """Geometric mean of positive values (None if there are none)."""
    vals = [v for v in values if v and v > 0 and math.isfinite(v)]
    if not vals:
        return None
    return math.exp(sum(math.log(v) for v in vals) / len(vals))


def compare(doc_a, doc_b, factor=1.05, peer=None, phase=None):
    """Return (list of row dicts, geometric mean of B/A ratios)."""
    a_rows, b_rows = rows_of(doc_a), rows_of(doc_b)
    rows = []
    for key in a_rows:
        if key not in b_rows:
            continue
        if peer and key[1] != peer:
            continue
        if phase and key[2] != phase:
            continue
        v, ratio = verdict(a_rows[key], b_rows[key], factor)
        rows.append({"label": key[0], "peer": key[1], "phase": key[2],
                     "a": a_rows[key]["median"], "b": b_rows[key]["median"],
                     "ratio": ratio, "verdict": v})
    return rows, geomean(r["ratio"] for r in rows)


def format_compare(rows, gm, name_a="A", name_b="B"):
    """Text table of :func:`compare` output."""
    if not rows:
        return "no rows in common"
    # Rows span ns to s, so each row gets its own unit (the ratio is unitless).
    def fmt_time(a, b):
        name, scale = pick_unit([a, b])
        return f"{fmt_num(a / scale)} {name}", f"{fmt_num(b / scale)} {name}"
    body = [[r["label"], r["peer"], r["phase"], *fmt_time(r["a"], r["b"]),
             f"{r['ratio']:.3f}", r["verdict"]] for r in rows]
    counts = {v: sum(r["verdict"] == v for r in rows)
              for v in ("faster", "slower", "not significant")}
    text = render(["case", "peer", "phase", name_a, name_b, "B/A", "verdict"], body,
                  align_left=3)
    summary = ", ".join(f"{n} {v}" for v, n in counts.items())
    gm_text = "n/a" if gm is None else f"{gm:.3f} (B/A; <1 means B is faster)"
    return f"{text}\n\n{summary}\ngeometric mean of B/A over {len(rows)} rows: {gm_text}"
