//! Partitions ahead, retention drops, far-future rows, and rollups against direct SQL.
//! Time is injected: `run_once(…, now)`.

mod common;

use chrono::{DateTime, TimeDelta, Utc};
use common::{DIRECT_SQL, Rollup, pos, track, ts};
use store::maintenance::{self, MaintenanceReport};
use store::testing::{TestDb, test_db};
use store::{MaintenanceConfig, StorageMode, Writer, WriterConfig};

fn cfg() -> MaintenanceConfig {
    MaintenanceConfig {
        partitions_ahead_days: 3,
        positions_retention_days: 30,
        events_retention_days: 30,
        ..MaintenanceConfig::default()
    }
}

async fn write(db: &TestDb, rows: Vec<store::PositionRow>) {
    let w = Writer::spawn(db.pool.clone(), WriterConfig::default());
    w.submit(rows).await.unwrap().await.unwrap();
    w.shutdown().await;
}

async fn rows_in(db: &TestDb, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM ONLY {table}")))
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

/// Partition tests only apply to native mode.
fn native(db: &TestDb) -> bool {
    if db.store.mode() != StorageMode::Partitioned {
        println!("native partitioning test NOT RUN: this cluster has TimescaleDB");
        return false;
    }
    true
}

#[tokio::test]
async fn partitions_are_created_ahead_and_dropped_after_retention() {
    let db = test_db().await;
    if !native(&db) {
        return;
    }
    let now = ts("2024-06-10T12:00:00Z");
    let r: MaintenanceReport = maintenance::run_once(&db.store, &cfg(), now).await.unwrap();
    let names = maintenance::list_partitions(&db.pool, "positions").await.unwrap();
    assert_eq!(
        names,
        ["20240609", "20240610", "20240611", "20240612", "20240613"].map(|d| format!("positions_p{d}"))
    );
    assert_eq!(r.partitions_created.len(), 10, "positions and events: {r:?}");
    // Idempotent.
    let again = maintenance::run_once(&db.store, &cfg(), now).await.unwrap();
    assert!(again.partitions_created.is_empty());

    // Rows go to their day's partition.
    write(&db, track(1, ts("2024-06-10T10:00:00Z"), 10, 60)).await;
    assert_eq!(rows_in(&db, "positions_p20240610").await, 10);
    assert_eq!(rows_in(&db, "positions_default").await, 0);

    // Retention 30 days, run at 12 July 06:00: the cutoff is 12 June 06:00, so the 9th,
    // 10th and 11th (entirely older) go; the 12th (partly newer) and 13th stay.
    let later = ts("2024-07-12T06:00:00Z");
    let r = maintenance::run_once(&db.store, &cfg(), later).await.unwrap();
    let dropped: Vec<&String> = r
        .partitions_dropped
        .iter()
        .filter(|n| n.starts_with("positions"))
        .collect();
    assert_eq!(
        dropped,
        ["positions_p20240609", "positions_p20240610", "positions_p20240611"]
    );
    let names = maintenance::list_partitions(&db.pool, "positions").await.unwrap();
    assert_eq!(
        names,
        [
            "20240612", "20240613", "20240711", "20240712", "20240713", "20240714", "20240715"
        ]
        .map(|d| format!("positions_p{d}"))
    );
    assert_eq!(
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM positions")
            .fetch_one(&db.pool)
            .await
            .unwrap(),
        0
    );
    assert!(r.partitions_dropped.contains(&"events_p20240611".to_string()));
}

#[tokio::test]
async fn far_future_fixes_wait_in_default_and_move_when_their_day_comes() {
    let db = test_db().await;
    if !native(&db) {
        return;
    }
    let now = ts("2024-06-10T12:00:00Z");
    maintenance::run_once(&db.store, &cfg(), now).await.unwrap();
    // A broken device clock: ten days ahead, and one from 1999.
    let future = ts("2024-06-20T08:00:00Z");
    let received = |mut p: store::PositionRow| {
        p.server_time = now;
        p
    };
    write(
        &db,
        vec![
            received(pos(5, future)),
            received(pos(5, future + TimeDelta::seconds(1))),
            received(pos(5, ts("1999-01-01T00:00:00Z"))),
        ],
    )
    .await;
    assert_eq!(rows_in(&db, "positions_default").await, 3);
    // Resending them is still idempotent in the default partition.
    write(&db, vec![received(pos(5, future))]).await;
    assert_eq!(rows_in(&db, "positions_default").await, 3);

    let r = maintenance::run_once(&db.store, &cfg(), ts("2024-06-18T00:00:00Z"))
        .await
        .unwrap();
    assert_eq!(r.rows_moved_from_default, 2, "{r:?}");
    assert_eq!(rows_in(&db, "positions_p20240620").await, 2);
    // The 1999 fix is past retention and is deleted from the default partition.
    assert_eq!(r.expired_rows_deleted, 1);
    assert_eq!(rows_in(&db, "positions_default").await, 0);
    // The future fix did not become the device's last position.
    let last: Option<DateTime<Utc>> =
        sqlx::query_scalar("SELECT fix_time FROM device_last_position WHERE device_id = 5")
            .fetch_optional(&db.pool)
            .await
            .unwrap();
    assert_eq!(last, Some(ts("1999-01-01T00:00:00Z")));
}

#[tokio::test]
async fn hourly_rollup_matches_a_direct_computation() {
    let db = test_db().await;
    if db.store.rollup() != store::RollupKind::Table {
        println!("rollup-table test NOT RUN: the rollup is a continuous aggregate here");
        return;
    }
    let start = ts("2024-06-10T09:40:00Z");
    let now = ts("2024-06-10T12:30:00Z");
    maintenance::run_once(&db.store, &cfg(), now).await.unwrap();
    // Three devices over ~2.5 hours at varying rates; some invalid fixes (see `pos`).
    write(&db, track(1, start, 900, 10)).await;
    write(&db, track(2, start, 300, 30)).await;
    write(&db, track(3, start + TimeDelta::minutes(50), 60, 60)).await;

    let r = maintenance::run_once(&db.store, &cfg(), now).await.unwrap();
    // 09:00, 10:00, 11:00 are closed; 12:00 is still open at 12:30 and not rolled up.
    assert_eq!(r.rollup_hours_refreshed, 3, "{r:?}");

    let expected: Vec<Rollup> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT * FROM ({DIRECT_SQL}) d WHERE bucket < '2024-06-10T12:00:00Z'"
    )))
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let actual: Vec<Rollup> = sqlx::query_as(
        "SELECT device_id, bucket, samples, distance_m, max_speed_kmh, avg_speed_kmh, fuel_used_l, first_fix, last_fix \
         FROM positions_hourly ORDER BY 1, 2",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(actual.len(), expected.len());
    assert!(actual.len() >= 7, "{actual:?}");
    for (a, e) in actual.iter().zip(&expected) {
        assert_eq!((a.0, a.1, a.2), (e.0, e.1, e.2));
        assert!((a.3 - e.3).abs() < 1e-6 * e.3.max(1.0), "distance {a:?} vs {e:?}");
        assert!(a.3 > 0.0);
        assert_eq!(a.4, e.4);
        assert!((a.5.unwrap() - e.5.unwrap()).abs() < 1e-9);
        assert!((a.6.unwrap() - e.6.unwrap()).abs() < 1e-9);
        assert_eq!((a.7, a.8), (e.7, e.8));
    }

    // Late data for a closed hour marks it dirty again; the next run recomputes it.
    write(&db, vec![pos(4, ts("2024-06-10T10:15:00Z"))]).await;
    let r = maintenance::run_once(&db.store, &cfg(), now).await.unwrap();
    assert_eq!(r.rollup_hours_refreshed, 1);
    let hourly = store::query::hourly(&db.pool, &[4], ts("2024-06-10T00:00:00Z"), now)
        .await
        .unwrap();
    assert_eq!(hourly.len(), 1);
    assert_eq!(hourly[0].samples, 1);
    // Nothing dirty: nothing recomputed.
    let r = maintenance::run_once(&db.store, &cfg(), now).await.unwrap();
    assert_eq!(r.rollup_hours_refreshed, 0);
}

#[tokio::test]
async fn the_periodic_task_runs_and_stops_on_shutdown() {
    let db = test_db().await;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let task = maintenance::spawn(
        db.store.clone(),
        MaintenanceConfig {
            interval: std::time::Duration::from_millis(50),
            ..cfg()
        },
        rx,
    );
    let today = Utc::now().format("positions_p%Y%m%d").to_string();
    let mut seen = db.store.mode() != StorageMode::Partitioned;
    for _ in 0..100 {
        if seen {
            break;
        }
        seen = maintenance::list_partitions(&db.pool, "positions")
            .await
            .unwrap()
            .contains(&today);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(seen, "today's partition was not created");
    tx.send_replace(true);
    tokio::time::timeout(std::time::Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
}
