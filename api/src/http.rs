//! The router and the conventions every route shares: error shape for every failure
//! (including the framework's own 404/405/413/429), request ids, ETags, idempotency
//! keys, CORS, gzip, rate limits, security headers, body limits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tower_governor::GovernorLayer;
use tower_governor::errors::GovernorError;
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::KeyExtractor;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::resources::{fleet, telemetry};
use crate::{AppState, auth, ctx, live, reports, scope, users, webhooks};

#[derive(OpenApi)]
#[openapi(
    info(title = "Clutch fleet API", version = "1", description = "Telematics fleet API. Authenticate with \
        `POST /api/v1/auth/login`, then send `Authorization: Bearer <access_token>`; integrations send `X-Api-Key`."),
    modifiers(&Security),
    security(("bearer" = []), ("api_key" = [])),
    components(schemas(crate::error::ErrorBody))
)]
struct ApiDoc;

struct Security;
impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
        let c = openapi.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        c.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Api-Key"))),
        );
    }
}

/// The routes with their OpenAPI document; both come from the same annotations, so the
/// document cannot list a route that is not mounted or miss one that is.
pub fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(users::me))
        .routes(routes!(users::change_password))
        .routes(routes!(users::totp_setup))
        .routes(routes!(users::totp_confirm))
        .routes(routes!(users::list_tenants))
        .routes(routes!(users::get_tenant, users::patch_tenant))
        .routes(routes!(users::list_users, users::create_user))
        .routes(routes!(users::read_user, users::patch_user, users::delete_user))
        .routes(routes!(users::list_keys, users::create_key))
        .routes(routes!(users::delete_key))
        .routes(routes!(fleet::list_devices, fleet::create_device))
        .routes(routes!(fleet::read_device, fleet::patch_device, fleet::delete_device))
        .routes(routes!(fleet::mqtt_credentials))
        .routes(routes!(fleet::list_commands, fleet::send_command))
        .routes(routes!(fleet::read_command))
        .routes(routes!(fleet::list_vehicles, fleet::create_vehicle))
        .routes(routes!(
            fleet::read_vehicle,
            fleet::patch_vehicle,
            fleet::delete_vehicle
        ))
        .routes(routes!(fleet::list_drivers, fleet::create_driver))
        .routes(routes!(fleet::read_driver, fleet::patch_driver, fleet::delete_driver))
        .routes(routes!(fleet::list_assignments, fleet::create_assignment))
        .routes(routes!(fleet::list_groups, fleet::create_group))
        .routes(routes!(fleet::read_group, fleet::patch_group, fleet::delete_group))
        .routes(routes!(fleet::list_unknown))
        .routes(routes!(telemetry::latest))
        .routes(routes!(telemetry::history))
        .routes(routes!(telemetry::list_trips))
        .routes(routes!(telemetry::read_trip))
        .routes(routes!(telemetry::list_stops))
        .routes(routes!(telemetry::list_events))
        .routes(routes!(telemetry::ack_event))
        .routes(routes!(telemetry::list_geofences, telemetry::create_geofence))
        .routes(routes!(
            telemetry::read_geofence,
            telemetry::patch_geofence,
            telemetry::delete_geofence
        ))
        .routes(routes!(telemetry::list_scores))
        .routes(routes!(telemetry::fuel))
        .routes(routes!(telemetry::list_dtcs))
        .routes(routes!(telemetry::due))
        .routes(routes!(telemetry::list_plans, telemetry::create_plan))
        .routes(routes!(
            telemetry::read_plan,
            telemetry::patch_plan,
            telemetry::delete_plan
        ))
        .merge(services_routes())
        .routes(routes!(webhooks::list_webhooks, webhooks::create_webhook))
        .routes(routes!(
            webhooks::read_webhook,
            webhooks::patch_webhook,
            webhooks::delete_webhook
        ))
        .routes(routes!(webhooks::list_deliveries))
        .routes(routes!(reports::daily))
        .routes(routes!(scope::link_driver))
        .routes(routes!(scope::set_owner))
        .routes(routes!(live::ws))
        .routes(routes!(live::sse))
        .routes(routes!(ready))
        .merge(crate::admin::routes())
}

/// Services (issue 9): partners, bookings, recommendations, payments.
fn services_routes() -> OpenApiRouter<AppState> {
    use crate::resources::{bookings as b, partners as p, payments as m};
    OpenApiRouter::new()
        .routes(routes!(p::list_partners, p::create_partner))
        .routes(routes!(p::match_shops))
        .routes(routes!(p::read_partner, p::patch_partner, p::delete_partner))
        .routes(routes!(p::list_partner_transitions, p::transition_partner))
        .routes(routes!(p::list_members, p::add_member))
        .routes(routes!(p::list_services, p::set_service))
        .routes(routes!(p::read_hours, p::put_hours))
        .routes(routes!(b::slots))
        .routes(routes!(p::list_parts, p::set_stock))
        .routes(routes!(p::list_reservations, p::create_reservation))
        .routes(routes!(p::finish_reservation))
        .routes(routes!(p::list_ratings, p::create_rating))
        .routes(routes!(b::list_bookings, b::create_booking))
        .routes(routes!(b::bulk_bookings))
        .routes(routes!(b::read_booking))
        .routes(routes!(b::transition_booking))
        .routes(routes!(b::list_recommendations))
        .routes(routes!(b::read_recommendation))
        .routes(routes!(b::accept_recommendation))
        .routes(routes!(b::dismiss_recommendation))
        .routes(routes!(m::list_payments, m::create_payment))
        .routes(routes!(m::read_payment))
        .routes(routes!(m::authorize_payment))
        .routes(routes!(m::capture_payment))
        .routes(routes!(m::void_payment))
        .routes(routes!(m::settle_payment))
        .routes(routes!(m::gateway_webhook))
        .routes(routes!(m::list_refunds, m::create_refund))
        .routes(routes!(m::list_invoices, m::generate_invoice))
        .routes(routes!(m::read_invoice))
        .routes(routes!(m::list_wallets))
        .routes(routes!(m::top_up))
        .routes(routes!(m::wallet_entries))
        .routes(routes!(m::list_payouts, m::create_payout))
}

fn auth_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(users::login))
        .routes(routes!(users::refresh))
        .routes(routes!(users::logout))
}

/// The OpenAPI document, as served at `/api/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, mut doc) = api_routes().split_for_parts();
    let (_, auth_doc) = auth_routes().split_for_parts();
    doc.merge(auth_doc);
    document_common_responses(&mut doc);
    doc
}

/// The answers every operation can give, documented once here rather than on each.
fn document_common_responses(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let err = |d: &str| {
        ResponseBuilder::new()
            .description(d)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build()
    };
    for (path, item) in doc.paths.paths.iter_mut() {
        let public = path.starts_with("/api/v1/auth/") || path == "/ready";
        let with_id = path.contains("{id}");
        for op in [
            &mut item.get,
            &mut item.post,
            &mut item.patch,
            &mut item.delete,
            &mut item.put,
        ]
        .into_iter()
        .flatten()
        {
            let has_body = op.request_body.is_some();
            let mut add = |code: &str, d: &str| {
                op.responses
                    .responses
                    .entry(code.to_string())
                    .or_insert_with(|| err(d).into());
            };
            add("400", "Malformed request (query or JSON syntax)");
            add("429", "Rate limited");
            if !public {
                add("401", "Missing, invalid or expired credentials");
                add("403", "The caller's role (or API key scope) may not do this");
            }
            // Query parameters are validated too, so any operation can answer 422.
            add("422", "Validation failed (details.fields)");
            if has_body {
                add("413", "Body too large");
                add("415", "Body is not JSON");
            }
            if with_id {
                add("404", "No such object in the caller's tenant");
            }
        }
    }
}

/// Rate-limit key: the credential (so one key or user cannot starve others), else the
/// client address. X-Forwarded-For is not trusted: put a proxy's own limits in front.
#[derive(Debug, Clone)]
struct CallerKey;

impl KeyExtractor for CallerKey {
    type Key = String;
    fn extract<T>(&self, req: &axum::http::Request<T>) -> Result<String, GovernorError> {
        let h = req.headers();
        let cred = h
            .get("x-api-key")
            .or_else(|| h.get(header::AUTHORIZATION))
            .and_then(|v| v.to_str().ok());
        if let Some(c) = cred {
            // A token's subject, not the token, so refreshing does not reset the budget.
            let key = c
                .rsplit(' ')
                .next()
                .and_then(|t| t.split('.').nth(1))
                .and_then(|p| {
                    use base64::Engine as _;
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p).ok()
                })
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|v| v.get("sub").map(|s| format!("u:{s}")))
                .unwrap_or_else(|| format!("c:{}", hex::encode(&auth::sha256(c)[..12])));
            return Ok(key);
        }
        Ok(match req.extensions().get::<ConnectInfo<SocketAddr>>() {
            Some(ConnectInfo(a)) => format!("ip:{}", a.ip()),
            None => "anonymous".into(),
        })
    }
}

fn governor(per_second: u32, burst: u32) -> GovernorLayer<CallerKey, governor::middleware::NoOpMiddleware, Body> {
    let per_ns = 1_000_000_000u64 / u64::from(per_second.max(1));
    let config = GovernorConfigBuilder::default()
        .per_nanosecond(per_ns.max(1))
        .burst_size(burst.max(1))
        .key_extractor(CallerKey)
        .finish()
        .expect("non-zero rate and burst");
    let limiter = config.limiter().clone();
    // Forget idle callers now and then, or the key map only grows.
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                limiter.retain_recent();
                if Arc::strong_count(&limiter) == 1 {
                    return;
                }
            }
        });
    }
    GovernorLayer::new(Arc::new(config))
}

/// The whole HTTP surface of the API: `/api/v1/…`, `/api/openapi.json`, `/docs`, `/ready`.
pub fn router(state: AppState) -> Router {
    let cfg = state.config.clone();
    if cfg.webhooks.worker {
        webhooks::spawn_worker(state.clone());
    }
    let (api, _) = api_routes().split_for_parts();
    let (auth, _) = auth_routes().split_for_parts();
    // Logins are costly (argon2) and the target of guessing: a much tighter budget.
    let auth = auth.layer(governor(1, 10));
    let doc = Arc::new(openapi());
    let api = api
        .merge(auth)
        .layer(middleware::from_fn_with_state(state.clone(), idempotency))
        .layer(governor(cfg.rate_per_second, cfg.rate_burst))
        .route(
            "/api/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move { axum::Json(doc.as_ref().clone()) }
            }),
        )
        .merge(crate::docs::routes())
        .fallback(|| async { StatusCode::NOT_FOUND })
        .method_not_allowed_fallback(|| async { StatusCode::METHOD_NOT_ALLOWED })
        // Every mutating request on any route above, whoever mounted it (api/src/audit.rs).
        .layer(middleware::from_fn_with_state(state.clone(), crate::audit::layer))
        .layer(DefaultBodyLimit::max(cfg.max_body_bytes))
        .layer(middleware::from_fn(etag))
        .layer(middleware::map_response(json_errors))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(CompressionLayer::new().gzip(true))
        .layer(cors(&cfg.cors_origins));
    let request_id = HeaderName::from_static("x-request-id");
    api.with_state(state)
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}

fn cors(origins: &[String]) -> CorsLayer {
    let base = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE, Method::PUT])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_NONE_MATCH,
            HeaderName::from_static("x-api-key"),
            HeaderName::from_static("idempotency-key"),
        ])
        .expose_headers([header::ETAG, HeaderName::from_static("x-request-id")])
        .max_age(Duration::from_secs(600));
    if origins.iter().any(|o| o == "*") {
        base.allow_origin(AllowOrigin::any())
    } else {
        let list: Vec<HeaderValue> = origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
        base.allow_origin(AllowOrigin::list(list))
    }
}

/// Any error response that is not already in the error shape (the framework's 404, 405,
/// 413, the rate limiter's 429) is rewritten into it.
async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    if status.as_u16() < 400 {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return resp;
    }
    let code = match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        s if s.is_client_error() => "bad_request",
        _ => "internal",
    };
    let message = status.canonical_reason().unwrap_or("error").to_lowercase();
    let (mut parts, _) = resp.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let body = json!({ "error": { "code": code, "message": message, "details": null } });
    Response::from_parts(parts, Body::from(body.to_string()))
}

/// Strong validators on GET reads: the hash of the body; `If-None-Match` → 304.
async fn etag(req: Request, next: Next) -> Response {
    let cacheable = req.method() == Method::GET && !req.uri().path().starts_with("/api/v1/stream");
    let inm = req.headers().get(header::IF_NONE_MATCH).cloned();
    let resp = next.run(req).await;
    // A streamed body (an export) has no known size: hashing it would hold it all in
    // memory. A handler that set its own validator (cached answers) has done this already.
    if !cacheable
        || resp.status() != StatusCode::OK
        || axum::body::HttpBody::size_hint(resp.body()).exact().is_none()
        || resp.headers().contains_key(header::ETAG)
    {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    let tag = format!("\"{}\"", hex::encode(&auth::sha256_bytes(&bytes)[..16]));
    let tag_value = HeaderValue::from_str(&tag).expect("hex is a valid header");
    parts
        .headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("private, no-cache"));
    if inm.is_some_and(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|t| t.trim().trim_start_matches("W/") == tag || t.trim() == "*")
        })
    }) {
        parts.headers.insert(header::ETAG, tag_value);
        parts.headers.remove(header::CONTENT_LENGTH);
        return Response::from_parts(parts, Body::empty())
            .map(|b| b)
            .with_status(StatusCode::NOT_MODIFIED);
    }
    parts.headers.insert(header::ETAG, tag_value);
    Response::from_parts(parts, Body::from(bytes))
}

trait WithStatus {
    fn with_status(self, s: StatusCode) -> Self;
}
impl WithStatus for Response {
    fn with_status(mut self, s: StatusCode) -> Self {
        *self.status_mut() = s;
        self
    }
}

/// `Idempotency-Key` on POST: the first 2xx response is stored per caller and key and
/// replayed for a retry with the same body; the same key with another body is a 422.
async fn idempotency(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(key) = req.headers().get("idempotency-key").cloned() else {
        return next.run(req).await;
    };
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let key = match key.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= 255 => k.to_string(),
        _ => {
            return crate::ApiError::validation("Idempotency-Key", "1 to 255 visible ASCII characters").into_response();
        }
    };
    let (parts, body) = req.into_parts();
    // Unauthenticated: let the handler answer 401 as usual.
    let Ok(ctx) = ctx::authenticate(&state, &parts).await else {
        return next.run(Request::from_parts(parts, body)).await;
    };
    let bytes: Bytes = match axum::body::to_bytes(body, state.config.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => return StatusCode::PAYLOAD_TOO_LARGE.into_response(),
    };
    let mut h = parts.method.as_str().as_bytes().to_vec();
    h.extend_from_slice(parts.uri.path().as_bytes());
    h.push(0);
    h.extend_from_slice(&bytes);
    let req_hash = auth::sha256_bytes(&h);
    let principal = ctx.principal();
    let found: Result<Option<StoredResponse>, sqlx::Error> = sqlx::query_as(
        "SELECT request_hash, status, body FROM idempotency_keys WHERE tenant_id = $1 AND principal = $2 AND key = $3 \
         AND created_at > now() - interval '24 hours'",
    )
    .bind(ctx.tenant_id)
    .bind(&principal)
    .bind(&key)
    .fetch_optional(&state.pool)
    .await;
    match found {
        Err(e) => return crate::ApiError::from(e).into_response(),
        Ok(Some((stored_hash, status, body))) => {
            if !auth::ct_eq(&stored_hash, &req_hash) {
                return crate::ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency_mismatch",
                    "this Idempotency-Key was used with a different request",
                )
                .into_response();
            }
            let mut resp = Response::new(Body::from(body));
            *resp.status_mut() = StatusCode::from_u16(status as u16).unwrap_or(StatusCode::OK);
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            resp.headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            return resp;
        }
        Ok(None) => {}
    }
    let resp = next.run(Request::from_parts(parts, Body::from(bytes))).await;
    if !resp.status().is_success() {
        return resp;
    }
    let (rparts, rbody) = resp.into_parts();
    let rbytes = match axum::body::to_bytes(rbody, usize::MAX).await {
        Ok(b) => b,
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    let _ = sqlx::query(
        "INSERT INTO idempotency_keys (tenant_id, principal, key, request_hash, status, body) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id, principal, key) DO UPDATE \
         SET request_hash = excluded.request_hash, status = excluded.status, body = excluded.body, created_at = now() \
         WHERE idempotency_keys.created_at <= now() - interval '24 hours'",
    )
    .bind(ctx.tenant_id)
    .bind(&principal)
    .bind(&key)
    .bind(&req_hash)
    .bind(rparts.status.as_u16() as i16)
    .bind(rbytes.to_vec())
    .execute(&state.pool)
    .await;
    Response::from_parts(rparts, Body::from(rbytes))
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: String,
    /// Per dependency: `ok` or what is wrong.
    pub checks: std::collections::BTreeMap<String, String>,
}

/// Readiness: the store answers, the bus is attached, and any configured broker is up.
#[utoipa::path(get, path = "/ready", tag = "ops", security(()),
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
pub async fn ready(State(state): State<AppState>) -> Response {
    let mut checks = std::collections::BTreeMap::new();
    let store_ok = tokio::time::timeout(Duration::from_secs(2), sqlx::query("SELECT 1").execute(&state.pool)).await;
    checks.insert(
        "store".to_string(),
        match store_ok {
            Ok(Ok(_)) => "ok".to_string(),
            Ok(Err(_)) => "unavailable".to_string(),
            Err(_) => "timeout".to_string(),
        },
    );
    checks.insert(
        "bus".to_string(),
        if state.bus.is_some() {
            "ok".into()
        } else {
            "not attached".into()
        },
    );
    for (name, check) in &state.ready_checks {
        let r = tokio::time::timeout(Duration::from_secs(2), check()).await;
        checks.insert(
            name.clone(),
            match r {
                Ok(Ok(())) => "ok".into(),
                Ok(Err(e)) => e,
                Err(_) => "timeout".into(),
            },
        );
    }
    let ok = checks.values().all(|v| v == "ok");
    let body = Readiness {
        status: if ok { "ready" } else { "not_ready" }.into(),
        checks,
    };
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body)).into_response()
}

/// (request hash, status, body) of a stored idempotent response.
type StoredResponse = (Vec<u8>, i16, Vec<u8>);
