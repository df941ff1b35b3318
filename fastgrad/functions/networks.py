"""Neural-network functions: dropout, batch normalisation, embedding lookup.

DeZero 0.0.13's ``dropout``, ``batch_norm`` (DeZero spells it
``batch_nrom``; both names are here) and ``embed_id`` on fastgrad's engine,
each with a full-face ``Function`` class (forward on ndarrays, backward on
Variables).  Forward passes run DeZero's floating-point operations in
DeZero's order, so float64 results equal DeZero's bit for bit, and
``dropout`` draws its mask with the same ``np.random`` call.
"""
import numbers

import numpy as np

from fastgrad._array_utils import is_variable
from fastgrad._core import Config
from fastgrad._core import GraphFunction as Function
from fastgrad.functions._common import as_variable
from fastgrad.functions.reductions import sum
from fastgrad.functions.tensor import GetItemGrad, reshape, transpose

__all__ = [
    "Dropout", "BatchNorm", "EmbedID",
    "dropout", "batch_norm", "batch_nrom", "embed_id",
]


def _check_ratio(name, ratio):
    if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real):
        raise TypeError(f"{name}: dropout_ratio must be a real number, got "
                        f"{type(ratio).__name__}")
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"{name}: dropout_ratio must be in [0, 1), got {ratio!r}")
    return ratio


# =============================================================================
# dropout
# =============================================================================
class Dropout(Function):
    """Inverted dropout: ``y = x * mask / (1 - dropout_ratio)``.

    The mask is drawn in ``forward`` as DeZero draws it,
    ``np.random.rand(*x.shape) > dropout_ratio``, and kept for ``backward``.
    """

    def __init__(self, dropout_ratio=0.5):
        self.dropout_ratio = _check_ratio("Dropout", dropout_ratio)
        self.mask = None
        self.scale = None

    def forward(self, x):
        if x.dtype.kind != "f":
            raise TypeError(f"dropout: the input must be a floating-point array, "
                            f"got dtype {x.dtype}")
        self.mask = np.asarray(np.random.rand(*x.shape) > self.dropout_ratio)
        self.scale = np.array(1.0 - self.dropout_ratio).astype(x.dtype)
        return x * self.mask / self.scale

    def backward(self, gy):
        # DeZero's graph is Mul(x, mask) then Div(., scale); its gradient is
        # (gy / scale) * mask, in that order.
        return gy / self.scale * self.mask


def dropout(x, dropout_ratio=0.5):
    """Randomly zero elements of ``x`` while training; identity in test mode.

    Kept elements are scaled by ``1 / (1 - dropout_ratio)``, so the expected
    value is unchanged.  Reads ``Config.train`` (``test_mode()`` turns it off).

    Parameters
    ----------
    x : Variable or ndarray
    dropout_ratio : float
        Probability of zeroing an element, in ``[0, 1)``.

    Returns
    -------
    Variable

    Examples
    --------
    >>> np.random.seed(0)
    >>> y = dropout(np.ones(4), 0.5)
    >>> with test_mode():
    ...     z = dropout(np.ones(4))    # z.data is the input itself
    """
    _check_ratio("dropout", dropout_ratio)
    x = as_variable(x)
    if Config.train:
        return Dropout(dropout_ratio)(x)
    return x


# =============================================================================
# batch_norm
# =============================================================================
def _to_rows(a):
    # (N, C, H, W) -> (N*H*W, C): channels last, one row per position.
    C = a.shape[1]
    return a.transpose(0, 2, 3, 1).reshape(-1, C)


class BatchNorm(Function):
    """Batch normalisation over axis 0 (and the spatial axes of 4-d input).

    In training (``Config.train``) the batch mean and variance normalise
    ``x`` and the running statistics ``mean``/``var`` (ndarrays) are updated
    in place: ``mean = decay * mean + (1 - decay) * batch_mean``, and ``var``
    likewise with the unbiased batch variance.  In test mode the running
    statistics normalise ``x`` and are not changed.

    The training-mode backward is DeZero's: the batch's inverse standard
    deviation is a constant in it, so second derivatives through the batch
    statistics are not exact (first derivatives are).
    """

    def __init__(self, mean, var, decay, eps):
        self.avg_mean = mean
        self.avg_var = var
        self.decay = decay
        self.eps = eps
        self.inv_std = None

    def _check(self, x, gamma, beta, train):
        if x.ndim not in (2, 4):
            raise ValueError(f"batch_norm: x must be 2-d (N, C) or 4-d (N, C, H, W), "
                             f"got shape {x.shape}")
        C = x.shape[1]
        for name, a in (("gamma", gamma), ("beta", beta)):
            if a.shape != (C,):
                raise ValueError(f"batch_norm: {name} must have shape ({C},) for x of "
                                 f"shape {x.shape}, got {a.shape}")
        for name, a in (("mean", self.avg_mean), ("var", self.avg_var)):
            if not isinstance(a, np.ndarray):
                raise TypeError(f"batch_norm: {name} must be an ndarray (the running "
                                f"statistic, updated in place), got {type(a).__name__}")
            if a.shape != (C,):
                raise ValueError(f"batch_norm: {name} must have shape ({C},) for x of "
                                 f"shape {x.shape}, got {a.shape}")
            if train and not a.flags.writeable:
                raise ValueError(f"batch_norm: {name} is read-only; training updates "
                                 f"it in place")

    def forward(self, x, gamma, beta):
        train = bool(Config.train)
        self._check(x, gamma, beta, train)
        self.train = train
        x_ndim = x.ndim
        if x_ndim == 4:
            N, C, H, W = x.shape
            x = _to_rows(x)
        if train:
            mean = x.mean(axis=0)
            var = x.var(axis=0)
            inv_std = 1 / np.sqrt(var + self.eps)
            xc = (x - mean) * inv_std

            m = x.size // gamma.size
            s = m - 1. if m - 1. > 1. else 1.
            adjust = m / s  # unbiased variance for the running estimate
            self.avg_mean *= self.decay
            self.avg_mean += (1 - self.decay) * mean
            self.avg_var *= self.decay
            self.avg_var += (1 - self.decay) * adjust * var
        else:
            # The running mean as it is now: later training calls change it
            # in place before this function's backward may run.
            mean = self.avg_mean.copy()
            inv_std = 1 / np.sqrt(self.avg_var + self.eps)
            xc = (x - mean) * inv_std
            self.test_mean = mean
        self.inv_std = inv_std
        y = gamma * xc + beta
        if x_ndim == 4:
            y = y.reshape(N, H, W, C).transpose(0, 3, 1, 2)
        return y

    def backward(self, gy):
        gy_ndim = gy.ndim
        if gy_ndim == 4:
            N, C, H, W = gy.shape
            gy = reshape(transpose(gy, (0, 2, 3, 1)), (-1, C))
        x, gamma, beta = self.inputs
        batch_size = len(gy)
        if x.ndim == 4:
            x = reshape(transpose(x, (0, 2, 3, 1)), (-1, x.shape[1]))

        if self.train:
            mean = sum(x, axis=0) / batch_size
            xc = (x - mean) * self.inv_std
            gbeta = sum(gy, axis=0)
            ggamma = sum(xc * gy, axis=0)
            gx = gy - gbeta / batch_size - xc * ggamma / batch_size
            gx = gx * (gamma * self.inv_std)
        else:
            # y = gamma * (x - mean) * inv_std + beta with constant statistics.
            xc = (x - self.test_mean) * self.inv_std
            gbeta = sum(gy, axis=0)
            ggamma = sum(xc * gy, axis=0)
            gx = gy * (gamma * self.inv_std)

        if gy_ndim == 4:
            gx = transpose(reshape(gx, (N, H, W, C)), (0, 3, 1, 2))
        return gx, ggamma, gbeta


def batch_norm(x, gamma, beta, mean, var, decay=0.9, eps=2e-5):
    """Batch normalisation with running statistics (DeZero's ``batch_nrom``).

    Parameters
    ----------
    x : Variable or ndarray
        Shape ``(N, C)`` or ``(N, C, H, W)``.
    gamma, beta : Variable or ndarray
        Scale and shift, shape ``(C,)``.
    mean, var : ndarray
        Running mean and variance, shape ``(C,)``; updated in place while
        ``Config.train`` is on, used for normalising in test mode.
    decay : float
        Weight of the old running statistics in the update.
    eps : float
        Added to the variance before the square root.

    Returns
    -------
    Variable
        ``gamma * (x - mu) / sqrt(sigma2 + eps) + beta``.

    Examples
    --------
    >>> x = np.random.randn(8, 3)
    >>> mean, var = np.zeros(3), np.ones(3)
    >>> y = batch_norm(x, np.ones(3), np.zeros(3), mean, var)
    """
    return BatchNorm(mean, var, decay, eps)(x, gamma, beta)


batch_nrom = batch_norm  # DeZero 0.0.13's spelling


# =============================================================================
# embed_id
# =============================================================================
class EmbedID(Function):
    """Row lookup ``y = W[ids]``; the gradient scatter-adds into ``W``'s shape.

    Repeated ids accumulate their gradients; the backward is differentiable
    again (its own backward is the lookup).
    """

    def __init__(self, ids):
        if is_variable(ids):
            ids = ids.data
        ids = np.asarray(ids)
        if ids.dtype.kind not in "iu":
            raise TypeError(f"embed_id: ids must be integers, got dtype {ids.dtype}")
        self.ids = ids

    def forward(self, W):
        if W.ndim == 0:
            raise ValueError("embed_id: W must have at least 1 dimension (one row "
                             "per id), got a 0-d array")
        n = W.shape[0]
        if self.ids.size and (self.ids.max() >= n or self.ids.min() < -n):
            bad = self.ids[(self.ids >= n) | (self.ids < -n)].ravel()[0]
            raise ValueError(f"embed_id: id {int(bad)} is out of range for W with "
                             f"{n} rows")
        return W[self.ids]

    def backward(self, gy):
        W, = self.inputs
        return GetItemGrad(self.ids, W.shape)(gy)


def embed_id(x, W):
    """Look up the rows of ``W`` at the integer ids ``x`` (``W[x]``).

    Parameters
    ----------
    x : int, array_like of ints or Variable
        Ids, any shape; the result has shape ``x.shape + W.shape[1:]``.
    W : Variable or ndarray
        The embedding matrix, one row per id.

    Examples
    --------
    >>> W = np.arange(6.0).reshape(3, 2)
    >>> embed_id(np.array([2, 0]), W).data
    array([[4., 5.],
           [0., 1.]])
    """
    return EmbedID(x)(W)
