//! Reading the audit trail: the caller's tenant only, newest first, keyset-paginated.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ApiQuery, ApiResult, ErrorBody};
use crate::resources::{Page, encode_cursor};
use crate::{AppState, Ctx, sqlf};

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub user_id: Option<i64>,
    pub api_key_id: Option<i64>,
    pub role: Option<String>,
    pub method: String,
    /// Route template, e.g. `/api/v1/devices/{id}`.
    pub route: Option<String>,
    pub path: String,
    pub path_params: Value,
    pub query: Option<String>,
    pub status: i16,
    pub request_id: Option<String>,
    pub duration_ms: i32,
    pub client_ip: Option<String>,
    /// The request body (JSON, secrets redacted) or a summary of a non-JSON one.
    pub request: Option<Value>,
    /// The object before the change, where the handler supplies it.
    pub before: Option<Value>,
    /// The response body (JSON, secrets redacted).
    pub after: Option<Value>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// `u:<user id>`, `k:<API key id>` or a bare user id.
    pub actor: Option<String>,
    /// Route template (`/api/v1/devices/{id}`), or a prefix of it ending in `*`.
    pub route: Option<String>,
    pub method: Option<String>,
    pub status: Option<i16>,
    /// Inclusive lower bound on the time.
    pub from: Option<DateTime<Utc>>,
    /// Exclusive upper bound on the time.
    pub to: Option<DateTime<Utc>>,
    /// Page size, 1..=500.
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

const COLS: &str = "id, at, user_id, api_key_id, role, method, route, path, path_params, query, status, \
    request_id, duration_ms, client_ip, request, before, after";

/// The audit trail of the caller's tenant, newest first.
#[utoipa::path(get, path = "/api/v1/admin/audit", tag = "admin", params(AuditQuery),
    responses((status = 200, body = Page<AuditEntry>), (status = 422, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Json<Page<AuditEntry>>> {
    let limit = match q.limit {
        None => 50,
        Some(n) if n < 1 => return Err(ApiError::validation("limit", "must be at least 1")),
        Some(n) => n.min(state.config.max_page_size),
    };
    let cursor = match &q.cursor {
        None => None,
        Some(c) => Some(
            crate::resources::ListQuery {
                cursor: Some(c.clone()),
                ..Default::default()
            }
            .keyset(&state)?
            .0
            .ok_or_else(|| ApiError::validation("cursor", "not a cursor from this API"))?,
        ),
    };
    let (user, key) = match q.actor.as_deref() {
        None => (None, None),
        Some(a) => {
            let bad = || ApiError::validation("actor", "u:<user id>, k:<API key id> or a user id");
            if let Some(k) = a.strip_prefix("k:") {
                (None, Some(k.parse::<i64>().map_err(|_| bad())?))
            } else {
                (
                    Some(a.strip_prefix("u:").unwrap_or(a).parse::<i64>().map_err(|_| bad())?),
                    None,
                )
            }
        }
    };
    if let (Some(f), Some(t)) = (q.from, q.to)
        && f >= t
    {
        return Err(ApiError::validation("to", "must be after from"));
    }
    let (route_exact, route_prefix) = match q.route.as_deref() {
        Some(r) if r.len() > 300 => return Err(ApiError::validation("route", "at most 300 bytes")),
        Some(r) => match r.strip_suffix('*') {
            // LIKE metacharacters in a template are literal.
            Some(p) => (
                None,
                Some(p.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_") + "%"),
            ),
            None => (Some(r.to_string()), None),
        },
        None => (None, None),
    };
    let rows: Vec<AuditEntry> = sqlx::query_as(sqlf!(
        "SELECT {COLS} FROM audit_log WHERE tenant_id = $1 AND ($2::int8 IS NULL OR id < $2) \
         AND ($3::int8 IS NULL OR user_id = $3) AND ($4::int8 IS NULL OR api_key_id = $4) \
         AND ($5::text IS NULL OR route = $5) AND ($6::text IS NULL OR route LIKE $6) \
         AND ($7::text IS NULL OR method = upper($7)) AND ($8::int2 IS NULL OR status = $8) \
         AND ($9::timestamptz IS NULL OR at >= $9) AND ($10::timestamptz IS NULL OR at < $10) \
         ORDER BY id DESC LIMIT $11"
    ))
    .bind(ctx.tenant_id)
    .bind(cursor)
    .bind(user)
    .bind(key)
    .bind(route_exact)
    .bind(route_prefix)
    .bind(&q.method)
    .bind(q.status)
    .bind(q.from)
    .bind(q.to)
    .bind(limit + 1)
    .fetch_all(&state.pool)
    .await?;
    let mut items = rows;
    let next_cursor = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(|e| encode_cursor(e.id))
    } else {
        None
    };
    Ok(Json(Page { items, next_cursor }))
}
