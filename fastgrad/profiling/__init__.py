"""Memory profiling of autodiff graphs, for either face of fastgrad.

* :func:`graph_report` -- what the graph behind a live output keeps in
  memory: how many functions and variables, and the bytes each function
  keeps alive (outputs, inputs saved for backward, grads), largest first.
* :func:`profile` (and :func:`profile_shapes`) -- your function under
  backprop, ``no_grad()`` and ``retain_grad=True``, each in a fresh process:
  peak, held while the output lives and after ``del``, with the savings.
  From the shell: ``python -m fastgrad.profiling profile module:function
  --shape 1000,1000``.

The instruments are in :mod:`fastgrad.profiling.probes` (tracemalloc's
NumPy domain for exact array bytes, RSS, page faults) and the fresh-process
machinery in :mod:`fastgrad.profiling.workers`; the benchmark's ``memory``
suite (fastgrad against DeZero on a chain of squares, ``fastgrad.bench.memory``)
measures with them too.  This package imports only the standard library and
NumPy, so a worker can measure a peer without importing fastgrad's engine.
"""
import argparse
import sys

from fastgrad.profiling.graph import GraphReport, OpMemory, graph_report
from fastgrad.profiling.profiler import (
    PROFILE_MODES, ModeMemory, Profile, profile, profile_main, profile_shapes,
)

__all__ = ["graph_report", "GraphReport", "OpMemory", "profile", "profile_shapes",
           "Profile", "ModeMemory", "PROFILE_MODES", "main"]


def main(argv=None):
    """Command-line entry point of ``python -m fastgrad.profiling``.

    ``python -m fastgrad.profiling profile module:function --shape 1000,1000
    ...`` profiles your function (``--help`` after ``profile`` lists the
    options).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "profile":
        return profile_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="python -m fastgrad.profiling",
        description="Memory profiling of autodiff graphs.  Commands: "
                    "'profile module:function --shape N,M ...' measures your "
                    "function under backprop, no_grad() and retain_grad=True, "
                    "each in a fresh process (see 'profile --help').  The "
                    "benchmark of fastgrad against DeZero is 'fastgrad-bench "
                    "memory' (or python -m fastgrad.bench.memory).")
    parser.add_argument("command", choices=["profile"], help="what to run")
    parser.parse_args(argv[:1])     # exits: "profile" was handled above
