//! The sample/detection types shared with the `analytics` crate (see the contract in the
//! project brief). Kept field-for-field identical to `analytics::{Sample, Detection}` so
//! that, at integration, this module becomes `pub use analytics::{Sample, Detection};`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One fix/telemetry sample of one device, in time order.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Sample {
    pub time: DateTime<Utc>,
    pub lat: f64,
    pub lon: f64,
    pub valid: bool,
    pub speed_kmh: Option<f64>,
    pub course: Option<f64>,
    pub ignition: Option<bool>,
    pub odometer_m: Option<f64>,
    pub fuel_level_pct: Option<f64>,
    pub fuel_level_l: Option<f64>,
    pub fuel_used_l: Option<f64>,
    pub fuel_rate_lph: Option<f64>,
    pub engine_hours: Option<f64>,
    pub power_v: Option<f64>,
    pub battery_v: Option<f64>,
    pub dtcs: Option<Vec<String>>,
}

/// What a detector emits; one row of the `events` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub kind: String,
    pub time: DateTime<Utc>,
    pub end_time: Option<DateTime<Utc>>,
    pub magnitude: Option<f64>,
    pub severity: Option<String>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub attributes: serde_json::Value,
}

/// Builds a [`Sample`] from a stored position: typed columns first, the rest from the
/// JSON attributes (`fuel_level_l`, `fuel_rate_lph`, `engine_hours` have no column).
pub fn sample_from_row(r: &store::PositionRow) -> Sample {
    let attr = |k: &str| r.attributes.as_ref().and_then(|a| a.get(k)).and_then(|v| v.as_f64());
    Sample {
        time: r.fix_time,
        lat: r.lat,
        lon: r.lon,
        valid: r.valid,
        speed_kmh: r.speed_kmh.map(f64::from),
        course: r.course.map(f64::from),
        ignition: r.ignition,
        odometer_m: r.odometer_m,
        fuel_level_pct: r.fuel_level_pct.map(f64::from),
        fuel_level_l: attr("fuel_level_l"),
        fuel_used_l: r.fuel_used_l,
        fuel_rate_lph: attr("fuel_rate_lph"),
        engine_hours: attr("engine_hours"),
        power_v: r.power_v.map(f64::from),
        battery_v: r.battery_v.map(f64::from),
        dtcs: r.dtcs.clone(),
    }
}
