# Included by _trace.pyx: the graph node of a replayed call (_TracedCall) and
# its backward: a C loop (scalar plans), one fused pass (array plans), or the
# eager graph rebuilt.

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
