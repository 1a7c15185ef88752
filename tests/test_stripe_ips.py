"""Stripe's webhook addresses (inbox/stripe/ips.py) and `inbox stripe-ips`: the dated list
the package ships, a file of Stripe's taken whole or not at all, and the stored list that
every web process reads."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta

import pytest

from inbox.stripe import ips
from tests.cli_support import cli_env, inbox

STRIPE_FILE = {"WEBHOOKS": ["3.18.12.63", "3.130.192.231", "2600:1f18::1"]}


def test_the_shipped_list_is_stripes_dated_and_valid():
    shipped = ips.shipped()
    assert shipped.source == "https://stripe.com/files/ips/ips_webhooks.json"
    assert shipped.as_of.tzinfo is not None and shipped.as_of.year >= 2026
    assert len(shipped.addresses) == len(set(shipped.addresses)) == 15
    assert {"3.18.12.63", "3.130.192.231", "54.187.216.72", "3.69.109.8"} <= set(
        shipped.addresses)
    assert not shipped.stored


def test_stripes_json_and_text_files_parse_to_canonical_addresses():
    assert ips.parse(json.dumps(STRIPE_FILE)) == ("3.18.12.63", "3.130.192.231", "2600:1f18::1")
    text = "3.18.12.63\n\n3.130.192.231\n::ffff:3.18.12.63\n2600:1F18:0::1\n"
    assert ips.parse(text) == ("3.18.12.63", "3.130.192.231", "2600:1f18::1")


@pytest.mark.parametrize(("content", "complaint"), [
    ('{"WEBHOOKS": []}', "empty"),
    ("", "empty"),
    ('{"WEBHOOKS": ["3.18.12.63", "3.18.12.999"]}', "entry 2 ('3.18.12.999')"),
    ('{"WEBHOOKS": ["3.18.12.0/24"]}', "not an IPv4 or IPv6 address"),
    ('{"WEBHOOKS": [52]}', "entry 1 (52) is not a string"),
    ('{"WEBHOOKS": "3.18.12.63"}', "no 'WEBHOOKS' list"),
    ('{"API": ["3.18.12.63"]}', "no 'WEBHOOKS' list"),
    ('{"WEBHOOKS": ["3.18.12.63"', "not a JSON document"),
    ("<html>Not Found</html>", "entry 1 ('<html>Not Found</html>')"),
])
def test_a_bad_file_is_refused_with_what_is_wrong(content, complaint):
    with pytest.raises(ips.BadAddressList) as refused:
        ips.parse(content)
    assert complaint in str(refused.value)


def test_the_newer_list_serves():
    shipped = ips.shipped()
    later = dataclasses.replace(shipped, addresses=("192.0.2.1",), stored=True,
                                as_of=shipped.as_of + timedelta(days=1))
    earlier = dataclasses.replace(later, as_of=shipped.as_of - timedelta(days=1))
    assert ips.newer(shipped, later) is later
    assert ips.newer(shipped, earlier) is shipped  # a release with a newer list wins
    assert ips.newer(shipped, None) is shipped


def test_stored_list_round_trip(db):
    assert ips.read_stored(db) is None and ips.in_use(db) == ips.shipped()
    stored = ips.store(db, ("192.0.2.1", "2001:db8::1"), "ips_webhooks.json")
    assert ips.read_stored(db) == stored
    assert stored.addresses == ("192.0.2.1", "2001:db8::1") and stored.stored
    assert ips.in_use(db) == stored
    assert ips.forget(db) and not ips.forget(db)
    assert ips.in_use(db) == ips.shipped()


def test_cli_shows_updates_refuses_and_resets(database_url, db, tmp_path):
    env = cli_env(tmp_path / "dev", DATABASE_URL=database_url)
    shown = inbox("stripe-ips", env=env)
    assert shown.returncode == 0, shown.stderr
    assert "15 Stripe webhook address(es) from https://stripe.com/files/ips/ips_webhooks.json" \
        in shown.stdout
    assert "(the copy this release ships)" in shown.stdout and "  3.18.12.63\n" in shown.stdout
    assert "STRIPE_WEBHOOK_IP_ALLOWLIST is off" in shown.stdout

    good = tmp_path / "ips_webhooks.json"
    good.write_text(json.dumps(STRIPE_FILE))
    before = datetime.now(UTC)
    updated = inbox("stripe-ips", "--update", str(good), env=env)
    assert updated.returncode == 0, updated.stderr
    assert "stored 3 address(es)" in updated.stdout
    assert "3 Stripe webhook address(es) from ips_webhooks.json" in updated.stdout
    assert "(stored by inbox stripe-ips --update)" in updated.stdout
    stored = ips.read_stored(db)
    assert stored is not None and stored.addresses == tuple(STRIPE_FILE["WEBHOOKS"])
    assert stored.as_of >= before - timedelta(seconds=5)

    bad = tmp_path / "bad.json"
    for content in ('{"WEBHOOKS": ["3.18.12.63", "not-an-ip"]}', '{"WEBHOOKS": []}', "{oops"):
        bad.write_text(content)
        refused = inbox("stripe-ips", "--update", str(bad), env=env)
        assert refused.returncode == 1 and "nothing changed" in refused.stderr, refused
        assert str(bad) in refused.stderr
        assert ips.read_stored(db) == stored  # the list did not change
    missing = inbox("stripe-ips", "--update", str(tmp_path / "nope.json"), env=env)
    assert missing.returncode == 1 and "cannot read" in missing.stderr

    reset = inbox("stripe-ips", "--reset", env=env)
    assert reset.returncode == 0 and "(the copy this release ships)" in reset.stdout
    assert ips.read_stored(db) is None
    on = inbox("stripe-ips", env={**env, "STRIPE_WEBHOOK_IP_ALLOWLIST": "1",
                                  "INBOX_TRUSTED_PROXY_HOPS": "1"})
    assert "STRIPE_WEBHOOK_IP_ALLOWLIST is on; a client's address is entry 1 from the right " \
        "of X-Forwarded-For (INBOX_TRUSTED_PROXY_HOPS=1)" in on.stdout
