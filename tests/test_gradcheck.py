"""Gradients of the operators against central finite differences.

The ops are the op table's rows that Python's operators reach (``+ - * /
**``, unary ``-``) and their swapped-operand functions (``rsub``, ``rdiv``);
the grid: 0-d, 1-d and 2-d data, broadcast pairs, float32 and float64, and
strided / transposed / read-only layouts.  The oracle evaluates the same
expression in float64 with plain NumPy, so it is independent of the engine.
(``tests/test_optable.py`` tests every row through its function.)
"""
import operator

import numpy as np
import pytest

import fastgrad as dezero
from fastgrad import Variable
from fastgrad._optable import OPS as TABLE
from conftest import layout, numerical_grad_wrt as numeric_grad

# The table's rows that Python's operators reach (Variable.__add__ is the
# row "add", ...).  The oracle applies the same operator to float64 ndarrays:
# NumPy, independent of the engine.
OPERATORS = {"add": operator.add, "sub": operator.sub, "mul": operator.mul,
             "div": operator.truediv, "neg": operator.neg, "pow": operator.pow}
EXPONENTS = (2, 3, -1, 0.5, 2.5, -1.5)     # small integers, halves, negatives


def _operator_cases():
    """name -> (function of Variables, NumPy oracle, arity), from the table."""
    cases = {}
    for op in TABLE:
        f = OPERATORS.get(op.name)
        if f is None:
            continue
        if op.name == "pow":        # a constant exponent, not an operand
            for c in EXPONENTS:
                g = (lambda a, c=c, f=f: f(a, c))
                cases[f"pow{c}"] = (g, g, 1)
            continue
        cases[op.name] = (f, f, op.arity)
        if op.reverse:              # the swapped-operand function (rsub, rdiv)
            cases[op.reverse] = (getattr(dezero, op.reverse),
                                 (lambda a, b, f=f: f(b, a)), op.arity)
    return cases


CASES = _operator_cases()
OPS = {name: (fn, arity) for name, (fn, _, arity) in CASES.items()}
NUMPY = {name: oracle for name, (_, oracle, _) in CASES.items()}


def test_every_operator_is_a_row_of_the_table():
    assert set(OPERATORS) <= {op.name for op in TABLE}
    assert {"rsub", "rdiv"} <= set(OPS)


SHAPES_UNARY = [(), (5,), (3, 4)]
SHAPES_BINARY = [((), ()), ((4,), (4,)), ((3, 4), (3, 4)), ((3, 4), ()), ((), (4,)),
                 ((3, 1), (1, 4)), ((2, 3, 4), (4,)), ((3, 4), (3, 1))]


def sample(shape, dtype, rng, positive):
    a = rng.uniform(0.5, 2.0, size=shape) if positive else rng.uniform(-2, 2, size=shape)
    if not positive:
        a = np.where(np.abs(a) < 0.2, 0.7, a)  # keep divisions well conditioned
    return np.asarray(a, dtype=dtype)


def check(name, arrays, dtype):
    fn, _ = OPS[name]
    variables = [Variable(a) for a in arrays]
    y = fn(*variables)
    assert y.shape == np.broadcast_shapes(*[a.shape for a in arrays])
    assert y.dtype == dtype
    np.testing.assert_allclose(y.data, NUMPY[name](*[a.astype(np.float64) for a in arrays]),
                               rtol=1e-5 if dtype == np.float32 else 1e-12)
    y.backward()
    rtol, atol = (2e-2, 2e-2) if dtype == np.float32 else (1e-5, 1e-7)
    for i, (v, a) in enumerate(zip(variables, arrays)):
        assert type(v.grad) is np.ndarray
        assert v.grad.shape == a.shape and v.grad.dtype == dtype
        expected = numeric_grad(NUMPY[name], arrays, i)
        np.testing.assert_allclose(v.grad, expected, rtol=rtol, atol=atol, err_msg=f"{name} input {i}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES_UNARY, ids=str)
@pytest.mark.parametrize("name", [n for n, (_, k) in OPS.items() if k == 1])
@pytest.mark.parametrize("kind", ["contiguous", "strided", "transposed", "readonly"])
def test_unary(name, shape, dtype, kind):
    rng = np.random.default_rng(0)
    a = layout(sample(shape, dtype, rng, positive=name.startswith("pow")), kind)
    check(name, [a], dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shapes", SHAPES_BINARY, ids=str)
@pytest.mark.parametrize("name", [n for n, (_, k) in OPS.items() if k == 2])
@pytest.mark.parametrize("kind", ["contiguous", "strided", "transposed", "readonly"])
def test_binary(name, shapes, dtype, kind):
    rng = np.random.default_rng(1)
    arrays = [layout(sample(s, dtype, rng, positive=False), kind) for s in shapes]
    check(name, arrays, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_composite_expression(dtype):
    rng = np.random.default_rng(2)
    xs = [sample((3,), dtype, rng, positive=True) for _ in range(2)]

    def goldstein(x, y):
        return ((1 + (x + y + 1) ** 2 * (19 - 14 * x + 3 * x ** 2 - 14 * y + 6 * x * y + 3 * y ** 2))
                * (30 + (2 * x - 3 * y) ** 2 * (18 - 32 * x + 12 * x ** 2 + 48 * y - 36 * x * y
                                                 + 27 * y ** 2)))

    vs = [Variable(a) for a in xs]
    z = goldstein(*vs)
    z.backward()
    for i, v in enumerate(vs):
        expected = numeric_grad(goldstein, xs, i, eps=1e-7)
        np.testing.assert_allclose(v.grad, expected, rtol=1e-3 if dtype == np.float32 else 1e-6)


def agree(a, b, name):
    """Bitwise for arithmetic; pow within the kernels' documented 4 ulp."""
    if name.startswith("pow"):
        np.testing.assert_array_max_ulp(a.reshape(-1), b.reshape(-1), maxulp=4)
    else:
        assert a.tobytes() == b.tobytes(), name


def test_scalar_path_matches_array_path():
    # 0-d float64 goes through the C scalar path; 1-element arrays through
    # the kernels.
    rng = np.random.default_rng(3)
    for name, (fn, k) in OPS.items():
        for _ in range(20):
            vals = [sample((), np.float64, rng, positive=name.startswith("pow")) for _ in range(k)]
            s = [Variable(v) for v in vals]
            a = [Variable(v.reshape(1)) for v in vals]
            ys, ya = fn(*s), fn(*a)
            agree(ys.data, ya.data, name)
            ys.backward()
            ya.backward()
            for vs, va in zip(s, a):
                agree(vs.grad, va.grad, name)


def test_special_values_scalar_path():
    for v in [0.0, -0.0, np.inf, -np.inf, np.nan]:
        for name, (fn, k) in OPS.items():
            s = [Variable(np.array(v)) for _ in range(k)]
            a = [Variable(np.array([v])) for _ in range(k)]
            with np.errstate(all="ignore"):
                ys, ya = fn(*s), fn(*a)
                np.testing.assert_array_equal(ys.data.reshape(1), ya.data, err_msg=name)
                ys.backward()
                ya.backward()
            for vs, va in zip(s, a):
                np.testing.assert_array_equal(vs.grad.reshape(1), va.grad, err_msg=name)
