//! Devices, vehicles, drivers (and their assignments), groups, device commands, unknown
//! devices. Every query names `ctx.tenant_id`; an id of another tenant matches no row
//! and answers 404.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::{ListQuery, Page, check_attributes, check_name, order, page};
use crate::audit::Audit;
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, ErrorBody};
use crate::{AppState, Ctx, auth};

fn created<T: Serialize>(v: T) -> Response {
    (StatusCode::CREATED, Json(v)).into_response()
}

fn deleted(n: u64) -> ApiResult<StatusCode> {
    if n == 0 {
        Err(ApiError::not_found())
    } else {
        Ok(StatusCode::NO_CONTENT)
    }
}

/// 422 unless `id` is a vehicle of the caller's tenant (a foreign id looks nonexistent).
pub async fn check_vehicle(state: &AppState, ctx: &Ctx, field: &str, id: Option<i64>) -> ApiResult<()> {
    if let Some(id) = id {
        let ok: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM vehicles WHERE tenant_id = $1 AND id = $2)")
            .bind(ctx.tenant_id)
            .bind(id)
            .fetch_one(&state.pool)
            .await?;
        if !ok {
            return Err(ApiError::validation(field, "no such vehicle"));
        }
    }
    Ok(())
}

async fn check_driver(state: &AppState, ctx: &Ctx, field: &str, id: Option<i64>) -> ApiResult<()> {
    if let Some(id) = id {
        let ok: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM drivers WHERE tenant_id = $1 AND id = $2)")
            .bind(ctx.tenant_id)
            .bind(id)
            .fetch_one(&state.pool)
            .await?;
        if !ok {
            return Err(ApiError::validation(field, "no such driver"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- devices

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Device {
    pub id: i64,
    /// IMEI, or the vendor id for protocols without one.
    pub identifier: String,
    pub protocol: String,
    pub name: String,
    pub vehicle_id: Option<i64>,
    pub driver_id: Option<i64>,
    pub mqtt_username: Option<String>,
    pub disabled: bool,
    pub attributes: Value,
    pub created_at: DateTime<Utc>,
}

const DEVICE_COLS: &str =
    "id, identifier, protocol, name, vehicle_id, driver_id, mqtt_username, disabled, attributes, created_at";

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeviceFilter {
    /// Exact identifier (IMEI).
    pub identifier: Option<String>,
    pub protocol: Option<String>,
    pub vehicle_id: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/devices", tag = "devices", params(ListQuery, DeviceFilter),
    responses((status = 200, body = Page<Device>), (status = 422, body = ErrorBody)))]
pub async fn list_devices(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiQuery(q): ApiQuery<ListQuery>,
    ApiQuery(f): ApiQuery<DeviceFilter>,
) -> ApiResult<Json<Page<Device>>> {
    let (cursor, desc, limit) = q.keyset(&state)?;
    let (cmp, ord) = order(desc);
    let rows: Vec<Device> = sqlx::query_as(sqlf!(
        "SELECT {DEVICE_COLS} FROM devices WHERE tenant_id = $1 AND ($2::int8 IS NULL OR id {cmp} $2) \
         AND ($3::text IS NULL OR name ILIKE '%' || $3 || '%' OR identifier ILIKE '%' || $3 || '%') \
         AND ($4::text IS NULL OR identifier = $4) AND ($5::text IS NULL OR protocol = lower($5)) \
         AND ($6::int8 IS NULL OR vehicle_id = $6) ORDER BY id {ord} LIMIT $7"
    ))
    .bind(ctx.tenant_id)
    .bind(cursor)
    .bind(&q.q)
    .bind(&f.identifier)
    .bind(&f.protocol)
    .bind(f.vehicle_id)
    .bind(limit + 1)
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(page(rows, &q, &state, |d| d.id)?))
}

async fn get_device(state: &AppState, ctx: &Ctx, id: i64) -> ApiResult<Device> {
    sqlx::query_as(sqlf!(
        "SELECT {DEVICE_COLS} FROM devices WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(ctx.tenant_id)
    .bind(id)
    .fetch_optional(&state.pool)
    .await?
    .ok_or_else(ApiError::not_found)
}

/// The caller's device ids among `ids` (all of them when `None`), for telemetry queries.
pub async fn own_device(state: &AppState, ctx: &Ctx, id: i64) -> ApiResult<Device> {
    get_device(state, ctx, id).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDevice {
    pub identifier: String,
    /// Protocol name as `clutch decode` knows it (`teltonika`, `gt06`, `osmand`, …).
    pub protocol: String,
    #[serde(default)]
    pub name: String,
    pub vehicle_id: Option<i64>,
    pub driver_id: Option<i64>,
    pub attributes: Option<Value>,
}

pub(crate) fn check_identifier(s: &str) -> ApiResult<()> {
    if s.is_empty() || s.len() > 64 || !s.chars().all(|c| c.is_ascii_graphic()) {
        return Err(ApiError::validation("identifier", "1 to 64 printable ASCII characters"));
    }
    Ok(())
}

/// Register a device by identifier and protocol.
#[utoipa::path(post, path = "/api/v1/devices", tag = "devices", request_body = CreateDevice,
    params(("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = Device), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_device(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiJson(req): ApiJson<CreateDevice>,
) -> ApiResult<Response> {
    check_identifier(&req.identifier)?;
    let protocol: protocols::Protocol = req
        .protocol
        .parse()
        .map_err(|e: String| ApiError::validation("protocol", e))?;
    let attributes = req.attributes.unwrap_or_else(|| serde_json::json!({}));
    check_attributes(&attributes)?;
    check_vehicle(&state, &ctx, "vehicle_id", req.vehicle_id).await?;
    check_driver(&state, &ctx, "driver_id", req.driver_id).await?;
    let d: Device = sqlx::query_as(sqlf!(
        "INSERT INTO devices (tenant_id, identifier, protocol, name, vehicle_id, driver_id, attributes) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {DEVICE_COLS}"
    ))
    .bind(ctx.tenant_id)
    .bind(&req.identifier)
    .bind(protocol.to_string())
    .bind(&req.name)
    .bind(req.vehicle_id)
    .bind(req.driver_id)
    .bind(attributes)
    .fetch_one(&state.pool)
    .await?;
    // A device registered now is no longer unknown.
    sqlx::query("DELETE FROM unknown_devices WHERE protocol = $1 AND identifier = $2")
        .bind(&d.protocol)
        .bind(&d.identifier)
        .execute(&state.pool)
        .await?;
    Ok(created(d))
}

#[utoipa::path(get, path = "/api/v1/devices/{id}", tag = "devices", params(("id" = i64, Path)),
    responses((status = 200, body = Device), (status = 404, body = ErrorBody)))]
pub async fn read_device(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Device>> {
    Ok(Json(get_device(&state, &ctx, id).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DevicePatch {
    pub name: Option<String>,
    /// Attach to a vehicle; `null` detaches.
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<i64>)]
    pub vehicle_id: Option<Option<i64>>,
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<i64>)]
    pub driver_id: Option<Option<i64>>,
    pub disabled: Option<bool>,
    pub attributes: Option<Value>,
}

/// Distinguishes an absent field (keep) from an explicit `null` (clear).
pub mod double_option {
    use serde::{Deserialize, Deserializer};
    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(d).map(Some)
    }
}

#[utoipa::path(patch, path = "/api/v1/devices/{id}", tag = "devices", params(("id" = i64, Path)), request_body = DevicePatch,
    responses((status = 200, body = Device), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn patch_device(
    State(state): State<AppState>,
    ctx: Ctx,
    audit: Audit,
    ApiPath(id): ApiPath<i64>,
    ApiJson(p): ApiJson<DevicePatch>,
) -> ApiResult<Json<Device>> {
    let cur = get_device(&state, &ctx, id).await?;
    audit.before(&cur);
    if let Some(a) = &p.attributes {
        check_attributes(a)?;
    }
    let vehicle_id = p.vehicle_id.unwrap_or(cur.vehicle_id);
    let driver_id = p.driver_id.unwrap_or(cur.driver_id);
    check_vehicle(&state, &ctx, "vehicle_id", vehicle_id).await?;
    check_driver(&state, &ctx, "driver_id", driver_id).await?;
    Ok(Json(
        sqlx::query_as(sqlf!(
            "UPDATE devices SET name = coalesce($3, name), vehicle_id = $4, driver_id = $5, \
             disabled = coalesce($6, disabled), attributes = coalesce($7, attributes) \
             WHERE tenant_id = $1 AND id = $2 RETURNING {DEVICE_COLS}"
        ))
        .bind(ctx.tenant_id)
        .bind(id)
        .bind(p.name)
        .bind(vehicle_id)
        .bind(driver_id)
        .bind(p.disabled)
        .bind(p.attributes)
        .fetch_one(&state.pool)
        .await?,
    ))
}

#[utoipa::path(delete, path = "/api/v1/devices/{id}", tag = "devices", params(("id" = i64, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_device(
    State(state): State<AppState>,
    ctx: Ctx,
    audit: Audit,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<StatusCode> {
    let gone: Option<Device> = sqlx::query_as(sqlf!(
        "DELETE FROM devices WHERE tenant_id = $1 AND id = $2 RETURNING {DEVICE_COLS}"
    ))
    .bind(ctx.tenant_id)
    .bind(id)
    .fetch_optional(&state.pool)
    .await?;
    let gone = gone.ok_or_else(ApiError::not_found)?;
    audit.before(&gone);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MqttCredentials {
    pub username: String,
    /// Shown only in this response; stored as an argon2id hash.
    pub secret: String,
}

/// Generate (or replace) the device's MQTT credentials. The secret is shown once.
#[utoipa::path(post, path = "/api/v1/devices/{id}/mqtt-credentials", tag = "devices", params(("id" = i64, Path)),
    responses((status = 201, body = MqttCredentials), (status = 404, body = ErrorBody)))]
pub async fn mqtt_credentials(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Response> {
    let d = get_device(&state, &ctx, id).await?;
    let username = d.mqtt_username.unwrap_or(d.identifier);
    let secret = auth::random_token();
    let s = secret.clone();
    let hash = tokio::task::spawn_blocking(move || auth::hash_secret(&s))
        .await
        .map_err(|_| ApiError::internal())?;
    sqlx::query("UPDATE devices SET mqtt_username = $3, mqtt_secret_hash = $4 WHERE tenant_id = $1 AND id = $2")
        .bind(ctx.tenant_id)
        .bind(id)
        .bind(&username)
        .bind(hash)
        .execute(&state.pool)
        .await?;
    Ok(created(MqttCredentials { username, secret }))
}

// ---------------------------------------------------------------- commands

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct DeviceCommand {
    pub id: i64,
    pub device_id: i64,
    /// The command as JSON, e.g. `{"type": "engine_stop"}`.
    pub command: Value,
    /// queued, sent, answered or failed.
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub response: Option<String>,
    pub responded_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

const CMD_COLS: &str =
    "c.id, c.device_id, c.command, c.status, c.created_at, c.sent_at, c.response, c.responded_at, c.error";

#[utoipa::path(get, path = "/api/v1/devices/{id}/commands", tag = "commands", params(("id" = i64, Path), ListQuery),
    responses((status = 200, body = Page<DeviceCommand>), (status = 404, body = ErrorBody)))]
pub async fn list_commands(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Page<DeviceCommand>>> {
    get_device(&state, &ctx, id).await?;
    let (cursor, desc, limit) = q.keyset(&state)?;
    let (cmp, ord) = order(desc);
    let rows: Vec<DeviceCommand> = sqlx::query_as(sqlf!(
        "SELECT {CMD_COLS} FROM device_commands c JOIN devices d ON d.id = c.device_id \
         WHERE d.tenant_id = $1 AND c.device_id = $2 AND ($3::int8 IS NULL OR c.id {cmp} $3) ORDER BY c.id {ord} LIMIT $4"
    ))
    .bind(ctx.tenant_id)
    .bind(id)
    .bind(cursor)
    .bind(limit + 1)
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(page(rows, &q, &state, |c| c.id)?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendCommand {
    /// `{"type": "engine_stop"}`, `{"type": "set_interval", "seconds": 30}`, `{"type": "custom", "text": "..."}`.
    pub command: Value,
}

/// Queue a command; it is delivered when the device is (or next gets) connected.
#[utoipa::path(post, path = "/api/v1/devices/{id}/commands", tag = "commands", params(("id" = i64, Path),
    ("Idempotency-Key" = Option<String>, Header)), request_body = SendCommand,
    responses((status = 201, body = DeviceCommand), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn send_command(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<i64>,
    ApiJson(req): ApiJson<SendCommand>,
) -> ApiResult<Response> {
    get_device(&state, &ctx, id).await?;
    let cmd: protocols::Command =
        serde_json::from_value(req.command).map_err(|e| ApiError::validation("command", e.to_string()))?;
    if let protocols::Command::Custom { text } = &cmd
        && (text.is_empty() || text.len() > 512)
    {
        return Err(ApiError::validation("command.text", "1 to 512 bytes"));
    }
    let row: DeviceCommand = sqlx::query_as(sqlf!(
        "WITH c AS (INSERT INTO device_commands (device_id, command) VALUES ($1, $2) RETURNING *) SELECT {CMD_COLS} FROM c"
    ))
    .bind(id)
    .bind(serde_json::to_value(&cmd).map_err(|_| ApiError::internal())?)
    .fetch_one(&state.pool)
    .await?;
    Ok(created(row))
}

#[utoipa::path(get, path = "/api/v1/commands/{id}", tag = "commands", params(("id" = i64, Path)),
    responses((status = 200, body = DeviceCommand), (status = 404, body = ErrorBody)))]
pub async fn read_command(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<DeviceCommand>> {
    sqlx::query_as(sqlf!(
        "SELECT {CMD_COLS} FROM device_commands c JOIN devices d ON d.id = c.device_id WHERE d.tenant_id = $1 AND c.id = $2"
    ))
    .bind(ctx.tenant_id)
    .bind(id)
    .fetch_optional(&state.pool)
    .await?
    .map(Json)
    .ok_or_else(ApiError::not_found)
}

// ---------------------------------------------------------------- vehicles

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Vehicle {
    pub id: i64,
    pub name: String,
    pub vin: Option<String>,
    pub plate: Option<String>,
    pub make: Option<String>,
    pub model: Option<String>,
    pub year: Option<i16>,
    /// Usable fuel tank capacity, litres: turns a fuel level in % into litres.
    pub fuel_tank_l: Option<f64>,
    pub attributes: Value,
    pub created_at: DateTime<Utc>,
}

const VEHICLE_COLS: &str = "id, name, vin, plate, make, model, year, fuel_tank_l, attributes, created_at";

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VehicleFilter {
    pub vin: Option<String>,
    pub plate: Option<String>,
    pub group_id: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/vehicles", tag = "vehicles", params(ListQuery, VehicleFilter),
    responses((status = 200, body = Page<Vehicle>)))]
pub async fn list_vehicles(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiQuery(q): ApiQuery<ListQuery>,
    ApiQuery(f): ApiQuery<VehicleFilter>,
) -> ApiResult<Json<Page<Vehicle>>> {
    let (cursor, desc, limit) = q.keyset(&state)?;
    let (cmp, ord) = order(desc);
    let rows: Vec<Vehicle> = sqlx::query_as(sqlf!(
        "SELECT {VEHICLE_COLS} FROM vehicles v WHERE tenant_id = $1 AND ($2::int8 IS NULL OR id {cmp} $2) \
         AND ($3::text IS NULL OR name ILIKE '%' || $3 || '%' OR vin ILIKE '%' || $3 || '%' OR plate ILIKE '%' || $3 || '%') \
         AND ($4::text IS NULL OR vin = $4) AND ($5::text IS NULL OR plate = $5) \
         AND ($6::int8 IS NULL OR EXISTS (SELECT 1 FROM vehicle_group_members m WHERE m.group_id = $6 AND m.vehicle_id = v.id)) \
         AND ($8::int8[] IS NULL OR id = ANY ($8)) \
         ORDER BY id {ord} LIMIT $7"
    ))
    .bind(ctx.tenant_id)
    .bind(cursor)
    .bind(&q.q)
    .bind(&f.vin)
    .bind(&f.plate)
    .bind(f.group_id)
    .bind(limit + 1)
    .bind(crate::scope::vehicles(&state, &ctx).await?)
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(page(rows, &q, &state, |v| v.id)?))
}

async fn get_vehicle(state: &AppState, ctx: &Ctx, id: i64) -> ApiResult<Vehicle> {
    // Drivers and customers: their own vehicles only (crate::scope); others are a 404.
    sqlx::query_as(sqlf!(
        "SELECT {VEHICLE_COLS} FROM vehicles WHERE tenant_id = $1 AND id = $2 AND ($3::int8[] IS NULL OR id = ANY ($3))"
    ))
    .bind(ctx.tenant_id)
    .bind(id)
    .bind(crate::scope::vehicles(state, ctx).await?)
    .fetch_optional(&state.pool)
    .await?
    .ok_or_else(ApiError::not_found)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VehicleBody {
    pub name: Option<String>,
    pub vin: Option<String>,
    pub plate: Option<String>,
    pub make: Option<String>,
    pub model: Option<String>,
    pub year: Option<i16>,
    /// Litres, in (0, 100000].
    pub fuel_tank_l: Option<f64>,
    pub attributes: Option<Value>,
}

pub(crate) fn check_vehicle_body(b: &VehicleBody, creating: bool) -> ApiResult<()> {
    match &b.name {
        Some(n) => check_name("name", n)?,
        None if creating => return Err(ApiError::validation("name", "required")),
        None => {}
    }
    if let Some(v) = &b.vin
        && (v.len() != 17 || !v.chars().all(|c| c.is_ascii_alphanumeric()) || v.contains(['I', 'O', 'Q']))
    {
        return Err(ApiError::validation(
            "vin",
            "17 characters, digits and capitals except I, O, Q",
        ));
    }
    if let Some(y) = b.year
        && !(1900..=2100).contains(&y)
    {
        return Err(ApiError::validation("year", "between 1900 and 2100"));
    }
    if let Some(t) = b.fuel_tank_l
        && !(t.is_finite() && t > 0.0 && t <= 100_000.0)
    {
        return Err(ApiError::validation(
            "fuel_tank_l",
            "litres, more than 0 and at most 100000",
        ));
    }
    for (f, v) in [("plate", &b.plate), ("make", &b.make), ("model", &b.model)] {
        if v.as_ref().is_some_and(|s| s.len() > 100) {
            return Err(ApiError::validation(f, "at most 100 bytes"));
        }
    }
    if let Some(a) = &b.attributes {
        check_attributes(a)?;
    }
    Ok(())
}

#[utoipa::path(post, path = "/api/v1/vehicles", tag = "vehicles", request_body = VehicleBody,
    params(("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = Vehicle), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_vehicle(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiJson(b): ApiJson<VehicleBody>,
) -> ApiResult<Response> {
    check_vehicle_body(&b, true)?;
    let v: Vehicle = sqlx::query_as(sqlf!(
        "INSERT INTO vehicles (tenant_id, name, vin, plate, make, model, year, attributes, fuel_tank_l) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, coalesce($8, '{{}}'), $9) RETURNING {VEHICLE_COLS}"
    ))
    .bind(ctx.tenant_id)
    .bind(b.name)
    .bind(b.vin)
    .bind(b.plate)
    .bind(b.make)
    .bind(b.model)
    .bind(b.year)
    .bind(b.attributes)
    .bind(b.fuel_tank_l)
    .fetch_one(&state.pool)
    .await?;
    Ok(created(v))
}

#[utoipa::path(get, path = "/api/v1/vehicles/{id}", tag = "vehicles", params(("id" = i64, Path)),
    responses((status = 200, body = Vehicle), (status = 404, body = ErrorBody)))]
pub async fn read_vehicle(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Vehicle>> {
    Ok(Json(get_vehicle(&state, &ctx, id).await?))
}

#[utoipa::path(patch, path = "/api/v1/vehicles/{id}", tag = "vehicles", params(("id" = i64, Path)), request_body = VehicleBody,
    responses((status = 200, body = Vehicle), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn patch_vehicle(
    State(state): State<AppState>,
    ctx: Ctx,
    audit: Audit,
    ApiPath(id): ApiPath<i64>,
    ApiJson(b): ApiJson<VehicleBody>,
) -> ApiResult<Json<Vehicle>> {
    check_vehicle_body(&b, false)?;
    audit.before(&get_vehicle(&state, &ctx, id).await?);
    sqlx::query_as(sqlf!(
        "UPDATE vehicles SET name = coalesce($3, name), vin = coalesce($4, vin), plate = coalesce($5, plate), \
         make = coalesce($6, make), model = coalesce($7, model), year = coalesce($8, year), \
         attributes = coalesce($9, attributes), fuel_tank_l = coalesce($10, fuel_tank_l) \
         WHERE tenant_id = $1 AND id = $2 RETURNING {VEHICLE_COLS}"
    ))
    .bind(ctx.tenant_id)
    .bind(id)
    .bind(b.name)
    .bind(b.vin)
    .bind(b.plate)
    .bind(b.make)
    .bind(b.model)
    .bind(b.year)
    .bind(b.attributes)
    .bind(b.fuel_tank_l)
    .fetch_optional(&state.pool)
    .await?
    .map(Json)
    .ok_or_else(ApiError::not_found)
}

#[utoipa::path(delete, path = "/api/v1/vehicles/{id}", tag = "vehicles", params(("id" = i64, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_vehicle(
    State(state): State<AppState>,
    ctx: Ctx,
    audit: Audit,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<StatusCode> {
    let gone: Option<Vehicle> = sqlx::query_as(sqlf!(
        "DELETE FROM vehicles WHERE tenant_id = $1 AND id = $2 RETURNING {VEHICLE_COLS}"
    ))
    .bind(ctx.tenant_id)
    .bind(id)
    .fetch_optional(&state.pool)
    .await?;
    let gone = gone.ok_or_else(ApiError::not_found)?;
    audit.before(&gone);
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------- drivers

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Driver {
    pub id: i64,
    pub name: String,
    /// What a device reports as the driver id (iButton, RFID card).
    pub external_id: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub attributes: Value,
    pub created_at: DateTime<Utc>,
}

const DRIVER_COLS: &str = "id, name, external_id, email, phone, attributes, created_at";

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DriverFilter {
    pub external_id: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/drivers", tag = "drivers", params(ListQuery, DriverFilter),
    responses((status = 200, body = Page<Driver>)))]
pub async fn list_drivers(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiQuery(q): ApiQuery<ListQuery>,
    ApiQuery(f): ApiQuery<DriverFilter>,
) -> ApiResult<Json<Page<Driver>>> {
    let (cursor, desc, limit) = q.keyset(&state)?;
    let (cmp, ord) = order(desc);
    let rows: Vec<Driver> = sqlx::query_as(sqlf!(
        "SELECT {DRIVER_COLS} FROM drivers WHERE tenant_id = $1 AND ($2::int8 IS NULL OR id {cmp} $2) \
         AND ($3::text IS NULL OR name ILIKE '%' || $3 || '%') AND ($4::text IS NULL OR external_id = $4) \
         ORDER BY id {ord} LIMIT $5"
    ))
    .bind(ctx.tenant_id)
    .bind(cursor)
    .bind(&q.q)
    .bind(&f.external_id)
    .bind(limit + 1)
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(page(rows, &q, &state, |v| v.id)?))
}

async fn get_driver(state: &AppState, ctx: &Ctx, id: i64) -> ApiResult<Driver> {
    sqlx::query_as(sqlf!(
        "SELECT {DRIVER_COLS} FROM drivers WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(ctx.tenant_id)
    .bind(id)
    .fetch_optional(&state.pool)
    .await?
    .ok_or_else(ApiError::not_found)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DriverBody {
    pub name: Option<String>,
    pub external_id: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub attributes: Option<Value>,
}

fn check_driver_body(b: &DriverBody, creating: bool) -> ApiResult<()> {
    match &b.name {
        Some(n) => check_name("name", n)?,
        None if creating => return Err(ApiError::validation("name", "required")),
        None => {}
    }
    if let Some(e) = &b.email {
        crate::users::check_email(e)?;
    }
    for (f, v) in [("external_id", &b.external_id), ("phone", &b.phone)] {
        if v.as_ref().is_some_and(|s| s.is_empty() || s.len() > 100) {
            return Err(ApiError::validation(f, "1 to 100 bytes"));
        }
    }
    if let Some(a) = &b.attributes {
        check_attributes(a)?;
    }
    Ok(())
}

#[utoipa::path(post, path = "/api/v1/drivers", tag = "drivers", request_body = DriverBody,
    params(("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = Driver), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_driver(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiJson(b): ApiJson<DriverBody>,
) -> ApiResult<Response> {
    check_driver_body(&b, true)?;
    let d: Driver = sqlx::query_as(sqlf!(
        "INSERT INTO drivers (tenant_id, name, external_id, email, phone, attributes) \
         VALUES ($1, $2, $3, $4, $5, coalesce($6, '{{}}')) RETURNING {DRIVER_COLS}"
    ))
    .bind(ctx.tenant_id)
    .bind(b.name)
    .bind(b.external_id)
    .bind(b.email)
    .bind(b.phone)
    .bind(b.attributes)
    .fetch_one(&state.pool)
    .await?;
    Ok(created(d))
}

#[utoipa::path(get, path = "/api/v1/drivers/{id}", tag = "drivers", params(("id" = i64, Path)),
    responses((status = 200, body = Driver), (status = 404, body = ErrorBody)))]
pub async fn read_driver(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Driver>> {
    Ok(Json(get_driver(&state, &ctx, id).await?))
}

#[utoipa::path(patch, path = "/api/v1/drivers/{id}", tag = "drivers", params(("id" = i64, Path)), request_body = DriverBody,
    responses((status = 200, body = Driver), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn patch_driver(
    State(state): State<AppState>,
    ctx: Ctx,
    audit: Audit,
    ApiPath(id): ApiPath<i64>,
    ApiJson(b): ApiJson<DriverBody>,
) -> ApiResult<Json<Driver>> {
    check_driver_body(&b, false)?;
    audit.before(&get_driver(&state, &ctx, id).await?);
    sqlx::query_as(sqlf!(
        "UPDATE drivers SET name = coalesce($3, name), external_id = coalesce($4, external_id), \
         email = coalesce($5, email), phone = coalesce($6, phone), attributes = coalesce($7, attributes) \
         WHERE tenant_id = $1 AND id = $2 RETURNING {DRIVER_COLS}"
    ))
    .bind(ctx.tenant_id)
    .bind(id)
    .bind(b.name)
    .bind(b.external_id)
    .bind(b.email)
    .bind(b.phone)
    .bind(b.attributes)
    .fetch_optional(&state.pool)
    .await?
    .map(Json)
    .ok_or_else(ApiError::not_found)
}

#[utoipa::path(delete, path = "/api/v1/drivers/{id}", tag = "drivers", params(("id" = i64, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_driver(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<StatusCode> {
    deleted(
        sqlx::query("DELETE FROM drivers WHERE tenant_id = $1 AND id = $2")
            .bind(ctx.tenant_id)
            .bind(id)
            .execute(&state.pool)
            .await?
            .rows_affected(),
    )
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Assignment {
    pub id: i64,
    pub driver_id: i64,
    pub vehicle_id: i64,
    pub start_time: DateTime<Utc>,
    pub end_time: Option<DateTime<Utc>>,
}

#[utoipa::path(get, path = "/api/v1/drivers/{id}/assignments", tag = "drivers", params(("id" = i64, Path)),
    responses((status = 200, body = Page<Assignment>), (status = 404, body = ErrorBody)))]
pub async fn list_assignments(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Page<Assignment>>> {
    get_driver(&state, &ctx, id).await?;
    let (cursor, desc, limit) = q.keyset(&state)?;
    let (cmp, ord) = order(desc);
    let rows: Vec<Assignment> = sqlx::query_as(sqlf!(
        "SELECT id, driver_id, vehicle_id, start_time, end_time FROM driver_assignments \
         WHERE tenant_id = $1 AND driver_id = $2 AND ($3::int8 IS NULL OR id {cmp} $3) ORDER BY id {ord} LIMIT $4"
    ))
    .bind(ctx.tenant_id)
    .bind(id)
    .bind(cursor)
    .bind(limit + 1)
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(page(rows, &q, &state, |a| a.id)?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAssignment {
    pub vehicle_id: i64,
    /// Default: now.
    pub start_time: Option<DateTime<Utc>>,
    pub end_time: Option<DateTime<Utc>>,
}

/// Assign the driver to a vehicle from `start_time`; the driver's open assignment (if
/// any) ends there.
#[utoipa::path(post, path = "/api/v1/drivers/{id}/assignments", tag = "drivers", params(("id" = i64, Path),
    ("Idempotency-Key" = Option<String>, Header)), request_body = CreateAssignment,
    responses((status = 201, body = Assignment), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_assignment(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<i64>,
    ApiJson(b): ApiJson<CreateAssignment>,
) -> ApiResult<Response> {
    get_driver(&state, &ctx, id).await?;
    check_vehicle(&state, &ctx, "vehicle_id", Some(b.vehicle_id)).await?;
    let start = b.start_time.unwrap_or_else(Utc::now);
    if b.end_time.is_some_and(|e| e <= start) {
        return Err(ApiError::validation("end_time", "must be after start_time"));
    }
    let mut tx = state.pool.begin().await?;
    sqlx::query(
        "UPDATE driver_assignments SET end_time = $3 WHERE tenant_id = $1 AND driver_id = $2 \
         AND end_time IS NULL AND start_time < $3",
    )
    .bind(ctx.tenant_id)
    .bind(id)
    .bind(start)
    .execute(&mut *tx)
    .await?;
    let a: Assignment = sqlx::query_as(
        "INSERT INTO driver_assignments (tenant_id, driver_id, vehicle_id, start_time, end_time) \
         VALUES ($1, $2, $3, $4, $5) RETURNING id, driver_id, vehicle_id, start_time, end_time",
    )
    .bind(ctx.tenant_id)
    .bind(id)
    .bind(b.vehicle_id)
    .bind(start)
    .bind(b.end_time)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(created(a))
}

// ---------------------------------------------------------------- groups

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Group {
    pub id: i64,
    pub name: String,
    pub vehicle_ids: Vec<i64>,
    pub attributes: Value,
    pub created_at: DateTime<Utc>,
}

const GROUP_COLS: &str = "g.id, g.name, coalesce((SELECT array_agg(m.vehicle_id ORDER BY m.vehicle_id) \
     FROM vehicle_group_members m WHERE m.group_id = g.id), '{}') AS vehicle_ids, g.attributes, g.created_at";

#[utoipa::path(get, path = "/api/v1/groups", tag = "groups", params(ListQuery),
    responses((status = 200, body = Page<Group>)))]
pub async fn list_groups(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Page<Group>>> {
    let (cursor, desc, limit) = q.keyset(&state)?;
    let (cmp, ord) = order(desc);
    let rows: Vec<Group> = sqlx::query_as(sqlf!(
        "SELECT {GROUP_COLS} FROM vehicle_groups g WHERE g.tenant_id = $1 AND ($2::int8 IS NULL OR g.id {cmp} $2) \
         AND ($3::text IS NULL OR g.name ILIKE '%' || $3 || '%') ORDER BY g.id {ord} LIMIT $4"
    ))
    .bind(ctx.tenant_id)
    .bind(cursor)
    .bind(&q.q)
    .bind(limit + 1)
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(page(rows, &q, &state, |g| g.id)?))
}

async fn get_group(state: &AppState, ctx: &Ctx, id: i64) -> ApiResult<Group> {
    sqlx::query_as(sqlf!(
        "SELECT {GROUP_COLS} FROM vehicle_groups g WHERE g.tenant_id = $1 AND g.id = $2"
    ))
    .bind(ctx.tenant_id)
    .bind(id)
    .fetch_optional(&state.pool)
    .await?
    .ok_or_else(ApiError::not_found)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupBody {
    pub name: Option<String>,
    /// Replaces the membership.
    pub vehicle_ids: Option<Vec<i64>>,
    pub attributes: Option<Value>,
}

async fn set_members(tx: &mut sqlx::PgConnection, ctx: &Ctx, group: i64, ids: &[i64]) -> ApiResult<()> {
    let owned: i64 = sqlx::query_scalar("SELECT count(*) FROM vehicles WHERE tenant_id = $1 AND id = ANY($2)")
        .bind(ctx.tenant_id)
        .bind(ids)
        .fetch_one(&mut *tx)
        .await?;
    let mut uniq = ids.to_vec();
    uniq.sort_unstable();
    uniq.dedup();
    if owned != uniq.len() as i64 {
        return Err(ApiError::validation("vehicle_ids", "contains an unknown vehicle"));
    }
    sqlx::query("DELETE FROM vehicle_group_members WHERE group_id = $1")
        .bind(group)
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO vehicle_group_members (group_id, vehicle_id) SELECT $1, unnest($2::int8[])")
        .bind(group)
        .bind(&uniq)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

#[utoipa::path(post, path = "/api/v1/groups", tag = "groups", request_body = GroupBody,
    params(("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = Group), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_group(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiJson(b): ApiJson<GroupBody>,
) -> ApiResult<Response> {
    let name = b.name.ok_or_else(|| ApiError::validation("name", "required"))?;
    check_name("name", &name)?;
    if let Some(a) = &b.attributes {
        check_attributes(a)?;
    }
    let mut tx = state.pool.begin().await?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO vehicle_groups (tenant_id, name, attributes) VALUES ($1, $2, coalesce($3, '{}')) RETURNING id",
    )
    .bind(ctx.tenant_id)
    .bind(name)
    .bind(b.attributes)
    .fetch_one(&mut *tx)
    .await?;
    if let Some(ids) = &b.vehicle_ids {
        set_members(&mut tx, &ctx, id, ids).await?;
    }
    tx.commit().await?;
    Ok(created(get_group(&state, &ctx, id).await?))
}

#[utoipa::path(get, path = "/api/v1/groups/{id}", tag = "groups", params(("id" = i64, Path)),
    responses((status = 200, body = Group), (status = 404, body = ErrorBody)))]
pub async fn read_group(State(state): State<AppState>, ctx: Ctx, ApiPath(id): ApiPath<i64>) -> ApiResult<Json<Group>> {
    Ok(Json(get_group(&state, &ctx, id).await?))
}

#[utoipa::path(patch, path = "/api/v1/groups/{id}", tag = "groups", params(("id" = i64, Path)), request_body = GroupBody,
    responses((status = 200, body = Group), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn patch_group(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<i64>,
    ApiJson(b): ApiJson<GroupBody>,
) -> ApiResult<Json<Group>> {
    get_group(&state, &ctx, id).await?;
    if let Some(n) = &b.name {
        check_name("name", n)?;
    }
    if let Some(a) = &b.attributes {
        check_attributes(a)?;
    }
    let mut tx = state.pool.begin().await?;
    sqlx::query(
        "UPDATE vehicle_groups SET name = coalesce($3, name), attributes = coalesce($4, attributes) \
         WHERE tenant_id = $1 AND id = $2",
    )
    .bind(ctx.tenant_id)
    .bind(id)
    .bind(b.name)
    .bind(b.attributes)
    .execute(&mut *tx)
    .await?;
    if let Some(ids) = &b.vehicle_ids {
        set_members(&mut tx, &ctx, id, ids).await?;
    }
    tx.commit().await?;
    Ok(Json(get_group(&state, &ctx, id).await?))
}

#[utoipa::path(delete, path = "/api/v1/groups/{id}", tag = "groups", params(("id" = i64, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_group(State(state): State<AppState>, ctx: Ctx, ApiPath(id): ApiPath<i64>) -> ApiResult<StatusCode> {
    deleted(
        sqlx::query("DELETE FROM vehicle_groups WHERE tenant_id = $1 AND id = $2")
            .bind(ctx.tenant_id)
            .bind(id)
            .execute(&state.pool)
            .await?
            .rows_affected(),
    )
}

// ---------------------------------------------------------------- unknown devices

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct UnknownDevice {
    pub protocol: String,
    pub identifier: String,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub attempts: i64,
    pub remote_addr: Option<String>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UnknownQuery {
    /// The device's identifier (IMEI, vendor id), exactly as printed on it. Required.
    pub identifier: Option<String>,
}

/// Whether a device that is not registered yet has been trying to report: give its
/// identifier, get its attempts. An unregistered device belongs to no tenant, so the list
/// of all of them (other customers' IMEIs and addresses) is not shown to any tenant; the
/// platform operator reads it with `clutch device unknown`.
#[utoipa::path(get, path = "/api/v1/unknown-devices", tag = "devices", params(UnknownQuery),
    responses((status = 200, body = Page<UnknownDevice>), (status = 422, body = crate::error::ErrorBody)))]
pub async fn list_unknown(
    State(state): State<AppState>,
    _ctx: Ctx,
    ApiQuery(q): ApiQuery<UnknownQuery>,
) -> ApiResult<Json<Page<UnknownDevice>>> {
    let Some(identifier) = q.identifier.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()) else {
        return Err(ApiError::validation(
            "identifier",
            "required: the identifier of the device you are about to register",
        ));
    };
    let rows: Vec<UnknownDevice> = sqlx::query_as(
        "SELECT protocol, identifier, first_seen, last_seen, attempts, remote_addr FROM unknown_devices \
         WHERE identifier = $1 ORDER BY last_seen DESC",
    )
    .bind(identifier)
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(Page {
        items: rows,
        next_cursor: None,
    }))
}
