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


# ======================================================================
# fastgrad.functions against dezero.functions, float64, same inputs
# ======================================================================

def _fg():
    import fastgrad.dezero as fdz
    import fastgrad.functions as F
    return fdz, F


def _dz():
    dz = import_dezero("dezero")
    return dz, import_dezero("dezero.functions")


LABELS = np.array([0, 2, 1, 2])
T01 = np.array([[1.0], [0.0], [1.0], [0.0]])
IDX = (slice(None), [1, 1, 3, 0, 1])
MASK = np.array([[True, False, True, False], [False, False, True, True],
                 [True, True, True, False]])

# (name, call(M, *variables) with M = a functions module, input shapes, sampling).
# Only arguments DeZero 0.0.13 handles correctly (no tuple axis for sum, no
# negative axis for max/min/expand_dims, equal shapes for the losses).
DZ_CASES = [
    ("reshape", lambda M, x: M.reshape(x, (3, 2)), [(2, 3)], "n"),
    ("reshape_-1", lambda M, x: M.reshape(x, (4, -1)), [(2, 3, 4)], "n"),
    ("expand_dims", lambda M, x: M.expand_dims(x, 1), [(2, 3)], "n"),
    ("flatten", lambda M, x: M.flatten(x), [(2, 3, 4)], "n"),
    ("transpose", lambda M, x: M.transpose(x), [(2, 3)], "n"),
    ("transpose_axes", lambda M, x: M.transpose(x, (1, 2, 0)), [(2, 3, 4)], "n"),
    ("transpose_neg_axes", lambda M, x: M.transpose(x, (-1, 0, 1)), [(2, 3, 4)], "n"),
    ("get_item_int", lambda M, x: M.get_item(x, 1), [(3, 4)], "n"),
    ("get_item_slice", lambda M, x: M.get_item(x, (slice(None, None, -2), slice(1, 3))),
     [(3, 4)], "n"),
    ("get_item_repeat", lambda M, x: M.get_item(x, IDX), [(3, 4)], "n"),
    ("get_item_mask", lambda M, x: M.get_item(x, MASK), [(3, 4)], "n"),
    ("broadcast_to", lambda M, x: M.broadcast_to(x, (4, 2, 3)), [(1, 3)], "n"),
    ("sum_to", lambda M, x: M.sum_to(x, (2, 1)), [(4, 2, 3)], "n"),
    ("sum_to_row", lambda M, x: M.sum_to(x, (3,)), [(2, 3)], "n"),
    ("sum", lambda M, x: M.sum(x), [(2, 3, 4)], "n"),
    ("sum_axis", lambda M, x: M.sum(x, axis=1), [(2, 3, 4)], "n"),
    ("sum_neg_axis", lambda M, x: M.sum(x, axis=-1), [(2, 3, 4)], "n"),
    ("sum_keepdims", lambda M, x: M.sum(x, axis=0, keepdims=True), [(2, 3)], "n"),
    ("sum_tuple_keepdims", lambda M, x: M.sum(x, axis=(0, 2), keepdims=True), [(2, 3, 4)], "n"),
    ("max", lambda M, x: M.max(x), [(3, 4)], "n"),
    ("max_axis", lambda M, x: M.max(x, axis=1), [(3, 4)], "n"),
    ("max_tuple_keep", lambda M, x: M.max(x, axis=(0, 2), keepdims=True), [(2, 3, 4)], "n"),
    ("max_ties", lambda M, x: M.max(x, axis=1), [(3, 4)], "ties"),
    ("min_axis", lambda M, x: M.min(x, axis=0), [(3, 4)], "n"),
    ("matmul", lambda M, x, w: M.matmul(x, w), [(2, 3), (3, 4)], "n"),
    ("linear", lambda M, x, w, b: M.linear(x, w, b), [(2, 3), (3, 4), (4,)], "n"),
    ("linear_no_b", lambda M, x, w: M.linear(x, w), [(2, 3), (3, 4)], "n"),
    ("linear_simple", lambda M, x, w, b: M.linear_simple(x, w, b), [(2, 3), (3, 4), (4,)], "n"),
    ("sigmoid_simple", lambda M, x: M.sigmoid_simple(x), [(2, 3)], "n"),
    ("softmax", lambda M, x: M.softmax(x), [(4, 5)], "n"),
    ("softmax_axis0", lambda M, x: M.softmax(x, axis=0), [(4, 5)], "n"),
    ("softmax_3d", lambda M, x: M.softmax(x, axis=2), [(2, 3, 4)], "n"),
    ("softmax_simple", lambda M, x: M.softmax_simple(x), [(4, 5)], "n"),
    ("log_softmax", lambda M, x: M.log_softmax(x), [(4, 5)], "n"),
    ("log_softmax_axis0", lambda M, x: M.log_softmax(x, axis=0), [(4, 5)], "n"),
    ("mean_squared_error", lambda M, x, y: M.mean_squared_error(x, y), [(4, 3), (4, 3)], "n"),
    ("mean_squared_error_1d", lambda M, x, y: M.mean_squared_error(x, y), [(7,), (7,)], "n"),
    ("mean_squared_error_simple", lambda M, x, y: M.mean_squared_error_simple(x, y),
     [(4, 3), (4, 3)], "n"),
    ("softmax_cross_entropy", lambda M, x: M.softmax_cross_entropy(x, LABELS), [(4, 3)], "n"),
    ("softmax_cross_entropy_simple", lambda M, x: M.softmax_cross_entropy_simple(x, LABELS),
     [(4, 3)], "n"),
    ("sigmoid_cross_entropy", lambda M, x: M.sigmoid_cross_entropy(x, T01), [(4, 1)], "n"),
    ("sigmoid_cross_entropy_reshape", lambda M, x: M.sigmoid_cross_entropy(x, T01.ravel()),
     [(4, 1)], "n"),
    ("binary_cross_entropy", lambda M, p: M.binary_cross_entropy(p, T01), [(4, 1)], "p"),
]


def _inputs(shapes, sample, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for s in shapes:
        if sample == "p":
            out.append(rng.uniform(0.01, 0.99, size=s))
        elif sample == "ties":
            out.append(rng.integers(0, 3, size=s).astype(np.float64))
        else:
            out.append(rng.standard_normal(s) * 3)
    return out


def _run(M, Var, call, arrays, create_graph=False, weights=None):
    vs = [Var(a.copy()) for a in arrays]
    y = call(M, *vs)
    y.backward(create_graph=create_graph)
    grads = [v.grad for v in vs]
    if not create_graph:
        return y.data, [None if g is None else g.data for g in grads]
    for v in vs:
        v.cleargrad()
    z = None
    for g, w in zip(grads, weights):
        if g is None:
            continue
        t = M.sum(g * w)
        z = t if z is None else z + t
    z.backward()
    return y.data, [None if v.grad is None else v.grad.data for v in vs]


@pytest.mark.parametrize("name,call,shapes,sample", DZ_CASES, ids=[c[0] for c in DZ_CASES])
def test_same_as_dezero(name, call, shapes, sample):
    dz, DF = _dz()
    fdz, F = _fg()
    arrays = _inputs(shapes, sample)
    y_dz, g_dz = _run(DF, dz.Variable, call, arrays)
    y_fg, g_fg = _run(F, fdz.Variable, call, arrays)
    assert_array_equal(y_fg, y_dz)
    assert y_fg.dtype == np.asarray(y_dz).dtype and y_fg.shape == np.shape(y_dz)
    for i, (a, b) in enumerate(zip(g_fg, g_dz)):
        assert_array_equal(a, b, err_msg=f"{name}: grad of input {i}")


SECOND_ORDER = ["get_item_repeat", "get_item_mask", "sum_axis", "max_axis", "matmul", "linear",
                "sigmoid_simple", "softmax", "softmax_3d", "softmax_simple", "log_softmax",
                "mean_squared_error", "softmax_cross_entropy", "softmax_cross_entropy_simple",
                "sigmoid_cross_entropy", "binary_cross_entropy", "transpose_axes", "broadcast_to"]


@pytest.mark.parametrize("name", SECOND_ORDER)
def test_second_order_same_as_dezero(name):
    dz, DF = _dz()
    fdz, F = _fg()
    _, call, shapes, sample = next(c for c in DZ_CASES if c[0] == name)
    arrays = _inputs(shapes, sample, seed=1)
    weights = _inputs(shapes, "n", seed=2)
    _, g_dz = _run(DF, dz.Variable, call, arrays, True, weights)
    _, g_fg = _run(F, fdz.Variable, call, arrays, True, weights)
    for i, (a, b) in enumerate(zip(g_fg, g_dz)):
        if b is None:  # DeZero gives no second-order gradient here: ours is zero or None
            assert a is None or not np.any(a), (name, i)
            continue
        assert_array_equal(a, b, err_msg=f"{name}: second-order grad of input {i}")


def test_accuracy_same_as_dezero():
    dz, DF = _dz()
    fdz, F = _fg()
    y = np.random.default_rng(3).standard_normal((10, 4))
    t = np.random.default_rng(4).integers(0, 4, size=10)
    a_dz = DF.accuracy(dz.Variable(y), t)
    a_fg = F.accuracy(fdz.Variable(y), t)
    assert_array_equal(a_fg.data, a_dz.data)
    assert a_fg.data.dtype == a_dz.data.dtype


def test_dezero_model_loss_step_same_as_dezero():
    # A two-layer MLP step written with the vocabulary: bit-identical loss and grads.
    dz, DF = _dz()
    fdz, F = _fg()
    rng = np.random.default_rng(5)
    x = rng.standard_normal((8, 3))
    t = rng.integers(0, 4, size=8)
    params = [rng.standard_normal(s) * 0.5 for s in [(3, 6), (6,), (6, 4), (4,)]]

    def step(M, Var):
        W1, b1, W2, b2 = (Var(p.copy()) for p in params)
        h = M.sigmoid_simple(M.linear(x, W1, b1))
        loss = M.softmax_cross_entropy(M.linear(h, W2, b2), t)
        loss.backward()
        return loss.data, [W1.grad.data, b1.grad.data, W2.grad.data, b2.grad.data]

    l_dz, g_dz = step(DF, dz.Variable)
    l_fg, g_fg = step(F, fdz.Variable)
    assert_array_equal(l_fg, l_dz)
    for a, b in zip(g_fg, g_dz):
        assert_array_equal(a, b)
