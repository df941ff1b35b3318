"""Losses and metrics: mean squared error, the cross entropies, accuracy.

Where DeZero 0.0.13 defines a formula the same floating-point operations
run in the same order, so float64 results equal DeZero's bit for bit; on
the full face the dtypes are DeZero's too.  Targets and labels are
constants: they never get a gradient.
"""
import numpy as np

from fastgrad._array_utils import logsumexp as _logsumexp
from fastgrad._core import GraphFunction as Function
from fastgrad._core import _dezero_dtypes, _dezero_variable, _graph_recording, backend
from fastgrad._reference import check_labels as _check_labels
from fastgrad.functions._common import (
    as_variable, data_of, nd, result_variable,
)
from fastgrad.functions.activations import softmax
from fastgrad.functions.elementwise import clip, log, sigmoid
from fastgrad.functions.reductions import sum
from fastgrad.functions.tensor import broadcast_to, get_item, sum_to

__all__ = [
    "MeanSquaredError", "SoftmaxCrossEntropy",
    "mean_squared_error", "mean_squared_error_simple", "softmax_cross_entropy",
    "softmax_cross_entropy_simple", "sigmoid_cross_entropy", "binary_cross_entropy",
    "accuracy",
]


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
    t = data_of(t)
    x_dtype = x.dtype
    if (x_dtype.kind == "f" and t.dtype.kind in "biuf" and t.dtype != x_dtype
            and not _dezero_variable(x)):
        t = t.astype(x_dtype)
    return t


_KERNEL_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def mean_squared_error_simple(x0, x1):
    """``sum((x0 - x1) ** 2) / len(x0 - x1)`` composed of ops."""
    x0, x1 = as_variable(x0), as_variable(x1)
    diff = x0 - x1
    n = _batch_len("mean_squared_error_simple", diff.shape)
    return sum(diff ** 2) / n


class MeanSquaredError(Function):
    """``sum((x0 - x1) ** 2) / len(x0 - x1)`` (summed over all but divided by the batch)."""

    def forward(self, x0, x1):
        diff = x0 - x1
        n = _batch_len("mean_squared_error", diff.shape)
        return nd((diff ** 2).sum() / n)

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
    x = as_variable(x)
    t = data_of(t)
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
            return nd(-log_p.sum() / np.float32(N))
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
            return nd((y - t_onehot) * gy), None
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
    return SoftmaxCrossEntropy()(x, data_of(t))


def _binary_operands(name, x, t):
    """``x`` as a Variable and the targets ``t`` of as many elements, in
    ``x``'s shape where their dimensions differ."""
    x = as_variable(x)
    t = _target(t, x)
    if t.size != x.size:
        raise ValueError(f"{name}: t of shape {t.shape} does not match x of shape "
                         f"{tuple(x.shape)}")
    if x.ndim != t.ndim:
        t = t.reshape(*x.shape)
    return x, t


def sigmoid_cross_entropy(x, t):
    """Binary cross entropy of logits ``x`` and 0/1 targets ``t``, averaged over the batch."""
    x, t = _binary_operands("sigmoid_cross_entropy", x, t)
    N = _batch_len("sigmoid_cross_entropy", x.shape)
    p = sigmoid(x)
    p = clip(p, 1e-15, 1.0)
    tlog_p = t * log(p) + (1 - t) * log(1 - p)
    return -1 * sum(tlog_p) / N


def binary_cross_entropy(p, t):
    """Binary cross entropy of probabilities ``p`` and 0/1 targets ``t``, averaged over the batch."""
    p, t = _binary_operands("binary_cross_entropy", p, t)
    N = _batch_len("binary_cross_entropy", t.shape)
    p = clip(p, 1e-15, 0.999)
    tlog_p = t * log(p) + (1 - t) * log(1 - p)
    return -1 * sum(tlog_p) / N


def accuracy(y, t):
    """Fraction of rows of ``y`` whose argmax equals the label in ``t`` (not differentiable).

    Returns a new Variable holding a 0-d float64 array.
    """
    y_data = data_of(y)
    t_data = data_of(t)
    if y_data.ndim != 2:
        raise ValueError(f"accuracy: y must be 2-d (batch, classes), got shape "
                         f"{y_data.shape}")
    if t_data.size != y_data.shape[0]:
        raise ValueError(f"accuracy: t has {t_data.size} labels (shape "
                         f"{t_data.shape}) for a batch of {y_data.shape[0]}")
    pred = y_data.argmax(axis=1).reshape(t_data.shape)
    result = pred == t_data
    acc = result.mean()
    return result_variable(y, np.asarray(acc))
