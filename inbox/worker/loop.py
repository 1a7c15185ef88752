"""The inbox worker: lease due events, run their handlers, record the outcomes.

One `run_once()` is:
1. **claim** (`inbox_claim`, autocommit): up to `batch_size` due events are leased to this
   connection's backend and their attempt is counted, durably, before any handler runs;
2. **process**, in ONE transaction (or several: after 32 handlers that ran SQL, and before
   a handler's request to Stripe's API for a thin event, EndTransactionFirst): each
   event's handler in its own savepoint (a failing handler rolls back only its own
   writes), then the outbox messages of the handlers that succeeded and all outcomes, in
   one round trip (`outbox_enqueue`, `inbox_finish`): handler writes, outbox rows and
   status changes commit together. The transaction begins
   at the first handler statement; when no handler runs SQL, BEGIN and COMMIT travel in
   that same round trip (BatchTransaction);
3. events that crashed a worker before are claimed at most one at a time and processed
   alone, in their own transaction, so a poison event only takes itself down; a round that
   claimed one claims again at once (`more_may_be_due`), so the batch-mates of a crash are
   worked through at the pipeline's speed, not one per poll tick.

`rescue()` turns leases of dead backends (a SIGKILLed or OOM-killed worker) into failed
attempts; every worker runs it on its poll tick. A crash of a worker holding a batch is
weak evidence against each event of it: they are due again at once (each then runs alone);
a crash with one event in hand is strong evidence: backoff, and `dead` at the limit. The
runner (inbox/runtime/runner.py) drives both.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import random
import socket
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

from inbox import db
from inbox.alerts import coalesce
from inbox.alerts.kinds import all_kinds
from inbox.backoff import next_attempt_delay_seconds
from inbox.config import Settings
from inbox.errors import DatabaseUnavailable, Permanent
from inbox.logs import MAX_LOGGED_ERROR_CHARS, log_lines
from inbox.runtime.duties import TickDuties
from inbox.runtime.spec import Control, LoopSpec, NullControl
from inbox.stripe.thin import StripeClients, StripeFetch
from inbox.worker import store
from inbox.worker.batch import (
    BatchPayloads,
    BatchTransaction,
    EndTransactionFirst,
    no_transaction_yet,
)
from inbox.worker.handler_tx import Event, HandlerTx
from inbox.worker.registry import Registry
from inbox.worker.store import ClaimedEvent, DeadLease, Lease, Outcome

log = logging.getLogger(__name__)

# Events leased per claim. A larger batch drains faster (one claim, one commit and one
# outcome statement for more events): 100 drained ~30 % faster than 32 with handlers that
# only queue messages. A worker that dies holding a batch costs each of its events an
# attempt, and makes them suspects (each processed alone, one claim after another).
DEFAULT_BATCH_SIZE = 100
# Handlers that ran SQL per transaction. Each one's savepoint may take a subtransaction id,
# and past 64 per transaction PostgreSQL's subxid cache overflows, which slows every other
# session's snapshots; a transaction also holds its handlers' row locks until it commits.
# A batch whose handlers run more SQL than this is processed in several transactions.
HANDLERS_WITH_SQL_PER_TRANSACTION = 32
MAX_ERROR_CHARS = 2000
# How far before its previous claim's earliest event a claim starts its scan: room for an
# insert that started before those events and committed after them.
SCAN_MARGIN = timedelta(seconds=1)
LISTEN_QUERY = "inbox_listen"


class Worker:
    """One claimer of the inbox, on its own connection (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        *,
        name: str,
        batch_size: int = DEFAULT_BATCH_SIZE,
        control: Control | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.name = name
        self.batch_size = max(1, batch_size)
        self.control = control or NullControl()
        self.rng = rng or random.Random()
        self.max_attempts = max(1, settings.max_attempts)
        self.conn = db.connect(settings.require_database_url(), application_name="inbox-worker")
        store.start_session(self.conn, settings.handler_timeout_seconds)
        self._scan_from = store.EARLIEST  # see _poll_tick
        self._next_poll_tick = 0.0
        self._claimed_a_suspect = False  # see more_may_be_due
        self.duties = TickDuties("worker", settings, self.conn)
        self._event_dead = all_kinds(settings)["event_dead"]
        self._stripe_clients = StripeClients(settings)  # thin events' fetches
        self._prefetched: dict[int, StripeFetch] = {}  # this batch's, by inbox id

    # -- the Claimer protocol ------------------------------------------------------------

    def run_once(self) -> int:
        """Claim one batch and process it; the number of events claimed (0: none due)."""
        scan_from = self._scan_from
        if self._poll_tick():
            scan_from = store.EARLIEST
            db.forget_prepared_statements(self.conn)
        claimed = store.claim(self.conn, self.name, self.batch_size, scan_from)
        self._claimed_a_suspect = any(event.crashes > 0 for event in claimed)
        if not claimed:
            return 0
        self._scan_from = min(event.due_at for event in claimed) - SCAN_MARGIN
        fresh = [event for event in claimed if event.crashes == 0]
        suspects = [event for event in claimed if event.crashes > 0]
        if fresh:
            self._process(fresh)
        for event in suspects:
            self._process([event])
        return len(claimed)

    def more_may_be_due(self, claimed: int) -> bool:
        """After a full batch, or a claim that took a suspect. A claim that got fewer
        took every event due then, except suspects (one per claim); one committed since
        was announced by a NOTIFY that ends the runner's wait at once. So at a low rate
        each event costs one claim, not a second, empty one (and fewer claims leave more
        CPU for the receiver on a shared machine). A claim that took a suspect may have
        left others due behind it, and no NOTIFY announces them: waiting for the poll
        tick made a crashed batch of 100 take 100 poll intervals (issue 18)."""
        return claimed >= self.batch_size or self._claimed_a_suspect

    def rescue(self) -> int:
        """Count the attempts of dead workers' leases as failed; the number rescued."""
        leases = store.dead_leases(self.conn)
        if not leases:
            return 0
        outcomes = [self._crash_outcome(dead) for dead in leases]
        # One statement, atomic on its own (with the event_dead alert if any went dead).
        rescued = store.finish(self.conn, outcomes, on_dead=self._raise_event_dead)
        log_attempts(None, outcomes)
        if rescued:
            log.warning("rescued %d event(s) from dead workers", rescued)
        return rescued

    def tick(self) -> None:
        """The poll tick: rescue, then the tick duties (heartbeat, alerts, metrics line)."""
        self.rescue()
        self.duties.run()

    def release(self) -> int:
        """Give back this worker's leases uncharged (exit at once); best effort."""
        if self.conn.closed or self.conn.broken:
            return 0
        return store.release(self.conn)

    def close(self) -> None:
        with contextlib.suppress(Exception):  # the connection may be gone already
            self.duties.goodbye()
        self._stripe_clients.close()
        self.conn.close()

    def _raise_event_dead(self, conn: db.Connection, inbox_ids: list[int]) -> None:
        """In the transaction that made these events dead: their alert (inbox/alerts/)."""
        coalesce.raise_dead(conn, self._event_dead, inbox_ids,
                            self.settings.alert_interval_seconds)

    def _poll_tick(self) -> bool:
        """True once per poll interval: the claim then scans from the start of the index,
        and the session's statements are planned afresh.

        * Where the claim's index scan starts: usually just before the previous claim's
          events. Each claimed event leaves a dead entry at the front of inbox_due_idx until
          VACUUM, and a claim scanning from the start walks all of them: in a long drain it
          slows down as they pile up. Rows due before that point are rare (an insert that
          committed late, a suspect a claim left behind); the scan from the start finds them.
        * psycopg prepares a statement run five times, and PostgreSQL keeps its generic plan
          until the next ANALYZE. A plan made while the inbox was a few pages (a new
          install's first minute, before autovacuum) joins the claimed rows or the outcomes
          to the table by a sequential scan, and kept doing so as the table grew. Forgetting
          the prepared statements lets the next ones be planned for the table as it is.
        """
        now = time.monotonic()
        if now < self._next_poll_tick:
            return False
        self._next_poll_tick = now + self.settings.poll_interval_seconds
        return True

    # -- processing ------------------------------------------------------------------------

    def _process(self, events: list[ClaimedEvent]) -> None:
        handled = [event.lease.inbox_id for event in events
                   if self.registry.lookup(event.provider, event.event_type) is not None]
        payloads = BatchPayloads(self.conn, handled)
        try:
            self._prefetched = self._prefetch(events, payloads)
            while events:
                events = self._process_in_one_transaction(events, payloads)
        finally:
            payloads.close()
            self._prefetched = {}

    def _prefetch(self, events: list[ClaimedEvent], payloads: BatchPayloads
                  ) -> dict[int, StripeFetch]:
        """Before the batch begins: the Stripe requests its handlers declared
        (`@handler(..., prefetch=...)`), several at once, no transaction open."""
        wanted = {event.lease.inbox_id: whats for event in events
                  if event.provider == "stripe"
                  and (whats := self.registry.prefetch_of(event.provider, event.event_type))}
        fetches = {inbox_id: StripeFetch(self._stripe_clients,
                                         functools.partial(payloads.text, inbox_id),
                                         no_transaction_yet)
                   for inbox_id in wanted}
        self._stripe_clients.prefetch([(fetches[inbox_id], whats)
                                       for inbox_id, whats in wanted.items()])
        return fetches

    def _process_in_one_transaction(
        self, events: list[ClaimedEvent], payloads: BatchPayloads
    ) -> list[ClaimedEvent]:
        """Run handlers and record their outcomes in one transaction, until
        HANDLERS_WITH_SQL_PER_TRANSACTION of them have run SQL; the events left over (still
        leased to this worker) go to the next transaction."""
        outcomes: list[Outcome] = []
        millis: list[float | None] = []
        with BatchTransaction(self.conn) as batch:
            for index, claimed in enumerate(events):
                if batch.handlers_with_sql >= HANDLERS_WITH_SQL_PER_TRANSACTION:
                    left = events[index:]
                    break
                if self.control.stop_requested():
                    # Shutting down: finish the event in hand, give the rest back.
                    outcomes.append(Outcome(claimed.lease, "pending", "released"))
                    millis.append(None)
                    continue
                began = time.perf_counter()
                outcome = self._run_handler(claimed, batch, payloads)
                if outcome is None:  # it asks Stripe: commit the others' work first
                    left = events[index:]
                    break
                outcomes.append(outcome)
                millis.append(round((time.perf_counter() - began) * 1000, 2))
            else:
                left = []
            finished, queued = store.finish_batch(self.conn, outcomes, batch.messages,
                                                  own_transaction=not batch.begun,
                                                  on_dead=self._raise_event_dead)
        done = Counter(outcome.outcome for outcome in outcomes if outcome.outcome != "released")
        for name, count in done.items():  # one lock each, not one per event
            self.duties.counts.add(f"inbox.{name}", count)
        log_attempts(events, outcomes, millis)
        if queued:
            store.wake_relay(self.conn)
        if finished != len(outcomes):
            log.warning("%d of %d leases were lost before their outcome was recorded",
                        len(outcomes) - finished, len(outcomes))
        return left

    def _run_handler(
        self, claimed: ClaimedEvent, batch: BatchTransaction, payloads: BatchPayloads
    ) -> Outcome | None:
        """Run one handler; its outcome, or None when it asked Stripe's API while other
        handlers' writes were in the transaction (it then runs again, first in the next)."""
        lease = claimed.lease
        started = datetime.now(UTC)
        func = self.registry.lookup(claimed.provider, claimed.event_type)
        if func is None:
            return Outcome(lease, "ignored", "ignored", started_at=started)
        read_payload = functools.partial(payloads.text, lease.inbox_id)
        event = Event(
            provider=claimed.provider,
            id=claimed.event_id,
            type=claimed.event_type,
            attempt=lease.attempts,
            inbox_id=lease.inbox_id,
            read_payload=read_payload,
            account=claimed.account,
            stripe_fetch=self._stripe_fetch(claimed, batch, read_payload),
        )
        tx = HandlerTx(self.conn, event, batch.begin)
        self.control.busy()
        try:
            func(event, tx)
            if tx.in_savepoint:
                if self.conn.info.transaction_status.name == "INERROR":
                    raise RuntimeError("the handler caught a database error and carried on")
                store.release_savepoint(self.conn)
            batch.messages.extend(tx.messages)
        except EndTransactionFirst:
            if tx.in_savepoint:
                store.rollback_savepoint(self.conn)
            return None
        except Exception as exc:
            if self.conn.broken:
                # The backend is gone (killed by the idle timeout, or the database went
                # away): nothing more can be written; the leases are rescued as crashes.
                raise DatabaseUnavailable(f"connection lost during a handler: {exc}") from exc
            if tx.in_savepoint:
                store.rollback_savepoint(self.conn)
            return self._failure_outcome(lease, exc, started)
        finally:
            self.control.idle()
            if tx.in_savepoint:
                batch.handlers_with_sql += 1
        return Outcome(lease, "processed", "processed", started_at=started)

    def _stripe_fetch(self, claimed: ClaimedEvent, batch: BatchTransaction,
                      read_payload: functools.partial[str]) -> StripeFetch | None:
        """A Stripe event's fetcher of its thin-event data (nothing is read until asked)."""
        if claimed.provider != "stripe":
            return None
        prefetched = self._prefetched.get(claimed.lease.inbox_id)
        if prefetched is not None:
            prefetched.before_call = batch.before_stripe_call  # for what was not prefetched
            return prefetched
        return StripeFetch(self._stripe_clients, read_payload, batch.before_stripe_call)

    def _failure_outcome(self, lease: Lease, exc: Exception, started: datetime) -> Outcome:
        # The attempt's log line (log_attempts) says it, with the batch's other lines.
        error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
        if isinstance(exc, Permanent) or lease.attempts >= self.max_attempts:
            return Outcome(lease, "dead", "dead", error=error, started_at=started)
        delay = self._delay_seconds(lease.attempts)
        return Outcome(lease, "pending", "retry", delay, error, started)

    def _crash_outcome(self, dead: DeadLease) -> Outcome:
        """A crashed attempt. With the event alone in the dead worker's hands (a suspect,
        a batch of one), the crash is its own: backoff, and `dead` at the attempt limit.
        With batch-mates, any one of them may have caused it: the event is due again at
        once and never made dead by this crash; as a suspect it next runs alone, where a
        crash is its own. So a poison event still ends `dead` after the limit, and an
        innocent batch-mate pays one attempt, not a minute of backoff or its last attempt."""
        lease = dead.lease
        error = f"worker died during attempt {lease.attempts} ({lease.locked_by})"
        if not dead.alone:
            error += f" holding {dead.held} events"
            return Outcome(lease, "pending", "crashed", 0.0, error, lease.locked_at)
        if lease.attempts >= self.max_attempts:
            return Outcome(lease, "dead", "crashed", error=error, started_at=lease.locked_at)
        delay = self._delay_seconds(lease.attempts)
        return Outcome(lease, "pending", "crashed", delay, error, lease.locked_at)

    def _delay_seconds(self, attempt: int) -> float:
        return next_attempt_delay_seconds(
            attempt, self.settings.retry_base_seconds, self.settings.retry_cap_seconds, self.rng
        )


# The level of an attempt's line, by outcome (anything else: INFO).
ATTEMPT_LEVELS = {"retry": logging.WARNING, "crashed": logging.WARNING, "dead": logging.ERROR}


def attempt_line(claimed: ClaimedEvent | None, outcome: Outcome, ms: float | None
                 ) -> dict[str, object]:
    """The fields of one attempt's log line: who, which attempt, how it ended, how long.

    Never the payload. A failure adds the exception's class and the start of its message
    (MAX_LOGGED_ERROR_CHARS): the handler author's text and the operator's first clue,
    as stored in last_error (docs/decisions.md, "Structured log lines, one logging call
    per batch").
    """
    lease = outcome.lease
    line: dict[str, object] = {}
    if claimed is not None:
        line.update(provider=claimed.provider, event_id=claimed.event_id,
                    type=claimed.event_type)
    line.update(inbox_id=lease.inbox_id, attempt=lease.attempts, outcome=outcome.outcome,
                ms=ms)
    if outcome.outcome in ("retry", "crashed") and outcome.delay_seconds is not None:
        line["retry_in_s"] = round(outcome.delay_seconds, 1)
    if outcome.error is not None:
        error_class, _, message = outcome.error.partition(": ")
        if outcome.outcome == "crashed":
            error_class, message = "WorkerCrashed", outcome.error
        line["error_class"] = error_class
        line["error"] = message[:MAX_LOGGED_ERROR_CHARS]
    return line


def log_attempts(events: list[ClaimedEvent] | None, outcomes: list[Outcome],
                 millis: list[float | None] | None = None) -> None:
    """One line per attempt, one logging call per level present (usually one per batch:
    inbox/logs.py). `events` and `millis` are in the order of `outcomes` (None: not known,
    as for a rescued crash)."""
    if not log.isEnabledFor(logging.INFO) or not outcomes:
        return
    by_level: dict[int, list[dict[str, object]]] = {}
    for index, outcome in enumerate(outcomes):
        line = attempt_line(events[index] if events else None, outcome,
                            millis[index] if millis else None)
        by_level.setdefault(ATTEMPT_LEVELS.get(outcome.outcome, logging.INFO), []).append(line)
    for level, lines in sorted(by_level.items()):
        log_lines(log, level, "attempt", lines)


def loop_spec(
    settings: Settings,
    registry: Registry,
    *,
    concurrency: int = 1,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> LoopSpec:
    """The worker's loop for the runner: `concurrency` processes, each one Worker."""
    host = socket.gethostname()

    def make_claimer(control: Control) -> Worker:  # runs in the child, after fork
        return Worker(settings, registry, name=f"{host}:{os.getpid()}",
                      batch_size=batch_size, control=control)

    return LoopSpec(
        name="worker",
        database_url=settings.require_database_url(),
        listen_query=LISTEN_QUERY,
        make_claimer=make_claimer,
        poll_interval_seconds=settings.poll_interval_seconds,
        concurrency=concurrency,
        busy_limit_seconds=settings.handler_timeout_seconds,
    )
