# Included by _core.pyx: the backward driver (a heap-ordered queue of
# functions, _queue.pxi), one step per function kind, gradient delivery to
# the inputs, and the recorded backward of create_graph.

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


cdef bint _inputs_large(Function f) noexcept:
    # An input gradient has its input's shape: as large as the input.
    for v in f._inputs:
        if _any_large(((<_Variable>v)._data,)):
            return True
    return False


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
    cdef bint large = _any_large((gy,)) or _inputs_large(f)
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
    cdef bint large = (_any_large([(<_Variable>g)._data for g in gys] if graph else gys)
                       or _inputs_large(f))
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
