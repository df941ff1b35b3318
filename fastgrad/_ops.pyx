"""Row-wise kernels: softmax, softmax cross entropy, the bias add and ``sum_to``
along the rows of a C-contiguous (N, C) float32/float64 batch.

Every function has the signature and semantics of its twin in
:mod:`fastgrad._reference` (the plain NumPy expression): same result dtype,
shape, errors and bits (NumPy's order of operations, its own exp and log
loops); inputs the kernels do not take go to the twin.  Elementwise math is
the evaluator's (``fastgrad/_eval.pyx``).
"""
cimport numpy as cnp
from cython cimport floating
from libc.stdlib cimport free, malloc
from libc.string cimport memcmp

import numpy as np

from fastgrad import _reference as _ref
from fastgrad._arrays cimport float_type

cnp.import_array()

__all__ = ["softmax", "softmax_cross_entropy", "softmax_cross_entropy_backward",
           "sum_to", "add_bias"]


cdef inline int _ftype(object a) noexcept:
    return float_type(a, True)


cdef inline bint _same_shape(cnp.ndarray a, cnp.ndarray b) noexcept:
    cdef int nd = cnp.PyArray_NDIM(a)
    return nd == cnp.PyArray_NDIM(b) and (
        nd == 0 or memcmp(cnp.PyArray_DIMS(a), cnp.PyArray_DIMS(b),
                          nd * sizeof(cnp.npy_intp)) == 0)


include "_ufunc_loops.pxi"
include "_rowwise.pxi"
