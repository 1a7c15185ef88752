-- name: inbox_insert
-- Store a verified event exactly once, as a single-statement (autocommit) transaction. No
-- row back means (provider, event_id) was already there: a duplicate is a result, not an
-- error, and running this twice is harmless (the receiver retries it once on a connection
-- that turned out broken).
INSERT INTO inbox (provider, event_id, event_type, payload, raw_body, signature)
VALUES (%(provider)s, %(event_id)s, %(event_type)s, %(payload)s::jsonb, %(raw_body)s,
        %(signature)s)
ON CONFLICT (provider, event_id) DO NOTHING
RETURNING id;

-- name: inbox_wake_workers
-- Wake idle workers, after inbox_insert committed, in a transaction of its own with
-- asynchronous commit. Sent by each web process's notifier thread (inbox/store/wakeup.py),
-- once for all the inserts committed since its previous one. Not in the insert's
-- transaction: a transaction that notifies holds a cluster-wide lock from pre-commit until
-- its commit record is flushed, so notifying inserts cannot share WAL flushes and the
-- receiver's throughput collapses to one fsync per event (docs/decisions.md has the
-- pgbench figures). The event itself is durable before
-- this runs; a lost wake-up only costs a poll interval.
SELECT set_config('synchronous_commit', 'off', true), pg_notify('inbox_events', '');

-- name: readiness
-- The receiver is ready when the database answers and the inbox table exists (migrated).
SELECT to_regclass('inbox') IS NOT NULL AS migrated;
