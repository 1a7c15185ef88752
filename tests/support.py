"""Helpers shared by the tests: fixture files, signing, small HTTP servers."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from werkzeug.serving import make_server

from inbox.providers.stripe import sign

REPO = Path(__file__).resolve().parents[1]
# The test data lives in the repository, so a clone anywhere passes its own tests:
# tests/fixtures/ (README.md: where each file came from) holds the signature vectors and the
# Stripe sources; the nine Stripe events themselves are the package's copy (one copy, the
# one `inbox send-test-event` ships).
FIXTURES = REPO / "tests" / "fixtures"
STRIPE_EVENTS = REPO / "inbox" / "fixtures" / "stripe"
TEST_SECRET = "whsec_test_secret_for_the_inbox_tests"


def stripe_event_files() -> list[Path]:
    """The nine Stripe event documents of the fixture story, sorted by file name."""
    files = sorted(STRIPE_EVENTS.glob("*.json"))
    assert len(files) == 9, f"expected 9 Stripe fixture events in {STRIPE_EVENTS}"
    return files


def signature_cases(name: str) -> dict[str, Any]:
    """One file of tests/fixtures/signatures/ (the vectors' format: tests/fixtures/README.md)."""
    return json.loads((FIXTURES / "signatures" / name).read_text(encoding="utf-8"))


def signed_headers(body: bytes, timestamp: int, secret: str = TEST_SECRET) -> dict[str, str]:
    return {"Stripe-Signature": sign(body, secret, timestamp), "Content-Type": "application/json"}


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(
    condition: Callable[[], Any], what: str = "condition", timeout: float = 30.0,
    interval: float = 0.05,
) -> Any:
    """Poll until `condition()` is truthy and return it; generous deadlines, no timing
    assertions."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@contextmanager
def serve_wsgi(app: Any, ssl_context: Any = None) -> Iterator[str]:
    """Serve a WSGI app on a loopback port with threads (over TLS with an
    `ssl.SSLContext`); yield its base URL (https://localhost:PORT then)."""
    server = make_server("127.0.0.1", 0, app, threaded=True, ssl_context=ssl_context)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield (f"https://localhost:{server.server_port}" if ssl_context
               else f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class SocketServer:
    """A bare TCP server on a loopback port, for answers no HTTP library would give: it
    accepts in a thread, hands each connection to `serve` (a subclass's) in a thread of its
    own, and counts connections. `close` stops accepting and waits for the serving threads
    (each ends when its client hangs up)."""

    def __init__(self) -> None:
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._start(self._accept)

    def serve(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.listener.close()
        for thread in self._threads[1:]:
            thread.join(timeout=10)

    def _start(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            self._start(self.serve, conn)


def read_http_request(conn: socket.socket, buffer: bytes = b"") -> bytes | None:
    """Read one request (headers and its Content-Length body) from `conn`, starting with
    `buffer` (bytes read before); the bytes read past it, or None if the client hung up."""
    while b"\r\n\r\n" not in buffer:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    while len(rest) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        rest += chunk
    return rest[length:]
