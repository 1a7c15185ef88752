"""`inbox replay`: events, or outbox messages with `--outbox`, back to pending with a fresh
attempt budget (history kept).
"""

from __future__ import annotations

import argparse
import sys

from inbox.config import Settings
from inbox.timespec import time_arg

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def run(args: argparse.Namespace, settings: Settings) -> int:
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


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("replay", help="put events (or outbox messages, with --outbox) "
                                           "back to pending with a fresh budget")
    parser.add_argument("event_ids", nargs="*", metavar="EVENT_ID",
                        help="provider event ids (with --outbox: outbox message ids)")
    parser.add_argument("--outbox", action="store_true",
                        help="replay outbox messages (dead or sent) instead of events")
    parser.add_argument("--status", choices=["dead", "ignored", "processed", "sent"],
                        help="replay every event in this status (--outbox: dead or sent)")
    parser.add_argument("--type", help="only events of this type (with --status)")
    parser.add_argument("--topic", metavar="PATTERN",
                        help="with --outbox --status: only topics matching this glob, as in "
                             "INBOX_ROUTES (email.*)")
    parser.add_argument("--provider", help="only events of this provider")
    parser.add_argument("--since", type=time_arg, metavar="WHEN",
                        help="with --status: received (--outbox: created) at or after WHEN "
                             "(2h, 3d, 2024-07-25)")
    parser.add_argument("--until", type=time_arg, metavar="WHEN",
                        help="with --status: received (--outbox: created) before WHEN")
    parser.add_argument("--dry-run", action="store_true",
                        help="print what would be replayed; change nothing")
    parser.set_defaults(func=run)
