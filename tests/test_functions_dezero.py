"""fastgrad._array_utils against NumPy and DeZero 0.0.13's dezero.utils."""
import numpy as np
import pytest
from numpy.testing import assert_array_equal

from conftest import import_dezero
from fastgrad import _array_utils as U

RNG = np.random.default_rng(0)

SUM_TO_CASES = [
    ((2, 3), (1, 3)),
    ((2, 3), (2, 1)),
    ((2, 3), (1, 1)),
    ((2, 3), (3,)),
    ((2, 3), ()),
    ((4, 2, 3), (2, 1)),
    ((4, 2, 3), (1, 2, 3)),
    ((4, 1, 3), (1, 3)),
    ((5,), (1,)),
    ((), ()),
    ((0, 3), (1, 3)),
]


@pytest.mark.parametrize("x_shape,shape", SUM_TO_CASES)
def test_sum_to_matches_dezero_and_inverts_broadcast(x_shape, shape):
    du = import_dezero("dezero.utils")
    x = RNG.standard_normal(x_shape)
    y = U.sum_to(x, shape)
    assert y.shape == shape
    assert_array_equal(y, du.sum_to(x, shape))
    # Oracle independent of both: the adjoint of broadcasting.
    g = RNG.standard_normal(shape)
    lhs = np.sum(np.broadcast_to(g, x_shape) * x)
    np.testing.assert_allclose(lhs, np.sum(g * y), atol=1e-12)


@pytest.mark.parametrize("x_shape,shape", [((2, 3), (2,)), ((2, 3), (3, 3)),
                                           ((3,), (2, 3)), ((2, 3), (4, 1))])
def test_sum_to_incompatible_shape_raises(x_shape, shape):
    with pytest.raises(ValueError, match=r"cannot be summed to shape"):
        U.sum_to(np.zeros(x_shape), shape)


def test_sum_to_keeps_dtype():
    assert U.sum_to(np.ones((2, 3), np.float32), (3,)).dtype == np.float32


SUM_CASES = [
    ((2, 3), None, False), ((2, 3), 0, False), ((2, 3), 1, False), ((2, 3), -1, False),
    ((2, 3), 0, True), ((2, 3, 4), 1, False), ((2, 3, 4), -2, True), ((), None, False),
    ((2, 3, 4), None, True), ((5,), 0, False),
]


@pytest.mark.parametrize("x_shape,axis,keepdims", SUM_CASES)
def test_reshape_sum_backward_matches_dezero(x_shape, axis, keepdims):
    du = import_dezero("dezero.utils")
    x = RNG.standard_normal(x_shape)
    gy = np.asarray(RNG.standard_normal(np.sum(x, axis=axis, keepdims=keepdims).shape))
    got = U.reshape_sum_backward(gy, x_shape, axis, keepdims)
    assert_array_equal(got, du.reshape_sum_backward(gy, x_shape, axis, keepdims))
    assert got.shape == np.sum(x, axis=axis, keepdims=True).shape or axis is None


@pytest.mark.parametrize("axis", [(0, 2), (2, 0), (-1, 0), (1,)])
def test_reshape_sum_backward_tuple_axis(axis):
    # DeZero 0.0.13 fails on tuple axes; the result is the keepdims shape.
    x = RNG.standard_normal((2, 3, 4))
    gy = x.sum(axis=axis)
    got = U.reshape_sum_backward(gy, x.shape, axis, False)
    assert got.shape == x.sum(axis=axis, keepdims=True).shape
    assert_array_equal(got, x.sum(axis=axis, keepdims=True))


@pytest.mark.parametrize("shape,axis", [((2, 3), 1), ((2, 3), 0), ((4,), 0),
                                        ((2, 3, 4), 2), ((2, 3), (0, 1)), ((1, 5), 1)])
def test_logsumexp_matches_dezero_exactly(shape, axis):
    du = import_dezero("dezero.utils")
    x = RNG.standard_normal(shape) * 10
    got = U.logsumexp(x, axis)
    assert_array_equal(got, du.logsumexp(x.copy(), axis))
    np.testing.assert_allclose(got, np.log(np.sum(np.exp(x), axis=axis, keepdims=True)),
                               rtol=1e-12)


def test_logsumexp_large_values_and_dtypes():
    x = np.array([[1000.0, 1000.0]])
    np.testing.assert_allclose(U.logsumexp(x), [[1000.0 + np.log(2.0)]])
    x32 = np.array([[1.0, 2.0]], np.float32)
    assert U.logsumexp(x32).dtype == np.float32
    xi = np.array([[1, 2, 3]])
    r = U.logsumexp(xi)
    assert r.dtype == np.float64
    np.testing.assert_allclose(r, np.log(np.exp(xi).sum(axis=1, keepdims=True)))


def test_logsumexp_does_not_modify_input():
    x = RNG.standard_normal((3, 4))
    x0 = x.copy()
    U.logsumexp(x)
    assert_array_equal(x, x0)


@pytest.mark.parametrize("shape,axis", [((2, 3), None), ((2, 3), 0), ((2, 3), 1),
                                        ((2, 3, 4), (0, 2)), ((), None), ((5,), 0)])
def test_max_backward_shape_matches_dezero(shape, axis):
    du = import_dezero("dezero.utils")
    x = np.zeros(shape)
    assert U.max_backward_shape(x, axis) == du.max_backward_shape(x, axis)


@pytest.mark.parametrize("shape,axis", [((2, 3), -1), ((2, 3, 4), (-1, 0))])
def test_max_backward_shape_negative_axis(shape, axis):
    x = np.zeros(shape)
    assert tuple(U.max_backward_shape(x, axis)) == x.max(axis=axis, keepdims=True).shape


@pytest.mark.parametrize("axis,exc", [(2, ValueError), (-3, ValueError), (1.0, TypeError),
                                      ("0", TypeError), ((0, 0), ValueError),
                                      (True, TypeError)])
def test_normalize_axis_errors(axis, exc):
    with pytest.raises(exc, match="axis"):
        U.normalize_axis(axis, 2)


def test_as_shape():
    assert U.as_shape(3) == (3,)
    assert U.as_shape([2, np.int64(3)]) == (2, 3)
    assert U.as_shape(np.array([2, 3])) == (2, 3)
    for bad in (2.0, (2.0, 3), "ab", None):
        with pytest.raises(TypeError, match="shape"):
            U.as_shape(bad)
