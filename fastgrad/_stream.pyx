"""Memory-bandwidth probe of ``fastgrad-bench`` (a benchmark tool, not API).

STREAM's ``copy`` (``a[:] = b``) and ``triad`` (``a[:] = b + s * c``) on
float64, split over fastgrad's native thread pool exactly as the library's
large elementwise loops are: the benchmark measures what this machine's
memory delivers to those threads, once with one and once with all of them
(``fastgrad.set_num_threads``), in the last-level cache and from DRAM, and
reports each kernel's effective bandwidth as a fraction of it.

The loops are plain C over contiguous arrays, compiled like the kernels
(no FMA contraction, so ``triad`` is bit-identical to NumPy's
``b + s * c``); each thread claims pieces of ``GRAIN`` elements.
"""
from fastgrad._threads cimport parallel_for

__all__ = ["copy", "triad", "GRAIN"]

# Elements per piece a thread claims: 256 KiB of float64, a few dozen pieces
# per thread at the probe's sizes, so a thread the OS delays costs at most
# one piece's wait.
DEF _GRAIN = 32768
GRAIN = _GRAIN


cdef struct _Args:
    double* a
    const double* b
    const double* c
    double s


cdef void _copy_piece(void* ctx, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef _Args* p = <_Args*>ctx
    cdef double* a = p.a
    cdef const double* b = p.b
    cdef Py_ssize_t i
    for i in range(lo, hi):
        a[i] = b[i]


cdef void _triad_piece(void* ctx, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef _Args* p = <_Args*>ctx
    cdef double* a = p.a
    cdef const double* b = p.b
    cdef const double* c = p.c
    cdef double s = p.s
    cdef Py_ssize_t i
    for i in range(lo, hi):
        a[i] = b[i] + s * c[i]


cdef void _check(str name, Py_ssize_t n, Py_ssize_t m, str which) except *:
    if m != n:
        raise ValueError(f"{name}: {which} has {m} elements, the output {n}")


def copy(double[::1] a not None, const double[::1] b not None):
    """STREAM copy ``a[:] = b`` on the current number of threads.

    ``a`` and ``b`` are 1-d C-contiguous float64 arrays of one length
    (else ValueError; a wrong dtype or layout is refused by the buffer
    protocol with a ValueError naming it).  Moves ``16 * len(a)`` bytes.
    """
    cdef _Args args
    cdef Py_ssize_t n = a.shape[0]
    _check("copy", n, b.shape[0], "b")
    if n == 0:
        return
    args.a, args.b, args.c, args.s = &a[0], &b[0], NULL, 0.0
    with nogil:
        parallel_for(n, _GRAIN, _copy_piece, &args)


def triad(double[::1] a not None, const double[::1] b not None,
          const double[::1] c not None, double s):
    """STREAM triad ``a[:] = b + s * c`` on the current number of threads.

    Bit-identical to NumPy's ``b + s * c``.  ``a``, ``b``, ``c`` are 1-d
    C-contiguous float64 arrays of one length (else ValueError).  Moves
    ``24 * len(a)`` bytes.
    """
    cdef _Args args
    cdef Py_ssize_t n = a.shape[0]
    _check("triad", n, b.shape[0], "b")
    _check("triad", n, c.shape[0], "c")
    if n == 0:
        return
    args.a, args.b, args.c, args.s = &a[0], &b[0], &c[0], s
    with nogil:
        parallel_for(n, _GRAIN, _triad_piece, &args)
