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
from fastgrad import functions as _F
from fastgrad._array_utils import int_pair
from fastgrad._core import _dezero_dtypes, _graph_recording, _needs_grad
from fastgrad.dezero.core import Function, as_variable
from fastgrad.dezero._conv_arrays import (
    SCRATCH_MAX, avg_pool_array, avg_pool_grad_array, check_image, col2im_array,
    conv2d_array, conv2d_grad_w_array, conv_outsize, deconv2d_array, deconv_outsize,
    im2col_array, max_pool_array, max_pool_grad_array, max_pool_pick_array, out_hw)

__all__ = [
    "Conv2d", "Deconv2d", "Conv2DGradW", "Pooling", "Pooling2DGrad",
    "Pooling2DWithIndexes", "AveragePooling", "Im2col", "Col2im",
    "conv2d", "conv2d_simple", "deconv2d", "pooling", "pooling_simple",
    "average_pooling", "im2col", "col2im", "im2col_array", "col2im_array",
]


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
        check_image("conv2d", x.shape)
        if W.ndim != 4:
            raise ValueError(f"conv2d: W must be 4-d (OC, C, KH, KW), got shape {W.shape}")
        if W.shape[1] != x.shape[1]:
            raise ValueError(f"conv2d: x has {x.shape[1]} channels but W of shape "
                             f"{W.shape} expects {W.shape[1]}")
        if b is not None and b.shape != (W.shape[0],):
            raise ValueError(f"conv2d: b must have shape ({W.shape[0]},), got {b.shape}")
        y, col = conv2d_array(x, W, b, self.stride, self.pad)
        if (col is not None and col.buf is not None and col.buf.nbytes <= SCRATCH_MAX
                and _graph_recording()):
            self._scratch = col.buf     # memory for the backward (see SCRATCH_MAX)
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
                gx = deconv2d_array(g, W.data, None, self.stride, self.pad, x.shape[2:],
                                     buf)
            if _needs_grad(W):
                gW = conv2d_grad_w_array(x.data, g, W.shape[2:], self.stride, self.pad,
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
        check_image("deconv2d", x.shape)
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
            out_h = deconv_outsize(H, KH, SH, PH)
            out_w = deconv_outsize(Wd, KW, SW, PW)
            if out_h < 1 or out_w < 1:
                raise ValueError(f"deconv2d: the output would be {out_h}x{out_w} "
                                 f"(input {H}x{Wd}, kernel {KH}x{KW}, pad {PH},{PW})")
        else:
            out_h, out_w = self.outsize
            if (out_h + 2 * PH < KH or out_w + 2 * PW < KW
                    or conv_outsize(out_h, KH, SH, PH) != H
                    or conv_outsize(out_w, KW, SW, PW) != Wd):
                raise ValueError(f"deconv2d: outsize {self.outsize} does not fit an "
                                 f"input of {H}x{Wd} with kernel {KH}x{KW}, stride "
                                 f"{self.stride}, pad {self.pad}")
        return deconv2d_array(x, W, b, self.stride, self.pad, (out_h, out_w))

    def backward(self, gy):
        x, W = self.inputs[0], self.inputs[1]
        if not _graph_recording():
            # gx = conv2d(gy, W) and gW = Conv2DGradW(gy, x) both start from
            # the im2col of gy: it is made once.
            g = gy.data
            gx = gW = col = None
            if _needs_grad(x):
                gx, col = conv2d_array(g, W.data, None, self.stride, self.pad)
            if _needs_grad(W):
                gW = conv2d_grad_w_array(g, x.data, W.shape[2:], self.stride, self.pad,
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
        return conv2d_grad_w_array(x, gy, self.kernel_size, self.stride, self.pad)

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
        y, self.indexes = max_pool_array(x, self.kernel_size, self.stride, self.pad)
        return y

    def backward(self, gy):
        if not _graph_recording():
            x = self.inputs[0]
            return max_pool_grad_array(gy.data, self.indexes, x.shape, x.dtype,
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
        return max_pool_grad_array(gy, self.indexes, self.input_shape, self.dtype,
                                    self.kernel_size, self.stride, self.pad)

    def backward(self, ggx):
        if not _graph_recording():
            return max_pool_pick_array(ggx.data, self.indexes, self.kernel_size,
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
        return max_pool_pick_array(x, self.indexes, self.kernel_size, self.stride,
                                    self.pad)

    def backward(self, gy):
        if not _graph_recording():
            return max_pool_grad_array(gy.data, self.indexes, self.input_shape,
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
        return avg_pool_array(x, self.kernel_size, self.stride, self.pad)

    def backward(self, gy):
        if not _graph_recording():
            return avg_pool_grad_array(gy.data, self.input_shape, self.kernel_size,
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
    check_image("conv2d_simple", x.shape)
    N, C, H, Wd = x.shape
    if Weight.ndim != 4 or Weight.shape[1] != C:
        raise ValueError(f"conv2d_simple: W of shape {Weight.shape} does not fit x "
                         f"with {C} channels (expected (OC, {C}, KH, KW))")
    OC, C, KH, KW = Weight.shape
    SH, SW = int_pair(stride, "conv2d_simple: stride", 1)
    PH, PW = int_pair(pad, "conv2d_simple: pad", 0)
    OH, OW = out_hw("conv2d_simple", H, Wd, KH, KW, SH, SW, PH, PW)
    col = im2col(x, (KH, KW), stride, pad, to_matrix=True)
    Weight = _F.transpose(_F.reshape(Weight, (OC, -1)))
    t = _F.linear(col, Weight, b)
    return _F.transpose(_F.reshape(t, (N, OH, OW, OC)), (0, 3, 1, 2))


def pooling_simple(x, kernel_size, stride=1, pad=0):
    """Max pooling composed of ``im2col``, ``max``, ``reshape`` and ``transpose``."""
    x = as_variable(x)
    check_image("pooling_simple", x.shape)
    N, C, H, W = x.shape
    KH, KW = int_pair(kernel_size, "pooling_simple: kernel_size", 1)
    PH, PW = int_pair(pad, "pooling_simple: pad", 0)
    SH, SW = int_pair(stride, "pooling_simple: stride", 1)
    OH, OW = out_hw("pooling_simple", H, W, KH, KW, SH, SW, PH, PW)
    col = im2col(x, kernel_size, stride, pad, to_matrix=True)
    col = _F.reshape(col, (-1, KH * KW))
    y = _F.max(col, axis=1)
    return _F.transpose(_F.reshape(y, (N, OH, OW, C)), (0, 3, 1, 2))
