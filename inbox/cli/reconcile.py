"""`inbox reconcile stripe [--since 3d] [--dry-run] [--handled-only] [--account ACCT]
[--only snapshot|thin]`: store the Stripe events the inbox lacks, listed from Stripe's
Events API: snapshot events (GET /v1/events), then thin events of event destinations
(GET /v2/core/events).

Run it after an outage longer than Stripe's three days of retries, after fixing a wrong
STRIPE_WEBHOOK_SECRET, or whenever in doubt: events the inbox has are left alone, so a
second run adds nothing, and it is safe while webhooks arrive and from two machines at once.
Needs STRIPE_API_KEY (a restricted key with read access to Events, and to v2 Events for
thin events: `--only snapshot` when the key has no such access).
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from inbox.config import Settings

if TYPE_CHECKING:
    from inbox import db
    from inbox.stripe.api import Listing
    from inbox.stripe.reconcile import ReconcileResult

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
DEFAULT_SINCE = "3d"
# A progress line (stderr) at most this often during a long run.
PROGRESS_SECONDS = 5.0
# What each listing is called, by `thin`.
KINDS = {False: "snapshot", True: "thin"}
# Thin events' types name their API version first (v1.billing.meter.error_report_triggered,
# v2.core.account.updated); snapshot events' never do (invoice.paid).
THIN_TYPE_PREFIXES = ("v1.", "v2.")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from inbox import db
    from inbox.cli.dev import database_url
    from inbox.stripe import api
    from inbox.timespec import BadTimeSpec, parse_time

    now = datetime.now(UTC)
    try:
        since = parse_time(args.since, now)
    except BadTimeSpec as exc:
        return _usage(str(exc))
    oldest = now.timestamp() - api.MAX_HISTORY_SECONDS
    if since.timestamp() < oldest - 1:  # a second of slack for "30d" typed exactly
        return _usage(f"--since {args.since} is further back than the 30 days Stripe keeps "
                      "events; give at most 30d")
    listings = _listings(args, settings, int(since.timestamp()))
    if not listings:
        print("no handler is registered for a stripe event (INBOX_HANDLERS): nothing "
              "to reconcile with --handled-only")
        return EXIT_OK
    failed = False
    with db.connect(database_url(settings)) as conn:
        for thin, listing in listings:
            outcome = _reconcile_one(conn, args, settings, listing, thin, now)
            if outcome is None:
                return EXIT_FAILURE  # the next listing would most likely fail the same way
            failed = failed or bool(outcome.refused)
    return EXIT_FAILURE if failed else EXIT_OK


def _listings(args: argparse.Namespace, settings: Settings,
              since: int) -> list[tuple[bool, Listing]]:
    """The listings to run, as (thin, listing): snapshot events, then thin events, unless
    `--only` names one; with --handled-only, each of the handled types of its kind (and
    none of a kind no handler takes)."""
    from inbox.stripe.api import Listing

    kinds = [thin for thin in (False, True) if args.only in (None, KINDS[thin])]
    if not args.handled_only:
        return [(thin, Listing(since=since, account=args.account)) for thin in kinds]
    handled = _handled_types(settings)
    listings = []
    for thin in kinds:
        types = tuple(t for t in handled if t.startswith(THIN_TYPE_PREFIXES) == thin)
        if types:
            listings.append((thin, Listing(since=since, types=types, account=args.account)))
    return listings


def _reconcile_one(conn: db.Connection, args: argparse.Namespace, settings: Settings,
                   listing: Listing, thin: bool, now: datetime) -> ReconcileResult | None:
    """One listing, its run recorded (not --dry-run) and its summary printed; None when
    it failed (said on stderr, recorded)."""
    from inbox.stripe import api, store
    from inbox.stripe.reconcile import reconcile

    scope = store.scope_of(args.account, thin=thin)
    print(f"listing {_what(listing, thin)}{' (dry run)' if args.dry_run else ''}", flush=True)
    progress = _ProgressLine(args.dry_run)
    try:
        result = reconcile(conn, settings, listing, thin=thin, dry_run=args.dry_run,
                           progress=progress)
    except api.StripeAPIError as exc:
        if not args.dry_run:
            store.record_failure(conn, scope, trigger="command", error=str(exc))
        print(f"inbox reconcile: {exc}", file=sys.stderr)
        if progress.last is not None:
            print(_summary(progress.last, args.dry_run) + " before the failure",
                  file=sys.stderr)
        return None
    if not args.dry_run:
        store.record_run(conn, scope, trigger="command", since_unix=listing.since,
                         found=result.found, added=result.added,
                         watermark=None if listing.types else int(now.timestamp()))
    _print_result(result, args.dry_run)
    return result


def _what(listing: Listing, thin: bool) -> str:
    since = datetime.fromtimestamp(listing.since, UTC).astimezone()
    what = (f"Stripe {KINDS[thin]} events created since {since.isoformat(timespec='seconds')}"
            f" (GET {'/v2/core/events' if thin else '/v1/events'})")
    if listing.account:
        what += f" on {listing.account}"
    if listing.types:
        what += f", of the {len(listing.types)} handled type(s)"
    return what


def _print_result(result: ReconcileResult, dry_run: bool) -> None:
    for event_id, event_type, created in result.would_add:
        when = datetime.fromtimestamp(created, UTC).astimezone().isoformat(timespec="seconds")
        print(f"would add {event_id}  {event_type}  created {when}")
    for event_id, reason in result.refused:
        print(f"cannot store {event_id}: {reason}", file=sys.stderr)
    print(f"found:          {result.found}")
    print(f"already stored: {result.already}")
    if dry_run:
        print(f"would add:      {len(result.would_add)} (dry run: nothing changed)")
    else:
        print(f"added:          {result.added}")
    if result.refused:
        print(f"refused:        {len(result.refused)}")
    print(f"({result.pages} page(s) in {result.seconds:.1f} s)")


class _ProgressLine:
    """Prints where a long run is, at most every PROGRESS_SECONDS, on stderr."""

    def __init__(self, dry_run: bool) -> None:
        self.dry_run = dry_run
        self.last: ReconcileResult | None = None
        self._next = time.monotonic() + PROGRESS_SECONDS

    def __call__(self, result: ReconcileResult) -> None:
        self.last = result
        now = time.monotonic()
        if now >= self._next:
            self._next = now + PROGRESS_SECONDS
            print(f"... {_summary(result, self.dry_run)} so far "
                  f"({result.events_per_second:.0f} events/s)", file=sys.stderr, flush=True)


def _summary(result: ReconcileResult, dry_run: bool) -> str:
    added = (f"{len(result.would_add)} would be added" if dry_run
             else f"{result.added} added")
    return f"{result.found} found, {result.already} already stored, {added}"


def _handled_types(settings: Settings) -> tuple[str, ...]:
    """The Stripe event types a handler is registered for (INBOX_HANDLERS)."""
    from inbox.worker.registry import load_handlers

    registry = load_handlers(settings.handler_modules)
    return tuple(sorted(event_type for provider, event_type in registry
                        if provider == "stripe"))


def _usage(message: str) -> int:
    print(f"inbox reconcile: {message}", file=sys.stderr)
    return EXIT_USAGE


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("reconcile", help="store the Stripe events the inbox lacks",
                            description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("provider", choices=["stripe"], help="the provider to reconcile")
    parser.add_argument("--since", default=DEFAULT_SINCE, metavar="WHEN",
                        help="events created since WHEN: 3d (the default), 12h, "
                             "2024-07-25T10:00; at most 30d (Stripe keeps 30 days)")
    parser.add_argument("--dry-run", action="store_true",
                        help="list the events that would be added, changing nothing")
    parser.add_argument("--handled-only", action="store_true",
                        help="only the event types a handler is registered for")
    parser.add_argument("--account", metavar="ACCT",
                        help="a Stripe Connect account (acct_...): list its events "
                             "(Stripe-Account header; Stripe-Context for thin events) "
                             "instead of the platform's")
    parser.add_argument("--only", choices=["snapshot", "thin"],
                        help="list only snapshot events (GET /v1/events: a key without "
                             "access to v2 Events) or only thin events (GET /v2/core/events)"
                             "; both by default")
    parser.set_defaults(func=run)
