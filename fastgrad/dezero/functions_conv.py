"""Convolution and pooling: DeZero 0.0.13's ``dezero.functions_conv``.

Images are ``(N, C, H, W)`` arrays; filters of a convolution are
``(OC, C, KH, KW)``, of a transposed convolution ``(C, OC, KH, KW)``.
``kernel_size``, ``stride`` and ``pad`` are an int or a pair of ints.

Every function is differentiable, and its backward is again made of this
module's functions, so second (and higher) derivatives work for
convolutions, transposed convolutions, max and average pooling and
im2col/col2im.  The forward passes and first-order gradients perform
DeZero's array operations in DeZero's order (the same im2col loops,
``tensordot`` contractions and col2im accumulation), so float64 results
equal DeZero's bit for bit.

Beyond DeZero: bad shapes (a channel mismatch, a kernel larger than the
padded input, an ``outsize`` that does not fit) raise ``ValueError`` naming
the problem; average pooling's gradient is right for non-square kernels;
and the second derivative of a convolution with respect to its filter
(``Conv2DGradW.backward``) uses the incoming gradient, where DeZero's reads
a weak reference.  Only NumPy arrays are supported (no CuPy kernels).

Compiled kernels
----------------
im2col, col2im, max pooling (forward with its argmax indexes, backward,
index gather) and average pooling run in C (``fastgrad._conv``) for
float32 and float64 arrays of any strides.  They produce the arrays
DeZero's NumPy formulas produce (values, dtype, shape and memory layout).
A ``tensordot`` is written out as the transposes, reshapes and one
``np.dot`` NumPy's ``tensordot`` performs, with the im2col matrix made in
one pass instead of a col and its transposed copy: the same BLAS call sees
the same matrices in the same memory order.  Without ``create_graph`` the
backward passes work on arrays and skip what nobody receives (the input
gradient of a convolution whose input is a plain array, e.g. the first
layer's images).  Other dtypes, and everything under ``FASTGRAD_PURE=1``,
run DeZero's NumPy code.
"""
import functools

import numpy as np

from fastgrad import functions as _F
from fastgrad._array_utils import int_pair
from fastgrad._core import PURE, _dezero_dtypes, _graph_recording, _needs_grad
from fastgrad.dezero.core import Function, as_variable

if PURE:
    _K = None
else:
    from fastgrad import _conv as _K

__all__ = [
    "Conv2d", "Deconv2d", "Conv2DGradW", "Pooling", "Pooling2DGrad",
    "Pooling2DWithIndexes", "AveragePooling", "Im2col", "Col2im",
    "conv2d", "conv2d_simple", "deconv2d", "pooling", "pooling_simple",
    "average_pooling", "im2col", "col2im", "im2col_array", "col2im_array",
]


# =============================================================================
# argument checks and sizes
# =============================================================================
def _conv_outsize(size, k, s, p):
    return (size + p * 2 - k) // s + 1


def _deconv_outsize(size, k, s, p):
    return s * (size - 1) + k - 2 * p


def _check_image(name, shape):
    if len(shape) != 4:
        raise ValueError(f"{name}: the input must be 4-d (N, C, H, W), got shape "
                         f"{tuple(shape)}")


def _out_hw(name, H, W, KH, KW, SH, SW, PH, PW):
    OH = _conv_outsize(H, KH, SH, PH)
    OW = _conv_outsize(W, KW, SW, PW)
    if H + 2 * PH < KH or W + 2 * PW < KW:
        raise ValueError(f"{name}: kernel {KH}x{KW} is larger than the padded input "
                         f"{H + 2 * PH}x{W + 2 * PW} (input {H}x{W}, pad {PH},{PW})")
    return OH, OW


def _geometry(name, img_shape, kernel_size, stride, pad):
    _check_image(name, img_shape)
    N, C, H, W = img_shape
    KH, KW = int_pair(kernel_size, f"{name}: kernel_size", 1)
    SH, SW = int_pair(stride, f"{name}: stride", 1)
    PH, PW = int_pair(pad, f"{name}: pad", 0)
    OH, OW = _out_hw(name, H, W, KH, KW, SH, SW, PH, PW)
    return N, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW


# =============================================================================
# im2col / col2im on ndarrays
# =============================================================================
@functools.lru_cache(maxsize=1024)
def _matrix_is_view(N, C, KH, KW, OH, OW):
    """Whether DeZero's im2col matrix is a view of its col.

    The matrix is ``col.transpose(0, 4, 5, 1, 2, 3).reshape(N*OH*OW, -1)``,
    and NumPy's reshape copies unless the axes it merges are adjacent in
    memory (one image, say, where the matrix is the col read in Fortran
    order).  NumPy decides, on a stand-in with the col's strides whose
    memory is never read.
    """
    shape = (N, C, KH, KW, OH, OW)
    strides = [8] * 6
    for d in range(4, -1, -1):
        strides[d] = strides[d + 1] * max(shape[d + 1], 1)
    fake = np.lib.stride_tricks.as_strided(np.zeros(1), shape, strides, writeable=False)
    try:
        fake.transpose(0, 4, 5, 1, 2, 3).reshape((N * OH * OW, C * KH * KW), copy=False)
    except ValueError:
        return False
    return True


def _im2col_numpy(img, KH, KW, SH, SW, PH, PW, OH, OW, to_matrix):
    N, C = img.shape[:2]
    img = np.pad(img, ((0, 0), (0, 0), (PH, PH + SH - 1), (PW, PW + SW - 1)),
                 mode="constant", constant_values=(0,))
    col = np.ndarray((N, C, KH, KW, OH, OW), dtype=img.dtype)
    for j in range(KH):
        j_lim = j + SH * OH
        for i in range(KW):
            i_lim = i + SW * OW
            col[:, :, j, i, :, :] = img[:, :, j:j_lim:SH, i:i_lim:SW]
    if to_matrix:
        col = _col_matrix(col)
    return col


def _col_matrix(col):
    """DeZero's im2col matrix of its (N, C, KH, KW, OH, OW) col: a view or a
    copy, as NumPy's reshape decides.  (The width is given, not -1, so that
    an empty batch works.)"""
    N, C, KH, KW, OH, OW = col.shape
    return col.transpose((0, 4, 5, 1, 2, 3)).reshape((N * OH * OW, C * KH * KW))


def im2col_array(img, kernel_size, stride, pad, to_matrix=True):
    """Patches of ``img`` (N, C, H, W) as ``(N, C, KH, KW, OH, OW)``.

    With ``to_matrix`` the result is ``(N*OH*OW, C*KH*KW)``, one row per
    output position.  The image is zero-padded by ``pad`` (and by
    ``stride - 1`` more at the bottom and right, as DeZero pads).
    """
    img = np.asarray(img)
    N, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW = _geometry(
        "im2col", img.shape, kernel_size, stride, pad)
    if _K is not None:
        if to_matrix and _matrix_is_view(N, C, KH, KW, OH, OW):
            col = _K.im2col(img, KH, KW, SH, SW, PH, PW, False)
            if col is not None:
                return _col_matrix(col)
        else:
            col = _K.im2col(img, KH, KW, SH, SW, PH, PW, to_matrix)
            if col is not None:
                return col
    return _im2col_numpy(img, KH, KW, SH, SW, PH, PW, OH, OW, to_matrix)


def col2im_array(col, img_shape, kernel_size, stride, pad, to_matrix=True):
    """Sum patches back into an image of ``img_shape``: the adjoint of im2col.

    Overlapping patches add up; each pixel sums its patches kernel row by
    kernel row, column by column, as DeZero's does.  The result is the
    interior of a padded buffer (a view), as DeZero's is.
    """
    col = np.asarray(col)
    img_shape = tuple(int(s) for s in img_shape)
    N, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW = _geometry(
        "col2im", img_shape, kernel_size, stride, pad)
    if to_matrix:
        want = (N * OH * OW, C * KH * KW)
        if col.shape != want:
            raise ValueError(f"col2im: col of shape {col.shape} does not match image "
                             f"shape {img_shape} (expected {want})")
        col = col.reshape(N, OH, OW, C, KH, KW).transpose(0, 3, 4, 5, 1, 2)
    elif col.shape != (N, C, KH, KW, OH, OW):
        raise ValueError(f"col2im: col of shape {col.shape} does not match image "
                         f"shape {img_shape} (expected {(N, C, KH, KW, OH, OW)})")
    if _K is not None:
        img = _K.col2im(col, img_shape, KH, KW, SH, SW, PH, PW)
        if img is not None:
            return img
    img = np.zeros((N, C, H + 2 * PH + SH - 1, W + 2 * PW + SW - 1), dtype=col.dtype)
    for j in range(KH):
        j_lim = j + SH * OH
        for i in range(KW):
            i_lim = i + SW * OW
            img[:, :, j:j_lim:SH, i:i_lim:SW] += col[:, :, j, i, :, :]
    return img[:, :, PH:H + PH, PW:W + PW]


# =============================================================================
# the array computations of the functions below
# =============================================================================
# Each tensordot of DeZero's is NumPy's tensordot written out: the operands
# transposed and reshaped to matrices (a view where NumPy's reshape gives
# one, else a C-contiguous copy), one np.dot, the result reshaped.  The
# im2col operand comes from the kernel already in matrix form.
#
# A convolution's backward needs two arrays of the im2col matrix's size: the
# product of the input gradient (before col2im) and the im2col of the input
# for the filter gradient.  Fresh memory that large is page-faulted in on
# every use (fastgrad returns blocks of 1 MiB or more to the OS when they
# are freed), so a Conv2d keeps its forward's im2col buffer, up to
# _SCRATCH_MAX bytes, for its backward to write both into.  The buffer lives
# as long as the graph and is dropped when the backward has run.
_SCRATCH_MAX = 16 << 20


class _Matrix:
    """An im2col matrix (DeZero's tensordot operand) and the array owning
    its memory, which later products and im2cols may be written into."""

    __slots__ = ("m", "buf")

    def __init__(self, m, buf):
        self.m, self.buf = m, buf


def _im2col_matrix(x, kernel_size, stride, pad, buf=None):
    """DeZero's ``im2col_array(x, ..., to_matrix=True)``, written into ``buf``
    (a previous result's ``.buf``) when it fits."""
    if _K is not None:
        N, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW = _geometry(
            "conv2d", x.shape, kernel_size, stride, pad)
        view = _matrix_is_view(N, C, KH, KW, OH, OW)
        col = _K.im2col(x, KH, KW, SH, SW, PH, PW, not view, buf)
        if col is not None:
            if view:
                return _Matrix(_col_matrix(col), col)
            return _Matrix(col, col)
    return _Matrix(im2col_array(x, kernel_size, stride, pad, to_matrix=True), None)


def _dot_into(a, b, buf):
    """``np.dot(a, b)`` (2-d), into ``buf``'s memory when it has the result's
    size and dtype (the same BLAS call, writing elsewhere)."""
    if buf is not None:
        shape = (a.shape[0], b.shape[1])
        if buf.size == shape[0] * shape[1] and buf.dtype == np.result_type(a, b):
            return np.dot(a, b, out=buf.reshape(shape))
    return np.dot(a, b)


def _conv2d_array(x, W, b, stride, pad, col=None):
    """``Conv2d.forward`` on arrays (checked shapes): ``tensordot(col, W,
    ((1, 2, 3), (1, 2, 3)))`` plus ``b``, as a (N, OC, OH, OW) view of the
    (N, OH, OW, OC) product.  ``col``: x's :class:`_Matrix` if made already.
    Returns ``(y, col)``; ``col`` is None on the NumPy path."""
    OC, C, KH, KW = W.shape
    if _K is None:
        cols = im2col_array(x, (KH, KW), stride, pad, to_matrix=False)
        y = np.tensordot(cols, W, ((1, 2, 3), (1, 2, 3)))
    else:
        if col is None:
            col = _im2col_matrix(x, (KH, KW), stride, pad)
        y = np.dot(col.m, W.transpose(1, 2, 3, 0).reshape(C * KH * KW, OC))
        y = y.reshape((x.shape[0], _conv_outsize(x.shape[2], KH, stride[0], pad[0]),
                       _conv_outsize(x.shape[3], KW, stride[1], pad[1]), OC))
        if b is not None and _K.add_bias(y, b) is not None:
            b = None
    if b is not None:
        y += b
    return y.transpose(0, 3, 1, 2), col


def _conv2d_grad_w_array(x, gy, kernel_size, stride, pad, col=None, buf=None):
    """``Conv2DGradW.forward`` on arrays: ``tensordot(gy, im2col(x),
    ((0, 2, 3), (0, 4, 5)))``, the filter gradient (OC, C, KH, KW).  ``col``:
    x's :class:`_Matrix` if made already; else it is made, into ``buf``
    if that fits."""
    if _K is None:
        cols = im2col_array(x, kernel_size, stride, pad, to_matrix=False)
        return np.tensordot(gy, cols, ((0, 2, 3), (0, 4, 5)))
    N, OC, OH, OW = gy.shape
    C = x.shape[1]
    KH, KW = kernel_size
    if col is None:
        col = _im2col_matrix(x, kernel_size, stride, pad, buf)
    if col.m.shape[0] != N * OH * OW:
        raise ValueError(f"conv2d gradient: gy of shape {gy.shape} does not match the "
                         f"{col.m.shape[0]} output positions of x of shape {x.shape}")
    g = gy.transpose(1, 0, 2, 3).reshape(OC, N * OH * OW)
    return np.dot(g, col.m).reshape(OC, C, KH, KW)


def _deconv2d_array(x, W, b, stride, pad, out_hw, buf=None):
    """``Deconv2d.forward`` on arrays (checked shapes): ``tensordot(W, x,
    (0, 1))`` moved to (N, OC, KH, KW, H, W) and summed by col2im, plus ``b``.
    The product goes into ``buf`` if that fits."""
    C, OC, KH, KW = W.shape
    N, _, H, Wd = x.shape
    if _K is None:
        gcol = np.tensordot(W, x, (0, 1))
        gcol = np.rollaxis(gcol, 3)
    else:
        gcol = _dot_into(W.transpose(1, 2, 3, 0).reshape(OC * KH * KW, C),
                         x.transpose(1, 0, 2, 3).reshape(C, N * H * Wd), buf)
        gcol = gcol.reshape(OC, KH, KW, N, H, Wd).transpose(3, 0, 1, 2, 4, 5)
    y = col2im_array(gcol, (N, OC) + tuple(out_hw), (KH, KW), stride, pad,
                     to_matrix=False)
    if b is not None:
        y += b.reshape((1, b.size, 1, 1))
    return y


def _window(name, kernel_size, stride, pad):
    return (int_pair(kernel_size, f"{name}: kernel_size", 1)
            + int_pair(stride, f"{name}: stride", 1) + int_pair(pad, f"{name}: pad", 0))


def _max_pool_array(x, kernel_size, stride, pad):
    """Max pooling forward: ``(y, indexes)``, DeZero's ``col.max(axis=2)`` and
    ``col.argmax(axis=2)`` of the (N, C, KH*KW, OH, OW) col."""
    if _K is not None:
        r = _K.max_pool(x, *_window("pooling", kernel_size, stride, pad))
        if r is not None:
            return r
    col = im2col_array(x, kernel_size, stride, pad, to_matrix=False)
    N, C, KH, KW, OH, OW = col.shape
    col = col.reshape(N, C, KH * KW, OH, OW)
    return col.max(axis=2), col.argmax(axis=2)


def _max_pool_grad_array(gy, indexes, x_shape, x_dtype, kernel_size, stride, pad):
    """Max pooling backward (``Pooling2DGrad.forward``): ``gy`` sent to the
    argmax of each window and summed into an image of ``x_shape``."""
    if _K is not None:
        r = _K.max_pool_grad(gy, indexes, x_shape, x_dtype,
                             *_window("pooling", kernel_size, stride, pad))
        if r is not None:
            return r
    N, C, OH, OW = gy.shape
    N, C, H, W = x_shape
    KH, KW = int_pair(kernel_size, "pooling: kernel_size", 1)
    gcol = np.zeros((N * C * OH * OW * KH * KW), dtype=x_dtype)
    indexes = (indexes.ravel()
               + np.arange(0, indexes.size * KH * KW, KH * KW))
    gcol[indexes] = gy.ravel()
    gcol = gcol.reshape(N, C, OH, OW, KH, KW)
    gcol = np.swapaxes(gcol, 2, 4)
    gcol = np.swapaxes(gcol, 3, 5)
    return col2im_array(gcol, (N, C, H, W), kernel_size, stride, pad, to_matrix=False)


def _max_pool_pick_array(x, indexes, kernel_size, stride, pad):
    """``Pooling2DWithIndexes.forward``: each window's element at ``indexes``."""
    if _K is not None:
        r = _K.max_pool_pick(x, indexes, *_window("pooling", kernel_size, stride, pad))
        if r is not None:
            return r
    col = im2col_array(x, kernel_size, stride, pad, to_matrix=False)
    N, C, KH, KW, OH, OW = col.shape
    col = col.reshape(N, C, KH * KW, OH, OW)
    col = col.transpose(0, 1, 3, 4, 2).reshape(-1, KH * KW)
    indexes = indexes.ravel()
    col = col[np.arange(len(indexes)), indexes]
    return col.reshape(N, C, OH, OW)


def _avg_pool_array(x, kernel_size, stride, pad):
    """Average pooling forward: DeZero's ``col.mean(axis=(2, 3))``."""
    if _K is not None:
        y = _K.avg_pool(x, *_window("average_pooling", kernel_size, stride, pad))
        if y is not None:
            return y
    col = im2col_array(x, kernel_size, stride, pad, to_matrix=False)
    return col.mean(axis=(2, 3))


def _avg_pool_grad_array(gy, x_shape, kernel_size, stride, pad, strong):
    """Average pooling backward on arrays: ``gy / (KH*KW)`` broadcast over
    each window and summed by col2im, DeZero's formula.  ``strong``: the
    divisor is DeZero's int64 array (its dtype rules: float32 gy promotes)."""
    N, C, OH, OW = gy.shape
    KH, KW = int_pair(kernel_size, "average_pooling: kernel_size", 1)
    gy = gy / (np.asarray(KW * KH) if strong else KW * KH)
    gcol = np.broadcast_to(gy.reshape(-1), (KH, KW, N * C * OH * OW))
    gcol = gcol.reshape(KH, KW, N, C, OH, OW).transpose(2, 3, 0, 1, 4, 5)
    return col2im_array(gcol, x_shape, kernel_size, stride, pad, to_matrix=False)


# =============================================================================
# conv2d / deconv2d
# =============================================================================
def _bias_grad(f, gy):
    """``gy.sum(axis=(0, 2, 3))`` for a bias that receives a gradient."""
    if len(f.inputs) < 3 or not _needs_grad(f.inputs[2]):
        return None
    return gy.sum(axis=(0, 2, 3))


class Conv2d(Function):
    """2-d convolution (cross-correlation) of ``x`` with filters ``W``, plus ``b``."""

    _scratch = None     # the forward's im2col buffer, reused by the backward

    def __init__(self, stride=1, pad=0):
        self.stride = int_pair(stride, "conv2d: stride", 1)
        self.pad = int_pair(pad, "conv2d: pad", 0)

    def forward(self, x, W, b=None):
        _check_image("conv2d", x.shape)
        if W.ndim != 4:
            raise ValueError(f"conv2d: W must be 4-d (OC, C, KH, KW), got shape {W.shape}")
        if W.shape[1] != x.shape[1]:
            raise ValueError(f"conv2d: x has {x.shape[1]} channels but W of shape "
                             f"{W.shape} expects {W.shape[1]}")
        if b is not None and b.shape != (W.shape[0],):
            raise ValueError(f"conv2d: b must have shape ({W.shape[0]},), got {b.shape}")
        y, col = _conv2d_array(x, W, b, self.stride, self.pad)
        if (col is not None and col.buf is not None and col.buf.nbytes <= _SCRATCH_MAX
                and _graph_recording()):
            self._scratch = col.buf     # memory for the backward (see _SCRATCH_MAX)
        return y

    def backward(self, gy):
        x, W = self.inputs[0], self.inputs[1]
        if not _graph_recording():
            # No create_graph: the same formulas on arrays, and only the
            # gradients someone receives (an input image given as an array
            # needs none).
            buf, self._scratch = self._scratch, None
            g = gy.data
            gx = gW = None
            if _needs_grad(x):
                gx = _deconv2d_array(g, W.data, None, self.stride, self.pad, x.shape[2:],
                                     buf)
            if _needs_grad(W):
                gW = _conv2d_grad_w_array(x.data, g, W.shape[2:], self.stride, self.pad,
                                          buf=buf)
            if len(self.inputs) < 3:
                return gx, gW
            return gx, gW, _bias_grad(self, g)
        gx = None   # input images given as arrays need no gradient
        if _needs_grad(x):
            gx = deconv2d(gy, W, b=None, stride=self.stride, pad=self.pad,
                          outsize=(x.shape[2], x.shape[3]))
        gW = Conv2DGradW(self)(x, gy)
        if len(self.inputs) < 3:
            return gx, gW
        gb = _F.sum(gy, axis=(0, 2, 3))
        return gx, gW, gb


def conv2d(x, W, b=None, stride=1, pad=0):
    """2-d convolution: ``y[n, o] = sum_c x[n, c] * W[o, c] + b[o]``.

    Parameters
    ----------
    x : Variable or ndarray, shape (N, C, H, W)
    W : Variable or ndarray, shape (OC, C, KH, KW)
    b : Variable or ndarray, shape (OC,), optional
    stride, pad : int or (int, int)

    Returns
    -------
    Variable of shape (N, OC, OH, OW), ``OH = (H + 2*PH - KH) // SH + 1``.

    Examples
    --------
    >>> conv2d(np.ones((1, 3, 5, 5)), np.ones((2, 3, 3, 3)), pad=1).shape
    (1, 2, 5, 5)
    """
    f = Conv2d(stride, pad)
    if b is None:
        return f(x, W)
    return f(x, W, b)


class Deconv2d(Function):
    """Transposed convolution of ``x`` with ``W`` (C, OC, KH, KW), plus ``b``."""

    def __init__(self, stride=1, pad=0, outsize=None):
        self.stride = int_pair(stride, "deconv2d: stride", 1)
        self.pad = int_pair(pad, "deconv2d: pad", 0)
        self.outsize = (None if outsize is None
                        else int_pair(outsize, "deconv2d: outsize", 1))

    def forward(self, x, W, b=None):
        _check_image("deconv2d", x.shape)
        if W.ndim != 4:
            raise ValueError(f"deconv2d: W must be 4-d (C, OC, KH, KW), got shape "
                             f"{W.shape}")
        SH, SW = self.stride
        PH, PW = self.pad
        C, OC, KH, KW = W.shape
        N, xC, H, Wd = x.shape
        if xC != C:
            raise ValueError(f"deconv2d: x has {xC} channels but W of shape {W.shape} "
                             f"expects {C}")
        if b is not None and b.shape != (OC,):
            raise ValueError(f"deconv2d: b must have shape ({OC},), got {b.shape}")
        if self.outsize is None:
            out_h = _deconv_outsize(H, KH, SH, PH)
            out_w = _deconv_outsize(Wd, KW, SW, PW)
            if out_h < 1 or out_w < 1:
                raise ValueError(f"deconv2d: the output would be {out_h}x{out_w} "
                                 f"(input {H}x{Wd}, kernel {KH}x{KW}, pad {PH},{PW})")
        else:
            out_h, out_w = self.outsize
            if (out_h + 2 * PH < KH or out_w + 2 * PW < KW
                    or _conv_outsize(out_h, KH, SH, PH) != H
                    or _conv_outsize(out_w, KW, SW, PW) != Wd):
                raise ValueError(f"deconv2d: outsize {self.outsize} does not fit an "
                                 f"input of {H}x{Wd} with kernel {KH}x{KW}, stride "
                                 f"{self.stride}, pad {self.pad}")
        return _deconv2d_array(x, W, b, self.stride, self.pad, (out_h, out_w))

    def backward(self, gy):
        x, W = self.inputs[0], self.inputs[1]
        if not _graph_recording():
            # gx = conv2d(gy, W) and gW = Conv2DGradW(gy, x) both start from
            # the im2col of gy: it is made once.
            g = gy.data
            gx = gW = col = None
            if _needs_grad(x):
                gx, col = _conv2d_array(g, W.data, None, self.stride, self.pad)
            if _needs_grad(W):
                gW = _conv2d_grad_w_array(g, x.data, W.shape[2:], self.stride, self.pad,
                                          col)
            if len(self.inputs) < 3:
                return gx, gW
            return gx, gW, _bias_grad(self, g)
        gx = conv2d(gy, W, b=None, stride=self.stride, pad=self.pad)
        gW = Conv2DGradW(self)(gy, x)
        if len(self.inputs) < 3:
            return gx, gW
        gb = _F.sum(gy, axis=(0, 2, 3))
        return gx, gW, gb


def deconv2d(x, W, b=None, stride=1, pad=0, outsize=None):
    """Transposed 2-d convolution (the gradient of ``conv2d`` w.r.t. its input).

    Parameters
    ----------
    x : Variable or ndarray, shape (N, C, H, W)
    W : Variable or ndarray, shape (C, OC, KH, KW)
    b : Variable or ndarray, shape (OC,), optional
    stride, pad : int or (int, int)
    outsize : (int, int), optional
        Output height and width; by default ``SH * (H - 1) + KH - 2 * PH``
        (and likewise for the width).

    Examples
    --------
    >>> deconv2d(np.ones((1, 2, 3, 3)), np.ones((2, 4, 3, 3)), stride=2).shape
    (1, 4, 7, 7)
    """
    f = Deconv2d(stride, pad, outsize)
    if b is None:
        return f(x, W)
    return f(x, W, b)


class Conv2DGradW(Function):
    """The filter gradient of a convolution, as a differentiable function.

    Built from the ``Conv2d`` (or ``Deconv2d``) it differentiates; called as
    ``Conv2DGradW(conv)(x, gy)`` it returns ``gW`` of the filter's shape.
    It is bilinear in ``x`` and ``gy``, so its own backward is a transposed
    convolution and a convolution with the incoming gradient.
    """

    def __init__(self, conv2d):
        W = conv2d.inputs[1]
        kh, kw = W.shape[2:]
        self.kernel_size = (kh, kw)
        self.stride = conv2d.stride
        self.pad = conv2d.pad

    def forward(self, x, gy):
        return _conv2d_grad_w_array(x, gy, self.kernel_size, self.stride, self.pad)

    def backward(self, ggW):
        x, gy = self.inputs
        xh, xw = x.shape[2:]
        gx = deconv2d(gy, ggW, stride=self.stride, pad=self.pad, outsize=(xh, xw))
        ggy = conv2d(x, ggW, stride=self.stride, pad=self.pad)
        return gx, ggy


# =============================================================================
# max pooling / average pooling
# =============================================================================
def _set_window(f, name, kernel_size, stride, pad):
    """Validate a pooling window and keep it as given (DeZero keeps ints or pairs)."""
    int_pair(kernel_size, f"{name}: kernel_size", 1)
    int_pair(stride, f"{name}: stride", 1)
    int_pair(pad, f"{name}: pad", 0)
    f.kernel_size = kernel_size
    f.stride = stride
    f.pad = pad


class Pooling(Function):
    """Max pooling over ``kernel_size`` windows (zero padding, as DeZero pads)."""

    def __init__(self, kernel_size, stride=1, pad=0):
        _set_window(self, "pooling", kernel_size, stride, pad)

    def forward(self, x):
        y, self.indexes = _max_pool_array(x, self.kernel_size, self.stride, self.pad)
        return y

    def backward(self, gy):
        if not _graph_recording():
            x = self.inputs[0]
            return _max_pool_grad_array(gy.data, self.indexes, x.shape, x.dtype,
                                        self.kernel_size, self.stride, self.pad)
        return Pooling2DGrad(self)(gy)


class Pooling2DGrad(Function):
    """Gradient of max pooling: each output's gradient goes to its argmax."""

    def __init__(self, mpool2d):
        self.mpool2d = mpool2d
        self.kernel_size = mpool2d.kernel_size
        self.stride = mpool2d.stride
        self.pad = mpool2d.pad
        self.input_shape = mpool2d.inputs[0].shape
        self.dtype = mpool2d.inputs[0].dtype
        self.indexes = mpool2d.indexes

    def forward(self, gy):
        return _max_pool_grad_array(gy, self.indexes, self.input_shape, self.dtype,
                                    self.kernel_size, self.stride, self.pad)

    def backward(self, ggx):
        if not _graph_recording():
            return _max_pool_pick_array(ggx.data, self.indexes, self.kernel_size,
                                        self.stride, self.pad)
        return Pooling2DWithIndexes(self.mpool2d)(ggx)


class Pooling2DWithIndexes(Function):
    """Pick, in each window, the element at the max pooling's argmax.

    Linear in its input; its backward is ``Pooling2DGrad`` again, so max
    pooling can be differentiated any number of times.
    """

    def __init__(self, mpool2d):
        self.mpool2d = mpool2d
        self.kernel_size = mpool2d.kernel_size
        self.stride = mpool2d.stride
        self.pad = mpool2d.pad
        self.input_shape = mpool2d.inputs[0].shape
        self.dtype = mpool2d.inputs[0].dtype
        self.indexes = mpool2d.indexes

    def forward(self, x):
        if x.shape != tuple(self.input_shape):
            raise ValueError(f"Pooling2DWithIndexes: input of shape {x.shape} does "
                             f"not match the pooled input {tuple(self.input_shape)}")
        return _max_pool_pick_array(x, self.indexes, self.kernel_size, self.stride,
                                    self.pad)

    def backward(self, gy):
        if not _graph_recording():
            return _max_pool_grad_array(gy.data, self.indexes, self.input_shape,
                                        self.dtype, self.kernel_size, self.stride,
                                        self.pad)
        return Pooling2DGrad(self.mpool2d)(gy)


def pooling(x, kernel_size, stride=1, pad=0):
    """Max pooling of ``x`` (N, C, H, W) over ``kernel_size`` windows.

    Padding adds zeros (DeZero's convention), which take part in the max.

    Examples
    --------
    >>> pooling(np.arange(16.0).reshape(1, 1, 4, 4), 2, 2).data
    array([[[[ 5.,  7.],
             [13., 15.]]]])
    """
    return Pooling(kernel_size, stride, pad)(x)


class AveragePooling(Function):
    """Mean over ``kernel_size`` windows (zero padding counts in the mean)."""

    def __init__(self, kernel_size, stride=1, pad=0):
        _set_window(self, "average_pooling", kernel_size, stride, pad)
        self.input_shape = None

    def forward(self, x):
        self.input_shape = x.shape
        return _avg_pool_array(x, self.kernel_size, self.stride, self.pad)

    def backward(self, gy):
        if not _graph_recording():
            return _avg_pool_grad_array(gy.data, self.input_shape, self.kernel_size,
                                        self.stride, self.pad, _dezero_dtypes(self))
        N, C, OH, OW = gy.shape
        KH, KW = int_pair(self.kernel_size, "average_pooling: kernel_size", 1)
        gy = gy / (KW * KH)
        gcol = _F.broadcast_to(_F.reshape(gy, (-1,)), (KH, KW, N * C * OH * OW))
        gcol = _F.transpose(_F.reshape(gcol, (KH, KW, N, C, OH, OW)),
                            (2, 3, 0, 1, 4, 5))
        return col2im(gcol, self.input_shape, self.kernel_size, self.stride,
                      self.pad, to_matrix=False)


def average_pooling(x, kernel_size, stride=1, pad=0):
    """Average pooling of ``x`` (N, C, H, W) over ``kernel_size`` windows.

    Examples
    --------
    >>> average_pooling(np.ones((1, 1, 4, 4)), 2, 2).shape
    (1, 1, 2, 2)
    """
    return AveragePooling(kernel_size, stride, pad)(x)


# =============================================================================
# im2col / col2im as functions
# =============================================================================
class Im2col(Function):
    """``im2col_array`` as a differentiable function (backward: ``col2im``)."""

    def __init__(self, kernel_size, stride, pad, to_matrix):
        self.input_shape = None
        self.kernel_size = kernel_size
        self.stride = stride
        self.pad = pad
        self.to_matrix = to_matrix

    def forward(self, x):
        self.input_shape = x.shape
        return im2col_array(x, self.kernel_size, self.stride, self.pad,
                            self.to_matrix)

    def backward(self, gy):
        if not _graph_recording():
            return col2im_array(gy.data, self.input_shape, self.kernel_size,
                                self.stride, self.pad, self.to_matrix)
        return col2im(gy, self.input_shape, self.kernel_size, self.stride,
                      self.pad, self.to_matrix)


def im2col(x, kernel_size, stride=1, pad=0, to_matrix=True):
    """Extract the patches of ``x`` (N, C, H, W) that a filter visits.

    Parameters
    ----------
    x : Variable or ndarray, shape (N, C, H, W)
    kernel_size, stride, pad : int or (int, int)
    to_matrix : bool
        If True the result is ``(N*OH*OW, C*KH*KW)``, else
        ``(N, C, KH, KW, OH, OW)``.

    Examples
    --------
    >>> im2col(np.ones((1, 3, 7, 7)), 5).shape
    (9, 75)
    """
    return Im2col(kernel_size, stride, pad, to_matrix)(x)


class Col2im(Function):
    """``col2im_array`` as a differentiable function (backward: ``im2col``)."""

    def __init__(self, input_shape, kernel_size, stride, pad, to_matrix):
        self.input_shape = input_shape
        self.kernel_size = kernel_size
        self.stride = stride
        self.pad = pad
        self.to_matrix = to_matrix

    def forward(self, x):
        return col2im_array(x, self.input_shape, self.kernel_size, self.stride,
                            self.pad, self.to_matrix)

    def backward(self, gy):
        if not _graph_recording():
            return im2col_array(gy.data, self.kernel_size, self.stride, self.pad,
                                self.to_matrix)
        return im2col(gy, self.kernel_size, self.stride, self.pad, self.to_matrix)


def col2im(x, input_shape, kernel_size, stride=1, pad=0, to_matrix=True):
    """Sum patches ``x`` back into an image of ``input_shape`` (adjoint of im2col)."""
    return Col2im(input_shape, kernel_size, stride, pad, to_matrix)(x)


# =============================================================================
# [simple versions] built from im2col and the general functions
# =============================================================================
def conv2d_simple(x, W, b=None, stride=1, pad=0):
    """``conv2d`` composed of ``im2col``, ``linear``, ``reshape`` and ``transpose``."""
    x, W = as_variable(x), as_variable(W)
    Weight = W
    _check_image("conv2d_simple", x.shape)
    N, C, H, Wd = x.shape
    if Weight.ndim != 4 or Weight.shape[1] != C:
        raise ValueError(f"conv2d_simple: W of shape {Weight.shape} does not fit x "
                         f"with {C} channels (expected (OC, {C}, KH, KW))")
    OC, C, KH, KW = Weight.shape
    SH, SW = int_pair(stride, "conv2d_simple: stride", 1)
    PH, PW = int_pair(pad, "conv2d_simple: pad", 0)
    OH, OW = _out_hw("conv2d_simple", H, Wd, KH, KW, SH, SW, PH, PW)
    col = im2col(x, (KH, KW), stride, pad, to_matrix=True)
    Weight = _F.transpose(_F.reshape(Weight, (OC, -1)))
    t = _F.linear(col, Weight, b)
    return _F.transpose(_F.reshape(t, (N, OH, OW, OC)), (0, 3, 1, 2))


def pooling_simple(x, kernel_size, stride=1, pad=0):
    """Max pooling composed of ``im2col``, ``max``, ``reshape`` and ``transpose``."""
    x = as_variable(x)
    _check_image("pooling_simple", x.shape)
    N, C, H, W = x.shape
    KH, KW = int_pair(kernel_size, "pooling_simple: kernel_size", 1)
    PH, PW = int_pair(pad, "pooling_simple: pad", 0)
    SH, SW = int_pair(stride, "pooling_simple: stride", 1)
    OH, OW = _out_hw("pooling_simple", H, W, KH, KW, SH, SW, PH, PW)
    col = im2col(x, kernel_size, stride, pad, to_matrix=True)
    col = _F.reshape(col, (-1, KH * KW))
    y = _F.max(col, axis=1)
    return _F.transpose(_F.reshape(y, (N, OH, OW, C)), (0, 3, 1, 2))
