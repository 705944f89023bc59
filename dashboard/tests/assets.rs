//! The embedded assets are served with the right types, caching and security headers.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use tower::ServiceExt;

async fn get(path: &str, etag: Option<&str>) -> axum::response::Response {
    let mut req = Request::get(path);
    if let Some(e) = etag {
        req = req.header(header::IF_NONE_MATCH, e);
    }
    dashboard::router::<()>()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn index_and_assets_are_served_with_security_headers() {
    let r = get("/", None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let csp = r.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    let etag = r.headers()[header::ETAG].to_str().unwrap().to_owned();
    let body = String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert!(body.contains("/assets/app.js"), "index references the bundle: {body}");

    let js = get("/assets/app.js", None).await;
    assert_eq!(js.status(), StatusCode::OK);
    assert!(
        js.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .contains("javascript")
    );
    assert_eq!(get("/assets/index.css", None).await.status(), StatusCode::OK);

    assert_eq!(get("/", Some(&etag)).await.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(get("/assets/nope.js", None).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(get("/assets/../Cargo.toml", None).await.status(), StatusCode::NOT_FOUND);
}
