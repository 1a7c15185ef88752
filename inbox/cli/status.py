"""`inbox status [--json]`: events and messages by status, the backlog, the last hour, and
the processes: which workers, relays and web processes are alive (their heartbeats), and
which stopped beating; and when Stripe's events were last reconciled, and what it added."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from inbox.config import Settings

EXIT_OK = 0


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Print event and message counts by status, the backlog and the processes."""
    import json

    from inbox import db
    from inbox.cli.dev import database_url
    from inbox.store import audit, ops, processes, system_state

    with db.connect(database_url(settings)) as conn:
        counts: dict[str, Any] = ops.status_counts(conn)
        counts.update(audit.status_extras(conn))  # backlog age, last hour's throughput
        seen = processes.list_processes(conn)
        runs = system_state.reconcile_runs(conn)
    if args.json:
        counts["processes"] = [_process_json(row) for row in seen]
        if runs:
            counts["stripe_reconcile"] = {run.scope: _run_json(run) for run in runs}
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
    for run in runs:
        print(_run_line(run))
    return EXIT_OK


def _process_json(row: Any) -> dict[str, Any]:
    return {"name": row.name, "kind": row.kind, "host": row.host, "dyno": row.dyno,
            "pid": row.pid, "alive": row.alive, "holding": row.holding,
            "started_at": row.started_at.isoformat(),
            "last_seen_at": row.last_seen_at.isoformat()}


def _run_json(run: Any) -> dict[str, Any]:
    """A Stripe reconciliation's last run, for --json."""
    def iso(moment: datetime | None) -> str | None:
        return moment.isoformat() if moment else None

    return {"last_run_at": iso(run.last_run_at), "trigger": run.last_trigger,
            "since": iso(run.last_since), "found": run.last_found, "added": run.last_added,
            "last_error": run.last_error, "last_error_at": iso(run.last_error_at)}


def _run_line(run: Any) -> str:
    """`reconcile stripe: last ran 2024-07-25 10:00:00 (automatic): found 250, added 70`."""
    from inbox.cli.events import local

    name = "reconcile " + run.scope.replace(":", " ", 1)
    if run.last_found is None:
        line = f"{name}: never completed"
    else:
        line = (f"{name}: last ran {local(run.last_run_at)} ({run.last_trigger}): "
                f"found {run.last_found}, added {run.last_added}")
    if run.last_error:
        line += f"; failed {local(run.last_error_at)}: {run.last_error}"
    return line


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("status", help="count events and messages by status; who is alive")
    parser.add_argument("--json", action="store_true", help="print the counts as JSON")
    parser.set_defaults(func=run)
