"""chaos: a soak under SIGKILLs and PostgreSQL crashes; nothing lost, doubled or stuck.

Two web, two worker and one relay processes, each started as its Procfile line says, take
a steady signed Stripe load from a client that redelivers like Stripe (bench/chaos_traffic.py).
Every `--kill-every` seconds one of them, at random, is SIGKILLed (its whole process group)
and replaced; every `--restart-every` seconds PostgreSQL is stopped with `pg_ctl stop -m
immediate` and started again on the same port, the product left running. The relay
delivers each handler's message to a sink that refuses the first try of one key in five.

Then, with the load and the chaos stopped, the system drains, and a backlog phase follows:
`--backlog` events pushed with the workers stopped, then a worker SIGKILLed while it holds
a full batch, and the time until the backlog is drained.

Verdicts, over every event: acknowledged (2xx) events stored once and processed once (one
effect row each, in a table with no unique key to hide a double), each message delivered
with its key at least once, no pending or leased row left after the drain deadline, no
process that exited without being killed. `tests/test_chaos.py` runs a shorter soak.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import psycopg

from bench.__main__ import stop_on_sigterm
from bench.chaos_traffic import FlakySink, StripeLikeClient, serving
from bench.harness import (
    BENCH_SECRET,
    Process,
    execute,
    free_port,
    fresh_database,
    postgres,
    procfile_line,
    scalar,
    table,
    venv_env,
    wait_http,
    wait_until,
)
from bench.report import Report
from inbox.throwaway import Cluster
from inbox.worker.loop import DEFAULT_BATCH_SIZE

WEB_SLOTS = ("web1", "web2")
WORKER_SLOTS = ("worker1", "worker2")
SLOTS = (*WEB_SLOTS, *WORKER_SLOTS, "relay")
# The product's clock runs faster than its defaults (60 s first retry, 1 s poll), so a
# soak of minutes sees many retries; nothing else is changed.
PRODUCT_ENV = {
    "INBOX_HANDLERS": "bench.chaos_handlers",
    "INBOX_RETRY_BASE_SECONDS": "0.2",
    "INBOX_RETRY_CAP_SECONDS": "2",
    "INBOX_POLL_INTERVAL_SECONDS": "0.5",
    "WEB_CONCURRENCY": "1",  # two web processes of one gunicorn worker each
}
# The handlers (bench/chaos_handlers.py, imported by the workers only) queue their
# messages under this prefix; it is routed to the sink.
TOPIC_PREFIX = "chaos."
STALL_KIND = "stall"  # the event id holds "_stall_": its handler stalls on attempt 1
# No unique key on event_id, on purpose: an event applied twice shows as two rows.
EFFECTS_TABLE = """
CREATE TABLE IF NOT EXISTS chaos_effects (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id text NOT NULL,
    attempt integer NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
)
"""
CHAOS_TICK_SECONDS = 0.05
SETTLE_POLL_SECONDS = 0.5
HOLD_DEADLINE_SECONDS = 60.0


@dataclass(frozen=True)
class ChaosOptions:
    """How long and how hard; `python -m bench chaos --help` describes each."""

    seconds: float = 180.0
    rate: float = 40.0
    kill_every: float = 1.0
    restart_every: float = 15.0
    down_seconds: float = 1.0
    backlog: int = 5000
    drain_deadline: float = 180.0
    seed: int = 18


@dataclass
class ChaosFigures:
    """What the soak did and what it found; the verdicts are on the last five."""

    events: int = 0
    acknowledged: int = 0
    posts: int = 0
    duplicates_sent: int = 0
    answers: dict[str, int] = field(default_factory=dict)
    kills: int = 0
    restarts: int = 0
    messages: int = 0
    refused_first: int = 0
    duplicate_deliveries: int = 0
    backlog: int = 0
    backlog_held: int = 0
    backlog_drain_seconds: float | None = None
    lost: int = 0
    doubled: int = 0
    stuck: int = 0
    exited_on_own: int = 0
    unacknowledged: int = 0
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        """The one line of figures the soak prints."""
        drained = (f"{self.backlog_drain_seconds:.1f} s" if self.backlog_drain_seconds
                   is not None else "NOT in time")
        return (f"chaos: {self.events:,} events ({self.acknowledged:,} acknowledged, "
                f"{self.duplicates_sent:,} redelivered as duplicates), {self.kills} kills, "
                f"{self.restarts} postgres restarts; lost {self.lost}, doubled "
                f"{self.doubled}, stuck {self.stuck}, exited on own {self.exited_on_own}, "
                f"unacknowledged {self.unacknowledged}; {self.messages:,} messages, "
                f"{self.duplicate_deliveries} duplicate deliveries; backlog "
                f"{self.backlog:,} drained {drained} after the kill of a worker holding "
                f"{self.backlog_held}")


class Fleet:
    """The product's processes by slot, each run as its Procfile line says; a slot whose
    process ended without being killed here is counted and restarted."""

    def __init__(self, database_url: str, sink_port: int, web_ports: dict[str, int]) -> None:
        self.env = venv_env(
            DATABASE_URL=database_url, STRIPE_WEBHOOK_SECRET=BENCH_SECRET,
            INBOX_ROUTES=f"{TOPIC_PREFIX}*=http://127.0.0.1:{sink_port}/deliveries,*=log:",
            **PRODUCT_ENV,
        )
        self.web_ports = web_ports
        self.running: dict[str, Process] = {}
        self.kills = 0
        self.exits: list[str] = []

    def start(self, slot: str) -> Process:
        kind = slot.rstrip("0123456789")
        env = dict(self.env)
        if slot in self.web_ports:
            env["PORT"] = str(self.web_ports[slot])
        process = Process(procfile_line(kind), env=env, name=f"chaos-{slot}")
        self.running[slot] = process
        return process

    def kill(self, slot: str, *, replace: bool = True) -> None:
        """SIGKILL the slot's whole process group (a dyno dying), then replace it."""
        process = self.running.pop(slot)
        process.signal(signal.SIGKILL)
        process.stop()
        self.kills += 1
        if replace:
            self.start(slot)

    def stop(self, slot: str) -> None:
        """The ordinary stop (SIGTERM), not a kill."""
        self.running.pop(slot).stop()

    def reap(self) -> None:
        """Count and restart whatever exited on its own."""
        for slot, process in list(self.running.items()):
            if not process.alive():
                self.exits.append(f"{slot} exited with {process.popen.returncode}:\n"
                                  f"{process.tail()}")
                process.stop()
                self.start(slot)

    def stop_all(self) -> None:
        for slot in list(self.running):
            self.stop(slot)


def count(url: str, sql: str, params: tuple = ()) -> int:
    return int(scalar(url, sql, params) or 0)


def pending_rows(url: str) -> int:
    """Inbox and outbox rows not yet finished (pending, leased or waiting for a retry)."""
    return count(url, "SELECT (SELECT count(*) FROM inbox WHERE status = 'pending')"
                      " + (SELECT count(*) FROM outbox WHERE status = 'pending')")


def settle(url: str, fleet: Fleet, client: StripeLikeClient, sink: FlakySink,
           deadline: float) -> bool:
    """Wait until every event is acknowledged, processed and its message delivered."""
    def done() -> bool:
        fleet.reap()
        with contextlib.suppress(psycopg.OperationalError):
            if client.settled() and not pending_rows(url):
                keys = count(url, "SELECT count(*) FROM outbox WHERE topic LIKE %s",
                             (f"{TOPIC_PREFIX}%",))
                return len(sink.accepted) >= keys
        return False

    return wait_until(done, timeout=deadline, interval=SETTLE_POLL_SECONDS)


def chaos(cluster: Cluster, fleet: Fleet, options: ChaosOptions, rng: random.Random) -> int:
    """Kill a random process every `kill_every` s, crash PostgreSQL every
    `restart_every` s, for `seconds`; the number of PostgreSQL restarts."""
    started = time.monotonic()
    next_kill = started + options.kill_every
    next_restart = started + options.restart_every
    restarts = 0
    while (now := time.monotonic()) < started + options.seconds:
        fleet.reap()
        if now >= next_restart:
            cluster.crash_and_restart(options.down_seconds)
            restarts += 1
            # On a fixed cadence from the start (a slow restart under load must not push
            # the next one out of a short soak), never sooner than a second after this one.
            next_restart = max(next_restart + options.restart_every, time.monotonic() + 1.0)
        elif now >= next_kill:
            fleet.kill(rng.choice(SLOTS))
            next_kill = max(next_kill + options.kill_every, now)
        time.sleep(CHAOS_TICK_SECONDS)
    return restarts


def backlog_phase(url: str, fleet: Fleet, client: StripeLikeClient, figures: ChaosFigures,
                  backlog: int, deadline: float) -> None:
    """Workers stopped while `backlog` events arrive; a worker is SIGKILLed holding a full
    batch (a stalled event first in it), then two workers drain the rest."""
    for slot in WORKER_SLOTS:
        fleet.stop(slot)
    stall = client.add(1, kind=STALL_KIND)[0]
    if not wait_until(lambda: stall in client.acked, timeout=deadline):
        raise RuntimeError("the stall event was not acknowledged")
    client.add(backlog, kind="backlog")
    if not wait_until(client.settled, timeout=deadline, interval=SETTLE_POLL_SECONDS):
        raise RuntimeError(f"the backlog was not acknowledged: {client.figures}")
    figures.backlog = count(url, "SELECT count(*) FROM inbox WHERE status = 'pending'")
    fleet.start("worker1")
    holder = "SELECT locked_backend FROM inbox WHERE event_id = %s"
    held_sql = f"SELECT count(*) FROM inbox WHERE locked_backend = ({holder})"
    if not wait_until(lambda: count(url, held_sql, (stall,)) >= DEFAULT_BATCH_SIZE,
                      timeout=HOLD_DEADLINE_SECONDS, interval=0.05):
        raise RuntimeError(f"no worker held a full batch:\n{fleet.running['worker1'].tail()}")
    figures.backlog_held = count(url, held_sql, (stall,))
    killed_at = time.monotonic()
    fleet.kill("worker1", replace=False)
    for slot in WORKER_SLOTS:
        fleet.start(slot)
    if wait_until(lambda: not count(url, "SELECT count(*) FROM inbox WHERE status = 'pending'"),
                  timeout=deadline, interval=0.1):
        figures.backlog_drain_seconds = time.monotonic() - killed_at


def verify(url: str, client: StripeLikeClient, sink: FlakySink, figures: ChaosFigures) -> None:
    """Count lost, doubled and stuck, over every event the client made or the inbox holds."""
    with psycopg.connect(url, autocommit=True) as conn:
        stored: dict[str, list[str]] = {}
        for event_id, status in conn.execute(
                "SELECT event_id, status FROM inbox WHERE provider = 'stripe'"):
            stored.setdefault(event_id, []).append(status)
        effects = dict(conn.execute(
            "SELECT event_id, count(*) FROM chaos_effects GROUP BY event_id").fetchall())
        messages: dict[str, list[tuple[str, str]]] = {}
        for event_id, key, status in conn.execute(
                "SELECT i.event_id, o.idempotency_key, o.status FROM outbox o"
                " JOIN inbox i ON i.id = o.inbox_id WHERE o.topic LIKE %s",
                [f"{TOPIC_PREFIX}%"]):
            messages.setdefault(event_id, []).append((key, status))
        figures.stuck = max(figures.stuck, pending_rows(url))
    acked = set(client.acked)
    figures.messages = sum(len(found) for found in messages.values())
    for event_id in sorted(acked | set(stored)):
        statuses = stored.get(event_id, [])
        found = messages.get(event_id, [])
        problem = None
        if len(statuses) > 1 or effects.get(event_id, 0) > 1 or len(found) > 1:
            figures.doubled += 1
            problem = "doubled"
        elif statuses == ["pending"]:
            problem = "stuck"  # counted by figures.stuck
        elif statuses != ["processed"] or effects.get(event_id, 0) != 1 or len(found) != 1 \
                or found[0][1] != "sent" or not sink.accepted.get(found[0][0]):
            figures.lost += 1
            problem = "lost"
        if problem:
            figures.problems.append(f"{problem}: {event_id} acked={event_id in acked} "
                                    f"inbox={statuses} effects={effects.get(event_id, 0)} "
                                    f"messages={found}")


@contextlib.contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C while the soak runs, so its `finally` blocks stop the
    cluster and the processes (each in its own session, which a dying parent leaves
    behind) also when pytest or a CI runner is terminated. Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, stop_on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def soak(options: ChaosOptions) -> ChaosFigures:
    """The whole soak; every process and the cluster are stopped however it ends."""
    rng = random.Random(options.seed)
    figures = ChaosFigures()
    with sigterm_unwinds(), postgres() as cluster, serving(FlakySink()) as sink:
        url = fresh_database(cluster, "bench_chaos")
        execute(url, EFFECTS_TABLE)
        fleet = Fleet(url, sink.port, {slot: free_port() for slot in WEB_SLOTS})
        client = StripeLikeClient(list(fleet.web_ports.values()), BENCH_SECRET,
                                  tag=f"{options.seed}", seed=options.seed)
        try:
            for slot in SLOTS:
                fleet.start(slot)
            for slot in WEB_SLOTS:
                wait_http(f"http://127.0.0.1:{fleet.web_ports[slot]}/healthz",
                          fleet.running[slot])
            client.start().set_rate(options.rate)
            figures.restarts = chaos(cluster, fleet, options, rng)
            client.set_rate(0)
            if not settle(url, fleet, client, sink, options.drain_deadline):
                figures.stuck = pending_rows(url)  # the backlog phase must not hide them
                figures.problems.append(f"not drained after the chaos: {figures.stuck} "
                                        f"rows pending, {client.figures}")
            backlog_phase(url, fleet, client, figures, options.backlog, options.drain_deadline)
            settle(url, fleet, client, sink, options.drain_deadline)
            fleet.reap()
            verify(url, client, sink, figures)
        finally:
            client.stop()
            fleet.stop_all()
        figures.kills = fleet.kills
        figures.exited_on_own = len(fleet.exits)
        figures.problems += fleet.exits
    figures.events = client.figures.created
    figures.acknowledged = len(client.acked)
    figures.unacknowledged = len(client.unacknowledged())
    figures.posts = client.figures.posts
    figures.duplicates_sent = client.figures.duplicates_sent
    figures.answers = dict(client.figures.answers)
    figures.refused_first = sink.refused
    figures.duplicate_deliveries = sink.duplicate_deliveries()
    return figures


FULL = {"seconds": 180.0, "rate": 40.0, "backlog": 5000}
QUICK = {"seconds": 45.0, "rate": 25.0, "backlog": 2000}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = ChaosOptions()
    parser.add_argument("--seconds", type=float, help="how long the chaos lasts (180; --quick 45)")
    parser.add_argument("--rate", type=float, help="new events per second (40; --quick 25)")
    parser.add_argument("--backlog", type=int, help="events of the backlog phase (5000; 2000)")
    parser.add_argument("--kill-every", type=float, default=defaults.kill_every,
                        help="seconds between SIGKILLs of a random process (1)")
    parser.add_argument("--restart-every", type=float, default=defaults.restart_every,
                        help="seconds between PostgreSQL crash-restarts (15)")
    parser.add_argument("--down-seconds", type=float, default=defaults.down_seconds,
                        help="how long PostgreSQL stays down each time (1)")
    parser.add_argument("--drain-deadline", type=float, default=defaults.drain_deadline,
                        help="seconds allowed for each drain before rows count as stuck (180)")


def run(args: argparse.Namespace) -> Report:
    options = ChaosOptions(seconds=args.seconds, rate=args.rate, kill_every=args.kill_every,
                           restart_every=args.restart_every, down_seconds=args.down_seconds,
                           backlog=args.backlog, drain_deadline=args.drain_deadline)
    figures = soak(options)
    print(figures.line(), flush=True)
    for problem in figures.problems[:20]:
        print(problem, flush=True)
    return report(figures, options)


def report(figures: ChaosFigures, options: ChaosOptions) -> Report:
    answers = ", ".join(f"{answer} {n:,}" for answer, n in sorted(figures.answers.items()))
    rows = [
        ("chaos", f"{options.seconds:.0f} s at {options.rate:g} events/s; a SIGKILL every "
                  f"{options.kill_every:g} s, PostgreSQL crashed every "
                  f"{options.restart_every:g} s ({options.down_seconds:g} s down)"),
        ("events (acknowledged)", f"{figures.events:,} ({figures.acknowledged:,})"),
        ("POSTs: answers", f"{figures.posts:,}: {answers}"),
        ("redelivered as duplicates", figures.duplicates_sent),
        ("processes SIGKILLed / PostgreSQL restarts", f"{figures.kills} / {figures.restarts}"),
        ("messages (first try refused by the sink)",
         f"{figures.messages:,} ({figures.refused_first:,})"),
        ("duplicate deliveries (at least once)", figures.duplicate_deliveries),
        ("backlog: events, held by the killed worker", f"{figures.backlog:,}, "
                                                       f"{figures.backlog_held}"),
        ("backlog: drained after the kill",
         "not in time" if figures.backlog_drain_seconds is None
         else f"{figures.backlog_drain_seconds:.1f} s"),
        ("lost / doubled / stuck / exited on own",
         f"{figures.lost} / {figures.doubled} / {figures.stuck} / {figures.exited_on_own}"),
    ]
    result = Report("chaos: SIGKILLs and PostgreSQL crashes under load",
                    "python -m bench chaos", f"{figures.line()}\n\n"
                    + table(["", "figure"], rows))
    result.check("lost == 0", str(figures.lost), figures.lost == 0)
    result.check("doubled == 0", str(figures.doubled), figures.doubled == 0)
    result.check("stuck == 0", str(figures.stuck), figures.stuck == 0)
    result.check("exited on own == 0", str(figures.exited_on_own), figures.exited_on_own == 0)
    return result

