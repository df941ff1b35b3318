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

    def repeat(self, loops, iters=False):
        t = self.times[self.n]
        self.n += 1
        self.log.append(("repeat", self.name))
        out = {"times": {"fwd": t, "total": t}, "cores": 1.0}
        if iters:
            out["iters"] = [t] * loops
        return out

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
def _env(tmp_path, hidden=HIDDEN, **extra):
    hide = tmp_path / "hide"
    for name in hidden:
        (hide / name).mkdir(parents=True, exist_ok=True)
        (hide / name / "__init__.py").write_text(f"raise ImportError('{name} hidden')\n")
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(hide), FASTGRAD_PARENT]), **extra)


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
    assert "not a fastgrad-bench/2 or fastgrad-bench/3 results file" in capsys.readouterr().err


def test_a_wrong_peer_fails_the_run(monkeypatch, capsys):
    class WrongNumpy(P.Numpy):
        def value(self, out):
            return super().value(out) * 1.5 + 1.0
    monkeypatch.setitem(P._FACTORIES, "numpy", lambda name, full: WrongNumpy(name))
    monkeypatch.setattr(P, "_cache", {})
    code = cli.main(["overhead", "--quick", "--filter", "goldstein", "--peers",
                     "numpy,fastgrad"])
    out, err = capsys.readouterr()
    assert code == 1
    assert "FAIL" in out and "wrong result" in out
    assert "FAILED: overhead goldstein numpy: wrong result" in err


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


# --------------------------------------------------------------------------
# thread settings
# --------------------------------------------------------------------------
def test_threads_option_resolves_all_and_drops_duplicates():
    cores = len(os.sched_getaffinity(0))
    assert cli.parse_run_args([]).threads == list(dict.fromkeys([1, cores]))
    assert cli.parse_run_args(["--threads", "all"]).threads == [cores]
    assert cli.parse_run_args(["--threads", "2,1,2"]).threads == [2, 1]
    assert cli.parse_run_args(["--threads", f"{cores},all,1"]).threads == [cores, 1]


@pytest.mark.parametrize("bad", ["0", "x", "1,,2", "-1", ""])
def test_bad_thread_settings_exit_2(bad, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--threads", bad])
    assert exc.value.code == 2
    assert "--threads" in capsys.readouterr().err


def test_threaded_suites_have_a_case_per_setting_and_the_others_one():
    cases = SUITES["kernels"].cases("quick", [1, 3])
    per_workload = len(SUITES["kernels"].tiers["quick"])
    assert len(cases) == 2 * per_workload
    first, second = cases[0], cases[1]    # one workload, both settings, in turn
    assert first.base_label == second.base_label == "kernels add float64 1e5"
    assert (first.label, second.label) == ("kernels add float64 1e5 thr=1",
                                           "kernels add float64 1e5 thr=3")
    for name in ("unary", "fused", "lstsq", "mlp", "conv"):
        assert SUITES[name].threaded, name
    for name in ("overhead", "scaling", "scalar-fns", "newton", "loop"):
        assert not SUITES[name].threaded, name
        assert all(c.threads is None and " thr=" not in c.label
                   for c in SUITES[name].cases("quick", [1, 3]))


def _fake_threaded_doc(times):
    """Records of kernels cases run by fake runners at settings 1 and 2;
    ``times[threads][peer]`` is that peer's time per round."""
    suite, results = SUITES["kernels"], []
    for case in suite.cases("quick", [1, 2]):
        log = []

        def runner(suite, case, name):
            r = FakeRunner(log, times[case.threads][name])
            r.name = name
            return r
        results.append(measure.run_case(suite, case, ["fastgrad", "dezero", "torch"],
                                        SETTINGS, runner=runner, tails=True))
    return {"results": results, "settings": {"rounds": SETTINGS.rounds}, "suites": {}}


def test_cells_pair_only_within_one_thread_setting():
    doc = _fake_threaded_doc({1: {"fastgrad": [1.0] * 3, "dezero": [3.0] * 3,
                                  "torch": [2.0] * 3},
                              2: {"fastgrad": [0.5] * 3, "dezero": [3.0] * 3,
                                  "torch": [0.5] * 3}})
    for rec in doc["results"]:
        n = rec["threads"]
        assert rec["threaded"] and rec["label"] == rec["base_label"] + f" thr={n}"
        want = {1: (3.0, 2.0), 2: (6.0, 1.0)}[n]
        assert rec["ratios"]["dezero"]["total"]["median"] == pytest.approx(want[0])
        assert rec["ratios"]["torch"]["total"]["median"] == pytest.approx(want[1])
        tail = rec["peers"]["fastgrad"]["tail"]
        assert tail["n"] == SETTINGS.rounds and tail["max"] == tail["p95"] == tail["median"]
    text = report.suite_table(doc, "kernels")
    lines = text.splitlines()
    assert "thr" in lines[3].split()
    geo = [ln.split() for ln in lines if ln.startswith("geomean")]
    # geomean, phase, thr, then dezero's and torch's geomeans of that setting
    assert ["geomean", "fwd+bwd", "1", "3x", "2x"] in geo
    assert ["geomean", "fwd+bwd", "2", "6x", "1x"] in geo
    assert "single iterations" in text
    got = {t["target"]: t["value"] for t in targets.evaluate(doc)}
    n = len(SUITES["kernels"].tiers["quick"])
    assert got[f"kernels (geomean of {n} cases) thr=1 total: dezero/fastgrad >= 2x"] == \
        pytest.approx(3.0)
    assert got[f"kernels (geomean of {n} cases) thr=2 total: dezero/fastgrad >= 2x"] == \
        pytest.approx(6.0)
    assert got[f"kernels (min of {n} cases) thr=2 total: torch/fastgrad >= 1.2x"
               .replace("torch", "dezero")] == pytest.approx(6.0)
    assert got[f"kernels (geomean of {n} cases) thr=2 total: torch/fastgrad >= 1.5x"] == \
        pytest.approx(1.0)


def test_tails_keep_every_iteration():
    class Spiky(FakeRunner):
        def repeat(self, loops, iters=False):
            out = super().repeat(loops, iters)
            if iters:
                out["iters"] = [1.0] * 19 + [40.0]
            return out
    log = []

    def runner(suite, case, name):
        r = Spiky(log, [1.0] * 3)
        r.name = name
        return r
    suite = SUITES["kernels"]
    rec = measure.run_case(suite, suite.cases("quick", [2])[0], ["fastgrad"], SETTINGS,
                           runner=runner, tails=True)
    tail = rec["peers"]["fastgrad"]["tail"]
    assert tail["n"] == 60 and tail["max"] == 40.0 and tail["median"] == 1.0
    assert tail["p95"] == pytest.approx(np.percentile([1.0] * 57 + [40.0] * 3, 95))
    rec = measure.run_case(suite, suite.cases("quick", [2])[0], ["fastgrad"], SETTINGS,
                           runner=runner)
    assert "tail" not in rec["peers"]["fastgrad"]


# --------------------------------------------------------------------------
# the roofline: the probe, the traffic, the fractions
# --------------------------------------------------------------------------
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_stream_probe_equals_numpy_at_any_thread_count(threads):
    from fastgrad import _stream
    saved = fastgrad.get_num_threads()
    rng = np.random.default_rng(threads)
    g = _stream.GRAIN
    try:
        fastgrad.set_num_threads(threads)
        for n in (0, 1, 7, g - 1, g, g + 1, 5 * g + 3):
            b, c = rng.standard_normal(n), rng.standard_normal(n)
            a = np.full(n, np.nan)
            _stream.triad(a, b, c, 3.0)
            assert np.array_equal(a, b + 3.0 * c)   # bit for bit: no FMA
            a = np.full(n, np.nan)
            _stream.copy(a, b)
            assert np.array_equal(a, b)
    finally:
        fastgrad.set_num_threads(saved)


def test_stream_probe_refuses_bad_arrays():
    from fastgrad import _stream
    a, b = np.zeros(10), np.ones(10)
    with pytest.raises(ValueError, match="b has 9 elements"):
        _stream.copy(a, b[:9])
    with pytest.raises(ValueError, match="c has 11 elements"):
        _stream.triad(a, b, np.ones(11), 2.0)
    with pytest.raises(ValueError, match="dtype mismatch"):
        _stream.copy(a, b.astype(np.float32))
    with pytest.raises(ValueError, match="contiguous"):
        _stream.copy(a, np.ones(20)[::2])
    with pytest.raises(ValueError, match="read-only"):
        b.flags.writeable = False
        _stream.copy(b, a)
    with pytest.raises(TypeError):
        _stream.triad(a, None, b, 1.0)


def test_roofline_probe_rows(monkeypatch):
    from fastgrad.bench import roofline
    monkeypatch.setattr(roofline, "sizes", lambda llc: {"cache": 1000, "dram": 5000})
    saved = fastgrad.get_num_threads()
    probe = roofline.measure([1, 2], min_time=0.0, min_calls=3)
    assert fastgrad.get_num_threads() == saved
    assert probe["status"] == "ok" and probe["llc_bytes"] > 0
    got = {(r["kernel"], r["regime"], r["threads"]) for r in probe["rows"]}
    assert got == {(k, w, t) for k in ("copy", "triad") for w in ("cache", "dram")
                   for t in (1, 2)}
    for r in probe["rows"]:
        assert r["bytes"] == {"copy": 16, "triad": 24}[r["kernel"]] * r["n"]
        assert r["gbps"] == pytest.approx(r["bytes"] / r["best_s"] / 1e9)
        assert r["gbps"] >= r["gbps_median"] > 0
    assert roofline.roof(probe, "dram", 2) == next(
        r["gbps"] for r in probe["rows"] if (r["kernel"], r["regime"], r["threads"])
        == ("triad", "dram", 2))
    assert roofline.roof(probe, "dram", 7) is None
    assert "GB/s best" in report.roofline_table(probe)


def test_every_array_workload_declares_its_minimal_traffic():
    from fastgrad.bench.suites import Traffic
    for name in ("kernels", "unary"):
        suite = SUITES[name]
        assert set(suite.traffic) == set(suite.table)
        for workload, t in suite.traffic.items():
            assert isinstance(t, Traffic) and t.why
            reads, writes = t.bwd
            assert writes >= 2  # the seed and at least one gradient
            assert t.arrays("total") == t.arrays("fwd") + t.arrays("bwd")
    k = SUITES["kernels"]
    case = Case("kernels", "add", {"dtype": "float32", "size": 1000}, threads=1)
    # x + y: reads x, y, writes the sum; the seed, and y's own gradient copy
    assert k.traffic_bytes(case, "fwd") == 3 * 1000 * 4
    assert k.traffic_bytes(case, "total") == 6 * 1000 * 4
    case = Case("kernels", "mul", {"dtype": "float64", "size": 10}, threads=1)
    assert k.traffic_bytes(case, "total") == 9 * 10 * 8


def test_bandwidth_and_fraction_of_a_cell():
    from fastgrad.bench import roofline
    probe = {"status": "ok", "kernel": "triad", "llc_bytes": 300_000, "rows": [
        {"kernel": "triad", "regime": "cache", "threads": 2, "gbps": 100.0},
        {"kernel": "triad", "regime": "dram", "threads": 2, "gbps": 20.0}]}
    suite = SUITES["kernels"]
    case = Case("kernels", "add", {"dtype": "float64", "size": 10 ** 4}, threads=2)
    rec = {"threads": 2, "peers": {
        "fastgrad": {"status": "ok", "phases": {"fwd": {"median": 1e-5},
                                                "total": {"median": 1e-4}}},
        "numpy": {"status": "ok", "phases": {"fwd": {"median": 2e-5}}},
        "torch": {"status": "skipped", "reason": "x"}}}
    roofline.annotate(rec, suite, case, probe)
    assert rec["traffic"]["fwd"] == {"bytes": 240_000, "regime": "cache", "roof_gbps": 100.0}
    # 480 kB do not fit in the 300 kB cache: the DRAM roof
    assert rec["traffic"]["total"] == {"bytes": 480_000, "regime": "dram", "roof_gbps": 20.0}
    fg = rec["bandwidth"]["fastgrad"]
    assert fg["fwd"]["gbps"] == pytest.approx(24.0)
    assert fg["fwd"]["fraction"] == pytest.approx(0.24)
    assert fg["total"]["gbps"] == pytest.approx(4.8)
    assert fg["total"]["fraction"] == pytest.approx(0.24)
    assert rec["bandwidth"]["numpy"]["fwd"]["gbps"] == pytest.approx(12.0)
    assert "torch" not in rec["bandwidth"]


# --------------------------------------------------------------------------
# end to end at two thread settings
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def threaded_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("threaded")
    path = tmp / "run.json"
    proc = _bench(["kernels", "--quick", "--threads", "1,3", "--filter", "add",
                   "--peers", "numpy,fastgrad,fastgrad-pure,dezero", "--json", str(path)],
                  _env(tmp, hidden=("torch", "autograd", "jax")))
    return proc, path


def test_a_run_at_two_settings_labels_pairs_and_sets_every_peer(threaded_run):
    proc, path = threaded_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(path.read_text())
    assert doc["schema"] == report.SCHEMA and doc["threads"] == [1, 3]
    recs = doc["results"]
    assert [r["label"] for r in recs] == ["kernels add float64 1e5 thr=1",
                                          "kernels add float64 1e5 thr=3"]
    for rec in recs:
        n = rec["threads"]
        # this process's libraries, and the child's of fastgrad-pure
        assert rec["thread_state"]["fastgrad"] == n
        assert set(rec["thread_state"]["blas"]) <= {n}
        assert rec["peers"]["fastgrad-pure"]["thread_state"]["fastgrad"] == n
        assert rec["traffic"]["total"]["bytes"] == 6 * 10 ** 5 * 8
        for peer in ("fastgrad", "fastgrad-pure", "dezero", "numpy"):
            info = rec["peers"][peer]
            assert info["status"] == "ok", (peer, info)
            t = info["tail"]
            assert t["n"] == len(t["samples"]) >= doc["settings"]["rounds"]
            assert t["median"] <= t["p95"] <= t["max"]
            assert info["cores"] > 0
            bw = rec["bandwidth"][peer]["fwd"]
            assert bw["gbps"] == pytest.approx(
                rec["traffic"]["fwd"]["bytes"] / info["phases"]["fwd"]["median"] / 1e9)
            assert bw["fraction"] == pytest.approx(
                bw["gbps"] / rec["traffic"]["fwd"]["roof_gbps"])
    assert {(r["kernel"], r["threads"]) for r in doc["roofline"]["rows"]} == {
        (k, n) for k in ("copy", "triad") for n in (1, 3)}
    out = proc.stdout
    assert "== roofline" in out and "effective bandwidth" in out
    assert "single iterations" in out
    assert "add float64 1e5  fwd+bwd    1" in out and "add float64 1e5  fwd+bwd    3" in out
    assert "kernels (geomean of 1 cases) thr=3 total: dezero/fastgrad >= 2x" in out


def test_show_prints_the_same_tables(threaded_run, capsys):
    proc, path = threaded_run
    assert cli.main(["show", str(path)]) == 0
    out = capsys.readouterr().out
    for block in ("== roofline", "== kernels", "effective bandwidth", "single iterations",
                  "== targets"):
        assert block in out


RECORDED = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir,
                        "benchmarks", "results", "2026-12-02-rowwise-default.json")


@pytest.mark.skipif(not os.path.exists(RECORDED), reason="no recorded run in this tree")
def test_show_and_compare_read_a_version_2_run(capsys):
    assert cli.main(["show", RECORDED]) == 0
    out = capsys.readouterr().out
    assert "== kernels" in out and "geomean" in out and " thr " not in out
    assert cli.main(["compare", RECORDED, RECORDED]) == 0
    assert "0 faster, 0 slower" in capsys.readouterr().out


def test_missing_threadpoolctl_fails_clearly(tmp_path):
    proc = _bench(["overhead", "--quick", "--peers", "fastgrad"],
                  _env(tmp_path, hidden=HIDDEN + ("threadpoolctl",)))
    assert proc.returncode == 2
    assert "threadpoolctl" in proc.stderr and "pip install threadpoolctl" in proc.stderr
    assert proc.stdout == ""


# --------------------------------------------------------------------------
# targets as data
# --------------------------------------------------------------------------
def test_shipped_targets_name_real_cases():
    rows = targets.load()
    labels = {c.base_label for s in SUITES.values() if s.name != "memory"
              for tier in s.tiers for c in s.cases(tier)}
    for t in rows:
        if t["kind"] == "ratio":
            assert t["case"] in labels, t
        elif t["kind"] in ("geomean", "min"):
            assert t["suite"] in SUITES, t
        for peer in (t["peer"], t.get("base", P.REFERENCE)):
            assert peer in P.PEER_INFO, t
    kinds = {(t["kind"], t.get("suite"), t["peer"]): t.get("at_least") for t in rows}
    assert kinds[("geomean", "kernels", "dezero")] == 2
    assert kinds[("min", "kernels", "dezero")] == 1.2
    assert kinds[("geomean", "unary", "torch")] == 1.5


def test_targets_file_option_and_bad_files(tmp_path, capsys, monkeypatch):
    mine = tmp_path / "mine.json"
    mine.write_text(json.dumps({"targets": [
        {"kind": "ratio", "case": "overhead goldstein", "peer": "numpy", "phase": "fwd",
         "at_least": 0.001}]}))
    monkeypatch.setattr(P, "installed", lambda name: name in ("numpy", "fastgrad"))
    assert cli.main(["overhead", "--quick", "--filter", "goldstein", "--peers",
                     "numpy,fastgrad", "--targets", str(mine)]) == 0
    out = capsys.readouterr().out
    assert f"== targets ({mine}) ==" in out
    assert "PASS  overhead goldstein fwd: numpy/fastgrad >= 0.001x" in out
    for text, problem in (("[1]", "no 'targets' list"), ("{", "not JSON"),
                          ('{"targets": [{"kind": "best"}]}', "'kind' must be one of"),
                          ('{"targets": [{"kind": "min", "suite": "kernels"}]}',
                           "missing peer, phase, at_least")):
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        assert cli.main(["overhead", "--quick", "--targets", str(bad)]) == 2
        assert problem in capsys.readouterr().err
    assert cli.main(["overhead", "--targets", str(tmp_path / "none.json")]) == 2
    assert "cannot read the targets" in capsys.readouterr().err


@pytest.mark.parametrize("module", ["cli", "measure", "peers", "report", "roofline",
                                    "stats", "suites", "targets", "threads"])
def test_each_bench_module_imports_alone(module):
    """No hidden import cycles: each module imports first in a fresh process."""
    proc = subprocess.run([sys.executable, "-c", f"import fastgrad.bench.{module}"],
                          cwd=FASTGRAD_PARENT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
