//! Per-device, per-fence state machines: enter, exit, dwell, overspeed, time windows.
//!
//! Time is the fixes' own time, never the wall clock, so replaying the same positions
//! yields the same events, and every event carries a key (device, fence, kind, start
//! of the episode) that downstream stores can deduplicate on.
//!
//! For one device and one fence:
//!
//! ```text
//!            inside fix                 run long enough (fixes and seconds)
//!  Outside ─────────────▶ Entering ─────────────────────────────────────▶ Inside ──┐
//!     ▲                      │ not-inside fix                     │  ▲             │ dwell,
//!     └──────────────────────┘                                    │  │             │ overspeed,
//!     ▲                                                           │  │ inside fix  │ time windows
//!     │          clearly-outside run long enough                  ▼  │             │
//!     └──────────────────────────────────────────────────────── Exiting ◀───────────┘
//! ```
//!
//! "Clearly outside" means more than `hysteresis_m` beyond the boundary. A fix between
//! the boundary and that distance (the band) neither counts towards an exit nor resets
//! one, so jitter of less than the hysteresis around an edge cannot make events flap.
//!
//! Fixes that are out of order or repeat the last fix time are ignored (and counted):
//! devices resend unacknowledged data, and the store already has those positions. A
//! batch is sorted per device by time first, so disorder within one batch is harmless.
//!
//! When a fence disappears from the index, or stops applying to a device, its state is
//! dropped without an event: the fence owner changed the rules, the device did not move.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::index::FenceIndex;
use crate::rules::FenceRules;
use crate::shape::FenceId;

/// Device identifier (the registry's id, not the IMEI).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeviceId(pub u64);

/// Device group identifier, for assigning fences to groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GroupId(pub u64);

/// The input: one position of one device. Small and `Copy` on purpose; build it from
/// whatever record type the caller has.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Fix {
    pub device: DeviceId,
    pub time: DateTime<Utc>,
    pub lon: f64,
    pub lat: f64,
    #[serde(default)]
    pub speed_kmh: Option<f64>,
    #[serde(default)]
    pub satellites: Option<u8>,
    #[serde(default)]
    pub hdop: Option<f64>,
    /// Whether the device reports a real GNSS fix.
    pub valid: bool,
}

impl Fix {
    /// A valid fix with only position and time.
    pub fn at(device: DeviceId, time: DateTime<Utc>, lon: f64, lat: f64) -> Fix {
        Fix {
            device,
            time,
            lon,
            lat,
            speed_kmh: None,
            satellites: None,
            hdop: None,
            valid: true,
        }
    }

    pub fn with_speed(mut self, kmh: f64) -> Fix {
        self.speed_kmh = Some(kmh);
        self
    }
}

/// Which fixes are too poor to move a state machine. A field the device does not
/// report is not held against it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FixFilter {
    pub min_satellites: u8,
    pub max_hdop: f64,
}

impl Default for FixFilter {
    fn default() -> Self {
        FixFilter {
            min_satellites: 4,
            max_hdop: 5.0,
        }
    }
}

/// Why a fix was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// No fix, too few satellites, HDOP too high, or coordinates out of range.
    PoorFix,
    /// Older than, or as old as, the last fix used for this device.
    OutOfOrder,
}

impl FixFilter {
    fn check(&self, f: &Fix) -> Result<(), Skip> {
        let coords_ok = (-180.0..=180.0).contains(&f.lon) && (-90.0..=90.0).contains(&f.lat);
        let sats_ok = f.satellites.is_none_or(|s| s >= self.min_satellites);
        let hdop_ok = f.hdop.is_none_or(|h| h <= self.max_hdop);
        if f.valid && coords_ok && sats_ok && hdop_ok {
            Ok(())
        } else {
            Err(Skip::PoorFix)
        }
    }
}

/// What happened. The data each kind needs travels with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    Enter,
    Exit,
    Dwell {
        duration_s: i64,
    },
    OverspeedStart {
        limit_kmh: f64,
        max_speed_kmh: f64,
    },
    OverspeedEnd {
        limit_kmh: f64,
        max_speed_kmh: f64,
    },
    /// `window` is the index into the fence's `time_windows`.
    TimeWindowViolation {
        window: usize,
    },
}

/// [`EventKind`] without its data: part of an event's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventTag {
    Enter,
    Exit,
    Dwell,
    OverspeedStart,
    OverspeedEnd,
    TimeWindowViolation,
}

impl EventKind {
    pub fn tag(&self) -> EventTag {
        match self {
            EventKind::Enter => EventTag::Enter,
            EventKind::Exit => EventTag::Exit,
            EventKind::Dwell { .. } => EventTag::Dwell,
            EventKind::OverspeedStart { .. } => EventTag::OverspeedStart,
            EventKind::OverspeedEnd { .. } => EventTag::OverspeedEnd,
            EventKind::TimeWindowViolation { .. } => EventTag::TimeWindowViolation,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub device: DeviceId,
    pub fence: FenceId,
    #[serde(flatten)]
    pub kind: EventKind,
    /// When the episode began: the first fix of the inside run for `Enter` and `Dwell`,
    /// of the outside run for `Exit`, of the overspeed for both overspeed events, the
    /// first violating fix for `TimeWindowViolation`.
    pub since: DateTime<Utc>,
    /// The time of the fix that triggered the event (≥ `since`).
    pub time: DateTime<Utc>,
    /// The fix that triggered the event.
    pub fix: Fix,
}

/// What makes an event the same event when positions are replayed.
pub type EventKey = (DeviceId, FenceId, EventTag, DateTime<Utc>);

impl Event {
    pub fn key(&self) -> EventKey {
        (self.device, self.fence, self.kind.tag(), self.since)
    }
}

/// A run of consecutive fixes on one side of the boundary.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Run {
    start: DateTime<Utc>,
    fixes: u32,
}

impl Run {
    fn new(t: DateTime<Utc>) -> Run {
        Run { start: t, fixes: 1 }
    }
    fn done(&self, t: DateTime<Utc>, min_fixes: u32, dwell_s: u32) -> bool {
        self.fixes >= min_fixes && (t - self.start).num_milliseconds() >= dwell_s as i64 * 1000
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Overspeed {
    start: DateTime<Utc>,
    max_kmh: f64,
    announced: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Stay {
    since: DateTime<Utc>,
    exit: Option<Run>,
    dwell_sent: bool,
    overspeed: Option<Overspeed>,
    /// Start of the current time-window violation, if one is running.
    violation: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum FenceState {
    Entering(Run),
    Inside(Stay),
}

/// Where one fix lies relative to one fence the device is inside of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Inside,
    /// Outside, but within the hysteresis distance.
    Band,
    Outside,
}

/// Everything the engine remembers about one device. Serialisable so a stream operator
/// can checkpoint it with its consumer offset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceState {
    last_time: Option<DateTime<Utc>>,
    /// Fences with a non-trivial state, sorted by id. "Outside with nothing pending"
    /// is the default and is not stored, so a device carries only what it is near.
    fences: Vec<(FenceId, FenceState)>,
}

impl DeviceState {
    /// Fences the device is confirmed inside of.
    pub fn inside(&self) -> impl Iterator<Item = FenceId> + '_ {
        self.fences
            .iter()
            .filter(|(_, s)| matches!(s, FenceState::Inside(_)))
            .map(|(id, _)| *id)
    }

    pub fn last_time(&self) -> Option<DateTime<Utc>> {
        self.last_time
    }

    /// Feed one fix. Events are appended to `out`. `groups` are the device's groups.
    pub fn step(
        &mut self,
        index: &FenceIndex,
        fix: &Fix,
        groups: &[crate::GroupId],
        filter: &FixFilter,
        out: &mut Vec<Event>,
    ) -> Result<(), Skip> {
        filter.check(fix)?;
        if self.last_time.is_some_and(|last| fix.time <= last) {
            return Err(Skip::OutOfOrder);
        }
        self.last_time = Some(fix.time);

        let mut slots = Vec::new();
        index.containing_slots(fix.lon, fix.lat, &mut slots);
        slots.retain(|&s| index.at(s).rules().applies_to.applies(fix.device, groups));

        // Merge the tracked fences (sorted by id) with the containing ones (sorted by
        // slot, and slots are in id order) into the new tracked list.
        let old = std::mem::take(&mut self.fences);
        let mut next = Vec::with_capacity(old.len().max(slots.len()));
        let mut old_it = old.into_iter().peekable();
        let mut hit_it = slots.iter().map(|&s| (index.at(s).id(), s)).peekable();
        loop {
            let (id, state, contained) = match (old_it.peek(), hit_it.peek()) {
                (None, None) => break,
                (Some((oid, _)), Some((hid, _))) if oid == hid => {
                    let (id, st) = old_it.next().expect("peeked");
                    hit_it.next();
                    (id, Some(st), true)
                }
                (Some((oid, _)), Some((hid, _))) if hid < oid => {
                    let (id, _) = hit_it.next().expect("peeked");
                    (id, None, true)
                }
                (Some(_), _) => {
                    let (id, st) = old_it.next().expect("peeked");
                    (id, Some(st), false)
                }
                (None, Some(_)) => {
                    let (id, _) = hit_it.next().expect("peeked");
                    (id, None, true)
                }
            };
            let Some(slot) = index.slot(id) else { continue };
            let fence = index.at(slot);
            if !contained && !fence.rules().applies_to.applies(fix.device, groups) {
                continue;
            }
            let side = if contained {
                Side::Inside
            } else if matches!(state, Some(FenceState::Inside(_)))
                && fence.within_m(fix.lon, fix.lat, fence.rules().hysteresis_m)
            {
                Side::Band
            } else {
                Side::Outside
            };
            let mut emit = |kind: EventKind, since: DateTime<Utc>| {
                out.push(Event {
                    device: fix.device,
                    fence: id,
                    kind,
                    since,
                    time: fix.time,
                    fix: *fix,
                })
            };
            if let Some(st) = advance(state, side, fix, fence.rules(), &mut emit) {
                next.push((id, st));
            }
        }
        self.fences = next;
        Ok(())
    }
}

/// One fence's transition for one fix. Returns the new state, `None` for plain outside.
fn advance(
    state: Option<FenceState>,
    side: Side,
    fix: &Fix,
    rules: &FenceRules,
    emit: &mut impl FnMut(EventKind, DateTime<Utc>),
) -> Option<FenceState> {
    let t = fix.time;
    match (state, side) {
        (None, Side::Inside) => enter_step(Run::new(t), fix, rules, emit),
        (Some(FenceState::Entering(mut run)), Side::Inside) => {
            run.fixes += 1;
            enter_step(run, fix, rules, emit)
        }
        (None | Some(FenceState::Entering(_)), _) => None,
        (Some(FenceState::Inside(mut stay)), Side::Inside) => {
            stay.exit = None;
            inside_rules(&mut stay, fix, rules, emit);
            Some(FenceState::Inside(stay))
        }
        (Some(FenceState::Inside(mut stay)), Side::Band) => {
            inside_rules(&mut stay, fix, rules, emit);
            Some(FenceState::Inside(stay))
        }
        (Some(FenceState::Inside(mut stay)), Side::Outside) => {
            let run = match stay.exit {
                Some(mut r) => {
                    r.fixes += 1;
                    r
                }
                None => Run::new(t),
            };
            if run.done(t, rules.exit_min_fixes, rules.exit_dwell_s) {
                close_overspeed(&mut stay, rules, emit);
                emit(EventKind::Exit, run.start);
                None
            } else {
                stay.exit = Some(run);
                // Still inside as far as the world knows: time-based dwell goes on, but
                // speed and time windows are about the zone, and this fix is not in it.
                dwell_rule(&mut stay, fix, rules, emit);
                Some(FenceState::Inside(stay))
            }
        }
    }
}

fn enter_step(
    run: Run,
    fix: &Fix,
    rules: &FenceRules,
    emit: &mut impl FnMut(EventKind, DateTime<Utc>),
) -> Option<FenceState> {
    if !run.done(fix.time, rules.enter_min_fixes, rules.enter_dwell_s) {
        return Some(FenceState::Entering(run));
    }
    emit(EventKind::Enter, run.start);
    let mut stay = Stay {
        since: run.start,
        exit: None,
        dwell_sent: false,
        overspeed: None,
        violation: None,
    };
    inside_rules(&mut stay, fix, rules, emit);
    Some(FenceState::Inside(stay))
}

fn inside_rules(stay: &mut Stay, fix: &Fix, rules: &FenceRules, emit: &mut impl FnMut(EventKind, DateTime<Utc>)) {
    dwell_rule(stay, fix, rules, emit);

    if let Some(limit) = &rules.speed_limit {
        match fix.speed_kmh {
            Some(v) if v > limit.limit_kmh => {
                let o = stay.overspeed.get_or_insert(Overspeed {
                    start: fix.time,
                    max_kmh: v,
                    announced: false,
                });
                o.max_kmh = o.max_kmh.max(v);
                if !o.announced && (fix.time - o.start).num_milliseconds() >= limit.min_duration_s as i64 * 1000 {
                    o.announced = true;
                    emit(
                        EventKind::OverspeedStart {
                            limit_kmh: limit.limit_kmh,
                            max_speed_kmh: o.max_kmh,
                        },
                        o.start,
                    );
                }
            }
            Some(_) => close_overspeed(stay, rules, emit),
            // No speed reported: neither evidence of speeding nor of slowing down.
            None => {}
        }
    }

    match rules.window_violation(fix.time) {
        Some(w) => {
            if stay.violation.is_none() {
                stay.violation = Some(fix.time);
                emit(EventKind::TimeWindowViolation { window: w }, fix.time);
            }
        }
        None => stay.violation = None,
    }
}

fn dwell_rule(stay: &mut Stay, fix: &Fix, rules: &FenceRules, emit: &mut impl FnMut(EventKind, DateTime<Utc>)) {
    if let Some(d) = rules.dwell_alert_s {
        let inside_ms = (fix.time - stay.since).num_milliseconds();
        if !stay.dwell_sent && inside_ms >= d as i64 * 1000 {
            stay.dwell_sent = true;
            emit(
                EventKind::Dwell {
                    duration_s: inside_ms / 1000,
                },
                stay.since,
            );
        }
    }
}

fn close_overspeed(stay: &mut Stay, rules: &FenceRules, emit: &mut impl FnMut(EventKind, DateTime<Utc>)) {
    if let (Some(o), Some(limit)) = (stay.overspeed.take(), &rules.speed_limit)
        && o.announced
    {
        emit(
            EventKind::OverspeedEnd {
                limit_kmh: limit.limit_kmh,
                max_speed_kmh: o.max_kmh,
            },
            o.start,
        );
    }
}

/// Counters of what the engine did with its input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct EngineStats {
    pub used: u64,
    pub poor_fix: u64,
    pub out_of_order: u64,
}

/// State for many devices, and the batched entry point.
#[derive(Debug, Default)]
pub struct Engine {
    devices: HashMap<DeviceId, DeviceState>,
    groups: HashMap<DeviceId, Vec<crate::GroupId>>,
    filter: FixFilter,
    stats: EngineStats,
}

impl Engine {
    pub fn new(filter: FixFilter) -> Engine {
        Engine {
            filter,
            ..Engine::default()
        }
    }

    /// Set the groups a device belongs to (for fences assigned to groups).
    pub fn set_groups(&mut self, device: DeviceId, groups: Vec<crate::GroupId>) {
        if groups.is_empty() {
            self.groups.remove(&device);
        } else {
            self.groups.insert(device, groups);
        }
    }

    pub fn device(&self, device: DeviceId) -> Option<&DeviceState> {
        self.devices.get(&device)
    }

    /// Drop a device's state (it was deleted, or its state moved elsewhere).
    pub fn forget(&mut self, device: DeviceId) -> Option<DeviceState> {
        self.devices.remove(&device)
    }

    /// Restore a checkpointed state.
    pub fn restore(&mut self, device: DeviceId, state: DeviceState) {
        self.devices.insert(device, state);
    }

    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// Feed one fix; events are appended to `out`.
    pub fn process(&mut self, index: &FenceIndex, fix: &Fix, out: &mut Vec<Event>) -> Result<(), Skip> {
        let groups = self.groups.get(&fix.device).map(Vec::as_slice).unwrap_or(&[]);
        let state = self.devices.entry(fix.device).or_default();
        let r = state.step(index, fix, groups, &self.filter, out);
        match r {
            Ok(()) => self.stats.used += 1,
            Err(Skip::PoorFix) => self.stats.poor_fix += 1,
            Err(Skip::OutOfOrder) => self.stats.out_of_order += 1,
        }
        r
    }

    /// Evaluate a batch of fixes for many devices against one index snapshot. Fixes are
    /// taken per device in time order (stable for equal times, so duplicates are
    /// dropped as such); events come out grouped by device in time order.
    pub fn process_batch(&mut self, index: &FenceIndex, fixes: &[Fix]) -> Vec<Event> {
        let mut order: Vec<u32> = (0..fixes.len() as u32).collect();
        order.sort_by_key(|&i| (fixes[i as usize].device, fixes[i as usize].time));
        let mut out = Vec::new();
        for i in order {
            let _ = self.process(index, &fixes[i as usize], &mut out);
        }
        out
    }
}
