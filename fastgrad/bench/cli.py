"""Command line: ``fastgrad-bench [options]`` and ``fastgrad-bench compare``."""
import argparse
import gc
import os
import sys
import time

from . import compare as compare_mod
from . import kernels, memsuite, report, runner, targets
from .peers import PEERS, PeerUnavailable, load
from .timing import Settings, is_noisy

SUITE_ORDER = ("overhead", "scaling", "kernels", "memory")
DEFAULT_SUITES = SUITE_ORDER
TIER_SETTINGS = {
    # tier: (target seconds per repeat, repeats, --max-time seconds per iteration)
    "quick": (0.02, 3, 0.25),
    "default": (0.1, 5, 1.0),
    "full": (0.2, 7, 10.0),
}


def _sizes(text):
    """Parse '1e6,1e7' or '1000000' into a list of positive ints."""
    out = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        try:
            value = float(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a size: {part!r}") from None
        if value < 1 or value != int(value):
            raise argparse.ArgumentTypeError(f"sizes must be positive integers: {part!r}")
        out.append(int(value))
    if not out:
        raise argparse.ArgumentTypeError("empty size list")
    return out


def _peers(text):
    names = [p for p in text.split(",") if p]
    bad = [p for p in names if p not in PEERS]
    if bad:
        raise argparse.ArgumentTypeError(
            f"unknown peer(s) {', '.join(bad)}; choose from {', '.join(PEERS)}")
    return names


def _positive(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
    return value


def _positive_int(text):
    value = _positive(text)
    if value != int(value):
        raise argparse.ArgumentTypeError(f"must be an integer: {text!r}")
    return int(value)


def build_run_parser():
    """Parser of the main (run) command."""
    p = argparse.ArgumentParser(
        prog="fastgrad-bench",
        description="Benchmark fastgrad against NumPy, DeZero (stage 2), PyTorch, "
                    "autograd and fastgrad's pure-Python mode, in one sitting.",
        epilog="Compare two recorded runs: fastgrad-bench compare A.json B.json; "
               "print a recorded run again: fastgrad-bench show RUN.json (each has "
               "--help).  Exit codes: 0 ok, 1 failed "
               "correctness check or crashed peer, 2 bad arguments.",)
    p.add_argument("--suite", action="append", choices=SUITE_ORDER, metavar="NAME",
                   help=f"suite to run, repeatable; one of {', '.join(SUITE_ORDER)} "
                        "(default: all)")
    p.add_argument("--filter", action="append", metavar="SUBSTR",
                   help="only cases whose label (e.g. 'kernels mul float64 1e6') "
                        "contains SUBSTR; repeatable (any may match)")
    p.add_argument("--sizes", type=_sizes, metavar="LIST",
                   help="kernel array sizes, e.g. 1e6,1e7 (default 1e6,1e7; quick 1e5)")
    p.add_argument("--ns", type=_sizes, metavar="LIST",
                   help="scaling graph sizes N (default 1e2,1e3,1e4,1e5; quick 1e2,1e3)")
    p.add_argument("--peers", type=_peers, metavar="LIST",
                   help=f"comma-separated peers to include (default all: {','.join(PEERS)})")
    tier = p.add_mutually_exclusive_group()
    tier.add_argument("--quick", action="store_true",
                      help="small sizes, fewer repeats: under 30 s")
    tier.add_argument("--full", action="store_true",
                      help="more repeats, larger budgets, adds the 10^6-op deep chain")
    p.add_argument("--repeats", type=_positive_int, help="timed repeats per cell "
                   "(default 5; quick 3)")
    p.add_argument("--target", type=_positive, metavar="SECONDS",
                   help="aimed duration of one repeat (default 0.1; quick 0.02; full 0.2)")
    p.add_argument("--max-time", type=_positive, metavar="SECONDS",
                   help="time budget of one iteration: a cell whose warm-up "
                        "iteration exceeds it keeps that single sample, and scaling "
                        "cells predicted to exceed 5x it are skipped (default 1; "
                        "quick 0.25; full 10)")
    p.add_argument("--noise", type=_positive, default=0.10, metavar="FRACTION",
                   help="flag cells whose IQR/median exceeds this (default 0.1)")
    p.add_argument("--json", metavar="PATH", help="write raw timings and metadata here")
    p.add_argument("--plot", metavar="DIR", help="write PNG charts here (needs matplotlib)")
    return p


def build_compare_parser():
    """Parser of ``fastgrad-bench compare``."""
    p = argparse.ArgumentParser(
        prog="fastgrad-bench compare",
        description="Compare two --json results files cell by cell: B against A is "
                    "'faster'/'slower' when the interquartile ranges do not overlap and "
                    "the ratio exceeds --factor, else 'not significant'.",)
    p.add_argument("a", metavar="A.json", help="baseline run")
    p.add_argument("b", metavar="B.json", help="new run")
    p.add_argument("--factor", type=_positive, default=1.05,
                   help="smallest ratio reported as a change (default 1.05)")
    p.add_argument("--peer", help="only rows of this peer (e.g. fastgrad)")
    p.add_argument("--phase", choices=("fwd", "bwd", "del", "total"),
                   help="only this phase (total = sum of the timed phases)")
    return p


def parse_run_args(argv):
    """Parse and normalise run options (tier and measurement settings)."""
    args = build_run_parser().parse_args(argv)
    args.tier = "quick" if args.quick else ("full" if args.full else "default")
    target, repeats, max_time = TIER_SETTINGS[args.tier]
    args.settings = Settings(target=args.target or target,
                             repeats=args.repeats or repeats,
                             noise_threshold=args.noise)
    args.max_time = args.max_time or max_time
    args.suites = [s for s in SUITE_ORDER if s in (args.suite or DEFAULT_SUITES)]
    if args.filter and not args.suite and not any(
            "memory" in f or f in "memory" for f in args.filter):
        # A --filter aimed at timing cases should not pay for the memory suite.
        args.suites.remove("memory")
    args.peer_list = args.peers or list(PEERS)
    return args


def _matches(label, filters):
    return not filters or any(f in label for f in filters)


def _availability(peers):
    """{peer: (available, reason)}; importing now also keeps import time out
    of the first measurement."""
    out = {}
    for peer in peers:
        name = "fastgrad" if peer == "fastgrad-pure" else peer
        try:
            load(name)
            out[peer] = (True, None)
        except PeerUnavailable as exc:
            out[peer] = (False, str(exc))
    return out


def _freeze_heap():
    """Move the objects of all imported modules (torch alone brings ~10^5)
    out of the collector's reach: each gc.collect() between repeats then
    costs microseconds instead of ~0.2 s, and timings are unaffected."""
    gc.collect()
    gc.freeze()


def run(argv):
    """The benchmark run; returns the exit code."""
    args = parse_run_args(argv)
    if args.plot and not __import__("fastgrad.bench.plot", fromlist=["x"]).have_matplotlib():
        print("fastgrad-bench: error: --plot needs matplotlib, which is not installed "
              "(pip install matplotlib)", file=sys.stderr)
        return 2
    started = time.time()
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    available = _availability(args.peer_list)
    # Read now, not at the end: the in-place build may be replaced mid-run.
    build = report.fastgrad_build()
    _freeze_heap()
    for peer, (ok, reason) in available.items():
        if not ok:
            print(f"peer {peer}: skipped ({reason})", file=sys.stderr)

    selected = {}
    for name in args.suites:
        if name == "memory":
            continue
        cases = runner.SUITES[name].cases(args)
        selected[name] = [c for c in cases if _matches(c.label, args.filter)]
    total = sum(len([p for p in c.peers if p in args.peer_list])
                for cases in selected.values() for c in cases)
    total += "memory" in args.suites
    progress = runner.Progress(total)

    doc = {"schema": report.SCHEMA, "created": runner.timestamp(),
           "command": ["fastgrad-bench"] + list(argv if argv is not None else []),
           "tier": args.tier, "settings": dict(args.settings.__dict__,
                                               max_time=args.max_time),
           "results": [], "exponents": [], "stream_ceiling": None, "memory": None,
           "targets": []}
    index = 0
    for name in args.suites:
        if name == "memory":
            progress.line(index, "memory fastgrad.memory.collect")
            ok_peers = [p for p, (ok, _) in available.items() if ok]
            doc["memory"] = memsuite.run(args, ok_peers)
            index += 1
            print(report.memory_table(doc["memory"]) + "\n", flush=True)
            continue
        cases = selected[name]
        if not cases:
            continue
        if name == "kernels":
            size = max(max(c.params["size"] for c in cases), 10_000_000)
            progress.line(index, f"kernels STREAM ceiling N={size:g}")
            doc["stream_ceiling"] = kernels.stream_ceiling(size, args.settings)
        records, index = runner.run_cases(cases, args.peer_list, args.settings,
                                          args.max_time, progress, index)
        doc["results"].extend(records)
        if name == "overhead":
            table = report.overhead_table(records, args.noise)
        elif name == "scaling":
            exps = runner.growth_exponents(records)
            doc["exponents"] = exps
            table = report.scaling_table(records, args.noise, exps)
        else:
            table = report.kernels_tables(records, args.noise, doc["stream_ceiling"])
        skips = report.skipped_lines(records)
        if skips:
            table += "\n" + "\n".join(skips)
        print(table + "\n", flush=True)

    if doc["results"]:
        doc["targets"] = targets.evaluate(doc["results"], doc["exponents"],
                                          doc["stream_ceiling"])
        print(targets.format_targets(doc["targets"]) + "\n", flush=True)

    doc["machine"] = report.machine_metadata(report.peer_versions(available))
    doc["machine"]["fastgrad_PURE_in_parent"] = runner._engine_pure_flag()
    doc["machine"]["loadavg_start"] = load_start  # a busy machine explains noise
    doc["machine"]["fastgrad_build"] = build
    doc["elapsed_seconds"] = time.time() - started
    noisy = [f"{r['label']} {r['peer']} {ph}" for r in doc["results"]
             if r["status"] == "ok" for ph, st in r["stats"]["phases"].items()
             if is_noisy(st, args.noise)]
    if noisy:
        print(f"warning: {len(noisy)} noisy measurement(s) (IQR/median > "
              f"{args.noise:.0%}), e.g. {noisy[0]}; the machine may be busy",
              file=sys.stderr)
    if args.json:
        report.write_json(args.json, doc)
        print(f"wrote {args.json}", file=sys.stderr)
    if args.plot:
        from .plot import write_plots
        for path in write_plots(doc, args.plot):
            print(f"wrote {path}", file=sys.stderr)
    print(f"done in {doc['elapsed_seconds']:.0f} s", file=sys.stderr)

    failed = [r for r in doc["results"] if r["status"] == "failed"]
    if doc["memory"] and doc["memory"]["status"] == "failed":
        failed.append({"label": "memory", "peer": "fastgrad.memory",
                       "reason": doc["memory"]["reason"]})
    for r in failed:
        print(f"FAILED: {r['label']} {r['peer']}: {r['reason']}", file=sys.stderr)
    if failed:
        first = failed[0]
        print(f"fastgrad-bench: {len(failed)} cell(s) failed; first: {first['label']} "
              f"{first['peer']}: {first['reason']}", file=sys.stderr)
        return 1
    return 0


def compare(argv):
    """``fastgrad-bench compare``; returns the exit code."""
    args = build_compare_parser().parse_args(argv)
    try:
        doc_a = compare_mod.load(args.a)
        doc_b = compare_mod.load(args.b)
    except (OSError, ValueError) as exc:
        print(f"fastgrad-bench compare: error: {exc}", file=sys.stderr)
        return 2
    rows, gm = compare_mod.compare(doc_a, doc_b, args.factor, args.peer, args.phase)
    print(compare_mod.format_compare(rows, gm))
    return 0


def build_show_parser():
    """Parser of ``fastgrad-bench show``."""
    p = argparse.ArgumentParser(
        prog="fastgrad-bench show",
        description="Print the tables (and targets) of a recorded --json run again.")
    p.add_argument("path", metavar="RUN.json")
    p.add_argument("--noise", type=_positive, default=0.10, metavar="FRACTION",
                   help="flag cells whose IQR/median exceeds this (default 0.1)")
    return p


def show(argv):
    """``fastgrad-bench show``: re-render a recorded run; returns the exit code."""
    args = build_show_parser().parse_args(argv)
    try:
        doc = compare_mod.load(args.path)
    except (OSError, ValueError) as exc:
        print(f"fastgrad-bench show: error: {exc}", file=sys.stderr)
        return 2
    print(render_document(doc, args.noise))
    return 0


def render_document(doc, noise):
    """All tables of a results document, as the run printed them."""
    records = doc["results"]
    exps = runner.growth_exponents(records)
    blocks = [report.overhead_table(records, noise),
              report.scaling_table(records, noise, exps),
              report.kernels_tables(records, noise, doc.get("stream_ceiling")),
              report.memory_table(doc.get("memory"))]
    for i, suite in enumerate(("overhead", "scaling", "kernels")):
        skips = report.skipped_lines([r for r in records if r["suite"] == suite])
        if blocks[i] and skips:
            blocks[i] += "\n" + "\n".join(skips)
    if records:
        blocks.append(targets.format_targets(
            targets.evaluate(records, exps, doc.get("stream_ceiling"))))
    return "\n\n".join(b for b in blocks if b)


def main(argv=None):
    """Console entry point: ``fastgrad-bench [run] ...``, ``compare A B``,
    ``show RUN``."""
    if argv is None:
        argv = sys.argv[1:]
    argv = list(argv)
    if argv and argv[0] == "compare":
        return compare(argv[1:])
    if argv and argv[0] == "show":
        return show(argv[1:])
    if argv and argv[0] == "_worker":  # internal: the fastgrad-pure child process
        return runner.worker_main()
    if argv and argv[0] == "run":
        argv = argv[1:]
    return run(argv)
