//! Fuel: level smoothing, refuel and theft/drain detection, sensor faults, consumption per
//! trip and consumption anomalies.
//!
//! # How the level detector works
//!
//! A tank level sensor is noisy (white noise of a percent or two of the tank), sloshes
//! with acceleration, and the level falls as the engine burns fuel. The detector works on
//! the *compensated level* `c = level + fuel burnt so far` (burnt from the CAN/OBD fuel
//! counter when present, else the fuel rate, else a model: idle L/h with the engine on and
//! standing, L/100 km while moving). Without refuels or thefts `c` is flat but for noise;
//! a refuel is a step up, a theft a step down, a slow drain a ramp down.
//!
//! `c` is smoothed by a running median over a window (`window_s`, at least `min_window`
//! samples): a median ignores slosh spikes and single bad readings. An *anchor* holds the
//! level before a change: it follows the smoothed level while the vehicle moves (so model
//! errors in the consumption never accumulate) and is frozen while it stands. When the
//! smoothed level departs from the anchor by half the threshold a *departure* opens; it
//! closes as noise if it falls back under a quarter of the threshold, and is confirmed as
//! an event once it exceeds the threshold and has settled (three consecutive windows
//! within a quarter of the threshold of each other). The threshold is
//! `max(min_volume, noise_k × σ)`, σ the sensor noise measured on the stationary samples
//! (median absolute difference of consecutive samples), so a noisier sensor needs a larger
//! change. The start and end of the change are where the smoothed level crosses 10 % and
//! 90 % of the step (extrapolated to 0 and 100 % for a ramp). By default only changes that
//! happen while the vehicle stands are events (`theft_while_moving`, `refuel_while_moving`):
//! a change while driving re-anchors silently.
//!
//! A stuck sensor (the same reading while the engine burnt `stuck_consumption_l` or the
//! vehicle drove `stuck_distance_km`), a flapping one (`flap_reversals` large opposite
//! jumps within `flap_window` samples) or one reading out of range emits one
//! `fuel_sensor_fault` and suppresses refuel and theft events until it reads sanely for
//! `fault_recovery_samples` samples; then the detector re-anchors on the new level.
//!
//! Level in % needs the tank size to give litres. Without it the detector works in % of
//! the tank (thresholds `min_volume_pct`, `noise_prior_pct`), cannot subtract burnt fuel,
//! and its events carry `magnitude: None` and `attributes.percent`.

use std::collections::VecDeque;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::{ConfigError, Detection, Sample, finite_in, geo, median};

/// Fuel detector parameters. Defaults suit a car or van tank read every 10–60 s.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FuelConfig {
    /// Tank size from the vehicle profile; needed to turn a level in % into litres.
    pub tank_l: Option<f64>,
    /// Smallest refuel or theft reported, litres.
    pub min_volume_l: f64,
    /// The same in % of the tank, used when the tank size is unknown.
    pub min_volume_pct: f64,
    /// The threshold is at least `noise_k` × the measured per-sample noise σ.
    pub noise_k: f64,
    /// σ assumed until enough stationary samples measured it, litres / % of tank.
    pub noise_prior_l: f64,
    pub noise_prior_pct: f64,
    /// Median window: samples within this many seconds, at least `min_window`, at most
    /// `max_window` samples.
    pub window_s: f64,
    pub min_window: usize,
    pub max_window: usize,
    /// Below this speed the vehicle stands.
    pub stationary_kmh: f64,
    pub theft_while_moving: bool,
    pub refuel_while_moving: bool,
    /// Consumption model when the device reports neither a fuel counter nor a rate.
    pub idle_lph: f64,
    pub driving_l_per_100km: f64,
    /// A departure still open when the device has been quiet this long is flushed by `tick`.
    pub quiet_flush_s: f64,
    /// A departure open this long is decided without waiting for the level to settle.
    pub max_departure_s: f64,
    /// Changes spanning longer than this are reported as a slow drain.
    pub slow_drain_s: f64,
    /// A change is over when the smoothed level moved less than a quarter of the
    /// threshold over this long (a slow drain must not be cut in two).
    pub settle_s: f64,
    /// Stuck: at least this many identical readings…
    pub stuck_min_samples: usize,
    /// …while this much fuel was burnt, or this far driven.
    pub stuck_consumption_l: f64,
    pub stuck_distance_km: f64,
    /// Flapping: this many reversals of jumps ≥ the threshold within this many samples.
    pub flap_window: usize,
    pub flap_reversals: usize,
    /// Out of range: this many out-of-range readings within `flap_window` samples.
    pub out_of_range_samples: usize,
    /// Sane readings in a row that end a fault.
    pub fault_recovery_samples: usize,
    /// Consumption anomaly: |modified z| above this, against the last `anomaly_history`
    /// trips of at least `anomaly_min_km`, once `anomaly_min_trips` are known.
    pub anomaly_z: f64,
    pub anomaly_min_trips: usize,
    pub anomaly_history: usize,
    pub anomaly_min_km: f64,
    /// Without an ignition signal a trip ends after standing this long.
    pub trip_stop_s: f64,
}

impl Default for FuelConfig {
    fn default() -> Self {
        FuelConfig {
            tank_l: None,
            min_volume_l: 5.0,
            min_volume_pct: 8.0,
            noise_k: 4.0,
            noise_prior_l: 1.0,
            noise_prior_pct: 1.5,
            window_s: 120.0,
            min_window: 5,
            max_window: 31,
            stationary_kmh: 3.0,
            theft_while_moving: false,
            refuel_while_moving: false,
            idle_lph: 1.0,
            driving_l_per_100km: 10.0,
            quiet_flush_s: 900.0,
            max_departure_s: 4.0 * 3600.0,
            slow_drain_s: 300.0,
            settle_s: 480.0,
            stuck_min_samples: 12,
            stuck_consumption_l: 4.0,
            stuck_distance_km: 40.0,
            flap_window: 20,
            flap_reversals: 3,
            out_of_range_samples: 5,
            fault_recovery_samples: 20,
            anomaly_z: 3.5,
            anomaly_min_trips: 10,
            anomaly_history: 50,
            anomaly_min_km: 5.0,
            trip_stop_s: 300.0,
        }
    }
}

impl FuelConfig {
    /// Every problem at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut errors = Vec::new();
        if let Some(t) = self.tank_l
            && !(t.is_finite() && t > 0.0 && t <= 100_000.0)
        {
            errors.push(format!("tank_l must be in (0, 100000] litres, got {t}"));
        }
        let positive = [
            ("min_volume_l", self.min_volume_l),
            ("min_volume_pct", self.min_volume_pct),
            ("noise_k", self.noise_k),
            ("noise_prior_l", self.noise_prior_l),
            ("noise_prior_pct", self.noise_prior_pct),
            ("window_s", self.window_s),
            ("stationary_kmh", self.stationary_kmh),
            ("quiet_flush_s", self.quiet_flush_s),
            ("max_departure_s", self.max_departure_s),
            ("slow_drain_s", self.slow_drain_s),
            ("settle_s", self.settle_s),
            ("stuck_consumption_l", self.stuck_consumption_l),
            ("stuck_distance_km", self.stuck_distance_km),
            ("anomaly_z", self.anomaly_z),
            ("anomaly_min_km", self.anomaly_min_km),
            ("trip_stop_s", self.trip_stop_s),
        ];
        for (name, v) in positive {
            if !(v.is_finite() && v > 0.0) {
                errors.push(format!("{name} must be a positive number, got {v}"));
            }
        }
        for (name, v) in [
            ("idle_lph", self.idle_lph),
            ("driving_l_per_100km", self.driving_l_per_100km),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                errors.push(format!("{name} must be a non-negative number, got {v}"));
            }
        }
        if self.min_window < 3 || self.max_window < self.min_window || self.max_window > 1000 {
            errors.push(format!(
                "need 3 <= min_window <= max_window <= 1000, got {} and {}",
                self.min_window, self.max_window
            ));
        }
        if self.stuck_min_samples < 2 || self.flap_window < 3 || self.flap_reversals == 0 {
            errors.push("stuck_min_samples >= 2, flap_window >= 3, flap_reversals >= 1".to_owned());
        }
        if self.anomaly_min_trips < 3 || self.anomaly_history < self.anomaly_min_trips {
            errors.push("need 3 <= anomaly_min_trips <= anomaly_history".to_owned());
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid {
                what: "fuel config".to_owned(),
                why: errors.join("; "),
            })
        }
    }
}

/// What the detector's level numbers are in.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum Unit {
    Litres,
    /// % of the tank: the tank size is unknown.
    Percent,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Pt {
    t: DateTime<Utc>,
    /// Compensated level: level + burnt since the detector started.
    c: f64,
    /// Burnt so far at this sample (c − level).
    burnt: f64,
    stationary: bool,
    lat: Option<f64>,
    lon: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Departure {
    anchor: f64,
    /// Buffer index (absolute sample number) where it opened.
    opened: u64,
    opened_t: DateTime<Utc>,
}

/// The previous accepted sample, for deltas.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
struct Prev {
    t: Option<DateTime<Utc>>,
    used: Option<f64>,
    rate: Option<f64>,
    ignition: Option<bool>,
    odometer_m: Option<f64>,
    fix: Option<(f64, f64)>,
    moving: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Fault {
    reason: String,
    since: DateTime<Utc>,
    healthy: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
struct Stuck {
    value: Option<f64>,
    since: Option<DateTime<Utc>>,
    count: usize,
    burnt_l: f64,
    km: f64,
}

/// Refuel, theft/drain, sensor-fault and consumption-anomaly detector for one vehicle.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FuelDetector {
    cfg: FuelConfig,
    unit: Option<Unit>,
    /// Samples dropped: out of order, duplicated, or without a usable time.
    pub dropped: u64,
    /// Level readings rejected as out of range.
    pub rejected_levels: u64,
    prev: Prev,
    /// Fuel burnt since start, in the level unit (0 in % without a tank size), and litres.
    burnt: f64,
    burnt_l: f64,
    buf: VecDeque<Pt>,
    /// Absolute sample number of `buf[0]`.
    buf_base: u64,
    anchor: Option<f64>,
    departure: Option<Departure>,
    /// Recent |Δc| of consecutive stationary samples, for σ.
    diffs: VecDeque<f64>,
    /// σ from `diffs` once there are enough of them (recomputed when they change).
    sigma: Option<f64>,
    last_level: Option<(DateTime<Utc>, f64, bool)>,
    /// Raw level steps (signed, only those ≥ the threshold are kept as ±1, else 0) and
    /// out-of-range flags over the last `flap_window` samples.
    jumps: VecDeque<i8>,
    out_of_range: VecDeque<bool>,
    stuck: Stuck,
    fault: Option<Fault>,
    trip: Option<TripFuel>,
    stood_since: Option<DateTime<Utc>>,
    baseline: ConsumptionBaseline,
    /// The last finished trip's consumption (for the operators' trip rows).
    pub last_trip: Option<TripFuelReport>,
}

impl FuelDetector {
    pub fn new(cfg: FuelConfig) -> Result<FuelDetector, ConfigError> {
        cfg.validate()?;
        let history = cfg.anomaly_history;
        Ok(FuelDetector {
            cfg,
            unit: None,
            dropped: 0,
            rejected_levels: 0,
            prev: Prev::default(),
            burnt: 0.0,
            burnt_l: 0.0,
            buf: VecDeque::new(),
            buf_base: 0,
            anchor: None,
            departure: None,
            diffs: VecDeque::new(),
            sigma: None,
            last_level: None,
            jumps: VecDeque::new(),
            out_of_range: VecDeque::new(),
            stuck: Stuck::default(),
            fault: None,
            trip: None,
            stood_since: None,
            baseline: ConsumptionBaseline::new(history),
            last_trip: None,
        })
    }

    /// Anchor and open departure, for debugging.
    #[doc(hidden)]
    pub fn debug_state(&self) -> String {
        format!(
            "anchor {:?} dep {:?} burnt {:.2} fault {:?}",
            self.anchor.map(|a| (a * 10.0).round() / 10.0),
            self.departure.as_ref().map(|d| (
                (d.anchor * 10.0).round() / 10.0,
                d.opened_t.format("%H:%M:%S").to_string()
            )),
            self.burnt,
            self.fault.as_ref().map(|f| &f.reason)
        )
    }

    pub fn config(&self) -> &FuelConfig {
        &self.cfg
    }

    /// The smoothed (median) level now, in the detector's unit, burnt fuel not added back.
    pub fn smoothed_level(&self) -> Option<(f64, Unit)> {
        let m = self.window_median(self.buf.len())?;
        Some((m - self.burnt, self.unit?))
    }

    /// Measured per-sample noise σ, in the detector's unit.
    pub fn noise(&self) -> f64 {
        if let Some(sigma) = self.sigma {
            sigma
        } else if self.unit == Some(Unit::Percent) {
            self.cfg.noise_prior_pct
        } else {
            self.cfg.noise_prior_l
        }
    }

    /// The change a refuel or theft must exceed, in the detector's unit.
    pub fn threshold(&self) -> f64 {
        let min = if self.unit == Some(Unit::Percent) {
            self.cfg.min_volume_pct
        } else {
            self.cfg.min_volume_l
        };
        min.max(self.cfg.noise_k * self.noise())
    }

    pub fn push(&mut self, s: &Sample, out: &mut Vec<Detection>) {
        if self.prev.t.is_some_and(|t| s.time <= t) {
            self.dropped += 1;
            return;
        }
        let dt = self
            .prev
            .t
            .map_or(0.0, |t| (s.time - t).num_milliseconds() as f64 / 1000.0);
        let moving = self.is_moving(s, dt);
        let (burnt_l, km) = self.consumption(s, dt, moving);
        self.burnt_l += burnt_l;
        self.trip_update(s, moving, out);

        if let Some(level) = self.level_of(s) {
            if self.unit == Some(Unit::Litres) {
                self.burnt += burnt_l;
            }
            self.on_level(s, level, moving, burnt_l, km, out);
        } else if self.unit == Some(Unit::Litres) {
            self.burnt += burnt_l;
        }

        self.prev = Prev {
            t: Some(s.time),
            used: finite_in(s.fuel_used_l, 0.0, 1e9),
            rate: finite_in(s.fuel_rate_lph, 0.0, 500.0),
            ignition: s.ignition,
            odometer_m: finite_in(s.odometer_m, 0.0, 1e11),
            fix: (s.valid && geo::plausible(s.lat, s.lon)).then_some((s.lat, s.lon)),
            moving,
        };
    }

    /// Timers: a departure still open when the device went quiet is decided, and a trip
    /// still open is closed.
    pub fn tick(&mut self, now: DateTime<Utc>, out: &mut Vec<Detection>) {
        let Some(last) = self.prev.t else { return };
        if (now - last).num_milliseconds() as f64 / 1000.0 < self.cfg.quiet_flush_s {
            return;
        }
        if self.departure.is_some() {
            self.decide(true, out);
        }
        if self.trip.is_some() {
            self.end_trip(out);
        }
    }

    fn is_moving(&self, s: &Sample, dt: f64) -> bool {
        if let Some(v) = finite_in(s.speed_kmh, 0.0, 400.0) {
            return v >= self.cfg.stationary_kmh;
        }
        if s.ignition == Some(false) {
            return false;
        }
        if let Some((lat, lon)) = self.prev.fix
            && s.valid
            && geo::plausible(s.lat, s.lon)
            && dt > 0.0
        {
            // GPS jitter of a few metres must not look like motion: need 25 m and 2 m/s.
            let d = geo::distance_m(lat, lon, s.lat, s.lon);
            return d > 25.0 && d / dt > 2.0;
        }
        false
    }

    /// Fuel burnt since the previous sample (litres) and km driven.
    fn consumption(&self, s: &Sample, dt: f64, moving: bool) -> (f64, f64) {
        if self.prev.t.is_none() || dt <= 0.0 {
            return (0.0, 0.0);
        }
        let km = self.km_since_prev(s, dt);
        if let (Some(a), Some(b)) = (self.prev.used, finite_in(s.fuel_used_l, 0.0, 1e9)) {
            let d = b - a;
            // A counter reset or a glitch is not consumption; fall back to the next source.
            if d >= 0.0 && d <= MAX_LPH * dt / 3600.0 + 0.5 {
                return (d, km);
            }
        }
        let gap_ok = dt <= MAX_MODEL_GAP_S;
        let rate = match (self.prev.rate, finite_in(s.fuel_rate_lph, 0.0, 500.0)) {
            (Some(a), Some(b)) => Some((a + b) / 2.0),
            (a, b) => a.or(b),
        };
        if let Some(r) = rate {
            return (if gap_ok { r * dt / 3600.0 } else { 0.0 }, km);
        }
        let engine_on = s.ignition.or(self.prev.ignition) == Some(true) || moving;
        if !engine_on || !gap_ok {
            return (0.0, km);
        }
        if moving || self.prev.moving {
            (km * self.cfg.driving_l_per_100km / 100.0, km)
        } else {
            (self.cfg.idle_lph * dt / 3600.0, km)
        }
    }

    fn km_since_prev(&self, s: &Sample, dt: f64) -> f64 {
        if let (Some(a), Some(b)) = (self.prev.odometer_m, finite_in(s.odometer_m, 0.0, 1e11)) {
            let d = b - a;
            if d >= 0.0 && d <= MAX_SPEED_MS * dt + 50.0 {
                return d / 1000.0;
            }
        }
        if let Some((lat, lon)) = self.prev.fix
            && s.valid
            && geo::plausible(s.lat, s.lon)
        {
            let d = geo::distance_m(lat, lon, s.lat, s.lon);
            if d <= MAX_SPEED_MS * dt + 50.0 && d > 25.0 {
                return d / 1000.0;
            }
        }
        0.0
    }

    /// The level in the detector's unit; fixes the unit at the first level seen.
    /// Out-of-range readings count towards a sensor fault and give `Some(NaN)`.
    fn level_of(&mut self, s: &Sample) -> Option<f64> {
        let tank = self.cfg.tank_l;
        let raw_l = s.fuel_level_l.filter(|v| !v.is_nan());
        let raw_pct = s.fuel_level_pct.filter(|v| !v.is_nan());
        if raw_l.is_none() && raw_pct.is_none() {
            return None;
        }
        let unit = *self.unit.get_or_insert(if raw_l.is_some() || tank.is_some() {
            Unit::Litres
        } else {
            Unit::Percent
        });
        let (value, max) = match unit {
            Unit::Litres => match (raw_l, raw_pct, tank) {
                (Some(l), _, t) => (l, t.map_or(100_000.0, |t| t * 1.05)),
                (None, Some(p), Some(t)) => (p * t / 100.0, t * 1.05),
                // A % reading for a tank of unknown size cannot become litres.
                (None, Some(_), None) => return None,
                (None, None, _) => return None,
            },
            Unit::Percent => match (raw_pct, raw_l) {
                (Some(p), _) => (p, 102.0),
                (None, _) => return None,
            },
        };
        if value.is_finite() && value >= 0.0 && value <= max {
            Some(value)
        } else {
            self.rejected_levels += 1;
            Some(f64::NAN)
        }
    }

    fn on_level(&mut self, s: &Sample, level: f64, moving: bool, burnt_l: f64, km: f64, out: &mut Vec<Detection>) {
        let thr = self.threshold();
        let bad = !level.is_finite();
        // Sensor health first: a faulty sensor must not raise thefts.
        push_capped(&mut self.out_of_range, bad, self.cfg.flap_window);
        let jump = match (bad, self.last_level) {
            (false, Some((_, prev, _))) if (level - prev).abs() >= thr => {
                if level > prev {
                    1
                } else {
                    -1
                }
            }
            _ => 0,
        };
        push_capped(&mut self.jumps, jump, self.cfg.flap_window);
        if bad {
            self.stuck = Stuck::default();
        } else if self.stuck.value == Some(level) {
            self.stuck.count += 1;
            self.stuck.burnt_l += burnt_l;
            self.stuck.km += km;
        } else {
            self.stuck = Stuck {
                value: Some(level),
                since: Some(s.time),
                count: 1,
                burnt_l: 0.0,
                km: 0.0,
            };
        }
        let reversals = self
            .jumps
            .iter()
            .filter(|j| **j != 0)
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|w| w[0] != w[1])
            .count();
        let oor = self.out_of_range.iter().filter(|b| **b).count();
        let stuck = self.stuck.count >= self.cfg.stuck_min_samples
            && (self.stuck.burnt_l >= self.cfg.stuck_consumption_l || self.stuck.km >= self.cfg.stuck_distance_km);
        let reason = if stuck {
            Some("stuck")
        } else if reversals >= self.cfg.flap_reversals {
            Some("flapping")
        } else if oor >= self.cfg.out_of_range_samples {
            Some("out_of_range")
        } else {
            None
        };

        match (&mut self.fault, reason) {
            (None, Some(reason)) => {
                let since = if reason == "stuck" {
                    self.stuck.since.unwrap_or(s.time)
                } else {
                    s.time
                };
                let mut d = Detection::new("fuel_sensor_fault", since).at(s).severity("medium");
                d.attributes = serde_json::json!({
                    "reason": reason,
                    "reversals": reversals,
                    "out_of_range": oor,
                    "same_readings": self.stuck.count,
                    "burnt_while_stuck_l": round2(self.stuck.burnt_l),
                });
                out.push(d);
                self.fault = Some(Fault {
                    reason: reason.to_owned(),
                    since,
                    healthy: 0,
                });
                self.departure = None;
                self.anchor = None;
                self.buf.clear();
            }
            (Some(f), None) => {
                // A stuck sensor heals when its reading moves; a flapping one when the
                // window has no reversal left.
                let healthy = !bad && jump == 0 && (f.reason != "stuck" || self.stuck.count <= 1);
                f.healthy = if healthy { f.healthy + 1 } else { 0 };
                if f.healthy >= self.cfg.fault_recovery_samples {
                    self.fault = None;
                    self.anchor = None;
                    self.buf.clear();
                }
            }
            (Some(f), Some(_)) => f.healthy = 0,
            (None, None) => {}
        }
        if bad {
            return;
        }
        let stationary = !moving;
        let c = level + self.burnt;
        if let Some((pt, pc, pst)) = self.last_level
            && stationary
            && pst
            && (s.time - pt).num_seconds() <= 900
        {
            push_capped(&mut self.diffs, (c - pc).abs(), 101);
            if self.diffs.len() >= 15 {
                let xs: Vec<f64> = self.diffs.iter().copied().collect();
                // median |N(0, 2σ²)| = 0.6745·√2·σ
                self.sigma = median(&xs).map(|m| m / 0.9539);
            }
        }
        self.last_level = Some((s.time, c, stationary));
        if self.fault.is_some() {
            return;
        }
        let fix = s.valid && geo::plausible(s.lat, s.lon);
        self.buf.push_back(Pt {
            t: s.time,
            c,
            burnt: self.burnt,
            stationary,
            lat: fix.then_some(s.lat),
            lon: fix.then_some(s.lon),
        });
        self.trim();
        self.step(stationary, out);
    }

    /// Samples in the window ending at buffer position `end` (exclusive).
    fn window_len(&self, end: usize) -> usize {
        if end == 0 {
            return 0;
        }
        // "Older than window_s" as one cutoff instant, so the scan compares timestamps
        // instead of computing a duration per sample (this runs at every sample). Same
        // test as `(last - t).num_milliseconds() / 1000 > window_s`: whole milliseconds.
        let last = self.buf[end - 1].t;
        let window_ms = (self.cfg.window_s * 1000.0).floor();
        let cutoff = (window_ms < 1e15).then(|| last - chrono::TimeDelta::milliseconds(window_ms as i64 + 1));
        let mut n = 0;
        for i in (0..end).rev() {
            let old = cutoff.is_some_and(|c| self.buf[i].t <= c);
            if n >= self.cfg.max_window || (n >= self.cfg.min_window && old) {
                break;
            }
            n += 1;
        }
        n
    }

    fn window_median(&self, end: usize) -> Option<f64> {
        let n = self.window_len(end);
        if n < self.cfg.min_window {
            return None;
        }
        let xs: Vec<f64> = self.buf.range(end - n..end).map(|p| p.c).collect();
        median(&xs)
    }

    fn trim(&mut self) {
        let keep_from = match &self.departure {
            Some(d) => d
                .opened
                .saturating_sub(self.buf_base)
                .saturating_sub(2 * self.cfg.max_window as u64) as usize,
            None => self.buf.len().saturating_sub(4 * self.cfg.max_window),
        };
        for _ in 0..keep_from.min(self.buf.len()) {
            self.buf.pop_front();
            self.buf_base += 1;
        }
        // A departure can hold at most this many samples (a day at 1 Hz is the extreme).
        if self.buf.len() > MAX_BUFFER {
            self.buf.pop_front();
            self.buf_base += 1;
        }
    }

    fn step(&mut self, stationary: bool, out: &mut Vec<Detection>) {
        let end = self.buf.len();
        let Some(m) = self.window_median(end) else { return };
        let thr = self.threshold();
        match &self.departure {
            None => {
                let Some(a) = self.anchor else {
                    self.anchor = Some(m);
                    return;
                };
                if (m - a).abs() >= thr / 2.0 {
                    let opened = self.buf_base + end as u64 - 1;
                    self.departure = Some(Departure {
                        anchor: a,
                        opened,
                        opened_t: self.buf[end - 1].t,
                    });
                } else if !stationary {
                    self.anchor = Some(m);
                }
            }
            Some(dep) => {
                let d = m - dep.anchor;
                let open_s = (self.buf[end - 1].t - dep.opened_t).num_seconds() as f64;
                if d.abs() < thr / 4.0 {
                    self.departure = None;
                    if !stationary {
                        self.anchor = Some(m);
                    }
                    return;
                }
                if d.abs() >= thr && (self.settled(thr) || open_s >= self.cfg.max_departure_s) {
                    self.decide(false, out);
                }
            }
        }
    }

    /// Three consecutive windows agree within a quarter of the threshold, and so does the
    /// window `settle_s` ago.
    fn settled(&self, thr: f64) -> bool {
        let end = self.buf.len();
        let t_end = self.buf[end - 1].t;
        let Some(k) = self
            .buf
            .iter()
            .rposition(|p| (t_end - p.t).num_milliseconds() as f64 / 1000.0 >= self.cfg.settle_s)
        else {
            return false;
        };
        let (Some(m_now), Some(m_then)) = (self.window_median(end), self.window_median(k + 1)) else {
            return false;
        };
        if (m_now - m_then).abs() >= thr / 4.0 {
            return false;
        }
        let n1 = self.window_len(end);
        if end < 3 * n1 {
            return false;
        }
        let (Some(m0), Some(m1), Some(m2)) = (
            self.window_median(end),
            self.window_median(end - n1),
            self.window_median(end - 2 * n1),
        ) else {
            return false;
        };
        (m0 - m1).abs() < thr / 4.0 && (m0 - m2).abs() < thr / 4.0 && (m1 - m2).abs() < thr / 4.0
    }

    /// Confirm the open departure: an event if it is large enough and happened where
    /// events are wanted (standing, by default); the anchor moves to the new level.
    fn decide(&mut self, flush: bool, out: &mut Vec<Detection>) {
        let Some(dep) = self.departure.take() else { return };
        let end = self.buf.len();
        let Some(m) = self.window_median(end).or_else(|| {
            let xs: Vec<f64> = self.buf.iter().map(|p| p.c).collect();
            median(&xs)
        }) else {
            return;
        };
        self.anchor = Some(m);
        let thr = self.threshold();
        let d = m - dep.anchor;
        if d.abs() < thr {
            return;
        }
        // Where the smoothed level crosses 10 % and 90 % of the step.
        let from = (dep.opened.saturating_sub(self.buf_base) as usize).saturating_sub(self.cfg.max_window);
        let smooth: Vec<f64> = (from..end)
            .map(|i| {
                let lo = i.saturating_sub(2).max(from);
                let hi = (i + 3).min(end);
                let xs: Vec<f64> = self.buf.range(lo..hi).map(|p| p.c).collect();
                median(&xs).unwrap_or(f64::NAN)
            })
            .collect();
        let frac = |v: f64| (v - dep.anchor) / d;
        // Work backwards from the end: the change point is where the smoothed level last
        // crossed half the step, the ramp runs from its last point under 10 % to the point
        // after which it stays over 90 %. (Forwards, noise before the change would cross 10 % too early.)
        let n = smooth.len();
        let j50 = smooth
            .iter()
            .rposition(|v| frac(*v) < 0.5)
            .map_or(0, |j| (j + 1).min(n - 1));
        let j10 = smooth[..j50].iter().rposition(|v| frac(*v) < 0.1).map_or(0, |j| j + 1);
        let j90 = smooth[j50..]
            .iter()
            .rposition(|v| frac(*v) < 0.9)
            .map_or(j50, |k| (k + j50 + 1).min(n - 1));
        let (i10, i50, i90) = (j10 + from, j50 + from, j90 + from);
        let standing = self.buf.range(i10..=i90).filter(|p| p.stationary).count();
        let stationary = self.buf[i50].stationary || 2 * standing > i90 - i10 + 1;
        let rising = d > 0.0;
        let allowed =
            stationary || (rising && self.cfg.refuel_while_moving) || (!rising && self.cfg.theft_while_moving);
        if !allowed {
            return;
        }
        let (t10, t90) = (self.buf[i10].t, self.buf[i90].t);
        let span = (t90 - t10).num_milliseconds() as f64 / 1000.0;
        let (start, stop) = if span > 0.0 {
            // Linear ramp: 10 %..90 % is 80 % of it.
            let pad = Duration::milliseconds((span * 125.0).round() as i64);
            (t10 - pad, t90 + pad)
        } else {
            (t10, t90)
        };
        let start = start.max(self.buf[i10.saturating_sub(1)].t);
        let stop = stop.min(self.buf[end - 1].t);
        let slow = (stop - start).num_milliseconds() as f64 / 1000.0 > self.cfg.slow_drain_s;
        let unit = self.unit.unwrap_or(Unit::Litres);
        let size = d.abs();
        let tank = self.cfg.tank_l;
        let (kind, severity) = if rising {
            ("refuel", "info")
        } else {
            let big = tank.map_or(size >= 20.0, |t| size >= 0.2 * t);
            ("fuel_theft", if big { "high" } else { "medium" })
        };
        let p = &self.buf[i10];
        let mut det = Detection::new(kind, start).severity(severity);
        det.lat = p.lat;
        det.lon = p.lon;
        det.end_time = (stop > start).then_some(stop);
        let noise = self.noise();
        match unit {
            Unit::Litres => {
                det.magnitude = Some(round2(size));
                det.attributes = serde_json::json!({
                    "litres": round2(size),
                    "percent": tank.map(|t| round2(size / t * 100.0)),
                    "level_before_l": round2(dep.anchor - self.buf[i10].burnt),
                    "level_after_l": round2(m - self.burnt),
                    "threshold_l": round2(thr),
                    "noise_l": round2(noise),
                    "stationary": stationary,
                    "drain": if rising { None } else { Some(if slow { "slow" } else { "sudden" }) },
                    "flushed": flush,
                });
            }
            Unit::Percent => {
                det.attributes = serde_json::json!({
                    "percent": round2(size),
                    "tank_size_unknown": true,
                    "threshold_pct": round2(thr),
                    "noise_pct": round2(noise),
                    "stationary": stationary,
                    "drain": if rising { None } else { Some(if slow { "slow" } else { "sudden" }) },
                    "flushed": flush,
                });
            }
        }
        if let Some(trip) = &mut self.trip {
            if rising {
                trip.refuelled_l += size;
            } else {
                trip.stolen_l += size;
            }
        }
        out.push(det);
    }

    fn trip_update(&mut self, s: &Sample, moving: bool, out: &mut Vec<Detection>) {
        let stood = if moving {
            self.stood_since = None;
            0.0
        } else {
            let since = *self.stood_since.get_or_insert(s.time);
            (s.time - since).num_seconds() as f64
        };
        let ends = match s.ignition {
            Some(on) => !on,
            None => stood >= self.cfg.trip_stop_s,
        };
        let starts = match s.ignition {
            Some(on) => on,
            None => moving,
        };
        if self.trip.is_some() && ends {
            if let Some(t) = &mut self.trip {
                t.push(s, self.cfg.tank_l);
            }
            self.end_trip(out);
        } else if let Some(t) = &mut self.trip {
            t.push(s, self.cfg.tank_l);
        } else if starts {
            let mut t = TripFuel::new(self.cfg.stationary_kmh);
            t.push(s, self.cfg.tank_l);
            self.trip = Some(t);
        }
    }

    fn end_trip(&mut self, out: &mut Vec<Detection>) {
        let Some(trip) = self.trip.take() else { return };
        let Some(report) = trip.finish() else { return };
        if let (Some(l100), true) = (report.l_per_100km, report.distance_km >= self.cfg.anomaly_min_km)
            && let Some((z, med, mad)) = self.baseline.observe(l100, self.cfg.anomaly_min_trips)
            && z.abs() > self.cfg.anomaly_z
        {
            let mut d = Detection::new("fuel_consumption_anomaly", report.start).severity(
                if z.abs() > 2.0 * self.cfg.anomaly_z {
                    "medium"
                } else {
                    "low"
                },
            );
            d.end_time = Some(report.end);
            d.magnitude = Some(round2(l100));
            d.attributes = serde_json::json!({
                "l_per_100km": round2(l100),
                "robust_z": round2(z),
                "baseline_median_l_per_100km": round2(med),
                "baseline_mad": round2(mad),
                "direction": if z > 0.0 { "high" } else { "low" },
                "litres": round2(report.litres),
                "distance_km": round2(report.distance_km),
                "source": report.source,
            });
            out.push(d);
        }
        self.last_trip = Some(report);
    }
}

/// Above this a fuel counter delta is a glitch, L/h (a big truck burns well under 100).
const MAX_LPH: f64 = 300.0;
/// Gaps longer than this are not integrated with a rate or a model (the device was off).
const MAX_MODEL_GAP_S: f64 = 600.0;
/// Faster than this between two fixes is a GPS jump, m/s.
const MAX_SPEED_MS: f64 = 70.0;
const MAX_BUFFER: usize = 20_000;

fn push_capped<T>(q: &mut VecDeque<T>, v: T, cap: usize) {
    q.push_back(v);
    while q.len() > cap {
        q.pop_front();
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Where a trip's litres came from, best first.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FuelSource {
    /// The CAN/OBD cumulative fuel-used counter.
    Counter,
    /// The instantaneous fuel rate, integrated.
    Rate,
    /// Level at the start minus level at the end, plus refuels, minus thefts.
    Level,
}

/// The previous sample of a trip: time, counter, rate, last fix, idling.
type TripPrev = (DateTime<Utc>, Option<f64>, Option<f64>, Option<(f64, f64)>, bool);

/// Fuel consumption of one trip, accumulated sample by sample.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TripFuel {
    stationary_kmh: f64,
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
    pairs: u32,
    counter_pairs: u32,
    rate_pairs: u32,
    counter_l: f64,
    rate_l: f64,
    idle_counter_l: f64,
    idle_rate_l: f64,
    idle_s: f64,
    odo_first: Option<f64>,
    odo_last: Option<f64>,
    fix_km: f64,
    prev: Option<TripPrev>,
    first_levels: Vec<f64>,
    last_levels: VecDeque<f64>,
    /// Refuels and thefts detected during the trip, litres: level-based consumption
    /// adds the first and subtracts the second so it never goes negative across a refuel.
    pub refuelled_l: f64,
    pub stolen_l: f64,
}

/// A trip's consumption.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TripFuelReport {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub litres: f64,
    pub source: FuelSource,
    pub distance_km: f64,
    /// `None` under 1 km: a per-100-km figure of a few hundred metres means nothing.
    pub l_per_100km: Option<f64>,
    pub idle_h: f64,
    pub idle_litres: Option<f64>,
    /// `None` with under 3 minutes of idling or without a counter or rate.
    pub idle_lph: Option<f64>,
}

impl TripFuel {
    pub fn new(stationary_kmh: f64) -> TripFuel {
        TripFuel {
            stationary_kmh,
            start: None,
            end: None,
            pairs: 0,
            counter_pairs: 0,
            rate_pairs: 0,
            counter_l: 0.0,
            rate_l: 0.0,
            idle_counter_l: 0.0,
            idle_rate_l: 0.0,
            idle_s: 0.0,
            odo_first: None,
            odo_last: None,
            fix_km: 0.0,
            prev: None,
            first_levels: Vec::new(),
            last_levels: VecDeque::new(),
            refuelled_l: 0.0,
            stolen_l: 0.0,
        }
    }

    /// Add a sample (in time order; older or equal times are ignored). `tank_l` turns a
    /// level in % into litres.
    pub fn push(&mut self, s: &Sample, tank_l: Option<f64>) {
        if self.end.is_some_and(|e| s.time <= e) {
            return;
        }
        self.start.get_or_insert(s.time);
        self.end = Some(s.time);
        let used = finite_in(s.fuel_used_l, 0.0, 1e9);
        let rate = finite_in(s.fuel_rate_lph, 0.0, 500.0);
        let fix = (s.valid && geo::plausible(s.lat, s.lon)).then_some((s.lat, s.lon));
        let speed = finite_in(s.speed_kmh, 0.0, 400.0);
        let idling = s.ignition != Some(false) && speed.is_some_and(|v| v < self.stationary_kmh);
        if let Some(odo) = finite_in(s.odometer_m, 0.0, 1e11) {
            // An odometer that runs backwards or jumps is not trusted; fixes take over.
            let ok = self.odo_last.is_none_or(|l| odo >= l);
            if ok {
                self.odo_first.get_or_insert(odo);
                self.odo_last = Some(odo);
            }
        }
        if let Some((pt, pused, prate, pfix, pidle)) = self.prev {
            let dt = (s.time - pt).num_milliseconds() as f64 / 1000.0;
            self.pairs += 1;
            let idle_pair = idling && pidle;
            if idle_pair {
                self.idle_s += dt;
            }
            if let (Some(a), Some(b)) = (pused, used)
                && b >= a
                && b - a <= MAX_LPH * dt / 3600.0 + 0.5
            {
                self.counter_pairs += 1;
                self.counter_l += b - a;
                if idle_pair {
                    self.idle_counter_l += b - a;
                }
            }
            let r = match (prate, rate) {
                (Some(a), Some(b)) => Some((a + b) / 2.0),
                (a, b) => a.or(b),
            };
            if let Some(r) = r
                && dt <= MAX_MODEL_GAP_S
            {
                self.rate_pairs += 1;
                self.rate_l += r * dt / 3600.0;
                if idle_pair {
                    self.idle_rate_l += r * dt / 3600.0;
                }
            }
            if let (Some((a, b)), Some((c, d))) = (pfix, fix) {
                let m = geo::distance_m(a, b, c, d);
                if m <= MAX_SPEED_MS * dt + 50.0 {
                    self.fix_km += m / 1000.0;
                }
            }
        }
        let level = match (
            finite_in(s.fuel_level_l, 0.0, 1e5),
            finite_in(s.fuel_level_pct, 0.0, 100.0),
            tank_l,
        ) {
            (Some(l), _, _) => Some(l),
            (None, Some(p), Some(t)) => Some(p * t / 100.0),
            _ => None,
        };
        if let Some(l) = level {
            if self.first_levels.len() < 7 {
                self.first_levels.push(l);
            }
            push_capped(&mut self.last_levels, l, 7);
        }
        self.prev = Some((s.time, used, rate, fix.or(self.prev.and_then(|p| p.3)), idling));
    }

    /// The trip's consumption; `None` before two samples.
    pub fn finish(&self) -> Option<TripFuelReport> {
        let (start, end) = (self.start?, self.end?);
        if self.pairs == 0 {
            return None;
        }
        let most = |n: u32| n * 5 >= self.pairs * 4;
        let (litres, source, idle_l) = if most(self.counter_pairs) {
            (self.counter_l, FuelSource::Counter, Some(self.idle_counter_l))
        } else if most(self.rate_pairs) {
            (self.rate_l, FuelSource::Rate, Some(self.idle_rate_l))
        } else {
            let first = median(&self.first_levels)?;
            let last = median(&self.last_levels.iter().copied().collect::<Vec<_>>())?;
            (
                (first - last + self.refuelled_l - self.stolen_l).max(0.0),
                FuelSource::Level,
                None,
            )
        };
        let distance_km = match (self.odo_first, self.odo_last) {
            (Some(a), Some(b)) if b > a => (b - a) / 1000.0,
            _ => self.fix_km,
        };
        let idle_h = self.idle_s / 3600.0;
        Some(TripFuelReport {
            start,
            end,
            litres: round2(litres.max(0.0)),
            source,
            distance_km,
            l_per_100km: (distance_km >= 1.0).then(|| litres.max(0.0) / distance_km * 100.0),
            idle_h,
            idle_litres: idle_l,
            idle_lph: idle_l.filter(|_| self.idle_s >= 180.0).map(|l| l / idle_h),
        })
    }
}

/// A vehicle's own consumption history, for anomalies.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConsumptionBaseline {
    cap: usize,
    history: VecDeque<f64>,
}

impl ConsumptionBaseline {
    pub fn new(cap: usize) -> ConsumptionBaseline {
        ConsumptionBaseline {
            cap: cap.max(1),
            history: VecDeque::new(),
        }
    }

    /// Score `x` against the history (once it holds `min` values), then add it:
    /// `Some((modified z, median, MAD))`.
    pub fn observe(&mut self, x: f64, min: usize) -> Option<(f64, f64, f64)> {
        if !x.is_finite() {
            return None;
        }
        let h: Vec<f64> = self.history.iter().copied().collect();
        let r = (h.len() >= min)
            .then(|| robust_z(&ndarray::Array1::from(h), x))
            .flatten();
        push_capped(&mut self.history, x, self.cap);
        r
    }
}

/// Modified z-score of `x` against `xs` (Iglewicz & Hoaglin): 0.6745 (x − median) / MAD,
/// with the MAD floored at 5 % of |median|: trip-to-trip consumption varies that much
/// with traffic and load, and a very regular history must not make a small wobble an
/// anomaly (with the default 3.5 a trip must be ~26 % off its median at least). Returns (z, median, MAD).
pub fn robust_z(xs: &ndarray::Array1<f64>, x: f64) -> Option<(f64, f64, f64)> {
    let med = median(xs.as_slice()?)?;
    let dev = xs.mapv(|v| (v - med).abs());
    let mad = median(dev.as_slice()?)?.max(0.05 * med.abs()).max(1e-9);
    Some((0.6745 * (x - med) / mad, med, mad))
}
