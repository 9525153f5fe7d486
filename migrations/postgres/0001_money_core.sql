-- The money core (issue 3): customers, credits, the double-entry ledger,
-- state history, the outbox, idempotency, orders, subscriptions, metered
-- usage and period closes. Same meaning as ../sqlite/0001_money_core.sql.

-- ── Customers ──────────────────────────────────────────────────────────────
CREATE TABLE customers (
    tenant_id   TEXT   NOT NULL,
    customer_id TEXT   NOT NULL,
    -- JSON object of string → string; handed to policies as
    -- customer-attributes, in key order.
    attributes  TEXT   NOT NULL,
    -- +1 per change; the state history of a customer counts these.
    version     BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    CONSTRAINT customers_pkey PRIMARY KEY (tenant_id, customer_id)
);

-- ── Ledger ─────────────────────────────────────────────────────────────────
-- One row per business transaction; its postings sum to zero per unit.
CREATE TABLE ledger_transactions (
    seq            BIGINT GENERATED ALWAYS AS IDENTITY,
    tenant_id      TEXT   NOT NULL,
    transaction_id TEXT   NOT NULL,
    -- domain::ledger::TransactionKind::as_str, e.g. credit.use
    kind           TEXT   NOT NULL,
    customer_id    TEXT,
    request_id     TEXT,
    created_at     BIGINT NOT NULL,
    CONSTRAINT ledger_transactions_pkey PRIMARY KEY (seq),
    CONSTRAINT ledger_transactions_id_key UNIQUE (tenant_id, transaction_id)
);
CREATE INDEX ledger_transactions_customer_idx
    ON ledger_transactions (tenant_id, customer_id, seq);

-- Signed amounts: positive = debit, negative = credit (domain::ledger).
CREATE TABLE ledger_postings (
    tenant_id      TEXT     NOT NULL,
    transaction_id TEXT     NOT NULL,
    line           SMALLINT NOT NULL,
    -- domain::ledger::LedgerAccount::key, e.g. customer:c_1:credits
    account        TEXT     NOT NULL,
    -- a currency code or CREDITS
    unit           TEXT     NOT NULL,
    amount         BIGINT   NOT NULL,
    CONSTRAINT ledger_postings_pkey PRIMARY KEY (tenant_id, transaction_id, line),
    CONSTRAINT ledger_postings_transaction_fkey FOREIGN KEY (tenant_id, transaction_id)
        REFERENCES ledger_transactions (tenant_id, transaction_id)
        DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT ledger_postings_amount_check CHECK (amount <> 0)
);

-- ── Credits ────────────────────────────────────────────────────────────────
-- The materialised balance of customer:{id}:credits (+ reserved), updated in
-- the same transaction as the postings. available = balance - reserved.
CREATE TABLE credit_accounts (
    tenant_id   TEXT   NOT NULL,
    customer_id TEXT   NOT NULL,
    balance     BIGINT NOT NULL DEFAULT 0,
    reserved    BIGINT NOT NULL DEFAULT 0,
    -- Σ remaining of this customer's grants that expire (so a use only
    -- reads grants when some can expire).
    expiring    BIGINT NOT NULL DEFAULT 0,
    -- Credits used on UTC day `spent_day` (days since the epoch).
    spent_day   BIGINT NOT NULL DEFAULT 0,
    spent_today BIGINT NOT NULL DEFAULT 0,
    -- +1 per change; every change has a state_history row.
    version     BIGINT NOT NULL DEFAULT 0,
    updated_at  BIGINT NOT NULL,
    CONSTRAINT credit_accounts_pkey PRIMARY KEY (tenant_id, customer_id),
    CONSTRAINT credit_accounts_customer_fkey FOREIGN KEY (tenant_id, customer_id)
        REFERENCES customers (tenant_id, customer_id),
    CONSTRAINT credit_accounts_reserved_check CHECK (reserved >= 0 AND reserved <= balance),
    CONSTRAINT credit_accounts_expiring_check CHECK (expiring >= 0),
    CONSTRAINT credit_accounts_spent_check CHECK (spent_today >= 0)
);

-- A grant's id is its ledger transaction id. `remaining` is tracked only for
-- grants that expire (NULL otherwise): uses consume them soonest-first.
CREATE TABLE credit_grants (
    tenant_id     TEXT   NOT NULL,
    grant_id      TEXT   NOT NULL,
    customer_id   TEXT   NOT NULL,
    credits       BIGINT NOT NULL,
    remaining     BIGINT,
    expires_at    BIGINT,
    reason        TEXT   NOT NULL,
    balance_after BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    CONSTRAINT credit_grants_pkey PRIMARY KEY (tenant_id, grant_id),
    CONSTRAINT credit_grants_customer_fkey FOREIGN KEY (tenant_id, customer_id)
        REFERENCES customers (tenant_id, customer_id),
    CONSTRAINT credit_grants_transaction_fkey FOREIGN KEY (tenant_id, grant_id)
        REFERENCES ledger_transactions (tenant_id, transaction_id)
        DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT credit_grants_credits_check CHECK (credits > 0),
    CONSTRAINT credit_grants_remaining_check CHECK (
        (expires_at IS NULL AND remaining IS NULL)
        OR (expires_at IS NOT NULL AND remaining >= 0 AND remaining <= credits))
);
CREATE INDEX credit_grants_expiring_idx
    ON credit_grants (tenant_id, customer_id, expires_at) WHERE remaining > 0;

-- A debit: a feature use or a subscription period paid from credits. Its id
-- is its ledger transaction id; refunds point at it.
CREATE TABLE credit_uses (
    tenant_id     TEXT   NOT NULL,
    use_id        TEXT   NOT NULL,
    customer_id   TEXT   NOT NULL,
    -- domain::credit::CreditUseKind::as_str: use | subscription_charge
    kind          TEXT   NOT NULL,
    feature       TEXT,
    units         BIGINT,
    charged       BIGINT NOT NULL,
    refunded      BIGINT NOT NULL DEFAULT 0,
    metadata      TEXT   NOT NULL,
    -- The quote that priced it (JSON) and who answered it.
    quote         TEXT,
    policy        TEXT,
    policy_hash   TEXT,
    balance_after BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    CONSTRAINT credit_uses_pkey PRIMARY KEY (tenant_id, use_id),
    CONSTRAINT credit_uses_customer_fkey FOREIGN KEY (tenant_id, customer_id)
        REFERENCES customers (tenant_id, customer_id),
    CONSTRAINT credit_uses_transaction_fkey FOREIGN KEY (tenant_id, use_id)
        REFERENCES ledger_transactions (tenant_id, transaction_id)
        DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT credit_uses_kind_check CHECK (kind IN ('use', 'subscription_charge')),
    CONSTRAINT credit_uses_charged_check CHECK (charged > 0),
    CONSTRAINT credit_uses_refunded_check CHECK (refunded >= 0 AND refunded <= charged)
);

CREATE TABLE credit_refunds (
    tenant_id     TEXT   NOT NULL,
    refund_id     TEXT   NOT NULL,
    use_id        TEXT   NOT NULL,
    customer_id   TEXT   NOT NULL,
    credits       BIGINT NOT NULL,
    reason        TEXT   NOT NULL,
    balance_after BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    CONSTRAINT credit_refunds_pkey PRIMARY KEY (tenant_id, refund_id),
    CONSTRAINT credit_refunds_use_fkey FOREIGN KEY (tenant_id, use_id)
        REFERENCES credit_uses (tenant_id, use_id),
    CONSTRAINT credit_refunds_transaction_fkey FOREIGN KEY (tenant_id, refund_id)
        REFERENCES ledger_transactions (tenant_id, transaction_id)
        DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT credit_refunds_credits_check CHECK (credits > 0)
);
CREATE INDEX credit_refunds_use_idx ON credit_refunds (tenant_id, use_id);

-- A saga's hold on credits (orders paid with credits; later issue).
CREATE TABLE credit_reservations (
    tenant_id      TEXT   NOT NULL,
    reservation_id TEXT   NOT NULL,
    customer_id    TEXT   NOT NULL,
    held           BIGINT NOT NULL,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    CONSTRAINT credit_reservations_pkey PRIMARY KEY (tenant_id, reservation_id),
    CONSTRAINT credit_reservations_customer_fkey FOREIGN KEY (tenant_id, customer_id)
        REFERENCES customers (tenant_id, customer_id),
    CONSTRAINT credit_reservations_held_check CHECK (held >= 0)
);

-- ── Orders ─────────────────────────────────────────────────────────────────
CREATE TABLE orders (
    tenant_id   TEXT   NOT NULL,
    order_id    TEXT   NOT NULL,
    customer_id TEXT   NOT NULL,
    currency    TEXT   NOT NULL,
    total       BIGINT NOT NULL,
    status      TEXT   NOT NULL,
    metadata    TEXT   NOT NULL,
    quote       TEXT,
    policy      TEXT,
    policy_hash TEXT,
    version     BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    CONSTRAINT orders_pkey PRIMARY KEY (tenant_id, order_id),
    CONSTRAINT orders_customer_fkey FOREIGN KEY (tenant_id, customer_id)
        REFERENCES customers (tenant_id, customer_id),
    CONSTRAINT orders_total_check CHECK (total > 0),
    CONSTRAINT orders_status_check
        CHECK (status IN ('PENDING', 'PAID', 'COMPLETED', 'CANCELLED'))
);
CREATE INDEX orders_customer_idx ON orders (tenant_id, customer_id, created_at);

-- What the customer asked for.
CREATE TABLE order_items (
    tenant_id TEXT     NOT NULL,
    order_id  TEXT     NOT NULL,
    line      SMALLINT NOT NULL,
    sku       TEXT     NOT NULL,
    quantity  BIGINT   NOT NULL,
    CONSTRAINT order_items_pkey PRIMARY KEY (tenant_id, order_id, line),
    CONSTRAINT order_items_order_fkey FOREIGN KEY (tenant_id, order_id)
        REFERENCES orders (tenant_id, order_id),
    CONSTRAINT order_items_quantity_check CHECK (quantity > 0)
);

-- What the pricing policy charged (items, discounts, taxes…); sums to total.
CREATE TABLE order_lines (
    tenant_id   TEXT     NOT NULL,
    order_id    TEXT     NOT NULL,
    line        SMALLINT NOT NULL,
    code        TEXT     NOT NULL,
    description TEXT     NOT NULL,
    quantity    BIGINT   NOT NULL,
    amount      BIGINT   NOT NULL,
    CONSTRAINT order_lines_pkey PRIMARY KEY (tenant_id, order_id, line),
    CONSTRAINT order_lines_order_fkey FOREIGN KEY (tenant_id, order_id)
        REFERENCES orders (tenant_id, order_id)
);

-- ── Subscriptions ──────────────────────────────────────────────────────────
CREATE TABLE subscriptions (
    tenant_id            TEXT    NOT NULL,
    subscription_id      TEXT    NOT NULL,
    customer_id          TEXT    NOT NULL,
    plan_id              TEXT    NOT NULL,
    pending_plan_id      TEXT,
    status               TEXT    NOT NULL,
    period_start         BIGINT  NOT NULL,
    period_end           BIGINT  NOT NULL,
    anchor               BIGINT,
    cancel_at_period_end BOOLEAN NOT NULL DEFAULT FALSE,
    version              BIGINT  NOT NULL,
    created_at           BIGINT  NOT NULL,
    updated_at           BIGINT  NOT NULL,
    CONSTRAINT subscriptions_pkey PRIMARY KEY (tenant_id, subscription_id),
    CONSTRAINT subscriptions_customer_fkey FOREIGN KEY (tenant_id, customer_id)
        REFERENCES customers (tenant_id, customer_id),
    CONSTRAINT subscriptions_status_check
        CHECK (status IN ('TRIALING', 'ACTIVE', 'PAST_DUE', 'CANCELLED', 'EXPIRED')),
    CONSTRAINT subscriptions_period_check CHECK (period_end > period_start)
);
CREATE INDEX subscriptions_customer_idx ON subscriptions (tenant_id, customer_id);
-- The renewal scheduler's scan: live subscriptions by period end.
CREATE INDEX subscriptions_due_idx ON subscriptions (tenant_id, period_end)
    WHERE status IN ('TRIALING', 'ACTIVE', 'PAST_DUE');

-- ── Metered usage ──────────────────────────────────────────────────────────
-- Deduplicated by (tenant, event id) forever: the primary key.
CREATE TABLE usage_events (
    tenant_id   TEXT   NOT NULL,
    event_id    TEXT   NOT NULL,
    customer_id TEXT   NOT NULL,
    metric      TEXT   NOT NULL,
    quantity    BIGINT NOT NULL,
    occurred_at BIGINT NOT NULL,
    properties  TEXT   NOT NULL,
    received_at BIGINT NOT NULL,
    CONSTRAINT usage_events_pkey PRIMARY KEY (tenant_id, event_id),
    CONSTRAINT usage_events_quantity_check CHECK (quantity >= 0)
);
CREATE INDEX usage_events_customer_idx
    ON usage_events (tenant_id, customer_id, metric, occurred_at);

-- A customer's usage over a period turned into an order, once.
CREATE TABLE period_closes (
    tenant_id    TEXT   NOT NULL,
    close_id     TEXT   NOT NULL,
    customer_id  TEXT   NOT NULL,
    period_start BIGINT NOT NULL,
    period_end   BIGINT NOT NULL,
    order_id     TEXT,
    quote        TEXT,
    policy       TEXT,
    policy_hash  TEXT,
    created_at   BIGINT NOT NULL,
    CONSTRAINT period_closes_pkey PRIMARY KEY (tenant_id, close_id),
    CONSTRAINT period_closes_period_key UNIQUE (tenant_id, customer_id, period_start, period_end),
    CONSTRAINT period_closes_period_check CHECK (period_end > period_start)
);

-- ── State history ──────────────────────────────────────────────────────────
-- One row per state change of any entity. For credit accounts the state is
-- the balance (from/to are decimal strings); for orders and subscriptions it
-- is the status.
CREATE TABLE state_history (
    id             BIGINT GENERATED ALWAYS AS IDENTITY,
    tenant_id      TEXT   NOT NULL,
    entity_type    TEXT   NOT NULL,
    entity_id      TEXT   NOT NULL,
    from_state     TEXT,
    to_state       TEXT   NOT NULL,
    event          TEXT   NOT NULL,
    reason         TEXT   NOT NULL,
    actor          TEXT   NOT NULL,
    request_id     TEXT,
    -- The business transaction (ledger transaction id, or the operation id
    -- of a change that moves no money) it belongs to.
    transaction_id TEXT   NOT NULL,
    at             BIGINT NOT NULL,
    CONSTRAINT state_history_pkey PRIMARY KEY (id)
);
CREATE INDEX state_history_entity_idx
    ON state_history (tenant_id, entity_type, entity_id, id);
CREATE INDEX state_history_transaction_idx ON state_history (tenant_id, transaction_id);

-- ── Outbox ─────────────────────────────────────────────────────────────────
-- CloudEvents 1.0 rows written in the effect's transaction. `feed_seq` is
-- the event's position in GET /api/v1/events: NULL until the feed sequencer
-- numbers committed rows (store/postgres.rs), so positions follow the
-- order in which events became visible, never the order ids were taken.
CREATE TABLE outbox_events (
    id             BIGINT GENERATED ALWAYS AS IDENTITY,
    tenant_id      TEXT   NOT NULL,
    event_id       TEXT   NOT NULL,
    type           TEXT   NOT NULL,
    source         TEXT   NOT NULL,
    subject        TEXT   NOT NULL,
    time           BIGINT NOT NULL,
    data           TEXT   NOT NULL,
    transaction_id TEXT   NOT NULL,
    feed_seq       BIGINT,
    published_at   BIGINT,
    CONSTRAINT outbox_events_pkey PRIMARY KEY (id),
    CONSTRAINT outbox_events_event_key UNIQUE (tenant_id, event_id),
    CONSTRAINT outbox_events_feed_key UNIQUE (feed_seq)
);
CREATE INDEX outbox_events_feed_idx ON outbox_events (tenant_id, feed_seq);
CREATE INDEX outbox_events_unsequenced_idx ON outbox_events (id) WHERE feed_seq IS NULL;
CREATE INDEX outbox_events_transaction_idx ON outbox_events (tenant_id, transaction_id);

-- ── Idempotency ────────────────────────────────────────────────────────────
-- Inserted first in the effect's transaction (the unique key serialises
-- concurrent duplicates) and completed with the response in the same
-- transaction, so a committed row always carries its response.
CREATE TABLE idempotency_keys (
    tenant_id       TEXT    NOT NULL,
    idem_key        TEXT    NOT NULL,
    fingerprint     TEXT    NOT NULL,
    response_status INTEGER,
    response_body   BYTEA,
    created_at      BIGINT  NOT NULL,
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (tenant_id, idem_key)
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (tenant_id, created_at);
