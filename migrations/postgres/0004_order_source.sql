-- Where an order came from: the tenant API, a subscription charge, or a
-- metered-usage period close (with the subscription or close id it belongs
-- to), so an order can be traced back to what created it.
ALTER TABLE orders ADD COLUMN source TEXT NOT NULL DEFAULT 'api';
ALTER TABLE orders ADD CONSTRAINT orders_source_check
    CHECK (source IN ('api', 'subscription', 'usage_close'));
ALTER TABLE orders ADD COLUMN source_id TEXT;
