"""latency: POST -> handler commit, at a steady rate (500 events/s), through the product.

The Procfile's `web` (gunicorn) and `inbox worker` run on a cluster with
track_commit_timestamp=on. An open-loop generator sends signed events on a fixed schedule
(each at its own time, whatever the answers before it) and notes the wall-clock time of
each send; PostgreSQL gives each event's received_at and the commit time of the
transaction that processed it (pg_xact_commit_timestamp of the row's final version). The
same machine's clock on both sides. Targets: p50 <= 10 ms, p99 <= 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from bench.bare_app import GUNICORN_APP as BARE_APP
from bench.harness import (
    BENCH_SECRET,
    CpuMeter,
    free_port,
    fresh_database,
    postgres,
    postmaster_pid,
    procfile_line,
    running,
    scalar,
    table,
    venv_env,
    wait_http,
    wait_until,
)
from bench.load import raw_request, stripe_bodies
from bench.receiver_variants import VARIANTS as RECEIVER_VARIANTS
from bench.report import Report

TARGET_P50_MS = 10.0
TARGET_P99_MS = 50.0
CLIENT_CONNECTIONS = 32
MAX_CONNECTIONS = 256
WARMUP_SECONDS = 2.0
WINDOW_SECONDS = 10.0  # p50 per window of sends: does latency drift as tables grow?
CEILING_SECONDS = 20.0  # the bare endpoint's run: its figures settle within seconds


class OpenLoop:
    """Sends `bodies` at `rate` per second over keep-alive connections, from one asyncio loop.

    Each request is due at `start + n / rate` and timed from that moment, not from when it
    left: a client that falls behind then shows as latency instead of hiding it (no
    coordinated omission). One event loop in one thread: a pool of 32 Python threads spent
    its time handing the GIL around, which showed up in the figures as server latency.
    A request waits for an idle connection; more are opened, up to MAX_CONNECTIONS.
    """

    def __init__(self, port: int, bodies: list[bytes], rate: float) -> None:
        self.port = port
        self.bodies = bodies
        self.rate = rate
        self.sent_at: list[float] = [0.0] * len(bodies)
        self.answer_ms: list[float] = [0.0] * len(bodies)
        self.statuses: list[int] = [0] * len(bodies)

    def run(self) -> None:
        asyncio.run(self._send_all())

    async def _send_all(self) -> None:
        idle: asyncio.Queue[Connection] = asyncio.Queue()
        for _ in range(CLIENT_CONNECTIONS):
            idle.put_nowait(await Connection.open(self.port))
        opened = CLIENT_CONNECTIONS
        start = time.time() + 0.2
        tasks = []
        for number in range(len(self.bodies)):
            due = start + number / self.rate
            await asyncio.sleep(max(0.0, due - time.time()))
            if idle.empty() and opened < MAX_CONNECTIONS:
                idle.put_nowait(await Connection.open(self.port))
                opened += 1
            conn = await idle.get()
            tasks.append(asyncio.create_task(self._send(conn, number, due, idle)))
        await asyncio.gather(*tasks)
        while not idle.empty():
            idle.get_nowait().close()

    async def _send(self, conn: Connection, number: int, due: float,
                    idle: asyncio.Queue[Connection]) -> None:
        body = self.bodies[number]
        try:
            status = await conn.post(raw_request(body, f"127.0.0.1:{self.port}"))
        except (OSError, ValueError, asyncio.IncompleteReadError):
            conn.close()
            conn = await Connection.open(self.port)
            status = 599
        self.sent_at[number] = due
        self.answer_ms[number] = (time.time() - due) * 1000
        self.statuses[number] = status
        idle.put_nowait(conn)


class Connection:
    """One keep-alive HTTP/1.1 connection: write a request, read the status and body."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def post(self, request: bytes) -> int:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = next((int(line.split(":", 1)[1]) for line in lines[1:]
                       if line.lower().startswith("content-length:")), 0)
        await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        self.writer.close()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def event_id(body: bytes) -> str:
    start = body.index(b'"id":"') + 6
    return body[start:body.index(b'"', start)].decode()


def run(args: argparse.Namespace) -> Report:
    count = int(args.rate * args.seconds)
    with postgres("-c track_commit_timestamp=on") as cluster:
        url = fresh_database(cluster, "bench_latency")
        port = free_port()
        env = venv_env(PORT=str(port), DATABASE_URL=url, STRIPE_WEBHOOK_SECRET=BENCH_SECRET,
                       INBOX_HANDLERS="bench.noop_handlers")
        worker_argv = [str(Path(sys.executable).parent / "inbox"), "worker", "--concurrency",
                       str(args.worker_concurrency)]
        web_argv = procfile_line("web")
        if args.receiver_variant:  # a proposed change, patched in (receiver_variants.py)
            web_argv[-1] = f'bench.receiver_variants:create_app("{args.receiver_variant}")'
        with contextlib.ExitStack() as stack:
            web = stack.enter_context(running(web_argv, env=env, name="web"))
            worker = stack.enter_context(running(worker_argv, env=env, name="worker"))
            wait_http(f"http://127.0.0.1:{port}/healthz", web)
            bodies = list(stripe_bodies(count, "lat"))
            load, cpu, took = warm_then_send(port, bodies, args.rate, "lat", web=web.popen.pid,
                                             worker=worker.popen.pid,
                                             postgres=postmaster_pid(cluster))
            pending = "SELECT count(*) FROM inbox WHERE status = 'pending'"
            wait_until(lambda: int(scalar(url, pending)) == 0, timeout=120, interval=0.2)
        ceiling = bare_endpoint(env, args)
        with psycopg.connect(url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT event_id, extract(epoch FROM received_at)::float8,"
                " extract(epoch FROM pg_xact_commit_timestamp(xmin))::float8, status"
                " FROM inbox WHERE event_id LIKE 'evt_bench_lat\\_%%'").fetchall()
    found = {row[0]: row for row in rows}
    to_commit, to_received, received_to_commit = [], [], []
    by_window: dict[int, list[float]] = {}
    unprocessed = 0
    for number, body in enumerate(bodies):
        row = found.get(event_id(body))
        if row is None or row[3] != "processed" or row[2] is None:
            unprocessed += 1
            continue
        sent = load.sent_at[number]
        to_commit.append((row[2] - sent) * 1000)
        by_window.setdefault(int(number / args.rate // WINDOW_SECONDS), []).append(to_commit[-1])
        to_received.append((row[1] - sent) * 1000)
        received_to_commit.append((row[2] - row[1]) * 1000)
    non_2xx = sum(1 for status in load.statuses if not 200 <= status < 300)
    achieved = count / took if took else 0.0
    variants = f" --receiver-variant {args.receiver_variant}" if args.receiver_variant else ""
    report = Report("latency: POST to handler commit at a steady rate",
                    f"python -m bench latency --rate {args.rate:g} --seconds {args.seconds:g}"
                    + variants)
    lines = [
        ["POST -> handler commit", percentile(to_commit, .5), percentile(to_commit, .99),
         max(to_commit, default=0.0)],
        ["POST -> 200 answer", percentile(load.answer_ms, .5), percentile(load.answer_ms, .99),
         max(load.answer_ms)],
        ["POST -> row inserted (received_at)", percentile(to_received, .5),
         percentile(to_received, .99), max(to_received, default=0.0)],
        ["received_at -> handler commit", percentile(received_to_commit, .5),
         percentile(received_to_commit, .99), max(received_to_commit, default=0.0)],
        ["ceiling: bare Flask, POST -> 200 answer", percentile(ceiling.answer_ms, .5),
         percentile(ceiling.answer_ms, .99), max(ceiling.answer_ms)],
    ]
    report.body = table(["interval", "p50 ms", "p99 ms", "max ms"],
                        [[name, f"{a:.1f}", f"{b:.1f}", f"{c:.1f}"] for name, a, b, c in lines])
    report.body += (
        f"\n\n{count:,} events sent open-loop at {args.rate:g}/s for {args.seconds:g} s "
        f"(achieved {achieved:,.0f}/s; one asyncio client, {CLIENT_CONNECTIONS}+ keep-alive "
        "connections, each request timed from the moment it was due); "
        f"`inbox worker --concurrency {args.worker_concurrency}`, handler "
        "bench/noop_handlers.py; the web process is the Procfile's. Non-2xx answers: "
        f"{non_2xx}; events not processed: {unprocessed}. Mean POST -> commit "
        f"{statistics.fmean(to_commit) if to_commit else float('nan'):.1f} ms. "
        f"POST -> commit p50 by {WINDOW_SECONDS:g} s window: "
        + ", ".join(f"{percentile(values, .5):.1f}" for _, values in sorted(by_window.items()))
        + " ms. CPU while sending, in cores of the machine's "
        + f"{os.cpu_count()}: "
        + ", ".join(f"{name} {seconds / took:.2f}" for name, seconds in cpu.items())
        + f" (product per event: {product_cpu_us(cpu, count):.0f} us). The ceiling: the "
        f"same gunicorn line serving bench/bare_app.py, the same client at the same rate for "
        f"{ceiling.seconds:g} s, alone on the machine: web {ceiling.web_cores:.2f} cores "
        f"({ceiling.web_cores / args.rate * 1e6:.0f} us per request)."
    )
    p50, p99 = percentile(to_commit, .5), percentile(to_commit, .99)
    report.check(f"p50 <= {TARGET_P50_MS:g} ms", f"{p50:.1f} ms", p50 <= TARGET_P50_MS)
    report.check(f"p99 <= {TARGET_P99_MS:g} ms", f"{p99:.1f} ms", p99 <= TARGET_P99_MS)
    report.check(f"steady {args.rate:g}/s, all answered 2xx and processed",
                 f"{achieved:,.0f}/s, {non_2xx} non-2xx, {unprocessed} unprocessed",
                 non_2xx == 0 and unprocessed == 0 and achieved >= 0.95 * args.rate)
    return report


@dataclass
class Ceiling:
    """The bare endpoint at the benchmark's rate: its answers and its CPU."""

    answer_ms: list[float]
    web_cores: float
    seconds: float


def bare_endpoint(env: dict[str, str], args: argparse.Namespace) -> Ceiling:
    """POST the same kind of events at the same rate to bench/bare_app.py under the
    Procfile's gunicorn line: what the receiving side costs with no receiver in it."""
    seconds = min(args.seconds, CEILING_SECONDS)
    argv = procfile_line("web")
    argv[-1] = BARE_APP
    port = free_port()
    with running(argv, env={**env, "PORT": str(port)}, name="bare-web") as web:
        wait_http(f"http://127.0.0.1:{port}/healthz", web)
        bodies = list(stripe_bodies(int(args.rate * seconds), "bare"))
        load, cpu, took = warm_then_send(port, bodies, args.rate, "bare", web=web.popen.pid)
    return Ceiling(load.answer_ms, cpu["web"] / took if took else 0.0, seconds)


def warm_then_send(port: int, bodies: list[bytes], rate: float, tag: str,
                   **processes: int) -> tuple[OpenLoop, dict[str, float], float]:
    """A warm-up, then `bodies` sent open-loop at `rate`: the load (its answers), the CPU
    seconds each process tree in `processes` and this client used meanwhile, the seconds
    it took."""
    OpenLoop(port, list(stripe_bodies(int(rate * WARMUP_SECONDS), f"{tag}w")), rate).run()
    load = OpenLoop(port, bodies, rate)
    meter = CpuMeter(**processes).start()
    client_began = time.process_time()
    began = time.time()
    load.run()
    took = time.time() - began
    return load, {**meter.stop(), "client": time.process_time() - client_began}, took


def product_cpu_us(cpu: dict[str, float], events: int) -> float:
    """CPU microseconds per event of web, worker and PostgreSQL together."""
    product = sum(cpu[name] for name in ("web", "worker", "postgres"))
    return product / events * 1e6 if events else 0.0


FULL = {"seconds": 60.0}
QUICK = {"seconds": 10.0}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rate", type=float, default=500.0, help="events per second (500)")
    parser.add_argument("--seconds", type=float, help="measured seconds (60; --quick 10)")
    parser.add_argument("--worker-concurrency", type=int, default=2,
                        help="inbox worker --concurrency (2)")
    parser.add_argument("--receiver-variant", choices=RECEIVER_VARIANTS,
                        help="serve a proposed receiver change (bench/receiver_variants.py)")
