"""`inbox events list` and `inbox events show`: look at the inbox without writing SQL.

`list` prints the newest events first as a table (or JSON with `--json`), filtered by
status, type, provider and received time. `show` prints one event — found by its inbox id
or by the provider's event id — with its attempts history and the outbox messages it
caused, and every delivery try of those messages (outbox_attempts). For questions these
do not answer, see docs/auditing.md (psql).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from inbox import db
from inbox.cli.dev import database_url
from inbox.config import Settings
from inbox.store import audit
from inbox.timespec import time_arg

EXIT_OK = 0
EXIT_NOT_FOUND = 1
DEFAULT_LIMIT = 50
ERROR_COLUMN_CHARS = 60
STATUSES = ("pending", "retrying", "processed", "ignored", "dead")
# PostgreSQL's 'infinity' as inbox.db loads it: a leased row's next_attempt_at.
INFINITY = datetime.max.replace(tzinfo=UTC)
MINUS_INFINITY = datetime.min.replace(tzinfo=UTC)


def local(moment: datetime | None) -> str:
    """A timestamp in the machine's local time, to the second; '-' for none."""
    if moment in (INFINITY, MINUS_INFINITY):  # no local time east/west of UTC can hold them
        return "infinity" if moment == INFINITY else "-infinity"
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def shorten(text: str | None, width: int = ERROR_COLUMN_CHARS) -> str:
    if not text:
        return ""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned columns two spaces apart, the last one unpadded."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        padded = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=False)]
        lines.append("  ".join([*padded, row[-1]]).rstrip())
    return "\n".join(lines)


def to_json(value: Any) -> str:
    def default(obj: Any) -> Any:
        if isinstance(obj, datetime):
            return obj.isoformat()
        raise TypeError(f"cannot serialise {type(obj).__name__}")

    return json.dumps(value, indent=2, default=default, ensure_ascii=False)


def run_list(args: argparse.Namespace, settings: Settings) -> int:
    with db.connect(database_url(settings)) as conn:
        events = audit.list_events(
            conn, status=args.status, event_type=args.type, provider=args.provider,
            account=args.account, since=args.since, until=args.until, limit=args.limit,
        )
    if args.json:
        print(to_json([audit.as_dict(event) for event in events]))
        return EXIT_OK
    if not events:
        print("no events match")
        return EXIT_OK
    # The ACCOUNT column only when some event has one (Stripe Connect).
    accounts = any(e.account for e in events)
    print(table(
        ["ID", "PROVIDER", "EVENT ID", "TYPE", *(["ACCOUNT"] if accounts else []), "STATUS",
         "ATTEMPTS", "RECEIVED", "LAST ERROR"],
        [[e.id, e.provider, e.event_id, e.event_type, *([e.account or ""] if accounts else []),
          e.status, e.attempts, local(e.received_at), shorten(e.last_error)] for e in events],
    ))
    more = " (the limit: --limit N for more)" if len(events) == args.limit else ""
    print(f"\n{len(events)} event(s), newest first{more}")
    return EXIT_OK


def run_show(args: argparse.Namespace, settings: Settings) -> int:
    with db.connect(database_url(settings)) as conn:
        matches = audit.find_events(conn, args.id)
        if args.provider:
            matches = [m for m in matches if m.provider == args.provider]
        if len(matches) != 1:
            return _not_one(args.id, matches)
        event = matches[0]
        attempts = audit.attempts_of(conn, event.id)
        messages = audit.outbox_of(conn, event.id)
        deliveries = audit.delivery_attempts_of(conn, event.id)
    if args.json:
        print(to_json({
            "event": audit.as_dict(event),
            "attempts": [audit.as_dict(a) for a in attempts],
            "outbox": [audit.as_dict(m) for m in messages],
            "deliveries": [audit.as_dict(d) for d in deliveries],
        }))
        return EXIT_OK
    print(describe(event, attempts, messages, deliveries, with_payload=not args.no_payload))
    return EXIT_OK


def _not_one(ref: str, matches: list[audit.EventDetail]) -> int:
    if not matches:
        print(f"no event {ref!r} (give an inbox id or a provider event id)")
    else:
        print(f"{len(matches)} events match {ref!r}; pick one by inbox id or --provider:")
        print(table(["ID", "PROVIDER", "EVENT ID", "TYPE"],
                    [[m.id, m.provider, m.event_id, m.event_type] for m in matches]))
    return EXIT_NOT_FOUND


def describe(
    event: audit.EventDetail,
    attempts: Sequence[audit.Attempt],
    messages: Sequence[audit.OutboxMessage],
    deliveries: Sequence[audit.DeliveryAttempt] = (),
    *,
    with_payload: bool = True,
) -> str:
    """The human-readable page of `inbox events show`."""
    facts = [
        ("inbox id", event.id),
        ("provider", event.provider),
        ("event id", event.event_id),
        ("type", event.event_type),
        *([("account", event.account)] if event.account else []),
        ("source", "Stripe's Events API (inbox reconcile)" if event.source == "api"
         else "webhook"),
        ("status", f"{event.status} after {event.attempts} attempt(s)"),
        ("received", local(event.received_at)),
        ("processed", local(event.processed_at)),
    ]
    if event.status == "pending" and event.next_attempt_at == INFINITY:
        facts.append(("next attempt", "none now: a worker holds the event (leased)"))
    elif event.status == "pending":
        facts.append(("next attempt", local(event.next_attempt_at)))
    if event.last_error:
        facts.append(("last error", event.last_error))
    out = [f"{name + ':':<14}{value}" for name, value in facts]
    out.append(f"\nAttempts ({len(attempts)})")
    if attempts:
        out.append(table(
            ["#", "STARTED", "FINISHED", "OUTCOME", "WORKER", "ERROR"],
            [[a.attempt, local(a.started_at), local(a.finished_at), a.outcome,
              a.worker or "", shorten(a.error)] for a in attempts],
        ))
    out.append(f"\nOutbox messages ({len(messages)})")
    if messages:
        out.append(table(
            ["ID", "TOPIC", "STATUS", "ATTEMPTS", "CREATED", "SENT", "IDEMPOTENCY KEY",
             "LAST ERROR"],
            [[m.id, m.topic, m.status, m.attempts, local(m.created_at), local(m.sent_at),
              m.idempotency_key, shorten(m.last_error)] for m in messages],
        ))
    if deliveries:
        out.append(f"\nDelivery attempts ({len(deliveries)})")
        out.append(table(
            ["MESSAGE", "#", "STARTED", "FINISHED", "OUTCOME", "TO", "ANSWER", "RELAY",
             "ERROR"],
            [[d.outbox_id, d.attempt, local(d.started_at), local(d.finished_at), d.outcome,
              d.destination, shorten(d.answer), d.relay or "", shorten(d.error)]
             for d in deliveries],
        ))
    if with_payload:
        out.append("\nPayload")
        out.append(to_json(event.payload))
    return "\n".join(out)


def add_parser(sub: argparse._SubParsersAction) -> None:
    events = sub.add_parser("events", help="list and show inbox events",
                            description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = events.add_subparsers(dest="events_command", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="the newest events, filtered")
    listing.add_argument("--status", choices=STATUSES,
                         help="retrying = pending after at least one failed attempt")
    listing.add_argument("--type", help="event type, e.g. invoice.paid")
    listing.add_argument("--provider", help="e.g. stripe")
    listing.add_argument("--account", help="a Stripe Connect account, e.g. acct_1Nv0Fg...")
    listing.add_argument("--since", type=time_arg, metavar="WHEN",
                         help="received at or after WHEN: 2h (ago), 3d, 2024-07-25T10:00")
    listing.add_argument("--until", type=time_arg, metavar="WHEN",
                         help="received before WHEN (same forms)")
    listing.add_argument("--limit", type=int, default=DEFAULT_LIMIT,
                         help=f"at most this many (default {DEFAULT_LIMIT})")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(func=run_list)

    show = actions.add_parser("show", help="one event, its attempts and its outbox messages")
    show.add_argument("id", metavar="ID", help="inbox id or provider event id (evt_...)")
    show.add_argument("--provider", help="when an event id exists for several providers")
    show.add_argument("--no-payload", action="store_true", help="leave the payload out")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(func=run_show)


def run_replay_dry_run(args: argparse.Namespace, settings: Settings) -> int:
    """`inbox replay ... --dry-run`: the events the same command would put back."""
    with db.connect(database_url(settings)) as conn:
        found = audit.replay_preview(
            conn, event_ids=args.event_ids, status=args.status, event_type=args.type,
            provider=args.provider, since=args.since, until=args.until,
        )
    for provider, event_id in found:
        print(f"would replay {provider} {event_id}")
    print(f"{len(found)} event(s) would go back to pending (dry run: nothing changed)")
    missing = set(args.event_ids) - {event_id for _, event_id in found}
    if missing:
        print(f"not found or held by a worker now: {', '.join(sorted(missing))}")
        return EXIT_NOT_FOUND
    return EXIT_OK
