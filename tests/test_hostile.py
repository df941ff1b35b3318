"""Hostile inputs: each group of cases runs in its own subprocess.

A segfault or abort then fails that group's test instead of killing pytest.
Every case must give the correct result or raise a clear exception (a
TypeError/ValueError naming the problem; OverflowError/MemoryError where
NumPy itself raises them), never a crash or a silently wrong shape.  After
every case the child checks the library is still usable: recording is on
(``Config.enable_backprop`` restored), a fresh computation (array and 0-d
float64 paths) gives the right gradients.

The child reports every failing case (not only the first) on stderr.
"""
import os
import subprocess
import sys
import tempfile
import textwrap

import pytest

import fastgrad

# The directory holding the fastgrad under test (site-packages after
# `pip install .`, the work tree for an in-place build): the children must
# import that one, not the source tree of the current directory.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fastgrad.__file__)))

PRELUDE = r'''
import gc, sys, traceback, warnings, weakref
import numpy as np
import fastgrad as fg
from fastgrad import Variable as V, Function, Config, no_grad, using_config

FAILED = []

def usable():
    assert Config.enable_backprop is True, "enable_backprop left off"
    x = V(np.array([1.0, 2.0]))
    y = x * x + 3 * x
    y.backward()
    assert np.array_equal(x.grad, [5.0, 7.0]), x.grad
    s = V(np.array(2.0))
    t = s ** 3 / s - s
    t.backward()
    assert float(s.grad) == 3.0, s.grad
    assert y.creator is not None and t.creator is not None

def case(fn):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            fn()
    except BaseException:
        FAILED.append((fn.__name__, traceback.format_exc()))
    try:
        usable()
    except BaseException:
        FAILED.append((fn.__name__ + " (library unusable afterwards)",
                       traceback.format_exc()))
    return fn

class raises:
    """with raises(TypeError, 'word', ...): the block must raise one of the
    types, with every word in the message (case-insensitive)."""
    def __init__(self, types, *words):
        self.types, self.words = types, words
    def __enter__(self):
        return self
    def __exit__(self, t, e, tb):
        if t is None:
            raise AssertionError(f"no exception (expected {self.types})")
        if not issubclass(t, self.types):
            return False
        msg = str(e).lower()
        assert msg, f"{t.__name__} with an empty message"
        for w in self.words:
            assert w.lower() in msg, f"{w!r} not in message {str(e)!r}"
        self.exc = e
        return True

def same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    assert np.allclose(a, b, equal_nan=True, rtol=1e-12, atol=0), (a, b)

class Ident(Function):
    def forward(self, x):
        return x
    def backward(self, gy):
        return gy
'''

EPILOGUE = r'''
if FAILED:
    for name, tb in FAILED:
        sys.stderr.write(f"=== {name}\n{tb}\n")
    sys.exit(1)
print("all ok")
'''


def run_cases(code, env_extra=None, timeout=120):
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.update(env_extra or {})
    src = PRELUDE + textwrap.dedent(code) + EPILOGUE
    p = subprocess.run([sys.executable, "-c", src], capture_output=True, text=True,
                       timeout=timeout, env=env, cwd=tempfile.gettempdir())
    assert p.returncode == 0, (
        f"child exited with {p.returncode}"
        + (" (killed by a signal: a crash)" if p.returncode < 0 else "")
        + f"\n--- stdout\n{p.stdout[-3000:]}\n--- stderr\n{p.stderr[-8000:]}")
    assert "all ok" in p.stdout


def test_object_string_none_and_junk_operands():
    run_cases(r'''
    @case
    def object_arrays():
        for data in (np.array([1.0, 2.0], dtype=object),
                     np.array([None, "a"], dtype=object)):
            x = V(data)
            for fn in (lambda: x * 2, lambda: 2 * x, lambda: -x, lambda: x ** 2,
                       lambda: x + x, lambda: Ident()(x) * 1.0):
                with raises(TypeError, "object"):
                    fn()
        y = V(np.ones(2))
        for c in (np.array([1, 2], dtype=object), np.array(2, dtype=object)):
            with raises(TypeError, "object"):
                y * c
            with raises(TypeError, "object"):
                c - y
            with raises(TypeError, "object"):
                y ** c
        assert y.creator is None and y.grad is None

    @case
    def strings():
        with raises(TypeError, "str"):
            V("abc")
        with raises(TypeError, "str"):
            V(np.array(1.0)).data = "abc"
        x = V(np.array([1.0, 2.0]))
        for fn in (lambda: x + "a", lambda: "a" + x, lambda: x * b"a",
                   lambda: x / "a", lambda: "a" - x, lambda: fg.add(x, "a")):
            with raises(TypeError):
                fn()
        for c in ("2", b"2", np.array(["2"])):
            with raises(TypeError, "exponent"):
                x ** c
            with raises(TypeError, "exponent"):
                fg.Pow(c)
        s = V(np.array(["a", "b"]))
        for fn in (lambda: s * 2, lambda: s + s, lambda: -s, lambda: s ** 2,
                   lambda: x * s):
            with raises(TypeError):
                fn()
        s0 = V(np.array(2.0))
        with raises(TypeError):
            s0 + "a"
        with raises(TypeError):
            s0 ** "a"

    @case
    def none_data():
        n = V(None)
        assert repr(n) == "variable(None)"
        for fn in (lambda: n + 1, lambda: 1 + n, lambda: -n, lambda: n ** 2,
                   lambda: n * V(np.ones(2)), lambda: fg.div(n, 2.0)):
            with raises(TypeError, "None"):
                fn()
        with raises(ValueError, "None"):
            n.backward()
        x = V(np.ones(2))
        for fn in (lambda: x + None, lambda: None * x, lambda: x ** None):
            with raises(TypeError, "None"):
                fn()
        assert x.creator is None

    @case
    def junk_containers():
        x = V(np.ones(2))
        for junk in ([1, 2], (1, 2), {}, object(), {1}):
            with raises(TypeError):
                x * junk
            with raises(TypeError):
                V(junk)
        with raises(TypeError):
            x.grad = [1.0, 1.0]
        with raises(TypeError):
            x.creator = 1
        with raises(TypeError, "Variable"):
            x ** V(np.array(2.0))

    @case
    def no_partial_graph_after_bad_operand():
        x = V(np.ones(3))
        before = sys.getrefcount(x)
        for junk in ("a", None, np.ones(4), np.array([1], dtype=object)):
            for op in (fg.add, fg.mul, fg.sub, fg.div):
                try:
                    op(x, junk)
                except (TypeError, ValueError):
                    pass
        assert sys.getrefcount(x) == before, "a failed op kept a reference to its input"
        assert x.creator is None and x.grad is None
    ''')


def test_numeric_edge_cases():
    run_cases(r'''
    @case
    def complex_data():
        a = np.array([1 + 2j, -0.5 + 0.25j])
        x = V(a)
        y = x * x + 3 * x
        y.backward()
        same(y.data, a * a + 3 * a)
        same(x.grad, 2 * a + 3)         # holomorphic derivative, as DeZero
        z = V(np.array(1.5 + 1j))
        w = z ** 2
        w.backward()
        same(z.grad, 2 * (1.5 + 1j))

    @case
    def complex_constant_on_real_leaf():
        # The grad keeps the data's dtype: the real part, never silently.
        x = V(np.array([1.0, 2.0]))
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            try:
                y = x * (2 + 1j)
                y.backward()
            except (TypeError, ValueError):
                return
        assert x.grad.dtype == x.dtype and x.grad.shape == x.shape
        same(x.grad, [2.0, 2.0])
        assert any("complex" in str(r.category.__name__).lower() or
                   "complex" in str(r.message).lower() for r in rec), \
            "imaginary part dropped without a warning"

    @case
    def int_negative_powers():
        for data in (np.array([2, 3]), np.array(2), np.array([2, 3], np.int8)):
            with raises(ValueError, "negative"):
                V(data) ** -1
            with raises(ValueError, "negative"):
                V(data) ** np.array(-2)
        x = V(np.array([2, 4]))
        y = x ** -1.0
        same(y.data, [0.5, 0.25])
        y.backward()
        same(x.grad, [-0.25, -1 / 16])

    @case
    def int_arrays():
        x = V(np.array([1, 2, 3]))
        y = x * x + 2 * x
        assert y.dtype == np.array([1]).dtype
        y.backward()
        same(x.grad, [4, 6, 8])
        assert x.grad.shape == (3,)
        big = V(np.array([2, 3]))
        try:
            r = big * 2 ** 100
        except (OverflowError, TypeError, ValueError):
            pass
        else:
            same(r.data, np.array([2.0, 3.0]) * 2.0 ** 100)

    @case
    def int_division_by_zero():
        with np.errstate(all="ignore"):
            for a, b in ((np.array([1, 0, -1]), np.array([0, 0, 0])),
                         (np.array(1), 0), (np.array(0.0), 0.0),
                         (np.array([1.0, -1.0]), 0.0), (np.array(1.0), np.array(0))):
                x = V(a)
                y = x / b
                same(y.data, np.asarray(a) / np.asarray(b))
                y.backward()
                same(x.grad, np.ones_like(np.asarray(a) / np.asarray(b)) / np.asarray(b))
            x = V(np.array(3.0))
            y = 1.0 / (x - 3.0)
            assert np.isinf(y.data)

    @case
    def nan_and_inf():
        vals = np.array([np.nan, np.inf, -np.inf, 0.0, 1.0])
        with np.errstate(all="ignore"):
            x = V(vals.copy())
            y = x * x - x / 2.0
            y.backward()
            same(y.data, vals * vals - vals / 2.0)
            same(x.grad, 2 * vals - 0.5)
            for v in (np.nan, np.inf, -np.inf):
                s = V(np.array(v))
                t = s * s + 1.0
                t.backward()
                same(t.data, v * v + 1.0)
                same(s.grad, 2 * v)

    @case
    def empty_arrays():
        for shape, other in (((0,), np.ones(1)), ((0, 3), np.ones(3)),
                             ((0,), np.ones((4, 1))), ((2, 0), np.array(2.0))):
            x = V(np.zeros(shape))
            y = x * other + x ** 2 - other / (x + 1.0)
            y.backward()
            assert y.shape == np.broadcast_shapes(shape, np.shape(other)), y.shape
            assert x.grad.shape == shape and x.grad.dtype == x.dtype
            u = Ident()(x)
            u.backward()
            assert x.grad.shape == shape
        e = V(np.array([]))
        e.backward()
        assert e.grad.shape == (0,)
        assert len(e) == 0 and e.size == 0

    @case
    def shapes_that_do_not_broadcast():
        x = V(np.ones(3))
        for other in (np.ones(4), V(np.ones((2, 2))), np.ones((3, 2))):
            for fn in (lambda: x + other, lambda: other * x, lambda: fg.Sub()(x, other),
                       lambda: x / other):
                with raises(ValueError, "broadcast"):
                    fn()
        with raises(ValueError):
            x ** np.array([1.0, 2.0])
        assert x.creator is None and x.grad is None

    @case
    def bool_data():
        x = V(np.array([True, False]))
        y = x * 2
        same(y.data, [2, 0])
        y.backward()
        assert x.grad.shape == (2,)
    ''')


def test_layouts_byte_order_and_broadcast_views():
    run_cases(r'''
    @case
    def non_native_byte_order():
        for dt in (">f8", ">f4", "<f8"):
            for a in (np.array([1.5, -2.0, 3.0], dtype=dt), np.array(1.5, dtype=dt)):
                x = V(a)
                y = x * x + x ** 2 - 2.0 / x
                y.backward()
                v = a.astype(np.float64)
                assert np.allclose(y.data, 2 * v * v - 2.0 / v, rtol=1e-6)
                assert np.allclose(x.grad, 4 * v + 2.0 / v ** 2, rtol=1e-6)
                assert x.grad.shape == a.shape
        # A big-endian constant and seed next to native 0-d float64 values.
        x = V(np.array(3.0))
        y = x * np.array(2.0, dtype=">f8") + np.array(1.0, dtype=">f8")
        y.grad = np.array(1.0, dtype=">f8")
        y.backward()
        same(y.data, 7.0)
        same(x.grad, 2.0)

    @case
    def misaligned_scalar():
        buf = np.zeros(17, np.uint8)
        a = buf[1:9].view(np.float64).reshape(())
        a[()] = 3.0
        assert not a.flags.aligned
        x = V(a)
        y = x * x + x
        y.backward()
        same(y.data, 12.0)
        same(x.grad, 7.0)

    @case
    def zero_stride_views():
        row = np.array([1.0, 2.0, 3.0])
        b = np.broadcast_to(row, (2000, 3))
        x = V(b)
        y = x * x + b
        y.backward()
        assert x.grad.shape == (2000, 3)
        assert all(s != 0 for s in x.grad.strides), "grad is a 0-stride view"
        same(x.grad, 2 * b)
        x.grad[0, 0] = 99.0          # the grad is the user's own array
        same(b, np.broadcast_to(row, (2000, 3)))
        # A broadcast seed: results are right and the seed is not written.
        w = V(np.ones(3))
        z = w * 2.0 + w
        seed = np.broadcast_to(np.array(1.0), (3,))
        z.grad = seed
        z.backward(retain_grad=True)
        same(w.grad, [3.0, 3.0, 3.0])
        same(seed, [1.0, 1.0, 1.0])
        # Huge views: metadata works, ops needing memory fail cleanly.
        huge = np.broadcast_to(np.array(2.0), (10**6, 10**6))
        h = V(huge)
        assert h.shape == (10**6, 10**6) and h.size == 10**12 and len(h) == 10**6
        assert "variable(" in repr(h)
        try:
            h * 2.0
        except (MemoryError, ValueError):
            pass
        else:
            raise AssertionError("a 10**12-element product did not fail?")
        s = V(np.array(1.0))
        try:
            (s * huge).backward()
        except (MemoryError, ValueError):
            pass
        assert s.creator is None

    @case
    def read_only_and_strided_leaves():
        base = np.arange(12.0).reshape(3, 4)
        for a in (base[::2, ::-1], base.T, np.asfortranarray(base), base[:, 1]):
            ro = np.array(a)
            ro.flags.writeable = False
            for data in (a, ro):
                keep = np.array(data)
                x = V(data)
                y = x * x + x / 2.0
                y.backward()
                same(x.grad, 2 * keep + 0.5)
                same(data, keep)         # inputs are never written
                assert x.grad.flags.writeable
                assert not np.shares_memory(x.grad, data)
    ''')


def test_misbehaving_user_functions():
    run_cases(r'''
    class Boom(Exception):
        pass

    class RaisingForward(Function):
        def forward(self, x):
            raise Boom("forward")

    class Out(Function):
        def __init__(self, value):
            self.value = value
        def forward(self, x):
            return self.value
        def backward(self, gy):
            return gy

    class Back(Function):
        def __init__(self, result):
            self.result = result
        def forward(self, *xs):
            return xs[0] * 2
        def backward(self, gy):
            r = self.result
            if isinstance(r, type) and issubclass(r, BaseException):
                raise r("backward")
            return r(gy) if callable(r) else r

    @case
    def forward_raises():
        x = V(np.ones(3))
        before = sys.getrefcount(x)
        f = RaisingForward()
        try:
            f(x)
        except Boom:
            pass
        else:
            raise AssertionError("no Boom")
        assert sys.getrefcount(x) == before
        try:
            f.inputs
        except AttributeError:
            pass
        else:
            raise AssertionError("inputs recorded for a failed call")
        assert x.creator is None

    @case
    def forward_returns_bad_values():
        x = V(np.ones(3))
        before = sys.getrefcount(x)
        for value, exc in (((), ValueError), (None, TypeError), ([np.ones(3)], TypeError),
                           ("abc", TypeError), ((np.ones(3), None), TypeError),
                           (V(np.ones(3)), TypeError)):
            with raises(exc, "Out"):
                Out(value)(x)
        assert sys.getrefcount(x) == before and x.creator is None

    @case
    def forward_inside_no_grad_raises():
        for ctx in (no_grad, lambda: using_config("enable_backprop", False)):
            try:
                with ctx():
                    assert not Config.enable_backprop
                    RaisingForward()(V(np.ones(2)))
            except Boom:
                pass
            assert Config.enable_backprop is True
        try:
            with no_grad():
                with no_grad():
                    raise KeyError("inner")
        except KeyError:
            pass
        assert Config.enable_backprop is True
        try:
            with using_config("enable_backprop", True):
                with no_grad():
                    raise KeyError("x")
        except KeyError:
            pass
        assert Config.enable_backprop is True

    @case
    def backward_returns_wrong_number():
        for r, n in (((np.ones(3), np.ones(3)), 2), ((), 0), (lambda gy: [gy, gy, gy], 3)):
            x = V(np.ones(3))
            y = Back(r)(x)
            with raises(ValueError, str(n), "1 input"):
                y.backward()
        x0, x1 = V(np.ones(3)), V(np.ones(3))
        y = Back(lambda gy: gy)(x0, x1)
        with raises(ValueError, "2 input"):
            y.backward()

    @case
    def backward_returns_junk():
        for r in ("abc", V(np.ones(3)), [object()], {1: 2}):
            x = V(np.ones(3))
            y = Back((r,) if isinstance(r, V) else r)(x)
            with raises(TypeError):
                y.backward()

    @case
    def backward_returns_none():
        x = V(np.ones(3))
        y = Back(None)(x) * 2.0
        y.backward()
        assert x.grad is None

    @case
    def backward_wrong_shape():
        for shape in ((5, 5), (4,), (2, 4), (3, 1)):
            x = V(np.ones(3))
            y = Back(np.ones(shape))(x)
            with raises(ValueError, "shape"):
                y.backward()
            assert x.grad is None
        # A gradient NumPy-broadcast from the input shape is summed back.
        x = V(np.ones(3))
        Back(np.ones((2, 3)))(x).backward()
        same(x.grad, [2.0, 2.0, 2.0])

    @case
    def backward_raises_then_graph_is_freed():
        gc.disable()
        try:
            x = V(np.ones(3))
            a = Ident()(x)
            b = Back(Boom)(a)
            c = Ident()(a)
            d = Ident()(Ident()(c))
            root = b + d * 2.0
            refs = [weakref.ref(v) for v in (a, b, c, d)] + \
                   [weakref.ref(v.creator) for v in (a, b, c, d)]
            try:
                root.backward()
            except Boom:
                pass
            else:
                raise AssertionError("no Boom")
            del a, b, c, d, root
            alive = [r for r in refs if r() is not None]
            assert not alive, f"{len(alive)} graph objects kept alive after the error"
            assert sys.getrefcount(x) == 2
        finally:
            gc.enable()

    @case
    def not_implemented():
        with raises(NotImplementedError, "forward"):
            Function()(V(np.ones(2)))
        class NoBackward(Function):
            def forward(self, x):
                return x
        y = NoBackward()(V(np.ones(2)))
        with raises(NotImplementedError, "backward"):
            y.backward()
    ''')


def test_wrong_seed_gradients():
    run_cases(r'''
    @case
    def seed_that_cannot_fit():
        for shape in ((5,), (3, 2)):
            x = V(np.ones(3))
            y = x * 2.0
            y.grad = np.ones(shape)
            with raises(ValueError):
                y.backward()
            assert x.grad is None or x.grad.shape == (3,)

    @case
    def seed_other_dtype():
        x = V(np.ones(3))
        y = x * 2.0
        y.grad = np.ones(3, dtype=np.int64)
        y.backward()
        same(x.grad, [2.0, 2.0, 2.0])
        assert x.grad.dtype == np.float64
        s = V(np.array(2.0))
        t = s * s
        t.grad = np.array(1.0, dtype=np.float32)
        t.backward()
        same(s.grad, 4.0)
        assert s.grad.dtype == np.float64
    ''')


def test_smaller_gradient_is_handled_consistently():
    run_cases(r'''
    class Back(Function):
        def __init__(self, g):
            self.g = g
        def forward(self, x):
            return x * 2
        def backward(self, gy):
            return self.g

    @case
    def smaller_gradients():
        # _sum_to broadcasts a gradient with fewer dims up to its input;
        # a same-ndim gradient with size-1 axes must get the same treatment
        # (or both must raise).
        results = {}
        for in_shape, g_shape in (((3,), ()), ((2, 3), (1,)), ((3,), (1,)),
                                  ((2, 3), (1, 3))):
            x = V(np.ones(in_shape))
            Back(np.full(g_shape, 2.0))(x).backward()
            results[(in_shape, g_shape)] = x.grad
            same(x.grad, np.full(in_shape, 2.0))
    ''')


def test_seed_of_wrong_shape_is_rejected():
    run_cases(r'''
    @case
    def seed_larger_than_output():
        x = V(np.ones(3))
        y = x * 2.0
        y.grad = np.ones((2, 3))      # y.shape is (3,)
        with raises(ValueError, "shape"):
            y.backward()
    ''')


def test_hostile_cases_on_pure_path():
    """The same checks with FASTGRAD_PURE=1 (NumPy kernels, no C scalars)."""
    run_cases(r'''
    assert fg.PURE is True
    x = V(np.array(2.0))
    y = x * x
    assert y.creator is not None
    @case
    def pure_scalars_and_errors():
        s = V(np.array(3.0, dtype=">f8"))
        t = s * s + 1.0 / s
        t.backward()
        assert np.isclose(s.grad, 6.0 - 1.0 / 9.0)
        with raises(TypeError, "None"):
            V(None) * 2.0
        with raises(TypeError, "object"):
            V(np.array([1.0], dtype=object)) + 1.0
        with np.errstate(all="ignore"):
            z = V(np.array(1.0)) / 0.0
        assert np.isinf(z.data)
    ''', env_extra={"FASTGRAD_PURE": "1"})
