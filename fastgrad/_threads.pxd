# The native thread pool (fastgrad/_threads.pyx): what the kernels cimport.

# One task over items [lo, hi) of a job; ``ctx`` is the caller's data.
ctypedef void (*task_fn)(void* ctx, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil

# Run ``fn`` over [0, n) in pieces of ``grain`` items (the last may be
# shorter), on the pool's threads and the caller's, and return when every
# piece is done.  Pieces are claimed dynamically, so a thread that is not
# scheduled does not hold the others up.  Runs on the calling thread alone
# when the pool has one thread, when the job has one piece, or when another
# thread is using the pool.  Call it without the GIL.
cdef void parallel_for(Py_ssize_t n, Py_ssize_t grain, task_fn fn, void* ctx) noexcept nogil

# Threads a job may use now (>= 1).
cdef int num_threads() noexcept nogil
