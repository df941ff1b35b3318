"""Array-level helpers behind the structural ops (DeZero's ``dezero.utils``).

They work on ndarrays (``reshape_sum_backward`` also on anything with a
``reshape`` method, such as a Variable) and keep DeZero's semantics and
order of floating-point operations, with two corrections:

* ``reshape_sum_backward`` handles a tuple ``axis`` (DeZero 0.0.13 tests
  ``hasattr(axis, 'len')``, which is never true, and fails on tuples).
* ``max_backward_shape`` accepts negative axes.

``sum_to`` raises ``ValueError`` when the shapes are not compatible instead
of returning an array of the wrong shape.
"""
import numbers

import numpy as np

from fastgrad._core import _Variable, backend
from fastgrad._reference import logsumexp

__all__ = ["sum_to", "reshape_sum_backward", "logsumexp", "max_backward_shape"]


# ------------------------------------------------------------ Variables

def is_variable(obj):
    """True for an autodiff Variable of either face (or one that looks like it).

    A Variable carries its array in ``data`` and records its producer in
    ``creator``; an ndarray has a ``data`` attribute too (a memoryview) but
    no ``creator``.
    """
    if isinstance(obj, _Variable):
        return True
    return hasattr(obj, "creator") and hasattr(obj, "data") and not isinstance(obj, np.ndarray)


def array_of(value):
    """The array behind ``value``: a Variable's ``data``, anything else as it is.

    A grad is an ndarray on the stage-2 face and a Variable on the full face;
    ``array_of(v.grad)`` is its array either way (None stays None).
    """
    if isinstance(value, np.ndarray):
        return value
    if is_variable(value):
        return value.data
    return value


# ------------------------------------------------------------ validation


def _all_ints(items):
    for s in items:
        if type(s) is not int:
            return False
    return True


def as_shape(shape, what="shape"):
    """Return ``shape`` as a tuple of Python ints, or raise TypeError."""
    if type(shape) is tuple and _all_ints(shape):  # the common case, without ABC checks
        return shape
    if is_variable(shape):
        raise TypeError(f"{what} must be a tuple of ints, not a Variable")
    if isinstance(shape, (numbers.Integral, np.integer)) and not isinstance(shape, bool):
        return (int(shape),)
    if isinstance(shape, np.ndarray):
        if shape.ndim != 1 or shape.dtype.kind not in "iu":
            raise TypeError(f"{what} must be a tuple of ints, got an array of "
                            f"dtype {shape.dtype} and shape {shape.shape}")
        return tuple(int(s) for s in shape)
    try:
        items = tuple(shape)
    except TypeError:
        raise TypeError(f"{what} must be a tuple of ints, not {type(shape).__name__}") from None
    for s in items:
        if isinstance(s, bool) or not isinstance(s, (numbers.Integral, np.integer)):
            raise TypeError(f"{what} must contain only ints, got {s!r} in {shape!r}")
    return tuple(int(s) for s in items)


def int_pair(x, what, minimum=None, lists=True, wrong_type=TypeError):
    """Return ``(a, b)`` as Python ints from an int or a pair of ints.

    Parameters
    ----------
    x : int or tuple of two ints
        ``n`` stands for ``(n, n)``.  NumPy integers count as ints, bools do
        not.
    what : str
        Names the argument in error messages (``"conv2d: stride"``).
    minimum : int, optional
        The smallest value allowed; ValueError below it.
    lists : bool
        Accept a list of two ints as a pair too (tuples always are).
    wrong_type : type
        The exception for an argument that is not an int or a pair of ints:
        TypeError, or ValueError where DeZero's own ``pair`` is the contract
        (its layers and transforms raise ValueError for every bad size).

    Examples
    --------
    >>> int_pair(3, "kernel_size")
    (3, 3)
    """
    if type(x) is int:          # the common cases, without ABC checks
        if minimum is None or x >= minimum:
            return x, x
    elif (type(x) is tuple and len(x) == 2 and type(x[0]) is int and type(x[1]) is int
            and (minimum is None or (x[0] >= minimum and x[1] >= minimum))):
        return x
    if isinstance(x, tuple) or (lists and isinstance(x, list)):
        if len(x) != 2:
            raise ValueError(f"{what} must be an int or a pair of ints, got {x!r}")
        items = tuple(x)
    else:
        items = (x, x)
    for v in items:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
            raise wrong_type(f"{what} must be an int or a pair of ints, got {x!r}")
        if minimum is not None and v < minimum:
            raise ValueError(f"{what} must be >= {minimum}, got {x!r}")
    return int(items[0]), int(items[1])


def normalize_axis(axis, ndim, what="axis", allow_none=True):
    """Return ``axis`` as a tuple of non-negative ints (``None`` -> all axes).

    Raises TypeError for a non-integer axis (including a Variable) and
    ValueError for an axis out of range or repeated.
    """
    if type(axis) is int and -ndim <= axis < ndim:  # the common case, without ABC checks
        return (axis % ndim,)
    if axis is None:
        if not allow_none:
            raise TypeError(f"{what} must be an int, not None")
        return tuple(range(ndim))
    if is_variable(axis):
        raise TypeError(f"{what} must be an int or a tuple of ints, not a Variable")
    if isinstance(axis, (numbers.Integral, np.integer)) and not isinstance(axis, bool):
        items = (axis,)
    elif isinstance(axis, (tuple, list)):
        items = tuple(axis)
    else:
        raise TypeError(f"{what} must be an int or a tuple of ints, not "
                        f"{type(axis).__name__}")
    out = []
    for a in items:
        if isinstance(a, bool) or not isinstance(a, (numbers.Integral, np.integer)):
            raise TypeError(f"{what} must contain only ints, got {a!r}")
        a = int(a)
        if not -ndim <= a < ndim:
            raise ValueError(f"{what} {a} is out of range for an array with {ndim} "
                             f"dimension{'' if ndim == 1 else 's'}")
        a %= ndim
        if a in out:
            raise ValueError(f"{what} {items!r} repeats axis {a}")
        out.append(a)
    return tuple(out)


def check_sum_to(x_shape, shape):
    """Raise ValueError unless an array of ``x_shape`` can be summed to ``shape``.

    That is, unless ``shape`` broadcasts to ``x_shape`` (DeZero's ``sum_to``
    keeps the trailing ``len(shape)`` axes and sums those where ``shape`` is 1).
    """
    lead = len(x_shape) - len(shape)
    ok = lead >= 0 and all(s == 1 or s == xs for s, xs in zip(shape, x_shape[lead:]))
    if not ok:
        raise ValueError(f"sum_to: an array of shape {tuple(x_shape)} cannot be "
                         f"summed to shape {tuple(shape)}")


# ------------------------------------------------------------ helpers

def sum_to(x, shape):
    """Sum ``x`` over broadcast axes so that the result has ``shape``.

    Leading axes that ``shape`` lacks are summed away; axes where ``shape``
    is 1 are summed with ``keepdims``.  Inverse of ``np.broadcast_to``.

    Parameters
    ----------
    x : ndarray
    shape : tuple of int
        A shape that broadcasts to ``x.shape``.

    Returns
    -------
    ndarray of shape ``shape``

    Examples
    --------
    >>> sum_to(np.ones((2, 3)), (1, 3))
    array([[2., 2., 2.]])
    """
    shape = as_shape(shape)
    check_sum_to(x.shape, shape)
    return backend.sum_to(x, shape)


def sum_backward_shape(x_shape, axis, keepdims):
    """Shape of a ``sum(x, axis, keepdims)`` result with the summed axes kept as 1."""
    ndim = len(x_shape)
    if ndim == 0 or axis is None or keepdims:
        return None
    kept = normalize_axis(axis, ndim)
    return tuple(1 if i in kept else s for i, s in enumerate(x_shape))


def reshape_sum_backward(gy, x_shape, axis, keepdims):
    """Reshape the gradient of ``sum(x, axis, keepdims)`` so it broadcasts to ``x_shape``.

    Parameters
    ----------
    gy : ndarray or Variable
        Gradient with respect to the sum's output.
    x_shape : tuple of int
        Shape of the sum's input.
    axis : None, int or tuple of int
    keepdims : bool

    Returns
    -------
    ``gy.reshape(shape)`` with the summed axes re-inserted as length 1.
    """
    shape = sum_backward_shape(tuple(x_shape), axis, keepdims)
    if shape is None:
        shape = gy.shape
    return gy.reshape(shape)


def max_backward_shape(x, axis):
    """Shape of ``max(x, axis)`` with the reduced axes kept as 1 (a list).

    ``x`` is anything with ``ndim`` and ``shape`` (ndarray or Variable).
    """
    axes = normalize_axis(axis, x.ndim)
    return [1 if ax in axes else s for ax, s in enumerate(x.shape)]
