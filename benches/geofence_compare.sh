#!/usr/bin/env bash
# Point -> containing fences, side by side on the same data in the same run:
#   ours      geofence (R-tree + banded polygons), `bench_points` example, 1 thread
#   shapely   shapely 2 STRtree (PyPI), best of two query styles
#   postgis   PostGIS 3 ST_Contains with a GiST index (Debian postgresql-15-postgis-3),
#             a bulk join in a throwaway cluster on a Unix socket
#
# Data: 10k star polygons (20-500 vertices) and 1M points from a fixed seed, written
# to a temp dir as GeoJSON / WKT / CSV. Every tool must report the same pair count.
#
# Usage: benches/geofence_compare.sh            (installs what it needs; run as root or
#        FENCES=1000 POINTS=100000 PROFILE=dev   with sudo-free apt, i.e. on our machines)
# Not a CI test: it installs packages and takes minutes.
set -euo pipefail

FENCES=${FENCES:-10000}
POINTS=${POINTS:-1000000}
PROFILE=${PROFILE:-release}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/geofence-compare.XXXXXX)
chmod 755 "$work"
log() { printf '\n== %s\n' "$*" >&2; }

# --- ours -------------------------------------------------------------------------
log "building bench_points ($PROFILE)"
if [ "$PROFILE" = release ]; then
  cargo build --release -q -p geofence --example bench_points --manifest-path "$root/Cargo.toml"
  bin="$root/target/release/examples/bench_points"
else
  cargo build -q -p geofence --example bench_points --manifest-path "$root/Cargo.toml"
  bin="$root/target/debug/examples/bench_points"
fi
log "generating $FENCES fences, $POINTS points in $work"
"$bin" gen "$work" "$FENCES" "$POINTS" | tee "$work/data.json"
chmod -R a+rX "$work"
log "geofence"
"$bin" run "$work" 1 | tee "$work/ours.json"
"$bin" run "$work" 2 | tee "$work/ours2.json"

# --- shapely ----------------------------------------------------------------------
log "shapely 2"
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q "shapely>=2,<3" numpy
# Old OpenBLAS workarounds slow a current numpy; shapely's work is GEOS, not BLAS, but
# drop them for this one process so numpy runs as it would elsewhere.
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$work/venv/bin/python" - "$work" <<'PY' | tee "$work/shapely.json"
import json, sys, time
import numpy as np
import shapely

work = sys.argv[1]
ids, wkts = [], []
with open(f"{work}/fences.tsv") as f:
    for line in f:
        i, w = line.rstrip("\n").split("\t")
        ids.append(int(i)); wkts.append(w)
polys = shapely.from_wkt(wkts)
xy = np.loadtxt(f"{work}/points.csv", delimiter=",")
pts = shapely.points(xy)

t = time.perf_counter()
tree = shapely.STRtree(polys)
tree.query(pts[:1])  # STRtree builds lazily on first query
build_s = time.perf_counter() - t

def best(fn, n=3):
    r, b = None, float("inf")
    for _ in range(n):
        t = time.perf_counter(); r = fn(); b = min(b, time.perf_counter() - t)
    return r, b

# 1. The documented way: a predicate query (GEOS tests each candidate pair).
pairs_a, qa = best(lambda: tree.query(pts, predicate="within").shape[1], n=1)
# 2. Bounding-box candidates, then prepared polygons and contains_xy (the fast path).
shapely.prepare(polys)
def bbox_then_prepared():
    cand = tree.query(pts)
    m = shapely.contains_xy(polys[cand[1]], xy[cand[0], 0], xy[cand[0], 1])
    return int(m.sum())
pairs_b, qb = best(bbox_then_prepared)
assert pairs_a == pairs_b, (pairs_a, pairs_b)
q = min(qa, qb)
print(json.dumps({"tool": "shapely", "version": shapely.__version__, "geos": shapely.geos_version_string,
                  "points": len(pts), "pairs": int(pairs_b), "build_s": round(build_s, 3),
                  "query_within_s": round(qa, 3), "query_bbox_prepared_s": round(qb, 3),
                  "query_s": round(q, 3), "points_per_s": round(len(pts) / q)}))
PY

# --- PostGIS ----------------------------------------------------------------------
log "PostGIS"
pgbin=/usr/lib/postgresql/15/bin
if [ ! -x "$pgbin/initdb" ] || ! dpkg -s postgresql-15-postgis-3 >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15-postgis-3 >/dev/null
fi
# initdb refuses to run as root: use an unprivileged account.
as=()
if [ "$(id -u)" = 0 ]; then
  id gfbench >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin gfbench
  as=(runuser -u gfbench --)
fi
pgrun="$work/pg"          # data dir, socket dir and log, owned by the server's account
pgdata="$pgrun/data"
mkdir -p "$pgdata" "$pgrun/sock"
[ "$(id -u)" = 0 ] && chown -R gfbench "$pgrun"
# A free port number (it only names the socket: TCP is off).
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"${as[@]}" "$pgbin/initdb" -D "$pgdata" -U postgres -A trust >/dev/null
"${as[@]}" "$pgbin/pg_ctl" -D "$pgdata" -l "$pgrun/server.log" -w start \
  -o "-p $port -k $pgrun/sock -c listen_addresses='' -c shared_buffers=1GB -c work_mem=256MB -c max_wal_size=4GB -c fsync=off" >/dev/null
trap '"${as[@]}" "$pgbin/pg_ctl" -D "$pgdata" -m fast stop >/dev/null 2>&1 || true' EXIT
psql=(psql -X -q -v ON_ERROR_STOP=1 -h "$pgrun/sock" -p "$port" -U postgres -d postgres)
"${psql[@]}" <<SQL
CREATE EXTENSION postgis;
CREATE TABLE fences_raw (id int, wkt text);
\copy fences_raw FROM '$work/fences.tsv'
CREATE TABLE fences AS SELECT id, ST_GeomFromText(wkt)::geometry(Polygon) AS geom FROM fences_raw;
CREATE INDEX fences_gist ON fences USING gist (geom);
CREATE TABLE pts_raw (lon float8, lat float8);
\copy pts_raw FROM '$work/points.csv' WITH (FORMAT csv)
CREATE TABLE pts AS SELECT ST_MakePoint(lon, lat)::geometry(Point) AS geom FROM pts_raw;
VACUUM ANALYZE fences; VACUUM ANALYZE pts;
SQL
pg_run() { # workers
  local out t0 t1
  t0=$(date +%s.%N)
  out=$("${psql[@]}" -At -c "SET max_parallel_workers_per_gather = $1; SELECT count(*) FROM pts p JOIN fences f ON ST_Contains(f.geom, p.geom);")
  t1=$(date +%s.%N)
  python3 -c "import json,sys; s=$t1-$t0; print(json.dumps({'tool':'postgis','workers':$1,'points':$POINTS,'pairs':int('$out'.split()[-1]),'query_s':round(s,2),'points_per_s':round($POINTS/s)}))"
}
"${psql[@]}" -At -c "SET max_parallel_workers_per_gather = 0; EXPLAIN SELECT count(*) FROM pts p JOIN fences f ON ST_Contains(f.geom, p.geom);" >&2
pg_run 0 | tee "$work/postgis.json"
pg_run 2 | tee "$work/postgis2.json"
"${psql[@]}" -At -c "SELECT postgis_full_version();" >&2

# --- summary ----------------------------------------------------------------------
log "summary ($(nproc) cores)"
python3 - "$work" <<'PY'
import json, sys
w = sys.argv[1]
r = {k: json.load(open(f"{w}/{k}.json")) for k in ["ours", "ours2", "shapely", "postgis", "postgis2"]}
pairs = {k: v["pairs"] for k, v in r.items()}
print("pairs per tool:", pairs)
assert len(set(pairs.values())) == 1, "tools disagree on the answer"
o = r["ours"]["points_per_s"]
print(f"| tool | threads | points/s | ours (1 thread) is |")
print(f"|---|---|---|---|")
for k, label, th in [("ours", "geofence", 1), ("ours2", "geofence", 2), ("shapely", "shapely 2 STRtree", 1),
                     ("postgis", "PostGIS 3 GiST ST_Contains", 1), ("postgis2", "PostGIS 3 GiST ST_Contains", "1+2 workers")]:
    p = r[k]["points_per_s"]
    print(f"| {label} | {th} | {p:,.0f} | {o / p:.1f}x |")
PY
echo "(raw results in $work)" >&2
