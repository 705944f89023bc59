//! System health for operators: ingest rate, connected devices, bus lag, writer lag,
//! database size.
//!
//! The numbers come from what the pipeline already exposes: the Prometheus recorder that
//! `ingest` installs (frame, position and connection counters and gauges, the writer's
//! commit-latency histogram), the store writer's own counters and queue, the bus's depth
//! (batches published and not yet durable), and PostgreSQL itself. `clutch serve` hands
//! the first two over as a [`SystemProbe`] ([`crate::AppState::with_system`]); without one
//! (an API-only process, tests) those fields are null and the rest still answers. Rates
//! are the difference between the current reading and a sample about a minute old; a
//! background task samples every few seconds so the first call already has a rate.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiResult;
use crate::{AppState, Ctx};

/// Window the rates are computed over.
const WINDOW: Duration = Duration::from_secs(60);
const SAMPLE_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, Default)]
struct Reading {
    positions: Option<f64>,
    frames_ok: Option<f64>,
    rows_committed: Option<f64>,
}

/// Handles on the running pipeline that the health endpoint reads.
#[derive(Clone)]
pub struct SystemProbe {
    metrics: Option<PrometheusHandle>,
    writer: Option<store::WriterHandle>,
    samples: Arc<Mutex<VecDeque<(Instant, Reading)>>>,
}

impl std::fmt::Debug for SystemProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SystemProbe")
            .field("metrics", &self.metrics.is_some())
            .field("writer", &self.writer.is_some())
            .finish()
    }
}

impl SystemProbe {
    /// `metrics`: the recorder's handle (`ingest::metrics::install()`); `writer`: the
    /// store writer of this process.
    pub fn new(metrics: Option<PrometheusHandle>, writer: Option<store::WriterHandle>) -> SystemProbe {
        SystemProbe {
            metrics,
            writer,
            samples: Arc::new(Mutex::new(VecDeque::new())),
        }
    }

    /// Samples in the background until the last clone of the probe is gone.
    pub(crate) fn start_sampling(&self) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak = Arc::downgrade(&self.samples);
        let probe = SystemProbe {
            samples: Arc::new(Mutex::new(VecDeque::new())),
            ..self.clone()
        };
        rt.spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            loop {
                tick.tick().await;
                let Some(samples) = weak.upgrade() else { return };
                let r = probe.read();
                push(&samples, r);
            }
        });
    }

    fn read(&self) -> Reading {
        let text = self.metrics.as_ref().map(|m| m.render());
        let sum = |name: &str| text.as_deref().map(|t| prom_sum(t, name, None));
        Reading {
            positions: sum(ingest::metrics::POSITIONS),
            frames_ok: text
                .as_deref()
                .map(|t| prom_sum(t, ingest::metrics::FRAMES, Some("outcome=\"ok\""))),
            rows_committed: self.writer.as_ref().map(|w| w.stats().rows_committed as f64),
        }
    }
}

fn push(samples: &Mutex<VecDeque<(Instant, Reading)>>, r: Reading) {
    if let Ok(mut s) = samples.lock() {
        let now = Instant::now();
        s.push_back((now, r));
        // Keep one sample older than the window, so the rate spans the whole window.
        while s.len() > 2 && s.get(1).is_some_and(|(t, _)| now.duration_since(*t) > WINDOW) {
            s.pop_front();
        }
    }
}

/// Sum of every series of `name` in a Prometheus text rendering (optionally only those
/// whose labels contain `label`).
pub fn prom_sum(text: &str, name: &str, label: Option<&str>) -> f64 {
    let mut total = 0.0;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else { continue };
        let (labels, value) = match rest.chars().next() {
            Some('{') => match rest.split_once('}') {
                Some((l, v)) => (l, v),
                None => continue,
            },
            Some(' ') => ("", rest),
            _ => continue, // another metric whose name starts with this one
        };
        if label.is_some_and(|l| !labels.contains(l)) {
            continue;
        }
        if let Some(v) = value.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()) {
            total += v;
        }
    }
    total
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or `degraded` when the database does not answer or the writer is failing.
    pub status: String,
    pub sampled_at: DateTime<Utc>,
    pub ingest: IngestHealth,
    pub bus: BusHealth,
    pub writer: WriterHealth,
    pub database: DatabaseHealth,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IngestHealth {
    /// Decoded positions per second over the last minute (this process).
    pub positions_per_s: Option<f64>,
    /// Frames decoded without error per second over the last minute.
    pub frames_per_s: Option<f64>,
    pub positions_total: Option<f64>,
    /// Open device connections: TCP sessions plus MQTT clients (this process).
    pub connected_devices: Option<f64>,
    /// The caller's devices with a fix received in the last 5 minutes (any process).
    pub devices_reporting_5m: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BusHealth {
    pub attached: bool,
    /// Batches published and not yet durable: how far the store is behind the bus.
    pub depth: Option<usize>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WriterHealth {
    /// Batches waiting for the writer (its queue).
    pub queued_batches: Option<usize>,
    /// Rows committed per second over the last minute.
    pub rows_per_s: Option<f64>,
    pub rows_committed: Option<u64>,
    /// Mean seconds from a batch's submission to its commit, since start.
    pub avg_commit_latency_s: Option<f64>,
    pub retries: Option<u64>,
    pub batches_failed: Option<u64>,
    /// Seconds since the newest fix any device reported reached the store.
    pub newest_fix_age_s: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DatabaseHealth {
    pub reachable: bool,
    pub latency_ms: f64,
    pub size_bytes: Option<i64>,
    /// Positions including indexes (all partitions or chunks).
    pub positions_bytes: Option<i64>,
    /// `timescaledb` or `partitioned`.
    pub storage_mode: Option<String>,
}

fn rate(samples: &Mutex<VecDeque<(Instant, Reading)>>, now: Reading, f: fn(&Reading) -> Option<f64>) -> Option<f64> {
    let s = samples.lock().ok()?;
    let (t0, r0) = s.front()?;
    let dt = t0.elapsed().as_secs_f64();
    let (a, b) = (f(r0)?, f(&now)?);
    (dt >= 1.0).then(|| ((b - a) / dt).max(0.0))
}

/// System health (admins).
#[utoipa::path(get, path = "/api/v1/admin/health", tag = "admin", responses((status = 200, body = Health)))]
pub async fn health(State(state): State<AppState>, ctx: Ctx) -> ApiResult<Json<Health>> {
    let probe = state.system.as_ref();
    let now = probe.map(SystemProbe::read).unwrap_or_default();
    let text = probe.and_then(|p| p.metrics.as_ref()).map(|m| m.render());
    let gauge = |name: &str| text.as_deref().map(|t| prom_sum(t, name, None));
    let writer = probe.and_then(|p| p.writer.as_ref());
    let stats = writer.map(|w| w.stats());
    let (positions_per_s, frames_per_s, rows_per_s) = match probe {
        Some(p) => (
            rate(&p.samples, now, |r| r.positions),
            rate(&p.samples, now, |r| r.frames_ok),
            rate(&p.samples, now, |r| r.rows_committed),
        ),
        None => (None, None, None),
    };
    if let Some(p) = probe {
        push(&p.samples, now);
    }
    let latency = match (
        gauge(&format!("{}_sum", ingest::metrics::WRITER_LATENCY)),
        gauge(&format!("{}_count", ingest::metrics::WRITER_LATENCY)),
    ) {
        (Some(s), Some(c)) if c > 0.0 => Some(s / c),
        _ => None,
    };

    let started = Instant::now();
    let db = sqlx::query_as::<_, (i64, Option<String>)>(
        "SELECT pg_database_size(current_database()), (SELECT value FROM clutch_meta WHERE key = 'storage_mode')",
    )
    .fetch_one(&state.pool)
    .await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let (reachable, size_bytes, storage_mode) = match db {
        Ok((s, m)) => (true, Some(s), m),
        Err(e) => {
            tracing::warn!(error = %e, "health: database");
            (false, None, None)
        }
    };
    let positions_bytes: Option<i64> = if !reachable {
        None
    } else if storage_mode.as_deref() == Some("timescaledb") {
        sqlx::query_scalar("SELECT hypertable_size('positions')::int8")
            .fetch_one(&state.pool)
            .await
            .ok()
    } else {
        sqlx::query_scalar(
            "SELECT coalesce(sum(pg_total_relation_size(relid)), 0)::int8 FROM pg_partition_tree('positions')",
        )
        .fetch_one(&state.pool)
        .await
        .ok()
    };
    let (reporting, newest): (i64, Option<f64>) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM device_last_position l JOIN devices d ON d.id = l.device_id \
                 WHERE d.tenant_id = $1 AND l.server_time > now() - interval '5 minutes'), \
                (SELECT extract(epoch FROM now() - max(server_time))::float8 FROM device_last_position)",
    )
    .bind(ctx.tenant_id)
    .fetch_one(&state.pool)
    .await
    .unwrap_or((0, None));
    let connected = match (
        gauge(ingest::metrics::CONNECTIONS_ACTIVE),
        gauge(ingest::metrics::MQTT_CONNECTIONS_ACTIVE),
    ) {
        (Some(a), Some(b)) => Some(a + b),
        _ => None,
    };
    let degraded = !reachable || stats.is_some_and(|s| s.batches_failed > 0 && writer.is_some_and(|w| w.queued() > 0));
    Ok(Json(Health {
        status: if degraded { "degraded" } else { "ok" }.into(),
        sampled_at: Utc::now(),
        ingest: IngestHealth {
            positions_per_s,
            frames_per_s,
            positions_total: now.positions,
            connected_devices: connected,
            devices_reporting_5m: reporting,
        },
        bus: BusHealth {
            attached: state.bus.is_some(),
            depth: state.bus.as_ref().map(|b| b.depth()),
        },
        writer: WriterHealth {
            queued_batches: writer.map(|w| w.queued()),
            rows_per_s,
            rows_committed: stats.map(|s| s.rows_committed),
            avg_commit_latency_s: latency,
            retries: stats.map(|s| s.retries),
            batches_failed: stats.map(|s| s.batches_failed),
            newest_fix_age_s: newest,
        },
        database: DatabaseHealth {
            reachable,
            latency_ms,
            size_bytes,
            positions_bytes,
            storage_mode,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::prom_sum;

    #[test]
    fn prometheus_text_is_summed_per_name() {
        let t = "# TYPE clutch_ingest_positions_total counter\n\
                 clutch_ingest_positions_total{protocol=\"gt06\"} 5\n\
                 clutch_ingest_positions_total{protocol=\"teltonika\"} 7\n\
                 clutch_ingest_positions_total_other 100\n\
                 clutch_bus_depth 3\n\
                 clutch_ingest_frames_total{protocol=\"gt06\",outcome=\"ok\"} 4\n\
                 clutch_ingest_frames_total{protocol=\"gt06\",outcome=\"decode_error\"} 9\n";
        assert_eq!(prom_sum(t, "clutch_ingest_positions_total", None), 12.0);
        assert_eq!(prom_sum(t, "clutch_bus_depth", None), 3.0);
        assert_eq!(prom_sum(t, "clutch_ingest_frames_total", Some("outcome=\"ok\"")), 4.0);
        assert_eq!(prom_sum(t, "missing", None), 0.0);
    }
}
