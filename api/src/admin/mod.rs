//! `/api/v1/admin/…` (issue 9, items 6 and 7) and drivers' tracking consent: the audit
//! trail's reader, CSV import and bulk assignment, streamed data export, system health,
//! and privacy (a driver's data export and erasure through `services::privacy`).
//!
//! # Layout
//! - [`audit_log`]: `GET /admin/audit`, filtered and cursor-paginated, tenant-scoped.
//! - [`import`]: CSV import of devices and vehicles with per-row errors; bulk driver →
//!   vehicle and vehicle → group assignment.
//! - [`export`]: positions, events and trips as CSV or NDJSON, streamed from a database
//!   cursor.
//! - [`health`]: ingest rate, connected devices, bus and writer lag, database size.
//! - [`privacy`]: export and erasure of a driver, consent flags.

use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::ApiError;

pub mod audit_log;
pub mod export;
pub mod health;
pub mod import;
pub mod privacy;

pub use health::SystemProbe;

/// The routes of this module, merged into the API router by [`crate::http::api_routes`].
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(audit_log::list))
        .routes(routes!(import::devices))
        .routes(routes!(import::vehicles))
        .routes(routes!(import::assign_drivers))
        .routes(routes!(import::group_members))
        .routes(routes!(export::export))
        .routes(routes!(health::health))
        .routes(routes!(privacy::export_driver))
        .routes(routes!(privacy::erase_driver))
        .routes(routes!(
            privacy::get_consent,
            privacy::put_consent,
            privacy::delete_consent
        ))
}

/// A service-layer refusal in the API's error shape.
pub(crate) fn service_error(e: services::ServiceError) -> ApiError {
    match e {
        services::ServiceError::Database(e) => ApiError::from(e),
        services::ServiceError::NotFound { .. } => ApiError::not_found(),
        e => {
            let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
            ApiError::new(status, e.code(), e.to_string())
        }
    }
}
