"""The Procfile's `web` line, run as written by gunicorn, takes a real signed event, and
logs each malformed request it rejects as one readable line."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from inbox.cli.dev import procfile_commands
from tests.support import (
    REPO,
    TEST_SECRET,
    free_port,
    signed_headers,
    stripe_event_files,
    wait_for,
)

BOOT_DEADLINE_SECONDS = 30


def wait_until_healthy(base: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + BOOT_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        assert process.poll() is None, "gunicorn exited during start-up"
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):  # a busy machine
            time.sleep(0.1)
    raise AssertionError("gunicorn did not become healthy")


def post(base: str, body: bytes) -> tuple[int, str]:
    """POST a signed Stripe delivery; the status and the answer's text."""
    request = urllib.request.Request(f"{base}/webhooks/stripe", data=body, method="POST",
                                     headers=signed_headers(body, int(time.time())))
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, response.read().decode()


def web_connections(db, application_name: str) -> int:
    """Connections to the test's database whose application_name is LIKE the pattern."""
    return db.execute(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND application_name LIKE %s",
        [application_name],
    ).fetchone()[0]


def test_procfile_web_line_serves_the_receiver(database_url, db):
    port = free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "DATABASE_URL": database_url,
        "STRIPE_WEBHOOK_SECRET": f"whsec_old_one,{TEST_SECRET}",
        "WEB_CONCURRENCY": "2",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    web = procfile_commands(REPO / "Procfile")["web"]
    process = subprocess.Popen(web, shell=True, cwd=REPO, env=env, start_new_session=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base, process)
        body = stripe_event_files()[0].read_bytes()
        request = urllib.request.Request(
            f"{base}/webhooks/stripe", data=body, method="POST",
            headers=signed_headers(body, int(time.time())),
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        # A burst of concurrent deliveries (a retried one among them): each answered after
        # its own commit, through the group commit of the real server.
        burst = [body.replace(b'"evt_', f'"evt_burst{n}_'.encode(), 1) for n in range(40)]
        with concurrent.futures.ThreadPoolExecutor(20) as threads:
            answers = list(threads.map(lambda one: post(base, one), [*burst, burst[0]]))
        assert [status for status, _ in answers] == [200] * 41
        assert sum(json.loads(text)["duplicate"] for _, text in answers) == 1
        with urllib.request.urlopen(f"{base}/readyz", timeout=10) as response:
            assert response.status == 200
        wait_for(lambda: web_connections(db, "inbox-web-wakeup"), "the wake-up NOTIFY sender")
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        output = process.communicate(timeout=30)[0].decode(errors="replace")
    assert db.execute("SELECT count(*) FROM inbox").fetchone()[0] == 41
    # Stopping gunicorn leaves nothing behind: no pool connection, no notifier connection.
    wait_for(lambda: web_connections(db, "inbox-web%") == 0, "the web connections to close")
    # The request log line reached stderr, in the default (text) format.
    assert " INFO inbox.web request provider=stripe event_id=evt_" in output
    assert " outcome=stored status=" not in output and " outcome=stored ms=" in output


# Requests gunicorn's parser refuses before the app sees them (one connection each), and
# the status line it answers with.
MALFORMED = [
    (b"GARBAGE\r\n\r\n", b"400"),
    (b"GET / HTTP/9.9\r\n\r\n", b"400"),
    (b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", b"400"),
    (b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", b"400"),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", b"414"),
    (b"GET / HTTP/1.1\r\nX: " + b"b" * 10000 + b"\r\n\r\n", b"431"),
]


def send_raw(port: int, request: bytes) -> bytes:
    """Send bytes on a fresh connection; the first line of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request)
        answer = b""
        while b"\r\n" not in answer:
            chunk = conn.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer.split(b"\r\n", 1)[0]


def test_malformed_requests_are_one_log_line_each(database_url):
    port = free_port()
    env = {**os.environ, "PORT": str(port), "DATABASE_URL": database_url,
           "STRIPE_WEBHOOK_SECRET": TEST_SECRET, "WEB_CONCURRENCY": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    web = procfile_commands(REPO / "Procfile")["web"]
    # bash, as a dyno runs a Procfile line: it execs the one command, so the exit code is
    # gunicorn's (dash stays as gunicorn's parent and dies of the SIGTERM itself).
    process = subprocess.Popen(["bash", "-c", web], cwd=REPO, env=env, start_new_session=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}", process)
        for request, status in MALFORMED:
            assert send_raw(port, request).split(b" ")[1] == status, request[:40]
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        output = process.communicate(timeout=30)[0].decode(errors="replace")
    assert process.returncode == 0, output
    rejected = [line for line in output.splitlines() if "Invalid request from ip=" in line]
    assert len(rejected) == len(MALFORMED), output
    assert "Traceback" not in output and "Logging error" not in output, output
    assert "Worker exiting" in output and "Shutting down: Master" in output
