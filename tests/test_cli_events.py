"""`inbox events list` and `inbox events show`, as subprocesses against real PostgreSQL."""

from __future__ import annotations

import json

import pytest

from tests import audit_sample
from tests.cli_support import cli_env, inbox


@pytest.fixture
def sample(db):
    return audit_sample.build(db)


@pytest.fixture
def env(database_url, tmp_path):
    return cli_env(tmp_path, DATABASE_URL=database_url)


def events_json(env, *args: str) -> list[dict]:
    result = inbox("events", "list", "--json", *args, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_list_prints_a_table_newest_first(env, sample):
    result = inbox("events", "list", env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ID", "PROVIDER", "EVENT", "ID", "TYPE", "STATUS", "ATTEMPTS",
                                "RECEIVED", "LAST", "ERROR"]
    ids = [int(line.split()[0]) for line in lines[1:] if "stripe" in line]
    assert ids == sorted(ids, reverse=True) and len(ids) == 7
    dead_line = next(line for line in lines if "evt_sample_dead" in line)
    assert "dead" in dead_line and "Permanent: card never valid" in dead_line
    assert "7 event(s), newest first" in result.stdout


def test_list_filters(env, sample):
    assert {e["event_id"] for e in events_json(env, "--status", "dead")} == {
        "evt_sample_dead", "evt_sample_old_dead"}
    assert [e["event_id"] for e in events_json(env, "--status", "retrying")] == [
        "evt_sample_retrying"]
    assert {e["event_id"] for e in events_json(env, "--status", "pending")} == {
        "evt_sample_retrying", "evt_sample_fresh"}
    assert {e["event_id"] for e in events_json(env, "--type", "invoice.paid")} == {
        "evt_sample_paid", "evt_sample_fresh"}
    assert {e["event_id"] for e in events_json(env, "--since", "2h")} == {
        "evt_sample_retrying", "evt_sample_ignored", "evt_sample_fresh"}
    assert {e["event_id"] for e in events_json(env, "--until", "35d")} == {
        "evt_sample_old", "evt_sample_old_dead"}
    assert [e["event_id"] for e in events_json(env, "--since", "45d", "--until", "35d",
                                               "--status", "processed")] == ["evt_sample_old"]
    assert events_json(env, "--provider", "github") == []
    newest = events_json(env, "--limit", "2")
    assert [e["id"] for e in newest] == [sample.old_dead, sample.old]


def test_list_json_rows_carry_the_contract_columns(env, sample):
    (event,) = events_json(env, "--status", "retrying")
    assert event["id"] == sample.retrying and event["provider"] == "stripe"
    assert event["status"] == "pending" and event["attempts"] == 2
    assert event["last_error"] == "ConnectionError: crm down"
    assert event["received_at"].endswith("+00:00")  # ISO 8601 with the offset


def test_list_with_an_iso_time_and_bad_input(env, sample):
    assert len(events_json(env, "--since", "2000-01-01")) == 7
    result = inbox("events", "list", "--since", "yesterdayish", env=env)
    assert result.returncode == 2 and "neither a duration" in result.stderr
    result = inbox("events", "list", "--status", "weird", env=env)
    assert result.returncode == 2


def test_list_of_an_empty_inbox(env):
    result = inbox("events", "list", env=env)
    assert result.returncode == 0 and "no events match" in result.stdout


def test_show_by_event_id(env, sample):
    result = inbox("events", "show", "evt_sample_paid", env=env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"inbox id:     {sample.paid}" in out
    assert "status:       processed after 3 attempt(s)" in out
    assert "Attempts (3)" in out and out.count("LookupError: unknown customer") >= 2
    assert "Outbox messages (3)" in out
    for key in ("evt_sample_paid:email", "evt_sample_paid:crm", "evt_sample_paid:partner"):
        assert key in out
    assert "410 Gone" in out
    assert "Delivery attempts (2)" in out
    assert "250 2.0.0 Ok: queued as 4F2C1" in out and "HTTP 410" in out
    # Each try's destination, never a route's credentials or path.
    assert "smtp://mail.example:587" in out and " other " in out
    assert "hunter2" not in out and "t0k" not in out
    assert '"id": "evt_sample_paid"' in out  # the payload, pretty-printed


def test_show_by_inbox_id_and_as_json(env, sample):
    result = inbox("events", "show", str(sample.retrying), "--json", env=env)
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["event"]["event_id"] == "evt_sample_retrying"
    assert shown["event"]["payload"]["data"]["object"]["customer"] == (
        audit_sample.CUSTOMER_RETRY)
    assert [a["outcome"] for a in shown["attempts"]] == ["retry", "retry"]
    assert shown["outbox"] == [] and shown["deliveries"] == []

    result = inbox("events", "show", "evt_sample_fresh", "--no-payload", env=env)
    assert result.returncode == 0
    assert "next attempt:" in result.stdout and "Payload" not in result.stdout


def test_show_unknown_and_ambiguous(env, db, sample):
    result = inbox("events", "show", "evt_nope", env=env)
    assert result.returncode == 1 and "no event 'evt_nope'" in result.stdout

    audit_sample.add_event(db, "invoice.paid", "evt_sample_paid", provider="other")
    result = inbox("events", "show", "evt_sample_paid", env=env)
    assert result.returncode == 1 and "2 events match" in result.stdout
    result = inbox("events", "show", "evt_sample_paid", "--provider", "stripe", "--json",
                   env=env)
    assert result.returncode == 0 and json.loads(result.stdout)["event"]["id"] == sample.paid


def test_leased_rows_show_and_list_while_a_worker_and_a_relay_hold_them(env, db, sample):
    """A leased row's next_attempt_at is 'infinity' (inbox.db loads it as datetime.max):
    show and list work while a worker and a relay hold rows, in a time zone east of UTC
    too (where datetime.max cannot be converted to local time)."""
    from inbox.queries import query

    leased = db.execute(query("inbox_claim"), {"batch": 10, "worker": "test-worker",
                                               "scan_from": "-infinity"}).fetchall()
    assert [row[0] for row in leased] == [sample.fresh]
    messages = db.execute(query("outbox_claim"), {"limit": 10, "locked_by": "test-relay",
                                                  "skip_topics": []}).fetchall()
    assert [row[1] for row in messages] == ["crm.update"]  # a message of evt_sample_paid
    east = {**env, "TZ": "Asia/Tokyo", "PGTZ": "Asia/Tokyo"}

    result = inbox("events", "show", "evt_sample_fresh", env=east)
    assert result.returncode == 0, result.stderr
    assert "status:       pending after 1 attempt(s)" in result.stdout
    assert "next attempt: none now: a worker holds the event (leased)" in result.stdout

    result = inbox("events", "show", "evt_sample_fresh", "--json", env=east)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["event"]["next_attempt_at"].startswith("9999-12-31T23:59")

    result = inbox("events", "show", "evt_sample_paid", "--json", env=east)
    assert result.returncode == 0, result.stderr
    crm, = (m for m in json.loads(result.stdout)["outbox"] if m["topic"] == "crm.update")
    assert crm["next_attempt_at"].startswith("9999-12-31T23:59")
    result = inbox("events", "show", "evt_sample_paid", env=east)
    assert result.returncode == 0 and "evt_sample_paid:crm" in result.stdout

    listed = events_json({**env, "PGTZ": "Asia/Tokyo"}, "--status", "pending")
    fresh, = (e for e in listed if e["event_id"] == "evt_sample_fresh")
    assert fresh["next_attempt_at"].startswith("9999-12-31T23:59")
    result = inbox("events", "list", env=east)
    assert result.returncode == 0 and "evt_sample_fresh" in result.stdout
