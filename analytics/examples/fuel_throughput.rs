//! Fuel detector throughput: samples/s on one core, over firmware-sim traffic generated
//! beforehand (generation is not timed). `cargo run --release -p analytics --example fuel_throughput`.

use std::time::Instant;

use analytics::fuel::{FuelConfig, FuelDetector};
use analytics::{Detection, Sample};
use chrono::{Duration, TimeZone, Utc};
use firmware_sim::noise::NoiseConfig;
use firmware_sim::track::{Track, TrackConfig};
use firmware_sim::vehicle::VehicleConfig;

fn main() {
    let cfg = TrackConfig {
        vehicle: VehicleConfig {
            tank_l: 60.0,
            ..VehicleConfig::default()
        },
        noise: NoiseConfig {
            gps_jitter_m: 5.0,
            fuel_noise_pct: 2.0,
            ..NoiseConfig::default()
        },
        ..TrackConfig::default()
    };
    let start = Utc.with_ymd_and_hms(2026, 3, 2, 6, 0, 0).unwrap();
    let mut samples: Vec<Sample> = Vec::new();
    for v in 0..20u64 {
        let mut track = Track::new("1", &cfg, start + Duration::days(v as i64), v);
        for _ in 0..10_000 {
            track.advance(10.0);
            let p = track.read();
            let a = &p.attributes;
            samples.push(Sample {
                time: p.time,
                lat: p.latitude,
                lon: p.longitude,
                valid: p.valid,
                speed_kmh: p.speed_kmh,
                ignition: a.ignition,
                odometer_m: a.odometer_m,
                fuel_level_l: a.fuel_level_l,
                fuel_used_l: a.fuel_used_l,
                fuel_rate_lph: a.fuel_rate_lph,
                ..Sample::default()
            });
        }
    }
    let mut out: Vec<Detection> = Vec::new();
    let cpu = || {
        // CPU time of this process: wall clock is unreliable on a shared machine.
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let f: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
        let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
        ticks / 100.0
    };
    let (c0, w0) = (cpu(), Instant::now());
    let mut n = 0u64;
    for round in 0..5 {
        let mut d = FuelDetector::new(FuelConfig {
            tank_l: Some(60.0),
            ..FuelConfig::default()
        })
        .unwrap();
        for s in &samples {
            let mut s = s.clone();
            s.time += Duration::days(round * 400);
            d.push(&s, &mut out);
            n += 1;
        }
    }
    let (cpu_s, wall_s) = (cpu() - c0, w0.elapsed().as_secs_f64());
    println!(
        "{n} samples: {:.0} samples/s per CPU second ({cpu_s:.2} s CPU, {wall_s:.2} s wall), {} detections",
        n as f64 / cpu_s.max(1e-9),
        out.len()
    );
}
