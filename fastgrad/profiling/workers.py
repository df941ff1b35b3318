"""Measurements in fresh processes, and the implementations they measure.

Each memory measurement runs in its own Python process, so memory freed (or
cached by an allocator) by one case cannot blur the next.  A worker that
measures a peer (DeZero) must not import fastgrad's engine: importing
fastgrad loads its allocator and thread pool, and the peer's figures must
be those of a process that never saw them.  So the modules
a worker runs (this package and ``fastgrad._dezero_loader``; the
benchmark's ``fastgrad.bench.memory``) import only the standard library and
NumPy, and an isolated worker imports them with ``fastgrad`` standing as an
empty package (its ``__init__`` not run).  Once they are loaded the real
package is importable again: a fastgrad implementation or the user's code
that imports fastgrad gets all of it.
"""
import json
import os
import subprocess
import sys

from fastgrad import _dezero_loader

#: The directory holding this fastgrad package.  Workers get it first on
#: their PYTHONPATH and as their working directory, so they import this
#: fastgrad however the parent was started (a source checkout in the
#: parent's working directory would otherwise shadow an installed build).
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_PACKAGE = os.path.join(ROOT, "fastgrad")

#: The implementations a measurement can run: fastgrad's stage-2 face, its
#: full face, and DeZero 0.0.13's stage 2.
IMPLS = ("fastgrad", "fastgrad.dezero", "dezero")


def load_impl(name):
    """Return the module providing ``Variable``, ``Function``, ``no_grad``.

    ``"fastgrad"`` is this package (grads are ndarrays); ``"fastgrad.dezero"``
    its full face (grads are Variables); ``"dezero"`` is DeZero's stage 2
    (``dezero.core_simple`` from dezero 0.0.13).  Raises ImportError when the
    implementation is not installed.
    """
    if name == "fastgrad":
        import fastgrad

        return fastgrad
    if name == "fastgrad.dezero":
        import fastgrad.dezero as full

        return full
    if name == "dezero":
        return _dezero_loader.load_stage2()
    raise ValueError(f"unknown implementation {name!r}; expected one of {IMPLS}")


def available(name):
    """True when implementation ``name`` can be imported here."""
    try:
        load_impl(name)
    except ImportError:
        return False
    return True


def worker_env():
    """The environment of a worker: this process's, with :data:`ROOT` first on
    PYTHONPATH."""
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = ROOT + (os.pathsep + path if path else "")
    return env


# The worker's program: import the entry point (as an empty package's
# submodule when isolated), call it, print its result or its error as JSON.
_BOOT = r"""
import importlib, json, sys, types
spec = json.loads(sys.argv[1])
for path in spec["sys_path"]:
    if path not in sys.path:
        sys.path.append(path)
module, _, name = spec["entry"].partition(":")
if spec["isolated"]:
    package = types.ModuleType("fastgrad")
    package.__path__ = [spec["package"]]
    sys.modules["fastgrad"] = package
    entry = getattr(importlib.import_module(module), name)
    for loaded in [m for m in sys.modules if m == "fastgrad" or m.startswith("fastgrad.")]:
        del sys.modules[loaded]
else:
    entry = getattr(importlib.import_module(module), name)
try:
    result = entry(**spec["kwargs"])
except Exception as exc:
    import traceback
    result = {"error_type": type(exc).__name__, "error": str(exc),
              "traceback": traceback.format_exc()}
print(json.dumps(result))
"""


def worker_command(entry, kwargs, isolated, sys_path=()):
    """The command line of a worker calling ``entry(**kwargs)``.

    ``entry`` is ``"module:function"`` in a module that imports only the
    standard library, NumPy and such modules; ``isolated`` runs it without
    importing fastgrad's engine (for a peer); ``sys_path`` is appended to
    the worker's ``sys.path`` (where the user's code is).
    """
    spec = dict(entry=entry, kwargs=kwargs, isolated=bool(isolated),
                package=_PACKAGE, sys_path=list(sys_path))
    return [sys.executable, "-c", _BOOT, json.dumps(spec)]


# The user's exception types that cross the process boundary as themselves.
_ERRORS = {"TypeError": TypeError, "ValueError": ValueError, "ImportError": ImportError,
           "ModuleNotFoundError": ImportError, "AttributeError": AttributeError}


def run_worker(entry, kwargs, isolated, what, sys_path=()):
    """Run :func:`worker_command` in a fresh process and return its result.

    An exception in the worker is raised here: TypeError, ValueError,
    ImportError and AttributeError as themselves, anything else as
    RuntimeError with the worker's traceback.  ``what`` names the case in
    the messages.
    """
    proc = subprocess.run(worker_command(entry, kwargs, isolated, sys_path),
                          env=worker_env(), capture_output=True, text=True, cwd=ROOT)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"worker {what} failed (exit {proc.returncode}):\n"
                           f"{proc.stderr[-4000:]}")
    result = json.loads(lines[-1])
    if isinstance(result, dict) and "error_type" in result:
        kind = _ERRORS.get(result["error_type"])
        if kind is not None:
            raise kind(f"{what}: {result['error']}")
        raise RuntimeError(f"{what} raised in the worker:\n{result['traceback']}")
    return result
