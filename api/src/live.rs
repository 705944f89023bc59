//! Live positions and events for the caller's tenant, over WebSocket and SSE.
//!
//! Each client taps the bus through its own bounded subscription. The bus never waits
//! for a subscriber, so a slow client cannot slow ingest: when it falls behind (its
//! subscription lags, or a send does not complete in time) it is dropped with a reason.
//!
//! Drivers' tracking consent applies here as it does to the REST reads: for every role
//! but admin, a position or event of a device whose driver has not consented to tracking
//! outside working hours is not sent when it falls outside them. The rule is the SQL
//! function `clutch_position_visible`, mirrored in [`ConsentRule`] so that a batch is
//! filtered without a database round trip; the rules are reloaded with the device list
//! (every 10 s), so a consent change reaches open streams within that time.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use stream::RecvError;
use utoipa::IntoParams;

use crate::error::{ApiError, ApiQuery};
use crate::resources::telemetry::Position;
use crate::{AppState, Ctx};

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Comma-separated vehicle ids; default all of the tenant's.
    pub vehicle_ids: Option<String>,
    /// Comma-separated: `positions`, `events` (default both).
    pub kinds: Option<String>,
    /// For browsers, which cannot send headers here: the access token.
    pub access_token: Option<String>,
}

struct Filter {
    tenant_id: i64,
    vehicles: Option<HashSet<i64>>,
    positions: bool,
    events: bool,
    /// device → vehicle of the tenant's devices, reloaded now and then for new devices.
    devices: HashMap<i64, Option<i64>>,
    /// Whether drivers' consent limits what this caller sees (everyone but admins).
    consent_applies: bool,
    /// device → its driver's consent rule, for devices whose driver has not consented to
    /// tracking outside working hours.
    consent: HashMap<i64, ConsentRule>,
    loaded: Instant,
}

/// A driver's working hours, when they did not consent to be tracked outside them:
/// `clutch_position_visible` (store/migrations/0009_services.sql) in Rust.
#[derive(Debug, Clone)]
pub struct ConsentRule {
    /// None: an unknown zone, which hides everything (fail closed).
    tz: Option<chrono_tz::Tz>,
    /// Per local weekday, Sunday first as in SQL's `dow`: [start, end) in seconds of the day.
    days: [Vec<(u32, u32)>; 7],
}

impl ConsentRule {
    pub fn new(time_zone: &str, working_hours: &serde_json::Value) -> ConsentRule {
        const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
        let secs = |v: &serde_json::Value| -> Option<u32> {
            let s = v.as_str()?;
            let mut it = s.split(':');
            let h: u32 = it.next()?.trim().parse().ok()?;
            let m: u32 = it.next()?.trim().parse().ok()?;
            let sec: u32 = it.next().map(|x| x.trim().parse().ok()).unwrap_or(Some(0))?;
            (h <= 24 && m < 60 && sec < 60).then_some(h * 3600 + m * 60 + sec)
        };
        let mut days: [Vec<(u32, u32)>; 7] = Default::default();
        for (i, d) in DAYS.iter().enumerate() {
            for r in working_hours.get(*d).and_then(|v| v.as_array()).into_iter().flatten() {
                if let (Some(a), Some(b)) = (r.get(0).and_then(secs), r.get(1).and_then(secs)) {
                    days[i].push((a, b));
                }
            }
        }
        ConsentRule {
            tz: time_zone.parse().ok(),
            days,
        }
    }

    pub fn visible(&self, t: chrono::DateTime<chrono::Utc>) -> bool {
        use chrono::{Datelike, Timelike};
        let Some(tz) = self.tz else { return false };
        let local = t.with_timezone(&tz);
        let day = local.weekday().num_days_from_sunday() as usize;
        let s = local.num_seconds_from_midnight();
        self.days[day].iter().any(|&(a, b)| s >= a && s < b)
    }
}

impl Filter {
    fn new(ctx: &Ctx, q: &StreamQuery) -> Result<Filter, ApiError> {
        let vehicles = match &q.vehicle_ids {
            None => None,
            Some(s) => Some(
                s.split(',')
                    .filter(|s| !s.is_empty())
                    .map(|v| v.trim().parse::<i64>())
                    .collect::<Result<HashSet<_>, _>>()
                    .map_err(|_| ApiError::validation("vehicle_ids", "comma-separated integers"))?,
            ),
        };
        let (mut positions, mut events) = (true, true);
        if let Some(k) = &q.kinds {
            positions = false;
            events = false;
            for k in k.split(',') {
                match k.trim() {
                    "positions" => positions = true,
                    "events" => events = true,
                    _ => return Err(ApiError::validation("kinds", "positions and/or events")),
                }
            }
        }
        Ok(Filter {
            tenant_id: ctx.tenant_id,
            vehicles,
            positions,
            events,
            devices: HashMap::new(),
            consent_applies: ctx.role != crate::auth::Role::Admin,
            consent: HashMap::new(),
            loaded: Instant::now() - Duration::from_secs(3600),
        })
    }

    async fn refresh(&mut self, pool: &sqlx::PgPool, force: bool) {
        if !force && self.loaded.elapsed() < Duration::from_secs(10) {
            return;
        }
        if let Ok(rows) =
            sqlx::query_as::<_, (i64, Option<i64>)>("SELECT id, vehicle_id FROM devices WHERE tenant_id = $1")
                .bind(self.tenant_id)
                .fetch_all(pool)
                .await
        {
            self.devices = rows.into_iter().collect();
            self.loaded = Instant::now();
        }
        if self.consent_applies
            && let Ok(rows) = sqlx::query_as::<_, (i64, String, serde_json::Value)>(
                "SELECT d.id, c.time_zone, c.working_hours FROM devices d \
                 JOIN driver_consent c ON c.driver_id = d.driver_id \
                 WHERE d.tenant_id = $1 AND NOT c.track_outside_hours",
            )
            .bind(self.tenant_id)
            .fetch_all(pool)
            .await
        {
            self.consent = rows
                .into_iter()
                .map(|(d, tz, hours)| (d, ConsentRule::new(&tz, &hours)))
                .collect();
        }
    }

    /// Whether this caller may see a fix of `device` at `t`.
    fn visible(&self, device: i64, t: chrono::DateTime<chrono::Utc>) -> bool {
        !self.consent_applies || self.consent.get(&device).is_none_or(|r| r.visible(t))
    }

    /// The messages this client gets from one batch.
    fn messages(&self, batch: &ingest::DeviceBatch) -> Vec<String> {
        let Some(vehicle) = self.devices.get(&batch.device_id).copied() else {
            return Vec::new();
        };
        if let Some(v) = &self.vehicles
            && !vehicle.is_some_and(|id| v.contains(&id))
        {
            return Vec::new();
        }
        let mut out = Vec::new();
        if self.positions {
            for p in batch.positions.iter().filter(|p| self.visible(p.device_id, p.fix_time)) {
                out.push(json!({ "type": "position", "data": Position::from_row(p, vehicle) }).to_string());
            }
        }
        if self.events {
            for e in batch.events.iter().filter(|e| self.visible(e.device_id, e.time)) {
                out.push(
                    json!({ "type": "event", "data": {
                        "id": crate::resources::telemetry::event_id(e.device_id, e.time, &e.kind),
                        "device_id": e.device_id, "vehicle_id": vehicle, "time": e.time, "kind": e.kind,
                        "lat": e.lat, "lon": e.lon, "geofence_id": e.geofence_id, "attributes": e.attributes,
                        "acknowledged": false,
                    }})
                    .to_string(),
                );
            }
        }
        out
    }

    /// The message for one operator event, if this client should get it.
    fn operator_event(&self, e: &serde_json::Value) -> Option<String> {
        if !self.events {
            return None;
        }
        let device = e.get("device_id")?.as_i64()?;
        let vehicle = *self.devices.get(&device)?;
        if let Some(v) = &self.vehicles
            && !vehicle.is_some_and(|id| v.contains(&id))
        {
            return None;
        }
        if self.consent_applies && self.consent.contains_key(&device) {
            let t = e
                .get("time")
                .and_then(|t| t.as_str())
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
            if !t.is_some_and(|t| self.visible(device, t.to_utc())) {
                return None;
            }
        }
        let mut data = e.clone();
        data["vehicle_id"] = json!(vehicle);
        // The id `POST /api/v1/events/{id}/ack` takes, as the events list gives it.
        if let (Some(time), Some(kind)) = (
            e.get("time")
                .and_then(|t| serde_json::from_value::<chrono::DateTime<chrono::Utc>>(t.clone()).ok()),
            e.get("kind").and_then(|k| k.as_str()),
        ) {
            data["id"] = json!(crate::resources::telemetry::event_id(device, time, kind));
        }
        data["acknowledged"] = json!(false);
        Some(json!({ "type": "event", "data": data }).to_string())
    }
}

/// How long one message may take to go out before the client counts as stalled.
const SEND_DEADLINE: Duration = Duration::from_secs(5);

/// WebSocket stream of `{"type": "position"|"event", "data": …}` messages.
#[utoipa::path(get, path = "/api/v1/stream", tag = "live", params(StreamQuery),
    responses((status = 101, description = "WebSocket upgrade"), (status = 401, body = crate::error::ErrorBody)))]
pub async fn ws(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiQuery(q): ApiQuery<StreamQuery>,
    up: WebSocketUpgrade,
) -> Response {
    let mut filter = match Filter::new(&ctx, &q) {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let Some(bus) = state.bus.clone() else {
        return ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "no live stream here",
        )
        .into_response();
    };
    // Subscribe before the upgrade completes, so nothing published after the 101 is missed.
    let mut sub = bus.subscribe();
    // Without operators (an ingest-only process) there is nothing to wait for here.
    let mut ops = state.operator_events.as_ref().map(|tx| tx.subscribe());
    let pool = state.pool.clone();
    filter.refresh(&pool, true).await;
    up.on_upgrade(move |mut socket: WebSocket| async move {
        let reason = loop {
            tokio::select! {
                e = async {
                    match ops.as_mut() {
                        Some(rx) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                } => match e {
                    Ok(e) => {
                        if let Some(d) = e.get("device_id").and_then(|d| d.as_i64())
                            && !filter.devices.contains_key(&d)
                        {
                            filter.refresh(&pool, true).await;
                        }
                        if let Some(m) = filter.operator_event(&e) {
                            match tokio::time::timeout(SEND_DEADLINE, socket.send(Message::Text(m.into()))).await {
                                Ok(Ok(())) => {}
                                Ok(Err(_)) => return,
                                Err(_) => break "client too slow: send stalled",
                            }
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break "client too slow: fell behind the live stream",
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break "server shutting down",
                },
                msg = socket.recv() => match msg {
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => continue,
                },
                d = sub.recv() => match d {
                    Ok(d) => {
                        filter.refresh(&pool, false).await;
                        if !filter.devices.contains_key(&d.batch.device_id) {
                            filter.refresh(&pool, true).await;
                        }
                        let mut stalled = false;
                        for m in filter.messages(&d.batch) {
                            match tokio::time::timeout(SEND_DEADLINE, socket.send(Message::Text(m.into()))).await {
                                Ok(Ok(())) => {}
                                Ok(Err(_)) => return,
                                Err(_) => { stalled = true; break; }
                            }
                        }
                        if stalled { break "client too slow: send stalled"; }
                    }
                    Err(RecvError::Lagged(_)) => break "client too slow: fell behind the live stream",
                    Err(RecvError::Closed) => break "server shutting down",
                },
            }
        };
        // 1008 policy violation would be wrong; 1013 "try again later" says "reconnect".
        // The pipe may still be full of what the client has not read: give it time to
        // drain so the reason arrives.
        let _ = tokio::time::timeout(
            SEND_DEADLINE,
            socket.send(Message::Close(Some(CloseFrame {
                code: 1013,
                reason: reason.into(),
            }))),
        )
        .await;
    })
}

/// Server-sent events: the same messages as the WebSocket, as `data:` lines.
#[utoipa::path(get, path = "/api/v1/stream/sse", tag = "live", params(StreamQuery),
    responses((status = 200, description = "text/event-stream"), (status = 401, body = crate::error::ErrorBody)))]
pub async fn sse(State(state): State<AppState>, ctx: Ctx, ApiQuery(q): ApiQuery<StreamQuery>) -> Response {
    let mut filter = match Filter::new(&ctx, &q) {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let Some(bus) = state.bus.clone() else {
        return ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "no live stream here",
        )
        .into_response();
    };
    let mut sub = bus.subscribe();
    let pool = state.pool.clone();
    filter.refresh(&pool, true).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<SseEvent>(state.config.stream_queue.max(1));
    tokio::spawn(async move {
        loop {
            let d = tokio::select! {
                d = sub.recv() => d,
                _ = tx.closed() => return,
            };
            let reason = match d {
                Ok(d) => {
                    filter.refresh(&pool, false).await;
                    let mut full = false;
                    for m in filter.messages(&d.batch) {
                        if tx.try_send(SseEvent::default().data(m)).is_err() {
                            full = true;
                            break;
                        }
                    }
                    if !full {
                        continue;
                    }
                    "client too slow"
                }
                Err(RecvError::Lagged(_)) => "client too slow",
                Err(RecvError::Closed) => "server shutting down",
            };
            // Best effort: the queue may be full, and then the end of the stream says it.
            let _ = tx.try_send(SseEvent::default().event("close").data(reason));
            return;
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    fn filter(role: Role) -> Filter {
        let ctx = Ctx {
            tenant_id: 1,
            user_id: 1,
            role,
            api_key_id: None,
        };
        let mut f = Filter::new(&ctx, &StreamQuery::default()).unwrap();
        f.devices.insert(7, Some(70));
        f.consent
            .insert(7, ConsentRule::new("UTC", &json!({"mon": [["08:00", "12:00"]]})));
        f
    }

    #[test]
    fn consent_hides_off_hours_positions_and_events_from_all_but_admins() {
        let at = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc();
        let (inside, outside) = (at("2026-09-21T09:00:00Z"), at("2026-09-21T18:00:00Z"));
        let pos = |t| store::PositionRow {
            device_id: 7,
            fix_time: t,
            server_time: t,
            lat: 52.0,
            lon: 13.0,
            altitude: None,
            speed_kmh: None,
            course: None,
            satellites: None,
            hdop: None,
            valid: true,
            ignition: None,
            motion: None,
            odometer_m: None,
            fuel_level_pct: None,
            fuel_used_l: None,
            rpm: None,
            coolant_c: None,
            power_v: None,
            battery_v: None,
            event: None,
            alarms: None,
            dtcs: None,
            attributes: None,
        };
        let batch = ingest::DeviceBatch {
            device_id: 7,
            positions: vec![pos(inside), pos(outside)],
            events: vec![
                store::EventRow::new(7, inside, "ignition_on"),
                store::EventRow::new(7, outside, "ignition_off"),
            ],
        };
        let op = |t: &str| json!({"device_id": 7, "kind": "harsh_braking", "time": t});
        let manager = filter(Role::FleetManager);
        let sent = manager.messages(&batch);
        assert_eq!(sent.len(), 2, "{sent:?}");
        assert!(sent.iter().all(|m| m.contains("09:00:00")), "{sent:?}");
        assert!(manager.operator_event(&op("2026-09-21T09:30:00Z")).is_some());
        assert!(manager.operator_event(&op("2026-09-21T19:30:00Z")).is_none());
        assert!(
            manager.operator_event(&json!({"device_id": 7, "kind": "x"})).is_none(),
            "no time: hidden"
        );
        let admin = filter(Role::Admin);
        assert_eq!(admin.messages(&batch).len(), 4);
        assert!(admin.operator_event(&op("2026-09-21T19:30:00Z")).is_some());
    }
}
