-- Events the outbox relay could not publish as they came (issue 17): one
-- refused for good (too large, invalid) is retried for max_attempts
-- rounds (FAILING), then sent to its dead-letter topic (DEAD); under
-- strict order a dead event's customer's later events wait behind it
-- (HELD) until an operator replays it (REPLAY, published again with its
-- id) or skips it (the row goes). Rows leave once their event is published.
CREATE TABLE relay_events (
    tenant_id   TEXT   NOT NULL,
    sink        TEXT   NOT NULL,
    event_id    TEXT   NOT NULL,
    position    BIGINT NOT NULL,
    customer_id TEXT   NOT NULL,
    event_type  TEXT   NOT NULL,
    state       TEXT   NOT NULL,
    attempts    BIGINT NOT NULL,
    last_error  TEXT,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    CONSTRAINT relay_events_pkey PRIMARY KEY (tenant_id, sink, event_id),
    CONSTRAINT relay_events_state_check
        CHECK (state IN ('FAILING', 'DEAD', 'HELD', 'REPLAY'))
);
CREATE INDEX relay_events_position_idx ON relay_events (tenant_id, sink, position);
