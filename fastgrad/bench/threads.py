"""Thread settings: every peer computes with the same number of threads.

A setting is a thread count applied to every library that can run a
computation on several threads, in the process that times it:

* fastgrad's native pool: ``fastgrad.set_num_threads``;
* NumPy's BLAS (the matrix products of fastgrad, DeZero, autograd and the
  NumPy peer): ``threadpoolctl``, which talks to the BLAS library loaded in
  the process (OpenBLAS, MKL, BLIS), the only way to change its pool after
  NumPy is imported; NumPy's own loops are single-threaded;
* PyTorch: ``torch.set_num_threads`` (its intra-op pool: OpenMP and its BLAS);
  its inter-op pool runs nothing in these eager workloads and is set to 1
  once, before first use, since it cannot change after;
* JAX: XLA's CPU runtime sizes its pools when jax is imported, so the jax
  peers run in a child process per setting (see ``peers.child_env``): at
  one thread with ``--xla_cpu_multi_thread_eigen=false``; at more, with
  XLA's own thread count, which is stated under the tables.

The applied state is read back from each library and recorded with every
measured cell.
"""
import os
import sys

INSTALL = "pip install threadpoolctl (or pip install '.[bench]')"


class Unsupported(Exception):
    """A thread setting cannot be applied; the message says how to fix it."""


def available():
    """Cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def parse(text):
    """``"1,all"`` -> ``[1, <cores>]``: ints >= 1 or ``all``, duplicates
    (after resolving ``all``) dropped, order kept; ValueError otherwise."""
    out = []
    for item in (t.strip() for t in text.split(",")):
        if item == "all":
            n = available()
        else:
            try:
                n = int(item)
            except ValueError:
                raise ValueError(f"not a thread count: {item!r} (an int >= 1 or 'all')") from None
            if n < 1:
                raise ValueError(f"thread count must be >= 1: {item!r}")
        if n not in out:
            out.append(n)
    if not out:
        raise ValueError("no thread setting given")
    return out


def require_blas_control():
    """Import threadpoolctl, or raise :class:`Unsupported` saying how to
    install it: without it NumPy's BLAS keeps its own thread count and the
    settings would not be the same for every peer."""
    try:
        import threadpoolctl
    except ImportError as exc:
        raise Unsupported(f"fastgrad-bench sets NumPy's BLAS threads with threadpoolctl, "
                          f"which cannot be imported ({exc}); {INSTALL}") from None
    return threadpoolctl


def apply(n):
    """Set every loaded library of this process to ``n`` threads; return
    what each reports afterwards (``{"fastgrad": 2, "blas": [2], ...}``)."""
    state = {}
    fastgrad = sys.modules.get("fastgrad")
    if fastgrad is not None and hasattr(fastgrad, "set_num_threads"):
        fastgrad.set_num_threads(n)
        state["fastgrad"] = fastgrad.get_num_threads()
    ctl = require_blas_control().ThreadpoolController().select(user_api="blas")
    ctl.limit(limits=n)
    state["blas"] = [lib.num_threads for lib in ctl.lib_controllers]
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
        state["torch"] = torch.get_num_threads()
        state["torch_interop"] = torch.get_num_interop_threads()
    if "jax" in sys.modules:
        state["xla_flags"] = os.environ.get("XLA_FLAGS", "")
    return state


def xla_env(n):
    """The environment a jax child needs for ``n`` threads."""
    env = {"JAX_PLATFORMS": "cpu"}
    if n == 1:
        flags = os.environ.get("XLA_FLAGS", "")
        env["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false").strip()
    return env
