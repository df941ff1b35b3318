"""The convolution and pooling kernels (fastgrad._conv) and the functions on them.

Oracles: DeZero 0.0.13 itself (``dezero.functions_conv``: results, gradients,
dtypes and memory layouts, bit for bit), NumPy formulas written here
(im2col by slicing, pooling by ``max``/``argmax``/``mean`` over the col),
and central finite differences.  The kernels are tested directly (they run
under FASTGRAD_PURE=1 too, where the functions do not use them) and through
the functions (compiled or NumPy path, whichever the run selects).
"""
import numpy as np
import pytest
from numpy.testing import assert_allclose

from conftest import import_dezero, numerical_grad
from conftest import layout as _layout
import fastgrad
from fastgrad import _conv as K
from fastgrad.dezero.core import Variable, no_grad, using_config
import fastgrad.dezero.functions as F
import fastgrad.dezero.functions_conv as C

# (N, C, H, W, KH, KW, SH, SW, PH, PW): square and non-square kernels and
# strides, kernel = padded input, 1x1, stride larger than the kernel, pads
# larger than the kernel, odd sizes, one image, one channel.
GEOMS = [
    (2, 3, 7, 6, 3, 3, 1, 1, 1, 1),
    (1, 2, 8, 8, 3, 2, 2, 2, 0, 0),
    (2, 1, 5, 5, 5, 5, 1, 1, 2, 2),
    (1, 2, 9, 7, 3, 3, 2, 3, 1, 0),
    (1, 1, 4, 4, 1, 1, 1, 1, 0, 0),
    (3, 2, 6, 5, 6, 5, 1, 1, 0, 0),     # kernel = input: one output
    (2, 2, 7, 9, 2, 3, 3, 2, 0, 1),     # stride > kernel
    (1, 3, 3, 4, 2, 2, 1, 1, 3, 2),     # pad > kernel
    (4, 1, 11, 3, 4, 1, 2, 1, 1, 0),
    (1, 1, 1, 1, 1, 1, 1, 1, 0, 0),
    (2, 4, 10, 10, 3, 3, 1, 1, 1, 1),
    (1, 2, 13, 8, 3, 3, 2, 2, 1, 1),
]
# Geometries with the same window in both directions (DeZero's average
# pooling gradient swaps KH and KW, and pooling_simple takes square ones).
SQUARE = [g for g in GEOMS if g[4] == g[5] and g[6] == g[7] and g[8] == g[9]]
LAYOUTS = ["contiguous", "strided", "nhwc", "reversed", "readonly"]
DTYPES = [np.float64, np.float32]


def _dezero():
    return (import_dezero("dezero"), import_dezero("dezero.functions"),
            import_dezero("dezero.functions_conv"))


def _out(H, K, S, P):
    return (H + 2 * P - K) // S + 1


def _values(shape, dtype, seed, specials=False):
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(shape).astype(dtype)
    if specials and v.size >= 8:
        # Ties of +0.0/-0.0, NaN and infinities: where NumPy's max, argmax and
        # sums have rules of their own.
        flat = v.reshape(-1)
        idx = rng.choice(flat.size, min(flat.size // 3, 40), replace=False)
        specials = np.array([0.0, -0.0, np.nan, np.inf, -np.inf], dtype)
        flat[idx] = rng.choice(specials, idx.size)
    return v


def assert_same(got, want, layout=True):
    """Same dtype, shape and values bit for bit (NaN where NaN; the sign of
    zeros counts), and with ``layout`` the same strides."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    assert got.shape == want.shape, (got.shape, want.shape)
    if layout:
        assert got.strides == want.strides, (got.strides, want.strides)
    nan = np.isnan(want) if want.dtype.kind in "fc" else np.zeros(want.shape, bool)
    if want.dtype.kind in "fc":
        np.testing.assert_array_equal(np.isnan(got), nan)
    g = np.where(nan, 0, got) if nan.any() else got
    w = np.where(nan, 0, want) if nan.any() else want
    assert np.ascontiguousarray(g).tobytes() == np.ascontiguousarray(w).tobytes()


# =============================================================================
# the kernels against NumPy formulas
# =============================================================================
def _numpy_col(x, KH, KW, SH, SW, PH, PW):
    """DeZero's im2col (N, C, KH, KW, OH, OW), by slicing the padded image."""
    N, Cc, H, W = x.shape
    OH, OW = _out(H, KH, SH, PH), _out(W, KW, SW, PW)
    xp = np.pad(x, ((0, 0), (0, 0), (PH, PH + SH - 1), (PW, PW + SW - 1)))
    col = np.empty((N, Cc, KH, KW, OH, OW), x.dtype)
    for j in range(KH):
        for i in range(KW):
            col[:, :, j, i] = xp[:, :, j:j + SH * OH:SH, i:i + SW * OW:SW]
    return col


@pytest.mark.parametrize("geom", GEOMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_im2col_kernel(geom, dtype, layout):
    N, Cc, H, W, KH, KW, SH, SW, PH, PW = geom
    x = _values((N, Cc, H, W), dtype, 1, specials=True)
    want = _numpy_col(x, KH, KW, SH, SW, PH, PW)
    xl = _layout(x, layout)
    assert_same(K.im2col(xl, KH, KW, SH, SW, PH, PW, False), want)
    mat = K.im2col(xl, KH, KW, SH, SW, PH, PW, True)
    assert_same(mat, np.ascontiguousarray(
        want.transpose(0, 4, 5, 1, 2, 3).reshape(mat.shape)))
    # into a buffer: used when it fits, ignored when it does not
    buf = np.full(want.shape, 7, dtype)
    assert K.im2col(xl, KH, KW, SH, SW, PH, PW, False, buf) is buf
    assert_same(buf, want)
    for bad in (np.empty(want.shape, np.float16), np.empty(want.shape[:-1] + (9,), dtype),
                np.empty(want.shape[::-1], dtype).T):
        r = K.im2col(xl, KH, KW, SH, SW, PH, PW, False, bad)
        fits = (bad.dtype == dtype and bad.shape == want.shape
                and bad.flags.c_contiguous)        # a transpose of ones is, too
        assert (r is bad) == fits
        assert_same(r, want)


@pytest.mark.parametrize("geom", GEOMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["contiguous", "matrix", "broadcast", "reversed"])
def test_col2im_kernel(geom, dtype, layout):
    N, Cc, H, W, KH, KW, SH, SW, PH, PW = geom
    OH, OW = _out(H, KH, SH, PH), _out(W, KW, SW, PW)
    shape = (N, Cc, KH, KW, OH, OW)
    if layout == "broadcast":    # average pooling's backward reads one value per window
        g = _values((N, Cc, OH, OW), dtype, 2)
        col = np.broadcast_to(g.reshape(-1), (KH, KW, g.size)).reshape(
            (KH, KW) + g.shape).transpose(2, 3, 0, 1, 4, 5)
    elif layout == "matrix":     # col2im of a (N*OH*OW, C*KH*KW) matrix
        m = _values((N * OH * OW, Cc * KH * KW), dtype, 2, specials=True)
        col = m.reshape(N, OH, OW, Cc, KH, KW).transpose(0, 3, 4, 5, 1, 2)
    else:
        col = _layout(_values(shape, dtype, 2, specials=True), layout)
    # DeZero's col2im: zeros, then += the window slices in (j, i) order
    img = np.zeros((N, Cc, H + 2 * PH + SH - 1, W + 2 * PW + SW - 1), dtype)
    with np.errstate(invalid="ignore"):           # inf + -inf in the specials
        for j in range(KH):
            for i in range(KW):
                img[:, :, j:j + SH * OH:SH, i:i + SW * OW:SW] += col[:, :, j, i]
    want = img[:, :, PH:H + PH, PW:W + PW]
    got = K.col2im(col, (N, Cc, H, W), KH, KW, SH, SW, PH, PW)
    assert_same(got, want)          # the interior view of a padded buffer, as DeZero's
    assert got.base is not None and got.base.shape == img.shape


def _numpy_pools(x, KH, KW, SH, SW, PH, PW):
    col = _numpy_col(x, KH, KW, SH, SW, PH, PW)
    N, Cc, _, _, OH, OW = col.shape
    flat = col.reshape(N, Cc, KH * KW, OH, OW)
    with np.errstate(all="ignore"):
        return flat.max(axis=2), flat.argmax(axis=2), col.mean(axis=(2, 3))


@pytest.mark.parametrize("geom", GEOMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_pooling_kernels(geom, dtype, layout):
    N, Cc, H, W, KH, KW, SH, SW, PH, PW = geom
    x = _values((N, Cc, H, W), dtype, 3, specials=True)
    ymax, idx, yavg = _numpy_pools(x, KH, KW, SH, SW, PH, PW)
    xl = _layout(x, layout)
    got = K.max_pool(xl, KH, KW, SH, SW, PH, PW)
    avg = K.avg_pool(xl, KH, KW, SH, SW, PH, PW)
    if ymax.shape[2] * ymax.shape[3] == 1:
        # one output per window: NumPy reduces along memory there, in its
        # own SIMD order, and the kernels leave it to NumPy
        assert got is None and avg is None
        return
    assert_same(got[0], ymax)
    assert_same(got[1], idx)
    assert_same(avg, yavg)

    # the backward: gy to the argmax, summed as DeZero's col2im sums
    gy = _layout(_values(ymax.shape, dtype, 4), layout)
    gcol = np.zeros(idx.size * KH * KW, dtype)
    gcol[idx.ravel() + np.arange(0, idx.size * KH * KW, KH * KW)] = gy.ravel()
    gcol = gcol.reshape(idx.shape + (KH, KW)).transpose(0, 1, 4, 5, 2, 3)
    assert_same(K.max_pool_grad(gy, idx, x.shape, dtype, KH, KW, SH, SW, PH, PW),
                K.col2im(np.ascontiguousarray(gcol), x.shape, KH, KW, SH, SW, PH, PW))
    # and the gather of the second derivative
    col = _numpy_col(x, KH, KW, SH, SW, PH, PW).reshape(N, Cc, KH * KW, *idx.shape[2:])
    pick = np.take_along_axis(col, idx[:, :, None], axis=2)[:, :, 0]
    assert_same(K.max_pool_pick(xl, idx, KH, KW, SH, SW, PH, PW), pick)


def test_max_pool_ties_and_nans():
    # NumPy's rules: the first maximum (or the first NaN) is the argmax; the
    # maximum of tied zeros has the sign of the last one; a NaN propagates.
    nan = np.nan
    rows = [[0.0, -0.0, 0.0, -0.0], [-0.0, 0.0, -1.0, -0.0], [1.0, nan, 2.0, nan],
            [-np.inf, -np.inf, -np.inf, -np.inf], [nan, 1.0, 1.0, 0.0], [-1, -2, -0.0, -3]]
    for dtype in DTYPES:
        x = np.array(rows, dtype).reshape(len(rows), 1, 2, 2)
        x = np.concatenate([x, x], axis=3)     # two outputs per row (OH*OW > 1)
        ymax, idx, yavg = _numpy_pools(x, 2, 2, 2, 2, 0, 0)
        got = K.max_pool(x, 2, 2, 2, 2, 0, 0)
        assert_same(got[0], ymax)
        assert_same(got[1], idx)
        assert_same(K.avg_pool(x, 2, 2, 2, 2, 0, 0), yavg)


def test_import_probe_passed():
    # If this NumPy's reduction rules differed, the pooling kernels would
    # decline everything (correct, but slow): the probe should pass here.
    assert K.MAX_POOL_OK and K.AVG_POOL_OK


def test_add_bias_kernel():
    for dtype in DTYPES:
        y = _values((3, 4, 5, 6), dtype, 5, specials=True)
        b = _values((12,), dtype, 6)[::2]
        want = y + b
        assert K.add_bias(y, b) is y
        assert_same(y, want)
    y = np.ones((2, 3))
    assert K.add_bias(y, np.ones(3, np.float32)) is None      # mixed dtypes: NumPy's
    assert K.add_bias(y.T, np.ones(2)) is None                 # strided output
    assert K.add_bias(y, np.ones(2)) is None                   # shapes do not fit
    assert K.add_bias(y, y[0]) is None                         # overlapping


@pytest.mark.parametrize("dtype", [np.int64, np.float16, np.complex128])
def test_kernels_decline_other_dtypes(dtype):
    x = np.ones((1, 1, 4, 4), dtype)
    assert K.im2col(x, 2, 2, 1, 1, 0, 0, False) is None
    assert K.max_pool(x, 2, 2, 1, 1, 0, 0) is None
    assert K.avg_pool(x, 2, 2, 1, 1, 0, 0) is None
    col = np.ones((1, 1, 2, 2, 3, 3), dtype)
    assert K.col2im(col, (1, 1, 4, 4), 2, 2, 1, 1, 0, 0) is None


def test_kernels_decline_subclasses_and_byteswapped():
    x = np.ones((1, 1, 4, 4))
    assert K.im2col(x.view(np.ma.MaskedArray), 2, 2, 1, 1, 0, 0, False) is None
    assert K.im2col(x.astype(">f8"), 2, 2, 1, 1, 0, 0, False) is None


def test_kernels_check_geometry_and_indexes():
    x = np.ones((1, 2, 4, 4))
    with pytest.raises(ValueError, match="larger than the padded input"):
        K.im2col(x, 5, 5, 1, 1, 0, 0, False)
    with pytest.raises(ValueError, match="bad window"):
        K.max_pool(x, 2, 2, 0, 1, 0, 0)
    with pytest.raises(ValueError, match="col2im"):
        K.col2im(np.ones((1, 2, 2, 2, 3, 2)), (1, 2, 4, 4), 2, 2, 1, 1, 0, 0)
    y, idx = K.max_pool(x, 2, 2, 2, 2, 0, 0)
    bad = idx.copy()
    bad[0, 1, 1, 0] = 4
    with pytest.raises(ValueError, match="outside the 2x2 window"):
        K.max_pool_grad(y, bad, x.shape, x.dtype, 2, 2, 2, 2, 0, 0)
    bad[0, 1, 1, 0] = -1
    with pytest.raises(ValueError, match="outside the 2x2 window"):
        K.max_pool_pick(x, bad, 2, 2, 2, 2, 0, 0)
    with pytest.raises(ValueError, match="indexes of shape"):
        K.max_pool_pick(x, idx[:, :1], 2, 2, 2, 2, 0, 0)
    with pytest.raises(ValueError, match="gradient of shape"):
        K.max_pool_grad(y[:, :1], idx, x.shape, x.dtype, 2, 2, 2, 2, 0, 0)
    # indexes the kernels do not read (another integer type) go to NumPy
    assert K.max_pool_pick(x, idx.astype(np.int32), 2, 2, 2, 2, 0, 0) is None


# =============================================================================
# the functions against DeZero, bit for bit
# =============================================================================
def _kernel(geom):
    return geom[4:6], geom[6:8], geom[8:10]


@pytest.mark.parametrize("geom", GEOMS)
@pytest.mark.parametrize("to_matrix", [True, False])
@pytest.mark.parametrize("layout", ["contiguous", "nhwc"])
def test_im2col_col2im_arrays_equal_dezero(geom, to_matrix, layout):
    _, _, dzc = _dezero()
    k, s, p = _kernel(geom)
    x = _layout(_values(geom[:4], np.float64, 7), layout)
    col = C.im2col_array(x, k, s, p, to_matrix=to_matrix)
    want = dzc.im2col_array(x, k, s, p, to_matrix=to_matrix)
    assert_same(col, want)        # including a matrix that is a view for one image
    assert_same(C.col2im_array(col, x.shape, k, s, p, to_matrix=to_matrix),
                dzc.col2im_array(col, x.shape, k, s, p, to_matrix=to_matrix))


def _run_conv(V, Fm, Cm, x, W, b, s, p, R, deconv=False):
    xv, Wv = V(x), V(W)
    bv = None if b is None else V(b)
    y = (Cm.deconv2d if deconv else Cm.conv2d)(xv, Wv, bv, s, p)
    Fm.sum(y * R).backward()
    grads = [xv.grad.data, Wv.grad.data] + ([] if b is None else [bv.grad.data])
    return y.data, grads


@pytest.mark.parametrize("geom", GEOMS)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("deconv", [False, True])
def test_conv_deconv_equal_dezero(geom, bias, deconv):
    dz, dzF, dzc = _dezero()
    N, Cc, H, W, KH, KW = geom[:6]
    k, s, p = _kernel(geom)
    rng = np.random.default_rng(8)
    OC = 3
    if deconv:
        # an input of the conv output's size, so the deconvolution fits
        x = rng.standard_normal((N, Cc, _out(H, KH, s[0], p[0]), _out(W, KW, s[1], p[1])))
        Wt = rng.standard_normal((Cc, OC, KH, KW))
        out = dzc.deconv2d(x, Wt, None, s, p).shape
    else:
        x = rng.standard_normal((N, Cc, H, W))
        Wt = rng.standard_normal((OC, Cc, KH, KW))
        out = dzc.conv2d(x, Wt, None, s, p).shape
    if min(out[2:]) < 1:
        pytest.skip("no output")
    b = rng.standard_normal(OC) if bias else None
    R = rng.standard_normal(out)
    yd, gd = _run_conv(dz.Variable, dzF, dzc, x, Wt, b, s, p, R, deconv)
    yf, gf = _run_conv(Variable, F, C, x, Wt, b, s, p, R, deconv)
    assert_same(yf, yd)        # the layout too: conv2d's (N, OH, OW, OC) memory
    for g, h in zip(gf, gd):
        assert_same(g, h, layout=False)


@pytest.mark.parametrize("geom", GEOMS)
@pytest.mark.parametrize("name", ["pooling", "average_pooling", "pooling_simple"])
@pytest.mark.parametrize("layout", ["contiguous", "nhwc"])
def test_pooling_equal_dezero(geom, name, layout):
    dz, dzF, dzc = _dezero()
    k, s, p = _kernel(geom)
    if name != "pooling" and geom not in SQUARE:
        pytest.skip("DeZero's average pooling gradient and pooling_simple take "
                    "square windows only")
    k, s, p = (k[0], s[0], p[0]) if name != "pooling" else (k, s, p)
    x = _layout(_values(geom[:4], np.float64, 9, specials=name == "pooling"), layout)
    xd, xf = dz.Variable(x), Variable(x)
    with np.errstate(all="ignore"):
        yd = getattr(dzc, name)(xd, k, s, p)
        R = np.random.default_rng(10).standard_normal(yd.shape)
        dzF.sum(yd * R).backward()
        yf = getattr(C, name)(xf, k, s, p)
        F.sum(yf * R).backward()
    assert_same(yf.data, yd.data)
    assert_same(xf.grad.data, xd.grad.data, layout=False)


@pytest.mark.parametrize("geom", GEOMS[:6])
def test_max_pooling_second_order_equal_dezero(geom):
    dz, dzF, dzc = _dezero()
    k, s, p = _kernel(geom)
    x = _values(geom[:4], np.float64, 11)

    def run(V, Fm, Cm):
        v = V(x)
        y = Cm.pooling(v, k, s, p)
        R = np.random.default_rng(12).standard_normal(y.shape)
        Fm.sum(y * y * R).backward(create_graph=True)
        g = v.grad
        v.cleargrad()
        Fm.sum(g * g).backward()
        return g.data, v.grad.data

    for a, b in zip(run(Variable, F, C), run(dz.Variable, dzF, dzc)):
        assert_same(a, b, layout=False)


def test_cnn_chain_equal_dezero():
    # conv -> relu -> max pool -> conv (stride 2) -> relu -> average pool ->
    # deconv -> loss: every intermediate layout feeds the next op as in DeZero
    # (the conv output is channels-last in memory, col2im returns a view).
    dz, dzF, dzc = _dezero()
    rng = np.random.default_rng(13)
    x = rng.standard_normal((3, 2, 12, 11))
    W1, b1 = rng.standard_normal((4, 2, 3, 3)), rng.standard_normal(4)
    W2, b2 = rng.standard_normal((5, 4, 3, 2)), rng.standard_normal(5)
    W3 = rng.standard_normal((5, 2, 2, 2))

    def run(V, Fm, Cm, x_var):
        ps = [V(a) for a in (W1, b1, W2, b2, W3)]
        xin = V(x) if x_var else x
        h = Fm.relu(Cm.conv2d(xin, ps[0], ps[1], 1, 1))
        h = Cm.pooling(h, 2, 2)
        h = Fm.relu(Cm.conv2d(h, ps[2], ps[3], (2, 1), (1, 0)))
        h = Cm.average_pooling(h, 2, 1, 0)
        h = Cm.deconv2d(h, ps[4], None, 2, 1)
        loss = Fm.sum(h * h) + Fm.sum(h)
        loss.backward()
        out = [loss.data, h.data] + [v.grad.data for v in ps]
        return out + ([xin.grad.data] if x_var else [])

    for x_var in (True, False):     # False: the first layer's input gradient is skipped
        got = run(Variable, F, C, x_var)
        want = run(dz.Variable, dzF, dzc, x_var)
        assert len(got) == len(want)
        for a, b in zip(got, want):
            assert_same(a, b, layout=False)


# =============================================================================
# dtypes
# =============================================================================
@pytest.mark.parametrize("xdt,wdt", [(np.float32, np.float32), (np.float32, np.float64),
                                     (np.float64, np.float32)])
def test_dtypes_follow_dezero(xdt, wdt):
    # float32 stays float32; mixed dtypes promote as NumPy's tensordot does
    # (DeZero's formula): values and dtypes equal DeZero's.
    dz, dzF, dzc = _dezero()
    rng = np.random.default_rng(14)
    x = rng.standard_normal((2, 3, 7, 6)).astype(xdt)
    Wt = rng.standard_normal((4, 3, 3, 3)).astype(wdt)
    b = rng.standard_normal(4).astype(wdt)

    def run(V, Fm, Cm):
        xv, Wv, bv = V(x), V(Wt), V(b)
        y = Cm.conv2d(xv, Wv, bv, 1, 1)
        z = Cm.pooling(y, 2, 2)
        a = Cm.average_pooling(Cm.deconv2d(z, Wt.transpose(0, 1, 2, 3)[:, :3], None, 2, 0),
                               2, 1, 0)
        Fm.sum(a).backward()
        return [y.data, z.data, a.data, xv.grad.data, Wv.grad.data, bv.grad.data]

    got, want = run(Variable, F, C), run(dz.Variable, dzF, dzc)
    for g, w in zip(got[:3], want[:3]):
        assert_same(g, w)
    # gradients: the full face follows DeZero's dtype rules (grads keep the
    # dtype their formula gives), so dtypes and bits are DeZero's too.
    for g, w in zip(got[3:], want[3:]):
        assert_same(g, w, layout=False)


def test_float32_bit_identical_to_dezero():
    dz, dzF, dzc = _dezero()
    rng = np.random.default_rng(15)
    x = rng.standard_normal((2, 3, 9, 8)).astype(np.float32)
    Wt = rng.standard_normal((5, 3, 3, 2)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    R = rng.standard_normal((2, 5, 5, 4)).astype(np.float32)
    yd, gd = _run_conv(dz.Variable, dzF, dzc, x, Wt, b, (2, 2), (1, 0), R)
    yf, gf = _run_conv(Variable, F, C, x, Wt, b, (2, 2), (1, 0), R)
    assert_same(yf, yd)
    for g, h in zip(gf, gd):
        assert_same(g, h, layout=False)
    for name in ("pooling", "average_pooling"):
        xd, xf = dz.Variable(x), Variable(x)
        dzF.sum(getattr(dzc, name)(xd, 3, 2, 1)).backward()
        yf = getattr(C, name)(xf, 3, 2, 1)
        F.sum(yf).backward()
        assert_same(yf.data, getattr(dzc, name)(x, 3, 2, 1).data)
        # Average pooling divides by DeZero's np.array(KH*KW), an int64 array
        # that promotes a float32 gradient to float64 under NumPy 2.
        assert_same(xf.grad.data, xd.grad.data, layout=False)


def test_integer_images_take_numpy():
    # Integer images are not the kernels' business: NumPy's formulas run.
    _, _, dzc = _dezero()
    x = np.arange(2 * 3 * 5 * 5).reshape(2, 3, 5, 5) % 7
    assert_same(C.im2col_array(x, 3, 1, 1), dzc.im2col_array(x, 3, 1, 1))
    assert_same(C.pooling(x, 2, 2).data, dzc.pooling(x, 2, 2).data)


# =============================================================================
# empty batch, non-contiguous inputs, memory
# =============================================================================
def test_empty_batch():
    # DeZero's conv2d, deconv2d and poolings take an empty batch; so do these
    # (and im2col's matrix, which DeZero's -1 reshape cannot make).
    dz, dzF, dzc = _dezero()
    for name, fn, W in (("conv2d", C.conv2d, np.ones((3, 2, 3, 3))),
                        ("deconv2d", C.deconv2d, np.ones((2, 3, 3, 3)))):
        xv, Wv, bv = Variable(np.zeros((0, 2, 5, 5))), Variable(W), Variable(np.zeros(3))
        y = fn(xv, Wv, bv, 1, 1)
        yd = getattr(dzc, name)(np.zeros((0, 2, 5, 5)), W, np.zeros(3), 1, 1)
        assert y.shape == yd.shape
        F.sum(y).backward()
        assert xv.grad.shape == (0, 2, 5, 5)
        assert_same(Wv.grad.data, np.zeros_like(W), layout=False)
        assert_same(bv.grad.data, np.zeros(3), layout=False)
    for name in ("pooling", "average_pooling"):
        v = Variable(np.zeros((0, 2, 4, 4)))
        y = getattr(C, name)(v, 2, 2)
        assert y.shape == getattr(dzc, name)(np.zeros((0, 2, 4, 4)), 2, 2).shape
        F.sum(y).backward()
        assert v.grad.shape == (0, 2, 4, 4)
    assert C.im2col_array(np.zeros((0, 2, 4, 4)), 3, 1, 1).shape == (0, 18)


def test_noncontiguous_parameters():
    # A transposed filter array and a strided bias: NumPy's reshape copies
    # them inside tensordot, and so here.
    dz, dzF, dzc = _dezero()
    rng = np.random.default_rng(16)
    x = rng.standard_normal((2, 3, 6, 6))
    Wt = rng.standard_normal((3, 3, 3, 4)).transpose(3, 2, 1, 0)     # not contiguous
    b = rng.standard_normal(8)[::2]
    R = rng.standard_normal((2, 4, 6, 6))
    yd, gd = _run_conv(dz.Variable, dzF, dzc, x, Wt, b, 1, 1, R)
    yf, gf = _run_conv(Variable, F, C, x, Wt, b, 1, 1, R)
    assert_same(yf, yd)
    for g, h in zip(gf, gd):
        assert_same(g, h, layout=False)


def test_conv_scratch_buffer_lifetime():
    # A convolution keeps its forward's im2col buffer for its backward only
    # while a graph is recorded, and lets it go once the backward has run.
    x = Variable(np.random.default_rng(17).standard_normal((4, 3, 9, 9)))
    W = Variable(np.random.default_rng(18).standard_normal((5, 3, 3, 3)))
    y = C.conv2d(x, W, None, 1, 1)
    f = y.creator
    if fastgrad.PURE:
        assert f._scratch is None
    else:
        assert isinstance(f._scratch, np.ndarray)
    y.backward(retain_grad=True)
    assert f._scratch is None
    g1 = W.grad.data.copy()
    W.cleargrad()
    x.cleargrad()
    y.backward()             # a second backward allocates afresh: same result
    assert_same(W.grad.data, g1)
    with no_grad():
        y = C.conv2d(x, W, None, 1, 1)
    assert y.creator is None


# =============================================================================
# finite differences
# =============================================================================
@pytest.mark.parametrize("geom", [GEOMS[0], GEOMS[3], GEOMS[6], GEOMS[7]])
@pytest.mark.parametrize("dtype", DTYPES)
def test_gradients_numerical(geom, dtype):
    N, Cc, H, W, KH, KW = geom[:6]
    k, s, p = _kernel(geom)
    rng = np.random.default_rng(19)
    x = rng.permutation(N * Cc * H * W).reshape(N, Cc, H, W) / (N * Cc * H * W) + 0.05
    Wt = rng.standard_normal((2, Cc, KH, KW))
    b = rng.standard_normal(2)
    rtol, atol = (1e-6, 1e-7) if dtype == np.float64 else (2e-3, 2e-3)

    def check(fn, arrays):
        vs = [Variable(a.astype(dtype)) for a in arrays]
        with using_config("keep_dtype", True):     # grads in their variable's dtype
            y = fn(*vs)
            R = np.random.default_rng(20).standard_normal(y.shape)
            F.sum(y * R.astype(dtype)).backward()
        for i, v in enumerate(vs):
            def f(a, i=i):
                args = [Variable(c) for c in arrays]
                args[i] = Variable(a)
                with no_grad():
                    return fn(*args).data * R
            assert v.grad.dtype == dtype
            assert_allclose(v.grad.data, numerical_grad(f, arrays[i]), rtol=rtol, atol=atol)

    check(lambda x, W, b: C.conv2d(x, W, b, s, p), [x, Wt, b])
    check(lambda v: C.pooling(v, k, s, p), [x])
    check(lambda v: C.average_pooling(v, k, s, p), [x])
    check(lambda v: C.im2col(v, k, s, p), [x])
    # the transposed convolution back to (H, W), its filter (2, C, KH, KW)
    out = C.conv2d(x, Wt, None, s, p).shape
    xd = rng.standard_normal((N, 2) + out[2:])
    check(lambda v, Wd: C.deconv2d(v, Wd, None, s, p, outsize=(H, W)), [xd, Wt])
