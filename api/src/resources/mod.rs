//! Resource handlers and the list conventions they share (cursor pagination, sorting).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::error::{ApiError, ApiResult};

/// `format!` for SQL built from fixed fragments (never from input: values are bound).
#[macro_export]
macro_rules! sqlf {
    ($($t:tt)*) => { sqlx::AssertSqlSafe(format!($($t)*)) };
}

pub mod fleet;
pub mod telemetry;
// Services (issue 9).
pub mod bookings;
pub mod partners;
pub mod payments;

/// Common list parameters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page size, 1..=500 (larger values are capped).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// `id` (default, oldest first) or `-id` (newest first).
    pub sort: Option<String>,
    /// Case-insensitive text filter on names (and email, identifier, VIN, plate).
    pub q: Option<String>,
}

/// One page of a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

impl ListQuery {
    /// (cursor id, descending, page size). Handlers fetch `limit + 1` rows so [`page`]
    /// can tell whether there is a next page.
    pub fn keyset(&self, state: &AppState) -> ApiResult<(Option<i64>, bool, i64)> {
        let limit = match self.limit {
            None => 50,
            Some(n) if n < 1 => return Err(ApiError::validation("limit", "must be at least 1")),
            Some(n) => n.min(state.config.max_page_size),
        };
        let desc = match self.sort.as_deref() {
            None | Some("id") | Some("created_at") => false,
            Some("-id") | Some("-created_at") => true,
            Some(_) => return Err(ApiError::validation("sort", "one of id, -id, created_at, -created_at")),
        };
        let cursor = match &self.cursor {
            None => None,
            Some(c) => {
                Some(decode_cursor(c).ok_or_else(|| ApiError::validation("cursor", "not a cursor from this API"))?)
            }
        };
        if self.q.as_ref().is_some_and(|q| q.len() > 200) {
            return Err(ApiError::validation("q", "at most 200 bytes"));
        }
        Ok((cursor, desc, limit))
    }
}

fn decode_cursor(c: &str) -> Option<i64> {
    let bytes = URL_SAFE_NO_PAD.decode(c).ok()?;
    std::str::from_utf8(&bytes).ok()?.strip_prefix("id:")?.parse().ok()
}

pub fn encode_cursor(id: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("id:{id}"))
}

/// Trims the extra row fetched past the page and turns it into a cursor.
pub fn page<T>(mut rows: Vec<T>, q: &ListQuery, state: &AppState, id: impl Fn(&T) -> i64) -> ApiResult<Page<T>> {
    let (_, _, limit) = q.keyset(state)?;
    let next_cursor = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|r| encode_cursor(id(r)))
    } else {
        None
    };
    Ok(Page {
        items: rows,
        next_cursor,
    })
}

/// Names: present, not absurdly long.
pub fn check_name(field: &str, s: &str) -> ApiResult<()> {
    if s.trim().is_empty() {
        return Err(ApiError::validation(field, "must not be empty"));
    }
    if s.len() > 200 {
        return Err(ApiError::validation(field, "at most 200 bytes"));
    }
    Ok(())
}

/// Attributes are free-form but must be an object and bounded.
pub fn check_attributes(v: &serde_json::Value) -> ApiResult<()> {
    if !v.is_object() {
        return Err(ApiError::validation("attributes", "must be an object"));
    }
    check_json("attributes", v)
}

/// JSON the store keeps as jsonb must read back: PostgreSQL prints numbers exactly, and a
/// value near the f64 limit can come back out of range for the reader. Also bounds depth.
pub fn check_json(field: &str, v: &serde_json::Value) -> ApiResult<()> {
    fn walk(v: &serde_json::Value, depth: usize) -> bool {
        if depth > 32 {
            return false;
        }
        match v {
            serde_json::Value::Number(n) => n.as_f64().is_some_and(|f| f.abs() < 1e300),
            serde_json::Value::Array(a) => a.iter().all(|x| walk(x, depth + 1)),
            serde_json::Value::Object(o) => o.values().all(|x| walk(x, depth + 1)),
            _ => true,
        }
    }
    if walk(v, 0) {
        Ok(())
    } else {
        Err(ApiError::validation(
            field,
            "numbers must be below 1e300 in magnitude and nesting at most 32 deep",
        ))
    }
}

/// `(sql fragment for id comparison, order)` for a keyset list.
pub fn order(desc: bool) -> (&'static str, &'static str) {
    if desc { ("<", "DESC") } else { (">", "ASC") }
}
