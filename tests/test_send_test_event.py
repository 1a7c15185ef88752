"""`inbox send-test-event` through a subprocess, against the real receiver on a loopback port."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import zipfile

import pytest

from inbox.cli.send_test_event import fresh_event, new_event_id
from inbox.config import Settings
from inbox.fixtures import STRIPE_STORY, stripe_event_bytes
from inbox.providers.stripe import StripeProvider
from inbox.web import create_app
from tests.cli_support import cli_env, inbox
from tests.support import FIXTURES, REPO, TEST_SECRET, serve_wsgi, stripe_event_files


@pytest.fixture
def receiver(settings):
    """The receiver app served on 127.0.0.1; yields its webhook URL."""
    app = create_app(settings)
    try:
        with serve_wsgi(app) as base:
            yield f"{base}/webhooks/stripe"
    finally:
        app.extensions["inbox.database"].close()


def stored(db) -> list[tuple]:
    return db.execute(
        "SELECT event_id, event_type, payload, raw_body, signature FROM inbox ORDER BY id"
    ).fetchall()


def test_the_packaged_events_are_the_fixtures_sources_describe():
    """The one copy of the nine events (inbox/fixtures/stripe/) is, byte for byte, what
    tests/fixtures/stripe/source/changes.json records (sha256 of each file)."""
    shared = {path.stem: path.read_bytes() for path in stripe_event_files()}
    assert set(shared) == set(STRIPE_STORY)
    changes = json.loads((FIXTURES / "stripe" / "source" / "changes.json").read_text())
    for event_type, body in shared.items():
        assert stripe_event_bytes(event_type) == body
        assert hashlib.sha256(body).hexdigest() == changes[event_type]["file_sha256"]
    created = [json.loads(stripe_event_bytes(t))["created"] for t in STRIPE_STORY]
    assert created == sorted(created)  # STRIPE_STORY is the story's order


def test_fresh_event_changes_only_id_and_created():
    template = stripe_event_bytes("invoice.paid")
    event_id = new_event_id()
    body = fresh_event(template, event_id=event_id, created=1_800_000_000)
    original, fresh = json.loads(template), json.loads(body)
    assert event_id.startswith("evt_test_") and len(event_id) > 20
    assert new_event_id() != event_id
    assert (fresh["id"], fresh["created"]) == (event_id, 1_800_000_000)
    assert list(fresh) == list(original)  # key order kept: id and object first
    assert {**fresh, "id": original["id"], "created": original["created"]} == original


def test_one_event_signed_with_the_configured_secret(receiver, db, tmp_path):
    env = cli_env(tmp_path, STRIPE_WEBHOOK_SECRET=f"{TEST_SECRET},whsec_older")
    result = inbox("send-test-event", "invoice.paid", "--url", receiver, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    ((event_id, event_type, payload, raw, signature),) = stored(db)
    assert event_type == "invoice.paid" and event_id.startswith("evt_test_")
    status, kind, sent_id, answer = result.stdout.splitlines()[0].split(" ", 3)
    assert (status, kind, sent_id) == ("200", "invoice.paid", event_id)
    assert json.loads(answer) == {"received": True, "duplicate": False}
    assert payload["data"] == json.loads(stripe_event_bytes("invoice.paid"))["data"]
    # The stored bytes verify again, later, with the stored header.
    provider = StripeProvider((TEST_SECRET,), 300, clock=lambda: payload["created"])
    provider.verify(bytes(raw), signature)


def test_all_sends_the_story_in_order_and_count_repeats(receiver, db, tmp_path):
    env = cli_env(tmp_path, STRIPE_WEBHOOK_SECRET=TEST_SECRET)
    result = inbox("send-test-event", "--all", "--url", receiver, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = stored(db)
    assert [row[1] for row in rows] == list(STRIPE_STORY)
    created = [row[2]["created"] for row in rows]
    assert created == sorted(created) and len(set(created)) == len(created)
    assert "sent 9 event(s)" in result.stdout

    result = inbox("send-test-event", "charge.refunded", "--count", "3", "--url", receiver,
                   env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    refunds = stored(db)[9:]
    assert [row[1] for row in refunds] == ["charge.refunded"] * 3
    assert len({row[0] for row in refunds}) == 3


def test_rejections_are_printed_and_fail(receiver, db, tmp_path):
    env = cli_env(tmp_path, STRIPE_WEBHOOK_SECRET="whsec_not_the_receivers")
    result = inbox("send-test-event", "invoice.paid", "--url", receiver, env=env)
    assert result.returncode == 1
    assert result.stdout.startswith("400 invoice.paid evt_test_")
    assert "not accepted" in result.stdout
    assert stored(db) == []


def test_unreachable_receiver(tmp_path):
    env = cli_env(tmp_path, STRIPE_WEBHOOK_SECRET=TEST_SECRET)
    result = inbox("send-test-event", "invoice.paid", "--url",
                   "http://127.0.0.1:9/webhooks/stripe", env=env)
    assert result.returncode == 1 and "cannot reach the receiver" in result.stdout


def test_usage_errors(tmp_path):
    env = cli_env(tmp_path, STRIPE_WEBHOOK_SECRET=TEST_SECRET)
    result = inbox("send-test-event", "invoice.nope", env=env)
    assert result.returncode == 2 and "invoice.paid" in result.stderr  # lists the types
    result = inbox("send-test-event", env=env)
    assert result.returncode == 2 and "--all" in result.stderr
    result = inbox("send-test-event", "--list", env=env)
    assert result.returncode == 0 and result.stdout.split() == list(STRIPE_STORY)
    # No secret configured and no `inbox dev` state: say what to do.
    result = inbox("send-test-event", "invoice.paid", env=cli_env(tmp_path / "empty"))
    assert result.returncode == 2 and "inbox dev" in result.stderr


def test_defaults_to_the_dev_secret_and_dev_receiver(database_url, db, tmp_path):
    """With nothing configured it signs with `inbox dev`'s secret and posts to its port."""
    dev_secret = "whsec_dev_for_this_test"
    app = create_app(Settings(database_url=database_url, stripe_webhook_secrets=(dev_secret,)))
    try:
        with serve_wsgi(app) as base:
            port = int(base.rsplit(":", 1)[1])
            (tmp_path / "dev.json").write_text(
                json.dumps({"webhook_secret": dev_secret, "port": port}))
            result = inbox("send-test-event", "customer.subscription.created",
                           env=cli_env(tmp_path))
    finally:
        app.extensions["inbox.database"].close()
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"localhost:{port}/webhooks/stripe" in result.stdout
    assert [row[1] for row in stored(db)] == ["customer.subscription.created"]


def test_the_wheel_ships_the_events(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(REPO)],
        check=True, timeout=180, capture_output=True,
    )
    names = zipfile.ZipFile(next(tmp_path.glob("*.whl"))).namelist()
    for event_type in STRIPE_STORY:
        assert f"inbox/fixtures/stripe/{event_type}.json" in names
