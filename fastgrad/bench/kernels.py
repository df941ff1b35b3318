"""Suite ``kernels``: elementwise ops on large arrays, forward + backward.

Bandwidth is reported against the bytes a fused implementation must move,
per phase, counting each array read or written once (STREAM convention, no
write-allocate traffic):

* ``x + y``: forward reads x, y, writes z (3); backward writes gx, gy (2).
* ``x * y``: forward 3; backward reads x, y, writes gx, gy (4).
* ``x ** c``: forward reads x, writes z (2); backward reads x, writes gx (2).

The seed gradient (ones) is assumed folded into the backward kernel.
"""

import functools

import numpy as np

from .cases import Case
from .timing import Bench, Phase, Settings, State, measure

SUITE = "kernels"
PEERS = ("numpy", "fastgrad", "fastgrad-pure", "dezero", "torch", "autograd")
OPS = {
    # name: (number of inputs, forward arrays moved, backward arrays moved)
    "add": (2, 3, 2),
    "mul": (2, 3, 4),
    "pow3": (1, 2, 2),
    "pow2.5": (1, 2, 2),
}
DTYPES = ("float32", "float64")
DEFAULT_SIZES = (1_000_000, 10_000_000)
QUICK_SIZES = (100_000,)


def cases(opts):
    """Every op x dtype x size; ``--sizes`` replaces the sizes.

    Without ``--sizes``: quick = float64 at 10^5; default = a subset at 10^6
    and 10^7 (see below); full = every op and dtype at 10^6 and 10^7.
    """
    if opts.sizes:
        points = [(s, d) for s in opts.sizes for d in DTYPES]
    elif opts.tier == "quick":
        points = [(s, "float64") for s in QUICK_SIZES]
    elif opts.tier == "default":
        # The representative subset (all 16 cells x 6 peers take ~3 minutes
        # on their own on 2 cores): every op in float64 at 10^6, add/mul in
        # float32 too, and add/mul at 10^7, where the STREAM target applies.
        small, big = DEFAULT_SIZES
        cells = [(small, "float64", op) for op in OPS]
        cells += [(small, "float32", op) for op in ("add", "mul")]
        cells += [(big, "float64", op) for op in ("add", "mul")]
        return [Case(SUITE, op, {"dtype": dtype, "size": size}, PEERS, ops=1)
                for size, dtype, op in cells]
    else:
        points = [(s, d) for s in DEFAULT_SIZES for d in DTYPES]
    return [Case(SUITE, op, {"dtype": dtype, "size": size}, PEERS, ops=1)
            for size, dtype in points for op in OPS]


def bytes_moved(case):
    """(forward bytes, backward bytes) per call of a fused implementation."""
    _, fwd, bwd = OPS[case.workload]
    item = np.dtype(case.params["dtype"]).itemsize
    n = case.params["size"]
    return fwd * n * item, bwd * n * item


@functools.lru_cache(maxsize=1)
def _cached_inputs(dtype, n):
    rng = np.random.default_rng(12345)
    # Positive inputs so that x ** 2.5 is defined.
    x = rng.uniform(0.5, 1.5, n).astype(dtype)
    y = rng.uniform(0.5, 1.5, n).astype(dtype)
    return x, y


def _inputs(case):
    """The case's inputs, generated once and shared by all peers."""
    return _cached_inputs(case.params["dtype"], case.params["size"])


def _apply(op, x, y):
    if op == "add":
        return x + y
    if op == "mul":
        return x * y
    if op == "pow3":
        return x ** 3
    return x ** 2.5


def reference(case):
    """Forward value and gradients computed in float64 with NumPy."""
    x, y = (a.astype(np.float64) for a in _inputs(case))
    op = case.workload
    out = {"z": _apply(op, x, y)}
    if op == "add":
        out["gx"] = np.ones_like(x)
        out["gy"] = np.ones_like(y)
    elif op == "mul":
        out["gx"], out["gy"] = y, x
    elif op == "pow3":
        out["gx"] = 3 * x ** 2
    else:
        out["gx"] = 2.5 * x ** 1.5
    rtol = 1e-4 if case.params["dtype"] == "float32" else 1e-9
    return out, rtol


def build(case, peer, module):
    """fwd / bwd phases on fresh leaves wrapping the same input arrays."""
    op = case.workload
    two = OPS[op][0] == 2
    xa, ya = _inputs(case)

    def capture_from(z, gx, gy):
        out = {"z": z, "gx": gx}
        if two:
            out["gy"] = gy
        return out

    if peer == "numpy":
        def forward(s):
            s.z = _apply(op, xa, ya)
        return Bench(State, [Phase("fwd", forward),
                             Phase("capture", lambda s: setattr(s, "out", {"z": s.z}),
                                   timed=False)],
                     lambda s: s.out, prewarm=True)

    if peer in ("fastgrad", "fastgrad-pure", "dezero"):
        V = module.Variable

        def setup():
            return State(x=V(xa), y=V(ya))

        def forward(s):
            s.z = _apply(op, s.x, s.y)

        def capture(s):
            s.out = capture_from(s.z.data, s.x.grad, s.y.grad)

        return Bench(setup, [Phase("fwd", forward),
                             Phase("bwd", lambda s: s.z.backward()),
                             Phase("capture", capture, timed=False)],
                     lambda s: s.out, prewarm=True)

    if peer == "torch":
        torch = module
        xt, yt = torch.from_numpy(xa), torch.from_numpy(ya)

        def setup():
            # detach() gives a fresh leaf sharing the memory: no copy.
            return State(x=xt.detach().requires_grad_(True),
                         y=yt.detach().requires_grad_(True))

        def forward(s):
            s.z = _apply(op, s.x, s.y)

        def backward(s):
            s.z.backward(torch.ones_like(s.z))

        def capture(s):
            gy = s.y.grad.numpy() if two else None
            s.out = capture_from(s.z.detach().numpy(), s.x.grad.numpy(), gy)

        return Bench(setup, [Phase("fwd", forward), Phase("bwd", backward),
                             Phase("capture", capture, timed=False)],
                     lambda s: s.out, prewarm=True)

    if peer == "autograd":
        make_vjp = module["autograd"].make_vjp
        if two:
            fn, arg = (lambda a: _apply(op, a[0], a[1])), (xa, ya)
        else:
            fn, arg = (lambda a: _apply(op, a, None)), xa

        def forward(s):
            s.vjp, s.z = make_vjp(fn)(arg)

        def backward(s):
            s.g = s.vjp(np.ones_like(s.z))

        def capture(s):
            gx, gy = s.g if two else (s.g, None)
            s.out = capture_from(s.z, gx, gy)

        return Bench(State, [Phase("fwd", forward), Phase("bwd", backward),
                             Phase("capture", capture, timed=False)],
                     lambda s: s.out, prewarm=True)
    raise KeyError(peer)


def stream_ceiling(size, settings: Settings):
    """Measure the memory-bandwidth ceiling in this run.

    Uses ``fastgrad._ops.stream_triad(a, b, c, scalar, nthreads)`` (a = b +
    scalar*c, 24 bytes per element) for 1 and 2 threads.  If it is missing,
    falls back to a single-threaded NumPy copy (16 bytes per element),
    labelled as an estimate.  Returns a list of dicts.
    """
    a = np.zeros(size)
    b = np.ones(size)
    c = np.full(size, 2.0)
    try:
        from fastgrad import _ops
        triad = _ops.stream_triad
        # A small trial call: a changed signature or a wrong result must not
        # crash the run or yield a bogus ceiling.
        t_a, t_b, t_c = np.zeros(1000), np.ones(1000), np.full(1000, 2.0)
        for nthreads in (1, 2):
            t_a[:] = 0.0
            triad(t_a, t_b, t_c, 3.0, nthreads)
            if not np.allclose(t_a, 7.0):
                raise ValueError(f"stream_triad(..., {nthreads}) computed a wrong result")
    except Exception as exc:  # kernels not built yet, no triad, or broken
        triad = None
        reason = f"fastgrad._ops.stream_triad unavailable ({exc!r})"
    quick = Settings(target=min(settings.target, 0.1), repeats=settings.repeats)
    out = []
    if triad is not None:
        for nthreads in (1, 2):
            bench = Bench(State, [Phase("triad", lambda s, t=nthreads: triad(a, b, c, 3.0, t))])
            stats, _ = measure(bench, quick)
            t = stats["phases"]["triad"]["median"]
            ok = np.allclose(a[:16], 1.0 + 3.0 * 2.0)
            out.append({"method": f"stream_triad {nthreads} thread{'s' * (nthreads > 1)}",
                        "threads": nthreads, "size": size,
                        "bytes": 24 * size, "gbps": 24 * size / t / 1e9,
                        "stats": stats, "checked": bool(ok)})
    else:
        bench = Bench(State, [Phase("copy", lambda s: np.copyto(a, b))])
        stats, _ = measure(bench, quick)
        t = stats["phases"]["copy"]["median"]
        out.append({"method": "numpy copy estimate (1 thread)", "threads": 1,
                    "size": size, "bytes": 16 * size, "gbps": 16 * size / t / 1e9,
                    "stats": stats, "note": reason})
    return out


