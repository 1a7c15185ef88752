-- The inbox (events received from providers) and the outbox (messages to deliver).
-- Column names are a contract: operators query them with psql and outside tools rely on them.

CREATE TABLE inbox (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider        text        NOT NULL,
    event_id        text        NOT NULL,
    event_type      text        NOT NULL,
    payload         jsonb       NOT NULL,
    -- The exact bytes received and the signature header that came with them, so the
    -- signature can be checked again later (jsonb normalises whitespace and key order).
    raw_body        bytea       NOT NULL,
    signature       text,
    -- pending:   stored, waiting for a worker (or for its next retry at next_attempt_at).
    --            The receiver puts events here; `inbox replay` puts them back here.
    -- processed: the handler ran and committed. Final.
    -- ignored:   no handler was registered for (provider, event_type). Final until replayed.
    -- dead:      the handler failed INBOX_MAX_ATTEMPTS times or raised Permanent. Final
    --            until replayed.
    status          text        NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'processed', 'ignored', 'dead')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    received_at     timestamptz NOT NULL DEFAULT now(),
    processed_at    timestamptz,
    -- While a worker holds an event (between its claim and its outcome), the backend pid of
    -- the worker's connection: if that backend is gone, the worker died mid-attempt.
    locked_by       text,
    locked_backend  integer,
    locked_at       timestamptz,
    CONSTRAINT inbox_provider_event_id_key UNIQUE (provider, event_id)
);

-- Only due rows: the claim's WHERE and ORDER BY exactly, so it stays fast when millions of
-- processed rows sit in the table.
CREATE INDEX inbox_due_idx ON inbox (next_attempt_at, id) WHERE status = 'pending';
-- Events held by a worker right now (a handful): where the crash rescue looks.
CREATE INDEX inbox_locked_idx ON inbox (locked_backend) WHERE locked_backend IS NOT NULL;

-- Every attempt at an event, for auditing: who ran it, when, and how it ended.
CREATE TABLE inbox_attempts (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    inbox_id    bigint      NOT NULL REFERENCES inbox (id) ON DELETE CASCADE,
    attempt     integer     NOT NULL,
    worker      text,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL DEFAULT now(),
    -- processed | ignored | retry | dead | crashed
    outcome     text        NOT NULL,
    error       text
);
CREATE INDEX inbox_attempts_inbox_id_idx ON inbox_attempts (inbox_id);

CREATE TABLE outbox (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    inbox_id        bigint      REFERENCES inbox (id) ON DELETE SET NULL,
    topic           text        NOT NULL,
    payload         jsonb       NOT NULL,
    idempotency_key text        NOT NULL,
    -- pending: waiting for the relay (or for its next retry at next_attempt_at).
    --          Handlers put messages here through tx.outbox(...).
    -- sent:    the route accepted it (2xx, SMTP accepted, logged). Final.
    -- dead:    rejected for good (4xx, unrouted topic) or out of attempts. Final until
    --          replayed.
    status          text        NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'sent', 'dead')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    locked_by       text,
    locked_backend  integer,
    locked_at       timestamptz,
    CONSTRAINT outbox_idempotency_key_key UNIQUE (idempotency_key)
);

CREATE INDEX outbox_due_idx ON outbox (next_attempt_at, id) WHERE status = 'pending';
CREATE INDEX outbox_locked_idx ON outbox (locked_backend) WHERE locked_backend IS NOT NULL;
CREATE INDEX outbox_inbox_id_idx ON outbox (inbox_id);
