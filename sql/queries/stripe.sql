-- Queries of Stripe's reconciliation (inbox/stripe/): `inbox reconcile stripe` and the
-- workers' automatic runs. The events themselves are stored by the receiver's own
-- inbox_insert (sql/queries/receiver.sql), with source 'api'.

-- name: stripe_events_stored
-- Which of these Stripe event ids the inbox has (`--dry-run`: the others would be added).
-- The unique index (provider, event_id) answers each.
SELECT event_id FROM inbox WHERE provider = 'stripe' AND event_id = ANY(%(event_ids)s::text[]);

-- name: stripe_reconcile_try_lock
-- One automatic reconciliation at a time across every worker: a session advisory lock,
-- released by stripe_reconcile_unlock (or by the connection's end, should the worker die).
-- The key is the int4 hash of a name no other lock of the product uses.
SELECT pg_try_advisory_lock(hashtext('inbox.stripe.reconcile'));

-- name: stripe_reconcile_unlock
SELECT pg_advisory_unlock(hashtext('inbox.stripe.reconcile'));

-- name: stripe_reconcile_state
-- The scope's watermark, and whether an automatic run is due (none completed within
-- `interval_seconds`, on the database's clock, so every worker agrees); now() as Unix
-- seconds, which the run records as its watermark.
SELECT r.watermark,
       r.last_run_at IS NULL
           OR r.last_run_at <= now() - make_interval(secs => %(interval_seconds)s) AS due,
       floor(extract(epoch FROM now()))::bigint AS now_unix
FROM (SELECT 1) one
LEFT JOIN inbox_stripe_reconcile r ON r.scope = %(scope)s;

-- name: stripe_reconcile_record
-- A completed run (automatic or `inbox reconcile stripe`, not --dry-run). The watermark
-- moves forward only when the run listed from at or before it (its window joins the one
-- already covered); a run with no watermark to give (a command run) leaves it alone.
INSERT INTO inbox_stripe_reconcile AS r
    (scope, watermark, last_run_at, last_trigger, last_since, last_found, last_added,
     last_error, last_error_at)
VALUES (%(scope)s, %(watermark)s::bigint, now(), %(trigger)s, to_timestamp(%(since_unix)s),
        %(found)s, %(added)s, NULL, NULL)
ON CONFLICT (scope) DO UPDATE
SET watermark = CASE
        WHEN %(watermark)s::bigint IS NULL THEN r.watermark
        WHEN r.watermark IS NULL OR %(since_unix)s::bigint <= r.watermark
            THEN greatest(r.watermark, %(watermark)s::bigint)
        ELSE r.watermark END,
    last_run_at = now(),
    last_trigger = excluded.last_trigger,
    last_since = excluded.last_since,
    last_found = excluded.last_found,
    last_added = excluded.last_added,
    last_error = NULL,
    last_error_at = NULL;

-- name: stripe_reconcile_failed
-- A run that failed (Stripe's API down, the key refused): kept for `inbox status`; the
-- watermark and the last completed run stay, so the next run lists the same window again.
-- An automatic run that failed counts as a run for the interval (last_run_at), so a
-- refused key is not asked again on every poll tick.
INSERT INTO inbox_stripe_reconcile AS r (scope, last_run_at, last_trigger, last_error,
                                         last_error_at)
VALUES (%(scope)s, CASE WHEN %(trigger)s = 'automatic' THEN now() END, %(trigger)s,
        %(error)s, now())
ON CONFLICT (scope) DO UPDATE
SET last_error = excluded.last_error,
    last_error_at = excluded.last_error_at,
    last_run_at = CASE WHEN %(trigger)s = 'automatic' THEN now() ELSE r.last_run_at END;

-- name: stripe_reconcile_runs
-- Every scope's last run, for `inbox status`, /metrics and the console's overview.
SELECT scope, watermark, last_run_at, last_trigger, last_since, last_found, last_added,
       last_error, last_error_at
FROM inbox_stripe_reconcile
ORDER BY scope;
