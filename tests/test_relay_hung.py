"""A hung relay gives its messages back (issue 18): the rescue takes the leases of a relay
whose connection is open but whose heartbeat stopped, ends that connection, and a relay
that wakes up after losing its leases sends none of them; a relay that is merely slow
keeps its leases. Real PostgreSQL, real `inbox relay` processes, a real HTTP endpoint."""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg
import pytest
from werkzeug.wrappers import Request, Response

from inbox.relay import store
from inbox.relay.loop import Relay
from inbox.relay.routes import parse_routes
from inbox.store import processes
from tests.support import serve_wsgi, wait_for
from tests.test_relay import (
    add_messages,
    attempts_history,
    count_status,
    outbox,
    relay_settings,
)
from tests.test_relay_process import INBOX, process, relay_env

# -- the rescue's rule, statement by statement ----------------------------------------------


def beat_as_relay(conn: psycopg.Connection, seconds_ago: float = 0.0) -> None:
    """A relay's heartbeat on `conn`'s backend, last seen `seconds_ago`."""
    processes.beat(conn, processes.Identity("relay", "host", None, conn.info.backend_pid), 1.0)
    conn.execute("UPDATE inbox_processes SET last_seen_at = now() - make_interval(secs => %s)"
                 " WHERE backend_pid = pg_backend_pid()", [seconds_ago])


# Leases cannot be dated back before their backend started (the rescue would see a crash),
# so these tests wait out a takeover of one second.
TAKEOVER_SECONDS = 1.0


def test_a_relay_not_seen_for_the_takeover_loses_its_leases_and_its_connection(
        database_url, db):
    add_messages(db, "crm.contact", 2, "k")
    db.execute("UPDATE outbox SET attempts = 2 WHERE idempotency_key = 'k-0002'")
    hung = psycopg.connect(database_url, autocommit=True, application_name="inbox-relay")
    try:
        store.claim(hung, "relay:hung", 10)
        beat_as_relay(hung)
        assert store.rescue(db, 3, TAKEOVER_SECONDS) == []  # just claimed, just seen
        time.sleep(TAKEOVER_SECONDS + 0.1)
        beat_as_relay(hung)
        assert store.rescue(db, 3, TAKEOVER_SECONDS) == []  # an old lease, but it beats
        beat_as_relay(hung, seconds_ago=TAKEOVER_SECONDS + 0.1)
        rescued = store.rescue(db, 3, TAKEOVER_SECONDS)
        assert sorted((r.status, r.hung_backend) for r in rescued) == [
            ("dead", hung.info.backend_pid), ("pending", hung.info.backend_pid)]
        assert store.end_hung_relays(db, rescued) == 1
        with pytest.raises(psycopg.OperationalError):
            hung.execute("SELECT 1")  # its connection was ended: it starts afresh
    finally:
        hung.close()
    rows = outbox(db)
    assert [(r["status"], r["attempts"], r["locked_by"]) for r in rows.values()] == [
        ("pending", 1, None), ("dead", 3, None)]
    for key, attempt in (("k-0001", 1), ("k-0002", 3)):
        [history] = attempts_history(db, key)
        assert (history["outcome"], history["relay"], history["error"]) == (
            "crashed", "relay:hung",
            f"relay relay:hung stopped making progress during attempt {attempt}"
            " (not seen for over 1 s)")
        assert rows[key]["last_error"] == history["error"]


def test_a_relay_never_takes_its_own_leases_nor_a_fresh_claim(database_url, db):
    add_messages(db, "crm.contact", 2, "k")
    other = psycopg.connect(database_url, autocommit=True, application_name="inbox-relay")
    try:
        store.claim(db, "relay:me", 1)  # never beats
        time.sleep(TAKEOVER_SECONDS + 0.1)
        store.claim(other, "relay:other", 1)  # never beat either, but claimed just now
        assert store.rescue(db, 3, TAKEOVER_SECONDS) == []
        assert [r.id for r in store.rescue(other, 3, TAKEOVER_SECONDS)] == [1]  # not ours
    finally:
        other.close()


def test_a_relay_that_wakes_up_past_its_self_stop_starts_no_send_and_gives_leases_back(
        database_url, db, caplog):
    """The delivery threads' side, with the relay's connection left open: one thread is in
    a send when the relay freezes (its lease clock jumps 1,000 s); woken up, it finishes
    that send but does not start the message leased behind it: it hands it back (fenced by
    locked_by), and the message is claimed afresh and sent once."""
    release = threading.Event()

    def hold_the_first(request: Request) -> None:
        if request.headers["Idempotency-Key"] == "k-0001":
            release.wait(30)

    with timeline(hold_seconds=0.0, before=hold_the_first) as (endpoint, url):
        settings = relay_settings(database_url, f"*={url}", relay_concurrency=1)
        relay = Relay(settings, parse_routes(settings.routes))
        try:
            relay.tick()  # beats
            add_messages(db, "crm.contact", 3, "k")
            assert relay.run_once()  # leases two: one in flight, one waiting behind it
            wait_for(lambda: endpoint.started == ["k-0001"], "the first send")
            relay.leases.clock = lambda: time.monotonic() + 1000  # frozen, then woken up
            release.set()
            wait_for(lambda: relay.run_once() == 0 and count_status(db, "sent") == 3,
                     "all three sent")
        finally:
            relay.close()
    assert "relay: 1 message(s) not started" in caplog.text.replace(relay.name, "relay")
    assert sorted(endpoint.started) == ["k-0001", "k-0002", "k-0003"]  # each once
    rows = outbox(db)
    assert [r["attempts"] for r in rows.values()] == [1, 1, 1]  # the given back uncounted
    assert [h["outcome"] for h in attempts_history(db, "k-0002")] == ["sent"]


# -- real relays ----------------------------------------------------------------------------

# Small deadlines: send budget 0.5 + 2 = 2.5 s, takeover 4 s, so the self-stop is 1.5 s.
HUNG_ENV = {
    "INBOX_HTTP_CONNECT_TIMEOUT_SECONDS": "0.5", "INBOX_HTTP_READ_TIMEOUT_SECONDS": "2",
    "INBOX_SMTP_TIMEOUT_SECONDS": "1", "INBOX_RELAY_TAKEOVER_SECONDS": "4",
}


class Timeline:
    """An endpoint that holds each request `hold_seconds` and records when each one began
    and ended, by Idempotency-Key."""

    def __init__(self, hold_seconds: float,
                 before: Callable[[Request], None] | None = None) -> None:
        self.hold_seconds = hold_seconds
        self.before = before
        self.spans: list[tuple[str, float, float]] = []
        self.started: list[str] = []
        self._lock = threading.Lock()

    @Request.application
    def __call__(self, request: Request) -> Response:
        key = request.headers["Idempotency-Key"]
        begun = time.monotonic()
        with self._lock:
            self.started.append(key)
        if self.before is not None:
            self.before(request)
        time.sleep(self.hold_seconds)
        with self._lock:
            self.spans.append((key, begun, time.monotonic()))
        return Response("ok")

    def count(self, key: str) -> int:
        with self._lock:
            return sum(1 for k, _, _ in self.spans if k == key)

    def overlaps(self) -> list[str]:
        """Keys with two requests in flight at the same time."""
        by_key: dict[str, list[tuple[float, float]]] = {}
        with self._lock:
            for key, begun, ended in self.spans:
                by_key.setdefault(key, []).append((begun, ended))
        return [key for key, spans in by_key.items()
                if any(b[0] < a[1] for a, b in itertools.pairwise(sorted(spans)))]


@contextmanager
def timeline(hold_seconds: float, before: Callable[[Request], None] | None = None
             ) -> Iterator[tuple[Timeline, str]]:
    endpoint = Timeline(hold_seconds, before)
    with serve_wsgi(endpoint) as base:
        yield endpoint, f"{base}/hook"


@pytest.mark.slow
def test_a_stopped_relay_loses_its_messages_to_a_live_one_and_never_sends_one_twice_at_once(
        database_url, db, tmp_path):
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    with timeline(hold_seconds=1.0) as (endpoint, url):
        add_messages(db, "crm.contact", 6, "k")
        env = relay_env(database_url, f"*={url}", **HUNG_ENV,
                        INBOX_RELAY_DESTINATION_CONCURRENCY="2")
        with process([INBOX, "relay", "--concurrency", "2"], env, log_a) as first:
            # Two threads, two messages in flight and two more leased ahead, waiting.
            wait_for(lambda: len(endpoint.started) == 2, "two deliveries in flight")
            os.killpg(first.pid, signal.SIGSTOP)  # hung, its database connection open
            try:
                held = {key for key, row in outbox(db).items() if row["locked_by"]}
                in_flight = set(endpoint.started)
                assert len(held) == 4 and in_flight < held
                with process([INBOX, "relay"], env, log_b) as second:
                    wait_for(lambda: count_status(db, "sent") == 6, "all six sent",
                             timeout=60)
                    os.killpg(first.pid, signal.SIGCONT)
                    # It wakes up holding leases it lost: its connection was ended, so it
                    # starts afresh; its threads start nothing it held.
                    wait_for(lambda: "reconnecting" in log_a.read_text(),
                             "the stopped relay to find its connection ended")
                    os.killpg(second.pid, signal.SIGTERM)
                    assert second.wait(timeout=30) == 0, log_b.read_text()
            finally:
                os.killpg(first.pid, signal.SIGCONT)
            os.killpg(first.pid, signal.SIGTERM)
            assert first.wait(timeout=30) == 0, log_a.read_text()
    assert endpoint.overlaps() == []  # never two requests of one message at once
    rows = outbox(db)
    for key, row in rows.items():
        outcomes = [(h["outcome"], h["relay"]) for h in attempts_history(db, key)]
        assert (row["status"], row["locked_by"]) == ("sent", None), key
        if key in held:  # taken back from the stopped relay, then sent by the live one
            assert row["attempts"] == 2, key
            [(crashed, stopped), (sent, live)] = outcomes
            assert (crashed, sent) == ("crashed", "sent") and stopped != live, key
            assert "stopped making progress during attempt 1" in row["last_error"], key
        else:
            assert (row["attempts"], [o for o, _ in outcomes]) == (1, ["sent"]), key
        # Sent twice only when the stopped relay had it in flight (at least once), and
        # then one after the other.
        assert endpoint.count(key) == (2 if key in in_flight else 1), key


@pytest.mark.slow
def test_a_slow_relay_keeps_its_leases_past_the_takeover(database_url, db, tmp_path):
    """One thread, two messages leased at once, each send taking 2 s (within the 3 s read
    timeout): the second lease is 4 s old when it ends, past the 3.5 s takeover, and the
    rescue of another relay leaves it alone all the while because the relay keeps beating."""
    with timeline(hold_seconds=2.0) as (endpoint, url):
        add_messages(db, "crm.contact", 2, "k")
        env = relay_env(database_url, f"*={url}", INBOX_POLL_INTERVAL_SECONDS="0.1",
                        INBOX_HTTP_CONNECT_TIMEOUT_SECONDS="0.1",
                        INBOX_HTTP_READ_TIMEOUT_SECONDS="3", INBOX_SMTP_TIMEOUT_SECONDS="1",
                        INBOX_RELAY_TAKEOVER_SECONDS="3.5")
        with process([INBOX, "relay", "--concurrency", "1"], env, tmp_path / "r.log") as relay:
            taken: list[store.Rescued] = []
            lease_ages = [0.0]

            def done() -> bool:  # meanwhile, another relay's rescue, as often as it can
                taken.extend(store.rescue(db, 5, 3.5))
                lease_ages.append(db.execute(
                    "SELECT coalesce(extract(epoch FROM max(now() - locked_at)), 0)::float8"
                    " FROM outbox").fetchone()[0])
                return count_status(db, "sent") == 2

            wait_for(done, "both sent", timeout=60)
            os.killpg(relay.pid, signal.SIGTERM)
            assert relay.wait(timeout=30) == 0
    assert max(lease_ages) > 3.5  # the rescue saw a lease older than its takeover...
    assert taken == []  # ...and took nothing: its relay was beating
    assert sorted(endpoint.started) == ["k-0001", "k-0002"]  # each sent once
    for key in ("k-0001", "k-0002"):
        assert [h["outcome"] for h in attempts_history(db, key)] == ["sent"]
