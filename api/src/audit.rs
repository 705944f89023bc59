//! The audit trail: every mutating request (POST, PUT, PATCH, DELETE) on any route, as one
//! append-only row in `audit_log` — who (user or API key, tenant, role), what (method,
//! route template, path parameters, status), when, the request id, the request body and
//! the state before and after, with secrets redacted.
//!
//! [`layer`] is applied once to the whole API router in [`crate::http::router`], so a
//! route added anywhere in that router is audited without doing anything. Two things
//! flow from the handler back to the layer through an [`Audit`] handle that the layer
//! puts into the request's extensions:
//! - the caller, set by the [`crate::Ctx`] extractor as soon as it has authenticated
//!   (so a refused role is recorded with its actor too);
//! - the row's state before the change, which a handler supplies with
//!   [`Audit::before`] (taking an `Audit` argument), or by returning an [`AuditBefore`]
//!   response extension.
//!
//! "After" is the response body when it is JSON (bounded; larger bodies are summarised).
//! The row is written before the response goes out; a failure to write it is logged and
//! counted (`clutch_api_audit_failures_total`) but does not undo the request, which has
//! already happened. Two kinds of request are counted (`clutch_api_audit_skipped_total`)
//! instead of recorded, because they touched nothing and name no one: one refused by the
//! rate limiter before authentication, and an anonymous one for a path no route serves.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::{Body, HttpBody};
use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::{Map, Value, json};

use crate::{AppState, Ctx};

/// Request and response bodies larger than this are not copied into the trail.
pub const MAX_BODY: usize = 64 * 1024;

const REDACTED: &str = "[redacted]";

#[derive(Debug, Default)]
struct Note {
    actor: Option<Ctx>,
    before: Option<Value>,
}

/// What a handler tells the audit layer about its request. Cheap to clone; a handler
/// outside the layer (a test calling it directly) gets a detached one.
#[derive(Debug, Clone, Default)]
pub struct Audit(Arc<Mutex<Note>>);

impl Audit {
    /// Records the state of the object before this request changed it (redacted).
    pub fn before<T: serde::Serialize>(&self, state: &T) {
        if let Ok(v) = serde_json::to_value(state)
            && let Ok(mut n) = self.0.lock()
        {
            n.before = Some(v);
        }
    }

    pub(crate) fn set_actor(&self, ctx: &Ctx) {
        if let Ok(mut n) = self.0.lock() {
            n.actor = Some(ctx.clone());
        }
    }

    fn take(&self) -> Note {
        self.0.lock().map(|mut n| std::mem::take(&mut *n)).unwrap_or_default()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Audit {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts.extensions.get::<Audit>().cloned().unwrap_or_default())
    }
}

/// A response extension carrying the state before the change, for handlers that find it
/// easier to return than to take an [`Audit`] argument.
#[derive(Debug, Clone)]
pub struct AuditBefore(pub Value);

fn is_mutating(m: &Method) -> bool {
    matches!(*m, Method::POST | Method::PUT | Method::PATCH | Method::DELETE)
}

fn json_content(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// The middleware. Reads bodies only when their size is known and small, so a large or
/// streamed body passes through untouched.
pub async fn layer(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if !is_mutating(req.method()) {
        return next.run(req).await;
    }
    let started = Instant::now();
    let audit = Audit::default();
    let (mut parts, body) = req.into_parts();
    parts.extensions.insert(audit.clone());
    let method = parts.method.to_string();
    let route = parts.extensions.get::<MatchedPath>().map(|p| p.as_str().to_string());
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().map(redact_query);
    let path_params: Map<String, Value> = match RawPathParams::from_request_parts(&mut parts, &()).await {
        Ok(p) => p
            .iter()
            .map(|(k, v)| {
                let v = v.parse::<i64>().map(Value::from).unwrap_or_else(|_| Value::from(v));
                (k.to_string(), v)
            })
            .collect(),
        Err(_) => Map::new(),
    };
    let request_id = parts
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let client_ip = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| a.ip().to_string());
    // What identifies the caller, for requests answered before any handler ran.
    let credentials = (parts.headers.contains_key(header::AUTHORIZATION) || parts.headers.contains_key("x-api-key"))
        .then(|| (parts.method.clone(), parts.uri.clone(), parts.headers.clone()));
    let small = body.size_hint().upper().is_some_and(|n| n as usize <= MAX_BODY);
    let (body, request) = if small && json_content(&parts.headers) {
        match axum::body::to_bytes(body, MAX_BODY).await {
            Ok(b) => {
                let v = serde_json::from_slice::<Value>(&b).ok().map(|v| redact(v, &path));
                (Body::from(b), v)
            }
            Err(_) => return axum::response::IntoResponse::into_response(StatusCode::BAD_REQUEST),
        }
    } else {
        let summary = body.size_hint().upper().filter(|n| *n > 0).map(|n| {
            let ct = parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            json!({ "content_type": ct, "bytes": n })
        });
        (body, summary)
    };
    let resp = next.run(Request::from_parts(parts, body)).await;
    let status = resp.status();
    let note = audit.take();
    // A rate-limited request that never reached authentication is not recorded: the
    // limiter exists to shed load, and a row per refused request would put it back.
    if status == StatusCode::TOO_MANY_REQUESTS && note.actor.is_none() {
        metrics_skip("rate_limited");
        return resp;
    }
    // Nor is an anonymous request for a path that no route serves: it touched nothing,
    // names no tenant, and recording it would let anyone write rows for free.
    if route.is_none() && note.actor.is_none() {
        metrics_skip("unrouted");
        return resp;
    }
    let (rparts, rbody) = resp.into_parts();
    let rsmall = rbody.size_hint().upper().is_some_and(|n| n as usize <= MAX_BODY);
    let (rbody, after) = if rsmall && json_content(&rparts.headers) {
        match axum::body::to_bytes(rbody, MAX_BODY).await {
            Ok(b) => {
                let v = serde_json::from_slice::<Value>(&b).ok();
                (Body::from(b), v)
            }
            Err(_) => (Body::empty(), None),
        }
    } else {
        let n = rbody.size_hint().upper();
        let summary = (n != Some(0)).then(|| {
            let ct = rparts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            json!({ "content_type": ct, "bytes": n })
        });
        (rbody, summary)
    };
    let mut actor = note.actor;
    // Logging in and refreshing have no caller yet; the token they issue names one.
    if actor.is_none()
        && let Some(tok) = after
            .as_ref()
            .and_then(|a| a.get("access_token"))
            .and_then(Value::as_str)
        && let Ok(c) = state.keys.verify(tok)
        && let Ok(uid) = c.sub.parse::<i64>()
    {
        let role: Option<String> = sqlx::query_scalar("SELECT role FROM users WHERE id = $1")
            .bind(uid)
            .fetch_optional(&state.pool)
            .await
            .ok()
            .flatten();
        actor = role.and_then(|r| crate::auth::Role::parse(&r)).map(|role| Ctx {
            tenant_id: c.tid,
            user_id: uid,
            role,
            api_key_id: None,
        });
    }
    // An idempotent replay is answered by the middleware without the handler: identify the
    // caller here (one more lookup, only for such requests).
    if actor.is_none()
        && status != StatusCode::UNAUTHORIZED
        && let Some((m, u, h)) = credentials
    {
        let mut probe = axum::http::Request::new(());
        *probe.method_mut() = m;
        *probe.uri_mut() = u;
        *probe.headers_mut() = h;
        let (probe, _) = probe.into_parts();
        actor = crate::ctx::authenticate(&state, &probe).await.ok();
    }
    let before = note
        .before
        .or_else(|| rparts.extensions.get::<AuditBefore>().map(|b| b.0.clone()))
        .map(|v| redact(v, &path));
    let after = after.map(|v| redact(v, &path));
    let r = sqlx::query(
        "INSERT INTO audit_log (tenant_id, user_id, api_key_id, role, method, route, path, path_params, query, \
         status, request_id, duration_ms, client_ip, request, before, after) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
    )
    .bind(actor.as_ref().map(|a| a.tenant_id))
    .bind(actor.as_ref().map(|a| a.user_id))
    .bind(actor.as_ref().and_then(|a| a.api_key_id))
    .bind(actor.as_ref().map(|a| a.role.as_str()))
    .bind(&method)
    .bind(&route)
    .bind(&path)
    .bind(Value::Object(path_params))
    .bind(query)
    .bind(status.as_u16() as i16)
    .bind(request_id)
    .bind(started.elapsed().as_millis().min(i32::MAX as u128) as i32)
    .bind(client_ip)
    .bind(strip_nul(request))
    .bind(strip_nul(before))
    .bind(strip_nul(after))
    .execute(&state.pool)
    .await;
    if let Err(e) = r {
        metrics::counter!("clutch_api_audit_failures_total").increment(1);
        tracing::error!(error = %e, %method, %path, "audit row not written");
    }
    Response::from_parts(rparts, rbody)
}

fn metrics_skip(reason: &'static str) {
    metrics::counter!("clutch_api_audit_skipped_total", "reason" => reason).increment(1);
}

/// PostgreSQL's jsonb cannot hold U+0000; a body that has one is kept with it replaced.
fn strip_nul(v: Option<Value>) -> Option<Value> {
    let v = v?;
    let s = v.to_string();
    if s.contains("\\u0000") {
        serde_json::from_str(&s.replace("\\u0000", "\\ufffd")).ok()
    } else {
        Some(v)
    }
}

/// Whether a key names a secret. Matched on the lower-cased key, by substring, so
/// `new_password`, `mqtt_secret`, `refresh_token`, `totp_secret` and `otpauth_url` are all
/// caught; `code` is a secret only on the TOTP routes (elsewhere it is an error code).
fn secret_key(key: &str, path: &str) -> bool {
    let k = key.to_ascii_lowercase();
    const WORDS: &[&str] = &[
        "password",
        "secret",
        "token",
        "totp",
        "otpauth",
        "api_key",
        "apikey",
        "authorization",
        "signature",
        "private_key",
        "key_hash",
        "_hash",
        "credential",
    ];
    WORDS.iter().any(|w| k.contains(w)) || (k == "code" && path.contains("totp"))
}

/// Whether a string value looks like a credential whatever its key: an API key
/// (`ck_…`), a refresh token (`rt_…`) or a JWT.
fn secret_value(s: &str) -> bool {
    s.starts_with("ck_") && s.len() > 20
        || s.starts_with("rt_") && s.len() > 20
        || s.starts_with("eyJ") && s.matches('.').count() == 2
}

/// Redacts secrets anywhere in a JSON document.
pub fn redact(v: Value, path: &str) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| {
                    if secret_key(&k, path) && !v.is_null() {
                        (k, Value::from(REDACTED))
                    } else {
                        let v = redact(v, path);
                        (k, v)
                    }
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(|v| redact(v, path)).collect()),
        Value::String(s) if secret_value(&s) => Value::from(REDACTED),
        v => v,
    }
}

/// The query string with the values of secret parameters replaced.
fn redact_query(q: &str) -> String {
    q.split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if secret_key(k, "") || secret_value(v) => format!("{k}={REDACTED}"),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_everywhere() {
        let v = json!({
            "email": "a@b.example", "password": "hunter22", "nested": [{"mqtt_secret": "x", "secret": "y"}],
            "access_token": "eyJhbGciOi.eyJzdWIi.sig", "refresh_token": "rt_abc", "otpauth_url": "otpauth://x",
            "note": "ck_0123456789abcdef0123456789", "jwt": "eyJa.eyJb.c", "name": "kept", "error": {"code": "not_found"}
        });
        let r = redact(v, "/api/v1/users");
        let s = r.to_string();
        for secret in ["hunter22", "\"x\"", "\"y\"", "rt_abc", "otpauth://", "ck_0123", "eyJ"] {
            assert!(!s.contains(secret), "{secret} leaked: {s}");
        }
        assert_eq!(r["name"], "kept");
        assert_eq!(r["email"], "a@b.example");
        assert_eq!(r["error"]["code"], "not_found");
        let t = redact(json!({"code": "123456"}), "/api/v1/me/totp/confirm");
        assert_eq!(t["code"], REDACTED);
        assert_eq!(
            redact_query("access_token=abc&limit=5"),
            format!("access_token={REDACTED}&limit=5")
        );
    }
}
