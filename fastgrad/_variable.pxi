# Included by _core.pyx: the data model and the two faces.  _Variable (its C
# attributes in _core.pxd), the stage-2 Variable, the full face's
# _GraphVariable and its registration, and the constructors of engine-made
# Variables.

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
            _hook_step(self, _STEP_CLEARGRAD, False, False)
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
        self._backward_from(bool(retain_grad), False)

    cdef int _backward_from(self, bint retain_grad, bint create_graph) except -1:
        if _recording:
            # A traced step notes the call; its own ops are not recorded.
            _hook_step(self, _STEP_BACKWARD, retain_grad, create_graph)
            try:
                self._seed(create_graph)
                if self._creator is not None:
                    _backward(<Function>self._creator, retain_grad, create_graph)
            finally:
                _hook_step(self, _STEP_BACKWARD_DONE, retain_grad, create_graph)
            return 0
        self._seed(create_graph)
        if self._creator is not None:
            _backward(<Function>self._creator, retain_grad, create_graph)
        return 0

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
        self._backward_from(bool(retain_grad), bool(create_graph))


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
