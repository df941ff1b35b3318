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

The module is one namespace in several files: this one (array helpers and
the operators), _config.pxi (Config), _scalar_math.pxi (the C scalar
math), _variable.pxi (the data model and faces), _function.pxi (Function,
the table ops, ``__call__``), _backward.pxi (the driver and gradient
delivery), plus the generated _opcodes.pxi and _optable.pxi.  _core.pxd
declares what other modules (the tracer, fastgrad._trace) may use.
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
cdef Py_ssize_t _LARGE = 1 << 18  # bytes: an array whose freeing is worth a purge
cdef bint _freed_large = False    # the running backward pass dropped a large grad
cdef int _recording = 0           # traces being recorded, in any thread (fastgrad._trace)
# The tracer's hooks (see _install_tracer), called only while _recording.
cdef _call_hook _hook_call = NULL
cdef _variable_hook _hook_made = NULL
cdef _variable_hook _hook_touch = NULL
cdef _step_hook _hook_step = NULL


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


include "_variable.pxi"
include "_function.pxi"
include "_backward.pxi"


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
