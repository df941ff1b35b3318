"""Formulas as register programs for the elementwise evaluator (``_eval.pyx``).

The op table (:mod:`fastgrad._optable`) writes every forward and derivative
as a short Python expression.  :func:`compile_program` turns one or several
such formulas into a program of instructions over registers: registers
``0 .. nin - 1`` are the input arrays, every other value gets a register of
its own, and a final pass maps them onto as few blocks as liveness allows.
The build (``_codegen``) compiles the table's rows with it, and the tracer
compiles a recorded function's ops with the same :class:`Builder` at run
time, so this module imports nothing of fastgrad.

Every instruction is the IEEE operation NumPy performs for the same
expression, in NumPy's order (most of them call NumPy's own inner loop), so
a program's results are NumPy's bits.  ``OPCODES`` is the one declaration of
the instruction set: the build renders the evaluator's C enum from it.
"""
import ast

#: The evaluator's instructions, numbered from 1 in this order.
OPCODES = (
    "ADD", "SUB", "MUL", "DIV",            # a op b, NumPy's loops
    "ADDC", "SUBC", "RSUBC", "MULC", "DIVC", "RDIVC",   # with an immediate (fn: 0 value, k+1 params[k])
    "NEG",
    "GT", "GE", "LT", "LE",                # 1.0 / 0.0 masks
    "WHERE",                               # a != 0 ? b : c
    "CONST",                               # fill with value
    "PARAM",                               # fill with params[fn]
    "UFUNC1", "UFUNC2",                    # NumPy's inner loop UFUNCS[fn]
    "SIGN",                                # NumPy's sign (+0.0 for both zeros)
    "POW",                                 # a ** params[fn], by a plan chosen at run time
    "COPY",
    "CAST",                                # into the instruction's dtype (typed programs)
)
OP = {name: i + 1 for i, name in enumerate(OPCODES)}

class Fn:
    """A function formulas may call.

    ``kind``: ``"ufunc1"``/``"ufunc2"`` -- NumPy's ufunc ``ufunc``, whose own
    inner loop the evaluator and the C scalar path call (so results are
    NumPy's bits; the scalar path uses the C library's ``libm`` function
    instead where a probe at import shows it agrees with NumPy); or one of
    the structural kinds the renderers know (``pow``, ``clip``, ``where``,
    ``sign``, ``like``).  ``constant``: no gradient flows through it.  A
    ufunc function a derivative uses on Variables must also be an op of the
    table with the same name (it is differentiated again).
    """

    def __init__(self, kind, doc, ufunc=None, libm=None, constant=False):
        self.kind, self.doc, self.ufunc, self.libm = kind, doc, ufunc, libm
        self.constant = constant


#: Every function a formula may call, declared once.
FUNCTIONS = {
    "exp": Fn("ufunc1", "e ** a", "exp", "exp"),
    "log": Fn("ufunc1", "natural logarithm", "log", "log"),
    "sin": Fn("ufunc1", "sine", "sin", "sin"),
    "cos": Fn("ufunc1", "cosine", "cos", "cos"),
    "tan": Fn("ufunc1", "tangent", "tan", "tan"),
    "tanh": Fn("ufunc1", "hyperbolic tangent", "tanh", "tanh"),
    "sqrt": Fn("ufunc1", "square root", "sqrt", "sqrt"),
    "abs": Fn("ufunc1", "absolute value", "absolute", "fabs"),
    "maximum": Fn("ufunc2", "elementwise max, NaN-propagating", "maximum"),
    "minimum": Fn("ufunc2", "elementwise min, NaN-propagating", "minimum"),
    "pow": Fn("pow", "pow(a, b) = a ** b"),
    "clip": Fn("clip", "clip(a, lo, hi)"),
    "sign": Fn("sign", "-1, 0 or 1 (a constant in derivatives)", constant=True),
    "where": Fn("where", "where(cond, a, b) (a constant in derivatives)", constant=True),
    "like": Fn("like", "like(a, b): a in b's dtype (a constant; DeZero's masks are in "
                       "gy's dtype)", constant=True),
}

#: NumPy ufuncs whose float32/float64 inner loops the evaluator calls, by
#: number (``fn`` of UFUNC1/UFUNC2, and the arithmetic instructions).
UFUNCS = (("add", "subtract", "multiply", "divide", "negative")
          + tuple(f.ufunc for f in FUNCTIONS.values() if f.ufunc) + ("power",))

#: How each ufunc function is evaluated: its instruction and ufunc.
LOWERING = {name: (f.kind.upper(), f.ufunc) for name, f in FUNCTIONS.items() if f.ufunc}
LOWERING["sign"] = ("SIGN", None)

# Registers each instruction reads (a, b, c in order).
READS = {OP[n]: 2 for n in ("ADD", "SUB", "MUL", "DIV", "GT", "GE", "LT", "LE", "UFUNC2")}
READS.update({OP[n]: 1 for n in ("ADDC", "SUBC", "RSUBC", "MULC", "DIVC", "RDIVC", "NEG",
                                 "UFUNC1", "SIGN", "POW", "COPY", "CAST")})
READS.update({OP["WHERE"]: 3, OP["CONST"]: 0, OP["PARAM"]: 0})

_BINOPS = {ast.Add: "ADD", ast.Sub: "SUB", ast.Mult: "MUL", ast.Div: "DIV"}
_CMPOPS = {ast.Gt: "GT", ast.GtE: "GE", ast.Lt: "LT", ast.LtE: "LE"}
# (op, the constant is the right operand) -> the op with an immediate constant
_WITH_CONSTANT = {("ADD", True): "ADDC", ("ADD", False): "ADDC",
                  ("MUL", True): "MULC", ("MUL", False): "MULC",
                  ("SUB", True): "SUBC", ("SUB", False): "RSUBC",
                  ("DIV", True): "DIVC", ("DIV", False): "RDIVC"}


class NotCompilable(ValueError):
    """A formula uses something the evaluator has no instruction for."""


def names_in(text):
    return {n.id for n in ast.walk(ast.parse(text, mode="eval")) if isinstance(n, ast.Name)}


class Builder:
    """Emits instructions into virtual registers.

    Registers below ``nfixed`` are arrays read in place.  ``params`` maps a
    parameter name to its value when it is known (the tracer: it becomes an
    immediate constant) or to None (a table row: read at run time).  A
    subexpression of parameters and numbers only is computed once per call,
    in Python (``param_exprs``, evaluated by the caller in order), exactly as
    the NumPy expression computes it.
    """

    def __init__(self, nfixed, params=None):
        self.code = []
        self.next = nfixed
        self.nfixed = nfixed
        self.params = dict(params or {})
        self.param_exprs = []       # expressions (or known values); PARAM k reads the k-th

    def emit(self, op, a=0, b=0, c=0, fn=0, value=0.0):
        d = self.next
        self.next += 1
        self.code.append((OP[op], d, a, b, c, fn, float(value)))
        return d

    def formula(self, text, env):
        """Emit ``text``; ``env`` maps array names to registers.  Returns the
        result's register."""
        return self._node(ast.parse(text, mode="eval").body, env)

    # -- constants
    def _constant_value(self, node):
        """The value of a parameters-and-numbers subtree, if all are known."""
        code = ast.unparse(node)
        if any(self.params.get(n) is None for n in names_in(code)):
            return None, code
        return eval(code, {"__builtins__": {}}, dict(self.params)), code

    def _is_constant(self, node, env):
        return not (names_in(ast.unparse(node)) & set(env))

    def _constant(self, node):
        value, code = self._constant_value(node)
        if value is not None:
            if type(value) not in (int, float, bool):
                raise NotCompilable(f"constant {code} = {value!r} is not a Python number")
            return self.emit("CONST", value=value)
        return self.emit("PARAM", fn=self._param_index(code))

    def _param_index(self, item):
        # A Python expression over the parameters (str), or a known value.
        for k, old in enumerate(self.param_exprs):
            if type(old) is type(item) and old == item:
                return k
        self.param_exprs.append(item)
        return len(self.param_exprs) - 1

    # -- expressions
    def _node(self, n, env):
        if self._is_constant(n, env) and not isinstance(n, ast.Call):
            return self._constant(n)
        if isinstance(n, ast.Name):
            return env[n.id]
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub):
            return self.emit("NEG", self._node(n.operand, env))
        if isinstance(n, ast.BinOp) and type(n.op) in _BINOPS:
            return self.emit(_BINOPS[type(n.op)], self._node(n.left, env),
                             self._node(n.right, env))
        if isinstance(n, ast.Compare) and len(n.ops) == 1 and type(n.ops[0]) in _CMPOPS:
            return self.emit(_CMPOPS[type(n.ops[0])], self._node(n.left, env),
                             self._node(n.comparators[0], env))
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name):
            return self._call(n.func.id, n.args, env)
        raise NotCompilable(f"cannot compile {ast.unparse(n)}")

    def _call(self, f, args, env):
        if f == "like":
            return self._node(args[0], env)     # a program computes in one dtype
        if f == "pow":
            base = self._node(args[0], env)
            if self._is_constant(args[1], env):
                # The exponent is a parameter of the POW instruction: the
                # evaluator picks its plan (square, square root ...) by value.
                value, code = self._constant_value(args[1])
                if value is not None and type(value) not in (int, float):
                    raise NotCompilable(f"exponent {code} is not a Python number")
                return self.emit("POW", base, fn=self._param_index(
                    code if value is None else value))
            return self.emit("UFUNC2", base, self._node(args[1], env), fn=UFUNCS.index("power"))
        if f == "clip":
            x, lo, hi = (self._node(a, env) for a in args)
            lo = self.emit("UFUNC2", x, lo, fn=UFUNCS.index("maximum"))
            return self.emit("UFUNC2", lo, hi, fn=UFUNCS.index("minimum"))
        if f == "where":
            return self.emit("WHERE", *(self._node(a, env) for a in args))
        lowering = LOWERING.get(f)
        if lowering is None:
            raise NotCompilable(f"no instruction for {f}()")
        op, ufunc = lowering
        regs = [self._node(a, env) for a in args]
        return self.emit(op, *regs, fn=UFUNCS.index(ufunc) if ufunc else 0)

    def param_values(self):
        """The PARAM values when every parameter is known (the tracer)."""
        return tuple(eval(item, {"__builtins__": {}}, dict(self.params))
                     if isinstance(item, str) else item for item in self.param_exprs)


def fold_constants(code, keep):
    """``code`` with each CONST or PARAM that only feeds ADD/SUB/MUL/DIV
    folded into them as an immediate operand (the same IEEE operations: +
    and * are commutative, and SUB/DIV keep their operand order).  An
    immediate from a parameter has ``fn = k + 1`` (PARAM k), else ``fn = 0``
    and the value in ``value``."""
    code = list(code)
    k = 0
    arith = {OP[n] for n in ("ADD", "SUB", "MUL", "DIV")}
    while k < len(code):
        op, dst, _, _, _, pfn, value = code[k][:7]
        users = [j for j in range(k + 1, len(code))
                 if dst in code[j][2:2 + READS[code[j][0]]]]
        foldable = (op in (OP["CONST"], OP["PARAM"]) and dst not in keep and value == value
                    and users and sum(ins[1] == dst for ins in code) == 1)
        immediate_fn = pfn + 1 if op == OP["PARAM"] else 0
        for j in users:
            uop, _, a, b = code[j][:4]
            if uop not in arith or (a == dst) == (b == dst):
                foldable = False
        if not foldable:
            k += 1
            continue
        for j in users:
            uop, d, a, b = code[j][:4]
            right = b == dst
            name = _WITH_CONSTANT[OPCODES[uop - 1], right]
            # The immediate takes the consuming instruction's dtype (a typed
            # program's 8th field stays).
            code[j] = (OP[name], d, a if right else b, 0, 0, immediate_fn, value) + code[j][7:]
        del code[k]
    return code


def allocate(code, nfixed, outputs, types=None):
    """Map virtual registers onto as few as liveness allows.

    Registers below ``nfixed`` stay.  Each output gets a register of its own
    that nothing else uses (the evaluator writes it straight into the output
    array); an output that is an input or another output's register is
    copied.  ``types`` (a typed program) maps a register to its dtype code.
    Returns ``(code, nregs, output registers)``.
    """
    code = list(code)
    outs = []
    for r in outputs:
        if r < nfixed or r in outs:
            # COPY into a register of its own.
            d = max([nfixed] + [ins[1] + 1 for ins in code] + [o + 1 for o in outputs])
            tail = () if types is None else (types[r],)
            code.append((OP["COPY"], d, r, 0, 0, 0, 0.0) + tail)
            if types is not None:
                types[d] = types[r]
            r = d
        outs.append(r)
    # Drop what no output needs, last instruction first.
    needed, live = set(outs), []
    for ins in reversed(code):
        if ins[1] in needed:
            live.append(ins)
            needed.update(ins[2:2 + READS[ins[0]]])
    code = live[::-1]
    last = {}
    for i, ins in enumerate(code):
        for r in ins[2:2 + READS[ins[0]]]:
            last[r] = i
    phys = {r: r for r in range(nfixed)}
    top = nfixed
    for r in outs:                   # outputs first, pinned
        phys[r] = top
        top += 1
    free, out = [], []
    for i, ins in enumerate(code):
        op, d, a, b, c, fn, value = ins[:7]
        reads = (a, b, c)[:READS[op]]
        mapped = [phys[r] for r in reads]
        dying = [phys[r] for r in set(reads)
                 if r >= nfixed and r not in outs and last.get(r) == i]
        # An operand's block may take the result in place (elementwise, read
        # before written) -- unless their elements differ in size (a CAST).
        in_place = types is None or all(types.get(r) == types.get(d) for r in reads)
        if in_place:
            free += dying
        if d not in phys:
            if free:
                phys[d] = free.pop()
            else:
                phys[d] = top
                top += 1
        if not in_place:
            free += dying
        mapped += [0] * (3 - len(mapped))
        out.append((op, phys[d], mapped[0], mapped[1], mapped[2], fn, value) + ins[7:])
    return tuple(out), top, tuple(phys[r] for r in outs)


def compile_program(formulas, inputs, params=()):
    """Compile ``formulas`` (one program with one output per formula).

    ``inputs``: the array names, registers ``0 .. len(inputs) - 1``.
    ``params``: the op's parameter names (read per call).  Returns
    ``(nin, nregs, outputs, code, param_exprs)``: ``param_exprs`` are Python
    expressions over the parameters whose values the caller passes, in
    order, as the program's PARAM values.
    """
    b = Builder(len(inputs), {p: None for p in params})
    env = {name: i for i, name in enumerate(inputs)}
    results = [b.formula(text, env) for text in formulas]
    code = fold_constants(b.code, set(results))
    code, nregs, outs = allocate(code, len(inputs), results)
    return len(inputs), nregs, outs, code, tuple(b.param_exprs)


# ---------------------------------------------------------------- typed programs

F64, F32 = 0, 1


class _Const:
    """A constant subexpression, emitted where its dtype is known."""

    def __init__(self, node, strong):
        self.node, self.strong = node, strong


class TypedBuilder(Builder):
    """A Builder whose instructions each carry a dtype, following NumPy's
    promotion as the NumPy rendering of the same formula computes it.

    Inputs have fixed dtypes (``F64``/``F32``).  A number is weak (takes the
    other operand's dtype, NEP 50) unless ``strong`` and it meets an array
    in ``+ - * /``: then it is DeZero's ``np.array(number)``, strongly typed,
    and the operation is float64.  A comparison is a mask, which takes the
    dtype of what it is combined with (as bool does).  Mixed operands are
    converted to float64 first (CAST), as NumPy does.
    """

    def __init__(self, nfixed, in_types, params=None, strong=False):
        super().__init__(nfixed, params)
        self.types = dict(enumerate(in_types))
        self.masks = set()
        self.strong = strong
        self._casts = {}

    def emit_typed(self, t, op, a=0, b=0, c=0, fn=0, value=0.0):
        d = self.emit(op, a, b, c, fn, value)
        self.code[-1] = self.code[-1] + (t,)
        self.types[d] = t
        return d

    def formula(self, text, env):
        reg, t = self._typed(ast.parse(text, mode="eval").body, env)
        if isinstance(reg, _Const):
            raise NotCompilable(f"{text} does not depend on an array")
        return reg

    # -- operands in a dtype
    def _in(self, operand, t):
        reg, rt = operand
        if isinstance(reg, _Const):
            value, code = self._constant_value(reg.node)
            if value is not None:
                return self.emit_typed(t, "CONST", value=value)
            return self.emit_typed(t, "PARAM", fn=self._param_index(code))
        if self.types[reg] == t:
            return reg
        key = (reg, t)
        if key not in self._casts:
            self._casts[key] = self.emit_typed(t, "CAST", reg)
        return self._casts[key]

    @staticmethod
    def _kind(operand, masks):
        """The dtype an operand imposes in promotion: None when it adapts
        (a weak number, a mask)."""
        reg, t = operand
        if isinstance(reg, _Const):
            return F64 if reg.strong else None
        return None if reg in masks else t

    def _promote(self, *operands):
        kinds = [self._kind(o, self.masks) for o in operands]
        fixed = [k for k in kinds if k is not None]
        if fixed:
            return min(fixed)           # float64 wins
        regs = [o for o in operands if not isinstance(o[0], _Const)]
        if regs:                        # masks only: their own dtype
            return min(self.types[r] for r, _ in regs)
        return F64                      # numbers only (np.where(m, 1, 0.2) is float64)

    def _typed(self, n, env):
        if self._is_constant(n, env) and not isinstance(n, ast.Call):
            return _Const(n, False), None
        if isinstance(n, ast.Name):
            return env[n.id], self.types[env[n.id]]
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub):
            x = self._typed(n.operand, env)
            t = self._promote(x)
            return self.emit_typed(t, "NEG", self._in(x, t)), t
        if isinstance(n, ast.BinOp) and type(n.op) in _BINOPS:
            left, right = self._typed(n.left, env), self._typed(n.right, env)
            if self.strong:
                # DeZero's Variable arithmetic: a number meeting an array is as_array(n).
                left, right = [(_Const(o[0].node, True), None) if isinstance(o[0], _Const)
                               else o for o in (left, right)]
                if any(isinstance(o[0], _Const) for o in (left, right)) and any(
                        o[0] in self.masks for o in (left, right)):
                    raise NotCompilable("a strong number times a mask is an integer")
            t = self._promote(left, right)
            return self.emit_typed(t, _BINOPS[type(n.op)], self._in(left, t),
                                   self._in(right, t)), t
        if isinstance(n, ast.Compare) and len(n.ops) == 1 and type(n.ops[0]) in _CMPOPS:
            left, right = self._typed(n.left, env), self._typed(n.comparators[0], env)
            t = self._promote(left, right)
            d = self.emit_typed(t, _CMPOPS[type(n.ops[0])], self._in(left, t),
                                self._in(right, t))
            self.masks.add(d)
            return d, t
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name):
            return self._typed_call(n.func.id, n.args, env)
        raise NotCompilable(f"cannot compile {ast.unparse(n)}")

    def _typed_call(self, f, args, env):
        if f == "like":
            x, target = self._typed(args[0], env), self._typed(args[1], env)
            t = self._promote(target)
            return self._in(x, t), t
        if f == "pow":
            base = self._typed(args[0], env)
            if not self._is_constant(args[1], env):
                raise NotCompilable("an array exponent")
            value, code = self._constant_value(args[1])
            t = self._promote(base)
            return self.emit_typed(t, "POW", self._in(base, t), fn=self._param_index(
                code if value is None else value)), t
        if f == "where":
            cond, a, b = (self._typed(a, env) for a in args)
            t = self._promote(a, b)
            d = self.emit_typed(t, "WHERE", self._in(cond, t), self._in(a, t), self._in(b, t))
            return d, t
        if f == "clip":
            x, lo, hi = (self._typed(a, env) for a in args)
            t = self._promote(x, lo, hi)
            m = self.emit_typed(t, "UFUNC2", self._in(x, t), self._in(lo, t),
                                fn=UFUNCS.index("maximum"))
            return self.emit_typed(t, "UFUNC2", m, self._in(hi, t),
                                   fn=UFUNCS.index("minimum")), t
        lowering = LOWERING.get(f)
        if lowering is None:
            raise NotCompilable(f"no instruction for {f}()")
        op, ufunc = lowering
        xs = [self._typed(a, env) for a in args]
        t = self._promote(*xs)
        return self.emit_typed(t, op, *[self._in(x, t) for x in xs],
                               fn=UFUNCS.index(ufunc) if ufunc else 0), t


def compile_typed(formulas, inputs, in_types, params=(), strong=False):
    """:func:`compile_program` for fixed input dtypes (``F64``/``F32`` per
    input): every instruction carries its dtype, mixed operands are
    converted as NumPy converts them, and with ``strong`` a number meeting
    an array is strongly typed (DeZero's rules).  Returns ``(nin, nregs,
    outputs, code, param_exprs, (input dtypes, output dtypes))``.
    """
    b = TypedBuilder(len(inputs), in_types, {p: None for p in params}, strong)
    env = {name: i for i, name in enumerate(inputs)}
    results = [b.formula(text, env) for text in formulas]
    out_types = tuple(b.types[r] for r in results)
    code = fold_constants(b.code, set(results))
    code, nregs, outs = allocate(code, len(inputs), results, dict(b.types))
    return (len(inputs), nregs, outs, code, tuple(b.param_exprs),
            (tuple(in_types), out_types))


def inputs_of(texts, candidates):
    """The names of ``candidates`` that ``texts`` read, in candidate order."""
    used = set()
    for t in texts:
        used |= names_in(t)
    return [c for c in candidates if c in used]
