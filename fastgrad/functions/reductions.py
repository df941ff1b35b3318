"""Reductions: ``sum``, its mean (``average``/``mean``), ``max`` and ``min``.

Each is a full-face ``Function`` whose backward broadcasts the gradient back
with the shape ops of :mod:`fastgrad.functions.tensor`.
"""
import math as _math

import numpy as np

from fastgrad._array_utils import (
    max_backward_shape as _max_backward_shape,
    normalize_axis as _normalize_axis,
    sum_backward_shape as _sum_backward_shape,
)
from fastgrad._core import GraphFunction as Function
from fastgrad.functions._common import as_variable, nd, output_of
from fastgrad.functions.tensor import broadcast_to, reshape

__all__ = ["Sum", "Max", "Min", "sum", "average", "mean", "max", "min"]


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
        return nd(x.sum(axis=self.axis, keepdims=self.keepdims))

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
    x = as_variable(x)
    y = sum(x, axis, keepdims)
    if x.size == 0:
        return y * _math.nan
    return y * (y.size / x.size)


mean = average


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
        return nd(self._reduce(x))

    def backward(self, gy):
        x = self.inputs[0]
        y = output_of(self)
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
