"""Render the op table (:mod:`fastgrad._optable`) as Cython code.

``setup.py`` runs this before compiling: it writes ``fastgrad/_optable.pxi``
(a build product, included by ``_core.pyx``) with, for every op, a
``Function`` subclass carrying its NumPy forward, its array backward, its
graph backward on Variables and its C scalar forward and backward, and the
lowercase function.  ``python -m fastgrad._codegen --stubs`` prints the stub
lines for ``_core.pyi``.

A formula is parsed with :mod:`ast` and rendered by :class:`Renderer` in one
of three modes: ``"numpy"`` (arrays), ``"graph"`` (Variables; constants such
as comparisons are taken on ``.data``) and ``"c"`` (doubles).  NumPy code
comes in two flavours: with the formula's numbers as Python scalars (weak
under NEP 50: they take the arrays' dtype) and, with ``dezero=True``, as
DeZero evaluates a formula written on Variables, where a number or a
parameter that meets an array in ``+ - * /`` goes through ``np.array`` and
is strongly typed (float64/int64).  Arithmetic among constants stays Python
arithmetic (``pow(x, c - 1)``: DeZero's ``x ** (c - 1)`` runs Pow's forward
on the array, with a weak exponent).
"""
import ast
import os
import sys

if __package__:
    from fastgrad._optable import OPS, REQUIRED
else:  # run by path from setup.py, before fastgrad is built
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _optable import OPS, REQUIRED

_BINOPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
_CMPOPS = {ast.Gt: ">", ast.GtE: ">=", ast.Lt: "<", ast.LtE: "<=", ast.Eq: "==", ast.NotEq: "!="}

# Per mode: what each formula function becomes.  {0}, {1}, {2} are the
# rendered arguments.
_CALLS = {
    "numpy": {
        "exp": "_np.exp({0})", "log": "_np.log({0})", "sin": "_np.sin({0})",
        "cos": "_np.cos({0})", "tan": "_np.tan({0})", "tanh": "_np.tanh({0})",
        "sqrt": "_np.sqrt({0})", "abs": "_np.abs({0})", "sign": "_np.sign({0})",
        "pow": "({0}) ** ({1})", "maximum": "_np.maximum({0}, {1})",
        "minimum": "_np.minimum({0}, {1})", "clip": "_np.clip({0}, {1}, {2})",
        "where": "_np.where({0}, {1}, {2})",
        "like": "_np.asarray({0}).astype(({1}).dtype, copy=False)",
    },
    # The table's own functions, through a namespace so that no Python
    # builtin (abs, pow) is meant instead.
    "graph": {
        "exp": "_fn.exp({0})", "log": "_fn.log({0})", "sin": "_fn.sin({0})",
        "cos": "_fn.cos({0})", "tan": "_fn.tan({0})", "tanh": "_fn.tanh({0})",
        "sqrt": "_fn.sqrt({0})", "abs": "_fn.abs({0})", "pow": "_fn.pow({0}, {1})",
        "maximum": "_fn.maximum({0}, {1})", "minimum": "_fn.minimum({0}, {1})",
        "clip": "_fn.clip({0}, {1}, {2})",
    },
    "c": {
        "exp": "_c_exp({0})", "log": "_c_log({0})", "sin": "_c_sin({0})",
        "cos": "_c_cos({0})", "tan": "_c_tan({0})", "tanh": "_c_tanh({0})",
        "sqrt": "libm_sqrt({0})", "abs": "fabs({0})", "sign": "_c_sign({0})",
        "pow": "_spow({0}, {1})", "maximum": "_c_maximum({0}, {1})",
        "minimum": "_c_minimum({0}, {1})", "clip": "_c_clip({0}, {1}, {2})",
        "where": "(({1}) if ({0}) else ({2}))", "like": "({0})",
    },
}
# Calls whose value is a constant in a derivative (no gradient through them).
_CONSTANT_CALLS = ("sign", "where", "like")


class Renderer:
    """Render formula ASTs for one op in one mode.

    ``names`` maps each formula name (inputs, ``y``, ``gy``, parameters) to
    the code that reads it; ``data_names`` gives the ndarray behind each
    Variable name in graph mode (used inside constants).
    """

    def __init__(self, mode, names, data_names=None, dezero=False, arrays=()):
        self.mode = mode
        self.names = names
        self.data_names = data_names or names
        self.dezero = dezero
        self.arrays = set(arrays)   # the names that hold arrays (not parameters)

    def render(self, text):
        return self._node(ast.parse(text, mode="eval").body, constant=False)

    def _is_array(self, node):
        """Does ``node`` evaluate to an array (else a Python constant)?"""
        if isinstance(node, ast.Name):
            return node.id in self.arrays
        if isinstance(node, ast.Constant):
            return False
        return any(self._is_array(n) for n in ast.iter_child_nodes(node))

    def _operand(self, node, other, constant):
        # A constant meeting an array in DeZero's Variable arithmetic is
        # as_array(c): strongly typed.
        code = self._node(node, constant)
        if (self.dezero and not constant and not self._is_array(node)
                and self._is_array(other)):
            return f"_strong({code})"
        return code

    def _node(self, node, constant):
        mode = self.mode
        if isinstance(node, ast.Name):
            table = self.data_names if constant else self.names
            if node.id not in table:
                raise ValueError(f"unknown name {node.id!r} in a formula")
            return table[node.id]
        if isinstance(node, ast.Constant):
            if not isinstance(node.value, (int, float)):
                raise ValueError(f"unsupported constant {node.value!r}")
            if mode == "c":
                return repr(float(node.value))
            return repr(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return f"(-{self._node(node.operand, constant)})"
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            left = self._operand(node.left, node.right, constant)
            right = self._operand(node.right, node.left, constant)
            return f"({left} {_BINOPS[type(node.op)]} {right})"
        if isinstance(node, ast.Compare) and len(node.ops) == 1:
            # A comparison is a 0/1 mask: taken on the data, never differentiated.
            left = self._node(node.left, True)
            right = self._node(node.comparators[0], True)
            return f"({left} {_CMPOPS[type(node.ops[0])]} {right})"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            fname = node.func.id
            inner = constant or fname in _CONSTANT_CALLS
            if mode == "graph" and inner:
                # A constant subexpression of a graph formula is NumPy code on data.
                sub = Renderer("numpy", self.data_names, dezero=self.dezero)
                return sub._node(node, True)
            template = _CALLS[mode].get(fname)
            if template is None:
                raise ValueError(f"unknown function {fname!r} in a formula")
            args = [self._node(a, inner) for a in node.args]
            if (mode == "numpy" and fname == "pow" and isinstance(node.args[1], ast.Constant)
                    and node.args[1].value == 2 and type(node.args[1].value) is int):
                # NumPy computes a ** 2 as np.square(a), which is a * a.
                return f"({args[0]} * {args[0]})"
            return template.format(*args)
        raise ValueError(f"unsupported syntax in a formula: {ast.dump(node)}")


# ------------------------------------------------------------ fused programs

# Must match the opcode enum of _fused.pxi.
OPCODES = {name: i + 1 for i, name in enumerate(
    "ADD SUB MUL DIV NEG GT GE LT LE WHERE CONST PARAM UFUNC1 UFUNC2 SIGN FABS SQRT".split())}
_FUSED_UFUNCS = ("exp", "log", "sin", "cos", "tan", "tanh", "maximum", "minimum", "power")
_PROGRAM_BINOPS = {ast.Add: "ADD", ast.Sub: "SUB", ast.Mult: "MUL", ast.Div: "DIV"}
_PROGRAM_CMPOPS = {ast.Gt: "GT", ast.GtE: "GE", ast.Lt: "LT", ast.LtE: "LE"}


def compile_program(text, inputs, params):
    """Compile a formula into (nin, nregs, out, code) for _fused.pxi's _Program.

    Registers 0..len(inputs)-1 hold the inputs; every other node gets a
    register of its own.  Each instruction is (op, dst, a, b, c, fn, value).
    """
    code = []
    nregs = [len(inputs)]

    def new():
        nregs[0] += 1
        return nregs[0] - 1

    def emit(op, a=0, b=0, c=0, fn=0, value=0.0):
        d = new()
        code.append((OPCODES[op], d, a, b, c, fn, float(value)))
        return d

    def node(n):
        if isinstance(n, ast.Name):
            if n.id in inputs:
                return inputs.index(n.id)
            if n.id in params:
                return emit("PARAM", fn=params.index(n.id))
            raise ValueError(f"unknown name {n.id!r}")
        if isinstance(n, ast.Constant):
            return emit("CONST", value=n.value)
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub):
            return emit("NEG", node(n.operand))
        if isinstance(n, ast.BinOp) and type(n.op) in _PROGRAM_BINOPS:
            return emit(_PROGRAM_BINOPS[type(n.op)], node(n.left), node(n.right))
        if isinstance(n, ast.Compare) and len(n.ops) == 1 and type(n.ops[0]) in _PROGRAM_CMPOPS:
            return emit(_PROGRAM_CMPOPS[type(n.ops[0])], node(n.left), node(n.comparators[0]))
        if isinstance(n, ast.Call):
            f = n.func.id
            args = [node(a) for a in n.args]
            if f in ("exp", "log", "sin", "cos", "tan", "tanh"):
                return emit("UFUNC1", args[0], fn=_FUSED_UFUNCS.index(f))
            if f in ("maximum", "minimum"):
                return emit("UFUNC2", args[0], args[1], fn=_FUSED_UFUNCS.index(f))
            if f == "clip":
                lo = emit("UFUNC2", args[0], args[1], fn=_FUSED_UFUNCS.index("maximum"))
                return emit("UFUNC2", lo, args[2], fn=_FUSED_UFUNCS.index("minimum"))
            if f == "where":
                return emit("WHERE", args[0], args[1], args[2])
            if f == "like":
                return args[0]      # a program computes in its arrays' one dtype
            if f in ("sign", "abs", "sqrt"):
                return emit({"sign": "SIGN", "abs": "FABS", "sqrt": "SQRT"}[f], args[0])
        raise ValueError(f"cannot fuse {ast.dump(n)}")

    out = node(ast.parse(text, mode="eval").body)
    return len(inputs), nregs[0], out, tuple(code)


def _program_inputs(text, candidates):
    used = {n.id for n in ast.walk(ast.parse(text, mode="eval")) if isinstance(n, ast.Name)}
    return [c for c in candidates if c in used]


def _render_programs(op):
    """Module-level _Program objects for a fused row's forward and derivatives."""
    params = _param_names(op)
    lines = []
    fwd_in = _program_inputs(op.forward, list(op.inputs))
    lines.append(f"cdef _Program _fused_{op.name} = _Program{compile_program(op.forward, fwd_in, params)!r}")
    for k, g in enumerate(op.grads):
        ins = _program_inputs(g, ["gy", "y"] + list(op.inputs))
        lines.append(f"cdef _Program _fused_{op.name}_d{k} = _Program{compile_program(g, ins, params)!r}")
    return "\n".join(lines) + "\n"


def _param_names(op):
    return [p[0] for p in op.params]


def _param_defaults(op):
    return [(p[0], p[1]) for p in op.params]


def _param_label(op, name):
    for p in op.params:
        if p[0] == name:
            return p[2] if len(p) > 2 else name
    raise KeyError(name)


def _signature(op):
    parts = list(op.inputs)
    for p, default in _param_defaults(op):
        parts.append(p if default is REQUIRED else f"{p}={default!r}")
    return ", ".join(parts)


def _names_in(texts):
    used = set()
    for g in texts:
        used |= {n.id for n in ast.walk(ast.parse(g, mode="eval")) if isinstance(n, ast.Name)}
    return used


def _names_used(op):
    """The names the derivatives read (the kernel reads all inputs)."""
    used = set(op.inputs) if op.kernel else set()
    return used | _names_in(op.grads) | _names_in(op.dezero_grads or ())


def _exact_condition(op, k):
    """Code for ``op.kernel_exact[k]`` (``param in (numbers...)``): true only
    for a Python int or float parameter with one of those values."""
    node = ast.parse(op.kernel_exact[k], mode="eval").body
    if not (isinstance(node, ast.Compare) and isinstance(node.left, ast.Name)
            and len(node.ops) == 1 and isinstance(node.ops[0], ast.In)
            and isinstance(node.comparators[0], ast.Tuple)):
        raise ValueError(f"kernel_exact must read 'param in (numbers...)', got {op.kernel_exact[k]!r}")
    p = f"self.{node.left.id}"
    values = ast.unparse(node.comparators[0])
    return f"(type({p}) is int or type({p}) is float) and {p} in {values}"


def _dezero_grads(op):
    return op.dezero_grads or op.grads


def _dezero_sensitive(op):
    """Do DeZero's dtype rules change this row's array backward?"""
    if op.kernel_exact:
        return True
    arrays = list(op.inputs) + ["y", "gy"]
    names = {n: n for n in arrays}
    names.update({p: f"self.{p}" for p in _param_names(op)})
    return any(Renderer("numpy", names).render(g)
               != Renderer("numpy", names, dezero=True, arrays=arrays).render(d)
               for g, d in zip(op.grads, _dezero_grads(op)))


def _render_class(op):
    cls = op.class_name
    ins = op.inputs
    params = _param_names(op)
    n = op.arity
    out = []
    w = out.append
    w(f"cdef class {cls}(_TableOp):")
    w(f'    """y = {op.doc}.')
    w("")
    w(f"    Declared in fastgrad/_optable.py: forward ``{op.forward}``,")
    w("    derivatives " + ", ".join(f"``{g}``" for g in op.grads) + '.')
    w('    """')
    for p in params:
        w(f"    cdef public object {p}")
    if params:
        sig = ", ".join(f"{p}" if d is REQUIRED else f"{p}={d!r}" for p, d in _param_defaults(op))
        w(f"    def __init__(self, {sig}):")
        for p in params:
            w(f"        self.{p} = _check_constant({op.name!r}, {_param_label(op, p)!r}, {p})")
    w("")
    w("    cdef object _declared(self):")
    w(f"        return {cls}")
    w("")
    w("    cdef int _arity(self) noexcept:")
    w(f"        return {n}")
    w("")
    # --- a new instance with the same constants (the tracer replays with it)
    w("    cdef _TableOp _fresh(self):")
    w(f"        cdef {cls} f = <{cls}>_tp_new({cls}, _empty_tuple)")
    w("        f._table = True")
    for p in params:
        w(f"        f.{p} = self.{p}")
    w("        return f")
    w("")
    # --- NumPy forward (what runs on arrays)
    w(f"    def forward(self, {', '.join(ins)}):")
    ptuple = "(" + "".join(f"self.{p}, " for p in params) + ")"
    fnames = {i: i for i in ins}
    fnames.update({p: f"self.{p}" for p in params})
    if op.dezero_forward or (op.kernel_exact and op.kernel_exact[0]):
        # DeZero's own forward, or NumPy's where the kernel is not exact.
        w("        if self._full and not _keep_dtype:")
        if op.dezero_forward:
            w(f"            return {Renderer('numpy', fnames).render(op.dezero_forward)}")
        else:
            w(f"            if not ({_exact_condition(op, 0)}):")
            w(f"                return {Renderer('numpy', fnames).render(op.forward)}")
    if op.kernel:
        args = ", ".join(list(ins) + [f"self.{p}" for p in params])
        w(f"        return backend.{op.name}({args})")
    else:
        if op.fused:
            fin = _program_inputs(op.forward, list(ins))
            w(f"        r = _fused_eval(_fused_{op.name}, ({''.join(i + ', ' for i in fin)}), {ptuple}, None)")
            w("        if r is not None:")
            w("            return r")
        names = {i: i for i in ins}
        names.update({p: f"self.{p}" for p in params})
        w(f"        return {Renderer('numpy', names).render(op.forward)}")
    w("")
    # --- array backward: tuple of grads; may write the first into `buf`
    w("    cdef tuple _array_backward(self, object gy, object buf):")
    used = _names_used(op)
    for k, i in enumerate(ins):
        if i in used:
            w(f"        {i} = (<_Variable>self._inputs[{k}])._get_data()")
    if "y" in used:
        w("        y = self._output_data()")
    if op.kernel and op.name + "_backward" in _BACKEND_BACKWARD:
        # The kernel's own parameter names say which operands it reads.
        names = {i: i for i in ins}
        names.update({p: f"self.{p}" for p in params})
        names.update(gy="gy", out="out=buf")
        args = ", ".join(names[a] for a in _BACKEND_BACKWARD[op.name + "_backward"])
        w(f"        r = backend.{op.name}_backward({args})")
        w("        return r if type(r) is tuple else (r,)")
    else:
        names = {i: i for i in ins}
        names.update({p: f"self.{p}" for p in params})
        names.update(y="y", gy="gy")
        r = Renderer("numpy", names)
        if op.fused:
            # The first gradient may go into gy's buffer; the others are fresh.
            outs = []
            for k, g in enumerate(op.grads):
                gin = _program_inputs(g, ["gy", "y"] + list(ins))
                w(f"        g{k} = _fused_eval(_fused_{op.name}_d{k}, "
                  f"({''.join(i + ', ' for i in gin)}), {ptuple}, {'buf' if k == 0 else 'None'})")
                outs.append(f"g{k}")
            w(f"        if {' and '.join(f'{o} is not None' for o in outs)}:")
            w(f"            return ({', '.join(outs)},)")
        w(f"        return ({', '.join(r.render(g) for g in op.grads)},)")
    w("")
    # --- DeZero's dtype rules: its formula with strong constants
    if _dezero_sensitive(op):
        dz_grads = _dezero_grads(op)
        dz_used = _names_in(dz_grads)
        w("    cdef bint _dz_sensitive(self) noexcept:")
        w("        return True")
        w("")
        w("    cdef tuple _array_backward_dz(self, object gy, object buf):")
        for k, i in enumerate(ins):
            if i in dz_used:
                w(f"        {i} = (<_Variable>self._inputs[{k}])._get_data()")
        if "y" in dz_used:
            w("        y = self._output_data()")
        # Strong and weak constants agree on float64 arrays: the fast paths.
        checks = [f"_is_f64_array({n})" for n in ["gy"] + list(ins) + ["y"]
                  if n in dz_used or n == "gy"]
        if op.kernel_exact:
            checks.append(f"({_exact_condition(op, 1)})")
        w(f"        if {' and '.join(checks)}:")
        w("            return self._array_backward(gy, buf)")
        names = {i: i for i in ins}
        names.update({p: f"self.{p}" for p in params})
        names.update(y="y", gy="gy")
        r = Renderer("numpy", names, dezero=True, arrays=list(ins) + ["y", "gy"])
        w(f"        return ({', '.join(r.render(g) for g in dz_grads)},)")
        w("")
    # --- the stage-2 protocol: backward on arrays, as a user would write it
    w("    def backward(self, gy):")
    w("        r = self._array_backward(gy, None)")
    w("        return r[0]" if n == 1 else "        return r")
    w("")
    # --- graph backward on Variables (create_graph=True)
    w("    def _graph_backward(self, gy):")
    for k, i in enumerate(ins):
        if i in used:
            w(f"        {i} = self._inputs[{k}]")
    if "y" in used:
        w("        y = self._output_var()")
    names = {i: i for i in ins}
    names.update({p: f"self.{p}" for p in params})
    names.update(y="y", gy="gy")
    data = {i: f"{i}.data" for i in ins}
    data.update({p: f"self.{p}" for p in params})
    data.update(y="y.data", gy="gy.data")
    r = Renderer("graph", names, data)
    if op.dezero_grads:
        w("        if self._full and not _keep_dtype:")
        w(f"            return ({', '.join(r.render(g) for g in op.dezero_grads)},)")
    w(f"        return ({', '.join(r.render(g) for g in op.grads)},)")
    w("")
    # --- C scalar path
    if op.scalar:
        if params:
            w("    cdef bint _scalar_params(self, double* p):")
            w("        return " + " and ".join(
                f"_c_number(self.{q}, &p[{k}])" for k, q in enumerate(params)))
        else:
            w("    cdef bint _scalar_params(self, double* p):")
            w("        return True")
        w("")
        # The formulas live in the dispatch functions (_render_scalar_dispatch);
        # with a constant code the C compiler keeps only this op's branch.
        code = _scalar_code(op)
        w("    cdef int _scalar_code(self) noexcept:")
        w(f"        return {code}")
        w("")
        w("    cdef double _scalar_forward(self, const double* x, const double* p) noexcept:")
        w(f"        return _table_scalar_forward({code}, x, p)")
        w("")
        w("    cdef void _scalar_backward(self, double gy, const double* x, double y,")
        w("                               const double* p, double* g) noexcept:")
        w(f"        _table_scalar_backward({code}, gy, x, y, p, g)")
    w("")
    return "\n".join(out)


def _scalar_code(op):
    """The op's number in the scalar dispatch (table order from 1; 0: none)."""
    return [o.name for o in OPS if o.scalar].index(op.name) + 1


def _render_scalar_dispatch():
    """Every scalar op's C forward and backward, selected by its code: the
    classes call them with their own code, a traced plan with the code it
    recorded (no virtual call per op)."""
    fwd = ["cdef inline double _table_scalar_forward(int code, const double* x,",
           "                                         const double* p) noexcept:"]
    bwd = ["cdef inline void _table_scalar_backward(int code, double gy, const double* x,",
           "                                        double y, const double* p,",
           "                                        double* g) noexcept:"]
    for op in OPS:
        if not op.scalar:
            continue
        cnames = {i: f"x[{k}]" for k, i in enumerate(op.inputs)}
        cnames.update({q: f"p[{k}]" for k, q in enumerate(_param_names(op))})
        code = _scalar_code(op)
        fwd.append(f"    if code == {code}:    # {op.name}")
        fwd.append(f"        return {Renderer('c', cnames).render(op.forward)}")
        cnames.update(y="y", gy="gy")
        rc = Renderer("c", cnames)
        bwd.append(f"    if code == {code}:    # {op.name}")
        for k, gtext in enumerate(op.grads):
            bwd.append(f"        g[{k}] = {rc.render(gtext)}")
        bwd.append("        return")
    fwd.append("    return 0.0")
    return "\n".join(fwd) + "\n\n\n" + "\n".join(bwd) + "\n"


def _render_function(op, name=None, swap=False, face=None):
    """The lowercase function; ``face`` sets the Variable class of results
    when no input is a Variable (the full face's copies)."""
    name = name or op.name
    cls = op.class_name
    ins = list(op.inputs)
    call_ins = ins[::-1] if swap else ins
    params = _param_names(op)
    lines = [f"def {name}({_signature(op)}):"]
    if face:
        lines.append(f'    """Full-face {name}: see :func:`{op.reverse if swap else op.name}`."""')
    elif swap:
        lines.append(f'    """Return ``{op.doc}`` with the operands swapped: '
                     f'{name}(x0, x1) = {op.name}(x1, x0)."""')
    else:
        lines.append(f'    """Return y = {op.doc}, as a Variable (see :class:`{cls}`)."""')
    lines.append(f"    cdef {cls} f = <{cls}>_tp_new({cls}, _empty_tuple)")
    lines.append("    f._table = True")
    for p in params:
        lines.append(f"    f.{p} = _check_constant({op.name!r}, {_param_label(op, p)!r}, {p})")
    face_arg = f", {face}" if face else ""
    lines.append(f"    return _call(f, ({', '.join(call_ins)},){face_arg})")
    lines.append("")
    return "\n".join(lines)


def _backend_backward_names():
    here = os.path.dirname(os.path.abspath(__file__))
    names = {}
    with open(os.path.join(here, "_reference.py")) as fh:
        tree = ast.parse(fh.read())
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name.endswith("_backward"):
            names[node.name] = [a.arg for a in node.args.args]
    return names


_BACKEND_BACKWARD = _backend_backward_names()


def render_pxi():
    """Return the text of ``_optable.pxi``."""
    parts = ["# Generated from fastgrad/_optable.py by fastgrad/_codegen.py: do not edit.", "",
             _render_scalar_dispatch()]
    for op in OPS:
        if op.fused:
            parts.append(_render_programs(op))
        parts.append(_render_class(op))
        parts.append(_render_function(op))
        if op.reverse:
            parts.append(_render_function(op, op.reverse, swap=True))
    full = []
    for op in OPS:
        for fname, swap in [(op.name, False)] + ([(op.reverse, True)] if op.reverse else []):
            parts.append(_render_function(op, "_full_" + fname, swap, face="_FullVarClass"))
            full.append(fname)
    names = [op.class_name for op in OPS] + full
    parts.append("#: The table's class and function names.")
    parts.append("TABLE_NAMES = (" + ", ".join(repr(n) for n in names) + ",)")
    parts.append("#: The functions as the full face needs them: a result is a full-face")
    parts.append("#: Variable even when no input is a Variable.")
    parts.append("FULL_FACE_FUNCTIONS = {" + ", ".join(f"{n!r}: _full_{n}" for n in full) + "}")
    parts.append("")
    parts.append("class _fn:")
    parts.append('    """The table functions, as graph formulas call them."""')
    for n in full:
        parts.append(f"    {n} = staticmethod({n})")
    parts.append("")
    return "\n".join(parts)


def render_stubs():
    """Return the ``_core.pyi`` lines for the table's classes and functions."""
    lines = []
    for op in OPS:
        lines.append(f"class {op.class_name}(Function):")
        for p in _param_names(op):
            lines.append(f"    {p}: Any")
        if op.params:
            sig = ", ".join(f"{p}: Any" if d is REQUIRED else f"{p}: Any = ..." for p, d in _param_defaults(op))
            lines.append(f"    def __init__(self, {sig}) -> None: ...")
        else:
            lines.append("    ...")
        sig = ", ".join([f"{i}: _Operand" for i in op.inputs] + [
            f"{p}: Any" if d is REQUIRED else f"{p}: Any = ..." for p, d in _param_defaults(op)])
        lines.append(f"def {op.name}({sig}) -> Variable: ...")
        if op.reverse:
            lines.append(f"def {op.reverse}({sig}) -> Variable: ...")
    return "\n".join(lines) + "\n"


def write_pxi(path=None):
    """Write ``_optable.pxi`` beside this file unless it is already current."""
    path = path or os.path.join(os.path.dirname(os.path.abspath(__file__)), "_optable.pxi")
    text = render_pxi()
    try:
        with open(path) as fh:
            if fh.read() == text:
                return path
    except OSError:
        pass
    with open(path, "w") as fh:
        fh.write(text)
    return path


if __name__ == "__main__":
    if "--stubs" in sys.argv:
        sys.stdout.write(render_stubs())
    else:
        print(write_pxi())
