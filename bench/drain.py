"""drain: a backlog of pending events, no-op handler, beside pgbench and peer libraries.

- `inbox worker --concurrency N` (the product) drains N events seeded `pending`; handler:
  bench/noop_handlers.py (one outbox message per event, no business work; it does not
  read `event.payload`, so the worker reads no payload, as PgQueuer's no-op jobs carry
  none). At the best concurrency it drains again with bench/reading_handlers.py, which
  reads every payload: the cost of that read, shown beside the rest.
- pgbench runs the worker's own SQL (bench/pgbench_scripts.py), one event per
  transaction, at the worker's concurrency: the ceiling of "one transaction per event".
- PgQueuer and Procrastinate drain N no-op jobs each on the same PostgreSQL.
- `--counters-rounds R`: what the monitoring's triggers cost the drain (the status
  counters of 0007, the per-minute counters of 0012 and any later ones): at the best
  concurrency, R drains with them and R with them disabled, alternating on fresh copies.
Targets: worker >= 1.0x pgbench, >= 5x Procrastinate, >= 1.0x PgQueuer at its best.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from bench.harness import (
    REPO,
    Throughput,
    ensure_tools,
    find_tool,
    fresh_database,
    postgres,
    running,
    table,
    venv_env,
)
from bench.pgbench_scripts import drain_one_event_per_transaction
from bench.report import Report
from bench.seed import seed_events
from inbox.throwaway import Cluster

SEED_DATABASE = "bench_drain_seed"
PGBENCH_SLACK = 1000  # more rows than pgbench will claim: its \gset needs a row each time
DRAIN_DEADLINE_SECONDS = 900
POLL_SECONDS = 0.05
# Attempts finished so far (one inbox_attempts row each), read from its sequence: O(1),
# where counting a growing table is not.
FINISHED_SQL = ("SELECT CASE WHEN is_called THEN last_value ELSE 0 END"
                " FROM inbox_attempts_id_seq")


# -- databases ---------------------------------------------------------------------------

def seed_template(cluster: Cluster, events: int) -> None:
    """A migrated database holding `events` (+ slack) pending events, to copy per run."""
    url = fresh_database(cluster, SEED_DATABASE)
    seed_events(url, events + PGBENCH_SLACK)


def copy_of_seed(cluster: Cluster, name: str) -> str:
    return copy_database(cluster, SEED_DATABASE, name)


def copy_database(cluster: Cluster, template: str, name: str) -> str:
    """A fresh copy of database `template` (a file copy: fast for big tables)."""
    with psycopg.connect(cluster.url(database="postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY FILE_COPY')
        conn.execute("CHECKPOINT")
    return cluster.url(database=name)


# Tables whose writes fire the monitoring's statement triggers; `DISABLE TRIGGER USER`
# turns off every one of ours there (no trigger of ours does anything else).
COUNTED_TABLES = ("inbox", "outbox", "inbox_attempts", "outbox_attempts")


def without_counters(url: str) -> None:
    """Disable the monitoring's triggers in this copy (the drain without the counters)."""
    with psycopg.connect(url, autocommit=True) as conn:
        for name in COUNTED_TABLES:
            conn.execute(f"ALTER TABLE {name} DISABLE TRIGGER USER")


# -- the product -------------------------------------------------------------------------

def worker_available() -> bool:
    inbox = Path(sys.executable).parent / "inbox"
    done = subprocess.run([str(inbox), "worker", "--help"], capture_output=True, text=True)
    return done.returncode == 0 and "--concurrency" in done.stdout


def inbox_worker(url: str, concurrency: int, events: int,
                 handlers: str = "bench.noop_handlers", **extra_env: str) -> Throughput:
    """Run `inbox worker --concurrency N` until `events` events are finished.

    Timed from the first event finished to the `events`-th, so the interpreter's start-up
    is not counted (nor for the peers). Progress is read from a sequence, not counted in
    the table: a count(*) every 50 ms would take CPU from the worker it measures.
    """
    env = venv_env(DATABASE_URL=url, INBOX_HANDLERS=handlers, **extra_env)
    argv = [str(Path(sys.executable).parent / "inbox"), "worker", "--concurrency",
            str(concurrency)]
    with running(argv, env=env, name="worker") as process, \
            psycopg.connect(url, autocommit=True) as conn:
        started = finished = None
        deadline = time.monotonic() + DRAIN_DEADLINE_SECONDS
        while time.monotonic() < deadline:
            done = finished_attempts(conn)
            now = time.perf_counter()
            if started is None and done > 0:
                started = now
            if done >= events:
                finished = now
                break
            if not process.alive():
                raise RuntimeError(f"inbox worker exited:\n{process.tail()}")
            time.sleep(POLL_SECONDS)
        if started is None or finished is None:
            raise RuntimeError(f"inbox worker did not drain in time:\n{process.tail()}")
    drained = done
    with psycopg.connect(url, autocommit=True) as conn:
        outcomes = dict(conn.execute("SELECT status, count(*) FROM inbox GROUP BY status"))
    note = ", ".join(f"{status} {n:,}" for status, n in sorted(outcomes.items()))
    name = "inbox worker" + ("" if handlers == "bench.noop_handlers" else f" ({handlers})")
    return Throughput(name, f"--concurrency {concurrency}", drained, finished - started,
                      note=note)


def finished_attempts(conn: psycopg.Connection) -> int:
    """How many attempts workers have finished in this database (see FINISHED_SQL)."""
    return int(conn.execute(FINISHED_SQL).fetchone()[0])


def counters_cost(cluster: Cluster, concurrency: int, events: int,
                  rounds: int) -> list[Throughput]:
    """Drains with the counters' triggers and without, alternating; the median of each."""
    rates: dict[bool, list[Throughput]] = {True: [], False: []}
    for _ in range(rounds):
        for counted in (True, False):
            url = copy_of_seed(cluster, "bench_drain")
            if not counted:
                without_counters(url)
            drained = inbox_worker(url, concurrency, events)
            rates[counted].append(drained)
            print(f"inbox worker, counters {'on' if counted else 'off'}: "
                  f"{drained.rate:,.0f}/s", flush=True)
    medians = []
    for counted, runs in rates.items():
        middle = sorted(runs, key=lambda d: d.rate)[len(runs) // 2]
        spread = ", ".join(f"{d.rate:,.0f}" for d in runs)
        medians.append(Throughput(
            f"inbox worker, counters {'on' if counted else 'off'} (median)",
            middle.setting, middle.count, middle.seconds,
            note=f"runs/s: {spread}; median {statistics.median(d.rate for d in runs):,.0f}"))
    return medians


# -- pgbench -----------------------------------------------------------------------------

def pgbench(url: str, clients: int, events: int, script: str, name: str) -> Throughput:
    """`events` transactions of `script` over `clients` connections (-M prepared)."""
    per_client = max(events // clients, 1)
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as out:
        out.write(script)
    try:
        done = subprocess.run(
            [find_tool("pgbench") or "pgbench", "-n", "-M", "prepared", "-c", str(clients),
             "-j", str(min(clients, 2)), "-t", str(per_client), "-f", out.name, url],
            capture_output=True, text=True, timeout=DRAIN_DEADLINE_SECONDS)
    finally:
        Path(out.name).unlink(missing_ok=True)
    match = re.search(r"tps = ([\d.]+) \(without initial connection time\)", done.stdout)
    if done.returncode != 0 or match is None or "aborted" in done.stderr:
        raise RuntimeError(f"pgbench failed:\n{done.stdout}\n{done.stderr}")
    tps = float(match.group(1))
    transactions = per_client * clients
    return Throughput(name, f"-c {clients} -M prepared", transactions, transactions / tps)


# -- peers -------------------------------------------------------------------------------

def peer(cluster: Cluster, name: str, jobs: int, setting: int) -> Throughput:
    """Enqueue `jobs` no-op jobs for peer `name`, then drain them in one worker process."""
    url = fresh_database(cluster, f"bench_{name}", migrated=False)
    env = venv_env()
    subprocess.run([sys.executable, "-m", "bench.peers", name, "enqueue", url, str(jobs)],
                   check=True, env=env, cwd=REPO, timeout=DRAIN_DEADLINE_SECONDS,
                   capture_output=True)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        conn.execute("CHECKPOINT")
    done = subprocess.run([sys.executable, "-m", "bench.peers", name, "drain", url,
                           str(setting)], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=DRAIN_DEADLINE_SECONDS)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"{name} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    seconds = json.loads(line.removeprefix("BENCH_JSON "))["seconds"]
    label = f"batch_size={setting}" if name == "pgqueuer" else f"concurrency={setting}"
    return Throughput(name, label, jobs, seconds)


# -- the benchmark -----------------------------------------------------------------------

def run(args: argparse.Namespace) -> Report:
    ensure_tools(["pgbench"])
    results: list[Throughput] = []
    ceiling: Throughput | None = None
    best: Throughput | None = None
    with postgres() as cluster:
        seed_template(cluster, args.events)
        if worker_available():
            for concurrency in args.concurrency:
                url = copy_of_seed(cluster, "bench_drain")
                drained = inbox_worker(url, concurrency, args.events)
                results.append(drained)
                print(f"inbox worker --concurrency {concurrency}: {drained.rate:,.0f}/s",
                      flush=True)
                if best is None or drained.rate > best.rate:
                    best = drained
        clients = int(best.setting.split()[-1]) if best else max(args.concurrency)
        if best is not None:  # what reading every payload costs, at the best concurrency
            url = copy_of_seed(cluster, "bench_drain")
            reading = inbox_worker(url, clients, args.events, handlers="bench.reading_handlers")
            results.append(reading)
            print(f"{reading.name}: {reading.rate:,.0f}/s", flush=True)
        if best is not None and args.counters_rounds:
            results.extend(counters_cost(cluster, clients, args.events,
                                         args.counters_rounds))
        label = "pgbench: worker SQL, 1 event/tx"
        url = copy_of_seed(cluster, "bench_drain")
        ceiling = pgbench(url, clients, args.events, drain_one_event_per_transaction(), label)
        results.append(ceiling)
        print(f"{label}: {ceiling.rate:,.0f}/s", flush=True)
        peers: dict[str, Throughput] = {}
        for name, settings in (("pgqueuer", args.pgqueuer_batch),
                               ("procrastinate", args.procrastinate_concurrency)):
            # Procrastinate is slow enough that a fifth of the backlog measures its rate.
            jobs = args.events if name == "pgqueuer" else max(args.events // 5, 1000)
            for setting in settings:
                drained = peer(cluster, name, jobs, setting)
                results.append(drained)
                print(f"{name} {drained.setting}: {drained.rate:,.0f}/s", flush=True)
                if name not in peers or drained.rate > peers[name].rate:
                    peers[name] = drained
    report = Report("drain: a backlog of events, no-op handler",
                    f"python -m bench drain --events {args.events} --concurrency "
                    + " ".join(map(str, args.concurrency))
                    + (f" --counters-rounds {args.counters_rounds}"
                       if args.counters_rounds else ""))
    reference = best or ceiling
    headers = ["drainer", "setting", "events", "seconds", "events/s", "vs worker", "note"]
    report.body = table(headers, [
        [d.name, d.setting, d.count, f"{d.seconds:.1f}", d.rate,
         f"{reference.rate / d.rate:.2f}x" if best and d.rate else "-", d.note]
        for d in results
    ])
    report.body += (
        f"\n\n{args.events:,} events (the fixture bodies, ~3 KB) seeded `pending` and "
        "copied fresh for each drainer. The worker is timed from its first finished event "
        "to the last (read from a sequence); pgbench reports its own rate (without "
        "connection time); peers from their worker's start to an empty queue, one process "
        "each (Procrastinate drains a fifth of the backlog: its rate is what counts). "
        "`vs worker` = the best worker rate over that row's. The no-op handler does not "
        "read `event.payload`, so the worker reads no payload (it reads them per batch, "
        "when a handler first asks); `bench.reading_handlers` reads every one (PgQueuer's "
        "no-op jobs carry no payload)."
    )
    if best is None:
        report.body += "\n\n`inbox worker` is not available yet: only the ceiling and peers ran."
    else:
        assert ceiling is not None
        report.check("worker >= 1.0x pgbench (1 event/tx)",
                     f"{best.rate / ceiling.rate:.2f}x", best.rate >= ceiling.rate)
        if "procrastinate" in peers:
            ratio = best.rate / peers["procrastinate"].rate
            report.check("worker >= 5x Procrastinate", f"{ratio:.1f}x", ratio >= 5)
        if "pgqueuer" in peers:
            ratio = best.rate / peers["pgqueuer"].rate
            report.check("worker >= 1.0x PgQueuer (best setting)", f"{ratio:.2f}x",
                         ratio >= 1.0)
    return report


FULL = {"events": 100_000, "concurrency": [2, 4, 8], "pgqueuer_batch": [10, 100],
        "procrastinate_concurrency": [10]}
QUICK = {"events": 10_000, "concurrency": [2, 4], "pgqueuer_batch": [100],
         "procrastinate_concurrency": [10]}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, help="backlog size (100000; --quick 10000)")
    parser.add_argument("--concurrency", type=int, nargs="+",
                        help="inbox worker concurrencies to try (2 4 8; --quick 2 4)")
    parser.add_argument("--pgqueuer-batch", type=int, nargs="*",
                        help="PgQueuer batch sizes to try (10 100; none: skip PgQueuer)")
    parser.add_argument("--counters-rounds", type=int, default=0,
                        help="drains with and without the monitoring's triggers (0: none)")
    parser.add_argument("--procrastinate-concurrency", type=int, nargs="*",
                        help="Procrastinate worker concurrency (10; none: skip it)")
