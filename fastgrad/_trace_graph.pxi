# Included by _trace.pyx: graph plans.  A recording that calls Functions
# outside the table (matmul, linear, softmax_cross_entropy, reshape, conv2d,
# pooling, a user's Function...) or takes the steps of training
# (cleargrad(), backward(), an optimizer's update()) replays as the
# engine's calls alone: each op is a copy of the recorded Function called
# on the current operands, so the graph, the values and the grads are the
# eager run's, while the Python around them (layers, models, the loss
# function's wrappers) does not run.

cdef enum:
    _G_OP = 0           # (_G_OP, template, operand slots, output slot(s), face)
    _G_WRAP = 1         # (_G_WRAP, Variable class, array slot, output slot)
    _G_SUM = 2          # (_G_SUM, operand slot, output slot)
    _G_CLEARGRAD = 3    # (_G_CLEARGRAD, slot)
    _G_BACKWARD = 4     # (_G_BACKWARD, slot, retain_grad)
    _G_CALL = 5         # (_G_CALL, fn)


cdef int _build_graph(_Plan plan, _Recorder rec, int container, list ret) except -1:
    """Every op and step in recorded order (none dropped: a Function may
    have effects, a batch norm's running statistics say)."""
    cdef Py_ssize_t s
    plan.graph = True
    plan.container = container
    plan.nnodes = len(rec.nodes)
    plan._bind_inputs(rec)
    plan.consts = [None] * plan.nslots
    plan.fresh = []
    for s in range(plan.nslots):
        if rec.kinds[s] != _CONST:
            continue
        c = rec.objs[s]
        plan.consts[s] = c
        if isinstance(c, _Variable):
            # Made inside the function: a new Variable at every call, as eager
            # makes one (its grad is this call's).
            plan.consts[s] = (<_Variable>c)._get_data()
            plan.fresh.append((s, type(c)))
    steps = []
    events = rec.events
    e = 0
    for k in range(len(rec.nodes) + 1):
        while e < len(events) and events[e][0] == k:
            ev = events[e]
            if ev[1] == _EV_CLEARGRAD:
                steps.append((_G_CLEARGRAD, ev[2]))
            elif ev[1] == _EV_BACKWARD:
                steps.append((_G_BACKWARD, ev[2], ev[3]))
            else:
                steps.append((_G_CALL, ev[2]))
            e += 1
        if k == len(rec.nodes):
            break
        template, operands, out, face = rec.nodes[k]
        if template is _WRAP:
            steps.append((_G_WRAP, face, operands[0], out))
        elif template is _SUM:
            steps.append((_G_SUM, operands[0], out))
        else:
            steps.append((_G_OP, template, operands, out, face))
    plan.steps = steps
    plan.has_steps = bool(events)
    plan.ret = ret
    return 0


cdef object _replay_graph(_Plan plan, list ins):
    cdef Py_ssize_t j
    cdef tuple step
    cdef Function f
    vals = list(plan.consts)
    for j in range(plan.nin):
        vals[plan.in_slot[j]] = ins[j]
    for s, cls in plan.fresh:
        vals[s] = _wrap_data(vals[s], cls)
    for step in plan.steps:
        kind = step[0]
        if kind == _G_OP:
            template = step[1]
            if type(template) is tuple:
                g = _tp_new(template[0], _empty_tuple)
                if template[1] is not None:
                    g.__dict__.update(template[1])
                f = <Function>g
            else:
                f = (<_TableOp>template)._fresh()
                f._full = (<_TableOp>template)._full
            args = tuple([vals[s] for s in step[2]])
            y = _call_eager(f, args, step[4])
            out = step[3]
            if type(out) is tuple:
                for j in range(len(<tuple>out)):
                    vals[out[j]] = y[j]
            else:
                vals[out] = y
        elif kind == _G_WRAP:
            vals[step[3]] = step[1](vals[step[2]])
        elif kind == _G_SUM:
            vals[step[2]] = _functions().sum(vals[step[1]])
        elif kind == _G_CLEARGRAD:
            vals[step[1]].cleargrad()
        elif kind == _G_BACKWARD:
            (<_Variable>vals[step[1]])._backward_from(step[2], False)
        else:
            step[1]()
    if plan.container == 3:
        return None
    items = [vals[s] for s in plan.ret]
    if plan.container == 0:
        return items[0]
    return tuple(items) if plan.container == 1 else items
