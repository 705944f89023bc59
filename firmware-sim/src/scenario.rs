//! Scenarios: a TOML file of injected events, the engine that applies them to a vehicle,
//! and the ground truth of what really happened.
//!
//! An event is scheduled at an offset from the simulation start but begins when the
//! vehicle can carry it out (a harsh brake needs speed, a theft needs a parked car); the
//! ground truth records when it actually began and ended, so detections are scored
//! against what the data shows, not against the schedule. Trips (ignition cycles),
//! geofence crossings and automatic refuels are recorded too: they are real events in
//! the traffic even though nobody injected them.

use std::time::Duration as StdDuration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};

use crate::noise::NoiseConfig;
use crate::route::{BBox, LatLon};
use crate::vehicle::{G, Vehicle, VehicleConfig, VehicleEvent, secs};

/// Parse `90s`, `5m`, `1h30m`, `250ms`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<StdDuration, String> {
    let t = s.trim();
    if let Ok(n) = t.parse::<f64>() {
        return secs_to_std(n).ok_or_else(|| format!("bad duration {s:?}"));
    }
    let mut total = 0.0;
    let mut num = String::new();
    let mut chars = t.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        while let Some(&n) = chars.peek() {
            if n.is_ascii_alphabetic() {
                unit.push(n);
                chars.next();
            } else {
                break;
            }
        }
        let v: f64 = num
            .parse()
            .map_err(|_| format!("bad duration {s:?} (expected e.g. 90s, 5m, 1h30m, 250ms)"))?;
        num.clear();
        total += v * match unit.as_str() {
            "ms" => 0.001,
            "s" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            _ => return Err(format!("bad duration unit {unit:?} in {s:?} (use ms, s, m, h, d)")),
        };
        any = true;
    }
    if !num.is_empty() || !any {
        return Err(format!("bad duration {s:?} (expected e.g. 90s, 5m, 1h30m, 250ms)"));
    }
    secs_to_std(total).ok_or_else(|| format!("bad duration {s:?}"))
}

fn secs_to_std(n: f64) -> Option<StdDuration> {
    (n.is_finite() && (0.0..1e9).contains(&n)).then(|| StdDuration::from_secs_f64(n))
}

/// A duration in a scenario file: `"90s"` or a number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Dur(pub StdDuration);

impl Dur {
    pub fn secs(self) -> f64 {
        self.0.as_secs_f64()
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(f64),
            S(String),
        }
        let parsed = match Raw::deserialize(d)? {
            Raw::N(n) => secs_to_std(n).ok_or_else(|| format!("bad duration {n}")),
            Raw::S(s) => parse_duration(&s),
        };
        parsed.map(Dur).map_err(serde::de::Error::custom)
    }
}

/// What kind of event to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    HarshBraking,
    HarshAcceleration,
    HarshCornering,
    Overspeed,
    Idle,
    FuelTheft,
    Refuel,
    Dtc,
    Offline,
    Malformed,
}

/// One `[[events]]` entry. Which fields apply depends on `kind` (see the crate README).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSpec {
    pub kind: EventKind,
    /// Offset from the simulation start.
    pub at: Dur,
    pub duration: Option<Dur>,
    /// Harsh events: g.
    pub magnitude_g: Option<f64>,
    /// Overspeed: the speed driven and the zone's limit, km/h.
    pub speed_kmh: Option<f64>,
    pub limit_kmh: Option<f64>,
    /// Fuel theft / refuel, litres.
    pub litres: Option<f64>,
    /// DTC code (e.g. `P0301`) and when it is cleared.
    pub code: Option<String>,
    pub clear_at: Option<Dur>,
    /// Malformed frames to send.
    pub count: Option<u32>,
}

/// A geofence whose crossings are recorded: a circle (`lat`, `lon`, `radius_m`), a
/// polygon (`polygon`: one ring of `[lon, lat]` points, GeoJSON order), or a corridor
/// (`corridor`: a line of `[lon, lat]` points, `width_m` wide). Shapes are the
/// `geofence` crate's, so the simulator and the server agree on what "inside" means.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Geofence {
    pub name: String,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub radius_m: Option<f64>,
    pub polygon: Option<Vec<[f64; 2]>>,
    pub corridor: Option<Vec<[f64; 2]>>,
    pub width_m: Option<f64>,
    /// Inside at least this long counts as a dwell.
    #[serde(default = "default_dwell")]
    pub dwell: Dur,
}

fn default_dwell() -> Dur {
    Dur(StdDuration::from_secs(60))
}

impl Geofence {
    /// A circle.
    pub fn circle(name: &str, lat: f64, lon: f64, radius_m: f64) -> Geofence {
        Geofence {
            name: name.to_owned(),
            lat: Some(lat),
            lon: Some(lon),
            radius_m: Some(radius_m),
            dwell: default_dwell(),
            ..Geofence::default()
        }
    }

    /// A polygon from one ring of `[lon, lat]` points.
    pub fn polygon(name: &str, ring: Vec<[f64; 2]>) -> Geofence {
        Geofence {
            name: name.to_owned(),
            polygon: Some(ring),
            dwell: default_dwell(),
            ..Geofence::default()
        }
    }

    /// The validated shape.
    pub fn fence(&self) -> Result<geofence::Fence, String> {
        ZoneShape {
            lat: self.lat,
            lon: self.lon,
            radius_m: self.radius_m,
            polygon: self.polygon.as_deref(),
            corridor: self.corridor.as_deref(),
            width_m: self.width_m,
        }
        .fence(&self.name)?
        .ok_or_else(|| {
            format!(
                "geofence {:?}: give lat/lon/radius_m, polygon, or corridor/width_m",
                self.name
            )
        })
    }
}

/// A speed zone: the posted limit over an area, and what the driver does there.
///
/// The area is a shape like a geofence's (circle, polygon, corridor) or a stretch of the
/// drive (`from_km`..`to_km`, distance driven since the start). With `speed_kmh` above
/// the limit the driver speeds there (the ground truth gets an `overspeed` line per
/// stretch over the limit, with the zone's name and limit); without it the driver obeys,
/// slowing down before the zone (which checks a detector's false alarms).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SpeedZone {
    pub name: String,
    pub limit_kmh: f64,
    /// What the driver drives inside, km/h (absent: obeys the limit).
    pub speed_kmh: Option<f64>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub radius_m: Option<f64>,
    pub polygon: Option<Vec<[f64; 2]>>,
    pub corridor: Option<Vec<[f64; 2]>>,
    pub width_m: Option<f64>,
    pub from_km: Option<f64>,
    pub to_km: Option<f64>,
}

impl SpeedZone {
    fn area(&self) -> Result<Area, String> {
        let shape = ZoneShape {
            lat: self.lat,
            lon: self.lon,
            radius_m: self.radius_m,
            polygon: self.polygon.as_deref(),
            corridor: self.corridor.as_deref(),
            width_m: self.width_m,
        }
        .fence(&self.name)?;
        match (shape, self.from_km, self.to_km) {
            (Some(f), None, None) => Ok(Area::Fence(Box::new(f))),
            (None, Some(a), Some(b)) if a.is_finite() && b.is_finite() && 0.0 <= a && a < b => {
                Ok(Area::Stretch(a * 1000.0, b * 1000.0))
            }
            (None, Some(_), Some(_)) => Err(format!("speed zone {:?}: needs 0 <= from_km < to_km", self.name)),
            (Some(_), _, _) => Err(format!(
                "speed zone {:?}: a shape or from_km/to_km, not both",
                self.name
            )),
            _ => Err(format!(
                "speed zone {:?}: give lat/lon/radius_m, polygon, corridor/width_m, or from_km/to_km",
                self.name
            )),
        }
    }

    fn validate(&self) -> Result<(), String> {
        if !(self.limit_kmh.is_finite() && self.limit_kmh > 0.0 && self.limit_kmh < 300.0) {
            return Err(format!("speed zone {:?}: needs limit_kmh in (0, 300)", self.name));
        }
        if self.speed_kmh.is_some_and(|v| !(v.is_finite() && v > 0.0 && v < 300.0)) {
            return Err(format!("speed zone {:?}: speed_kmh must be in (0, 300)", self.name));
        }
        self.area().map(|_| ())
    }

    /// Whether the driver speeds here.
    fn speeding(&self) -> bool {
        self.speed_kmh.is_some_and(|v| v > self.limit_kmh)
    }
}

/// The shape fields geofences and speed zones share.
struct ZoneShape<'a> {
    lat: Option<f64>,
    lon: Option<f64>,
    radius_m: Option<f64>,
    polygon: Option<&'a [[f64; 2]]>,
    corridor: Option<&'a [[f64; 2]]>,
    width_m: Option<f64>,
}

impl ZoneShape<'_> {
    /// The fence, `None` when no shape is given at all.
    fn fence(&self, name: &str) -> Result<Option<geofence::Fence>, String> {
        use geofence::geo::{Coord, LineString, Point, Polygon};
        use geofence::{Fence, FenceId, FenceRules, Shape};
        let line = |pts: &[[f64; 2]]| LineString::new(pts.iter().map(|&[x, y]| Coord { x, y }).collect());
        let shape = match (self.lat, self.lon, self.radius_m, self.polygon, self.corridor) {
            (None, None, None, None, None) => return Ok(None),
            (Some(lat), Some(lon), Some(radius_m), None, None) => Shape::Circle {
                center: Point::new(lon, lat),
                radius_m,
            },
            (None, None, None, Some(ring), None) => Shape::Polygon(Polygon::new(line(ring), Vec::new())),
            (None, None, None, None, Some(pts)) => Shape::Corridor {
                line: line(pts),
                width_m: self
                    .width_m
                    .ok_or_else(|| format!("zone {name:?}: a corridor needs width_m"))?,
            },
            _ => {
                return Err(format!(
                    "zone {name:?}: give exactly one shape: lat/lon/radius_m, polygon, or corridor/width_m"
                ));
            }
        };
        Fence::new(FenceId(0), shape, FenceRules::default())
            .map(|f| Some(f.with_name(name)))
            .map_err(|e| format!("zone {name:?}: {e}"))
    }
}

/// Where a speed zone applies.
#[derive(Debug, Clone)]
enum Area {
    Fence(Box<geofence::Fence>),
    /// Metres driven since the start, from..to.
    Stretch(f64, f64),
}

impl Area {
    /// Whether a vehicle at `pos`, `driven` metres since the start, is inside.
    fn contains(&self, pos: LatLon, driven: f64) -> bool {
        match self {
            Area::Fence(f) => f.contains(pos.lon, pos.lat),
            Area::Stretch(a, b) => (*a..=*b).contains(&driven),
        }
    }
}

/// Where vehicles drive.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// A GeoJSON file with a LineString, relative to the scenario file.
    pub geojson: Option<String>,
    pub bbox: Option<BBox>,
}

/// A scenario file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: Option<String>,
    pub seed: Option<u64>,
    /// Simulated start time (default: now).
    pub start: Option<DateTime<Utc>>,
    #[serde(default)]
    pub vehicle: VehicleConfig,
    #[serde(default)]
    pub noise: NoiseConfig,
    pub route: Option<RouteConfig>,
    #[serde(default)]
    pub geofences: Vec<Geofence>,
    #[serde(default)]
    pub speed_zones: Vec<SpeedZone>,
    #[serde(default)]
    pub events: Vec<EventSpec>,
}

impl Scenario {
    /// Parse and check a scenario; every problem is listed, not just the first.
    pub fn from_toml(text: &str) -> Result<Scenario, String> {
        let s: Scenario = toml::from_str(text).map_err(|e| format!("scenario: {e}"))?;
        let mut errors = Vec::new();
        if let Err(e) = s.noise.validate() {
            errors.push(e);
        }
        if let Some([a, b]) = s.vehicle.night_park_hours
            && !((0.0..=24.0).contains(&a) && (0.0..=24.0).contains(&b) && a != b)
        {
            errors.push(format!(
                "vehicle.night_park_hours [{a}, {b}]: two different hours in 0..=24"
            ));
        }
        if let Some(b) = s.route.as_ref().and_then(|r| r.bbox)
            && let Err(e) = b.validate()
        {
            errors.push(e);
        }
        for (i, e) in s.events.iter().enumerate() {
            let need = |ok: bool, what: &str, errors: &mut Vec<String>| {
                if !ok {
                    errors.push(format!("events[{i}] ({:?}): {what}", e.kind));
                }
            };
            match e.kind {
                EventKind::HarshBraking | EventKind::HarshAcceleration | EventKind::HarshCornering => need(
                    e.magnitude_g.is_some_and(|g| g > 0.0 && g < 3.0),
                    "needs magnitude_g in (0, 3)",
                    &mut errors,
                ),
                EventKind::Overspeed => need(
                    e.speed_kmh.is_some_and(|v| v > 0.0 && v < 300.0) && e.duration.is_some(),
                    "needs speed_kmh in (0, 300) and duration",
                    &mut errors,
                ),
                EventKind::Idle | EventKind::Offline => need(e.duration.is_some(), "needs duration", &mut errors),
                EventKind::FuelTheft | EventKind::Refuel => {
                    need(e.litres.is_some_and(|l| l > 0.0), "needs litres > 0", &mut errors)
                }
                EventKind::Dtc => need(
                    e.code.as_deref().is_some_and(is_dtc) && e.clear_at.is_none_or(|c| c.0 > e.at.0),
                    "needs code like P0301 and clear_at after at",
                    &mut errors,
                ),
                EventKind::Malformed => {}
            }
        }
        for f in &s.geofences {
            if let Err(e) = f.fence() {
                errors.push(e);
            }
        }
        for z in &s.speed_zones {
            if let Err(e) = z.validate() {
                errors.push(e);
            }
        }
        if errors.is_empty() {
            Ok(s)
        } else {
            Err(format!(
                "scenario has {} problem(s):\n  {}",
                errors.len(),
                errors.join("\n  ")
            ))
        }
    }
}

impl Scenario {
    /// The route this scenario drives: its `[route]` (a GeoJSON path is read relative to
    /// `base_dir`, the scenario file's directory), or random roads in the default box.
    pub fn route_spec(&self, base_dir: Option<&std::path::Path>) -> Result<crate::route::RouteSpec, String> {
        use crate::route::RouteSpec;
        match &self.route {
            Some(RouteConfig { geojson: Some(rel), .. }) => {
                let rel = std::path::PathBuf::from(rel);
                let path = match base_dir {
                    Some(b) if rel.is_relative() => b.join(rel),
                    _ => rel,
                };
                let text =
                    std::fs::read_to_string(&path).map_err(|e| format!("cannot read route {}: {e}", path.display()))?;
                RouteSpec::from_geojson(&text).map_err(|e| format!("{}: {e}", path.display()))
            }
            Some(r) => Ok(RouteSpec::Random(r.bbox.unwrap_or(BBox::DEFAULT))),
            None => Ok(RouteSpec::Random(BBox::DEFAULT)),
        }
    }

    /// Everything that shapes a device's traffic, as [`crate::track::Track`] takes it.
    pub fn track_config(&self, base_dir: Option<&std::path::Path>) -> Result<crate::track::TrackConfig, String> {
        Ok(crate::track::TrackConfig {
            vehicle: self.vehicle.clone(),
            noise: self.noise.clone(),
            route: self.route_spec(base_dir)?,
            events: self.events.clone(),
            geofences: self.geofences.clone(),
            speed_zones: self.speed_zones.clone(),
        })
    }
}

fn is_dtc(c: &str) -> bool {
    let b = c.as_bytes();
    b.len() == 5 && matches!(b[0], b'P' | b'C' | b'B' | b'U') && b[1..].iter().all(u8::is_ascii_hexdigit)
}

/// One line of the ground-truth file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroundTruth {
    pub device: String,
    pub kind: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub magnitude: f64,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// What the scenario asks of the device (not the vehicle).
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceAction {
    /// Drop the connection and stay away until then, buffering records.
    GoOffline {
        until: DateTime<Utc>,
    },
    SendMalformed {
        count: u32,
    },
}

#[derive(Debug, Clone)]
struct Active {
    spec: EventSpec,
    /// When the event really began (None: waiting for the vehicle to be able to).
    began: Option<DateTime<Utc>>,
    /// Event-specific accumulator: speed before, max speed, litres moved…
    acc: f64,
    acc2: f64,
    done_at: Option<DateTime<Utc>>,
    /// Overspeed: first and last moment over the limit.
    over: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

#[derive(Debug, Clone)]
struct FenceState {
    fence: Geofence,
    shape: geofence::Fence,
    entered: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
struct ZoneState {
    zone: SpeedZone,
    area: Area,
    /// Over the limit inside since, until, at most km/h.
    over: Option<(DateTime<Utc>, DateTime<Utc>, f64)>,
}

/// How far ahead (s at the current speed, plus the braking distance) an obeying driver
/// looks for a speed zone.
const LOOKAHEAD_S: f64 = 2.0;
/// How far under the posted limit an obeying driver stays, km/h.
const OBEY_MARGIN_KMH: f64 = 3.0;

/// A scenario applied to one device's vehicle.
#[derive(Debug, Clone)]
pub struct ScenarioRun {
    device: String,
    start: DateTime<Utc>,
    pending: Vec<EventSpec>,
    active: Vec<Active>,
    fences: Vec<FenceState>,
    zones: Vec<ZoneState>,
    /// The odometer at the start (speed-zone stretches count from it).
    odo0: Option<f64>,
    trip: Option<(DateTime<Utc>, f64)>,
    dtc_open: Vec<(String, DateTime<Utc>)>,
    truth: Vec<GroundTruth>,
}

/// A harsh event that cannot start (no speed) within this long is abandoned.
const MAX_WAIT_S: f64 = 600.0;
/// How long a car stays parked after a refuel or theft.
const PARK_AFTER_S: f64 = 60.0;

impl ScenarioRun {
    /// A scenario for one device. Geofences and speed zones that do not validate (a
    /// scenario file's are checked by [`Scenario::from_toml`]) are logged and left out.
    pub fn new(
        device: &str,
        start: DateTime<Utc>,
        events: &[EventSpec],
        fences: &[Geofence],
        zones: &[SpeedZone],
    ) -> ScenarioRun {
        let mut pending = events.to_vec();
        // Latest last, so the next due is popped from the end.
        pending.sort_by_key(|e| std::cmp::Reverse(e.at.0));
        let fences = fences
            .iter()
            .filter_map(|f| match f.fence() {
                Ok(shape) => Some(FenceState {
                    fence: f.clone(),
                    shape,
                    entered: None,
                }),
                Err(e) => {
                    tracing::warn!(device, "{e}; left out");
                    None
                }
            })
            .collect();
        let zones = zones
            .iter()
            .filter_map(|z| match z.validate().and_then(|()| z.area()) {
                Ok(area) => Some(ZoneState {
                    zone: z.clone(),
                    area,
                    over: None,
                }),
                Err(e) => {
                    tracing::warn!(device, "{e}; left out");
                    None
                }
            })
            .collect();
        ScenarioRun {
            device: device.to_owned(),
            start,
            pending,
            active: Vec::new(),
            fences,
            zones,
            odo0: None,
            trip: None,
            dtc_open: Vec::new(),
            truth: Vec::new(),
        }
    }

    fn record(
        &mut self,
        kind: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        magnitude: f64,
        extra: serde_json::Value,
    ) {
        let extra = match extra {
            serde_json::Value::Object(m) => m,
            _ => serde_json::Map::new(),
        };
        self.truth.push(GroundTruth {
            device: self.device.clone(),
            kind: kind.to_owned(),
            start,
            end,
            magnitude: (magnitude * 1000.0).round() / 1000.0,
            extra,
        });
    }

    /// Ground truth recorded since the last call.
    pub fn take_truth(&mut self) -> Vec<GroundTruth> {
        std::mem::take(&mut self.truth)
    }

    /// Call before each vehicle step: starts due events, sets the vehicle's overrides.
    pub fn before_step(&mut self, v: &mut Vehicle) -> Vec<DeviceAction> {
        let now = v.state.time;
        self.odo0.get_or_insert(v.state.odometer_m);
        let mut actions = Vec::new();
        while self
            .pending
            .last()
            .is_some_and(|e| self.start + secs(e.at.secs()) <= now)
        {
            let Some(spec) = self.pending.pop() else { break };
            match spec.kind {
                EventKind::Offline => {
                    let d = spec.duration.map_or(0.0, Dur::secs);
                    actions.push(DeviceAction::GoOffline { until: now + secs(d) });
                    self.record("offline", now, now + secs(d), d, serde_json::json!({}));
                }
                EventKind::Malformed => {
                    let count = spec.count.unwrap_or(1);
                    actions.push(DeviceAction::SendMalformed { count });
                    self.record("malformed_frame", now, now, f64::from(count), serde_json::json!({}));
                }
                EventKind::Dtc => {
                    let code = spec.code.clone().unwrap_or_default();
                    if !v.state.dtcs.contains(&code) {
                        v.state.dtcs.push(code.clone());
                    }
                    if let Some(clear) = spec.clear_at {
                        // Re-queue as its own clearing event.
                        let mut c = spec.clone();
                        c.at = clear;
                        c.clear_at = None;
                        c.count = Some(0);
                        self.pending.push(c);
                        self.pending.sort_by_key(|e| std::cmp::Reverse(e.at.0));
                    }
                    if spec.count == Some(0) {
                        // The clearing half of a raise/clear pair.
                        v.state.dtcs.retain(|d| *d != code);
                        if let Some(i) = self.dtc_open.iter().position(|(c, _)| *c == code) {
                            let (c, raised) = self.dtc_open.remove(i);
                            self.record("dtc_raised", raised, now, 1.0, serde_json::json!({ "code": c }));
                        }
                        self.record("dtc_cleared", now, now, 1.0, serde_json::json!({ "code": code }));
                    } else {
                        self.dtc_open.push((code, now));
                    }
                }
                _ => self.active.push(Active {
                    spec,
                    began: None,
                    acc: 0.0,
                    acc2: 0.0,
                    done_at: None,
                    over: None,
                }),
            }
        }
        self.drive_active(v);
        actions
    }

    fn drive_active(&mut self, v: &mut Vehicle) {
        let now = v.state.time;
        let speed = v.state.speed_ms;
        let mut ov = crate::vehicle::Overrides::default();
        let mut finished = Vec::new();
        for (i, a) in self.active.iter_mut().enumerate() {
            let due = self.start + secs(a.spec.at.secs());
            let dur = a.spec.duration.map_or(2.0, Dur::secs);
            let g = a.spec.magnitude_g.unwrap_or(0.5);
            match a.spec.kind {
                EventKind::HarshBraking | EventKind::HarshCornering => {
                    let began = match a.began {
                        Some(b) => b,
                        None if speed >= 8.0 && !v.overrides.park && !v.overrides.idle => {
                            a.began = Some(now);
                            a.acc = speed;
                            now
                        }
                        None => {
                            if (now - due).num_seconds() as f64 > MAX_WAIT_S {
                                finished.push(i);
                            }
                            continue;
                        }
                    };
                    let over = (now - began).num_milliseconds() as f64 / 1000.0 >= dur;
                    if a.spec.kind == EventKind::HarshBraking {
                        if over || speed <= 0.0 {
                            a.done_at = Some(now);
                            finished.push(i);
                        } else {
                            ov.accel_ms2 = Some(-g * G);
                        }
                    } else if over {
                        a.done_at = Some(now);
                        finished.push(i);
                    } else {
                        ov.lateral_ms2 = Some(g * G);
                    }
                }
                EventKind::HarshAcceleration => {
                    let began = match a.began {
                        Some(b) => b,
                        None if v.is_driving() => {
                            a.began = Some(now);
                            a.acc = speed;
                            now
                        }
                        None => {
                            if (now - due).num_seconds() as f64 > MAX_WAIT_S {
                                finished.push(i);
                            }
                            continue;
                        }
                    };
                    if (now - began).num_milliseconds() as f64 / 1000.0 >= dur || speed * 3.6 > 130.0 {
                        a.done_at = Some(now);
                        finished.push(i);
                    } else {
                        ov.accel_ms2 = Some(g * G);
                    }
                }
                EventKind::Overspeed => {
                    let began = *a.began.get_or_insert(now);
                    let limit = a.spec.limit_kmh.unwrap_or(50.0);
                    let kmh = speed * 3.6;
                    if kmh > limit {
                        a.over = Some(a.over.map_or((now, now), |(s, _)| (s, now)));
                        a.acc = a.acc.max(kmh);
                    }
                    if (now - began).num_milliseconds() as f64 / 1000.0 >= dur {
                        // Keep recording until the driver is back under the limit.
                        if kmh <= limit || (now - began).num_seconds() as f64 > dur + 60.0 {
                            a.done_at = Some(now);
                            finished.push(i);
                        }
                    } else {
                        ov.cruise_kmh = a.spec.speed_kmh;
                    }
                }
                EventKind::Idle => {
                    ov.idle = true;
                    match a.began {
                        None if speed == 0.0 && v.state.ignition => a.began = Some(now),
                        Some(b) if (now - b).num_milliseconds() as f64 / 1000.0 >= dur => {
                            a.done_at = Some(now);
                            ov.idle = false;
                            finished.push(i);
                        }
                        _ => {}
                    }
                }
                EventKind::FuelTheft | EventKind::Refuel => {
                    ov.park = true;
                    let litres = a.spec.litres.unwrap_or(0.0);
                    let drain_s = if a.spec.kind == EventKind::FuelTheft {
                        a.spec.duration.map_or(0.0, Dur::secs)
                    } else {
                        0.0
                    };
                    if !v.is_parked() && a.began.is_none() {
                        continue;
                    }
                    let began = *a.began.get_or_insert(now);
                    let t = (now - began).num_milliseconds() as f64 / 1000.0;
                    let moved_target = if drain_s > 0.0 {
                        litres * (t / drain_s).min(1.0)
                    } else {
                        litres
                    };
                    if a.acc < moved_target && a.acc2 == 0.0 {
                        let moved = if a.spec.kind == EventKind::FuelTheft {
                            v.drain_fuel(moved_target - a.acc)
                        } else {
                            v.add_fuel(moved_target - a.acc)
                        };
                        a.acc += moved;
                        // Tank empty or full: nothing more can move.
                        if moved < (moved_target - a.acc + moved) * 0.999 {
                            a.acc2 = 1.0;
                        }
                        a.done_at = Some(now);
                    }
                    if t >= drain_s + PARK_AFTER_S {
                        ov.park = false;
                        finished.push(i);
                    }
                }
                EventKind::Dtc | EventKind::Offline | EventKind::Malformed => finished.push(i),
            }
        }
        self.zone_overrides(v, &mut ov);
        v.overrides = ov;
        for i in finished.into_iter().rev() {
            let a = self.active.remove(i);
            self.close(a, v);
        }
    }

    fn close(&mut self, a: Active, v: &Vehicle) {
        let Some(began) = a.began else {
            let kind = format!("{:?}", a.spec.kind);
            tracing::info!(device = %self.device, kind, "scheduled event never found a moment to happen");
            return;
        };
        let end = a.done_at.unwrap_or(v.state.time);
        let g = a.spec.magnitude_g.unwrap_or(0.5);
        match a.spec.kind {
            EventKind::HarshBraking => self.record(
                "harsh_braking",
                began,
                end,
                g,
                serde_json::json!({ "speed_before_kmh": (a.acc * 3.6).round(), "speed_after_kmh": (v.state.speed_ms * 3.6).round() }),
            ),
            EventKind::HarshAcceleration => self.record(
                "harsh_acceleration",
                began,
                end,
                g,
                serde_json::json!({ "speed_before_kmh": (a.acc * 3.6).round(), "speed_after_kmh": (v.state.speed_ms * 3.6).round() }),
            ),
            EventKind::HarshCornering => self.record("harsh_cornering", began, end, g, serde_json::json!({})),
            EventKind::Overspeed => {
                let limit = a.spec.limit_kmh.unwrap_or(50.0);
                let (s, e) = a.over.unwrap_or((began, end));
                self.record("overspeed", s, e, a.acc.round(), serde_json::json!({ "limit_kmh": limit }));
            }
            EventKind::Idle => {
                let s = (end - began).num_milliseconds() as f64 / 1000.0;
                self.record("idle", began, end, s, serde_json::json!({}));
            }
            EventKind::FuelTheft => {
                self.record("fuel_theft", began, end, a.acc, serde_json::json!({ "litres": (a.acc * 1000.0).round() / 1000.0 }));
            }
            EventKind::Refuel => self.record("refuel", began, end, a.acc, serde_json::json!({ "litres": (a.acc * 1000.0).round() / 1000.0 })),
            EventKind::Dtc | EventKind::Offline | EventKind::Malformed => {}
        }
    }

    fn driven_m(&self, v: &Vehicle) -> f64 {
        v.state.odometer_m - self.odo0.unwrap_or(v.state.odometer_m)
    }

    /// Speed zones: inside a speeding zone the driver cruises at its `speed_kmh`; near or
    /// inside an obeyed one the driver caps the speed under the limit in time.
    fn zone_overrides(&self, v: &Vehicle, ov: &mut crate::vehicle::Overrides) {
        if self.zones.is_empty() {
            return;
        }
        let pos = v.state.pos;
        let driven = self.driven_m(v);
        let speed = v.state.speed_ms;
        for z in &self.zones {
            let inside = z.area.contains(pos, driven);
            if z.zone.speeding() {
                if inside {
                    let want = z.zone.speed_kmh.unwrap_or(z.zone.limit_kmh);
                    ov.cruise_kmh = Some(ov.cruise_kmh.map_or(want, |c| c.max(want)));
                }
                continue;
            }
            let cap = (z.zone.limit_kmh - OBEY_MARGIN_KMH).max(z.zone.limit_kmh * 0.8);
            let cap_ms = cap / 3.6;
            // Look ahead by the distance needed to brake to the cap comfortably, plus a
            // couple of seconds of reaction, along the current heading.
            let brake = 0.5 * v.cfg.max_brake_ms2;
            let ahead = (speed * speed - cap_ms * cap_ms).max(0.0) / (2.0 * brake) + speed * LOOKAHEAD_S + 5.0;
            let near = inside
                || [0.5, 1.0].iter().any(|f| {
                    let d = ahead * f;
                    z.area
                        .contains(crate::route::offset(pos, v.state.heading_deg, d), driven + d)
                });
            if near {
                ov.cap_kmh = Some(ov.cap_kmh.map_or(cap, |c: f64| c.min(cap)));
            }
        }
    }

    /// After a step: open, extend or close each zone's stretch over the limit.
    fn watch_zones(&mut self, v: &Vehicle) {
        let now = v.state.time;
        let driven = self.driven_m(v);
        let kmh = v.state.speed_ms * 3.6;
        let mut closed = Vec::new();
        for z in &mut self.zones {
            let over = z.area.contains(v.state.pos, driven) && kmh > z.zone.limit_kmh;
            match (over, z.over) {
                (true, None) => z.over = Some((now, now, kmh)),
                (true, Some((s, _, m))) => z.over = Some((s, now, m.max(kmh))),
                (false, Some(o)) => {
                    z.over = None;
                    closed.push((o, z.zone.name.clone(), z.zone.limit_kmh));
                }
                (false, None) => {}
            }
        }
        for ((s, e, max), zone, limit) in closed {
            self.record_zone_overspeed(s, e, max, &zone, limit);
        }
    }

    fn record_zone_overspeed(&mut self, s: DateTime<Utc>, e: DateTime<Utc>, max: f64, zone: &str, limit: f64) {
        self.record(
            "overspeed",
            s,
            e,
            max.round(),
            serde_json::json!({ "limit_kmh": limit, "zone": zone }),
        );
    }

    /// Call after each vehicle step: trips, automatic refuels, geofence crossings.
    pub fn after_step(&mut self, v: &mut Vehicle) {
        for e in v.take_events() {
            match e {
                VehicleEvent::IgnitionOn(t) => {
                    self.trip = Some((t, v.state.odometer_m));
                    self.record("trip_start", t, t, 0.0, serde_json::json!({}));
                }
                VehicleEvent::IgnitionOff(t) => self.end_trip(t, v.state.odometer_m),
                VehicleEvent::Refuel(t, l) => {
                    self.record("refuel", t, t, l, serde_json::json!({ "litres": l, "automatic": true }))
                }
            }
        }
        self.watch_zones(v);
        let now = v.state.time;
        let pos = v.state.pos;
        let mut crossings = Vec::new();
        for f in &mut self.fences {
            let inside = f.shape.contains(pos.lon, pos.lat);
            match (inside, f.entered) {
                (true, None) => {
                    f.entered = Some(now);
                    crossings.push(("geofence_enter", now, now, 0.0, f.fence.name.clone()));
                }
                (false, Some(t)) => {
                    f.entered = None;
                    crossings.push(("geofence_exit", now, now, 0.0, f.fence.name.clone()));
                    let dwell = (now - t).num_milliseconds() as f64 / 1000.0;
                    if dwell >= f.fence.dwell.secs() {
                        crossings.push(("geofence_dwell", t, now, dwell, f.fence.name.clone()));
                    }
                }
                _ => {}
            }
        }
        for (kind, s, e, m, name) in crossings {
            self.record(kind, s, e, m, serde_json::json!({ "geofence": name }));
        }
    }

    fn end_trip(&mut self, t: DateTime<Utc>, odo: f64) {
        if let Some((start, odo0)) = self.trip.take() {
            let km = (odo - odo0) / 1000.0;
            self.record(
                "trip_end",
                start,
                t,
                km,
                serde_json::json!({ "distance_km": (km * 1000.0).round() / 1000.0 }),
            );
        }
    }

    /// The run is over: close what is still open (a trip, a raised DTC, a dwell) at `v`'s
    /// time, so every line has an end.
    pub fn finish(&mut self, v: &mut Vehicle) {
        self.after_step(v);
        let now = v.state.time;
        for a in std::mem::take(&mut self.active) {
            self.close(a, v);
        }
        if v.state.ignition {
            self.end_trip(now, v.state.odometer_m);
        }
        let open: Vec<_> = self
            .zones
            .iter_mut()
            .filter_map(|z| z.over.take().map(|o| (o, z.zone.name.clone(), z.zone.limit_kmh)))
            .collect();
        for ((s, e, max), zone, limit) in open {
            self.record_zone_overspeed(s, e, max, &zone, limit);
        }
        for (code, raised) in std::mem::take(&mut self.dtc_open) {
            self.record(
                "dtc_raised",
                raised,
                now,
                1.0,
                serde_json::json!({ "code": code, "still_active": true }),
            );
        }
        let open: Vec<_> = self
            .fences
            .iter()
            .filter_map(|f| f.entered.map(|t| (t, f.fence.clone())))
            .collect();
        for (t, f) in open {
            let dwell = (now - t).num_milliseconds() as f64 / 1000.0;
            if dwell >= f.dwell.secs() {
                self.record(
                    "geofence_dwell",
                    t,
                    now,
                    dwell,
                    serde_json::json!({ "geofence": f.name, "still_inside": true }),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap(), StdDuration::from_secs(90));
        assert_eq!(parse_duration("1h30m").unwrap(), StdDuration::from_secs(5400));
        assert_eq!(parse_duration("250ms").unwrap(), StdDuration::from_millis(250));
        assert_eq!(parse_duration("2.5").unwrap(), StdDuration::from_millis(2500));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("-3").is_err());
    }

    #[test]
    fn scenario_errors_are_listed() {
        let err = Scenario::from_toml(
            r#"
            [[events]]
            kind = "harsh_braking"
            at = "10s"
            [[events]]
            kind = "dtc"
            at = "1m"
            code = "X1"
            "#,
        )
        .unwrap_err();
        assert!(err.contains("2 problem"), "{err}");
        assert!(Scenario::from_toml("bogus = 1").is_err());
    }

    #[test]
    fn example_scenario_parses() {
        let text = include_str!("../scenarios/city-day.toml");
        let s = Scenario::from_toml(text).unwrap();
        assert!(!s.events.is_empty());
    }
}
