"""The elementwise evaluator: compiled formulas over arrays, one pass, every core.

A :class:`Program` (compiled by :mod:`fastgrad._formulas` from the op
table's formulas, or by the tracer from a recorded function) runs over its
input arrays in blocks of ``_BLOCK`` elements: every intermediate stays in a
block the size of the L1/L2 cache, and each array is read and written once,
however many NumPy operations the formula has.  Each instruction is the IEEE
operation NumPy performs, in NumPy's order; most of them call NumPy's own
inner loop for the dtype (its SIMD code), so results are NumPy's bits.

Large evaluations split over the native thread pool (``fastgrad._threads``)
in pieces of whole blocks: each element is computed exactly as on one
thread, so results are bit-identical for every thread count.

Inputs are exact, aligned, C-contiguous float32 or float64 ndarrays of one
dtype, each either of the evaluation's shape or 0-d (a scalar operand such
as the engine's ``x * 2.0`` constant); the caller sends everything else to
NumPy.  Results come from the allocator's hot blocks (``fastgrad._alloc``).
"""
cimport numpy as cnp
from cython cimport floating
from libc.math cimport fabs, sqrt
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

import numpy as np

from fastgrad._alloc cimport alloc_array
from fastgrad._arrays cimport float_type
from fastgrad._threads cimport parallel_for

cnp.import_array()

include "_ufunc_loops.pxi"
include "_opcodes.pxi"

cdef enum:
    _BLOCK = 512            # elements per block
    _MAX_REGS = 64
    _GRAIN = 16             # blocks per piece of a threaded evaluation
    # Registers sit _STRIDE doubles apart, not _BLOCK: at a 4 KiB spacing a
    # load from one register and a store to another share their low 12
    # address bits, and the CPU stalls the load on a false dependency (a
    # float32-to-float64 CAST ran 5x slower).
    _STRIDE = _BLOCK + 16

# Below this many elements an evaluation stays on the calling thread: waking
# the pool costs more than it saves.  Measured on 2 cores (benchmarks/README.md):
# a program calling exp or tanh gains from 2**15 elements (1.1x, 1.4x at
# 2**16); arithmetic alone is memory-bound and loses until 2**18 (0.8x at
# 2**17, 1.45x at 2**18), so it waits for _PAR_MIN << 3.
cdef Py_ssize_t _PAR_MIN = 1 << 15

# NumPy's inner loops, by UFUNCS number, for float64 [0] and float32 [1].
cdef _ufunc_loop _loops[_NUFUNCS][2]
cdef void* _loop_data[_NUFUNCS][2]


cdef int _init_loops() except -1:
    cdef int i
    for i, name in enumerate(UFUNC_NAMES):
        _find_loop(getattr(np, name), cnp.NPY_DOUBLE, &_loops[i][0], &_loop_data[i][0])
        _find_loop(getattr(np, name), cnp.NPY_FLOAT, &_loops[i][1], &_loop_data[i][1])
    return 0


_init_loops()


# ---------------------------------------------------------------- programs

cdef class Program:
    """A compiled formula (or several, one output each) over registers.

    Parameters
    ----------
    nin, nregs : int
        Registers ``0 .. nin - 1`` are the inputs; ``nregs`` in all.
    outs : tuple of int
        The register of each output (distinct, not inputs).
    code : tuple of (op, dst, a, b, c, fn, value)
        The instructions (see ``fastgrad._formulas.OPCODES``).
    param_exprs : tuple of str
        What the caller computes, per call, as the PARAM values.
    """

    def __cinit__(self):
        self.code = NULL

    def __init__(self, int nin, int nregs, tuple outs, tuple code, tuple param_exprs=(),
                 tuple types=None):
        cdef int k, i
        if not 0 <= nin <= nregs <= _MAX_REGS:
            raise ValueError(f"a program has at most {_MAX_REGS} registers, got {nregs}")
        if not 1 <= len(outs) <= 16:
            raise ValueError("a program has 1 to 16 outputs")
        for r in outs:
            if not nin <= r < nregs or list(outs).count(r) != 1:
                raise ValueError(f"output register {r} is an input, repeated or out of range")
        nparams = len(param_exprs)
        self.code = <Instr*>malloc(max(1, len(code)) * sizeof(Instr))
        if self.code == NULL:
            raise MemoryError()
        # A typed program: each input's and output's dtype (0 float64, 1
        # float32) and each instruction's; else one dtype, the arrays'.
        self.typed = types is not None
        if self.typed:
            in_types, out_types = types
            if len(in_types) != nin or len(out_types) != len(outs) or not all(
                    [t in (0, 1) for t in tuple(in_types) + tuple(out_types)]):
                raise ValueError("types: one dtype code (0 float64, 1 float32) per input "
                                 "and per output")
            for i in range(nin):
                self.in_t[i] = in_types[i]
            for i in range(len(outs)):
                self.out_t[i] = out_types[i]
        for k, ins in enumerate(code):
            t = -1
            if len(ins) == 8:
                op, dst, a, b, c, fn, value, t = ins
            else:
                op, dst, a, b, c, fn, value = ins
            if self.typed != (t in (0, 1)):
                raise ValueError(f"instruction {k}: a typed program's instructions "
                                 f"each have a dtype (0 or 1), an untyped one's none")
            if not 1 <= op <= I_LAST:
                raise ValueError(f"instruction {k}: unknown opcode {op}")
            for r in (dst, a, b, c):
                if not 0 <= r < nregs:
                    raise ValueError(f"instruction {k}: register {r} out of range")
            if dst < nin:
                raise ValueError(f"instruction {k} writes input register {dst}")
            if op == I_UFUNC1 or op == I_UFUNC2:
                if not 0 <= fn < _NUFUNCS:
                    raise ValueError(f"instruction {k}: unknown ufunc {fn}")
            elif op == I_PARAM or op == I_POW:
                if not 0 <= fn < nparams:
                    raise ValueError(f"instruction {k}: parameter {fn} out of range")
            elif I_ADDC <= op <= I_RDIVC:
                if not 0 <= fn <= nparams:
                    raise ValueError(f"instruction {k}: parameter {fn - 1} out of range")
            self.code[k].op = op
            self.code[k].dst = dst
            self.code[k].a = a
            self.code[k].b = b
            self.code[k].c = c
            self.code[k].fn = fn
            self.code[k].value = value
            self.code[k].t = t
            if op == I_UFUNC1 or op == I_POW:
                self.heavy = True
        self.ncode = len(code)
        self.nin = nin
        self.nregs = nregs
        self.nout = len(outs)
        for i, r in enumerate(outs):
            self.outs[i] = r
        self.param_exprs = param_exprs

    def __dealloc__(self):
        if self.code != NULL:
            free(self.code)

    @property
    def nparams(self):
        return len(self.param_exprs)

    def __call__(self, *arrays, params=(), out=None):
        """Evaluate on ``arrays`` (for tests and tools); None if they cannot
        take the compiled path."""
        return evaluate(self, arrays, tuple(params), out)


# ---------------------------------------------------------------- running

cdef enum:
    _MAX_PARAMS = 8

cdef struct _Job:
    const Instr* code
    int ncode, nin, nregs, nout
    int t                       # 0 float64, 1 float32: an untyped program's dtype
    bint exact_pow
    int in_size[_MAX_REGS]      # bytes per element of each input and output
    int out_size[16]
    char* ins[_MAX_REGS]
    bint scalar[_MAX_REGS]      # input is 0-d: a block filled with its value
    char* outs[16]
    bint copy_back[16]          # the output aliases an input: write a block, then copy
    int out_regs[16]
    double params[_MAX_PARAMS]


cdef inline void _call1(int fn, int t, void* a, void* d, Py_ssize_t m,
                        cnp.npy_intp sa, cnp.npy_intp sd) noexcept nogil:
    cdef char* args[2]
    cdef cnp.npy_intp n = m
    cdef cnp.npy_intp steps[2]
    args[0] = <char*>a
    args[1] = <char*>d
    steps[0] = sa
    steps[1] = sd
    _loops[fn][t](args, &n, steps, _loop_data[fn][t])


cdef inline void _call2(int fn, int t, void* a, void* b, void* d, Py_ssize_t m,
                        cnp.npy_intp sa, cnp.npy_intp sb, cnp.npy_intp sd) noexcept nogil:
    cdef char* args[3]
    cdef cnp.npy_intp n = m
    cdef cnp.npy_intp steps[3]
    args[0] = <char*>a
    args[1] = <char*>b
    args[2] = <char*>d
    steps[0] = sa
    steps[1] = sb
    steps[2] = sd
    _loops[fn][t](args, &n, steps, _loop_data[fn][t])


# -- powers: NumPy's exact special cases, and plans by multiplication

cdef inline double _ipos(double x, int n) noexcept nogil:
    """x ** n for 0 <= n <= 4 by repeated multiplication."""
    cdef double t
    if n == 0:
        return 1
    elif n == 1:
        return x
    elif n == 2:
        return x * x
    elif n == 3:
        return x * x * x
    t = x * x
    return t * t


cdef inline double _recip(double t, double x, int m) noexcept nogil:
    """1 / t where t = x ** m (times sqrt(x) for half-integers).

    One division keeps the error near 1 ulp; where t overflowed or went
    subnormal the true reciprocal may still be finite or nonzero, so take
    (1 / x) ** m there (also right for 0, inf and nan).  Both sides are
    computed, then selected: the loop stays branch-free and vectorizes.
    """
    cdef double a = 1 / t
    cdef double b = _ipos(1 / x, m)
    return a if 2.2250738585072014e-308 <= fabs(t) <= 1.7976931348623157e308 else b


cdef inline double _powi_d(double x, int n) noexcept nogil:
    """x ** n for -3 <= n <= 4."""
    if n >= 0:
        return _ipos(x, n)
    return _recip(_ipos(x, -n), x, -n)


cdef inline double _powh_d(double x, int k) noexcept nogil:
    """x ** (k + 0.5) for x > 0, -2 <= k <= 3 (other x are patched)."""
    cdef double s = sqrt(x)
    cdef double t, a, b
    if k >= 0:
        return _ipos(x, k) * s
    t = _ipos(x, -k - 1) * s
    a = 1 / t
    b = _ipos(1 / x, -k - 1) * (1 / s)
    return a if 2.2250738585072014e-308 <= t <= 1.7976931348623157e308 else b


cdef void _pow_block(floating* a, floating* d, Py_ssize_t m, double e, bint exact,
                     int t) noexcept nogil:
    """d = a ** e for one block.

    NumPy computes ``array ** scalar`` as a square, a square root, a
    reciprocal or a copy for e = 2, 0.5, -1, 1: those are exact here too.
    Unless ``exact``, integer exponents -3..4 and half-integers -1.5..3.5
    use repeated multiplication (and one square root), computed in double
    and rounded once for float32: within 4 ulp of NumPy's ``power``, and
    several times faster.  Other exponents call NumPy's ``power`` loop.
    """
    cdef Py_ssize_t i
    cdef floating src[_BLOCK]
    cdef floating ev = <floating>e
    cdef double h = e - 0.5
    cdef int k
    if e == 2:
        for i in range(m):
            d[i] = a[i] * a[i]
    elif e == 1:
        if d != a:
            memcpy(d, a, m * sizeof(floating))
    elif e == 0.5:
        _call1(UF_SQRT, t, a, d, m, sizeof(floating), sizeof(floating))
    elif e == -1:
        for i in range(m):
            d[i] = 1 / a[i]
    elif not exact and e == 0:
        for i in range(m):
            d[i] = 1
    elif not exact and -3 <= e <= 4 and e == <int>e:
        k = <int>e
        # A constant exponent per loop, so the helper folds and vectorizes.
        if k == 3:
            for i in range(m):
                d[i] = <floating>_powi_d(a[i], 3)
        elif k == 4:
            for i in range(m):
                d[i] = <floating>_powi_d(a[i], 4)
        elif k == -2:
            for i in range(m):
                d[i] = <floating>_powi_d(a[i], -2)
        else:
            for i in range(m):
                d[i] = <floating>_powi_d(a[i], k)
    elif not exact and -2 <= h <= 3 and h == <int>h:
        # Two passes over the block: the second reads the input again, so an
        # output that is the input's own register reads a copy.
        if d == a:
            memcpy(src, a, m * sizeof(floating))
            a = src
        k = <int>h
        if k == 1:
            for i in range(m):
                d[i] = <floating>_powh_d(a[i], 1) if a[i] > 0 else 0
        elif k == 2:
            for i in range(m):
                d[i] = <floating>_powh_d(a[i], 2) if a[i] > 0 else 0
        else:
            for i in range(m):
                d[i] = <floating>_powh_d(a[i], k) if a[i] > 0 else 0
        # x <= 0, -inf and nan: NumPy's power has the C99 special cases.
        for i in range(m):
            if not a[i] > 0:
                _call2(UF_POWER, t, &a[i], &ev, &d[i], 1, 0, 0, 0)
    else:
        _call2(UF_POWER, t, a, &ev, d, m, sizeof(floating), 0, sizeof(floating))


cdef void _instr(_Job* job, const Instr* ins, floating* d, floating* a, floating* b,
                 floating* c, Py_ssize_t m) noexcept nogil:
    """Run one instruction on a block of ``m`` elements of its type."""
    cdef int t = 0 if floating is double else 1
    cdef Py_ssize_t i
    cdef floating v
    cdef cnp.npy_intp s = sizeof(floating)
    cdef int op = ins.op
    if op == I_ADD:
        _call2(UF_ADD, t, a, b, d, m, s, s, s)
    elif op == I_SUB:
        _call2(UF_SUBTRACT, t, a, b, d, m, s, s, s)
    elif op == I_MUL:
        _call2(UF_MULTIPLY, t, a, b, d, m, s, s, s)
    elif op == I_DIV:
        _call2(UF_DIVIDE, t, a, b, d, m, s, s, s)
    elif I_ADDC <= op <= I_RDIVC:
        v = <floating>(job.params[ins.fn - 1] if ins.fn else ins.value)
        if op == I_ADDC:
            _call2(UF_ADD, t, a, &v, d, m, s, 0, s)
        elif op == I_SUBC:
            _call2(UF_SUBTRACT, t, a, &v, d, m, s, 0, s)
        elif op == I_RSUBC:
            _call2(UF_SUBTRACT, t, &v, a, d, m, 0, s, s)
        elif op == I_MULC:
            _call2(UF_MULTIPLY, t, a, &v, d, m, s, 0, s)
        elif op == I_DIVC:
            _call2(UF_DIVIDE, t, a, &v, d, m, s, 0, s)
        else:
            _call2(UF_DIVIDE, t, &v, a, d, m, 0, s, s)
    elif op == I_NEG:
        _call1(UF_NEGATIVE, t, a, d, m, s, s)
    elif op == I_GT:
        for i in range(m):
            d[i] = 1 if a[i] > b[i] else 0
    elif op == I_GE:
        for i in range(m):
            d[i] = 1 if a[i] >= b[i] else 0
    elif op == I_LT:
        for i in range(m):
            d[i] = 1 if a[i] < b[i] else 0
    elif op == I_LE:
        for i in range(m):
            d[i] = 1 if a[i] <= b[i] else 0
    elif op == I_WHERE:
        for i in range(m):
            d[i] = b[i] if a[i] != 0 else c[i]
    elif op == I_CONST or op == I_PARAM:
        v = <floating>(ins.value if op == I_CONST else job.params[ins.fn])
        for i in range(m):
            d[i] = v
    elif op == I_UFUNC1:
        _call1(ins.fn, t, a, d, m, s, s)
    elif op == I_UFUNC2:
        _call2(ins.fn, t, a, b, d, m, s, s, s)
    elif op == I_SIGN:
        for i in range(m):
            # NumPy's sign: +0.0 for either zero, NaN for NaN
            d[i] = 1 if a[i] > 0 else (-1 if a[i] < 0 else (0 if a[i] == 0 else a[i]))
    elif op == I_POW:
        _pow_block(a, d, m, job.params[ins.fn], job.exact_pow, t)
    elif op == I_COPY:
        if d != a:
            memcpy(d, a, m * sizeof(floating))


cdef void _cast(const Instr* ins, char* d, char* a, Py_ssize_t m) noexcept nogil:
    """CAST: float32 to float64 (ins.t 0) or float64 to float32 (exact where
    NumPy's astype is: IEEE rounding)."""
    cdef Py_ssize_t i
    cdef double* d64
    cdef float* d32
    cdef float* a32
    cdef double* a64
    if ins.t == 0:
        d64 = <double*>d
        a32 = <float*>a
        for i in range(m):
            d64[i] = a32[i]
    else:
        d32 = <float*>d
        a64 = <double*>a
        for i in range(m):
            d32[i] = <float>a64[i]


cdef void _block(_Job* job, char** reg, Py_ssize_t m) noexcept nogil:
    """Run the program on one block of ``m`` elements: every instruction in
    the program's dtype, or in its own (a typed program)."""
    cdef int k, t
    cdef const Instr* ins
    for k in range(job.ncode):
        ins = &job.code[k]
        if ins.op == I_CAST:
            _cast(ins, reg[ins.dst], reg[ins.a], m)
            continue
        t = ins.t if ins.t >= 0 else job.t
        if t == 0:
            _instr(job, ins, <double*>reg[ins.dst], <double*>reg[ins.a],
                   <double*>reg[ins.b], <double*>reg[ins.c], m)
        else:
            _instr(job, ins, <float*>reg[ins.dst], <float*>reg[ins.a],
                   <float*>reg[ins.b], <float*>reg[ins.c], m)


cdef void _run_range(_Job* job, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    # Intermediates (and scalar inputs, filled once) live in blocks on this
    # thread's stack; inputs are read and outputs written in place.
    cdef double scratch[_MAX_REGS * _STRIDE]
    cdef char* reg[_MAX_REGS]
    cdef char* blk
    cdef Py_ssize_t start, m, i
    cdef int r, k
    for r in range(job.nregs):
        reg[r] = <char*>(scratch + r * _STRIDE)
    for r in range(job.nin):
        if job.scalar[r]:
            blk = reg[r]
            if job.in_size[r] == 8:
                for i in range(_BLOCK):
                    (<double*>blk)[i] = (<double*>job.ins[r])[0]
            else:
                for i in range(_BLOCK):
                    (<float*>blk)[i] = (<float*>job.ins[r])[0]
    start = lo
    while start < hi:
        m = hi - start
        if m > _BLOCK:
            m = _BLOCK
        for r in range(job.nin):
            if not job.scalar[r]:
                reg[r] = job.ins[r] + start * job.in_size[r]
        for k in range(job.nout):
            if not job.copy_back[k]:
                reg[job.out_regs[k]] = job.outs[k] + start * job.out_size[k]
        _block(job, reg, m)
        for k in range(job.nout):
            if job.copy_back[k]:
                memcpy(job.outs[k] + start * job.out_size[k], reg[job.out_regs[k]],
                       m * job.out_size[k])
        start += m


cdef void _piece(void* ctx, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    # parallel_for's items are whole blocks.
    _run_range(<_Job*>ctx, lo * _BLOCK, hi * _BLOCK)


# ---------------------------------------------------------------- entry points

cdef inline bint _number(object c, double* out) noexcept:
    """A Python float, or an int a double holds exactly."""
    if type(c) is float:
        out[0] = <double>c
        return True
    if type(c) is int and -(1 << 53) <= c <= (1 << 53):
        out[0] = <double>c
        return True
    if type(c) is bool:
        out[0] = 1.0 if c else 0.0
        return True
    return False


cdef inline bint _overlaps(cnp.ndarray a, cnp.ndarray b) noexcept:
    cdef char* pa = <char*>cnp.PyArray_DATA(a)
    cdef char* pb = <char*>cnp.PyArray_DATA(b)
    return pa < pb + cnp.PyArray_NBYTES(b) and pb < pa + cnp.PyArray_NBYTES(a)


cdef object evaluate(Program prog, tuple arrays, tuple params, object out,
                     bint exact_pow=False):
    cdef _Job job
    cdef int i, k, t = -1, nd = 0
    cdef Py_ssize_t size = 1, n
    cdef cnp.ndarray like = None
    cdef cnp.ndarray arr
    if len(arrays) != prog.nin or len(params) != len(prog.param_exprs):
        raise ValueError(f"the program takes {prog.nin} arrays and "
                         f"{len(prog.param_exprs)} parameters, got {len(arrays)} and "
                         f"{len(params)}")
    if len(params) > _MAX_PARAMS:
        return None
    for i in range(len(params)):
        if not _number(params[i], &job.params[i]):
            return None
    for i in range(prog.nin):
        a = arrays[i]
        k = float_type(a, True)
        if k < 0:
            return None
        if prog.typed:
            if k != (cnp.NPY_DOUBLE if prog.in_t[i] == 0 else cnp.NPY_FLOAT):
                return None
        elif t >= 0 and k != t:
            return None
        t = k
        job.in_size[i] = 8 if k == cnp.NPY_DOUBLE else 4
        arr = <cnp.ndarray>a
        if cnp.PyArray_NDIM(arr) == 0:
            job.scalar[i] = True
            continue
        job.scalar[i] = False
        if like is None:
            like = arr
        elif not cnp.PyArray_SAMESHAPE(arr, like):
            return None
    if t < 0:
        return None         # a program with no inputs: nothing to take a dtype from
    if like is None:
        like = <cnp.ndarray>arrays[0]      # all 0-d: a 0-d result
    nd = cnp.PyArray_NDIM(like)
    size = cnp.PyArray_SIZE(like)
    # Outputs: ``out`` for the first when it fits (it may alias an input
    # exactly; a partial overlap is never written).
    outs = []
    for k in range(prog.nout):
        o = None
        job.copy_back[k] = False
        ot = t
        if prog.typed:
            ot = cnp.NPY_DOUBLE if prog.out_t[k] == 0 else cnp.NPY_FLOAT
        job.out_size[k] = 8 if ot == cnp.NPY_DOUBLE else 4
        if k == 0 and out is not None and float_type(out, True) == ot and cnp.PyArray_ISWRITEABLE(
                <cnp.ndarray>out) and cnp.PyArray_SAMESHAPE(<cnp.ndarray>out, like):
            o = out
            for i in range(prog.nin):
                arr = <cnp.ndarray>arrays[i]
                if _overlaps(<cnp.ndarray>out, arr):
                    if (cnp.PyArray_DATA(arr) == cnp.PyArray_DATA(<cnp.ndarray>out)
                            and not job.scalar[i]):
                        job.copy_back[k] = True
                    else:
                        o = None
                        job.copy_back[k] = False
                        break
        if o is None:
            o = alloc_array(nd, cnp.PyArray_DIMS(like), ot)
        outs.append(o)
        job.outs[k] = <char*>cnp.PyArray_DATA(<cnp.ndarray>o)
        job.out_regs[k] = prog.outs[k]
    for i in range(prog.nin):
        job.ins[i] = <char*>cnp.PyArray_DATA(<cnp.ndarray>arrays[i])
    job.code = prog.code
    job.ncode = prog.ncode
    job.nin = prog.nin
    job.nregs = prog.nregs
    job.nout = prog.nout
    job.t = 0 if t == cnp.NPY_DOUBLE else 1
    job.exact_pow = exact_pow
    if size > 0:
        n = (size + _BLOCK - 1) // _BLOCK
        with nogil:
            if size < (_PAR_MIN if prog.heavy else _PAR_MIN << 3):
                _run_range(&job, 0, size)
            else:
                _run_pieces(&job, size, n)
    return outs[0] if prog.nout == 1 else tuple(outs)


cdef void _run_pieces(_Job* job, Py_ssize_t size, Py_ssize_t nblocks) noexcept nogil:
    # The last block may be short: run whole blocks threaded, the tail here.
    cdef Py_ssize_t full = size // _BLOCK
    if full:
        parallel_for(full, _GRAIN, _piece, job)
    if full * _BLOCK < size:
        _run_range(job, full * _BLOCK, size)


# ---------------------------------------------------------------- copy, ones

cdef Program _COPY = Program(1, 2, (1,), ((I_COPY, 1, 0, 0, 0, 0, 0.0),))
cdef Program _ONES = Program(1, 2, (1,), ((I_CONST, 1, 0, 0, 0, 0, 1.0),))


cdef object copy_array(object a):
    r = evaluate(_COPY, (a,), (), None) if float_type(a, True) >= 0 else None
    return np.array(a) if r is None else r


cdef object ones_array(object a):
    r = evaluate(_ONES, (a,), (), None) if float_type(a, True) >= 0 else None
    return np.ones_like(a) if r is None else r


def _set_par_min(Py_ssize_t n):
    """Set the size (elements) from which evaluations calling a libm-class
    loop use the thread pool (arithmetic alone: from 8 times it); returns
    the old one.  For tests and measurements."""
    global _PAR_MIN
    old = _PAR_MIN
    _PAR_MIN = max(n, 1)
    return old
