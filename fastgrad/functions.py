"""The function vocabulary: DeZero's ``dezero.functions`` on fastgrad's engine.

``import fastgrad.functions as F`` gives every op in one module: the
elementwise ones (``exp``, ``log``, ``sigmoid``, ...; defined in the engine,
re-exported here) and the structural ops, reductions, matrix products,
activations and losses defined below, each as a ``Function`` class with
DeZero's name and a lowercase function beside it.

Every class here is an ordinary full-face ``Function``: ``forward`` takes
ndarrays and returns ndarrays, ``backward`` takes Variables and returns
Variables built from this module's functions, so every derivative can be
differentiated again (``backward(create_graph=True)``).

Where DeZero 0.0.13 defines a formula (softmax, log-softmax, the losses),
the same floating-point operations run in the same order, so float64 results
equal DeZero's bit for bit.  On the full face the dtypes are DeZero's too
(float32 data may get float64 results where DeZero's formula promotes);
on the stage-2 face, and with ``Config.keep_dtype``, float32 stays
float32.  Beyond DeZero: broadcasting inputs get grads of their own shape,
``matmul`` follows ``np.matmul`` for 1-d and batched operands, and bad
arguments raise ``TypeError`` or ``ValueError`` naming the problem.
"""
import math as _math

import numpy as np

from fastgrad._array_utils import (
    _is_variable,
    as_shape as _as_shape,
    check_sum_to as _check_sum_to,
    logsumexp as _logsumexp,
    max_backward_shape as _max_backward_shape,
    normalize_axis as _normalize_axis,
    sum_backward_shape as _sum_backward_shape,
    sum_to as _sum_to_array,
)
from fastgrad._core import GraphFunction as Function
from fastgrad._core import (
    _dezero_dtypes, _dezero_variable, _graph_recording, _needs_grad, backend,
)
from fastgrad._reference import check_labels as _check_labels
from fastgrad._core import (  # noqa: F401 - re-exported elementwise vocabulary
    Abs,
    Add,
    Clip,
    Cos,
    Div,
    Exp,
    LeakyReLU,
    Log,
    Maximum,
    Minimum,
    Mul,
    Neg,
    Pow,
    ReLU,
    Sigmoid,
    Sin,
    Sqrt,
    Sub,
    Tan,
    Tanh,
    abs,
    add,
    clip,
    cos,
    div,
    exp,
    leaky_relu,
    log,
    maximum,
    minimum,
    mul,
    neg,
    pow,
    rdiv,
    relu,
    rsub,
    sigmoid,
    sin,
    sqrt,
    sub,
    tan,
    tanh,
)

__all__ = [
    # elementwise (engine)
    "Add", "Sub", "Mul", "Div", "Neg", "Pow", "Exp", "Log", "Sin", "Cos", "Tan",
    "Tanh", "Sqrt", "Abs", "Sigmoid", "ReLU", "LeakyReLU", "Clip", "Maximum",
    "Minimum",
    "add", "sub", "rsub", "mul", "div", "rdiv", "neg", "pow", "exp", "log", "sin",
    "cos", "tan", "tanh", "sqrt", "abs", "sigmoid", "relu", "leaky_relu", "clip",
    "maximum", "minimum",
    # structural
    "Reshape", "Transpose", "GetItem", "GetItemGrad", "Sum", "SumTo",
    "BroadcastTo", "MatMul", "Linear", "Max", "Min", "Softmax", "LogSoftmax",
    "MeanSquaredError", "SoftmaxCrossEntropy", "Concatenate", "Stack",
    "reshape", "transpose", "get_item", "expand_dims", "flatten", "broadcast_to",
    "sum_to", "sum", "average", "mean", "max", "min", "matmul", "linear",
    "linear_simple", "sigmoid_simple", "softmax", "softmax_simple",
    "log_softmax", "mean_squared_error", "mean_squared_error_simple",
    "softmax_cross_entropy", "softmax_cross_entropy_simple",
    "sigmoid_cross_entropy", "binary_cross_entropy", "accuracy",
    "concatenate", "stack",
]


# ---------------------------------------------------------------- helpers

_as_variable_impl = None


def _as_variable(obj):
    # The full face's as_variable (ndarrays become full-face Variables);
    # imported on first use because fastgrad.dezero.core imports this module.
    global _as_variable_impl
    if _as_variable_impl is None:
        try:
            from fastgrad.dezero.core import as_variable as impl
        except ImportError:
            from fastgrad._core import as_variable as impl
        _as_variable_impl = impl
    return _as_variable_impl(obj)


def _shape_of(x):
    if isinstance(x, np.ndarray) or _is_variable(x):
        return x.shape
    return np.shape(x)


def _data_of(x):
    # The array behind a Variable, or the argument as an ndarray.
    if _is_variable(x):
        return x.data
    return np.asarray(x)


def _nd(y):
    # NumPy reductions and scalar indexing return NumPy scalars; outputs are arrays.
    return y if isinstance(y, np.ndarray) else np.asarray(y)


def _output(f):
    # The live output Variable of ``f`` (outputs are weak references).
    return f.outputs[0]()


def _swap_last2(x):
    nd = len(x.shape)
    return transpose(x, tuple(range(nd - 2)) + (nd - 1, nd - 2))


# ======================================================================
# Tensor operations: reshape / transpose / get_item / sum / broadcast
# ======================================================================

class Reshape(Function):
    """``y = x.reshape(shape)``; the gradient is reshaped back."""

    def __init__(self, shape):
        self.shape = _as_shape(shape)

    def forward(self, x):
        self.x_shape = x.shape
        try:
            return x.reshape(self.shape)
        except ValueError:
            raise ValueError(f"reshape: cannot reshape an array of shape {x.shape} "
                             f"({x.size} elements) into shape {self.shape}") from None

    def backward(self, gy):
        return reshape(gy, self.x_shape)


def reshape(x, shape):
    """Reshape ``x`` (at most one entry of ``shape`` may be -1).

    Returns ``x`` itself (as a Variable) when it already has ``shape``.

    Examples
    --------
    >>> reshape(Variable(np.zeros(6)), (2, 3)).shape
    (2, 3)
    """
    shape = _as_shape(shape)
    if _shape_of(x) == shape:
        return _as_variable(x)
    return Reshape(shape)(x)


def expand_dims(x, axis):
    """Insert an axis of length 1 at position ``axis`` (NumPy's meaning).

    ``axis`` may be negative: -1 appends the new axis at the end, as
    ``np.expand_dims`` does.
    """
    x = _as_variable(x)
    shape = list(x.shape)
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"expand_dims: axis must be an int, not {type(axis).__name__}")
    nd = len(shape) + 1
    if not -nd <= axis < nd:
        raise ValueError(f"expand_dims: axis {axis} is out of range for a result "
                         f"with {nd} dimensions")
    shape.insert(int(axis) % nd, 1)
    return reshape(x, tuple(shape))


def flatten(x):
    """Reshape ``x`` to ``(x.shape[0], -1)``, keeping the batch axis."""
    shape = _shape_of(x)
    if len(shape) == 0:
        raise ValueError("flatten: the input must have at least 1 dimension "
                         "(the batch axis), got a 0-d array")
    rest = 1
    for s in shape[1:]:
        rest *= s
    return reshape(x, (shape[0], rest))


class Transpose(Function):
    """Permute axes (``axes=None`` reverses them); the gradient is permuted back."""

    def __init__(self, axes=None):
        if axes is not None:
            axes = tuple(_normalize_axis_items(axes))
        self.axes = axes

    def forward(self, x):
        if self.axes is not None:
            if len(self.axes) != x.ndim:
                raise ValueError(f"transpose: axes {self.axes} do not match an array "
                                 f"of shape {x.shape}")
            self._perm = _normalize_axis(self.axes, x.ndim, "transpose: axis")
        return x.transpose(self.axes)

    def backward(self, gy):
        if self.axes is None:
            return transpose(gy)
        inv_axes = tuple(int(i) for i in np.argsort(self._perm))
        return transpose(gy, inv_axes)


def _normalize_axis_items(axes):
    if _is_variable(axes):
        raise TypeError("transpose: axes must be a tuple of ints, not a Variable")
    try:
        items = tuple(axes)
    except TypeError:
        raise TypeError(f"transpose: axes must be a tuple of ints, not "
                        f"{type(axes).__name__}") from None
    for a in items:
        if isinstance(a, bool) or not isinstance(a, (int, np.integer)):
            raise TypeError(f"transpose: axes must contain only ints, got {a!r}")
    return [int(a) for a in items]


def transpose(x, axes=None):
    """Permute the axes of ``x`` (reverse them when ``axes`` is None)."""
    return Transpose(axes)(x)


def _constant_index(slices):
    # An index may hold Variables (e.g. labels); indexing uses their arrays.
    if _is_variable(slices):
        return slices.data
    if isinstance(slices, tuple):
        return tuple(s.data if _is_variable(s) else s for s in slices)
    return slices


def _is_basic_index(slices):
    # Basic indexing (ints, slices, Ellipsis, None) never selects an element
    # twice, so its gradient can be assigned instead of scatter-added.
    items = slices if isinstance(slices, tuple) else (slices,)
    for s in items:
        if s is None or s is Ellipsis or isinstance(s, slice):
            continue
        if isinstance(s, (int, np.integer)) and not isinstance(s, (bool, np.bool_)):
            continue
        return False
    return True


class GetItem(Function):
    """``y = x[slices]`` for basic, fancy (integer) and boolean indices."""

    def __init__(self, slices):
        self.slices = _constant_index(slices)

    def forward(self, x):
        return _nd(x[self.slices])

    def backward(self, gy):
        x, = self.inputs
        return GetItemGrad(self.slices, x.shape)(gy)


class GetItemGrad(Function):
    """Gradient of ``GetItem``: scatter-add ``gy`` into zeros of ``in_shape``.

    Repeated indices accumulate (``np.add.at``); the backward is ``get_item``
    again, so indexing is differentiable to any order.
    """

    def __init__(self, slices, in_shape):
        self.slices = _constant_index(slices)
        self.in_shape = tuple(in_shape)

    def forward(self, gy):
        gx = np.zeros(self.in_shape, dtype=gy.dtype)
        if _is_basic_index(self.slices):
            # Added, not assigned: 0 + gy, the bits of DeZero's np.add.at
            # (a -0.0 gradient becomes +0.0 there too).
            gx[self.slices] += gy
        else:
            np.add.at(gx, self.slices, gy)
        return gx

    def backward(self, ggx):
        return get_item(ggx, self.slices)


def get_item(x, slices):
    """Index ``x`` like an ndarray: ``x[slices]``.

    Integer arrays may repeat an index; the gradient then accumulates.

    Examples
    --------
    >>> get_item(Variable(np.arange(6.0).reshape(2, 3)), (1, [0, 0])).data
    array([3., 3.])
    """
    return GetItem(slices)(x)


class Sum(Function):
    """``y = x.sum(axis, keepdims)``; the gradient is broadcast back."""

    def __init__(self, axis, keepdims):
        if isinstance(axis, list):
            axis = tuple(axis)
        self.axis = axis
        self.keepdims = bool(keepdims)

    def forward(self, x):
        self.x_shape = x.shape
        _normalize_axis(self.axis, x.ndim, "sum: axis")
        return _nd(x.sum(axis=self.axis, keepdims=self.keepdims))

    def backward(self, gy):
        shape = _sum_backward_shape(self.x_shape, self.axis, self.keepdims)
        if shape is not None:
            gy = reshape(gy, shape)
        return broadcast_to(gy, self.x_shape)


def sum(x, axis=None, keepdims=False):
    """Sum of ``x`` over ``axis`` (all axes when None).

    Examples
    --------
    >>> sum(Variable(np.ones((2, 3))), axis=0).data
    array([2., 2., 2.])
    """
    return Sum(axis, keepdims)(x)


def average(x, axis=None, keepdims=False):
    """Mean of ``x`` over ``axis``: ``sum(x, axis, keepdims) * (y.size / x.size)``."""
    x = _as_variable(x)
    y = sum(x, axis, keepdims)
    if x.size == 0:
        return y * _math.nan
    return y * (y.size / x.size)


mean = average


class SumTo(Function):
    """Sum over broadcast axes down to ``shape``; the gradient is broadcast back."""

    def __init__(self, shape):
        self.shape = _as_shape(shape)

    def forward(self, x):
        self.x_shape = x.shape
        return _sum_to_array(x, self.shape)

    def backward(self, gy):
        return broadcast_to(gy, self.x_shape)


def sum_to(x, shape):
    """Sum ``x`` down to ``shape`` (the inverse of ``broadcast_to``)."""
    shape = _as_shape(shape)
    x_shape = _shape_of(x)
    if x_shape == shape:
        return _as_variable(x)
    _check_sum_to(x_shape, shape)
    return SumTo(shape)(x)


class BroadcastTo(Function):
    """``y = np.broadcast_to(x, shape)``; the gradient is summed back."""

    def __init__(self, shape):
        self.shape = _as_shape(shape)

    def forward(self, x):
        self.x_shape = x.shape
        try:
            return np.broadcast_to(x, self.shape)
        except ValueError:
            raise ValueError(f"broadcast_to: an array of shape {x.shape} cannot be "
                             f"broadcast to shape {self.shape}") from None

    def backward(self, gy):
        return sum_to(gy, self.x_shape)


def broadcast_to(x, shape):
    """Broadcast ``x`` to ``shape`` (NumPy's rules)."""
    shape = _as_shape(shape)
    if _shape_of(x) == shape:
        return _as_variable(x)
    return BroadcastTo(shape)(x)


# ======================================================================
# Matrix products
# ======================================================================

def _check_matmul(name, x, W):
    if x.ndim == 0 or W.ndim == 0:
        raise ValueError(f"{name}: operands must have at least 1 dimension, got "
                         f"shapes {x.shape} and {W.shape}")
    k = W.shape[0] if W.ndim == 1 else W.shape[-2]
    if x.shape[-1] != k:
        raise ValueError(f"{name}: shapes {x.shape} and {W.shape} are not aligned "
                         f"({x.shape[-1]} != {k})")


def _matmul_array(name, x, W):
    _check_matmul(name, x, W)
    if x.ndim == 2 and W.ndim == 2:
        return x.dot(W)
    try:
        return np.matmul(x, W)
    except ValueError:
        raise ValueError(f"{name}: batch shapes of {x.shape} and {W.shape} do "
                         f"not broadcast") from None


def _matmul_backward(gy, x, W):
    # gx = gy W^T, gW = x^T gy, with 1-d operands promoted to matrices and
    # batch axes summed back to each operand's own shape.  No product for an
    # operand that was a plain array (the data of a layer, say).
    if x.ndim == 2 and W.ndim == 2:
        if not _graph_recording():    # no create_graph: the same products on arrays
            gy = gy.data
            return (gy.dot(W.data.T) if _needs_grad(x) else None,
                    x.data.T.dot(gy) if _needs_grad(W) else None)
        return (matmul(gy, transpose(W)) if _needs_grad(x) else None,
                matmul(transpose(x), gy) if _needs_grad(W) else None)
    x_shape, W_shape = tuple(x.shape), tuple(W.shape)
    x2 = x if len(x_shape) > 1 else reshape(x, (1,) + x_shape)
    W2 = W if len(W_shape) > 1 else reshape(W, W_shape + (1,))
    batch = np.broadcast_shapes(tuple(x2.shape[:-2]), tuple(W2.shape[:-2]))
    gy2 = reshape(gy, batch + (x2.shape[-2], W2.shape[-1]))
    gx = gW = None
    if _needs_grad(x):
        gx = reshape(sum_to(matmul(gy2, _swap_last2(W2)), tuple(x2.shape)), x_shape)
    if _needs_grad(W):
        gW = reshape(sum_to(matmul(_swap_last2(x2), gy2), tuple(W2.shape)), W_shape)
    return gx, gW


class MatMul(Function):
    """Matrix product ``x @ W`` (``x.dot(W)`` for matrices, ``np.matmul`` otherwise)."""

    def forward(self, x, W):
        return _nd(_matmul_array("matmul", x, W))

    def backward(self, gy):
        x, W = self.inputs
        return _matmul_backward(gy, x, W)


def matmul(x, W):
    """Matrix product of ``x`` and ``W`` (NumPy's ``matmul`` rules).

    Examples
    --------
    >>> matmul(Variable(np.ones((2, 3))), Variable(np.ones((3, 4)))).shape
    (2, 4)
    """
    return MatMul()(x, W)


class Linear(Function):
    """Affine map ``x W + b`` (``b`` optional)."""

    def forward(self, x, W, b=None):
        y = _matmul_array("linear", x, W)
        if b is not None:
            if b.shape != y.shape[y.ndim - b.ndim:]:    # (H,) is the common case
                try:
                    out_shape = np.broadcast_shapes(y.shape, b.shape)
                except ValueError:
                    out_shape = None
                if out_shape != y.shape:
                    raise ValueError(f"linear: bias of shape {b.shape} does not "
                                     f"broadcast to the output shape {y.shape} "
                                     f"(x {x.shape}, W {W.shape})")
            if isinstance(y, np.ndarray) and (b.dtype == y.dtype or
                                              np.result_type(y, b) == y.dtype):
                y = backend.add_bias(y, b)
            elif (isinstance(y, np.ndarray) and _dezero_dtypes(self)
                  and np.can_cast(b.dtype, y.dtype, "same_kind")):
                # DeZero adds the bias in place (y += b): a float32 product
                # stays float32 with a float64 bias.
                y += b
            else:
                y = y + b
        return _nd(y)

    def backward(self, gy):
        inputs = self.inputs
        gx, gW = _matmul_backward(gy, inputs[0], inputs[1])
        if len(inputs) < 3:
            return gx, gW
        b = inputs[2]
        if not _graph_recording():  # (forward checked that b broadcasts to gy)
            return gx, gW, backend.sum_to(gy.data, tuple(b.shape))
        return gx, gW, sum_to(gy, b.shape)


def linear(x, W, b=None):
    """``x W + b``; ``b`` may be None.

    Examples
    --------
    >>> linear(np.ones((2, 3)), np.ones((3, 4)), np.zeros(4)).shape
    (2, 4)
    """
    if b is None:
        return Linear()(x, W)
    return Linear()(x, W, b)


def linear_simple(x, W, b=None):
    """``linear`` composed of ``matmul`` and ``+``, as DeZero writes it.

    The intermediate product's data is released once the sum exists (its
    backward does not need it).
    """
    x, W = _as_variable(x), _as_variable(W)
    t = matmul(x, W)
    if b is None:
        return t
    y = t + b
    t.data = None
    return y


# ======================================================================
# Activations
# ======================================================================

def sigmoid_simple(x):
    """``1 / (1 + exp(-x))`` composed of elementwise ops."""
    x = _as_variable(x)
    return 1 / (1 + exp(-x))


def softmax_simple(x, axis=1):
    """``exp(x) / sum(exp(x), axis)`` composed of elementwise ops (no max shift)."""
    x = _as_variable(x)
    y = exp(x)
    sum_y = sum(y, axis=axis, keepdims=True)
    return y / sum_y


class Softmax(Function):
    """Softmax along ``axis`` with the maximum subtracted first."""

    def __init__(self, axis=1):
        self.axis = axis

    def forward(self, x):
        _normalize_axis(self.axis, x.ndim, "softmax: axis")
        return backend.softmax(x, self.axis)

    def backward(self, gy):
        y = _output(self)
        if y is None:  # the output is gone: recompute it without recording
            y = _as_variable(self.forward(self.inputs[0].data))
        gx = y * gy
        sumdx = sum(gx, axis=self.axis, keepdims=True)
        gx = gx - y * sumdx
        return gx


def softmax(x, axis=1):
    """Softmax of ``x`` along ``axis`` (numerically stable).

    Examples
    --------
    >>> softmax(np.array([[0.0, 0.0]])).data
    array([[0.5, 0.5]])
    """
    return Softmax(axis)(x)


class LogSoftmax(Function):
    """``x - logsumexp(x, axis)``."""

    def __init__(self, axis=1):
        self.axis = axis

    def forward(self, x):
        _normalize_axis(self.axis, x.ndim, "log_softmax: axis")
        log_z = _logsumexp(x, self.axis)
        return x - log_z

    def backward(self, gy):
        y = _output(self)
        if y is None:
            y = _as_variable(self.forward(self.inputs[0].data))
        return gy - exp(y) * sum(gy, axis=self.axis, keepdims=True)


def log_softmax(x, axis=1):
    """Logarithm of the softmax along ``axis``, computed as ``x - logsumexp(x)``."""
    return LogSoftmax(axis)(x)


# ======================================================================
# Losses
# ======================================================================

def _batch_len(name, shape):
    if len(shape) == 0:
        raise ValueError(f"{name}: inputs must have at least 1 dimension (the batch "
                         f"axis), got a 0-d array")
    return shape[0]


def _target(t, x):
    # A target is a constant: a Variable contributes its array.  Keeping
    # dtypes, it takes the floating dtype of the prediction, so a float32
    # model gets a float32 loss and grads from float64 or integer labels (0/1
    # and float32 values convert exactly, so float64 results are unchanged).
    # Under DeZero's rules it stays as it is (integer labels promote).
    t = _data_of(t)
    x_dtype = x.dtype
    if (x_dtype.kind == "f" and t.dtype.kind in "biuf" and t.dtype != x_dtype
            and not _dezero_variable(x)):
        t = t.astype(x_dtype)
    return t


_KERNEL_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def mean_squared_error_simple(x0, x1):
    """``sum((x0 - x1) ** 2) / len(x0 - x1)`` composed of ops."""
    x0, x1 = _as_variable(x0), _as_variable(x1)
    diff = x0 - x1
    n = _batch_len("mean_squared_error_simple", diff.shape)
    return sum(diff ** 2) / n


class MeanSquaredError(Function):
    """``sum((x0 - x1) ** 2) / len(x0 - x1)`` (summed over all but divided by the batch)."""

    def forward(self, x0, x1):
        diff = x0 - x1
        n = _batch_len("mean_squared_error", diff.shape)
        return _nd((diff ** 2).sum() / n)

    def backward(self, gy):
        x0, x1 = self.inputs
        diff = x0 - x1
        gy = broadcast_to(gy, diff.shape)
        gx0 = gy * diff * (2. / len(diff))
        gx1 = -gx0
        return sum_to(gx0, x0.shape), sum_to(gx1, x1.shape)


def mean_squared_error(x0, x1):
    """Mean squared error over the batch axis.

    Examples
    --------
    >>> mean_squared_error(np.array([1.0, 2.0]), np.array([0.0, 0.0])).data
    array(2.5)
    """
    return MeanSquaredError()(x0, x1)


def softmax_cross_entropy_simple(x, t):
    """Softmax cross entropy composed of ops (``softmax``, ``clip``, ``log``, indexing)."""
    x = _as_variable(x)
    t = _data_of(t)
    _check_labels("softmax_cross_entropy_simple", tuple(x.shape), t)
    N = x.shape[0]
    p = softmax(x)
    p = clip(p, 1e-15, 1.0)  # keeps log away from 0
    log_p = log(p)
    tlog_p = get_item(log_p, (np.arange(N), t.ravel()))
    return -1 * sum(tlog_p) / N


class SoftmaxCrossEntropy(Function):
    """Mean over the batch of ``-log softmax(x)[i, t[i]]``; ``t`` holds class labels."""

    _softmax = None     # softmax(x), kept by the forward for the backward

    def forward(self, x, t):
        if _dezero_dtypes(self) and x.dtype not in _KERNEL_FLOATS:
            # DeZero divides by np.float32(N): float16 logits give a float32
            # loss (float32 and float64 ones the same bits either way).
            _check_labels("softmax_cross_entropy", x.shape, t)
            N = x.shape[0]
            log_p = (x - _logsumexp(x, axis=1))[np.arange(N), t.ravel()]
            return _nd(-log_p.sum() / np.float32(N))
        if not _graph_recording():      # no graph: nobody will ask for a backward
            return backend.softmax_cross_entropy(x, t)
        loss, self._softmax = backend.softmax_cross_entropy(x, t, keep_softmax=True)
        return loss

    def backward(self, gy):
        x, t = self.inputs
        dezero = _dezero_dtypes(self)
        if not _graph_recording():    # no create_graph: arrays, one kernel
            x, t, gy = x.data, t.data, gy.data
            if not dezero or (x.dtype == gy.dtype == np.float64):
                return backend.softmax_cross_entropy_backward(x, t, gy, self._softmax), None
            # DeZero's formula: gy * (1/N) and the integer one-hot are strong,
            # so a float32 batch gets a float64 gradient.
            N, CLS_NUM = x.shape
            gy = gy * np.asarray(1 / N)
            y = self._softmax if self._softmax is not None else backend.softmax(x, 1)
            t_onehot = np.eye(CLS_NUM, dtype=t.dtype)[t.ravel()]
            return _nd((y - t_onehot) * gy), None
        N, CLS_NUM = x.shape
        gy = gy * (1 / N)
        y = softmax(x)
        if dezero:
            dtype = t.dtype         # DeZero's one-hot has the labels' dtype
        else:
            dtype = y.dtype if y.dtype.kind == "f" else np.float64
        t_onehot = np.eye(CLS_NUM, dtype=dtype)[t.data.ravel()]
        gx = (y - t_onehot) * gy
        return gx, None


def softmax_cross_entropy(x, t):
    """Softmax cross entropy of logits ``x`` (N, C) and integer labels ``t`` (N,).

    ``t`` is a constant (a Variable contributes its array, and gets no grad).

    Examples
    --------
    >>> softmax_cross_entropy(np.zeros((2, 2)), np.array([0, 1])).data
    array(0.69314718)
    """
    return SoftmaxCrossEntropy()(x, _data_of(t))


def _check_same_size(name, x_shape, t):
    n_x = 1
    for s in x_shape:
        n_x *= s
    if t.size != n_x:
        raise ValueError(f"{name}: t of shape {t.shape} does not match x of shape "
                         f"{x_shape}")


def sigmoid_cross_entropy(x, t):
    """Binary cross entropy of logits ``x`` and 0/1 targets ``t``, averaged over the batch."""
    x = _as_variable(x)
    t = _target(t, x)
    _check_same_size("sigmoid_cross_entropy", tuple(x.shape), t)
    if x.ndim != t.ndim:
        t = t.reshape(*x.shape)
    N = _batch_len("sigmoid_cross_entropy", x.shape)
    p = sigmoid(x)
    p = clip(p, 1e-15, 1.0)
    tlog_p = t * log(p) + (1 - t) * log(1 - p)
    return -1 * sum(tlog_p) / N


def binary_cross_entropy(p, t):
    """Binary cross entropy of probabilities ``p`` and 0/1 targets ``t``, averaged over the batch."""
    p = _as_variable(p)
    t = _target(t, p)
    _check_same_size("binary_cross_entropy", tuple(p.shape), t)
    if p.ndim != t.ndim:
        t = t.reshape(*p.shape)
    N = _batch_len("binary_cross_entropy", t.shape)
    p = clip(p, 1e-15, 0.999)
    tlog_p = t * log(p) + (1 - t) * log(1 - p)
    return -1 * sum(tlog_p) / N


def accuracy(y, t):
    """Fraction of rows of ``y`` whose argmax equals the label in ``t`` (not differentiable).

    Returns a new Variable holding a 0-d float64 array.
    """
    y_data = _data_of(y)
    t_data = _data_of(t)
    if y_data.ndim != 2:
        raise ValueError(f"accuracy: y must be 2-d (batch, classes), got shape "
                         f"{y_data.shape}")
    if t_data.size != y_data.shape[0]:
        raise ValueError(f"accuracy: t has {t_data.size} labels (shape "
                         f"{t_data.shape}) for a batch of {y_data.shape[0]}")
    pred = y_data.argmax(axis=1).reshape(t_data.shape)
    result = pred == t_data
    acc = result.mean()
    return _result_variable(y, np.asarray(acc))


def _result_variable(like, data):
    # A fresh plain Variable (not a Parameter) of the same face as ``like``;
    # the full face for arrays.
    try:
        from fastgrad.dezero.core import Variable as full_variable
    except ImportError:
        full_variable = None
    like = _as_variable(like)
    if full_variable is not None and isinstance(like, full_variable):
        return full_variable(data)
    from fastgrad._core import Variable as stage2_variable
    if isinstance(like, stage2_variable):
        return stage2_variable(data)
    return _as_variable(data)


# ======================================================================
# Joining: concatenate / stack
# ======================================================================

def _sequence(name, xs):
    if isinstance(xs, np.ndarray) or _is_variable(xs):
        raise TypeError(f"{name}: xs must be a sequence of arrays or Variables, "
                        f"not a single {type(xs).__name__}")
    try:
        xs = list(xs)
    except TypeError:
        raise TypeError(f"{name}: xs must be a sequence of arrays or Variables, "
                        f"not {type(xs).__name__}") from None
    if not xs:
        raise ValueError(f"{name}: needs at least one array")
    return xs


class Concatenate(Function):
    """Join arrays along an existing ``axis``; the gradient is split back."""

    def __init__(self, axis=0):
        self.axis = axis

    def forward(self, *xs):
        nd = xs[0].ndim
        if nd == 0:
            raise ValueError("concatenate: 0-d arrays cannot be concatenated")
        self._axis = _normalize_axis(self.axis, nd, "concatenate: axis", allow_none=False)[0]
        for i, x in enumerate(xs):
            if x.ndim != nd:
                raise ValueError(f"concatenate: array 0 has shape {xs[0].shape} but "
                                 f"array {i} has shape {x.shape} (different ndim)")
        self._sizes = [x.shape[self._axis] for x in xs]
        return np.concatenate(xs, axis=self._axis)

    def backward(self, gy):
        lead = (slice(None),) * self._axis
        gxs = []
        start = 0
        for n in self._sizes:
            gxs.append(get_item(gy, lead + (slice(start, start + n),)))
            start += n
        return tuple(gxs)


def concatenate(xs, axis=0):
    """Join a sequence of arrays along ``axis`` (``np.concatenate``)."""
    return Concatenate(axis)(*_sequence("concatenate", xs))


class Stack(Function):
    """Join same-shape arrays along a new ``axis``; the gradient is split back."""

    def __init__(self, axis=0):
        self.axis = axis

    def forward(self, *xs):
        nd = xs[0].ndim + 1
        self._axis = _normalize_axis(self.axis, nd, "stack: axis", allow_none=False)[0]
        for i, x in enumerate(xs):
            if x.shape != xs[0].shape:
                raise ValueError(f"stack: array 0 has shape {xs[0].shape} but array "
                                 f"{i} has shape {x.shape}")
        return np.stack(xs, axis=self._axis)

    def backward(self, gy):
        lead = (slice(None),) * self._axis
        return tuple(get_item(gy, lead + (i,)) for i in range(len(self.inputs)))


def stack(xs, axis=0):
    """Join same-shape arrays along a new ``axis`` (``np.stack``)."""
    return Stack(axis)(*_sequence("stack", xs))


# ======================================================================
# Max / Min
# ======================================================================

class Max(Function):
    """Maximum over ``axis``; the gradient flows to every element equal to it."""

    def __init__(self, axis=None, keepdims=False):
        if isinstance(axis, list):
            axis = tuple(axis)
        self.axis = axis
        self.keepdims = bool(keepdims)

    def _reduce(self, x):
        return x.max(axis=self.axis, keepdims=self.keepdims)

    def forward(self, x):
        _normalize_axis(self.axis, x.ndim, f"{type(self).__name__.lower()}: axis")
        return _nd(self._reduce(x))

    def backward(self, gy):
        x = self.inputs[0]
        y = _output(self)
        y_data = self._reduce(x.data) if y is None else y.data
        shape = tuple(_max_backward_shape(x, self.axis))
        gy = reshape(gy, shape)
        cond = x.data == np.reshape(y_data, shape)
        gy = broadcast_to(gy, cond.shape)
        return gy * cond


class Min(Max):
    """Minimum over ``axis``; the gradient flows to every element equal to it."""

    def _reduce(self, x):
        return x.min(axis=self.axis, keepdims=self.keepdims)


def max(x, axis=None, keepdims=False):
    """Maximum of ``x`` over ``axis`` (ties all receive the gradient, as in DeZero)."""
    return Max(axis, keepdims)(x)


def min(x, axis=None, keepdims=False):
    """Minimum of ``x`` over ``axis`` (ties all receive the gradient, as in DeZero)."""
    return Min(axis, keepdims)(x)


# Network functions (dropout, batch_norm, embed_id) live in their own module.
from fastgrad import nn_functions as _nn_functions  # noqa: E402
from fastgrad.nn_functions import *  # noqa: E402,F401,F403

__all__ = __all__ + list(_nn_functions.__all__)
