#!/usr/bin/env bash
# Property-based fuzzing of the fleet API with schemathesis (PyPI) against a RUNNING
# `clutch serve`, driven by the server's own /api/openapi.json. Finds 5xx answers,
# responses that break the documented schema, and undocumented status codes.
#
#   python3 -m venv /tmp/st && /tmp/st/bin/pip install schemathesis
#   echo 'a-strong-admin-pass' | clutch user add --data-dir D --tenant Acme --email admin@acme.example.com --role admin
#   clutch serve --data-dir D &
#   BASE=http://127.0.0.1:8080 EMAIL=admin@acme.example.com PASSWORD=a-strong-admin-pass tests/schemathesis.sh
#
# Env: BASE (server), EMAIL/PASSWORD (an admin, to reach every route), ST (schemathesis
# binary, default `st` on PATH), EXAMPLES (per operation, default 50), CHECKS (default
# not_a_server_error; `all` for every check). The live stream routes are excluded (they
# never end). Exit status is schemathesis's: non-zero when a check failed.
set -euo pipefail
BASE=${BASE:-http://127.0.0.1:8080}
ST=${ST:-st}
: "${EMAIL:?set EMAIL to an admin user}" "${PASSWORD:?set PASSWORD}"
# The login route is rate-limited per client (1/s, burst 10): after an earlier run, wait.
token=
for _ in $(seq 1 30); do
  token=$(curl -sf -X POST "$BASE/api/v1/auth/login" -H 'content-type: application/json' \
    -d "{\"email\": \"$EMAIL\", \"password\": \"$PASSWORD\"}" \
    | python3 -c 'import sys, json; print(json.load(sys.stdin)["access_token"])' 2>/dev/null) && break
  sleep 1
done
[ -n "$token" ] || { echo "cannot log in as $EMAIL at $BASE" >&2; exit 2; }
exec "$ST" run "$BASE/api/openapi.json" \
  --url "$BASE" \
  -H "Authorization: Bearer $token" \
  --checks "${CHECKS:-not_a_server_error}" \
  --max-examples "${EXAMPLES:-50}" \
  --exclude-path-regex '^/api/v1/stream' \
  --exclude-path '/api/v1/me/password' \
  --exclude-path '/api/v1/auth/logout' \
  "$@"
