//! Telemetry reads (positions, trips, stops, events, scores, fuel, maintenance) and the
//! tables operators read back (geofences, service plans). Device ids come from the
//! caller's tenant first; telemetry is only ever read for those.

use std::fmt::Write as _;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use super::fleet::check_vehicle;
use super::{ListQuery, Page, check_attributes, check_name, order, page};
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, ErrorBody};
use crate::{AppState, Ctx};

/// A fix as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Position {
    pub device_id: i64,
    pub vehicle_id: Option<i64>,
    pub fix_time: DateTime<Utc>,
    pub server_time: DateTime<Utc>,
    pub lat: f64,
    pub lon: f64,
    pub altitude: Option<f32>,
    pub speed_kmh: Option<f32>,
    pub course: Option<f32>,
    pub satellites: Option<i16>,
    pub valid: bool,
    pub ignition: Option<bool>,
    pub odometer_m: Option<f64>,
    pub fuel_level_pct: Option<f32>,
    pub power_v: Option<f32>,
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<Value>,
}

impl Position {
    pub fn from_row(r: &store::PositionRow, vehicle_id: Option<i64>) -> Position {
        Position {
            device_id: r.device_id,
            vehicle_id,
            fix_time: r.fix_time,
            server_time: r.server_time,
            lat: r.lat,
            lon: r.lon,
            altitude: r.altitude,
            speed_kmh: r.speed_kmh,
            course: r.course,
            satellites: r.satellites,
            valid: r.valid,
            ignition: r.ignition,
            odometer_m: r.odometer_m,
            fuel_level_pct: r.fuel_level_pct,
            power_v: r.power_v,
            attributes: r.attributes.clone(),
        }
    }
}

/// (device id, vehicle id) of the caller's devices, optionally narrowed.
async fn tenant_devices(
    state: &AppState,
    ctx: &Ctx,
    device_id: Option<i64>,
    vehicle_id: Option<i64>,
    group_id: Option<i64>,
) -> ApiResult<Vec<(i64, Option<i64>)>> {
    // Drivers and customers: only the devices of their own vehicles (crate::scope).
    let only = crate::scope::vehicles(state, ctx).await?;
    Ok(sqlx::query_as(
        "SELECT d.id, d.vehicle_id FROM devices d WHERE d.tenant_id = $1 \
         AND ($2::int8 IS NULL OR d.id = $2) AND ($3::int8 IS NULL OR d.vehicle_id = $3) \
         AND ($4::int8 IS NULL OR d.vehicle_id IN (SELECT m.vehicle_id FROM vehicle_group_members m \
              JOIN vehicle_groups g ON g.id = m.group_id WHERE g.tenant_id = $1 AND g.id = $4)) \
         AND ($5::int8[] IS NULL OR d.vehicle_id = ANY ($5)) ORDER BY d.id",
    )
    .bind(ctx.tenant_id)
    .bind(device_id)
    .bind(vehicle_id)
    .bind(group_id)
    .bind(only)
    .fetch_all(&state.pool)
    .await?)
}

/// 404 when a named device/vehicle/group is not the caller's (so a foreign id is
/// indistinguishable from a missing one), else the device list.
async fn scoped_devices(
    state: &AppState,
    ctx: &Ctx,
    device_id: Option<i64>,
    vehicle_id: Option<i64>,
    group_id: Option<i64>,
) -> ApiResult<Vec<(i64, Option<i64>)>> {
    if let Some(v) = vehicle_id {
        check_vehicle(state, ctx, "vehicle_id", Some(v))
            .await
            .map_err(|_| ApiError::not_found())?;
        if crate::scope::vehicles(state, ctx)
            .await?
            .is_some_and(|mine| !mine.contains(&v))
        {
            return Err(ApiError::not_found());
        }
    }
    if let Some(g) = group_id {
        let ok: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM vehicle_groups WHERE tenant_id = $1 AND id = $2)")
                .bind(ctx.tenant_id)
                .bind(g)
                .fetch_one(&state.pool)
                .await?;
        if !ok {
            return Err(ApiError::not_found());
        }
    }
    let devs = tenant_devices(state, ctx, device_id, vehicle_id, group_id).await?;
    if device_id.is_some() && devs.is_empty() {
        return Err(ApiError::not_found());
    }
    Ok(devs)
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LatestQuery {
    pub vehicle_id: Option<i64>,
    pub group_id: Option<i64>,
    pub device_id: Option<i64>,
}

/// The latest fix of every device of the caller's fleet (or of one vehicle/group).
#[utoipa::path(get, path = "/api/v1/positions/latest", tag = "positions", params(LatestQuery),
    responses((status = 200, body = Page<Position>), (status = 404, body = ErrorBody)))]
pub async fn latest(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiQuery(q): ApiQuery<LatestQuery>,
    headers: axum::http::HeaderMap,
) -> ApiResult<Response> {
    let whole_fleet = q.vehicle_id.is_none() && q.group_id.is_none() && q.device_id.is_none();
    if whole_fleet && !crate::scope::is_scoped(ctx.role) {
        // The dashboard's poll: served pre-serialised (crate::latest).
        return crate::latest::serve(&state, &ctx, &headers).await;
    }
    // One vehicle or device (a dashboard's detail poll): cut from the same cache.
    if q.group_id.is_none()
        && !crate::scope::is_scoped(ctx.role)
        && let Some(r) = crate::latest::serve_one(&state, &ctx, q.vehicle_id, q.device_id).await?
    {
        return Ok(r);
    }
    // Scoped roles (drivers, customers), groups and ids the cache does not hold: the database.
    let devs = scoped_devices(&state, &ctx, q.device_id, q.vehicle_id, q.group_id).await?;
    let ids: Vec<i64> = devs.iter().map(|d| d.0).collect();
    let vmap: std::collections::HashMap<i64, Option<i64>> = devs.into_iter().collect();
    let items = store::query::latest_positions(&state.pool, &ids)
        .await?
        .iter()
        .map(|r| Position::from_row(r, vmap.get(&r.device_id).copied().flatten()))
        .collect();
    let items = apply_consent(&state, &ctx, items).await?;
    Ok(Json(Page {
        items,
        next_cursor: None,
    })
    .into_response())
}

/// Drivers' tracking consent (`driver_consent`, services issue): a fix of a device whose
/// driver has not consented to tracking outside working hours, taken outside them, is not
/// shown to anyone but an admin. The devices concerned are found first, so a fleet
/// without such drivers pays one cheap query; their fixes are then checked in one batch
/// by the SQL function `clutch_position_visible`.
pub(crate) async fn apply_consent(state: &AppState, ctx: &Ctx, items: Vec<Position>) -> ApiResult<Vec<Position>> {
    if ctx.role == crate::auth::Role::Admin || items.is_empty() {
        return Ok(items);
    }
    let restricted: Vec<i64> = sqlx::query_scalar(
        "SELECT d.id FROM devices d JOIN driver_consent c ON c.driver_id = d.driver_id \
         WHERE d.tenant_id = $1 AND NOT c.track_outside_hours",
    )
    .bind(ctx.tenant_id)
    .fetch_all(&state.pool)
    .await?;
    if restricted.is_empty() {
        return Ok(items);
    }
    let (devices, times): (Vec<i64>, Vec<DateTime<Utc>>) = items
        .iter()
        .filter(|p| restricted.contains(&p.device_id))
        .map(|p| (p.device_id, p.fix_time))
        .unzip();
    let hidden: Vec<(i64, DateTime<Utc>)> = sqlx::query_as(
        "SELECT d, t FROM unnest($1::int8[], $2::timestamptz[]) AS u(d, t) WHERE NOT clutch_position_visible(d, t)",
    )
    .bind(&devices)
    .bind(&times)
    .fetch_all(&state.pool)
    .await?;
    if hidden.is_empty() {
        return Ok(items);
    }
    let hidden: std::collections::HashSet<(i64, DateTime<Utc>)> = hidden.into_iter().collect();
    Ok(items
        .into_iter()
        .filter(|p| !hidden.contains(&(p.device_id, p.fix_time)))
        .collect())
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// One of device_id or vehicle_id.
    pub device_id: Option<i64>,
    pub vehicle_id: Option<i64>,
    /// RFC 3339 start (inclusive).
    pub from: DateTime<Utc>,
    /// RFC 3339 end (exclusive); at most 31 days after `from`.
    pub to: DateTime<Utc>,
    /// Keep the first fix of every interval of this many seconds.
    pub downsample_s: Option<u32>,
    /// json (default), geojson, csv or gpx.
    pub format: Option<String>,
    /// At most 100000 fixes.
    pub limit: Option<i64>,
    pub valid_only: Option<bool>,
}

/// Fixes of a device or vehicle over a time range, oldest first.
#[utoipa::path(get, path = "/api/v1/positions/history", tag = "positions", params(HistoryQuery),
    responses((status = 200, body = Page<Position>, description = "JSON; GeoJSON, CSV or GPX with `format`"),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn history(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> ApiResult<Response> {
    if q.device_id.is_none() == q.vehicle_id.is_none() {
        return Err(ApiError::validation(
            "device_id",
            "give exactly one of device_id and vehicle_id",
        ));
    }
    check_range(q.from, q.to, 31)?;
    let format = q.format.as_deref().unwrap_or("json");
    if !["json", "geojson", "csv", "gpx"].contains(&format) {
        return Err(ApiError::validation("format", "one of json, geojson, csv, gpx"));
    }
    if q.downsample_s == Some(0) {
        return Err(ApiError::validation("downsample_s", "must be at least 1"));
    }
    let devs = scoped_devices(&state, &ctx, q.device_id, q.vehicle_id, None).await?;
    let opts = store::query::HistoryOptions {
        downsample: q.downsample_s.map(|s| std::time::Duration::from_secs(s.into())),
        valid_only: q.valid_only.unwrap_or(false),
        limit: q.limit,
    };
    let mut items = Vec::new();
    for (dev, veh) in devs {
        for r in store::query::history(&state.pool, dev, q.from, q.to, &opts).await? {
            items.push(Position::from_row(&r, veh));
        }
    }
    let mut items = apply_consent(&state, &ctx, items).await?;
    items.sort_by_key(|p| p.fix_time);
    items.truncate(
        opts.limit
            .unwrap_or(store::query::MAX_ROWS)
            .clamp(1, store::query::MAX_ROWS) as usize,
    );
    Ok(render_track(format, items))
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn render_track(format: &str, items: Vec<Position>) -> Response {
    match format {
        "geojson" => {
            let coords: Vec<Value> = items.iter().map(|p| json!([p.lon, p.lat])).collect();
            let times: Vec<String> = items.iter().map(|p| rfc3339(p.fix_time)).collect();
            let body = json!({
                "type": "FeatureCollection",
                "features": [{
                    "type": "Feature",
                    "geometry": { "type": "LineString", "coordinates": coords },
                    "properties": { "times": times },
                }],
            });
            ([(header::CONTENT_TYPE, "application/geo+json")], body.to_string()).into_response()
        }
        "csv" => {
            let mut s = String::from(
                "device_id,fix_time,lat,lon,altitude,speed_kmh,course,satellites,valid,ignition,odometer_m\n",
            );
            let o = |v: Option<String>| v.unwrap_or_default();
            for p in &items {
                let _ = writeln!(
                    s,
                    "{},{},{},{},{},{},{},{},{},{},{}",
                    p.device_id,
                    rfc3339(p.fix_time),
                    p.lat,
                    p.lon,
                    o(p.altitude.map(|v| v.to_string())),
                    o(p.speed_kmh.map(|v| v.to_string())),
                    o(p.course.map(|v| v.to_string())),
                    o(p.satellites.map(|v| v.to_string())),
                    p.valid,
                    o(p.ignition.map(|v| v.to_string())),
                    o(p.odometer_m.map(|v| v.to_string())),
                );
            }
            ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], s).into_response()
        }
        "gpx" => {
            let mut s = String::from(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<gpx version=\"1.1\" creator=\"Clutch\" \
                 xmlns=\"http://www.topografix.com/GPX/1/1\">\n<trk><trkseg>\n",
            );
            for p in &items {
                let _ = write!(s, "<trkpt lat=\"{}\" lon=\"{}\">", p.lat, p.lon);
                if let Some(a) = p.altitude {
                    let _ = write!(s, "<ele>{a}</ele>");
                }
                let _ = writeln!(s, "<time>{}</time></trkpt>", rfc3339(p.fix_time));
            }
            s.push_str("</trkseg></trk>\n</gpx>\n");
            ([(header::CONTENT_TYPE, "application/gpx+xml")], s).into_response()
        }
        _ => Json(Page {
            items,
            next_cursor: None,
        })
        .into_response(),
    }
}

fn check_range(from: DateTime<Utc>, to: DateTime<Utc>, max_days: i64) -> ApiResult<()> {
    if from >= to {
        return Err(ApiError::validation("to", "must be after from"));
    }
    if to - from > Duration::days(max_days) {
        return Err(ApiError::validation("to", format!("range at most {max_days} days")));
    }
    Ok(())
}

/// Range parameters shared by trips, stops, events, fuel, scores.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RangeQuery {
    pub device_id: Option<i64>,
    pub vehicle_id: Option<i64>,
    /// RFC 3339; default 7 days before `to`.
    pub from: Option<DateTime<Utc>>,
    /// RFC 3339; default now. At most 366 days after `from`.
    pub to: Option<DateTime<Utc>>,
}

impl RangeQuery {
    fn range(&self) -> ApiResult<(DateTime<Utc>, DateTime<Utc>)> {
        let to = self.to.unwrap_or_else(Utc::now);
        let from = self.from.unwrap_or(to - Duration::days(7));
        check_range(from, to, 366)?;
        Ok((from, to))
    }
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Trip {
    pub id: i64,
    pub device_id: i64,
    pub vehicle_id: Option<i64>,
    pub start_time: DateTime<Utc>,
    pub end_time: Option<DateTime<Utc>>,
    pub start_lat: Option<f64>,
    pub start_lon: Option<f64>,
    pub end_lat: Option<f64>,
    pub end_lon: Option<f64>,
    pub distance_m: Option<f64>,
    pub max_speed_kmh: Option<f32>,
    pub avg_speed_kmh: Option<f32>,
    pub fuel_used_l: Option<f64>,
    pub driver_id: Option<i64>,
    pub attributes: Value,
}

const TRIP_COLS: &str = "t.id, t.device_id, d.vehicle_id, t.start_time, t.end_time, t.start_lat, t.start_lon, \
    t.end_lat, t.end_lon, t.distance_m, t.max_speed_kmh, t.avg_speed_kmh, t.fuel_used_l, t.driver_id, t.attributes";

#[utoipa::path(get, path = "/api/v1/trips", tag = "trips", params(RangeQuery, ListQuery),
    responses((status = 200, body = Page<Trip>), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn list_trips(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiQuery(r): ApiQuery<RangeQuery>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Page<Trip>>> {
    let (from, to) = r.range()?;
    let devs: Vec<i64> = scoped_devices(&state, &ctx, r.device_id, r.vehicle_id, None)
        .await?
        .into_iter()
        .map(|d| d.0)
        .collect();
    let (cursor, desc, limit) = q.keyset(&state)?;
    let (cmp, ord) = order(desc);
    let rows: Vec<Trip> = sqlx::query_as(sqlf!(
        "SELECT {TRIP_COLS} FROM trips t JOIN devices d ON d.id = t.device_id WHERE d.tenant_id = $1 \
         AND t.device_id = ANY($2) AND t.start_time >= $3 AND t.start_time < $4 \
         AND ($5::int8 IS NULL OR t.id {cmp} $5) ORDER BY t.id {ord} LIMIT $6"
    ))
    .bind(ctx.tenant_id)
    .bind(&devs)
    .bind(from)
    .bind(to)
    .bind(cursor)
    .bind(limit + 1)
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(page(rows, &q, &state, |t| t.id)?))
}

#[utoipa::path(get, path = "/api/v1/trips/{id}", tag = "trips", params(("id" = i64, Path)),
    responses((status = 200, body = Trip), (status = 404, body = ErrorBody)))]
pub async fn read_trip(State(state): State<AppState>, ctx: Ctx, ApiPath(id): ApiPath<i64>) -> ApiResult<Json<Trip>> {
    let only = crate::scope::vehicles(&state, &ctx).await?;
    sqlx::query_as(sqlf!(
        "SELECT {TRIP_COLS} FROM trips t JOIN devices d ON d.id = t.device_id WHERE d.tenant_id = $1 AND t.id = $2 \
         AND ($3::int8[] IS NULL OR d.vehicle_id = ANY ($3))"
    ))
    .bind(ctx.tenant_id)
    .bind(id)
    .bind(only)
    .fetch_optional(&state.pool)
    .await?
    .map(Json)
    .ok_or_else(ApiError::not_found)
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Stop {
    pub device_id: i64,
    pub vehicle_id: Option<i64>,
    /// End of the trip before.
    pub start_time: DateTime<Utc>,
    /// Start of the trip after; null while the vehicle is still stopped.
    pub end_time: Option<DateTime<Utc>>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub duration_s: Option<f64>,
}

/// Stops: the gaps between consecutive trips of a device.
#[utoipa::path(get, path = "/api/v1/stops", tag = "trips", params(RangeQuery),
    responses((status = 200, body = Page<Stop>), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn list_stops(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiQuery(r): ApiQuery<RangeQuery>,
) -> ApiResult<Json<Page<Stop>>> {
    let (from, to) = r.range()?;
    let devs: Vec<i64> = scoped_devices(&state, &ctx, r.device_id, r.vehicle_id, None)
        .await?
        .into_iter()
        .map(|d| d.0)
        .collect();
    let rows: Vec<Stop> = sqlx::query_as(
        "SELECT s.device_id, d.vehicle_id, s.start_time, s.end_time, s.lat, s.lon, \
                extract(epoch FROM s.end_time - s.start_time)::float8 AS duration_s \
         FROM (SELECT device_id, end_time AS start_time, \
                      lead(start_time) OVER (PARTITION BY device_id ORDER BY start_time) AS end_time, \
                      end_lat AS lat, end_lon AS lon \
               FROM trips WHERE device_id = ANY($2) AND start_time >= $3 AND start_time < $4) s \
         JOIN devices d ON d.id = s.device_id \
         WHERE d.tenant_id = $1 AND s.start_time IS NOT NULL ORDER BY s.start_time LIMIT 10000",
    )
    .bind(ctx.tenant_id)
    .bind(&devs)
    .bind(from)
    .bind(to)
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(Page {
        items: rows,
        next_cursor: None,
    }))
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Event {
    /// Opaque id built from the event's key (device, time, kind), for
    /// `POST /api/v1/events/{id}/ack`.
    #[sqlx(skip)]
    pub id: String,
    pub device_id: i64,
    pub vehicle_id: Option<i64>,
    pub time: DateTime<Utc>,
    pub end_time: Option<DateTime<Utc>>,
    pub kind: String,
    pub severity: Option<String>,
    pub magnitude: Option<f64>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub geofence_id: Option<i64>,
    pub attributes: Value,
    pub acknowledged: bool,
    /// When and by whom (the user's email, or `api key <id>`) it was first acknowledged.
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub acknowledged_by: Option<String>,
}

/// The id of the event with this key: `<device>.<microseconds since the epoch>.<kind>`,
/// URL-safe base64 so kinds with any character survive a path segment. The live stream
/// puts the same id on the events it sends.
pub fn event_id(device_id: i64, time: DateTime<Utc>, kind: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{device_id}.{}.{kind}", time.timestamp_micros()))
}

fn parse_event_id(id: &str) -> Option<(i64, DateTime<Utc>, String)> {
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(id).ok()?).ok()?;
    let mut it = raw.splitn(3, '.');
    let device = it.next()?.parse().ok()?;
    let time = DateTime::from_timestamp_micros(it.next()?.parse().ok()?)?;
    let kind = it.next()?.to_string();
    Some((device, time, kind))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// Comma-separated kinds (`overspeed,harsh_brake`).
    pub kind: Option<String>,
    pub severity: Option<String>,
    pub geofence_id: Option<i64>,
    /// Only acknowledged (`true`) or only unacknowledged (`false`) events.
    pub acknowledged: Option<bool>,
    /// `asc` (oldest first, the default) or `desc` (newest first, as a feed shows them).
    pub order: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

const EVENT_COLS: &str = "e.device_id, d.vehicle_id, e.time, e.end_time, e.kind, e.severity, e.magnitude, e.lat, \
    e.lon, e.geofence_id, e.attributes, a.device_id IS NOT NULL AS acknowledged, a.acked_at AS acknowledged_at, \
    a.acked_by AS acknowledged_by";

async fn query_events(
    state: &AppState,
    ctx: &Ctx,
    r: &RangeQuery,
    kinds: Option<Vec<String>>,
    e: &EventQuery,
) -> ApiResult<Page<Event>> {
    let (from, to) = r.range()?;
    let devs: Vec<i64> = scoped_devices(state, ctx, r.device_id, r.vehicle_id, None)
        .await?
        .into_iter()
        .map(|d| d.0)
        .collect();
    let limit = match e.limit {
        Some(n) if n < 1 => return Err(ApiError::validation("limit", "must be at least 1")),
        Some(n) => n.min(state.config.max_page_size),
        None => 100,
    };
    // Keyset over the events' unique key (time, device, kind).
    let after: Option<(DateTime<Utc>, i64, String)> = match &e.cursor {
        None => None,
        Some(c) => Some(
            URL_SAFE_NO_PAD
                .decode(c)
                .ok()
                .and_then(|b| serde_json::from_slice::<(DateTime<Utc>, i64, String)>(&b).ok())
                .ok_or_else(|| ApiError::validation("cursor", "not a cursor from this API"))?,
        ),
    };
    let (cmp, dir) = match e.order.as_deref() {
        None | Some("asc") => (">", "ASC"),
        Some("desc") => ("<", "DESC"),
        Some(_) => return Err(ApiError::validation("order", "asc or desc")),
    };
    // Only constants are spliced in: the column list and the direction chosen above.
    let sql = sqlf!(
        "SELECT {EVENT_COLS} \
         FROM events e JOIN devices d ON d.id = e.device_id \
         LEFT JOIN event_acks a ON a.device_id = e.device_id AND a.time = e.time AND a.kind = e.kind \
         WHERE d.tenant_id = $1 AND e.device_id = ANY($2) AND e.time >= $3 AND e.time < $4 \
           AND ($5::text[] IS NULL OR e.kind = ANY($5)) AND ($6::text IS NULL OR e.severity = $6) \
           AND ($7::int8 IS NULL OR e.geofence_id = $7) \
           AND ($8::timestamptz IS NULL OR (e.time, e.device_id, e.kind) {cmp} ($8, $9, $10)) \
           AND ($12::bool IS NULL OR (a.device_id IS NOT NULL) = $12) \
         ORDER BY e.time {dir}, e.device_id {dir}, e.kind {dir} LIMIT $11"
    );
    let mut rows: Vec<Event> = sqlx::query_as(sql)
        .bind(ctx.tenant_id)
        .bind(&devs)
        .bind(from)
        .bind(to)
        .bind(kinds)
        .bind(&e.severity)
        .bind(e.geofence_id)
        .bind(after.as_ref().map(|a| a.0))
        .bind(after.as_ref().map(|a| a.1))
        .bind(after.as_ref().map(|a| a.2.clone()))
        .bind(limit + 1)
        .bind(e.acknowledged)
        .fetch_all(&state.pool)
        .await?;
    for r in &mut rows {
        r.id = event_id(r.device_id, r.time, &r.kind);
    }
    let next_cursor = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last()
            .map(|l| URL_SAFE_NO_PAD.encode(serde_json::to_vec(&(l.time, l.device_id, &l.kind)).unwrap_or_default()))
    } else {
        None
    };
    Ok(Page {
        items: rows,
        next_cursor,
    })
}

fn kinds(s: &Option<String>) -> Option<Vec<String>> {
    s.as_ref().map(|k| {
        k.split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    })
}

#[utoipa::path(get, path = "/api/v1/events", tag = "events", params(RangeQuery, EventQuery),
    responses((status = 200, body = Page<Event>), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn list_events(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiQuery(r): ApiQuery<RangeQuery>,
    ApiQuery(e): ApiQuery<EventQuery>,
) -> ApiResult<Json<Page<Event>>> {
    let k = kinds(&e.kind);
    Ok(Json(query_events(&state, &ctx, &r, k, &e).await?))
}

/// Acknowledges an event for the whole tenant, recording who and when. Idempotent: a
/// second acknowledgement changes nothing and answers the first one's record.
#[utoipa::path(post, path = "/api/v1/events/{id}/ack", tag = "events", params(("id" = String, Path)),
    responses((status = 200, body = Event), (status = 404, body = ErrorBody)))]
pub async fn ack_event(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Event>> {
    let (device, time, kind) = parse_event_id(&id).ok_or_else(ApiError::not_found)?;
    let who: String = match ctx.api_key_id {
        Some(k) => format!("api key {k}"),
        None => sqlx::query_scalar("SELECT email FROM users WHERE id = $1")
            .bind(ctx.user_id)
            .fetch_optional(&state.pool)
            .await?
            .unwrap_or_else(|| format!("user {}", ctx.user_id)),
    };
    // Only an event of a device in the caller's tenant: anything else is a 404.
    sqlx::query(
        "INSERT INTO event_acks (device_id, time, kind, tenant_id, acked_by_user, acked_by_key, acked_by) \
         SELECT e.device_id, e.time, e.kind, d.tenant_id, $5, $6, $7 \
         FROM events e JOIN devices d ON d.id = e.device_id \
         WHERE d.tenant_id = $1 AND e.device_id = $2 AND e.time = $3 AND e.kind = $4 \
         ON CONFLICT (device_id, time, kind) DO NOTHING",
    )
    .bind(ctx.tenant_id)
    .bind(device)
    .bind(time)
    .bind(&kind)
    .bind(ctx.user_id)
    .bind(ctx.api_key_id)
    .bind(&who)
    .execute(&state.pool)
    .await?;
    let sql = sqlf!(
        "SELECT {EVENT_COLS} FROM events e JOIN devices d ON d.id = e.device_id \
         LEFT JOIN event_acks a ON a.device_id = e.device_id AND a.time = e.time AND a.kind = e.kind \
         WHERE d.tenant_id = $1 AND e.device_id = $2 AND e.time = $3 AND e.kind = $4"
    );
    let mut ev: Event = sqlx::query_as(sql)
        .bind(ctx.tenant_id)
        .bind(device)
        .bind(time)
        .bind(&kind)
        .fetch_optional(&state.pool)
        .await?
        .ok_or_else(ApiError::not_found)?;
    ev.id = event_id(ev.device_id, ev.time, &ev.kind);
    Ok(Json(ev))
}

/// What the DTC detector emits (`dtc_raised`, `dtc_cleared`, attributes `code`,
/// `description`), and `dtc` from devices or imports that report codes as events.
const DTC_KINDS: &[&str] = &["dtc", "dtc_raised", "dtc_cleared"];

/// Diagnostic trouble codes reported by the fleet (`dtc_raised`, `dtc_cleared`, `dtc` events).
#[utoipa::path(get, path = "/api/v1/maintenance/dtcs", tag = "maintenance", params(RangeQuery, EventQuery),
    responses((status = 200, body = Page<Event>), (status = 404, body = ErrorBody)))]
pub async fn list_dtcs(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiQuery(r): ApiQuery<RangeQuery>,
    ApiQuery(e): ApiQuery<EventQuery>,
) -> ApiResult<Json<Page<Event>>> {
    Ok(Json(
        query_events(
            &state,
            &ctx,
            &r,
            Some(DTC_KINDS.iter().map(|k| k.to_string()).collect()),
            &e,
        )
        .await?,
    ))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FuelReport {
    /// `refuel` and `fuel_theft` events in the range (magnitude = litres).
    pub events: Vec<Event>,
    pub refuelled_l: f64,
    pub drained_l: f64,
    /// Fuel used on trips that started in the range.
    pub trips_fuel_used_l: f64,
    pub trips_distance_m: f64,
    /// Litres per 100 km over those trips, when both are known.
    pub consumption_l_per_100km: Option<f64>,
}

#[utoipa::path(get, path = "/api/v1/fuel", tag = "fuel", params(RangeQuery),
    responses((status = 200, body = FuelReport), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn fuel(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiQuery(r): ApiQuery<RangeQuery>,
) -> ApiResult<Json<FuelReport>> {
    let e = EventQuery {
        limit: Some(state.config.max_page_size),
        ..Default::default()
    };
    let events = query_events(&state, &ctx, &r, Some(vec!["refuel".into(), "fuel_theft".into()]), &e)
        .await?
        .items;
    let sum = |k: &str| {
        events
            .iter()
            .filter(|e| e.kind == k)
            .filter_map(|e| e.magnitude)
            .sum::<f64>()
    };
    let (from, to) = r.range()?;
    let devs: Vec<i64> = scoped_devices(&state, &ctx, r.device_id, r.vehicle_id, None)
        .await?
        .into_iter()
        .map(|d| d.0)
        .collect();
    let (fuel, dist): (Option<f64>, Option<f64>) = sqlx::query_as(
        "SELECT sum(fuel_used_l), sum(distance_m) FILTER (WHERE fuel_used_l IS NOT NULL) FROM trips \
         WHERE device_id = ANY($1) AND start_time >= $2 AND start_time < $3",
    )
    .bind(&devs)
    .bind(from)
    .bind(to)
    .fetch_one(&state.pool)
    .await?;
    let (fuel, dist) = (fuel.unwrap_or(0.0), dist.unwrap_or(0.0));
    Ok(Json(FuelReport {
        refuelled_l: sum("refuel"),
        drained_l: sum("fuel_theft"),
        events,
        trips_fuel_used_l: fuel,
        trips_distance_m: dist,
        consumption_l_per_100km: (dist > 0.0).then(|| fuel / dist * 100_000.0),
    }))
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Score {
    /// driver, vehicle or device.
    pub subject_kind: String,
    pub subject_id: i64,
    /// trip or day.
    pub period: String,
    pub period_start: DateTime<Utc>,
    pub trip_id: Option<i64>,
    pub distance_m: f64,
    pub duration_s: f64,
    pub score: f32,
    pub breakdown: Value,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ScoreQuery {
    pub subject_kind: Option<String>,
    pub subject_id: Option<i64>,
    /// trip or day (default day).
    pub period: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

#[utoipa::path(get, path = "/api/v1/scores", tag = "scores", params(ScoreQuery),
    responses((status = 200, body = Page<Score>), (status = 422, body = ErrorBody)))]
pub async fn list_scores(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiQuery(q): ApiQuery<ScoreQuery>,
) -> ApiResult<Json<Page<Score>>> {
    let to = q.to.unwrap_or_else(Utc::now);
    let from = q.from.unwrap_or(to - Duration::days(30));
    check_range(from, to, 366)?;
    let period = q.period.as_deref().unwrap_or("day");
    if period != "day" && period != "trip" {
        return Err(ApiError::validation("period", "trip or day"));
    }
    if let Some(k) = &q.subject_kind
        && !["driver", "vehicle", "device"].contains(&k.as_str())
    {
        return Err(ApiError::validation("subject_kind", "driver, vehicle or device"));
    }
    // Drivers and customers: only their own subjects (crate::scope).
    let (only_vehicles, only_drivers) = if crate::scope::is_scoped(ctx.role) {
        (
            Some(
                crate::scope::subjects(&state, &ctx, "vehicle")
                    .await?
                    .unwrap_or_default(),
            ),
            Some(
                crate::scope::subjects(&state, &ctx, "driver")
                    .await?
                    .unwrap_or_default(),
            ),
        )
    } else {
        (None, None)
    };
    let rows: Vec<Score> = sqlx::query_as(
        "SELECT subject_kind, subject_id, period, period_start, trip_id, distance_m, duration_s, score, breakdown \
         FROM scores WHERE tenant_id = $1 AND period = $2 AND period_start >= $3 AND period_start < $4 \
           AND ($5::text IS NULL OR subject_kind = $5) AND ($6::int8 IS NULL OR subject_id = $6) \
           AND ($7::int8[] IS NULL OR (subject_kind = 'vehicle' AND subject_id = ANY ($7)) \
                OR (subject_kind = 'driver' AND subject_id = ANY ($8))) \
         ORDER BY period_start, subject_kind, subject_id LIMIT 10000",
    )
    .bind(ctx.tenant_id)
    .bind(period)
    .bind(from)
    .bind(to)
    .bind(&q.subject_kind)
    .bind(q.subject_id)
    .bind(only_vehicles)
    .bind(only_drivers)
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(Page {
        items: rows,
        next_cursor: None,
    }))
}

// ---------------------------------------------------------------- geofences

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Geofence {
    pub id: i64,
    pub name: String,
    /// GeoJSON geometry or Feature (circles: Point + `radius_m`; corridors: LineString + `width_m`).
    pub geojson: Value,
    /// Free-form, with the fence `rules` (dwell, hysteresis, speed limit, time windows).
    pub attributes: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const FENCE_COLS: &str = "id, name, geojson, attributes, created_at, updated_at";

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GeofenceBody {
    pub name: Option<String>,
    pub geojson: Option<Value>,
    pub attributes: Option<Value>,
}

/// Validates with the geofence crate exactly as the operator will load it.
fn validate_fence(name: &str, geojson: &Value, attributes: &Value) -> ApiResult<()> {
    check_attributes(attributes)?;
    super::check_json("geojson", geojson)?;
    let mut feature = match geojson.get("type").and_then(Value::as_str) {
        Some("Feature") => geojson.clone(),
        Some(_) => json!({ "type": "Feature", "geometry": geojson, "properties": {} }),
        None => return Err(ApiError::validation("geojson", "a GeoJSON geometry or Feature")),
    };
    feature["id"] = json!(1);
    if !feature.get("properties").is_some_and(Value::is_object) {
        feature["properties"] = json!({});
    }
    feature["properties"]["name"] = json!(name);
    if let Some(rules) = attributes.get("rules") {
        feature["properties"]["rules"] = rules.clone();
    }
    let f: geojson::Feature =
        serde_json::from_value(feature).map_err(|e| ApiError::validation("geojson", e.to_string()))?;
    geofence::fence_from_feature(&f).map_err(|e| ApiError::validation("geojson", e.to_string()))?;
    Ok(())
}

#[utoipa::path(get, path = "/api/v1/geofences", tag = "geofences", params(ListQuery),
    responses((status = 200, body = Page<Geofence>)))]
pub async fn list_geofences(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Page<Geofence>>> {
    let (cursor, desc, limit) = q.keyset(&state)?;
    let (cmp, ord) = order(desc);
    let rows: Vec<Geofence> = sqlx::query_as(sqlf!(
        "SELECT {FENCE_COLS} FROM geofences WHERE tenant_id = $1 AND ($2::int8 IS NULL OR id {cmp} $2) \
         AND ($3::text IS NULL OR name ILIKE '%' || $3 || '%') ORDER BY id {ord} LIMIT $4"
    ))
    .bind(ctx.tenant_id)
    .bind(cursor)
    .bind(&q.q)
    .bind(limit + 1)
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(page(rows, &q, &state, |g| g.id)?))
}

async fn get_fence(state: &AppState, ctx: &Ctx, id: i64) -> ApiResult<Geofence> {
    sqlx::query_as(sqlf!(
        "SELECT {FENCE_COLS} FROM geofences WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(ctx.tenant_id)
    .bind(id)
    .fetch_optional(&state.pool)
    .await?
    .ok_or_else(ApiError::not_found)
}

#[utoipa::path(post, path = "/api/v1/geofences", tag = "geofences", request_body = GeofenceBody,
    params(("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = Geofence), (status = 422, body = ErrorBody)))]
pub async fn create_geofence(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiJson(b): ApiJson<GeofenceBody>,
) -> ApiResult<Response> {
    let name = b.name.ok_or_else(|| ApiError::validation("name", "required"))?;
    check_name("name", &name)?;
    let gj = b.geojson.ok_or_else(|| ApiError::validation("geojson", "required"))?;
    let attrs = b.attributes.unwrap_or_else(|| json!({}));
    validate_fence(&name, &gj, &attrs)?;
    let g: Geofence = sqlx::query_as(sqlf!(
        "INSERT INTO geofences (tenant_id, name, geojson, attributes) VALUES ($1, $2, $3, $4) RETURNING {FENCE_COLS}"
    ))
    .bind(ctx.tenant_id)
    .bind(name)
    .bind(gj)
    .bind(attrs)
    .fetch_one(&state.pool)
    .await?;
    Ok((StatusCode::CREATED, Json(g)).into_response())
}

#[utoipa::path(get, path = "/api/v1/geofences/{id}", tag = "geofences", params(("id" = i64, Path)),
    responses((status = 200, body = Geofence), (status = 404, body = ErrorBody)))]
pub async fn read_geofence(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Geofence>> {
    Ok(Json(get_fence(&state, &ctx, id).await?))
}

#[utoipa::path(patch, path = "/api/v1/geofences/{id}", tag = "geofences", params(("id" = i64, Path)),
    request_body = GeofenceBody,
    responses((status = 200, body = Geofence), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn patch_geofence(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<i64>,
    ApiJson(b): ApiJson<GeofenceBody>,
) -> ApiResult<Json<Geofence>> {
    let cur = get_fence(&state, &ctx, id).await?;
    let name = b.name.unwrap_or(cur.name);
    check_name("name", &name)?;
    let gj = b.geojson.unwrap_or(cur.geojson);
    let attrs = b.attributes.unwrap_or(cur.attributes);
    validate_fence(&name, &gj, &attrs)?;
    Ok(Json(
        sqlx::query_as(sqlf!(
            "UPDATE geofences SET name = $3, geojson = $4, attributes = $5, updated_at = now() \
             WHERE tenant_id = $1 AND id = $2 RETURNING {FENCE_COLS}"
        ))
        .bind(ctx.tenant_id)
        .bind(id)
        .bind(name)
        .bind(gj)
        .bind(attrs)
        .fetch_one(&state.pool)
        .await?,
    ))
}

#[utoipa::path(delete, path = "/api/v1/geofences/{id}", tag = "geofences", params(("id" = i64, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_geofence(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<StatusCode> {
    let n = sqlx::query("DELETE FROM geofences WHERE tenant_id = $1 AND id = $2")
        .bind(ctx.tenant_id)
        .bind(id)
        .execute(&state.pool)
        .await?
        .rows_affected();
    if n == 0 {
        Err(ApiError::not_found())
    } else {
        Ok(StatusCode::NO_CONTENT)
    }
}

// ---------------------------------------------------------------- service plans

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct ServicePlan {
    pub id: i64,
    pub vehicle_id: i64,
    pub name: String,
    pub every_km: Option<f64>,
    pub every_engine_hours: Option<f64>,
    pub every_days: Option<i32>,
    pub last_done_at: Option<DateTime<Utc>>,
    pub last_done_km: Option<f64>,
    pub last_done_engine_h: Option<f64>,
    pub created_at: DateTime<Utc>,
}

const PLAN_COLS: &str = "p.id, p.vehicle_id, p.name, p.every_km, p.every_engine_hours, p.every_days, p.last_done_at, \
    p.last_done_km, p.last_done_engine_h, p.created_at";

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServicePlanBody {
    pub vehicle_id: Option<i64>,
    pub name: Option<String>,
    pub every_km: Option<f64>,
    pub every_engine_hours: Option<f64>,
    pub every_days: Option<i32>,
    pub last_done_at: Option<DateTime<Utc>>,
    pub last_done_km: Option<f64>,
    pub last_done_engine_h: Option<f64>,
}

fn check_plan(b: &ServicePlanBody) -> ApiResult<()> {
    for (f, v) in [("every_km", b.every_km), ("every_engine_hours", b.every_engine_hours)] {
        if v.is_some_and(|v| !(v.is_finite() && v > 0.0)) {
            return Err(ApiError::validation(f, "must be positive"));
        }
    }
    for (f, v) in [
        ("last_done_km", b.last_done_km),
        ("last_done_engine_h", b.last_done_engine_h),
    ] {
        if v.is_some_and(|v| !(v.is_finite() && v >= 0.0)) {
            return Err(ApiError::validation(f, "must be zero or more"));
        }
    }
    if b.every_days.is_some_and(|d| d <= 0) {
        return Err(ApiError::validation("every_days", "must be positive"));
    }
    if let Some(n) = &b.name {
        check_name("name", n)?;
    }
    Ok(())
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PlanFilter {
    pub vehicle_id: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/service-plans", tag = "maintenance", params(ListQuery, PlanFilter),
    responses((status = 200, body = Page<ServicePlan>)))]
pub async fn list_plans(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiQuery(q): ApiQuery<ListQuery>,
    ApiQuery(f): ApiQuery<PlanFilter>,
) -> ApiResult<Json<Page<ServicePlan>>> {
    let (cursor, desc, limit) = q.keyset(&state)?;
    let (cmp, ord) = order(desc);
    let rows: Vec<ServicePlan> = sqlx::query_as(sqlf!(
        "SELECT {PLAN_COLS} FROM service_plans p JOIN vehicles v ON v.id = p.vehicle_id WHERE v.tenant_id = $1 \
         AND ($2::int8 IS NULL OR p.id {cmp} $2) AND ($3::int8 IS NULL OR p.vehicle_id = $3) ORDER BY p.id {ord} LIMIT $4"
    ))
    .bind(ctx.tenant_id)
    .bind(cursor)
    .bind(f.vehicle_id)
    .bind(limit + 1)
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(page(rows, &q, &state, |p| p.id)?))
}

async fn get_plan(state: &AppState, ctx: &Ctx, id: i64) -> ApiResult<ServicePlan> {
    sqlx::query_as(sqlf!(
        "SELECT {PLAN_COLS} FROM service_plans p JOIN vehicles v ON v.id = p.vehicle_id WHERE v.tenant_id = $1 AND p.id = $2"
    ))
    .bind(ctx.tenant_id)
    .bind(id)
    .fetch_optional(&state.pool)
    .await?
    .ok_or_else(ApiError::not_found)
}

#[utoipa::path(post, path = "/api/v1/service-plans", tag = "maintenance", request_body = ServicePlanBody,
    params(("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = ServicePlan), (status = 422, body = ErrorBody)))]
pub async fn create_plan(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiJson(b): ApiJson<ServicePlanBody>,
) -> ApiResult<Response> {
    check_plan(&b)?;
    let vehicle_id = b
        .vehicle_id
        .ok_or_else(|| ApiError::validation("vehicle_id", "required"))?;
    check_vehicle(&state, &ctx, "vehicle_id", Some(vehicle_id)).await?;
    let name = b.name.ok_or_else(|| ApiError::validation("name", "required"))?;
    if b.every_km.is_none() && b.every_engine_hours.is_none() && b.every_days.is_none() {
        return Err(ApiError::validation(
            "every_km",
            "give at least one of every_km, every_engine_hours, every_days",
        ));
    }
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO service_plans (vehicle_id, name, every_km, every_engine_hours, every_days, last_done_at, \
         last_done_km, last_done_engine_h) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
    )
    .bind(vehicle_id)
    .bind(name)
    .bind(b.every_km)
    .bind(b.every_engine_hours)
    .bind(b.every_days)
    .bind(b.last_done_at)
    .bind(b.last_done_km)
    .bind(b.last_done_engine_h)
    .fetch_one(&state.pool)
    .await?;
    Ok((StatusCode::CREATED, Json(get_plan(&state, &ctx, id).await?)).into_response())
}

#[utoipa::path(get, path = "/api/v1/service-plans/{id}", tag = "maintenance", params(("id" = i64, Path)),
    responses((status = 200, body = ServicePlan), (status = 404, body = ErrorBody)))]
pub async fn read_plan(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<ServicePlan>> {
    Ok(Json(get_plan(&state, &ctx, id).await?))
}

#[utoipa::path(patch, path = "/api/v1/service-plans/{id}", tag = "maintenance", params(("id" = i64, Path)),
    request_body = ServicePlanBody,
    responses((status = 200, body = ServicePlan), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn patch_plan(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<i64>,
    ApiJson(b): ApiJson<ServicePlanBody>,
) -> ApiResult<Json<ServicePlan>> {
    get_plan(&state, &ctx, id).await?;
    check_plan(&b)?;
    if b.vehicle_id.is_some() {
        return Err(ApiError::validation(
            "vehicle_id",
            "a plan cannot move to another vehicle",
        ));
    }
    sqlx::query(
        "UPDATE service_plans SET name = coalesce($2, name), every_km = coalesce($3, every_km), \
         every_engine_hours = coalesce($4, every_engine_hours), every_days = coalesce($5, every_days), \
         last_done_at = coalesce($6, last_done_at), last_done_km = coalesce($7, last_done_km), \
         last_done_engine_h = coalesce($8, last_done_engine_h) WHERE id = $1",
    )
    .bind(id)
    .bind(b.name)
    .bind(b.every_km)
    .bind(b.every_engine_hours)
    .bind(b.every_days)
    .bind(b.last_done_at)
    .bind(b.last_done_km)
    .bind(b.last_done_engine_h)
    .execute(&state.pool)
    .await?;
    Ok(Json(get_plan(&state, &ctx, id).await?))
}

#[utoipa::path(delete, path = "/api/v1/service-plans/{id}", tag = "maintenance", params(("id" = i64, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_plan(State(state): State<AppState>, ctx: Ctx, ApiPath(id): ApiPath<i64>) -> ApiResult<StatusCode> {
    get_plan(&state, &ctx, id).await?;
    sqlx::query("DELETE FROM service_plans WHERE id = $1")
        .bind(id)
        .execute(&state.pool)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DueItem {
    pub plan: ServicePlan,
    /// Highest odometer reported by the vehicle's devices, km.
    pub odometer_km: Option<f64>,
    pub km_since: Option<f64>,
    pub days_since: Option<f64>,
    pub remaining_km: Option<f64>,
    pub remaining_days: Option<f64>,
    pub due: bool,
}

/// Service plans with how much is left until each is due (distance and calendar).
#[utoipa::path(get, path = "/api/v1/maintenance/due", tag = "maintenance", params(PlanFilter),
    responses((status = 200, body = Page<DueItem>)))]
pub async fn due(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiQuery(f): ApiQuery<PlanFilter>,
) -> ApiResult<Json<Page<DueItem>>> {
    let plans: Vec<ServicePlan> = sqlx::query_as(sqlf!(
        "SELECT {PLAN_COLS} FROM service_plans p JOIN vehicles v ON v.id = p.vehicle_id WHERE v.tenant_id = $1 \
         AND ($2::int8 IS NULL OR p.vehicle_id = $2) ORDER BY p.id LIMIT 10000"
    ))
    .bind(ctx.tenant_id)
    .bind(f.vehicle_id)
    .fetch_all(&state.pool)
    .await?;
    let odo: Vec<(i64, Option<f64>)> = sqlx::query_as(
        "SELECT d.vehicle_id, max(l.odometer_m) FROM devices d JOIN device_last_position l ON l.device_id = d.id \
         WHERE d.tenant_id = $1 AND d.vehicle_id IS NOT NULL GROUP BY d.vehicle_id",
    )
    .bind(ctx.tenant_id)
    .fetch_all(&state.pool)
    .await?;
    let odo: std::collections::HashMap<i64, f64> =
        odo.into_iter().filter_map(|(v, o)| Some((v, o? / 1000.0))).collect();
    let now = Utc::now();
    let items = plans
        .into_iter()
        .map(|plan| {
            let odometer_km = odo.get(&plan.vehicle_id).copied();
            let km_since = odometer_km.map(|o| o - plan.last_done_km.unwrap_or(0.0));
            let since = plan.last_done_at.unwrap_or(plan.created_at);
            let days_since = Some((now - since).num_seconds() as f64 / 86_400.0);
            let remaining_km = plan.every_km.zip(km_since).map(|(e, s)| e - s);
            let remaining_days = plan.every_days.zip(days_since).map(|(e, s)| e as f64 - s);
            let due = remaining_km.is_some_and(|r| r <= 0.0) || remaining_days.is_some_and(|r| r <= 0.0);
            DueItem {
                plan,
                odometer_km,
                km_since,
                days_since,
                remaining_km,
                remaining_days,
                due,
            }
        })
        .collect();
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}
