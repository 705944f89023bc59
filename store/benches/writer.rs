//! Writer throughput vs a raw binary COPY of the same rows into the same schema, in one
//! run on one throwaway cluster with production durability (fsync and synchronous_commit
//! on). Also measures the staging + `ON CONFLICT` scheme the writer uses only for resends.
//!
//! `cargo bench -p store --bench writer` (env: BENCH_ROWS, default 300000; BENCH_ROUNDS,
//! default 3). Prints each round and the medians, with the writer/COPY ratios.

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::PgPool;
use store::copy::{CopyBuffer, POSITION_COLUMNS};
use store::testing::{TestCluster, TestClusterOptions, TestDb};
use store::{PositionRow, Writer, WriterConfig};

const DEVICES: i64 = 2_000;
/// Records per device frame, as a Teltonika AVL packet typically carries.
const PER_FRAME: usize = 25;
const GROUP_ROWS: usize = 10_000;

fn frames(total: usize, start: DateTime<Utc>) -> Vec<Vec<PositionRow>> {
    let rounds = total / (DEVICES as usize * PER_FRAME);
    let mut out = Vec::with_capacity(rounds * DEVICES as usize);
    for round in 0..rounds {
        for d in 0..DEVICES {
            let frame = (0..PER_FRAME)
                .map(|k| {
                    let i = (round * PER_FRAME + k) as i64;
                    let t = start + TimeDelta::seconds(i);
                    let f = i as f64;
                    PositionRow {
                        device_id: d + 1,
                        fix_time: t,
                        server_time: t + TimeDelta::seconds(2),
                        lat: 54.0 + d as f64 * 1e-3 + f * 1e-5,
                        lon: 25.0 + f * 1e-5,
                        altitude: Some(120.0),
                        speed_kmh: Some((i % 90) as f32),
                        course: Some(90.0),
                        satellites: Some(10),
                        hdop: Some(0.8),
                        valid: true,
                        ignition: Some(true),
                        motion: Some(true),
                        odometer_m: Some(1_000_000.0 + f * 11.0),
                        fuel_level_pct: Some(60.0),
                        fuel_used_l: Some(f * 0.002),
                        rpm: Some(1850.0),
                        coolant_c: Some(90.0),
                        power_v: Some(13.9),
                        battery_v: Some(4.0),
                        event: None,
                        alarms: None,
                        dtcs: None,
                        attributes: Some(serde_json::json!({"io": {"21": 5, "66": 13900, "239": 1, "240": 1}})),
                    }
                })
                .collect();
            out.push(frame);
        }
    }
    out
}

fn encode_chunks(frames: &[Vec<PositionRow>]) -> Vec<Vec<u8>> {
    let mut chunks = Vec::new();
    let mut buf = CopyBuffer::with_capacity(GROUP_ROWS * 200);
    for r in frames.iter().flatten() {
        buf.push_position(r);
        if buf.rows() >= GROUP_ROWS {
            chunks.push(std::mem::replace(&mut buf, CopyBuffer::with_capacity(GROUP_ROWS * 200)).finish());
        }
    }
    if buf.rows() > 0 {
        chunks.push(buf.finish());
    }
    chunks
}

async fn raw_copy(pool: &PgPool, chunks: &[Vec<u8>]) -> Duration {
    let t = Instant::now();
    for chunk in chunks {
        let mut tx = pool.begin().await.unwrap();
        let mut copy = tx
            .copy_in_raw(&format!(
                "COPY positions ({POSITION_COLUMNS}) FROM STDIN (FORMAT binary)"
            ))
            .await
            .unwrap();
        copy.send(chunk.as_slice()).await.unwrap();
        copy.finish().await.unwrap();
        tx.commit().await.unwrap();
    }
    t.elapsed()
}

async fn staged_copy(pool: &PgPool, chunks: &[Vec<u8>]) -> Duration {
    let t = Instant::now();
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query("CREATE TEMP TABLE staging (LIKE positions INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
        .execute(&mut *conn)
        .await
        .unwrap();
    for chunk in chunks {
        let mut tx = sqlx::Connection::begin(&mut *conn).await.unwrap();
        let mut copy = tx
            .copy_in_raw(&format!("COPY staging ({POSITION_COLUMNS}) FROM STDIN (FORMAT binary)"))
            .await
            .unwrap();
        copy.send(chunk.as_slice()).await.unwrap();
        copy.finish().await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO positions ({POSITION_COLUMNS}) SELECT {POSITION_COLUMNS} FROM staging \
             ON CONFLICT (device_id, fix_time) DO NOTHING"
        )))
        .execute(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
    t.elapsed()
}

async fn writer(pool: &PgPool, frames: Vec<Vec<PositionRow>>, workers: usize) -> Duration {
    // Timed from the first submit to the last receipt: encoding, grouping, last-position
    // upserts and dirty-hour marks are all inside.
    let w = Writer::spawn(
        pool.clone(),
        WriterConfig {
            max_rows: GROUP_ROWS,
            max_delay: Duration::from_millis(50),
            channel_capacity: 1024,
            workers,
            ..WriterConfig::default()
        },
    );
    let t = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let waiter = tokio::spawn(async move {
        let mut rows = 0;
        while let Some(r) = rx.recv().await {
            let r: store::Receipt = r;
            rows += r.await.unwrap().rows;
        }
        rows
    });
    for f in frames {
        tx.send(w.submit(f).await.unwrap()).unwrap();
    }
    drop(tx);
    let rows = waiter.await.unwrap();
    let elapsed = t.elapsed();
    assert!(rows > 0);
    w.shutdown().await;
    elapsed
}

async fn fresh(cluster: &TestCluster, start: DateTime<Utc>) -> TestDb {
    let db = cluster.fresh_db().await;
    store::maintenance::run_once(&db.store, &store::MaintenanceConfig::default(), start)
        .await
        .unwrap();
    sqlx::query("CHECKPOINT").execute(&db.pool).await.unwrap();
    db
}

async fn count(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM positions")
        .fetch_one(pool)
        .await
        .unwrap()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let rows: usize = std::env::var("BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300_000);
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cluster = TestCluster::start(TestClusterOptions { durable: true }).expect("test cluster");
    rt.block_on(async {
        // Fixes inside one day, so every row lands in a real daily partition.
        let start = DateTime::parse_from_rfc3339("2024-06-10T00:00:00Z").unwrap().to_utc();
        let n: usize = frames(rows, start).iter().map(Vec::len).sum();
        let data = frames(rows, start);
        let t = Instant::now();
        let chunks = encode_chunks(&data);
        let encode_t = t.elapsed();
        drop(data);

        // Warm-up: caches, catalog, connections.
        let warm = fresh(&cluster, start).await;
        raw_copy(&warm.pool, &chunks[..2.min(chunks.len())]).await;

        // Contenders interleaved round by round, each on a fresh database, so that load
        // from elsewhere on the machine hits them alike; medians reported.
        let (mut copy_r, mut w1_r, mut w2_r, mut ratio1, mut ratio2) = (vec![], vec![], vec![], vec![], vec![]);
        let rate = |d: Duration| n as f64 / d.as_secs_f64();
        for round in 0..rounds {
            let a = fresh(&cluster, start).await;
            let copy_t = raw_copy(&a.pool, &chunks).await;
            assert_eq!(count(&a.pool).await as usize, n);
            let b = fresh(&cluster, start).await;
            let w1 = writer(&b.pool, frames(rows, start), 1).await;
            assert_eq!(count(&b.pool).await as usize, n);
            let c = fresh(&cluster, start).await;
            let w2 = writer(&c.pool, frames(rows, start), 2).await;
            assert_eq!(count(&c.pool).await as usize, n);
            println!(
                "round {round}: raw COPY {:.0}/s, writer(1) {:.0}/s, writer(2) {:.0}/s",
                rate(copy_t),
                rate(w1),
                rate(w2)
            );
            copy_r.push(rate(copy_t));
            w1_r.push(rate(w1));
            w2_r.push(rate(w2));
            ratio1.push(copy_t.as_secs_f64() / w1.as_secs_f64());
            ratio2.push(copy_t.as_secs_f64() / w2.as_secs_f64());
        }
        let c = fresh(&cluster, start).await;
        let staged_t = staged_copy(&c.pool, &chunks).await;
        assert_eq!(count(&c.pool).await as usize, n);
        let a = fresh(&cluster, start).await;
        let copy_t = raw_copy(&a.pool, &chunks).await;

        println!("rows per run: {n} ({DEVICES} devices, {PER_FRAME}-record frames, groups of {GROUP_ROWS}); medians of {rounds} rounds");
        println!(
            "client-side PGCOPY encoding: {:.0} ms for {n} rows ({:.0} ns/row)",
            encode_t.as_secs_f64() * 1e3,
            encode_t.as_secs_f64() * 1e9 / n as f64
        );
        println!("raw binary COPY (1 stream) : {:>8.0} rows/s", median(copy_r));
        println!("writer, 1 worker           : {:>8.0} rows/s  ratio {:.2}", median(w1_r), median(ratio1));
        println!("writer, 2 workers          : {:>8.0} rows/s  ratio {:.2}", median(w2_r), median(ratio2));
        println!(
            "staging + ON CONFLICT      : {:>8.0} rows/s  ratio {:.2} (vs a raw COPY run right after: {:.0} rows/s)",
            rate(staged_t),
            copy_t.as_secs_f64() / staged_t.as_secs_f64(),
            rate(copy_t)
        );
    });
    drop(rt);
    drop(cluster);
}
