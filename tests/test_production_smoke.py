"""Deployed exactly as shipped: the product as a Heroku-style platform runs it.

A venv with nothing but `pip install -r requirements.txt` (tests/prod_venv.py); from the
repository root, with only PORT, DATABASE_URL, STRIPE_WEBHOOK_SECRET and INBOX_ROUTES (and
a minimal PATH and HOME) in the environment, each Procfile line as written: `release`
migrates a fresh database, `web`, `worker` and `relay` start; a signed Stripe event is
stored (200), processed by the example handlers (handlers/billing.py, whose customer the
test seeds as `inbox dev` would: `inbox migrate` never seeds) and its receipt email
delivered to a real SMTP server; SIGTERM to each process group (as a dyno manager sends it
on a restart) stops each with exit code 0; nothing printed a traceback or a logging error.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from inbox.cli.dev import procfile_commands
from inbox.cli.send_test_event import fresh_event, new_event_id
from inbox.fixtures import stripe_event_bytes
from inbox.providers.stripe import sign
from tests.prod_venv import installed, lock_pins, pip_check, production_venv
from tests.support import REPO, free_port, wait_for
from tests.test_transports_smtp import smtp_server

pytestmark = pytest.mark.slow

SECRET = "whsec_production_smoke_test_secret"
CUSTOMER_EMAIL = "jenny@example.com"  # handlers/seeds/0001_demo_customer.sql
BOOT_DEADLINE_SECONDS = 60
DELIVERY_DEADLINE_SECONDS = 60
STOP_DEADLINE_SECONDS = 30
LOG_FAILURES = ("Traceback", "Logging error", "CRITICAL")


@pytest.fixture(scope="module")
def prod_venv() -> Path:
    return production_venv()


@pytest.fixture
def fresh_database(pg_cluster) -> Iterator[str]:
    """An empty database (not the migrated template): the release line migrates it."""
    name = f"smoke_{os.getpid()}"
    admin = pg_cluster.url(database="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    yield pg_cluster.url(database=name)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


def dyno_env(venv: Path, home: Path, **config: str) -> dict[str, str]:
    """What a dyno's command sees: the config vars and a minimal PATH and HOME."""
    home.mkdir(exist_ok=True)
    return {"PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home),
            **config}


def start(line: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    """A Procfile line as a dyno runs it: through bash, from the repository root, in its
    own process group (the dyno)."""
    with log.open("wb") as out:
        return subprocess.Popen(["bash", "-c", line], cwd=REPO, env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)


def stop(process: subprocess.Popen) -> int:
    """SIGTERM to the whole process group, as a dyno manager sends it; the exit code."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
    try:
        return process.wait(timeout=STOP_DEADLINE_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        return -signal.SIGKILL


def ready(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/readyz", timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


def post_event(base: str, body: bytes) -> tuple[int, dict]:
    headers = {"Stripe-Signature": sign(body, SECRET, int(time.time())),
               "Content-Type": "application/json"}
    request = urllib.request.Request(f"{base}/webhooks/stripe", data=body, method="POST",
                                     headers=headers)
    with urllib.request.urlopen(request, timeout=30) as answer:
        return answer.status, json.loads(answer.read())


def seed_demo_customer(url: str) -> None:
    """Apply handlers/seeds/*.sql as `inbox dev` does (the release line never seeds)."""
    with psycopg.connect(url, autocommit=True) as conn:
        for path in sorted((REPO / "handlers" / "seeds").glob("*.sql")):
            conn.execute(path.read_text())


def test_the_venv_holds_exactly_the_lock(prod_venv):
    pins = lock_pins()
    holds = installed(prod_venv)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert holds.pop(project["name"]) == project["version"]
    assert holds == pins  # nothing unpinned, nothing missing
    assert pip_check(prod_venv) == "No broken requirements found."


def test_procfile_lines_receive_process_and_deliver(prod_venv, fresh_database, tmp_path):
    lines = procfile_commands(REPO / "Procfile")
    assert set(lines) >= {"web", "worker", "relay", "release"}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    logs = {name: tmp_path / f"{name}.log" for name in ("release", "web", "worker", "relay")}
    with smtp_server() as (mailbox, smtp_port):
        env = dyno_env(prod_venv, tmp_path / "home", PORT=str(port),
                       DATABASE_URL=fresh_database, STRIPE_WEBHOOK_SECRET=SECRET,
                       INBOX_ROUTES=f"email.*=smtp://127.0.0.1:{smtp_port},*=log:")

        release = start(lines["release"], env, logs["release"])
        assert release.wait(timeout=120) == 0, logs["release"].read_text()
        assert "0001_inbox_outbox.sql" in logs["release"].read_text()
        seed_demo_customer(fresh_database)
        # The installed package (the console script imports it, not the checkout) carries
        # Stripe's webhook addresses for the allowlist.
        shown = subprocess.run(["bash", "-c", "inbox stripe-ips"], cwd=REPO, env=env,
                               capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0, shown.stderr
        assert "the copy this release ships" in shown.stdout and "3.18.12.63" in shown.stdout

        processes = {name: start(lines[name], env, logs[name])
                     for name in ("web", "worker", "relay")}
        codes: dict[str, int] = {}
        try:
            deadline = time.monotonic() + BOOT_DEADLINE_SECONDS
            while not ready(base):
                for name, process in processes.items():
                    assert process.poll() is None, f"{name} exited:\n{logs[name].read_text()}"
                assert time.monotonic() < deadline, f"web not ready:\n{logs['web'].read_text()}"
                time.sleep(0.2)

            event_id = new_event_id()
            body = fresh_event(stripe_event_bytes("invoice.paid"), event_id=event_id,
                               created=int(time.time()))
            assert post_event(base, body) == (200, {"received": True, "duplicate": False})

            wait_for(lambda: mailbox.received, "the receipt email",
                     timeout=DELIVERY_DEADLINE_SECONDS)
            (_, recipients, email), = mailbox.received
            assert recipients == [CUSTOMER_EMAIL]
            assert email["Subject"].startswith("Receipt for invoice")
            with psycopg.connect(fresh_database, autocommit=True) as conn:
                status = conn.execute("SELECT status FROM inbox WHERE event_id = %s",
                                      [event_id]).fetchone()
                assert status == ("processed",)
                wait_for(lambda: conn.execute(
                    "SELECT status FROM outbox WHERE topic = 'email.receipt'").fetchone()
                    == ("sent",), "the message marked sent")
        finally:
            for name, process in processes.items():
                codes[name] = stop(process)
    output = {name: log.read_text(errors="replace") for name, log in logs.items()}
    assert codes == {"web": 0, "worker": 0, "relay": 0}, output
    for name, text in output.items():
        for failure in LOG_FAILURES:
            assert failure not in text, f"{name} printed {failure!r}:\n{text}"
