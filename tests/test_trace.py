"""fastgrad.trace: replays agree with eager runs; every guard falls back."""
import gc
import math
import re
import threading
import warnings
import weakref

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastgrad as fg
import fastgrad._core as core
from fastgrad._trace import _TracedCall
import fastgrad.functions as FN
import fastgrad.dezero as dz
import fastgrad.dezero.functions as F
from fastgrad import TraceMismatchError, TraceWarning, Variable, trace
from fastgrad._optable import OPS, REQUIRED

FACES = [pytest.param(fg, id="stage2"), pytest.param(dz, id="full")]
# Without the compiled scalar path every plan replays through the engine.
C_LOOPS = not fg.PURE


def one_node(y):
    """Is ``y`` the result of a C replay (when those exist)?"""
    return isinstance(y.creator, _TracedCall) == C_LOOPS


def goldstein(x, y):
    return ((1 + (x + y + 1) ** 2 * (19 - 14 * x + 3 * x ** 2 - 14 * y + 6 * x * y + 3 * y ** 2))
            * (30 + (2 * x - 3 * y) ** 2 * (18 - 32 * x + 12 * x ** 2 + 48 * y - 36 * x * y
                                            + 27 * y ** 2)))


def smooth(x, y):
    return FN.exp(FN.sin(x) * y) / (1 + FN.tanh(y) ** 2) + FN.log(x * x + 1) - FN.sqrt(y * y + 2)


def bits(a):
    """dtype, shape and bytes, every NaN made the same one (the sign and
    payload of a NaN depend on how the C compiler ordered an operation)."""
    a = np.asarray(a.data if isinstance(a, Variable) or hasattr(a, "creator") else a)
    if a.dtype.kind == "f":
        a = np.where(np.isnan(a), np.array(np.nan, a.dtype), a)
    return a.dtype, a.shape, a.tobytes()


def grad_array(v):
    g = v.grad
    return None if g is None else np.asarray(getattr(g, "data", g))


def run(fn, face, values, seed_grads=None):
    """Call fn on fresh Variables, backprop, return (outputs, grads)."""
    xs = [face.Variable(np.array(v)) for v in values]
    if seed_grads is not None:
        for x, g in zip(xs, seed_grads):
            x.grad = np.array(g)
    y = fn(*xs)
    y.backward()
    return bits(y), [bits(grad_array(x)) for x in xs]


def replayed(traced, *args):
    """Call twice: the first records, the second replays."""
    traced(*args)
    return traced(*args)


@pytest.mark.parametrize("face", FACES)
@pytest.mark.parametrize("fn", [goldstein, smooth], ids=["goldstein", "smooth"])
def test_scalar_replay_is_bit_identical_to_eager(face, fn):
    t = trace(fn)
    for i in range(5):
        values = (0.3 + 0.37 * i, -0.8 + 0.41 * i)
        got = run(t, face, values)
        assert got == run(fn, face, values)
    assert "1 plan" in repr(t)
    y = t(face.Variable(np.array(0.5)), face.Variable(np.array(0.25)))
    assert one_node(y)
    assert isinstance(y, face.Variable)


@pytest.mark.parametrize("face", FACES)
def test_grads_accumulate_like_eager(face):
    t = trace(goldstein)
    t(face.Variable(np.array(0.1)), face.Variable(np.array(0.2)))
    for fn in (goldstein, t):
        x, y = face.Variable(np.array(0.4)), face.Variable(np.array(-0.3))
        outs = []
        for _ in range(3):                     # no cleargrad: grads add up
            z = fn(x, y)
            z.backward()
            outs.append((bits(grad_array(x)), bits(grad_array(y))))
        if fn is goldstein:
            expected = outs
    assert outs == expected


def test_rosenbrock_loop_matches_eager():
    def rosen(x0, x1):
        return 100 * (x1 - x0 ** 2) ** 2 + (x0 - 1) ** 2

    def descend(fn):
        x0, x1 = Variable(np.array(0.0)), Variable(np.array(2.0))
        for _ in range(2000):
            y = fn(x0, x1)
            x0.cleargrad()
            x1.cleargrad()
            y.backward()
            x0.data -= 0.001 * x0.grad
            x1.data -= 0.001 * x1.grad
        return x0.data.tobytes(), x1.data.tobytes()

    assert descend(trace(rosen)) == descend(rosen)


def test_chain_of_thousand_steps():
    def chain(y):
        for _ in range(1000):
            y = y * 1.0001 + 0.5
        return y

    t = trace(chain)
    assert replayed(t, Variable(np.array(0.5))) is not None
    assert run(t, fg, (0.25,)) == run(chain, fg, (0.25,))
    assert "2000 ops" in repr(t)


def test_no_grad_replays_forward_only():
    t = trace(goldstein)
    x, y = Variable(np.array(0.5)), Variable(np.array(0.25))
    with fg.no_grad():
        a = replayed(t, x, y)
    assert a.creator is None
    assert bits(a) == bits(goldstein(x, y))
    b = replayed(t, x, y)                   # its own signature, with a graph
    assert one_node(b) and b.creator is not None
    assert "2 plans" in repr(t)


def test_retain_grad_and_repeated_backward():
    def f(x):
        return FN.sin(x) * x
    t = trace(f)
    t(Variable(np.array(1.0)))
    for fn in (f, t):
        x = Variable(np.array(0.7))
        y = fn(x)
        y.backward(retain_grad=True)
        assert y.grad is not None
        first = bits(x.grad)
        y.backward()                        # again: the grad adds up
        if fn is f:
            expected = (first, bits(x.grad))
    assert (first, bits(x.grad)) == expected


@pytest.mark.parametrize("container", [tuple, list])
def test_several_outputs_and_inputs_passed_through(container):
    def f(x, y):
        a = x * y
        b = FN.exp(a) + y
        return container([b, a, x, a])
    t = trace(f)
    t(Variable(np.array(0.3)), Variable(np.array(0.6)))
    res = {}
    for fn in (f, t):
        x, y = Variable(np.array(0.2)), Variable(np.array(-0.5))
        out = fn(x, y)
        assert type(out) is container and out[2] is x and out[1] is out[3]
        b, a = out[0], out[1]
        (b + 2 * a).backward()
        res[fn] = [bits(v) for v in out[:2]] + [bits(x.grad), bits(y.grad)]
    assert res[t] == res[f]


def test_the_same_variable_twice_and_python_constants():
    def f(x, y, c):
        return x * y + c
    t = trace(f)
    x = Variable(np.array(3.0))
    assert t(x, x, 1.0).data == 10.0
    y = t(x, x, 1.0)
    y.backward()
    assert x.grad == 6.0                    # both operands are x
    assert t(x, Variable(np.array(2.0)), 1.0).data == 7.0
    assert t(x, x, 2.0).data == 11.0        # a new constant: a new plan
    assert t(x, x, -0.0).data == 9.0
    assert "4 plans" in repr(t)


def test_keyword_arguments_and_containers():
    def f(xs, scale=1.0):
        return (xs[0] * xs[1]) * scale
    t = trace(f)
    a, b = Variable(np.array(2.0)), Variable(np.array(5.0))
    assert t([a, b], scale=2.0).data == 20.0
    assert t([a, b], scale=2.0).data == 20.0
    assert t([b, b], scale=3.0).data == 75.0
    assert t([a, b]).data == 10.0


def test_mutated_inputs_are_read_at_every_call():
    t = trace(lambda x: x * x + 1)
    x = Variable(np.array(2.0))
    t(x)
    x.data[...] = 3.0                       # in place
    assert t(x).data == 10.0
    x.data = np.array(4.0)                  # rebound
    assert t(x).data == 17.0


def test_a_plan_does_not_keep_the_first_inputs_alive():
    t = trace(goldstein)
    x, y = Variable(np.array(0.5)), Variable(np.array(1.5))
    arrays = [weakref.ref(x.data), weakref.ref(y.data)]
    out = t(x, y)
    out.backward()
    del x, y, out
    gc.collect()
    assert all(r() is None for r in arrays)
    t(Variable(np.array(0.5)), Variable(np.array(1.5)))   # the plan still works


def test_captured_variables_get_their_gradients():
    w = Variable(np.array(3.0))

    def f(x):
        return w * x + w ** 2
    t = trace(f)
    t(Variable(np.array(1.0)))
    w.cleargrad()
    x = Variable(np.array(2.0))
    t(x).backward()
    assert (x.grad, w.grad) == (3.0, 2.0 + 6.0)
    w.data = np.array(4.0)                  # read at every call
    assert t(Variable(np.array(2.0))).data == 24.0


def test_arrays_replay_through_the_engine():
    def f(x, y):
        return FN.tanh(x * y + 1.5) ** 2 - FN.exp(-x) / 3
    t = trace(f)
    rng = np.random.default_rng(0)
    for dtype in (np.float64, np.float32):
        for shape_x, shape_y in [((5,), (5,)), ((3, 4), (4,)), ((2, 3), ())]:
            xv = rng.normal(size=shape_x).astype(dtype)
            yv = rng.normal(size=shape_y).astype(dtype)
            res = {}
            for fn in (f, t, t):
                x, y = Variable(xv.copy()), Variable(yv.copy())
                z = fn(x, y)
                z.backward()
                res.setdefault(fn, []).append((bits(z), bits(x.grad), bits(y.grad)))
            assert res[t][0] == res[t][1] == res[f][0]


def test_ndarray_arguments_are_inputs():
    t = trace(lambda x, a: x * a + a)
    x = Variable(np.array([1.0, 2.0]))
    t(x, np.array([3.0, 4.0]))
    y = t(x, np.array([5.0, 6.0]))
    np.testing.assert_array_equal(y.data, [10.0, 18.0])
    y.backward()
    np.testing.assert_array_equal(x.grad, [5.0, 6.0])


def test_traced_call_is_one_node_among_others():
    t = trace(smooth)
    t(Variable(np.array(0.1)), Variable(np.array(0.1)))
    res = {}
    for fn in (smooth, t):
        x, y = Variable(np.array(0.7)), Variable(np.array(0.4))
        u = fn(x, y)
        v = fn(u, x * y)
        w = v * u + FN.sin(x) * u
        w.backward()
        res[fn] = (bits(w), bits(x.grad), bits(y.grad))
    assert res[t] == res[smooth]


def test_traced_call_inside_a_million_op_chain():
    t = trace(smooth)
    t(Variable(np.array(0.3)), Variable(np.array(0.2)))

    def grad_through_chain(fn):
        x = Variable(np.array(0.3))
        y = x
        for i in range(500_000):
            y = y * 1.0
        y = fn(y, x)
        for i in range(500_000):
            y = y * 1.0
        y.backward()
        return x.grad
    # The traced call is one node: x's contributions from inside it arrive
    # together, not interleaved with the chain's, so only rounding may differ.
    np.testing.assert_allclose(grad_through_chain(t), grad_through_chain(smooth),
                               rtol=1e-13)


def test_threads_share_a_plan():
    t = trace(goldstein)
    t(Variable(np.array(0.0)), Variable(np.array(0.0)))
    inputs = [(0.1 * i, -0.05 * i) for i in range(40)]
    serial = [run(t, fg, v) for v in inputs]
    results = [None] * 8
    errors = []

    def work(k):
        try:
            results[k] = [run(t, fg, v) for v in inputs for _ in range(5)][::5]
        except Exception as e:              # pragma: no cover - reported below
            errors.append(e)
    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert all(r == serial for r in results)
    assert "1 plan" in repr(t)


def test_create_graph_through_a_replay_falls_back():
    def f(x):
        return x ** 3 + dz.functions.sin(x)
    t = trace(f)
    t(dz.Variable(np.array(1.0)))
    x = dz.Variable(np.array(1.2))
    y = t(x)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y.backward(create_graph=True)
    assert [str(w.message) for w in caught if w.category is TraceWarning] == (
        ["fastgrad.trace(f): a backward(create_graph=True) went through a replay; "
         "this call signature runs eagerly from now on"] if C_LOOPS else [])
    gx = x.grad
    x.cleargrad()
    gx.backward()
    x2 = dz.Variable(np.array(1.2))
    y2 = f(x2)
    y2.backward(create_graph=True)
    g2 = x2.grad
    x2.cleargrad()
    g2.backward()
    assert bits(gx) == bits(g2) and bits(x.grad) == bits(x2.grad)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = t(dz.Variable(np.array(1.0)))   # eager from now on, silently
    assert not isinstance(y.creator, _TracedCall)


class Square(fg.Function):
    def forward(self, x):
        return x ** 2

    def backward(self, gy):
        return 2 * self.inputs[0].data * gy


GUARDS = {
    "reads .data of an intermediate": lambda x: x * float((x + 1).data),
    "reads .data of an input": lambda x: x * 2 if x.data > 0 else x * 3,
    "reads .grad": lambda x: x * (0 if x.grad is None else 1),
    "formats": lambda x: (print(x + 1), x * 2)[1],
    "uses the .data of a Variable from outside": lambda x: x * _OUTSIDE.data,
    "reads .grad of a Variable from outside": lambda x: x * (_OUTSIDE.grad is None),
    "assigns .data of a Variable from outside": lambda x: (_assign(_OUTSIDE), x * 2)[1],
    "calls backward() on a Variable that does not depend": lambda x: (
        Variable(np.array(1.0)).backward(), x * 2)[1],
    "enable_backprop": lambda x: x * 2 + _no_grad(lambda: x * 3),
    "returns a float": lambda x: 1.0,
    "does not depend on its inputs": lambda x: Variable(np.array(1.0)) * 2,
}


_OUTSIDE = Variable(np.array(3.0))


def _assign(v):
    v.data = v.data


def _no_grad(fn):
    with fg.no_grad():
        return fn()


@pytest.mark.parametrize("reason", list(GUARDS))
def test_guards_fall_back_with_one_warning(reason, capsys):
    fn = GUARDS[reason]
    t = trace(fn)
    x = Variable(np.array(2.0))
    with pytest.warns(TraceWarning, match=re.escape(reason.split(",")[0])) as rec:
        first = t(x)
    assert len(rec) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x.cleargrad()
        later = t(x)
    assert repr(t).endswith("(eager)>")
    if isinstance(first, Variable):
        assert bits(later) == bits(first)
        assert not isinstance(later.creator, _TracedCall)


def test_operations_on_constants_are_allowed():
    def f(x):
        c = Variable(np.array(2.0))
        k = FN.exp(c) * 3                   # constants only: a constant
        print(c)                            # a Variable the function made
        return x * k + float(c.data)
    t = trace(f)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        replayed(t, Variable(np.array(1.0)))
        y = t(Variable(np.array(2.0)))
    assert y.data == 2.0 * math.exp(2.0) * 3 + 2.0
    assert one_node(y)


def test_check_catches_a_baked_global():
    scale = [2.0]
    t = trace(lambda x: x * scale[0], check=2)
    x = Variable(np.array(1.0))
    t(x)
    scale[0] = 3.0
    t(x)                                    # replay 1: not checked
    with pytest.raises(TraceMismatchError, match="baked"):
        t(x)
    t.retrace()
    assert t(x).data == 3.0
    assert repr(t) == "<traced <lambda>: 1 plan (1 ops)>"


def test_arguments_and_errors():
    with pytest.raises(TypeError, match="callable"):
        trace(3)
    with pytest.raises(ValueError, match="positive"):
        trace(goldstein, check=0)
    with pytest.raises(TypeError, match="positive"):
        trace(goldstein, check=1.5)

    @trace(check=5)
    def f(x):
        """Doc."""
        return x + 1
    assert f.__name__ == "f" and f.__doc__ == "Doc." and f.__wrapped__ is not None
    with pytest.raises(TypeError, match="unsupported input"):
        trace(lambda x: x + object())(Variable(np.array(1.0)))
    with pytest.warns(TraceWarning, match="hashable"):
        assert trace(lambda x, d: x + 1)(Variable(np.array(1.0)), {"a": {1}}).data == 2.0
    if C_LOOPS:
        with pytest.raises(TypeError, match="traced call"):
            y = replayed(trace(lambda x: x + 1), Variable(np.array(1.0)))
            y.creator.backward(np.array(1.0))


def test_methods_and_nested_traces():
    inner = trace(lambda x: FN.sin(x) * 2)

    class Model:
        def __init__(self):
            self.w = Variable(np.array(0.5))

        @trace
        def loss(self, x):
            return inner(x) * self.w

    m = Model()
    x = Variable(np.array(1.0))
    m.loss(x)
    y = m.loss(x)
    y.backward()
    assert y.data == math.sin(1.0) * 2 * 0.5
    assert m.w.grad == math.sin(1.0) * 2
    assert x.grad == math.cos(1.0) * 2 * 0.5


def test_dot_graph_draws_one_box():
    from fastgrad.dezero.utils import get_dot_graph
    t = trace(goldstein)
    x, y = dz.Variable(np.array(0.5)), dz.Variable(np.array(0.5))
    z = replayed(t, x, y)
    dot = get_dot_graph(z)
    if C_LOOPS:
        assert "trace(goldstein): 38 ops" in dot
        assert dot.count("shape=box") == 1
    else:
        assert dot.count("shape=box") == 38


# ------------------------------------------------------ random programs

UNARY_DOMAIN = {"log": (0.2, 3.0), "sqrt": (0.2, 3.0), "tan": (-1.2, 1.2)}
PARAMS = {"pow": [{"c": c} for c in (2, 3, 0.5, -1, 1.5, 2.0)],
          "clip": [{"x_min": -0.5, "x_max": 0.7}],
          "leaky_relu": [{}, {"slope": 0.1}]}


@st.composite
def table_programs(draw):
    nleaves = draw(st.integers(1, 3))
    shape = draw(st.sampled_from([(), (), (3,), (2, 3)]))   # 0-d: the C loops
    dtype = draw(st.sampled_from([np.float64, np.float64, np.float32])) if shape else np.float64
    leaves = [np.asarray(np.full(shape, draw(st.floats(-1.5, 1.5)))
                         + np.linspace(0, 0.5, int(np.prod(shape))).reshape(shape), dtype)
              for _ in range(nleaves)]
    steps = []
    for _ in range(draw(st.integers(1, 12))):
        op = draw(st.sampled_from(OPS))
        params = draw(st.sampled_from(PARAMS.get(op.name, [{}])))
        args = []
        for _ in op.inputs:
            if draw(st.booleans()) or not args:
                args.append(("v", draw(st.integers(0, nleaves + len(steps) - 1))))
            else:
                args.append(("c", draw(st.sampled_from([0.5, 2, -1.25, 3.0]))))
        if draw(st.booleans()):
            args.reverse()
        steps.append((op.name, params, args))
    return leaves, steps


def run_program(steps, xs):
    vals = list(xs)
    with np.errstate(all="ignore"):
        for name, params, args in steps:
            fn = getattr(core, name)
            vals.append(fn(*[vals[i] if k == "v" else i for k, i in args], **params))
    total = vals[-1]
    for v in vals[len(xs):-1]:
        total = total + v * 0.25
    return total


@settings(max_examples=150, deadline=None)
@given(table_programs())
def test_random_table_programs(prog):
    leaves, steps = prog
    if all(k == "c" for _, _, args in steps for k, _ in args):
        return

    def fn(*xs):
        return run_program(steps, xs)
    t = trace(fn)
    with np.errstate(all="ignore"):
        t(*[Variable(v.copy()) for v in leaves])
        res = []
        for f in (fn, t):
            xs = [Variable(v.copy()) for v in leaves]
            y = f(*xs)
            y.backward()
            res.append([bits(y)] + [bits(grad_array(x)) if x.grad is not None else None
                                    for x in xs])
    assert res[0] == res[1]


# ------------------------------------------------------ fused array plans

def squared_affine_sum(x, y, z):
    return F.sum((x * y + z) ** 2)


def smooth_arrays(x, y):
    return FN.tanh(FN.sin(x) * y + 0.5) - FN.exp(-x) / 3 + FN.sigmoid(y) * FN.sqrt(x * x + 1)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("fn,nargs", [(squared_affine_sum, 3), (smooth_arrays, 2),
                                      (lambda x, y: x * x + x / (y * y + 1) - x, 2)],
                         ids=["sum", "smooth", "reuse"])
def test_fused_array_replay_is_bit_identical(fn, nargs, dtype):
    rng = np.random.default_rng(7)
    t = trace(fn)
    vals = [rng.uniform(0.5, 1.5, size=(3, 1000)).astype(dtype) for _ in range(nargs)]
    t(*[Variable(v.copy()) for v in vals])
    res = {}
    for f in (fn, t):
        xs = [Variable(v.copy()) for v in vals]
        y = f(*xs)
        if f is t:
            assert one_node(y) and (not C_LOOPS or y.creator.op_count >= 3)
        y.backward()
        res[f] = [bits(y)] + [bits(x.grad) for x in xs]
    assert res[t] == res[fn]


def test_fused_plan_falls_back_where_it_cannot_fuse():
    t = trace(squared_affine_sum)
    rng = np.random.default_rng(8)
    vals = [rng.normal(size=(4, 6)) for _ in range(3)]
    t(*[Variable(v) for v in vals])
    cases = {
        "strided": [v[:, ::2].copy(order="F") for v in vals],
        "transposed": [np.ascontiguousarray(v.T).T for v in vals],
    }
    for name, arrays in cases.items():
        res = []
        for f in (squared_affine_sum, t):
            xs = [Variable(a) for a in arrays]
            y = f(*xs)
            y.backward()
            res.append([bits(y)] + [bits(x.grad) for x in xs])
        assert res[0] == res[1], name
    # a grad already there: accumulated contribution by contribution, as eager
    res = []
    for f in (squared_affine_sum, t):
        xs = [Variable(v.copy()) for v in vals]
        for _ in range(2):
            f(*xs).backward()
        res.append([bits(x.grad) for x in xs])
    assert res[0] == res[1]


def test_fused_plan_with_array_argument_and_create_graph():
    def f(x, a):
        return F.sum(FN.sin(x) * a + x * x)
    t = trace(f)
    x0, a = np.linspace(0.1, 2.0, 50), np.linspace(1.0, 3.0, 50)
    t(dz.Variable(x0.copy()), a)
    x = dz.Variable(x0.copy())
    y = t(x, a.copy())
    y.backward()
    x2 = dz.Variable(x0.copy())
    f(x2, a.copy()).backward()
    assert bits(x.grad) == bits(x2.grad)
    x = dz.Variable(x0.copy())
    y = t(x, a)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TraceWarning)
        y.backward(create_graph=True)
    gx = x.grad
    x.cleargrad()
    F.sum(gx).backward()                    # d/dx sum(a cos x + 2x) = -a sin x + 2
    np.testing.assert_allclose(x.grad.data, -a * np.sin(x0) + 2, rtol=1e-12)


def _row_call(op):
    """A function applying table row ``op`` to arrays, constants fixed."""
    fn = getattr(FN, op.name)
    params = {"pow": (2,), "clip": (-0.5, 0.5), "leaky_relu": (0.3,)}.get(op.name, ())
    return lambda *xs: fn(*xs, *params)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("op", OPS, ids=lambda o: o.name)
def test_every_table_row_replays_fused_with_eager_bits(op, dtype):
    rng = np.random.default_rng(11)
    vals = []
    for _ in range(op.arity):
        v = rng.normal(size=(5, 40)).astype(dtype)
        v.flat[:9] = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0, 0.5, -0.5]
        vals.append(v)
    if op.arity == 2:
        vals[1].flat[9:14] = vals[0].flat[9:14]         # ties
    fn = _row_call(op)
    t = trace(fn)
    with np.errstate(all="ignore"):
        t(*[Variable(v.copy()) for v in vals])
        res = {}
        for f in (fn, t):
            xs = [Variable(v.copy()) for v in vals]
            y = f(*xs)
            if f is t:
                assert one_node(y)      # the fused replay, not the engine's
            y.backward()
            res[f] = [bits(y)] + [bits(grad_array(x)) for x in xs]
    assert res[t] == res[fn]
