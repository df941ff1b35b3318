"""Typing stub for the elementwise evaluator (fastgrad/_eval.pyx)."""
from typing import Any

from numpy.typing import NDArray

class Program:
    param_exprs: tuple[Any, ...]
    nparams: int
    def __init__(self, nin: int, nregs: int, outs: tuple[int, ...],
                 code: tuple[tuple[int, int, int, int, int, int, float], ...],
                 param_exprs: tuple[Any, ...] = ...) -> None: ...
    def __call__(self, *arrays: NDArray[Any], params: tuple[float, ...] = ...,
                 out: NDArray[Any] | None = ...) -> NDArray[Any] | tuple[NDArray[Any], ...] | None: ...

def _set_par_min(n: int) -> int: ...
