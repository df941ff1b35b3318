"""Convolution and pooling (fastgrad.dezero.functions_conv).

Oracles: DeZero 0.0.13 (bit for bit in float64, same inputs) and central
finite differences for first and second derivatives, in float64 and float32.
"""
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from conftest import check_grads_keep_dtype, import_dezero, numerical_grad
import fastgrad.dezero
from fastgrad.dezero.core import Variable
import fastgrad.dezero.functions as F
import fastgrad.dezero.functions_conv as C

# (N, C, H, W, OC, kernel, stride, pad)
GEOMETRIES = [
    (2, 3, 7, 6, 4, 3, 1, 1),
    (1, 2, 8, 8, 3, (3, 2), 2, 0),
    (2, 1, 5, 5, 2, 5, 1, 2),
    (1, 2, 9, 7, 2, 3, (2, 3), (1, 0)),
    (1, 1, 4, 4, 1, 1, 1, 0),
]


def _kernel(k):
    return (k, k) if isinstance(k, int) else k


def _dezero():
    return (import_dezero("dezero"), import_dezero("dezero.functions"),
            import_dezero("dezero.functions_conv"))


# =============================================================================
# against DeZero, bit for bit
# =============================================================================
@pytest.mark.parametrize("geom", GEOMETRIES)
@pytest.mark.parametrize("to_matrix", [True, False])
def test_im2col_col2im_arrays_equal_dezero(geom, to_matrix):
    _, _, dzc = _dezero()
    N, Cc, H, W, OC, K, S, P = geom
    x = np.random.default_rng(1).standard_normal((N, Cc, H, W))
    col = C.im2col_array(x, K, S, P, to_matrix=to_matrix)
    assert_array_equal(col, dzc.im2col_array(x, K, S, P, to_matrix=to_matrix))
    back = C.col2im_array(col, x.shape, K, S, P, to_matrix=to_matrix)
    assert_array_equal(back, dzc.col2im_array(col, x.shape, K, S, P,
                                              to_matrix=to_matrix))


@pytest.mark.parametrize("geom", GEOMETRIES)
@pytest.mark.parametrize("bias", [True, False])
def test_conv2d_equals_dezero(geom, bias):
    dz, dzF, dzc = _dezero()
    N, Cc, H, W, OC, K, S, P = geom
    KH, KW = _kernel(K)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((N, Cc, H, W))
    Wt = rng.standard_normal((OC, Cc, KH, KW))
    b = rng.standard_normal(OC) if bias else None

    xd, Wd = dz.Variable(x), dz.Variable(Wt)
    bd = dz.Variable(b) if bias else None
    yd = dzc.conv2d(xd, Wd, bd, S, P)
    R = rng.standard_normal(yd.shape)
    dzF.sum(yd * R).backward()

    xf, Wf = Variable(x), Variable(Wt)
    bf = Variable(b) if bias else None
    yf = C.conv2d(xf, Wf, bf, S, P)
    F.sum(yf * R).backward()

    assert_array_equal(yf.data, yd.data)
    assert_array_equal(xf.grad.data, xd.grad.data)
    assert_array_equal(Wf.grad.data, Wd.grad.data)
    if bias:
        assert_array_equal(bf.grad.data, bd.grad.data)

    # conv2d_simple (im2col + linear) as DeZero composes it
    xd, xf = dz.Variable(x), Variable(x)
    yd = dzc.conv2d_simple(xd, Wt, b, S, P)
    dzF.sum(yd * R).backward()
    yf = C.conv2d_simple(xf, Wt, b, S, P)
    F.sum(yf * R).backward()
    assert_array_equal(yf.data, yd.data)
    assert_array_equal(xf.grad.data, xd.grad.data)


@pytest.mark.parametrize("geom", GEOMETRIES)
@pytest.mark.parametrize("bias", [True, False])
def test_deconv2d_equals_dezero(geom, bias):
    dz, dzF, dzc = _dezero()
    N, Cc, H, W, OC, K, S, P = geom
    KH, KW = _kernel(K)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((N, Cc, H, W))
    Wt = rng.standard_normal((Cc, OC, KH, KW))
    b = rng.standard_normal(OC) if bias else None
    xd, Wd = dz.Variable(x), dz.Variable(Wt)
    bd = dz.Variable(b) if bias else None
    yd = dzc.deconv2d(xd, Wd, bd, S, P)
    R = rng.standard_normal(yd.shape)
    dzF.sum(yd * R).backward()
    xf, Wf = Variable(x), Variable(Wt)
    bf = Variable(b) if bias else None
    yf = C.deconv2d(xf, Wf, bf, S, P)
    F.sum(yf * R).backward()
    assert_array_equal(yf.data, yd.data)
    assert_array_equal(xf.grad.data, xd.grad.data)
    assert_array_equal(Wf.grad.data, Wd.grad.data)
    if bias:
        assert_array_equal(bf.grad.data, bd.grad.data)


@pytest.mark.parametrize("geom", GEOMETRIES)
@pytest.mark.parametrize("name", ["pooling", "average_pooling", "pooling_simple"])
def test_pooling_equals_dezero(geom, name):
    dz, dzF, dzc = _dezero()
    N, Cc, H, W, OC, K, S, P = geom
    if name != "pooling" and not isinstance(K, int):
        pytest.skip("DeZero's average pooling gradient and pooling_simple take "
                    "square kernels only")
    x = np.random.default_rng(4).standard_normal((N, Cc, H, W))
    xd, xf = dz.Variable(x), Variable(x)
    yd = getattr(dzc, name)(xd, K, S, P)
    R = np.random.default_rng(5).standard_normal(yd.shape)
    dzF.sum(yd * R).backward()
    yf = getattr(C, name)(xf, K, S, P)
    F.sum(yf * R).backward()
    assert_array_equal(yf.data, yd.data)
    assert_array_equal(xf.grad.data, xd.grad.data)


def test_max_pooling_second_order_equals_dezero():
    # DeZero's max pooling is twice differentiable (Pooling2DWithIndexes).
    dz, dzF, dzc = _dezero()
    x = np.random.default_rng(6).standard_normal((2, 2, 6, 6))
    R = np.random.default_rng(7).standard_normal((2, 2, 3, 3))

    def run(V, Fm, Cm):
        v = V(x)
        y = Cm.pooling(v, 2, 2)
        loss = Fm.sum(y * y * R)
        loss.backward(create_graph=True)
        g = v.grad
        v.cleargrad()
        Fm.sum(g * g).backward()
        return g.data, v.grad.data

    gd, hd = run(dz.Variable, dzF, dzc)
    gf, hf = run(Variable, F, C)
    assert_array_equal(gf, gd)
    assert_array_equal(hf, hd)


@pytest.mark.parametrize("geom", GEOMETRIES[:3])
def test_im2col_col2im_functions_equal_dezero(geom):
    dz, dzF, dzc = _dezero()
    N, Cc, H, W, OC, K, S, P = geom
    x = np.random.default_rng(8).standard_normal((N, Cc, H, W))
    xd, xf = dz.Variable(x), Variable(x)
    cd = dzc.im2col(xd, K, S, P)
    cf = C.im2col(xf, K, S, P)
    R = np.random.default_rng(9).standard_normal(cd.shape)
    dzF.sum(cd * R).backward()
    F.sum(cf * R).backward()
    assert_array_equal(cf.data, cd.data)
    assert_array_equal(xf.grad.data, xd.grad.data)

    col = np.random.default_rng(10).standard_normal(cd.shape)
    cd, cf = dz.Variable(col), Variable(col)
    id_ = dzc.col2im(cd, x.shape, K, S, P)
    if_ = C.col2im(cf, x.shape, K, S, P)
    R = np.random.default_rng(11).standard_normal(x.shape)
    dzF.sum(id_ * R).backward()
    F.sum(if_ * R).backward()
    assert_array_equal(if_.data, id_.data)
    assert_array_equal(cf.grad.data, cd.grad.data)


# =============================================================================
# finite differences
# =============================================================================
def _check_first_order(fn, arrays, dtype, rtol, atol, seed=0):
    """Gradients of sum(fn(*xs) * R) against finite differences (float64),
    float32 kept float32 (conftest.check_grads_keep_dtype)."""
    y = check_grads_keep_dtype(fastgrad.dezero, fn, arrays, dtype, rtol, atol, seed)
    assert y.dtype == dtype


TOL = {np.float64: (1e-6, 1e-7), np.float32: (1e-3, 1e-3)}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("geom", GEOMETRIES)
def test_conv2d_grad_numerical(dtype, geom):
    N, Cc, H, W, OC, K, S, P = geom
    KH, KW = _kernel(K)
    rng = np.random.default_rng(12)
    x = rng.standard_normal((N, Cc, H, W))
    Wt = rng.standard_normal((OC, Cc, KH, KW))
    b = rng.standard_normal(OC)
    rtol, atol = TOL[dtype]
    _check_first_order(lambda x, W, b: C.conv2d(x, W, b, S, P), [x, Wt, b],
                       dtype, rtol, atol)
    _check_first_order(lambda x, W: C.conv2d_simple(x, W, None, S, P), [x, Wt],
                       dtype, rtol, atol)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("geom", GEOMETRIES)
def test_deconv2d_grad_numerical(dtype, geom):
    N, Cc, H, W, OC, K, S, P = geom
    KH, KW = _kernel(K)
    rng = np.random.default_rng(13)
    x = rng.standard_normal((N, Cc, H, W))
    Wt = rng.standard_normal((Cc, OC, KH, KW))
    b = rng.standard_normal(OC)
    rtol, atol = TOL[dtype]
    _check_first_order(lambda x, W, b: C.deconv2d(x, W, b, S, P), [x, Wt, b],
                       dtype, rtol, atol)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("geom", GEOMETRIES)
def test_pooling_grad_numerical(dtype, geom):
    N, Cc, H, W, OC, K, S, P = geom
    # distinct values: a max with ties has no derivative
    x = np.random.default_rng(14).permutation(N * Cc * H * W).reshape(N, Cc, H, W)
    x = x / x.size + 0.1
    rtol, atol = TOL[dtype]
    _check_first_order(lambda v: C.pooling(v, K, S, P), [x], dtype, rtol, atol)
    _check_first_order(lambda v: C.average_pooling(v, K, S, P), [x], dtype,
                       rtol, atol)
    _check_first_order(lambda v: C.pooling_simple(v, K, S, P), [x], dtype,
                       rtol, atol)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("to_matrix", [True, False])
def test_im2col_col2im_grad_numerical(dtype, to_matrix):
    x = np.random.default_rng(15).standard_normal((2, 2, 5, 4))
    K, S, P = (3, 2), (2, 1), 1
    rtol, atol = TOL[dtype]
    _check_first_order(lambda v: C.im2col(v, K, S, P, to_matrix), [x], dtype,
                       rtol, atol)
    col = C.im2col_array(x, K, S, P, to_matrix)
    _check_first_order(lambda v: C.col2im(v, x.shape, K, S, P, to_matrix),
                       [col], dtype, rtol, atol)


def _check_second_order(fn, arrays, rtol=1e-5, atol=1e-6, seed=0):
    """d/dx_j of sum(grad_i(x) * V_i) (double backprop) vs finite differences.

    ``fn`` maps Variables to a scalar loss; its first-order gradients are
    checked by the tests above, and here differentiated again.
    """
    arrays = [np.asarray(a, dtype=np.float64) for a in arrays]
    rng = np.random.default_rng(seed)
    Vs = [rng.standard_normal(a.shape) for a in arrays]

    def grads(*vals, create_graph=False):
        xs = [Variable(v) for v in vals]
        loss = fn(*xs)
        loss.backward(create_graph=create_graph)
        return xs, [x.grad for x in xs]

    xs, gs = grads(*arrays, create_graph=True)
    for x in xs:
        x.cleargrad()
    h = None
    for g, V in zip(gs, Vs):
        term = F.sum(g * V)
        h = term if h is None else h + term
    h.backward()
    for j, x in enumerate(xs):
        def f(a, j=j):
            vals = list(arrays)
            vals[j] = a
            _, g1 = grads(*vals)
            return sum(np.sum(g.data * V) for g, V in zip(g1, Vs))
        num = numerical_grad(f, arrays[j])
        got = np.zeros_like(arrays[j]) if x.grad is None else x.grad.data
        assert_allclose(got, num, rtol=rtol, atol=atol,
                        err_msg=f"second derivative w.r.t. input {j}")


@pytest.mark.parametrize("geom", GEOMETRIES[:4])
def test_conv2d_second_order_numerical(geom):
    N, Cc, H, W, OC, K, S, P = geom
    KH, KW = _kernel(K)
    rng = np.random.default_rng(16)
    x = rng.standard_normal((N, Cc, H, W))
    Wt = rng.standard_normal((OC, Cc, KH, KW))
    b = rng.standard_normal(OC)
    R = rng.standard_normal((N, OC) + (
        (H + 2 * _kernel(P)[0] - KH) // _kernel(S)[0] + 1,
        (W + 2 * _kernel(P)[1] - KW) // _kernel(S)[1] + 1))

    def loss(x, W, b):
        y = C.conv2d(x, W, b, S, P)
        return F.sum(F.tanh(y) * R)

    _check_second_order(loss, [x, Wt, b])


def test_deconv2d_second_order_numerical():
    rng = np.random.default_rng(17)
    x = rng.standard_normal((2, 2, 3, 4))
    Wt = rng.standard_normal((2, 3, 3, 2))

    def loss(x, W):
        y = C.deconv2d(x, W, stride=2, pad=1)
        return F.sum(y * y * y)

    _check_second_order(loss, [x, Wt])


@pytest.mark.parametrize("name", ["pooling", "average_pooling"])
def test_pooling_second_order_numerical(name):
    x = np.random.default_rng(18).permutation(2 * 2 * 6 * 5).reshape(2, 2, 6, 5)
    x = x / x.size + 0.5

    def loss(v):
        y = getattr(C, name)(v, (2, 3), 2, 1)
        return F.sum(y * y * y)

    _check_second_order(loss, [x])


def test_max_pooling_third_order():
    # Pooling2DWithIndexes has a backward here, so the chain never ends.
    x = np.random.default_rng(19).permutation(16).reshape(1, 1, 4, 4) / 16.0
    v = Variable(x)
    y = F.sum(C.pooling(v, 2, 2) ** 4)
    y.backward(create_graph=True)
    g1 = v.grad
    v.cleargrad()
    F.sum(g1).backward(create_graph=True)
    g2 = v.grad
    v.cleargrad()
    F.sum(g2).backward()
    # d3/dx3 of m**4 is 24 m at each window's max, zero elsewhere (the
    # maxima located with NumPy, independently of the pooling code)
    expect = np.zeros_like(x)
    for oh, ow in np.ndindex(2, 2):
        win = x[0, 0, 2 * oh:2 * oh + 2, 2 * ow:2 * ow + 2]
        i, j = np.unravel_index(np.argmax(win), win.shape)
        expect[0, 0, 2 * oh + i, 2 * ow + j] = 24 * win[i, j]
    assert_allclose(v.grad.data, expect, rtol=1e-12)


def test_average_pooling_non_square_kernel_gradient():
    # DeZero swaps the kernel's height and width here; the sum of the
    # gradient over each window must be 1 per output either way, but the
    # shape only fits with the right order.
    x = Variable(np.random.default_rng(20).standard_normal((1, 1, 4, 6)))
    y = C.average_pooling(x, (2, 3), (2, 3))
    assert y.shape == (1, 1, 2, 2)
    F.sum(y).backward()
    assert_allclose(x.grad.data, np.full((1, 1, 4, 6), 1 / 6))


# =============================================================================
# bad input
# =============================================================================
def test_channel_mismatch_is_value_error():
    x = np.zeros((1, 3, 5, 5))
    with pytest.raises(ValueError, match="3 channels"):
        C.conv2d(x, np.zeros((2, 4, 3, 3)))
    with pytest.raises(ValueError, match="3 channels"):
        C.deconv2d(x, np.zeros((4, 2, 3, 3)))
    with pytest.raises(ValueError, match="3 channels"):
        C.conv2d_simple(x, np.zeros((2, 4, 3, 3)))


def test_kernel_larger_than_padded_input_is_value_error():
    x = np.zeros((1, 1, 4, 4))
    with pytest.raises(ValueError, match="larger than the padded input"):
        C.conv2d(x, np.zeros((1, 1, 7, 7)), pad=1)
    with pytest.raises(ValueError, match="larger than the padded input"):
        C.pooling(x, 5)
    with pytest.raises(ValueError, match="larger than the padded input"):
        C.average_pooling(x, (2, 5))
    with pytest.raises(ValueError, match="larger than the padded input"):
        C.im2col(x, 6, pad=0)
    C.conv2d(x, np.zeros((1, 1, 6, 6)), pad=1)  # exactly fits


def test_other_bad_arguments():
    x = np.zeros((1, 1, 4, 4))
    with pytest.raises(ValueError, match="4-d"):
        C.conv2d(np.zeros((1, 4, 4)), np.zeros((1, 1, 3, 3)))
    with pytest.raises(ValueError, match="W must be 4-d"):
        C.conv2d(x, np.zeros((1, 3, 3)))
    with pytest.raises(ValueError, match="stride must be >= 1"):
        C.conv2d(x, np.zeros((1, 1, 3, 3)), stride=0)
    with pytest.raises(ValueError, match="pad must be >= 0"):
        C.pooling(x, 2, pad=-1)
    with pytest.raises(TypeError, match="kernel_size"):
        C.pooling(x, 2.5)
    with pytest.raises(ValueError, match="b must have shape"):
        C.conv2d(x, np.zeros((2, 1, 3, 3)), np.zeros(3))
    with pytest.raises(ValueError, match="outsize"):
        C.deconv2d(x, np.zeros((1, 1, 3, 3)), outsize=(20, 20))
    with pytest.raises(ValueError, match="does not match"):
        C.col2im_array(np.zeros((3, 9)), (1, 1, 4, 4), 3, 1, 0)


def test_float32_stays_float32():
    x = Variable(np.ones((1, 2, 5, 5), np.float32))
    W = Variable(np.ones((3, 2, 3, 3), np.float32))
    b = Variable(np.zeros(3, np.float32))
    y = C.conv2d(x, W, b, pad=1)
    z = C.pooling(y, 2, 2)
    a = C.average_pooling(C.deconv2d(z, np.ones((3, 2, 2, 2), np.float32)), 2)
    assert y.dtype == z.dtype == a.dtype == np.float32
    F.sum(a).backward()
    assert x.grad.dtype == W.grad.dtype == b.grad.dtype == np.float32
