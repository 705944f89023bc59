//! `/docs`: interactive API documentation that works offline. RapiDoc (MIT, vendored from
//! its npm package under `api/assets/rapidoc/`) is compiled into the binary; a strict CSP
//! keeps the page from reaching any other origin (no CDN, no web fonts).

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::AppState;

const RAPIDOC_JS: &[u8] = include_bytes!("../assets/rapidoc/rapidoc-min.js");

const PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Clutch API</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<script type="module" src="/docs/rapidoc-min.js"></script></head>
<body><rapi-doc spec-url="/api/openapi.json" render-style="read" show-header="false" allow-try="true"
  regular-font="system-ui, sans-serif" mono-font="monospace" allow-authentication="true"></rapi-doc></body></html>
"#;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
    connect-src 'self'; img-src 'self' data:; font-src 'self'";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/docs",
            get(|| async {
                (
                    [
                        (
                            header::CONTENT_TYPE,
                            HeaderValue::from_static("text/html; charset=utf-8"),
                        ),
                        (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)),
                    ],
                    PAGE,
                )
                    .into_response()
            }),
        )
        .route(
            "/docs/rapidoc-min.js",
            get(|| async {
                (
                    [
                        (
                            header::CONTENT_TYPE,
                            HeaderValue::from_static("text/javascript; charset=utf-8"),
                        ),
                        (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=86400")),
                    ],
                    RAPIDOC_JS,
                )
                    .into_response()
            }),
        )
}
