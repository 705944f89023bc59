//! Row builders shared by the integration tests.
#![allow(dead_code)]

use chrono::{DateTime, TimeDelta, Utc};
use store::PositionRow;

pub fn ts(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

/// Now, at PostgreSQL's microsecond precision, so stored times compare equal.
pub fn now_us() -> DateTime<Utc> {
    DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap()
}

/// A plausible fix: moving north-east a little each second, odometer and fuel rising.
pub fn pos(device_id: i64, t: DateTime<Utc>) -> PositionRow {
    let s = t.timestamp() as f64;
    PositionRow {
        device_id,
        fix_time: t,
        server_time: t + TimeDelta::seconds(1),
        lat: 54.0 + (s % 3600.0) * 1e-4 + device_id as f64 * 1e-3,
        lon: 25.0 + (s % 3600.0) * 1e-4,
        altitude: Some(120.0),
        speed_kmh: Some(((s as i64 + device_id) % 90) as f32),
        course: Some(45.0),
        satellites: Some(9),
        hdop: Some(0.9),
        valid: (s as i64 + device_id) % 7 != 0,
        ignition: Some(true),
        motion: Some(true),
        odometer_m: Some(s * 10.0),
        fuel_level_pct: Some(50.0),
        fuel_used_l: Some(s * 0.001),
        rpm: Some(1800.0),
        coolant_c: Some(88.0),
        power_v: Some(13.8),
        battery_v: Some(4.1),
        event: None,
        alarms: None,
        dtcs: None,
        attributes: Some(serde_json::json!({"io": {"239": 1, "240": 1, "21": 4}})),
    }
}

/// `n` fixes of one device, one per `step` seconds from `start`.
pub fn track(device_id: i64, start: DateTime<Utc>, n: usize, step: i64) -> Vec<PositionRow> {
    (0..n)
        .map(|i| pos(device_id, start + TimeDelta::seconds(i as i64 * step)))
        .collect()
}
