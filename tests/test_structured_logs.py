"""Structured log lines (inbox/logs.py, INBOX_LOG_FORMAT): the worker's line per attempt,
the relay's per delivery, in text and JSON; the web's request line as JSON from the
Procfile's web line; and a scan of every process's output over a run with a known
secret, a route password and a payload marker, finding none of them."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import pytest
from werkzeug.wrappers import Request, Response

from inbox.cli.dev import procfile_commands
from inbox.cli.send_test_event import fresh_event
from inbox.config import ConfigError, Settings
from inbox.fixtures import stripe_event_bytes
from inbox.logs import Lines, formatter, log_lines
from inbox.worker.loop import Worker
from inbox.worker.registry import Registry
from tests.support import REPO, TEST_SECRET, free_port, signed_headers, wait_for
from tests.test_relay import add_message, count_status, relay_settings, running_relay, sink
from tests.test_transports_smtp import PASSWORD, USER, smtp_server
from tests.worker_support import drain, insert_events

MARKER = "PAYLOAD-MARKER-7f3a9c"
TEXT_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING|ERROR) (\S+) ")


@contextmanager
def captured(log_format: str) -> Iterator[tuple[io.StringIO, list[logging.LogRecord]]]:
    """What the `inbox` loggers write in `log_format` (through our formatter), and the
    records (to count the logging calls)."""
    out = io.StringIO()
    records: list[logging.LogRecord] = []

    class Capture(logging.StreamHandler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)
            super().emit(record)

    handler = Capture(out)
    handler.setFormatter(formatter(log_format))
    logger = logging.getLogger("inbox")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield out, records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def parse(log_format: str, text: str, event: str) -> list[dict[str, object]]:
    """The `event` lines of `text` as dicts (text lines: key=value parsed back)."""
    rows = []
    for line in text.splitlines():
        if log_format == "json":
            row = json.loads(line)  # every line is a whole JSON object
            assert {"ts", "level", "logger"} <= set(row), line
            if row.get("event") == event:
                rows.append(row)
            continue
        match = TEXT_PREFIX.match(line)
        assert match, line  # every line has its own prefix
        body = line[match.end():]
        if not body.startswith(event + " "):
            continue
        row = {"level": match[1], "logger": match[2]}
        for key, value in re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)', body):
            row[key] = json.loads(value) if value.startswith('"') else value
        rows.append(row)
    return rows


# -- the format itself ------------------------------------------------------------------------

def test_log_format_setting():
    assert Settings.from_env({}).log_format == "text"
    assert Settings.from_env({"INBOX_LOG_FORMAT": "JSON"}).log_format == "json"
    with pytest.raises(ConfigError, match="INBOX_LOG_FORMAT"):
        Settings.from_env({"INBOX_LOG_FORMAT": "xml"})


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_batch_is_one_record_of_complete_lines(log_format):
    rows = [{"n": 1, "error": 'a "quoted" message\nover two lines'}, {"n": 2, "skip": None}]
    with captured(log_format) as (out, records):
        log_lines(logging.getLogger("inbox.test"), logging.INFO, "thing", rows)
        logging.getLogger("inbox.test").warning("plain %s", "record")
    assert len(records) == 2
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    parsed = parse(log_format, out.getvalue(), "thing")
    assert [row["n"] for row in parsed] in ([1, 2], ["1", "2"])
    assert parsed[0]["error"] == 'a "quoted" message\nover two lines'
    assert "skip" not in parsed[1]
    if log_format == "json":
        assert json.loads(lines[2])["message"] == "plain record"
        assert json.loads(lines[2])["level"] == "WARNING"
    else:
        assert lines[2].endswith(" WARNING inbox.test plain record")
    assert str(records[0].msg).startswith("thing n=1 error=")  # for other handlers
    assert isinstance(records[0].msg, Lines)


# -- worker -----------------------------------------------------------------------------------

@pytest.mark.parametrize("log_format", ["text", "json"])
def test_the_worker_logs_one_line_per_attempt(database_url, db, log_format):
    registry = Registry()

    @registry.handler("test", "ok")
    def ok(event, tx):
        tx.outbox("test.ok", {"marker": event.payload["marker"]})

    @registry.handler("test", "boom")
    def boom(event, tx):
        raise ValueError(f"handler says no to {event.id}")

    ok_ids = insert_events(db, "ok", 5, prefix="ok", payload={"marker": MARKER})
    boom_ids = insert_events(db, "boom", 2, prefix="boom", payload={"marker": MARKER})
    insert_events(db, "unhandled", 1, prefix="none", payload={"marker": MARKER})
    settings = Settings(database_url=database_url, max_attempts=2, retry_base_seconds=0.0,
                        retry_cap_seconds=0.0)
    worker = Worker(settings, registry, name="test-worker")
    try:
        with captured(log_format) as (out, records):
            drain(worker.run_once)
    finally:
        worker.close()
    text = out.getvalue()
    assert MARKER not in text
    rows = parse(log_format, text, "attempt")
    assert len(rows) == 5 + 2 * 2 + 1  # two attempts of each failing event
    assert all(row["logger"] == "inbox.worker.loop" for row in rows)
    by_event: dict[str, list[dict]] = {}
    for row in rows:
        assert {"provider", "event_id", "type", "inbox_id", "attempt", "outcome", "ms"} <= set(row)
        by_event.setdefault(str(row["event_id"]), []).append(row)
    for event_id in ok_ids:
        [row] = by_event[event_id]
        assert (row["outcome"], row["level"], str(row["attempt"])) == ("processed", "INFO", "1")
        assert row["type"] == "ok" and row["provider"] == "test" and float(row["ms"]) >= 0
        assert "error" not in row
    for event_id in boom_ids:
        first, second = by_event[event_id]
        assert (first["outcome"], first["level"]) == ("retry", "WARNING")
        assert (second["outcome"], second["level"], str(second["attempt"])) == (
            "dead", "ERROR", "2")
        assert first["error_class"] == second["error_class"] == "ValueError"
        assert first["error"] == f"handler says no to {event_id}"
    assert by_event["none_1"][0]["outcome"] == "ignored"
    # One logging call per level of a batch, not one per event: the first claim's batch
    # (5 processed + 1 ignored at INFO, 2 retries at WARNING) is two records.
    assert len(records) <= 4 < len(rows)


# -- relay ------------------------------------------------------------------------------------

@pytest.mark.parametrize("log_format", ["text", "json"])
def test_the_relay_logs_one_line_per_delivery(database_url, db, log_format):
    def answer(request: Request, n: int) -> Response:
        return Response("hiccup", status=503) if n == 1 else Response("ok")

    with sink(answer) as (_endpoint, url), captured(log_format) as (out, _):
        port = url.split(":")[2].split("/")[0]
        add_message(db, "crm.contact", {"marker": MARKER}, "k1")
        add_message(db, "nowhere", {"marker": MARKER}, "k2")
        with running_relay(relay_settings(database_url, f"crm.*={url}/T0KEN")):
            wait_for(lambda: count_status(db, "sent") == 1, "the retried message to be sent")
            wait_for(lambda: count_status(db, "dead") == 1, "the unrouted message")
    text = out.getvalue()
    assert MARKER not in text and "T0KEN" not in text and "/hook" not in text
    rows = {(str(r["message_id"]), str(r["attempt"])): r for r in parse(log_format, text,
                                                                          "delivery")}
    assert all(row["logger"] == "inbox.relay.loop" for row in rows.values())
    crm = [row for row in rows.values() if row["topic"] == "crm.contact"]
    retry, sent = sorted(crm, key=lambda row: int(row["attempt"]))
    assert retry["destination"] == sent["destination"] == f"http://127.0.0.1:{port}"
    assert (retry["outcome"], str(retry["http_status"]), retry["level"]) == ("retry", "503",
                                                                             "INFO")
    assert "HTTP 503" in retry["error"] and "retry_in_s" in retry
    assert (sent["outcome"], str(sent["http_status"])) == ("sent", "200")
    assert float(sent["ms"]) >= 0 and "error" not in sent
    [unrouted] = [row for row in rows.values() if row["topic"] == "nowhere"]
    assert (unrouted["outcome"], unrouted["level"]) == ("dead", "WARNING")
    assert "no route" in unrouted["error"]


# -- real processes: the web's JSON line, and the scan for secrets ---------------------------

HANDLERS = textwrap.dedent(
    """
    from inbox import handler


    @handler("stripe", "invoice.paid")
    def paid(event, tx):
        note = event.payload["data"]["object"]["description"]
        tx.outbox("email.receipt", {"to": "ada@example.com", "subject": "Receipt " + note,
                                    "text": note})
        tx.outbox("crm.note", {"note": note})
        tx.outbox("down.ping", {"note": note})


    @handler("stripe", "invoice.payment_failed")
    def failed(event, tx):
        raise ValueError("the handler's own words")
    """
)
GUNICORN_LINE = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\] \[\d+\] \[[A-Z]+\] ")
ROUTE_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
HOOK_TOKEN = "B0SECRETHOOKPATH"


def signed_event(event_type: str, event_id: str) -> bytes:
    body = json.loads(fresh_event(stripe_event_bytes(event_type), event_id=event_id,
                                  created=int(time.time())))
    body["data"]["object"]["description"] = f"note {MARKER}"
    return json.dumps(body).encode()


def post(base: str, body: bytes) -> tuple[int, str]:
    headers = signed_headers(body, int(time.time()))
    request = urllib.request.Request(f"{base}/webhooks/stripe", data=body, method="POST",
                                     headers=headers)
    with urllib.request.urlopen(request, timeout=30) as answer:
        return answer.status, headers["Stripe-Signature"]


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
def test_no_secret_signature_or_payload_in_any_log_line(database_url, db, tmp_path):
    (tmp_path / "scan_handlers.py").write_text(HANDLERS)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    closed = free_port()  # nothing listens: the down.* route's deliveries fail
    calls: list[int] = []

    def answer(request: Request, n: int) -> Response:
        calls.append(n)
        return Response("busy", status=500) if n == 1 else Response("ok")

    logs = {name: tmp_path / f"{name}.log" for name in ("web", "worker", "relay")}
    with smtp_server(auth=True) as (mailbox, smtp_port), sink(answer) as (_, hook):
        routes = (f"email.*=smtp://{USER}:{quote(PASSWORD, safe='')}@127.0.0.1:{smtp_port},"
                  f"down.*=http://127.0.0.1:{closed}/hook/{HOOK_TOKEN},"
                  f"*={hook}/{HOOK_TOKEN}")
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}",
            "PORT": str(port), "DATABASE_URL": database_url, "WEB_CONCURRENCY": "1",
            "STRIPE_WEBHOOK_SECRET": TEST_SECRET, "INBOX_HANDLERS": "scan_handlers",
            "INBOX_ROUTES": routes, "INBOX_ROUTE_SECRETS": f"*={ROUTE_SECRET}",
            "INBOX_LOG_FORMAT": "json", "INBOX_MAX_ATTEMPTS": "3",
            "INBOX_RETRY_BASE_SECONDS": "0.05", "INBOX_RETRY_CAP_SECONDS": "0.2",
            "INBOX_POLL_INTERVAL_SECONDS": "0.2", "INBOX_LOG_METRICS_SECONDS": "1",
        }
        lines = procfile_commands(REPO / "Procfile")
        processes = {}
        for name in logs:
            with logs[name].open("wb") as out:
                processes[name] = subprocess.Popen(
                    ["bash", "-c", lines[name]], cwd=REPO, env=env, stdout=out,
                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_for(lambda: ready(base), "the web process", timeout=60)
            status, signature = post(base, signed_event("invoice.paid", "evt_scan_paid"))
            assert status == 200
            status, failed_signature = post(
                base, signed_event("invoice.payment_failed", "evt_scan_failed"))
            assert status == 200
            bad = urllib.request.Request(f"{base}/webhooks/stripe", method="POST",
                                         data=signed_event("invoice.paid", "evt_scan_bad"),
                                         headers={"Stripe-Signature": "t=1,v1=00ff"})
            with pytest.raises(urllib.error.HTTPError):
                urllib.request.urlopen(bad, timeout=30)
            wait_for(lambda: mailbox.received, "the receipt email", timeout=60)
            wait_for(lambda: db.execute(
                "SELECT count(*) FROM outbox WHERE topic IN ('crm.note', 'down.ping')"
                " AND status IN ('sent', 'dead')").fetchone()[0] == 2,
                "the crm message sent, the down one dead", timeout=60)
            wait_for(lambda: db.execute(
                "SELECT status FROM inbox WHERE event_id = 'evt_scan_failed'").fetchone()
                == ("dead",), "the failing event dead", timeout=60)
        finally:
            for process in processes.values():
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGTERM)
            codes = {name: process.wait(timeout=40) for name, process in processes.items()}
    output = {name: path.read_text(errors="replace") for name, path in logs.items()}
    assert codes == {"web": 0, "worker": 0, "relay": 0}, output
    forbidden = [TEST_SECRET, PASSWORD, quote(PASSWORD, safe=""), ROUTE_SECRET, HOOK_TOKEN,
                 signature, failed_signature, "v1=00ff", MARKER]
    for name, text in output.items():
        for secret in forbidden:
            assert secret not in text, f"{name} logged {secret!r}:\n{text}"
    # Every line that is not gunicorn's own is a JSON object with ts, level and logger.
    parsed: dict[str, list[dict]] = {}
    for name, text in output.items():
        parsed[name] = []
        for line in text.splitlines():
            if name == "web" and GUNICORN_LINE.match(line):
                continue
            row = json.loads(line)
            assert {"ts", "level", "logger"} <= set(row), line
            parsed[name].append(row)
    requests = [row for row in parsed["web"] if row.get("event") == "request"]
    assert {(row.get("event_id"), row["outcome"]) for row in requests} == {
        ("evt_scan_paid", "stored"), ("evt_scan_failed", "stored"),
        (None, "invalid_signature")}  # no id is read from a body before its signature
    assert all(row["logger"] == "inbox.web" and row["provider"] == "stripe"
               for row in requests)
    attempts = [row for row in parsed["worker"] if row.get("event") == "attempt"]
    assert {"processed", "retry", "dead"} <= {row["outcome"] for row in attempts}
    assert any(row.get("error") == "the handler's own words" for row in attempts)
    deliveries = [row for row in parsed["relay"] if row.get("event") == "delivery"]
    assert {row["topic"] for row in deliveries} >= {"email.receipt", "crm.note", "down.ping"}
    assert any(row.get("smtp_code") == "250" for row in deliveries)
    assert {f"http://127.0.0.1:{closed}", f"smtp://127.0.0.1:{smtp_port}"} <= {
        row["destination"] for row in deliveries}


def ready(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/readyz", timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False
