-- Credits of a grant that lapsed unspent. Its id is its ledger transaction
-- id (kind credit.expire); the customer's statement shows it. `credits` is
-- what left the balance: the grant's remaining credits, capped by what was
-- available. Credits reserved by a saga in flight are not pulled: they
-- expire by a later row once released, so a grant can have several.
CREATE TABLE credit_expiries (
    tenant_id     TEXT   NOT NULL,
    expiry_id     TEXT   NOT NULL,
    grant_id      TEXT   NOT NULL,
    customer_id   TEXT   NOT NULL,
    credits       BIGINT NOT NULL,
    balance_after BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    CONSTRAINT credit_expiries_pkey PRIMARY KEY (tenant_id, expiry_id),
    CONSTRAINT credit_expiries_grant_fkey FOREIGN KEY (tenant_id, grant_id)
        REFERENCES credit_grants (tenant_id, grant_id),
    CONSTRAINT credit_expiries_transaction_fkey FOREIGN KEY (tenant_id, expiry_id)
        REFERENCES ledger_transactions (tenant_id, transaction_id)
        DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT credit_expiries_credits_check CHECK (credits > 0)
);

CREATE INDEX credit_expiries_grant_idx ON credit_expiries (tenant_id, grant_id);

-- The expiry job's scan: grants with credits left, by expiry time.
CREATE INDEX credit_grants_due_idx ON credit_grants (tenant_id, expires_at)
    WHERE remaining > 0;
