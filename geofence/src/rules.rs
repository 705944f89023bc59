//! Per-fence configuration: how enter/exit are confirmed, and the rules checked inside.
//!
//! Everything has a default that reproduces the classic behaviour (enter/exit on the
//! first fix across the line) plus a small hysteresis, so a fence drawn with no rules
//! still works and is less jumpy than the consecutive-fix servers users complain about.

use chrono::{DateTime, Datelike, NaiveTime, TimeDelta, Timelike, Utc, Weekday};
use serde::{Deserialize, Serialize};

use crate::error::FenceError;
use crate::{DeviceId, GroupId};

/// Limits that keep a rule meaningful; outside them the input is a typo, not a wish.
pub const MAX_HYSTERESIS_M: f64 = 5_000.0;
pub const MAX_SPEED_LIMIT_KMH: f64 = 500.0;
pub const MAX_UTC_OFFSET_MIN: i32 = 14 * 60;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FenceRules {
    /// Seconds the device must have been inside before `Enter` fires (0: on the first
    /// inside fix). Counted from the first fix of the current inside run.
    pub enter_dwell_s: u32,
    /// Consecutive inside fixes needed before `Enter` (at least 1). Both this and
    /// `enter_dwell_s` must hold; leave one at its minimum to use only the other.
    pub enter_min_fixes: u32,
    /// Seconds the device must have been clearly outside before `Exit` fires.
    pub exit_dwell_s: u32,
    /// Consecutive clearly-outside fixes needed before `Exit` (at least 1).
    pub exit_min_fixes: u32,
    /// Once inside, a fix counts as outside only when it is more than this many metres
    /// beyond the boundary. Fixes in between neither count towards nor reset an exit.
    pub hysteresis_m: f64,
    /// Emit one `Dwell` event per stay once the device has been inside this long.
    pub dwell_alert_s: Option<u32>,
    pub speed_limit: Option<SpeedLimit>,
    pub time_windows: Vec<TimeWindow>,
    pub applies_to: Scope,
}

impl Default for FenceRules {
    fn default() -> Self {
        FenceRules {
            enter_dwell_s: 0,
            enter_min_fixes: 1,
            exit_dwell_s: 0,
            exit_min_fixes: 1,
            hysteresis_m: 20.0,
            dwell_alert_s: None,
            speed_limit: None,
            time_windows: Vec::new(),
            applies_to: Scope::default(),
        }
    }
}

/// Overspeed inside the zone: speed above `limit_kmh` for at least `min_duration_s`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpeedLimit {
    pub limit_kmh: f64,
    #[serde(default)]
    pub min_duration_s: u32,
}

/// Whether being inside during the window is the violation (a curfew) or being inside
/// outside every allowed window is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowMode {
    #[default]
    Forbidden,
    Allowed,
}

/// A weekly local-time window. `end <= start` wraps past midnight; the day in `days` is
/// the day the window starts. An empty `days` means every day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeWindow {
    #[serde(default)]
    pub mode: WindowMode,
    #[serde(default)]
    pub days: Vec<Weekday>,
    /// Local start time, `"22:00:00"`.
    pub start: NaiveTime,
    /// Local end time (exclusive).
    pub end: NaiveTime,
    /// Fixed offset of local time from UTC, minutes (e.g. 120 for CEST). A fixed offset
    /// keeps the crate free of a time-zone database; the caller re-issues the fence
    /// when daylight saving changes, or uses one window per season.
    #[serde(default)]
    pub utc_offset_min: i32,
}

impl TimeWindow {
    fn day_ok(&self, d: Weekday) -> bool {
        self.days.is_empty() || self.days.contains(&d)
    }

    /// Whether `t` falls inside this window.
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        let local = t.naive_utc() + TimeDelta::minutes(self.utc_offset_min as i64);
        let tod = NaiveTime::from_num_seconds_from_midnight_opt(local.num_seconds_from_midnight(), 0)
            .unwrap_or(NaiveTime::MIN);
        let today = local.weekday();
        if self.start < self.end {
            self.day_ok(today) && tod >= self.start && tod < self.end
        } else {
            (self.day_ok(today) && tod >= self.start) || (self.day_ok(today.pred()) && tod < self.end)
        }
    }
}

/// Which devices a fence applies to. Empty lists mean every device.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Scope {
    pub devices: Vec<DeviceId>,
    pub groups: Vec<GroupId>,
}

impl Scope {
    pub fn is_everyone(&self) -> bool {
        self.devices.is_empty() && self.groups.is_empty()
    }

    /// `groups` of the device, in any order. Expects `self` normalised (sorted), which
    /// [`FenceRules::validate`] does.
    #[inline]
    pub fn applies(&self, device: DeviceId, groups: &[GroupId]) -> bool {
        self.is_everyone()
            || self.devices.binary_search(&device).is_ok()
            || groups.iter().any(|g| self.groups.binary_search(g).is_ok())
    }
}

impl FenceRules {
    /// Check ranges and normalise (sort the scope lists). Called by `Fence::new`.
    pub fn validate(mut self) -> Result<FenceRules, FenceError> {
        let bad = |m: String| Err(FenceError::Rule(m));
        if self.enter_min_fixes == 0 || self.exit_min_fixes == 0 {
            return bad("enter_min_fixes and exit_min_fixes must be at least 1".into());
        }
        if !(0.0..=MAX_HYSTERESIS_M).contains(&self.hysteresis_m) {
            return Err(FenceError::OutOfRange {
                what: "hysteresis",
                value: self.hysteresis_m,
                min: 0.0,
                max: MAX_HYSTERESIS_M,
            });
        }
        if let Some(s) = &self.speed_limit
            && !(s.limit_kmh > 0.0 && s.limit_kmh <= MAX_SPEED_LIMIT_KMH)
        {
            return bad(format!(
                "speed limit {} km/h is outside 0..{MAX_SPEED_LIMIT_KMH}",
                s.limit_kmh
            ));
        }
        for (i, w) in self.time_windows.iter().enumerate() {
            if w.start == w.end {
                return bad(format!("time window {i}: start equals end"));
            }
            if w.utc_offset_min.abs() > MAX_UTC_OFFSET_MIN {
                return bad(format!(
                    "time window {i}: utc_offset_min {} is beyond ±{MAX_UTC_OFFSET_MIN}",
                    w.utc_offset_min
                ));
            }
        }
        self.applies_to.devices.sort_unstable();
        self.applies_to.devices.dedup();
        self.applies_to.groups.sort_unstable();
        self.applies_to.groups.dedup();
        Ok(self)
    }

    /// Index of the first window that makes being inside at `t` a violation, if any.
    /// For allowed-only windows the index is that of the first allowed window.
    pub fn window_violation(&self, t: DateTime<Utc>) -> Option<usize> {
        let mut first_allowed = None;
        let mut in_allowed = false;
        for (i, w) in self.time_windows.iter().enumerate() {
            match w.mode {
                WindowMode::Forbidden if w.contains(t) => return Some(i),
                WindowMode::Forbidden => {}
                WindowMode::Allowed => {
                    first_allowed.get_or_insert(i);
                    in_allowed |= w.contains(t);
                }
            }
        }
        if in_allowed { None } else { first_allowed }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(h: u32, m: u32) -> DateTime<Utc> {
        // 2024-01-01 is a Monday.
        Utc.with_ymd_and_hms(2024, 1, 1, h, m, 0).unwrap()
    }

    fn hm(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap()
    }

    #[test]
    fn curfew_wraps_midnight_with_offset() {
        let w = TimeWindow {
            mode: WindowMode::Forbidden,
            days: vec![Weekday::Sun],
            start: hm(22, 0),
            end: hm(6, 0),
            utc_offset_min: 60,
        };
        // Monday 04:00 local (03:00 UTC) is inside Sunday's curfew.
        assert!(w.contains(t(3, 0)));
        // Monday 06:30 local is not.
        assert!(!w.contains(t(5, 30)));
        // Monday 23:00 local is Monday's window, and Monday is not listed.
        assert!(!w.contains(t(22, 0)));
    }

    #[test]
    fn allowed_windows() {
        let rules = FenceRules {
            time_windows: vec![TimeWindow {
                mode: WindowMode::Allowed,
                days: vec![],
                start: hm(8, 0),
                end: hm(18, 0),
                utc_offset_min: 0,
            }],
            ..FenceRules::default()
        };
        assert_eq!(rules.window_violation(t(9, 0)), None);
        assert_eq!(rules.window_violation(t(19, 0)), Some(0));
    }

    #[test]
    fn validation() {
        let r = FenceRules {
            enter_min_fixes: 0,
            ..FenceRules::default()
        };
        assert!(r.validate().is_err());
        let r = FenceRules {
            hysteresis_m: -1.0,
            ..FenceRules::default()
        };
        assert!(matches!(r.validate(), Err(FenceError::OutOfRange { .. })));
        let r: FenceRules = serde_json::from_str(r#"{"hysteresis_m": 30, "speed_limit": {"limit_kmh": 50}}"#).unwrap();
        assert_eq!(r.speed_limit.as_ref().unwrap().min_duration_s, 0);
        assert!(serde_json::from_str::<FenceRules>(r#"{"hysterisis_m": 30}"#).is_err());
    }
}
