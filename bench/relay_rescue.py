"""relay-rescue: what the relay's rescue statement costs on every poll tick (issue 18).

`python -m bench.relay_rescue [--relays 10] [--leases 64] [--sent 200000] [--runs 300]`
(not part of `python -m bench`; its figures are in docs/decisions.md, "A hung relay gives
its messages back"). `--relays` live connections each lease `--leases` messages and beat a
relay heartbeat, among `--sent` sent messages; `outbox_rescue` (which then takes nothing,
the steady state) is timed `--runs` times from another connection: median and 95th
percentile, in microseconds.
"""

from __future__ import annotations

import argparse
import statistics
import time

import psycopg

from bench.harness import fresh_database, postgres
from inbox.queries import query
from inbox.relay import store
from inbox.store import processes

TAKEOVER_SECONDS = 120.0


def seed(db: psycopg.Connection, sent: int, due: int) -> None:
    db.execute("INSERT INTO outbox (topic, payload, idempotency_key, status, sent_at)"
               " SELECT 't', '{}', 'sent-' || g, 'sent', now() FROM generate_series(1, %s) g",
               [sent])
    db.execute("INSERT INTO outbox (topic, payload, idempotency_key)"
               " SELECT 't', '{}', 'due-' || g FROM generate_series(1, %s) g", [due])
    db.execute("VACUUM ANALYZE outbox")


def time_rescue(db: psycopg.Connection, runs: int) -> tuple[float, float]:
    params = {"max_attempts": 16, "takeover_seconds": TAKEOVER_SECONDS}
    sql = query("outbox_rescue")
    micros = []
    for _ in range(runs):
        started = time.perf_counter()
        assert db.execute(sql, params).fetchall() == []
        micros.append((time.perf_counter() - started) * 1e6)
    micros.sort()
    return statistics.median(micros), micros[int(runs * 0.95)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--relays", type=int, default=10)
    parser.add_argument("--leases", type=int, default=64)
    parser.add_argument("--sent", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    with postgres() as cluster:
        url = fresh_database(cluster, "relay_rescue")
        with psycopg.connect(url, autocommit=True) as db:
            seed(db, args.sent, args.relays * args.leases)
            relays = [psycopg.connect(url, autocommit=True, application_name="inbox-relay")
                      for _ in range(args.relays)]
            try:
                for number, relay in enumerate(relays):
                    store.claim(relay, f"relay:{number}", args.leases)
                    me = processes.Identity("relay", "bench", None, 100_000 + number)
                    processes.beat(relay, me, 1.0)
                median, p95 = time_rescue(db, args.runs)
            finally:
                for relay in relays:
                    relay.close()
    print(f"outbox_rescue, {args.relays} relays x {args.leases} leases among {args.sent:,}"
          f" sent: median {median:.0f} us, p95 {p95:.0f} us ({args.runs} runs)")


if __name__ == "__main__":
    main()
