//! The HTTP port: health and Prometheus metrics now; the API issue mounts the rest.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;

#[derive(Debug, Clone)]
pub struct HttpState {
    pub pool: PgPool,
    pub metrics: PrometheusHandle,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(render_metrics))
        .with_state(state)
}

/// 200 when PostgreSQL answers; devices are only acked through it, so without it the
/// server is not healthy whatever else runs.
async fn health(State(s): State<HttpState>) -> (StatusCode, &'static str) {
    match sqlx::query("SELECT 1").execute(&s.pool).await {
        Ok(_) => (StatusCode::OK, "ok\n"),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n"),
    }
}

async fn render_metrics(State(s): State<HttpState>) -> ([(&'static str, &'static str); 1], String) {
    ([("content-type", "text/plain; version=0.0.4")], s.metrics.render())
}
