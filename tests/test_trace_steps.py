"""fastgrad.trace on networks: Functions outside the table (matmul, linear,
losses, shapes, convolution, pooling, a user's Function) and whole training
steps (cleargrads, backward, optimizer.update) replay with the eager bits."""
import warnings

import numpy as np
import pytest

import fastgrad as fg
import fastgrad.dezero as dz
import fastgrad.dezero.functions as F
import fastgrad.dezero.layers as L
from fastgrad import TraceWarning, trace
from fastgrad.dezero import optimizers
from fastgrad.dezero.models import MLP, Model


def bits(a):
    a = np.asarray(getattr(a, "data", a))
    return a.dtype, a.shape, a.tobytes()


def grads(vs):
    return [None if v.grad is None else bits(v.grad) for v in vs]


class Square(dz.Function):
    def forward(self, x):
        return x ** 2

    def backward(self, gy):
        return 2 * self.inputs[0] * gy


rng = np.random.RandomState(0)
X2 = rng.randn(6, 5)
W2 = rng.randn(5, 4)
B1 = rng.randn(4)
X4 = rng.randn(2, 3, 7, 6)
WC = rng.randn(4, 3, 3, 3)
BC = rng.randn(4)
LABELS = np.array([0, 3, 1, 2, 3, 0])

# name -> (function of Variables, the arrays it takes)
OPS = {
    "matmul": (lambda x, W: F.matmul(x, W), (X2, W2)),
    "linear": (lambda x, W, b: F.linear(x, W, b), (X2, W2, B1)),
    "linear without bias": (lambda x, W: F.linear(x, W), (X2, W2)),
    "bias add that broadcasts": (lambda x, W, b: F.matmul(x, W) + b, (X2, W2, B1)),
    "sum over an axis": (lambda x: F.sum(x * x, axis=1, keepdims=True), (X2,)),
    "sum_to": (lambda x: F.sum_to(F.exp(x), (1, 5)), (X2,)),
    "broadcast_to": (lambda b: F.broadcast_to(b, (6, 4)) * 2, (B1,)),
    "softmax_cross_entropy": (lambda x, W: F.softmax_cross_entropy(F.matmul(x, W), LABELS),
                              (X2, W2)),
    "softmax": (lambda x: F.softmax(x), (X2,)),
    "mean_squared_error": (lambda x, W: F.mean_squared_error(F.matmul(x, W), np.ones((6, 4))),
                           (X2, W2)),
    "relu": (lambda x: F.relu(x), (X2,)),
    "sigmoid": (lambda x: F.sigmoid(x), (X2,)),
    "reshape": (lambda x: F.reshape(x, (3, 10)) * 3, (X2,)),
    "transpose": (lambda x: F.transpose(x) * 3, (X2,)),
    "transpose with axes": (lambda x: F.transpose(x, (0, 2, 3, 1)) * 3, (X4,)),
    "get_item": (lambda x: F.get_item(x, (np.arange(6), LABELS)), (X2,)),
    "conv2d": (lambda x, W, b: F.conv2d(x, W, b, stride=1, pad=1), (X4, WC, BC)),
    "conv2d strided": (lambda x, W: F.conv2d(x, W, stride=2, pad=0), (X4, WC)),
    "pooling": (lambda x: F.pooling(x, 2, 2), (X4,)),
    "average_pooling": (lambda x: F.average_pooling(x, 2, 2), (X4,)),
    "a user Function": (lambda x: Square()(x) + 1, (X2,)),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", list(OPS))
def test_each_op_replays_with_the_eager_bits(name, dtype):
    fn, arrays = OPS[name]
    traced = trace(fn)
    results = []
    for call in range(3):       # eager, then the recording, then two replays
        vs = [dz.Variable(a.astype(dtype)) for a in arrays]
        with warnings.catch_warnings():
            warnings.simplefilter("error", TraceWarning)
            y = (fn if call == 0 else traced)(*vs)
        F.sum(y).backward()
        results.append((bits(y), grads(vs)))
    with warnings.catch_warnings():
        warnings.simplefilter("error", TraceWarning)
        vs = [dz.Variable(a.astype(dtype)) for a in arrays]
        y = traced(*vs)
    F.sum(y).backward()
    results.append((bits(y), grads(vs)))
    assert all(r == results[0] for r in results[1:])
    assert "eager" not in repr(traced)


def test_arguments_are_read_at_every_replay():
    traced = trace(lambda x, W, b: F.linear(x, W, b))
    for k in range(3):
        args = [dz.Variable(a * (k + 1)) for a in (X2, W2, B1)]
        y = traced(*args)
        assert bits(y) == bits(F.linear(*[dz.Variable(a * (k + 1)) for a in (X2, W2, B1)]))


# ---------------------------------------------------------------- training

class CNN(Model):
    def __init__(self):
        super().__init__()
        self.conv = L.Conv2d(4, kernel_size=3, pad=1)
        self.fc = L.Linear(10)

    def forward(self, x):
        h = F.pooling(F.relu(self.conv(x)), 2, 2)
        return self.fc(F.reshape(h, (len(x), -1)))


def _spiral():
    return MLP((10, 3)), (np.random.rand(30, 2), np.random.randint(0, 3, 30))


def _mnist():
    x = np.random.rand(100, 784).astype(np.float32)
    return MLP((100, 10)), (x, np.random.randint(0, 10, 100))


def _cnn():
    x = np.random.rand(8, 1, 10, 10).astype(np.float32)
    return CNN(), (x, np.random.randint(0, 10, 8))


def _train(make, optimizer, traced, form, steps=200):
    np.random.seed(0)
    model, (x, t) = make()
    opt = optimizer.setup(model)

    def step(x, t):
        loss = F.softmax_cross_entropy(model(x), t)
        model.cleargrads()
        loss.backward()
        opt.update()
        return loss

    def loss_fn(x, t):
        return F.softmax_cross_entropy(model(x), t)

    fn = step if form == "step" else loss_fn
    if traced:
        fn = trace(fn)
    losses = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", TraceWarning)
        for i in range(steps):
            batch = (x[(i % 2)::2], t[(i % 2)::2]) if i % 3 == 0 else (x, t)
            loss = fn(*batch)
            if form == "loss":
                model.cleargrads()
                loss.backward()
                opt.update()
            losses.append(bits(loss))
    if traced:
        assert "eager" not in repr(fn)
    return losses, [bits(p) for p in model.params()]


@pytest.mark.parametrize("form", ["step", "loss"])
@pytest.mark.parametrize("net,optimizer", [
    ("spiral", lambda: optimizers.SGD(1.0)),
    ("mnist", lambda: optimizers.MomentumSGD(0.1)),
    ("cnn", lambda: optimizers.Adam(0.01)),
])
def test_training_replays_with_the_eager_bits(net, optimizer, form):
    make = {"spiral": _spiral, "mnist": _mnist, "cnn": _cnn}[net]
    eager = _train(make, optimizer(), False, form)
    traced = _train(make, optimizer(), True, form)
    assert traced == eager


def test_dropout_draws_anew_and_test_mode_is_another_plan():
    def run(traced):
        np.random.seed(1)
        model = MLP((20, 3))
        opt = optimizers.SGD(0.1).setup(model)
        x = np.random.rand(10, 4)

        def step(x):
            loss = F.sum(F.dropout(model(x), 0.5))
            model.cleargrads()
            loss.backward()
            opt.update()
            return loss
        fn = trace(step) if traced else step
        out = []
        for i in range(6):
            if i % 2:
                with dz.test_mode():
                    out.append(bits(fn(x)))
            else:
                out.append(bits(fn(x)))
        return out, [bits(p) for p in model.params()], fn
    eager, traced = run(False), run(True)
    assert traced[:2] == eager[:2]
    assert repr(traced[2]).startswith("<traced step: 2 plans")


def test_lazy_initialisation_records_the_next_call():
    model = MLP((5, 2))
    calls = []

    @trace
    def f(x):
        calls.append(1)
        return F.sum(model(x))
    x = np.ones((3, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error", TraceWarning)
        for _ in range(4):
            f(x)
    assert len(calls) == 2          # the first call initialised, the second recorded
    assert repr(f) == "<traced f: 1 plan (4 ops)>"


def test_steps_that_cannot_be_replayed_say_why():
    model = MLP((5, 2))
    x = np.ones((3, 4))
    model(x)

    def penalty(x):
        loss = F.sum(model(x))
        model.cleargrads()
        loss.backward(create_graph=True)
        return loss
    with pytest.warns(TraceWarning, match="create_graph"):
        trace(penalty)(x)

    def manual_update(x):
        loss = F.sum(model(x))
        model.cleargrads()
        loss.backward()
        for p in model.params():
            p.data -= 0.1 * p.grad.data
        return loss
    with pytest.warns(TraceWarning, match="reads .grad of a Variable from outside"):
        trace(manual_update)(x)


def test_run_on_replay_and_a_step_that_returns_nothing():
    W = dz.Parameter(np.ones((4, 2)))
    log = []

    @trace
    def step(x):
        loss = F.sum(F.matmul(x, W))
        W.cleargrad()
        loss.backward()
        fg.run_on_replay(lambda: log.append(float(W.grad.data.sum())))
    x = np.ones((3, 4))
    for _ in range(3):
        assert step(x) is None
    assert log == [24.0, 24.0, 24.0]
    assert repr(step) == "<traced step: 1 plan (2 ops)>"


def test_a_captured_parameter_of_a_new_shape_records_again():
    W = dz.Parameter(np.ones((4, 2)))
    f = trace(lambda x: F.matmul(x, W))
    x = np.ones((3, 4))
    f(x)
    W.data = np.ones((4, 5))
    assert f(x).shape == (3, 5)


def test_stage2_face_traces_a_loss_with_a_user_function():
    class Cube(fg.Function):
        def forward(self, x):
            return x ** 3

        def backward(self, gy):
            return 3 * self.inputs[0].data ** 2 * gy
    f = trace(lambda x: Cube()(x) * 2 + x)
    out = []
    for _ in range(3):
        x = fg.Variable(np.array([1.0, 2.0]))
        y = f(x)
        y.backward()
        out.append((bits(y), bits(x.grad)))
    assert out[0] == out[1] == out[2]
    assert out[0][1][2] == np.array([7.0, 25.0]).tobytes()
