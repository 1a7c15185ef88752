-- The operator console (inbox/console/): what it changed, and what lets its pages stay
-- fast with millions of rows.

-- Every console action that changes state, one row per action (a bulk replay of 5,000
-- events is one row with affected = 5000). A contract: operators audit it with psql.
--   action:      replay_event | replay_events | replay_message | replay_messages
--   target:      the event's or message's id, or the filter of a bulk action (its URL query)
--   affected:    rows changed
--   remote_addr: the operator's address as the web process saw it
CREATE TABLE inbox_console_actions (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    action      text        NOT NULL,
    target      text        NOT NULL,
    affected    bigint      NOT NULL DEFAULT 0,
    remote_addr text
);

-- The events list filtered by type, newest first: without it a rare type is found by
-- reading the inbox backwards from its newest row, up to the whole table. One more btree
-- entry per stored event (docs/decisions.md, "Console: the events list's indexes").
CREATE INDEX inbox_event_type_idx ON inbox (event_type, id);

-- The outbox page's dead messages by topic, and "replay all dead of a topic": dead
-- messages are few next to the sent ones, so this index is small (like inbox_failures_idx).
CREATE INDEX outbox_dead_idx ON outbox (id) WHERE status = 'dead';

-- An event's page shows the object version it applied (tx.apply_if_newer).
CREATE INDEX inbox_object_versions_inbox_id_idx ON inbox_object_versions (inbox_id);
