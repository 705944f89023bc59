//! Load benchmark of the fleet API (issue 8, "Performance"). Not run in CI: it takes a few
//! minutes and a release build. Run it with
//!
//! ```text
//! cargo run --release -p api --example loadbench
//! ```
//!
//! It starts a throwaway PostgreSQL cluster (`store::testing`), serves the real router with
//! the real store on a free port, seeds one tenant with 10 000 vehicles (one device each, a
//! latest fix each) and one vehicle with 86 400 fixes at 1 Hz over a day, then drives each
//! scenario with `oha` at a fixed rate (open loop, `--latency-correction`, so a stall counts
//! against every request that should have been sent during it rather than being hidden by
//! coordinated omission). Then it seeds 500 vehicles × 365 days of rollups and times
//! the hourly precompute job over that year, then `GET /api/v1/reports/daily` for the year:
//! in a zone the job did not cover (days computed on request), after the job, and warm.
//!
//! Env: `LOADBENCH_SECONDS` (per scenario, default 15), `LOADBENCH_RATE` (default 2000).
//! Needs `oha` on PATH (`cargo install oha`).

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use api::auth::Role;
use api::{ApiConfig, AppState};
use serde_json::Value;
use stream::{BusConfig, InProcessBus};

const PASSWORD: &str = "correct horse battery";
const FLEET: i64 = 10_000;
const DAY_S: i64 = 86_400;
const REPORT_VEHICLES: i64 = 500;

fn fix(device_id: i64, time: chrono::DateTime<chrono::Utc>, i: i64) -> store::PositionRow {
    store::PositionRow {
        device_id,
        fix_time: time,
        server_time: time,
        lat: 52.0 + (i % 10_000) as f64 * 1e-4,
        lon: 13.0 + (i % 7_000) as f64 * 1e-4,
        altitude: Some(40.0),
        speed_kmh: Some(48.0),
        course: Some(90.0),
        satellites: Some(10),
        hdop: Some(0.8),
        valid: true,
        ignition: Some(true),
        motion: Some(true),
        odometer_m: Some(1_000_000.0 + i as f64 * 13.0),
        fuel_level_pct: None,
        fuel_used_l: None,
        rpm: None,
        coolant_c: None,
        power_v: None,
        battery_v: None,
        event: None,
        alarms: None,
        dtcs: None,
        attributes: None,
    }
}

struct Oha {
    p50: f64,
    p99: f64,
    max: f64,
    rps: f64,
    ok: f64,
    bytes_per_req: f64,
    statuses: String,
}

/// One open-loop run of `oha` at `rate` req/s for `secs`.
fn oha(url: &str, headers: &[String], rate: u32, secs: u32, conns: u32) -> Oha {
    let mut cmd = Command::new("oha");
    cmd.args(["--no-tui", "--output-format", "json", "--latency-correction"]);
    cmd.args([
        "-q",
        &rate.to_string(),
        "-z",
        &format!("{secs}s"),
        "-c",
        &conns.to_string(),
    ]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    cmd.arg(url);
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run oha ({e}): install it with `cargo install oha`"));
    assert!(
        out.status.success(),
        "oha failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("oha JSON");
    let ms = |p: &str| v["latencyPercentiles"][p].as_f64().unwrap_or(f64::NAN) * 1000.0;
    Oha {
        p50: ms("p50"),
        p99: ms("p99"),
        max: v["summary"]["slowest"].as_f64().unwrap_or(f64::NAN) * 1000.0,
        rps: v["summary"]["requestsPerSec"].as_f64().unwrap_or(f64::NAN),
        ok: v["summary"]["successRate"].as_f64().unwrap_or(f64::NAN),
        bytes_per_req: v["summary"]["sizePerRequest"].as_f64().unwrap_or(f64::NAN),
        statuses: v["statusCodeDistribution"].to_string(),
    }
}

fn report(name: &str, r: &Oha) {
    println!(
        "| {name} | {:.0} | {:.2} | {:.2} | {:.2} | {:.0} | {:.3} {} |",
        r.rps, r.p50, r.p99, r.max, r.bytes_per_req, r.ok, r.statuses
    );
}

fn cpu_seconds() -> f64 {
    // utime + stime of this process (server, store client, seeding), from /proc.
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let f: Vec<&str> = s.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let tick = 100.0;
    (f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0))
        / tick
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let secs: u32 = std::env::var("LOADBENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    let rate: u32 = std::env::var("LOADBENCH_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    if Command::new("oha").arg("--version").output().is_err() {
        anyhow::bail!("oha not found on PATH: install it with `cargo install oha`");
    }
    println!("load average at start: {}", loadavg());

    let db = store::testing::test_db().await;
    // The pool `clutch serve` gets by default ([store] max_connections = 10).
    let pool = store::connect(&db.url, 10).await?;
    let writer = store::Writer::spawn(pool.clone(), store::WriterConfig::default());
    let bus = Arc::new(InProcessBus::new(
        &BusConfig::default(),
        Arc::new(ingest::StoreSink::new(writer.clone())),
    ));
    let config = ApiConfig {
        rate_per_second: 1_000_000,
        rate_burst: 1_000_000,
        access_ttl_s: 3600,
        ..ApiConfig::default()
    };
    let state = AppState::new(
        pool.clone(),
        config,
        b"loadbench-secret-loadbench-secret-0123456789",
        Some(bus.clone() as api::DeviceBus),
    );
    let app = api::router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    let base = format!("http://{addr}/api/v1");

    // Seed: a tenant, its fleet manager, 10 000 vehicles with one device each.
    let t0 = Instant::now();
    let tenant = api::users::ensure_tenant(&pool, "Bench").await?;
    api::users::create_user_in(
        &pool,
        tenant,
        "fm@bench.example.com",
        "",
        Role::FleetManager,
        Some(PASSWORD.into()),
    )
    .await
    .map_err(|e| anyhow::anyhow!("cannot create the user: {e:?}"))?;
    sqlx::query(
        "WITH v AS (INSERT INTO vehicles (tenant_id, name) SELECT $1, 'truck ' || g FROM generate_series(1, $2) g \
         RETURNING id, name) \
         INSERT INTO devices (tenant_id, identifier, protocol, name, vehicle_id) \
         SELECT $1, '35' || lpad(id::text, 13, '0'), 'teltonika', name, id FROM v",
    )
    .bind(tenant)
    .bind(FLEET)
    .execute(&pool)
    .await?;
    let devices: Vec<(i64, i64)> =
        sqlx::query_as("SELECT id, vehicle_id FROM devices WHERE tenant_id = $1 ORDER BY id")
            .bind(tenant)
            .fetch_all(&pool)
            .await?;
    let day0 = chrono::DateTime::parse_from_rfc3339("2026-11-20T00:00:00Z")?.to_utc();
    // One day at 1 Hz for the first vehicle, through the real COPY writer.
    let (track_dev, track_veh) = devices[0];
    for chunk in (0..DAY_S).collect::<Vec<_>>().chunks(5_000) {
        let rows: Vec<_> = chunk
            .iter()
            .map(|&i| fix(track_dev, day0 + chrono::Duration::seconds(i), i))
            .collect();
        writer.submit(rows).await?.await?;
    }
    // A latest fix for every other device (the writer upserts device_last_position).
    for chunk in devices[1..].chunks(2_000) {
        let rows: Vec<_> = chunk
            .iter()
            .map(|&(d, _)| fix(d, day0 + chrono::Duration::seconds(DAY_S - 10), d))
            .collect();
        writer.submit(rows).await?.await?;
    }
    sqlx::query("ANALYZE").execute(&pool).await?;
    println!(
        "seeded {FLEET} vehicles and {DAY_S} fixes in {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    let login: Value = reqwest_like_post(
        &format!("{base}/auth/login"),
        &format!(r#"{{"email":"fm@bench.example.com","password":"{PASSWORD}"}}"#),
    )
    .await?;
    let token = login["access_token"].as_str().expect("access token").to_string();
    let auth = format!("Authorization: Bearer {token}");

    // Sizes and the ETag of the whole-fleet answer, for the revalidation scenario.
    let fleet = get(
        &format!("{base}/positions/latest"),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await?;
    let fleet_gz = get(
        &format!("{base}/positions/latest"),
        &[
            ("authorization", &format!("Bearer {token}")),
            ("accept-encoding", "gzip"),
        ],
    )
    .await?;
    let etag_gz = fleet_gz.etag.clone().expect("etag");
    println!(
        "whole fleet latest: {} bytes JSON, {} bytes gzipped (at {rate} req/s: {:.1} GB/s plain, {:.0} MB/s gzipped)",
        fleet.len,
        fleet_gz.len,
        fleet.len as f64 * rate as f64 / 1e9,
        fleet_gz.len as f64 * rate as f64 / 1e6
    );

    let conns = 50;
    println!("\n{secs} s per scenario, open loop, {conns} connections; latencies in ms\n");
    println!("| scenario | achieved req/s | p50 | p99 | max | bytes/req | success, statuses |");
    println!("|---|---|---|---|---|---|---|");
    let cpu0 = cpu_seconds();
    let mid = track_veh + FLEET / 2;
    // A group of that one vehicle: `?group_id=` always takes the per-request database path,
    // the peer the cached path is measured against in the same run.
    let group: i64 = sqlx::query_scalar("INSERT INTO vehicle_groups (tenant_id, name) VALUES ($1, 'one') RETURNING id")
        .bind(tenant)
        .fetch_one(&pool)
        .await?;
    sqlx::query("INSERT INTO vehicle_group_members (group_id, vehicle_id) VALUES ($1, $2)")
        .bind(group)
        .bind(mid)
        .execute(&pool)
        .await?;
    let r = oha(
        &format!("{base}/positions/latest?vehicle_id={mid}"),
        std::slice::from_ref(&auth),
        rate,
        secs,
        conns,
    );
    report("latest, one vehicle (`?vehicle_id=`)", &r);
    let cpu1 = cpu_seconds();
    let r = oha(
        &format!("{base}/positions/latest?group_id={group}"),
        std::slice::from_ref(&auth),
        rate,
        secs,
        conns,
    );
    report("latest, one-vehicle group (`?group_id=`, database path)", &r);
    let cpu1b = cpu_seconds();
    let r = oha(
        &format!("{base}/positions/latest"),
        &[
            auth.clone(),
            "Accept-Encoding: gzip".into(),
            format!("If-None-Match: {etag_gz}"),
        ],
        rate,
        secs,
        conns,
    );
    report("latest, whole fleet, ETag revalidation (304)", &r);
    let cpu2 = cpu_seconds();
    let whole_rate = 50;
    let r = oha(
        &format!("{base}/positions/latest"),
        &[auth.clone(), "Accept-Encoding: gzip".into()],
        whole_rate,
        secs,
        conns,
    );
    report(&format!("latest, whole fleet, gzip, at {whole_rate} req/s"), &r);
    let cpu3 = cpu_seconds();

    let from = "2026-11-20T00:00:00Z";
    let to = "2026-11-21T00:00:00Z";
    let hist = format!("{base}/positions/history?vehicle_id={track_veh}&from={from}&to={to}");
    let probe = get(
        &format!("{hist}&downsample_s=60"),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await?;
    let full = get(&hist, &[("authorization", &format!("Bearer {token}"))]).await?;
    println!(
        "\n(history: {} bytes downsampled to 1/min, {} bytes full day as JSON)\n",
        probe.len, full.len
    );
    for (name, q, r) in [
        ("history 1 day, downsample 60 s, JSON", "&downsample_s=60", 100),
        ("history 1 day, downsample 60 s, JSON", "&downsample_s=60", 400),
        (
            "history 1 day, downsample 60 s, GeoJSON",
            "&downsample_s=60&format=geojson",
            400,
        ),
        ("history 1 day, full 86 400 fixes, JSON, gzip", "", 2),
        ("history 1 day, full 86 400 fixes, CSV", "&format=csv", 2),
    ] {
        let res = oha(
            &format!("{hist}{q}"),
            &[auth.clone(), "Accept-Encoding: gzip".into()],
            r,
            secs,
            conns.min(r * 2),
        );
        report(&format!("{name}, at {r} req/s"), &res);
    }
    println!(
        "\nserver CPU seconds per 1000 requests (this process; oha is separate): \
         one vehicle {:.2}, group of one {:.2}, 304 {:.2}, whole fleet gzip {:.2}",
        (cpu1 - cpu0) * 1000.0 / (rate as f64 * secs as f64),
        (cpu1b - cpu1) * 1000.0 / (rate as f64 * secs as f64),
        (cpu2 - cpu1b) * 1000.0 / (rate as f64 * secs as f64),
        (cpu3 - cpu2) * 1000.0 / (whole_rate as f64 * secs as f64),
    );

    year_report(&pool, &base).await?;
    println!("load average at end: {}", loadavg());
    Ok(())
}

/// 500 vehicles × 365 days: 8 hourly rollups and 3 trips a day each, then the year's report.
async fn year_report(pool: &sqlx::PgPool, base: &str) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let tenant = api::users::ensure_tenant(pool, "YearFleet").await?;
    api::users::create_user_in(
        pool,
        tenant,
        "fm@year.example.com",
        "",
        Role::FleetManager,
        Some(PASSWORD.into()),
    )
    .await
    .map_err(|e| anyhow::anyhow!("cannot create the user: {e:?}"))?;
    sqlx::query(
        "WITH v AS (INSERT INTO vehicles (tenant_id, name) SELECT $1, 'van ' || g FROM generate_series(1, $2) g \
         RETURNING id, name) \
         INSERT INTO devices (tenant_id, identifier, protocol, name, vehicle_id) \
         SELECT $1, '86' || lpad(id::text, 13, '0'), 'gt06', name, id FROM v",
    )
    .bind(tenant)
    .bind(REPORT_VEHICLES)
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO positions_hourly (device_id, bucket, samples, distance_m, max_speed_kmh, avg_speed_kmh, \
         fuel_used_l, first_fix, last_fix) \
         SELECT d.id, b, 3600, 40000, 90, 45, 4.2, b, b + interval '59 minutes 59 seconds' \
         FROM devices d, generate_series(timestamptz '2025-01-01', timestamptz '2025-12-31', interval '1 day') day, \
              LATERAL (SELECT day + h * interval '1 hour' AS b FROM generate_series(7, 14) h) hrs \
         WHERE d.tenant_id = $1",
    )
    .bind(tenant)
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO trips (device_id, start_time, end_time, distance_m, max_speed_kmh, avg_speed_kmh, \
         fuel_used_l, attributes) \
         SELECT d.id, day + s * interval '1 hour', day + s * interval '1 hour' + interval '50 minutes', 35000, 90, \
                45, 3.5, jsonb_build_object('duration_s', 3000, 'idle_s', 300) \
         FROM devices d, generate_series(timestamptz '2025-01-01', timestamptz '2025-12-31', interval '1 day') day, \
              generate_series(8, 14, 3) s \
         WHERE d.tenant_id = $1",
    )
    .bind(tenant)
    .execute(pool)
    .await?;
    sqlx::query("ANALYZE").execute(pool).await?;
    println!(
        "\nseeded {REPORT_VEHICLES} vehicles × 365 days (1.46 M hourly rollups, 548 k trips) in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let login = reqwest_like_post(
        &format!("{base}/auth/login"),
        &format!(r#"{{"email":"fm@year.example.com","password":"{PASSWORD}"}}"#),
    )
    .await?;
    let bearer = format!("Bearer {}", login["access_token"].as_str().expect("token"));
    // What `clutch serve` does hourly: settled days computed ahead, in the tenant's zone
    // (UTC here), back to the seeded year.
    let t = Instant::now();
    let back =
        (chrono::Utc::now().date_naive() - chrono::NaiveDate::from_ymd_opt(2025, 1, 1).expect("date")).num_days();
    let n = api::reports::precompute_settled(pool, back)
        .await
        .map_err(|e| anyhow::anyhow!("precompute: {e:?}"))?;
    println!(
        "nightly job: {n} tenant-days computed ahead in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let url = format!("{base}/reports/daily?from=2025-01-01&to=2025-12-31");
    for (label, extra) in [
        (
            "cold in a zone the job does not cover (computes 365 days)",
            "&tz=Europe/Berlin",
        ),
        ("first request after the job", "&tz=UTC"),
        ("warm (settled days)", "&tz=UTC"),
        ("warm", "&tz=UTC"),
        ("warm, CSV", "&tz=UTC&format=csv"),
        ("warm, gzip", "&tz=UTC"),
    ] {
        let mut headers = vec![("authorization", bearer.as_str())];
        if label.contains("gzip") {
            headers.push(("accept-encoding", "gzip"));
        }
        let t = Instant::now();
        let r = get(&format!("{url}{extra}"), &headers).await?;
        println!(
            "year report {label}: HTTP {} in {:.0} ms, {} bytes",
            r.status,
            t.elapsed().as_secs_f64() * 1000.0,
            r.len
        );
    }
    Ok(())
}

struct Got {
    status: u16,
    len: usize,
    etag: Option<String>,
}

/// A minimal HTTP/1.1 client over hyper for the few set-up calls (oha does the load).
async fn get(url: &str, headers: &[(&str, &str)]) -> anyhow::Result<Got> {
    request("GET", url, headers, None).await.map(|(g, _)| g)
}

async fn reqwest_like_post(url: &str, body: &str) -> anyhow::Result<Value> {
    let (g, bytes) = request("POST", url, &[("content-type", "application/json")], Some(body)).await?;
    anyhow::ensure!(g.status == 200, "POST {url}: HTTP {}", g.status);
    Ok(serde_json::from_slice(&bytes)?)
}

async fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> anyhow::Result<(Got, Vec<u8>)> {
    use http_body_util::{BodyExt, Full};
    let uri: hyper::Uri = url.parse()?;
    let host = format!("{}:{}", uri.host().unwrap_or("127.0.0.1"), uri.port_u16().unwrap_or(80));
    let stream = tokio::net::TcpStream::connect(&host).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut b = hyper::Request::builder()
        .method(method)
        .uri(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
    b = b.header("host", host);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(Full::new(axum::body::Bytes::from(body.unwrap_or("").to_string())))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let etag = resp
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = resp.into_body().collect().await?.to_bytes().to_vec();
    Ok((
        Got {
            status,
            len: bytes.len(),
            etag,
        },
        bytes,
    ))
}
