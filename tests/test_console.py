"""The operator console through Flask's test client: off by default, the login, CSRF,
escaping, headers, and every page against the database. (In a real browser:
tests/test_console_browser.py.)"""

from __future__ import annotations

import dataclasses
import json

import pytest

from inbox.config import DEFAULT_CONSOLE_SESSION_SECONDS
from inbox.console import auth
from inbox.console.outbox_pages import destination
from inbox.web import create_app
from tests.console_support import PASSWORD, XSS_PAYLOAD, csrf_of, log_in, token
from tests.worker_support import insert_events


@pytest.fixture
def console_app(settings, clock):
    app = create_app(dataclasses.replace(settings, console_password=PASSWORD), clock=clock)
    yield app
    app.extensions["inbox.database"].close()


@pytest.fixture
def console(console_app):
    client = console_app.test_client()
    assert log_in(client).status_code == 302
    return client


def make_dead(db, count: int, event_type: str = "invoice.paid",
              error: str = "LookupError: unknown customer") -> list[str]:
    ids = insert_events(db, event_type, count, prefix=f"evt_{event_type}")
    db.execute("UPDATE inbox SET status = 'dead', attempts = 3, last_error = %s"
               " WHERE event_id = ANY(%s)", [error, ids])
    return ids


def test_console_is_off_without_a_password(client):
    for path in ("/console/", "/console/events", "/console/outbox", "/console/static/console.css"):
        assert client.get(path).status_code == 404
    assert client.post("/console/login", data={"password": ""}).status_code == 404


def test_the_login_page_and_a_wrong_password_grant_nothing(console_app):
    client = console_app.test_client()
    page = client.get("/console/")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and 'type="password"' in html
    wrong = client.post("/console/login", data={"password": "nope", "csrf_token": csrf_of(html)})
    assert wrong.status_code == 401 and "Wrong password" in wrong.get_data(as_text=True)
    assert client.get("/console/events").status_code == 302  # to the login page
    assert 'type="password"' in client.get("/console/").get_data(as_text=True)


def test_a_login_without_the_form_token_is_refused(console_app):
    client = console_app.test_client()
    client.get("/console/")
    assert client.post("/console/login", data={"password": PASSWORD}).status_code == 400
    assert client.get("/console/events").status_code == 302


def test_repeated_wrong_passwords_are_slowed_down_per_client(console_app):
    client = console_app.test_client()
    for _ in range(auth.FREE_FAILURES):
        assert log_in(client, "wrong").status_code == 401
    # Now even the right password waits, and another client is not affected.
    slowed = log_in(client)
    assert slowed.status_code == 429 and int(slowed.headers["Retry-After"]) >= 1
    # Another client (the test client is 127.0.0.1) is not slowed; with no proxy hops
    # trusted (the default), a header naming another address does not make another client.
    assert try_password(console_app, {"X-Forwarded-For": "203.0.113.9"}).status_code == 429
    assert try_password(console_app, remote_addr="127.0.0.9").status_code == 302


def try_password(app, headers=None, remote_addr="127.0.0.1", password=PASSWORD):
    """A login from a fresh client (its own session) at `remote_addr`."""
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = remote_addr
    page = client.get("/console/")
    return client.post("/console/login", headers=headers or {}, data={
        "password": password, "csrf_token": csrf_of(page.get_data(as_text=True))})


def test_behind_a_router_the_slow_down_follows_the_routers_entry(settings, clock):
    """INBOX_TRUSTED_PROXY_HOPS=1: the client is the entry the router appended
    (inbox.client_address, the allowlist's own function), whatever it wrote before it."""
    app = create_app(dataclasses.replace(settings, console_password=PASSWORD,
                                         trusted_proxy_hops=1), clock=clock)
    try:
        for n in range(auth.FREE_FAILURES):  # each with another forged first entry
            forged = {"X-Forwarded-For": f"192.0.2.{n}, 198.51.100.7"}
            assert try_password(app, forged, password="wrong").status_code == 401
        assert try_password(app, {"X-Forwarded-For": "10.9.9.9, 198.51.100.7"}).status_code == 429
        # The same router (peer) on behalf of another client is another client.
        assert try_password(app, {"X-Forwarded-For": "198.51.100.8"}).status_code == 302
        # No entry the router appended: not anybody's own budget, and not exempt either.
        for _ in range(auth.FREE_FAILURES):
            assert try_password(app, password="wrong").status_code == 401
        assert try_password(app).status_code == 429
    finally:
        app.extensions["inbox.database"].close()


def test_the_throttle_grows_and_forgets_on_success():
    now = [1000.0]
    throttle = auth.Throttle(clock=lambda: now[0])
    for _ in range(auth.FREE_FAILURES):
        assert throttle.wait_seconds("a") == 0
        throttle.failed("a")
    assert throttle.wait_seconds("a") == pytest.approx(2.0)
    assert throttle.wait_seconds("b") == 0
    throttle.failed("a")
    assert throttle.wait_seconds("a") == pytest.approx(4.0)
    now[0] += 10
    assert throttle.wait_seconds("a") == 0
    throttle.succeeded("a")
    throttle.failed("a")
    assert throttle.wait_seconds("a") == 0


def test_session_cookie_flags_and_security_headers(console_app):
    client = console_app.test_client()
    page = client.get("/console/")
    response = client.post("/console/login", data={
        "password": PASSWORD, "csrf_token": csrf_of(page.get_data(as_text=True))})
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console/" in cookie
    assert "Secure" not in cookie  # localhost
    remote = console_app.test_client()
    page = remote.get("/console/", base_url="https://inbox.example.com")
    response = remote.post("/console/login", base_url="https://inbox.example.com", data={
        "password": PASSWORD, "csrf_token": csrf_of(page.get_data(as_text=True))})
    assert "Secure" in response.headers["Set-Cookie"]
    csp = page.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert "script-src 'none'" in csp
    assert page.headers["X-Frame-Options"] == "DENY"


def test_sessions_expire(console, monkeypatch):
    assert console.get("/console/events").status_code == 200
    later = auth.now() + DEFAULT_CONSOLE_SESSION_SECONDS
    monkeypatch.setattr(auth, "now", lambda: later)
    assert console.get("/console/events").status_code == 302


def test_a_changed_password_ends_sessions(settings, clock, console):
    other = create_app(dataclasses.replace(settings, console_password="another"), clock=clock)
    try:
        client = other.test_client()
        client.set_cookie(auth.COOKIE_NAME, console.get_cookie(auth.COOKIE_NAME,
                                                                path="/console/").value,
                          path="/console/")
        assert client.get("/console/events").status_code == 302
    finally:
        other.extensions["inbox.database"].close()


def test_overview_counts_match_the_database(console, db):
    insert_events(db, "invoice.paid", 7)
    make_dead(db, 3)
    html = console.get("/console/").get_data(as_text=True)
    counts = dict(db.execute("SELECT status, count(*) FROM inbox GROUP BY status").fetchall())
    assert f'data-status="pending">{counts["pending"]}<' in html
    assert f'data-status="dead">{counts["dead"]}<' in html
    assert 'http-equiv="refresh"' in html
    assert "Event attempts, last 24 hours" in html and "<svg" in html


def test_events_list_filters_and_keyset_pages(console, db):
    insert_events(db, "invoice.paid", 60, prefix="evt_ok")
    dead = make_dead(db, 5, "charge.failed")
    listing = console.get("/console/events?status=dead").get_data(as_text=True)
    assert all(event_id in listing for event_id in dead)
    assert "evt_ok_1<" not in listing
    first = console.get("/console/events?type=invoice.paid").get_data(as_text=True)
    assert "evt_ok_60<" in first and "evt_ok_10<" not in first and "before=" in first
    before = first.split("before=")[1].split("&")[0].split('"')[0]
    second = console.get(f"/console/events?type=invoice.paid&before={before}")
    assert "evt_ok_10<" in second.get_data(as_text=True)
    assert "OFFSET" not in console.get("/console/events").get_data(as_text=True)


def test_retrying_filter_and_time_range(console, db):
    ids = insert_events(db, "invoice.paid", 4, prefix="evt_retry")
    db.execute("UPDATE inbox SET attempts = 1, last_error = 'boom' WHERE event_id = %s", [ids[0]])
    db.execute("UPDATE inbox SET received_at = now() - interval '3 days' WHERE event_id = %s",
               [ids[1]])
    retrying = console.get("/console/events?status=retrying").get_data(as_text=True)
    assert "evt_retry_1<" in retrying and "evt_retry_3<" not in retrying
    recent = console.get("/console/events?since=1d").get_data(as_text=True)
    assert "evt_retry_3<" in recent and "evt_retry_2<" not in recent
    old = console.get("/console/events?until=2d").get_data(as_text=True)
    assert "evt_retry_2<" in old and "evt_retry_3<" not in old


def test_payload_text_search_needs_a_range_and_ends_in_time(console, db):
    insert_events(db, "invoice.paid", 3, prefix="evt_plain", payload={"who": "alice"})
    insert_events(db, "invoice.paid", 2, prefix="evt_bob", payload={"who": "Bob 100%"})
    assert console.get("/console/events?q=bob").status_code == 400
    found = console.get("/console/events?q=bob&since=1h").get_data(as_text=True)
    assert "evt_bob_1<" in found and "evt_plain_1<" not in found
    literal = console.get("/console/events?q=100%25&since=1h").get_data(as_text=True)
    assert "evt_bob_1<" in literal and "evt_plain_1<" not in literal


def test_payload_search_out_of_time_says_narrow_the_range(console, db, monkeypatch):
    from inbox.console import store
    insert_events(db, "invoice.paid", 20_000, prefix="evt_many", payload={"x": "y" * 200})
    monkeypatch.setattr(store, "TEXT_SEARCH_BUDGET_MS", 1)
    page = console.get("/console/events?q=zzz&since=1d")
    assert "narrow the received range" in page.get_data(as_text=True)
    assert db.execute("SELECT count(*) FROM pg_stat_activity WHERE query ILIKE '%%ILIKE%%'"
                      " AND state = 'active' AND pid <> pg_backend_pid()").fetchone()[0] == 0


def test_an_event_page_shows_payload_attempts_messages_and_escapes(console, db):
    [event_id] = insert_events(db, "invoice.paid", 1, prefix="evt_xss", payload=XSS_PAYLOAD)
    inbox_id = db.execute("SELECT id FROM inbox WHERE event_id = %s", [event_id]).fetchone()[0]
    db.execute("INSERT INTO inbox_attempts (inbox_id, attempt, worker, started_at, outcome,"
               " error) VALUES (%s, 1, 'w1', now() - interval '1 second', 'retry', %s)",
               [inbox_id, "<b>boom</b>"])
    db.execute("INSERT INTO outbox (inbox_id, topic, payload, idempotency_key, status,"
               " last_error) VALUES (%s, 'email.send', '{}', 'k1', 'dead', 'HTTP 500')",
               [inbox_id])
    db.execute("INSERT INTO inbox_object_versions (object_key, last_created, inbox_id)"
               " VALUES ('customer:cus_1', 1700000000, %s)", [inbox_id])
    for ref in (str(inbox_id), event_id):
        page = console.get(f"/console/events/{ref}")
        html = page.get_data(as_text=True)
        assert page.status_code == 200
        assert "<script>document" not in html and "<img src=x" not in html
        assert "&lt;script&gt;" in html and "&lt;b&gt;boom&lt;/b&gt;" in html
        assert 'href="javascript' not in html
        assert "Replay" in html and "email.send" in html and "customer:cus_1" in html
        assert "w1" in html and "HTTP 500" in html


def test_replay_an_event_with_csrf_and_recorded(console, db):
    [event_id] = make_dead(db, 1)
    inbox_id = db.execute("SELECT id FROM inbox WHERE event_id = %s", [event_id]).fetchone()[0]
    path = f"/console/events/{inbox_id}"
    assert console.post(f"{path}/replay").status_code == 403
    assert console.post(f"{path}/replay", data={"csrf_token": "stale"}).status_code == 403
    assert db.execute("SELECT status FROM inbox WHERE id = %s", [inbox_id]).fetchone()[0] == "dead"
    assert db.execute("SELECT count(*) FROM inbox_console_actions").fetchone()[0] == 0
    done = console.post(f"{path}/replay", data={"csrf_token": token(console, path)})
    assert done.status_code == 302
    assert db.execute("SELECT status, attempts FROM inbox WHERE id = %s",
                      [inbox_id]).fetchone() == ("pending", 0)
    assert db.execute("SELECT action, target, affected, remote_addr FROM inbox_console_actions"
                      ).fetchall() == [("replay_event", str(inbox_id), 1, "127.0.0.1")]


def test_get_changes_nothing(console, db):
    make_dead(db, 2)
    for path in ("/console/replay?status=dead", "/console/events/1/replay",
                 "/console/outbox/replay-dead?topic=x"):
        console.get(path)
    assert db.execute("SELECT count(*) FROM inbox WHERE status = 'dead'").fetchone()[0] == 2
    assert db.execute("SELECT count(*) FROM inbox_console_actions").fetchone()[0] == 0


def test_failures_grouped_and_bulk_replay_in_batches(console, db, monkeypatch):
    from inbox.console import store
    make_dead(db, 7, "invoice.paid", "LookupError: unknown customer\ntraceback...")
    make_dead(db, 2, "charge.failed", "ValueError: bad")
    html = console.get("/console/failures").get_data(as_text=True)
    assert "LookupError: unknown customer" in html and "traceback" not in html
    assert "Replay these" in html
    args = ("status=dead&provider=test&type=invoice.paid"
            "&error=LookupError%3A+unknown+customer")
    preview = console.get(f"/console/replay?{args}").get_data(as_text=True)
    assert "Replay 7 events?" in preview
    monkeypatch.setattr(store, "REPLAY_BATCH_SIZE", 3)
    form = {"status": "dead", "provider": "test", "type": "invoice.paid",
            "error": "LookupError: unknown customer"}
    assert console.post("/console/replay", data=form).status_code == 403
    done = console.post("/console/replay", data={**form, "csrf_token": csrf_of(preview)})
    assert done.status_code == 302
    assert dict(db.execute("SELECT event_type, count(*) FROM inbox WHERE status = 'dead'"
                           " GROUP BY 1").fetchall()) == {"charge.failed": 2}
    assert db.execute("SELECT action, affected FROM inbox_console_actions").fetchall() == [
        ("replay_events", 7)]


def test_replay_by_filter_batches(db):
    from inbox.console import store
    make_dead(db, 10)
    params = {"status": "dead", "provider": None, "event_type": None, "error": None,
              "since": None, "until": None, "low_id": None, "high_id": None}
    assert store.replay_count(db, params) == 10
    assert store.replay_by_filter(db, params, batch_size=3) == 10
    assert store.replay_count(db, params) == 0


def test_outbox_pages_replay_and_hide_route_secrets(settings, clock, db):
    routes = "email.*=smtp://user:hunter2@mail.example.com:587,*=https://crm.example/hook?token=s3"
    app = create_app(dataclasses.replace(settings, console_password=PASSWORD, routes=routes),
                     clock=clock)
    try:
        client = app.test_client()
        log_in(client)
        db.execute("INSERT INTO outbox (topic, payload, idempotency_key, status, last_error)"
                   " SELECT 'email.send', '{\"to\": \"a@example.com\"}', 'k' || n, 'dead',"
                   " 'SMTP 550' FROM generate_series(1, 3) n")
        db.execute("INSERT INTO outbox (topic, payload, idempotency_key, status)"
                   " VALUES ('crm.sync', '{}', 'c1', 'sent')")
        html = client.get("/console/outbox").get_data(as_text=True)
        assert "smtp://mail.example.com:587" in html and "https://crm.example" in html
        assert "hunter2" not in html and "s3" not in html and "user" not in html
        message_id = db.execute("SELECT min(id) FROM outbox").fetchone()[0]
        db.execute("INSERT INTO outbox_attempts (outbox_id, attempt, started_at, outcome,"
                   " destination) VALUES (%s, 1, now(), 'retry', 'smtp://mail.example.com:587'),"
                   " (%s, 2, now(), 'dead', 'smtp://user:hunter2@mail.example.com:587')",
                   [message_id, message_id])
        page = client.get(f"/console/outbox/{message_id}").get_data(as_text=True)
        assert "SMTP 550" in page and "hunter2" not in page
        # Each try's destination as the relay wrote it, or 'other' when not of a safe form.
        assert "<td>smtp://mail.example.com:587</td>" in page and "<td>other</td>" in page
        client.post(f"/console/outbox/{message_id}/replay", data={"csrf_token": csrf_of(page)})
        assert db.execute("SELECT status FROM outbox WHERE id = %s",
                          [message_id]).fetchone()[0] == "pending"
        preview = client.get("/console/outbox/replay-dead?topic=email.send")
        assert "Replay 2 dead messages" in preview.get_data(as_text=True)
        client.post("/console/outbox/replay-dead", data={
            "topic": "email.send", "csrf_token": csrf_of(preview.get_data(as_text=True))})
        assert db.execute("SELECT count(*) FROM outbox WHERE status = 'dead'").fetchone()[0] == 0
        assert [row[0] for row in db.execute(
            "SELECT action FROM inbox_console_actions ORDER BY id")] == [
            "replay_message", "replay_messages"]
    finally:
        app.extensions["inbox.database"].close()


def test_destination_shows_scheme_and_host_only():
    routes = "email.*=smtp://u:p@mail.example.com:25,x=log:,*=https://h.example/p?t=1"
    assert destination(routes, "email.send") == "smtp://mail.example.com:25"
    assert destination(routes, "x") == "log:"
    assert destination(routes, "other") == "https://h.example"
    assert destination("a=log:", "b") == "no route"


def test_login_next_never_leaves_the_console(console_app):
    client = console_app.test_client()
    page = client.get("/console/")
    for target, expected in (("//evil.example/", "/console/"),
                             ("/console/events?status=dead", "/console/events?status=dead")):
        client = console_app.test_client()
        page = client.get("/console/")
        response = client.post("/console/login", data={
            "password": PASSWORD, "next": target,
            "csrf_token": csrf_of(page.get_data(as_text=True))})
        assert response.headers["Location"] == expected


def test_json_of_payload_is_pretty(console, db):
    insert_events(db, "invoice.paid", 1, prefix="evt_pretty", payload={"a": {"b": 1}})
    html = console.get("/console/events/evt_pretty_1").get_data(as_text=True)
    assert json.dumps({"a": {"b": 1}}, indent=2).replace('"', "&#34;") in html


def test_charts_count_each_minute_from_the_counters(db):
    from datetime import timedelta

    from inbox.console import store
    [event_id] = insert_events(db, "invoice.paid", 1, prefix="evt_chart")
    inbox_id = db.execute("SELECT id FROM inbox WHERE event_id = %s", [event_id]).fetchone()[0]

    def attempt(ago_minutes: int, outcome: str) -> None:
        db.execute("INSERT INTO inbox_attempts (inbox_id, attempt, started_at, finished_at,"
                   " outcome) VALUES (%s, 1, now(), now() - %s * interval '1 minute', %s)",
                   [inbox_id, ago_minutes, outcome])

    attempt(30, "processed")
    attempt(0, "dead")
    attempt(0, "dead")
    attempt(25 * 60, "dead")  # older than the day: not charted
    day = store.per_minute(db, "console_attempts_per_minute", timedelta(hours=24),
                           ("processed", "dead"))
    assert len(day.minutes) == 24 * 60
    assert day.counts["processed"][-31] == 1 and sum(day.counts["processed"]) == 1
    assert day.counts["dead"][-1] == 2 and sum(day.counts["dead"]) == 2
    hour = store.last(day, 60)
    assert len(hour.minutes) == 60 and sum(hour.counts["processed"]) == 1


def test_overview_shows_stripe_reconciliation(console, db):
    from inbox.stripe import store as stripe_store

    assert 'id="reconcile"' not in console.get("/console/").get_data(as_text=True)
    stripe_store.record_run(db, "stripe", trigger="automatic", since_unix=1_700_000_000,
                            found=1250, added=70, watermark=1_700_003_600)
    stripe_store.record_failure(db, "stripe-thin", trigger="automatic",
                                error="<b>key</b> refused")
    html = console.get("/console/").get_data(as_text=True)
    card = html[html.index('id="reconcile"'):]
    assert "added 70 of 1,250" in card and "automatic <time" in card
    assert "failing" in card and "&lt;b&gt;key&lt;/b&gt; refused" in card
