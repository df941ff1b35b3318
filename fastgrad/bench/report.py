"""Tables, machine metadata, the JSON document, ``compare`` and ``show``."""
import json
import math
import os
import platform
import subprocess
import sys
import time

import numpy as np

from . import peers as P
from . import targets as TG
from .stats import exponents, geomean
from .suites import SUITES, fmt_n

# 3: thread settings (a record's "threads", labels "... thr=N"), the
# roofline ("roofline", a record's "traffic" and "bandwidth"), single
# iterations (a peer's "tail", "cores").  Version 2 files are a subset.
SCHEMA = "fastgrad-bench/3"
READABLE = ("fastgrad-bench/2", SCHEMA)
UNITS = (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9))
ENV_PREFIXES = ("MALLOC_", "FASTGRAD_", "OMP_", "MKL_", "OPENBLAS_", "XLA_", "JAX_",
                "PYTHONMALLOC", "LD_PRELOAD")


# ---------------------------------------------------------------------------
# machine metadata
# ---------------------------------------------------------------------------
def _proc(path, key):
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None


def fastgrad_build():
    """Which fastgrad was measured: its path, the engine's mtime and, in a
    git checkout, the commit and whether the sources had local changes."""
    info = {}
    try:
        import fastgrad
        from fastgrad import _core
        info["path"] = os.path.dirname(fastgrad.__file__)
        info["core_mtime"] = time.strftime("%Y-%m-%dT%H:%M:%S",
                                           time.gmtime(os.path.getmtime(_core.__file__)))
        repo = os.path.dirname(info["path"])
        git = ["git", "-C", repo]
        head = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(git + ["status", "--porcelain", "fastgrad"],
                               capture_output=True, text=True)
        if head.returncode == 0:
            info.update(git_commit=head.stdout.strip(), git_dirty=bool(dirty.stdout.strip()))
    except Exception as exc:
        info["error"] = repr(exc)
    return info


def machine(peer_status):
    """Everything needed to judge whether two runs are comparable."""
    try:
        blas = {k: v for k, v in np.show_config(mode="dicts")["Build Dependencies"].items()
                if k in ("blas", "lapack")}
    except Exception as exc:
        blas = {"error": repr(exc)}
    mem = _proc("/proc/meminfo", "MemTotal")
    try:  # the thread pools loaded in this process, as threadpoolctl sees them
        import threadpoolctl
        pools = threadpoolctl.threadpool_info()
    except Exception as exc:
        pools = {"error": repr(exc)}
    return {
        "cpu_model": _proc("/proc/cpuinfo", "model name") or platform.processor(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else None,
        "mem_total_bytes": int(mem.split()[0]) * 1024 if mem else None,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "numpy": np.__version__, "numpy_blas": blas, "threadpools": pools,
        "peers": peer_status,
        "env": {k: v for k, v in sorted(os.environ.items()) if k.startswith(ENV_PREFIXES)},
        "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


# ---------------------------------------------------------------------------
# formatting
# ---------------------------------------------------------------------------
def pick_unit(seconds):
    """The largest unit in which the smallest value is at least 1."""
    values = [s for s in seconds if s and s > 0]
    for name, scale in UNITS:
        if values and min(values) >= scale:
            return name, scale
    return UNITS[-1] if values else UNITS[0]


def fmt_num(x):
    if x is None:
        return "-"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.4g}" if abs(x) >= 0.001 or x == 0 else f"{x:.2e}"


def _fmt3(x):
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}"


def fmt_ratio(r):
    return "-" if r is None else (f"{r:.3g}x" if r < 100 else f"{r:,.0f}x")


def render(headers, rows, left=2):
    """Plain-text table; the first ``left`` columns are left aligned."""
    widths = [max([len(str(h))] + [len(str(r[i])) for r in rows])
              for i, h in enumerate(headers)]

    def line(cells):
        return "  ".join(str(c).ljust(w) if i < left else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return "\n".join([line(headers), line(["-" * w for w in widths])]
                     + [line(r) for r in rows])


def _phase_label(suite, phase):
    if phase == "total":
        return {"mlp": "step", "newton": "10 steps"}.get(suite.name, "fwd+bwd")
    return phase


def _case(rec, name):
    """A record's case column: its label without the suite and threads."""
    return rec.get("base_label", rec["label"])[len(name) + 1:]


def _status_cell(info):
    if not info:
        return ""
    return {"skipped": "skip", "failed": "FAIL"}.get(info["status"])


def _threaded(recs):
    return any(r.get("threaded") for r in recs)


THREADS_NOTE = ("thr: the thread count of every peer (fastgrad's pool, NumPy's BLAS, "
                "torch's intra-op threads; jax and jax-jit: XLA's Eigen pool off at 1, "
                "XLA's own count above); ratios pair cells of the same thr")


def _columns(recs):
    peers = [p for p in P.PEERS if any(p in r["peers"] for r in recs)]
    others = [p for p in peers if p != P.REFERENCE]
    return ([P.REFERENCE] + others if P.REFERENCE in peers else others), others


def suite_table(doc, name, times=False):
    """The table of suite ``name``: rows = case x phase (x thread setting);
    fastgrad's median time, then each peer's ratio to it at the same
    setting (or, ``times``, each peer's time)."""
    suite, recs = SUITES[name], [r for r in doc["results"] if r["suite"] == name]
    info = doc.get("suites", {}).get(name, {})
    if info.get("status") == "skipped":
        return f"== {suite.title} ==\nSKIP: {info['reason']}"
    if not recs:
        return ""
    order, others = _columns(recs)
    threaded = _threaded(recs)

    def t(rec, peer, phase):
        info = rec["peers"].get(peer, {})
        ph = info.get("phases", {}).get(phase) if info.get("status") == "ok" else None
        return ph and ph["median"] / (rec["ops"] if suite.per_op else 1)

    unit, scale = pick_unit([t(r, P.REFERENCE, ph) for r in recs for ph in suite.rows])
    rows, gm = [], {}
    for rec in recs:
        thr = [str(rec.get("threads", ""))] if threaded else []
        for phase in suite.rows:
            row = [_case(rec, name), _phase_label(suite, phase)] + thr
            for peer in order:
                info = rec["peers"].get(peer)
                if not info or info["status"] != "ok":
                    row.append(_status_cell(info))
                elif peer == P.REFERENCE or times:
                    v = t(rec, peer, phase)
                    row.append("" if v is None else fmt_num(v / scale)
                               + ("*" if info.get("single") else ""))
                else:
                    r = rec["ratios"].get(peer, {}).get(phase)
                    row.append(_ratio_cell(r))
                    if r:
                        gm.setdefault((peer, phase, rec.get("threads")), []).append(
                            r["median"])
            rows.append(row)
    if suite.geomean and not times and gm:
        settings = sorted({k[2] for k in gm}, key=lambda v: (v is None, v))
        for n in settings:
            for phase in suite.rows:
                rows.append(["geomean", _phase_label(suite, phase)]
                            + ([str(n)] if threaded else []) + [""]
                            + [fmt_ratio(geomean(gm.get((p, phase, n), []))) for p in others])
    what = f"{unit} per op" if suite.per_op else unit
    rounds = doc["settings"]["rounds"]
    how = f"median of {rounds} interleaved rounds, ±: half their interquartile range"
    head = (f"== {suite.title} ==\n"
            + (f"(median {what}; * one iteration)" if times else
               f"(fastgrad: median {what}; others: their time / fastgrad's, {how}; "
               f">1x: fastgrad faster; * one iteration, not interleaved)"))
    if threaded:
        head += "\n(" + THREADS_NOTE + ")"
    headers = ["case", "phase"] + (["thr"] if threaded else []) + order
    blocks = [head, render(headers, rows)] + _notes(recs)
    if not times:
        blocks += [x for x in (bandwidth_table(doc, name), tail_table(doc, name)) if x]
    return "\n".join(blocks)


def _gbps_cell(bw):
    if not bw:
        return ""
    frac = bw.get("fraction")
    return f"{bw['gbps']:.3g}" + ("" if frac is None else f" {frac:.0%}")


def bandwidth_table(doc, name):
    """Effective GB/s of every peer per cell and phase, and its fraction of
    the probe's bandwidth for the cell's regime and thread count."""
    recs = [r for r in doc["results"] if r["suite"] == name and r.get("traffic")]
    if not recs:
        return ""
    order, _ = _columns(recs)
    suite, rows = SUITES[name], []
    for rec in recs:
        for phase, t in rec["traffic"].items():
            row = [_case(rec, name), _phase_label(suite, phase), str(rec.get("threads", "")),
                   f"{t['bytes'] / 1e6:.4g}", t["regime"],
                   "-" if t.get("roof_gbps") is None else f"{t['roof_gbps']:.3g}"]
            for peer in order:
                info = rec["peers"].get(peer)
                if not info or info["status"] != "ok":
                    row.append(_status_cell(info))
                else:
                    row.append(_gbps_cell(rec.get("bandwidth", {}).get(peer, {}).get(phase)))
            rows.append(row)
    head = (f"-- {name}: effective bandwidth, GB/s = minimal bytes (MB) / median time, "
            "and its fraction of roof, the measured triad bandwidth (GB/s) of the "
            "cell's regime at the same thread count --")
    return "\n" + head + "\n" + render(["case", "phase", "thr", "MB", "regime", "roof"]
                                         + order, rows)


def tail_table(doc, name):
    """Single-iteration times per peer: median / 95th percentile / worst,
    and the cores a peer kept busy (CPU time / wall time)."""
    recs = [r for r in doc["results"] if r["suite"] == name
            and any("tail" in i for i in r["peers"].values())]
    if not recs:
        return ""
    order, _ = _columns(recs)
    unit, scale = pick_unit([i["tail"]["median"] for r in recs for i in r["peers"].values()
                             if i.get("tail")])
    rows = []
    for rec in recs:
        row = [_case(rec, name), str(rec.get("threads", ""))]
        for peer in order:
            info = rec["peers"].get(peer)
            if not info or info["status"] != "ok":
                row.append(_status_cell(info))
                continue
            tl = info.get("tail")
            cell = "" if not tl else "/".join(_fmt3(tl[k] / scale)
                                               for k in ("median", "p95", "max"))
            if info.get("cores"):
                cell += f" {info['cores']:.1f}c"
            row.append(cell)
        rows.append(row)
    head = (f"-- {name}: single iterations over all rounds, {unit}: median/p95/worst; "
            "Nc: CPU time / wall time while timed (cores kept busy) --")
    return "\n" + head + "\n" + render(["case", "thr"] + order, rows)


def roofline_table(probe):
    """The bandwidth probe's rows."""
    if not probe:
        return ""
    head = ("== roofline: STREAM copy and triad, float64, on fastgrad's thread pool "
            "(fastgrad._stream), best of repeated calls ==")
    if probe.get("status") != "ok":
        return f"{head}\n{probe.get('status', '').upper()}: {probe.get('reason')}"
    llc = probe["llc_bytes"]
    sizes = ", ".join(f"{k} {v:,} elements" for k, v in probe["sizes"].items())
    note = (f"(last-level cache {llc / 2 ** 20:g} MiB{' (assumed)' if probe['llc_assumed'] else ''}; "
            f"{sizes}; a cell's roof is the {probe['kernel']} of its regime)")
    rows = [[r["kernel"], r["regime"], f"{r['n']:,}", str(r["threads"]),
             f"{r['bytes'] / 1e6:.4g}", f"{r['gbps']:.3g}", f"{r['gbps_median']:.3g}",
             str(r["calls"])] for r in probe["rows"]]
    return "\n".join([head, note, render(["kernel", "regime", "n", "thr", "MB", "GB/s best",
                                           "GB/s median", "calls"], rows)])


def _ratio_cell(r):
    if not r:
        return ""
    if r["single"]:
        return fmt_ratio(r["median"]) + "*"
    return f"{fmt_ratio(r['median'])}±{(r['q3'] - r['q1']) / 2 / r['median']:.0%}"


def _notes(recs):
    """Skip and failure reasons (once each), jax-jit compile times."""
    seen, compiled = {}, []
    for rec in recs:
        for peer, info in rec["peers"].items():
            if info["status"] != "ok":
                seen.setdefault((info["status"], peer, info["reason"]), []).append(rec["label"])
            elif "compile_s" in info.get("notes", {}):
                compiled.append(f"{rec['label'].split(' ', 1)[1]} "
                                f"{info['notes']['compile_s']:.2f} s")
    lines = []
    for (status, peer, reason), labels in seen.items():
        where = labels[0] if len(labels) == 1 else f"{len(labels)} cases"
        lines.append(f"{status}: {peer} ({where}): {reason}")
    if compiled:
        lines.append("jax-jit compile + first call (not in its figures): " + ", ".join(compiled))
    return lines


def exponent_lines(exps):
    if not exps:
        return ""
    return "\n".join(["growth exponent of backward (slope of log t vs log N):"]
                     + [f"  {e['workload']:5s} {e['peer']:14s} {e['exponent']:5.2f}  "
                        f"(N {fmt_n(e['n_min'])}..{fmt_n(e['n_max'])})" for e in exps])


def memory_table(info):
    if not info:
        return ""
    head = f"== {SUITES['memory'].title} =="
    if info["status"] != "ok":
        return f"{head}\n{info['status'].upper()}: {info['reason']}"
    rows = info["rows"]
    head = head[:-3] + f" (size {info['size']:g}, depth {info['depth']}) =="
    try:  # the memory tool's own layout, when it offers one
        from .memory import format_table
        return head + "\n" + format_table(rows)
    except Exception:
        keys = list(dict.fromkeys(k for r in rows for k in r))
        return head + "\n" + render(keys, [[fmt_num(r[k]) if isinstance(r.get(k), float)
                                            else str(r.get(k, "")) for k in keys]
                                           for r in rows])


def render_document(doc, times=False):
    """Every table of a results document, as the run printed them."""
    blocks = [roofline_table(doc.get("roofline"))]
    for name in SUITES:
        if name == "memory":
            blocks.append(memory_table(doc.get("memory")))
            continue
        blocks.append(suite_table(doc, name, times))
        if name == "scaling" and blocks[-1]:
            blocks[-1] += "\n" + exponent_lines(exponents(doc))
    blocks.append(TG.format_targets(doc.get("targets", []), doc.get("targets_file")))
    return "\n\n".join(b.rstrip() for b in blocks if b)


# ---------------------------------------------------------------------------
# files and compare
# ---------------------------------------------------------------------------
def write_json(path, doc):
    """Write atomically, so an interrupted run leaves no half file."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1, default=lambda o: o.item() if hasattr(o, "item")
                  else o.tolist())
        f.write("\n")
    os.replace(tmp, path)


def load(path):
    """Read a results file of this schema or of version 2 (a subset)."""
    with open(path) as f:
        doc = json.load(f)
    if not isinstance(doc, dict) or doc.get("schema") not in READABLE:
        raise ValueError(f"{path}: not a {' or '.join(READABLE)} results file")
    return doc


def cells(doc):
    """{(case label, peer, phase): phase summary} of every measured cell."""
    return {(r["label"], peer, ph): st for r in doc["results"]
            for peer, info in r["peers"].items() if info.get("status") == "ok"
            for ph, st in info.get("phases", {}).items()}


def verdict(a, b, factor=1.05):
    """B against A: "faster"/"slower" when the [q1, q3] ranges do not overlap
    and the ratio is beyond ``factor``, else "not significant"."""
    ratio = b["median"] / a["median"] if a["median"] > 0 else math.inf
    if (a["q1"] <= b["q3"] and b["q1"] <= a["q3"]) or 1 / factor < ratio < factor:
        return "not significant", ratio
    return ("faster" if ratio < 1 else "slower"), ratio


def compare(doc_a, doc_b, factor=1.05, peer=None, phase=None):
    """(rows, geometric mean of B/A) over the cells both runs measured."""
    a, b = cells(doc_a), cells(doc_b)
    rows = []
    for key in a:
        if key in b and (not peer or key[1] == peer) and (not phase or key[2] == phase):
            v, ratio = verdict(a[key], b[key], factor)
            rows.append({"label": key[0], "peer": key[1], "phase": key[2],
                         "a": a[key]["median"], "b": b[key]["median"], "ratio": ratio,
                         "verdict": v})
    return rows, geomean(r["ratio"] for r in rows)


def format_compare(rows, gm):
    if not rows:
        return "no cells in common"

    def both(r):
        unit, scale = pick_unit([r["a"], r["b"]])
        return [f"{fmt_num(r['a'] / scale)} {unit}", f"{fmt_num(r['b'] / scale)} {unit}"]
    body = [[r["label"], r["peer"], r["phase"], *both(r), f"{r['ratio']:.3f}", r["verdict"]]
            for r in rows]
    counts = ", ".join(f"{sum(r['verdict'] == v for r in rows)} {v}"
                       for v in ("faster", "slower", "not significant"))
    gm_text = "n/a" if gm is None else f"{gm:.3f} (B/A; below 1: B is faster)"
    return (render(["case", "peer", "phase", "A", "B", "B/A", "verdict"], body, left=3)
            + f"\n\n{counts}\ngeometric mean of B/A over {len(rows)} cells: {gm_text}")
