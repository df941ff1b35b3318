# Included by _core.pyx: the math of the C scalar path (0-d float64).
#
# Every function here returns exactly what NumPy returns for the same 0-d
# float64 operand, so the scalar path and the array path agree bit for bit.
# NumPy's float64 exp, log, tan and tanh are its own SIMD code, not the C
# library's, and differ from libm in the last bit; so the transcendental
# functions call NumPy's own float64 ufunc loop on one element, unless a probe
# at import shows the C library gives NumPy's results (then libm is used: it
# is several times cheaper than a one-element loop call).

from libc.math cimport exp as libm_exp, log as libm_log, sin as libm_sin
from libc.math cimport cos as libm_cos, tan as libm_tan, tanh as libm_tanh
from libc.math cimport fabs, isnan

ctypedef double (*_libm_fn)(double) noexcept nogil

cdef struct _Unary:
    _ufunc_loop loop        # NumPy's float64 -> float64 inner loop
    void* data
    _libm_fn libm           # used instead when it agrees with NumPy (else NULL)

cdef _Unary _u_exp, _u_log, _u_sin, _u_cos, _u_tan, _u_tanh

cdef inline double _loop1(_Unary* u, double x) noexcept:
    cdef double y
    cdef char* args[2]
    cdef cnp.npy_intp n = 1
    cdef cnp.npy_intp steps[2]
    if u.libm != NULL:
        return u.libm(x)
    steps[0] = steps[1] = sizeof(double)
    args[0] = <char*>&x
    args[1] = <char*>&y
    u.loop(args, &n, steps, u.data)
    return y

cdef double _probe_libm(double x, int which) noexcept:
    if which == 0:
        return libm_exp(x)
    if which == 1:
        return libm_log(x)
    if which == 2:
        return libm_sin(x)
    if which == 3:
        return libm_cos(x)
    if which == 4:
        return libm_tan(x)
    return libm_tanh(x)


cdef int _init_unary(_Unary* u, cnp.ufunc uf, _libm_fn libm, int which) except -1:
    cdef int k
    _find_loop(uf, cnp.NPY_DOUBLE, &u.loop, &u.data)
    # The C library stands in for NumPy only if it agrees on a spread of values.
    rng = np.random.default_rng(12345)
    # (Where they differ, they do so on 0.1-25% of random inputs: thousands
    # of probes find it.)
    probe = np.concatenate([rng.uniform(-1.0, 1.0, 8192), rng.uniform(-40.0, 40.0, 8192),
                            rng.uniform(1e-8, 1e3, 8192), np.array([0.0, -0.0, 0.5, 1.0, 2.0])])
    expect = uf(probe)
    cdef double[::1] p = probe
    cdef double[::1] e = expect
    cdef double r
    u.libm = NULL
    with np.errstate(all="ignore"):
        for k in range(p.shape[0]):
            r = _probe_libm(p[k], which)
            if not (r == e[k] or (isnan(r) and isnan(e[k]))):
                return 0
    u.libm = libm
    return 0


with np.errstate(all="ignore"):
    _init_unary(&_u_exp, np.exp, libm_exp, 0)
    _init_unary(&_u_log, np.log, libm_log, 1)
    _init_unary(&_u_sin, np.sin, libm_sin, 2)
    _init_unary(&_u_cos, np.cos, libm_cos, 3)
    _init_unary(&_u_tan, np.tan, libm_tan, 4)
    _init_unary(&_u_tanh, np.tanh, libm_tanh, 5)


def _scalar_math_info():
    """Which scalar functions use the C library (True) or NumPy's loop (False)."""
    return {"power": bool(_power_libm), "exp": _u_exp.libm != NULL, "log": _u_log.libm != NULL,
            "sin": _u_sin.libm != NULL, "cos": _u_cos.libm != NULL,
            "tan": _u_tan.libm != NULL, "tanh": _u_tanh.libm != NULL}


# x ** c: NumPy's float64 power loop (its own SIMD pow here), or libm's pow
# when a probe shows they agree.
cdef _ufunc_loop _power_loop = NULL
cdef void* _power_data = NULL
cdef bint _power_libm = False


cdef int _init_power() except -1:
    global _power_loop, _power_data, _power_libm
    cdef int k
    _find_loop(np.power, cnp.NPY_DOUBLE, &_power_loop, &_power_data)
    rng = np.random.default_rng(12345)
    base = rng.uniform(1e-3, 10.0, 8192)
    expo = rng.uniform(-4.0, 4.0, 8192)
    expect = np.power(base, expo)
    cdef double[::1] b = base
    cdef double[::1] e = expo
    cdef double[::1] r = expect
    for k in range(b.shape[0]):
        if c_pow(b[k], e[k]) != r[k]:
            _power_libm = False
            return 0
    _power_libm = True
    return 0


_init_power()


cdef inline double _c_power(double x, double c) noexcept:
    cdef double y
    cdef char* args[3]
    cdef cnp.npy_intp n = 1
    cdef cnp.npy_intp steps[3]
    if _power_libm:
        return c_pow(x, c)
    steps[0] = steps[1] = steps[2] = sizeof(double)
    args[0] = <char*>&x
    args[1] = <char*>&c
    args[2] = <char*>&y
    _power_loop(args, &n, steps, _power_data)
    return y


cdef inline double _c_exp(double x) noexcept:
    return _loop1(&_u_exp, x)

cdef inline double _c_log(double x) noexcept:
    return _loop1(&_u_log, x)

cdef inline double _c_sin(double x) noexcept:
    return _loop1(&_u_sin, x)

cdef inline double _c_cos(double x) noexcept:
    return _loop1(&_u_cos, x)

cdef inline double _c_tan(double x) noexcept:
    return _loop1(&_u_tan, x)

cdef inline double _c_tanh(double x) noexcept:
    return _loop1(&_u_tanh, x)

cdef inline double _c_sign(double x) noexcept:
    if x > 0:
        return 1.0
    if x < 0:
        return -1.0
    if x == 0:
        return 0.0      # NumPy's sign of -0.0 is +0.0
    return x            # NaN

cdef inline double _c_maximum(double a, double b) noexcept:
    # NumPy's maximum: NaN propagates; on equal values the first operand.
    return a if (a >= b or a != a) else b

cdef inline double _c_minimum(double a, double b) noexcept:
    return a if (a <= b or a != a) else b

cdef inline double _c_clip(double x, double lo, double hi) noexcept:
    return _c_minimum(_c_maximum(x, lo), hi)

cdef inline double _spow(double x, double c) noexcept:
    # The special cases NumPy's array ** scalar takes, for bitwise agreement.
    if c == 2.0:
        return x * x
    if c == 1.0:
        return x
    if c == 0.5:
        return libm_sqrt(x)
    if c == -1.0:
        return 1.0 / x
    if c == 0.0:
        return 1.0
    return _c_power(x, c)


cdef inline bint _c_number(object c, double* out):
    """Store a Python float or int (exactly representable) in ``out``."""
    if type(c) is float:
        out[0] = <double>c
        return True
    if type(c) is int and -(1 << 52) < c < (1 << 52):
        out[0] = <double>c
        return True
    return False
