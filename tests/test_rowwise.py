"""The row-wise kernels of fastgrad._ops against their NumPy formulas in
fastgrad._reference: the same bits (NaNs compared as NaNs), the same dtype
and shape, the same errors, and inputs left untouched.

Compiled: (N, C) float32 or float64, C-contiguous and aligned, int64 labels.
Everything else (other layouts, other label dtypes, mixed dtypes, empty
batches) goes to the reference, which the grid checks too.
"""
import numpy as np
import pytest

from fastgrad import _ops as O
from fastgrad import _reference as R
from fastgrad._core import PURE

SHAPES = [(1, 1), (1, 5), (5, 1), (5, 3), (300, 3), (300, 10), (64, 129), (9, 300)]
LAYOUTS = ["c", "strided", "transposed", "readonly", "fortran"]


def make(shape, dtype=np.float64, layout="c", seed=0, scale=True):
    rng = np.random.default_rng(seed)

    def values(s):
        v = rng.standard_normal(s)
        if scale:
            v *= 10.0 ** rng.integers(-3, 3, s)
        return v.astype(dtype)
    if layout == "c":
        return values(shape)
    if layout == "strided":
        return values(shape[:-1] + (2 * shape[-1],))[..., ::2]
    if layout == "transposed":
        return values(shape[::-1]).T
    if layout == "readonly":
        a = values(shape)
        a.flags.writeable = False
        return a
    if layout == "fortran":
        return np.asfortranarray(values(shape))
    raise ValueError(layout)


def labels(n, c, seed=1, dtype=np.intp):
    return np.random.default_rng(seed).integers(0, c, n).astype(dtype)


def same_bits(got, want):
    assert type(got) is np.ndarray, type(got)
    assert got.dtype == want.dtype and got.shape == want.shape, (got.dtype, got.shape,
                                                                  want.dtype, want.shape)
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan)
    assert got[~nan].tobytes() == want[~nan].tobytes()


def check(name, *args):
    before = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
    with np.errstate(all="ignore"):
        want = getattr(R, name)(*args)
        got = getattr(O, name)(*args)
    if isinstance(want, tuple):
        assert isinstance(got, tuple) and len(got) == len(want)
        for g, w in zip(got, want):
            same_bits(g, w)
    else:
        same_bits(got, want)
    for a, b in zip(args, before):
        if isinstance(a, np.ndarray):
            assert a.tobytes() == b.tobytes(), "an input was modified"
    return got


@pytest.mark.skipif(PURE, reason="FASTGRAD_PURE=1: no compiled kernels")
def test_kernels_passed_their_probe():
    # Off means NumPy's order of summation changed: the kernels would still be
    # correct (the reference runs), but no longer fast.
    assert O._rowwise_info()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_softmax_cross_entropy(dtype, shape, layout):
    x = make(shape, dtype, layout)
    t = labels(shape[0], shape[1])
    check("softmax_cross_entropy", x, t)
    _, y = check("softmax_cross_entropy", x, t, True)
    gy = np.asarray(0.37, dtype)
    g = check("softmax_cross_entropy_backward", x, t, gy)
    # The softmax the forward kept gives the recomputed gradient's bits.
    same_bits(check("softmax_cross_entropy_backward", x, t, gy, y), g)
    check("softmax", x)
    check("softmax", x, -1)


@pytest.mark.parametrize("tdtype", [np.int64, np.int32, np.uint8, np.int16])
@pytest.mark.parametrize("tshape", ["flat", "column", "strided"])
def test_label_layouts(tdtype, tshape):
    x = make((40, 7))
    t = labels(40, 7, dtype=tdtype)
    if tshape == "column":
        t = t.reshape(40, 1)
    elif tshape == "strided":
        t = np.repeat(t, 2)[::2]
    check("softmax_cross_entropy", x, t)
    check("softmax_cross_entropy_backward", x, t, np.asarray(1.5))


@pytest.mark.parametrize("special", [np.nan, np.inf, -np.inf, -0.0, 1e308, -1e308])
def test_special_values(special):
    x = make((30, 4))
    x[3, 1] = special
    x[7, :] = special       # a whole row of it
    x[11, 0] = x[11, 3] = special
    t = labels(30, 4)
    check("softmax_cross_entropy", x, t)
    check("softmax_cross_entropy_backward", x, t, np.asarray(2.0))
    check("softmax", x)


def test_kept_softmax_of_another_layout_or_dtype():
    x, t = make((6, 4)), labels(6, 4)
    gy = np.asarray(0.5)
    for y in (R.softmax(x).astype(np.float32), np.asfortranarray(R.softmax(x)),
              R.softmax(x)[:, :3]):
        try:
            want = R.softmax_cross_entropy_backward(x, t, gy, y)
        except ValueError:
            with pytest.raises(ValueError):
                O.softmax_cross_entropy_backward(x, t, gy, y)
            continue
        same_bits(O.softmax_cross_entropy_backward(x, t, gy, y), want)


def test_gradient_scalars():
    x, t = make((12, 5)), labels(12, 5)
    for gy in (np.asarray(0.0), np.asarray(-3.25), np.asarray(np.inf), np.float64(2.0),
               np.asarray(1.0, np.float32), 2.0):
        check("softmax_cross_entropy_backward", x, t, gy)


def test_backward_agrees_with_the_forward():
    x, t = make((20, 4), scale=False), labels(20, 4)
    g = O.softmax_cross_entropy_backward(x, t, np.asarray(1.0))
    eps = 1e-6
    for i, j in [(0, 0), (3, 2), (19, 3)]:
        d = np.zeros_like(x)
        d[i, j] = eps
        num = (O.softmax_cross_entropy(x + d, t) - O.softmax_cross_entropy(x - d, t)) / (2 * eps)
        assert abs(num - g[i, j]) < 1e-8


@pytest.mark.parametrize("bad, err, msg", [
    (lambda: (make((4, 3)), np.array([0, 1, 3, 0])), ValueError, "out of range"),
    (lambda: (make((4, 3)), np.array([0, -1, 2, 0])), ValueError, "out of range"),
    (lambda: (make((4, 3)), np.array([0, 1, 2])), ValueError, "3 labels"),
    (lambda: (make((4, 3)), np.array([0.0, 1, 2, 0])), TypeError, "integer"),
    (lambda: (make((12,)), np.arange(12) % 3), ValueError, "2-d"),
    (lambda: (np.zeros((2, 0)), np.array([0, 0])), ValueError, "out of range"),
])
def test_errors_match(bad, err, msg):
    x, t = bad()
    for mod in (O, R):
        with pytest.raises(err, match=msg):
            mod.softmax_cross_entropy(x, t)


def test_empty_batch():
    x, t = np.zeros((0, 3)), np.zeros(0, np.intp)
    with np.errstate(all="ignore"):
        same_bits(O.softmax_cross_entropy(x, t), R.softmax_cross_entropy(x, t))
    for mod in (O, R):      # DeZero's gy * (1 / N)
        with pytest.raises(ZeroDivisionError):
            mod.softmax_cross_entropy_backward(x, t, np.asarray(1.0))
    same_bits(O.softmax(x), R.softmax(x))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape, to", [
    ((300, 10), (10,)), ((300, 10), (1, 10)), ((1, 7), (7,)), ((1000, 2), (2,)),
    ((5, 1), (1,)), ((5, 1), (1, 1)), ((300, 10), ()), ((300, 10), (300, 1)),
    ((300, 10), (300, 10)), ((4, 5, 6), (6,)), ((4, 5, 6), (5, 1)), ((7,), ()),
])
def test_sum_to(dtype, layout, shape, to):
    x = make(shape, dtype, layout if len(shape) > 1 else "c")
    check("sum_to", x, to)


def test_sum_to_special_values():
    x = make((50, 6))
    x[3, 1], x[4, 2], x[5, 3], x[6, 4] = np.nan, np.inf, -np.inf, -0.0
    x[:, 5] = -0.0
    check("sum_to", x, (6,))
    for shape in [(3, 4), (3, 9), (3, 200)]:
        z = np.full(shape, -0.0)
        check("softmax", z)
        check("sum_to", z, (shape[1],))


@pytest.mark.parametrize("ydtype, bdtype", [(np.float64, np.float64), (np.float32, np.float32),
                                            (np.float64, np.float32)])
@pytest.mark.parametrize("bshape", ["row", "matrix_row", "scalar", "full"])
@pytest.mark.parametrize("layout", ["c", "strided", "fortran"])
def test_add_bias(ydtype, bdtype, bshape, layout):
    y = make((30, 8), ydtype, layout)
    b = {"row": make((8,), bdtype, seed=2), "matrix_row": make((1, 8), bdtype, seed=2),
         "scalar": make((), bdtype, seed=2), "full": make((30, 8), bdtype, seed=2)}[bshape]
    want = R.add_bias(y.copy(), b)
    got_in = y.copy() if layout == "c" else y
    got = O.add_bias(got_in, b)
    assert got is got_in        # in place
    same_bits(got, want)


def test_add_bias_read_only_raises():
    y = make((4, 3), layout="readonly")
    for mod in (O, R):
        with pytest.raises(ValueError, match="read-only"):
            mod.add_bias(y, np.ones(3))


def test_add_bias_of_a_row_of_itself():
    # b overlaps y: NumPy's buffered semantics, not a kernel reading what it wrote.
    y = make((5, 4))
    want = R.add_bias(y.copy(), y.copy()[2])
    same_bits(O.add_bias(y, y[2]), want)
