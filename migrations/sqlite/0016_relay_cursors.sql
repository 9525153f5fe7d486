-- The outbox relay (issue 17): how far each sink (Kafka, a tenant's
-- webhook) has published a tenant's events, by feed position, and which
-- host holds the tenant's publishing lease. One publisher per tenant and
-- sink at a time keeps every customer's events in order across hosts; a
-- host that dies loses the lease when it expires and another resumes from
-- the position last acknowledged (at least once: what it published after
-- that is published again).
CREATE TABLE relay_cursors (
    tenant_id   TEXT   NOT NULL,
    sink        TEXT   NOT NULL,
    -- Feed position of the last event the sink acknowledged (0: none).
    position    BIGINT NOT NULL,
    owner       TEXT,
    lease_until BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    CONSTRAINT relay_cursors_pkey PRIMARY KEY (tenant_id, sink),
    CONSTRAINT relay_cursors_position_check CHECK (position >= 0)
);
