-- name: inbox_listen
-- The worker's wake-up channel: the receiver notifies it after new events commit.
LISTEN inbox_events;

-- name: inbox_claim
-- Lease up to `batch` due events to this worker, in one autocommit statement. The attempt
-- is counted here, durably, before any handler runs: a worker that dies mid-handler has still
-- used an attempt, so a poison event ends `dead` instead of crash-looping.
-- `next_attempt_at = 'infinity'` takes a leased row out of the claim's reach while it stays
-- `pending`; `locked_backend` lets the crash rescue see that its holder died.
-- Events that crashed a worker before (crashes > 0) are suspects: at most one per claim,
-- processed alone; a claim that took one is followed by another at once
-- (Worker.more_may_be_due). The rows `due` locked but `picked` left out are unlocked at
-- once, untouched.
-- inbox_due_idx (next_attempt_at, id) WHERE status = 'pending' matches WHERE and ORDER BY.
-- `scan_from` is where the index scan starts: every claimed event leaves a dead entry at
-- the front of the index until VACUUM, and a scan from the very start walks them all. The
-- worker passes a point just before its previous claim (and '-infinity' once per poll
-- interval, for anything older); `due_at` (the claimed rows' old next_attempt_at) is what
-- it needs to know where that is.
-- The worker drops its prepared statements once per poll interval (Worker._poll_tick): a
-- generic plan made while the inbox was a few pages joins the claimed rows to `inbox` by a
-- sequential scan, and the claim then slowed with every event, 7 ms after 16,000 (latency
-- p50 6 -> 16 ms in 40 s; docs/decisions.md).
WITH due AS (
    SELECT id, next_attempt_at AS due_at, crashes > 0 AS suspect
    FROM inbox
    WHERE status = 'pending'
      AND next_attempt_at >= %(scan_from)s
      AND next_attempt_at <= now()
    ORDER BY next_attempt_at, id
    LIMIT %(batch)s
    FOR UPDATE SKIP LOCKED
), picked AS (
    SELECT id, due_at FROM due WHERE NOT suspect
    UNION ALL
    (SELECT id, due_at FROM due WHERE suspect ORDER BY id LIMIT 1)
)
UPDATE inbox
SET attempts = inbox.attempts + 1,
    locked_by = %(worker)s,
    locked_backend = pg_backend_pid(),
    locked_at = now(),
    next_attempt_at = 'infinity'
FROM picked
WHERE inbox.id = picked.id
RETURNING inbox.id, inbox.provider, inbox.event_id, inbox.event_type,
          inbox.attempts, inbox.crashes, inbox.locked_backend, inbox.locked_at, picked.due_at,
          inbox.account;

-- name: inbox_payloads
-- The payloads of a batch's events, read when a handler first reads `event.payload`
-- (BatchPayloads in inbox/worker/loop.py), not by the claim: turning a 3 KB jsonb into text was
-- ~40 us of PostgreSQL per event, more than half of the claim, and many events never need
-- it (those without a handler, handlers that fetch the object from the provider's API).
SELECT id, payload::text FROM inbox WHERE id = ANY (%(ids)b::bigint[]);

-- name: inbox_durable_commit
-- The batch's transaction carries the handlers' writes: its commit waits for the WAL flush
-- (the session commits asynchronously, inbox_worker_session). Sent with the outcomes, in
-- the same round trip: synchronous_commit only matters at COMMIT.
SELECT set_config('synchronous_commit', 'on', true);

-- name: inbox_handler_savepoint
SAVEPOINT inbox_handler;

-- name: inbox_handler_savepoint_release
RELEASE SAVEPOINT inbox_handler;

-- name: inbox_handler_savepoint_rollback
-- Undo only this handler's writes; the batch's transaction carries on.
ROLLBACK TO SAVEPOINT inbox_handler; RELEASE SAVEPOINT inbox_handler;

-- name: inbox_finish
-- Record the outcome of leased events, all of a batch in one statement, inside the batch's
-- transaction (so with the handlers' writes): the status change, the attempts history and the
-- end of the lease. Fenced on the lease (backend and time): a row whose lease has changed
-- hands is left alone. Outcomes:
--   processed / ignored: final, processed_at set.
--   retry: back to `pending`, due after delay_seconds.   dead: final until replayed.
--   crashed: the worker died during the attempt (written by the crash rescue), status
--            `pending` (retry; delay 0 after a batch crash) or `dead`; counts in `crashes`.
--   released: never started (shutdown): back to `pending` now, the attempt given back,
--            no history row.
-- Returns the number of rows finished.
-- The outcomes find their rows by id: `NOT isfinite(next_attempt_at)` (a leased row) is
-- written so that it cannot be an index condition. As `= 'infinity'` the planner used it on
-- inbox_due_idx and walked every worker's leases and their dead entries for each batch
-- (90 us per event at batch 32, 170 us at batch 100; 35 us by id). A generic plan made on
-- a small table would keep a sequential scan: see Worker._poll_tick.
-- Arrays travel in binary (placeholders ending in b): psycopg writes a text array in Python, one regex per
-- element, ~60 us for 32 strings and ~130 us for 32 timestamps, against ~8 us in binary;
-- that was a third of the worker's CPU per event.
WITH outcome AS (
    SELECT *
    FROM unnest(%(ids)b::bigint[], %(backends)b::integer[], %(locked_ats)b::timestamptz[],
                %(statuses)b::text[], %(outcomes)b::text[], %(delays)b::float8[],
                %(errors)b::text[], %(started_ats)b::timestamptz[], %(workers)b::text[])
         AS o(id, backend, locked_at, status, outcome, delay_seconds, error, started_at, worker)
), finished AS (
    UPDATE inbox
    SET status = o.status,
        attempts = inbox.attempts - (o.outcome = 'released')::integer,
        next_attempt_at = statement_timestamp()
                          + make_interval(secs => coalesce(o.delay_seconds, 0)),
        last_error = coalesce(o.error, inbox.last_error),
        processed_at = CASE WHEN o.status IN ('processed', 'ignored')
                            THEN statement_timestamp() ELSE inbox.processed_at END,
        crashes = inbox.crashes + (o.outcome = 'crashed')::integer,
        locked_by = NULL,
        locked_backend = NULL,
        locked_at = NULL
    FROM outcome o
    WHERE inbox.id = o.id
      AND inbox.status = 'pending'
      AND NOT isfinite(inbox.next_attempt_at)
      AND inbox.locked_backend = o.backend
      AND inbox.locked_at = o.locked_at
    RETURNING inbox.id, inbox.attempts
), recorded AS (
    INSERT INTO inbox_attempts (inbox_id, attempt, worker, started_at, finished_at, outcome,
                                error)
    SELECT f.id, f.attempts, o.worker, coalesce(o.started_at, statement_timestamp()),
           statement_timestamp(), o.outcome, o.error
    FROM finished f JOIN outcome o USING (id)
    WHERE o.outcome <> 'released'
)
SELECT count(*) FROM finished;

-- name: inbox_dead_leases
-- Leases whose worker is gone: the backend that claimed them is no longer connected, or its
-- pid now belongs to a backend started after the claim. (backend_start is NULL for another
-- role's sessions without pg_read_all_stats: such a lease counts as alive.) Cheap: leased
-- rows are the 'infinity' end of inbox_due_idx (see migration 0005). A plain
-- SELECT, not FOR UPDATE: every lease it sees was committed, so its backend had started,
-- before pg_stat_activity was read (a FOR UPDATE re-check could see a newer lease than that
-- snapshot). inbox_finish then fences on the lease itself, so two rescuers racing finish each
-- lease once.
-- `held` is how many leases the dead backend held with this one (its claim's rows, by
-- backend and lease time, not yet finished): 1 means the event was alone in the worker's
-- hands when it died, strong evidence against it; more means a batch crash, where any one
-- of them may be to blame (Worker._crash_outcome; docs/decisions.md, "Poison isolation").
-- The window is computed before the LIMIT, so a batch cut by it still counts whole.
SELECT id, attempts, locked_by, locked_backend, locked_at,
       count(*) OVER (PARTITION BY locked_backend, locked_at) AS held
FROM inbox
WHERE status = 'pending'
  AND next_attempt_at = 'infinity'
  AND locked_backend IS NOT NULL
  AND NOT EXISTS (
      SELECT 1 FROM pg_stat_activity a
      WHERE a.pid = inbox.locked_backend
        AND (a.backend_start IS NULL OR a.backend_start <= inbox.locked_at)
  )
ORDER BY id
LIMIT %(limit)s;

-- name: inbox_release
-- Give back this connection's leases without charging an attempt: used when a worker exits
-- at once (second SIGTERM, SIGINT) after its open transaction rolled back.
UPDATE inbox
SET attempts = greatest(attempts - 1, 0),
    next_attempt_at = now(),
    locked_by = NULL,
    locked_backend = NULL,
    locked_at = NULL
WHERE status = 'pending' AND next_attempt_at = 'infinity'
  AND locked_backend = pg_backend_pid()
RETURNING id;

-- name: outbox_enqueue
-- The messages the batch's handlers queued (tx.outbox), in one statement, in the batch's
-- transaction: they commit with the outcomes, or not at all. The idempotency key is unique:
-- a re-run of the same event (a retry, a replay) finds its message already there and adds
-- nothing (no row back). The relay is woken after the commit (outbox_wake_relay).
INSERT INTO outbox (inbox_id, topic, payload, idempotency_key)
SELECT m.inbox_id, m.topic, m.payload::jsonb, m.idempotency_key
FROM unnest(%(inbox_ids)b::bigint[], %(topics)b::text[], %(payloads)b::text[],
            %(idempotency_keys)b::text[]) WITH ORDINALITY
     AS m(inbox_id, topic, payload, idempotency_key, n)
ORDER BY m.n
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING id;

-- name: outbox_wake_relay
-- Wake idle relays once a batch that queued messages has committed: in a transaction of its
-- own, committed asynchronously, because a transaction that notifies holds a cluster-wide
-- lock until its commit record is flushed, which would serialise the workers' commits (see
-- inbox_wake_workers). A lost wake-up costs a poll interval, never a message.
SELECT set_config('synchronous_commit', 'off', true), pg_notify('outbox_messages', '');

-- name: inbox_worker_session
-- A worker's connection, once, when it is made:
-- * it commits asynchronously by default: a lost claim or rescue (database crash) only
--   means the lease was never taken, and the event is claimed again. The processing
--   transaction, which carries the handlers' writes, turns synchronous commit back on
--   (inbox_durable_commit); flushing its commit record also flushes the claim's.
-- * the handlers' time budget: a statement that runs longer is cancelled, and a handler
--   that sits idle in the transaction (stuck in Python, waiting on a socket) gets its
--   backend terminated, so no row, connection or snapshot is held for long. Set for the
--   session, not per transaction: that was a round trip per batch, and the session's own
--   statements (claims, outcomes, rescues) take milliseconds.
SELECT set_config('synchronous_commit', 'off', false),
       set_config('statement_timeout', %(timeout_ms)s, false),
       set_config('idle_in_transaction_session_timeout', %(timeout_ms)s, false);

-- name: inbox_object_apply_if_newer
-- Record that the event of `created` is the newest applied for `object_key`, unless a
-- strictly newer one was applied before. A row back means "apply it". The row lock taken by
-- the upsert also serialises concurrent events of one object until the transaction ends.
INSERT INTO inbox_object_versions AS v (object_key, last_created, inbox_id)
VALUES (%(object_key)s, %(created)s, %(inbox_id)s)
ON CONFLICT (object_key) DO UPDATE
SET last_created = EXCLUDED.last_created, inbox_id = EXCLUDED.inbox_id, updated_at = now()
WHERE v.last_created <= EXCLUDED.last_created
RETURNING 1;

-- name: inbox_object_lock
-- Serialise work on one business object until the end of the transaction (not released by
-- a savepoint rollback).
SELECT pg_advisory_xact_lock(hashtextextended(%(object_key)s, 0));
