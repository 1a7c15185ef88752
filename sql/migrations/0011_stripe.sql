-- Stripe beyond the webhook: events fetched from Stripe's Events API by `inbox reconcile
-- stripe` (and the workers' automatic reconciliation), and events of Connect accounts.

-- Where a stored event came from:
--   webhook: delivered to POST /webhooks/<provider> (every row before this migration)
--   api:     missing from the inbox when `inbox reconcile stripe` listed Stripe's events,
--            stored from the API's JSON of the event (raw_body is that JSON, signature NULL)
-- Either way the row is the event's one row: (provider, event_id) decides which copy came
-- first, and the other is a duplicate. The default is constant, so adding the column
-- rewrites no row (PostgreSQL 11+ keeps it in the catalog).
ALTER TABLE inbox
    ADD COLUMN source text NOT NULL DEFAULT 'webhook'
        CONSTRAINT inbox_source_check CHECK (source IN ('webhook', 'api')),
    -- The Stripe Connect account (acct_...) the event happened on: the event's `account`,
    -- present on events of connected accounts (the Connect endpoint's deliveries, or a
    -- reconcile of an account); NULL for the platform's own events and other providers.
    ADD COLUMN account text;

-- `inbox events list --account acct_...`: newest first within one account. Partial: most
-- rows have no account and cost the index nothing.
CREATE INDEX inbox_account_idx ON inbox (account, id) WHERE account IS NOT NULL;

-- Automatic reconciliation (INBOX_STRIPE_RECONCILE_SECONDS) and the last run of any kind:
-- one row per scope ('stripe', the platform account; 'stripe:acct_...' for a Connect
-- account). The watermark is the `created` (Unix seconds) up to which every event was seen:
-- the next automatic run lists from a little before it.
CREATE TABLE inbox_stripe_reconcile (
    scope          text        PRIMARY KEY,
    watermark      bigint,                     -- Stripe `created` seen up to (Unix seconds)
    last_run_at    timestamptz,                -- end of the last run that completed
    last_trigger   text,                       -- command | automatic
    last_since     timestamptz,                -- the start of the window it listed
    last_found     integer,                    -- events Stripe listed
    last_added     integer,                    -- events the inbox lacked, stored now
    last_error     text,                       -- the last failed run's error (cleared on success)
    last_error_at  timestamptz
);

-- The audit views gain the new columns, last (the views are a contract: only additions).
CREATE OR REPLACE VIEW inbox_failures AS
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
       i.payload -> 'data' -> 'object' ->> 'customer' AS customer,
       i.account,
       i.source
FROM inbox i
LEFT JOIN LATERAL (
    SELECT a.outcome, a.finished_at
    FROM inbox_attempts a
    WHERE a.inbox_id = i.id
    ORDER BY a.finished_at DESC, a.id DESC
    LIMIT 1
) last ON true
WHERE i.status = 'dead' OR (i.status = 'pending' AND i.attempts > 0 AND i.last_error IS NOT NULL);

-- event_timeline: the event's account and source on each of its rows (the received row
-- tells a webhook delivery from an event reconciled from the API). inbox_summary stays as
-- it is: a column there would be a new GROUP BY key, splitting its rows, which is a change
-- to what its rows mean, not an addition.
CREATE OR REPLACE VIEW event_timeline AS
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
       t.message_payload,
       i.account,
       i.source
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
