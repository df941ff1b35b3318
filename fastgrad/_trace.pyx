"""fastgrad.trace: record a function's table ops once per call signature,
then replay them without running its Python code.

The first call of a traced function for a call signature runs it eagerly
while _call_recorded notes every table op it performs (the op's constants,
which operand came from where) into a _Recorder.  The recording becomes a
_Plan.  Later calls with that signature replay the plan without running
the function's Python code:

* a plan whose ops all took the C scalar path (0-d float64 values) runs as
  a loop over a flat buffer of doubles, and its outputs get one creator, a
  _TracedCall, whose backward is a second loop in the engine's own order;
* a plan of elementwise ops on float arrays of one shape (and perhaps a
  final sum) is compiled into two register programs for the fused
  evaluator (fastgrad._eval), one pass forward and one backward;
* any other plan replays its ops through the eager engine (arrays go
  through the same kernels), which builds the ordinary graph.

Both give the eager run's bits: the same ops, on the same values, with
gradients accumulated in the order the eager backward would use.

The tracer sits on top of the engine: it cimports fastgrad._core (see
_core.pxd) and installs its recording hooks there when imported.
"""
import functools as _functools
import heapq
import threading as _threading
import warnings as _warnings
import weakref

import numpy as np

cimport cython
cimport numpy as cnp
from cpython.object cimport PyObject
from cpython.tuple cimport PyTuple_GET_ITEM
from libc.math cimport copysign
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

from fastgrad._core cimport (
    Function, _TableOp, _Variable, _array_value, _as_nd, _backprop_enabled, _c_number,
    _call_eager, _clear_grad, _deliver, _deliver_scalar, _dezero_rules, _functions,
    _grad_array, _grad_variable, _install_tracer, _is_f64_array, _is_f64_scalar_array,
    _is_recording, _keep_dtype_on, _lazy_var, _recording_add, _run_backward,
    _scalar_op_backward, _scalar_op_forward, _set_backprop, _tp_new, _wrap_data)
from fastgrad._eval cimport Program, evaluate

from fastgrad import _formulas
from fastgrad._core import PURE

cnp.import_array()

cdef bint _pure = PURE
cdef object _ndarray = np.ndarray
cdef object _float64 = np.dtype(np.float64)
cdef tuple _empty_tuple = ()


class TraceWarning(UserWarning):
    """A traced function runs eagerly for a call signature; the message says why."""


class TraceMismatchError(RuntimeError):
    """``trace(fn, check=N)``: a replay disagreed with the eager run of ``fn``."""


cdef object _trace_state = _threading.local()     # .recorder: this thread's
cdef object _F64_SCALAR = ("float64", ())          # signature of a float64 scalar leaf

cdef enum:
    _INPUT = 0          # slot kinds
    _CONST = 1
    _NODE = 2
    _SKIP = 0           # what the backward does with an operand's contribution
    _SET = 1
    _ADD = 2
    _GIVE = 3
    _MAX_PLANS = 256    # signatures per traced function before new ones run eagerly


cdef inline _Recorder _active_recorder():
    return getattr(_trace_state, "recorder", None)


cdef object _call_recorded(Function f, tuple args, object face):
    """Function.__call__ while traces are being recorded (the engine's hook)."""
    out = _call_eager(f, args, face)
    rec = _active_recorder()
    if rec is not None:
        rec.record(f, args, face, out)
    if f._table and _dezero_rules(f):
        _check_dezero(<_TableOp>f, out)
    return out


cdef int _check_dezero(_TableOp f, object out) except -1:
    """A traced plan computes each backward in its arrays' one dtype, so a
    row whose DeZero backward promotes (``1 - y * y`` with a strong 1) on
    anything but float64 makes the signature run eagerly."""
    if not (f._dz_sensitive() and _backprop_enabled() and isinstance(out, _Variable)):
        return 0
    arrays = [(<_Variable>v)._get_data() for v in (f._inputs or ())]
    arrays.append((<_Variable>out)._get_data())
    for a in arrays:
        if not _is_f64_array(a):
            rec = _active_recorder()
            if rec is not None and rec.reason is None:
                rec.reason = (f"its {type(f).__name__} on {a.dtype} data follows DeZero's "
                              f"dtype rules (a float64 backward), which a traced plan "
                              f"does not compute; Config.keep_dtype = True keeps {a.dtype}")
            return 0
    return 0


cdef int _trace_made(_Variable v, str what) except -1:
    """Variable() inside a function being recorded: a constant of the trace."""
    rec = _active_recorder()
    if rec is not None:
        rec.constant(v)
    return 0


cdef int _trace_touch(_Variable v, str what) except -1:
    """Python code looked at (or changed) a value the replay will not show it."""
    rec = _active_recorder()
    if rec is None or rec.reason is not None or id(v) in rec.made:
        return 0
    s = rec.slots.get(id(v))
    if s is None:
        whose = "a Variable from outside the function"
    elif rec.kinds[s] == _NODE:
        whose = "an intermediate Variable"
    elif rec.kinds[s] == _INPUT:
        whose = "an input Variable"
    else:
        return 0
    rec.reason = f"it {what} {whose}"
    return 0


# ---------------------------------------------------------------- recording

@cython.final
cdef class _Recorder:
    """What one eager run did, as slots (values) and nodes (table ops)."""
    cdef dict slots         # id(Variable or ndarray) -> slot
    cdef set made           # ids of Variables made inside the function (constants)
    cdef list keep          # the objects behind those ids, alive while recording
    cdef readonly list kinds    # slot -> _INPUT, _CONST or _NODE
    cdef readonly list objs     # slot -> the Variable/array/number eager saw there
    cdef list inputs        # input slot -> leaf index (int) or a captured Variable
    cdef readonly list input_slots
    cdef readonly list nodes    # (op template, operand slots, output slot, face)
    cdef bint scalar        # every op took the C scalar path
    cdef bint backprop
    cdef public object reason   # why this signature cannot be replayed

    def __init__(self, list leaves, bint backprop):
        self.slots = {}
        self.made = set()
        self.keep = []
        self.kinds = []
        self.objs = []
        self.inputs = []
        self.input_slots = []
        self.nodes = []
        self.scalar = not _pure
        self.backprop = backprop
        self.reason = None
        for i, leaf in enumerate(leaves):
            self._input(leaf, i)

    cdef Py_ssize_t _slot(self, object obj, int kind, bint by_id) except -1:
        cdef Py_ssize_t s = len(self.kinds)
        self.kinds.append(kind)
        self.objs.append(obj)
        if by_id:
            self.slots[id(obj)] = s
            self.keep.append(obj)
        return s

    cdef Py_ssize_t _input(self, object obj, object source) except -1:
        s = self._slot(obj, _INPUT, True)
        self.inputs.append(source)
        self.input_slots.append(s)
        return s

    cdef int constant(self, object v) except -1:
        self.made.add(id(v))
        self.keep.append(v)
        return 0

    cdef bint _traced(self, object a):
        """Does operand ``a`` carry a value that changes between calls?"""
        if isinstance(a, _Variable):
            s = self.slots.get(id(a))
            if s is not None:
                return self.kinds[s] != _CONST
            return id(a) not in self.made      # else a Variable from outside: captured
        if isinstance(a, _ndarray):
            s = self.slots.get(id(a))
            return s is not None and self.kinds[s] == _INPUT
        return False

    cdef Py_ssize_t _operand(self, object a) except -1:
        s = self.slots.get(id(a)) if isinstance(a, (_Variable, _ndarray)) else None
        if s is not None:
            return s
        if isinstance(a, _Variable):
            if id(a) in self.made:
                return self._slot(a, _CONST, True)
            return self._input(a, a)        # captured from the enclosing scope
        return self._slot(a, _CONST, isinstance(a, _ndarray))

    cdef int record(self, Function f, tuple args, object face, object out) except -1:
        if self.reason is not None:
            return 0
        if not any([self._traced(a) for a in args]):
            # Constants only: the result is a constant too.
            for o in (out if isinstance(out, list) else [out]):
                self.constant(o)
            return 0
        if not f._table and not _is_full_sum(f, args):
            self.reason = (f"it calls {type(f).__name__}, which is not an op of "
                           f"fastgrad's table")
            return 0
        if _backprop_enabled() != self.backprop:
            self.reason = "it switches Config.enable_backprop inside"
            return 0
        operands = tuple([self._operand(a) for a in args])
        if not (<_Variable>out)._lazy:
            self.scalar = False
        template = (<_TableOp>f)._fresh() if f._table else _SUM
        self.nodes.append((template, operands, self._slot(out, _NODE, True), face))
        return 0

    cdef _Plan finish(self, object result, str name):
        cdef _Plan plan = _Plan.__new__(_Plan)
        plan.name = name
        plan.reason = self.reason
        if plan.reason is not None:
            return plan
        if isinstance(result, _Variable):
            container, items = 0, [result]
        elif type(result) is tuple or type(result) is list:
            container, items = (1 if type(result) is tuple else 2), list(result)
        else:
            plan.reason = (f"it returns a {type(result).__name__}, not a Variable or a "
                           f"tuple or list of Variables")
            return plan
        ret = []
        for r in items:
            s = self.slots.get(id(r)) if isinstance(r, _Variable) else None
            if s is None or self.kinds[s] == _CONST:
                plan.reason = "it returns a value that does not depend on its inputs"
                return plan
            ret.append(s)
        plan._build(self, container, ret)
        return plan


cdef object _SUM = ("sum",)      # a node that sums all elements (fastgrad's Sum)


cdef bint _is_full_sum(Function f, tuple args):
    return (len(args) == 1 and type(f) is _functions().Sum
            and getattr(f, "axis", 0) is None and not getattr(f, "keepdims", True))


# ---------------------------------------------------------------- plans

cdef struct _PlanOp:
    PyObject* op        # a _TableOp template (borrowed from _Plan.ops)
    int nargs
    int a, b            # operand slots
    int out             # result slot
    int code            # the op's number (_TableOp._scalar_code)
    char act[2]         # per operand, when every op gets a grad: _SKIP, _SET, _ADD, _GIVE
    double p[3]         # the op's constants (scalar plans)


@cython.final
cdef class _Plan:
    """One recorded signature: immutable once built, so threads may share it."""
    cdef str name
    cdef object reason          # not None: the signature runs eagerly
    cdef bint scalar
    cdef Py_ssize_t nslots, nin, nnodes, nout, rel_gen
    cdef _PlanOp* nodes         # live ops in recorded order
    cdef int* order             # backward order (indexes into nodes)
    cdef double* init           # slot values: the constants (scalar plans)
    cdef char* kinds
    cdef int* in_slot           # input -> slot
    cdef int* out_slot          # output -> slot (distinct op results)
    cdef int* slot_out          # slot -> output, or -1
    cdef list ops               # templates, alive for nodes[k].op
    cdef list faces             # per node: the face argument eager passed
    cdef list consts            # slot -> the constant operand (else None)
    cdef list sources           # input -> leaf index, or weakref to a captured Variable
    cdef list captured          # input -> (type, shape, dtype) of a captured Variable, or None
    cdef list out_cls
    cdef list ret               # returned items: ("o", output) or ("i", input)
    cdef bint leaves_only       # the inputs are the call's leaves (nothing captured)
    cdef int* in_target         # input -> index among the Variable inputs, or -1
    cdef int* slot_in           # slot -> input, or -1
    # fused array plans: one pass forward, one pass backward
    cdef bint fused
    cdef bint sum_last          # the result is the sum of the last op's array
    cdef object shape
    cdef int typenum
    cdef Program fprog, bprog   # the forward and backward programs
    cdef tuple fparams, bparams
    cdef bint exact_pow         # the ops' powers take NumPy's exact cases only
    cdef tuple bgrad            # the inputs bprog's outputs are the grads of
    cdef int container          # 0 one Variable, 1 tuple, 2 list

    def __dealloc__(self):
        free(self.nodes)
        free(self.order)
        free(self.init)
        free(self.kinds)
        free(self.in_slot)
        free(self.out_slot)
        free(self.slot_out)
        free(self.in_target)
        free(self.slot_in)

    cdef int _build(self, _Recorder rec, int container, list ret) except -1:
        cdef Py_ssize_t k, s, j
        cdef _PlanOp* n
        node_of = {rec.nodes[k][2]: k for k in range(len(rec.nodes))}
        # Only the ops the results depend on (dead code is dropped).
        live = set()
        stack = [node_of[s] for s in ret if s in node_of]
        while stack:
            k = stack.pop()
            if k in live:
                continue
            live.add(k)
            stack.extend([node_of[s] for s in rec.nodes[k][1] if s in node_of])
        kept = sorted(live)
        self.nslots = len(rec.kinds)
        self.nin = len(rec.inputs)
        self.nnodes = len(kept)
        self.container = container
        self.nodes = <_PlanOp*>malloc(max(1, self.nnodes) * sizeof(_PlanOp))
        self.order = <int*>malloc(max(1, self.nnodes) * sizeof(int))
        self.init = <double*>malloc(max(1, self.nslots) * sizeof(double))
        self.kinds = <char*>malloc(max(1, self.nslots))
        self.in_slot = <int*>malloc(max(1, self.nin) * sizeof(int))
        self.out_slot = <int*>malloc(max(1, len(ret)) * sizeof(int))
        self.slot_out = <int*>malloc(max(1, self.nslots) * sizeof(int))
        if (self.nodes == NULL or self.order == NULL or self.init == NULL or self.kinds == NULL
                or self.in_slot == NULL or self.out_slot == NULL or self.slot_out == NULL):
            raise MemoryError()
        self.scalar = rec.scalar
        self.consts = [None] * self.nslots
        for s in range(self.nslots):
            self.kinds[s] = rec.kinds[s]
            self.slot_out[s] = -1
            self.init[s] = 0.0
            if rec.kinds[s] == _CONST:
                c = rec.objs[s]
                if isinstance(c, _Variable):
                    c = (<_Variable>c)._get_data()
                self.consts[s] = c
                if self.scalar and not _const_value(c, &self.init[s]):
                    self.scalar = False
        self.sources = []
        self.captured = []
        self.leaves_only = True
        self.in_target = <int*>malloc(max(1, self.nin) * sizeof(int))
        self.slot_in = <int*>malloc(max(1, self.nslots) * sizeof(int))
        if self.in_target == NULL or self.slot_in == NULL:
            raise MemoryError()
        for s in range(self.nslots):
            self.slot_in[s] = -1
        for j in range(self.nin):
            self.slot_in[rec.input_slots[j]] = j
        nvars = 0
        for j in range(self.nin):
            self.in_slot[j] = rec.input_slots[j]
            if isinstance(rec.objs[rec.input_slots[j]], _Variable):
                self.in_target[j] = nvars
                nvars += 1
            else:
                self.in_target[j] = -1
                self.scalar = False     # an array argument: the eager replay
            src = rec.inputs[j]
            if type(src) is int:
                self.sources.append(src)
                self.captured.append(None)
            else:
                self.leaves_only = False
                self.sources.append(weakref.ref(src))
                d = (<_Variable>src)._get_data()
                self.captured.append((type(src), d.shape, d.dtype))
        self.ops = []
        self.faces = []
        for j, k in enumerate(kept):
            template, operands, out, face = rec.nodes[k]
            n = &self.nodes[j]
            n.op = <PyObject*>template
            n.nargs = len(operands)
            n.a = operands[0]
            n.b = operands[1] if n.nargs > 1 else -1
            n.out = out
            n.p[0] = n.p[1] = n.p[2] = 0.0
            n.code = 0 if template is _SUM else (<_TableOp>template)._scalar_code()
            if template is _SUM:
                self.scalar = False
            elif self.scalar and not (<_TableOp>template)._scalar_params(n.p):
                self.scalar = False
            self.ops.append(template)
            self.faces.append(face)
        self.nout = 0
        self.out_cls = []
        self.ret = []
        for s in ret:
            if rec.kinds[s] == _INPUT:
                self.ret.append(("i", rec.input_slots.index(s)))
                continue
            if self.slot_out[s] < 0:
                self.slot_out[s] = self.nout
                self.out_slot[self.nout] = s
                self.out_cls.append(type(rec.objs[s]))
                self.nout += 1
            self.ret.append(("o", self.slot_out[s]))
        self._schedule(rec, kept)
        if not self.scalar and not _pure and self.nout == 1 and len(self.ret) == 1:
            try:
                self._fuse(rec, kept)
            except _NotFusable:
                self.fused = False
        return 0

    cdef int _schedule(self, _Recorder rec, list kept) except -1:
        """The backward order: the engine's queue, run on the plan's ops."""
        cdef Py_ssize_t k, s
        gen = [0] * self.nslots             # inputs at generation 0
        creator = {}
        for k in range(self.nnodes):
            g = max([gen[s] for s in rec.nodes[kept[k]][1]])
            gen[self.nodes[k].out] = g + 1
            creator[self.nodes[k].out] = k
        self.rel_gen = max([gen[self.out_slot[k]] for k in range(self.nout)] + [1]) - 1
        queue = []
        counter = 0
        seen = set()
        for k in range(self.nout):
            f = creator[self.out_slot[k]]
            if f not in seen:
                seen.add(f)
                counter += 1
                heapq.heappush(queue, (-(gen[self.out_slot[k]] - 1), -counter, f))
        count = 0
        reached = set()
        while queue:
            f = heapq.heappop(queue)[2]
            self.order[count] = f
            count += 1
            for i, s in enumerate(rec.nodes[kept[f]][1]):
                kind = rec.kinds[s]
                act = _SKIP if kind == _CONST else _GIVE if kind == _INPUT else (
                    _ADD if s in reached else _SET)
                self.nodes[f].act[i] = act
                reached.add(s)
            for s in rec.nodes[kept[f]][1]:
                if s in creator and creator[s] not in seen:
                    seen.add(creator[s])
                    counter += 1
                    heapq.heappush(queue, (-(gen[s] - 1), -counter, creator[s]))
        return 0

    cdef list _inputs_now(self, list leaves):
        """The input objects for this call; None if a captured Variable changed."""
        if self.leaves_only:
            return leaves
        ins = []
        for j in range(self.nin):
            src = self.sources[j]
            if type(src) is int:
                ins.append(leaves[src])
                continue
            v = src()
            if v is None:
                return None
            expect = self.captured[j]
            d = (<_Variable>v)._get_data()
            if d is None or type(v) is not expect[0] or d.shape != expect[1] or d.dtype != expect[2]:
                return None
            ins.append(v)
        return ins

    cdef object _result(self, list outs, list ins):
        if self.container == 0 and self.nout == 1:
            return outs[0]
        items = [outs[j] if kind == "o" else ins[j] for kind, j in self.ret]
        if self.container == 0:
            return items[0]
        return tuple(items) if self.container == 1 else items

    cdef object replay(self, list leaves):
        """This call's results, or None if the plan no longer applies."""
        ins = self._inputs_now(leaves)
        if ins is None:
            return None
        if self.scalar:
            return self._replay_scalar(ins)
        if self.fused:
            out = self._replay_fused(ins)
            if out is not None:
                return out
        vals = self._run_eager(ins)
        return self._result([vals[self.out_slot[j]] for j in range(self.nout)], ins)

    cdef list _run_eager(self, list ins):
        """Run the ops through the eager engine (arrays, or a graph to rebuild)."""
        cdef Py_ssize_t j, k
        cdef _PlanOp* n
        vals = list(self.consts)
        for j in range(self.nin):
            vals[self.in_slot[j]] = ins[j]
        for k in range(self.nnodes):
            n = &self.nodes[k]
            if n.op == <PyObject*>_SUM:
                vals[n.out] = _functions().sum(vals[n.a])
                continue
            args = (vals[n.a],) if n.nargs == 1 else (vals[n.a], vals[n.b])
            vals[n.out] = _call_eager((<_TableOp>n.op)._fresh(), args, self.faces[k])
        return vals

    cdef object _replay_scalar(self, list ins):
        cdef Py_ssize_t j, k
        cdef _PlanOp* n
        cdef double x[2]
        cdef _Variable v
        cdef double* vals = <double*>malloc(max(1, self.nslots) * sizeof(double))
        if vals == NULL:
            raise MemoryError()
        memcpy(vals, self.init, self.nslots * sizeof(double))
        cdef Py_ssize_t gen = 0
        for j in range(self.nin):
            v = <_Variable>ins[j]
            if not v._value(&vals[self.in_slot[j]]):
                free(vals)
                return None
            if v._gen > gen:
                gen = v._gen
        for k in range(self.nnodes):
            n = &self.nodes[k]
            x[0] = vals[n.a]
            if n.nargs > 1:
                x[1] = vals[n.b]
            vals[n.out] = _scalar_op_forward(n.code, x, n.p)
        outs = [_lazy_var(vals[self.out_slot[j]], self.out_cls[j]) for j in range(self.nout)]
        if not _backprop_enabled():
            free(vals)
            return self._result(outs, ins)
        cdef _TracedCall node = <_TracedCall>_tp_new(_TracedCall, _empty_tuple)
        node.plan = self
        node.vals = vals
        node._inputs = node.all_inputs = tuple(ins)
        node._gen = gen + self.rel_gen
        node._has_gen = True
        _link_outputs(node, outs)
        return self._result(outs, ins)

    # ------------------------------------------------------------ fused arrays

    cdef int _fuse(self, _Recorder rec, list kept) except -1:
        """Compile the plan into one forward and one backward program for the
        fused evaluator (fastgrad._eval), if every op and value allows it: table
        ops whose instructions are the eager path's own, on C arrays of one
        shape and float dtype, Python numbers as constants, and at most a
        final sum."""
        cdef Py_ssize_t k
        cdef _PlanOp last = self.nodes[self.nnodes - 1]
        self.sum_last = last.op == <PyObject*>_SUM
        for k in range(self.nnodes - 1 if self.sum_last else self.nnodes):
            if self.nodes[k].op == <PyObject*>_SUM:
                raise _NotFusable()
        # Every array the programs touch: the inputs and the live results.
        slots = list(rec.input_slots) + [self.nodes[k].out for k in range(self.nnodes)]
        if self.sum_last:
            slots.pop()
        like = None
        for s in slots:
            a = rec.objs[s]
            if isinstance(a, _Variable):
                a = (<_Variable>a)._get_data()
            if type(a) is not _ndarray or a.dtype.kind != "f" or a.dtype.itemsize not in (4, 8) \
                    or a.size == 0 or (like is not None and (a.shape != like.shape
                                                             or a.dtype != like.dtype)):
                raise _NotFusable()
            like = a
        self.shape = like.shape
        self.typenum = cnp.PyArray_TYPE(<cnp.ndarray>like)
        self.exact_pow = any([type(t) is not tuple and (<Function>t)._full and not _keep_dtype_on()
                              for t in self.ops])
        forward = _Compiler(self, rec, kept, self.nin)
        regs = forward.forward()
        self.fprog, self.fparams = forward.program([regs[last.a if self.sum_last else last.out]])
        # The backward reads the inputs and the output's grad: an array, or
        # for a final sum the 0-d grad of the sum, broadcast.
        backward = _Compiler(self, rec, kept, self.nin + 1)
        regs = backward.forward()
        adj = {(last.a if self.sum_last else last.out): self.nin}
        for k in range(self.nnodes):
            backward.adjoint(self.order[k], regs, adj)
        grads = [(j, adj[self.in_slot[j]]) for j in range(self.nin)
                 if self.in_target[j] >= 0 and self.in_slot[j] in adj]
        self.bprog, self.bparams = backward.program([r for _, r in grads])
        self.bgrad = tuple([j for j, _ in grads])
        self.fused = True
        return 0

    cdef list _plan_arrays(self, list ins):
        """The inputs' arrays if they have the recorded shape and dtype."""
        arrays = []
        for a in ins:
            if isinstance(a, _Variable):
                a = (<_Variable>a)._get_data()
            if (type(a) is not _ndarray or cnp.PyArray_TYPE(<cnp.ndarray>a) != self.typenum
                    or a.shape != self.shape):
                return None
            arrays.append(a)
        return arrays

    cdef object _replay_fused(self, list ins):
        arrays = self._plan_arrays(ins)
        if arrays is None:
            return None         # a reshaped input: the eager replay
        out = evaluate(self.fprog, tuple(arrays), self.fparams, None, self.exact_pow)
        if out is None:
            return None         # a strided input: the eager replay
        if self.sum_last:
            out = _as_nd(out.sum(axis=None, keepdims=False))
        cdef _Variable y = _wrap_data(out, self.out_cls[0])
        if not _backprop_enabled():
            return y
        cdef _TracedCall node = <_TracedCall>_tp_new(_TracedCall, _empty_tuple)
        node.plan = self
        node.all_inputs = tuple(ins)
        node._inputs = tuple([a for a in ins if isinstance(a, _Variable)])
        gen = 0
        for v in node._inputs:
            if (<_Variable>v)._gen > gen:
                gen = (<_Variable>v)._gen
        node._gen = gen + self.rel_gen
        node._has_gen = True
        node.arrays = tuple(arrays)
        _link_outputs(node, [y])
        return y


class _NotFusable(Exception):
    pass


cdef object _rows_by_class = None


class _Compiler:
    """Builds one evaluator program from the table's formulas for a plan.

    Registers below ``nfixed`` are arrays read in place (the inputs, then
    the output grad); every op's formulas are emitted with its recorded
    constants as immediates, then registers are allocated by liveness.
    """

    def __init__(self, plan, rec, kept, nfixed):
        global _rows_by_class
        if _rows_by_class is None:
            from fastgrad._optable import OPS
            _rows_by_class = {op.class_name: op for op in OPS}
        self.rec, self.plan_kept, self.nfixed = rec, kept, nfixed
        self.builder = _formulas.Builder(nfixed)

    def node(self, k):
        """(table row, its constants, its operand slots) of live op ``k``."""
        template, operands, out, face = self.rec.nodes[self.plan_kept[k]]
        row = _rows_by_class.get(type(template).__name__)
        if row is None:
            raise _NotFusable()
        params = {}
        for p in row.params:
            v = getattr(template, p[0])
            if type(v) not in (int, float):
                raise _NotFusable()
            params[p[0]] = v
        return row, params, operands

    def formula(self, text, names, params):
        self.builder.params = params
        try:
            return self.builder.formula(text, names)
        except _formulas.NotCompilable:
            raise _NotFusable() from None

    def operand(self, s, regs):
        rec = self.rec
        if rec.kinds[s] == _CONST:
            c = rec.objs[s]
            if type(c) not in (int, float, bool):
                raise _NotFusable()
            return self.builder.emit("CONST", value=c)
        return regs[s]

    def forward(self):
        """Emit every op's forward; returns slot -> register."""
        regs = {plan_in: j for j, plan_in in enumerate(self.rec.input_slots)}
        for k in range(len(self.plan_kept)):
            template, operands, out, face = self.rec.nodes[self.plan_kept[k]]
            if template is _SUM:
                continue
            row, params, operands = self.node(k)
            xs = [self.operand(s, regs) for s in operands]
            regs[out] = self.formula(row.forward, dict(zip(row.inputs, xs)), params)
        return regs

    def adjoint(self, k, regs, adj):
        """Emit op ``k``'s derivatives, added into its operands' adjoints in
        the order the eager backward delivers them."""
        template, operands, out, face = self.rec.nodes[self.plan_kept[k]]
        if template is _SUM or out not in adj:
            return
        row, params, operands = self.node(k)
        names = dict(zip(row.inputs, [self.operand(s, regs) for s in operands]))
        names.update(gy=adj[out], y=regs[out])
        for i, s in enumerate(operands):
            if self.rec.kinds[s] == _CONST:
                continue
            g = self.formula(row.grads[i], names, params)
            adj[s] = g if s not in adj else self.builder.emit("ADD", adj[s], g)

    def program(self, outputs):
        """The Program computing ``outputs`` and its parameter values."""
        b = self.builder
        code = _formulas.fold_constants(b.code, set(outputs))
        code, nregs, outs = _formulas.allocate(code, self.nfixed, outputs)
        try:
            prog = Program(self.nfixed, nregs, outs, code, tuple(b.param_exprs))
        except ValueError:      # too many registers or outputs for the evaluator
            raise _NotFusable() from None
        return prog, b.param_values()


cdef inline bint _const_value(object c, double* out):
    """A constant operand as the C scalar path saw it."""
    if _c_number(c, out):
        return True
    if _is_f64_scalar_array(c):
        out[0] = _array_value(c)
        return True
    return False


cdef int _link_outputs(Function f, list outs) except -1:
    """Make ``f`` the creator of ``outs`` (lazy float64 scalars)."""
    cdef Py_ssize_t i, n = len(outs)
    cdef _Variable out
    if n > 1:
        f._outs = <PyObject**>malloc(n * sizeof(PyObject*))
        if f._outs == NULL:
            raise MemoryError()
        f._meta = [((), _float64)] * n
    f._nout = n
    for i in range(n):
        out = <_Variable>outs[i]
        f._out_ptrs()[i] = <PyObject*>out
        out._creator = f
        out._gen = f._gen + 1
        out._slot = i
    return 0


# ---------------------------------------------------------------- backward

@cython.final
@cython.trashcan(True)
cdef class _TracedCall(Function):
    """A replayed call of a traced function: one node of the graph for the
    whole plan (``plot_dot_graph`` draws it as one box)."""
    cdef _Plan plan
    cdef tuple all_inputs       # every input (Variables and arrays), in plan order
    cdef tuple arrays           # fused plans: the inputs' arrays
    cdef double* vals           # scalar plans: every slot's value in this call
    cdef double* kept           # inner grads after backward(retain_grad=True)

    def __dealloc__(self):
        free(self.vals)
        free(self.kept)

    @property
    def dot_label(self):
        return f"trace({self.plan.name}): {self.plan.nnodes} ops"

    @property
    def op_count(self):
        """How many recorded ops this call replayed."""
        return self.plan.nnodes

    cdef int _backward_arrays(self, bint retain_grad) except -1:
        return _step_traced(self, retain_grad)

    cdef int _backward_graph(self, bint retain_grad) except -1:
        # The plan has no graph to record: rebuild the call's eager graph.
        return _step_traced_eagerly(self, retain_grad, True)

    def forward(self, *xs):
        raise TypeError("a traced call's forward ran when it was replayed; "
                        "call the traced function instead")

    def backward(self, *gys):
        raise TypeError("a traced call's backward runs inside Variable.backward()")


cdef int _step_traced(_TracedCall node, bint retain_grad) except -1:
    """The recorded adjoint, in C, in the order eager backward would use."""
    cdef _Plan plan = node.plan
    cdef Py_ssize_t j, k, i, t, nout = node._nout
    cdef PyObject** outs = node._out_ptrs()
    cdef _Variable o
    cdef _PlanOp* n
    cdef _PlanOp* nodes
    cdef int* order
    cdef char* kinds
    cdef char kind
    cdef bint restored
    cdef double x[2]
    cdef double g[2]
    cdef double* vals = node.vals
    if node._inputs is None:
        return 0
    if plan.fused:
        return _step_fused(node, retain_grad)
    for j in range(nout):          # only float64 scalar grads take the C loop
        if outs[j] != NULL:
            o = <_Variable>outs[j]
            if o._has_grad() and not o._glazy and not _is_f64_scalar_array(o._grad):
                return _step_traced_eagerly(node, retain_grad, False)
    cdef size_t size = max(1, plan.nslots) * (sizeof(double) + 1)
    cdef double* G = <double*>malloc(size)
    if G == NULL:
        raise MemoryError()
    cdef char* has = <char*>(G + plan.nslots)
    try:
        restored = node.kept != NULL
        if restored:
            # Inner grads retained by the last backward add up, as eager's do.
            memcpy(G, node.kept, size)
            free(node.kept)
            node.kept = NULL
        else:
            for t in range(plan.nslots):
                has[t] = 0
        for j in range(nout):
            t = plan.out_slot[j]
            has[t] = 0
            if outs[j] == NULL:
                continue
            o = <_Variable>outs[j]
            if o._glazy:
                G[t] = o._gv
                has[t] = 1
            elif o._grad is not None:
                G[t] = _array_value(o._grad)
                has[t] = 1
            if not retain_grad:
                _clear_grad(o)
        nodes, order, kinds = plan.nodes, plan.order, plan.kinds
        if nout == 1 and has[plan.out_slot[0]] and not (retain_grad or restored):
            # One result with a grad: every op gets one, in a known order, so
            # which contribution comes first is known when the plan is built.
            for k in range(plan.nnodes):
                n = &nodes[order[k]]
                x[0] = vals[n.a]
                if n.nargs > 1:
                    x[1] = vals[n.b]
                _scalar_op_backward(n.code, G[n.out], x, vals[n.out], n.p, g)
                for i in range(n.nargs):
                    t = n.a if i == 0 else n.b
                    kind = n.act[i]
                    if kind == _SET:
                        G[t] = g[i]
                    elif kind == _ADD:
                        G[t] += g[i]
                    elif kind == _GIVE:
                        _deliver_scalar(<_Variable>PyTuple_GET_ITEM(node._inputs,
                                                                      plan.slot_in[t]), g[i])
            return 0
        for k in range(plan.nnodes):
            n = &nodes[order[k]]
            t = n.out
            if not has[t]:
                continue
            x[0] = vals[n.a]
            if n.nargs > 1:
                x[1] = vals[n.b]
            _scalar_op_backward(n.code, G[t], x, vals[t], n.p, g)
            for i in range(n.nargs):
                t = n.a if i == 0 else n.b
                kind = kinds[t]
                if kind == _NODE:
                    if has[t]:
                        G[t] += g[i]
                    else:
                        G[t] = g[i]
                        has[t] = 1
                elif kind == _INPUT:
                    _deliver_scalar(<_Variable>PyTuple_GET_ITEM(node._inputs,
                                                                  plan.slot_in[t]), g[i])
        if retain_grad:
            for j in range(nout):   # an output also used inside got more
                t = plan.out_slot[j]
                if outs[j] != NULL and has[t]:
                    o = <_Variable>outs[j]
                    o._grad = None
                    o._gv = G[t]
                    o._glazy = True
            node.kept = G
            G = NULL
    finally:
        free(G)
    return 0


cdef int _step_fused(_TracedCall node, bint retain_grad) except -1:
    """A fused plan's backward: one pass over the inputs and the grad."""
    cdef _Plan plan = node.plan
    cdef Py_ssize_t k
    if node._out1 == NULL or not (<_Variable>node._out1)._has_grad():
        return 0
    cdef _Variable o = <_Variable>node._out1
    gy = _grad_array(o)
    eager = plan.sum_last and not (type(gy) is _ndarray and gy.shape == ())
    for j in plan.bgrad:
        # A grad already there would be added to once per contribution.
        eager = eager or (<_Variable>node.all_inputs[j])._has_grad()
    outs = None
    if not eager:
        outs = evaluate(plan.bprog, node.arrays + (gy,), plan.bparams, None, plan.exact_pow)
    if outs is None:        # a grad of another dtype or layout
        return _step_traced_eagerly(node, retain_grad, False)
    if not retain_grad:
        _clear_grad(o)
    if type(outs) is not tuple:
        outs = (outs,)
    gy = None
    for k in range(len(plan.bgrad)):
        _deliver(<_Variable>node.all_inputs[plan.bgrad[k]], outs[k], True)
    return 0


cdef int _step_traced_eagerly(_TracedCall node, bint retain_grad, bint create_graph) except -1:
    """Backward through a traced call by rebuilding its ops' eager graph.

    For ``create_graph`` (the plan has no graph to record; the signature
    runs eagerly from now on) and for grads that are not float64 scalars.
    """
    cdef _Plan plan = node.plan
    cdef PyObject** outs = node._out_ptrs()
    cdef _Variable o, r
    if node._inputs is None:
        return 0
    if create_graph and plan.reason is None:
        plan.reason = "a backward(create_graph=True) went through a replay"
        _warnings.warn(f"fastgrad.trace({plan.name}): {plan.reason}; this call "
                       f"signature runs eagerly from now on", TraceWarning, stacklevel=3)
    cdef bint was = _backprop_enabled()
    _set_backprop(True)
    try:
        vals = plan._run_eager(list(node.all_inputs))
    finally:
        _set_backprop(was)
    roots = []
    for j in range(node._nout):
        if outs[j] == NULL or not (<_Variable>outs[j])._has_grad():
            continue
        o = <_Variable>outs[j]
        r = <_Variable>vals[plan.out_slot[j]]
        r._grad = _grad_variable(o) if create_graph else _grad_array(o)
        r._glazy = False
        if r._creator is not None:
            roots.append(r._creator)
        if not retain_grad:
            _clear_grad(o)
    vals = None
    if roots:
        _run_backward(roots, retain_grad, create_graph, node._inputs)
    return 0


# ---------------------------------------------------------------- trace()

cdef int _signature(object a, list leaves, list key) except -1:
    """Append ``a``'s part of the call signature; Variables and arrays are
    leaves (inputs), anything else is a constant keyed by value."""
    cdef Py_ssize_t i
    t = type(a)
    if isinstance(a, (_Variable, _ndarray)):
        for i in range(len(leaves)):
            if leaves[i] is a:
                key.append(i)           # the same object twice
                return 0
        leaves.append(a)
        key.append(t)
        if isinstance(a, _Variable):
            if (<_Variable>a)._lazy:
                key.append(_F64_SCALAR)     # however the value is held
                return 0
            a = (<_Variable>a)._data
            if a is None:
                key.append(None)
                return 0
        if _is_f64_scalar_array(a):
            key.append(_F64_SCALAR)
        else:
            key.append((a.shape, a.dtype))
    elif t is tuple or t is list:
        key.append((t, len(a)))
        for item in a:
            _signature(item, leaves, key)
    elif t is dict:
        key.append((t, tuple(a)))
        for item in a.values():
            _signature(item, leaves, key)
    elif isinstance(a, (float, np.floating)):
        if a != a:
            key.append((t, "nan"))
        else:
            key.append((t, a, copysign(1.0, a)))    # 0.0 and -0.0 differ
    else:
        hash(a)
        key.append((t, a))
    return 0


@cython.final
cdef class Traced:
    """A function traced by :func:`trace`: call it like the function."""
    cdef object fn
    cdef dict plans
    cdef Py_ssize_t check
    cdef Py_ssize_t calls
    cdef bint warned_unhashable
    cdef bint warned_full
    cdef dict __dict__
    cdef object __weakref__

    def __init__(self, fn, check=None):
        if not callable(fn):
            raise TypeError(f"trace: expected a callable, got {type(fn).__name__}")
        if check is not None and (isinstance(check, bool) or not isinstance(check, int)):
            raise TypeError(f"trace: check must be a positive int or None, not {check!r}")
        if check is not None and check <= 0:
            raise ValueError(f"trace: check must be a positive int or None, not {check}")
        self.fn = fn
        self.plans = {}
        self.check = check or 0
        self.__name__ = getattr(fn, "__name__", type(fn).__name__)
        _functools.update_wrapper(self, fn)

    def __get__(self, obj, objtype):
        if obj is None:
            return self
        return _functools.partial(self, obj)

    def __call__(self, *args, **kwargs):
        if _is_recording() and _active_recorder() is not None:
            return self.fn(*args, **kwargs)     # inside another trace: inline
        cdef list leaves = []
        cdef list key = []
        try:
            for a in args:
                _signature(a, leaves, key)
            if kwargs:
                _signature(kwargs, leaves, key)
        except TypeError:
            if not self.warned_unhashable:
                self.warned_unhashable = True
                self._warn("an argument is neither a Variable, an array nor hashable")
            return self.fn(*args, **kwargs)
        key.append(_backprop_enabled())
        k = tuple(key)
        cdef _Plan plan = self.plans.get(k)
        if plan is None:
            return self._record(k, leaves, args, kwargs)
        if plan.reason is not None:
            return self.fn(*args, **kwargs)
        out = plan.replay(leaves)
        if out is None:     # a captured Variable died or changed shape
            return self._record(k, leaves, args, kwargs)
        if self.check:
            self.calls += 1
            if self.calls % self.check == 0:
                self._compare(out, args, kwargs)
        return out

    cdef object _record(self, object k, list leaves, tuple args, dict kwargs):
        if len(self.plans) >= _MAX_PLANS and k not in self.plans:
            if not self.warned_full:
                self.warned_full = True
                self._warn(f"it was called with more than {_MAX_PLANS} signatures")
            return self.fn(*args, **kwargs)
        rec = _Recorder(leaves, _backprop_enabled())
        _trace_state.recorder = rec
        _recording_add(1)
        try:
            out = self.fn(*args, **kwargs)
        finally:
            _recording_add(-1)
            _trace_state.recorder = None
        cdef _Plan plan = rec.finish(out, self.__name__)
        rec = None
        self.plans[k] = plan
        if plan.reason is not None:
            self._warn(plan.reason)
        return out

    cdef _warn(self, str reason):
        _warnings.warn(f"fastgrad.trace({self.__name__}): {reason}; this call "
                       f"signature runs eagerly", TraceWarning, stacklevel=3)

    cdef _compare(self, object out, tuple args, dict kwargs):
        cdef bint was = _backprop_enabled()
        _set_backprop(False)
        try:
            ref = self.fn(*args, **kwargs)
        finally:
            _set_backprop(was)
        got = [out] if isinstance(out, _Variable) else list(out)
        want = [ref] if isinstance(ref, _Variable) else list(ref)
        for i, (a, b) in enumerate(zip(got, want)):
            da = (<_Variable>a)._get_data()
            db = (<_Variable>b)._get_data() if isinstance(b, _Variable) else np.asarray(b)
            if da.dtype != db.dtype or not np.array_equal(da, db, equal_nan=True):
                raise TraceMismatchError(
                    f"fastgrad.trace({self.__name__}): output {i} of the replay is {da!r} "
                    f"but the eager run gives {db!r}; the function depends on something "
                    f"the trace baked in (a global, a closure value, NumPy code on an "
                    f"input). Call retrace() after changing it, or do not trace it")

    def retrace(self):
        """Drop every plan: the next call of each signature records again."""
        self.plans = {}

    def __repr__(self):
        cdef _Plan p
        parts = []
        for p in self.plans.values():
            parts.append("eager" if p.reason is not None else f"{p.nnodes} ops")
        n = len(parts)
        detail = f" ({', '.join(parts)})" if parts else ""
        return f"<traced {self.__name__}: {n} plan{'' if n == 1 else 's'}{detail}>"


def trace(fn=None, *, check=None):
    """Record ``fn`` once per call signature and replay it afterwards.

    The first call with a given signature -- which arguments are Variables
    or arrays, their shapes and dtypes, the other arguments' values, and
    ``Config.enable_backprop`` -- runs ``fn`` eagerly and records the ops it
    performs.  Later calls replay that recording without running ``fn``'s
    Python code: when every value is a float64 scalar, forward and backward
    run as C loops and the results get one creator for the whole call; when
    the ops are elementwise ops on float arrays of one shape (perhaps summed
    at the end), forward and backward are one fused pass each; otherwise the
    ops replay through the eager engine.  Values and grads are bit-identical
    to the eager run.

    What the recording bakes in: Python numbers and other non-array
    arguments (part of the signature), closure and global values, Python
    control flow, and NumPy code of ``fn``'s own on its array arguments.
    Variables from the enclosing scope are read at every call and get their
    gradients.  Where a replay could differ from running ``fn`` -- it reads
    or sets ``.data``/``.grad`` of a Variable it did not create, prints one,
    calls a function that is not one of the table's elementwise ops or a full
    ``sum`` (a user ``Function``, ``matmul``...), or a ``backward(create_graph=True)``
    goes through a replay -- that signature runs eagerly, with one
    :class:`TraceWarning` naming the reason.

    Parameters
    ----------
    fn : callable
        The function; ``trace`` also works as a decorator (``@trace`` or
        ``@trace(check=100)``).
    check : int, optional
        Every ``check``-th replay also runs ``fn`` eagerly (without a graph)
        and raises :class:`TraceMismatchError` if the values differ.

    Returns
    -------
    Traced
        Call it as ``fn``; ``retrace()`` drops the recordings, ``repr`` shows
        them.

    Examples
    --------
    >>> @trace
    ... def rosenbrock(x0, x1):
    ...     return 100 * (x1 - x0 ** 2) ** 2 + (x0 - 1) ** 2
    >>> x0, x1 = Variable(np.array(0.0)), Variable(np.array(2.0))
    >>> y = rosenbrock(x0, x1)      # recorded
    >>> y = rosenbrock(x0, x1)      # replayed in C
    >>> y.backward()
    >>> x0.grad, x1.grad
    (array(-2.), array(400.))
    """
    if fn is None:
        return _functools.partial(trace, check=check)
    return Traced(fn, check)


_install_tracer(_call_recorded, _trace_made, _trace_touch)
