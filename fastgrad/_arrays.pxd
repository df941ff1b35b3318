# Array checks the compiled kernels make before a loop touches memory
# (inline: cimported by _eval, _ops and _conv; no module of its own).
cimport numpy as cnp


cdef inline int float_type(object a, bint contiguous) noexcept:
    """NPY_FLOAT or NPY_DOUBLE if ``a`` is an exact, aligned, native-order
    float32/float64 ndarray (and C-contiguous, if asked), else -1."""
    cdef cnp.ndarray arr
    cdef int t
    if not cnp.PyArray_CheckExact(a):
        return -1
    arr = <cnp.ndarray>a
    t = cnp.PyArray_TYPE(arr)
    if ((t == cnp.NPY_DOUBLE or t == cnp.NPY_FLOAT) and cnp.PyArray_ISALIGNED(arr)
            and cnp.PyArray_ISNOTSWAPPED(arr)
            and (not contiguous or cnp.PyArray_IS_C_CONTIGUOUS(arr))):
        return t
    return -1
