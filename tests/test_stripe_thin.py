"""Stripe thin events (event destinations, API v2): signed notifications in Stripe's format
POSTed to the real web app, stored like any delivery, and their full event and related
object fetched through the SDK from the fake of Stripe's API (tests/stripe_fake.py), only
when a handler asks, with no other handler's transaction open while the request waits."""

from __future__ import annotations

import copy
import dataclasses
import json
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from inbox.config import Settings
from inbox.worker.loop import Worker
from inbox.worker.registry import Registry
from tests.stripe_fake import API_KEY, FakeStripe, fake_stripe
from tests.support import REPO, TEST_SECRET, signed_headers, wait_for
from tests.worker_support import EFFECTS_TABLE, drain, insert_events, write_handlers

THIN = REPO / "tests" / "fixtures" / "stripe_thin"
TYPE = "v1.billing.meter.error_report_triggered"
NOTIFICATION = THIN / f"{TYPE}.json"
ACCOUNT = "acct_1ConnectedAbc"


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def full_event(event_id: str, context: str | None = None) -> dict[str, Any]:
    event = load(THIN / f"{TYPE}.event.json")
    return {**event, "id": event_id, "context": context}


def meter() -> dict[str, Any]:
    return load(THIN / "billing.meter.json")


def notification_bytes(event_id: str | None = None, context: str | None = None) -> bytes:
    """The fixture's exact bytes, or a copy with another id/context (same layout)."""
    body = NOTIFICATION.read_bytes()
    if event_id is None and context is None:
        return body
    event = load(NOTIFICATION)
    event["id"] = event_id or event["id"]
    event["context"] = context
    return json.dumps(event, indent=2).encode() + b"\n"


def post(client, clock, body: bytes, secret: str = TEST_SECRET):
    return client.post("/webhooks/stripe", data=body,
                       headers=signed_headers(body, int(clock.now), secret))


@pytest.fixture
def stripe_api(settings: Settings) -> Iterator[tuple[FakeStripe, Settings]]:
    """The fake of Stripe's API, and settings pointing at it (retries due at once)."""
    with fake_stripe() as (fake, base):
        yield fake, dataclasses.replace(settings, stripe_api_key=API_KEY,
                                        stripe_api_base=base, retry_base_seconds=0,
                                        retry_cap_seconds=0)


def run_worker(settings: Settings, registry: Registry, batch_size: int = 100) -> int:
    worker = Worker(settings, registry, name="thin-test", batch_size=batch_size)
    try:
        return drain(worker.run_once)
    finally:
        worker.close()


def registry_of(event_type: str, func: Callable[[Any, Any], Any]) -> Registry:
    registry = Registry()
    registry.register("stripe", event_type, func)
    return registry


def deliver_thin_events(client, clock, fake: FakeStripe, prefix: str, count: int = 3
                        ) -> list[str]:
    """`count` thin events POSTed, their data served by the fake; their ids."""
    ids = [f"{prefix}_{n}" for n in range(count)]
    for event_id in ids:
        fake.add_thin(full_event(event_id), meter())
        post(client, clock, notification_bytes(event_id))
    return ids


def row(db: psycopg.Connection, event_id: str) -> tuple[Any, ...]:
    return db.execute("SELECT status, attempts, last_error FROM inbox WHERE event_id = %s",
                      [event_id]).fetchone()


# -- the receiver ---------------------------------------------------------------------------

def test_a_thin_event_is_stored_like_any_delivery(client, clock, db):
    body = NOTIFICATION.read_bytes()
    assert post(client, clock, body).get_json() == {"received": True, "duplicate": False}
    assert post(client, clock, body).get_json() == {"received": True, "duplicate": True}
    stored = db.execute("SELECT provider, event_id, event_type, raw_body, account, source, "
                        "status, payload->'related_object'->>'url' FROM inbox").fetchall()
    event = load(NOTIFICATION)
    assert stored == [("stripe", event["id"], TYPE, body, None, "webhook", "pending",
                       event["related_object"]["url"])]


def test_a_connected_accounts_thin_event_keeps_its_context_as_account(client, clock, db):
    assert post(client, clock, notification_bytes("evt_test_ctx", ACCOUNT)).status_code == 200
    assert db.execute("SELECT account FROM inbox").fetchone() == (ACCOUNT,)


def test_a_thin_event_with_a_bad_signature_is_refused_and_not_stored(client, clock, db):
    body = NOTIFICATION.read_bytes()
    refused = post(client, clock, body, secret="whsec_not_the_destinations_secret")
    assert refused.status_code == 400
    assert refused.get_json()["error"] == "InvalidSignature"
    tampered = client.post("/webhooks/stripe", data=body.replace(b"false", b"true "),
                           headers=signed_headers(body, int(clock.now)))
    assert tampered.status_code == 400
    assert db.execute("SELECT count(*) FROM inbox").fetchone()[0] == 0


# -- handlers -------------------------------------------------------------------------------

def test_end_to_end_the_handler_gets_the_full_event_and_related_object(
        client, clock, db, stripe_api):
    fake, settings = stripe_api
    event_id = load(NOTIFICATION)["id"]
    fake.add_thin(full_event(event_id), meter())
    assert post(client, clock, NOTIFICATION.read_bytes()).status_code == 200
    seen: list[tuple[Any, ...]] = []

    def meter_errors(event, tx):
        full = event.stripe_event()
        related = event.related_object()
        assert event.stripe_event() is full and event.related_object() is related  # cached
        seen.append((full.id, full.data["developer_message_summary"], related.object,
                     related.display_name, event.account, event.attempt))
        tx.execute("INSERT INTO effects (event_id, attempt) VALUES (%s, %s)",
                   [event.id, event.attempt])

    db.execute(EFFECTS_TABLE)
    assert run_worker(settings, registry_of(TYPE, meter_errors)) == 1
    assert seen == [(event_id, "There is 1 invalid event", "billing.meter",
                     "Search API Calls", None, 1)]
    assert fake.paths() == [f"/v2/core/events/{event_id}",
                            load(NOTIFICATION)["related_object"]["url"]]
    assert row(db, event_id) == ("processed", 1, None)
    assert db.execute("SELECT count(*) FROM effects").fetchone()[0] == 1
    # and again: a processed event is never fetched (nor run) a second time
    assert run_worker(settings, registry_of(TYPE, meter_errors)) == 0
    assert len(fake.requests) == 2


THIN_HANDLERS = textwrap.dedent(
    """
    from inbox import handler

    @handler("stripe", "v1.billing.meter.error_report_triggered")
    def meter_errors(event, tx):
        full = event.stripe_event()
        meter = event.related_object()
        tx.execute("INSERT INTO thin_seen VALUES (%s, %s, %s)",
                   [event.id, full.data["developer_message_summary"], meter.display_name])
    """
)


def test_an_inbox_worker_process_fetches_from_stripe_api_base(client, clock, db, workers):
    """`inbox worker` as deployed: STRIPE_API_KEY and STRIPE_API_BASE from the environment."""
    db.execute("CREATE TABLE thin_seen (event_id text, summary text, meter text)")
    write_handlers(workers.handlers_dir, THIN_HANDLERS)
    event_id = load(NOTIFICATION)["id"]
    assert post(client, clock, NOTIFICATION.read_bytes()).status_code == 200
    with fake_stripe() as (fake, base):
        fake.add_thin(full_event(event_id), meter())
        workers.start(STRIPE_API_KEY=API_KEY, STRIPE_API_BASE=base)
        wait_for(lambda: row(db, event_id)[0] == "processed", "the thin event processed")
        assert fake.paths() == [f"/v2/core/events/{event_id}",
                                load(NOTIFICATION)["related_object"]["url"]]
    assert db.execute("SELECT * FROM thin_seen").fetchall() == [
        (event_id, "There is 1 invalid event", "Search API Calls")]
    assert row(db, event_id)[:2] == ("processed", 1)


def test_a_connected_accounts_event_is_fetched_in_its_context(client, clock, db, stripe_api):
    fake, settings = stripe_api
    fake.add_thin(full_event("evt_test_ctx", ACCOUNT), meter())
    post(client, clock, notification_bytes("evt_test_ctx", ACCOUNT))
    accounts = []
    run_worker(settings, registry_of(TYPE, lambda event, tx: accounts.append(
        (event.account, event.stripe_event().context))))
    assert accounts == [(ACCOUNT, ACCOUNT)]
    assert [r["context"] for r in fake.requests] == [ACCOUNT]  # the Stripe-Context header


def test_nothing_is_fetched_unless_the_handler_asks(client, clock, db, stripe_api):
    fake, settings = stripe_api
    post(client, clock, NOTIFICATION.read_bytes())
    types = []
    assert run_worker(settings, registry_of(TYPE, lambda event, tx: types.append(
        (event.type, event.payload["related_object"]["type"])))) == 1
    assert types == [(TYPE, "billing.meter")]
    assert fake.requests == []


def test_an_api_failure_is_retried_then_processed(client, clock, db, stripe_api):
    fake, settings = stripe_api
    event_id = load(NOTIFICATION)["id"]
    fake.add_thin(full_event(event_id), meter())
    fake.fail(f"/v2/core/events/{event_id}", 500)
    post(client, clock, NOTIFICATION.read_bytes())
    calls = []
    run_worker(settings, registry_of(TYPE, lambda event, tx: calls.append(
        event.stripe_event().type)))
    assert calls == [TYPE]  # the first attempt raised before appending
    assert fake.statuses() == [500, 200]  # the SDK did not retry on its own
    assert row(db, event_id)[:2] == ("processed", 2)
    history = db.execute("SELECT outcome, error FROM inbox_attempts ORDER BY attempt").fetchall()
    assert [outcome for outcome, _ in history] == ["retry", "processed"]
    assert history[0][1].startswith("StripeFetchError: fetching the event of "
                                    f"{event_id} failed (500)")


def test_a_404_is_permanent(client, clock, db, stripe_api):
    fake, settings = stripe_api
    event_id = load(NOTIFICATION)["id"]
    fake.add_thin(full_event(event_id))  # the related object is gone
    post(client, clock, NOTIFICATION.read_bytes())
    run_worker(settings, registry_of(TYPE, lambda event, tx: event.related_object()))
    status, attempts, error = row(db, event_id)
    assert (status, attempts) == ("dead", 1)
    assert error.startswith(f"Permanent: Stripe answered 404 for the related_object of "
                            f"{event_id}")


def test_a_snapshot_event_has_no_stripe_event_to_fetch(client, clock, db, stripe_api):
    fake, settings = stripe_api
    [snapshot_id] = insert_events(db, "invoice.paid", 1, provider="stripe",
                                  payload={"id": "evt_1", "object": "event"})
    run_worker(settings, registry_of("invoice.paid", lambda event, tx: event.stripe_event()))
    status, attempts, error = row(db, snapshot_id)  # a handler's bug: retried, then dead
    assert (status, attempts) == ("dead", settings.max_attempts)
    assert error.startswith("NotAThinEvent: the event is not a Stripe thin event "
                            "(object 'event')")
    assert fake.requests == []


# -- no transaction waits for Stripe ------------------------------------------------------

def lock_holders(db: psycopg.Connection) -> list[str]:
    """The worker connections inside a transaction right now."""
    return [state for (state,) in db.execute(
        "SELECT state FROM pg_stat_activity WHERE application_name = 'inbox-worker' "
        "AND xact_start IS NOT NULL AND pid <> pg_backend_pid()").fetchall()]


def test_the_request_waits_after_the_other_handlers_work_committed(
        client, clock, db, stripe_api):
    """A batch: an ordinary event whose handler writes (and locks a row), then a thin event
    whose handler writes first and then asks Stripe. While the request waits, the first
    event is already processed and committed, no worker transaction holds the first's
    row lock, and the thin handler's own write (rolled back and run again, first in the
    next transaction) lands once."""
    fake, settings = stripe_api
    db.execute(EFFECTS_TABLE)
    [ordinary] = insert_events(db, "effect", 1, provider="stripe")
    thin_id = load(NOTIFICATION)["id"]
    fake.add_thin(full_event(thin_id), meter())
    post(client, clock, NOTIFICATION.read_bytes())
    during: list[tuple[Any, ...]] = []
    fake.on_object = lambda path: during.append(
        (row(db, ordinary)[0], lock_holders(db),
         db.execute("SELECT count(*) FROM effects WHERE event_id = %s",
                    [ordinary]).fetchone()[0]))
    runs = []

    def effect(event, tx):
        tx.execute("INSERT INTO effects (event_id, attempt) VALUES (%s, %s)",
                   [event.id, event.attempt])

    def thin(event, tx):
        runs.append(event.id)
        effect(event, tx)
        event.stripe_event()

    registry = registry_of(TYPE, thin)
    registry.register("stripe", "effect", effect)
    assert run_worker(settings, registry) == 2
    [(ordinary_status, holders, ordinary_effects)] = during
    assert ordinary_status == "processed" and ordinary_effects == 1
    # Only the thin handler's own write is open (its new transaction), none of the first's.
    assert holders == ["idle in transaction"]
    assert runs == [thin_id, thin_id]
    assert dict(db.execute("SELECT event_id, count(*) FROM effects GROUP BY 1").fetchall()) \
        == {ordinary: 1, thin_id: 1}
    assert [row(db, e)[0] for e in (ordinary, thin_id)] == ["processed", "processed"]


def test_a_handler_that_asks_first_waits_with_no_transaction_open(
        client, clock, db, stripe_api):
    fake, settings = stripe_api
    ids = deliver_thin_events(client, clock, fake, "evt_test_thin")
    db.execute(EFFECTS_TABLE)
    holders: list[list[str]] = []
    fake.on_object = lambda path: holders.append(lock_holders(db))

    def thin(event, tx):
        summary = event.stripe_event().data["developer_message_summary"]
        tx.execute("INSERT INTO effects (event_id, attempt) VALUES (%s, %s)",
                   [event.id, len(summary)])

    assert run_worker(settings, registry_of(TYPE, thin)) == 3
    assert holders == [[], [], []]
    assert db.execute("SELECT count(*) FROM effects").fetchone()[0] == 3
    assert {row(db, e)[0] for e in ids} == {"processed"}


def test_thin_events_created_orders_apply_if_newer(client, clock, db, stripe_api):
    _, settings = stripe_api
    older = load(NOTIFICATION)
    newer = copy.deepcopy(older)
    newer["id"], newer["created"] = "evt_test_newer", "2024-09-26T17:46:23.000Z"
    for event in (newer, older):  # the newer one arrives first
        post(client, clock, json.dumps(event).encode())
    applied = {}
    run_worker(settings, registry_of(TYPE, lambda event, tx: applied.__setitem__(
        event.id, tx.apply_if_newer("stripe:meter:" + event.payload["related_object"]["id"]))),
        batch_size=1)
    assert applied == {"evt_test_newer": True, older["id"]: False}


# -- prefetch: declared requests made before the batch begins ------------------------------

def test_declared_fetches_are_made_before_the_batch_begins_and_at_once(
        client, clock, db, stripe_api):
    fake, settings = stripe_api
    ids = deliver_thin_events(client, clock, fake, "evt_test_pre")
    db.execute(EFFECTS_TABLE)
    [ordinary] = insert_events(db, "effect", 1, provider="stripe")  # first in the batch
    timeline: list[str] = []
    first_two = threading.Barrier(2, timeout=30)  # broken unless two requests overlap

    def on_object(path: str) -> None:
        timeline.append("request")
        if len([t for t in timeline if t == "request"]) <= 2:
            first_two.wait()
    fake.on_object = on_object

    def effect(event, tx):
        timeline.append("handler")
        tx.execute("INSERT INTO effects (event_id, attempt) VALUES (%s, 1)", [event.id])

    def thin(event, tx):
        timeline.append("handler")
        tx.execute("INSERT INTO effects (event_id, attempt) VALUES (%s, %s)",
                   [event.id, len(event.stripe_event().data["reason"]["error_types"])])
        assert event.related_object().id == meter()["id"]

    registry = Registry()
    registry.register("stripe", TYPE, thin, prefetch=("event", "related_object"))
    registry.register("stripe", "effect", effect)
    assert run_worker(settings, registry) == 4
    assert timeline == ["request"] * 6 + ["handler"] * 4  # no request after the batch began
    assert not first_two.broken
    assert sorted(fake.paths()) == sorted(
        [f"/v2/core/events/{e}" for e in ids] + [meter_url()] * 3)
    assert {row(db, e)[0] for e in [ordinary, *ids]} == {"processed"}
    assert db.execute("SELECT count(*) FROM effects").fetchone()[0] == 4


def meter_url() -> str:
    return load(NOTIFICATION)["related_object"]["url"]


def test_a_prefetch_failure_fails_the_handlers_attempt_without_a_second_request(
        client, clock, db, stripe_api):
    fake, settings = stripe_api
    retried, gone = "evt_test_pre_500", "evt_test_pre_404"
    fake.add_thin(full_event(retried), meter())
    fake.fail(f"/v2/core/events/{retried}", 500)
    post(client, clock, notification_bytes(retried))
    deleted = load(NOTIFICATION)  # its meter was deleted: the related object is a 404
    deleted["id"] = gone
    deleted["related_object"] = {"id": "mtr_test_deleted", "type": "billing.meter",
                                 "url": "/v1/billing/meters/mtr_test_deleted"}
    fake.add_thin(full_event(gone))
    post(client, clock, json.dumps(deleted).encode())
    calls = []
    registry = Registry()

    def thin(event, tx):
        calls.append(event.id)
        event.stripe_event()
        event.related_object()

    registry.register("stripe", TYPE, thin, prefetch=("event", "related_object"))
    run_worker(settings, registry)
    assert row(db, retried)[:2] == ("processed", 2)
    status, attempts, error = row(db, gone)
    assert (status, attempts) == ("dead", 1)
    assert error.startswith("Permanent: Stripe answered 404 for the related_object of "
                            f"{gone}")
    assert sorted(calls) == sorted([retried, gone, retried])
    # Each failure was raised at the handler's call from the prefetch, not asked again:
    # 2 requests per event per attempt, 3 attempts.
    assert sorted(fake.statuses()) == [200] * 4 + [404, 500]


def test_prefetch_takes_only_event_and_related_object():
    registry = Registry()
    with pytest.raises(ValueError, match="prefetch takes a collection of"):
        registry.register("stripe", TYPE, lambda event, tx: None, prefetch=("data",))
    with pytest.raises(ValueError, match="prefetch takes a collection of"):
        registry.register("stripe", TYPE, lambda event, tx: None, prefetch="event")


def test_a_request_the_handler_did_not_declare_is_split_like_any_other(
        client, clock, db, stripe_api):
    fake, settings = stripe_api
    db.execute(EFFECTS_TABLE)
    [ordinary] = insert_events(db, "effect", 1, provider="stripe")  # first in the batch
    [thin_id] = deliver_thin_events(client, clock, fake, "evt_test_undeclared", count=1)
    seen: list[tuple[str, str]] = []
    fake.on_object = lambda path: seen.append((path, row(db, ordinary)[0]))

    def effect(event, tx):
        tx.execute("INSERT INTO effects (event_id, attempt) VALUES (%s, 1)", [event.id])

    def thin(event, tx):
        event.stripe_event()
        event.related_object()  # not declared: asked now, after the others' commit

    registry = Registry()
    registry.register("stripe", TYPE, thin, prefetch=("event",))
    registry.register("stripe", "effect", effect)
    assert run_worker(settings, registry) == 2
    assert seen == [(f"/v2/core/events/{thin_id}", "pending"), (meter_url(), "processed")]
    assert row(db, thin_id)[:2] == ("processed", 1)
