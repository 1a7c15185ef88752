"""metrics: what a /metrics scrape costs with millions of rows in the tables.

The inbox is seeded with N processed events (10,000,000 in the full run, lean bodies),
a few thousand dead, retrying and pending ones, N/10 attempts and an outbox of N/10 sent
messages; then, on that database:
- `system_state.read()` (every query a scrape makes) timed on the server side, beside the
  ceiling of any scrape, one `SELECT 1` round trip, and beside what an exact
  `count(*) ... GROUP BY status` of the inbox costs (what the trigger-kept counts avoid);
- the whole scrape, `GET /metrics` through the Procfile's web line (two processes), as a
  client times it.
Target: a scrape in <= 10 ms of server time (the issue's "a few milliseconds").
Then what counting deliveries per destination costs the relay's outcome statement
(bench/delivery_counters.py).
What metrics cost the ingest path is measured by `python -m bench ingest --variants
no_metrics` (the receiver without its counters).
"""

from __future__ import annotations

import argparse
import statistics
import time
import urllib.request
from collections.abc import Callable

import psycopg

from bench import delivery_counters
from bench.harness import (
    free_port,
    fresh_database,
    median_p90_max,
    postgres,
    procfile_line,
    running,
    table,
    venv_env,
    wait_http,
)
from bench.report import Report
from bench.seed import lean_templates, seed_events
from inbox.queries import query
from inbox.store import system_state

SYSTEM_QUERIES = ("system_status_counts", "system_backlog", "system_attempts_last_minute",
                  "system_dead_by_type", "system_dead_messages_by_topic",
                  "system_deliveries_by_destination", "system_end_to_end")
TARGET_SCRAPE_MS = 10.0
TOKEN = "bench-metrics-token"
FAILURES_SQL = """
UPDATE inbox SET status = CASE WHEN id %% 3 = 0 THEN 'dead' ELSE 'pending' END,
                 attempts = 3, last_error = 'LookupError: unknown customer',
                 next_attempt_at = now() + CASE WHEN id %% 3 = 1 THEN interval '1 hour'
                                                ELSE interval '0' END
WHERE id IN (SELECT id FROM inbox ORDER BY id DESC LIMIT %(failing)s)
"""
# Attempts finished at 100 a second up to now: the last minute holds 6,000 of them.
ATTEMPTS_SQL = """
INSERT INTO inbox_attempts (inbox_id, attempt, worker, started_at, finished_at, outcome)
SELECT id, 1, 'bench', at, at, 'processed'
FROM inbox, LATERAL (SELECT now() - (%(count)s - id) * interval '10 ms' AS at) t
WHERE id <= %(count)s
"""
OUTBOX_SQL = """
INSERT INTO outbox (inbox_id, topic, payload, idempotency_key, status, attempts, sent_at)
SELECT g, 'email.receipt', '{"to": "a@example.com"}', 'bench:' || g, 'sent', 1, now()
FROM generate_series(1, %(count)s) g
"""

# A fifth of the failing count as dead messages, over four topics.
DEAD_OUTBOX_SQL = """
UPDATE outbox
SET status = 'dead', last_error = 'HTTP 410',
    topic = (ARRAY['email.receipt', 'crm.contact', 'crm.deal', 'slack.note'])[1 + id %% 4]
WHERE id IN (SELECT id FROM outbox ORDER BY id DESC LIMIT %(dead)s)
"""
# Two days of delivery counters, as full as the table gets: every minute, three
# destinations, two outcomes, all eight shards.
DELIVERY_COUNTS_SQL = """
INSERT INTO inbox_minute_counts (minute, source, outcome, destination, shard, n)
SELECT date_trunc('minute', now()) - m * interval '1 minute', 'deliveries', outcome,
       destination, shard, 100
FROM generate_series(0, 2 * 1440 - 1) m,
     unnest(ARRAY['sent', 'retry']) outcome,
     unnest(ARRAY['https://crm.example:443', 'smtp://mail.example:587', 'log:']) destination,
     generate_series(0, 7) shard
"""


def seed(url: str, events: int, failing: int) -> None:
    """The tables as months of traffic leave them (see the module docstring)."""
    seed_events(url, events, status="processed", templates=lean_templates())
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(FAILURES_SQL, {"failing": failing})
        conn.execute(ATTEMPTS_SQL, {"count": events // 10})
        conn.execute(OUTBOX_SQL, {"count": events // 10})
        conn.execute(DEAD_OUTBOX_SQL, {"dead": failing // 5})
        conn.execute(DELIVERY_COUNTS_SQL)
        conn.execute("VACUUM ANALYZE")


def server_ms(url: str, work: Callable[[psycopg.Connection], object], rounds: int
              ) -> list[float]:
    """Milliseconds of each of `rounds` runs of `work` on one warm connection."""
    times = []
    with psycopg.connect(url, autocommit=True) as conn:
        work(conn)  # warm: catalog caches, plans
        for _ in range(rounds):
            started = time.perf_counter()
            work(conn)
            times.append((time.perf_counter() - started) * 1000)
    return times


def scrape_ms(url: str, rounds: int) -> list[float]:
    """Milliseconds of each of `rounds` GET /metrics through the Procfile's web line."""
    port = free_port()
    env = venv_env(PORT=str(port), DATABASE_URL=url, WEB_CONCURRENCY="2",
                   STRIPE_WEBHOOK_SECRET="whsec_unused", INBOX_METRICS_TOKEN=TOKEN)
    times = []
    with running(procfile_line("web"), env=env, name="web") as web:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/healthz", web)
        request = urllib.request.Request(f"{base}/metrics",
                                         headers={"Authorization": f"Bearer {TOKEN}"})
        for n in range(rounds + 2):
            started = time.perf_counter()
            with urllib.request.urlopen(request, timeout=30) as response:
                response.read()
            if n >= 2:  # the first scrape of each process opens its pool
                times.append((time.perf_counter() - started) * 1000)
    return times


def run(args: argparse.Namespace) -> Report:
    with postgres() as cluster:
        url = fresh_database(cluster, "bench_metrics")
        started = time.perf_counter()
        seed(url, args.events, args.failing)
        seeded = time.perf_counter() - started
        print(f"seeded {args.events:,} events in {seeded:.0f} s", flush=True)
        state = server_ms(url, system_state.read, args.rounds)
        parts = [[f"  of which {name}",
                  *median_p90_max(server_ms(
                      url, lambda conn, n=name: conn.execute(query(n)).fetchall(),
                      args.rounds))]
                 for name in SYSTEM_QUERIES]
        select_one = server_ms(url, lambda conn: conn.execute("SELECT 1").fetchall(),
                               args.rounds)
        exact = server_ms(url, lambda conn: conn.execute(
            "SELECT status, count(*) FROM inbox GROUP BY status").fetchall(), 3)
        http = scrape_ms(url, args.rounds)
        with psycopg.connect(url, autocommit=True) as conn:
            read = system_state.read(conn)
        outcome_body, outcome_medians = delivery_counters.measure(cluster, args.outcome_rounds)
    rows = [
        ["system_state.read() (every query of a scrape)", *median_p90_max(state)],
        *parts,
        ["ceiling: SELECT 1 round trip", *median_p90_max(select_one)],
        ["exact count(*) by status of the inbox", *median_p90_max(exact)],
        ["GET /metrics via gunicorn (client time)", *median_p90_max(http)],
    ]
    body = "\n".join([
        f"{args.events:,} events ({args.failing:,} failing or pending), "
        f"{args.events // 10:,} attempts, {args.events // 10:,} outbox messages "
        f"({args.failing // 5:,} dead), two days of delivery counters (3 destinations, "
        f"8 shards); seeding took {seeded:.0f} s. The inbox as a scrape reads it (exact): "
        + ", ".join(f"{k} {v:,}" for k, v in read.inbox.items()) + ".", "",
        table(["what", "median ms", "p90 ms", "max ms"], rows), "",
        outcome_body,
    ])
    report = Report(f"metrics: a scrape with {args.events:,} events",
                    f"python -m bench metrics --events {args.events}", body)
    median = statistics.median(state)
    report.check(f"scrape server time <= {TARGET_SCRAPE_MS:.0f} ms", f"{median:.1f} ms",
                 median <= TARGET_SCRAPE_MS)
    extra_us = (outcome_medians["0013"] - outcome_medians["0012"]) * 1000
    report.check("counting deliveries per destination: cost on a relay outcome statement "
                 "(100 outcomes)", f"{extra_us:+.0f} us vs per outcome only", None)
    return report


FULL = {"events": 10_000_000, "failing": 5_000, "rounds": 50, "outcome_rounds": 200}
QUICK = {"events": 1_200_000, "failing": 3_000, "rounds": 20, "outcome_rounds": 60}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, help="processed events seeded (10,000,000)")
    parser.add_argument("--failing", type=int, help="of which dead, retrying or due")
    parser.add_argument("--rounds", type=int, help="scrapes timed")
    parser.add_argument("--outcome-rounds", type=int,
                        help="relay outcome statements timed per trigger form (200)")
