//! Streamed data export: positions, events or trips of the caller's tenant in a time
//! range, as CSV or NDJSON.
//!
//! Memory stays bounded whatever the size of the set: rows come from a database cursor
//! (`sqlx` `fetch`, which decodes rows as they arrive on the socket, so PostgreSQL and
//! TCP back-pressure hold the rest), are formatted into a buffer that is handed on every
//! [`CHUNK`] bytes, and travel to the response body through a channel of [`QUEUE`]
//! chunks. When the client reads slowly the channel fills, the producer waits, the
//! cursor is not polled and the server stops sending; the most this export holds is
//! about `(QUEUE + 1) × CHUNK` plus one row. A client that goes away closes the channel
//! and the producer stops at its next send. Each caller may run [`MAX_PER_CALLER`]
//! exports at a time (SECURITY API4).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, Utc};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::Value;
use utoipa::IntoParams;

use crate::error::{ApiError, ApiPath, ApiQuery, ApiResult, ErrorBody};
use crate::{AppState, Ctx, sqlf};

/// Bytes formatted before they are handed to the response.
pub const CHUNK: usize = 64 * 1024;
/// Chunks queued between the cursor and the socket.
pub const QUEUE: usize = 4;
/// Concurrent exports per caller.
pub const MAX_PER_CALLER: usize = 2;
/// Longest range one export may cover.
pub const MAX_DAYS: i64 = 366;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// RFC 3339, inclusive; default one day before `to`.
    pub from: Option<DateTime<Utc>>,
    /// RFC 3339, exclusive; default now. At most 366 days after `from`.
    pub to: Option<DateTime<Utc>>,
    /// `csv` (default) or `ndjson`.
    pub format: Option<String>,
    /// Only this device.
    pub device_id: Option<i64>,
    /// Only this vehicle's devices.
    pub vehicle_id: Option<i64>,
}

struct Kind {
    columns: &'static [&'static str],
    /// Selects one row per result, `$1` tenant, `$2`/`$3` range, `$4` device, `$5` vehicle.
    from: &'static str,
    order: &'static str,
}

const POSITIONS: Kind = Kind {
    columns: &[
        "device_id",
        "vehicle_id",
        "fix_time",
        "server_time",
        "lat",
        "lon",
        "altitude",
        "speed_kmh",
        "course",
        "satellites",
        "hdop",
        "valid",
        "ignition",
        "motion",
        "odometer_m",
        "fuel_level_pct",
        "fuel_used_l",
        "rpm",
        "coolant_c",
        "power_v",
        "battery_v",
        "event",
        "alarms",
        "dtcs",
        "attributes",
    ],
    from: "positions x JOIN devices d ON d.id = x.device_id WHERE d.tenant_id = $1 \
           AND x.fix_time >= $2 AND x.fix_time < $3",
    order: "x.device_id, x.fix_time",
};

const EVENTS: Kind = Kind {
    columns: &[
        "device_id",
        "vehicle_id",
        "time",
        "end_time",
        "kind",
        "severity",
        "magnitude",
        "lat",
        "lon",
        "geofence_id",
        "attributes",
    ],
    from: "events x JOIN devices d ON d.id = x.device_id WHERE d.tenant_id = $1 AND x.time >= $2 AND x.time < $3",
    order: "x.time, x.device_id, x.kind",
};

const TRIPS: Kind = Kind {
    columns: &[
        "id",
        "device_id",
        "vehicle_id",
        "driver_id",
        "start_time",
        "end_time",
        "start_lat",
        "start_lon",
        "end_lat",
        "end_lon",
        "distance_m",
        "max_speed_kmh",
        "avg_speed_kmh",
        "fuel_used_l",
        "attributes",
    ],
    from: "trips x JOIN devices d ON d.id = x.device_id WHERE d.tenant_id = $1 \
           AND x.start_time >= $2 AND x.start_time < $3",
    order: "x.start_time, x.id",
};

/// Running exports per caller.
fn running() -> &'static Mutex<HashMap<String, usize>> {
    static R: OnceLock<Mutex<HashMap<String, usize>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

/// A slot of the caller's export budget, given back on drop (when the stream ends).
struct Slot(String);

impl Slot {
    fn take(principal: String) -> Option<Slot> {
        let mut m = running().lock().ok()?;
        let n = m.entry(principal.clone()).or_default();
        if *n >= MAX_PER_CALLER {
            return None;
        }
        *n += 1;
        Some(Slot(principal))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut m) = running().lock()
            && let Some(n) = m.get_mut(&self.0)
        {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.0);
            }
        }
    }
}

/// Export positions, events or trips (`kind`) of the caller's tenant, streamed.
#[utoipa::path(get, path = "/api/v1/admin/export/{kind}", tag = "admin",
    params(("kind" = String, Path, description = "positions, events or trips"), ExportQuery),
    responses((status = 200, description = "text/csv (header row first) or application/x-ndjson, streamed",
               content_type = "text/csv"),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn export(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiPath(kind): ApiPath<String>,
    ApiQuery(q): ApiQuery<ExportQuery>,
) -> ApiResult<Response> {
    let spec = match kind.as_str() {
        "positions" => &POSITIONS,
        "events" => &EVENTS,
        "trips" => &TRIPS,
        _ => return Err(ApiError::not_found()),
    };
    let ndjson = match q.format.as_deref() {
        None | Some("csv") => false,
        Some("ndjson") => true,
        Some(_) => return Err(ApiError::validation("format", "csv or ndjson")),
    };
    let to = q.to.unwrap_or_else(Utc::now);
    let from = q.from.unwrap_or(to - Duration::days(1));
    if from >= to {
        return Err(ApiError::validation("to", "must be after from"));
    }
    if to - from > Duration::days(MAX_DAYS) {
        return Err(ApiError::validation("to", format!("range at most {MAX_DAYS} days")));
    }
    // A named device or vehicle of another tenant is a 404, as everywhere.
    if let Some(d) = q.device_id {
        crate::resources::fleet::own_device(&state, &ctx, d).await?;
    }
    if q.vehicle_id.is_some() {
        crate::resources::fleet::check_vehicle(&state, &ctx, "vehicle_id", q.vehicle_id)
            .await
            .map_err(|_| ApiError::not_found())?;
    }
    let slot = Slot::take(ctx.principal()).ok_or_else(|| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_exports",
            format!("at most {MAX_PER_CALLER} exports at a time per caller"),
        )
    })?;
    let cols = spec
        .columns
        .iter()
        .map(|c| {
            if *c == "vehicle_id" {
                "d.vehicle_id".to_string()
            } else {
                format!("x.{c}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    // PostgreSQL formats each row as JSON text (its numbers and timestamps exactly); NDJSON
    // passes it through and CSV spreads it over the fixed columns.
    let sql = format!(
        "SELECT row_to_json(r)::text FROM (SELECT {cols} FROM {} AND ($4::int8 IS NULL OR x.device_id = $4) \
         AND ($5::int8 IS NULL OR d.vehicle_id = $5) ORDER BY {}) r",
        spec.from, spec.order
    );
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(QUEUE);
    let pool = state.pool.clone();
    let (tenant, device, vehicle) = (ctx.tenant_id, q.device_id, q.vehicle_id);
    let columns = spec.columns;
    tokio::spawn(async move {
        let _slot = slot;
        let mut rows = sqlx::query_scalar::<_, String>(sqlf!("{sql}"))
            .bind(tenant)
            .bind(from)
            .bind(to)
            .bind(device)
            .bind(vehicle)
            .fetch(&pool);
        let mut buf = Vec::with_capacity(CHUNK + 4096);
        if !ndjson {
            buf.extend_from_slice(columns.join(",").as_bytes());
            buf.extend_from_slice(b"\r\n");
        }
        while let Some(row) = rows.next().await {
            match row {
                Ok(line) => {
                    if ndjson {
                        buf.extend_from_slice(line.as_bytes());
                        buf.push(b'\n');
                    } else {
                        csv_row(&mut buf, columns, &line);
                    }
                    if buf.len() >= CHUNK {
                        let out = Bytes::from(std::mem::replace(&mut buf, Vec::with_capacity(CHUNK + 4096)));
                        if tx.send(Ok(out)).await.is_err() {
                            return; // the client went away
                        }
                    }
                }
                Err(e) => {
                    // The status line is gone already: aborting the body is how an HTTP
                    // client learns that the export is incomplete.
                    tracing::error!(error = %e, "export failed mid-stream");
                    let _ = tx.send(Err(std::io::Error::other("export failed"))).await;
                    return;
                }
            }
        }
        if !buf.is_empty() {
            let _ = tx.send(Ok(Bytes::from(buf))).await;
        }
    });
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|c| (c, rx))
    }));
    let (ct, ext) = if ndjson {
        ("application/x-ndjson", "ndjson")
    } else {
        ("text/csv; charset=utf-8", "csv")
    };
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"{kind}-{}-{}.{ext}\"",
        from.format("%Y%m%dT%H%M%SZ"),
        to.format("%Y%m%dT%H%M%SZ")
    )) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// One CSV record (RFC 4180) from a row's JSON text, in the fixed column order.
fn csv_row(buf: &mut Vec<u8>, columns: &[&str], json: &str) {
    let obj: serde_json::Map<String, Value> = serde_json::from_str(json).unwrap_or_default();
    for (i, c) in columns.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        match obj.get(*c) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => csv_field(buf, s, true),
            Some(Value::Number(n)) => buf.extend_from_slice(n.to_string().as_bytes()),
            Some(Value::Bool(b)) => buf.extend_from_slice(if *b { b"true" } else { b"false" }),
            Some(v) => csv_field(buf, &v.to_string(), false),
        }
    }
    buf.extend_from_slice(b"\r\n");
}

/// A quoted-when-needed field. Text that a spreadsheet would run as a formula (`=`, `+`,
/// `-`, `@`, tab, CR at the start) gets a leading `'` (OWASP CSV injection).
fn csv_field(buf: &mut Vec<u8>, s: &str, text: bool) {
    let formula = text && s.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let quote = formula || s.contains([',', '"', '\n', '\r']);
    if quote {
        buf.push(b'"');
    }
    if formula {
        buf.push(b'\'');
    }
    for b in s.bytes() {
        if b == b'"' {
            buf.push(b'"');
        }
        buf.push(b);
    }
    if quote {
        buf.push(b'"');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quoting_and_formula_guard() {
        let mut b = Vec::new();
        csv_row(
            &mut b,
            &["a", "b", "c", "d", "e", "f"],
            r#"{"a": "x,y", "b": "say \"hi\"", "c": -1.5, "d": null, "e": "=cmd()", "f": {"k": [1, 2]}}"#,
        );
        assert_eq!(
            String::from_utf8(b).unwrap(),
            "\"x,y\",\"say \"\"hi\"\"\",-1.5,,\"'=cmd()\",\"{\"\"k\"\":[1,2]}\"\r\n"
        );
    }
}
