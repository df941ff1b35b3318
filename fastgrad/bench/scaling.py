"""Suite ``scaling``: how forward, backward and ``del`` grow with graph size.

* ``deep``: a chain of N ops, ``y = y * 1.0001 + 0.5`` repeated N/2 times.
* ``wide``: ``z = x0**2 + x1**2 + ...`` over N scalar leaves (about 2N ops);
  DeZero's backward re-sorts its pending-function list on every push, which
  makes this quadratic for it.
"""
import numpy as np

from .cases import Case
from .timing import Bench, Phase, State

SUITE = "scaling"
PEERS = ("fastgrad", "fastgrad-pure", "dezero", "torch", "autograd")
DEFAULT_NS = (100, 1_000, 10_000, 100_000)
QUICK_NS = (100, 1_000)
A, B = 1.0001, 0.5


def cases(opts):
    """Deep and wide cases for each N.

    ``--ns`` replaces the Ns; otherwise 10^2..10^5 (quick: 10^2..10^3), and
    ``--full`` adds a 10^6-op deep chain.
    """
    if opts.ns:
        ns = list(opts.ns)
    elif opts.tier == "quick":
        ns = list(QUICK_NS)
    else:
        ns = list(DEFAULT_NS)
    out = []
    for workload in ("deep", "wide"):
        for n in ns:
            out.append(Case(SUITE, workload, {"n": n}, PEERS,
                            ops=n if workload == "deep" else 2 * n - 1))
    if opts.tier == "full" and not opts.ns:
        out.append(Case(SUITE, "deep", {"n": 1_000_000}, PEERS, ops=1_000_000))
    return out


def _leaves(n):
    return np.linspace(0.5, 1.5, n)


def reference(case):
    """Closed-form value and gradient."""
    n = case.params["n"]
    if case.workload == "deep":
        steps = n // 2
        z = A ** steps + B * (A ** steps - 1) / (A - 1)
        return {"z": z, "gx": A ** steps}, 1e-7
    x = _leaves(n)
    return {"z": float(np.sum(x * x)), "gx": 2 * x}, 1e-9


def _deep(x, steps):
    y = x
    for _ in range(steps):
        y = y * A + B
    return y


def _wide(xs):
    z = xs[0] ** 2
    for x in xs[1:]:
        z = z + x ** 2
    return z


def build(case, peer, module):
    """Phases: fwd, bwd, (untimed capture), del (dropping every reference)."""
    n = case.params["n"]
    deep = case.workload == "deep"
    steps = n // 2
    values = None if deep else _leaves(n)

    def release(s):
        s.graph = None  # the whole graph goes with the last reference

    if peer in ("fastgrad", "fastgrad-pure", "dezero", "torch"):
        if peer == "torch":
            torch = module

            def leaf(v):
                return torch.tensor(v, dtype=torch.float64, requires_grad=True)

            def grad_of(v):
                return v.grad.numpy()

            def value_of(v):
                return v.detach().numpy()
        else:
            V = module.Variable

            def leaf(v):
                return V(np.array(v))

            def grad_of(v):
                return v.grad

            def value_of(v):
                return v.data

        if deep:
            def setup():
                return State(graph={"x": leaf(1.0)})

            def forward(s):
                s.graph["z"] = _deep(s.graph["x"], steps)
        else:
            def setup():
                return State(graph={"xs": [leaf(v) for v in values]})

            def forward(s):
                s.graph["z"] = _wide(s.graph["xs"])

        def capture(s):
            g = s.graph
            gx = grad_of(g["x"]) if deep else np.array([grad_of(v) for v in g["xs"]])
            s.out = {"z": value_of(g["z"]), "gx": gx}

        return Bench(setup, [Phase("fwd", forward),
                             Phase("bwd", lambda s: s.graph["z"].backward()),
                             Phase("capture", capture, timed=False),
                             Phase("del", release)],
                     lambda s: s.out)

    if peer == "autograd":
        make_vjp = module["autograd"].make_vjp
        if deep:
            fn, x0 = (lambda x: _deep(x, steps)), 1.0
        else:
            fn, x0 = _wide, list(values)

        def forward(s):
            vjp, z = make_vjp(fn)(x0)
            s.graph = {"vjp": vjp, "z": z}

        def backward(s):
            s.graph["g"] = s.graph["vjp"](1.0)

        def capture(s):
            g = s.graph
            s.out = {"z": g["z"], "gx": np.array(g["g"])}

        return Bench(State, [Phase("fwd", forward), Phase("bwd", backward),
                             Phase("capture", capture, timed=False),
                             Phase("del", release)],
                     lambda s: s.out)
    raise KeyError(peer)
