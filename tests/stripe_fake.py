"""A fake of Stripe's Events API for the tests: a real HTTP server (serve_wsgi) answering
`GET /v1/events` the way Stripe does, reached by pointing STRIPE_API_BASE at it.

- newest first (`created` descending, then id), `limit` (default 10, at most 100),
  `starting_after` / `ending_before`, `has_more`, and the list object
  `{"object": "list", "data": [...], "has_more": ..., "url": "/v1/events"}`;
- filters `created` (an integer or `created[gte|gt|lte|lt]`), `type`, `types[]` (as
  `types[]=a` or the SDK's `types[0]=a`, at most 20), `delivery_success` (true/false);
- `Authorization: Bearer <key>` (401 otherwise, Stripe's error JSON), `Stripe-Account`
  (then only that connected account's events);
- `rate_limit(n, retry_after=1)`: the next n requests get 429 with `Retry-After` and no
  `Stripe-Should-Retry`, as Stripe's rate limiter answers.

Thin events (event destinations, API v2): `add_thin(event, related)` serves the full
event at `GET /v2/core/events/<id>` and the related object at its `related_object.url`
(404 with Stripe's error JSON for what it does not hold), and lists it at `GET
/v2/core/events` as Stripe does: newest first (`created`, an ISO time, descending), `limit`
(default 20), `created[gte|gt|lte|lt]` (ISO times), `types[N]`, `Stripe-Context` (then
only that account's events, else only those with no `context`), each page
`{"data": [...], "next_page_url": ..., "previous_page_url": ...}`, the next page's url
carrying an opaque `page` token (the filters are in it, as Stripe's are), and the
rate limit of `rate_limit(n)` too; `fail(path, 500, ...)` makes the
next requests of a path answer those statuses first; `delay_seconds` makes those answers
wait, as Stripe's API takes tens to hundreds of milliseconds (bench/thin_events.py).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from werkzeug.wrappers import Request, Response

from inbox.cli.send_test_event import fresh_event
from tests.support import serve_wsgi, stripe_event_files

API_KEY = "rk_test_reconcile_fake_key_0123456789"
_ids = itertools.count(1)


def fixture_templates() -> list[bytes]:
    return [path.read_bytes() for path in stripe_event_files()]


def make_events(count: int, *, newest: int | None = None, spacing_seconds: int = 60,
                account: str | None = None, prefix: str = "evt_rec") -> list[dict[str, Any]]:
    """`count` events built from the nine fixtures (cycled), fresh ids, `created` spaced
    `spacing_seconds` apart going back from `newest` (default: now); newest first."""
    newest = newest or int(time.time())
    templates = fixture_templates()
    run = next(_ids)
    events = []
    for n in range(count):
        body = fresh_event(templates[n % len(templates)],
                           event_id=f"{prefix}_{run}_{n:05d}",
                           created=newest - n * spacing_seconds)
        event = json.loads(body)
        if account:
            event["account"] = account
        events.append(event)
    return events


def _flag(value: str | None) -> bool | None:
    if value is None:
        return None
    return value.lower() == "true"


class FakeStripe:
    """The fake's state: its events, which of them were "delivered", and the requests."""

    def __init__(self, api_key: str = API_KEY) -> None:
        self.api_key = api_key
        self.events: list[dict[str, Any]] = []
        self.delivered: set[str] = set()
        self.requests: list[dict[str, Any]] = []  # query args, account, status of each
        self._lock = threading.Lock()
        self._rate_limited = 0
        self._retry_after = "1"
        self.objects: dict[str, dict[str, Any]] = {}  # thin events' data, by path
        self.failures: dict[str, list[int]] = {}
        self.delay_seconds = 0.0
        self.on_object: Any = None  # called with the path before a thin-event answer
        self.thin_events: list[dict[str, Any]] = []  # listed at GET /v2/core/events
        self._page_tokens: dict[str, tuple[dict[str, list[str]], str | None, int]] = {}

    def add(self, events: list[dict[str, Any]], *, delivered: bool = False) -> None:
        with self._lock:
            self.events.extend(events)
            self.events.sort(key=lambda e: (-e["created"], e["id"]))
            if delivered:
                self.delivered.update(e["id"] for e in events)

    def rate_limit(self, count: int, retry_after: str = "1") -> None:
        with self._lock:
            self._rate_limited = count
            self._retry_after = retry_after

    def add_thin(self, event: dict[str, Any], related: dict[str, Any] | None = None) -> None:
        """Serve a thin event's full event, and its related object at its url; list it."""
        with self._lock:
            self.objects[f"/v2/core/events/{event['id']}"] = event
            self.thin_events.append(event)
            self.thin_events.sort(key=lambda e: (_iso(e["created"]), e["id"]), reverse=True)
            if related is not None:
                self.objects[event["related_object"]["url"]] = related

    def fail(self, path: str, *statuses: int) -> None:
        """The next requests of `path` answer these statuses (Stripe's error JSON)."""
        with self._lock:
            self.failures.setdefault(path, []).extend(statuses)

    def paths(self) -> list[str]:
        return [request["path"] for request in self.requests]

    def requests_of(self, path: str) -> list[dict[str, Any]]:
        return [request for request in self.requests if request["path"] == path]

    def statuses(self, path: str | None = None) -> list[int]:
        """Each request's status (of `path`'s requests only, when given)."""
        return [request["status"] for request in self.requests
                if path is None or request["path"] == path]

    # -- the WSGI app ---------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        response = self._answer(request)
        self.requests.append({"path": request.path, "args": request.args.to_dict(flat=False),
                              "account": request.headers.get("Stripe-Account"),
                              "context": request.headers.get("Stripe-Context"),
                              "status": response.status_code})
        return response(environ, start_response)

    def _answer(self, request: Request) -> Response:
        if request.method != "GET" or (request.path != "/v1/events"
                                       and not request.path.startswith(("/v1/", "/v2/"))):
            return _error(404, "invalid_request_error", f"Unrecognized request URL "
                          f"({request.method}: {request.path})")
        auth = request.headers.get("Authorization", "")
        if auth != f"Bearer {self.api_key}":
            key = auth.removeprefix("Bearer ")
            # Stripe masks the key; the fake echoes it whole, to prove we never print it.
            return _error(401, "invalid_request_error", f"Invalid API Key provided: {key}")
        if request.path not in ("/v1/events", "/v2/core/events"):
            return self._object(request.path)
        limited = self._rate_limit_answer()
        if limited is not None:
            return limited
        if request.path == "/v2/core/events":
            return self._thin_list(request)
        with self._lock:
            events = list(self.events)
        args = request.args
        try:
            limit = int(args.get("limit", "10"))
        except ValueError:
            return _error(400, "invalid_request_error", "Invalid integer: limit")
        if not 1 <= limit <= 100:
            return _error(400, "invalid_request_error", "limit must be between 1 and 100")
        types = [value for key, values in args.lists()
                 if key == "types[]" or (key.startswith("types[") and key[6:-1].isdigit())
                 for value in values]
        if len(types) > 20:
            return _error(400, "invalid_request_error", "types: at most 20")
        account = request.headers.get("Stripe-Account")
        events = [e for e in events if e.get("account") == account] if account else [
            e for e in events if "account" not in e]
        events = [e for e in events if _created_matches(e["created"], args)]
        if types:
            events = [e for e in events if e["type"] in types]
        if args.get("type"):
            events = [e for e in events if e["type"] == args["type"]]
        success = _flag(args.get("delivery_success"))
        if success is not None:
            events = [e for e in events if (e["id"] in self.delivered) == success]
        ids = [e["id"] for e in events]
        if args.get("starting_after"):
            if args["starting_after"] not in ids:
                return _error(400, "invalid_request_error", "No such event: "
                              + args["starting_after"])
            events = events[ids.index(args["starting_after"]) + 1:]
        elif args.get("ending_before"):
            end = ids.index(args["ending_before"]) if args["ending_before"] in ids else 0
            events = events[max(0, end - limit):end]
        page = events[:limit]
        body = {"object": "list", "data": page, "has_more": len(events) > limit,
                "url": "/v1/events"}
        return Response(json.dumps(body, indent=2), 200, content_type="application/json",
                        headers={"Request-Id": f"req_fake_{next(_ids)}"})


    def _rate_limit_answer(self) -> Response | None:
        with self._lock:
            if self._rate_limited <= 0:
                return None
            self._rate_limited -= 1
        response = _error(429, "invalid_request_error", "Request rate limit exceeded.",
                          code="rate_limit")
        response.headers["Retry-After"] = self._retry_after
        return response

    def _thin_list(self, request: Request) -> Response:
        """A page of GET /v2/core/events: the first (filters in the query) or the one a
        `page` token names (the first request's filters, and where the page starts)."""
        args = request.args.to_dict(flat=False)
        context = request.headers.get("Stripe-Context")
        offset = 0
        if "page" in args:
            with self._lock:
                known = self._page_tokens.get(args["page"][0])
            if known is None or known[1] != context:
                return _error(400, "invalid_request_error", "Invalid page token")
            args, context, offset = known
        limit = int(args.get("limit", ["20"])[0])
        if not 1 <= limit <= 100:
            return _error(400, "invalid_request_error", "limit must be between 1 and 100")
        types = [v for key, values in args.items() if key.startswith("types[") for v in values]
        with self._lock:
            events = [e for e in self.thin_events if e.get("context") == context
                      and _iso_matches(e["created"], args)
                      and (not types or e["type"] in types)]
        page = events[offset:offset + limit]
        body = {"data": page,
                "next_page_url": self._page_url(args, context, offset + limit, len(events)),
                "previous_page_url": self._page_url(args, context, offset - limit,
                                                    len(events))}
        return Response(json.dumps(body, indent=2), 200, content_type="application/json",
                        headers={"Request-Id": f"req_fake_{next(_ids)}"})

    def _page_url(self, args: dict[str, list[str]], context: str | None, offset: int,
                  total: int) -> str | None:
        if offset < 0 or offset >= total:
            return None
        token = f"page_fake_{next(_ids)}"
        with self._lock:
            self._page_tokens[token] = (args, context, offset)
        return f"/v2/core/events?page={token}"

    def _object(self, path: str) -> Response:
        """A thin event's full event or related object, after `delay_seconds`."""
        if self.on_object is not None:
            self.on_object(path)
        if self.delay_seconds:
            time.sleep(self.delay_seconds)
        with self._lock:
            planned = self.failures.get(path)
            status = planned.pop(0) if planned else None
            found = self.objects.get(path)
        if status is not None:
            return _error(status, "api_error", f"fake failure {status} of {path}")
        if found is None:
            return _error(404, "invalid_request_error", f"No such object: {path}",
                          code="resource_missing")
        return Response(json.dumps(found, indent=2), 200, content_type="application/json",
                        headers={"Request-Id": f"req_fake_{next(_ids)}"})


def _created_matches(created: int, args: Any) -> bool:
    if "created" in args:
        return created == int(args["created"])
    for op, test in (("gte", created.__ge__), ("gt", created.__gt__),
                     ("lte", created.__le__), ("lt", created.__lt__)):
        value = args.get(f"created[{op}]")
        if value is not None and not test(int(value)):
            return False
    return True


def _iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _iso_matches(created: str, args: dict[str, list[str]]) -> bool:
    """`created[gte|gt|lte|lt]` of a v2 listing: ISO times (a malformed one: a 400 at
    Stripe; here an exception, so a test sees it)."""
    when = _iso(created)
    for op, test in (("gte", when.__ge__), ("gt", when.__gt__),
                     ("lte", when.__le__), ("lt", when.__lt__)):
        values = args.get(f"created[{op}]")
        if values and not test(_iso(values[0])):
            return False
    return True


def _error(status: int, kind: str, message: str, code: str | None = None) -> Response:
    error = {"type": kind, "message": message}
    if code:
        error["code"] = code
    return Response(json.dumps({"error": error}), status, content_type="application/json")


@contextmanager
def fake_stripe() -> Iterator[tuple[FakeStripe, str]]:
    """A FakeStripe served on loopback: (the fake, its base URL for STRIPE_API_BASE)."""
    fake = FakeStripe()
    with serve_wsgi(fake) as url:
        yield fake, url
