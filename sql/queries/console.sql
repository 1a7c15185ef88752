-- The operator console's own queries (inbox/console/store.py). It also reads the shared
-- ones: system_state.sql (counts, backlog), processes.sql, audit.sql (an event, its
-- attempts and messages) and ops.sql (replaying one event, outbox replays).
-- Every statement here reads an index range or a bounded slice: none counts a table.
-- The events filter (status with `retrying`, provider, type, received range as id bounds,
-- error) is console_events_filter, included by console_events, console_replay_count and
-- console_replay_batch. `retrying` is pending again after a failed attempt, as in the
-- inbox_failures view; `dead` and `retrying` are read through inbox_failures_idx.

-- name: console_statement_timeout
-- A time budget for the rest of the current transaction (the payload text search).
SELECT set_config('statement_timeout', %(ms)s::text, true);

-- name: console_id_range
-- The inbox's lowest and highest id (two probes of the primary key).
SELECT (SELECT id FROM inbox ORDER BY id LIMIT 1) AS low,
       (SELECT id FROM inbox ORDER BY id DESC LIMIT 1) AS high;

-- name: console_received_at_of
-- The received_at of the first event at or after an id: a probe of the binary search that
-- turns a received time into an id bound (ids grow with received_at).
SELECT id, received_at FROM inbox WHERE id >= %(id)s ORDER BY id LIMIT 1;

-- name: console_events_filter
-- A fragment, never run alone: the events filter's conditions after the status (each
-- statement says its own: a bulk replay needs one), as `AND ...` lines. %(before)s is the
-- keyset: ids below it (NULL: from the newest).
  AND (%(event_type)s::text IS NULL OR event_type = %(event_type)s::text)
  AND (%(provider)s::text IS NULL OR provider = %(provider)s::text)
  AND (%(error)s::text IS NULL OR left(split_part(last_error, E'\n', 1), 200) = %(error)s::text)
  AND (%(since)s::timestamptz IS NULL OR received_at >= %(since)s::timestamptz)
  AND (%(until)s::timestamptz IS NULL OR received_at < %(until)s::timestamptz)
  AND (%(low_id)s::bigint IS NULL OR id >= %(low_id)s::bigint)
  AND (%(high_id)s::bigint IS NULL OR id <= %(high_id)s::bigint)
  AND (%(before)s::bigint IS NULL OR id < %(before)s::bigint)

-- name: console_events
-- One page of the events list, newest first, after the keyset %(before)s (the smallest id
-- of the previous page). %(text)s: a LIKE pattern the payload must contain (ILIKE).
SELECT id, provider, event_id, event_type, status, attempts, received_at, processed_at,
       next_attempt_at, last_error
FROM inbox
WHERE (%(status)s::text IS NULL
       OR (%(status)s::text = 'retrying' AND status = 'pending' AND attempts > 0
           AND last_error IS NOT NULL)
       OR (%(status)s::text <> 'retrying' AND status = %(status)s::text))
  -- include: console_events_filter
  AND (%(text)s::text IS NULL OR payload::text ILIKE %(text)s::text)
ORDER BY id DESC
LIMIT %(limit)s;

-- name: console_replay_count
-- How many events a bulk replay by this filter would put back, counted up to %(cap)s.
SELECT count(*) FROM (
    SELECT 1 FROM inbox
    WHERE ((%(status)s::text = 'retrying' AND status = 'pending' AND attempts > 0
            AND last_error IS NOT NULL)
           OR (%(status)s::text <> 'retrying' AND status = %(status)s::text))
      -- include: console_events_filter
      AND locked_backend IS NULL
    LIMIT %(cap)s
) AS matching;

-- name: console_replay_batch
-- One batch of a bulk replay, newest first below %(before)s: back to `pending`, due now,
-- with a fresh attempt budget (as inbox_replay_status does), history kept. Its own
-- autocommit statement, so each batch's row locks last milliseconds; rows a worker holds
-- are skipped. Returns how many it replayed and the lowest id it looked at (the next
-- batch's %(before)s); wakes the workers.
WITH batch AS (
    SELECT id FROM inbox
    WHERE ((%(status)s::text = 'retrying' AND status = 'pending' AND attempts > 0
            AND last_error IS NOT NULL)
           OR (%(status)s::text <> 'retrying' AND status = %(status)s::text))
      -- include: console_events_filter
      AND locked_backend IS NULL
    ORDER BY id DESC
    LIMIT %(batch_size)s
    FOR UPDATE SKIP LOCKED
), replayed AS (
    UPDATE inbox i
    SET status = 'pending', attempts = 0, next_attempt_at = now(), processed_at = NULL
    FROM batch WHERE i.id = batch.id
    RETURNING i.id
), summary AS (
    SELECT count(*) AS replayed, (SELECT min(id) FROM batch) AS lowest FROM replayed
)
SELECT replayed, lowest, CASE WHEN replayed > 0 THEN pg_notify('inbox_events', '') END
FROM summary;

-- name: console_failure_groups
-- Dead and retrying events grouped by state, provider, type and error (the first line of
-- last_error, up to 200 characters), the largest groups first. Reads inbox_failures_idx:
-- only failing events.
SELECT CASE WHEN status = 'dead' THEN 'dead' ELSE 'retrying' END AS state,
       provider, event_type,
       coalesce(left(split_part(last_error, E'\n', 1), 200), '') AS error,
       count(*) AS events, min(received_at) AS first_at, max(received_at) AS last_at
FROM inbox
WHERE status = 'dead' OR (status = 'pending' AND attempts > 0 AND last_error IS NOT NULL)
GROUP BY 1, 2, 3, 4
ORDER BY events DESC, last_at DESC
LIMIT %(limit)s;

-- name: console_newest_failures
-- The newest dead or retrying events (inbox_failures_idx, read backwards).
SELECT id, provider, event_id, event_type, status, attempts, received_at, last_error
FROM inbox
WHERE status = 'dead' OR (status = 'pending' AND attempts > 0 AND last_error IS NOT NULL)
ORDER BY id DESC
LIMIT %(limit)s;

-- name: console_attempts_per_minute
-- Attempts finished per minute by outcome since %(since)s (a minute's start), from the
-- trigger-kept counters of 0012_minute_counts.sql: a day is at most a few thousand small
-- rows, whatever the throughput.
SELECT minute, outcome, sum(n)::bigint AS n
FROM inbox_minute_counts
WHERE source = 'attempts' AND minute >= %(since)s::timestamptz
GROUP BY 1, 2;

-- name: console_deliveries_per_minute
-- Delivery tries finished per minute: sent, or failed (retry, dead, crashed).
SELECT minute, CASE WHEN outcome = 'sent' THEN 'sent' ELSE 'failed' END AS outcome,
       sum(n)::bigint AS n
FROM inbox_minute_counts
WHERE source = 'deliveries' AND minute >= %(since)s::timestamptz
GROUP BY 1, 2;

-- name: console_event_extras
-- What inbox_find leaves out: the raw body's size, the crashes, the lease.
SELECT octet_length(raw_body) AS raw_bytes, crashes, locked_by, locked_at
FROM inbox WHERE id = %(id)s;

-- name: console_object_versions_of_event
-- The object versions an event applied (tx.apply_if_newer) and still holds.
SELECT object_key, last_created, updated_at
FROM inbox_object_versions WHERE inbox_id = %(id)s
ORDER BY object_key;

-- name: console_outbox_breakdown
-- Pending and dead messages by topic (the due index and outbox_dead_idx: few rows);
-- sent messages are counted only in total (the trigger-kept counters).
SELECT topic, status, count(*) AS n, min(created_at) AS oldest
FROM outbox
WHERE status = 'pending'
GROUP BY topic, status
UNION ALL
SELECT topic, status, count(*), min(created_at)
FROM outbox
WHERE status = 'dead'
GROUP BY topic, status
ORDER BY 1, 2;

-- name: console_outbox_messages
-- One page of outbox messages, newest first, after the keyset %(before)s.
SELECT id, inbox_id, topic, status, attempts, created_at, sent_at, next_attempt_at,
       last_error
FROM outbox
WHERE (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(topic)s::text IS NULL OR topic = %(topic)s::text)
  AND (%(before)s::bigint IS NULL OR id < %(before)s::bigint)
ORDER BY id DESC
LIMIT %(limit)s;

-- name: console_outbox_message
-- One outbox message.
SELECT id, inbox_id, topic, status, attempts, idempotency_key, created_at, sent_at,
       next_attempt_at, last_error, payload, locked_by
FROM outbox WHERE id = %(id)s;

-- name: console_outbox_attempts_of_message
-- A message's delivery tries, oldest first.
SELECT outbox_id, attempt, relay, started_at, finished_at, outcome, http_status, smtp_reply,
       error
FROM outbox_attempts WHERE outbox_id = %(id)s
ORDER BY started_at, id
LIMIT 500;

-- name: console_action_record
-- Records one console action that changed state.
INSERT INTO inbox_console_actions (action, target, affected, remote_addr)
VALUES (%(action)s, %(target)s, %(affected)s, %(remote_addr)s);

-- name: console_actions_recent
-- The newest console actions.
SELECT at, action, target, affected, remote_addr
FROM inbox_console_actions ORDER BY id DESC LIMIT %(limit)s;

-- name: console_minute_now
-- The database's current minute: the chart's last bar.
SELECT date_trunc('minute', now());
