//! Trips, stops and idling for one device.
//!
//! - **Ignition mode** (the device has ever reported ignition): a trip runs from the
//!   first fix with ignition on to the first fix with ignition off; an ignition-off
//!   shorter than `min_stop_ignition_s` is absorbed (the trip continues).
//! - **Motion mode** (no ignition signal): a trip starts at the first moving fix and
//!   ends at the first standing fix of a stand still lasting `min_stop_motion_s`.
//! - Either way a trip shorter than `min_duration_s` or `min_distance_m` is dropped
//!   without events: `trip_start` is emitted (with the start time) only once the trip is
//!   confirmed. A device that goes silent mid-trip gets its trip ended at its last fix
//!   after `quiet_end_s` (the timer).
//! - Distance: the odometer delta when it is trustworthy (present at both ends, never
//!   decreasing, within `odometer_tolerance`× of the fix path), else the path over good
//!   fixes.
//! - Idle: engine on (ignition, or rpm when there is no ignition signal) and standing
//!   for more than `idle_min_s`: an `idle` event with its span, counted in the trip.
//! - Stops: the time between two trips, emitted as `stop` when the next trip confirms.
//!
//! Every event time is a fix time, so replaying the same fixes gives the same events.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::TripConfig;
use crate::event::{OperatorEvent, secs};
use crate::fix::Fix;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TripMode {
    Ignition,
    Motion,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Place {
    pub time: DateTime<Utc>,
    pub lat: f64,
    pub lon: f64,
    pub odometer_m: Option<f64>,
}

impl Place {
    fn of(f: &Fix) -> Place {
        Place {
            time: f.time,
            lat: f.lat,
            lon: f.lon,
            odometer_m: f.odometer_m,
        }
    }
}

/// Per-trip statistics, the input of per-trip and per-day scores.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TripStats {
    pub distance_m: f64,
    pub duration_s: f64,
    pub idle_s: f64,
    /// Event kind → magnitudes of that trip's events (count = length).
    pub events: BTreeMap<String, Vec<f64>>,
}

impl TripStats {
    pub fn counts(&self) -> BTreeMap<String, usize> {
        self.events.iter().map(|(k, v)| (k.clone(), v.len())).collect()
    }

    /// Adds another trip (per-day aggregation).
    pub fn merge(&mut self, o: &TripStats) {
        self.distance_m += o.distance_m;
        self.duration_s += o.duration_s;
        self.idle_s += o.idle_s;
        for (k, v) in &o.events {
            self.events.entry(k.clone()).or_default().extend(v);
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trip {
    pub mode: TripMode,
    pub start: Place,
    pub last: Place,
    pub confirmed: bool,
    pub path_m: f64,
    odo_first: Option<f64>,
    odo_last: Option<f64>,
    odo_monotonic: bool,
    pub max_speed_kmh: f64,
    speed_sum: f64,
    speed_n: u64,
    pub idle_s: f64,
    pub events: BTreeMap<String, Vec<f64>>,
}

impl Trip {
    fn new(mode: TripMode, f: &Fix) -> Trip {
        Trip {
            mode,
            start: Place::of(f),
            last: Place::of(f),
            confirmed: false,
            path_m: 0.0,
            odo_first: f.odometer_m,
            odo_last: f.odometer_m,
            odo_monotonic: true,
            max_speed_kmh: 0.0,
            speed_sum: 0.0,
            speed_n: 0,
            idle_s: 0.0,
            events: BTreeMap::new(),
        }
    }

    /// The distance and where it came from.
    pub fn distance(&self, tolerance: f64) -> (f64, &'static str) {
        if let (Some(a), Some(b)) = (self.odo_first, self.odo_last) {
            let d = b - a;
            let path = self.path_m;
            // A short path cannot judge the odometer (jitter dominates); a long one must agree.
            let plausible = if path < 500.0 {
                d <= 500.0 * tolerance
            } else {
                d >= path / tolerance && d <= path * tolerance
            };
            if self.odo_monotonic && d >= 0.0 && plausible {
                return (d, "odometer");
            }
        }
        (self.path_m, "gps")
    }

    pub fn stats(&self, end: DateTime<Utc>, tolerance: f64) -> TripStats {
        TripStats {
            distance_m: self.distance(tolerance).0,
            duration_s: secs(self.start.time, end).max(0.0),
            idle_s: self.idle_s,
            events: self.events.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct IdleRun {
    start: Place,
    last: DateTime<Utc>,
}

/// What the trip tracker hands back besides events: trip rows to upsert.
#[derive(Debug, Clone, PartialEq)]
pub struct TripUpdate {
    pub start: Place,
    pub end: Option<Place>,
    pub distance_m: f64,
    pub distance_source: &'static str,
    pub max_speed_kmh: f64,
    pub avg_speed_kmh: Option<f64>,
    pub mode: TripMode,
    pub stats: TripStats,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TripTracker {
    mode: Option<TripMode>,
    trip: Option<Trip>,
    /// Where the current trip may have ended (ignition off / standing), not yet final.
    ending: Option<Place>,
    /// Motion mode: the place a stand-still began.
    standing: Option<Place>,
    last_end: Option<Place>,
    idle: Option<IdleRun>,
    last_fix: Option<Place>,
    ignition: Option<bool>,
}

impl TripTracker {
    pub fn trip(&self) -> Option<&Trip> {
        self.trip.as_ref()
    }

    pub fn mode(&self) -> Option<TripMode> {
        self.mode
    }

    /// Counts an event of another operator against the running trip.
    pub fn note_event(&mut self, kind: &str, magnitude: f64) {
        if let Some(t) = &mut self.trip {
            t.events.entry(kind.to_owned()).or_default().push(magnitude);
        }
    }

    pub fn push(
        &mut self,
        device: i64,
        f: &Fix,
        cfg: &TripConfig,
        events: &mut Vec<OperatorEvent>,
        trips: &mut Vec<TripUpdate>,
    ) {
        if f.ignition.is_some() {
            // Once a device has shown it reports ignition, ignition decides.
            self.mode = Some(TripMode::Ignition);
            self.ignition = f.ignition;
        }
        let mode = *self.mode.get_or_insert(TripMode::Motion);
        let speed = f
            .speed_kmh
            .unwrap_or_else(|| if f.dt_s > 0.0 { f.moved_m / f.dt_s * 3.6 } else { 0.0 });
        let standing = speed < cfg.standing_kmh;
        let moving = speed >= cfg.moving_kmh;

        // Finalise a pending end whose stop has lasted long enough.
        if let Some(end) = self.ending {
            let min_stop = match mode {
                TripMode::Ignition => cfg.min_stop_ignition_s,
                TripMode::Motion => cfg.min_stop_motion_s,
            };
            let resumed = match mode {
                TripMode::Ignition => self.ignition == Some(true),
                TripMode::Motion => moving,
            };
            if resumed && secs(end.time, f.time) < min_stop as f64 {
                self.ending = None;
            } else if secs(end.time, f.time) >= min_stop as f64 || resumed {
                self.finish(device, end, cfg, events, trips);
            }
        }

        let active = match mode {
            TripMode::Ignition => self.ignition == Some(true),
            TripMode::Motion => moving,
        };
        if self.trip.is_none() && active {
            self.trip = Some(Trip::new(mode, f));
            self.ending = None;
            self.standing = None;
        }

        // Idle runs, within a trip or not (a parked car with the engine running).
        let engine_on = match self.ignition {
            Some(on) => on,
            None => f.rpm.is_some_and(|r| r > 300.0),
        };
        if engine_on && standing {
            match &mut self.idle {
                Some(run) => run.last = f.time,
                None => {
                    self.idle = Some(IdleRun {
                        start: Place::of(f),
                        last: f.time,
                    })
                }
            }
        } else {
            self.close_idle(device, f.time, cfg, events);
        }

        if let Some(trip) = &mut self.trip {
            if self.ending.is_none() {
                trip.path_m += f.moved_m;
                if let Some(o) = f.odometer_m {
                    if trip.odo_last.is_some_and(|l| o < l - 1.0) {
                        trip.odo_monotonic = false;
                    }
                    trip.odo_first.get_or_insert(o);
                    trip.odo_last = Some(o);
                }
                if let Some(s) = f.speed_kmh.filter(|_| f.good) {
                    trip.max_speed_kmh = trip.max_speed_kmh.max(s);
                    trip.speed_sum += s;
                    trip.speed_n += 1;
                }
                trip.last = Place::of(f);
            }
            // Where the trip would end.
            match mode {
                TripMode::Ignition => {
                    if self.ignition == Some(false) && self.ending.is_none() {
                        self.ending = Some(Place::of(f));
                    }
                }
                TripMode::Motion => {
                    if standing {
                        let s = *self.standing.get_or_insert(Place::of(f));
                        if self.ending.is_none() {
                            self.ending = Some(s);
                        }
                    } else {
                        self.standing = None;
                        if moving {
                            self.ending = None;
                        }
                    }
                }
            }
            if !trip.confirmed {
                let (d, _) = trip.distance(cfg.odometer_tolerance);
                let dur = secs(trip.start.time, f.time);
                if dur >= cfg.min_duration_s as f64 && d >= cfg.min_distance_m {
                    trip.confirmed = true;
                    let s = trip.start;
                    if let Some(stop) = self.last_end.take() {
                        let dur = secs(stop.time, s.time);
                        if dur > 0.0 {
                            events.push(
                                OperatorEvent::new(device, "stop", stop.time)
                                    .at(stop.lat, stop.lon)
                                    .until(s.time)
                                    .magnitude(dur),
                            );
                        }
                    }
                    events.push(
                        OperatorEvent::new(device, "trip_start", s.time)
                            .at(s.lat, s.lon)
                            .attrs(serde_json::json!({ "mode": trip.mode })),
                    );
                    trips.push(update(trip, None, cfg));
                }
            }
        }
        self.last_fix = Some(Place::of(f));
    }

    fn close_idle(&mut self, device: i64, until: DateTime<Utc>, cfg: &TripConfig, events: &mut Vec<OperatorEvent>) {
        if let Some(run) = self.idle.take() {
            let d = secs(run.start.time, until);
            if d >= cfg.idle_min_s as f64 {
                events.push(
                    OperatorEvent::new(device, "idle", run.start.time)
                        .at(run.start.lat, run.start.lon)
                        .until(until)
                        .magnitude(d),
                );
                if let Some(t) = &mut self.trip {
                    t.idle_s += d;
                    t.events.entry("idle".into()).or_default().push(d);
                }
            }
        }
    }

    fn finish(
        &mut self,
        device: i64,
        end: Place,
        cfg: &TripConfig,
        events: &mut Vec<OperatorEvent>,
        trips: &mut Vec<TripUpdate>,
    ) {
        // An idle run still open belongs to this trip, up to its end.
        if self.idle.as_ref().is_some_and(|r| r.start.time < end.time) {
            let last = self.idle.as_ref().map_or(end.time, |r| r.last.min(end.time));
            self.close_idle(device, last, cfg, events);
        }
        self.ending = None;
        self.standing = None;
        let Some(mut trip) = self.trip.take() else { return };
        if !trip.confirmed {
            return;
        }
        trip.last = end;
        if let Some(o) = end.odometer_m {
            trip.odo_last = Some(o);
        }
        let u = update(&trip, Some(end), cfg);
        events.push(
            OperatorEvent::new(device, "trip_end", end.time)
                .at(end.lat, end.lon)
                .magnitude(u.distance_m / 1000.0)
                .attrs(serde_json::json!({
                    "trip_start": trip.start.time,
                    "distance_m": u.distance_m,
                    "distance_source": u.distance_source,
                    "duration_s": u.stats.duration_s,
                    "idle_s": u.stats.idle_s,
                    "max_speed_kmh": u.max_speed_kmh,
                    "event_counts": u.stats.counts(),
                })),
        );
        trips.push(u);
        self.last_end = Some(end);
    }

    /// Timers: a device silent for `quiet_end_s` during a trip has its trip ended (at
    /// the pending end, or its last fix); an idle run is closed at its last fix.
    pub fn tick(
        &mut self,
        device: i64,
        quiet_s: f64,
        cfg: &TripConfig,
        events: &mut Vec<OperatorEvent>,
        trips: &mut Vec<TripUpdate>,
    ) {
        if quiet_s < cfg.quiet_end_s as f64 {
            // A pending ignition-off end can be finalised as soon as the stop is long
            // enough, even when the device stopped reporting with the engine.
            if let (Some(end), Some(TripMode::Ignition)) = (self.ending, self.mode)
                && let Some(last) = self.last_fix
                && secs(end.time, last.time) + quiet_s >= cfg.min_stop_ignition_s as f64
                && self.ignition == Some(false)
            {
                self.finish(device, end, cfg, events, trips);
            }
            return;
        }
        if let Some(run) = &self.idle {
            let last = run.last;
            self.close_idle(device, last, cfg, events);
        }
        if self.trip.is_some() {
            let end = self.ending.or(self.last_fix);
            if let Some(end) = end {
                self.finish(device, end, cfg, events, trips);
            }
        }
    }
}

fn update(trip: &Trip, end: Option<Place>, cfg: &TripConfig) -> TripUpdate {
    let (distance_m, distance_source) = trip.distance(cfg.odometer_tolerance);
    let end_time = end.map_or(trip.last.time, |e| e.time);
    TripUpdate {
        start: trip.start,
        end,
        distance_m,
        distance_source,
        max_speed_kmh: trip.max_speed_kmh,
        avg_speed_kmh: (trip.speed_n > 0).then(|| trip.speed_sum / trip.speed_n as f64),
        mode: trip.mode,
        stats: trip.stats(end_time, cfg.odometer_tolerance),
    }
}
