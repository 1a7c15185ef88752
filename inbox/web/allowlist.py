"""STRIPE_WEBHOOK_IP_ALLOWLIST: Stripe's deliveries only from Stripe's webhook addresses.

A second lock beside the signature: a delivery to /webhooks/stripe or
/webhooks/stripe-connect from any other address is answered 403 before its body is read
or the database is asked anything, so a flood from elsewhere costs a set lookup, not a
signature check and a pool connection. The client's address is the one
`inbox.client_address` gives behind INBOX_TRUSTED_PROXY_HOPS proxies; a request that did
not come through them has none, and is refused.

Each web process holds the list as a set in memory: the package's copy from the start,
then whatever `inbox stripe-ips --update` stored, read by the process's duties thread
once per poll interval (inbox/web/duties.py), never by a request. A request pays for a
header split and a set lookup (docs/decisions.md, "Stripe's addresses, checked in memory").
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from inbox import db
from inbox.client_address import client_address
from inbox.stripe import ips

log = logging.getLogger(__name__)

# The endpoints the list guards: Stripe's own deliveries, the platform's and Connect's.
STRIPE_PROVIDERS = frozenset({"stripe", "stripe-connect"})
# A refused client's address is logged cut to this (an IPv6 address with a zone fits): with
# fewer real proxies than INBOX_TRUSTED_PROXY_HOPS says, the entry is whatever a client wrote.
MAX_LOGGED_CLIENT_CHARS = 64


class StripeAllowlist:
    """Stripe's webhook addresses as this process knows them, and who may deliver."""

    def __init__(self, trusted_hops: int, initial: ips.WebhookIPs | None = None) -> None:
        self.trusted_hops = trusted_hops
        self.current = initial or ips.shipped()
        self._addresses = frozenset(self.current.addresses)

    def refused(self, environ: Mapping[str, Any]) -> str | None:
        """None when the request's client is one of Stripe's addresses; else the address it
        came from (`-` when none can be trusted), for the request's log line."""
        client = client_address(environ, self.trusted_hops)
        if client is None:
            return "-"
        if client in self._addresses or (":" in client and self._listed_ipv6(client)):
            return None
        return client[:MAX_LOGGED_CLIENT_CHARS]

    def _listed_ipv6(self, client: str) -> bool:
        """Whether another spelling of a listed address (`::ffff:3.18.12.63`,
        `2600:1F18::1`): IPv6 has several, IPv4 only one (no leading zeros), so only IPv6
        clients are parsed (the parse is 6 us, the lookup 0.25)."""
        try:
            return ips.canonical(client) in self._addresses
        except ValueError:
            return False

    def refresh(self, conn: db.Connection) -> None:
        """Take the newer of the stored and the shipped lists (a duty of the web process's
        thread); a change is logged, so an operator sees each process take it."""
        latest = ips.in_use(conn)
        if latest != self.current:
            self._addresses = frozenset(latest.addresses)
            self.current = latest
            log.info("Stripe webhook addresses: %d, from %s as of %s", len(latest.addresses),
                     latest.source, latest.as_of.isoformat(timespec="seconds"))
