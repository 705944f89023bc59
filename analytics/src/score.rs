//! Driver and vehicle safety score: distance-normalised, weighted penalty points.
//!
//! ```text
//! penalty  = Σ over events  weight(kind) × multiplier(band(event))
//! rate     = penalty × 100 / max(distance_km, min_distance_km)        (points per 100 km)
//! score    = clamp(100 − points_per_rate × rate − idle_points_per_hour × idle_h, 0, 100)
//! ```
//!
//! An event's band is its severity when the operator gives one, else its magnitude placed
//! in the kind's bands (g for harsh events, km/h over the limit for overspeed). The
//! defaults and where they come from are in the crate README ("Safety score").

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// Severity band of one event.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 5] = [
        Severity::Info,
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Severity> {
        Severity::ALL
            .into_iter()
            .find(|v| v.as_str().eq_ignore_ascii_case(s.trim()))
    }
}

/// What the operator knows of one event: its severity band, or its magnitude (g, km/h
/// over the limit) for the score to band. In JSON a string or a number.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum EventSeverity {
    Band(Severity),
    Magnitude(f64),
}

/// One trip's or one day's driving, as the operators measured it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TripStats {
    pub distance_m: f64,
    pub duration_s: f64,
    pub idle_s: f64,
    /// Events by kind (`harsh_braking`, `overspeed`, …).
    pub events: BTreeMap<String, Vec<EventSeverity>>,
}

impl TripStats {
    /// Add another trip (a day's stats are the sum of its trips').
    pub fn merge(&mut self, other: &TripStats) {
        self.distance_m += other.distance_m;
        self.duration_s += other.duration_s;
        self.idle_s += other.idle_s;
        for (k, v) in &other.events {
            self.events.entry(k.clone()).or_default().extend(v.iter().copied());
        }
    }
}

/// How one kind of event counts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KindWeight {
    /// Points per event of band multiplier 1.
    pub weight: f64,
    /// Magnitudes where the low, medium, high (and optionally critical) bands start,
    /// ascending. A magnitude under the first is not counted.
    pub bands: Vec<f64>,
}

/// Multipliers of the severity bands.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BandMultipliers {
    pub info: f64,
    pub low: f64,
    pub medium: f64,
    pub high: f64,
    pub critical: f64,
}

impl Default for BandMultipliers {
    fn default() -> Self {
        BandMultipliers {
            info: 0.0,
            low: 1.0,
            medium: 2.0,
            high: 4.0,
            critical: 8.0,
        }
    }
}

impl BandMultipliers {
    fn of(&self, s: Severity) -> f64 {
        match s {
            Severity::Info => self.info,
            Severity::Low => self.low,
            Severity::Medium => self.medium,
            Severity::High => self.high,
            Severity::Critical => self.critical,
        }
    }
}

/// Score weights and bands. `Default` is the documented fleet-practice set; a tenant
/// overrides any part in `tenants.settings -> 'score'`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ScoreConfig {
    pub kinds: BTreeMap<String, KindWeight>,
    pub band_multipliers: BandMultipliers,
    /// Trips shorter than this are normalised as if this long, so one event on a 300 m
    /// trip does not sink the score.
    pub min_distance_km: f64,
    /// Score points lost per penalty point per 100 km.
    pub points_per_rate: f64,
    /// Score points lost per hour of idling (0: idling is an economy matter, not safety).
    pub idle_points_per_hour: f64,
}

impl Default for ScoreConfig {
    fn default() -> Self {
        let g_bands = vec![0.30, 0.40, 0.50, 0.70];
        let kinds = [
            ("harsh_braking", 1.0, g_bands.clone()),
            ("harsh_acceleration", 0.5, g_bands.clone()),
            ("harsh_cornering", 1.0, g_bands),
            // km/h over the limit.
            ("overspeed", 1.5, vec![0.0, 10.0, 20.0, 40.0]),
        ]
        .into_iter()
        .map(|(k, weight, bands)| (k.to_owned(), KindWeight { weight, bands }))
        .collect();
        ScoreConfig {
            kinds,
            band_multipliers: BandMultipliers::default(),
            min_distance_km: 10.0,
            points_per_rate: 2.0,
            idle_points_per_hour: 0.0,
        }
    }
}

/// The tenant's `score` object: every field optional; `kinds` entries replace the default
/// entry of the same kind and add new kinds.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScoreSettings {
    kinds: Option<BTreeMap<String, KindWeight>>,
    band_multipliers: Option<BandMultipliers>,
    min_distance_km: Option<f64>,
    points_per_rate: Option<f64>,
    idle_points_per_hour: Option<f64>,
}

impl ScoreConfig {
    /// The config for a tenant from its `tenants.settings` JSON (the `score` key; absent
    /// or null = defaults). Unknown keys and bad values are errors listing every problem.
    pub fn from_settings(settings: &serde_json::Value) -> Result<ScoreConfig, ConfigError> {
        let invalid = |why: String| ConfigError::Invalid {
            what: "tenant settings.score".to_owned(),
            why,
        };
        let mut cfg = ScoreConfig::default();
        let Some(score) = settings.get("score").filter(|v| !v.is_null()) else {
            return Ok(cfg);
        };
        let s: ScoreSettings = serde_json::from_value(score.clone()).map_err(|e| invalid(e.to_string()))?;
        if let Some(kinds) = s.kinds {
            cfg.kinds.extend(kinds);
        }
        if let Some(b) = s.band_multipliers {
            cfg.band_multipliers = b;
        }
        if let Some(v) = s.min_distance_km {
            cfg.min_distance_km = v;
        }
        if let Some(v) = s.points_per_rate {
            cfg.points_per_rate = v;
        }
        if let Some(v) = s.idle_points_per_hour {
            cfg.idle_points_per_hour = v;
        }
        cfg.validate().map_err(invalid)?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), String> {
        let mut errors = Vec::new();
        let nonneg = |v: f64| v.is_finite() && v >= 0.0;
        for (k, w) in &self.kinds {
            if !nonneg(w.weight) {
                errors.push(format!("kinds.{k}.weight must be a non-negative number"));
            }
            if w.bands.is_empty()
                || w.bands.len() > 4
                || !w.bands.iter().all(|b| nonneg(*b))
                || !w.bands.windows(2).all(|p| p[0] < p[1])
            {
                errors.push(format!("kinds.{k}.bands must be 1 to 4 ascending non-negative numbers"));
            }
        }
        let m = &self.band_multipliers;
        if ![m.info, m.low, m.medium, m.high, m.critical].into_iter().all(nonneg) {
            errors.push("band_multipliers must be non-negative numbers".to_owned());
        }
        if !(self.min_distance_km.is_finite() && self.min_distance_km > 0.0) {
            errors.push("min_distance_km must be positive".to_owned());
        }
        if !nonneg(self.points_per_rate) || !nonneg(self.idle_points_per_hour) {
            errors.push("points_per_rate and idle_points_per_hour must be non-negative".to_owned());
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    /// The band of a magnitude for `kind`; `None` under the first band (not an event) or
    /// for a kind without bands.
    pub fn band(&self, kind: &str, magnitude: f64) -> Option<Severity> {
        let w = self.kinds.get(kind)?;
        if !magnitude.is_finite() {
            return None;
        }
        let bands = [Severity::Low, Severity::Medium, Severity::High, Severity::Critical];
        w.bands
            .iter()
            .zip(bands)
            .filter(|(start, _)| magnitude.abs() >= **start)
            .map(|(_, b)| b)
            .next_back()
    }
}

/// A safety score and what made it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Score {
    /// 0 (worst) to 100 (no penalised events).
    pub score: f64,
    /// Per kind: counts by band, penalty, events per 100 km; totals; the parameters used.
    pub breakdown: serde_json::Value,
}

/// Score one trip or one day.
pub fn score(cfg: &ScoreConfig, stats: &TripStats) -> Score {
    let km = if stats.distance_m.is_finite() && stats.distance_m > 0.0 {
        stats.distance_m / 1000.0
    } else {
        0.0
    };
    let norm_km = km.max(cfg.min_distance_km);
    let mut per_kind = serde_json::Map::new();
    let mut unweighted = serde_json::Map::new();
    let mut penalty = 0.0;
    for (kind, events) in &stats.events {
        let Some(w) = cfg.kinds.get(kind) else {
            unweighted.insert(kind.clone(), events.len().into());
            continue;
        };
        let mut by_band: BTreeMap<&str, u64> = BTreeMap::new();
        let mut below = 0u64;
        let mut kp = 0.0;
        for e in events {
            let band = match *e {
                EventSeverity::Band(b) => Some(b),
                EventSeverity::Magnitude(m) => cfg.band(kind, m),
            };
            match band {
                Some(b) => {
                    *by_band.entry(b.as_str()).or_default() += 1;
                    kp += w.weight * cfg.band_multipliers.of(b);
                }
                None => below += 1,
            }
        }
        penalty += kp;
        let counted: u64 = by_band.values().sum();
        per_kind.insert(
            kind.clone(),
            serde_json::json!({
                "count": counted,
                "below_bands": below,
                "by_band": by_band,
                "weight": w.weight,
                "penalty": round3(kp),
                "per_100km": round3(counted as f64 * 100.0 / norm_km),
            }),
        );
    }
    let rate = penalty * 100.0 / norm_km;
    let idle_h = if stats.idle_s.is_finite() {
        stats.idle_s.max(0.0) / 3600.0
    } else {
        0.0
    };
    let idle_points = cfg.idle_points_per_hour * idle_h;
    let raw = 100.0 - cfg.points_per_rate * rate - idle_points;
    let score = if raw.is_finite() { raw.clamp(0.0, 100.0) } else { 0.0 };
    Score {
        score: round3(score),
        breakdown: serde_json::json!({
            "distance_km": round3(km),
            "normalised_km": round3(norm_km),
            "duration_s": stats.duration_s,
            "idle_s": stats.idle_s,
            "kinds": per_kind,
            "unweighted_kinds": unweighted,
            "penalty": round3(penalty),
            "penalty_per_100km": round3(rate),
            "points_per_rate": cfg.points_per_rate,
            "idle_points": round3(idle_points),
        }),
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(km: f64, events: &[(&str, EventSeverity)]) -> TripStats {
        let mut s = TripStats {
            distance_m: km * 1000.0,
            duration_s: 3600.0,
            ..TripStats::default()
        };
        for (k, e) in events {
            s.events.entry((*k).to_owned()).or_default().push(*e);
        }
        s
    }

    #[test]
    fn readme_worked_example() {
        // 50 km; two harsh brakes of 0.45 g (medium), one at 0.25 g (under the bands),
        // one overspeed 23 km/h over (high), one harsh acceleration flagged low.
        let s = stats(
            50.0,
            &[
                ("harsh_braking", EventSeverity::Magnitude(0.45)),
                ("harsh_braking", EventSeverity::Magnitude(0.45)),
                ("harsh_braking", EventSeverity::Magnitude(0.25)),
                ("overspeed", EventSeverity::Magnitude(23.0)),
                ("harsh_acceleration", EventSeverity::Band(Severity::Low)),
            ],
        );
        let r = score(&ScoreConfig::default(), &s);
        // penalty = 2×1.0×2 + 1.5×4 + 0.5×1 = 10.5; rate = 21 per 100 km; 100 − 2×21 = 58.
        assert_eq!(r.breakdown["penalty"], 10.5);
        assert_eq!(r.breakdown["penalty_per_100km"], 21.0);
        assert_eq!(r.score, 58.0);
        assert_eq!(r.breakdown["kinds"]["harsh_braking"]["below_bands"], 1);
    }

    #[test]
    fn clean_short_and_terrible() {
        let cfg = ScoreConfig::default();
        assert_eq!(score(&cfg, &stats(12.0, &[])).score, 100.0);
        // One low harsh brake on a 1 km trip is normalised over 10 km: 100 − 2×10 = 80.
        let one = stats(1.0, &[("harsh_braking", EventSeverity::Magnitude(0.33))]);
        assert_eq!(score(&cfg, &one).score, 80.0);
        let many: Vec<_> = (0..100)
            .map(|_| ("overspeed", EventSeverity::Band(Severity::Critical)))
            .collect();
        assert_eq!(score(&cfg, &stats(10.0, &many)).score, 0.0);
        // Garbage distance does not give NaN.
        let mut bad = stats(10.0, &[("harsh_braking", EventSeverity::Magnitude(f64::NAN))]);
        bad.distance_m = f64::NAN;
        bad.idle_s = f64::INFINITY;
        let r = score(&cfg, &bad);
        assert!((0.0..=100.0).contains(&r.score));
    }

    #[test]
    fn tenant_settings_override_and_reject() {
        let cfg = ScoreConfig::from_settings(&serde_json::json!({
            "score": {"points_per_rate": 1.0, "kinds": {"harsh_braking": {"weight": 2.0, "bands": [0.35, 0.45, 0.6]},
                      "seatbelt": {"weight": 3.0, "bands": [0.0]}}}
        }))
        .unwrap();
        assert_eq!(cfg.points_per_rate, 1.0);
        assert_eq!(cfg.kinds["harsh_braking"].weight, 2.0);
        assert!(
            cfg.kinds.contains_key("overspeed"),
            "defaults kept for kinds not overridden"
        );
        assert_eq!(cfg.band("harsh_braking", 0.5), Some(Severity::Medium));
        assert_eq!(cfg.band("harsh_braking", 0.3), None);
        assert_eq!(
            ScoreConfig::from_settings(&serde_json::json!({})).unwrap(),
            ScoreConfig::default()
        );
        assert_eq!(
            ScoreConfig::from_settings(&serde_json::json!({"score": null})).unwrap(),
            ScoreConfig::default()
        );
        for bad in [
            serde_json::json!({"score": {"points_per_rate": -1}}),
            serde_json::json!({"score": {"bogus": 1}}),
            serde_json::json!({"score": {"kinds": {"x": {"weight": 1, "bands": [0.5, 0.4]}}}}),
            serde_json::json!({"score": {"min_distance_km": 0}}),
            serde_json::json!({"score": "high"}),
        ] {
            let e = ScoreConfig::from_settings(&bad).unwrap_err();
            assert!(e.to_string().contains("settings.score"), "{e}");
        }
    }

    #[test]
    fn day_is_sum_of_trips_and_json_shape() {
        let a = stats(30.0, &[("harsh_braking", EventSeverity::Magnitude(0.5))]);
        let b = stats(70.0, &[("overspeed", EventSeverity::Magnitude(5.0))]);
        let mut day = TripStats::default();
        day.merge(&a);
        day.merge(&b);
        assert_eq!(day.distance_m, 100_000.0);
        // 1×4 + 1.5×1 = 5.5 per 100 km → 89.
        assert_eq!(score(&ScoreConfig::default(), &day).score, 89.0);
        let json: TripStats = serde_json::from_value(
            serde_json::json!({"distance_m": 1000.0, "duration_s": 60.0, "idle_s": 0.0,
                "events": {"harsh_braking": ["high", 0.42]}}),
        )
        .unwrap();
        assert_eq!(
            json.events["harsh_braking"],
            vec![EventSeverity::Band(Severity::High), EventSeverity::Magnitude(0.42)]
        );
    }
}
