//! Shared test harness: firmware-sim vehicles driven in-process (no sockets), their
//! reports turned into `analytics::Sample`s, and detections scored against the ground truth.
#![allow(dead_code)]

use analytics::{Detection, Sample};
use chrono::{DateTime, Duration, TimeZone, Utc};
use firmware_sim::noise::NoiseConfig;
use firmware_sim::scenario::{Dur, EventKind, EventSpec, GroundTruth};
use firmware_sim::track::{Track, TrackConfig};
use firmware_sim::vehicle::VehicleConfig;
use protocols::Position;

pub const TANK_L: f64 = 60.0;

/// The default sensor noise: fuel ±2 % of the tank (σ) with slosh, GPS jitter 5 m.
pub fn default_noise() -> NoiseConfig {
    NoiseConfig {
        gps_jitter_m: 5.0,
        fuel_noise_pct: 2.0,
        fuel_slosh_pct: 1.5,
        accel_noise_mg: 15.0,
        drop_fix_prob: 0.01,
    }
}

pub fn to_sample(p: &Position) -> Sample {
    let a = &p.attributes;
    Sample {
        time: p.time,
        lat: p.latitude,
        lon: p.longitude,
        valid: p.valid,
        speed_kmh: p.speed_kmh,
        course: p.course_deg,
        ignition: a.ignition,
        odometer_m: a.odometer_m,
        fuel_level_pct: a.fuel_level_pct,
        fuel_level_l: a.fuel_level_l,
        fuel_used_l: a.fuel_used_l,
        fuel_rate_lph: a.fuel_rate_lph,
        engine_hours: a.engine_hours,
        power_v: a.power_v,
        battery_v: a.battery_v,
        dtcs: Some(a.dtcs.clone()),
    }
}

pub fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 6, 0, 0).unwrap()
}

fn dur(s: f64) -> Dur {
    Dur(std::time::Duration::from_secs_f64(s))
}

fn fuel_event(kind: EventKind, at_s: f64, litres: f64, duration_s: Option<f64>) -> EventSpec {
    EventSpec {
        kind,
        at: dur(at_s),
        duration: duration_s.map(dur),
        magnitude_g: None,
        speed_kmh: None,
        limit_kmh: None,
        litres: Some(litres),
        code: None,
        clear_at: None,
        count: None,
    }
}

/// A small deterministic generator for the test's own choices (event plans), so the
/// scenario does not depend on firmware-sim's internal draws.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next_f64(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.next_f64()
    }
}

/// One vehicle's `hours` of traffic with refuels and thefts (sudden and slow drains),
/// sampled every `interval_s`: (samples, fuel ground truth).
pub fn fuel_scenario(seed: u64, hours: f64, interval_s: f64) -> (Vec<Sample>, Vec<GroundTruth>) {
    let mut rng = Lcg(seed ^ 0x5eed);
    let mut events = Vec::new();
    let mut t = rng.range(900.0, 1800.0);
    let mut k = 0;
    while t < hours * 3600.0 - 2400.0 {
        // Alternate so the tank neither overflows nor runs dry: refuel, theft, …
        let ev = match k % 4 {
            0 => fuel_event(EventKind::Refuel, t, rng.range(12.0, 30.0), None),
            1 => fuel_event(EventKind::FuelTheft, t, rng.range(8.0, 20.0), None),
            2 => fuel_event(EventKind::Refuel, t, rng.range(12.0, 30.0), None),
            _ => fuel_event(
                EventKind::FuelTheft,
                t,
                rng.range(8.0, 20.0),
                Some(rng.range(300.0, 1800.0)),
            ),
        };
        events.push(ev);
        k += 1;
        t += rng.range(2400.0, 4000.0);
    }
    let cfg = TrackConfig {
        vehicle: VehicleConfig {
            tank_l: TANK_L,
            initial_fuel_pct: 45.0,
            ignition_cycles: true,
            trip_min_s: 600.0,
            trip_max_s: 2400.0,
            park_min_s: 120.0,
            park_max_s: 1800.0,
            ..VehicleConfig::default()
        },
        noise: default_noise(),
        events,
        ..TrackConfig::default()
    };
    let mut track = Track::new("355552754130004", &cfg, start(), seed);
    let mut samples = Vec::new();
    let mut truth = Vec::new();
    let n = (hours * 3600.0 / interval_s) as usize;
    for _ in 0..n {
        track.advance(interval_s);
        samples.push(to_sample(&track.read()));
        truth.extend(track.take_truth());
    }
    truth.extend(track.finish());
    truth.retain(|g| g.kind == "refuel" || g.kind == "fuel_theft");
    (samples, truth)
}

/// One noise-only vehicle-day: trips of 15–60 min and parks of 30 min–4 h, no refuel or
/// theft; sampled every `drive_interval_s` while driving and every `park_interval_s`
/// parked.
///
/// The test parks the car itself: firmware-sim's own ignition cycles restart the trip
/// timer at every junction wait, so its cars hardly ever park (reported to the
/// firmware-sim owner). When a trip's time is up and the car stands, the ignition goes
/// off and the parked time is fast-forwarded: a parked car's true state does not change,
/// so its sensors are read every `park_interval_s` without stepping the physics each
/// second (the noise, GPS jitter included, is firmware-sim's own).
pub fn noise_day(seed: u64, drive_interval_s: f64, park_interval_s: f64) -> Vec<Sample> {
    let cfg = TrackConfig {
        vehicle: VehicleConfig {
            tank_l: TANK_L,
            initial_fuel_pct: 75.0,
            ..VehicleConfig::default()
        },
        noise: default_noise(),
        ..TrackConfig::default()
    };
    let mut rng = Lcg(seed ^ 0xda75);
    let day0 = start() + Duration::days((seed % 365) as i64);
    let mut track = Track::new("355552754130004", &cfg, day0, seed);
    let end = day0 + Duration::days(1);
    let mut samples = Vec::with_capacity(4096);
    let step = Duration::milliseconds((park_interval_s * 1000.0) as i64);
    while track.now() < end {
        let trip_end = track.now() + Duration::seconds(rng.range(900.0, 3600.0) as i64);
        // Drive until the trip is over and the car stands (at a light or junction).
        while track.now() < end && !(track.now() >= trip_end && track.vehicle.state.speed_ms < 0.05) {
            track.advance(drive_interval_s);
            samples.push(to_sample(&track.read()));
        }
        let park_end = (track.now() + Duration::seconds(rng.range(1800.0, 4.0 * 3600.0) as i64)).min(end);
        track.vehicle.state.ignition = false;
        track.vehicle.state.speed_ms = 0.0;
        track.vehicle.state.accel_ms2 = 0.0;
        while track.now() < park_end {
            track.vehicle.state.time += step;
            samples.push(to_sample(&track.read()));
        }
        track.vehicle.state.ignition = true;
    }
    samples
}

/// Precision/recall counts of one kind: a detection matches a truth line of its kind when
/// its time falls in [start − tol, end + tol]; each truth line matches once.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub truth: usize,
    pub detected: usize,
    pub true_pos: usize,
}

impl Counts {
    pub fn precision(&self) -> f64 {
        if self.detected == 0 {
            1.0
        } else {
            self.true_pos as f64 / self.detected as f64
        }
    }
    pub fn recall(&self) -> f64 {
        if self.truth == 0 {
            1.0
        } else {
            self.true_pos as f64 / self.truth as f64
        }
    }
    pub fn add(&mut self, o: Counts) {
        self.truth += o.truth;
        self.detected += o.detected;
        self.true_pos += o.true_pos;
    }
}

pub fn score_kind(kind: &str, dets: &[Detection], truth: &[GroundTruth], tol_s: i64) -> (Counts, Vec<String>) {
    let tol = Duration::seconds(tol_s);
    let ds: Vec<&Detection> = dets.iter().filter(|d| d.kind == kind).collect();
    let gs: Vec<&GroundTruth> = truth.iter().filter(|g| g.kind == kind).collect();
    let mut used = vec![false; gs.len()];
    let mut tp = 0;
    let mut misses = Vec::new();
    for d in &ds {
        let hit = gs
            .iter()
            .enumerate()
            .find(|(i, g)| !used[*i] && d.time >= g.start - tol && d.time <= g.end + tol);
        match hit {
            Some((i, _)) => {
                used[i] = true;
                tp += 1;
            }
            None => misses.push(format!("false {kind} at {} ({:?} L)", d.time, d.magnitude)),
        }
    }
    for (i, g) in gs.iter().enumerate() {
        if !used[i] {
            misses.push(format!(
                "missed {kind} at {}..{} ({:.1} L)",
                g.start, g.end, g.magnitude
            ));
        }
    }
    (
        Counts {
            truth: gs.len(),
            detected: ds.len(),
            true_pos: tp,
        },
        misses,
    )
}
