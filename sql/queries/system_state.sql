-- The state of the whole deployment, read from the database by any process that reports
-- it (`/metrics` today; the console's overview and `inbox status` can share it). Every
-- statement here must stay cheap with 10,000,000 rows in the tables: each one reads a
-- catalog, a partial index of the rows that are few by design (pending, failing), or the
-- end of a BRIN-indexed history. inbox/store/system_state.py says when counts are exact.

-- name: system_table_rows
-- How many live rows each table holds, as the statistics system knows it (updated at each
-- transaction's end, at most a second or so behind; VACUUM and ANALYZE refresh reltuples).
-- The larger of the two, so a table just bulk-loaded and not yet analyzed is not taken
-- for a small one. Decides whether counting by status is exact (a scan) or an estimate.
SELECT c.relname,
       greatest(coalesce(s.n_live_tup, 0), c.reltuples::bigint, 0) AS live_rows
FROM pg_class c
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE c.oid IN ('inbox'::regclass, 'outbox'::regclass);

-- name: system_inbox_counts_exact
-- Events by status, counted: what psql's `SELECT status, count(*)` says. Below the exact
-- limit only.
SELECT status, count(*) FROM inbox GROUP BY status;

-- name: system_outbox_counts_exact
-- Messages by status, counted. Below the exact limit only.
SELECT status, count(*) FROM outbox GROUP BY status;

-- name: system_status_frequencies
-- ANALYZE's sample of the status column: the share of each common status in a table
-- (`most_common_freqs`, parallel to `most_common_vals`). Spreads an estimated total over
-- the statuses that are not counted.
SELECT tablename, unnest(most_common_vals::text::text[]) AS status,
       unnest(most_common_freqs) AS frequency
FROM pg_stats
WHERE schemaname = current_schema() AND tablename IN ('inbox', 'outbox')
  AND attname = 'status';

-- name: system_few_counts
-- The statuses counted even in a huge table, because partial indexes hold only them:
-- pending (inbox_due_idx, outbox_due_idx, leases included) and dead events
-- (inbox_failures_idx). Each count stops at %(cap)s rows, so a runaway backlog costs a
-- bounded scan; a count that reaches the cap is reported as an estimate.
SELECT (SELECT count(*) FROM (SELECT 1 FROM inbox WHERE status = 'pending'
                              LIMIT %(cap)s) p)                               AS inbox_pending,
       (SELECT count(*) FROM (SELECT 1 FROM inbox WHERE status = 'dead'
                              LIMIT %(cap)s) d)                               AS inbox_dead,
       (SELECT count(*) FROM (SELECT 1 FROM outbox WHERE status = 'pending'
                              LIMIT %(cap)s) o)                               AS outbox_pending;

-- name: system_backlog
-- Rows due now (counted up to %(cap)s), how long the oldest of them has been due (0 when
-- none), and rows leased right now (the 'infinity' end of the due indexes), for both
-- tables. Reads only the partial due indexes.
SELECT (SELECT count(*) FROM (SELECT 1 FROM inbox
                              WHERE status = 'pending' AND next_attempt_at <= now()
                              LIMIT %(cap)s) d)                           AS inbox_due,
       (SELECT coalesce(extract(epoch FROM now() - min(next_attempt_at)), 0)::float8
        FROM inbox WHERE status = 'pending' AND next_attempt_at <= now()) AS inbox_oldest_due_seconds,
       (SELECT count(*) FROM inbox
        WHERE status = 'pending' AND next_attempt_at = 'infinity')        AS inbox_leased,
       (SELECT count(*) FROM (SELECT 1 FROM outbox
                              WHERE status = 'pending' AND next_attempt_at <= now()
                              LIMIT %(cap)s) d)                           AS outbox_due,
       (SELECT coalesce(extract(epoch FROM now() - min(next_attempt_at)), 0)::float8
        FROM outbox WHERE status = 'pending' AND next_attempt_at <= now()) AS outbox_oldest_due_seconds,
       (SELECT count(*) FROM outbox
        WHERE status = 'pending' AND next_attempt_at = 'infinity')        AS outbox_leased;

-- name: system_attempts_last_minute
-- Attempts finished in the last minute, by outcome (processed, ignored, retry, dead,
-- crashed). inbox_attempts grows at its end: the BRIN index on finished_at reads the last
-- pages only.
SELECT outcome, count(*)
FROM inbox_attempts
WHERE finished_at >= now() - interval '1 minute'
GROUP BY outcome;
