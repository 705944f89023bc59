//! The state machines end to end: a golden route across six fences with the exact
//! events expected, jitter at an edge that must not flap, and the input edge cases
//! (poor fixes, duplicates, disorder, index swaps, assignments).

use chrono::{DateTime, NaiveTime, TimeZone, Utc};
use geo::{Point, polygon};
use geofence::{
    DeviceId, Engine, Event, EventKind, EventTag, Fence, FenceId, FenceIndex, FenceRules, Fix, FixFilter, GroupId,
    Scope, Shape, SharedIndex, Skip, SpeedLimit, TimeWindow, WindowMode,
};
use proptest::prelude::*;

const DEV: DeviceId = DeviceId(1);
const LAT: f64 = 52.0;

fn base() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 1, 5, 40, 0).unwrap()
}

fn t(s: i64) -> DateTime<Utc> {
    base() + chrono::TimeDelta::seconds(s)
}

fn rect(id: u64, lon0: f64, lon1: f64, rules: FenceRules) -> Fence {
    let p = polygon![
        (x: lon0, y: LAT - 0.005), (x: lon1, y: LAT - 0.005), (x: lon1, y: LAT + 0.005), (x: lon0, y: LAT + 0.005)
    ];
    Fence::new(FenceId(id), Shape::Polygon(p), rules).unwrap()
}

/// The golden route's fences.
fn route_fences() -> Vec<Fence> {
    vec![
        // Depot: enter after two fixes, dwell alert after a minute.
        rect(
            1,
            13.005,
            13.015,
            FenceRules {
                enter_min_fixes: 2,
                dwell_alert_s: Some(60),
                ..FenceRules::default()
            },
        )
        .with_name("depot"),
        // Speed zone: 50 km/h for at least 20 s.
        rect(
            2,
            13.030,
            13.060,
            FenceRules {
                speed_limit: Some(SpeedLimit {
                    limit_kmh: 50.0,
                    min_duration_s: 20,
                }),
                ..FenceRules::default()
            },
        ),
        // Customer site: a 150 m circle, enter after 30 s inside.
        Fence::new(
            FenceId(3),
            Shape::Circle {
                center: Point::new(13.080, LAT),
                radius_m: 150.0,
            },
            FenceRules {
                enter_dwell_s: 30,
                hysteresis_m: 10.0,
                ..FenceRules::default()
            },
        )
        .unwrap(),
        // Curfew yard: no one inside 22:00-06:00 UTC.
        rect(
            4,
            13.090,
            13.096,
            FenceRules {
                time_windows: vec![TimeWindow {
                    mode: WindowMode::Forbidden,
                    days: vec![],
                    start: NaiveTime::from_hms_opt(22, 0, 0).unwrap(),
                    end: NaiveTime::from_hms_opt(6, 0, 0).unwrap(),
                    utc_offset_min: 0,
                }],
                ..FenceRules::default()
            },
        ),
        // Covers the whole route but is assigned to another device only.
        rect(
            5,
            12.9,
            13.2,
            FenceRules {
                applies_to: Scope {
                    devices: vec![DeviceId(99)],
                    groups: vec![],
                },
                ..FenceRules::default()
            },
        ),
        // Covers the whole route, assigned to group 10 (which the device is in).
        rect(
            6,
            12.9,
            13.2,
            FenceRules {
                applies_to: Scope {
                    devices: vec![],
                    groups: vec![GroupId(10)],
                },
                ..FenceRules::default()
            },
        ),
    ]
}

/// East along 52°N from 13.0005°E, 0.001° (68.5 m) every 10 s, plus noise the engine
/// must ignore.
fn route() -> Vec<Fix> {
    let mut fixes: Vec<Fix> = (0..100)
        .map(|k| {
            let speed = match k {
                35 => 70.0,
                36 => 80.0,
                37 => 75.0,
                38 => 60.0,
                39 => 55.0,
                _ => 30.0,
            };
            Fix::at(DEV, t(10 * k), 13.0005 + 0.001 * k as f64, LAT).with_speed(speed)
        })
        .collect();
    // Inside the depot: a no-fix report far away, a poor HDOP fix, a resend and an old fix.
    fixes.push(Fix {
        valid: false,
        ..Fix::at(DEV, t(85), 20.0, 10.0)
    });
    fixes.push(Fix {
        hdop: Some(25.0),
        ..Fix::at(DEV, t(86), 20.0, 10.0)
    });
    fixes.push(Fix {
        satellites: Some(2),
        ..Fix::at(DEV, t(87), 20.0, 10.0)
    });
    fixes
}

fn summary(events: &[Event]) -> Vec<(u64, EventTag, i64, i64)> {
    events
        .iter()
        .map(|e| {
            (
                e.fence.0,
                e.kind.tag(),
                (e.since - base()).num_seconds(),
                (e.time - base()).num_seconds(),
            )
        })
        .collect()
}

#[test]
fn golden_route() {
    let index = FenceIndex::build(route_fences()).unwrap();
    let mut engine = Engine::new(FixFilter::default());
    engine.set_groups(DEV, vec![GroupId(10)]);
    let mut events = Vec::new();
    let mut fixes = route();
    // Feed in time order, as a device would send them, then resend one old fix.
    fixes.sort_by_key(|f| f.time);
    for f in &fixes {
        let _ = engine.process(&index, f, &mut events);
    }
    assert_eq!(engine.process(&index, &fixes[7], &mut events), Err(Skip::OutOfOrder));

    use EventTag::*;
    let expected = vec![
        (6, Enter, 0, 0),
        (1, Enter, 50, 60),
        (1, Dwell, 50, 110),
        (1, Exit, 150, 150),
        (2, Enter, 300, 300),
        (2, OverspeedStart, 350, 370),
        (2, OverspeedEnd, 350, 400),
        (2, Exit, 600, 600),
        (3, Enter, 780, 810),
        (3, Exit, 820, 820),
        (4, Enter, 900, 900),
        (4, TimeWindowViolation, 900, 900),
        (4, Exit, 960, 960),
    ];
    assert_eq!(summary(&events), expected);

    let kinds: Vec<&EventKind> = events.iter().map(|e| &e.kind).collect();
    assert_eq!(kinds[2], &EventKind::Dwell { duration_s: 60 });
    assert_eq!(
        kinds[5],
        &EventKind::OverspeedStart {
            limit_kmh: 50.0,
            max_speed_kmh: 80.0
        }
    );
    assert_eq!(
        kinds[6],
        &EventKind::OverspeedEnd {
            limit_kmh: 50.0,
            max_speed_kmh: 80.0
        }
    );
    assert_eq!(kinds[11], &EventKind::TimeWindowViolation { window: 0 });
    // Each event carries the fix that triggered it.
    assert!(events.iter().all(|e| e.fix.time == e.time && e.device == DEV));
    assert_eq!(engine.stats().poor_fix, 3);
    assert_eq!(engine.stats().out_of_order, 1);
    assert_eq!(
        engine.device(DEV).unwrap().inside().collect::<Vec<_>>(),
        vec![FenceId(6)]
    );

    // The same fixes as one shuffled batch give the same events.
    let mut shuffled = route();
    shuffled.reverse();
    let mut engine2 = Engine::new(FixFilter::default());
    engine2.set_groups(DEV, vec![GroupId(10)]);
    let batch_events = engine2.process_batch(&index, &shuffled);
    assert_eq!(summary(&batch_events), expected);

    // Event keys are unique: replaying is idempotent downstream.
    let mut keys: Vec<_> = events.iter().map(Event::key).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), events.len());

    // Events serialise flat, with the kind as a tag.
    let json = serde_json::to_value(&events[5]).unwrap();
    assert_eq!(json["kind"], "overspeed_start");
    assert_eq!(json["max_speed_kmh"], 80.0);
    assert_eq!(json["fence"], 2);
}

#[test]
fn device_state_checkpoints_and_restores() {
    let index = FenceIndex::build(route_fences()).unwrap();
    let fixes = route();
    let (first, second) = fixes[..100].split_at(55);
    let mut a = Engine::default();
    let mut all = a.process_batch(&index, first);
    let saved = serde_json::to_string(a.device(DEV).unwrap()).unwrap();
    let mut b = Engine::default();
    b.restore(DEV, serde_json::from_str(&saved).unwrap());
    all.extend(b.process_batch(&index, second));

    let mut straight = Engine::default();
    assert_eq!(all, straight.process_batch(&index, &fixes[..100]));
}

#[test]
fn fence_swap_mid_stream() {
    let shared = SharedIndex::new(FenceIndex::build(route_fences()).unwrap());
    let mut engine = Engine::default();
    let fixes = route();
    let snap = shared.load();
    let mut events = engine.process_batch(&snap, &fixes[..8]);
    assert_eq!(summary(&events), vec![(1, EventTag::Enter, 50, 60)]);
    // The depot is deleted while the device is inside; a reader still holding the old
    // snapshot keeps working.
    let old = shared.store(FenceIndex::build(route_fences().into_iter().filter(|f| f.id() != FenceId(1))).unwrap());
    assert!(old.get(FenceId(1)).is_some());
    drop(snap);
    events.extend(engine.process_batch(&shared.load(), &fixes[8..20]));
    // No exit for a fence that no longer exists.
    assert_eq!(summary(&events), vec![(1, EventTag::Enter, 50, 60)]);
    assert_eq!(engine.device(DEV).unwrap().inside().count(), 0);
}

#[test]
fn consecutive_fix_server_would_flap_here() {
    // A device parked on the speed zone's west edge, GPS wandering ±12 m across it
    // every 10 s. The zone has default rules: 20 m hysteresis, enter on one fix.
    let index = FenceIndex::build(route_fences()).unwrap();
    let zone = index.get(FenceId(2)).unwrap();
    let edge = 13.030;
    let m = 1.0 / (111_195.0 * LAT.to_radians().cos());
    let fixes: Vec<Fix> = (0..60)
        .map(|k| {
            let off = if k % 2 == 0 { 12.0 } else { -12.0 };
            Fix::at(DEV, t(10 * k), edge + off * m, LAT)
        })
        .collect();
    let naive_flips = fixes
        .windows(2)
        .filter(|w| zone.contains(w[0].lon, w[0].lat) != zone.contains(w[1].lon, w[1].lat))
        .count();
    assert_eq!(naive_flips, 59);
    let events = Engine::default().process_batch(&index, &fixes);
    assert_eq!(summary(&events), vec![(2, EventTag::Enter, 0, 0)]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// A device creeping along a fence edge with jitter smaller than the hysteresis
    /// enters at most once and never exits; when it then drives away it exits once.
    #[test]
    fn no_flapping_under_jitter(
        hysteresis in 5.0..100.0f64,
        jitter_frac in 0.0..0.99f64,
        offsets in prop::collection::vec(-1.0..1.0f64, 20..300),
        enter_min_fixes in 1u32..4,
        exit_min_fixes in 1u32..4,
        enter_dwell_s in 0u32..30,
        exit_dwell_s in 0u32..30,
        step_s in 1i64..30,
        heading in 0usize..4,
    ) {
        // A 2 km square around (10°E, 50°N); walk along one of its four edges.
        let lat0: f64 = 50.0;
        let kx = 1.0 / (111_195.0 * lat0.to_radians().cos());
        let ky = 1.0 / 111_195.0;
        let h = 1000.0;
        let fence = Fence::new(
            FenceId(1),
            Shape::Polygon(polygon![
                (x: 10.0 - h * kx, y: lat0 - h * ky), (x: 10.0 + h * kx, y: lat0 - h * ky),
                (x: 10.0 + h * kx, y: lat0 + h * ky), (x: 10.0 - h * kx, y: lat0 + h * ky)
            ]),
            FenceRules { hysteresis_m: hysteresis, enter_min_fixes, exit_min_fixes, enter_dwell_s, exit_dwell_s, ..FenceRules::default() },
        ).unwrap();
        let index = FenceIndex::build([fence]).unwrap();
        let amp = hysteresis * jitter_frac;
        let n = offsets.len();
        let mut fixes: Vec<Fix> = offsets.iter().enumerate().map(|(i, o)| {
            // `along` runs the length of the edge; `out` is metres outside the edge.
            let along = -800.0 + 1600.0 * i as f64 / n as f64;
            let out = o * amp;
            let (dx, dy) = match heading {
                0 => (along, -h - out),  // south edge
                1 => (h + out, along),   // east edge
                2 => (along, h + out),   // north edge
                _ => (-h - out, along),  // west edge
            };
            Fix::at(DEV, t(step_s * i as i64), 10.0 + dx * kx, lat0 + dy * ky)
        }).collect();
        let events = Engine::default().process_batch(&index, &fixes);
        let enters = events.iter().filter(|e| e.kind == EventKind::Enter).count();
        let exits = events.iter().filter(|e| e.kind == EventKind::Exit).count();
        prop_assert!(enters <= 1, "{enters} enters");
        prop_assert_eq!(exits, 0);

        // Then drive 5 km away, slowly enough to satisfy any exit dwell.
        let last = fixes.last().unwrap().time;
        for j in 1..=10i64 {
            fixes.push(Fix::at(DEV, last + chrono::TimeDelta::seconds(10 * j), 10.0 + 5_000.0 * kx * j as f64 / 10.0 + 2.0 * h * kx, lat0 + 3.0 * h * ky));
        }
        let events = Engine::default().process_batch(&index, &fixes);
        let enters = events.iter().filter(|e| e.kind == EventKind::Enter).count();
        let exits = events.iter().filter(|e| e.kind == EventKind::Exit).count();
        prop_assert_eq!(exits, enters);
    }
}
