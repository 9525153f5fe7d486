-- GET /api/v1/payments/{id}/history lists one payment's transitions. 0007
-- dropped the index by entity because nothing read history that way and it
-- cost every effect a B-tree insert; this one is partial, so only payment
-- transitions (a few per payment, far fewer than credit effects) pay for it.
CREATE INDEX state_history_payment_idx ON state_history (tenant_id, entity_id, id)
    WHERE entity_type = 'payment';
