-- Orders paid (in part or whole) with prepaid credits: the saga reserves
-- the credits with the payment's intent, captures them when the tenant's
-- service completes the order, and releases them when it compensates
-- (host/src/app/saga_credits.rs). The table of 0001 was a placeholder that
-- nothing wrote; it is replaced by one that says which order holds what.
DROP TABLE credit_reservations;
CREATE TABLE credit_reservations (
    tenant_id      TEXT   NOT NULL,
    reservation_id TEXT   NOT NULL,
    customer_id    TEXT   NOT NULL,
    order_id       TEXT   NOT NULL,
    -- Credits held, and the money they settle of the order's bill (minor
    -- units of the order's currency, at the tenant's credits_per_major_unit).
    credits        BIGINT NOT NULL,
    value          BIGINT NOT NULL,
    currency       TEXT   NOT NULL,
    -- HELD until the saga captures (CAPTURED, use_id: the credit use a
    -- refund points at) or releases (RELEASED) them.
    status         TEXT   NOT NULL,
    use_id         TEXT,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    CONSTRAINT credit_reservations_pkey PRIMARY KEY (tenant_id, reservation_id),
    CONSTRAINT credit_reservations_customer_fkey FOREIGN KEY (tenant_id, customer_id)
        REFERENCES customers (tenant_id, customer_id),
    CONSTRAINT credit_reservations_order_fkey FOREIGN KEY (tenant_id, order_id)
        REFERENCES orders (tenant_id, order_id),
    CONSTRAINT credit_reservations_credits_check CHECK (credits > 0),
    CONSTRAINT credit_reservations_value_check CHECK (value > 0),
    CONSTRAINT credit_reservations_status_check
        CHECK (status IN ('HELD', 'CAPTURED', 'RELEASED')),
    CONSTRAINT credit_reservations_captured_check
        CHECK ((status = 'CAPTURED') = (use_id IS NOT NULL))
);
-- At most one reservation of an order held at a time, and the lookup of it.
CREATE UNIQUE INDEX credit_reservations_one_held ON credit_reservations (tenant_id, order_id)
    WHERE status = 'HELD';
CREATE INDEX credit_reservations_order_idx ON credit_reservations (tenant_id, order_id);
