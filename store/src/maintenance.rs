//! Keeps the time series bounded and the rollups current.
//!
//! Every step takes `now` as an argument so tests can move time; the periodic task passes
//! the wall clock. Each step is idempotent and safe to run from two clutch processes at
//! once (partition changes serialise on an advisory lock).
//!
//! Native mode:
//! - daily partitions `positions_pYYYYMMDD` / `events_pYYYYMMDD` from yesterday to
//!   `partitions_ahead_days` ahead. Rows that had already landed in the DEFAULT partition
//!   for a new day's range are moved into it in the same transaction (otherwise ATTACH
//!   would refuse), so a far-future fix is never lost and never blocks maintenance.
//! - partitions whose whole day is older than the retention are dropped (a catalog
//!   operation, not a DELETE), and expired rows in the DEFAULT partition are deleted.
//! - `positions_hourly` is recomputed for each closed hour the writer marked dirty.
//!
//! TimescaleDB mode: the retention policies are (re)applied from config, and the
//! background jobs are checked: TimescaleDB 2.28(.3) on PostgreSQL 15.20 fails its own jobs
//! ("cannot drop portal \"\" while it is being set up"), so a job whose last run failed, or
//! that has not succeeded for two schedule intervals (counted from its first start if it
//! never did), is run here with `CALL run_job(id)`, at most once per schedule interval
//! (recorded in `clutch_meta`, since `run_job` leaves `job_stats` as it was).

use chrono::{DateTime, Days, NaiveDate, TimeDelta, Utc};
use serde::Serialize;
use sqlx::AssertSqlSafe;
use sqlx::{PgPool, Row};
use tokio::sync::watch;

use crate::config::MaintenanceConfig;
use crate::{Result, RollupKind, StorageMode, Store};

/// Arbitrary constant: the advisory lock key for partition DDL.
const DDL_LOCK: i64 = 0x0063_6c75_7463_6801;

/// What one run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MaintenanceReport {
    pub partitions_created: Vec<String>,
    pub partitions_dropped: Vec<String>,
    /// Rows moved out of a DEFAULT partition into a newly created day.
    pub rows_moved_from_default: u64,
    pub expired_rows_deleted: u64,
    pub rollup_hours_refreshed: usize,
    pub timescale_jobs_run: Vec<i32>,
}

/// The (positions | events) tables and their time column.
const TABLES: [(&str, &str); 2] = [("positions", "fix_time"), ("events", "time")];

/// One full pass. `now` is injected.
pub async fn run_once(store: &Store, cfg: &MaintenanceConfig, now: DateTime<Utc>) -> Result<MaintenanceReport> {
    let mut report = MaintenanceReport::default();
    let pool = store.pool();
    match store.mode() {
        StorageMode::Partitioned => {
            for (table, col) in TABLES {
                ensure_partitions(pool, table, col, now, cfg.partitions_ahead_days, &mut report).await?;
                let days = if table == "positions" {
                    cfg.positions_retention_days
                } else {
                    cfg.events_retention_days
                };
                drop_expired(pool, table, col, now, days, &mut report).await?;
            }
        }
        StorageMode::TimescaleDb => {
            report.timescale_jobs_run = rerun_failed_timescale_jobs(pool, now).await?;
        }
    }
    match store.rollup() {
        RollupKind::Table => report.rollup_hours_refreshed = refresh_rollups(pool, now).await?,
        RollupKind::ContinuousAggregate => {
            // The continuous aggregate tracks its own invalidations.
            sqlx::query("DELETE FROM rollup_dirty").execute(pool).await?;
        }
    }
    if cfg.rollup_retention_days > 0 && store.rollup() == RollupKind::Table {
        let cutoff = now - TimeDelta::days(cfg.rollup_retention_days.into());
        sqlx::query("DELETE FROM positions_hourly WHERE bucket < $1")
            .bind(cutoff)
            .execute(pool)
            .await?;
    }
    Ok(report)
}

/// Applied once at start-up in TimescaleDB mode: retention from config (0 removes it).
pub async fn apply_timescale_policies(store: &Store, cfg: &MaintenanceConfig) -> Result<()> {
    if store.mode() != StorageMode::TimescaleDb {
        return Ok(());
    }
    let policies = [
        ("positions", cfg.positions_retention_days),
        ("events", cfg.events_retention_days),
    ];
    for (table, days) in policies {
        sqlx::query("SELECT remove_retention_policy($1::regclass, if_exists => true)")
            .bind(table)
            .execute(store.pool())
            .await?;
        if days > 0 {
            sqlx::query("SELECT add_retention_policy($1::regclass, drop_after => make_interval(days => $2))")
                .bind(table)
                .bind(days as i32)
                .execute(store.pool())
                .await?;
        }
    }
    if store.rollup() == RollupKind::ContinuousAggregate {
        sqlx::query("SELECT remove_retention_policy('positions_hourly', if_exists => true)")
            .execute(store.pool())
            .await?;
        if cfg.rollup_retention_days > 0 {
            sqlx::query("SELECT add_retention_policy('positions_hourly', drop_after => make_interval(days => $1))")
                .bind(cfg.rollup_retention_days as i32)
                .execute(store.pool())
                .await?;
        }
    }
    Ok(())
}

/// Runs [`run_once`] every `cfg.interval` until `shutdown` turns true. Failures are logged
/// and retried next interval: maintenance falling behind must not stop ingest.
pub fn spawn(store: Store, cfg: MaintenanceConfig, mut shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = apply_timescale_policies(&store, &cfg).await {
            tracing::error!(error = %e, "applying TimescaleDB policies failed");
        }
        loop {
            match run_once(&store, &cfg, Utc::now()).await {
                Ok(r) => tracing::debug!(report = ?r, "maintenance done"),
                Err(e) => tracing::error!(error = %e, "maintenance failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(cfg.interval) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    })
}

fn partition_name(table: &str, day: NaiveDate) -> String {
    format!("{table}_p{}", day.format("%Y%m%d"))
}

fn day_start(day: NaiveDate) -> DateTime<Utc> {
    day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc()
}

/// Names of `table`'s daily partitions, oldest first.
pub async fn list_partitions(pool: &PgPool, table: &str) -> Result<Vec<String>> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = $1::regclass AND c.relname ~ ('^' || $2 || '_p[0-9]{8}$') ORDER BY c.relname",
    )
    .bind(table)
    .bind(table)
    .fetch_all(pool)
    .await?;
    Ok(names)
}

/// Creates the daily partitions from yesterday to `ahead` days after `now`'s day.
pub async fn ensure_partitions(
    pool: &PgPool,
    table: &str,
    col: &str,
    now: DateTime<Utc>,
    ahead: u32,
    report: &mut MaintenanceReport,
) -> Result<()> {
    let today = now.date_naive();
    let existing = list_partitions(pool, table).await?;
    let first = today.checked_sub_days(Days::new(1)).unwrap_or(today);
    for offset in 0..=u64::from(ahead) + 1 {
        let Some(day) = first.checked_add_days(Days::new(offset)) else {
            break;
        };
        let name = partition_name(table, day);
        if existing.contains(&name) {
            continue;
        }
        let (from, to) = (day_start(day), day_start(day) + TimeDelta::days(1));
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(DDL_LOCK)
            .execute(&mut *tx)
            .await?;
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(&name)
            .fetch_one(&mut *tx)
            .await?;
        if exists {
            continue;
        }
        // Lock the default partition first: ATTACH will need it exclusively anyway, and
        // holding it before the move means no writer can slip a row for this day into it
        // between the move and the attach.
        sqlx::query(AssertSqlSafe(format!(
            "LOCK TABLE {table}_default IN ACCESS EXCLUSIVE MODE"
        )))
        .execute(&mut *tx)
        .await?;
        sqlx::query(AssertSqlSafe(format!(
            "CREATE TABLE {name} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
        )))
        .execute(&mut *tx)
        .await?;
        let moved = sqlx::query(AssertSqlSafe(format!(
            "WITH moved AS (DELETE FROM {table}_default WHERE {col} >= $1 AND {col} < $2 RETURNING *) \
             INSERT INTO {name} SELECT * FROM moved"
        )))
        .bind(from)
        .bind(to)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        // A literal bound: ATTACH takes no parameters. Both values are formatted by us.
        sqlx::query(AssertSqlSafe(format!(
            "ALTER TABLE {table} ATTACH PARTITION {name} FOR VALUES FROM ('{}') TO ('{}')",
            from.format("%Y-%m-%d %H:%M:%S+00"),
            to.format("%Y-%m-%d %H:%M:%S+00"),
        )))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        if moved > 0 {
            tracing::info!(partition = %name, moved, "created partition, moved rows from default");
        } else {
            tracing::info!(partition = %name, "created partition");
        }
        report.rows_moved_from_default += moved;
        report.partitions_created.push(name);
    }
    Ok(())
}

/// Drops partitions entirely older than `now - retention_days`; deletes expired rows
/// from the DEFAULT partition. `retention_days == 0` keeps everything.
pub async fn drop_expired(
    pool: &PgPool,
    table: &str,
    col: &str,
    now: DateTime<Utc>,
    retention_days: u32,
    report: &mut MaintenanceReport,
) -> Result<()> {
    if retention_days == 0 {
        return Ok(());
    }
    let cutoff = now - TimeDelta::days(retention_days.into());
    for name in list_partitions(pool, table).await? {
        let Some(day) = name
            .rsplit('p')
            .next()
            .and_then(|d| NaiveDate::parse_from_str(d, "%Y%m%d").ok())
        else {
            continue;
        };
        if day_start(day) + TimeDelta::days(1) <= cutoff {
            let mut tx = pool.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(DDL_LOCK)
                .execute(&mut *tx)
                .await?;
            sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS {name}")))
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            tracing::info!(partition = %name, "dropped expired partition");
            report.partitions_dropped.push(name);
        }
    }
    let deleted = sqlx::query(AssertSqlSafe(format!("DELETE FROM {table}_default WHERE {col} < $1")))
        .bind(cutoff)
        .execute(pool)
        .await?
        .rows_affected();
    report.expired_rows_deleted += deleted;
    Ok(())
}

/// Recomputes `positions_hourly` for every closed hour marked dirty. Returns the number
/// of hours refreshed.
///
/// Correctness against concurrent writers rests on the writer's mark being an upsert that
/// locks the `rollup_dirty` row until its transaction commits: here the mark is deleted
/// and the hour recomputed in one transaction, so either the DELETE waits for the writer
/// and the recompute (a later statement, a newer snapshot) sees its rows, or the writer
/// waits for this transaction and re-marks the hour for the next run.
pub async fn refresh_rollups(pool: &PgPool, now: DateTime<Utc>) -> Result<usize> {
    let closed_before = now - TimeDelta::hours(1);
    let hours: Vec<DateTime<Utc>> =
        sqlx::query_scalar("SELECT bucket FROM rollup_dirty WHERE bucket <= $1 ORDER BY bucket")
            .bind(closed_before)
            .fetch_all(pool)
            .await?;
    let mut refreshed = 0;
    for hour in hours {
        let mut tx = pool.begin().await?;
        let claimed = sqlx::query("DELETE FROM rollup_dirty WHERE bucket = $1")
            .bind(hour)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if claimed == 0 {
            continue; // another process did it
        }
        sqlx::query("DELETE FROM positions_hourly WHERE bucket = $1")
            .bind(hour)
            .execute(&mut *tx)
            .await?;
        sqlx::query(ROLLUP_SQL).bind(hour).execute(&mut *tx).await?;
        tx.commit().await?;
        refreshed += 1;
    }
    Ok(refreshed)
}

/// The same figures as the continuous aggregate in `0002_telemetry.sql`.
const ROLLUP_SQL: &str = "\
    INSERT INTO positions_hourly \
        (device_id, bucket, samples, distance_m, max_speed_kmh, avg_speed_kmh, fuel_used_l, first_fix, last_fix) \
    SELECT device_id, $1, count(*), \
           coalesce(clutch_path_m(lat, lon ORDER BY fix_time) FILTER (WHERE valid), 0), \
           max(speed_kmh), avg(speed_kmh), max(fuel_used_l) - min(fuel_used_l), \
           min(fix_time), max(fix_time) \
    FROM positions \
    WHERE fix_time >= $1 AND fix_time < $1 + interval '1 hour' \
    GROUP BY device_id";

/// TimescaleDB's policy jobs, checked and run by hand when the scheduler's runs fail.
async fn rerun_failed_timescale_jobs(pool: &PgPool, now: DateTime<Utc>) -> Result<Vec<i32>> {
    let rows = sqlx::query(
        // A job that never succeeded has last_successful_finish = -infinity, which no
        // chrono type holds (decoding it panics): map it to NULL.
        "SELECT j.job_id, j.proc_name::text AS proc_name, s.last_run_status, \
                CASE WHEN isfinite(s.last_successful_finish) THEN s.last_successful_finish END \
                    AS last_successful_finish, \
                CASE WHEN isfinite(s.last_run_started_at) THEN s.last_run_started_at END AS last_run_started_at, \
                j.schedule_interval \
         FROM timescaledb_information.jobs j \
         JOIN timescaledb_information.job_stats s USING (job_id) \
         WHERE j.proc_name IN ('policy_compression', 'policy_retention', \
                               'policy_refresh_continuous_aggregate') \
           AND j.scheduled",
    )
    .fetch_all(pool)
    .await?;
    let mut ran = Vec::new();
    for row in rows {
        let id: i32 = row.try_get("job_id")?;
        let status: Option<String> = row.try_get("last_run_status")?;
        let last_ok: Option<DateTime<Utc>> = row.try_get("last_successful_finish")?;
        let interval: sqlx::postgres::types::PgInterval = row.try_get("schedule_interval")?;
        let interval = TimeDelta::microseconds(interval.microseconds)
            + TimeDelta::days(i64::from(interval.days) + 30 * i64::from(interval.months));
        let failed = status.as_deref() == Some("Failed");
        let last_start: Option<DateTime<Utc>> = row.try_get("last_run_started_at")?;
        // Never succeeded: stale once its first start is two intervals old (a run killed
        // by a shutdown, or one that never finishes, leaves no status at all).
        let stale = match last_ok {
            Some(t) => t + interval * 2 < now,
            None => last_start.is_some_and(|t| t + interval * 2 < now),
        };
        if !(failed || stale) {
            continue;
        }
        // `run_job` does not touch job_stats, so a job the scheduler keeps failing stays
        // "Failed": without this, every maintenance pass (a minute) would rerun a policy
        // meant to run every 12 hours. Hand runs are recorded in clutch_meta and repeated
        // once per schedule interval.
        let key = format!("timescale_job_run:{id}");
        let last_hand_run: Option<String> = sqlx::query_scalar("SELECT value FROM clutch_meta WHERE key = $1")
            .bind(&key)
            .fetch_optional(pool)
            .await?;
        let last_hand_run = last_hand_run.and_then(|v| DateTime::parse_from_rfc3339(&v).ok());
        if last_hand_run.is_some_and(|t| t.to_utc() + interval > now && t.to_utc() <= now) {
            continue;
        }
        let proc_name: String = row.try_get("proc_name")?;
        tracing::warn!(job_id = id, %proc_name, ?status, "TimescaleDB job failing; running it here");
        // CALL must run outside a transaction block: policies commit per chunk.
        match sqlx::query(AssertSqlSafe(format!("CALL run_job({id})")))
            .execute(pool)
            .await
        {
            Ok(_) => {
                sqlx::query(
                    "INSERT INTO clutch_meta (key, value) VALUES ($1, $2) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                )
                .bind(&key)
                .bind(now.to_rfc3339())
                .execute(pool)
                .await?;
                ran.push(id);
            }
            Err(e) => tracing::error!(job_id = id, error = %e, "run_job failed too"),
        }
    }
    Ok(ran)
}
