"""`python -m bench [--quick] [ingest|drain|latency|growth|relay|metrics|chaos ...]`

With no benchmark named, runs them all and writes bench/RESULTS.md (the machine, the
versions, the exact command and every table). Naming benchmarks runs only those and
prints their tables (add `--write` to write RESULTS.md from them too).
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import signal
import sys
import time
import traceback

from bench.harness import BENCH_DIR, ensure_tools
from bench.machine import describe
from bench.report import Report, verdict

BENCHMARKS = ("ingest", "drain", "latency", "growth", "relay", "metrics", "console", "chaos")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="shorter runs and smaller sets: everything in a few minutes")
    parser.add_argument("--write", action="store_true",
                        help="write bench/RESULTS.md even when only some benchmarks run")
    sub = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    for name in BENCHMARKS:
        module = importlib.import_module(f"bench.{name}")
        child = sub.add_parser(name, help=(module.__doc__ or "").splitlines()[0])
        child.add_argument("--quick", action="store_true", default=argparse.SUPPRESS)
        module.add_arguments(child)
    return parser


def defaults(name: str, quick: bool) -> argparse.Namespace:
    """The options of benchmark `name` as `python -m bench [--quick] name` would set them."""
    return build_parser().parse_args([*(["--quick"] if quick else []), name])


def stop_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C, so every `finally` stops what the benchmark started."""
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    args = build_parser().parse_args(argv)
    ensure_tools()
    names = [args.benchmark] if args.benchmark else list(BENCHMARKS)
    reports: list[Report] = []
    failed = False
    started = time.time()
    machine = describe()  # before the run: its load average is the neighbours', not ours
    for name in names:
        options = args if args.benchmark else defaults(name, args.quick)
        module = importlib.import_module(f"bench.{name}")
        for key, value in (module.QUICK if options.quick else module.FULL).items():
            if getattr(options, key, None) is None:
                setattr(options, key, value)
        print(f"\n=== {name} ===", flush=True)
        try:
            report = module.run(options)
        except Exception:  # one broken benchmark must not hide the others' figures
            failed = True
            detail = traceback.format_exc()
            print(detail, file=sys.stderr)
            report = Report(name, f"python -m bench {name}", f"Failed:\n\n```\n{detail}```")
        reports.append(report)
        print("\n" + report.markdown(), flush=True)
    if not args.benchmark or args.write:
        write_results(reports, argv, time.time() - started, machine)
    return 1 if failed else 0


def write_results(reports: list[Report], argv: list[str], seconds: float,
                  machine: str) -> None:
    command = "python -m bench " + shlex.join(argv) if argv else "python -m bench"
    lines = [
        "# Benchmark results", "",
        "Written by `python -m bench` (see bench/README.md). Each figure sits beside its "
        "ceiling or peer measured in the same run; on a shared machine the absolute figures "
        "move from run to run, the ratios much less. Why a target does not hold, and what "
        "would close it: bench/README.md, \"Where the targets stand\".", "",
        f"Command: `{command.strip()}` ({seconds / 60:.1f} minutes)", "",
        machine, "",
        "## Summary", "",
        "| benchmark | target | measured | holds |", "| --- | --- | --- | --- |",
    ]
    for report in reports:
        for target, measured, holds in report.verdicts:
            lines.append(f"| {report.title.split(':')[0]} | {target} | {measured} | "
                         f"{verdict(holds)} |")
    lines.append("")
    lines += [report.markdown() for report in reports]
    (BENCH_DIR / "RESULTS.md").write_text("\n".join(lines).rstrip() + "\n")
    print(f"\nwrote {BENCH_DIR / 'RESULTS.md'}")


if __name__ == "__main__":
    sys.exit(main())
