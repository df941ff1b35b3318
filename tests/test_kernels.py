"""fastgrad._ops against fastgrad._reference, and the reference against NumPy.

Grid: every function x dtype (float32/float64 compiled; int64, bool, complex
through the fallback) x shape (0-d, empty, 1-d, 2-d, threaded size) x layout
(contiguous, strided, transposed, reversed, read-only, Fortran, broadcast
row/column, 0-d scalar operand) x exponent, with special values mixed in.
"""
import numpy as np
import pytest

from fastgrad import _alloc as A
from fastgrad import _ops as O
from fastgrad import _reference as R

ULP = {"arith": 1, "pow": 4}   # the bounds documented in fastgrad._ops

FLOATS = [np.float32, np.float64]
FALLBACK = [np.int64, np.bool_, np.complex128]
BIG = (1 << 17) + 5            # above the thread split and the NumPy cut-over
SHAPES = [(), (0,), (7,), (3, 5), (0, 4), (BIG,), (300, 450)]
LAYOUTS = ["c", "strided", "transposed", "reversed", "readonly", "fortran"]
EXPONENTS = [2, 3, -1, -2, 0.5, 1.5, 2.5, 0, 1, -0.5]
SPECIALS = [np.nan, np.inf, -np.inf, -0.0, 0.0]


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def _values(shape, dtype, rng, positive=False, specials=True):
    return np.asarray(_raw_values(shape, dtype, rng, positive, specials))


def _raw_values(shape, dtype, rng, positive, specials):
    n = int(np.prod(shape))
    if dtype == np.bool_:
        return rng.random(n).reshape(shape) < 0.5
    if np.issubdtype(dtype, np.integer):
        return rng.integers(1 if positive else -5, 6, n).reshape(shape).astype(dtype)
    v = rng.standard_normal(n) + 0.1
    if positive:
        v = np.abs(v) + 0.05
    if np.issubdtype(dtype, np.complexfloating):
        v = v + 1j * rng.standard_normal(n)
    v = v.astype(dtype)
    if specials and n >= 2 * len(SPECIALS) and np.issubdtype(dtype, np.floating):
        idx = rng.choice(n, len(SPECIALS), replace=False)
        v[idx] = SPECIALS
    return v.reshape(shape)


def make(shape, dtype, layout="c", seed=0, **kw):
    """An array of ``shape`` and ``dtype`` in the given memory layout."""
    rng = np.random.default_rng(seed)
    if layout == "c":
        return _values(shape, dtype, rng, **kw)
    if layout == "strided":
        big = _values(shape[:-1] + (2 * shape[-1],) if shape else (2,), dtype, rng, **kw)
        return big[..., ::2] if shape else big[0:1].reshape(())
    if layout == "transposed":
        return _values(shape[::-1], dtype, rng, **kw).T
    if layout == "reversed":
        a = _values(shape, dtype, rng, **kw)
        return a[::-1] if shape else a
    if layout == "readonly":
        a = _values(shape, dtype, rng, **kw)
        a.flags.writeable = False
        return a
    if layout == "fortran":
        return np.asfortranarray(_values(shape, dtype, rng, **kw))
    raise ValueError(layout)


def snapshot(*arrays):
    return [(a.dtype, a.shape, np.ascontiguousarray(a).tobytes()) if isinstance(a, np.ndarray)
            else a for a in arrays]


def assert_close(got, want, ulp):
    """Same type, dtype, shape; NaN positions and zero signs equal; values within ulp."""
    assert type(got) is np.ndarray, type(got)
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    assert got.shape == want.shape, (got.shape, want.shape)
    if not np.issubdtype(want.dtype, np.floating):
        np.testing.assert_array_equal(got, want)
        return
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan)
    zero = want == 0
    np.testing.assert_array_equal(np.signbit(got[zero]), np.signbit(want[zero]))
    np.testing.assert_array_max_ulp(got[~nan], want[~nan], maxulp=ulp)


def check(name, args, ulp, out=None):
    """Run _ops and _reference on ``args``; compare; check inputs untouched."""
    before = snapshot(*args)
    with np.errstate(all="ignore"):
        want = getattr(R, name)(*args)
        kw = {} if out is None else {"out": out}
        got = getattr(O, name)(*args, **kw)
    if out is None:
        assert snapshot(*args) == before, "an input was modified"
    if isinstance(want, tuple):
        assert isinstance(got, tuple) and len(got) == len(want)
        for g, w in zip(got, want):
            assert_close(g, w, ulp)
    else:
        assert_close(got, want, ulp)
    return got


# ---------------------------------------------------------------------------
# reference == plain NumPy expression
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", FLOATS + FALLBACK)
@pytest.mark.parametrize("shape", [(), (4,), (2, 3)])
def test_reference_matches_numpy(dtype, shape):
    x0 = make(shape, dtype, seed=1, positive=True)
    x1 = make(shape, dtype, seed=2, positive=True)
    gy = make(shape, dtype, seed=3)
    with np.errstate(all="ignore"):
        exact = [
            (R.add(x0, x1), x0 + x1), (R.sub(x0, x1), x0 - x1) if dtype != np.bool_ else None,
            (R.mul(x0, x1), x0 * x1), (R.div(x0, x1), x0 / x1),
            (R.pow(x0, 2), x0 ** 2),
            (R.mul_backward(gy, x0, x1)[0], gy * x1), (R.mul_backward(gy, x0, x1)[1], gy * x0),
        ]
        if dtype != np.bool_:
            exact += [(R.neg(x0), -x0), (R.neg_backward(gy), -gy),
                      (R.pow_backward(gy, x0, 3), 3 * x0 ** 2 * gy),
                      (R.div_backward(gy, x0, x1)[1], gy * (-x0 / x1 ** 2))]
    for pair in exact:
        if pair is None:
            continue
        got, want = pair
        assert type(got) is np.ndarray
        np.testing.assert_array_equal(got, np.asarray(want))
        assert got.dtype == np.asarray(want).dtype


# ---------------------------------------------------------------------------
# forward ops
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["add", "sub", "mul", "div"])
@pytest.mark.parametrize("dtype", FLOATS + FALLBACK)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_binary_same_shape(name, dtype, shape, layout):
    if dtype == np.bool_ and name == "sub":
        pytest.skip("NumPy has no bool subtract (checked in test_errors_match)")
    if shape in [(BIG,), (300, 450)] and (dtype in FALLBACK or layout not in ("c", "readonly", "reversed")):
        pytest.skip("large sizes only for the compiled layouts")
    x0 = make(shape, dtype, layout, seed=1)
    x1 = make(shape, dtype, layout, seed=2, positive=name == "div")
    check(name, (x0, x1), ULP["arith"])


@pytest.mark.parametrize("name", ["add", "sub", "mul", "div"])
@pytest.mark.parametrize("dtype", FLOATS + [np.int64, np.complex128])
@pytest.mark.parametrize("shape", [(7,), (3, 5), (0,), (BIG,), (300, 450)])
@pytest.mark.parametrize("which", ["scalar1", "scalar0", "row", "col", "mixed_dtype"])
def test_binary_broadcast(name, dtype, shape, which):
    x0 = make(shape, dtype, seed=1)
    if which == "scalar1":
        x1 = np.asarray(2.5 if dtype != np.int64 else 3, dtype)
    elif which == "scalar0":
        x0, x1 = np.asarray(-1.5 if dtype != np.int64 else 3, dtype), x0
    elif which == "row":
        x1 = make(shape[-1:], dtype, seed=2, positive=True)
    elif which == "col":
        if len(shape) < 2:
            pytest.skip("column broadcast needs 2-d")
        x1 = make(shape[:1] + (1,), dtype, seed=2, positive=True)
    else:
        x1 = make(shape, np.float32 if dtype != np.float32 else np.float64, seed=2)
    check(name, (x0, x1), ULP["arith"])


@pytest.mark.parametrize("dtype", FLOATS + [np.int64, np.complex128])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_neg(dtype, shape, layout):
    check("neg", (make(shape, dtype, layout),), ULP["arith"])


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", [(), (0,), (64,), (BIG,), (300, 450)])
@pytest.mark.parametrize("c", EXPONENTS + [0.3, 4, 3.5, -1.5, -3])
@pytest.mark.parametrize("layout", ["c", "reversed", "readonly"])
def test_pow(dtype, shape, c, layout):
    x = make(shape, dtype, layout, seed=4)
    check("pow", (x, c), ULP["pow"])


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("c", EXPONENTS)
@pytest.mark.parametrize("ctype", [np.float32, np.float64, np.int64, "0d32", "0d64"])
def test_pow_strong_exponent(dtype, c, ctype):
    """NumPy scalars and 0-d arrays are strong (NEP 50): they may widen the result."""
    if ctype == np.int64 and c != int(c):
        pytest.skip("not an integer")
    cc = np.asarray(c, {"0d32": np.float32, "0d64": np.float64}[ctype]) \
        if isinstance(ctype, str) else ctype(c)
    x = make((50,), dtype, seed=5)
    gy = make((50,), dtype, seed=6)
    check("pow", (x, cc), ULP["pow"])
    check("pow_backward", (gy, x, cc), ULP["pow"])


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("c", EXPONENTS + [0.3, 4, 3.5, -1.5, -3])
def test_pow_special_values(dtype, c):
    x = np.array(SPECIALS + [1.0, -1.0, 2.0, -2.0, 1e-30, 1e30], dtype)
    gy = np.ones_like(x)
    check("pow", (x, c), ULP["pow"])
    check("pow_backward", (gy, x, c), ULP["pow"])
    big = np.resize(x, BIG)
    check("pow", (big, c), ULP["pow"])
    check("pow_backward", (np.resize(gy, BIG), big, c), ULP["pow"])


@pytest.mark.parametrize("dtype", [np.int64, np.bool_, np.complex128])
@pytest.mark.parametrize("c", [2, 3, 0, 1, 0.5, 2.5])
def test_pow_fallback_dtypes(dtype, c):
    x = make((9,), dtype, seed=7, positive=True)
    check("pow", (x, c), ULP["pow"])
    if dtype != np.bool_ and not (dtype == np.int64 and c == 0):   # int ** -1 raises
        check("pow_backward", (make((9,), dtype, seed=8), x, c), ULP["pow"])


# ---------------------------------------------------------------------------
# backward ops
# ---------------------------------------------------------------------------

def _operands(shape, dtype, which, layout):
    """(gy, x0, x1) for a two-input backward with the given operand layout."""
    x0 = make(shape, dtype, layout, seed=1)
    x1 = make(shape, dtype, layout, seed=2, positive=True)
    if which == "scalar1":
        x1 = np.asarray(2.5, dtype)
    elif which == "scalar0":
        x0 = np.asarray(-1.5, dtype)
    elif which == "row":
        x1 = make(shape[-1:], dtype, seed=2, positive=True)
    elif which == "col":
        x1 = make(shape[:1] + (1,), dtype, seed=2, positive=True)
    with np.errstate(all="ignore"):
        gshape = np.broadcast_shapes(x0.shape, x1.shape)
    gy = make(gshape, dtype, layout, seed=3)
    return gy, x0, x1


@pytest.mark.parametrize("name", ["mul_backward", "div_backward"])
@pytest.mark.parametrize("dtype", FLOATS + FALLBACK)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("which", ["same", "scalar1", "scalar0"])
def test_two_input_backward(name, dtype, shape, layout, which):
    if shape in [(BIG,), (300, 450)] and (dtype in FALLBACK or layout not in ("c", "readonly")):
        pytest.skip("large sizes only for the compiled layouts")
    if dtype == np.bool_ and name == "div_backward":
        pytest.skip("NumPy has no bool negative (checked in test_errors_match)")
    check(name, _operands(shape, dtype, which, layout), ULP["arith"])


@pytest.mark.parametrize("name", ["mul_backward", "div_backward"])
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("which", ["row", "col"])
def test_two_input_backward_broadcast(name, dtype, which):
    check(name, _operands((40, 30), dtype, which, "c"), ULP["arith"])


@pytest.mark.parametrize("dtype", FLOATS + [np.int64, np.complex128])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("layout", ["c", "strided", "transposed", "readonly"])
@pytest.mark.parametrize("c", EXPONENTS)
def test_pow_backward(dtype, shape, layout, c):
    if shape in [(BIG,), (300, 450)] and (dtype not in FLOATS or layout != "c"):
        pytest.skip("large sizes only for the compiled layouts")
    if np.issubdtype(dtype, np.integer) and c in (-1, -2, 0, 0.5, -0.5, 1.5, 2.5):
        pytest.skip("int exponents < 0 raise: test_errors_match")
    gy = make(shape, dtype, layout, seed=3)
    x = make(shape, dtype, layout, seed=4, positive=True)
    check("pow_backward", (gy, x, c), ULP["pow"])


@pytest.mark.parametrize("dtype", FLOATS + [np.int64, np.complex128])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_neg_backward(dtype, shape, layout):
    check("neg_backward", (make(shape, dtype, layout),), ULP["arith"])


# ---------------------------------------------------------------------------
# out=
# ---------------------------------------------------------------------------

CASES = {
    "mul_backward": lambda g, x0, x1: (g, x0, x1),
    "div_backward": lambda g, x0, x1: (g, x0, x1),
    "pow_backward": lambda g, x0, x1: (g, x0, 2.5),
    "neg_backward": lambda g, x0, x1: (g,),
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("dtype", FLOATS + [np.int64])
@pytest.mark.parametrize("shape", [(), (7,), (3, 5), (BIG,)])
@pytest.mark.parametrize("kind", ["gy", "fresh", "wrong_dtype", "wrong_shape",
                                  "readonly", "strided", "overlap"])
def test_out(name, dtype, shape, kind):
    """``out`` is honoured or safely ignored; no other input is ever written."""
    g = make(shape, dtype, seed=3)
    x0 = make(shape, dtype, seed=1, positive=True)
    x1 = make(shape, dtype, seed=2, positive=True)
    args = CASES[name](g.copy(), x0, x1)
    with np.errstate(all="ignore"):
        want = getattr(R, name)(*args)
    n = int(np.prod(shape))
    if kind == "gy":
        out = args[0]                      # the engine's typical choice
    elif kind == "fresh":
        out = np.empty(shape, dtype)
    elif kind == "wrong_dtype":
        out = np.empty(shape, np.float32 if dtype != np.float32 else np.float64)
    elif kind == "wrong_shape":
        out = np.empty((n + 1,), dtype)
    elif kind == "readonly":
        out = np.zeros(shape, dtype)
        out.flags.writeable = False
    elif kind == "strided":
        out = np.empty(shape + (2,), dtype)[..., 0]
    else:                                  # overlaps gy at an offset: must not be used
        if n < 2:
            pytest.skip("needs two elements")
        buf = np.empty(n + 1, dtype)
        buf[1:] = args[0].ravel()
        args = (buf[1:].reshape(shape),) + args[1:]
        out = buf[:-1].reshape(shape)
    protected = args if kind != "gy" else args[1:]
    before = snapshot(*[a for a in protected if isinstance(a, np.ndarray)])
    before_out = snapshot(out) if kind in ("readonly", "wrong_dtype", "wrong_shape") else None
    with np.errstate(all="ignore"):
        got = getattr(O, name)(*args, out=out)
    first = got[0] if isinstance(got, tuple) else got
    wants = want if isinstance(want, tuple) else (want,)
    gots = got if isinstance(got, tuple) else (got,)
    ulp = ULP["pow"] if name == "pow_backward" else ULP["arith"]
    for g_, w_ in zip(gots, wants):
        assert_close(g_, w_, ulp)
    if kind != "overlap":
        assert snapshot(*[a for a in protected if isinstance(a, np.ndarray)]) == before
    if before_out is not None:
        assert snapshot(out) == before_out
        assert first is not out
    if kind == "overlap":
        assert first is not out
    if kind in ("gy", "fresh") and dtype in FLOATS and n >= BIG:
        assert first is out   # the compiled path honours a fitting out
    if isinstance(got, tuple):
        assert got[1] is not out and got[1] is not got[0]


# ---------------------------------------------------------------------------
# errors and odd inputs
# ---------------------------------------------------------------------------

def _raises_same(fn, *args):
    with np.errstate(all="ignore"):
        try:
            getattr(R, fn)(*args)
        except Exception as e:   # noqa: BLE001 - any exception type must match
            with pytest.raises(type(e)):
                getattr(O, fn)(*args)
            return
    pytest.fail("reference did not raise")


@pytest.mark.parametrize("dtype", FLOATS + [np.int64])
def test_errors_match(dtype):
    a = make((3,), dtype, seed=1)
    b = make((4,), dtype, seed=2, positive=True)
    for fn in ["add", "sub", "mul", "div"]:
        _raises_same(fn, a, b)
    _raises_same("mul_backward", make((3,), dtype), a, b)
    _raises_same("div_backward", make((3,), dtype), a, b)
    _raises_same("pow_backward", make((4,), dtype), a, 2)
    if dtype == np.int64:
        _raises_same("pow", a, -1)
        _raises_same("pow", a, -2)
        _raises_same("pow_backward", a, a, 0)   # x ** -1 on ints
    _raises_same("sub", np.ones(3, bool), np.ones(3, bool))
    _raises_same("neg", np.ones(3, bool))


def test_swapped_and_subclass_fall_back():
    x = np.arange(1.0, 6.0).astype(">f8")
    check("add", (x, x), ULP["arith"])
    check("pow", (x, 3), ULP["pow"])
    check("mul_backward", (x, x, x), ULP["arith"])
    m = np.arange(1.0, 5.0).reshape(2, 2).view(np.matrix)
    with np.errstate(all="ignore"):
        assert type(O.mul(m, m)) is type(R.mul(m, m)) is np.ndarray


def test_results_are_arrays_for_0d():
    for dt in FLOATS:
        a = np.asarray(1.5, dt)
        for got in [O.add(a, a), O.mul(a, a), O.div(a, a), O.neg(a), O.pow(a, 2.5),
                    O.pow(a, 2), *O.mul_backward(a, a, a), *O.div_backward(a, a, a),
                    O.pow_backward(a, a, 3), O.neg_backward(a)]:
            assert type(got) is np.ndarray and got.shape == () and got.dtype == dt


def test_weak_python_scalar_keeps_float32():
    x = make((10,), np.float32, positive=True)
    assert O.pow(x, 2.5).dtype == np.float32
    assert O.pow_backward(x, x, 2.5).dtype == np.float32
    assert O.pow(x, np.float64(2.5)).dtype == np.float64


# ---------------------------------------------------------------------------
# buffer cache and the STREAM probe
# ---------------------------------------------------------------------------

def test_buffer_cache_bounded_and_tracked():
    import tracemalloc
    info = A.buffer_cache_info()
    assert info["max_entries"] <= 64
    x = make((BIG * 2,), np.float64, specials=False)
    tracemalloc.start()
    try:
        y = O.add(x, x)
        traced = tracemalloc.get_tracemalloc_memory()   # smoke: tracing works
        assert traced >= 0
        snap = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.DomainFilter(True, np.lib.tracemalloc_domain)])
        assert sum(s.size for s in snap.statistics("filename")) >= y.nbytes
        del y
        snap = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.DomainFilter(True, np.lib.tracemalloc_domain)])
        assert sum(s.size for s in snap.statistics("filename")) < x.nbytes
    finally:
        tracemalloc.stop()
    for _ in range(20):
        ys = [O.mul(x, x) for _ in range(6)]
        del ys
    info = A.buffer_cache_info()
    assert info["entries"] <= info["max_entries"] and info["bytes"] <= info["max_bytes"]
    A.clear_buffer_cache()
    assert A.buffer_cache_info()["entries"] == 0
    A.set_buffer_cache(max_entries=0)
    try:
        y = O.add(x, x)
        assert A.buffer_cache_info()["entries"] == 0
        np.testing.assert_array_equal(y, x + x)
    finally:
        A.set_buffer_cache(max_entries=info["max_entries"])


def test_cached_buffers_are_reused_correctly():
    x = make((BIG,), np.float64, specials=False)
    a = O.mul(x, x)
    ptr = a.ctypes.data
    del a
    b = O.add(x, x)           # likely the same block: must hold the new values
    np.testing.assert_array_equal(b, x + x)
    assert b.flags.writeable and b.flags.c_contiguous
    assert isinstance(ptr, int)


@pytest.mark.parametrize("nthreads", [1, 2])
@pytest.mark.parametrize("n", [0, 1, 1000, BIG])
def test_stream_triad(nthreads, n):
    b = np.arange(n, dtype=np.float64)
    c = np.ones(n)
    a = np.empty(n)
    O.stream_triad(a, b, c, 3.0, nthreads)
    np.testing.assert_array_equal(a, b + 3.0 * c)
    with pytest.raises(ValueError):
        O.stream_triad(a, b, np.ones(n + 1), 3.0, nthreads)
    with pytest.raises(ValueError):
        O.stream_triad(a, b, c, 3.0, 3)


@pytest.mark.parametrize("dtype", FLOATS)
def test_threaded_split(dtype):
    """The two-thread split (off by default) gives the same results."""
    old = O._set_par_min(1 << 10)
    try:
        for shape in [(BIG,), (1 << 10,), ((1 << 10) + 17,)]:
            x0 = make(shape, dtype, seed=1)
            x1 = make(shape, dtype, seed=2, positive=True)
            gy = make(shape, dtype, seed=3)
            s = np.asarray(1.25, dtype)
            for name in ["add", "sub", "mul", "div"]:
                check(name, (x0, x1), ULP["arith"])
                check(name, (x0, s), ULP["arith"])
                check(name, (s, x1), ULP["arith"])
            check("neg", (x0,), ULP["arith"])
            check("neg_backward", (gy,), ULP["arith"])
            for which in ["same", "scalar0", "scalar1"]:
                args = _operands(shape, dtype, which, "c")
                check("mul_backward", args, ULP["arith"])
                check("div_backward", args, ULP["arith"])
            for c in EXPONENTS + [0.3, 4]:
                check("pow", (x1, c), ULP["pow"])
                check("pow_backward", (gy, x1, c), ULP["pow"])
    finally:
        O._set_par_min(old)
