//! `dashboard`: the B2B fleet dashboard's web assets (TypeScript + Vite + Leaflet, sources
//! in `dashboard/web`, built into `dashboard/dist`), embedded in the binary and served at
//! `/` by `clutch serve`, so there is nothing to install or deploy beside the binary.
//!
//! The built assets are committed: building them needs Node, which a Rust build should
//! not. `.ci/run` rebuilds them from the sources with the locked npm packages and fails if
//! they differ from what is committed.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "dist/"]
struct Assets;

/// Tiles come from any HTTPS tile server (configurable in the browser); everything else
/// from this origin. Leaflet positions elements with inline styles, hence `style-src
/// 'unsafe-inline'`; no inline scripts are allowed.
const CSP: &str = "default-src 'self'; img-src 'self' data: https: http:; style-src 'self' 'unsafe-inline'; \
                   connect-src 'self' ws: wss:; script-src 'self'; frame-ancestors 'none'; base-uri 'none'";

/// `GET /` and `GET /assets/{file}`.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|h: HeaderMap| async move { serve("index.html", &h) }))
        .route(
            "/assets/{*file}",
            get(|Path(f): Path<String>, h: HeaderMap| async move { serve(&format!("assets/{f}"), &h) }),
        )
}

fn serve(path: &str, req: &HeaderMap) -> Response {
    let Some(file) = Assets::get(path) else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    let etag = format!("\"{}\"", hex::encode(&file.metadata.sha256_hash()[..16]));
    let mut headers = HeaderMap::new();
    headers.insert(
        header::ETAG,
        HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"0\"")),
    );
    // Fixed file names: revalidate every time, cheap with the ETag.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if path == "index.html" {
        headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    }
    if req.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    let mime = file.metadata.mimetype();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(mime).unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    (StatusCode::OK, headers, file.data.into_owned()).into_response()
}
