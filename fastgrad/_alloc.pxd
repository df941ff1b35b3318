# The allocator of large result arrays (fastgrad/_alloc.pyx): what the
# kernels and the engine cimport.
cimport numpy as cnp


cdef class _Block:
    """Owner (``ndarray.base``) of a buffer from this allocator."""
    cdef void* ptr
    cdef size_t size


# A new uninitialised C-contiguous array of ``typenum`` (NPY_FLOAT or
# NPY_DOUBLE); a large one reuses a hot block.
cdef object alloc_array(int nd, cnp.npy_intp* dims, int typenum)

# NumPy allocates large arrays from the blocks while the engine runs NumPy
# code (a user Function's forward/backward): ``prev = use_block_handler()``,
# then ``restore_handler(prev)``.
cdef object use_block_handler()
cdef void restore_handler(object previous)

# Memory that NumPy (glibc's heap) allocated was freed: the idle purge also
# hands free heap pages back.  Cheap; call it with or without the GIL.
cdef void heap_released() noexcept nogil
