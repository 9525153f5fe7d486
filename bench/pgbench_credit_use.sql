-- pgbench custom script: the SQL one `POST /api/v1/credits/use` runs on
-- PostgreSQL (host/src/app/credits/use_credits.rs + host/src/store/
-- postgres.rs), statement for statement, with payloads of the same size.
-- A ceiling for the host: what the database alone does for these round trips.
--
--   1. (pool, autocommit) the customer's attributes, for the pricing policy
--   2. BEGIN
--   3. the idempotency claim (INSERT … ON CONFLICT DO NOTHING)
--   4. the guarded debit + the credit_uses row (one CTE statement)
--   5. the journal flush: ledger transaction, 2 postings, history row, outbox
--      event and its id for the feed sequencer, idempotency response (one
--      UNNEST CTE statement)
--   6. COMMIT (deferred foreign keys are checked here)
-- = 6 round trips. Not included: the feed sequencer `serve` runs every few
-- hundred ms (one statement moving every event id committed since from
-- outbox_unsequenced to outbox_feed), which the host pays for.
--
-- Variables (pass with -D): ncust = customers pgb-1 … pgb-<ncust> (seeded by
-- bench/credits_use.sh), now = a Unix time in ms. Run with -M prepared (sqlx
-- prepares and caches every statement, too):
--   pgbench -n -M prepared -f bench/pgbench_credit_use.sql -D ncust=10000 \
--     -D now=$(date +%s%3N) -c 8 -j 2 -T 20 -h 127.0.0.1 -p <port> -U postgres pgbench

\set c random(1, :ncust)
\set k random(1, 9000000000000000000)
\set day :now / 86400000

SELECT customer_id, attributes, version, created_at, updated_at FROM customers WHERE tenant_id = 'bench' AND customer_id = 'pgb-' || :c::bigint;

BEGIN;

INSERT INTO idempotency_keys (tenant_id, idem_key, fingerprint, created_at) VALUES ('bench', 'pgb-use-' || :client_id::bigint || '-' || :k::bigint, 'f3a1c0de5b7e9d2468ace13579bdf02468ace13579bdf02468ace13579bdf024', :now::bigint) ON CONFLICT (tenant_id, idem_key) DO NOTHING;

WITH account AS ( UPDATE credit_accounts SET balance = balance - 1, spent_today = CASE WHEN spent_day = :day::bigint THEN spent_today + 1 ELSE 1 END, spent_day = :day::bigint, version = version + 1, updated_at = :now::bigint WHERE tenant_id = 'bench' AND customer_id = 'pgb-' || :c::bigint AND balance - reserved >= 1 AND (spent_day <> :day::bigint OR spent_today <= 9223372036854775807 - 1) RETURNING balance, reserved, spent_today, version, expiring), used AS ( INSERT INTO credit_uses (tenant_id, use_id, customer_id, kind, feature, units, charged, metadata, quote, policy, policy_hash, balance_after, created_at) SELECT 'bench', 'tx_' || :client_id::bigint || '_' || :k::bigint, 'pgb-' || :c::bigint, 'use', 'api-call', 1, 1, '{"request-id":"lg1763690000-123456"}', '{"total":{"credits":1},"lineItems":[{"description":"1 × api-call at 1 credit(s) per unit","amount":{"credits":1},"quantity":1,"unitPrice":{"credits":1}}],"notes":[]}', 'credit', '4f1b3c2a9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b', account.balance, :now::bigint FROM account) SELECT balance, reserved, spent_today, version, expiring FROM account
\gset

WITH lt AS (INSERT INTO ledger_transactions (tenant_id, transaction_id, kind, customer_id, request_id, created_at) SELECT 'bench', * FROM UNNEST(ARRAY['tx_' || :client_id::bigint || '_' || :k::bigint]::text[], ARRAY['credit.use']::text[], ARRAY['pgb-' || :c::bigint]::text[], ARRAY['req_0192f3a4b5c6d7e8f9a0b1c2d3e4f5a6']::text[], ARRAY[:now::bigint]::bigint[])), lp AS (INSERT INTO ledger_postings (tenant_id, transaction_id, line, account, unit, amount) SELECT 'bench', * FROM UNNEST(ARRAY['tx_' || :client_id::bigint || '_' || :k::bigint, 'tx_' || :client_id::bigint || '_' || :k::bigint]::text[], ARRAY[1, 2]::int2[], ARRAY[E'customer\x3apgb-' || :c::bigint || E'\x3acredits', E'tenant\x3acredits_consumed']::text[], ARRAY['CREDITS', 'CREDITS']::text[], ARRAY[1, -1]::bigint[])), sh AS (INSERT INTO state_history (tenant_id, entity_type, entity_id, from_state, to_state, event, reason, actor, request_id, transaction_id, at) SELECT 'bench', * FROM UNNEST(ARRAY['credit_account']::text[], ARRAY['pgb-' || :c::bigint]::text[], ARRAY['balance=' || (:balance::bigint + 1) || ' reserved=' || :reserved::bigint]::text[], ARRAY['balance=' || :balance::bigint || ' reserved=' || :reserved::bigint]::text[], ARRAY['use']::text[], ARRAY['api-call × 1']::text[], ARRAY[E'api_key\x3abench-1']::text[], ARRAY['req_0192f3a4b5c6d7e8f9a0b1c2d3e4f5a6']::text[], ARRAY['tx_' || :client_id::bigint || '_' || :k::bigint]::text[], ARRAY[:now::bigint]::bigint[])), ob AS (INSERT INTO outbox_events (tenant_id, event_id, type, source, subject, time, data, transaction_id) SELECT 'bench', * FROM UNNEST(ARRAY['evt_' || :client_id::bigint || '_' || :k::bigint]::text[], ARRAY['credit.deducted']::text[], ARRAY['/fluxpay/tenants/bench']::text[], ARRAY['pgb-' || :c::bigint]::text[], ARRAY[:now::bigint]::bigint[], ARRAY['{"available":' || :balance::bigint || ',"balance":' || :balance::bigint || ',"credits":1,"customerId":"pgb-' || :c::bigint || '","feature":"api-call","policy":"credit","policyHash":"4f1b3c2a9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b","transactionId":"tx_0192f3a4b5c6d7e8f9a0b1c2d3e4f5a6","units":1}']::text[], ARRAY['tx_' || :client_id::bigint || '_' || :k::bigint]::text[]) RETURNING id), ou AS (INSERT INTO outbox_unsequenced (tenant_id, id) SELECT 'bench', id FROM ob), ik AS (UPDATE idempotency_keys SET response_status = 201, response_body = convert_to('{"isSuccess": true,"code":"OK","message":"credits used","result":{"transactionId":"tx_0192f3a4b5c6d7e8f9a0b1c2d3e4f5a6","customerId":"pgb-' || :c::bigint || '","feature":"api-call","units":1,"creditsCharged":1,"balance":' || :balance::bigint || ',"reserved":0,"available":' || :balance::bigint || ',"lineItems":[{"description":"1 × api-call at 1 credit(s) per unit","amount":1,"quantity":1}],"pricedBy":{"policy":"credit","kind":"credit","contentHash":"4f1b3c2a9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b","version":1},"createdAt":' || :now::bigint || '}}', 'UTF8') WHERE tenant_id = 'bench' AND idem_key = 'pgb-use-' || :client_id::bigint || '-' || :k::bigint) SELECT 1;

COMMIT;
