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

from fastgrad.dezero.functions_conv import (  # noqa: E402,F401 - as DeZero re-exports them
    average_pooling, col2im, conv2d, conv2d_simple, deconv2d, im2col, pooling,
    pooling_simple,
)

globals().update(_core.FULL_FACE_FUNCTIONS)
__all__ = sorted(set(_all) | set(_core.FULL_FACE_FUNCTIONS) | {
    "average_pooling", "col2im", "conv2d", "conv2d_simple", "deconv2d", "im2col",
    "pooling", "pooling_simple"})
