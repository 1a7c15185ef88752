"""The relay against real PostgreSQL and real HTTP servers on loopback.

Outbox rows are inserted with SQL, as a handler's transaction would leave them.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from standardwebhooks import Webhook
from werkzeug.wrappers import Request, Response

from inbox.config import Settings
from inbox.relay import store
from inbox.relay.loop import loop_spec
from inbox.runtime.runner import ProcessControl, run_loop
from tests.support import serve_wsgi, wait_for

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
DEADLINE_SECONDS = 30.0


# -- helpers shared by the relay tests ------------------------------------------------------

def add_message(db: psycopg.Connection, topic: str, payload: Any, key: str) -> int:
    return db.execute(
        "INSERT INTO outbox (topic, payload, idempotency_key) VALUES (%s, %s::jsonb, %s)"
        " RETURNING id", [topic, json.dumps(payload), key],
    ).fetchone()[0]


def add_messages(db: psycopg.Connection, topic: str, count: int, prefix: str) -> None:
    """`count` messages `{"n": i}` with keys prefix-0001, prefix-0002, ... in id order."""
    db.execute(
        "INSERT INTO outbox (topic, payload, idempotency_key)"
        " SELECT %s, jsonb_build_object('n', g), %s || lpad(g::text, 4, '0')"
        " FROM generate_series(1, %s) AS g ORDER BY g",
        [topic, f"{prefix}-", count],
    )


def outbox(db: psycopg.Connection) -> dict[str, dict[str, Any]]:
    """Every outbox row by idempotency key (a leased row's next_attempt_at = 'infinity' loads
    as datetime.max: inbox.db registers the loader)."""
    with db.cursor(row_factory=dict_row) as cur:
        rows = cur.execute("SELECT * FROM outbox ORDER BY id").fetchall()
    return {row["idempotency_key"]: row for row in rows}


def count_status(db: psycopg.Connection, status: str, topic_like: str = "%") -> int:
    """Messages in `status` whose topic is LIKE `topic_like`; the alerts a dead message
    raises (inbox.alert.*) are not the test's messages and are left out."""
    return db.execute(
        "SELECT count(*) FROM outbox WHERE status = %s AND topic LIKE %s"
        " AND topic NOT LIKE 'inbox.alert.%%'", [status, topic_like]
    ).fetchone()[0]


def relay_settings(database_url: str, routes: str, **overrides: Any) -> Settings:
    """Fast retries and polls, so a test sees several attempts in well under a second."""
    base = Settings(
        database_url=database_url,
        routes=routes,
        max_attempts=4,
        retry_base_seconds=0.05,
        retry_cap_seconds=0.5,
        poll_interval_seconds=0.1,
        relay_concurrency=8,
        http_connect_timeout_seconds=2.0,
        http_read_timeout_seconds=5.0,
        smtp_timeout_seconds=5.0,
    )
    return replace(base, **overrides)


@contextmanager
def running_relay(settings: Settings) -> Iterator[None]:
    """The relay's loop as `inbox relay` runs it (the runner's loop: LISTEN, poll, rescue),
    in a thread of the test process; stopped gracefully at the end, as by SIGTERM."""
    control = ProcessControl(None, None, 0)
    thread = threading.Thread(target=run_loop, args=(loop_spec(settings), control),
                              name="test-relay", daemon=True)
    thread.start()
    try:
        yield
    finally:
        control.request_stop()
        os.write(control.wake_w, b"x")
        thread.join(timeout=40)
        os.close(control.wake_r)
        os.close(control.wake_w)
        assert not thread.is_alive(), "the relay did not stop"


class Sink:
    """A threaded HTTP endpoint that records every request and answers by a script:
    `answer(request, n)` with n the 1-based number of requests seen for that
    Idempotency-Key; the default answers 200."""

    def __init__(self, answer: Callable[[Request, int], Response] | None = None) -> None:
        self.answer = answer or (lambda request, n: Response("ok"))
        self.requests: list[tuple[float, dict[str, str], bytes]] = []
        self._lock = threading.Lock()

    @Request.application
    def __call__(self, request: Request) -> Response:
        body = request.get_data()
        headers = dict(request.headers)
        with self._lock:
            self.requests.append((time.monotonic(), headers, body))
            n = sum(1 for _, h, _ in self.requests
                    if h.get("Idempotency-Key") == headers.get("Idempotency-Key"))
        return self.answer(request, n)

    def keys(self) -> list[str]:
        with self._lock:
            return [h["Idempotency-Key"] for _, h, _ in self.requests]

    def times(self, key: str) -> list[float]:
        with self._lock:
            return [t for t, h, _ in self.requests if h["Idempotency-Key"] == key]


@contextmanager
def sink(answer: Callable[[Request, int], Response] | None = None) -> Iterator[tuple[Sink, str]]:
    endpoint = Sink(answer)
    werkzeug_log = logging.getLogger("werkzeug")
    level = werkzeug_log.level
    werkzeug_log.setLevel(logging.WARNING)  # not a line per request
    try:
        with serve_wsgi(endpoint) as base:
            yield endpoint, f"{base}/hook"
    finally:
        werkzeug_log.setLevel(level)


# -- HTTP ----------------------------------------------------------------------------------

def test_http_delivery_carries_idempotency_key_and_a_verifiable_signature(database_url, db):
    with sink() as (endpoint, url):
        settings = relay_settings(database_url, f"crm.*={url},*=log:",
                                  route_secrets=f"crm.*={SECRET}")
        payload = {"email": "ada@example.com", "plan": "pro", "amount": 1200}
        add_message(db, "crm.contact", payload, "evt_1:crm")
        with running_relay(settings):
            wait_for(lambda: count_status(db, "sent") == 1, "the message to be sent")
    (_, headers, body), = endpoint.requests
    assert headers["Idempotency-Key"] == "evt_1:crm"
    assert headers["Webhook-Id"] == "evt_1:crm"
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == payload
    assert Webhook(SECRET).verify(body, headers) == payload
    row = outbox(db)["evt_1:crm"]
    assert row["attempts"] == 1 and row["sent_at"] is not None
    assert (row["locked_by"], row["locked_backend"], row["locked_at"]) == (None, None, None)


def test_500_then_200_is_sent_after_a_retry(database_url, db):
    def answer(request: Request, n: int) -> Response:
        return Response("database hiccup", status=500) if n == 1 else Response("ok")

    with sink(answer) as (endpoint, url):
        add_message(db, "crm.contact", {"n": 1}, "k1")
        with running_relay(relay_settings(database_url, f"*={url}")):
            wait_for(lambda: count_status(db, "sent") == 1, "the retried message to be sent")
    assert endpoint.keys() == ["k1", "k1"]
    row = outbox(db)["k1"]
    assert row["attempts"] == 2
    assert "HTTP 500: database hiccup" in row["last_error"]


def attempts_history(db: psycopg.Connection, key: str) -> list[dict[str, Any]]:
    """The outbox_attempts rows of one message, oldest first."""
    return db.cursor(row_factory=dict_row).execute(
        "SELECT a.* FROM outbox_attempts a JOIN outbox o ON o.id = a.outbox_id"
        " WHERE o.idempotency_key = %s ORDER BY a.id", [key]).fetchall()


def test_every_delivery_try_is_in_the_history_with_its_answer(database_url, db):
    def answer(request: Request, n: int) -> Response:
        return Response("busy", status=503) if n == 1 else Response("ok", status=202)

    with sink(answer) as (_, url):
        add_message(db, "crm.contact", {"n": 1}, "k1")
        with running_relay(relay_settings(database_url, f"*={url}")):
            wait_for(lambda: count_status(db, "sent") == 1, "the retried message to be sent")
    tries = attempts_history(db, "k1")
    assert [(t["attempt"], t["outcome"], t["http_status"], t["error"]) for t in tries] == [
        (1, "retry", 503, "HTTP 503: busy"), (2, "sent", 202, None)]
    for t in tries:
        assert t["relay"] and t["smtp_reply"] is None
        assert t["started_at"] <= t["finished_at"]
        # Where it went: the route's scheme://host:port, not its URL (/hook is not there).
        assert t["destination"] == url.removesuffix("/hook")
    assert tries[0]["finished_at"] <= tries[1]["started_at"]
    # Written with the outcome: the message's status and its history agree.
    assert outbox(db)["k1"]["sent_at"] >= tries[1]["finished_at"]


def test_a_dead_message_and_an_unrouted_one_have_their_history(database_url, db):
    with sink(lambda request, n: Response("gone", status=410)) as (_, url):
        add_message(db, "crm.contact", {"n": 1}, "k1")
        add_message(db, "billing.refund", {"n": 2}, "k2")
        with running_relay(relay_settings(database_url, f"crm.*={url}")):
            wait_for(lambda: count_status(db, "dead") == 2, "both dead")
    [gone] = attempts_history(db, "k1")
    assert (gone["outcome"], gone["http_status"]) == ("dead", 410)
    assert gone["error"] == "endpoint gone, HTTP 410: gone"
    [unrouted] = attempts_history(db, "k2")
    assert (unrouted["outcome"], unrouted["http_status"]) == ("dead", None)
    assert unrouted["error"].startswith("no route for topic")
    assert unrouted["destination"] is None


def test_410_is_dead_at_once_with_the_answer(database_url, db):
    with sink(lambda request, n: Response("this hook was deleted", status=410)) as (ep, url):
        add_message(db, "crm.contact", {"n": 1}, "k1")
        with running_relay(relay_settings(database_url, f"inbox.alert.*=log:,*={url}")):
            wait_for(lambda: count_status(db, "dead") == 1, "the message to be dead")
    row = outbox(db)["k1"]
    assert row["attempts"] == 1 and len(ep.requests) == 1
    assert row["last_error"] == "endpoint gone, HTTP 410: this hook was deleted"
    assert row["sent_at"] is None and row["locked_by"] is None


def test_a_read_timeout_is_retried(database_url, db):
    def answer(request: Request, n: int) -> Response:
        if n == 1:
            time.sleep(2.0)
        return Response("ok")

    with sink(answer) as (_, url):
        add_message(db, "crm.contact", {"n": 1}, "k1")
        settings = relay_settings(database_url, f"*={url}", http_read_timeout_seconds=0.3)
        with running_relay(settings):
            wait_for(lambda: count_status(db, "sent") == 1, "the message to be sent")
    row = outbox(db)["k1"]
    assert row["attempts"] == 2
    assert "ReadTimeout" in row["last_error"]


def test_retry_after_is_honoured(database_url, db):
    def answer(request: Request, n: int) -> Response:
        if n == 1:
            return Response("slow down", status=429, headers={"Retry-After": "2"})
        return Response("ok")

    with sink(answer) as (endpoint, url):
        add_message(db, "crm.contact", {"n": 1}, "k1")
        # Without Retry-After the next attempt would come within retry_base (0.05 s).
        with running_relay(relay_settings(database_url, f"*={url}", retry_cap_seconds=60)):
            wait_for(lambda: count_status(db, "sent") == 1, "the message to be sent")
    first, second = endpoint.times("k1")
    assert second - first >= 1.9
    assert "HTTP 429" in outbox(db)["k1"]["last_error"]


def test_dead_after_max_attempts(database_url, db):
    with sink(lambda request, n: Response("down", status=503)) as (endpoint, url):
        add_message(db, "crm.contact", {"n": 1}, "k1")
        with running_relay(relay_settings(database_url, f"inbox.alert.*=log:,*={url}",
                                          max_attempts=3)):
            wait_for(lambda: count_status(db, "dead") == 1, "the message to be dead")
    row = outbox(db)["k1"]
    assert row["attempts"] == 3 and len(endpoint.requests) == 3
    assert row["last_error"] == "gave up after 3 attempts: HTTP 503: down"


# -- routing and log ------------------------------------------------------------------------

def test_an_unrouted_topic_is_dead_with_a_clear_error(database_url, db):
    add_message(db, "billing.refund", {"n": 1}, "k1")
    add_message(db, "crm.contact", {"n": 2}, "k2")
    with running_relay(relay_settings(database_url, "crm.*=log:")):
        wait_for(lambda: count_status(db, "dead") == 1 and count_status(db, "sent") == 1,
                 "one dead, one sent")
    row = outbox(db)["k1"]
    assert row["status"] == "dead"
    assert row["last_error"] == "no route for topic 'billing.refund' in INBOX_ROUTES"


def test_the_log_route_logs_topic_key_and_payload(database_url, db):
    records: list[logging.LogRecord] = []
    handler = logging.Handler(level=logging.INFO)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("inbox.relay.transports.log")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        add_message(db, "audit.note", {"said": "hello"}, "k1")
        with running_relay(relay_settings(database_url, "*=log:")):
            wait_for(lambda: count_status(db, "sent") == 1, "the message to be sent")
    finally:
        logger.removeHandler(handler)
    text = records[0].getMessage()
    assert "topic=audit.note" in text and "idempotency_key=k1" in text and "hello" in text


# -- no head-of-line blocking -----------------------------------------------------------------

def test_a_hanging_endpoint_does_not_stall_the_others(database_url, db):
    release = threading.Event()
    in_hang = []

    def hang(request: Request, n: int) -> Response:
        in_hang.append(1)
        release.wait(60)
        return Response("finally")

    with sink(hang) as (_, slow_url), sink() as (fast, fast_url):
        # The hanging host's messages come first in the claim order.
        add_messages(db, "slow.thing", 40, "slow")
        add_messages(db, "fast.thing", 1000, "fast")
        settings = relay_settings(database_url, f"slow.*={slow_url},fast.*={fast_url}",
                                  http_read_timeout_seconds=60, relay_concurrency=8)
        with running_relay(settings):
            started = time.monotonic()
            wait_for(lambda: count_status(db, "sent", "fast.%") == 1000,
                     "1,000 messages to the healthy endpoint", timeout=60)
            elapsed = time.monotonic() - started
            # The hanging host holds only its own slots, and nothing of it was sent.
            assert len(in_hang) == 4  # half of the 8 delivery threads
            assert count_status(db, "sent", "slow.%") == 0
            # Its backlog is not leased wholesale into the relay's memory: once its lane holds
            # 8 messages its topic is left out of the claim (so at most 4 in flight, 7
            # waiting and one claim of at most 2 x 8 - 4).
            leased = db.execute("SELECT count(*) FROM outbox WHERE topic LIKE 'slow.%'"
                                " AND locked_by IS NOT NULL").fetchone()[0]
            assert 4 <= leased <= 23
            release.set()
            wait_for(lambda: count_status(db, "sent", "slow.%") == 40, "the slow ones at last")
    assert sorted(set(fast.keys())) == [f"fast-{i:04d}" for i in range(1, 1001)]
    print(f"1,000 messages past a hanging endpoint in {elapsed:.1f} s")


# -- wake-ups, crash rescue, graceful stop --------------------------------------------------

def test_notify_wakes_an_idle_relay_long_before_the_poll(database_url, db):
    with sink() as (_, url):
        settings = relay_settings(database_url, f"*={url}", poll_interval_seconds=60)
        with running_relay(settings):
            time.sleep(0.5)  # the start-up claim has found nothing; now the relay is idle
            add_message(db, "crm.contact", {"n": 1}, "k1")
            db.execute("NOTIFY outbox_messages")
            wait_for(lambda: count_status(db, "sent") == 1, "the notified message", timeout=10)


def test_rescue_takes_back_what_a_dead_relay_held(database_url, db):
    add_message(db, "crm.a", {"n": 1}, "fresh")
    add_message(db, "crm.b", {"n": 2}, "last-try")
    db.execute("UPDATE outbox SET attempts = 2 WHERE idempotency_key = 'last-try'")
    with psycopg.connect(database_url, autocommit=True) as doomed:
        claimed = store.claim(doomed, "relay:test", 10)
        assert {m.idempotency_key for m in claimed} == {"fresh", "last-try"}
        assert store.rescue(db, 3, 120) == []  # its backend is alive: hands off
    rescued = wait_for(lambda: store.rescue(db, 3, 120), "the dead backend to go")
    assert len(rescued) == 2
    assert all(r.hung_backend is None for r in rescued)  # crashed: no backend to end
    rows = outbox(db)
    assert rows["fresh"]["status"] == "pending" and rows["fresh"]["attempts"] == 1
    assert rows["last-try"]["status"] == "dead" and rows["last-try"]["attempts"] == 3
    for row in rows.values():
        assert row["locked_backend"] is None and row["locked_by"] is None
        assert "relay stopped during attempt" in row["last_error"]
    assert [m.idempotency_key for m in store.claim(db, "relay:next", 10)] == ["fresh"]
    # Each crashed try is in the history, written by the rescue itself.
    for key, attempt in (("fresh", 1), ("last-try", 3)):
        [crashed] = attempts_history(db, key)
        assert (crashed["attempt"], crashed["outcome"], crashed["relay"]) == (
            attempt, "crashed", "relay:test")
        assert crashed["error"].startswith(f"relay stopped during attempt {attempt}")


def test_an_outcome_for_a_lease_that_changed_hands_writes_no_history(database_url, db):
    add_message(db, "crm.a", {"n": 1}, "k1")
    [message] = store.claim(db, "relay:old", 1)
    db.execute("UPDATE outbox SET locked_by = 'relay:new'")  # as a rescue + claim would
    assert store.record_outcomes(db, "relay:old", [store.Outcome(message.id, "dead", "x")]) == 0
    assert attempts_history(db, "k1") == []


def test_stop_finishes_deliveries_in_hand_and_releases_the_rest(database_url, db):
    def slow(request: Request, n: int) -> Response:
        time.sleep(0.3)
        return Response("ok")

    with sink(slow) as (endpoint, url):
        add_messages(db, "crm.contact", 30, "k")
        settings = relay_settings(database_url, f"*={url}", relay_concurrency=2)
        with running_relay(settings):
            wait_for(lambda: len(endpoint.requests) >= 2, "the first deliveries to start")
        rows = outbox(db)
    sent = {k for k, r in rows.items() if r["status"] == "sent"}
    assert sent == set(endpoint.keys())  # every request made was recorded as sent
    assert 2 <= len(sent) < 30
    for key, row in rows.items():
        assert row["locked_by"] is None, key
        if key not in sent:
            assert (row["status"], row["attempts"]) == ("pending", 0), key


@pytest.mark.parametrize("concurrency", [1, 3])
def test_small_concurrency_still_delivers_everything(database_url, db, concurrency):
    with sink() as (endpoint, url):
        add_messages(db, "crm.contact", 50, "k")
        settings = relay_settings(database_url, f"*={url}", relay_concurrency=concurrency)
        with running_relay(settings):
            wait_for(lambda: count_status(db, "sent") == 50, "all 50 messages")
    assert sorted(endpoint.keys()) == [f"k-{i:04d}" for i in range(1, 51)]


def test_the_claim_is_planned_afresh_each_time(db):
    """Like the worker's claim (test_worker.py): a prepared claim would keep a plan made
    while the outbox was small long after it has grown."""
    add_messages(db, "crm.test", 8, "plan")
    for _ in range(8):
        assert len(store.claim(db, "relay:plan", 1)) == 1
    prepared = [row[0] for row in db.execute("SELECT statement FROM pg_prepared_statements")]
    assert not [statement for statement in prepared if "SKIP LOCKED" in statement]
