"""Pickling: Variables travel as leaves (data, grad, name); the graph is dropped.

The documented rule (``Variable.__reduce__``): a pickled Variable keeps its
data, grad and name and comes back without a creator, generation 0.
Round trips cover every pickle protocol, the lazily-held 0-d float64 values
of the C scalar path, and ``multiprocessing`` workers that compute grads and
return Variables.
"""
import multiprocessing
import pickle

import numpy as np
import pytest

import fastgrad as fg

PROTOCOLS = range(pickle.HIGHEST_PROTOCOL + 1)


def assert_same_array(a, b):
    assert type(a) is type(b) is np.ndarray
    assert a.shape == b.shape and a.dtype == b.dtype
    np.testing.assert_array_equal(a, b)


def numpy_round_trip(a, protocol):
    return pickle.loads(pickle.dumps(a, protocol=protocol))


def leaves():
    x = fg.Variable(np.arange(6.0).reshape(2, 3), name="x")
    x.grad = np.full((2, 3), 0.5)
    s = fg.Variable(np.array(2.5), name="scalar")
    (s * s).backward()                      # grad via the 0-d path
    f32 = fg.Variable(np.array([1.5, -2.0], np.float32))
    ints = fg.Variable(np.array([[1, 2]], np.int64), name="ints")
    big = fg.Variable(np.array([1.0, 2.0], dtype=">f8"), name="big-endian")
    none = fg.Variable(None, name="empty")
    fortran = fg.Variable(np.asfortranarray(np.ones((3, 2))))
    cplx = fg.Variable(np.array([1 + 2j]), name="c")
    cplx.grad = np.array([3 - 1j])
    return [x, s, f32, ints, big, none, fortran, cplx]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_leaf_round_trip_all_protocols(protocol):
    for v in leaves():
        w = pickle.loads(pickle.dumps(v, protocol=protocol))
        assert type(w) is fg.Variable
        assert w is not v
        assert w.name == v.name
        assert w.creator is None and w.generation == 0
        if v.data is None:
            assert w.data is None
        else:
            # Exactly what NumPy's own round trip gives (protocols < 5
            # normalize a non-native byte order, for example).
            assert_same_array(w.data, numpy_round_trip(v.data, protocol))
            np.testing.assert_array_equal(w.data, v.data)
            assert w.shape == v.shape and w.ndim == v.ndim
            assert not np.shares_memory(w.data, v.data)
        if v.grad is None:
            assert w.grad is None
        else:
            assert_same_array(w.grad, numpy_round_trip(v.grad, protocol))
        assert repr(w) == repr(v)


def test_unpickled_variable_is_fully_usable():
    x = fg.Variable(np.array([1.0, 2.0]), name="x")
    (x * x).backward()
    y = pickle.loads(pickle.dumps(x))
    np.testing.assert_array_equal(y.grad, [2.0, 4.0])
    z = y * 3.0 + y
    z.backward()                            # accumulates onto the pickled grad
    np.testing.assert_array_equal(y.grad, [6.0, 8.0])
    y.cleargrad()
    assert y.grad is None
    s = pickle.loads(pickle.dumps(fg.Variable(np.array(3.0))))
    t = s ** 2
    t.backward()
    assert float(s.grad) == 6.0


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_variable_with_creator_pickles_as_leaf(protocol):
    x = fg.Variable(np.array([1.0, 2.0]), name="x")
    s = fg.Variable(np.array(1.5))
    y = x * x + s * 2.0
    y.name = "y"
    y.backward(retain_grad=True)
    t = s * s                               # a 0-d float64 output (lazy value)
    assert y.creator is not None and t.creator is not None
    for v in (y, t):
        w = pickle.loads(pickle.dumps(v, protocol=protocol))
        assert w.creator is None, "the graph must be dropped"
        assert w.generation == 0
        assert w.name == v.name
        assert_same_array(w.data, v.data)
        if v.grad is None:
            assert w.grad is None
        else:
            assert_same_array(w.grad, v.grad)
        w.backward()                        # a leaf: nothing upstream to reach
    assert y.creator is not None            # the original keeps its graph
    np.testing.assert_array_equal(y.grad, [1.0, 1.0])


def test_shared_arrays_and_containers():
    """Pickle memoizes: two Variables sharing one array share it afterwards."""
    a = np.arange(3.0)
    v1, v2 = fg.Variable(a, name="a"), fg.Variable(a, name="b")
    out = pickle.loads(pickle.dumps({"vs": [v1, v2, v1]}))
    w1, w2, w3 = out["vs"]
    assert w1 is w3 and w1 is not w2
    assert w1.data is w2.data
    np.testing.assert_array_equal(w2.data, a)


def test_subclass_round_trip():
    w = pickle.loads(pickle.dumps(Param(np.ones(2), name="p")))
    assert type(w) is Param and w.name == "p"


class Param(fg.Variable):
    """A user subclass (module level, so pickle can find it)."""


def _worker(seed):
    """Runs in a worker process: build a graph, backprop, return Variables."""
    rng = np.random.default_rng(seed)
    x = fg.Variable(rng.uniform(1, 2, size=(3,)), name=f"x{seed}")
    s = fg.Variable(np.array(float(seed) + 1.0), name=f"s{seed}")
    y = (x * x) / s + s ** 2
    y.backward()
    return x, s, y, fg.PURE


def test_multiprocessing_pool_returns_grads():
    expected = [_worker(seed) for seed in range(4)]
    ctx = multiprocessing.get_context("spawn")   # a fresh interpreter per worker
    with ctx.Pool(2) as pool:
        results = pool.map(_worker, range(4))
    for (x, s, y, pure), (ex, es, ey, epure) in zip(results, expected):
        assert pure == epure                      # workers use the same path
        assert x.name == ex.name and s.name == es.name
        for got, want in ((x, ex), (s, es)):
            assert got.creator is None
            np.testing.assert_array_equal(got.data, want.data)
            np.testing.assert_allclose(got.grad, want.grad, rtol=1e-15)
        assert y.creator is None and ey.creator is not None
        np.testing.assert_array_equal(y.data, ey.data)
