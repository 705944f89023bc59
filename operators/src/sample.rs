//! The sample/detection types are `analytics`'s: detectors written there plug in here
//! unchanged. This module adds the mapping from a stored position.

pub use analytics::{Detection, Sample};

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
