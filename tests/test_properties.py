"""Property-based tests: random programs checked against independent oracles.

A *program* is a list of operations over 1-3 leaf Variables: the built-in
ops (called as operators, as ``fastgrad.add``-style functions or as
``Add()(...)`` instances), user ``Function`` subclasses with 1-3 inputs and
1-2 outputs, a user subclass of a built-in (``Mul``), and "detached" nodes
computed under ``no_grad``.  Any earlier node may be reused and constants
(Python and NumPy scalars, ndarrays) appear on either side.  Leaves have
random broadcast-compatible shapes (0-d included, sometimes empty), random
layouts (strided, transposed, reversed, read-only, Fortran-order, 0-stride
broadcast views) and float32/float64 dtypes.

The oracles know nothing about fastgrad:

* values: the same program re-evaluated with plain NumPy;
* gradients: central finite differences of ``sum(root)`` in float64 on that
  NumPy evaluation (for intermediate nodes too, under ``retain_grad=True``);
* backward order: a small reimplementation of DeZero's sort-based loop run on
  a mirror of the graph; reachability from the root's creator decides which
  user ``backward`` methods must run (exactly once) and which never.

Values are kept in safe domains while the program is drawn: division only by
values of magnitude >= 0.5, fractional/negative powers only of bases >= 0.25,
no intermediate above 50 in magnitude (an op breaking a rule becomes a Neg).

Examples are derandomized (stable in CI); FASTGRAD_HYPOTHESIS_EXAMPLES
overrides the number of examples.
"""
import os

import numpy as np
import pytest

pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis import given  # noqa: E402

import fastgrad as fg  # noqa: E402

N_EXAMPLES = int(os.environ.get("FASTGRAD_HYPOTHESIS_EXAMPLES", "150"))

PROPS = settings(
    max_examples=N_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)

# ---------------------------------------------------------------- user functions
# Each instance records its backward calls in a shared log (the order).


class _Counting:
    def _record(self):
        self.calls += 1
        self.log.append(self)


class Quad(fg.Function, _Counting):
    """1 input, 1 output: 0.5 x^2 + x."""
    nin, nout = 1, 1

    def __init__(self, log):
        self.log, self.calls = log, 0

    def forward(self, x):
        return 0.5 * x * x + x

    def backward(self, gy):
        self._record()
        x = self.inputs[0].data
        return gy * (x + 1)


class ProdDiff(fg.Function, _Counting):
    """2 inputs, 2 outputs (broadcasting): (x0 x1, x0 - 2 x1)."""
    nin, nout = 2, 2

    def __init__(self, log):
        self.log, self.calls = log, 0

    def forward(self, x0, x1):
        return x0 * x1, x0 - 2 * x1

    def backward(self, g0, g1):
        self._record()
        x0, x1 = self.inputs[0].data, self.inputs[1].data
        # Broadcast-shaped grads: the engine sums them back to input shapes.
        return g0 * x1 + g1, g0 * x0 - 2 * g1


class Affine3(fg.Function, _Counting):
    """3 inputs, 1 output: x0 x1 + x2."""
    nin, nout = 3, 1

    def __init__(self, log):
        self.log, self.calls = log, 0

    def forward(self, x0, x1, x2):
        return x0 * x1 + x2

    def backward(self, gy):
        self._record()
        x0, x1 = self.inputs[0].data, self.inputs[1].data
        return [gy * x1, gy * x0, gy]      # a list is accepted as well


class Split(fg.Function, _Counting):
    """1 input, 2 outputs: (3 x, x^2)."""
    nin, nout = 1, 2

    def __init__(self, log):
        self.log, self.calls = log, 0

    def forward(self, x):
        return 3 * x, x * x

    def backward(self, g0, g1):
        self._record()
        x = self.inputs[0].data
        return 3 * g0 + 2 * x * g1


class CountingMul(fg.Mul, _Counting):
    """A user subclass of a built-in: must take the general path."""
    nin, nout = 2, 1

    def __init__(self, log):
        self.log, self.calls = log, 0

    def backward(self, gy):
        self._record()
        return super().backward(gy)


USER = {"quad": Quad, "proddiff": ProdDiff, "affine3": Affine3,
        "split": Split, "cmul": CountingMul}


def np_user(kind, xs):
    """The user functions' forward in plain NumPy (tuple of outputs)."""
    if kind == "quad":
        (x,) = xs
        return (0.5 * x * x + x,)
    if kind == "proddiff":
        x0, x1 = xs
        return (x0 * x1, x0 - 2 * x1)
    if kind == "affine3":
        x0, x1, x2 = xs
        return (x0 * x1 + x2,)
    if kind == "split":
        (x,) = xs
        return (3 * x, x * x)
    if kind == "cmul":
        return (xs[0] * xs[1],)
    raise AssertionError(kind)


BINOPS = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b,
          "mul": lambda a, b: a * b, "div": lambda a, b: a / b}
FUNCS = {"add": fg.add, "sub": fg.sub, "mul": fg.mul, "div": fg.div}
CLASSES = {"add": fg.Add, "sub": fg.Sub, "mul": fg.Mul, "div": fg.Div}
RFUNCS = {"sub": fg.rsub, "div": fg.rdiv}


# ---------------------------------------------------------------- NumPy oracle

def _ref_value(ref, nodes):
    return nodes[ref[1]] if ref[0] == "n" else ref[1]


def np_eval(ops, leaves, base=None, override=None, f64=True):
    """Evaluate the program with NumPy; returns the list of node values.

    ``f64`` evaluates in float64 (the oracle); otherwise in the leaves' own
    dtypes (what fastgrad's forward must reproduce).  ``base`` holds the
    unperturbed node values: detached nodes keep them.  ``override``
    ``(j, value)`` replaces node ``j`` once it is computed.
    """
    nodes = [np.asarray(x, np.float64) if f64 else np.asarray(x) for x in leaves]
    if override is not None and override[0] < len(nodes):
        nodes[override[0]] = override[1]
    with np.errstate(all="ignore"):
        for op in ops:
            args = [_ref_value(r, nodes) for r in op["args"]]
            if f64:
                args = [np.asarray(a, np.float64) if isinstance(a, np.ndarray) else a
                        for a in args]
            kind = op["kind"]
            if kind in BINOPS:
                outs = (np.asarray(BINOPS[kind](*args)),)
            elif kind == "neg":
                outs = (np.asarray(-args[0]),)
            elif kind == "pow":
                outs = (np.asarray(args[0] ** op["c"]),)
            elif kind == "detach":
                outs = tuple(np.asarray(o) for o in np_user("quad", args))
                if base is not None:
                    outs = (base[len(nodes)],)
            else:
                if not f64:
                    args = _as_function_inputs(args)
                outs = tuple(np.asarray(o) for o in np_user(kind, args))
            for o in outs:
                nodes.append(o)
                if override is not None and override[0] == len(nodes) - 1:
                    nodes[-1] = override[1]
    return nodes


def _as_function_inputs(args):
    """What ``Function.__call__`` hands to ``forward``: ndarrays; a Python
    scalar takes the result dtype of the ndarray arguments (weak, NEP 50);
    a NumPy scalar becomes a 0-d array of its own dtype."""
    arrays = [a for a in args if isinstance(a, np.ndarray)]
    out = []
    for a in args:
        if isinstance(a, (bool, int, float)):
            a = np.asarray(a, np.result_type(*arrays, a)) if arrays else np.asarray(a)
        out.append(np.asarray(a))
    return out


def finite_diff(ops, leaves, root, wrt, base, h=1e-6):
    """d sum(node[root]) / d node[wrt], central differences in float64."""
    x0 = np.array(base[wrt], np.float64, order="C")
    grad = np.zeros(x0.shape)
    flat, gflat = x0.reshape(-1), grad.reshape(-1)
    for k in range(flat.size):
        step = h * max(1.0, abs(flat[k]))
        v = flat.copy()
        v[k] += step
        fp = np_eval(ops, leaves, base, (wrt, v.reshape(x0.shape)))[root].sum()
        v[k] -= 2 * step
        fm = np_eval(ops, leaves, base, (wrt, v.reshape(x0.shape)))[root].sum()
        gflat[k] = (fp - fm) / (2 * step)
    return grad


# ---------------------------------------------------------------- drawing programs

def reduced_shape(draw, full):
    """A shape that broadcasts to ``full``: drop leading dims, set some to 1."""
    drop = draw(st.integers(0, len(full)))
    dims = list(full[drop:])
    return tuple(1 if draw(st.booleans()) and draw(st.booleans()) else d for d in dims)


def make_layout(values, layout, dtype):
    """An array equal to ``values`` with the requested memory layout."""
    shape = values.shape
    if layout == "C" or values.ndim == 0:
        a = np.array(values, dtype)
    elif layout == "F":
        a = np.asfortranarray(values.astype(dtype))
    elif layout == "T":
        a = np.ascontiguousarray(values.T.astype(dtype)).T
    elif layout == "reversed":
        idx = tuple(slice(None, None, -1) for _ in shape)
        a = np.ascontiguousarray(values[idx].astype(dtype))[idx]
    elif layout == "strided":
        big = np.zeros(tuple(2 * d for d in shape), dtype)
        idx = tuple(slice(None, None, 2) for _ in shape)
        big[idx] = values
        a = big[idx]
    elif layout == "readonly":
        a = np.array(values, dtype)
        a.flags.writeable = False
    elif layout == "bcast":
        # A 0-stride view of the first row/element along axis 0.
        a = np.broadcast_to(values[:1].astype(dtype), shape)
    else:
        raise AssertionError(layout)
    assert a.shape == shape and a.dtype == dtype
    if layout == "bcast" and values.size:
        values[...] = a        # the data really is the broadcast values
    else:
        np.testing.assert_array_equal(a, values.astype(dtype))
    return a


@st.composite
def programs(draw, allow_detach=True):
    rng_seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(rng_seed)
    ndim = draw(st.integers(0, 3))
    full = tuple(draw(st.integers(1, 3)) for _ in range(ndim))
    if ndim and draw(st.integers(0, 9)) == 0:
        full = full[:-1] + (0,)             # an empty array now and then
    dtype = np.dtype(draw(st.sampled_from(["float64", "float32"])))
    nleaves = draw(st.integers(1, 3))
    leaves = []
    for _ in range(nleaves):
        shape = reduced_shape(draw, full)
        vals = rng.uniform(-2, 2, size=shape)
        layout = draw(st.sampled_from(["C", "F", "T", "reversed", "strided",
                                       "readonly", "bcast"]))
        leaves.append(make_layout(vals, layout, dtype))
    nodes = np_eval([], leaves)            # float64 values while drawing

    def const(away_from_zero=False):
        kind = draw(st.sampled_from(["float", "int", "np64", "np32", "array", "array0d"]))
        v = float(rng.uniform(0.5, 2.0)) * (1 if draw(st.booleans()) else -1)
        if kind == "float":
            return v
        if kind == "int":
            return int(draw(st.sampled_from([1, 2, 3, -1, -2])))
        if kind == "np64":
            return np.float64(v)
        if kind == "np32":
            return np.float32(v)
        cdtype = draw(st.sampled_from([dtype, np.dtype(np.float64)]))
        shape = () if kind == "array0d" else reduced_shape(draw, full)
        mag = rng.uniform(0.5, 2.0, size=shape)
        sign = np.where(rng.uniform(size=shape) < 0.5, -1.0, 1.0)
        return np.asarray(mag * sign, cdtype)

    def node_ref():
        return ("n", draw(st.integers(0, len(nodes) - 1)))

    def safe(vals):
        with np.errstate(all="ignore"):
            for v in vals:
                if v.size and not (np.all(np.isfinite(v)) and np.max(np.abs(v)) <= 50):
                    return False
        return True

    ops = []
    nops = draw(st.integers(1, 7))
    for _ in range(nops):
        kind = draw(st.sampled_from(
            ["add", "sub", "mul", "div", "neg", "pow", "quad", "proddiff",
             "affine3", "split", "cmul"] + (["detach"] if allow_detach else [])))
        op = {"kind": kind, "style": draw(st.sampled_from(["op", "fn", "cls"]))}
        if kind in BINOPS or kind in ("proddiff", "affine3", "cmul"):
            nin = 3 if kind == "affine3" else 2
            args = [node_ref()]
            for _ in range(nin - 1):
                args.append(node_ref() if draw(st.booleans()) else ("c", const()))
            if draw(st.booleans()):
                args.reverse()             # constants on the left as well
            op["args"] = args
        else:
            op["args"] = [node_ref()]
        if kind == "pow":
            op["c"] = draw(st.sampled_from([2, 3, 0, 1, 2.0, 0.5, 1.5, -1, -2.0,
                                            np.float64(2.0), np.int64(2)]))
        # Check the domain on float64 values.
        args = [_ref_value(r, nodes) for r in op["args"]]
        ok = True
        if kind == "div":
            den = np.asarray(args[1], np.float64)
            ok = den.size == 0 or np.min(np.abs(den)) >= 0.5
        if kind == "pow":
            c = float(op["c"])
            base = np.asarray(args[0], np.float64)
            if c != int(c):
                ok = base.size == 0 or np.min(base) >= 0.25
            elif c < 1:                    # c * x**(c-1) is nan/inf at 0
                ok = base.size == 0 or np.min(np.abs(base)) >= 0.5
        if ok:
            trial = np_eval(ops + [op], leaves)
            ok = safe(trial[len(nodes):])
        if not ok:
            op = {"kind": "neg", "style": op["style"], "args": [a for a in op["args"]
                                                               if a[0] == "n"][:1]}
        ops.append(op)
        nodes = np_eval(ops, leaves)
    return {"leaves": leaves, "ops": ops, "dtype": dtype,
            "keep_refs": draw(st.booleans()), "retain": draw(st.booleans())}


# ---------------------------------------------------------------- fastgrad run

def build(prog, log):
    """Run the program with fastgrad.  Returns (node Variables, functions)
    where functions[i] is the Function of op i (None when not recorded)."""
    vs = [fg.Variable(x, name=f"leaf{i}") for i, x in enumerate(prog["leaves"])]
    funcs = []
    for op in prog["ops"]:
        args = [vs[r[1]] if r[0] == "n" else r[1] for r in op["args"]]
        kind, style = op["kind"], op["style"]
        if kind in BINOPS:
            a, b = args
            if style == "op" or (style == "fn" and isinstance(a, fg.Variable)
                                 and isinstance(b, fg.Variable)):
                out = BINOPS[kind](a, b)
            elif style == "fn":
                if not isinstance(a, fg.Variable) and kind in RFUNCS:
                    out = RFUNCS[kind](b, a)   # rsub(x, c) == c - x
                else:
                    out = FUNCS[kind](a, b)
            else:
                out = CLASSES[kind]()(a, b)
            outs = [out]
        elif kind == "neg":
            x = args[0]
            outs = [{"op": lambda: -x, "fn": lambda: fg.neg(x),
                     "cls": lambda: fg.Neg()(x)}[style]()]
        elif kind == "pow":
            x, c = args[0], op["c"]
            outs = [{"op": lambda: x ** c, "fn": lambda: fg.pow(x, c),
                     "cls": lambda: fg.Pow(c)(x)}[style]()]
        elif kind == "detach":
            with fg.no_grad():
                f = Quad(log)
                outs = [f(*args)]
            assert outs[0].creator is None
        else:
            f = USER[kind](log)
            res = f(*args)
            outs = res if isinstance(res, list) else [res]
            assert len(outs) == USER[kind].nout
        for o in outs:
            assert isinstance(o, fg.Variable)
        funcs.append(outs[0].creator if kind != "detach" else None)
        vs.extend(outs)
    return vs, funcs


# ---------------------------------------------------------------- graph mirror

def mirror(prog):
    """Per op: (generation, [input node indices]) and node -> producing op."""
    nleaves = len(prog["leaves"])
    node_gen = [0] * nleaves
    node_op = [None] * nleaves
    op_info = []
    for i, op in enumerate(prog["ops"]):
        ins = [r[1] for r in op["args"] if r[0] == "n"]
        nout = 2 if op["kind"] in ("proddiff", "split") else 1
        if op["kind"] == "detach":
            op_info.append(None)
            node_gen.append(0)
            node_op.append(None)
            continue
        gen = max([node_gen[j] for j in ins] + [0])
        op_info.append((gen, [r for r in op["args"]]))
        for _ in range(nout):
            node_gen.append(gen + 1)
            node_op.append(i)
    return op_info, node_op


def dezero_order(op_info, node_op, root):
    """DeZero stage 2's backward loop (sort by generation, pop the last)."""
    funcs, seen, order = [], set(), []

    def add_func(i):
        if i not in seen:
            funcs.append(i)
            seen.add(i)
            funcs.sort(key=lambda k: op_info[k][0])

    if node_op[root] is not None:          # a detached root has no creator
        add_func(node_op[root])
    while funcs:
        i = funcs.pop()
        order.append(i)
        for r in op_info[i][1]:
            if r[0] == "n" and node_op[r[1]] is not None:
                add_func(node_op[r[1]])
    return order


def reachable_nodes(op_info, node_op, root):
    seen, stack = {root}, [root]
    while stack:
        j = stack.pop()
        i = node_op[j]
        if i is None:
            continue
        for r in op_info[i][1]:
            if r[0] == "n" and r[1] not in seen:
                seen.add(r[1])
                stack.append(r[1])
    return seen


def tolerances(dtype):
    return (1e-5, 1e-6) if dtype == np.float64 else (2e-3, 2e-3)


def check_close(actual, expected, dtype, what):
    rtol, atol = tolerances(dtype)
    scale = max(1.0, float(np.max(np.abs(expected))) if expected.size else 1.0)
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected,
                               rtol=rtol, atol=atol * scale, err_msg=what)


# ---------------------------------------------------------------- the properties

@PROPS
@given(programs())
def test_random_program_gradients_order_and_counts(prog):
    leaves, ops = prog["leaves"], prog["ops"]
    saved = [np.array(x) for x in leaves]
    consts = [r[1] for op in ops for r in op["args"]
              if r[0] == "c" and isinstance(r[1], np.ndarray)]
    saved_consts = [c.copy() for c in consts]
    log = []
    vs, funcs = build(prog, log)
    root = len(vs) - 1

    # Forward: values and dtypes as NumPy computes them in the leaves' dtypes.
    native = np_eval(ops, leaves, f64=False)
    for j, (v, ref) in enumerate(zip(vs, native)):
        assert v.shape == ref.shape, (j, v.shape, ref.shape)
        assert v.dtype == ref.dtype, (j, v.dtype, ref.dtype)
        np.testing.assert_allclose(v.data, ref, rtol=1e-6 if ref.dtype == np.float32
                                   else 1e-12, atol=1e-30, err_msg=f"node {j}")

    op_info, node_op = mirror(prog)
    reach = reachable_nodes(op_info, node_op, root)
    reach_ops = {node_op[j] for j in reach if node_op[j] is not None}
    user_ops = {i for i, op in enumerate(ops) if op["kind"] in USER}

    root_var = vs[root]
    leaf_vars = vs[:len(leaves)]
    keep = prog["keep_refs"] or prog["retain"]
    if not keep:
        # Only leaves and root stay referenced: dead outputs of multi-output
        # functions then get zero gradients from the recorded shapes.
        del vs[len(leaves):]
    log.clear()
    root_var.backward(retain_grad=prog["retain"])

    # Each reachable user function ran once, no other did, in DeZero's order.
    counts = {id(f): 0 for f in funcs if f is not None}
    for f in log:
        counts[id(f)] = counts.get(id(f), 0) + 1
    for i in user_ops:
        f = funcs[i]
        if f is None:
            continue
        assert f.calls == (1 if i in reach_ops else 0), (i, ops[i]["kind"], f.calls)
    expected_order = [i for i in dezero_order(op_info, node_op, root) if i in user_ops]
    assert [_op_index(funcs, f) for f in log] == expected_order

    # Gradients against finite differences on the NumPy program.
    base = np_eval(ops, leaves)
    dtype = prog["dtype"]
    for j, x in enumerate(leaf_vars):
        if j not in reach:
            assert x.grad is None, f"leaf {j} is not on a path to the root"
            continue
        g = x.grad
        assert isinstance(g, np.ndarray)
        assert g.shape == x.shape and g.dtype == x.dtype, (g.shape, g.dtype)
        fd = finite_diff(ops, leaves, root, j, base)
        check_close(g, fd, dtype, f"grad of leaf {j}")

    # Intermediate grads: cleared without retain_grad, exact with it.
    if prog["retain"]:
        for j in range(len(leaves), len(vs)):
            v = vs[j]
            if j == root:
                continue
            if j not in reach:
                assert v.grad is None, f"node {j} is not on a path to the root"
            elif dtype == np.float64 and v.size <= 12:
                assert v.grad is not None and v.grad.shape == v.shape
                check_close(v.grad, finite_diff(ops, leaves, root, j, base), dtype,
                            f"retained grad of node {j}")
    elif keep:
        for j in range(len(leaves), root):
            if node_op[j] is None:
                continue                    # detached: a leaf of the graph
            assert vs[j].grad is None, f"node {j} kept its grad without retain_grad"
    if root_var.creator is not None and not prog["retain"]:
        assert root_var.grad is None        # DeZero clears the root's grad too

    # No aliasing: grads are fresh arrays, inputs are never written.
    grads = [x.grad for x in leaf_vars if x.grad is not None]
    for a in range(len(grads)):
        for b in range(a + 1, len(grads)):
            assert not np.shares_memory(grads[a], grads[b])
        for arr in list(leaves) + consts:
            assert not np.shares_memory(grads[a], arr)
    for x, s in zip(leaves, saved):
        np.testing.assert_array_equal(x, s)
    for c, s in zip(consts, saved_consts):
        np.testing.assert_array_equal(c, s)


def _op_index(funcs, f):
    for i, g in enumerate(funcs):
        if g is f:
            return i
    raise AssertionError("backward of a function the program did not record")


@PROPS
@given(programs(allow_detach=False))
def test_second_backward_accumulates(prog):
    """Without cleargrad a second backward adds the same gradient again."""
    vs, _ = build(prog, [])
    root = vs[-1]
    leaf_vars = vs[:len(prog["leaves"])]
    del vs
    root.backward()
    first = [None if x.grad is None else np.array(x.grad) for x in leaf_vars]
    root.backward()
    for x, g in zip(leaf_vars, first):
        if g is None:
            assert x.grad is None
        else:
            check_close(x.grad, 2 * np.asarray(g, np.float64), prog["dtype"], "2nd backward")
    for x in leaf_vars:
        x.cleargrad()
        assert x.grad is None
    root.backward()
    for x, g in zip(leaf_vars, first):
        if g is not None:
            check_close(x.grad, np.asarray(g, np.float64), prog["dtype"], "after cleargrad")


@PROPS
@given(programs())
def test_no_grad_records_nothing(prog):
    """Under no_grad the values are the same and no graph is recorded."""
    log = []
    with_graph, _ = build(prog, log)
    with fg.no_grad():
        assert not fg.Config.enable_backprop
        vs, funcs = build(prog, log)
    assert fg.Config.enable_backprop
    for v, w in zip(vs, with_graph):
        assert v.creator is None
        np.testing.assert_array_equal(v.data, w.data)
    assert all(f is None for f in funcs)


# ---------------------------------------------------------------- backward order

@PROPS
@given(st.data())
def test_backward_order_matches_dezero_loop(data):
    """Wide, reconvergent graphs of user functions only: the sequence of
    backward calls equals DeZero's (highest generation first, latest
    inserted first among equals)."""
    log = []
    n = data.draw(st.integers(1, 4), label="leaves")
    vs = [fg.Variable(np.array(float(i + 1))) for i in range(n)]
    gens = [0] * n
    creators = [None] * n
    infos = []                               # per function: (gen, input nodes)
    funcs = []
    for _ in range(data.draw(st.integers(1, 14), label="ops")):
        kind = data.draw(st.sampled_from(["quad", "proddiff", "affine3", "split"]))
        cls = USER[kind]
        ins = [data.draw(st.integers(0, len(vs) - 1)) for _ in range(cls.nin)]
        f = cls(log)
        res = f(*[vs[i] for i in ins])
        outs = res if isinstance(res, list) else [res]
        g = max(gens[i] for i in ins)
        assert f.generation == g
        infos.append((g, [("n", i) for i in ins]))
        funcs.append(f)
        for o in outs:
            assert o.generation == g + 1
            vs.append(o)
            gens.append(g + 1)
            creators.append(len(funcs) - 1)
    root = data.draw(st.integers(n, len(vs) - 1), label="root")
    expected = dezero_order(infos, creators, root)
    with np.errstate(all="ignore"):
        vs[root].backward()
    got = [_op_index(funcs, f) for f in log]
    assert got == expected
