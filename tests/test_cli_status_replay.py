"""Issue 5's additions to `inbox status` (backlog, last hour) and `inbox replay` (--since,
--until, --dry-run), as subprocesses against real PostgreSQL."""

from __future__ import annotations

import json

import pytest

from tests import audit_sample
from tests.cli_support import cli_env, inbox


@pytest.fixture
def env(database_url, tmp_path):
    return cli_env(tmp_path, DATABASE_URL=database_url)


def statuses(db) -> dict[str, str]:
    return dict(db.execute("SELECT event_id, status FROM inbox").fetchall())


def test_status_json_keeps_the_contract_and_adds_backlog_and_last_hour(env, db):
    audit_sample.build(db)
    result = inbox("status", "--json", env=env)
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    inbox_counts = {k: status["inbox"][k] for k in ("pending", "processed", "ignored", "dead")}
    assert inbox_counts == {"pending": 2, "processed": 2, "ignored": 1, "dead": 2}
    assert {k: status["outbox"][k] for k in ("pending", "sent", "dead")} == {
        "pending": 1, "sent": 2, "dead": 1}
    backlog = status["backlog"]
    assert (backlog["inbox_due"], backlog["outbox_due"]) == (1, 1)  # evt_sample_fresh, crm
    assert 0 <= backlog["inbox_oldest_due_seconds"] < 120
    assert backlog["outbox_oldest_due_seconds"] > 0
    assert status["last_hour"] == {"processed": 0, "ignored": 1, "retry": 2, "dead": 0,
                                   "crashed": 0}


def test_status_of_an_empty_inbox_and_as_text(env):
    result = inbox("status", "--json", env=env)
    status = json.loads(result.stdout)
    assert status["backlog"] == {"inbox_due": 0, "inbox_oldest_due_seconds": 0.0,
                                 "outbox_due": 0, "outbox_oldest_due_seconds": 0.0}
    result = inbox("status", env=env)
    assert result.returncode == 0 and "backlog:" in result.stdout
    assert "last_hour:" in result.stdout


def test_replay_dry_run_changes_nothing(env, db):
    audit_sample.build(db)
    before = statuses(db)
    result = inbox("replay", "--status", "dead", "--dry-run", env=env)
    assert result.returncode == 0, result.stderr
    assert "would replay stripe evt_sample_dead" in result.stdout
    assert "would replay stripe evt_sample_old_dead" in result.stdout
    assert "2 event(s) would go back to pending" in result.stdout
    result = inbox("replay", "evt_sample_dead", "evt_nope", "--dry-run", env=env)
    assert result.returncode == 1 and "evt_nope" in result.stdout
    assert statuses(db) == before


def test_replay_since_until(env, db):
    audit_sample.build(db)
    result = inbox("replay", "--status", "dead", "--since", "2d", "--dry-run", env=env)
    assert result.stdout.count("would replay") == 1 and "evt_sample_dead" in result.stdout
    result = inbox("replay", "--status", "dead", "--since", "2d", env=env)
    assert result.returncode == 0, result.stderr
    assert "1 event(s) back to pending" in result.stdout
    assert statuses(db)["evt_sample_dead"] == "pending"
    assert statuses(db)["evt_sample_old_dead"] == "dead"

    result = inbox("replay", "--status", "dead", "--until", "35d", env=env)
    assert result.returncode == 0 and statuses(db)["evt_sample_old_dead"] == "pending"

    result = inbox("replay", "evt_sample_paid", "--since", "1d", env=env)
    assert result.returncode == 2 and "--status" in result.stderr
