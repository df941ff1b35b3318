"""fastgrad.dezero.optimizers against DeZero 0.0.13's optimizers, bit for bit."""
import numpy as np
import pytest

from conftest import import_dezero

from fastgrad.dezero import Parameter, Variable
from fastgrad.dezero import optimizers as fo

SHAPES = [(3, 4), (4,), (), (2, 1, 3)]


# ----------------------------------------------------------------------------
# parameters on both sides
# ----------------------------------------------------------------------------
class _StandInParameter:
    # A stage-2-style parameter: its grad is a plain ndarray.
    def __init__(self, data, name=None):
        self.data = data
        self.grad = None
        self.name = name


class Target:
    def __init__(self, params):
        self._params = params

    def params(self):
        yield from self._params


def make_pair(dtype, seed=0, shapes=SHAPES):
    """The same starting parameters for DeZero and for fastgrad."""
    dz = import_dezero()
    rng = np.random.default_rng(seed)
    datas = [rng.standard_normal(s).astype(dtype) for s in shapes]
    theirs = [dz.Parameter(d.copy()) for d in datas]
    ours = [Parameter(d.copy()) for d in datas]
    return theirs, ours


def set_grads(theirs, ours, rng, dtype, skip=()):
    dz = import_dezero()
    for i, (a, b) in enumerate(zip(theirs, ours)):
        if i in skip:
            a.grad = b.grad = None
            continue
        g = rng.standard_normal(a.data.shape).astype(dtype)
        a.grad = dz.Variable(g.copy())
        b.grad = Variable(g.copy())


def run_both(make_theirs, make_ours, dtype=np.float64, steps=6, hooks=(), skip=(),
             seed=0):
    theirs, ours = make_pair(dtype, seed)
    opt_t = make_theirs().setup(Target(theirs))
    opt_o = make_ours().setup(Target(ours))
    for make_hook_t, make_hook_o in hooks:
        opt_t.add_hook(make_hook_t())
        opt_o.add_hook(make_hook_o())
    rng = np.random.default_rng(seed + 100)
    for step in range(steps):
        set_grads(theirs, ours, rng, dtype, skip=skip)
        opt_t.update()
        opt_o.update()
        for a, b in zip(theirs, ours):
            assert b.data.dtype == a.data.dtype
            np.testing.assert_array_equal(b.data, a.data, err_msg=f"step {step}")
            if a.grad is not None:
                np.testing.assert_array_equal(b.grad.data, a.grad.data)
    return opt_t, opt_o, theirs, ours


OPTIMIZERS = [
    ("SGD", {}), ("SGD", {"lr": 0.3}),
    ("MomentumSGD", {}), ("MomentumSGD", {"lr": 0.05, "momentum": 0.5}),
    ("AdaGrad", {}), ("AdaGrad", {"lr": 0.1, "eps": 1e-3}),
    ("AdaDelta", {}), ("AdaDelta", {"rho": 0.9, "eps": 1e-4}),
    ("Adam", {}), ("Adam", {"alpha": 0.01, "beta1": 0.8, "beta2": 0.99, "eps": 1e-6}),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name,kwargs", OPTIMIZERS)
def test_updates_match_dezero_bit_for_bit(name, kwargs, dtype):
    dzo = import_dezero("dezero.optimizers")
    run_both(lambda: getattr(dzo, name)(**kwargs), lambda: getattr(fo, name)(**kwargs),
             dtype=dtype)


@pytest.mark.parametrize("name", ["MomentumSGD", "AdaGrad", "AdaDelta", "Adam"])
def test_params_without_grad_are_skipped_and_get_no_state(name):
    dzo = import_dezero("dezero.optimizers")
    opt_t, opt_o, theirs, ours = run_both(getattr(dzo, name), getattr(fo, name),
                                          skip=(1,))
    state = {"MomentumSGD": "vs", "AdaGrad": "hs", "AdaDelta": "msg", "Adam": "ms"}[name]
    assert id(ours[1]) not in getattr(opt_o, state)
    assert set(getattr(opt_o, state)) == {id(p) for i, p in enumerate(ours) if i != 1}
    assert len(getattr(opt_o, state)) == len(getattr(opt_t, state))


def test_adam_t_and_lr_follow_dezero():
    dzo = import_dezero("dezero.optimizers")
    opt_t, opt_o, _, _ = run_both(lambda: dzo.Adam(alpha=0.02), lambda: fo.Adam(alpha=0.02),
                                  steps=4)
    assert opt_o.t == opt_t.t == 4
    assert opt_o.lr == opt_t.lr
    with pytest.raises(AttributeError):
        opt_o.lr = 0.1   # a derived value, read-only as in DeZero


def test_state_is_updated_in_place():
    _, ours = make_pair(np.float64)
    opt = fo.MomentumSGD().setup(Target(ours))
    for p in ours:
        p.grad = Variable(np.ones_like(p.data))
    datas = [p.data for p in ours]
    opt.update()
    v = opt.vs[id(ours[0])]
    opt.update()
    assert opt.vs[id(ours[0])] is v
    assert all(p.data is d for p, d in zip(ours, datas))


@pytest.mark.parametrize("name", ["SGD", "MomentumSGD", "Adam"])
@pytest.mark.parametrize("rate", [1e-2, 0.5])
def test_weight_decay_hook_matches_dezero(name, rate):
    dzo = import_dezero("dezero.optimizers")
    run_both(getattr(dzo, name), getattr(fo, name),
             hooks=[(lambda: dzo.WeightDecay(rate), lambda: fo.WeightDecay(rate))])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("max_norm", [0.5, 3.0, 1e6])
def test_clip_grad_hook_matches_dezero(max_norm, dtype):
    dzo = import_dezero("dezero.optimizers")
    run_both(dzo.SGD, fo.SGD, dtype=dtype,
             hooks=[(lambda: dzo.ClipGrad(max_norm), lambda: fo.ClipGrad(max_norm))])


def test_hooks_run_in_the_order_added():
    dzo = import_dezero("dezero.optimizers")
    hooks = [(lambda: dzo.WeightDecay(0.3), lambda: fo.WeightDecay(0.3)),
             (lambda: dzo.ClipGrad(1.0), lambda: fo.ClipGrad(1.0))]
    run_both(dzo.MomentumSGD, fo.MomentumSGD, hooks=hooks)
    run_both(dzo.MomentumSGD, fo.MomentumSGD, hooks=hooks[::-1])


def test_hooks_get_the_params_with_a_grad():
    _, ours = make_pair(np.float64)
    seen = []
    opt = fo.SGD().setup(Target(ours))
    opt.add_hook(lambda params: seen.append(list(params)))
    for i, p in enumerate(ours):
        p.grad = None if i == 2 else Variable(np.zeros_like(p.data))
    opt.update()
    assert len(seen) == 1
    assert [id(p) for p in seen[0]] == [id(p) for i, p in enumerate(ours) if i != 2]


def test_freeze_param_keeps_frozen_params_and_updates_the_rest_like_dezero():
    # DeZero's FreezeParam clears grads after the update list is built and
    # then fails on them; here the frozen parameters are left as they are and
    # the others get exactly DeZero's update.
    dzo = import_dezero("dezero.optimizers")
    theirs, ours = make_pair(np.float64)
    frozen_layer = Target(ours[:2])
    opt_o = fo.MomentumSGD().setup(Target(ours))
    opt_o.add_hook(fo.FreezeParam(frozen_layer))
    opt_t = dzo.MomentumSGD().setup(Target(theirs[2:]))
    before = [p.data.copy() for p in ours[:2]]
    rng = np.random.default_rng(5)
    for _ in range(3):
        set_grads(theirs, ours, rng, np.float64)
        opt_t.update()
        opt_o.update()
    for p, b in zip(ours[:2], before):
        np.testing.assert_array_equal(p.data, b)
        assert p.grad is None
    for a, b in zip(theirs[2:], ours[2:]):
        np.testing.assert_array_equal(b.data, a.data)


def test_freeze_param_accepts_single_parameters():
    _, ours = make_pair(np.float64)
    opt = fo.SGD(lr=1.0).setup(Target(ours))
    opt.add_hook(fo.FreezeParam(ours[0]))
    for p in ours:
        p.grad = Variable(np.ones_like(p.data))
    before = ours[0].data.copy()
    other = ours[1].data.copy()
    opt.update()
    np.testing.assert_array_equal(ours[0].data, before)
    np.testing.assert_array_equal(ours[1].data, other - 1.0)


# ----------------------------------------------------------------------------
# bad use
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["SGD", "MomentumSGD", "AdaGrad", "AdaDelta", "Adam"])
def test_update_before_setup_names_setup(name):
    opt = getattr(fo, name)()
    with pytest.raises(RuntimeError, match="setup"):
        opt.update()
    if name == "Adam":
        assert opt.t == 0


def test_setup_returns_self_and_checks_the_target():
    opt = fo.SGD()
    target = Target([])
    assert opt.setup(target) is opt and opt.target is target
    opt.update()   # nothing to update is fine
    with pytest.raises(TypeError, match="params"):
        fo.SGD().setup(object())


@pytest.mark.parametrize("make", [lambda: fo.SGD(lr="0.1"), lambda: fo.SGD(lr=None),
                                  lambda: fo.MomentumSGD(momentum=True),
                                  lambda: fo.Adam(alpha=[0.1]), lambda: fo.WeightDecay("a"),
                                  lambda: fo.ClipGrad(None)])
def test_bad_hyperparameters_are_type_errors(make):
    with pytest.raises(TypeError, match="must be a real number"):
        make()


def test_numpy_scalars_are_accepted_as_hyperparameters():
    assert fo.SGD(lr=np.float32(0.5)).lr == np.float32(0.5)


def test_base_optimizer_and_bad_hooks():
    with pytest.raises(NotImplementedError):
        fo.Optimizer().update_one(None)
    with pytest.raises(TypeError, match="callable"):
        fo.SGD().add_hook(3)
    with pytest.raises(TypeError, match="FreezeParam"):
        fo.FreezeParam(3)


@pytest.mark.parametrize("name,kwargs", OPTIMIZERS[::2])
def test_updates_with_grads_from_backward_match_dezero(name, kwargs):
    # Grads computed by each engine, read through .grad as a training loop does.
    dz, dzo = import_dezero(), import_dezero("dezero.optimizers")
    theirs, ours = make_pair(np.float64, seed=3, shapes=[(3, 4), (4,)])
    opt_t = getattr(dzo, name)(**kwargs).setup(Target(theirs))
    opt_o = getattr(fo, name)(**kwargs).setup(Target(ours))
    opt_t.add_hook(dzo.WeightDecay(0.01))
    opt_o.add_hook(fo.WeightDecay(0.01))
    opt_t.add_hook(dzo.ClipGrad(2.0))
    opt_o.add_hook(fo.ClipGrad(2.0))
    for step in range(4):
        for params in (theirs, ours):
            for p in params:
                p.cleargrad()
            w, b = params
            y = (w * w * 0.5 + b) * b - w
            y.backward()
        for a, b in zip(theirs, ours):
            assert isinstance(b.grad, Variable)
            np.testing.assert_array_equal(b.grad.data, a.grad.data)
        opt_t.update()
        opt_o.update()
        for a, b in zip(theirs, ours):
            np.testing.assert_array_equal(b.data, a.data, err_msg=f"step {step}")
            # the hooks changed the grads in place, as DeZero's do
            np.testing.assert_array_equal(b.grad.data, a.grad.data)


def test_ndarray_grads_of_the_stage2_face_are_used_directly():
    p = _StandInParameter(np.array([1.0, 2.0]))
    p.grad = np.array([0.5, 0.25])
    fo.SGD(lr=2.0).setup(Target([p])).update()
    np.testing.assert_array_equal(p.data, [0.0, 1.5])
