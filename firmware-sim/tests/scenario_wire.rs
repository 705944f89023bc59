//! Scenario ground truth against what actually went over the wire: the frames the
//! in-test server decoded must show every injected event where the ground truth says.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use common::Behaviour;
use firmware_sim::noise::NoiseConfig;
use firmware_sim::run::{Fleet, FleetConfig};
use firmware_sim::scenario::Scenario;
use firmware_sim::track::TrackConfig;
use protocols::{Protocol, Transport};

const SCENARIO: &str = r#"
[[events]]
kind = "dtc"
at = "30s"
code = "P0301"
clear_at = "150s"
[[events]]
kind = "harsh_braking"
at = "60s"
magnitude_g = 0.5
duration = "2s"
[[events]]
kind = "overspeed"
at = "120s"
speed_kmh = 95
limit_kmh = 60
duration = "30s"
[[events]]
kind = "fuel_theft"
at = "200s"
litres = 10
[[events]]
kind = "offline"
at = "280s"
duration = "40s"
[[events]]
kind = "malformed"
at = "340s"
count = 1
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ground_truth_matches_the_frames_sent() {
    for p in [Protocol::Gt06, Protocol::Ruptela] {
        let server = common::start(p, Transport::Tcp, Behaviour::Ack).await;
        let scenario = Scenario::from_toml(SCENARIO).unwrap();
        let mut cfg = FleetConfig::new(2, p, server.addr);
        cfg.interval = Duration::from_millis(20);
        cfg.time_scale = 50.0;
        cfg.duration = Duration::from_millis(8000);
        cfg.drain = Duration::from_secs(5);
        cfg.batch = 2;
        cfg.ack_timeout = Duration::from_secs(2);
        cfg.start = Utc.with_ymd_and_hms(2026, 2, 1, 9, 0, 0).unwrap();
        cfg.seed = 5;
        cfg.track = Arc::new(TrackConfig {
            noise: NoiseConfig::NONE,
            events: scenario.events,
            ..TrackConfig::default()
        });
        let (s, truth) = Fleet::start(&cfg).wait(None).await;
        let got = server.seen.positions();
        assert_eq!(s.records_acked, s.records_generated, "{p}: {s}");

        for kind in [
            "dtc_raised",
            "dtc_cleared",
            "harsh_braking",
            "overspeed",
            "fuel_theft",
            "offline",
            "malformed_frame",
        ] {
            let n = truth.iter().filter(|g| g.kind == kind).count();
            assert_eq!(n, 2, "{p}: {kind} once per device in {truth:#?}");
        }
        // The theft parks the car: a trip ends there and another begins.
        assert_eq!(truth.iter().filter(|g| g.kind == "trip_start").count(), 4, "{p}");
        assert_eq!(truth.iter().filter(|g| g.kind == "trip_end").count(), 4, "{p}");
        for g in &truth {
            let track: Vec<_> = got.iter().filter(|(id, _)| *id == g.device).map(|(_, p)| p).collect();
            let at = |t| {
                track
                    .iter()
                    .find(|p| p.time == t)
                    .unwrap_or_else(|| panic!("{p}: no record at {t} for {g:?}"))
            };
            match g.kind.as_str() {
                "harsh_braking" => {
                    let (a, b) = (at(g.start), at(g.end));
                    let before = g.extra["speed_before_kmh"].as_f64().unwrap();
                    let after = g.extra["speed_after_kmh"].as_f64().unwrap();
                    assert_eq!(a.speed_kmh, Some(before), "{p}: {g:?}");
                    assert_eq!(b.speed_kmh, Some(after), "{p}: {g:?}");
                    let dt = (g.end - g.start).num_milliseconds() as f64 / 1000.0;
                    let expected = (g.magnitude * 9.80665 * dt * 3.6).min(before);
                    assert!(
                        ((before - after) - expected).abs() <= 2.0,
                        "{p}: lost {} km/h, expected {expected}",
                        before - after
                    );
                }
                "overspeed" => {
                    let limit = g.extra["limit_kmh"].as_f64().unwrap();
                    let inside: Vec<f64> = track
                        .iter()
                        .filter(|q| q.time >= g.start && q.time <= g.end)
                        .filter_map(|q| q.speed_kmh)
                        .collect();
                    assert!(
                        !inside.is_empty() && inside.iter().all(|&v| v > limit),
                        "{p}: {g:?} {inside:?}"
                    );
                    let max = inside.iter().copied().fold(0.0, f64::max);
                    assert!((max - g.magnitude).abs() <= 1.0, "{p}: {g:?} max {max}");
                }
                "fuel_theft" => {
                    let q = at(g.end);
                    assert_eq!(q.speed_kmh, Some(0.0), "{p}: parked during the theft");
                    if let (Some(after), Some(before)) = (
                        q.attributes.fuel_level_l,
                        track
                            .iter()
                            .rev()
                            .find(|x| x.time < g.start)
                            .and_then(|x| x.attributes.fuel_level_l),
                    ) {
                        assert!(
                            (before - after - g.magnitude).abs() < 0.5,
                            "{p}: {before} → {after} for {g:?}"
                        );
                    }
                }
                "offline" => {
                    // The backlog from the offline window arrived after the reconnect.
                    let during = track.iter().filter(|q| q.time > g.start && q.time < g.end).count();
                    let secs = (g.end - g.start).num_seconds() as usize;
                    assert!(during + 2 >= secs, "{p}: {during} of ~{secs} backlog records arrived");
                }
                _ => {}
            }
        }
        assert!(
            s.disconnects >= 2 && s.connects >= 4,
            "{p}: went offline and came back: {s}"
        );
        assert_eq!(s.malformed_sent, 2, "{p}: {s}");
        assert!(
            server.seen.decode_errors.load(Relaxed) >= 1,
            "{p}: the server noticed the malformed frames"
        );
    }
}
