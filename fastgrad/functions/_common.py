"""What the vocabulary's modules share: the face it wraps arrays in, and
small conversions.

The vocabulary sits below both faces.  An ndarray argument becomes a
Variable of the full face (``fastgrad.dezero``) once that face exists, as
the engine's own functions do: ``fastgrad.dezero.core`` registers its
Variable class here when it is imported (:func:`register_full_face`), so
nothing here imports the face above it.  Until then arrays become stage-2
Variables.
"""
import numpy as np

from fastgrad._array_utils import is_variable
from fastgrad._core import Variable as _Stage2Variable
from fastgrad._core import _Variable

_full_variable = None       # the full face's Variable class, once registered


def register_full_face(variable_class):
    """Make ``variable_class`` the Variable that ndarray arguments become.

    Called by ``fastgrad.dezero.core`` on import, with the class it also
    gives the engine (``fastgrad._core._register_full_face``).
    """
    global _full_variable
    if not (isinstance(variable_class, type) and issubclass(variable_class, _Variable)):
        raise TypeError(f"the full face's Variable must be a Variable class, got "
                        f"{variable_class!r}")
    _full_variable = variable_class


def as_variable(obj):
    """``obj`` if it is a Variable, else a Variable of the registered face."""
    if isinstance(obj, _Variable):
        return obj
    if _full_variable is not None:
        return _full_variable(obj)
    return _Stage2Variable(obj)


def result_variable(like, data):
    """A fresh plain Variable (not a Parameter) of ``like``'s face for ``data``.

    For a non-Variable ``like``, of the face :func:`as_variable` gives.
    """
    like = as_variable(like)
    if _full_variable is not None and isinstance(like, _full_variable):
        return _full_variable(data)
    if isinstance(like, _Stage2Variable):
        return _Stage2Variable(data)
    return as_variable(data)


def shape_of(x):
    """The shape of a Variable, an ndarray or anything ``np.shape`` takes."""
    if isinstance(x, np.ndarray) or is_variable(x):
        return x.shape
    return np.shape(x)


def data_of(x):
    """The array behind a Variable, or the argument as an ndarray."""
    if is_variable(x):
        return x.data
    return np.asarray(x)


def nd(y):
    """``y`` as an ndarray: NumPy reductions and scalar indexing return NumPy
    scalars, and outputs are arrays."""
    return y if isinstance(y, np.ndarray) else np.asarray(y)


def output_of(f):
    """The live output Variable of ``f``, or None (outputs are weak references)."""
    return f.outputs[0]()
