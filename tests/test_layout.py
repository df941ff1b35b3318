"""The package's layout: every module imports on its own, none is too long,
and the vocabulary's stubs say what is there.

* Each module of ``fastgrad`` is imported alone, in a fresh interpreter
  (``python -c "import fastgrad.x.y"``): an import cycle that only works in
  one order, or a module that leans on another having been imported first,
  fails here.
* No product module (``fastgrad/**/*.py``, ``*.pyx``, ``*.pxi``; generated
  files aside) is over :data:`MAX_LINES` lines.
* No Python module imports fastgrad inside a function (where a cycle
  hides from the first check), except those in :data:`FUNCTION_IMPORTS`.
* The stubs of ``fastgrad.functions`` list exactly its names, with the
  runtime's parameters.
"""
import ast
import concurrent.futures
import inspect
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import fastgrad
import fastgrad.functions
from fastgrad._optable import OPS

PACKAGE = Path(fastgrad.__file__).resolve().parent


# ---------------------------------------------------------------------------
# Every module imports alone
# ---------------------------------------------------------------------------
def _modules():
    names = [fastgrad.__name__]
    for info in pkgutil.walk_packages(fastgrad.__path__, prefix="fastgrad."):
        # A __main__ module is a program: importing it runs the command.
        if info.name.rsplit(".", 1)[-1] != "__main__":
            names.append(info.name)
    return sorted(names)


MODULES = _modules()


@pytest.fixture(scope="module")
def isolated_imports(tmp_path_factory):
    """module name -> (exit code, stderr) of ``import module`` in a fresh
    interpreter, run outside the source tree (two at a time)."""
    cwd = tmp_path_factory.mktemp("imports")

    def run(name):
        proc = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=cwd,
                              capture_output=True, text=True, timeout=300)
        return name, (proc.returncode, proc.stderr)

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(run, MODULES))


def test_the_vocabulary_and_the_engine_do_not_import_the_full_face(tmp_path):
    # The full face registers itself with the layers below it; importing
    # them (and calling them on arrays) must not pull it in.
    code = ("import sys, numpy as np, fastgrad, fastgrad.functions as F\n"
            "F.average(np.ones(3)); F.reshape(np.ones(6), (6,)); F.accuracy(np.eye(2), [0, 1])\n"
            "print(sorted(m for m in sys.modules if m.startswith('fastgrad.dezero')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "[]"


def test_the_walk_finds_the_package():
    for name in ("fastgrad._core", "fastgrad.functions.tensor", "fastgrad.dezero.layers",
                 "fastgrad.profiling.graph", "fastgrad.bench.memory"):
        assert name in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_module_imports_alone_in_a_fresh_interpreter(name, isolated_imports):
    code, stderr = isolated_imports[name]
    assert code == 0, f"python -c 'import {name}' failed:\n{stderr[-3000:]}"


# ---------------------------------------------------------------------------
# No import of fastgrad hidden in a function
# ---------------------------------------------------------------------------
# An import inside a function hides a cycle, or an import of a layer above,
# from the test above.  The ones that stand, and why (Python modules; the
# engine's .pyx/.pxi files are outside this check):
FUNCTION_IMPORTS = {
    # A worker imports the implementation it measures only when asked: a
    # peer's worker must never import fastgrad.
    ("profiling/workers.py", "fastgrad"),
    ("profiling/workers.py", "fastgrad.dezero"),
    # The benchmark's package stays light until its CLI runs.
    ("bench/__init__.py", ".cli"),
    ("bench/cli.py", ".memory"),
    ("bench/report.py", ".memory"),
    ("bench/report.py", "fastgrad"),
    ("bench/measure.py", "fastgrad"),
    # The bandwidth probe loads the engine only when it runs.
    ("bench/roofline.py", "fastgrad"),
}


def _function_imports(path):
    found = set()
    for fn in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                mods = ["." * node.level + (node.module or "")]
            else:
                continue
            found |= {m for m in mods if m.startswith((".", "fastgrad"))}
    return found


def test_no_fastgrad_import_is_hidden_in_a_function():
    found = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        found |= {(rel, m) for m in _function_imports(path)}
    assert found <= FUNCTION_IMPORTS, sorted(found - FUNCTION_IMPORTS)
    assert FUNCTION_IMPORTS <= found, f"no longer imported in a function: {sorted(FUNCTION_IMPORTS - found)}"


# ---------------------------------------------------------------------------
# No module over MAX_LINES lines
# ---------------------------------------------------------------------------
MAX_LINES = 800


def _product_files():
    out = {}
    for path in sorted(PACKAGE.rglob("*")):
        if path.suffix not in (".py", ".pyx", ".pxi") or "__pycache__" in path.parts:
            continue
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
        # Build products (the op table's rendering) say so on their first line.
        if lines and "generated" in lines[0].lower() and "do not edit" in lines[0].lower():
            continue
        out[path.relative_to(PACKAGE).as_posix()] = len(lines)
    return out


FILES = _product_files()


def test_no_product_module_is_over_the_limit():
    over = {name: n for name, n in FILES.items() if n > MAX_LINES}
    assert not over, f"modules over {MAX_LINES} lines: {over}"


# ---------------------------------------------------------------------------
# The vocabulary's stubs
# ---------------------------------------------------------------------------
STUBS = PACKAGE / "functions"


def _stub_names(path):
    """Public names a stub declares or re-exports, and its defs' parameters."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names, params = set(), {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
            if isinstance(node, ast.FunctionDef):
                params[node.name] = [a.arg for a in node.args.args]
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.name == "*":
                    star = STUBS / (node.module.rsplit(".", 1)[-1] + ".pyi")
                    names |= _stub_names(star)[0]
                elif alias.asname is not None:      # a stub re-exports "x as y"
                    names.add(alias.asname)
    return {n for n in names if not n.startswith("_")}, params


def _table_names():
    out = set()
    for op in OPS:
        out |= {op.class_name, op.name} | ({op.reverse} if op.reverse else set())
    return out


def test_elementwise_stub_lists_the_op_table():
    names, _ = _stub_names(STUBS / "elementwise.pyi")
    assert names == _table_names() == set(fastgrad.functions.elementwise.__all__)


def test_functions_stub_lists_exactly_the_public_names():
    names, _ = _stub_names(STUBS / "__init__.pyi")
    assert names == set(fastgrad.functions.__all__) | {"Function"}


def test_functions_stub_signatures_match_the_runtime():
    _, params = _stub_names(STUBS / "__init__.pyi")
    for name, stub_params in params.items():
        runtime = list(inspect.signature(getattr(fastgrad.functions, name)).parameters)
        assert stub_params == runtime, name


def test_the_vocabulary_is_one_namespace_of_its_modules():
    F = fastgrad.functions
    modules = (F.elementwise, F.tensor, F.reductions, F.matrix, F.activations, F.losses,
               F.networks)
    seen = {}
    for module in modules:
        for name in module.__all__:
            assert name not in seen, f"{name} in {seen.get(name)} and {module.__name__}"
            seen[name] = module.__name__
            assert getattr(F, name) is getattr(module, name)
    assert sorted(seen) == sorted(F.__all__)


def test_no_module_shadows_a_function_name():
    # A submodule named like a function (fastgrad.functions.sum) would
    # replace the function in the package's namespace when imported.
    pkg = os.path.dirname(fastgrad.functions.__file__)
    for info in pkgutil.iter_modules([pkg]):
        assert info.name not in fastgrad.functions.__all__, info.name
