"""Measurement: build a benchmark from a workload, check it, time peers
interleaved.

For one case every peer is first built and run once with its outputs
captured and compared with the reference (a peer whose results are wrong is
excluded), then warmed up and given a loop count so that one repeat lasts
about ``target`` seconds.  Then come ``rounds`` rounds of one repeat per peer
in turn (A, B, C, A, B, C, ...), with the cyclic GC off, so that a noisy
stretch of time hits every peer alike.  A peer's figure against fastgrad is
the median over rounds of (peer time / fastgrad time in the same round).

Peers that run in another process (fastgrad-pure, which needs
``FASTGRAD_PURE=1`` at import, and the jax peers, whose thread pools are
fixed at import: one child per thread setting) sit behind the same
interface, served by a child running ``python -m fastgrad.bench _worker``
that sets its own libraries' threads to the case's setting.

In a threaded suite each iteration's timed seconds are kept too, so that
the worst case (a thread the OS did not schedule holding up the others)
is reported beside the median; so is each repeat's CPU time over its wall
time, the number of cores a peer really kept busy.
"""
import gc
import json
import math
import os
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass

import numpy as np

from . import peers as P
from . import threads as T
from .stats import summary, tail
from .suites import SUITES, Case


@dataclass
class Settings:
    target: float = 0.05    # seconds per repeat that the loop count aims at
    rounds: int = 5         # interleaved rounds (timed repeats per peer)
    max_time: float = 1.0   # one iteration longer than this: a single sample
    skip_factor: float = 5.0  # scaling cells predicted above factor*max_time: skipped
    max_loops: int = 100_000


class State:
    """Attribute bag handed to every phase of one iteration."""


class Bench:
    """``setup() -> State`` (untimed), timed ``phases`` [(name, fn(state))],
    ``capture(state) -> dict`` read in the checking iteration only."""

    def __init__(self, setup, phases, capture):
        self.setup, self.phases, self.capture = setup, phases, capture


def _set(**kw):
    def phase(s):
        for name, fn in kw.items():
            setattr(s, name, fn(s))
    return phase


def build(suite, case, peer, notes):
    """The :class:`Bench` of ``case`` for the loaded adapter ``peer``."""
    work = suite.work(case, peer)
    if work.newton:
        both = peer.grad2(work.fn, float(work.inputs[0]), notes)

        def newton(s):
            x, s.xs = float(work.inputs[0]), []
            for _ in range(work.newton):
                g1, g2 = both(x)
                x = x - g1 / g2
                s.xs.append(x)
        return Bench(State, [("newton", newton)], lambda s: {"out": np.array(s.xs)})

    prep = [peer.prepare(a) for a in work.inputs]
    consts = [peer.prepare(c) for c in work.consts]
    fn = work.fn

    def setup():
        s = State()
        s.leaves = [peer.leaf(p, work.copy) for p in prep]
        return s

    if peer.kind == "fused":
        step = peer.compile(fn, prep, consts, notes)

        def fused(s):
            s.out = step(s.leaves)
            s.g = s.out[1]
        phases = [("fwd+bwd", fused)]
    else:
        phases = [("fwd", _set(out=lambda s: peer.forward(fn, s.leaves, consts)))]
        if peer.kind != "forward":
            phases.append(("bwd", _set(g=lambda s: peer.backward(s.out, s.leaves))))
    learns = work.lr and peer.kind != "forward"
    if learns:
        phases.append(("sgd", _set(leaves=lambda s: peer.sgd(s.leaves, s.g, work.lr))))
    if work.release:
        phases.append(("del", lambda s: s.__dict__.clear()))

    def capture(s):
        got = {"out": peer.value(s.out)}
        if peer.kind != "forward":
            got["g"] = peer.grads(s.g, s.leaves)
        if learns:
            got["new"] = [peer.array(v) for v in s.leaves]
        return got
    return Bench(setup, phases, capture)


def _iterate(bench, acc, capture=False, iters=None):
    """One iteration; adds each phase's seconds to ``acc`` and, given a list
    ``iters``, appends the iteration's timed seconds to it."""
    perf, got, busy = time.perf_counter, None, 0.0
    s = bench.setup()
    for k, (name, fn) in enumerate(bench.phases):
        if capture and name == "del":
            got = bench.capture(s)
        t0 = perf()
        fn(s)
        dt = perf() - t0
        acc[k] += dt
        busy += dt
    if iters is not None:
        iters.append(busy)
    if capture and got is None:
        got = bench.capture(s)
    return got


# ---------------------------------------------------------------------------
# correctness
# ---------------------------------------------------------------------------
def _as_one(arrays):
    arrays = [np.asarray(a, dtype=np.float64) for a in arrays]
    if arrays and all(a.shape == arrays[0].shape for a in arrays):
        return [np.stack(arrays)]
    return arrays


def check(got, want, rtol, forward_only=False):
    """None when every expected output is present and close (``rtol``, and
    an absolute ``rtol`` times the largest magnitude), else what is wrong."""
    for key in (["out"] if forward_only else list(want)):
        if key not in got:
            return f"{key} missing"
        a, b = got[key], want[key]
        if isinstance(b, list):
            if len(a) != len(b):
                return f"{key}: {len(a)} arrays, expected {len(b)}"
            a, b = _as_one(a), _as_one(b)
        else:
            a, b = [a], [b]
        for x, y in zip(a, b):
            if x is None:
                return f"{key} is None"
            x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
            if x.shape != y.shape:
                return f"{key} shape {x.shape} != expected {y.shape}"
            scale = float(np.max(np.abs(y))) if y.size else 0.0
            if not np.allclose(x, y, rtol=rtol, atol=rtol * scale):
                i = int(np.argmax(np.abs(x - y)))
                return (f"{key} wrong: got {x.flat[i]!r}, expected {y.flat[i]!r} "
                        f"at flat index {i} (rtol {rtol:g})")
    return None


_refs = {}


def reference(suite, case):
    """The suite's reference of ``case``, computed once for all peers."""
    key = (case.base_label, json.dumps(case.params, sort_keys=True))
    if key not in _refs:
        _refs.clear()  # one case at a time: big arrays do not pile up
        _refs[key] = suite.reference(case)
    return _refs[key]


# ---------------------------------------------------------------------------
# runners: the same four calls whether the peer is here or in a child
# ---------------------------------------------------------------------------
class Local:
    """Runs one (case, peer) in this process."""

    def __init__(self, suite, case, name):
        self.suite, self.case, self.name = suite, case, name

    def open(self):
        """Build, run the checking iteration; return its status record."""
        notes = {}
        try:
            peer = P.get(self.name, self.suite.full)
        except P.Unavailable as exc:
            return {"status": "skipped", "reason": str(exc)}
        missing = peer.missing(self.suite.needs)
        if missing:
            return {"status": "skipped", "reason": "has no " + ", ".join(missing)}
        try:
            self.bench = build(self.suite, self.case, peer, notes)
            acc = [0.0] * len(self.bench.phases)
            got = _iterate(self.bench, acc, capture=True)
            problem = check(got, reference(self.suite, self.case),
                            self.suite.tolerance(self.case), peer.kind == "forward")
        except Exception as exc:
            return {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"
                    .splitlines()[0][:300], "traceback": traceback.format_exc(limit=8)}
        self.total = peer.kind != "forward"
        first = self._times(acc, 1)
        if problem:
            return {"status": "failed", "reason": f"wrong result: {problem}", "first": first}
        return {"status": "ok", "first": first, "notes": notes, "cold_start": peer.cold_start}

    def _times(self, acc, loops):
        out = {name: acc[k] / loops for k, (name, _) in enumerate(self.bench.phases)}
        if self.total:
            out["total"] = sum(acc) / loops
        return out

    def calibrate(self, target, max_loops=100_000):
        """Warm up with growing bursts (at least a fifth of ``target`` long);
        return the loop count of a ``target``-second repeat."""
        n = 1
        while True:
            per_iteration = _busy(self.repeat(n)["times"])
            if per_iteration * n >= target / 5 or n >= max_loops:
                break
            n = min(max_loops, n * (4 if per_iteration * n < target / 20 else 2))
        return max(1, min(max_loops, round(target / max(per_iteration, 1e-9))))

    def repeat(self, loops, iters=False):
        """``loops`` iterations with the cyclic GC off.  Returns ``{"times":
        seconds per iteration by phase, "cores": the process's CPU time over
        the wall time of the repeat}``, and with ``iters`` the timed seconds
        of each iteration (``"iters"``)."""
        acc = [0.0] * len(self.bench.phases)
        each = [] if iters else None
        gc.collect()  # untimed: cycles from before go now
        enabled = gc.isenabled()
        gc.disable()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        try:
            for _ in range(loops):
                _iterate(self.bench, acc, iters=each)
        finally:
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            if enabled:
                gc.enable()
        out = {"times": self._times(acc, loops), "cores": cpu / wall if wall > 0 else None}
        if iters:
            out["iters"] = each
        return out

    def close(self):
        self.bench = None


def _busy(times):
    """Seconds of one iteration: the sum of its phases."""
    return sum(v for k, v in times.items() if k != "total")


class Worker:
    """A child ``python -m fastgrad.bench _worker`` with extra environment;
    JSON lines in and out.  The one launcher of every subprocess peer."""

    def __init__(self, env_extra):
        import fastgrad
        parent = os.path.dirname(os.path.dirname(os.path.abspath(fastgrad.__file__)))
        env = dict(os.environ, **env_extra)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (parent, env.get("PYTHONPATH")) if p)
        # cwd=parent: `python -m` puts the working directory first on sys.path,
        # and a source checkout there would shadow this fastgrad.
        self.proc = subprocess.Popen([sys.executable, "-m", "fastgrad.bench", "_worker"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env, cwd=parent)
        self.ids = 0

    def call(self, **msg):
        try:
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except (BrokenPipeError, OSError):
            line = ""
        if not line:
            raise RuntimeError(f"worker exited (code {self.proc.poll()})")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply

    def close(self):
        if self.proc.poll() is None:
            try:
                self.call(cmd="exit")
            except RuntimeError:
                pass
            self.proc.wait(timeout=30)


class Remote:
    """A (case, peer) served by a :class:`Worker`."""

    def __init__(self, worker, suite, case, name):
        worker.ids += 1
        self.worker, self.id = worker, worker.ids
        self.args = {"suite": suite.name, "case": case.__dict__, "peer": name}

    def open(self):
        try:
            return self.worker.call(cmd="open", id=self.id, **self.args)
        except RuntimeError as exc:
            return {"status": "failed", "reason": str(exc)}

    def calibrate(self, target):
        return self.worker.call(cmd="calibrate", id=self.id, target=target)["loops"]

    def repeat(self, loops, iters=False):
        return self.worker.call(cmd="repeat", id=self.id, loops=loops, iters=iters)["sample"]

    def close(self):
        try:
            self.worker.call(cmd="close", id=self.id)
        except RuntimeError:
            pass


def _availability(name):
    """Whether peer ``name`` loads in this process, and its versions."""
    try:
        return {"available": True, "reason": None, "details": P.get(name).versions}
    except P.Unavailable as exc:
        return {"available": False, "reason": str(exc), "details": {}}


def worker_main():
    """The child's loop: requests on stdin, one JSON reply line each."""
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything a library prints goes to stderr, not into replies
    gc.collect()
    gc.freeze()
    runners = {}
    for line in sys.stdin:
        msg = json.loads(line)
        cmd, rid = msg["cmd"], msg.get("id")
        try:
            if cmd == "exit":
                break
            if cmd == "hello":
                reply = {"peers": {name: _availability(name) for name in msg["peers"]}}
            elif cmd == "open":
                case = Case(**msg["case"])
                # The parent set its own libraries; this process sets its own,
                # before the check and again once the peer's modules are loaded.
                T.apply(case.threads or 1)
                runners[rid] = Local(SUITES[msg["suite"]], case, msg["peer"])
                reply = runners[rid].open()
                reply["thread_state"] = T.apply(case.threads or 1)
            elif cmd == "calibrate":
                reply = {"loops": runners[rid].calibrate(msg["target"])}
            elif cmd == "repeat":
                reply = {"sample": runners[rid].repeat(msg["loops"], msg.get("iters", False))}
            else:
                runners.pop(rid, None)
                reply = {}
        except Exception as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()
    return 0


# ---------------------------------------------------------------------------
# one case, all peers, interleaved
# ---------------------------------------------------------------------------
class Budget:
    """Skips cells with a size ``n`` predicted to take more than
    ``skip_factor * max_time`` per iteration, extrapolating the same workload
    and peer's last sizes with their growth exponent (at least 1), so a
    quadratic peer is stopped before it eats the run."""

    def __init__(self, settings):
        self.limit = settings.skip_factor * settings.max_time
        self.points = {}

    def refusal(self, case, name):
        n, pts = case.params.get("n"), self.points.get((case.workload, case.threads, name))
        if n is None or not pts:
            return None
        (n0, t0), slope = pts[-1], 1.0
        if len(pts) > 1:
            (n1, t1) = pts[-2]
            slope = max(1.0, np.log(t0 / t1) / np.log(n0 / n1))
        predicted = t0 * (n / n0) ** slope
        if predicted > self.limit:
            return (f"predicted {predicted:.3g} s per iteration (N^{slope:.2f} from "
                    f"N={n0}) > {self.limit:g} s")
        return None

    def record(self, case, name, seconds):
        if "n" in case.params and seconds:
            self.points.setdefault((case.workload, case.threads, name), []).append(
                (case.params["n"], seconds))


def _ready(r, info, settings):
    """After a passed check: a single warm sample for a peer too slow to
    repeat (returns False), else the loop count of its repeats."""
    first, cold = info.pop("first"), info.pop("cold_start", False)
    # The check paid one-off costs (thread pools, compiles): still too long?
    if settings.max_time < _busy(first) < (math.inf if cold else
                                           max(3 * settings.max_time, 2.0)):
        first = r.repeat(1)["times"]
    if _busy(first) > settings.max_time:
        # One honest sample instead of minutes of waiting; not interleaved.
        info.update(single=True, loops=1, phases={k: summary([v]) for k, v in first.items()})
        return False
    info.update(single=False, loops=r.calibrate(settings.target))
    return True


def run_case(suite, case, names, settings, budget=None, runner=None, log=None, tails=False):
    """Measure ``case`` on every peer in ``names``; return its record.

    ``runner(suite, case, name)`` makes the runner of a peer (default:
    :class:`Local`); ``log(text)`` gets skip and failure notes; ``tails``
    keeps every timed iteration's seconds (a peer's ``"tail"``: median,
    95th percentile and worst single iteration over all rounds).
    """
    runner, log = runner or Local, log or (lambda text: None)
    started = time.perf_counter()
    rec = {"suite": case.suite, "workload": case.workload, "params": case.params,
           "label": case.label, "base_label": case.base_label,
           "threads": case.threads or 1, "threaded": case.threads is not None,
           "ops": case.ops, "peers": {}, "ratios": {}}
    peers = rec["peers"]

    def guarded(name, step):
        """``step()``, or None when the peer crashed (it is failed then)."""
        try:
            return step()
        except Exception as exc:  # a peer that crashes mid-way is failed
            peers[name] = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}

    timed = {}  # name -> (runner, [times of each round])
    for name in names:
        why = suite.refusal(case, name) or (budget and budget.refusal(case, name))
        if why:
            peers[name] = {"status": "skipped", "reason": why}
            continue
        r = runner(suite, case, name)
        peers[name] = info = r.open()
        if info["status"] == "ok" and guarded(name, lambda: _ready(r, info, settings)):
            timed[name] = (r, [])
        else:
            r.close()
    for _ in range(settings.rounds):
        for name, (r, rounds) in list(timed.items()):
            loops = peers[name]["loops"]
            if not guarded(name, lambda: rounds.append(r.repeat(loops, tails)) or True):
                timed.pop(name)[0].close()
    for name, (r, rounds) in timed.items():
        r.close()  # samples stay in round order: the ratios pair them up
        info = peers[name]
        times = [sample["times"] for sample in rounds]
        info["phases"] = {k: summary([t[k] for t in times]) for k in times[0]}
        cores = [sample["cores"] for sample in rounds if sample.get("cores")]
        info["cores"] = summary(cores)["median"] if cores else None
        if tails:
            info["tail"] = tail([x for sample in rounds for x in sample["iters"]])
    for name, info in peers.items():
        if tails and info["status"] == "ok" and info.get("single"):
            info["tail"] = tail([_busy({k: v["median"] for k, v in info["phases"].items()})])
        if info["status"] == "failed":
            log(f"  {name}: failed: {info['reason']}")
        elif budget and info["status"] == "ok":
            ph = info["phases"]
            budget.record(case, name, ph.get("total", ph.get("fwd", {})).get("median"))
    rec["seconds"] = time.perf_counter() - started
    base = peers.get(P.REFERENCE, {})
    for name, info in peers.items():
        if name == P.REFERENCE or info["status"] != "ok" or base.get("status") != "ok":
            continue
        single = info["single"] or base["single"]
        rec["ratios"][name] = {}
        for ph in sorted(set(info["phases"]) & set(base["phases"])):
            a, b = info["phases"][ph], base["phases"][ph]
            pairs = [(a["median"], b["median"])] if single else zip(a["samples"], b["samples"])
            rec["ratios"][name][ph] = dict(summary([x / y for x, y in pairs]), single=single)
    return rec
