-- name: inbox_insert
-- Store a verified event exactly once. No row back means (provider, event_id) was already
-- there: a duplicate is a result, not an error. The NOTIFY is part of the same single-statement
-- transaction, so workers are woken only for committed events.
WITH inserted AS (
    INSERT INTO inbox (provider, event_id, event_type, payload, raw_body, signature)
    VALUES (%(provider)s, %(event_id)s, %(event_type)s, %(payload)s::jsonb, %(raw_body)s,
            %(signature)s)
    ON CONFLICT (provider, event_id) DO NOTHING
    RETURNING id
)
SELECT id, pg_notify('inbox_events', '') FROM inserted;

-- name: readiness
-- The receiver is ready when the database answers and the inbox table exists (migrated).
SELECT to_regclass('inbox') IS NOT NULL AS migrated;
