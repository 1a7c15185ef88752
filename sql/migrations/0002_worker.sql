-- The worker's additions: poison isolation, object versions for out-of-order events, and
-- the record of the handler modules' own migrations.

-- How many attempts at this event died with their worker (SIGKILL, OOM, os._exit, a
-- watchdog kill), counted by the crash rescue. An event that crashed before is claimed
-- alone, one per transaction, so a poison event cannot take its batch-mates down with it
-- again. Kept across `inbox replay` (like inbox_attempts) as part of the event's history.
ALTER TABLE inbox ADD COLUMN crashes integer NOT NULL DEFAULT 0;

-- The newest version of each business object a handler has applied (tx.apply_if_newer):
-- providers do not keep order, so a handler applies an event only if no newer event of the
-- same object was applied before. `last_created` is the provider's own clock (Stripe's
-- event `created`, in seconds). Rows are written in the handler's transaction, so a rolled
-- back handler leaves no trace here.
CREATE TABLE inbox_object_versions (
    object_key   text        PRIMARY KEY,
    last_created numeric     NOT NULL,
    inbox_id     bigint,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Migrations of the handler modules (INBOX_HANDLERS): `<package>/migrations/NNNN_*.sql`,
-- applied by `inbox migrate` after the product's own, under the same advisory lock.
CREATE TABLE inbox_app_migrations (
    module     text        NOT NULL,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (module, name)
);
