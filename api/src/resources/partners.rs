//! Partners (repair centres and parts shops) through the API: onboarding with audited
//! transitions, the service catalogue, opening hours, parts inventory and reservations,
//! ratings, the users who act for a partner, and shop matching for a vehicle.
//!
//! Partners form one marketplace across tenants, so visibility is not plain tenancy:
//! - anyone allowed the route sees an *active* partner whose qualifications are valid;
//! - the admins of the tenant that operates a partner (`partners.tenant_id`) see and
//!   manage it in every status;
//! - a `partner` user linked in `partner_users` sees and keeps its own partner.
//!
//! Everything else answers 404, never 403, so ids of other tenants' partners reveal
//! nothing. The domain rules live in the `services` crate; this module checks who may
//! do what and maps [`ServiceError`] into the API's error shape.

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use services::ServiceError;
use utoipa::{IntoParams, ToSchema};

use super::{ListQuery, Page, check_name, order, page};
use crate::auth::Role;
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, ErrorBody};
use crate::{AppState, Ctx};

/// The domain's refusals keep their meaning: 404 unknown, 409 a state that does not
/// allow it (transition, slot taken, funds), 422 an unacceptable request (over-refund,
/// currency mismatch), 402 declined, 503 gateway down. Database faults are a bare 500.
impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            // The database refusing the client's input (a NUL in a name, a number out of
            // range) is still a 4xx; anything else is logged and a bare 500.
            ServiceError::Database(inner) => ApiError::from(inner),
            ServiceError::NotFound { .. } => ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string()),
            _ => ApiError::new(
                StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                e.code(),
                e.to_string(),
            ),
        }
    }
}

pub(crate) fn created<T: Serialize>(v: T) -> Response {
    (StatusCode::CREATED, Json(v)).into_response()
}

/// Who did it, for the services' audit tables.
pub(crate) fn actor(ctx: &Ctx) -> String {
    match ctx.api_key_id {
        Some(k) => format!("user:{}/key:{k}", ctx.user_id),
        None => format!("user:{}", ctx.user_id),
    }
}

/// The partner a `partner` user acts for (`None` for other roles or an unlinked user).
pub(crate) async fn my_partner(state: &AppState, ctx: &Ctx) -> ApiResult<Option<i64>> {
    if ctx.role != Role::Partner {
        return Ok(None);
    }
    Ok(
        sqlx::query_scalar("SELECT partner_id FROM partner_users WHERE user_id = $1")
            .bind(ctx.user_id)
            .fetch_optional(&state.pool)
            .await?,
    )
}

/// How much of a partner the caller needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// The public marketplace view (or more).
    Read,
    /// Catalogue, hours, inventory: the operating tenant's admins or the partner's users.
    Keep,
    /// Onboarding, agreement, members, payouts: the operating tenant's admins.
    Own,
}

/// Loads partner `id` if the caller may have `access` to it; otherwise 404.
pub(crate) async fn partner_for(state: &AppState, ctx: &Ctx, id: i64, access: Access) -> ApiResult<PartnerRow> {
    let mine = my_partner(state, ctx).await?;
    let row: Option<PartnerRow> = sqlx::query_as(sqlf!("SELECT {PARTNER_COLS} FROM partners p WHERE p.id = $1"))
        .bind(id)
        .fetch_optional(&state.pool)
        .await?;
    let row = row.ok_or_else(ApiError::not_found)?;
    let owner = ctx.role == Role::Admin && row.tenant_id == Some(ctx.tenant_id);
    let own_partner = mine == Some(id);
    let public = row.status == "active" && row.qualifications_expire_at.is_none_or(|t| t > Utc::now());
    let ok = match access {
        Access::Read => owner || own_partner || public,
        Access::Keep => owner || own_partner,
        Access::Own => owner,
    };
    if ok { Ok(row) } else { Err(ApiError::not_found()) }
}

// ---------------------------------------------------------------- partners

#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct PartnerRow {
    pub id: i64,
    pub name: String,
    pub kind: String,
    pub status: String,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub capacity: i32,
    pub time_zone: String,
    pub opening_hours: Value,
    pub currency: String,
    pub commission_bp: i32,
    pub tax_region: Option<String>,
    pub qualifications_expire_at: Option<DateTime<Utc>>,
    pub tenant_id: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub ratings: i64,
    pub stars_sum: i64,
}

const PARTNER_COLS: &str = "p.id, p.name, p.kind, p.status, p.lat, p.lon, p.capacity, p.time_zone, p.opening_hours, \
    p.currency, p.commission_bp, p.tax_region, p.qualifications_expire_at, p.tenant_id, p.created_at, \
    (SELECT count(*) FROM partner_ratings r WHERE r.partner_id = p.id) AS ratings, \
    (SELECT coalesce(sum(r.stars), 0)::int8 FROM partner_ratings r WHERE r.partner_id = p.id) AS stars_sum";

/// A partner. The agreement (commission, tax region) is shown only to those who manage it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Partner {
    pub id: i64,
    pub name: String,
    /// `repair_center`, `parts_shop` or `both`.
    pub kind: String,
    /// `applied`, `documents_submitted`, `approved`, `rejected`, `active`, `suspended`.
    pub status: String,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    /// Bays: vehicles served at once.
    pub capacity: i32,
    pub time_zone: String,
    /// `{"mon": [["08:00","17:00"]], …}` in the partner's time zone; `{}` is always open.
    pub opening_hours: Value,
    /// ISO 4217; catalogue prices are minor units of it.
    pub currency: String,
    pub qualifications_expire_at: Option<DateTime<Utc>>,
    /// Completed bookings that rated the partner.
    pub ratings: i64,
    /// Mean stars (1..5), null without ratings.
    pub average_stars: Option<f64>,
    /// Lower bound of the 95 % Wilson interval on a 0..1 scale; what ranking uses.
    pub rating: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commission_bp: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tax_region: Option<String>,
    pub created_at: DateTime<Utc>,
}

fn partner_out(r: PartnerRow, manages: bool) -> Partner {
    Partner {
        id: r.id,
        name: r.name,
        kind: r.kind,
        status: r.status,
        lat: r.lat,
        lon: r.lon,
        capacity: r.capacity,
        time_zone: r.time_zone,
        opening_hours: r.opening_hours,
        currency: r.currency,
        qualifications_expire_at: r.qualifications_expire_at,
        ratings: r.ratings,
        average_stars: (r.ratings > 0).then(|| r.stars_sum as f64 / r.ratings as f64),
        rating: services::partners::rating_lower_bound(r.stars_sum as f64, r.ratings as f64),
        commission_bp: manages.then_some(r.commission_bp),
        tax_region: if manages { r.tax_region } else { None },
        created_at: r.created_at,
    }
}

fn manages(ctx: &Ctx, mine: Option<i64>, r: &PartnerRow) -> bool {
    (ctx.role == Role::Admin && r.tenant_id == Some(ctx.tenant_id)) || mine == Some(r.id)
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PartnerFilter {
    pub status: Option<String>,
    pub kind: Option<String>,
}

/// Partners the caller can see: active ones for everyone, all of its own tenant's for an admin.
#[utoipa::path(get, path = "/api/v1/partners", tag = "partners", params(ListQuery, PartnerFilter),
    responses((status = 200, body = Page<Partner>), (status = 422, body = ErrorBody)))]
pub async fn list_partners(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiQuery(q): ApiQuery<ListQuery>,
    ApiQuery(f): ApiQuery<PartnerFilter>,
) -> ApiResult<Json<Page<Partner>>> {
    let (cursor, desc, limit) = q.keyset(&state)?;
    let (cmp, ord) = order(desc);
    let mine = my_partner(&state, &ctx).await?;
    let rows: Vec<PartnerRow> = sqlx::query_as(sqlf!(
        "SELECT {PARTNER_COLS} FROM partners p WHERE \
         (($1 AND p.tenant_id = $2) OR p.id = $3 OR (p.status = 'active' AND \
          (p.qualifications_expire_at IS NULL OR p.qualifications_expire_at > now()))) \
         AND ($4::int8 IS NULL OR p.id {cmp} $4) AND ($5::text IS NULL OR p.name ILIKE '%' || $5 || '%') \
         AND ($6::text IS NULL OR p.status = $6) AND ($7::text IS NULL OR p.kind = $7) \
         ORDER BY p.id {ord} LIMIT $8"
    ))
    .bind(ctx.role == Role::Admin)
    .bind(ctx.tenant_id)
    .bind(mine)
    .bind(cursor)
    .bind(&q.q)
    .bind(&f.status)
    .bind(&f.kind)
    .bind(limit + 1)
    .fetch_all(&state.pool)
    .await?;
    let p = page(rows, &q, &state, |r| r.id)?;
    Ok(Json(Page {
        items: p
            .items
            .into_iter()
            .map(|r| {
                let m = manages(&ctx, mine, &r);
                partner_out(r, m)
            })
            .collect(),
        next_cursor: p.next_cursor,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePartner {
    pub name: String,
    /// `repair_center`, `parts_shop` or `both`.
    pub kind: String,
    pub lat: f64,
    pub lon: f64,
    /// Bays, 1..=100 (default 1).
    pub capacity: Option<i32>,
    /// IANA time zone of the opening hours (default UTC).
    pub time_zone: Option<String>,
    pub opening_hours: Option<Value>,
    /// ISO 4217 (default EUR).
    pub currency: Option<String>,
    /// Platform commission in basis points (default 1000 = 10 %).
    pub commission_bp: Option<i32>,
    pub tax_region: Option<String>,
    pub qualifications_expire_at: Option<DateTime<Utc>>,
}

/// Register a partner (status `applied`), operated by the caller's tenant.
#[utoipa::path(post, path = "/api/v1/partners", tag = "partners", request_body = CreatePartner,
    params(("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = Partner), (status = 422, body = ErrorBody)))]
pub async fn create_partner(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiJson(req): ApiJson<CreatePartner>,
) -> ApiResult<Response> {
    check_name("name", &req.name)?;
    if let Some(c) = req.commission_bp
        && !(0..=10_000).contains(&c)
    {
        return Err(ApiError::validation("commission_bp", "0 to 10000"));
    }
    if let Some(c) = req.capacity
        && !(1..=100).contains(&c)
    {
        return Err(ApiError::validation("capacity", "1 to 100"));
    }
    let new = services::partners::NewPartner {
        name: req.name,
        kind: req.kind,
        lat: req.lat,
        lon: req.lon,
        capacity: req.capacity.unwrap_or(1),
        time_zone: req.time_zone.unwrap_or_else(|| "UTC".into()),
        opening_hours: req.opening_hours.unwrap_or(Value::Null),
        currency: req.currency.unwrap_or_else(|| "EUR".into()),
        commission_bp: req.commission_bp.unwrap_or(1000),
        tax_region: req.tax_region,
    };
    let p = services::partners::create(&state.pool, &new, &actor(&ctx)).await?;
    // The service creates in its own transaction; the operator is set right after. Should
    // that fail, the fresh partner (applied, nothing refers to it) is removed again so
    // nothing is left half-made; were even that to fail, an `applied` partner without an
    // operator is visible to nobody.
    let owned = sqlx::query("UPDATE partners SET tenant_id = $2, qualifications_expire_at = $3 WHERE id = $1")
        .bind(p.id)
        .bind(ctx.tenant_id)
        .bind(req.qualifications_expire_at)
        .execute(&state.pool)
        .await;
    if let Err(e) = owned {
        let undo = async {
            let mut tx = state.pool.begin().await?;
            sqlx::query("DELETE FROM partner_audit WHERE partner_id = $1")
                .bind(p.id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM partners WHERE id = $1")
                .bind(p.id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        };
        if let Err(u) = undo.await {
            tracing::warn!(partner = p.id, error = %u, "could not remove a partner left without operator");
        }
        return Err(e.into());
    }
    let row = partner_for(&state, &ctx, p.id, Access::Own).await?;
    Ok(created(partner_out(row, true)))
}

#[utoipa::path(get, path = "/api/v1/partners/{id}", tag = "partners", params(("id" = i64, Path)),
    responses((status = 200, body = Partner), (status = 404, body = ErrorBody)))]
pub async fn read_partner(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Partner>> {
    let row = partner_for(&state, &ctx, id, Access::Read).await?;
    let mine = my_partner(&state, &ctx).await?;
    let m = manages(&ctx, mine, &row);
    Ok(Json(partner_out(row, m)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PartnerPatch {
    pub name: Option<String>,
    pub kind: Option<String>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub commission_bp: Option<i32>,
    pub tax_region: Option<String>,
    pub qualifications_expire_at: Option<DateTime<Utc>>,
}

/// Change a partner's details or agreement (the operating tenant's admins).
#[utoipa::path(patch, path = "/api/v1/partners/{id}", tag = "partners", params(("id" = i64, Path)),
    request_body = PartnerPatch,
    responses((status = 200, body = Partner), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn patch_partner(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<i64>,
    ApiJson(req): ApiJson<PartnerPatch>,
) -> ApiResult<Json<Partner>> {
    partner_for(&state, &ctx, id, Access::Own).await?;
    if let Some(n) = &req.name {
        check_name("name", n)?;
    }
    if let Some(k) = &req.kind
        && !["repair_center", "parts_shop", "both"].contains(&k.as_str())
    {
        return Err(ApiError::validation("kind", "repair_center, parts_shop or both"));
    }
    if req.lat.is_some_and(|v| !(-90.0..=90.0).contains(&v)) {
        return Err(ApiError::validation("lat", "-90 to 90"));
    }
    if req.lon.is_some_and(|v| !(-180.0..=180.0).contains(&v)) {
        return Err(ApiError::validation("lon", "-180 to 180"));
    }
    if req.commission_bp.is_some_and(|c| !(0..=10_000).contains(&c)) {
        return Err(ApiError::validation("commission_bp", "0 to 10000"));
    }
    sqlx::query(
        "UPDATE partners SET name = coalesce($2, name), kind = coalesce($3, kind), lat = coalesce($4, lat), \
         lon = coalesce($5, lon), commission_bp = coalesce($6, commission_bp), tax_region = coalesce($7, tax_region), \
         qualifications_expire_at = coalesce($8, qualifications_expire_at) WHERE id = $1",
    )
    .bind(id)
    .bind(req.name.as_deref().map(str::trim))
    .bind(&req.kind)
    .bind(req.lat)
    .bind(req.lon)
    .bind(req.commission_bp)
    .bind(&req.tax_region)
    .bind(req.qualifications_expire_at)
    .execute(&state.pool)
    .await?;
    let row = partner_for(&state, &ctx, id, Access::Own).await?;
    Ok(Json(partner_out(row, true)))
}

/// Remove a partner registered by mistake: only before approval and before any booking,
/// payment, payout or reservation refers to it (otherwise suspend it).
#[utoipa::path(delete, path = "/api/v1/partners/{id}", tag = "partners", params(("id" = i64, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete_partner(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<StatusCode> {
    let row = partner_for(&state, &ctx, id, Access::Own).await?;
    if !["applied", "documents_submitted", "rejected"].contains(&row.status.as_str()) {
        return Err(ApiError::conflict(format!(
            "a partner that is {} cannot be deleted; suspend it instead",
            row.status
        )));
    }
    let mut tx = state.pool.begin().await?;
    let used: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM bookings WHERE partner_id = $1) OR EXISTS (SELECT 1 FROM payment_intents \
         WHERE partner_id = $1) OR EXISTS (SELECT 1 FROM payouts WHERE partner_id = $1) \
         OR EXISTS (SELECT 1 FROM part_reservations WHERE partner_id = $1) \
         OR EXISTS (SELECT 1 FROM ledger_accounts WHERE owner_kind = 'partner' AND owner_id = $1)",
    )
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    if used {
        return Err(ApiError::conflict(
            "the partner has bookings or money movements; suspend it instead",
        ));
    }
    sqlx::query("DELETE FROM partner_audit WHERE partner_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM partners WHERE id = $1 AND tenant_id = $2")
        .bind(id)
        .bind(ctx.tenant_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------- onboarding

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransitionRequest {
    /// `documents_submitted`, `approved`, `rejected`, `active`, `suspended`.
    pub to: String,
    /// Why (kept in the audit trail).
    pub reason: Option<String>,
}

/// One audited step of a partner's onboarding or life cycle.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct PartnerTransition {
    pub id: i64,
    pub from_status: Option<String>,
    pub to_status: String,
    pub actor: String,
    pub note: Option<String>,
    pub at: DateTime<Utc>,
}

/// Move a partner along its onboarding workflow (audited with the caller as actor).
/// A step the workflow does not allow is a 409.
#[utoipa::path(post, path = "/api/v1/partners/{id}/transitions", tag = "partners", params(("id" = i64, Path)),
    request_body = TransitionRequest,
    responses((status = 200, body = Partner), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn transition_partner(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<i64>,
    ApiJson(req): ApiJson<TransitionRequest>,
) -> ApiResult<Json<Partner>> {
    partner_for(&state, &ctx, id, Access::Own).await?;
    const STATUSES: [&str; 6] = [
        "applied",
        "documents_submitted",
        "approved",
        "rejected",
        "active",
        "suspended",
    ];
    if !STATUSES.contains(&req.to.as_str()) {
        return Err(ApiError::validation("to", format!("one of {}", STATUSES.join(", "))));
    }
    if req.reason.as_ref().is_some_and(|r| r.len() > 2000) {
        return Err(ApiError::validation("reason", "at most 2000 bytes"));
    }
    services::partners::transition(&state.pool, id, &req.to, &actor(&ctx), req.reason.as_deref()).await?;
    let row = partner_for(&state, &ctx, id, Access::Own).await?;
    Ok(Json(partner_out(row, true)))
}

/// The partner's audit trail of onboarding steps, oldest first.
#[utoipa::path(get, path = "/api/v1/partners/{id}/transitions", tag = "partners", params(("id" = i64, Path)),
    responses((status = 200, body = Page<PartnerTransition>), (status = 404, body = ErrorBody)))]
pub async fn list_partner_transitions(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Page<PartnerTransition>>> {
    partner_for(&state, &ctx, id, Access::Own).await?;
    let items: Vec<PartnerTransition> = sqlx::query_as(
        "SELECT id, from_status, to_status, actor, note, at FROM partner_audit WHERE partner_id = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}

// ---------------------------------------------------------------- members

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    /// A user of the caller's tenant with the `partner` role.
    pub user_id: i64,
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct PartnerMember {
    pub user_id: i64,
    pub partner_id: i64,
    pub email: String,
    pub created_at: DateTime<Utc>,
}

/// Link a `partner` user to this partner: it then sees and handles this partner's
/// bookings, catalogue, hours and inventory (and no other partner's).
#[utoipa::path(post, path = "/api/v1/partners/{id}/members", tag = "partners", params(("id" = i64, Path)),
    request_body = AddMember,
    responses((status = 201, body = PartnerMember), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn add_member(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<i64>,
    ApiJson(req): ApiJson<AddMember>,
) -> ApiResult<Response> {
    partner_for(&state, &ctx, id, Access::Own).await?;
    let role: Option<String> = sqlx::query_scalar("SELECT role FROM users WHERE id = $1 AND tenant_id = $2")
        .bind(req.user_id)
        .bind(ctx.tenant_id)
        .fetch_optional(&state.pool)
        .await?;
    match role.as_deref() {
        None => return Err(ApiError::validation("user_id", "no such user")),
        Some("partner") => {}
        Some(_) => return Err(ApiError::validation("user_id", "the user's role must be partner")),
    }
    sqlx::query(
        "INSERT INTO partner_users (user_id, partner_id) VALUES ($1, $2) \
         ON CONFLICT (user_id) DO UPDATE SET partner_id = EXCLUDED.partner_id, created_at = now()",
    )
    .bind(req.user_id)
    .bind(id)
    .execute(&state.pool)
    .await?;
    let m: PartnerMember = sqlx::query_as(
        "SELECT m.user_id, m.partner_id, u.email, m.created_at FROM partner_users m JOIN users u ON u.id = m.user_id \
         WHERE m.user_id = $1",
    )
    .bind(req.user_id)
    .fetch_one(&state.pool)
    .await?;
    Ok(created(m))
}

#[utoipa::path(get, path = "/api/v1/partners/{id}/members", tag = "partners", params(("id" = i64, Path)),
    responses((status = 200, body = Page<PartnerMember>), (status = 404, body = ErrorBody)))]
pub async fn list_members(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Page<PartnerMember>>> {
    partner_for(&state, &ctx, id, Access::Own).await?;
    let items: Vec<PartnerMember> = sqlx::query_as(
        "SELECT m.user_id, m.partner_id, u.email, m.created_at FROM partner_users m JOIN users u ON u.id = m.user_id \
         WHERE m.partner_id = $1 AND u.tenant_id = $2 ORDER BY m.user_id",
    )
    .bind(id)
    .bind(ctx.tenant_id)
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}

// ---------------------------------------------------------------- catalogue

/// One catalogue entry: a service the partner offers, its price and duration.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct CatalogueService {
    pub id: i64,
    /// Catalogue code: `oil_change`, `brake_pads`, `diagnostics`, `scheduled_service`, …
    pub service: String,
    /// Price in minor units of `currency`.
    pub price_minor: i64,
    pub currency: String,
    pub duration_min: i32,
}

#[utoipa::path(get, path = "/api/v1/partners/{id}/services", tag = "partners", params(("id" = i64, Path)),
    responses((status = 200, body = Page<CatalogueService>), (status = 404, body = ErrorBody)))]
pub async fn list_services(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Page<CatalogueService>>> {
    partner_for(&state, &ctx, id, Access::Read).await?;
    let items: Vec<CatalogueService> = sqlx::query_as(
        "SELECT s.id, s.service, s.price AS price_minor, p.currency, s.duration_min FROM partner_services s \
         JOIN partners p ON p.id = s.partner_id WHERE s.partner_id = $1 ORDER BY s.service",
    )
    .bind(id)
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetService {
    /// Catalogue code, `[a-z0-9_]`, at most 64 bytes.
    pub service: String,
    /// Minor units of the partner's currency.
    pub price_minor: i64,
    /// 1..=1440.
    pub duration_min: i32,
}

fn check_code(field: &str, s: &str) -> ApiResult<()> {
    if s.is_empty()
        || s.len() > 64
        || !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(ApiError::validation(field, "1 to 64 of a-z, 0-9 and _"));
    }
    Ok(())
}

/// Add a service to the catalogue, or reprice it (bookings keep the price they were made at).
#[utoipa::path(post, path = "/api/v1/partners/{id}/services", tag = "partners", params(("id" = i64, Path)),
    request_body = SetService,
    responses((status = 201, body = CatalogueService), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn set_service(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<i64>,
    ApiJson(req): ApiJson<SetService>,
) -> ApiResult<Response> {
    partner_for(&state, &ctx, id, Access::Keep).await?;
    check_code("service", &req.service)?;
    services::partners::set_service(&state.pool, id, &req.service, req.price_minor, req.duration_min).await?;
    let s: CatalogueService = sqlx::query_as(
        "SELECT s.id, s.service, s.price AS price_minor, p.currency, s.duration_min FROM partner_services s \
         JOIN partners p ON p.id = s.partner_id WHERE s.partner_id = $1 AND s.service = $2",
    )
    .bind(id)
    .bind(&req.service)
    .fetch_one(&state.pool)
    .await?;
    Ok(created(s))
}

// ---------------------------------------------------------------- hours

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Hours {
    /// IANA time zone the hours are in.
    pub time_zone: String,
    /// `{"mon": [["08:00","12:00"], ["13:00","17:00"]], …}`; a missing day is closed, `{}` always open.
    pub opening_hours: Value,
    /// Bays (vehicles served at once), 1..=100.
    pub capacity: i32,
}

#[utoipa::path(get, path = "/api/v1/partners/{id}/hours", tag = "partners", params(("id" = i64, Path)),
    responses((status = 200, body = Hours), (status = 404, body = ErrorBody)))]
pub async fn read_hours(State(state): State<AppState>, ctx: Ctx, ApiPath(id): ApiPath<i64>) -> ApiResult<Json<Hours>> {
    let p = partner_for(&state, &ctx, id, Access::Read).await?;
    Ok(Json(Hours {
        time_zone: p.time_zone,
        opening_hours: p.opening_hours,
        capacity: p.capacity,
    }))
}

/// Replace the opening hours, time zone and capacity. Existing bookings stay.
#[utoipa::path(put, path = "/api/v1/partners/{id}/hours", tag = "partners", params(("id" = i64, Path)),
    request_body = Hours,
    responses((status = 200, body = Hours), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn put_hours(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<i64>,
    ApiJson(req): ApiJson<Hours>,
) -> ApiResult<Json<Hours>> {
    partner_for(&state, &ctx, id, Access::Keep).await?;
    if req.time_zone.parse::<chrono_tz::Tz>().is_err() {
        return Err(ApiError::validation("time_zone", "not an IANA time zone"));
    }
    services::matching::OpeningHours::parse(&req.opening_hours)
        .map_err(|e| ApiError::validation("opening_hours", e.to_string()))?;
    if !(1..=100).contains(&req.capacity) {
        return Err(ApiError::validation("capacity", "1 to 100"));
    }
    sqlx::query("UPDATE partners SET time_zone = $2, opening_hours = $3, capacity = $4 WHERE id = $1")
        .bind(id)
        .bind(&req.time_zone)
        .bind(&req.opening_hours)
        .bind(req.capacity)
        .execute(&state.pool)
        .await?;
    Ok(Json(req))
}

// ---------------------------------------------------------------- inventory

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct PartStock {
    pub sku: String,
    pub name: String,
    pub price_minor: i64,
    pub stock: i32,
    /// Held by reservations.
    pub reserved: i32,
    /// `stock - reserved`.
    pub available: i32,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PartsQuery {
    /// Exact SKU.
    pub sku: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/partners/{id}/parts", tag = "partners", params(("id" = i64, Path), PartsQuery),
    responses((status = 200, body = Page<PartStock>), (status = 404, body = ErrorBody)))]
pub async fn list_parts(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<PartsQuery>,
) -> ApiResult<Json<Page<PartStock>>> {
    partner_for(&state, &ctx, id, Access::Keep).await?;
    let items: Vec<PartStock> = sqlx::query_as(
        "SELECT sku, name, price AS price_minor, stock, reserved, stock - reserved AS available FROM partner_parts \
         WHERE partner_id = $1 AND ($2::text IS NULL OR sku = $2) ORDER BY sku LIMIT 1000",
    )
    .bind(id)
    .bind(&q.sku)
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetStock {
    pub sku: String,
    pub name: String,
    pub price_minor: i64,
    /// On hand; cannot go below what is reserved (409).
    pub stock: i32,
}

/// Create a part or set its stock, name and price.
#[utoipa::path(post, path = "/api/v1/partners/{id}/parts", tag = "partners", params(("id" = i64, Path)),
    request_body = SetStock,
    responses((status = 200, body = PartStock), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn set_stock(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<i64>,
    ApiJson(req): ApiJson<SetStock>,
) -> ApiResult<Json<PartStock>> {
    partner_for(&state, &ctx, id, Access::Keep).await?;
    if req.sku.trim().is_empty() || req.sku.len() > 64 {
        return Err(ApiError::validation("sku", "1 to 64 bytes"));
    }
    check_name("name", &req.name)?;
    services::partners::set_stock(&state.pool, id, &req.sku, &req.name, req.price_minor, req.stock).await?;
    Ok(Json(
        sqlx::query_as(
            "SELECT sku, name, price AS price_minor, stock, reserved, stock - reserved AS available FROM partner_parts \
             WHERE partner_id = $1 AND sku = $2",
        )
        .bind(id)
        .bind(&req.sku)
        .fetch_one(&state.pool)
        .await?,
    ))
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Reservation {
    pub id: i64,
    pub partner_id: i64,
    pub sku: String,
    pub booking_id: Option<i64>,
    pub quantity: i32,
    /// `held`, `consumed` or `released`.
    pub status: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateReservation {
    pub sku: String,
    pub quantity: i32,
    /// A booking at this partner the parts are for.
    pub booking_id: Option<i64>,
}

/// Hold parts for a booking; never more than is free (409 otherwise).
#[utoipa::path(post, path = "/api/v1/partners/{id}/reservations", tag = "partners", params(("id" = i64, Path)),
    request_body = CreateReservation,
    responses((status = 201, body = Reservation), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn create_reservation(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<i64>,
    ApiJson(req): ApiJson<CreateReservation>,
) -> ApiResult<Response> {
    partner_for(&state, &ctx, id, Access::Keep).await?;
    if let Some(b) = req.booking_id {
        let ok: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM bookings WHERE id = $1 AND partner_id = $2)")
            .bind(b)
            .bind(id)
            .fetch_one(&state.pool)
            .await?;
        if !ok {
            return Err(ApiError::validation("booking_id", "no such booking at this partner"));
        }
    }
    let rid = services::partners::reserve_part(&state.pool, id, &req.sku, req.quantity, req.booking_id).await?;
    Ok(created(reservation(&state, rid).await?))
}

async fn reservation(state: &AppState, id: i64) -> ApiResult<Reservation> {
    sqlx::query_as(
        "SELECT id, partner_id, sku, booking_id, quantity, status, created_at FROM part_reservations WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&state.pool)
    .await?
    .ok_or_else(ApiError::not_found)
}

#[utoipa::path(get, path = "/api/v1/partners/{id}/reservations", tag = "partners", params(("id" = i64, Path), ListQuery),
    responses((status = 200, body = Page<Reservation>), (status = 404, body = ErrorBody)))]
pub async fn list_reservations(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Page<Reservation>>> {
    partner_for(&state, &ctx, id, Access::Keep).await?;
    let (cursor, desc, limit) = q.keyset(&state)?;
    let (cmp, ord) = order(desc);
    let rows: Vec<Reservation> = sqlx::query_as(sqlf!(
        "SELECT id, partner_id, sku, booking_id, quantity, status, created_at FROM part_reservations \
         WHERE partner_id = $1 AND ($2::int8 IS NULL OR id {cmp} $2) ORDER BY id {ord} LIMIT $3"
    ))
    .bind(id)
    .bind(cursor)
    .bind(limit + 1)
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(page(rows, &q, &state, |r| r.id)?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FinishReservation {
    /// true: the parts were used (leave stock); false: give them back.
    pub consume: bool,
}

/// End a held reservation: consume the parts or release them. Once (409 after).
#[utoipa::path(post, path = "/api/v1/reservations/{id}/finish", tag = "partners", params(("id" = i64, Path)),
    request_body = FinishReservation,
    responses((status = 200, body = Reservation), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn finish_reservation(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<i64>,
    ApiJson(req): ApiJson<FinishReservation>,
) -> ApiResult<Json<Reservation>> {
    let r = reservation(&state, id).await?;
    partner_for(&state, &ctx, r.partner_id, Access::Keep).await?;
    services::partners::finish_reservation(&state.pool, id, req.consume).await?;
    Ok(Json(reservation(&state, id).await?))
}

// ---------------------------------------------------------------- ratings

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Rating {
    pub booking_id: i64,
    pub stars: i16,
    pub comment: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A partner's ratings with the summary ranking uses.
#[derive(Debug, Serialize, ToSchema)]
pub struct Ratings {
    pub count: i64,
    pub average_stars: Option<f64>,
    /// Wilson lower bound, 0..1.
    pub rating: f64,
    pub items: Vec<Rating>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/partners/{id}/ratings", tag = "partners", params(("id" = i64, Path), ListQuery),
    responses((status = 200, body = Ratings), (status = 404, body = ErrorBody)))]
pub async fn list_ratings(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Ratings>> {
    let p = partner_for(&state, &ctx, id, Access::Read).await?;
    let (cursor, desc, limit) = q.keyset(&state)?;
    let (cmp, ord) = order(desc);
    let rows: Vec<Rating> = sqlx::query_as(sqlf!(
        "SELECT booking_id, stars, comment, created_at FROM partner_ratings \
         WHERE partner_id = $1 AND ($2::int8 IS NULL OR booking_id {cmp} $2) ORDER BY booking_id {ord} LIMIT $3"
    ))
    .bind(id)
    .bind(cursor)
    .bind(limit + 1)
    .fetch_all(&state.pool)
    .await?;
    let pg = page(rows, &q, &state, |r| r.booking_id)?;
    Ok(Json(Ratings {
        count: p.ratings,
        average_stars: (p.ratings > 0).then(|| p.stars_sum as f64 / p.ratings as f64),
        rating: services::partners::rating_lower_bound(p.stars_sum as f64, p.ratings as f64),
        items: pg.items,
        next_cursor: pg.next_cursor,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRating {
    /// A completed booking of the caller's at this partner.
    pub booking_id: i64,
    /// 1..=5.
    pub stars: i16,
    pub comment: Option<String>,
}

/// Rate the partner for a completed booking, once per booking.
#[utoipa::path(post, path = "/api/v1/partners/{id}/ratings", tag = "partners", params(("id" = i64, Path)),
    request_body = CreateRating,
    responses((status = 201, body = Rating), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn create_rating(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<i64>,
    ApiJson(req): ApiJson<CreateRating>,
) -> ApiResult<Response> {
    partner_for(&state, &ctx, id, Access::Read).await?;
    let customer = (ctx.role == Role::Customer).then_some(ctx.user_id);
    let ok: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM bookings WHERE id = $1 AND partner_id = $2 AND tenant_id = $3 \
         AND ($4::int8 IS NULL OR customer_id = $4))",
    )
    .bind(req.booking_id)
    .bind(id)
    .bind(ctx.tenant_id)
    .bind(customer)
    .fetch_one(&state.pool)
    .await?;
    if !ok {
        return Err(ApiError::validation(
            "booking_id",
            "no such booking of yours at this partner",
        ));
    }
    if req.comment.as_ref().is_some_and(|c| c.len() > 4000) {
        return Err(ApiError::validation("comment", "at most 4000 bytes"));
    }
    services::partners::rate(&state.pool, req.booking_id, req.stars, req.comment.as_deref()).await?;
    let r: Rating =
        sqlx::query_as("SELECT booking_id, stars, comment, created_at FROM partner_ratings WHERE booking_id = $1")
            .bind(req.booking_id)
            .fetch_one(&state.pool)
            .await?;
    Ok(created(r))
}

// ---------------------------------------------------------------- matching

/// A shop matched for a vehicle and a service (the shape dashboards code against).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ShopMatch {
    pub partner_id: i64,
    pub partner_name: String,
    /// The catalogue entry (`/partners/{id}/services`) to book.
    pub service_id: Option<i64>,
    pub service_name: String,
    /// Great-circle distance from the vehicle's last position, metres.
    pub distance_m: f64,
    pub price_minor: i64,
    pub currency: String,
    /// The first free start in the window (15-minute grid, inside opening hours).
    pub earliest_slot: DateTime<Utc>,
    /// Wilson lower bound of the partner's ratings, 0..1.
    pub rating: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ShopMatches {
    pub items: Vec<ShopMatch>,
}

/// Turns the services' matches into the API shape, looking up catalogue ids in one query.
pub(crate) async fn shop_matches(
    state: &AppState,
    service: &str,
    ms: Vec<services::matching::Match>,
) -> ApiResult<Vec<ShopMatch>> {
    let ids: Vec<i64> = ms.iter().map(|m| m.partner_id).collect();
    let rows: Vec<(i64, i64)> =
        sqlx::query_as("SELECT partner_id, id FROM partner_services WHERE service = $1 AND partner_id = ANY($2)")
            .bind(service)
            .bind(&ids)
            .fetch_all(&state.pool)
            .await?;
    let by_partner: HashMap<i64, i64> = rows.into_iter().collect();
    Ok(ms
        .into_iter()
        .map(|m| ShopMatch {
            partner_id: m.partner_id,
            service_id: by_partner.get(&m.partner_id).copied(),
            partner_name: m.name,
            service_name: service.to_string(),
            distance_m: (m.distance_m * 10.0).round() / 10.0,
            price_minor: m.price,
            currency: m.currency,
            earliest_slot: m.earliest_slot,
            rating: m.rating,
        })
        .collect())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MatchQuery {
    /// A vehicle of the caller's tenant; its devices' newest fix is the origin.
    pub vehicle_id: i64,
    /// Catalogue code of the needed service.
    pub service: String,
    /// Window start (default now).
    pub from: Option<DateTime<Utc>>,
    /// Window end (default `from` + 7 days; at most 31 days).
    pub to: Option<DateTime<Utc>>,
    /// How many shops (default 10, at most 50).
    pub limit: Option<usize>,
    /// Search radius (default 50 km, at most 500).
    pub max_distance_km: Option<f64>,
}

/// The nearest qualified shops with a free slot in the window, best first (distance,
/// earliest slot, price and rating).
#[utoipa::path(get, path = "/api/v1/partners/match", tag = "partners", params(MatchQuery),
    responses((status = 200, body = ShopMatches), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn match_shops(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiQuery(q): ApiQuery<MatchQuery>,
) -> ApiResult<Json<ShopMatches>> {
    let owned: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM vehicles WHERE id = $1 AND tenant_id = $2)")
        .bind(q.vehicle_id)
        .bind(ctx.tenant_id)
        .fetch_one(&state.pool)
        .await?;
    if !owned {
        return Err(ApiError::not_found());
    }
    check_code("service", &q.service)?;
    let from = q.from.unwrap_or_else(Utc::now);
    let to = q.to.unwrap_or(from + Duration::days(7));
    let limit = q.limit.unwrap_or(10);
    if !(1..=50).contains(&limit) {
        return Err(ApiError::validation("limit", "1 to 50"));
    }
    let radius = q.max_distance_km.unwrap_or(50.0);
    if !(radius > 0.0 && radius <= 500.0) {
        return Err(ApiError::validation("max_distance_km", "above 0, at most 500"));
    }
    let (lat, lon) = match services::matching::vehicle_position(&state.pool, q.vehicle_id).await {
        Ok(p) => p,
        Err(ServiceError::NotFound { .. }) => {
            return Err(ApiError::validation(
                "vehicle_id",
                "the vehicle has no known position yet",
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let ms = services::matching::find_shops(
        &state.pool,
        &services::matching::MatchRequest {
            lat,
            lon,
            service: q.service.clone(),
            from,
            to,
            limit,
            max_distance_km: radius,
        },
    )
    .await?;
    Ok(Json(ShopMatches {
        items: shop_matches(&state, &q.service, ms).await?,
    }))
}
