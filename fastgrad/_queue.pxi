# Included by _core.pyx: the backward scheduler's priority queue.

# Backward takes functions in DeZero's order: highest generation first and,
# among equal generations, the one queued last -- the key
# (-generation, -insertion order).  In a consistent graph every function
# queued while generation g is processed has a lower generation, so keys only
# decrease: a LIFO stack per generation yields that order in O(1) a function
# (a binary heap pays log n, and its scattered accesses dominate wide graphs).
# A generation that breaks this (set by hand, or out of range) moves the
# queue into a binary heap on the same key.

cdef enum:
    _MAX_BUCKETS = 1 << 24     # generations beyond this use the binary heap

cdef struct _Entry:
    Py_ssize_t gen
    unsigned long long order
    PyObject* func              # a strong reference, NULL once taken (buckets)
    Py_ssize_t next             # the entry below in the same bucket

cdef struct _Queue:
    _Entry* items               # buckets: every entry queued; heap: the heap
    Py_ssize_t n
    Py_ssize_t cap
    Py_ssize_t* heads           # top entry per generation (-1: empty); NULL: heap
    Py_ssize_t cur              # buckets: no queued generation is above this
    Py_ssize_t live
    unsigned long long counter


cdef inline bint _before(_Entry* a, _Entry* b) noexcept:
    return a.gen > b.gen or (a.gen == b.gen and a.order > b.order)


cdef int _queue_init(_Queue* q, Py_ssize_t top_gen) except -1:
    q.items = NULL
    q.heads = NULL
    q.n = q.cap = q.live = 0
    q.counter = 0
    q.cur = top_gen
    if 0 <= top_gen < _MAX_BUCKETS:
        q.heads = <Py_ssize_t*>malloc((top_gen + 1) * sizeof(Py_ssize_t))
        if q.heads == NULL:
            raise MemoryError()
        for i in range(top_gen + 1):
            q.heads[i] = -1
    return 0


cdef void _queue_free(_Queue* q) noexcept:
    for i in range(q.n):
        if q.items[i].func != NULL:
            Py_DECREF(<object>q.items[i].func)
    free(q.items)
    free(q.heads)


cdef int _append(_Queue* q, _Entry* e) except -1:
    cdef _Entry* grown
    if q.n == q.cap:
        q.cap = 64 if q.cap == 0 else 2 * q.cap
        grown = <_Entry*>realloc(q.items, q.cap * sizeof(_Entry))
        if grown == NULL:
            raise MemoryError()
        q.items = grown
    q.items[q.n] = e[0]
    q.n += 1
    return 0


cdef void _sift_up(_Queue* q, Py_ssize_t i) noexcept:
    cdef _Entry e = q.items[i]
    cdef Py_ssize_t parent
    while i > 0:
        parent = (i - 1) >> 1
        if not _before(&e, &q.items[parent]):
            break
        q.items[i] = q.items[parent]
        i = parent
    q.items[i] = e


cdef void _sift_down(_Queue* q, Py_ssize_t i) noexcept:
    cdef _Entry e = q.items[i]
    cdef Py_ssize_t child
    while True:
        child = 2 * i + 1
        if child >= q.n:
            break
        if child + 1 < q.n and _before(&q.items[child + 1], &q.items[child]):
            child += 1
        if not _before(&q.items[child], &e):
            break
        q.items[i] = q.items[child]
        i = child
    q.items[i] = e


cdef void _to_heap(_Queue* q) noexcept:
    # Keep the entries not yet taken, then heapify them in place.
    cdef Py_ssize_t i, k = 0
    for i in range(q.n):
        if q.items[i].func != NULL:
            q.items[k] = q.items[i]
            k += 1
    q.n = k
    free(q.heads)
    q.heads = NULL
    for i in range(k // 2 - 1, -1, -1):
        _sift_down(q, i)


cdef int _queue_push(_Queue* q, Function f) except -1:
    cdef _Entry e
    q.counter += 1
    e.gen = f._gen
    e.order = q.counter
    e.func = <PyObject*>f
    e.next = -1
    if q.heads != NULL and not (0 <= e.gen <= q.cur):
        _to_heap(q)
    if q.heads != NULL:
        e.next = q.heads[e.gen]
        q.heads[e.gen] = q.n
        _append(q, &e)
    else:
        _append(q, &e)
        _sift_up(q, q.n - 1)
    Py_INCREF(f)
    q.live += 1
    return 0


cdef PyObject* _queue_pop(_Queue* q) noexcept:
    """Take the first function; the caller owns the returned reference."""
    cdef PyObject* f
    cdef Py_ssize_t top
    q.live -= 1
    if q.heads != NULL:
        while q.heads[q.cur] == -1:
            q.cur -= 1
        top = q.heads[q.cur]
        q.heads[q.cur] = q.items[top].next
        f = q.items[top].func
        q.items[top].func = NULL
        return f
    f = q.items[0].func
    q.n -= 1
    if q.n > 0:
        q.items[0] = q.items[q.n]
        _sift_down(q, 0)
    return f


