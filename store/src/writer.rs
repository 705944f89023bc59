//! The batch writer: group commit over binary COPY, with durability receipts.
//!
//! ```text
//! submit(batch): encode PGCOPY tuples in the caller's task
//!      │ ──bounded mpsc──▶ worker(s): collect a group (max_rows or max_delay)
//!      ▼                                     ▼ concatenate the tuples
//!   Receipt ◀── Ok only after COMMIT ── BEGIN; COPY; last positions + dirty hours; COMMIT
//! ```
//!
//! * **Back-pressure.** The channel holds `channel_capacity` batches. When PostgreSQL is
//!   slow or down the workers stop draining it, `submit` waits, and the ingest tier stops
//!   reading sockets: memory stays bounded and devices keep their unacknowledged data.
//! * **Group commit.** Many small batches (one device frame each) share one transaction
//!   and one fsync.
//! * **Idempotency.** The fast path COPYs straight into `positions`. A resend makes it
//!   fail on the unique `(device_id, fix_time)` key; the transaction is then rolled back
//!   and the group written again through a per-connection temp staging table with
//!   `INSERT … ON CONFLICT DO NOTHING`, so a duplicate costs the slow path once and never
//!   loses the rest of the group. Staging every group costs more than the 20% the issue
//!   allows over raw COPY (measured in README), which is why it is the fallback.
//! * **Retries.** Transport errors and "server starting/stopping" retry with exponential
//!   backoff until `give_up_after`; a commit whose outcome is unknown is simply retried,
//!   since the retry is idempotent. A group that PostgreSQL rejects for its data is split
//!   so that only the offending batch fails.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use sqlx::AssertSqlSafe;
use sqlx::pool::PoolConnection;
use sqlx::{Acquire, PgConnection, PgPool, Postgres, Transaction};
use tokio::sync::{Mutex, mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::config::WriterConfig;
use crate::copy::{CopyBuffer, POSITION_COLUMNS, encode_tuples};
use crate::error::{StoreError, is_retryable_sqlx};
use crate::row::{EventRow, PositionRow};

/// What one `submit` carries: typically the positions and events of one device frame,
/// acknowledged together.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub positions: Vec<PositionRow>,
    pub events: Vec<EventRow>,
}

impl Batch {
    pub fn rows(&self) -> usize {
        self.positions.len() + self.events.len()
    }
}

impl From<Vec<PositionRow>> for Batch {
    fn from(positions: Vec<PositionRow>) -> Self {
        Batch {
            positions,
            events: Vec::new(),
        }
    }
}

impl From<Vec<EventRow>> for Batch {
    fn from(events: Vec<EventRow>) -> Self {
        Batch {
            positions: Vec::new(),
            events,
        }
    }
}

/// Proof that a batch is durable: returned only after its transaction committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchReceipt {
    /// Rows submitted (positions + events).
    pub rows: usize,
    /// Of those, rows that were already stored (resends) or repeated within the group.
    pub duplicates: usize,
    pub committed_at: DateTime<Utc>,
}

/// Why a batch was not made durable. The caller must not acknowledge it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    #[error("the writer is shut down")]
    Closed,
    /// PostgreSQL stayed unreachable or failing for `give_up_after`.
    #[error("PostgreSQL unavailable after {attempts} attempts: {last}")]
    Unavailable { attempts: u32, last: String },
    /// PostgreSQL refused this batch's data (a value it cannot store); retrying the same
    /// batch will fail the same way.
    #[error("batch rejected by PostgreSQL: {0}")]
    Rejected(String),
}

/// A submitted batch's pending durability receipt. Await it before acknowledging.
#[derive(Debug)]
pub struct Receipt(oneshot::Receiver<Result<BatchReceipt, WriteError>>);

impl Future for Receipt {
    type Output = Result<BatchReceipt, WriteError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(WriteError::Closed)))
    }
}

/// Returned by [`WriterHandle::try_submit`] when the channel is full or closed; the batch
/// comes back so the caller can apply its own "when full" policy.
#[derive(Debug)]
pub enum TrySubmitError {
    Full(Batch),
    Closed(Batch),
}

/// Counters since the writer started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    pub groups_committed: u64,
    pub batches_committed: u64,
    pub rows_committed: u64,
    pub duplicates: u64,
    /// Groups that took the staging (ON CONFLICT) path.
    pub slow_path_groups: u64,
    pub retries: u64,
    pub batches_failed: u64,
}

#[derive(Debug, Default)]
struct Counters {
    groups_committed: AtomicU64,
    batches_committed: AtomicU64,
    rows_committed: AtomicU64,
    duplicates: AtomicU64,
    slow_path_groups: AtomicU64,
    retries: AtomicU64,
    batches_failed: AtomicU64,
}

/// A submitted batch as the workers need it: positions already encoded (by the
/// submitting task, so encoding runs in parallel across ingest connections and off the
/// writer's critical path) plus the few fields the transaction still needs per row.
#[derive(Debug)]
struct Job {
    copy: Vec<u8>,
    keys: Vec<RowKey>,
    events: Vec<EventRow>,
    reply: oneshot::Sender<Result<BatchReceipt, WriteError>>,
}

#[derive(Debug, Clone, Copy)]
struct RowKey {
    device_id: i64,
    fix_time: DateTime<Utc>,
    server_time: DateTime<Utc>,
}

impl Job {
    fn new(batch: Batch, reply: oneshot::Sender<Result<BatchReceipt, WriteError>>) -> Job {
        Job {
            copy: encode_tuples(&batch.positions),
            keys: batch
                .positions
                .iter()
                .map(|r| RowKey {
                    device_id: r.device_id,
                    fix_time: r.fix_time,
                    server_time: r.server_time,
                })
                .collect(),
            events: batch.events,
            reply,
        }
    }

    fn rows(&self) -> usize {
        self.keys.len() + self.events.len()
    }
}

#[derive(Debug)]
struct Shared {
    rx: Mutex<mpsc::Receiver<Job>>,
    counters: Counters,
    shutdown: watch::Sender<bool>,
    tasks: Mutex<JoinSet<()>>,
}

/// Entry point: [`Writer::spawn`].
#[derive(Debug)]
pub struct Writer;

impl Writer {
    /// Starts `config.workers` writer tasks on the current runtime.
    pub fn spawn(pool: PgPool, config: WriterConfig) -> WriterHandle {
        let (tx, rx) = mpsc::channel(config.channel_capacity.max(1));
        let (shutdown, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            rx: Mutex::new(rx),
            counters: Counters::default(),
            shutdown,
            tasks: Mutex::new(JoinSet::new()),
        });
        let mut set = JoinSet::new();
        for worker in 0..config.workers.max(1) {
            let w = Worker {
                pool: pool.clone(),
                config: config.clone(),
                shared: shared.clone(),
                id: worker,
            };
            set.spawn(w.run());
        }
        // Not contended yet: nobody else has the Arc.
        if let Ok(mut tasks) = shared.tasks.try_lock() {
            *tasks = set;
        }
        WriterHandle { tx, shared }
    }
}

/// Cheap to clone; every clone feeds the same writer.
#[derive(Debug, Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Job>,
    shared: Arc<Shared>,
}

impl WriterHandle {
    /// Queues a batch, waiting while the channel is full (back-pressure). The returned
    /// receipt resolves after COMMIT, or with an error if the batch cannot be made durable.
    pub async fn submit(&self, batch: impl Into<Batch>) -> Result<Receipt, WriteError> {
        let (reply, rx) = oneshot::channel();
        let job = Job::new(batch.into(), reply);
        self.tx.send(job).await.map_err(|_| WriteError::Closed)?;
        Ok(Receipt(rx))
    }

    /// Queues a batch only if there is room now; otherwise hands it back.
    pub fn try_submit(&self, batch: impl Into<Batch>) -> Result<Receipt, TrySubmitError> {
        let batch = batch.into();
        let permit = match self.tx.try_reserve() {
            Ok(p) => p,
            Err(mpsc::error::TrySendError::Full(())) => return Err(TrySubmitError::Full(batch)),
            Err(mpsc::error::TrySendError::Closed(())) => return Err(TrySubmitError::Closed(batch)),
        };
        let (reply, rx) = oneshot::channel();
        permit.send(Job::new(batch, reply));
        Ok(Receipt(rx))
    }

    /// Batches waiting in the channel (not counting groups being written).
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    pub fn stats(&self) -> WriterStats {
        let c = &self.shared.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WriterStats {
            groups_committed: l(&c.groups_committed),
            batches_committed: l(&c.batches_committed),
            rows_committed: l(&c.rows_committed),
            duplicates: l(&c.duplicates),
            slow_path_groups: l(&c.slow_path_groups),
            retries: l(&c.retries),
            batches_failed: l(&c.batches_failed),
        }
    }

    /// Stops accepting batches, writes everything already accepted (retrying as usual),
    /// and returns when the workers have finished. Receipts of accepted batches resolve.
    pub async fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
        let mut tasks = self.shared.tasks.lock().await;
        while tasks.join_next().await.is_some() {}
    }
}

struct Worker {
    pool: PgPool,
    config: WriterConfig,
    shared: Arc<Shared>,
    id: usize,
}

impl Worker {
    async fn run(self) {
        let mut shutdown = self.shared.shutdown.subscribe();
        let mut conn = None;
        loop {
            let group = self.collect(&mut shutdown).await;
            if group.is_empty() {
                tracing::debug!(worker = self.id, "writer worker done");
                return;
            }
            self.write_with_retry(group, &mut conn).await;
        }
    }

    /// Waits for a first batch, then gathers more until `max_rows` or `max_delay`.
    /// Returns empty only when the channel is closed and drained.
    async fn collect(&self, shutdown: &mut watch::Receiver<bool>) -> Vec<Job> {
        let mut rx = self.shared.rx.lock().await;
        let mut group = Vec::new();
        let first = loop {
            if *shutdown.borrow() {
                // Refuse new batches; what is buffered still comes out of recv().
                rx.close();
            }
            tokio::select! {
                job = rx.recv() => break job,
                _ = shutdown.changed(), if !*shutdown.borrow() => continue,
            }
        };
        let Some(first) = first else { return group };
        let mut rows = first.rows();
        group.push(first);
        let deadline = tokio::time::Instant::now() + self.config.max_delay;
        while rows < self.config.max_rows {
            let job = match rx.try_recv() {
                Ok(job) => Some(job),
                Err(mpsc::error::TryRecvError::Disconnected) => None,
                Err(mpsc::error::TryRecvError::Empty) => {
                    if *shutdown.borrow() || self.config.max_delay.is_zero() {
                        // Draining, or committing as soon as the queue is empty: do not
                        // wait for more.
                        None
                    } else {
                        tokio::select! {
                            job = rx.recv() => job,
                            _ = tokio::time::sleep_until(deadline) => None,
                            _ = shutdown.changed() => None,
                        }
                    }
                }
            };
            let Some(job) = job else { break };
            rows += job.rows();
            group.push(job);
        }
        group
    }

    async fn write_with_retry(&self, group: Vec<Job>, conn: &mut Option<PoolConnection<Postgres>>) {
        let encoded = Encoded::new(&group);
        let started = Instant::now();
        let mut delay = self.config.retry_initial_delay;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let attempt = tokio::time::timeout(self.config.attempt_timeout, async {
                // The worker keeps its connection between groups: acquiring from the pool
                // costs a health-check round trip each time (measured in README).
                let c = match conn {
                    Some(c) => c,
                    None => conn.insert(self.pool.acquire().await?),
                };
                write_group(c, &group, &encoded).await
            })
            .await
            .unwrap_or_else(|_| {
                // The transaction is abandoned with its connection; if its COMMIT did reach
                // the server the retry finds the rows and counts them as duplicates.
                Err(StoreError::Database(sqlx::Error::PoolTimedOut))
            });
            if attempt.is_err() {
                // Its state is unknown (mid-transaction, broken): start over with another.
                *conn = None;
            }
            match attempt {
                Ok(outcome) => {
                    self.resolve(group, outcome);
                    return;
                }
                Err(e) if e.is_retryable() && started.elapsed() < self.config.give_up_after => {
                    self.shared.counters.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(worker = self.id, attempts, error = %e, retry_in = ?delay,
                        "write failed, retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.config.retry_max_delay);
                }
                Err(e) if e.is_retryable() => {
                    tracing::error!(worker = self.id, attempts, error = %e, batches = group.len(),
                        "giving up on a group; its batches are not acknowledged");
                    self.fail(
                        group,
                        WriteError::Unavailable {
                            attempts,
                            last: e.to_string(),
                        },
                    );
                    return;
                }
                Err(e) if group.len() > 1 => {
                    // Something in the data: isolate it so the other batches still land.
                    tracing::warn!(worker = self.id, error = %e, batches = group.len(),
                        "group rejected; writing its batches one by one");
                    for job in group {
                        Box::pin(self.write_with_retry(vec![job], conn)).await;
                    }
                    return;
                }
                Err(e) => {
                    tracing::error!(worker = self.id, error = %e, "batch rejected by PostgreSQL");
                    self.fail(group, WriteError::Rejected(e.to_string()));
                    return;
                }
            }
        }
    }

    fn resolve(&self, group: Vec<Job>, outcome: Outcome) {
        let c = &self.shared.counters;
        c.groups_committed.fetch_add(1, Ordering::Relaxed);
        if outcome.slow_path {
            c.slow_path_groups.fetch_add(1, Ordering::Relaxed);
        }
        for (job, duplicates) in group.into_iter().zip(outcome.duplicates) {
            let rows = job.rows();
            c.batches_committed.fetch_add(1, Ordering::Relaxed);
            c.rows_committed.fetch_add(rows as u64, Ordering::Relaxed);
            c.duplicates.fetch_add(duplicates as u64, Ordering::Relaxed);
            // A dropped receipt just means the submitter stopped caring.
            let _ = job.reply.send(Ok(BatchReceipt {
                rows,
                duplicates,
                committed_at: outcome.committed_at,
            }));
        }
    }

    fn fail(&self, group: Vec<Job>, err: WriteError) {
        self.shared
            .counters
            .batches_failed
            .fetch_add(group.len() as u64, Ordering::Relaxed);
        for job in group {
            let _ = job.reply.send(Err(err.clone()));
        }
    }
}

/// The group's COPY stream and derived keys, built once and reused by every retry.
struct Encoded {
    copy: Vec<u8>,
    positions: usize,
    /// Newest plausible fix per device, sorted by device so concurrent workers lock
    /// `device_last_position` rows in the same order (no deadlocks).
    last_devices: Vec<i64>,
    last_times: Vec<DateTime<Utc>>,
    lo: Option<DateTime<Utc>>,
    hi: Option<DateTime<Utc>>,
    dirty_hours: Vec<DateTime<Utc>>,
}

/// A fix more than this far ahead of the server clock is stored but does not become the
/// device's last position: a broken device clock must not pin it for years.
const FUTURE_TOLERANCE: TimeDelta = TimeDelta::minutes(10);

impl Encoded {
    fn new(group: &[Job]) -> Self {
        let positions: usize = group.iter().map(|j| j.keys.len()).sum();
        let bytes: usize = group.iter().map(|j| j.copy.len()).sum();
        let mut copy = CopyBuffer::with_capacity(bytes + 32);
        let mut last: HashMap<i64, DateTime<Utc>> = HashMap::new();
        let mut hours: Vec<DateTime<Utc>> = Vec::new();
        let mut lo: Option<DateTime<Utc>> = None;
        let mut hi: Option<DateTime<Utc>> = None;
        for job in group {
            copy.push_encoded(&job.copy, job.keys.len());
        }
        for k in group.iter().flat_map(|j| &j.keys) {
            let hour = k.fix_time.duration_trunc(TimeDelta::hours(1)).unwrap_or(k.fix_time);
            if hours.last() != Some(&hour) {
                hours.push(hour);
            }
            if k.fix_time <= k.server_time + FUTURE_TOLERANCE {
                let e = last.entry(k.device_id).or_insert(k.fix_time);
                if k.fix_time > *e {
                    *e = k.fix_time;
                }
                lo = Some(lo.map_or(k.fix_time, |v| v.min(k.fix_time)));
                hi = Some(hi.map_or(k.fix_time, |v| v.max(k.fix_time)));
            }
        }
        hours.sort_unstable();
        hours.dedup();
        let mut last: Vec<(i64, DateTime<Utc>)> = last.into_iter().collect();
        last.sort_unstable_by_key(|(d, _)| *d);
        Encoded {
            copy: copy.finish(),
            positions,
            last_devices: last.iter().map(|(d, _)| *d).collect(),
            last_times: last.iter().map(|(_, t)| *t).collect(),
            lo,
            hi,
            dirty_hours: hours,
        }
    }
}

struct Outcome {
    /// Per job, in group order.
    duplicates: Vec<usize>,
    committed_at: DateTime<Utc>,
    slow_path: bool,
}

async fn write_group(conn: &mut PgConnection, group: &[Job], enc: &Encoded) -> Result<Outcome, StoreError> {
    // Round trips are the cost of a group on a busy machine (README), so the fast path is
    // BEGIN, COPY, one statement for last positions + dirty hours, COMMIT. A resend makes
    // the COPY fail on the unique key: the whole transaction is then rolled back and the
    // group written again through the deduplicating path (rare, so no savepoint per group).
    let mut duplicates = vec![0usize; group.len()];
    let mut slow_path = false;
    let mut tx = conn.begin().await?;
    if enc.positions > 0 {
        match copy_in(
            &mut tx,
            &format!("COPY positions ({POSITION_COLUMNS}) FROM STDIN (FORMAT binary)"),
            &enc.copy,
        )
        .await
        {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                tx.rollback().await?;
                tx = conn.begin().await?;
                slow_path = true;
                write_positions_deduplicated(&mut tx, group, enc, &mut duplicates).await?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    for (i, job) in group.iter().enumerate() {
        if !job.events.is_empty() {
            let inserted = insert_events(&mut tx, &job.events).await?;
            duplicates[i] += job.events.len() - inserted as usize;
        }
    }
    // Last statement before COMMIT: the row locks it takes (last positions, and the
    // dirty hour, see maintenance::refresh_rollups for why that must be a lock) are held
    // only for the COMMIT.
    update_last_positions_and_mark_dirty(&mut tx, enc).await?;
    tx.commit().await?;
    Ok(Outcome {
        duplicates,
        committed_at: Utc::now(),
        slow_path,
    })
}

async fn copy_in(conn: &mut PgConnection, statement: &str, data: &[u8]) -> Result<u64, sqlx::Error> {
    let mut copy = conn.copy_in_raw(statement).await?;
    if let Err(e) = copy.send(data).await {
        // Tell the server to end COPY mode so the connection stays usable.
        let _ = copy.abort("send failed").await;
        return Err(e);
    }
    copy.finish().await
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("23505"))
}

/// The resend path: stage, then insert what is new, attributing duplicates to batches.
async fn write_positions_deduplicated(
    tx: &mut Transaction<'_, Postgres>,
    group: &[Job],
    enc: &Encoded,
    duplicates: &mut [usize],
) -> Result<(), StoreError> {
    // Per connection and emptied at commit: no catalog churn per group.
    sqlx::query(
        "CREATE TEMP TABLE IF NOT EXISTS clutch_staging_positions \
         (LIKE positions INCLUDING DEFAULTS) ON COMMIT DELETE ROWS",
    )
    .execute(&mut **tx)
    .await?;
    copy_in(
        tx,
        &format!("COPY clutch_staging_positions ({POSITION_COLUMNS}) FROM STDIN (FORMAT binary)"),
        &enc.copy,
    )
    .await?;
    let inserted: Vec<(i64, DateTime<Utc>)> = sqlx::query_as(AssertSqlSafe(format!(
        "INSERT INTO positions ({POSITION_COLUMNS}) SELECT {POSITION_COLUMNS} FROM clutch_staging_positions \
         ON CONFLICT (device_id, fix_time) DO NOTHING RETURNING device_id, fix_time"
    )))
    .fetch_all(&mut **tx)
    .await?;
    // Each inserted key is credited to the first batch that carried it; every other row
    // was a duplicate (already stored, or repeated within the group).
    // Keys in microseconds: PostgreSQL's precision, whatever the submitted rows carried.
    let mut first_owner: HashMap<(i64, i64), usize> = HashMap::with_capacity(enc.positions);
    for (i, job) in group.iter().enumerate() {
        duplicates[i] += job.keys.len();
        for k in &job.keys {
            first_owner
                .entry((k.device_id, k.fix_time.timestamp_micros()))
                .or_insert(i);
        }
    }
    for (device, time) in inserted {
        if let Some(&i) = first_owner.get(&(device, time.timestamp_micros())) {
            duplicates[i] -= 1;
        }
    }
    Ok(())
}

fn last_position_sql() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        let cols: Vec<&str> = POSITION_COLUMNS.split(',').map(str::trim).collect();
        let select: Vec<String> = cols.iter().map(|c| format!("p.{c}")).collect();
        let set: Vec<String> = cols[1..].iter().map(|c| format!("{c} = excluded.{c}")).collect();
        // One statement, one round trip: the CTE marks the dirty hours ($5; empty is a
        // no-op), the main INSERT moves each device's last position forward ($1..$4;
        // an empty device list is a no-op). PostgreSQL runs a data-modifying CTE even
        // though nothing reads it.
        format!(
            "WITH dirty AS (INSERT INTO rollup_dirty (bucket) SELECT unnest($5::timestamptz[]) \
             ON CONFLICT (bucket) DO UPDATE SET marked_at = now()) \
             INSERT INTO device_last_position ({cols}) \
             SELECT {select} FROM unnest($1::int8[], $2::timestamptz[]) AS l(device_id, fix_time) \
             JOIN positions p ON p.device_id = l.device_id AND p.fix_time = l.fix_time \
             WHERE p.fix_time >= $3 AND p.fix_time <= $4 \
             ORDER BY p.device_id \
             ON CONFLICT (device_id) DO UPDATE SET {set} \
             WHERE excluded.fix_time > device_last_position.fix_time",
            cols = POSITION_COLUMNS,
            select = select.join(", "),
            set = set.join(", "),
        )
    })
}

async fn update_last_positions_and_mark_dirty(
    tx: &mut Transaction<'_, Postgres>,
    enc: &Encoded,
) -> Result<(), StoreError> {
    if enc.dirty_hours.is_empty() && enc.last_devices.is_empty() {
        return Ok(());
    }
    // Without a plausible fix there is no range; the empty device list makes the main
    // INSERT a no-op whatever the bounds.
    let lo = enc.lo.unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
    let hi = enc.hi.unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
    sqlx::query(last_position_sql())
        .bind(&enc.last_devices)
        .bind(&enc.last_times)
        .bind(lo)
        .bind(hi)
        .bind(&enc.dirty_hours)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn insert_events(tx: &mut Transaction<'_, Postgres>, events: &[EventRow]) -> Result<u64, StoreError> {
    let device: Vec<i64> = events.iter().map(|e| e.device_id).collect();
    let time: Vec<DateTime<Utc>> = events.iter().map(|e| e.time).collect();
    let kind: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    let lat: Vec<Option<f64>> = events.iter().map(|e| e.lat).collect();
    let lon: Vec<Option<f64>> = events.iter().map(|e| e.lon).collect();
    let geofence: Vec<Option<i64>> = events.iter().map(|e| e.geofence_id).collect();
    let attrs: Vec<&serde_json::Value> = events.iter().map(|e| &e.attributes).collect();
    let res = sqlx::query(
        "INSERT INTO events (device_id, time, kind, lat, lon, geofence_id, attributes) \
         SELECT * FROM unnest($1::int8[], $2::timestamptz[], $3::text[], $4::float8[], $5::float8[], \
                              $6::int8[], $7::jsonb[]) \
         ON CONFLICT (device_id, time, kind) DO NOTHING",
    )
    .bind(device)
    .bind(time)
    .bind(kind)
    .bind(lat)
    .bind(lon)
    .bind(geofence)
    .bind(attrs)
    .execute(&mut **tx)
    .await?;
    Ok(res.rows_affected())
}

/// Exposed for the benchmark and tests: whether an error would be retried.
pub fn is_retryable(e: &sqlx::Error) -> bool {
    is_retryable_sqlx(e)
}
