"""Layers, models and the NN functions (dropout, batch_norm, embed_id).

Oracles: DeZero 0.0.13 on the same inputs and np.random seeds (bit for bit
in float64), and central finite differences in float64 and float32.
"""
import os
import pickle

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from conftest import check_grads_keep_dtype, import_dezero, numerical_grad
import fastgrad.dezero
from fastgrad.dezero.core import Parameter, Variable, using_config
from fastgrad.dezero.core import test_mode as eval_mode
import fastgrad.dezero.functions as F
import fastgrad.dezero.layers as L
import fastgrad.dezero.models as M
import fastgrad.functions.networks as NF


def _dz():
    dz = import_dezero("dezero")
    return dz, import_dezero("dezero.functions"), import_dezero("dezero.layers"), \
        import_dezero("dezero.models")


def _keys(layer):
    d = {}
    layer._flatten_params(d)
    return d


def _copy_params(src, dst):
    # Give ``dst`` (fastgrad) the arrays of ``src`` (DeZero), key by key.
    s, d = _keys(src), _keys(dst)
    assert list(s) == list(d)
    for k in s:
        d[k].data = s[k].data.copy()


def _check_grads(fn, arrays, dtype, rtol, atol, seed=0):
    """Gradients of sum(fn(*xs) * R) against central finite differences,
    float32 kept float32 (conftest.check_grads_keep_dtype)."""
    check_grads_keep_dtype(fastgrad.dezero, fn, arrays, dtype, rtol, atol, seed)


TOL = {np.float64: (1e-6, 1e-7), np.float32: (2e-3, 2e-3)}


# =============================================================================
# dropout
# =============================================================================
@pytest.mark.parametrize("ratio", [0.5, 0.2, 0.0])
def test_dropout_same_mask_and_values_as_dezero(ratio):
    dz, dzF, _, _ = _dz()
    x = np.random.default_rng(0).standard_normal((4, 5))
    np.random.seed(3)
    xd = dz.Variable(x)
    yd = dzF.dropout(xd, ratio)
    R = np.random.default_rng(1).standard_normal(x.shape)
    dzF.sum(yd * R).backward()
    state_d = np.random.rand()
    np.random.seed(3)
    xf = Variable(x)
    yf = NF.dropout(xf, ratio)
    F.sum(yf * R).backward()
    state_f = np.random.rand()
    assert_array_equal(yf.data, yd.data)
    assert_array_equal(xf.grad.data, xd.grad.data)
    assert state_f == state_d  # the same number of draws


def test_dropout_float32_and_test_mode():
    x = np.ones((3, 4), np.float32)
    np.random.seed(0)
    y = NF.dropout(x, 0.25)
    assert y.dtype == np.float32
    kept = y.data != 0
    assert_array_equal(y.data[kept], np.float32(1) / np.float32(0.75))
    state = np.random.get_state()[1].copy()
    with eval_mode():
        z = NF.dropout(x, 0.25)
    assert z.data is x                       # identity, as DeZero returns it
    assert_array_equal(np.random.get_state()[1], state)  # no draw in test mode
    y2 = NF.dropout(x)                        # train mode again
    assert (y2.data == 0).any()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_dropout_grad_numerical(dtype):
    x = np.random.default_rng(2).standard_normal((3, 4))

    def fn(v):
        np.random.seed(7)                     # the same mask every call
        return NF.dropout(v, 0.4)

    _check_grads(fn, [x], dtype, *TOL[dtype])


def test_dropout_bad_ratio():
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        NF.dropout(np.ones(3), 1.0)
    with pytest.raises(TypeError, match="real number"):
        NF.dropout(np.ones(3), "0.5")
    with pytest.raises(TypeError, match="floating-point"):
        NF.dropout(np.ones(3, dtype=np.int64))


# =============================================================================
# batch_norm
# =============================================================================
@pytest.mark.parametrize("shape", [(8, 3), (4, 3, 2, 5), (1, 2)])
def test_batch_norm_train_equals_dezero(shape):
    dz, dzF, _, _ = _dz()
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape) * 2 + 1
    C = shape[1]
    gamma, beta = rng.standard_normal(C), rng.standard_normal(C)
    R = rng.standard_normal(shape)
    mean0, var0 = rng.standard_normal(C), rng.random(C) + 0.5

    md, vd = mean0.copy(), var0.copy()
    xd, gd, bd = dz.Variable(x), dz.Variable(gamma), dz.Variable(beta)
    yd = dzF.batch_nrom(xd, gd, bd, md, vd)
    dzF.sum(yd * R).backward()

    mf, vf = mean0.copy(), var0.copy()
    xf, gf, bf = Variable(x), Variable(gamma), Variable(beta)
    yf = NF.batch_norm(xf, gf, bf, mf, vf)
    F.sum(yf * R).backward()

    assert_array_equal(yf.data, yd.data)
    assert_array_equal(mf, md)                # running stats updated in place
    assert_array_equal(vf, vd)
    assert_array_equal(xf.grad.data, xd.grad.data)
    assert_array_equal(gf.grad.data, gd.grad.data)
    assert_array_equal(bf.grad.data, bd.grad.data)


@pytest.mark.parametrize("shape", [(6, 3), (2, 3, 4, 2)])
def test_batch_norm_test_mode_forward_equals_dezero(shape):
    dz, dzF, _, _ = _dz()
    rng = np.random.default_rng(4)
    x = rng.standard_normal(shape)
    C = shape[1]
    gamma, beta = rng.standard_normal(C), rng.standard_normal(C)
    mean, var = rng.standard_normal(C), rng.random(C) + 0.5
    with dz.test_mode():
        yd = dzF.batch_nrom(x, gamma, beta, mean.copy(), var.copy())
    m, v = mean.copy(), var.copy()
    with eval_mode():
        yf = NF.batch_norm(x, gamma, beta, m, v)
    assert_array_equal(yf.data, yd.data)
    assert_array_equal(m, mean)               # unchanged in test mode
    assert_array_equal(v, var)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(7, 3), (3, 2, 3, 2)])
@pytest.mark.parametrize("train", [True, False])
def test_batch_norm_grad_numerical(dtype, shape, train):
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape)
    C = shape[1]
    gamma, beta = rng.standard_normal(C), rng.standard_normal(C)
    mean, var = rng.standard_normal(C), rng.random(C) + 0.5

    def fn(x, g, b):
        m, v = mean.astype(x.dtype), var.astype(x.dtype)
        if train:
            return NF.batch_norm(x, g, b, m, v)
        with eval_mode():
            return NF.batch_norm(x, g, b, m, v)

    rtol, atol = TOL[dtype]
    _check_grads(fn, [x, gamma, beta], dtype, rtol * 10, atol * 10)


def test_batch_norm_bad_input():
    x = np.ones((4, 3))
    with pytest.raises(ValueError, match="2-d"):
        NF.batch_norm(np.ones((4, 3, 2)), np.ones(3), np.zeros(3), np.zeros(3), np.ones(3))
    with pytest.raises(ValueError, match="gamma must have shape"):
        NF.batch_norm(x, np.ones(2), np.zeros(3), np.zeros(3), np.ones(3))
    with pytest.raises(ValueError, match="var must have shape"):
        NF.batch_norm(x, np.ones(3), np.zeros(3), np.zeros(3), np.ones(4))
    with pytest.raises(TypeError, match="mean must be an ndarray"):
        NF.batch_norm(x, np.ones(3), np.zeros(3), [0, 0, 0], np.ones(3))


# =============================================================================
# embed_id
# =============================================================================
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_embed_id_values_and_grad(dtype):
    W = np.random.default_rng(6).standard_normal((5, 3))
    ids = np.array([[1, 4], [1, 0]])
    y = NF.embed_id(ids, W.astype(dtype))
    assert_array_equal(y.data, W.astype(dtype)[ids])
    _check_grads(lambda w: NF.embed_id(ids, w), [W], dtype, *TOL[dtype])


def test_embed_id_equals_dezero_and_second_order():
    dz, dzF, _, _ = _dz()
    W = np.random.default_rng(7).standard_normal((6, 2))
    ids = np.array([3, 3, 0, 5])
    R = np.random.default_rng(8).standard_normal((4, 2))
    Wd = dz.Variable(W)
    dzF.sum(dzF.embed_id(ids, Wd) * R).backward()
    Wf = Variable(W)
    F.sum(NF.embed_id(ids, Wf) * R).backward()
    assert_array_equal(Wf.grad.data, Wd.grad.data)
    # d/dW of sum(grad_W ** 2) where grad_W = scatter(2 * W[ids] * R)
    Wf = Variable(W)
    F.sum(NF.embed_id(ids, Wf) ** 2 * R).backward(create_graph=True)
    g = Wf.grad
    Wf.cleargrad()
    F.sum(g * g).backward()

    def first(a):
        v = Variable(a)
        F.sum(NF.embed_id(ids, v) ** 2 * R).backward()
        return v.grad.data ** 2
    assert_allclose(Wf.grad.data, numerical_grad(first, W), rtol=1e-6, atol=1e-7)


def test_embed_id_bad_ids():
    W = np.zeros((3, 2))
    with pytest.raises(ValueError, match="id 3 is out of range"):
        NF.embed_id(np.array([0, 3]), W)
    with pytest.raises(TypeError, match="integers"):
        NF.embed_id(np.array([0.5]), W)


# =============================================================================
# Layer
# =============================================================================
class _Two(L.Layer):
    def __init__(self):
        super().__init__()
        self.l1 = L.Linear(3, in_size=2)
        self.p = Parameter(np.ones(2), name="p")
        self.sub = L.Layer()
        self.sub.q = Parameter(np.zeros(3), name="q")


def test_params_and_keys_in_dezero_order():
    dz, _, dzL, dzM = _dz()

    class DzTwo(dz.Layer):
        def __init__(self):
            super().__init__()
            self.l1 = dzL.Linear(3, in_size=2)
            self.p = dz.Parameter(np.ones(2), name="p")
            self.sub = dz.Layer()
            self.sub.q = dz.Parameter(np.zeros(3), name="q")

    ours, theirs = _Two(), DzTwo()
    assert list(_keys(ours)) == list(_keys(theirs))
    assert sorted(_keys(ours)) == ["l1/W", "l1/b", "p", "sub/q"]
    key_of = {id(p): k for k, p in _keys(ours).items()}
    key_of_d = {id(p): k for k, p in _keys(theirs).items()}
    assert [key_of[id(p)] for p in ours.params()] == \
        [key_of_d[id(p)] for p in theirs.params()]

    m, md = M.MLP((4, 5, 2)), dzM.MLP((4, 5, 2))
    assert list(_keys(m)) == list(_keys(md))


def test_cleargrads_and_reassignment():
    layer = _Two()
    y = F.sum(layer.l1(np.ones((1, 2)))) + F.sum(layer.p) + F.sum(layer.sub.q)
    y.backward()
    assert all(p.grad is not None for p in layer.params())
    layer.cleargrads()
    assert all(p.grad is None for p in layer.params())
    layer.p = None                      # no longer a parameter: skipped
    assert sorted(_keys(layer)) == ["l1/W", "l1/b", "sub/q"]


def test_layer_without_super_init_is_clear_error():
    class Bad(L.Layer):
        def __init__(self):
            self.W = Parameter(np.ones(1))

    with pytest.raises(TypeError, match=r"super\(\)\.__init__\(\)"):
        Bad()


def test_to_cpu_and_to_gpu():
    layer = _Two()
    layer.to_cpu()
    with pytest.raises(RuntimeError, match="CuPy"):
        layer.to_gpu()


def test_layer_call_keeps_weak_references():
    layer = L.Linear(2)
    x = Variable(np.ones((1, 3)))
    y = layer(x)
    assert layer.inputs[0]() is x and layer.outputs[0]() is y


# =============================================================================
# Linear / Conv2d / Deconv2d: the same draws, values and gradients as DeZero
# =============================================================================
def test_linear_lazy_init_same_draws_as_dezero():
    dz, _, dzL, _ = _dz()
    x = np.random.default_rng(9).standard_normal((4, 6))
    np.random.seed(0)
    ld = dzL.Linear(5)
    ld(x)
    after_d = np.random.rand()
    np.random.seed(0)
    lf = L.Linear(5)
    assert lf.W.data is None
    lf(x)
    after_f = np.random.rand()
    assert after_f == after_d
    # DeZero's expression gives float64 weights under NumPy 2 (float32
    # biases): the same here, bit for bit; Config.keep_dtype rounds them to
    # the float32 asked for.
    assert lf.W.dtype == ld.W.dtype == np.float64 and lf.b.dtype == np.float32
    assert_array_equal(lf.W.data, ld.W.data)
    np.random.seed(0)
    with using_config("keep_dtype", True):
        kept = L.Linear(5, in_size=6)
    assert kept.W.dtype == np.float32
    assert_array_equal(kept.W.data, ld.W.data.astype(np.float32))

    np.random.seed(0)
    ld = dzL.Linear(5, dtype=np.float64, in_size=6)
    np.random.seed(0)
    lf = L.Linear(5, dtype=np.float64, in_size=6)
    assert lf.W.dtype == np.float64
    assert_array_equal(lf.W.data, ld.W.data)


@pytest.mark.parametrize("nobias", [False, True])
def test_linear_forward_backward_equals_dezero(nobias):
    dz, dzF, dzL, _ = _dz()
    x = np.random.default_rng(10).standard_normal((4, 6))
    np.random.seed(1)
    ld = dzL.Linear(3, nobias=nobias, dtype=np.float64)
    xd = dz.Variable(x)
    yd = ld(xd)
    dzF.sum(yd * yd).backward()
    np.random.seed(1)
    lf = L.Linear(3, nobias=nobias, dtype=np.float64)
    xf = Variable(x)
    yf = lf(xf)
    F.sum(yf * yf).backward()
    assert_array_equal(yf.data, yd.data)
    assert_array_equal(xf.grad.data, xd.grad.data)
    assert_array_equal(lf.W.grad.data, ld.W.grad.data)
    assert (lf.b is None) == nobias
    if not nobias:
        assert_array_equal(lf.b.grad.data, ld.b.grad.data)


def test_linear_wrong_input_size_and_bad_arguments():
    layer = L.Linear(3)
    layer(np.ones((2, 4)))
    with pytest.raises(ValueError, match="5 features"):
        layer(np.ones((2, 5)))
    with pytest.raises(ValueError, match="2-d"):
        L.Linear(3)(np.ones(4))
    with pytest.raises(ValueError, match="out_size"):
        L.Linear(0)
    with pytest.raises(TypeError, match="floating-point"):
        L.Linear(3, dtype=np.int32)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_linear_grad_numerical(dtype):
    rng = np.random.default_rng(11)
    x, W, b = rng.standard_normal((3, 4)), rng.standard_normal((4, 2)), rng.standard_normal(2)
    layer = L.Linear(2, dtype=dtype, in_size=4)

    def fn(x, W, b):
        layer.W, layer.b = W, b   # plain Variables: the layer just uses them
        return layer(x)

    _check_grads(fn, [x, W, b], dtype, *TOL[dtype])


@pytest.mark.parametrize("cls", ["Conv2d", "Deconv2d"])
def test_conv_layers_same_draws_values_grads_as_dezero(cls):
    dz, dzF, dzL, _ = _dz()
    x = np.random.default_rng(12).standard_normal((2, 3, 5, 6))
    np.random.seed(2)
    ld = getattr(dzL, cls)(4, (3, 2), stride=2, pad=1, dtype=np.float64)
    xd = dz.Variable(x)
    yd = ld(xd)
    # The loss weights the output by a C-ordered array, so the output grad
    # has the same memory layout in both frameworks.  (With sum(y * y) the
    # engine's backward returns y's grad C-ordered while NumPy keeps y's
    # NHWC layout, and the BLAS contraction of the next step may round
    # differently in the last bit.)
    R = np.random.default_rng(21).standard_normal(yd.shape)
    dzF.sum(yd * R).backward()
    np.random.seed(2)
    lf = getattr(L, cls)(4, (3, 2), stride=2, pad=1, dtype=np.float64)
    xf = Variable(x)
    yf = lf(xf)
    F.sum(yf * R).backward()
    assert_array_equal(lf.W.data, ld.W.data)
    assert_array_equal(yf.data, yd.data)
    assert_array_equal(xf.grad.data, xd.grad.data)
    assert_array_equal(lf.W.grad.data, ld.W.grad.data)
    assert_array_equal(lf.b.grad.data, ld.b.grad.data)

    # default float32: DeZero's float64 weights, bit for bit; rounded to
    # float32 with Config.keep_dtype
    np.random.seed(2)
    ld = getattr(dzL, cls)(4, 3, in_channels=3)
    np.random.seed(2)
    lf = getattr(L, cls)(4, 3, in_channels=3)
    assert lf.W.dtype == ld.W.dtype == np.float64
    assert_array_equal(lf.W.data, ld.W.data)
    np.random.seed(2)
    with using_config("keep_dtype", True):
        lf = getattr(L, cls)(4, 3, in_channels=3)
    assert lf.W.dtype == np.float32
    assert_array_equal(lf.W.data, ld.W.data.astype(np.float32))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_conv_layer_grad_numerical(dtype):
    rng = np.random.default_rng(13)
    x = rng.standard_normal((1, 2, 4, 4))
    layer = L.Conv2d(3, 3, pad=1, dtype=dtype)
    layer(x.astype(dtype))
    W, b = layer.W.data.astype(np.float64), rng.standard_normal(3)

    def fn(x, W, b):
        layer.W, layer.b = W, b
        return layer(x)

    _check_grads(fn, [x, W, b], dtype, *TOL[dtype])


def test_conv_layer_channel_mismatch():
    layer = L.Conv2d(2, 3)
    layer(np.ones((1, 3, 5, 5)))
    with pytest.raises(ValueError, match="4 channels"):
        layer(np.ones((1, 4, 5, 5)))
    with pytest.raises(ValueError, match="4-d"):
        layer(np.ones((3, 5, 5)))


# =============================================================================
# RNN / LSTM / EmbedID / BatchNorm layers
# =============================================================================
@pytest.mark.parametrize("cls", ["RNN", "LSTM"])
def test_recurrent_layers_equal_dezero(cls):
    dz, dzF, dzL, _ = _dz()
    xs = np.random.default_rng(14).standard_normal((4, 3, 2))
    np.random.seed(5)
    ld = getattr(dzL, cls)(6)
    np.random.seed(5)
    lf = getattr(L, cls)(6)
    # the weights each creates eagerly: the same draws and dtypes
    for k, p in _keys(lf).items():
        if p.data is not None:
            assert_array_equal(p.data, _keys(ld)[k].data.astype(p.data.dtype))

    def run(layer, V, Fm, first):
        v = [V(x) for x in xs]
        loss = 0
        for x in v:
            h = layer(x)
            loss = loss + Fm.sum(h * h)
        loss.backward()
        return loss, v

    # one step creates the lazy weights; then share DeZero's arrays exactly
    ld(xs[0]), lf(xs[0])
    ld(xs[0]), lf(xs[0])
    _copy_params(ld, lf)
    # all parameters float64 in both: the engine keeps a grad in its
    # parameter's dtype (a float32 bias accumulates float32 grads over the
    # steps) where DeZero accumulates float64 grads
    for p in list(ld.params()) + list(lf.params()):
        p.data = p.data.astype(np.float64)
    ld.reset_state(), lf.reset_state()
    loss_d, vd = run(ld, dz.Variable, dzF, True)
    loss_f, vf = run(lf, Variable, F, True)
    assert_array_equal(loss_f.data, loss_d.data)
    for a, b in zip(vf, vd):
        assert_array_equal(a.grad.data, b.grad.data)
    kd = _keys(ld)
    for k, p in _keys(lf).items():
        assert_array_equal(p.grad.data, kd[k].grad.data)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cls", ["RNN", "LSTM"])
def test_recurrent_layers_grad_numerical(dtype, cls):
    xs = np.random.default_rng(15).standard_normal((3, 2, 2))
    np.random.seed(6)
    layer = getattr(L, cls)(3)
    layer(xs[0].astype(dtype))
    layer(xs[0].astype(dtype))
    for p in layer.params():
        p.data = p.data.astype(dtype)

    def fn(x):
        layer.reset_state()
        out = None
        for t in range(3):
            h = layer(x[t])
            out = h if out is None else out + h
        return out

    _check_grads(fn, [xs], dtype, *TOL[dtype])


def test_embed_id_layer_equals_dezero():
    _, _, dzL, _ = _dz()
    np.random.seed(8)
    ld = dzL.EmbedID(7, 3)
    np.random.seed(8)
    lf = L.EmbedID(7, 3)
    assert_array_equal(lf.W.data, ld.W.data)
    ids = np.array([[0, 6], [2, 2]])
    assert_array_equal(lf(ids).data, ld(ids).data)


@pytest.mark.parametrize("shape", [(6, 3), (2, 3, 2, 2)])
def test_batchnorm_layer_train_then_test(shape):
    dz, dzF, dzL, _ = _dz()
    rng = np.random.default_rng(16)
    batches = [rng.standard_normal(shape) for _ in range(3)]
    bd, bf = dzL.BatchNorm(), L.BatchNorm()
    # DeZero's BatchNorm layer calls F.batch_nrom and overrides __call__;
    # its running statistics are compared after each training step.
    for x in batches:
        yd = bd(x)
        yf = bf(x)
        assert_array_equal(yf.data, yd.data)
        assert_array_equal(bf.avg_mean.data, bd.avg_mean.data)
        assert_array_equal(bf.avg_var.data, bd.avg_var.data)
    with eval_mode():
        y = bf(batches[0])
    with dz.test_mode():
        yd = bd(batches[0])
    assert_array_equal(y.data, yd.data)
    assert sorted(_keys(bf)) == ["avg_mean", "avg_var", "beta", "gamma"]
    F.sum(bf(batches[1]) * batches[2]).backward()
    assert bf.avg_mean.grad is None and bf.gamma.grad is not None


# =============================================================================
# save_weights / load_weights
# =============================================================================
def _trained_mlp():
    np.random.seed(0)
    model = M.MLP((5, 2))
    model(np.ones((1, 3)))
    return model


def test_save_load_round_trip(tmp_path):
    model = _trained_mlp()
    path = tmp_path / "w.npz"
    model.save_weights(str(path))
    with np.load(path) as npz:
        assert sorted(npz.files) == ["l0/W", "l0/b", "l1/W", "l1/b"]
    other = M.MLP((5, 2))
    other.load_weights(str(path))
    for k, p in _keys(model).items():
        assert_array_equal(_keys(other)[k].data, p.data)
        assert _keys(other)[k].data.dtype == p.data.dtype
    # like np.savez, a name without .npz gets it
    model.save_weights(str(tmp_path / "plain"))
    assert (tmp_path / "plain.npz").exists()
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_weights_interchange_with_dezero(tmp_path):
    dz, _, dzL, dzM = _dz()
    np.random.seed(1)
    md = dzM.MLP((4, 2))
    md(np.ones((1, 3)))
    md.save_weights(str(tmp_path / "dz.npz"))
    mf = M.MLP((4, 2))
    mf.load_weights(str(tmp_path / "dz.npz"))
    for k, p in _keys(md).items():
        assert_array_equal(_keys(mf)[k].data, p.data)
    mf2 = _trained_mlp()
    mf2.save_weights(str(tmp_path / "fg.npz"))
    md2 = dzM.MLP((5, 2))
    md2.load_weights(str(tmp_path / "fg.npz"))
    for k, p in _keys(mf2).items():
        assert_array_equal(_keys(md2)[k].data, p.data)


def test_save_is_atomic(tmp_path, monkeypatch):
    model = _trained_mlp()
    path = tmp_path / "w.npz"
    model.save_weights(str(path))
    before = path.read_bytes()
    real = np.savez_compressed

    def failing(file, **arrays):
        file.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez_compressed", failing)
    model.l0.W.data = model.l0.W.data + 1
    with pytest.raises(KeyboardInterrupt):
        model.save_weights(str(path))
    monkeypatch.setattr(np, "savez_compressed", real)
    assert path.read_bytes() == before              # the old file is intact
    assert os.listdir(tmp_path) == ["w.npz"]        # no temporary left behind


def test_save_uninitialised_parameter_is_clear_error(tmp_path):
    with pytest.raises(ValueError, match="'l0/W' has no data yet"):
        M.MLP((3,)).save_weights(str(tmp_path / "w.npz"))
    assert not os.listdir(tmp_path)


def test_load_errors_name_the_parameter(tmp_path):
    model = _trained_mlp()
    W0 = model.l0.W.data.copy()
    arrays = {k: p.data for k, p in _keys(model).items()}

    missing = dict(arrays)
    del missing["l1/b"]
    np.savez(tmp_path / "missing.npz", **missing)
    with pytest.raises(ValueError, match="no array for parameter 'l1/b'"):
        model.load_weights(str(tmp_path / "missing.npz"))

    shaped = dict(arrays)
    shaped["l0/W"] = np.zeros((4, 5), np.float32)
    shaped["l1/W"] = np.zeros((1, 1), np.float32)
    np.savez(tmp_path / "shape.npz", **shaped)
    with pytest.raises(ValueError, match=r"'l\d/W' has shape"):
        model.load_weights(str(tmp_path / "shape.npz"))
    assert_array_equal(model.l0.W.data, W0)      # nothing was changed

    pickled = dict(arrays)
    pickled["l0/b"] = np.array([{"a": 1}], dtype=object)
    np.savez(tmp_path / "obj.npz", **pickled)
    with pytest.raises(ValueError, match="'l0/b'.*pickling"):
        model.load_weights(str(tmp_path / "obj.npz"))

    with open(tmp_path / "pickle.npz", "wb") as f:
        pickle.dump(arrays, f)
    with pytest.raises(ValueError, match="pickl"):
        model.load_weights(str(tmp_path / "pickle.npz"))

    np.save(tmp_path / "single.npy", W0)
    with pytest.raises(ValueError, match="not an .npz archive"):
        model.load_weights(str(tmp_path / "single.npy"))
    assert_array_equal(model.l0.W.data, W0)


# =============================================================================
# models
# =============================================================================
def test_sequential_and_mlp_equal_dezero():
    dz, dzF, dzL, dzM = _dz()
    x = np.random.default_rng(17).standard_normal((5, 4))
    np.random.seed(3)
    md = dzM.MLP((6, 3), activation=dzF.relu)
    sd = dzM.Sequential(dzL.Linear(3, dtype=np.float64), dzL.Linear(2, dtype=np.float64))
    yd = md(x)
    zd = sd(x)
    np.random.seed(3)
    mf = M.MLP((6, 3), activation=F.relu)
    sf = M.Sequential(L.Linear(3, dtype=np.float64), L.Linear(2, dtype=np.float64))
    yf = mf(x)
    zf = sf(x)
    assert_array_equal(zf.data, zd.data)
    # MLP's Linear layers: DeZero's float64 weights and float32 biases
    assert_array_equal(yf.data, yd.data)
    _copy_params(md, mf)
    assert_array_equal(mf(x).data, md(x).data)
    assert sorted(_keys(sf)) == ["l0/W", "l0/b", "l1/W", "l1/b"]
    with pytest.raises(ValueError):
        M.MLP(())


def test_model_plot_uses_utils(monkeypatch, tmp_path):
    from fastgrad.dezero import utils
    seen = {}

    def fake(y, verbose=True, to_file="graph.png"):
        seen["args"] = (y.shape, verbose, to_file)
        return "drawn"

    monkeypatch.setattr(utils, "plot_dot_graph", fake)
    model = M.MLP((3, 1))
    assert model.plot(np.ones((2, 4)), to_file=str(tmp_path / "m.png")) == "drawn"
    assert seen["args"] == ((2, 1), True, str(tmp_path / "m.png"))


def test_vgg16_random_weights_forward_backward():
    np.random.seed(0)
    model = M.VGG16()
    x = np.random.default_rng(18).standard_normal((1, 3, 32, 32)).astype(np.float32)
    with eval_mode():
        y = model(x)
    # float64, as DeZero's: its layers' weights are float64 under NumPy 2
    assert y.shape == (1, 1000) and y.dtype == np.float64
    assert np.isfinite(y.data).all()
    y = model(x)                         # training mode: dropout on
    F.sum(y).backward()
    assert model.conv1_1.W.grad.shape == (64, 3, 3, 3)
    assert model.fc6.W.shape == (512, 4096)
    assert len(_keys(model)) == 32


def test_resnet50_random_weights_forward_backward():
    np.random.seed(0)
    model = M.ResNet50()
    x = np.random.default_rng(19).standard_normal((2, 3, 32, 32)).astype(np.float32)
    y = model(x)
    assert y.shape == (2, 1000)
    F.sum(y).backward()
    assert model.conv1.W.grad.shape == (64, 3, 7, 7)
    assert model.res5.a.conv4.W.shape == (2048, 1024, 1, 1)
    with eval_mode():
        z = model(x)
    assert np.isfinite(z.data).all()
    keys = _keys(model)
    assert "res4/b5/bn3/avg_var" in keys and "fc6/W" in keys


@pytest.mark.parametrize("cls,blocks", [(M.ResNet101, 23), (M.ResNet152, 36)])
def test_deeper_resnets_build_lazily(cls, blocks):
    model = cls()
    assert len(model.res4._forward) == blocks
    assert model.conv1.W.data is None and model.res5.b2.conv3.W.data is None
    with pytest.raises(ValueError, match="50, 101"):
        M.ResNet(34)


def test_squeezenet_is_a_clear_placeholder():
    with pytest.raises(NotImplementedError, match="SqueezeNet"):
        M.SqueezeNet()


VGG_KEYS = [f"conv{a}_{b}/{p}" for a, n in [(1, 2), (2, 2), (3, 3), (4, 3), (5, 3)]
            for b in range(1, n + 1) for p in "Wb"] + \
    [f"fc{i}/{p}" for i in (6, 7, 8) for p in "Wb"]


def test_pretrained_missing_file_says_where(monkeypatch, tmp_path):
    from fastgrad.dezero import utils
    monkeypatch.setattr(utils, "cache_dir", str(tmp_path / ".dezero"))
    with pytest.raises(FileNotFoundError) as info:
        M.VGG16(pretrained=True)
    msg = str(info.value)
    assert "vgg16.npz" in msg and str(tmp_path / ".dezero" / "vgg16.npz") in msg
    with pytest.raises(FileNotFoundError, match="resnet50.npz"):
        M.ResNet50(pretrained=True)


def test_pretrained_loads_the_cached_file(monkeypatch, tmp_path):
    from fastgrad.dezero import utils
    cache = tmp_path / ".dezero"
    cache.mkdir()
    monkeypatch.setattr(utils, "cache_dir", str(cache))
    rng = np.random.default_rng(20)
    # a small stand-in for DeZero's vgg16.npz: the right keys, tiny arrays
    # (the weights W are created lazily, so any shape loads; biases exist)
    fresh = _keys(M.VGG16())
    arrays = {k: rng.standard_normal((2,) if k.endswith("W") else
                                     fresh[k].shape).astype(np.float32)
              for k in VGG_KEYS}
    np.savez(cache / "vgg16.npz", **arrays)
    model = M.VGG16(pretrained=True)
    got = _keys(model)
    assert sorted(got) == sorted(VGG_KEYS)
    for k in VGG_KEYS:
        assert_array_equal(got[k].data, arrays[k])
