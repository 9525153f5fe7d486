-- A capture is requested (stored) before the PG is asked to capture an
-- authorized payment, so that nothing voids the authorization while the
-- capture may be reaching the PG: once set, the order's saga (COMPLETING)
-- owns the payment until the PG's answer is recorded — a capture confirms
-- it, a refusal clears this column and the saga voids it.
ALTER TABLE payments ADD COLUMN capture_requested_at BIGINT;

-- Calls to the PG now include captures. SQLite cannot change a CHECK
-- constraint in place: the table is rebuilt (SQLite's documented
-- procedure for schema changes ALTER TABLE does not support), with the
-- same columns and constraint names.
CREATE TABLE payment_attempts_0021 (
    tenant_id       TEXT     NOT NULL,
    payment_id      TEXT     NOT NULL,
    attempt         BIGINT   NOT NULL,
    -- approve | capture | cancel | query
    kind            TEXT     NOT NULL,
    idempotency_key TEXT,
    -- approved | declined | captured | transient | unknown | unreachable |
    -- refused | found | cancelled | refunded
    outcome         TEXT     NOT NULL,
    pg_code         TEXT,
    latency_ms      BIGINT   NOT NULL,
    created_at      BIGINT   NOT NULL,
    CONSTRAINT payment_attempts_pkey PRIMARY KEY (tenant_id, payment_id, attempt),
    CONSTRAINT payment_attempts_payment_fkey FOREIGN KEY (tenant_id, payment_id)
        REFERENCES payments (tenant_id, payment_id),
    CONSTRAINT payment_attempts_kind_check
        CHECK (kind IN ('approve', 'capture', 'cancel', 'query'))
);
INSERT INTO payment_attempts_0021 (tenant_id, payment_id, attempt, kind, idempotency_key,
    outcome, pg_code, latency_ms, created_at)
SELECT tenant_id, payment_id, attempt, kind, idempotency_key, outcome, pg_code, latency_ms,
    created_at
FROM payment_attempts;
DROP TABLE payment_attempts;
ALTER TABLE payment_attempts_0021 RENAME TO payment_attempts;
