"""The chaos soak's outside world: a client that delivers like Stripe, a sink that fails.

- `StripeLikeClient` POSTs signed Stripe fixture events with fresh ids to the web
  processes. Like Stripe it retries any non-2xx answer or connection error later with the
  same bytes and id (signed again, with a fresh timestamp), and it redelivers some events
  it already got a 2xx for, as duplicates. It remembers which ids were acknowledged: those
  are the ones the product promised to keep.
- `FlakySink` is the HTTP endpoint the relay delivers to: it answers 503 to the first
  delivery of about one idempotency key in five and 200 otherwise, and records every
  delivery by key, so the soak can check each message arrived at least once.

Both run as threads of the soak's own process (they are the world, not the product, and
are never killed); everything talks to 127.0.0.1 only.
"""

from __future__ import annotations

import collections
import contextlib
import heapq
import http.client
import http.server
import itertools
import random
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from bench.load import ID_PLACEHOLDER, stripe_templates
from inbox.providers.stripe import sign

REQUEST_TIMEOUT_SECONDS = 10.0
RETRY_DELAY_SECONDS = (0.3, 2.0)  # Stripe's is hours; the soak's clock runs faster
DUPLICATE_DELAY_SECONDS = (0.5, 5.0)
SENDER_THREADS = 16


@dataclass(order=True)
class Delivery:
    """One POST to make at `due` (monotonic seconds)."""

    due: float
    seq: int
    event_id: str = field(compare=False)
    body: bytes = field(compare=False)
    duplicate: bool = field(compare=False, default=False)


@dataclass
class ClientFigures:
    """What the client sent and what it was answered."""

    created: int = 0
    posts: int = 0
    answers: collections.Counter[str] = field(default_factory=collections.Counter)
    duplicates_sent: int = 0


class StripeLikeClient:
    """Delivers events until each is acknowledged, from SENDER_THREADS threads."""

    def __init__(self, ports: Sequence[int], secret: str, *, tag: str,
                 duplicate_share: float = 0.1, seed: int = 18) -> None:
        self.ports = list(ports)
        self.secret = secret
        self.tag = tag
        self.duplicate_share = duplicate_share
        self.rng = random.Random(seed)
        self.figures = ClientFigures()
        self.acked: set[str] = set()
        self.created: list[str] = []
        self._templates = stripe_templates()
        self._numbers = itertools.count()
        self._seq = itertools.count()
        self._due: list[Delivery] = []
        self._in_flight = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._rate = 0.0
        self._pool = ThreadPoolExecutor(SENDER_THREADS, thread_name_prefix="stripe")
        self._thread = threading.Thread(target=self._dispatch, name="dispatch", daemon=True)

    # -- what the soak drives ------------------------------------------------------------
    def start(self) -> StripeLikeClient:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sending (the pending deliveries stay unsent) and wait for the threads."""
        self._stop.set()
        self._thread.join(timeout=REQUEST_TIMEOUT_SECONDS + 5)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def set_rate(self, events_per_second: float) -> None:
        """New events per second from now on (0: only retries and duplicates)."""
        self._rate = events_per_second

    def add(self, count: int, kind: str = "load") -> list[str]:
        """`count` new events, due now; their ids."""
        ids = []
        with self._lock:
            for _ in range(count):
                event_id, body = self._new_event(kind)
                heapq.heappush(self._due, Delivery(time.monotonic(), next(self._seq),
                                                   event_id, body))
                ids.append(event_id)
        return ids

    def settled(self) -> bool:
        """Every event created so far acknowledged, nothing due or in flight."""
        with self._lock:
            return not self._due and not self._in_flight and \
                len(self.acked) == len(self.created)

    def unacknowledged(self) -> list[str]:
        with self._lock:
            return [event_id for event_id in self.created if event_id not in self.acked]

    # -- inside ------------------------------------------------------------------------
    def _new_event(self, kind: str) -> tuple[str, bytes]:
        number = next(self._numbers)
        event_id = f"evt_chaos_{self.tag}_{kind}_{number:09d}"
        template = self._templates[number % len(self._templates)]
        self.created.append(event_id)
        self.figures.created += 1
        return event_id, template.replace(ID_PLACEHOLDER.encode(), event_id.encode(), 1)

    def _dispatch(self) -> None:
        """Create events at the rate and hand due deliveries to the senders."""
        owed = 0.0
        last = time.monotonic()
        while not self._stop.wait(0.01):
            now = time.monotonic()
            owed += self._rate * (now - last)
            last = now
            with self._lock:
                while owed >= 1:
                    owed -= 1
                    event_id, body = self._new_event("load")
                    heapq.heappush(self._due, Delivery(now, next(self._seq), event_id, body))
                while self._due and self._due[0].due <= now and \
                        self._in_flight < 2 * SENDER_THREADS:
                    delivery = heapq.heappop(self._due)
                    self._in_flight += 1
                    self._pool.submit(self._deliver, delivery)

    def _deliver(self, delivery: Delivery) -> None:
        try:
            status = self._post(delivery.body)
            answer = str(status)
        except (OSError, http.client.HTTPException) as exc:
            status, answer = 0, type(exc).__name__
        with self._lock:
            self._in_flight -= 1
            self.figures.posts += 1
            self.figures.answers[answer] += 1
            if 200 <= status < 300:
                first = delivery.event_id not in self.acked
                self.acked.add(delivery.event_id)
                if first and not delivery.duplicate and \
                        self.rng.random() < self.duplicate_share:
                    self.figures.duplicates_sent += 1
                    self._later(delivery, DUPLICATE_DELAY_SECONDS, duplicate=True)
            else:
                self._later(delivery, RETRY_DELAY_SECONDS, duplicate=delivery.duplicate)

    def _later(self, delivery: Delivery, delay: tuple[float, float], *, duplicate: bool) -> None:
        due = time.monotonic() + self.rng.uniform(*delay)
        heapq.heappush(self._due, Delivery(due, next(self._seq), delivery.event_id,
                                           delivery.body, duplicate))

    def _post(self, body: bytes) -> int:
        """One delivery as Stripe makes it: the same bytes, signed at sending time."""
        port = self.rng.choice(self.ports)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_SECONDS)
        try:
            conn.request("POST", "/webhooks/stripe", body=body, headers={
                "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
                "Content-Type": "application/json; charset=utf-8",
                "Stripe-Signature": sign(body, self.secret, int(time.time())),
            })
            response = conn.getresponse()
            response.read()
            return response.status
        finally:
            conn.close()


def fails_first_delivery(key: str) -> bool:
    """About one key in five is refused once: a deterministic choice, the same every run."""
    return zlib.crc32(key.encode()) % 5 == 0


class FlakySink(http.server.ThreadingHTTPServer):
    """Records every delivery by Idempotency-Key; 503 to the first try of some keys."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _SinkHandler)
        self.lock = threading.Lock()
        self.tries: collections.Counter[str] = collections.Counter()
        self.accepted: collections.Counter[str] = collections.Counter()
        self.refused = 0

    @property
    def port(self) -> int:
        return self.server_address[1]

    def answer(self, key: str) -> int:
        with self.lock:
            self.tries[key] += 1
            if self.tries[key] == 1 and fails_first_delivery(key):
                self.refused += 1
                return 503
            self.accepted[key] += 1
            return 200

    def duplicate_deliveries(self) -> int:
        """Deliveries accepted beyond the first per key (at least once allows them)."""
        with self.lock:
            return sum(count - 1 for count in self.accepted.values() if count > 1)


class _SinkHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the relay's connections expect
    server: FlakySink

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        key = self.headers.get("Idempotency-Key") or ""
        status = self.server.answer(key) if key else 400
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: thousands of deliveries."""


@contextlib.contextmanager
def serving(sink: FlakySink) -> Iterator[FlakySink]:
    """Serve the sink from a thread; shut it down afterwards."""
    thread = threading.Thread(target=sink.serve_forever, name="sink", daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        sink.shutdown()
        sink.server_close()
        thread.join(timeout=5)
