-- name: inbox_leased_count
-- Events a worker holds right now (between claim and outcome): the 'infinity' end of
-- inbox_due_idx.
SELECT count(*) FROM inbox
WHERE status = 'pending' AND next_attempt_at = 'infinity' AND locked_backend IS NOT NULL;

-- name: inbox_replay_ids
-- `inbox replay EVENT_ID...`: back to `pending`, due now, with a fresh attempt budget. The
-- history (inbox_attempts, last_error, crashes) is kept. Events a worker holds right now are
-- left alone. Wakes the workers. Returns the events replayed.
WITH replayed AS (
    UPDATE inbox
    SET status = 'pending', attempts = 0, next_attempt_at = now(), processed_at = NULL
    WHERE event_id = ANY(%(event_ids)s::text[])
      AND (%(provider)s::text IS NULL OR provider = %(provider)s::text)
      AND locked_backend IS NULL
    RETURNING id, provider, event_id
)
SELECT id, provider, event_id, pg_notify('inbox_events', '') FROM replayed;

-- name: inbox_replay_status_filter
-- A fragment, never run alone: the events `inbox replay --status S [--type T] [--provider
-- P] [--since/--until]` puts back (NULL: no bound), rows a worker holds left alone. Included
-- by inbox_replay_status and its dry run, inbox_replay_preview_status (audit.sql).
WHERE status = %(status)s
  AND (%(event_type)s::text IS NULL OR event_type = %(event_type)s::text)
  AND (%(provider)s::text IS NULL OR provider = %(provider)s::text)
  AND (%(since)s::timestamptz IS NULL OR received_at >= %(since)s::timestamptz)
  AND (%(until)s::timestamptz IS NULL OR received_at < %(until)s::timestamptz)
  AND locked_backend IS NULL

-- name: inbox_replay_status
-- `inbox replay --status dead [--type T]`: the same for every event in a status.
WITH replayed AS (
    UPDATE inbox
    SET status = 'pending', attempts = 0, next_attempt_at = now(), processed_at = NULL
    -- include: inbox_replay_status_filter
    RETURNING id, provider, event_id
)
SELECT id, provider, event_id, pg_notify('inbox_events', '') FROM replayed;

-- name: outbox_replay_ids
-- `inbox replay --outbox ID...`: messages back to `pending`, due now, with a fresh attempt
-- budget. last_error is kept (why it failed last time); sent_at is cleared (a sent message
-- replayed is to be sent again, with the same idempotency key). Messages a relay holds right
-- now (leased) are left alone. Wakes the relays. Returns the messages replayed.
WITH replayed AS (
    UPDATE outbox
    SET status = 'pending', attempts = 0, next_attempt_at = now(), sent_at = NULL
    WHERE id = ANY(%(ids)s::bigint[])
      AND locked_backend IS NULL
    RETURNING id, topic, idempotency_key
)
SELECT id, topic, idempotency_key, pg_notify('outbox_messages', '') FROM replayed
ORDER BY id;

-- name: outbox_replay_status
-- `inbox replay --outbox --status dead [--topic PATTERN]`: the same for every message in a
-- status. %(topics)s: the topics the pattern matched (outbox_topics_in_status, then
-- fnmatch in Python, exactly as INBOX_ROUTES matches), NULL for every topic.
-- `--since/--until` bound created_at (NULL: no bound). `--dry-run` runs
-- outbox_replay_preview_status, whose WHERE clause is kept in step with this one.
WITH replayed AS (
    UPDATE outbox
    SET status = 'pending', attempts = 0, next_attempt_at = now(), sent_at = NULL
    WHERE status = %(status)s
      AND (%(topics)s::text[] IS NULL OR topic = ANY(%(topics)s::text[]))
      AND (%(since)s::timestamptz IS NULL OR created_at >= %(since)s::timestamptz)
      AND (%(until)s::timestamptz IS NULL OR created_at < %(until)s::timestamptz)
      AND locked_backend IS NULL
    RETURNING id, topic, idempotency_key
)
SELECT id, topic, idempotency_key, pg_notify('outbox_messages', '') FROM replayed
ORDER BY id;

-- name: outbox_topics_in_status
-- The topics of the messages in a status, for matching `--topic PATTERN` against them.
SELECT DISTINCT topic FROM outbox WHERE status = %(status)s AND locked_backend IS NULL;

-- name: outbox_replay_preview_ids
-- `inbox replay --outbox ID... --dry-run`: the messages outbox_replay_ids would put back.
-- Keep the WHERE clause in step with it.
SELECT id, topic, idempotency_key
FROM outbox
WHERE id = ANY(%(ids)s::bigint[])
  AND locked_backend IS NULL
ORDER BY id;

-- name: outbox_replay_preview_status
-- `inbox replay --outbox --status S ... --dry-run`: the messages outbox_replay_status would
-- put back. Keep the WHERE clause in step with it.
SELECT id, topic, idempotency_key
FROM outbox
WHERE status = %(status)s
  AND (%(topics)s::text[] IS NULL OR topic = ANY(%(topics)s::text[]))
  AND (%(since)s::timestamptz IS NULL OR created_at >= %(since)s::timestamptz)
  AND (%(until)s::timestamptz IS NULL OR created_at < %(until)s::timestamptz)
  AND locked_backend IS NULL
ORDER BY id;
