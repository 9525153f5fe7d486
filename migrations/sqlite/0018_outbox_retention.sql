-- Outbox retention (issue 17): events older than database.outbox_retention_days
-- that every sink has published are pruned; `before_time` is the tenant's
-- watermark (events with an earlier time may be gone), which the auditor
-- respects when it matches effects to their events.
CREATE TABLE outbox_pruned (
    tenant_id   TEXT   NOT NULL,
    before_time BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    CONSTRAINT outbox_pruned_pkey PRIMARY KEY (tenant_id)
);
