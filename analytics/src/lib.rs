//! Pure fleet analytics for Clutch: what a stream of one vehicle's samples says about its
//! fuel, its health and its driver.
//!
//! This crate owns the detectors and formulas of issue 7 that need no runtime: fuel level
//! smoothing, refuel and theft/drain detection, fuel consumption and its anomalies, fuel
//! sensor faults ([`fuel`]); DTC raised/cleared with SAE J2012 descriptions, service-due
//! evaluation, low battery ([`maintenance`]); the driver/vehicle safety score ([`score`]).
//! It is pure: values in, values out. No tokio, no sockets, no SQL, no wall clock (event
//! times are the samples' times, or a deadline derived from them). The `operators` crate
//! feeds it, checkpoints detector state (every detector is `Serialize + Deserialize`) and
//! writes the [`Detection`]s to the `events` table.
//!
//! Every detector has the same shape: `push(&mut self, &Sample, &mut Vec<Detection>)` for
//! each sample of one device in time order, and `tick(&mut self, now, &mut Vec<Detection>)`
//! for timers (a drain still open when the device goes quiet). Samples that arrive out of
//! order or twice (time not after the last accepted one) are dropped and counted in the
//! detector's `dropped` counter: state moves forward only, so a replay of the same samples
//! from a checkpoint emits the same detections with the same `time` (the downstream
//! idempotency key is device, kind, time).
//!
//! # Layout
//!
//! - [`fuel`]: [`fuel::FuelDetector`] (level smoothing, refuel, theft/drain, sensor fault,
//!   consumption anomaly), [`fuel::TripFuel`] (consumption of one trip), the robust z-score.
//! - [`maintenance`]: [`maintenance::DtcDetector`], [`maintenance::ServiceDueDetector`],
//!   [`maintenance::BatteryDetector`], and [`maintenance::dtc_description`] (static table).
//! - [`score`]: [`score::ScoreConfig`], [`score::TripStats`], [`score::score`].
//! - `geo` (private): distances between fixes.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub mod fuel;
mod geo;
pub mod maintenance;
pub mod score;

/// One fix/telemetry sample of one device. The `operators` crate builds it from a stored
/// position (typed columns + `attributes` JSON). Every field but `time` may be missing;
/// detectors use what is there.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Sample {
    pub time: DateTime<Utc>,
    pub lat: f64,
    pub lon: f64,
    /// Whether the position is a real GNSS fix.
    pub valid: bool,
    pub speed_kmh: Option<f64>,
    pub course: Option<f64>,
    pub ignition: Option<bool>,
    pub odometer_m: Option<f64>,
    pub fuel_level_pct: Option<f64>,
    pub fuel_level_l: Option<f64>,
    /// Cumulative fuel used counter (OBD / CAN), litres.
    pub fuel_used_l: Option<f64>,
    pub fuel_rate_lph: Option<f64>,
    pub engine_hours: Option<f64>,
    /// Vehicle supply (main battery) voltage.
    pub power_v: Option<f64>,
    /// The tracker's own backup battery voltage.
    pub battery_v: Option<f64>,
    /// Active diagnostic trouble codes; `None` = not reported in this sample,
    /// `Some(empty)` = reported, none active.
    pub dtcs: Option<Vec<String>>,
}

/// What a detector emits: one row of the `events` table (migrations 0002 + 0005).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Detection {
    /// snake_case: `refuel`, `fuel_theft`, `fuel_sensor_fault`, `fuel_consumption_anomaly`,
    /// `dtc_raised`, `dtc_cleared`, `service_due`, `low_battery`.
    pub kind: String,
    /// Start of the event; part of the idempotency key, so derived from sample times only.
    pub time: DateTime<Utc>,
    pub end_time: Option<DateTime<Utc>>,
    /// Litres for fuel events, L/100 km for consumption anomalies, volts for battery.
    pub magnitude: Option<f64>,
    /// `info` | `low` | `medium` | `high` | `critical`.
    pub severity: Option<String>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub attributes: serde_json::Value,
}

impl Detection {
    pub(crate) fn new(kind: &str, time: DateTime<Utc>) -> Detection {
        Detection {
            kind: kind.to_owned(),
            time,
            end_time: None,
            magnitude: None,
            severity: None,
            lat: None,
            lon: None,
            attributes: serde_json::Value::Object(Default::default()),
        }
    }

    pub(crate) fn at(mut self, s: &Sample) -> Detection {
        if s.valid && s.lat.is_finite() && s.lon.is_finite() {
            self.lat = Some(s.lat);
            self.lon = Some(s.lon);
        }
        self
    }

    pub(crate) fn severity(mut self, s: &str) -> Detection {
        self.severity = Some(s.to_owned());
        self
    }
}

/// Errors of configuration input (tenant settings, vehicle profiles).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("invalid {what}: {why}")]
    Invalid { what: String, why: String },
}

/// A finite value in a plausible range, else `None`: bad sensor values are dropped, never
/// propagated as NaN.
pub(crate) fn finite_in(v: Option<f64>, lo: f64, hi: f64) -> Option<f64> {
    v.filter(|x| x.is_finite() && *x >= lo && *x <= hi)
}

/// Median of a slice (sorted copy); `None` when empty.
pub(crate) fn median(xs: &[f64]) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    // Selection, not a sort: the fuel detector takes a window median at every sample,
    // and sorting was a sixth of all operator time (operators/README.md, "Throughput").
    let mut v: Vec<f64> = xs.to_vec();
    let n = v.len();
    let (below, mid, _) = v.select_nth_unstable_by(n / 2, f64::total_cmp);
    let mid = *mid;
    Some(if n % 2 == 1 {
        mid
    } else {
        // The other middle value is the largest of the lower half.
        let lower = below.iter().copied().max_by(f64::total_cmp).unwrap_or(mid);
        (lower + mid) / 2.0
    })
}

#[cfg(test)]
mod median_tests {
    use super::median;

    /// The selection gives what sorting gave, odd and even lengths, repeats included.
    #[test]
    fn median_matches_a_sorted_middle() {
        let sorted_median = |xs: &[f64]| {
            let mut v = xs.to_vec();
            v.sort_by(f64::total_cmp);
            let n = v.len();
            if n % 2 == 1 {
                v[n / 2]
            } else {
                (v[n / 2 - 1] + v[n / 2]) / 2.0
            }
        };
        let mut seed = 7u64;
        for n in 1..40 {
            let xs: Vec<f64> = (0..n)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ((seed >> 33) % 17) as f64 - 8.0
                })
                .collect();
            assert_eq!(median(&xs), Some(sorted_median(&xs)), "{xs:?}");
        }
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[2.0, 1.0]), Some(1.5));
    }
}
