"""Pure-NumPy reference path for the elementwise kernels of :mod:`fastgrad._ops`.

Same functions and signatures as :mod:`fastgrad._ops`.  Every result is the
plain NumPy expression given in each docstring, wrapped in :func:`numpy.asarray`
so that 0-d inputs give a 0-d ndarray rather than a NumPy scalar.  The ``out``
arguments are accepted for signature compatibility and ignored (allowed by the
contract: ``out`` *may* be written, never must).

:mod:`fastgrad._ops` falls back to these functions for every case its compiled
kernels do not take, so they define the semantics (dtypes, broadcasting,
NEP 50 promotion of ``c``, errors).
"""
import numpy as np

__all__ = [
    "add", "sub", "mul", "div", "neg", "pow",
    "mul_backward", "div_backward", "pow_backward", "neg_backward",
    "ones_like", "copy",
]

_asarray = np.asarray


def add(x0, x1):
    """Return ``x0 + x1``."""
    return _asarray(x0 + x1)


def sub(x0, x1):
    """Return ``x0 - x1``."""
    return _asarray(x0 - x1)


def mul(x0, x1):
    """Return ``x0 * x1``."""
    return _asarray(x0 * x1)


def div(x0, x1):
    """Return ``x0 / x1``."""
    return _asarray(x0 / x1)


def neg(x):
    """Return ``-x``."""
    return _asarray(-x)


def pow(x, c):  # noqa: A001 - mirrors the operator name used by the engine
    """Return ``x ** c`` (``c`` kept as given: a Python scalar is weak, NEP 50)."""
    return _asarray(x ** c)


def mul_backward(gy, x0, x1, out=None):
    """Return ``(gy * x1, gy * x0)``, the gradients of ``x0 * x1``."""
    return _asarray(gy * x1), _asarray(gy * x0)


def div_backward(gy, x0, x1, out=None):
    """Return ``(gy / x1, gy * (-x0 / x1 ** 2))``, the gradients of ``x0 / x1``."""
    return _asarray(gy / x1), _asarray(gy * (-x0 / x1 ** 2))


def pow_backward(gy, x, c, out=None):
    """Return ``c * x ** (c - 1) * gy``, the gradient of ``x ** c``."""
    return _asarray(c * x ** (c - 1) * gy)


def neg_backward(gy, out=None):
    """Return ``-gy``, the gradient of ``-x``."""
    return _asarray(-gy)


def ones_like(a):
    """Return ``np.ones_like(a)``, the seed gradient."""
    return np.ones_like(a)


def copy(a):
    """Return ``np.array(a)``, a copy the caller owns."""
    return np.array(a)
