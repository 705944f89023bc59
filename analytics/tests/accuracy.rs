//! Accuracy of the fuel detector against firmware-sim ground truth with the issue's
//! default noise (fuel ±2 % of the tank with slosh, GPS jitter 5 m).

mod common;

use analytics::Detection;
use analytics::fuel::{FuelConfig, FuelDetector};
use common::{Counts, TANK_L, fuel_scenario, noise_day, score_kind};

/// A detection matches a truth line when its start is within this of the truth's span
/// (the detector reports the first sample showing the change; samples are 10 s apart).
const TOLERANCE_S: i64 = 120;

fn detector() -> FuelDetector {
    FuelDetector::new(FuelConfig {
        tank_l: Some(TANK_L),
        ..FuelConfig::default()
    })
    .unwrap()
}

fn run(samples: &[analytics::Sample]) -> Vec<Detection> {
    let mut d = detector();
    let mut out = Vec::new();
    for s in samples {
        d.push(s, &mut out);
    }
    if let Some(last) = samples.last() {
        d.tick(last.time + chrono::Duration::hours(1), &mut out);
    }
    out
}

#[test]
fn refuel_and_theft_precision_and_recall() {
    let vehicles = 40;
    let (mut refuel, mut theft) = (Counts::default(), Counts::default());
    let mut report = Vec::new();
    for seed in 0..vehicles {
        let (samples, truth) = fuel_scenario(1000 + seed, 8.0, 10.0);
        let dets = run(&samples);
        let (r, mr) = score_kind("refuel", &dets, &truth, TOLERANCE_S);
        let (t, mt) = score_kind("fuel_theft", &dets, &truth, TOLERANCE_S);
        refuel.add(r);
        theft.add(t);
        for m in mr.into_iter().chain(mt) {
            report.push(format!("vehicle {seed}: {m}"));
        }
    }
    eprintln!(
        "refuel: truth {} detected {} tp {} precision {:.3} recall {:.3}",
        refuel.truth,
        refuel.detected,
        refuel.true_pos,
        refuel.precision(),
        refuel.recall()
    );
    eprintln!(
        "fuel_theft: truth {} detected {} tp {} precision {:.3} recall {:.3}",
        theft.truth,
        theft.detected,
        theft.true_pos,
        theft.precision(),
        theft.recall()
    );
    for r in &report {
        eprintln!("{r}");
    }
    assert!(
        refuel.truth >= 60 && theft.truth >= 60,
        "too few events to measure: {refuel:?} {theft:?}"
    );
    for (kind, c) in [("refuel", refuel), ("fuel_theft", theft)] {
        assert!(c.precision() >= 0.95, "{kind} precision {:.3} ({c:?})", c.precision());
        assert!(c.recall() >= 0.95, "{kind} recall {:.3} ({c:?})", c.recall());
    }
}

/// How many noise-only vehicle-days: the 1000 in an optimised build; the debug
/// build (plain `cargo test`) runs the full 1000 too unless `CLUTCH_ANALYTICS_DAYS` says
/// otherwise (the crate and firmware-sim are built with opt-level 3 even in dev, see the
/// root Cargo.toml).
fn noise_days() -> u64 {
    std::env::var("CLUTCH_ANALYTICS_DAYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

#[test]
fn no_false_theft_over_noise_only_vehicle_days() {
    let days = noise_days();
    let mut false_thefts = Vec::new();
    let mut other = Vec::new();
    let mut samples_total = 0usize;
    for seed in 0..days {
        let samples = noise_day(50_000 + seed, 10.0, 60.0);
        samples_total += samples.len();
        for d in run(&samples) {
            if d.kind == "fuel_theft" {
                false_thefts.push(format!("day {seed}: {} {:?} L {}", d.time, d.magnitude, d.attributes));
            } else {
                other.push(format!(
                    "day {seed}: {} {} {:?} {}",
                    d.kind, d.time, d.magnitude, d.attributes
                ));
            }
        }
    }
    eprintln!(
        "{days} noise-only vehicle-days, {samples_total} samples: {} false thefts, {} other detections",
        false_thefts.len(),
        other.len()
    );
    for o in &other {
        eprintln!("{o}");
    }
    assert!(
        false_thefts.is_empty(),
        "false theft alarms:\n{}",
        false_thefts.join("\n")
    );
}
