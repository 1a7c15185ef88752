"""`inbox status [--json]`: events and messages by status, the backlog, the last hour, and
the processes: which workers, relays and web processes are alive (their heartbeats), and
which stopped beating."""

from __future__ import annotations

import argparse
from typing import Any

from inbox.config import Settings

EXIT_OK = 0


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Print event and message counts by status, the backlog and the processes."""
    import json

    from inbox import db
    from inbox.cli.dev import database_url
    from inbox.store import audit, ops, processes

    with db.connect(database_url(settings)) as conn:
        counts: dict[str, Any] = ops.status_counts(conn)
        counts.update(audit.status_extras(conn))  # backlog age, last hour's throughput
        seen = processes.list_processes(conn)
    if args.json:
        counts["processes"] = [_process_json(row) for row in seen]
        print(json.dumps(counts))
        return EXIT_OK
    for table, by_status in counts.items():
        print(f"{table + ':':8}" + "  ".join(f"{k} {v}" for k, v in by_status.items()))
    alive = processes.alive_by_kind(seen)
    print("alive:   " + "  ".join(f"{kind} {n}" for kind, n in alive.items()))
    for row in seen:
        state = "alive" if row.alive else "GONE "
        print(f"  {state} {row.kind:6} {row.name:40} holding {row.holding:<4} "
              f"since {row.started_at:%Y-%m-%d %H:%M:%S}, seen {row.seen_seconds_ago:.0f} s ago")
    return EXIT_OK


def _process_json(row: Any) -> dict[str, Any]:
    return {"name": row.name, "kind": row.kind, "host": row.host, "dyno": row.dyno,
            "pid": row.pid, "alive": row.alive, "holding": row.holding,
            "started_at": row.started_at.isoformat(),
            "last_seen_at": row.last_seen_at.isoformat()}


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("status", help="count events and messages by status; who is alive")
    parser.add_argument("--json", action="store_true", help="print the counts as JSON")
    parser.set_defaults(func=run)
