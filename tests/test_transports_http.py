"""The HTTP transport on its own: outcomes, Retry-After, signatures, timeouts (no database)."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import time
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
import trustme
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from werkzeug.wrappers import Request, Response

from inbox.relay.routes import parse_routes
from inbox.relay.store import OutboxMessage
from inbox.relay.transports.http import (
    HttpTransport,
    classify,
    parse_retry_after,
    signature_headers,
)
from tests.support import SocketServer, read_http_request, serve_wsgi

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NOW = 1_700_000_000.0


def message(payload: object = None, key: str = "evt_1:email") -> OutboxMessage:
    return OutboxMessage(1, "crm.contact", json.dumps(payload or {"a": 1}), key, 1)


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_any_2xx_is_sent(status):
    assert classify(status, "", None, now=NOW).status == "sent"


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504, 599, 301, 307])
def test_transient_answers_are_retried(status):
    result = classify(status, "busy", None, now=NOW)
    assert result.status == "retry"
    assert f"HTTP {status}: busy" in result.error


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 410, 413, 422])
def test_other_4xx_are_dead_with_the_answer(status):
    result = classify(status, '{"error": "no such customer"}', None, now=NOW)
    assert result.status == "dead"
    assert f"HTTP {status}" in result.error and "no such customer" in result.error


def test_410_says_the_endpoint_is_gone():
    assert "endpoint gone" in classify(410, "", None, now=NOW).error


def test_retry_after_in_seconds_or_as_an_http_date():
    assert parse_retry_after("120", now=NOW) == 120.0
    date = format_datetime(datetime.fromtimestamp(NOW + 90, UTC), usegmt=True)
    assert parse_retry_after(date, now=NOW) == pytest.approx(90.0)
    past = format_datetime(datetime.fromtimestamp(NOW - 90, UTC), usegmt=True)
    assert parse_retry_after(past, now=NOW) == 0.0
    for unusable in (None, "", "soon", "-5", "1.5e3"):
        assert parse_retry_after(unusable, now=NOW) is None
    assert classify(503, "", "7", now=NOW).retry_after_seconds == 7.0


def test_signature_verifies_with_the_standardwebhooks_package():
    body = b'{"to":"a@example.com","amount":1200}'
    table = parse_routes("crm.*=https://crm.example/", f"crm.*={SECRET}")
    now = int(time.time())
    headers = dict(signature_headers("msg_1", now, body, table.routes[0].secrets))
    assert headers["webhook-id"] == "msg_1"
    assert headers["webhook-timestamp"] == str(now)
    assert Webhook(SECRET).verify(body, headers) == json.loads(body)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body + b" ", headers)
    other = "whsec_" + "A" * 32
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(body, headers)


def test_rotation_signs_with_every_secret_and_either_verifies():
    other = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"
    table = parse_routes("crm.*=https://crm.example/", f"crm.*={SECRET},crm.*={other}")
    body = b"{}"
    headers = dict(signature_headers("m", int(time.time()), body, table.routes[0].secrets))
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(SECRET).verify(body, headers)
    Webhook(other).verify(body, headers)


def test_posts_the_payload_with_idempotency_key_over_a_real_socket():
    seen = []

    @Request.application
    def app(request: Request) -> Response:
        seen.append((request.method, dict(request.headers), request.get_data()))
        return Response("nope", status=422)

    transport = HttpTransport(connect_timeout_seconds=2, read_timeout_seconds=2)
    with serve_wsgi(app) as base:
        route = parse_routes(f"*={base}/hook?x=1").routes[0]
        result = transport.deliver(message({"n": 1}), route)
    transport.close()
    assert result.status == "dead" and "HTTP 422: nope" in result.error
    method, headers, body = seen[0]
    assert method == "POST"
    assert headers["Idempotency-Key"] == "evt_1:email"
    assert headers["Content-Type"] == "application/json"
    assert "Webhook-Signature" not in headers
    assert json.loads(body) == {"n": 1}


def test_read_timeout_and_refused_connection_are_retried():
    @Request.application
    def slow(request: Request) -> Response:
        time.sleep(1.5)
        return Response("late")

    transport = HttpTransport(connect_timeout_seconds=1, read_timeout_seconds=0.3)
    with serve_wsgi(slow) as base:
        result = transport.deliver(message(), parse_routes(f"*={base}/").routes[0])
    assert result.status == "retry" and "Timeout" in result.error

    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    result = transport.deliver(message(), parse_routes(f"*=http://127.0.0.1:{port}/").routes[0])
    assert result.status == "retry" and "refused" in result.error.lower()
    transport.close()


def test_a_key_that_cannot_be_a_header_is_dead():
    transport = HttpTransport(connect_timeout_seconds=1, read_timeout_seconds=1)
    route = parse_routes("*=http://127.0.0.1:9/").routes[0]
    assert transport.deliver(message(key="a\r\nX-Evil: 1"), route).status == "dead"
    assert transport.deliver(message(key="clé"), route).status == "dead"


class RawServer(SocketServer):
    """A bare HTTP/1.1 server on a socket: answers 200 with keep-alive, and closes each
    connection after `answers_per_connection` answers without saying so (as a server that
    drops idle connections does). Counts connections and requests."""

    def __init__(self, answers_per_connection: int = 1000, answer_body: bytes = b"ok") -> None:
        self.answers_per_connection = answers_per_connection
        self.answer = (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(answer_body)
                       + answer_body)
        self.requests = 0
        super().__init__()
        self.url = f"http://127.0.0.1:{self.port}/hook"

    def serve(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):  # the client may hang up on a long answer
            buffer: bytes | None = b""
            for _ in range(self.answers_per_connection):
                buffer = read_http_request(conn, buffer or b"")
                if buffer is None:
                    return
                self.requests += 1
                conn.sendall(self.answer)


def test_one_connection_is_kept_alive_across_deliveries():
    server = RawServer()
    transport = HttpTransport(connect_timeout_seconds=2, read_timeout_seconds=2)
    route = parse_routes(f"*={server.url}").routes[0]
    results = [transport.deliver(message(), route).status for _ in range(5)]
    transport.close()
    server.close()
    assert results == ["sent"] * 5
    assert (server.connections, server.requests) == (1, 5)


def test_a_connection_the_server_dropped_is_replaced_without_a_failed_attempt():
    server = RawServer(answers_per_connection=1)
    transport = HttpTransport(connect_timeout_seconds=2, read_timeout_seconds=2)
    route = parse_routes(f"*={server.url}").routes[0]
    results = []
    for _ in range(3):
        results.append(transport.deliver(message(), route).status)
        time.sleep(0.05)  # the server's close reaches us before the next request
    transport.close()
    server.close()
    assert results == ["sent"] * 3
    assert (server.connections, server.requests) == (3, 3)


def test_a_long_answer_is_cut_and_its_connection_not_reused():
    server = RawServer(answer_body=b"x" * (200 * 1024))
    transport = HttpTransport(connect_timeout_seconds=2, read_timeout_seconds=2)
    route = parse_routes(f"*={server.url}").routes[0]
    assert [transport.deliver(message(), route).status for _ in range(2)] == ["sent"] * 2
    transport.close()
    server.close()
    assert (server.connections, server.requests) == (2, 2)


@pytest.fixture(scope="module")
def tls() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A test CA's server context for `localhost`, and a client context trusting that CA
    (host names checked, as the transport's default context does)."""
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


def test_posts_over_https_with_the_certificate_checked(tls):
    server_context, client_context = tls
    seen = []

    @Request.application
    def app(request: Request) -> Response:
        seen.append((request.headers["Idempotency-Key"], request.get_data()))
        return Response("ok")

    transport = HttpTransport(connect_timeout_seconds=2, read_timeout_seconds=2,
                              tls_context=client_context)
    with serve_wsgi(app, ssl_context=server_context) as base:
        route = parse_routes(f"*={base}/hook").routes[0]
        results = [transport.deliver(message({"n": n}), route) for n in range(3)]
        # The same server under a name its certificate does not carry, and a client that
        # does not trust the test CA: refused before any request is sent, and retried.
        wrong_name = parse_routes(f"*={base.replace('localhost', '127.0.0.1')}/x").routes[0]
        mismatch = transport.deliver(message(), wrong_name)
        untrusted = HttpTransport(connect_timeout_seconds=2, read_timeout_seconds=2)
        unknown_ca = untrusted.deliver(message(), route)
        untrusted.close()
    transport.close()
    assert [r.status for r in results] == ["sent"] * 3
    assert [json.loads(body) for _, body in seen] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert mismatch.status == "retry" and "CERTIFICATE_VERIFY_FAILED" in mismatch.error
    assert unknown_ca.status == "retry" and "CERTIFICATE_VERIFY_FAILED" in unknown_ca.error
    assert len(seen) == 3
