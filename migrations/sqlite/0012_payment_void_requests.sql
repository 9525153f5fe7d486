-- A void is requested (stored) before the PG is asked to void, so that the
-- order's fulfilment cannot confirm a payment whose void may already have
-- reached the PG: once set, the payment is voided (the recovery scheduler
-- retries a void whose call failed) and never confirmed.
ALTER TABLE payments ADD COLUMN void_requested_at BIGINT;
