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
    # -fno-math-errno: sqrt() need not set errno, so it inlines and
    # vectorizes (IEEE results unchanged).
    extra_compile_args=(["-O0", "-g", "-UNDEBUG"] if DEBUG else ["-O3"])
    + ["-ffp-contract=off", "-fno-math-errno"],
)

extensions = [
    Extension(f"fastgrad.{name}", [f"fastgrad/{name}.pyx"], **common)
    # _stream: fastgrad-bench's memory-bandwidth probe, on the same thread pool.
    # _trace: the tracer, on top of the engine (cimports _core.pxd).
    for name in ("_alloc", "_threads", "_eval", "_core", "_trace", "_ops", "_conv", "_stream")
]

setup(ext_modules=cythonize(extensions, compiler_directives=directives))
