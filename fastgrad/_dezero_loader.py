"""The one loader of DeZero 0.0.13, the framework fastgrad is compared with.

The tests load it as their oracle, the benchmark as a peer and the memory
tools as a peer too, in worker processes that must not import fastgrad's
engine; so this module imports only the standard library and NumPy.

DeZero 0.0.13 uses ``np.int`` and the other aliases NumPy 2 removed.  They
exist only while DeZero's modules are imported, so no other code ever sees
them; a few of DeZero's utilities read ``np.int`` when called, and need
:func:`numpy_aliases` around the call.
"""
import contextlib
import importlib
import os

import numpy as np

#: How to install the reference.
INSTALL = "pip install dezero==0.0.13 matplotlib"

_ALIASES = {"int": int, "float": float, "bool": bool, "object": object,
            "complex": complex, "str": str}


@contextlib.contextmanager
def numpy_aliases():
    """Alias ``np.int`` & co. to the builtins for the duration of the block.

    Names NumPy defines itself are left alone; the aliases added are removed
    on exit.
    """
    added = [name for name in _ALIASES if name not in np.__dict__]
    for name in added:
        setattr(np, name, _ALIASES[name])
    try:
        yield
    finally:
        for name in added:
            np.__dict__.pop(name, None)


def import_dezero(module="dezero"):
    """Import a module of DeZero 0.0.13 (``"dezero"``, ``"dezero.functions"`` ...).

    The package is imported first, as DeZero's own modules expect.

    Raises
    ------
    ImportError
        DeZero (or matplotlib, which its package imports) is not installed;
        the message says what to install.

    Examples
    --------
    >>> F = import_dezero("dezero.functions")      # doctest: +SKIP
    """
    # DeZero's datasets import pyplot: never ask for a display.
    os.environ.setdefault("MPLBACKEND", "Agg")
    try:
        with numpy_aliases():
            importlib.import_module("dezero")
            return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"dezero 0.0.13 is not importable ({exc}); {INSTALL}") from exc


def load_stage2():
    """DeZero's stage-2 core, ``dezero.core_simple``, with its operators installed.

    Importing the package wires the operators to ``dezero.core``'s Variable;
    ``core_simple``'s own Variable needs its ``setup_variable()``.
    """
    core = import_dezero("dezero.core_simple")
    core.setup_variable()
    return core
