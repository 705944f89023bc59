//! The caller: who they are, which tenant, which role. The one place tenancy and
//! permissions are decided; handlers receive a [`Ctx`] and every query takes its
//! `tenant_id`, so there is no code path that reads another tenant's rows.

use axum::extract::{FromRequestParts, MatchedPath};
use axum::http::Method;
use axum::http::request::Parts;
use chrono::{DateTime, Utc};

use crate::AppState;
use crate::auth::{self, Role};
use crate::error::ApiError;
use crate::perm;

#[derive(Debug, Clone)]
pub struct Ctx {
    pub tenant_id: i64,
    pub user_id: i64,
    pub role: Role,
    /// Set when the caller used an API key (its id).
    pub api_key_id: Option<i64>,
}

impl Ctx {
    /// Identity for idempotency keys and rate limits.
    pub fn principal(&self) -> String {
        match self.api_key_id {
            Some(k) => format!("k:{k}"),
            None => format!("u:{}", self.user_id),
        }
    }
}

/// Where the credential came from, before it is checked.
enum Credential {
    Bearer(String),
    ApiKey(String),
}

fn credential(parts: &Parts) -> Option<Credential> {
    // A bearer token wins over an API key when a client sends both.
    if let Some(v) = parts.headers.get("authorization").and_then(|v| v.to_str().ok()) {
        let (scheme, token) = v.split_once(' ')?;
        if scheme.eq_ignore_ascii_case("bearer") {
            return Some(Credential::Bearer(token.trim().to_string()));
        }
        return None;
    }
    if let Some(v) = parts.headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(Credential::ApiKey(v.trim().to_string()));
    }
    // Browsers cannot set headers on a WebSocket or EventSource: the live stream takes the
    // access token as a query parameter instead (and only there).
    if parts.uri.path().starts_with("/api/v1/stream") {
        let q = parts.uri.query()?;
        for pair in q.split('&') {
            if let Some(t) = pair.strip_prefix("access_token=") {
                return Some(Credential::Bearer(t.to_string()));
            }
        }
    }
    None
}

#[derive(sqlx::FromRow)]
struct Principal {
    id: i64,
    tenant_id: i64,
    role: String,
}

/// Checks the credential and the user it stands for (which must still exist, be enabled
/// and, for a token, still belong to the tenant the token names).
pub async fn authenticate(state: &AppState, parts: &Parts) -> Result<Ctx, ApiError> {
    let cred = credential(parts).ok_or_else(|| ApiError::unauthorized("missing credentials"))?;
    let (row, api_key_id, write_scope) = match cred {
        Credential::Bearer(token) => {
            let claims = state.keys.verify(&token)?;
            let uid: i64 = claims
                .sub
                .parse()
                .map_err(|_| ApiError::unauthorized("invalid access token"))?;
            let row: Option<Principal> = sqlx::query_as(
                "SELECT id, tenant_id, role FROM users WHERE id = $1 AND tenant_id = $2 AND NOT disabled",
            )
            .bind(uid)
            .bind(claims.tid)
            .fetch_optional(&state.pool)
            .await?;
            (row, None, true)
        }
        Credential::ApiKey(key) => {
            let prefix = auth::api_key_prefix(&key).ok_or_else(|| ApiError::unauthorized("invalid API key"))?;
            let found: Option<KeyRow> = sqlx::query_as(
                "SELECT k.id, k.key_hash, k.scopes, u.id, u.tenant_id, u.role, k.last_used_at FROM api_keys k \
                 JOIN users u ON u.id = k.user_id \
                 WHERE k.prefix = $1 AND k.revoked_at IS NULL AND NOT u.disabled \
                   AND (k.expires_at IS NULL OR k.expires_at > now())",
            )
            .bind(prefix)
            .fetch_optional(&state.pool)
            .await?;
            match found {
                Some((kid, hash, scopes, uid, tid, role, last_used)) if auth::ct_eq(&hash, &auth::sha256(&key)) => {
                    // To the minute: an integration polling many times a second would
                    // otherwise write a new row version (and WAL) per request. Best
                    // effort; a lost update of last_used_at harms nothing.
                    let now = Utc::now();
                    if last_used.is_none_or(|t| now - t >= chrono::TimeDelta::seconds(LAST_USED_RESOLUTION_S)) {
                        let _ = sqlx::query("UPDATE api_keys SET last_used_at = $2 WHERE id = $1")
                            .bind(kid)
                            .bind(now)
                            .execute(&state.pool)
                            .await;
                    }
                    let write = scopes.iter().any(|s| s == "write");
                    (
                        Some(Principal {
                            id: uid,
                            tenant_id: tid,
                            role,
                        }),
                        Some(kid),
                        write,
                    )
                }
                _ => return Err(ApiError::unauthorized("invalid API key")),
            }
        }
    };
    let row = row.ok_or_else(|| ApiError::unauthorized("unknown or disabled user"))?;
    let role = Role::parse(&row.role).ok_or_else(ApiError::internal)?;
    if !write_scope && parts.method != Method::GET && parts.method != Method::HEAD {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "insufficient_scope",
            "this API key is read-only",
        ));
    }
    Ok(Ctx {
        tenant_id: row.tenant_id,
        user_id: row.id,
        role,
        api_key_id,
    })
}

impl FromRequestParts<AppState> for Ctx {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Ctx, ApiError> {
        if let Some(ctx) = parts.extensions.get::<Ctx>() {
            return Ok(ctx.clone());
        }
        let ctx = authenticate(state, parts).await?;
        // Tell the audit layer who this is, before the role check, so refusals name the caller.
        if let Some(a) = parts.extensions.get::<crate::audit::Audit>() {
            a.set_actor(&ctx);
        }
        // Deny by default: a route missing from the table is refused to everyone.
        let path = parts
            .extensions
            .get::<MatchedPath>()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default();
        let method = if parts.method == Method::HEAD {
            Method::GET
        } else {
            parts.method.clone()
        };
        if !perm::allowed(&method, &path, ctx.role) {
            return Err(ApiError::forbidden());
        }
        parts.extensions.insert(ctx.clone());
        Ok(ctx)
    }
}

/// (key id, key hash, scopes, user id, tenant id, role).
/// How stale an API key's `last_used_at` may be.
const LAST_USED_RESOLUTION_S: i64 = 60;

type KeyRow = (i64, Vec<u8>, Vec<String>, i64, i64, String, Option<DateTime<Utc>>);
