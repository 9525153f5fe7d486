-- No change. PostgreSQL's 0006 moves feed positions out of `outbox_events`
-- because there they are assigned after commit; with SQLite's one writer,
-- insert order is commit order, so `outbox_events.feed_seq` is still set
-- at insert (store/sqlite.rs).
SELECT 1;
