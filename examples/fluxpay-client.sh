#!/usr/bin/env bash
# A FluxPay tenant API client that signs its requests (curl + openssl).
#
#   export FLUXPAY_URL=http://127.0.0.1:8080
#   export FLUXPAY_API_KEY=fp_test_acme_0123456789abcdef     # examples/tenants.yaml
#   export FLUXPAY_SIGNING_SECRET=acme-dev-secret            # = ACME_SIGNING_SECRET of the server
#   examples/fluxpay-client.sh PUT  /api/v1/customers/cus_1 '{"attributes":{"tier":"gold"}}'
#   examples/fluxpay-client.sh POST /api/v1/credits/charge '{"customerId":"cus_1","credits":100,"reason":"welcome"}'
#   examples/fluxpay-client.sh POST /api/v1/credits/use '{"customerId":"cus_1","feature":"image-render","units":3,"metadata":{"request-id":"r-1"}}' my-key-1
#   examples/fluxpay-client.sh GET  '/api/v1/credits/balance?customerId=cus_1'
#
# Arguments: METHOD PATH [BODY] [IDEMPOTENCY_KEY]. A POST without a key gets a
# fresh one (printed on stderr): reuse it to retry safely.
#
# The signature (README.md, "Signing"): lower-case hex HMAC-SHA256 over
#   "<unix seconds>.<METHOD>.<path with query>.<raw body>"
# sent as X-FluxPay-Signature: v1=<hex>, with X-FluxPay-Timestamp: <unix seconds>.
# The body is sent byte for byte as signed (--data-binary).
set -euo pipefail

if [[ $# -lt 2 ]]; then
    sed -n '2,20p' "$0" >&2
    exit 2
fi
method="$1"
path="$2"
body="${3:-}"
key="${4:-}"
: "${FLUXPAY_URL:=http://127.0.0.1:8080}"
: "${FLUXPAY_API_KEY:?set FLUXPAY_API_KEY}"

args=(-sS -X "$method" "$FLUXPAY_URL$path" -H "Authorization: Bearer $FLUXPAY_API_KEY")
if [[ -n "${FLUXPAY_SIGNING_SECRET:-}" ]]; then
    ts="$(date +%s)"
    signature="$(printf '%s.%s.%s.%s' "$ts" "$method" "$path" "$body" \
        | openssl dgst -sha256 -hmac "$FLUXPAY_SIGNING_SECRET" -hex | sed 's/^.*= //')"
    args+=(-H "X-FluxPay-Timestamp: $ts" -H "X-FluxPay-Signature: v1=$signature")
fi
if [[ -n "$body" ]]; then
    args+=(-H "Content-Type: application/json" --data-binary "$body")
fi
if [[ "$method" == "POST" && -z "$key" ]]; then
    key="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
    echo "Idempotency-Key: $key" >&2
fi
if [[ -n "$key" ]]; then
    args+=(-H "Idempotency-Key: $key")
fi
curl "${args[@]}"
echo
