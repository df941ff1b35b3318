"""Compiled elementwise kernels (placeholder: the NumPy reference until the kernels land)."""
from fastgrad._reference import *  # noqa
