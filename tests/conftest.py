"""Shared test helpers: DeZero as an oracle, and central finite differences."""
import numpy as np
import pytest

from fastgrad import _dezero_loader


def import_dezero(module="dezero"):
    """Import a module of dezero 0.0.13 (the reference), or skip the test.

    ``np.int`` & co. are aliased during the import and removed again
    (``fastgrad._dezero_loader``).  DeZero's code that reads ``np.int`` at
    call time (a few utilities) needs :func:`dezero_numpy_int` around the
    call.
    """
    try:
        return _dezero_loader.import_dezero(module)
    except ImportError as exc:  # not installed, or matplotlib missing
        pytest.skip(str(exc))


dezero_numpy_int = _dezero_loader.numpy_aliases


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


def numerical_grad_wrt(fn, arrays, i, eps=None):
    """Central finite-difference gradient of ``sum(fn(*arrays))`` with respect
    to ``arrays[i]``; every array is taken in float64."""
    others = [np.asarray(a, dtype=np.float64) for a in arrays]

    def f(v):
        args = list(others)
        args[i] = v
        return fn(*args)
    return numerical_grad(f, arrays[i], eps=eps)


def check_grads_keep_dtype(face, fn, arrays, dtype, rtol, atol, seed=0):
    """Gradients of ``sum(fn(*xs) * R)`` on ``face`` against central
    differences, with ``Config.keep_dtype``; returns the output.

    ``face`` is ``fastgrad.dezero``; ``xs`` are its Variables of ``arrays`` in
    ``dtype``, R a fixed random array (``seed``), so that every output
    element counts.  The finite differences run in float64.  With
    ``keep_dtype`` float32 stays float32 (DeZero's default rules are compared
    with DeZero itself in test_dezero_dtypes.py): every grad must have
    ``dtype``.
    """
    arrays = [np.asarray(a, dtype=np.float64) for a in arrays]
    with face.using_config("keep_dtype", True):
        xs = [face.Variable(a.astype(dtype)) for a in arrays]
        y = fn(*xs)
        R = np.random.default_rng(seed).standard_normal(y.shape)
        face.functions.sum(y * R.astype(dtype)).backward()
        for i, x in enumerate(xs):
            def f(a, i=i):
                args = [face.Variable(b) for b in arrays]
                args[i] = face.Variable(a)
                with face.no_grad():
                    return fn(*args).data * R
            num = numerical_grad(f, arrays[i])
            assert x.grad.dtype == dtype
            np.testing.assert_allclose(x.grad.data, num, rtol=rtol, atol=atol,
                                       err_msg=f"gradient of input {i}")
    return y


def layout(a, kind):
    """The same values as ``a`` in another memory layout.

    ``kind``: ``contiguous``, ``strided`` (every other element of a wider
    array), ``transposed`` (Fortran order), ``reversed`` (negative strides
    along the last axis), ``nhwc`` (a 4-d array channels-last in memory, as
    a convolution returns its output) or ``readonly``.  0-d arrays have no
    other strides: only ``readonly`` changes them.
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
    if kind == "reversed":
        return np.ascontiguousarray(a[..., ::-1])[..., ::-1]
    if kind == "nhwc":
        return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
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

