//! Bookings and service recommendations through the API: slot availability, booking a
//! vehicle (one, or many of a fleet with per-item results), the status workflow, and
//! maintenance recommendations with matched shops that become bookings when accepted.
//!
//! Who sees a booking: the booking's tenant (fleet roles), only their own for a
//! `customer`, and only their partner's for a `partner` user (bookings of any tenant at
//! that partner — that is the partner's work queue). Anything else is a 404. Overlap is
//! refused by the database (exclusion constraint), so two requests for the last bay get
//! one booking and one 409, however they race.

use axum::Json;
use axum::extract::State;
use axum::response::Response;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use services::ServiceError;
use utoipa::{IntoParams, ToSchema};

use super::partners::{Access, ShopMatch, actor, created, my_partner, partner_for, shop_matches};
use super::{ListQuery, Page, order, page};
use crate::auth::Role;
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, ErrorBody};
use crate::{AppState, Ctx};

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Booking {
    pub id: i64,
    pub vehicle_id: Option<i64>,
    /// The customer user who holds it (customer-role bookings).
    pub customer_id: Option<i64>,
    pub partner_id: i64,
    pub partner_name: String,
    /// Catalogue code.
    pub service: String,
    /// The partner's bay taken.
    pub bay: i32,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// `requested`, `confirmed`, `in_progress`, `completed`, `cancelled`, `no_show`.
    pub status: String,
    /// Price snapshot at booking time, minor units of `currency`.
    pub price_minor: i64,
    pub currency: String,
    /// The payment for it, once one is created.
    pub payment_id: Option<i64>,
    pub invoice_id: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const BOOKING_COLS: &str = "b.id, b.vehicle_id, b.customer_id, b.partner_id, p.name AS partner_name, b.service, b.bay, \
    lower(b.slot) AS start, upper(b.slot) AS \"end\", b.status, b.price AS price_minor, b.currency, \
    b.payment_intent_id AS payment_id, b.invoice_id, b.created_at, b.updated_at";

/// `(partner, tenant, customer)` binds for [`SCOPE`]: which bookings the caller sees.
pub(crate) async fn booking_scope(state: &AppState, ctx: &Ctx) -> ApiResult<(Option<i64>, i64, Option<i64>)> {
    if ctx.role == Role::Partner {
        // An unlinked partner user sees nothing (no partner has id 0).
        return Ok((Some(my_partner(state, ctx).await?.unwrap_or(0)), ctx.tenant_id, None));
    }
    let customer = (ctx.role == Role::Customer).then_some(ctx.user_id);
    Ok((None, ctx.tenant_id, customer))
}

/// The visibility predicate over `b` with the [`booking_scope`] binds at `$1..$3`.
pub(crate) const SCOPE: &str = "(($1::int8 IS NOT NULL AND b.partner_id = $1) OR ($1::int8 IS NULL AND b.tenant_id = $2 \
    AND ($3::int8 IS NULL OR b.customer_id = $3)))";

/// Booking `id` if the caller may see it, else 404.
pub(crate) async fn booking_for(state: &AppState, ctx: &Ctx, id: i64) -> ApiResult<Booking> {
    let (p, t, c) = booking_scope(state, ctx).await?;
    sqlx::query_as(sqlf!(
        "SELECT {BOOKING_COLS} FROM bookings b JOIN partners p ON p.id = b.partner_id WHERE {SCOPE} AND b.id = $4"
    ))
    .bind(p)
    .bind(t)
    .bind(c)
    .bind(id)
    .fetch_optional(&state.pool)
    .await?
    .ok_or_else(ApiError::not_found)
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BookingFilter {
    pub status: Option<String>,
    pub vehicle_id: Option<i64>,
    pub partner_id: Option<i64>,
    /// Bookings ending after this time.
    pub from: Option<DateTime<Utc>>,
    /// Bookings starting before this time.
    pub to: Option<DateTime<Utc>>,
}

#[utoipa::path(get, path = "/api/v1/bookings", tag = "bookings", params(ListQuery, BookingFilter),
    responses((status = 200, body = Page<Booking>), (status = 422, body = ErrorBody)))]
pub async fn list_bookings(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiQuery(q): ApiQuery<ListQuery>,
    ApiQuery(f): ApiQuery<BookingFilter>,
) -> ApiResult<Json<Page<Booking>>> {
    let (cursor, desc, limit) = q.keyset(&state)?;
    let (cmp, ord) = order(desc);
    let (p, t, c) = booking_scope(&state, &ctx).await?;
    let rows: Vec<Booking> = sqlx::query_as(sqlf!(
        "SELECT {BOOKING_COLS} FROM bookings b JOIN partners p ON p.id = b.partner_id WHERE {SCOPE} \
         AND ($4::int8 IS NULL OR b.id {cmp} $4) AND ($5::text IS NULL OR b.status = $5) \
         AND ($6::int8 IS NULL OR b.vehicle_id = $6) AND ($7::int8 IS NULL OR b.partner_id = $7) \
         AND ($8::timestamptz IS NULL OR upper(b.slot) > $8) AND ($9::timestamptz IS NULL OR lower(b.slot) < $9) \
         ORDER BY b.id {ord} LIMIT $10"
    ))
    .bind(p)
    .bind(t)
    .bind(c)
    .bind(cursor)
    .bind(&f.status)
    .bind(f.vehicle_id)
    .bind(f.partner_id)
    .bind(f.from)
    .bind(f.to)
    .bind(limit + 1)
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(page(rows, &q, &state, |b| b.id)?))
}

#[utoipa::path(get, path = "/api/v1/bookings/{id}", tag = "bookings", params(("id" = i64, Path)),
    responses((status = 200, body = Booking), (status = 404, body = ErrorBody)))]
pub async fn read_booking(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Booking>> {
    Ok(Json(booking_for(&state, &ctx, id).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBooking {
    /// A vehicle of the caller's tenant.
    pub vehicle_id: i64,
    pub partner_id: i64,
    /// Catalogue entry id (`/partners/{id}/services`); or give `service`.
    pub service_id: Option<i64>,
    /// Catalogue code, instead of `service_id`.
    pub service: Option<String>,
    /// Start of the visit; the end follows from the service's duration.
    pub start: DateTime<Utc>,
}

/// The catalogue code a request names, checked against the partner's catalogue.
async fn service_code(
    state: &AppState,
    partner: i64,
    service_id: Option<i64>,
    service: Option<&str>,
) -> ApiResult<String> {
    match (service_id, service) {
        (Some(sid), _) => {
            let code: Option<String> =
                sqlx::query_scalar("SELECT service FROM partner_services WHERE id = $1 AND partner_id = $2")
                    .bind(sid)
                    .bind(partner)
                    .fetch_optional(&state.pool)
                    .await?;
            code.ok_or_else(|| ApiError::validation("service_id", "not in this partner's catalogue"))
        }
        (None, Some(s)) => Ok(s.to_string()),
        (None, None) => Err(ApiError::validation("service_id", "give service_id or service")),
    }
}

async fn vehicle_in_tenant(state: &AppState, ctx: &Ctx, vehicle: i64) -> ApiResult<bool> {
    Ok(
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM vehicles WHERE id = $1 AND tenant_id = $2)")
            .bind(vehicle)
            .bind(ctx.tenant_id)
            .fetch_one(&state.pool)
            .await?,
    )
}

/// The partner must be bookable by this caller (active, or the caller's own to test with).
async fn bookable_partner(state: &AppState, ctx: &Ctx, partner: i64) -> ApiResult<()> {
    partner_for(state, ctx, partner, Access::Read).await.map(|_| ())
}

async fn book(
    state: &AppState,
    ctx: &Ctx,
    vehicle: i64,
    partner: i64,
    service: &str,
    start: DateTime<Utc>,
) -> ApiResult<Booking> {
    let b = services::bookings::create(
        &state.pool,
        &services::bookings::NewBooking {
            tenant_id: Some(ctx.tenant_id),
            customer_id: (ctx.role == Role::Customer).then_some(ctx.user_id),
            vehicle_id: Some(vehicle),
            partner_id: partner,
            service: service.to_string(),
            start,
        },
        &actor(ctx),
    )
    .await?;
    booking_for(state, ctx, b.id).await
}

/// Book a service for a vehicle. 409 when every bay is taken at that time (or the
/// customer already holds the maximum of unconfirmed bookings), 404 for an unknown or
/// inactive partner, 422 for a service the partner does not offer or a past start.
#[utoipa::path(post, path = "/api/v1/bookings", tag = "bookings", request_body = CreateBooking,
    params(("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = Booking), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn create_booking(
    State(state): State<AppState>,
    ctx: Ctx,
    headers: axum::http::HeaderMap,
    ApiJson(req): ApiJson<CreateBooking>,
) -> ApiResult<Response> {
    let key = super::payments::idempotency_key(&headers, &ctx)?;
    if !vehicle_in_tenant(&state, &ctx, req.vehicle_id).await? {
        return Err(ApiError::validation("vehicle_id", "no such vehicle"));
    }
    bookable_partner(&state, &ctx, req.partner_id).await?;
    let service = service_code(&state, req.partner_id, req.service_id, req.service.as_deref()).await?;
    // A retried request (same key) must not take a second bay.
    let new = services::bookings::NewBooking {
        tenant_id: Some(ctx.tenant_id),
        customer_id: (ctx.role == Role::Customer).then_some(ctx.user_id),
        vehicle_id: Some(req.vehicle_id),
        partner_id: req.partner_id,
        service,
        start: req.start,
    };
    let who = actor(&ctx);
    let b: services::bookings::Booking = super::payments::once_per_key(&state, "booking", key.as_deref(), &new, || {
        services::bookings::create(&state.pool, &new, &who)
    })
    .await?;
    Ok(created(booking_for(&state, &ctx, b.id).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkItem {
    pub vehicle_id: i64,
    pub start: DateTime<Utc>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkBooking {
    pub partner_id: i64,
    pub service_id: Option<i64>,
    pub service: Option<String>,
    /// 1..=100 vehicles of the caller's tenant, each with its start.
    pub items: Vec<BulkItem>,
}

/// The outcome for one vehicle of a bulk booking.
#[derive(Debug, Serialize, ToSchema)]
pub struct BulkResult {
    pub index: usize,
    pub vehicle_id: i64,
    /// The HTTP status this item would have had alone (201, 409, 422, …).
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub booking: Option<Booking>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<crate::error::ErrorInner>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BulkResults {
    pub created: usize,
    pub failed: usize,
    pub results: Vec<BulkResult>,
}

/// Book one service for several vehicles of the fleet. Each item succeeds or fails on
/// its own (a taken slot fails that item only); a vehicle that is not the caller's
/// refuses the whole request with 422 before anything is booked.
#[utoipa::path(post, path = "/api/v1/bookings/bulk", tag = "bookings", request_body = BulkBooking,
    params(("Idempotency-Key" = Option<String>, Header)),
    responses((status = 200, body = BulkResults), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn bulk_bookings(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiJson(req): ApiJson<BulkBooking>,
) -> ApiResult<Json<BulkResults>> {
    if req.items.is_empty() || req.items.len() > 100 {
        return Err(ApiError::validation("items", "1 to 100 items"));
    }
    let ids: Vec<i64> = req.items.iter().map(|i| i.vehicle_id).collect();
    let owned: Vec<i64> = sqlx::query_scalar("SELECT id FROM vehicles WHERE tenant_id = $1 AND id = ANY($2)")
        .bind(ctx.tenant_id)
        .bind(&ids)
        .fetch_all(&state.pool)
        .await?;
    if let Some((i, _)) = req
        .items
        .iter()
        .enumerate()
        .find(|(_, it)| !owned.contains(&it.vehicle_id))
    {
        return Err(ApiError::validation(
            &format!("items[{i}].vehicle_id"),
            "no such vehicle",
        ));
    }
    bookable_partner(&state, &ctx, req.partner_id).await?;
    let service = service_code(&state, req.partner_id, req.service_id, req.service.as_deref()).await?;
    let mut results = Vec::with_capacity(req.items.len());
    for (index, it) in req.items.iter().enumerate() {
        match book(&state, &ctx, it.vehicle_id, req.partner_id, &service, it.start).await {
            Ok(b) => results.push(BulkResult {
                index,
                vehicle_id: it.vehicle_id,
                status: 201,
                booking: Some(b),
                error: None,
            }),
            Err(e) if e.status.is_server_error() => return Err(e),
            Err(e) => results.push(BulkResult {
                index,
                vehicle_id: it.vehicle_id,
                status: e.status.as_u16(),
                booking: None,
                error: Some(crate::error::ErrorInner {
                    code: e.code.to_string(),
                    message: e.message,
                    details: e.details,
                }),
            }),
        }
    }
    let created = results.iter().filter(|r| r.booking.is_some()).count();
    Ok(Json(BulkResults {
        created,
        failed: results.len() - created,
        results,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BookingTransition {
    /// `confirmed`, `in_progress`, `completed`, `cancelled`, `no_show`.
    pub to: String,
}

/// Move a booking along its workflow (requested → confirmed → in_progress → completed;
/// cancelled or no_show). The partner's users and admins may make any allowed step; the
/// fleet's other roles and customers may only cancel. Not allowed from the current
/// status: 409. Parts reserved for the booking are consumed on completion and released
/// on cancellation or no-show.
#[utoipa::path(post, path = "/api/v1/bookings/{id}/transitions", tag = "bookings", params(("id" = i64, Path)),
    request_body = BookingTransition,
    responses((status = 200, body = Booking), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn transition_booking(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<i64>,
    ApiJson(req): ApiJson<BookingTransition>,
) -> ApiResult<Json<Booking>> {
    booking_for(&state, &ctx, id).await?;
    if !services::bookings::STATUSES.contains(&req.to.as_str()) {
        return Err(ApiError::validation(
            "to",
            format!("one of {}", services::bookings::STATUSES.join(", ")),
        ));
    }
    let may = matches!(ctx.role, Role::Admin | Role::Partner) || req.to == "cancelled";
    if !may {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "forbidden",
            "only the partner (or an admin) moves a booking forward; you may cancel it",
        ));
    }
    services::bookings::transition(&state.pool, id, &req.to, &actor(&ctx)).await?;
    // Parts held for the visit are used when it completes and go back to stock when it
    // does not happen. Each reservation ends once, so a retry cannot double-count.
    if matches!(req.to.as_str(), "completed" | "cancelled" | "no_show") {
        let held: Vec<i64> =
            sqlx::query_scalar("SELECT id FROM part_reservations WHERE booking_id = $1 AND status = 'held'")
                .bind(id)
                .fetch_all(&state.pool)
                .await?;
        for r in held {
            match services::partners::finish_reservation(&state.pool, r, req.to == "completed").await {
                Ok(()) | Err(ServiceError::Conflict(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(Json(booking_for(&state, &ctx, id).await?))
}

// ---------------------------------------------------------------- availability

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SlotQuery {
    /// Catalogue entry id (`/partners/{id}/services`); required.
    pub service_id: Option<i64>,
    /// Window start (default now).
    pub from: Option<DateTime<Utc>>,
    /// Window end (default `from` + 7 days; at most 31 days).
    pub to: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Slot {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// Bays still free for the whole slot.
    pub free_bays: i32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Slots {
    pub service_id: i64,
    pub duration_min: i32,
    pub items: Vec<Slot>,
}

/// Free start times (15-minute grid) for a service in a window: inside opening hours in
/// the partner's time zone, with at least one bay not taken by an active booking.
#[utoipa::path(get, path = "/api/v1/partners/{id}/slots", tag = "bookings", params(("id" = i64, Path), SlotQuery),
    responses((status = 200, body = Slots), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn slots(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<SlotQuery>,
) -> ApiResult<Json<Slots>> {
    let p = partner_for(&state, &ctx, id, Access::Read).await?;
    let service_id = q
        .service_id
        .ok_or_else(|| ApiError::validation("service_id", "required"))?;
    let minutes: Option<i32> =
        sqlx::query_scalar("SELECT duration_min FROM partner_services WHERE id = $1 AND partner_id = $2")
            .bind(service_id)
            .bind(id)
            .fetch_optional(&state.pool)
            .await?;
    let minutes = minutes.ok_or_else(|| ApiError::validation("service_id", "not in this partner's catalogue"))?;
    let now = Utc::now();
    let from = q.from.unwrap_or(now).max(now);
    let to = q.to.unwrap_or(from + Duration::days(7));
    if to <= from {
        return Err(ApiError::validation("to", "must be after from (and in the future)"));
    }
    if to - from > Duration::days(31) {
        return Err(ApiError::validation("to", "the window may span at most 31 days"));
    }
    let tz: chrono_tz::Tz = p.time_zone.parse().unwrap_or(chrono_tz::UTC);
    let hours = services::matching::OpeningHours::parse(&p.opening_hours).map_err(ApiError::from)?;
    let dur = Duration::minutes(i64::from(minutes));
    let busy: Vec<(DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT lower(slot), upper(slot) FROM bookings WHERE partner_id = $1 \
         AND status IN ('requested', 'confirmed', 'in_progress') AND slot && tstzrange($2, $3)",
    )
    .bind(id)
    .bind(from)
    .bind(to + dur)
    .fetch_all(&state.pool)
    .await?;
    let step = 15 * 60;
    let first = from.timestamp().div_euclid(step) * step + if from.timestamp() % step == 0 { 0 } else { step };
    let mut t = DateTime::from_timestamp(first, 0).unwrap_or(from);
    let mut items = Vec::new();
    while t + dur <= to && items.len() < 3000 {
        let end = t + dur;
        if hours.contains(tz, t, end) {
            // Bays are interchangeable here: overlapping bookings each hold one.
            let taken = busy.iter().filter(|(s, e)| *s < end && t < *e).count() as i32;
            if taken < p.capacity {
                items.push(Slot {
                    start: t,
                    end,
                    free_bays: p.capacity - taken,
                });
            }
        }
        t += Duration::minutes(15);
    }
    Ok(Json(Slots {
        service_id,
        duration_min: minutes,
        items,
    }))
}

// ---------------------------------------------------------------- recommendations

/// A service recommended for a vehicle after a maintenance event, with matched shops.
#[derive(Debug, Serialize, ToSchema)]
pub struct Recommendation {
    pub id: i64,
    pub vehicle_id: Option<i64>,
    /// Human-readable: `P0301: cylinder 1 misfire`, `oil service due`.
    pub reason: String,
    /// The fault code (DTC) or plan that raised it, when the event carried one.
    pub code: Option<String>,
    /// `dtc_raised` or `service_due`.
    pub event_kind: String,
    /// Catalogue code to book (`diagnostics`, `scheduled_service`).
    pub service: String,
    /// `open`, `accepted`, `dismissed`.
    pub status: String,
    pub booking_id: Option<i64>,
    pub created_at: DateTime<Utc>,
    /// Shops matched when it was raised (same shape as `/partners/match`).
    pub matches: Vec<ShopMatch>,
}

type RecRow = (
    i64,
    Option<i64>,
    String,
    Option<String>,
    String,
    String,
    String,
    Option<i64>,
    DateTime<Utc>,
    serde_json::Value,
);

const REC_COLS: &str = "r.id, r.vehicle_id, r.reason, coalesce((SELECT coalesce(e.attributes->>'code', \
    e.attributes->>'plan') FROM events e WHERE e.device_id = r.device_id AND e.kind = r.event_kind \
    AND e.time = r.event_time LIMIT 1), NULLIF(split_part(r.reason, ':', 1), r.reason)), r.event_kind, r.service, \
    r.status, r.booking_id, r.created_at, r.matches";

async fn recommendation_out(state: &AppState, r: RecRow) -> ApiResult<Recommendation> {
    let ms: Vec<services::matching::Match> = serde_json::from_value(r.9).unwrap_or_default();
    Ok(Recommendation {
        id: r.0,
        vehicle_id: r.1,
        reason: r.2,
        code: r.3,
        event_kind: r.4,
        matches: shop_matches(state, &r.5, ms).await?,
        service: r.5,
        status: r.6,
        booking_id: r.7,
        created_at: r.8,
    })
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RecommendationFilter {
    pub vehicle_id: Option<i64>,
    /// `open`, `accepted` or `dismissed`.
    pub status: Option<String>,
}

/// Recommendations for the caller's fleet, newest first by default.
#[utoipa::path(get, path = "/api/v1/recommendations", tag = "bookings", params(ListQuery, RecommendationFilter),
    responses((status = 200, body = Page<Recommendation>), (status = 422, body = ErrorBody)))]
pub async fn list_recommendations(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiQuery(q): ApiQuery<ListQuery>,
    ApiQuery(f): ApiQuery<RecommendationFilter>,
) -> ApiResult<Json<Page<Recommendation>>> {
    let (cursor, desc, limit) = q.keyset(&state)?;
    // Newest first unless asked otherwise: what needs attention is what just happened.
    let desc = desc || q.sort.is_none();
    let (cmp, ord) = order(desc);
    let rows: Vec<RecRow> = sqlx::query_as(sqlf!(
        "SELECT {REC_COLS} FROM recommendations r WHERE r.tenant_id = $1 AND ($2::int8 IS NULL OR r.id {cmp} $2) \
         AND ($3::int8 IS NULL OR r.vehicle_id = $3) AND ($4::text IS NULL OR r.status = $4) \
         ORDER BY r.id {ord} LIMIT $5"
    ))
    .bind(ctx.tenant_id)
    .bind(cursor)
    .bind(f.vehicle_id)
    .bind(&f.status)
    .bind(limit + 1)
    .fetch_all(&state.pool)
    .await?;
    let p = page(rows, &q, &state, |r| r.0)?;
    let mut items = Vec::with_capacity(p.items.len());
    for r in p.items {
        items.push(recommendation_out(&state, r).await?);
    }
    Ok(Json(Page {
        items,
        next_cursor: p.next_cursor,
    }))
}

#[utoipa::path(get, path = "/api/v1/recommendations/{id}", tag = "bookings", params(("id" = i64, Path)),
    responses((status = 200, body = Recommendation), (status = 404, body = ErrorBody)))]
pub async fn read_recommendation(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Recommendation>> {
    let r: RecRow = sqlx::query_as(sqlf!(
        "SELECT {REC_COLS} FROM recommendations r WHERE r.tenant_id = $1 AND r.id = $2"
    ))
    .bind(ctx.tenant_id)
    .bind(id)
    .fetch_optional(&state.pool)
    .await?
    .ok_or_else(ApiError::not_found)?;
    Ok(Json(recommendation_out(&state, r).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptRecommendation {
    pub partner_id: i64,
    /// The partner's catalogue entry for the recommended service.
    pub service_id: i64,
    pub start: DateTime<Utc>,
}

/// Accept a recommendation by booking one shop at `start`: 201 with the booking. Once
/// (409 after); 409 too when the slot is taken.
#[utoipa::path(post, path = "/api/v1/recommendations/{id}/accept", tag = "bookings", params(("id" = i64, Path)),
    request_body = AcceptRecommendation,
    responses((status = 201, body = Booking), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn accept_recommendation(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<i64>,
    ApiJson(req): ApiJson<AcceptRecommendation>,
) -> ApiResult<Response> {
    let rec: Option<(String, Option<i64>)> =
        sqlx::query_as("SELECT service, vehicle_id FROM recommendations WHERE id = $1 AND tenant_id = $2")
            .bind(id)
            .bind(ctx.tenant_id)
            .fetch_optional(&state.pool)
            .await?;
    let (service, _) = rec.ok_or_else(ApiError::not_found)?;
    bookable_partner(&state, &ctx, req.partner_id).await?;
    let code = service_code(&state, req.partner_id, Some(req.service_id), None).await?;
    if code != service {
        return Err(ApiError::validation(
            "service_id",
            format!("the recommendation is for {service}, this entry is {code}"),
        ));
    }
    let b = services::recommendations::accept(
        &state.pool,
        ctx.tenant_id,
        id,
        req.partner_id,
        req.start,
        (ctx.role == Role::Customer).then_some(ctx.user_id),
        &actor(&ctx),
    )
    .await
    .map_err(|e| match e {
        ServiceError::NotFound { what: "recommendation" } => ApiError::not_found(),
        e => e.into(),
    })?;
    Ok(created(booking_for(&state, &ctx, b.id).await?))
}

/// Dismiss an open recommendation (nothing to book). Once: 409 when it is no longer open.
#[utoipa::path(post, path = "/api/v1/recommendations/{id}/dismiss", tag = "bookings", params(("id" = i64, Path)),
    responses((status = 200, body = Recommendation), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn dismiss_recommendation(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Recommendation>> {
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM recommendations WHERE id = $1 AND tenant_id = $2")
            .bind(id)
            .bind(ctx.tenant_id)
            .fetch_optional(&state.pool)
            .await?;
    let status = status.ok_or_else(ApiError::not_found)?;
    let n = sqlx::query(
        "UPDATE recommendations SET status = 'dismissed' WHERE id = $1 AND tenant_id = $2 AND status = 'open'",
    )
    .bind(id)
    .bind(ctx.tenant_id)
    .execute(&state.pool)
    .await?
    .rows_affected();
    if n == 0 {
        return Err(ApiError::conflict(format!("the recommendation is already {status}")));
    }
    let r: RecRow = sqlx::query_as(sqlf!(
        "SELECT {REC_COLS} FROM recommendations r WHERE r.tenant_id = $1 AND r.id = $2"
    ))
    .bind(ctx.tenant_id)
    .bind(id)
    .fetch_one(&state.pool)
    .await?;
    Ok(Json(recommendation_out(&state, r).await?))
}
