//! What the operators emit: one row of `events` (0002 + 0005 columns), also published to
//! in-process subscribers (the API) once it is durable.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperatorEvent {
    pub device_id: i64,
    pub kind: String,
    /// Start of the episode; with `device_id` and `kind` the idempotency key.
    pub time: DateTime<Utc>,
    pub end_time: Option<DateTime<Utc>>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub geofence_id: Option<i64>,
    pub magnitude: Option<f64>,
    pub severity: Option<String>,
    pub attributes: serde_json::Value,
}

impl OperatorEvent {
    pub fn new(device_id: i64, kind: &str, time: DateTime<Utc>) -> Self {
        OperatorEvent {
            device_id,
            kind: kind.to_owned(),
            time,
            end_time: None,
            lat: None,
            lon: None,
            geofence_id: None,
            magnitude: None,
            severity: None,
            attributes: serde_json::Value::Object(Default::default()),
        }
    }

    pub fn at(mut self, lat: f64, lon: f64) -> Self {
        self.lat = Some(lat);
        self.lon = Some(lon);
        self
    }

    pub fn until(mut self, end: DateTime<Utc>) -> Self {
        self.end_time = Some(end);
        self
    }

    pub fn magnitude(mut self, m: f64) -> Self {
        self.magnitude = Some(m);
        self
    }

    pub fn severity(mut self, s: &str) -> Self {
        self.severity = Some(s.to_owned());
        self
    }

    pub fn attrs(mut self, a: serde_json::Value) -> Self {
        self.attributes = a;
        self
    }
}

/// Great-circle distance in metres (mean Earth radius), the same formula as the SQL
/// helper `clutch_haversine_m`.
pub fn haversine_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * 6_371_008.8 * a.sqrt().min(1.0).asin()
}

/// Seconds between two instants, fractional.
pub fn secs(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_milliseconds() as f64 / 1000.0
}
