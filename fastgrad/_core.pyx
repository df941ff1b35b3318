"""The fastgrad engine: Variable, Function, Config and the built-in ops.

DeZero's stage-2 API, compiled.  What makes it fast without changing what
users see:

* A Variable whose value is a 0-d float64 may keep that value as a C double
  (``_sv``/``_gv``) and create the 0-d ndarray only when ``data``/``grad`` is
  read.  The built-in ops compute such values in C without calling NumPy.
* A Function points at its outputs through borrowed pointers that the output
  clears when it dies (a weak reference without a weakref object);
  ``Function.outputs`` hands out real ``weakref.ref`` objects on demand.
* Backward is iterative: a C priority queue keyed on
  ``(-generation, -insertion counter)``, DeZero's exact order (a LIFO stack
  per generation, with a binary heap on the same key as the fallback).
* Nodes the built-in ops create are untracked by the cyclic GC (they cannot
  close a cycle), so a growing graph is not rescanned on every collection.
* Gradient arrays that only the engine can see are reused in place (checked
  by reference count), so a grad never aliases another variable's grad or an
  array the user holds, yet the common case allocates nothing extra.

Everything else (user ``Function`` subclasses, operators assigned onto
``Variable``, arrays of any dtype and shape) takes the general path, which
does what DeZero's ``core_simple`` does, plus broadcasting and dtype rules.
"""
import os
import threading
import weakref

import numpy as np

cimport cython
cimport numpy as cnp
from cpython.object cimport PyObject
from cpython.ref cimport Py_DECREF, Py_INCREF
from libc.string cimport memcpy
from cython cimport floating
from libc.stdlib cimport free, malloc, realloc

cnp.import_array()

def _pure_requested():
    return os.environ.get("FASTGRAD_PURE", "").strip().lower() not in ("", "0", "false", "no")


#: True when FASTGRAD_PURE=1 was set at import: the NumPy reference kernels
#: and no C scalar path are used (for testing and comparison).
PURE = _pure_requested()

# The array kernels: compiled (fastgrad._ops) or their NumPy twins.
if PURE:
    from fastgrad import _reference as backend
else:
    from fastgrad import _ops as backend

_np = np

cdef bint _pure = PURE
# An array whose buffer came from the allocator (its base is a _Block) owns
# its memory as much as one with no base.
from fastgrad._alloc cimport _Block, heap_released, restore_handler, use_block_handler


include "_config.pxi"
include "_ufunc_loops.pxi"
include "_opcodes.pxi"
include "_scalar_math.pxi"

from fastgrad._eval cimport Program, copy_array, evaluate, ones_array
from fastgrad import _numpy_ops     # the table's NumPy formulas (generated)


cdef inline object _ones_like(object a):
    return np.ones_like(a) if _pure else ones_array(a)


cdef inline object _copy(object a):
    return np.array(a) if _pure else copy_array(a)


cdef inline object _evaluate(Program prog, tuple arrays, tuple params, object out,
                             bint exact):
    """The elementwise evaluator, or None for NumPy (always under FASTGRAD_PURE)."""
    if _pure:
        return None
    return evaluate(prog, arrays, params, out, exact)


# ---------------------------------------------------------------- helpers

cdef object _ndarray = np.ndarray
cdef object _np_float64 = np.float64
cdef object _float64 = np.dtype(np.float64)
cdef tuple _empty_tuple = ()
cdef object _dead_ref = None     # a weakref.ref whose referent is gone
cdef Py_ssize_t _LARGE = 1 << 20  # bytes: an array whose freeing is worth a purge
cdef bint _freed_large = False    # the running backward pass dropped a large grad
cdef int _recording = 0           # traces being recorded, in any thread (fastgrad._trace)
# The tracer's hooks (see _install_tracer), called only while _recording.
cdef _call_hook _hook_call = NULL
cdef _variable_hook _hook_made = NULL
cdef _variable_hook _hook_touch = NULL


def as_array(x):
    """Return ``np.array(x)`` for a scalar, ``x`` itself otherwise (DeZero)."""
    if np.isscalar(x):
        return np.array(x)
    return x


def as_variable(obj):
    """Return ``obj`` if it is a Variable, else ``Variable(obj)``."""
    if isinstance(obj, _Variable):
        return obj
    return Variable(obj)


cdef object _as_nd(object r):
    # NumPy returns scalars from 0-d arithmetic; data and grads are ndarrays.
    if type(r) is _ndarray:
        return r
    return np.asarray(r)


cdef inline bint _is_f32_array(object a) noexcept:
    return type(a) is _ndarray and cnp.PyArray_TYPE(<cnp.ndarray>a) == cnp.NPY_FLOAT


cdef inline bint _owns_buffer(object a) noexcept:
    """True if ``a`` is a plain, writeable ndarray whose memory no other
    object can reach (no base, or a cache block only it holds)."""
    if type(a) is not _ndarray:
        return False
    cdef cnp.ndarray arr = <cnp.ndarray>a
    if not cnp.PyArray_ISWRITEABLE(arr):
        return False
    cdef PyObject* base = cnp.PyArray_BASE(arr)
    return base == NULL or (type(<object>base) is _Block and Py_REFCNT(base) == 1)


cdef inline bint _exclusive(object a) noexcept:
    """True if only the caller's single reference can reach ``a`` and its
    memory, so it may be reused."""
    return Py_REFCNT(<PyObject*>a) == 1 and _owns_buffer(a)


cdef inline void _track(object o) noexcept:
    if not PyObject_GC_IsTracked(o):
        PyObject_GC_Track(<void*>o)


cdef inline bint _any_large(object arrays) noexcept:
    """Is one of ``arrays`` (a list or tuple) a large ndarray?  Then NumPy
    code run on them allocates from the allocator's hot blocks."""
    for a in arrays:
        if type(a) is _ndarray and cnp.PyArray_NBYTES(<cnp.ndarray>a) >= _LARGE:
            return True
    return False


cdef object _sum_to(object g, tuple shape):
    """Bring a gradient to its input's ``shape``.

    A gradient of a shape the input broadcasts to is summed over the
    broadcast axes (DeZero's sum_to); one that itself broadcasts to ``shape``
    is broadcast up.  Anything else is a ValueError naming both shapes.
    """
    gshape = g.shape
    try:
        common = np.broadcast_shapes(shape, gshape)
    except ValueError:
        common = None
    if common == gshape:
        return backend.sum_to(g, shape)
    if common == shape:
        return np.array(np.broadcast_to(g, shape))
    raise ValueError(f"gradient of shape {gshape} does not fit an input of shape {shape}")


# ---------------------------------------------------------------- Variable

cdef object _VarClass = None    # the Python-level Variable class, set below


@cython.no_gc_clear     # __dealloc__ needs _creator to clear its output link
@cython.trashcan(True)  # freeing a million-op chain must not recurse in C
cdef class _Variable:
    """Compiled base of :class:`Variable`; see there.

    Its C attributes and inline methods are declared in _core.pxd.
    """

    def __init__(self, data, name=None):
        if data is not None and not isinstance(data, _ndarray):
            raise TypeError(f"{type(data)} is not supported: Variable data must be "
                            f"a numpy.ndarray or None")
        self._data = data
        self._name = name
        if _recording:
            _hook_made(self, None)

    def __dealloc__(self):
        self._unlink()
        if type(self._data) is _ndarray and cnp.PyArray_NBYTES(<cnp.ndarray>self._data) >= _LARGE:
            # glibc's heap may keep NumPy's pages after the graph dies: the
            # allocator's idle purge hands them back.
            heap_released()

    @property
    def data(self):
        """The ndarray this variable holds (or None)."""
        if _recording:
            _hook_touch(self, "reads .data of")
        return self._get_data()

    @data.setter
    def data(self, value):
        if _recording:
            _hook_touch(self, "assigns .data of")
        if value is not None and not isinstance(value, _ndarray):
            if isinstance(value, np.generic):
                value = np.asarray(value)   # e.g. x.data - lr * x.grad on 0-d arrays
            else:
                raise TypeError(f"{type(value)} is not supported: Variable data must be "
                                f"a numpy.ndarray or None")
        self._data = value
        self._lazy = False
        _track(self)

    @property
    def grad(self):
        """The gradient (an ndarray shaped like ``data``), or None."""
        if _recording:
            _hook_touch(self, "reads .grad of")
        return self._get_grad()

    @grad.setter
    def grad(self, value):
        self._set_grad(value, False)

    cdef int _set_grad(self, object value, bint variable_ok) except -1:
        if _recording:
            _hook_touch(self, "assigns .grad of")
        # The full face also stores Variables (its grads are Variables).
        if value is not None and not isinstance(value, _ndarray) and not (
                variable_ok and isinstance(value, _Variable)):
            if isinstance(value, np.generic):
                value = np.asarray(value)
            else:
                kinds = "a Variable, a numpy.ndarray" if variable_ok else "a numpy.ndarray"
                raise TypeError(f"{type(value)} is not supported: a grad must be "
                                f"{kinds} or None")
        self._grad = value
        self._glazy = False
        _track(self)
        return 0

    @property
    def creator(self):
        """The Function that produced this variable, or None for a leaf."""
        return self._creator

    @creator.setter
    def creator(self, func):
        if func is not None and not isinstance(func, Function):
            raise TypeError(f"creator must be a Function or None, not {type(func)}")
        self._unlink()
        self._creator = func
        _track(self)

    @property
    def name(self):
        """A label for the variable (any object), None by default."""
        return self._name

    @name.setter
    def name(self, value):
        self._name = value
        _track(self)

    @property
    def generation(self):
        """Position in the graph: 0 for leaves, creator's generation + 1."""
        return self._gen

    @generation.setter
    def generation(self, value):
        self._gen = value

    @property
    def shape(self):
        return () if self._lazy else self._data.shape

    @property
    def ndim(self):
        return 0 if self._lazy else self._data.ndim

    @property
    def size(self):
        return 1 if self._lazy else self._data.size

    @property
    def dtype(self):
        return _float64 if self._lazy else self._data.dtype

    def __len__(self):
        return len(self._get_data())

    def __repr__(self):
        if _recording:
            _hook_touch(self, "formats (repr/str/print)")
        data = self._get_data()
        if data is None:
            return "variable(None)"
        p = str(data).replace("\n", "\n" + " " * 9)
        return "variable(" + p + ")"

    def set_creator(self, func):
        """Make ``func`` this variable's creator (generation = its generation + 1)."""
        self.creator = func
        self._gen = func.generation + 1

    def cleargrad(self):
        """Forget the gradient (``grad = None``), e.g. between iterations."""
        if _recording:
            _hook_touch(self, "calls cleargrad() on")
        self._grad = None
        self._glazy = False

    def unchain(self):
        """Cut this variable from its creator: it becomes a leaf."""
        self.creator = None

    def unchain_backward(self):
        """Cut every variable of the graph behind this one from its creator.

        Iterative (DeZero's order), so graphs of any depth can be cut.
        """
        cdef Function f
        if self._creator is None:
            return
        funcs = [self._creator]
        while funcs:
            f = <Function>funcs.pop()
            if f._inputs is None:
                continue
            for v in f._inputs:
                if (<_Variable>v)._creator is not None:
                    funcs.append((<_Variable>v)._creator)
                    (<_Variable>v).unchain()

    def reshape(self, *shape):
        """Return this variable reshaped (``x.reshape(2, 3)`` or ``x.reshape((2, 3))``)."""
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = shape[0]
        return _functions().reshape(self, shape)

    def transpose(self, *axes):
        """Return this variable with its axes permuted (all reversed by default)."""
        if len(axes) == 0:
            axes = None
        elif len(axes) == 1 and (isinstance(axes[0], (tuple, list)) or axes[0] is None):
            axes = axes[0]
        return _functions().transpose(self, axes)

    @property
    def T(self):
        """The transpose (all axes reversed)."""
        return _functions().transpose(self)

    def sum(self, axis=None, keepdims=False):
        """Return the sum over ``axis`` (all axes by default)."""
        return _functions().sum(self, axis, keepdims)

    def to_cpu(self):
        """Move data to the CPU: it is a NumPy array already, so nothing changes."""

    def to_gpu(self):
        """Move data to a GPU: needs CuPy, which fastgrad does not support."""
        raise RuntimeError("to_gpu() needs CuPy and a GPU; fastgrad runs on NumPy "
                           "(CPU) only")

    cdef int _seed(self, bint as_variable) except -1:
        """Give the variable its seed gradient (ones) unless it has one."""
        g = self._grad
        if g is not None and self._data is not None:
            gshape = (<_Variable>g).shape if isinstance(g, _Variable) else g.shape
            if gshape != self._data.shape:
                raise ValueError(f"backward: the seed grad has shape {gshape} "
                                 f"but the variable has shape {self._data.shape}")
        if self._has_grad():
            return 0
        if self._data is None and not self._lazy:
            raise ValueError("backward() on a Variable whose data is None")
        if as_variable:
            self._grad = _wrap_data(_ones_like(self._get_data()), _full_class())
        elif self._lazy or _is_f64_scalar_array(self._data):
            self._gv = 1.0
            self._glazy = True
        else:
            self._grad = _ones_like(self._data)
        return 0

    def backward(self, retain_grad=False):
        """Backpropagate from this variable to every variable it depends on.

        The seed gradient is ones shaped like ``data`` unless ``grad`` is
        already set.  Functions run in reverse generation order (latest first
        among equals, as DeZero), each exactly once, iteratively.

        Parameters
        ----------
        retain_grad : bool
            Keep the gradients of intermediate variables (function outputs).
            By default they are cleared as soon as they have been used.
        """
        if _recording:
            _hook_touch(self, "calls backward() on")
        self._seed(False)
        if self._creator is not None:
            _backward(<Function>self._creator, bool(retain_grad), False)

    def __reduce__(self):
        # Pickling keeps data, grad and name and drops the graph: the copy is
        # a leaf (a creator cannot be pickled meaningfully: it holds weak links
        # and Python code).
        if _recording:
            _hook_touch(self, "pickles")
        return (_rebuild_variable, (type(self), self._get_data(), self._name, self._get_grad()))


cdef object _functions_module = None

cdef object _functions():
    # fastgrad.functions builds on this module, so it is imported on first use.
    global _functions_module
    if _functions_module is None:
        import fastgrad.functions
        _functions_module = fastgrad.functions
    return _functions_module


def _rebuild_variable(cls, data, name, grad):
    v = cls(data, name)
    v.grad = grad
    return v


class Variable(_Variable):
    """A node of the computational graph: an ndarray plus its gradient.

    Parameters
    ----------
    data : numpy.ndarray or None
        Kept by identity (never copied).  Anything else raises TypeError.
    name : str, optional

    Attributes
    ----------
    data, grad, creator, generation, name
        As in DeZero; ``shape``, ``ndim``, ``size``, ``dtype`` mirror ``data``.

    Examples
    --------
    >>> x = Variable(np.array(2.0))
    >>> y = x ** 2 + 3 * x
    >>> y.backward()
    >>> x.grad
    array(7.)

    Operators (``+ - * / **`` and unary ``-``) work with Variables, ndarrays
    and scalars on either side.  They are ordinary class attributes, set by
    :func:`setup_variable`, so new ones can be assigned the DeZero way.
    """
    __slots__ = ()
    # Make ndarray defer to Variable in ``ndarray + Variable`` (class level;
    # the notebook's assignment inside __init__ had no effect).
    __array_priority__ = 200


_VarClass = Variable


cdef class _GraphVariable(_Variable):
    """Compiled base of the full face's Variable (``fastgrad.dezero.Variable``).

    Its gradient is a Variable, so it can be differentiated again.  The
    engine still keeps a plain ndarray when ``create_graph`` is off and wraps
    it on first read, so the full face costs what the stage-2 face costs.
    """

    @property
    def grad(self):
        """The gradient, a Variable shaped like ``data`` (or None)."""
        if _recording:
            _hook_touch(self, "reads .grad of")
        g = self._get_grad()
        if g is None or isinstance(g, _Variable):
            return g
        return _grad_variable(self)

    @grad.setter
    def grad(self, value):
        self._set_grad(value, True)

    def backward(self, retain_grad=False, create_graph=False):
        """Backpropagate from this variable to every variable it depends on.

        Parameters
        ----------
        retain_grad : bool
            Keep the gradients of intermediate variables (function outputs).
        create_graph : bool
            Record the backward pass itself, so that the gradients (Variables
            with creators) can be differentiated again: ``x.grad.backward()``.

        Examples
        --------
        >>> x = Variable(np.array(2.0))
        >>> y = x ** 3
        >>> y.backward(create_graph=True)
        >>> gx = x.grad             # 3 x^2 = 12
        >>> x.cleargrad()
        >>> gx.backward()
        >>> x.grad                  # 6 x = 12
        variable(12.0)
        """
        if _recording:
            _hook_touch(self, "calls backward() on")
        self._seed(bool(create_graph))
        if self._creator is not None:
            _backward(<Function>self._creator, bool(retain_grad), bool(create_graph))


# The full face's Variable class; fastgrad.dezero.core registers it.
cdef object _FullVarClass = None


def _register_full_face(cls):
    """Make ``cls`` (a subclass of _GraphVariable) the full face's Variable."""
    global _FullVarClass
    if not (isinstance(cls, type) and issubclass(cls, _GraphVariable)):
        raise TypeError("the full face's Variable must subclass _GraphVariable")
    _FullVarClass = cls


cdef inline object _full_class():
    # The full face's Variable once fastgrad.dezero is imported.
    return _FullVarClass if _FullVarClass is not None else _VarClass


cdef inline object _face_of(object v):
    # Outputs take the face of their first Variable input: plain Variables,
    # whatever subclass (Parameter) the input is.
    return _full_class() if isinstance(v, _GraphVariable) else _VarClass


cdef object _grad_variable(_Variable v):
    """``v``'s gradient as a Variable of its face (or None).

    On the full face the Variable becomes ``v``'s grad (``x.grad is x.grad``);
    a stage-2 variable keeps its ndarray.
    """
    g = v._get_grad()
    if g is None or isinstance(g, _Variable):
        return g
    if isinstance(v, _GraphVariable):
        g = _wrap_data(g, _full_class())
        v._grad = g
        return g
    return _wrap_data(g, _VarClass)


# ---------------------------------------------------------------- Function

cdef unsigned long long _stamp_counter = 0   # one per backward() call

@cython.trashcan(True)
cdef class Function:
    """Base class of differentiable functions (DeZero's ``Function``).

    Subclass it and implement ``forward(*xs)`` on ndarrays (return one array
    or a tuple) and ``backward(*gys)`` returning one gradient per input (a
    tuple for several; ``None`` for an input that gets no gradient).  Inside
    ``backward``, ``self.inputs[i].data`` is the i-th input's array.

    Calling an instance converts its arguments (Variables, ndarrays, Python or
    NumPy scalars), runs ``forward``, and, while ``Config.enable_backprop`` is
    on, records ``inputs``, ``outputs`` (weak references) and ``generation``.
    One output is returned bare, several as a list.

    Examples
    --------
    >>> class Square(Function):
    ...     def forward(self, x):
    ...         return x ** 2
    ...     def backward(self, gy):
    ...         return 2 * self.inputs[0].data * gy
    """

    def __dealloc__(self):
        free(self._outs)

    # -- backward, as the engine's driver runs it (one step per function)
    cdef int _backward_arrays(self, bint retain_grad) except -1:
        """Deliver the input grads of one backward step on arrays
        (create_graph off).  Table ops, GraphFunctions and traced calls
        override it."""
        return _step_user(self, retain_grad, False)

    cdef object _graph_grads(self, list gys):
        """The input grads as Variables, recorded (create_graph on), from
        the output grads ``gys``.  A stage-2 Function differentiates
        arrays: its grads are constants, so no higher derivative flows
        through it."""
        return self.backward(*[(<_Variable>g)._get_data() for g in gys])

    cdef int _backward_graph(self, bint retain_grad) except -1:
        return _step_graph(self, retain_grad)

    @property
    def needs_input_grad(self):
        """Per input, whether a gradient is kept for it: False for the
        engine's constant around an ndarray or number operand, so a
        ``backward`` may return None there instead of computing it."""
        if self._inputs is None:
            raise AttributeError(f"'{type(self).__name__}' object has no attribute "
                                 f"'needs_input_grad'")
        return tuple([not (<_Variable>v)._const for v in self._inputs])

    def forward(self, *xs):
        raise NotImplementedError(f"{type(self).__name__}.forward is not implemented")

    def backward(self, *gys):
        raise NotImplementedError(f"{type(self).__name__}.backward is not implemented")

    def __call__(self, *inputs):
        if isinstance(self, _TableOp):
            # The engine's table paths apply to the declared class only: a
            # user subclass may override forward/backward.
            self._table = type(self) is (<_TableOp>self)._declared()
        return _call(self, inputs)

    @property
    def inputs(self):
        """The input Variables (a list), set while recording."""
        if self._inputs is None:
            raise AttributeError(f"'{type(self).__name__}' object has no attribute 'inputs'")
        return list(self._inputs)

    @inputs.setter
    def inputs(self, value):
        self._inputs = tuple(value)
        _track(self)

    @property
    def outputs(self):
        """Weak references (``weakref.ref``) to the outputs, set while recording."""
        if self._nout == 0:
            raise AttributeError(f"'{type(self).__name__}' object has no attribute 'outputs'")
        refs = []
        cdef PyObject** outs = self._out_ptrs()
        for i in range(self._nout):
            o = outs[i]
            refs.append(_dead_ref if o == NULL else weakref.ref(<object>o))
        return refs

    @property
    def generation(self):
        """The largest generation among the inputs, set while recording."""
        if not self._has_gen:
            raise AttributeError(f"'{type(self).__name__}' object has no attribute 'generation'")
        return self._gen

    @generation.setter
    def generation(self, value):
        self._gen = value
        self._has_gen = True

    cdef int _set_outputs(self, list outs) except -1:
        cdef Py_ssize_t i, n = len(outs)
        cdef _Variable out
        cdef PyObject** ptrs = NULL
        if n > 1:
            ptrs = <PyObject**>malloc(n * sizeof(PyObject*))
            if ptrs == NULL:
                raise MemoryError()
            # Shapes and dtypes give a dead output a zero gradient in backward.
            self._meta = [(d.shape, d.dtype) for d in [(<_Variable>o)._data for o in outs]]
        free(self._outs)
        self._outs = ptrs
        self._nout = n
        for i in range(n):
            out = <_Variable>outs[i]
            self._out_ptrs()[i] = <PyObject*>out
            out._creator = self
            out._gen = self._gen + 1
            out._slot = i
        return 0


cdef bint _dezero_rules(Function f) noexcept:
    """DeZero's dtype rules apply to ``f``: it was called on the full face and
    Config.keep_dtype is off (read now, so a backward follows the setting in
    force when it runs)."""
    return f._full and not _keep_dtype


class _Dead:
    pass


_dead_ref = weakref.ref(_Dead())


# ---------------------------------------------------------------- table ops

cdef class GraphFunction(Function):
    """A Function whose ``backward`` works on Variables (DeZero's full core).

    ``forward(*xs)`` receives ndarrays, as in :class:`Function`;
    ``backward(*gys)`` receives Variables and returns Variables built with
    fastgrad's functions, so the backward pass can itself be recorded
    (``backward(create_graph=True)``) and differentiated again.  Without
    ``create_graph`` it runs with graph recording off and only the arrays
    are kept; a subclass may also define ``backward_arrays(*gys)``, the same
    derivative on ndarrays, which the engine then calls instead (no
    Variables made).  This is ``fastgrad.dezero.Function``.
    """

    cdef int _backward_arrays(self, bint retain_grad) except -1:
        return _step_user(self, retain_grad, True)

    cdef object _graph_grads(self, list gys):
        return self.backward(*gys)


cdef object _check_constant(str op, str name, object c):
    """Validate a constant parameter (an exponent, a slope, a bound)."""
    if type(c) is float or type(c) is int:
        return c
    if isinstance(c, _Variable):
        raise TypeError(f"{op}: {name} must be a constant (a Python or NumPy "
                        f"scalar or an ndarray), not a Variable")
    if c is None or isinstance(c, (str, bytes)) or not (
            isinstance(c, (bool, int, float, complex, _ndarray, np.generic))) or (
            isinstance(c, (_ndarray, np.generic)) and c.dtype.kind not in "biufc"):
        raise TypeError(f"{op}: unsupported {name} {c!r} of type {type(c).__name__}")
    return c


cdef class _TableOp(Function):
    """Base of the ops declared in fastgrad/_optable.py.

    Each generated subclass carries its NumPy forward, its array backward,
    its graph backward (Variables) and its C scalar forward and backward.
    The engine uses them only for the exact declared class: a user subclass
    that overrides ``forward``/``backward`` takes the general path.
    """

    cdef object _declared(self):
        return None

    cdef int _arity(self) noexcept:
        return 0

    cdef _TableOp _fresh(self):
        raise NotImplementedError   # generated for every declared op

    cdef int _backward_arrays(self, bint retain_grad) except -1:
        if not self._table or self._nout != 1 or self._out1 == NULL:
            return Function._backward_arrays(self, retain_grad)    # a user subclass
        if not _pure and _step_scalar(self, retain_grad):
            return 0
        return _step_table_array(self, retain_grad)

    cdef object _graph_grads(self, list gys):
        if not self._table:
            return Function._graph_grads(self, gys)
        return self._graph_backward(*gys)

    cdef tuple _array_backward(self, object gy, object buf, int need, bint exact):
        # The grads of the inputs in ``need`` (bit i: input i), None for the
        # others; ``exact``: powers take NumPy's exact special cases only.
        raise NotImplementedError

    cdef tuple _array_backward_dz(self, object gy, object buf, int need):
        # DeZero's formula on arrays.  Generated where it differs from the
        # row's formula with weak constants; elsewhere they agree for every
        # dtype (the evaluator takes one dtype only, and NumPy otherwise).
        return self._array_backward(gy, buf, need, True)

    cdef bint _dz_sensitive(self) noexcept:
        return False        # DeZero's backward promotes where this row's does not

    cdef bint _scalar_params(self, double* p):
        return False        # no C scalar path

    cdef int _scalar_code(self) noexcept:
        return 0            # its number in _table_scalar_forward/_backward

    cdef double _scalar_forward(self, const double* x, const double* p) noexcept:
        return 0.0

    cdef void _scalar_backward(self, double gy, const double* x, double y,
                               const double* p, double* g) noexcept:
        pass

    cdef object _output_data(self):
        return (<_Variable>self._out1)._get_data()

    cdef object _output_var(self):
        return <object>self._out1


cdef inline bint _is_table_op(Function f) noexcept:
    return f._table


cdef inline bint _operand_value(object a, double* out):
    """Value of a fast-path operand: a float64 scalar Variable or a Python float/int."""
    if isinstance(a, _Variable):
        return (<_Variable>a)._value(out)
    return _c_number(a, out)


cdef inline _Variable _operand_var(object a, double v, object cls):
    if isinstance(a, _Variable):
        return <_Variable>a
    cdef _Variable c = _lazy_var(v, cls)
    c._const = True
    return c


cdef object _call_scalar(_TableOp f, tuple args, object face):
    """The C path of a table op on float64 scalars; None if it does not apply."""
    cdef double x[2]
    cdef double p[3]
    cdef Py_ssize_t i, nargs = len(args)
    if nargs != f._arity() or nargs > 2:
        return None
    for i in range(nargs):
        if not _operand_value(args[i], &x[i]):
            return None
    if not f._scalar_params(p):
        return None
    a = args[0]
    if nargs == 2 and not isinstance(a, _Variable):
        a = args[1]
    if isinstance(a, _GraphVariable):
        cls = _full_class()
    elif face is None or isinstance(a, _Variable):
        cls = _VarClass
    else:
        cls = face
    # Either face's rules give these float64 values the same bits.
    f._full = _FullVarClass is not None and cls is _FullVarClass
    cdef _Variable out = _lazy_var(f._scalar_forward(x, p), cls)
    cdef _Variable v0, v1
    if _backprop_enabled():
        v0 = _operand_var(args[0], x[0], cls)
        if nargs == 1:
            f._inputs = (v0,)
            f._gen = v0._gen
        else:
            v1 = _operand_var(args[1], x[1], cls)
            f._inputs = (v0, v1)
            f._gen = v0._gen if v0._gen > v1._gen else v1._gen
        _untrack(f._inputs)
        _untrack(f)
        f._has_gen = True
        f._nout = 1
        f._out1 = <PyObject*>out
        out._creator = f
        out._gen = f._gen + 1
    return out


cdef inline object _strong(object c):
    # DeZero's as_array(c): a number becomes a 0-d array, strongly typed for
    # NumPy 2 (the table's DeZero-rule formulas wrap their constants in it).
    return np.asarray(c)


include "_optable.pxi"


cdef double _scalar_op_forward(int code, const double* x, const double* p) noexcept:
    return _table_scalar_forward(code, x, p)


cdef void _scalar_op_backward(int code, double gy, const double* x, double y,
                              const double* p, double* g) noexcept:
    _table_scalar_backward(code, gy, x, y, p, g)


# ---------------------------------------------------------------- __call__

cdef inline _Variable _constant(object data, object cls):
    # The engine's Variable around a non-Variable operand: nobody holds it,
    # so no gradient is stored for it (and functions may skip computing one).
    cdef _Variable v = _wrap_data(data, cls)
    v._const = True
    return v


def _graph_recording():
    """True while graphs are recorded: False under no_grad() and inside a
    backward without create_graph, where a backward may work on arrays."""
    return _backprop_enabled()


def _dezero_dtypes(f):
    """True while Function ``f`` (being called or differentiated) follows
    DeZero's dtype rules: the full face with Config.keep_dtype off."""
    return _dezero_rules(<Function?>f)


def _dezero_variable(v):
    """True if an operation on ``v`` follows DeZero's dtype rules: a
    full-face Variable with Config.keep_dtype off."""
    return isinstance(v, _GraphVariable) and not _keep_dtype


def _needs_grad(v):
    """False for the engine's Variable around an ndarray or number operand:
    its gradient can never be read, so a backward may return None for it."""
    return not (isinstance(v, _Variable) and (<_Variable>v)._const)


cdef object _input_variable(Function f, object x, list datas, object cls, bint dezero):
    """Convert one argument of a Function call to a Variable."""
    if isinstance(x, _Variable):
        return x
    if isinstance(x, _ndarray):
        return _constant(x, cls)
    if isinstance(x, (bool, int, float, complex)) and not isinstance(x, np.generic):
        if dezero:
            # DeZero's as_array: np.array(2.0) is a strongly typed float64 for
            # NumPy 2, so float32 data * 2.0 is float64 there, and here.
            return _constant(np.asarray(x), cls)
        # Python scalars are weak (NEP 50): float32 data * 2.0 stays float32.
        if datas:
            return _constant(np.asarray(x, dtype=np.result_type(*datas, x)), cls)
        return _constant(np.asarray(x), cls)
    if isinstance(x, np.generic):
        return _constant(np.asarray(x), cls)
    if x is None:
        raise TypeError(f"{type(f).__name__}: None is not a valid input "
                        f"(expected a Variable, an ndarray or a number)")
    raise TypeError(f"{type(f).__name__}: unsupported input of type {type(x).__name__} "
                    f"(expected a Variable, an ndarray or a number)")


cdef object _check_numeric(Function f, list variables):
    for i, v in enumerate(variables):
        d = (<_Variable>v)._get_data()
        if d is None:
            raise TypeError(f"{type(f).__name__}: input {i} is a Variable whose data is None")
        if d.dtype.kind not in "biufc":
            raise TypeError(f"{type(f).__name__}: input {i} has dtype {d.dtype}; "
                            f"only numeric arrays can be differentiated")


cdef object _forward_output(Function f, object y):
    if type(y) is _ndarray:
        return y
    if isinstance(y, (_ndarray, np.generic, bool, int, float, complex)):
        return np.asarray(y)
    raise TypeError(f"{type(f).__name__}.forward returned {type(y).__name__}; "
                    f"expected an ndarray or a number")


cdef inline bint _graph_protocol(Function f):
    return isinstance(f, GraphFunction)


cdef inline object _call(Function f, tuple args, object face=None):
    """Function.__call__ (see _call_eager), seen by a trace being recorded."""
    if _recording:
        return _hook_call(f, args, face)
    return _call_eager(f, args, face)


cdef int _install_tracer(_call_hook call, _variable_hook made,
                         _variable_hook touch) except -1:
    """Called once by fastgrad._trace when it is imported: the engine does
    not import the tracer, the tracer plugs into the engine."""
    global _hook_call, _hook_made, _hook_touch
    _hook_call, _hook_made, _hook_touch = call, made, touch
    return 0


cdef bint _is_recording() noexcept:
    return _recording != 0


cdef void _recording_add(int delta) noexcept:
    global _recording
    _recording += delta


cdef object _call_eager(Function f, tuple args, object face):
    """Function.__call__: convert inputs, run forward, record the graph.

    Results are Variables of the face of the first Variable input; with no
    Variable input, of ``face`` if given, else of the Function's protocol.
    """
    cdef bint table = _is_table_op(f)
    if table and not _pure:
        out = _call_scalar(<_TableOp>f, args, face)
        if out is not None:
            return out
    datas = []          # the operands' arrays, which set a Python scalar's dtype
    cls = None          # the face: that of the first Variable input
    for a in args:
        if isinstance(a, _Variable):
            if cls is None:
                cls = _face_of(a)
            d = (<_Variable>a)._get_data()
        else:
            d = a
        if isinstance(d, (_ndarray, np.generic)):
            datas.append(d)
    if cls is None:
        if face is not None:
            cls = face
        elif not table and _FullVarClass is not None and _graph_protocol(f):
            cls = _FullVarClass
        else:
            cls = _VarClass
    # The face decides the dtype rules: forward (a Python number operand, the
    # table's pow and leaky_relu) and backward (see _dezero_rules).
    f._full = _FullVarClass is not None and cls is _FullVarClass
    cdef bint dezero = f._full and not _keep_dtype
    inputs = [_input_variable(f, a, datas, cls, dezero) for a in args]
    xs = [(<_Variable>v)._get_data() for v in inputs]
    if table:
        _check_numeric(f, inputs)
    if _any_large(xs):
        previous = use_block_handler()
        try:
            ys = f.forward(*xs)
        finally:
            restore_handler(previous)
    else:
        ys = f.forward(*xs)
    if type(ys) is not tuple:
        ys = (ys,)
    if len(ys) == 0:
        raise ValueError(f"{type(f).__name__}.forward returned no outputs")
    outputs = [_wrap_data(_forward_output(f, y), cls) for y in ys]
    if _backprop_enabled():
        gen = 0
        for v in inputs:
            if (<_Variable>v)._gen > gen:
                gen = (<_Variable>v)._gen
        f._gen = gen
        f._has_gen = True
        f._inputs = tuple(inputs)
        f._set_outputs(outputs)
    return outputs[0] if len(outputs) == 1 else outputs


# ---------------------------------------------------------------- backward

include "_queue.pxi"


# Each backward() call marks the functions it has queued with its own stamp.
# A backward() started from inside a user backward (a gradient penalty, say)
# may re-mark functions the outer call already queued; it records the
# outer stamps it overwrote and puts them back when it returns, so every
# call runs each reachable function exactly once.
cdef int _active_backwards = 0
cdef unsigned long long _base_stamp = 0     # stamp of the outermost active call


cdef inline int _mark(Function f, unsigned long long stamp, list restore) except -1:
    if restore is not None and f._stamp >= _base_stamp:
        restore.append((f, f._stamp))
    f._stamp = stamp
    return 0


cdef inline int _backward(Function root, bint retain_grad, bint create_graph) except -1:
    return _run_backward([root], retain_grad, create_graph, None)


cdef int _run_backward(list roots, bint retain_grad, bint create_graph,
                       tuple boundary) except -1:
    """Backpropagate from ``roots``; the creators of the variables in
    ``boundary`` are not entered (a traced call's inner graph)."""
    global _stamp_counter, _active_backwards, _base_stamp, _freed_large
    _stamp_counter += 1
    cdef unsigned long long stamp = _stamp_counter
    cdef list restore = None
    if _active_backwards:
        restore = []
    else:
        _base_stamp = stamp
    cdef _Queue queue
    cdef Function f, creator
    cdef _Variable x
    cdef Py_ssize_t top = 0
    for f in roots:
        if f._gen > top:
            top = f._gen
    _queue_init(&queue, top)
    _active_backwards += 1
    try:
        for f in roots:
            if f._stamp != stamp:
                _mark(f, stamp, restore)
                _queue_push(&queue, f)
        while queue.live:
            f = <Function>_queue_pop(&queue)
            Py_DECREF(f)            # `f` holds its own reference now
            if create_graph:
                f._backward_graph(retain_grad)
            else:
                f._backward_arrays(retain_grad)
            if f._inputs is None:
                continue
            for v in f._inputs:
                x = <_Variable>v
                if x._creator is not None:
                    if boundary is not None and v in boundary:
                        continue
                    creator = <Function>x._creator
                    if creator._stamp != stamp:
                        _mark(creator, stamp, restore)
                        _queue_push(&queue, creator)
    finally:
        _active_backwards -= 1
        _queue_free(&queue)
        if _freed_large:
            _freed_large = False
            heap_released()     # the pass freed large intermediate grads
        if restore:
            for f, old in reversed(restore):
                f._stamp = old
    return 0


cdef void _clear_grad(_Variable v) noexcept:
    global _freed_large
    if type(v._grad) is _ndarray and cnp.PyArray_NBYTES(<cnp.ndarray>v._grad) >= _LARGE:
        _freed_large = True
    v._grad = None
    v._glazy = False


cdef bint _step_scalar(_TableOp f, bint retain_grad) except -1:
    """The C path: float64 scalar gradient, inputs and output."""
    cdef double gy, y
    cdef double x[2]
    cdef double p[3]
    cdef double g[2]
    cdef Py_ssize_t i, n
    if f._inputs is None:
        return False
    cdef _Variable out = <_Variable>f._out1
    if out._glazy:
        gy = out._gv
    elif _is_f64_scalar_array(out._grad):
        gy = _array_value(out._grad)
    else:
        return False
    cdef tuple inputs = f._inputs
    n = len(inputs)
    if n != f._arity() or n > 2:
        return False
    for i in range(n):
        if not (<_Variable>inputs[i])._value(&x[i]):
            return False
    if not f._scalar_params(p) or not out._value(&y):
        return False
    f._scalar_backward(gy, x, y, p, g)
    if not retain_grad:
        _clear_grad(out)
    cdef bint cast = not _dezero_rules(f)
    for i in range(n):
        _deliver_scalar(<_Variable>inputs[i], g[i], cast)
    return True


cdef inline bint _scalar_target(_Variable x) noexcept:
    # x's value and grad are float64 scalars, so a scalar grad adds in C.
    if not (x._lazy or _is_f64_scalar_array(x._data)):
        return False
    return x._glazy or x._grad is None or _is_f64_scalar_array(x._grad)


cdef int _deliver_scalar(_Variable x, double g, bint cast=True) except -1:
    """``_deliver`` for a float64 scalar gradient."""
    if x._const:
        return 0        # an engine-made constant: nobody can ask for its grad
    if not _scalar_target(x):
        return _deliver(x, _scalar_array(g), True, cast)
    if x._glazy:
        x._gv += g
    elif x._grad is None:
        x._gv = g
    else:
        # x.grad + g as a new value: an array the user may hold is left alone.
        x._gv = _array_value(x._grad) + g
        x._grad = None
    x._glazy = True
    return 0


cdef object _take_output_grad(_Variable out, bint retain_grad):
    """The output's grad as an ndarray; without retain_grad the output lets go."""
    g = _grad_array(out)
    if not retain_grad:
        _clear_grad(out)
    return g


cdef int _step_table_array(_TableOp f, bint retain_grad) except -1:
    """A table op on arrays, reusing the grad buffer when it is ours."""
    gy = _take_output_grad(<_Variable>f._out1, retain_grad)
    if gy is None or f._inputs is None:
        return 0
    # Only the inputs that keep a gradient get one: never an engine-made
    # constant (the ndarray or number operand of ``x * c``).
    cdef int i, need = 0
    for i in range(len(f._inputs)):
        if not (<_Variable>f._inputs[i])._const:
            need |= 1 << i
    if need == 0:
        return 0
    cdef bint owned = _exclusive(gy)
    cdef tuple gxs
    # The evaluator may write the first gradient into gy's buffer when we own it.
    cdef bint dz = _dezero_rules(f)
    previous = None
    cdef bint large = type(gy) is _ndarray and cnp.PyArray_NBYTES(<cnp.ndarray>gy) >= _LARGE
    if large:
        previous = use_block_handler()
    try:
        if dz:
            # DeZero's formulas (strong constants), its dtypes, no cast.
            gxs = f._array_backward_dz(gy, gy if owned else None, need)
        else:
            gxs = f._array_backward(gy, gy if owned else None, need, False)
    finally:
        if large:
            restore_handler(previous)
    return _deliver_all(f, gxs, gy, owned, not dz)


cdef int _deliver_all(Function f, tuple gxs, object gy, bint gy_owned, bint cast) except -1:
    """Deliver one gradient per input; ``gy`` may be among them.

    An array is stored without a copy only once, and only if nothing else can
    reach it: ``gy`` when it was ours, a fresh result when this tuple holds
    its only reference.
    """
    cdef tuple inputs = f._inputs
    cdef Py_ssize_t i, j, n = len(inputs)
    cdef bint owned
    if len(gxs) != n:
        raise ValueError(f"{type(f).__name__}.backward returned {len(gxs)} gradient(s) "
                         f"for {n} input(s)")
    for i in range(n):
        g = gxs[i]
        if g is None:
            continue
        owned = True
        for j in range(i):
            if gxs[j] is g:
                owned = False
        if owned:
            if g is gy:
                owned = gy_owned
            else:
                owned = Py_REFCNT(<PyObject*>g) == 2 and _owns_buffer(g)
        _deliver(<_Variable>inputs[i], g, owned, cast)
        g = None
    return 0


cdef list _output_grads(Function f, bint as_variables):
    """The outputs' gradients, zeros for outputs off the path; None if no
    gradient reached the function at all."""
    cdef Py_ssize_t i, n = f._nout
    cdef PyObject* o
    cdef PyObject** outs = f._out_ptrs()
    cdef bint any_grad = False
    gys = []
    for i in range(n):
        o = outs[i]
        if o != NULL and (<_Variable>o)._has_grad():
            if as_variables:
                gys.append(_grad_variable(<_Variable>o))
            else:
                gys.append(_grad_array(<_Variable>o))
            any_grad = True
        else:
            gys.append(None)
    if not any_grad:
        return None
    for i in range(n):
        if gys[i] is None:
            if outs[i] != NULL:
                zeros = np.zeros_like((<_Variable>outs[i])._get_data())
            else:
                shape, dtype = f._meta[i]
                zeros = np.zeros(shape, dtype)
            gys[i] = _wrap_data(zeros, _full_class()) if as_variables else zeros
    return gys


cdef void _clear_output_grads(Function f) noexcept:
    cdef PyObject** outs = f._out_ptrs()
    for i in range(f._nout):
        if outs[i] != NULL:
            _clear_grad(<_Variable>outs[i])


cdef int _step_user(Function f, bint retain_grad, bint graph) except -1:
    """A user Function on arrays: call its backward with the output grads.

    With ``graph`` (a GraphFunction) the backward gets Variables, runs with
    recording off, and its Variables' arrays are delivered -- unless the
    class has ``backward_arrays``, which gets and returns arrays.
    """
    if f._inputs is None or f._nout == 0:
        return 0
    if graph:
        on_arrays = getattr(f, "backward_arrays", None)
        if on_arrays is not None:
            graph = False
    else:
        on_arrays = f.backward
    gys = _output_grads(f, graph)
    if gys is None:
        return 0        # no gradient reached this function: it contributes nothing
    if not retain_grad:
        _clear_output_grads(f)
    cdef bint large = _any_large([(<_Variable>g)._data for g in gys] if graph else gys)
    previous = use_block_handler() if large else None
    try:
        if not graph:
            return _deliver_user(f, [on_arrays(*gys)])
        was = _backprop_enabled()
        _set_backprop(False)
        try:
            box = [f.backward(*gys)]
        finally:
            _set_backprop(was)
    finally:
        if large:
            restore_handler(previous)
    gys = None
    return _deliver_user(f, [_unwrap_grads(box)])


cdef object _unwrap_grads(list box):
    """A GraphFunction's result with each private Variable replaced by its
    array.  The result comes in a one-item list, as for _deliver_user."""
    cdef tuple gxs
    r = box.pop()
    if type(r) is tuple:
        gxs = <tuple>r
    elif isinstance(r, list):
        gxs = tuple(r)
    else:
        gxs = (r,)
    r = None
    out = []
    for g in gxs:
        if isinstance(g, _Variable):
            out.append((<_Variable>g)._get_data())
        else:
            out.append(g)
    return tuple(out)


cdef int _deliver_user(Function f, list box) except -1:
    """Deliver what a user backward returned, one gradient per input.

    The result comes in a one-item list so that this function holds its only
    reference: reference counts then tell which arrays nobody else can see.
    """
    cdef Py_ssize_t i
    cdef tuple gxs
    r = box.pop()
    if type(r) is tuple:
        gxs = <tuple>r
    elif isinstance(r, list):
        gxs = tuple(r)
    else:
        gxs = (r,)
    r = None
    cdef tuple inputs = f._inputs
    if len(gxs) != len(inputs):
        raise ValueError(f"{type(f).__name__}.backward returned {len(gxs)} gradient(s) "
                         f"for {len(inputs)} input(s)")
    # An array may be kept without copying only if nothing else can reach it:
    # not the caller (tuple referenced once), not another slot of the tuple.
    cdef bint tuple_private = Py_REFCNT(<PyObject*>gxs) == 1
    cdef bint cast = not _dezero_rules(f)
    for i in range(len(inputs)):
        gx = gxs[i]
        if gx is None:
            continue
        owned = tuple_private and Py_REFCNT(<PyObject*>gx) == 2 and _owns_buffer(gx)
        _deliver(<_Variable>inputs[i], gx, owned, cast)
        gx = None
    return 0


cdef int _deliver(_Variable x, object gx, bint owned, bint cast=True) except -1:
    """Accumulate gradient ``gx`` into ``x.grad`` (``x.grad = x.grad + gx``).

    ``owned`` says nobody else can see ``gx``; otherwise it is copied before
    it is stored, so grads never alias each other or the user's arrays.
    ``cast`` gives a floating ``x`` a grad of its own dtype; without it (the
    full face's DeZero rules) a grad keeps the dtype backward produced, and
    the sum of two grads NumPy's promotion of theirs, as in DeZero.
    """
    if x._const:
        return 0
    if not _pure and _scalar_target(x):
        # User backward code on 0-d arrays returns NumPy float64 scalars.
        if type(gx) is _np_float64:
            return _deliver_scalar(x, <double>gx)
        if _is_f64_scalar_array(gx):
            return _deliver_scalar(x, _array_value(gx))
    if type(gx) is not _ndarray:
        if isinstance(gx, (_ndarray, np.generic, bool, int, float, complex)):
            gx = np.asarray(gx)
            owned = _owns_buffer(gx)
        else:
            raise TypeError(f"a gradient must be an ndarray or a number, not {type(gx).__name__}")
    data = x._get_data()
    if data is not None:
        if not cnp.PyArray_SAMESHAPE(gx, data):
            gx = _sum_to(gx, data.shape)
            owned = True
        if cast and cnp.PyArray_TYPE(gx) != cnp.PyArray_TYPE(data) and (
                cnp.PyArray_ISFLOAT(data) or cnp.PyArray_ISCOMPLEX(data)):
            gx = gx.astype(data.dtype)      # a grad has its variable's dtype
            owned = True
    if cnp.PyArray_ISOBJECT(gx):
        _track(x)
    if x._glazy:
        x._get_grad()
    acc = x._grad
    if acc is None:
        x._grad = gx if owned else _copy(gx)
        return 0
    if isinstance(acc, _Variable):
        acc = (<_Variable>acc)._get_data()     # shared with the user's Variable
    # In place only into an array no one but x can see, of the result's dtype.
    x._grad = None
    if (_exclusive(acc) and acc.shape == gx.shape and acc.dtype == gx.dtype
            and gx is not acc):
        np.add(acc, gx, out=acc)
        x._grad = acc
    else:
        x._grad = _as_nd(acc + gx)
    return 0


# ---------------------------------------------------------------- create_graph

cdef int _step_graph(Function f, bint retain_grad) except -1:
    """One function's backward on Variables, recorded (create_graph=True)."""
    if f._inputs is None or f._nout == 0:
        return 0
    gys = _output_grads(f, True)
    if gys is None:
        return 0
    if not retain_grad:
        _clear_output_grads(f)
    cdef bint was = _backprop_enabled()
    _set_backprop(True)
    try:
        r = f._graph_grads(gys)
        if type(r) is not tuple:
            r = tuple(r) if isinstance(r, list) else (r,)
        if len(r) != len(f._inputs):
            raise ValueError(f"{type(f).__name__}.backward returned {len(r)} gradient(s) "
                             f"for {len(f._inputs)} input(s)")
        for x, gx in zip(f._inputs, r):
            if gx is not None:
                _deliver_graph(<_Variable>x, gx)
    finally:
        _set_backprop(was)
    return 0


cdef int _deliver_graph(_Variable x, object gx) except -1:
    """``x.grad = x.grad + gx`` on Variables, recorded."""
    if x._const:
        return 0
    if not isinstance(gx, _Variable):
        gx = _wrap_data(np.asarray(gx), _full_class())
    data = x._get_data()
    if data is not None and (<_Variable>gx).shape != data.shape:
        gshape = (<_Variable>gx).shape
        try:
            common = np.broadcast_shapes(data.shape, gshape)
        except ValueError:
            common = None
        if common == gshape:
            gx = _functions().sum_to(gx, data.shape)
        elif common == data.shape:
            gx = _functions().broadcast_to(gx, data.shape)
        else:
            raise ValueError(f"gradient of shape {gshape} does not fit an input "
                             f"of shape {data.shape}")
    if not x._has_grad():
        x._grad = gx
    else:
        x._grad = add(_grad_variable(x), gx)
    return 0


# ---------------------------------------------------------------- operators

def setup_variable():
    """Install the operators on the stage-2 Variable (idempotent; done on import)."""
    _install_operators(Variable)


def _get_item(self, slices):
    return _functions().get_item(self, slices)


def _matmul(self, other):
    return _functions().matmul(self, other)


def _rmatmul(self, other):
    return _functions().matmul(other, self)


def _max(self, axis=None, keepdims=False):
    return _functions().max(self, axis, keepdims)


def _min(self, axis=None, keepdims=False):
    return _functions().min(self, axis, keepdims)


def _install_operators(cls):
    """Install the operators and DeZero's array methods on ``cls``."""
    cls.__getitem__ = _get_item
    cls.__matmul__ = _matmul
    cls.__rmatmul__ = _rmatmul
    cls.matmul = _matmul
    cls.dot = _matmul
    cls.max = _max
    cls.min = _min
    cls.__add__ = add
    cls.__radd__ = add
    cls.__mul__ = mul
    cls.__rmul__ = mul
    cls.__neg__ = neg
    cls.__sub__ = sub
    cls.__rsub__ = rsub
    cls.__truediv__ = div
    cls.__rtruediv__ = rdiv
    cls.__pow__ = pow


