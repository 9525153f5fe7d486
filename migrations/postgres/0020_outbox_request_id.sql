-- The request that caused an event (issue 17's CloudEvents contract: the
-- `requestid` extension), as X-Request-Id gave it or the host generated it;
-- work the host does by itself has an id of its own. NULL for events
-- written before this column.
ALTER TABLE outbox_events ADD COLUMN request_id TEXT;
