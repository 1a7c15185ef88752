"""Every query in docs/auditing.md, run by real psql on a database with known history.

The ```sql blocks are parsed from the document; each one's first line (a `-- ...`
comment) names it, and each name has a check below. A query added to the document without
a check, or a check whose query was removed, fails the test.
"""

from __future__ import annotations

import csv
import io
import re
import subprocess

import pytest

from inbox.cli.psql import psql_program
from tests import audit_sample
from tests.support import REPO

DOC = REPO / "docs" / "auditing.md"
BLOCK = re.compile(r"^```sql\n(.*?)^```", re.MULTILINE | re.DOTALL)
EVENT_ID = "evt_sample_paid"


def doc_queries() -> dict[str, str]:
    """{first comment line: SQL} for each ```sql block of the document."""
    queries = {}
    for sql in BLOCK.findall(DOC.read_text(encoding="utf-8")):
        first = sql.splitlines()[0]
        assert first.startswith("-- "), f"a query block must open with a -- comment: {first!r}"
        name = first[3:].strip()
        assert name not in queries, f"two query blocks are called {name!r}"
        queries[name] = sql
    return queries


def run_psql(url: str, sql: str, **variables: str) -> list[dict[str, str]]:
    """Run `sql` the way an operator pastes it into psql; rows as dicts of strings."""
    command = [psql_program(), url, "-X", "-q", "--csv", "-v", "ON_ERROR_STOP=1"]
    for name, value in variables.items():
        command += ["-v", f"{name}={value}"]
    result = subprocess.run([*command, "-f", "-"], input=sql, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return list(csv.DictReader(io.StringIO(result.stdout)))


def column(rows: list[dict[str, str]], name: str) -> list[str]:
    return [row[name] for row in rows]


# -- one check per query -------------------------------------------------------------------

def check_glance(rows, s):
    counts = {(r["status"], r["event_type"]): int(r["events"]) for r in rows}
    assert counts == {
        ("dead", "invoice.payment_failed"): 2,
        ("ignored", "charge.refunded"): 1,
        ("pending", "customer.subscription.updated"): 1,
        ("pending", "invoice.paid"): 1,
        ("processed", "customer.subscription.created"): 1,
        ("processed", "invoice.paid"): 1,
    }
    assert all(r["oldest_age"] for r in rows)


def check_inbox_backlog(rows, s):
    assert len(rows) == 1
    row = rows[0]
    assert (row["pending"], row["due_now"], row["in_progress"], row["retrying"]) == (
        "2", "1", "0", "1")
    assert row["oldest_age"].startswith("01:")  # the retrying event, received an hour ago


def check_outbox_backlog(rows, s):
    assert [(r["topic"], r["pending"], r["due_now"]) for r in rows] == [("crm.update", "1", "1")]


def check_finished_per_minute(rows, s):
    assert [(r["status"], r["events"]) for r in rows] == [("ignored", "1")]


def check_attempts_last_hour(rows, s):
    assert {r["outcome"]: int(r["attempts"]) for r in rows} == {"ignored": 1, "retry": 2}


def check_sent_last_hour(rows, s):
    assert [(r["topic"], r["sent"]) for r in rows] == [("email.send", "1")]


def check_failing(rows, s):
    assert [(r["state"], r["event_id"]) for r in rows] == [
        ("dead", "evt_sample_old_dead"), ("dead", "evt_sample_dead"),
        ("retrying", "evt_sample_retrying"),
    ]
    retrying = rows[2]
    assert retrying["attempts"] == "2" and retrying["last_error"] == "ConnectionError: crm down"
    assert retrying["next_attempt_at"] and not rows[0]["next_attempt_at"]


def check_failing_grouped(rows, s):
    assert sorted((r["state"], r["last_error"], r["events"]) for r in rows) == [
        ("dead", "Permanent: card never valid", "1"), ("dead", "Permanent: no", "1"),
        ("retrying", "ConnectionError: crm down", "1"),
    ]


def check_dead_messages(rows, s):
    assert [(r["topic"], r["last_error"], r["event_id"]) for r in rows] == [
        ("partner.notify", "410 Gone", EVENT_ID)]


def check_event(rows, s):
    assert [(r["id"], r["status"], r["attempts"]) for r in rows] == [
        (str(s.paid), "processed", "3")]


def check_timeline(rows, s):
    assert [(r["step"], r["item"], r["outcome"], r["attempt"], r["topic"]) for r in rows] == [
        ("1", "received", "processed", "", ""),
        ("2", "attempt", "retry", "1", ""),
        ("3", "attempt", "retry", "2", ""),
        ("4", "attempt", "processed", "3", ""),
        ("5", "message", "sent", "", "email.send"),
        ("6", "message", "pending", "", "crm.update"),
        ("7", "message", "dead", "", "partner.notify"),
    ]
    assert rows[1]["error"] == "LookupError: unknown customer"
    assert rows[1]["worker"] == "test-worker"


def check_messages_of_event(rows, s):
    assert [(r["topic"], r["status"], r["idempotency_key"]) for r in rows] == [
        ("email.send", "sent", "evt_sample_paid:email"),
        ("crm.update", "pending", "evt_sample_paid:crm"),
        ("partner.notify", "dead", "evt_sample_paid:partner"),
    ]
    assert '"template": "payment_received"' in rows[0]["payload"]


def check_delivery_attempts(rows, s):
    assert [(r["topic"], r["attempt"], r["outcome"], r["http_status"], r["smtp_reply"])
            for r in rows] == [
        ("email.send", "1", "sent", "", "250 2.0.0 Ok: queued as 4F2C1"),
        ("partner.notify", "1", "dead", "410", ""),
    ]
    assert rows[1]["error"] == "410 Gone" and rows[0]["relay"] == "test-relay"
    assert rows[0]["took"] == "00:00:00.08"


def check_customers_yesterday(rows, s):
    # Sorted here: the database's collation decides how it orders "cus_Q…" and "cus_d…".
    assert sorted((r["customer"], r["events"], r["status_now"]) for r in rows) == sorted([
        (audit_sample.CUSTOMER_OK, "1", "processed"),
        (audit_sample.CUSTOMER_DEAD, "1", "dead"),
    ])
    assert all(r["an_error"] for r in rows)
    assert audit_sample.CUSTOMER_RETRY not in column(rows, "customer")  # failed today


def check_customer_events(rows, s):
    assert column(rows, "event_id") == ["evt_sample_old", "evt_sample_paid", "evt_sample_fresh"]


def check_object_events(rows, s):
    assert column(rows, "event_id") == [
        "evt_sample_dead", "evt_sample_old_dead", "evt_sample_paid", "evt_sample_fresh"]
    assert column(rows, "created") == sorted(column(rows, "created"))


CHECKS = {
    "the inbox at a glance": check_glance,
    "the inbox backlog": check_inbox_backlog,
    "the outbox backlog": check_outbox_backlog,
    "events finished per minute in the last hour": check_finished_per_minute,
    "attempts in the last hour by outcome": check_attempts_last_hour,
    "messages sent in the last hour by topic": check_sent_last_hour,
    "failing events, dead first": check_failing,
    "failing events grouped by error": check_failing_grouped,
    "dead outbox messages and their events": check_dead_messages,
    "the event": check_event,
    "the event, step by step": check_timeline,
    "messages caused by the event": check_messages_of_event,
    "delivery attempts of the event's messages": check_delivery_attempts,
    "customers affected by failures yesterday": check_customers_yesterday,
    "events of a customer": check_customer_events,
    "events of an object in provider order": check_object_events,
}


def test_every_query_in_the_doc_has_a_check():
    assert set(doc_queries()) == set(CHECKS)


@pytest.fixture
def sample(db):
    return audit_sample.build(db)


def test_every_query_in_the_doc_answers_correctly(database_url, sample):
    variables = {"event_id": EVENT_ID, "customer": audit_sample.CUSTOMER_OK}
    for name, sql in doc_queries().items():
        rows = run_psql(database_url, sql, **variables)
        try:
            CHECKS[name](rows, sample)
        except AssertionError as exc:
            raise AssertionError(f"query {name!r} answered {rows}") from exc
