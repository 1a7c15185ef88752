"""Liveness: the heartbeats of workers, relays and web processes (sql/queries/processes.sql).

A process beats on its poll tick, from the thread that does its work, so a process whose
loop hangs stops beating even while its connection stays open. Read by `inbox status`,
/metrics and the console: who is alive, where, since when, holding what.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime

from inbox import db
from inbox.queries import query

KINDS = ("worker", "relay", "web")


@dataclass(frozen=True)
class Identity:
    """Who a process is, as its heartbeat row names it."""

    kind: str
    host: str
    dyno: str | None
    pid: int

    @property
    def name(self) -> str:
        return f"{self.dyno or self.host}:{self.kind}:{self.pid}"

    @classmethod
    def of_this_process(cls, kind: str) -> Identity:
        """This process: Heroku's $DYNO (worker.1) when set, the hostname, the pid."""
        return cls(kind, socket.gethostname(), os.environ.get("DYNO") or None, os.getpid())


@dataclass(frozen=True)
class ProcessRow:
    """A process as its last heartbeat left it."""

    name: str
    kind: str
    host: str
    dyno: str | None
    pid: int
    started_at: datetime
    last_seen_at: datetime
    holding: int
    alive: bool
    seen_seconds_ago: float


def beat(conn: db.Connection, me: Identity, beat_seconds: float) -> None:
    """Record that this process is alive now (autocommit: outside any work transaction)."""
    conn.execute(query("process_beat"), {
        "name": me.name, "kind": me.kind, "host": me.host, "dyno": me.dyno, "pid": me.pid,
        "beat_seconds": beat_seconds,
    })


def gone(conn: db.Connection, me: Identity) -> None:
    """This process stops on purpose: forget it rather than report it gone."""
    conn.execute(query("process_gone"), {"name": me.name})


def list_processes(conn: db.Connection) -> list[ProcessRow]:
    """Every process seen in the last day, the living first."""
    return [ProcessRow(**row) for row in
            db.dict_cursor(conn).execute(query("processes_list")).fetchall()]


def alive_by_kind(rows: list[ProcessRow]) -> dict[str, int]:
    """How many of each kind are alive (every kind present)."""
    counts = dict.fromkeys(KINDS, 0)
    for row in rows:
        if row.alive:
            counts[row.kind] = counts.get(row.kind, 0) + 1
    return counts
