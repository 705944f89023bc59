//! Speed zones and polygon/corridor geofences along a known route: the ground truth must
//! agree with the readings the device reports.

use chrono::{DateTime, TimeZone, Utc};
use firmware_sim::noise::NoiseConfig;
use firmware_sim::route::{LatLon, RouteSpec, offset};
use firmware_sim::scenario::{GroundTruth, Scenario};
use firmware_sim::track::{Track, TrackConfig};
use protocols::Position;

/// A straight 4 km street eastwards, driven there and back.
fn street() -> (LatLon, LatLon) {
    let a = LatLon { lat: 54.68, lon: 25.25 };
    (a, offset(a, 90.0, 4000.0))
}

/// A rectangle `from_m..to_m` metres along the street, 100 m either side, as a TOML ring.
fn box_along(from_m: f64, to_m: f64) -> String {
    let (a, _) = street();
    let p = |d: f64, side: f64| offset(offset(a, 90.0, d), 0.0, side);
    let pts = [p(from_m, -100.0), p(to_m, -100.0), p(to_m, 100.0), p(from_m, 100.0)];
    let ring: Vec<String> = pts.iter().map(|q| format!("[{}, {}]", q.lon, q.lat)).collect();
    format!("[{}]", ring.join(", "))
}

fn drive(toml: &str, seconds: u32) -> (Vec<Position>, Vec<GroundTruth>) {
    let scenario = Scenario::from_toml(toml).unwrap();
    let (a, b) = street();
    let cfg = TrackConfig {
        noise: NoiseConfig::NONE,
        route: RouteSpec::Line(vec![a, b]),
        ..scenario.track_config(None).unwrap()
    };
    let start = Utc.with_ymd_and_hms(2026, 1, 1, 8, 0, 0).unwrap();
    let mut t = Track::new("dev", &cfg, start, 9);
    let mut readings = Vec::new();
    let mut truth = Vec::new();
    for _ in 0..seconds {
        t.advance(1.0);
        readings.push(t.read());
        truth.extend(t.take_truth());
    }
    truth.extend(t.finish());
    (readings, truth)
}

fn speeds_between(readings: &[Position], s: DateTime<Utc>, e: DateTime<Utc>) -> Vec<f64> {
    readings
        .iter()
        .filter(|p| p.time >= s && p.time <= e)
        .filter_map(|p| p.speed_kmh)
        .collect()
}

#[test]
fn speeding_in_a_polygon_zone() {
    let toml = format!(
        r#"
        [[speed_zones]]
        name = "school"
        limit_kmh = 30
        speed_kmh = 70
        polygon = {}
        "#,
        box_along(1000.0, 2000.0)
    );
    let (readings, truth) = drive(&toml, 900);
    let over: Vec<&GroundTruth> = truth.iter().filter(|g| g.kind == "overspeed").collect();
    // There and back through the zone: at least two passes, each one line.
    assert!(over.len() >= 2, "{truth:?}");
    let (a, _) = street();
    for g in &over {
        assert_eq!(g.extra["zone"], "school");
        assert_eq!(g.extra["limit_kmh"], 30.0);
        let v = speeds_between(&readings, g.start, g.end);
        let max = v.iter().copied().fold(0.0, f64::max);
        assert!(v.iter().all(|&s| s >= 30.0), "under the limit inside the line: {v:?}");
        assert!((max - g.magnitude).abs() <= 1.0 && max > 60.0, "{g:?} max {max}");
        // Every reading over the limit inside the span is inside the zone (±1 s of driving).
        for p in readings.iter().filter(|p| p.time >= g.start && p.time <= g.end) {
            let d = firmware_sim::route::distance_m(
                a,
                LatLon {
                    lat: p.latitude,
                    lon: p.longitude,
                },
            );
            assert!((980.0..=2020.0).contains(&d), "{d} m along at {}", p.time);
        }
    }
    // Outside the zone the driver keeps to the street's 50.
    let outside_max = readings
        .iter()
        .filter(|p| {
            !over
                .iter()
                .any(|g| p.time >= g.start && p.time <= g.end + chrono::Duration::seconds(30))
        })
        .filter_map(|p| p.speed_kmh)
        .fold(0.0, f64::max);
    assert!(outside_max <= 51.0, "{outside_max}");
}

#[test]
fn obeyed_zone_leaves_no_overspeed() {
    let toml = format!(
        r#"
        [[speed_zones]]
        name = "school"
        limit_kmh = 30
        polygon = {}
        "#,
        box_along(1000.0, 2000.0)
    );
    let (readings, truth) = drive(&toml, 900);
    assert!(truth.iter().all(|g| g.kind != "overspeed"), "{truth:?}");
    let (a, _) = street();
    let inside: Vec<f64> = readings
        .iter()
        .filter(|p| {
            let d = firmware_sim::route::distance_m(
                a,
                LatLon {
                    lat: p.latitude,
                    lon: p.longitude,
                },
            );
            (1000.0..=2000.0).contains(&d)
        })
        .filter_map(|p| p.speed_kmh)
        .collect();
    assert!(inside.len() > 60, "the car drove through the zone: {}", inside.len());
    assert!(inside.iter().all(|&s| s <= 30.0), "{inside:?}");
    assert!(
        readings.iter().filter_map(|p| p.speed_kmh).any(|s| s > 45.0),
        "faster outside"
    );
}

#[test]
fn speeding_on_a_stretch_of_the_drive() {
    let (readings, truth) = drive(
        r#"
        [[speed_zones]]
        name = "ring road works"
        limit_kmh = 40
        speed_kmh = 90
        from_km = 0.5
        to_km = 2.5
        "#,
        600,
    );
    let over: Vec<&GroundTruth> = truth.iter().filter(|g| g.kind == "overspeed").collect();
    assert_eq!(over.len(), 1, "{truth:?}");
    let g = over[0];
    assert_eq!(g.extra["zone"], "ring road works");
    let max = speeds_between(&readings, g.start, g.end)
        .into_iter()
        .fold(0.0, f64::max);
    assert!(max > 80.0 && (max - g.magnitude).abs() <= 1.0, "{g:?} {max}");
}

#[test]
fn polygon_and_corridor_geofences() {
    let (a, _) = street();
    let c1 = offset(a, 90.0, 2500.0);
    let c2 = offset(a, 90.0, 3200.0);
    let toml = format!(
        r#"
        [[geofences]]
        name = "yard"
        polygon = {}
        dwell = "10s"
        [[geofences]]
        name = "lane"
        corridor = [[{}, {}], [{}, {}]]
        width_m = 40
        dwell = "5m"
        "#,
        box_along(500.0, 1200.0),
        c1.lon,
        c1.lat,
        c2.lon,
        c2.lat,
    );
    let (readings, truth) = drive(&toml, 400);
    let of = |fence: &str| -> Vec<&GroundTruth> {
        truth
            .iter()
            .filter(|g| g.kind.starts_with("geofence") && g.extra["geofence"] == fence)
            .collect()
    };
    let kinds = |v: &[&GroundTruth]| v.iter().map(|g| g.kind.clone()).collect::<Vec<_>>();
    let yard = of("yard");
    // The dwell line spans the whole stay; it is known at the exit.
    assert_eq!(
        kinds(&yard)[..3],
        ["geofence_enter", "geofence_exit", "geofence_dwell"],
        "{yard:?}"
    );
    let lane = of("lane");
    // 700 m at 50 km/h is under a minute: enter and exit, no 5-minute dwell.
    assert_eq!(kinds(&lane)[..2], ["geofence_enter", "geofence_exit"], "{lane:?}");
    assert!(lane.iter().all(|g| g.kind != "geofence_dwell"));
    // The readings agree: inside the yard between enter and exit.
    let (enter, exit) = (yard[0].start, yard[1].start);
    assert_eq!((yard[2].start, yard[2].end), (enter, exit));
    assert!((exit - enter).num_seconds() > 30);
    for p in readings.iter().filter(|p| p.time > enter && p.time < exit) {
        let d = firmware_sim::route::distance_m(
            a,
            LatLon {
                lat: p.latitude,
                lon: p.longitude,
            },
        );
        assert!((495.0..=1205.0).contains(&d), "{d}");
    }
}

#[test]
fn bad_zones_are_listed() {
    let err = Scenario::from_toml(
        r#"
        [[speed_zones]]
        name = "nowhere"
        limit_kmh = 30
        [[speed_zones]]
        name = "both"
        limit_kmh = 30
        lat = 54.0
        lon = 25.0
        radius_m = 100
        from_km = 1
        to_km = 2
        [[speed_zones]]
        name = "fast"
        limit_kmh = 0
        from_km = 1
        to_km = 2
        [[geofences]]
        name = "bow tie"
        polygon = [[25.0, 54.0], [25.1, 54.1], [25.1, 54.0], [25.0, 54.1]]
        [[geofences]]
        name = "half circle"
        lat = 54.0
        "#,
    )
    .unwrap_err();
    assert!(err.contains("5 problem"), "{err}");
    for name in ["nowhere", "both", "fast", "bow tie", "half circle"] {
        assert!(err.contains(name), "{name}: {err}");
    }
}
