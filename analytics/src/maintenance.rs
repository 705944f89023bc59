//! Maintenance: diagnostic trouble codes raised and cleared, service due from a plan, low
//! vehicle battery.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::{ConfigError, Detection, Sample, finite_in};

mod dtc_table;

pub use dtc_table::{dtc_description, dtc_system};

// ---------------------------------------------------------------------------------------
// DTCs
// ---------------------------------------------------------------------------------------

/// DTC debounce: a code must be absent from `clear_samples` consecutive DTC lists, or for
/// `clear_after_s` seconds, before it counts as cleared (ECUs drop a code from one
/// response and report it again in the next).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DtcConfig {
    pub clear_samples: u32,
    pub clear_after_s: f64,
}

impl Default for DtcConfig {
    fn default() -> Self {
        DtcConfig {
            clear_samples: 3,
            clear_after_s: 300.0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct ActiveCode {
    raised: DateTime<Utc>,
    /// First sample of the current absence, and how many lists lacked it since.
    absent_since: Option<DateTime<Utc>>,
    absent: u32,
}

/// `dtc_raised` / `dtc_cleared` from successive DTC lists.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DtcDetector {
    cfg: DtcConfig,
    active: BTreeMap<String, ActiveCode>,
    last: Option<DateTime<Utc>>,
    pub dropped: u64,
    /// Codes that are not of the form P/C/B/U + 4 hex digits, ignored.
    pub invalid_codes: u64,
}

impl DtcDetector {
    pub fn new(cfg: DtcConfig) -> DtcDetector {
        DtcDetector {
            cfg,
            active: BTreeMap::new(),
            last: None,
            dropped: 0,
            invalid_codes: 0,
        }
    }

    /// Codes currently active, with when they were raised.
    pub fn active(&self) -> impl Iterator<Item = (&str, DateTime<Utc>)> {
        self.active.iter().map(|(c, a)| (c.as_str(), a.raised))
    }

    pub fn push(&mut self, s: &Sample, out: &mut Vec<Detection>) {
        if self.last.is_some_and(|t| s.time <= t) {
            self.dropped += 1;
            return;
        }
        self.last = Some(s.time);
        // No list in this sample says nothing about the codes.
        let Some(list) = &s.dtcs else { return };
        let mut now: Vec<String> = Vec::new();
        for raw in list.iter().take(256) {
            match normalize_dtc(raw) {
                Some(c) if !now.contains(&c) => now.push(c),
                Some(_) => {}
                None => self.invalid_codes += 1,
            }
        }
        for code in &now {
            match self.active.get_mut(code) {
                Some(a) => {
                    a.absent = 0;
                    a.absent_since = None;
                }
                None => {
                    self.active.insert(
                        code.clone(),
                        ActiveCode {
                            raised: s.time,
                            absent_since: None,
                            absent: 0,
                        },
                    );
                    let mut d = Detection::new("dtc_raised", s.time).at(s).severity(dtc_severity(code));
                    d.attributes = serde_json::json!({
                        "code": code,
                        "description": dtc_description(code),
                        "system": dtc_system(code),
                    });
                    out.push(d);
                }
            }
        }
        let mut cleared = Vec::new();
        for (code, a) in self.active.iter_mut() {
            if now.contains(code) {
                continue;
            }
            let since = *a.absent_since.get_or_insert(s.time);
            a.absent += 1;
            let secs = (s.time - since).num_milliseconds() as f64 / 1000.0;
            if a.absent >= self.cfg.clear_samples || secs >= self.cfg.clear_after_s {
                cleared.push((code.clone(), since, a.raised));
            }
        }
        for (code, since, raised) in cleared {
            self.active.remove(&code);
            // The time is the first list without the code: the same on every replay.
            let mut d = Detection::new("dtc_cleared", since).at(s).severity("info");
            d.attributes = serde_json::json!({
                "code": code,
                "description": dtc_description(&code),
                "raised_at": raised,
                "active_s": (since - raised).num_seconds(),
            });
            out.push(d);
        }
    }

    /// DTCs have no timers: a silent device's codes stay active until a list says otherwise.
    pub fn tick(&mut self, _now: DateTime<Utc>, _out: &mut Vec<Detection>) {}
}

/// `"p0301 "` → `"P0301"`; `None` unless a letter P/C/B/U and four hex digits (a trailing
/// failure-type byte, `P0301-00` or `P030100`, is dropped).
pub fn normalize_dtc(raw: &str) -> Option<String> {
    let t = raw.trim().to_ascii_uppercase();
    let b = t.as_bytes();
    if b.len() < 5 || !matches!(b[0], b'P' | b'C' | b'B' | b'U') || !b[1..5].iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let rest = &t[5..];
    let rest_ok = rest.is_empty()
        || (rest.len() == 2 && rest.bytes().all(|c| c.is_ascii_hexdigit()))
        || (rest.len() == 3 && rest.starts_with('-') && rest[1..].bytes().all(|c| c.is_ascii_hexdigit()));
    rest_ok.then(|| t[..5].to_owned())
}

fn dtc_severity(code: &str) -> &'static str {
    // Misfires damage the catalyst and can mean a flashing MIL; network losses disable
    // whole controllers: those are worth a look today.
    if code.starts_with("P030") || code.starts_with("P031") || code.starts_with("U0") {
        "high"
    } else {
        "medium"
    }
}

// ---------------------------------------------------------------------------------------
// Service due
// ---------------------------------------------------------------------------------------

/// A row of `service_plans`: due when any interval since the last service runs out.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServicePlan {
    pub id: i64,
    pub name: String,
    pub every_km: Option<f64>,
    pub every_engine_hours: Option<f64>,
    pub every_days: Option<i32>,
    pub last_done_at: Option<DateTime<Utc>>,
    pub last_done_km: Option<f64>,
    pub last_done_engine_h: Option<f64>,
    /// When the plan was created: the calendar cycle starts there when no service is
    /// recorded (a stable base, so a restart computes the same due instant).
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
}

impl ServicePlan {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |v: Option<f64>| v.is_some_and(|x| !(x.is_finite() && x > 0.0));
        let why = if self.every_km.is_none() && self.every_engine_hours.is_none() && self.every_days.is_none() {
            Some("needs every_km, every_engine_hours or every_days")
        } else if bad(self.every_km) || bad(self.every_engine_hours) || self.every_days.is_some_and(|d| d <= 0) {
            Some("intervals must be positive")
        } else if self.last_done_km.is_some_and(|x| !x.is_finite() || x < 0.0)
            || self.last_done_engine_h.is_some_and(|x| !x.is_finite() || x < 0.0)
        {
            Some("last_done_km and last_done_engine_h must be non-negative")
        } else {
            None
        };
        match why {
            Some(w) => Err(ConfigError::Invalid {
                what: format!("service plan {} ({:?})", self.id, self.name),
                why: w.to_owned(),
            }),
            None => Ok(()),
        }
    }

    /// What identifies one service cycle: a recorded service (or new intervals) starts a
    /// new one. The name is not part of it: renaming a plan re-emits nothing.
    fn cycle(&self) -> String {
        format!(
            "{}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
            self.id,
            self.last_done_at,
            self.last_done_km,
            self.last_done_engine_h,
            self.every_km,
            self.every_engine_hours,
            self.every_days
        )
    }
}

/// Warn `warn_fraction` of an interval before it first runs out (10 %: 1 500 km before a
/// 15 000 km oil change, 36 days before a yearly inspection).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceConfig {
    pub warn_fraction: f64,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig { warn_fraction: 0.1 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct PlanState {
    plan: ServicePlan,
    cycle: String,
    /// Where the cycle started when the plan does not say (first odometer / hours seen).
    base_km: Option<f64>,
    base_h: Option<f64>,
    base_at: Option<DateTime<Utc>>,
    /// Highest occurrence a `service_due` was emitted for (1 = due, 2+ = overdue).
    due: u64,
    /// Whether the `service_due_soon` warning of this cycle was emitted.
    warned: bool,
}

/// One trigger's progress: (trigger, intervals used, interval, value now, base, calendar base).
type Progress = (&'static str, f64, f64, f64, f64, Option<DateTime<Utc>>);

/// `service_due` from per-vehicle plans, once per plan and occurrence: the plan is due
/// when the first of its intervals runs out (occurrence 1), and reminded as overdue each
/// further interval an unserviced vehicle uses up (occurrence n = the most intervals any
/// trigger has used). Before the first occurrence, `warn_fraction` of an interval ahead,
/// one `service_due_soon` (a separate kind, so that "due" means due).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServiceDueDetector {
    cfg: ServiceConfig,
    plans: Vec<PlanState>,
    last: Option<DateTime<Utc>>,
    odometer_km: Option<f64>,
    engine_h: Option<f64>,
    pub dropped: u64,
}

impl ServiceDueDetector {
    pub fn new(cfg: ServiceConfig, plans: Vec<ServicePlan>) -> Result<ServiceDueDetector, ConfigError> {
        if !(cfg.warn_fraction.is_finite() && (0.0..1.0).contains(&cfg.warn_fraction)) {
            return Err(ConfigError::Invalid {
                what: "service config".to_owned(),
                why: format!("warn_fraction must be in [0, 1), got {}", cfg.warn_fraction),
            });
        }
        let mut d = ServiceDueDetector {
            cfg,
            plans: Vec::new(),
            last: None,
            odometer_km: None,
            engine_h: None,
            dropped: 0,
        };
        d.set_plans(plans)?;
        Ok(d)
    }

    /// The plans in force.
    pub fn plans(&self) -> impl Iterator<Item = &ServicePlan> {
        self.plans.iter().map(|s| &s.plan)
    }

    /// Replace the plans (reloaded from the store); a plan whose last service or intervals
    /// did not change keeps what it already emitted. All or nothing: one invalid plan
    /// refuses the set (see [`ServicePlan::validate`] to filter first).
    pub fn set_plans(&mut self, plans: Vec<ServicePlan>) -> Result<(), ConfigError> {
        for p in &plans {
            p.validate()?;
        }
        let mut old: BTreeMap<String, PlanState> = self.plans.drain(..).map(|s| (s.cycle.clone(), s)).collect();
        self.plans = plans
            .into_iter()
            .map(|plan| {
                let cycle = plan.cycle();
                match old.remove(&cycle) {
                    Some(mut s) => {
                        s.plan = plan;
                        s
                    }
                    None => PlanState {
                        cycle,
                        base_km: plan.last_done_km,
                        base_h: plan.last_done_engine_h,
                        base_at: plan.last_done_at.or(plan.created_at),
                        plan,
                        due: 0,
                        warned: false,
                    },
                }
            })
            .collect();
        Ok(())
    }

    pub fn push(&mut self, s: &Sample, out: &mut Vec<Detection>) {
        if self.last.is_some_and(|t| s.time <= t) {
            self.dropped += 1;
            return;
        }
        self.last = Some(s.time);
        // Odometer and hours only move forward; a lower or absurd reading is ignored.
        if let Some(km) = finite_in(s.odometer_m, 0.0, 1e11).map(|m| m / 1000.0)
            && self.odometer_km.is_none_or(|o| km >= o)
        {
            self.odometer_km = Some(km);
        }
        if let Some(h) = finite_in(s.engine_hours, 0.0, 1e7)
            && self.engine_h.is_none_or(|o| h >= o)
        {
            self.engine_h = Some(h);
        }
        self.evaluate(s.time, Some(s), out);
    }

    /// Calendar intervals run out without samples: a parked vehicle's plan comes due on
    /// the timer. (Needs one sample first: `now` must not be before the device's data.)
    pub fn tick(&mut self, now: DateTime<Utc>, out: &mut Vec<Detection>) {
        if self.last.is_some_and(|t| now > t) {
            self.evaluate(now, None, out);
        }
    }

    fn evaluate(&mut self, now: DateTime<Utc>, s: Option<&Sample>, out: &mut Vec<Detection>) {
        let warn = self.cfg.warn_fraction;
        let (km, h) = (self.odometer_km, self.engine_h);
        for st in &mut self.plans {
            let mut progress: Vec<Progress> = Vec::new();
            if let (Some(every), Some(km)) = (st.plan.every_km, km) {
                let base = *st.base_km.get_or_insert(km);
                progress.push(("km", (km - base) / every, every, km, base, None));
            }
            if let (Some(every), Some(h)) = (st.plan.every_engine_hours, h) {
                let base = *st.base_h.get_or_insert(h);
                progress.push(("engine_hours", (h - base) / every, every, h, base, None));
            }
            if let Some(days) = st.plan.every_days {
                let base = *st.base_at.get_or_insert(now);
                let every = f64::from(days) * 86_400.0;
                let p = (now - base).num_seconds() as f64 / every;
                progress.push(("days", p, f64::from(days), p * f64::from(days), 0.0, Some(base)));
            }
            let Some(top) = progress.iter().map(|p| p.1).max_by(f64::total_cmp) else {
                continue;
            };
            let n = top.floor().max(0.0) as u64;
            let (kind, stage, at) = if n >= 1 && n > st.due {
                st.due = n;
                st.warned = true;
                ("service_due", if n == 1 { "due" } else { "overdue" }, n as f64)
            } else if n == 0 && !st.warned && warn > 0.0 && top >= 1.0 - warn {
                st.warned = true;
                ("service_due_soon", "warning", 1.0 - warn)
            } else {
                continue;
            };
            // The triggers that reached the threshold, and the event's time: the sample's,
            // or for a calendar trigger the crossing instant itself (not when a tick
            // noticed it), so replays and restarts give the same time.
            let mut time = now;
            let mut triggers = Vec::new();
            for &(trigger, p, every, value, base, cal_base) in &progress {
                if p < at {
                    continue;
                }
                if let Some(b) = cal_base {
                    let secs = (at * every * 86_400.0).round() as i64;
                    time = time.min(b + Duration::seconds(secs)).max(b);
                }
                triggers.push(serde_json::json!({
                    "trigger": trigger,
                    "interval": every,
                    "value": (value * 10.0).round() / 10.0,
                    "since_service": ((value - base) * 10.0).round() / 10.0,
                    "due_at": match cal_base {
                        Some(b) => serde_json::json!(b + Duration::seconds((n.max(1) as f64 * every * 86_400.0).round() as i64)),
                        None => serde_json::json!(base + n.max(1) as f64 * every),
                    },
                }));
            }
            let severity = match stage {
                "overdue" => "high",
                "due" => "medium",
                _ => "low",
            };
            let mut d = Detection::new(kind, time).severity(severity);
            if let Some(s) = s {
                d = d.at(s);
            }
            d.attributes = serde_json::json!({
                "plan_id": st.plan.id,
                "plan": st.plan.name,
                "stage": stage,
                "occurrence": n.max(1),
                // Which service cycle this is (the plan's last service and intervals):
                // the store keeps one event per vehicle, plan, cycle and occurrence, so
                // a vehicle with two trackers is told once.
                "cycle": st.cycle,
                "triggers": triggers,
            });
            out.push(d);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Battery
// ---------------------------------------------------------------------------------------

/// Low vehicle battery thresholds, per 12 V of nominal voltage (doubled for 24 V trucks).
///
/// Engine off, a healthy lead-acid battery rests at 12.6–12.7 V; 12.0 V is about half
/// charge and below ~11.9 V starting gets doubtful. Engine on, the alternator holds
/// 13.5–14.5 V; under ~12.8 V it is not charging and the battery is being drained.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BatteryConfig {
    /// 12 or 24; `None` detects it from the readings (anything above 18 V is a 24 V system).
    pub system_v: Option<f64>,
    pub low_off_v: f64,
    pub clear_off_v: f64,
    pub low_on_v: f64,
    pub clear_on_v: f64,
    /// Below this the engine-off reading is critical.
    pub critical_off_v: f64,
    /// A low reading must last this long and this many samples (cranking dips are brief).
    pub min_duration_s: f64,
    pub min_samples: u32,
    /// Readings this soon after the ignition came on are ignored (cranking, alternator
    /// not yet regulating).
    pub settle_s: f64,
    /// Under this (per 12 V) the tracker is on its own battery or the lead is cut: not a
    /// battery reading at all.
    pub disconnected_v: f64,
}

impl Default for BatteryConfig {
    fn default() -> Self {
        BatteryConfig {
            system_v: None,
            low_off_v: 11.9,
            clear_off_v: 12.3,
            low_on_v: 12.8,
            clear_on_v: 13.2,
            critical_off_v: 11.5,
            min_duration_s: 120.0,
            min_samples: 3,
            settle_s: 60.0,
            disconnected_v: 6.0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct LowEpisode {
    engine_on: bool,
    since: DateTime<Utc>,
    samples: u32,
    min_v: f64,
    emitted: bool,
}

/// `low_battery` with hysteresis, engine off (discharged) and engine on (not charging)
/// told apart.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BatteryDetector {
    cfg: BatteryConfig,
    system_v: Option<f64>,
    last: Option<DateTime<Utc>>,
    ignition_on_since: Option<DateTime<Utc>>,
    episode: Option<LowEpisode>,
    pub dropped: u64,
}

impl BatteryDetector {
    pub fn new(cfg: BatteryConfig) -> Result<BatteryDetector, ConfigError> {
        let ok = cfg.system_v.is_none_or(|v| v == 12.0 || v == 24.0)
            && cfg.low_off_v < cfg.clear_off_v
            && cfg.low_on_v < cfg.clear_on_v
            && cfg.critical_off_v <= cfg.low_off_v
            && cfg.disconnected_v < cfg.critical_off_v
            && cfg.min_duration_s.is_finite()
            && cfg.settle_s.is_finite();
        if !ok {
            return Err(ConfigError::Invalid {
                what: "battery config".to_owned(),
                why: "system_v must be 12 or 24, and disconnected < critical <= low < clear".to_owned(),
            });
        }
        Ok(BatteryDetector {
            system_v: cfg.system_v,
            cfg,
            last: None,
            ignition_on_since: None,
            episode: None,
            dropped: 0,
        })
    }

    pub fn push(&mut self, s: &Sample, out: &mut Vec<Detection>) {
        if self.last.is_some_and(|t| s.time <= t) {
            self.dropped += 1;
            return;
        }
        self.last = Some(s.time);
        match s.ignition {
            Some(true) => {
                self.ignition_on_since.get_or_insert(s.time);
            }
            Some(false) => self.ignition_on_since = None,
            None => {}
        }
        let Some(v) = finite_in(s.power_v, 0.0, 40.0) else {
            return;
        };
        let system = *self.system_v.get_or_insert(if v > 18.0 { 24.0 } else { 12.0 });
        if system == 12.0 && v > 18.0 && self.cfg.system_v.is_none() {
            // The first readings were low; this is a 24 V vehicle after all.
            self.system_v = Some(24.0);
            self.episode = None;
            return;
        }
        let k = self.system_v.unwrap_or(system) / 12.0;
        if v < self.cfg.disconnected_v * k {
            return;
        }
        let engine_on = match s.ignition {
            Some(on) => on,
            // No ignition line: a charging voltage means the engine runs.
            None => v >= self.cfg.clear_on_v * k,
        };
        if engine_on
            && let Some(since) = self.ignition_on_since
            && ((s.time - since).num_milliseconds() as f64 / 1000.0) < self.cfg.settle_s
        {
            return;
        }
        let (low, clear) = if engine_on {
            (self.cfg.low_on_v * k, self.cfg.clear_on_v * k)
        } else {
            (self.cfg.low_off_v * k, self.cfg.clear_off_v * k)
        };
        match &mut self.episode {
            Some(e) if e.engine_on != engine_on => {
                // The engine started or stopped: the other threshold applies from scratch.
                self.episode = None;
                if v < low {
                    self.open(s, v, engine_on);
                }
            }
            Some(e) => {
                if v >= clear {
                    self.episode = None;
                } else if v < low || e.emitted {
                    e.samples += 1;
                    e.min_v = e.min_v.min(v);
                    let dur = (s.time - e.since).num_milliseconds() as f64 / 1000.0;
                    if !e.emitted && e.samples >= self.cfg.min_samples && dur >= self.cfg.min_duration_s {
                        e.emitted = true;
                        let critical = !engine_on && e.min_v < self.cfg.critical_off_v * k;
                        let mut d = Detection::new("low_battery", e.since)
                            .at(s)
                            .severity(if engine_on || critical { "high" } else { "medium" });
                        d.magnitude = Some(e.min_v);
                        d.attributes = serde_json::json!({
                            "voltage": e.min_v,
                            "system_v": self.system_v,
                            "engine": if engine_on { "on" } else { "off" },
                            "reason": if engine_on { "not_charging" } else { "discharged" },
                            "threshold_v": (low * 100.0).round() / 100.0,
                        });
                        out.push(d);
                    }
                }
                // Between low and clear before confirmation: hysteresis band, wait.
            }
            None if v < low => self.open(s, v, engine_on),
            None => {}
        }
    }

    fn open(&mut self, s: &Sample, v: f64, engine_on: bool) {
        self.episode = Some(LowEpisode {
            engine_on,
            since: s.time,
            samples: 1,
            min_v: v,
            emitted: false,
        });
    }

    pub fn tick(&mut self, _now: DateTime<Utc>, _out: &mut Vec<Detection>) {}
}
