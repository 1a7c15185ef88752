"""What counting deliveries per destination costs the relay's outcome statement.

The relay's `outbox_record_outcomes` (100 outcomes over three destinations, as the relay
writes them) timed on one warm connection with the outbox_attempts trigger in three forms,
taking turns round after round so a neighbour's noise falls on all three:
- `none`: the trigger disabled (what the statement costs without per-minute counters);
- `0012`: the trigger as 0012_minute_counts.sql had it (per minute and outcome), rewritten
  for the new key (destination '');
- `0013`: the trigger of 0013_delivery_destinations.sql (per minute, outcome, destination).
Each round claims its 100 messages with the relay's own claim (untimed) first. The
connection commits with synchronous_commit off: the relay's commits wait for a WAL flush
(milliseconds on this machine), which would drown differences of tens of microseconds; what
is timed is the statement's own work, where the trigger's cost falls.
"""

from __future__ import annotations

import statistics
import time

import psycopg

from bench.harness import fresh_database, table
from inbox.relay import store
from inbox.relay.store import Outcome
from inbox.throwaway import Cluster

BATCH = 100
DESTINATIONS = ("https://crm.example:443", "smtp://mail.example:587", "log:")
VARIANTS = ("none", "0012", "0013")
SEED_SQL = """
INSERT INTO outbox (topic, payload, idempotency_key)
SELECT (ARRAY['crm.contact', 'email.send', 'audit.note'])[1 + mod(g, 3)],
       '{"to": "a@example.com"}', 'bench-outcome:' || g
FROM generate_series(1, %(count)s) g
"""
OLD_FUNCTION_SQL = """
CREATE OR REPLACE FUNCTION bench_minute_counts_0012() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO inbox_minute_counts AS c (minute, source, outcome, destination, shard, n)
    SELECT date_trunc('minute', finished_at), 'deliveries', outcome, '',
           pg_backend_pid() % 8, count(*)
    FROM new_rows GROUP BY 1, 3 ORDER BY 1, 3
    ON CONFLICT (minute, source, outcome, destination, shard) DO UPDATE SET n = c.n + EXCLUDED.n;
    RETURN NULL;
END
$$
"""
TRIGGER_SQL = """
DROP TRIGGER outbox_attempts_minute_counts ON outbox_attempts;
CREATE TRIGGER outbox_attempts_minute_counts AFTER INSERT ON outbox_attempts
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {function}();
ALTER TABLE outbox_attempts {able} TRIGGER outbox_attempts_minute_counts
"""
FUNCTIONS = {"none": "inbox_minute_counts_add_deliveries", "0012": "bench_minute_counts_0012",
             "0013": "inbox_minute_counts_add_deliveries"}


def use_trigger(conn: psycopg.Connection, variant: str) -> None:
    able = "DISABLE" if variant == "none" else "ENABLE"
    conn.execute(TRIGGER_SQL.format(function=FUNCTIONS[variant], able=able))


def outcomes(messages: list[store.OutboxMessage]) -> list[Outcome]:
    """What a relay writes for a batch: mostly sent, a few retries and dead ones."""
    result = []
    for n, message in enumerate(messages):
        status = "pending" if n % 20 == 1 else "dead" if n % 20 == 2 else "sent"
        result.append(Outcome(message.id, status, None if status == "sent" else "HTTP 503",
                              0.0, destination=DESTINATIONS[message.id % 3]))
    return result


def outcome_ms(conn: psycopg.Connection, variant: str) -> float:
    """Milliseconds of one outcome statement of BATCH messages under `variant`."""
    use_trigger(conn, variant)
    messages = store.claim(conn, "bench-relay", BATCH)
    assert len(messages) == BATCH, "seed more messages"
    batch = outcomes(messages)
    started = time.perf_counter()
    store.record_outcomes(conn, "bench-relay", batch)
    return (time.perf_counter() - started) * 1000


def measure(cluster: Cluster, rounds: int) -> tuple[str, dict[str, float]]:
    """The Markdown table and each variant's median ms."""
    url = fresh_database(cluster, "bench_delivery_counters")
    times: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        conn.execute(SEED_SQL, {"count": BATCH * len(VARIANTS) * (rounds + 2)})
        conn.execute(OLD_FUNCTION_SQL)
        conn.execute("VACUUM ANALYZE outbox")
        for variant in VARIANTS:  # warm: plans, caches
            outcome_ms(conn, variant)
        for n in range(rounds):
            for variant in VARIANTS[n % 3:] + VARIANTS[:n % 3]:
                times[variant].append(outcome_ms(conn, variant))
        use_trigger(conn, "0013")
    medians = {variant: statistics.median(ms) for variant, ms in times.items()}
    rows = [[variant, medians[variant], sorted(ms)[int(len(ms) * 0.9) - 1],
             (medians[variant] - medians["none"]) * 1000]
            for variant, ms in times.items()]
    body = "\n".join([
        f"The relay's outcome statement, {BATCH} outcomes over {len(DESTINATIONS)} "
        f"destinations, {rounds} rounds per trigger form, taking turns:", "",
        table(["outbox_attempts trigger", "median ms", "p90 ms", "vs none us"], rows),
    ])
    return body, medians


def main() -> None:
    """`python -m bench.delivery_counters [ROUNDS]`: this measurement alone (also part of
    `python -m bench metrics`)."""
    import sys

    from bench.harness import postgres

    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    with postgres() as cluster:
        body, _ = measure(cluster, rounds)
    print(body)


if __name__ == "__main__":
    main()
