-- name: migrations_lock
-- One migrator at a time: a second `inbox migrate` waits here, then finds nothing to do.
-- (The key is an arbitrary constant: hashtext('webhook-inbox migrations').)
SELECT pg_advisory_lock(hashtext('webhook-inbox migrations'));

-- name: migrations_unlock
SELECT pg_advisory_unlock(hashtext('webhook-inbox migrations'));

-- name: migrations_create_table
CREATE TABLE IF NOT EXISTS inbox_migrations (
    version    integer PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: migrations_applied
SELECT version FROM inbox_migrations ORDER BY version;

-- name: migrations_record
INSERT INTO inbox_migrations (version, name) VALUES (%(version)s, %(name)s);

-- name: migrations_table_exists
SELECT to_regclass('inbox_migrations') IS NOT NULL;
