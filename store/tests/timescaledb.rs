//! TimescaleDB mode: continuous aggregate against a direct computation, the policies and
//! their intervals, and the `job_stats` fallback that runs failing jobs with `run_job`.
//!
//! Run only with `CLUTCH_TEST_TIMESCALEDB=1`, and then they fail loudly if the test
//! cluster did not come up in TimescaleDB mode (extension missing or not preloaded).
//! Otherwise each prints `TimescaleDB test NOT RUN`.

mod common;

use chrono::{TimeDelta, Utc};
use common::{DIRECT_SQL, Rollup, pos, track, ts};
use store::maintenance;
use store::testing::{TestDb, test_db, timescaledb_required};
use store::{MaintenanceConfig, RollupKind, StorageMode, Writer, WriterConfig};

/// A database in TimescaleDB mode, or `None` (test skipped) without the env var.
async fn timescale_db() -> Option<TestDb> {
    if !timescaledb_required() {
        println!("TimescaleDB test NOT RUN: set CLUTCH_TEST_TIMESCALEDB=1 on a machine with the extension");
        return None;
    }
    let db = test_db().await;
    let info = db.store.info().await.unwrap();
    assert!(
        info.timescaledb_available.is_some() && info.timescaledb_preloaded,
        "CLUTCH_TEST_TIMESCALEDB=1 but TimescaleDB is missing or not preloaded: {info:?}"
    );
    assert_eq!(info.mode, StorageMode::TimescaleDb, "{info:?}");
    assert_eq!(info.rollup, RollupKind::ContinuousAggregate, "{info:?}");
    Some(db)
}

async fn write(db: &TestDb, rows: Vec<store::PositionRow>) {
    let w = Writer::spawn(db.pool.clone(), WriterConfig::default());
    w.submit(rows).await.unwrap().await.unwrap();
    w.shutdown().await;
}

async fn refresh(db: &TestDb, from: &str, to: &str) {
    sqlx::query("CALL refresh_continuous_aggregate('positions_hourly', $1::timestamptz, $2::timestamptz)")
        .bind(from)
        .bind(to)
        .execute(&db.pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn continuous_aggregate_matches_a_direct_computation() {
    let Some(db) = timescale_db().await else { return };
    let start = ts("2024-06-10T09:40:00Z");
    write(&db, track(1, start, 900, 10)).await;
    write(&db, track(2, start, 300, 30)).await;
    write(&db, track(3, start + TimeDelta::minutes(50), 60, 60)).await;
    refresh(&db, "2024-06-10T00:00:00Z", "2024-06-10T12:00:00Z").await;

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
    assert!(actual.len() >= 7, "{actual:?}");
    assert_eq!(actual.len(), expected.len(), "{actual:?}\n{expected:?}");
    for (a, e) in actual.iter().zip(&expected) {
        assert_eq!((a.0, a.1, a.2), (e.0, e.1, e.2));
        assert!((a.3 - e.3).abs() < 1e-6 * e.3.max(1.0), "distance {a:?} vs {e:?}");
        assert!(a.3 > 0.0);
        assert_eq!(a.4, e.4);
        assert!((a.5.unwrap() - e.5.unwrap()).abs() < 1e-9);
        assert!((a.6.unwrap() - e.6.unwrap()).abs() < 1e-9);
        assert_eq!((a.7, a.8), (e.7, e.8));
    }
    // The read query serves the aggregate like the table.
    let hourly = store::query::hourly(&db.pool, &[1], ts("2024-06-10T00:00:00Z"), ts("2024-06-10T12:00:00Z"))
        .await
        .unwrap();
    assert_eq!(hourly.len(), 3, "{hourly:?}");

    // Late data for a closed hour: the aggregate's invalidation log picks it up.
    write(&db, vec![pos(4, ts("2024-06-10T10:15:00Z"))]).await;
    refresh(&db, "2024-06-10T00:00:00Z", "2024-06-10T12:00:00Z").await;
    let hourly = store::query::hourly(&db.pool, &[4], ts("2024-06-10T00:00:00Z"), ts("2024-06-10T12:00:00Z"))
        .await
        .unwrap();
    assert_eq!(hourly.len(), 1);
    assert_eq!(hourly[0].samples, 1);

    // Erasure reaches the aggregate.
    db.store.erase_device_telemetry(1).await.unwrap();
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM positions_hourly WHERE device_id = 1")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
}

/// `(proc_name, hypertable, config, schedule_interval)` of this database's policy jobs.
/// (TimescaleDB's own jobs, such as its job-history retention, have no hypertable.)
async fn jobs(db: &TestDb) -> Vec<(String, String, serde_json::Value, String)> {
    sqlx::query_as(
        "SELECT proc_name::text, hypertable_name::text, config, schedule_interval::text \
         FROM timescaledb_information.jobs WHERE proc_name LIKE 'policy_%' AND hypertable_name IS NOT NULL \
         ORDER BY 1, 2",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn policies_exist_with_the_configured_intervals() {
    let Some(db) = timescale_db().await else { return };
    let cfg = MaintenanceConfig {
        positions_retention_days: 30,
        events_retention_days: 14,
        rollup_retention_days: 400,
        ..MaintenanceConfig::default()
    };
    maintenance::apply_timescale_policies(&db.store, &cfg).await.unwrap();
    // Applied again at every start-up: replaces, does not duplicate.
    maintenance::apply_timescale_policies(&db.store, &cfg).await.unwrap();
    let jobs = jobs(&db).await;
    let find = |proc_name: &str, table: &str| {
        let hits: Vec<_> = jobs.iter().filter(|j| j.0 == proc_name && j.1 == table).collect();
        assert_eq!(hits.len(), 1, "{proc_name} on {table}: {jobs:?}");
        hits[0].clone()
    };
    assert_eq!(find("policy_compression", "positions").2["compress_after"], "2 days");
    assert_eq!(find("policy_compression", "events").2["compress_after"], "2 days");
    assert_eq!(find("policy_retention", "positions").2["drop_after"], "30 days");
    assert_eq!(find("policy_retention", "events").2["drop_after"], "14 days");
    assert_eq!(find("policy_retention", "positions_hourly").2["drop_after"], "400 days");
    let refresh = find("policy_refresh_continuous_aggregate", "positions_hourly");
    assert_eq!(refresh.2["start_offset"], "3 days", "{refresh:?}");
    assert_eq!(refresh.2["end_offset"], "01:00:00", "{refresh:?}");
    assert_eq!(refresh.3, "00:15:00");

    // Compression segmented by device, ordered by time.
    let settings: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT hypertable::text, segmentby, orderby FROM timescaledb_information.hypertable_compression_settings \
         ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(
        settings.contains(&("events".into(), Some("device_id".into()), Some("\"time\",kind".into()))),
        "{settings:?}"
    );
    assert!(
        settings.contains(&("positions".into(), Some("device_id".into()), Some("fix_time".into()))),
        "{settings:?}"
    );

    // 0 removes a retention policy.
    let keep = MaintenanceConfig {
        positions_retention_days: 0,
        ..cfg.clone()
    };
    maintenance::apply_timescale_policies(&db.store, &keep).await.unwrap();
    let jobs = self::jobs(&db).await;
    assert!(
        !jobs.iter().any(|j| j.0 == "policy_retention" && j.1 == "positions"),
        "{jobs:?}"
    );
}

#[tokio::test]
async fn failing_jobs_are_run_by_maintenance() {
    let Some(db) = timescale_db().await else { return };
    let cfg = MaintenanceConfig {
        positions_retention_days: 30,
        ..MaintenanceConfig::default()
    };
    maintenance::apply_timescale_policies(&db.store, &cfg).await.unwrap();
    let job: i32 = sqlx::query_scalar(
        "SELECT job_id FROM timescaledb_information.jobs \
         WHERE proc_name = 'policy_retention' AND hypertable_name = 'positions'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    // Keep the scheduler off this job for the test, so what runs it is maintenance.
    sqlx::query("SELECT alter_job($1, next_start => now() + interval '1 day')")
        .bind(job)
        .execute(&db.pool)
        .await
        .unwrap();

    // Rows far older than the retention: the policy drops their chunk.
    write(&db, track(7, ts("2024-06-10T09:00:00Z"), 100, 10)).await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM positions")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(n, 100);

    // Before any run, nothing to do, and jobs that never succeeded (last_successful_finish
    // -infinity) do not trip the check.
    let r = maintenance::run_once(&db.store, &cfg, Utc::now()).await.unwrap();
    assert!(!r.timescale_jobs_run.contains(&job), "{r:?}");

    // What the scheduler records when a run fails ("cannot drop portal" on 2.28 / 15.20).
    sqlx::query(
        "UPDATE _timescaledb_internal.bgw_job_stat SET last_start = now() - interval '1 minute', \
         last_finish = now() - interval '1 minute', last_run_success = false, \
         total_runs = total_runs + 1, total_failures = total_failures + 1 WHERE job_id = $1",
    )
    .bind(job)
    .execute(&db.pool)
    .await
    .unwrap();
    let status: Option<String> =
        sqlx::query_scalar("SELECT last_run_status FROM timescaledb_information.job_stats WHERE job_id = $1")
            .bind(job)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(status.as_deref(), Some("Failed"));

    let r = maintenance::run_once(&db.store, &cfg, Utc::now()).await.unwrap();
    assert!(r.timescale_jobs_run.contains(&job), "{r:?}");
    // It really ran: the expired chunk is gone.
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM positions")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(n, 0);

    // run_job leaves job_stats as it was ("Failed"): the next passes within the job's
    // schedule interval (1 day for retention) do not run it again; after it, they do.
    let now = Utc::now();
    let r = maintenance::run_once(&db.store, &cfg, now + TimeDelta::minutes(1))
        .await
        .unwrap();
    assert!(!r.timescale_jobs_run.contains(&job), "{r:?}");
    let r = maintenance::run_once(&db.store, &cfg, now + TimeDelta::hours(23))
        .await
        .unwrap();
    assert!(!r.timescale_jobs_run.contains(&job), "{r:?}");
    let r = maintenance::run_once(&db.store, &cfg, now + TimeDelta::hours(25))
        .await
        .unwrap();
    assert!(r.timescale_jobs_run.contains(&job), "{r:?}");

    // A job that started long ago and never finished (no status, never succeeded) is
    // stale after two schedule intervals (compression: 12 h).
    let compression: i32 = sqlx::query_scalar(
        "SELECT job_id FROM timescaledb_information.jobs \
         WHERE proc_name = 'policy_compression' AND hypertable_name = 'positions'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    sqlx::query("SELECT alter_job($1, next_start => now() + interval '1 day')")
        .bind(compression)
        .execute(&db.pool)
        .await
        .unwrap();
    let updated = sqlx::query(
        "UPDATE _timescaledb_internal.bgw_job_stat SET last_start = now() - interval '20 hours', \
         last_finish = '-infinity', last_successful_finish = '-infinity' WHERE job_id = $1",
    )
    .bind(compression)
    .execute(&db.pool)
    .await
    .unwrap();
    assert_eq!(updated.rows_affected(), 1);
    let r = maintenance::run_once(&db.store, &cfg, now).await.unwrap();
    assert!(
        !r.timescale_jobs_run.contains(&compression),
        "not yet two intervals: {r:?}"
    );
    let r = maintenance::run_once(&db.store, &cfg, now + TimeDelta::hours(5))
        .await
        .unwrap();
    assert!(r.timescale_jobs_run.contains(&compression), "{r:?}");
}
