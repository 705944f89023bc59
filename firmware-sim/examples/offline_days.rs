//! How fast the offline simulation produces vehicle-days: `offline_days [vehicle_days]
//! [interval_s]` simulates noise-only driving (default noise, ignition cycles) and prints
//! fixes, ground-truth lines and the CPU time per vehicle-day.

use std::time::{Duration, Instant};

use firmware_sim::offline::{OfflineConfig, simulate};
use firmware_sim::scenario::Scenario;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let days: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10);
    let interval: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);
    let scenario = Scenario::from_toml("[vehicle]\nignition_cycles = true").expect("built-in scenario");
    let mut cfg = OfflineConfig::from_scenario(&scenario, None, 1)
        .expect("no route file")
        .vehicle_days(days, 1);
    cfg.interval = Duration::from_secs(interval);
    let t0 = Instant::now();
    let mut sim = simulate(cfg);
    let fixes = sim.by_ref().count();
    let truth = sim.into_truth();
    let el = t0.elapsed().as_secs_f64();
    let thefts = truth.iter().filter(|g| g.kind == "fuel_theft").count();
    println!(
        "{days} vehicle-days, a fix every {interval} s: {fixes} fixes, {} truth lines ({thefts} fuel_theft) in {el:.2} s = {:.3} s per vehicle-day",
        truth.len(),
        el / days as f64
    );
}
