"""Pure-NumPy reference path for the row-wise kernels of :mod:`fastgrad._ops`.

Same functions and signatures as :mod:`fastgrad._ops`, plus two formulas the
row-wise ones are built from (``logsumexp``, ``check_labels``).  Every result is the
plain NumPy expression given in each docstring, wrapped in :func:`numpy.asarray`
so that 0-d inputs give a 0-d ndarray rather than a NumPy scalar.  (The
elementwise ops' NumPy formulas are generated from the op table:
``fastgrad._numpy_ops``.)

:mod:`fastgrad._ops` falls back to these functions for every case its compiled
kernels do not take, so they define the semantics (dtypes, broadcasting,
NEP 50 promotion of ``c``, errors).
"""
import numpy as np

__all__ = [
    "logsumexp", "check_labels", "softmax", "softmax_cross_entropy",
    "softmax_cross_entropy_backward", "sum_to", "add_bias",
]

_asarray = np.asarray


def logsumexp(x, axis=1):
    """``log(sum(exp(x), axis, keepdims=True))``, computed stably.

    The maximum along ``axis`` is subtracted before ``exp`` and added back
    after ``log`` (DeZero's order of operations).  Integer input gives a
    floating result, as ``np.exp`` does.

    Examples
    --------
    >>> logsumexp(np.array([[0.0, 0.0]]))
    array([[0.69314718]])
    """
    m = x.max(axis=axis, keepdims=True)
    y = x - m
    if y.dtype.kind in "fc":
        np.exp(y, out=y)
    else:
        y = np.exp(y)
    s = y.sum(axis=axis, keepdims=True)
    np.log(s, out=s)
    if m.dtype == np.result_type(m, s):
        m += s
    else:
        m = m + s
    return m


def check_labels(name, x_shape, t):
    """Raise unless ``t`` holds one integer class label in range per row of an
    (N, C) ``x``: ValueError for shapes and ranges, TypeError for the dtype."""
    if len(x_shape) != 2:
        raise ValueError(f"{name}: x must be 2-d (batch, classes), got shape {x_shape}")
    n, c = x_shape
    if t.dtype.kind not in "iu":
        raise TypeError(f"{name}: t must hold integer class labels, got dtype {t.dtype}")
    if t.size != n:
        raise ValueError(f"{name}: t has {t.size} labels (shape {t.shape}) for a "
                         f"batch of {n} (x shape {x_shape})")
    if t.size and (t.min() < 0 or t.max() >= c):
        bad = t.min() if t.min() < 0 else t.max()
        raise ValueError(f"{name}: label {bad} is out of range for {c} classes")


def softmax_cross_entropy(x, t, keep_softmax=False):
    """Return ``-sum((x - logsumexp(x))[arange(N), t]) / N`` for logits ``x``
    (N, C) and labels ``t`` (N integers), as a 0-d array; with
    ``keep_softmax``, the pair ``(loss, softmax(x))``."""
    check_labels("softmax_cross_entropy", x.shape, t)
    N = x.shape[0]
    log_p = x - logsumexp(x, axis=1)
    log_p = log_p[np.arange(N), t.ravel()]
    loss = _asarray(-log_p.sum() / N)
    return (loss, softmax(x)) if keep_softmax else loss


def softmax(x, axis=1):
    """Return ``exp(x - max) / sum(exp(x - max))`` along ``axis``."""
    y = x - x.max(axis=axis, keepdims=True)
    if y.dtype.kind in "fc":
        np.exp(y, out=y)
    else:
        y = np.exp(y)
    y /= y.sum(axis=axis, keepdims=True)
    return y


def softmax_cross_entropy_backward(x, t, gy, y=None):
    """Return ``(softmax(x) - one_hot(t)) * (gy * (1 / N))``, the gradient of
    :func:`softmax_cross_entropy` with respect to ``x``; ``y`` is
    ``softmax(x)`` when the caller has it."""
    N, C = x.shape
    gy = gy * (1 / N)
    if y is None:
        y = softmax(x)
    dtype = y.dtype if y.dtype.kind == "f" else np.float64
    t_onehot = np.eye(C, dtype=dtype)[t.ravel()]
    return _asarray((y - t_onehot) * gy)


def sum_to(x, shape):
    """Return ``x`` summed over the axes that broadcasting ``shape`` to
    ``x.shape`` adds or stretches (``shape`` must broadcast to it)."""
    lead = x.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(i + lead for i, s in enumerate(shape)
                                      if s == 1 and x.shape[i + lead] != 1)
    y = x.sum(axis=axes, keepdims=True)
    return _asarray(y.reshape(shape) if lead else y)


def add_bias(y, b):
    """``y += b`` in place, where ``b`` broadcasts to ``y`` without changing
    its shape or dtype; returns ``y``."""
    y += b
    return y
