-- Where each delivery try went, so /metrics can say which destination fails ("messages per
-- destination and outcome", issue 17) without a scan and without knowing INBOX_ROUTES.
--
-- The relay writes the route's destination, `scheme://host:port` (or `log:`), in the
-- try's outbox_attempts row: never the route's URL, whose userinfo, path or query can hold
-- a password or a token. NULL when the try went nowhere: a topic without a route, a crash
-- (the rescue does not know the route), a relay older than this migration. The destination
-- is kept as the relay saw it at the time, so the history stays true after INBOX_ROUTES
-- changes. Adding a nullable column without a default rewrites nothing.
ALTER TABLE outbox_attempts ADD COLUMN destination text;

-- The per-minute counters of 0012_minute_counts.sql gain the destination: '' for attempts
-- and for tries that went nowhere (a primary key column cannot be NULL). Destinations are
-- as many as the routes, so a day of deliveries stays a few thousand small rows; topics
-- would not be bounded (docs/decisions.md, "Deliveries per destination"). The table holds
-- two days of minutes at most: rebuilding its key takes milliseconds.
ALTER TABLE inbox_minute_counts ADD COLUMN destination text NOT NULL DEFAULT '';
ALTER TABLE inbox_minute_counts
    DROP CONSTRAINT inbox_minute_counts_pkey,
    ADD CONSTRAINT inbox_minute_counts_pkey
        PRIMARY KEY (minute, source, outcome, destination, shard);

-- The attempts' function names the new key in its ON CONFLICT; its rows keep destination ''.
CREATE OR REPLACE FUNCTION inbox_minute_counts_add() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO inbox_minute_counts AS c (minute, source, outcome, destination, shard, n)
    SELECT date_trunc('minute', finished_at), TG_ARGV[0], outcome, '', pg_backend_pid() % 8,
           count(*)
    FROM new_rows GROUP BY 1, 3 ORDER BY 1, 3
    ON CONFLICT (minute, source, outcome, destination, shard) DO UPDATE SET n = c.n + EXCLUDED.n;
    RETURN NULL;
END
$$;

-- Delivery tries per minute, outcome and destination; rows locked in key order, as before.
CREATE FUNCTION inbox_minute_counts_add_deliveries() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO inbox_minute_counts AS c (minute, source, outcome, destination, shard, n)
    SELECT date_trunc('minute', finished_at), 'deliveries', outcome,
           coalesce(destination, ''), pg_backend_pid() % 8, count(*)
    FROM new_rows GROUP BY 1, 3, 4 ORDER BY 1, 3, 4
    ON CONFLICT (minute, source, outcome, destination, shard) DO UPDATE SET n = c.n + EXCLUDED.n;
    RETURN NULL;
END
$$;

DROP TRIGGER outbox_attempts_minute_counts ON outbox_attempts;
CREATE TRIGGER outbox_attempts_minute_counts AFTER INSERT ON outbox_attempts
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION inbox_minute_counts_add_deliveries();
