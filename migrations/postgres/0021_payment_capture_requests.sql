-- A capture is requested (stored) before the PG is asked to capture an
-- authorized payment, so that nothing voids the authorization while the
-- capture may be reaching the PG: once set, the order's saga (COMPLETING)
-- owns the payment until the PG's answer is recorded — a capture confirms
-- it, a refusal clears this column and the saga voids it.
ALTER TABLE payments ADD COLUMN capture_requested_at BIGINT;

-- Calls to the PG now include captures.
ALTER TABLE payment_attempts DROP CONSTRAINT payment_attempts_kind_check;
ALTER TABLE payment_attempts ADD CONSTRAINT payment_attempts_kind_check
    CHECK (kind IN ('approve', 'capture', 'cancel', 'query'));
