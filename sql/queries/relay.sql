-- name: outbox_claim
-- Take up to `limit` due messages as a lease, in one autocommit statement: the attempt is
-- counted now, before any network call, and the row is marked as held by this relay
-- (locked_by) and by its connection (locked_backend: if that backend disappears, the relay
-- died and outbox_rescue takes the row back). next_attempt_at = 'infinity' takes the row
-- out of the due index while it is held. No transaction stays open during delivery.
-- Topics in skip_topics go to a destination that is busy right now; leaving them lets
-- the claim take messages for every other destination (no head-of-line blocking).
-- Never prepared (relay.store.claim): a generic plan made while the outbox was small would
-- join by a sequential scan long after it has grown (see inbox_claim; the worker forgets its
-- plans once per poll interval instead, docs/decisions.md).
WITH due AS (
    SELECT id
    FROM outbox
    WHERE status = 'pending'
      AND next_attempt_at <= now()
      AND topic <> ALL (%(skip_topics)b::text[])
    ORDER BY next_attempt_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE outbox
SET attempts = outbox.attempts + 1,
    locked_by = %(locked_by)s,
    locked_backend = pg_backend_pid(),
    locked_at = now(),
    next_attempt_at = 'infinity'
FROM due
WHERE outbox.id = due.id
RETURNING outbox.id, outbox.topic, outbox.payload::text AS payload_json,
          outbox.idempotency_key, outbox.attempts;

-- name: outbox_record_outcomes
-- The outcomes of a batch of deliveries, in one statement: 'sent', 'dead', or 'pending' again
-- with its next attempt `delays` seconds from now. Only rows this relay still holds are
-- changed; a 'sent' is also kept for a row the crash rescue took back meanwhile (it was
-- delivered: better recorded than sent again).
-- The same statement writes each changed row's outbox_attempts row (outcome 'retry' for
-- 'pending'), with the delivery's start and end as the delivery thread saw them, the
-- destination (the route's scheme://host:port, never its URL) and its answer, so the
-- history and the status commit together. A row left alone (a lease that changed hands)
-- gets no history row: its new holder writes that.
WITH r AS (
    SELECT *
    FROM unnest(%(ids)b::bigint[], %(statuses)b::text[], %(errors)b::text[],
                %(delays)b::float8[], %(started_ats)b::timestamptz[],
                %(finished_ats)b::timestamptz[], %(http_statuses)b::integer[],
                %(smtp_replies)b::text[], %(destinations)b::text[])
         AS r (id, status, error, delay_seconds, started_at, finished_at, http_status,
               smtp_reply, destination)
), changed AS (
    UPDATE outbox
    SET status = r.status,
        sent_at = CASE WHEN r.status = 'sent' THEN now() ELSE outbox.sent_at END,
        last_error = COALESCE(r.error, outbox.last_error),
        next_attempt_at = now() + make_interval(secs => r.delay_seconds),
        locked_by = NULL,
        locked_backend = NULL,
        locked_at = NULL
    FROM r
    WHERE outbox.id = r.id
      AND outbox.status = 'pending'
      AND (outbox.locked_by = %(locked_by)s OR (r.status = 'sent' AND outbox.locked_by IS NULL))
    RETURNING outbox.id, outbox.attempts
), recorded AS (
    INSERT INTO outbox_attempts (outbox_id, attempt, relay, started_at, finished_at, outcome,
                                 http_status, smtp_reply, error, destination)
    SELECT c.id, c.attempts, %(locked_by)s, coalesce(r.started_at, statement_timestamp()),
           coalesce(r.finished_at, statement_timestamp()),
           CASE r.status WHEN 'pending' THEN 'retry' ELSE r.status END,
           r.http_status, r.smtp_reply, r.error, r.destination
    FROM changed c JOIN r USING (id)
)
SELECT id FROM changed;

-- name: outbox_release
-- Hand back messages claimed but never started (a relay shutting down): the attempt is
-- uncounted and the message is due at once for the next relay.
UPDATE outbox
SET attempts = greatest(attempts - 1, 0),
    next_attempt_at = now(),
    locked_by = NULL,
    locked_backend = NULL,
    locked_at = NULL
WHERE id = ANY (%(ids)b::bigint[])
  AND status = 'pending'
  AND locked_by = %(locked_by)s;

-- name: outbox_rescue
-- Run on every poll tick by every relay: take back the leases of relays that stopped.
-- - crashed: the lease's backend no longer exists (or its pid now belongs to a backend
--   started after the claim): the relay died (SIGKILL, OOM, lost connection) between claim
--   and outcome.
-- - hung: the backend is still there, but neither the claim nor a heartbeat of the relay
--   on that backend (inbox_processes, beaten from the relay's loop thread on every poll
--   tick) is younger than `takeover_seconds`: the relay stopped making progress (frozen,
--   deadlocked, stopped) with its connection open. Never this relay's own leases.
-- Either way the attempt was already counted by the claim, so the message is due again at
-- once, or dead when that was the last attempt; the outbox_attempts row says 'crashed'
-- with the reason in its error. The message may have reached its destination; the re-send
-- carries the same Idempotency-Key (at least once). A hung relay that wakes up sends no
-- message it no longer holds (it refuses to start a send on a lease older than its
-- self-stop: inbox/relay/lease.py) and its late outcomes are fenced by locked_by.
-- `gone` reads the lease (who held it, since when, on which backend) for the history row
-- and for the caller, which then ends a hung relay's backend (outbox_end_hung_relays); the
-- update is fenced on that lease's time, so a row leased again meanwhile is left alone.
-- The CTEs are MATERIALIZED: inlined, the planner joined the leases to themselves and read
-- pg_stat_activity once per pair (640 leases: 455 ms; materialized: 0.6 ms,
-- docs/decisions.md).
WITH backends AS MATERIALIZED (
    SELECT pid, backend_start FROM pg_stat_activity
), quiet AS MATERIALIZED (
    -- The backends with no relay heartbeat within the takeover, ours excepted.
    SELECT coalesce(array_agg(b.pid), '{}') AS pids
    FROM backends AS b
    WHERE b.pid <> pg_backend_pid()
      AND NOT EXISTS (
          SELECT 1 FROM inbox_processes AS p
          WHERE p.kind = 'relay' AND p.backend_pid = b.pid
            AND p.last_seen_at >= now() - make_interval(secs => %(takeover_seconds)s)
      )
), gone AS MATERIALIZED (
    SELECT o.id, o.locked_by, o.locked_at,
           CASE WHEN b.pid IS NOT NULL THEN o.locked_backend END AS hung
    FROM outbox AS o
    CROSS JOIN quiet
    LEFT JOIN backends AS b ON b.pid = o.locked_backend AND b.backend_start <= o.locked_at
    WHERE o.status = 'pending'
      AND o.next_attempt_at = 'infinity'  -- leased rows: the far end of outbox_due_idx
      AND o.locked_backend IS NOT NULL
      AND (b.pid IS NULL  -- crashed
           OR (o.locked_backend = ANY (quiet.pids)  -- hung
               AND o.locked_at < now() - make_interval(secs => %(takeover_seconds)s)))
), rescued AS (
    UPDATE outbox
    SET status = CASE WHEN attempts >= %(max_attempts)s THEN 'dead' ELSE 'pending' END,
        next_attempt_at = now(),
        last_error = CASE WHEN gone.hung IS NULL
            THEN 'relay stopped during attempt ' || attempts
                 || ' (crashed or lost its database connection)'
            ELSE 'relay ' || coalesce(gone.locked_by, '?')
                 || ' stopped making progress during attempt ' || attempts
                 || ' (not seen for over ' || %(takeover_seconds)s || ' s)'
            END,
        locked_by = NULL,
        locked_backend = NULL,
        locked_at = NULL
    FROM gone
    WHERE outbox.id = gone.id
      AND outbox.status = 'pending'
      AND outbox.next_attempt_at = 'infinity'
      AND outbox.locked_at = gone.locked_at
    RETURNING outbox.id, outbox.status, outbox.attempts, outbox.last_error, gone.locked_by,
              gone.locked_at, gone.hung
), recorded AS (
    INSERT INTO outbox_attempts (outbox_id, attempt, relay, started_at, finished_at, outcome,
                                 error)
    SELECT id, attempts, locked_by, locked_at, statement_timestamp(), 'crashed', last_error
    FROM rescued
)
SELECT id, status, hung, locked_at FROM rescued;

-- name: outbox_end_hung_relays
-- After outbox_rescue took a hung relay's leases: end its database connection, so the
-- connection slot is freed and the relay, should it wake up, meets a broken connection,
-- drops what it held in memory and starts afresh. Only the backend that held those leases
-- (started before them, still an inbox-relay connection), never one that took its pid
-- since. Needs the same role as the relay (or pg_signal_backend): the caller logs a
-- refusal and carries on, the leases being taken back already.
SELECT pg_terminate_backend(a.pid)
FROM unnest(%(pids)b::integer[], %(leased_since)b::timestamptz[]) AS h (pid, leased_since)
JOIN pg_stat_activity AS a ON a.pid = h.pid
WHERE a.backend_start <= h.leased_since
  AND a.application_name = 'inbox-relay'
  AND a.pid <> pg_backend_pid();

-- name: outbox_listen
-- Wake-ups: the worker notifies this channel after a batch that queued messages commits
-- (outbox_wake_relay; polling is the fallback).
LISTEN outbox_messages;
