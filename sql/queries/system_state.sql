-- The state of the whole deployment, read from the database by any process that reports
-- it (`/metrics` today; the console's overview and `inbox status` can share it). Every
-- statement here stays cheap with 10,000,000 rows in the tables: it reads the counters the
-- triggers of 0007_row_counts.sql keep, the partial due indexes, or the end of the
-- BRIN-indexed attempts history.

-- name: system_status_counts
-- Rows by status of inbox and outbox: exact, from the trigger-kept counters.
SELECT table_name, status, count FROM inbox_status_totals;

-- name: system_backlog
-- Per table: rows due now, how long the oldest of them has been due (0 when none), and
-- rows leased right now. Due = pending - leased - scheduled later, all in this statement's
-- snapshot: the pending total comes from the counters, and the two index ranges counted
-- (the 'infinity' end of the due index, and retries scheduled after now) hold few rows
-- unless a failure storm has scheduled many retries.
WITH pending AS (
    SELECT table_name, coalesce(sum(n), 0)::bigint AS n
    FROM inbox_row_counts WHERE status = 'pending' GROUP BY table_name
)
SELECT greatest(0, coalesce((SELECT n FROM pending WHERE table_name = 'inbox'), 0)
                   - (SELECT count(*) FROM inbox
                      WHERE status = 'pending' AND next_attempt_at > now()))::bigint
                                                                            AS inbox_due,
       (SELECT coalesce(extract(epoch FROM now() - min(next_attempt_at)), 0)::float8
        FROM inbox WHERE status = 'pending' AND next_attempt_at <= now())  AS inbox_oldest_due_seconds,
       (SELECT count(*) FROM inbox
        WHERE status = 'pending' AND next_attempt_at = 'infinity')         AS inbox_leased,
       greatest(0, coalesce((SELECT n FROM pending WHERE table_name = 'outbox'), 0)
                   - (SELECT count(*) FROM outbox
                      WHERE status = 'pending' AND next_attempt_at > now()))::bigint
                                                                            AS outbox_due,
       (SELECT coalesce(extract(epoch FROM now() - min(next_attempt_at)), 0)::float8
        FROM outbox WHERE status = 'pending' AND next_attempt_at <= now()) AS outbox_oldest_due_seconds,
       (SELECT count(*) FROM outbox
        WHERE status = 'pending' AND next_attempt_at = 'infinity')         AS outbox_leased;

-- name: system_attempts_last_minute
-- Attempts finished in the last minute, by outcome (processed, ignored, retry, dead,
-- crashed). inbox_attempts grows at its end: the BRIN index on finished_at reads the last
-- pages only, and the rows counted are one minute's throughput.
SELECT outcome, count(*)
FROM inbox_attempts
WHERE finished_at >= now() - interval '1 minute'
GROUP BY outcome;

-- name: system_dead_by_type
-- Dead events by type, read through the partial index of failing events
-- (inbox_failures_idx); at most 100,000 rows are read however large a storm was.
SELECT event_type, count(*)
FROM (SELECT event_type FROM inbox WHERE status = 'dead' LIMIT 100000) dead
GROUP BY event_type;

-- name: system_dead_messages_by_topic
-- Dead outbox messages by topic, read through the partial index of dead messages
-- (outbox_dead_idx); at most 100,000 rows are read however large a storm was.
SELECT topic, count(*)
FROM (SELECT topic FROM outbox WHERE status = 'dead' LIMIT 100000) dead
GROUP BY topic;

-- name: system_deliveries_by_destination
-- Delivery tries in the last complete minute, by destination and outcome (sent, retry,
-- dead, crashed), from the per-minute counters of 0012_minute_counts.sql and
-- 0013_delivery_destinations.sql. Every destination counted in the last 15 minutes is
-- listed, 0 when the last minute had none, so its series does not vanish in a quiet
-- minute (Prometheus forgets a series after 5 minutes unseen). 15 minutes of counters are
-- at most 15 x outcomes x destinations x 8 shards small rows, a range of the primary key
-- (0.4 ms with 3 destinations in every shard; an hour took 1.5 ms). destination '' is a
-- try that went nowhere.
SELECT c.destination, c.outcome,
       coalesce(sum(c.n) FILTER (WHERE c.minute = last.minute), 0)::bigint
FROM inbox_minute_counts c,
     (SELECT date_trunc('minute', now()) - interval '1 minute' AS minute) last
WHERE c.minute > last.minute - interval '15 minutes' AND c.minute <= last.minute
  AND c.source = 'deliveries'
GROUP BY c.destination, c.outcome;

-- name: system_end_to_end
-- Received-to-processed delay of the newest processed events (at most 1,000 of the last
-- five minutes, looked for among the newest 10,000 attempts), as the median, the 90th and
-- the 99th percentile in seconds; NULLs when none. The attempts are read backwards along
-- the primary key (ids grow with time), stopping at 1,000 processed ones or 10,000 read,
-- then one primary-key lookup in inbox each: reading the five minutes through the BRIN
-- index read all of them (30,000 at 100 attempts/s: 11 ms with 1,000,000 events, 23 ms
-- with 10,000,000; bench/RESULTS.md).
SELECT percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (
           ORDER BY extract(epoch FROM a.finished_at - i.received_at))
FROM (SELECT inbox_id, finished_at FROM inbox_attempts
      WHERE id > (SELECT max(id) FROM inbox_attempts) - 10000
        AND finished_at >= now() - interval '5 minutes' AND outcome = 'processed'
      ORDER BY id DESC LIMIT 1000) a
JOIN inbox i ON i.id = a.inbox_id;
