"""rescue: how fast the batch-mates of a SIGKILLed worker are processed (issue 18).

`python -m bench.rescue` (not part of `python -m bench`; its figures are in
docs/decisions.md, "Poison isolation"). Two scenarios, product defaults otherwise
(INBOX_POLL_INTERVAL_SECONDS 1, INBOX_RETRY_BASE_SECONDS 60):

- `one-kill`: a backlog of `--backlog` no-op events; a worker (batch 100) is SIGKILLed while
  it holds a full batch, then a second worker drains everything. Reported: seconds from
  the rescue to the last batch-mate processed, and how many were left at the deadline.
- `repeated-kills`: `--workers` workers (batch 100) drain `--events` events whose handler
  takes 20-80 ms; every `--kill-every` seconds one of them is SIGKILLed and replaced.
  Reported: events still pending when the kills stop (`--seconds`), kills, and the time
  to finish.
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import time

import psycopg

from bench.harness import Process, fresh_database, postgres, venv_env

INSERT_SQL = """
INSERT INTO inbox (provider, event_id, event_type, payload, raw_body)
SELECT 'bench', %(prefix)s || '_' || n, %(type)s, '{}'::jsonb, '\\x7b7d'::bytea
FROM generate_series(1, %(count)s) AS n ORDER BY n
"""


def insert(conn: psycopg.Connection, event_type: str, count: int, prefix: str) -> None:
    conn.execute(INSERT_SQL, {"type": event_type, "count": count, "prefix": prefix})


def count(conn: psycopg.Connection, sql: str, params: tuple = ()) -> int:
    return conn.execute(sql, params).fetchone()[0]


def start_worker(url: str, name: str, **env: str) -> Process:
    environment = venv_env(DATABASE_URL=url, INBOX_HANDLERS="bench.rescue_handlers", **env)
    return Process([sys.executable, "-m", "inbox.cli", "worker", "--concurrency", "1"],
                   env=environment, name=name)


def wait(predicate, timeout: float) -> float | None:
    """Seconds until `predicate()` held, or None after `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.02)
    return None


def one_kill(url: str, backlog: int, deadline: float) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        insert(conn, "noop", 1000, "before")
        insert(conn, "stall_once", 1, "stall")
        insert(conn, "noop", backlog - 1000, "after")
        doomed = start_worker(url, "doomed", INBOX_HANDLER_TIMEOUT_SECONDS="600")
        survivor = None
        try:
            assert wait(lambda: count(conn, "SELECT count(*) FROM inbox WHERE event_type ="
                                      " 'stall_once' AND locked_backend IS NOT NULL"), 120)
            held = count(conn, "SELECT count(*) FROM inbox WHERE locked_backend IS NOT NULL")
            backend = count(conn, "SELECT locked_backend FROM inbox"
                                  " WHERE event_type = 'stall_once'")
            doomed.signal(signal.SIGKILL)
            wait(lambda: not conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s",
                                          [backend]).fetchone(), 30)
            survivor = start_worker(url, "survivor")
            rescued = wait(lambda: count(conn, "SELECT count(*) FROM inbox WHERE crashes > 0")
                           >= held, 60)
            if rescued is None:
                raise RuntimeError(f"no rescue within 60 s:\n{survivor.tail()}")
            mates = wait(lambda: not count(conn, "SELECT count(*) FROM inbox WHERE crashes > 0"
                                           " AND status = 'pending'"), deadline)
            left = count(conn, "SELECT count(*) FROM inbox WHERE status = 'pending'")
            print(f"one-kill: backlog {backlog}, held at the kill {held}, rescued after "
                  f"{rescued:.1f} s; batch-mates done "
                  + (f"{mates:.1f} s after the rescue" if mates is not None
                     else f"NOT within {deadline:.0f} s")
                  + f"; pending at the end {left}", flush=True)
        finally:
            doomed.stop()
            if survivor is not None:
                survivor.stop()


def repeated_kills(url: str, events: int, workers: int, kill_every: float, seconds: float,
                   deadline: float) -> None:
    rng = random.Random(18)
    with psycopg.connect(url, autocommit=True) as conn:
        insert(conn, "slow", events, "slow")
        running = [start_worker(url, f"w{n}") for n in range(workers)]
        kills = 0
        try:
            started = time.monotonic()
            while time.monotonic() - started < seconds:
                time.sleep(kill_every)
                if not count(conn, "SELECT count(*) FROM inbox WHERE status = 'pending'"):
                    break
                victim = running.pop(rng.randrange(len(running)))
                victim.signal(signal.SIGKILL)
                victim.stop()
                running.append(start_worker(url, f"w{kills + workers}"))
                kills += 1
            at_stop = count(conn, "SELECT count(*) FROM inbox WHERE status = 'pending'")
            elapsed = time.monotonic() - started
            done = wait(lambda: not count(conn, "SELECT count(*) FROM inbox"
                                          " WHERE status = 'pending'"), deadline)
            dead = count(conn, "SELECT count(*) FROM inbox WHERE status = 'dead'")
            crashes = count(conn, "SELECT coalesce(sum(crashes), 0) FROM inbox")
            print(f"repeated-kills: {events} events, {workers} workers, {kills} kills in "
                  f"{elapsed:.0f} s; pending then {at_stop}; "
                  + (f"all done {elapsed + done:.0f} s after the start" if done is not None
                     else f"NOT done {deadline:.0f} s later")
                  + f"; dead {dead}; crashed attempts {crashes}", flush=True)
        finally:
            for process in running:
                process.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rescue", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=["one-kill", "repeated-kills", "both"],
                        nargs="?", default="both")
    parser.add_argument("--backlog", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=600)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--kill-every", type=float, default=0.7)
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="how long the repeated kills go on")
    parser.add_argument("--deadline", type=float, default=150.0,
                        help="how long to wait for the rest afterwards")
    args = parser.parse_args(argv)
    with postgres() as cluster:
        if args.scenario in ("one-kill", "both"):
            one_kill(fresh_database(cluster, "bench_rescue_one"), args.backlog, args.deadline)
        if args.scenario in ("repeated-kills", "both"):
            repeated_kills(fresh_database(cluster, "bench_rescue_many"), args.events,
                           args.workers, args.kill_every, args.seconds, args.deadline)
    return 0


if __name__ == "__main__":
    sys.exit(main())
