"""The book's training programs (steps 44-60) on fastgrad.dezero and on DeZero.

Each program is written once against a namespace of modules (``fw``) and
run twice from the same np.random seed: with DeZero 0.0.13 and with
fastgrad.dezero.  The losses (printed with ``pytest -s``) must be the same
numbers, bit for bit.  Fewer iterations than the book runs, to keep the
suite quick; the arithmetic per step is the same.

Each program runs twice: with the layers as the book creates them (float32
by default: under NumPy 2 DeZero's ``randn(...).astype(float32) *
np.sqrt(1 / I)`` gives float64 weights and float32 biases, and fastgrad's
default dtype rules are DeZero's, grads and optimizer updates included),
and with every parameter float64 (``_float64``: the same draws).
"""
import gc
import math
import tracemalloc
import types
import weakref

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from conftest import dezero_numpy_int, import_dezero


# =============================================================================
# the two frameworks as namespaces with the same attribute names
# =============================================================================
def _dezero_fw():
    dz = import_dezero("dezero")
    return types.SimpleNamespace(
        name="dezero", Variable=dz.Variable, Model=dz.Model,
        F=import_dezero("dezero.functions"), L=import_dezero("dezero.layers"),
        models=import_dezero("dezero.models"),
        optimizers=import_dezero("dezero.optimizers"),
        datasets=import_dezero("dezero.datasets"),
        DataLoader=import_dezero("dezero.dataloaders").DataLoader,
        SeqDataLoader=import_dezero("dezero.dataloaders").SeqDataLoader,
        no_grad=dz.no_grad, test_mode=dz.test_mode,
        # DeZero's get_spiral reads np.int when called
        int_alias=dezero_numpy_int,
    )


def _fastgrad_fw():
    import contextlib

    from fastgrad.functions import networks as nn_functions
    from fastgrad.dezero import core, functions_conv, layers, models
    import fastgrad.dezero.functions as F
    optimizers = pytest.importorskip("fastgrad.dezero.optimizers")
    datasets = pytest.importorskip("fastgrad.dezero.datasets")
    dataloaders = pytest.importorskip("fastgrad.dezero.dataloaders")
    # fastgrad.dezero.functions re-exports these once the package wires
    # them in; until then they come from their own modules.
    names = dict(vars(F))
    for mod in (nn_functions, functions_conv):
        for n in mod.__all__:
            names.setdefault(n, getattr(mod, n))
    return types.SimpleNamespace(
        name="fastgrad", Variable=core.Variable, Model=models.Model,
        F=types.SimpleNamespace(**names), L=layers, models=models,
        optimizers=optimizers, datasets=datasets,
        DataLoader=dataloaders.DataLoader, SeqDataLoader=dataloaders.SeqDataLoader,
        no_grad=core.no_grad, test_mode=core.test_mode,
        int_alias=contextlib.nullcontext,
    )


def _both():
    return _dezero_fw(), _fastgrad_fw()


def _float64(model):
    """Make every Linear/Conv layer of ``model`` create float64 weights.

    Call before the first forward (the weights are created lazily then);
    existing biases are converted.
    """
    stack = [model]
    while stack:
        layer = stack.pop()
        for value in list(vars(layer).values()):
            if hasattr(value, "params") and hasattr(value, "_params"):
                stack.append(value)
        if hasattr(layer, "dtype") and hasattr(layer, "W"):
            assert layer.W.data is None, "call _float64 before the weights exist"
            layer.dtype = np.float64
            b = getattr(layer, "b", None)
            if b is not None:
                b.data = b.data.astype(np.float64)
    return model


def _run(program, *args, exact=True, rtol=0.0, **kwargs):
    dz, fg = _both()
    got_d = program(dz, *args, **kwargs)
    got_f = program(fg, *args, **kwargs)
    print(f"\n{program.__name__}: dezero {got_d[:3]} ... {got_d[-1]}")
    print(f"{program.__name__}: fastgrad {got_f[:3]} ... {got_f[-1]}")
    assert len(got_d) == len(got_f)
    if exact:
        assert_array_equal(np.array(got_f), np.array(got_d))
    else:
        assert_allclose(np.array(got_f), np.array(got_d), rtol=rtol)
    return got_d, got_f


# =============================================================================
# steps 43-46: sine regression with Linear layers, Model, optimizers
# =============================================================================
def sine_regression_linear(fw, iters=300, float64=True):
    # step 44: two Linear layers, sigmoid, manual SGD updates
    F, L = fw.F, fw.L
    np.random.seed(0)
    x = np.random.rand(100, 1)
    y = np.sin(2 * np.pi * x) + np.random.rand(100, 1)
    l1, l2 = L.Linear(10), L.Linear(1)
    if float64:
        _float64(l1), _float64(l2)

    def predict(x):
        y = l1(x)
        y = F.sigmoid(y)
        y = l2(y)
        return y

    lr = 0.2
    losses = []
    for i in range(iters):
        y_pred = predict(x)
        loss = F.mean_squared_error(y, y_pred)
        l1.cleargrads()
        l2.cleargrads()
        loss.backward()
        for layer in [l1, l2]:
            for p in layer.params():
                p.data -= lr * p.grad.data
        losses.append(float(loss.data))
    return losses


def sine_regression_model(fw, iters=200, optimizer="SGD", float64=True):
    # steps 45-46: a Model subclass and an MLP, with an optimizer
    F, L = fw.F, fw.L

    class TwoLayerNet(fw.Model):
        def __init__(self, hidden_size, out_size):
            super().__init__()
            self.l1 = L.Linear(hidden_size)
            self.l2 = L.Linear(out_size)

        def forward(self, x):
            y = F.sigmoid(self.l1(x))
            y = self.l2(y)
            return y

    np.random.seed(0)
    x = np.random.rand(100, 1)
    y = np.sin(2 * np.pi * x) + np.random.rand(100, 1)
    losses = []
    for model in (TwoLayerNet(10, 1), fw.models.MLP((10, 1))):
        if float64:
            _float64(model)
        if optimizer == "SGD":
            opt = fw.optimizers.SGD(0.2).setup(model)
        else:
            opt = fw.optimizers.MomentumSGD(0.05).setup(model)
        for i in range(iters):
            y_pred = model(x)
            loss = F.mean_squared_error(y, y_pred)
            model.cleargrads()
            loss.backward()
            opt.update()
            losses.append(float(loss.data))
    return losses


# The book's layers (float32 requested) or every parameter float64.
DTYPES = [pytest.param(False, id="book-float32"), pytest.param(True, id="float64")]


@pytest.mark.parametrize("float64", DTYPES)
def test_step44_sine_regression_linear(float64):
    _run(sine_regression_linear, float64=float64)


@pytest.mark.parametrize("float64", DTYPES)
@pytest.mark.parametrize("optimizer", ["SGD", "MomentumSGD"])
def test_step45_46_model_mlp_optimizers(optimizer, float64):
    _run(sine_regression_model, optimizer=optimizer, float64=float64)


# =============================================================================
# steps 47-50: spiral classification, manual batches and DataLoader
# =============================================================================
def spiral_manual_batches(fw, max_epoch=30, float64=True):
    # step 48
    F = fw.F
    batch_size, hidden_size, lr = 30, 10, 1.0
    with fw.int_alias():
        x, t = fw.datasets.get_spiral(train=True)
    model = fw.models.MLP((hidden_size, 3))
    if float64:
        _float64(model)
    optimizer = fw.optimizers.SGD(lr).setup(model)
    data_size = len(x)
    max_iter = math.ceil(data_size / batch_size)
    losses = []
    for epoch in range(max_epoch):
        index = np.random.permutation(data_size)
        sum_loss = 0
        for i in range(max_iter):
            batch_index = index[i * batch_size:(i + 1) * batch_size]
            batch_x = x[batch_index]
            batch_t = t[batch_index]
            y = model(batch_x)
            loss = F.softmax_cross_entropy(y, batch_t)
            model.cleargrads()
            loss.backward()
            optimizer.update()
            sum_loss += float(loss.data) * len(batch_t)
        losses.append(sum_loss / data_size)
    return losses


def spiral_dataloader(fw, max_epoch=15, float64=True):
    # steps 49-50: Spiral dataset, DataLoader, accuracy, a no_grad test pass
    F = fw.F
    batch_size, hidden_size, lr = 30, 10, 1.0
    with fw.int_alias():
        train_set = fw.datasets.Spiral(train=True)
        test_set = fw.datasets.Spiral(train=False)
    train_loader = fw.DataLoader(train_set, batch_size)
    test_loader = fw.DataLoader(test_set, batch_size, shuffle=False)
    model = fw.models.MLP((hidden_size, 3))
    if float64:
        _float64(model)
    optimizer = fw.optimizers.SGD(lr).setup(model)
    out = []
    for epoch in range(max_epoch):
        sum_loss, sum_acc = 0, 0
        for x, t in train_loader:
            y = model(x)
            loss = F.softmax_cross_entropy(y, t)
            acc = F.accuracy(y, t)
            model.cleargrads()
            loss.backward()
            optimizer.update()
            sum_loss += float(loss.data) * len(t)
            sum_acc += float(acc.data) * len(t)
        out += [sum_loss / len(train_set), sum_acc / len(train_set)]
        sum_loss, sum_acc = 0, 0
        with fw.no_grad():
            for x, t in test_loader:
                y = model(x)
                sum_loss += float(F.softmax_cross_entropy(y, t).data) * len(t)
                sum_acc += float(F.accuracy(y, t).data) * len(t)
        out += [sum_loss / len(test_set), sum_acc / len(test_set)]
    return out


@pytest.mark.parametrize("float64", DTYPES)
def test_step48_spiral_manual_batches(float64):
    _run(spiral_manual_batches, float64=float64)


@pytest.mark.parametrize("float64", DTYPES)
def test_step49_50_spiral_dataloader(float64):
    _run(spiral_dataloader, float64=float64)


# =============================================================================
# step 53: save and load in the middle of training
# =============================================================================
def spiral_save_resume(fw, tmp_path, float64=True):
    F = fw.F
    with fw.int_alias():
        x, t = fw.datasets.get_spiral(train=True)
    np.random.seed(0)
    model = fw.models.MLP((10, 3))
    if float64:
        _float64(model)
    opt = fw.optimizers.SGD(1.0).setup(model)
    losses = []
    for i in range(20):
        loss = F.softmax_cross_entropy(model(x), t)
        model.cleargrads()
        loss.backward()
        opt.update()
        losses.append(float(loss.data))
    path = str(tmp_path / f"{fw.name}.npz")
    model.save_weights(path)
    fresh = fw.models.MLP((10, 3))
    fresh.load_weights(path)
    opt = fw.optimizers.SGD(1.0).setup(fresh)
    for i in range(20):
        loss = F.softmax_cross_entropy(fresh(x), t)
        fresh.cleargrads()
        loss.backward()
        opt.update()
        losses.append(float(loss.data))
    return losses


@pytest.mark.parametrize("float64", DTYPES)
def test_step53_save_and_resume(tmp_path, float64):
    _run(spiral_save_resume, tmp_path, float64=float64)


# =============================================================================
# step 54: dropout while training, test_mode for evaluation
# =============================================================================
def spiral_dropout(fw, iters=100, float64=True):
    F, L = fw.F, fw.L

    class DropoutMLP(fw.Model):
        def __init__(self):
            super().__init__()
            self.l1 = L.Linear(20)
            self.l2 = L.Linear(3)

        def forward(self, x):
            h = F.dropout(F.relu(self.l1(x)), 0.3)
            return self.l2(h)

    with fw.int_alias():
        x, t = fw.datasets.get_spiral(train=True)
    np.random.seed(1)
    model = DropoutMLP()
    if float64:
        _float64(model)
    opt = fw.optimizers.Adam().setup(model)
    out = []
    for i in range(iters):
        loss = F.softmax_cross_entropy(model(x), t)
        model.cleargrads()
        loss.backward()
        opt.update()
        out.append(float(loss.data))
        if i % 20 == 19:
            with fw.test_mode():
                out.append(float(F.softmax_cross_entropy(model(x), t).data))
    # the book's demonstration on ones
    np.random.seed(0)
    y = F.dropout(np.ones(5))
    with fw.test_mode():
        z = F.dropout(np.ones(5))
    return out + list(y.data) + list(z.data)


@pytest.mark.parametrize("float64", DTYPES)
def test_step54_dropout_and_test_mode(float64):
    _run(spiral_dropout, float64=float64)


# =============================================================================
# steps 55-58: a small CNN (conv, batch norm, pooling, linear)
# =============================================================================
def small_cnn(fw, iters=15, float64=True):
    F, L = fw.F, fw.L

    class CNN(fw.Model):
        def __init__(self):
            super().__init__()
            self.c1 = L.Conv2d(4, 3, pad=1)
            self.bn = L.BatchNorm()
            self.c2 = L.Conv2d(6, 3, stride=1, pad=0)
            self.fc = L.Linear(2)

        def forward(self, x):
            h = F.relu(self.bn(self.c1(x)))
            h = F.pooling(h, 2, 2)
            h = F.relu(self.c2(h))
            h = F.reshape(h, (h.shape[0], -1))
            return self.fc(h)

    rng = np.random.RandomState(5)
    x = rng.randn(16, 2, 8, 8)
    t = (x[:, 0, :4].mean(axis=(1, 2)) > x[:, 1, 4:].mean(axis=(1, 2))).astype(int)
    np.random.seed(2)
    model = CNN()
    if float64:
        _float64(model)
    opt = fw.optimizers.Adam(0.01).setup(model)
    out = []
    for i in range(iters):
        y = model(x)
        loss = F.softmax_cross_entropy(y, t)
        model.cleargrads()
        loss.backward()
        opt.update()
        out.append(float(loss.data))
    with fw.test_mode():
        y = model(x)
    out.append(float(F.softmax_cross_entropy(y, t).data))
    out.append(float(F.sum(F.conv2d_simple(x[:2], model.c1.W.data, model.c1.b.data,
                                           1, 1)).data))
    out.append(float(F.sum(F.pooling_simple(x[:2], 2, 2)).data))
    return out


@pytest.mark.parametrize("float64", DTYPES)
def test_step55_58_small_cnn(float64):
    # Bit for bit here: the batch norm's transposes copy the convolution
    # outputs, so both frameworks hand BLAS the same layouts.  (Where a
    # convolution's NHWC-strided output grad reaches the next tensordot
    # directly, the engine's C-ordered grads can make BLAS round the last
    # bit differently; test_dezero_layers avoids that case on purpose.)
    _run(small_cnn, float64=float64)


# =============================================================================
# steps 59-60: RNN and LSTM on SinCurve
# =============================================================================
def sincurve_rnn(fw, max_epoch=1, hidden_size=10, bptt_length=30, float64=True):
    # step 59: truncated BPTT with unchain_backward
    F, L = fw.F, fw.L

    class SimpleRNN(fw.Model):
        def __init__(self, hidden_size, out_size):
            super().__init__()
            self.rnn = L.RNN(hidden_size)
            self.fc = L.Linear(out_size)

        def reset_state(self):
            self.rnn.reset_state()

        def forward(self, x):
            h = self.rnn(x)
            y = self.fc(h)
            return y

    np.random.seed(0)
    train_set = fw.datasets.SinCurve(train=True)
    seqlen = len(train_set)
    model = SimpleRNN(hidden_size, 1)
    if float64:
        _float64(model)
    optimizer = fw.optimizers.Adam().setup(model)
    out = []
    for epoch in range(max_epoch):
        model.reset_state()
        loss, count = 0, 0
        for x, t in train_set:
            x = x.reshape(1, 1)
            y = model(x)
            loss += F.mean_squared_error(y, t)
            count += 1
            if count % bptt_length == 0 or count == seqlen:
                model.cleargrads()
                loss.backward()
                loss.unchain_backward()
                optimizer.update()
                out.append(float(loss.data))
        out.append(float(loss.data) / count)
    return out


def sincurve_lstm(fw, max_epoch=2, hidden_size=20, bptt_length=30, float64=True):
    # step 60: LSTM with SeqDataLoader
    F, L = fw.F, fw.L

    class BetterRNN(fw.Model):
        def __init__(self, hidden_size, out_size):
            super().__init__()
            self.rnn = L.LSTM(hidden_size)
            self.fc = L.Linear(out_size)

        def reset_state(self):
            self.rnn.reset_state()

        def forward(self, x):
            return self.fc(self.rnn(x))

    np.random.seed(0)
    train_set = fw.datasets.SinCurve(train=True)
    dataloader = fw.SeqDataLoader(train_set, batch_size=30)
    seqlen = len(train_set)
    model = BetterRNN(hidden_size, 1)
    if float64:
        # LSTM creates its hidden-to-hidden weights at construction; drop
        # them so that both create them lazily, as float64 from the same
        # draws, like the other weights.
        for name in ("h2f", "h2i", "h2o", "h2u"):
            getattr(model.rnn, name).W.data = None
        _float64(model)
    optimizer = fw.optimizers.Adam().setup(model)
    out = []
    for epoch in range(max_epoch):
        model.reset_state()
        loss, count = 0, 0
        for x, t in dataloader:
            y = model(x)
            loss += F.mean_squared_error(y, t)
            count += 1
            if count % bptt_length == 0 or count == seqlen:
                model.cleargrads()
                loss.backward()
                loss.unchain_backward()
                optimizer.update()
                out.append(float(loss.data))
        out.append(float(loss.data) / count)
    return out


@pytest.mark.parametrize("float64", DTYPES)
def test_step59_rnn_sincurve(float64):
    _run(sincurve_rnn, float64=float64)


@pytest.mark.parametrize("float64", DTYPES)
def test_step60_lstm_sincurve(float64):
    _run(sincurve_lstm, float64=float64)


# =============================================================================
# memory: past steps' graphs are freed
# =============================================================================
def test_training_memory_does_not_grow():
    fg = _fastgrad_fw()
    F = fg.F
    with fg.int_alias():
        x, t = fg.datasets.get_spiral(train=True)
    np.random.seed(0)
    model = fg.models.MLP((30, 3))
    opt = fg.optimizers.MomentumSGD(0.5).setup(model)

    def step():
        y = model(x)
        loss = F.softmax_cross_entropy(y, t)
        model.cleargrads()
        loss.backward()
        opt.update()
        return loss

    for _ in range(20):        # warm-up: weights, optimizer state, caches
        step()
    gc.collect()
    tracemalloc.start()
    try:
        gc.collect()
        base = tracemalloc.get_traced_memory()[0]
        refs = []
        for i in range(200):
            loss = step()
            if i % 50 == 0:
                refs.append(weakref.ref(loss))
        del loss
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert all(r() is None for r in refs), "a past step's graph is still alive"
    # One step's graph holds about 300 x 30 activations (float64, as the
    # layers' weights are) and their grads (~140 KiB); growing by less than
    # that over 200 steps means no step's graph is kept.
    assert grown < 32 * 1024, f"memory grew by {grown} bytes over 200 steps"
