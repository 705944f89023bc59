//! Bulk operations: CSV import of devices and vehicles, bulk driver → vehicle assignment
//! and bulk vehicle → group membership.
//!
//! Every row is validated as the single-object routes validate it and gets its own
//! verdict: row number (1 = the first record after the header), file line, field and
//! message. By default each valid row is applied in its own transaction, so one bad row
//! costs only itself; with `?atomic=true` the whole file is one transaction (each row in a
//! savepoint, so every row's problem is still reported) and a single bad row applies
//! nothing (422, the report in `error.details`). Bodies are capped by `api.max_body_bytes`
//! and [`MAX_ROWS`].

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgConnection;
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ApiJson, ApiQuery, ApiResult, ErrorBody};
use crate::resources::check_attributes;
use crate::resources::fleet::{VehicleBody, check_identifier, check_vehicle_body};
use crate::{AppState, Ctx, sqlf};

/// Records per import or items per bulk request.
pub const MAX_ROWS: usize = 10_000;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ImportQuery {
    /// All rows or none (default false: each valid row is applied on its own).
    pub atomic: Option<bool>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RowError {
    /// 1-based record number, not counting the header (the item index + 1 for JSON bulk).
    pub row: usize,
    /// Line in the file where the record starts (CSV only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    pub field: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Applied {
    pub row: usize,
    /// Id of the created object (device, vehicle, assignment) or the vehicle id added to a group.
    pub id: i64,
}

#[cfg(test)]
mod tests {
    #[test]
    fn line_numbers() {
        let c = super::Csv::parse(b"a,b\n1,2\n\"x\ny\",3\n4,5\n", &["a", "b"], &["a"]).unwrap();
        let lines: Vec<u64> = c.records.iter().map(|r| r.0).collect();
        assert_eq!(lines, vec![2, 3, 5]);
        let c = super::Csv::parse(b"name,vin\nVan 1,1HG\n,1HH\nVan 3,X\n", &["name", "vin"], &["name"]).unwrap();
        let lines: Vec<u64> = c.records.iter().map(|r| r.0).collect();
        assert_eq!(lines, vec![2, 3, 4]);
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ImportReport {
    pub rows: usize,
    pub applied: usize,
    pub failed: usize,
    pub atomic: bool,
    pub created: Vec<Applied>,
    pub errors: Vec<RowError>,
}

impl ImportReport {
    fn into_response(self) -> Response {
        if self.atomic && !self.errors.is_empty() {
            let mut e = ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation",
                format!("{} of {} rows are invalid; nothing was applied", self.failed, self.rows),
            );
            e.details = serde_json::to_value(&self).unwrap_or(Value::Null);
            return e.into_response();
        }
        Json(self).into_response()
    }
}

/// Field and message of an API error, for a row's verdict.
fn verdict(e: &ApiError) -> (String, String) {
    let field = e.details["fields"]
        .as_object()
        .and_then(|m| m.keys().next().cloned())
        .unwrap_or_else(|| "row".to_string());
    let message = match e.code {
        "conflict" => "already exists (a unique field is taken)".to_string(),
        _ => e.details["fields"][&field]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| e.message.clone()),
    };
    (field, message)
}

fn check_csv(headers: &HeaderMap) -> ApiResult<()> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ct.starts_with("text/csv") || ct.starts_with("application/csv") {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the file as text/csv",
        ))
    }
}

/// A parsed file: header names and records (with their line numbers), or a whole-file
/// problem (not UTF-8, no header, unknown column, too many rows).
struct Csv {
    records: Vec<(u64, csv::StringRecord)>,
    index: std::collections::HashMap<String, usize>,
}

impl Csv {
    fn parse(body: &[u8], known: &[&str], required: &[&str]) -> ApiResult<Csv> {
        let text = std::str::from_utf8(body).map_err(|_| ApiError::validation("body", "the file is not UTF-8"))?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut rd = csv::ReaderBuilder::new()
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(text.as_bytes());
        let headers = rd
            .headers()
            .map_err(|e| ApiError::validation("header", e.to_string()))?
            .clone();
        let mut index = std::collections::HashMap::new();
        for (i, h) in headers.iter().enumerate() {
            let h = h.to_ascii_lowercase();
            if !known.contains(&h.as_str()) {
                return Err(ApiError::validation(
                    "header",
                    format!("unknown column {h:?}; known: {}", known.join(", ")),
                ));
            }
            if index.insert(h.clone(), i).is_some() {
                return Err(ApiError::validation("header", format!("column {h:?} appears twice")));
            }
        }
        for r in required {
            if !index.contains_key(*r) {
                return Err(ApiError::validation("header", format!("missing column {r:?}")));
            }
        }
        let mut records = Vec::new();
        for rec in rd.records() {
            if records.len() >= MAX_ROWS {
                return Err(ApiError::validation(
                    "body",
                    format!("at most {MAX_ROWS} rows per import"),
                ));
            }
            match rec {
                Ok(r) => {
                    let line = r.position().map(|p| p.line()).unwrap_or(0);
                    records.push((line, r));
                }
                // A malformed record (bad quoting, not UTF-8) is that row's problem.
                Err(e) => {
                    let line = e.position().map(|p| p.line()).unwrap_or(0);
                    let mut bad = csv::StringRecord::new();
                    bad.push_field("\u{0}malformed");
                    bad.push_field(&e.to_string());
                    records.push((line, bad));
                }
            }
        }
        Ok(Csv { records, index })
    }

    fn get<'a>(&self, r: &'a csv::StringRecord, col: &str) -> Option<&'a str> {
        self.index.get(col).and_then(|i| r.get(*i)).filter(|s| !s.is_empty())
    }
}

fn malformed(r: &csv::StringRecord) -> Option<ApiError> {
    (r.get(0) == Some("\u{0}malformed")).then(|| ApiError::validation("row", r.get(1).unwrap_or("malformed")))
}

fn int(field: &str, v: Option<&str>) -> ApiResult<Option<i64>> {
    v.map(|s| {
        s.parse::<i64>()
            .map_err(|_| ApiError::validation(field, "must be an integer"))
    })
    .transpose()
}

fn json_attrs(v: Option<&str>) -> ApiResult<Value> {
    match v {
        None => Ok(serde_json::json!({})),
        Some(s) => {
            let v: Value =
                serde_json::from_str(s).map_err(|_| ApiError::validation("attributes", "must be a JSON object"))?;
            check_attributes(&v)?;
            Ok(v)
        }
    }
}

/// Runs `apply` for every record, per row or all-or-nothing, and builds the report.
async fn run<T, F>(state: &AppState, atomic: bool, items: Vec<(Option<u64>, T)>, apply: F) -> ApiResult<ImportReport>
where
    T: Send,
    F: for<'c> Fn(&'c mut PgConnection, T) -> Apply<'c>,
{
    let rows = items.len();
    let mut created = Vec::new();
    let mut errors = Vec::new();
    let mut outer = if atomic { Some(state.pool.begin().await?) } else { None };
    for (i, (line, item)) in items.into_iter().enumerate() {
        let row = i + 1;
        let result = match outer.as_mut() {
            // A savepoint per row: a failed row rolls back alone and the others still run.
            Some(tx) => {
                let mut sp = sqlx::Acquire::begin(&mut **tx).await?;
                match apply(&mut sp, item).await {
                    Ok(id) => sp.commit().await.map(|_| id).map_err(ApiError::from),
                    Err(e) => Err(e),
                }
            }
            None => {
                let mut tx = state.pool.begin().await?;
                match apply(&mut tx, item).await {
                    Ok(id) => tx.commit().await.map(|_| id).map_err(ApiError::from),
                    Err(e) => Err(e),
                }
            }
        };
        match result {
            Ok(id) => created.push(Applied { row, id }),
            Err(e) if e.status.is_server_error() => return Err(e),
            Err(e) => {
                let (field, message) = verdict(&e);
                errors.push(RowError {
                    row,
                    line,
                    field,
                    message,
                });
            }
        }
    }
    if let Some(tx) = outer {
        if errors.is_empty() {
            tx.commit().await?;
        } else {
            tx.rollback().await?;
            created.clear();
        }
    }
    Ok(ImportReport {
        rows,
        applied: created.len(),
        failed: errors.len(),
        atomic,
        created,
        errors,
    })
}

/// One row's work, on the row's transaction (or savepoint).
type Apply<'c> = std::pin::Pin<Box<dyn std::future::Future<Output = ApiResult<i64>> + Send + 'c>>;

const DEVICE_COLUMNS: &[&str] = &[
    "identifier",
    "protocol",
    "name",
    "vehicle_id",
    "vehicle_vin",
    "driver_id",
    "driver_external_id",
    "disabled",
    "attributes",
];

struct DeviceRow {
    identifier: String,
    protocol: String,
    name: String,
    vehicle_id: Option<i64>,
    vehicle_vin: Option<String>,
    driver_id: Option<i64>,
    driver_external_id: Option<String>,
    disabled: bool,
    attributes: Value,
}

fn device_row(csv: &Csv, r: &csv::StringRecord) -> ApiResult<DeviceRow> {
    if let Some(e) = malformed(r) {
        return Err(e);
    }
    let identifier = csv
        .get(r, "identifier")
        .ok_or_else(|| ApiError::validation("identifier", "required"))?;
    check_identifier(identifier)?;
    let protocol: protocols::Protocol = csv
        .get(r, "protocol")
        .ok_or_else(|| ApiError::validation("protocol", "required"))?
        .parse()
        .map_err(|e: String| ApiError::validation("protocol", e))?;
    let name = csv.get(r, "name").unwrap_or("").to_string();
    if name.len() > 200 {
        return Err(ApiError::validation("name", "at most 200 bytes"));
    }
    let disabled = match csv.get(r, "disabled").map(str::to_ascii_lowercase).as_deref() {
        None | Some("false") | Some("0") | Some("no") => false,
        Some("true") | Some("1") | Some("yes") => true,
        Some(_) => return Err(ApiError::validation("disabled", "true or false")),
    };
    Ok(DeviceRow {
        identifier: identifier.to_string(),
        protocol: protocol.to_string(),
        name,
        vehicle_id: int("vehicle_id", csv.get(r, "vehicle_id"))?,
        vehicle_vin: csv.get(r, "vehicle_vin").map(str::to_string),
        driver_id: int("driver_id", csv.get(r, "driver_id"))?,
        driver_external_id: csv.get(r, "driver_external_id").map(str::to_string),
        disabled,
        attributes: json_attrs(csv.get(r, "attributes"))?,
    })
}

/// The id of the tenant's vehicle named by id or VIN (422 on the field otherwise).
async fn resolve(
    c: &mut PgConnection,
    tenant: i64,
    table: &str,
    key_col: &str,
    (id_field, id): (&str, Option<i64>),
    (key_field, key): (&str, Option<&str>),
) -> ApiResult<Option<i64>> {
    if let Some(id) = id {
        let ok: bool = sqlx::query_scalar(sqlf!(
            "SELECT EXISTS (SELECT 1 FROM {table} WHERE tenant_id = $1 AND id = $2)"
        ))
        .bind(tenant)
        .bind(id)
        .fetch_one(&mut *c)
        .await?;
        return if ok {
            Ok(Some(id))
        } else {
            Err(ApiError::validation(id_field, "no such object in this tenant"))
        };
    }
    if let Some(k) = key {
        let id: Option<i64> =
            sqlx::query_scalar(sqlf!("SELECT id FROM {table} WHERE tenant_id = $1 AND {key_col} = $2"))
                .bind(tenant)
                .bind(k)
                .fetch_optional(&mut *c)
                .await?;
        return id
            .map(Some)
            .ok_or_else(|| ApiError::validation(key_field, "no such object in this tenant"));
    }
    Ok(None)
}

/// Import devices from CSV. Columns (header row, any order): `identifier`, `protocol`
/// (required), `name`, `vehicle_id` or `vehicle_vin`, `driver_id` or
/// `driver_external_id`, `disabled`, `attributes` (a JSON object).
#[utoipa::path(post, path = "/api/v1/admin/import/devices", tag = "admin", params(ImportQuery),
    request_body(content = String, content_type = "text/csv",
        description = "identifier,protocol,name,vehicle_vin\n356307042441013,teltonika,Van 1,1HGBH41JXMN109186"),
    responses((status = 200, body = ImportReport, description = "per-row verdicts (valid rows applied)"),
              (status = 415, body = ErrorBody), (status = 413, body = ErrorBody),
              (status = 422, body = ErrorBody, description = "bad header or, with atomic, any bad row")))]
pub async fn devices(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiQuery(q): ApiQuery<ImportQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    check_csv(&headers)?;
    let csv = Csv::parse(&body, DEVICE_COLUMNS, &["identifier", "protocol"])?;
    let items: Vec<(Option<u64>, ApiResult<DeviceRow>)> = csv
        .records
        .iter()
        .map(|(l, r)| (Some(*l), device_row(&csv, r)))
        .collect();
    let tenant = ctx.tenant_id;
    let report = run(&state, q.atomic.unwrap_or(false), items, move |c, row| {
        Box::pin(async move {
            let row = row?;
            let vehicle = resolve(
                c,
                tenant,
                "vehicles",
                "vin",
                ("vehicle_id", row.vehicle_id),
                ("vehicle_vin", row.vehicle_vin.as_deref()),
            )
            .await?;
            let driver = resolve(
                c,
                tenant,
                "drivers",
                "external_id",
                ("driver_id", row.driver_id),
                ("driver_external_id", row.driver_external_id.as_deref()),
            )
            .await?;
            let id: i64 = sqlx::query_scalar(
            "INSERT INTO devices (tenant_id, identifier, protocol, name, vehicle_id, driver_id, disabled, attributes) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        )
        .bind(tenant)
        .bind(&row.identifier)
        .bind(&row.protocol)
        .bind(&row.name)
        .bind(vehicle)
        .bind(driver)
        .bind(row.disabled)
        .bind(&row.attributes)
        .fetch_one(&mut *c)
        .await
        .map_err(|e| match ApiError::from(e) {
            e if e.code == "conflict" => ApiError::validation("identifier", "already registered"),
            e => e,
        })?;
            sqlx::query("DELETE FROM unknown_devices WHERE protocol = $1 AND identifier = $2")
                .bind(&row.protocol)
                .bind(&row.identifier)
                .execute(&mut *c)
                .await?;
            Ok(id)
        })
    })
    .await?;
    Ok(report.into_response())
}

const VEHICLE_COLUMNS: &[&str] = &[
    "name",
    "vin",
    "plate",
    "make",
    "model",
    "year",
    "fuel_tank_l",
    "group_id",
    "attributes",
];

fn vehicle_row(csv: &Csv, r: &csv::StringRecord) -> ApiResult<(VehicleBody, Option<i64>)> {
    if let Some(e) = malformed(r) {
        return Err(e);
    }
    let s = |c: &str| csv.get(r, c).map(str::to_string);
    let year = csv
        .get(r, "year")
        .map(|y| {
            y.parse::<i16>()
                .map_err(|_| ApiError::validation("year", "between 1900 and 2100"))
        })
        .transpose()?;
    let fuel_tank_l = csv
        .get(r, "fuel_tank_l")
        .map(|t| {
            t.parse::<f64>()
                .map_err(|_| ApiError::validation("fuel_tank_l", "a number of litres"))
        })
        .transpose()?;
    let b = VehicleBody {
        name: s("name"),
        vin: s("vin").map(|v| v.to_ascii_uppercase()),
        plate: s("plate"),
        make: s("make"),
        model: s("model"),
        year,
        fuel_tank_l,
        attributes: Some(json_attrs(csv.get(r, "attributes"))?),
    };
    check_vehicle_body(&b, true)?;
    Ok((b, int("group_id", csv.get(r, "group_id"))?))
}

/// Import vehicles from CSV. Columns: `name` (required), `vin`, `plate`, `make`,
/// `model`, `year`, `fuel_tank_l` (litres), `group_id` (added to that group), `attributes`
/// (a JSON object).
#[utoipa::path(post, path = "/api/v1/admin/import/vehicles", tag = "admin", params(ImportQuery),
    request_body(content = String, content_type = "text/csv",
        description = "name,vin,plate\nVan 1,1HGBH41JXMN109186,B-CL 1"),
    responses((status = 200, body = ImportReport, description = "per-row verdicts (valid rows applied)"),
              (status = 415, body = ErrorBody), (status = 413, body = ErrorBody),
              (status = 422, body = ErrorBody, description = "bad header or, with atomic, any bad row")))]
pub async fn vehicles(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiQuery(q): ApiQuery<ImportQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    check_csv(&headers)?;
    let csv = Csv::parse(&body, VEHICLE_COLUMNS, &["name"])?;
    let items: Vec<_> = csv
        .records
        .iter()
        .map(|(l, r)| (Some(*l), vehicle_row(&csv, r)))
        .collect();
    let tenant = ctx.tenant_id;
    let report = run(&state, q.atomic.unwrap_or(false), items, move |c, row| {
        Box::pin(async move {
            let (b, group) = row?;
            let group = resolve(
                c,
                tenant,
                "vehicle_groups",
                "name",
                ("group_id", group),
                ("group_id", None),
            )
            .await?;
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO vehicles (tenant_id, name, vin, plate, make, model, year, attributes, fuel_tank_l) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
            )
            .bind(tenant)
            .bind(b.name)
            .bind(b.vin)
            .bind(b.plate)
            .bind(b.make)
            .bind(b.model)
            .bind(b.year)
            .bind(b.attributes)
            .bind(b.fuel_tank_l)
            .fetch_one(&mut *c)
            .await
            .map_err(|e| match ApiError::from(e) {
                e if e.code == "conflict" => ApiError::validation("vin", "already registered in this tenant"),
                e => e,
            })?;
            if let Some(g) = group {
                sqlx::query("INSERT INTO vehicle_group_members (group_id, vehicle_id) VALUES ($1, $2)")
                    .bind(g)
                    .bind(id)
                    .execute(&mut *c)
                    .await?;
            }
            Ok(id)
        })
    })
    .await?;
    Ok(report.into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DriverAssignment {
    pub driver_id: i64,
    pub vehicle_id: i64,
    /// Default: now. The driver's open assignment (if any) ends here.
    pub start_time: Option<DateTime<Utc>>,
    pub end_time: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkAssign {
    pub assignments: Vec<DriverAssignment>,
    /// All or nothing (default false).
    #[serde(default)]
    pub atomic: bool,
}

/// Assign drivers to vehicles in bulk (one assignment per item, as
/// `POST /drivers/{id}/assignments` does); per-item verdicts.
#[utoipa::path(post, path = "/api/v1/admin/bulk/driver-assignments", tag = "admin", request_body = BulkAssign,
    responses((status = 200, body = ImportReport), (status = 422, body = ErrorBody)))]
pub async fn assign_drivers(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiJson(b): ApiJson<BulkAssign>,
) -> ApiResult<Response> {
    if b.assignments.len() > MAX_ROWS {
        return Err(ApiError::validation("assignments", format!("at most {MAX_ROWS} items")));
    }
    let tenant = ctx.tenant_id;
    let items = b.assignments.into_iter().map(|a| (None, a)).collect();
    let report = run(&state, b.atomic, items, move |c, a: DriverAssignment| {
        Box::pin(async move {
            resolve(
                c,
                tenant,
                "drivers",
                "id",
                ("driver_id", Some(a.driver_id)),
                ("driver_id", None),
            )
            .await?;
            resolve(
                c,
                tenant,
                "vehicles",
                "id",
                ("vehicle_id", Some(a.vehicle_id)),
                ("vehicle_id", None),
            )
            .await?;
            let start = a.start_time.unwrap_or_else(Utc::now);
            if a.end_time.is_some_and(|e| e <= start) {
                return Err(ApiError::validation("end_time", "must be after start_time"));
            }
            sqlx::query(
                "UPDATE driver_assignments SET end_time = $3 WHERE tenant_id = $1 AND driver_id = $2 \
             AND end_time IS NULL AND start_time < $3",
            )
            .bind(tenant)
            .bind(a.driver_id)
            .bind(start)
            .execute(&mut *c)
            .await?;
            Ok(sqlx::query_scalar(
                "INSERT INTO driver_assignments (tenant_id, driver_id, vehicle_id, start_time, end_time) \
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
            )
            .bind(tenant)
            .bind(a.driver_id)
            .bind(a.vehicle_id)
            .bind(start)
            .bind(a.end_time)
            .fetch_one(&mut *c)
            .await?)
        })
    })
    .await?;
    Ok(report.into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkMembers {
    pub group_id: i64,
    pub vehicle_ids: Vec<i64>,
    /// `add` (default) or `remove`.
    pub mode: Option<String>,
    /// All or nothing (default false).
    #[serde(default)]
    pub atomic: bool,
}

/// Add vehicles to (or remove them from) a group in bulk; per-vehicle verdicts.
#[utoipa::path(post, path = "/api/v1/admin/bulk/group-members", tag = "admin", request_body = BulkMembers,
    responses((status = 200, body = ImportReport), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn group_members(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiJson(b): ApiJson<BulkMembers>,
) -> ApiResult<Response> {
    if b.vehicle_ids.len() > MAX_ROWS {
        return Err(ApiError::validation("vehicle_ids", format!("at most {MAX_ROWS} items")));
    }
    let add = match b.mode.as_deref() {
        None | Some("add") => true,
        Some("remove") => false,
        Some(_) => return Err(ApiError::validation("mode", "add or remove")),
    };
    let owned: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM vehicle_groups WHERE tenant_id = $1 AND id = $2)")
            .bind(ctx.tenant_id)
            .bind(b.group_id)
            .fetch_one(&state.pool)
            .await?;
    if !owned {
        return Err(ApiError::not_found());
    }
    let (tenant, group) = (ctx.tenant_id, b.group_id);
    let items = b.vehicle_ids.into_iter().map(|v| (None, v)).collect();
    let report = run(&state, b.atomic, items, move |c, v: i64| {
        Box::pin(async move {
            resolve(
                c,
                tenant,
                "vehicles",
                "id",
                ("vehicle_id", Some(v)),
                ("vehicle_id", None),
            )
            .await?;
            let sql = if add {
                "INSERT INTO vehicle_group_members (group_id, vehicle_id) VALUES ($1, $2) ON CONFLICT DO NOTHING"
            } else {
                "DELETE FROM vehicle_group_members WHERE group_id = $1 AND vehicle_id = $2"
            };
            sqlx::query(sql).bind(group).bind(v).execute(&mut *c).await?;
            Ok(v)
        })
    })
    .await?;
    Ok(report.into_response())
}
