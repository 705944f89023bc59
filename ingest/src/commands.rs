//! Downlink: the per-device command queue in `device_commands`, delivered to connected
//! devices and answered by their command responses.
//!
//! One poller per process asks the database which devices have queued commands and
//! wakes only those sessions that are connected here, so idle connections cost no
//! queries; a session also delivers right after its login (commands queued while the
//! device was offline).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use protocols::{Codec, Command, DecodeContext};
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::error::Result;

/// Sessions that can take commands now, by device id.
#[derive(Debug, Default)]
pub(crate) struct Hub {
    sessions: Mutex<HashMap<i64, Arc<Notify>>>,
}

impl Hub {
    pub(crate) fn register(&self, device_id: i64) -> Arc<Notify> {
        let n = Arc::new(Notify::new());
        // A newer connection of the same device takes over (the old one is likely dead).
        lock(&self.sessions).insert(device_id, n.clone());
        n
    }

    pub(crate) fn unregister(&self, device_id: i64, n: &Arc<Notify>) {
        let mut s = lock(&self.sessions);
        if s.get(&device_id).is_some_and(|cur| Arc::ptr_eq(cur, n)) {
            s.remove(&device_id);
        }
    }

    fn wake(&self, devices: &[i64]) {
        let s = lock(&self.sessions);
        for d in devices {
            if let Some(n) = s.get(d) {
                n.notify_one();
            }
        }
    }

    fn is_empty(&self) -> bool {
        lock(&self.sessions).is_empty()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) async fn poll(pool: PgPool, hub: Arc<Hub>, every: Duration, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        if hub.is_empty() {
            continue;
        }
        match sqlx::query_scalar::<_, i64>("SELECT DISTINCT device_id FROM device_commands WHERE status = 'queued'")
            .fetch_all(&pool)
            .await
        {
            Ok(devices) => hub.wake(&devices),
            Err(error) => tracing::warn!(%error, "command poll failed"),
        }
    }
}

/// Queues a command for a device; returns its id.
pub async fn enqueue(pool: &PgPool, device_id: i64, command: &Command) -> Result<i64> {
    let json = serde_json::to_value(command).unwrap_or_default();
    Ok(
        sqlx::query_scalar("INSERT INTO device_commands (device_id, command) VALUES ($1, $2) RETURNING id")
            .bind(device_id)
            .bind(json)
            .fetch_one(pool)
            .await?,
    )
}

/// Encodes the device's queued commands (at most `max`, oldest first) with its session
/// codec. Each one is marked `sent` (or `failed` with the reason) and its bytes returned
/// in queue order for the caller to deliver. A command is handed out once even when two
/// requests of the same device race (HTTP devices): only the one whose `queued → sent`
/// update wins delivers it.
pub(crate) async fn take_queued(
    pool: &PgPool,
    device_id: i64,
    identifier: &str,
    codec: &mut dyn Codec,
    max: usize,
) -> Result<Vec<Vec<u8>>> {
    let ctx = DecodeContext::now();
    let mut out = Vec::new();
    // Each pass takes rows out of `queued` (sent, failed, or taken by a racing request),
    // so this ends; it repeats only when undeliverable commands left room under `max`.
    while out.len() < max {
        let rows: Vec<(i64, serde_json::Value)> = sqlx::query_as(
            "SELECT id, command FROM device_commands WHERE device_id = $1 AND status = 'queued' ORDER BY id LIMIT $2",
        )
        .bind(device_id)
        .bind(i64::try_from(max - out.len()).unwrap_or(i64::MAX))
        .fetch_all(pool)
        .await?;
        if rows.is_empty() {
            break;
        }
        take_rows(pool, rows, identifier, codec, &ctx, &mut out).await?;
    }
    Ok(out)
}

async fn take_rows(
    pool: &PgPool,
    rows: Vec<(i64, serde_json::Value)>,
    identifier: &str,
    codec: &mut dyn Codec,
    ctx: &DecodeContext,
    out: &mut Vec<Vec<u8>>,
) -> Result<()> {
    for (id, json) in rows {
        let encoded = serde_json::from_value::<Command>(json)
            .map_err(|e| format!("not a command: {e}"))
            .and_then(|c| codec.encode_command(identifier, &c, ctx).map_err(|e| e.to_string()));
        match encoded {
            Ok(bytes) => {
                let won = sqlx::query(
                    "UPDATE device_commands SET status = 'sent', sent_at = now() WHERE id = $1 AND status = 'queued'",
                )
                .bind(id)
                .execute(pool)
                .await?
                .rows_affected()
                    == 1;
                if won {
                    tracing::info!(command = id, "command sent");
                    out.push(bytes);
                }
            }
            Err(error) => {
                tracing::warn!(command = id, %error, "command cannot be encoded for this device");
                sqlx::query(
                    "UPDATE device_commands SET status = 'failed', error = $2 WHERE id = $1 AND status = 'queued'",
                )
                .bind(id)
                .bind(error)
                .execute(pool)
                .await?;
            }
        }
    }
    Ok(())
}

/// Records a device's command response against its oldest command awaiting one.
/// Protocols do not echo a command id back, so order is the only correlation there is.
pub(crate) async fn record_response(pool: &PgPool, device_id: i64, response: &str) -> Result<()> {
    sqlx::query(
        "UPDATE device_commands SET status = 'answered', response = $2, responded_at = now() \
         WHERE id = (SELECT id FROM device_commands WHERE device_id = $1 AND status = 'sent' ORDER BY id LIMIT 1)",
    )
    .bind(device_id)
    .bind(response)
    .execute(pool)
    .await?;
    Ok(())
}

/// Claims the device's queued commands (marks them `sent`) and returns them in queue
/// order. `SKIP LOCKED` makes the claim safe when several nodes share one device's
/// traffic (MQTT client mode): each command goes out once.
pub(crate) async fn claim_queued(pool: &PgPool, device_id: i64) -> Result<Vec<(i64, serde_json::Value)>> {
    let mut rows: Vec<(i64, serde_json::Value)> = sqlx::query_as(
        "UPDATE device_commands SET status = 'sent', sent_at = now() WHERE id IN \
         (SELECT id FROM device_commands WHERE device_id = $1 AND status = 'queued' ORDER BY id FOR UPDATE SKIP LOCKED) \
         RETURNING id, command",
    )
    .bind(device_id)
    .fetch_all(pool)
    .await?;
    rows.sort_by_key(|r| r.0);
    Ok(rows)
}

/// Records the answer to one command, named by id (MQTT responses carry it). Only a
/// command of this device that was sent is updated; `false` when there is none.
pub(crate) async fn record_response_to(pool: &PgPool, device_id: i64, command_id: i64, response: &str) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE device_commands SET status = 'answered', response = $3, responded_at = now() \
         WHERE id = $2 AND device_id = $1 AND status IN ('sent', 'answered')",
    )
    .bind(device_id)
    .bind(command_id)
    .bind(response)
    .execute(pool)
    .await?;
    Ok(r.rows_affected() > 0)
}
