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
  high-water mark, reset before the workload); ``rss_freed_bytes`` is read
  once fastgrad's idle purge has run (``decay_ms`` after ``del``: freed
  memory stays mapped that long for reuse).
* ``page_faults`` -- ``ru_minflt`` delta over one forward(+backward), the
  median of ``FAULT_RUNS`` runs in the worker (``page_faults_runs``), with
  the system's transparent-huge-page setting; ``page_faults_4k`` is one more
  run with huge pages disabled for the worker, which is deterministic: with
  A above glibc's 32 MiB mmap threshold every array is a fresh mapping, so
  it is A / 4096 faults per array written.

Two tools apply the same instruments to your own code:

* :func:`graph_report` -- for a live output, how many functions and
  variables its graph has and which functions keep which bytes alive
  (outputs, leaf inputs saved for backward, grads), largest first;
* :func:`profile` -- your function under backprop, ``no_grad()`` and
  ``retain_grad=True``, each in a fresh subprocess: peak, held while the
  output lives and after ``del``, with the savings.  From the shell:
  ``python -m fastgrad.memory profile module:function --shape 1000,1000``.

Only the standard library and NumPy are imported at module level; psutil,
memory_profiler (``--plot``), matplotlib (``--plot``) and DeZero (the peer)
are optional.
"""
import argparse
import dataclasses
import gc
import heapq
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc
import weakref

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

    ``"fastgrad"`` is this package (grads are ndarrays); ``"fastgrad.dezero"``
    its full face (grads are Variables); ``"dezero"`` is DeZero's stage 2
    (``dezero.core_simple`` from dezero 0.0.13).  Raises ImportError when the
    implementation is not installed.
    """
    if name == "fastgrad":
        import fastgrad

        if not hasattr(fastgrad, "Variable"):  # the engine is not built yet
            raise ImportError("fastgrad has no Variable: engine not built")
        return fastgrad
    if name == "fastgrad.dezero":
        import fastgrad.dezero as full

        return full
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
def _rss_after_idle_purge():
    """RSS once fastgrad's allocator has handed idle memory back (it keeps
    freed blocks mapped for ``decay_ms``, for reuse)."""
    try:
        import fastgrad
        decay = fastgrad.buffer_cache_info()["decay_ms"] / 1e3
    except (ImportError, AttributeError):
        decay = 0.0
    time.sleep(decay + 0.1)
    return rss_bytes()


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
        rss_freed = _rss_after_idle_purge() - rss_base
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


# ---------------------------------------------------------------------------
# What a live graph holds: graph_report(y)
# ---------------------------------------------------------------------------
@dataclasses.dataclass
class OpMemory:
    """Bytes one function of a graph keeps alive (see :func:`graph_report`)."""

    index: int                  #: position in the walk from the output (0: its creator)
    function: str               #: the function's class name
    generation: object          #: its generation, or None when it has none
    output_shapes: list         #: shapes of its live outputs
    outputs_bytes: int          #: data of its live outputs
    saved_bytes: int            #: data of its leaf inputs, kept for backward
    grads_bytes: int            #: grads of those outputs and leaf inputs
    total_bytes: int            #: the sum of the three

    def to_dict(self):
        """The fields as a plain dict."""
        return dataclasses.asdict(self)


@dataclasses.dataclass
class GraphReport:
    """The result of :func:`graph_report`; ``str()`` gives the table."""

    functions: int              #: functions reachable from the output
    variables: int              #: variables reachable (output, inputs, live outputs)
    total_bytes: int            #: every array found, each buffer counted once
    rows: list                  #: the top :class:`OpMemory` rows, largest first
    shown: int                  #: len(rows)
    others_bytes: int           #: total of the functions not shown

    def to_dict(self):
        """The report as plain dicts and lists (JSON-ready)."""
        return dataclasses.asdict(self)

    def table(self):
        """The report as a plain-text table (MiB)."""
        head = (f"{'#':>5} {'function':<16} {'gen':>5} {'output shape':<18}"
                f" {'outputs MiB':>11} {'saved MiB':>9} {'grads MiB':>9}"
                f" {'total MiB':>9}")
        lines = [f"graph: {self.functions} functions, {self.variables} variables,"
                 f" {self.total_bytes / MiB:.1f} MiB in their arrays"
                 f" (each buffer counted once)", head, "-" * len(head)]
        for r in self.rows:
            shapes = ", ".join(str(tuple(sh)) for sh in r.output_shapes) or "-"
            gen = "-" if r.generation is None else str(r.generation)
            lines.append(
                f"{r.index:>5} {r.function[:16]:<16} {gen:>5} {shapes[:18]:<18}"
                f" {r.outputs_bytes / MiB:11.2f} {r.saved_bytes / MiB:9.2f}"
                f" {r.grads_bytes / MiB:9.2f} {r.total_bytes / MiB:9.2f}")
        hidden = self.functions - self.shown
        if hidden > 0:
            lines.append(f"... {hidden} more functions: "
                         f"{self.others_bytes / MiB:.2f} MiB")
        lines.append("outputs: data of the function's live outputs; saved: data "
                     "of leaf inputs it keeps for backward; grads: their grads.")
        return "\n".join(lines)

    __str__ = table


def _buffer(a):
    """(key, bytes) of the memory behind ndarray ``a``: a view counts as its base."""
    owner = a
    while isinstance(owner.base, np.ndarray):
        owner = owner.base
    return id(owner), owner.nbytes


class _Claims:
    """Counts each buffer once, for the first node that claims it."""

    def __init__(self):
        self.seen = {}          # key -> the object, kept so ids stay unique

    def array(self, a):
        if not isinstance(a, np.ndarray):
            a = getattr(a, "data", None)      # the full face: grad is a Variable
            if not isinstance(a, np.ndarray):
                return 0
        key, nbytes = _buffer(a)
        if key in self.seen:
            return 0
        self.seen[key] = a
        return nbytes

    def data(self, v):
        # A 0-d variable may keep its value unboxed; reading .data would box
        # it for good, so it is counted from its dtype without reading it.
        try:
            if v.shape == ():
                key = ("scalar", id(v))
                if key in self.seen:
                    return 0
                self.seen[key] = v
                return np.dtype(v.dtype).itemsize
        except (AttributeError, TypeError):   # data is None
            return 0
        return self.array(v.data)

    def grad(self, v):
        return self.array(v.grad)


def _inputs(f):
    try:
        return list(f.inputs)
    except AttributeError:      # not recorded (or already released)
        return []


def _outputs(f):
    try:
        refs = f.outputs
    except AttributeError:
        return []
    outs = []
    for r in refs:
        o = r() if type(r) is weakref.ref else r
        if o is not None:
            outs.append(o)
    return outs


def graph_report(y, top=10):
    """Report what the graph behind a live output keeps in memory.

    The graph is walked iteratively from ``y`` through ``creator``,
    ``Function.inputs`` and ``Function.outputs`` (public API only, so both
    faces work: a grad that is a Variable counts as its ``.data``).  Every
    array buffer is counted once, for the first function that holds it:

    * a function's live outputs' data and grads are its ``outputs`` and
      ``grads``;
    * a leaf input's data (and grad) is ``saved`` by the first function (in
      walk order) that takes it, which keeps it alive for backward.

    Parameters
    ----------
    y : Variable
        The output (``fastgrad.Variable`` or ``fastgrad.dezero.Variable``).
    top : int or None
        How many functions to list, largest total first (None: all).

    Returns
    -------
    GraphReport
        Counts, totals and the rows; ``print(report)`` shows the table.

    Examples
    --------
    >>> import numpy as np, fastgrad
    >>> x = fastgrad.Variable(np.ones(1000))
    >>> y = (x ** 2) * 3.0
    >>> r = fastgrad.memory.graph_report(y)
    >>> r.functions, r.variables
    (2, 4)
    """
    if not (hasattr(y, "creator") and hasattr(y, "data") and hasattr(y, "grad")):
        raise TypeError(f"graph_report expects a Variable, not {type(y).__name__}")
    if top is not None:
        if isinstance(top, bool) or not isinstance(top, int):
            raise TypeError(f"top must be an int or None, not {type(top).__name__}")
        if top < 0:
            raise ValueError(f"top must be >= 0, got {top}")
    # The walk allocates a few objects per node; the cyclic GC would rescan
    # them over and over on a graph of millions of nodes.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _graph_report(y, top)
    finally:
        if gc_was_enabled:
            gc.enable()


def _graph_report(y, top):
    # Walk: every function once, iteratively, with its live outputs and inputs.
    nodes, seen_f = [], set()
    variables, seen_v = [y], {id(y)}
    stack = [] if y.creator is None else [y.creator]
    while stack:
        f = stack.pop()
        if id(f) in seen_f:
            continue
        seen_f.add(id(f))
        outs, ins = _outputs(f), _inputs(f)
        nodes.append((f, outs, ins))
        for group in (outs, ins):
            for v in group:
                if id(v) not in seen_v:
                    seen_v.add(id(v))
                    variables.append(v)
                    c = v.creator
                    if c is not None and id(c) not in seen_f:
                        stack.append(c)
    claims = _Claims()
    # Outputs first, so that an intermediate is its creator's, not its consumer's.
    out_b = [sum([claims.data(o) for o in outs]) for _, outs, _ in nodes]
    grad_b = [sum([claims.grad(o) for o in outs]) for _, outs, _ in nodes]
    saved_b = [0] * len(nodes)
    for i, (_, _, ins) in enumerate(nodes):
        for v in ins:
            if v.creator is None:
                saved_b[i] += claims.data(v)
                grad_b[i] += claims.grad(v)
    totals = [o + s + g for o, s, g in zip(out_b, saved_b, grad_b)]
    total = sum(totals)
    if not nodes:                       # y is a leaf
        total = claims.data(y) + claims.grad(y)
    order = range(len(nodes))
    key = lambda i: (-totals[i], i)     # noqa: E731
    if top is None:
        chosen = sorted(order, key=key)
    else:
        chosen = heapq.nsmallest(top, order, key=key)
    rows = []
    for i in chosen:
        f, outs, _ = nodes[i]
        try:
            gen = f.generation
        except AttributeError:
            gen = None
        shapes = []
        for o in outs:
            try:
                shapes.append(list(o.shape))
            except AttributeError:
                shapes.append([])
        rows.append(OpMemory(i, type(f).__name__, gen, shapes, out_b[i],
                             saved_b[i], grad_b[i], totals[i]))
    shown = sum(r.total_bytes for r in rows)
    return GraphReport(len(nodes), len(variables), total, rows, len(rows),
                       sum(totals) - shown)


# ---------------------------------------------------------------------------
# Profiling a user's function: profile(fn, *inputs)
# ---------------------------------------------------------------------------
PROFILE_MODES = ("backprop", "no_grad", "retain_grad")


@dataclasses.dataclass
class ModeMemory:
    """Memory of one mode of :func:`profile`, in bytes above the baseline.

    The baseline is taken once the inputs exist, so they are not counted.
    ``peak``/``held``/``after_del``/``grads``: tracemalloc (``peak`` over
    both domains, the others NumPy's domain: exact array bytes); ``rss_*``:
    process RSS as a second opinion (``rss_peak`` None where the kernel's
    high-water mark cannot be reset).
    """

    mode: str
    peak_bytes: int             #: highest traced memory during the run
    held_bytes: int             #: array bytes held while the output lives
    after_del_bytes: int        #: array bytes left after ``del`` of the output (grads included)
    grads_bytes: int            #: the inputs' grads (0 under no_grad)
    output_bytes: int           #: the output's data
    rss_peak_bytes: object
    rss_held_bytes: int
    rss_after_del_bytes: int
    page_faults: int            #: minor page faults of the run
    functions: int              #: functions in the graph while the output lives
    variables: int              #: variables in it

    def to_dict(self):
        """The fields as a plain dict."""
        return dataclasses.asdict(self)


def _ratio(a, b):
    return None if not b else a / b


@dataclasses.dataclass
class Profile:
    """The result of :func:`profile`; ``str()`` gives the table."""

    target: str                 #: "module:function" or "path.py:function"
    impl: str                   #: "fastgrad", "fastgrad.dezero" or "dezero"
    input_shapes: list
    input_bytes: int            #: the inputs' data (not in any figure)
    modes: dict                 #: mode name -> :class:`ModeMemory`

    @property
    def savings(self):
        """What no_grad saves against backprop, and backprop against
        retain_grad=True: bytes and ratios, for ``peak`` and ``held``.

        A ratio is ``larger / smaller`` (how many times more the costlier
        mode uses), None when the smaller figure is 0.
        """
        out = {}
        pairs = (("no_grad", "backprop", "no_grad"),
                 ("retain_grad_false", "retain_grad", "backprop"))
        for name, costly, cheap in pairs:
            if costly in self.modes and cheap in self.modes:
                a, b = self.modes[costly], self.modes[cheap]
                out[name] = {
                    "peak_bytes": a.peak_bytes - b.peak_bytes,
                    "peak_ratio": _ratio(a.peak_bytes, b.peak_bytes),
                    "held_bytes": a.held_bytes - b.held_bytes,
                    "held_ratio": _ratio(a.held_bytes, b.held_bytes),
                }
        return out

    def to_dict(self):
        """The profile as plain dicts and lists (JSON-ready), savings included."""
        d = dataclasses.asdict(self)
        d["savings"] = self.savings
        return d

    def table(self):
        """The profile as a plain-text table (MiB)."""
        shapes = ", ".join(str(tuple(sh)) for sh in self.input_shapes)
        head = (f"{'mode':<12} {'peak MiB':>9} {'held MiB':>9} {'del MiB':>8}"
                f" {'grads MiB':>9} | {'RSS peak':>8} {'held':>8} {'del':>8}"
                f" | {'faults':>7} {'nodes':>7}")
        lines = [f"{self.target} on {self.impl}, inputs {shapes}"
                 f" ({self.input_bytes / MiB:.1f} MiB, not counted)", head,
                 "-" * len(head)]

        def mib(b):
            return "-" if b is None else f"{b / MiB:.1f}"

        for m in self.modes.values():
            lines.append(
                f"{m.mode:<12} {m.peak_bytes / MiB:9.1f} {m.held_bytes / MiB:9.1f}"
                f" {m.after_del_bytes / MiB:8.1f} {m.grads_bytes / MiB:9.1f}"
                f" | {mib(m.rss_peak_bytes):>8} {mib(m.rss_held_bytes):>8}"
                f" {mib(m.rss_after_del_bytes):>8}"
                f" | {m.page_faults:>7} {m.functions + m.variables:>7}")
        for name, s in self.savings.items():
            label = ("no_grad() saves" if name == "no_grad"
                     else "retain_grad=False saves")
            pr = "-" if s["peak_ratio"] is None else f"{s['peak_ratio']:.2f}x"
            hr = "-" if s["held_ratio"] is None else f"{s['held_ratio']:.2f}x"
            lines.append(f"{label} {s['peak_bytes'] / MiB:.1f} MiB of peak ({pr})"
                         f" and {s['held_bytes'] / MiB:.1f} MiB held ({hr})")
        lines.append("peak: tracemalloc, both domains; held, del, grads: NumPy's "
                     "domain (exact); del: after `del` of the output, gc off, "
                     "grads still held.  RSS: second opinion.  nodes: functions "
                     "+ variables of the graph.")
        return "\n".join(lines)

    __str__ = table


def _target_of(fn):
    """The "module:function" (or "path.py:function") a worker can load."""
    if isinstance(fn, str):
        mod, sep, name = fn.rpartition(":")
        if not sep or not mod or not name:
            raise ValueError(f"target must be 'module:function' or "
                             f"'path.py:function', got {fn!r}")
        return fn
    if not callable(fn):
        raise TypeError(f"fn must be a callable or a 'module:function' string, "
                        f"not {type(fn).__name__}")
    mod = getattr(fn, "__module__", None)
    qual = getattr(fn, "__qualname__", "")
    if not mod or not qual or "<" in qual:
        raise TypeError(f"fn must be a module-level function that a fresh process "
                        f"can import, not {qual or fn!r} (lambdas and nested "
                        f"functions cannot be profiled in subprocesses)")
    if mod == "__main__":
        path = getattr(sys.modules.get("__main__"), "__file__", None)
        if not path:
            raise TypeError("fn is defined in an interactive session: put it in a "
                            "module and pass 'module:function'")
        return f"{os.path.abspath(path)}:{qual}"
    return f"{mod}:{qual}"


def _resolve(target):
    """Load the function named by ``target`` (in a worker)."""
    import importlib
    import importlib.util

    mod, _, qual = target.rpartition(":")
    if mod.endswith(".py") or os.sep in mod:
        spec = importlib.util.spec_from_file_location("_fastgrad_profiled", mod)
        if spec is None:
            raise ImportError(f"cannot load {mod!r}")
        module = importlib.util.module_from_spec(spec)
        sys.modules["_fastgrad_profiled"] = module
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(mod)
    obj = module
    for part in qual.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{target} is not callable")
    return obj


def _make_input(spec):
    if "npy" in spec:
        return np.load(spec["npy"])
    rng = np.random.default_rng(spec.get("seed", 0))
    # Positive values keep log, sqrt and division finite.
    return rng.uniform(0.5, 1.5, size=spec["shape"]).astype(spec.get("dtype", "float64"))


def _grad_array(v):
    g = v.grad
    if g is not None and not isinstance(g, np.ndarray):
        g = g.data          # the full face: the grad is a Variable
    return g


def _run_fn(impl, fn, xs, mode):
    if mode == "no_grad":
        with impl.no_grad():
            return fn(*xs)
    y = fn(*xs)
    if not isinstance(y, impl.Variable):
        raise TypeError(f"the profiled function must return a Variable, "
                        f"not {type(y).__name__}")
    y.backward(retain_grad=(mode == "retain_grad"))
    return y


def measure_function(target, inputs, mode, impl="fastgrad", warmup=True):
    """Measure one mode of a user's function in this process (workers call it).

    ``target`` is "module:function"; ``inputs`` a list of specs, each
    ``{"npy": path}`` or ``{"shape": [...], "dtype": "float64", "seed": 0}``.
    Returns :meth:`ModeMemory.to_dict`.  Call it in a fresh process.
    """
    if mode not in PROFILE_MODES:
        raise ValueError(f"mode must be one of {PROFILE_MODES}, got {mode!r}")
    module = load_impl(impl)
    fn = _resolve(target)
    xs = [module.Variable(_make_input(s)) for s in inputs]
    if warmup:
        # First calls (lazy imports, caches in fn) are not the graph's memory.
        y = _run_fn(module, fn, xs, mode)
        del y
        for x in xs:
            x.cleargrad()
    gc.collect()
    gc.disable()
    tracemalloc.start()
    try:
        base_np = numpy_traced_bytes()
        base_all = tracemalloc.get_traced_memory()[0]
        rss_base = rss_bytes()
        hwm_reset = _reset_rss_peak()
        tracemalloc.reset_peak()
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt

        y = _run_fn(module, fn, xs, mode)

        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
        peak = tracemalloc.get_traced_memory()[1] - base_all
        held = numpy_traced_bytes() - base_np
        rss_held = rss_bytes() - rss_base
        rss_peak = rss_peak_bytes() - rss_base if hwm_reset else None
        out = y.data
        output_bytes = out.nbytes if isinstance(out, np.ndarray) else 0
        del out
        report = graph_report(y, top=0)
        del y
        after_del = numpy_traced_bytes() - base_np
        rss_after = _rss_after_idle_purge() - rss_base
        grads = [_grad_array(x) for x in xs]
        grads_bytes = sum(g.nbytes for g in grads if g is not None)
        del grads
    finally:
        tracemalloc.stop()
        gc.enable()
    return ModeMemory(mode, peak, held, after_del, grads_bytes, output_bytes,
                      rss_peak, rss_held, rss_after, faults, report.functions,
                      report.variables).to_dict()


def _function_worker(spec):
    """Subprocess entry point of :func:`profile`: print one mode's JSON."""
    args = json.loads(spec)
    for p in args.pop("sys_path"):
        if p not in sys.path:
            sys.path.append(p)
    try:
        row = measure_function(**args)
    except Exception as exc:    # reported to the parent, which re-raises it
        import traceback

        row = {"error_type": type(exc).__name__, "error": str(exc),
               "traceback": traceback.format_exc()}
    print(json.dumps(row))


_BOOT_FN = _BOOT.replace("m._worker(", "m._function_worker(")


def _profile(target, specs, impl, modes, warmup):
    shapes, nbytes = [], 0
    for s in specs:
        if "npy" in s:
            a = np.load(s["npy"], mmap_mode="r")
            shapes.append(list(a.shape))
            nbytes += a.nbytes
        else:
            shapes.append(list(s["shape"]))
            nbytes += int(np.prod(s["shape"])) * np.dtype(s.get("dtype", "float64")).itemsize
    results = {}
    for mode in modes:
        spec = dict(target=target, inputs=specs, mode=mode, impl=impl,
                    warmup=warmup, sys_path=[os.getcwd()] + sys.path)
        _log(f"profiling {target} {mode} on {impl}")
        proc = subprocess.run(
            [sys.executable, "-c", _BOOT_FN, os.path.abspath(__file__),
             json.dumps(spec)],
            env=_worker_env(), capture_output=True, text=True, cwd=_ROOT)
        lines = proc.stdout.strip().splitlines()
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"profile worker {target} {mode} failed "
                               f"(exit {proc.returncode}):\n{proc.stderr[-4000:]}")
        row = json.loads(lines[-1])
        if "error" in row:
            # The user's function (or its inputs) failed: same exception type
            # for the common ones, the worker's traceback otherwise.
            kind = {"TypeError": TypeError, "ValueError": ValueError,
                    "ImportError": ImportError, "ModuleNotFoundError": ImportError,
                    "AttributeError": AttributeError}.get(row["error_type"])
            if kind is not None:
                raise kind(f"{target} ({mode}): {row['error']}")
            raise RuntimeError(f"{target} ({mode}) raised in the worker:\n"
                               f"{row['traceback']}")
        results[mode] = ModeMemory(**row)
    return Profile(target, impl, shapes, nbytes, results)


def _check_modes(modes):
    modes = tuple(modes)
    bad = [m for m in modes if m not in PROFILE_MODES]
    if bad or not modes:
        raise ValueError(f"modes must be a non-empty subset of {PROFILE_MODES}, "
                         f"got {modes!r}")
    return modes


def profile(fn, *inputs, impl="fastgrad", modes=PROFILE_MODES, warmup=True):
    """Profile the memory of a user's function under backprop and no_grad.

    ``fn(*variables)`` must return one Variable.  Each mode runs in a fresh
    subprocess (so the modes cannot pollute each other): ``backprop``
    (forward, then ``y.backward()`` with ``y`` alive), ``no_grad`` (forward
    only, under ``no_grad()``) and ``retain_grad`` (``backward(retain_grad=
    True)``).  Each is run once to warm up and once measured.

    Parameters
    ----------
    fn : callable or str
        A module-level function (a fresh process imports it) or its name,
        ``"module:function"`` or ``"path/to/file.py:function"``.
    *inputs : array_like or Variable
        The inputs; each becomes a Variable of ``impl`` in the workers (a
        Variable given here contributes its ``data``).
    impl : str
        ``"fastgrad"``, ``"fastgrad.dezero"`` (the full face) or ``"dezero"``
        (the reference, if ``fn`` only uses operators).
    modes : sequence of str
        Which of ``"backprop"``, ``"no_grad"``, ``"retain_grad"`` to run.
    warmup : bool
        Run each mode once before measuring it.

    Returns
    -------
    Profile
        ``modes`` maps each mode to a :class:`ModeMemory` (peak, held while
        the output lives, after ``del``; tracemalloc exact, RSS as a second
        opinion); ``savings`` gives what no_grad and retain_grad=False save,
        in bytes and as ratios; ``print(result)`` shows the table.

    Examples
    --------
    >>> import numpy as np, fastgrad.memory as fm
    >>> p = fm.profile("mymodel:loss", np.ones((1000, 1000)))  # doctest: +SKIP
    >>> print(p)                                                # doctest: +SKIP
    """
    target = _target_of(fn)
    if impl not in ("fastgrad", "fastgrad.dezero", "dezero"):
        raise ValueError(f"impl must be 'fastgrad', 'fastgrad.dezero' or 'dezero', "
                         f"got {impl!r}")
    modes = _check_modes(modes)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="fastgrad-profile-") as tmp:
        specs = []
        for i, a in enumerate(inputs):
            if hasattr(a, "creator") and hasattr(a, "data"):
                a = a.data
            a = np.asarray(a)
            if a.dtype.kind not in "fiub":
                raise TypeError(f"input {i} must be numeric, not {a.dtype}")
            path = os.path.join(tmp, f"input{i}.npy")
            np.save(path, a)
            specs.append({"npy": path})
        return _profile(target, specs, impl, modes, warmup)


def profile_shapes(fn, shapes, dtype="float64", seed=0, impl="fastgrad",
                   modes=PROFILE_MODES, warmup=True):
    """:func:`profile` with inputs made in the workers from their shapes.

    Each input is uniform in [0.5, 1.5) (finite under log, sqrt and division),
    drawn with ``seed`` + its position.  Nothing is written to disk.
    """
    target = _target_of(fn)
    modes = _check_modes(modes)
    np.dtype(dtype)     # raises TypeError for an unknown dtype
    specs = []
    for i, shape in enumerate(shapes):
        shape = [int(n) for n in shape]
        if any(n < 0 for n in shape):
            raise ValueError(f"input {i}: shape {tuple(shape)} has a negative size")
        specs.append({"shape": shape, "dtype": str(np.dtype(dtype)), "seed": seed + i})
    return _profile(target, specs, impl, modes, warmup)


def _parse_shape(text):
    try:
        shape = tuple(int(n) for n in text.replace("x", ",").split(",") if n.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad shape {text!r}: use e.g. 1000,1000") from None
    if any(n < 0 for n in shape):
        raise argparse.ArgumentTypeError(f"bad shape {text!r}: negative size")
    return shape


def profile_main(argv):
    """``python -m fastgrad.memory profile module:function --shape ...``."""
    parser = argparse.ArgumentParser(
        prog="python -m fastgrad.memory profile",
        description="Memory of your function under backprop, no_grad() and "
                    "retain_grad=True, each in a fresh process: peak, held "
                    "while the output lives, after del.")
    parser.add_argument("target", help="module:function or path/to/file.py:function;"
                        " it takes one Variable per --shape and returns a Variable")
    parser.add_argument("--shape", type=_parse_shape, action="append", required=True,
                        help="shape of one input, e.g. 1000,1000 (repeat per input)")
    parser.add_argument("--dtype", default="float64", help="inputs' dtype (default float64)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the inputs")
    parser.add_argument("--impl", default="fastgrad",
                        choices=("fastgrad", "fastgrad.dezero", "dezero"))
    parser.add_argument("--mode", action="append", choices=PROFILE_MODES,
                        help="run only this mode (repeatable; default: all)")
    parser.add_argument("--no-warmup", action="store_true",
                        help="measure the first call (includes first-call caches)")
    parser.add_argument("--json", metavar="PATH", help="also write the result as JSON")
    args = parser.parse_args(argv)
    try:
        np.dtype(args.dtype)
        result = profile_shapes(args.target, args.shape, args.dtype, args.seed,
                                args.impl, args.mode or PROFILE_MODES,
                                not args.no_warmup)
    except (TypeError, ValueError, ImportError, AttributeError, RuntimeError) as exc:
        parser.exit(1, f"error: {exc}\n")
    print(result.table())
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result.to_dict(), f, indent=1)
        _log(f"wrote {args.json}")
    return 0


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
    """Command-line entry point of ``python -m fastgrad.memory``.

    ``python -m fastgrad.memory [--size N] [--depth D] [--json PATH]
    [--plot PNG]`` measures the squares workload; ``python -m fastgrad.memory
    profile module:function --shape 1000,1000 ...`` profiles your function
    (see :func:`profile_main`).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "profile":
        return profile_main(argv[1:])
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
