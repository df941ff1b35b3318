"""DeZero's ``dezero.functions`` on the full face.

The same vocabulary as :mod:`fastgrad.functions` (which see); the elementwise
functions here return full-face Variables even for ndarray inputs.
"""
from fastgrad import _core
from fastgrad.functions import *  # noqa: F401,F403
from fastgrad.functions import __all__ as _all
from fastgrad.dezero.core import (  # noqa: F401 - DeZero re-exports the core ops
    Add, Div, Function, Mul, Neg, Pow, Sub, Variable, as_array, as_variable,
)

globals().update(_core.FULL_FACE_FUNCTIONS)
__all__ = sorted(set(_all) | set(_core.FULL_FACE_FUNCTIONS))
