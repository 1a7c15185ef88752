"""Reconciliation: store the Stripe events the inbox lacks, as if they had been delivered.

Stripe retries a delivery for three days; an outage longer than that, a wrong endpoint
secret or a disabled endpoint loses events for good. Stripe's Events API keeps every event
for 30 days, so the events created since a moment are listed (`inbox/stripe/api.py`), and
each page the listing brings is stored with the receiver's own `inbox_insert`, in one
autocommit statement: `provider` stripe, the Stripe event id, status `pending`, the API's
JSON of the event as payload and raw_body, no signature, `source` 'api'. The unique key
(provider, event_id) decides what is new, so a run racing live deliveries, another run on
another machine, or a second run stores each event once. After each page that added
events the workers are woken (NOTIFY, after the commit), so they start on them while the
listing goes on.

Thin events (event destinations, API v2) are listed the same way from `GET
/v2/core/events` (`thin=True`): the listing's events are the full events (with `data`),
which `parse_event_notification_without_verification` reads as notifications, so they are
stored as the API gives them and `event.stripe_event()` / `related_object()` work on them
as on a delivered notification (docs/decisions.md, "Reconciled thin events are stored as
listed"). Their watermark is a scope of its own (`store.scope_of(account, thin=True)`).

`reconcile_if_due` is the workers' automatic run (INBOX_STRIPE_RECONCILE_SECONDS): one
worker at a time (an advisory lock), from the stored watermark, at most once per interval.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from inbox import db
from inbox.config import Settings
from inbox.errors import InboxError, InvalidEvent
from inbox.providers import ReceivedEvent, identifier
from inbox.providers.stripe import account_of
from inbox.stripe import api, store

log = logging.getLogger(__name__)

DEFAULT_SINCE_SECONDS = 3 * 86400
# An automatic run lists from this long before the previous run's start: room for
# Stripe's clock and ours to differ, and for an event created just before that run's
# listing reached it.
WATERMARK_OVERLAP_SECONDS = 300
# At most this often a worker asks the database whether an automatic run is due.
MAX_LOOK_SECONDS = 30.0

Progress = Callable[["ReconcileResult"], None]


@dataclass
class ReconcileResult:
    """What a run found: `found` = `already` + `added` + len(`refused`)."""

    since: datetime
    found: int = 0
    already: int = 0
    added: int = 0
    pages: int = 0
    seconds: float = 0.0
    # --dry-run: (event id, type, created) of each event the inbox lacks, newest first.
    would_add: list[tuple[str, str, int]] = field(default_factory=list)
    # Events that cannot be stored (no id or type, a payload jsonb refuses): id, why.
    refused: list[tuple[str, str]] = field(default_factory=list)

    @property
    def events_per_second(self) -> float:
        return self.found / self.seconds if self.seconds > 0 else 0.0


def reconcile(
    conn: db.Connection,
    settings: Settings,
    listing: api.Listing,
    *,
    thin: bool = False,
    dry_run: bool = False,
    progress: Progress | None = None,
    client: Any = None,
    sleep: Callable[[float], None] = time.sleep,
) -> ReconcileResult:
    """List Stripe's events of `listing` (its thin events with `thin`) and store those the
    inbox lacks (with `dry_run`, only say which). `conn` must be autocommit and outside a
    transaction: each page is its own transaction, committed before the next page is
    asked for."""
    started = time.perf_counter()
    result = ReconcileResult(since=datetime.fromtimestamp(listing.since, UTC))
    client = client or api.make_client(settings)
    pages = api.thin_event_pages if thin else api.event_pages
    try:
        for page in pages(client, listing, secret=settings.stripe_api_key, sleep=sleep):
            _take_page(conn, page, listing.account, result, dry_run)
            result.seconds = time.perf_counter() - started
            if progress is not None:
                progress(result)
    finally:
        result.seconds = time.perf_counter() - started
    return result


def _take_page(conn: db.Connection, page: list[dict[str, Any]], account: str | None,
               result: ReconcileResult, dry_run: bool) -> None:
    result.pages += 1
    result.found += len(page)
    refused_before = len(result.refused)
    events: list[ReceivedEvent] = []
    for document in page:
        try:
            events.append(as_received(document, account))
        except InvalidEvent as exc:
            result.refused.append((str(document.get("id", "?")), str(exc)))
    if dry_run:
        have = store.stored_ids(conn, [event.event_id for event in events])
        lacking = [event for event in events if event.event_id not in have]
        result.already += len(events) - len(lacking)
        created = {str(doc.get("id")): created_unix(doc.get("created")) for doc in page}
        result.would_add.extend((event.event_id, event.event_type,
                                 created.get(event.event_id, 0)) for event in lacking)
        return
    try:
        added = len(store.store_page(conn, events))
    except db.DataError:  # a payload jsonb refuses: store the page's events one by one
        added = 0
        for event in events:
            try:
                added += store.store_one(conn, event)
            except db.DataError as exc:
                result.refused.append((event.event_id, f"payload cannot be stored: {exc}"))
    result.added += added
    result.already += len(page) - (len(result.refused) - refused_before) - added


def as_received(document: dict[str, Any], account: str | None = None) -> ReceivedEvent:
    """An event of the API as the receiver would have stored its delivery: the API's JSON
    as the bytes, no signature, `source` api, its `account` (or the account listed)."""
    text = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
    return ReceivedEvent(
        provider="stripe",
        event_id=identifier(document.get("id"), "id"),
        event_type=identifier(document.get("type"), "type"),
        payload_text=text,
        raw_body=text.encode("utf-8"),
        signature=None,
        account=account_of(document) or account,
        source="api",
    )


def created_unix(created: Any) -> int:
    """An event's `created` as Unix seconds: v1 gives an integer, v2 an ISO time; 0 when
    it is neither (only printed by --dry-run)."""
    if isinstance(created, int | float):
        return int(created)
    if isinstance(created, str):
        try:
            return int(datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp())
        except ValueError:
            return 0
    return 0


# -- the workers' automatic run ------------------------------------------------------------

_next_look: dict[int, float] = {}  # pid -> monotonic time of this process's next look


def reconcile_if_due(conn: db.Connection, settings: Settings,
                     progress: Progress | None = None) -> ReconcileResult | None:
    """Run an automatic reconciliation of the platform's events if one is due: with
    STRIPE_API_KEY set and INBOX_STRIPE_RECONCILE_SECONDS > 0, when no run completed within
    that interval, and no other worker is running one (advisory lock). Snapshot events
    (`/v1/events`) and thin events (`/v2/core/events`) are two listings, each with its own
    watermark and interval (scopes 'stripe' and 'stripe-thin'): a key refused the v2
    listing does not stop the v1 one. Each lists from its stored watermark (less
    WATERMARK_OVERLAP_SECONDS; the first run: the last 3 days; never past Stripe's 30) and
    records the run. The snapshot listing's result (else the thin one's); None when
    nothing ran.

    Cheap when not due: a process looks at the database at most every MAX_LOOK_SECONDS
    (or the interval, when shorter). A failure is logged and recorded, never raised: the
    worker's loop goes on, and the next interval tries again. `progress` is called after
    each page (the worker beats).
    """
    interval = settings.stripe_reconcile_seconds
    if interval <= 0 or not settings.stripe_api_key:
        return None
    now = time.monotonic()
    pid = os.getpid()
    if now < _next_look.get(pid, 0.0):
        return None
    _next_look[pid] = now + min(interval, MAX_LOOK_SECONDS)
    if db.in_transaction(conn) or not store.try_lock(conn):
        return None
    try:
        results = [_run_if_due(conn, settings, thin, progress) for thin in (False, True)]
    finally:
        store.unlock(conn)
    return next((result for result in results if result is not None), None)


def _run_if_due(conn: db.Connection, settings: Settings, thin: bool,
                progress: Progress | None) -> ReconcileResult | None:
    """One listing's automatic run (the lock held), if its scope is due."""
    scope = store.scope_of(None, thin=thin)
    kind = "thin" if thin else "snapshot"
    current = store.state(conn, scope, settings.stripe_reconcile_seconds)
    if not current.due:
        return None
    floor = current.now_unix - api.MAX_HISTORY_SECONDS + 60
    if current.watermark is None:
        since = current.now_unix - DEFAULT_SINCE_SECONDS
    else:
        since = max(current.watermark - WATERMARK_OVERLAP_SECONDS, floor)
    try:
        result = reconcile(conn, settings, api.Listing(since=since), thin=thin,
                           progress=progress)
    except InboxError as exc:
        log.warning("automatic Stripe reconciliation of %s events failed: %s", kind, exc)
        store.record_failure(conn, scope, trigger="automatic", error=str(exc))
        return None
    store.record_run(conn, scope, trigger="automatic", since_unix=since,
                     found=result.found, added=result.added, watermark=current.now_unix)
    if result.added:
        log.warning("automatic Stripe reconciliation stored %d missed %s event(s) of %d "
                    "listed", result.added, kind, result.found)
    else:
        log.info("automatic Stripe reconciliation: %d %s events listed, none missing",
                 result.found, kind)
    return result
