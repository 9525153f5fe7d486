-- No change. SQLite's 0009 drops the transaction-id indexes of state_history
-- and outbox_events and makes an event's feed position its rowid, to take
-- B-tree inserts from under its one writer. Here writers run in parallel and
-- feed positions live in outbox_feed, assigned after commit. The auditor no
-- longer needs the transaction-id indexes, but their cost was measured on
-- SQLite only, so here they stay.
SELECT 1;
