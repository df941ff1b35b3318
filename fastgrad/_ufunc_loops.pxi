# Included by _core.pyx and _ops.pyx: NumPy's own inner loops, which the
# kernels call on their buffers so that results are NumPy's bits.

cnp.import_ufunc()

ctypedef void (*_ufunc_loop)(char**, cnp.npy_intp*, cnp.npy_intp*, void*) noexcept nogil


cdef int _find_loop(cnp.ufunc uf, char typenum, _ufunc_loop* loop, void** data) except -1:
    """``uf``'s inner loop with every operand of ``typenum`` (NPY_DOUBLE ...)."""
    cdef int k, j, nargs = uf.nargs
    for k in range(uf.ntypes):
        for j in range(nargs):
            if uf.types[nargs * k + j] != typenum:
                break
        else:
            loop[0] = <_ufunc_loop>uf.functions[k]
            data[0] = uf.data[k]
            return 0
    raise ImportError(f"fastgrad: NumPy's {uf.__name__} has no loop for type {typenum}")
