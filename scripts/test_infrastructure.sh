#!/usr/bin/env bash
# Smoke test of a running stack (docker compose or `make run`): the seed's test_infrastructure.sh.
#   scripts/test_infrastructure.sh                       # API on http://127.0.0.1:8000
#   API=http://localhost:8000 FLOWER=http://localhost:5555 PROMETHEUS=http://localhost:9090 scripts/test_infrastructure.sh
# Token: $JEFFREY_TOKEN, else minted with .venv/bin/jeffrey (needs JEFFREY_SECRET_KEY or var/dev-secrets.json).
# Exits non-zero with one clear line at the first failure.
set -uo pipefail
API=${API:-http://127.0.0.1:8000}
FLOWER=${FLOWER:-http://127.0.0.1:5555}
PROMETHEUS=${PROMETHEUS:-}
JEFFREY=${JEFFREY:-$(dirname "$0")/../.venv/bin/jeffrey}
TIMEOUT=${TIMEOUT:-60}

pass() { printf 'ok   %s\n' "$*"; }
fail() { printf 'FAIL %s\n' "$*" >&2; exit 1; }
code() { curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$@"; }

[ "$(code "$API/healthz")" = 200 ] || fail "health: $API/healthz does not answer 200"
pass "health ($API/healthz)"
[ "$(code "$API/readyz")" = 200 ] || fail "readiness: $API/readyz is not 200: $(curl -s --max-time 10 "$API/readyz")"
pass "readiness ($API/readyz)"
# Read the whole body first: with pipefail, `curl | grep -q` fails whenever grep stops reading before
# curl has written everything (curl dies of SIGPIPE), which depends only on timing.
metrics=$(curl -s --max-time 10 "$API/metrics")
grep -q '^jeffrey_' <<<"$metrics" || fail "metrics: no jeffrey_ metric at $API/metrics"
pass "metrics contain jeffrey_*"

TOKEN=${JEFFREY_TOKEN:-}
if [ -z "$TOKEN" ]; then
  TOKEN=$("$JEFFREY" token create --user smoke-test --scope admin --scope memories 2>/dev/null) \
    || fail "token: set JEFFREY_TOKEN or JEFFREY_SECRET_KEY (or run from the project root after make run)"
fi
AUTH="Authorization: Bearer $TOKEN"
body='{"memories": [{"text": "smoke test at the beach, sand and waves"}, {"text": "smoke test: waves and sand at the beach"}, {"text": "smoke test, the beach with sand and waves"}]}'
[ "$(code -X POST -H "$AUTH" -H 'Content-Type: application/json' -d "$body" "$API/api/v1/memories")" = 201 ] \
  || fail "memories: POST /api/v1/memories was refused"
run=$(curl -s --max-time 10 -X POST -H "$AUTH" "$API/api/v1/dream/run?force=true")
status_url=$(printf '%s' "$run" | sed -n 's/.*"status_url":"\([^"]*\)".*/\1/p')
[ -n "$status_url" ] || fail "dream: POST /api/v1/dream/run?force=true answered: $run"
status=""
for _ in $(seq 1 "$TIMEOUT"); do
  status=$(curl -s --max-time 10 -H "$AUTH" "$API$status_url" | sed -n 's/.*"status":"\([a-z]*\)".*/\1/p')
  case "$status" in succeeded) break ;; failed) fail "dream: run failed: $(curl -s -H "$AUTH" "$API$status_url")" ;; esac
  sleep 1
done
[ "$status" = succeeded ] || fail "dream: forced run not finished after ${TIMEOUT}s (status: ${status:-none})"
pass "forced dream run succeeded ($status_url)"

[ "$(code "$FLOWER/healthcheck")" = 200 ] || fail "flower: $FLOWER/healthcheck does not answer 200"
pass "flower ($FLOWER)"
if [ -n "$PROMETHEUS" ]; then
  [ "$(code "$PROMETHEUS/-/healthy")" = 200 ] || fail "prometheus: $PROMETHEUS/-/healthy does not answer 200"
  pass "prometheus ($PROMETHEUS)"
else
  printf 'skip prometheus (set PROMETHEUS=http://host:9090; `make run` has none, compose does)\n'
fi
printf 'infrastructure OK\n'
