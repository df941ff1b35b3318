"""Backward is a method of the Function, and only needed gradients are computed."""
import numpy as np
import pytest

import fastgrad
import fastgrad.dezero as dz
import fastgrad.dezero.functions as F


def test_needs_input_grad_marks_engine_constants():
    x = fastgrad.Variable(np.ones(3))
    y = x * np.array([1.0, 2.0, 3.0]) + 2.0
    assert y.creator.needs_input_grad == (True, False)
    assert y.creator.inputs[0].creator.needs_input_grad == (True, False)
    f = fastgrad.Function()
    with pytest.raises(AttributeError):
        f.needs_input_grad


def test_a_constant_operand_gets_no_gradient_computed():
    class Spy(dz.Function):
        def forward(self, a, b):
            return a * b

        def backward(self, gy):
            a, b = self.inputs
            self.asked = self.needs_input_grad
            return (gy * b if self.needs_input_grad[0] else None,
                    gy * a if self.needs_input_grad[1] else None)

    x = dz.Variable(np.arange(3.0))
    f = Spy()
    y = f(x, np.full(3, 2.0))
    F.sum(y).backward()
    assert f.asked == (True, False)
    np.testing.assert_array_equal(x.grad.data, np.full(3, 2.0))


def test_graph_function_backward_arrays_is_used_without_create_graph():
    calls = []

    class Cube(dz.Function):
        def forward(self, x):
            return x ** 3

        def backward(self, gy):
            calls.append("graph")
            x, = self.inputs
            return 3 * x ** 2 * gy

        def backward_arrays(self, gy):
            calls.append("arrays")
            assert isinstance(gy, np.ndarray)
            x = self.inputs[0].data
            return 3 * x ** 2 * gy

    x = dz.Variable(np.array([1.0, 2.0]))
    Cube()(x).backward()
    np.testing.assert_array_equal(x.grad.data, [3.0, 12.0])
    assert calls == ["arrays"]
    # create_graph records the Variable formula, which differentiates again.
    x.cleargrad()
    y = Cube()(x)
    y.backward(create_graph=True)
    gx = x.grad
    x.cleargrad()
    gx.backward()
    np.testing.assert_array_equal(x.grad.data, [6.0, 12.0])
    assert calls == ["arrays", "graph"]


def test_a_user_subclass_of_a_table_op_runs_its_own_backward():
    class LoudExp(fastgrad._core.Exp):
        def backward(self, gy):
            return 2 * gy          # deliberately not exp's derivative

    x = fastgrad.Variable(np.array([0.5, 1.0]))
    LoudExp()(x).backward()
    np.testing.assert_array_equal(x.grad, [2.0, 2.0])
