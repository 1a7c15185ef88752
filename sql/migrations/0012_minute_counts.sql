-- Attempts and delivery tries per minute, by outcome, kept by the statements that write
-- them, so the console's 24-hour charts read at most a day of small counter rows instead
-- of grouping a day of inbox_attempts (43 million rows at 500 events/s; 277 ms with
-- 1,000,000 attempts, docs/decisions.md "Console: the 24-hour chart").
--
-- A statement-level trigger on each history table adds its new rows per minute and outcome
-- in the writer's transaction, to the writer's shard (backend pid % 8: concurrent workers
-- seldom wait on one another's row), rows locked in (minute, outcome) order. Rows older
-- than two days are forgotten by the processes' tick duties (inbox/runtime/duties.py).
CREATE TABLE inbox_minute_counts (
    minute  timestamptz NOT NULL,
    source  text        NOT NULL,   -- attempts (inbox_attempts) | deliveries (outbox_attempts)
    outcome text        NOT NULL,   -- the history row's outcome
    shard   integer     NOT NULL,
    n       bigint      NOT NULL,
    PRIMARY KEY (minute, source, outcome, shard)
) WITH (fillfactor = 50);

CREATE FUNCTION inbox_minute_counts_add() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO inbox_minute_counts AS c (minute, source, outcome, shard, n)
    SELECT date_trunc('minute', finished_at), TG_ARGV[0], outcome, pg_backend_pid() % 8,
           count(*)
    FROM new_rows GROUP BY 1, 3 ORDER BY 1, 3
    ON CONFLICT (minute, source, outcome, shard) DO UPDATE SET n = c.n + EXCLUDED.n;
    RETURN NULL;
END
$$;

CREATE TRIGGER inbox_attempts_minute_counts AFTER INSERT ON inbox_attempts
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION inbox_minute_counts_add('attempts');
CREATE TRIGGER outbox_attempts_minute_counts AFTER INSERT ON outbox_attempts
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION inbox_minute_counts_add('deliveries');

-- The last two days already written (the BRIN indexes on finished_at read only those).
INSERT INTO inbox_minute_counts (minute, source, outcome, shard, n)
SELECT date_trunc('minute', finished_at), 'attempts', outcome, 0, count(*)
FROM inbox_attempts WHERE finished_at >= now() - interval '2 days' GROUP BY 1, 3;
INSERT INTO inbox_minute_counts (minute, source, outcome, shard, n)
SELECT date_trunc('minute', finished_at), 'deliveries', outcome, 0, count(*)
FROM outbox_attempts WHERE finished_at >= now() - interval '2 days' GROUP BY 1, 3;
