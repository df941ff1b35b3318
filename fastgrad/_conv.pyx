"""Compiled kernels of ``fastgrad.dezero.functions_conv``.

im2col (both of DeZero's layouts), col2im, max pooling forward (with
DeZero's argmax indexes), its backward and its index gather, and average
pooling forward.  Each produces the very array DeZero's NumPy formula
produces: the same values in float64 and float32 (the same IEEE operations
in the same order), the same dtype, the same shape and the same memory
layout (col2im returns the interior of a padded buffer, as DeZero's does).

Every function returns ``None`` for an input it does not take (another
dtype, mixed dtypes, a subclass, an unaligned or byte-swapped array), and
the caller then runs the NumPy formula.  Arrays of any strides are read as
they are, so no copy is made to get a contiguous input.  Geometry is checked
here, not trusted: a bad one raises ``ValueError`` before any loop runs.

The loops run without the GIL over a range of (image, channel) planes (or of
output rows), so that they can be split across threads; today one thread
runs them all.
"""
cimport numpy as cnp
from cython cimport floating
from libc.math cimport isnan
from libc.string cimport memcpy

import numpy as np

cnp.import_array()

__all__ = ["im2col", "col2im", "max_pool", "max_pool_grad", "max_pool_pick",
           "avg_pool", "MAX_POOL_OK", "AVG_POOL_OK"]


ctypedef struct Geom:
    # An (N, C, H, W) image, a KH x KW window moved by (SH, SW) over it padded
    # by (PH, PW), giving OH x OW outputs.
    Py_ssize_t N, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW


# ---------------------------------------------------------------------------
# Validation (with the GIL, before any loop)
# ---------------------------------------------------------------------------

cdef int _ftype(object a):
    """NPY_FLOAT or NPY_DOUBLE if ``a`` is an exact ndarray a kernel can read
    (aligned, native byte order, any strides), else -1."""
    cdef cnp.ndarray arr
    cdef int t
    if not cnp.PyArray_CheckExact(a):
        return -1
    arr = <cnp.ndarray>a
    t = cnp.PyArray_TYPE(arr)
    if ((t == cnp.NPY_DOUBLE or t == cnp.NPY_FLOAT)
            and cnp.PyArray_ISALIGNED(arr) and cnp.PyArray_ISNOTSWAPPED(arr)):
        return t
    return -1


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


cdef int _geom(Geom* g, object shape, object kh, object kw, object sh, object sw,
               object ph, object pw) except -1:
    """Fill ``g`` for an image of ``shape``; ValueError if it cannot be."""
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
    return 0


cdef inline void _span(Py_ssize_t off, Py_ssize_t S, Py_ssize_t W, Py_ssize_t OW,
                       Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    """The outputs ``ow`` in [lo, hi) whose input column ``S*ow + off`` lies
    in [0, W); the others read padding."""
    cdef Py_ssize_t a = 0, b
    if off < 0:
        a = (-off + S - 1) // S
    b = (W - off + S - 1) // S if W > off else 0
    if a > OW:
        a = OW
    if b > OW:
        b = OW
    if b < a:
        b = a
    lo[0] = a
    hi[0] = b


cdef inline Py_ssize_t _n_planes(const Geom* g) noexcept nogil:
    return g.N * g.C


# ---------------------------------------------------------------------------
# im2col
# ---------------------------------------------------------------------------

cdef void _im2col_planes(const floating* x, const Py_ssize_t* xs, const Geom* g,
                         floating* out, Py_ssize_t p0, Py_ssize_t p1) noexcept nogil:
    """Planes p0..p1 (p = n*C + c) of the (N, C, KH, KW, OH, OW) layout,
    C-contiguous: ``out[n, c, j, i, oh, ow] = x[n, c, SH*oh + j - PH,
    SW*ow + i - PW]``, zero where that lies in the padding."""
    cdef Py_ssize_t p, j, i, oh, ow, h, lo, hi, off
    cdef Py_ssize_t OH = g.OH, OW = g.OW, SW = g.SW, xw = xs[3]
    cdef const floating* xp
    cdef const floating* xr
    cdef floating* o = out + p0 * g.KH * g.KW * OH * OW
    for p in range(p0, p1):
        xp = x + (p // g.C) * xs[0] + (p % g.C) * xs[1]
        for j in range(g.KH):
            for i in range(g.KW):
                off = i - g.PW
                _span(off, SW, g.W, OW, &lo, &hi)
                for oh in range(OH):
                    h = g.SH * oh + j - g.PH
                    if h < 0 or h >= g.H:
                        for ow in range(OW):
                            o[ow] = 0
                    else:
                        xr = xp + h * xs[2]
                        for ow in range(lo):
                            o[ow] = 0
                        if SW == 1 and xw == 1:
                            memcpy(o + lo, xr + lo + off, (hi - lo) * sizeof(floating))
                        else:
                            for ow in range(lo, hi):
                                o[ow] = xr[(SW * ow + off) * xw]
                        for ow in range(hi, OW):
                            o[ow] = 0
                    o += OW


cdef void _im2col_rows(const floating* x, const Py_ssize_t* xs, const Geom* g,
                       floating* out, Py_ssize_t r0, Py_ssize_t r1) noexcept nogil:
    """Rows r0..r1 (r = n*OH + oh) of the matrix layout: row (n, oh, ow)
    of ``out`` (N*OH*OW, C*KH*KW) holds the window at (oh, ow), in (c, j, i)
    order.  It is the (N, C, KH, KW, OH, OW) layout transposed to
    (N, OH, OW, C, KH, KW), made in one pass."""
    cdef Py_ssize_t r, c, j, i, ow, h, lo, hi, off, col0
    cdef Py_ssize_t OW = g.OW, SW = g.SW, KW = g.KW, xw = xs[3]
    cdef Py_ssize_t ckk = g.C * g.KH * g.KW
    cdef const floating* xr
    cdef floating* blk
    cdef floating* dst
    for r in range(r0, r1):
        blk = out + r * OW * ckk
        for c in range(g.C):
            for j in range(g.KH):
                h = g.SH * (r % g.OH) + j - g.PH
                col0 = (c * g.KH + j) * KW
                if h < 0 or h >= g.H:
                    for ow in range(OW):
                        dst = blk + ow * ckk + col0
                        for i in range(KW):
                            dst[i] = 0
                    continue
                xr = x + (r // g.OH) * xs[0] + c * xs[1] + h * xs[2]
                for i in range(KW):
                    off = i - g.PW
                    _span(off, SW, g.W, OW, &lo, &hi)
                    dst = blk + col0 + i
                    for ow in range(lo):
                        dst[ow * ckk] = 0
                    for ow in range(lo, hi):
                        dst[ow * ckk] = xr[(SW * ow + off) * xw]
                    for ow in range(hi, OW):
                        dst[ow * ckk] = 0


def im2col(x, kh, kw, sh, sw, ph, pw, bint matrix):
    """DeZero's ``im2col_array(x, (kh, kw), (sh, sw), (ph, pw), matrix)``.

    Returns a new C-contiguous array of ``x``'s dtype: (N, C, KH, KW, OH, OW),
    or with ``matrix`` (N*OH*OW, C*KH*KW) (DeZero's matrix when its reshape
    copies; where it is a view, the caller takes that view of the first
    layout).  None if ``x`` is not a float32/float64 array the kernel reads.
    """
    cdef int t = _ftype(x)
    cdef Geom g
    cdef Py_ssize_t xs[4]
    cdef cnp.ndarray a, out
    if t < 0 or cnp.PyArray_NDIM(<cnp.ndarray>x) != 4:
        return None
    a = <cnp.ndarray>x
    if not _elem_strides(a, xs):
        return None
    _geom(&g, x.shape, kh, kw, sh, sw, ph, pw)
    if matrix:
        out = np.empty((g.N * g.OH * g.OW, g.C * g.KH * g.KW), dtype=x.dtype)
    else:
        out = np.empty((g.N, g.C, g.KH, g.KW, g.OH, g.OW), dtype=x.dtype)
    if cnp.PyArray_SIZE(out) == 0:
        return out
    with nogil:
        if t == cnp.NPY_DOUBLE:
            if matrix:
                _im2col_rows(<const double*>cnp.PyArray_DATA(a), xs, &g,
                             <double*>cnp.PyArray_DATA(out), 0, g.N * g.OH)
            else:
                _im2col_planes(<const double*>cnp.PyArray_DATA(a), xs, &g,
                               <double*>cnp.PyArray_DATA(out), 0, _n_planes(&g))
        else:
            if matrix:
                _im2col_rows(<const float*>cnp.PyArray_DATA(a), xs, &g,
                             <float*>cnp.PyArray_DATA(out), 0, g.N * g.OH)
            else:
                _im2col_planes(<const float*>cnp.PyArray_DATA(a), xs, &g,
                               <float*>cnp.PyArray_DATA(out), 0, _n_planes(&g))
    return out


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
    cdef Py_ssize_t SH = g.SH, SW = g.SW, OW = g.OW, cw = cs[5]
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
                if t % SH:
                    continue
                oh = t // SH
                if oh >= g.OH:
                    continue
                for i in range(g.KW):
                    off = i - g.PW
                    _span(off, SW, g.W, OW, &lo, &hi)
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
    cdef int t = _ftype(col)
    cdef Geom g
    cdef Py_ssize_t cs[6]
    cdef cnp.ndarray a, img
    if t < 0 or cnp.PyArray_NDIM(<cnp.ndarray>col) != 6:
        return None
    a = <cnp.ndarray>col
    _geom(&g, img_shape, kh, kw, sh, sw, ph, pw)
    if col.shape != (g.N, g.C, g.KH, g.KW, g.OH, g.OW):
        raise ValueError(f"col2im: col of shape {col.shape} does not match image shape "
                         f"{tuple(img_shape)} (expected {(g.N, g.C, g.KH, g.KW, g.OH, g.OW)})")
    if not _elem_strides(a, cs):
        return None
    img = np.zeros((g.N, g.C, g.H + 2 * g.PH + g.SH - 1, g.W + 2 * g.PW + g.SW - 1),
                   dtype=col.dtype)
    if cnp.PyArray_SIZE(a) > 0:
        with nogil:
            if t == cnp.NPY_DOUBLE:
                _col2im_planes(<const double*>cnp.PyArray_DATA(a), cs, &g,
                               <double*>cnp.PyArray_DATA(img), 0, _n_planes(&g))
            else:
                _col2im_planes(<const float*>cnp.PyArray_DATA(a), cs, &g,
                               <float*>cnp.PyArray_DATA(img), 0, _n_planes(&g))
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

cdef inline floating _pixel(const floating* xp, const Py_ssize_t* xs, const Geom* g,
                            Py_ssize_t h, Py_ssize_t w) noexcept nogil:
    if h < 0 or h >= g.H or w < 0 or w >= g.W:
        return 0
    return xp[h * xs[2] + w * xs[3]]


cdef void _max_pool_planes(const floating* x, const Py_ssize_t* xs, const Geom* g,
                           floating* y, Py_ssize_t* idx,
                           Py_ssize_t p0, Py_ssize_t p1) noexcept nogil:
    cdef Py_ssize_t p, oh, ow, j, i, h0, w0, k, am, o
    cdef floating v, mx, amv
    cdef bint done
    cdef const floating* xp
    o = p0 * g.OH * g.OW
    for p in range(p0, p1):
        xp = x + (p // g.C) * xs[0] + (p % g.C) * xs[1]
        for oh in range(g.OH):
            h0 = g.SH * oh - g.PH
            for ow in range(g.OW):
                w0 = g.SW * ow - g.PW
                mx = _pixel(xp, xs, g, h0, w0)
                amv = mx
                am = 0
                done = isnan(mx)
                k = 0
                for j in range(g.KH):
                    for i in range(g.KW):
                        if k > 0:
                            v = _pixel(xp, xs, g, h0 + j, w0 + i)
                            if not (isnan(mx) or mx > v):
                                mx = v
                            if not done and not (v <= amv):
                                amv = v
                                am = k
                                done = isnan(v)
                        k += 1
                y[o] = mx
                idx[o] = am
                o += 1


def max_pool(x, kh, kw, sh, sw, ph, pw):
    """DeZero's max pooling forward: ``(col.max(axis=2), col.argmax(axis=2))``
    of the (N, C, KH*KW, OH, OW) im2col of ``x`` (padding counts as +0.0).

    Both results are new C-contiguous (N, C, OH, OW) arrays, of ``x``'s dtype
    and ``np.intp``.  None when ``x`` is not taken, when OH*OW == 1, or when
    the import-time probe found NumPy's rules to differ.
    """
    cdef int t = _ftype(x)
    cdef Geom g
    cdef Py_ssize_t xs[4]
    cdef cnp.ndarray a, y, idx
    if not MAX_POOL_OK or t < 0 or cnp.PyArray_NDIM(<cnp.ndarray>x) != 4:
        return None
    a = <cnp.ndarray>x
    if not _elem_strides(a, xs):
        return None
    _geom(&g, x.shape, kh, kw, sh, sw, ph, pw)
    if g.OH * g.OW == 1:
        return None
    y = np.empty((g.N, g.C, g.OH, g.OW), dtype=x.dtype)
    idx = np.empty((g.N, g.C, g.OH, g.OW), dtype=np.intp)
    with nogil:
        if t == cnp.NPY_DOUBLE:
            _max_pool_planes(<const double*>cnp.PyArray_DATA(a), xs, &g,
                             <double*>cnp.PyArray_DATA(y),
                             <Py_ssize_t*>cnp.PyArray_DATA(idx), 0, _n_planes(&g))
        else:
            _max_pool_planes(<const float*>cnp.PyArray_DATA(a), xs, &g,
                             <float*>cnp.PyArray_DATA(y),
                             <Py_ssize_t*>cnp.PyArray_DATA(idx), 0, _n_planes(&g))
    return y, idx


cdef int _check_indexes(object indexes, const Geom* g) except -1:
    """``indexes`` must be DeZero's argmax array: C-contiguous intp (N, C, OH, OW)."""
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
                h = g.SH * oh + k // g.KW - g.PH
                w = g.SW * ow + k % g.KW - g.PW
                if 0 <= h < g.H and 0 <= w < g.W:
                    ip[(h + g.PH) * Wp + w + g.PW] += gp[oh * gs[2] + ow * gs[3]]
    return -1


def max_pool_grad(gy, indexes, x_shape, x_dtype, kh, kw, sh, sw, ph, pw):
    """DeZero's ``Pooling2DGrad.forward``: ``gy`` scattered to the argmax
    positions ``indexes`` and summed back into an image of ``x_shape``.

    Returns the interior view of a padded buffer of ``x_dtype``, as DeZero's
    col2im does; None unless ``gy`` is a float32/float64 array of that dtype.
    """
    cdef int t = _ftype(gy)
    cdef Geom g
    cdef Py_ssize_t gs[4]
    cdef Py_ssize_t bad = -1
    cdef cnp.ndarray a, img, ix
    if t < 0 or cnp.PyArray_NDIM(<cnp.ndarray>gy) != 4 or np.dtype(x_dtype) != gy.dtype:
        return None
    a = <cnp.ndarray>gy
    _geom(&g, x_shape, kh, kw, sh, sw, ph, pw)
    if gy.shape != (g.N, g.C, g.OH, g.OW):
        raise ValueError(f"max pooling: gradient of shape {gy.shape} does not match the "
                         f"pooled output {(g.N, g.C, g.OH, g.OW)}")
    if not _check_indexes(indexes, &g) or not _elem_strides(a, gs):
        return None
    ix = <cnp.ndarray>indexes
    img = np.zeros((g.N, g.C, g.H + 2 * g.PH + g.SH - 1, g.W + 2 * g.PW + g.SW - 1),
                   dtype=gy.dtype)
    with nogil:
        if t == cnp.NPY_DOUBLE:
            bad = _max_pool_grad_planes(<const double*>cnp.PyArray_DATA(a), gs,
                                        <const Py_ssize_t*>cnp.PyArray_DATA(ix), &g,
                                        <double*>cnp.PyArray_DATA(img), 0, _n_planes(&g))
        else:
            bad = _max_pool_grad_planes(<const float*>cnp.PyArray_DATA(a), gs,
                                        <const Py_ssize_t*>cnp.PyArray_DATA(ix), &g,
                                        <float*>cnp.PyArray_DATA(img), 0, _n_planes(&g))
    if bad >= 0:
        raise ValueError(f"max pooling: index {indexes.flat[bad]} at flat position {bad} "
                         f"is outside the {kh}x{kw} window")
    return img[:, :, g.PH:g.PH + g.H, g.PW:g.PW + g.W]


cdef Py_ssize_t _max_pool_pick_planes(const floating* x, const Py_ssize_t* xs,
                                      const Py_ssize_t* idx, const Geom* g, floating* y,
                                      Py_ssize_t p0, Py_ssize_t p1) noexcept nogil:
    cdef Py_ssize_t p, oh, ow, k, o, kk = g.KH * g.KW
    cdef const floating* xp
    for p in range(p0, p1):
        xp = x + (p // g.C) * xs[0] + (p % g.C) * xs[1]
        for oh in range(g.OH):
            for ow in range(g.OW):
                o = (p * g.OH + oh) * g.OW + ow
                k = idx[o]
                if k < 0 or k >= kk:
                    return o
                y[o] = _pixel(xp, xs, g, g.SH * oh + k // g.KW - g.PH,
                              g.SW * ow + k % g.KW - g.PW)
    return -1


def max_pool_pick(x, indexes, kh, kw, sh, sw, ph, pw):
    """DeZero's ``Pooling2DWithIndexes.forward``: from each window of ``x``
    the element at ``indexes`` (+0.0 in the padding).  A new C-contiguous
    (N, C, OH, OW) array of ``x``'s dtype; None if ``x`` is not taken."""
    cdef int t = _ftype(x)
    cdef Geom g
    cdef Py_ssize_t xs[4]
    cdef Py_ssize_t bad = -1
    cdef cnp.ndarray a, y, ix
    if t < 0 or cnp.PyArray_NDIM(<cnp.ndarray>x) != 4:
        return None
    a = <cnp.ndarray>x
    _geom(&g, x.shape, kh, kw, sh, sw, ph, pw)
    if not _check_indexes(indexes, &g) or not _elem_strides(a, xs):
        return None
    ix = <cnp.ndarray>indexes
    y = np.empty((g.N, g.C, g.OH, g.OW), dtype=x.dtype)
    with nogil:
        if t == cnp.NPY_DOUBLE:
            bad = _max_pool_pick_planes(<const double*>cnp.PyArray_DATA(a), xs,
                                        <const Py_ssize_t*>cnp.PyArray_DATA(ix), &g,
                                        <double*>cnp.PyArray_DATA(y), 0, _n_planes(&g))
        else:
            bad = _max_pool_pick_planes(<const float*>cnp.PyArray_DATA(a), xs,
                                        <const Py_ssize_t*>cnp.PyArray_DATA(ix), &g,
                                        <float*>cnp.PyArray_DATA(y), 0, _n_planes(&g))
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
    cdef Py_ssize_t p, oh, ow, j, i, h0, w0, o
    cdef Py_ssize_t kk = g.KH * g.KW
    cdef floating acc
    cdef const floating* xp
    o = p0 * g.OH * g.OW
    for p in range(p0, p1):
        xp = x + (p // g.C) * xs[0] + (p % g.C) * xs[1]
        for oh in range(g.OH):
            h0 = g.SH * oh - g.PH
            for ow in range(g.OW):
                w0 = g.SW * ow - g.PW
                acc = 0
                for j in range(g.KH):
                    for i in range(g.KW):
                        acc = acc + _pixel(xp, xs, g, h0 + j, w0 + i)
                if floating is double:
                    y[o] = acc / <double>kk
                else:
                    y[o] = <float>(<double>acc / <double>kk)
                o += 1


def avg_pool(x, kh, kw, sh, sw, ph, pw):
    """DeZero's average pooling forward, ``col.mean(axis=(2, 3))`` of the
    im2col of ``x`` (padding counts as +0.0 in the mean).  A new C-contiguous
    (N, C, OH, OW) array of ``x``'s dtype; None when ``x`` is not taken, when
    OH*OW == 1, or when the import-time probe found NumPy's rule to differ."""
    cdef int t = _ftype(x)
    cdef Geom g
    cdef Py_ssize_t xs[4]
    cdef cnp.ndarray a, y
    if not AVG_POOL_OK or t < 0 or cnp.PyArray_NDIM(<cnp.ndarray>x) != 4:
        return None
    a = <cnp.ndarray>x
    if not _elem_strides(a, xs):
        return None
    _geom(&g, x.shape, kh, kw, sh, sw, ph, pw)
    if g.OH * g.OW == 1:
        return None
    y = np.empty((g.N, g.C, g.OH, g.OW), dtype=x.dtype)
    with nogil:
        if t == cnp.NPY_DOUBLE:
            _avg_pool_planes(<const double*>cnp.PyArray_DATA(a), xs, &g,
                             <double*>cnp.PyArray_DATA(y), 0, _n_planes(&g))
        else:
            _avg_pool_planes(<const float*>cnp.PyArray_DATA(a), xs, &g,
                             <float*>cnp.PyArray_DATA(y), 0, _n_planes(&g))
    return y


# ---------------------------------------------------------------------------
# Import-time probe: the pooling rules above against this NumPy
# ---------------------------------------------------------------------------

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


def _probe():
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


#: The pooling kernels reproduce this NumPy's reduction rules (probed at
#: import); if not, max_pool / avg_pool decline and NumPy runs.
MAX_POOL_OK = True
AVG_POOL_OK = True
with np.errstate(all="ignore"):
    MAX_POOL_OK, AVG_POOL_OK = _probe()
