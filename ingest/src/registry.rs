//! Identifier → device, a cache over the store's `devices` table.
//!
//! Positive answers are cached for the life of the process (a device's id never
//! changes; disabling one takes effect on its next connection after a restart — the API
//! issue adds invalidation). Unknown identifiers are remembered with when and how often
//! they were seen: that list is what admins look at to register devices, it makes
//! "logged once per identifier" possible, and it spares the database a query per
//! reconnect of a device that keeps knocking.
//!
//! The unknown list is also kept in the store's `unknown_devices` table (one row per
//! identifier: attempts, first/last seen, remote address) for admins (`clutch device
//! unknown`, the API). Attempts are counted in memory and written by [`flush_unknown`]
//! in one statement for all identifiers, at most once a second (a new identifier wakes
//! it, otherwise every [`UNKNOWN_FLUSH_EVERY`]): a flood of refused logins costs the
//! database one small write per second, never one per attempt. Registering a device
//! removes its row; a flush never brings back the row of a registered identifier.
//!
//! [`flush_unknown`]: Registry::flush_unknown

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use protocols::Protocol;
use serde::Serialize;
use sqlx::PgPool;

use crate::config::UnknownDevices;
use crate::error::Result;

/// What [`Registry::resolve`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    Known(i64),
    /// Not registered (or disabled) and the policy is `refuse`. `first_time` is true the
    /// first time this identifier is refused since start, for logging once.
    Refused {
        first_time: bool,
    },
}

/// An unregistered identifier that tried to connect.
#[derive(Debug, Clone, Serialize)]
pub struct UnknownDevice {
    pub protocol: String,
    pub identifier: String,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub attempts: u64,
    /// Where the last attempt came from (`ip:port`).
    pub remote_addr: Option<String>,
}

#[derive(Debug)]
struct Unknown {
    info: UnknownDevice,
    checked: Instant,
    /// Attempts not yet written to `unknown_devices`.
    pending: u64,
}

/// Identifiers remembered in memory. A flood of random identifiers must not grow the
/// process without bound: past this, the least recently seen are forgotten (their
/// unwritten attempts with them; their rows stay in the table).
const MAX_UNKNOWN: usize = 10_000;

/// How often pending unknown-device attempts are written when no new identifier shows up.
pub const UNKNOWN_FLUSH_EVERY: Duration = Duration::from_secs(10);

/// How long a refusal is trusted before the database is asked again (a device added
/// with `clutch device add` is accepted at most this long after).
const NEGATIVE_TTL: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Registry {
    pool: PgPool,
    policy: UnknownDevices,
    default_tenant: String,
    known: Mutex<HashMap<(Protocol, String), i64>>,
    unknown: Mutex<HashMap<(Protocol, String), Unknown>>,
    /// Woken when an identifier is refused for the first time, so it is listed quickly.
    new_unknown: tokio::sync::Notify,
    /// Statements written to `unknown_devices`, however many attempts they carried.
    unknown_writes: std::sync::atomic::AtomicU64,
}

impl Registry {
    pub fn new(pool: PgPool, policy: UnknownDevices, default_tenant: impl Into<String>) -> Self {
        Registry {
            pool,
            policy,
            default_tenant: default_tenant.into(),
            known: Mutex::new(HashMap::new()),
            unknown: Mutex::new(HashMap::new()),
            new_unknown: tokio::sync::Notify::new(),
            unknown_writes: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn policy(&self) -> UnknownDevices {
        self.policy
    }

    pub async fn resolve(&self, protocol: Protocol, identifier: &str) -> Result<Resolution> {
        self.resolve_from(protocol, identifier, None).await
    }

    /// [`resolve`](Self::resolve), recording where a refused device connected from.
    pub async fn resolve_from(
        &self,
        protocol: Protocol,
        identifier: &str,
        peer: Option<SocketAddr>,
    ) -> Result<Resolution> {
        let key = (protocol, identifier.to_string());
        if let Some(id) = lock(&self.known).get(&key) {
            return Ok(Resolution::Known(*id));
        }
        if self.policy == UnknownDevices::Refuse
            && let Some(u) = lock(&self.unknown).get_mut(&key)
            && u.checked.elapsed() < NEGATIVE_TTL
        {
            u.info.attempts += 1;
            u.pending += 1;
            u.info.last_seen = Utc::now();
            if let Some(peer) = peer {
                u.info.remote_addr = Some(peer.to_string());
            }
            return Ok(Resolution::Refused { first_time: false });
        }
        let row: Option<(i64, bool)> =
            sqlx::query_as("SELECT id, disabled FROM devices WHERE protocol = $1 AND identifier = $2")
                .bind(protocol.name())
                .bind(identifier)
                .fetch_optional(&self.pool)
                .await?;
        let id = match (row, self.policy) {
            (Some((id, false)), _) => id,
            (None, UnknownDevices::Register) => {
                let id = add_device(&self.pool, &self.default_tenant, identifier, protocol).await?;
                tracing::info!(%protocol, identifier, device_id = id, "registered new device");
                id
            }
            // A disabled device is refused whatever the policy.
            (Some((_, true)), _) | (None, UnknownDevices::Refuse) => {
                let now = Utc::now();
                let mut unknown = lock(&self.unknown);
                let first_time = !unknown.contains_key(&key);
                if first_time && unknown.len() >= MAX_UNKNOWN {
                    evict_oldest(&mut unknown);
                }
                let u = unknown.entry(key).or_insert_with(|| Unknown {
                    info: UnknownDevice {
                        protocol: protocol.name().into(),
                        identifier: identifier.into(),
                        first_seen: now,
                        last_seen: now,
                        attempts: 0,
                        remote_addr: None,
                    },
                    checked: Instant::now(),
                    pending: 0,
                });
                u.info.attempts += 1;
                u.pending += 1;
                u.info.last_seen = now;
                if let Some(peer) = peer {
                    u.info.remote_addr = Some(peer.to_string());
                }
                u.checked = Instant::now();
                metrics::gauge!(crate::metrics::UNKNOWN_DEVICES).set(unknown.len() as f64);
                drop(unknown);
                if first_time {
                    self.new_unknown.notify_one();
                }
                return Ok(Resolution::Refused { first_time });
            }
        };
        lock(&self.unknown).remove(&key);
        lock(&self.known).insert(key, id);
        Ok(Resolution::Known(id))
    }

    /// Writes the attempts counted since the last flush to `unknown_devices`, all
    /// identifiers in one statement. Returns how many identifiers were written. On
    /// failure the counts stay pending for the next flush.
    pub async fn flush_unknown(&self) -> Result<usize> {
        let (keys, rows): (Vec<(Protocol, String)>, Vec<UnknownDevice>) = {
            let mut unknown = lock(&self.unknown);
            unknown
                .iter_mut()
                .filter(|(_, u)| u.pending > 0)
                .map(|(k, u)| {
                    let mut info = u.info.clone();
                    info.attempts = std::mem::take(&mut u.pending);
                    (k.clone(), info)
                })
                .unzip()
        };
        if rows.is_empty() {
            return Ok(0);
        }
        let r = sqlx::query(
            "INSERT INTO unknown_devices (protocol, identifier, first_seen, last_seen, attempts, remote_addr) \
             SELECT u.protocol, u.identifier, u.first_seen, u.last_seen, u.attempts, u.remote_addr \
             FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::int8[], $6::text[]) \
                  AS u(protocol, identifier, first_seen, last_seen, attempts, remote_addr) \
             WHERE NOT EXISTS (SELECT 1 FROM devices d WHERE d.protocol = u.protocol AND d.identifier = u.identifier) \
             ON CONFLICT (protocol, identifier) DO UPDATE SET \
               attempts = unknown_devices.attempts + excluded.attempts, \
               last_seen = greatest(unknown_devices.last_seen, excluded.last_seen), \
               remote_addr = coalesce(excluded.remote_addr, unknown_devices.remote_addr)",
        )
        .bind(rows.iter().map(|u| u.protocol.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|u| u.identifier.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|u| u.first_seen).collect::<Vec<_>>())
        .bind(rows.iter().map(|u| u.last_seen).collect::<Vec<_>>())
        .bind(rows.iter().map(|u| u.attempts as i64).collect::<Vec<_>>())
        .bind(rows.iter().map(|u| u.remote_addr.as_deref()).collect::<Vec<_>>())
        .execute(&self.pool)
        .await;
        if let Err(e) = r {
            // Put the counts back for the next try.
            let mut unknown = lock(&self.unknown);
            for (key, row) in keys.iter().zip(&rows) {
                if let Some(u) = unknown.get_mut(key) {
                    u.pending += row.attempts;
                }
            }
            return Err(e.into());
        }
        self.unknown_writes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(rows.len())
    }

    /// How many times [`flush_unknown`](Self::flush_unknown) wrote to the store.
    pub fn unknown_writes(&self) -> u64 {
        self.unknown_writes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Unknown identifiers seen since start, most recent first.
    pub fn unknown_devices(&self) -> Vec<UnknownDevice> {
        let mut v: Vec<UnknownDevice> = lock(&self.unknown).values().map(|u| u.info.clone()).collect();
        v.sort_by_key(|u| std::cmp::Reverse(u.last_seen));
        v
    }
}

/// Forgets the least recently seen tenth of the unknown identifiers.
fn evict_oldest(unknown: &mut HashMap<(Protocol, String), Unknown>) {
    let mut seen: Vec<DateTime<Utc>> = unknown.values().map(|u| u.info.last_seen).collect();
    let cut = (seen.len() / 10).max(1);
    let (_, &mut threshold, _) = seen.select_nth_unstable(cut - 1);
    unknown.retain(|_, u| u.info.last_seen > threshold);
}

/// Writes refused identifiers' attempts to the store: soon after a new identifier shows
/// up, otherwise every [`UNKNOWN_FLUSH_EVERY`], never more than once a second; once
/// more at shutdown.
pub(crate) async fn flush_unknown_loop(
    registry: std::sync::Arc<Registry>,
    cancel: tokio_util::sync::CancellationToken,
) {
    loop {
        let stop = tokio::select! {
            _ = cancel.cancelled() => true,
            _ = registry.new_unknown.notified() => false,
            _ = tokio::time::sleep(UNKNOWN_FLUSH_EVERY) => false,
        };
        if let Err(error) = registry.flush_unknown().await {
            tracing::warn!(%error, "recording unknown devices failed; retrying later");
        }
        if stop {
            return;
        }
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Identifiers that tried to report without being registered, from `unknown_devices`,
/// most recently seen first.
pub async fn list_unknown(pool: &PgPool) -> Result<Vec<UnknownDevice>> {
    type Row = (String, String, DateTime<Utc>, DateTime<Utc>, i64, Option<String>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT protocol, identifier, first_seen, last_seen, attempts, remote_addr FROM unknown_devices \
         ORDER BY last_seen DESC, protocol, identifier",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(protocol, identifier, first_seen, last_seen, attempts, remote_addr)| UnknownDevice {
                protocol,
                identifier,
                first_seen,
                last_seen,
                attempts: attempts.max(0) as u64,
                remote_addr,
            },
        )
        .collect())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The maps stay consistent under any panic (single inserts), so poisoning is moot.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The tenant named `name`, created when missing.
pub async fn ensure_tenant(pool: &PgPool, name: &str) -> Result<i64> {
    if let Some(id) = sqlx::query_scalar("SELECT id FROM tenants WHERE name = $1 ORDER BY id LIMIT 1")
        .bind(name)
        .fetch_optional(pool)
        .await?
    {
        return Ok(id);
    }
    Ok(
        sqlx::query_scalar("INSERT INTO tenants (name) VALUES ($1) RETURNING id")
            .bind(name)
            .fetch_one(pool)
            .await?,
    )
}

/// Registers a device (idempotent: an existing one keeps its id and tenant).
pub async fn add_device(pool: &PgPool, tenant: &str, identifier: &str, protocol: Protocol) -> Result<i64> {
    add_device_named(pool, tenant, identifier, protocol.name()).await
}

/// [`add_device`] with the protocol as stored: a tracker protocol's name, or `mqtt`.
pub async fn add_device_named(pool: &PgPool, tenant: &str, identifier: &str, protocol: &str) -> Result<i64> {
    let tenant_id = ensure_tenant(pool, tenant).await?;
    // DO UPDATE (a no-op) rather than DO NOTHING so RETURNING yields the existing id.
    // The same statement takes it off the unknown-devices list.
    Ok(sqlx::query_scalar(
        "WITH known AS (DELETE FROM unknown_devices WHERE protocol = $3 AND identifier = $2) \
         INSERT INTO devices (tenant_id, identifier, protocol) VALUES ($1, $2, $3) \
         ON CONFLICT (protocol, identifier) DO UPDATE SET identifier = EXCLUDED.identifier RETURNING id",
    )
    .bind(tenant_id)
    .bind(identifier)
    .bind(protocol)
    .fetch_one(pool)
    .await?)
}
