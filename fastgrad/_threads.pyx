"""A small pool of native threads for large array kernels.

A job is a range of items cut into pieces.  The calling thread and the
pool's threads claim pieces one at a time from a shared counter, so a thread
the OS does not schedule promptly (a busy core on a shared machine) simply
claims fewer: nobody waits for it except for the one piece it may be in the
middle of.  Results are bit-identical to one thread because every piece
computes exactly what the whole loop would compute on its items.

Threads are started on the first job that uses them, never need the GIL,
and are recreated after ``fork`` when the child first needs them.  Only one
job uses the pool at a time: a job submitted while another thread's job
runs is computed on the submitting thread alone, so user threads can never
deadlock on the pool.
"""
import os

__all__ = ["set_num_threads", "get_num_threads"]

cdef extern from *:
    """
    #include <pthread.h>
    #include <sched.h>

    #define FG_POOL_MAX 64
    #if defined(__x86_64__) || defined(__i386__)
    #define FG_PAUSE() __builtin_ia32_pause()
    #else
    #define FG_PAUSE() ((void)0)
    #endif

    typedef void (*fg_task_fn)(void *ctx, Py_ssize_t lo, Py_ssize_t hi);

    /* The running job.  `word` packs the job's generation (high 32 bits)
       with the next piece to claim (low 32 bits): a thread that saw an
       older generation can never claim a piece of a newer job. */
    static struct {
        pthread_mutex_t mutex;          /* guards generation/started/sleep */
        pthread_cond_t work;            /* a new job was published */
        pthread_cond_t finished;        /* the last piece of a job was done */
        pthread_mutex_t submit;         /* one job at a time */
        unsigned long long word;
        unsigned int generation;
        Py_ssize_t n, grain, pieces, done;
        fg_task_fn fn;
        void *ctx;
        int started;                    /* worker threads running */
        int caller_waiting;
    } fg_pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
                 PTHREAD_COND_INITIALIZER, PTHREAD_MUTEX_INITIALIZER};

    static void fg_pool_run_pieces(unsigned int gen) {
        for (;;) {
            unsigned long long w = __atomic_load_n(&fg_pool.word, __ATOMIC_ACQUIRE);
            Py_ssize_t k, lo, hi;
            if ((unsigned int)(w >> 32) != gen) return;
            k = (Py_ssize_t)(w & 0xffffffffULL);
            if (k >= fg_pool.pieces) return;
            if (!__atomic_compare_exchange_n(&fg_pool.word, &w, w + 1, 0,
                                             __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
                continue;
            /* Claimed piece k of job `gen`: the job cannot end before we
               report it done, so its fields are stable. */
            lo = k * fg_pool.grain;
            hi = lo + fg_pool.grain;
            if (hi > fg_pool.n) hi = fg_pool.n;
            fg_pool.fn(fg_pool.ctx, lo, hi);
            if (__atomic_add_fetch(&fg_pool.done, 1, __ATOMIC_ACQ_REL) == fg_pool.pieces) {
                pthread_mutex_lock(&fg_pool.mutex);
                if (fg_pool.caller_waiting) pthread_cond_signal(&fg_pool.finished);
                pthread_mutex_unlock(&fg_pool.mutex);
            }
        }
    }

    static void *fg_pool_worker(void *arg) {
        unsigned int seen;
        (void)arg;
        pthread_mutex_lock(&fg_pool.mutex);
        seen = fg_pool.generation;
        for (;;) {
            while (fg_pool.generation == seen)
                pthread_cond_wait(&fg_pool.work, &fg_pool.mutex);
            seen = fg_pool.generation;
            pthread_mutex_unlock(&fg_pool.mutex);
            fg_pool_run_pieces(seen);
            pthread_mutex_lock(&fg_pool.mutex);
        }
        return NULL;
    }

    /* Start workers up to `want` (mutex held).  Returns the number running. */
    static int fg_pool_grow(int want) {
        while (fg_pool.started < want && fg_pool.started < FG_POOL_MAX) {
            pthread_t t;
            pthread_attr_t attr;
            pthread_attr_init(&attr);
            pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
            if (pthread_create(&t, &attr, fg_pool_worker, NULL) != 0) {
                pthread_attr_destroy(&attr);
                break;
            }
            pthread_attr_destroy(&attr);
            fg_pool.started++;
        }
        return fg_pool.started;
    }

    static void fg_pool_run(Py_ssize_t n, Py_ssize_t grain, fg_task_fn fn, void *ctx,
                            int nthreads) {
        Py_ssize_t pieces;
        unsigned int gen;
        int spin;
        if (n <= 0) return;
        if (grain < 1) grain = 1;
        pieces = (n + grain - 1) / grain;
        if (nthreads <= 1 || pieces <= 1 || pieces > 0x7fffffffL
                || pthread_mutex_trylock(&fg_pool.submit) != 0) {
            fn(ctx, 0, n);
            return;
        }
        pthread_mutex_lock(&fg_pool.mutex);
        if (fg_pool_grow(nthreads - 1) == 0) {
            pthread_mutex_unlock(&fg_pool.mutex);
            pthread_mutex_unlock(&fg_pool.submit);
            fn(ctx, 0, n);
            return;
        }
        gen = ++fg_pool.generation;
        fg_pool.n = n;
        fg_pool.grain = grain;
        fg_pool.pieces = pieces;
        fg_pool.fn = fn;
        fg_pool.ctx = ctx;
        __atomic_store_n(&fg_pool.done, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&fg_pool.word, (unsigned long long)gen << 32, __ATOMIC_RELEASE);
        pthread_cond_broadcast(&fg_pool.work);
        pthread_mutex_unlock(&fg_pool.mutex);
        fg_pool_run_pieces(gen);
        /* Every piece is claimed; wait for those other threads are in. */
        for (spin = 0; spin < 2000; spin++) {
            if (__atomic_load_n(&fg_pool.done, __ATOMIC_ACQUIRE) == pieces) break;
            FG_PAUSE();
        }
        if (__atomic_load_n(&fg_pool.done, __ATOMIC_ACQUIRE) != pieces) {
            pthread_mutex_lock(&fg_pool.mutex);
            fg_pool.caller_waiting = 1;
            while (__atomic_load_n(&fg_pool.done, __ATOMIC_ACQUIRE) != pieces)
                pthread_cond_wait(&fg_pool.finished, &fg_pool.mutex);
            fg_pool.caller_waiting = 0;
            pthread_mutex_unlock(&fg_pool.mutex);
        }
        pthread_mutex_unlock(&fg_pool.submit);
    }

    /* fork: wait for a running job to end; the child has no workers. */
    static void fg_pool_prefork(void) {
        pthread_mutex_lock(&fg_pool.submit);
        pthread_mutex_lock(&fg_pool.mutex);
    }
    static void fg_pool_postfork_parent(void) {
        pthread_mutex_unlock(&fg_pool.mutex);
        pthread_mutex_unlock(&fg_pool.submit);
    }
    static void fg_pool_postfork_child(void) {
        pthread_cond_init(&fg_pool.work, NULL);
        pthread_cond_init(&fg_pool.finished, NULL);
        fg_pool.started = 0;
        fg_pool.caller_waiting = 0;
        pthread_mutex_unlock(&fg_pool.mutex);
        pthread_mutex_unlock(&fg_pool.submit);
    }
    static int fg_pool_init(void) {
        return pthread_atfork(fg_pool_prefork, fg_pool_postfork_parent,
                              fg_pool_postfork_child);
    }
    static int fg_pool_started(void) {
        int s;
        pthread_mutex_lock(&fg_pool.mutex);
        s = fg_pool.started;
        pthread_mutex_unlock(&fg_pool.mutex);
        return s;
    }
    """
    void _run "fg_pool_run"(Py_ssize_t n, Py_ssize_t grain, task_fn fn, void* ctx,
                            int nthreads) noexcept nogil
    int _init "fg_pool_init"() noexcept nogil
    int _started "fg_pool_started"() noexcept nogil
    int FG_POOL_MAX


if _init() != 0:
    raise ImportError("fastgrad._threads: pthread_atfork failed")

cdef int _nthreads = 1


cdef void parallel_for(Py_ssize_t n, Py_ssize_t grain, task_fn fn, void* ctx) noexcept nogil:
    _run(n, grain, fn, ctx, _nthreads)


cdef int num_threads() noexcept nogil:
    return _nthreads


def _available_cores():
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def set_num_threads(n):
    """Set how many threads large array computations use (the caller's included).

    Parameters
    ----------
    n : int
        1 keeps everything on the calling thread; at most 64.  The default
        is the number of cores this process may run on
        (``os.sched_getaffinity``), or ``FASTGRAD_NUM_THREADS`` if set when
        fastgrad is imported.  Results are bit-identical for every ``n``.

    Examples
    --------
    >>> import fastgrad
    >>> fastgrad.set_num_threads(1)
    >>> fastgrad.get_num_threads()
    1
    """
    global _nthreads
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"set_num_threads: n must be an int, not {type(n).__name__}")
    if not 1 <= n <= FG_POOL_MAX:
        raise ValueError(f"set_num_threads: n must be in 1..{FG_POOL_MAX}, got {n}")
    _nthreads = n


def get_num_threads():
    """Return how many threads large array computations use (see set_num_threads)."""
    return _nthreads


def _pool_threads():
    """Worker threads started so far (they start on the first parallel job)."""
    return _started()


def _configure():
    setting = os.environ.get("FASTGRAD_NUM_THREADS", "").strip()
    n = _available_cores()
    if setting:
        try:
            n = int(setting)
            if not 1 <= n <= FG_POOL_MAX:
                raise ValueError(f"must be in 1..{FG_POOL_MAX}")
        except ValueError as exc:     # a bad setting must not fail the import
            import warnings
            warnings.warn(f"FASTGRAD_NUM_THREADS={setting!r} ignored ({exc}); using "
                          f"{_available_cores()} thread(s)", RuntimeWarning)
            n = _available_cores()
    set_num_threads(min(n, FG_POOL_MAX))


_configure()
