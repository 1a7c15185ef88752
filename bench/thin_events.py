"""`python -m bench.thin_events [--events N] [--thin-every K] [--delay-ms D]`: where a thin
event's request to Stripe waits, and what that costs the batch and its neighbours.

A worker drains N events in batches of 100: every K-th is a Stripe thin event whose handler
fetches the full event (`event.stripe_event()`, from the tests' fake of Stripe's API, which
answers after D ms, 100 by default) and then writes; the others' handlers update one hot
row (a balance every event touches: its row lock is what "neighbours" wait for). Meanwhile
a contender updates the same row in a loop (what a web request or another worker would do)
and a sampler watches the worker's connection in pg_stat_activity. Three ways, each on a
fresh database:

- inside: the request waits inside the batch's open transaction (before this choice);
- split: the worker ends the batch's transaction before the request (EndTransactionFirst
  in inbox/worker/batch.py): what the product does for a handler that asks;
- prefetch: the handler is registered with `prefetch=("event",)`: the batch's requests
  are made before it begins, 8 at a time (inbox/stripe/thin.py, PREFETCH_THREADS).

Prints, per way: the drain's events/s, the contender's wait for the row (p50, p99, max),
and how long the worker sat "idle in transaction" (sampled every 5 ms).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

from bench.harness import fresh_database, postgres, table
from inbox.config import Settings
from inbox.stripe.thin import StripeFetch
from inbox.worker.loop import Worker
from inbox.worker.registry import Registry
from tests.stripe_fake import API_KEY, fake_stripe

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "stripe_thin"
THIN_TYPE = "v1.billing.meter.error_report_triggered"
ORDINARY_TYPE = "bench.balance_changed"
SAMPLE_SECONDS = 0.005
TABLES = """
CREATE TABLE hot (id int PRIMARY KEY, n bigint NOT NULL DEFAULT 0, m bigint NOT NULL DEFAULT 0);
INSERT INTO hot (id) VALUES (1);
CREATE TABLE thin_seen (event_id text PRIMARY KEY, summary text NOT NULL);
"""


class InsideWorker(Worker):
    """The request waits in whatever transaction is open."""

    def _stripe_fetch(self, claimed: Any, batch: Any, read_payload: Any) -> StripeFetch | None:
        if claimed.provider != "stripe":
            return None
        return StripeFetch(self._stripe_clients, read_payload, lambda: None)


WAYS: dict[str, type[Worker]] = {"inside": InsideWorker, "split": Worker, "prefetch": Worker}


def registry(way: str) -> Registry:
    handlers = Registry()

    def balance_changed(event: Any, tx: Any) -> None:
        tx.execute("UPDATE hot SET n = n + 1 WHERE id = 1")

    def meter_errors(event: Any, tx: Any) -> None:
        summary = event.stripe_event().data["developer_message_summary"]
        tx.execute("INSERT INTO thin_seen (event_id, summary) VALUES (%s, %s)",
                   [event.id, summary])

    handlers.register("stripe", ORDINARY_TYPE, balance_changed)
    prefetch = ("event",) if way == "prefetch" else ()
    handlers.register("stripe", THIN_TYPE, meter_errors, prefetch=prefetch)
    return handlers


def load_events(url: str, fake: Any, count: int, thin_every: int) -> None:
    notification = json.loads((FIXTURES / f"{THIN_TYPE}.json").read_text())
    full = json.loads((FIXTURES / f"{THIN_TYPE}.event.json").read_text())
    rows = []
    for n in range(count):
        if n % thin_every == thin_every - 1:
            event_id = f"evt_test_thin_{n:06d}"
            fake.add_thin({**full, "id": event_id})
            rows.append((event_id, THIN_TYPE, json.dumps({**notification, "id": event_id})))
        else:
            event_id = f"evt_balance_{n:06d}"
            rows.append((event_id, ORDINARY_TYPE, json.dumps({"id": event_id})))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(TABLES)
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO inbox (provider, event_id, event_type, payload, "
                            "raw_body) VALUES ('stripe', %s, %s, %s::jsonb, "
                            "convert_to(%s, 'UTF8'))",
                            [(i, t, body, body) for i, t, body in rows])


class Contender(threading.Thread):
    """Updates the hot row in a loop; the waits are what the worker's row lock costs."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.waits: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.stop.is_set():
                began = time.perf_counter()
                conn.execute("UPDATE hot SET m = m + 1 WHERE id = 1")
                self.waits.append(time.perf_counter() - began)
                time.sleep(0.002)


class Sampler(threading.Thread):
    """Samples the worker's connection: seconds spent idle inside a transaction."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.idle_in_transaction_seconds = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.stop.is_set():
                row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE "
                                   "application_name = 'inbox-worker' AND "
                                   "state = 'idle in transaction'").fetchone()
                if row and row[0]:
                    self.idle_in_transaction_seconds += SAMPLE_SECONDS
                time.sleep(SAMPLE_SECONDS)


def run_way(cluster: Any, way: str, args: argparse.Namespace) -> list[object]:
    url = fresh_database(cluster, f"thin_{way}")
    with fake_stripe() as (fake, base):
        load_events(url, fake, args.events, args.thin_every)
        fake.delay_seconds = args.delay_ms / 1000
        settings = Settings(database_url=url, stripe_api_key=API_KEY, stripe_api_base=base)
        worker = WAYS[way](settings, registry(way), name=f"bench-{way}")
        contender, sampler = Contender(url), Sampler(url)
        contender.start()
        sampler.start()
        began = time.perf_counter()
        try:
            while worker.run_once():
                pass
        finally:
            seconds = time.perf_counter() - began
            contender.stop.set()
            sampler.stop.set()
            contender.join()
            sampler.join()
            worker.close()
    with psycopg.connect(url) as conn:
        processed = conn.execute("SELECT count(*) FROM inbox WHERE status = 'processed'"
                                 ).fetchone()[0]
    waits = sorted(contender.waits) or [0.0]
    p99 = waits[min(len(waits) - 1, int(len(waits) * 0.99))]
    return [way, processed, round(processed / seconds), round(statistics.median(waits) * 1000, 1),
            round(p99 * 1000, 1), round(waits[-1] * 1000, 1),
            round(sampler.idle_in_transaction_seconds, 2)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--thin-every", type=int, default=10)
    parser.add_argument("--delay-ms", type=float, default=100.0)
    parser.add_argument("--ways", default="inside,split,prefetch")
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the fake's request lines
    rows = []
    with postgres() as cluster:
        for way in args.ways.split(","):
            rows.append(run_way(cluster, way, args))
    print(f"{args.events} events, 1 in {args.thin_every} thin, Stripe answering after "
          f"{args.delay_ms:.0f} ms, batches of 100")
    print(table(["way", "processed", "events/s", "row wait p50 ms", "p99 ms", "max ms",
                 "idle in transaction s"], rows))


if __name__ == "__main__":
    main()
