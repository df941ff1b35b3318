"""Compiled kernels of ``fastgrad.dezero.functions_conv``.

im2col (both of DeZero's layouts), col2im, max pooling forward (with
DeZero's argmax indexes), its backward and its index gather, average
pooling forward, and a convolution's bias add.  Each produces the very array
DeZero's NumPy formula produces: the same values in float64 and float32
(the same IEEE operations in the same order), the same dtype, the same
shape and the same memory layout (col2im returns the interior of a padded
buffer, as DeZero's does).

Every function returns ``None`` for an input it does not take (another
dtype, mixed dtypes, a subclass, an unaligned or byte-swapped array), and
the caller then runs the NumPy formula.  Arrays of any strides are read as
they are, so no copy is made to get a contiguous input.  Geometry is checked
here, not trusted: a bad one raises ``ValueError`` before any loop runs, and
argmax indexes are checked as they are read.

The loops run without the GIL over a range of (image, channel) planes (or of
output rows), so that they can be split across threads; today one thread
runs them all.
"""
cimport numpy as cnp
from cython cimport floating
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

from fastgrad._arrays cimport float_type

import numpy as np

cnp.import_array()

__all__ = ["im2col", "col2im", "max_pool", "max_pool_grad", "max_pool_pick",
           "avg_pool", "add_bias", "MAX_POOL_OK", "AVG_POOL_OK"]


ctypedef struct Geom:
    # An (N, C, H, W) image, a KH x KW window moved by (SH, SW) over it padded
    # by (PH, PW), giving OH x OW outputs.
    Py_ssize_t N, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW
    # Tables, so that no loop divides: for window column i, the outputs ow
    # in [lo[i], hi[i]) read input column SW*ow + i - PW inside the image
    # (the others read padding); for window position k = j*KW + i,
    # kj[k] = j and ki[k] = i.
    Py_ssize_t* lo
    Py_ssize_t* hi
    Py_ssize_t* kj
    Py_ssize_t* ki


cdef class _Window:
    """Owner of a :c:type:`Geom` and its tables."""
    cdef Geom g

    def __dealloc__(self):
        free(self.g.lo)


# ---------------------------------------------------------------------------
# Validation (with the GIL, before any loop)
# ---------------------------------------------------------------------------

cdef bint _elem_strides(cnp.ndarray a, Py_ssize_t* out) noexcept:
    """Strides of ``a`` in elements; False if one is not a whole number.

    The stride of an axis of length 0 or 1 is never multiplied by a nonzero
    index, so it is taken as 0 whatever NumPy stored.
    """
    cdef int d
    cdef Py_ssize_t s, item = cnp.PyArray_ITEMSIZE(a)
    for d in range(cnp.PyArray_NDIM(a)):
        if cnp.PyArray_DIM(a, d) <= 1:
            out[d] = 0
            continue
        s = cnp.PyArray_STRIDE(a, d)
        if s % item:
            return False
        out[d] = s // item
    return True


cdef _Window _window(object shape, object kh, object kw, object sh, object sw,
                     object ph, object pw):
    """The geometry of an image of ``shape`` under a window; ValueError if
    there is none."""
    cdef _Window win = _Window.__new__(_Window)
    cdef Geom* g = &win.g
    cdef Py_ssize_t i, k, a, b, off
    if len(shape) != 4:
        raise ValueError(f"expected an (N, C, H, W) image shape, got {tuple(shape)}")
    g.N, g.C, g.H, g.W = shape
    g.KH, g.KW, g.SH, g.SW, g.PH, g.PW = kh, kw, sh, sw, ph, pw
    if g.N < 0 or g.C < 0 or g.H < 0 or g.W < 0:
        raise ValueError(f"negative image shape {tuple(shape)}")
    if g.KH < 1 or g.KW < 1 or g.SH < 1 or g.SW < 1 or g.PH < 0 or g.PW < 0:
        raise ValueError(f"bad window: kernel {kh}x{kw}, stride {sh},{sw}, pad {ph},{pw}")
    if g.H + 2 * g.PH < g.KH or g.W + 2 * g.PW < g.KW:
        raise ValueError(f"kernel {kh}x{kw} is larger than the padded input "
                         f"{g.H + 2 * g.PH}x{g.W + 2 * g.PW}")
    g.OH = (g.H + 2 * g.PH - g.KH) // g.SH + 1
    g.OW = (g.W + 2 * g.PW - g.KW) // g.SW + 1
    g.lo = <Py_ssize_t*>malloc((2 * g.KW + 2 * g.KH * g.KW) * sizeof(Py_ssize_t))
    if g.lo == NULL:
        raise MemoryError("conv kernels: no memory for a window table")
    g.hi = g.lo + g.KW
    g.kj = g.hi + g.KW
    g.ki = g.kj + g.KH * g.KW
    for i in range(g.KW):
        off = i - g.PW
        a = (-off + g.SW - 1) // g.SW if off < 0 else 0
        b = (g.W - off + g.SW - 1) // g.SW if g.W > off else 0
        a = min(a, g.OW)
        b = max(min(b, g.OW), a)
        g.lo[i] = a
        g.hi[i] = b
    for k in range(g.KH * g.KW):
        g.kj[k] = k // g.KW
        g.ki[k] = k % g.KW
    return win


cdef inline Py_ssize_t _n_planes(const Geom* g) noexcept nogil:
    return g.N * g.C


cdef inline void _window_row(const floating* xr, bint inside, const Geom* g,
                             Py_ssize_t xw, Py_ssize_t i, floating* vals) noexcept nogil:
    """``vals[ow]`` for ow < OW: window element (., i) of output ow, read in
    input row ``xr`` (column stride ``xw``); +0.0 where that is padding, and
    everywhere when the row is not ``inside`` the image."""
    cdef Py_ssize_t ow, lo = g.OW, hi = g.OW, off = i - g.PW, SW = g.SW
    if inside:
        lo = g.lo[i]
        hi = g.hi[i]
    for ow in range(lo):
        vals[ow] = 0
    if SW == 1 and xw == 1:
        memcpy(vals + lo, xr + lo + off, (hi - lo) * sizeof(floating))
    else:
        for ow in range(lo, hi):
            vals[ow] = xr[(SW * ow + off) * xw]
    for ow in range(hi, g.OW):
        vals[ow] = 0


# ---------------------------------------------------------------------------
# im2col
# ---------------------------------------------------------------------------

cdef void _im2col_planes(const floating* x, const Py_ssize_t* xs, const Geom* g,
                         floating* out, Py_ssize_t p0, Py_ssize_t p1) noexcept nogil:
    """Planes p0..p1 (p = n*C + c) of the (N, C, KH, KW, OH, OW) layout,
    C-contiguous: ``out[n, c, j, i, oh, ow] = x[n, c, SH*oh + j - PH,
    SW*ow + i - PW]``, +0.0 where that lies in the padding."""
    cdef Py_ssize_t p, j, i, oh, h
    cdef Py_ssize_t OH = g.OH, OW = g.OW
    cdef const floating* xp
    cdef floating* o = out + p0 * g.KH * g.KW * OH * OW
    for p in range(p0, p1):
        xp = x + (p // g.C) * xs[0] + (p % g.C) * xs[1]
        for j in range(g.KH):
            for i in range(g.KW):
                for oh in range(OH):
                    h = g.SH * oh + j - g.PH
                    _window_row(xp + h * xs[2] if 0 <= h < g.H else xp, 0 <= h < g.H,
                                g, xs[3], i, o)
                    o += OW


cdef void _im2col_rows(const floating* x, const Py_ssize_t* xs, const Geom* g,
                       floating* out, Py_ssize_t r0, Py_ssize_t r1) noexcept nogil:
    """Rows r0..r1 (r = n*OH + oh) of the matrix layout: row (n, oh, ow)
    of ``out`` (N*OH*OW, C*KH*KW) holds the window at (oh, ow), in (c, j, i)
    order.  It is the (N, C, KH, KW, OH, OW) layout transposed to
    (N, OH, OW, C, KH, KW), made in one pass."""
    cdef Py_ssize_t r, n, oh, c, j, i, ow, h, lo, hi, off, col0
    cdef Py_ssize_t OW = g.OW, SW = g.SW, KW = g.KW, xw = xs[3]
    cdef Py_ssize_t ckk = g.C * g.KH * g.KW
    cdef const floating* xr
    cdef floating* blk
    cdef floating* dst
    n = r0 // g.OH
    oh = r0 % g.OH
    for r in range(r0, r1):
        blk = out + r * OW * ckk
        for c in range(g.C):
            for j in range(g.KH):
                h = g.SH * oh + j - g.PH
                col0 = (c * g.KH + j) * KW
                if h < 0 or h >= g.H:
                    for ow in range(OW):
                        dst = blk + ow * ckk + col0
                        for i in range(KW):
                            dst[i] = 0
                    continue
                xr = x + n * xs[0] + c * xs[1] + h * xs[2]
                for i in range(KW):
                    off = i - g.PW
                    lo = g.lo[i]
                    hi = g.hi[i]
                    dst = blk + col0 + i
                    for ow in range(lo):
                        dst[ow * ckk] = 0
                    for ow in range(lo, hi):
                        dst[ow * ckk] = xr[(SW * ow + off) * xw]
                    for ow in range(hi, OW):
                        dst[ow * ckk] = 0
        oh += 1
        if oh == g.OH:
            oh = 0
            n += 1


def im2col(x, kh, kw, sh, sw, ph, pw, bint matrix, out=None):
    """DeZero's ``im2col_array(x, (kh, kw), (sh, sw), (ph, pw), matrix)``.

    Returns a C-contiguous array of ``x``'s dtype: (N, C, KH, KW, OH, OW),
    or with ``matrix`` (N*OH*OW, C*KH*KW) (DeZero's matrix when its reshape
    copies; where it is a view, the caller takes that view of the first
    layout).  It is written into ``out`` when that is a writeable
    C-contiguous array of this shape and dtype sharing no memory with
    ``x``, else into a new array.  None if ``x`` is not a float32/float64
    array the kernel reads.
    """
    cdef int t = float_type(x, False)
    cdef _Window win
    cdef const Geom* g
    cdef Py_ssize_t xs[4]
    cdef cnp.ndarray a, res
    if t < 0 or cnp.PyArray_NDIM(<cnp.ndarray>x) != 4:
        return None
    a = <cnp.ndarray>x
    if not _elem_strides(a, xs):
        return None
    win = _window(x.shape, kh, kw, sh, sw, ph, pw)
    g = &win.g
    if matrix:
        shape = (g.N * g.OH * g.OW, g.C * g.KH * g.KW)
    else:
        shape = (g.N, g.C, g.KH, g.KW, g.OH, g.OW)
    if not (cnp.PyArray_CheckExact(out) and out.dtype == x.dtype and out.shape == shape
            and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>out)
            and cnp.PyArray_ISALIGNED(<cnp.ndarray>out)
            and cnp.PyArray_ISWRITEABLE(<cnp.ndarray>out)
            and not np.may_share_memory(out, x)):
        out = np.empty(shape, dtype=x.dtype)
    res = <cnp.ndarray>out
    if cnp.PyArray_SIZE(res) == 0:
        return res
    with nogil:
        if t == cnp.NPY_DOUBLE:
            if matrix:
                _im2col_rows(<const double*>cnp.PyArray_DATA(a), xs, g,
                             <double*>cnp.PyArray_DATA(res), 0, g.N * g.OH)
            else:
                _im2col_planes(<const double*>cnp.PyArray_DATA(a), xs, g,
                               <double*>cnp.PyArray_DATA(res), 0, _n_planes(g))
        else:
            if matrix:
                _im2col_rows(<const float*>cnp.PyArray_DATA(a), xs, g,
                             <float*>cnp.PyArray_DATA(res), 0, g.N * g.OH)
            else:
                _im2col_planes(<const float*>cnp.PyArray_DATA(a), xs, g,
                               <float*>cnp.PyArray_DATA(res), 0, _n_planes(g))
    return res


# ---------------------------------------------------------------------------
# col2im
# ---------------------------------------------------------------------------

cdef void _col2im_planes(const floating* col, const Py_ssize_t* cs, const Geom* g,
                         floating* img, Py_ssize_t p0, Py_ssize_t p1) noexcept nogil:
    """Planes p0..p1 of col2im into ``img``, the zeroed padded buffer
    (N, C, H + 2*PH + SH - 1, W + 2*PW + SW - 1), C-contiguous.

    Only the interior (what the caller returns) is written.  Each pixel
    sums its patches in DeZero's order: kernel row j, then column i,
    ascending, starting from the buffer's +0.0.
    """
    cdef Py_ssize_t p, h, j, i, t, oh, ow, lo, hi, off
    cdef Py_ssize_t SH = g.SH, SW = g.SW, cw = cs[5]
    cdef Py_ssize_t Hp = g.H + 2 * g.PH + SH - 1, Wp = g.W + 2 * g.PW + SW - 1
    cdef const floating* cp
    cdef const floating* src
    cdef floating* row
    for p in range(p0, p1):
        cp = col + (p // g.C) * cs[0] + (p % g.C) * cs[1]
        for h in range(g.H):
            row = img + (p * Hp + h + g.PH) * Wp + g.PW
            for j in range(g.KH):
                t = h + g.PH - j
                if t < 0:
                    break           # larger j reach only rows above the image
                if SH == 1:
                    oh = t
                elif t % SH:
                    continue
                else:
                    oh = t // SH
                if oh >= g.OH:
                    continue
                for i in range(g.KW):
                    off = i - g.PW
                    lo = g.lo[i]
                    hi = g.hi[i]
                    src = cp + j * cs[2] + i * cs[3] + oh * cs[4]
                    if SW == 1 and cw == 1:
                        for ow in range(lo, hi):
                            row[ow + off] += src[ow]
                    else:
                        for ow in range(lo, hi):
                            row[SW * ow + off] += src[ow * cw]


def col2im(col, img_shape, kh, kw, sh, sw, ph, pw):
    """DeZero's ``col2im_array(col, img_shape, ..., to_matrix=False)``.

    ``col`` is (N, C, KH, KW, OH, OW), any strides (also the zero strides of
    a broadcast).  Returns, as DeZero does, the interior view
    ``img[:, :, PH:PH+H, PW:PW+W]`` of a new padded buffer of ``col``'s
    dtype.  None if ``col`` is not a float32/float64 array the kernel reads.
    """
    cdef int t = float_type(col, False)
    cdef _Window win
    cdef const Geom* g
    cdef Py_ssize_t cs[6]
    cdef cnp.ndarray a, img
    if t < 0 or cnp.PyArray_NDIM(<cnp.ndarray>col) != 6:
        return None
    a = <cnp.ndarray>col
    win = _window(img_shape, kh, kw, sh, sw, ph, pw)
    g = &win.g
    if col.shape != (g.N, g.C, g.KH, g.KW, g.OH, g.OW):
        raise ValueError(f"col2im: col of shape {col.shape} does not match image shape "
                         f"{tuple(img_shape)} (expected "
                         f"{(g.N, g.C, g.KH, g.KW, g.OH, g.OW)})")
    if not _elem_strides(a, cs):
        return None
    img = np.zeros((g.N, g.C, g.H + 2 * g.PH + g.SH - 1, g.W + 2 * g.PW + g.SW - 1),
                   dtype=col.dtype)
    if cnp.PyArray_SIZE(a) > 0:
        with nogil:
            if t == cnp.NPY_DOUBLE:
                _col2im_planes(<const double*>cnp.PyArray_DATA(a), cs, g,
                               <double*>cnp.PyArray_DATA(img), 0, _n_planes(g))
            else:
                _col2im_planes(<const float*>cnp.PyArray_DATA(a), cs, g,
                               <float*>cnp.PyArray_DATA(img), 0, _n_planes(g))
    return img[:, :, g.PH:g.PH + g.H, g.PW:g.PW + g.W]


# ---------------------------------------------------------------------------
# max pooling
# ---------------------------------------------------------------------------
# NumPy's ``col.max(axis=2)`` over (N, C, KH*KW, OH, OW) reduces with
# ``out = maximum(out, col[:, :, k])`` for k = 1, 2, ... from ``col[:, :, 0]``,
# where maximum(a, b) is a if a is NaN or a > b, else b (so b on ties:
# the sign of a zero maximum is that of the last zero).  ``argmax`` is the
# first NaN, else the first maximum.  When OH*OW == 1 the reduction runs
# along memory instead, in NumPy's SIMD order: the callers take NumPy there.
# An import-time probe checks both rules against NumPy (MAX_POOL_OK).

cdef extern from *:
    """
    /* One step of NumPy's max reduction over n outputs, for window position
       k > 0: ym = maximum(ym, v) (ym if ym > v or ym is NaN, else v), and
       im = k where v is a new maximum or the first NaN.  The running maximum
       stands in for the value at the running argmax: they compare alike
       (equal, or both NaN once a NaN was seen).  Written as selects in two
       loops so that the compiler vectorizes them: on random data each
       outcome is a coin flip, and a mispredicted branch costs more than the
       step itself. */
    #define FG_MAX_ROW(T)                                                       \
    static void fg_max_row_##T(T* restrict ym, Py_ssize_t* restrict im,          \
                               const T* restrict v, Py_ssize_t n, Py_ssize_t k) { \
        Py_ssize_t i;                                                           \
        for (i = 0; i < n; i++) {                                               \
            T a = ym[i], b = v[i];                                              \
            Py_ssize_t t = (b > a) ? k : im[i];                                 \
            t = (b != b) ? k : t;                                               \
            im[i] = (a != a) ? im[i] : t;                                       \
        }                                                                       \
        for (i = 0; i < n; i++) {                                               \
            T a = ym[i], b = v[i];                                              \
            T u = (a != a) ? a : b;                                             \
            ym[i] = (a > b) ? a : u;                                            \
        }                                                                       \
    }
    FG_MAX_ROW(double)
    FG_MAX_ROW(float)
    """
    void fg_max_row_double(double* ym, Py_ssize_t* im, const double* v, Py_ssize_t n,
                           Py_ssize_t k) noexcept nogil
    void fg_max_row_float(float* ym, Py_ssize_t* im, const float* v, Py_ssize_t n,
                          Py_ssize_t k) noexcept nogil


cdef void _window_plane(const floating* xp, const Py_ssize_t* xs, const Geom* g,
                        Py_ssize_t k, floating* vals) noexcept nogil:
    """``vals[oh, ow]``: window element k of every output of a plane."""
    cdef Py_ssize_t oh, h, j = g.kj[k], i = g.ki[k]
    for oh in range(g.OH):
        h = g.SH * oh + j - g.PH
        _window_row(xp + h * xs[2] if 0 <= h < g.H else xp, 0 <= h < g.H, g, xs[3], i,
                    vals + oh * g.OW)


cdef int _max_pool_planes(const floating* x, const Py_ssize_t* xs, const Geom* g,
                          floating* y, Py_ssize_t* idx,
                          Py_ssize_t p0, Py_ssize_t p1) noexcept nogil:
    """Planes p0..p1 of max pooling, a plane at a time: window position k in
    the outer loop and the outputs inside, NumPy's own order
    (``out = maximum(out, col[:, :, k])``).  -1 if out of memory."""
    cdef Py_ssize_t p, o, k, m = g.OH * g.OW
    cdef const floating* xp
    cdef floating* vals = <floating*>malloc((m + 1) * sizeof(floating))
    if vals == NULL:
        return -1
    for p in range(p0, p1):
        xp = x + (p // g.C) * xs[0] + (p % g.C) * xs[1]
        _window_plane(xp, xs, g, 0, y + p * m)
        for o in range(m):
            idx[p * m + o] = 0
        for k in range(1, g.KH * g.KW):
            _window_plane(xp, xs, g, k, vals)
            if floating is double:
                fg_max_row_double(y + p * m, idx + p * m, vals, m, k)
            else:
                fg_max_row_float(y + p * m, idx + p * m, vals, m, k)
    free(vals)
    return 0


def max_pool(x, kh, kw, sh, sw, ph, pw):
    """DeZero's max pooling forward: ``(col.max(axis=2), col.argmax(axis=2))``
    of the (N, C, KH*KW, OH, OW) im2col of ``x`` (padding counts as +0.0).

    Both results are new C-contiguous (N, C, OH, OW) arrays, of ``x``'s dtype
    and ``np.intp``.  None when ``x`` is not taken, when OH*OW == 1, or when
    the import-time probe found NumPy's rules to differ.
    """
    cdef int t = float_type(x, False)
    cdef int err = 0
    cdef _Window win
    cdef const Geom* g
    cdef Py_ssize_t xs[4]
    cdef cnp.ndarray a, y, idx
    if not MAX_POOL_OK or t < 0 or cnp.PyArray_NDIM(<cnp.ndarray>x) != 4:
        return None
    a = <cnp.ndarray>x
    if not _elem_strides(a, xs):
        return None
    win = _window(x.shape, kh, kw, sh, sw, ph, pw)
    g = &win.g
    if g.OH * g.OW == 1:
        return None
    y = np.empty((g.N, g.C, g.OH, g.OW), dtype=x.dtype)
    idx = np.empty((g.N, g.C, g.OH, g.OW), dtype=np.intp)
    with nogil:
        if t == cnp.NPY_DOUBLE:
            err = _max_pool_planes(<const double*>cnp.PyArray_DATA(a), xs, g,
                                   <double*>cnp.PyArray_DATA(y),
                                   <Py_ssize_t*>cnp.PyArray_DATA(idx), 0, _n_planes(g))
        else:
            err = _max_pool_planes(<const float*>cnp.PyArray_DATA(a), xs, g,
                                   <float*>cnp.PyArray_DATA(y),
                                   <Py_ssize_t*>cnp.PyArray_DATA(idx), 0, _n_planes(g))
    if err:
        raise MemoryError("max pooling: no memory for a row buffer")
    return y, idx


cdef int _check_indexes(object indexes, const Geom* g) except -1:
    """1 if ``indexes`` is DeZero's argmax array as the kernels read it:
    C-contiguous aligned intp (N, C, OH, OW) (0: let NumPy read it)."""
    if not (cnp.PyArray_Check(indexes)
            and cnp.PyArray_TYPE(<cnp.ndarray>indexes) == cnp.NPY_INTP
            and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>indexes)
            and cnp.PyArray_ISALIGNED(<cnp.ndarray>indexes)
            and cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>indexes)):
        return 0
    if indexes.shape != (g.N, g.C, g.OH, g.OW):
        raise ValueError(f"max pooling: indexes of shape {indexes.shape} do not match "
                         f"the pooled output {(g.N, g.C, g.OH, g.OW)}")
    return 1


cdef Py_ssize_t _max_pool_grad_planes(const floating* gy, const Py_ssize_t* gs,
                                      const Py_ssize_t* idx, const Geom* g,
                                      floating* img, Py_ssize_t p0,
                                      Py_ssize_t p1) noexcept nogil:
    """Add each output's gradient to its argmax pixel of the zeroed padded
    buffer ``img``.  DeZero scatters into a col and sums it with col2im: a
    pixel sums its patches by kernel position (j, i) ascending, which for one
    pixel is output position (oh, ow) descending, the order used here.  (The
    zeros of the other window positions add nothing: a sum that starts at
    +0.0 is never -0.0.)  Returns the flat position of an index outside the
    window, or -1."""
    cdef Py_ssize_t p, oh, ow, k, h, w, o, kk = g.KH * g.KW
    cdef Py_ssize_t Hp = g.H + 2 * g.PH + g.SH - 1, Wp = g.W + 2 * g.PW + g.SW - 1
    cdef const floating* gp
    cdef floating* ip
    for p in range(p0, p1):
        gp = gy + (p // g.C) * gs[0] + (p % g.C) * gs[1]
        ip = img + p * Hp * Wp
        for oh in range(g.OH - 1, -1, -1):
            for ow in range(g.OW - 1, -1, -1):
                o = (p * g.OH + oh) * g.OW + ow
                k = idx[o]
                if k < 0 or k >= kk:
                    return o
                h = g.SH * oh + g.kj[k] - g.PH
                w = g.SW * ow + g.ki[k] - g.PW
                if 0 <= h < g.H and 0 <= w < g.W:
                    ip[(h + g.PH) * Wp + w + g.PW] += gp[oh * gs[2] + ow * gs[3]]
    return -1


def max_pool_grad(gy, indexes, x_shape, x_dtype, kh, kw, sh, sw, ph, pw):
    """DeZero's ``Pooling2DGrad.forward``: ``gy`` scattered to the argmax
    positions ``indexes`` and summed back into an image of ``x_shape``.

    Returns the interior view of a padded buffer of ``x_dtype``, as DeZero's
    col2im does; None unless ``gy`` is a float32/float64 array of that dtype.
    """
    cdef int t = float_type(gy, False)
    cdef _Window win
    cdef const Geom* g
    cdef Py_ssize_t gs[4]
    cdef Py_ssize_t bad = -1
    cdef cnp.ndarray a, img, ix
    if t < 0 or cnp.PyArray_NDIM(<cnp.ndarray>gy) != 4 or np.dtype(x_dtype) != gy.dtype:
        return None
    a = <cnp.ndarray>gy
    win = _window(x_shape, kh, kw, sh, sw, ph, pw)
    g = &win.g
    if gy.shape != (g.N, g.C, g.OH, g.OW):
        raise ValueError(f"max pooling: gradient of shape {gy.shape} does not match the "
                         f"pooled output {(g.N, g.C, g.OH, g.OW)}")
    if not _check_indexes(indexes, g) or not _elem_strides(a, gs):
        return None
    ix = <cnp.ndarray>indexes
    img = np.zeros((g.N, g.C, g.H + 2 * g.PH + g.SH - 1, g.W + 2 * g.PW + g.SW - 1),
                   dtype=gy.dtype)
    with nogil:
        if t == cnp.NPY_DOUBLE:
            bad = _max_pool_grad_planes(<const double*>cnp.PyArray_DATA(a), gs,
                                        <const Py_ssize_t*>cnp.PyArray_DATA(ix), g,
                                        <double*>cnp.PyArray_DATA(img), 0, _n_planes(g))
        else:
            bad = _max_pool_grad_planes(<const float*>cnp.PyArray_DATA(a), gs,
                                        <const Py_ssize_t*>cnp.PyArray_DATA(ix), g,
                                        <float*>cnp.PyArray_DATA(img), 0, _n_planes(g))
    if bad >= 0:
        raise ValueError(f"max pooling: index {indexes.flat[bad]} at flat position {bad} "
                         f"is outside the {kh}x{kw} window")
    return img[:, :, g.PH:g.PH + g.H, g.PW:g.PW + g.W]


cdef Py_ssize_t _max_pool_pick_planes(const floating* x, const Py_ssize_t* xs,
                                      const Py_ssize_t* idx, const Geom* g, floating* y,
                                      Py_ssize_t p0, Py_ssize_t p1) noexcept nogil:
    cdef Py_ssize_t p, oh, ow, k, o, h, w, kk = g.KH * g.KW
    cdef const floating* xp
    for p in range(p0, p1):
        xp = x + (p // g.C) * xs[0] + (p % g.C) * xs[1]
        for oh in range(g.OH):
            for ow in range(g.OW):
                o = (p * g.OH + oh) * g.OW + ow
                k = idx[o]
                if k < 0 or k >= kk:
                    return o
                h = g.SH * oh + g.kj[k] - g.PH
                w = g.SW * ow + g.ki[k] - g.PW
                y[o] = xp[h * xs[2] + w * xs[3]] if 0 <= h < g.H and 0 <= w < g.W else 0
    return -1


def max_pool_pick(x, indexes, kh, kw, sh, sw, ph, pw):
    """DeZero's ``Pooling2DWithIndexes.forward``: from each window of ``x``
    the element at ``indexes`` (+0.0 in the padding).  A new C-contiguous
    (N, C, OH, OW) array of ``x``'s dtype; None if ``x`` is not taken."""
    cdef int t = float_type(x, False)
    cdef _Window win
    cdef const Geom* g
    cdef Py_ssize_t xs[4]
    cdef Py_ssize_t bad = -1
    cdef cnp.ndarray a, y, ix
    if t < 0 or cnp.PyArray_NDIM(<cnp.ndarray>x) != 4:
        return None
    a = <cnp.ndarray>x
    win = _window(x.shape, kh, kw, sh, sw, ph, pw)
    g = &win.g
    if not _check_indexes(indexes, g) or not _elem_strides(a, xs):
        return None
    ix = <cnp.ndarray>indexes
    y = np.empty((g.N, g.C, g.OH, g.OW), dtype=x.dtype)
    with nogil:
        if t == cnp.NPY_DOUBLE:
            bad = _max_pool_pick_planes(<const double*>cnp.PyArray_DATA(a), xs,
                                        <const Py_ssize_t*>cnp.PyArray_DATA(ix), g,
                                        <double*>cnp.PyArray_DATA(y), 0, _n_planes(g))
        else:
            bad = _max_pool_pick_planes(<const float*>cnp.PyArray_DATA(a), xs,
                                        <const Py_ssize_t*>cnp.PyArray_DATA(ix), g,
                                        <float*>cnp.PyArray_DATA(y), 0, _n_planes(g))
    if bad >= 0:
        raise ValueError(f"max pooling: index {indexes.flat[bad]} at flat position {bad} "
                         f"is outside the {kh}x{kw} window")
    return y


# ---------------------------------------------------------------------------
# average pooling
# ---------------------------------------------------------------------------
# NumPy's ``col.mean(axis=(2, 3))`` over (N, C, KH, KW, OH, OW): a sum in the
# input's dtype that starts at +0.0 (the identity) and adds col[:, :, j, i]
# for (j, i) ascending, then a division by the intp count KH*KW, which
# promotes float32 to float64 and rounds back.  As for max pooling, OH*OW == 1
# sums along memory in NumPy's pairwise order and goes to NumPy.  Where a
# window holds two NaNs, which payload the sum keeps is not promised.

cdef void _avg_pool_planes(const floating* x, const Py_ssize_t* xs, const Geom* g,
                           floating* y, Py_ssize_t p0, Py_ssize_t p1) noexcept nogil:
    """Planes p0..p1 of average pooling, an output row at a time, adding
    window position k = j*KW + i for all outputs before the next (NumPy's
    order).  The padding's zeros are not added: a sum that starts at +0.0 is
    never -0.0, so adding +0.0 to it changes nothing."""
    cdef Py_ssize_t p, oh, ow, j, i, h, lo, hi, off
    cdef Py_ssize_t OW = g.OW, SW = g.SW, xw = xs[3]
    cdef Py_ssize_t kk = g.KH * g.KW
    cdef const floating* xp
    cdef const floating* xr
    cdef floating* ym
    for p in range(p0, p1):
        xp = x + (p // g.C) * xs[0] + (p % g.C) * xs[1]
        for oh in range(g.OH):
            ym = y + (p * g.OH + oh) * OW
            for ow in range(OW):
                ym[ow] = 0
            for j in range(g.KH):
                h = g.SH * oh + j - g.PH
                if h < 0 or h >= g.H:
                    continue
                xr = xp + h * xs[2]
                for i in range(g.KW):
                    off = i - g.PW
                    lo = g.lo[i]
                    hi = g.hi[i]
                    if SW == 1 and xw == 1:
                        for ow in range(lo, hi):
                            ym[ow] = ym[ow] + xr[ow + off]
                    else:
                        for ow in range(lo, hi):
                            ym[ow] = ym[ow] + xr[(SW * ow + off) * xw]
            for ow in range(OW):
                if floating is double:
                    ym[ow] = ym[ow] / <double>kk
                else:
                    ym[ow] = <float>(<double>ym[ow] / <double>kk)


def avg_pool(x, kh, kw, sh, sw, ph, pw):
    """DeZero's average pooling forward, ``col.mean(axis=(2, 3))`` of the
    im2col of ``x`` (padding counts as +0.0 in the mean).  A new C-contiguous
    (N, C, OH, OW) array of ``x``'s dtype; None when ``x`` is not taken, when
    OH*OW == 1, or when the import-time probe found NumPy's rule to differ."""
    cdef int t = float_type(x, False)
    cdef _Window win
    cdef const Geom* g
    cdef Py_ssize_t xs[4]
    cdef cnp.ndarray a, y
    if not AVG_POOL_OK or t < 0 or cnp.PyArray_NDIM(<cnp.ndarray>x) != 4:
        return None
    a = <cnp.ndarray>x
    if not _elem_strides(a, xs):
        return None
    win = _window(x.shape, kh, kw, sh, sw, ph, pw)
    g = &win.g
    if g.OH * g.OW == 1:
        return None
    y = np.empty((g.N, g.C, g.OH, g.OW), dtype=x.dtype)
    with nogil:
        if t == cnp.NPY_DOUBLE:
            _avg_pool_planes(<const double*>cnp.PyArray_DATA(a), xs, g,
                             <double*>cnp.PyArray_DATA(y), 0, _n_planes(g))
        else:
            _avg_pool_planes(<const float*>cnp.PyArray_DATA(a), xs, g,
                             <float*>cnp.PyArray_DATA(y), 0, _n_planes(g))
    return y


# ---------------------------------------------------------------------------
# bias add
# ---------------------------------------------------------------------------

cdef void _add_bias_rows(floating* y, const floating* b, Py_ssize_t bs, Py_ssize_t m,
                         Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t r, o
    cdef floating* row
    for r in range(m):
        row = y + r * n
        for o in range(n):
            row[o] = row[o] + b[o * bs]


def add_bias(y, b):
    """``y += b`` for a C-contiguous ``y`` whose last axis is ``b``'s one axis
    (a convolution's (N, OH, OW, OC) product), both float32 or both float64:
    NumPy's broadcast add, one addition per element.  Returns ``y``, or None
    (nothing done) for anything else."""
    cdef int t = float_type(y, False)
    cdef Py_ssize_t bs[1]
    cdef Py_ssize_t n, m
    cdef cnp.ndarray a, bb
    if (t < 0 or float_type(b, False) != t or cnp.PyArray_NDIM(<cnp.ndarray>b) != 1
            or cnp.PyArray_NDIM(<cnp.ndarray>y) < 1
            or not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>y)
            or not cnp.PyArray_ISWRITEABLE(<cnp.ndarray>y)):
        return None
    a = <cnp.ndarray>y
    bb = <cnp.ndarray>b
    n = cnp.PyArray_DIM(bb, 0)
    if cnp.PyArray_DIM(a, cnp.PyArray_NDIM(a) - 1) != n or not _elem_strides(bb, bs):
        return None
    if np.may_share_memory(y, b):
        return None
    m = cnp.PyArray_SIZE(a) // n if n else 0
    with nogil:
        if t == cnp.NPY_DOUBLE:
            _add_bias_rows(<double*>cnp.PyArray_DATA(a),
                           <const double*>cnp.PyArray_DATA(bb), bs[0], m, n)
        else:
            _add_bias_rows(<float*>cnp.PyArray_DATA(a),
                           <const float*>cnp.PyArray_DATA(bb), bs[0], m, n)
    return y


# ---------------------------------------------------------------------------
# Import-time probe: the pooling rules above against this NumPy
# ---------------------------------------------------------------------------
from fastgrad._conv_probe import probe as _probe

#: The pooling kernels reproduce this NumPy's reduction rules (probed at
#: import); if not, max_pool / avg_pool decline and NumPy runs.
MAX_POOL_OK = True
AVG_POOL_OK = True
with np.errstate(all="ignore"):
    MAX_POOL_OK, AVG_POOL_OK = _probe(max_pool, avg_pool)
