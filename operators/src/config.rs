//! `[operators]` settings. Every threshold has a default; the defaults are the ones the
//! accuracy test (README) was measured with.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OperatorsConfig {
    /// Run the operators in `clutch serve`.
    pub enabled: bool,
    /// Name in `operator_checkpoints.operator`.
    pub name: String,
    /// Device state is checkpointed in this many partitions (device id modulo), so a
    /// checkpoint rewrites only the partitions that changed.
    pub checkpoint_partitions: u32,
    pub checkpoint_interval_s: u64,
    /// On a durable bus (NATS, Fluvio), checkpoint and commit early once this many
    /// batches were processed since the last commit: keep it under the bus's
    /// `max_uncommitted` (per partition), or the broker pauses delivery until the timer.
    pub commit_after_batches: u64,
    /// Events are written (and then published) at least this often…
    pub flush_interval_ms: u64,
    /// …or when this many are pending.
    pub flush_max_events: usize,
    /// Timer resolution (offline, trip end, dwell, idle).
    pub tick_interval_ms: u64,
    /// After a restart or a lag, replay at most this far back from the store.
    pub max_catch_up_s: u64,
    /// Capacity of the broadcast of [`crate::OperatorEvent`]s to the API.
    pub publish_capacity: usize,
    /// A device is offline after this long without a record.
    pub offline_timeout_s: u64,
    pub input: InputConfig,
    pub trips: TripConfig,
    pub behaviour: BehaviourConfig,
    pub geofences: GeofenceConfig,
}

impl Default for OperatorsConfig {
    fn default() -> Self {
        OperatorsConfig {
            enabled: true,
            name: "operators".into(),
            checkpoint_partitions: 16,
            checkpoint_interval_s: 10,
            commit_after_batches: 2048,
            flush_interval_ms: 200,
            flush_max_events: 2000,
            tick_interval_ms: 1000,
            max_catch_up_s: 6 * 3600,
            publish_capacity: 4096,
            offline_timeout_s: 600,
            input: InputConfig::default(),
            trips: TripConfig::default(),
            behaviour: BehaviourConfig::default(),
            geofences: GeofenceConfig::default(),
        }
    }
}

/// Which fixes are believed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InputConfig {
    /// A fix this far after its arrival is a broken clock: dropped.
    pub max_future_s: i64,
    /// Implied speed between fixes above this is a teleport (bad GPS): the fix is not
    /// used for position-based logic until a second fix confirms the new place.
    pub max_plausible_kmh: f64,
    /// Fix quality gate for position- and GPS-derived logic.
    pub min_satellites: i16,
    pub max_hdop: f32,
}

impl Default for InputConfig {
    fn default() -> Self {
        InputConfig {
            max_future_s: 600,
            max_plausible_kmh: 300.0,
            min_satellites: 4,
            max_hdop: 5.0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TripConfig {
    /// A trip shorter than this, or…
    pub min_duration_s: i64,
    /// …shorter than this, is not a trip (a car moved in a car park).
    pub min_distance_m: f64,
    /// Ignition devices: an ignition-off shorter than this does not end the trip.
    pub min_stop_ignition_s: i64,
    /// Devices without ignition: standing still this long ends the trip.
    pub min_stop_motion_s: i64,
    /// Moving means at least this speed (km/h)…
    pub moving_kmh: f64,
    /// …and standing below this one.
    pub standing_kmh: f64,
    /// Engine on and standing longer than this is an `idle` event.
    pub idle_min_s: i64,
    /// A device silent this long during a trip: the trip ends at its last fix.
    pub quiet_end_s: i64,
    /// The odometer is trusted for a trip's distance when its delta is within this
    /// factor of the fix path (and never decreased).
    pub odometer_tolerance: f64,
}

impl Default for TripConfig {
    fn default() -> Self {
        TripConfig {
            min_duration_s: 60,
            min_distance_m: 200.0,
            min_stop_ignition_s: 60,
            min_stop_motion_s: 180,
            moving_kmh: 5.0,
            standing_kmh: 3.0,
            idle_min_s: 120,
            quiet_end_s: 600,
            odometer_tolerance: 1.5,
        }
    }
}

/// Harsh thresholds of one vehicle class, in g.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HarshThresholds {
    pub acceleration_g: f64,
    pub braking_g: f64,
    pub cornering_g: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BehaviourConfig {
    /// Per vehicle class (`vehicles.attributes.class` or `devices.attributes.vehicle_class`;
    /// `light` when unset or unknown).
    pub classes: BTreeMap<String, HarshThresholds>,
    /// An episode shorter than this is a pothole or a door slam, not driving.
    pub min_duration_ms: i64,
    /// Once started, an episode lasts while the value stays above this fraction of the
    /// threshold (hysteresis: no flapping around the threshold).
    pub hysteresis: f64,
    /// GPS fallback: consecutive fixes further apart than this cannot show a harsh event.
    pub gps_max_gap_s: f64,
    /// GPS fallback: fix quality needed.
    pub gps_min_satellites: i16,
    pub gps_max_hdop: f32,
    /// GPS fallback: exponential smoothing of the derived accelerations (weight of the newest).
    pub gps_smoothing: f64,
    /// Absolute speed limit, km/h (zone limits from geofence rules apply below it).
    pub speed_limit_kmh: f64,
    pub overspeed_min_duration_s: i64,
    /// Back under the limit this long ends an overspeed episode (shorter dips are part of it).
    pub overspeed_end_grace_s: i64,
    /// Severity bands: km/h over the limit for `medium`, `high`, `critical` (below: `low`).
    pub overspeed_bands_kmh: [f64; 3],
}

impl Default for BehaviourConfig {
    fn default() -> Self {
        // Light-vehicle values follow common fleet-telematics defaults (harsh braking
        // around 0.45 g, acceleration around 0.35 g, cornering around 0.4 g); heavier
        // classes trigger lower because their normal envelope is smaller.
        let mut classes = BTreeMap::new();
        classes.insert(
            "light".into(),
            HarshThresholds {
                acceleration_g: 0.35,
                braking_g: 0.45,
                cornering_g: 0.40,
            },
        );
        classes.insert(
            "medium".into(),
            HarshThresholds {
                acceleration_g: 0.28,
                braking_g: 0.38,
                cornering_g: 0.32,
            },
        );
        classes.insert(
            "heavy".into(),
            HarshThresholds {
                acceleration_g: 0.20,
                braking_g: 0.30,
                cornering_g: 0.25,
            },
        );
        BehaviourConfig {
            classes,
            min_duration_ms: 300,
            hysteresis: 0.8,
            gps_max_gap_s: 3.0,
            gps_min_satellites: 5,
            gps_max_hdop: 3.0,
            gps_smoothing: 0.7,
            speed_limit_kmh: 90.0,
            overspeed_min_duration_s: 3,
            overspeed_end_grace_s: 5,
            overspeed_bands_kmh: [10.0, 20.0, 30.0],
        }
    }
}

impl BehaviourConfig {
    pub fn thresholds(&self, class: Option<&str>) -> HarshThresholds {
        class
            .and_then(|c| self.classes.get(c))
            .or_else(|| self.classes.get("light"))
            .copied()
            .unwrap_or(HarshThresholds {
                acceleration_g: 0.35,
                braking_g: 0.45,
                cornering_g: 0.40,
            })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeofenceConfig {
    /// Re-read fences this often even without a NOTIFY (a missed notification while
    /// the listener reconnects must not leave stale fences for long).
    pub reload_interval_s: u64,
}

impl Default for GeofenceConfig {
    fn default() -> Self {
        GeofenceConfig { reload_interval_s: 300 }
    }
}
