-- Feed positions move out of `outbox_events`. Numbering an event used to
-- rewrite its whole row (payload included) and every one of its six index
-- entries, and leave the old row for vacuum: about a tenth of the
-- database's work per `credits/use`. Now the effect's transaction adds the
-- event's id to `outbox_unsequenced` (one narrow row), and the feed
-- sequencer (store/postgres.rs) moves committed ids from there into
-- `outbox_feed`, numbered per tenant in id order. `outbox_events` is never
-- updated for the feed.
CREATE TABLE outbox_unsequenced (
    tenant_id TEXT   NOT NULL,
    id        BIGINT NOT NULL,
    CONSTRAINT outbox_unsequenced_pkey PRIMARY KEY (id)
);

-- An event's position in GET /api/v1/events: positions increase per tenant
-- in the order events became visible, never the order ids were taken.
-- `event_row` is `outbox_events.id`.
CREATE TABLE outbox_feed (
    tenant_id TEXT   NOT NULL,
    feed_seq  BIGINT NOT NULL,
    event_row BIGINT NOT NULL,
    CONSTRAINT outbox_feed_pkey PRIMARY KEY (tenant_id, feed_seq)
);

INSERT INTO outbox_feed (tenant_id, feed_seq, event_row)
    SELECT tenant_id, feed_seq, id FROM outbox_events WHERE feed_seq IS NOT NULL;
INSERT INTO outbox_unsequenced (tenant_id, id)
    SELECT tenant_id, id FROM outbox_events WHERE feed_seq IS NULL;

-- Also drops outbox_events_feed_key, outbox_events_feed_idx and
-- outbox_events_unsequenced_idx.
ALTER TABLE outbox_events DROP COLUMN feed_seq;
