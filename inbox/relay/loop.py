"""The relay: deliver outbox messages to the outside world, at least once.

The process loop is the runner's (inbox/runtime/runner.py: LISTEN outbox_messages + poll, crash
rescue on every tick, graceful SIGTERM, a supervisor that restarts a dead child). `Relay` is
its claimer, one per relay process, with
- its own database connection: `run_once` leases due messages (`outbox_claim`: the attempt
  is counted and the row marked as held by this connection, in one autocommit statement)
  and writes the outcomes of finished deliveries in batches (`outbox_record_outcomes`);
  `rescue` takes back the messages of relays that died;
- `concurrency` delivery threads that take leased messages from the `Lanes` and call the
  transports, outside any transaction: no transaction, row lock or snapshot is held across
  a network call. A thread that finishes takes the next message at once, without waiting
  for a database round trip.

No head-of-line blocking: messages wait in one lane per destination (scheme://host:port),
and a destination has at most `destination_concurrency` deliveries in flight (half the
threads by default). While a destination's lane is full its topics are left out of the
claim, so a hanging host holds only its own slots and a bounded number of messages, and the
claim keeps taking messages for every other destination.

At least once: a relay killed between a send and its outcome leaves the row held by a
backend that no longer exists; the rescue makes it due again (its attempt stays counted)
and it is sent again with the same Idempotency-Key. A relay that hangs with its connection
open stops beating and loses its leases the same way after INBOX_RELAY_TAKEOVER_SECONDS;
its delivery threads start no send on a lease it may have lost (inbox/relay/lease.py), so
two relays never send one message at the same time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from inbox import db
from inbox.alerts import coalesce
from inbox.alerts.kinds import all_kinds
from inbox.backoff import honour_retry_after, next_attempt_delay_seconds
from inbox.config import Settings
from inbox.errors import DatabaseUnavailable
from inbox.logs import MAX_LOGGED_ERROR_CHARS, log_lines
from inbox.relay import store
from inbox.relay.lease import LeaseClock, self_stop_seconds, takeover_seconds
from inbox.relay.routes import Route, RouteTable, parse_routes
from inbox.relay.store import OutboxMessage, Outcome
from inbox.relay.transports import Result, Transport, build_transports
from inbox.runtime.duties import TickDuties
from inbox.runtime.spec import Control, LoopSpec, NullControl

logger = logging.getLogger(__name__)

LISTEN_QUERY = "outbox_listen"
MAX_CLAIM_BATCH = 100
# Messages leased ahead of the threads, as a multiple of the thread count: a thread that
# finishes finds its next message already there.
PREFETCH_FACTOR = 2
# While deliveries are in flight, run_once waits this long at most for one to finish before
# it returns to the runner (which checks for a stop request in between).
TURN_WAIT_SECONDS = 0.1
# Finishing the deliveries in hand on SIGTERM; below the runner's 25 s, itself below the
# 30 s after which Heroku sends SIGKILL.
SHUTDOWN_GRACE_SECONDS = 20.0
# A claim that leaves out busy topics and comes back short may have walked past their whole
# backlog in the due index: the next claim leaving out the same topics waits this long.
SKIPPING_CLAIM_INTERVAL_SECONDS = 0.05
DATABASE_ERRORS = (DatabaseUnavailable, *db.UNAVAILABLE_ERRORS)


class Job(NamedTuple):
    """A leased message waiting for a delivery thread; `leased_at` is the monotonic time
    before its claim was sent (the lease's age, inbox/relay/lease.py)."""

    message: OutboxMessage
    route: Route
    leased_at: float


# The metrics line's word for a recorded outcome (a pending outcome is a retry).
L2MET_OUTCOMES = {"sent": "sent", "pending": "retry", "dead": "dead"}


@dataclass(frozen=True)
class Delivery:
    """One finished delivery attempt: the transport's answer and when it ran (for the
    message's attempts history, outbox_attempts)."""

    message: OutboxMessage
    route: Route
    result: Result
    started_at: datetime
    finished_at: datetime


class Lanes:
    """Leased messages waiting, one lane per destination, and the deliveries in flight.

    Shared by the dispatcher (`add`, `results`, `room`) and the delivery threads (`take`,
    `done`) under one condition variable.
    """

    def __init__(self, concurrency: int, per_destination: int, on_done: threading.Event) -> None:
        self.concurrency = concurrency
        self.per_destination = per_destination
        self._on_done = on_done
        self._cond = threading.Condition()
        self._waiting: dict[str, deque[Job]] = {}
        self._inflight: Counter[str] = Counter()
        self._results: list[Delivery] = []
        self._given_back: list[int] = []
        self._stopped = False
        self.inflight_total = 0

    def add(self, jobs: list[Job]) -> None:
        with self._cond:
            for job in jobs:
                self._waiting.setdefault(job[1].destination, deque()).append(job)
            self._cond.notify(len(jobs))

    def take(self) -> Job | None:
        """The next message whose destination has a free slot (lanes in turn); None: stop."""
        with self._cond:
            while not self._stopped:
                for destination in list(self._waiting):
                    if self._inflight[destination] < self.per_destination:
                        jobs = self._waiting.pop(destination)
                        job = jobs.popleft()
                        if jobs:  # to the back: the next take starts with another lane
                            self._waiting[destination] = jobs
                        self._inflight[destination] += 1
                        self.inflight_total += 1
                        return job
                self._cond.wait()
            return None

    def done(self, delivery: Delivery) -> None:
        with self._cond:
            self._inflight[delivery.route.destination] -= 1
            self.inflight_total -= 1
            self._results.append(delivery)
            self._cond.notify()
        self._on_done.set()

    def give_back(self, job: Job) -> None:
        """A taken message whose send was not started (its lease may be lost)."""
        with self._cond:
            self._inflight[job.route.destination] -= 1
            self.inflight_total -= 1
            self._given_back.append(job.message.id)
            self._cond.notify()
        self._on_done.set()

    def results(self) -> list[Delivery]:
        with self._cond:
            results, self._results = self._results, []
            return results

    def given_back(self) -> list[int]:
        with self._cond:
            ids, self._given_back = self._given_back, []
            return ids

    def room(self) -> int:
        """How many more messages to lease: the prefetch target minus what is in hand,
        not counting messages queued behind a destination whose slots are all taken."""
        with self._cond:
            queued = sum(
                len(jobs) for d, jobs in self._waiting.items()
                if self._inflight[d] < self.per_destination
            )
            return PREFETCH_FACTOR * self.concurrency - self.inflight_total - queued

    def full_destinations(self) -> set[str]:
        """Destinations with a thread pool's worth of messages already waiting."""
        with self._cond:
            return {d for d, jobs in self._waiting.items() if len(jobs) >= self.concurrency}

    def busy(self) -> bool:
        with self._cond:
            return bool(self.inflight_total or self._waiting or self._results
                        or self._given_back)

    def unstarted(self) -> list[int]:
        """Take every waiting message out of the lanes; their ids."""
        with self._cond:
            ids = [job.message.id for jobs in self._waiting.values() for job in jobs]
            self._waiting.clear()
            return ids

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()


class Relay:
    """The runner's claimer for the outbox (run_once / rescue / release / close)."""

    def __init__(
        self,
        settings: Settings,
        routes: RouteTable,
        *,
        concurrency: int | None = None,
        destination_concurrency: int | None = None,
        transports: dict[str, Transport] | None = None,
        control: Control | None = None,
    ) -> None:
        self.settings = settings
        self.routes = routes
        self.control = control or NullControl()
        self.concurrency = max(1, concurrency or settings.relay_concurrency)
        per_destination = (
            destination_concurrency
            or settings.relay_destination_concurrency
            or max(1, self.concurrency // 2)
        )
        self.destination_concurrency = min(per_destination, self.concurrency)
        self.name = f"relay:{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.stats: Counter[str] = Counter()
        self.conn = db.connect(settings.require_database_url(), application_name="inbox-relay")
        self.transports = transports or build_transports(settings)
        self.takeover_seconds = takeover_seconds(settings)
        self.leases = LeaseClock(self_stop_seconds(settings))
        self.duties = TickDuties("relay", settings, self.conn, on_beat=self.leases.beaten)
        self._message_dead = all_kinds(settings)["message_dead"]
        self._wake = threading.Event()
        self._lanes = Lanes(self.concurrency, self.destination_concurrency, self._wake)
        self._topic_destination: dict[str, str] = {}
        self._outcomes: list[Outcome] = []
        self._lines: list[dict[str, object]] = []  # the log lines of self._outcomes
        self._skipping_claims_after = 0.0
        self._short_skip: frozenset[str] = frozenset()
        self._immediate = False
        # Daemon threads: a delivery stuck past the shutdown grace must not keep the process
        # alive; its message is rescued once our connection is gone.
        for number in range(self.concurrency):
            threading.Thread(target=self._deliver_forever, name=f"relay-delivery-{number}",
                             daemon=True).start()

    # -- the runner's Claimer protocol ----------------------------------------------------

    def run_once(self) -> int:
        """One turn: record finished deliveries, lease more messages for the threads.

        While deliveries are in hand it waits briefly for one to finish and returns nonzero,
        so the runner calls again at once; 0 means idle: the runner then waits for a NOTIFY
        or its poll tick.
        """
        self._wake.clear()
        done = self._collect() + self._release_given_back()
        claimed = 0 if self.control.stop_requested() else self._claim()
        self._flush()
        if not self._lanes.busy():
            return done + claimed
        if not (done or claimed):
            self._wake.wait(TURN_WAIT_SECONDS)
        return max(1, done + claimed)

    def more_may_be_due(self, claimed: int) -> bool:
        """Always: a nonzero turn means deliveries are in hand (see run_once)."""
        return True

    def rescue(self) -> int:
        """Take back the messages of relays that died or hung; how many. Those it makes
        dead raise their alert in the same transaction. Then end the connections of the
        relays that hung."""
        with self.conn.transaction():
            rescued = store.rescue(self.conn, self.settings.max_attempts, self.takeover_seconds)
            dead = [r.id for r in rescued if r.status == "dead"]
            if dead:
                self._raise_message_dead(dead)
        if rescued:
            hung = sorted({r.hung_backend for r in rescued if r.hung_backend is not None})
            logger.warning("rescued %d message(s) held by relays that stopped%s: %s",
                           len(rescued), f" (hung, backends {hung})" if hung else "",
                           [(r.id, r.status) for r in rescued[:10]])
            self._end_hung_relays(rescued)
        return len(rescued)

    def _end_hung_relays(self, rescued: list[store.Rescued]) -> None:
        try:
            store.end_hung_relays(self.conn, rescued)
        except db.InsufficientPrivilege as exc:
            logger.warning("could not end a hung relay's connection (its leases are taken "
                           "back all the same): %s", exc)

    def tick(self) -> None:
        """The poll tick: rescue, then the tick duties (heartbeat, alerts, metrics line)."""
        self.rescue()
        self.duties.run()

    def release(self) -> int:
        """Exit at once: give back the messages not started yet; the rest will be rescued."""
        self._immediate = True
        unstarted = self._lanes.unstarted()
        if self.conn.closed or self.conn.broken:
            return 0
        return store.release(self.conn, self.name, unstarted)

    def close(self) -> None:
        """Give back what was not started, finish the deliveries in hand, record them.

        A second signal while it waits (KeyboardInterrupt from the runner) ends the wait:
        what is still in flight is left to the rescue.
        """
        unstarted = self._lanes.unstarted()  # no thread starts one of these from now on
        self._record(self._release_given_back)
        self._record(lambda: store.release(self.conn, self.name, unstarted))
        deadline = time.monotonic() + (0.0 if self._immediate else SHUTDOWN_GRACE_SECONDS)
        try:
            while self._lanes.inflight_total and time.monotonic() < deadline:
                self._wake.wait(min(TURN_WAIT_SECONDS, max(0.0, deadline - time.monotonic())))
                self._wake.clear()
        except KeyboardInterrupt:
            logger.info("relay: exiting at once")
        self._lanes.stop()
        self._collect()
        if self._lanes.inflight_total:
            logger.warning("%d deliveries still in flight at exit; they will be rescued",
                           self._lanes.inflight_total)
        self._record(self._flush)
        self._record(self.duties.goodbye)
        for transport in {id(t): t for t in self.transports.values()}.values():
            transport.close()
        self.conn.close()
        logger.info("relay %s stopped: %s", self.name, dict(self.stats) or "nothing delivered")

    def _record(self, write: Callable[[], object]) -> None:
        """A last write on the way out; if the database is gone, the rescue will do."""
        try:
            if not (self.conn.closed or self.conn.broken):
                write()
        except DATABASE_ERRORS as exc:
            logger.warning("could not record the last outcomes (they will be rescued): %s", exc)

    # -- the dispatcher -------------------------------------------------------------------

    def _claim(self) -> int:
        room = min(self._lanes.room(), MAX_CLAIM_BATCH)
        if room <= 0:
            return 0
        full = self._lanes.full_destinations()
        skip = {topic for topic, dest in self._topic_destination.items() if dest in full}
        if skip and skip >= self._short_skip and time.monotonic() < self._skipping_claims_after:
            return 0  # the same topics left out as by the last short claim: nothing new yet
        leased_at = self.leases.clock()  # before the claim: the lease is no older
        messages = store.claim(self.conn, self.name, room, skip)
        if skip and len(messages) < room:
            self._short_skip = frozenset(skip)
            self._skipping_claims_after = time.monotonic() + SKIPPING_CLAIM_INTERVAL_SECONDS
        jobs: list[Job] = []
        for message in messages:
            route = self.routes.match(message.topic)
            if route is None:
                error = f"no route for topic {message.topic!r} in INBOX_ROUTES"
                outcome = Outcome(message.id, "dead", error)
                self._outcomes.append(outcome)
                self._lines.append({"message_id": message.id, "topic": message.topic,
                                    "attempt": message.attempts, "outcome": "dead",
                                    "error": error})
                continue
            self._topic_destination[message.topic] = route.destination
            jobs.append(Job(message, route, leased_at))
        self._lanes.add(jobs)
        return len(messages)

    def _release_given_back(self) -> int:
        """Give back the messages the delivery threads did not start because their lease may
        have passed to another relay (fenced: a lease that did is left alone); how many."""
        ids = self._lanes.given_back()
        if ids:
            released = store.release(self.conn, self.name, ids)
            logger.warning(
                "relay %s: %d message(s) not started: over %.1f s without a heartbeat since "
                "their claim, their leases may have passed to another relay; %d given back",
                self.name, len(ids), self.leases.self_stop_seconds, released)
        return len(ids)

    def _collect(self) -> int:
        results = self._lanes.results()
        for delivery in results:
            outcome = self._decide(delivery)
            self._outcomes.append(outcome)
            self._lines.append(delivery_line(delivery, outcome))
        return len(results)

    def _decide(self, delivery: Delivery) -> Outcome:
        """The row's next state after an attempt: sent, dead, or pending with a delay."""
        message, result = delivery.message, delivery.result
        settings = self.settings
        history = {"started_at": delivery.started_at, "finished_at": delivery.finished_at,
                   "http_status": result.http_status, "smtp_reply": result.smtp_reply,
                   "destination": delivery.route.destination}
        if result.status == "sent":
            return Outcome(message.id, "sent", **history)
        if result.status == "retry" and message.attempts < settings.max_attempts:
            delay = next_attempt_delay_seconds(
                message.attempts, settings.retry_base_seconds, settings.retry_cap_seconds
            )
            retry_after = result.retry_after_seconds
            if retry_after is not None:
                retry_after = min(retry_after, settings.retry_cap_seconds)
            delay = honour_retry_after(delay, retry_after)
            return Outcome(message.id, "pending", result.error, delay, **history)
        error = result.error or "dead"
        if result.status == "retry":
            error = f"gave up after {message.attempts} attempts: {error}"
        return Outcome(message.id, "dead", error, **history)

    def _flush(self) -> None:
        """Record the finished deliveries in one statement; with the message_dead alert
        in the same transaction when any went dead."""
        if not self._outcomes:
            return
        dead = [outcome.id for outcome in self._outcomes if outcome.status == "dead"]
        with self.conn.transaction() if dead else contextlib.nullcontext():
            store.record_outcomes(self.conn, self.name, self._outcomes)
            if dead:
                self._raise_message_dead(dead)
        done = Counter(outcome.status for outcome in self._outcomes)
        self.stats.update(done)
        for status, count in done.items():  # one lock each, not one per delivery
            self.duties.counts.add(f"outbox.{L2MET_OUTCOMES[status]}", count)
        self._outcomes = []
        log_deliveries(self._lines)
        self._lines = []

    def _raise_message_dead(self, outbox_ids: list[int]) -> None:
        """In the transaction that made these messages dead: their alert (never for an
        alert message itself: the query leaves those out)."""
        coalesce.raise_dead(self.conn, self._message_dead, outbox_ids,
                            self.settings.alert_interval_seconds)

    # -- delivery threads -----------------------------------------------------------------

    def _deliver_forever(self) -> None:
        while (job := self._lanes.take()) is not None:
            if not self.leases.may_start(job.leased_at):
                self._lanes.give_back(job)
                continue
            message, route, _ = job
            started = datetime.now(UTC)
            try:
                result = self.transports[route.scheme].deliver(message, route)
            except Exception as exc:
                logger.exception("outbox %s: transport %s failed", message.id, route.scheme)
                result = Result.retry(f"{type(exc).__name__}: {exc}")
            self._lanes.done(Delivery(message, route, result, started, datetime.now(UTC)))


# The level of a delivery's line, by outcome.
DELIVERY_LEVELS = {"sent": logging.INFO, "retry": logging.INFO, "dead": logging.WARNING}


def delivery_line(delivery: Delivery, outcome: Outcome) -> dict[str, object]:
    """The fields of one delivery attempt's log line. The destination is
    `scheme://host:port` (Route.destination), never the URL: an smtp URL holds a password
    and an http path can be a credential itself (a Slack incoming webhook's). The SMTP
    reply is its code only (its text may name a recipient). A failure adds the start of
    the error, as stored in last_error (the transport's words and the status line or the
    start of the destination's answer), never the payload."""
    message, result = delivery.message, delivery.result
    seconds = (delivery.finished_at - delivery.started_at).total_seconds()
    line: dict[str, object] = {
        "message_id": message.id, "topic": message.topic,
        "destination": delivery.route.destination, "attempt": message.attempts,
        "outcome": L2MET_OUTCOMES[outcome.status], "ms": round(seconds * 1000, 2),
        "http_status": result.http_status,
        "smtp_code": result.smtp_reply[:3] if result.smtp_reply else None,
    }
    if outcome.status == "pending":
        line["retry_in_s"] = round(outcome.delay_seconds, 1)
    if outcome.status != "sent" and outcome.error:
        # An http transport's error names the URL (`POST <url>: ...`): its host only here.
        error = outcome.error.replace(delivery.route.url, delivery.route.destination)
        line["error"] = error[:MAX_LOGGED_ERROR_CHARS]
    return line


def log_deliveries(lines: list[dict[str, object]]) -> None:
    """One line per delivery attempt, one logging call per level present (inbox/logs.py)."""
    if not lines or not logger.isEnabledFor(logging.INFO):
        return
    by_level: dict[int, list[dict[str, object]]] = {}
    for line in lines:
        by_level.setdefault(DELIVERY_LEVELS[str(line["outcome"])], []).append(line)
    for level, chunk in sorted(by_level.items()):
        log_lines(logger, level, "delivery", chunk)


def loop_spec(
    settings: Settings,
    *,
    concurrency: int | None = None,
    processes: int = 1,
    routes: RouteTable | None = None,
) -> LoopSpec:
    """The relay's loop for the runner: `processes` processes of `concurrency` threads.

    Routes are parsed here, before any fork, so a bad INBOX_ROUTES stops the command with a
    clear message.
    """
    routes = routes or parse_routes(settings.routes, settings.route_secrets)
    self_stop_seconds(settings)  # a takeover too short for the timeouts stops the command

    def make_claimer(control: Control) -> Relay:  # runs in the child, after fork
        return Relay(settings, routes, concurrency=concurrency, control=control)

    return LoopSpec(
        name="relay",
        database_url=settings.require_database_url(),
        listen_query=LISTEN_QUERY,
        make_claimer=make_claimer,
        poll_interval_seconds=settings.poll_interval_seconds,
        concurrency=processes,
        busy_limit_seconds=None,  # each delivery is bounded by its transport's timeouts
    )


def run_relay(settings: Settings, concurrency: int | None = None, processes: int = 1) -> int:
    """`inbox relay`: deliver until SIGTERM (finish what is in hand); a second exits at once."""
    from inbox.runtime import supervisor

    routes = parse_routes(settings.routes, settings.route_secrets)
    spec = loop_spec(settings, concurrency=concurrency, processes=processes, routes=routes)
    logger.info("relay: %d process(es) x %s delivery threads; routes: %s", processes,
                concurrency or settings.relay_concurrency, routes.describe())
    return supervisor.run([spec])
