//! Per-object scoping for the two roles that see only their own things.
//!
//! - **driver**: a user linked to a driver record (`users.driver_id`) sees the vehicles
//!   they drive now (an open assignment, or a device whose driver they are), those
//!   vehicles' positions and trips, their own trips on any vehicle, and their own scores.
//! - **customer**: sees the vehicles it owns (`vehicles.owner_user_id`), with their
//!   positions, trips and vehicle scores.
//!
//! Every other role returns `None` here: the tenant scope of [`Ctx`] is all there is.
//! A foreign object stays a 404, exactly like another tenant's.

use crate::auth::Role;
use crate::error::ApiResult;
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
