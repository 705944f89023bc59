//! Accuracy: detected events in the store matched against a firmware-sim ground-truth
//! file (JSON lines: `device` (the identifier, e.g. IMEI), `kind`, `start`, `end`,
//! `magnitude`, extra fields), precision and recall per kind.
//!
//! Matching, per device and kind (and geofence name for geofence kinds): each truth line
//! is paired with at most one detected event, the nearest in time within the tolerance
//! (default 10 s), greedily in time order. The time compared is the event's `time`
//! against the truth's `start`, except `trip_end`, whose truth `start` is the trip's
//! start: there the truth's `end` (ignition off) is compared.
//!
//! Scored kinds are those the truth file contains, minus what the server cannot see as
//! an event (`offline` periods, `malformed_frame`s). An overspeed truth line whose
//! magnitude (peak km/h) is not above its `limit_kmh` is skipped: the simulator records
//! it when the injected speeding never happened (the car was parked). Detected events of
//! kinds not in the truth are not scored; detected events outside the truth's time span
//! (± tolerance) are not counted.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

/// One ground-truth line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TruthLine {
    pub device: String,
    pub kind: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    #[serde(default)]
    pub magnitude: f64,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// One detected event, keyed like the truth (device identifier, fence name).
#[derive(Debug, Clone, PartialEq)]
pub struct Detected {
    pub device: String,
    pub kind: String,
    pub time: DateTime<Utc>,
    pub geofence: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KindScore {
    pub kind: String,
    pub truth: usize,
    pub detected: usize,
    pub matched: usize,
    pub precision: f64,
    pub recall: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScoreReport {
    pub tolerance_s: f64,
    pub devices: usize,
    pub kinds: Vec<KindScore>,
}

impl ScoreReport {
    pub fn kind(&self, k: &str) -> Option<&KindScore> {
        self.kinds.iter().find(|s| s.kind == k)
    }

    /// A plain-text table (what the README shows).
    pub fn table(&self) -> String {
        let mut s =
            "| kind | truth | detected | matched | precision | recall |\n|---|---:|---:|---:|---:|---:|\n".to_string();
        for k in &self.kinds {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {:.3} | {:.3} |\n",
                k.kind, k.truth, k.detected, k.matched, k.precision, k.recall
            ));
        }
        s
    }
}

/// Kinds in a truth file that are not events on the server.
const NOT_EVENTS: &[&str] = &["offline", "malformed_frame"];

/// Parses a JSON-lines truth file; blank lines are skipped, errors name the line.
pub fn parse_truth(text: &str) -> Result<Vec<TruthLine>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let t: TruthLine = serde_json::from_str(line).map_err(|e| format!("truth line {}: {e}", i + 1))?;
        out.push(t);
    }
    Ok(out)
}

fn scored(t: &TruthLine) -> bool {
    if NOT_EVENTS.contains(&t.kind.as_str()) {
        return false;
    }
    if t.kind == "overspeed"
        && let Some(limit) = t.extra.get("limit_kmh").and_then(|v| v.as_f64())
        && t.magnitude <= limit
    {
        return false;
    }
    true
}

fn truth_time(t: &TruthLine) -> DateTime<Utc> {
    if t.kind == "trip_end" { t.end } else { t.start }
}

fn fence_of(t: &TruthLine) -> Option<String> {
    t.kind
        .starts_with("geofence_")
        .then(|| t.extra.get("geofence").and_then(|v| v.as_str()).map(str::to_owned))
        .flatten()
}

/// Pure matching.
pub fn score(truth: &[TruthLine], detected: &[Detected], tolerance_s: f64) -> ScoreReport {
    let truth: Vec<&TruthLine> = truth.iter().filter(|t| scored(t)).collect();
    let tol_ms = (tolerance_s * 1000.0) as i64;
    type Key = (String, String, Option<String>);
    let mut t_by: HashMap<Key, Vec<DateTime<Utc>>> = HashMap::new();
    for t in &truth {
        t_by.entry((t.device.clone(), t.kind.clone(), fence_of(t)))
            .or_default()
            .push(truth_time(t));
    }
    let kinds: std::collections::BTreeSet<String> = truth.iter().map(|t| t.kind.clone()).collect();
    let (from, to) = match (truth.iter().map(|t| t.start).min(), truth.iter().map(|t| t.end).max()) {
        (Some(a), Some(b)) => (
            a - chrono::Duration::milliseconds(tol_ms),
            b + chrono::Duration::milliseconds(tol_ms),
        ),
        _ => (DateTime::<Utc>::MAX_UTC, DateTime::<Utc>::MIN_UTC),
    };
    let devices: std::collections::BTreeSet<&str> = truth.iter().map(|t| t.device.as_str()).collect();
    let mut d_by: HashMap<Key, Vec<DateTime<Utc>>> = HashMap::new();
    for d in detected {
        if !kinds.contains(&d.kind) || !devices.contains(d.device.as_str()) || d.time < from || d.time > to {
            continue;
        }
        let fence = if d.kind.starts_with("geofence_") {
            d.geofence.clone()
        } else {
            None
        };
        d_by.entry((d.device.clone(), d.kind.clone(), fence))
            .or_default()
            .push(d.time);
    }
    let mut per: BTreeMap<String, (usize, usize, usize)> = kinds.iter().map(|k| (k.clone(), (0, 0, 0))).collect();
    let mut keys: Vec<&Key> = t_by.keys().chain(d_by.keys()).collect();
    keys.sort();
    keys.dedup();
    for key in keys {
        let mut ts = t_by.get(key).cloned().unwrap_or_default();
        let mut ds = d_by.get(key).cloned().unwrap_or_default();
        ts.sort();
        ds.sort();
        let mut used = vec![false; ds.len()];
        let mut matched = 0;
        for t in &ts {
            let best = ds
                .iter()
                .enumerate()
                .filter(|(i, d)| !used[*i] && (**d - *t).num_milliseconds().abs() <= tol_ms)
                .min_by_key(|(_, d)| (**d - *t).num_milliseconds().abs());
            if let Some((i, _)) = best {
                used[i] = true;
                matched += 1;
            }
        }
        let e = per.entry(key.1.clone()).or_default();
        e.0 += ts.len();
        e.1 += ds.len();
        e.2 += matched;
    }
    let ratio = |a: usize, b: usize| if b == 0 { 1.0 } else { a as f64 / b as f64 };
    ScoreReport {
        tolerance_s,
        devices: devices.len(),
        kinds: per
            .into_iter()
            .map(|(kind, (t, d, m))| KindScore {
                kind,
                truth: t,
                detected: d,
                matched: m,
                precision: ratio(m, d),
                recall: ratio(m, t),
            })
            .collect(),
    }
}

/// Reads the detected events for the truth's devices and time span from the store and
/// scores them.
pub async fn score_store(pool: &PgPool, truth: &[TruthLine], tolerance_s: f64) -> Result<ScoreReport, sqlx::Error> {
    let idents: Vec<String> = {
        let mut v: Vec<String> = truth.iter().map(|t| t.device.clone()).collect();
        v.sort();
        v.dedup();
        v
    };
    let detected = if truth.is_empty() {
        Vec::new()
    } else {
        let from = truth.iter().map(|t| t.start).min().unwrap_or_default() - chrono::Duration::hours(1);
        let to = truth.iter().map(|t| t.end).max().unwrap_or_default() + chrono::Duration::hours(1);
        let rows: Vec<(String, String, DateTime<Utc>, Option<String>)> = sqlx::query_as(
            "SELECT d.identifier, e.kind, e.time, g.name FROM events e \
             JOIN devices d ON d.id = e.device_id \
             LEFT JOIN geofences g ON g.id = e.geofence_id \
             WHERE d.identifier = ANY($1) AND e.time >= $2 AND e.time <= $3",
        )
        .bind(&idents)
        .bind(from)
        .bind(to)
        .fetch_all(pool)
        .await?;
        rows.into_iter()
            .map(|(device, kind, time, geofence)| Detected {
                device,
                kind,
                time,
                geofence,
            })
            .collect()
    };
    Ok(score(truth, &detected, tolerance_s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(kind: &str, s: i64, e: i64) -> TruthLine {
        let base = DateTime::parse_from_rfc3339("2026-03-02T07:00:00Z").unwrap().to_utc();
        TruthLine {
            device: "A".into(),
            kind: kind.into(),
            start: base + chrono::Duration::seconds(s),
            end: base + chrono::Duration::seconds(e),
            magnitude: 0.5,
            extra: Default::default(),
        }
    }

    fn d(kind: &str, s: i64) -> Detected {
        let base = DateTime::parse_from_rfc3339("2026-03-02T07:00:00Z").unwrap().to_utc();
        Detected {
            device: "A".into(),
            kind: kind.into(),
            time: base + chrono::Duration::seconds(s),
            geofence: None,
        }
    }

    #[test]
    fn matches_within_tolerance_once() {
        let truth = [
            t("harsh_braking", 100, 102),
            t("harsh_braking", 500, 502),
            t("trip_end", 0, 900),
        ];
        let det = [
            d("harsh_braking", 103),
            d("harsh_braking", 104),
            d("harsh_braking", 700),
            d("trip_end", 905),
            d("device_online", 0),
        ];
        let r = score(&truth, &det, 10.0);
        let hb = r.kind("harsh_braking").unwrap();
        assert_eq!((hb.truth, hb.detected, hb.matched), (2, 3, 1));
        assert!((hb.precision - 1.0 / 3.0).abs() < 1e-9);
        assert!((hb.recall - 0.5).abs() < 1e-9);
        let te = r.kind("trip_end").unwrap();
        assert_eq!(te.matched, 1, "trip_end is matched on the truth's end");
        assert!(r.kind("device_online").is_none());
    }

    #[test]
    fn parse_errors_name_the_line() {
        let e = parse_truth("\n{\"device\":\"A\"}\n").unwrap_err();
        assert!(e.contains("line 2"), "{e}");
    }
}
