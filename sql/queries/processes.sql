-- Liveness (0009_processes.sql): the beats of workers, relays and web processes, and who
-- is alive.

-- name: process_beat
-- This process is alive: its row, made on the first beat, then refreshed with what it
-- holds now (the rows leased to this connection's backend, the 'infinity' end of the due
-- index of its table). Forgets processes gone for a day.
WITH holding AS (
    SELECT CASE %(kind)s
             WHEN 'worker' THEN (SELECT count(*) FROM inbox
                                 WHERE status = 'pending' AND next_attempt_at = 'infinity'
                                   AND locked_backend = pg_backend_pid())
             WHEN 'relay' THEN (SELECT count(*) FROM outbox
                                WHERE status = 'pending' AND next_attempt_at = 'infinity'
                                  AND locked_backend = pg_backend_pid())
             ELSE 0 END AS n
), forgotten AS (
    DELETE FROM inbox_processes WHERE last_seen_at < now() - interval '1 day'
)
INSERT INTO inbox_processes AS p (name, kind, host, dyno, pid, backend_pid, beat_seconds,
                                  holding)
SELECT %(name)s, %(kind)s, %(host)s, %(dyno)s, %(pid)s, pg_backend_pid(), %(beat_seconds)s,
       holding.n
FROM holding
ON CONFLICT (name) DO UPDATE
SET last_seen_at = now(), backend_pid = EXCLUDED.backend_pid,
    beat_seconds = EXCLUDED.beat_seconds, holding = EXCLUDED.holding;

-- name: process_gone
-- This process stops (a graceful exit): its row goes, so it is not reported gone later.
DELETE FROM inbox_processes WHERE name = %(name)s;

-- name: processes_list
-- Every process seen in the last day, alive first: alive while its last beat is younger
-- than three of its intervals (and at least 10 s, for a slow machine).
SELECT name, kind, host, dyno, pid, started_at, last_seen_at, holding,
       last_seen_at >= now() - make_interval(secs => greatest(3 * beat_seconds, 10)) AS alive,
       extract(epoch FROM now() - last_seen_at)::float8 AS seen_seconds_ago
FROM inbox_processes
ORDER BY alive DESC, kind, name;

-- name: minute_counts_forget
-- The per-minute counters (0012_minute_counts.sql) older than two days: the charts show
-- one. Run on every poll tick of some process; deletes a minute's rows or none.
DELETE FROM inbox_minute_counts WHERE minute < now() - interval '2 days';
