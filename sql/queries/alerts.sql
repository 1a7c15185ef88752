-- Alerts: holding occurrences and taking them into outbox messages (0008_alerts.sql,
-- inbox/alerts/).

-- name: alert_hold
-- Add occurrences to a kind's held ones, in the caller's transaction (it locks the kind's
-- row until the caller commits). A kind with a window (signature failures: "more than N in
-- 5 minutes") first forgets what it held if that began longer than the window ago and
-- never reached the threshold: sparse failures over a day are not a storm.
UPDATE inbox_alerts
SET held_count = CASE WHEN %(window_seconds)s::float8 IS NOT NULL
                        AND held_since < now() - make_interval(secs => %(window_seconds)s::float8)
                        AND held_count <= %(threshold)s::bigint
                      THEN 0 ELSE held_count END + %(count)s::bigint,
    held_ids = (CASE WHEN %(window_seconds)s::float8 IS NOT NULL
                       AND held_since < now() - make_interval(secs => %(window_seconds)s::float8)
                       AND held_count <= %(threshold)s::bigint
                     THEN '{}' ELSE held_ids END || %(ids)s::text[])[1:%(max_ids)s],
    held_detail = held_detail || %(detail)s::jsonb,
    held_since = CASE WHEN held_since IS NULL
                        OR (%(window_seconds)s::float8 IS NOT NULL
                            AND held_since < now() - make_interval(secs => %(window_seconds)s::float8)
                            AND held_count <= %(threshold)s::bigint)
                      THEN now() ELSE held_since END
WHERE kind = %(kind)s;

-- name: alert_set
-- Replace what a kind holds (a state, not a sum of events: the backlog as it is now).
UPDATE inbox_alerts
SET held_count = %(count)s::bigint, held_ids = (%(ids)s::text[])[1:%(max_ids)s],
    held_detail = %(detail)s::jsonb, held_since = coalesce(held_since, now())
WHERE kind = %(kind)s;

-- name: alert_take_due
-- Take the held occurrences of the given kinds whose interval has passed since their last
-- message and that reached their threshold (`thresholds`, parallel to `kinds`): they are
-- reset and the message counted, in one statement; the values taken come back, one row
-- per kind taken (none when nothing is due). SKIP LOCKED: a kind another transaction is
-- holding or taking right now is left to it.
WITH due AS (
    SELECT a.kind, a.held_count, a.held_ids, a.held_detail, a.held_since, a.sent_count
    FROM inbox_alerts a
    JOIN unnest(%(kinds)s::text[], %(thresholds)s::bigint[]) AS t(kind, threshold)
      ON t.kind = a.kind
    WHERE a.held_count > t.threshold
      AND (a.last_sent_at IS NULL
           OR a.last_sent_at <= now() - make_interval(secs => %(interval_seconds)s::float8))
    FOR UPDATE OF a SKIP LOCKED
)
UPDATE inbox_alerts a
SET held_count = 0, held_ids = '{}', held_detail = '{}', held_since = NULL,
    last_sent_at = now(), sent_count = a.sent_count + 1
FROM due
WHERE a.kind = due.kind
RETURNING due.kind, due.held_count, due.held_ids, due.held_detail, due.held_since,
          due.sent_count + 1 AS message_number;

-- name: alert_enqueue
-- The alert's message, in the same transaction as its take. The key names the kind and
-- the message's number, so it is unique and stable.
INSERT INTO outbox (topic, payload, idempotency_key)
VALUES ('inbox.alert.' || %(kind)s, %(payload)s::jsonb,
        'inbox.alert.' || %(kind)s || ':' || %(message_number)s::bigint)
ON CONFLICT (idempotency_key) DO NOTHING;

-- name: alert_backlog
-- The inbox's backlog for the backlog alert: how long the oldest due event has waited,
-- how many are due (counted up to 10,000: the text says "at least"), and the oldest ids.
SELECT coalesce(extract(epoch FROM now() - min(next_attempt_at)), 0)::float8 AS oldest_seconds,
       count(*) AS due,
       (array_agg(event_id ORDER BY next_attempt_at, id))[1:5] AS ids
FROM (SELECT id, event_id, next_attempt_at FROM inbox
      WHERE status = 'pending' AND next_attempt_at <= now()
      ORDER BY next_attempt_at, id LIMIT 10000) due;

-- name: alert_watch_lock
-- One process at a time looks at the alerts (a transaction-level advisory lock: the
-- others skip their turn rather than wait).
SELECT pg_try_advisory_xact_lock(hashtext('inbox.alerts')::bigint);

-- name: alert_hold_dead_events
-- The events of `inbox_ids` that are dead now (the caller's transaction just made them
-- so), held for the event_dead alert: their count and a few of their event ids.
UPDATE inbox_alerts a
SET held_count = a.held_count + d.n,
    held_ids = (a.held_ids || d.ids)[1:%(max_ids)s],
    held_since = coalesce(a.held_since, now())
FROM (SELECT count(*) AS n, array_agg(event_id ORDER BY id) AS ids
      FROM inbox WHERE id = ANY(%(inbox_ids)s::bigint[]) AND status = 'dead') d
WHERE a.kind = 'event_dead' AND d.n > 0;

-- name: alert_hold_dead_messages
-- The messages of `outbox_ids` that are dead now, held for the message_dead alert; never
-- an alert message itself (its death raising another alert would loop).
UPDATE inbox_alerts a
SET held_count = a.held_count + d.n,
    held_ids = (a.held_ids || d.ids)[1:%(max_ids)s],
    held_since = coalesce(a.held_since, now())
FROM (SELECT count(*) AS n, array_agg(id::text ORDER BY id) AS ids
      FROM outbox WHERE id = ANY(%(outbox_ids)s::bigint[]) AND status = 'dead'
        AND topic NOT LIKE 'inbox.alert.%%') d
WHERE a.kind = 'message_dead' AND d.n > 0;
