//! Per-object scoping for the two roles that see only their own things.
//!
//! - **driver**: a user linked to a driver record (`users.driver_id`, set with
//!   `PUT /users/{id}/driver`) sees the vehicles they drive now (an open assignment, or a
//!   device whose driver they are), those vehicles' positions and trips, and their own
//!   scores and daily reports. Reassigned, the previous vehicle disappears from view.
//! - **customer**: sees the vehicles it owns (`vehicles.owner_user_id`, set with
//!   `PUT /vehicles/{id}/owner`), with their positions, trips, scores and reports.
//!
//! Every other role returns `None` here: the tenant scope of [`Ctx`] is all there is.
//! A foreign object stays a 404, exactly like another tenant's.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Role;
use crate::error::{ApiError, ApiJson, ApiPath, ApiResult, ErrorBody};
use crate::{AppState, Ctx};

/// Whether the role is limited to its own objects.
pub fn is_scoped(role: Role) -> bool {
    matches!(role, Role::Driver | Role::Customer)
}

/// The vehicles the caller may see, or None for "every vehicle of the tenant".
pub async fn vehicles(state: &AppState, ctx: &Ctx) -> ApiResult<Option<Vec<i64>>> {
    let sql = match ctx.role {
        Role::Driver => {
            "SELECT a.vehicle_id FROM driver_assignments a JOIN users u ON u.driver_id = a.driver_id \
             WHERE u.id = $2 AND a.tenant_id = $1 AND a.start_time <= now() \
               AND (a.end_time IS NULL OR a.end_time > now()) \
             UNION \
             SELECT d.vehicle_id FROM devices d JOIN users u ON u.driver_id = d.driver_id \
             WHERE u.id = $2 AND d.tenant_id = $1 AND d.vehicle_id IS NOT NULL"
        }
        Role::Customer => "SELECT id FROM vehicles WHERE tenant_id = $1 AND owner_user_id = $2",
        _ => return Ok(None),
    };
    Ok(Some(
        sqlx::query_scalar(sql)
            .bind(ctx.tenant_id)
            .bind(ctx.user_id)
            .fetch_all(&state.pool)
            .await?,
    ))
}

/// The caller's own driver record (drivers only).
pub async fn driver(state: &AppState, ctx: &Ctx) -> ApiResult<Option<i64>> {
    if ctx.role != Role::Driver {
        return Ok(None);
    }
    Ok(sqlx::query_scalar::<_, Option<i64>>(
        "SELECT u.driver_id FROM users u JOIN drivers d ON d.id = u.driver_id AND d.tenant_id = u.tenant_id \
         WHERE u.id = $1 AND u.tenant_id = $2",
    )
    .bind(ctx.user_id)
    .bind(ctx.tenant_id)
    .fetch_optional(&state.pool)
    .await?
    .flatten())
}

/// Report/score subjects of a kind (`vehicle` or `driver`) the caller may see, or None
/// for all of the tenant's.
pub async fn subjects(state: &AppState, ctx: &Ctx, kind: &str) -> ApiResult<Option<Vec<i64>>> {
    if !is_scoped(ctx.role) {
        return Ok(None);
    }
    match kind {
        "vehicle" => vehicles(state, ctx).await,
        "driver" => Ok(Some(driver(state, ctx).await?.into_iter().collect())),
        // Device-level subjects are internal plumbing: scoped roles see none.
        _ => Ok(Some(Vec::new())),
    }
}

// ---------------------------------------------------------------- links

/// Which driver record a (driver) user is.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DriverLink {
    /// A driver of the tenant, or null to unlink.
    pub driver_id: Option<i64>,
}

/// Links a user to a driver record: a user with the driver role then sees that driver's
/// vehicles, trips, positions and scores.
#[utoipa::path(put, path = "/api/v1/users/{id}/driver", tag = "users", params(("id" = i64, Path)),
    request_body = DriverLink,
    responses((status = 200, body = DriverLink), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn link_driver(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<i64>,
    ApiJson(b): ApiJson<DriverLink>,
) -> ApiResult<Json<DriverLink>> {
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE tenant_id = $1 AND id = $2)")
        .bind(ctx.tenant_id)
        .bind(id)
        .fetch_one(&state.pool)
        .await?;
    if !exists {
        return Err(ApiError::not_found());
    }
    if let Some(d) = b.driver_id {
        let ok: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM drivers WHERE tenant_id = $1 AND id = $2)")
            .bind(ctx.tenant_id)
            .bind(d)
            .fetch_one(&state.pool)
            .await?;
        if !ok {
            return Err(ApiError::validation("driver_id", "no such driver"));
        }
    }
    sqlx::query("UPDATE users SET driver_id = $3, updated_at = now() WHERE tenant_id = $1 AND id = $2")
        .bind(ctx.tenant_id)
        .bind(id)
        .bind(b.driver_id)
        .execute(&state.pool)
        .await?;
    Ok(Json(b))
}

/// Which user owns a vehicle.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OwnerLink {
    /// A user of the tenant (typically a customer), or null for none.
    pub user_id: Option<i64>,
}

/// Sets a vehicle's owner: a user with the customer role sees the vehicles it owns.
#[utoipa::path(put, path = "/api/v1/vehicles/{id}/owner", tag = "vehicles", params(("id" = i64, Path)),
    request_body = OwnerLink,
    responses((status = 200, body = OwnerLink), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn set_owner(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<i64>,
    ApiJson(b): ApiJson<OwnerLink>,
) -> ApiResult<Json<OwnerLink>> {
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM vehicles WHERE tenant_id = $1 AND id = $2)")
        .bind(ctx.tenant_id)
        .bind(id)
        .fetch_one(&state.pool)
        .await?;
    if !exists {
        return Err(ApiError::not_found());
    }
    if let Some(u) = b.user_id {
        let ok: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE tenant_id = $1 AND id = $2)")
            .bind(ctx.tenant_id)
            .bind(u)
            .fetch_one(&state.pool)
            .await?;
        if !ok {
            return Err(ApiError::validation("user_id", "no such user"));
        }
    }
    sqlx::query("UPDATE vehicles SET owner_user_id = $3 WHERE tenant_id = $1 AND id = $2")
        .bind(ctx.tenant_id)
        .bind(id)
        .bind(b.user_id)
        .execute(&state.pool)
        .await?;
    Ok(Json(b))
}
