# The engine's C interface (fastgrad/_core.pyx): what the tracer
# (fastgrad/_trace.pyx) cimports.  The engine never imports the tracer: the
# tracer installs its recording hooks here (_install_tracer), and the
# engine calls them only while a trace is being recorded.
#
# The classes' C attributes and inline methods live here (Cython's rule for
# a class another module uses); the functions below are called from other
# modules through the module's C-API capsule.
cimport cython
cimport numpy as cnp
from cpython.object cimport PyObject


cdef extern from "Python.h":
    ctypedef struct Py_tss_t:
        pass
    Py_tss_t* PyThread_tss_alloc()
    int PyThread_tss_create(Py_tss_t* key)
    void* PyThread_tss_get(Py_tss_t* key)
    int PyThread_tss_set(Py_tss_t* key, void* value)
    Py_ssize_t Py_REFCNT(PyObject* o)
    void PyObject_GC_Track(void* o)
    void PyObject_GC_UnTrack(void* o)
    int PyObject_GC_IsTracked(object o)


cdef extern from *:
    """
    /* type->tp_new without looking up and calling __new__ from Python */
    static PyObject *fastgrad_tp_new(PyObject *type, PyObject *args) {
        return ((PyTypeObject *)type)->tp_new((PyTypeObject *)type, args, NULL);
    }
    """
    object _tp_new "fastgrad_tp_new"(object type, object args)


# ---------------------------------------------------------------- arrays

cdef inline object _scalar_array(double v):
    cdef cnp.ndarray a = cnp.PyArray_SimpleNew(0, NULL, cnp.NPY_DOUBLE)
    (<double*>cnp.PyArray_DATA(a))[0] = v
    return a


cdef inline bint _is_f64_scalar_array(object a) noexcept:
    # A 0-d float64 ndarray the C path may read through its data pointer.
    if type(a) is not cnp.ndarray:
        return False
    cdef cnp.ndarray arr = <cnp.ndarray>a
    return (cnp.PyArray_NDIM(arr) == 0 and cnp.PyArray_TYPE(arr) == cnp.NPY_DOUBLE
            and cnp.PyArray_ISALIGNED(arr) and cnp.PyArray_ISNOTSWAPPED(arr))


cdef inline bint _is_f64_array(object a) noexcept:
    return type(a) is cnp.ndarray and cnp.PyArray_TYPE(<cnp.ndarray>a) == cnp.NPY_DOUBLE


cdef inline double _array_value(object a) noexcept:
    return (<double*>cnp.PyArray_DATA(<cnp.ndarray>a))[0]


# The cyclic GC would walk every node of a large graph on each collection.
# Nodes the engine makes for built-in ops hold only numbers, arrays and older
# nodes, so they cannot close a cycle: they are untracked.  Any setter that
# lets a user store an arbitrary object tracks the node again.
cdef inline void _untrack(object o) noexcept:
    PyObject_GC_UnTrack(<void*>o)


# ---------------------------------------------------------------- data model

cdef class Function


cdef class _Variable:
    cdef object _data
    cdef object _grad
    cdef object _creator
    cdef object _name
    cdef object __weakref__
    cdef double _sv             # the value while _lazy
    cdef double _gv             # the grad while _glazy
    cdef Py_ssize_t _gen
    cdef Py_ssize_t _slot       # index among the creator's outputs
    cdef bint _lazy             # data is the float64 scalar _sv, not yet an array
    cdef bint _glazy            # grad is the float64 scalar _gv, not yet an array
    cdef bint _const            # made by the engine from a non-Variable operand

    cdef int _set_grad(self, object value, bint variable_ok) except -1
    cdef int _seed(self, bint as_variable) except -1
    cdef int _backward_from(self, bint retain_grad, bint create_graph) except -1

    cdef inline void _unlink(self) noexcept:
        # Clear the creator's borrowed pointer to this output, if it is ours.
        cdef Function f
        cdef PyObject** outs
        if self._creator is not None:
            f = <Function>self._creator
            outs = f._out_ptrs()
            if self._slot < f._nout and outs[self._slot] == <PyObject*>self:
                outs[self._slot] = NULL

    cdef inline object _get_data(self):
        if self._lazy:
            self._data = _scalar_array(self._sv)
            self._lazy = False
        return self._data

    cdef inline object _get_grad(self):
        if self._glazy:
            self._grad = _scalar_array(self._gv)
            self._glazy = False
        return self._grad

    cdef inline bint _value(self, double* out) noexcept:
        """Store the value in ``out`` if it is a float64 scalar the C path may use."""
        if self._lazy:
            out[0] = self._sv
            return True
        if _is_f64_scalar_array(self._data):
            out[0] = _array_value(self._data)
            return True
        return False

    cdef inline bint _has_grad(self) noexcept:
        return self._glazy or self._grad is not None


cdef class _GraphVariable(_Variable):
    pass


cdef class Function:
    cdef object __weakref__
    cdef tuple _inputs          # a tuple: one allocation, items inline
    cdef object _meta           # (shape, dtype) of each output, several outputs only
    cdef PyObject* _out1        # the single output's borrowed pointer
    cdef PyObject** _outs       # several outputs' borrowed pointers, else NULL
    cdef Py_ssize_t _nout
    cdef Py_ssize_t _gen
    cdef unsigned long long _stamp
    cdef bint _has_gen
    cdef bint _table            # an op of the table, of its exact declared class
    cdef bint _full             # called on the full face (fastgrad.dezero)

    cdef inline PyObject** _out_ptrs(self) noexcept:
        # Borrowed pointers to the outputs; an output clears its own on death.
        return self._outs if self._outs != NULL else &self._out1

    # One backward step, as the driver runs it: table ops, GraphFunctions
    # and the tracer's replayed calls override these.
    cdef int _backward_arrays(self, bint retain_grad) except -1
    cdef object _graph_grads(self, list gys)
    cdef int _backward_graph(self, bint retain_grad) except -1
    cdef int _set_outputs(self, list outs) except -1


cdef class GraphFunction(Function):
    pass


cdef class _TableOp(Function):
    cdef object _declared(self)
    cdef int _arity(self) noexcept
    cdef _TableOp _fresh(self)
    cdef tuple _array_backward(self, object gy, object buf, int need, bint exact)
    cdef tuple _array_backward_dz(self, object gy, object buf, int need)
    cdef bint _dz_sensitive(self) noexcept
    cdef bint _scalar_params(self, double* p)
    cdef int _scalar_code(self) noexcept
    cdef double _scalar_forward(self, const double* x, const double* p) noexcept
    cdef void _scalar_backward(self, double gy, const double* x, double y,
                               const double* p, double* g) noexcept
    cdef object _output_data(self)
    cdef object _output_var(self)


cdef inline _Variable _lazy_var(double v, object cls):
    """A new Variable of class ``cls`` holding the float64 scalar ``v`` in C."""
    cdef _Variable var = <_Variable>_tp_new(cls, ())
    _untrack(var)
    var._sv = v
    var._lazy = True
    return var


cdef inline _Variable _wrap_data(object data, object cls):
    cdef _Variable var = <_Variable>_tp_new(cls, ())
    var._data = data
    return var


cdef inline object _grad_array(_Variable v):
    """``v``'s gradient as an ndarray (or None), whatever holds it."""
    g = v._get_grad()
    if g is not None and isinstance(g, _Variable):
        return (<_Variable>g)._get_data()
    return g


# ---------------------------------------------------------------- functions

# Configuration (per thread: enable_backprop; per process: keep_dtype).
cdef bint _backprop_enabled() noexcept
cdef void _set_backprop(bint on) noexcept
cdef bint _keep_dtype_on() noexcept
cdef bint _dezero_rules(Function f) noexcept

cdef object _functions()        # the vocabulary module (fastgrad.functions)
cdef object _grad_variable(_Variable v)
cdef bint _c_number(object c, double* out)
cdef object _as_nd(object r)

# Forward: Function.__call__ without the recording hook.
cdef object _call_eager(Function f, tuple args, object face)

# A scalar program: table ops on a flat buffer of float64 values (the
# tracer's scalar plans; `op` and `act` are the tracer's own fields).
cdef struct _PlanOp:
    PyObject* op        # a _TableOp template (borrowed from the plan)
    int nargs
    int a, b            # operand slots
    int out             # result slot
    int code            # the op's number (_TableOp._scalar_code)
    char act[2]         # per operand, when every op gets a grad: _SKIP, _SET, _ADD, _GIVE
    double p[3]         # the op's constants

# Run ops nodes[0..n) in order, each reading its operands' slots of `vals`
# and writing its result slot.
cdef void _scalar_run_forward(const _PlanOp* nodes, Py_ssize_t n, double* vals) noexcept
# One op's C scalar derivatives, by op number (_TableOp._scalar_code).
cdef void _scalar_op_backward(int code, double gy, const double* x, double y,
                              const double* p, double* g) noexcept

# Backward: the driver and gradient delivery.
cdef int _run_backward(list roots, bint retain_grad, bint create_graph,
                       tuple boundary) except -1
cdef void _clear_grad(_Variable v) noexcept
cdef int _deliver_scalar(_Variable x, double g, bint cast=*) except -1
cdef int _deliver(_Variable x, object gx, bint owned, bint cast=*) except -1

# The tracer's hooks.  While _recording is nonzero (traces being recorded,
# in any thread) Function.__call__ goes through `call` instead of
# _call_eager, a Variable made calls `made`, Python code reading or
# changing a Variable calls `touch` with what it did, and the steps of a
# training step call `step`: cleargrad(), and the start and end of backward().
ctypedef object (*_call_hook)(Function f, tuple args, object face)
ctypedef int (*_variable_hook)(_Variable v, str what) except -1
ctypedef int (*_step_hook)(_Variable v, int event, bint retain_grad,
                           bint create_graph) except -1
cdef enum:
    _STEP_CLEARGRAD = 0
    _STEP_BACKWARD = 1
    _STEP_BACKWARD_DONE = 2
cdef int _install_tracer(_call_hook call, _variable_hook made,
                         _variable_hook touch, _step_hook step) except -1
cdef bint _is_recording() noexcept
cdef void _recording_add(int delta) noexcept
