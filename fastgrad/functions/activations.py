"""Activations beyond the elementwise table: the softmaxes, and the
compositions DeZero keeps as ``*_simple``.

Softmax and log-softmax run DeZero's floating-point operations in DeZero's
order, so float64 results equal DeZero's bit for bit.
"""
from fastgrad._array_utils import logsumexp as _logsumexp
from fastgrad._array_utils import normalize_axis as _normalize_axis
from fastgrad._core import GraphFunction as Function
from fastgrad._core import backend
from fastgrad.functions._common import as_variable, output_of
from fastgrad.functions.elementwise import exp
from fastgrad.functions.reductions import sum

__all__ = ["Softmax", "LogSoftmax", "sigmoid_simple", "softmax_simple", "softmax",
           "log_softmax"]


def sigmoid_simple(x):
    """``1 / (1 + exp(-x))`` composed of elementwise ops."""
    x = as_variable(x)
    return 1 / (1 + exp(-x))


def softmax_simple(x, axis=1):
    """``exp(x) / sum(exp(x), axis)`` composed of elementwise ops (no max shift)."""
    x = as_variable(x)
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
        y = output_of(self)
        if y is None:  # the output is gone: recompute it without recording
            y = as_variable(self.forward(self.inputs[0].data))
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
        y = output_of(self)
        if y is None:
            y = as_variable(self.forward(self.inputs[0].data))
        return gy - exp(y) * sum(gy, axis=self.axis, keepdims=True)


def log_softmax(x, axis=1):
    """Logarithm of the softmax along ``axis``, computed as ``x - logsumexp(x)``."""
    return LogSoftmax(axis)(x)
