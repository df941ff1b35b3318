"""Tests of the fastgrad-bench CLI (no timing thresholds anywhere)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fastgrad.bench import cli, compare, runner
from fastgrad.bench.cases import Case
from fastgrad.bench.report import SCHEMA
from fastgrad.bench.timing import fit_exponent, quantiles

import fastgrad

# The directory holding the fastgrad under test (site-packages after
# `pip install .`, the work tree for an in-place build): the subprocesses
# must import that one, not whatever the current directory offers.
FASTGRAD_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(fastgrad.__file__)))
HIDDEN = ("torch", "dezero", "autograd", "matplotlib")


# --------------------------------------------------------------------------
# argument parsing
# --------------------------------------------------------------------------
def test_defaults():
    args = cli.parse_run_args([])
    assert args.tier == "default"
    assert args.suites == ["overhead", "scaling", "kernels", "memory"]
    assert args.settings.repeats >= 5
    assert args.sizes is None and args.json is None


def test_quick_suites_filter_sizes():
    args = cli.parse_run_args(["--quick", "--suite", "kernels", "--suite", "overhead",
                               "--filter", "mul", "--filter", "add",
                               "--sizes", "1e6,2500", "--peers", "numpy,fastgrad"])
    assert args.tier == "quick"
    assert args.suites == ["overhead", "kernels"]  # run in the canonical order
    assert args.filter == ["mul", "add"]
    assert args.sizes == [1_000_000, 2500]
    assert args.peer_list == ["numpy", "fastgrad"]
    assert args.settings.repeats < 5


@pytest.mark.parametrize("argv", [
    ["--suite", "nope"],
    ["--sizes", "abc"],
    ["--sizes", "0"],
    ["--sizes", "1.5"],
    ["--peers", "numpy,jax"],
    ["--quick", "--full"],
    ["--repeats", "-1"],
    ["--unknown-option"],
])
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


def test_help_everywhere(capsys):
    for argv in (["--help"], ["compare", "--help"]):
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--suite" in out and "A.json" in out


def test_filter_selects_cases():
    args = cli.parse_run_args(["--filter", "mul float64"])
    labels = [c.label for c in runner.SUITES["kernels"].cases(args)]
    chosen = [lb for lb in labels if cli._matches(lb, args.filter)]
    assert chosen == ["kernels mul float64 1e6", "kernels mul float64 1e7"]
    full = cli.parse_run_args(["--full"])
    assert len(runner.SUITES["kernels"].cases(full)) == 16  # 4 ops x 2 dtypes x 2 sizes


# --------------------------------------------------------------------------
# statistics, growth exponent, budget, correctness check
# --------------------------------------------------------------------------
def test_fit_exponent_recovers_power_law():
    ns = [100, 1000, 10_000, 100_000]
    assert fit_exponent(ns, [3e-6 * n ** 1.0 for n in ns]) == pytest.approx(1.0)
    assert fit_exponent(ns, [2e-9 * n ** 2 for n in ns]) == pytest.approx(2.0)
    assert fit_exponent([10], [1.0]) is None
    assert fit_exponent([10, 10], [1.0, 2.0]) is None


def _scaling_record(workload, peer, n, bwd):
    st = {"median": bwd, "q1": bwd, "q3": bwd, "iqr": 0.0, "samples": [bwd]}
    return {"suite": "scaling", "workload": workload, "peer": peer, "params": {"n": n},
            "label": f"scaling {workload} {n}", "status": "ok",
            "stats": {"phases": {"bwd": st, "total": st}}}


def test_growth_exponents_use_large_n():
    recs = [_scaling_record("wide", "dezero", n, 1e-7 * n ** 2)
            for n in (100, 1000, 10_000)]
    recs.append(_scaling_record("wide", "dezero", 10 ** 6, 1e9))  # outside 1e3..1e5
    # A tiny-N point off the curve must not bend the fit (N >= 1000 is used).
    recs[0]["stats"]["phases"]["bwd"]["median"] = 1.0
    (e,) = runner.growth_exponents(recs)
    assert e["exponent"] == pytest.approx(2.0)
    assert (e["n_min"], e["n_max"], e["points"]) == (1000, 10_000, 2)


def test_budget_skips_predicted_slow_cells():
    budget = runner.Budget(max_time=0.2)  # skips above 5 x 0.2 = 1 s
    case = lambda n: Case("scaling", "wide", {"n": n}, ("dezero",))  # noqa: E731
    assert budget.reason_to_skip(case(100), "dezero") is None
    budget.record(case(100), "dezero", 0.001)
    budget.record(case(1000), "dezero", 0.1)     # quadratic so far
    assert budget.reason_to_skip(case(10_000), "dezero") is not None  # ~10 s
    assert "skipped after" in budget.reason_to_skip(case(100_000), "dezero")
    assert budget.reason_to_skip(case(10_000), "torch") is None


def test_check_detects_mismatch():
    want = {"z": 1.0, "gx": np.array([1.0, 2.0])}
    assert runner.check({"z": 1.0, "gx": [1.0, 2.0]}, want, 1e-9) is None
    assert runner.check({"z": 1.0}, want, 1e-9) is None  # forward-only peer
    assert "gx mismatch" in runner.check({"z": 1.0, "gx": [1.0, 2.1]}, want, 1e-9)
    assert "shape" in runner.check({"gx": [1.0]}, want, 1e-9)
    assert "None" in runner.check({"gx": None}, want, 1e-9)


def test_quantiles():
    assert quantiles([5.0]) == (5.0, 5.0, 5.0)
    q1, med, q3 = quantiles([1, 2, 3, 4, 5])
    assert (q1, med, q3) == (2, 3, 4)


# --------------------------------------------------------------------------
# compare on synthetic results
# --------------------------------------------------------------------------
def _doc(cells):
    results = []
    for (label, peer), (med, iqr) in cells.items():
        st = {"median": med, "q1": med - iqr / 2, "q3": med + iqr / 2, "iqr": iqr,
              "samples": [med]}
        results.append({"label": label, "peer": peer, "status": "ok",
                        "stats": {"phases": {"total": st}}})
    return {"schema": SCHEMA, "results": results}


def test_compare_verdicts_and_geomean():
    a = _doc({("k add", "fastgrad"): (1.0, 0.02), ("k mul", "fastgrad"): (1.0, 0.02),
              ("k pow", "fastgrad"): (1.0, 0.5), ("only in a", "fastgrad"): (1.0, 0.1)})
    b = _doc({("k add", "fastgrad"): (0.5, 0.02), ("k mul", "fastgrad"): (2.0, 0.02),
              ("k pow", "fastgrad"): (1.2, 0.5)})
    rows, gm = compare.compare(a, b)
    got = {r["label"]: r["verdict"] for r in rows}
    assert got == {"k add": "faster", "k mul": "slower", "k pow": "not significant"}
    assert gm == pytest.approx((0.5 * 2.0 * 1.2) ** (1 / 3))
    text = compare.format_compare(rows, gm)
    assert "geometric mean" in text and "1 faster, 1 slower, 1 not significant" in text


def test_compare_small_change_is_not_significant():
    a = {"median": 1.0, "q1": 0.999, "q3": 1.001}
    b = {"median": 1.02, "q1": 1.019, "q3": 1.021}
    assert compare.verdict(a, b, factor=1.05)[0] == "not significant"
    assert compare.verdict(a, b, factor=1.01)[0] == "slower"
    assert compare.geomean([]) is None


def test_compare_command(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(_doc({("x", "fastgrad"): (1.0, 0.01)})))
    b.write_text(json.dumps(_doc({("x", "fastgrad"): (0.25, 0.01)})))
    assert cli.main(["compare", str(a), str(b)]) == 0
    assert "faster" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert cli.main(["compare", str(a), str(bad)]) == 2


# --------------------------------------------------------------------------
# end to end, in a subprocess with only NumPy and fastgrad importable
# --------------------------------------------------------------------------
def _env_without_peers(tmp_path):
    """PYTHONPATH with stub packages that make the optional peers unimportable."""
    hide = tmp_path / "hide"
    for name in HIDDEN:
        pkg = hide / name
        pkg.mkdir(parents=True)
        (pkg / "__init__.py").write_text(f"raise ImportError('{name} hidden by test')\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(hide), FASTGRAD_PARENT])
    env.pop("FASTGRAD_BENCH_INJECT_FAULT", None)
    return env


def _bench(args, env):
    cwd = env["PYTHONPATH"].split(os.pathsep)[0]  # a directory without fastgrad/
    return subprocess.run([sys.executable, "-m", "fastgrad.bench", *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("quick")
    path = tmp / "quick.json"
    proc = _bench(["--quick", "--json", str(path)], _env_without_peers(tmp))
    return proc, path


def test_quick_run_passes_with_peers_missing(quick_run):
    proc, path = quick_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "== overhead" in proc.stdout and "== kernels" in proc.stdout
    assert "[  0%]" in proc.stderr
    for name in ("dezero", "torch", "autograd"):
        assert f"peer {name}: skipped" in proc.stderr


def test_json_schema(quick_run):
    proc, path = quick_run
    doc = json.loads(path.read_text())
    assert doc["schema"] == SCHEMA
    for key in ("created", "command", "tier", "settings", "results", "exponents",
                "stream_ceiling", "memory", "machine", "elapsed_seconds"):
        assert key in doc, key
    machine = doc["machine"]
    for key in ("cpu_model", "cpu_count", "python", "numpy", "numpy_blas", "peers", "env"):
        assert key in machine, key
    assert machine["peers"]["torch"]["available"] is False
    assert machine["peers"]["fastgrad"]["available"] is True
    statuses = {r["status"] for r in doc["results"]}
    assert statuses <= {"ok", "skipped"}
    for r in doc["results"]:
        for key in ("suite", "workload", "params", "label", "peer", "status", "ops"):
            assert key in r
        if r["peer"] in ("torch", "dezero", "autograd"):
            assert r["status"] == "skipped" and r["reason"]
        if r["status"] == "ok":
            st = r["stats"]
            assert st["loops"] >= 1 and st["repeats"] >= 1
            for ph in st["phases"].values():
                assert len(ph["samples"]) == st["repeats"]
                assert ph["q1"] <= ph["median"] <= ph["q3"]
    suites = {r["suite"] for r in doc["results"] if r["status"] == "ok"}
    assert suites == {"overhead", "scaling", "kernels"}
    kern = [r for r in doc["results"] if r["suite"] == "kernels" and r["status"] == "ok"]
    assert all(r["gbps"]["fwd"] > 0 for r in kern)
    assert doc["stream_ceiling"] and doc["stream_ceiling"][0]["gbps"] > 0


def test_show_rerenders_a_run(quick_run, capsys):
    proc, path = quick_run
    assert cli.main(["show", str(path)]) == 0
    out = capsys.readouterr().out
    assert "== overhead" in out and "== scaling" in out and "engine-speed targets" in out


def test_plot_without_matplotlib_is_a_clear_error(tmp_path):
    proc = _bench(["--quick", "--plot", str(tmp_path / "p")], _env_without_peers(tmp_path))
    assert proc.returncode == 2
    assert "matplotlib" in proc.stderr


def test_correctness_failure_exit_code(tmp_path):
    env = _env_without_peers(tmp_path)
    env[runner.FAULT_ENV] = "fastgrad"
    proc = _bench(["--quick", "--suite", "overhead", "--filter", "goldstein",
                   "--peers", "numpy,fastgrad"], env)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert "failed" in last and "correctness" in last
    assert "FAIL" in proc.stdout


def test_plots_written(tmp_path):
    pytest.importorskip("matplotlib")
    from fastgrad.bench.plot import write_plots
    recs = [_scaling_record("deep", "fastgrad", n, 1e-7 * n) for n in (100, 1000)]
    kern = {"suite": "kernels", "workload": "add", "peer": "fastgrad", "status": "ok",
            "label": "kernels add float64 1e6", "params": {}, "gbps": {"fwd": 5.0,
                                                                       "total": 4.0}}
    doc = {"results": recs + [kern],
           "stream_ceiling": [{"method": "stream_triad 2 threads", "gbps": 20.0}]}
    paths = write_plots(doc, str(tmp_path / "plots"))
    assert [os.path.basename(p) for p in paths] == ["scaling_deep.png", "kernels_gbps.png"]
    assert all(os.path.getsize(p) > 0 for p in paths)


# --------------------------------------------------------------------------
# robustness: broken peers and a broken ceiling kernel
# --------------------------------------------------------------------------
def test_stream_ceiling_falls_back_when_triad_is_wrong(monkeypatch):
    from fastgrad.bench import kernels
    from fastgrad.bench.timing import Settings
    try:
        from fastgrad import _ops
    except ImportError:
        pytest.skip("fastgrad._ops not built")
    monkeypatch.setattr(_ops, "stream_triad", lambda a, b, c, s, n: None, raising=False)
    (only,) = kernels.stream_ceiling(10_000, Settings(target=0.001, repeats=1))
    assert "estimate" in only["method"] and "wrong result" in only["note"]


def test_a_peer_that_raises_is_a_failure(monkeypatch):
    from fastgrad.bench import overhead
    from fastgrad.bench.timing import Settings

    def broken(case, peer, module):
        raise RuntimeError("boom")

    monkeypatch.setattr(overhead, "build", broken)
    case = overhead.cases(None)[0]
    record = runner.run_task(case, "numpy", Settings(target=0.001, repeats=1),
                             runner.Budget(1.0))
    assert record["status"] == "failed" and "boom" in record["reason"]
