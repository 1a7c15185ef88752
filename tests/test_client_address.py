"""The client's address behind exactly INBOX_TRUSTED_PROXY_HOPS proxies (inbox/client_address.py):
never an entry a client could have written itself."""

from __future__ import annotations

import pytest

from inbox.client_address import client_address
from inbox.config import ConfigError, Settings


def environ(peer: str = "10.1.1.1", forwarded: str | None = None) -> dict[str, str]:
    env = {"REMOTE_ADDR": peer}
    if forwarded is not None:
        env["HTTP_X_FORWARDED_FOR"] = forwarded
    return env


def test_no_hops_is_the_peer_whatever_the_header_says():
    assert client_address(environ(forwarded="3.18.12.63"), 0) == "10.1.1.1"
    assert client_address(environ(), 0) == "10.1.1.1"
    assert client_address({}, 0) is None


def test_one_hop_is_the_entry_the_router_appended():
    # A client that writes a Stripe address itself: the router appends the real one.
    assert client_address(environ(forwarded="3.18.12.63, 198.51.100.7"), 1) == "198.51.100.7"
    assert client_address(environ(forwarded="198.51.100.7"), 1) == "198.51.100.7"
    # Several headers arrive joined by commas (the router's own comes last).
    assert client_address(environ(forwarded="3.18.12.63,198.51.100.7"), 1) == "198.51.100.7"


def test_more_hops_count_from_the_right():
    chain = "3.18.12.63, 198.51.100.7, 10.0.0.5"  # forged, client (seen by the CDN), CDN
    assert client_address(environ(forwarded=chain), 2) == "198.51.100.7"
    assert client_address(environ(forwarded=chain), 3) == "3.18.12.63"


@pytest.mark.parametrize("forwarded", [None, "", " ", "198.51.100.7, "])
def test_a_chain_shorter_than_the_hops_or_empty_is_nobody(forwarded):
    assert client_address(environ(forwarded=forwarded), 1) is None
    assert client_address(environ(forwarded="198.51.100.7"), 2) is None


def test_settings_read_the_switch_and_the_hops():
    settings = Settings.from_env({"STRIPE_WEBHOOK_IP_ALLOWLIST": "1",
                                  "INBOX_TRUSTED_PROXY_HOPS": "1"})
    assert settings.stripe_webhook_ip_allowlist is True and settings.trusted_proxy_hops == 1
    defaults = Settings.from_env({})
    assert defaults.stripe_webhook_ip_allowlist is False and defaults.trusted_proxy_hops == 0
    assert Settings.from_env({"STRIPE_WEBHOOK_IP_ALLOWLIST": "off"}).stripe_webhook_ip_allowlist \
        is False
    for bad in ({"STRIPE_WEBHOOK_IP_ALLOWLIST": "maybe"}, {"INBOX_TRUSTED_PROXY_HOPS": "-1"},
                {"INBOX_TRUSTED_PROXY_HOPS": "one"}):
        with pytest.raises(ConfigError):
            Settings.from_env(bad)
