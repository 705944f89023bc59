//! Live positions and events for the caller's tenant, over WebSocket and SSE.
//!
//! Each client taps the bus through its own bounded subscription. The bus never waits
//! for a subscriber, so a slow client cannot slow ingest: when it falls behind (its
//! subscription lags, or a send does not complete in time) it is dropped with a reason.

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
    loaded: Instant,
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
            for p in &batch.positions {
                out.push(json!({ "type": "position", "data": Position::from_row(p, vehicle) }).to_string());
            }
        }
        if self.events {
            for e in &batch.events {
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
