"""The receiver's wake-up: one NOTIFY per burst of committed inserts, from a thread of each
web process, that survives database restarts and stops with the app."""

from __future__ import annotations

import concurrent.futures
import threading
import time

import psycopg
import pytest

from inbox import db as inbox_db
from inbox.config import Settings
from inbox.migrations import migrate
from inbox.web import create_app
from inbox.web.wakeup import WakeNotifier
from tests.support import TEST_SECRET, signed_headers, stripe_event_files, wait_for

CHANNEL = "inbox_events"


def listen(url: str) -> psycopg.Connection:
    conn = psycopg.connect(url, autocommit=True)
    conn.execute(f"LISTEN {CHANNEL}")
    return conn


def next_notification(listener: psycopg.Connection, timeout: float = 10.0) -> bool:
    """True when a notification on the channel arrives within `timeout`."""
    return any(n.channel == CHANNEL for n in listener.notifies(timeout=timeout, stop_after=1))


def post(client, body: bytes):
    return client.post("/webhooks/stripe", data=body,
                       headers=signed_headers(body, int(time.time())))


def wakeup_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "inbox-wakeup"]


def test_a_listener_is_notified_after_the_insert_committed(client, database_url, db):
    with listen(database_url) as listener:
        assert post(client, stripe_event_files()[0].read_bytes()).status_code == 200
        assert next_notification(listener)
        # Sent after the commit, never inside the transaction: the row is already visible.
        assert db.execute("SELECT count(*) FROM inbox").fetchone()[0] == 1


def test_a_burst_of_inserts_shares_few_notifications(settings, database_url, db):
    """Twenty events committed together wake the workers at least once, and the notifier
    sends fewer NOTIFYs than there were events."""
    app = create_app(settings, pool_size=8)
    client_lock = threading.Lock()
    bodies = [path.read_bytes() for path in stripe_event_files()]

    def post_one(number: int) -> int:
        body = bodies[number % len(bodies)].replace(b'"evt_', f'"evt_burst{number}_'.encode(), 1)
        with client_lock:
            client = app.test_client()
        return post(client, body).status_code

    try:
        with listen(database_url) as listener:
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                assert list(pool.map(post_one, range(40))) == [200] * 40
            assert next_notification(listener)
        notifier = app.extensions["inbox.database"].notifier
        # The listener can hear a NOTIFY before the thread has counted it.
        wait_for(lambda: notifier.sent >= 1, timeout=5)
        assert notifier.sent < 40
    finally:
        app.extensions["inbox.database"].close()
    assert db.execute("SELECT count(*) FROM inbox").fetchone()[0] == 40


def test_duplicates_and_rejected_events_send_no_notification(client, database_url):
    body = stripe_event_files()[0].read_bytes()
    with listen(database_url) as listener:
        assert post(client, body).status_code == 200
        assert next_notification(listener)  # the new event's; nothing more is owed
        assert post(client, body).status_code == 200  # duplicate
        assert client.post("/webhooks/stripe", data=body).status_code == 400  # unsigned
        assert list(listener.notifies(timeout=1.0)) == []


def test_closing_the_app_stops_the_thread_and_its_connection(settings, database_url, db):
    app = create_app(settings)
    before = set(wakeup_threads())
    with listen(database_url) as listener:
        assert post(app.test_client(), stripe_event_files()[0].read_bytes()).status_code == 200
        assert next_notification(listener)
    ours = set(wakeup_threads()) - before
    assert len(ours) == 1
    app.extensions["inbox.database"].close()
    wait_for(lambda: not any(thread.is_alive() for thread in ours), "the notifier to end",
             timeout=10)
    wait_for(lambda: db.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name = 'inbox-web-wakeup'"
    ).fetchone()[0] == 0, "the notifier's connection to close", timeout=10)


def test_the_notifier_never_dies_on_errors_and_sends_what_is_owed(database_url):
    """A connection that cannot be made is retried, and the wake-up owed is sent once the
    database answers."""
    attempts = []

    def flaky_connect() -> psycopg.Connection:
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise inbox_db.DatabaseUnavailable("not yet")
        return inbox_db.connect(database_url)

    notifier = WakeNotifier(flaky_connect)
    before = set(wakeup_threads())
    try:
        with listen(database_url) as listener:
            notifier.wake()
            assert next_notification(listener)
        # The listener can hear the NOTIFY before the thread has counted it.
        wait_for(lambda: notifier.sent == 1, timeout=5)
        assert len(attempts) == 3
        [thread] = set(wakeup_threads()) - before
        assert thread.is_alive()
    finally:
        notifier.close()


@pytest.mark.slow
def test_a_database_restart_does_not_break_later_wakeups(own_cluster):
    url = own_cluster.url()
    migrate(url)
    # One pooled connection: the insert's retry on a fresh one then surely succeeds (as in
    # test_receiver_outage), and the test is about the notifier's own connection.
    app = create_app(Settings(database_url=url, stripe_webhook_secrets=(TEST_SECRET,),
                              db_wait_seconds=5.0), pool_size=1)
    client = app.test_client()
    first, second = (path.read_bytes() for path in stripe_event_files()[:2])
    try:
        with listen(url) as listener:
            assert post(client, first).status_code == 200
            assert next_notification(listener)
        own_cluster.terminate()
        own_cluster.start()
        # The notifier's connection died with the server; the next wake-up reconnects.
        with listen(url) as listener:
            answer = post(client, second)
            assert answer.status_code == 200, answer.get_json()
            assert next_notification(listener)
    finally:
        app.extensions["inbox.database"].close()
