//! The operators on the bus: one task that consumes [`stream::Bus`] deliveries in order,
//! drives the [`Engine`], writes its output and checkpoints its state.
//!
//! # Delivery, restart and lag
//!
//! In-process the bus is a live tap: nothing is replayed to a subscriber, and its
//! offsets restart with the process. The store is what can be replayed, so resumption is
//! keyed by the data, not by bus offsets:
//!
//! 1. Subscribe first, so every batch made durable from now on will be seen.
//! 2. Restore the checkpoint: per device its state and its **cursor** (the fix time of
//!    the last fix processed).
//! 3. Catch up from the store: every device whose latest stored fix
//!    (`device_last_position`) is past its cursor has its positions after the cursor
//!    replayed in fix-time order (at most `max_catch_up_s` back from its latest fix).
//! 4. Process live deliveries. A fix at or before the device's cursor is skipped, so a
//!    batch that was both read from the store in step 3 and delivered live is processed
//!    once.
//!
//! A subscriber that lags (the bus tells how many batches it missed) runs step 3 again:
//! the missed batches were durable before the lag was reported, so the store has them.
//!
//! Checkpoints are written only after the events and trips they reflect are in the
//! store. A crash between the two re-emits events from the last checkpoint on; their
//! unique key (device, kind, time) and the trips' (device, start time) absorb them. The
//! `bus_offset` column holds the last delivery sequence, for diagnostics only.
//!
//! On a bus whose offsets persist (NATS, Fluvio) the runtime consumes a durable group
//! instead of a live tap, and commits each shard's last processed offset after the
//! checkpoint that reflects it; the broker then resumes a restarted member there. What
//! was delivered after the last commit comes again: fixes at or before the cursors are
//! skipped, the rest is processed from the checkpointed state.
//!
//! # Timers
//!
//! Timers (offline, trip end after silence, open episodes) compare a device's last
//! arrival with "now". While deliveries are flowing, "now" is the latest arrival time
//! processed (never ahead of the clock), so a runtime working through a backlog does not
//! mistake it for silence; when the bus is idle it is the [`Clock`].
//!
//! # Publishing
//!
//! Events are published on a `tokio::sync::broadcast` of [`OperatorEvent`]
//! ([`OperatorsHandle::subscribe`]) after they are written, so the API never shows an
//! event the store does not have. A slow subscriber loses the oldest events (broadcast
//! lag) and can read them from the store.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ingest::DeviceBatch;
use sqlx::{AssertSqlSafe, PgPool};
use stream::{Bus, Offset, RecvError, Subscription};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::OperatorsConfig;
use crate::detector::DetectorFactory;
use crate::engine::{DeviceInfo, Engine, EngineStats, Output};
use crate::event::OperatorEvent;
use crate::fences::FenceSet;
use crate::sink;

/// Deliveries handled per scheduler turn when a burst is queued (about a millisecond of
/// work for one-fix batches), before timers, flushes and commands get their look in.
const DRAIN_PER_TURN: usize = 512;

/// Where "now" comes from for timers.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    fn now(&self) -> DateTime<Utc>;
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock tests set by hand.
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new(t: DateTime<Utc>) -> Arc<ManualClock> {
        Arc::new(ManualClock(Mutex::new(t)))
    }
    pub fn set(&self, t: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = t;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OperatorsError {
    #[error("operators: database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("operators: task failed: {0}")]
    Task(String),
    #[error("operators: bus: {0}")]
    Bus(String),
}

/// What the runtime has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RuntimeStats {
    pub engine: EngineStats,
    pub deliveries: u64,
    pub lagged_batches: u64,
    pub catch_ups: u64,
    pub caught_up_fixes: u64,
    pub events_written: u64,
    pub flush_errors: u64,
    pub checkpoints: u64,
    pub fence_reloads: u64,
}

enum Cmd {
    Sync(oneshot::Sender<RuntimeStats>),
    Tick(oneshot::Sender<RuntimeStats>),
    Checkpoint(oneshot::Sender<Result<(), String>>),
    CatchUp(oneshot::Sender<RuntimeStats>),
}

/// The running operators.
#[derive(Debug)]
pub struct OperatorsHandle {
    cmd: mpsc::Sender<Cmd>,
    events: broadcast::Sender<OperatorEvent>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl OperatorsHandle {
    /// Operator events, after they are in the store.
    pub fn subscribe(&self) -> broadcast::Receiver<OperatorEvent> {
        self.events.subscribe()
    }

    /// The sender, for components that want to hand out receivers later.
    pub fn events(&self) -> broadcast::Sender<OperatorEvent> {
        self.events.clone()
    }

    async fn ask<T>(&self, f: impl FnOnce(oneshot::Sender<T>) -> Cmd) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.cmd.send(f(tx)).await.ok()?;
        rx.await.ok()
    }

    /// Processes every delivery already made, writes the output, returns the stats.
    pub async fn sync(&self) -> Option<RuntimeStats> {
        self.ask(Cmd::Sync).await
    }

    /// Runs the timers now (at the clock's time) and writes the output.
    pub async fn tick(&self) -> Option<RuntimeStats> {
        self.ask(Cmd::Tick).await
    }

    pub async fn checkpoint(&self) -> Result<(), String> {
        self.ask(Cmd::Checkpoint)
            .await
            .unwrap_or(Err("operators stopped".into()))
    }

    /// Replays from the store as after a lag.
    pub async fn catch_up(&self) -> Option<RuntimeStats> {
        self.ask(Cmd::CatchUp).await
    }

    /// Ends the task at once, writing and checkpointing nothing: what a crash does (for
    /// tests of recovery).
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
        self.stop.cancel();
    }

    /// Stops: the output so far is written and the state checkpointed.
    pub async fn stop(self) {
        self.stop.cancel();
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "operators task ended abnormally");
        }
    }
}

/// Starts the operators on `bus`. Returns once subscribed and restored; the catch-up
/// from the store runs first thing in the task (a [`OperatorsHandle::sync`] returns
/// after it).
///
/// On a bus whose offsets persist (NATS, Fluvio) the operators join the durable consumer
/// group named after `cfg.name` and commit its offsets after each checkpoint; on the
/// in-process bus they take a live tap and resume from the store (see the module docs).
pub async fn start(
    pool: PgPool,
    bus: &dyn Bus<DeviceBatch>,
    cfg: OperatorsConfig,
    clock: Arc<dyn Clock>,
    detectors: Option<DetectorFactory>,
) -> Result<OperatorsHandle, OperatorsError> {
    let durable = bus.offsets_persist();
    let sub = if durable {
        bus.consume(&group_name(&cfg.name))
            .await
            .map_err(|e| OperatorsError::Bus(e.to_string()))?
    } else {
        bus.subscribe()
    };
    let cfg = Arc::new(cfg);
    let mut engine = Engine::new(cfg.clone());
    if let Some(f) = detectors {
        engine.set_detectors(f);
    }
    engine.set_fences(Arc::new(FenceSet::load(&pool).await?));
    load_device_info(&pool, &mut engine).await?;
    let parts = cfg.checkpoint_partitions.max(1) as i32;
    sqlx::query("DELETE FROM operator_checkpoints WHERE operator = $1 AND shard >= $2")
        .bind(&cfg.name)
        .bind(parts)
        .execute(&pool)
        .await?;
    let saved: Vec<(i32, Vec<u8>)> =
        sqlx::query_as("SELECT shard, state FROM operator_checkpoints WHERE operator = $1 ORDER BY shard")
            .bind(&cfg.name)
            .fetch_all(&pool)
            .await?;
    let mut restored = 0;
    for (shard, state) in saved {
        match engine.restore(&state) {
            Ok(n) => restored += n,
            Err(e) => tracing::warn!(shard, error = %e, "checkpoint unreadable; its devices replay from the store"),
        }
    }
    tracing::info!(devices = restored, fences = engine.fences().count, "operators restored");

    let (events, _) = broadcast::channel(cfg.publish_capacity.max(16));
    let (cmd_tx, cmd_rx) = mpsc::channel(16);
    let (fence_tx, fence_rx) = mpsc::channel(1);
    let stop = CancellationToken::new();
    tokio::spawn(listen_fences(pool.clone(), fence_tx, stop.clone()));
    let rt = Runtime {
        pool,
        cfg,
        clock,
        engine,
        pending: Output::default(),
        events: events.clone(),
        stats: RuntimeStats::default(),
        last_offset: 0,
        durable,
        uncommitted: std::collections::BTreeMap::new(),
        since_commit: 0,
        watermark: None,
        last_delivery: Instant::now(),
    };
    let task = tokio::spawn(rt.run(sub, cmd_rx, fence_rx, stop.clone()));
    Ok(OperatorsHandle {
        cmd: cmd_tx,
        events,
        stop,
        task,
    })
}

/// The consumer group of operators named `name`: letters, digits, `-` and `_` only.
fn group_name(name: &str) -> String {
    let g: String = name
        .chars()
        .take(64)
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
        .collect();
    if g.is_empty() { "operators".to_owned() } else { g }
}

async fn load_device_info(pool: &PgPool, engine: &mut Engine) -> Result<(), sqlx::Error> {
    for (id, info) in fetch_device_info(pool, None).await? {
        engine.set_device_info(id, info);
    }
    Ok(())
}

/// Registry data of every device, or of one: tenant, class, vehicle, tank size, and the
/// vehicle's service plans.
async fn fetch_device_info(pool: &PgPool, device: Option<i64>) -> Result<Vec<(i64, DeviceInfo)>, sqlx::Error> {
    type Row = (i64, i64, Option<String>, Option<i64>, Option<f64>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT d.id, d.tenant_id, coalesce(v.attributes->>'class', d.attributes->>'vehicle_class'), \
         d.vehicle_id, v.fuel_tank_l \
         FROM devices d LEFT JOIN vehicles v ON v.id = d.vehicle_id WHERE $1::int8 IS NULL OR d.id = $1",
    )
    .bind(device)
    .fetch_all(pool)
    .await?;
    type PlanRow = (
        i64,
        i64,
        String,
        Option<f64>,
        Option<f64>,
        Option<i32>,
        Option<DateTime<Utc>>,
        Option<f64>,
        Option<f64>,
        DateTime<Utc>,
    );
    let plans: Vec<PlanRow> = sqlx::query_as(
        "SELECT p.vehicle_id, p.id, p.name, p.every_km, p.every_engine_hours, p.every_days, p.last_done_at, \
         p.last_done_km, p.last_done_engine_h, p.created_at FROM service_plans p \
         WHERE $1::int8 IS NULL OR p.vehicle_id = (SELECT vehicle_id FROM devices WHERE id = $1) ORDER BY p.id",
    )
    .bind(device)
    .fetch_all(pool)
    .await?;
    let mut by_vehicle: std::collections::HashMap<i64, Vec<analytics::maintenance::ServicePlan>> =
        std::collections::HashMap::new();
    for (vehicle, id, name, km, h, days, at, done_km, done_h, created) in plans {
        by_vehicle
            .entry(vehicle)
            .or_default()
            .push(analytics::maintenance::ServicePlan {
                id,
                name,
                every_km: km,
                every_engine_hours: h,
                every_days: days,
                last_done_at: at,
                last_done_km: done_km,
                last_done_engine_h: done_h,
                created_at: Some(created),
            });
    }
    Ok(rows
        .into_iter()
        .map(|(id, tenant, class, vehicle, tank)| {
            let info = DeviceInfo {
                tenant_id: Some(tenant),
                class,
                vehicle_id: vehicle,
                tank_l: tank.filter(|t| t.is_finite() && *t > 0.0),
                service_plans: vehicle.and_then(|v| by_vehicle.get(&v).cloned()).unwrap_or_default(),
            };
            (id, info)
        })
        .collect())
}

/// Wakes the runtime on `NOTIFY clutch_geofences` (fences) and `clutch_operator_config`
/// (service plans, tank sizes, a device's vehicle; migration 0014); reconnects after errors.
async fn listen_fences(pool: PgPool, tx: mpsc::Sender<()>, stop: CancellationToken) {
    loop {
        let listener = async {
            let mut l = sqlx::postgres::PgListener::connect_with(&pool).await?;
            l.listen_all(["clutch_geofences", "clutch_operator_config"]).await?;
            // Changes made while (re)connecting are picked up by one reload now.
            let _ = tx.try_send(());
            loop {
                l.recv().await?;
                let _ = tx.try_send(());
            }
            #[allow(unreachable_code)]
            Ok::<(), sqlx::Error>(())
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            r = listener => {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "geofence listener failed; retrying");
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

struct Runtime {
    pool: PgPool,
    cfg: Arc<OperatorsConfig>,
    clock: Arc<dyn Clock>,
    engine: Engine,
    /// Output not yet in the store (a write failed): retried, and no checkpoint until it is.
    pending: Output,
    events: broadcast::Sender<OperatorEvent>,
    stats: RuntimeStats,
    last_offset: u64,
    /// Consuming a durable group: offsets are committed after each checkpoint.
    durable: bool,
    /// Per bus shard, the last delivery processed and not yet committed.
    uncommitted: std::collections::BTreeMap<u32, u64>,
    since_commit: u64,
    /// Latest arrival time processed, and when the last delivery came: while batches
    /// are flowing, timers run at the data's time, not the clock's, so a runtime that is
    /// behind the bus does not take its own backlog for silent devices.
    watermark: Option<DateTime<Utc>>,
    last_delivery: Instant,
}

impl Runtime {
    /// The time timers run at. While deliveries are queued (`backlog`) or were flowing a
    /// moment ago, that is the data's time: a runtime behind the bus must not take the
    /// devices whose batches it has not read yet for silent ones (that split overspeed
    /// episodes and trips when a loaded machine let the queue grow past a minute of data).
    fn timer_now(&self, busy_for: Duration, backlog: bool) -> DateTime<Utc> {
        let now = self.clock.now();
        match self.watermark {
            Some(w) if backlog || self.last_delivery.elapsed() < busy_for => w.min(now),
            _ => now,
        }
    }

    async fn run(
        mut self,
        mut sub: Subscription<DeviceBatch>,
        mut cmds: mpsc::Receiver<Cmd>,
        mut fences: mpsc::Receiver<()>,
        stop: CancellationToken,
    ) {
        self.catch_up().await;
        let tick_every = Duration::from_millis(self.cfg.tick_interval_ms.max(10));
        let flush_every = Duration::from_millis(self.cfg.flush_interval_ms.max(1));
        let ckpt_every = Duration::from_secs(self.cfg.checkpoint_interval_s.max(1));
        let reload_every = Duration::from_secs(self.cfg.geofences.reload_interval_s.max(1));
        let (mut last_tick, mut last_flush, mut last_ckpt, mut last_reload) =
            (Instant::now(), Instant::now(), Instant::now(), Instant::now());
        let mut wake = tokio::time::interval(tick_every.min(flush_every));
        wake.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut bus_open = true;
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                r = sub.recv(), if bus_open => {
                    // What is already queued is taken in the same turn (see
                    // `Subscription::try_recv`), up to a bound so timers still run.
                    let mut next = Some(r);
                    let mut taken = 0;
                    while let Some(r) = next.take() {
                        match r {
                            Ok(d) => {
                                self.stats.deliveries += 1;
                                self.last_offset = d.offset.seq;
                                self.deliver(&d.batch).await;
                                if self.durable {
                                    self.uncommitted.insert(d.offset.shard, d.offset.seq);
                                    self.since_commit += 1;
                                }
                            }
                            Err(RecvError::Lagged(n)) => {
                                tracing::warn!(missed = n, "operators lagged behind the bus; catching up from the store");
                                self.stats.lagged_batches += n;
                                self.catch_up().await;
                            }
                            Err(RecvError::Closed) => bus_open = false,
                        }
                        taken += 1;
                        if bus_open && taken < DRAIN_PER_TURN {
                            next = sub.try_recv();
                        }
                    }
                }
                Some(cmd) = cmds.recv() => self.command(cmd, &mut sub).await,
                Some(()) = fences.recv() => {
                    self.reload().await;
                    last_reload = Instant::now();
                }
                _ = wake.tick() => {}
            }
            // Timers run here too, so a busy bus cannot starve them.
            if last_tick.elapsed() >= tick_every {
                last_tick = Instant::now();
                let now = self.timer_now(tick_every, sub.pending() > 0);
                self.engine.tick(now);
            }
            if last_flush.elapsed() >= flush_every || self.engine.pending_events() >= self.cfg.flush_max_events {
                last_flush = Instant::now();
                self.flush().await;
            }
            let commit_due = self.durable && self.since_commit >= self.cfg.commit_after_batches.max(1);
            if last_ckpt.elapsed() >= ckpt_every || commit_due {
                last_ckpt = Instant::now();
                if let Err(e) = self.checkpoint(&mut sub).await {
                    tracing::warn!(error = %e, "operator checkpoint failed; retrying later");
                }
            }
            if last_reload.elapsed() >= reload_every {
                last_reload = Instant::now();
                self.reload().await;
            }
        }
        self.flush().await;
        if let Err(e) = self.checkpoint(&mut sub).await {
            tracing::warn!(error = %e, "final operator checkpoint failed; the next start replays from the store");
        }
        tracing::info!(stats = ?self.stats, "operators stopped");
    }

    async fn command(&mut self, cmd: Cmd, sub: &mut Subscription<DeviceBatch>) {
        match cmd {
            Cmd::Sync(tx) => {
                self.flush().await;
                let _ = tx.send(self.stats());
            }
            Cmd::Tick(tx) => {
                self.engine.tick(self.clock.now());
                self.flush().await;
                let _ = tx.send(self.stats());
            }
            Cmd::Checkpoint(tx) => {
                self.flush().await;
                let _ = tx.send(self.checkpoint(sub).await.map_err(|e| e.to_string()));
            }
            Cmd::CatchUp(tx) => {
                self.catch_up().await;
                self.flush().await;
                let _ = tx.send(self.stats());
            }
        }
    }

    fn stats(&self) -> RuntimeStats {
        RuntimeStats {
            engine: self.engine.stats(),
            ..self.stats
        }
    }

    async fn deliver(&mut self, batch: &DeviceBatch) {
        if batch.positions.is_empty() {
            return;
        }
        let device = batch.device_id;
        self.last_delivery = Instant::now();
        if let Some(t) = batch.positions.iter().map(|p| p.server_time).max() {
            self.watermark = Some(self.watermark.map_or(t, |w| w.max(t)));
        }
        if !self.engine.knows_device(device) {
            self.lookup_device(device).await;
        }
        self.engine.process(device, &batch.positions);
    }

    async fn lookup_device(&mut self, device: i64) {
        let info = match fetch_device_info(&self.pool, Some(device)).await {
            Ok(mut v) => v.pop().map(|(_, i)| i).unwrap_or_default(),
            Err(e) => {
                tracing::warn!(device, error = %e, "device lookup failed; no fences for it until the next reload");
                DeviceInfo::default()
            }
        };
        self.engine.set_device_info(device, info);
    }

    async fn reload(&mut self) {
        match FenceSet::load(&self.pool).await {
            Ok(f) => {
                self.stats.fence_reloads += 1;
                tracing::debug!(
                    fences = f.count,
                    rejected = f.rejected.len(),
                    "geofences and devices reloaded"
                );
                self.engine.set_fences(Arc::new(f));
            }
            Err(e) => tracing::warn!(error = %e, "geofence reload failed; keeping the previous fences"),
        }
        if let Err(e) = load_device_info(&self.pool, &mut self.engine).await {
            tracing::warn!(error = %e, "device reload failed");
        }
    }

    /// Replays from the store what the cursors have not seen (see the module docs).
    ///
    /// Every lagging device is read in the same statement, a page each per round trip:
    /// a tap that fell behind under a burst must catch up faster than the bus fills its
    /// buffer again, and a query per device (hundreds of round trips on a busy database)
    /// did not, so one-fix-per-frame fleets spiralled from catch-up to catch-up.
    async fn catch_up(&mut self) {
        self.stats.catch_ups += 1;
        let latest: Vec<(i64, DateTime<Utc>)> =
            match sqlx::query_as("SELECT device_id, fix_time FROM device_last_position")
                .fetch_all(&self.pool)
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "catch-up failed: cannot read latest positions");
                    return;
                }
            };
        let window = chrono::Duration::seconds(self.cfg.max_catch_up_s.min(i64::MAX as u64 / 2) as i64);
        // (device, read from, `from` itself included, up to)
        let mut todo: Vec<(i64, DateTime<Utc>, bool, DateTime<Utc>)> = Vec::new();
        let mut unknown = 0usize;
        for (device, last) in latest {
            let cursor = self.engine.cursor(device);
            if cursor.is_some_and(|c| last <= c) {
                continue;
            }
            if !self.engine.knows_device(device) {
                unknown += 1;
            }
            let floor = last - window;
            let from = cursor.map_or(floor, |c| c.max(floor));
            let inclusive = cursor.is_none_or(|c| c < floor);
            todo.push((device, from, inclusive, last));
        }
        if unknown > 0 {
            // One registry read for all of them rather than a lookup each.
            if let Err(e) = load_device_info(&self.pool, &mut self.engine).await {
                tracing::warn!(error = %e, "device reload failed");
            }
        }
        // About this many rows per round trip, shared by the devices still behind.
        const ROWS_PER_READ: usize = 20_000;
        let sql = format!(
            "SELECT p.* FROM unnest($1::int8[], $2::timestamptz[], $3::bool[], $4::timestamptz[]) \
               WITH ORDINALITY AS c(device_id, from_t, incl, last_t, ord) \
             CROSS JOIN LATERAL (SELECT {} FROM positions q WHERE q.device_id = c.device_id \
               AND q.fix_time >= c.from_t AND (c.incl OR q.fix_time > c.from_t) AND q.fix_time <= c.last_t \
               ORDER BY q.fix_time LIMIT $5) p \
             ORDER BY c.ord, p.fix_time",
            store::copy::POSITION_COLUMNS
        );
        let mut todo = std::collections::VecDeque::from(todo);
        while !todo.is_empty() {
            // A page of at least 100 rows each; with more devices behind than that
            // allows, the rest wait for the next round trip.
            let per_device = (ROWS_PER_READ / todo.len()).clamp(100, 5000);
            let take = (ROWS_PER_READ / per_device).clamp(1, todo.len());
            let round: Vec<_> = todo.drain(..take).collect();
            let rows: Vec<store::PositionRow> = match sqlx::query_as(AssertSqlSafe(sql.as_str()))
                .bind(round.iter().map(|t| t.0).collect::<Vec<_>>())
                .bind(round.iter().map(|t| t.1).collect::<Vec<_>>())
                .bind(round.iter().map(|t| t.2).collect::<Vec<_>>())
                .bind(round.iter().map(|t| t.3).collect::<Vec<_>>())
                .bind(per_device as i64)
                .fetch_all(&self.pool)
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "catch-up read failed");
                    return;
                }
            };
            self.stats.caught_up_fixes += rows.len() as u64;
            // Rows come grouped by device in `round` order.
            let mut i = 0;
            for (device, _, _, last) in &round {
                let j = i + rows[i..].iter().take_while(|r| r.device_id == *device).count();
                let mine = &rows[i..j];
                i = j;
                self.engine.process(*device, mine);
                if mine.len() == per_device
                    && let Some(r) = mine.last()
                {
                    todo.push_back((*device, r.fix_time, false, *last));
                }
                if self.engine.pending_events() >= self.cfg.flush_max_events {
                    self.flush().await;
                }
            }
        }
    }

    async fn flush(&mut self) {
        let out = self.engine.take_output();
        self.pending.events.extend(out.events);
        self.pending.trips.extend(out.trips);
        if self.pending.is_empty() {
            return;
        }
        let r = async {
            let n = sink::write_events(&self.pool, &self.pending.events).await?;
            sink::write_trips(&self.pool, &self.pending.trips).await?;
            Ok::<u64, sqlx::Error>(n)
        }
        .await;
        match r {
            Ok(n) => {
                self.stats.events_written += n;
                let done = std::mem::take(&mut self.pending);
                for e in done.events {
                    // No subscriber is fine: the store has the event.
                    let _ = self.events.send(e);
                }
            }
            Err(e) => {
                self.stats.flush_errors += 1;
                tracing::warn!(error = %e, pending = self.pending.events.len(), "writing operator events failed; retrying");
            }
        }
    }

    /// Writes the changed partitions' state, then (durable group) commits the bus
    /// offsets that state reflects. A crash between the two redelivers batches the
    /// state has seen: their fixes are at or before the devices' cursors and skipped.
    async fn checkpoint(&mut self, sub: &mut Subscription<DeviceBatch>) -> Result<(), OperatorsError> {
        // State must never get ahead of the events it has emitted: write them first.
        self.flush().await;
        if !self.pending.is_empty() {
            return Ok(());
        }
        let parts = self.engine.take_dirty();
        if !parts.is_empty() {
            self.write_checkpoint(parts).await?;
        }
        if self.durable && !self.uncommitted.is_empty() {
            let done = std::mem::take(&mut self.uncommitted);
            self.since_commit = 0;
            for (&shard, &seq) in &done {
                sub.commit(Offset { shard, seq });
            }
            if let Err(e) = sub.sync_commits().await {
                // Not lost: committed again with the next checkpoint (or redelivered).
                for (shard, seq) in done {
                    self.uncommitted.entry(shard).or_insert(seq);
                }
                return Err(OperatorsError::Bus(e.to_string()));
            }
        }
        Ok(())
    }

    async fn write_checkpoint(&mut self, parts: Vec<u32>) -> Result<(), OperatorsError> {
        let r = async {
            let mut tx = self.pool.begin().await?;
            for &p in &parts {
                let state = self.engine.snapshot(p);
                sqlx::query(
                    "INSERT INTO operator_checkpoints (operator, shard, bus_offset, state, updated_at) \
                     VALUES ($1, $2, $3, $4, now()) ON CONFLICT (operator, shard) DO UPDATE SET \
                     bus_offset = excluded.bus_offset, state = excluded.state, updated_at = now()",
                )
                .bind(&self.cfg.name)
                .bind(p as i32)
                .bind(self.last_offset.min(i64::MAX as u64) as i64)
                .bind(state)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await
        }
        .await;
        match r {
            Ok(()) => {
                self.stats.checkpoints += 1;
                Ok(())
            }
            Err(e) => {
                self.engine.mark_dirty(&parts);
                Err(e.into())
            }
        }
    }
}
