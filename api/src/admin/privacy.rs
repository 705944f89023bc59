//! Privacy over HTTP: everything held about a driver (JSON), erasure by pseudonymisation,
//! and the driver's consent to tracking outside working hours. The work is
//! `services::privacy`'s; this adds the audit trail's side of an erasure (the bodies of
//! the audit rows about the driver get the same pseudonym, while who did what and when
//! stays) and the HTTP shapes.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::service_error;
use crate::audit::Audit;
use crate::error::{ApiError, ApiJson, ApiPath, ApiResult, ErrorBody};
use crate::{AppState, Ctx};

/// Everything held about a driver: the record, consent, devices, trips, scores, the
/// positions recorded during the driver's trips, and the audit rows about the driver.
#[utoipa::path(get, path = "/api/v1/admin/privacy/drivers/{id}/export", tag = "privacy",
    params(("id" = i64, Path)),
    responses((status = 200, description = "JSON document", body = Object), (status = 404, body = ErrorBody)))]
pub async fn export_driver(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Value>> {
    let mut doc = services::privacy::export_driver(&state.pool, ctx.tenant_id, id)
        .await
        .map_err(service_error)?;
    let audit: Value = sqlx::query_scalar(
        "SELECT coalesce(jsonb_agg(jsonb_build_object('id', id, 'at', at, 'method', method, 'route', route, \
         'status', status, 'request', request, 'before', before, 'after', after) ORDER BY id), '[]') \
         FROM audit_log WHERE tenant_id = $1 AND route LIKE '/api/v1/drivers%' \
         AND (path_params ->> 'id' = $2::text OR (route = '/api/v1/drivers' AND after ->> 'id' = $2::text))",
    )
    .bind(ctx.tenant_id)
    .bind(id)
    .fetch_one(&state.pool)
    .await?;
    doc["audit"] = audit;
    doc["exported_at"] = Value::from(chrono::Utc::now().to_rfc3339());
    Ok(Json(doc))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Erasure {
    /// Positions recorded during the driver's trips, deleted.
    pub positions: u64,
    pub trips: u64,
    pub scores: u64,
    /// Audit rows whose bodies were pseudonymised.
    pub audit_rows: u64,
    /// The name the driver record now carries.
    pub pseudonym: String,
}

/// Erase a driver: operational personal data deleted, contact details and the audit
/// rows' bodies pseudonymised; ledger, invoices and bookings untouched.
#[utoipa::path(post, path = "/api/v1/admin/privacy/drivers/{id}/erase", tag = "privacy",
    params(("id" = i64, Path)),
    responses((status = 200, body = Erasure), (status = 404, body = ErrorBody)))]
pub async fn erase_driver(
    State(state): State<AppState>,
    ctx: Ctx,
    audit: Audit,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Erasure>> {
    // The erasure's own audit row keeps only the id: it must not carry what it erased.
    audit.before(&serde_json::json!({ "id": id }));
    let erased = services::privacy::erase_driver(&state.pool, ctx.tenant_id, id)
        .await
        .map_err(service_error)?;
    let pseudonym: String = sqlx::query_scalar("SELECT name FROM drivers WHERE id = $1")
        .bind(id)
        .fetch_one(&state.pool)
        .await?;
    // The audit trail is append-only; this transaction alone may rewrite the bodies of
    // the rows about the driver (the trigger checks that nothing else changes).
    let mut tx = state.pool.begin().await?;
    sqlx::query("SET LOCAL clutch.audit_erase = 'on'")
        .execute(&mut *tx)
        .await?;
    let audit_rows = sqlx::query(
        "UPDATE audit_log SET request = clutch_jsonb_pseudonymise(request, $3), \
         before = clutch_jsonb_pseudonymise(before, $3), after = clutch_jsonb_pseudonymise(after, $3) \
         WHERE tenant_id = $1 AND route LIKE '/api/v1/drivers%' \
         AND (path_params ->> 'id' = $2::text OR (route = '/api/v1/drivers' AND after ->> 'id' = $2::text))",
    )
    .bind(ctx.tenant_id)
    .bind(id)
    .bind(&pseudonym)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(Json(Erasure {
        positions: erased.positions,
        trips: erased.trips,
        scores: erased.scores,
        audit_rows,
        pseudonym,
    }))
}

/// A driver's consent to location tracking outside working hours.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Consent {
    /// True: tracked at all times. False: positions outside `working_hours` are hidden
    /// from everyone but admins (REST reads and the live stream).
    pub track_outside_hours: bool,
    /// IANA time zone of the working hours, e.g. `Europe/Berlin`.
    #[serde(default = "utc")]
    pub time_zone: String,
    /// `{"mon": [["08:00", "17:00"]], …}`; a day that is missing has no working hours.
    #[serde(default = "empty")]
    #[schema(value_type = Object)]
    pub working_hours: Value,
}

fn utc() -> String {
    "UTC".into()
}
fn empty() -> Value {
    Value::Object(Default::default())
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct ConsentState {
    pub driver_id: i64,
    /// False when no consent was ever recorded (then the driver is tracked at all times,
    /// the fleet's default).
    pub recorded: bool,
    pub track_outside_hours: bool,
    pub time_zone: String,
    #[schema(value_type = Object)]
    pub working_hours: Value,
    pub updated_at: Option<chrono::DateTime<chrono::Utc>>,
}

async fn read_consent(state: &AppState, ctx: &Ctx, id: i64) -> ApiResult<ConsentState> {
    sqlx::query_as(
        "SELECT d.id AS driver_id, c.driver_id IS NOT NULL AS recorded, coalesce(c.track_outside_hours, true) AS \
         track_outside_hours, coalesce(c.time_zone, 'UTC') AS time_zone, coalesce(c.working_hours, '{}') AS \
         working_hours, c.updated_at FROM drivers d LEFT JOIN driver_consent c ON c.driver_id = d.id \
         WHERE d.tenant_id = $1 AND d.id = $2",
    )
    .bind(ctx.tenant_id)
    .bind(id)
    .fetch_optional(&state.pool)
    .await?
    .ok_or_else(ApiError::not_found)
}

#[utoipa::path(get, path = "/api/v1/drivers/{id}/consent", tag = "privacy", params(("id" = i64, Path)),
    responses((status = 200, body = ConsentState), (status = 404, body = ErrorBody)))]
pub async fn get_consent(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<ConsentState>> {
    Ok(Json(read_consent(&state, &ctx, id).await?))
}

/// Record (replace) a driver's consent.
#[utoipa::path(put, path = "/api/v1/drivers/{id}/consent", tag = "privacy", params(("id" = i64, Path)),
    request_body = Consent,
    responses((status = 200, body = ConsentState), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn put_consent(
    State(state): State<AppState>,
    ctx: Ctx,
    audit: Audit,
    ApiPath(id): ApiPath<i64>,
    ApiJson(c): ApiJson<Consent>,
) -> ApiResult<Json<ConsentState>> {
    audit.before(&read_consent(&state, &ctx, id).await?);
    let c = services::privacy::Consent {
        track_outside_hours: c.track_outside_hours,
        time_zone: c.time_zone,
        working_hours: c.working_hours,
    };
    services::privacy::set_consent(&state.pool, ctx.tenant_id, id, &c)
        .await
        .map_err(|e| match e {
            services::ServiceError::Invalid(m) => {
                let field = if m.contains("time zone") {
                    "time_zone"
                } else {
                    "working_hours"
                };
                ApiError::validation(field, m)
            }
            e => service_error(e),
        })?;
    Ok(Json(read_consent(&state, &ctx, id).await?))
}

/// Forget the recorded consent (the driver is then tracked at all times again).
#[utoipa::path(delete, path = "/api/v1/drivers/{id}/consent", tag = "privacy", params(("id" = i64, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_consent(
    State(state): State<AppState>,
    ctx: Ctx,
    audit: Audit,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<StatusCode> {
    audit.before(&read_consent(&state, &ctx, id).await?);
    sqlx::query(
        "DELETE FROM driver_consent c USING drivers d WHERE d.id = c.driver_id AND d.tenant_id = $1 AND d.id = $2",
    )
    .bind(ctx.tenant_id)
    .bind(id)
    .execute(&state.pool)
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
