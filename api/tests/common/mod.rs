//! Test harness: a fresh database, the real router, helpers to call it.
#![allow(dead_code)]

use std::sync::Arc;

use api::auth::Role;
use api::{ApiConfig, AppState};
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use sqlx::PgPool;
use store::testing::{TestDb, test_db};
use stream::{Bus, BusConfig, InProcessBus};
use tower::ServiceExt;

pub const SECRET: &[u8] = b"test-secret-test-secret-test-secret-0123456789";
pub const PASSWORD: &str = "correct horse battery";

pub struct App {
    pub db: TestDb,
    pub router: Router,
    pub state: AppState,
    pub bus: Arc<InProcessBus<ingest::DeviceBatch>>,
}

#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
    pub json: Value,
}

pub fn config() -> ApiConfig {
    ApiConfig {
        rate_per_second: 100_000,
        rate_burst: 100_000,
        ..ApiConfig::default()
    }
}

pub async fn app_with(config: ApiConfig) -> App {
    let db = test_db().await;
    let writer = store::Writer::spawn(
        db.pool.clone(),
        store::WriterConfig {
            max_delay: std::time::Duration::from_millis(2),
            ..Default::default()
        },
    );
    let bus = Arc::new(InProcessBus::new(
        &BusConfig::default(),
        Arc::new(ingest::StoreSink::new(writer)),
    ));
    let state = AppState::new(db.pool.clone(), config, SECRET, Some(bus.clone() as api::DeviceBus));
    let router = api::router(state.clone());
    App { db, router, state, bus }
}

pub async fn app() -> App {
    app_with(config()).await
}

impl App {
    pub fn pool(&self) -> &PgPool {
        &self.db.pool
    }

    pub async fn call(&self, method: &str, path: &str, auth: Option<&str>, body: Option<Value>) -> Resp {
        self.call_with(method, path, auth, body, &[]).await
    }

    pub async fn call_with(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut b = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(path);
        if let Some(t) = auth {
            if t.starts_with("ck_") {
                b = b.header("x-api-key", t);
            } else {
                b = b.header("authorization", format!("Bearer {t}"));
            }
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = match body {
            Some(v) => b
                .header("content-type", "application/json")
                .body(Body::from(v.to_string()))
                .unwrap(),
            None => b.body(Body::empty()).unwrap(),
        };
        self.send(req).await
    }

    pub async fn send(&self, req: Request<Body>) -> Resp {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).to_string();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            text,
            json,
        }
    }

    pub async fn tenant(&self, name: &str) -> i64 {
        api::users::ensure_tenant(self.pool(), name).await.unwrap()
    }

    pub async fn user(&self, tenant_id: i64, email: &str, role: Role) -> i64 {
        api::users::create_user_in(self.pool(), tenant_id, email, "", role, Some(PASSWORD.into()))
            .await
            .unwrap()
            .0
    }

    pub async fn login(&self, email: &str) -> String {
        let r = self
            .call(
                "POST",
                "/api/v1/auth/login",
                None,
                Some(serde_json::json!({"email": email, "password": PASSWORD})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.json["access_token"].as_str().unwrap().to_string()
    }

    /// A tenant with a user of `role`, logged in.
    pub async fn tenant_user(&self, tenant: &str, role: Role) -> (i64, String) {
        let t = self.tenant(tenant).await;
        let email = format!("{}@{}.example.com", role.as_str(), tenant.to_lowercase());
        self.user(t, &email, role).await;
        (t, self.login(&email).await)
    }

    pub async fn publish(&self, batch: ingest::DeviceBatch) {
        let receipt = self.bus.publish(batch).await.unwrap();
        receipt.await.unwrap();
    }
}

/// A position row at `t` seconds after a fixed epoch.
pub fn pos(device_id: i64, t: i64, lat: f64, lon: f64) -> store::PositionRow {
    let time = chrono::DateTime::from_timestamp(1_790_000_000 + t, 0).unwrap();
    store::PositionRow {
        device_id,
        fix_time: time,
        server_time: time,
        lat,
        lon,
        altitude: Some(100.0),
        speed_kmh: Some(50.0),
        course: Some(90.0),
        satellites: Some(9),
        hdop: Some(0.9),
        valid: true,
        ignition: Some(true),
        motion: Some(true),
        odometer_m: Some(12_000_000.0 + t as f64 * 10.0),
        fuel_level_pct: None,
        fuel_used_l: None,
        rpm: None,
        coolant_c: None,
        power_v: None,
        battery_v: None,
        event: None,
        alarms: None,
        dtcs: None,
        attributes: None,
    }
}
