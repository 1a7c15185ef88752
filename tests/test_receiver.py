"""The receiver end to end against real PostgreSQL: storage, duplicates, limits, health."""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import urllib.request

import pytest
import stripe

from inbox.config import Settings
from inbox.web import create_app
from tests.support import TEST_SECRET, serve_wsgi, signed_headers, stripe_event_files


def post_signed(client, body: bytes, clock, path: str = "/webhooks/stripe"):
    return client.post(path, data=body, headers=signed_headers(body, int(clock.now)))


@pytest.mark.parametrize("path", stripe_event_files(), ids=lambda p: p.stem)
def test_each_fixture_event_is_stored_once_with_its_exact_bytes(path, client, clock, db):
    body = path.read_bytes()
    first = post_signed(client, body, clock)
    again = post_signed(client, body, clock)

    assert first.status_code == 200 and first.get_json() == {"received": True, "duplicate": False}
    assert again.status_code == 200 and again.get_json() == {"received": True, "duplicate": True}
    rows = db.execute(
        "SELECT provider, event_id, event_type, status, raw_body, payload, signature FROM inbox"
    ).fetchall()
    assert len(rows) == 1
    provider, event_id, event_type, status, raw, payload, signature = rows[0]
    document = json.loads(body)
    assert (provider, event_id, event_type, status) == (
        "stripe", document["id"], document["type"], "pending"
    )
    assert bytes(raw) == body
    assert payload == document
    # The stored bytes and header are enough to check the signature again later.
    stripe.WebhookSignature.verify_header(bytes(raw).decode(), signature, TEST_SECRET)


def test_twenty_threads_posting_one_event_store_one_row(settings, clock, db):
    body = stripe_event_files()[0].read_bytes()
    headers = signed_headers(body, int(clock.now))
    app = create_app(settings, clock=clock, pool_size=20)

    def post(url: str) -> int:
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status

    with serve_wsgi(app) as base, concurrent.futures.ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(post, [f"{base}/webhooks/stripe"] * 20))
    app.extensions["inbox.database"].close()

    assert statuses == [200] * 20
    assert db.execute("SELECT count(*) FROM inbox").fetchone()[0] == 1


def test_new_events_notify_waiting_workers(client, clock, database_url):
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute("LISTEN inbox_events")
        post_signed(client, stripe_event_files()[0].read_bytes(), clock)
        post_signed(client, stripe_event_files()[0].read_bytes(), clock)  # duplicate: no wake-up
        notifies = list(listener.notifies(timeout=1.0))
    assert len(notifies) == 1


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2, 3]", "not an object"),
        (b'{"type": "invoice.paid"}', "no id"),
        (b'{"id": "evt_1"}', "no type"),
        (b'{"id": 42, "type": "invoice.paid"}', "id not a string"),
        (b'{"id": "", "type": "invoice.paid"}', "empty id"),
        (b'{"id": "evt_1", "type": "x", "n": NaN}', "NaN is not JSON"),
        (b'{"id": "evt_1", "type": "x", "s": "\\u0000"}', "jsonb refuses NUL"),
        (b'{"id": "evt_1", "type": "x", "s": "\\ud800"}', "lone surrogate"),
        (b'{"id": "' + b"e" * 300 + b'", "type": "x"}', "id too long"),
        (b'\xff\xfe{"id": "evt_1"}', "not UTF-8"),
    ],
)
def test_a_signed_body_that_is_not_an_event_is_a_400(body, reason, client, clock, db):
    response = post_signed(client, body, clock)
    assert response.status_code == 400, reason
    assert db.execute("SELECT count(*) FROM inbox").fetchone()[0] == 0


def test_body_over_the_limit_is_413_from_content_length(database_url, clock, db):
    settings = Settings(database_url=database_url, stripe_webhook_secrets=(TEST_SECRET,),
                        max_body_bytes=1000)
    app = create_app(settings, clock=clock)
    body = b"{" + b" " * 2000 + b"}"
    response = post_signed(app.test_client(), body, clock)
    assert response.status_code == 413
    assert db.execute("SELECT count(*) FROM inbox").fetchone()[0] == 0


def test_default_limit_is_one_mebibyte_and_chunked_bodies_are_cut_off(app, clock, db):
    """A chunked upload has no Content-Length: the server stops reading at the limit."""
    with serve_wsgi(app) as base:
        host, port = base.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        chunk = b"x" * 65536
        body = b'{"id": "evt_big", "type": "big", "pad": "' + chunk * 17 + b'"}'
        headers = signed_headers(body, int(clock.now))
        conn.putrequest("POST", "/webhooks/stripe")
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        for start in range(0, len(body), len(chunk)):
            piece = body[start:start + len(chunk)]
            conn.send(b"%x\r\n%s\r\n" % (len(piece), piece))
        conn.send(b"0\r\n\r\n")
        status = conn.getresponse().status
        conn.close()
    assert status == 413
    assert db.execute("SELECT count(*) FROM inbox").fetchone()[0] == 0


def test_unknown_provider_is_404_and_other_methods_405(client, clock, db):
    body = stripe_event_files()[0].read_bytes()
    assert post_signed(client, body, clock, "/webhooks/nosuchprovider").status_code == 404
    assert client.get("/webhooks/stripe").status_code == 405
    assert client.put("/webhooks/stripe", data=body).status_code == 405
    assert db.execute("SELECT count(*) FROM inbox").fetchone()[0] == 0


def test_health_and_readiness(client):
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json() == {"status": "ok"}


def test_not_ready_before_migrations(pg_cluster, clock):
    import psycopg

    with psycopg.connect(pg_cluster.url(database="postgres"), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS unmigrated")
        conn.execute("CREATE DATABASE unmigrated")
    app = create_app(Settings(database_url=pg_cluster.url(database="unmigrated")), clock=clock)
    response = app.test_client().get("/readyz")
    app.extensions["inbox.database"].close()
    assert response.status_code == 503
    assert "migration not applied" in json.dumps(response.get_json())


def test_one_log_line_per_request_without_secrets_or_payload(client, clock, caplog):
    body = stripe_event_files()[0].read_bytes()
    headers = signed_headers(body, int(clock.now))
    with caplog.at_level("INFO", logger="inbox.web"):
        client.post("/webhooks/stripe", data=body, headers=headers)
        client.post("/webhooks/stripe", data=body, headers={"Stripe-Signature": "t=1,v1=00"})
    records = [r for r in caplog.records if r.name == "inbox.web"]
    assert len(records) == 2
    stored, rejected = (dict(*r.msg.rows) for r in records)  # inbox.logs.Lines
    lines = [r.getMessage() for r in records]
    assert lines[0].startswith("request provider=stripe event_id=")
    assert stored["outcome"] == "stored" and stored["event_id"] == json.loads(body)["id"]
    assert rejected["outcome"] == "invalid_signature" and rejected["status"] == 400
    text = "\n".join(lines)
    assert TEST_SECRET not in text
    assert headers["Stripe-Signature"] not in text
    assert "cus_" not in text and "data" not in stored
