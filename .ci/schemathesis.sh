#!/usr/bin/env bash
# Fuzzes the real API with schemathesis against the committed OpenAPI
# document (docs/openapi.json), on a SQLite and on a PostgreSQL control DB:
# all checks, the examples, coverage, fuzzing and stateful phases, a fixed
# seed and a bounded number of examples so the run takes minutes. The
# operator routes run with the operator token; the tenant routes
# (/v1/tenant…) with a tenant key. Any failure fails the script.
#
# Usage: .ci/schemathesis.sh [sqlite|postgres]...   (default: both)
# Env:   TENANTPLANE_BIN (default target/debug/tenantplane, built if missing),
#        FUZZ_EXAMPLES (default 25), FUZZ_SEED (default 1).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN="${TENANTPLANE_BIN:-target/debug/tenantplane}"
if [ ! -x "$BIN" ]; then
    cargo build -j2 --bin tenantplane
fi
python3 -c 'import schemathesis' 2>/dev/null ||
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore 'schemathesis==4.32.5'
EXAMPLES="${FUZZ_EXAMPLES:-25}"
SEED="${FUZZ_SEED:-1}"
TOKEN="tp_op_fuzz_$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
REPORTS="target/schemathesis"
mkdir -p "$REPORTS"

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# st with the common settings; $1 = report name, $2 = the credential, rest = filters.
fuzz() {
    local name="$1" credential="$2"
    shift 2
    st --config-file .ci/schemathesis.toml run docs/openapi.json \
        --url "http://127.0.0.1:$PORT" \
        -H "Authorization: Bearer $credential" \
        --checks all \
        --phases examples,coverage,fuzzing,stateful \
        --max-examples "$EXAMPLES" \
        --seed "$SEED" \
        --request-timeout 15 \
        --suppress-health-check all \
        --report junit --report-junit-path "$REPORTS/$name.xml" \
        "$@"
}

run_backend() {
    local backend="$1" dir db_name="" control_db
    dir="$(mktemp -d)"
    if [ "$backend" = postgres ]; then
        db_name="tp_fuzz_$$"
        psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $db_name" postgres
        control_db="postgres://postgres@127.0.0.1:5432/$db_name"
    else
        control_db="sqlite://$dir/control.db"
    fi
    PORT="$(free_port)"
    echo "== schemathesis: $backend control DB, http://127.0.0.1:$PORT, $EXAMPLES examples per operation, seed $SEED"
    TENANTPLANE_DATA_DIR="$dir" TENANTPLANE_CONTROL_DB="$control_db" \
        TENANTPLANE_LISTEN="127.0.0.1:$PORT" TENANTPLANE_OPERATOR_TOKEN="$TOKEN" \
        TENANTPLANE_TENANT_RATE_PER_S=100000 TENANTPLANE_LOG="warn,actix_http::h1::dispatcher=off" \
        "$BIN" serve >"$dir/serve.log" 2>&1 &
    local pid=$!
    cleanup_backend() {
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        if [ -n "$db_name" ]; then
            psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $db_name WITH (FORCE)" postgres || true
        fi
        rm -rf "$dir"
    }
    trap cleanup_backend RETURN
    for _ in $(seq 1 100); do
        curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
        sleep 0.2
    done
    curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null

    # A tenant and its key for the tenant routes.
    local tenant key
    tenant="$(curl -fsS -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
        -d '{"slug":"fuzz-shop","name":"Fuzz shop"}' "http://127.0.0.1:$PORT/v1/tenants" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')"
    key="$(curl -fsS -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
        -d '{"name":"fuzz"}' "http://127.0.0.1:$PORT/v1/tenants/$tenant/keys" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')"

    local status=0
    fuzz "$backend-operator" "$TOKEN" --exclude-path-regex '^/v1/tenant(/|$)' || status=1
    fuzz "$backend-tenant" "$key" --include-path-regex '^/v1/tenant(/|$)' || status=1
    if grep -q ' ERROR ' "$dir/serve.log"; then
        echo "the server logged errors under the fuzzer:"
        grep ' ERROR ' "$dir/serve.log" | head -20
        status=1
    fi
    return "$status"
}

backends=("$@")
[ "${#backends[@]}" -gt 0 ] || backends=(sqlite postgres)
overall=0
for b in "${backends[@]}"; do
    run_backend "$b" || overall=1
done
exit "$overall"
