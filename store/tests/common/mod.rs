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

/// The rollup, computed independently: window functions and inline haversine, no helper
/// functions from the migrations.
pub const DIRECT_SQL: &str = "
    WITH v AS (
        SELECT device_id, fix_time, speed_kmh, fuel_used_l, valid, lat, lon,
               lag(lat) OVER w AS plat, lag(lon) OVER w AS plon
        FROM (SELECT * FROM positions WHERE valid) p
        WINDOW w AS (PARTITION BY device_id, date_trunc('hour', fix_time AT TIME ZONE 'UTC') ORDER BY fix_time)
    ), dist AS (
        SELECT device_id, date_trunc('hour', fix_time AT TIME ZONE 'UTC') AS h,
               sum(CASE WHEN plat IS NULL THEN 0 ELSE
                   2 * 6371008.8 * asin(sqrt(sin(radians(lat - plat) / 2) ^ 2
                     + cos(radians(plat)) * cos(radians(lat)) * sin(radians(lon - plon) / 2) ^ 2)) END) AS d
        FROM v GROUP BY 1, 2
    )
    SELECT p.device_id, (date_trunc('hour', p.fix_time AT TIME ZONE 'UTC') AT TIME ZONE 'UTC') AS bucket,
           count(*) AS samples, coalesce(max(dist.d), 0) AS distance_m,
           max(p.speed_kmh) AS max_speed_kmh, avg(p.speed_kmh) AS avg_speed_kmh,
           max(p.fuel_used_l) - min(p.fuel_used_l) AS fuel_used_l,
           min(p.fix_time) AS first_fix, max(p.fix_time) AS last_fix
    FROM positions p
    LEFT JOIN dist ON dist.device_id = p.device_id AND dist.h = date_trunc('hour', p.fix_time AT TIME ZONE 'UTC')
    GROUP BY 1, 2 ORDER BY 1, 2";

pub type Rollup = (
    i64,
    DateTime<Utc>,
    i64,
    f64,
    Option<f32>,
    Option<f64>,
    Option<f64>,
    DateTime<Utc>,
    DateTime<Utc>,
);
