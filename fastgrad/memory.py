"""Memory profile of a reverse-mode graph: ``python -m fastgrad.memory``.

The workload is the one from the "memory you can prove" issue: ``depth``
squares of a float64 array ``x`` of ``size`` elements (``y = y ** 2``), with
one array ``A = x.nbytes``.  It is run in three ways:

* ``backprop``     forward, then ``y.backward()`` with ``y`` still alive;
* ``retain_grad``  the same with ``y.backward(retain_grad=True)``;
* ``no_grad``      forward only, under ``no_grad()``.

Each (implementation, workload) case runs in a fresh subprocess, so memory
freed (or cached by the allocator) in one case cannot pollute the next.  The
figures are relative to a baseline taken after ``x`` exists (so ``x`` itself
is not counted):

* ``peak_bytes``/``held_bytes`` -- tracemalloc: exact bytes.  ``held`` is
  NumPy's tracemalloc domain only (array buffers), measured after
  forward(+backward) with the output alive; ``peak`` is tracemalloc's peak
  over both domains (there is no per-domain peak), so it includes the few
  KiB of Python objects of the graph.
* ``freed_bytes`` -- NumPy-domain bytes still traced after ``del y`` and
  ``x.cleargrad()`` with the cyclic GC disabled (0 when refcounting frees
  the graph).
* ``rss_*_bytes`` -- process RSS as a second opinion (peak from the kernel's
  high-water mark, reset before the workload).
* ``page_faults`` -- ``ru_minflt`` delta over one forward(+backward), the
  median of ``FAULT_RUNS`` runs in the worker (``page_faults_runs``), with
  the system's transparent-huge-page setting; ``page_faults_4k`` is one more
  run with huge pages disabled for the worker, which is deterministic: with
  A above glibc's 32 MiB mmap threshold every array is a fresh mapping, so
  it is A / 4096 faults per array written.

Only the standard library and NumPy are imported at module level; psutil,
memory_profiler (``--plot``), matplotlib (``--plot``) and DeZero (the peer)
are optional.
"""
import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc

import numpy as np

MiB = 1 << 20
WORKLOADS = ("backprop", "no_grad", "retain_grad")
PEERS = ("dezero",)
#: ``python -m fastgrad.memory`` defaults: A = 76 MiB, as in the issue.
DEFAULT_SIZE = 10**7
DEFAULT_DEPTH = 10
#: forward(+backward) runs whose median is the reported page-fault count.
FAULT_RUNS = 5

# The repository root, put on the workers' PYTHONPATH so `import fastgrad`
# finds the in-place build however the parent was started.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Workers load this file by path rather than `import fastgrad.memory`, so a
# DeZero worker never imports fastgrad (whose import could, e.g., install a
# NumPy allocator) and the comparison stays fair.
_BOOT = (
    "import importlib.util as u, sys\n"
    "s = u.spec_from_file_location('_fastgrad_memory_worker', sys.argv[1])\n"
    "m = u.module_from_spec(s); s.loader.exec_module(m)\n"
    "m._worker(sys.argv[2])\n"
)


# ---------------------------------------------------------------------------
# Implementations and workloads (also used by the tests)
# ---------------------------------------------------------------------------
def load_impl(name):
    """Return the module providing ``Variable``, ``Function``, ``no_grad``.

    ``"fastgrad"`` is this package; ``"dezero"`` is DeZero's stage 2
    (``dezero.core_simple`` from dezero 0.0.13).  Raises ImportError when the
    implementation is not installed.
    """
    if name == "fastgrad":
        import fastgrad

        if not hasattr(fastgrad, "Variable"):  # the engine is not built yet
            raise ImportError("fastgrad has no Variable: engine not built")
        return fastgrad
    if name == "dezero":
        # dezero 0.0.13's package __init__ still uses the alias np.int,
        # removed in NumPy 1.24; provide it only for the import.
        had_int = "int" in np.__dict__
        if not had_int:
            np.int = int
        try:
            import dezero.core_simple as core
        finally:
            if not had_int:
                del np.int
        # Importing the package installs dezero.core's operators, not
        # core_simple's: stage 2 needs its own setup_variable().
        core.setup_variable()
        return core
    raise ValueError(f"unknown implementation {name!r}")


def available(name):
    """True when implementation ``name`` can be imported here."""
    try:
        load_impl(name)
    except ImportError:
        return False
    return True


def squares(x, depth):
    """``depth`` successive squares of ``x``: the issue's workload."""
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


def numpy_traced_bytes():
    """Bytes of NumPy data buffers currently traced by tracemalloc (exact)."""
    domain = np.lib.tracemalloc_domain
    snap = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.DomainFilter(True, domain)]
    )
    return sum(t.size for t in snap.traces)


# ---------------------------------------------------------------------------
# Process RSS (Linux /proc; psutil elsewhere)
# ---------------------------------------------------------------------------
def rss_bytes():
    """Current resident set size of this process, in bytes (or None)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        pass
    try:
        import psutil
    except ImportError:
        return None
    return psutil.Process().memory_info().rss


def _reset_rss_peak():
    """Reset the kernel's RSS high-water mark (VmHWM); False if impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def rss_peak_bytes():
    """Peak RSS of this process, in bytes (VmHWM, or ru_maxrss)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    # ru_maxrss is the lifetime peak (KiB on Linux); in a fresh worker whose
    # workload dwarfs its imports that is still the workload's peak.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ---------------------------------------------------------------------------
# One case, in the current process (the workers call this)
# ---------------------------------------------------------------------------
def measure(impl_name, workload, size, depth, pause=0.0):
    """Measure one case in this process and return its result dict.

    Call it in a fresh process: freed-but-cached memory of earlier work would
    blur the RSS figures.  ``pause`` seconds of sleep between phases make the
    phases visible to a sampling profiler (``--plot``).
    """
    impl = load_impl(impl_name)
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
        baseline = numpy_traced_bytes()
        traced_base = tracemalloc.get_traced_memory()[0]
        rss_base = rss_bytes()
        hwm_reset = _reset_rss_peak()
        time.sleep(pause)
        tracemalloc.reset_peak()
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt

        y = run_workload(impl, workload, x, depth)

        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
        peak = tracemalloc.get_traced_memory()[1] - traced_base
        held = numpy_traced_bytes() - baseline
        rss_held = rss_bytes() - rss_base
        rss_peak = rss_peak_bytes() - rss_base if hwm_reset else None
        time.sleep(pause)

        del y
        x.cleargrad()
        freed = numpy_traced_bytes() - baseline
        rss_freed = rss_bytes() - rss_base
        time.sleep(pause)
    finally:
        tracemalloc.stop()
        gc.enable()
    # One run's fault count is noisy (transparent huge pages are granted or
    # not depending on the kernel's free memory), so report the median over
    # this run and FAULT_RUNS - 1 more, each with a fresh graph.
    runs = [faults]
    for _ in range(FAULT_RUNS - 1):
        start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        y = run_workload(impl, workload, x, depth)
        runs.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
        del y
        x.cleargrad()
    no_thp = _faults_without_thp(impl, workload, x, depth)
    return {
        "workload": workload,
        "impl": impl_name,
        "size": size,
        "depth": depth,
        "array_bytes": array_bytes,
        "baseline_bytes": baseline,
        "peak_bytes": peak,
        "held_bytes": held,
        "freed_bytes": freed,
        "page_faults": sorted(runs)[len(runs) // 2],
        "page_faults_runs": runs,
        "page_faults_4k": no_thp,
        "rss_baseline_bytes": rss_base,
        "rss_peak_bytes": rss_peak,
        "rss_held_bytes": rss_held,
        "rss_freed_bytes": rss_freed,
    }


def _faults_without_thp(impl, workload, x, depth):
    """Page faults of one more run with transparent huge pages disabled.

    With 4 KiB pages only, a fresh array of ``n`` bytes costs exactly
    ``n / 4096`` faults, so this count is deterministic: it says how many
    fresh arrays a forward(+backward) writes.  None if prctl is unavailable
    (non-Linux).  Called last: it changes the process for good.
    """
    try:
        import ctypes

        pr_set_thp_disable = 41
        if ctypes.CDLL(None).prctl(pr_set_thp_disable, 1, 0, 0, 0) != 0:
            return None
    except (OSError, AttributeError):
        return None
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    y = run_workload(impl, workload, x, depth)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start
    del y
    x.cleargrad()
    return faults


def _worker(spec):
    """Subprocess entry point: measure the case in JSON ``spec``, print JSON."""
    args = json.loads(spec)
    print(json.dumps(measure(**args)))


def _worker_cmd(impl, workload, size, depth, pause=0.0):
    spec = dict(impl_name=impl, workload=workload, size=size, depth=depth,
                pause=pause)
    return [sys.executable, "-c", _BOOT, os.path.abspath(__file__),
            json.dumps(spec)]


def _worker_env():
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = _ROOT + (os.pathsep + path if path else "")
    return env


def measure_in_subprocess(impl, workload, size, depth):
    """Run :func:`measure` in a fresh Python process and return its dict."""
    # cwd=_ROOT: `python -c` puts the working directory first on sys.path, and
    # a source checkout there (no compiled modules) would shadow this fastgrad.
    proc = subprocess.run(
        _worker_cmd(impl, workload, size, depth),
        env=_worker_env(), capture_output=True, text=True, cwd=_ROOT,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"memory worker {impl}/{workload} failed "
            f"(exit {proc.returncode}):\n{proc.stderr}"
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------
# Public API for the benchmark CLI
# ---------------------------------------------------------------------------
def _log(msg):
    print(msg, file=sys.stderr, flush=True)


def collect(size=DEFAULT_SIZE, depth=DEFAULT_DEPTH, peers=None):
    """Measure every workload for fastgrad and its peers; return the rows.

    ``peers`` is a list of peer names (default: all of ``PEERS``); a peer that
    is not installed is skipped with a note on stderr.  Each row is a dict
    with keys ``workload``, ``impl``, ``peak_bytes``, ``held_bytes``,
    ``freed_bytes``, ``baseline_bytes``, ``array_bytes``, ``page_faults``,
    ``rss_peak_bytes``, ``rss_held_bytes``, ``rss_freed_bytes``,
    ``rss_baseline_bytes``, ``size`` and ``depth`` (see the module docstring).
    Every case runs in its own subprocess.
    """
    impls = ["fastgrad"]
    for peer in PEERS if peers is None else peers:
        if available(peer):
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
                            if available(p)]
    array_mib = size * 8 / MiB
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for impl in impls:
        for workload in WORKLOADS:
            _log(f"sampling RSS of {impl} {workload}")
            proc = subprocess.Popen(
                _worker_cmd(impl, workload, size, depth, pause=0.2),
                env=_worker_env(), stdout=subprocess.DEVNULL, cwd=_ROOT)
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
    """Command-line entry point of ``python -m fastgrad.memory``."""
    parser = argparse.ArgumentParser(
        prog="python -m fastgrad.memory",
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
          f"RSS: process RSS, second opinion.  faults: minor page faults per "
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
