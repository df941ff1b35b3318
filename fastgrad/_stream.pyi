"""Typing stub for the benchmark's memory-bandwidth probe (fastgrad/_stream.pyx)."""
import numpy as np
from numpy.typing import NDArray

GRAIN: int

def copy(a: NDArray[np.float64], b: NDArray[np.float64]) -> None: ...
def triad(
    a: NDArray[np.float64], b: NDArray[np.float64], c: NDArray[np.float64], s: float
) -> None: ...
