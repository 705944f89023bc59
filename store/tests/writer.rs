//! The batch writer against a real PostgreSQL: receipts, group commit, idempotency under
//! resends, isolation of a bad batch.

mod common;

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use common::{now_us, pos, track, ts};
use store::testing::test_db;
use store::writer::WriteError;
use store::{Batch, EventRow, Writer, WriterConfig};

fn config() -> WriterConfig {
    WriterConfig {
        max_rows: 5_000,
        max_delay: Duration::from_millis(20),
        channel_capacity: 64,
        ..WriterConfig::default()
    }
}

async fn count(pool: &sqlx::PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[tokio::test]
async fn receipts_resolve_after_commit_and_rows_are_there() {
    let db = test_db().await;
    let writer = Writer::spawn(db.pool.clone(), config());
    let start = now_us() - TimeDelta::minutes(30);
    let mut receipts = Vec::new();
    for device in 1..=20 {
        receipts.push(writer.submit(track(device, start, 50, 1)).await.unwrap());
    }
    for r in receipts {
        let r = r.await.unwrap();
        assert_eq!((r.rows, r.duplicates), (50, 0));
        assert!(r.committed_at <= Utc::now());
    }
    assert_eq!(count(&db.pool, "SELECT count(*) FROM positions").await, 1000);
    // Last position = the newest fix of each device.
    let last: Vec<(i64, chrono::DateTime<Utc>)> =
        sqlx::query_as("SELECT device_id, fix_time FROM device_last_position ORDER BY device_id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(last.len(), 20);
    assert!(last.iter().all(|(_, t)| *t == start + TimeDelta::seconds(49)));
    let stats = writer.stats();
    assert_eq!(stats.rows_committed, 1000);
    assert!(stats.groups_committed < 20, "batches were grouped: {stats:?}");
    writer.shutdown().await;
    assert!(matches!(
        writer.submit(track(1, start, 1, 1)).await,
        Err(WriteError::Closed)
    ));
}

#[tokio::test]
async fn resends_are_idempotent_and_counted_as_duplicates() {
    let db = test_db().await;
    let writer = Writer::spawn(db.pool.clone(), config());
    let start = now_us() - TimeDelta::hours(2);
    let first = track(7, start, 100, 1);
    let r = writer.submit(first.clone()).await.unwrap().await.unwrap();
    assert_eq!(r.duplicates, 0);

    // The device did not get its ack and resends everything, plus 50 new fixes; another
    // device's fresh batch lands in the same group and must not be lost.
    let mut resend = first.clone();
    resend.extend(track(7, start + TimeDelta::seconds(100), 50, 1));
    let a = writer.submit(resend).await.unwrap();
    let b = writer.submit(track(8, start, 30, 1)).await.unwrap();
    let c = writer.submit(first[..10].to_vec()).await.unwrap();
    let (a, b, c) = (a.await.unwrap(), b.await.unwrap(), c.await.unwrap());
    assert_eq!((a.rows, a.duplicates), (150, 100));
    assert_eq!((b.rows, b.duplicates), (30, 0));
    assert_eq!((c.rows, c.duplicates), (10, 10));

    // Duplicates inside a single batch.
    let mut twice = track(9, start, 5, 1);
    twice.extend(twice.clone());
    let d = writer.submit(twice).await.unwrap().await.unwrap();
    assert_eq!((d.rows, d.duplicates), (10, 5));

    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM positions WHERE device_id = 7").await,
        150
    );
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM positions WHERE device_id = 8").await,
        30
    );
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM positions WHERE device_id = 9").await,
        5
    );
    assert!(writer.stats().slow_path_groups >= 1);
    let last: chrono::DateTime<Utc> =
        sqlx::query_scalar("SELECT fix_time FROM device_last_position WHERE device_id = 7")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(last, start + TimeDelta::seconds(149));
    writer.shutdown().await;
}

#[tokio::test]
async fn many_concurrent_resends_never_lose_or_double_rows() {
    let db = test_db().await;
    let writer = Writer::spawn(db.pool.clone(), WriterConfig { workers: 2, ..config() });
    let start = now_us() - TimeDelta::hours(1);
    let mut tasks = Vec::new();
    for device in 1..=8i64 {
        let w = writer.clone();
        tasks.push(tokio::spawn(async move {
            let rows = track(device, start, 200, 1);
            let mut stored = 0;
            // Overlapping windows: every row is sent two or three times.
            for chunk_start in (0..200).step_by(40) {
                let end = (chunk_start + 80).min(200);
                let r = w.submit(rows[chunk_start..end].to_vec()).await.unwrap().await.unwrap();
                stored += r.rows - r.duplicates;
            }
            stored
        }));
    }
    let mut stored = 0;
    for t in tasks {
        stored += t.await.unwrap();
    }
    assert_eq!(stored, 8 * 200, "new rows reported across receipts");
    assert_eq!(count(&db.pool, "SELECT count(*) FROM positions").await, 1600);
    writer.shutdown().await;
}

#[tokio::test]
async fn events_are_written_and_deduplicated_with_their_positions() {
    let db = test_db().await;
    let writer = Writer::spawn(db.pool.clone(), config());
    let t = ts("2024-03-01T10:00:00Z");
    let mut alarm = EventRow::new(3, t, "alarm");
    alarm.lat = Some(54.0);
    alarm.lon = Some(25.0);
    alarm.attributes = serde_json::json!({"alarm": "sos"});
    let batch = Batch {
        positions: vec![pos(3, t)],
        events: vec![alarm.clone(), EventRow::new(3, t, "ignition_on")],
    };
    let r = writer.submit(batch.clone()).await.unwrap().await.unwrap();
    assert_eq!((r.rows, r.duplicates), (3, 0));
    let r = writer.submit(batch).await.unwrap().await.unwrap();
    assert_eq!((r.rows, r.duplicates), (3, 3));
    let stored: Vec<store::EventRow> = store::query::events(
        &db.pool,
        t - TimeDelta::hours(1),
        t + TimeDelta::hours(1),
        &store::query::EventFilter {
            kinds: Some(vec!["alarm".into()]),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(stored, vec![alarm]);
    writer.shutdown().await;
}

#[tokio::test]
async fn a_batch_postgres_rejects_fails_alone() {
    let db = test_db().await;
    let writer = Writer::spawn(
        db.pool.clone(),
        WriterConfig {
            max_delay: Duration::from_millis(200),
            ..config()
        },
    );
    let t = now_us() - TimeDelta::minutes(5);
    let good1 = writer.submit(track(1, t, 10, 1)).await.unwrap();
    let mut bad_row = pos(2, t);
    // jsonb cannot hold U+0000.
    bad_row.attributes = Some(serde_json::json!({"text": "a\u{0}b"}));
    let bad = writer.submit(vec![bad_row]).await.unwrap();
    let good2 = writer.submit(track(3, t, 10, 1)).await.unwrap();
    assert_eq!(good1.await.unwrap().rows, 10);
    assert!(matches!(bad.await, Err(WriteError::Rejected(_))));
    assert_eq!(good2.await.unwrap().rows, 10);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM positions").await, 20);
    assert_eq!(writer.stats().batches_failed, 1);
    writer.shutdown().await;
}

#[tokio::test]
async fn shutdown_writes_everything_accepted() {
    let db = test_db().await;
    let writer = Writer::spawn(
        db.pool.clone(),
        WriterConfig {
            max_delay: Duration::from_secs(30),
            max_rows: 1_000_000,
            ..config()
        },
    );
    let t = now_us() - TimeDelta::minutes(5);
    let mut receipts = Vec::new();
    for d in 0..10 {
        receipts.push(writer.submit(track(d, t, 10, 1)).await.unwrap());
    }
    // The group would wait 30 s for more rows; shutdown flushes it now.
    tokio::time::timeout(Duration::from_secs(10), writer.shutdown())
        .await
        .unwrap();
    for r in receipts {
        assert_eq!(r.await.unwrap().rows, 10);
    }
    assert_eq!(count(&db.pool, "SELECT count(*) FROM positions").await, 100);
}

#[tokio::test]
async fn a_down_server_means_back_pressure_not_buffering() {
    // Nothing listens on port 1: every attempt fails with a connection error, the writer
    // keeps retrying, its channel fills, and then submit waits.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(200))
        .connect_lazy("postgres://postgres@127.0.0.1:1/none")
        .unwrap();
    let writer = Writer::spawn(
        pool,
        WriterConfig {
            channel_capacity: 4,
            max_rows: 1,
            give_up_after: Duration::from_secs(1),
            retry_max_delay: Duration::from_millis(200),
            ..config()
        },
    );
    let t = now_us();
    let mut receipts = Vec::new();
    let mut full = false;
    for d in 0..50 {
        match writer.try_submit(vec![pos(d, t)]) {
            Ok(r) => receipts.push(r),
            Err(store::writer::TrySubmitError::Full(b)) => {
                assert_eq!(b.rows(), 1);
                full = true;
                break;
            }
            Err(e) => panic!("{e:?}"),
        }
        tokio::task::yield_now().await;
    }
    assert!(full, "channel never filled");
    assert!(receipts.len() <= 6, "buffered {} batches", receipts.len());
    let blocked = tokio::time::timeout(Duration::from_millis(300), writer.submit(vec![pos(99, t)])).await;
    assert!(blocked.is_err(), "submit must wait while the channel is full");
    // Nothing is acknowledged: after give_up_after the receipts fail.
    for r in receipts {
        assert!(matches!(r.await, Err(WriteError::Unavailable { .. })));
    }
    assert!(writer.stats().retries > 0);
}
