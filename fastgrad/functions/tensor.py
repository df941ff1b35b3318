"""Shape and indexing ops: reshape, transpose, indexing, broadcasting and
its inverse ``sum_to``, joining arrays.

Each is a full-face ``Function`` (``forward`` on ndarrays, ``backward`` on
Variables built from these same functions, so it differentiates again) with
DeZero's class name and a lowercase function beside it.
"""
import numpy as np

from fastgrad._array_utils import (
    as_shape as _as_shape,
    check_sum_to as _check_sum_to,
    is_variable,
    normalize_axis as _normalize_axis,
    sum_to as _sum_to_array,
)
from fastgrad._core import GraphFunction as Function
from fastgrad.functions._common import as_variable, nd, shape_of

__all__ = [
    "Reshape", "Transpose", "GetItem", "GetItemGrad", "SumTo", "BroadcastTo",
    "Concatenate", "Stack",
    "reshape", "expand_dims", "flatten", "transpose", "get_item", "sum_to",
    "broadcast_to", "concatenate", "stack",
]


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
    if shape_of(x) == shape:
        return as_variable(x)
    return Reshape(shape)(x)


def expand_dims(x, axis):
    """Insert an axis of length 1 at position ``axis`` (NumPy's meaning).

    ``axis`` may be negative: -1 appends the new axis at the end, as
    ``np.expand_dims`` does.
    """
    x = as_variable(x)
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
    shape = shape_of(x)
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
    if is_variable(axes):
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
    if is_variable(slices):
        return slices.data
    if isinstance(slices, tuple):
        return tuple(s.data if is_variable(s) else s for s in slices)
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
        return nd(x[self.slices])

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
    x_shape = shape_of(x)
    if x_shape == shape:
        return as_variable(x)
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
    if shape_of(x) == shape:
        return as_variable(x)
    return BroadcastTo(shape)(x)


def _sequence(name, xs):
    if isinstance(xs, np.ndarray) or is_variable(xs):
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
