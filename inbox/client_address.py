"""Who sent a request: the client's address behind exactly INBOX_TRUSTED_PROXY_HOPS proxies.

A proxy in front of the web process (Heroku's router) connects to it itself, so the peer
address (REMOTE_ADDR) is the proxy's; it appends the address it saw to X-Forwarded-For.
Entries already in that header when the request reached the proxy are whatever the client
wrote, so only the entries the trusted proxies appended can be believed: with N hops, the
Nth entry from the right (Heroku, N = 1: the last one). Never one further left, or a client
could choose its own address by sending `X-Forwarded-For: <an address it likes>`.

One function for every caller that decides by address (the Stripe allowlist of the
webhook route, the console's login slow-down and its audit), so they can never disagree
about who the client is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def client_address(environ: Mapping[str, Any], trusted_hops: int) -> str | None:
    """The client's address as the WSGI `environ` tells it, trusting `trusted_hops` proxies.

    0: the peer (REMOTE_ADDR), X-Forwarded-For ignored. N: the Nth X-Forwarded-For entry
    from the right. None when the header holds fewer than N entries, or that entry is empty:
    the request did not come through the proxies, and nobody can say who sent it.
    Several X-Forwarded-For headers count as one list (WSGI servers join them with commas,
    in order).
    """
    if trusted_hops <= 0:
        return environ.get("REMOTE_ADDR") or None
    entries = environ.get("HTTP_X_FORWARDED_FOR", "").split(",")
    if len(entries) < trusted_hops:
        return None
    return entries[-trusted_hops].strip() or None
