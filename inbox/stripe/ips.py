"""Stripe's webhook addresses: the list STRIPE_WEBHOOK_IP_ALLOWLIST lets deliveries in from.

Stripe publishes them at https://stripe.com/files/ips/ips_webhooks.json
(`{"WEBHOOKS": ["3.18.12.63", ...]}`, and the same one per line in ips_webhooks.txt) and
announces changes a week ahead. The package ships a dated copy (webhook_ips.json, beside
this module); `inbox stripe-ips --update FILE` stores a newer one in the database
(inbox_stripe_webhook_ips, migration 0014), where every web process of every dyno reads
it: the package folder may be read-only, and a dyno's own files vanish at its restart.

Whichever of the two is newer serves (`newer`), so a stored list stops shadowing the
shipped one once a release ships a list dated after it, and an operator who stored
Stripe's latest file keeps it until then. A file is taken whole or not at all: every
entry must be one IPv4 or IPv6 address, and an empty list is refused, since it would
refuse every delivery.
"""

from __future__ import annotations

import functools
import ipaddress
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from inbox import db
from inbox.errors import InboxError
from inbox.queries import query

SOURCE_URL = "https://stripe.com/files/ips/ips_webhooks.json"
SHIPPED_FILE = Path(__file__).with_name("webhook_ips.json")
# The key of Stripe's JSON file that holds the webhook addresses.
WEBHOOKS_KEY = "WEBHOOKS"


class BadAddressList(InboxError):
    """The file is not a list of Stripe's webhook addresses."""


@dataclass(frozen=True)
class WebhookIPs:
    """A list of addresses, where it came from, and as of when."""

    addresses: tuple[str, ...]  # each in its canonical text form, in the file's order
    source: str
    as_of: datetime  # the shipped copy's date, or when `--update` stored it (UTC)
    stored: bool  # from the database (else the package's copy)


def canonical(text: str) -> str:
    """One address as Python writes it (`::1`, not `0:0::1`), or ValueError; an IPv4
    address mapped into IPv6 (`::ffff:3.18.12.63`) is the IPv4 address."""
    address = ipaddress.ip_address(text)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def parse(text: str) -> tuple[str, ...]:
    """The addresses of Stripe's JSON file (`{"WEBHOOKS": [...]}`) or of its text file (one
    address per line), canonical, duplicates dropped; BadAddressList naming what is wrong."""
    stripped = text.strip()
    if stripped.startswith("{"):
        entries = _json_entries(stripped)
    else:
        entries = [line.strip() for line in stripped.splitlines() if line.strip()]
    return _validated(entries)


def _validated(entries: list[object]) -> tuple[str, ...]:
    addresses: dict[str, None] = {}
    for position, entry in enumerate(entries, start=1):
        if not isinstance(entry, str):
            raise BadAddressList(f"entry {position} ({entry!r}) is not a string")
        try:
            addresses[canonical(entry)] = None
        except ValueError:
            raise BadAddressList(f"entry {position} ({entry!r}) is not an IPv4 or IPv6 "
                                 "address") from None
    if not addresses:
        raise BadAddressList("the list is empty: it would refuse every delivery")
    return tuple(addresses)


def _json_entries(text: str) -> list[object]:
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise BadAddressList(f"not a JSON document: {exc}") from None
    entries = document.get(WEBHOOKS_KEY) if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise BadAddressList(f"no {WEBHOOKS_KEY!r} list in it, as Stripe's "
                             f"ips_webhooks.json has")
    return entries


@functools.cache
def shipped() -> WebhookIPs:
    """The copy the package ships (read once per process)."""
    document = json.loads(SHIPPED_FILE.read_text(encoding="utf-8"))
    as_of = datetime.fromisoformat(document["as_of"]).replace(tzinfo=UTC)
    return WebhookIPs(_validated(document[WEBHOOKS_KEY]), document["source"], as_of,
                      stored=False)


def newer(first: WebhookIPs, second: WebhookIPs | None) -> WebhookIPs:
    """The list to use of two (the first when as old as the second, or alone)."""
    return second if second is not None and second.as_of > first.as_of else first


def read_stored(conn: db.Connection) -> WebhookIPs | None:
    """The list `inbox stripe-ips --update` stored, or None."""
    row = conn.execute(query("stripe_webhook_ips_read")).fetchone()
    if row is None:
        return None
    addresses, source, updated_at = row
    return WebhookIPs(tuple(addresses), source, updated_at, stored=True)


def in_use(conn: db.Connection) -> WebhookIPs:
    """The list the web processes use: the newer of the stored and the shipped ones."""
    return newer(shipped(), read_stored(conn))


def store(conn: db.Connection, addresses: Iterable[str], source: str) -> WebhookIPs:
    """Store this list (already `parse`d) for every web process; it is then the newest."""
    kept = tuple(addresses)
    (updated_at,) = conn.execute(query("stripe_webhook_ips_replace"),
                                 {"addresses": list(kept), "source": source}).fetchone()
    return WebhookIPs(kept, source, updated_at, stored=True)


def forget(conn: db.Connection) -> bool:
    """Drop the stored list (the shipped one serves again); whether there was one."""
    return conn.execute(query("stripe_webhook_ips_forget")).rowcount > 0
