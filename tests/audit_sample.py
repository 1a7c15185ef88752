"""A small, known history written straight into the tables, for the audit and CLI tests.

It stands in for what the receiver, worker and relay would have written, so these tests
need none of them. Times are relative to the database's `now()`; "yesterday" attempts sit
at yesterday noon in the session's time zone, so day boundaries cannot make a test flaky.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta

from inbox.fixtures import stripe_event_bytes

CUSTOMER_DEAD = "cus_dead_customer"
CUSTOMER_RETRY = "cus_retrying_customer"
CUSTOMER_OK = "cus_QXg1o8vcGmoR32"


def payload_of(event_type: str, event_id: str, customer: str | None = None) -> dict:
    payload = json.loads(stripe_event_bytes(event_type))
    payload["id"] = event_id
    if customer is not None:
        payload["data"]["object"]["customer"] = customer
    return payload


def add_event(
    db,
    event_type: str,
    event_id: str,
    *,
    status: str = "pending",
    attempts: int = 0,
    last_error: str | None = None,
    received_ago: timedelta = timedelta(minutes=10),
    received_at=None,
    processed_ago: timedelta | None = None,
    next_attempt_in: timedelta = timedelta(0),
    customer: str | None = None,
    provider: str = "stripe",
) -> int:
    payload = payload_of(event_type, event_id, customer)
    body = json.dumps(payload).encode()
    if received_at is None:
        received_at = db.execute("SELECT now() - %s::interval", [received_ago]).fetchone()[0]
    row = db.execute(
        """
        INSERT INTO inbox (provider, event_id, event_type, payload, raw_body, status, attempts,
                           last_error, received_at, processed_at, next_attempt_at)
        VALUES (%s, %s, %s, %s::jsonb, %s, %s, %s, %s, %s,
                now() - %s::interval, now() + %s::interval)
        RETURNING id
        """,
        [provider, event_id, event_type, json.dumps(payload), body, status, attempts,
         last_error, received_at, processed_ago, next_attempt_in],
    ).fetchone()
    return row[0]


def yesterday_noon(db):
    return db.execute("SELECT date_trunc('day', now()) - interval '12 hours'").fetchone()[0]


def today_minutes_ago(db, minutes: int):
    """`minutes` ago, but never before midnight: "today" for the yesterday queries."""
    return db.execute(
        "SELECT greatest(date_trunc('day', now()), now() - make_interval(mins => %s))",
        [minutes],
    ).fetchone()[0]


def add_attempt(db, inbox_id: int, attempt: int, outcome: str, *, started_at=None,
                started_ago: timedelta | None = None, error: str | None = None,
                seconds: float = 0.5) -> None:
    if started_at is None:
        started_at = db.execute("SELECT now() - %s::interval",
                                [started_ago or timedelta(minutes=5)]).fetchone()[0]
    db.execute(
        """
        INSERT INTO inbox_attempts (inbox_id, attempt, worker, started_at, finished_at,
                                    outcome, error)
        VALUES (%s, %s, 'test-worker', %s, %s + make_interval(secs => %s), %s, %s)
        """,
        [inbox_id, attempt, started_at, started_at, seconds, outcome, error],
    )


def add_message(db, inbox_id: int | None, topic: str, key: str, *, status: str = "pending",
                created_at=None, sent_ago: timedelta | None = None,
                created_ago: timedelta | None = None, last_error: str | None = None,
                payload: dict | None = None) -> int:
    if created_at is None:
        created_at = db.execute("SELECT now() - %s::interval",
                                [created_ago or timedelta(minutes=5)]).fetchone()[0]
    row = db.execute(
        """
        INSERT INTO outbox (inbox_id, topic, payload, idempotency_key, status, attempts,
                            created_at, sent_at, last_error)
        VALUES (%s, %s, %s::jsonb, %s, %s, %s, %s, now() - %s::interval, %s)
        RETURNING id
        """,
        [inbox_id, topic, json.dumps(payload or {"topic": topic}), key, status,
         int(status != "pending"), created_at, sent_ago, last_error],
    ).fetchone()
    return row[0]


def add_delivery(db, outbox_id: int, attempt: int, outcome: str, *, http_status=None,
                 smtp_reply=None, error=None, relay: str = "test-relay",
                 destination: str | None = None) -> None:
    """One outbox_attempts row, finished when the message was sent (or now)."""
    db.execute(
        """
        INSERT INTO outbox_attempts (outbox_id, attempt, relay, started_at, finished_at,
                                     outcome, http_status, smtp_reply, error, destination)
        SELECT id, %s, %s, coalesce(sent_at, now()) - interval '80 ms',
               coalesce(sent_at, now()), %s, %s, %s, %s, %s
        FROM outbox WHERE id = %s
        """,
        [attempt, relay, outcome, http_status, smtp_reply, error, destination, outbox_id],
    )


@dataclass(frozen=True)
class Sample:
    """The ids of the sample history, by role."""

    paid: int  # processed after two failures yesterday; 3 messages: sent, pending, dead
    dead: int  # failed yesterday until dead
    retrying: int  # failed twice today, due again later
    ignored: int  # no handler
    fresh: int  # just received, never attempted
    old: int  # processed 40 days ago, its message sent 40 days ago
    old_dead: int  # dead 40 days ago


def build(db) -> Sample:
    """Write the sample history; return its inbox ids."""
    noon = yesterday_noon(db)
    hour = timedelta(hours=1)

    paid = add_event(db, "invoice.paid", "evt_sample_paid", status="processed", attempts=3,
                     last_error="LookupError: unknown customer",
                     received_at=noon - timedelta(minutes=1),
                     processed_ago=timedelta(hours=2), customer=CUSTOMER_OK)
    add_attempt(db, paid, 1, "retry", started_at=noon, error="LookupError: unknown customer")
    add_attempt(db, paid, 2, "retry", started_at=noon + hour,
                error="LookupError: unknown customer")
    add_attempt(db, paid, 3, "processed", started_at=noon + 3 * hour)
    # Written in the transaction of attempt 3: created_at is that transaction's start.
    email = add_message(db, paid, "email.send", "evt_sample_paid:email", status="sent",
                        created_at=noon + 3 * hour, sent_ago=timedelta(minutes=30),
                        payload={"to": "jenny@example.com", "template": "payment_received"})
    add_delivery(db, email, 1, "sent", smtp_reply="250 2.0.0 Ok: queued as 4F2C1",
                 destination="smtp://mail.example:587")
    add_message(db, paid, "crm.update", "evt_sample_paid:crm", status="pending",
                created_at=noon + 3 * hour)
    partner = add_message(db, paid, "partner.notify", "evt_sample_paid:partner",
                          status="dead", created_at=noon + 3 * hour, last_error="410 Gone")
    add_delivery(db, partner, 1, "dead", http_status=410, error="410 Gone",
                 destination="https://user:hunter2@partner.example/hook?token=t0k")

    dead = add_event(db, "invoice.payment_failed", "evt_sample_dead", status="dead",
                     attempts=2, last_error="Permanent: card never valid",
                     received_at=noon - timedelta(minutes=1), customer=CUSTOMER_DEAD)
    add_attempt(db, dead, 1, "retry", started_at=noon, error="TimeoutError: crm slow")
    add_attempt(db, dead, 2, "dead", started_at=noon + hour, error="Permanent: card never valid")

    retrying = add_event(db, "customer.subscription.updated", "evt_sample_retrying",
                         attempts=2, last_error="ConnectionError: crm down",
                         received_ago=timedelta(hours=1), next_attempt_in=timedelta(hours=1),
                         customer=CUSTOMER_RETRY)
    add_attempt(db, retrying, 1, "retry", started_at=today_minutes_ago(db, 50),
                error="ConnectionError: crm down")
    add_attempt(db, retrying, 2, "retry", started_at=today_minutes_ago(db, 20),
                error="ConnectionError: crm down")

    ignored = add_event(db, "charge.refunded", "evt_sample_ignored", status="ignored",
                        attempts=1, received_ago=timedelta(minutes=30),
                        processed_ago=timedelta(minutes=29))
    add_attempt(db, ignored, 1, "ignored", started_ago=timedelta(minutes=29))

    fresh = add_event(db, "invoice.paid", "evt_sample_fresh", received_ago=timedelta(minutes=3),
                      customer=CUSTOMER_OK)

    old = add_event(db, "customer.subscription.created", "evt_sample_old", status="processed",
                    attempts=1, received_ago=timedelta(days=41),
                    processed_ago=timedelta(days=41), customer=CUSTOMER_OK)
    add_attempt(db, old, 1, "processed", started_ago=timedelta(days=41))
    old_email = add_message(db, old, "email.send", "evt_sample_old:email", status="sent",
                            created_ago=timedelta(days=41), sent_ago=timedelta(days=41))
    add_delivery(db, old_email, 1, "sent", smtp_reply="250 Ok")

    old_dead = add_event(db, "invoice.payment_failed", "evt_sample_old_dead", status="dead",
                         attempts=1, last_error="Permanent: no", received_ago=timedelta(days=40),
                         customer=CUSTOMER_DEAD)
    add_attempt(db, old_dead, 1, "dead", started_ago=timedelta(days=40), error="Permanent: no")
    return Sample(paid, dead, retrying, ignored, fresh, old, old_dead)
