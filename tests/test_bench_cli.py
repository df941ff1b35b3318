"""Tests of fastgrad-bench: no timing thresholds anywhere.

The measurement loop is exercised with fake runners whose times are given,
the adapters against each suite's reference, and the CLI end to end in a
child process in which the optional peers cannot be imported.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fastgrad
from fastgrad.bench import cli, measure, report, targets
from fastgrad.bench import peers as P
from fastgrad.bench.suites import SUITES, Case

FASTGRAD_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(fastgrad.__file__)))
HIDDEN = ("torch", "dezero", "autograd", "jax")
SETTINGS = measure.Settings(target=0.001, rounds=3, max_time=5.0)


# --------------------------------------------------------------------------
# arguments and help
# --------------------------------------------------------------------------
def test_help_lists_every_peer_with_what_it_needs(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name, (_, module, pip) in P.PEER_INFO.items():
        assert name in out
        assert f"needs {module}" in out
    for suite in SUITES:
        assert suite in out
    assert "compare A.json B.json" in out and "show RUN.json" in out


def test_help_shows_pip_command_of_a_missing_peer(monkeypatch, capsys):
    monkeypatch.setattr(P, "installed", lambda name: name != "torch")
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert "NOT INSTALLED: pip install torch==2.13.0" in out


@pytest.mark.parametrize("argv", [["nope"], ["--peers", "numpy,tensorflow"],
                                  ["--quick", "--full"], ["--rounds", "0"],
                                  ["--target", "x"], ["--unknown"]])
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


def test_tiers_and_suite_order():
    args = cli.parse_run_args(["kernels", "overhead", "--quick", "--peers", "numpy,fastgrad"])
    assert args.suites == ["overhead", "kernels"]
    assert args.peer_list == ["numpy", "fastgrad"]
    assert args.settings.rounds == cli.TIERS["quick"].rounds
    assert cli.parse_run_args([]).suites == list(SUITES)
    assert cli.parse_run_args(["--rounds", "9"]).settings.rounds == 9


# --------------------------------------------------------------------------
# the measurement loop, with fake runners
# --------------------------------------------------------------------------
class FakeRunner:
    """Returns given per-round times and records the order of the calls."""

    def __init__(self, log, times, status="ok"):
        self.log, self.times, self.status, self.n = log, times, status, 0

    def open(self):
        self.log.append(("open", self.name))
        if self.status != "ok":
            return {"status": self.status, "reason": "fake " + self.status}
        return {"status": "ok", "first": {"fwd": 1e-6, "total": 1e-6}, "notes": {}}

    def calibrate(self, target):
        return 1

    def repeat(self, loops):
        t = self.times[self.n]
        self.n += 1
        self.log.append(("repeat", self.name))
        return {"fwd": t, "total": t}

    def close(self):
        pass


def _fake_case(times, statuses=None):
    log = []
    statuses = statuses or {}

    def runner(suite, case, name):
        r = FakeRunner(log, times[name], statuses.get(name, "ok"))
        r.name = name
        return r
    suite = SUITES["overhead"]
    case = suite.cases("quick")[0]
    rec = measure.run_case(suite, case, list(times), SETTINGS, runner=runner)
    return rec, log


def test_peers_are_interleaved_round_by_round():
    times = {p: [1.0] * SETTINGS.rounds for p in ("fastgrad", "dezero", "torch")}
    rec, log = _fake_case(times)
    repeats = [name for what, name in log if what == "repeat"]
    assert repeats == ["fastgrad", "dezero", "torch"] * SETTINGS.rounds
    opens = [name for what, name in log if what == "open"]
    assert opens == ["fastgrad", "dezero", "torch"]
    assert log.index(("open", "torch")) < log.index(("repeat", "fastgrad"))


def test_ratio_is_median_of_per_round_ratios():
    # A machine that is 10x slower in the middle round slows every peer alike:
    # the per-round ratio stays exactly 2, its spread 0.
    rec, _ = _fake_case({"fastgrad": [1.0, 10.0, 1.0], "dezero": [2.0, 20.0, 2.0]})
    r = rec["ratios"]["dezero"]["total"]
    assert r["median"] == pytest.approx(2.0)
    assert r["min"] == r["max"] == pytest.approx(2.0)
    assert r["samples"] == pytest.approx([2.0, 2.0, 2.0])
    fg = rec["peers"]["fastgrad"]["phases"]["total"]
    assert fg["samples"] == [1.0, 10.0, 1.0] and fg["median"] == 1.0


def test_failed_and_skipped_peers_have_no_timings():
    rec, log = _fake_case({"fastgrad": [1.0] * 3, "dezero": [2.0] * 3, "torch": [3.0] * 3},
                          statuses={"dezero": "failed", "torch": "skipped"})
    assert rec["peers"]["dezero"]["status"] == "failed"
    assert rec["peers"]["torch"]["status"] == "skipped"
    assert "phases" not in rec["peers"]["dezero"]
    assert set(rec["ratios"]) == set()
    assert [n for w, n in log if w == "repeat"] == ["fastgrad"] * 3


def test_budget_skips_a_peer_predicted_too_slow():
    settings = measure.Settings(max_time=0.2)  # limit 5 x 0.2 = 1 s
    budget = measure.Budget(settings)
    case = lambda n: Case("scaling", "wide", {"n": n})  # noqa: E731
    budget.record(case(100), "dezero", 0.001)
    budget.record(case(1000), "dezero", 0.1)  # quadratic so far
    assert "predicted" in budget.refusal(case(10_000), "dezero")
    assert budget.refusal(case(10_000), "torch") is None
    assert budget.refusal(Case("overhead", "goldstein"), "dezero") is None


def test_check_finds_wrong_missing_and_misshapen_results():
    want = {"out": 1.0, "g": [np.array([1.0, 2.0])]}
    assert measure.check({"out": 1.0, "g": [[1.0, 2.0]]}, want, 1e-9) is None
    assert "g wrong" in measure.check({"out": 1.0, "g": [[1.0, 2.1]]}, want, 1e-9)
    assert "missing" in measure.check({"out": 1.0}, want, 1e-9)
    assert measure.check({"out": 1.0}, want, 1e-9, forward_only=True) is None
    assert "shape" in measure.check({"out": 1.0, "g": [[1.0]]}, want, 1e-9)
    assert "out wrong" in measure.check({"out": 1.5, "g": [[1.0, 2.0]]}, want, 1e-9)


# --------------------------------------------------------------------------
# adapters against the references, and a wrong peer
# --------------------------------------------------------------------------
def _first_cases():
    out = []
    for name, suite in SUITES.items():
        if name == "memory":
            continue
        case = min(suite.cases("quick"), key=lambda c: c.ops)
        out += [(name, case, peer) for peer in P.PEERS if peer not in P.SUBPROCESS]
    return out


@pytest.mark.parametrize("suite,case,peer", _first_cases(),
                         ids=lambda v: getattr(v, "label", v))
def test_every_adapter_matches_the_reference(suite, case, peer):
    """Each installed peer's results agree with the suite's reference (the
    check a run makes before timing anything)."""
    suite = SUITES[suite]
    if suite.refusal(case, peer):
        pytest.skip(suite.refusal(case, peer))
    info = measure.Local(suite, case, peer).open()
    if info["status"] == "skipped":
        pytest.skip(info["reason"])
    assert info["status"] == "ok", info


def test_a_peer_with_wrong_results_is_excluded(monkeypatch):
    class Wrong(P.Tape):
        def grads(self, handle, leaves):
            return [g * 1.5 for g in super().grads(handle, leaves)]

    def wrong(name, full):
        good = P.get("fastgrad")
        return Wrong(name, good.V, good.Function, good.F, full=False)
    monkeypatch.setitem(P._FACTORIES, "wrong", wrong)
    monkeypatch.setitem(P.PEER_INFO, "wrong", ("a broken peer", "fastgrad", "-"))
    suite = SUITES["overhead"]
    case = suite.cases("quick")[0]
    logged = []
    rec = measure.run_case(suite, case, ["fastgrad", "wrong"], SETTINGS, log=logged.append)
    assert rec["peers"]["fastgrad"]["status"] == "ok"
    bad = rec["peers"]["wrong"]
    assert bad["status"] == "failed" and "wrong result" in bad["reason"]
    assert "phases" not in bad and "wrong" not in rec["ratios"]
    assert any("wrong" in line for line in logged)
    P._cache.pop(("wrong", False), None)


# --------------------------------------------------------------------------
# end to end, in a child process with only NumPy and fastgrad importable
# --------------------------------------------------------------------------
def _env(tmp_path, **extra):
    hide = tmp_path / "hide"
    for name in HIDDEN:
        (hide / name).mkdir(parents=True, exist_ok=True)
        (hide / name / "__init__.py").write_text(f"raise ImportError('{name} hidden')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(hide), FASTGRAD_PARENT]), **extra)
    env.pop(measure.FAULT_ENV, None) if measure.FAULT_ENV not in extra else None
    return env


def _bench(args, env):
    return subprocess.run([sys.executable, "-m", "fastgrad.bench", *args], env=env,
                          cwd=env["PYTHONPATH"].split(os.pathsep)[0],
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("quick")
    path = tmp / "run.json"
    proc = _bench(["overhead", "--quick", "--json", str(path)], _env(tmp))
    return proc, path


def test_quick_run_with_peers_missing(quick_run):
    proc, path = quick_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "== overhead" in proc.stdout and "goldstein" in proc.stdout
    assert "[  0%] overhead goldstein" in proc.stderr  # progress on stderr
    assert "== overhead" not in proc.stderr
    for name in ("dezero", "dezero-full", "torch", "autograd", "jax", "jax-jit"):
        assert f"peer {name}: skipped" in proc.stderr
    # The table says why, with the command that installs the peer.
    assert ("skipped: torch (3 cases): import torch failed (ImportError('torch hidden')); "
            "pip install torch==2.13.0") in proc.stdout
    assert "skipped: jax-jit (3 cases): import jax failed" in proc.stdout


def test_a_peer_not_installed_is_skipped_with_its_pip_command(monkeypatch, capsys):
    monkeypatch.setattr(P, "installed", lambda name: name != "autograd")
    assert cli.main(["overhead", "--quick", "--filter", "goldstein",
                     "--peers", "numpy,fastgrad,autograd"]) == 0
    out, err = capsys.readouterr()
    assert "peer autograd: skipped (not installed: pip install autograd)" in err
    assert "skipped: autograd (overhead goldstein): not installed: pip install autograd" in out
    assert "goldstein  fwd+bwd" in out


def test_json_schema(quick_run):
    proc, path = quick_run
    doc = json.loads(path.read_text())
    assert doc["schema"] == report.SCHEMA
    for key in ("created", "command", "tier", "settings", "suites", "results", "targets",
                "machine", "elapsed_seconds"):
        assert key in doc, key
    for key in ("cpu_model", "cpu_count", "python", "numpy", "peers", "env", "loadavg",
                "fastgrad_build"):
        assert key in doc["machine"], key
    assert doc["machine"]["peers"]["torch"]["available"] is False
    assert "pip install" in doc["machine"]["peers"]["torch"]["reason"]
    rounds = doc["settings"]["rounds"]
    assert [r["label"] for r in doc["results"]] == [c.label for c in
                                                    SUITES["overhead"].cases("quick")]
    for rec in doc["results"]:
        assert set(P.PEERS) <= set(rec["peers"])
        for peer, info in rec["peers"].items():
            assert info["status"] in ("ok", "skipped"), (peer, info)
            if info["status"] != "ok":
                assert info["reason"]
                continue
            assert info["loops"] >= 1
            for st in info["phases"].values():
                n = 1 if info["single"] else rounds
                assert len(st["samples"]) == n
                assert st["min"] <= st["q1"] <= st["median"] <= st["q3"] <= st["max"]
        assert rec["peers"]["fastgrad-pure"]["status"] == "ok"  # the child process
        assert "total" in rec["ratios"]["fastgrad-pure"]
        assert "fwd" in rec["ratios"]["numpy"] and "total" not in rec["ratios"]["numpy"]


def test_show_and_compare_a_recorded_run(quick_run, capsys):
    proc, path = quick_run
    assert cli.main(["show", str(path)]) == 0
    out = capsys.readouterr().out
    assert "== overhead" in out and "== targets" in out and "goldstein" in out
    assert cli.main(["show", str(path), "--times"]) == 0
    assert "median" in capsys.readouterr().out
    assert cli.main(["compare", str(path), str(path)]) == 0
    out = capsys.readouterr().out
    assert "not significant" in out and "0 faster, 0 slower" in out


def test_compare_verdicts_and_bad_files(tmp_path, capsys):
    def doc(cells):
        results = [{"label": label, "peers": {"fastgrad": {
            "status": "ok", "phases": {"total": {"median": m, "q1": m - i / 2,
                                                 "q3": m + i / 2}}}}}
                   for label, (m, i) in cells.items()]
        return {"schema": report.SCHEMA, "results": results}
    a = doc({"k add": (1.0, 0.02), "k mul": (1.0, 0.02), "k pow": (1.0, 0.5), "a": (1, 0)})
    b = doc({"k add": (0.5, 0.02), "k mul": (2.0, 0.02), "k pow": (1.2, 0.5)})
    rows, gm = report.compare(a, b)
    assert {r["label"]: r["verdict"] for r in rows} == {
        "k add": "faster", "k mul": "slower", "k pow": "not significant"}
    assert gm == pytest.approx((0.5 * 2.0 * 1.2) ** (1 / 3))
    good, bad = tmp_path / "a.json", tmp_path / "bad.json"
    good.write_text(json.dumps(a))
    bad.write_text("{}")
    assert cli.main(["compare", str(good), str(bad)]) == 2
    assert "not a fastgrad-bench/2" in capsys.readouterr().err


def test_a_wrong_peer_fails_the_run(tmp_path):
    env = _env(tmp_path, **{measure.FAULT_ENV: "numpy"})
    proc = _bench(["overhead", "--quick", "--filter", "goldstein", "--peers",
                   "numpy,fastgrad"], env)
    assert proc.returncode == 1
    assert "FAIL" in proc.stdout and "wrong result" in proc.stdout
    assert "FAILED: overhead goldstein numpy: wrong result" in proc.stderr


def test_targets_pass_miss_and_not_measured():
    rec = {"suite": "overhead", "label": "overhead goldstein", "peers": {},
           "ratios": {"dezero": {"total": {"median": 50.0}},
                      "torch": {"total": {"median": 2.0}}}}
    doc = {"results": [rec]}
    got = {t["target"]: t["ok"] for t in targets.evaluate(doc)}
    assert got["overhead goldstein total: dezero/fastgrad >= 8x"] is True
    assert got["overhead goldstein total: torch/fastgrad >= 8x"] is False
    assert got["overhead chain 1e3 total: dezero/fastgrad >= 8x"] is None
    text = targets.format_targets(targets.evaluate(doc))
    assert "PASS" in text and "MISS" in text and "not measured" in text


def test_a_suite_fastgrad_cannot_run_is_shown_as_skip(monkeypatch):
    suite = SUITES["lstsq"]
    monkeypatch.setattr(type(suite), "needs", ("matmul", "no_such_function"))
    reason = cli._suite_refusal(suite)
    assert "no_such_function" in reason
    doc = {"suites": {"lstsq": {"status": "skipped", "reason": reason}}, "results": []}
    assert f"SKIP: {reason}" in report.suite_table(doc, "lstsq")


def test_a_slow_first_call_is_retried_warm_before_a_single_sample():
    class Cold(FakeRunner):
        def open(self):
            info = super().open()
            info.update(first={"fwd": 50.0, "total": 50.0}, cold_start=self.name == "jax")
            return info
    log = []

    def runner(suite, case, name):
        r = Cold(log, [1e-3] * 10)
        r.name = name
        return r
    suite = SUITES["overhead"]
    rec = measure.run_case(suite, suite.cases("quick")[0], ["fastgrad", "torch", "jax"],
                           SETTINGS, runner=runner)
    # torch's 50 s check is past the retry bound: one sample; jax compiles on
    # first call, so it is retried, found fast, and timed in the rounds.
    assert rec["peers"]["torch"]["single"] is True
    assert rec["peers"]["torch"]["phases"]["total"]["samples"] == [50.0]
    assert rec["peers"]["jax"]["single"] is False
    assert [n for w, n in log if w == "repeat"].count("jax") == 1 + SETTINGS.rounds
