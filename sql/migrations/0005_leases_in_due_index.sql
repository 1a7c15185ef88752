-- Leases are found through the due index instead of an index of their own.
--
-- A leased row is always `status = 'pending' AND next_attempt_at = 'infinity'` (the claims
-- of the worker and of the relay set both), so the far end of inbox_due_idx / outbox_due_idx
-- already lists exactly the leased rows: the crash rescue, `inbox status` and the release
-- at shutdown look there.
--
-- The indexes on locked_backend were worse than useless under load: every lease of one
-- worker has the same key, so btree deduplication packs them into posting lists whose dead
-- entries cannot be marked killed while one live lease shares the list. Each lookup by
-- backend then visited every row that backend had ever leased since the last VACUUM, and
-- the batch outcome (inbox_finish), which the planner ran through that index, cost ~0.8 ms
-- per event after 20,000 events (docs/decisions.md, "Leases live in the due index").
DROP INDEX IF EXISTS inbox_locked_idx;
DROP INDEX IF EXISTS outbox_locked_idx;
