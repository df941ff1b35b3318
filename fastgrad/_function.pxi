# Included by _core.pyx: Function and its kinds (user Functions,
# GraphFunction, the table's ops), the C scalar path of a table op, and
# Function.__call__ (inputs, forward, the graph's links).

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


cdef void _scalar_run_forward(const _PlanOp* nodes, Py_ssize_t n, double* vals) noexcept:
    # The loop lives here, where the table's scalar formulas inline into it.
    cdef Py_ssize_t k
    cdef double x[2]
    cdef const _PlanOp* op
    for k in range(n):
        op = &nodes[k]
        x[0] = vals[op.a]
        if op.nargs > 1:
            x[1] = vals[op.b]
        vals[op.out] = _table_scalar_forward(op.code, x, op.p)


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
                         _variable_hook touch, _step_hook step) except -1:
    """Called once by fastgrad._trace when it is imported: the engine does
    not import the tracer, the tracer plugs into the engine."""
    global _hook_call, _hook_made, _hook_touch, _hook_step
    _hook_call, _hook_made, _hook_touch, _hook_step = call, made, touch, step
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
