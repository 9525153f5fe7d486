-- Payments through the payment gateway (PG): one row per attempt to take
-- (part of) an order's money, from READY to its last refund, and every call
-- made to the PG for it. The domain (host/src/domain/payment) decides every
-- transition; these constraints are the last line of defence behind it.
CREATE TABLE payments (
    tenant_id       TEXT   NOT NULL,
    payment_id      TEXT   NOT NULL,
    order_id        TEXT   NOT NULL,
    customer_id     TEXT   NOT NULL,
    amount          BIGINT NOT NULL,
    currency        TEXT   NOT NULL,
    status          TEXT   NOT NULL,
    -- The key every approval call sends to the PG, stored before the first.
    approval_key    TEXT   NOT NULL,
    -- The PG's key for the payment, once it approved.
    pg_payment_key  TEXT,
    refunded        BIGINT NOT NULL,
    -- The PG's code and message of the last refusal or failure.
    failure_code    TEXT,
    failure_message TEXT,
    -- The recovery scheduler: when it next asks the PG about a payment left
    -- READY or UNKNOWN (NULL: nothing to ask), how often it has asked, and
    -- when it gave up and flagged the payment for an operator.
    next_check_at   BIGINT,
    checks          BIGINT NOT NULL,
    flagged_at      BIGINT,
    version         BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    CONSTRAINT payments_pkey PRIMARY KEY (tenant_id, payment_id),
    CONSTRAINT payments_approval_key_key UNIQUE (tenant_id, approval_key),
    CONSTRAINT payments_order_fkey FOREIGN KEY (tenant_id, order_id)
        REFERENCES orders (tenant_id, order_id),
    CONSTRAINT payments_amount_check CHECK (amount > 0),
    CONSTRAINT payments_refunded_check CHECK (refunded >= 0 AND refunded <= amount),
    CONSTRAINT payments_status_check CHECK (status IN ('READY', 'UNKNOWN', 'APPROVED',
        'CONFIRMED', 'PARTIALLY_REFUNDED', 'REFUNDED', 'FAILED', 'CANCELLED'))
);
CREATE INDEX payments_order_idx ON payments (tenant_id, order_id);
-- At most one payment of an order in flight or holding its money: two
-- confirms racing for one order cannot both reach the PG.
CREATE UNIQUE INDEX payments_one_active_key ON payments (tenant_id, order_id)
    WHERE status IN ('READY', 'UNKNOWN', 'APPROVED');
CREATE INDEX payments_due_idx ON payments (tenant_id, next_check_at)
    WHERE next_check_at IS NOT NULL;

-- Every call made to the PG for a payment: what was sent (its idempotency
-- key), what came back, and how long it took.
CREATE TABLE payment_attempts (
    tenant_id       TEXT     NOT NULL,
    payment_id      TEXT     NOT NULL,
    attempt         BIGINT   NOT NULL,
    -- approve | cancel | query
    kind            TEXT     NOT NULL,
    idempotency_key TEXT,
    -- approved | declined | transient | unknown | unreachable | refused | found
    outcome         TEXT     NOT NULL,
    pg_code         TEXT,
    latency_ms      BIGINT   NOT NULL,
    created_at      BIGINT   NOT NULL,
    CONSTRAINT payment_attempts_pkey PRIMARY KEY (tenant_id, payment_id, attempt),
    CONSTRAINT payment_attempts_payment_fkey FOREIGN KEY (tenant_id, payment_id)
        REFERENCES payments (tenant_id, payment_id),
    CONSTRAINT payment_attempts_kind_check CHECK (kind IN ('approve', 'cancel', 'query'))
);
