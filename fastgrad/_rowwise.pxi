# Included by _ops.pyx: kernels along the rows of a 2-d float64 batch, where
# NumPy's per-row reductions cost far more than their arithmetic (a
# ``max(axis=1)`` over 300 rows of 3 classes loops 300 times in its iterator).
#
# Each performs NumPy's floating-point operations in NumPy's order, so the
# results are its bits: a row sum is NumPy's pairwise sum of the row added
# to the identity +0.0, a sum over axis 0 adds the rows to +0.0 one after
# another, exp and log are NumPy's own
# float64 loops, called on the same contiguous memory.  A probe at import
# compares them with the NumPy formulas of fastgrad._reference and turns them
# off if a NumPy release ever sums in another order.

cnp.import_ufunc()

ctypedef void (*_ufunc_loop)(char**, cnp.npy_intp*, cnp.npy_intp*, void*) noexcept nogil

# The row loops in C, where ``restrict`` tells the compiler the output and
# the input do not overlap (the callers make sure), so rows of 3 or 10 values
# vectorize without a run-time overlap check per row.
cdef extern from *:
    """
    static void fastgrad_sum_rows(double *restrict o, const double *restrict x,
                                  npy_intp n, npy_intp h) {
        for (npy_intp j = 0; j < h; j++) o[j] = 0.0 + x[j];
        for (npy_intp i = 1; i < n; i++) {
            const double *restrict r = x + i * h;
            for (npy_intp j = 0; j < h; j++) o[j] += r[j];
        }
    }
    static void fastgrad_add_rows(double *restrict y, const double *restrict b,
                                  npy_intp n, npy_intp h) {
        for (npy_intp i = 0; i < n; i++) {
            double *restrict r = y + i * h;
            for (npy_intp j = 0; j < h; j++) r[j] += b[j];
        }
    }
    """
    void fastgrad_sum_rows(double* o, const double* x, cnp.npy_intp n, cnp.npy_intp h) noexcept nogil
    void fastgrad_add_rows(double* y, const double* b, cnp.npy_intp n, cnp.npy_intp h) noexcept nogil

cdef _ufunc_loop _exp_loop = NULL
cdef _ufunc_loop _log_loop = NULL
cdef void* _exp_data = NULL
cdef void* _log_data = NULL
cdef bint _rowwise_on = False


cdef int _find_loop(cnp.ufunc uf, _ufunc_loop* loop, void** data) except -1:
    cdef int k
    for k in range(uf.ntypes):
        if uf.types[2 * k] == cnp.NPY_DOUBLE and uf.types[2 * k + 1] == cnp.NPY_DOUBLE:
            loop[0] = <_ufunc_loop>uf.functions[k]
            data[0] = uf.data[k]
            return 0
    raise ImportError(f"fastgrad: NumPy's {uf.__name__} has no float64 loop")


cdef inline void _apply(_ufunc_loop loop, void* data, double* a, cnp.npy_intp n) noexcept:
    """``np.ufunc(a, out=a)`` on ``n`` contiguous doubles."""
    cdef char* args[2]
    cdef cnp.npy_intp steps[2]
    args[0] = args[1] = <char*>a
    steps[0] = steps[1] = sizeof(double)
    loop(args, &n, steps, data)


cdef double _pairwise_sum(const double* a, cnp.npy_intp n) noexcept:
    """NumPy's float64 pairwise sum of ``n`` contiguous values."""
    cdef double r0, r1, r2, r3, r4, r5, r6, r7, res
    cdef cnp.npy_intp i, n2
    if n < 8:
        res = -0.0
        for i in range(n):
            res += a[i]
        return res
    if n <= 128:
        r0, r1, r2, r3 = a[0], a[1], a[2], a[3]
        r4, r5, r6, r7 = a[4], a[5], a[6], a[7]
        i = 8
        while i < n - n % 8:
            r0 += a[i]
            r1 += a[i + 1]
            r2 += a[i + 2]
            r3 += a[i + 3]
            r4 += a[i + 4]
            r5 += a[i + 5]
            r6 += a[i + 6]
            r7 += a[i + 7]
            i += 8
        res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        while i < n:
            res += a[i]
            i += 1
        return res
    n2 = n // 2
    n2 -= n2 % 8
    return _pairwise_sum(a, n2) + _pairwise_sum(a + n2, n - n2)


cdef inline double _numpy_sum(const double* a, cnp.npy_intp n) noexcept:
    """``np.sum`` of ``n`` contiguous values: +0.0 (the identity) + pairwise sum."""
    return 0.0 + _pairwise_sum(a, n)


cdef inline double _row_max(const double* row, cnp.npy_intp c) noexcept:
    """NumPy's maximum of a row: NaN if the row holds one."""
    cdef double m = row[0]
    cdef cnp.npy_intp j
    for j in range(1, c):
        if m == m and (row[j] > m or row[j] != row[j]):
            m = row[j]
    return m


cdef inline bint _is_batch(object x):
    """An exact, aligned, C-contiguous (N, C) float64 array, N and C >= 1."""
    return (_ftype(x) == cnp.NPY_DOUBLE and cnp.PyArray_NDIM(<cnp.ndarray>x) == 2
            and cnp.PyArray_SIZE(<cnp.ndarray>x) > 0)


cdef const cnp.npy_intp* _labels(object x, object t):
    """The labels as C integers, if ``t`` holds one in-range int64 label per row."""
    cdef cnp.ndarray a
    cdef cnp.npy_intp i, n, c
    cdef const cnp.npy_intp* p
    if not cnp.PyArray_CheckExact(t):
        return NULL
    a = <cnp.ndarray>t
    if not (cnp.PyArray_TYPE(a) == cnp.NPY_INTP and cnp.PyArray_IS_C_CONTIGUOUS(a)
            and cnp.PyArray_ISALIGNED(a) and cnp.PyArray_ISNOTSWAPPED(a)):
        return NULL
    n = cnp.PyArray_DIMS(<cnp.ndarray>x)[0]
    c = cnp.PyArray_DIMS(<cnp.ndarray>x)[1]
    if cnp.PyArray_SIZE(a) != n:
        return NULL
    p = <const cnp.npy_intp*>cnp.PyArray_DATA(a)
    for i in range(n):
        if p[i] < 0 or p[i] >= c:
            return NULL     # the reference raises the error that names it
    return p


cdef void _shifted_exp(const double* x, double* e, double* m,
                       cnp.npy_intp n, cnp.npy_intp c) noexcept:
    """``e = exp(x - x.max(axis=1, keepdims=True))``; the maxima go to ``m``."""
    cdef cnp.npy_intp i, j
    cdef double mi
    for i in range(n):
        mi = _row_max(x + i * c, c)
        m[i] = mi
        for j in range(c):
            e[i * c + j] = x[i * c + j] - mi
    _apply(_exp_loop, _exp_data, e, n * c)


def softmax_cross_entropy(x, t, keep_softmax=False):
    """Return ``-mean_i log softmax(x)[i, t[i]]`` as a 0-d array, and with
    ``keep_softmax`` the softmax it computed on the way (see
    :func:`fastgrad._reference.softmax_cross_entropy`)."""
    cdef const cnp.npy_intp* labels
    cdef cnp.npy_intp i, j, n, c
    cdef double* e
    cdef double* m
    cdef const double* xd
    cdef double total
    if not (_rowwise_on and _is_batch(x)):
        return _ref.softmax_cross_entropy(x, t, keep_softmax)
    labels = _labels(x, t)
    if labels == NULL:
        return _ref.softmax_cross_entropy(x, t, keep_softmax)
    n = cnp.PyArray_DIMS(<cnp.ndarray>x)[0]
    c = cnp.PyArray_DIMS(<cnp.ndarray>x)[1]
    xd = <const double*>cnp.PyArray_DATA(<cnp.ndarray>x)
    y = None
    if keep_softmax:
        y = cnp.PyArray_EMPTY(2, cnp.PyArray_DIMS(<cnp.ndarray>x), cnp.NPY_DOUBLE, 0)
        e = <double*>cnp.PyArray_DATA(<cnp.ndarray>y)
        m = <double*>malloc(2 * n * sizeof(double))
    else:
        m = <double*>malloc((n * c + 2 * n) * sizeof(double))
        e = m + 2 * n
    if m == NULL:
        raise MemoryError()
    cdef double* logp = m + n
    _shifted_exp(xd, e, m, n, c)
    for i in range(n):
        logp[i] = _numpy_sum(e + i * c, c)
    if keep_softmax:
        for i in range(n):
            for j in range(c):
                e[i * c + j] /= logp[i]
    _apply(_log_loop, _log_data, logp, n)
    for i in range(n):      # log_z = m + log(s);  log_p = x[i, t[i]] - log_z
        logp[i] = xd[i * c + labels[i]] - (m[i] + logp[i])
    total = _numpy_sum(logp, n)
    free(m)
    loss = np.asarray(-total / <double>n)
    return (loss, y) if keep_softmax else loss


def softmax(x, axis=1):
    """Return the softmax of ``x`` along ``axis`` (see
    :func:`fastgrad._reference.softmax`); compiled along the rows of a batch."""
    cdef cnp.npy_intp i, j, n, c
    cdef double s
    cdef double* o
    cdef double* m
    if not (_rowwise_on and _is_batch(x) and type(axis) is int and (axis == 1 or axis == -1)):
        return _ref.softmax(x, axis)
    n = cnp.PyArray_DIMS(<cnp.ndarray>x)[0]
    c = cnp.PyArray_DIMS(<cnp.ndarray>x)[1]
    out = cnp.PyArray_EMPTY(2, cnp.PyArray_DIMS(<cnp.ndarray>x), cnp.NPY_DOUBLE, 0)
    o = <double*>cnp.PyArray_DATA(<cnp.ndarray>out)
    m = <double*>malloc(n * sizeof(double))
    if m == NULL:
        raise MemoryError()
    _shifted_exp(<const double*>cnp.PyArray_DATA(<cnp.ndarray>x), o, m, n, c)
    free(m)
    for i in range(n):
        s = _numpy_sum(o + i * c, c)
        for j in range(c):
            o[i * c + j] /= s
    return out


def softmax_cross_entropy_backward(x, t, gy, y=None):
    """Return the gradient of :func:`softmax_cross_entropy` with respect to
    ``x``; ``y`` is ``softmax(x)`` if the forward kept it (see
    :func:`fastgrad._reference.softmax_cross_entropy_backward`)."""
    cdef const cnp.npy_intp* labels
    cdef cnp.npy_intp i, j, n, c
    cdef double g, s
    cdef double* o
    cdef double* m
    if not (_rowwise_on and _is_batch(x) and _ftype(gy) == cnp.NPY_DOUBLE
            and cnp.PyArray_NDIM(<cnp.ndarray>gy) == 0
            and (y is None or (_is_batch(y) and _same_shape(<cnp.ndarray>x, <cnp.ndarray>y)))):
        return _ref.softmax_cross_entropy_backward(x, t, gy, y)
    labels = _labels(x, t)
    if labels == NULL:
        return _ref.softmax_cross_entropy_backward(x, t, gy, y)
    n = cnp.PyArray_DIMS(<cnp.ndarray>x)[0]
    c = cnp.PyArray_DIMS(<cnp.ndarray>x)[1]
    g = (<const double*>cnp.PyArray_DATA(<cnp.ndarray>gy))[0] * (1.0 / <double>n)
    out = cnp.PyArray_EMPTY(2, cnp.PyArray_DIMS(<cnp.ndarray>x), cnp.NPY_DOUBLE, 0)
    o = <double*>cnp.PyArray_DATA(<cnp.ndarray>out)
    cdef const double* yd
    if y is not None:
        yd = <const double*>cnp.PyArray_DATA(<cnp.ndarray>y)
        for i in range(n):      # (softmax(x) - one_hot(t)) * (gy * (1 / N))
            for j in range(c):
                o[i * c + j] = (yd[i * c + j] - (1.0 if j == labels[i] else 0.0)) * g
        return out
    m = <double*>malloc(n * sizeof(double))
    if m == NULL:
        raise MemoryError()
    _shifted_exp(<const double*>cnp.PyArray_DATA(<cnp.ndarray>x), o, m, n, c)
    free(m)
    for i in range(n):
        s = _numpy_sum(o + i * c, c)
        for j in range(c):
            o[i * c + j] = (o[i * c + j] / s - (1.0 if j == labels[i] else 0.0)) * g
    return out


def sum_to(x, shape):
    """Return ``x`` summed down to ``shape`` (see :func:`fastgrad._reference.sum_to`).

    Compiled for the bias gradient of a linear layer: an (N, H) float64 batch,
    H >= 2, summed over its rows to (H,) or (1, H).
    """
    cdef cnp.npy_intp i, j, n, h
    cdef const double* xd
    cdef double* o
    if not (_rowwise_on and _is_batch(x) and type(shape) is tuple):
        return _ref.sum_to(x, shape)
    n = cnp.PyArray_DIMS(<cnp.ndarray>x)[0]
    h = cnp.PyArray_DIMS(<cnp.ndarray>x)[1]
    if h < 2 or not (shape == (h,) or shape == (1, h)):
        return _ref.sum_to(x, shape)
    out = np.empty(shape)
    o = <double*>cnp.PyArray_DATA(<cnp.ndarray>out)
    xd = <const double*>cnp.PyArray_DATA(<cnp.ndarray>x)
    fastgrad_sum_rows(o, xd, n, h)      # out is fresh: no overlap
    return out


def add_bias(y, b):
    """``y += b`` in place for a bias ``b`` that broadcasts along the rows of
    ``y``; returns ``y`` (see :func:`fastgrad._reference.add_bias`)."""
    cdef cnp.npy_intp i, j, n, h
    cdef double* o
    cdef const double* bd
    if not (_is_batch(y) and _ftype(b) == cnp.NPY_DOUBLE):
        return _ref.add_bias(y, b)
    n = cnp.PyArray_DIMS(<cnp.ndarray>y)[0]
    h = cnp.PyArray_DIMS(<cnp.ndarray>y)[1]
    if cnp.PyArray_SIZE(<cnp.ndarray>b) != h or not (
            cnp.PyArray_NDIM(<cnp.ndarray>b) == 1 or (
                cnp.PyArray_NDIM(<cnp.ndarray>b) == 2
                and cnp.PyArray_DIMS(<cnp.ndarray>b)[0] == 1)):
        return _ref.add_bias(y, b)
    o = <double*>cnp.PyArray_DATA(<cnp.ndarray>y)
    bd = <const double*>cnp.PyArray_DATA(<cnp.ndarray>b)
    if not cnp.PyArray_ISWRITEABLE(<cnp.ndarray>y) or (bd + h > o and bd < o + n * h):
        return _ref.add_bias(y, b)      # read-only, or b is a view into y
    fastgrad_add_rows(o, bd, n, h)
    return y


def _probe_rowwise():
    """True when the compiled row-wise kernels give the NumPy formulas' bits."""
    rng = np.random.default_rng(7)
    for n, c in ((1, 1), (5, 3), (37, 8), (300, 3), (130, 129)):
        x = rng.standard_normal((n, c)) * 10.0 ** rng.integers(-2, 3, (n, c))
        t = rng.integers(0, c, n).astype(np.intp)
        gy = np.asarray(rng.standard_normal())
        kept = softmax_cross_entropy(x, t, True)[1]
        pairs = ((softmax_cross_entropy(x, t), _ref.softmax_cross_entropy(x, t)),
                 (kept, _ref.softmax(x)),
                 (softmax_cross_entropy_backward(x, t, gy),
                  _ref.softmax_cross_entropy_backward(x, t, gy)),
                 (softmax(x), _ref.softmax(x)),
                 (sum_to(x, (c,)), _ref.sum_to(x, (c,))))
        for got, want in pairs:
            if got.dtype != want.dtype or got.shape != want.shape or got.tobytes() != want.tobytes():
                return False
    return True


_find_loop(np.exp, &_exp_loop, &_exp_data)
_find_loop(np.log, &_log_loop, &_log_data)
_rowwise_on = True
with np.errstate(all="ignore"):
    _rowwise_on = _probe_rowwise()


def _rowwise_info():
    """Whether the row-wise kernels passed their import probe (else NumPy runs)."""
    return bool(_rowwise_on)
