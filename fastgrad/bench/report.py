"""Machine metadata, text tables and the JSON document."""
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

from .cases import fmt_n
from .peers import PEERS, REFERENCE, version
from .timing import is_noisy

SCHEMA = "fastgrad-bench/1"
UNITS = (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9))
ENV_PREFIXES = ("MALLOC_", "FASTGRAD_", "OMP_", "MKL_", "OPENBLAS_", "PYTHONMALLOC",
                "LD_PRELOAD", "GLIBC_TUNABLES", "JEMALLOC", "TCMALLOC")


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mem_total():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _blas_info():
    try:
        cfg = np.show_config(mode="dicts")
        deps = cfg.get("Build Dependencies", {})
        return {k: deps[k] for k in ("blas", "lapack") if k in deps}
    except Exception as exc:  # older NumPy or unusual build
        return {"error": repr(exc)}


def fastgrad_build():
    """Which fastgrad was measured: its path, the compiled engine's mtime and,
    for a git checkout, the commit and whether the tree had local changes."""
    info = {}
    try:
        import fastgrad
        from fastgrad import _core
        info["path"] = os.path.dirname(fastgrad.__file__)
        info["core_mtime"] = time.strftime(
            "%Y-%m-%dT%H:%M:%S", time.gmtime(os.path.getmtime(_core.__file__)))
    except Exception as exc:
        info["error"] = repr(exc)
        return info
    repo = os.path.dirname(info["path"])
    try:
        head = subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"],
                              capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", repo, "status", "--porcelain", "fastgrad"],
                               capture_output=True, text=True, timeout=5)
        if head.returncode == 0:
            info["git_commit"] = head.stdout.strip()
            info["git_dirty"] = bool(dirty.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def machine_metadata(peer_status):
    """Everything needed to judge whether two runs are comparable."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    meta = {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "mem_total_bytes": _mem_total(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "numpy": np.__version__,
        "numpy_blas": _blas_info(),
        "peers": peer_status,
        "env": {k: v for k, v in sorted(os.environ.items())
                if k.startswith(ENV_PREFIXES)},
    }
    try:
        meta["loadavg"] = os.getloadavg()
    except OSError:
        pass
    if "torch" in sys.modules:
        meta["torch_threads"] = sys.modules["torch"].get_num_threads()
    return meta


def peer_versions(available):
    """{peer: {"available", "version", "reason"}} for the JSON metadata."""
    out = {}
    for peer in PEERS:
        ok, reason = available.get(peer, (False, "not requested"))
        out[peer] = {"available": ok, "version": version(peer) if ok else None,
                     "reason": None if ok else reason}
    return out


def pick_unit(seconds):
    """Largest unit in which the smallest value is at least 1."""
    values = [s for s in seconds if s and s > 0]
    if not values:
        return "s", 1.0
    low = min(values)
    for name, scale in UNITS:
        if low >= scale:
            return name, scale
    return UNITS[-1]


def fmt_num(x):
    """Four significant digits without scientific notation where possible."""
    if x is None:
        return "-"
    if x == 0:
        return "0"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.4g}" if abs(x) >= 0.001 else f"{x:.2e}"


def fmt_ratio(r):
    if r is None:
        return "-"
    return f"{r:.3g}x" if r < 100 else f"{r:,.0f}x"


def render(headers, rows, align_left=1):
    """Plain-text table; the first ``align_left`` columns are left aligned."""
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(headers)]
    def line(cells):
        parts = []
        for i, c in enumerate(cells):
            c = str(c)
            parts.append(c.ljust(widths[i]) if i < align_left else c.rjust(widths[i]))
        return "  ".join(parts).rstrip()
    out = [line(headers), line(["-" * w for w in widths])]
    out.extend(line(r) for r in rows)
    return "\n".join(out)


def _index(records):
    return {(r["label"], r["peer"]): r for r in records}


def _cell(record, phase, scale, noise):
    """Formatted median for a table cell plus the raw value (or None)."""
    if record is None:
        return "", None
    if record["status"] == "skipped":
        return "skip", None
    if record["status"] == "failed":
        return "FAIL", None
    phases = record["stats"]["phases"]
    if phase == "total" and "bwd" not in phases:
        return "", None  # forward-only peer (numpy): it has no fwd+bwd
    ph = phases.get(phase)
    if ph is None:
        return "", None
    mark = "*" if record["stats"].get("single") else ("~" if is_noisy(ph, noise) else "")
    return fmt_num(ph["median"] / scale) + mark, ph["median"]


def time_table(title, records, rows_spec, peers, noise, per_op=False, unit=None):
    """One table: rows = (row label, case label, phase), columns = peers'
    medians then peer/fastgrad ratios.  One unit for the whole table."""
    idx = _index(records)
    values = []
    for _, label, phase in rows_spec:
        for p in peers:
            r = idx.get((label, p))
            if r and r["status"] == "ok" and phase in r["stats"]["phases"]:
                v = r["stats"]["phases"][phase]["median"]
                values.append(v / r["ops"] if per_op else v)
    name, scale = unit or pick_unit(values)
    others = [p for p in peers if p != REFERENCE]
    headers = ["case", "phase"] + list(peers) + [f"{p}/fg" for p in others
                                                  if REFERENCE in peers]
    rows = []
    for row_label, label, phase in rows_spec:
        cells, raw = [], {}
        for p in peers:
            r = idx.get((label, p))
            ops = r["ops"] if (per_op and r) else 1
            text, v = _cell(r, phase, scale * ops, noise)
            cells.append(text)
            raw[p] = v
        ratios = []
        if REFERENCE in peers:
            ref = raw.get(REFERENCE)
            for p in others:
                ratios.append(fmt_ratio(raw[p] / ref) if (raw[p] and ref) else "")
        rows.append([row_label, _phase_name(phase)] + cells + ratios)
    what = f"{name} per op" if per_op else name
    head = (f"== {title} ==\n(median, {what}; ~ noisy: IQR/median > {noise:.0%}; "
            f"* single iteration: over --max-time; x/fg = x time / fastgrad time, "
            f">1x: fastgrad faster)")
    return head + "\n" + render(headers, rows, align_left=2)


def _phase_name(phase):
    return {"total": "fwd+bwd", "fwd": "fwd", "bwd": "bwd", "del": "del"}.get(phase, phase)


def present_peers(records, order=PEERS):
    seen = {r["peer"] for r in records}
    return [p for p in order if p in seen]


def overhead_table(records, noise):
    recs = [r for r in records if r["suite"] == "overhead"]
    if not recs:
        return ""
    spec = []
    for label in dict.fromkeys(r["label"] for r in recs):
        short = label.replace("overhead ", "")
        spec += [(short, label, "fwd"), (short, label, "total")]
    return time_table("overhead: Goldstein-Price, 1000-step chain, user-Function chain",
                      recs, spec, present_peers(recs), noise, per_op=True,
                      unit=("µs", 1e-6))


def scaling_table(records, noise, exponents):
    recs = [r for r in records if r["suite"] == "scaling"]
    if not recs:
        return ""
    spec = []
    for label in dict.fromkeys(r["label"] for r in recs):
        short = label.replace("scaling ", "")
        spec += [(short, label, ph) for ph in ("fwd", "bwd", "del")]
    text = time_table("scaling: deep chain (N ops) and wide sum (N leaves)", recs, spec,
                      present_peers(recs), noise, unit=("ms", 1e-3))
    lines = ["growth exponent of backward (least-squares slope of log t vs log N):"]
    for e in exponents:
        exp = "n/a" if e["exponent"] is None else f"{e['exponent']:.2f}"
        if e["exponent"] is None:
            continue  # a single N: nothing to fit
        lines.append(f"  {e['workload']:5s} {e['peer']:14s} {exp:>5s}  "
                     f"(N {fmt_n(e['n_min'])}..{fmt_n(e['n_max'])}, {e['points']} points)")
    if len(lines) == 1:
        return text  # no N range to fit
    return text + "\n" + "\n".join(lines)


def kernels_tables(records, noise, ceiling):
    recs = [r for r in records if r["suite"] == "kernels"]
    if not recs:
        return ""
    peers = present_peers(recs)
    spec = []
    labels = list(dict.fromkeys(r["label"] for r in recs))
    for label in labels:
        short = label.replace("kernels ", "")
        spec += [(short, label, "fwd"), (short, label, "total")]
    text = time_table("kernels: elementwise forward and forward+backward", recs, spec,
                      peers, noise, unit=("ms", 1e-3))
    idx = _index(recs)
    rows = []
    for label in labels:
        row = [label.replace("kernels ", "")]
        for p in peers:
            r = idx.get((label, p))
            if not r or r["status"] != "ok":
                row.append("skip" if r and r["status"] == "skipped" else
                           ("FAIL" if r else ""))
                continue
            g = r["gbps"].get("total", r["gbps"]["fwd"])
            row.append(f"{g:.1f} / {r['stats']['page_faults']:.0f}")
        rows.append(row)
    bw = ("== kernels: GB/s (fused-minimum bytes, fwd+bwd; numpy: fwd only) / "
          "minor page faults per call ==\n" + render(["case"] + peers, rows))
    ceil_lines = ["memory-bandwidth ceiling measured in this run:"]
    for c in ceiling or []:
        note = f"  [{c['note']}]" if c.get("note") else ""
        ceil_lines.append(f"  {c['method']}: {c['gbps']:.1f} GB/s "
                          f"(N={c['size']:g}){note}")
    return text + "\n\n" + bw + "\n" + "\n".join(ceil_lines)


def memory_table(info):
    if not info:
        return ""
    if info["status"] != "ok":
        return f"== memory: skipped ({info['reason']}) =="
    rows = info["rows"]
    if not rows:
        return "== memory: no rows returned =="
    head = (f"== memory (fastgrad.memory.collect, size={info['size']:g}, "
            f"depth={info['depth']}; A = one array) ==")
    try:  # the memory tooling's own layout, when it offers one
        from fastgrad.memory import format_table
        return head + "\n" + format_table(rows)
    except Exception:
        pass
    keys = list(dict.fromkeys(k for r in rows for k in r))
    def fmt(v, key):
        if key.endswith("_bytes") and isinstance(v, (int, float)):
            return f"{v / (1 << 20):,.1f}"
        return fmt_num(v) if isinstance(v, float) else str(v)
    headers = [k.replace("_bytes", " MiB") for k in keys]
    body = [[fmt(r.get(k, ""), k) for k in keys] for r in rows]
    return head + "\n" + render(headers, body, align_left=2)


def skipped_lines(records):
    """One line per (peer, reason) so skips are visible but not repeated."""
    seen = {}
    for r in records:
        if r["status"] == "skipped":
            seen.setdefault((r["peer"], r["reason"]), []).append(r["label"])
    lines = []
    for (peer, reason), labels in seen.items():
        where = labels[0] if len(labels) == 1 else f"{len(labels)} cells"
        lines.append(f"skipped: {peer} ({where}): {reason}")
    return lines


def write_json(path, document):
    """Write atomically (tmp file + rename) so a crash leaves no half file."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(document, f, indent=1, default=_json_default)
        f.write("\n")
    os.replace(tmp, path)


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(type(obj).__name__)
