"""Every op of the op table, tested the moment it is declared.

The grids come from ``fastgrad._optable.OPS``: gradients against central
finite differences (both faces, float32/float64, several layouts), the C
scalar path against the NumPy rendering of the same row, bit for bit, and
second derivatives (``create_graph=True``) against finite differences of
the first.
"""
import subprocess
import sys

import numpy as np
import pytest

import fastgrad
import fastgrad.dezero as dz
from fastgrad import _codegen, _core
from fastgrad._optable import BY_NAME as OPS_BY_NAME, OPS, REQUIRED

from conftest import layout, numerical_grad

# Parameters to call each op with, and where its inputs live (away from
# kinks and poles, so finite differences are meaningful).
PARAMS = {"pow": {"c": 3}, "leaky_relu": {"slope": 0.3}, "clip": {"x_min": -0.5, "x_max": 0.8}}
POSITIVE = {"log", "sqrt", "pow"}


def sample(op, shape, dtype, rng, which=0):
    if op.name in POSITIVE:
        a = rng.uniform(0.5, 2.0, size=shape)
    elif op.name == "tan":
        a = rng.uniform(-1.2, 1.2, size=shape)
    else:
        a = rng.uniform(-1.5, 1.5, size=shape)
        a = np.where(np.abs(a) < 0.15, 0.4, a)             # away from 0 (abs, relu)
        if op.name == "clip":
            a = np.where(np.abs(a + 0.5) < 0.1, -0.9, a)
            a = np.where(np.abs(a - 0.8) < 0.1, 1.2, a)
        if op.name in ("maximum", "minimum") and which == 1:
            a = a + 0.31                                    # no ties with input 0
    return np.asarray(a, dtype=dtype)


def call(op, *xs, face=None):
    fn = getattr(_core, op.name) if face is None else _core.FULL_FACE_FUNCTIONS[op.name]
    return fn(*xs, **PARAMS.get(op.name, {}))


def numpy_forward(op):
    """The row's forward rendered for NumPy, as an independent callable."""
    names = {i: i for i in op.inputs}
    names.update({p[0]: p[0] for p in op.params})
    code = _codegen.Renderer("numpy", names).render(op.forward)
    args = ", ".join(list(op.inputs) + [p[0] for p in op.params])
    return eval(f"lambda {args}: {code}", {"_np": np})


def numpy_grads(op):
    names = {i: i for i in op.inputs}
    names.update({p[0]: p[0] for p in op.params})
    names.update(y="y", gy="gy")
    r = _codegen.Renderer("numpy", names)
    args = ", ".join(["gy", "y"] + list(op.inputs) + [p[0] for p in op.params])
    return [eval(f"lambda {args}: {r.render(g)}", {"_np": np}) for g in op.grads]



SHAPES = [(), (5,), (2, 3), (2, 1, 3)]
BROADCAST = [((3,), ()), ((2, 3), (3,)), ((2, 1), (1, 3))]


# Rows whose derivative DeZero writes with a number meeting an array
# (1 - y * y, 2 * y, c * x ** (c - 1)): as_array makes it a strong float64/
# int64, so the full face's default rules give float32 data float64 grads.
DEZERO_PROMOTES = {"tan", "tanh", "sqrt", "sigmoid", "pow"}


@pytest.mark.parametrize("face", ["stage2", "full", "full-keep"])
@pytest.mark.parametrize("kind", ["contiguous", "strided", "transposed", "readonly"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("op", OPS, ids=lambda o: o.name)
def test_grad_matches_finite_differences(op, shape, dtype, kind, face):
    rng = np.random.default_rng(1)
    arrays = [layout(sample(op, shape, dtype, rng, k), kind) for k in range(op.arity)]
    V = fastgrad.Variable if face == "stage2" else dz.Variable
    xs = [V(a) for a in arrays]
    with dz.using_config("keep_dtype", face == "full-keep"):
        y = call(op, *xs)
        assert type(y) is V
        assert y.shape == shape and y.dtype == dtype
        ref = numpy_forward(op)
        params = list(PARAMS.get(op.name, {}).values())
        np.testing.assert_allclose(y.data, ref(*[a.astype(np.float64) for a in arrays], *params),
                                   rtol=1e-6 if dtype == np.float32 else 1e-13, atol=1e-7)
        y.backward()
    rtol, atol = (3e-2, 3e-2) if dtype == np.float32 else (1e-6, 1e-8)
    grad_dtype = dtype
    if face == "full" and op.name in DEZERO_PROMOTES:
        grad_dtype = np.float64
    for k, (x, a) in enumerate(zip(xs, arrays)):
        g = x.grad if face == "stage2" else x.grad.data
        assert type(g) is np.ndarray and g.shape == shape and g.dtype == grad_dtype
        others = [b.astype(np.float64) for b in arrays]

        def f(v, k=k):
            args = list(others)
            args[k] = v
            return ref(*args, *params)
        np.testing.assert_allclose(g, numerical_grad(f, a), rtol=rtol, atol=atol,
                                   err_msg=f"{op.name} input {k}")


@pytest.mark.parametrize("shapes", BROADCAST, ids=str)
@pytest.mark.parametrize("op", [o for o in OPS if o.arity == 2], ids=lambda o: o.name)
def test_broadcast_grads_are_summed_to_each_input(op, shapes):
    rng = np.random.default_rng(2)
    arrays = [sample(op, s, np.float64, rng, k) for k, s in enumerate(shapes)]
    xs = [fastgrad.Variable(a) for a in arrays]
    y = call(op, *xs)
    assert y.shape == np.broadcast_shapes(*shapes)
    y.backward()
    ref = numpy_forward(op)
    for k, (x, a) in enumerate(zip(xs, arrays)):
        def f(v, k=k):
            args = list(arrays)
            args[k] = v
            return ref(*args)
        assert x.grad.shape == a.shape
        np.testing.assert_allclose(x.grad, numerical_grad(f, a), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("op", [o for o in OPS if o.scalar], ids=lambda o: o.name)
def test_scalar_path_is_bit_identical_to_numpy(op):
    """0-d float64 values go through C; NumPy on the same row gives the same bits."""
    rng = np.random.default_rng(3)
    ref, grads = numpy_forward(op), numpy_grads(op)
    params = list(PARAMS.get(op.name, {}).values())
    for _ in range(200):
        vals = [float(sample(op, (), np.float64, rng, k)) for k in range(op.arity)]
        xs = [fastgrad.Variable(np.array(v)) for v in vals]
        y = call(op, *xs)
        with np.errstate(all="ignore"):
            expect = np.asarray(ref(*[np.array(v) for v in vals], *params))
        assert y.data.tobytes() == expect.tobytes(), (op.name, vals)
        gy = np.array(1.0)
        y.backward()
        for k, x in enumerate(xs):
            g = np.asarray(grads[k](gy, expect, *[np.array(v) for v in vals], *params),
                           dtype=np.float64)
            assert x.grad.tobytes() == g.tobytes(), (op.name, k, vals)


@pytest.mark.parametrize("op", [o for o in OPS if o.arity == 1], ids=lambda o: o.name)
def test_second_derivative_matches_finite_differences(op):
    rng = np.random.default_rng(4)
    a = sample(op, (4,), np.float64, rng)
    x = dz.Variable(a)
    y = call(op, x)
    y.backward(create_graph=True)
    gx = x.grad
    assert gx.creator is not None or op.name in ("relu", "leaky_relu", "clip", "abs", "neg")
    x.cleargrad()
    gx.backward()
    second = np.zeros_like(a) if x.grad is None else x.grad.data

    def first(v):
        xv = dz.Variable(v)
        call(op, xv).backward()
        return xv.grad.data
    np.testing.assert_allclose(second, numerical_grad(first, a), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("op", [o for o in OPS if o.arity == 2], ids=lambda o: o.name)
def test_mixed_second_derivatives(op):
    rng = np.random.default_rng(5)
    a, b = sample(op, (3,), np.float64, rng, 0), sample(op, (3,), np.float64, rng, 1)
    x0, x1 = dz.Variable(a), dz.Variable(b)
    y = call(op, x0, x1)
    y.backward(create_graph=True)
    g0 = x0.grad
    x0.cleargrad()
    x1.cleargrad()
    g0.backward()                  # d/dx1 of sum(dy/dx0)
    got = np.zeros_like(b) if x1.grad is None else x1.grad.data

    def d0(v):
        u0, u1 = dz.Variable(a), dz.Variable(v)
        call(op, u0, u1).backward()
        return u0.grad.data
    np.testing.assert_allclose(got, numerical_grad(d0, b), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("op", [o for o in OPS if o.params], ids=lambda o: o.name)
def test_a_variable_parameter_is_a_type_error(op):
    x = fastgrad.Variable(np.array(1.0))
    params = dict(PARAMS[op.name])
    name = next(iter(params))
    params[name] = fastgrad.Variable(np.array(2.0))
    with pytest.raises(TypeError, match="constant"):
        getattr(_core, op.name)(x, **params)


@pytest.mark.parametrize("op", OPS, ids=lambda o: o.name)
def test_class_and_function_come_from_the_row(op):
    cls = getattr(_core, op.class_name)
    assert issubclass(cls, fastgrad.Function)
    assert op.forward in cls.__doc__
    required = [p[0] for p in op.params if p[1] is REQUIRED]
    f = cls(*[PARAMS[op.name][p] for p in required])
    y = f(*[fastgrad.Variable(np.array(0.7 + k)) for k in range(op.arity)])
    assert y.creator is f


def test_integer_inputs_follow_numpy():
    x = fastgrad.Variable(np.array([1, 2, 3]))
    y = _core.exp(x)
    assert y.dtype == np.exp(np.array([1, 2, 3])).dtype
    y.backward()
    np.testing.assert_allclose(x.grad, np.exp([1, 2, 3]))


def test_stubs_match_the_table():
    with open(_core.__file__.rsplit("/", 1)[0] + "/_core.pyi") as fh:
        stub = fh.read()
    generated = subprocess.run([sys.executable, "-m", "fastgrad._codegen", "--stubs"],
                               capture_output=True, text=True, check=True).stdout
    assert generated in stub, "regenerate the stubs: python -m fastgrad._codegen --stubs"


def _check_evaluator_against_numpy(op, dtype, size, params, ulp=0):
    rng = np.random.default_rng(6)
    arrays = [sample(op, (size,), dtype, rng, k) for k in range(op.arity)]
    xs = [fastgrad.Variable(a) for a in arrays]
    y = getattr(_core, op.name)(*xs, **params)
    values = list(params.values())
    with np.errstate(all="ignore"):
        expect = np.asarray(numpy_forward(op)(*arrays, *values))
    assert y.dtype == expect.dtype == dtype

    def same(got, want):
        if ulp == 0:
            assert got.tobytes() == want.tobytes()
        else:
            np.testing.assert_array_max_ulp(got, want, ulp)

    same(y.data, expect)
    gy = rng.uniform(-1, 1, size).astype(dtype)
    y.grad = gy.copy()
    y.backward()
    for k, x in enumerate(xs):
        with np.errstate(all="ignore"):
            g = np.asarray(numpy_grads(op)[k](gy, expect, *arrays, *values)).astype(dtype)
        same(x.grad, g)
    assert np.array_equal(gy, y.grad if y.grad is not None else gy)


@pytest.mark.parametrize("size", [0, 1, 511, 512, 513, 5000, 70_001])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op", [o for o in OPS if o.name != "pow"], ids=lambda o: o.name)
def test_evaluator_is_bit_identical_to_numpy(op, dtype, size):
    """Every row's forward and backward run as one program each (threaded
    above a size): the same bits as NumPy's formulas."""
    _check_evaluator_against_numpy(op, dtype, size, PARAMS.get(op.name, {}))


@pytest.mark.parametrize("size", [1, 513, 70_001])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("c", [2, 1, 0, 2.0])
def test_pow_exact_exponents_are_numpys(c, dtype, size):
    # NumPy's own special cases (square, sqrt, reciprocal, copy, 0) are
    # exact, for x ** c and for the derivative's x ** (c - 1).
    _check_evaluator_against_numpy(OPS_BY_NAME["pow"], dtype, size, {"c": c})


@pytest.mark.parametrize("size", [513, 70_001])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("c", [3, 4, -2, -3, 2.5, 1.5, 0.5, -0.5, -1, 3.5, 0.3, 7])
def test_pow_plans_are_within_4_ulp(c, dtype, size):
    # Small integer and half-integer exponents are computed by
    # multiplication (and one square root): within 4 ulp of NumPy's power.
    _check_evaluator_against_numpy(OPS_BY_NAME["pow"], dtype, size, {"c": c}, ulp=4)


@pytest.mark.parametrize("op", OPS, ids=lambda o: o.name)
def test_evaluator_falls_back_for_other_layouts(op):
    rng = np.random.default_rng(7)
    a = sample(op, (40,), np.float64, rng)
    for arr in (a[::2], a.astype(">f8"), a.astype(np.float16)):
        xs = [fastgrad.Variable(arr) for _ in range(op.arity)]
        y = call(op, *xs)
        with np.errstate(all="ignore"):
            np.testing.assert_allclose(y.data, numpy_forward(op)(*[arr] * op.arity,
                                       *PARAMS.get(op.name, {}).values()), rtol=1e-3)
        y.backward()
        assert xs[0].grad.shape == arr.shape


def test_graph_variable_before_the_full_face_is_registered_does_not_crash():
    # Without fastgrad.dezero, results fall back to the stage-2 face.
    code = ("import numpy as np, fastgrad._core as C\n"
            "class V(C._GraphVariable):\n    pass\n"
            "x = V(np.array(2.0)); y = C.add(C.mul(x, x), C.exp(x)); y.backward()\n"
            "print(type(y).__name__, float(x.grad.data))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    name, g = out.stdout.split()
    assert name == "Variable" and abs(float(g) - (4 + np.exp(2.0))) < 1e-12


def test_constants_fold_only_into_arithmetic_ops():
    from fastgrad._formulas import OP, fold_constants
    CONST, ADD, SUB, UFUNC2 = OP["CONST"], OP["ADD"], OP["SUB"], OP["UFUNC2"]
    # 2.0 - x: the constant folds into a reversed subtraction.
    folded = fold_constants(((CONST, 1, 0, 0, 0, 0, 2.0), (SUB, 2, 1, 0, 0, 0, 0.0)), {2})
    assert folded == [(OP["RSUBC"], 2, 0, 0, 0, 0, 2.0)]
    # A constant read by a ufunc (maximum), or as both operands, stays a register.
    kept = ((CONST, 1, 0, 0, 0, 0, 0.0), (UFUNC2, 2, 0, 1, 0, 6, 0.0))
    assert tuple(fold_constants(kept, {2})) == kept
    both = ((CONST, 1, 0, 0, 0, 0, 3.0), (ADD, 2, 1, 1, 0, 0, 0.0))
    assert tuple(fold_constants(both, {2})) == both


def test_sign_of_negative_zero_is_numpys_on_the_scalar_path():
    import fastgrad
    import fastgrad.functions as FN
    x = fastgrad.Variable(np.array(-0.0))
    FN.abs(x).backward()
    want = np.asarray(1.0) * np.sign(np.array(-0.0))
    assert x.grad.tobytes() == want.tobytes()
