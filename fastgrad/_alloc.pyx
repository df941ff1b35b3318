"""Result buffers of the compiled kernels: reused while hot, handed back when idle.

A fresh large array is mapped memory that the kernel faults in page by page
(the kernel zeroes every page first): at 10^6..10^7 elements that costs as
much as the arithmetic.  So large results live in blocks this module maps
itself.  A block whose array dies is kept in a small cache and serves the
next result of about its size: in a loop, every iteration finds the memory
of the previous one mapped and hot.  A background thread unmaps a cached
block once it has been idle for ``decay_ms`` (default 250 ms), the scheme of
jemalloc's ``dirty_decay_ms`` and mimalloc's purge delay, so that after the
last reference to a graph drops the process's RSS returns to its baseline
without any call by the user.

While the engine runs NumPy code of its own or of a user's ``Function``
on large arrays (``forward``, ``backward``), NumPy allocates from the same
blocks: the engine installs this module's NumPy memory handler (NEP 49) for
that call only, and NumPy frees such an array through the same handler
whenever it dies.  NumPy code outside the engine's calls is left to NumPy's
own allocator.  The idle purge also hands back the free pages of glibc's
heap (``malloc_trim``) once the engine has freed large arrays and then been
quiet for ``decay_ms``; nothing else about the process's malloc is changed.

Blocks are reported to tracemalloc in NumPy's domain while an array uses
them, so tracemalloc sees an array's memory freed at once.  The cache is
guarded by a mutex (the purge thread runs without the GIL) and survives
``fork``: the child starts with the parent's cached blocks and starts its own
purge thread when it needs one.
"""
from libc.stdint cimport uintptr_t
from libc.stdlib cimport calloc, free

cimport numpy as cnp
import numpy as np

cnp.import_array()

__all__ = ["buffer_cache_info", "set_buffer_cache", "clear_buffer_cache"]

cdef extern from "Python.h":
    int PyTraceMalloc_Track(unsigned int domain, uintptr_t ptr, size_t size)
    int PyTraceMalloc_Untrack(unsigned int domain, uintptr_t ptr)

cdef extern from "<sys/mman.h>" nogil:
    void* mmap(void* addr, size_t length, int prot, int flags, int fd, long offset)
    int munmap(void* addr, size_t length)
    int madvise(void* addr, size_t length, int advice)
    void* MAP_FAILED
    int PROT_READ, PROT_WRITE, MAP_PRIVATE, MAP_ANONYMOUS, MADV_HUGEPAGE

cdef extern from "<unistd.h>" nogil:
    long sysconf(int name)
    int _SC_PAGESIZE

# The purge thread, its lock and clock: plain pthreads, so that the thread
# never needs the GIL.
cdef extern from *:
    """
    #include <pthread.h>
    #include <time.h>
    #if defined(__GLIBC__)
    #include <malloc.h>
    #endif

    static pthread_mutex_t fg_alloc_mutex = PTHREAD_MUTEX_INITIALIZER;
    static pthread_cond_t fg_alloc_cond;
    static int fg_alloc_purger_started = 0;

    static double fg_alloc_now(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
    }
    static void fg_alloc_lock(void) { pthread_mutex_lock(&fg_alloc_mutex); }
    static void fg_alloc_unlock(void) { pthread_mutex_unlock(&fg_alloc_mutex); }
    static void fg_alloc_signal(void) { pthread_cond_signal(&fg_alloc_cond); }
    /* Wait (the mutex held) until signalled or until `deadline` (monotonic
       seconds; a negative deadline waits for a signal only). */
    static void fg_alloc_wait(double deadline) {
        if (deadline < 0) {
            pthread_cond_wait(&fg_alloc_cond, &fg_alloc_mutex);
        } else {
            struct timespec ts;
            ts.tv_sec = (time_t)deadline;
            ts.tv_nsec = (long)((deadline - (double)ts.tv_sec) * 1e9);
            if (ts.tv_nsec >= 1000000000L) { ts.tv_sec += 1; ts.tv_nsec -= 1000000000L; }
            if (ts.tv_nsec < 0) ts.tv_nsec = 0;
            pthread_cond_timedwait(&fg_alloc_cond, &fg_alloc_mutex, &ts);
        }
    }
    static void fg_alloc_trim_heap(void) {
    #if defined(__GLIBC__)
        malloc_trim(0);
    #endif
    }
    static int fg_alloc_can_trim(void) {
    #if defined(__GLIBC__)
        return 1;
    #else
        return 0;
    #endif
    }

    /* Start the purge thread once per process (called with the mutex held). */
    static int fg_alloc_start_purger(void *(*main)(void *)) {
        pthread_t t;
        pthread_attr_t attr;
        if (fg_alloc_purger_started) return 0;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&t, &attr, main, NULL) != 0) {
            pthread_attr_destroy(&attr);
            return -1;
        }
        pthread_attr_destroy(&attr);
        fg_alloc_purger_started = 1;
        return 0;
    }
    /* fork: the child gets a consistent cache and no purge thread. */
    static void fg_alloc_prefork(void) { pthread_mutex_lock(&fg_alloc_mutex); }
    static void fg_alloc_postfork_parent(void) { pthread_mutex_unlock(&fg_alloc_mutex); }
    static void fg_alloc_init_cond(void) {
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&fg_alloc_cond, &ca);
        pthread_condattr_destroy(&ca);
    }
    static void fg_alloc_postfork_child(void) {
        /* The forking thread holds the mutex; the purge thread is gone (its
           wait on the condition variable with it). */
        fg_alloc_init_cond();
        fg_alloc_purger_started = 0;
        pthread_mutex_unlock(&fg_alloc_mutex);
    }
    static int fg_alloc_init(void) {
        fg_alloc_init_cond();
        return pthread_atfork(fg_alloc_prefork, fg_alloc_postfork_parent,
                              fg_alloc_postfork_child);
    }
    """
    double _now "fg_alloc_now"() noexcept nogil
    void _lock "fg_alloc_lock"() noexcept nogil
    void _unlock "fg_alloc_unlock"() noexcept nogil
    void _signal "fg_alloc_signal"() noexcept nogil
    void _wait "fg_alloc_wait"(double deadline) noexcept nogil
    void _trim_heap "fg_alloc_trim_heap"() noexcept nogil
    int _can_trim "fg_alloc_can_trim"() noexcept nogil
    int _start_thread "fg_alloc_start_purger"(void* (*main)(void*) noexcept nogil) noexcept nogil
    int _init "fg_alloc_init"() noexcept nogil


cdef extern from "numpy/ndarraytypes.h":
    ctypedef struct PyDataMemAllocator:
        void* ctx
        void* (*malloc)(void* ctx, size_t size) noexcept nogil
        void* (*calloc)(void* ctx, size_t nelem, size_t elsize) noexcept nogil
        void* (*realloc)(void* ctx, void* ptr, size_t new_size) noexcept nogil
        void (*free)(void* ctx, void* ptr, size_t size) noexcept nogil
    ctypedef struct PyDataMem_Handler:
        char name[127]
        unsigned char version
        PyDataMemAllocator allocator

cdef extern from "numpy/arrayobject.h":
    PyObject* PyDataMem_DefaultHandler

cdef extern from "Python.h":
    ctypedef struct PyObject
    object PyCapsule_New(void* pointer, const char* name, void* destructor)
    void* PyCapsule_GetPointer(object capsule, const char* name) except? NULL

cdef extern from "<string.h>" nogil:
    void* memcpy(void* dst, const void* src, size_t n)
    void* memset(void* dst, int c, size_t n)
    char* strncpy(char* dst, const char* src, size_t n)


cdef enum:
    _SLOTS = 64             # most blocks the cache can hold
    _HEADER = 64            # bytes before the data: the mapping's size (keeps 64-byte alignment)

cdef unsigned int _NPY_DOMAIN = np.lib.tracemalloc_domain
# Arrays smaller than this use NumPy's allocator (its small-block cache and
# glibc's heap serve them well; above it glibc may trim its heap top on every
# free and fault the pages back in on the next allocation).
cdef size_t _MIN_BYTES = 1 << 18
cdef size_t _HUGE_PAGE = 1 << 21
cdef size_t _PAGE = <size_t>sysconf(_SC_PAGESIZE)

# The cache (guarded by the mutex): free mappings, most recently freed last.
cdef char* _base[_SLOTS]
cdef size_t _size[_SLOTS]
cdef double _freed_at[_SLOTS]
cdef int _n = 0
cdef size_t _bytes = 0
cdef int _max_entries = 32
cdef size_t _max_bytes = 1 << 30
cdef double _decay = 0.25           # seconds a free block stays mapped
cdef double _heap_freed_at = -1.0   # last time the engine freed heap memory; -1: none pending
cdef bint _purger_waiting_forever = False
# Statistics, for buffer_cache_info.
cdef unsigned long long _hits = 0, _misses = 0, _purged = 0, _trims = 0


# ---------------------------------------------------------------- mappings

cdef char* _map(size_t size) noexcept nogil:
    """``size`` bytes (a page multiple) of fresh memory, or NULL.

    Mappings of 2 MiB or more start on a 2 MiB boundary so that transparent
    huge pages can back all of them (NumPy madvises its large arrays too).
    """
    cdef size_t extra = _HUGE_PAGE if size >= _HUGE_PAGE else 0
    cdef size_t head = 0
    cdef char* raw = <char*>mmap(NULL, size + extra, PROT_READ | PROT_WRITE,
                                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
    if <void*>raw == MAP_FAILED:
        return NULL
    if extra:
        head = (_HUGE_PAGE - (<uintptr_t>raw & (_HUGE_PAGE - 1))) & (_HUGE_PAGE - 1)
        if head:
            munmap(raw, head)
        munmap(raw + head + size, extra - head)
        madvise(raw + head, size, MADV_HUGEPAGE)
    return raw + head


cdef inline size_t _mapping_size(char* data) noexcept nogil:
    return (<size_t*>(data - _HEADER))[0]


cdef char* _take(size_t need) noexcept nogil:
    """A cached mapping of need .. need * 9 / 8 bytes, or NULL (mutex held)."""
    global _n, _bytes
    cdef int i, j
    cdef char* base
    for i in range(_n - 1, -1, -1):     # most recently freed first: hottest
        if need <= _size[i] <= need + need // 8:
            base = _base[i]
            _bytes -= _size[i]
            _n -= 1
            for j in range(i, _n):      # keep the rest in freeing order
                _base[j] = _base[j + 1]
                _size[j] = _size[j + 1]
                _freed_at[j] = _freed_at[j + 1]
            return base
    return NULL


cdef char* _get(size_t nbytes, bint* fresh) noexcept nogil:
    """The data pointer of a block for ``nbytes`` (hot if one is cached), or NULL."""
    global _hits, _misses
    cdef size_t need = nbytes + _HEADER
    _lock()
    cdef char* base = _take(need)
    if base != NULL:
        _hits += 1
    else:
        _misses += 1
    _unlock()
    fresh[0] = base == NULL
    if base == NULL:
        need = (need + _PAGE - 1) // _PAGE * _PAGE
        base = _map(need)
        if base == NULL:
            return NULL
        (<size_t*>base)[0] = need
    return base + _HEADER


cdef int _evict(int keep, char** bases, size_t* sizes) noexcept nogil:
    """Remove the oldest mappings until at most ``keep`` remain and the byte
    bound holds; they go to ``bases`` for unmapping once the mutex is
    released.  Returns how many (mutex held)."""
    global _n, _bytes
    cdef int k = 0, j
    while _n > 0 and (_n > keep or _bytes > _max_bytes):
        bases[k] = _base[0]
        sizes[k] = _size[0]
        k += 1
        _bytes -= _size[0]
        _n -= 1
        for j in range(_n):
            _base[j] = _base[j + 1]
            _size[j] = _size[j + 1]
            _freed_at[j] = _freed_at[j + 1]
    return k


cdef void _wake_purger() noexcept nogil:
    """The purge has a new deadline (mutex held)."""
    if _start_thread(_purger_main) == 0 and _purger_waiting_forever:
        _signal()


cdef void _put(char* data) noexcept nogil:
    """A block's array died: keep its mapping for reuse, or unmap it."""
    global _n, _bytes, _purged
    cdef char* base = data - _HEADER
    cdef size_t size = _mapping_size(data)
    cdef char* victims[_SLOTS + 1]
    cdef size_t sizes[_SLOTS + 1]
    cdef int k = 0, i
    _lock()
    if _decay <= 0 or _max_entries == 0 or size > _max_bytes:
        victims[0] = base
        sizes[0] = size
        k = 1
    else:
        if _n == _SLOTS:
            k = _evict(_SLOTS - 1, victims, sizes)
        _base[_n] = base
        _size[_n] = size
        _freed_at[_n] = _now()
        _n += 1
        _bytes += size
        k += _evict(_max_entries, victims + k, sizes + k)
        _wake_purger()
    _purged += k
    _unlock()
    for i in range(k):
        munmap(victims[i], sizes[i])


cdef void heap_released() noexcept nogil:
    global _heap_freed_at
    if not _can_trim():
        return
    _lock()
    _heap_freed_at = _now()
    _wake_purger()
    _unlock()


cdef void* _purger_main(void* arg) noexcept nogil:
    """The purge thread: unmap blocks idle for ``decay``; trim glibc's heap
    once the engine has freed nothing for ``decay``."""
    global _n, _bytes, _purger_waiting_forever, _heap_freed_at, _purged, _trims
    cdef char* victims[_SLOTS]
    cdef size_t sizes[_SLOTS]
    cdef int k, i, j
    cdef double now, deadline
    cdef bint trim
    _lock()
    while True:
        now = _now()
        k = 0
        # Mappings are in freeing order: the expired ones are a prefix.
        while k < _n and _freed_at[k] + _decay <= now:
            victims[k] = _base[k]
            sizes[k] = _size[k]
            k += 1
        if k:
            for j in range(k, _n):
                _base[j - k] = _base[j]
                _size[j - k] = _size[j]
                _freed_at[j - k] = _freed_at[j]
            _n -= k
            for i in range(k):
                _bytes -= sizes[i]
            _purged += k
        trim = _heap_freed_at >= 0 and _heap_freed_at + _decay <= now
        if trim:
            _heap_freed_at = -1.0
            _trims += 1
        deadline = -1.0
        if _n:
            deadline = _freed_at[0] + _decay
        if _heap_freed_at >= 0 and (deadline < 0 or _heap_freed_at + _decay < deadline):
            deadline = _heap_freed_at + _decay
        if k or trim:
            _unlock()
            for i in range(k):
                munmap(victims[i], sizes[i])
            if trim:
                _trim_heap()
            _lock()
            continue        # the state may have changed meanwhile
        _purger_waiting_forever = deadline < 0
        _wait(deadline)
        _purger_waiting_forever = False
    return NULL


if _init() != 0:
    raise ImportError("fastgrad._alloc: pthread_atfork failed")


# ---------------------------------------------------------------- kernel results

cdef class _Block:
    """Owner (``ndarray.base``) of a buffer from this allocator."""

    def __dealloc__(self):
        if self.ptr != NULL:
            PyTraceMalloc_Untrack(_NPY_DOMAIN, <uintptr_t>self.ptr)
            _put(<char*>self.ptr)
            self.ptr = NULL


cdef object alloc_array(int nd, cnp.npy_intp* dims, int typenum):
    """Uninitialised C-contiguous float32/float64 array; a large one is a block."""
    cdef size_t nbytes = 8 if typenum == cnp.NPY_DOUBLE else 4
    cdef bint fresh
    cdef int i
    cdef _Block block
    for i in range(nd):
        nbytes *= <size_t>dims[i]
    if nbytes < _MIN_BYTES:
        return cnp.PyArray_EMPTY(nd, dims, typenum, 0)
    cdef char* data = _get(nbytes, &fresh)
    if data == NULL:
        return cnp.PyArray_EMPTY(nd, dims, typenum, 0)   # NumPy raises MemoryError
    block = _Block.__new__(_Block)
    block.ptr = data
    block.size = nbytes
    arr = cnp.PyArray_SimpleNewFromData(nd, dims, typenum, data)
    cnp.set_array_base(arr, block)
    # Traced as the array's bytes, like NumPy's own allocations.
    PyTraceMalloc_Track(_NPY_DOMAIN, <uintptr_t>data, nbytes)
    return arr


# ---------------------------------------------------------------- NumPy's allocations

# The blocks NumPy's allocations got from the handler below (guarded by the
# mutex): an open-addressing set of data pointers, so that free() and
# realloc() tell them from the default allocator's whatever size NumPy passes.
cdef uintptr_t* _live = NULL
cdef size_t _live_cap = 0, _live_used = 0, _live_tombs = 0
cdef uintptr_t _TOMB = 1


cdef inline size_t _slot_of(uintptr_t p, size_t cap) noexcept nogil:
    return ((p >> 6) * <uintptr_t>11400714819323198485ULL) & (cap - 1)


cdef bint _live_add(uintptr_t p) noexcept nogil:
    """Record ``p`` (mutex held); False if the table cannot grow."""
    global _live, _live_cap, _live_used, _live_tombs
    cdef size_t i, cap
    cdef uintptr_t* old
    cdef uintptr_t* table
    if (_live_used + _live_tombs + 1) * 2 > _live_cap:
        cap = 64 if _live_cap == 0 else (_live_cap * 2 if _live_used * 4 > _live_cap else _live_cap)
        table = <uintptr_t*>calloc(cap, sizeof(uintptr_t))
        if table == NULL:
            return False
        old = _live
        for i in range(_live_cap):
            if old[i] > _TOMB:
                _live_insert(table, cap, old[i])
        free(old)
        _live = table
        _live_cap = cap
        _live_tombs = 0
    _live_insert(_live, _live_cap, p)
    _live_used += 1
    return True


cdef inline void _live_insert(uintptr_t* table, size_t cap, uintptr_t p) noexcept nogil:
    cdef size_t i = _slot_of(p, cap)
    while table[i] > _TOMB:
        i = (i + 1) & (cap - 1)
    table[i] = p


cdef bint _live_remove(uintptr_t p) noexcept nogil:
    """Forget ``p`` if recorded (mutex held); True if it was."""
    global _live_used, _live_tombs
    if _live_used == 0:
        return False
    cdef size_t i = _slot_of(p, _live_cap)
    while _live[i] != 0:
        if _live[i] == p:
            _live[i] = _TOMB
            _live_used -= 1
            _live_tombs += 1
            return True
        i = (i + 1) & (_live_cap - 1)
    return False


cdef PyDataMemAllocator _default      # NumPy's own, for everything small
cdef PyDataMem_Handler _handler


cdef void* _np_malloc(void* ctx, size_t size) noexcept nogil:
    cdef bint fresh
    cdef char* data
    if size < _MIN_BYTES:
        return _default.malloc(_default.ctx, size)
    data = _get(size, &fresh)
    if data == NULL:
        return NULL
    _lock()
    if not _live_add(<uintptr_t>data):
        _unlock()
        _put(data)
        return _default.malloc(_default.ctx, size)
    _unlock()
    return data


cdef void* _np_calloc(void* ctx, size_t nelem, size_t elsize) noexcept nogil:
    cdef bint fresh
    cdef char* data
    if elsize != 0 and nelem > (<size_t>-1) // elsize:
        return NULL
    cdef size_t size = nelem * elsize
    if size < _MIN_BYTES:
        return _default.calloc(_default.ctx, nelem, elsize)
    data = _get(size, &fresh)
    if data == NULL:
        return NULL
    if not fresh:
        memset(data, 0, size)       # a fresh mapping is zero already
    _lock()
    if not _live_add(<uintptr_t>data):
        _unlock()
        _put(data)
        return _default.calloc(_default.ctx, nelem, elsize)
    _unlock()
    return data


cdef void _np_free(void* ctx, void* ptr, size_t size) noexcept nogil:
    cdef bint ours
    if ptr == NULL:
        return
    _lock()
    ours = _live_remove(<uintptr_t>ptr)
    _unlock()
    if ours:
        _put(<char*>ptr)
    else:
        _default.free(_default.ctx, ptr, size)


cdef void* _np_realloc(void* ctx, void* ptr, size_t new_size) noexcept nogil:
    cdef bint ours, fresh
    cdef size_t capacity
    cdef void* out
    if ptr == NULL:
        return _np_malloc(ctx, new_size)
    _lock()
    ours = _live_remove(<uintptr_t>ptr)
    if ours and new_size >= _MIN_BYTES and new_size + _HEADER <= _mapping_size(<char*>ptr):
        _live_add(<uintptr_t>ptr)       # it still fits: keep it (a slot was just freed)
        _unlock()
        return ptr
    _unlock()
    if not ours:
        return _default.realloc(_default.ctx, ptr, new_size)
    out = _np_malloc(ctx, new_size)
    if out == NULL:
        _lock()
        _live_add(<uintptr_t>ptr)       # realloc failed: the old block stays valid
        _unlock()
        return NULL
    capacity = _mapping_size(<char*>ptr) - _HEADER
    memcpy(out, ptr, new_size if new_size < capacity else capacity)
    _put(<char*>ptr)
    return out


cdef object _handler_capsule = None


cdef int _init_handler() except -1:
    global _handler_capsule, _default
    cdef PyDataMem_Handler* default = <PyDataMem_Handler*>PyCapsule_GetPointer(
        <object>PyDataMem_DefaultHandler, b"mem_handler")
    _default = default.allocator
    strncpy(_handler.name, b"fastgrad_block_cache", 127)
    _handler.version = 1
    _handler.allocator.ctx = NULL
    _handler.allocator.malloc = _np_malloc
    _handler.allocator.calloc = _np_calloc
    _handler.allocator.realloc = _np_realloc
    _handler.allocator.free = _np_free
    _handler_capsule = PyCapsule_New(&_handler, b"mem_handler", NULL)
    return 0


_init_handler()


cdef object use_block_handler():
    """Make NumPy allocate large arrays from the blocks in this context;
    returns what :func:`restore_handler` needs."""
    return cnp.PyDataMem_SetHandler(_handler_capsule)


cdef void restore_handler(object previous):
    cnp.PyDataMem_SetHandler(previous)


def buffer_cache_info():
    """Return the state of the result-buffer cache as a dict.

    Returns
    -------
    dict
        ``entries`` and ``bytes``: free blocks kept now; ``max_entries``,
        ``max_bytes``: the bounds; ``decay_ms``: how long a free block stays
        mapped; ``min_bytes``: results below it use NumPy's allocator;
        ``hits``/``misses``: large results served from the cache / freshly
        mapped; ``purged``: blocks unmapped so far; ``heap_trims``: times
        the idle purge handed glibc's free heap pages back.

    Examples
    --------
    >>> import fastgrad
    >>> fastgrad.buffer_cache_info()["decay_ms"]
    250.0
    """
    _lock()
    info = dict(entries=_n, bytes=_bytes, max_entries=_max_entries, max_bytes=_max_bytes,
                decay_ms=_decay * 1e3, min_bytes=_MIN_BYTES, hits=_hits, misses=_misses,
                purged=_purged, heap_trims=_trims)
    _unlock()
    return info


def set_buffer_cache(max_entries=None, max_bytes=None, decay_ms=None):
    """Set the bounds of the result-buffer cache and how long it keeps blocks.

    Large results (at least ``min_bytes``) reuse the blocks of arrays that
    died instead of faulting fresh pages in.  A free block is unmapped once
    it has been idle for ``decay_ms``, and glibc's free heap pages are
    handed back once the engine has freed nothing for ``decay_ms``: in a
    loop memory stays mapped and hot, and after ``del`` of a graph the
    process's RSS is back at its baseline within about ``decay_ms``.

    Parameters
    ----------
    max_entries : int, optional
        At most this many free blocks, 0..64 (0 disables the cache).
    max_bytes : int, optional
        At most this many bytes of free blocks (default 1 GiB).
    decay_ms : float, optional
        Milliseconds a free block stays mapped (default 250; the
        ``FASTGRAD_DECAY_MS`` environment variable sets it at import).  0
        unmaps blocks as soon as their array dies.

    Examples
    --------
    >>> import fastgrad
    >>> fastgrad.set_buffer_cache(decay_ms=1000)   # keep idle memory 1 s
    >>> fastgrad.set_buffer_cache(decay_ms=250)
    """
    global _max_entries, _max_bytes, _decay
    if max_entries is not None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int):
            raise TypeError(f"max_entries must be an int, not {type(max_entries).__name__}")
        if not 0 <= max_entries <= _SLOTS:
            raise ValueError(f"max_entries must be in 0..{_SLOTS}, got {max_entries}")
    if max_bytes is not None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int):
            raise TypeError(f"max_bytes must be an int, not {type(max_bytes).__name__}")
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
    if decay_ms is not None:
        decay_ms = _check_decay(decay_ms)
    cdef char* victims[_SLOTS]
    cdef size_t sizes[_SLOTS]
    cdef int k, i
    _lock()
    if max_entries is not None:
        _max_entries = max_entries
    if max_bytes is not None:
        _max_bytes = max_bytes
    if decay_ms is not None:
        _decay = decay_ms / 1e3
        if _n:
            _wake_purger()      # a new deadline for the blocks kept now
    k = _evict(_max_entries if _decay > 0 else 0, victims, sizes)
    _unlock()
    for i in range(k):
        munmap(victims[i], sizes[i])


def _check_decay(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"decay_ms must be a number of milliseconds, not "
                        f"{type(value).__name__}")
    if not 0 <= value < float("inf"):
        raise ValueError(f"decay_ms must be finite and >= 0, got {value}")
    return float(value)


def clear_buffer_cache():
    """Unmap every free block now (arrays in use are not affected)."""
    cdef char* victims[_SLOTS]
    cdef size_t sizes[_SLOTS]
    cdef int k, i
    _lock()
    k = _evict(0, victims, sizes)
    _unlock()
    for i in range(k):
        munmap(victims[i], sizes[i])


def _configure():
    import os
    setting = os.environ.get("FASTGRAD_DECAY_MS")
    if setting is None:
        return
    try:
        set_buffer_cache(decay_ms=float(setting))
    except (TypeError, ValueError) as exc:   # a bad setting must not fail the import
        import warnings
        warnings.warn(f"FASTGRAD_DECAY_MS={setting!r} ignored: {exc}", RuntimeWarning)


_configure()
