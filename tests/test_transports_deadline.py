"""Every send has a total time limit: a destination that trickles its answer a byte at a
time, each byte well within the read timeout, is cut at the limit (real sockets and servers,
no database)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading

import pytest

from inbox.relay.routes import parse_routes
from inbox.relay.store import OutboxMessage
from inbox.relay.transports.deadline import Cutter, Watchdog
from inbox.relay.transports.http import HttpTransport
from inbox.relay.transports.smtp import SmtpTransport
from tests.support import SocketServer, read_http_request

BYTE_EVERY_SECONDS = 0.3  # well within the 1 s read timeout: no single silence is too long
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
# ~10 s at one byte every 0.3 s: a status line and headers that never seem to end.
SLOW = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"z" * 12 + b"\r\nContent-Length: 2\r\n\r\nok"
# Interim answers, each whole, that http.client reads and skips while it waits for the real one.
CONTINUES = [b"HTTP/1.1 100 Continue\r\n\r\n"] * 40
GREETING = b"220 slow.example ESMTP Postfix, one byte at a time\r\n"


class TricklingServer(SocketServer):
    """A socket server that answers each request, in turn, as its `script` says: "ok" at
    once, "slow" one byte every BYTE_EVERY_SECONDS, "continue" one CONTINUES answer every
    BYTE_EVERY_SECONDS. With `greet`, it trickles that as soon as a connection opens
    instead (an SMTP greeting). Records how many pieces of each slow answer went out before
    the client hung up (None: all of them)."""

    def __init__(self, script: list[str], *, greet: bytes | None = None) -> None:
        self.script = list(script)
        self.greet = greet
        self.requests = 0
        self.slow_ends: list[int | None] = []
        super().__init__()

    def serve(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            if self.greet is not None:
                self._trickle(conn, [bytes([b]) for b in self.greet])
                return
            while self.script:
                if read_http_request(conn) is None:
                    return
                self.requests += 1
                answer = self.script.pop(0)
                if answer == "ok":
                    conn.sendall(OK)
                else:
                    self._trickle(conn, CONTINUES if answer == "continue"
                                  else [bytes([b]) for b in SLOW])
                    return

    def _trickle(self, conn: socket.socket, pieces: list[bytes]) -> None:
        conn.settimeout(BYTE_EVERY_SECONDS)
        for sent, piece in enumerate(pieces):
            try:
                hung_up = conn.recv(1) == b""
            except TimeoutError:
                hung_up = False
            except OSError:
                hung_up = True
            if hung_up:
                self.slow_ends.append(sent)
                return
            conn.sendall(piece)
        self.slow_ends.append(None)


def message(payload: object) -> OutboxMessage:
    return OutboxMessage(1, "crm.contact", json.dumps(payload), "evt_1:crm", 1)


@pytest.fixture
def http_transport():
    transport = HttpTransport(connect_timeout_seconds=1, read_timeout_seconds=1)
    yield transport
    transport.close()


def test_a_trickled_answer_is_cut_at_the_limit_and_its_connection_not_reused(http_transport):
    server = TricklingServer(["slow", "ok"])
    route = parse_routes(f"*=http://127.0.0.1:{server.port}/hook").routes[0]
    cut = http_transport.deliver(message({"n": 1}), route)
    after = http_transport.deliver(message({"n": 2}), route)  # the same origin, answering
    server.close()
    assert cut.status == "retry"
    assert "SendDeadline: no complete answer within 2 s" in cut.error
    [bytes_sent] = server.slow_ends
    assert bytes_sent is not None and bytes_sent < len(SLOW)  # we hung up mid-answer
    assert after.status == "sent"
    assert (server.connections, server.requests) == (2, 2)


def test_a_kept_connection_that_keeps_answering_100_continue_is_cut_and_not_sent_again(
    http_transport,
):
    server = TricklingServer(["ok", "continue", "ok"])
    route = parse_routes(f"*=http://127.0.0.1:{server.port}/hook").routes[0]
    results = [http_transport.deliver(message({"n": n}), route) for n in range(3)]
    server.close()
    assert [r.status for r in results] == ["sent", "retry", "sent"]
    assert "SendDeadline" in results[1].error
    # Cut between two interim answers, the connection ends before an answer starts, as when
    # a server closed a kept connection: that must not send the POST again.
    assert (server.connections, server.requests) == (2, 3)


def test_an_smtp_greeting_trickled_a_byte_at_a_time_is_cut_at_the_limit():
    server = TricklingServer([], greet=GREETING)
    route = parse_routes(f"*=smtp://127.0.0.1:{server.port}").routes[0]
    transport = SmtpTransport(timeout_seconds=1)
    email = {"to": "ada@example.com", "subject": "Receipt", "text": "Thanks"}
    result = transport.deliver(message(email), route)
    transport.close()
    server.close()
    assert result.status == "retry"
    assert "SendDeadline: no complete answer within 1 s" in result.error
    [bytes_sent] = server.slow_ends
    assert bytes_sent is not None and bytes_sent < len(GREETING)


def test_the_watchdog_cuts_a_blocked_read_past_its_deadline_only():
    watchdog = Watchdog()
    left, right = socket.socketpair()
    with left, right:
        late = watchdog.start(0.5)
        cutter = Cutter(left)
        watchdog.guard(late, cutter)
        assert left.recv(1) == b""  # blocked until the watchdog shut the socket down
        assert watchdog.stop(late) is True
        cutter.close()

        punctual = watchdog.start(60)
        watchdog.guard(punctual, Cutter(right))
        assert watchdog.stop(punctual) is False
        punctual.cutter.close()
    watchdog.close()


def test_a_connection_guarded_after_its_deadline_is_cut_at_once():
    watchdog = Watchdog()
    watch = watchdog.start(0)  # already late: marked by the watchdog's next tick
    left, right = socket.socketpair()
    with left, right:
        while not watch.expired:
            threading.Event().wait(0.05)
        cutter = Cutter(left)
        watchdog.guard(watch, cutter)
        assert left.recv(1) == b""
        assert watchdog.stop(watch) is True
        cutter.close()
    watchdog.close()
