"""Alert coalescing against the real tables: held occurrences become at most one outbox
message per kind per interval, whose counts add up to every occurrence."""

from __future__ import annotations

import dataclasses

import psycopg
import pytest

from inbox.alerts import coalesce, watch
from inbox.alerts.kinds import all_kinds
from inbox.config import Settings

INTERVAL = 300.0


@pytest.fixture
def kinds(settings):
    return all_kinds(settings)


def alert_messages(db, kind: str) -> list[dict]:
    return [row[0] for row in db.execute(
        "SELECT payload FROM outbox WHERE topic = %s ORDER BY id", [f"inbox.alert.{kind}"])]


def interval_passes(db, kind: str) -> None:
    db.execute("UPDATE inbox_alerts SET last_sent_at = last_sent_at - interval '301 seconds'"
               " WHERE kind = %s", [kind])


def test_a_storm_is_a_few_messages_whose_counts_add_up(db, kinds):
    dead = kinds["event_dead"]
    for n in range(200):
        with db.transaction():
            coalesce.hold(db, dead, 1, [f"evt_{n}"])
            coalesce.take_due(db, [dead], INTERVAL)
    first = alert_messages(db, "event_dead")
    assert len(first) == 1 and first[0]["count"] == 1 and first[0]["ids"] == ["evt_0"]

    interval_passes(db, "event_dead")
    with db.transaction():
        assert coalesce.take_due(db, [dead], INTERVAL) == 1
    messages = alert_messages(db, "event_dead")
    assert [m["count"] for m in messages] == [1, 199]
    assert messages[1]["ids"] == [f"evt_{n}" for n in range(1, 6)]  # a few, oldest first
    assert messages[1]["kind"] == "event_dead" and messages[1]["since"]
    assert "199 webhook event(s) went dead" in messages[1]["text"]
    assert "inbox events list --status dead" in messages[1]["text"]
    keys = [row[0] for row in db.execute(
        "SELECT idempotency_key FROM outbox ORDER BY id")]
    assert keys == ["inbox.alert.event_dead:1", "inbox.alert.event_dead:2"]
    # Nothing held: nothing more to send, however long one waits.
    interval_passes(db, "event_dead")
    with db.transaction():
        assert coalesce.take_due(db, [dead], INTERVAL) == 0


def test_signature_failures_alert_only_above_the_threshold_within_the_window(db, kinds):
    failures = kinds["signature_failures"]
    with db.transaction():
        coalesce.hold(db, failures, 15, ["stripe"])
        assert coalesce.take_due(db, [failures], INTERVAL) == 0  # 15 is not more than 20
    # Ten minutes later, five more: the fifteen were too long ago to make a storm with them.
    db.execute("UPDATE inbox_alerts SET held_since = now() - interval '10 minutes'"
               " WHERE kind = 'signature_failures'")
    with db.transaction():
        coalesce.hold(db, failures, 5, ["stripe"])
        assert coalesce.take_due(db, [failures], INTERVAL) == 0
    assert db.execute("SELECT held_count FROM inbox_alerts WHERE kind = 'signature_failures'"
                      ).fetchone()[0] == 5
    with db.transaction():
        coalesce.hold(db, failures, 25, ["stripe"])
        assert coalesce.take_due(db, [failures], INTERVAL) == 1
    [message] = alert_messages(db, "signature_failures")
    assert message["count"] == 30 and message["ids"] == ["stripe", "stripe"]  # one per hold
    assert "from stripe were rejected" in message["text"]
    assert "STRIPE_WEBHOOK_SECRET" in message["text"]


def test_the_look_raises_a_backlog_alert_and_one_process_looks_at_a_time(
        db, database_url, settings):
    settings = dataclasses.replace(settings, alert_backlog_seconds=600)
    db.execute("INSERT INTO inbox (provider, event_id, event_type, payload, raw_body,"
               " next_attempt_at) SELECT 'stripe', 'evt_' || n, 't', '{}', '',"
               " now() - interval '700 seconds' + n * interval '1 second'"
               " FROM generate_series(1, 7) n")
    with psycopg.connect(database_url) as other, other.transaction():
        other.execute("SELECT pg_advisory_xact_lock(hashtext('inbox.alerts')::bigint)")
        assert watch.look(db, settings) == 0  # another process holds the turn
    assert watch.look(db, settings) == 1
    [message] = alert_messages(db, "backlog")
    assert message["count"] == 7 and message["ids"] == [f"evt_{n}" for n in range(1, 6)]
    assert 690 <= message["oldest_seconds"] < 760
    assert "backlog is 69" in message["text"] and "inbox status" in message["text"]
    # Within the interval, the backlog is held again but not sent again.
    assert watch.look(db, settings) == 0


def test_no_backlog_alert_below_the_threshold(db, settings):
    db.execute("INSERT INTO inbox (provider, event_id, event_type, payload, raw_body,"
               " next_attempt_at) VALUES ('stripe', 'evt_1', 't', '{}', '',"
               " now() - interval '100 seconds')")
    assert watch.look(db, Settings(database_url=settings.database_url)) == 0
    assert alert_messages(db, "backlog") == []
