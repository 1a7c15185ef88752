"""growth: does the drain slow down as the table grows and dead tuples pile up?

1. `inbox worker` drains N pending events from an otherwise empty table, then the same N
   with 1,000,000 processed events already in it (the partial index should make them
   invisible to the claim). Target: <= 10 % slower.
2. A sustained drain of `--minutes` (10 for the full run; the default is short): a backlog
   big enough for the whole run (lean bodies: seeding millions of full ones would outlast
   the drain), the rate of the last window against the first (dead
   tuples, autovacuum). Target: last >= 90 % of first.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import psycopg

from bench.drain import copy_database, finished_attempts, inbox_worker, worker_available
from bench.harness import fresh_database, postgres, running, table, venv_env
from bench.report import Report
from bench.seed import lean_templates, seed_events

TARGET_SLOWDOWN = 0.10
TARGET_SUSTAINED = 0.90
# Vacuum the inbox after every few thousand dead rows rather than a fifth of the table, at
# full speed: each claimed event leaves two dead entries in the partial index the claim
# walks (its lease and its outcome each write a new row version).
EAGER_AUTOVACUUM_SQL = """
ALTER TABLE inbox SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000,
                       autovacuum_vacuum_insert_scale_factor = 0,
                       autovacuum_vacuum_insert_threshold = 50000,
                       autovacuum_vacuum_cost_delay = 0)
"""


def with_history(args: argparse.Namespace) -> list[list[object]]:
    """Both tables seeded once as templates, then drained from fresh copies, alternately."""
    rates: dict[str, list[float]] = {}
    seeding: dict[str, float] = {}
    cases = (("empty table", 0), ("with processed rows", args.processed))
    with postgres() as cluster:
        for label, history in cases:
            url = fresh_database(cluster, template_name(history))
            started = time.perf_counter()
            if history:
                seed_events(url, history, status="processed", prefix="evt_old_")
            seed_events(url, args.events, prefix="evt_new_", first=history + 1)
            seeding[label] = time.perf_counter() - started
        for _ in range(args.rounds):
            for label, history in cases:
                url = copy_database(cluster, template_name(history), "bench_growth")
                drained = inbox_worker(url, args.concurrency, args.events)
                rates.setdefault(label, []).append(drained.rate)
                print(f"{label}: {drained.rate:,.0f}/s", flush=True)
    # Best of the rounds: a neighbour's load only ever slows a drain down.
    return [[label, history, args.events, max(rates[label]),
             " / ".join(f"{r:,.0f}" for r in rates[label]), f"{seeding[label]:.0f} s"]
            for label, history in cases]


def template_name(history: int) -> str:
    return f"bench_growth_template_{history}"


def sustained(args: argparse.Namespace, rate_guess: float) -> tuple[list[float], dict, bool]:
    """Per-window rates over `args.minutes` of draining a backlog sized to outlast it."""
    seconds = args.minutes * 60
    # Twice what the first drains managed: the rate swings with the machine's load, and a
    # backlog that runs out ends the comparison early (see below).
    backlog = int(rate_guess * seconds * 2) + 10_000
    samples: list[tuple[float, int]] = []
    with postgres() as cluster:
        url = fresh_database(cluster, "bench_sustained")
        seed_events(url, backlog, prefix="evt_sus_", templates=lean_templates())
        if args.eager_autovacuum:  # a proposal for a migration, measured here first
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(EAGER_AUTOVACUUM_SQL)
        env = venv_env(DATABASE_URL=url, INBOX_HANDLERS="bench.noop_handlers")
        argv = [str(Path(sys.executable).parent / "inbox"), "worker", "--concurrency",
                str(args.concurrency)]
        with running(argv, env=env, name="worker") as process, \
                psycopg.connect(url, autocommit=True) as conn:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                samples.append((time.monotonic(), finished_attempts(conn)))
                if not process.alive():
                    raise RuntimeError(f"inbox worker exited:\n{process.tail()}")
                time.sleep(1.0)
            samples.append((time.monotonic(), finished_attempts(conn)))
            stats = conn.execute(
                "SELECT n_live_tup, n_dead_tup, autovacuum_count, autoanalyze_count"
                " FROM pg_stat_user_tables WHERE relname = 'inbox'").fetchone()
            left = conn.execute("SELECT count(*) FROM inbox WHERE status = 'pending'"
                                ).fetchone()[0]
    window = args.window_seconds
    first_done = [s for s in samples if s[1] > 0]
    begin = first_done[0][0] if first_done else samples[0][0]
    if left == 0:  # the backlog ran out: only the windows before that count
        total = samples[-1][1]
        samples = [s for s in samples if s[1] < total] or samples
    rates = []
    edges = [begin + k * window for k in range(int((samples[-1][0] - begin) // window) + 1)]
    for low, high in itertools.pairwise(edges):
        inside = [s for s in samples if low <= s[0] <= high]
        if len(inside) >= 2:
            rates.append((inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0]))
    info = {"live": stats[0], "dead": stats[1], "autovacuums": stats[2],
            "autoanalyzes": stats[3], "backlog": backlog, "left": left}
    return rates, info, left > 0


def run(args: argparse.Namespace) -> Report:
    report = Report("growth: drain rate as the table grows",
                    "python -m bench growth "
                    + (f"--sustained-only --rate-guess {args.rate_guess:g}"
                       if args.sustained_only else
                       f"--processed {args.processed} --events {args.events}")
                    + f" --minutes {args.minutes:g}")
    if not worker_available():
        report.body = "`inbox worker` is not available yet."
        return report
    if args.sustained_only:
        return sustained_report(report, args, args.rate_guess)
    rows = with_history(args)
    empty, full = rows[0][3], rows[1][3]
    slowdown = 1 - full / empty if empty else 0.0
    report.body = table(["table", "processed rows", "pending drained", "events/s (best)",
                         "rounds", "seeding"], rows)
    report.body += (
        f"\n\n`inbox worker --concurrency {args.concurrency}` (no-op handler); each table "
        f"seeded once, then drained {args.rounds} times from fresh copies, alternating; the "
        "processed rows carry full-size bodies like real ones."
    )
    report.check(f"<= {TARGET_SLOWDOWN:.0%} slower with {args.processed:,} processed rows",
                 f"{slowdown:+.1%} ({full:,.0f} vs {empty:,.0f}/s)",
                 slowdown <= TARGET_SLOWDOWN)
    return sustained_report(report, args, max(empty, full))


def sustained_report(report: Report, args: argparse.Namespace, rate_guess: float) -> Report:
    rates, info, lasted = sustained(args, rate_guess)
    if len(rates) >= 2:
        kept = rates[-1] / rates[0] if rates[0] else 0.0
        report.body += "\n\n" + table(
            [f"window ({args.window_seconds:g} s)", "events/s"],
            [[f"{k * args.window_seconds:g}-{(k + 1) * args.window_seconds:g} s", r]
             for k, r in enumerate(rates)])
        report.body += (
            f"\n\nSustained drain of {args.minutes:g} min from a backlog of "
            f"{info['backlog']:,} events (lean ~300-byte bodies, so that seeding millions "
            f"takes minutes; {info['left']:,} left at the end"
            + ("" if lasted else ": **the backlog ran out**; windows up to that point")
            + f"). At the end: {info['live']:,} live / {info['dead']:,} dead tuples in "
            f"inbox, {info['autovacuums']} autovacuums, {info['autoanalyzes']} autoanalyzes"
            + (" (eager autovacuum settings)." if args.eager_autovacuum else ".")
        )
        worst = min(rates)
        report.body += (
            f" The slowest window ran at {worst / rates[0]:.0%} of the first ({worst:,.0f}/s)"
            + (": dead row versions slow the claim until autovacuum catches up."
               if worst < TARGET_SUSTAINED * rates[0] else ".")
        )
        report.check(f"last window >= {TARGET_SUSTAINED:.0%} of the first",
                     f"{kept:.0%} ({rates[-1]:,.0f} vs {rates[0]:,.0f}/s)",
                     kept >= TARGET_SUSTAINED)
    return report


FULL = {"processed": 1_000_000, "events": 100_000, "minutes": 10.0, "window_seconds": 60.0,
        "rounds": 2}
QUICK = {"processed": 50_000, "events": 10_000, "minutes": 1.0, "window_seconds": 10.0,
         "rounds": 1}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--processed", type=int,
                        help="processed rows already in the table (1000000; --quick 50000)")
    parser.add_argument("--events", type=int, help="pending events drained (100000)")
    parser.add_argument("--minutes", type=float,
                        help="sustained drain duration: 10 is the full run (default 10; "
                             "--quick 1)")
    parser.add_argument("--window-seconds", type=float,
                        help="rate window of the sustained drain (60; --quick 10)")
    parser.add_argument("--rounds", type=int, help="drains of each table, alternating (2)")
    parser.add_argument("--eager-autovacuum", action="store_true",
                        help="sustained drain with per-table autovacuum settings for inbox "
                             "(a proposed migration; see EAGER_AUTOVACUUM_SQL)")
    parser.add_argument("--sustained-only", action="store_true",
                        help="skip the 1,000,000-row comparison")
    parser.add_argument("--concurrency", type=int, default=2, help="inbox worker --concurrency")
    parser.add_argument("--rate-guess", type=float, default=8000.0,
                        help="with --sustained-only: events/s to size the backlog for (8000)")
