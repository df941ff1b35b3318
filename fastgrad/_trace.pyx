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
* any other plan -- one calling Functions outside the table (matmul,
  losses, convolution, a user's Function) or taking the steps of training
  (cleargrad(), backward(), an optimizer's update()) -- replays its ops
  through the eager engine (_trace_graph.pxi), which builds the ordinary
  graph, without the Python around them.

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
    _STEP_BACKWARD, _STEP_BACKWARD_DONE,
    Function, _TableOp, _Variable, _array_value, _as_nd, _backprop_enabled, _c_number,
    _call_eager, _clear_grad, _deliver, _deliver_scalar, _dezero_rules, _functions,
    _grad_array, _grad_variable, _install_tracer, _is_f64_array, _is_f64_scalar_array,
    _is_recording, _keep_dtype_on, _lazy_var, _recording_add, _run_backward,
    _PlanOp, _scalar_op_backward, _scalar_run_forward, _set_backprop, _tp_new, _wrap_data)
from fastgrad._eval cimport Program, evaluate

from fastgrad import _formulas
from fastgrad._core import PURE, Config

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
    _MAX_RETRIES = 3    # recordings a signature may discard (lazy initialisation)
    _EV_CLEARGRAD = 0   # steps of a traced training step, besides its ops
    _EV_BACKWARD = 1
    _EV_CALL = 2


cdef inline _Recorder _active_recorder():
    return getattr(_trace_state, "recorder", None)


cdef object _call_recorded(Function f, tuple args, object face):
    """Function.__call__ while traces are being recorded (the engine's hook)."""
    rec = _active_recorder()
    state = None
    if rec is not None and not f._table:
        # What the constructor set: the replay's copy of ``f`` starts from it.
        state = getattr(f, "__dict__", None)
        state = dict(state) if state else None
    out = _call_eager(f, args, face)
    if rec is not None:
        rec.record(f, args, face, out, state)
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
            if rec is not None:
                rec.unfusable = True    # the graph replay computes them
            return 0
    return 0


cdef int _trace_made(_Variable v, str what) except -1:
    """Variable() inside a function being recorded: a constant of the trace,
    unless it wraps an array argument (then a new Variable at every replay)."""
    rec = _active_recorder()
    if rec is None:
        return 0
    s = rec.slots.get(id(v._data)) if v._data is not None else None
    if s is not None and rec.kinds[s] == _INPUT:
        rec.wrap(v, s)
    else:
        rec.constant(v)
    return 0


cdef int _trace_touch(_Variable v, str what) except -1:
    """Python code looked at (or changed) a value the replay will not show it."""
    rec = _active_recorder()
    if rec is None or rec.reason is not None or id(v) in rec.made:
        return 0
    s = rec.slots.get(id(v))
    if s is None or rec.captured_slot(s):
        if v._data is None and not v._lazy:
            rec.retry = True        # a layer initialising its parameters
            return 0
        if what == "reads .data of":
            # A layer checking or passing on its parameter's array, which
            # stays the same object: using it as an operand is refused.
            rec.outside_data[id(v._data)] = v._data
            return 0
        whose = "a Variable from outside the function"
    elif rec.kinds[s] == _NODE:
        whose = "an intermediate Variable"
    elif rec.kinds[s] == _INPUT:
        whose = "an input Variable"
    else:
        return 0
    rec.reason = f"it {what} {whose}"
    return 0


cdef object _paused = _threading.local()    # .recorder, .depth: a backward() inside


cdef int _trace_step(_Variable v, int event, bint retain_grad, bint create_graph) except -1:
    """cleargrad() and backward() inside a function being recorded: steps of
    the replay.  Nothing a backward does is recorded (the replay runs it)."""
    if event == _STEP_BACKWARD_DONE:
        depth = getattr(_paused, "depth", 0)
        if depth:
            _paused.depth = depth - 1
            if depth == 1:
                _trace_state.recorder = _paused.recorder
                _paused.recorder = None
        return 0
    rec = _active_recorder()
    if event == _STEP_BACKWARD:
        if rec is None:
            if getattr(_paused, "depth", 0):
                _paused.depth += 1
            return 0
        rec.step_backward(v, retain_grad, create_graph)
        _paused.recorder = rec
        _paused.depth = 1
        _trace_state.recorder = None
        return 0
    if rec is not None:
        rec.step_cleargrad(v)
    return 0


def run_on_replay(fn):
    """Call ``fn()``; inside a function being traced, every replay calls it
    again at this point (with no recording while it runs).

    Optimizers use it for ``update()``, so a traced training step updates
    its parameters on every call.  ``fn`` is kept by the trace.
    """
    rec = _active_recorder()
    if rec is None:
        return fn()
    if rec.reason is None:
        rec.events.append((len(rec.nodes), _EV_CALL, fn))
    _trace_state.recorder = None
    try:
        return fn()
    finally:
        _trace_state.recorder = rec


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
    cdef public bint retry      # a Variable from outside was being initialised
    cdef public bint unfusable  # an op follows DeZero's float64 backward rules
    cdef bint graph             # ops or steps only the graph replay runs
    cdef list events            # (ops recorded before, _EV_*, details...)
    cdef dict outside_data      # id -> arrays read from Variables from outside

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
        self.events = []
        self.outside_data = {}
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

    cdef int wrap(self, _Variable v, Py_ssize_t src) except -1:
        """``Variable(x)`` of an array argument ``x``."""
        self.graph = True
        self.nodes.append((_WRAP, (src,), self._slot(v, _NODE, True), type(v)))
        return 0

    cdef bint captured_slot(self, Py_ssize_t s):
        """Slot ``s`` holds a Variable from the enclosing scope (a parameter)."""
        return self.kinds[s] == _INPUT and type(self.inputs[self.input_slots.index(s)]) is not int

    cdef int step_cleargrad(self, _Variable v) except -1:
        if v._data is None and not v._lazy and id(v) not in self.slots:
            self.retry = True       # a parameter not yet initialised
        if self.reason is None:
            self.graph = True
            self.events.append((len(self.nodes), _EV_CLEARGRAD, self._operand(v)))
        return 0

    cdef int step_backward(self, _Variable v, bint retain_grad, bint create_graph) except -1:
        if self.reason is not None:
            return 0
        s = self.slots.get(id(v))
        if create_graph:
            self.reason = "it calls backward(create_graph=True)"
        elif s is None or self.kinds[s] == _CONST:
            self.reason = "it calls backward() on a Variable that does not depend on its inputs"
        else:
            self.graph = True
            self.events.append((len(self.nodes), _EV_BACKWARD, s, retain_grad))
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
        if isinstance(a, _ndarray) and id(a) in self.outside_data and self.reason is None:
            self.reason = ("it uses the .data of a Variable from outside the function "
                           "as an operand")
        if isinstance(a, _Variable):
            if id(a) in self.made:
                return self._slot(a, _CONST, True)
            return self._input(a, a)        # captured from the enclosing scope
        return self._slot(a, _CONST, isinstance(a, _ndarray))

    cdef int record(self, Function f, tuple args, object face, object out,
                    object state) except -1:
        cdef _TableOp op
        if self.reason is not None:
            return 0
        if not any([self._traced(a) for a in args]):
            # Constants only: the result is a constant too.
            for o in (out if isinstance(out, list) else [out]):
                self.constant(o)
            return 0
        if _backprop_enabled() != self.backprop:
            self.reason = "it switches Config.enable_backprop inside"
            return 0
        operands = tuple([self._operand(a) for a in args])
        if isinstance(out, list):
            self.graph = True
            self.nodes.append(((type(f), state), operands,
                               tuple([self._slot(o, _NODE, True) for o in out]), face))
            return 0
        if not (<_Variable>out)._lazy:
            self.scalar = False
        if f._table:
            op = (<_TableOp>f)._fresh()
            op._full = f._full
            template = op
        elif _is_full_sum(f, args):
            template = _SUM
        else:
            # Any other Function: the replay calls a copy of it (its class,
            # made without __init__, and the attributes its constructor set).
            self.graph = True
            template = (type(f), state)
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
        elif result is None and self.events:
            container, items = 3, []        # a training step that returns nothing
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
        if self.graph:
            _build_graph(plan, self, container, ret)
        else:
            plan._build(self, container, ret)
        return plan


cdef object _SUM = ("sum",)      # a node that sums all elements (fastgrad's Sum)
cdef object _WRAP = ("wrap",)    # a node that wraps an array argument in a Variable
cdef object _STALE = ("stale",)  # a replay that no longer applies: record again


cdef bint _is_full_sum(Function f, tuple args):
    return (len(args) == 1 and type(f) is _functions().Sum
            and getattr(f, "axis", 0) is None and not getattr(f, "keepdims", True))


include "_trace_plan.pxi"
include "_trace_graph.pxi"
include "_trace_backward.pxi"


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
    cdef dict retries           # signature -> recordings discarded
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
        self.retries = {}
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
        key.append(Config.train)        # read by layers' Python code (dropout)
        key.append(_keep_dtype_on())    # which backward formulas the ops use
        k = tuple(key)
        cdef _Plan plan = self.plans.get(k)
        if plan is None:
            return self._record(k, leaves, args, kwargs)
        if plan.reason is not None:
            return self.fn(*args, **kwargs)
        out = plan.replay(leaves)
        if out is _STALE:   # a captured Variable died or changed shape
            return self._record(k, leaves, args, kwargs)
        if self.check and not plan.has_steps:
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
        if rec.retry and rec.reason is None:
            # A layer initialised its parameters: record the next call instead.
            tries = self.retries.get(k, 0) + 1
            self.retries[k] = tries
            if tries < _MAX_RETRIES:
                return out
            rec.reason = "it initialises a Variable from outside at every call"
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
        self.retries = {}

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
    ``Config.enable_backprop``, ``Config.train`` and ``Config.keep_dtype`` --
    runs ``fn`` eagerly and records the ops it performs.  Later calls replay
    that recording without running ``fn``'s Python code: when every value is
    a float64 scalar, forward and backward run as C loops and the results
    get one creator for the whole call; when the ops are elementwise ops on
    float arrays of one shape (perhaps summed at the end), forward and
    backward are one fused pass each; otherwise each op, a copy of the
    recorded Function, is called on this call's operands by the engine.
    Values and grads are bit-identical to the eager run.

    ``fn`` may be a whole training step: ``cleargrad()`` and ``backward()``
    on its Variables and an optimizer's ``update()`` (see
    :func:`run_on_replay`) are replayed at their place.  A model whose
    layers create their parameters on the first call is recorded on the
    second.

    What the recording bakes in: Python numbers and other non-array
    arguments (part of the signature), closure and global values, Python
    control flow, and NumPy code of ``fn``'s own on its array arguments.
    Variables from the enclosing scope are read at every call and get their
    gradients.  Where a replay could differ from running ``fn`` -- it reads
    or sets ``.data``/``.grad`` of a Variable it did not create (a layer may
    read its parameters' ``.data``, not use it as an operand), prints one,
    calls ``backward(create_graph=True)``, or a ``backward(create_graph=True)``
    goes through a replay -- that signature runs eagerly, with one
    :class:`TraceWarning` naming the reason.

    Parameters
    ----------
    fn : callable
        The function; ``trace`` also works as a decorator (``@trace`` or
        ``@trace(check=100)``).
    check : int, optional
        Every ``check``-th replay also runs ``fn`` eagerly (without a graph)
        and raises :class:`TraceMismatchError` if the values differ; not for
        a training step, which would update twice.

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


_install_tracer(_call_recorded, _trace_made, _trace_touch, _trace_step)
