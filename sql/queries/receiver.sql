-- name: inbox_insert
-- Store verified events exactly once: every event that reached one web process while its
-- previous insert was committing, in one statement, so one transaction and one WAL flush
-- (group commit; inbox/web/group_commit.py). Each event is its own element of the
-- arrays; received_at is the transaction's time, so events of one insert share it.
-- Only the rows stored come back: an event whose (provider, event_id) was already there,
-- or came earlier in the same arrays, is a duplicate, which is a result, not an error.
-- Running this twice is harmless (the receiver retries it once on a connection that
-- turned out broken). Arrays go in binary: psycopg's text array dumper costs more
-- than the rest of the request.
-- `inbox reconcile stripe` stores the events Stripe's API lists and the inbox lacks with this
-- same statement, one page at a time: `sources` says where each came from ('webhook' or
-- 'api'; NULL means 'webhook'), `accounts` the Connect account of each (or NULL).
-- Rows go in in key order: two inserts of overlapping events (a reconcile page, newest
-- first, and a receiver's group, in arrival order; two reconciles) then take the keys' locks
-- in the same order and one waits for the other, where in opposite orders each would wait
-- for a key the other had just inserted: a deadlock, one of them aborted (a 503).
INSERT INTO inbox (provider, event_id, event_type, payload, raw_body, signature, source,
                   account)
SELECT provider, event_id, event_type, payload::jsonb, raw_body, signature,
       coalesce(source, 'webhook'), account
FROM unnest(%(providers)b::text[], %(event_ids)b::text[], %(event_types)b::text[],
            %(payloads)b::text[], %(raw_bodies)b::bytea[], %(signatures)b::text[],
            %(sources)b::text[], %(accounts)b::text[])
     AS event(provider, event_id, event_type, payload, raw_body, signature, source, account)
ORDER BY provider, event_id
ON CONFLICT (provider, event_id) DO NOTHING
RETURNING provider, event_id;

-- name: inbox_wake_workers
-- Wake idle workers, after inbox_insert committed, in a transaction of its own with
-- asynchronous commit. Sent by each web process's notifier thread (inbox/web/wakeup.py),
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
