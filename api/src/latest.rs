//! The whole-fleet `GET /positions/latest`, served from a per-tenant cache of the
//! serialised answer (plain and gzipped) with its ETag.
//!
//! For 10 000 vehicles the answer is ~3 MB of JSON: building, hashing and compressing it
//! per request costs tens of milliseconds even in a release build, and dashboards poll it.
//! So a bus tap (durable batches) bumps a generation counter whenever fixes arrive; an
//! entry is reused while the generation is unchanged (at most 5 s, for registry and
//! consent edits), or for `api.latest_cache_ms` even if it changed (0 by default: read
//! your writes; a busy fleet may set 250–1000 to rebuild at most that often). One
//! request rebuilds while the others get the previous answer.
//! A 304 costs a string comparison. Entries are per tenant and per "admin or not" (the
//! drivers' consent filter applies to everyone but admins).
//!
//! The same entry answers `?vehicle_id=` and `?device_id=` ([`serve_one`]): a dashboard
//! polling a few vehicles at a time otherwise costs four or five queries per request,
//! which is what missed the p99 target at 2 000 req/s (api/README.md, "Performance").

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;

use crate::error::{ApiError, ApiResult};
use crate::resources::telemetry::Position;
use crate::{AppState, Ctx};

/// Entries older than this are rebuilt even if no fix arrived (registry edits: a device
/// moved to another vehicle).
const MAX_AGE: Duration = Duration::from_secs(5);

struct Entry {
    generation: u64,
    built: Instant,
    json: Bytes,
    gzip: Bytes,
    etag: String,
    /// The same fixes, for answers narrowed to one vehicle or device.
    items: Vec<Position>,
    by_vehicle: HashMap<i64, Vec<usize>>,
    by_device: HashMap<i64, usize>,
}

/// Held by the one request rebuilding an entry.
type BuildLock = Arc<tokio::sync::Mutex<()>>;

#[derive(Default)]
pub struct LatestCache {
    generation: AtomicU64,
    tap: Mutex<Option<stream::Subscription<ingest::DeviceBatch>>>,
    entries: Mutex<HashMap<(i64, bool), Arc<Entry>>>,
    building: Mutex<HashMap<(i64, bool), BuildLock>>,
}

impl std::fmt::Debug for LatestCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatestCache")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl LatestCache {
    /// Marks every entry stale (a fix arrived, or a test wants a rebuild).
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
    }
}

/// Reads what the bus tap holds, without waiting: any durable batch with fixes makes
/// every entry stale. Done by the request itself rather than a task, so a client that
/// got its ack and then asks sees its fix (the tap is fed before the ack is released).
fn drain(state: &AppState) {
    use futures_util::FutureExt as _;
    let cache = &state.latest_cache;
    let mut guard = cache.tap.lock().expect("not poisoned");
    if guard.is_none() {
        let Some(bus) = &state.bus else { return };
        *guard = Some(bus.subscribe());
        cache.invalidate();
        return;
    }
    let Some(sub) = guard.as_mut() else { return };
    // Bounded: a flood is one invalidation anyway.
    for _ in 0..100_000 {
        match sub.recv().now_or_never() {
            None => return,
            Some(Ok(d)) if d.batch.positions.is_empty() => {}
            Some(Ok(_)) | Some(Err(stream::RecvError::Lagged(_))) => cache.invalidate(),
            Some(Err(stream::RecvError::Closed)) => {
                *guard = None;
                return;
            }
        }
    }
}

fn fresh(e: &Entry, generation: u64, has_bus: bool, max_stale: Duration) -> bool {
    let age = e.built.elapsed();
    (has_bus && e.generation == generation && age < MAX_AGE) || age < max_stale
}

/// The answer for the whole fleet of the caller, honouring `If-None-Match` and gzip.
pub async fn serve(state: &AppState, ctx: &Ctx, headers: &HeaderMap) -> ApiResult<Response> {
    let e = entry(state, ctx).await?;
    Ok(respond(&e, headers))
}

/// The latest fixes of one vehicle (or one device, or a device of that vehicle) of the
/// caller's fleet, cut from the cached fleet answer. None when the id is not in it: the
/// caller then asks the database, which tells a foreign id (404) from a vehicle without
/// fixes (an empty list). The router's ETag layer tags these small bodies.
pub async fn serve_one(
    state: &AppState,
    ctx: &Ctx,
    vehicle_id: Option<i64>,
    device_id: Option<i64>,
) -> ApiResult<Option<Response>> {
    // Without a bus tap nothing marks an entry stale, so unless stale answers are allowed
    // every request would rebuild the whole fleet for one vehicle.
    if state.bus.is_none() && state.config.latest_cache_ms == 0 {
        return Ok(None);
    }
    let e = entry(state, ctx).await?;
    let picked: Vec<&Position> = match (vehicle_id, device_id) {
        (Some(v), None) => match e.by_vehicle.get(&v) {
            Some(ix) => ix.iter().map(|&i| &e.items[i]).collect(),
            None => return Ok(None),
        },
        (v, Some(d)) => match e.by_device.get(&d).map(|&i| &e.items[i]) {
            Some(p) if v.is_none() || p.vehicle_id == v => vec![p],
            _ => return Ok(None),
        },
        (None, None) => return Ok(None),
    };
    let body = serde_json::to_vec(&PageRef {
        items: &picked,
        next_cursor: None,
    })
    .map_err(|_| ApiError::internal())?;
    Ok(Some(
        Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .expect("valid response"),
    ))
}

/// The caller's fresh entry, rebuilt if needed (by one request at a time).
async fn entry(state: &AppState, ctx: &Ctx) -> ApiResult<Arc<Entry>> {
    drain(state);
    let cache = &state.latest_cache;
    let key = (ctx.tenant_id, ctx.role == crate::auth::Role::Admin);
    let has_bus = state.bus.is_some();
    let max_stale = Duration::from_millis(state.config.latest_cache_ms);
    let generation = cache.generation.load(Ordering::Relaxed);
    let current = cache.entries.lock().expect("not poisoned").get(&key).cloned();
    if let Some(e) = &current
        && fresh(e, generation, has_bus, max_stale)
    {
        return Ok(e.clone());
    }
    let lock = cache
        .building
        .lock()
        .expect("not poisoned")
        .entry(key)
        .or_default()
        .clone();
    // One request rebuilds; the others answer with the previous entry meanwhile.
    let _guard = match lock.try_lock() {
        Ok(g) => g,
        Err(_) => {
            if let Some(e) = current {
                return Ok(e);
            }
            let g = lock.lock().await;
            if let Some(e) = cache.entries.lock().expect("not poisoned").get(&key).cloned()
                && fresh(&e, cache.generation.load(Ordering::Relaxed), has_bus, max_stale)
            {
                return Ok(e);
            }
            g
        }
    };
    let generation = cache.generation.load(Ordering::Relaxed);
    let items = build(state, ctx).await?;
    let entry = tokio::task::spawn_blocking(move || encode(items, generation))
        .await
        .map_err(|_| ApiError::internal())?;
    let entry = Arc::new(entry);
    cache.entries.lock().expect("not poisoned").insert(key, entry.clone());
    Ok(entry)
}

async fn build(state: &AppState, ctx: &Ctx) -> ApiResult<Vec<Position>> {
    let rows = store::query::latest_positions_for_tenant(&state.pool, ctx.tenant_id).await?;
    let vmap: HashMap<i64, Option<i64>> =
        sqlx::query_as::<_, (i64, Option<i64>)>("SELECT id, vehicle_id FROM devices WHERE tenant_id = $1")
            .bind(ctx.tenant_id)
            .fetch_all(&state.pool)
            .await?
            .into_iter()
            .collect();
    let items = rows
        .iter()
        .map(|r| Position::from_row(r, vmap.get(&r.device_id).copied().flatten()))
        .collect();
    crate::resources::telemetry::apply_consent(state, ctx, items).await
}

fn encode(items: Vec<Position>, generation: u64) -> Entry {
    use std::io::Write;
    let json = serde_json::to_vec(&PageRef {
        items: &items,
        next_cursor: None,
    })
    .unwrap_or_else(|_| b"{\"items\":[]}".to_vec());
    let digest = crate::auth::sha256_bytes(&json);
    let mut gz = flate2::write::GzEncoder::new(Vec::with_capacity(json.len() / 8), flate2::Compression::fast());
    let gzip = gz.write_all(&json).and_then(|_| gz.finish()).unwrap_or_default();
    let mut by_vehicle: HashMap<i64, Vec<usize>> = HashMap::new();
    let mut by_device = HashMap::with_capacity(items.len());
    for (i, p) in items.iter().enumerate() {
        by_device.insert(p.device_id, i);
        if let Some(v) = p.vehicle_id {
            by_vehicle.entry(v).or_default().push(i);
        }
    }
    Entry {
        items,
        by_vehicle,
        by_device,
        generation,
        built: Instant::now(),
        json: Bytes::from(json),
        gzip: Bytes::from(gzip),
        etag: format!("\"{}\"", hex::encode(&digest[..16])),
    }
}

/// The same shape as [`Page`], borrowing.
#[derive(serde::Serialize)]
struct PageRef<'a, T: serde::Serialize> {
    items: &'a [T],
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let mut parts = t.split(';');
            let name = parts.next().unwrap_or("").trim();
            let q0 = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !q0
        })
}

fn respond(e: &Entry, headers: &HeaderMap) -> Response {
    let gzip = accepts_gzip(headers) && !e.gzip.is_empty();
    // A representation per encoding, so a strong tag per encoding.
    let etag = if gzip {
        format!("{}-gz\"", e.etag.trim_end_matches('"'))
    } else {
        e.etag.clone()
    };
    let matched = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|s| {
            s.split(',')
                .any(|t| t.trim().trim_start_matches("W/") == etag || t.trim() == "*")
        });
    let mut b = Response::builder()
        .header(header::ETAG, HeaderValue::from_str(&etag).expect("hex tag"))
        .header(header::VARY, "accept-encoding")
        .header(header::CACHE_CONTROL, "private, no-cache");
    if matched {
        return b
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .expect("valid response");
    }
    b = b.header(header::CONTENT_TYPE, "application/json");
    let body = if gzip {
        b = b.header(header::CONTENT_ENCODING, "gzip");
        e.gzip.clone()
    } else {
        e.json.clone()
    };
    b.status(StatusCode::OK).body(Body::from(body)).expect("valid response")
}
