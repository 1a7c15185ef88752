"""Helpers of the worker tests: events in, workers run in-process or as real processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import psycopg

from tests.support import REPO

# A handler module for worker processes, written to a tmp dir and named in INBOX_HANDLERS.
# Every effect is a row in `effects` (no unique key, so a duplicate would show).
TEST_HANDLERS = textwrap.dedent(
    """
    import os
    import time

    from inbox import Permanent, handler


    @handler("test", "effect")
    def effect(event, tx):
        tx.execute("INSERT INTO effects (event_id, attempt) VALUES (%s, %s)",
                   [event.id, event.attempt])
        tx.outbox("test.effect", {"event": event.id})
        delay = event.payload.get("sleep")
        if delay:
            time.sleep(delay)


    @handler("test", "poison")
    def poison(event, tx):
        tx.execute("INSERT INTO effects (event_id, attempt) VALUES (%s, %s)",
                   [event.id, event.attempt])
        os._exit(17)


    @handler("test", "hang")
    def hang(event, tx):
        tx.execute("INSERT INTO effects (event_id, attempt) VALUES (%s, %s)",
                   [event.id, event.attempt])
        time.sleep(event.payload.get("sleep", 3600))


    @handler("test", "permanent")
    def permanent(event, tx):
        raise Permanent("never")


    @handler("test", "queue")
    def queue(event, tx):
        # No SQL: a batch of these is one transaction, its events leased until it ends.
        tx.outbox("test.queue", {"event": event.id})


    @handler("test", "stall_once")
    def stall_once(event, tx):
        # Holds its worker (and the batch it leased) on the first attempt only.
        if event.attempt == 1:
            time.sleep(3600)
    """
)

EFFECTS_TABLE = """
CREATE TABLE IF NOT EXISTS effects (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id text NOT NULL,
    attempt integer NOT NULL
)
"""


def insert_events(
    conn: psycopg.Connection,
    event_type: str,
    count: int,
    *,
    provider: str = "test",
    prefix: str = "evt",
    payload: dict[str, Any] | None = None,
) -> list[str]:
    """Insert `count` pending events in one statement; their event ids, in id order."""
    body = json.dumps(payload or {})
    rows = conn.execute(
        """
        INSERT INTO inbox (provider, event_id, event_type, payload, raw_body)
        SELECT %(provider)s, %(prefix)s || '_' || n, %(type)s, %(body)s::jsonb,
               convert_to(%(body)s::text, 'UTF8')
        FROM generate_series(1, %(count)s) AS n
        ORDER BY n
        RETURNING event_id
        """,
        {"provider": provider, "prefix": prefix, "type": event_type, "body": body,
         "count": count},
    ).fetchall()
    return [row[0] for row in rows]


def statuses(conn: psycopg.Connection) -> dict[str, int]:
    return dict(conn.execute("SELECT status, count(*) FROM inbox GROUP BY status").fetchall())


def event_row(conn: psycopg.Connection, event_id: str) -> dict[str, Any]:
    cur = conn.execute(
        "SELECT status, attempts, last_error, crashes, locked_backend, processed_at"
        " FROM inbox WHERE event_id = %s", [event_id],
    )
    names = [c.name for c in cur.description]
    row = cur.fetchone()
    assert row is not None, event_id
    return dict(zip(names, row, strict=True))


class WorkerProcesses:
    """`inbox worker` processes started by a test, each in its own process group, always
    killed (with their children) in teardown."""

    def __init__(self, database_url: str, handlers_dir: Path) -> None:
        self.database_url = database_url
        self.handlers_dir = handlers_dir
        self.started: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def start(self, *args: str, **env: str) -> subprocess.Popen[bytes]:
        log_path = self.handlers_dir / f"worker-{len(self.started)}.log"
        environment = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "DATABASE_URL": self.database_url,
            "PYTHONPATH": f"{self.handlers_dir}{os.pathsep}{REPO}",
            "INBOX_HANDLERS": "test_handlers",
            "INBOX_RETRY_BASE_SECONDS": "0.05",
            "INBOX_RETRY_CAP_SECONDS": "0.2",
            "INBOX_POLL_INTERVAL_SECONDS": "0.2",
            "INBOX_MAX_ATTEMPTS": "25",
            **env,
        }
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "inbox.cli", "worker", *args],
                cwd=self.handlers_dir, env=environment, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started.append(process)
        self.logs.append(log_path)
        return process

    def children(self, process: subprocess.Popen[bytes]) -> list[int]:
        """The pids of a worker's child processes (its claimers)."""
        path = Path(f"/proc/{process.pid}/task/{process.pid}/children")
        try:
            return [int(pid) for pid in path.read_text().split()]
        except FileNotFoundError:
            return []

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.logs if p.exists())

    def kill_all(self) -> None:
        for process in self.started:
            kill_group(process, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)


def kill_group(process: subprocess.Popen[bytes], signum: int) -> None:
    """Signal a worker and all its children (its own process group)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signum)


def write_handlers(directory: Path, source: str = TEST_HANDLERS) -> Path:
    path = directory / "test_handlers.py"
    path.write_text(source, encoding="utf-8")
    return path


def drain(run_once: Callable[[], int], rescue: Callable[[], int] | None = None,
          max_rounds: int = 10_000) -> int:
    """Run a claimer until nothing is due; the number of events claimed in total."""
    total = 0
    for _ in range(max_rounds):
        if rescue is not None:
            rescue()
        claimed = run_once()
        total += claimed
        if not claimed:
            return total
    raise AssertionError("still claiming after max_rounds")


def ids_of(rows: Iterable[tuple[Any, ...]]) -> list[Any]:
    return [row[0] for row in rows]
