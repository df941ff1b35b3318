"""Layers: DeZero 0.0.13's ``dezero.layers`` on fastgrad's engine.

A :class:`Layer` owns the :class:`~fastgrad.dezero.core.Parameter` objects
and sub-layers assigned to its attributes.  ``params()`` walks them in
DeZero's order (the iteration order of a set of attribute names, as DeZero
keeps them: fixed within a process, so a model here and the same model in
DeZero hand their parameters to an optimizer in the same order).

Weights are created with DeZero's initialisation and the same
``np.random`` draws in the same order (lazily, on the first call, when the
input size is not given), evaluated as DeZero evaluates it: under NumPy 2,
``randn(...).astype(dtype) * np.sqrt(1 / I)`` promotes float32 weights to
float64 (``np.sqrt`` returns a float64 NumPy scalar, which is strongly
typed), while biases keep the dtype asked for.  With
``Config.keep_dtype = True`` (read when the weights are created) the
weights are rounded to the dtype asked for (float32 by default).
"""
import os
import secrets
import weakref

import numpy as np

import fastgrad.dezero.functions as F
from fastgrad._array_utils import int_pair
from fastgrad.dezero.core import Config, Parameter
from fastgrad.dezero.functions_conv import conv2d, deconv2d
from fastgrad.functions import batch_norm, embed_id

__all__ = ["Layer", "Linear", "Conv2d", "Deconv2d", "RNN", "LSTM", "EmbedID",
           "BatchNorm"]


def _check_size(owner, name, value, allow_none=False):
    if value is None and allow_none:
        return None
    if (isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer))
            or value < 1):
        raise ValueError(f"{owner}: {name} must be a positive int"
                         f"{' or None' if allow_none else ''}, got {value!r}")
    return int(value)


def _check_dtype(owner, dtype):
    dt = np.dtype(dtype)
    if dt.kind != "f":
        raise TypeError(f"{owner}: dtype must be a floating-point type, got {dt}")
    return dt.type


def _weights(data, dtype):
    # DeZero's expression promotes float32 weights to float64 under NumPy 2;
    # Config.keep_dtype keeps the dtype the layer was asked for.
    if Config.keep_dtype:
        return data.astype(dtype, copy=False)
    return data


# =============================================================================
# Layer (base class)
# =============================================================================
class Layer:
    """Base class of layers and models: a container of parameters.

    Assigning a ``Parameter`` or a ``Layer`` to an attribute registers it;
    ``params()`` yields every parameter, recursing into sub-layers.
    Subclasses implement ``forward``; calling the layer runs it.

    Examples
    --------
    >>> layer = Layer()
    >>> layer.p1 = Parameter(np.array(1.0))
    >>> layer.p2 = Parameter(np.array(2.0))
    >>> sorted(float(p.data) for p in layer.params())
    [1.0, 2.0]
    """

    def __init__(self):
        self._params = set()

    def __setattr__(self, name, value):
        if isinstance(value, (Parameter, Layer)):
            try:
                params = self.__dict__["_params"]
            except KeyError:
                raise TypeError(f"{type(self).__name__}: call super().__init__() in "
                                f"__init__ before assigning parameters or layers"
                                ) from None
            params.add(name)
        super().__setattr__(name, value)

    def __call__(self, *inputs):
        outputs = self.forward(*inputs)
        if not isinstance(outputs, tuple):
            outputs = (outputs,)
        self.inputs = [_weak(x) for x in inputs]
        self.outputs = [_weak(y) for y in outputs]
        return outputs if len(outputs) > 1 else outputs[0]

    def forward(self, *inputs):
        """Compute the layer's output; subclasses implement it."""
        raise NotImplementedError(f"{type(self).__name__}.forward is not implemented")

    def _children(self):
        # (name, Parameter or Layer) in DeZero's order.  A name whose value
        # was later replaced by something else is skipped.
        d = self.__dict__
        for name in self._params:
            obj = d.get(name)
            if isinstance(obj, (Parameter, Layer)):
                yield name, obj

    def params(self):
        """Yield every Parameter of this layer and of its sub-layers."""
        for _, obj in self._children():
            if isinstance(obj, Layer):
                yield from obj.params()
            else:
                yield obj

    def cleargrads(self):
        """Set the grad of every parameter to None."""
        for param in self.params():
            param.cleargrad()

    def to_cpu(self):
        """Move the parameters to the CPU (they are NumPy arrays already)."""
        for param in self.params():
            param.to_cpu()

    def to_gpu(self):
        """Move the parameters to a GPU: needs CuPy, so this raises RuntimeError."""
        for param in self.params():
            param.to_gpu()

    def _flatten_params(self, params_dict, parent_key=""):
        """Fill ``params_dict`` with ``'sub/name': Parameter`` (DeZero's keys)."""
        for name, obj in self._children():
            key = parent_key + "/" + name if parent_key else name
            if isinstance(obj, Layer):
                obj._flatten_params(params_dict, key)
            else:
                params_dict[key] = obj

    def save_weights(self, path):
        """Save the parameters to ``path`` as a compressed ``.npz`` archive.

        Keys are DeZero's (``'l0/W'``, ``'l0/b'``, ...), so DeZero can read
        the file and this can read DeZero's.  As with ``np.savez``, ``.npz``
        is appended to a path that does not end with it.  The archive is
        written to a temporary file in the same directory and renamed over
        ``path``, so an interrupted save never leaves a half-written file.

        Raises
        ------
        ValueError
            If a parameter has no data yet (a lazily sized layer that has
            not been called): run the model on an input first.
        """
        self.to_cpu()
        params_dict = {}
        self._flatten_params(params_dict)
        array_dict = {}
        for key, param in params_dict.items():
            if param.data is None:
                raise ValueError(f"save_weights: parameter {key!r} has no data yet "
                                 f"(its layer creates it on the first call); run the "
                                 f"model on an input before saving")
            array_dict[key] = param.data
        if hasattr(path, "write"):       # a file object: nothing to rename
            np.savez_compressed(path, **array_dict)
            return
        path = os.fspath(path)
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if not path.endswith(".npz"):
            path = path + ".npz"
        _atomic_savez(path, array_dict)

    def load_weights(self, path):
        """Load parameters saved by :meth:`save_weights` (or by DeZero).

        Every parameter must have an array under its key; a parameter that
        already has data must get an array of the same shape.  Nothing is
        changed unless all of them fit.  The file is read with
        ``allow_pickle=False``.

        Raises
        ------
        ValueError
            For a missing or mis-shaped array (naming the parameter), an
            array or file that needs pickling, or a file that is not ``.npz``.
        """
        params_dict = {}
        self._flatten_params(params_dict)
        try:
            npz = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise ValueError(f"load_weights: cannot read {path!r} without pickling "
                             f"(it holds pickled Python objects, not plain arrays): "
                             f"{exc}") from None
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise ValueError(f"load_weights: {path!r} is a single .npy array, not an "
                             f".npz archive of named parameters")
        with npz:
            arrays = {}
            for key, param in params_dict.items():
                if key not in npz.files:
                    raise ValueError(f"load_weights: {path!r} has no array for "
                                     f"parameter {key!r} (it has "
                                     f"{sorted(npz.files)})")
                try:
                    arr = npz[key]
                except ValueError as exc:
                    raise ValueError(f"load_weights: the array for parameter {key!r} "
                                     f"in {path!r} needs pickling (dtype object), "
                                     f"which is refused: {exc}") from None
                if arr.dtype.kind not in "biuf":
                    raise ValueError(f"load_weights: the array for parameter {key!r} "
                                     f"has dtype {arr.dtype}, not a numeric type")
                if param.data is not None and arr.shape != param.data.shape:
                    raise ValueError(f"load_weights: parameter {key!r} has shape "
                                     f"{param.data.shape} but {path!r} holds shape "
                                     f"{arr.shape}")
                arrays[key] = arr
        for key, param in params_dict.items():
            param.data = arrays[key]


def _weak(x):
    # Layer.__call__ keeps weak references to its inputs and outputs, as
    # DeZero does; an input that cannot be weakly referenced (a list, a
    # number) is remembered as None.
    try:
        return weakref.ref(x)
    except TypeError:
        return None


def _atomic_savez(path, array_dict):
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}."
                                  f"{secrets.token_hex(4)}.tmp")
    # os.open with mode 0o666 lets the umask decide the permissions, as for
    # any newly created file.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **array_dict)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise


# =============================================================================
# Linear / Conv2d / Deconv2d
# =============================================================================
class Linear(Layer):
    """Fully connected layer ``y = x W + b``.

    Parameters
    ----------
    out_size : int
    nobias : bool
        Without a bias ``b``.
    dtype : floating-point type
        Of ``b``, and of ``W`` with ``Config.keep_dtype`` (else ``W`` is
        float64 under NumPy 2, as in DeZero).
    in_size : int, optional
        If None, ``W`` is created on the first call from ``x.shape[1]``.

    ``W`` is ``randn(in_size, out_size).astype(dtype) * np.sqrt(1 / in_size)``
    (DeZero's expression), ``b`` zeros.

    Examples
    --------
    >>> layer = Linear(3)
    >>> layer(np.ones((2, 5))).shape
    (2, 3)
    """

    def __init__(self, out_size, nobias=False, dtype=np.float32, in_size=None):
        super().__init__()
        self.in_size = _check_size("Linear", "in_size", in_size, allow_none=True)
        self.out_size = _check_size("Linear", "out_size", out_size)
        self.dtype = _check_dtype("Linear", dtype)

        self.W = Parameter(None, name="W")
        if self.in_size is not None:
            self._init_W()

        if nobias:
            self.b = None
        else:
            self.b = Parameter(np.zeros(out_size, dtype=self.dtype), name="b")

    def _init_W(self, xp=np):
        I, O = self.in_size, self.out_size
        W_data = xp.random.randn(I, O).astype(self.dtype) * np.sqrt(1 / I)
        self.W.data = _weights(W_data, self.dtype)

    def forward(self, x):
        shape = x.shape if hasattr(x, "shape") else np.shape(x)
        if len(shape) < 2:
            raise ValueError(f"Linear: the input must be 2-d (batch, in_size), got "
                             f"shape {tuple(shape)}")
        if self.W.data is None:
            self.in_size = int(shape[1])
            self._init_W()
        elif shape[-1] != self.W.data.shape[0]:
            raise ValueError(f"Linear: the input has {shape[-1]} features (shape "
                             f"{tuple(shape)}) but W has shape {self.W.data.shape}, "
                             f"made for {self.W.data.shape[0]}")
        return F.linear(x, self.W, self.b)


class _ConvBase(Layer):
    _name = ""

    def __init__(self, out_channels, kernel_size, stride=1, pad=0, nobias=False,
                 dtype=np.float32, in_channels=None):
        super().__init__()
        self.in_channels = _check_size(self._name, "in_channels", in_channels,
                                       allow_none=True)
        self.out_channels = _check_size(self._name, "out_channels", out_channels)
        int_pair(kernel_size, f"{self._name}: kernel_size", 1, lists=False,
                 wrong_type=ValueError)
        self.kernel_size = kernel_size
        self.stride = stride
        self.pad = pad
        self.dtype = _check_dtype(self._name, dtype)

        self.W = Parameter(None, name="W")
        if self.in_channels is not None:
            self._init_W()

        if nobias:
            self.b = None
        else:
            self.b = Parameter(np.zeros(out_channels, dtype=self.dtype), name="b")

    def _w_shape(self, C, OC, KH, KW):
        raise NotImplementedError

    def _init_W(self, xp=np):
        C, OC = self.in_channels, self.out_channels
        KH, KW = int_pair(self.kernel_size, f"{self._name}: kernel_size", 1, lists=False,
                          wrong_type=ValueError)
        scale = np.sqrt(1 / (C * KH * KW))
        W_data = xp.random.randn(*self._w_shape(C, OC, KH, KW)).astype(self.dtype) * scale
        self.W.data = _weights(W_data, self.dtype)

    def _prepare(self, x):
        if len(x.shape) != 4:
            raise ValueError(f"{self._name}: the input must be 4-d (N, C, H, W), got "
                             f"shape {tuple(x.shape)}")
        if self.W.data is None:
            self.in_channels = int(x.shape[1])
            self._init_W()


class Conv2d(_ConvBase):
    """2-d convolution layer; ``W`` has shape (out_channels, in_channels, KH, KW).

    Parameters
    ----------
    out_channels : int
    kernel_size, stride, pad : int or (int, int)
    nobias : bool
    dtype : floating-point type
        Of ``b``, and of ``W`` with ``Config.keep_dtype`` (else ``W`` is
        float64 under NumPy 2, as in DeZero).
    in_channels : int, optional
        If None, ``W`` is created on the first call from ``x.shape[1]``.

    ``W`` is ``randn(...).astype(dtype) * np.sqrt(1 / (C * KH * KW))``,
    ``b`` zeros.

    Examples
    --------
    >>> Conv2d(8, 3, pad=1)(np.ones((1, 3, 5, 5))).shape
    (1, 8, 5, 5)
    """
    _name = "Conv2d"

    def _w_shape(self, C, OC, KH, KW):
        return OC, C, KH, KW

    def forward(self, x):
        self._prepare(x)
        return conv2d(x, self.W, self.b, self.stride, self.pad)


class Deconv2d(_ConvBase):
    """Transposed 2-d convolution layer; ``W`` has shape (in_channels, out_channels, KH, KW).

    Parameters as for :class:`Conv2d`.

    Examples
    --------
    >>> Deconv2d(4, 3, stride=2)(np.ones((1, 2, 3, 3))).shape
    (1, 4, 7, 7)
    """
    _name = "Deconv2d"

    def _w_shape(self, C, OC, KH, KW):
        return C, OC, KH, KW

    def forward(self, x):
        self._prepare(x)
        return deconv2d(x, self.W, self.b, self.stride, self.pad)


# =============================================================================
# RNN / LSTM
# =============================================================================
class RNN(Layer):
    """Elman RNN: ``h = tanh(x W_x + b + h_prev W_h)``.

    Parameters
    ----------
    hidden_size : int
    in_size : int, optional
        If None, the weights are created on the first call.

    The hidden state is kept between calls until :meth:`reset_state`.

    Examples
    --------
    >>> rnn = RNN(4)
    >>> h = rnn(np.ones((1, 1)))
    >>> h = rnn(np.ones((1, 1)))   # uses the previous h
    """

    def __init__(self, hidden_size, in_size=None):
        super().__init__()
        hidden_size = _check_size("RNN", "hidden_size", hidden_size)
        in_size = _check_size("RNN", "in_size", in_size, allow_none=True)
        self.x2h = Linear(hidden_size, in_size=in_size)
        # h2h maps the hidden state, so its input size is hidden_size.  DeZero
        # passes in_size here (which fails unless it equals hidden_size); with
        # in_size=None both create the weights at the same moment and from
        # the same draws.
        self.h2h = Linear(hidden_size, in_size=None if in_size is None else hidden_size,
                          nobias=True)
        self.h = None

    def reset_state(self):
        """Forget the hidden state."""
        self.h = None

    def forward(self, x):
        if self.h is None:
            h_new = F.tanh(self.x2h(x))
        else:
            h_new = F.tanh(self.x2h(x) + self.h2h(self.h))
        self.h = h_new
        return h_new


class LSTM(Layer):
    """Long short-term memory layer (DeZero's formulation, no peepholes).

    Parameters
    ----------
    hidden_size : int
    in_size : int, optional
        If None, the input weights are created on the first call.

    Examples
    --------
    >>> lstm = LSTM(4)
    >>> lstm(np.ones((2, 3))).shape
    (2, 4)
    """

    def __init__(self, hidden_size, in_size=None):
        super().__init__()
        H = _check_size("LSTM", "hidden_size", hidden_size)
        I = _check_size("LSTM", "in_size", in_size, allow_none=True)  # noqa: E741
        self.x2f = Linear(H, in_size=I)
        self.x2i = Linear(H, in_size=I)
        self.x2o = Linear(H, in_size=I)
        self.x2u = Linear(H, in_size=I)
        self.h2f = Linear(H, in_size=H, nobias=True)
        self.h2i = Linear(H, in_size=H, nobias=True)
        self.h2o = Linear(H, in_size=H, nobias=True)
        self.h2u = Linear(H, in_size=H, nobias=True)
        self.reset_state()

    def reset_state(self):
        """Forget the hidden and cell states."""
        self.h = None
        self.c = None

    def forward(self, x):
        if self.h is None:
            f = F.sigmoid(self.x2f(x))
            i = F.sigmoid(self.x2i(x))
            o = F.sigmoid(self.x2o(x))
            u = F.tanh(self.x2u(x))
        else:
            f = F.sigmoid(self.x2f(x) + self.h2f(self.h))
            i = F.sigmoid(self.x2i(x) + self.h2i(self.h))
            o = F.sigmoid(self.x2o(x) + self.h2o(self.h))
            u = F.tanh(self.x2u(x) + self.h2u(self.h))

        if self.c is None:
            c_new = i * u
        else:
            c_new = (f * self.c) + (i * u)

        h_new = o * F.tanh(c_new)
        self.h, self.c = h_new, c_new
        return h_new


# =============================================================================
# EmbedID / BatchNorm
# =============================================================================
class EmbedID(Layer):
    """Embedding: ``y = W[ids]`` with ``W`` of shape (in_size, out_size).

    ``W`` is ``np.random.randn(in_size, out_size)`` (float64, as DeZero).

    Examples
    --------
    >>> EmbedID(10, 3)(np.array([1, 5, 1])).shape
    (3, 3)
    """

    def __init__(self, in_size, out_size):
        super().__init__()
        in_size = _check_size("EmbedID", "in_size", in_size)
        out_size = _check_size("EmbedID", "out_size", out_size)
        self.W = Parameter(np.random.randn(in_size, out_size), name="W")

    def forward(self, x):
        return embed_id(x, self.W)


class BatchNorm(Layer):
    """Batch normalisation layer with learned ``gamma``/``beta``.

    The running statistics ``avg_mean`` and ``avg_var`` are Parameters
    (so :meth:`save_weights` stores them) but get no gradient.  All four are
    created on the first call from the input's channel count and dtype.
    Training and test behaviour follow ``Config.train``.

    Examples
    --------
    >>> bn = BatchNorm()
    >>> bn(np.random.randn(8, 3)).shape
    (8, 3)
    """

    def __init__(self):
        super().__init__()
        self.avg_mean = Parameter(None, name="avg_mean")
        self.avg_var = Parameter(None, name="avg_var")
        self.gamma = Parameter(None, name="gamma")
        self.beta = Parameter(None, name="beta")

    def _init_params(self, x):
        D = x.shape[1]
        dtype = x.dtype
        if self.avg_mean.data is None:
            self.avg_mean.data = np.zeros(D, dtype=dtype)
        if self.avg_var.data is None:
            self.avg_var.data = np.ones(D, dtype=dtype)
        if self.gamma.data is None:
            self.gamma.data = np.ones(D, dtype=dtype)
        if self.beta.data is None:
            self.beta.data = np.zeros(D, dtype=dtype)

    def forward(self, x):
        if len(x.shape) not in (2, 4):
            raise ValueError(f"BatchNorm: the input must be 2-d (N, C) or 4-d "
                             f"(N, C, H, W), got shape {tuple(x.shape)}")
        if self.avg_mean.data is None:
            self._init_params(x)
        return batch_norm(x, self.gamma, self.beta, self.avg_mean.data,
                          self.avg_var.data)
