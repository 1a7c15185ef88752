"""relay: outbox messages/s delivered over HTTP to a local sink that answers 200.

N pending outbox messages (small JSON payloads, as a handler queues them) are routed by
INBOX_ROUTES to bench/sink.py; `inbox relay` runs until every one is `sent`. Beside it, the
ceiling: wrk POSTing the same payloads to the same sink over as many connections as the
relay has delivery threads. Target: >= 2,000 messages/s.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request
from pathlib import Path

import psycopg

from bench.harness import (
    Throughput,
    ensure_tools,
    free_port,
    fresh_database,
    postgres,
    running,
    table,
    venv_env,
    wait_http,
)
from bench.load import run_wrk, write_raw_requests
from bench.report import Report

TARGET_MESSAGES_PER_SECOND = 2000
DEADLINE_SECONDS = 600
POLL_SECONDS = 0.05
SEED_SQL = """
INSERT INTO outbox (topic, payload, idempotency_key)
SELECT 'bench.sink',
       jsonb_build_object('to', 'customer' || g || '@example.com',
                          'template', 'payment_received',
                          'invoice', 'in_1Pgc6tB7WZ01zgkW' || g,
                          'amount_paid', 2000, 'currency', 'usd',
                          'pdf', 'https://pay.stripe.com/invoice/acct_1/test_' || g || '/pdf'),
       'bench:' || g
FROM generate_series(1, %(count)s) AS g
"""


def seed(url: str, count: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SEED_SQL, {"count": count})
        conn.execute("VACUUM ANALYZE outbox")
        conn.execute("CHECKPOINT")


def sink_count(base: str) -> int:
    with urllib.request.urlopen(f"{base}/count", timeout=5) as response:
        return int(response.read())


def relay(url: str, sink_base: str, count: int, concurrency: int, processes: int
          ) -> Throughput:
    pending_sql = "SELECT count(*) FROM outbox WHERE status = 'pending'"
    env = venv_env(DATABASE_URL=url, INBOX_ROUTES=f"bench.*={sink_base}/hook")
    argv = [str(Path(sys.executable).parent / "inbox"), "relay", "--concurrency",
            str(concurrency), "--processes", str(processes)]
    sink_before = sink_count(sink_base)
    with running(argv, env=env, name="relay") as process, \
            psycopg.connect(url, autocommit=True) as conn:
        started = finished = None
        deadline = time.monotonic() + DEADLINE_SECONDS
        while time.monotonic() < deadline:
            left = conn.execute(pending_sql).fetchone()[0]
            now = time.perf_counter()
            if started is None and left < count:
                started = now
            if left == 0:
                finished = now
                break
            if not process.alive():
                raise RuntimeError(f"inbox relay exited:\n{process.tail()}")
            time.sleep(POLL_SECONDS)
        if started is None or finished is None:
            raise RuntimeError(f"inbox relay did not finish in time:\n{process.tail()}")
    with psycopg.connect(url, autocommit=True) as conn:
        statuses = dict(conn.execute("SELECT status, count(*) FROM outbox GROUP BY status"))
    received = sink_count(sink_base) - sink_before
    note = ", ".join(f"{k} {v:,}" for k, v in sorted(statuses.items()))
    note += f"; sink received {received:,}"
    return Throughput("inbox relay", f"--concurrency {concurrency} --processes {processes}",
                     int(statuses.get("sent", 0)), finished - started, note)


def ceiling(sink_base: str, connections: int, seconds: float) -> Throughput:
    """wrk POSTing relay-like requests (same payload shape and headers) to the sink."""
    host = sink_base.removeprefix("http://")

    def requests():
        for number in range(2000):
            body = json.dumps({"to": f"customer{number}@example.com",
                               "template": "payment_received",
                               "invoice": f"in_1Pgc6tB7WZ01zgkW{number}", "amount_paid": 2000,
                               "currency": "usd",
                               "pdf": f"https://pay.stripe.com/invoice/acct_1/test_{number}/pdf"
                               }).encode()
            head = (f"POST /hook HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                    f"Idempotency-Key: bench:{number}\r\nContent-Length: {len(body)}\r\n\r\n")
            yield head.encode() + body, len(body)

    files = write_raw_requests(requests(), threads=1)
    try:
        result = run_wrk(f"{sink_base}/hook", files, connections=connections, seconds=seconds)
    finally:
        files.cleanup()
    return Throughput("wrk -> sink (ceiling)", f"{connections} connections", result.requests,
                     result.seconds, f"p99 {result.p99_ms:.1f} ms, errors {result.errors}")


def run(args: argparse.Namespace) -> Report:
    ensure_tools(["wrk"])
    results: list[Throughput] = []
    port = free_port()
    sink_base = f"http://127.0.0.1:{port}"
    with postgres() as cluster, running([sys.executable, "-m", "bench.sink", str(port)],
                                        env=venv_env(), name="sink") as sink:
        wait_http(f"{sink_base}/count", sink)
        for processes in args.processes:
            for concurrency in args.concurrency:
                url = fresh_database(cluster, "bench_relay")
                seed(url, args.messages)
                delivered = relay(url, sink_base, args.messages, concurrency, processes)
                results.append(delivered)
                print(f"relay {delivered.setting}: {delivered.rate:,.0f}/s", flush=True)
        best = max(results, key=lambda d: d.rate)
        connections = int(best.setting.split()[1]) * int(best.setting.split()[3])
        top = ceiling(sink_base, connections, args.ceiling_seconds)
        results.append(top)
    report = Report("relay: outbox messages delivered to a local HTTP sink",
                    f"python -m bench relay --messages {args.messages}")
    report.body = table(
        ["sender", "setting", "messages", "seconds", "messages/s", "vs sink ceiling", "note"],
        [[d.name, d.setting, d.count, f"{d.seconds:.1f}", d.rate,
          f"{d.rate / top.rate:.2f}x" if top.rate else "-", d.note] for d in results])
    report.body += (
        f"\n\n{args.messages:,} pending outbox messages (~250-byte JSON payloads) routed to "
        "bench/sink.py (asyncio, answers 200, keep-alive). The relay is timed from its first "
        "claim to the last message `sent`; the ceiling is wrk POSTing the same payloads to "
        "the same sink with as many connections as the best relay setting has threads."
    )
    report.check(f"relay >= {TARGET_MESSAGES_PER_SECOND:,} messages/s",
                 f"{best.rate:,.0f}/s ({best.setting})",
                 best.rate >= TARGET_MESSAGES_PER_SECOND)
    return report


FULL = {"messages": 50_000, "concurrency": [16, 32], "processes": [1, 2],
        "ceiling_seconds": 10.0}
QUICK = {"messages": 10_000, "concurrency": [16], "processes": [1, 2], "ceiling_seconds": 4.0}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--messages", type=int, help="outbox messages (50000; --quick 10000)")
    parser.add_argument("--concurrency", type=int, nargs="+",
                        help="relay delivery threads per process to try (16 32)")
    parser.add_argument("--processes", type=int, nargs="+",
                        help="relay processes to try (1 2)")
    parser.add_argument("--ceiling-seconds", type=float, help="wrk seconds on the sink (10)")
