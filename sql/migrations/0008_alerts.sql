-- Alerts are outbox messages (topics inbox.alert.<kind>), routed by INBOX_ROUTES like any
-- other. This table coalesces them: occurrences of a kind are *held* here and become one
-- message at most every INBOX_ALERT_INTERVAL_SECONDS, whose `count` covers everything held
-- since the previous one. A storm of 10,000 dead events is a few messages, not 10,000.
--
-- An occurrence is held in the transaction that causes it (the outcome that makes an event
-- dead), and taken into a message in that same transaction when the interval has passed;
-- otherwise the next process to look (every worker, relay and web process looks once per
-- poll interval, inbox/alerts/) takes it when the interval ends.
CREATE TABLE inbox_alerts (
    -- event_dead | message_dead | backlog | signature_failures
    kind         text        PRIMARY KEY,
    held_count   bigint      NOT NULL DEFAULT 0,   -- occurrences not yet in a message
    held_ids     text[]      NOT NULL DEFAULT '{}', -- a few of their ids, oldest first
    held_detail  jsonb       NOT NULL DEFAULT '{}', -- what the kind's text needs
    held_since   timestamptz,                       -- the first held occurrence
    last_sent_at timestamptz,                       -- the last message queued
    sent_count   bigint      NOT NULL DEFAULT 0     -- messages queued so far
);
INSERT INTO inbox_alerts (kind)
VALUES ('event_dead'), ('message_dead'), ('backlog'), ('signature_failures');
