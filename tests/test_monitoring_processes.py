"""Alerts, heartbeats and metrics lines from real processes: a worker with its relay, the
Procfile's web line, `inbox status`.

Waits have generous deadlines; assertions are about what was queued and delivered, not
about speed."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

import psycopg
import pytest
from werkzeug.wrappers import Response

from tests.support import REPO, signed_headers, stripe_event_files, wait_for
from tests.test_metrics_procfile import web_server
from tests.test_relay import running_relay, sink
from tests.worker_support import (
    insert_events,
    kill_group,
    statuses,
)

pytestmark = pytest.mark.slow


def alerts(db: psycopg.Connection, kind: str) -> list[tuple[str, dict]]:
    """(status, payload) of each inbox.alert.<kind> message, oldest first."""
    return [(row[0], row[1]) for row in db.execute(
        "SELECT status, payload FROM outbox WHERE topic = %s ORDER BY id",
        [f"inbox.alert.{kind}"])]


def held(db: psycopg.Connection, kind: str) -> int:
    return db.execute("SELECT held_count FROM inbox_alerts WHERE kind = %s", [kind]
                      ).fetchone()[0]


def test_a_permanent_failure_is_one_alert_delivered_through_the_routes(workers, effects):
    db = effects
    with sink() as (endpoint, url):
        [event_id] = insert_events(db, "permanent", 1)
        worker = workers.start("--with-relay",
                               INBOX_ROUTES=f"inbox.alert.*={url},*=log:")
        wait_for(lambda: endpoint.requests, "the alert to reach its route")
        kill_group(worker, 15)
        worker.wait(timeout=30)
    [(_, headers, body)] = endpoint.requests
    alert = json.loads(body)
    assert alert["kind"] == "event_dead" and alert["count"] == 1
    assert alert["ids"] == [event_id] and event_id in alert["text"]
    assert headers["Idempotency-Key"] == "inbox.alert.event_dead:1"
    assert [status for status, _ in alerts(db, "event_dead")] == ["sent"]


def test_two_hundred_dead_events_are_a_few_alerts_that_add_up(workers, effects):
    db = effects
    insert_events(db, "permanent", 200)
    workers.start(INBOX_ALERT_INTERVAL_SECONDS="1", INBOX_ROUTES="*=log:")
    wait_for(lambda: statuses(db).get("dead") == 200, "200 dead", timeout=60)
    wait_for(lambda: held(db, "event_dead") == 0, "the held ones to be sent", timeout=30)
    messages = [payload for _, payload in alerts(db, "event_dead")]
    assert sum(message["count"] for message in messages) == 200
    assert 1 <= len(messages) <= 10  # a storm is a handful of messages, not 200


def test_an_alert_that_goes_dead_raises_no_other(database_url, db):
    from tests.test_relay import add_message, relay_settings

    gone = lambda request, n: Response("this hook was deleted", status=410)  # noqa: E731
    with sink(gone) as (endpoint, url):
        add_message(db, "crm.contact", {"n": 1}, "k1")
        with running_relay(relay_settings(database_url, f"*={url}")):
            # The message dies (410), its alert goes to the same route and dies too.
            wait_for(lambda: [s for s, _ in alerts(db, "message_dead")] == ["dead"],
                     "the alert to be dead")
            wait_for(lambda: len(endpoint.requests) == 2, "both tries")
    assert alerts(db, "message_dead")[0][1]["count"] == 1
    assert held(db, "message_dead") == 0  # the alert's death was not held for another
    assert db.execute("SELECT count(*) FROM outbox").fetchone()[0] == 2


def test_the_web_notices_a_backlog_and_a_burst_of_bad_signatures(database_url, db):
    env = {"INBOX_ALERT_BACKLOG_SECONDS": "1", "INBOX_POLL_INTERVAL_SECONDS": "0.2"}
    with web_server(database_url, **env) as base:
        # No worker runs: an event due now grows old, and the web process notices.
        insert_events(db, "effect", 3)
        wait_for(lambda: alerts(db, "backlog"), "a backlog alert", timeout=30)
        # Thirty deliveries signed with a wrong secret: one alert.
        body = stripe_event_files()[0].read_bytes()
        headers = signed_headers(body, int(time.time()), secret="whsec_wrong")
        for _ in range(30):
            request = urllib.request.Request(f"{base}/webhooks/stripe", data=body,
                                             headers=headers, method="POST")
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=10)
            refused.value.close()
            assert refused.value.code == 400
        wait_for(lambda: alerts(db, "signature_failures"), "a signature alert", timeout=30)
        seen = db.execute("SELECT count(*) FROM inbox_processes WHERE kind = 'web'").fetchone()
        assert seen[0] == 2  # both web processes beat
    [(_, backlog)] = alerts(db, "backlog")
    assert backlog["count"] == 3 and backlog["oldest_seconds"] >= 1
    [(_, failures)] = alerts(db, "signature_failures")
    assert 20 < failures["count"] <= 30 and failures["ids"][0] == "stripe"
    # A stopped web process says goodbye: no web process is reported gone.
    assert db.execute("SELECT count(*) FROM inbox_processes WHERE kind = 'web'"
                      ).fetchone()[0] == 0


def test_status_shows_who_beats_and_reports_a_killed_worker_gone(workers, database_url,
                                                                effects):
    db = effects
    worker = workers.start("--concurrency", "2", INBOX_LOG_METRICS_SECONDS="0.5")
    insert_events(db, "effect", 20)
    wait_for(lambda: statuses(db).get("processed") == 20, "20 processed")

    def status() -> dict:
        output = subprocess.run(
            [sys.executable, "-m", "inbox.cli", "status", "--json"], cwd=REPO, check=True,
            capture_output=True, text=True, env={"PATH": "/usr/bin:/bin",
                                                 "DATABASE_URL": database_url})
        return json.loads(output.stdout)

    wait_for(lambda: [p for p in status()["processes"] if p["alive"]], "a heartbeat")
    alive = [p for p in status()["processes"] if p["alive"]]
    assert {p["kind"] for p in alive} == {"worker"} and len(alive) == 2
    wait_for(lambda: "count#inbox.processed=" in workers.log_text(), "a metrics line")
    line = next(line for line in workers.log_text().splitlines() if "sample#inbox.due=" in line)
    assert "source=" in line and "sample#inbox.oldest_due_seconds=" in line

    kill_group(worker, 9)
    worker.wait(timeout=10)
    wait_for(lambda: not any(p["alive"] for p in status()["processes"]),
             "the killed workers to be reported gone", timeout=40)
    assert len(status()["processes"]) == 2  # gone, not forgotten
