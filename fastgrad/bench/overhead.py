"""Suite ``overhead``: per-operation cost of building and differentiating
small scalar graphs, where framework overhead dominates the arithmetic."""
import numpy as np

from .cases import Case
from .timing import Bench, Phase, State

SUITE = "overhead"
ALL = ("numpy", "fastgrad", "fastgrad-pure", "dezero", "torch", "autograd")
CHAIN_STEPS = 1000
USERFUNC_LENGTH = 10_000


def goldstein(x, y):
    """Goldstein-Price function exactly as in the book's step 24 (38 ops)."""
    z = (1 + (x + y + 1)**2 * (19 - 14*x + 3*x**2 - 14*y + 6*x*y + 3*y**2)) * \
        (30 + (2*x - 3*y)**2 * (18 - 32*x + 12*x**2 + 48*y - 36*x*y + 27*y**2))
    return z


def chain(x, steps):
    """``steps`` repetitions of ``y = y * 1.0001 + 0.5`` (2 ops each)."""
    y = x
    for _ in range(steps):
        y = y * 1.0001 + 0.5
    return y


def cases(opts):
    """Cases of this suite; every tier runs all three."""
    return [
        Case(SUITE, "goldstein", {}, ALL, ops=38),
        Case(SUITE, "chain", {"steps": CHAIN_STEPS}, ALL,
             ops=2 * CHAIN_STEPS),
        Case(SUITE, "userfunc", {"length": USERFUNC_LENGTH},
             ("fastgrad", "fastgrad-pure", "dezero"),
             ops=USERFUNC_LENGTH),
    ]


def reference(case):
    """Expected outputs computed with plain floats / finite differences."""
    if case.workload == "goldstein":
        h = 1e-6  # central differences: error ~1e-10 relative at (1, 1)
        gx = (goldstein(1 + h, 1.0) - goldstein(1 - h, 1.0)) / (2 * h)
        gy = (goldstein(1.0, 1 + h) - goldstein(1.0, 1 - h)) / (2 * h)
        return {"z": goldstein(1.0, 1.0), "gx": gx, "gy": gy}, 1e-6
    if case.workload == "chain":
        steps = case.params["steps"]
        return {"z": chain(1.0, steps), "gx": 1.0001 ** steps}, 1e-9
    if case.workload == "userfunc":
        return {"z": 1.0, "gx": 1.0}, 1e-12
    raise KeyError(case.workload)


def _user_function_class(module):
    """A user Function written the notebook's way.

    It computes (x**2 + 1) / 2, a square with a fixed point at 1 and slope 1
    there, so 10^4 compositions neither overflow nor vanish (a plain Square
    would give gradients of 2**10000).  Like the notebook's Square, backward
    reads ``self.inputs[0].data``.
    """
    class SquareLike(module.Function):
        def forward(self, x):
            return x ** 2 * 0.5 + 0.5

        def backward(self, gy):
            x = self.inputs[0].data
            return x * gy

    return SquareLike


def _function_graph(case):
    """The forward computation as a function of the input variables."""
    if case.workload == "goldstein":
        return lambda x, y: goldstein(x, y)
    steps = case.params["steps"]
    return lambda x: chain(x, steps)


def build(case, peer, module):
    """Return the :class:`Bench` of ``case`` for ``peer``."""
    two_inputs = case.workload == "goldstein"

    if peer in ("fastgrad", "fastgrad-pure", "dezero"):
        V = module.Variable
        if case.workload == "userfunc":
            square = _user_function_class(module)
            length = case.params["length"]

            def forward(s):
                y = s.x
                for _ in range(length):
                    y = square()(y)
                s.z = y
        else:
            f = _function_graph(case)

            def forward(s):
                s.z = f(s.x, s.y) if two_inputs else f(s.x)

        def setup():
            return State(x=V(np.array(1.0)), y=V(np.array(1.0)))

        def capture(s):
            s.out = {"z": s.z.data, "gx": s.x.grad}
            if two_inputs:
                s.out["gy"] = s.y.grad

        return Bench(setup, [Phase("fwd", forward),
                             Phase("bwd", lambda s: s.z.backward()),
                             Phase("capture", capture, timed=False)],
                     lambda s: s.out)

    f = _function_graph(case)
    if peer == "numpy":  # forward-only floor on 0-d arrays
        def forward(s):
            s.z = f(s.x, s.y) if two_inputs else f(s.x)
        return Bench(lambda: State(x=np.array(1.0), y=np.array(1.0)),
                     [Phase("fwd", forward),
                      Phase("capture", lambda s: setattr(s, "out", {"z": s.z}),
                            timed=False)],
                     lambda s: s.out)

    if peer == "torch":
        torch = module

        def setup():
            return State(x=torch.tensor(1.0, dtype=torch.float64, requires_grad=True),
                         y=torch.tensor(1.0, dtype=torch.float64, requires_grad=True))

        def forward(s):
            s.z = f(s.x, s.y) if two_inputs else f(s.x)

        def capture(s):
            s.out = {"z": s.z.detach().numpy(), "gx": s.x.grad.numpy()}
            if two_inputs:
                s.out["gy"] = s.y.grad.numpy()

        return Bench(setup, [Phase("fwd", forward),
                             Phase("bwd", lambda s: s.z.backward()),
                             Phase("capture", capture, timed=False)],
                     lambda s: s.out)

    if peer == "autograd":
        make_vjp = module["autograd"].make_vjp
        if two_inputs:
            g = lambda xy: f(xy[0], xy[1])  # noqa: E731 - autograd wants one argument
            x0 = (1.0, 1.0)
        else:
            g, x0 = f, 1.0

        def forward(s):
            s.vjp, s.z = make_vjp(g)(x0)

        def backward(s):
            s.g = s.vjp(1.0)

        def capture(s):
            s.out = {"z": s.z}
            if two_inputs:
                s.out["gx"], s.out["gy"] = s.g
            else:
                s.out["gx"] = s.g

        return Bench(State, [Phase("fwd", forward), Phase("bwd", backward),
                             Phase("capture", capture, timed=False)],
                     lambda s: s.out)
    raise KeyError(peer)
