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
from libc.math cimport pow as c_pow
from libc.math cimport sqrt
from libc.stdlib cimport free, malloc, realloc

cnp.import_array()

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


def _pure_requested():
    return os.environ.get("FASTGRAD_PURE", "").strip().lower() not in ("", "0", "false", "no")


#: True when FASTGRAD_PURE=1 was set at import: the NumPy reference kernels
#: and no C scalar path are used (for testing and comparison).
PURE = _pure_requested()

if PURE:
    from fastgrad import _reference as _K
else:
    from fastgrad import _ops as _K

cdef bint _pure = PURE
# The owner (ndarray.base) of an array whose buffer came from the kernels'
# buffer cache; such an array owns its memory as much as one with no base.
cdef object _Block = getattr(_K, "_Block", None)
from fastgrad._ops import _backward_begin, _backward_end  # buffer-cache lifetime


# ---------------------------------------------------------------- Config

# Config.enable_backprop is per thread.  The flag lives in a C thread-specific
# slot, encoded in the pointer value, so reading it costs a few nanoseconds
# and a new thread starts with the default (enabled).
cdef Py_tss_t* _backprop_key = PyThread_tss_alloc()
if _backprop_key == NULL or PyThread_tss_create(_backprop_key) != 0:
    raise MemoryError("fastgrad: cannot allocate thread-local storage")

cdef inline bint _backprop_enabled() noexcept:
    return PyThread_tss_get(_backprop_key) != <void*><size_t>1

cdef inline void _set_backprop(bint on) noexcept:
    PyThread_tss_set(_backprop_key, <void*><size_t>(2 if on else 1))


class _ConfigType(type):
    @property
    def enable_backprop(cls):
        """Record graphs for backprop (per thread; default True)."""
        return _backprop_enabled()

    @enable_backprop.setter
    def enable_backprop(cls, value):
        _set_backprop(bool(value))


class Config(metaclass=_ConfigType):
    """Global settings, as in DeZero.

    ``Config.enable_backprop`` is thread-local: reading or assigning it acts
    on the calling thread only, so ``no_grad()`` in one thread never turns
    off graph recording in another.  Other attributes a user adds are
    ordinary class attributes.
    """


class _UsingConfig:
    """Context manager behind ``using_config``: restores on exit, nests."""

    __slots__ = ("name", "value", "_saved")

    def __init__(self, name, value):
        self.name = name
        self.value = value
        self._saved = {}

    def __enter__(self):
        stack = self._saved.setdefault(threading.get_ident(), [])
        stack.append(getattr(Config, self.name))
        setattr(Config, self.name, self.value)
        return self

    def __exit__(self, *exc_info):
        ident = threading.get_ident()
        stack = self._saved[ident]
        setattr(Config, self.name, stack.pop())
        if not stack:
            del self._saved[ident]
        return False


def using_config(name, value):
    """Temporarily set ``Config.<name>`` to ``value`` inside a ``with`` block.

    The old value is restored on exit, also when the block raises.

    Examples
    --------
    >>> with using_config('enable_backprop', False):
    ...     y = x * 2        # no graph recorded
    """
    return _UsingConfig(name, value)


def no_grad():
    """Context manager that turns graph recording off (this thread only)."""
    return _UsingConfig("enable_backprop", False)


# ---------------------------------------------------------------- helpers

cdef object _ndarray = np.ndarray
cdef object _np_float64 = np.float64
cdef object _float64 = np.dtype(np.float64)
cdef tuple _empty_tuple = ()
cdef object _dead_ref = None     # a weakref.ref whose referent is gone


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


cdef inline object _as_nd(object r):
    # NumPy returns scalars from 0-d arithmetic; data and grads are ndarrays.
    if type(r) is _ndarray:
        return r
    return np.asarray(r)


cdef inline object _scalar_array(double v):
    cdef cnp.ndarray a = cnp.PyArray_SimpleNew(0, NULL, cnp.NPY_DOUBLE)
    (<double*>cnp.PyArray_DATA(a))[0] = v
    return a


cdef inline bint _is_f64_scalar_array(object a) noexcept:
    # A 0-d float64 ndarray the C path may read through its data pointer.
    if type(a) is not _ndarray:
        return False
    cdef cnp.ndarray arr = <cnp.ndarray>a
    return (cnp.PyArray_NDIM(arr) == 0 and cnp.PyArray_TYPE(arr) == cnp.NPY_DOUBLE
            and cnp.PyArray_ISALIGNED(arr) and cnp.PyArray_ISNOTSWAPPED(arr))


cdef inline double _array_value(object a) noexcept:
    return (<double*>cnp.PyArray_DATA(<cnp.ndarray>a))[0]


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


# The cyclic GC would walk every node of a large graph on each collection.
# Nodes the engine makes for built-in ops hold only numbers, arrays and older
# nodes, so they cannot close a cycle: they are untracked.  Any setter that
# lets a user store an arbitrary object tracks the node again.
cdef inline void _untrack(object o) noexcept:
    PyObject_GC_UnTrack(<void*>o)


cdef inline void _track(object o) noexcept:
    if not PyObject_GC_IsTracked(o):
        PyObject_GC_Track(<void*>o)


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
        lead = len(gshape) - len(shape)
        axes = tuple(range(lead)) + tuple([i + lead for i in range(len(shape))
                                           if shape[i] == 1 and gshape[i + lead] != 1])
        g = g.sum(axis=axes, keepdims=True)
        return _as_nd(g.reshape(shape) if lead else g)
    if common == shape:
        return np.array(np.broadcast_to(g, shape))
    raise ValueError(f"gradient of shape {gshape} does not fit an input of shape {shape}")


# ---------------------------------------------------------------- Variable

cdef object _VarClass = None    # the Python-level Variable class, set below


@cython.no_gc_clear     # __dealloc__ needs _creator to clear its output link
@cython.trashcan(True)  # freeing a million-op chain must not recurse in C
cdef class _Variable:
    """Compiled base of :class:`Variable`; see there."""
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
    cdef bint _const            # made by the engine from a Python scalar operand

    def __init__(self, data, name=None):
        if data is not None and not isinstance(data, _ndarray):
            raise TypeError(f"{type(data)} is not supported: Variable data must be "
                            f"a numpy.ndarray or None")
        self._data = data
        self._name = name

    def __dealloc__(self):
        self._unlink()

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

    @property
    def data(self):
        """The ndarray this variable holds (or None)."""
        return self._get_data()

    @data.setter
    def data(self, value):
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
        return self._get_grad()

    @grad.setter
    def grad(self, value):
        if value is not None and not isinstance(value, _ndarray):
            if isinstance(value, np.generic):
                value = np.asarray(value)
            else:
                raise TypeError(f"{type(value)} is not supported: a grad must be "
                                f"a numpy.ndarray or None")
        self._grad = value
        self._glazy = False
        _track(self)

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
        self._grad = None
        self._glazy = False

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
        if self._grad is not None and self._data is not None and (
                self._grad.shape != self._data.shape):
            raise ValueError(f"backward: the seed grad has shape {self._grad.shape} "
                             f"but the variable has shape {self._data.shape}")
        if not self._has_grad():
            if self._lazy or _is_f64_scalar_array(self._data):
                self._gv = 1.0
                self._glazy = True
            elif self._data is None:
                raise ValueError("backward() on a Variable whose data is None")
            else:
                self._grad = _K.ones_like(self._data)
        if self._creator is not None:
            _backward(<Function>self._creator, bool(retain_grad))

    def __reduce__(self):
        # Pickling keeps data, grad and name and drops the graph: the copy is
        # a leaf (a creator cannot be pickled meaningfully: it holds weak links
        # and Python code).
        return (_rebuild_variable, (type(self), self._get_data(), self._name, self._get_grad()))


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


cdef extern from *:
    """
    /* type->tp_new without looking up and calling __new__ from Python */
    static PyObject *fastgrad_tp_new(PyObject *type, PyObject *args) {
        return ((PyTypeObject *)type)->tp_new((PyTypeObject *)type, args, NULL);
    }
    """
    object _tp_new "fastgrad_tp_new"(object type, object args)


cdef inline _Variable _new_var():
    return <_Variable>_tp_new(_VarClass, _empty_tuple)


cdef inline _Variable _lazy_var(double v):
    cdef _Variable var = _new_var()
    _untrack(var)
    var._sv = v
    var._lazy = True
    return var


cdef inline _Variable _wrap_data(object data):
    cdef _Variable var = _new_var()
    var._data = data
    return var


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
    cdef object __weakref__
    cdef tuple _inputs          # a tuple: one allocation, items inline
    cdef object _meta           # (shape, dtype) of each output, several outputs only
    cdef PyObject* _out1        # the single output's borrowed pointer
    cdef PyObject** _outs       # several outputs' borrowed pointers, else NULL
    cdef Py_ssize_t _nout
    cdef Py_ssize_t _gen
    cdef unsigned long long _stamp
    cdef bint _has_gen

    def __dealloc__(self):
        free(self._outs)

    cdef inline PyObject** _out_ptrs(self) noexcept:
        # Borrowed pointers to the outputs; an output clears its own on death.
        return self._outs if self._outs != NULL else &self._out1

    def forward(self, *xs):
        raise NotImplementedError(f"{type(self).__name__}.forward is not implemented")

    def backward(self, *gys):
        raise NotImplementedError(f"{type(self).__name__}.backward is not implemented")

    def __call__(self, *inputs):
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


class _Dead:
    pass


_dead_ref = weakref.ref(_Dead())


# ---------------------------------------------------------------- built-in ops

cdef enum:
    OP_ADD = 1
    OP_SUB
    OP_MUL
    OP_DIV
    OP_NEG
    OP_POW


cdef class Add(Function):
    """y = x0 + x1 (broadcasting)."""
    def forward(self, x0, x1):
        return _K.add(x0, x1)

    def backward(self, gy):
        return gy, gy


cdef class Sub(Function):
    """y = x0 - x1 (broadcasting)."""
    def forward(self, x0, x1):
        return _K.sub(x0, x1)

    def backward(self, gy):
        return gy, _K.neg_backward(gy)


cdef class Mul(Function):
    """y = x0 * x1 (broadcasting)."""
    def forward(self, x0, x1):
        return _K.mul(x0, x1)

    def backward(self, gy):
        return _K.mul_backward(gy, self._inputs[0].data, self._inputs[1].data)


cdef class Div(Function):
    """y = x0 / x1 (broadcasting)."""
    def forward(self, x0, x1):
        return _K.div(x0, x1)

    def backward(self, gy):
        return _K.div_backward(gy, self._inputs[0].data, self._inputs[1].data)


cdef class Neg(Function):
    """y = -x."""
    def forward(self, x):
        return _K.neg(x)

    def backward(self, gy):
        return _K.neg_backward(gy)


cdef object _check_exponent(object c):
    if isinstance(c, _Variable):
        raise TypeError("pow: the exponent must be a constant (a Python or NumPy "
                        "scalar or an ndarray), not a Variable")
    if c is None or isinstance(c, (str, bytes)) or (
            isinstance(c, (_ndarray, np.generic)) and c.dtype.kind not in "biufc"):
        raise TypeError(f"pow: unsupported exponent {c!r} of type {type(c).__name__}")
    return c


cdef class Pow(Function):
    """y = x ** c for a constant exponent ``c``."""
    cdef public object c

    def __init__(self, c):
        self.c = _check_exponent(c)

    def forward(self, x):
        return _K.pow(x, self.c)

    def backward(self, gy):
        return _K.pow_backward(gy, self._inputs[0].data, self.c)


cdef inline int _exact_op(Function f) noexcept:
    # Built-in behaviour applies to the exact built-in classes only: a user
    # subclass may override forward/backward.
    cdef object t = type(f)
    if t is Mul:
        return OP_MUL
    if t is Add:
        return OP_ADD
    if t is Sub:
        return OP_SUB
    if t is Div:
        return OP_DIV
    if t is Pow:
        return OP_POW
    if t is Neg:
        return OP_NEG
    return 0


cdef inline double _spow(double x, double c) noexcept:
    # The special cases NumPy's array ** scalar takes, for bitwise agreement.
    if c == 2.0:
        return x * x
    if c == 1.0:
        return x
    if c == 0.5:
        return sqrt(x)
    if c == -1.0:
        return 1.0 / x
    if c == 0.0:
        return 1.0
    return c_pow(x, c)


cdef inline bint _scalar_exponent(object c, double* out):
    if type(c) is float:
        out[0] = <double>c
        return True
    if type(c) is int and -(1 << 52) < c < (1 << 52):
        out[0] = <double>c
        return True
    return False


cdef inline bint _operand_value(object a, double* out):
    """Value of a fast-path operand: a float64 scalar Variable or a Python float/int."""
    if isinstance(a, _Variable):
        return (<_Variable>a)._value(out)
    return _scalar_exponent(a, out)


cdef inline _Variable _operand_var(object a, double v):
    if isinstance(a, _Variable):
        return <_Variable>a
    cdef _Variable c = _lazy_var(v)
    c._const = True
    return c


cdef object _call_scalar(Function f, int op, tuple args):
    """The C path of a built-in op on float64 scalars; None if it does not apply."""
    cdef double x0 = 0.0, x1 = 0.0, c = 0.0, y
    cdef Py_ssize_t nargs = len(args)
    if _pure or nargs != (1 if op == OP_NEG or op == OP_POW else 2):
        return None
    a = args[0]
    b = args[1] if nargs == 2 else None
    if not _operand_value(a, &x0):
        return None
    if op == OP_POW:
        if not _scalar_exponent((<Pow>f).c, &c):
            return None
        y = _spow(x0, c)
    elif op == OP_NEG:
        y = -x0
    else:
        if not _operand_value(b, &x1):
            return None
        if op == OP_ADD:
            y = x0 + x1
        elif op == OP_SUB:
            y = x0 - x1
        elif op == OP_MUL:
            y = x0 * x1
        else:
            y = x0 / x1
    cdef _Variable out = _lazy_var(y)
    cdef _Variable v0, v1
    if _backprop_enabled():
        v0 = _operand_var(a, x0)
        if op == OP_NEG or op == OP_POW:
            f._inputs = (v0,)
            f._gen = v0._gen
        else:
            v1 = _operand_var(b, x1)
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


def add(x0, x1):
    """Return ``x0 + x1`` as a Variable (either may be an ndarray or scalar)."""
    return _call(Add.__new__(Add), (x0, x1))


def sub(x0, x1):
    """Return ``x0 - x1``."""
    return _call(Sub.__new__(Sub), (x0, x1))


def rsub(x0, x1):
    """Return ``x1 - x0`` (``Variable.__rsub__``)."""
    return _call(Sub.__new__(Sub), (x1, x0))


def mul(x0, x1):
    """Return ``x0 * x1``."""
    return _call(Mul.__new__(Mul), (x0, x1))


def div(x0, x1):
    """Return ``x0 / x1``."""
    return _call(Div.__new__(Div), (x0, x1))


def rdiv(x0, x1):
    """Return ``x1 / x0`` (``Variable.__rtruediv__``)."""
    return _call(Div.__new__(Div), (x1, x0))


def neg(x):
    """Return ``-x``."""
    return _call(Neg.__new__(Neg), (x,))


def pow(x, c):
    """Return ``x ** c`` for a constant exponent ``c`` (not a Variable)."""
    cdef Pow f = Pow.__new__(Pow)
    f.c = _check_exponent(c)
    return _call(f, (x,))


# ---------------------------------------------------------------- __call__

cdef object _input_variable(Function f, object x, list datas):
    """Convert one argument of a Function call to a Variable."""
    if isinstance(x, _Variable):
        return x
    if isinstance(x, _ndarray):
        return _wrap_data(x)
    if isinstance(x, (bool, int, float, complex)) and not isinstance(x, np.generic):
        # Python scalars are weak (NEP 50): float32 data * 2.0 stays float32.
        if datas:
            return _wrap_data(np.asarray(x, dtype=np.result_type(*datas, x)))
        return _wrap_data(np.asarray(x))
    if isinstance(x, np.generic):
        return _wrap_data(np.asarray(x))
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


cdef object _call(Function f, tuple args):
    """Function.__call__: the general path (user functions, arrays)."""
    cdef int op = _exact_op(f)
    if op:
        out = _call_scalar(f, op, args)
        if out is not None:
            return out
    datas = []          # the operands' arrays, which set a Python scalar's dtype
    for a in args:
        d = (<_Variable>a)._get_data() if isinstance(a, _Variable) else a
        if isinstance(d, (_ndarray, np.generic)):
            datas.append(d)
    inputs = [_input_variable(f, a, datas) for a in args]
    xs = [(<_Variable>v)._get_data() for v in inputs]
    if op:
        _check_numeric(f, inputs)
        ys = _forward_builtin(f, op, xs)
    else:
        ys = f.forward(*xs)
    if type(ys) is not tuple:
        ys = (ys,)
    if len(ys) == 0:
        raise ValueError(f"{type(f).__name__}.forward returned no outputs")
    outputs = [_wrap_data(_forward_output(f, y)) for y in ys]
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


cdef object _forward_builtin(Function f, int op, list xs):
    if op == OP_ADD:
        return _K.add(xs[0], xs[1])
    if op == OP_SUB:
        return _K.sub(xs[0], xs[1])
    if op == OP_MUL:
        return _K.mul(xs[0], xs[1])
    if op == OP_DIV:
        return _K.div(xs[0], xs[1])
    if op == OP_NEG:
        return _K.neg(xs[0])
    return _K.pow(xs[0], (<Pow>f).c)


# ---------------------------------------------------------------- backward

# Backward takes functions in DeZero's order: highest generation first and,
# among equal generations, the one queued last -- the key
# (-generation, -insertion order).  In a consistent graph every function
# queued while generation g is processed has a lower generation, so keys only
# decrease: a LIFO stack per generation yields that order in O(1) a function
# (a binary heap pays log n, and its scattered accesses dominate wide graphs).
# A generation that breaks this (set by hand, or out of range) moves the
# queue into a binary heap on the same key.

DEF _MAX_BUCKETS = 1 << 24

cdef struct _Entry:
    Py_ssize_t gen
    unsigned long long order
    PyObject* func              # a strong reference, NULL once taken (buckets)
    Py_ssize_t next             # the entry below in the same bucket

cdef struct _Queue:
    _Entry* items               # buckets: every entry queued; heap: the heap
    Py_ssize_t n
    Py_ssize_t cap
    Py_ssize_t* heads           # top entry per generation (-1: empty); NULL: heap
    Py_ssize_t cur              # buckets: no queued generation is above this
    Py_ssize_t live
    unsigned long long counter


cdef inline bint _before(_Entry* a, _Entry* b) noexcept:
    return a.gen > b.gen or (a.gen == b.gen and a.order > b.order)


cdef int _queue_init(_Queue* q, Py_ssize_t top_gen) except -1:
    q.items = NULL
    q.heads = NULL
    q.n = q.cap = q.live = 0
    q.counter = 0
    q.cur = top_gen
    if 0 <= top_gen < _MAX_BUCKETS:
        q.heads = <Py_ssize_t*>malloc((top_gen + 1) * sizeof(Py_ssize_t))
        if q.heads == NULL:
            raise MemoryError()
        for i in range(top_gen + 1):
            q.heads[i] = -1
    return 0


cdef void _queue_free(_Queue* q) noexcept:
    for i in range(q.n):
        if q.items[i].func != NULL:
            Py_DECREF(<object>q.items[i].func)
    free(q.items)
    free(q.heads)


cdef int _append(_Queue* q, _Entry* e) except -1:
    cdef _Entry* grown
    if q.n == q.cap:
        q.cap = 64 if q.cap == 0 else 2 * q.cap
        grown = <_Entry*>realloc(q.items, q.cap * sizeof(_Entry))
        if grown == NULL:
            raise MemoryError()
        q.items = grown
    q.items[q.n] = e[0]
    q.n += 1
    return 0


cdef void _sift_up(_Queue* q, Py_ssize_t i) noexcept:
    cdef _Entry e = q.items[i]
    cdef Py_ssize_t parent
    while i > 0:
        parent = (i - 1) >> 1
        if not _before(&e, &q.items[parent]):
            break
        q.items[i] = q.items[parent]
        i = parent
    q.items[i] = e


cdef void _sift_down(_Queue* q, Py_ssize_t i) noexcept:
    cdef _Entry e = q.items[i]
    cdef Py_ssize_t child
    while True:
        child = 2 * i + 1
        if child >= q.n:
            break
        if child + 1 < q.n and _before(&q.items[child + 1], &q.items[child]):
            child += 1
        if not _before(&q.items[child], &e):
            break
        q.items[i] = q.items[child]
        i = child
    q.items[i] = e


cdef void _to_heap(_Queue* q) noexcept:
    # Keep the entries not yet taken, then heapify them in place.
    cdef Py_ssize_t i, k = 0
    for i in range(q.n):
        if q.items[i].func != NULL:
            q.items[k] = q.items[i]
            k += 1
    q.n = k
    free(q.heads)
    q.heads = NULL
    for i in range(k // 2 - 1, -1, -1):
        _sift_down(q, i)


cdef int _queue_push(_Queue* q, Function f) except -1:
    cdef _Entry e
    q.counter += 1
    e.gen = f._gen
    e.order = q.counter
    e.func = <PyObject*>f
    e.next = -1
    if q.heads != NULL and not (0 <= e.gen <= q.cur):
        _to_heap(q)
    if q.heads != NULL:
        e.next = q.heads[e.gen]
        q.heads[e.gen] = q.n
        _append(q, &e)
    else:
        _append(q, &e)
        _sift_up(q, q.n - 1)
    Py_INCREF(f)
    q.live += 1
    return 0


cdef PyObject* _queue_pop(_Queue* q) noexcept:
    """Take the first function; the caller owns the returned reference."""
    cdef PyObject* f
    cdef Py_ssize_t top
    q.live -= 1
    if q.heads != NULL:
        while q.heads[q.cur] == -1:
            q.cur -= 1
        top = q.heads[q.cur]
        q.heads[q.cur] = q.items[top].next
        f = q.items[top].func
        q.items[top].func = NULL
        return f
    f = q.items[0].func
    q.n -= 1
    if q.n > 0:
        q.items[0] = q.items[q.n]
        _sift_down(q, 0)
    return f


cdef int _backward(Function root, bint retain_grad) except -1:
    global _stamp_counter
    _stamp_counter += 1
    cdef unsigned long long stamp = _stamp_counter
    cdef _Queue queue
    cdef Function f, creator
    cdef _Variable x
    _queue_init(&queue, root._gen)
    _backward_begin()   # freed buffers may be reused until _backward_end
    try:
        root._stamp = stamp
        _queue_push(&queue, root)
        while queue.live:
            f = <Function>_queue_pop(&queue)
            Py_DECREF(f)            # `f` holds its own reference now
            _step(f, retain_grad)
            if f._inputs is None:
                continue
            for v in f._inputs:
                x = <_Variable>v
                if x._creator is not None:
                    creator = <Function>x._creator
                    if creator._stamp != stamp:
                        creator._stamp = stamp
                        _queue_push(&queue, creator)
    finally:
        _queue_free(&queue)
        _backward_end()
    return 0


cdef inline void _clear_grad(_Variable v) noexcept:
    v._grad = None
    v._glazy = False


cdef int _step(Function f, bint retain_grad) except -1:
    """Run one function's backward and deliver its input gradients."""
    cdef int op = _exact_op(f)
    if op and f._nout == 1 and f._out1 != NULL:
        if _step_scalar(f, op, retain_grad):
            return 0
        return _step_builtin(f, op, retain_grad)
    return _step_user(f, retain_grad)


cdef bint _step_scalar(Function f, int op, bint retain_grad) except -1:
    """The C path: float64 scalar gradient, inputs and output."""
    if _pure or f._inputs is None:
        return False
    cdef _Variable out = <_Variable>f._out1
    cdef double gy, x0 = 0.0, x1 = 0.0, c = 0.0, g0, g1 = 0.0
    if out._glazy:
        gy = out._gv
    elif _is_f64_scalar_array(out._grad):
        gy = _array_value(out._grad)
    else:
        return False
    cdef tuple inputs = f._inputs
    cdef Py_ssize_t nin = len(inputs)
    if nin != (1 if op == OP_NEG or op == OP_POW else 2):
        return False
    cdef _Variable v0 = <_Variable>inputs[0], v1 = None
    if not v0._value(&x0):
        return False
    if nin == 2:
        v1 = <_Variable>inputs[1]
        if not v1._value(&x1):
            return False
    if op == OP_ADD:
        g0 = gy
        g1 = gy
    elif op == OP_SUB:
        g0 = gy
        g1 = -gy
    elif op == OP_MUL:
        g0 = gy * x1
        g1 = gy * x0
    elif op == OP_DIV:
        g0 = gy / x1
        g1 = gy * (-x0 / (x1 * x1))
    elif op == OP_NEG:
        g0 = -gy
    else:
        if not _scalar_exponent((<Pow>f).c, &c):
            return False
        g0 = c * _spow(x0, c - 1.0) * gy
    if not retain_grad:
        _clear_grad(out)
    _deliver_scalar(v0, g0)
    if v1 is not None:
        _deliver_scalar(v1, g1)
    return True


cdef inline bint _scalar_target(_Variable x) noexcept:
    # x's value and grad are float64 scalars, so a scalar grad adds in C.
    if not (x._lazy or _is_f64_scalar_array(x._data)):
        return False
    return x._glazy or x._grad is None or _is_f64_scalar_array(x._grad)


cdef int _deliver_scalar(_Variable x, double g) except -1:
    """``_deliver`` for a float64 scalar gradient."""
    if x._const:
        return 0        # an engine-made constant: nobody can ask for its grad
    if not _scalar_target(x):
        return _deliver(x, _scalar_array(g), True)
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
    g = out._get_grad()
    if not retain_grad:
        out._grad = None
    return g


cdef int _step_builtin(Function f, int op, bint retain_grad) except -1:
    """Built-in op on arrays: kernels, reusing the grad buffer when it is ours."""
    gy = _take_output_grad(<_Variable>f._out1, retain_grad)
    if gy is None:
        return 0
    cdef tuple inputs = f._inputs
    cdef bint owned = _exclusive(gy)
    if op == OP_ADD:
        _deliver(<_Variable>inputs[0], gy, owned)
        # Both inputs get gy: the second must have its own array.
        _deliver(<_Variable>inputs[1], gy, False)
        return 0
    if op == OP_SUB:
        g1 = _K.neg_backward(gy)
        _deliver(<_Variable>inputs[0], gy, owned)
        _deliver(<_Variable>inputs[1], g1, True)
        return 0
    # The kernels may write the first gradient into gy's buffer when we own it.
    buf = gy if owned else None
    x0 = (<_Variable>inputs[0])._get_data()
    g1 = None
    if op == OP_NEG:
        g0 = _K.neg_backward(gy, out=buf)
    elif op == OP_POW:
        g0 = _K.pow_backward(gy, x0, (<Pow>f).c, out=buf)
    else:
        x1 = (<_Variable>inputs[1])._get_data()
        if op == OP_MUL:
            g0, g1 = _K.mul_backward(gy, x0, x1, out=buf)
        else:
            g0, g1 = _K.div_backward(gy, x0, x1, out=buf)
    buf = gy = None
    _deliver(<_Variable>inputs[0], g0, g0 is not g1)
    if g1 is not None:
        _deliver(<_Variable>inputs[1], g1, True)
    return 0


cdef int _step_user(Function f, bint retain_grad) except -1:
    """A user Function: call its Python backward with the output grads."""
    if f._inputs is None or f._nout == 0:
        return 0
    cdef Py_ssize_t i, n = f._nout
    cdef PyObject* o
    cdef PyObject** outs = f._out_ptrs()
    cdef bint any_grad = False
    if n == 1:
        o = outs[0]
        if o == NULL or not (<_Variable>o)._has_grad():
            return 0
        gy = (<_Variable>o)._get_grad()
        if not retain_grad:
            _clear_grad(<_Variable>o)
        return _deliver_user(f, [f.backward(gy)])
    gys = []
    for i in range(n):
        o = outs[i]
        if o != NULL and (<_Variable>o)._has_grad():
            gys.append((<_Variable>o)._get_grad())
            any_grad = True
        else:
            gys.append(None)
    if not any_grad:
        return 0        # no gradient reached this function: it contributes nothing
    for i in range(n):
        if gys[i] is None:
            # An output outside the path to the root has a zero gradient.
            if outs[i] != NULL:
                data = (<_Variable>outs[i])._get_data()
                gys[i] = np.zeros_like(data)
            else:
                shape, dtype = f._meta[i]
                gys[i] = np.zeros(shape, dtype)
    if not retain_grad:
        for i in range(n):
            if outs[i] != NULL:
                _clear_grad(<_Variable>outs[i])
    return _deliver_user(f, [f.backward(*gys)])


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
    for i in range(len(inputs)):
        gx = gxs[i]
        if gx is None:
            continue
        owned = tuple_private and Py_REFCNT(<PyObject*>gx) == 2 and _owns_buffer(gx)
        _deliver(<_Variable>inputs[i], gx, owned)
        gx = None
    return 0


cdef int _deliver(_Variable x, object gx, bint owned) except -1:
    """Accumulate gradient ``gx`` into ``x.grad`` (``x.grad = x.grad + gx``).

    ``owned`` says nobody else can see ``gx``; otherwise it is copied before
    it is stored, so grads never alias each other or the user's arrays.
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
        if cnp.PyArray_TYPE(gx) != cnp.PyArray_TYPE(data) and (
                cnp.PyArray_ISFLOAT(data) or cnp.PyArray_ISCOMPLEX(data)):
            gx = gx.astype(data.dtype)      # a grad has its variable's dtype
            owned = True
    if cnp.PyArray_ISOBJECT(gx):
        _track(x)
    if x._glazy:
        x._get_grad()
    acc = x._grad
    if acc is None:
        x._grad = gx if owned else _K.copy(gx)
        return 0
    # In place only into an array no one but x can see, of the result's dtype.
    x._grad = None
    if (_exclusive(acc) and acc.shape == gx.shape and acc.dtype == gx.dtype
            and gx is not acc):
        np.add(acc, gx, out=acc)
        x._grad = acc
    else:
        x._grad = _as_nd(acc + gx)
    return 0



# ---------------------------------------------------------------- operators

def setup_variable():
    """Install the arithmetic operators on Variable (idempotent; done on import)."""
    Variable.__add__ = add
    Variable.__radd__ = add
    Variable.__mul__ = mul
    Variable.__rmul__ = mul
    Variable.__neg__ = neg
    Variable.__sub__ = sub
    Variable.__rsub__ = rsub
    Variable.__truediv__ = div
    Variable.__rtruediv__ = rdiv
    Variable.__pow__ = pow
