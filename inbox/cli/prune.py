"""`inbox prune --older-than 30d`: delete finished history in small batches.

Deletes `processed` and `ignored` events and `sent` outbox messages that finished longer
ago than the given age (events by `processed_at`, messages by `sent_at`; `received_at` /
`created_at` when those are empty). `dead` rows are evidence of a problem: they go only
with `--include-dead`. `pending` rows are never touched.

Each batch is one short statement (`DELETE … WHERE id IN (SELECT … ORDER BY id LIMIT n FOR
UPDATE SKIP LOCKED)`) on an autocommit connection, so no lock is held for longer than a
batch takes and a row a worker or relay holds is skipped rather than waited for. Messages
go first; an event goes once none of its messages is left, so "what did we send because
of this event?" keeps its answer. An event's attempts (inbox_attempts) go with it, a
message's delivery attempts (outbox_attempts) with the message (ON DELETE CASCADE).
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime

from inbox import db
from inbox.cli.dev import database_url
from inbox.config import ConfigError, Settings
from inbox.store import audit
from inbox.timespec import duration_arg

EXIT_OK = 0
DEFAULT_BATCH_SIZE = 1000
PROGRESS_EVERY_SECONDS = 1.0
# A guard, not an expected wait: batches skip locked rows, so they should never queue.
LOCK_TIMEOUT_MILLISECONDS = 5000

LABELS = {"outbox": "outbox message(s)", "inbox": "event(s)"}


def statuses_to_prune(include_dead: bool) -> dict[str, tuple[str, ...]]:
    """The statuses deleted from each table: finished ones, `dead` only when asked."""
    dead = ("dead",) if include_dead else ()
    return {"outbox": ("sent", *dead), "inbox": ("processed", "ignored", *dead)}


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.batch_size < 1:
        raise ConfigError("--batch-size must be at least 1")
    statuses = statuses_to_prune(args.include_dead)
    options = f"-c lock_timeout={LOCK_TIMEOUT_MILLISECONDS}"
    with db.connect(database_url(settings), options=options,
                    application_name="inbox-prune") as conn:
        cutoff = audit.prune_cutoff(conn, args.older_than)
        totals = {
            "outbox": audit.prune_count(conn, "outbox", statuses["outbox"], cutoff),
            "inbox": audit.prune_count(conn, "inbox", statuses["inbox"], cutoff,
                                       outbox_statuses=statuses["outbox"]),
        }
        when = cutoff.astimezone().strftime("%Y-%m-%d %H:%M:%S")
        verb = "would delete" if args.dry_run else "deleting"
        for table in audit.PRUNE_TABLES:
            print(f"{verb} {totals[table]} {LABELS[table]} ({', '.join(statuses[table])}) "
                  f"finished before {when}", flush=True)
        if args.dry_run:
            return EXIT_OK
        for table in audit.PRUNE_TABLES:
            deleted = prune_table(conn, table, statuses[table], cutoff, totals[table],
                                  args.batch_size)
            print(f"{table}: deleted {deleted} {LABELS[table]}", flush=True)
    return EXIT_OK


def prune_table(
    conn: db.Connection,
    table: str,
    statuses: tuple[str, ...],
    cutoff: datetime,
    expected: int,
    batch_size: int,
) -> int:
    """Delete batch after batch in id order until a batch comes back short."""
    deleted = 0
    after_id = 0
    last_report = time.monotonic()
    while True:
        count, last_id = audit.prune_batch(conn, table, statuses, cutoff,
                                           after_id=after_id, batch_size=batch_size)
        deleted += count
        if count < batch_size or last_id is None:
            return deleted
        after_id = last_id
        if time.monotonic() - last_report >= PROGRESS_EVERY_SECONDS:
            last_report = time.monotonic()
            share = f" ({100 * deleted // expected}%)" if expected else ""
            print(f"{table}: {deleted}/{expected}{share}", flush=True)


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "prune", help="delete old processed/ignored events and sent messages, in batches",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--older-than", type=duration_arg, required=True, metavar="AGE",
                        help="finished longer ago than AGE: 30d, 12h, 90m, 1d12h")
    parser.add_argument("--include-dead", action="store_true",
                        help="also delete dead events and dead messages")
    parser.add_argument("--dry-run", action="store_true",
                        help="print how many rows would be deleted; delete nothing")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, metavar="N",
                        help=f"rows per transaction (default {DEFAULT_BATCH_SIZE})")
    parser.set_defaults(func=run)
