"""fastgrad.functions: values against NumPy, gradients against finite differences.

Each case gives the op on Variables and the same computation in plain NumPy;
the NumPy expression is the oracle for the forward value, and central finite
differences of it (in float64) for every input's gradient.  The grid covers
0-d to 3-d shapes, broadcast pairs, float32 and float64, strided /
transposed / read-only inputs, and both faces: ``fastgrad`` (grads are
ndarrays) and ``fastgrad.dezero`` (grads are Variables, differentiable again).
"""
import weakref

import numpy as np
import pytest

from conftest import layout, numerical_grad

import fastgrad
import fastgrad.dezero as fdz
import fastgrad.functions as F

RNG = np.random.default_rng(12345)
FACES = ["full", "stage2"]


def variable_class(face):
    return fdz.Variable if face.startswith("full") else fastgrad.Variable


def grad_array(v, face):
    g = v.grad
    assert g is not None
    if face.startswith("full"):
        assert isinstance(g, fdz.Variable), type(g)
        return g.data
    assert type(g) is np.ndarray, type(g)
    return g



# ------------------------------------------------------------ NumPy oracles

def np_softmax(a, axis=1):
    e = np.exp(a - a.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def np_log_softmax(a, axis=1):
    m = a.max(axis=axis, keepdims=True)
    return a - m - np.log(np.exp(a - m).sum(axis=axis, keepdims=True))


def np_sigmoid(a):
    return 1 / (1 + np.exp(-a))


def np_sum_to(a, shape):
    lead = a.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, s in enumerate(shape) if s == 1)
    return a.sum(axis=axes, keepdims=True).reshape(shape)


LABELS = np.array([0, 2, 1, 2])
BIN_T = np.array([1.0, 0.0, 1.0, 0.0])
W_CONST = RNG.standard_normal((3, 4))


class Case:
    def __init__(self, name, op, ref, shapes, sample="normal", rtol32=2e-2):
        self.name, self.op, self.ref, self.shapes = name, op, ref, shapes
        self.sample = sample
        self.rtol32 = rtol32

    def arrays(self, dtype, rng):
        out = []
        for s in self.shapes:
            if self.sample == "prob":
                a = rng.uniform(0.05, 0.95, size=s)
            else:
                # distinct values: max/min have no ties, so finite differences hold
                a = rng.permutation(np.linspace(-2.0, 2.0, int(np.prod(s)) or 1))[
                    :int(np.prod(s))].reshape(s) + rng.uniform(-0.01, 0.01, size=s)
            out.append(np.asarray(a, dtype=dtype))
        return out

    def __repr__(self):
        return self.name


IDX_REPEAT = (slice(None), [1, 1, 3, 0, 1])
MASK = np.array([[True, False, True, False], [False, False, True, True],
                 [True, True, True, False]])

CASES = [
    # reshape / flatten / expand_dims
    Case("reshape_2x3_to_3x2", lambda x: F.reshape(x, (3, 2)), lambda a: a.reshape(3, 2), [(2, 3)]),
    Case("reshape_-1", lambda x: F.reshape(x, (-1,)), lambda a: a.reshape(-1), [(2, 3, 4)]),
    Case("reshape_list", lambda x: F.reshape(x, [4, 1, 6]), lambda a: a.reshape(4, 1, 6), [(2, 3, 4)]),
    Case("reshape_0d", lambda x: F.reshape(x, (1, 1)), lambda a: a.reshape(1, 1), [()]),
    Case("reshape_to_0d", lambda x: F.reshape(x, ()), lambda a: a.reshape(()), [(1,)]),
    Case("flatten", F.flatten, lambda a: a.reshape(a.shape[0], -1), [(2, 3, 4)]),
    Case("flatten_1d", F.flatten, lambda a: a.reshape(a.shape[0], -1), [(5,)]),
    Case("expand_dims_0", lambda x: F.expand_dims(x, 0), lambda a: np.expand_dims(a, 0), [(2, 3)]),
    Case("expand_dims_1", lambda x: F.expand_dims(x, 1), lambda a: np.expand_dims(a, 1), [(2, 3)]),
    Case("expand_dims_-1", lambda x: F.expand_dims(x, -1), lambda a: np.expand_dims(a, -1), [(2, 3)]),
    Case("expand_dims_0d", lambda x: F.expand_dims(x, 0), lambda a: np.expand_dims(a, 0), [()]),
    # transpose
    Case("transpose_2d", F.transpose, lambda a: a.T, [(2, 3)]),
    Case("transpose_3d", F.transpose, lambda a: a.transpose(), [(2, 3, 4)]),
    Case("transpose_axes", lambda x: F.transpose(x, (1, 2, 0)), lambda a: a.transpose(1, 2, 0), [(2, 3, 4)]),
    Case("transpose_neg_axes", lambda x: F.transpose(x, (-1, 0, 1)), lambda a: a.transpose(2, 0, 1),
         [(2, 3, 4)]),
    Case("transpose_0d", F.transpose, lambda a: a.T, [()]),
    Case("transpose_1d", F.transpose, lambda a: a.T, [(5,)]),
    # get_item: basic, fancy, boolean
    Case("getitem_int", lambda x: F.get_item(x, 1), lambda a: a[1], [(3, 4)]),
    Case("getitem_scalar", lambda x: F.get_item(x, (1, 2)), lambda a: a[1, 2], [(3, 4)]),
    Case("getitem_slice", lambda x: F.get_item(x, slice(0, 2)), lambda a: a[0:2], [(3, 4)]),
    Case("getitem_step", lambda x: F.get_item(x, (slice(None, None, -2), slice(1, 3))),
         lambda a: a[::-2, 1:3], [(3, 4)]),
    Case("getitem_ellipsis_newaxis", lambda x: F.get_item(x, (Ellipsis, None, 1)),
         lambda a: a[..., None, 1], [(2, 3, 4)]),
    Case("getitem_fancy_repeat", lambda x: F.get_item(x, [0, 0, 2, 0]), lambda a: a[[0, 0, 2, 0]],
         [(3, 4)]),
    Case("getitem_fancy_cols_repeat", lambda x: F.get_item(x, IDX_REPEAT), lambda a: a[IDX_REPEAT],
         [(3, 4)]),
    Case("getitem_fancy_pairs", lambda x: F.get_item(x, (np.array([0, 2, 0]), np.array([1, 1, 1]))),
         lambda a: a[np.array([0, 2, 0]), np.array([1, 1, 1])], [(3, 4)]),
    Case("getitem_fancy_2d_index", lambda x: F.get_item(x, np.array([[0, 1], [1, 1]])),
         lambda a: a[np.array([[0, 1], [1, 1]])], [(3, 4)]),
    Case("getitem_bool_mask", lambda x: F.get_item(x, MASK), lambda a: a[MASK], [(3, 4)]),
    Case("getitem_bool_rows", lambda x: F.get_item(x, np.array([True, False, True])),
         lambda a: a[np.array([True, False, True])], [(3, 4)]),
    Case("getitem_neg", lambda x: F.get_item(x, (-1, slice(None))), lambda a: a[-1, :], [(3, 4)]),
    # broadcast_to / sum_to
    Case("broadcast_row", lambda x: F.broadcast_to(x, (2, 3)), lambda a: np.broadcast_to(a, (2, 3)),
         [(3,)]),
    Case("broadcast_col", lambda x: F.broadcast_to(x, (2, 4)), lambda a: np.broadcast_to(a, (2, 4)),
         [(2, 1)]),
    Case("broadcast_0d", lambda x: F.broadcast_to(x, (2, 2)), lambda a: np.broadcast_to(a, (2, 2)),
         [()]),
    Case("broadcast_3d", lambda x: F.broadcast_to(x, (4, 2, 3)),
         lambda a: np.broadcast_to(a, (4, 2, 3)), [(1, 3)]),
    Case("sum_to_row", lambda x: F.sum_to(x, (3,)), lambda a: np_sum_to(a, (3,)), [(2, 3)]),
    Case("sum_to_keep", lambda x: F.sum_to(x, (1, 3)), lambda a: np_sum_to(a, (1, 3)), [(2, 3)]),
    Case("sum_to_col", lambda x: F.sum_to(x, (2, 1)), lambda a: np_sum_to(a, (2, 1)), [(4, 2, 3)]),
    Case("sum_to_0d", lambda x: F.sum_to(x, ()), lambda a: np_sum_to(a, ()), [(2, 3)]),
    # sum / average / mean
    Case("sum_all", F.sum, np.sum, [(2, 3, 4)]),
    Case("sum_0d", F.sum, np.sum, [()]),
    Case("sum_1d", F.sum, np.sum, [(5,)]),
    Case("sum_axis0", lambda x: F.sum(x, axis=0), lambda a: a.sum(axis=0), [(2, 3)]),
    Case("sum_axis1", lambda x: F.sum(x, 1), lambda a: a.sum(axis=1), [(2, 3, 4)]),
    Case("sum_axis-1_keep", lambda x: F.sum(x, -1, True), lambda a: a.sum(-1, keepdims=True),
         [(2, 3, 4)]),
    Case("sum_tuple", lambda x: F.sum(x, (0, 2)), lambda a: a.sum(axis=(0, 2)), [(2, 3, 4)]),
    Case("sum_tuple_keep", lambda x: F.sum(x, (2, 0), keepdims=True),
         lambda a: a.sum(axis=(0, 2), keepdims=True), [(2, 3, 4)]),
    Case("sum_list_axis", lambda x: F.sum(x, [0, 1]), lambda a: a.sum(axis=(0, 1)), [(2, 3)]),
    Case("sum_all_keep", lambda x: F.sum(x, keepdims=True), lambda a: a.sum(keepdims=True), [(2, 3)]),
    Case("average_all", F.average, np.mean, [(2, 3)]),
    Case("mean_axis", lambda x: F.mean(x, axis=1), lambda a: a.mean(axis=1), [(2, 3, 4)]),
    Case("mean_keep", lambda x: F.mean(x, axis=(0, 2), keepdims=True),
         lambda a: a.mean(axis=(0, 2), keepdims=True), [(2, 3, 4)]),
    # max / min
    Case("max_all", F.max, np.max, [(3, 4)]),
    Case("max_0d", F.max, np.max, [()]),
    Case("max_axis0", lambda x: F.max(x, axis=0), lambda a: a.max(axis=0), [(3, 4)]),
    Case("max_axis1_keep", lambda x: F.max(x, 1, True), lambda a: a.max(1, keepdims=True), [(2, 3, 4)]),
    Case("max_neg_axis", lambda x: F.max(x, -1), lambda a: a.max(axis=-1), [(2, 3, 4)]),
    Case("max_tuple", lambda x: F.max(x, (0, 2)), lambda a: a.max(axis=(0, 2)), [(2, 3, 4)]),
    Case("min_all", F.min, np.min, [(3, 4)]),
    Case("min_axis1", lambda x: F.min(x, axis=1), lambda a: a.min(axis=1), [(3, 4)]),
    Case("min_tuple_keep", lambda x: F.min(x, (-1, 0), keepdims=True),
         lambda a: a.min(axis=(0, 2), keepdims=True), [(2, 3, 4)]),
    # matmul / linear
    Case("matmul_2d", F.matmul, np.matmul, [(2, 3), (3, 4)]),
    Case("matmul_vec_mat", F.matmul, np.matmul, [(3,), (3, 4)]),
    Case("matmul_mat_vec", F.matmul, np.matmul, [(2, 3), (3,)]),
    Case("matmul_vec_vec", F.matmul, np.matmul, [(3,), (3,)]),
    Case("matmul_batch", F.matmul, np.matmul, [(5, 2, 3), (5, 3, 4)]),
    Case("matmul_batch_bcast", F.matmul, np.matmul, [(2, 2, 3), (3, 4)]),
    Case("matmul_bcast_batch", F.matmul, np.matmul, [(2, 3), (2, 3, 4)]),
    Case("matmul_batch_1", F.matmul, np.matmul, [(1, 2, 3), (4, 3, 2)]),
    Case("matmul_const_W", lambda x: F.matmul(x, W_CONST.astype(x.dtype)), lambda a: a @ W_CONST, [(2, 3)]),
    Case("linear_b", F.linear, lambda a, w, b: a @ w + b, [(2, 3), (3, 4), (4,)]),
    Case("linear_b_2d", F.linear, lambda a, w, b: a @ w + b, [(2, 3), (3, 4), (2, 4)]),
    Case("linear_b_row", F.linear, lambda a, w, b: a @ w + b, [(2, 3), (3, 4), (1, 4)]),
    Case("linear_no_b", F.linear, lambda a, w: a @ w, [(2, 3), (3, 4)]),
    Case("linear_batch", F.linear, lambda a, w, b: a @ w + b, [(5, 2, 3), (3, 4), (4,)]),
    Case("linear_simple_b", F.linear_simple, lambda a, w, b: a @ w + b, [(2, 3), (3, 4), (4,)]),
    Case("linear_simple_no_b", F.linear_simple, lambda a, w: a @ w, [(2, 3), (3, 4)]),
    # activations
    Case("sigmoid_simple", F.sigmoid_simple, np_sigmoid, [(2, 3)]),
    Case("sigmoid_simple_0d", F.sigmoid_simple, np_sigmoid, [()]),
    Case("softmax", F.softmax, np_softmax, [(2, 3)]),
    Case("softmax_axis0", lambda x: F.softmax(x, axis=0), lambda a: np_softmax(a, 0), [(2, 3)]),
    Case("softmax_3d_-1", lambda x: F.softmax(x, -1), lambda a: np_softmax(a, -1), [(2, 3, 4)]),
    Case("softmax_tuple", lambda x: F.softmax(x, (1, 2)), lambda a: np_softmax(a, (1, 2)), [(2, 3, 4)]),
    Case("softmax_simple", F.softmax_simple, np_softmax, [(2, 3)]),
    Case("softmax_simple_axis0", lambda x: F.softmax_simple(x, 0), lambda a: np_softmax(a, 0), [(3, 2)]),
    Case("log_softmax", F.log_softmax, np_log_softmax, [(2, 3)]),
    Case("log_softmax_3d", lambda x: F.log_softmax(x, axis=2), lambda a: np_log_softmax(a, 2),
         [(2, 3, 4)]),
    Case("log_softmax_axis0", lambda x: F.log_softmax(x, 0), lambda a: np_log_softmax(a, 0), [(4, 3)]),
    # losses
    Case("mse", F.mean_squared_error, lambda a, b: np.sum((a - b) ** 2) / len(a - b), [(5,), (5,)]),
    Case("mse_2d", F.mean_squared_error, lambda a, b: np.sum((a - b) ** 2) / len(a - b),
         [(4, 3), (4, 3)]),
    Case("mse_bcast", F.mean_squared_error, lambda a, b: np.sum((a - b) ** 2) / len(a - b),
         [(4, 3), (3,)]),
    Case("mse_bcast_col", F.mean_squared_error, lambda a, b: np.sum((a - b) ** 2) / len(a - b),
         [(4, 1), (4, 3)]),
    Case("mse_simple", F.mean_squared_error_simple, lambda a, b: np.sum((a - b) ** 2) / len(a - b),
         [(4, 3), (4, 3)]),
    Case("mse_const", lambda x: F.mean_squared_error(x, np.ones((4, 3), x.dtype)),
         lambda a: np.sum((a - 1) ** 2) / 4, [(4, 3)]),
    Case("softmax_cross_entropy", lambda x: F.softmax_cross_entropy(x, LABELS),
         lambda a: -np.mean(np_log_softmax(a)[np.arange(4), LABELS]), [(4, 3)]),
    Case("softmax_cross_entropy_col_t", lambda x: F.softmax_cross_entropy(x, LABELS.reshape(4, 1)),
         lambda a: -np.mean(np_log_softmax(a)[np.arange(4), LABELS]), [(4, 3)]),
    Case("softmax_cross_entropy_simple", lambda x: F.softmax_cross_entropy_simple(x, LABELS),
         lambda a: -np.mean(np_log_softmax(a)[np.arange(4), LABELS]), [(4, 3)]),
    Case("sigmoid_cross_entropy", lambda x: F.sigmoid_cross_entropy(x, BIN_T.reshape(4, 1)),
         lambda a: -np.sum(BIN_T.reshape(4, 1) * np.log(np_sigmoid(a))
                           + (1 - BIN_T.reshape(4, 1)) * np.log(1 - np_sigmoid(a))) / 4, [(4, 1)]),
    Case("sigmoid_cross_entropy_reshape_t", lambda x: F.sigmoid_cross_entropy(x, BIN_T.astype(int)),
         lambda a: -np.sum(BIN_T.reshape(4, 1) * np.log(np_sigmoid(a))
                           + (1 - BIN_T.reshape(4, 1)) * np.log(1 - np_sigmoid(a))) / 4, [(4, 1)]),
    Case("binary_cross_entropy", lambda p: F.binary_cross_entropy(p, BIN_T),
         lambda a: -np.sum(BIN_T * np.log(a) + (1 - BIN_T) * np.log(1 - a)) / 4, [(4,)],
         sample="prob"),
    Case("binary_cross_entropy_2d", lambda p: F.binary_cross_entropy(p, BIN_T.reshape(2, 2)),
         lambda a: -np.sum(BIN_T.reshape(2, 2) * np.log(a)
                           + (1 - BIN_T.reshape(2, 2)) * np.log(1 - a)) / 2, [(2, 2)],
         sample="prob"),
    # concatenate / stack
    Case("concatenate_0", lambda a, b: F.concatenate([a, b]), lambda a, b: np.concatenate([a, b]),
         [(2, 3), (1, 3)]),
    Case("concatenate_-1", lambda a, b, c: F.concatenate((a, b, c), axis=-1),
         lambda a, b, c: np.concatenate([a, b, c], axis=-1), [(2, 3), (2, 1), (2, 2)]),
    Case("concatenate_1d", lambda a, b: F.concatenate([a, b]), lambda a, b: np.concatenate([a, b]),
         [(3,), (2,)]),
    Case("concatenate_3d_1", lambda a, b: F.concatenate([a, b], 1),
         lambda a, b: np.concatenate([a, b], 1), [(2, 1, 3), (2, 2, 3)]),
    Case("stack_0", lambda a, b: F.stack([a, b]), lambda a, b: np.stack([a, b]), [(2, 3), (2, 3)]),
    Case("stack_1", lambda a, b: F.stack([a, b], axis=1), lambda a, b: np.stack([a, b], 1),
         [(2, 3), (2, 3)]),
    Case("stack_-1", lambda a, b, c: F.stack([a, b, c], -1), lambda a, b, c: np.stack([a, b, c], -1),
         [(2, 3), (2, 3), (2, 3)]),
    Case("stack_0d", lambda a, b: F.stack([a, b]), lambda a, b: np.stack([a, b]), [(), ()]),
]
CASE_IDS = [c.name for c in CASES]


def run_case(case, arrays, face):
    V = variable_class(face)
    vs = [V(a) for a in arrays]
    y = case.op(*vs)
    return vs, y


def check_case(case, arrays, face, dtype):
    # "full-keep": the full face with Config.keep_dtype, where float32 stays
    # float32.  The full face's default rules are DeZero's, whose dtypes
    # test_dezero_dtypes.py checks bit for bit: float32 results may be
    # float64 there.
    with fdz.using_config("keep_dtype", face == "full-keep"):
        _check_case(case, arrays, face, dtype)


def _check_case(case, arrays, face, dtype):
    dtypes = (dtype, np.float64) if face == "full" else (dtype,)
    originals = [a.copy() for a in arrays]
    vs, y = run_case(case, arrays, face)
    assert isinstance(y, variable_class(face)), type(y)
    ref = np.asarray(case.ref(*[a.astype(np.float64) for a in arrays]))
    assert y.shape == ref.shape
    assert y.dtype in dtypes
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y.data, ref, rtol=rtol, atol=rtol)
    y.backward()
    rtol, atol = (case.rtol32, 1e-2) if dtype == np.float32 else (1e-6, 1e-7)
    for i, (v, a) in enumerate(zip(vs, arrays)):
        g = grad_array(v, face)
        assert g.shape == a.shape and g.dtype in dtypes, (i, g.shape, g.dtype)

        def f(x, i=i):
            args = [b.astype(np.float64) for b in arrays]
            args[i] = x
            return case.ref(*args)

        # (finite differences on a C-ordered copy: the helper writes through reshape(-1))
        np.testing.assert_allclose(g, numerical_grad(f, np.array(a, order="C")), rtol=rtol, atol=atol,
                                   err_msg=f"{case.name}: input {i}")
    for a, o in zip(arrays, originals):  # inputs are never written to
        np.testing.assert_array_equal(a, o)


@pytest.mark.parametrize("face", FACES + ["full-keep"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_forward_and_grad(case, dtype, face):
    check_case(case, case.arrays(dtype, np.random.default_rng(7)), face, dtype)


@pytest.mark.parametrize("kind", ["strided", "transposed", "readonly"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_layouts(case, kind):
    arrays = [layout(a, kind) for a in case.arrays(np.float64, np.random.default_rng(8))]
    check_case(case, arrays, "full", np.float64)


# ------------------------------------------------------------ second order

SECOND = [
    # (name, scalar-ish op on Variables, input shapes, sampling)
    ("getitem_repeat_cubed", lambda x: F.get_item(x, IDX_REPEAT) ** 3, [(3, 4)], "normal"),
    ("getitem_bool_cubed", lambda x: F.get_item(x, MASK) ** 3, [(3, 4)], "normal"),
    ("getitem_basic_cubed", lambda x: F.get_item(x, (slice(1, None), 2)) ** 3, [(3, 4)], "normal"),
    ("reshape_transpose", lambda x: F.transpose(F.reshape(x, (4, 3)), (1, 0)) ** 3, [(2, 6)], "normal"),
    ("sum_axis_squared", lambda x: F.sum(x ** 2, axis=1) ** 2, [(2, 3)], "normal"),
    ("broadcast_sum_to", lambda x: F.sum_to(F.broadcast_to(x, (2, 3)) ** 3, (3,)), [(3,)], "normal"),
    ("mean_keep", lambda x: F.mean(x ** 3, axis=0, keepdims=True) ** 2, [(3, 2)], "normal"),
    ("max_squared", lambda x: F.max(x, axis=1) ** 2, [(3, 4)], "normal"),
    ("min_cubed", lambda x: F.min(x) ** 3, [(3, 4)], "normal"),
    ("matmul_squared", lambda x, w: F.matmul(x, w) ** 2, [(2, 3), (3, 4)], "normal"),
    ("matmul_batch_squared", lambda x, w: F.matmul(x, w) ** 2, [(2, 2, 3), (3,)], "normal"),
    ("linear_squared", lambda x, w, b: F.linear(x, w, b) ** 2, [(2, 3), (3, 2), (2,)], "normal"),
    ("softmax", lambda x: F.softmax(x) * W_CONST[:2, :3], [(2, 3)], "normal"),
    ("log_softmax", lambda x: F.log_softmax(x) * W_CONST[:2, :3], [(2, 3)], "normal"),
    ("softmax_cross_entropy", lambda x: F.softmax_cross_entropy(x, LABELS), [(4, 3)], "normal"),
    ("sigmoid_cross_entropy", lambda x: F.sigmoid_cross_entropy(x, BIN_T), [(4,)], "normal"),
    ("mse_cubed", lambda x, t: F.mean_squared_error(x ** 2, t), [(4, 3), (4, 3)], "normal"),
    ("concatenate_stack", lambda a, b: F.stack([F.concatenate([a, b]) ** 2, F.concatenate([b, a])]) ** 2,
     [(2, 3), (1, 3)], "normal"),
    ("sigmoid_simple", F.sigmoid_simple, [(2, 3)], "normal"),
]


def first_grads(op, arrays):
    vs = [fdz.Variable(a) for a in arrays]
    op(*vs).backward()
    return [v.grad.data for v in vs]


@pytest.mark.parametrize("name,op,shapes,sample", SECOND, ids=[s[0] for s in SECOND])
def test_second_derivative(name, op, shapes, sample):
    case = Case(name, op, None, shapes, sample)
    arrays = case.arrays(np.float64, np.random.default_rng(9))
    vs = [fdz.Variable(a) for a in arrays]
    y = op(*vs)
    y.backward(create_graph=True)
    grads = [v.grad for v in vs]
    assert all(isinstance(g, fdz.Variable) for g in grads)
    weights = [np.random.default_rng(10 + k).standard_normal(a.shape) for k, a in enumerate(arrays)]
    for v in vs:
        v.cleargrad()
    z = F.sum(grads[0] * weights[0])
    for g, w in zip(grads[1:], weights[1:]):
        z = z + F.sum(g * w)
    z.backward()
    for j, (v, a) in enumerate(zip(vs, arrays)):

        def f(x, j=j):
            args = list(arrays)
            args[j] = x
            gs = first_grads(op, args)
            return sum(np.sum(g * w) for g, w in zip(gs, weights))

        expected = numerical_grad(f, a)
        got = np.zeros_like(a) if v.grad is None else v.grad.data
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=f"{name}: input {j}")


def test_getitem_grad_twice_is_get_item():
    x = fdz.Variable(np.arange(12.0).reshape(3, 4))
    y = F.get_item(x, IDX_REPEAT)
    gy = fdz.Variable(np.arange(15.0).reshape(3, 5))
    y.grad = gy
    y.backward(create_graph=True)
    gx = x.grad
    assert type(gx.creator) is F.GetItemGrad
    expected = np.zeros((3, 4))
    np.add.at(expected, IDX_REPEAT, gy.data)
    np.testing.assert_array_equal(gx.data, expected)
    # d sum(w * gx) / d gy is get_item(w) again: w gathered at the repeated indices
    w = np.arange(12.0).reshape(3, 4) + 1
    F.sum(gx * w).backward()
    np.testing.assert_array_equal(gy.grad.data, w[IDX_REPEAT])


def test_getitem_repeated_indices_accumulate():
    x = fdz.Variable(np.zeros(4))
    F.sum(F.get_item(x, np.array([1, 1, 1, 3])) * np.array([1.0, 2.0, 3.0, 4.0])).backward()
    np.testing.assert_array_equal(x.grad.data, [0.0, 6.0, 0.0, 4.0])


# ------------------------------------------------------------ behaviour

@pytest.mark.parametrize("face", FACES)
def test_reshape_same_shape_returns_input(face):
    x = variable_class(face)(np.zeros((2, 3)))
    assert F.reshape(x, (2, 3)) is x
    assert F.broadcast_to(x, (2, 3)) is x
    assert F.sum_to(x, (2, 3)) is x
    y = F.reshape(np.zeros((2, 3)), (2, 3))
    assert isinstance(y, fdz.Variable)


@pytest.mark.parametrize("face", FACES)
def test_class_names_and_creators(face):
    x = variable_class(face)(np.ones((2, 3)))
    pairs = [
        (F.reshape(x, (3, 2)), F.Reshape), (F.transpose(x), F.Transpose),
        (F.get_item(x, 0), F.GetItem), (F.sum(x), F.Sum), (F.sum_to(x, (3,)), F.SumTo),
        (F.broadcast_to(x, (4, 2, 3)), F.BroadcastTo), (F.matmul(x, np.ones((3, 1))), F.MatMul),
        (F.linear(x, np.ones((3, 1))), F.Linear), (F.max(x), F.Max), (F.min(x), F.Min),
        (F.softmax(x), F.Softmax), (F.log_softmax(x), F.LogSoftmax),
        (F.mean_squared_error(x, x), F.MeanSquaredError),
        (F.softmax_cross_entropy(x, np.array([0, 1])), F.SoftmaxCrossEntropy),
        (F.concatenate([x, x]), F.Concatenate), (F.stack([x, x]), F.Stack),
    ]
    for y, cls in pairs:
        assert type(y.creator) is cls
        assert isinstance(y.creator, fdz.Function)


def test_full_face_names_come_from_one_module():
    from fastgrad._core import GraphFunction
    assert F.Function is GraphFunction
    for name in ["exp", "log", "sin", "cos", "tanh", "sigmoid", "relu", "clip", "Exp", "Sigmoid"]:
        assert hasattr(F, name), name
    for name in F.__all__:
        assert hasattr(F, name), name


@pytest.mark.parametrize("face", FACES)
def test_grads_from_two_paths_accumulate(face):
    # broadcast views returned as grads must not be written in place
    V = variable_class(face)
    x = V(np.arange(6.0).reshape(2, 3))
    y = F.sum(x) + F.sum(x, axis=0)
    y = F.sum(y) + F.sum(F.broadcast_to(F.sum_to(x, (3,)), (4, 3)))
    y.backward()
    np.testing.assert_array_equal(grad_array(x, face), np.full((2, 3), 3.0 + 1.0 + 4.0))


@pytest.mark.parametrize("face", FACES)
def test_retained_grads_not_aliased_through_views(face):
    V = variable_class(face)
    a = V(np.arange(6.0).reshape(2, 3))
    b = F.reshape(a, (6,))
    c = F.transpose(a)
    z = F.sum(b * b) + F.sum(c) + F.sum(F.get_item(a, (slice(None), 1)))
    z.backward(retain_grad=True)
    np.testing.assert_array_equal(grad_array(b, face), 2 * np.arange(6.0))
    np.testing.assert_array_equal(grad_array(c, face), np.ones((3, 2)))
    expected = 2 * np.arange(6.0).reshape(2, 3) + 1
    expected[:, 1] += 1
    np.testing.assert_array_equal(grad_array(a, face), expected)


@pytest.mark.parametrize("face", FACES)
def test_no_grad_records_nothing(face):
    x = variable_class(face)(np.ones((2, 3)))
    with (fdz if face == "full" else fastgrad).no_grad():
        for y in [F.reshape(x, (6,)), F.sum(x), F.softmax(x), F.get_item(x, 1),
                  F.linear(x, np.ones((3, 2)), np.ones(2))]:
            assert y.creator is None


def test_graph_freed_without_gc():
    import gc
    gc.disable()
    try:
        x = fdz.Variable(np.ones((3, 4)))
        y = F.softmax_cross_entropy(F.linear(x, np.ones((4, 3)), np.zeros(3)), np.array([0, 1, 2]))
        ref = weakref.ref(y.creator)
        y.backward()
        del y
        assert ref() is None
    finally:
        gc.enable()


def test_linear_simple_releases_intermediate():
    x, W, b = (fdz.Variable(np.ones(s)) for s in [(2, 3), (3, 4), (4,)])
    y = F.linear_simple(x, W, b)
    t = y.creator.inputs[0]
    assert t.data is None
    y.backward()
    np.testing.assert_array_equal(W.grad.data, np.full((3, 4), 2.0))
    np.testing.assert_array_equal(b.grad.data, np.full(4, 2.0))


@pytest.mark.parametrize("face", FACES)
def test_accuracy(face):
    V = variable_class(face)
    y = V(np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]]))
    acc = F.accuracy(y, np.array([1, 0, 0]))
    assert type(acc) is V
    assert acc.creator is None
    assert acc.data.shape == () and acc.dtype == np.float64
    np.testing.assert_allclose(acc.data, 2 / 3)
    np.testing.assert_allclose(F.accuracy(y.data, V(np.array([[1], [0], [1]]))).data, 1.0)
    assert type(F.accuracy(y.data, np.array([1, 0, 0]))) is fdz.Variable


def test_accuracy_of_parameter_is_a_variable():
    acc = F.accuracy(fdz.Parameter(np.eye(2)), np.array([0, 1]))
    assert type(acc) is fdz.Variable


def test_softmax_cross_entropy_target_gets_no_grad():
    x = fdz.Variable(np.zeros((2, 3)))
    t = fdz.Variable(np.array([0, 2]))
    F.softmax_cross_entropy(x, t).backward()
    assert t.grad is None
    assert x.grad is not None


def test_integer_inputs_follow_numpy():
    xi = np.arange(6).reshape(2, 3)
    assert F.sum(xi).dtype == np.sum(xi).dtype
    assert F.reshape(xi, (3, 2)).dtype == xi.dtype
    assert F.matmul(xi, xi.T).dtype == (xi @ xi.T).dtype
    np.testing.assert_allclose(F.softmax(xi).data, np_softmax(xi.astype(float)))
    np.testing.assert_allclose(F.log_softmax(xi).data, np_log_softmax(xi.astype(float)))
    assert F.max(xi).data == 5 and F.get_item(xi, 1).dtype == xi.dtype


def test_empty_arrays():
    x = fdz.Variable(np.zeros((0, 3)))
    y = F.sum(x, axis=0)
    y.backward()
    assert x.grad.shape == (0, 3)
    np.testing.assert_array_equal(F.max(x, axis=1).data, np.zeros(0))
    with np.errstate(invalid="ignore"):
        assert np.isnan(F.mean(x).data)
    z = F.reshape(x, (3, 0))
    assert z.shape == (3, 0)
    assert F.flatten(x).shape == (0, 3)


def test_float32_losses_stay_float32():
    with fdz.using_config("keep_dtype", True):
        _float32_losses_stay_float32()


def _float32_losses_stay_float32():
    x = fdz.Variable(np.ones((4, 3), np.float32))
    for y in [F.softmax_cross_entropy(x, LABELS), F.softmax_cross_entropy_simple(x, LABELS),
              F.sigmoid_cross_entropy(F.get_item(x, (slice(None), 0)), BIN_T.astype(int)),
              F.binary_cross_entropy(F.sigmoid(x), np.ones((4, 3), int)),
              F.mean_squared_error(x, np.zeros((4, 3), np.float32))]:
        assert y.dtype == np.float32
        x.cleargrad()
        y.backward()
        assert x.grad.dtype == np.float32


def test_max_ties_follow_dezero():
    # every element equal to the maximum receives the whole gradient
    x = fdz.Variable(np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 0.0]]))
    F.max(x, axis=1).backward()
    np.testing.assert_array_equal(x.grad.data, [[0, 1, 1], [1, 1, 0]])


def test_variable_methods_on_full_face():
    # the full face's Variable methods route through this module
    x = fdz.Variable(np.arange(6.0).reshape(2, 3))
    assert type(x.reshape(3, 2).creator) is F.Reshape
    assert type(x.T.creator) is F.Transpose
    assert type(x.sum(axis=0).creator) is F.Sum
    assert type(x[0, 1:].creator) is F.GetItem


# ------------------------------------------------------------ errors

V64 = fdz.Variable(np.ones((2, 3)))

ERRORS = [
    (lambda: F.reshape(V64, (4,)), ValueError, r"\(2, 3\).*\(4,\)"),
    (lambda: F.reshape(V64, (2.0, 3)), TypeError, "shape"),
    (lambda: F.reshape(V64, V64), TypeError, "Variable"),
    (lambda: F.transpose(V64, (0,)), ValueError, "axes"),
    (lambda: F.transpose(V64, (0, 0)), ValueError, "repeats"),
    (lambda: F.transpose(V64, (0, 2)), ValueError, "out of range"),
    (lambda: F.transpose(V64, 1.5), TypeError, "axes"),
    (lambda: F.get_item(V64, (0, 5)), IndexError, "index 5 is out of bounds for axis 1"),
    (lambda: F.get_item(V64, (0, 0, 0)), IndexError, "too many indices"),
    (lambda: F.get_item(V64, [0.5]), IndexError, "integer"),
    (lambda: F.expand_dims(V64, 3), ValueError, "out of range"),
    (lambda: F.expand_dims(V64, -4), ValueError, "out of range"),
    (lambda: F.expand_dims(V64, 1.0), TypeError, "int"),
    (lambda: F.flatten(fdz.Variable(np.array(1.0))), ValueError, "0-d"),
    (lambda: F.broadcast_to(V64, (3, 3)), ValueError, r"\(2, 3\).*\(3, 3\)"),
    (lambda: F.broadcast_to(V64, (3,)), ValueError, r"\(2, 3\).*\(3,\)"),
    (lambda: F.sum_to(V64, (2,)), ValueError, r"\(2, 3\).*\(2,\)"),
    (lambda: F.sum_to(V64, (4, 2, 3)), ValueError, "cannot be summed"),
    (lambda: F.sum(V64, axis=2), ValueError, "axis 2 is out of range"),
    (lambda: F.sum(V64, axis=-3), ValueError, "out of range"),
    (lambda: F.sum(V64, axis=1.0), TypeError, "axis"),
    (lambda: F.sum(V64, axis=fdz.Variable(np.array(0))), TypeError, "Variable"),
    (lambda: F.sum(V64, axis=(0, 0)), ValueError, "repeats"),
    (lambda: F.mean(V64, axis=5), ValueError, "out of range"),
    (lambda: F.max(V64, axis=2), ValueError, "out of range"),
    (lambda: F.min(V64, axis="0"), TypeError, "axis"),
    (lambda: F.max(fdz.Variable(np.zeros((0, 2)))), ValueError, "zero-size"),
    (lambda: F.matmul(V64, np.ones((2, 3))), ValueError, r"\(2, 3\).*\(2, 3\)"),
    (lambda: F.matmul(V64, np.array(2.0)), ValueError, "at least 1 dimension"),
    (lambda: F.matmul(np.ones((2, 2, 3)), np.ones((3, 3, 4))), ValueError, "batch"),
    (lambda: F.linear(V64, np.ones((4, 2))), ValueError, r"\(2, 3\).*\(4, 2\)"),
    (lambda: F.linear(V64, np.ones((3, 2)), np.ones(3)), ValueError, "bias of shape"),
    (lambda: F.linear(V64, np.ones((3, 2)), np.ones((3, 2))), ValueError, "bias"),
    (lambda: F.softmax(np.ones(3)), ValueError, "axis 1 is out of range"),
    (lambda: F.log_softmax(V64, axis=2), ValueError, "out of range"),
    (lambda: F.mean_squared_error(np.array(1.0), np.array(2.0)), ValueError, "0-d"),
    (lambda: F.mean_squared_error(V64, np.ones(2)), ValueError, "broadcast"),
    (lambda: F.softmax_cross_entropy(V64, np.array([0, 3])), ValueError, "label 3"),
    (lambda: F.softmax_cross_entropy(V64, np.array([0, -1])), ValueError, "label -1"),
    (lambda: F.softmax_cross_entropy(V64, np.array([0, 1, 1])), ValueError, "3 labels"),
    (lambda: F.softmax_cross_entropy(V64, np.array([0.0, 1.0])), TypeError, "integer"),
    (lambda: F.softmax_cross_entropy(np.ones(3), np.array([0])), ValueError, "2-d"),
    (lambda: F.softmax_cross_entropy_simple(V64, np.array([0, 5])), ValueError, "label 5"),
    (lambda: F.sigmoid_cross_entropy(V64, np.ones(5)), ValueError, r"\(5,\).*\(2, 3\)"),
    (lambda: F.binary_cross_entropy(V64, np.ones((3, 1))), ValueError, "does not match"),
    (lambda: F.accuracy(V64, np.array([0, 1, 1])), ValueError, "3 labels"),
    (lambda: F.accuracy(np.ones(3), np.array([0])), ValueError, "2-d"),
    (lambda: F.concatenate(V64), TypeError, "sequence"),
    (lambda: F.concatenate([]), ValueError, "at least one"),
    (lambda: F.concatenate([V64, np.ones((2, 2))]), ValueError, "dimension"),
    (lambda: F.concatenate([V64, np.ones(3)]), ValueError, "ndim"),
    (lambda: F.concatenate([np.array(1.0)]), ValueError, "0-d"),
    (lambda: F.concatenate([V64, V64], axis=2), ValueError, "out of range"),
    (lambda: F.concatenate([V64, V64], axis=None), TypeError, "None"),
    (lambda: F.stack([V64, np.ones((3, 2))]), ValueError, r"\(3, 2\)"),
    (lambda: F.stack([V64, V64], axis=3), ValueError, "out of range"),
    (lambda: F.stack(5), TypeError, "sequence"),
]


@pytest.mark.parametrize("call,exc,match", ERRORS, ids=[str(i) for i in range(len(ERRORS))])
def test_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize("fn", [
    lambda x, W, b: F.linear(x, W, b),
    lambda x, W, b: F.matmul(x, W) + b,
    lambda x, W, b: F.matmul(x.reshape(2, 3, 4) if isinstance(x, fastgrad.Variable)
                             else x.reshape(2, 3, 4), W) + b,
    lambda x, W, b: F.sum(fdz.functions_conv.conv2d(
        x.reshape(1, 1, 3, 8) if isinstance(x, fastgrad.Variable) else x.reshape(1, 1, 3, 8),
        W.reshape(5, 1, 2, 2), b, 1, 1)),
], ids=["linear", "matmul", "batched", "conv2d"])
def test_array_operands_get_no_gradient_and_change_nothing(fn):
    # An ndarray operand (a layer's input data) is wrapped in a Variable
    # nobody holds: no gradient is stored for it, and the products that
    # only it needs are skipped; the parameters' grads are unchanged.
    rng = np.random.default_rng(3)
    xv, Wv, bv = rng.normal(size=(6, 4)), rng.normal(size=(4, 5)), rng.normal(size=5)
    grads = []
    for as_variable in (True, False):
        W, b = fdz.Variable(Wv.copy()), fdz.Variable(bv.copy())
        x = fdz.Variable(xv.copy()) if as_variable else xv.copy()
        y = fn(x, W, b)
        y.backward()
        grads.append((W.grad.data.tobytes(), b.grad.data.tobytes()))
        if not as_variable:
            f = y.creator
            while not any(v.creator is None and v.data.size == 24 for v in f.inputs):
                f = next(v.creator for v in f.inputs if v.creator is not None)
            wrapped = next(v for v in f.inputs if v.creator is None and v.data.size == 24)
            assert wrapped.grad is None
    assert grads[0] == grads[1]


def test_graph_function_gradients_are_kept_without_a_copy_only_when_private():
    import weakref

    from fastgrad.dezero import Function, Variable
    kept = []

    class Twice(Function):
        def __init__(self, hold):
            self.hold = hold

        def forward(self, x):
            return 2 * x

        def backward(self, gy):
            g = gy.data * 2
            kept.append(g if self.hold else weakref.ref(g))
            return g

    x = Variable(np.arange(3.0))
    Twice(hold=False)(x).backward()
    assert x.grad.data is kept.pop()()      # nobody else had it: no copy
    x = Variable(np.arange(3.0))
    Twice(hold=True)(x).backward()
    held = kept.pop()
    assert not np.shares_memory(x.grad.data, held)
    held[...] = 0.0
    assert np.all(x.grad.data == 2.0)
