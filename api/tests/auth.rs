//! Authentication, tokens, API keys, TOTP, lockout, and the HTTP conventions.

mod common;

use api::auth::Role;
use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use serde_json::json;

#[tokio::test]
async fn login_refresh_rotation_and_reuse_revokes_family() {
    let app = app().await;
    let t = app.tenant("Acme").await;
    app.user(t, "ann@acme.example.com", Role::Admin).await;

    let bad = app
        .call(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(json!({"email": "ann@acme.example.com", "password": "nope-nope-nope"})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    assert_eq!(bad.json["error"]["code"], "unauthorized");
    let unknown = app
        .call(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(json!({"email": "who@x.example.com", "password": PASSWORD})),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    // Same message for an unknown email and a wrong password.
    assert_eq!(unknown.json["error"]["message"], bad.json["error"]["message"]);

    let r = app
        .call(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(json!({"email": "ANN@acme.example.com", "password": PASSWORD})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["expires_in"], 900);
    let access = r.json["access_token"].as_str().unwrap().to_string();
    let rt1 = r.json["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(
        app.call("GET", "/api/v1/me", Some(&access), None).await.status,
        StatusCode::OK
    );

    let r2 = app
        .call(
            "POST",
            "/api/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": rt1})),
        )
        .await;
    assert_eq!(r2.status, StatusCode::OK, "{}", r2.text);
    let rt2 = r2.json["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(rt1, rt2);

    // rt1 was rotated: presenting it again is a replay, which revokes rt2 too.
    let replay = app
        .call(
            "POST",
            "/api/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": rt1})),
        )
        .await;
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED);
    let after = app
        .call(
            "POST",
            "/api/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": rt2})),
        )
        .await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED, "the whole family is revoked");

    // Logout revokes a fresh login's family.
    let r = app
        .call(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(json!({"email": "ann@acme.example.com", "password": PASSWORD})),
        )
        .await;
    let rt = r.json["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(
        app.call("POST", "/api/v1/auth/logout", None, Some(json!({"refresh_token": rt})))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.call("POST", "/api/v1/auth/refresh", None, Some(json!({"refresh_token": rt})))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
}

fn forge(header: serde_json::Value, claims: serde_json::Value, sig: &str) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        sig
    )
}

#[tokio::test]
async fn tokens_with_alg_none_wrong_key_or_expired_are_refused() {
    let app = app().await;
    let t = app.tenant("Acme").await;
    let uid = app.user(t, "ann@acme.example.com", Role::Admin).await;
    let now = chrono::Utc::now().timestamp();
    let claims = json!({"sub": uid.to_string(), "tid": t, "iat": now, "exp": now + 600, "typ": "access"});

    let none = forge(json!({"alg": "none", "typ": "JWT"}), claims.clone(), "");
    let wrong_key = api::auth::JwtKeys::new(b"another-secret-another-secret-0123456789").issue(
        uid,
        t,
        chrono::Duration::seconds(600),
    );
    let expired = api::auth::JwtKeys::new(SECRET).issue(uid, t, chrono::Duration::seconds(-120));
    let hs512 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .unwrap();
    // The right key but the wrong tenant in the claims: the user row does not match.
    let other_tenant = api::auth::JwtKeys::new(SECRET).issue(uid, t + 1000, chrono::Duration::seconds(600));
    for (name, tok) in [
        ("alg none", none),
        ("wrong key", wrong_key),
        ("expired", expired),
        ("hs512", hs512),
        ("tenant mismatch", other_tenant),
        ("garbage", "abc.def.ghi".into()),
    ] {
        let r = app.call("GET", "/api/v1/me", Some(&tok), None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{name}: {}", r.text);
        assert!(r.headers.contains_key("www-authenticate"));
    }
    let good = api::auth::JwtKeys::new(SECRET).issue(uid, t, chrono::Duration::seconds(600));
    assert_eq!(
        app.call("GET", "/api/v1/me", Some(&good), None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.call("GET", "/api/v1/me", None, None).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn repeated_failures_lock_the_account() {
    let app = app().await;
    let t = app.tenant("Acme").await;
    app.user(t, "ann@acme.example.com", Role::Admin).await;
    for _ in 0..5 {
        let r = app
            .call(
                "POST",
                "/api/v1/auth/login",
                None,
                Some(json!({"email": "ann@acme.example.com", "password": "wrong-wrong-wrong"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    // Even the right password is refused while locked.
    let r = app
        .call(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(json!({"email": "ann@acme.example.com", "password": PASSWORD})),
        )
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text);
    assert_eq!(r.json["error"]["code"], "locked");
    assert!(r.json["error"]["details"]["retry_after_s"].as_i64().unwrap() >= 1);
}

#[tokio::test]
async fn login_endpoint_is_rate_limited_per_client() {
    let app = app().await;
    let mut limited = false;
    for _ in 0..30 {
        let r = app
            .call(
                "POST",
                "/api/v1/auth/login",
                None,
                Some(json!({"email": "x@y.example.com", "password": "whatever-long"})),
            )
            .await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(r.json["error"]["code"], "rate_limited");
            limited = true;
            break;
        }
    }
    assert!(limited, "30 rapid logins from one client must hit the limit");
}

#[tokio::test]
async fn api_keys_are_scoped_hashed_and_shown_once() {
    let app = app().await;
    let (_, admin) = app.tenant_user("Acme", Role::Admin).await;
    let r = app
        .call(
            "POST",
            "/api/v1/api-keys",
            Some(&admin),
            Some(json!({"name": "erp", "scopes": ["read"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let key = r.json["secret"].as_str().unwrap().to_string();
    let id = r.json["id"].as_i64().unwrap();
    assert!(key.starts_with("ck_"));
    let stored: Vec<u8> = sqlx::query_scalar("SELECT key_hash FROM api_keys WHERE id = $1")
        .bind(id)
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_ne!(stored, key.as_bytes(), "stored hashed");

    assert_eq!(
        app.call("GET", "/api/v1/devices", Some(&key), None).await.status,
        StatusCode::OK
    );
    // last_used_at: set on use, then written at most once a minute.
    let last_used = || async {
        sqlx::query_scalar::<_, Option<chrono::DateTime<chrono::Utc>>>(
            "SELECT last_used_at FROM api_keys WHERE id = $1",
        )
        .bind(id)
        .fetch_one(app.pool())
        .await
        .unwrap()
    };
    let first = last_used().await.expect("set on first use");
    app.call("GET", "/api/v1/devices", Some(&key), None).await;
    assert_eq!(last_used().await, Some(first), "not rewritten within the minute");
    sqlx::query("UPDATE api_keys SET last_used_at = now() - interval '2 minutes' WHERE id = $1")
        .bind(id)
        .execute(app.pool())
        .await
        .unwrap();
    app.call("GET", "/api/v1/devices", Some(&key), None).await;
    assert!(last_used().await.unwrap() >= first, "moved on after a minute");
    let w = app
        .call("POST", "/api/v1/vehicles", Some(&key), Some(json!({"name": "van"})))
        .await;
    assert_eq!(w.status, StatusCode::FORBIDDEN, "read-only key cannot write");
    let list = app.call("GET", "/api/v1/api-keys", Some(&admin), None).await;
    assert!(
        !list.text.contains(&key) && !list.text.contains("key_hash"),
        "{}",
        list.text
    );
    let bad = format!("{}x", &key[..key.len() - 1]);
    assert_eq!(
        app.call("GET", "/api/v1/devices", Some(&bad), None).await.status,
        StatusCode::UNAUTHORIZED
    );

    assert_eq!(
        app.call("DELETE", &format!("/api/v1/api-keys/{id}"), Some(&admin), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.call("GET", "/api/v1/devices", Some(&key), None).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn totp_two_factor() {
    let app = app().await;
    let (_, tok) = app.tenant_user("Acme", Role::FleetManager).await;
    let s = app.call("POST", "/api/v1/me/totp", Some(&tok), None).await;
    assert_eq!(s.status, StatusCode::OK, "{}", s.text);
    let secret = s.json["secret"].as_str().unwrap().to_string();
    let code = api::auth::totp_for(&secret).unwrap().generate_current().unwrap();
    let bad = app
        .call(
            "POST",
            "/api/v1/me/totp/confirm",
            Some(&tok),
            Some(json!({"code": "000000x"})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    let ok = app
        .call(
            "POST",
            "/api/v1/me/totp/confirm",
            Some(&tok),
            Some(json!({"code": code})),
        )
        .await;
    assert_eq!(ok.status, StatusCode::NO_CONTENT, "{}", ok.text);

    let email = "fleet_manager@acme.example.com";
    let r = app
        .call(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(json!({"email": email, "password": PASSWORD})),
        )
        .await;
    assert_eq!(r.json["error"]["code"], "totp_required", "{}", r.text);
    let r = app
        .call(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(json!({"email": email, "password": PASSWORD, "totp": "123456"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let code = api::auth::totp_for(&secret).unwrap().generate_current().unwrap();
    let r = app
        .call(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(json!({"email": email, "password": PASSWORD, "totp": code})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let me = app
        .call(
            "GET",
            "/api/v1/me",
            Some(r.json["access_token"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(me.json["totp_enabled"], true);
    assert!(!me.text.contains(&secret));
}

#[tokio::test]
async fn password_change_needs_the_current_one_and_revokes_sessions() {
    let app = app().await;
    let t = app.tenant("Acme").await;
    app.user(t, "ann@acme.example.com", Role::Driver).await;
    let r = app
        .call(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(json!({"email": "ann@acme.example.com", "password": PASSWORD})),
        )
        .await;
    let (tok, rt) = (
        r.json["access_token"].as_str().unwrap(),
        r.json["refresh_token"].as_str().unwrap(),
    );
    let wrong = app
        .call(
            "POST",
            "/api/v1/me/password",
            Some(tok),
            Some(json!({"current_password": "nope", "new_password": "a much better one"})),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let short = app
        .call(
            "POST",
            "/api/v1/me/password",
            Some(tok),
            Some(json!({"current_password": PASSWORD, "new_password": "short"})),
        )
        .await;
    assert_eq!(short.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        short.json["error"]["details"]["fields"]["password"],
        "must be at least 10 characters"
    );
    let ok = app
        .call(
            "POST",
            "/api/v1/me/password",
            Some(tok),
            Some(json!({"current_password": PASSWORD, "new_password": "a much better one"})),
        )
        .await;
    assert_eq!(ok.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.call("POST", "/api/v1/auth/refresh", None, Some(json!({"refresh_token": rt})))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let r = app
        .call(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(json!({"email": "ann@acme.example.com", "password": "a much better one"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn bodies_reject_unknown_fields_and_errors_have_one_shape() {
    let app = app().await;
    let (_, tok) = app.tenant_user("Acme", Role::Admin).await;
    for (path, body) in [
        ("/api/v1/vehicles", json!({"name": "van", "tenant_id": 99})),
        (
            "/api/v1/users",
            json!({"email": "b@acme.example.com", "role": "driver", "tenant_id": 99}),
        ),
        (
            "/api/v1/devices",
            json!({"identifier": "123456789012345", "protocol": "gt06", "mqtt_secret_hash": "x"}),
        ),
        (
            "/api/v1/auth/login",
            json!({"email": "a@b.example.com", "password": "x", "role": "admin"}),
        ),
    ] {
        let r = app.call("POST", path, Some(&tok), Some(body)).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{path}: {}", r.text);
        assert_eq!(r.json["error"]["code"], "validation");
        assert!(
            r.json["error"]["message"].as_str().unwrap().contains("unknown field"),
            "{}",
            r.text
        );
    }
    // Broken JSON, wrong type, not JSON, too big, unknown route, wrong method, junk id.
    let mut req = axum::http::Request::post("/api/v1/vehicles")
        .header("authorization", format!("Bearer {tok}"))
        .header("content-type", "application/json")
        .body(axum::body::Body::from("{\"name\": "))
        .unwrap();
    assert_eq!(app.send(req).await.status, StatusCode::BAD_REQUEST);
    let r = app
        .call("POST", "/api/v1/vehicles", Some(&tok), Some(json!({"name": 5})))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    req = axum::http::Request::post("/api/v1/vehicles")
        .header("authorization", format!("Bearer {tok}"))
        .body(axum::body::Body::from("name=van"))
        .unwrap();
    assert_eq!(app.send(req).await.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let big = json!({"name": "van", "attributes": {"blob": "x".repeat(2 << 20)}});
    let r = app.call("POST", "/api/v1/vehicles", Some(&tok), Some(big)).await;
    assert_eq!(
        r.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        &r.text[..r.text.len().min(200)]
    );
    assert_eq!(r.json["error"]["code"], "too_large");
    let r = app.call("GET", "/api/v1/nothing-here", Some(&tok), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json["error"]["code"], "not_found");
    let r = app.call("PUT", "/api/v1/vehicles", Some(&tok), None).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.json["error"]["code"], "method_not_allowed");
    let r = app.call("GET", "/api/v1/vehicles/abc", Some(&tok), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app
        .call("GET", "/api/v1/vehicles/99999999999999999999", Some(&tok), None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app.call("GET", "/api/v1/vehicles?limit=abc", Some(&tok), None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.json["error"]["code"].is_string());
    let r = app.call("GET", "/api/v1/vehicles?cursor=zzz", Some(&tok), None).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    // NUL cannot be stored by PostgreSQL: a client mistake, not a 500.
    let r = app
        .call(
            "POST",
            "/api/v1/drivers",
            Some(&tok),
            Some(json!({"name": "a\u{0}b", "attributes": {"k": "\u{0}"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    // A number jsonb keeps but cannot hand back as f64.
    let r = app
        .call(
            "POST",
            "/api/v1/drivers",
            Some(&tok),
            Some(json!({"name": "n", "attributes": {"x": 1.7976931348623155e308}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    // Both credentials: the bearer token is used.
    let r = app
        .call_with(
            "GET",
            "/api/v1/me",
            Some(&tok),
            None,
            &[("x-api-key", "ck_000000000000_junk")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // Every response carries a request id.
    assert!(r.headers.contains_key("x-request-id"));
    assert_eq!(r.headers["x-content-type-options"], "nosniff");
}

#[tokio::test]
async fn pagination_etags_and_idempotency() {
    let app = app().await;
    let (_, tok) = app.tenant_user("Acme", Role::FleetManager).await;
    for i in 0..7 {
        let r = app
            .call(
                "POST",
                "/api/v1/vehicles",
                Some(&tok),
                Some(json!({"name": format!("van {i}")})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/vehicles?limit=3&cursor={c}"),
            None => "/api/v1/vehicles?limit=3".to_string(),
        };
        let r = app.call("GET", &path, Some(&tok), None).await;
        assert_eq!(r.status, StatusCode::OK);
        let items = r.json["items"].as_array().unwrap();
        assert!(items.len() <= 3);
        seen.extend(items.iter().map(|v| v["id"].as_i64().unwrap()));
        match r.json["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 7);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    let desc = app
        .call("GET", "/api/v1/vehicles?sort=-id&limit=100000", Some(&tok), None)
        .await;
    let ids: Vec<i64> = desc.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 7);
    assert!(ids.windows(2).all(|w| w[0] > w[1]));
    assert_eq!(
        app.call("GET", "/api/v1/vehicles?limit=0", Some(&tok), None)
            .await
            .status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let q = app.call("GET", "/api/v1/vehicles?q=VAN%203", Some(&tok), None).await;
    assert_eq!(q.json["items"].as_array().unwrap().len(), 1);

    // ETag / If-None-Match.
    let r = app
        .call("GET", &format!("/api/v1/vehicles/{}", seen[0]), Some(&tok), None)
        .await;
    let etag = r.headers["etag"].to_str().unwrap().to_string();
    let r2 = app
        .call_with(
            "GET",
            &format!("/api/v1/vehicles/{}", seen[0]),
            Some(&tok),
            None,
            &[("if-none-match", &etag)],
        )
        .await;
    assert_eq!(r2.status, StatusCode::NOT_MODIFIED);
    app.call(
        "PATCH",
        &format!("/api/v1/vehicles/{}", seen[0]),
        Some(&tok),
        Some(json!({"plate": "B-X 1"})),
    )
    .await;
    let r3 = app
        .call_with(
            "GET",
            &format!("/api/v1/vehicles/{}", seen[0]),
            Some(&tok),
            None,
            &[("if-none-match", &etag)],
        )
        .await;
    assert_eq!(r3.status, StatusCode::OK, "changed resource, new etag");

    // Idempotency-Key: a retry gets the first answer, not a second vehicle.
    let body = json!({"name": "truck"});
    let a = app
        .call_with(
            "POST",
            "/api/v1/vehicles",
            Some(&tok),
            Some(body.clone()),
            &[("idempotency-key", "k-1")],
        )
        .await;
    let b = app
        .call_with(
            "POST",
            "/api/v1/vehicles",
            Some(&tok),
            Some(body),
            &[("idempotency-key", "k-1")],
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert_eq!(b.status, StatusCode::CREATED);
    assert_eq!(a.json["id"], b.json["id"]);
    assert_eq!(b.headers["idempotent-replayed"], "true");
    let c = app
        .call_with(
            "POST",
            "/api/v1/vehicles",
            Some(&tok),
            Some(json!({"name": "other"})),
            &[("idempotency-key", "k-1")],
        )
        .await;
    assert_eq!(c.status, StatusCode::UNPROCESSABLE_ENTITY);
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM vehicles WHERE name = 'truck'")
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn per_caller_rate_limit_holds() {
    let app = app_with(api::ApiConfig {
        rate_per_second: 1,
        rate_burst: 5,
        ..api::ApiConfig::default()
    })
    .await;
    let (_, a) = app.tenant_user("Acme", Role::Admin).await;
    let (_, b) = app.tenant_user("Beta", Role::Admin).await;
    let mut codes = Vec::new();
    for _ in 0..8 {
        codes.push(app.call("GET", "/api/v1/me", Some(&a), None).await.status);
    }
    assert!(codes.contains(&StatusCode::TOO_MANY_REQUESTS), "{codes:?}");
    // Another caller has its own budget.
    assert_eq!(
        app.call("GET", "/api/v1/me", Some(&b), None).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn cors_is_configured() {
    let app = app_with(api::ApiConfig {
        cors_origins: vec!["https://dash.example.com".into()],
        ..config()
    })
    .await;
    let r = app
        .call_with(
            "OPTIONS",
            "/api/v1/vehicles",
            None,
            None,
            &[
                ("origin", "https://dash.example.com"),
                ("access-control-request-method", "GET"),
            ],
        )
        .await;
    assert_eq!(r.headers["access-control-allow-origin"], "https://dash.example.com");
    let r = app
        .call_with(
            "OPTIONS",
            "/api/v1/vehicles",
            None,
            None,
            &[
                ("origin", "https://evil.example.com"),
                ("access-control-request-method", "GET"),
            ],
        )
        .await;
    assert!(!r.headers.contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn responses_never_leak_hashes_or_secrets() {
    let app = app().await;
    let (_, tok) = app.tenant_user("Acme", Role::Admin).await;
    let created = app
        .call(
            "POST",
            "/api/v1/users",
            Some(&tok),
            Some(json!({"email": "d@acme.example.com", "role": "dispatcher"})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let generated = created.json["password"].as_str().unwrap().to_string();
    assert!(generated.len() >= 10);
    let d = app
        .call(
            "POST",
            "/api/v1/devices",
            Some(&tok),
            Some(json!({"identifier": "356307042441013", "protocol": "teltonika"})),
        )
        .await;
    let did = d.json["id"].as_i64().unwrap();
    let m = app
        .call(
            "POST",
            &format!("/api/v1/devices/{did}/mqtt-credentials"),
            Some(&tok),
            None,
        )
        .await;
    assert_eq!(m.status, StatusCode::CREATED);
    let secret = m.json["secret"].as_str().unwrap().to_string();
    let hash: String = sqlx::query_scalar("SELECT mqtt_secret_hash FROM devices WHERE id = $1")
        .bind(did)
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert!(hash.starts_with("$argon2id$"));
    assert!(api::auth::verify_secret(&secret, &hash));
    for path in [
        "/api/v1/users",
        "/api/v1/me",
        "/api/v1/devices",
        &format!("/api/v1/devices/{did}"),
    ] {
        let r = app.call("GET", path, Some(&tok), None).await;
        for needle in ["argon2", "password", "hash", "totp_secret", &generated, &secret] {
            assert!(!r.text.contains(needle), "{path} leaks {needle}: {}", r.text);
        }
    }
}

#[tokio::test]
async fn jwt_secret_file_is_generated_once_with_private_mode() {
    let dir = std::env::temp_dir().join(format!("clutch-api-secret-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = api::ApiConfig {
        jwt_secret_file: Some(dir.join("api-jwt.key")),
        ..api::ApiConfig::default()
    };
    let a = cfg.load_secret().unwrap();
    let b = cfg.load_secret().unwrap();
    assert_eq!(a, b);
    assert!(a.len() >= 32);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("api-jwt.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "not readable by others");
    }
    std::fs::remove_dir_all(&dir).unwrap();
    let short = api::ApiConfig {
        jwt_secret: Some("short".into()),
        ..api::ApiConfig::default()
    };
    assert!(short.load_secret().is_err());
    assert!(
        !format!(
            "{:?}",
            api::ApiConfig {
                jwt_secret: Some("s".repeat(40)),
                ..Default::default()
            }
        )
        .contains("sss")
    );
}
