# Included by _trace.pyx: a recorded call signature as a _Plan (its ops, their
# backward order, its fused programs) and the replay of a plan.

# ---------------------------------------------------------------- plans

# A plan's ops are _PlanOp structs (declared in _core.pxd: the engine runs a
# scalar plan's forward, _scalar_run_forward).

@cython.final
cdef class _Plan:
    """One recorded signature: immutable once built, so threads may share it."""
    cdef str name
    cdef object reason          # not None: the signature runs eagerly
    cdef bint scalar
    cdef Py_ssize_t nslots, nin, nnodes, nout, rel_gen
    cdef _PlanOp* nodes         # live ops in recorded order
    cdef int* order             # backward order (indexes into nodes)
    cdef double* init           # slot values: the constants (scalar plans)
    cdef char* kinds
    cdef int* in_slot           # input -> slot
    cdef int* out_slot          # output -> slot (distinct op results)
    cdef int* slot_out          # slot -> output, or -1
    cdef list ops               # templates, alive for nodes[k].op
    cdef list faces             # per node: the face argument eager passed
    cdef list consts            # slot -> the constant operand (else None)
    cdef list sources           # input -> leaf index, or weakref to a captured Variable
    cdef list captured          # input -> (type, shape, dtype) of a captured Variable, or None
    cdef list out_cls
    cdef list ret               # returned items: ("o", output) or ("i", input)
    cdef bint leaves_only       # the inputs are the call's leaves (nothing captured)
    cdef int* in_target         # input -> index among the Variable inputs, or -1
    cdef int* slot_in           # slot -> input, or -1
    # fused array plans: one pass forward, one pass backward
    cdef bint fused
    cdef bint sum_last          # the result is the sum of the last op's array
    cdef object shape
    cdef int typenum
    cdef Program fprog, bprog   # the forward and backward programs
    cdef tuple fparams, bparams
    cdef bint exact_pow         # the ops' powers take NumPy's exact cases only
    cdef tuple bgrad            # the inputs bprog's outputs are the grads of
    cdef int container          # 0 one Variable, 1 tuple, 2 list, 3 None
    # graph plans (_trace_graph.pxi): any Function, and the steps of training
    cdef bint graph
    cdef list steps             # ops and steps, in recorded order
    cdef list fresh             # (slot, class): a constant Variable made anew
    cdef bint has_steps         # it calls backward() or an update

    def __dealloc__(self):
        free(self.nodes)
        free(self.order)
        free(self.init)
        free(self.kinds)
        free(self.in_slot)
        free(self.out_slot)
        free(self.slot_out)
        free(self.in_target)
        free(self.slot_in)

    cdef int _build(self, _Recorder rec, int container, list ret) except -1:
        cdef Py_ssize_t k, s, j
        cdef _PlanOp* n
        node_of = {rec.nodes[k][2]: k for k in range(len(rec.nodes))}
        # Only the ops the results depend on (dead code is dropped).
        live = set()
        stack = [node_of[s] for s in ret if s in node_of]
        while stack:
            k = stack.pop()
            if k in live:
                continue
            live.add(k)
            stack.extend([node_of[s] for s in rec.nodes[k][1] if s in node_of])
        kept = sorted(live)
        self.nslots = len(rec.kinds)
        self.nnodes = len(kept)
        self.container = container
        self.nodes = <_PlanOp*>malloc(max(1, self.nnodes) * sizeof(_PlanOp))
        self.order = <int*>malloc(max(1, self.nnodes) * sizeof(int))
        self.init = <double*>malloc(max(1, self.nslots) * sizeof(double))
        self.kinds = <char*>malloc(max(1, self.nslots))
        self.out_slot = <int*>malloc(max(1, len(ret)) * sizeof(int))
        self.slot_out = <int*>malloc(max(1, self.nslots) * sizeof(int))
        if (self.nodes == NULL or self.order == NULL or self.init == NULL or self.kinds == NULL
                or self.out_slot == NULL or self.slot_out == NULL):
            raise MemoryError()
        self.scalar = rec.scalar
        self.consts = [None] * self.nslots
        for s in range(self.nslots):
            self.kinds[s] = rec.kinds[s]
            self.slot_out[s] = -1
            self.init[s] = 0.0
            if rec.kinds[s] == _CONST:
                c = rec.objs[s]
                if isinstance(c, _Variable):
                    c = (<_Variable>c)._get_data()
                self.consts[s] = c
                if self.scalar and not _const_value(c, &self.init[s]):
                    self.scalar = False
        self._bind_inputs(rec)
        for j in range(self.nin):
            if self.in_target[j] < 0:
                self.scalar = False     # an array argument: the eager replay
        self.ops = []
        self.faces = []
        for j, k in enumerate(kept):
            template, operands, out, face = rec.nodes[k]
            n = &self.nodes[j]
            n.op = <PyObject*>template
            n.nargs = len(operands)
            n.a = operands[0]
            n.b = operands[1] if n.nargs > 1 else -1
            n.out = out
            n.p[0] = n.p[1] = n.p[2] = 0.0
            n.code = 0 if template is _SUM else (<_TableOp>template)._scalar_code()
            if template is _SUM:
                self.scalar = False
            elif self.scalar and not (<_TableOp>template)._scalar_params(n.p):
                self.scalar = False
            self.ops.append(template)
            self.faces.append(face)
        self.nout = 0
        self.out_cls = []
        self.ret = []
        for s in ret:
            if rec.kinds[s] == _INPUT:
                self.ret.append(("i", rec.input_slots.index(s)))
                continue
            if self.slot_out[s] < 0:
                self.slot_out[s] = self.nout
                self.out_slot[self.nout] = s
                self.out_cls.append(type(rec.objs[s]))
                self.nout += 1
            self.ret.append(("o", self.slot_out[s]))
        self._schedule(rec, kept)
        if (not self.scalar and not _pure and self.nout == 1 and len(self.ret) == 1
                and not rec.unfusable):
            try:
                self._fuse(rec, kept)
            except _NotFusable:
                self.fused = False
        return 0

    cdef int _bind_inputs(self, _Recorder rec) except -1:
        """Where each input comes from: a leaf of the call, or a Variable
        captured from the enclosing scope (kept by weak reference)."""
        cdef Py_ssize_t j, s
        self.nslots = len(rec.kinds)
        self.nin = len(rec.inputs)
        self.in_slot = <int*>malloc(max(1, self.nin) * sizeof(int))
        self.in_target = <int*>malloc(max(1, self.nin) * sizeof(int))
        self.slot_in = <int*>malloc(max(1, self.nslots) * sizeof(int))
        if self.in_slot == NULL or self.in_target == NULL or self.slot_in == NULL:
            raise MemoryError()
        for s in range(self.nslots):
            self.slot_in[s] = -1
        self.sources = []
        self.captured = []
        self.leaves_only = True
        nvars = 0
        for j in range(self.nin):
            self.in_slot[j] = rec.input_slots[j]
            self.slot_in[rec.input_slots[j]] = j
            if isinstance(rec.objs[rec.input_slots[j]], _Variable):
                self.in_target[j] = nvars
                nvars += 1
            else:
                self.in_target[j] = -1
            src = rec.inputs[j]
            if type(src) is int:
                self.sources.append(src)
                self.captured.append(None)
            else:
                self.leaves_only = False
                self.sources.append(weakref.ref(src))
                d = (<_Variable>src)._get_data()
                self.captured.append((type(src), d.shape if d is not None else None,
                                      d.dtype if d is not None else None))
        return 0

    cdef int _schedule(self, _Recorder rec, list kept) except -1:
        """The backward order: the engine's queue, run on the plan's ops."""
        cdef Py_ssize_t k, s
        gen = [0] * self.nslots             # inputs at generation 0
        creator = {}
        for k in range(self.nnodes):
            g = max([gen[s] for s in rec.nodes[kept[k]][1]])
            gen[self.nodes[k].out] = g + 1
            creator[self.nodes[k].out] = k
        self.rel_gen = max([gen[self.out_slot[k]] for k in range(self.nout)] + [1]) - 1
        queue = []
        counter = 0
        seen = set()
        for k in range(self.nout):
            f = creator[self.out_slot[k]]
            if f not in seen:
                seen.add(f)
                counter += 1
                heapq.heappush(queue, (-(gen[self.out_slot[k]] - 1), -counter, f))
        count = 0
        reached = set()
        while queue:
            f = heapq.heappop(queue)[2]
            self.order[count] = f
            count += 1
            for i, s in enumerate(rec.nodes[kept[f]][1]):
                kind = rec.kinds[s]
                act = _SKIP if kind == _CONST else _GIVE if kind == _INPUT else (
                    _ADD if s in reached else _SET)
                self.nodes[f].act[i] = act
                reached.add(s)
            for s in rec.nodes[kept[f]][1]:
                if s in creator and creator[s] not in seen:
                    seen.add(creator[s])
                    counter += 1
                    heapq.heappush(queue, (-(gen[s] - 1), -counter, creator[s]))
        return 0

    cdef list _inputs_now(self, list leaves):
        """The input objects for this call; None if a captured Variable changed."""
        if self.leaves_only:
            return leaves
        ins = []
        for j in range(self.nin):
            src = self.sources[j]
            if type(src) is int:
                ins.append(leaves[src])
                continue
            v = src()
            if v is None:
                return None
            expect = self.captured[j]
            d = (<_Variable>v)._get_data()
            if d is None or type(v) is not expect[0] or d.shape != expect[1] or d.dtype != expect[2]:
                return None
            ins.append(v)
        return ins

    cdef object _result(self, list outs, list ins):
        if self.container == 0 and self.nout == 1:
            return outs[0]
        items = [outs[j] if kind == "o" else ins[j] for kind, j in self.ret]
        if self.container == 0:
            return items[0]
        return tuple(items) if self.container == 1 else items

    cdef object replay(self, list leaves):
        """This call's results, or _STALE if the plan no longer applies."""
        ins = self._inputs_now(leaves)
        if ins is None:
            return _STALE
        if self.graph:
            return _replay_graph(self, ins)
        if self.scalar:
            out = self._replay_scalar(ins)
            return _STALE if out is None else out
        if self.fused:
            out = self._replay_fused(ins)
            if out is not None:
                return out
        vals = self._run_eager(ins)
        return self._result([vals[self.out_slot[j]] for j in range(self.nout)], ins)

    cdef list _run_eager(self, list ins):
        """Run the ops through the eager engine (arrays, or a graph to rebuild)."""
        cdef Py_ssize_t j, k
        cdef _PlanOp* n
        vals = list(self.consts)
        for j in range(self.nin):
            vals[self.in_slot[j]] = ins[j]
        for k in range(self.nnodes):
            n = &self.nodes[k]
            if n.op == <PyObject*>_SUM:
                vals[n.out] = _functions().sum(vals[n.a])
                continue
            args = (vals[n.a],) if n.nargs == 1 else (vals[n.a], vals[n.b])
            vals[n.out] = _call_eager((<_TableOp>n.op)._fresh(), args, self.faces[k])
        return vals

    cdef object _replay_scalar(self, list ins):
        cdef Py_ssize_t j
        cdef _Variable v
        cdef double* vals = <double*>malloc(max(1, self.nslots) * sizeof(double))
        if vals == NULL:
            raise MemoryError()
        memcpy(vals, self.init, self.nslots * sizeof(double))
        cdef Py_ssize_t gen = 0
        for j in range(self.nin):
            v = <_Variable>ins[j]
            if not v._value(&vals[self.in_slot[j]]):
                free(vals)
                return None
            if v._gen > gen:
                gen = v._gen
        _scalar_run_forward(self.nodes, self.nnodes, vals)
        outs = [_lazy_var(vals[self.out_slot[j]], self.out_cls[j]) for j in range(self.nout)]
        if not _backprop_enabled():
            free(vals)
            return self._result(outs, ins)
        cdef _TracedCall node = <_TracedCall>_tp_new(_TracedCall, _empty_tuple)
        node.plan = self
        node.vals = vals
        node._inputs = node.all_inputs = tuple(ins)
        node._gen = gen + self.rel_gen
        node._has_gen = True
        _link_outputs(node, outs)
        return self._result(outs, ins)

    # ------------------------------------------------------------ fused arrays

    cdef int _fuse(self, _Recorder rec, list kept) except -1:
        """Compile the plan into one forward and one backward program for the
        fused evaluator (fastgrad._eval), if every op and value allows it: table
        ops whose instructions are the eager path's own, on C arrays of one
        shape and float dtype, Python numbers as constants, and at most a
        final sum."""
        cdef Py_ssize_t k
        cdef _PlanOp last = self.nodes[self.nnodes - 1]
        self.sum_last = last.op == <PyObject*>_SUM
        for k in range(self.nnodes - 1 if self.sum_last else self.nnodes):
            if self.nodes[k].op == <PyObject*>_SUM:
                raise _NotFusable()
        # Every array the programs touch: the inputs and the live results.
        slots = list(rec.input_slots) + [self.nodes[k].out for k in range(self.nnodes)]
        if self.sum_last:
            slots.pop()
        like = None
        for s in slots:
            a = rec.objs[s]
            if isinstance(a, _Variable):
                a = (<_Variable>a)._get_data()
            if type(a) is not _ndarray or a.dtype.kind != "f" or a.dtype.itemsize not in (4, 8) \
                    or a.size == 0 or (like is not None and (a.shape != like.shape
                                                             or a.dtype != like.dtype)):
                raise _NotFusable()
            like = a
        self.shape = like.shape
        self.typenum = cnp.PyArray_TYPE(<cnp.ndarray>like)
        self.exact_pow = any([type(t) is not tuple and (<Function>t)._full and not _keep_dtype_on()
                              for t in self.ops])
        forward = _Compiler(self, rec, kept, self.nin)
        regs = forward.forward()
        self.fprog, self.fparams = forward.program([regs[last.a if self.sum_last else last.out]])
        # The backward reads the inputs and the output's grad: an array, or
        # for a final sum the 0-d grad of the sum, broadcast.
        backward = _Compiler(self, rec, kept, self.nin + 1)
        regs = backward.forward()
        adj = {(last.a if self.sum_last else last.out): self.nin}
        for k in range(self.nnodes):
            backward.adjoint(self.order[k], regs, adj)
        grads = [(j, adj[self.in_slot[j]]) for j in range(self.nin)
                 if self.in_target[j] >= 0 and self.in_slot[j] in adj]
        self.bprog, self.bparams = backward.program([r for _, r in grads])
        self.bgrad = tuple([j for j, _ in grads])
        self.fused = True
        return 0

    cdef list _plan_arrays(self, list ins):
        """The inputs' arrays if they have the recorded shape and dtype."""
        arrays = []
        for a in ins:
            if isinstance(a, _Variable):
                a = (<_Variable>a)._get_data()
            if (type(a) is not _ndarray or cnp.PyArray_TYPE(<cnp.ndarray>a) != self.typenum
                    or a.shape != self.shape):
                return None
            arrays.append(a)
        return arrays

    cdef object _replay_fused(self, list ins):
        arrays = self._plan_arrays(ins)
        if arrays is None:
            return None         # a reshaped input: the eager replay
        out = evaluate(self.fprog, tuple(arrays), self.fparams, None, self.exact_pow)
        if out is None:
            return None         # a strided input: the eager replay
        if self.sum_last:
            out = _as_nd(out.sum(axis=None, keepdims=False))
        cdef _Variable y = _wrap_data(out, self.out_cls[0])
        if not _backprop_enabled():
            return y
        cdef _TracedCall node = <_TracedCall>_tp_new(_TracedCall, _empty_tuple)
        node.plan = self
        node.all_inputs = tuple(ins)
        node._inputs = tuple([a for a in ins if isinstance(a, _Variable)])
        gen = 0
        for v in node._inputs:
            if (<_Variable>v)._gen > gen:
                gen = (<_Variable>v)._gen
        node._gen = gen + self.rel_gen
        node._has_gen = True
        node.arrays = tuple(arrays)
        _link_outputs(node, [y])
        return y


class _NotFusable(Exception):
    pass


cdef object _rows_by_class = None


class _Compiler:
    """Builds one evaluator program from the table's formulas for a plan.

    Registers below ``nfixed`` are arrays read in place (the inputs, then
    the output grad); every op's formulas are emitted with its recorded
    constants as immediates, then registers are allocated by liveness.
    """

    def __init__(self, plan, rec, kept, nfixed):
        global _rows_by_class
        if _rows_by_class is None:
            from fastgrad._optable import OPS
            _rows_by_class = {op.class_name: op for op in OPS}
        self.rec, self.plan_kept, self.nfixed = rec, kept, nfixed
        self.builder = _formulas.Builder(nfixed)

    def node(self, k):
        """(table row, its constants, its operand slots) of live op ``k``."""
        template, operands, out, face = self.rec.nodes[self.plan_kept[k]]
        row = _rows_by_class.get(type(template).__name__)
        if row is None:
            raise _NotFusable()
        params = {}
        for p in row.params:
            v = getattr(template, p[0])
            if type(v) not in (int, float):
                raise _NotFusable()
            params[p[0]] = v
        return row, params, operands

    def formula(self, text, names, params):
        self.builder.params = params
        try:
            return self.builder.formula(text, names)
        except _formulas.NotCompilable:
            raise _NotFusable() from None

    def operand(self, s, regs):
        rec = self.rec
        if rec.kinds[s] == _CONST:
            c = rec.objs[s]
            if type(c) not in (int, float, bool):
                raise _NotFusable()
            return self.builder.emit("CONST", value=c)
        return regs[s]

    def forward(self):
        """Emit every op's forward; returns slot -> register."""
        regs = {plan_in: j for j, plan_in in enumerate(self.rec.input_slots)}
        for k in range(len(self.plan_kept)):
            template, operands, out, face = self.rec.nodes[self.plan_kept[k]]
            if template is _SUM:
                continue
            row, params, operands = self.node(k)
            xs = [self.operand(s, regs) for s in operands]
            regs[out] = self.formula(row.forward, dict(zip(row.inputs, xs)), params)
        return regs

    def adjoint(self, k, regs, adj):
        """Emit op ``k``'s derivatives, added into its operands' adjoints in
        the order the eager backward delivers them."""
        template, operands, out, face = self.rec.nodes[self.plan_kept[k]]
        if template is _SUM or out not in adj:
            return
        row, params, operands = self.node(k)
        names = dict(zip(row.inputs, [self.operand(s, regs) for s in operands]))
        names.update(gy=adj[out], y=regs[out])
        for i, s in enumerate(operands):
            if self.rec.kinds[s] == _CONST:
                continue
            g = self.formula(row.grads[i], names, params)
            adj[s] = g if s not in adj else self.builder.emit("ADD", adj[s], g)

    def program(self, outputs):
        """The Program computing ``outputs`` and its parameter values."""
        b = self.builder
        code = _formulas.fold_constants(b.code, set(outputs))
        code, nregs, outs = _formulas.allocate(code, self.nfixed, outputs)
        try:
            prog = Program(self.nfixed, nregs, outs, code, tuple(b.param_exprs))
        except ValueError:      # too many registers or outputs for the evaluator
            raise _NotFusable() from None
        return prog, b.param_values()


cdef inline bint _const_value(object c, double* out):
    """A constant operand as the C scalar path saw it."""
    if _c_number(c, out):
        return True
    if _is_f64_scalar_array(c):
        out[0] = _array_value(c)
        return True
    return False


cdef int _link_outputs(Function f, list outs) except -1:
    """Make ``f`` the creator of ``outs`` (lazy float64 scalars)."""
    cdef Py_ssize_t i, n = len(outs)
    cdef _Variable out
    if n > 1:
        f._outs = <PyObject**>malloc(n * sizeof(PyObject*))
        if f._outs == NULL:
            raise MemoryError()
        f._meta = [((), _float64)] * n
    f._nout = n
    for i in range(n):
        out = <_Variable>outs[i]
        f._out_ptrs()[i] = <PyObject*>out
        out._creator = f
        out._gen = f._gen + 1
        out._slot = i
    return 0
