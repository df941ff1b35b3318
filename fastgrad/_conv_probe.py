"""Import-time probe of ``fastgrad._conv``: its pooling kernels against the
installed NumPy's reduction rules (ties of signed zeros, NaN payloads, the
order of a mean's sum).  Should a NumPy release change a rule, the kernel
concerned declines and NumPy's formula runs."""
import numpy as np


def _numpy_col(x, kh, kw, sh, sw, ph, pw):
    """DeZero's im2col (N, C, KH, KW, OH, OW) in plain NumPy slicing."""
    N, C, H, W = x.shape
    OH = (H + 2 * ph - kh) // sh + 1
    OW = (W + 2 * pw - kw) // sw + 1
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph + sh - 1), (pw, pw + sw - 1)))
    col = np.empty((N, C, kh, kw, OH, OW), dtype=x.dtype)
    for j in range(kh):
        for i in range(kw):
            col[:, :, j, i] = xp[:, :, j:j + sh * OH:sh, i:i + sw * OW:sw]
    return col


def _probe_inputs():
    """Windows that tell the rules apart: ties of +0.0 and -0.0 in both
    orders, NaNs with distinct payloads in every position, values whose sum
    depends on the order; OH*OW from 2 to past a SIMD width."""
    rng = np.random.default_rng(20)
    nan1 = np.array(0x7ff8000000000011, np.uint64).view(np.float64)
    nan2 = np.array(0xfff8000000000022, np.uint64).view(np.float64)
    pool = np.array([0.0, -0.0, 1.0, -1.0, nan1, nan2, 1e16, -1e16, 3.0, 0.1, np.inf])
    cases = []
    for shape, k, s, p in (((2, 3, 4, 2), 2, (2, 1), 0), ((1, 2, 9, 12), 3, 1, 1),
                           ((1, 1, 6, 40), (2, 3), (1, 2), (0, 1))):
        for dtype in (np.float64, np.float32):
            x = rng.choice(pool, size=shape).astype(dtype)
            cases.append((x, k, s, p))
    return cases


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _same_bits(a, b, nan_payloads=True):
    """Equal bit for bit (zeros' signs too); NaN payloads only if asked: a
    sum of two NaNs keeps one of them, and which one is up to the compiler
    (it may swap the operands of an addition)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if not nan_payloads:
        nan = np.isnan(a)
        if not np.array_equal(nan, np.isnan(b)):
            return False
        a, b = np.where(nan, 0, a), np.where(nan, 0, b)
    return np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()


def probe(max_pool, avg_pool):
    """(max_ok, avg_ok): whether the kernels ``max_pool`` and ``avg_pool``
    give this NumPy's bits on windows that tell reduction rules apart."""
    max_ok = avg_ok = True
    for x, k, s, p in _probe_inputs():
        (kh, kw), (sh, sw), (ph, pw) = _pair(k), _pair(s), _pair(p)
        col = _numpy_col(x, kh, kw, sh, sw, ph, pw)
        N, C, KH, KW, OH, OW = col.shape
        flat = col.reshape(N, C, KH * KW, OH, OW)
        got = max_pool(x, kh, kw, sh, sw, ph, pw)
        max_ok = max_ok and got is not None and _same_bits(got[0], flat.max(axis=2)) \
            and _same_bits(got[1], flat.argmax(axis=2))
        avg = avg_pool(x, kh, kw, sh, sw, ph, pw)
        avg_ok = avg_ok and avg is not None and _same_bits(avg, col.mean(axis=(2, 3)),
                                                          nan_payloads=False)
    return max_ok, avg_ok
