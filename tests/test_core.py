"""The documented behaviours of the core API beyond the book's printed
outputs (those are tests/test_notebook.py)."""
import subprocess
import sys
import textwrap
import threading
import weakref

import numpy as np
import pytest

import fastgrad
import fastgrad as dezero
from fastgrad import Config, Function, Variable, no_grad, using_config


# ------------------------------------------------------------------ Variable

def test_public_api():
    for name in ["Variable", "Function", "Config", "using_config", "no_grad", "as_array",
                 "as_variable", "setup_variable", "Add", "Mul", "Neg", "Sub", "Div", "Pow",
                 "add", "mul", "neg", "sub", "rsub", "div", "rdiv", "pow"]:
        assert hasattr(fastgrad, name), name
        assert getattr(fastgrad, name).__doc__, name


def test_data_kept_by_identity():
    a = np.arange(3.0)
    assert Variable(a).data is a
    b = np.array(1.0)
    assert Variable(b).data is b


@pytest.mark.parametrize("bad", [1, 1.0, [1, 2], "abc", (1,), np.float64(1.0)])
def test_variable_rejects_non_arrays(bad):
    with pytest.raises(TypeError, match=type(bad).__name__):
        Variable(bad)


def test_variable_none_data():
    v = Variable(None)
    assert v.data is None and repr(v) == "variable(None)"


def test_attributes_of_a_new_variable():
    x = Variable(np.array(1.0), name="x")
    assert x.grad is None and x.creator is None and x.generation == 0 and x.name == "x"


def test_repr_multiline_indent():
    x = Variable(np.arange(6.0).reshape(3, 2))
    lines = repr(x).split("\n")
    assert lines[0] == "variable([[0. 1.]"
    assert lines[1] == " " * 9 + " [2. 3.]"


def test_len_of_0d_raises_like_numpy():
    with pytest.raises(TypeError):
        len(Variable(np.array(1.0)))


def test_shape_properties_of_computed_scalar():
    y = Variable(np.array(2.0)) * 3.0
    assert y.shape == () and y.ndim == 0 and y.size == 1 and y.dtype == np.float64
    assert type(y.data) is np.ndarray and y.data.shape == ()
    assert y.data is y.data


def test_data_setter_accepts_gradient_descent_update():
    x = Variable(np.array(2.0))
    y = x * x
    y.backward()
    x.data = x.data - 0.1 * x.grad      # a NumPy scalar from 0-d arithmetic
    assert type(x.data) is np.ndarray and x.data == pytest.approx(1.6)
    x.data -= 0.1 * x.grad              # in place
    assert x.data == pytest.approx(1.2)
    with pytest.raises(TypeError):
        x.data = [1.0]


# ------------------------------------------------------------------ Function

def test_function_outputs_are_ndarrays_even_for_scalars():
    class Half(Function):
        def forward(self, x):
            return float(x) / 2          # a Python float

        def backward(self, gy):
            return gy / 2

    y = Half()(np.array(3.0))
    assert type(y.data) is np.ndarray and y.data == 1.5


def test_function_accepts_arrays_and_scalars():
    class Add3(Function):
        def forward(self, a, b, c):
            return a + b + c

        def backward(self, gy):
            return gy, gy, gy

    x = Variable(np.array(1.0))
    y = Add3()(x, np.array(2.0), 3)
    assert y.data == 6.0
    f = y.creator
    assert len(f.inputs) == 3 and all(isinstance(v, Variable) for v in f.inputs)
    assert f.inputs[0] is x
    y.backward()
    assert x.grad == 1.0


def test_recording_only_with_backprop():
    f = dezero.Mul()
    with no_grad():
        y = f(Variable(np.array(2.0)), 3.0)
    for attr in ("inputs", "outputs", "generation"):
        with pytest.raises(AttributeError):
            getattr(f, attr)
    assert y.creator is None and y.generation == 0


def test_user_subclass_with_own_init():
    class Pow(Function):
        def __init__(self, c):
            self.c = c

        def forward(self, x):
            return x ** self.c

        def backward(self, gy):
            return self.c * self.inputs[0].data ** (self.c - 1) * gy

    x = Variable(np.array(2.0))
    y = Pow(3)(x)
    y.backward()
    assert y.data == 8.0 and x.grad == 12.0


def test_base_function_forward_not_implemented():
    with pytest.raises(NotImplementedError):
        Function()(Variable(np.array(1.0)))


def test_multiple_outputs_backward_with_unused_output():
    class Split(Function):
        def forward(self, x):
            return x * 2, x * 3

        def backward(self, g0, g1):
            return 2 * g0 + 3 * g1

    x = Variable(np.array([1.0, 2.0]))
    a, b = Split()(x)
    y = a * a
    y.backward()                          # b got no gradient: zeros are passed
    np.testing.assert_allclose(x.grad, 8 * x.data)
    x.cleargrad()
    a, b = Split()(x)
    del b                                 # a dead output also counts as zero
    (a * 1.0).backward()
    np.testing.assert_allclose(x.grad, [2.0, 2.0])


def test_backward_wrong_number_of_grads_is_a_clear_error():
    class Bad(Function):
        def forward(self, x0, x1):
            return x0 + x1

        def backward(self, gy):
            return gy

    y = Bad()(Variable(np.array(1.0)), Variable(np.array(2.0)))
    with pytest.raises(ValueError, match="Bad.backward returned 1 gradient"):
        y.backward()


# ------------------------------------------------------------------ backward

def test_backward_on_leaf_sets_ones():
    x = Variable(np.arange(3.0))
    x.backward()
    assert np.array_equal(x.grad, np.ones(3))
    x = Variable(np.array(2.0))
    x.backward()
    assert type(x.grad) is np.ndarray and x.grad == 1.0


def test_grads_are_0d_ndarrays_with_data_dtype():
    x = Variable(np.array(3.0))
    y = x * x + x
    y.backward()
    assert type(x.grad) is np.ndarray and x.grad.shape == () and x.grad == 7.0
    x = Variable(np.array(3.0, dtype=np.float32))
    y = x * x + 2.0
    y.backward()
    assert x.grad.dtype == np.float32 and y.dtype == np.float32


def test_seed_grad_used_if_set():
    x = Variable(np.array([1.0, 2.0]))
    y = x * 3.0
    y.grad = np.array([10.0, 20.0])
    y.backward()
    np.testing.assert_array_equal(x.grad, [30.0, 60.0])


def test_each_function_backward_runs_once_in_dezero_order():
    calls = []

    class Tag(Function):
        def __init__(self, tag):
            self.tag = tag

        def forward(self, *xs):
            return sum(xs)

        def backward(self, gy):
            calls.append(self.tag)
            return tuple(gy for _ in self.inputs)

    x = Variable(np.array(1.0))
    a = Tag("a")(x)
    b = Tag("b")(a)
    c = Tag("c")(a)
    d = Tag("d")(b, c)
    d.backward()
    # b and c share generation 2; c was pushed last, so DeZero pops it first.
    assert calls == ["d", "c", "b", "a"]
    assert x.grad == 2.0


def test_add_grads_never_alias():
    class AddPassThrough(Function):
        def forward(self, x0, x1):
            return x0 + x1

        def backward(self, gy):
            return gy, gy

    for retain in (False, True):
        x = Variable(np.arange(3.0))
        y = Variable(np.arange(3.0))
        z = AddPassThrough()(x, y)
        z.backward(retain_grad=retain)
        assert x.grad is not y.grad and not np.shares_memory(x.grad, y.grad)
        if retain:
            assert not np.shares_memory(z.grad, x.grad)
        x.grad[...] = 7.0
        assert np.all(y.grad == 1.0)

    x = Variable(np.arange(3.0))
    y = Variable(np.arange(3.0))
    z = x + y
    z.backward(retain_grad=True)
    for a, b in [(x.grad, y.grad), (x.grad, z.grad), (y.grad, z.grad)]:
        assert not np.shares_memory(a, b)


def test_grad_accumulation_does_not_touch_user_arrays():
    x = Variable(np.arange(3.0))
    mine = np.array([100.0, 100.0, 100.0])
    x.grad = mine
    (x * 2.0).backward()
    np.testing.assert_array_equal(mine, [100.0, 100.0, 100.0])
    np.testing.assert_array_equal(x.grad, [102.0, 102.0, 102.0])
    held = x.grad
    (x * 1.0).backward()
    np.testing.assert_array_equal(held, [102.0, 102.0, 102.0])
    np.testing.assert_array_equal(x.grad, [103.0, 103.0, 103.0])


def test_scalar_grad_accumulation_does_not_touch_user_arrays():
    x = Variable(np.array(1.0))
    y = x * 2.0
    y.backward()
    held = x.grad
    y = x * 3.0
    y.backward()
    assert held == 2.0 and x.grad == 5.0


def test_user_backward_returning_cached_array_is_copied():
    cache = np.ones(3)

    class Cached(Function):
        def forward(self, x):
            return x.copy()

        def backward(self, gy):
            return cache

    x = Variable(np.zeros(3))
    Cached()(x).backward()
    assert x.grad is not cache
    x.grad += 1
    assert np.all(cache == 1.0)


def test_integer_data_keeps_integer_grads():
    x = Variable(np.array(3))
    y = x * 2
    y.backward()
    assert x.grad == 2 and x.grad.dtype.kind == "i"
    x = Variable(np.array(3))
    y = x * 0.5                       # the grad is 0.5: not truncated to int
    y.backward()
    assert x.grad == 0.5


def test_retain_grad_false_clears_every_output_grad():
    x = Variable(np.array([1.0, 2.0]))
    a = x * 2.0
    b = a * a
    c = b + a
    c.backward()
    assert a.grad is None and b.grad is None and c.grad is None
    np.testing.assert_allclose(x.grad, 8 * x.data + 2)


def test_backward_twice_accumulates():
    x = Variable(np.array(2.0))
    y = x * x
    y.backward()
    y.backward()
    assert x.grad == 8.0    # second pass: seed ones again (y.grad was cleared)


# ------------------------------------------------------------------ broadcasting and dtypes

@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
def test_broadcast_grads_have_input_shapes(op):
    x = Variable(np.arange(1.0, 4.0))
    c = Variable(np.array(2.0))
    y = getattr(dezero, op)(x, c)
    y.backward()
    assert x.grad.shape == (3,) and c.grad.shape == ()
    a = Variable(np.ones((2, 1, 3)))
    b = Variable(np.ones((4, 1)))
    y = getattr(dezero, op)(a, b)
    assert y.shape == (2, 4, 3)
    y.backward()
    assert a.grad.shape == (2, 1, 3) and b.grad.shape == (4, 1)


def test_broadcast_values():
    x = Variable(np.arange(6.0).reshape(2, 3))
    w = Variable(np.array([1.0, 2.0, 3.0]))
    y = x * w
    y.backward()
    np.testing.assert_array_equal(w.grad, x.data.sum(axis=0))
    np.testing.assert_array_equal(x.grad, np.broadcast_to(w.data, (2, 3)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_python_scalars_are_weak(dtype):
    x = Variable(np.arange(1, 4, dtype=dtype))
    for y in [x * 2.0, 2.0 * x, x + 1, 1 - x, x / 3.0, 3.0 / x, x ** 2.5, -x]:
        assert y.dtype == dtype
    y = 2.0 * x ** 2 + 1
    y.backward()
    assert x.grad.dtype == dtype


def test_numpy_scalars_on_either_side():
    x = Variable(np.array(2.0))
    for y, expected in [(np.float64(3.0) * x, 6.0), (x * np.float64(3.0), 6.0),
                        (np.float64(1.0) - x, -1.0), (np.int64(4) / x, 2.0),
                        (x ** np.float64(2.0), 4.0), (np.array(1.0) + x, 3.0)]:
        assert isinstance(y, Variable), type(y)
        assert y.data == expected


def test_ndarray_on_left_returns_variable():
    x = Variable(np.array([1.0, 2.0]))
    for y in [np.ones(2) + x, np.ones(2) - x, np.ones(2) * x, np.ones(2) / x]:
        assert isinstance(y, Variable)
    assert Variable.__array_priority__ == 200


def test_variable_exponent_is_a_type_error():
    x = Variable(np.array(2.0))
    with pytest.raises(TypeError, match="exponent"):
        x ** Variable(np.array(2.0))
    with pytest.raises(TypeError):
        2.0 ** x


# ------------------------------------------------------------------ bad input

@pytest.mark.parametrize("other", ["a", None, [1, 2], object()])
def test_bad_operands_raise_type_error(other):
    x = Variable(np.array([1.0, 2.0]))
    for op in (lambda: x + other, lambda: other * x, lambda: x - other, lambda: x / other):
        with pytest.raises(TypeError):
            op()


def test_object_and_string_arrays_rejected():
    for data in [np.array([1, "a"], dtype=object), np.array(["a", "b"]),
                 np.array([1.0, 2.0], dtype=object)]:
        with pytest.raises(TypeError, match="dtype"):
            Variable(data) + 1.0


def test_none_data_in_op():
    with pytest.raises(TypeError, match="None"):
        Variable(None) * 2.0


def test_shapes_that_cannot_broadcast():
    with pytest.raises(ValueError, match="broadcast"):
        Variable(np.ones(3)) + Variable(np.ones(4))


def test_backward_wrong_shape_grad_is_a_value_error():
    class Bad(Function):
        def forward(self, x):
            return x * 2

        def backward(self, gy):
            return np.ones(5)

    y = Bad()(Variable(np.ones(3)))
    with pytest.raises(ValueError, match="shape"):
        y.backward()


# ------------------------------------------------------------------ Config

def test_using_config_restores_on_exception_and_nests():
    with pytest.raises(RuntimeError):
        with using_config("enable_backprop", False):
            with using_config("enable_backprop", True):
                assert Config.enable_backprop
            assert not Config.enable_backprop
            raise RuntimeError
    assert Config.enable_backprop is True


def test_no_grad_is_thread_local():
    inside = threading.Event()
    release = threading.Event()
    seen = {}

    def worker():
        with no_grad():
            inside.set()
            release.wait(5)
            seen["worker"] = Config.enable_backprop

    t = threading.Thread(target=worker)
    t.start()
    inside.wait(5)
    seen["main"] = Config.enable_backprop
    y = Variable(np.array(1.0)) * 2.0
    release.set()
    t.join()
    assert seen == {"main": True, "worker": False}
    assert y.creator is not None


def test_config_assignment_is_per_thread():
    Config.enable_backprop = False
    try:
        result = []
        t = threading.Thread(target=lambda: result.append(Config.enable_backprop))
        t.start()
        t.join()
        assert result == [True] and Config.enable_backprop is False
    finally:
        Config.enable_backprop = True


def test_setup_variable_idempotent():
    dezero.setup_variable()
    dezero.setup_variable()
    assert (Variable(np.array(2.0)) * 3.0).data == 6.0


# ------------------------------------------------------------------ memory and depth

def test_graph_freed_when_output_dropped():
    x = Variable(np.ones(10))
    y = (x * 2.0 + 1.0) ** 2
    ref = weakref.ref(y.creator)
    mid = weakref.ref(y.creator.inputs[0])
    del y
    assert ref() is None and mid() is None


def test_million_op_chain_subprocess():
    code = textwrap.dedent("""
        import sys, numpy as np
        import fastgrad as dezero
        limit = sys.getrecursionlimit()
        x = dezero.Variable(np.array(1.0))
        y = x
        for _ in range(1_000_000):
            y = -y
        y.backward()
        assert x.grad == 1.0, x.grad
        del y
        assert sys.getrecursionlimit() == limit
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "ok"


def dezero_order(root_creator):
    """DeZero's backward loop (sort by generation, pop the last), as a reference."""
    funcs, seen, order = [], set(), []

    def add_func(f):
        if f not in seen:
            funcs.append(f)
            seen.add(f)
            funcs.sort(key=lambda x: x.generation)

    add_func(root_creator)
    while funcs:
        f = funcs.pop()
        order.append(f)
        for x in f.inputs:
            if x.creator is not None:
                add_func(x.creator)
    return order


@pytest.mark.parametrize("seed", range(5))
def test_order_with_hand_set_generations(seed):
    # Generations set by hand can break the "inputs come from lower
    # generations" rule; the order must still be DeZero's.
    calls = []

    class Tag(Function):
        def forward(self, *xs):
            return sum(xs)

        def backward(self, gy):
            calls.append(self)
            return tuple(gy for _ in self.inputs)

    rng = np.random.default_rng(seed)
    nodes = [Variable(np.array(1.0)) for _ in range(3)]
    for _ in range(30):
        k = int(rng.integers(1, 3))
        picks = [nodes[int(i)] for i in rng.integers(0, len(nodes), size=k)]
        nodes.append(Tag()(*picks))
    root = Tag()(*nodes[-5:])
    funcs = {v.creator for v in nodes if v.creator is not None} | {root.creator}
    for f in funcs:
        f.generation = int(rng.integers(0, 50))
    expected = dezero_order(root.creator)
    root.backward()
    assert calls == expected
