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
    from fastgrad import _formulas
    from fastgrad._optable import OPS, REQUIRED
else:  # run by path from setup.py, before fastgrad is built
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import _formulas
    from _optable import OPS, REQUIRED

_BINOPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
_CMPOPS = {ast.Gt: ">", ast.GtE: ">=", ast.Lt: "<", ast.LtE: "<=", ast.Eq: "==", ast.NotEq: "!="}

# Per mode: what each formula function becomes ({0}, {1}, {2} are the
# rendered arguments): the structural ones here, every ufunc function from
# its declaration in _formulas.FUNCTIONS.
_CALLS = {
    "numpy": {
        "sign": "_np.sign({0})", "pow": "({0}) ** ({1})",
        "clip": "_np.clip({0}, {1}, {2})", "where": "_np.where({0}, {1}, {2})",
        "like": "_np.asarray({0}).astype(({1}).dtype, copy=False)",
    },
    # The table's own functions, through a namespace so that no Python
    # builtin (abs, pow) is meant instead.
    "graph": {"pow": "_fn.pow({0}, {1})", "clip": "_fn.clip({0}, {1}, {2})"},
    "c": {
        "sign": "_c_sign({0})", "pow": "_spow({0}, {1})", "clip": "_c_clip({0}, {1}, {2})",
        "where": "(({1}) if ({0}) else ({2}))", "like": "({0})",
    },
}
for _name, _f in _formulas.FUNCTIONS.items():
    if _f.kind == "ufunc1":
        _CALLS["numpy"][_name] = f"_np.{_f.ufunc}({{0}})"
        _CALLS["graph"][_name] = f"_fn.{_name}({{0}})"
        _CALLS["c"][_name] = f"_c_unary(UF_{_f.ufunc.upper()}, {{0}})"
    elif _f.kind == "ufunc2":
        _CALLS["numpy"][_name] = f"_np.{_f.ufunc}({{0}}, {{1}})"
        _CALLS["graph"][_name] = f"_fn.{_name}({{0}}, {{1}})"
        _CALLS["c"][_name] = f"_c_binary(UF_{_f.ufunc.upper()}, {{0}}, {{1}})"
# Calls whose value is a constant in a derivative (no gradient through them).
_CONSTANT_CALLS = tuple(n for n, f in _formulas.FUNCTIONS.items() if f.constant)


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


# ------------------------------------------------------------ programs

def _program(op, formulas, candidates, float32_dezero=False):
    """``formulas`` (one output each) compiled for the evaluator: the Program
    literal, the arrays it reads (in order) and the code of its per-call
    parameter values.  ``float32_dezero``: typed for float32 arrays under
    DeZero's dtype rules (strong numbers promote to float64)."""
    params = _param_names(op)
    ins = _formulas.inputs_of(formulas, candidates)
    if float32_dezero:
        nin, nregs, outs, code, exprs, types = _formulas.compile_typed(
            formulas, ins, [_formulas.F32] * len(ins), params, strong=True)
        literal = f"Program({nin}, {nregs}, {outs!r}, {code!r}, {exprs!r}, {types!r})"
    else:
        nin, nregs, outs, code, exprs = _formulas.compile_program(formulas, ins, params)
        literal = f"Program({nin}, {nregs}, {outs!r}, {code!r}, {exprs!r})"
    names = {p: f"self.{p}" for p in params}
    values = [Renderer("numpy", names).render(e) for e in exprs]
    return literal, ins, "(" + "".join(v + ", " for v in values) + ")"


def _programs(op):
    """Every program of a row, by name: its forward, and its backward for
    each set of inputs that needs a gradient."""
    ins = list(op.inputs)
    progs = {f"_P_{op.name}_f": _program(op, [op.forward], ins)}
    for mask in _masks(op):
        work = [op.grads[k] for k in range(op.arity) if mask >> k & 1 and not _trivial(op.grads[k])]
        if work:
            progs[f"_P_{op.name}_b{mask}"] = _program(op, work, ["gy", "y"] + ins)
    if _dezero_sensitive(op):
        # DeZero's formula on float32 arrays: promoted where it promotes.
        for mask in _masks(op):
            work = [_dezero_grads(op)[k] for k in range(op.arity) if mask >> k & 1]
            progs[f"_P_{op.name}_dz32_b{mask}"] = _program(op, work, ["gy", "y"] + ins, True)
    return progs


def _render_programs(op):
    return "".join(f"cdef Program {name} = {literal}\n"
                   for name, (literal, _, _) in _programs(op).items())


def _trivial(grad):
    """A derivative that is the incoming gradient itself: no work."""
    return grad.strip() == "gy"


def _masks(op):
    """Every non-empty set of inputs that may need a gradient, as a bit mask."""
    return range(1, 1 << op.arity)


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
    return _names_in(op.grads) | _names_in(op.dezero_grads or ())


def _dezero_grads(op):
    return op.dezero_grads or op.grads


def _dezero_sensitive(op):
    """Do DeZero's dtype rules change this row's array backward?"""
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
    # --- forward: the evaluator, NumPy for what it does not take
    w(f"    def forward(self, {', '.join(ins)}):")
    fnames = {i: i for i in ins}
    fnames.update({p: f"self.{p}" for p in params})
    pargs = "".join(f", self.{p}" for p in params)
    if op.dezero_forward:
        w("        if self._full and not _keep_dtype:")
        w(f"            return _numpy_ops.{op.name}_forward_dz({', '.join(ins)}{pargs})")
    progs = _programs(op)
    _, fwd_in, fwd_params = progs[f"_P_{op.name}_f"]
    w(f"        r = _evaluate(_P_{op.name}_f, ({''.join(i + ', ' for i in fwd_in)}), "
      f"{fwd_params}, None, self._full and not _keep_dtype)")
    w("        if r is not None:")
    w("            return r")
    w(f"        return _numpy_ops.{op.name}_forward({', '.join(ins)}{pargs})")
    w("")
    # --- array backward: the grads of the inputs in ``need`` (bit i: input
    # i), None for the others; the first may be written into ``buf``
    w("    cdef tuple _array_backward(self, object gy, object buf, int need, bint exact):")
    used = _names_used(op)
    for k, i in enumerate(ins):
        if i in used:
            w(f"        {i} = (<_Variable>self._inputs[{k}])._get_data()")
    if "y" in used:
        w("        y = self._output_data()")
    names = {i: i for i in ins}
    names.update({p: f"self.{p}" for p in params})
    names.update(y="y", gy="gy")
    r = Renderer("numpy", names)
    first = True
    for mask in _masks(op):
        wanted = [k for k in range(op.arity) if mask >> k & 1]
        work = [k for k in wanted if not _trivial(op.grads[k])]
        if work:
            w(f"        {'if' if first else 'elif'} need == {mask}:")
            first = False
            _, pin, pparams = progs[f"_P_{op.name}_b{mask}"]
            # gy itself is a wanted grad: its buffer cannot take another one.
            buf = "None" if len(work) < len(wanted) else "buf"
            w(f"            r = _evaluate(_P_{op.name}_b{mask}, ({''.join(i + ', ' for i in pin)}), "
              f"{pparams}, {buf}, exact)")
            w("            if r is not None:")
            if len(work) == 1:
                w("                r = (r,)")
            items = []
            for k in range(op.arity):
                if k in work:
                    items.append(f"r[{work.index(k)}]")
                elif k in wanted:
                    items.append("gy")
                else:
                    items.append("None")
            w(f"                return ({', '.join(items)},)")
    yarg = "y" if "y" in used else "None"
    xargs = ", ".join(i if i in used else "None" for i in ins)
    w(f"        return _numpy_ops.{op.name}_backward(gy, {yarg}, {xargs}{pargs}, need)")
    w("")
    # --- DeZero's dtype rules: its formula with strong constants
    if _dezero_sensitive(op):
        dz_grads = _dezero_grads(op)
        dz_used = _names_in(dz_grads)
        w("    cdef bint _dz_sensitive(self) noexcept:")
        w("        return True")
        w("")
        w("    cdef tuple _array_backward_dz(self, object gy, object buf, int need):")
        for k, i in enumerate(ins):
            if i in dz_used:
                w(f"        {i} = (<_Variable>self._inputs[{k}])._get_data()")
        if "y" in dz_used:
            w("        y = self._output_data()")
        # Strong and weak constants agree on float64 arrays: the fast paths.
        checks = [f"_is_f64_array({n})" for n in ["gy"] + list(ins) + ["y"]
                  if n in dz_used or n == "gy"]
        w(f"        if {' and '.join(checks)}:")
        w("            return self._array_backward(gy, buf, need, True)")
        f32 = [c.replace("_is_f64_array", "_is_f32_array") for c in checks]
        progs = _programs(op)
        w(f"        if {' and '.join(f32)}:")
        for mask in _masks(op):
            _, pin, pparams = progs[f"_P_{op.name}_dz32_b{mask}"]
            wanted = [k for k in range(op.arity) if mask >> k & 1]
            w(f"            {'if' if mask == 1 else 'elif'} need == {mask}:")
            w(f"                r = _evaluate(_P_{op.name}_dz32_b{mask}, "
              f"({''.join(i + ', ' for i in pin)}), {pparams}, None, True)")
            w("                if r is not None:")
            if len(wanted) == 1:
                w("                    r = (r,)")
            items = [f"r[{wanted.index(k)}]" if k in wanted else "None" for k in range(op.arity)]
            w(f"                    return ({', '.join(items)},)")
        yarg = "y" if "y" in dz_used else "None"
        xargs = ", ".join(i if i in dz_used else "None" for i in ins)
        w(f"        return _numpy_ops.{op.name}_backward_dz(gy, {yarg}, {xargs}{pargs}, need)")
        w("")
    # --- the stage-2 protocol: backward on arrays, as a user would write it
    w("    def backward(self, gy):")
    w(f"        r = self._array_backward(gy, None, {(1 << n) - 1}, self._full and not _keep_dtype)")
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


def _render_scalar_functions():
    """The C scalar path's functions: NumPy's float64 loop of each ufunc
    function, or the C library's where a probe agrees with NumPy."""
    lines = []
    libm = [f.libm for f in _formulas.FUNCTIONS.values() if f.libm]
    if libm:
        lines.append("from libc.math cimport " + ", ".join(f"{n} as _libm_{n}" for n in libm))
    lines += ["", "", "cdef int _init_scalar_functions() except -1:"]
    for f in _formulas.FUNCTIONS.values():
        if f.kind == "ufunc1":
            fn = f"_libm_{f.libm}" if f.libm else "NULL"
            lines.append(f"    _init_unary(UF_{f.ufunc.upper()}, {fn})")
    lines += ["    return 0", "", "", "_init_scalar_functions()", ""]
    return "\n".join(lines)


def render_pxi():
    """Return the text of ``_optable.pxi``."""
    parts = ["# Generated from fastgrad/_optable.py by fastgrad/_codegen.py: do not edit.", "",
             _render_scalar_functions(), _render_scalar_dispatch()]
    for op in OPS:
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


def render_numpy_module():
    """Return the text of ``_numpy_ops.py``: every row's formulas as NumPy
    code, the path for what the evaluator does not take and for
    ``FASTGRAD_PURE=1``.  A Python module (not the compiled ``_core``), so
    that NumPy may reuse a formula's temporaries in place (it does so only
    for code the interpreter runs)."""
    lines = ['"""Generated from fastgrad/_optable.py by fastgrad/_codegen.py: do not edit.',
             "", "Each op's NumPy forward and backward (a grad per input in ``need``, bit i",
             'for input i, else None); ``_dz``: DeZero\'s formula and dtype rules."""',
             "import numpy as _np", "", "",
             "def _strong(c):",
             "    # DeZero's as_array(c): a number meeting an array is strongly typed.",
             "    return _np.asarray(c)", ""]
    for op in OPS:
        ins = list(op.inputs)
        params = _param_names(op)
        plain = {n: n for n in ins + params + ["y", "gy"]}
        sig = ", ".join(ins + params)
        lines += ["", f"def {op.name}_forward({sig}):",
                  f"    return {Renderer('numpy', plain).render(op.forward)}", ""]
        if op.dezero_forward:
            lines += ["", f"def {op.name}_forward_dz({sig}):",
                      f"    return {Renderer('numpy', plain).render(op.dezero_forward)}", ""]
        variants = [("backward", Renderer("numpy", plain), op.grads)]
        if _dezero_sensitive(op):
            variants.append(("backward_dz", Renderer("numpy", plain, dezero=True,
                                                     arrays=ins + ["y", "gy"]), _dezero_grads(op)))
        for suffix, r, grads in variants:
            items = [f"({r.render(g)} if need & {1 << k} else None)" for k, g in enumerate(grads)]
            lines += ["", f"def {op.name}_{suffix}(gy, y, {sig}, need):",
                      f"    return ({', '.join(items)},)", ""]
    return "\n".join(lines)


def render_opcodes():
    """Return the text of ``_opcodes.pxi``: the evaluator's instruction set
    and ufunc numbers, from :mod:`fastgrad._formulas` (their one declaration)."""
    lines = ["# Generated from fastgrad/_formulas.py by fastgrad/_codegen.py: do not edit.",
             "cdef enum:"]
    lines += [f"    I_{name} = {_formulas.OP[name]}" for name in _formulas.OPCODES]
    lines += [f"    I_LAST = {len(_formulas.OPCODES)}", "", "cdef enum:"]
    lines += [f"    UF_{name.upper()} = {i}" for i, name in enumerate(_formulas.UFUNCS)]
    lines += [f"    _NUFUNCS = {len(_formulas.UFUNCS)}", ""]
    lines += ["UFUNC_NAMES = " + repr(tuple(_formulas.UFUNCS)), ""]
    return "\n".join(lines)


def _write(path, text):
    try:
        with open(path) as fh:
            if fh.read() == text:
                return path
    except OSError:
        pass
    with open(path, "w") as fh:
        fh.write(text)
    return path


_STUB_START = "# ---- generated from fastgrad/_optable.py by the build (fastgrad/_codegen.py)\n"
_STUB_END = "# ---- end of generated stubs\n"


def write_stubs(path=None):
    """Bring the table's part of ``_core.pyi`` (between its markers) up to
    date, so that a new row's stubs come with the build."""
    path = path or os.path.join(os.path.dirname(os.path.abspath(__file__)), "_core.pyi")
    with open(path) as fh:
        text = fh.read()
    start = text.index(_STUB_START) + len(_STUB_START)
    end = text.index(_STUB_END)
    return _write(path, text[:start] + render_stubs() + text[end:])


def write_pxi(path=None):
    """Write ``_optable.pxi``, ``_opcodes.pxi`` and ``_numpy_ops.py`` beside
    this file unless they are already current, and the table's stubs in
    ``_core.pyi``; returns the first's path."""
    here = os.path.dirname(os.path.abspath(__file__))
    write_stubs()
    _write(os.path.join(here, "_opcodes.pxi"), render_opcodes())
    _write(os.path.join(here, "_numpy_ops.py"), render_numpy_module())
    return _write(path or os.path.join(here, "_optable.pxi"), render_pxi())


if __name__ == "__main__":
    if "--stubs" in sys.argv:
        sys.stdout.write(render_stubs())
    else:
        print(write_pxi())
