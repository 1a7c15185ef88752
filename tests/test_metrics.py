"""GET /metrics: parsed with prometheus-client's own parser, compared with the database."""

from __future__ import annotations

import dataclasses
import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

from inbox.store import system_state
from inbox.web import create_app
from tests.support import signed_headers, stripe_event_files

TOKEN = "metrics-token-for-the-tests"
CONTRACT_FAMILIES = ("inbox_events", "outbox_messages", "inbox_due_events",
                     "inbox_oldest_due_seconds", "inbox_webhook_requests")


@pytest.fixture
def metrics_app(settings, clock):
    app = create_app(dataclasses.replace(settings, metrics_token=TOKEN), clock=clock)
    yield app
    app.extensions["inbox.database"].close()


def scrape(client) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """{family: {sorted labels: value}} of one authorised scrape."""
    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    families: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        samples = families.setdefault(family.name, {})
        for sample in family.samples:
            if sample.name in (family.name, f"{family.name}_total"):
                samples[tuple(sorted(sample.labels.items()))] = sample.value
    return families


def by_label(samples: dict, label: str) -> dict[str, float]:
    return {dict(labels)[label]: value for labels, value in samples.items()}


def post_events(client, clock, count: int) -> list[str]:
    """POST `count` signed fixture events with fresh ids; their ids."""
    template = stripe_event_files()[0].read_bytes()
    ids = []
    for n in range(count):
        body = template.replace(b'"evt_', f'"evt_metrics{n}_'.encode(), 1)
        response = client.post("/webhooks/stripe", data=body,
                               headers=signed_headers(body, int(clock.now)))
        assert response.status_code == 200
        ids.append(json.loads(body)["id"])
    return ids


def test_metrics_are_off_without_a_token(client):
    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", headers={"Authorization": "Bearer x"}).status_code == 404


@pytest.mark.parametrize("header", [None, "Bearer wrong-token", f"Basic {TOKEN}", "Bearer"])
def test_metrics_refuse_a_missing_or_wrong_token(metrics_app, header):
    headers = {"Authorization": header} if header else {}
    response = metrics_app.test_client().get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert b"inbox_events" not in response.data


def test_system_figures_equal_the_database_counts(metrics_app, clock, db):
    client = metrics_app.test_client()
    post_events(client, clock, 12)
    # A known scenario: 5 processed, 2 ignored, 1 dead, 1 leased, 3 pending (2 due now, 1
    # due later); 4 outbox messages: 2 sent, 1 dead, 1 pending.
    ids = [row[0] for row in db.execute("SELECT id FROM inbox ORDER BY id")]
    db.execute("UPDATE inbox SET status = 'processed', processed_at = now() WHERE id = ANY(%s)",
               [ids[:5]])
    db.execute("UPDATE inbox SET status = 'ignored' WHERE id = ANY(%s)", [ids[5:7]])
    db.execute("UPDATE inbox SET status = 'dead', last_error = 'x' WHERE id = %s", [ids[7]])
    db.execute("UPDATE inbox SET next_attempt_at = 'infinity', locked_backend = 1,"
               " locked_at = now() WHERE id = %s", [ids[8]])
    db.execute("UPDATE inbox SET next_attempt_at = now() - interval '90 seconds'"
               " WHERE id = %s", [ids[9]])
    db.execute("UPDATE inbox SET next_attempt_at = now() + interval '1 hour' WHERE id = %s",
               [ids[10]])
    for n, status in enumerate(["sent", "sent", "dead", "pending"]):
        db.execute("INSERT INTO outbox (topic, payload, idempotency_key, status)"
                   " VALUES ('t', '{}', %s, %s)", [f"k{n}", status])

    # Two of the processed events, 3 and 5 s after they were received; one delivery try.
    db.execute("INSERT INTO inbox_attempts (inbox_id, attempt, started_at, finished_at, outcome)"
               " SELECT id, 1, received_at, received_at + make_interval(secs => s), 'processed'"
               " FROM inbox, (VALUES (1, 3), (2, 5)) v(k, s) WHERE id = %s + k - 1",
               [ids[0]])
    db.execute("INSERT INTO outbox_attempts (outbox_id, attempt, relay, started_at, finished_at,"
               " outcome) SELECT min(id), 1, 'r', now() - interval '1 minute',"
               " date_trunc('minute', now()) - interval '30 seconds', 'sent' FROM outbox")

    figures = scrape(client)

    for family in CONTRACT_FAMILIES:
        assert family in figures, family
    counted = dict(db.execute("SELECT status, count(*) FROM inbox GROUP BY status").fetchall())
    assert by_label(figures["inbox_events"], "status") == {
        status: counted.get(status, 0) for status in system_state.INBOX_STATUSES}
    assert by_label(figures["inbox_events"], "status") == {
        "pending": 4, "processed": 5, "ignored": 2, "dead": 1}
    assert by_label(figures["outbox_messages"], "status") == {"pending": 1, "sent": 2, "dead": 1}
    assert figures["inbox_due_events"][()] == 2  # the one 90 s late and the last one stored
    assert 90 <= figures["inbox_oldest_due_seconds"][()] < 90 + 60
    assert figures["inbox_leased_events"][()] == 1
    assert figures["inbox_database_up"][()] == 1
    assert by_label(figures["inbox_dead_events_by_type"], "type") == {"charge.refunded": 1}
    assert by_label(figures["outbox_deliveries_last_minute"], "outcome")["sent"] == 1
    delay = by_label(figures["inbox_end_to_end_seconds"], "quantile")
    assert delay["0.5"] == pytest.approx(4.0) and delay["0.99"] == pytest.approx(4.98)
    requests = by_label(figures["inbox_webhook_requests"], "outcome")
    assert requests["stored"] >= 12


def test_each_answer_is_counted_by_provider_and_outcome(metrics_app, clock):
    client = metrics_app.test_client()
    before = scrape(client)["inbox_webhook_requests"]
    body = stripe_event_files()[1].read_bytes()
    headers = signed_headers(body, int(clock.now))
    client.post("/webhooks/stripe", data=body, headers=headers)
    client.post("/webhooks/stripe", data=body, headers=headers)
    client.post("/webhooks/stripe", data=body, headers={**headers, "Stripe-Signature": "t=1"})
    client.post("/webhooks/stripe", data=b"[]", headers=signed_headers(b"[]", int(clock.now)))
    client.post("/webhooks/stripe", data=b"x" * (2 * 1024 * 1024), headers=headers)
    client.post("/webhooks/no-such-provider-<script>", data=body, headers=headers)
    after = scrape(client)["inbox_webhook_requests"]

    def delta(provider: str, outcome: str) -> float:
        key = (("outcome", outcome), ("provider", provider))
        return after.get(key, 0) - before.get(key, 0)

    assert delta("stripe", "stored") == 1
    assert delta("stripe", "duplicate") == 1
    assert delta("stripe", "invalid_signature") == 1
    assert delta("stripe", "invalid_event") == 1
    assert delta("stripe", "too_large") == 1
    # A path no provider serves is counted under one label, not under what a client typed.
    assert delta("unknown", "unknown_provider") == 1
    assert not any("script" in value for labels in after for _, value in labels)


def test_an_unreachable_database_is_a_gauge_not_a_failed_scrape(settings, clock):
    down = dataclasses.replace(settings, metrics_token=TOKEN,
                               database_url="postgresql://nobody@127.0.0.1:1/none",
                               db_wait_seconds=0.5)
    app = create_app(down, clock=clock)
    try:
        figures = scrape(app.test_client())
    finally:
        app.extensions["inbox.database"].close()
    assert figures["inbox_database_up"][()] == 0
    assert "inbox_events" not in figures
    assert "inbox_webhook_requests" in figures
