"""Memory of fastgrad against DeZero: the benchmark's ``memory`` suite.

The workload: ``depth`` squares of a float64 array ``x`` of ``size``
elements (``y = y ** 2``), with one array ``A = x.nbytes``, run three ways:

* ``backprop``     forward, then ``y.backward()`` with ``y`` still alive;
* ``retain_grad``  the same with ``y.backward(retain_grad=True)``;
* ``no_grad``      forward only, under ``no_grad()``.

Each (implementation, workload) case runs in a fresh process (DeZero's
without importing fastgrad: :mod:`fastgrad.profiling.workers`), so memory
freed or cached in one case cannot pollute the next.  The figures are
relative to a baseline taken after ``x`` exists (so ``x`` itself is not
counted), with the instruments of :mod:`fastgrad.profiling.probes`:

* ``peak_bytes``/``held_bytes`` -- tracemalloc: exact bytes.  ``held`` is
  NumPy's tracemalloc domain only (array buffers), measured after
  forward(+backward) with the output alive; ``peak`` is tracemalloc's peak
  over both domains (there is no per-domain peak), so it includes the few
  KiB of Python objects of the graph.
* ``freed_bytes`` -- NumPy-domain bytes still traced after ``del y`` and
  ``x.cleargrad()`` with the cyclic GC disabled (0 when refcounting frees
  the graph).
* ``rss_*_bytes`` -- process RSS as a second opinion (peak from the kernel's
  high-water mark, reset before the workload); ``rss_freed_bytes`` is read
  once fastgrad's idle purge has run (``decay_ms`` after ``del``: freed
  memory stays mapped that long for reuse).
* ``page_faults`` -- ``ru_minflt`` delta over one forward(+backward), the
  median of ``FAULT_RUNS`` runs in the worker (``page_faults_runs``), with
  the system's transparent-huge-page setting; ``page_faults_4k`` is one more
  run with huge pages disabled for the worker, which is deterministic: with
  A above glibc's 32 MiB mmap threshold every array is a fresh mapping, so
  it is A / 4096 faults per array written.

``fastgrad-bench memory`` runs it as a suite (sizes by tier);
``python -m fastgrad.bench.memory [--size N] [--depth D] [--json PATH]
[--plot PNG]`` runs one size and can plot RSS over time.  Only the standard
library and NumPy are imported at module level; psutil, memory_profiler and
matplotlib (``--plot``) and DeZero (the peer) are optional.
"""
import argparse
import gc
import json
import subprocess
import sys
import time
import tracemalloc

import numpy as np

from fastgrad.profiling import probes, workers

MiB = 1 << 20
WORKLOADS = ("backprop", "no_grad", "retain_grad")
PEERS = ("dezero",)
#: ``python -m fastgrad.bench.memory`` defaults: A = 76 MiB, above glibc's
#: largest mmap threshold (32 MiB), so every array is a mapping of its own.
DEFAULT_SIZE = 10**7
DEFAULT_DEPTH = 10
#: forward(+backward) runs whose median is the reported page-fault count.
FAULT_RUNS = 5

# Workers run measure (below).
_ENTRY = "fastgrad.bench.memory:measure"


def _log(msg):
    print(msg, file=sys.stderr, flush=True)


def squares(x, depth):
    """``depth`` successive squares of ``x``: each output is one more array."""
    y = x
    for _ in range(depth):
        y = y ** 2
    return y


def run_workload(impl, workload, x, depth):
    """Run ``workload`` on Variable ``x``; return the output Variable."""
    if workload == "no_grad":
        with impl.no_grad():
            return squares(x, depth)
    y = squares(x, depth)
    y.backward(retain_grad=(workload == "retain_grad"))
    return y


def measure(impl_name, workload, size, depth, pause=0.0):
    """Measure one case in this process and return its result dict.

    Call it in a fresh process: freed-but-cached memory of earlier work would
    blur the RSS figures.  ``pause`` seconds of sleep between phases make the
    phases visible to a sampling profiler (``--plot``).
    """
    impl = workers.load_impl(impl_name)
    # Warm up at a tiny size: first-call caches and lazy initialisation of
    # the implementation must not count as the workload's memory.
    y = run_workload(impl, workload, impl.Variable(np.ones(16)), depth)
    del y

    gc.collect()
    gc.disable()  # everything below must be freed by reference counting
    tracemalloc.start()
    try:
        # np.ones writes every page, so x is resident before the baseline.
        x = impl.Variable(np.ones(size))
        array_bytes = x.data.nbytes
        base = probes.Baseline(pause)

        y = run_workload(impl, workload, x, depth)

        run = base.after_run()
        time.sleep(pause)

        del y
        x.cleargrad()
        freed = base.numpy_bytes()
        rss_freed = base.rss_after_idle_purge()
        time.sleep(pause)
    finally:
        tracemalloc.stop()
        gc.enable()
    # One run's fault count is noisy (transparent huge pages are granted or
    # not depending on the kernel's free memory), so report the median over
    # this run and FAULT_RUNS - 1 more, each with a fresh graph.
    runs = [run["faults"]]
    for _ in range(FAULT_RUNS - 1):
        start = probes.minor_faults()
        y = run_workload(impl, workload, x, depth)
        runs.append(probes.minor_faults() - start)
        del y
        x.cleargrad()
    # Last: it switches huge pages off for the rest of this process.
    no_thp = probes.faults_without_thp(lambda: run_workload(impl, workload, x, depth))
    x.cleargrad()
    return {
        "workload": workload,
        "impl": impl_name,
        "size": size,
        "depth": depth,
        "array_bytes": array_bytes,
        "baseline_bytes": base.numpy,
        "peak_bytes": run["peak"],
        "held_bytes": run["held"],
        "freed_bytes": freed,
        "page_faults": sorted(runs)[len(runs) // 2],
        "page_faults_runs": runs,
        "page_faults_4k": no_thp,
        "rss_baseline_bytes": base.rss,
        "rss_peak_bytes": run["rss_peak"],
        "rss_held_bytes": run["rss_held"],
        "rss_freed_bytes": rss_freed,
    }


def _case(impl, workload, size, depth, pause=0.0):
    return dict(impl_name=impl, workload=workload, size=size, depth=depth, pause=pause)


def measure_in_subprocess(impl, workload, size, depth):
    """Run :func:`measure` in a fresh Python process and return its dict.

    A peer's process never imports fastgrad (its import would change
    malloc's settings for the peer too).
    """
    return workers.run_worker(_ENTRY, _case(impl, workload, size, depth),
                              isolated=(impl in PEERS), what=f"memory {impl}/{workload}")


def collect(size=DEFAULT_SIZE, depth=DEFAULT_DEPTH, peers=None):
    """Measure every workload for fastgrad and its peers; return the rows.

    ``peers`` is a list of peer names (default: all of ``PEERS``); a peer that
    is not installed is skipped with a note on stderr.  Each row is a dict
    with keys ``workload``, ``impl``, ``peak_bytes``, ``held_bytes``,
    ``freed_bytes``, ``baseline_bytes``, ``array_bytes``, ``page_faults``,
    ``rss_peak_bytes``, ``rss_held_bytes``, ``rss_freed_bytes``,
    ``rss_baseline_bytes``, ``size`` and ``depth`` (see the module docstring).
    Every case runs in its own subprocess; a peer's never imports fastgrad.
    """
    impls = ["fastgrad"]
    for peer in PEERS if peers is None else peers:
        if workers.available(peer):
            impls.append(peer)
        else:
            _log(f"note: {peer} is not installed; skipping it")
    rows = []
    for impl in impls:
        for workload in WORKLOADS:
            _log(f"measuring {impl} {workload} (size={size}, depth={depth})")
            rows.append(measure_in_subprocess(impl, workload, size, depth))
    return rows


def _a(nbytes, array_bytes):
    return "    -" if nbytes is None else f"{nbytes / array_bytes:5.2f}"


def _faults_4k(row):
    n = row.get("page_faults_4k")
    if n is None:
        return "-"
    return f"{n} ({n * 4096 / row['array_bytes']:.1f})"


def format_table(rows):
    """The rows as a plain-text table (MiB, and multiples of A = one array)."""
    head = (f"{'impl':<9} {'workload':<12} {'peak MiB':>8} {'A':>5}"
            f" {'held MiB':>8} {'A':>5} {'del A':>5}"
            f" | {'RSS peak A':>10} {'held A':>6} {'del A':>5} | {'faults':>6}"
            f" {'4K faults (A)':>13}")
    lines = [head, "-" * len(head)]
    for r in rows:
        a = r["array_bytes"]
        lines.append(
            f"{r['impl']:<9} {r['workload']:<12}"
            f" {r['peak_bytes'] / MiB:8.1f} {_a(r['peak_bytes'], a)}"
            f" {r['held_bytes'] / MiB:8.1f} {_a(r['held_bytes'], a)}"
            f" {_a(r['freed_bytes'], a)}"
            f" | {_a(r['rss_peak_bytes'], a):>10} {_a(r['rss_held_bytes'], a):>6}"
            f" {_a(r['rss_freed_bytes'], a)} | {r['page_faults']:>6}"
            f" {_faults_4k(r):>13}"
        )
    return "\n".join(lines)


def plot(path, size, depth, peers=None):
    """Write a PNG of sampled RSS over time, one line per case.

    Uses memory_profiler to sample each worker's RSS; needs matplotlib.
    Returns False (with a note) when either is missing.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from memory_profiler import memory_usage
    except ImportError as exc:
        _log(f"note: --plot needs matplotlib and memory_profiler ({exc})")
        return False
    impls = ["fastgrad"] + [p for p in (PEERS if peers is None else peers)
                            if workers.available(p)]
    array_mib = size * 8 / MiB
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for impl in impls:
        for workload in WORKLOADS:
            _log(f"sampling RSS of {impl} {workload}")
            proc = subprocess.Popen(
                workers.worker_command(_ENTRY, _case(impl, workload, size, depth, 0.2),
                                       isolated=(impl in PEERS)),
                env=workers.worker_env(), stdout=subprocess.DEVNULL, cwd=workers.ROOT)
            samples = memory_usage(proc, interval=0.005, timestamps=True)
            proc.wait()
            t0, m0 = samples[0][1], min(m for m, _ in samples)
            ax.plot([t - t0 for _, t in samples],
                    [(m - m0) / array_mib for m, _ in samples],
                    label=f"{impl} {workload}")
    ax.set_xlabel("time (s), each case in its own process")
    ax.set_ylabel(f"RSS above the process minimum (A = {array_mib:.0f} MiB)")
    ax.set_title(f"{depth} squares of {size} float64")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True


def main(argv=None):
    """Command-line entry point of ``python -m fastgrad.bench.memory``.

    ``python -m fastgrad.bench.memory [--size N] [--depth D] [--json PATH]
    [--plot PNG]`` measures the squares workload.  (Your own function:
    ``python -m fastgrad.profiling profile``.)
    """
    parser = argparse.ArgumentParser(
        prog="python -m fastgrad.bench.memory",
        description="Peak and held memory of DEPTH squares of a float64 array "
                    "of SIZE elements: backprop vs no_grad, retain_grad False "
                    "vs True, fastgrad vs DeZero stage 2 (when installed). "
                    "Figures are above a baseline that includes x, in MiB "
                    "and in units of A (one array).",
    )
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE,
                        help="elements of x (default: %(default)s)")
    parser.add_argument("--depth", type=int, default=DEFAULT_DEPTH,
                        help="number of squares (default: %(default)s)")
    parser.add_argument("--json", metavar="PATH",
                        help="also write the rows as JSON to PATH")
    parser.add_argument("--plot", metavar="PNG",
                        help="write a memory-over-time plot (needs matplotlib "
                             "and memory_profiler)")
    args = parser.parse_args(argv)
    if args.size < 1 or args.depth < 1:
        parser.error("--size and --depth must be positive")

    rows = collect(args.size, args.depth)
    a = rows[0]["array_bytes"]
    print(f"{args.depth} squares of {args.size} float64, "
          f"A = {a / MiB:.1f} MiB; figures above a baseline holding x")
    print(format_table(rows))
    print(f"peak, held: tracemalloc (held: NumPy domain, exact).  del: still "
          f"traced after `del y` (gc disabled).\n"
          f"RSS: process RSS, second opinion (del: after fastgrad's idle purge, "
          f"decay_ms after `del`).  faults: minor page faults per "
          f"forward(+backward), median of {FAULT_RUNS} runs.\n"
          f"4K faults: one run with huge pages off (deterministic); in A = "
          f"fresh memory written, when A > 32 MiB.")
    if not any(r["impl"] == "dezero" for r in rows):
        print("DeZero stage 2 not installed: no peer rows")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
        _log(f"wrote {args.json}")
    if args.plot and plot(args.plot, args.size, args.depth):
        _log(f"wrote {args.plot}")
    return 0




if __name__ == "__main__":
    sys.exit(main())
