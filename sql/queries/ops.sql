-- name: inbox_status_counts
-- Events by status, for `inbox status`.
SELECT status, count(*) FROM inbox GROUP BY status;

-- name: inbox_leased_count
-- Events a worker holds right now (between claim and outcome).
SELECT count(*) FROM inbox WHERE locked_backend IS NOT NULL AND status = 'pending';

-- name: outbox_status_counts
-- Messages by status, for `inbox status`.
SELECT status, count(*) FROM outbox GROUP BY status;

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

-- name: inbox_replay_status
-- `inbox replay --status dead [--type T]`: the same for every event in a status.
-- `--since/--until` bound received_at (NULL: no bound); `--dry-run` runs
-- inbox_replay_preview_status (audit.sql), whose WHERE clause is kept in step with this one.
WITH replayed AS (
    UPDATE inbox
    SET status = 'pending', attempts = 0, next_attempt_at = now(), processed_at = NULL
    WHERE status = %(status)s
      AND (%(event_type)s::text IS NULL OR event_type = %(event_type)s::text)
      AND (%(provider)s::text IS NULL OR provider = %(provider)s::text)
      AND (%(since)s::timestamptz IS NULL OR received_at >= %(since)s::timestamptz)
      AND (%(until)s::timestamptz IS NULL OR received_at < %(until)s::timestamptz)
      AND locked_backend IS NULL
    RETURNING id, provider, event_id
)
SELECT id, provider, event_id, pg_notify('inbox_events', '') FROM replayed;
