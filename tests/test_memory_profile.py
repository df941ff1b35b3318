"""fastgrad.profiling.profile (a user's function, in subprocesses) and
graph_report (what a live graph holds).

Oracles: tracemalloc's NumPy domain (exact array bytes, independent of the
report's own walk) and the arrays' nbytes computed by hand from the graph's
structure.
"""
import gc
import json
import sys
import tracemalloc

import numpy as np
import pytest

from fastgrad import profiling
from fastgrad.profiling import probes, workers

pytest.importorskip("fastgrad._core")

N = 10**5                     # 800 kB arrays: below the kernels' block size too
A = 8 * N
SLACK = 4096                  # NumPy domain: scalar constants


def faces():
    out = [workers.load_impl("fastgrad")]
    try:
        out.append(workers.load_impl("fastgrad.dezero"))
    except ImportError:
        pass
    return out


@pytest.fixture(params=["fastgrad", "fastgrad.dezero"])
def face(request):
    try:
        return workers.load_impl(request.param)
    except ImportError as exc:
        pytest.skip(f"{request.param} not importable: {exc}")


def numpy_bytes():
    return probes.numpy_traced_bytes()


# ---------------------------------------------------------------------------
# graph_report
# ---------------------------------------------------------------------------
def test_report_counts_nodes_and_bytes_like_tracemalloc(face):
    gc.collect()
    x = face.Variable(np.full(N, 0.5))
    tracemalloc.start()
    try:
        base = numpy_bytes()
        y = x
        for _ in range(4):
            y = y * y + x      # 8 functions, 8 intermediate outputs
        y.backward(retain_grad=True)
        traced = numpy_bytes() - base
        r = profiling.graph_report(y, top=3)
    finally:
        tracemalloc.stop()
    assert r.functions == 8
    assert r.variables == 9            # x and the 8 outputs
    # Every array the graph holds was allocated after start, except x.data:
    # the report must find exactly those bytes (grads shared between
    # variables count once, as tracemalloc counts them).
    assert abs(r.total_bytes - (traced + A)) <= SLACK, (r.total_bytes, traced)
    assert len(r.rows) == r.shown == 3
    totals = [row.total_bytes for row in r.rows]
    assert totals == sorted(totals, reverse=True)
    assert sum(totals) + r.others_bytes == r.total_bytes
    # x is a leaf: its data is "saved" by exactly one function.
    full = profiling.graph_report(y, top=None)
    assert sum(row.saved_bytes for row in full.rows) == A
    assert all(row.outputs_bytes == A for row in full.rows)
    assert "function" in str(r) and "Add" in str(full) and "Mul" in str(full)


def test_report_without_retained_grads(face):
    x = face.Variable(np.full(N, 0.5))
    y = (x * x) * x
    y.backward()
    r = profiling.graph_report(y, top=None)
    assert (r.functions, r.variables) == (2, 3)
    # Outputs: 2 A; x.data: A; grads: x.grad only (outputs' grads cleared).
    assert r.total_bytes == 4 * A
    assert sum(row.grads_bytes for row in r.rows) == A


def test_report_counts_a_view_with_its_base():
    fastgrad = workers.load_impl("fastgrad")
    base = np.full(N, 0.5)
    x = fastgrad.Variable(base[: N // 2])   # the view keeps all of base alive
    w = fastgrad.Variable(base[N // 2:])
    r = profiling.graph_report(x * w, top=None)
    assert r.total_bytes == A + A // 2       # base once, plus the product


def test_report_on_a_leaf_and_on_no_grad_output(face):
    x = face.Variable(np.full(N, 0.5))
    r = profiling.graph_report(x)
    assert (r.functions, r.variables, r.total_bytes) == (0, 1, A)
    with face.no_grad():
        y = x * x
    assert profiling.graph_report(y).functions == 0


def test_report_walks_deep_graphs_iteratively():
    fastgrad = workers.load_impl("fastgrad")
    x = fastgrad.Variable(np.array(1.0))
    y = x
    n = 2 * 10**5          # far beyond the recursion limit
    for _ in range(n):
        y = -y
    r = profiling.graph_report(y, top=2)
    assert (r.functions, r.variables) == (n, n + 1)
    assert r.total_bytes == 8 * (n + 1)      # one float64 per variable


@pytest.mark.parametrize("bad, top, exc", [
    (np.ones(3), 10, TypeError), (None, 10, TypeError),
    ("x", 10, TypeError), ("ok", -1, ValueError), ("ok", 2.5, TypeError),
    ("ok", True, TypeError),
])
def test_report_rejects_bad_arguments(bad, top, exc):
    fastgrad = workers.load_impl("fastgrad")
    ok = isinstance(bad, str) and bad == "ok"
    y = fastgrad.Variable(np.ones(3)) * 2.0 if ok else bad
    with pytest.raises(exc):
        profiling.graph_report(y, top=top)


# ---------------------------------------------------------------------------
# profile (each mode in a fresh subprocess)
# ---------------------------------------------------------------------------
USER_MODULE = '''
import fastgrad


def squares(x):
    return (x ** 2) ** 2


class Twice(fastgrad.Function):
    def forward(self, x):
        return 2 * x

    def backward(self, gy):
        return 2 * gy


def user_twice(x, w):
    return Twice()(x) * w


def not_a_variable(x):
    return 3


def fails(x):
    raise ValueError("bad input shape")
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    path = tmp_path / "fg_profiled_user.py"
    path.write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("fg_profiled_user", None)
    import fg_profiled_user
    yield fg_profiled_user
    sys.modules.pop("fg_profiled_user", None)


def test_profile_squares_exact_bytes(user_module):
    p = profiling.profile(user_module.squares, np.full(N, 0.5))
    assert p.target == "fg_profiled_user:squares"
    assert list(p.modes) == list(profiling.PROFILE_MODES)
    assert p.input_shapes == [[N]] and p.input_bytes == A
    bp, ng, rg = (p.modes[m] for m in ("backprop", "no_grad", "retain_grad"))
    # backprop: 2 outputs + x.grad while y lives; x.grad after del.
    assert abs(bp.held_bytes - 3 * A) <= SLACK, bp.held_bytes / A
    assert bp.grads_bytes == A and abs(bp.after_del_bytes - A) <= SLACK
    assert bp.output_bytes == A and bp.functions == 2 and bp.variables == 3
    # no_grad: only the output is held, nothing after del.
    assert abs(ng.held_bytes - A) <= SLACK and ng.after_del_bytes <= SLACK
    assert ng.grads_bytes == 0 and ng.functions == 0
    # retain_grad: y.grad and the intermediate's grad on top.
    assert abs(rg.held_bytes - bp.held_bytes - 2 * A) <= SLACK
    assert ng.peak_bytes < bp.peak_bytes <= rg.peak_bytes
    s = p.savings
    assert s["no_grad"]["peak_bytes"] == bp.peak_bytes - ng.peak_bytes
    assert s["no_grad"]["held_ratio"] == pytest.approx(bp.held_bytes / ng.held_bytes)
    assert s["retain_grad_false"]["held_bytes"] == rg.held_bytes - bp.held_bytes
    text = str(p)
    assert "backprop" in text and "no_grad() saves" in text
    d = json.loads(json.dumps(p.to_dict()))
    assert d["modes"]["backprop"]["held_bytes"] == bp.held_bytes
    assert "savings" in d


def test_profile_user_function_two_inputs_full_face(user_module):
    try:
        workers.load_impl("fastgrad.dezero")
    except ImportError:
        pytest.skip("no full face")
    p = profiling.profile("fg_profiled_user:user_twice", np.full(N, 0.5),
                       np.full(N, 2.0), impl="fastgrad.dezero",
                       modes=["backprop", "no_grad"])
    assert list(p.modes) == ["backprop", "no_grad"]
    bp = p.modes["backprop"]
    assert bp.grads_bytes == 2 * A      # both leaves get a grad
    assert abs(bp.after_del_bytes - 2 * A) <= SLACK
    assert "retain_grad_false" not in p.savings


def test_profile_from_a_file_path_and_the_cli(tmp_path, capsys):
    path = tmp_path / "model_file.py"
    path.write_text(USER_MODULE)
    out = tmp_path / "p.json"
    rc = profiling.main(["profile", f"{path}:squares", "--shape", str(N),
                      "--mode", "backprop", "--mode", "no_grad", "--json", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "backprop" in printed and "no_grad" in printed
    d = json.loads(out.read_text())
    assert set(d["modes"]) == {"backprop", "no_grad"}
    assert abs(d["modes"]["backprop"]["held_bytes"] - 3 * A) <= SLACK
    assert d["input_shapes"] == [[N]]


def test_profile_errors(user_module, tmp_path):
    with pytest.raises(TypeError, match="module-level"):
        profiling.profile(lambda x: x, np.ones(3))
    with pytest.raises(ValueError, match="impl"):
        profiling.profile(user_module.squares, np.ones(3), impl="torch")
    with pytest.raises(ValueError, match="modes"):
        profiling.profile(user_module.squares, np.ones(3), modes=["fast"])
    with pytest.raises(TypeError, match="numeric"):
        profiling.profile(user_module.squares, np.array(["a"]))
    with pytest.raises(ValueError, match="module:function"):
        profiling.profile("no_colon", np.ones(3))
    with pytest.raises(TypeError, match="must return a Variable"):
        profiling.profile(user_module.not_a_variable, np.ones(3), modes=["backprop"])
    with pytest.raises(ValueError, match="bad input shape"):
        profiling.profile(user_module.fails, np.ones(3), modes=["no_grad"])
    with pytest.raises(ImportError):
        profiling.profile("fg_no_such_module:f", np.ones(3), modes=["no_grad"])


def test_profile_cli_rejects_bad_shape(capsys):
    with pytest.raises(SystemExit) as exc:
        profiling.main(["profile", "m:f", "--shape", "10,a"])
    assert exc.value.code == 2
    assert "bad shape" in capsys.readouterr().err
