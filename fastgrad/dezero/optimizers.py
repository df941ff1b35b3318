"""Optimizers and gradient hooks with DeZero 0.0.13's names and arithmetic.

Every update performs the same floating-point operations, in the same order
and in place on the same arrays, as DeZero's optimizers, so a float64 run
gives bit-identical parameters. Per-parameter state (momentum, squared-grad
averages, ...) is kept in dicts keyed by ``id(param)``, as DeZero keys it.

A parameter is any object with ``data`` (an ndarray) and ``grad``: ``None``,
a Variable (the full face; its ``.data`` is the array updated) or an ndarray
(the stage-2 face's grads).
"""
import functools
import math
import numbers

import numpy as np

from fastgrad._array_utils import array_of
from fastgrad._trace import run_on_replay
from fastgrad.dezero.core import Parameter

__all__ = [
    "Optimizer", "SGD", "MomentumSGD", "AdaGrad", "AdaDelta", "Adam",
    "WeightDecay", "ClipGrad", "FreezeParam",
]


# =============================================================================
# helpers
# =============================================================================
def _grad_array(param):
    # The array a hook or an update reads and writes in place.
    grad = param.grad
    if grad is None:
        raise ValueError(f"parameter {_describe(param)} has no grad to update with")
    data = array_of(grad)
    if not hasattr(data, "dtype"):
        raise TypeError(f"parameter {_describe(param)} has a grad of type "
                        f"{type(grad).__name__} without array data")
    return data


def _describe(param):
    name = getattr(param, "name", None)
    shape = getattr(getattr(param, "data", None), "shape", None)
    return f"{name!r} (shape {shape})" if name else f"of shape {shape}"


def _array_module(x):
    # CuPy arrays keep their state on the GPU; everything else is NumPy.
    if type(x).__module__.split(".")[0] == "cupy":
        import cupy
        return cupy
    return np


def _check_real(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    return value


# =============================================================================
# Optimizer (base class)
# =============================================================================
class Optimizer:
    """Base class: updates the parameters of a target with their grads.

    Subclasses implement :meth:`update_one`. ``setup(target)`` attaches a
    model (anything with a ``params()`` method yielding parameters);
    :meth:`update` runs the hooks on the parameters that have a grad and then
    updates each of them.

    Examples
    --------
    >>> optimizer = SGD(lr=0.1).setup(model)       # doctest: +SKIP
    >>> loss.backward(); optimizer.update()         # doctest: +SKIP
    """

    def __init__(self):
        self.target = None
        self.hooks = []

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "update" in cls.__dict__:
            cls.update = _replayed(cls.__dict__["update"])

    def setup(self, target):
        """Attach ``target`` (an object with ``params()``); returns ``self``."""
        if not callable(getattr(target, "params", None)):
            raise TypeError("setup() needs a target with a params() method "
                            f"(a Layer or Model), got {type(target).__name__}")
        self.target = target
        return self

    def update(self):
        """Run the hooks, then update every parameter of the target that has a grad.

        Inside a function being traced (:func:`fastgrad.trace`) the update
        is a step of the recording: every replay updates the parameters.
        """
        if self.target is None:
            raise RuntimeError(f"{type(self).__name__}.update() called before "
                               "setup(target): call optimizer.setup(model) first")
        params = [p for p in self.target.params() if p.grad is not None]

        for f in self.hooks:
            f(params)

        for param in params:
            # A hook such as FreezeParam may have dropped a grad: that
            # parameter stays as it is (DeZero would fail on it).
            if param.grad is not None:
                self.update_one(param)

    def update_one(self, param):
        """Update one parameter in place (implemented by subclasses)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement update_one()")

    def add_hook(self, f):
        """Add a callable run on the list of parameters with a grad before each update."""
        if not callable(f):
            raise TypeError(f"a hook must be callable, got {type(f).__name__}")
        self.hooks.append(f)



def _replayed(update):
    # The outermost update() call, with what a subclass does around the base
    # update (Adam counts its steps), is one step of a traced function.
    @functools.wraps(update)
    def update_step(self, *args, **kwargs):
        return run_on_replay(lambda: update(self, *args, **kwargs))
    return update_step


Optimizer.update = _replayed(Optimizer.update)

# =============================================================================
# Hook functions
# =============================================================================
class WeightDecay:
    """Hook adding ``rate * param.data`` to each grad (L2 regularisation).

    Parameters
    ----------
    rate : float
        The decay coefficient.
    """

    def __init__(self, rate):
        self.rate = _check_real("rate", rate)

    def __call__(self, params):
        for param in params:
            grad = _grad_array(param)
            grad += self.rate * param.data


class ClipGrad:
    """Hook scaling all grads down together when their global L2 norm exceeds ``max_norm``.

    Parameters
    ----------
    max_norm : float
        The largest global norm left unscaled.
    """

    def __init__(self, max_norm):
        self.max_norm = _check_real("max_norm", max_norm)

    def __call__(self, params):
        # Sum of squares accumulated parameter by parameter, then a Python
        # sqrt: the order DeZero uses, so the scale is bit-identical.
        total = 0
        for param in params:
            total += (_grad_array(param) ** 2).sum()
        total_norm = math.sqrt(float(total))

        rate = self.max_norm / (total_norm + 1e-6)
        if rate < 1:
            for param in params:
                grad = _grad_array(param)
                grad *= rate


class FreezeParam:
    """Hook that drops the grads of the given layers' parameters, so they are not updated.

    Parameters
    ----------
    *layers : Layer or Parameter
        Layers (anything with ``params()``) whose parameters are frozen, or
        single parameters.
    """

    def __init__(self, *layers):
        self.freeze_params = []
        for layer in layers:
            if isinstance(layer, Parameter):
                self.freeze_params.append(layer)
            elif callable(getattr(layer, "params", None)):
                self.freeze_params.extend(layer.params())
            elif hasattr(layer, "data") and hasattr(layer, "grad"):
                self.freeze_params.append(layer)
            else:
                raise TypeError("FreezeParam takes layers (with params()) or "
                                f"parameters, got {type(layer).__name__}")

    def __call__(self, params):
        for p in self.freeze_params:
            p.grad = None


# =============================================================================
# SGD / MomentumSGD / AdaGrad / AdaDelta / Adam
# =============================================================================
class SGD(Optimizer):
    """Stochastic gradient descent: ``data -= lr * grad``.

    Parameters
    ----------
    lr : float, default 0.01
        Learning rate.
    """

    def __init__(self, lr=0.01):
        super().__init__()
        self.lr = _check_real("lr", lr)

    def update_one(self, param):
        param.data -= self.lr * _grad_array(param)


class MomentumSGD(Optimizer):
    """SGD with momentum: ``v = momentum * v - lr * grad; data += v``.

    Parameters
    ----------
    lr : float, default 0.01
        Learning rate.
    momentum : float, default 0.9
        Decay of the velocity.
    """

    def __init__(self, lr=0.01, momentum=0.9):
        super().__init__()
        self.lr = _check_real("lr", lr)
        self.momentum = _check_real("momentum", momentum)
        self.vs = {}

    def update_one(self, param):
        key = id(param)
        v = self.vs.get(key)
        if v is None:
            v = self.vs[key] = _array_module(param.data).zeros_like(param.data)
        v *= self.momentum
        v -= self.lr * _grad_array(param)
        param.data += v


class AdaGrad(Optimizer):
    """AdaGrad: per-element learning rates from the running sum of squared grads.

    Parameters
    ----------
    lr : float, default 0.001
        Learning rate.
    eps : float, default 1e-8
        Added to the root of the sum, against division by zero.
    """

    def __init__(self, lr=0.001, eps=1e-8):
        super().__init__()
        self.lr = _check_real("lr", lr)
        self.eps = _check_real("eps", eps)
        self.hs = {}

    def update_one(self, param):
        xp = _array_module(param.data)
        key = id(param)
        h = self.hs.get(key)
        if h is None:
            h = self.hs[key] = xp.zeros_like(param.data)
        grad = _grad_array(param)
        h += grad * grad
        param.data -= self.lr * grad / (xp.sqrt(h) + self.eps)


class AdaDelta(Optimizer):
    """AdaDelta: step sizes from running averages of squared grads and squared steps.

    Parameters
    ----------
    rho : float, default 0.95
        Decay of the running averages.
    eps : float, default 1e-6
        Added inside both square roots.
    """

    def __init__(self, rho=0.95, eps=1e-6):
        super().__init__()
        self.rho = _check_real("rho", rho)
        self.eps = _check_real("eps", eps)
        self.msg = {}
        self.msdx = {}

    def update_one(self, param):
        xp = _array_module(param.data)
        key = id(param)
        if key not in self.msg:
            self.msg[key] = xp.zeros_like(param.data)
            self.msdx[key] = xp.zeros_like(param.data)
        msg, msdx = self.msg[key], self.msdx[key]
        rho, eps = self.rho, self.eps
        grad = _grad_array(param)

        msg *= rho
        msg += (1 - rho) * grad * grad
        dx = xp.sqrt((msdx + eps) / (msg + eps)) * grad
        msdx *= rho
        msdx += (1 - rho) * dx * dx
        param.data -= dx


class Adam(Optimizer):
    """Adam, with the bias correction folded into the step size :attr:`lr`.

    Parameters
    ----------
    alpha : float, default 0.001
        Base step size.
    beta1, beta2 : float, default 0.9, 0.999
        Decay of the first and second moment estimates.
    eps : float, default 1e-8
        Added to the root of the second moment.

    Attributes
    ----------
    t : int
        Number of :meth:`update` calls so far.
    """

    def __init__(self, alpha=0.001, beta1=0.9, beta2=0.999, eps=1e-8):
        super().__init__()
        self.t = 0
        self.alpha = _check_real("alpha", alpha)
        self.beta1 = _check_real("beta1", beta1)
        self.beta2 = _check_real("beta2", beta2)
        self.eps = _check_real("eps", eps)
        self.ms = {}
        self.vs = {}

    def update(self, *args, **kwargs):
        if self.target is None:
            # Checked before counting the step, so a failed call leaves t alone.
            return super().update(*args, **kwargs)
        self.t += 1
        super().update(*args, **kwargs)

    @property
    def lr(self):
        """Step size at step :attr:`t`: ``alpha * sqrt(1 - beta2**t) / (1 - beta1**t)``."""
        fix1 = 1. - math.pow(self.beta1, self.t)
        fix2 = 1. - math.pow(self.beta2, self.t)
        return self.alpha * math.sqrt(fix2) / fix1

    def update_one(self, param):
        xp = _array_module(param.data)
        key = id(param)
        if key not in self.ms:
            self.ms[key] = xp.zeros_like(param.data)
            self.vs[key] = xp.zeros_like(param.data)
        m, v = self.ms[key], self.vs[key]
        beta1, beta2, eps = self.beta1, self.beta2, self.eps
        grad = _grad_array(param)

        m += (1 - beta1) * (grad - m)
        v += (1 - beta2) * (grad * grad - v)
        param.data -= self.lr * m / (xp.sqrt(v) + eps)
