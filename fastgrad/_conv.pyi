"""Typing stub for the convolution and pooling kernels (fastgrad/_conv.pyx).

Each function returns None for an input it does not take; the caller then
runs DeZero's NumPy formula (fastgrad.dezero.functions_conv).
"""
from typing import Any

import numpy as np
from numpy.typing import DTypeLike, NDArray

_Array = NDArray[Any]
_Shape4 = tuple[int, int, int, int]

MAX_POOL_OK: bool
AVG_POOL_OK: bool

def im2col(
    x: _Array, kh: int, kw: int, sh: int, sw: int, ph: int, pw: int, matrix: bool
) -> _Array | None: ...
def col2im(
    col: _Array, img_shape: _Shape4, kh: int, kw: int, sh: int, sw: int, ph: int, pw: int
) -> _Array | None: ...
def max_pool(
    x: _Array, kh: int, kw: int, sh: int, sw: int, ph: int, pw: int
) -> tuple[_Array, NDArray[np.intp]] | None: ...
def max_pool_grad(
    gy: _Array,
    indexes: NDArray[np.intp],
    x_shape: _Shape4,
    x_dtype: DTypeLike,
    kh: int,
    kw: int,
    sh: int,
    sw: int,
    ph: int,
    pw: int,
) -> _Array | None: ...
def max_pool_pick(
    x: _Array, indexes: NDArray[np.intp], kh: int, kw: int, sh: int, sw: int, ph: int, pw: int
) -> _Array | None: ...
def avg_pool(
    x: _Array, kh: int, kw: int, sh: int, sw: int, ph: int, pw: int
) -> _Array | None: ...
def add_bias(y: _Array, b: _Array) -> _Array | None: ...
