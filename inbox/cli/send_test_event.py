"""`inbox send-test-event`: sign and POST a shipped sample event, like `stripe trigger`.

Each event sent is the packaged fixture of its type with a fresh `id` (`evt_test_…`, so the
receiver stores it as new) and a fresh `created`, signed with the configured secret the way
Stripe signs (`Stripe-Signature` over the exact bytes sent). With STRIPE_WEBHOOK_SECRET
unset it uses the secret `inbox dev` generated, and by default it posts to `inbox dev`'s
receiver, so a newcomer needs no configuration at all.
"""

from __future__ import annotations

import argparse
import json
import secrets
import string
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from inbox.cli import dev
from inbox.config import ConfigError, Settings
from inbox.fixtures import stripe_event_bytes, stripe_event_types
from inbox.providers.stripe import SIGNATURE_HEADER, sign

EXIT_OK = 0
EXIT_REJECTED = 1  # the receiver answered something other than 2xx, or was unreachable
REQUEST_TIMEOUT_SECONDS = 10.0
DEFAULT_DEV_PORT = 5000
_ID_ALPHABET = string.ascii_letters + string.digits


@dataclass(frozen=True)
class Answer:
    """What the receiver said to one delivery."""

    status: int
    body: str

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def new_event_id() -> str:
    """A fresh, Stripe-looking event id that says it is a test: `evt_test_<random>`."""
    return "evt_test_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(20))


def fresh_event(template: bytes, *, event_id: str, created: int) -> bytes:
    """The template event with a new `id` and `created`, as pretty JSON bytes.

    Key order is kept (Stripe renders `id` and `object` first), so the body looks like
    the fixture; what gets signed is exactly these bytes.
    """
    payload = json.loads(template)
    payload["id"] = event_id
    payload["created"] = created
    return (json.dumps(payload, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def post(url: str, body: bytes, secret: str, timestamp: int) -> Answer:
    """POST one signed body; a 4xx/5xx is an Answer too, an unreachable URL raises OSError."""
    request = urllib.request.Request(
        url, data=body, method="POST",
        headers={"Content-Type": "application/json",
                 SIGNATURE_HEADER: sign(body, secret, timestamp),
                 "User-Agent": "inbox-send-test-event"},
    )
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_SECONDS) as response:
            return Answer(response.status, response.read().decode("utf-8", "replace"))
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, exc.read().decode("utf-8", "replace"))


def _dev_state_exists() -> bool:
    return (dev.dev_dir() / "dev.json").exists()


def signing_secret(settings: Settings) -> str:
    """The first (newest) STRIPE_WEBHOOK_SECRET, else the secret of `inbox dev`."""
    if settings.stripe_webhook_secrets:
        return settings.stripe_webhook_secrets[0]
    if not _dev_state_exists():
        raise ConfigError(
            "STRIPE_WEBHOOK_SECRET is not set and there is no `inbox dev` state in "
            f"{dev.dev_dir()}: set the secret, or start `inbox dev` first"
        )
    return dev.load_state().webhook_secret


def default_url() -> str:
    """The receiver of `inbox dev` on this machine."""
    port = dev.load_state().port if _dev_state_exists() else DEFAULT_DEV_PORT
    return f"http://localhost:{port}/webhooks/stripe"


def plan(event_type: str | None, send_all: bool, count: int) -> list[str]:
    """The event types to send, in order: the whole story `count` times, or one type."""
    if send_all:
        return [t for _ in range(count) for t in stripe_event_types()]
    if event_type is None:
        raise ConfigError("name an event TYPE or use --all (types: "
                          + ", ".join(stripe_event_types()) + ")")
    if event_type not in stripe_event_types():
        raise ConfigError(f"no sample event of type {event_type!r}; shipped types: "
                          + ", ".join(stripe_event_types()))
    return [event_type] * count


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.list:
        print("\n".join(stripe_event_types()))
        return EXIT_OK
    if args.count < 1:
        raise ConfigError("--count must be at least 1")
    types = plan(args.type, args.all, args.count)
    secret = signing_secret(settings)
    url = args.url or default_url()
    now = int(time.time())
    # `created` rises by a second per event and ends now, so the story keeps its order
    # for handlers that compare `created` to skip stale events.
    first_created = now - (len(types) - 1)
    failures = 0
    for index, event_type in enumerate(types):
        event_id = new_event_id()
        body = fresh_event(stripe_event_bytes(event_type), event_id=event_id,
                           created=first_created + index)
        try:
            answer = post(url, body, secret, int(time.time()))
        except OSError as exc:
            reason = getattr(exc, "reason", exc)
            print(f"inbox: cannot reach the receiver at {url}: {reason}"
                  + ("" if args.url else " (is `inbox dev` running?)"))
            return EXIT_REJECTED
        failures += not answer.ok
        print(f"{answer.status} {event_type} {event_id} {answer.body.strip()}", flush=True)
    if failures:
        print(f"{failures} of {len(types)} event(s) were not accepted by {url}")
        return EXIT_REJECTED
    print(f"sent {len(types)} event(s) to {url}")
    return EXIT_OK


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "send-test-event", help="sign and POST a sample Stripe event (like `stripe trigger`)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("type", nargs="?", metavar="TYPE",
                        help="event type, e.g. invoice.paid (see --list)")
    parser.add_argument("--all", action="store_true",
                        help="send the whole billing story, in story order")
    parser.add_argument("--count", type=int, default=1, metavar="N",
                        help="send N copies (each with its own id); with --all, the story N times")
    parser.add_argument("--url", help="receiver URL (default: the `inbox dev` receiver, "
                        "http://localhost:<dev port>/webhooks/stripe)")
    parser.add_argument("--list", action="store_true", help="list the sample event types")
    parser.set_defaults(func=run)
