-- How the PG takes a payment's money, fixed when the payment is opened:
-- 'manual' — the approval only authorizes, and the order's fulfilment
-- captures it; 'automatic' — the approval captures (a PG that does, as
-- Toss Payments does, and every billing-key charge). A tenant may change
-- its gateway's `capture` setting while payments are in flight: each one
-- keeps the mode it was approved under, so an authorization is never
-- confirmed without its capture. NULL: opened before this column, the
-- tenant's setting decides.
ALTER TABLE payments ADD COLUMN capture_mode TEXT
    CONSTRAINT payments_capture_mode_check CHECK (capture_mode IN ('manual', 'automatic'));
