"""The memory of your own function: :func:`profile`.

``profile(fn, *inputs)`` runs ``fn`` under backprop, ``no_grad()`` and
``retain_grad=True``, each in a fresh process, and reports peak,
held-while-the-output-lives and after-``del`` memory (tracemalloc exact,
RSS as a second opinion) with what each mode saves.  From the shell::

    python -m fastgrad.profiling profile mymodule:loss --shape 1000,1000

Only the standard library and NumPy are imported (see
:mod:`fastgrad.profiling.workers`).
"""
import argparse
import dataclasses
import gc
import json
import os
import sys
import tracemalloc

import numpy as np

from fastgrad.profiling import probes, workers
from fastgrad.profiling.graph import MiB, array_of, graph_report

__all__ = ["profile", "profile_shapes", "Profile", "ModeMemory", "PROFILE_MODES"]

# Workers run measure_function (below).
_ENTRY = "fastgrad.profiling.profiler:measure_function"


def _log(msg):
    print(msg, file=sys.stderr, flush=True)


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
    module = workers.load_impl(impl)
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
        base = probes.Baseline()

        y = _run_fn(module, fn, xs, mode)

        run = base.after_run()
        out = y.data
        output_bytes = out.nbytes if isinstance(out, np.ndarray) else 0
        del out
        report = graph_report(y, top=0)
        del y
        after_del = base.numpy_bytes()
        rss_after = base.rss_after_idle_purge()
        grads = [array_of(x.grad) for x in xs]
        grads_bytes = sum(g.nbytes for g in grads if g is not None)
        del grads
    finally:
        tracemalloc.stop()
        gc.enable()
    return ModeMemory(mode, run["peak"], run["held"], after_del, grads_bytes, output_bytes,
                      run["rss_peak"], run["rss_held"], rss_after, run["faults"],
                      report.functions, report.variables).to_dict()


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
        _log(f"profiling {target} {mode} on {impl}")
        row = workers.run_worker(
            _ENTRY, dict(target=target, inputs=specs, mode=mode, impl=impl, warmup=warmup),
            isolated=(impl == "dezero"), what=f"{target} ({mode})",
            sys_path=[os.getcwd()] + sys.path)
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
    >>> import numpy as np, fastgrad.profiling as fp
    >>> p = fp.profile("mymodel:loss", np.ones((1000, 1000)))  # doctest: +SKIP
    >>> print(p)                                                # doctest: +SKIP
    """
    target = _target_of(fn)
    if impl not in workers.IMPLS:
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
    """``python -m fastgrad.profiling profile module:function --shape ...``."""
    parser = argparse.ArgumentParser(
        prog="python -m fastgrad.profiling profile",
        description="Memory of your function under backprop, no_grad() and "
                    "retain_grad=True, each in a fresh process: peak, held "
                    "while the output lives, after del.")
    parser.add_argument("target", help="module:function or path/to/file.py:function;"
                        " it takes one Variable per --shape and returns a Variable")
    parser.add_argument("--shape", type=_parse_shape, action="append", required=True,
                        help="shape of one input, e.g. 1000,1000 (repeat per input)")
    parser.add_argument("--dtype", default="float64", help="inputs' dtype (default float64)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the inputs")
    parser.add_argument("--impl", default="fastgrad", choices=workers.IMPLS)
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
