"""`inbox status [--json]`: events and messages by status, the backlog, the last hour."""

from __future__ import annotations

import argparse

from inbox.config import Settings

EXIT_OK = 0


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Print event and message counts by status."""
    import json

    from inbox import db
    from inbox.cli.dev import database_url
    from inbox.store import audit, ops

    with db.connect(database_url(settings)) as conn:
        counts = ops.status_counts(conn)
        counts.update(audit.status_extras(conn))  # backlog age, last hour's throughput
    if args.json:
        print(json.dumps(counts))
    else:
        for table, by_status in counts.items():
            print(f"{table + ':':8}" + "  ".join(f"{k} {v}" for k, v in by_status.items()))
    return EXIT_OK


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("status", help="count events and messages by status")
    parser.add_argument("--json", action="store_true", help="print the counts as JSON")
    parser.set_defaults(func=run)
