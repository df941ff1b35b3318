# The elementwise evaluator (fastgrad/_eval.pyx): what the engine and the
# tracer cimport.

cdef struct Instr:
    int op, dst, a, b, c, fn
    int t                   # its dtype in a typed program (0 float64, 1 float32), else -1
    double value


cdef class Program:
    """A compiled formula (or several: one output each) over registers."""
    cdef Instr* code
    cdef int ncode, nin, nout, nregs
    cdef int outs[16]
    cdef bint typed
    cdef bint heavy         # calls a libm-class loop (UFUNC1, POW): threads pay sooner
    cdef int in_t[64]
    cdef int out_t[16]
    cdef readonly tuple param_exprs


# Run ``prog`` elementwise over ``arrays`` (its inputs, in order) with the
# per-call parameter values ``params`` (Python numbers).  The arrays must be
# exact, aligned, native-order, C-contiguous float32 or float64 ndarrays of
# one dtype (a typed program's: each its own), each of the common shape or
# 0-d; anything else returns None (the
# caller runs NumPy).  Returns the output (one) or a tuple of outputs.
# ``out`` receives the first output when it fits (it may be one of the
# inputs).  ``exact_pow``: POW takes NumPy's exact special cases only.
cdef object evaluate(Program prog, tuple arrays, tuple params, object out,
                     bint exact_pow=*)

# A C-contiguous copy of ``a`` / an array of ones like ``a`` (float32/64;
# else NumPy's), on the allocator's hot blocks and the thread pool.
cdef object copy_array(object a)
cdef object ones_array(object a)
