"""`inbox relay` as a real process: SIGKILL mid-send loses nothing, SIGTERM is graceful,
a bad route stops it at start-up; `inbox worker --with-relay` runs both in one dyno."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from werkzeug.wrappers import Request, Response

from inbox.relay import store
from tests.support import REPO, wait_for
from tests.test_relay import add_messages, count_status, outbox, sink

pytestmark = pytest.mark.slow

INBOX = str(Path(sys.executable).parent / "inbox")


def relay_env(database_url: str, routes: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INBOX_")}
    env.update(
        DATABASE_URL=database_url,
        INBOX_ROUTES=routes,
        INBOX_POLL_INTERVAL_SECONDS="0.2",
        INBOX_RETRY_BASE_SECONDS="0.05",
        INBOX_RETRY_CAP_SECONDS="0.5",
        INBOX_HTTP_READ_TIMEOUT_SECONDS="10",
    )
    env.update(extra)
    return env


@contextmanager
def process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """A command in its own process group (supervisor and children), killed if left running."""
    with log.open("ab") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=REPO)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def test_sigkill_mid_send_loses_nothing_and_resends_with_the_same_key(database_url, db,
                                                                      tmp_path):
    in_flight = threading.Event()
    release = threading.Event()

    def answer(request: Request, n: int) -> Response:
        if request.headers["Idempotency-Key"] == "k-0100" and n == 1:
            in_flight.set()  # the relay is mid-send on this one: kill it now
            release.wait(30)
        return Response("ok")

    with sink(answer) as (endpoint, url):
        add_messages(db, "crm.contact", 300, "k")
        env = relay_env(database_url, f"*={url}")
        log = tmp_path / "relay.log"
        with process([INBOX, "relay", "--concurrency", "4"], env, log) as first:
            wait_for(in_flight.is_set, "the relay to be mid-send on k-0100")
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(timeout=10)
        release.set()
        assert outbox(db)["k-0100"]["status"] == "pending"  # sent, but never recorded
        with process([INBOX, "relay", "--concurrency", "4"], env, log) as second:
            wait_for(lambda: count_status(db, "sent") == 300, "all 300 sent after the restart",
                     timeout=60)
            os.killpg(second.pid, signal.SIGTERM)
            assert second.wait(timeout=30) == 0
    rows = outbox(db)
    assert all(row["status"] == "sent" and row["locked_by"] is None for row in rows.values())
    bodies: dict[str, set[bytes]] = {}
    for _, headers, body in endpoint.requests:
        bodies.setdefault(headers["Idempotency-Key"], set()).add(body)
    assert set(bodies) == set(rows)  # every message reached the endpoint at least once
    assert endpoint.keys().count("k-0100") >= 2  # the one in flight was sent again...
    assert rows["k-0100"]["attempts"] >= 2  # ...its first attempt counted
    for key, seen in bodies.items():  # ...and every re-send is the same message
        assert seen == {json.dumps({"n": int(key[2:])}).encode()}, key


def test_sigterm_finishes_deliveries_in_hand_and_exits_0(database_url, db, tmp_path):
    def slow(request: Request, n: int) -> Response:
        time.sleep(0.5)
        return Response("ok")

    with sink(slow) as (endpoint, url):
        add_messages(db, "crm.contact", 40, "k")
        env = relay_env(database_url, f"*={url}")
        with process([INBOX, "relay", "--concurrency", "4"], env, tmp_path / "r.log") as relay:
            wait_for(lambda: len(endpoint.requests) >= 4, "deliveries in flight")
            os.killpg(relay.pid, signal.SIGTERM)
            assert relay.wait(timeout=30) == 0, (tmp_path / "r.log").read_text()
    rows = outbox(db)
    sent = {key for key, row in rows.items() if row["status"] == "sent"}
    assert sent == set(endpoint.keys())  # every request made was recorded as sent
    assert 4 <= len(sent) < 40
    for key, row in rows.items():
        assert row["locked_by"] is None, key
        if key not in sent:
            assert (row["status"], row["attempts"]) == ("pending", 0), key


def test_a_bad_route_stops_the_relay_at_start_up(tmp_path):
    env = relay_env("postgresql://127.0.0.1:1/none", "crm.*=ftp://files.example/")
    done = subprocess.run([INBOX, "relay"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "INBOX_ROUTES" in done.stderr and "unknown scheme 'ftp'" in done.stderr


def test_a_takeover_shorter_than_a_send_stops_the_relay_at_start_up():
    env = relay_env("postgresql://127.0.0.1:1/none", "*=log:",
                    INBOX_RELAY_TAKEOVER_SECONDS="20")  # the SMTP timeout alone is 30 s
    done = subprocess.run([INBOX, "relay"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "INBOX_RELAY_TAKEOVER_SECONDS=20 is too short" in done.stderr


HANDLERS = textwrap.dedent(
    """
    from inbox import handler

    @handler("test", "order.paid")
    def order_paid(event, tx):
        tx.outbox("crm.order", {"order": event.payload["order"]})
    """
)


def test_worker_with_relay_runs_handler_and_delivery_in_one_process(database_url, db,
                                                                    tmp_path):
    (tmp_path / "relay_test_handlers.py").write_text(HANDLERS)
    db.execute(
        "INSERT INTO inbox (provider, event_id, event_type, payload, raw_body)"
        " SELECT 'test', 'evt_' || g, 'order.paid', jsonb_build_object('order', g), ''"
        " FROM generate_series(1, 20) AS g"
    )
    with sink() as (endpoint, url):
        env = relay_env(database_url, f"crm.*={url}", INBOX_HANDLERS="relay_test_handlers",
                        PYTHONPATH=f"{tmp_path}{os.pathsep}{REPO}")
        with process([INBOX, "worker", "--with-relay"], env, tmp_path / "w.log") as both:
            wait_for(lambda: count_status(db, "sent") == 20, "20 messages handled and sent",
                     timeout=60)
            os.killpg(both.pid, signal.SIGTERM)
            assert both.wait(timeout=30) == 0, (tmp_path / "w.log").read_text()
    orders = sorted(json.loads(body)["order"] for _, _, body in endpoint.requests)
    assert orders == list(range(1, 21))
    assert set(endpoint.keys()) == {f"test:evt_{n}:crm.order:0" for n in range(1, 21)}


def test_a_second_sigterm_exits_at_once_and_nothing_is_lost(database_url, db, tmp_path):
    release = threading.Event()

    def hang(request: Request, n: int) -> Response:
        release.wait(30)
        return Response("late")

    with sink(hang) as (endpoint, url):
        add_messages(db, "crm.contact", 20, "k")
        env = relay_env(database_url, f"*={url}", INBOX_HTTP_READ_TIMEOUT_SECONDS="30")
        log = tmp_path / "r.log"
        with process([INBOX, "relay", "--concurrency", "4"], env, log) as relay:
            wait_for(lambda: len(endpoint.requests) == 2, "two deliveries hanging")
            os.killpg(relay.pid, signal.SIGTERM)
            time.sleep(1.0)
            assert relay.poll() is None  # waiting for the deliveries in hand
            started = time.monotonic()
            os.killpg(relay.pid, signal.SIGTERM)
            assert relay.wait(timeout=10) == 130, log.read_text()
            assert time.monotonic() - started < 5
        release.set()
    rows = outbox(db)
    hanging = {key for key, row in rows.items() if row["locked_by"] is not None}
    assert hanging == set(endpoint.keys())  # only the two in flight are still leased...
    for key, row in rows.items():  # ...the others were given back, their attempt uncounted
        if key not in hanging:
            assert (row["status"], row["attempts"]) == ("pending", 0), key
    rescued = wait_for(lambda: store.rescue(db, 5, 120), "the rescue of the two")
    assert sorted((r.id, r.status) for r in rescued) == sorted(
        (rows[key]["id"], "pending") for key in hanging)
