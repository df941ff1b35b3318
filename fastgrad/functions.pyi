# Typing stub for fastgrad/functions.py (the function vocabulary).
from typing import Any, Iterable, Optional, Sequence, Tuple, Union

import numpy as np

from fastgrad._core import GraphFunction as Function
from fastgrad._core import (
    Abs as Abs,
    Add as Add,
    Clip as Clip,
    Cos as Cos,
    Div as Div,
    Exp as Exp,
    LeakyReLU as LeakyReLU,
    Log as Log,
    Maximum as Maximum,
    Minimum as Minimum,
    Mul as Mul,
    Neg as Neg,
    Pow as Pow,
    ReLU as ReLU,
    Sigmoid as Sigmoid,
    Sin as Sin,
    Sqrt as Sqrt,
    Sub as Sub,
    Tan as Tan,
    Tanh as Tanh,
    abs as abs,
    add as add,
    clip as clip,
    cos as cos,
    div as div,
    exp as exp,
    leaky_relu as leaky_relu,
    log as log,
    maximum as maximum,
    minimum as minimum,
    mul as mul,
    neg as neg,
    pow as pow,
    rdiv as rdiv,
    relu as relu,
    rsub as rsub,
    sigmoid as sigmoid,
    sin as sin,
    sqrt as sqrt,
    sub as sub,
    tan as tan,
    tanh as tanh,
)

# A Variable of either face, an ndarray or a number.
_Input = Any
_Var = Any
_Shape = Union[int, Sequence[int]]
_Axis = Union[None, int, Sequence[int]]

__all__: list[str]

class Reshape(Function):
    shape: Tuple[int, ...]
    x_shape: Tuple[int, ...]
    def __init__(self, shape: _Shape) -> None: ...

class Transpose(Function):
    axes: Optional[Tuple[int, ...]]
    def __init__(self, axes: Optional[Sequence[int]] = ...) -> None: ...

class GetItem(Function):
    slices: Any
    def __init__(self, slices: Any) -> None: ...

class GetItemGrad(Function):
    slices: Any
    in_shape: Tuple[int, ...]
    def __init__(self, slices: Any, in_shape: Sequence[int]) -> None: ...

class Sum(Function):
    axis: _Axis
    keepdims: bool
    x_shape: Tuple[int, ...]
    def __init__(self, axis: _Axis, keepdims: bool) -> None: ...

class SumTo(Function):
    shape: Tuple[int, ...]
    x_shape: Tuple[int, ...]
    def __init__(self, shape: _Shape) -> None: ...

class BroadcastTo(Function):
    shape: Tuple[int, ...]
    x_shape: Tuple[int, ...]
    def __init__(self, shape: _Shape) -> None: ...

class MatMul(Function): ...
class Linear(Function): ...

class Max(Function):
    axis: _Axis
    keepdims: bool
    def __init__(self, axis: _Axis = ..., keepdims: bool = ...) -> None: ...

class Min(Max): ...

class Softmax(Function):
    axis: _Axis
    def __init__(self, axis: _Axis = ...) -> None: ...

class LogSoftmax(Function):
    axis: _Axis
    def __init__(self, axis: _Axis = ...) -> None: ...

class MeanSquaredError(Function): ...
class SoftmaxCrossEntropy(Function): ...

class Concatenate(Function):
    axis: int
    def __init__(self, axis: int = ...) -> None: ...

class Stack(Function):
    axis: int
    def __init__(self, axis: int = ...) -> None: ...

def reshape(x: _Input, shape: _Shape) -> _Var: ...
def transpose(x: _Input, axes: Optional[Sequence[int]] = ...) -> _Var: ...
def get_item(x: _Input, slices: Any) -> _Var: ...
def expand_dims(x: _Input, axis: int) -> _Var: ...
def flatten(x: _Input) -> _Var: ...
def broadcast_to(x: _Input, shape: _Shape) -> _Var: ...
def sum_to(x: _Input, shape: _Shape) -> _Var: ...
def sum(x: _Input, axis: _Axis = ..., keepdims: bool = ...) -> _Var: ...
def average(x: _Input, axis: _Axis = ..., keepdims: bool = ...) -> _Var: ...
def mean(x: _Input, axis: _Axis = ..., keepdims: bool = ...) -> _Var: ...
def max(x: _Input, axis: _Axis = ..., keepdims: bool = ...) -> _Var: ...
def min(x: _Input, axis: _Axis = ..., keepdims: bool = ...) -> _Var: ...
def matmul(x: _Input, W: _Input) -> _Var: ...
def linear(x: _Input, W: _Input, b: Optional[_Input] = ...) -> _Var: ...
def linear_simple(x: _Input, W: _Input, b: Optional[_Input] = ...) -> _Var: ...
def sigmoid_simple(x: _Input) -> _Var: ...
def softmax(x: _Input, axis: _Axis = ...) -> _Var: ...
def softmax_simple(x: _Input, axis: _Axis = ...) -> _Var: ...
def log_softmax(x: _Input, axis: _Axis = ...) -> _Var: ...
def mean_squared_error(x0: _Input, x1: _Input) -> _Var: ...
def mean_squared_error_simple(x0: _Input, x1: _Input) -> _Var: ...
def softmax_cross_entropy(x: _Input, t: Union[np.ndarray, _Var]) -> _Var: ...
def softmax_cross_entropy_simple(x: _Input, t: Union[np.ndarray, _Var]) -> _Var: ...
def sigmoid_cross_entropy(x: _Input, t: Union[np.ndarray, _Var]) -> _Var: ...
def binary_cross_entropy(p: _Input, t: Union[np.ndarray, _Var]) -> _Var: ...
def accuracy(y: _Input, t: Union[np.ndarray, _Var]) -> _Var: ...
def concatenate(xs: Iterable[_Input], axis: int = ...) -> _Var: ...
def stack(xs: Iterable[_Input], axis: int = ...) -> _Var: ...
