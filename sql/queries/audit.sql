-- Queries of the operator commands that inspect and prune: `inbox events list|show`,
-- `inbox prune`. (The views for psql are in sql/migrations/0003_audit_views.sql.)

-- name: inbox_list
-- Newest first, every filter optional (NULL = no filter). `retrying` is a pseudo-status:
-- pending again after a failed attempt (as in the inbox_failures view). `account` (a Stripe
-- Connect account) is served by inbox_account_idx.
SELECT id, provider, event_id, event_type, status, attempts, received_at, processed_at,
       next_attempt_at, last_error, account, source
FROM inbox
WHERE (%(status)s::text IS NULL
       OR status = %(status)s::text
       OR (%(status)s::text = 'retrying' AND status = 'pending' AND attempts > 0
           AND last_error IS NOT NULL))
  AND (%(event_type)s::text IS NULL OR event_type = %(event_type)s::text)
  AND (%(provider)s::text IS NULL OR provider = %(provider)s::text)
  AND (%(account)s::text IS NULL OR account = %(account)s::text)
  AND (%(since)s::timestamptz IS NULL OR received_at >= %(since)s::timestamptz)
  AND (%(until)s::timestamptz IS NULL OR received_at < %(until)s::timestamptz)
ORDER BY id DESC
LIMIT %(limit)s;

-- name: inbox_find
-- An event by its provider event id, or by its inbox id when the reference is a number.
-- The unique index leads with `provider`, so the distinct providers are found first with
-- a loose index scan (a handful of index probes) and each is then looked up by
-- (provider, event_id): no sequential scan of a large inbox.
WITH RECURSIVE providers AS (
    (SELECT provider FROM inbox ORDER BY provider LIMIT 1)
    UNION ALL
    SELECT (SELECT i.provider FROM inbox i WHERE i.provider > p.provider
            ORDER BY i.provider LIMIT 1)
    FROM providers p
    WHERE p.provider IS NOT NULL
), found AS (
    SELECT e.*
    FROM providers p
    CROSS JOIN LATERAL (
        SELECT * FROM inbox i WHERE i.provider = p.provider AND i.event_id = %(ref)s::text
        LIMIT 1  -- unique anyway; keeps the planner from flattening this into a scan
    ) e
    UNION ALL
    SELECT * FROM inbox WHERE id = %(inbox_id)s::bigint AND event_id <> %(ref)s::text
)
SELECT id, provider, event_id, event_type, status, attempts, received_at, processed_at,
       next_attempt_at, last_error, account, source, signature, payload
FROM found
ORDER BY id;

-- name: inbox_attempts_of_event
-- The attempts history of one event, oldest first.
SELECT attempt, worker, started_at, finished_at, outcome, error
FROM inbox_attempts
WHERE inbox_id = %(inbox_id)s
ORDER BY started_at, id;

-- name: outbox_of_event
-- The outbox messages one event caused.
SELECT id, topic, status, attempts, idempotency_key, created_at, sent_at, next_attempt_at,
       last_error, payload
FROM outbox
WHERE inbox_id = %(inbox_id)s
ORDER BY id;

-- name: outbox_attempts_of_event
-- Every delivery try of the messages one event caused, by message then oldest first.
SELECT a.outbox_id, a.attempt, a.relay, a.destination, a.started_at, a.finished_at,
       a.outcome, a.http_status, a.smtp_reply, a.error
FROM outbox o
JOIN outbox_attempts a ON a.outbox_id = o.id
WHERE o.inbox_id = %(inbox_id)s
ORDER BY a.outbox_id, a.started_at, a.id;

-- name: prune_cutoff
-- One cutoff for a whole prune run, on the database's clock.
SELECT now() - %(older_than)s::interval AS cutoff;

-- name: outbox_prune_count
-- What `inbox prune` would delete from the outbox (--dry-run, and the progress total).
SELECT count(*)
FROM outbox
WHERE status = ANY(%(statuses)s::text[])
  AND coalesce(sent_at, created_at) < %(cutoff)s;

-- name: outbox_prune_batch
-- Delete up to batch_size finished messages after `after_id`, in id order, in one short
-- transaction; their outbox_attempts rows go with them (ON DELETE CASCADE). SKIP LOCKED: a message the relay holds right now is left for the next run,
-- never waited for. Returns how many were deleted and the last id, for the next batch.
WITH doomed AS (
    SELECT id
    FROM outbox
    WHERE id > %(after_id)s
      AND status = ANY(%(statuses)s::text[])
      AND coalesce(sent_at, created_at) < %(cutoff)s
    ORDER BY id
    LIMIT %(batch_size)s
    FOR UPDATE SKIP LOCKED
), deleted AS (
    DELETE FROM outbox o USING doomed WHERE o.id = doomed.id RETURNING o.id
)
SELECT count(*) AS deleted, max(id) AS last_id FROM deleted;

-- name: inbox_prune_count
-- What `inbox prune` would delete from the inbox. An event is pruned only once none of
-- its outbox messages remain, so "what did we send because of this event?" keeps its
-- answer for as long as a message exists (and deleting an event never touches an outbox
-- row the relay may be holding). The count runs before the outbox is pruned, so it
-- counts the events whose remaining messages are all about to go.
SELECT count(*)
FROM inbox i
WHERE i.status = ANY(%(statuses)s::text[])
  AND coalesce(i.processed_at, i.received_at) < %(cutoff)s
  AND NOT EXISTS (
      SELECT 1 FROM outbox o
      WHERE o.inbox_id = i.id
        AND NOT (o.status = ANY(%(outbox_statuses)s::text[])
                 AND coalesce(o.sent_at, o.created_at) < %(cutoff)s));

-- name: inbox_prune_batch
-- Like outbox_prune_batch; the event's inbox_attempts rows go with it (ON DELETE CASCADE).
WITH doomed AS (
    SELECT i.id
    FROM inbox i
    WHERE i.id > %(after_id)s
      AND i.status = ANY(%(statuses)s::text[])
      AND coalesce(i.processed_at, i.received_at) < %(cutoff)s
      AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.inbox_id = i.id)
    ORDER BY i.id
    LIMIT %(batch_size)s
    FOR UPDATE SKIP LOCKED
), deleted AS (
    DELETE FROM inbox i USING doomed WHERE i.id = doomed.id RETURNING i.id
)
SELECT count(*) AS deleted, max(id) AS last_id FROM deleted;

-- name: status_backlog
-- Backlog for `inbox status`: rows due now, and how long the oldest of them has been due
-- (0 when none). Both read only the partial due indexes (next_attempt_at, id) WHERE pending;
-- leased rows (next_attempt_at = 'infinity') are not due.
SELECT (SELECT count(*) FROM inbox
        WHERE status = 'pending' AND next_attempt_at <= now())           AS inbox_due,
       (SELECT coalesce(extract(epoch FROM now() - min(next_attempt_at)), 0)::float8
        FROM inbox WHERE status = 'pending' AND next_attempt_at <= now()) AS inbox_oldest_due_seconds,
       (SELECT count(*) FROM outbox
        WHERE status = 'pending' AND next_attempt_at <= now())           AS outbox_due,
       (SELECT coalesce(extract(epoch FROM now() - min(next_attempt_at)), 0)::float8
        FROM outbox WHERE status = 'pending' AND next_attempt_at <= now()) AS outbox_oldest_due_seconds;

-- name: status_last_hour
-- Throughput for `inbox status`: attempts finished in the last hour, by outcome
-- (processed, ignored, retry, dead, crashed). inbox_attempts only grows at its end, so
-- the BRIN index on finished_at reads just the last pages.
SELECT outcome, count(*)
FROM inbox_attempts
WHERE finished_at >= now() - interval '1 hour'
GROUP BY outcome;

-- name: inbox_replay_preview_ids
-- `inbox replay EVENT_ID... --dry-run`: the events inbox_replay_ids (ops.sql) would put
-- back. Keep the WHERE clause in step with it.
SELECT id, provider, event_id
FROM inbox
WHERE event_id = ANY(%(event_ids)s::text[])
  AND (%(provider)s::text IS NULL OR provider = %(provider)s::text)
  AND locked_backend IS NULL
ORDER BY id;

-- name: inbox_replay_preview_status
-- `inbox replay --status S ... --dry-run`: the events inbox_replay_status (ops.sql) would
-- put back, through the same filter.
SELECT id, provider, event_id
FROM inbox
-- include: inbox_replay_status_filter
ORDER BY id;
