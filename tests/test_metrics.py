"""GET /metrics: parsed with prometheus-client's own parser, compared with the database."""

from __future__ import annotations

import dataclasses
import json
from urllib.parse import quote

import pytest
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.wrappers import Request, Response

from inbox.store import audit, system_state
from inbox.web import create_app
from tests.support import signed_headers, stripe_event_files, wait_for
from tests.test_relay import add_message, count_status, relay_settings, running_relay, sink
from tests.test_transports_smtp import PASSWORD, USER, smtp_server

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


# -- deliveries by destination, dead messages by topic ---------------------------------------

PATH_SECRET, QUERY_SECRET = "T000/B000/path-token-xyzzy", "query-token-plugh"


def answer_by_key(request: Request, n: int) -> Response:
    """crm-gone: 410 (dead); crm-busy: 503 then 200 (a retry, then sent); others 200."""
    key = request.headers["Idempotency-Key"]
    if key == "crm-gone":
        return Response("gone", status=410)
    if key == "crm-busy" and n == 1:
        return Response("busy", status=503)
    return Response("ok")


def as_last_minute(db) -> None:
    """Move the scenario's delivery counters into the last complete minute (the one the
    gauge reports), as if the deliveries had finished a minute earlier: the test then
    needs not wait for the minute to turn. Sums are kept by (destination, outcome)."""
    db.execute("""
        WITH moved AS (DELETE FROM inbox_minute_counts WHERE source = 'deliveries'
                       RETURNING destination, outcome, n)
        INSERT INTO inbox_minute_counts (minute, source, outcome, destination, shard, n)
        SELECT date_trunc('minute', now()) - interval '1 minute', 'deliveries', outcome,
               destination, 0, sum(n)
        FROM moved GROUP BY outcome, destination""")


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
def test_deliveries_by_destination_and_dead_by_topic_equal_the_database(
        metrics_app, database_url, db):
    with sink(answer_by_key) as (_, url), smtp_server(auth=True) as (mailbox, smtp_port):
        http_url = f"{url}/{PATH_SECRET}?token={QUERY_SECRET}"
        smtp_url = f"smtp://{USER}:{quote(PASSWORD, safe='')}@127.0.0.1:{smtp_port}"
        routes = (f"crm.*={http_url},email.*={smtp_url}?from=billing@shop.example,"
                  "audit.*=log:")
        for key in ("crm-ok-1", "crm-ok-2", "crm-gone", "crm-busy"):
            add_message(db, "crm.contact", {"key": key}, key)
        add_message(db, "email.send", {"to": "ada@example.com", "subject": "s", "text": "t"},
                    "mail-1")
        add_message(db, "audit.note", {"n": 1}, "note-1")
        add_message(db, "nowhere.topic", {"n": 1}, "unrouted-1")
        with running_relay(relay_settings(database_url, routes)):
            wait_for(lambda: count_status(db, "sent") == 5 and count_status(db, "dead") == 2,
                     "5 sent (3 http, smtp, log) and 2 dead (410, no route)")
    assert len(mailbox.received) == 1
    as_last_minute(db)
    http = url.removesuffix("/hook")  # http://127.0.0.1:<port>
    history = {(dest, outcome): n for dest, outcome, n in db.execute(
        "SELECT coalesce(destination, 'none'), outcome, count(*) FROM outbox_attempts"
        " GROUP BY 1, 2")}

    response = metrics_app.test_client().get(
        "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    figures = scrape(metrics_app.test_client())

    tries = {(dict(labels)["destination"], dict(labels)["outcome"]): value
             for labels, value in figures["outbox_deliveries_by_destination_last_minute"].items()}
    assert {key: n for key, n in tries.items() if n} == history
    assert {key: n for key, n in tries.items() if key[0] != "none"} == {
        (http, "sent"): 3, (http, "retry"): 1, (http, "dead"): 1, (http, "crashed"): 0,
        (f"smtp://127.0.0.1:{smtp_port}", "sent"): 1, (f"smtp://127.0.0.1:{smtp_port}", "retry"): 0,
        (f"smtp://127.0.0.1:{smtp_port}", "dead"): 0,
        (f"smtp://127.0.0.1:{smtp_port}", "crashed"): 0,
        ("log:", "sent"): 1, ("log:", "retry"): 0, ("log:", "dead"): 0, ("log:", "crashed"): 0}
    assert tries[("none", "dead")] >= 1  # the unrouted topic (and its alert, unrouted too)
    by_outcome = by_label(figures["outbox_deliveries_last_minute"], "outcome")
    assert by_outcome == {outcome: sum(n for (_, o), n in tries.items() if o == outcome)
                          for outcome in system_state.DELIVERY_OUTCOMES}
    dead = dict(db.execute("SELECT topic, count(*) FROM outbox WHERE status = 'dead'"
                           " GROUP BY topic").fetchall())
    assert by_label(figures["outbox_dead_messages_by_topic"], "topic") == dead
    assert dead["crm.contact"] == 1 and dead["nowhere.topic"] == 1
    # No credential of a route reaches the scrape: not the smtp password, not the http
    # URL's path or query.
    text = response.get_data(as_text=True)
    for secret in (PASSWORD, quote(PASSWORD, safe=""), PATH_SECRET, QUERY_SECRET, "/hook"):
        assert secret not in text


def test_a_destination_not_of_the_safe_form_is_shown_as_other(metrics_app, db):
    """A URL with credentials written into the history by something else than this relay
    (a hand-made row, a future bug) is never shown as written."""
    message = add_message(db, "crm.contact", {}, "k")
    db.execute("INSERT INTO outbox_attempts (outbox_id, attempt, started_at, finished_at,"
               " outcome, destination) VALUES (%s, 1, now(), now(), 'retry',"
               " 'https://user:hunter2@crm.example/hook?token=t0ken')", [message])
    as_last_minute(db)
    response = metrics_app.test_client().get(
        "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    text = response.get_data(as_text=True)
    assert "hunter2" not in text and "t0ken" not in text and "crm.example" not in text
    tries = scrape(metrics_app.test_client())["outbox_deliveries_by_destination_last_minute"]
    assert tries[(("destination", "other"), ("outcome", "retry"))] == 1


def test_a_destination_quiet_this_minute_shows_zeros_until_15_minutes_pass(metrics_app, db):
    db.execute("INSERT INTO inbox_minute_counts (minute, source, outcome, destination, shard,"
               " n) SELECT date_trunc('minute', now()) - m * interval '1 minute', 'deliveries',"
               " 'sent', d, 0, 5 FROM (VALUES (6, 'log:'), (20, 'http://old.example:80')) v(m, d)")
    tries = scrape(metrics_app.test_client())["outbox_deliveries_by_destination_last_minute"]
    assert tries == {(("destination", "log:"), ("outcome", outcome)): 0
                     for outcome in system_state.DELIVERY_OUTCOMES}


@pytest.mark.parametrize(("written", "shown"), [
    ("https://crm.example:443", "https://crm.example:443"),
    ("smtp://mail.example:587", "smtp://mail.example:587"),
    ("http://[::1]:8080", "http://[::1]:8080"),
    ("log:", "log:"),
    ("", "none"),
    ("https://u:p@crm.example:443", "other"),
    ("https://crm.example:443/hook", "other"),
    ("https://crm.example:443?token=x", "other"),
    ("https://crm.example:443#x", "other"),
    ("ftp://crm.example:21", "other"),
    ("log:secret", "other"),
    ("https://" + "a" * 300, "other"),
])
def test_safe_destination(written, shown):
    assert audit.safe_destination(written) == shown


def test_stripe_reconciliation_runs_equal_the_database(metrics_app, db):
    """When each scope of Stripe's reconciliation last ran, what it found and added, and
    whether it is failing: the inbox_stripe_reconcile rows, as the reconcilers record them."""
    from inbox.stripe import store as stripe_store

    stripe_store.record_run(db, "stripe", trigger="automatic", since_unix=1_700_000_000,
                            found=250, added=70, watermark=1_700_003_600)
    stripe_store.record_run(db, "stripe-thin", trigger="command", since_unix=1_700_000_000,
                            found=8, added=5, watermark=None)
    stripe_store.record_failure(db, "stripe:acct_1", trigger="automatic",
                                error="AuthenticationError: key refused")
    families = scrape(metrics_app.test_client())
    rows = {scope: (run_at, found, added, error) for scope, run_at, found, added, error in
            db.execute("SELECT scope, extract(epoch FROM last_run_at), last_found,"
                       " last_added, last_error FROM inbox_stripe_reconcile")}
    last_run = by_label(families["inbox_stripe_reconcile_last_run_timestamp_seconds"], "scope")
    assert last_run == pytest.approx({scope: float(row[0]) for scope, row in rows.items()})
    assert by_label(families["inbox_stripe_reconcile_last_found"], "scope") == {
        "stripe": 250, "stripe-thin": 8, "stripe:acct_1": 0}
    assert by_label(families["inbox_stripe_reconcile_last_added"], "scope") == {
        "stripe": 70, "stripe-thin": 5, "stripe:acct_1": 0}
    assert by_label(families["inbox_stripe_reconcile_failing"], "scope") == {
        "stripe": 0, "stripe-thin": 0, "stripe:acct_1": 1}
