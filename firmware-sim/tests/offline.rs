//! The in-process simulation: positions, frames and ground truth without sockets.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use firmware_sim::offline::{OfflineConfig, simulate};
use firmware_sim::route::{LatLon, RouteSpec, offset};
use firmware_sim::run::FleetConfig;
use firmware_sim::scenario::Scenario;
use protocols::{DecodeContext, Protocol, Transport};

fn noise_only(devices: usize, hours: u64, seed: u64) -> OfflineConfig {
    let scenario = Scenario::from_toml("[vehicle]\nignition_cycles = true").unwrap();
    let mut cfg = OfflineConfig::from_scenario(&scenario, None, seed).unwrap();
    cfg.devices = devices;
    cfg.duration = Duration::from_secs(hours * 3600);
    cfg.interval = Duration::from_secs(30);
    cfg.start = Utc.with_ymd_and_hms(2026, 5, 1, 0, 0, 0).unwrap();
    cfg
}

#[test]
fn noise_only_days_have_no_theft_and_plausible_fuel() {
    let cfg = noise_only(4, 24, 3);
    let per_device = cfg.fixes_per_device();
    assert_eq!(per_device, 2880);
    let mut sim = simulate(cfg.clone());
    let mut n = 0u64;
    let mut devices = BTreeSet::new();
    let mut last: Option<(String, chrono::DateTime<Utc>, f64)> = None;
    let mut noise_sum = 0.0;
    let mut noise_n = 0u64;
    for s in sim.by_ref() {
        n += 1;
        devices.insert(s.device.to_string());
        let fuel = s.position.attributes.fuel_level_pct.unwrap();
        assert!((0.0..=100.0).contains(&fuel));
        if let Some((d, t, f)) = &last
            && **d == *s.device
        {
            assert!(s.position.time > *t, "time goes forward within a device");
            // Parked: the true level is constant, so consecutive readings differ by noise.
            if s.position.attributes.ignition == Some(false) && s.position.speed_kmh == Some(0.0) {
                noise_sum += (fuel - f).powi(2);
                noise_n += 1;
            }
        }
        last = Some((s.device.to_string(), s.position.time, fuel));
    }
    assert_eq!(n, 4 * per_device);
    assert_eq!(devices.len(), 4);
    // Difference of two independent N(0, σ²) readings has variance 2σ²; σ = 1 % by default.
    let sigma = (noise_sum / noise_n as f64 / 2.0).sqrt();
    assert!(noise_n > 150 && (0.8..1.2).contains(&sigma), "σ {sigma} over {noise_n}");
    let truth = sim.into_truth();
    let kinds: BTreeSet<&str> = truth.iter().map(|g| g.kind.as_str()).collect();
    assert!(!kinds.contains("fuel_theft"), "{kinds:?}");
    assert!(kinds.contains("trip_start") && kinds.contains("trip_end"), "{kinds:?}");
    assert!(truth.iter().all(|g| g.end >= g.start));
}

#[test]
fn same_ids_and_tracks_as_a_live_fleet() {
    let cfg = noise_only(3, 1, 42);
    let fleet = FleetConfig {
        seed: 42,
        ..FleetConfig::new(3, Protocol::Teltonika, "127.0.0.1:1".parse().unwrap())
    };
    for i in 0..3 {
        assert_eq!(cfg.device_id(i), fleet.device_id(i));
    }
    let a: Vec<_> = simulate(cfg.clone()).map(|s| s.position).collect();
    let b: Vec<_> = simulate(cfg).map(|s| s.position).collect();
    assert_eq!(a, b, "deterministic by seed");
}

#[test]
fn frames_decode_to_the_same_positions() {
    for (p, t) in [(Protocol::Teltonika, Transport::Tcp), (Protocol::Gt06, Transport::Tcp)] {
        let cfg = noise_only(2, 1, 8);
        let positions: Vec<_> = simulate(cfg.clone()).collect();
        let frames = simulate(cfg).frames(p, t, 10).unwrap();
        let mut codecs = std::collections::HashMap::new();
        let mut decoded = 0;
        for f in frames {
            let f = f.unwrap();
            let codec = codecs.entry(f.device.clone()).or_insert_with(|| p.codec(t).unwrap());
            let (msgs, errs) = protocols::decode_all(&mut **codec, &f.bytes, &DecodeContext::now());
            assert!(errs.is_empty(), "{p}: {errs:?}");
            let n: usize = msgs.iter().map(|m| m.positions.len()).sum();
            assert_eq!(n, f.positions, "{p}");
            decoded += n;
        }
        assert_eq!(decoded, positions.len(), "{p}");
    }
}

/// Every kind a fleet-analytics scorer needs, with the names it expects.
#[test]
fn ground_truth_covers_the_scorers_kinds() {
    let a = LatLon { lat: 54.68, lon: 25.25 };
    let b = offset(a, 90.0, 3000.0);
    let yard = offset(a, 90.0, 1500.0);
    let scenario = Scenario::from_toml(&format!(
        r#"
        [vehicle]
        ignition_cycles = true
        trip_min_s = 900
        trip_max_s = 1200
        park_min_s = 120
        park_max_s = 200
        [[geofences]]
        name = "yard"
        lat = {}
        lon = {}
        radius_m = 200
        [[events]]
        kind = "harsh_braking"
        at = "2m"
        magnitude_g = 0.5
        [[events]]
        kind = "harsh_acceleration"
        at = "4m"
        magnitude_g = 0.45
        [[events]]
        kind = "harsh_cornering"
        at = "6m"
        magnitude_g = 0.5
        [[events]]
        kind = "overspeed"
        at = "8m"
        speed_kmh = 90
        duration = "30s"
        [[events]]
        kind = "idle"
        at = "10m"
        duration = "6m"
        [[events]]
        kind = "dtc"
        at = "12m"
        code = "P0301"
        clear_at = "40m"
        [[events]]
        kind = "fuel_theft"
        at = "20m"
        litres = 12
        [[events]]
        kind = "refuel"
        at = "30m"
        litres = 20
        [[events]]
        kind = "offline"
        at = "45m"
        duration = "3m"
        "#,
        yard.lat, yard.lon
    ))
    .unwrap();
    let mut cfg = OfflineConfig::from_scenario(&scenario, None, 5).unwrap();
    let mut track = (*cfg.track).clone();
    track.route = RouteSpec::Line(vec![a, b]);
    cfg.track = std::sync::Arc::new(track);
    cfg.duration = Duration::from_secs(2 * 3600);
    cfg.interval = Duration::from_secs(5);
    let truth = simulate(cfg).into_truth();
    let kinds: BTreeSet<&str> = truth.iter().map(|g| g.kind.as_str()).collect();
    for k in [
        "harsh_braking",
        "harsh_acceleration",
        "harsh_cornering",
        "overspeed",
        "idle",
        "refuel",
        "fuel_theft",
        "geofence_enter",
        "geofence_exit",
        "trip_start",
        "trip_end",
        "dtc_raised",
        "dtc_cleared",
        "offline",
    ] {
        assert!(kinds.contains(k), "{k} missing from {kinds:?}");
    }
    for g in &truth {
        assert!(g.end >= g.start, "{g:?}");
        assert!(g.magnitude.is_finite(), "{g:?}");
    }
}

#[test]
fn vehicles_park_overnight() {
    use chrono::Timelike;
    let scenario = Scenario::from_toml("[vehicle]\nignition_cycles = true\nnight_park_hours = [20, 6]").unwrap();
    let mut cfg = OfflineConfig::from_scenario(&scenario, None, 4)
        .unwrap()
        .vehicle_days(2, 2);
    cfg.interval = Duration::from_secs(60);
    cfg.start = Utc.with_ymd_and_hms(2026, 5, 1, 0, 0, 0).unwrap();
    let mut sim = simulate(cfg);
    let (mut night, mut day_moving) = (0, 0);
    for s in sim.by_ref() {
        let h = s.position.time.hour() as f64 + s.position.time.minute() as f64 / 60.0;
        if !(6.0..20.1).contains(&h) {
            night += 1;
            assert_eq!(s.position.attributes.ignition, Some(false), "{}", s.position.time);
            assert_eq!(s.position.speed_kmh, Some(0.0), "{}", s.position.time);
        } else if s.position.speed_kmh.unwrap() > 0.0 {
            day_moving += 1;
        }
    }
    assert!(night > 2 * 2 * 9 * 60, "{night}");
    assert!(day_moving > 2 * 2 * 4 * 60, "{day_moving}");
    let truth = sim.into_truth();
    // The first trip of each day starts at 06:00 sharp.
    let morning_starts = truth
        .iter()
        .filter(|g| g.kind == "trip_start" && g.start.hour() == 6 && g.start.minute() == 0)
        .count();
    assert_eq!(morning_starts, 4, "{truth:?}");
    assert!(Scenario::from_toml("[vehicle]\nnight_park_hours = [20, 25]").is_err());
}
