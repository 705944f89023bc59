//! Vehicle model invariants, over many seeds and scenarios.

use chrono::{TimeZone, Utc};
use firmware_sim::noise::NoiseConfig;
use firmware_sim::route::{BBox, RouteSpec, distance_m};
use firmware_sim::scenario::Scenario;
use firmware_sim::track::{Track, TrackConfig};
use firmware_sim::vehicle::VehicleConfig;
use proptest::prelude::*;

const EVENTS: &str = r#"
[[events]]
kind = "harsh_braking"
at = "3m"
magnitude_g = 0.6
[[events]]
kind = "harsh_acceleration"
at = "5m"
magnitude_g = 0.5
[[events]]
kind = "harsh_cornering"
at = "7m"
magnitude_g = 0.6
[[events]]
kind = "overspeed"
at = "9m"
speed_kmh = 100
duration = "30s"
[[events]]
kind = "fuel_theft"
at = "12m"
litres = 500
[[events]]
kind = "refuel"
at = "16m"
litres = 25
[[events]]
kind = "idle"
at = "20m"
duration = "2m"
"#;

fn check_run(seed: u64, ignition_cycles: bool, with_events: bool, minutes: u32) -> Result<(), TestCaseError> {
    let scenario = Scenario::from_toml(if with_events { EVENTS } else { "" }).unwrap();
    let vcfg = VehicleConfig {
        ignition_cycles,
        trip_min_s: 120.0,
        trip_max_s: 400.0,
        park_min_s: 30.0,
        park_max_s: 90.0,
        ..VehicleConfig::default()
    };
    let cfg = TrackConfig {
        vehicle: vcfg.clone(),
        noise: NoiseConfig::default(),
        route: RouteSpec::Random(BBox::DEFAULT),
        events: scenario.events,
        geofences: Vec::new(),
        speed_zones: Vec::new(),
    };
    let start = Utc.with_ymd_and_hms(2026, 1, 1, 8, 0, 0).unwrap();
    let mut t = Track::new("dev", &cfg, start, seed);
    let mut prev = t.vehicle.state.clone();
    for _ in 0..minutes * 60 {
        // The overrides in force during the step are the ones set before it.
        let ov = t.vehicle.overrides.clone();
        t.advance(1.0);
        let s = t.vehicle.state.clone();
        let moved = distance_m(prev.pos, s.pos);
        let bound = prev.speed_ms.max(s.speed_ms) * 1.0 + 0.5;
        prop_assert!(
            moved <= bound,
            "teleported {moved} m in 1 s (bound {bound}) at {}",
            s.time
        );
        prop_assert!(s.fuel_l >= 0.0 && s.fuel_l <= vcfg.tank_l + 1e-9, "fuel {}", s.fuel_l);
        prop_assert!(s.odometer_m >= prev.odometer_m, "odometer went back");
        prop_assert!(s.engine_s >= prev.engine_s, "engine hours went back");
        prop_assert!(s.speed_ms >= 0.0);
        if ov.accel_ms2.is_none() {
            prop_assert!(
                s.accel_ms2 <= vcfg.max_accel_ms2 + 1e-9 && s.accel_ms2 >= -vcfg.max_brake_ms2 - 1e-9,
                "accel {} at {} without an injected event",
                s.accel_ms2,
                s.time
            );
        }
        if ov.lateral_ms2.is_none() {
            prop_assert!(
                s.lateral_ms2.abs() <= vcfg.max_lateral_ms2 + 1e-6,
                "lateral {}",
                s.lateral_ms2
            );
        }
        if !s.ignition {
            prop_assert!(
                s.speed_ms == 0.0 || prev.speed_ms > 0.0,
                "drove off with the ignition off"
            );
            prop_assert_eq!(s.rpm, 0.0);
        }
        let p = t.read();
        prop_assert!(p.latitude.is_finite() && p.longitude.is_finite());
        let fuel = p.attributes.fuel_level_pct.unwrap();
        prop_assert!((0.0..=100.0).contains(&fuel));
        prev = s;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold(seed in any::<u64>(), cycles in any::<bool>(), events in any::<bool>()) {
        check_run(seed, cycles, events, 30)?;
    }
}

#[test]
fn same_seed_same_track() {
    let cfg = TrackConfig::default();
    let start = Utc.with_ymd_and_hms(2026, 1, 1, 8, 0, 0).unwrap();
    let run = |seed| {
        let mut t = Track::new("d", &cfg, start, seed);
        (0..300)
            .map(|_| {
                t.advance(1.0);
                t.read()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(run(9), run(9));
    assert_ne!(run(9), run(10));
}

#[test]
fn injected_events_show_in_the_readings() {
    let scenario = Scenario::from_toml(EVENTS).unwrap();
    let cfg = TrackConfig {
        noise: NoiseConfig::NONE,
        events: scenario.events,
        ..TrackConfig::default()
    };
    let start = Utc.with_ymd_and_hms(2026, 1, 1, 8, 0, 0).unwrap();
    let mut t = Track::new("dev-1", &cfg, start, 77);
    let mut readings = Vec::new();
    let mut truth = Vec::new();
    for _ in 0..1800 {
        t.advance(1.0);
        readings.push(t.read());
        truth.extend(t.take_truth());
    }
    truth.extend(t.finish());
    let at = |time| readings.iter().find(|p| p.time == time).unwrap();
    let kinds: Vec<&str> = truth.iter().map(|g| g.kind.as_str()).collect();
    for k in [
        "harsh_braking",
        "harsh_acceleration",
        "harsh_cornering",
        "overspeed",
        "fuel_theft",
        "refuel",
        "idle",
        "trip_start",
    ] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    for g in &truth {
        assert_eq!(g.device, "dev-1");
        assert!(g.end >= g.start, "{g:?}");
        match g.kind.as_str() {
            "harsh_braking" => {
                let (a, b) = (at(g.start), at(g.end));
                let dv = (a.speed_kmh.unwrap() - b.speed_kmh.unwrap()) / 3.6;
                let dt = (g.end - g.start).num_seconds() as f64;
                // Speed lost matches magnitude × g over the window (speeds are whole km/h).
                assert!(
                    (dv - g.magnitude * 9.80665 * dt).abs() < 1.0 || b.speed_kmh == Some(0.0),
                    "{g:?} dv {dv}"
                );
                let first = at(g.start + chrono::Duration::seconds(1));
                let mg = first.attributes.accel_mg.unwrap()[0];
                assert!(
                    mg <= -(g.magnitude * 1000.0) as i32 + 50,
                    "accelerometer {mg} for {g:?}"
                );
            }
            "overspeed" => {
                let limit = g.extra["limit_kmh"].as_f64().unwrap();
                let max = readings
                    .iter()
                    .filter(|p| p.time >= g.start && p.time <= g.end)
                    .filter_map(|p| p.speed_kmh)
                    .fold(0.0, f64::max);
                assert!(max > limit && (max - g.magnitude).abs() <= 1.0, "{g:?} max {max}");
            }
            "fuel_theft" => {
                let before = readings.iter().rev().find(|p| p.time < g.start).unwrap();
                let after = at(g.end);
                let dl = before.attributes.fuel_level_l.unwrap() - after.attributes.fuel_level_l.unwrap();
                assert!((dl - g.magnitude).abs() < 0.5, "{g:?} dropped {dl}");
                assert_eq!(after.attributes.ignition, Some(false));
                assert_eq!(after.speed_kmh, Some(0.0));
            }
            "idle" => {
                for p in readings.iter().filter(|p| p.time > g.start && p.time < g.end) {
                    assert_eq!(p.speed_kmh, Some(0.0));
                    assert_eq!(p.attributes.ignition, Some(true));
                }
            }
            _ => {}
        }
    }
}

#[test]
fn geofence_crossings_along_a_route() {
    use firmware_sim::route::{LatLon, offset};
    // A straight 3 km street through a 300 m fence centred 1.5 km along it.
    let a = LatLon { lat: 54.68, lon: 25.25 };
    let b = offset(a, 90.0, 3000.0);
    let centre = offset(a, 90.0, 1500.0);
    let scenario = Scenario::from_toml(&format!(
        r#"
        [[geofences]]
        name = "yard"
        lat = {}
        lon = {}
        radius_m = 300
        dwell = "10s"
        "#,
        centre.lat, centre.lon
    ))
    .unwrap();
    let cfg = TrackConfig {
        noise: NoiseConfig::NONE,
        route: RouteSpec::Line(vec![a, b]),
        geofences: scenario.geofences,
        ..TrackConfig::default()
    };
    let start = Utc.with_ymd_and_hms(2026, 1, 1, 8, 0, 0).unwrap();
    let mut t = Track::new("dev", &cfg, start, 3);
    let mut inside_at = Vec::new();
    let mut truth = Vec::new();
    for _ in 0..600 {
        t.advance(1.0);
        let p = t.read();
        let d = distance_m(
            LatLon {
                lat: p.latitude,
                lon: p.longitude,
            },
            centre,
        );
        inside_at.push((p.time, d <= 300.0));
        truth.extend(t.take_truth());
    }
    truth.extend(t.finish());
    let kinds: Vec<&str> = truth
        .iter()
        .filter(|g| g.kind.starts_with("geofence"))
        .map(|g| g.kind.as_str())
        .collect();
    assert!(
        kinds.starts_with(&["geofence_enter", "geofence_exit", "geofence_dwell"]),
        "{kinds:?}"
    );
    let enter = truth.iter().find(|g| g.kind == "geofence_enter").unwrap();
    let exit = truth.iter().find(|g| g.kind == "geofence_exit").unwrap();
    let dwell = truth.iter().find(|g| g.kind == "geofence_dwell").unwrap();
    assert_eq!(enter.extra["geofence"], "yard");
    // The reported fixes agree: outside just before the entry, inside from it until the exit.
    let state = |time| inside_at.iter().find(|(t, _)| *t == time).map(|(_, i)| *i).unwrap();
    assert!(!state(enter.start - chrono::Duration::seconds(1)) && state(enter.start));
    assert!(state(exit.start - chrono::Duration::seconds(1)) && !state(exit.start));
    assert_eq!((dwell.start, dwell.end), (enter.start, exit.start));
    // 600 m of fence at no more than 50 km/h takes at least 43 s.
    assert!(dwell.magnitude >= 43.0, "{dwell:?}");
}
