# shellcheck shell=bash
# Shared by the service scripts: cleanups that run, last registered first,
# when the calling shell exits (one EXIT trap for every service).

FLUXPAY_AT_EXIT=()

fluxpay_run_at_exit() {
    local i
    for ((i = ${#FLUXPAY_AT_EXIT[@]} - 1; i >= 0; i--)); do
        "${FLUXPAY_AT_EXIT[$i]}" || true
    done
}

# Whether something accepts connections on 127.0.0.1:$1.
fluxpay_port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# fluxpay_at_exit FUNCTION: runs FUNCTION when the shell exits.
fluxpay_at_exit() {
    FLUXPAY_AT_EXIT+=("$1")
    trap fluxpay_run_at_exit EXIT
}
