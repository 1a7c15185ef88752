"""What each part of a receiver request costs, one at a time, in this process.

`python -m bench.parts` times the pieces of `POST /webhooks/stripe` in a loop (median of
several repetitions, microseconds per call): the Flask test client around a bare view, the
signature check (the stripe SDK, a bare hmac), the JSON parse (orjson vs json), the
log line, the pool's connection check, the insert with a durable commit and the wake-up
NOTIFY (which the receiver's notifier thread sends once per burst of inserts) against a
throwaway PostgreSQL. It is a profile by subtraction, steadier than a sampling profiler on a
loaded machine. The database rows are wall time per call, so they include the commit's
WAL flush.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import statistics
import sys
import time
from collections.abc import Callable

from bench.harness import BENCH_SECRET, fresh_database, postgres, table
from bench.load import stripe_bodies
from inbox import db
from inbox.config import Settings
from inbox.providers import ReceivedEvent, parse_json_object
from inbox.providers.stripe import StripeProvider, sign
from inbox.queries import query
from inbox.web.store import insert_events

REPEATS = 5


def per_call_us(func: Callable[[], object], calls: int) -> float:
    samples = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        for _ in range(calls):
            func()
        samples.append((time.perf_counter() - started) / calls * 1e6)
    return statistics.median(samples)


def main() -> int:
    body = next(stripe_bodies(1, "parts"))
    now = int(time.time())
    header = sign(body, BENCH_SECRET, now)
    provider = StripeProvider((BENCH_SECRET,), 300, time.time)
    text = body.decode()
    rows: list[list[object]] = []

    def hmac_only() -> bool:
        expected = hmac.new(BENCH_SECRET.encode(), f"{now}.".encode() + body,
                            hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, header.split("v1=")[1])

    import stripe

    rows.append(["StripeProvider.verify (header rules + the SDK's verify_header)",
                 per_call_us(lambda: provider.verify(body, header), 2000)])
    rows.append(["stripe SDK verify_header alone",
                 per_call_us(lambda: stripe.WebhookSignature.verify_header(
                     text, header, BENCH_SECRET, tolerance=None), 2000)])
    rows.append(["hmac.new + compare_digest", per_call_us(hmac_only, 2000)])
    rows.append(["parse_json_object (orjson, 3 KB)",
                 per_call_us(lambda: parse_json_object(body), 2000)])
    rows.append(["json.loads (what it used before)", per_call_us(lambda: json.loads(text), 2000)])
    logger = logging.getLogger("inbox.web")
    handler = logging.StreamHandler(open("/dev/null", "w"))  # noqa: SIM115
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    rows.append(["request log line (json.dumps + logger.info)",
                 per_call_us(lambda: logger.info('{"provider": "stripe", "ms": 1.0}'), 5000)])

    from bench.bare_app import create_app as bare_app
    from inbox.web import create_app

    client = bare_app().test_client()
    rows.append(["Flask test client + bare view (POST 3 KB)",
                 per_call_us(lambda: client.post("/webhooks/stripe", data=body), 500)])
    with postgres() as cluster:
        url = fresh_database(cluster, "bench_parts")
        pool = db.create_pool(url, max_size=1, application_name="parts", open_wait=True)
        nocheck = db.create_pool(url, max_size=1, application_name="parts", open_wait=True)
        nocheck._check = None
        try:
            def checked() -> None:
                with pool.connection():
                    pass

            def unchecked() -> None:
                with nocheck.connection():
                    pass

            rows.append(["pool.connection() with check_connection", per_call_us(checked, 500)])
            rows.append(["pool.connection() without check", per_call_us(unchecked, 500)])
            counter = iter(range(10**9))

            def insert_one() -> object:
                event = ReceivedEvent("stripe", f"evt_parts_{next(counter)}", "invoice.paid",
                                      text, body, header)
                return insert_events(nocheck, [event])

            rows.append(["inbox_insert, durable commit, one client",
                         per_call_us(insert_one, 300)])

            def wake() -> None:
                with nocheck.connection() as conn:
                    conn.execute(query("inbox_wake_workers"))

            rows.append(["inbox_wake_workers (one NOTIFY, asynchronous commit)",
                         per_call_us(wake, 300)])
            settings = Settings(database_url=url, stripe_webhook_secrets=(BENCH_SECRET,))
            app_client = create_app(settings).test_client()
            logging.getLogger("inbox").handlers[:] = [handler]

            fresh_bodies = iter(list(stripe_bodies(REPEATS * 300 + 10, "full")))

            def full_request() -> None:
                fresh = next(fresh_bodies)
                app_client.post("/webhooks/stripe", data=fresh, headers={
                    "Stripe-Signature": sign(fresh, BENCH_SECRET, int(time.time())),
                    "Content-Type": "application/json"})

            rows.append(["whole receiver request (test client, durable insert)",
                         per_call_us(full_request, 300)])
            app_client.application.extensions["inbox.database"].close()
        finally:
            pool.close()
            nocheck.close()
    print(table(["part", "us per call (median)"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
