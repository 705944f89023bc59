//! Positions per second through every operator on one core: the pure engine (input
//! checks, geofences, harsh driving, overspeed, trips/idle, online/offline) over
//! firmware-sim readings, timed in thread CPU time so machine load does not inflate it.
//!
//! ```sh
//! cargo run --release -p operators --example throughput -- [devices] [seconds] [per_batch] [analytics]
//! ```
//!
//! `per_batch` readings per bus batch (default 10; 1 is a GT06-style tracker), and
//! `analytics` plugs the detectors `clutch serve` runs (fuel, DTCs, battery, service plans).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use firmware_sim::route::{BBox, RouteSpec};
use firmware_sim::track::{Track, TrackConfig};
use firmware_sim::vehicle::VehicleConfig;
use nix::time::{ClockId, clock_gettime};
use operators::engine::{DeviceInfo, Engine};
use operators::fences::FenceSet;
use store::PositionRow;

fn cpu_s() -> f64 {
    let t = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).expect("thread CPU clock");
    t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let devices: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(200);
    let seconds: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1800);
    let per_batch: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(10).max(1);
    let analytics = args.get(4).is_some_and(|s| s == "analytics");
    let start: DateTime<Utc> = "2026-03-02T07:00:00Z".parse().expect("time");

    // Readings generated first (not timed): one a second per device, `per_batch` per batch.
    let cfg = TrackConfig {
        vehicle: VehicleConfig {
            ignition_cycles: true,
            trip_min_s: 150.0,
            trip_max_s: 300.0,
            ..VehicleConfig::default()
        },
        route: RouteSpec::Random(BBox::DEFAULT),
        ..TrackConfig::default()
    };
    let mut batches: Vec<(i64, Vec<PositionRow>)> = Vec::new();
    for d in 0..devices {
        let mut track = Track::new(&format!("dev{d}"), &cfg, start, d as u64);
        let mut buf = Vec::with_capacity(per_batch);
        for _ in 0..seconds {
            track.advance(1.0);
            let p = track.read();
            buf.push(PositionRow::from_position(d as i64, &p, p.time));
            if buf.len() == per_batch {
                batches.push((d as i64, std::mem::take(&mut buf)));
            }
        }
    }
    // Interleave devices as a bus would.
    batches.sort_by_key(|(d, b)| (b[0].fix_time, *d));
    let total: usize = batches.iter().map(|(_, b)| b.len()).sum();

    // 50 circular fences over the area, all in the devices' tenant.
    let rows = (0..50).map(|i| {
        let lat = 54.66 + 0.06 * ((i * 7) % 50) as f64 / 50.0;
        let lon = 25.22 + 0.12 * ((i * 13) % 50) as f64 / 50.0;
        (
            i as i64 + 1,
            1i64,
            format!("f{i}"),
            serde_json::json!({"type": "Point", "coordinates": [lon, lat]}),
            serde_json::json!({"radius_m": 250.0, "rules": {"dwell_alert_s": 120, "speed_limit": {"limit_kmh": 50}}}),
        )
    });
    let mut engine = Engine::new(Arc::new(operators::OperatorsConfig::default()));
    engine.set_fences(Arc::new(FenceSet::build(rows)));
    if analytics {
        engine.set_detectors(operators::analytics_factory());
    }
    for d in 0..devices {
        engine.set_device_info(
            d as i64,
            DeviceInfo {
                tenant_id: Some(1),
                ..DeviceInfo::default()
            },
        );
    }

    let t0 = cpu_s();
    let mut events = 0usize;
    let mut last_tick = start;
    for (d, b) in &batches {
        engine.process(*d, b);
        let t = b[0].fix_time;
        if (t - last_tick).num_seconds() >= 1 {
            engine.tick(t);
            last_tick = t;
        }
        events += engine.take_output().events.len();
    }
    let cpu = cpu_s() - t0;
    println!(
        "{total} positions in batches of {per_batch}, {devices} devices, analytics {analytics}, {events} events: \
         {:.3} s CPU, {:.0} positions/s on one core",
        cpu,
        total as f64 / cpu
    );
}
