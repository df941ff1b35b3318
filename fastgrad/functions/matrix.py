"""Matrix products: ``matmul`` and the affine map ``linear``.

Without ``create_graph`` the backward runs on arrays (the same products);
an operand that is a plain array (a layer's input data) gets no gradient
product at all.
"""
import numpy as np

from fastgrad._core import GraphFunction as Function
from fastgrad._core import _dezero_dtypes, _graph_recording, _needs_grad, backend
from fastgrad.functions._common import as_variable, nd
from fastgrad.functions.tensor import reshape, sum_to, transpose

__all__ = ["MatMul", "Linear", "matmul", "linear", "linear_simple"]


def _swap_last2(x):
    nd = len(x.shape)
    return transpose(x, tuple(range(nd - 2)) + (nd - 1, nd - 2))


def _check_matmul(name, x, W):
    if x.ndim == 0 or W.ndim == 0:
        raise ValueError(f"{name}: operands must have at least 1 dimension, got "
                         f"shapes {x.shape} and {W.shape}")
    k = W.shape[0] if W.ndim == 1 else W.shape[-2]
    if x.shape[-1] != k:
        raise ValueError(f"{name}: shapes {x.shape} and {W.shape} are not aligned "
                         f"({x.shape[-1]} != {k})")


def _matmul_array(name, x, W):
    _check_matmul(name, x, W)
    if x.ndim == 2 and W.ndim == 2:
        return x.dot(W)
    try:
        return np.matmul(x, W)
    except ValueError:
        raise ValueError(f"{name}: batch shapes of {x.shape} and {W.shape} do "
                         f"not broadcast") from None


def _matmul_backward(gy, x, W):
    # gx = gy W^T, gW = x^T gy, with 1-d operands promoted to matrices and
    # batch axes summed back to each operand's own shape.  No product for an
    # operand that was a plain array (the data of a layer, say).
    if x.ndim == 2 and W.ndim == 2:
        if not _graph_recording():    # no create_graph: the same products on arrays
            gy = gy.data
            return (gy.dot(W.data.T) if _needs_grad(x) else None,
                    x.data.T.dot(gy) if _needs_grad(W) else None)
        return (matmul(gy, transpose(W)) if _needs_grad(x) else None,
                matmul(transpose(x), gy) if _needs_grad(W) else None)
    x_shape, W_shape = tuple(x.shape), tuple(W.shape)
    x2 = x if len(x_shape) > 1 else reshape(x, (1,) + x_shape)
    W2 = W if len(W_shape) > 1 else reshape(W, W_shape + (1,))
    batch = np.broadcast_shapes(tuple(x2.shape[:-2]), tuple(W2.shape[:-2]))
    gy2 = reshape(gy, batch + (x2.shape[-2], W2.shape[-1]))
    gx = gW = None
    if _needs_grad(x):
        gx = reshape(sum_to(matmul(gy2, _swap_last2(W2)), tuple(x2.shape)), x_shape)
    if _needs_grad(W):
        gW = reshape(sum_to(matmul(_swap_last2(x2), gy2), tuple(W2.shape)), W_shape)
    return gx, gW


class MatMul(Function):
    """Matrix product ``x @ W`` (``x.dot(W)`` for matrices, ``np.matmul`` otherwise)."""

    def forward(self, x, W):
        return nd(_matmul_array("matmul", x, W))

    def backward(self, gy):
        x, W = self.inputs
        return _matmul_backward(gy, x, W)


def matmul(x, W):
    """Matrix product of ``x`` and ``W`` (NumPy's ``matmul`` rules).

    Examples
    --------
    >>> matmul(Variable(np.ones((2, 3))), Variable(np.ones((3, 4)))).shape
    (2, 4)
    """
    return MatMul()(x, W)


class Linear(Function):
    """Affine map ``x W + b`` (``b`` optional)."""

    def forward(self, x, W, b=None):
        y = _matmul_array("linear", x, W)
        if b is not None:
            if b.shape != y.shape[y.ndim - b.ndim:]:    # (H,) is the common case
                try:
                    out_shape = np.broadcast_shapes(y.shape, b.shape)
                except ValueError:
                    out_shape = None
                if out_shape != y.shape:
                    raise ValueError(f"linear: bias of shape {b.shape} does not "
                                     f"broadcast to the output shape {y.shape} "
                                     f"(x {x.shape}, W {W.shape})")
            if isinstance(y, np.ndarray) and (b.dtype == y.dtype or
                                              np.result_type(y, b) == y.dtype):
                y = backend.add_bias(y, b)
            elif (isinstance(y, np.ndarray) and _dezero_dtypes(self)
                  and np.can_cast(b.dtype, y.dtype, "same_kind")):
                # DeZero adds the bias in place (y += b): a float32 product
                # stays float32 with a float64 bias.
                y += b
            else:
                y = y + b
        return nd(y)

    def backward(self, gy):
        inputs = self.inputs
        gx, gW = _matmul_backward(gy, inputs[0], inputs[1])
        if len(inputs) < 3:
            return gx, gW
        b = inputs[2]
        if not _graph_recording():  # (forward checked that b broadcasts to gy)
            return gx, gW, backend.sum_to(gy.data, tuple(b.shape))
        return gx, gW, sum_to(gy, b.shape)


def linear(x, W, b=None):
    """``x W + b``; ``b`` may be None.

    Examples
    --------
    >>> linear(np.ones((2, 3)), np.ones((3, 4)), np.zeros(4)).shape
    (2, 4)
    """
    if b is None:
        return Linear()(x, W)
    return Linear()(x, W, b)


def linear_simple(x, W, b=None):
    """``linear`` composed of ``matmul`` and ``+``, as DeZero writes it.

    The intermediate product's data is released once the sum exists (its
    backward does not need it).
    """
    x, W = as_variable(x), as_variable(W)
    t = matmul(x, W)
    if b is None:
        return t
    y = t + b
    t.data = None
    return y
