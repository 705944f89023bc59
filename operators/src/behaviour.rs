//! Driving behaviour for one device: harsh acceleration, braking and cornering, and
//! overspeed.
//!
//! Harsh events come from the accelerometer when the device sends one (x longitudinal,
//! positive forward; y lateral; in g, as `accel_mg` in the position attributes). An
//! episode starts when a value crosses the class threshold, lasts while it stays above
//! `hysteresis` × threshold, and counts when it lasted `min_duration_ms` (a sample stands
//! for the time since the previous one, at most a second). Without an accelerometer the
//! same episodes are derived from speed and heading change between consecutive fixes
//! that pass a stricter quality gate (valid, satellites, HDOP, a gap of at most
//! `gps_max_gap_s`), exponentially smoothed against GPS noise.
//!
//! Overspeed: speed above the lower of the absolute limit and the limits of the zones
//! (geofence rules) the device is in, for `overspeed_min_duration_s`; magnitude is the
//! peak km/h over the limit, severity from `overspeed_bands_kmh`. An episode ends once the
//! speed has been back under the limit for `overspeed_end_grace_s`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::{BehaviourConfig, HarshThresholds};
use crate::event::{OperatorEvent, secs};
use crate::fix::Fix;

const KINDS: [&str; 3] = ["harsh_acceleration", "harsh_braking", "harsh_cornering"];
const G: f64 = 9.80665;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Run {
    start: DateTime<Utc>,
    last: DateTime<Utc>,
    /// Time the episode covers: each sample counts for the gap before it (≤ 1 s).
    covered_ms: i64,
    peak: f64,
    lat: f64,
    lon: f64,
    source: Source,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Source {
    Accelerometer,
    Gps,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Overspeed {
    start: DateTime<Utc>,
    last: DateTime<Utc>,
    limit: f64,
    zone: Option<i64>,
    max_kmh: f64,
    lat: f64,
    lon: f64,
    /// First fix back under the limit; the episode ends once that lasts the grace time.
    #[serde(default)]
    under_since: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct GpsPrev {
    time: DateTime<Utc>,
    speed_ms: f64,
    course: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Behaviour {
    runs: [Option<Run>; 3],
    last_sample: Option<DateTime<Utc>>,
    gps_prev: Option<GpsPrev>,
    /// Smoothed longitudinal and lateral acceleration from GPS, g.
    gps_smooth: Option<(f64, f64)>,
    overspeed: Option<Overspeed>,
}

/// The speed limit in force at a fix: the lowest of the absolute and zone limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    pub kmh: f64,
    pub zone: Option<i64>,
}

impl Behaviour {
    pub fn push(
        &mut self,
        device: i64,
        f: &Fix,
        th: &HarshThresholds,
        limit: Limit,
        cfg: &BehaviourConfig,
        out: &mut Vec<OperatorEvent>,
    ) {
        let gap_ms = self
            .last_sample
            .map_or(1000, |l| (f.time - l).num_milliseconds().clamp(0, 1000));
        self.last_sample = Some(f.time);
        let thresholds = [th.acceleration_g, th.braking_g, th.cornering_g];
        let values = if let Some(a) = f.accel_g {
            Some(([a[0], -a[0], a[1].abs()], Source::Accelerometer))
        } else {
            self.gps_values(f, cfg)
                .map(|(lon, lat)| ([lon, -lon, lat.abs()], Source::Gps))
        };
        for i in 0..3 {
            let (v, source) = match values {
                Some((v, s)) => (v[i], s),
                None => (0.0, Source::Gps),
            };
            let th = thresholds[i];
            match &mut self.runs[i] {
                Some(run) if v >= th * cfg.hysteresis => {
                    run.last = f.time;
                    run.covered_ms += gap_ms;
                    run.peak = run.peak.max(v);
                }
                Some(_) => {
                    let run = self.runs[i].take().expect("matched");
                    emit_harsh(device, KINDS[i], run, th, cfg, out);
                }
                None if v >= th => {
                    self.runs[i] = Some(Run {
                        start: f.time,
                        last: f.time,
                        covered_ms: gap_ms,
                        peak: v,
                        lat: f.lat,
                        lon: f.lon,
                        source,
                    });
                }
                None => {}
            }
        }
        self.overspeed_step(device, f, limit, cfg, out);
    }

    /// Longitudinal and lateral acceleration (g) from consecutive good fixes.
    fn gps_values(&mut self, f: &Fix, cfg: &BehaviourConfig) -> Option<(f64, f64)> {
        let good = f.good
            && f.satellites.is_none_or(|s| s >= cfg.gps_min_satellites)
            && f.hdop.is_none_or(|h| h <= cfg.gps_max_hdop);
        let speed = f.speed_kmh.filter(|_| good)?;
        let cur = GpsPrev {
            time: f.time,
            speed_ms: speed / 3.6,
            course: f.course,
        };
        let prev = self.gps_prev.replace(cur);
        let Some(prev) = prev else {
            self.gps_smooth = None;
            return None;
        };
        let dt = secs(prev.time, cur.time);
        if !(dt > 0.0 && dt <= cfg.gps_max_gap_s) {
            self.gps_smooth = None;
            return None;
        }
        let lon_g = (cur.speed_ms - prev.speed_ms) / dt / G;
        let lat_g = match (prev.course, cur.course) {
            // Heading is meaningless when standing.
            (Some(a), Some(b)) if cur.speed_ms > 3.0 && prev.speed_ms > 3.0 => {
                let d = ((b - a + 540.0).rem_euclid(360.0) - 180.0).to_radians();
                (cur.speed_ms + prev.speed_ms) / 2.0 * d / dt / G
            }
            _ => 0.0,
        };
        let w = cfg.gps_smoothing.clamp(0.05, 1.0);
        let s = match self.gps_smooth {
            Some((l, t)) => (w * lon_g + (1.0 - w) * l, w * lat_g + (1.0 - w) * t),
            None => (lon_g, lat_g),
        };
        self.gps_smooth = Some(s);
        Some(s)
    }

    fn overspeed_step(
        &mut self,
        device: i64,
        f: &Fix,
        limit: Limit,
        cfg: &BehaviourConfig,
        out: &mut Vec<OperatorEvent>,
    ) {
        let Some(speed) = f.speed_kmh.filter(|s| s.is_finite() && *s < 400.0) else {
            return;
        };
        // A bad fix says nothing about speed unless it came from the engine bus.
        match &mut self.overspeed {
            Some(o) if speed > limit.kmh => {
                o.last = f.time;
                o.under_since = None;
                o.max_kmh = o.max_kmh.max(speed);
                if limit.kmh < o.limit {
                    o.limit = limit.kmh;
                    o.zone = limit.zone;
                }
            }
            // A short dip (a GPS speed glitch, a lift of the foot) does not split an episode.
            Some(o) if secs(o.under_since.unwrap_or(f.time), f.time) < cfg.overspeed_end_grace_s as f64 => {
                o.under_since.get_or_insert(f.time);
            }
            Some(_) => {
                let o = self.overspeed.take().expect("matched");
                let last = o.last;
                emit_overspeed(device, o, last, cfg, out);
            }
            None if speed > limit.kmh => {
                self.overspeed = Some(Overspeed {
                    start: f.time,
                    last: f.time,
                    limit: limit.kmh,
                    zone: limit.zone,
                    max_kmh: speed,
                    lat: f.lat,
                    lon: f.lon,
                    under_since: None,
                })
            }
            None => {}
        }
    }

    /// The device went quiet: close open episodes at their last sample.
    pub fn flush(&mut self, device: i64, th: &HarshThresholds, cfg: &BehaviourConfig, out: &mut Vec<OperatorEvent>) {
        let thresholds = [th.acceleration_g, th.braking_g, th.cornering_g];
        for i in 0..3 {
            if let Some(run) = self.runs[i].take() {
                emit_harsh(device, KINDS[i], run, thresholds[i], cfg, out);
            }
        }
        if let Some(o) = self.overspeed.take() {
            let last = o.last;
            emit_overspeed(device, o, last, cfg, out);
        }
        self.gps_prev = None;
        self.gps_smooth = None;
    }
}

fn emit_harsh(device: i64, kind: &str, run: Run, th: f64, cfg: &BehaviourConfig, out: &mut Vec<OperatorEvent>) {
    if run.covered_ms < cfg.min_duration_ms {
        return;
    }
    let ratio = run.peak / th;
    let severity = if ratio >= 1.5 {
        "high"
    } else if ratio >= 1.25 {
        "medium"
    } else {
        "low"
    };
    out.push(
        OperatorEvent::new(device, kind, run.start)
            .at(run.lat, run.lon)
            .until(run.last)
            .magnitude((run.peak * 1000.0).round() / 1000.0)
            .severity(severity)
            .attrs(serde_json::json!({ "source": run.source, "threshold_g": th, "duration_ms": run.covered_ms })),
    );
}

fn emit_overspeed(device: i64, o: Overspeed, end: DateTime<Utc>, cfg: &BehaviourConfig, out: &mut Vec<OperatorEvent>) {
    if secs(o.start, o.last) < cfg.overspeed_min_duration_s as f64 {
        return;
    }
    let over = o.max_kmh - o.limit;
    let [m, h, c] = cfg.overspeed_bands_kmh;
    let severity = if over >= c {
        "critical"
    } else if over >= h {
        "high"
    } else if over >= m {
        "medium"
    } else {
        "low"
    };
    out.push(
        OperatorEvent::new(device, "overspeed", o.start)
            .at(o.lat, o.lon)
            .until(end)
            .magnitude(over)
            .severity(severity)
            .attrs(serde_json::json!({ "limit_kmh": o.limit, "max_speed_kmh": o.max_kmh, "zone": o.zone })),
    );
}
