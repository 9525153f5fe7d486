-- No change. SQLite's 0008 drops AUTOINCREMENT from state_history and
-- outbox_events (a sqlite_sequence write per insert); here their ids are
-- identity columns, which have no such cost.
SELECT 1;
