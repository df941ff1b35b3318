# Included by _core.pyx: the math of the C scalar path (0-d float64).
#
# Every function here returns exactly what NumPy returns for the same 0-d
# float64 operand, so the scalar path and the array path agree bit for bit.
# NumPy's float64 exp, log, tan and tanh are its own SIMD code, not the C
# library's, and differ from libm in the last bit; so a function calls
# NumPy's own float64 loop of its ufunc on one element, unless a probe at
# import shows the C library gives NumPy's results (then libm is used: it is
# several times cheaper than a one-element loop call).  The functions are
# declared in fastgrad/_formulas.py; the generated _optable.pxi sets them up
# with _init_unary.

from libc.math cimport fabs, isnan

ctypedef double (*_libm_fn)(double) noexcept nogil

cdef struct _Unary:
    _ufunc_loop loop        # NumPy's float64 -> float64 inner loop
    void* data
    _libm_fn libm           # used instead when it agrees with NumPy (else NULL)

cdef _Unary _unary[_NUFUNCS]        # by ufunc number (UF_EXP ...)
cdef _ufunc_loop _binary_loop[_NUFUNCS]
cdef void* _binary_data[_NUFUNCS]


cdef inline double _c_unary(int k, double x) noexcept:
    cdef double y
    cdef char* args[2]
    cdef cnp.npy_intp n = 1
    cdef cnp.npy_intp steps[2]
    cdef _Unary* u = &_unary[k]
    if u.libm != NULL:
        return u.libm(x)
    steps[0] = steps[1] = sizeof(double)
    args[0] = <char*>&x
    args[1] = <char*>&y
    u.loop(args, &n, steps, u.data)
    return y


cdef inline double _c_binary(int k, double a, double b) noexcept:
    cdef double y
    cdef char* args[3]
    cdef cnp.npy_intp n = 1
    cdef cnp.npy_intp steps[3]
    steps[0] = steps[1] = steps[2] = sizeof(double)
    args[0] = <char*>&a
    args[1] = <char*>&b
    args[2] = <char*>&y
    _binary_loop[k](args, &n, steps, _binary_data[k])
    return y


cdef int _init_unary(int k, _libm_fn libm) except -1:
    """Set up ufunc ``k``'s scalar function; ``libm`` stands in for NumPy's
    loop only if it agrees on a spread of values (where they differ, they do
    so on 0.1-25% of random inputs: thousands of probes find it)."""
    cdef _Unary* u = &_unary[k]
    cdef Py_ssize_t i
    cdef double r
    uf = getattr(np, UFUNC_NAMES[k])
    _find_loop(uf, cnp.NPY_DOUBLE, &u.loop, &u.data)
    u.libm = NULL
    if libm == NULL:
        return 0
    rng = np.random.default_rng(12345)
    probe = np.concatenate([rng.uniform(-1.0, 1.0, 8192), rng.uniform(-40.0, 40.0, 8192),
                            rng.uniform(1e-8, 1e3, 8192), np.array([0.0, -0.0, 0.5, 1.0, 2.0])])
    with np.errstate(all="ignore"):
        expect = uf(probe)
    cdef double[::1] p = probe
    cdef double[::1] e = expect
    for i in range(p.shape[0]):
        r = libm(p[i])
        if not (r == e[i] or (isnan(r) and isnan(e[i]))):
            return 0
    u.libm = libm
    return 0


cdef int _init_binary() except -1:
    for k, name in enumerate(UFUNC_NAMES):
        uf = getattr(np, name)
        if uf.nin == 2:
            _find_loop(uf, cnp.NPY_DOUBLE, &_binary_loop[k], &_binary_data[k])
    return 0


_init_binary()


cdef inline double _c_sign(double x) noexcept:
    if x > 0:
        return 1.0
    if x < 0:
        return -1.0
    if x == 0:
        return 0.0      # NumPy's sign of -0.0 is +0.0
    return x            # NaN


cdef inline double _c_clip(double x, double lo, double hi) noexcept:
    return _c_binary(UF_MINIMUM, _c_binary(UF_MAXIMUM, x, lo), hi)


cdef inline double _spow(double x, double c) noexcept:
    # The special cases NumPy's array ** scalar takes, for bitwise agreement.
    if c == 2.0:
        return x * x
    if c == 1.0:
        return x
    if c == 0.5:
        return _c_unary(UF_SQRT, x)
    if c == -1.0:
        return 1.0 / x
    if c == 0.0:
        return 1.0
    return _c_binary(UF_POWER, x, c)


cdef bint _c_number(object c, double* out):
    """Store a Python float or int (exactly representable) in ``out``."""
    if type(c) is float:
        out[0] = <double>c
        return True
    if type(c) is int and -(1 << 52) < c < (1 << 52):
        out[0] = <double>c
        return True
    return False
