"""`inbox reconcile stripe` against a fake of Stripe's Events API (tests/stripe_fake.py)."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import random
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from inbox.cli import build_parser
from inbox.config import Settings
from inbox.stripe import api
from inbox.stripe.reconcile import as_received, reconcile
from inbox.web import create_app
from inbox.worker.loop import Worker
from inbox.worker.registry import Registry
from tests.stripe_fake import API_KEY, FakeStripe, fake_stripe, make_events
from tests.support import signed_headers
from tests.worker_support import drain

EFFECTS = "CREATE TABLE effects (event_id text NOT NULL, account text)"
FIXTURE_TYPES = sorted({e["type"] for e in make_events(9)})
V1 = "/v1/events"  # the thin listing (GET /v2/core/events): tests/test_reconcile_thin.py


@pytest.fixture
def stripe_api() -> Iterator[tuple[FakeStripe, str]]:
    with fake_stripe() as served:
        yield served


@pytest.fixture
def fake(stripe_api) -> FakeStripe:
    return stripe_api[0]


@pytest.fixture
def api_settings(settings: Settings, stripe_api) -> Settings:
    return Settings(database_url=settings.database_url,
                    stripe_webhook_secrets=settings.stripe_webhook_secrets,
                    stripe_api_key=API_KEY, stripe_api_base=stripe_api[1])


def run_cli(settings: Settings, *args: str) -> int:
    """`inbox reconcile ...` in this process, with these settings (not the environment)."""
    parsed = build_parser().parse_args(["reconcile", *args])
    return parsed.func(parsed, settings)


def deliver(client, clock, events) -> list[int]:
    """POST each event to the receiver, signed, as Stripe would deliver it."""
    statuses = []
    for event in events:
        body = json.dumps(event, indent=2).encode()
        answer = client.post("/webhooks/stripe", data=body,
                             headers=signed_headers(body, int(clock.now)))
        statuses.append(answer.status_code)
    return statuses


def rows(db: psycopg.Connection) -> dict[str, tuple]:
    found = db.execute("SELECT event_id, source, status, signature, account, raw_body, payload "
                       "FROM inbox WHERE provider = 'stripe'").fetchall()
    return {row[0]: row[1:] for row in found}


def counting_registry(db: psycopg.Connection) -> Registry:
    db.execute(EFFECTS)
    registry = Registry()

    def record(event, tx):
        tx.execute("INSERT INTO effects (event_id, account) VALUES (%s, %s)",
                   [event.id, event.account])

    for event_type in FIXTURE_TYPES:
        registry.register("stripe", event_type, record)
    return registry


def test_reconcile_stores_the_70_missed_of_250_once_and_a_worker_processes_each_once(
        fake, api_settings, client, clock, db, capsys):
    events = make_events(250)
    fake.add(events)
    delivered = [e for i, e in enumerate(events) if i % 25 >= 7]  # 7 of every 25 missed
    assert len(delivered) == 180
    assert deliver(client, clock, delivered) == [200] * 180

    assert run_cli(api_settings, "stripe") == 0
    out = capsys.readouterr().out
    assert "found:          250" in out
    assert "already stored: 180" in out
    assert "added:          70" in out
    stored = rows(db)
    assert set(stored) == {e["id"] for e in events}
    by_id = {e["id"]: e for e in events}
    api_rows = {k: v for k, v in stored.items() if v[0] == "api"}
    assert set(api_rows) == {e["id"] for e in events} - {e["id"] for e in delivered}
    for event_id, (_, status, signature, account, raw, payload) in api_rows.items():
        assert (status, signature, account) == ("pending", None, None)
        assert json.loads(bytes(raw)) == by_id[event_id] == payload
    assert all(v[0] == "webhook" and v[2] for k, v in stored.items() if k not in api_rows)
    # 250 events in pages of 100: three pages, each a request (no rate limit here).
    assert fake.statuses(V1) == [200, 200, 200]
    assert fake.requests[0]["args"]["limit"] == ["100"]  # v1 is listed first
    assert int(fake.requests[0]["args"]["created[gte]"][0]) == pytest.approx(
        time.time() - 3 * 86400, abs=60)
    run = db.execute("SELECT last_trigger, last_found, last_added, watermark IS NOT NULL "
                     "FROM inbox_stripe_reconcile WHERE scope = 'stripe'").fetchone()
    assert run == ("command", 250, 70, True)

    worker = Worker(api_settings, counting_registry(db), name="reconcile-test")
    try:
        assert drain(worker.run_once) == 250
    finally:
        worker.close()
    per_event = db.execute("SELECT event_id, count(*) FROM effects GROUP BY 1").fetchall()
    assert len(per_event) == 250 and {n for _, n in per_event} == {1}

    assert run_cli(api_settings, "stripe") == 0  # a second run adds nothing
    out = capsys.readouterr().out
    assert "already stored: 250" in out and "added:          0" in out
    assert db.execute("SELECT count(*) FROM inbox").fetchone()[0] == 250


def test_a_rate_limit_without_should_retry_is_waited_out_and_asked_again(
        fake, api_settings, db, capsys):
    fake.add(make_events(30))
    fake.rate_limit(1, retry_after="1")
    started = time.monotonic()
    assert run_cli(api_settings, "stripe") == 0
    assert time.monotonic() - started >= 0.9  # Retry-After: 1 was honoured
    assert fake.statuses(V1) == [429, 200]  # the SDK alone did not retry; we did, once
    assert "added:          30" in capsys.readouterr().out


def test_a_rate_limit_that_never_lifts_fails_with_what_was_done(fake, api_settings, db, capsys,
                                                                monkeypatch):
    fake.add(make_events(150))
    monkeypatch.setattr(api, "MAX_RATE_LIMIT_RETRIES", 2)
    pages = []

    def limit_after_first(result):
        pages.append(result.pages)
        fake.rate_limit(10, retry_after="0")

    with (psycopg.connect(api_settings.database_url, autocommit=True) as conn,
          pytest.raises(api.StripeAPIError, match="rate limit")):
        reconcile(conn, api_settings, api.Listing(since=int(time.time()) - 86400),
                  progress=limit_after_first)
    assert pages == [1]
    # The first page stays stored: each page is committed on its own.
    assert db.execute("SELECT count(*) FROM inbox").fetchone()[0] == 100


def test_dry_run_lists_what_it_would_add_and_changes_nothing(fake, api_settings, client, clock,
                                                             db, capsys):
    events = make_events(12)
    fake.add(events)
    deliver(client, clock, events[:5])
    before = db.execute("SELECT id, event_id, status FROM inbox ORDER BY id").fetchall()
    assert run_cli(api_settings, "stripe", "--dry-run") == 0
    out = capsys.readouterr().out
    assert db.execute("SELECT id, event_id, status FROM inbox ORDER BY id").fetchall() == before
    assert db.execute("SELECT count(*) FROM inbox_stripe_reconcile").fetchone()[0] == 0
    listed = [line.split()[2] for line in out.splitlines() if line.startswith("would add ")]
    assert listed == [e["id"] for e in events[5:]]
    assert "would add:      7 (dry run: nothing changed)" in out
    assert "already stored: 5" in out


@pytest.mark.parametrize("since", ["31d", "5w", "2001-01-01"])
def test_since_further_back_than_30_days_is_refused(fake, api_settings, capsys, since):
    assert run_cli(api_settings, "stripe", "--since", since) == 2
    err = capsys.readouterr().err
    assert "30 days" in err and since in err
    assert fake.requests == []


def test_since_30d_and_12h_are_accepted(fake, api_settings, capsys):
    assert run_cli(api_settings, "stripe", "--since", "30d") == 0
    assert run_cli(api_settings, "stripe", "--since", "12h") == 0
    gte = [int(r["args"]["created[gte]"][0]) for r in fake.requests_of(V1)]
    assert gte[0] == pytest.approx(time.time() - 30 * 86400, abs=60)
    assert gte[1] == pytest.approx(time.time() - 12 * 3600, abs=60)


def test_only_events_created_since_are_listed(fake, api_settings, db, capsys):
    fake.add(make_events(10, spacing_seconds=3600))  # the last 9 hours, one an hour
    assert run_cli(api_settings, "stripe", "--since", "4h30m") == 0
    assert "added:          5" in capsys.readouterr().out


def test_handled_only_asks_for_the_handled_types(fake, api_settings, db, capsys, tmp_path,
                                                 monkeypatch):
    (tmp_path / "reconcile_handlers.py").write_text(
        "from inbox import handler\n\n"
        "@handler('stripe', 'invoice.paid')\ndef paid(event, tx): pass\n\n"
        "@handler('stripe', 'charge.refunded')\ndef refunded(event, tx): pass\n\n"
        "@handler('github', 'push')\ndef push(event, tx): pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from inbox.worker import registry

    monkeypatch.setattr(registry, "default_registry", Registry())
    events = make_events(27)
    fake.add(events)
    settings = dataclasses.replace(api_settings, handler_modules=("reconcile_handlers",))
    assert run_cli(settings, "stripe", "--handled-only") == 0
    assert fake.requests[0]["args"]["types[0]"] == ["charge.refunded"]
    assert fake.requests[0]["args"]["types[1]"] == ["invoice.paid"]
    wanted = {e["id"] for e in events if e["type"] in ("invoice.paid", "charge.refunded")}
    assert set(rows(db)) == wanted and len(wanted) == 6


def test_more_than_20_types_are_listed_20_at_a_time(fake, api_settings, db):
    types = (*(f"type.{n:02d}" for n in range(45)), "invoice.paid")
    events = make_events(18)
    fake.add(events)
    with psycopg.connect(api_settings.database_url, autocommit=True) as conn:
        result = reconcile(conn, api_settings, api.Listing(since=0, types=types))
    assert [len([k for k in r["args"] if k.startswith("types[")]) for r in fake.requests] == [
        20, 20, 6]
    assert result.added == 2 == result.found


def test_reconcile_racing_live_webhooks_and_another_reconcile_stores_each_event_once(
        fake, api_settings, clock, db):
    events = make_events(300)
    fake.add(events)
    app = create_app(api_settings, clock=clock, pool_size=8)
    webhook_client = app.test_client()
    results = {}
    start = threading.Barrier(3)

    def webhooks():
        start.wait()
        results["webhooks"] = deliver(webhook_client, clock, events)

    def reconciler(name):
        start.wait()
        with psycopg.connect(api_settings.database_url, autocommit=True) as conn:
            results[name] = reconcile(conn, api_settings, api.Listing(since=0))

    try:
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            for future in [pool.submit(webhooks), pool.submit(reconciler, "a"),
                           pool.submit(reconciler, "b")]:
                future.result(timeout=120)
    finally:
        app.extensions["inbox.database"].close()
    assert results["webhooks"] == [200] * 300
    stored = rows(db)
    assert set(stored) == {e["id"] for e in events}
    assert db.execute("SELECT count(*) FROM inbox").fetchone()[0] == 300
    by_api = sum(1 for v in stored.values() if v[0] == "api")
    assert results["a"].added + results["b"].added == by_api
    assert results["a"].found == results["b"].found == 300


def test_a_refused_key_is_reported_without_printing_it(stripe_api, settings, capsys, db):
    fake, base = stripe_api
    secret = "rk_live_this_must_never_be_printed_123"
    wrong = Settings(database_url=settings.database_url, stripe_api_key=secret,
                     stripe_api_base=base)
    assert run_cli(wrong, "stripe") == 1
    captured = capsys.readouterr()
    assert "401" in captured.err
    assert secret not in captured.out + captured.err
    assert fake.statuses() == [401]  # a failed listing ends the run: no thin listing
    error = db.execute("SELECT last_error FROM inbox_stripe_reconcile").fetchone()[0]
    assert "401" in error and secret not in error
    assert secret not in repr(wrong)


def test_without_an_api_key_it_says_what_is_needed(settings, capsys):
    assert run_cli(settings, "stripe") == 1
    assert "STRIPE_API_KEY is not set" in capsys.readouterr().err


def test_an_event_jsonb_refuses_is_reported_and_the_rest_of_its_page_stored(fake, api_settings,
                                                                             db, capsys):
    events = make_events(5)
    events[2]["data"]["object"]["description"] = "nul \u0000 inside"
    fake.add(events)
    assert run_cli(api_settings, "stripe") == 1
    captured = capsys.readouterr()
    assert f"cannot store {events[2]['id']}" in captured.err
    assert "added:          4" in captured.out and "refused:        1" in captured.out
    assert len(rows(db)) == 4


def test_as_received_keeps_the_api_json_and_the_account():
    [event] = make_events(1, account="acct_1Abc")
    received = as_received(event)
    assert json.loads(received.raw_body) == event
    assert (received.provider, received.source, received.signature, received.account) == (
        "stripe", "api", None, "acct_1Abc")
    assert as_received(make_events(1)[0], "acct_listed").account == "acct_listed"


def test_rate_limit_delay_honours_retry_after_and_backs_off_without_it():
    assert api.rate_limit_delay_seconds({"Retry-After": "1"}, 1) == 1.0
    assert api.rate_limit_delay_seconds({"retry-after": "3600"}, 1) == api.RATE_LIMIT_CAP_SECONDS
    for refusal in range(1, 8):
        assert 0 <= api.rate_limit_delay_seconds({}, refusal) <= api.RATE_LIMIT_CAP_SECONDS


def test_signature_secret_defaults_do_not_leak_into_the_connect_endpoint():
    settings = Settings.from_env({"STRIPE_CONNECT_WEBHOOK_SECRET": "whsec_a, whsec_b",
                                  "STRIPE_API_KEY": "rk_x", "INBOX_STRIPE_RECONCILE_SECONDS": "60"})
    assert settings.stripe_connect_webhook_secrets == ("whsec_a", "whsec_b")
    assert "stripe-connect" not in settings.provider_secrets
    assert settings.stripe_api_base == "https://api.stripe.com"
    assert settings.stripe_reconcile_seconds == 60.0
    assert "rk_x" not in repr(settings)



# -- automatic reconciliation (INBOX_STRIPE_RECONCILE_SECONDS) ------------------------------

@pytest.fixture
def auto_settings(api_settings: Settings, monkeypatch) -> Settings:
    from inbox.stripe import reconcile as module

    monkeypatch.setattr(module, "_next_look", {})  # each test starts with no look pending
    return dataclasses.replace(api_settings, stripe_reconcile_seconds=3600)


def test_automatic_reconciliation_runs_once_per_interval_from_the_watermark(
        fake, auto_settings, db, monkeypatch):
    from inbox.stripe import reconcile as module

    fake.add(make_events(20, spacing_seconds=3600))  # the last 20 hours
    with psycopg.connect(auto_settings.database_url, autocommit=True) as conn:
        first = module.reconcile_if_due(conn, auto_settings)
        assert first is not None and first.added == 20
        first_since = int(fake.requests_of(V1)[0]["args"]["created[gte]"][0])
        assert first_since == pytest.approx(time.time() - 3 * 86400, abs=60)

        monkeypatch.setattr(module, "_next_look", {})
        assert module.reconcile_if_due(conn, auto_settings) is None  # not due: ran just now
        assert len(fake.requests_of(V1)) == 1

        # An hour later (the interval), a missed event is found from the watermark.
        conn.execute("UPDATE inbox_stripe_reconcile SET last_run_at = last_run_at - "
                      "interval '1 hour', watermark = watermark - 3600")
        [missed] = make_events(1)
        fake.add([missed])
        monkeypatch.setattr(module, "_next_look", {})
        second = module.reconcile_if_due(conn, auto_settings)
    assert second is not None and second.added == 1
    second_since = int(fake.requests_of(V1)[-1]["args"]["created[gte]"][0])
    assert second_since == pytest.approx(time.time() - 3600 - module.WATERMARK_OVERLAP_SECONDS,
                                         abs=60)
    assert second.found == 3  # the missed one, and those created now and an hour ago
    row = db.execute("SELECT last_trigger, last_found, last_added, last_error "
                     "FROM inbox_stripe_reconcile WHERE scope = 'stripe'").fetchone()
    assert row == ("automatic", 3, 1, None)


def test_only_one_worker_reconciles_at_a_time(fake, auto_settings):
    from inbox.stripe import reconcile as module
    from inbox.stripe import store

    fake.add(make_events(3))
    with (psycopg.connect(auto_settings.database_url, autocommit=True) as holder,
          psycopg.connect(auto_settings.database_url, autocommit=True) as other):
        assert store.try_lock(holder)
        assert module.reconcile_if_due(other, auto_settings) is None
        store.unlock(holder)
        module._next_look.clear()  # the fixture's dict, not the module's own
        assert module.reconcile_if_due(other, auto_settings).added == 3


def test_automatic_reconciliation_is_off_without_a_key_or_an_interval(api_settings, db):
    from inbox.stripe.reconcile import reconcile_if_due

    with psycopg.connect(api_settings.database_url, autocommit=True) as conn:
        assert reconcile_if_due(conn, api_settings) is None  # interval 0
        no_key = dataclasses.replace(api_settings, stripe_api_key=None,
                                     stripe_reconcile_seconds=60)
        assert reconcile_if_due(conn, no_key) is None
    assert db.execute("SELECT count(*) FROM inbox_stripe_reconcile").fetchone()[0] == 0


def test_a_failed_automatic_run_is_recorded_and_not_raised(stripe_api, auto_settings, db):
    from inbox.stripe.reconcile import reconcile_if_due

    refused = dataclasses.replace(auto_settings, stripe_api_key="rk_test_wrong")
    with psycopg.connect(auto_settings.database_url, autocommit=True) as conn:
        assert reconcile_if_due(conn, refused) is None
        # The lock was released: another try may take it.
        assert conn.execute("SELECT pg_try_advisory_lock(hashtext('inbox.stripe.reconcile'))"
                            ).fetchone()[0]
    error = db.execute("SELECT last_error FROM inbox_stripe_reconcile").fetchone()[0]
    assert "401" in error and "rk_test_wrong" not in error


def test_status_shows_the_last_reconciliation(fake, api_settings, db, capsys):
    fake.add(make_events(4))
    assert run_cli(api_settings, "stripe") == 0
    capsys.readouterr()
    parsed = build_parser().parse_args(["status"])
    assert parsed.func(parsed, api_settings) == 0
    line = [x for x in capsys.readouterr().out.splitlines() if x.startswith("reconcile stripe:")]
    assert len(line) == 1 and "(command): found 4, added 4" in line[0]
    parsed = build_parser().parse_args(["status", "--json"])
    assert parsed.func(parsed, api_settings) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["stripe_reconcile"]["stripe"]["added"] == 4
    assert set(status["inbox"]) >= {"pending", "processed", "ignored", "dead"}


def test_overlapping_inserts_in_any_order_never_deadlock(db, database_url):
    """inbox_insert takes its rows in key order: a reconcile page (newest first) and a
    receiver's group (arrival order) holding the same events cannot wait for each other.
    Without the ORDER BY, this same load deadlocked 24 of 600 statements."""
    from inbox.queries import query

    barrier = threading.Barrier(4)
    errors = []

    def work(seed: int) -> None:
        rng = random.Random(seed)
        with psycopg.connect(database_url, autocommit=True) as conn:
            for round_ in range(40):
                keys = [f"evt_{round_}_{i}" for i in rng.sample(range(30), 20)]
                n = len(keys)
                barrier.wait(timeout=30)
                try:
                    conn.execute(query("inbox_insert"), {
                        "providers": ["stripe"] * n, "event_ids": keys,
                        "event_types": ["t"] * n, "payloads": ["{}"] * n,
                        "raw_bodies": [b"{}"] * n, "signatures": [None] * n,
                        "sources": ["api"] * n, "accounts": [None] * n})
                except psycopg.Error as exc:
                    errors.append(exc)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert db.execute("SELECT count(DISTINCT event_id) = count(*) FROM inbox").fetchone()[0]


def test_a_workers_poll_tick_reconciles_and_a_relays_does_not(fake, auto_settings, db):
    from inbox.runtime.duties import TickDuties

    fake.add(make_events(5))
    with psycopg.connect(auto_settings.database_url, autocommit=True) as conn:
        TickDuties("relay", auto_settings, conn).run()
        assert fake.requests == []
        TickDuties("worker", auto_settings, conn).run()
    assert len(rows(db)) == 5
    assert db.execute("SELECT last_trigger, last_added FROM inbox_stripe_reconcile "
                      "WHERE scope = 'stripe'").fetchone() == ("automatic", 5)
    # It beat meanwhile: the worker is listed alive.
    assert db.execute("SELECT count(*) FROM inbox_processes WHERE kind = 'worker'"
                      ).fetchone()[0] == 1
