//! Webhooks against a real local receiver (axum on port 0): signatures, retries after
//! 500s, deduplication by event id, durable pending deliveries, and SSRF refusals at
//! subscription and at delivery.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::auth::Role;
use api::{ApiConfig, AppState};
use axum::http::{HeaderMap, StatusCode};
use common::*;
use serde_json::{Value, json};
use stream::{BusConfig, InProcessBus};

#[derive(Default)]
struct Received {
    /// (headers, body) of every request.
    requests: Vec<(HeaderMap, Vec<u8>)>,
    /// Answer 500 to this many requests first.
    fail_first: usize,
}

/// A receiver on 127.0.0.1:0; returns its base URL.
async fn receiver(fail_first: usize) -> (String, Arc<Mutex<Received>>) {
    let rec = Arc::new(Mutex::new(Received {
        fail_first,
        ..Default::default()
    }));
    let r2 = rec.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let rec = r2.clone();
            async move {
                let mut g = rec.lock().unwrap();
                g.requests.push((headers, body.to_vec()));
                if g.requests.len() <= g.fail_first {
                    (StatusCode::INTERNAL_SERVER_ERROR, "try later")
                } else {
                    (StatusCode::OK, "thanks")
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://127.0.0.1:{}/hook", addr.port()), rec)
}

fn hook_config(allow: &[&str]) -> ApiConfig {
    let mut c = config();
    c.webhooks.allow_hosts = allow.iter().map(|s| s.to_string()).collect();
    c.webhooks.base_backoff_ms = 50;
    c.webhooks.max_backoff_ms = 200;
    c.webhooks.scan_interval_ms = 100;
    c.webhooks.timeout_ms = 2_000;
    c
}

/// Like `common::app_with`, plus the operators' event broadcast `serve` passes in.
async fn app_with_events(config: ApiConfig) -> (App, tokio::sync::broadcast::Sender<Value>) {
    let db = store::testing::test_db().await;
    let writer = store::Writer::spawn(db.pool.clone(), store::WriterConfig::default());
    let bus = Arc::new(InProcessBus::new(
        &BusConfig::default(),
        Arc::new(ingest::StoreSink::new(writer)),
    ));
    let (tx, _) = tokio::sync::broadcast::channel(64);
    let state = AppState::new(db.pool.clone(), config, SECRET, Some(bus.clone() as api::DeviceBus))
        .with_operator_events(tx.clone());
    let router = api::router(state.clone());
    (App { db, router, state, bus }, tx)
}

async fn device(app: &App, tok: &str) -> i64 {
    let v = app
        .call("POST", "/api/v1/vehicles", Some(tok), Some(json!({"name": "van"})))
        .await;
    let r = app
        .call(
            "POST",
            "/api/v1/devices",
            Some(tok),
            Some(json!({"identifier": "356307042441013", "protocol": "teltonika", "vehicle_id": v.json["id"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    r.json["id"].as_i64().unwrap()
}

/// Writes an event as the operators do (durable first), returns it as broadcast.
async fn event(app: &App, dev: i64, kind: &str, secs: i64) -> Value {
    let t = chrono::Utc::now() - chrono::Duration::seconds(secs);
    sqlx::query("INSERT INTO events (device_id, time, kind, magnitude, severity) VALUES ($1, $2, $3, 31.0, 'high')")
        .bind(dev)
        .bind(t)
        .bind(kind)
        .execute(app.pool())
        .await
        .unwrap();
    json!({"device_id": dev, "kind": kind, "time": t, "magnitude": 31.0, "severity": "high", "attributes": {}})
}

async fn wait_for(mut f: impl FnMut() -> bool, what: &str) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

fn verify(secret: &str, headers: &HeaderMap, body: &[u8]) {
    let ts: i64 = headers["clutch-timestamp"].to_str().unwrap().parse().unwrap();
    assert!((chrono::Utc::now().timestamp() - ts).abs() < 60);
    // Recomputed here independently of the server's helper.
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{ts}.").as_bytes());
    mac.update(body);
    let expect = format!("v1={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(headers["clutch-signature"].to_str().unwrap(), expect);
}

#[tokio::test]
async fn deliveries_are_signed_retried_after_500s_and_deduplicated() {
    let (app, ops) = app_with_events(hook_config(&["127.0.0.1"])).await;
    let (_, tok) = app.tenant_user("Acme", Role::Admin).await;
    let dev = device(&app, &tok).await;
    let (url, rec) = receiver(2).await;
    let r = app
        .call(
            "POST",
            "/api/v1/webhooks",
            Some(&tok),
            Some(json!({"url": url, "kinds": ["overspeed"], "description": "erp"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let hook = r.json["id"].as_i64().unwrap();
    let secret = r.json["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"));
    // Shown once: never in reads.
    let read = app
        .call("GET", &format!("/api/v1/webhooks/{hook}"), Some(&tok), None)
        .await;
    assert_eq!(read.status, StatusCode::OK);
    assert!(
        !read.text.contains(&secret) && !read.text.contains("secret"),
        "{}",
        read.text
    );
    let list = app.call("GET", "/api/v1/webhooks", Some(&tok), None).await;
    assert!(!list.text.contains(&secret));

    // The same event broadcast twice (and found again by the catch-up scan), plus an
    // event of a kind the webhook did not ask for.
    let e = event(&app, dev, "overspeed", 5).await;
    ops.send(e.clone()).unwrap();
    ops.send(e.clone()).unwrap();
    let other = event(&app, dev, "harsh_brake", 4).await;
    ops.send(other).unwrap();

    wait_for(|| rec.lock().unwrap().requests.len() >= 3, "three attempts").await;
    // Let any duplicate show itself.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let got = rec.lock().unwrap().requests.clone();
    assert_eq!(got.len(), 3, "two 500s then one 200, nothing more");
    let first_id = got[0].0["clutch-event-id"].to_str().unwrap().to_string();
    for (h, body) in &got {
        verify(&secret, h, body);
        assert_eq!(h["clutch-event-id"].to_str().unwrap(), first_id, "one event, one id");
        let v: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(v["type"], "overspeed");
        assert_eq!(v["id"], first_id.as_str());
        assert_eq!(v["data"]["device_id"], dev);
        assert_eq!(v["data"]["magnitude"], 31.0);
    }
    let t: chrono::DateTime<chrono::Utc> = serde_json::from_value(e["time"].clone()).unwrap();
    assert_eq!(first_id, api::webhooks::event_id(dev, t, "overspeed"));

    let d = app
        .call("GET", &format!("/api/v1/webhooks/{hook}/deliveries"), Some(&tok), None)
        .await;
    assert_eq!(d.status, StatusCode::OK, "{}", d.text);
    let items = d.json["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{}", d.text);
    assert_eq!(items[0]["status"], "delivered");
    assert_eq!(items[0]["attempts"], 3);
    let codes: Vec<i64> = items[0]["attempt_log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status_code"].as_i64().unwrap())
        .collect();
    assert_eq!(codes, [500, 500, 200]);
    assert!(
        items[0]["attempt_log"][0]["response"]
            .as_str()
            .unwrap()
            .contains("try later")
    );
    let failed = app
        .call(
            "GET",
            &format!("/api/v1/webhooks/{hook}/deliveries?status=failed"),
            Some(&tok),
            None,
        )
        .await;
    assert_eq!(failed.json["items"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn pending_deliveries_in_the_database_are_delivered_and_old_events_caught_up() {
    // The worker of a fresh process: nothing in memory, only rows. One pending delivery
    // left by a process that died, and one event that was never broadcast here.
    let (app, _ops) = app_with_events(hook_config(&["127.0.0.1"])).await;
    let (_, tok) = app.tenant_user("Acme", Role::Admin).await;
    let dev = device(&app, &tok).await;
    let (url, rec) = receiver(0).await;
    let r = app
        .call("POST", "/api/v1/webhooks", Some(&tok), Some(json!({"url": url})))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let hook = r.json["id"].as_i64().unwrap();
    sqlx::query(
        "INSERT INTO webhook_deliveries (webhook_id, event_id, kind, payload, attempts) \
         VALUES ($1, 'evt_left_over', 'geofence_enter', '{\"id\": \"evt_left_over\"}', 1)",
    )
    .bind(hook)
    .execute(app.pool())
    .await
    .unwrap();
    event(&app, dev, "dtc", 1).await;
    wait_for(|| rec.lock().unwrap().requests.len() >= 2, "both deliveries").await;
    let ids: Vec<String> = rec
        .lock()
        .unwrap()
        .requests
        .iter()
        .map(|(h, _)| h["clutch-event-id"].to_str().unwrap().to_string())
        .collect();
    assert!(ids.contains(&"evt_left_over".to_string()), "{ids:?}");
    assert!(ids.iter().any(|i| i != "evt_left_over"), "{ids:?}");
}

#[tokio::test]
async fn ssrf_targets_are_refused_at_subscription() {
    let app = app_with(hook_config(&[])).await;
    let (_, tok) = app.tenant_user("Acme", Role::Admin).await;
    for url in [
        "https://10.0.0.5/hook",
        "https://10.1.2.3:8443/hook",
        "https://192.168.1.1/",
        "https://172.16.0.1/",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://[::ffff:a9fe:a9fe]/",
        "https://[fd00:ec2::254]/",
        "https://[fe80::1]/",
        "https://localhost/hook",
        "https://LOCALHOST./hook",
        "https://127.1/",
        "https://2130706433/",
        "https://0x7f.0.0.1/",
        "https://0177.0.0.1/",
        "https://0.0.0.0/",
        "https://100.64.0.1/",
        "https://224.0.0.1/",
        "https://255.255.255.255/",
        // Plain http only for allow-listed hosts; other schemes never.
        "http://93.184.215.14/hook",
        "ftp://93.184.215.14/",
        "https://user:pw@93.184.215.14/",
        "not a url",
    ] {
        let r = app
            .call("POST", "/api/v1/webhooks", Some(&tok), Some(json!({"url": url})))
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {}", r.text);
        assert!(
            r.json["error"]["details"]["fields"]["url"].is_string(),
            "{url}: {}",
            r.text
        );
    }
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM webhooks")
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(n, 0);
    // A public address passes (no connection is made at subscription).
    let r = app
        .call(
            "POST",
            "/api/v1/webhooks",
            Some(&tok),
            Some(json!({"url": "https://93.184.215.14/hook", "kinds": ["trip_end"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    // Changing the URL is checked the same way.
    let id = r.json["id"].as_i64().unwrap();
    let p = app
        .call(
            "PATCH",
            &format!("/api/v1/webhooks/{id}"),
            Some(&tok),
            Some(json!({"url": "https://169.254.169.254/"})),
        )
        .await;
    assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", p.text);
    let bad_kind = app
        .call(
            "PATCH",
            &format!("/api/v1/webhooks/{id}"),
            Some(&tok),
            Some(json!({"kinds": ["no spaces please"]})),
        )
        .await;
    assert_eq!(bad_kind.status, StatusCode::UNPROCESSABLE_ENTITY);
    let unknown = app
        .call(
            "POST",
            "/api/v1/webhooks",
            Some(&tok),
            Some(json!({"url": "https://93.184.215.14/", "secret": "mine"})),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn a_target_that_turns_private_is_refused_at_delivery() {
    // The allow-list names 127.0.0.1, not localhost: a webhook stored with a name that
    // resolves to loopback (as if DNS changed after subscription) must not be called.
    let (app, ops) = app_with_events(hook_config(&["127.0.0.1"])).await;
    let (tid, tok) = app.tenant_user("Acme", Role::Admin).await;
    let dev = device(&app, &tok).await;
    let (url, rec) = receiver(0).await;
    let sneaky = url.replace("http://127.0.0.1", "https://localhost");
    let hook: i64 = sqlx::query_scalar(
        "INSERT INTO webhooks (tenant_id, url, secret, created_at) VALUES ($1, $2, 'whsec_x', now() - interval '1 minute') RETURNING id",
    )
    .bind(tid)
    .bind(&sneaky)
    .fetch_one(app.pool())
    .await
    .unwrap();
    let e = event(&app, dev, "overspeed", 1).await;
    ops.send(e).unwrap();
    let mut last = Value::Null;
    for _ in 0..100 {
        let d = app
            .call("GET", &format!("/api/v1/webhooks/{hook}/deliveries"), Some(&tok), None)
            .await;
        last = d.json.clone();
        if d.json["items"][0]["attempt_log"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let err = last["items"][0]["attempt_log"][0]["error"].as_str().unwrap_or_default();
    assert!(err.contains("refused") && err.contains("loopback"), "{last}");
    assert!(rec.lock().unwrap().requests.is_empty(), "the receiver was called");
}

#[test]
fn blocked_ranges() {
    use api::webhooks::blocked_reason;
    for ip in [
        "127.0.0.1",
        "10.255.0.1",
        "172.31.255.255",
        "192.168.0.1",
        "169.254.169.254",
        "169.254.1.1",
        "100.64.0.1",
        "100.127.255.255",
        "0.0.0.0",
        "224.0.0.251",
        "240.0.0.1",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "fd00:ec2::254",
        "ff02::1",
        "::ffff:10.0.0.1",
        "64:ff9b::7f00:1",
        "2002:7f00:1::",
        "::127.0.0.1",
    ] {
        assert!(blocked_reason(ip.parse().unwrap()).is_some(), "{ip} must be blocked");
    }
    for ip in [
        "93.184.215.14",
        "8.8.8.8",
        "100.128.0.1",
        "2606:4700::1111",
        "::ffff:8.8.8.8",
    ] {
        assert!(blocked_reason(ip.parse().unwrap()).is_none(), "{ip} must pass");
    }
}

#[test]
fn backoff_grows_with_jitter_and_a_cap() {
    let cfg = api::webhooks::WebhookConfig {
        base_backoff_ms: 1000,
        max_backoff_ms: 60_000,
        ..Default::default()
    };
    for n in 1..12 {
        let cap = (1000u64 << (n - 1)).min(60_000);
        for _ in 0..20 {
            let d = api::webhooks::backoff(&cfg, n).as_millis() as u64;
            assert!(
                d >= cap / 2 && d <= cap,
                "attempt {n}: {d} ms outside [{}, {cap}]",
                cap / 2
            );
        }
    }
}
