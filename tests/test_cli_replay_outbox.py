"""`inbox replay --outbox`: dead (or sent) outbox messages back to pending, as subprocesses
against real PostgreSQL; then a relay delivers them."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest

from inbox.queries import query
from tests.audit_sample import add_message
from tests.cli_support import cli_env, inbox
from tests.support import wait_for
from tests.test_relay import relay_settings, running_relay


@pytest.fixture
def env(database_url, tmp_path):
    return cli_env(tmp_path, DATABASE_URL=database_url)


@pytest.fixture
def messages(db) -> dict[str, int]:
    """Outbox ids by role: three dead, one sent, one leased by a relay right now."""
    ids = {
        "receipt": add_message(db, None, "email.receipt", "k-receipt", status="dead",
                               last_error="not an email: no subject"),
        "dunning": add_message(db, None, "email.dunning", "k-dunning", status="dead",
                               last_error="gave up after 16 attempts: 451 try later",
                               created_ago=timedelta(days=3)),
        "crm": add_message(db, None, "crm.update", "k-crm", status="dead",
                           last_error="no route for topic 'crm.update' in INBOX_ROUTES"),
        "sent": add_message(db, None, "email.receipt", "k-sent", status="sent",
                            sent_ago=timedelta(minutes=1)),
        "leased": add_message(db, None, "email.receipt", "k-leased"),
    }
    db.execute("UPDATE outbox SET attempts = 16, next_attempt_at = now() + interval '1 day'"
               " WHERE status = 'dead'")
    leased = db.execute(query("outbox_claim"), {"limit": 10, "locked_by": "test-relay",
                                                "skip_topics": []}).fetchall()
    assert [row[0] for row in leased] == [ids["leased"]]
    return ids


def rows(db) -> dict[int, tuple]:
    return {row[0]: row[1:] for row in db.execute(
        "SELECT id, status, attempts, next_attempt_at <= now(), last_error, sent_at IS NULL"
        " FROM outbox")}


def replay(env, *args: str):
    return inbox("replay", "--outbox", *args, env=env)


def test_replay_dead_messages_by_status_and_topic(env, db, database_url, messages):
    before = rows(db)
    result = replay(env, "--status", "dead", "--topic", "email.*", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"would replay message {messages['receipt']} email.receipt k-receipt",
        f"would replay message {messages['dunning']} email.dunning k-dunning",
        "2 message(s) would go back to pending (dry run: nothing changed)",
    ]
    assert rows(db) == before

    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute("LISTEN outbox_messages")
        result = replay(env, "--status", "dead", "--topic", "email.*", "--since", "1d")
        assert result.returncode == 0, result.stderr
        assert "1 message(s) back to pending" in result.stdout  # the dunning is 3 days old
        assert next(listener.notifies(timeout=10, stop_after=1)).channel == "outbox_messages"
    after = rows(db)
    assert after[messages["receipt"]] == ("pending", 0, True, "not an email: no subject", True)
    assert after[messages["dunning"]] == before[messages["dunning"]]

    result = replay(env, "--status", "dead", "--topic", "email.*")
    assert result.returncode == 0 and "replayed message" in result.stdout
    assert rows(db)[messages["dunning"]][:3] == ("pending", 0, True)
    assert rows(db)[messages["crm"]] == before[messages["crm"]]  # another topic
    assert rows(db)[messages["leased"]] == before[messages["leased"]]  # the relay's
    result = replay(env, "--status", "dead", "--topic", "nothing.*")
    assert result.returncode == 0 and "0 message(s) back to pending" in result.stdout

    # The README's story: a topic with no route went dead; add a route, replay, delivered.
    result = replay(env, "--status", "dead")
    assert result.returncode == 0 and f"replayed message {messages['crm']} crm.update" in (
        result.stdout)
    with running_relay(relay_settings(database_url, "crm.*=log:")):
        wait_for(lambda: rows(db)[messages["crm"]][0] == "sent", "the replayed message sent")
    crm = rows(db)[messages["crm"]]
    assert crm[:2] == ("sent", 1) and crm[3].startswith("no route")  # last_error kept


def test_replay_messages_by_id(env, db, messages):
    ids = [str(messages[role]) for role in ("crm", "sent", "leased")]
    before = rows(db)
    result = replay(env, *ids, "--dry-run")
    assert result.returncode == 1 and "2 message(s) would go back" in result.stdout
    assert f"held by a relay now: {messages['leased']}" in result.stderr
    assert rows(db) == before

    result = replay(env, *ids, "999999")
    assert result.returncode == 1, result.stdout
    assert result.stdout.splitlines() == [
        f"replayed message {messages['crm']} crm.update k-crm",
        f"replayed message {messages['sent']} email.receipt k-sent",
        "2 message(s) back to pending",
    ]
    assert f"not found or held by a relay now: {messages['leased']}, 999999" in result.stderr
    after = rows(db)
    assert after[messages["crm"]][:3] == ("pending", 0, True)
    assert after[messages["sent"]] == ("pending", 0, True, None, True)  # to be sent again
    assert after[messages["leased"]] == before[messages["leased"]]  # leased: left alone
    assert after[messages["receipt"]] == before[messages["receipt"]]


@pytest.mark.parametrize("args", [
    ["--outbox"],
    ["--outbox", "evt_1"],
    ["--outbox", "--status", "processed"],
    ["--outbox", "--status", "dead", "--type", "invoice.paid"],
    ["--outbox", "1", "--topic", "email.*"],
    ["--status", "dead", "--topic", "email.*"],
    ["--status", "sent"],
], ids=lambda a: " ".join(a))
def test_replay_outbox_usage_errors(env, args):
    result = inbox("replay", *args, env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("inbox replay:") or "usage:" in result.stderr
