"""The example handlers (handlers/billing.py) on the nine Stripe fixture events.

In order, shuffled or reversed, the final state is the same: a late event never moves an
object backwards. An unknown customer is retried, then dead, and a replay after the user
exists processes it. (These tests migrate the example app as a release would: no demo
seed, so the fixture customer is unknown until a test adds it.)
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from inbox.config import Settings
from inbox.migrations import migrate, seed
from inbox.relay.transports.smtp import message_id
from inbox.store import ops
from inbox.worker.loop import Worker
from inbox.worker.registry import Registry, load_handlers, seeds_folder
from tests.support import REPO, signed_headers, stripe_event_files, wait_for
from tests.test_relay import count_status, relay_settings, running_relay
from tests.test_relay import outbox as relay_outbox
from tests.test_transports_smtp import smtp_server
from tests.worker_support import drain, event_row, statuses

CUSTOMER = "cus_QXg1o8vcGmoR32"
SUBSCRIPTION = "sub_1Pgc6rB7WZ01zgkWNy0Cn5nw"
INVOICE = "in_1Pgc6tB7WZ01zgkWu9fdqL6I"
INTENT = "pi_1PgafyB7WZ01zgkWSjxsAJo3"
PRICE = "price_1PgafmB7WZ01zgkW6dKueIc5"

# Where the story ends, whatever the arrival order.
FINAL_STATE: dict[str, list[tuple[Any, ...]]] = {
    "app_users": [("jenny@example.com", CUSTOMER, "free", "canceled")],
    "subscriptions": [(SUBSCRIPTION, "canceled", PRICE, True, 1727310854, 1725064454,
                       1727310854)],
    "invoices": [(INVOICE, SUBSCRIPTION, "7FE1103-0002", "paid", 2000, 2000, "usd", 2,
                  "https://pay.stripe.com/invoice/acct_1PgafTB7WZ01zgkW/"
                  "test_TdhBQq5QzTFPQ3LWQDQx5y10/pdf")],
    "payments": [(INTENT, "refunded", 1099, "usd", 1099, "ch_1PgafuB7WZ01zgkWXYmPNZs8", None)],
    "orders": [("cs_test_a1YS1URlnyQCN5fUUduORoQ7Pw41PJqDWkIVQCpJPqkfIhd6tVY8XB1OLY", INTENT,
                "example@example.com", 1099, "usd", "refunded")],
}
STATE_QUERIES = {
    "app_users": "SELECT email, stripe_customer_id, plan, plan_status FROM app_users",
    "subscriptions": "SELECT stripe_subscription_id, status, price_id, cancel_at_period_end,"
                     " extract(epoch FROM cancel_at)::bigint,"
                     " extract(epoch FROM canceled_at)::bigint,"
                     " extract(epoch FROM ended_at)::bigint FROM subscriptions",
    "invoices": "SELECT stripe_invoice_id, stripe_subscription_id, number, status, amount_due,"
                " amount_paid, currency, attempt_count, invoice_pdf FROM invoices",
    "payments": "SELECT stripe_payment_intent_id, status, amount, currency, amount_refunded,"
                " latest_charge, failure_message FROM payments",
    "orders": "SELECT stripe_checkout_session_id, stripe_payment_intent_id, email,"
              " amount_total, currency, status FROM orders",
}


@pytest.fixture
def billing_db(database_url: str, db: psycopg.Connection) -> psycopg.Connection:
    """The test database with the example app's tables (its own migration)."""
    applied = migrate(database_url, handler_modules=("handlers",))
    assert applied == ["handlers/0001_billing.sql"]
    return db


@pytest.fixture
def registry() -> Registry:
    return load_handlers(["handlers"])


@pytest.fixture
def worker(database_url: str, registry: Registry) -> Iterator[Worker]:
    settings = Settings(database_url=database_url, max_attempts=3, retry_base_seconds=0.0,
                        retry_cap_seconds=0.0)
    worker = Worker(settings, registry, name="billing-test")
    yield worker
    worker.close()


def add_user(db: psycopg.Connection) -> None:
    db.execute("INSERT INTO app_users (email, stripe_customer_id) VALUES (%s, %s)",
               ["jenny@example.com", CUSTOMER])


def store_events(db: psycopg.Connection, files: list[Path]) -> None:
    """Deliver the files in this order (as the receiver stores them: payload + raw bytes)."""
    for path in files:
        body = path.read_bytes()
        document = json.loads(body)
        db.execute(
            "INSERT INTO inbox (provider, event_id, event_type, payload, raw_body)"
            " VALUES ('stripe', %s, %s, %s::jsonb, %s)",
            [document["id"], document["type"], body.decode(), body],
        )


def final_state(db: psycopg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    return {table: db.execute(sql).fetchall() for table, sql in STATE_QUERIES.items()}


def in_created_order() -> list[Path]:
    return sorted(stripe_event_files(), key=lambda p: json.loads(p.read_bytes())["created"])


def orders() -> dict[str, list[Path]]:
    ordered = in_created_order()
    cases = {"in-order": ordered, "reversed": ordered[::-1]}
    for shuffle_seed in (1, 2, 3):
        shuffled = ordered[:]
        random.Random(shuffle_seed).shuffle(shuffled)
        cases[f"shuffled-{shuffle_seed}"] = shuffled
    return cases


def test_the_example_migration_is_applied_once_and_recorded(database_url, billing_db):
    assert migrate(database_url, handler_modules=("handlers",)) == []
    assert billing_db.execute("SELECT module, name FROM inbox_app_migrations").fetchall() == [
        ("handlers", "0001_billing.sql")
    ]


def test_the_demo_seed_is_for_inbox_dev_only_and_makes_the_story_work(database_url,
                                                                      billing_db, worker):
    """`inbox dev` applies handlers/seeds/ (the fixture story's customer) after migrating;
    `inbox migrate` (a production release) never does."""
    assert billing_db.execute("SELECT count(*) FROM app_users").fetchone()[0] == 0
    assert seeds_folder("handlers") == ("handlers", REPO / "handlers" / "seeds")
    assert seed(database_url, ("handlers",)) == ["handlers/seeds/0001_demo_customer.sql"]
    assert seed(database_url, ("handlers", "handlers")) == [  # again: idempotent, once each
        "handlers/seeds/0001_demo_customer.sql"]
    assert billing_db.execute("SELECT email, stripe_customer_id FROM app_users").fetchall() == [
        ("jenny@example.com", CUSTOMER)]
    assert billing_db.execute("SELECT name FROM inbox_app_migrations").fetchall() == [
        ("0001_billing.sql",)]  # seeds are not migrations: nothing recorded
    assert seed(database_url, ()) == []

    store_events(billing_db, in_created_order())
    drain(worker.run_once)
    assert statuses(billing_db) == {"processed": 9}
    assert final_state(billing_db) == FINAL_STATE


@pytest.mark.parametrize("order", list(orders()), ids=str)
def test_the_nine_fixture_events_end_in_the_same_state_in_any_order(order, billing_db, worker):
    add_user(billing_db)
    store_events(billing_db, orders()[order])
    drain(worker.run_once)
    assert statuses(billing_db) == {"processed": 9}
    assert final_state(billing_db) == FINAL_STATE


def test_in_order_the_story_sends_its_emails(billing_db, worker):
    add_user(billing_db)
    store_events(billing_db, in_created_order())
    drain(worker.run_once)
    messages = {topic: payload for topic, payload in billing_db.execute(
        "SELECT topic, payload FROM outbox ORDER BY id")}
    assert set(messages) == {"email.dunning", "email.receipt", "email.subscription_ended",
                             "email.order_confirmation", "fulfilment.ship"}
    assert messages["email.receipt"]["to"] == "jenny@example.com"
    assert messages["email.receipt"]["invoice_pdf"] == FINAL_STATE["invoices"][0][-1]
    assert messages["email.dunning"]["pay_url"].startswith("https://invoice.stripe.com/")
    assert messages["email.order_confirmation"]["to"] == "example@example.com"


def test_the_fixture_events_through_the_receiver(client, clock, billing_db, worker):
    add_user(billing_db)
    for path in in_created_order():
        body = path.read_bytes()
        response = client.post("/webhooks/stripe", data=body,
                               headers=signed_headers(body, int(clock.now)))
        assert response.status_code == 200
    drain(worker.run_once)
    assert final_state(billing_db) == FINAL_STATE


def by_type(event_type: str) -> Path:
    return next(p for p in stripe_event_files() if p.name == f"{event_type}.json")


def test_the_story_emails_are_emails_an_smtp_server_accepts(database_url, billing_db, worker,
                                                             tmp_path):
    """The nine fixture events, plus their refund with a receipt address (the fixture's has
    none, so it sends no email), then the relay with email.* routed to a real SMTP server."""
    add_user(billing_db)
    refund = json.loads(by_type("charge.refunded").read_bytes())
    refund["id"] = "evt_refund_with_receipt_email"
    refund["created"] += 1
    refund["data"]["object"]["receipt_email"] = "example@example.com"
    (tmp_path / "refund.json").write_text(json.dumps(refund))
    store_events(billing_db, [*in_created_order(), tmp_path / "refund.json"])
    drain(worker.run_once)
    assert statuses(billing_db) == {"processed": 10}

    with smtp_server() as (mailbox, port):
        routes = f"email.*=smtp://127.0.0.1:{port}?from=billing@shop.example,*=log:"
        with running_relay(relay_settings(database_url, routes)):
            wait_for(lambda: count_status(billing_db, "pending") == 0, "every message done")
    rows = list(relay_outbox(billing_db).values())
    emails = {row["topic"]: row for row in rows if row["topic"].startswith("email.")}
    assert set(emails) == {"email.dunning", "email.receipt", "email.subscription_ended",
                           "email.order_confirmation", "email.refund"}
    assert {row["topic"]: (row["status"], row["last_error"]) for row in rows} == {
        row["topic"]: ("sent", None) for row in rows}
    received = {"".join(str(email["Message-ID"]).split()): email
                for _, _, email in mailbox.received}
    assert len(received) == len(emails) == len(mailbox.received)
    for topic, row in emails.items():
        email = received[message_id(row["idempotency_key"])]
        assert email["To"] == row["payload"]["to"] and email["Subject"], topic
        assert email.get_body(("plain",)).get_content().strip(), topic

    receipt = received[message_id(emails["email.receipt"]["idempotency_key"])]
    assert receipt["To"] == "jenny@example.com"
    assert receipt["Subject"] == "Receipt for invoice 7FE1103-0002: 20.00 USD paid"
    text = receipt.get_body(("plain",)).get_content()
    assert FINAL_STATE["invoices"][0][-1] in text  # the invoice PDF link
    assert "20.00 USD" in text and "https://invoice.stripe.com/i/" in text
    dunning = received[message_id(emails["email.dunning"]["idempotency_key"])]
    assert "https://invoice.stripe.com/i/" in dunning.get_body(("plain",)).get_content()
    refund_email = received[message_id(emails["email.refund"]["idempotency_key"])]
    assert refund_email["Subject"] == "Refund of 10.99 USD"


def test_a_late_update_does_not_resurrect_a_deleted_subscription(billing_db, worker):
    add_user(billing_db)
    store_events(billing_db, [by_type("customer.subscription.created"),
                              by_type("customer.subscription.deleted"),
                              by_type("customer.subscription.updated"),
                              by_type("invoice.paid")])
    drain(worker.run_once)
    assert final_state(billing_db)["subscriptions"][0][1] == "canceled"
    assert final_state(billing_db)["app_users"] == FINAL_STATE["app_users"]
    topics = [row[0] for row in billing_db.execute("SELECT topic FROM outbox")]
    assert topics.count("email.subscription_ended") == 1


def test_a_late_payment_failure_sends_no_dunning_email(billing_db, worker):
    add_user(billing_db)
    store_events(billing_db, [by_type("invoice.paid"), by_type("invoice.payment_failed")])
    drain(worker.run_once)
    assert final_state(billing_db)["invoices"][0][3] == "paid"
    assert final_state(billing_db)["app_users"][0][3] == "active"
    assert [r[0] for r in billing_db.execute("SELECT topic FROM outbox")] == ["email.receipt"]


def test_an_unknown_customer_is_retried_then_dead_and_replayed_once_known(billing_db, worker):
    paid = by_type("invoice.paid")
    store_events(billing_db, [paid])
    event_id = json.loads(paid.read_bytes())["id"]
    drain(worker.run_once)
    row = event_row(billing_db, event_id)
    assert (row["status"], row["attempts"]) == ("dead", 3)
    assert row["last_error"] == f"LookupError: unknown customer {CUSTOMER}"
    # No email; the one message is the operator's alert that the event is dead.
    assert [r[0] for r in billing_db.execute("SELECT topic FROM outbox")] == [
        "inbox.alert.event_dead"]

    add_user(billing_db)
    assert ops.replay_events(billing_db, [event_id]) == [("stripe", event_id)]
    drain(worker.run_once)
    assert event_row(billing_db, event_id)["status"] == "processed"
    assert final_state(billing_db)["app_users"][0][2:] == ("free", "active")
    assert billing_db.execute("SELECT count(*) FROM outbox WHERE topic = 'email.receipt'"
                              ).fetchone()[0] == 1
