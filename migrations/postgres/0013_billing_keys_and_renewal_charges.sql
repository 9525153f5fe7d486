-- Stored cards: the PG's billing key for a customer (never card data: the
-- PG tokenises). The newest one not removed is charged for renewals.
CREATE TABLE payment_methods (
    tenant_id    TEXT   NOT NULL,
    method_id    TEXT   NOT NULL,
    customer_id  TEXT   NOT NULL,
    billing_key  TEXT   NOT NULL,
    -- The merchant's customer key the PG issued the billing key to.
    customer_key TEXT   NOT NULL,
    -- What the PG shows of the card (e.g. 424242******4242), if anything.
    label        TEXT,
    created_at   BIGINT NOT NULL,
    removed_at   BIGINT,
    CONSTRAINT payment_methods_pkey PRIMARY KEY (tenant_id, method_id),
    CONSTRAINT payment_methods_billing_key_key UNIQUE (tenant_id, billing_key),
    CONSTRAINT payment_methods_customer_fkey FOREIGN KEY (tenant_id, customer_id)
        REFERENCES customers (tenant_id, customer_id)
);
CREATE INDEX payment_methods_customer_idx ON payment_methods (tenant_id, customer_id, created_at);

-- Renewal orders charged to a stored card, and their dunning: DUE until a
-- charge is approved (PAID: the subscription moves into the period) or the
-- dunning schedule is used up (FAILED: the subscription is cancelled).
-- `attempts` counts charges that failed. At most one DUE per subscription.
CREATE TABLE renewal_charges (
    tenant_id       TEXT   NOT NULL,
    order_id        TEXT   NOT NULL,
    subscription_id TEXT   NOT NULL,
    customer_id     TEXT   NOT NULL,
    -- The period the charge pays for: the subscription moves into it once
    -- the charge is approved.
    period_start    BIGINT NOT NULL,
    period_end      BIGINT NOT NULL,
    status          TEXT   NOT NULL,
    attempts        BIGINT NOT NULL,
    -- When the next charge is due (also the lease of a charge being made);
    -- NULL once PAID or FAILED.
    next_attempt_at BIGINT,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    CONSTRAINT renewal_charges_pkey PRIMARY KEY (tenant_id, order_id),
    CONSTRAINT renewal_charges_order_fkey FOREIGN KEY (tenant_id, order_id)
        REFERENCES orders (tenant_id, order_id),
    CONSTRAINT renewal_charges_status_check CHECK (status IN ('DUE', 'PAID', 'FAILED')),
    CONSTRAINT renewal_charges_attempts_check CHECK (attempts >= 0)
);
CREATE INDEX renewal_charges_due_idx ON renewal_charges (tenant_id, next_attempt_at)
    WHERE next_attempt_at IS NOT NULL;
CREATE UNIQUE INDEX renewal_charges_one_due_key ON renewal_charges (tenant_id, subscription_id)
    WHERE status = 'DUE';
