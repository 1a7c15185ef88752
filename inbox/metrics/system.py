"""The deployment's state as Prometheus gauges, read from PostgreSQL at each scrape.

A custom collector rather than gauges set in advance: the figures belong to the database,
not to the process answering, so they are read when asked for (inbox/store/system_state.py,
a few index and catalog reads, whatever the tables' size). If the database cannot answer,
the scrape still succeeds with `inbox_database_up 0` and the web process's own figures:
an alert on that gauge is more useful than a failed scrape.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import psycopg
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from inbox import db
from inbox.errors import DatabaseUnavailable
from inbox.store import processes, system_state
from inbox.store.system_state import SystemState

log = logging.getLogger(__name__)

ConnectionSource = Callable[[], AbstractContextManager[db.Connection]]


class SystemCollector(Collector):
    """Yields the system's gauges from one `system_state.read()` per scrape."""

    def __init__(self, connection: ConnectionSource) -> None:
        self._connection = connection

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        try:
            with self._connection() as conn:
                state = system_state.read(conn)
        except (DatabaseUnavailable, psycopg.Error) as exc:
            log.warning("metrics: the database did not answer: %s", exc)
            yield _gauge("inbox_database_up", "1 when the database answered this scrape.", 0)
            return
        yield _gauge("inbox_database_up", "1 when the database answered this scrape.", 1)
        yield from _state_metrics(state)
        yield _gauge("inbox_system_read_seconds",
                     "Time this scrape spent reading the system's state from PostgreSQL.",
                     time.perf_counter() - started)


def _state_metrics(state: SystemState) -> Iterator[Metric]:
    events = GaugeMetricFamily("inbox_events", "Inbox events by status (exact).",
                               labels=["status"])
    for status, count in state.inbox.items():
        events.add_metric([status], count)
    yield events
    messages = GaugeMetricFamily("outbox_messages", "Outbox messages by status (exact).",
                                 labels=["status"])
    for status, count in state.outbox.items():
        messages.add_metric([status], count)
    yield messages
    yield _gauge("inbox_due_events", "Inbox events due now (not leased).",
                 state.inbox_backlog.due)
    yield _gauge("inbox_oldest_due_seconds", "How long the oldest due event has waited "
                 "since it became due (0 when none is due).",
                 state.inbox_backlog.oldest_due_seconds)
    yield _gauge("inbox_leased_events", "Inbox events a worker holds right now.",
                 state.inbox_backlog.leased)
    yield _gauge("outbox_due_messages", "Outbox messages due now (not leased).",
                 state.outbox_backlog.due)
    yield _gauge("outbox_oldest_due_seconds", "How long the oldest due message has waited "
                 "since it became due (0 when none is due).",
                 state.outbox_backlog.oldest_due_seconds)
    yield _gauge("outbox_leased_messages", "Outbox messages a relay holds right now.",
                 state.outbox_backlog.leased)
    alive = GaugeMetricFamily("inbox_processes_alive", "Workers, relays and web processes "
                              "whose heartbeat is recent.", labels=["kind"])
    for kind, count in processes.alive_by_kind(list(state.processes)).items():
        alive.add_metric([kind], count)
    yield alive
    gone = GaugeMetricFamily("inbox_processes_gone", "Processes seen in the last day that "
                             "stopped beating without saying goodbye.", labels=["kind"])
    for kind in processes.KINDS:
        gone.add_metric([kind], sum(1 for p in state.processes if p.kind == kind and not p.alive))
    yield gone
    dead = GaugeMetricFamily("inbox_dead_events_by_type", "Dead events by event type.",
                             labels=["type"])
    for event_type, count in sorted(state.dead_by_type.items()):
        dead.add_metric([event_type], count)
    yield dead
    deliveries = GaugeMetricFamily("outbox_deliveries_last_minute", "Delivery tries in the "
                                   "last complete minute, by outcome.", labels=["outcome"])
    for outcome, count in state.deliveries_last_minute.items():
        deliveries.add_metric([outcome], count)
    yield deliveries
    yield from _outbox_by_destination_and_topic(state)
    yield from _stripe_reconciliation(state)
    delay = GaugeMetricFamily("inbox_end_to_end_seconds", "Received-to-processed delay of "
                              "the newest processed events (up to 1,000 of the last 5 "
                              "minutes, among the newest 10,000 attempts), by quantile.",
                              labels=["quantile"])
    for quantile, seconds in state.end_to_end_seconds.items():
        delay.add_metric([quantile], seconds)
    yield delay
    attempts = GaugeMetricFamily("inbox_attempts_last_minute",
                                 "Event attempts finished in the last minute, by outcome.",
                                 labels=["outcome"])
    for outcome, count in state.attempts_last_minute.items():
        attempts.add_metric([outcome], count)
    yield attempts


def _outbox_by_destination_and_topic(state: SystemState) -> Iterator[Metric]:
    """Which destination fails, and which topics' messages died. A destination label is
    scheme://host:port, log: or none, never a route's URL (audit.safe_destination)."""
    by_destination = GaugeMetricFamily(
        "outbox_deliveries_by_destination_last_minute", "Delivery tries in the last "
        "complete minute, by destination (scheme://host:port, log:, or none when the try "
        "went nowhere) and outcome; every destination tried in the last 15 minutes.",
        labels=["destination", "outcome"])
    for (destination, outcome), count in sorted(state.deliveries_by_destination.items()):
        by_destination.add_metric([destination, outcome], count)
    yield by_destination
    dead = GaugeMetricFamily("outbox_dead_messages_by_topic", "Dead outbox messages by "
                             "topic.", labels=["topic"])
    for topic, count in sorted(state.dead_messages_by_topic.items()):
        dead.add_metric([topic], count)
    yield dead


def _stripe_reconciliation(state: SystemState) -> Iterator[Metric]:
    """When each scope of Stripe's reconciliation last ran, what it found and added, and
    whether its last run failed (a refused key, Stripe down): alert on `failing == 1` or on
    a last run older than the interval."""
    families = {
        "last_run": GaugeMetricFamily(
            "inbox_stripe_reconcile_last_run_timestamp_seconds", "When Stripe's events "
            "were last reconciled (Unix time), by scope (stripe, stripe:acct_..., "
            "stripe-thin, ...).", labels=["scope"]),
        "found": GaugeMetricFamily("inbox_stripe_reconcile_last_found", "Events Stripe "
                                   "listed in the scope's last completed run.",
                                   labels=["scope"]),
        "added": GaugeMetricFamily("inbox_stripe_reconcile_last_added", "Events the "
                                   "scope's last completed run added (the inbox lacked "
                                   "them).", labels=["scope"]),
        "failing": GaugeMetricFamily("inbox_stripe_reconcile_failing", "1 when the scope's "
                                     "last run failed (see inbox status).",
                                     labels=["scope"]),
    }
    for run in state.reconcile_runs:
        if run.last_run_at is not None:
            families["last_run"].add_metric([run.scope], run.last_run_at.timestamp())
        families["found"].add_metric([run.scope], run.last_found or 0)
        families["added"].add_metric([run.scope], run.last_added or 0)
        families["failing"].add_metric([run.scope], 1 if run.last_error else 0)
    yield from families.values()


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)
