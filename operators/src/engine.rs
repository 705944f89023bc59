//! The operators' pure core: per-device state, fixes in, events and trip updates out.
//! No IO and no clock of its own: the runtime feeds it batches in per-device order and
//! calls [`Engine::tick`] with its clock, then writes [`Engine::take_output`].
//!
//! Per fix, in this order: arrival bookkeeping (last seen, `device_online`), input
//! checks (far future, stale or duplicate, quality gate, teleport), geofences (so the
//! zone speed limit is known), behaviour, trips/idle, plugged detectors.
//!
//! # Bad input
//! - A batch out of order is sorted by fix time first.
//! - A fix not newer than the device's cursor (the last fix processed) is a duplicate or
//!   arrived late: counted and dropped. The store keeps it; operators never go back in
//!   time, which is what makes a replay after a restart produce the same events.
//! - A fix more than `input.max_future_s` after its arrival is a broken clock: dropped
//!   (it would otherwise block every later fix as "older").
//! - A valid fix implying more than `input.max_plausible_kmh` from the last good fix is
//!   a teleport: not used for positions, distance, fences or GPS-derived behaviour. If
//!   the next fix agrees with the new place (plausible from it), the device really moved
//!   (towed, long gap) and it is re-anchored there without counting the jump as distance.
//! - No ignition signal: trips are motion based, idling needs rpm.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use store::PositionRow;

use crate::behaviour::{Behaviour, Limit};
use crate::config::OperatorsConfig;
use crate::detector::{Detector, DetectorFactory};
use crate::event::{OperatorEvent, haversine_m, secs};
use crate::fences::FenceSet;
use crate::fix::Fix;
use crate::sample::sample_from_row;
use crate::trips::{TripTracker, TripUpdate};

/// What the registry says about a device (and the vehicle it is fitted to).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceInfo {
    pub tenant_id: Option<i64>,
    /// Vehicle class for harsh thresholds (`light`, `medium`, `heavy`).
    pub class: Option<String>,
    pub vehicle_id: Option<i64>,
    /// The vehicle's fuel tank, litres (`vehicles.fuel_tank_l`).
    pub tank_l: Option<f64>,
    /// The vehicle's `service_plans`.
    pub service_plans: Vec<analytics::maintenance::ServicePlan>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Anchor {
    time: DateTime<Utc>,
    lat: f64,
    lon: f64,
}

/// Everything remembered about one device; checkpointed.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct DeviceOps {
    pub device_id: i64,
    /// Fix time of the last fix processed.
    pub cursor: Option<DateTime<Utc>>,
    /// Arrival (server) time of the last record.
    pub last_seen: Option<DateTime<Utc>>,
    pub online: bool,
    last_good: Option<Anchor>,
    pending_jump: Option<Anchor>,
    trips: TripTracker,
    behaviour: Behaviour,
    fences: geofence::DeviceState,
    /// Plugged detectors' states, by name (written by [`Engine::snapshot`], read on restore).
    #[serde(default, skip_serializing)]
    detectors: Vec<(String, serde_json::Value)>,
    #[serde(skip)]
    live: Option<Vec<Box<dyn Detector>>>,
}

impl DeviceOps {
    pub fn trips(&self) -> &TripTracker {
        &self.trips
    }
}

/// Counters of what the engine did with its input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct EngineStats {
    pub fixes: u64,
    pub used: u64,
    pub stale: u64,
    pub future: u64,
    pub poor: u64,
    pub teleports: u64,
    pub events: u64,
}

/// What the engine produced since the last [`Engine::take_output`].
#[derive(Debug, Default)]
pub struct Output {
    pub events: Vec<OperatorEvent>,
    pub trips: Vec<(i64, TripUpdate)>,
}

impl Output {
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.trips.is_empty()
    }
}

pub struct Engine {
    cfg: Arc<OperatorsConfig>,
    devices: HashMap<i64, DeviceOps>,
    info: HashMap<i64, DeviceInfo>,
    fences: Arc<FenceSet>,
    factory: Option<DetectorFactory>,
    filter: geofence::FixFilter,
    stats: EngineStats,
    out: Output,
    dirty: HashSet<u32>,
    gf_events: Vec<geofence::Event>,
    detections: Vec<crate::sample::Detection>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("devices", &self.devices.len())
            .field("fences", &self.fences.count)
            .field("stats", &self.stats)
            .finish()
    }
}

fn empty_index() -> &'static geofence::FenceIndex {
    static EMPTY: OnceLock<geofence::FenceIndex> = OnceLock::new();
    EMPTY.get_or_init(geofence::FenceIndex::default)
}

impl Engine {
    pub fn new(cfg: Arc<OperatorsConfig>) -> Engine {
        let filter = geofence::FixFilter {
            min_satellites: cfg.input.min_satellites.clamp(0, 255) as u8,
            max_hdop: f64::from(cfg.input.max_hdop),
        };
        Engine {
            cfg,
            devices: HashMap::new(),
            info: HashMap::new(),
            fences: Arc::new(FenceSet::default()),
            factory: None,
            filter,
            stats: EngineStats::default(),
            out: Output::default(),
            dirty: HashSet::new(),
            gf_events: Vec::new(),
            detections: Vec::new(),
        }
    }

    pub fn config(&self) -> &OperatorsConfig {
        &self.cfg
    }

    pub fn set_detectors(&mut self, factory: DetectorFactory) {
        self.factory = Some(factory);
    }

    pub fn set_fences(&mut self, fences: Arc<FenceSet>) {
        self.fences = fences;
    }

    pub fn fences(&self) -> &FenceSet {
        &self.fences
    }

    /// Sets what the registry says about a device; a change reaches its running
    /// detectors ([`Detector::configure`]) at once.
    pub fn set_device_info(&mut self, device: i64, info: DeviceInfo) {
        if self.info.get(&device) == Some(&info) {
            return;
        }
        if let Some(live) = self.devices.get_mut(&device).and_then(|d| d.live.as_mut()) {
            for d in live.iter_mut() {
                d.configure(&info);
            }
            self.dirty
                .insert((device.rem_euclid(i64::from(self.cfg.checkpoint_partitions.max(1)))) as u32);
        }
        self.info.insert(device, info);
    }

    pub fn device_info(&self, device: i64) -> Option<&DeviceInfo> {
        self.info.get(&device)
    }

    pub fn knows_device(&self, device: i64) -> bool {
        self.info.contains_key(&device)
    }

    pub fn device(&self, device: i64) -> Option<&DeviceOps> {
        self.devices.get(&device)
    }

    pub fn device_ids(&self) -> impl Iterator<Item = i64> + '_ {
        self.devices.keys().copied()
    }

    pub fn cursor(&self, device: i64) -> Option<DateTime<Utc>> {
        self.devices.get(&device).and_then(|d| d.cursor)
    }

    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    pub fn take_output(&mut self) -> Output {
        self.stats.events += self.out.events.len() as u64;
        std::mem::take(&mut self.out)
    }

    pub fn pending_events(&self) -> usize {
        self.out.events.len() + self.out.trips.len()
    }

    fn partition(&self, device: i64) -> u32 {
        (device.rem_euclid(i64::from(self.cfg.checkpoint_partitions.max(1)))) as u32
    }

    /// One device's records, as they arrived.
    pub fn process(&mut self, device: i64, rows: &[PositionRow]) {
        if rows.is_empty() {
            return;
        }
        let part = self.partition(device);
        self.dirty.insert(part);
        let mut order: Vec<usize> = (0..rows.len()).collect();
        if rows.windows(2).any(|w| w[1].fix_time < w[0].fix_time) {
            order.sort_by_key(|&i| rows[i].fix_time);
        }
        let mut st = self.devices.remove(&device).unwrap_or_else(|| DeviceOps {
            device_id: device,
            ..DeviceOps::default()
        });
        for i in order {
            self.process_row(&mut st, &rows[i]);
        }
        self.devices.insert(device, st);
    }

    fn process_row(&mut self, st: &mut DeviceOps, r: &PositionRow) {
        let device = st.device_id;
        let cfg = self.cfg.clone();
        self.stats.fixes += 1;
        if st.last_seen.is_none_or(|l| r.server_time > l) {
            st.last_seen = Some(r.server_time);
        }
        if !st.online {
            st.online = true;
            self.push_event(OperatorEvent::new(device, "device_online", r.server_time));
        }
        if r.fix_time > r.server_time + Duration::seconds(cfg.input.max_future_s) {
            self.stats.future += 1;
            return;
        }
        if st.cursor.is_some_and(|c| r.fix_time <= c) {
            self.stats.stale += 1;
            return;
        }
        let mut f = Fix::from_row(r);
        f.dt_s = st.cursor.map_or(0.0, |c| secs(c, r.fix_time));
        st.cursor = Some(r.fix_time);
        self.stats.used += 1;

        // Quality gate and teleports.
        let coords_ok = r.lat.is_finite()
            && r.lon.is_finite()
            && r.lat.abs() <= 90.0
            && r.lon.abs() <= 180.0
            && !(r.lat == 0.0 && r.lon == 0.0);
        let quality = r.valid
            && coords_ok
            && r.satellites.is_none_or(|s| s >= cfg.input.min_satellites)
            && r.hdop.is_none_or(|h| h <= cfg.input.max_hdop);
        if quality {
            let here = Anchor {
                time: r.fix_time,
                lat: r.lat,
                lon: r.lon,
            };
            let implied = |a: &Anchor| {
                let d = haversine_m(a.lat, a.lon, here.lat, here.lon);
                let dt = secs(a.time, here.time).max(0.001);
                (d, d / dt * 3.6)
            };
            match st.last_good {
                None => {
                    st.last_good = Some(here);
                    f.good = true;
                }
                Some(a) => {
                    let (d, kmh) = implied(&a);
                    // Jitter over a short gap can look fast; a teleport is also far.
                    if kmh > cfg.input.max_plausible_kmh && d > 200.0 {
                        let confirmed = st
                            .pending_jump
                            .is_some_and(|p| implied(&p).1 <= cfg.input.max_plausible_kmh);
                        if confirmed {
                            // The device really is here now: re-anchor, no distance for the jump.
                            st.last_good = Some(here);
                            st.pending_jump = None;
                            f.good = true;
                        } else {
                            st.pending_jump = Some(here);
                            self.stats.teleports += 1;
                        }
                    } else {
                        st.last_good = Some(here);
                        st.pending_jump = None;
                        f.good = true;
                        f.moved_m = d;
                    }
                }
            }
        } else {
            self.stats.poor += 1;
        }
        if !f.good {
            // A bad fix's position is the last good one (trackers do this themselves).
            if let Some(a) = st.last_good {
                f.lat = a.lat;
                f.lon = a.lon;
            }
        }

        let first_event = self.out.events.len();
        let info = self.info.get(&device);
        let tenant = info.and_then(|i| i.tenant_id);
        let th = cfg.behaviour.thresholds(info.and_then(|i| i.class.as_deref()));

        // Geofences.
        let fences = self.fences.clone();
        let index = tenant
            .and_then(|t| fences.for_tenant(t))
            .unwrap_or_else(|| empty_index());
        if f.good {
            let gf = geofence::Fix {
                device: geofence::DeviceId(device as u64),
                time: f.time,
                lon: f.lon,
                lat: f.lat,
                speed_kmh: f.speed_kmh,
                satellites: r.satellites.map(|s| s.clamp(0, 255) as u8),
                hdop: r.hdop.map(f64::from),
                valid: true,
            };
            self.gf_events.clear();
            let _ = st.fences.step(index, &gf, &[], &self.filter, &mut self.gf_events);
            for e in std::mem::take(&mut self.gf_events) {
                if let Some(ev) = geofence_event(device, &e) {
                    self.push_event(ev);
                }
            }
        }
        let mut limit = Limit {
            kmh: cfg.behaviour.speed_limit_kmh,
            zone: None,
        };
        for id in st.fences.inside() {
            if let Some(sl) = index.get(id).and_then(|f| f.rules().speed_limit.as_ref())
                && sl.limit_kmh < limit.kmh
            {
                limit = Limit {
                    kmh: sl.limit_kmh,
                    zone: Some(id.0 as i64),
                };
            }
        }

        let mut events = std::mem::take(&mut self.out.events);
        st.behaviour.push(device, &f, &th, limit, &cfg.behaviour, &mut events);
        for e in &events[first_event..] {
            st.trips.note_event(&e.kind, e.magnitude.unwrap_or(1.0));
        }
        let mut trips = Vec::new();
        st.trips.push(device, &f, &cfg.trips, &mut events, &mut trips);
        self.out.events = events;
        self.out.trips.extend(trips.into_iter().map(|t| (device, t)));

        if let Some(factory) = &self.factory {
            let live = live_detectors(st, factory, self.info.get(&device));
            let sample = sample_from_row(r);
            for d in live.iter_mut() {
                d.push(&sample, &mut self.detections);
            }
            for det in std::mem::take(&mut self.detections) {
                self.push_event(detection_event(device, det));
            }
        }
    }

    fn push_event(&mut self, e: OperatorEvent) {
        self.out.events.push(e);
    }

    /// Timers, at `now` of the operator clock.
    pub fn tick(&mut self, now: DateTime<Utc>) {
        let cfg = self.cfg.clone();
        let parts = cfg.checkpoint_partitions.max(1);
        let mut events = std::mem::take(&mut self.out.events);
        let mut trips = Vec::new();
        for (id, st) in self.devices.iter_mut() {
            let Some(last_seen) = st.last_seen else { continue };
            let quiet = secs(last_seen, now);
            let before = (events.len(), trips.len(), st.online);
            if st.online && quiet >= cfg.offline_timeout_s as f64 {
                st.online = false;
                events.push(
                    OperatorEvent::new(*id, "device_offline", last_seen)
                        .attrs(serde_json::json!({ "timeout_s": cfg.offline_timeout_s })),
                );
            }
            if quiet >= 60.0 {
                let info = self.info.get(id);
                let th = cfg.behaviour.thresholds(info.and_then(|i| i.class.as_deref()));
                st.behaviour.flush(*id, &th, &cfg.behaviour, &mut events);
            }
            let mut t = Vec::new();
            st.trips.tick(*id, quiet, &cfg.trips, &mut events, &mut t);
            trips.extend(t.into_iter().map(|t| (*id, t)));
            // Detectors restored from a checkpoint start here when the device stays
            // silent: a parked vehicle's calendar service still comes due.
            if let Some(factory) = &self.factory {
                live_detectors(st, factory, self.info.get(id));
            }
            if let Some(live) = &mut st.live {
                for d in live.iter_mut() {
                    d.tick(now, &mut self.detections);
                }
                for det in std::mem::take(&mut self.detections) {
                    events.push(detection_event(*id, det));
                }
            }
            if (events.len(), trips.len(), st.online) != before {
                self.dirty.insert((id.rem_euclid(i64::from(parts))) as u32);
            }
        }
        self.out.events = events;
        self.out.trips.extend(trips);
    }

    /// Partitions changed since the last call (and clears the set).
    pub fn take_dirty(&mut self) -> Vec<u32> {
        let mut v: Vec<u32> = self.dirty.drain().collect();
        v.sort_unstable();
        v
    }

    /// Serialised state of one partition's devices.
    pub fn snapshot(&self, part: u32) -> Vec<u8> {
        let parts = i64::from(self.cfg.checkpoint_partitions.max(1));
        let devs: Vec<SavedDevice<'_>> = self
            .devices
            .values()
            .filter(|d| d.device_id.rem_euclid(parts) as u32 == part)
            .map(|d| SavedDevice {
                ops: d,
                detectors: d
                    .live
                    .as_ref()
                    .map(|l| l.iter().map(|x| (x.name().to_owned(), x.save())).collect())
                    .unwrap_or_else(|| d.detectors.clone()),
            })
            .collect();
        serde_json::to_vec(&devs).unwrap_or_default()
    }

    /// Loads a partition saved by [`Engine::snapshot`].
    pub fn restore(&mut self, bytes: &[u8]) -> Result<usize, serde_json::Error> {
        let devs: Vec<DeviceOps> = serde_json::from_slice(bytes)?;
        let n = devs.len();
        for d in devs {
            self.devices.insert(d.device_id, d);
        }
        Ok(n)
    }
}

/// The device's detectors, made on first use: restored from the checkpointed state, then
/// configured with what the registry says (tank size, service plans).
fn live_detectors<'a>(
    st: &'a mut DeviceOps,
    factory: &DetectorFactory,
    info: Option<&DeviceInfo>,
) -> &'a mut Vec<Box<dyn Detector>> {
    let device = st.device_id;
    let saved = &mut st.detectors;
    st.live.get_or_insert_with(|| {
        let mut ds = factory(device);
        for d in &mut ds {
            if let Some((_, v)) = saved.iter().find(|(n, _)| n == d.name())
                && let Err(e) = d.restore(v.clone())
            {
                tracing::warn!(device, detector = d.name(), error = %e, "detector state dropped");
            }
            if let Some(info) = info {
                d.configure(info);
            }
        }
        saved.clear();
        ds
    })
}

/// A device's state with its detectors' saved states spliced in.
#[derive(Serialize)]
struct SavedDevice<'a> {
    #[serde(flatten)]
    ops: &'a DeviceOps,
    #[serde(rename = "detectors")]
    detectors: Vec<(String, serde_json::Value)>,
}

fn geofence_event(device: i64, e: &geofence::Event) -> Option<OperatorEvent> {
    use geofence::EventKind as K;
    let id = e.fence.0 as i64;
    let base = |kind: &str, t: DateTime<Utc>| {
        let mut ev = OperatorEvent::new(device, kind, t).at(e.fix.lat, e.fix.lon);
        ev.geofence_id = Some(id);
        ev
    };
    Some(match &e.kind {
        K::Enter => base("geofence_enter", e.since),
        K::Exit => base("geofence_exit", e.since),
        K::Dwell { duration_s } => base("geofence_dwell", e.since)
            .until(e.time)
            .magnitude(*duration_s as f64),
        K::TimeWindowViolation { window } => {
            base("geofence_time_violation", e.since).attrs(serde_json::json!({ "window": window }))
        }
        // Zone speed limits are applied by the overspeed operator (one overspeed event
        // per episode, with the zone as an attribute), not twice.
        K::OverspeedStart { .. } | K::OverspeedEnd { .. } => return None,
    })
}

fn detection_event(device: i64, d: crate::sample::Detection) -> OperatorEvent {
    OperatorEvent {
        device_id: device,
        kind: d.kind,
        time: d.time,
        end_time: d.end_time,
        lat: d.lat,
        lon: d.lon,
        geofence_id: None,
        magnitude: d.magnitude,
        severity: d.severity,
        attributes: d.attributes,
    }
}

impl Engine {
    /// Marks partitions dirty again (a checkpoint write failed).
    pub fn mark_dirty(&mut self, parts: &[u32]) {
        self.dirty.extend(parts.iter().copied());
    }
}
