-- One saga per order paid through POST /payments/confirm
-- (host/src/domain/saga): its state, the forward steps done (undone in
-- reverse when it compensates), the tenant's service deadline, and when
-- the orchestrator next looks at it (a deadline, a retried compensation,
-- or the lease of a host working on it).
CREATE TABLE sagas (
    tenant_id           TEXT   NOT NULL,
    order_id            TEXT   NOT NULL,
    customer_id         TEXT   NOT NULL,
    state               TEXT   NOT NULL,
    -- The payment of the current attempt, once there is one.
    payment_id          TEXT,
    -- Forward steps done, comma-separated (reserve_credits, approve_payment,
    -- pay_order).
    steps_done          TEXT   NOT NULL,
    service_deadline_at BIGINT,
    next_run_at         BIGINT,
    -- Compensation runs that failed (parked for an operator past a limit).
    attempts            BIGINT NOT NULL,
    last_error          TEXT,
    version             BIGINT NOT NULL,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL,
    CONSTRAINT sagas_pkey PRIMARY KEY (tenant_id, order_id),
    CONSTRAINT sagas_order_fkey FOREIGN KEY (tenant_id, order_id)
        REFERENCES orders (tenant_id, order_id),
    CONSTRAINT sagas_state_check CHECK (state IN ('RUNNING', 'WAITING_FOR_SERVICE',
        'COMPLETING', 'COMPLETED', 'COMPENSATING', 'COMPENSATED', 'COMPENSATION_FAILED'))
);
CREATE INDEX sagas_due_idx ON sagas (tenant_id, next_run_at) WHERE next_run_at IS NOT NULL;
CREATE INDEX sagas_state_idx ON sagas (tenant_id, state, updated_at);
