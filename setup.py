"""Build the compiled parts of fastgrad.

`pip install .` compiles the extensions; a failed compile fails the install
(there is deliberately no pure-Python fallback install).  Set
FASTGRAD_DEBUG_BUILD=1 to compile with Cython's bounds and wraparound checks on
(and C assertions kept) for the debug test run in .ci/run.
"""
import os

import runpy

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

# The op table's classes and C code are generated, then compiled with _core.
runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                            "fastgrad", "_codegen.py"))["write_pxi"]()

DEBUG = os.environ.get("FASTGRAD_DEBUG_BUILD", "0") not in ("", "0")

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,  # IEEE results (inf, nan) for float division, as NumPy gives
    "embedsignature": True,
}

common = dict(
    include_dirs=[np.get_include()],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_2_0_API_VERSION")],
    # No FMA contraction: results stay bit-identical to NumPy's and DeZero's.
    extra_compile_args=(["-O0", "-g", "-UNDEBUG"] if DEBUG else ["-O3"]) + ["-ffp-contract=off"],
)

extensions = [
    Extension("fastgrad._alloc", ["fastgrad/_alloc.pyx"], **common),
    Extension("fastgrad._threads", ["fastgrad/_threads.pyx"], **common),
    # fastgrad-bench's memory-bandwidth probe, on the same thread pool.
    Extension("fastgrad._stream", ["fastgrad/_stream.pyx"], **common),
    Extension("fastgrad._core", ["fastgrad/_core.pyx"], **common),
    # Convolution and pooling kernels (single-threaded: no OpenMP).
    Extension("fastgrad._conv", ["fastgrad/_conv.pyx"], **common),
    # OpenMP: the STREAM probe's two-thread mode and the opt-in two-thread
    # split of large loops (off by default, see _PAR_MIN in _ops.pyx).
    Extension(
        "fastgrad._ops", ["fastgrad/_ops.pyx"],
        include_dirs=common["include_dirs"],
        define_macros=common["define_macros"],
        # -fno-math-errno: sqrt() need not set errno, so it inlines and
        # vectorizes (IEEE results unchanged).
        extra_compile_args=common["extra_compile_args"] + ["-fopenmp", "-fno-math-errno"],
        extra_link_args=["-fopenmp"],
    ),
]

setup(ext_modules=cythonize(extensions, compiler_directives=directives))
