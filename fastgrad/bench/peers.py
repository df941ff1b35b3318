"""Peer detection: each peer is imported lazily and reported as skipped with a
reason when it cannot be used.  Nothing here is needed by the library itself.
"""
import importlib
import os

import numpy as np

# The order is the column order of every table.
PEERS = ("numpy", "fastgrad", "fastgrad-pure", "dezero", "torch", "autograd")
REFERENCE = "fastgrad"


class PeerUnavailable(Exception):
    """Raised when a peer cannot be imported; the message is the reason."""


_cache = {}


def _load_fastgrad():
    try:
        fg = importlib.import_module("fastgrad")
    except Exception as exc:  # a broken build must not crash the benchmark
        raise PeerUnavailable(f"import fastgrad failed: {exc!r}") from None
    if not hasattr(fg, "Variable"):
        raise PeerUnavailable("fastgrad has no Variable (engine not built yet?)")
    return fg


def _load_dezero():
    """Return ``dezero.core_simple`` (DeZero stage 2), ready to use.

    dezero 0.0.13's package __init__ imports matplotlib and uses ``np.int``,
    removed in NumPy 1.24.  The aliases are added for the import only and
    removed again so that no other peer ever sees them.
    """
    aliases = {"int": int, "float": float, "bool": bool, "object": object,
               "complex": complex, "str": str}
    added = [name for name in aliases if name not in np.__dict__]
    os.environ.setdefault("MPLBACKEND", "Agg")  # no display needed
    for name in added:
        setattr(np, name, aliases[name])
    try:
        core = importlib.import_module("dezero.core_simple")
    except Exception as exc:
        raise PeerUnavailable(f"import dezero failed: {exc!r}") from None
    finally:
        for name in added:
            np.__dict__.pop(name, None)
    # The book's stage-2 __init__ calls this; the installed package wires up
    # dezero.core instead, so the simple core needs it explicitly.
    core.setup_variable()
    return core


def _load_torch():
    try:
        return importlib.import_module("torch")
    except Exception as exc:
        raise PeerUnavailable(f"import torch failed: {exc!r}") from None


def _load_autograd():
    try:
        ag = importlib.import_module("autograd")
        ag_np = importlib.import_module("autograd.numpy")
    except Exception as exc:
        raise PeerUnavailable(f"import autograd failed: {exc!r}") from None
    return {"autograd": ag, "np": ag_np}


_LOADERS = {
    "numpy": lambda: np,
    "fastgrad": _load_fastgrad,
    # fastgrad-pure runs in a subprocess with FASTGRAD_PURE=1; within that
    # process it is simply "fastgrad".
    "fastgrad-pure": _load_fastgrad,
    "dezero": _load_dezero,
    "torch": _load_torch,
    "autograd": _load_autograd,
}


def load(name):
    """Import peer ``name`` once; raise :class:`PeerUnavailable` if missing."""
    if name not in _cache:
        try:
            _cache[name] = ("ok", _LOADERS[name]())
        except PeerUnavailable as exc:
            _cache[name] = ("skip", str(exc))
    status, value = _cache[name]
    if status == "skip":
        raise PeerUnavailable(value)
    return value


def version(name):
    """Best-effort version string of an importable peer, else None."""
    dist = {"fastgrad-pure": "fastgrad"}.get(name, name)
    try:
        from importlib.metadata import version as dist_version
        return dist_version(dist)
    except Exception:
        pass
    try:
        return getattr(importlib.import_module(dist), "__version__", None)
    except Exception:
        return None
