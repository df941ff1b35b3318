# Included by _core.pyx: fused evaluation of op-table formulas on arrays.
#
# NumPy evaluates ``gy * (1 - y * y)`` in three passes over memory, with two
# temporaries.  A formula of a row with ``fused=True`` is compiled (by
# _codegen) into a short register program that runs here over blocks of
# _BLOCK elements: every intermediate stays in L1 cache, and memory is read
# and written once.  Each instruction is the IEEE operation NumPy performs,
# in NumPy's order, or a call to NumPy's own ufunc loop (exp, tanh, ...), so
# the result is bit-identical to the NumPy path.  Only C-contiguous, aligned,
# native float32/float64 arrays of one shape and dtype take this path.

cdef enum:
    _BLOCK = 2048
    _MAX_REGS = 16
    _MAX_INSTR = 48

# opcodes (the same numbers _codegen.OPCODES gives)
cdef enum:
    I_ADD = 1
    I_SUB
    I_MUL
    I_DIV
    I_NEG
    I_GT
    I_GE
    I_LT
    I_LE
    I_WHERE
    I_CONST
    I_PARAM
    I_UFUNC1
    I_UFUNC2
    I_SIGN
    I_FABS
    I_SQRT
    # Internal to the evaluator: a binary op with a constant operand, which
    # _Program makes from a CONST register that only such ops read (so no
    # block of the constant is filled per block of data).
    I_ADDC
    I_SUBC
    I_RSUBC
    I_MULC
    I_DIVC
    I_RDIVC

cdef struct _Instr:
    int op, dst, a, b, c, fn
    double value

# NumPy loops, by function number, for float64 [0] and float32 [1]
cdef enum:
    _NFUNCS = 9
cdef _ufunc_loop _loops[_NFUNCS][2]
cdef void* _loop_data[_NFUNCS][2]
_FUSED_UFUNCS = ("exp", "log", "sin", "cos", "tan", "tanh", "maximum", "minimum", "power")


cdef int _init_loops() except -1:
    cdef int i
    for i, name in enumerate(_FUSED_UFUNCS):
        _find_loop(getattr(np, name), cnp.NPY_DOUBLE, &_loops[i][0], &_loop_data[i][0])
        _find_loop(getattr(np, name), cnp.NPY_FLOAT, &_loops[i][1], &_loop_data[i][1])
    return 0


_init_loops()


cdef class _Program:
    """A compiled formula: instructions over registers 0.._nin-1 (inputs)."""
    cdef _Instr code[_MAX_INSTR]
    cdef int n, nin, nregs, out

    def __init__(self, int nin, int nregs, int out, tuple code):
        if len(code) > _MAX_INSTR or nregs > _MAX_REGS:
            raise ValueError("formula too long for the fused evaluator")
        if not code or code[len(code) - 1][1] != out or out < nin:
            raise ValueError("the last instruction must write the result")
        self.nin = nin
        self.nregs = nregs
        self.out = out
        code = _fold_constants(code, nin, out)
        self.n = len(code)
        for i, (op, dst, a, b, c, fn, value) in enumerate(code):
            self.code[i].op = op
            self.code[i].dst = dst
            self.code[i].a = a
            self.code[i].b = b
            self.code[i].c = c
            self.code[i].fn = fn
            self.code[i].value = value


# (op, constant operand on the right?) -> the op with an immediate constant
_WITH_CONSTANT = {(I_ADD, True): I_ADDC, (I_ADD, False): I_ADDC,
                  (I_MUL, True): I_MULC, (I_MUL, False): I_MULC,
                  (I_SUB, True): I_SUBC, (I_SUB, False): I_RSUBC,
                  (I_DIV, True): I_DIVC, (I_DIV, False): I_RDIVC}


def _fold_constants(program, int nin, int out):
    """``code`` with each CONST that only feeds ADD/SUB/MUL/DIV folded into
    them as an immediate operand (the same IEEE operations: + and * are
    commutative, and SUB/DIV keep their operand order)."""
    code = list(program)
    k = 0
    while k < len(code):
        op, dst, _, _, _, _, value = code[k]
        writes = [j for j, ins in enumerate(code) if ins[1] == dst]
        users = [j for j in range(k + 1, len(code)) if dst in code[j][2:5]]
        foldable = (op == I_CONST and dst != out and dst >= nin and writes == [k]
                    and value == value and users)
        for j in users:
            uop, _, a, b, c, _, _ = code[j]
            if (uop not in (I_ADD, I_SUB, I_MUL, I_DIV) or (a == dst) == (b == dst)
                    or c == dst):
                foldable = False
        if not foldable:
            k += 1
            continue
        for j in users:
            uop, d, a, b, c, fn, _ = code[j]
            right = b == dst
            code[j] = (_WITH_CONSTANT[uop, right], d, a if right else b, 0, 0, fn, value)
        del code[k]
    return tuple(code)


cdef void _run_block(const _Instr* code, int ncode, floating** reg, Py_ssize_t m,
                     const double* params, int t) noexcept nogil:
    cdef int k
    cdef Py_ssize_t i
    cdef const _Instr* ins
    cdef floating* d
    cdef floating* a
    cdef floating* b
    cdef floating* c
    cdef floating v
    cdef char* args[3]
    cdef cnp.npy_intp n = m
    cdef cnp.npy_intp steps[3]
    steps[0] = steps[1] = steps[2] = sizeof(floating)
    for k in range(ncode):
        ins = &code[k]
        d = reg[ins.dst]
        a = reg[ins.a]
        b = reg[ins.b]
        c = reg[ins.c]
        if ins.op == I_ADD:
            for i in range(m):
                d[i] = a[i] + b[i]
        elif ins.op == I_SUB:
            for i in range(m):
                d[i] = a[i] - b[i]
        elif ins.op == I_MUL:
            for i in range(m):
                d[i] = a[i] * b[i]
        elif ins.op == I_DIV:
            for i in range(m):
                d[i] = a[i] / b[i]
        elif ins.op == I_NEG:
            for i in range(m):
                d[i] = -a[i]
        elif ins.op == I_GT:
            for i in range(m):
                d[i] = 1 if a[i] > b[i] else 0
        elif ins.op == I_GE:
            for i in range(m):
                d[i] = 1 if a[i] >= b[i] else 0
        elif ins.op == I_LT:
            for i in range(m):
                d[i] = 1 if a[i] < b[i] else 0
        elif ins.op == I_LE:
            for i in range(m):
                d[i] = 1 if a[i] <= b[i] else 0
        elif ins.op == I_WHERE:
            for i in range(m):
                d[i] = b[i] if a[i] != 0 else c[i]
        elif ins.op == I_CONST or ins.op == I_PARAM:
            v = <floating>(ins.value if ins.op == I_CONST else params[ins.fn])
            for i in range(m):
                d[i] = v
        elif ins.op == I_SIGN:
            for i in range(m):
                # NumPy's sign: +0.0 for either zero, NaN for NaN
                d[i] = 1 if a[i] > 0 else (-1 if a[i] < 0 else (0 if a[i] == 0 else a[i]))
        elif ins.op == I_FABS:
            for i in range(m):
                d[i] = <floating>fabs(a[i])
        elif ins.op == I_SQRT:
            for i in range(m):
                d[i] = (sqrtf(a[i]) if floating is float else libm_sqrt(a[i]))
        elif ins.op == I_ADDC:
            v = <floating>ins.value
            for i in range(m):
                d[i] = a[i] + v
        elif ins.op == I_SUBC:
            v = <floating>ins.value
            for i in range(m):
                d[i] = a[i] - v
        elif ins.op == I_RSUBC:
            v = <floating>ins.value
            for i in range(m):
                d[i] = v - a[i]
        elif ins.op == I_MULC:
            v = <floating>ins.value
            for i in range(m):
                d[i] = a[i] * v
        elif ins.op == I_DIVC:
            v = <floating>ins.value
            for i in range(m):
                d[i] = a[i] / v
        elif ins.op == I_RDIVC:
            v = <floating>ins.value
            for i in range(m):
                d[i] = v / a[i]
        elif ins.op == I_UFUNC1:
            args[0] = <char*>a
            args[1] = <char*>d
            _loops[ins.fn][t](args, &n, steps, _loop_data[ins.fn][t])
        elif ins.op == I_UFUNC2:
            args[0] = <char*>a
            args[1] = <char*>b
            args[2] = <char*>d
            _loops[ins.fn][t](args, &n, steps, _loop_data[ins.fn][t])


cdef void _run(_Program prog, floating** ins, floating* out, Py_ssize_t size,
               const double* params, int t, floating* scratch) noexcept nogil:
    # Inputs are read in place and the last instruction writes ``out``
    # directly; only intermediates live in the cache-sized scratch blocks.
    # ``out`` may be an input: only the last instruction writes it, element
    # by element after reading the same element.
    cdef Py_ssize_t start = 0, m
    cdef int r
    cdef floating* reg[_MAX_REGS]
    for r in range(prog.nin, prog.nregs):
        reg[r] = scratch + r * _BLOCK
    while start < size:
        m = size - start
        if m > _BLOCK:
            m = _BLOCK
        for r in range(prog.nin):
            reg[r] = ins[r] + start
        reg[prog.out] = out + start
        _run_block(prog.code, prog.n, reg, m, params, t)
        start += m


cdef inline bint _fusable(object a, int typenum, cnp.ndarray like) noexcept:
    if type(a) is not _ndarray:
        return False
    cdef cnp.ndarray arr = <cnp.ndarray>a
    return (cnp.PyArray_TYPE(arr) == typenum and cnp.PyArray_IS_C_CONTIGUOUS(arr)
            and cnp.PyArray_ISALIGNED(arr) and cnp.PyArray_ISNOTSWAPPED(arr)
            and cnp.PyArray_SAMESHAPE(arr, like))


cdef object _fused_eval(_Program prog, tuple arrays, tuple params, object out):
    """Evaluate ``prog`` on ``arrays``; None if they cannot take this path.

    ``out`` (may be None) receives the result when it fits.
    """
    if _pure or not arrays:
        return None
    first = arrays[0]
    if type(first) is not _ndarray:
        return None
    cdef int typenum = cnp.PyArray_TYPE(<cnp.ndarray>first)
    if typenum != cnp.NPY_DOUBLE and typenum != cnp.NPY_FLOAT:
        return None
    for a in arrays:
        if not _fusable(a, typenum, <cnp.ndarray>first):
            return None
    cdef double p[4]
    cdef Py_ssize_t i
    if len(params) > 4:
        return None
    for i in range(len(params)):
        if not _c_number(params[i], &p[i]):
            return None
    if out is None or not (_fusable(out, typenum, <cnp.ndarray>first)
                           and cnp.PyArray_ISWRITEABLE(out)):
        out = np.empty_like(first)
    cdef Py_ssize_t size = cnp.PyArray_SIZE(<cnp.ndarray>first)
    cdef void* ptrs[_MAX_REGS]
    for i in range(prog.nin):
        ptrs[i] = cnp.PyArray_DATA(<cnp.ndarray>arrays[i])
    cdef void* o = cnp.PyArray_DATA(<cnp.ndarray>out)
    cdef void* regs = malloc(prog.nregs * _BLOCK * sizeof(double))
    if regs == NULL:
        raise MemoryError()
    with nogil:
        if typenum == cnp.NPY_DOUBLE:
            _run(prog, <double**>ptrs, <double*>o, size, p, 0, <double*>regs)
        else:
            _run(prog, <float**>ptrs, <float*>o, size, p, 1, <float*>regs)
    free(regs)
    return out
