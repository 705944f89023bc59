#!/usr/bin/env bash
# End-to-end test of the dashboard in headless Chromium against a real `clutch serve`
# (managed PostgreSQL, operators, API, OsmAnd ingest) started on free ports. Run by
# .ci/run after `cargo test`; needs Debian's `chromium` and Node. Artifacts (screenshots,
# the server log) go to target/e2e/.
set -Eeuo pipefail
cd "$(dirname "$0")"
root=$(cd ../.. && pwd)
clutch=${CLUTCH_BIN:-$root/target/debug/clutch}
chromium=${CHROMIUM:-/usr/bin/chromium}
[ -x "$clutch" ] || { echo "no clutch binary at $clutch: run cargo build first" >&2; exit 1; }
[ -x "$chromium" ] || { echo "no Chromium at $chromium: apt-get install chromium" >&2; exit 1; }
out=$root/target/e2e
mkdir -p "$out"
rm -f "$out/failure.png"  # from an earlier failed run
work=$(mktemp -d)
chmod 755 "$work"
server=""
cleanup() {
  if [ -n "$server" ] && kill -0 "$server" 2>/dev/null; then
    kill -TERM "$server"
    for _ in $(seq 1 60); do kill -0 "$server" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$server" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
http=$(free_port)
osmand=$(free_port)
pg=$(free_port)
cat > "$work/clutch.toml" <<TOML
[http]
port = $http
[ingest]
unknown_devices = "register"
default_tenant = "demo"
[ingest.ports]
teltonika = 0
gt06 = 0
h02 = 0
tk103 = 0
gps103 = 0
gl200 = 0
meitrack = 0
ruptela = 0
freematics = 0
osmand = $osmand
[ingest.mqtt]
port = 0
[store.managed]
port = $pg
TOML

password="e2e-$(date +%s)-secret"
echo "$password" | "$clutch" user add --data-dir "$work/data" --config "$work/clutch.toml" \
  --tenant demo --email fm@example.com --role fleet_manager >/dev/null

"$clutch" serve --data-dir "$work/data" --config "$work/clutch.toml" >"$out/server.log" 2>&1 &
server=$!
for _ in $(seq 1 120); do
  curl -fsS "http://127.0.0.1:$http/health" >/dev/null 2>&1 && break
  kill -0 "$server" 2>/dev/null || { cat "$out/server.log" >&2; exit 1; }
  sleep 0.5
done
curl -fsS "http://127.0.0.1:$http/health" >/dev/null

[ -d node_modules/playwright-core ] || npm ci --no-audit --no-fund
BASE="http://127.0.0.1:$http" OSMAND="http://127.0.0.1:$osmand" EMAIL=fm@example.com PASSWORD="$password" \
  CHROMIUM="$chromium" OUT="$out" node e2e.mjs
