"""``fastgrad-bench [SUITE ...] [options]``, ``compare A.json B.json``,
``show RUN.json``."""
import argparse
import gc
import os
import sys
import time

from . import measure, report, roofline, targets
from . import peers as P
from . import threads as T
from .measure import Settings
from .suites import SUITES

TIERS = {
    "quick": Settings(target=0.01, rounds=3, max_time=0.25),
    "default": Settings(target=0.05, rounds=5, max_time=1.0),
    "full": Settings(target=0.2, rounds=7, max_time=10.0),
}


def _peer_help():
    lines = ["peers (table columns, in this order):"]
    for name, (what, module, pip) in P.PEER_INFO.items():
        state = "installed" if P.installed(name) else f"NOT INSTALLED: {pip}"
        lines.append(f"  {name:14s} {what}\n  {'':14s} needs {module} ({state})")
    return "\n".join(lines)


def _positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a {kind.__name__}: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
        return value
    return parse


def _thread_list(text):
    try:
        return T.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _peer_list(text):
    names = [p for p in text.split(",") if p]
    bad = [p for p in names if p not in P.PEER_INFO]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"unknown peer(s) {', '.join(bad) or text!r}; choose from {', '.join(P.PEERS)}")
    return names


def run_parser():
    p = argparse.ArgumentParser(
        prog="fastgrad-bench", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Time fastgrad against its peers, interleaved, after checking "
                    "every peer's results against a reference.  Tables go to "
                    "stdout, progress to stderr.",
        epilog=_peer_help() + "\n\nother commands:\n"
        "  fastgrad-bench compare A.json B.json   cell by cell, B against A\n"
        "  fastgrad-bench show RUN.json           print a recorded run again\n\n"
        "exit codes: 0 ok; 1 a peer gave wrong results or crashed; 2 bad arguments")
    p.add_argument("suites", nargs="*", metavar="SUITE",
                   help=f"suites to run (default all): {', '.join(SUITES)}")
    tier = p.add_mutually_exclusive_group()
    tier.add_argument("--quick", action="store_true",
                      help="small sizes, 3 rounds of 10 ms: about a minute")
    tier.add_argument("--full", action="store_true",
                      help="every kernel/unary cell at 1e6 and 1e7, the 1e6-op chain, "
                           "7 rounds of 0.2 s, 10 s per iteration allowed")
    p.add_argument("--peers", type=_peer_list, metavar="LIST",
                   help="comma-separated peers (default: all)")
    p.add_argument("--filter", action="append", metavar="SUBSTR",
                   help="only cases whose label (e.g. 'kernels mul float64 1e6') "
                        "contains SUBSTR; repeatable")
    p.add_argument("--rounds", type=_positive(int), help="interleaved rounds (default 5)")
    p.add_argument("--target", type=_positive(float), metavar="SECONDS",
                   help="length of one repeat (default 0.05)")
    p.add_argument("--max-time", type=_positive(float), metavar="SECONDS",
                   help="an iteration longer than this is timed once, not interleaved "
                        "(marked *); scaling cells predicted over 5x it are skipped "
                        "(default 1)")
    p.add_argument("--threads", type=_thread_list, metavar="LIST", default="1,all",
                   help="thread settings of the threaded suites (kernels, unary, fused, "
                        "lstsq, mlp, conv), comma-separated counts or 'all' (the cores "
                        "this process may use); every peer runs each setting (default "
                        "1,all); the other suites run on one thread")
    p.add_argument("--targets", metavar="FILE",
                   help="acceptance targets to evaluate (default: the shipped "
                        "fastgrad/bench/targets.json)")
    p.add_argument("--times", action="store_true",
                   help="tables of every peer's median time instead of ratios")
    p.add_argument("--json", metavar="PATH", help="write raw timings and metadata here")
    return p


def compare_parser():
    p = argparse.ArgumentParser(
        prog="fastgrad-bench compare",
        description="Compare two --json runs cell by cell: B is faster/slower than A "
                    "when the interquartile ranges of their rounds do not overlap and "
                    "the ratio exceeds --factor, else 'not significant'.")
    p.add_argument("a", metavar="A.json")
    p.add_argument("b", metavar="B.json")
    p.add_argument("--factor", type=_positive(float), default=1.05,
                   help="smallest ratio reported as a change (default 1.05)")
    p.add_argument("--peer", help="only this peer's cells")
    p.add_argument("--phase", help="only this phase (fwd, bwd, del, total, ...)")
    return p


def show_parser():
    p = argparse.ArgumentParser(prog="fastgrad-bench show",
                                description="Print the tables of a recorded --json run.")
    p.add_argument("path", metavar="RUN.json")
    p.add_argument("--times", action="store_true", help="median times instead of ratios")
    p.add_argument("--targets", metavar="FILE",
                   help="evaluate these targets on the run instead of the recorded ones")
    return p


def parse_run_args(argv):
    parser = run_parser()
    args = parser.parse_args(argv)
    bad = [s for s in args.suites if s not in SUITES]
    if bad:
        parser.error(f"unknown suite(s) {', '.join(bad)}; choose from {', '.join(SUITES)}")
    args.tier = "quick" if args.quick else "full" if args.full else "default"
    base = TIERS[args.tier]
    args.settings = Settings(target=args.target or base.target,
                             rounds=args.rounds or base.rounds,
                             max_time=args.max_time or base.max_time)
    args.suites = [s for s in SUITES if s in (args.suites or SUITES)]
    args.peer_list = args.peers or list(P.PEERS)
    return args


def _log(text):
    print(text, file=sys.stderr, flush=True)


def _suite_refusal(suite):
    """A suite is measured against fastgrad: without fastgrad's part of it
    there is nothing to run."""
    try:
        missing = P.get(P.REFERENCE, suite.full).missing(suite.needs)
    except P.Unavailable as exc:
        return str(exc)
    return f"this fastgrad has no {', '.join(missing)}" if missing else None


def _children(names, thread_counts, workers):
    """Availability of the peers served by child processes, asked of the
    child of the first thread setting (started now, kept for the run)."""
    out = {}
    for name in names:
        env = P.child_env(name, thread_counts[0])
        if env is None:
            continue
        key = tuple(sorted(env.items()))
        if key not in workers:
            workers[key] = measure.Worker(env)
        try:
            out.update(workers[key].call(cmd="hello", peers=[name])["peers"])
        except RuntimeError as exc:
            out[name] = {"available": False, "reason": f"child process: {exc}",
                         "details": {}}
    return out


def _memory(case):
    size, depth = case.params["size"], case.params["depth"]
    info = {"status": "ok", "reason": None, "size": size, "depth": depth, "rows": []}
    try:
        from .memory import collect
        info["rows"] = [dict(r) for r in collect(size, depth)]
    except ImportError as exc:
        info.update(status="skipped", reason=f"fastgrad.bench.memory.collect unavailable ({exc})")
    except Exception as exc:  # the memory tool's crash is this run's failure
        info.update(status="failed", reason=f"fastgrad.bench.memory.collect: {exc!r}")
    return info


def run(argv):
    args = parse_run_args(argv)
    started = time.time()
    try:
        T.require_blas_control()
        target_rows = targets.load(args.targets)
    except (T.Unsupported, ValueError) as exc:
        print(f"fastgrad-bench: error: {exc}", file=sys.stderr)
        return 2
    names = list(args.peer_list)
    status, workers = {}, {}
    remote = _children([n for n in names if P.installed(n)], args.threads, workers)
    for name in names:
        details = {}
        reason = None if P.installed(name) else f"not installed: {P.PEER_INFO[name][2]}"
        if reason is None and name in remote:
            reason, details = remote[name]["reason"], remote[name]["details"]
        elif reason is None:
            try:  # import now: import time stays out of the first timing
                details = P.get(name).versions
            except P.Unavailable as exc:
                reason = str(exc)
        status[name] = {"available": reason is None, "reason": reason,
                        "version": P.version(name), "details": details}
        if reason:
            _log(f"peer {name}: skipped ({reason})")
    build = report.fastgrad_build()
    # The imported modules' objects (torch: ~10^5) out of the collector's
    # reach: gc.collect() between repeats then costs microseconds.
    gc.collect()
    gc.freeze()

    doc = {"schema": report.SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "command": ["fastgrad-bench"] + list(argv), "tier": args.tier,
           "settings": vars(args.settings), "threads": args.threads,
           "suites": {}, "results": [], "memory": None, "roofline": None,
           "targets_file": args.targets or targets.DEFAULT_PATH}
    plan = []
    for name in args.suites:
        suite = SUITES[name]
        cases = [c for c in suite.cases(args.tier, args.threads)
                 if not args.filter or any(f in c.label for f in args.filter)]
        if not cases:
            continue
        why = None if name == "memory" else _suite_refusal(suite)
        doc["suites"][name] = {"status": "skipped" if why else "ok", "reason": why}
        plan.append((suite, [] if why else cases))
    total = max(1, sum(len(c) for _, c in plan))
    done = 0
    if any(s.traffic and cases for s, cases in plan):
        _log("roofline: timing STREAM copy and triad")
        doc["roofline"] = roofline.measure(args.threads)
        print(report.roofline_table(doc["roofline"]) + "\n", flush=True)

    def runner(suite, case, name):
        env = P.child_env(name, case.threads or 1)
        if env is None:
            return measure.Local(suite, case, name)
        key = tuple(sorted(env.items()))
        if key not in workers:
            workers[key] = measure.Worker(env)
        return measure.Remote(workers[key], suite, case, name)

    budget = measure.Budget(args.settings)
    try:
        for suite, cases in plan:
            for case in cases:
                _log(f"[{100 * done // total:3d}%] {case.label}")
                done += 1
                if suite.name == "memory":
                    doc["memory"] = _memory(case)
                    continue
                state = T.apply(case.threads or 1)
                live = [n for n in names if status[n]["available"]]
                rec = measure.run_case(suite, case, live, args.settings, budget,
                                       runner, _log, tails=suite.threaded)
                rec["thread_state"] = state
                roofline.annotate(rec, suite, case, doc["roofline"])
                for n in names:
                    if not status[n]["available"]:
                        rec["peers"][n] = {"status": "skipped", "reason": status[n]["reason"]}
                doc["results"].append(rec)
            if suite.name == "memory":
                print(report.memory_table(doc["memory"]) + "\n", flush=True)
                continue
            text = report.suite_table(doc, suite.name, args.times)
            if suite.name == "scaling":
                text += "\n" + report.exponent_lines(report.exponents(doc))
            print(text.rstrip() + "\n", flush=True)
    finally:
        for w in workers.values():
            w.close()
        gc.unfreeze()

    doc["targets"] = targets.evaluate(doc, target_rows)
    if doc["results"]:
        print(targets.format_targets(doc["targets"], args.targets), flush=True)
    doc["machine"] = dict(report.machine(status), fastgrad_build=build)
    doc["elapsed_seconds"] = time.time() - started
    if args.json:
        report.write_json(args.json, doc)
        _log(f"wrote {args.json}")
    _log(f"done in {doc['elapsed_seconds']:.0f} s")
    failed = [f"{r['label']} {p}: {i['reason']}" for r in doc["results"]
              for p, i in r["peers"].items() if i["status"] == "failed"]
    if doc["memory"] and doc["memory"]["status"] == "failed":
        failed.append(doc["memory"]["reason"])
    for line in failed:
        _log(f"FAILED: {line}")
    return 1 if failed else 0


def _load(path, prog):
    try:
        return report.load(path)
    except (OSError, ValueError) as exc:
        print(f"fastgrad-bench {prog}: error: {exc}", file=sys.stderr)
        return None


def main(argv=None):
    """Console entry point; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    cmd = argv[0] if argv else None
    if cmd == "_worker":  # internal: the child process of a subprocess peer
        return measure.worker_main()
    if cmd == "compare":
        args = compare_parser().parse_args(argv[1:])
        a, b = _load(args.a, cmd), _load(args.b, cmd)
        if a is None or b is None:
            return 2
        print(report.format_compare(*report.compare(a, b, args.factor, args.peer,
                                                    args.phase)))
        return 0
    if cmd == "show":
        args = show_parser().parse_args(argv[1:])
        doc = _load(args.path, cmd)
        if doc is None:
            return 2
        if args.targets:
            try:
                doc = dict(doc, targets=targets.evaluate(doc, targets.load(args.targets)),
                           targets_file=args.targets)
            except ValueError as exc:
                print(f"fastgrad-bench show: error: {exc}", file=sys.stderr)
                return 2
        print(report.render_document(doc, args.times))
        return 0
    return run(argv)
