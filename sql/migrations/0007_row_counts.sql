-- Rows by status, kept by the statements that change them, so that reading them (the
-- /metrics scrape, `inbox status`, the console's overview) costs a few catalog-sized reads
-- instead of a count(*) over millions of rows, and stays exact at any size: what psql's
-- `SELECT status, count(*) FROM inbox GROUP BY status` says, in the same snapshot.
--
-- One statement-level trigger per table and operation reads the statement's transition
-- tables (the rows it inserted, updated or deleted) and adds the difference per status to
-- this table, in the writer's own transaction, so counts commit with the rows they count.
-- Writers add to the row of their own shard (backend pid % 64): concurrent transactions
-- rarely wait on one another's counter row, and rows of one statement are locked in
-- (status) order, so two writers never lock the same rows in opposite orders. A reader
-- sums the shards. A statement that changes no status (a claim, a lease) writes nothing.
-- Measured (docs/decisions.md, "Counts kept by triggers"): +20-60 us per insert
-- statement of the receiver, +70 us per claim of 100 events, +20-80 us per outcome
-- statement of 100 events.
CREATE TABLE inbox_row_counts (
    table_name text    NOT NULL,   -- 'inbox' or 'outbox'
    shard      integer NOT NULL,   -- pg_backend_pid() % 64 of the writer; 0 for the first fill
    status     text    NOT NULL,
    n          bigint  NOT NULL,   -- this shard's share: negative when it deleted more
    PRIMARY KEY (table_name, shard, status)
) WITH (fillfactor = 50);          -- room for HOT updates: every write updates a row here

CREATE FUNCTION inbox_row_counts_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO inbox_row_counts AS c (table_name, shard, status, n)
        SELECT TG_TABLE_NAME, pg_backend_pid() % 64, status, count(*)
        FROM new_rows GROUP BY status ORDER BY status
        ON CONFLICT (table_name, shard, status) DO UPDATE SET n = c.n + EXCLUDED.n;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO inbox_row_counts AS c (table_name, shard, status, n)
        SELECT TG_TABLE_NAME, pg_backend_pid() % 64, status, sum(delta)
        FROM (SELECT status, 1 AS delta FROM new_rows
              UNION ALL
              SELECT status, -1 FROM old_rows) AS changes
        GROUP BY status HAVING sum(delta) <> 0 ORDER BY status
        ON CONFLICT (table_name, shard, status) DO UPDATE SET n = c.n + EXCLUDED.n;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO inbox_row_counts AS c (table_name, shard, status, n)
        SELECT TG_TABLE_NAME, pg_backend_pid() % 64, status, -count(*)
        FROM old_rows GROUP BY status ORDER BY status
        ON CONFLICT (table_name, shard, status) DO UPDATE SET n = c.n + EXCLUDED.n;
    ELSE  -- TRUNCATE
        DELETE FROM inbox_row_counts WHERE table_name = TG_TABLE_NAME;
    END IF;
    RETURN NULL;
END
$$;

-- CREATE TRIGGER locks each table against writes until this migration commits, so the
-- first fill below counts exactly the rows the triggers did not see.
CREATE TRIGGER inbox_row_counts_insert AFTER INSERT ON inbox
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION inbox_row_counts_change();
CREATE TRIGGER inbox_row_counts_update AFTER UPDATE ON inbox
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION inbox_row_counts_change();
CREATE TRIGGER inbox_row_counts_delete AFTER DELETE ON inbox
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION inbox_row_counts_change();
CREATE TRIGGER inbox_row_counts_truncate AFTER TRUNCATE ON inbox
    FOR EACH STATEMENT EXECUTE FUNCTION inbox_row_counts_change();

CREATE TRIGGER outbox_row_counts_insert AFTER INSERT ON outbox
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION inbox_row_counts_change();
CREATE TRIGGER outbox_row_counts_update AFTER UPDATE ON outbox
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION inbox_row_counts_change();
CREATE TRIGGER outbox_row_counts_delete AFTER DELETE ON outbox
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION inbox_row_counts_change();
CREATE TRIGGER outbox_row_counts_truncate AFTER TRUNCATE ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION inbox_row_counts_change();

-- The rows already there: one count at migration time (seconds on a table of millions,
-- once, in the release phase).
INSERT INTO inbox_row_counts (table_name, shard, status, n)
SELECT 'inbox', 0, status, count(*) FROM inbox GROUP BY status;
INSERT INTO inbox_row_counts (table_name, shard, status, n)
SELECT 'outbox', 0, status, count(*) FROM outbox GROUP BY status;

-- What a reader asks: rows by status, per table, shards summed.
CREATE VIEW inbox_status_totals AS
SELECT table_name, status, sum(n)::bigint AS count
FROM inbox_row_counts
GROUP BY table_name, status;
