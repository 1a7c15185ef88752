-- Every delivery try of an outbox message, for auditing, as inbox_attempts is for events:
-- which relay sent it, when, how it ended and what the other side answered. Written by the
-- relay's outcome statement (outbox_record_outcomes) and by its crash rescue
-- (outbox_rescue), in the same statement as the message's new status, so the history and
-- the status never disagree. `last_error` on outbox keeps only the latest failure.
-- Pruned with its message (ON DELETE CASCADE: `inbox prune` deletes messages, not attempts).
CREATE TABLE outbox_attempts (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    outbox_id   bigint      NOT NULL REFERENCES outbox (id) ON DELETE CASCADE,
    attempt     integer     NOT NULL,
    relay       text,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL DEFAULT now(),
    -- sent | retry | dead | crashed (the relay stopped during the attempt)
    outcome     text        NOT NULL,
    -- The destination's answer: the HTTP status of an http(s) route, the SMTP reply (code
    -- and text) of an smtp(s) route; NULL when there was none (a timeout, a refused
    -- connection, a log: route, a topic without a route, a crash).
    http_status integer,
    smtp_reply  text,
    error       text
);
CREATE INDEX outbox_attempts_outbox_id_idx ON outbox_attempts (outbox_id);
-- `inbox status`-style questions over time ("what failed in the last hour?") read the end.
CREATE INDEX outbox_attempts_finished_at_brin ON outbox_attempts USING brin (finished_at);
