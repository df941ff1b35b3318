"""The elementwise evaluator (fastgrad/_eval.pyx) against NumPy, and its threads.

Every formula of the op table is compiled the way the build compiles it and
run on the evaluator directly: float32/float64, shapes around the block size
and above the thread cut-over, 0-d operands, read-only inputs, special
values, and ``out`` that aliases an input.  What the evaluator does not take
(strided, byte-swapped, mixed or other dtypes, shapes that broadcast)
returns None, never garbage.  Thread counts never change a bit.
"""
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import fastgrad
from fastgrad import _codegen, _formulas
from fastgrad._optable import OPS

from conftest import op_params

_eval = pytest.importorskip("fastgrad._eval")
if fastgrad.PURE:
    pytestmark = pytest.mark.skip("FASTGRAD_PURE: the compiled evaluator is not used")

PARAMS = {op.name: op_params(op) for op in OPS}
SIZES = [0, 1, 7, 511, 512, 513, 4099, 70_001]
SPECIALS = [np.nan, np.inf, -np.inf, -0.0, 0.0]


def values(size, dtype, seed, positive=False):
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(size) + 0.1
    if positive:
        v = np.abs(v) + 0.05
    if size >= 20:
        v[rng.choice(size, len(SPECIALS), replace=False)] = SPECIALS
    return v.astype(dtype)


def compiled(texts, candidates, params=()):
    """(Program, its input names) for ``texts``, as the build compiles them."""
    ins = _formulas.inputs_of(texts, candidates)
    nin, nregs, outs, code, exprs = _formulas.compile_program(texts, ins, list(params))
    return _eval.Program(nin, nregs, outs, code, exprs), ins


def numpy_of(op, text, extra=()):
    names = {i: i for i in list(op.inputs) + list(extra)}
    names.update({p[0]: p[0] for p in op.params})
    code = _codegen.Renderer("numpy", names).render(text)
    args = ", ".join(list(extra) + list(op.inputs) + [p[0] for p in op.params])
    return eval(f"lambda {args}: {code}", {"_np": np})


def param_values(prog, op):
    env = dict(PARAMS.get(op.name, {}))
    return tuple(eval(e, {}, env) for e in prog.param_exprs)


def same_bits(got, want, ulp=0):
    assert type(got) is np.ndarray and got.dtype == want.dtype and got.shape == want.shape
    if ulp:
        nan = np.isnan(want)
        np.testing.assert_array_equal(np.isnan(got), nan)
        np.testing.assert_array_max_ulp(got[~nan], want[~nan], ulp)
    else:
        # NaN payloads aside (the sign of a NaN from two NaNs is not IEEE's to fix)
        g, w = got.copy(), want.copy()
        g[np.isnan(g)] = np.nan
        w[np.isnan(w)] = np.nan
        assert g.tobytes() == w.tobytes()


def ulp_of(op):
    return 4 if op.name == "pow" else 0


# ---------------------------------------------------------------------------
# every formula of the table
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op", OPS, ids=lambda o: o.name)
def test_forward_and_backward_programs_match_numpy(op, dtype, size):
    positive = op.domain[0] > 0
    xs = [values(size, dtype, seed=k, positive=positive) for k in range(op.arity)]
    gy = values(size, dtype, seed=9)
    params = PARAMS.get(op.name, {})
    with np.errstate(all="ignore"):
        prog, ins = compiled([op.forward], op.inputs, [p[0] for p in op.params])
        y = prog(*[dict(zip(op.inputs, xs))[n] for n in ins], params=param_values(prog, op))
        want_y = np.asarray(numpy_of(op, op.forward)(*xs, *params.values()))
        same_bits(y, want_y, ulp_of(op))
        env = dict(zip(op.inputs, xs), gy=gy, y=want_y)
        grads = [g for g in op.grads if g.strip() != "gy"]
        if not grads:
            return
        prog, ins = compiled(grads, ["gy", "y"] + list(op.inputs), [p[0] for p in op.params])
        got = prog(*[env[n] for n in ins], params=param_values(prog, op))
        got = got if isinstance(got, tuple) else (got,)
        for g, text in zip(got, grads):
            want = np.asarray(numpy_of(op, text, ("gy", "y"))(gy, want_y, *xs,
                                                              *params.values()))
            same_bits(g, want.astype(dtype), ulp_of(op))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scalar", [0, 1])
@pytest.mark.parametrize("name", ["add", "sub", "mul", "div", "maximum", "minimum"])
def test_zero_d_operands_broadcast(name, scalar, dtype):
    op = {o.name: o for o in OPS}[name]
    prog, ins = compiled([op.forward], op.inputs)
    xs = [values(1025, dtype, seed=1), values(1025, dtype, seed=2, positive=True)]
    xs[scalar] = np.asarray(xs[scalar][3], dtype=dtype)       # 0-d
    with np.errstate(all="ignore"):
        same_bits(prog(*xs), np.asarray(numpy_of(op, op.forward)(*xs)))
        zero_d = prog(xs[scalar], xs[scalar])                 # both 0-d: a 0-d result
    assert zero_d.shape == ()


def test_inputs_are_not_written_and_read_only_inputs_work():
    prog, _ = compiled(["gy * (1 - y * y)"], ["gy", "y"])
    gy, y = values(3000, np.float64, 1), values(3000, np.float64, 2)
    gy.flags.writeable = y.flags.writeable = False
    before = gy.tobytes(), y.tobytes()
    with np.errstate(all="ignore"):
        same_bits(prog(gy, y), gy * (1 - y * y))
    assert (gy.tobytes(), y.tobytes()) == before


@pytest.mark.parametrize("make", [
    lambda a: a[::2],                                  # strided
    lambda a: a.astype(">f8"),                         # byte-swapped
    lambda a: a.astype(np.float16),                    # a dtype it has no loops for
    lambda a: np.nan_to_num(a, posinf=0, neginf=0).astype(np.int64),
    lambda a: a.reshape(2, -1).T,                      # Fortran order
    lambda a: np.lib.stride_tricks.as_strided(a, (4, 8), (0, 8)),   # broadcast view
])
def test_what_it_does_not_take_goes_back_to_numpy(make):
    prog, _ = compiled(["x0 * x1"], ["x0", "x1"])
    a = values(32, np.float64, 3)
    odd = make(a)
    assert prog(odd, np.ones(odd.shape)) is None
    assert prog(a, a.astype(np.float32)) is None          # mixed dtypes
    assert prog(a, np.ones(31)) is None                   # shapes that differ
    assert prog(a.reshape(4, 8), np.ones((4, 1))) is None  # real broadcasting


def test_out_receives_the_first_output_even_when_it_is_an_input():
    prog, ins = compiled(["gy * x1", "gy * x0"], ["gy", "x0", "x1"])
    gy, x0, x1 = (values(5000, np.float64, k) for k in range(3))
    want = gy * x1, gy * x0
    buf = gy.copy()
    g0, g1 = prog(buf, x0, x1, out=buf)        # the first grad into gy's own buffer
    assert g0 is buf
    same_bits(g0, want[0])
    same_bits(g1, want[1])                     # read gy before it was overwritten
    # A partial overlap or a read-only / wrong-shaped out is never written.
    big = np.concatenate([gy, gy])
    g0, _ = prog(big[:5000], x0, x1, out=big[1:5001])
    assert not np.shares_memory(g0, big)
    ro = np.zeros(5000)
    ro.flags.writeable = False
    assert prog(gy, x0, x1, out=ro)[0] is not ro
    assert prog(gy, x0, x1, out=np.zeros(4999))[0].shape == (5000,)


def test_programs_are_validated():
    P, OP = _eval.Program, _formulas.OP
    with pytest.raises(ValueError, match="registers"):
        P(1, 65, (1,), ((OP["NEG"], 1, 0, 0, 0, 0, 0.0),))
    with pytest.raises(ValueError, match="out of range"):
        P(1, 2, (1,), ((OP["NEG"], 1, 5, 0, 0, 0, 0.0),))
    with pytest.raises(ValueError, match="input register"):
        P(1, 2, (1,), ((OP["NEG"], 0, 0, 0, 0, 0, 0.0),))
    with pytest.raises(ValueError, match="opcode"):
        P(1, 2, (1,), ((999, 1, 0, 0, 0, 0, 0.0),))
    with pytest.raises(ValueError, match="ufunc"):
        P(1, 2, (1,), ((OP["UFUNC1"], 1, 0, 0, 0, 99, 0.0),))
    with pytest.raises(ValueError, match="parameter"):
        P(1, 2, (1,), ((OP["POW"], 1, 0, 0, 0, 0, 0.0),))
    with pytest.raises(ValueError, match="output"):
        P(1, 2, (0,), ((OP["NEG"], 1, 0, 0, 0, 0, 0.0),))
    prog = P(1, 2, (1,), ((OP["NEG"], 1, 0, 0, 0, 0, 0.0),))
    with pytest.raises(ValueError, match="takes 1 arrays"):
        prog(np.ones(3), np.ones(3))


# ---------------------------------------------------------------------------
# threads
# ---------------------------------------------------------------------------
@pytest.fixture
def threads_everywhere():
    """The pool from 1 element up, restored afterwards."""
    old_n, old_min = fastgrad.get_num_threads(), _eval._set_par_min(1)
    yield
    fastgrad.set_num_threads(old_n)
    _eval._set_par_min(old_min)


@pytest.mark.parametrize("size", [1, 511, 513, 8192 * 3 + 17, 200_001])
@pytest.mark.parametrize("op", OPS, ids=lambda o: o.name)
def test_thread_counts_give_the_same_bits(op, size, threads_everywhere):
    positive = op.domain[0] > 0
    xs = [values(size, np.float64, seed=k, positive=positive) for k in range(op.arity)]
    gy = values(size, np.float64, seed=9)
    results = []
    for n in (1, 2, 3, 5):
        fastgrad.set_num_threads(n)
        vs = [fastgrad.Variable(x.copy()) for x in xs]
        with np.errstate(all="ignore"):
            y = getattr(fastgrad._core, op.name)(*vs, **PARAMS.get(op.name, {}))
            y.grad = gy.copy()
            y.backward()
        results.append([y.data.tobytes()] + [v.grad.tobytes() for v in vs])
    assert all(r == results[0] for r in results[1:])


def test_eight_python_threads_at_once(threads_everywhere):
    # Many submitters, one pool: a job submitted while another runs is
    # computed on its own thread; nobody deadlocks, every result is right.
    fastgrad.set_num_threads(2)
    x = values(300_000, np.float64, 1)
    want = 1 - np.tanh(x) * np.tanh(x)
    errors = []

    def work():
        try:
            for _ in range(20):
                v = fastgrad.Variable(x)
                y = fastgrad._core.tanh(v)
                y.backward()
                with np.errstate(all="ignore"):
                    if not np.allclose(v.grad, want, equal_nan=True):
                        errors.append("wrong grad")
        except Exception as exc:          # pragma: no cover - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "deadlock"
    assert errors == []


LAZY_AND_FORK = r"""
import multiprocessing as mp, os, sys
import numpy as np
import fastgrad
from fastgrad import _threads

assert _threads._pool_threads() == 0, "threads started at import"
x = fastgrad.Variable(np.linspace(0.1, 2.0, 1_000_000))
want = (x.data * x.data + x.data)


def child(q):
    # The child has no pool threads; its first large job starts its own.
    y = x * x + x
    q.put((bool(np.array_equal(y.data, want)), _threads._pool_threads()))


if __name__ == "__main__":
    fastgrad.set_num_threads(2)
    y = x * x + x
    assert np.array_equal(y.data, want)
    started = _threads._pool_threads()
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=child, args=(q,))
    p.start()
    ok, child_threads = q.get(timeout=60)
    p.join(60)
    print(started, ok, child_threads, p.exitcode)
"""


def test_threads_start_lazily_and_survive_fork(tmp_path):
    if "fork" not in __import__("multiprocessing").get_all_start_methods():
        pytest.skip("no fork start method here")
    script = tmp_path / "fork_check.py"
    script.write_text(LAZY_AND_FORK)
    env = dict(os.environ)
    env.pop("FASTGRAD_NUM_THREADS", None)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env=env, timeout=120, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    started, ok, child_threads, exitcode = proc.stdout.split()
    assert int(started) >= 1 and ok == "True" and int(child_threads) >= 1 and exitcode == "0"


def test_num_threads_setting_and_environment():
    with pytest.raises(TypeError):
        fastgrad.set_num_threads(2.0)
    with pytest.raises(ValueError):
        fastgrad.set_num_threads(0)
    with pytest.raises(ValueError):
        fastgrad.set_num_threads(65)
    code = "import fastgrad; print(fastgrad.get_num_threads())"
    outs = {}
    for setting in (None, "1", "3", "zero"):
        env = dict(os.environ)
        env.pop("FASTGRAD_NUM_THREADS", None)
        if setting is not None:
            env["FASTGRAD_NUM_THREADS"] = setting
        proc = subprocess.run([sys.executable, "-W", "always", "-c", code],
                              capture_output=True, text=True, env=env, timeout=60)
        assert proc.returncode == 0, proc.stderr
        outs[setting] = (int(proc.stdout), proc.stderr)
    assert outs[None][0] == len(os.sched_getaffinity(0))
    assert outs["1"][0] == 1 and outs["3"][0] == 3
    assert outs["zero"][0] == len(os.sched_getaffinity(0))
    assert "FASTGRAD_NUM_THREADS" in outs["zero"][1]


# ---------------------------------------------------------------------------
# results on hot blocks
# ---------------------------------------------------------------------------
def test_large_results_reuse_blocks_and_are_correct():
    x = fastgrad.Variable(values(300_000, np.float64, 4))
    a = (x * x).data
    ptr = a.ctypes.data
    del a
    b = (x + x).data                 # the freed block, reused: must hold new values
    assert np.array_equal(b, x.data + x.data, equal_nan=True)
    assert b.flags.writeable and b.flags.c_contiguous
    assert b.ctypes.data == ptr


@pytest.mark.parametrize("c", [-0.5, 0.5 - 2, 2.5, 1.5])
def test_half_integer_power_of_a_temporary_keeps_numpys_special_cases(c):
    # The power's input is a temporary whose register the result reuses;
    # x <= 0, -inf and nan still get NumPy's special cases.
    x = np.array([0.0, -0.0, 0.25, -0.5, 2.0, np.inf, -np.inf, np.nan] * 80)
    prog, ins = compiled(["pow(-x, c)"], ["x"], ["c"])
    got = prog(x, params=(c,))
    with np.errstate(all="ignore"):
        want = (-x) ** c
    same_bits(got, want, ulp=4)


@pytest.mark.parametrize("size", [1, 513, 70_001])
@pytest.mark.parametrize("op", [o for o in OPS if _codegen._dezero_sensitive(o)],
                         ids=lambda o: o.name)
def test_typed_programs_follow_dezeros_promotion_on_float32(op, size):
    # DeZero's formula on float32 arrays, strong numbers promoting to
    # float64 part-way: the typed program gives the NumPy rendering's dtype
    # and bits (fastgrad._numpy_ops' *_backward_dz).
    from fastgrad import _numpy_ops
    positive = op.domain[0] > 0
    xs = [values(size, np.float32, seed=k, positive=positive) for k in range(op.arity)]
    gy = values(size, np.float32, seed=9)
    params = PARAMS.get(op.name, {})
    with np.errstate(all="ignore"):
        y = np.asarray(numpy_of(op, op.forward)(*xs, *params.values()))
        grads = _codegen._dezero_grads(op)
        ins = _formulas.inputs_of(grads, ["gy", "y"] + list(op.inputs))
        nin, nregs, outs, code, exprs, types = _formulas.compile_typed(
            grads, ins, [_formulas.F32] * len(ins), [p[0] for p in op.params], strong=True)
        prog = _eval.Program(nin, nregs, outs, code, exprs, types)
        env = dict(zip(op.inputs, xs), gy=gy, y=y)
        got = prog(*[env[n] for n in ins], params=param_values(prog, op))
        got = got if isinstance(got, tuple) else (got,)
        want = getattr(_numpy_ops, op.name + "_backward_dz")(
            gy, y, *xs, *params.values(), (1 << op.arity) - 1)
    for g, w in zip(got, want):
        w = np.asarray(w)
        assert g.dtype == w.dtype
        same_bits(g, w)


def test_typed_programs_check_their_dtypes():
    nin, nregs, outs, code, exprs, types = _formulas.compile_typed(
        ["gy * (1 - y * y)"], ["gy", "y"], [_formulas.F32, _formulas.F32], strong=True)
    prog = _eval.Program(nin, nregs, outs, code, exprs, types)
    a = np.ones(10, np.float32)
    assert prog(a, a).dtype == np.float64
    assert prog(a.astype(np.float64), a) is None          # not its signature
    with pytest.raises(ValueError, match="typed"):
        _eval.Program(nin, nregs, outs, tuple(c[:7] for c in code), exprs, types)
