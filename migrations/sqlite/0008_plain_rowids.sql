-- Rebuilds state_history and outbox_events with plain INTEGER PRIMARY KEY
-- rowids instead of AUTOINCREMENT. Same meaning: rows of these tables are
-- never deleted, so the next rowid is still the highest so far plus one
-- (insert order, which the single writer makes commit order). What goes is
-- the sqlite_sequence row each insert read and rewrote, on every effect,
-- while holding the one writer (BENCHMARKS.md, "SQLite write path").
--
-- ledger_transactions keeps AUTOINCREMENT: other tables' foreign keys point
-- at it, and rebuilding a parent table needs foreign keys off, which a
-- migration in a transaction cannot do.
--
-- No other table references these two, so each is rebuilt in place: copy,
-- drop, rename, and the same indexes again.

CREATE TABLE state_history_rebuilt (
    id             INTEGER PRIMARY KEY,
    tenant_id      TEXT   NOT NULL,
    entity_type    TEXT   NOT NULL,
    entity_id      TEXT   NOT NULL,
    from_state     TEXT,
    to_state       TEXT   NOT NULL,
    event          TEXT   NOT NULL,
    reason         TEXT   NOT NULL,
    actor          TEXT   NOT NULL,
    request_id     TEXT,
    transaction_id TEXT   NOT NULL,
    at             BIGINT NOT NULL
);
INSERT INTO state_history_rebuilt
    (id, tenant_id, entity_type, entity_id, from_state, to_state, event, reason, actor,
     request_id, transaction_id, at)
SELECT id, tenant_id, entity_type, entity_id, from_state, to_state, event, reason, actor,
       request_id, transaction_id, at
  FROM state_history;
DROP TABLE state_history;
ALTER TABLE state_history_rebuilt RENAME TO state_history;
CREATE INDEX state_history_transaction_idx ON state_history (tenant_id, transaction_id);

CREATE TABLE outbox_events_rebuilt (
    id             INTEGER PRIMARY KEY,
    tenant_id      TEXT   NOT NULL,
    event_id       TEXT   NOT NULL,
    type           TEXT   NOT NULL,
    source         TEXT   NOT NULL,
    subject        TEXT   NOT NULL,
    time           BIGINT NOT NULL,
    data           TEXT   NOT NULL,
    transaction_id TEXT   NOT NULL,
    feed_seq       BIGINT,
    published_at   BIGINT,
    CONSTRAINT outbox_events_event_key UNIQUE (tenant_id, event_id),
    CONSTRAINT outbox_events_feed_key UNIQUE (feed_seq)
);
INSERT INTO outbox_events_rebuilt
    (id, tenant_id, event_id, type, source, subject, time, data, transaction_id, feed_seq,
     published_at)
SELECT id, tenant_id, event_id, type, source, subject, time, data, transaction_id, feed_seq,
       published_at
  FROM outbox_events;
DROP TABLE outbox_events;
ALTER TABLE outbox_events_rebuilt RENAME TO outbox_events;
CREATE INDEX outbox_events_feed_idx ON outbox_events (tenant_id, feed_seq);
CREATE INDEX outbox_events_unsequenced_idx ON outbox_events (id) WHERE feed_seq IS NULL;
CREATE INDEX outbox_events_transaction_idx ON outbox_events (tenant_id, transaction_id);

DELETE FROM sqlite_sequence WHERE name IN ('state_history', 'outbox_events');
