"""Stripe Connect: POST /webhooks/stripe-connect with its own secrets, the event's `account`
stored, given to handlers, filterable, and reconciled per account."""

from __future__ import annotations

import dataclasses
import json

import psycopg
import pytest

from inbox.cli import build_parser
from inbox.config import Settings
from inbox.web import create_app
from inbox.worker.loop import Worker
from inbox.worker.registry import Registry
from tests.stripe_fake import API_KEY, fake_stripe, make_events
from tests.support import TEST_SECRET, signed_headers
from tests.worker_support import drain

CONNECT_NEW = "whsec_connect_new_secret"
CONNECT_OLD = "whsec_connect_old_secret"
ACCOUNT = "acct_1ConnectedAbc"


@pytest.fixture
def connect_settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, stripe_connect_webhook_secrets=(CONNECT_NEW, CONNECT_OLD))


@pytest.fixture
def connect_client(connect_settings, clock):
    app = create_app(connect_settings, clock=clock)
    yield app.test_client()
    app.extensions["inbox.database"].close()


def post(client, clock, event, secret, path="/webhooks/stripe-connect"):
    body = json.dumps(event, indent=2).encode()
    return client.post(path, data=body, headers=signed_headers(body, int(clock.now), secret))


def test_connect_events_are_stored_under_stripe_with_their_account(connect_client, clock, db):
    new, old = make_events(2, account=ACCOUNT)
    assert post(connect_client, clock, new, CONNECT_NEW).get_json() == {
        "received": True, "duplicate": False}
    assert post(connect_client, clock, old, CONNECT_OLD).status_code == 200  # rotation
    rows = db.execute("SELECT provider, event_id, account, source FROM inbox "
                      "ORDER BY event_id").fetchall()
    assert rows == sorted([("stripe", new["id"], ACCOUNT, "webhook"),
                           ("stripe", old["id"], ACCOUNT, "webhook")], key=lambda r: r[1])


def test_each_endpoint_takes_only_its_own_secrets(connect_client, clock, db):
    [event] = make_events(1, account=ACCOUNT)
    refused = post(connect_client, clock, event, TEST_SECRET)  # the account endpoint's
    assert refused.status_code == 400
    assert refused.get_json()["error"] == "InvalidSignature"
    assert post(connect_client, clock, event, CONNECT_NEW,
                path="/webhooks/stripe").status_code == 400
    assert db.execute("SELECT count(*) FROM inbox").fetchone()[0] == 0


def test_without_a_connect_secret_the_endpoint_refuses_everything(client, clock):
    [event] = make_events(1, account=ACCOUNT)
    answer = post(client, clock, event, CONNECT_NEW)
    assert answer.status_code == 400
    assert "STRIPE_CONNECT_WEBHOOK_SECRET" in answer.get_json()["detail"]


def test_stale_connect_signatures_are_refused_like_the_account_endpoints(connect_client, clock):
    [event] = make_events(1, account=ACCOUNT)
    body = json.dumps(event).encode()
    stale = signed_headers(body, int(clock.now) - 301, CONNECT_NEW)
    assert connect_client.post("/webhooks/stripe-connect", data=body,
                               headers=stale).status_code == 400


def test_one_event_through_both_endpoints_and_reconcile_is_one_row(connect_client, clock, db,
                                                                    connect_settings, capsys):
    [event] = make_events(1, account=ACCOUNT)
    assert post(connect_client, clock, event, CONNECT_NEW).get_json()["duplicate"] is False
    again = post(connect_client, clock, event, TEST_SECRET, path="/webhooks/stripe")
    assert again.get_json() == {"received": True, "duplicate": True}
    with fake_stripe() as (fake, base):
        fake.add([event])
        settings = dataclasses.replace(connect_settings, stripe_api_key=API_KEY,
                                       stripe_api_base=base)
        parsed = build_parser().parse_args(["reconcile", "stripe", "--account", ACCOUNT])
        assert parsed.func(parsed, settings) == 0
        assert fake.requests[0]["account"] == ACCOUNT  # the Stripe-Account header
    assert "already stored: 1" in capsys.readouterr().out
    assert db.execute("SELECT count(*) FROM inbox").fetchone()[0] == 1


def test_reconcile_of_an_account_stores_its_events_with_the_account(settings, db, capsys):
    platform = make_events(3)
    connected = make_events(4, account=ACCOUNT)
    for event in connected[:2]:  # as the API may give them: the account from the header
        del event["account"]
    with fake_stripe() as (fake, base):
        fake.add(platform)
        fake.add([{**e, "account": ACCOUNT} for e in connected])
        settings = dataclasses.replace(settings, stripe_api_key=API_KEY, stripe_api_base=base)
        parsed = build_parser().parse_args(["reconcile", "stripe", "--account", ACCOUNT])
        assert parsed.func(parsed, settings) == 0
    accounts = dict(db.execute("SELECT event_id, account FROM inbox").fetchall())
    assert accounts == {e["id"]: ACCOUNT for e in connected}
    assert db.execute("SELECT array_agg(scope ORDER BY scope) FROM inbox_stripe_reconcile"
                      ).fetchone()[0] == [f"stripe-thin:{ACCOUNT}", f"stripe:{ACCOUNT}"]


def test_handlers_get_the_account_and_the_list_filters_by_it(connect_client, client, clock, db,
                                                             connect_settings, capsys):
    connected = make_events(2, account=ACCOUNT)
    platform = make_events(1)
    for event in connected:
        post(connect_client, clock, event, CONNECT_NEW)
    post(client, clock, platform[0], TEST_SECRET, path="/webhooks/stripe")
    seen = {}
    registry = Registry()
    for event_type in {e["type"] for e in connected + platform}:
        registry.register("stripe", event_type,
                          lambda event, tx: seen.__setitem__(event.id, event.account))
    worker = Worker(connect_settings, registry, name="connect-test")
    try:
        assert drain(worker.run_once) == 3
    finally:
        worker.close()
    assert seen == {connected[0]["id"]: ACCOUNT, connected[1]["id"]: ACCOUNT,
                    platform[0]["id"]: None}

    parsed = build_parser().parse_args(["events", "list", "--account", ACCOUNT, "--json"])
    assert parsed.func(parsed, connect_settings) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {e["event_id"] for e in listed} == {e["id"] for e in connected}
    assert {(e["account"], e["source"]) for e in listed} == {(ACCOUNT, "webhook")}

    parsed = build_parser().parse_args(["events", "list"])
    assert parsed.func(parsed, connect_settings) == 0
    table = capsys.readouterr().out
    assert "ACCOUNT" in table.splitlines()[0] and ACCOUNT in table


def test_the_audit_views_gain_account_and_source_last(db, connect_client, clock):
    [event] = make_events(1, account=ACCOUNT)
    post(connect_client, clock, event, CONNECT_NEW)
    for view in ("inbox_failures", "event_timeline"):
        columns = [c.name for c in db.execute(f"SELECT * FROM {view} LIMIT 0").description]
        assert columns[-2:] == ["account", "source"], view
    row = db.execute("SELECT account, source FROM event_timeline WHERE item = 'received'"
                     ).fetchone()
    assert row == (ACCOUNT, "webhook")


def test_a_psql_auditor_sees_where_each_event_came_from(db: psycopg.Connection):
    assert db.execute("SELECT column_default FROM information_schema.columns "
                      "WHERE table_name = 'inbox' AND column_name = 'source'").fetchone()[0] == (
        "'webhook'::text")
