"""Filling the inbox with realistic events, fast (one INSERT … SELECT in the database).

Each row gets its own time (clock_timestamp(), not the statement's now()), as events that
arrive one after another do: a backlog of 100,000 rows sharing one next_attempt_at is
nothing a receiver writes, and it hides where in the due index a claim starts.
"""

from __future__ import annotations

import json

import psycopg

from bench.load import stripe_templates

SEED_SQL = """
INSERT INTO inbox (provider, event_id, event_type, payload, raw_body, signature, status,
                   attempts, received_at, processed_at, next_attempt_at)
SELECT 'stripe', %(prefix)s || g, t.event_type,
       jsonb_set(t.body::jsonb, '{id}', to_jsonb(%(prefix)s || g)),
       convert_to(t.body, 'UTF8'), 't=0,v1=seeded', %(status)s,
       CASE WHEN %(status)s = 'pending' THEN 0 ELSE 1 END,
       clock_timestamp(),
       CASE WHEN %(status)s = 'pending' THEN NULL ELSE clock_timestamp() END,
       clock_timestamp()
FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS g
JOIN bench_templates t ON t.k = g %% %(kinds)s
"""
CHUNK = 100_000


def seed_events(url: str, count: int, *, status: str = "pending", prefix: str = "evt_seed_",
                first: int = 1, templates: list[bytes] | None = None) -> None:
    """Insert `count` events (the fixture bodies in turn, unique ids), then VACUUM ANALYZE."""
    templates = templates or stripe_templates()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TEMP TABLE bench_templates (k int, event_type text, body text)")
        with conn.cursor() as cur:
            for k, body in enumerate(templates):
                cur.execute("INSERT INTO bench_templates VALUES (%s, %s, %s)",
                            (k, json.loads(body)["type"], body.decode()))
        for start in range(first, first + count, CHUNK):
            last = min(start + CHUNK, first + count) - 1
            conn.execute(SEED_SQL, {"prefix": prefix, "status": status, "first": start,
                                    "last": last, "kinds": len(templates)})
        conn.execute("VACUUM ANALYZE inbox")
        conn.execute("CHECKPOINT")


def lean_templates() -> list[bytes]:
    """The fixture events cut to their envelope and the object's id (~250 bytes each).

    For backlogs of millions of events, where seeding full 3 KB bodies would take longer
    than the drain they feed (and tens of GB): what a drain does to the table's indexes
    and dead tuples does not depend on the payload's size."""
    lean = []
    for body in stripe_templates():
        event = json.loads(body)
        obj = event["data"]["object"]
        event["data"] = {"object": {"id": obj.get("id"), "object": obj.get("object")}}
        lean.append(json.dumps(event, separators=(",", ":")).encode())
    return lean
