-- Fewer B-trees under the one writer. Every effect inserts its state-history
-- rows and outbox events while it holds the writer, inside its own savepoint;
-- each index is one more B-tree insert and one more page the savepoint copies
-- before its first change (BENCHMARKS.md, "Fewer B-trees per effect").
--
-- 1. state_history_transaction_idx and outbox_events_transaction_idx go.
--    Only the auditor matched history rows, events and ledger transactions
--    by transaction id, and it now compares whole sets (EXCEPT, GROUP BY),
--    which needs no index.
-- 2. An event's feed position becomes its rowid: `feed_seq INTEGER PRIMARY
--    KEY`. With one writer, insert order is commit order, and rows are never
--    deleted, so the next rowid (the highest so far plus one) is the next
--    position, as `MAX(feed_seq) + 1` was. What goes: that subquery on every
--    insert, the separate `id`, the UNIQUE index on feed_seq, the partial
--    index of unsequenced rows (SQLite never had any) and the index on
--    (tenant_id, feed_seq): the feed reads an index on tenant_id alone,
--    whose entries are in rowid order within a tenant. Every existing event
--    keeps its position, so consumers' cursors stay valid. (An event without
--    one, which no version wrote, would get one after all the others, in
--    insert order.)
--
-- outbox_events has no foreign keys either way, so it is rebuilt in place:
-- copy, drop, rename, and its indexes again.

DROP INDEX state_history_transaction_idx;

CREATE TABLE outbox_events_rebuilt (
    feed_seq       INTEGER PRIMARY KEY,
    tenant_id      TEXT   NOT NULL,
    event_id       TEXT   NOT NULL,
    type           TEXT   NOT NULL,
    source         TEXT   NOT NULL,
    subject        TEXT   NOT NULL,
    time           BIGINT NOT NULL,
    data           TEXT   NOT NULL,
    transaction_id TEXT   NOT NULL,
    published_at   BIGINT,
    CONSTRAINT outbox_events_event_key UNIQUE (tenant_id, event_id)
);
INSERT INTO outbox_events_rebuilt
    (feed_seq, tenant_id, event_id, type, source, subject, time, data, transaction_id,
     published_at)
SELECT COALESCE(feed_seq, (SELECT COALESCE(MAX(feed_seq), 0) FROM outbox_events) + id),
       tenant_id, event_id, type, source, subject, time, data, transaction_id, published_at
  FROM outbox_events
 ORDER BY id;
DROP TABLE outbox_events;
ALTER TABLE outbox_events_rebuilt RENAME TO outbox_events;
CREATE INDEX outbox_events_feed_idx ON outbox_events (tenant_id);
