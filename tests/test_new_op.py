"""Adding an elementwise op is its row; adding a formula function is its entry.

A throw-away copy of the table's sources gets one new formula function
(``log1p``) and one new row using it; the build's generator then renders,
with no other edit, everything the engine is made of: the Function class
and its lowercase function (both faces), the evaluator programs of its
forward and of each backward, the NumPy formulas, the C scalar path, the
evaluator's instruction set and the type stubs.
"""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import fastgrad

SRC = os.path.dirname(os.path.abspath(fastgrad.__file__))

# The one entry, inserted into _formulas.FUNCTIONS ...
NEW_FUNCTION = ('    "exp": Fn(',
                '    "log1p": Fn("ufunc1", "log(1 + a), accurate near 0", "log1p", "log1p"),\n'
                '    "exp": Fn(')
# ... and the one row, inserted into _optable.OPS.
NEW_ROW = ('    Op("exp", "exp(x)"',
           '    Op("log1p", "log1p(x)", ("gy / (1 + x)",), domain=(-0.5, 2.0),\n'
           '       doc="log(1 + x), accurate near 0"),\n'
           '    Op("exp", "exp(x)"')


def insert(path, edit):
    anchor, text = edit
    source = path.read_text()
    assert source.count(anchor) == 1, anchor
    path.write_text(source.replace(anchor, text))


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    d = tmp_path_factory.mktemp("table")
    for name in ("_formulas.py", "_optable.py", "_codegen.py", "_core.pyi"):
        shutil.copy(os.path.join(SRC, name), d / name)
    insert(d / "_formulas.py", NEW_FUNCTION)
    insert(d / "_optable.py", NEW_ROW)
    proc = subprocess.run([sys.executable, "_codegen.py"], cwd=d, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    stubs = subprocess.run([sys.executable, "_codegen.py", "--stubs"], cwd=d,
                           capture_output=True, text=True, timeout=120)
    assert stubs.returncode == 0, stubs.stderr
    return {name: (d / name).read_text() for name in
            ("_optable.pxi", "_opcodes.pxi", "_numpy_ops.py", "_core.pyi")} | {
                "stubs": stubs.stdout}


def test_the_row_renders_class_functions_and_programs(generated):
    pxi = generated["_optable.pxi"]
    assert "cdef class Log1p(_TableOp):" in pxi
    assert "def log1p(x):" in pxi and "def _full_log1p(x):" in pxi
    assert "cdef Program _P_log1p_f = Program(" in pxi
    assert "cdef Program _P_log1p_b1 = Program(" in pxi
    assert "'log1p': _full_log1p" in pxi                   # the full face's copy
    assert "_c_unary(UF_LOG1P, " in pxi                    # the C scalar path
    assert "_init_unary(UF_LOG1P, _libm_log1p)" in pxi
    assert "UF_LOG1P" in generated["_opcodes.pxi"]
    assert "'log1p'" in generated["_opcodes.pxi"]
    assert "def log1p(x: _Operand) -> Variable: ..." in generated["stubs"]
    assert "class Log1p(Function):" in generated["stubs"]
    assert generated["stubs"] in generated["_core.pyi"]     # the build wrote them


def test_the_rows_numpy_formulas_are_right(generated):
    ns = {}
    exec(compile(generated["_numpy_ops.py"], "_numpy_ops.py", "exec"), ns)
    x = np.linspace(-0.5, 2.0, 11)
    np.testing.assert_array_equal(ns["log1p_forward"](x), np.log1p(x))
    gy = np.full(11, 2.0)
    (g,) = ns["log1p_backward"](gy, None, x, 1)
    np.testing.assert_allclose(g, 2.0 / (1 + x))


def test_the_generated_cython_parses(generated):
    # The rendered class is valid Cython: every line the generator wrote for
    # the row parses in Cython's own parser.
    cython = pytest.importorskip("Cython.Compiler.TreeFragment")
    start = generated["_optable.pxi"].index("cdef class Log1p(_TableOp):")
    end = generated["_optable.pxi"].index("\ndef log1p(x):")
    cython.parse_from_strings("log1p_row", generated["_optable.pxi"][start:end])
