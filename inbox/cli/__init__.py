"""The `inbox` command: one subcommand per process type or operator task.

Settings are read from the environment here, once, and passed down.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from inbox.config import ConfigError, Settings
from inbox.errors import InboxError
from inbox.logs import configure_logging

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

Command = Callable[[argparse.Namespace, Settings], int]


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    """Apply pending migrations (the Procfile's release phase)."""
    from inbox.cli.dev import database_url
    from inbox.migrations import migrate

    applied = migrate(database_url(settings), handler_modules=settings.handler_modules)
    print(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else ""))
    return EXIT_OK


def cmd_dev(args: argparse.Namespace, settings: Settings) -> int:
    """Run everything locally, on an embedded PostgreSQL unless DATABASE_URL is set."""
    from inbox.cli.dev import run_dev

    return run_dev(settings, port=args.port)


def cmd_relay(args: argparse.Namespace, settings: Settings) -> int:
    """Deliver outbox messages by INBOX_ROUTES until SIGTERM (the Procfile's relay line)."""
    from inbox.relay.loop import run_relay

    return run_relay(settings, concurrency=args.concurrency, processes=args.processes)


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    """Run handlers for due inbox events until SIGTERM (the Procfile's worker line)."""
    from inbox.runtime import supervisor
    from inbox.worker import loop as worker
    from inbox.worker.registry import load_handlers

    registry = load_handlers(settings.handler_modules)  # fails here, before any fork
    spec = worker.loop_spec(
        settings, registry, concurrency=args.concurrency,
        batch_size=args.batch_size or worker.DEFAULT_BATCH_SIZE,
    )
    specs = [spec]
    if args.with_relay:  # small deployments: one dyno runs handlers and deliveries
        from inbox.relay import loop as relay

        specs.append(relay.loop_spec(settings))
    return supervisor.run(specs)


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
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


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    """Put events back to pending with a fresh attempt budget (history kept)."""
    from inbox import db
    from inbox.cli.dev import database_url
    from inbox.store import ops

    if bool(args.event_ids) == bool(args.status):
        what = "ID..." if args.outbox else "EVENT_ID..."
        print(f"inbox replay: give {what} or --status", file=sys.stderr)
        return EXIT_USAGE
    if args.event_ids and (args.since or args.until):
        print("inbox replay: --since/--until go with --status", file=sys.stderr)
        return EXIT_USAGE
    if args.outbox:
        return replay_outbox(args, settings)
    if args.topic or args.status == "sent":
        print("inbox replay: --topic and --status sent go with --outbox", file=sys.stderr)
        return EXIT_USAGE
    if args.dry_run:
        from inbox.cli.events import run_replay_dry_run

        return run_replay_dry_run(args, settings)
    with db.connect(database_url(settings)) as conn:
        if args.event_ids:
            replayed = ops.replay_events(conn, args.event_ids, args.provider)
        else:
            replayed = ops.replay_status(conn, args.status, args.type, args.provider,
                                         since=args.since, until=args.until)
    for provider, event_id in replayed:
        print(f"replayed {provider} {event_id}")
    print(f"{len(replayed)} event(s) back to pending")
    missing = set(args.event_ids) - {event_id for _, event_id in replayed}
    if missing:
        print(f"not found or held by a worker now: {', '.join(sorted(missing))}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def replay_outbox(args: argparse.Namespace, settings: Settings) -> int:
    """`inbox replay --outbox`: outbox messages back to pending, due now, attempts reset
    (last_error kept); messages a relay holds now are left alone."""
    from inbox import db
    from inbox.cli.dev import database_url
    from inbox.store import ops

    if args.type or args.provider:
        print("inbox replay: --outbox takes --topic, not --type/--provider", file=sys.stderr)
        return EXIT_USAGE
    if args.status and args.status not in ops.REPLAYABLE_OUTBOX_STATUSES:
        print("inbox replay: --outbox --status is dead or sent", file=sys.stderr)
        return EXIT_USAGE
    if args.event_ids and args.topic:
        print("inbox replay: --topic goes with --status", file=sys.stderr)
        return EXIT_USAGE
    if not all(ref.isdigit() and len(ref) < 19 for ref in args.event_ids):
        print("inbox replay: --outbox takes outbox message ids (numbers)", file=sys.stderr)
        return EXIT_USAGE
    ids = [int(ref) for ref in args.event_ids]
    with db.connect(database_url(settings)) as conn:
        if args.dry_run:
            found = ops.replay_outbox_preview(conn, ids=ids, status=args.status,
                                              topic_pattern=args.topic,
                                              since=args.since, until=args.until)
        elif ids:
            found = ops.replay_outbox_ids(conn, ids)
        else:
            found = ops.replay_outbox_status(conn, args.status, args.topic,
                                             since=args.since, until=args.until)
    verb = "would replay" if args.dry_run else "replayed"
    for message in found:
        print(f"{verb} message {message.id} {message.topic} {message.idempotency_key}")
    if args.dry_run:
        print(f"{len(found)} message(s) would go back to pending (dry run: nothing changed)")
    else:
        print(f"{len(found)} message(s) back to pending")
    missing = sorted(set(ids) - {message.id for message in found})
    if missing:
        print("not found or held by a relay now: " + ", ".join(map(str, missing)),
              file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="inbox", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    migrate = sub.add_parser("migrate", help="apply database migrations")
    migrate.set_defaults(func=cmd_migrate)

    relay = sub.add_parser("relay", help="deliver outbox messages (HTTP, SMTP, log)")
    relay.add_argument(
        "--concurrency", type=int, default=None, metavar="N",
        help="delivery threads per process (default INBOX_RELAY_CONCURRENCY or 32)",
    )
    relay.add_argument("--processes", type=int, default=1, metavar="P",
                       help="relay processes (default 1)")
    relay.set_defaults(func=cmd_relay)

    worker = sub.add_parser("worker", help="run handlers for due inbox events")
    worker.add_argument("--concurrency", type=int, default=1, metavar="N",
                        help="worker processes (default 1; scale further with more dynos)")
    worker.add_argument("--batch-size", type=int, metavar="N",
                        help="events leased per claim (default 100), processed in one "
                        "transaction per 32 handlers that run SQL (inbox/worker/loop.py)")
    worker.add_argument("--with-relay", action="store_true",
                        help="also run a relay process (one dyno for small deployments)")
    worker.set_defaults(func=cmd_worker)

    status = sub.add_parser("status", help="count events and messages by status")
    status.add_argument("--json", action="store_true", help="print the counts as JSON")
    status.set_defaults(func=cmd_status)

    replay = sub.add_parser("replay", help="put events (or outbox messages, with --outbox) "
                                           "back to pending with a fresh budget")
    replay.add_argument("event_ids", nargs="*", metavar="EVENT_ID",
                        help="provider event ids (with --outbox: outbox message ids)")
    replay.add_argument("--outbox", action="store_true",
                        help="replay outbox messages (dead or sent) instead of events")
    replay.add_argument("--status", choices=["dead", "ignored", "processed", "sent"],
                        help="replay every event in this status (--outbox: dead or sent)")
    replay.add_argument("--type", help="only events of this type (with --status)")
    replay.add_argument("--topic", metavar="PATTERN",
                        help="with --outbox --status: only topics matching this glob, as in "
                             "INBOX_ROUTES (email.*)")
    replay.add_argument("--provider", help="only events of this provider")
    from inbox.timespec import time_arg

    replay.add_argument("--since", type=time_arg, metavar="WHEN",
                        help="with --status: received (--outbox: created) at or after WHEN "
                             "(2h, 3d, 2024-07-25)")
    replay.add_argument("--until", type=time_arg, metavar="WHEN",
                        help="with --status: received (--outbox: created) before WHEN")
    replay.add_argument("--dry-run", action="store_true",
                        help="print what would be replayed; change nothing")
    replay.set_defaults(func=cmd_replay)

    dev = sub.add_parser("dev", help="run web, worker and relay on a local database")
    dev.add_argument("--port", type=int, default=5000, help="receiver port (default 5000)")
    dev.set_defaults(func=cmd_dev)

    # Operator commands: each module adds its own subcommand and implements it.
    from inbox.cli import events, prune, psql, send_test_event

    send_test_event.add_parser(sub)
    events.add_parser(sub)
    prune.add_parser(sub)
    psql.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging()
    try:
        settings = Settings.from_env()
        func: Command = args.func
        return func(args, settings)
    except ConfigError as exc:
        print(f"inbox: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except InboxError as exc:
        print(f"inbox: {exc}", file=sys.stderr)
        return EXIT_FAILURE

