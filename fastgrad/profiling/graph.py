"""What a live graph keeps in memory: :func:`graph_report`.

For the output of a computation, how many functions and variables its graph
has and which functions keep which bytes alive (outputs, leaf inputs saved
for backward, grads), largest first.  The graph is walked through public
attributes only, so both faces (and DeZero's own Variables) work.

Only the standard library and NumPy are imported (see
:mod:`fastgrad.profiling.workers`).
"""
import dataclasses
import gc
import heapq
import weakref

import numpy as np

MiB = 1 << 20

__all__ = ["graph_report", "GraphReport", "OpMemory"]


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


def array_of(value):
    """The ndarray behind ``value``: itself, or a Variable's ``data`` (on the
    full face a grad is a Variable); None for anything else."""
    if isinstance(value, np.ndarray):
        return value
    data = getattr(value, "data", None)
    return data if isinstance(data, np.ndarray) else None


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
        a = array_of(a)
        if a is None:
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
    >>> import numpy as np, fastgrad, fastgrad.profiling
    >>> x = fastgrad.Variable(np.ones(1000))
    >>> y = (x ** 2) * 3.0
    >>> r = fastgrad.profiling.graph_report(y)
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
