"""`inbox reconcile stripe` recovers missed thin events (event destinations, API v2): the
fake of Stripe's API (tests/stripe_fake.py) lists them at `GET /v2/core/events`, some were
delivered by webhook to the real app, and the reconciled rest are processed by a worker
whose handler fetches the full event through the SDK, as for a delivered notification."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from inbox.cli import build_parser
from inbox.config import Settings
from inbox.stripe import api
from inbox.stripe.reconcile import reconcile
from inbox.worker.loop import Worker
from inbox.worker.registry import Registry
from tests.stripe_fake import API_KEY, FakeStripe, fake_stripe
from tests.test_stripe_thin import (
    ACCOUNT,
    TYPE,
    full_event,
    meter,
    notification_bytes,
    post,
)
from tests.worker_support import EFFECTS_TABLE, drain

V2 = "/v2/core/events"


@pytest.fixture
def stripe_api(settings: Settings, monkeypatch) -> Iterator[tuple[FakeStripe, Settings]]:
    """The fake, settings pointing at it, and v2 pages of 3 events (several pages)."""
    monkeypatch.setattr(api, "THIN_PAGE_LIMIT", 3)
    with fake_stripe() as (fake, base):
        yield fake, dataclasses.replace(settings, stripe_api_key=API_KEY,
                                        stripe_api_base=base, retry_base_seconds=0,
                                        retry_cap_seconds=0)


def iso(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def thin_events(fake: FakeStripe, prefix: str, count: int, *, context: str | None = None,
                newest: float | None = None) -> list[dict[str, Any]]:
    """`count` thin events a minute apart (newest first), held and listed by the fake."""
    newest = newest or time.time()
    events = []
    for n in range(count):
        event = {**full_event(f"{prefix}_{n}", context), "created": iso(newest - 60 * n)}
        fake.add_thin(event, meter())
        events.append(event)
    return events


def run_cli(settings: Settings, *args: str) -> int:
    parsed = build_parser().parse_args(["reconcile", "stripe", *args])
    return parsed.func(parsed, settings)


def thin_block(out: str) -> str:
    """The thin listing's part of the command's output."""
    return out[out.index("listing Stripe thin events"):]


def test_missed_thin_events_are_added_once_and_handled_with_the_full_event(
        client, clock, db, stripe_api, capsys):
    fake, settings = stripe_api
    events = thin_events(fake, "evt_test_thin_rec", 8)
    delivered = events[::3]  # 3 of 8 reached the inbox by webhook
    for event in delivered:
        assert post(client, clock, notification_bytes(event["id"])).status_code == 200

    assert run_cli(settings) == 0
    out = thin_block(capsys.readouterr().out)
    assert "found:          8" in out and "already stored: 3" in out
    assert "added:          5" in out and "(3 page(s)" in out
    listing = fake.requests_of(V2)
    assert [r["status"] for r in listing] == [200, 200, 200]
    assert listing[0]["args"]["limit"] == ["3"]
    since = datetime.fromisoformat(listing[0]["args"]["created[gte]"][0].replace("Z", "+00:00"))
    assert since.timestamp() == pytest.approx(time.time() - 3 * 86400, abs=60)
    assert [list(r["args"]) for r in listing[1:]] == [["page"], ["page"]]  # next_page_url
    stored = {row[0]: row[1:] for row in db.execute(
        "SELECT event_id, source, event_type, account, payload, raw_body FROM inbox")}
    assert set(stored) == {e["id"] for e in events}
    for event in events:
        source, event_type, account, payload, raw = stored[event["id"]]
        assert (event_type, account) == (TYPE, None)
        if event in delivered:
            assert source == "webhook"
        else:  # the API's event, as listed
            assert source == "api" and payload == event == json.loads(bytes(raw))
    assert db.execute("SELECT last_found, last_added FROM inbox_stripe_reconcile "
                      "WHERE scope = 'stripe-thin'").fetchone() == (8, 5)

    seen: dict[str, tuple[Any, ...]] = {}

    def meter_errors(event, tx):
        full = event.stripe_event()
        seen[event.id] = (full.id, full.data["developer_message_summary"],
                          event.related_object().object)
        tx.execute("INSERT INTO effects (event_id, attempt) VALUES (%s, %s)",
                   [event.id, event.attempt])

    db.execute(EFFECTS_TABLE)
    registry = Registry()
    registry.register("stripe", TYPE, meter_errors)
    worker = Worker(settings, registry, name="thin-reconcile-test")
    try:
        assert drain(worker.run_once) == 8
    finally:
        worker.close()
    assert seen == {e["id"]: (e["id"], "There is 1 invalid event", "billing.meter")
                    for e in events}
    assert db.execute("SELECT count(*), count(DISTINCT event_id) FROM effects"
                      ).fetchone() == (8, 8)

    assert run_cli(settings) == 0  # a second run adds nothing
    out = thin_block(capsys.readouterr().out)
    assert "already stored: 8" in out and "added:          0" in out
    assert db.execute("SELECT count(*) FROM inbox").fetchone()[0] == 8


def test_a_rate_limited_v2_page_is_asked_again(db, stripe_api):
    fake, settings = stripe_api
    thin_events(fake, "evt_test_thin_429", 7)

    def limit_next_page(result):
        if result.pages == 1:
            fake.rate_limit(1, retry_after="0")

    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        result = reconcile(conn, settings, api.Listing(since=int(time.time()) - 3600),
                           thin=True, progress=limit_next_page)
    assert (result.found, result.added, result.pages) == (7, 7, 3)
    assert fake.statuses(V2) == [200, 429, 200, 200]
    refused, again = fake.requests_of(V2)[1:3]
    assert refused["args"] == again["args"] and list(again["args"]) == ["page"]


def test_dry_run_lists_the_missing_thin_events_and_changes_nothing(client, clock, db,
                                                                   stripe_api, capsys):
    fake, settings = stripe_api
    events = thin_events(fake, "evt_test_thin_dry", 4)
    post(client, clock, notification_bytes(events[1]["id"]))
    before = db.execute("SELECT id, event_id, status FROM inbox ORDER BY id").fetchall()
    assert run_cli(settings, "--dry-run", "--only", "thin") == 0
    out = capsys.readouterr().out
    assert fake.requests_of("/v1/events") == []  # --only thin
    assert db.execute("SELECT id, event_id, status FROM inbox ORDER BY id").fetchall() == before
    assert db.execute("SELECT count(*) FROM inbox_stripe_reconcile").fetchone()[0] == 0
    listed = [line.split()[2:4] for line in out.splitlines() if line.startswith("would add ")]
    assert listed == [[e["id"], TYPE] for e in events if e is not events[1]]
    assert "would add:      3 (dry run: nothing changed)" in out


def test_a_connected_accounts_thin_events_are_listed_in_its_context(db, stripe_api, capsys):
    fake, settings = stripe_api
    thin_events(fake, "evt_test_thin_platform", 2)
    connected = thin_events(fake, "evt_test_thin_ctx", 2, context=ACCOUNT)
    assert run_cli(settings, "--account", ACCOUNT, "--only", "thin") == 0
    assert {r["context"] for r in fake.requests_of(V2)} == {ACCOUNT}  # Stripe-Context
    assert dict(db.execute("SELECT event_id, account FROM inbox").fetchall()) == {
        e["id"]: ACCOUNT for e in connected}
    assert db.execute("SELECT scope FROM inbox_stripe_reconcile").fetchone()[0] == (
        f"stripe-thin:{ACCOUNT}")


def test_automatic_reconciliation_picks_up_a_thin_event_missed_after_its_watermark(
        db, stripe_api, monkeypatch):
    from inbox.stripe import reconcile as module

    fake, settings = stripe_api
    settings = dataclasses.replace(settings, stripe_reconcile_seconds=3600)
    monkeypatch.setattr(module, "_next_look", {})
    thin_events(fake, "evt_test_thin_auto", 2, newest=time.time() - 7200)
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        assert module.reconcile_if_due(conn, settings) is not None
        assert db.execute("SELECT count(*) FROM inbox").fetchone()[0] == 2
        # An hour later, a thin event created since the last run was never delivered.
        conn.execute("UPDATE inbox_stripe_reconcile SET last_run_at = last_run_at - "
                     "interval '1 hour', watermark = watermark - 3600")
        [missed] = thin_events(fake, "evt_test_thin_auto_missed", 1)
        monkeypatch.setattr(module, "_next_look", {})
        assert module.reconcile_if_due(conn, settings) is not None
    second = fake.requests_of(V2)[-1]["args"]["created[gte]"][0]
    since = datetime.fromisoformat(second.replace("Z", "+00:00")).timestamp()
    assert since == pytest.approx(time.time() - 3600 - module.WATERMARK_OVERLAP_SECONDS, abs=60)
    assert db.execute("SELECT source FROM inbox WHERE event_id = %s",
                      [missed["id"]]).fetchone() == ("api",)
    assert db.execute("SELECT scope, last_trigger, last_found, last_added, last_error "
                      "FROM inbox_stripe_reconcile ORDER BY scope").fetchall() == [
        ("stripe", "automatic", 0, 0, None), ("stripe-thin", "automatic", 1, 1, None)]


def test_handled_only_asks_each_listing_for_its_own_handled_types(db, stripe_api, tmp_path,
                                                                   monkeypatch, capsys):
    from inbox.worker import registry

    (tmp_path / "thin_reconcile_handlers.py").write_text(
        "from inbox import handler\n\n"
        "@handler('stripe', 'invoice.paid')\ndef paid(event, tx): pass\n\n"
        f"@handler('stripe', '{TYPE}')\ndef meter(event, tx): pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "default_registry", Registry())
    fake, settings = stripe_api
    thin_events(fake, "evt_test_thin_handled", 2)
    settings = dataclasses.replace(settings, handler_modules=("thin_reconcile_handlers",))
    assert run_cli(settings, "--handled-only") == 0
    [v1] = fake.requests_of("/v1/events")
    assert [v for k, v in v1["args"].items() if k.startswith("types[")] == [["invoice.paid"]]
    [v2] = fake.requests_of(V2)
    assert [v for k, v in v2["args"].items() if k.startswith("types[")] == [[TYPE]]
    assert db.execute("SELECT count(*) FROM inbox").fetchone()[0] == 2
