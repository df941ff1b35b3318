"""CPU/GPU array-module helpers with ``dezero.cuda``'s names.

fastgrad runs on NumPy.  When CuPy is importable these helpers dispatch to it
as DeZero's do; without it ``gpu_enable`` is False, every array is a NumPy
array, and :func:`as_cupy` says that no GPU backend is available.
"""
import numpy as np

from fastgrad._array_utils import array_of

gpu_enable = True
try:
    import cupy as cp
    cupy = cp
except ImportError:
    gpu_enable = False

__all__ = ["gpu_enable", "get_array_module", "as_numpy", "as_cupy"]


def get_array_module(x):
    """Return the array module (``numpy`` or ``cupy``) for `x`.

    Parameters
    ----------
    x : Variable, numpy.ndarray or cupy.ndarray
        The value whose array module is wanted; a Variable stands for its
        ``data``.

    Returns
    -------
    module
        ``numpy``, or ``cupy`` when CuPy is available and `x` lives on the GPU.

    Examples
    --------
    >>> get_array_module(np.ones(3)) is np
    True
    """
    x = array_of(x)
    if not gpu_enable:
        return np
    return cp.get_array_module(x)


def as_numpy(x):
    """Convert `x` to a ``numpy.ndarray``.

    Parameters
    ----------
    x : Variable, numpy.ndarray, cupy.ndarray, scalar or array-like
        A Variable stands for its ``data``.

    Returns
    -------
    numpy.ndarray
        `x` itself when it already is a NumPy array, else a converted copy.

    Examples
    --------
    >>> as_numpy(3.0)
    array(3.)
    """
    x = array_of(x)
    if isinstance(x, np.ndarray):
        return x
    if np.isscalar(x):
        return np.array(x)
    if gpu_enable and isinstance(x, cp.ndarray):
        return cp.asnumpy(x)
    return np.asarray(x)


def as_cupy(x):
    """Convert `x` to a ``cupy.ndarray`` (needs CuPy).

    Parameters
    ----------
    x : Variable, numpy.ndarray, cupy.ndarray or array-like
        A Variable stands for its ``data``.

    Returns
    -------
    cupy.ndarray

    Raises
    ------
    RuntimeError
        When CuPy cannot be imported (no GPU backend is available).

    Examples
    --------
    >>> y = as_cupy(np.ones(3))   # doctest: +SKIP
    """
    x = array_of(x)
    if not gpu_enable:
        raise RuntimeError(
            "as_cupy needs CuPy, which cannot be imported here, so no GPU "
            "backend is available; install the CuPy build for your CUDA "
            "version (e.g. pip install cupy-cuda12x) to move arrays to the "
            "GPU, or keep them on the CPU with as_numpy")
    return cp.asarray(x)
