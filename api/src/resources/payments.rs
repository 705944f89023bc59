//! Money through the API: payment intents (create with an idempotency key, authorise,
//! capture, void, split across card and wallets), settlement of the platform's
//! commission, refunds, fleet invoices, wallets, partner payouts and the gateway's
//! signed webhook. Amounts are integers in minor units of the currency (cents; yen have
//! none; dinars have three).
//!
//! The limits that matter (capture ≤ authorised, refunds ≤ captured, no wallet
//! overdraft, a balanced ledger) are enforced by the `services` crate and the database,
//! so they hold however requests race. Payments belong to the tenant that created them;
//! a customer sees only those for their own bookings. Another tenant's ids are 404.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::bookings::booking_for;
use super::partners::{Access, created, my_partner, partner_for};
use super::{ListQuery, Page, order, page};
use crate::auth::Role;
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, ErrorBody};
use crate::{AppState, Ctx};

/// One part of a split payment.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
#[serde(deny_unknown_fields)]
pub struct PaymentPart {
    /// `card` (through the gateway) or `wallet` (the payer's wallet in the currency).
    pub method: String,
    /// `tenant` (the caller's fleet) or `user` (the caller).
    pub payer: String,
    pub amount: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Payment {
    pub id: i64,
    /// `requires_authorization`, `authorized`, `captured`, `partially_refunded`, `refunded`, `voided`, `failed`.
    pub status: String,
    pub currency: String,
    /// Gross, tax included, minor units.
    pub amount: i64,
    pub authorized: i64,
    pub captured: i64,
    pub refunded: i64,
    /// What is paid for: `booking:12`.
    pub reference: Option<String>,
    pub booking_id: Option<i64>,
    /// The partner paid (commission per its agreement goes to the platform at settlement).
    pub partner_id: Option<i64>,
    pub tax_region: Option<String>,
    pub settled: bool,
    pub parts: Vec<PaymentPart>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

type IntentRow = (
    i64,
    String,
    String,
    i64,
    i64,
    i64,
    i64,
    Option<String>,
    Option<i64>,
    Option<String>,
    bool,
    DateTime<Utc>,
    DateTime<Utc>,
);

const INTENT_COLS: &str = "i.id, i.status, i.currency, i.amount, i.authorized, i.captured, i.refunded, i.reference, \
    i.partner_id, i.tax_region, i.settled_at IS NOT NULL, i.created_at, i.updated_at";

/// Payments of the caller's tenant; a customer's only for their own bookings. Binds `$1, $2`.
const INTENT_SCOPE: &str = "i.tenant_id = $1 AND ($2::int8 IS NULL OR i.reference IN \
    (SELECT 'booking:' || b.id FROM bookings b WHERE b.customer_id = $2 AND b.tenant_id = $1))";

fn customer(ctx: &Ctx) -> Option<i64> {
    (ctx.role == Role::Customer).then_some(ctx.user_id)
}

async fn payment_out(state: &AppState, r: IntentRow) -> ApiResult<Payment> {
    let parts: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT method, payer_kind, amount FROM payment_parts WHERE intent_id = $1 ORDER BY id")
            .bind(r.0)
            .fetch_all(&state.pool)
            .await?;
    let parts = if parts.is_empty() {
        vec![PaymentPart {
            method: "card".into(),
            payer: "tenant".into(),
            amount: r.3,
        }]
    } else {
        parts
            .into_iter()
            .map(|(method, payer, amount)| PaymentPart { method, payer, amount })
            .collect()
    };
    Ok(Payment {
        id: r.0,
        status: r.1,
        currency: r.2,
        amount: r.3,
        authorized: r.4,
        captured: r.5,
        refunded: r.6,
        booking_id: r
            .7
            .as_deref()
            .and_then(|s| s.strip_prefix("booking:"))
            .and_then(|s| s.parse().ok()),
        reference: r.7,
        partner_id: r.8,
        tax_region: r.9,
        settled: r.10,
        parts,
        created_at: r.11,
        updated_at: r.12,
    })
}

async fn intent_row(state: &AppState, ctx: &Ctx, id: i64) -> ApiResult<Option<IntentRow>> {
    Ok(sqlx::query_as(sqlf!(
        "SELECT {INTENT_COLS} FROM payment_intents i WHERE {INTENT_SCOPE} AND i.id = $3"
    ))
    .bind(ctx.tenant_id)
    .bind(customer(ctx))
    .bind(id)
    .fetch_optional(&state.pool)
    .await?)
}

async fn payment_for(state: &AppState, ctx: &Ctx, id: i64) -> ApiResult<Payment> {
    let r = intent_row(state, ctx, id).await?.ok_or_else(ApiError::not_found)?;
    payment_out(state, r).await
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PaymentFilter {
    pub status: Option<String>,
    pub booking_id: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/payments", tag = "payments", params(ListQuery, PaymentFilter),
    responses((status = 200, body = Page<Payment>), (status = 422, body = ErrorBody)))]
pub async fn list_payments(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiQuery(q): ApiQuery<ListQuery>,
    ApiQuery(f): ApiQuery<PaymentFilter>,
) -> ApiResult<Json<Page<Payment>>> {
    let (cursor, desc, limit) = q.keyset(&state)?;
    let (cmp, ord) = order(desc);
    let rows: Vec<IntentRow> = sqlx::query_as(sqlf!(
        "SELECT {INTENT_COLS} FROM payment_intents i WHERE {INTENT_SCOPE} AND ($3::int8 IS NULL OR i.id {cmp} $3) \
         AND ($4::text IS NULL OR i.status = $4) AND ($5::text IS NULL OR i.reference = $5) ORDER BY i.id {ord} LIMIT $6"
    ))
    .bind(ctx.tenant_id)
    .bind(customer(&ctx))
    .bind(cursor)
    .bind(&f.status)
    .bind(f.booking_id.map(|b| format!("booking:{b}")))
    .bind(limit + 1)
    .fetch_all(&state.pool)
    .await?;
    let p = page(rows, &q, &state, |r| r.0)?;
    let mut items = Vec::with_capacity(p.items.len());
    for r in p.items {
        items.push(payment_out(&state, r).await?);
    }
    Ok(Json(Page {
        items,
        next_cursor: p.next_cursor,
    }))
}

#[utoipa::path(get, path = "/api/v1/payments/{id}", tag = "payments", params(("id" = i64, Path)),
    responses((status = 200, body = Payment), (status = 404, body = ErrorBody)))]
pub async fn read_payment(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Payment>> {
    Ok(Json(payment_for(&state, &ctx, id).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePayment {
    /// Pay for this booking: amount, currency and partner default to the booking's.
    pub booking_id: Option<i64>,
    /// ISO 4217 (must match the booking's and the partner's).
    pub currency: Option<String>,
    /// Gross, tax included, minor units (must equal the booking's price snapshot).
    pub amount: Option<i64>,
    /// The partner paid, for a payment without a booking (admins and fleet managers).
    pub partner_id: Option<i64>,
    /// Region of the included tax (default: the partner's).
    pub tax_region: Option<String>,
    /// Split across methods and payers; the parts sum exactly to the amount. Default:
    /// one card part paid by the fleet (by the caller for a customer).
    pub parts: Option<Vec<PaymentPart>>,
}

/// Runs `work` once per idempotency key with the services' idempotency: the key's row
/// is claimed in a transaction held open while the work runs, so a concurrent request
/// with the same key waits for it and then replays the stored outcome (errors included)
/// instead of doing the work a second time. Without a key, just runs it.
pub(crate) async fn once_per_key<T, R, Fut>(
    state: &AppState,
    scope: &str,
    key: Option<&str>,
    request: &R,
    work: impl FnOnce() -> Fut,
) -> ApiResult<T>
where
    T: Serialize + serde::de::DeserializeOwned,
    R: Serialize,
    Fut: std::future::Future<Output = Result<T, services::ServiceError>>,
{
    use services::idempotency::{self, Claim};
    let Some(key) = key else {
        return Ok(work().await?);
    };
    let hash = idempotency::request_hash(request);
    // Same-key requests in this process queue here, holding no database connection: a
    // waiter parked on the key's row would hold one, and enough of them would starve the
    // pool the first request needs to finish. Across processes the row lock still
    // serialises them.
    let local = KeyLocks::acquire(&format!("{scope}:{key}")).await;
    let mut tx = state.pool.begin().await?;
    match idempotency::claim::<T>(&mut tx, scope, key, &hash).await? {
        Claim::Fresh => {}
        Claim::Replay(Ok(v)) => return Ok(v),
        Claim::Replay(Err(e)) => {
            let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
            return Err(ApiError::new(status, stored_code(&e.code), e.message));
        }
    }
    let out = match work().await {
        Ok(v) => {
            idempotency::complete(&mut tx, scope, key, &v).await?;
            tx.commit().await?;
            Ok(v)
        }
        Err(e) => {
            drop(tx);
            idempotency::record_error(&state.pool, scope, key, &hash, &e).await?;
            Err(e.into())
        }
    };
    drop(local);
    out
}

type KeyLockMap = std::collections::HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>;

/// Per-key async locks, removed when nobody holds or waits for them.
struct KeyLocks;

struct KeyGuard {
    name: String,
    lock: std::sync::Arc<tokio::sync::Mutex<()>>,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

static KEY_LOCKS: std::sync::LazyLock<std::sync::Mutex<KeyLockMap>> = std::sync::LazyLock::new(Default::default);

impl KeyLocks {
    async fn acquire(name: &str) -> KeyGuard {
        let lock = {
            let mut map = KEY_LOCKS.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(name.to_string()).or_default().clone()
        };
        let guard = lock.clone().lock_owned().await;
        KeyGuard {
            name: name.to_string(),
            lock,
            _guard: guard,
        }
    }
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        let mut map = KEY_LOCKS.lock().unwrap_or_else(|p| p.into_inner());
        // The map's, ours and our guard's: nobody else holds or waits for it.
        if std::sync::Arc::strong_count(&self.lock) <= 3 {
            map.remove(&self.name);
        }
    }
}

/// The static code of a stored error (the services' codes are a closed set).
fn stored_code(code: &str) -> &'static str {
    [
        "not_found",
        "invalid",
        "conflict",
        "insufficient_funds",
        "idempotency_mismatch",
        "declined",
        "gateway_unavailable",
    ]
    .into_iter()
    .find(|c| *c == code)
    .unwrap_or("invalid")
}

pub(crate) fn idempotency_key(headers: &HeaderMap, ctx: &Ctx) -> ApiResult<Option<String>> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match v.to_str() {
        // Namespaced per tenant and caller: the services' keys are global, and one
        // tenant's key must never replay another's payment.
        Ok(k) if !k.is_empty() && k.len() <= 200 => Ok(Some(format!("{}:{}:{k}", ctx.tenant_id, ctx.principal()))),
        _ => Err(ApiError::validation(
            "Idempotency-Key",
            "1 to 200 visible ASCII characters",
        )),
    }
}

/// Create a payment intent. With `Idempotency-Key`, a retry (same key, same body)
/// returns the same payment — also when the retries race — and the same key with another
/// body is a 422. Unknown partner 404; currency mismatch 422.
#[utoipa::path(post, path = "/api/v1/payments", tag = "payments", request_body = CreatePayment,
    params(("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = Payment), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn create_payment(
    State(state): State<AppState>,
    ctx: Ctx,
    headers: HeaderMap,
    ApiJson(req): ApiJson<CreatePayment>,
) -> ApiResult<Response> {
    let key = idempotency_key(&headers, &ctx)?;
    let mut currency = req.currency.clone();
    let mut amount = req.amount;
    let mut partner = req.partner_id;
    let mut reference = None;
    if let Some(bid) = req.booking_id {
        let b = booking_for(&state, &ctx, bid)
            .await
            .map_err(|_| ApiError::validation("booking_id", "no such booking"))?;
        if ["cancelled", "no_show"].contains(&b.status.as_str()) {
            return Err(ApiError::conflict(format!("a {} booking is not paid", b.status)));
        }
        if b.invoice_id.is_some() {
            return Err(ApiError::conflict("the booking is billed on an invoice"));
        }
        if let Some(c) = &currency
            && *c != b.currency
        {
            return Err(ApiError::validation(
                "currency",
                format!("currency mismatch: the booking is priced in {}", b.currency),
            ));
        }
        if amount.is_some_and(|a| a != b.price_minor) {
            return Err(ApiError::validation(
                "amount",
                format!("the booking's price is {} (minor units)", b.price_minor),
            ));
        }
        if partner.is_some_and(|p| p != b.partner_id) {
            return Err(ApiError::validation("partner_id", "not the booking's partner"));
        }
        if let Some(existing) = b.payment_id
            && key.is_none()
        {
            let live: bool =
                sqlx::query_scalar("SELECT status NOT IN ('voided', 'failed') FROM payment_intents WHERE id = $1")
                    .bind(existing)
                    .fetch_one(&state.pool)
                    .await?;
            if live {
                return Err(ApiError::conflict(format!(
                    "the booking already has payment {existing}"
                )));
            }
        }
        currency = Some(b.currency);
        amount = Some(b.price_minor);
        partner = Some(b.partner_id);
        reference = Some(format!("booking:{bid}"));
    } else if ctx.role == Role::Customer {
        return Err(ApiError::validation("booking_id", "customers pay for a booking"));
    } else if let Some(p) = partner {
        // Only a partner the caller can see; the rest do not exist for it.
        partner_for(&state, &ctx, p, Access::Read).await?;
    }
    let currency = currency.ok_or_else(|| ApiError::validation("currency", "required without a booking"))?;
    let amount = amount.ok_or_else(|| ApiError::validation("amount", "required without a booking"))?;
    let tax_region = match (&req.tax_region, partner) {
        (Some(r), _) => Some(r.clone()),
        (None, Some(p)) => sqlx::query_scalar("SELECT tax_region FROM partners WHERE id = $1")
            .bind(p)
            .fetch_optional(&state.pool)
            .await?
            .flatten(),
        (None, None) => None,
    };
    let mut parts = Vec::new();
    for (i, p) in req.parts.clone().unwrap_or_default().into_iter().enumerate() {
        let method = match p.method.as_str() {
            "card" => services::payments::Method::Card,
            "wallet" => services::payments::Method::Wallet,
            _ => return Err(ApiError::validation(&format!("parts[{i}].method"), "card or wallet")),
        };
        // Payers are the caller or its own fleet, never an id from the body: nobody
        // spends another tenant's or user's wallet.
        let payer = match (p.payer.as_str(), ctx.role) {
            ("user", _) => services::payments::Payer::User(ctx.user_id),
            ("tenant", Role::Customer) => {
                return Err(ApiError::validation(
                    &format!("parts[{i}].payer"),
                    "a customer pays as user",
                ));
            }
            ("tenant", _) => services::payments::Payer::Tenant(ctx.tenant_id),
            _ => return Err(ApiError::validation(&format!("parts[{i}].payer"), "tenant or user")),
        };
        parts.push(services::payments::Part {
            method,
            payer,
            amount: p.amount,
        });
    }
    if parts.is_empty() && ctx.role == Role::Customer {
        parts.push(services::payments::Part {
            method: services::payments::Method::Card,
            payer: services::payments::Payer::User(ctx.user_id),
            amount,
        });
    }
    let new = services::payments::NewIntent {
        tenant_id: Some(ctx.tenant_id),
        currency,
        amount,
        reference: reference.clone(),
        partner_id: partner,
        tax_region,
        parts,
    };
    // The services' idempotency makes racing same-key requests run once; queueing them
    // here first keeps the waiters from each holding a pooled connection.
    let local = match &key {
        Some(k) => Some(KeyLocks::acquire(&format!("payment_intent:{k}")).await),
        None => None,
    };
    let intent = services::payments::create_intent(&state.pool, &new, key.as_deref()).await?;
    drop(local);
    if let Some(bid) = req.booking_id {
        let linked = sqlx::query(
            "UPDATE bookings SET payment_intent_id = $1 WHERE id = $2 AND (payment_intent_id IS NULL \
             OR payment_intent_id = $1 OR payment_intent_id IN \
             (SELECT id FROM payment_intents WHERE status IN ('voided', 'failed')))",
        )
        .bind(intent.id)
        .bind(bid)
        .execute(&state.pool)
        .await?
        .rows_affected();
        if linked == 0 {
            // Another payment for the booking won the race: this one must not be taken.
            services::payments::void(&state.pool, state.gateway.as_ref(), intent.id).await?;
            return Err(ApiError::conflict("the booking already has a payment"));
        }
    }
    Ok(created(payment_for(&state, &ctx, intent.id).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Authorize {
    /// The gateway's token for the card (sandbox: `tok_decline` declines, `tok_unavailable` is down).
    pub card_token: String,
}

/// Authorise: reserve the card part at the gateway, check wallet parts' balances.
/// Declined 402; gateway down 503; not `requires_authorization` 409.
#[utoipa::path(post, path = "/api/v1/payments/{id}/authorize", tag = "payments", params(("id" = i64, Path)),
    request_body = Authorize,
    responses((status = 200, body = Payment), (status = 402, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn authorize_payment(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<i64>,
    ApiJson(req): ApiJson<Authorize>,
) -> ApiResult<Json<Payment>> {
    payment_for(&state, &ctx, id).await?;
    if req.card_token.is_empty() || req.card_token.len() > 255 {
        return Err(ApiError::validation("card_token", "1 to 255 bytes"));
    }
    services::payments::authorize(&state.pool, state.gateway.as_ref(), id, &req.card_token).await?;
    Ok(Json(payment_for(&state, &ctx, id).await?))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Capture {
    /// Default: all that was authorised. More than authorised: 422.
    pub amount: Option<i64>,
}

/// Capture (once): the money lands in the ledger — the partner's share to its payable,
/// included tax to tax payable.
#[utoipa::path(post, path = "/api/v1/payments/{id}/capture", tag = "payments", params(("id" = i64, Path)),
    request_body = Capture,
    responses((status = 200, body = Payment), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn capture_payment(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<i64>,
    body: Bytes,
) -> ApiResult<Json<Payment>> {
    payment_for(&state, &ctx, id).await?;
    // The body is optional: no body captures everything authorised.
    let req: Capture = if body.iter().all(u8::is_ascii_whitespace) {
        Capture::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::validation("body", e.to_string()))?
    };
    services::payments::capture(&state.pool, state.gateway.as_ref(), id, req.amount).await?;
    Ok(Json(payment_for(&state, &ctx, id).await?))
}

/// Release an authorisation that was never captured. Captured: 409 (refund instead).
#[utoipa::path(post, path = "/api/v1/payments/{id}/void", tag = "payments", params(("id" = i64, Path)),
    responses((status = 200, body = Payment), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn void_payment(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Payment>> {
    payment_for(&state, &ctx, id).await?;
    services::payments::void(&state.pool, state.gateway.as_ref(), id).await?;
    Ok(Json(payment_for(&state, &ctx, id).await?))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Settlement {
    /// Platform commission taken from the partner's payable, minor units.
    pub commission: i64,
    pub payment: Payment,
}

/// Take the platform's commission per the partner's agreement, once (409 after).
#[utoipa::path(post, path = "/api/v1/payments/{id}/settle", tag = "payments", params(("id" = i64, Path)),
    responses((status = 200, body = Settlement), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn settle_payment(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Settlement>> {
    payment_for(&state, &ctx, id).await?;
    let commission = services::payments::settle(&state.pool, id).await?;
    Ok(Json(Settlement {
        commission,
        payment: payment_for(&state, &ctx, id).await?,
    }))
}

// ---------------------------------------------------------------- refunds

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Refund {
    pub id: i64,
    pub payment_id: i64,
    pub amount: i64,
    /// `pending` (gateway call in progress), `succeeded`, `failed`.
    pub status: String,
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRefund {
    pub payment_id: i64,
    /// Default: everything not yet refunded. More than is left: 422.
    pub amount: Option<i64>,
    pub reason: Option<String>,
}

/// Refund part or all of a captured payment. Refunds never exceed the capture in total,
/// however many race (the excess ones get 422). With `Idempotency-Key`, retries (even
/// concurrent ones) refund once and replay the answer.
#[utoipa::path(post, path = "/api/v1/refunds", tag = "payments", request_body = CreateRefund,
    params(("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = Refund), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn create_refund(
    State(state): State<AppState>,
    ctx: Ctx,
    headers: HeaderMap,
    ApiJson(req): ApiJson<CreateRefund>,
) -> ApiResult<Response> {
    let key = idempotency_key(&headers, &ctx)?;
    let p = intent_row(&state, &ctx, req.payment_id)
        .await?
        .ok_or_else(|| ApiError::validation("payment_id", "no such payment"))?;
    if req.reason.as_ref().is_some_and(|r| r.len() > 2000) {
        return Err(ApiError::validation("reason", "at most 2000 bytes"));
    }
    let amount = req.amount.unwrap_or(p.5 - p.6);
    // Money leaves: a retry racing the original must not refund twice.
    let r: services::payments::Refund = once_per_key(
        &state,
        "refund",
        key.as_deref(),
        &(req.payment_id, amount, &req.reason),
        || {
            services::payments::refund(
                &state.pool,
                state.gateway.as_ref(),
                req.payment_id,
                amount,
                req.reason.as_deref(),
            )
        },
    )
    .await?;
    let out: Refund = sqlx::query_as(
        "SELECT id, intent_id AS payment_id, amount, status, reason, created_at FROM refunds WHERE id = $1",
    )
    .bind(r.id)
    .fetch_one(&state.pool)
    .await?;
    Ok(created(out))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RefundFilter {
    pub payment_id: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/refunds", tag = "payments", params(ListQuery, RefundFilter),
    responses((status = 200, body = Page<Refund>), (status = 422, body = ErrorBody)))]
pub async fn list_refunds(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiQuery(q): ApiQuery<ListQuery>,
    ApiQuery(f): ApiQuery<RefundFilter>,
) -> ApiResult<Json<Page<Refund>>> {
    let (cursor, desc, limit) = q.keyset(&state)?;
    let (cmp, ord) = order(desc);
    let rows: Vec<Refund> = sqlx::query_as(sqlf!(
        "SELECT r.id, r.intent_id AS payment_id, r.amount, r.status, r.reason, r.created_at FROM refunds r \
         JOIN payment_intents i ON i.id = r.intent_id WHERE {INTENT_SCOPE} AND ($3::int8 IS NULL OR r.id {cmp} $3) \
         AND ($4::int8 IS NULL OR r.intent_id = $4) ORDER BY r.id {ord} LIMIT $5"
    ))
    .bind(ctx.tenant_id)
    .bind(customer(&ctx))
    .bind(cursor)
    .bind(f.payment_id)
    .bind(limit + 1)
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(page(rows, &q, &state, |r| r.id)?))
}

// ---------------------------------------------------------------- invoices

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct InvoiceLine {
    /// `booking`, `subscription`, `usage`.
    pub kind: String,
    pub description: String,
    pub quantity: f64,
    pub unit_price: i64,
    pub amount: i64,
    pub booking_id: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Invoice {
    pub id: i64,
    /// First day of the billed month.
    pub period_start: NaiveDate,
    pub currency: String,
    pub subtotal: i64,
    pub tax: i64,
    pub total: i64,
    /// `issued`, `paid`, `void`.
    pub status: String,
    /// Present on a single invoice (`GET /invoices/{id}`, generation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lines: Option<Vec<InvoiceLine>>,
    pub created_at: DateTime<Utc>,
}

type InvoiceRow = (i64, NaiveDate, String, i64, i64, i64, String, DateTime<Utc>);

fn invoice_out(r: InvoiceRow, lines: Option<Vec<InvoiceLine>>) -> Invoice {
    Invoice {
        id: r.0,
        period_start: r.1,
        currency: r.2,
        subtotal: r.3,
        tax: r.4,
        total: r.5,
        status: r.6,
        lines,
        created_at: r.7,
    }
}

const INVOICE_COLS: &str = "id, period_start, currency, subtotal, tax, total, status, created_at";

#[utoipa::path(get, path = "/api/v1/invoices", tag = "payments", params(ListQuery),
    responses((status = 200, body = Page<Invoice>), (status = 422, body = ErrorBody)))]
pub async fn list_invoices(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Page<Invoice>>> {
    let (cursor, desc, limit) = q.keyset(&state)?;
    let (cmp, ord) = order(desc);
    let rows: Vec<InvoiceRow> = sqlx::query_as(sqlf!(
        "SELECT {INVOICE_COLS} FROM invoices WHERE tenant_id = $1 AND ($2::int8 IS NULL OR id {cmp} $2) \
         ORDER BY id {ord} LIMIT $3"
    ))
    .bind(ctx.tenant_id)
    .bind(cursor)
    .bind(limit + 1)
    .fetch_all(&state.pool)
    .await?;
    let p = page(rows, &q, &state, |r| r.0)?;
    Ok(Json(Page {
        items: p.items.into_iter().map(|r| invoice_out(r, None)).collect(),
        next_cursor: p.next_cursor,
    }))
}

async fn invoice_for(state: &AppState, ctx: &Ctx, id: i64) -> ApiResult<Invoice> {
    let r: InvoiceRow = sqlx::query_as(sqlf!(
        "SELECT {INVOICE_COLS} FROM invoices WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(ctx.tenant_id)
    .bind(id)
    .fetch_optional(&state.pool)
    .await?
    .ok_or_else(ApiError::not_found)?;
    let lines: Vec<InvoiceLine> = sqlx::query_as(
        "SELECT kind, description, quantity, unit_price, amount, booking_id FROM invoice_lines WHERE invoice_id = $1 \
         ORDER BY id",
    )
    .bind(id)
    .fetch_all(&state.pool)
    .await?;
    Ok(invoice_out(r, Some(lines)))
}

#[utoipa::path(get, path = "/api/v1/invoices/{id}", tag = "payments", params(("id" = i64, Path)),
    responses((status = 200, body = Invoice), (status = 404, body = ErrorBody)))]
pub async fn read_invoice(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Invoice>> {
    Ok(Json(invoice_for(&state, &ctx, id).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GenerateInvoice {
    /// The month to bill, `YYYY-MM` (not in the future).
    pub month: String,
    pub currency: String,
    /// Per device that reported during the month, minor units.
    pub per_active_device: i64,
    /// Per 100 km driven, minor units.
    pub per_100_km: i64,
    pub tax_region: Option<String>,
}

/// Issue the fleet's invoice for a month: completed bookings not paid on the spot, a
/// subscription per active device, usage by distance. Once per month and currency:
/// asking again returns the issued invoice (200 instead of 201).
#[utoipa::path(post, path = "/api/v1/invoices", tag = "payments", request_body = GenerateInvoice,
    params(("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = Invoice), (status = 200, body = Invoice), (status = 422, body = ErrorBody)))]
pub async fn generate_invoice(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiJson(req): ApiJson<GenerateInvoice>,
) -> ApiResult<Response> {
    let month = NaiveDate::parse_from_str(&format!("{}-01", req.month), "%Y-%m-%d")
        .map_err(|_| ApiError::validation("month", "YYYY-MM"))?;
    if month.year() < 2000 {
        return Err(ApiError::validation("month", "from 2000-01"));
    }
    let today = Utc::now().date_naive();
    if (month.year(), month.month()) > (today.year(), today.month()) {
        return Err(ApiError::validation("month", "must not be in the future"));
    }
    let existed: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM invoices WHERE tenant_id = $1 AND period_start = $2 AND currency = $3)",
    )
    .bind(ctx.tenant_id)
    .bind(month)
    .bind(&req.currency)
    .fetch_one(&state.pool)
    .await?;
    let known: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM currencies WHERE code = $1)")
        .bind(&req.currency)
        .fetch_one(&state.pool)
        .await?;
    if !known {
        return Err(ApiError::validation("currency", "unknown currency"));
    }
    let (inv, _) = services::invoices::issue_monthly(
        &state.pool,
        ctx.tenant_id,
        month,
        &services::invoices::Plan {
            currency: req.currency,
            per_active_device: req.per_active_device,
            per_100_km: req.per_100_km,
            tax_region: req.tax_region,
        },
    )
    .await?;
    let out = invoice_for(&state, &ctx, inv.id).await?;
    Ok(if existed {
        Json(out).into_response()
    } else {
        created(out)
    })
}

// ---------------------------------------------------------------- wallets

/// Whose wallets the caller handles: a customer's own, otherwise the fleet's.
fn wallet_owner(ctx: &Ctx) -> services::payments::Payer {
    if ctx.role == Role::Customer {
        services::payments::Payer::User(ctx.user_id)
    } else {
        services::payments::Payer::Tenant(ctx.tenant_id)
    }
}

fn owner_parts(p: services::payments::Payer) -> (&'static str, i64) {
    match p {
        services::payments::Payer::User(id) => ("user", id),
        services::payments::Payer::Tenant(id) => ("tenant", id),
    }
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Wallet {
    pub currency: String,
    /// Minor units.
    pub balance: i64,
    /// `tenant` (the fleet's wallet) or `user` (a customer's).
    pub owner: String,
}

/// The caller's wallets and balances (a customer's own; the fleet's for fleet roles).
#[utoipa::path(get, path = "/api/v1/wallets", tag = "payments",
    responses((status = 200, body = Page<Wallet>)))]
pub async fn list_wallets(State(state): State<AppState>, ctx: Ctx) -> ApiResult<Json<Page<Wallet>>> {
    let (kind, id) = owner_parts(wallet_owner(&ctx));
    let items: Vec<Wallet> = sqlx::query_as(
        "SELECT currency, balance, owner_kind AS owner FROM ledger_accounts WHERE kind = 'customer_wallet' \
         AND owner_kind = $1 AND owner_id = $2 ORDER BY currency",
    )
    .bind(kind)
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
pub struct TopUp {
    pub currency: String,
    /// Minor units.
    pub amount: i64,
    pub card_token: String,
}

/// Top up the caller's wallet from a card. `Idempotency-Key` is required: a retry never
/// charges the card twice.
#[utoipa::path(post, path = "/api/v1/wallets/top-ups", tag = "payments", request_body = TopUp,
    params(("Idempotency-Key" = String, Header)),
    responses((status = 201, body = Wallet), (status = 402, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn top_up(
    State(state): State<AppState>,
    ctx: Ctx,
    headers: HeaderMap,
    ApiJson(req): ApiJson<TopUp>,
) -> ApiResult<Response> {
    let key = idempotency_key(&headers, &ctx)?
        .ok_or_else(|| ApiError::validation("Idempotency-Key", "required for a top-up"))?;
    let known: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM currencies WHERE code = $1)")
        .bind(&req.currency)
        .fetch_one(&state.pool)
        .await?;
    if !known {
        return Err(ApiError::validation("currency", "unknown currency"));
    }
    if req.card_token.is_empty() || req.card_token.len() > 255 {
        return Err(ApiError::validation("card_token", "1 to 255 bytes"));
    }
    let owner = wallet_owner(&ctx);
    let balance = services::payments::top_up(
        &state.pool,
        state.gateway.as_ref(),
        owner,
        &req.currency,
        req.amount,
        &req.card_token,
        &key,
    )
    .await?;
    Ok(created(Wallet {
        currency: req.currency,
        balance,
        owner: owner_parts(owner).0.to_string(),
    }))
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct WalletEntry {
    pub id: i64,
    pub transaction_id: i64,
    /// `top_up`, `capture`, `refund`, `wallet_debit`, …
    pub kind: String,
    pub reference: Option<String>,
    /// Signed from the wallet's side: + money in, − money out.
    pub amount: i64,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EntriesQuery {
    pub currency: String,
}

/// The wallet's history, one ledger entry per movement.
#[utoipa::path(get, path = "/api/v1/wallets/entries", tag = "payments", params(EntriesQuery, ListQuery),
    responses((status = 200, body = Page<WalletEntry>), (status = 422, body = ErrorBody)))]
pub async fn wallet_entries(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiQuery(e): ApiQuery<EntriesQuery>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Page<WalletEntry>>> {
    let (cursor, desc, limit) = q.keyset(&state)?;
    let (cmp, ord) = order(desc);
    let (kind, id) = owner_parts(wallet_owner(&ctx));
    // A wallet is credit-normal: a credit (negative entry) is money in.
    let rows: Vec<WalletEntry> = sqlx::query_as(sqlf!(
        "SELECT e.id, e.transaction_id, t.kind, t.reference, -e.amount AS amount, e.created_at FROM ledger_entries e \
         JOIN ledger_transactions t ON t.id = e.transaction_id JOIN ledger_accounts a ON a.id = e.account_id \
         WHERE a.kind = 'customer_wallet' AND a.owner_kind = $1 AND a.owner_id = $2 AND a.currency = $3 \
         AND ($4::int8 IS NULL OR e.id {cmp} $4) ORDER BY e.id {ord} LIMIT $5"
    ))
    .bind(kind)
    .bind(id)
    .bind(&e.currency)
    .bind(cursor)
    .bind(limit + 1)
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(page(rows, &q, &state, |r| r.id)?))
}

// ---------------------------------------------------------------- payouts

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Payout {
    pub id: i64,
    pub partner_id: i64,
    pub currency: String,
    pub amount: i64,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePayout {
    /// A partner the caller's tenant operates.
    pub partner_id: i64,
    /// Default: the partner's currency.
    pub currency: Option<String>,
}

/// Pay out the partner's whole payable balance. Unknown partner 404; nothing owed 409.
#[utoipa::path(post, path = "/api/v1/payouts", tag = "payments", request_body = CreatePayout,
    params(("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = Payout), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn create_payout(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiJson(req): ApiJson<CreatePayout>,
) -> ApiResult<Response> {
    // Unknown, or operated by another tenant: the same 404.
    let p = partner_for(&state, &ctx, req.partner_id, Access::Own).await?;
    let currency = req.currency.unwrap_or(p.currency);
    let amount = services::payments::payout(&state.pool, p.id, &currency).await?;
    if amount == 0 {
        return Err(ApiError::conflict("nothing is owed to the partner in that currency"));
    }
    let out: Payout = sqlx::query_as(
        "SELECT id, partner_id, currency, amount, created_at FROM payouts WHERE partner_id = $1 ORDER BY id DESC LIMIT 1",
    )
    .bind(p.id)
    .fetch_one(&state.pool)
    .await?;
    Ok(created(out))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PayoutFilter {
    pub partner_id: Option<i64>,
}

/// Payouts to the partners the caller's tenant operates (a partner user: its own).
#[utoipa::path(get, path = "/api/v1/payouts", tag = "payments", params(ListQuery, PayoutFilter),
    responses((status = 200, body = Page<Payout>), (status = 422, body = ErrorBody)))]
pub async fn list_payouts(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiQuery(q): ApiQuery<ListQuery>,
    ApiQuery(f): ApiQuery<PayoutFilter>,
) -> ApiResult<Json<Page<Payout>>> {
    let (cursor, desc, limit) = q.keyset(&state)?;
    let (cmp, ord) = order(desc);
    let mine = my_partner(&state, &ctx).await?;
    let rows: Vec<Payout> = sqlx::query_as(sqlf!(
        "SELECT o.id, o.partner_id, o.currency, o.amount, o.created_at FROM payouts o JOIN partners p ON p.id = o.partner_id \
         WHERE (($1 AND p.tenant_id = $2) OR p.id = $3) AND ($4::int8 IS NULL OR o.id {cmp} $4) \
         AND ($5::int8 IS NULL OR o.partner_id = $5) ORDER BY o.id {ord} LIMIT $6"
    ))
    .bind(ctx.role == Role::Admin)
    .bind(ctx.tenant_id)
    .bind(mine)
    .bind(cursor)
    .bind(f.partner_id)
    .bind(limit + 1)
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(page(rows, &q, &state, |r| r.id)?))
}

// ---------------------------------------------------------------- gateway webhook

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookAck {
    pub received: bool,
    /// The event id was seen before (a redelivery); nothing was done twice.
    pub duplicate: bool,
}

/// The payment gateway's events. No credentials: the `Webhook-Signature` header
/// (`t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">`, several `v1` during a key
/// rotation) is the authentication; outside ±300 s or not matching any configured
/// secret: 401. Events are deduplicated by their `id`.
#[utoipa::path(post, path = "/api/v1/payments/webhook", tag = "payments", security(()),
    params(("Webhook-Signature" = String, Header)),
    request_body(content = Object, description = "The gateway's event: at least `id` and `type`"),
    responses((status = 200, body = WebhookAck), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn gateway_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<WebhookAck>> {
    let secrets: Vec<&[u8]> = state
        .config
        .gateway_webhook_secrets
        .iter()
        .map(|s| s.as_bytes())
        .collect();
    if secrets.is_empty() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_configured",
            "no gateway webhook secret is configured",
        ));
    }
    let header = headers
        .get("webhook-signature")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::unauthorized("missing Webhook-Signature"))?;
    services::gateway::verify_webhook(&secrets, header, &body, Utc::now().timestamp())
        .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, "bad_signature", e.to_string()))?;
    let event: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_json", e.to_string()))?;
    let id = event
        .get("id")
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty() && s.len() <= 255)
        .ok_or_else(|| ApiError::validation("id", "the event needs a string id"))?;
    super::check_json("body", &event)?;
    let inserted = sqlx::query(
        "INSERT INTO gateway_events (gateway, event_id, payload) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(state.gateway.name())
    .bind(id)
    .bind(&event)
    .execute(&state.pool)
    .await?
    .rows_affected();
    Ok(Json(WebhookAck {
        received: true,
        duplicate: inserted == 0,
    }))
}

#[cfg(test)]
mod tests {
    use super::{KEY_LOCKS, KeyLocks};

    #[tokio::test]
    async fn key_locks_serialise_one_key_and_are_forgotten_when_free() {
        let first = KeyLocks::acquire("t:k").await;
        let waiter = tokio::spawn(async { KeyLocks::acquire("t:k").await });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "a second holder of the same key waits");
        let other = KeyLocks::acquire("t:other").await;
        drop(other);
        drop(first);
        let second = waiter.await.unwrap();
        assert!(KEY_LOCKS.lock().unwrap().contains_key("t:k"));
        drop(second);
        let map = KEY_LOCKS.lock().unwrap();
        assert!(
            !map.contains_key("t:k") && !map.contains_key("t:other"),
            "{:?}",
            map.keys()
        );
    }
}
