"""The suites: cases per tier, the workload of a case, its reference.

A suite is data plus one function, ``work(case, peer)``, that returns the
workload as ``Work(fn, inputs, consts)`` where ``fn(F, *leaves, *consts)`` is
written once for every peer.  The reference is the same workload run in
float64 by the NumPy adapter, differentiated by central differences (or a
closed form where one is cheaper), so a new suite needs no per-peer code.
"""
import functools
import math
from dataclasses import dataclass, field

import numpy as np

from . import peers as P


def fmt_n(n):
    """Compact size label: 1000000 -> '1e6', 2500 -> '2500'."""
    n = int(n)
    e = len(str(n)) - 1
    return f"1e{e}" if n == 10 ** e and e >= 2 else str(n)


@dataclass
class Case:
    """One workload at one parameter point (and, in a threaded suite, one
    thread setting); plain data, so it can be sent to a child process and
    recorded in JSON."""

    suite: str
    workload: str
    params: dict = field(default_factory=dict)
    ops: int = 1
    threads: int = None   # every peer's thread count; None: an unthreaded suite (1)

    @property
    def base_label(self):
        """The label without the thread setting: the same for every setting."""
        parts = [self.suite, self.workload]
        parts += [fmt_n(v) if isinstance(v, int) else str(v) for v in self.params.values()]
        return " ".join(parts)

    @property
    def label(self):
        return self.base_label + ("" if self.threads is None else f" thr={self.threads}")


@dataclass
class Work:
    fn: object                 # fn(F, *leaves, *consts) -> output
    inputs: list               # differentiable inputs (ndarrays)
    consts: list = field(default_factory=list)
    lr: float = None           # an SGD update phase after backward
    copy: bool = False         # fresh copies of the inputs each iteration
    release: bool = False      # a timed "del" phase drops the whole graph
    elementwise: bool = False  # gradients by vectorised central differences
    newton: int = 0            # Newton steps (second derivatives) instead


# Peers that cannot take a case, as data: (peer, what is counted, limit, why).
LIMITS = (
    ("jax-jit", "ops", 2500, "XLA compile time grows with the unrolled graph"),
)


class Suite:
    """``tiers``: {tier: [(workload, params), ...]}; ``rows``: the phases
    shown; ``needs``: vocabulary or capabilities a peer must have."""

    name = title = ""
    full = False          # fastgrad's full face (fastgrad.dezero) and its functions
    needs = ()
    rows = ("fwd", "total")
    per_op = False
    geomean = False
    exclude = ()          # peers that do not take part
    traced = False        # fastgrad-trace takes part (fastgrad.trace of the workload)
    # Run at every thread setting of the run (arrays large enough for threads
    # to matter); the others run once, every peer on one thread.
    threaded = False
    traffic = None        # {workload: Traffic}: the roofline's minimal bytes
    tiers = {}
    rtol = 1e-6

    def cases(self, tier, threads=(1,)):
        """The cases of ``tier``; a threaded suite's at each count in
        ``threads``, one setting after the other for each workload."""
        out = []
        for w, p in self.tiers[tier]:
            for n in (threads if self.threaded else (None,)):
                out.append(Case(self.name, w, dict(p), self.ops(w, p), n))
        return out

    def ops(self, workload, params):
        return 1

    def refusal(self, case, peer_name):
        """Why ``peer_name`` does not take ``case`` (None when it does)."""
        if peer_name in self.exclude:
            return "not in this suite"
        if peer_name == "fastgrad-trace" and not self.traced:
            return "not a workload for the tracer"
        for name, what, limit, why in LIMITS:
            if name == peer_name and what == "ops" and case.ops > limit:
                return f"{case.ops} ops > {limit}: {why}"
        return None

    def tolerance(self, case):
        return 1e-4 if case.params.get("dtype") == "float32" else self.rtol

    def reference(self, case):
        """Expected outputs: the NumPy workload in float64, differentiated
        by central differences."""
        work = self.work(case, P.get("numpy"))
        ins = [np.array(a, dtype=np.float64) for a in work.inputs]
        f = functools.partial(work.fn, P.get("numpy").F)
        grads = [_central(f, ins, i, work.consts, work.elementwise) for i in range(len(ins))]
        out = {"out": np.asarray(f(*ins, *work.consts), dtype=np.float64), "g": grads}
        if work.lr:
            out["new"] = [x - work.lr * g for x, g in zip(ins, grads)]
        return out


def _central(f, ins, i, consts, elementwise):
    """d sum(f) / d ins[i] by central differences (float64)."""
    x = ins[i]

    def at(xi):
        args = list(ins)
        args[i] = xi
        return np.asarray(f(*args, *consts), dtype=np.float64)

    h = 1e-6 * np.maximum(1.0, np.abs(x))
    if elementwise:
        return (at(x + h) - at(x - h)) / (2 * h)
    g = np.zeros_like(x)
    for k in np.ndindex(x.shape):
        hi, lo = x.copy(), x.copy()
        hi[k] += h[k]
        lo[k] -= h[k]
        g[k] = (np.sum(at(hi)) - np.sum(at(lo))) / (2 * h[k])
    return g


def _newton(grad2, x, steps):
    """Newton iterates from ``x`` given ``grad2(x) -> (f', f'')``."""
    xs = []
    for _ in range(steps):
        g1, g2 = grad2(x)
        x = x - g1 / g2
        xs.append(x)
    return np.array(xs)


# ---------------------------------------------------------------------------
# overhead: 0-d graphs where the framework's per-op cost is everything
# ---------------------------------------------------------------------------
def goldstein(F, x, y):
    """Goldstein-Price function, as in the book's step 24 (38 ops)."""
    return ((1 + (x + y + 1)**2 * (19 - 14*x + 3*x**2 - 14*y + 6*x*y + 3*y**2))
            * (30 + (2*x - 3*y)**2 * (18 - 32*x + 12*x**2 + 48*y - 36*x*y + 27*y**2)))


def chain(x, steps):
    for _ in range(steps):
        x = x * 1.0001 + 0.5
    return x


def _square_like(x):
    # (x**2 + 1) / 2: a fixed point at 1 with slope 1, so 10^4 compositions
    # neither overflow nor vanish (a plain square would give 2**10000).
    return x ** 2 * 0.5 + 0.5


def _square_like_grad(x, gy):
    return gy * x


class Overhead(Suite):
    name = "overhead"
    title = "overhead: Goldstein-Price, 1000-step chain y=y*1.0001+0.5, user Function chain"
    per_op = True
    traced = True
    cases_ = [("goldstein", {}), ("chain", {"steps": 1000}), ("userfunc", {"length": 10_000})]
    tiers = {"quick": cases_, "default": cases_, "full": cases_}

    def ops(self, w, p):
        return {"goldstein": 38, "chain": 2 * p.get("steps", 0)}.get(w, p.get("length"))

    def refusal(self, case, peer_name):
        if peer_name == "fastgrad-trace" and case.workload == "userfunc":
            return "a user Function: the trace runs it eagerly"
        return super().refusal(case, peer_name)

    def work(self, case, peer):
        one = [np.array(1.0)]
        if case.workload == "goldstein":
            return Work(goldstein, one * 2)
        if case.workload == "chain":
            steps = case.params["steps"]
            return Work(lambda F, x: chain(x, steps), one)
        square, length = peer.user_function(_square_like, _square_like_grad), \
            case.params["length"]

        def userfunc(F, x):
            for _ in range(length):
                x = square(x)
            return x
        return Work(userfunc, one)

    def reference(self, case):
        if case.workload == "userfunc":
            # Exact at the fixed point; central differences are not: the
            # curvature piles up over 10^4 compositions.
            return {"out": 1.0, "g": [1.0]}
        return super().reference(case)


# ---------------------------------------------------------------------------
# scaling: forward, backward and del against graph size
# ---------------------------------------------------------------------------
class Scaling(Suite):
    """``deep``: a chain of N ops; ``wide``: x0**2 + x1**2 + ... over N
    leaves (DeZero re-sorts its pending list on every push: quadratic)."""

    name = "scaling"
    title = "scaling: deep chain (N ops) and wide sum (N leaves)"
    rows = ("fwd", "bwd", "del")
    exclude = ("numpy",)
    A, B = 1.0001, 0.5
    tiers = {t: [(w, {"n": n}) for w in ("deep", "wide") for n in ns]
             for t, ns in (("quick", (100, 1000)), ("default", (100, 1000, 10_000, 100_000)),
                           ("full", (100, 1000, 10_000, 100_000)))}
    tiers["full"] = tiers["full"] + [("deep", {"n": 1_000_000})]

    def ops(self, w, p):
        return p["n"] if w == "deep" else 2 * p["n"] - 1

    def work(self, case, peer):
        n = case.params["n"]
        if case.workload == "deep":
            return Work(lambda F, x: chain(x, n // 2), [np.array(1.0)], release=True)

        def wide(F, *xs):
            z = xs[0] ** 2
            for x in xs[1:]:
                z = z + x ** 2
            return z
        return Work(wide, [np.array(v) for v in np.linspace(0.5, 1.5, n)], release=True)

    def reference(self, case):
        n, A, B = case.params["n"], self.A, self.B
        if case.workload == "deep":
            s = n // 2
            return {"out": A ** s + B * (A ** s - 1) / (A - 1), "g": [A ** s]}
        x = np.linspace(0.5, 1.5, n)
        return {"out": np.sum(x * x), "g": list(2 * x)}

    def tolerance(self, case):
        return 1e-7


# ---------------------------------------------------------------------------
# array suites: kernels, unary
# ---------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _arrays(dtype, size):
    rng = np.random.default_rng(12345)
    # Positive, away from 0: x ** 2.5 and log are defined, well conditioned.
    return tuple(rng.uniform(0.5, 1.5, size).astype(dtype) for _ in range(2))


KERNELS = {"add": lambda F, x, y: x + y, "mul": lambda F, x, y: x * y,
           "pow3": lambda F, x: x ** 3, "pow2.5": lambda F, x: x ** 2.5}
UNARY = {n: (lambda name: lambda F, x: getattr(F, name)(x))(n)
         for n in ("exp", "tanh", "sin", "sigmoid", "log")}


@dataclass(frozen=True)
class Traffic:
    """The fewest bytes a workload must move, in arrays of its n elements.

    The model (STREAM's way of counting): every array the computation needs
    is read once from memory and every array it produces is written once;
    write-allocate reads are not counted.  Forward+backward adds to the
    forward a backward that

    * starts from a seed, the output's gradient of n ones, which is written
      (a loss's seed is data: the backward reads it where its formula does,
      never assumes it is ones);
    * gives every input its own gradient array: two inputs' gradients may
      not alias each other (DeZero's ``x + y`` hands one array to both);
    * may write a gradient into the seed's array, since the output's
      gradient is dropped after ``backward()`` (DeZero's ``retain_grad``
      semantics): that reuse saves no bytes, but it is why ``x + y`` needs
      only one new array.

    ``fwd`` and ``bwd`` are (reads, writes) counted in arrays; ``bwd``
    includes the seed's write.
    """

    fwd: tuple
    bwd: tuple
    why: str

    def arrays(self, phase):
        """Arrays of n elements moved by ``phase`` ("fwd", "bwd" or "total")."""
        return {"fwd": sum(self.fwd), "bwd": sum(self.bwd),
                "total": sum(self.fwd) + sum(self.bwd)}.get(phase)

    def bytes(self, phase, n, itemsize):
        k = self.arrays(phase)
        return None if k is None else k * n * itemsize


_ONE_PASS = ("backward: the seed written (1 write); one pass reads the seed and {what} "
             "and writes x's gradient (2 reads, 1 write)")
KERNEL_TRAFFIC = {
    "add": Traffic((2, 1), (1, 2), "forward reads x, y and writes x + y; backward: the "
                   "seed written; x's gradient is the seed's array (the gradient of a "
                   "sum passes through unchanged), y's a copy of it (1 read, 1 write): "
                   "6 arrays in all"),
    "mul": Traffic((2, 1), (3, 3), "forward reads x, y, writes x * y; backward: the seed "
                   "written; one pass reads the seed, x and y and writes both gradients "
                   "(3 reads, 2 writes): 9 arrays in all"),
    "pow3": Traffic((1, 1), (2, 2), "forward reads x, writes x ** 3; "
                    + _ONE_PASS.format(what="x (3 * x ** 2)") + ": 6 arrays in all"),
    "pow2.5": Traffic((1, 1), (2, 2), "forward reads x, writes x ** 2.5; "
                      + _ONE_PASS.format(what="x (2.5 * x ** 1.5)") + ": 6 arrays in all"),
}
UNARY_TRAFFIC = {
    name: Traffic((1, 1), (2, 2), f"forward reads x, writes y = {name}(x); "
                  + _ONE_PASS.format(what=what) + ": 6 arrays in all")
    for name, what in (("exp", "y (the derivative is y itself)"),
                       ("tanh", "y (1 - y ** 2)"), ("sin", "x (cos x)"),
                       ("sigmoid", "y (y * (1 - y))"), ("log", "x (1 / x)"))}


class _Arrays(Suite):
    geomean = True
    threaded = True
    rtol = 1e-7
    table = {}

    def traffic_bytes(self, case, phase):
        """Minimal bytes of ``phase`` of ``case`` (None if not declared)."""
        t = (self.traffic or {}).get(case.workload)
        if t is None:
            return None
        return t.bytes(phase, case.params["size"], np.dtype(case.params["dtype"]).itemsize)

    def work(self, case, peer):
        fn = self.table[case.workload]
        xs = _arrays(case.params["dtype"], case.params["size"])
        two = fn.__code__.co_argcount == 3
        return Work(fn, list(xs[:1 + two]), elementwise=True)


def _grid(ops, dtypes, sizes):
    return [(op, {"dtype": d, "size": s}) for s in sizes for d in dtypes for op in ops]


class Kernels(_Arrays):
    name = "kernels"
    title = "kernels: x+y, x*y, x**3, x**2.5, forward and forward+backward"
    table = KERNELS
    traffic = KERNEL_TRAFFIC
    # Default: every op in float64 at 1e6, add/mul in float32 too, add/mul at 1e7.
    tiers = {"quick": _grid(KERNELS, ("float64",), (100_000,)),
             "default": _grid(KERNELS, ("float64",), (10 ** 6,))
             + _grid(("add", "mul"), ("float32",), (10 ** 6,))
             + _grid(("add", "mul"), ("float64",), (10 ** 7,)),
             "full": _grid(KERNELS, ("float32", "float64"), (10 ** 6, 10 ** 7))}


class Unary(_Arrays):
    name = "unary"
    title = "unary: exp tanh sin sigmoid log, forward and forward+backward"
    full, needs = True, ("exp", "tanh", "sin", "sigmoid", "log")
    table = UNARY
    traffic = UNARY_TRAFFIC
    tiers = {"quick": _grid(UNARY, ("float64",), (100_000,)),
             "default": _grid(UNARY, ("float32", "float64"), (10 ** 6,)),
             "full": _grid(UNARY, ("float32", "float64"), (10 ** 6, 10 ** 7))}


class FusedChain(Suite):
    """The tracer's array case: forward and backward as one pass each."""

    name = "fused"
    title = "fused: sum((x * y + z) ** 2) on float64 arrays, forward and backward"
    full, needs = True, ("sum",)
    exclude = ("numpy",)
    traced = True
    threaded = True
    tiers = {"quick": [("affine2", {"size": 10 ** 5})],
             "default": [("affine2", {"size": 10 ** 6})],
             "full": [("affine2", {"size": 10 ** 6}), ("affine2", {"size": 10 ** 7})]}

    def ops(self, w, p):
        return 4

    def work(self, case, peer):
        rng = np.random.default_rng(5)
        xs = [rng.uniform(0.5, 1.5, case.params["size"]) for _ in range(3)]
        return Work(lambda F, x, y, z: F.sum((x * y + z) ** 2), xs)

    def reference(self, case):
        x, y, z = self.work(case, None).inputs
        t = x * y + z
        return {"out": np.sum(t * t), "g": [2 * t * y, 2 * t * x, 2 * t]}


# ---------------------------------------------------------------------------
# the suites of the full API
# ---------------------------------------------------------------------------
def scalar_expression(F, x, y):
    return (F.exp(F.sin(x)) * F.cos(y) + F.tanh(x * y)
            - F.log(x + 2.0) * F.sqrt(y * y + 1.0))


class ScalarFns(Suite):
    name = "scalar-fns"
    title = "scalar-fns: exp(sin x) cos y + tanh(xy) - log(x+2) sqrt(y^2+1), 0-d"
    full, needs = True, ("exp", "sin", "cos", "tanh", "log", "sqrt")
    exclude = ("numpy",)
    traced = True
    tiers = dict.fromkeys(("quick", "default", "full"), [("expr", {})])

    def ops(self, w, p):
        return 15

    def work(self, case, peer):
        return Work(scalar_expression, [np.array(0.7), np.array(1.3)])


class Newton(Suite):
    """Newton's method on x**4 - 2x**2 (the book's step 33): every step
    needs the first and the second derivative."""

    name = "newton"
    title = "newton: 10 steps on x**4 - 2*x**2 from x=2, second derivatives by backprop"
    full, needs = True, ("grad2",)
    rows = ("total",)
    exclude = ("numpy",)
    traced = True
    tiers = dict.fromkeys(("quick", "default", "full"), [("quartic", {"steps": 10})])
    rtol = 1e-9

    def work(self, case, peer):
        return Work(lambda F, x: x ** 4 - 2 * x ** 2, [np.array(2.0)],
                    newton=case.params["steps"])

    def reference(self, case):
        return {"out": _newton(lambda x: (4 * x ** 3 - 4 * x, 12 * x ** 2 - 4), 2.0,
                               case.params["steps"])}


def rosenbrock(F, x0, x1):
    return 100 * (x1 - x0 ** 2) ** 2 + (x0 - 1) ** 2


class Loop(Suite):
    """The README's loop: forward, backward and the ``.data`` update of
    plain gradient descent, one iteration per timed call."""

    name = "loop"
    title = "loop: gradient descent on Rosenbrock, lr 0.001 (book step 28), one iteration"
    rows = ("fwd", "bwd", "sgd", "total")
    exclude = ("numpy",)
    traced = True
    tiers = dict.fromkeys(("quick", "default", "full"), [("rosenbrock", {})])

    def ops(self, w, p):
        return 7

    def work(self, case, peer):
        return Work(rosenbrock, [np.array(0.0), np.array(2.0)], lr=0.001)


class Lstsq(Suite):
    name = "lstsq"
    title = "lstsq: mean_squared_error(matmul(X, W) + b, y), X of N x 1 (book step 42)"
    full, needs = True, ("matmul", "mean_squared_error")
    exclude = ("numpy",)
    threaded = True       # NumPy's BLAS and torch's pool at the setting
    tiers = {"quick": [("mse", {"n": 100})],
             "default": [("mse", {"n": 100}), ("mse", {"n": 10_000})],
             "full": [("mse", {"n": 100}), ("mse", {"n": 10_000})]}

    def ops(self, w, p):
        return 3

    def work(self, case, peer):
        rng = np.random.default_rng(0)
        x = rng.random((case.params["n"], 1))
        y = 5 + 2 * x + rng.random((case.params["n"], 1))
        return Work(lambda F, W, b, x, y: F.mean_squared_error(F.matmul(x, W) + b, y),
                    [np.zeros((1, 1)), np.zeros(1)], [x, y])


def spiral(n_per_class=100, classes=3, seed=1984):
    """Three interleaved arms in 2-d, labels 0..2 (an MLP's first test)."""
    rng = np.random.default_rng(seed)
    xs, ts = [], []
    for c in range(classes):
        r = np.linspace(0.0, 1.0, n_per_class)
        theta = c * 4.0 + 4.0 * r + rng.normal(scale=0.2, size=n_per_class)
        xs.append(np.stack([r * np.sin(theta), r * np.cos(theta)], axis=1))
        ts.append(np.full(n_per_class, c))
    return np.concatenate(xs), np.concatenate(ts)


class Mlp(Suite):
    name = "mlp"
    title = ("mlp: one SGD step, spiral 300x2 -> linear 10 -> sigmoid -> linear 3 "
             "-> softmax cross-entropy")
    full, needs = True, ("linear", "sigmoid", "softmax_cross_entropy")
    rows = ("fwd", "bwd", "total")
    exclude = ("numpy",)
    threaded = traced = True
    cases_ = [("spiral", {"hidden": 10}), ("mnist", {"hidden": 100})]
    tiers = {"quick": cases_[:1], "default": cases_, "full": cases_}

    def ops(self, w, p):
        return 4

    def data(self, case):
        """(x, t, params, lr): the spiral's 300 points, or a random batch of
        100 MNIST-sized rows (784 features, 10 classes)."""
        h = case.params["hidden"]
        rng = np.random.default_rng(0)
        if case.workload == "spiral":
            (x, t), n_in, n_out, lr = spiral(), 2, 3, 1.0
        else:
            n_in, n_out, lr = 784, 10, 0.1
            x, t = rng.random((100, n_in)), rng.integers(0, n_out, 100)
        params = [rng.standard_normal((n_in, h)) * math.sqrt(1 / n_in), np.zeros(h),
                  rng.standard_normal((h, n_out)) * math.sqrt(1 / h), np.zeros(n_out)]
        return x, t, params, lr

    def work(self, case, peer):
        x, t, params, lr = self.data(case)

        def loss(F, W1, b1, W2, b2, x, t):
            return F.softmax_cross_entropy(
                F.linear(F.sigmoid(F.linear(x, W1, b1)), W2, b2), t)
        return Work(loss, params, [x, t], lr=lr, copy=True)

    def reference(self, case):
        """Backpropagation written out in NumPy (central differences over
        the MNIST-sized net's 79,510 parameters would take minutes)."""
        x, t, (W1, b1, W2, b2), lr = self.data(case)
        h = 1 / (1 + np.exp(-(x @ W1 + b1)))
        s = h @ W2 + b2
        e = np.exp(s - s.max(axis=1, keepdims=True))
        p = e / e.sum(axis=1, keepdims=True)
        n = len(t)
        loss = -np.mean(np.log(p[np.arange(n), t]))
        ds = p.copy()
        ds[np.arange(n), t] -= 1
        ds /= n
        dh = (ds @ W2.T) * h * (1 - h)
        grads = [x.T @ dh, dh.sum(axis=0), h.T @ ds, ds.sum(axis=0)]
        return {"out": np.asarray(loss), "g": grads,
                "new": [w - lr * g for w, g in zip((W1, b1, W2, b2), grads)]}


class Conv(Suite):
    name = "conv"
    title = ("conv: conv2d 3x3 (pad 1) then 2x2 max pooling, batch of 8 images, "
             "gradients of the filters and biases; VGG-16 forward+backward, "
             "one image, random weights, gradients of all parameters")
    full, needs = True, ("conv2d", "pooling", "vgg16")
    rows = ("fwd", "bwd", "total")
    exclude = ("numpy",)
    threaded = traced = True
    cases_ = [("small", {"channels": 1, "filters": 4, "size": 16}),
              ("rgb", {"channels": 3, "filters": 8, "size": 32})]
    tiers = {"quick": cases_[:1],
             "default": cases_ + [("vgg16", {"size": 224, "dtype": "float32"})],
             "full": cases_ + [("vgg16", {"size": 224, "dtype": "float32"}),
                               ("vgg16", {"size": 224, "dtype": "float64"})]}

    def work(self, case, peer):
        if case.workload == "vgg16":
            params, x = _vgg16_data(case.params["dtype"], case.params["size"])
            # the image is a constant: the first layer's input gradient is
            # nobody's business (each framework may skip it)
            return Work(lambda F, *args: F.vgg16(args[-1], *args[:-1]), list(params), [x])
        c, o, n = case.params["channels"], case.params["filters"], case.params["size"]
        rng = np.random.default_rng(0)
        x = rng.standard_normal((8, c, n, n))
        W = rng.standard_normal((o, c, 3, 3)) * math.sqrt(1 / (9 * c))
        return Work(lambda F, W, b, x: F.pooling(F.conv2d(x, W, b, 1, 1), 2, 2),
                    [W, np.zeros(o)], [x])

    def tolerance(self, case):
        if case.workload == "vgg16" and case.params["dtype"] == "float32":
            # A float32 rounding that turns a near tie of a max pooling
            # window the other way sends that gradient to another pixel: a
            # few of 138 million gradients then differ by up to about 1% of
            # their array's largest (PyTorch's, measured: 1.04e-2 against
            # the float64 reference; 1e-14 in float64).
            return 3e-2
        return super().tolerance(case)

    def reference(self, case):
        if case.workload == "vgg16":
            params, x = _vgg16_data(case.params["dtype"], case.params["size"])
            return _vgg16_reference([p.astype(np.float64) for p in params],
                                    x.astype(np.float64))
        return super().reference(case)


@functools.lru_cache(maxsize=1)
def _vgg16_data(dtype, size):
    """VGG-16's parameters (W, b per layer, DeZero's shapes and its
    ``randn * sqrt(1 / fan_in)`` initialisation, zero biases) and one image."""
    rng = np.random.default_rng(0)
    params, c = [], 3
    for block, o in zip(P.VGG16_BLOCKS, P.VGG16_CHANNELS):
        for _ in block:
            W = rng.standard_normal((o, c, 3, 3)) * math.sqrt(1 / (9 * c))
            params += [W.astype(dtype), np.zeros(o, dtype)]
            c = o
    for i, o in ((512 * (size // 32) ** 2, 4096), (4096, 4096), (4096, 1000)):
        params += [(rng.standard_normal((i, o)) * math.sqrt(1 / i)).astype(dtype),
                   np.zeros(o, dtype)]
    return tuple(params), rng.standard_normal((1, 3, size, size)).astype(dtype)


def _vgg16_reference(params, x):
    """VGG-16 forward and the gradients of the sum of its outputs, written
    out in NumPy (float64): im2col by sliding windows, products, ReLU masks,
    2x2 max pooling by argmax (central differences over 138 million
    parameters are out of the question)."""
    from numpy.lib.stride_tricks import sliding_window_view
    convs, fcs = params[:26], params[26:]
    h, tape, k = x, [], 0
    for block in P.VGG16_BLOCKS:
        for _ in block:
            W, b = convs[2 * k], convs[2 * k + 1]
            N, Cc, H, Wd = h.shape
            win = sliding_window_view(np.pad(h, ((0, 0), (0, 0), (1, 1), (1, 1))),
                                      (3, 3), axis=(2, 3))
            col = win.transpose(0, 2, 3, 1, 4, 5).reshape(N * H * Wd, Cc * 9)
            z = col @ W.reshape(len(b), -1).T + b
            tape.append(("conv", k, col, z > 0, h.shape))
            h = np.maximum(z, 0).reshape(N, H, Wd, -1).transpose(0, 3, 1, 2)
            k += 1
        N, Cc, H, Wd = h.shape
        win = h.reshape(N, Cc, H // 2, 2, Wd // 2, 2).transpose(0, 1, 2, 4, 3, 5)
        win = win.reshape(N, Cc, H // 2, Wd // 2, 4)
        idx = win.argmax(axis=-1)
        tape.append(("pool", idx, h.shape))
        h = np.take_along_axis(win, idx[..., None], axis=-1)[..., 0]
    a = [h.reshape(h.shape[0], -1)]
    zs = []
    for i in range(3):
        zs.append(a[-1] @ fcs[2 * i] + fcs[2 * i + 1])
        a.append(np.maximum(zs[-1], 0) if i < 2 else zs[-1])
    y = a[-1]

    grads = [None] * len(params)
    g = np.ones_like(y)
    for i in (2, 1, 0):
        if i < 2:
            g = g * (zs[i] > 0)
        grads[26 + 2 * i], grads[27 + 2 * i] = a[i].T @ g, g.sum(axis=0)
        g = g @ fcs[2 * i].T
    g = g.reshape(h.shape)
    for entry in reversed(tape):
        if entry[0] == "pool":
            _, idx, shape = entry
            N, Cc, H, Wd = shape
            gw = np.zeros(idx.shape + (4,))
            np.put_along_axis(gw, idx[..., None], g[..., None], axis=-1)
            g = gw.reshape(N, Cc, H // 2, Wd // 2, 2, 2).transpose(0, 1, 2, 4, 3, 5)
            g = g.reshape(shape)
            continue
        _, k, col, mask, shape = entry
        W = convs[2 * k]
        gz = g.transpose(0, 2, 3, 1).reshape(-1, W.shape[0]) * mask
        grads[2 * k], grads[2 * k + 1] = (gz.T @ col).reshape(W.shape), gz.sum(axis=0)
        if k == 0:
            break
        N, Cc, H, Wd = shape
        gcol = (gz @ W.reshape(W.shape[0], -1)).reshape(N, H, Wd, Cc, 3, 3)
        gx = np.zeros((N, Cc, H + 2, Wd + 2))
        for j in range(3):
            for i in range(3):
                gx[:, :, j:j + H, i:i + Wd] += gcol[..., j, i].transpose(0, 3, 1, 2)
        g = gx[:, :, 1:-1, 1:-1]
    return {"out": y, "g": grads}


class Memory(Suite):
    """Rows of ``fastgrad.bench.memory.collect``, rendered as it renders them."""

    name = "memory"
    title = "memory: fastgrad.bench.memory.collect"
    tiers = {"quick": [("squares", {"size": 100_000, "depth": 10})],
             "default": [("squares", {"size": 10 ** 6, "depth": 10})],
             "full": [("squares", {"size": 10 ** 7, "depth": 10})]}


SUITES = {s.name: s for s in (Overhead(), Scaling(), Kernels(), ScalarFns(), Newton(),
                              Loop(), Lstsq(), Mlp(), Conv(), FusedChain(), Unary(),
                              Memory())}
