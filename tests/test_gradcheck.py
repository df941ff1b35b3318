"""Gradients of every built-in op against central finite differences.

Grid: 0-d, 1-d and 2-d data, broadcast pairs, float32 and float64, and
strided / transposed / read-only layouts.  The oracle evaluates the same
expression in float64 with plain NumPy, so it is independent of the engine.
"""
import numpy as np
import pytest

import fastgrad as dezero
from fastgrad import Variable
from conftest import layout

OPS = {
    "add": (lambda a, b: a + b, 2),
    "sub": (lambda a, b: a - b, 2),
    "rsub": (lambda a, b: dezero.rsub(a, b), 2),
    "mul": (lambda a, b: a * b, 2),
    "div": (lambda a, b: a / b, 2),
    "rdiv": (lambda a, b: dezero.rdiv(a, b), 2),
    "neg": (lambda a: -a, 1),
    "pow2": (lambda a: a ** 2, 1),
    "pow3": (lambda a: a ** 3, 1),
    "pow-1": (lambda a: a ** -1, 1),
    "pow0.5": (lambda a: a ** 0.5, 1),
    "pow2.5": (lambda a: a ** 2.5, 1),
    "pow-1.5": (lambda a: a ** -1.5, 1),
}

NUMPY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "rsub": lambda a, b: b - a,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "rdiv": lambda a, b: b / a,
    "neg": lambda a: -a,
    "pow2": lambda a: a ** 2,
    "pow3": lambda a: a ** 3,
    "pow-1": lambda a: a ** -1,
    "pow0.5": lambda a: a ** 0.5,
    "pow2.5": lambda a: a ** 2.5,
    "pow-1.5": lambda a: a ** -1.5,
}

SHAPES_UNARY = [(), (5,), (3, 4)]
SHAPES_BINARY = [((), ()), ((4,), (4,)), ((3, 4), (3, 4)), ((3, 4), ()), ((), (4,)),
                 ((3, 1), (1, 4)), ((2, 3, 4), (4,)), ((3, 4), (3, 1))]


def numeric_grad(fn, arrays, i, eps=1e-6):
    """d sum(fn(*arrays)) / d arrays[i] by central differences, in float64."""
    arrays = [a.astype(np.float64) for a in arrays]
    x = arrays[i]
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        idx = it.multi_index
        orig = x[idx]
        x[idx] = orig + eps
        plus = np.sum(fn(*arrays))
        x[idx] = orig - eps
        minus = np.sum(fn(*arrays))
        x[idx] = orig
        g[idx] = (plus - minus) / (2 * eps)
    return g



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
