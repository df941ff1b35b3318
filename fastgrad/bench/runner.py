"""Running cases on peers: progress, budgets, correctness checks and the
``fastgrad-pure`` subprocess."""
import gc
import json
import os
import subprocess
import sys
import time
import traceback

import numpy as np

from . import kernels, overhead, scaling
from .cases import Case
from .peers import PeerUnavailable, load
from .timing import Settings, fit_exponent, measure

SUITES = {"overhead": overhead, "scaling": scaling, "kernels": kernels}
PURE = "fastgrad-pure"
# Test-only fault injection: FASTGRAD_BENCH_INJECT_FAULT=<peer> perturbs that
# peer's captured results so the correctness path can be exercised.
FAULT_ENV = "FASTGRAD_BENCH_INJECT_FAULT"


class Progress:
    """asv-style progress lines on stderr: ``[ 40%] kernels mul ... dezero``."""

    def __init__(self, total, stream=None):
        self.total = max(total, 1)
        self.stream = stream or sys.stderr

    def line(self, index, text):
        pct = int(100 * index / self.total)
        print(f"[{pct:3d}%] {text}", file=self.stream, flush=True)


def check(result, expected, rtol):
    """Compare captured outputs with the reference.

    Returns None when every expected key is present and close (relative
    tolerance ``rtol``, absolute ``rtol`` times the largest magnitude), else a
    one-line description of the first mismatch.
    """
    for key, want in expected.items():
        if key not in result:
            continue  # forward-only peers (numpy) capture no gradients
        got = result[key]
        if got is None:
            return f"{key} is None"
        got = np.asarray(got, dtype=np.float64)
        want = np.asarray(want, dtype=np.float64)
        if got.shape != want.shape:
            return f"{key} shape {got.shape} != expected {want.shape}"
        scale = float(np.max(np.abs(want))) if want.size else 0.0
        if not np.allclose(got, want, rtol=rtol, atol=rtol * scale):
            err = np.abs(got - want)
            i = int(np.argmax(err))
            return (f"{key} mismatch (max abs err {err.flat[i]:.3g} at flat index {i}: "
                    f"got {got.flat[i]!r}, expected {want.flat[i]!r}, rtol {rtol})")
    return None


def _inject_fault(peer, result):
    if os.environ.get(FAULT_ENV) in (peer, "all") and result:
        key = sorted(result)[0]
        result = dict(result)
        result[key] = np.asarray(result[key], dtype=np.float64) * 1.5 + 1.0
    return result


_last_reference = {}


def _reference(case):
    """The suite's reference for ``case``, computed once for all its peers."""
    key = (case.label, json.dumps(case.params, sort_keys=True))
    if key not in _last_reference:
        _last_reference.clear()  # one case at a time: big arrays don't pile up
        _last_reference[key] = SUITES[case.suite].reference(case)
    return _last_reference[key]


class Budget:
    """Skips scaling cells predicted to take longer than 5 x ``max_time`` per
    iteration (and :func:`measure` keeps a single sample when one iteration
    exceeds ``max_time``).

    The prediction extrapolates the last measured N of the same workload and
    peer with the growth exponent seen so far (at least 1), so a quadratic
    peer is stopped before it eats the whole run.
    """

    # A cell over max_time still yields one sample; only cells predicted to
    # be far over it are skipped.
    SKIP_FACTOR = 5.0

    def __init__(self, max_time):
        self.max_time = max_time
        self.points = {}   # (suite, workload, peer) -> [(n, seconds per iteration)]
        self.stopped = {}  # same key -> reason once skipped

    @staticmethod
    def _key(case, peer):
        return (case.suite, case.workload, peer)

    def reason_to_skip(self, case, peer):
        n = case.params.get("n")
        if n is None or self.max_time is None:
            return None
        key = self._key(case, peer)
        if key in self.stopped:
            return self.stopped[key]
        pts = sorted(self.points.get(key, []))
        if not pts:
            return None
        n0, t0 = pts[-1]
        slope = fit_exponent([p[0] for p in pts[-2:]], [p[1] for p in pts[-2:]])
        slope = max(1.0, slope or 1.0)
        predicted = t0 * (n / n0) ** slope
        limit = self.SKIP_FACTOR * self.max_time
        if predicted > limit:
            reason = (f"predicted {predicted:.3g} s per iteration at N={n} "
                      f"(growth ~N^{slope:.2f}) > {limit:g} s (5 x --max-time)")
            self.stopped[key] = f"skipped after N={n0}: " + reason
            return reason
        return None

    def record(self, case, peer, seconds):
        if "n" in case.params:
            self.points.setdefault(self._key(case, peer), []).append(
                (case.params["n"], seconds))


def run_task(case, peer, settings, budget):
    """Measure one (case, peer) cell in this process and return its record."""
    started = time.perf_counter()
    record = _run_task(case, peer, settings, budget)
    record["wall_seconds"] = time.perf_counter() - started
    return record


def _run_task(case, peer, settings, budget):
    record = {"suite": case.suite, "workload": case.workload, "params": case.params,
              "label": case.label, "ops": case.ops, "peer": peer,
              "status": "ok", "reason": None, "stats": None}
    suite = SUITES[case.suite]
    try:
        module = load(peer)
    except PeerUnavailable as exc:
        record.update(status="skipped", reason=str(exc))
        return record
    reason = budget.reason_to_skip(case, peer)
    if reason:
        record.update(status="skipped", reason=reason)
        return record
    expected, rtol = _reference(case)
    try:
        bench = suite.build(case, peer, module)
        stats, result = measure(bench, settings, max_iteration=budget.max_time)
    except Exception as exc:
        record.update(status="failed",
                      reason=f"{type(exc).__name__}: {exc}".splitlines()[0][:300],
                      traceback=traceback.format_exc(limit=6))
        return record
    record["stats"] = stats
    budget.record(case, peer, stats["phases"]["total"]["median"])
    problem = check(_inject_fault(peer, result), expected, rtol)
    if problem:
        record.update(status="failed", reason=f"correctness: {problem}")
    if case.suite == "kernels":
        fwd_bytes, bwd_bytes = kernels.bytes_moved(case)
        phases = stats["phases"]
        record["bytes"] = {"fwd": fwd_bytes, "bwd": bwd_bytes}
        record["gbps"] = {"fwd": fwd_bytes / phases["fwd"]["median"] / 1e9}
        if "bwd" in phases:
            record["gbps"]["total"] = (fwd_bytes + bwd_bytes) / phases["total"]["median"] / 1e9
    return record


def run_in_subprocess(tasks, settings, max_time, progress_total, env_extra):
    """Run ``[(index, case)]`` for the fastgrad-pure peer in a child process.

    The child runs ``python -m fastgrad.bench _worker`` with FASTGRAD_PURE=1
    (the engine reads it at import, so it cannot be flipped in this process)
    and with this fastgrad on its path, then returns records on stdout.
    """
    import fastgrad
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(fastgrad.__file__)))
    env = dict(os.environ)
    env.update(env_extra)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (pkg_parent, env.get("PYTHONPATH")) if p)
    payload = {"settings": settings.__dict__, "max_time": max_time,
               "total": progress_total,
               "tasks": [{"index": i, "case": c.to_dict()} for i, c in tasks]}
    # cwd=pkg_parent: `python -m` puts the working directory first on
    # sys.path, and a source checkout there would shadow this fastgrad.
    proc = subprocess.run([sys.executable, "-m", "fastgrad.bench", "_worker"],
                          input=json.dumps(payload), capture_output=False,
                          stdout=subprocess.PIPE, text=True, env=env, cwd=pkg_parent)
    try:
        records = json.loads(proc.stdout)
    except ValueError:
        records = None
    if proc.returncode != 0 or records is None:
        reason = f"worker exited with code {proc.returncode}"
        return [{"suite": c.suite, "workload": c.workload, "params": c.params,
                 "label": c.label, "ops": c.ops, "peer": PURE, "status": "failed",
                 "reason": reason, "stats": None} for _, c in tasks]
    return records


def worker_main(stream_in=None, stream_out=None):
    """Entry point of the fastgrad-pure child: JSON tasks in, records out."""
    payload = json.load(stream_in or sys.stdin)
    settings = Settings(**payload["settings"])
    budget = Budget(payload["max_time"])
    progress = Progress(payload["total"])
    try:
        load("fastgrad")
    except PeerUnavailable:
        pass  # each task reports the skip
    gc.collect()
    gc.freeze()  # as in the parent: keep gc.collect() between repeats cheap
    records = []
    for task in payload["tasks"]:
        case = Case.from_dict(task["case"])
        progress.line(task["index"], f"{case.label} {PURE}")
        record = run_task(case, "fastgrad", settings, budget)
        record["peer"] = PURE
        # Proof that the engine really honoured FASTGRAD_PURE=1 at import.
        record["engine_pure"] = _engine_pure_flag()
        records.append(record)
    json.dump(records, stream_out or sys.stdout)
    return 0


def run_cases(cases, peers, settings, max_time, progress, start_index=0):
    """Run every selected (case, peer) cell; fastgrad-pure goes last, in one
    child process per call.  Returns the list of records."""
    budget = Budget(max_time)
    records = []
    index = start_index
    pure_tasks = []
    for case in cases:
        for peer in case.peers:
            if peer not in peers:
                continue
            if peer == PURE:
                pure_tasks.append(case)
                continue
            progress.line(index, f"{case.label} {peer}")
            records.append(run_task(case, peer, settings, budget))
            index += 1
    if pure_tasks:
        reason = _pure_unavailable()
        if reason:
            for case in pure_tasks:
                records.append({"suite": case.suite, "workload": case.workload,
                                "params": case.params, "label": case.label,
                                "ops": case.ops, "peer": PURE, "status": "skipped",
                                "reason": reason, "stats": None})
                index += 1
        else:
            numbered = [(index + i, c) for i, c in enumerate(pure_tasks)]
            index += len(pure_tasks)
            records.extend(run_in_subprocess(numbered, settings, max_time,
                                             progress.total, {"FASTGRAD_PURE": "1"}))
    return records, index


def _engine_pure_flag():
    """fastgrad.PURE if the engine exposes it (True: compiled kernels off)."""
    try:
        return bool(getattr(load("fastgrad"), "PURE"))
    except (PeerUnavailable, AttributeError):
        return None


def _pure_unavailable():
    try:
        load("fastgrad")
    except PeerUnavailable as exc:
        return str(exc)
    return None


def growth_exponents(records, phase="bwd", min_n=1_000, max_n=100_000):
    """Fitted exponent of ``phase`` time vs N per (workload, peer).

    Uses the points with ``min_n <= N <= max_n`` (the targets' 10^3..10^5
    window) when there are at least two of them, otherwise all points.
    """
    series = {}
    for r in records:
        if r["suite"] != "scaling" or r["status"] != "ok":
            continue
        t = r["stats"]["phases"].get(phase, {}).get("median")
        series.setdefault((r["workload"], r["peer"]), []).append((r["params"]["n"], t))
    out = []
    for (workload, peer), pts in sorted(series.items()):
        pts.sort()
        big = [p for p in pts if min_n <= p[0] <= max_n]
        use = big if len(big) >= 2 else pts
        slope = fit_exponent([p[0] for p in use], [p[1] for p in use])
        out.append({"workload": workload, "peer": peer, "phase": phase,
                    "exponent": slope, "n_min": use[0][0], "n_max": use[-1][0],
                    "points": len(use)})
    return out


def timestamp():
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
