"""DeZero's own unit-test checks, rewritten for fastgrad.dezero.

DeZero's repository tests each function three ways: forward values against
hand-computed or NumPy results, backward with ``dezero.utils.gradient_check``
(backprop against central differences), and a few special cases.  The checks
below do the same for the functions DeZero tests, importing only what DeZero
code imports after replacing ``dezero`` by ``fastgrad.dezero``, and add a
fourth oracle: DeZero 0.0.13 itself on the same inputs (forward, backward
with a random seed gradient, and the second-order gradients of
``create_graph=True``).
"""
import numpy as np
import pytest

import fastgrad.dezero as dezero
import fastgrad.dezero.functions as F
from fastgrad.dezero import Variable
from fastgrad.dezero.utils import array_allclose, array_equal, gradient_check

from conftest import import_dezero


@pytest.fixture(autouse=True)
def _seeded():
    # DeZero's tests draw from the global generator unseeded; seeding it
    # keeps a random input from landing next to a kink of max or relu.
    state = np.random.get_state()
    np.random.seed(0)
    yield
    np.random.set_state(state)


def randn(*shape, seed=0):
    return np.asarray(np.random.RandomState(seed).randn(*shape))


# =============================================================================
# The oracle's oracle: gradient_check must be able to fail
# =============================================================================
class TestGradientCheckCanFail:
    def test_wrong_backward_is_caught(self, capsys):
        class WrongSquare(dezero.Function):
            def forward(self, x):
                return x ** 2

            def backward(self, gy):
                x, = self.inputs
                return 3 * x * gy           # should be 2 x gy

        assert not gradient_check(lambda x: WrongSquare()(x), randn(3))
        assert "FAILED (Gradient Check)" in capsys.readouterr().out

    def test_transposed_backward_is_caught(self, capsys):
        class WrongMatMul(dezero.Function):
            def forward(self, x, W):
                return x @ W

            def backward(self, gy):
                x, W = self.inputs
                return F.matmul(gy, W.T), F.matmul(x.T, gy).T.T * 1.01

        W = Variable(randn(3, 2, seed=1))
        assert gradient_check(lambda x: WrongMatMul()(x, W), randn(4, 3))
        x = Variable(randn(4, 3))
        assert not gradient_check(lambda w: WrongMatMul()(x, w), randn(3, 2, seed=1))
        capsys.readouterr()


# =============================================================================
# Arithmetic: add, mul, sub, div, neg, pow
# =============================================================================
class TestAdd:
    def test_forward1(self):
        x0 = np.array([1, 2, 3])
        x1 = Variable(np.array([1, 2, 3]))
        y = x0 + x1
        assert array_equal(y.data, np.array([2, 4, 6]))

    def test_forward_scalar_and_broadcast(self):
        x = Variable(np.array([[1.0, 2.0], [3.0, 4.0]]))
        assert array_equal((x + 1.0).data, [[2.0, 3.0], [4.0, 5.0]])
        assert array_equal((1.0 + x).data, [[2.0, 3.0], [4.0, 5.0]])
        assert array_equal((x + np.array([10.0, 20.0])).data, [[11.0, 22.0], [13.0, 24.0]])

    @pytest.mark.parametrize("shape", [(3, 3), (3, 1), (3,), (1, 3), ()])
    def test_backward(self, shape):
        x = randn(3, 3)
        y = randn(*shape, seed=1)
        assert gradient_check(lambda x: x + y, x)
        assert gradient_check(lambda y: x + y, y)
        assert gradient_check(lambda y: Variable(x) + y, y)


class TestMul:
    def test_forward1(self):
        x0 = np.array([1, 2, 3])
        x1 = Variable(np.array([1, 2, 3]))
        y = x0 * x1
        assert array_equal(y.data, np.array([1, 4, 9]))

    @pytest.mark.parametrize("shape", [(3, 3), (3, 1), (3,), ()])
    def test_backward(self, shape):
        x = randn(3, 3)
        y = randn(*shape, seed=1)
        assert gradient_check(lambda x: x * y, x)
        assert gradient_check(lambda y: Variable(x) * y, y)
        assert gradient_check(lambda x: x * x * 3.0, x)


class TestSub:
    def test_forward1(self):
        x0 = np.array([1, 2, 3])
        x1 = Variable(np.array([1, 2, 3]))
        y = x0 - x1
        assert array_equal(y.data, np.array([0, 0, 0]))
        assert array_equal((x1 - x0).data, np.array([0, 0, 0]))
        assert array_equal((2.0 - x1).data, np.array([1.0, 0.0, -1.0]))

    @pytest.mark.parametrize("shape", [(3, 3), (3, 1), (3,)])
    def test_backward(self, shape):
        x = randn(3, 3)
        y = randn(*shape, seed=1)
        assert gradient_check(lambda x: x - y, x)
        assert gradient_check(lambda y: Variable(x) - y, y)
        assert gradient_check(lambda y: 1.5 - y, y)


class TestDiv:
    def test_forward1(self):
        x0 = np.array([1.0, 2.0, 3.0])
        x1 = Variable(np.array([2.0, 4.0, 8.0]))
        assert array_equal((x0 / x1).data, np.array([0.5, 0.5, 0.375]))
        assert array_equal((x1 / 2.0).data, np.array([1.0, 2.0, 4.0]))
        assert array_equal((1.0 / x1).data, np.array([0.5, 0.25, 0.125]))

    @pytest.mark.parametrize("shape", [(3, 3), (3, 1), (3,)])
    def test_backward(self, shape):
        x = randn(3, 3)
        y = np.abs(randn(*shape, seed=1)) + 1.0
        assert gradient_check(lambda x: x / y, x)
        assert gradient_check(lambda y: Variable(x) / y, y)
        assert gradient_check(lambda y: 2.0 / y, y)


class TestNeg:
    def test_forward(self):
        x = Variable(np.array([1.0, -2.0]))
        assert array_equal((-x).data, [-1.0, 2.0])
        assert array_equal(F.neg(x).data, [-1.0, 2.0])

    def test_backward(self):
        assert gradient_check(lambda x: -x, randn(3, 4))


class TestPow:
    def test_forward(self):
        x = Variable(np.array([1.0, 2.0, 3.0]))
        assert array_equal((x ** 2).data, [1.0, 4.0, 9.0])
        assert array_allclose((x ** 0.5).data, np.sqrt([1.0, 2.0, 3.0]))
        assert array_equal(F.pow(x, 3).data, [1.0, 8.0, 27.0])

    @pytest.mark.parametrize("c", [2, 3, -1, 0.5, 2.5])
    def test_backward(self, c):
        x = np.abs(randn(3, 4)) + 0.5
        assert gradient_check(lambda x: x ** c, x)

    def test_exponent_must_be_a_constant(self):
        x = Variable(np.array([1.0, 2.0]))
        with pytest.raises(TypeError, match="constant"):
            x ** Variable(np.array(2.0))


# =============================================================================
# Elementwise functions
# =============================================================================
ELEMENTWISE = {
    "exp": (np.exp, lambda a: a),
    "log": (np.log, lambda a: np.abs(a) + 0.1),
    "sin": (np.sin, lambda a: a),
    "cos": (np.cos, lambda a: a),
    "tanh": (np.tanh, lambda a: a),
    "sigmoid": (lambda a: 1 / (1 + np.exp(-a)), lambda a: a),
    "relu": (lambda a: np.maximum(a, 0.0), lambda a: a),
}


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
class TestElementwise:
    def test_forward(self, name):
        ref, domain = ELEMENTWISE[name]
        x = domain(randn(2, 3))
        y = getattr(F, name)(Variable(x))
        assert isinstance(y, Variable)
        np.testing.assert_allclose(y.data, ref(x), rtol=1e-14, atol=1e-15)

    def test_forward_scalar(self, name):
        ref, domain = ELEMENTWISE[name]
        x = domain(np.array(0.7))
        y = getattr(F, name)(x)             # an ndarray in, a Variable out
        assert isinstance(y, Variable) and y.shape == ()
        np.testing.assert_allclose(y.data, ref(x), rtol=1e-15)

    @pytest.mark.parametrize("shape", [(), (5,), (3, 4), (2, 3, 4)])
    def test_backward(self, name, shape):
        ref, domain = ELEMENTWISE[name]
        x = domain(randn(*shape, seed=3))
        if name == "relu":
            x = np.where(np.abs(x) < 1e-3, 0.5, x)   # away from the kink
        assert gradient_check(getattr(F, name), x)


class TestSigmoid:
    def test_forward1(self):
        x = np.array([[0, 1, 2], [0, 2, 4]], dtype=np.float64)
        y2 = F.sigmoid_simple(x)
        y = F.sigmoid(x)
        assert array_allclose(y.data, y2.data)

    def test_forward_extremes(self):
        y = F.sigmoid(np.array([-1000.0, 0.0, 1000.0]))
        assert array_equal(y.data, [0.0, 0.5, 1.0])


class TestReLU:
    def test_forward1(self):
        x = np.array([[-1, 0], [2, -3], [-2, 1]], np.float32)
        res = F.relu(x)
        ans = np.array([[0, 0], [2, 0], [0, 1]], np.float32)
        assert array_equal(res.data, ans)
        assert res.dtype == np.float32


class TestLeakyReLU:
    def test_forward1(self):
        x = np.array([[-1, 0], [2, -3], [-2, 1]], np.float32)
        res = F.leaky_relu(x)
        ans = np.array([[-0.2, 0], [2, -0.6], [-0.4, 1]], np.float32)
        assert array_allclose(res.data, ans)

    def test_backward(self):
        x = randn(3, 4)
        assert gradient_check(lambda x: F.leaky_relu(x, slope=0.1), x)


class TestClip:
    def test_forward(self):
        x = np.array([[-2.0, -0.5], [0.5, 2.0]])
        assert array_equal(F.clip(x, -1.0, 1.0).data, np.clip(x, -1.0, 1.0))

    @pytest.mark.parametrize("bounds", [(-0.5, 0.5), (-10.0, 10.0), (0.0, 1.0)])
    def test_backward(self, bounds):
        x = randn(10, 10)
        x = np.where(np.min(np.abs(x[..., None] - np.array(bounds)), axis=-1) < 1e-3, 0.3, x)
        assert gradient_check(lambda x: F.clip(x, *bounds), x)


# =============================================================================
# Shapes: reshape, transpose, sum, sum_to, broadcast_to, get_item
# =============================================================================
class TestReshape:
    def test_shape_check(self):
        x = Variable(np.random.randn(1, 2, 3))
        y = x.reshape((6,))
        y.backward(retain_grad=True)
        assert y.grad.shape == (6,)
        assert x.grad.shape == x.shape

    def test_forward(self):
        x = np.arange(6.0)
        assert array_equal(F.reshape(x, (2, 3)).data, x.reshape(2, 3))
        assert array_equal(Variable(x).reshape(3, 2).data, x.reshape(3, 2))
        assert array_equal(F.reshape(x, (-1, 2)).data, x.reshape(-1, 2))

    def test_backward(self):
        assert gradient_check(lambda x: F.reshape(x, (3, 2)), randn(2, 3))
        assert gradient_check(lambda x: F.reshape(x, (24,)), randn(2, 3, 4))
        assert gradient_check(lambda x: x.reshape(1, 6, 1), randn(2, 3))


class TestTranspose:
    def test_forward1(self):
        x = Variable(np.array([[1, 2, 3], [4, 5, 6]]))
        y = F.transpose(x)
        assert y.shape == (3, 2)

    def test_backward1(self):
        x = np.array([[1, 2, 3], [4, 5, 6]])
        assert gradient_check(F.transpose, x)

    def test_backward2(self):
        x = np.array([1, 2, 3])
        assert gradient_check(F.transpose, x)

    def test_backward3(self):
        x = np.random.randn(10, 5)
        assert gradient_check(F.transpose, x)

    def test_backward4(self):
        x = np.array([1, 2])
        assert gradient_check(F.transpose, x)

    @pytest.mark.parametrize("axes", [(1, 0, 2), (2, 0, 1), (0, 2, 1), None])
    def test_axes(self, axes):
        x = randn(2, 3, 4)
        y = F.transpose(x, axes)
        assert array_equal(y.data, np.transpose(x, axes))
        assert gradient_check(lambda x: F.transpose(x, axes), x)


class TestSum:
    def test_datatype(self):
        x = Variable(np.random.rand(10))
        y = F.sum(x)
        # DeZero's test: the result is an ndarray, not a NumPy scalar
        assert not np.isscalar(y.data)
        assert isinstance(y.data, np.ndarray)

    def test_forward1(self):
        x = Variable(np.array(2.0))
        y = F.sum(x)
        expected = np.sum(x.data)
        assert array_allclose(y.data, expected)

    def test_forward2(self):
        x = Variable(np.random.rand(10, 20, 30))
        y = F.sum(x, axis=1)
        expected = np.sum(x.data, axis=1)
        assert array_allclose(y.data, expected)

    def test_forward3(self):
        x = Variable(np.random.rand(10, 20, 30))
        y = F.sum(x, axis=1, keepdims=True)
        expected = np.sum(x.data, axis=1, keepdims=True)
        assert array_allclose(y.data, expected)

    def test_backward1(self):
        x_data = np.random.rand(10)
        f = lambda x: F.sum(x)
        assert gradient_check(f, x_data)

    def test_backward2(self):
        x_data = np.random.rand(10, 10)
        f = lambda x: F.sum(x, axis=1)
        assert gradient_check(f, x_data)

    def test_backward3(self):
        x_data = np.random.rand(10, 20, 20)
        f = lambda x: F.sum(x, axis=2)
        assert gradient_check(f, x_data)

    def test_backward4(self):
        x_data = np.random.rand(10, 20, 20)
        f = lambda x: F.sum(x, axis=None)
        assert gradient_check(f, x_data)

    @pytest.mark.parametrize("axis", [(0, 2), (-1, 0), (1,), -2])
    @pytest.mark.parametrize("keepdims", [False, True])
    def test_tuple_and_negative_axes(self, axis, keepdims):
        # DeZero 0.0.13 cannot backpropagate a tuple axis without keepdims
        # (its reshape_sum_backward tests hasattr(axis, 'len')); NumPy is
        # the oracle here.
        x = randn(2, 3, 4)
        y = F.sum(x, axis=axis, keepdims=keepdims)
        assert array_allclose(y.data, np.sum(x, axis=axis, keepdims=keepdims))
        assert y.shape == np.sum(x, axis=axis, keepdims=keepdims).shape
        assert gradient_check(lambda x: F.sum(x, axis=axis, keepdims=keepdims) ** 2, x)

    def test_method(self):
        x = Variable(randn(2, 3))
        assert array_allclose(x.sum(axis=0).data, x.data.sum(axis=0))
        assert array_allclose(x.sum(keepdims=True).data, x.data.sum(keepdims=True))


class TestSumTo:
    def test_forward1(self):
        x = Variable(np.random.rand(10))
        y = F.sum_to(x, (1,))
        expected = np.sum(x.data)
        assert array_allclose(y.data, expected)

    def test_forward2(self):
        x = Variable(np.array([[1., 2., 3.], [4., 5., 6.]]))
        y = F.sum_to(x, (1, 3))
        expected = np.sum(x.data, axis=0, keepdims=True)
        assert array_allclose(y.data, expected)

    def test_forward3(self):
        x = Variable(np.random.rand(10))
        y = F.sum_to(x, (10,))
        expected = x.data  # the same value
        assert array_allclose(y.data, expected)

    def test_forward_leading_axes(self):
        x = randn(2, 3, 4)
        assert array_allclose(F.sum_to(x, (3, 1)).data, x.sum(axis=(0, 2))[:, None])
        assert array_allclose(F.sum_to(x, ()).data, x.sum())

    def test_backward1(self):
        x_data = np.random.rand(10)
        f = lambda x: F.sum_to(x, (1,))
        assert gradient_check(f, x_data)

    def test_backward2(self):
        x_data = np.random.rand(10, 10) * 10
        f = lambda x: F.sum_to(x, (10,))
        assert gradient_check(f, x_data)

    def test_backward3(self):
        x_data = np.random.rand(10, 20, 20) * 100
        f = lambda x: F.sum_to(x, (20,))
        assert gradient_check(f, x_data)

    def test_shape_that_does_not_broadcast_back(self):
        # DeZero's own test sums (10, 20, 20) "to (10,)" and silently gets
        # shape (20,); fastgrad says the shapes do not match.
        with pytest.raises(ValueError, match="sum_to"):
            F.sum_to(np.random.rand(10, 20, 20), (10,))

    def test_backward4(self):
        x_data = np.random.rand(10)
        f = lambda x: F.sum_to(x, (10,)) + 1
        assert gradient_check(f, x_data)


class TestBroadcastTo:
    def test_forward(self):
        x = np.array([1.0, 2.0, 3.0])
        y = F.broadcast_to(x, (2, 3))
        assert array_equal(y.data, np.broadcast_to(x, (2, 3)))
        assert y.shape == (2, 3)

    @pytest.mark.parametrize("src, dst", [((3,), (2, 3)), ((2, 1), (2, 4)), ((), (3, 2)),
                                          ((1, 3, 1), (2, 3, 4))])
    def test_backward(self, src, dst):
        x = randn(*src)
        assert gradient_check(lambda x: F.broadcast_to(x, dst), x)


class TestGetItem:
    def test_forward1(self):
        x_data = np.arange(12).reshape((2, 2, 3))
        x = Variable(x_data)
        y = F.get_item(x, 0)
        assert array_allclose(y.data, x_data[0])

    def test_forward1a(self):
        x_data = np.arange(12).reshape((2, 2, 3))
        x = Variable(x_data)
        y = x[0]
        assert array_allclose(y.data, x_data[0])

    def test_forward2(self):
        x_data = np.arange(12).reshape((2, 2, 3))
        x = Variable(x_data)
        y = F.get_item(x, (0, 0, slice(0, 2, 1)))
        assert array_allclose(y.data, x_data[0, 0, 0:2:1])

    def test_forward3(self):
        x_data = np.arange(12).reshape((2, 2, 3))
        x = Variable(x_data)
        y = F.get_item(x, (Ellipsis, 2))
        assert array_allclose(y.data, x_data[..., 2])

    def test_backward1(self):
        x_data = np.array([[1, 2, 3], [4, 5, 6]])
        slices = 1
        f = lambda x: F.get_item(x, slices)
        assert gradient_check(f, x_data)

    def test_backward2(self):
        x_data = np.arange(12).reshape(4, 3)
        slices = slice(1, 3)
        f = lambda x: F.get_item(x, slices)
        assert gradient_check(f, x_data)

    @pytest.mark.parametrize("slices", [
        np.array([0, 0, 2]), (slice(None), np.array([1, 1])), (np.array([0, 1]), np.array([2, 2])),
        (slice(None, None, -1), 0), (Ellipsis, None, 1), np.array([True, False, True, True])])
    def test_backward_fancy(self, slices):
        # repeated indices must add up their gradients (np.add.at)
        x = randn(4, 3)
        assert array_equal(F.get_item(x, slices).data, x[slices])
        assert gradient_check(lambda x: F.get_item(x, slices) ** 2, x)


# =============================================================================
# matmul, linear
# =============================================================================
class TestMatmul:
    def test_forward1(self):
        x = Variable(np.array([[1, 2, 3], [4, 5, 6]]))
        w = x.T
        y = F.matmul(x, w)
        res = y.data
        expected = np.array([[14, 32], [32, 77]])
        assert array_allclose(res, expected)

    def test_backward1(self):
        x = np.random.randn(3, 2)
        w = np.random.randn(2, 3)
        f = lambda x: F.matmul(x, Variable(w))
        assert gradient_check(f, x)

    def test_backward2(self):
        x_data = np.random.randn(10, 1)
        w_data = np.random.randn(1, 5)
        f = lambda w: F.matmul(Variable(x_data), w)
        assert gradient_check(f, w_data)

    def test_operator_and_methods(self):
        a, b = randn(2, 3), randn(3, 4, seed=1)
        for y in (Variable(a) @ b, a @ Variable(b), Variable(a).matmul(b),
                  Variable(a).dot(Variable(b))):
            assert array_allclose(y.data, a @ b)


class TestLinear:
    def test_forward1(self):
        x = Variable(np.array([[1, 2, 3], [4, 5, 6]]))
        w = Variable(x.data.T)
        b = None
        y = F.linear(x, w, b)
        res = y.data
        expected = np.array([[14, 32], [32, 77]])
        assert array_allclose(res, expected)

    def test_forward2(self):
        x = np.array([[1, 2, 3], [4, 5, 6]]).astype('f')
        W = x.T
        b = None
        y = F.linear(x, W, b)
        cy = x @ W
        assert array_allclose(y.data, cy)

    def test_forward3(self):
        layer_x = np.random.randn(5, 4)
        W = np.random.randn(4, 3)
        b = np.random.randn(3)
        y = F.linear(layer_x, W, b)
        assert array_allclose(y.data, layer_x @ W + b)
        assert array_allclose(y.data, F.linear_simple(layer_x, W, b).data)

    def test_backward1(self):
        x = np.random.randn(3, 2)
        W = np.random.randn(2, 3)
        b = np.random.randn(3)
        f = lambda x: F.linear(x, W, b)
        assert gradient_check(f, x)

    def test_backward2(self):
        # DeZero's test uses (100, 200) @ (200, 300): 20000 finite
        # differences of a matmul, minutes on a small machine
        x = np.random.randn(20, 40)
        W = np.random.randn(40, 30)
        b = None
        f = lambda x: F.linear(x, W, b)
        assert gradient_check(f, x)

    def test_backward_wrt_W_and_b(self):
        x = randn(4, 3)
        W = randn(3, 2, seed=1)
        b = randn(2, seed=2)
        assert gradient_check(lambda W: F.linear(x, W, Variable(b)), W)
        assert gradient_check(lambda b: F.linear(x, Variable(W), b), b)
        assert gradient_check(lambda b: F.linear_simple(x, Variable(W), b), b)


# =============================================================================
# max, min
# =============================================================================
class TestMax:
    def test_forward1(self):
        x = Variable(np.random.rand(10))
        y = F.max(x)
        expected = np.max(x.data)
        assert array_allclose(y.data, expected)

    def test_forward2(self):
        shape = (10, 20, 30)
        axis = 1
        x = Variable(np.random.rand(*shape))
        y = F.max(x, axis=axis)
        expected = np.max(x.data, axis=axis)
        assert array_allclose(y.data, expected)

    def test_forward3(self):
        shape = (10, 20, 30)
        axis = (0, 1)
        x = Variable(np.random.rand(*shape))
        y = F.max(x, axis=axis)
        expected = np.max(x.data, axis=axis)
        assert array_allclose(y.data, expected)

    def test_forward4(self):
        shape = (10, 20, 30)
        axis = (0, 1)
        x = Variable(np.random.rand(*shape))
        y = F.max(x, axis=axis, keepdims=True)
        expected = np.max(x.data, axis=axis, keepdims=True)
        assert array_allclose(y.data, expected)

    def test_backward1(self):
        x_data = np.random.rand(10)
        f = lambda x: F.max(x)
        assert gradient_check(f, x_data)

    def test_backward2(self):
        x_data = np.random.rand(10, 10) * 100
        f = lambda x: F.max(x, axis=1)
        assert gradient_check(f, x_data)

    def test_backward3(self):
        x_data = np.random.rand(10, 20, 30) * 100
        f = lambda x: F.max(x, axis=(1, 2))
        assert gradient_check(f, x_data)

    def test_backward4(self):
        x_data = np.random.rand(10, 20, 20) * 100
        f = lambda x: F.sum(F.max(x, axis=None))
        assert gradient_check(f, x_data)

    def test_backward5(self):
        x_data = np.random.rand(10, 20, 20) * 100
        f = lambda x: F.sum(F.max(x, axis=None, keepdims=True))
        assert gradient_check(f, x_data)

    def test_method(self):
        x = Variable(randn(3, 4))
        assert array_equal(x.max(axis=1).data, x.data.max(axis=1))
        assert array_equal(x.min(axis=0, keepdims=True).data, x.data.min(axis=0, keepdims=True))


class TestMin:
    @pytest.mark.parametrize("axis, keepdims", [(None, False), (1, False), ((0, 2), True),
                                                (-1, True)])
    def test_forward_backward(self, axis, keepdims):
        x = np.random.RandomState(5).rand(4, 5, 6) * 100
        y = F.min(x, axis=axis, keepdims=keepdims)
        assert array_equal(y.data, np.min(x, axis=axis, keepdims=keepdims))
        assert gradient_check(lambda x: F.min(x, axis=axis, keepdims=keepdims), x)


# =============================================================================
# softmax, log_softmax, losses
# =============================================================================
def softmax_numpy(x, axis=1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


class TestSoftmax:
    def test_forward1(self):
        x = np.array([[0, 1, 2], [0, 2, 4]], np.float32)
        y2 = F.softmax_simple(x)
        y = F.softmax(x)
        assert array_allclose(y.data, y2.data)

    def test_forward2(self):
        np.random.seed(0)
        x = np.random.rand(10, 10).astype('f')
        y2 = F.softmax_simple(x)
        y = F.softmax(x)
        assert array_allclose(y.data, y2.data)

    def test_forward3(self):
        np.random.seed(0)
        x = np.random.rand(10, 10, 10).astype('f')
        y2 = F.softmax_simple(x)
        y = F.softmax(x)
        assert array_allclose(y.data, y2.data)

    def test_forward_numpy_and_large_values(self):
        x = np.array([[1000.0, 1001.0, 1002.0], [-1000.0, 0.0, 1000.0]])
        np.testing.assert_allclose(F.softmax(x).data, softmax_numpy(x), rtol=1e-15)
        np.testing.assert_allclose(F.softmax(x, axis=0).data, softmax_numpy(x, 0), rtol=1e-15)

    def test_backward1(self):
        x_data = np.array([[0, 1, 2], [0, 2, 4]])
        f = lambda x: F.softmax(x, axis=1)
        assert gradient_check(f, x_data)

    def test_backward2(self):
        np.random.seed(0)
        x_data = np.random.rand(10, 10)
        f = lambda x: F.softmax(x, axis=1)
        assert gradient_check(f, x_data)

    def test_backward3(self):
        np.random.seed(0)
        x_data = np.random.rand(10, 10, 10)
        f = lambda x: F.softmax(x, axis=1)
        assert gradient_check(f, x_data)

    def test_backward_weighted(self):
        # a plain sum of softmax is constant: weight it so the check can fail
        w = randn(4, 5, seed=1)
        assert gradient_check(lambda x: F.softmax(x, axis=1) * w, randn(4, 5))
        assert gradient_check(lambda x: F.softmax(x, axis=0) * w, randn(4, 5))
        assert gradient_check(lambda x: F.softmax_simple(x) * w, randn(4, 5))


class TestLogSoftmax:
    def test_forward1(self):
        x = np.array([[-1, 0, 1, 2], [2, 0, 1, -1]], np.float32)
        y = F.log_softmax(x)
        y2 = F.log(F.softmax(x))
        res = array_allclose(y.data, y2.data)
        assert res

    def test_forward_large_values(self):
        x = np.array([[1000.0, 0.0, -1000.0]])
        np.testing.assert_allclose(F.log_softmax(x).data, [[0.0, -1000.0, -2000.0]])

    def test_backward1(self):
        x = np.array([[-1, 0, 1, 2], [2, 0, 1, -1]])
        w = randn(2, 4, seed=1)
        f = lambda x: F.log_softmax(x) * w
        assert gradient_check(f, x)

    def test_backward2(self):
        x = np.random.randn(10, 10)
        w = randn(10, 10, seed=1)
        f = lambda x: F.log_softmax(x) * w
        assert gradient_check(f, x)


class TestSoftmaxCrossEntropy:
    def test_forward1(self):
        x = np.array([[-1, 0, 1, 2], [2, 0, 1, -1]], np.float32)
        t = np.array([3, 0]).astype(np.int32)
        y = F.softmax_cross_entropy(x, t)
        y2 = F.softmax_cross_entropy_simple(x, t)
        res = array_allclose(y.data, y2.data)
        assert res

    def test_forward_numpy(self):
        x = randn(5, 4)
        t = np.array([0, 3, 1, 1, 2])
        p = softmax_numpy(x)
        want = -np.mean(np.log(p[np.arange(5), t]))
        np.testing.assert_allclose(F.softmax_cross_entropy(x, t).data, want, rtol=1e-14)

    def test_backward1(self):
        x = np.array([[-1, 0, 1, 2], [2, 0, 1, -1]], np.float32)
        t = np.array([3, 0]).astype(np.int32)
        f = lambda x: F.softmax_cross_entropy(x, Variable(t))
        assert gradient_check(f, x)

    def test_backward2(self):
        N, CLS_NUM = 10, 10
        x = np.random.randn(N, CLS_NUM)
        t = np.random.randint(0, CLS_NUM, (N,))
        f = lambda x: F.softmax_cross_entropy(x, t)
        assert gradient_check(f, x)

    def test_backward3(self):
        N, CLS_NUM = 100, 10
        x = np.random.randn(N, CLS_NUM)
        t = np.random.randint(0, CLS_NUM, (N,))
        f = lambda x: F.softmax_cross_entropy(x, t)
        assert gradient_check(f, x)

    def test_backward_simple(self):
        x = randn(6, 3)
        t = np.array([0, 1, 2, 2, 1, 0])
        assert gradient_check(lambda x: F.softmax_cross_entropy_simple(x, t), x)


class TestMeanSquaredError:
    def test_forward1(self):
        x0 = np.array([0.0, 1.0, 2.0])
        x1 = np.array([0.0, 1.0, 2.0])
        expected = ((x0 - x1) ** 2).sum() / x0.size
        y = F.mean_squared_error(x0, x1)
        assert array_allclose(y.data, expected)

    def test_forward_numpy(self):
        x0, x1 = randn(10, 2), randn(10, 2, seed=1)
        # DeZero's definition: divided by len (the batch), not by size
        want = np.sum((x0 - x1) ** 2) / 10
        np.testing.assert_allclose(F.mean_squared_error(x0, x1).data, want, rtol=1e-15)
        np.testing.assert_allclose(F.mean_squared_error_simple(x0, x1).data, want, rtol=1e-15)

    def test_backward1(self):
        x0 = np.random.rand(10)
        x1 = np.random.rand(10)
        f = lambda x0: F.mean_squared_error(x0, x1)
        assert gradient_check(f, x0)

    def test_backward2(self):
        x0 = np.random.rand(100)
        x1 = np.random.rand(100)
        f = lambda x0: F.mean_squared_error(x0, x1)
        assert gradient_check(f, x0)

    def test_backward_second_argument(self):
        x0 = np.random.rand(10, 3)
        x1 = np.random.rand(10, 3)
        assert gradient_check(lambda x1: F.mean_squared_error(Variable(x0), x1), x1)
        assert gradient_check(lambda x1: F.mean_squared_error_simple(Variable(x0), x1), x1)


# =============================================================================
# Everything again against DeZero 0.0.13 itself, on the same inputs
# =============================================================================
def _labels():
    return np.array([2, 0, 1, 2])


# name -> (call(F, *vars), input arrays); each call takes the module F so
# the very same expression runs on both libraries.
AGAINST_DEZERO = {
    "add": (lambda F, a, b: a + b, [randn(3, 4), randn(4, seed=1)]),
    "add_scalar": (lambda F, a: 2.0 + a + 1.0, [randn(3, 4)]),
    "mul": (lambda F, a, b: a * b, [randn(3, 4), randn(3, 1, seed=1)]),
    "sub": (lambda F, a, b: a - b - 1.0, [randn(3, 4), randn(1, 4, seed=1)]),
    "rsub": (lambda F, a: 1.0 - a, [randn(3, 4)]),
    "div": (lambda F, a, b: a / b, [randn(3, 4), np.abs(randn(4, seed=1)) + 1]),
    "rdiv": (lambda F, a: 2.0 / a, [np.abs(randn(3, 4)) + 1]),
    "pow2": (lambda F, a: a ** 2, [randn(3, 4)]),
    "pow3": (lambda F, a: a ** 3, [randn(3, 4)]),
    "pow_half": (lambda F, a: a ** 0.5, [np.abs(randn(3, 4)) + 0.5]),
    "neg": (lambda F, a: -a, [randn(3, 4)]),
    "exp": (lambda F, a: F.exp(a), [randn(3, 4)]),
    "log": (lambda F, a: F.log(a), [np.abs(randn(3, 4)) + 0.5]),
    "sin": (lambda F, a: F.sin(a), [randn(3, 4)]),
    "cos": (lambda F, a: F.cos(a), [randn(3, 4)]),
    "tanh": (lambda F, a: F.tanh(a), [randn(3, 4)]),
    "sigmoid": (lambda F, a: F.sigmoid(a), [randn(3, 4)]),
    "relu": (lambda F, a: F.relu(a) * a, [randn(3, 4)]),
    "leaky_relu": (lambda F, a: F.leaky_relu(a, 0.1) * a, [randn(3, 4)]),
    "clip": (lambda F, a: F.clip(a, -0.5, 0.5) * a, [randn(3, 4)]),
    "reshape": (lambda F, a: F.reshape(a, (4, 3)) ** 2, [randn(3, 4)]),
    "transpose": (lambda F, a: F.transpose(a) ** 2, [randn(3, 4)]),
    "transpose_axes": (lambda F, a: F.transpose(a, (2, 0, 1)) ** 2, [randn(2, 3, 4)]),
    "sum": (lambda F, a: F.sum(a ** 2), [randn(3, 4)]),
    "sum_axis": (lambda F, a: F.sum(a ** 2, axis=1), [randn(3, 4)]),
    "sum_keepdims": (lambda F, a: F.sum(a ** 2, axis=0, keepdims=True), [randn(3, 4)]),
    "sum_to": (lambda F, a: F.sum_to(a ** 2, (1, 4)), [randn(3, 4)]),
    "broadcast_to": (lambda F, a: F.broadcast_to(a, (3, 4)) ** 2, [randn(1, 4)]),
    "matmul": (lambda F, a, b: F.matmul(a, b) ** 2, [randn(3, 4), randn(4, 2, seed=1)]),
    "linear": (lambda F, a, W, b: F.linear(a, W, b) ** 2,
               [randn(3, 4), randn(4, 2, seed=1), randn(2, seed=2)]),
    "linear_nobias": (lambda F, a, W: F.linear(a, W) ** 2, [randn(3, 4), randn(4, 2, seed=1)]),
    "linear_simple": (lambda F, a, W, b: F.linear_simple(a, W, b) ** 2,
                      [randn(3, 4), randn(4, 2, seed=1), randn(2, seed=2)]),
    "get_item": (lambda F, a: F.get_item(a, 1) ** 2, [randn(3, 4)]),
    "get_item_fancy": (lambda F, a: F.get_item(a, np.array([0, 0, 2])) ** 2, [randn(3, 4)]),
    "get_item_slice": (lambda F, a: a[:, 1:3] ** 2, [randn(3, 4)]),
    "max": (lambda F, a: F.max(a, axis=1) ** 2, [randn(3, 4)]),
    "max_all": (lambda F, a: F.max(a) * a, [randn(3, 4)]),
    "min": (lambda F, a: F.min(a, axis=0, keepdims=True) ** 2, [randn(3, 4)]),
    "softmax": (lambda F, a: F.softmax(a) * a, [randn(3, 4)]),
    "softmax_axis0": (lambda F, a: F.softmax(a, axis=0) * a, [randn(3, 4)]),
    "softmax_simple": (lambda F, a: F.softmax_simple(a) * a, [randn(3, 4)]),
    "log_softmax": (lambda F, a: F.log_softmax(a) * a, [randn(4, 3)]),
    "softmax_cross_entropy": (lambda F, a: F.softmax_cross_entropy(a, _labels()),
                              [randn(4, 3)]),
    "softmax_cross_entropy_simple": (
        lambda F, a: F.softmax_cross_entropy_simple(a, _labels()), [randn(4, 3)]),
    "mean_squared_error": (lambda F, a, b: F.mean_squared_error(a, b),
                           [randn(5, 2), randn(5, 2, seed=1)]),
    "mean_squared_error_simple": (lambda F, a, b: F.mean_squared_error_simple(a, b),
                                  [randn(5, 2), randn(5, 2, seed=1)]),
    "sigmoid_simple": (lambda F, a: F.sigmoid_simple(a), [randn(3, 4)]),
}

# Where fastgrad's documented kernels may round differently from NumPy
# (x ** c on arrays for c other than 2: within 4 ulp), or where fastgrad
# computes the same value by a different, equally accurate route.
CLOSE_ONLY = {"pow3", "pow_half"}


@pytest.fixture(scope="module")
def dezero_F():
    import_dezero("dezero")
    return import_dezero("dezero.functions")


def run_case(V, Fmod, call, arrays):
    """Forward, backward with a random seed gradient, then the gradient of
    ``sum(sum of squared grads)`` through ``create_graph=True``."""
    xs = [V(a.copy()) for a in arrays]
    y = call(Fmod, *xs)
    seed = randn(*y.shape, seed=7)
    y.grad = V(seed)
    y.backward(create_graph=True)
    grads = [x.grad for x in xs]
    first = [y.data] + [g.data.copy() for g in grads]
    for x in xs:
        x.cleargrad()
    z = grads[0] * grads[0]
    for g in grads[1:]:
        z = Fmod.sum(z) + Fmod.sum(g * g)
    Fmod.sum(z).backward()
    second = [np.zeros_like(x.data) if x.grad is None else x.grad.data for x in xs]
    return first, second


@pytest.mark.parametrize("name", sorted(AGAINST_DEZERO))
def test_against_dezero(dezero_F, name):
    dz = import_dezero("dezero")
    call, arrays = AGAINST_DEZERO[name]
    ours = run_case(Variable, F, call, arrays)
    theirs = run_case(dz.Variable, dezero_F, call, arrays)
    for which, a_list, b_list in zip(("first order", "second order"), ours, theirs):
        for i, (a, b) in enumerate(zip(a_list, b_list)):
            assert np.shape(a) == np.shape(b), (which, i)
            if name in CLOSE_ONLY:
                np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-300,
                                           err_msg=f"{which} {i}")
            else:
                np.testing.assert_array_equal(a, b, err_msg=f"{which} {i}")


@pytest.mark.parametrize("name", sorted(AGAINST_DEZERO))
def test_gradient_check_of_every_case(name):
    call, arrays = AGAINST_DEZERO[name]
    for i in range(len(arrays)):
        def f(v, i=i):
            xs = [Variable(a) for a in arrays]
            xs[i] = v
            return call(F, *xs)
        assert gradient_check(f, arrays[i]), (name, i)
