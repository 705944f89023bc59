//! `store`: everything Clutch keeps in PostgreSQL (TimescaleDB when present).
//!
//! This crate owns the schema (embedded `sqlx` migrations), the batch writer that makes
//! telemetry durable before devices are acknowledged, the maintenance that keeps the time
//! series bounded (partitions or hypertable policies, retention, hourly rollups), the read
//! queries reports need, and the managed local PostgreSQL that `clutch` runs when no
//! `DATABASE_URL` is given. It depends only on `protocols`' model types.
//!
//! Two storage modes, chosen once by the migrations and recorded in `clutch_meta`:
//! `timescaledb` (hypertables, compression, a continuous aggregate) when the extension is
//! available and preloaded, `partitioned` (native daily range partitions) otherwise.
//! Column names and keys are identical, so the writer and every query serve both.
//!
//! # Layout
//!
//! - [`config`]: the `[store]` config section.
//! - [`row`]: [`PositionRow`] / [`EventRow`] and their mapping from `protocols::model`.
//! - [`copy`]: the hand-encoded binary `COPY` stream.
//! - [`writer`]: group commit, back-pressure, retries, durability receipts.
//! - [`maintenance`]: partitions ahead/behind, retention, rollups, TimescaleDB job checks.
//! - [`query`]: latest positions, history (optionally downsampled), events, trips, rollups.
//! - [`managed`]: find the system's PostgreSQL binaries, initdb, start/reuse/stop.
//! - `testing` (feature `testing`): one throwaway cluster per test binary, a fresh
//!   database per test.
//! - `migrations/`: `0001_core.sql` (registry, trips, SQL helpers), `0002_telemetry.sql`
//!   (positions, events, last position, rollups; mode-dependent), `0003` downlink
//!   command queue, `0004` a search_path fix for TimescaleDB, `0005_operators.sql`
//!   (event spans, checkpoints, scores, service plans, unknown devices, tenant settings).
//!
//! # Start-up and shutdown order
//!
//! The writer must drain before PostgreSQL stops, or accepted batches would never be
//! acknowledged (they would be resent, so nothing is lost, but shutdown should be clean):
//!
//! ```no_run
//! # async fn serve(cfg: store::StoreConfig) -> Result<(), store::StoreError> {
//! let (store, managed) = store::open_configured(&cfg).await?; // migrated, today's partitions made
//! let writer = store::Writer::spawn(store.pool().clone(), cfg.writer.clone());
//! let (stop, stopped) = tokio::sync::watch::channel(false);
//! let maintenance = store::maintenance::spawn(store.clone(), cfg.maintenance.clone(), stopped);
//! // … ingest: `writer.submit(batch).await?` then ack the device once the receipt resolves …
//! writer.shutdown().await; // everything accepted is committed, receipts resolved
//! stop.send_replace(true);
//! let _ = maintenance.await;
//! store.pool().close().await;
//! drop(managed); // stops the managed PostgreSQL if this process started it
//! # Ok(()) }
//! ```

pub mod config;
pub mod copy;
mod error;
pub mod maintenance;
pub mod managed;
pub mod query;
pub mod row;
#[cfg(feature = "testing")]
pub mod testing;
pub mod writer;

/// Re-exported so callers use the same sqlx as the store.
pub use sqlx;

use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};

pub use config::{MaintenanceConfig, ManagedConfig, StoreConfig, WriterConfig};
pub use error::{Result, StoreError};
pub use row::{EventRow, PositionRow};
pub use writer::{Batch, BatchReceipt, Receipt, WriteError, Writer, WriterHandle};

/// The embedded migrations.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// How telemetry is stored; see the crate docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageMode {
    TimescaleDb,
    Partitioned,
}

/// How `positions_hourly` is maintained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RollupKind {
    /// A TimescaleDB continuous aggregate refreshed by its policy.
    ContinuousAggregate,
    /// A table recomputed by [`maintenance`] for the hours the writer marked dirty.
    Table,
}

/// A migrated database and what the migrations chose.
#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
    mode: StorageMode,
    rollup: RollupKind,
}

/// Connection pool with the settings the writer and queries expect.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool> {
    let opts = PgConnectOptions::from_str(url)?.application_name("clutch");
    let pool = PgPoolOptions::new()
        .max_connections(max_connections.max(2))
        // Short, so a writer facing a down server gets an error to back off on quickly
        // instead of queueing inside the pool.
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(opts)
        .await?;
    Ok(pool)
}

impl Store {
    /// Runs pending migrations, then reads the storage mode.
    pub async fn open(pool: PgPool) -> Result<Store> {
        MIGRATOR.run(&pool).await?;
        Store::attach(pool).await
    }

    /// For an already-migrated database.
    pub async fn attach(pool: PgPool) -> Result<Store> {
        let rows = sqlx::query("SELECT key, value FROM clutch_meta")
            .fetch_all(&pool)
            .await?;
        let get = |k: &str| {
            rows.iter()
                .find(|r| r.get::<String, _>("key") == k)
                .map(|r| r.get::<String, _>("value"))
        };
        let mode = match get("storage_mode").as_deref() {
            Some("timescaledb") => StorageMode::TimescaleDb,
            _ => StorageMode::Partitioned,
        };
        let rollup = match get("rollup").as_deref() {
            Some("continuous_aggregate") => RollupKind::ContinuousAggregate,
            _ => RollupKind::Table,
        };
        Ok(Store { pool, mode, rollup })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn mode(&self) -> StorageMode {
        self.mode
    }

    pub fn rollup(&self) -> RollupKind {
        self.rollup
    }

    /// Erases a device's telemetry: positions, events, last position, hourly rollups and
    /// trips (privacy erasure). Returns the number of rows deleted. The registry row and
    /// anything financial are the services layer's to handle.
    pub async fn erase_device_telemetry(&self, device_id: i64) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let mut n = 0;
        for sql in [
            "DELETE FROM positions WHERE device_id = $1",
            "DELETE FROM events WHERE device_id = $1",
            "DELETE FROM device_last_position WHERE device_id = $1",
            "DELETE FROM trips WHERE device_id = $1",
        ] {
            n += sqlx::query(sql)
                .bind(device_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        if self.rollup == RollupKind::Table {
            n += sqlx::query("DELETE FROM positions_hourly WHERE device_id = $1")
                .bind(device_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        if self.rollup == RollupKind::ContinuousAggregate {
            // The aggregate drops the device's buckets on its next refresh of those
            // ranges; force it now so erasure is complete when this returns.
            sqlx::query("CALL refresh_continuous_aggregate('positions_hourly', NULL, NULL)")
                .execute(&self.pool)
                .await?;
        }
        Ok(n)
    }

    /// What `clutch db info` prints.
    pub async fn info(&self) -> Result<StoreInfo> {
        let server_version: String = sqlx::query_scalar("SHOW server_version").fetch_one(&self.pool).await?;
        let timescaledb_available: Option<String> =
            sqlx::query_scalar("SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'")
                .fetch_optional(&self.pool)
                .await?;
        let timescaledb_installed: Option<String> =
            sqlx::query_scalar("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
                .fetch_optional(&self.pool)
                .await?;
        let preload: String = sqlx::query_scalar("SELECT current_setting('shared_preload_libraries')")
            .fetch_one(&self.pool)
            .await?;
        let migrations: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
                .fetch_all(&self.pool)
                .await?;
        let partitions = match self.mode {
            StorageMode::Partitioned => maintenance::list_partitions(&self.pool, "positions").await?,
            StorageMode::TimescaleDb => sqlx::query_scalar(
                "SELECT chunk_name::text FROM timescaledb_information.chunks \
                 WHERE hypertable_name = 'positions' ORDER BY range_start",
            )
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .collect(),
        };
        let positions_estimate: i64 = sqlx::query_scalar(
            "SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)::int8 FROM pg_class c \
             WHERE c.oid = 'positions'::regclass OR c.oid IN \
             (SELECT inhrelid FROM pg_inherits WHERE inhparent = 'positions'::regclass)",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(StoreInfo {
            mode: self.mode,
            rollup: self.rollup,
            server_version,
            timescaledb_available,
            timescaledb_installed,
            timescaledb_preloaded: preload.contains("timescaledb"),
            migrations,
            positions_partitions: partitions,
            positions_estimate: positions_estimate.max(0),
        })
    }
}

/// Where the database is, in order: `DATABASE_URL`, `store.url`, else the managed
/// cluster under `store.managed.data_dir` (started, or attached to if another clutch owns
/// it). Migrates, runs maintenance once (so today's partitions exist before the first
/// write) and returns the store with the managed cluster, which must outlive every pool
/// and be stopped (dropped) after the writer has drained.
pub async fn open_configured(cfg: &StoreConfig) -> Result<(Store, Option<managed::ManagedCluster>)> {
    let external = std::env::var("DATABASE_URL").ok().or_else(|| cfg.url.clone());
    let (url, managed) = match external {
        Some(url) => (url, None),
        None => {
            let mcfg = cfg.managed.clone();
            let m = tokio::task::spawn_blocking(move || managed::ManagedCluster::start(&mcfg))
                .await
                .map_err(|e| StoreError::Managed(format!("start task: {e}")))??;
            m.ensure_database().await?;
            (m.socket_url(), Some(m))
        }
    };
    let pool = connect(&url, cfg.max_connections).await?;
    let store = Store::open(pool).await?;
    maintenance::apply_timescale_policies(&store, &cfg.maintenance).await?;
    maintenance::run_once(&store, &cfg.maintenance, chrono::Utc::now()).await?;
    Ok((store, managed))
}

/// What storage mode is active and why; printed as JSON by `clutch db info`.
#[derive(Debug, Clone, Serialize)]
pub struct StoreInfo {
    pub mode: StorageMode,
    pub rollup: RollupKind,
    pub server_version: String,
    /// `default_version` from `pg_available_extensions`, when the package is installed.
    pub timescaledb_available: Option<String>,
    pub timescaledb_installed: Option<String>,
    pub timescaledb_preloaded: bool,
    pub migrations: Vec<i64>,
    /// Daily partitions (native mode) or chunks (TimescaleDB) of `positions`.
    pub positions_partitions: Vec<String>,
    /// From planner statistics: cheap, approximate.
    pub positions_estimate: i64,
}
