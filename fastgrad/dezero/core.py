"""DeZero's full core (``dezero.core``) on fastgrad's engine.

Gradients are Variables, so ``backward(create_graph=True)`` records the
backward pass and ``x.grad.backward()`` gives the next derivative.  A user
``Function`` subclass writes ``backward`` on Variables, as DeZero's step-33+
code does.  With ``create_graph=False`` the engine keeps plain arrays and
wraps them only when ``grad`` is read, so this face runs as fast as the
stage-2 face (``fastgrad``).
"""
import numpy as np

from fastgrad import _core
from fastgrad._core import (  # noqa: F401 - DeZero's names for the built-in ops
    Add, Config, Div, Mul, Neg, Pow, Sub, no_grad, test_mode, using_config,
)
from fastgrad._core import GraphFunction as Function
from fastgrad.functions._common import register_full_face as _register_with_vocabulary

array_types = (np.ndarray,)


class Variable(_core._GraphVariable):
    """A node of the computational graph whose gradient is a Variable.

    Parameters
    ----------
    data : numpy.ndarray or None
        Kept by identity (never copied).  Anything else raises TypeError.
    name : str, optional

    Examples
    --------
    >>> x = Variable(np.array(2.0))
    >>> y = x ** 4 - 2 * x ** 2
    >>> y.backward(create_graph=True)
    >>> x.grad
    variable(24.0)
    """
    __slots__ = ()
    __array_priority__ = 200


class Parameter(Variable):
    """A Variable that a Layer owns and an optimizer updates."""


# The engine and the vocabulary (fastgrad.functions) sit below this face:
# they receive its Variable class instead of importing it.
_core._register_full_face(Variable)
_register_with_vocabulary(Variable)

# Results are full-face Variables even when no input is a Variable.
add = _core.FULL_FACE_FUNCTIONS["add"]
sub = _core.FULL_FACE_FUNCTIONS["sub"]
rsub = _core.FULL_FACE_FUNCTIONS["rsub"]
mul = _core.FULL_FACE_FUNCTIONS["mul"]
div = _core.FULL_FACE_FUNCTIONS["div"]
rdiv = _core.FULL_FACE_FUNCTIONS["rdiv"]
neg = _core.FULL_FACE_FUNCTIONS["neg"]
pow = _core.FULL_FACE_FUNCTIONS["pow"]  # noqa: A001 - DeZero's name


def as_variable(obj):
    """Return ``obj`` if it is a Variable, else ``Variable(obj)``."""
    if isinstance(obj, _core._Variable):
        return obj
    return Variable(obj)


def as_array(x, array_module=np):
    """Return ``array_module.array(x)`` for a scalar, ``x`` itself otherwise."""
    if np.isscalar(x):
        return array_module.array(x)
    return x


def setup_variable():
    """Install the operators and array methods on Variable (idempotent)."""
    _core._install_operators(Variable)


setup_variable()
