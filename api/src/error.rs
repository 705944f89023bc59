//! The one error shape: `{ "error": { "code", "message", "details" } }`.
//!
//! Client mistakes map to 4xx with a stable `code`; a database or internal failure is a
//! 500 whose message says nothing about the cause (that goes to the log).

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use utoipa::ToSchema;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Value,
}

/// The error body, for the OpenAPI document.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorInner,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorInner {
    /// Stable machine-readable code (`not_found`, `validation`, `unauthorized`, …).
    pub code: String,
    pub message: String,
    /// Per-field problems for validation errors, else null.
    pub details: Value,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Value::Null,
        }
    }
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such resource")
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    pub fn forbidden() -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", "your role may not do this")
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }
    /// 422 with one entry per offending field.
    pub fn validation(field: &str, problem: impl Into<String>) -> Self {
        let problem = problem.into();
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "validation",
            message: format!("{field}: {problem}"),
            details: json!({ "fields": { field: problem } }),
        }
    }
    pub fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code, "message": self.message, "details": self.details } });
        let mut resp = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert("www-authenticate", axum::http::HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e {
            // Constraint violations are the client's doing (duplicate VIN, IMEI, name).
            match db.code().as_deref() {
                Some("23505") => return ApiError::conflict("already exists (a unique field is taken)"),
                Some("23503") => return ApiError::validation("reference", "refers to something that does not exist"),
                Some("23514") => return ApiError::validation("body", "violates a constraint"),
                // NUL in text or in a JSON string: PostgreSQL cannot store it.
                Some("22P05") | Some("22021") => {
                    return ApiError::validation("body", "contains a NUL character, which cannot be stored");
                }
                Some("22001") => return ApiError::validation("body", "a value is too long"),
                Some("22P02") | Some("22003") | Some("22007") | Some("22008") => {
                    return ApiError::bad_request("a value is out of range");
                }
                _ => {}
            }
        }
        tracing::error!(error = %e, "database error");
        ApiError::internal()
    }
}

impl From<store::StoreError> for ApiError {
    fn from(e: store::StoreError) -> Self {
        match e {
            store::StoreError::Invalid(m) => ApiError::bad_request(m),
            e => {
                tracing::error!(error = %e, "store error");
                ApiError::internal()
            }
        }
    }
}

/// `Json` whose rejections use the error shape: 413 too big, 415 not JSON, 400 broken
/// syntax, 422 a field of the wrong type or an unknown field.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rej) => Err(json_rejection(rej)),
        }
    }
}

fn json_rejection(rej: JsonRejection) -> ApiError {
    let status = rej.status();
    let text = rej.body_text();
    match rej {
        JsonRejection::JsonDataError(_) => {
            let mut e = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "validation", text.clone());
            e.details = json!({ "body": text });
            e
        }
        JsonRejection::JsonSyntaxError(_) => ApiError::new(StatusCode::BAD_REQUEST, "bad_json", text),
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", text)
        }
        _ if status == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", "request body too large")
        }
        _ => ApiError::new(StatusCode::BAD_REQUEST, "bad_request", text),
    }
}

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        Json(self.0).into_response()
    }
}

/// `Query` with the error shape (400 with the parameter problem).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(rej) => {
                let text = rej.body_text();
                let mut e = ApiError::new(StatusCode::BAD_REQUEST, "bad_query", text.clone());
                if let QueryRejection::FailedToDeserializeQueryString(_) = rej {
                    e.details = json!({ "query": text });
                }
                Err(e)
            }
        }
    }
}

/// `Path` with the error shape: an id that is not a number is a 404 (no such resource),
/// not a 400, so probing with junk ids learns nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(ApiPath(v)),
            Err(PathRejection::FailedToDeserializePathParams(_)) => Err(ApiError::not_found()),
            Err(rej) => Err(ApiError::bad_request(rej.body_text())),
        }
    }
}
