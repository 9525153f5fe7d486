-- Tenant webhooks (issue 17): an event whose delivery failed is tried
-- again with exponential backoff, not at the next round: `next_attempt_at`
-- is when (ms since the epoch) a FAILING webhook delivery is due. Kafka
-- rows leave it NULL (a refused record is tried again every round).
ALTER TABLE relay_events ADD COLUMN next_attempt_at BIGINT;
