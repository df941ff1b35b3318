"""The array computations behind ``fastgrad.dezero.functions_conv``.

Geometry checks, im2col/col2im on arrays, and the forward and backward
arrays of convolution, transposed convolution and pooling: each either the
compiled kernel of ``fastgrad._conv`` or DeZero's NumPy formula, giving the
same arrays (see ``functions_conv``'s docstring).  No graph is built here.
"""
import functools

import numpy as np

from fastgrad._array_utils import int_pair
from fastgrad._core import PURE

if PURE:
    _K = None
else:
    from fastgrad import _conv as _K


# =============================================================================
# argument checks and sizes
# =============================================================================
def conv_outsize(size, k, s, p):
    return (size + p * 2 - k) // s + 1


def deconv_outsize(size, k, s, p):
    return s * (size - 1) + k - 2 * p


def check_image(name, shape):
    if len(shape) != 4:
        raise ValueError(f"{name}: the input must be 4-d (N, C, H, W), got shape "
                         f"{tuple(shape)}")


def out_hw(name, H, W, KH, KW, SH, SW, PH, PW):
    OH = conv_outsize(H, KH, SH, PH)
    OW = conv_outsize(W, KW, SW, PW)
    if H + 2 * PH < KH or W + 2 * PW < KW:
        raise ValueError(f"{name}: kernel {KH}x{KW} is larger than the padded input "
                         f"{H + 2 * PH}x{W + 2 * PW} (input {H}x{W}, pad {PH},{PW})")
    return OH, OW


def _geometry(name, img_shape, kernel_size, stride, pad):
    check_image(name, img_shape)
    N, C, H, W = img_shape
    KH, KW = int_pair(kernel_size, f"{name}: kernel_size", 1)
    SH, SW = int_pair(stride, f"{name}: stride", 1)
    PH, PW = int_pair(pad, f"{name}: pad", 0)
    OH, OW = out_hw(name, H, W, KH, KW, SH, SW, PH, PW)
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
# for the filter gradient.  A Conv2d keeps its forward's im2col buffer, up
# to SCRATCH_MAX bytes, for its backward to write both into: one block
# instead of two, already in cache and mapped.  The buffer lives
# as long as the graph and is dropped when the backward has run.
SCRATCH_MAX = 16 << 20


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


def conv2d_array(x, W, b, stride, pad, col=None):
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
        y = y.reshape((x.shape[0], conv_outsize(x.shape[2], KH, stride[0], pad[0]),
                       conv_outsize(x.shape[3], KW, stride[1], pad[1]), OC))
        if b is not None and _K.add_bias(y, b) is not None:
            b = None
    if b is not None:
        y += b
    return y.transpose(0, 3, 1, 2), col


def conv2d_grad_w_array(x, gy, kernel_size, stride, pad, col=None, buf=None):
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


def deconv2d_array(x, W, b, stride, pad, out_hw, buf=None):
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


def max_pool_array(x, kernel_size, stride, pad):
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


def max_pool_grad_array(gy, indexes, x_shape, x_dtype, kernel_size, stride, pad):
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


def max_pool_pick_array(x, indexes, kernel_size, stride, pad):
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


def avg_pool_array(x, kernel_size, stride, pad):
    """Average pooling forward: DeZero's ``col.mean(axis=(2, 3))``."""
    if _K is not None:
        y = _K.avg_pool(x, *_window("average_pooling", kernel_size, stride, pad))
        if y is not None:
            return y
    col = im2col_array(x, kernel_size, stride, pad, to_matrix=False)
    return col.mean(axis=(2, 3))


def avg_pool_grad_array(gy, x_shape, kernel_size, stride, pad, strong):
    """Average pooling backward on arrays: ``gy / (KH*KW)`` broadcast over
    each window and summed by col2im, DeZero's formula.  ``strong``: the
    divisor is DeZero's int64 array (its dtype rules: float32 gy promotes)."""
    N, C, OH, OW = gy.shape
    KH, KW = int_pair(kernel_size, "average_pooling: kernel_size", 1)
    gy = gy / (np.asarray(KW * KH) if strong else KW * KH)
    gcol = np.broadcast_to(gy.reshape(-1), (KH, KW, N * C * OH * OW))
    gcol = gcol.reshape(KH, KW, N, C, OH, OW).transpose(2, 3, 0, 1, 4, 5)
    return col2im_array(gcol, x_shape, kernel_size, stride, pad, to_matrix=False)
