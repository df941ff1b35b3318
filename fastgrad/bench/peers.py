"""One adapter per peer.

Every workload is written once, as ``fn(F, *leaves, *consts)`` with Python
operators and the functions of a vocabulary namespace ``F``; an adapter knows
how its framework makes a leaf, runs forward and backward, reads a gradient,
defines a user function and takes second derivatives.  Nothing here is needed
by the library itself: a peer that cannot be imported is skipped with the pip
command that installs it.
"""
import importlib
import importlib.util
import os
import types

import numpy as np

from fastgrad import _dezero_loader

from .threads import xla_env

# name: (what is measured, module that must be importable, how to install it).
# The order is the column order of every table.
PEER_INFO = {
    "numpy": ("NumPy, forward only: the floor", "numpy", "pip install numpy"),
    "fastgrad": ("this fastgrad (stage-2 face; fastgrad.dezero in the suites that "
                 "need functions)", "fastgrad", "pip install ."),
    "fastgrad-pure": ("fastgrad with FASTGRAD_PURE=1 (no compiled kernels), in a "
                      "child process", "fastgrad", "pip install ."),
    "fastgrad-trace": ("fastgrad with the workload traced: fastgrad.trace(fn), "
                       "recorded on the first call, replayed after", "fastgrad",
                       "pip install ."),
    "dezero": ("DeZero 0.0.13 stage 2: dezero.core_simple", "dezero",
               "pip install dezero==0.0.13 matplotlib"),
    "dezero-full": ("DeZero 0.0.13 dezero.core + dezero.functions (grads are "
                    "Variables)", "dezero", "pip install dezero==0.0.13 matplotlib"),
    "torch": ("PyTorch, CPU, at the run's thread setting", "torch",
              "pip install torch==2.13.0"),
    "autograd": ("HIPS autograd", "autograd", "pip install autograd"),
    "jax": ("JAX eager, float64 on CPU: jax.vjp on every call (in a child process "
            "per thread setting)", "jax", "pip install jax"),
    "jax-jit": ("JAX jit(value_and_grad(f)), float64 on CPU, compiled once per "
                "workload (compile time reported apart; in a child process per "
                "thread setting)", "jax", "pip install jax"),
}
PEERS = tuple(PEER_INFO)
REFERENCE = "fastgrad"
# Peers that can only run in a child process, with the environment they need.
SUBPROCESS = {"fastgrad-pure": {"FASTGRAD_PURE": "1"}}
# Peers whose thread pools are sized at import: a child per thread setting.
FIXED_AT_IMPORT = ("jax", "jax-jit")


def child_env(name, threads):
    """The extra environment of the child process that runs peer ``name`` at
    ``threads`` threads, or None when it runs in this process.  Peers with
    equal environments share a child."""
    if name in SUBPROCESS:
        return dict(SUBPROCESS[name])
    if name in FIXED_AT_IMPORT:
        return xla_env(threads)
    return None


class Unavailable(Exception):
    """A peer cannot be used; the message says why and how to fix it."""


def installed(name):
    """True when the peer's module can be found (cheap: nothing is imported)."""
    return importlib.util.find_spec(PEER_INFO[name][1]) is not None


def _imports(peer, *modules):
    """Import ``modules`` for ``peer``, or say how to install it."""
    try:
        return [importlib.import_module(m) for m in modules]
    except Exception as exc:
        raise Unavailable(f"import {modules[0]} failed ({exc!r}); "
                          f"{PEER_INFO[peer][2]}") from None


def _arr(g):
    """A gradient as an ndarray (the full faces keep it in a Variable)."""
    return g if isinstance(g, np.ndarray) else np.asarray(getattr(g, "data", g))


# ---------------------------------------------------------------------------
# DeZero: the one loader
# ---------------------------------------------------------------------------
def load_dezero():
    """Import DeZero 0.0.13; return ``(core_simple, core, functions)``."""
    try:
        return (_dezero_loader.load_stage2(), _dezero_loader.import_dezero("dezero.core"),
                _dezero_loader.import_dezero("dezero.functions"))
    except Exception as exc:
        raise Unavailable(f"import dezero failed ({exc!r}); "
                          f"{PEER_INFO['dezero'][2]}") from None


# ---------------------------------------------------------------------------
# Vocabularies
# ---------------------------------------------------------------------------
ELEMENTWISE = ("exp", "sin", "cos", "tanh", "log", "sqrt", "sigmoid")
FUNCTIONS = ELEMENTWISE + ("matmul", "linear", "mean_squared_error",
                           "softmax_cross_entropy", "conv2d", "pooling", "sum")


def array_vocab(xp, **override):
    """The vocabulary over a NumPy-like module (numpy, autograd.numpy,
    jax.numpy), with DeZero's definitions of the losses."""
    def sigmoid(x):
        return 1 / (1 + xp.exp(-x))

    def linear(x, W, b=None):
        y = xp.matmul(x, W)
        return y if b is None else y + b

    def mean_squared_error(x0, x1):
        d = x0 - x1
        return xp.sum(d ** 2) / d.shape[0]

    def softmax_cross_entropy(x, t):
        m = xp.max(x, axis=1, keepdims=True)
        log_z = m + xp.log(xp.sum(xp.exp(x - m), axis=1, keepdims=True))
        log_p = (x - log_z)[xp.arange(x.shape[0]), t]
        return -xp.sum(log_p) / x.shape[0]

    names = {n: getattr(xp, n) for n in ELEMENTWISE + ("matmul", "sum") if hasattr(xp, n)}
    names.update(sigmoid=sigmoid, linear=linear, mean_squared_error=mean_squared_error,
                 softmax_cross_entropy=softmax_cross_entropy)
    names.update(override)
    return types.SimpleNamespace(**names)


def module_vocab(module, **extra):
    """The vocabulary names a functions module really has (no stand-ins)."""
    names = {n: getattr(module, n) for n in FUNCTIONS if hasattr(module, n)}
    names.update(extra)
    return types.SimpleNamespace(**names)


# VGG-16 (the conv suite's whole-network case): DeZero's models.VGG16 layer
# names, block by block, each block ending in 2x2 max pooling; then fc6, fc7
# (ReLU and dropout) and fc8.  A peer's ``F.vgg16(x, W1, b1, ..., W16, b16)``
# runs its framework's own VGG-16 with these parameters (dropout off, as in
# DeZero's test mode, so that every peer computes the same function).
VGG16_BLOCKS = (("conv1_1", "conv1_2"), ("conv2_1", "conv2_2"),
                ("conv3_1", "conv3_2", "conv3_3"), ("conv4_1", "conv4_2", "conv4_3"),
                ("conv5_1", "conv5_2", "conv5_3"))
VGG16_CHANNELS = (64, 128, 256, 512, 512)
VGG16_LAYERS = tuple(n for block in VGG16_BLOCKS for n in block) + ("fc6", "fc7", "fc8")


def _tape_vgg16(load_models, test_mode):
    """``vgg16(x, *params)`` for DeZero and fastgrad.dezero: their
    ``models.VGG16(pretrained=False)``, made once, with the leaves bound as
    its layers' W and b before each call."""
    model = None

    def vgg16(x, *params):
        nonlocal model
        if model is None:
            model = load_models().VGG16(pretrained=False)
        for name, W, b in zip(VGG16_LAYERS, params[0::2], params[1::2]):
            layer = getattr(model, name)
            layer.W, layer.b = W, b
        with test_mode():
            return model(x)
    return vgg16


def _torch_vgg16(torch):
    """``vgg16(x, *params)`` for PyTorch: VGG-16 written with torch.nn as
    DeZero's models.VGG16 is built (3x3 convolutions with pad 1 and ReLU,
    2x2 max pooling after each block, dropout 0.5 in eval mode), called with
    the leaves as its parameters (``torch.func.functional_call``; a Linear's
    weight is the transpose of DeZero's W)."""
    nn, tF = torch.nn, torch.nn.functional

    class VGG16(nn.Module):
        def __init__(self):
            super().__init__()
            c = 3
            for block, o in zip(VGG16_BLOCKS, VGG16_CHANNELS):
                for name in block:
                    # on the meta device: the parameters come with each call
                    setattr(self, name, nn.Conv2d(c, o, 3, 1, 1, device="meta"))
                    c = o
            self.fc6 = nn.Linear(512 * 7 * 7, 4096, device="meta")
            self.fc7 = nn.Linear(4096, 4096, device="meta")
            self.fc8 = nn.Linear(4096, 1000, device="meta")
            self.dropout = nn.Dropout(0.5)

        def forward(self, x):
            for block in VGG16_BLOCKS:
                for name in block:
                    x = tF.relu(getattr(self, name)(x))
                x = tF.max_pool2d(x, 2, 2)
            x = x.reshape(x.shape[0], -1)
            x = self.dropout(tF.relu(self.fc6(x)))
            x = self.dropout(tF.relu(self.fc7(x)))
            return self.fc8(x)

    model = VGG16().eval()

    def vgg16(x, *params):
        named = {}
        for name, W, b in zip(VGG16_LAYERS, params[0::2], params[1::2]):
            named[name + ".weight"] = W.t() if name.startswith("fc") else W
            named[name + ".bias"] = b
        return torch.func.functional_call(model, named, (x,))
    return vgg16


# ---------------------------------------------------------------------------
# Adapters
# ---------------------------------------------------------------------------
class Peer:
    """Base adapter.  ``kind`` is "tape" (graph recorded on the leaves),
    "functional" (a function of the inputs is differentiated), "fused" (one
    compiled call gives value and gradients) or "forward" (no gradients)."""

    kind = "tape"
    capabilities = ("user_function",)
    # The first call of a new shape compiles (jax: every primitive, seconds):
    # a slow checking iteration says nothing about the warm ones.
    cold_start = False

    def __init__(self, name):
        self.name = name
        self.F = types.SimpleNamespace()
        self.versions = {}

    def missing(self, needs):
        """The names in ``needs`` this peer cannot do."""
        return [n for n in needs if not hasattr(self.F, n) and n not in self.capabilities]

    def prepare(self, a):
        """Convert an input once per benchmark (untimed)."""
        return a

    def leaf(self, p, copy=False):
        """A fresh differentiable leaf for one iteration (untimed)."""
        return p

    def forward(self, fn, leaves, consts):
        return fn(self.F, *leaves, *consts)

    def array(self, x):
        """A leaf or an output as an ndarray."""
        return np.asarray(x)

    def value(self, out):
        """The ndarray value of what ``forward`` returned."""
        return self.array(out)

    def sgd(self, leaves, grads, lr):
        """One plain SGD update; returns the new leaves."""
        return [p - lr * g for p, g in zip(leaves, grads)]


class Tape(Peer):
    """fastgrad and DeZero: a ``Variable`` class and a ``Function`` base."""

    def __init__(self, name, Variable, Function, F, full):
        super().__init__(name)
        self.V, self.Function, self.F, self.full = Variable, Function, F, full
        if full:
            self.capabilities = ("user_function", "grad2")

    def leaf(self, p, copy=False):
        return self.V(p.copy() if copy else p)

    def array(self, x):
        return np.asarray(x.data)

    def backward(self, out, leaves):
        out.backward()
        return leaves

    def grads(self, handle, leaves):
        return [_arr(v.grad) for v in leaves]

    def sgd(self, leaves, grads, lr):
        for v in leaves:  # in place, as DeZero's optimizers.SGD does
            v.data -= lr * _arr(v.grad)
        return leaves

    def user_function(self, forward, backward):
        full = self.full

        class UserFunction(self.Function):
            def forward(self, x):
                return forward(x)

            def backward(self, gy):
                # Full face: backward on Variables, so it could be differentiated.
                x = self.inputs[0] if full else self.inputs[0].data
                return backward(x, gy)

        return lambda x: UserFunction()(x)

    def grad2(self, fn, x0, notes):
        V, F = self.V, self.F

        def both(x):
            v = V(np.array(x))
            y = fn(F, v)
            y.backward(create_graph=True)
            gx = v.grad
            v.cleargrad()
            gx.backward()
            return float(gx.data), float(v.grad.data)
        return both


class TracedTape(Tape):
    """fastgrad calling ``fastgrad.trace`` of the workload's function."""

    def __init__(self, name, Variable, Function, F, full, trace):
        super().__init__(name, Variable, Function, F, full)
        self.trace = trace
        self._traced = {}

    def _traced_fn(self, fn):
        t = self._traced.get(fn)
        if t is None:
            F = self.F
            t = self._traced[fn] = self.trace(lambda *args: fn(F, *args))
        return t

    def forward(self, fn, leaves, consts):
        return self._traced_fn(fn)(*leaves, *consts)

    def grad2(self, fn, x0, notes):
        # The first derivative through the replay; the second needs
        # create_graph, which a replay cannot record: the eager graph.
        V, F, traced = self.V, self.F, self._traced_fn(fn)

        def both(x):
            v = V(np.array(x))
            traced(v).backward()
            w = V(np.array(x))
            fn(F, w).backward(create_graph=True)
            gx = w.grad
            w.cleargrad()
            gx.backward()
            return float(v.grad.data), float(w.grad.data)
        return both


class Torch(Peer):
    capabilities = ("user_function", "grad2")

    def __init__(self, name):
        super().__init__(name)
        torch, tF = _imports(name, "torch", "torch.nn.functional")
        # The intra-op threads follow the run's setting (threads.apply).  The
        # inter-op pool runs nothing in eager CPU workloads, and its size can
        # only be set before first use: one thread, once.
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # already used by an earlier import: keep it
            pass
        self.torch = torch
        self.F = types.SimpleNamespace(
            **{n: getattr(torch, n) for n in ELEMENTWISE}, matmul=torch.matmul,
            linear=lambda x, W, b=None: x @ W if b is None else torch.addmm(b, x, W),
            mean_squared_error=tF.mse_loss, softmax_cross_entropy=tF.cross_entropy,
            conv2d=tF.conv2d, pooling=tF.max_pool2d, sum=torch.sum,
            vgg16=_torch_vgg16(torch))
        self.versions = {"torch": torch.__version__}

    def prepare(self, a):
        return self.torch.from_numpy(np.asarray(a))

    def leaf(self, p, copy=False):
        return (p.clone() if copy else p.detach()).requires_grad_(True)

    def array(self, x):
        return x.detach().numpy()

    def backward(self, out, leaves):
        out.backward(None if out.dim() == 0 else self.torch.ones_like(out))
        return leaves

    def grads(self, handle, leaves):
        return [v.grad.numpy() for v in leaves]

    def sgd(self, leaves, grads, lr):
        with self.torch.no_grad():
            for v in leaves:
                v -= lr * v.grad
        return leaves

    def user_function(self, forward, backward):
        class UserFunction(self.torch.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                ctx.save_for_backward(x)
                return forward(x)

            @staticmethod
            def backward(ctx, gy):
                (x,) = ctx.saved_tensors
                return backward(x, gy)

        return UserFunction.apply

    def grad2(self, fn, x0, notes):
        torch = self.torch

        def both(x):
            v = torch.tensor(x, dtype=torch.float64, requires_grad=True)
            (g1,) = torch.autograd.grad(fn(self.F, v), v, create_graph=True)
            (g2,) = torch.autograd.grad(g1, v)
            return g1.item(), g2.item()
        return both


def _np_conv2d(x, W, b=None, stride=1, pad=0):
    """DeZero's conv2d forward in plain NumPy (the reference's)."""
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    kh, kw = W.shape[2:]
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))
    y = np.einsum("nchwij,ocij->nohw", win[:, :, ::stride, ::stride], W)
    return y if b is None else y + b.reshape(1, -1, 1, 1)


def _np_pooling(x, kernel_size, stride=1, pad=0):
    """DeZero's max pooling forward in plain NumPy."""
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=-np.inf)
    win = np.lib.stride_tricks.sliding_window_view(x, (kernel_size, kernel_size), axis=(2, 3))
    return win[:, :, ::stride, ::stride].max(axis=(4, 5))


class Numpy(Peer):
    kind = "forward"

    def __init__(self, name):
        super().__init__(name)
        self.F = array_vocab(np, conv2d=_np_conv2d, pooling=_np_pooling)

    def user_function(self, forward, backward):
        return forward


class Autograd(Peer):
    kind = "functional"
    capabilities = ("user_function", "grad2")

    def __init__(self, name):
        super().__init__(name)
        autograd, _, anp = _imports(name, "autograd", "autograd.extend", "autograd.numpy")
        self.ag, self.F = autograd, array_vocab(anp)
        self.versions = {"autograd": getattr(autograd, "__version__", None)}

    def forward(self, fn, leaves, consts):
        F = self.F
        if len(leaves) == 1:  # no tuple container: its boxing is not the workload
            vjp, out = self.ag.make_vjp(lambda x: fn(F, x, *consts))(leaves[0])
            return out, lambda g: (vjp(g),)
        vjp, out = self.ag.make_vjp(lambda xs: fn(F, *xs, *consts))(tuple(leaves))
        return out, vjp

    def value(self, out):
        return np.asarray(out[0])

    def backward(self, out, leaves):
        return out[1](np.ones_like(out[0]))

    def grads(self, handle, leaves):
        return [np.asarray(g) for g in handle]

    def user_function(self, forward, backward):
        fwd = self.ag.extend.primitive(lambda x: forward(x))
        self.ag.extend.defvjp(fwd, lambda ans, x: lambda g: backward(x, g))
        return fwd

    def grad2(self, fn, x0, notes):
        g1 = self.ag.grad(lambda x: fn(self.F, x))
        g2 = self.ag.grad(g1)
        return lambda x: (float(g1(x)), float(g2(x)))


class Jax(Peer):
    kind = "functional"
    capabilities = ("user_function", "grad2")
    cold_start = True

    def __init__(self, name):
        super().__init__(name)
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
        jax, jnp = _imports(name, "jax", "jax.numpy")
        jax.config.update("jax_enable_x64", True)
        self.jax, self.jnp = jax, jnp
        self.F = array_vocab(jnp, sigmoid=jax.nn.sigmoid)
        self.versions = {"jax": jax.__version__, "backend": jax.default_backend()}

    def prepare(self, a):
        return self.jnp.asarray(a)

    def forward(self, fn, leaves, consts):
        out, vjp = self.jax.vjp(lambda *xs: fn(self.F, *xs, *consts), *leaves)
        return self.jax.block_until_ready(out), vjp

    def value(self, out):
        return np.asarray(out[0])

    def backward(self, out, leaves):
        return self.jax.block_until_ready(out[1](self.jnp.ones_like(out[0])))

    def grads(self, handle, leaves):
        return [np.asarray(g) for g in handle]

    def sgd(self, leaves, grads, lr):
        return self.jax.block_until_ready(super().sgd(leaves, grads, lr))

    def user_function(self, forward, backward):
        f = self.jax.custom_vjp(lambda x: forward(x))
        f.defvjp(lambda x: (forward(x), x), lambda x, g: (backward(x, g),))
        return f

    def grad2(self, fn, x0, notes):
        g1 = self.jax.grad(lambda x: fn(self.F, x))
        g2 = self.jax.grad(g1)
        return lambda x: (float(g1(x)), float(g2(x)))


class JaxJit(Jax):
    kind = "fused"

    def compile(self, fn, leaves, consts, notes):
        """``step(leaves) -> (value, grads)``, compiled now; the compile (and
        first) call's time goes to ``notes["compile_s"]``."""
        jax, jnp, F, n = self.jax, self.jnp, self.F, len(leaves)

        def f(*args):
            return fn(F, *args[:n], *args[n:])

        if jax.eval_shape(f, *leaves, *consts).shape == ():
            vg = jax.jit(jax.value_and_grad(f, argnums=tuple(range(n))))
        else:  # an array output: value and the gradient of its sum, as vjp(ones)
            def value_and_vjp(*args):
                out, vjp = jax.vjp(lambda *xs: f(*xs, *args[n:]), *args[:n])
                return out, vjp(jnp.ones_like(out))
            vg = jax.jit(value_and_vjp)

        def step(xs):
            return jax.block_until_ready(vg(*xs, *consts))
        return _timed_first_call(step, notes, leaves)

    def value(self, out):
        return np.asarray(out[0])

    def grad2(self, fn, x0, notes):
        jax = self.jax
        g1 = jax.grad(lambda x: fn(self.F, x))
        both = jax.jit(lambda x: (g1(x), jax.grad(g1)(x)))
        step = _timed_first_call(lambda x: tuple(float(g) for g in both(x)), notes, x0)
        return step


def _timed_first_call(step, notes, arg):
    import time
    t0 = time.perf_counter()
    step(arg)
    notes["compile_s"] = time.perf_counter() - t0
    return step


def _module(name):
    try:
        return importlib.import_module(name)
    except Exception:  # missing, or not importable in this build
        return None


def _fastgrad(name, full):
    try:
        fg = importlib.import_module("fastgrad")
    except Exception as exc:  # a broken build must not crash the benchmark
        raise Unavailable(f"import fastgrad failed: {exc!r}") from None
    want = os.environ.get("FASTGRAD_PURE") == "1"
    if name == "fastgrad-pure" and bool(getattr(fg, "PURE", False)) != want:
        raise Unavailable("FASTGRAD_PURE=1 was not honoured by the engine")
    versions = {"fastgrad": getattr(fg, "__version__", None),
                "PURE": getattr(fg, "PURE", None)}
    if name == "fastgrad-trace" and not hasattr(fg, "trace"):
        raise Unavailable("this fastgrad has no fastgrad.trace")
    # Until the functions module exists, the engine's own elementwise ops
    # (fastgrad._core, the full face's through FULL_FACE_FUNCTIONS) are it.
    core = getattr(fg, "_core", None)
    if not full:
        F = _module("fastgrad.functions") or core
        args = (name, fg.Variable, fg.Function, module_vocab(F), False)
    else:
        dz = _module("fastgrad.dezero")
        if dz is None:
            raise Unavailable("this fastgrad has no fastgrad.dezero (the full face)")
        F = _module("fastgrad.dezero.functions") or types.SimpleNamespace(
            **getattr(core, "FULL_FACE_FUNCTIONS", {}))
        extra = {}
        if _module("fastgrad.dezero.models") is not None:
            extra["vgg16"] = _tape_vgg16(lambda: _module("fastgrad.dezero.models"),
                                         dz.test_mode)
        args = (name, dz.Variable, dz.Function, module_vocab(F, **extra), True)
    peer = TracedTape(*args, trace=fg.trace) if name == "fastgrad-trace" else Tape(*args)
    peer.versions = versions
    return peer


def _dezero(name, full):
    simple, core, functions = load_dezero()
    if name == "dezero":
        return Tape(name, simple.Variable, simple.Function, types.SimpleNamespace(),
                    full=False)
    # DeZero has no sqrt function: x ** 0.5 is how its users write it.
    F = module_vocab(functions, sqrt=lambda x: x ** 0.5,
                     vgg16=_tape_vgg16(_dezero_models, core.test_mode))
    return Tape(name, core.Variable, core.Function, F, full=True)


def _dezero_models():
    return _dezero_loader.import_dezero("dezero.models")


_FACTORIES = {
    "numpy": lambda name, full: Numpy(name),
    "fastgrad": _fastgrad, "fastgrad-pure": _fastgrad, "fastgrad-trace": _fastgrad,
    "dezero": _dezero, "dezero-full": _dezero,
    "torch": lambda name, full: Torch(name),
    "autograd": lambda name, full: Autograd(name),
    "jax": lambda name, full: Jax(name),
    "jax-jit": lambda name, full: JaxJit(name),
}
_cache = {}


def get(name, full=False):
    """The loaded adapter of peer ``name`` (``full``: the face of the suites
    that need functions); raises :class:`Unavailable`."""
    key = (name, full)
    if key not in _cache:
        try:
            _cache[key] = _FACTORIES[name](name, full)
        except Unavailable as exc:
            _cache[key] = exc
    if isinstance(_cache[key], Unavailable):
        raise _cache[key]
    return _cache[key]


def version(name):
    """Installed version of the peer's distribution, or None."""
    from importlib.metadata import PackageNotFoundError, version as dist_version
    try:
        return dist_version(PEER_INFO[name][1])
    except PackageNotFoundError:
        return None
