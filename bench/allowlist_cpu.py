"""CPU of STRIPE_WEBHOOK_IP_ALLOWLIST per delivery, in the webhook route itself:
`python -m bench.allowlist_cpu` (docs/decisions.md, "Stripe's addresses, checked in memory").

The route (inbox/web/webhooks.py) runs in-process with a stand-in for the group commit that
stores nothing, so what is measured is the route's own work: the same signed delivery from
a listed address with the allowlist off and on (the difference is the check), a delivery
from elsewhere refused by the list, and one refused by its signature with the list off
(what a flood from elsewhere costs without the list). Logging is off: the request line
costs the same in every case.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable

from inbox.cli.send_test_event import fresh_event
from inbox.config import Settings
from inbox.fixtures import stripe_event_bytes
from inbox.providers.stripe import sign
from inbox.web.allowlist import StripeAllowlist
from inbox.web.webhooks import WebhookRoute

REQUESTS = 20_000
ROUNDS = 3
SECRET = "whsec_allowlist_bench"
STRIPE = "3.18.12.63"
OUTSIDER = "198.51.100.7"


class NoStore:
    """The group commit's place: every event is new, nothing is written."""

    def insert(self, event: object) -> bool:
        return True


def environ(body: bytes, signature: str, client: str) -> Callable[[], dict]:
    """A fresh WSGI environ per request (the route reads the body stream), behind one hop."""
    base = {"REQUEST_METHOD": "POST", "PATH_INFO": "/webhooks/stripe",
            "CONTENT_LENGTH": str(len(body)), "CONTENT_TYPE": "application/json",
            "HTTP_STRIPE_SIGNATURE": signature, "REMOTE_ADDR": "10.0.0.1",
            "HTTP_X_FORWARDED_FOR": f"203.0.113.9, {client}", "wsgi.url_scheme": "http"}
    return lambda: {**base, "wsgi.input": io.BytesIO(body)}


def per_request_us(route: WebhookRoute, make: Callable[[], dict], expect: str) -> float:
    """The best of ROUNDS rounds of REQUESTS calls, in us of CPU per request."""
    answers: list[str] = []

    def start_response(status: str, headers: list) -> None:
        answers.append(status)

    best = float("inf")
    for _ in range(ROUNDS):
        answers.clear()
        environs = [make() for _ in range(REQUESTS)]
        started = time.process_time()
        for env in environs:
            route(env, start_response)
        best = min(best, (time.process_time() - started) / REQUESTS * 1e6)
        assert set(answers) == {expect}, set(answers)
    return best


def forwarded_by(client: str) -> dict[str, str]:
    return {"REMOTE_ADDR": "10.0.0.1", "HTTP_X_FORWARDED_FOR": f"203.0.113.9, {client}"}


def check_us(allowlist: StripeAllowlist, client: str) -> float:
    """`StripeAllowlist.refused` alone, best of ROUNDS, in us per call."""
    env = forwarded_by(client)
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.process_time()
        for _ in range(REQUESTS * 10):
            allowlist.refused(env)
        best = min(best, (time.process_time() - started) / (REQUESTS * 10) * 1e6)
    return best


def main() -> None:
    logging.getLogger("inbox").setLevel(logging.WARNING)
    now = int(time.time())
    body = fresh_event(stripe_event_bytes("invoice.paid"), event_id="evt_bench", created=now)
    good, bad = sign(body, SECRET, now), sign(body, "whsec_other", now)
    settings = Settings(stripe_webhook_secrets=(SECRET,), trusted_proxy_hops=1)
    clock = lambda: float(now)  # noqa: E731
    off = WebhookRoute(lambda e, s: [], settings, clock, NoStore())
    on = WebhookRoute(lambda e, s: [], settings, clock, NoStore(),
                      allowlist=StripeAllowlist(settings.trusted_proxy_hops))
    figures = {
        "listed address, allowlist off (200)": per_request_us(
            off, environ(body, good, STRIPE), "200 OK"),
        "listed address, allowlist on (200)": per_request_us(
            on, environ(body, good, STRIPE), "200 OK"),
        "other address, allowlist on (403)": per_request_us(
            on, environ(body, good, OUTSIDER), "403 Forbidden"),
        "wrong signature, allowlist off (400)": per_request_us(
            off, environ(body, bad, OUTSIDER), "400 Bad Request"),
    }
    alone = StripeAllowlist(1)
    assert alone.refused(forwarded_by(STRIPE)) is None and alone.refused(forwarded_by(OUTSIDER))
    figures["the check alone, listed address"] = check_us(alone, STRIPE)
    figures["the check alone, other address"] = check_us(alone, OUTSIDER)
    for what, micros in figures.items():
        print(f"{what:40} {micros:7.2f} us of CPU per request")


if __name__ == "__main__":
    main()
