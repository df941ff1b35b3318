"""Shared test helpers: DeZero as an oracle, and central finite differences."""
import contextlib
import importlib

import numpy as np
import pytest


@contextlib.contextmanager
def _numpy_int_alias():
    # dezero 0.0.13 uses np.int, which NumPy 2 removed; alias it only while
    # DeZero's modules are imported, so nothing else sees the alias.
    had = hasattr(np, "int")
    if not had:
        np.int = int
    try:
        yield
    finally:
        if not had and hasattr(np, "int"):
            del np.int


def import_dezero(module="dezero"):
    """Import a module of dezero 0.0.13 (the reference), or skip the test.

    ``np.int`` is aliased to ``int`` during the import and removed again.
    DeZero's code that reads ``np.int`` at call time (a few utilities) needs
    :func:`dezero_numpy_int` around the call.
    """
    try:
        with _numpy_int_alias():
            importlib.import_module("dezero")
            return importlib.import_module(module)
    except ImportError as exc:  # not installed, or matplotlib missing
        pytest.skip(f"dezero 0.0.13 is not importable: {exc}")


dezero_numpy_int = _numpy_int_alias


def numerical_grad(f, x, eps=None):
    """Central finite-difference gradient of the scalar ``sum(f(x))``.

    ``f`` maps an ndarray to an ndarray (or a number); ``x`` is not modified.
    Computed in float64 whatever the dtype of ``x``.
    """
    x = np.array(x, dtype=np.float64, order="C")  # reshape(-1) below must be a view
    if eps is None:
        eps = 1e-6
    grad = np.zeros_like(x)
    flat = x.reshape(-1)
    g = grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        hi = np.sum(f(x.copy()))
        flat[i] = old - eps
        lo = np.sum(f(x.copy()))
        flat[i] = old
        g[i] = (hi - lo) / (2 * eps)
    return grad


def layout(a, kind):
    """The same values as ``a`` in another memory layout.

    ``kind``: ``contiguous``, ``strided`` (every other element of a wider
    array), ``transposed`` (Fortran order) or ``readonly``.  0-d arrays have
    no other strides: only ``readonly`` changes them.
    """
    if kind == "readonly":
        a = a.copy()
        a.flags.writeable = False
        return a
    if kind == "contiguous" or a.ndim == 0:
        return a
    if kind == "strided":
        big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        view = big[..., ::2]
        view[...] = a
        return view
    if kind == "transposed":
        return np.ascontiguousarray(a.T).T
    raise ValueError(kind)


def op_params(op):
    """The parameters tests call a table op with: its row's example values,
    else the defaults."""
    values = {p[0]: p[1] for p in op.params}
    values.update(dict(op.example))
    return values


def sample_input(op, shape, dtype, rng, which=0):
    """Input ``which`` of table op ``op``: drawn from the row's domain, away
    from its kinks and poles, the inputs apart from each other (no ties)."""
    lo, hi = op.domain
    a = rng.uniform(lo, hi, size=shape) + 0.31 * which
    params = op_params(op)
    for k in op.kinks:
        at = params[k] if isinstance(k, str) else k
        away = at + 0.35 if at + 0.35 < hi else at - 0.35
        a = np.where(np.abs(a - at) < 0.1, away, a)
    return np.asarray(a, dtype=dtype)

