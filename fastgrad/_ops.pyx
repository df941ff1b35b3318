"""Compiled kernels for fastgrad: elementwise forward ops and fused backward,
and the row-wise kernels of softmax, its cross entropy and ``sum_to``.

Every function has the signature and semantics of its twin in
:mod:`fastgrad._reference` (the plain NumPy expression): same result dtype
(NEP 50 promotion; a Python scalar ``c`` is weak), same broadcast shape, same
errors, always an ndarray (0-d in gives 0-d out, never a NumPy scalar).

The compiled path takes exact, aligned, native-order, C-contiguous float32 or
float64 arrays of one dtype, either of the same shape or one of them 0-d (the
engine's ``x * 2.0`` constant).  Everything else (other dtypes, mixed dtypes,
strided or swapped arrays, subclasses, real broadcasting) goes to NumPy
unchanged.  So do ops with nothing to fuse on fewer than 2**17 elements
(add/sub/mul/div/neg, mul backward, ``x**2``, ``x**-1``) and ``x**0.5`` and
general exponents forward, where NumPy's own SIMD loops are as fast or faster.

Accuracy
--------
add, sub, mul, div, neg and the mul, div and neg backward perform the same
IEEE operations in the same order as NumPy, so they are exact (bound: 1 ulp).
pow and pow_backward are within 4 ulp of NumPy: integer exponents -3..4 use
repeated multiplication (a guarded single reciprocal for negatives),
half-integers -1.5..3.5 use sqrt, float32 powers are computed in double and
rounded once, other exponents call pow().  NaN, inf and signed-zero results
are NumPy's.  The 4-ulp bound was measured (millions of samples), not proven,
and assumes the power itself is a normal number: where it is subnormal, both
sides have absolute, not relative, error and c * gy can magnify the
difference.

Notes
-----
The compiled path raises no floating-point warnings (``np.errstate`` has no
effect on it).  Loops can be split across two OpenMP threads above a size
threshold (``_set_par_min``), but that is off by default: it lost on the
shared 2-core machine it was measured on.  Large results come from a small
bounded cache of buffers (see :func:`buffer_cache_info`) so that they are not
page-faulted in afresh on every call.
"""
cimport numpy as cnp
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt, sqrtf, fabs, powf
from libc.math cimport pow as c_pow
from libc.stdint cimport uintptr_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcmp

import numpy as np

from fastgrad import _reference as _ref
from fastgrad._alloc cimport alloc_array

cnp.import_array()

__all__ = [
    "add", "sub", "mul", "div", "neg", "pow",
    "mul_backward", "div_backward", "pow_backward", "neg_backward",
    "ones_like", "copy", "stream_triad",
    "softmax", "softmax_cross_entropy",
    "softmax_cross_entropy_backward", "sum_to", "add_bias",
]

# Loops over at least this many elements run on two OpenMP threads.  Off by
# default (2**62): on the shared 2-core target the second thread is usually
# not scheduled promptly and fwd+bwd came out 1.1-10x *slower* with the split
# at 2**17 (medians, interleaved runs, 10^6 and 10^7 elements).
# _set_par_min(1 << 17) turns it on where a core is really free.
cdef Py_ssize_t _PAR_MIN = 1 << 62

cdef enum:
    ADD, SUB, MUL, DIV
cdef enum:
    P_GEN, P_ZERO, P_SQRT, P_INT, P_HALF

cdef object _result_type = np.result_type
cdef double _FLT_MAX = 3.4028234663852886e38
# Below this many elements, an op with nothing to fuse (add, mul forward,
# x ** 2, ...) goes to NumPy's operator: its runtime-dispatched AVX2 loops
# beat these baseline-ISA loops on cache-resident data, and only the threads
# and the buffer cache make a difference above it.
cdef Py_ssize_t _NUMPY_MAX = 1 << 17


cdef inline object _arr(object r):
    """NumPy gives a scalar for 0-d operands; the contract is an ndarray."""
    return r if cnp.PyArray_CheckExact(r) else np.asarray(r)


# ---------------------------------------------------------------------------
# Scalar helpers
# ---------------------------------------------------------------------------

cdef inline floating _sqrt(floating x) noexcept nogil:
    if floating is float:
        return sqrtf(x)
    else:
        return sqrt(x)


cdef inline floating _cpow(floating x, floating e) noexcept nogil:
    if floating is float:
        return powf(x, e)
    else:
        return c_pow(x, e)


cdef inline double _ipos(double x, int n) noexcept nogil:
    """x ** n for 0 <= n <= 4 by repeated multiplication."""
    cdef double t
    if n == 0:
        return 1
    elif n == 1:
        return x
    elif n == 2:
        return x * x
    elif n == 3:
        return x * x * x
    t = x * x
    return t * t


cdef inline double _recip(double t, double x, int m) noexcept nogil:
    """1 / t where t = x ** m (times sqrt(x) for half-integers).

    One division keeps the error near 1 ulp; but where t overflowed or went
    subnormal the true reciprocal may still be finite/nonzero, so take
    (1 / x) ** m there (also right for 0, inf and nan).
    """
    # Both sides computed, then selected: the loop stays branch-free and
    # vectorizes (a branch around a division would not be if-converted).
    cdef double a = 1 / t
    cdef double b = _ipos(1 / x, m)
    return a if 2.2250738585072014e-308 <= fabs(t) <= 1.7976931348623157e308 else b


cdef inline double _powi_d(double x, int n) noexcept nogil:
    """x ** n for -4 <= n <= 4, n != 0."""
    if n > 0:
        return _ipos(x, n)
    return _recip(_ipos(x, -n), x, -n)


cdef inline double _powh_d(double x, int k) noexcept nogil:
    """x ** (k + 0.5), right for x > 0 only (see _HALF_FIX), -4 <= k <= 3."""
    cdef double s = sqrt(x)
    cdef double t, a, b
    if k >= 0:
        return _ipos(x, k) * s
    t = _ipos(x, -k - 1) * s
    a = 1 / t
    b = _ipos(1 / x, -k - 1) * (1 / s)
    return a if 2.2250738585072014e-308 <= t <= 1.7976931348623157e308 else b


cdef inline floating _powi(floating x, int n) noexcept nogil:
    # float32 is computed in double and rounded once: then it is correctly
    # rounded but for rare near-ties, i.e. it matches NumPy's powf.
    if floating is float:
        return <float>_powi_d(<double>x, n)
    else:
        return _powi_d(x, n)


cdef inline floating _powh(floating x, int k) noexcept nogil:
    """x ** (k + 0.5) for x > 0; other x are patched by _half_block."""
    if floating is float:
        return <float>_powh_d(<double>x, k)
    else:
        return _powh_d(x, k)


cdef enum:
    _HALF_BLOCK = 256


cdef inline Py_ssize_t _half_block(const floating[::1] x, floating* buf, Py_ssize_t b0,
                                   Py_ssize_t hi, int k, floating e) noexcept nogil:
    """buf[j] = x[b0 + j] ** (k + 0.5) for one block; returns its length.

    The first pass is branch-free (vectorizes); the second patches x <= 0,
    -inf and nan with pow(), which has the C99 special cases NumPy gives
    (sqrt alone gets -0 and -inf wrong).  Such x are rare, so the branch
    predicts well.
    """
    cdef Py_ssize_t j, m = hi - b0
    if m > _HALF_BLOCK:
        m = _HALF_BLOCK
    # One loop per k: with k a constant the helper folds and the loop vectorizes.
    if k == 1:
        for j in range(m):
            buf[j] = _powh(x[b0 + j], 1)
    elif k == 2:
        for j in range(m):
            buf[j] = _powh(x[b0 + j], 2)
    elif k == -1:
        for j in range(m):
            buf[j] = _powh(x[b0 + j], -1)
    elif k == -2:
        for j in range(m):
            buf[j] = _powh(x[b0 + j], -2)
    else:
        for j in range(m):
            buf[j] = _powh(x[b0 + j], k)
    for j in range(m):
        if not x[b0 + j] > 0:
            buf[j] = _cpow(x[b0 + j], e)
    return m


# ---------------------------------------------------------------------------
# Validation (with the GIL, before any loop)
# ---------------------------------------------------------------------------

cdef inline int _ftype(object a):
    """NPY_FLOAT or NPY_DOUBLE if ``a`` can go to a kernel, else -1."""
    cdef cnp.ndarray arr
    cdef int t
    if not cnp.PyArray_CheckExact(a):
        return -1
    arr = <cnp.ndarray>a
    t = cnp.PyArray_TYPE(arr)
    if ((t == cnp.NPY_DOUBLE or t == cnp.NPY_FLOAT)
            and cnp.PyArray_IS_C_CONTIGUOUS(arr) and cnp.PyArray_ISALIGNED(arr)
            and cnp.PyArray_ISNOTSWAPPED(arr)):
        return t
    return -1


cdef inline bint _same_shape(cnp.ndarray a, cnp.ndarray b) noexcept:
    cdef int nd = cnp.PyArray_NDIM(a)
    return nd == cnp.PyArray_NDIM(b) and (
        nd == 0 or memcmp(cnp.PyArray_DIMS(a), cnp.PyArray_DIMS(b),
                          nd * sizeof(cnp.npy_intp)) == 0)


cdef inline bint _is0d(object a) noexcept:
    return cnp.PyArray_NDIM(<cnp.ndarray>a) == 0


cdef inline object _flat(object a):
    """1-d view of a C-contiguous array (for a ``T[::1]`` memoryview)."""
    if cnp.PyArray_NDIM(<cnp.ndarray>a) == 1:
        return a
    return cnp.PyArray_Ravel(<cnp.ndarray>a, cnp.NPY_CORDER)


cdef inline bint _disjoint_or_same(cnp.ndarray o, cnp.ndarray a) noexcept:
    """True if writing ``o`` elementwise cannot clobber an unread element of ``a``."""
    cdef char* po = <char*>cnp.PyArray_DATA(o)
    cdef char* pa = <char*>cnp.PyArray_DATA(a)
    if po == pa:
        # Same start, same shape and dtype (validated): index i aliases index
        # i, and every loop reads all inputs at i before writing i.  A 0-d
        # input is read once before the loop.
        return True
    return po + cnp.PyArray_NBYTES(o) <= pa or pa + cnp.PyArray_NBYTES(a) <= po


cdef inline bint _out_ok(object out, int t, cnp.ndarray like,
                         object a, object b, object c) noexcept:
    """``out`` can hold the result shaped like ``like`` without touching inputs."""
    cdef cnp.ndarray o
    if out is None or _ftype(out) != t:
        return False
    o = <cnp.ndarray>out
    if not cnp.PyArray_ISWRITEABLE(o) or not _same_shape(o, like):
        return False
    return (_disjoint_or_same(o, <cnp.ndarray>a)
            and (b is None or _disjoint_or_same(o, <cnp.ndarray>b))
            and (c is None or _disjoint_or_same(o, <cnp.ndarray>c)))


cdef inline object _empty(cnp.ndarray like):
    return alloc_array(cnp.PyArray_NDIM(like), cnp.PyArray_DIMS(like),
                       cnp.PyArray_TYPE(like))


cdef bint _exponent(object c, int t, double* value):
    """Read a scalar exponent whose promotion with dtype ``t`` keeps ``t``.

    A Python int/float is weak (NEP 50) and is cast to the array's dtype; a
    NumPy scalar or 0-d array is strong and must not widen the result.
    """
    cdef type tc = type(c)
    cdef double v
    cdef long long iv
    if tc is float:
        v = c
    elif tc is int:
        try:
            iv = c                  # C conversion: cheaper than comparing ints
        except OverflowError:
            return False
        if not -(1 << 24) <= iv <= (1 << 24):   # beyond float32's exact integers
            return False
        v = <double>iv
    elif (isinstance(c, (np.floating, np.integer))
          or (cnp.PyArray_CheckExact(c) and _is0d(c))):
        if c.dtype.kind not in "fiu":
            return False
        if _result_type(c.dtype, cnp.PyArray_DescrFromType(t)).num != t:
            return False
        v = float(c)
        if c.dtype.kind != "f" and fabs(v) > (1 << 24):
            return False
    else:
        return False
    if t == cnp.NPY_FLOAT:
        if fabs(v) > _FLT_MAX and fabs(v) != float("inf"):
            return False   # NumPy's overflow handling for the cast: leave to it
        v = <float>v
    value[0] = v
    return True


cdef int _plan(double e, int* n) noexcept:
    """How to compute x ** e: mode P_*, with n the integer part where used.

    The special-cased range is where the float64 error stays within 4 ulp
    of NumPy for pow and pow_backward (measured): integers -3..4 and
    half-integers -1.5..3.5.  Other exponents call pow().
    """
    cdef double h
    n[0] = 0
    if e == 0:
        return P_ZERO
    if e == 0.5:
        return P_SQRT
    if -3 <= e <= 4 and e == <int>e:
        n[0] = <int>e
        return P_INT
    h = e - 0.5
    if -2 <= h <= 3 and h == <int>h:
        n[0] = <int>h
        return P_HALF
    return P_GEN


def _set_par_min(Py_ssize_t n):
    """Set the two-thread threshold (elements); returns the old one.  For benchmarks."""
    global _PAR_MIN
    old = _PAR_MIN
    _PAR_MIN = max(n, 32)   # each half needs at least one aligned block
    return old


# ---------------------------------------------------------------------------
# Kernels: serial loops over [lo, hi), run by a driver that splits large
# arrays in two halves across threads.  mode: 0 all operands full, bit 0 set:
# x1 (second operand) is a 1-element (0-d) view, bit 1 set: x0 is.  Every
# memoryview was built from an array validated with the GIL held.
# ---------------------------------------------------------------------------

cdef inline Py_ssize_t _bound(Py_ssize_t n, int part) noexcept nogil:
    """Start of ``part`` (0, 1; 2 = end) when n is split in two; cache-line aligned."""
    if part == 0:
        return 0
    if part == 1:
        return (n // 2) & ~(<Py_ssize_t>15)
    return n


cdef void _binary_loop(int op, int mode, const floating[::1] a, const floating[::1] b,
                       floating[::1] o, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating s = 0
    if mode == 1:
        s = b[0]
    elif mode == 2:
        s = a[0]
    if op == ADD:
        if mode == 0:
            for i in range(lo, hi):
                o[i] = a[i] + b[i]
        elif mode == 1:
            for i in range(lo, hi):
                o[i] = a[i] + s
        else:
            for i in range(lo, hi):
                o[i] = s + b[i]
    elif op == SUB:
        if mode == 0:
            for i in range(lo, hi):
                o[i] = a[i] - b[i]
        elif mode == 1:
            for i in range(lo, hi):
                o[i] = a[i] - s
        else:
            for i in range(lo, hi):
                o[i] = s - b[i]
    elif op == MUL:
        if mode == 0:
            for i in range(lo, hi):
                o[i] = a[i] * b[i]
        elif mode == 1:
            for i in range(lo, hi):
                o[i] = a[i] * s
        else:
            for i in range(lo, hi):
                o[i] = s * b[i]
    else:
        if mode == 0:
            for i in range(lo, hi):
                o[i] = a[i] / b[i]
        elif mode == 1:
            # Not a[i] * (1 / s): NumPy divides, and so must we (rounding).
            for i in range(lo, hi):
                o[i] = a[i] / s
        else:
            for i in range(lo, hi):
                o[i] = s / b[i]


cdef void _binary_run(int op, int mode, const floating[::1] a, const floating[::1] b,
                      floating[::1] o) noexcept:
    cdef Py_ssize_t n = o.shape[0]
    cdef int part
    with nogil:
        if n < _PAR_MIN:
            _binary_loop(op, mode, a, b, o, 0, n)
        else:
            for part in prange(2, num_threads=2, schedule="static"):
                _binary_loop(op, mode, a, b, o, _bound(n, part), _bound(n, part + 1))


cdef void _neg_loop(const floating[::1] a, floating[::1] o,
                    Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(lo, hi):
        o[i] = -a[i]


cdef void _neg_run(const floating[::1] a, floating[::1] o) noexcept:
    cdef Py_ssize_t n = o.shape[0]
    cdef int part
    with nogil:
        if n < _PAR_MIN:
            _neg_loop(a, o, 0, n)
        else:
            for part in prange(2, num_threads=2, schedule="static"):
                _neg_loop(a, o, _bound(n, part), _bound(n, part + 1))


cdef void _mul_backward_loop(int mode, const floating[::1] g, const floating[::1] x0,
                             const floating[::1] x1, floating[::1] o0, floating[::1] o1,
                             Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    """o0 = g * x1, o1 = g * x0 in one pass."""
    cdef Py_ssize_t i
    cdef floating gi, p, q
    # Every input element is read into a local before the outputs are
    # written: o0 may be g itself (the engine's ``out=gy``).
    if mode == 0:
        for i in range(lo, hi):
            gi = g[i]
            p = x0[i]
            q = x1[i]
            o0[i] = gi * q
            o1[i] = gi * p
    elif mode == 1:
        q = x1[0]
        for i in range(lo, hi):
            gi = g[i]
            p = x0[i]
            o0[i] = gi * q
            o1[i] = gi * p
    elif mode == 2:
        p = x0[0]
        for i in range(lo, hi):
            gi = g[i]
            q = x1[i]
            o0[i] = gi * q
            o1[i] = gi * p
    else:
        p = x0[0]
        q = x1[0]
        for i in range(lo, hi):
            gi = g[i]
            o0[i] = gi * q
            o1[i] = gi * p


cdef void _mul_backward_run(int mode, const floating[::1] g, const floating[::1] x0,
                            const floating[::1] x1, floating[::1] o0,
                            floating[::1] o1) noexcept:
    cdef Py_ssize_t n = g.shape[0]
    cdef int part
    with nogil:
        if n < _PAR_MIN:
            _mul_backward_loop(mode, g, x0, x1, o0, o1, 0, n)
        else:
            for part in prange(2, num_threads=2, schedule="static"):
                _mul_backward_loop(mode, g, x0, x1, o0, o1,
                                   _bound(n, part), _bound(n, part + 1))


cdef void _div_backward_loop(int mode, const floating[::1] g, const floating[::1] x0,
                             const floating[::1] x1, floating[::1] o0, floating[::1] o1,
                             Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    """o0 = g / x1, o1 = g * (-x0 / (x1 * x1)) in one pass, NumPy's operation order."""
    cdef Py_ssize_t i
    cdef floating gi, p, q, qq
    if mode == 0:
        for i in range(lo, hi):
            gi = g[i]
            p = x0[i]
            q = x1[i]
            o0[i] = gi / q
            o1[i] = gi * (-p / (q * q))
    elif mode == 1:
        q = x1[0]
        qq = q * q
        for i in range(lo, hi):
            gi = g[i]
            p = x0[i]
            o0[i] = gi / q
            o1[i] = gi * (-p / qq)
    elif mode == 2:
        p = -x0[0]
        for i in range(lo, hi):
            gi = g[i]
            q = x1[i]
            o0[i] = gi / q
            o1[i] = gi * (p / (q * q))
    else:
        q = x1[0]
        qq = q * q
        p = -x0[0]
        for i in range(lo, hi):
            gi = g[i]
            o0[i] = gi / q
            o1[i] = gi * (p / qq)


cdef void _div_backward_run(int mode, const floating[::1] g, const floating[::1] x0,
                            const floating[::1] x1, floating[::1] o0,
                            floating[::1] o1) noexcept:
    cdef Py_ssize_t n = g.shape[0]
    cdef int part
    with nogil:
        if n < _PAR_MIN:
            _div_backward_loop(mode, g, x0, x1, o0, o1, 0, n)
        else:
            for part in prange(2, num_threads=2, schedule="static"):
                _div_backward_loop(mode, g, x0, x1, o0, o1,
                                   _bound(n, part), _bound(n, part + 1))


cdef void _pow_loop(const floating[::1] x, floating[::1] o, int mode, int k, floating e,
                    Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    """o = x ** e; one loop per common mode so those vectorize."""
    cdef Py_ssize_t i, j, b0, m
    cdef floating buf[_HALF_BLOCK]
    if mode == P_INT:
        if k == 1:
            for i in range(lo, hi):
                o[i] = x[i]
        elif k == 2:
            for i in range(lo, hi):
                o[i] = x[i] * x[i]
        else:
            # constant exponents so the helper folds and the loop vectorizes
            if k == 3:
                for i in range(lo, hi):
                    o[i] = _powi(x[i], 3)
            elif k == -2:
                for i in range(lo, hi):
                    o[i] = _powi(x[i], -2)
            elif k == -1:
                for i in range(lo, hi):
                    o[i] = _powi(x[i], -1)
            else:
                for i in range(lo, hi):
                    o[i] = _powi(x[i], k)
    elif mode == P_SQRT:
        for i in range(lo, hi):
            o[i] = _sqrt(x[i])
    elif mode == P_ZERO:
        for i in range(lo, hi):
            o[i] = 1
    elif mode == P_HALF:
        b0 = lo
        while b0 < hi:
            m = _half_block(x, buf, b0, hi, k, e)
            for j in range(m):
                o[b0 + j] = buf[j]
            b0 += m
    else:
        for i in range(lo, hi):
            o[i] = _cpow(x[i], e)


cdef void _pow_run(const floating[::1] x, floating[::1] o, int mode, int k,
                   floating e) noexcept:
    cdef Py_ssize_t n = o.shape[0]
    cdef int part
    with nogil:
        if n < _PAR_MIN:
            _pow_loop(x, o, mode, k, e, 0, n)
        else:
            for part in prange(2, num_threads=2, schedule="static"):
                _pow_loop(x, o, mode, k, e, _bound(n, part), _bound(n, part + 1))


cdef void _pow_backward_loop(const floating[::1] g, const floating[::1] x, floating[::1] o,
                             floating c, int mode, int k, floating e,
                             Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    """o = (c * x ** e) * g with e = c - 1, in NumPy's operation order."""
    cdef Py_ssize_t i, j, b0, m
    cdef floating buf[_HALF_BLOCK]
    cdef floating xi
    if mode == P_INT:
        if k == 1:
            for i in range(lo, hi):
                o[i] = (c * x[i]) * g[i]
        elif k == 2:
            for i in range(lo, hi):
                xi = x[i]
                o[i] = (c * (xi * xi)) * g[i]
        else:
            if k == 3:
                for i in range(lo, hi):
                    o[i] = (c * _powi(x[i], 3)) * g[i]
            elif k == -1:
                for i in range(lo, hi):
                    o[i] = (c * _powi(x[i], -1)) * g[i]
            elif k == -2:
                for i in range(lo, hi):
                    o[i] = (c * _powi(x[i], -2)) * g[i]
            else:
                for i in range(lo, hi):
                    o[i] = (c * _powi(x[i], k)) * g[i]
    elif mode == P_ZERO:
        for i in range(lo, hi):
            o[i] = (c * 1) * g[i]
    elif mode == P_SQRT:
        for i in range(lo, hi):
            o[i] = (c * _sqrt(x[i])) * g[i]
    elif mode == P_HALF:
        b0 = lo
        while b0 < hi:
            m = _half_block(x, buf, b0, hi, k, e)
            for j in range(m):
                o[b0 + j] = (c * buf[j]) * g[b0 + j]
            b0 += m
    else:
        for i in range(lo, hi):
            o[i] = (c * _cpow(x[i], e)) * g[i]


cdef void _pow_backward_run(const floating[::1] g, const floating[::1] x, floating[::1] o,
                            floating c, int mode, int k, floating e) noexcept:
    cdef Py_ssize_t n = o.shape[0]
    cdef int part
    with nogil:
        if n < _PAR_MIN:
            _pow_backward_loop(g, x, o, c, mode, k, e, 0, n)
        else:
            for part in prange(2, num_threads=2, schedule="static"):
                _pow_backward_loop(g, x, o, c, mode, k, e,
                                   _bound(n, part), _bound(n, part + 1))


# ---------------------------------------------------------------------------
# Public functions
# ---------------------------------------------------------------------------

cdef void _binary_exec(int t, object x0, object x1, object out, int op, int mode):
    # Memoryview temporaries live here, not in the callers: their setup costs
    # ~100 ns per call, which the small-array (NumPy) paths must not pay.
    if t == cnp.NPY_DOUBLE:
        _binary_run[double](op, mode, _flat(x0), _flat(x1), _flat(out))
    else:
        _binary_run[float](op, mode, _flat(x0), _flat(x1), _flat(out))


cdef void _neg_exec(int t, object x, object out):
    # Memoryview temporaries live here, not in the callers: their setup costs
    # ~100 ns per call, which the small-array (NumPy) paths must not pay.
    if t == cnp.NPY_DOUBLE:
        _neg_run[double](_flat(x), _flat(out))
    else:
        _neg_run[float](_flat(x), _flat(out))


cdef void _mul_backward_exec(int t, object gy, object x0, object x1, object out, object o1, int mode):
    # Memoryview temporaries live here, not in the callers: their setup costs
    # ~100 ns per call, which the small-array (NumPy) paths must not pay.
    if t == cnp.NPY_DOUBLE:
        _mul_backward_run[double](mode, _flat(gy), _flat(x0), _flat(x1), _flat(out), _flat(o1))
    else:
        _mul_backward_run[float](mode, _flat(gy), _flat(x0), _flat(x1), _flat(out), _flat(o1))


cdef void _div_backward_exec(int t, object gy, object x0, object x1, object out, object o1, int mode):
    # Memoryview temporaries live here, not in the callers: their setup costs
    # ~100 ns per call, which the small-array (NumPy) paths must not pay.
    if t == cnp.NPY_DOUBLE:
        _div_backward_run[double](mode, _flat(gy), _flat(x0), _flat(x1), _flat(out), _flat(o1))
    else:
        _div_backward_run[float](mode, _flat(gy), _flat(x0), _flat(x1), _flat(out), _flat(o1))


cdef void _pow_exec(int t, object x, object out, int mode, int k, double e):
    # Memoryview temporaries live here, not in the callers: their setup costs
    # ~100 ns per call, which the small-array (NumPy) paths must not pay.
    if t == cnp.NPY_DOUBLE:
        _pow_run[double](_flat(x), _flat(out), mode, k, e)
    else:
        _pow_run[float](_flat(x), _flat(out), mode, k, <float>e)


cdef void _pow_backward_exec(int t, object gy, object x, object out, double cv, int mode, int k, double e):
    # Memoryview temporaries live here, not in the callers: their setup costs
    # ~100 ns per call, which the small-array (NumPy) paths must not pay.
    if t == cnp.NPY_DOUBLE:
        _pow_backward_run[double](_flat(gy), _flat(x), _flat(out), cv, mode, k, e)
    else:
        _pow_backward_run[float](_flat(gy), _flat(x), _flat(out), <float>cv, mode, k, <float>e)


cdef object _binary(int op, object x0, object x1):
    cdef int t = _ftype(x0)
    cdef int mode
    cdef object like, out
    if t < 0 or _ftype(x1) != t:
        return None
    if _same_shape(<cnp.ndarray>x0, <cnp.ndarray>x1):
        mode = 0
        like = x0
    elif _is0d(x1):
        mode = 1
        like = x0
    elif _is0d(x0):
        mode = 2
        like = x1
    else:
        return None
    if cnp.PyArray_SIZE(<cnp.ndarray>like) < _NUMPY_MAX:
        return None
    out = _empty(<cnp.ndarray>like)
    _binary_exec(t, x0, x1, out, op, mode)
    return out


def add(x0, x1):
    """Return ``x0 + x1`` as an ndarray (see :func:`fastgrad._reference.add`)."""
    r = _binary(ADD, x0, x1)
    return _arr(x0 + x1) if r is None else r


def sub(x0, x1):
    """Return ``x0 - x1`` as an ndarray."""
    r = _binary(SUB, x0, x1)
    return _arr(x0 - x1) if r is None else r


def mul(x0, x1):
    """Return ``x0 * x1`` as an ndarray."""
    r = _binary(MUL, x0, x1)
    return _arr(x0 * x1) if r is None else r


def div(x0, x1):
    """Return ``x0 / x1`` as an ndarray."""
    r = _binary(DIV, x0, x1)
    return _arr(x0 / x1) if r is None else r


def neg(x):
    """Return ``-x`` as an ndarray."""
    cdef int t = _ftype(x)
    if t < 0 or cnp.PyArray_SIZE(<cnp.ndarray>x) < _NUMPY_MAX:
        return _arr(-x)
    out = _empty(<cnp.ndarray>x)
    _neg_exec(t, x, out)
    return out


def ones_like(a):
    """Return ``np.ones_like(a)``; a large float result takes a cached buffer.

    The engine seeds backward with it: a fresh array from the cache is not
    faulted in page by page as NumPy's freshly mapped memory is.
    """
    cdef int t = _ftype(a)
    if t < 0 or cnp.PyArray_SIZE(<cnp.ndarray>a) < _NUMPY_MAX:
        return np.ones_like(a)
    out = _empty(<cnp.ndarray>a)
    out.fill(1)
    return out


def copy(a):
    """Return a C-contiguous copy of ``a``; a large float one takes a cached buffer.

    The engine copies a gradient it must not share (``Add`` gives ``gy`` to
    both inputs, which must not alias).
    """
    cdef int t = _ftype(a)
    if t < 0 or cnp.PyArray_SIZE(<cnp.ndarray>a) < _NUMPY_MAX:
        return np.array(a)
    out = _empty(<cnp.ndarray>a)
    cnp.PyArray_CopyInto(<cnp.ndarray>out, <cnp.ndarray>a)
    return out


def neg_backward(gy, out=None):
    """Return ``-gy``, written into ``out`` when it fits."""
    cdef int t = _ftype(gy)
    if t < 0 or cnp.PyArray_SIZE(<cnp.ndarray>gy) < _NUMPY_MAX:
        return _arr(-gy)
    if not _out_ok(out, t, <cnp.ndarray>gy, gy, None, None):
        out = _empty(<cnp.ndarray>gy)
    _neg_exec(t, gy, out)
    return out


cdef int _backward_mode(object gy, object x0, object x1, int t):
    """Operand layout for the two-input backward kernels, or -1 for NumPy."""
    cdef int mode = 0
    if t < 0 or _ftype(x0) != t or _ftype(x1) != t:
        return -1
    if not _same_shape(<cnp.ndarray>gy, <cnp.ndarray>x0):
        if not _is0d(x0):
            return -1
        mode |= 2
    if not _same_shape(<cnp.ndarray>gy, <cnp.ndarray>x1):
        if not _is0d(x1):
            return -1
        mode |= 1
    return mode


def mul_backward(gy, x0, x1, out=None):
    """Return ``(gy * x1, gy * x0)`` computed in one pass.

    The first gradient is written into ``out`` when it fits (same shape and
    dtype, C-contiguous, writeable, no partial overlap with an input).
    """
    cdef int t = _ftype(gy)
    cdef int mode = _backward_mode(gy, x0, x1, t)
    if mode < 0 or cnp.PyArray_SIZE(<cnp.ndarray>gy) < _NUMPY_MAX:
        return _arr(gy * x1), _arr(gy * x0)
    if not _out_ok(out, t, <cnp.ndarray>gy, gy, x0, x1):
        out = _empty(<cnp.ndarray>gy)
    o1 = _empty(<cnp.ndarray>gy)
    _mul_backward_exec(t, gy, x0, x1, out, o1, mode)
    return out, o1


def div_backward(gy, x0, x1, out=None):
    """Return ``(gy / x1, gy * (-x0 / x1 ** 2))`` computed in one pass.

    The first gradient is written into ``out`` when it fits.
    """
    cdef int t = _ftype(gy)
    cdef int mode = _backward_mode(gy, x0, x1, t)
    if mode < 0:
        return _ref.div_backward(gy, x0, x1)
    if not _out_ok(out, t, <cnp.ndarray>gy, gy, x0, x1):
        out = _empty(<cnp.ndarray>gy)
    o1 = _empty(<cnp.ndarray>gy)
    _div_backward_exec(t, gy, x0, x1, out, o1, mode)
    return out, o1


def pow(x, c):
    """Return ``x ** c`` as an ndarray (``c`` kept as given, NEP 50).

    Integer exponents up to 4 in magnitude use repeated multiplication,
    half-integers sqrt; other exponents call ``pow``.
    """
    cdef int t = _ftype(x)
    cdef double e
    cdef int mode, k
    if t < 0 or not _exponent(c, t, &e):
        return _ref.pow(x, c)
    mode = _plan(e, &k)
    if mode == P_GEN or mode == P_SQRT or (
            mode == P_INT and (k == 1 or k == 2 or k == -1)
            and cnp.PyArray_SIZE(<cnp.ndarray>x) < _NUMPY_MAX):
        # General exponents: a scalar pow() loop gains nothing over NumPy's
        # (SIMD for float32); sqrt: NumPy's AVX2 sqrt beats our SSE2 one
        # (measured 1.7 vs 5.7 ms at 10^6).  Square and reciprocal: NumPy's
        # fast paths win on small arrays.
        return _arr(x ** c)
    out = _empty(<cnp.ndarray>x)
    _pow_exec(t, x, out, mode, k, e)
    return out


def pow_backward(gy, x, c, out=None):
    """Return ``c * x ** (c - 1) * gy`` computed in one pass.

    ``c - 1`` is evaluated exactly as the NumPy expression does (Python or
    NumPy scalar arithmetic), then the power is special-cased as in
    :func:`pow`.  Written into ``out`` when it fits.
    """
    cdef int t = _ftype(gy)
    cdef double cv, e
    cdef int mode, k
    if (t < 0 or _ftype(x) != t or not _same_shape(<cnp.ndarray>gy, <cnp.ndarray>x)
            or not _exponent(c, t, &cv)):
        return _ref.pow_backward(gy, x, c)
    cm1 = c - 1
    if not _exponent(cm1, t, &e):
        return _ref.pow_backward(gy, x, c)
    mode = _plan(e, &k)
    if mode == P_GEN and t == cnp.NPY_FLOAT:
        return _ref.pow_backward(gy, x, c)   # NumPy's SIMD powf beats a scalar loop
    if not _out_ok(out, t, <cnp.ndarray>gy, gy, x, None):
        out = _empty(<cnp.ndarray>gy)
    _pow_backward_exec(t, gy, x, out, cv, mode, k, e)
    return out


# ---------------------------------------------------------------------------
# STREAM probe
# ---------------------------------------------------------------------------

cdef void _triad_loop(double[::1] a, const double[::1] b, const double[::1] c,
                      double scalar, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(lo, hi):
        a[i] = b[i] + scalar * c[i]


def stream_triad(double[::1] a not None, const double[::1] b not None,
                 const double[::1] c not None, double scalar, int nthreads=1):
    """STREAM triad ``a[:] = b + scalar * c`` on ``nthreads`` (1 or 2) threads.

    For measuring the memory-bandwidth ceiling; all three arrays must be 1-d
    contiguous float64 of one length.
    """
    cdef Py_ssize_t n = a.shape[0]
    cdef int part
    if b.shape[0] != n or c.shape[0] != n:
        raise ValueError("stream_triad: arrays must have the same length")
    if nthreads not in (1, 2):
        raise ValueError("stream_triad: nthreads must be 1 or 2")
    with nogil:
        if nthreads == 1:
            _triad_loop(a, b, c, scalar, 0, n)
        else:
            for part in prange(2, num_threads=2, schedule="static"):
                _triad_loop(a, b, c, scalar, _bound(n, part), _bound(n, part + 1))


# The row-wise kernels (softmax, its cross entropy, the bias gradient).
include "_ufunc_loops.pxi"
include "_rowwise.pxi"
