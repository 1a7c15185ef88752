-- Views for auditing from psql (docs/auditing.md shows them in use). Like the tables'
-- columns, the views' names and columns are a contract: they change only by adding.

-- A failing event: `dead`, or `pending` again after a failed attempt ("retrying"). An event
-- put back by `inbox replay` (attempts 0, last_error kept as history) is not retrying until
-- it fails again.
-- The partial index holds only failing events, so inbox_failures stays fast with millions
-- of processed rows in the table.
CREATE INDEX inbox_failures_idx ON inbox (id)
    WHERE status = 'dead' OR (status = 'pending' AND attempts > 0 AND last_error IS NOT NULL);

-- Counts and oldest age by provider, type and status. For `pending` the oldest age is the
-- backlog age. (Reads the whole inbox: fine for psql, not for a dashboard polled every second.)
CREATE VIEW inbox_summary AS
SELECT provider,
       event_type,
       status,
       count(*)                  AS events,
       min(received_at)          AS oldest_received_at,
       now() - min(received_at)  AS oldest_age,
       max(received_at)          AS newest_received_at
FROM inbox
GROUP BY provider, event_type, status;

-- Dead and retrying events with their last error, attempt count and last attempt.
--   state:           dead | retrying
--   attempts:        attempts used of the current budget (INBOX_MAX_ATTEMPTS)
--   next_attempt_at: when a retrying event is due (NULL while a worker holds it, and for dead)
--   customer:        the Stripe customer of the event's object, when it has one
CREATE VIEW inbox_failures AS
SELECT i.id                                         AS inbox_id,
       i.provider,
       i.event_id,
       i.event_type,
       CASE WHEN i.status = 'dead' THEN 'dead' ELSE 'retrying' END AS state,
       i.attempts,
       i.last_error,
       last.outcome                                 AS last_outcome,
       last.finished_at                             AS last_attempt_at,
       CASE WHEN i.status = 'pending' AND i.locked_backend IS NULL
            THEN i.next_attempt_at END              AS next_attempt_at,
       i.received_at,
       i.payload -> 'data' -> 'object' ->> 'customer' AS customer
FROM inbox i
LEFT JOIN LATERAL (
    SELECT a.outcome, a.finished_at
    FROM inbox_attempts a
    WHERE a.inbox_id = i.id
    ORDER BY a.finished_at DESC, a.id DESC
    LIMIT 1
) last ON true
WHERE i.status = 'dead' OR (i.status = 'pending' AND i.attempts > 0 AND i.last_error IS NOT NULL);

-- An event's story, one row per item, in order (`step`): when it was received, each
-- attempt, and each outbox message it caused.
--   item:        received | attempt | message
--   at:          received_at; the attempt's start; for a message, when the attempt that
--                wrote it committed (its own created_at is the start of that transaction)
--   outcome:     the attempt's outcome (processed, ignored, retry, dead, crashed) or the
--                message's status (pending, sent, dead); for `received`, the event's status now
--   finished_at: the attempt's end, or when the message was sent
--   error:       the attempt's error, or the message's last error
-- Filter on provider and event_id (the unique index) or on inbox_id. Rows come out in
-- (inbox_id, step) order; say ORDER BY step when it matters.
CREATE VIEW event_timeline AS
SELECT i.id AS inbox_id,
       i.provider,
       i.event_id,
       i.event_type,
       t.step,
       t.item,
       t.at,
       t.outcome,
       t.attempt,
       t.worker,
       t.finished_at,
       t.error,
       t.outbox_id,
       t.topic,
       t.idempotency_key,
       t.message_payload
FROM inbox i
CROSS JOIN LATERAL (
    SELECT row_number() OVER (ORDER BY u.at, u.seq, u.item_id) AS step, u.*
    FROM (
        SELECT 0 AS seq, i.id AS item_id, 'received'::text AS item, i.received_at AS at,
               i.status AS outcome, NULL::integer AS attempt, NULL::text AS worker,
               NULL::timestamptz AS finished_at, NULL::text AS error,
               NULL::bigint AS outbox_id, NULL::text AS topic,
               NULL::text AS idempotency_key, NULL::jsonb AS message_payload
        UNION ALL
        SELECT 1, a.id, 'attempt', a.started_at, a.outcome, a.attempt, a.worker,
               a.finished_at, a.error, NULL, NULL, NULL, NULL
        FROM inbox_attempts a
        WHERE a.inbox_id = i.id
        UNION ALL
        SELECT 2, o.id, 'message',
               coalesce((SELECT min(a.finished_at) FROM inbox_attempts a
                         WHERE a.inbox_id = i.id AND a.finished_at >= o.created_at),
                        o.created_at),
               o.status, NULL, NULL, o.sent_at, o.last_error, o.id, o.topic,
               o.idempotency_key, o.payload
        FROM outbox o
        WHERE o.inbox_id = i.id
    ) u
) t
ORDER BY i.id, t.step;

-- Time ranges over the attempts history (`inbox status`'s last hour, the yesterday queries
-- of docs/auditing.md). Rows are only ever appended, in finished_at order, so a BRIN index
-- is tiny, nearly free to maintain, and narrows a "last hour" scan to the last pages.
CREATE INDEX inbox_attempts_finished_at_brin ON inbox_attempts USING brin (finished_at);
