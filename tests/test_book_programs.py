"""The book's programs (steps 23-43), run on fastgrad and on DeZero 0.0.13.

Each program is written once, as the book writes it, against a namespace
``m`` holding ``Variable``, ``Function`` and ``F`` of one implementation, and
returns the numbers the book prints.  Every test runs the program on fastgrad
and on DeZero itself and compares the numbers: float64 and bit for bit,
except where fastgrad's kernels are documented to round differently (``x **
c`` on arrays for c other than 2, within 4 ulp).

Faces:

* ``full``: ``fastgrad.dezero`` (grads are Variables, ``create_graph``)
  against ``dezero`` (its full core, ``dezero.core``);
* ``stage2``: ``import fastgrad as dezero`` (grads are ndarrays) against
  ``dezero.core_simple``; for the tensor steps, whose functions DeZero has only
  on its full core, the stage-2 face with ``fastgrad.functions`` is compared
  with DeZero's full core.
"""
import gc
import math
import os
import re
import subprocess
import sys
import textwrap
import tracemalloc
import types
import weakref

import numpy as np
import pytest

import fastgrad
from conftest import import_dezero, numerical_grad

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fastgrad.__file__)))

# fastgrad's kernels are within 4 ulp of NumPy for x ** c on arrays; a
# program that iterates carries that along, so "close" means a few ulp.
ULP_RTOL = 1e-13


# =============================================================================
# The implementations, as namespaces
# =============================================================================
def _grad_array(g):
    # A grad is an ndarray on a stage-2 face (DeZero's stage 2 can give a
    # NumPy scalar) and a Variable on a full face.
    if g is None or isinstance(g, (np.ndarray, np.generic)):
        return g
    return g.data


def fastgrad_full():
    import fastgrad.dezero as dezero
    import fastgrad.dezero.functions as F
    import fastgrad.dezero.utils as utils
    return types.SimpleNamespace(
        name="fastgrad.dezero", dezero=dezero, Variable=dezero.Variable,
        Function=dezero.Function, F=F, utils=utils, grad=_grad_array,
        full=True, using_config=dezero.using_config)


def dezero_full():
    dezero = import_dezero("dezero")
    F = import_dezero("dezero.functions")
    utils = import_dezero("dezero.utils")
    return types.SimpleNamespace(
        name="dezero", dezero=dezero, Variable=dezero.Variable,
        Function=dezero.Function, F=F, utils=utils, grad=_grad_array,
        full=True, using_config=dezero.using_config)


def fastgrad_stage2():
    import fastgrad as dezero
    import fastgrad.functions as F
    return types.SimpleNamespace(
        name="fastgrad", dezero=dezero, Variable=dezero.Variable,
        Function=dezero.Function, F=F, grad=_grad_array, full=False,
        using_config=dezero.using_config)


def dezero_stage2():
    import_dezero("dezero")
    simple = import_dezero("dezero.core_simple")
    simple.setup_variable()
    # DeZero's stage 2 has no functions module: the elementwise functions
    # of the book's steps 27-29 are written on it here, the book's way.
    return types.SimpleNamespace(
        name="dezero.core_simple", dezero=simple, Variable=simple.Variable,
        Function=simple.Function, F=None, grad=_grad_array, full=False,
        using_config=simple.using_config)


@pytest.fixture(scope="module")
def full():
    return fastgrad_full(), dezero_full()


@pytest.fixture(scope="module")
def stage2():
    return fastgrad_stage2(), dezero_stage2()


def as_arrays(values):
    return [np.asarray(_grad_array(v), dtype=np.float64) for v in values]


def assert_same(ours, theirs, exact=True, rtol=ULP_RTOL):
    """The two runs' numbers agree: bit for bit, or within ``rtol``."""
    assert len(ours) == len(theirs)
    for i, (a, b) in enumerate(zip(as_arrays(ours), as_arrays(theirs))):
        assert a.shape == b.shape, (i, a.shape, b.shape)
        if exact:
            np.testing.assert_array_equal(a, b, err_msg=f"value {i}")
        else:
            np.testing.assert_allclose(a, b, rtol=rtol, atol=0, err_msg=f"value {i}")


def run_both(pair, program, *args, exact=True, rtol=ULP_RTOL):
    ours, theirs = (program(m, *args) for m in pair)
    assert_same(ours, theirs, exact=exact, rtol=rtol)
    return ours


# =============================================================================
# Step 24: Sphere, Matyas, Goldstein-Price
# =============================================================================
def sphere(x, y):
    z = x ** 2 + y ** 2
    return z


def matyas(x, y):
    z = 0.26 * (x ** 2 + y ** 2) - 0.48 * x * y
    return z


def goldstein(x, y):
    z = (1 + (x + y + 1) ** 2 * (19 - 14 * x + 3 * x ** 2 - 14 * y + 6 * x * y + 3 * y ** 2)) * \
        (30 + (2 * x - 3 * y) ** 2 * (18 - 32 * x + 12 * x ** 2 + 48 * y - 36 * x * y + 27 * y ** 2))
    return z


def step24(m, f):
    x = m.Variable(np.array(1.0))
    y = m.Variable(np.array(1.0))
    z = f(x, y)
    z.backward()
    return [z, x.grad, y.grad]


BOOK_STEP24 = {sphere: (2.0, 2.0), matyas: (0.040000000000000036, 0.040000000000000036),
               goldstein: (-5376.0, 8064.0)}


@pytest.mark.parametrize("face", ["full", "stage2"])
@pytest.mark.parametrize("f", [sphere, matyas, goldstein], ids=lambda f: f.__name__)
def test_step24_test_functions(request, face, f):
    pair = request.getfixturevalue(face)
    z, gx, gy = run_both(pair, step24, f)
    assert (float(_grad_array(gx)), float(_grad_array(gy))) == BOOK_STEP24[f]
    if pair[0].full:
        assert isinstance(gx, pair[0].Variable)
    else:
        assert isinstance(gx, np.ndarray)


# =============================================================================
# Step 26: the graph as DOT text
# =============================================================================
def normalise_dot(dot):
    """Ids become n0, n1, ... in order of first appearance."""
    names = {}
    return re.sub(r"\b\d{6,}\b",
                  lambda mo: names.setdefault(mo.group(0), f"n{len(names)}"), dot)


def step26_graph(m):
    x = m.Variable(np.array(1.0))
    y = m.Variable(np.array(1.0))
    z = goldstein(x, y)
    z.backward()
    x.name = "x"
    y.name = "y"
    z.name = "z"
    return m.utils.get_dot_graph(z, verbose=False), z


def test_step26_goldstein_dot_graph(full):
    ours, theirs = (step26_graph(m)[0] for m in full)
    assert normalise_dot(ours) == normalise_dot(theirs)
    # every function of the formula is a node: 3 kinds of node lines
    assert ours.count("shape=box") == theirs.count("shape=box") > 30


def test_step35_dot_graph_of_a_second_derivative(full):
    # verbose=False: DeZero labels the int constant of ``1 - y * y`` int64,
    # fastgrad keeps Python scalars weak (float64).
    def program(m):
        x = m.Variable(np.array(1.0), name="x")
        y = m.F.tanh(x)
        y.backward(create_graph=True)
        gx = x.grad
        x.cleargrad()
        gx.backward(create_graph=True)
        gx2 = x.grad
        gx2.name = "gx2"
        return m.utils.get_dot_graph(gx2, verbose=False)

    ours, theirs = (program(m) for m in full)
    assert normalise_dot(ours) == normalise_dot(theirs)


# =============================================================================
# Step 27: Taylor expansion of sin
# =============================================================================
def my_sin(x, threshold=0.0001):
    y = 0
    for i in range(100000):
        c = (-1) ** i / math.factorial(2 * i + 1)
        t = c * x ** (2 * i + 1)
        y = y + t
        if abs(t.data) < threshold:
            break
    return y


def step27(m, threshold, with_sin=True):
    x = m.Variable(np.array(np.pi / 4))
    y = my_sin(x, threshold)
    y.backward()
    out = [y, x.grad]
    if with_sin:
        x2 = m.Variable(np.array(np.pi / 4))
        y2 = m.F.sin(x2)
        y2.backward()
        out += [y2, x2.grad]
    return out


@pytest.mark.parametrize("threshold", [1e-4, 1e-150])
def test_step27_taylor_sin(full, stage2, threshold):
    y, gx, y_sin, g_sin = run_both(full, step27, threshold)
    run_both(stage2, step27, threshold, False)
    # the book: 0.7071064695751781 and 0.7071032148228457 at 1e-4
    tol = 1e-4 if threshold == 1e-4 else 1e-15
    np.testing.assert_allclose(y.data, np.sin(np.pi / 4), atol=tol)
    np.testing.assert_allclose(gx.data, np.cos(np.pi / 4), atol=tol)
    assert y_sin.data == np.sin(np.pi / 4) and g_sin.data == np.cos(np.pi / 4)
    if threshold == 1e-4:
        assert float(y.data) == 0.7071064695751781
        assert float(gx.data) == 0.7071032148228457


# =============================================================================
# Step 28: Rosenbrock by gradient descent
# =============================================================================
def rosenbrock(x0, x1):
    y = 100 * (x1 - x0 ** 2) ** 2 + (x0 - 1) ** 2
    return y


def step28(m, iters=1000, lr=0.001):
    x0 = m.Variable(np.array(0.0))
    x1 = m.Variable(np.array(2.0))
    trace = []
    for i in range(iters):
        y = rosenbrock(x0, x1)
        x0.cleargrad()
        x1.cleargrad()
        y.backward()
        x0.data -= lr * m.grad(x0.grad)
        x1.data -= lr * m.grad(x1.grad)
        if i % 100 == 0:
            trace += [y.data.copy(), x0.data.copy(), x1.data.copy()]
    return trace + [x0, x1]


@pytest.mark.parametrize("face", ["full", "stage2"])
def test_step28_rosenbrock(request, face):
    pair = request.getfixturevalue(face)
    out = run_both(pair, step28, 1000)
    # the first step from (0, 2): y = 401, grads (-2, 400)
    assert [float(v) for v in out[:3]] == [401.0, 0.002, 1.6]


def test_step28_rosenbrock_converges(stage2):
    x0, x1 = run_both(stage2, step28, 10000)[-2:]
    # 10000 steps of lr 0.001 get close to the minimum (1, 1)
    np.testing.assert_allclose([x0.data, x1.data], [0.9944984367782456, 0.9890050527419593],
                               rtol=1e-12)


# =============================================================================
# Step 29: Newton's method with a hand-written second derivative
# =============================================================================
def f_quartic(x):
    y = x ** 4 - 2 * x ** 2
    return y


def gx2_quartic(x):
    return 12 * x ** 2 - 4


def step29(m, iters=10):
    x = m.Variable(np.array(2.0))
    printed = []
    for i in range(iters):
        printed.append(x.data.copy())
        y = f_quartic(x)
        x.cleargrad()
        y.backward()
        x.data -= m.grad(x.grad) / gx2_quartic(x.data)
    return printed


# the book's printed sequence (step 29 and step 33)
NEWTON_BOOK = [2.0, 1.4545454545454546, 1.1510467893775467, 1.0253259289766978,
               1.0009084519430513, 1.0000012353089454, 1.000000000002289, 1.0, 1.0, 1.0]


@pytest.mark.parametrize("face", ["full", "stage2"])
def test_step29_newton_by_hand(request, face):
    pair = request.getfixturevalue(face)
    printed = run_both(pair, step29)
    assert [float(p) for p in printed] == NEWTON_BOOK


# =============================================================================
# Step 33: Newton's method with create_graph
# =============================================================================
def step33(m, iters=10):
    x = m.Variable(np.array(2.0))
    printed = []
    for i in range(iters):
        printed.append(x.data.copy())
        y = f_quartic(x)
        x.cleargrad()
        y.backward(create_graph=True)
        gx = x.grad
        x.cleargrad()
        gx.backward()
        gx2 = x.grad
        x.data -= gx.data / gx2.data
    return printed


def test_step33_newton_create_graph(full):
    printed = run_both(full, step33)
    assert [float(p) for p in printed] == NEWTON_BOOK


def test_step33_second_derivative_values(full):
    def program(m):
        x = m.Variable(np.array(2.0))
        y = x ** 4 - 2 * x ** 2
        y.backward(create_graph=True)
        gx = x.grad
        x.cleargrad()
        gx.backward()
        return [gx, x.grad]

    gx, gx2 = run_both(full, program)
    assert float(gx.data) == 24.0 and float(gx2.data) == 44.0


# =============================================================================
# Step 34: n-th derivatives of sin
# =============================================================================
def nth_derivatives(m, f, x_data, orders):
    x = m.Variable(x_data)
    y = f(m)(x)
    y.backward(create_graph=True)
    logs = [y.data.copy()]
    for i in range(orders):
        logs.append(x.grad.data.copy())
        gx = x.grad
        x.cleargrad()
        gx.backward(create_graph=True)
    return logs


def test_step34_sin_derivatives(full):
    x = np.linspace(-7, 7, 200)
    logs = run_both(full, nth_derivatives, lambda m: m.F.sin, x, 4)
    # y, y', y'', y''', y'''' against their closed forms
    for got, want in zip(logs, [np.sin(x), np.cos(x), -np.sin(x), -np.cos(x), np.sin(x)]):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)


def test_step34_sin_derivatives_scalar(full):
    # 0-d float64 takes fastgrad's C scalar path
    logs = run_both(full, nth_derivatives, lambda m: m.F.sin, np.array(1.0), 4)
    x = 1.0
    want = [np.sin(x), np.cos(x), -np.sin(x), -np.cos(x), np.sin(x)]
    np.testing.assert_allclose(logs, want, rtol=0, atol=1e-15)


# =============================================================================
# Step 35: higher derivatives of tanh, and the graphs they build
# =============================================================================
def count_graph(v):
    """Numbers of functions and of variables reachable backwards from ``v``."""
    funcs, variables, stack = set(), {id(v)}, [v.creator] if v.creator else []
    keep = []           # ids are only unique while the objects live
    while stack:
        f = stack.pop()
        if id(f) in funcs:
            continue
        funcs.add(id(f))
        keep.append(f)
        for x in f.inputs:
            variables.add(id(x))
            keep.append(x)
            if x.creator is not None:
                stack.append(x.creator)
    return len(funcs), len(variables)


def step35(m, orders, x_data):
    x = m.Variable(x_data)
    y = m.F.tanh(x)
    y.backward(create_graph=True)
    grads, counts = [], []
    for i in range(orders - 1):
        gx = x.grad
        grads.append(gx.data.copy())
        counts.append(count_graph(gx))
        x.cleargrad()
        gx.backward(create_graph=True)
    grads.append(x.grad.data.copy())
    counts.append(count_graph(x.grad))
    return grads, counts


def tanh_derivatives(x):
    # d/dx of a polynomial in t = tanh(x) is p'(t) (1 - t^2)
    t = np.tanh(x)
    p = np.polynomial.Polynomial([0, 1])
    out = []
    for _ in range(6):
        p = p.deriv() * np.polynomial.Polynomial([1, 0, -1])
        out.append(p(t))
    return out


def test_step35_tanh_six_derivatives(full):
    x = np.linspace(-7, 7, 200)
    (ours, our_counts), (theirs, their_counts) = (step35(m, 6, x) for m in full)
    # the same formula (gy * (1 - y * y)) either side: bit for bit
    assert_same(ours, theirs)
    for k, (got, want) in enumerate(zip(ours, tanh_derivatives(x)), 1):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10 * 4 ** k,
                                   err_msg=f"derivative {k}")
    # the graphs: same size as DeZero's (the same formula, 1 - y * y), growing
    assert our_counts == their_counts
    assert all(a < b for a, b in zip(our_counts, our_counts[1:]))
    assert our_counts[-1][0] > 100


def test_step35_tanh_scalar_and_float32(full):
    # 0-d float64 goes through the C scalar path; float32 follows DeZero's
    # dtypes (1 - y * y has a strong 1: the derivatives are float64) bit for
    # bit, and stays float32 with Config.keep_dtype
    (ours, _), (theirs, _) = (step35(m, 6, np.array(0.5)) for m in full)
    assert_same(ours, theirs)
    x32 = np.linspace(-2, 2, 9, dtype=np.float32)
    (ours32, _), (theirs32, _) = (step35(m, 3, x32) for m in full)
    assert [(g.dtype, g.tobytes()) for g in ours32] == [(g.dtype, g.tobytes()) for g in theirs32]
    assert ours32[0].dtype == np.float64
    with full[0].dezero.using_config("keep_dtype", True):
        (kept, _), = [step35(full[0], 3, x32)]
    assert all(g.dtype == np.float32 for g in kept)
    want = tanh_derivatives(np.linspace(-2, 2, 9))[:3]
    np.testing.assert_allclose(kept, want, rtol=1e-4, atol=1e-5)


# =============================================================================
# Step 36: double backprop
# =============================================================================
def step36(m):
    x = m.Variable(np.array(2.0))
    y = x ** 2
    y.backward(create_graph=True)
    gx = x.grad
    x.cleargrad()
    z = gx ** 3 + y
    z.backward()
    return [gx, x.grad]


def test_step36_double_backprop(full):
    gx, gz = run_both(full, step36)
    # z = (2x)^3 + x^2, dz/dx = 24 x^2 + 2 x = 100 at x = 2
    assert float(gx.data) == 4.0 and float(gz.data) == 100.0


def test_step36_double_backprop_arrays(full):
    def program(m):
        x = m.Variable(np.array([0.5, -1.5, 2.0]))
        y = m.F.sin(x) * x ** 2
        y.backward(create_graph=True)
        gx = x.grad
        x.cleargrad()
        z = m.F.sum(gx ** 3 + y)
        z.backward()
        return [gx, x.grad]

    # gx ** 3 on an array: fastgrad's pow kernels are documented to within
    # 4 ulp of NumPy's pow, so this one is compared to a few ulp
    gx, gz = run_both(full, program, exact=False)
    x = np.array([0.5, -1.5, 2.0])

    def z_of(x):
        g = np.cos(x) * x ** 2 + 2 * x * np.sin(x)
        return g ** 3 + np.sin(x) * x ** 2

    np.testing.assert_allclose(gz.data, numerical_grad(z_of, x), rtol=1e-7)


# =============================================================================
# Steps 37-39: tensors through sum, reshape, transpose, broadcast_to, sum_to
# =============================================================================
def step37_39(m):
    F = m.F
    out = []
    x = m.Variable(np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))
    c = m.Variable(np.array([[10.0, 20.0, 30.0], [40.0, 50.0, 60.0]]))
    y = F.sin(x) + c            # step 37: elementwise on tensors
    y.backward()
    out += [y, x.grad, c.grad]
    for v in (x, c):
        v.cleargrad()
    t = x + c
    y = F.sum(t)                # step 39
    y.backward(retain_grad=True)
    out += [y, t.grad, x.grad]

    x = m.Variable(np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))
    y = F.reshape(x, (6,))      # step 38
    y.backward(retain_grad=True)
    out += [y, y.grad, x.grad]
    x.cleargrad()
    y = x.reshape((3, 2))
    z = x.reshape(2, 3)
    (y.sum() + z.sum()).backward()
    out += [y, z, x.grad]
    x.cleargrad()
    y = F.transpose(x)
    y.backward()
    out += [y, x.grad]
    x.cleargrad()
    y = x.T
    y = x.transpose() + x.transpose(1, 0) + y
    y.backward()
    out += [y, x.grad]

    x = m.Variable(np.arange(24.0).reshape(2, 3, 4))
    y = F.transpose(x, (1, 0, 2))
    (y * m.Variable(np.arange(24.0).reshape(3, 2, 4))).backward()
    out += [y, x.grad]
    x.cleargrad()
    # DeZero 0.0.13 cannot backpropagate a tuple axis without keepdims
    # (reshape_sum_backward tests hasattr(axis, 'len')): that case is
    # compared with NumPy in test_dezero_port.py instead.
    for axis, keepdims in [(0, False), (1, True), ((0, 2), True), (None, True)]:
        y = F.sum(x, axis=axis, keepdims=keepdims)
        y.backward()
        out += [y, x.grad]
        x.cleargrad()
    y = x.sum(axis=-1)
    y.backward()
    out += [y, x.grad]

    x = m.Variable(np.array([1.0, 2.0, 3.0]))
    y = F.broadcast_to(x, (2, 3))
    y.backward()
    out += [y, x.grad]
    x = m.Variable(np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))
    y = F.sum_to(x, (1, 3))
    y.backward()
    out += [y, x.grad]
    x.cleargrad()
    y = F.sum_to(x, (2, 1))
    y.backward()
    out += [y, x.grad]
    return out


def test_steps37_39_tensor_ops(full):
    out = run_both(full, step37_39)
    shapes = [tuple(np.shape(_grad_array(v))) for v in out]
    assert shapes == [
        (2, 3), (2, 3), (2, 3), (), (2, 3), (2, 3),
        (6,), (6,), (2, 3), (3, 2), (2, 3), (2, 3), (3, 2), (2, 3), (3, 2), (2, 3),
        (3, 2, 4), (2, 3, 4),
        (3, 4), (2, 3, 4), (2, 1, 4), (2, 3, 4), (1, 3, 1), (2, 3, 4), (1, 1, 1), (2, 3, 4),
        (2, 3), (2, 3, 4),
        (2, 3), (3,), (1, 3), (2, 3), (2, 1), (2, 3)]
    assert float(out[3].data) == 231.0
    np.testing.assert_array_equal(out[29].data, [2.0, 2.0, 2.0])
    np.testing.assert_array_equal(out[30].data, [[5.0, 7.0, 9.0]])
    np.testing.assert_array_equal(out[32].data, [[6.0], [15.0]])
    np.testing.assert_array_equal(out[15].data, 3 * np.ones((2, 3)))


def test_steps37_39_stage2_face_against_dezero(full):
    # fastgrad.functions on stage-2 Variables: ndarray grads, DeZero's numbers
    ours = step37_39(fastgrad_stage2())
    theirs = step37_39(full[1])
    assert_same(ours, theirs)
    assert isinstance(ours[1], np.ndarray) and isinstance(ours[2], np.ndarray)


# =============================================================================
# Steps 40-41: broadcasting, matmul
# =============================================================================
def step40_41(m):
    F = m.F
    out = []
    x0 = m.Variable(np.array([1.0, 2.0, 3.0]))
    x1 = m.Variable(np.array([10.0]))
    y = x0 + x1                     # step 40
    y.backward()
    out += [y, x0.grad, x1.grad]
    x0 = m.Variable(np.arange(1.0, 7.0).reshape(2, 3))
    x1 = m.Variable(np.array([[2.0], [3.0]]))
    for op in (lambda a, b: a * b, lambda a, b: a - b, lambda a, b: a / b,
               lambda a, b: b / a + a):
        x0.cleargrad()
        x1.cleargrad()
        y = op(x0, x1)
        y.backward()
        out += [y, x0.grad, x1.grad]

    x = m.Variable(np.random.RandomState(0).randn(2, 3))      # step 41
    W = m.Variable(np.random.RandomState(1).randn(3, 4))
    y = F.matmul(x, W)
    y.backward()
    out += [y, x.grad, W.grad]
    x.cleargrad()
    W.cleargrad()
    y = F.sum(F.matmul(x, W) ** 2)
    y.backward()
    out += [y, x.grad, W.grad]
    return out


def test_steps40_41_broadcast_and_matmul(full):
    out = run_both(full, step40_41)
    assert [tuple(np.shape(_grad_array(v))) for v in out[:3]] == [(3,), (3,), (1,)]
    np.testing.assert_array_equal(out[2].data, [3.0])
    for i in range(4):
        y, g0, g1 = out[3 + 3 * i: 6 + 3 * i]
        assert (y.shape, g0.shape, g1.shape) == ((2, 3), (2, 3), (2, 1))
    y, gx, gW = out[15:18]
    assert (y.shape, gx.shape, gW.shape) == ((2, 4), (2, 3), (3, 4))
    W = np.random.RandomState(1).randn(3, 4)
    np.testing.assert_allclose(gx.data, np.ones((2, 4)) @ W.T, rtol=1e-15)


def test_steps40_41_stage2_face_against_dezero(full):
    ours = step40_41(fastgrad_stage2())
    assert_same(ours, step40_41(full[1]))
    assert isinstance(ours[1], np.ndarray)


def test_step41_matmul_grads_against_finite_differences(full):
    m = full[0]
    x_data = np.random.RandomState(2).randn(4, 3)
    W_data = np.random.RandomState(3).randn(3, 2)
    x, W = m.Variable(x_data), m.Variable(W_data)
    y = m.F.sum(m.F.sin(m.F.matmul(x, W)))
    y.backward()
    np.testing.assert_allclose(
        x.grad.data, numerical_grad(lambda a: np.sin(a @ W_data), x_data), rtol=1e-7)
    np.testing.assert_allclose(
        W.grad.data, numerical_grad(lambda b: np.sin(x_data @ b), W_data), rtol=1e-7)


# =============================================================================
# Step 42: linear regression
# =============================================================================
def step42(m, iters=100, lr=0.1):
    F = m.F
    np.random.seed(0)
    x = np.random.rand(100, 1)
    y = 5 + 2 * x + np.random.rand(100, 1)
    x, y = m.Variable(x), m.Variable(y)
    W = m.Variable(np.zeros((1, 1)))
    b = m.Variable(np.zeros(1))

    def predict(x):
        y = F.matmul(x, W) + b
        return y

    printed = []
    for i in range(iters):
        y_pred = predict(x)
        loss = F.mean_squared_error(y, y_pred)
        W.cleargrad()
        b.cleargrad()
        loss.backward()
        W.data -= lr * m.grad(W.grad)
        b.data -= lr * m.grad(b.grad)
        printed += [W.data.copy(), b.data.copy(), loss.data.copy()]
    return printed


@pytest.mark.parametrize("face", ["full", "stage2"])
def test_step42_linear_regression(full, face):
    ours = step42(full[0] if face == "full" else fastgrad_stage2())
    theirs = step42(full[1])
    assert_same(ours, theirs)
    W, b, loss = ours[-3:]
    # the book: W = 2.11807369, b = 5.46608905, loss = 0.07908606 after 100 steps
    np.testing.assert_allclose([W.item(), b.item(), loss.item()],
                               [2.11807369, 5.46608905, 0.07908606], atol=5e-9)


def test_step42_simple_mse_matches(full):
    # the step's hand-written loss, F.mean_squared_error's first form
    def program(m):
        np.random.seed(1)
        x0 = m.Variable(np.random.rand(10, 1))
        x1 = m.Variable(np.random.rand(10, 1))
        diff = x0 - x1
        loss = m.F.sum(diff ** 2) / len(diff)
        loss.backward()
        loss2 = m.F.mean_squared_error(x0, x1)
        g0 = x0.grad.data.copy()
        x0.cleargrad()
        loss2.backward()
        return [loss, g0, loss2, x0.grad]

    loss, g0, loss2, g02 = run_both(full, program)
    np.testing.assert_allclose(loss.data, loss2.data, rtol=1e-15)
    np.testing.assert_allclose(g0, g02.data, rtol=1e-15)


# =============================================================================
# Step 43: a two-layer network on the sine data
# =============================================================================
def step43(m, iters=1000, lr=0.2):
    F = m.F
    np.random.seed(0)
    x = np.random.rand(100, 1)
    y = np.sin(2 * np.pi * x) + np.random.rand(100, 1)

    I, H, O = 1, 10, 1
    W1 = m.Variable(0.01 * np.random.randn(I, H))
    b1 = m.Variable(np.zeros(H))
    W2 = m.Variable(0.01 * np.random.randn(H, O))
    b2 = m.Variable(np.zeros(O))

    def predict(x):
        y = F.linear(x, W1, b1)
        y = F.sigmoid(y)
        y = F.linear(y, W2, b2)
        return y

    losses = []
    for i in range(iters):
        y_pred = predict(x)
        loss = F.mean_squared_error(y, y_pred)
        W1.cleargrad()
        b1.cleargrad()
        W2.cleargrad()
        b2.cleargrad()
        loss.backward()
        W1.data -= lr * m.grad(W1.grad)
        b1.data -= lr * m.grad(b1.grad)
        W2.data -= lr * m.grad(W2.grad)
        b2.data -= lr * m.grad(b2.grad)
        if i % 100 == 0:
            losses.append(loss.data.copy())
    return losses + [W1.data, b1.data, W2.data, b2.data]


@pytest.mark.parametrize("face", ["full", "stage2"])
def test_step43_neural_network(full, face):
    ours = step43(full[0] if face == "full" else fastgrad_stage2())
    theirs = step43(full[1])
    # 1000 steps of linear, sigmoid (through tanh, as DeZero) and MSE: bit
    # for bit
    assert_same(ours, theirs)
    losses = [float(v) for v in ours[:10]]
    # the book prints 0.8473695850105871 at step 0, then the loss falls
    assert losses[0] == pytest.approx(0.8473695850105871, rel=1e-12)
    assert losses[-1] < 0.3 < losses[0]


def test_step43_linear_simple_and_sigmoid_simple(full):
    # the step's first forms, built from the elementary functions
    def program(m):
        np.random.seed(0)
        x = m.Variable(np.random.rand(5, 1))
        W = m.Variable(np.random.randn(1, 3))
        b = m.Variable(np.zeros(3))
        h = m.F.sigmoid_simple(m.F.linear_simple(x, W, b))
        loss = m.F.sum(h)
        loss.backward()
        return [h, W.grad, b.grad, x.grad]

    run_both(full, program)


# =============================================================================
# Nested backward: a Function whose backward calls backward()
# =============================================================================
def nested_backward(m, outer_create_graph):
    calls = {"square": 0, "probe": 0}

    class Square(m.Function):
        def forward(self, x):
            return x ** 2

        def backward(self, gy):
            calls["square"] += 1
            x, = self.inputs
            return 2 * x * gy

    class Probe(m.Function):
        """Identity forward; backward differentiates a side graph."""

        def __init__(self, side):
            self.side = side

        def forward(self, a):
            return a

        def backward(self, gy):
            calls["probe"] += 1
            # a gradient-penalty style inner pass over a subgraph shared
            # with the outer graph
            self.side.backward(create_graph=True)
            return gy

    x = m.Variable(np.array(3.0))
    h = Square()(x)             # shared by the outer and the side graph
    side = h * 1.5 + 1.0        # never part of the outer graph
    u = h * 2.0
    y = Probe(side)(u) + h      # Square is queued before Probe runs
    y.backward(create_graph=outer_create_graph)
    counts = dict(calls)
    return counts, [x.grad]


@pytest.mark.parametrize("outer_create_graph", [False, True])
def test_nested_backward_runs_each_function_once_per_pass(full, outer_create_graph):
    results = [nested_backward(m, outer_create_graph) for m in full]
    (ours, our_grads), (theirs, their_grads) = results
    # one Probe in the outer pass; Square once in the inner pass and once in
    # the outer pass, whatever the inner pass did to the scheduler's marks
    assert theirs == {"square": 2, "probe": 1}
    assert ours == theirs
    assert_same(our_grads, their_grads)


def gradient_penalty(m):
    calls = {"square": 0}

    class Square(m.Function):
        def forward(self, x):
            return x ** 2

        def backward(self, gy):
            calls["square"] += 1
            x, = self.inputs
            return 2 * x * gy

    x = m.Variable(np.array([0.5, -1.0, 2.0]))
    d = m.F.sum(m.F.sin(Square()(x)))   # a "critic" with a user function
    d.backward(create_graph=True)
    gx = x.grad
    x.cleargrad()
    penalty = (m.F.sum(gx ** 2) - 1.0) ** 2
    loss = d + penalty                  # shares d's graph with gx's graph
    loss.backward()
    return calls["square"], [gx, x.grad]


def test_gradient_penalty_double_backward(full):
    (n_ours, ours), (n_theirs, theirs) = (gradient_penalty(m) for m in full)
    # once for gx, once for loss (gx's graph holds Square's backward ops,
    # not Square itself)
    assert n_ours == n_theirs == 2
    assert_same(ours, theirs)
    x = np.array([0.5, -1.0, 2.0])

    def loss(x):
        g = np.cos(x ** 2) * 2 * x
        return np.sum(np.sin(x ** 2)) + (np.sum(g ** 2) - 1.0) ** 2

    np.testing.assert_allclose(ours[1].data, numerical_grad(loss, x), rtol=1e-6)


# =============================================================================
# Deep graphs and freeing them
# =============================================================================
def _run(code, timeout=600):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_create_graph_chain_of_1e5_ops_has_no_recursion_error():
    proc = _run("""
        import sys
        import numpy as np
        import fastgrad.dezero.functions as F
        from fastgrad.dezero import Variable
        sys.setrecursionlimit(1000)
        n = 100_000
        x = Variable(np.array(0.5))
        y = x
        for i in range(n // 2):
            y = F.sin(y) + 0.5 * x      # two ops a step
        y.backward(create_graph=True)
        gx = x.grad
        assert gx.creator is not None
        x.cleargrad()
        gx.backward()                   # through the 2e5-op graph of gx
        print(float(gx.data), float(x.grad.data))
        del y, gx
        x.cleargrad()
        print("done")
    """)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RecursionError" not in proc.stderr
    lines = proc.stdout.split()
    assert lines[-1] == "done"
    # the first derivative against the same recurrence by hand
    y, g, g2 = 0.5, 1.0, 0.0
    for _ in range(50_000):
        # y' = cos(y) g + 0.5, y'' = -sin(y) g^2 + cos(y) g2
        g, g2, y = np.cos(y) * g + 0.5, -np.sin(y) * g * g + np.cos(y) * g2, np.sin(y) + 0.5 * 0.5
    assert float(lines[0]) == pytest.approx(g, rel=1e-9)
    assert float(lines[1]) == pytest.approx(g2, rel=1e-9, abs=1e-12)


def build_create_graph(m, n=50):
    x = m.Variable(np.linspace(-1, 1, 1000))
    y = x
    for _ in range(n):
        y = m.F.tanh(y) * y
    y.backward(create_graph=True)
    gx = x.grad
    return x, y, gx


def test_del_of_a_create_graph_graph_frees_it(full):
    m = full[0]
    gc.collect()
    gc.disable()
    try:
        x, y, gx = build_create_graph(m)
        # a variable inside the forward graph, one inside the grad's graph
        mid = y.creator.inputs[0].creator.inputs[0]
        inner = gx.creator.inputs[0]
        refs = [weakref.ref(y), weakref.ref(mid), weakref.ref(gx), weakref.ref(inner)]
        ref_f = weakref.ref(gx.creator)
        del mid, inner
        assert all(r() is not None for r in refs)
        del y
        assert refs[0]() is None and refs[1]() is not None   # gx's graph uses y's
        x.cleargrad()
        del gx
        # reference counting alone frees it: no cycles
        assert [r() for r in refs] == [None] * 4
        assert ref_f() is None
    finally:
        gc.enable()


def test_create_graph_with_scalar_constants_makes_no_cycle(full):
    # ``y * 1.5`` makes 1.5 a leaf Variable.  DeZero gives it a grad under
    # create_graph, whose graph reaches back to the Mul that holds it: a
    # cycle only the cyclic GC frees.  fastgrad stores no grad for a
    # constant nobody holds, so the graph dies with its last reference.
    for m in full:
        gc.collect()
        gc.disable()
        try:
            x = m.Variable(np.linspace(-1, 1, 10))
            y = x
            for _ in range(3):
                y = m.F.tanh(y) * 1.5
            y.backward(create_graph=True)
            mid = weakref.ref(y.creator.inputs[0].creator.inputs[0])
            del y
            x.cleargrad()
            if m.name == "dezero":
                assert mid() is not None
                gc.collect()
            assert mid() is None, m.name
        finally:
            gc.enable()


def test_del_of_a_create_graph_graph_returns_memory(full):
    m = full[0]
    domain = np.lib.tracemalloc_domain
    filters = [tracemalloc.DomainFilter(True, domain)]

    def numpy_bytes():
        snap = tracemalloc.take_snapshot().filter_traces(filters)
        return sum(s.size for s in snap.statistics("filename"))

    gc.collect()
    gc.disable()
    tracemalloc.start()
    try:
        x = m.Variable(np.linspace(-1, 1, 100_000))     # 800 kB
        base = numpy_bytes()
        for _ in range(3):  # steady: nothing accumulates from one run to the next
            y = x
            for _ in range(20):
                y = m.F.tanh(y) * y
            y.backward(create_graph=True)
            gx = x.grad
            x.cleargrad()
            gx.backward()
            held = numpy_bytes()
            assert held > base + 20 * 800_000
            del y, gx
            x.cleargrad()
            assert numpy_bytes() == base
    finally:
        tracemalloc.stop()
        gc.enable()


# =============================================================================
# The examples print the same numbers on fastgrad and on DeZero
# =============================================================================
@pytest.mark.parametrize("script, args", [
    ("newton.py", []), ("newton.py", ["--x0", "-0.5", "--iters", "6"]),
    ("numeric_loop.py", ["--iters", "200", "--every", "50", "--n", "300", "--dim", "4"])])
def test_examples_match_dezero(script, args):
    import_dezero("dezero")     # skip when DeZero is not there
    # The checkout's examples, run against the fastgrad under test.
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "examples", script)
    # the script's own directory is sys.path[0]: point it at this fastgrad
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [ROOT] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
    runs = [subprocess.run([sys.executable, path, *args, *extra], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
            for extra in ([], ["--dezero"])]
    for proc in runs:
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "fastgrad" in runs[0].stderr and "dezero" in runs[1].stderr
    assert runs[0].stdout == runs[1].stdout
    lines = runs[0].stdout.splitlines()
    if script == "newton.py" and not args:
        assert [float(re.search(r"variable\((.*)\)", ln).group(1)) for ln in lines] == NEWTON_BOOK
    if script == "numeric_loop.py":
        losses = [float(ln.split()[2]) for ln in lines]
        assert len(losses) == 5 and losses[0] == pytest.approx(np.log(2), abs=1e-11)  # W = b = 0; 12 digits
        assert losses == sorted(losses, reverse=True)
