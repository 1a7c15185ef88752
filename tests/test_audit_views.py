"""The psql views of 0003_audit_views.sql, beyond what docs/auditing.md exercises."""

from __future__ import annotations

from datetime import timedelta

from inbox.queries import query
from tests import audit_sample


def rows(db, sql: str, *params) -> list[dict]:
    cursor = db.execute(sql, params)
    names = [c.name for c in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def test_summary_counts_and_oldest_age_by_status_and_type(db):
    audit_sample.build(db)
    summary = {(r["status"], r["event_type"]): r for r in rows(db, "SELECT * FROM inbox_summary")}
    dead = summary[("dead", "invoice.payment_failed")]
    assert dead["events"] == 2 and dead["provider"] == "stripe"
    assert timedelta(days=39) < dead["oldest_age"] < timedelta(days=41)
    assert dead["newest_received_at"] > dead["oldest_received_at"]
    assert sum(r["events"] for r in summary.values()) == 7


def test_failures_are_dead_and_retrying_but_not_replayed_or_in_flight_first_tries(db):
    sample = audit_sample.build(db)
    # Replayed: back to pending with a fresh budget; its last_error is history now.
    db.execute("UPDATE inbox SET status = 'pending', attempts = 0, next_attempt_at = now() "
               "WHERE id = %s", [sample.dead])
    # A first attempt in flight (the claim counts the attempt before the handler runs).
    db.execute("UPDATE inbox SET attempts = 1, locked_backend = 1, locked_at = now(), "
               "next_attempt_at = 'infinity' WHERE id = %s", [sample.fresh])
    failures = {r["event_id"]: r for r in rows(db, "SELECT * FROM inbox_failures")}
    assert set(failures) == {"evt_sample_old_dead", "evt_sample_retrying"}
    retrying = failures["evt_sample_retrying"]
    assert retrying["state"] == "retrying" and retrying["attempts"] == 2
    assert retrying["last_outcome"] == "retry" and retrying["last_attempt_at"] is not None
    assert retrying["customer"] == audit_sample.CUSTOMER_RETRY
    assert failures["evt_sample_old_dead"]["next_attempt_at"] is None

    # A retry in flight: still failing, but not due at any particular time.
    db.execute("UPDATE inbox SET locked_backend = 1, locked_at = now(), attempts = 3, "
               "next_attempt_at = 'infinity' WHERE id = %s", [sample.retrying])
    (retrying,) = rows(db, "SELECT * FROM inbox_failures WHERE inbox_id = %s", sample.retrying)
    assert retrying["next_attempt_at"] is None and retrying["attempts"] == 3


def test_failures_use_their_partial_index(db):
    audit_sample.build(db)
    db.execute("SET enable_seqscan = off")
    plan = "\n".join(r[0] for r in db.execute("EXPLAIN SELECT * FROM inbox_failures"))
    assert "inbox_failures_idx" in plan


def test_timeline_places_each_message_after_the_attempt_that_wrote_it(db):
    """As the worker writes them: a message's created_at is the start of the attempt's
    transaction, a little before the attempt's own started_at."""
    event = audit_sample.add_event(db, "invoice.paid", "evt_tl", status="processed",
                                   attempts=1, received_ago=timedelta(hours=3))
    base = db.execute("SELECT now() - interval '2 hours'").fetchone()[0]
    second = timedelta(seconds=1)
    audit_sample.add_attempt(db, event, 1, "retry", started_at=base, error="boom")
    # Attempt 2 (its transaction began 10 ms before the handler started) wrote a message.
    audit_sample.add_attempt(db, event, 2, "processed", started_at=base + 60 * second)
    audit_sample.add_message(db, event, "email.send", "k1",
                             created_at=base + 60 * second - timedelta(milliseconds=10))
    # Replayed later: attempt 1 of the new budget wrote a second message.
    audit_sample.add_attempt(db, event, 1, "processed", started_at=base + 600 * second)
    audit_sample.add_message(db, event, "crm.update", "k2",
                             created_at=base + 600 * second - timedelta(milliseconds=10))
    timeline = rows(db, "SELECT * FROM event_timeline WHERE provider = 'stripe' "
                        "AND event_id = 'evt_tl'")
    assert [(r["step"], r["item"], r["outcome"], r["attempt"], r["topic"]) for r in timeline] == [
        (1, "received", "processed", None, None),
        (2, "attempt", "retry", 1, None),
        (3, "attempt", "processed", 2, None),
        (4, "message", "pending", None, "email.send"),
        (5, "attempt", "processed", 1, None),
        (6, "message", "pending", None, "crm.update"),
    ]
    assert timeline[3]["idempotency_key"] == "k1" and timeline[3]["outbox_id"] is not None
    assert [r["at"] for r in timeline] == sorted(r["at"] for r in timeline)


def test_timeline_of_an_event_without_history(db):
    event = audit_sample.add_event(db, "invoice.paid", "evt_new")
    (row,) = rows(db, "SELECT * FROM event_timeline WHERE inbox_id = %s", event)
    assert (row["step"], row["item"], row["outcome"]) == (1, "received", "pending")


def test_find_by_event_id_probes_the_unique_index(db):
    db.execute(
        "INSERT INTO inbox (provider, event_id, event_type, payload, raw_body, status) "
        "SELECT CASE WHEN n % 3 = 0 THEN 'github' ELSE 'stripe' END, 'evt_' || n, 't', "
        "'{}', '', 'processed' FROM generate_series(1, 20000) n"
    )
    db.execute("ANALYZE inbox")
    plan = "\n".join(r[0] for r in db.execute(
        "EXPLAIN " + query("inbox_find"), {"ref": "evt_77", "inbox_id": None}))
    assert "Seq Scan on inbox" not in plan, plan
