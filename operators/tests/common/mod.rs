//! Shared test setup: a real store (store::testing), the real in-process bus with the
//! store writer as its durability sink, registered devices.

#![allow(dead_code)]

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use ingest::{DeviceBatch, StoreSink};
use sqlx::PgPool;
use store::PositionRow;
use stream::{Bus, BusConfig, InProcessBus};

pub struct Env {
    pub db: store::testing::TestDb,
    pub writer: store::WriterHandle,
    pub bus: Arc<InProcessBus<DeviceBatch>>,
    pub tenant: i64,
}

pub async fn env(bus_cfg: BusConfig) -> Env {
    let db = store::testing::test_db().await;
    let wcfg = store::WriterConfig {
        max_delay: std::time::Duration::from_millis(2),
        ..Default::default()
    };
    let writer = store::Writer::spawn(db.pool.clone(), wcfg);
    let bus = Arc::new(InProcessBus::new(&bus_cfg, Arc::new(StoreSink::new(writer.clone()))));
    let tenant: i64 = sqlx::query_scalar("INSERT INTO tenants (name) VALUES ('t') RETURNING id")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    Env {
        db,
        writer,
        bus,
        tenant,
    }
}

pub async fn device(pool: &PgPool, tenant: i64, ident: &str) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO devices (tenant_id, identifier, protocol) VALUES ($1, $2, 'teltonika') RETURNING id",
    )
    .bind(tenant)
    .bind(ident)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// A circular fence; `rules` go into `attributes.rules`.
pub async fn fence(
    pool: &PgPool,
    tenant: i64,
    name: &str,
    lat: f64,
    lon: f64,
    radius_m: f64,
    rules: serde_json::Value,
) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO geofences (tenant_id, name, geojson, attributes) VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(tenant)
    .bind(name)
    .bind(serde_json::json!({"type": "Point", "coordinates": [lon, lat]}))
    .bind(serde_json::json!({"radius_m": radius_m, "rules": rules}))
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Publishes and waits until durable.
pub async fn publish(bus: &InProcessBus<DeviceBatch>, device_id: i64, positions: Vec<PositionRow>) {
    let receipt = bus
        .publish(DeviceBatch {
            device_id,
            positions,
            events: vec![],
        })
        .await
        .expect("published");
    receipt.await.expect("durable");
}

pub fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-02T07:00:00Z").unwrap().to_utc()
}

pub fn at(s: i64) -> DateTime<Utc> {
    t0() + Duration::seconds(s)
}

/// A good fix.
pub fn row(device: i64, s: i64, lat: f64, lon: f64, speed: f32) -> PositionRow {
    PositionRow {
        device_id: device,
        fix_time: at(s),
        server_time: at(s),
        lat,
        lon,
        altitude: None,
        speed_kmh: Some(speed),
        course: Some(90.0),
        satellites: Some(9),
        hdop: Some(1.0),
        valid: true,
        ignition: None,
        motion: None,
        odometer_m: None,
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

/// Metres east of (54.69, 25.28) as longitude.
pub fn lon_east(m: f64) -> f64 {
    25.28 + m / (111_320.0 * 54.69f64.to_radians().cos())
}

/// A drive east at `kmh` from second `from` for `secs` seconds, one fix a second, with
/// ignition on: positions start at `x0` metres.
pub fn drive(device: i64, from: i64, secs: i64, x0: f64, kmh: f32, ignition: Option<bool>) -> Vec<PositionRow> {
    (0..secs)
        .map(|i| {
            let x = x0 + f64::from(kmh) / 3.6 * i as f64;
            let mut r = row(device, from + i, 54.69, lon_east(x), kmh);
            r.ignition = ignition;
            r.odometer_m = Some(10_000.0 + x);
            r
        })
        .collect()
}

pub async fn events(pool: &PgPool, device: i64) -> Vec<(String, DateTime<Utc>)> {
    sqlx::query_as("SELECT kind, time FROM events WHERE device_id = $1 ORDER BY time, kind")
        .bind(device)
        .fetch_all(pool)
        .await
        .unwrap()
}
