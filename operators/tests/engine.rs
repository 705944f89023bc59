//! The pure engine: bad input, trips without ignition, idling, GPS-derived behaviour,
//! timers, detectors, and checkpoint/restore equivalence.

mod common;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use common::{at, drive, lon_east, row};
use operators::engine::Engine;
use operators::{Detection, OperatorEvent, OperatorsConfig, Plug, Sample};

fn engine() -> Engine {
    Engine::new(Arc::new(OperatorsConfig::default()))
}

fn kinds(ev: &[OperatorEvent]) -> Vec<&str> {
    ev.iter().map(|e| e.kind.as_str()).collect()
}

#[test]
fn out_of_order_duplicate_and_far_future_fixes() {
    let mut e = engine();
    let mut rows = drive(1, 0, 20, 0.0, 30.0, Some(true));
    rows.swap(3, 7);
    e.process(1, &rows);
    assert_eq!(e.stats().used, 20, "a batch out of order is sorted, not dropped");
    // Resent: every fix is a duplicate now.
    e.process(1, &rows);
    assert_eq!(e.stats().stale, 20);
    // A fix a day ahead of its arrival is a broken clock; it must not block later fixes.
    let mut future = row(1, 20, 54.69, 25.28, 30.0);
    future.fix_time = at(86_400);
    e.process(1, &[future]);
    assert_eq!(e.stats().future, 1);
    e.process(1, &drive(1, 20, 5, 170.0, 30.0, Some(true)));
    assert_eq!(e.stats().used, 25);
}

#[test]
fn teleports_do_not_count_and_a_confirmed_jump_reanchors() {
    let mut e = engine();
    let mut rows = drive(1, 0, 120, 0.0, 36.0, None);
    // One fix 50 km away, then back on track.
    rows[60].lat += 0.45;
    e.process(1, &rows);
    assert_eq!(e.stats().teleports, 1);
    let trip = e.device(1).unwrap().trips().trip().unwrap().clone();
    assert!((trip.path_m - 1190.0).abs() < 30.0, "path {}", trip.path_m);
    // The device really was moved (towed): two consistent fixes far away.
    let far: Vec<_> = (0..3)
        .map(|i| row(1, 200 + i, 55.5, 26.0 + i as f64 * 0.0001, 20.0))
        .collect();
    e.process(1, &far);
    assert_eq!(e.stats().teleports, 2, "only the first fix at the new place is doubted");
}

#[test]
fn trips_without_ignition_are_motion_based() {
    let mut e = engine();
    let mut rows = drive(1, 0, 300, 0.0, 40.0, None);
    let x = 40.0 / 3.6 * 300.0;
    rows.extend(drive(1, 300, 400, x, 0.0, None));
    // A short creep in a car park: too short to be a trip.
    rows.extend(drive(1, 700, 20, x, 10.0, None));
    rows.extend(drive(1, 720, 400, x + 55.0, 0.0, None));
    for r in &mut rows {
        r.odometer_m = None;
    }
    e.process(1, &rows);
    let out = e.take_output();
    let k = kinds(&out.events);
    assert_eq!(k.iter().filter(|k| **k == "trip_start").count(), 1, "{k:?}");
    assert_eq!(k.iter().filter(|k| **k == "trip_end").count(), 1, "{k:?}");
    let end = out.events.iter().find(|e| e.kind == "trip_end").unwrap();
    assert_eq!(end.time, at(300), "ends at the first standing fix");
    assert_eq!(end.attributes["distance_source"], "gps");
    assert!(!k.contains(&"idle"), "no ignition and no rpm: idling unknown");
}

#[test]
fn idling_with_engine_on() {
    let mut e = engine();
    let mut rows = drive(1, 0, 120, 0.0, 40.0, Some(true));
    let x = 40.0 / 3.6 * 120.0;
    rows.extend(drive(1, 120, 300, x, 0.0, Some(true)));
    rows.extend(drive(1, 420, 60, x, 40.0, Some(true)));
    e.process(1, &rows);
    let out = e.take_output();
    let idle = out.events.iter().find(|e| e.kind == "idle").expect("idle");
    assert_eq!(idle.time, at(120));
    assert_eq!(idle.end_time, Some(at(420)));
    assert_eq!(idle.magnitude, Some(300.0));
    let t = e.device(1).unwrap().trips().trip().unwrap();
    assert_eq!(t.idle_s, 300.0);
}

fn with_speeds(speeds: &[f32], sats: i16) -> Vec<store::PositionRow> {
    let mut x = 0.0;
    speeds
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            x += f64::from(v) / 3.6;
            let mut r = row(1, i as i64, 54.69, lon_east(x), v);
            r.satellites = Some(sats);
            r.ignition = Some(true);
            r
        })
        .collect()
}

#[test]
fn harsh_braking_from_gps_speed_with_quality_gating() {
    // 60 km/h, then -20 km/h per second (0.57 g) for 3 s, then steady.
    let mut speeds = vec![60.0; 10];
    speeds.extend([40.0, 20.0, 5.0]);
    speeds.extend([5.0; 10]);
    let mut e = engine();
    e.process(1, &with_speeds(&speeds, 9));
    let out = e.take_output();
    let hb: Vec<_> = out.events.iter().filter(|e| e.kind == "harsh_braking").collect();
    assert_eq!(hb.len(), 1, "{:?}", kinds(&out.events));
    assert_eq!(hb[0].attributes["source"], "gps");
    assert!(!kinds(&out.events).contains(&"harsh_acceleration"));
    // The same speeds from a receiver with 3 satellites prove nothing.
    let mut e = engine();
    e.process(1, &with_speeds(&speeds, 3));
    assert!(!kinds(&e.take_output().events).contains(&"harsh_braking"));
}

#[test]
fn accelerometer_episodes_need_duration_and_use_hysteresis() {
    let mut e = engine();
    let mut rows = drive(1, 0, 30, 0.0, 50.0, Some(true));
    // Braking at 0.5 g for 3 s, dipping to 0.40 g (above the 0.36 g hysteresis) mid-way.
    for (i, g) in [(10, -500), (11, -400), (12, -520), (20, 900)] {
        rows[i].attributes = Some(serde_json::json!({ "accel_mg": [g, 0, 1000] }));
    }
    for r in rows.iter_mut().filter(|r| r.attributes.is_none()) {
        r.attributes = Some(serde_json::json!({ "accel_mg": [0, 0, 1000] }));
    }
    e.process(1, &rows);
    let out = e.take_output();
    let hb: Vec<_> = out.events.iter().filter(|e| e.kind == "harsh_braking").collect();
    assert_eq!(hb.len(), 1, "{:?}", kinds(&out.events));
    assert_eq!(hb[0].time, at(10));
    assert_eq!(hb[0].end_time, Some(at(12)));
    assert_eq!(hb[0].magnitude, Some(0.52));
    let ha: Vec<_> = out.events.iter().filter(|e| e.kind == "harsh_acceleration").collect();
    assert_eq!(ha.len(), 1);
    assert_eq!(ha[0].severity.as_deref(), Some("high"));
}

#[test]
fn overspeed_has_a_minimum_duration_and_bands() {
    let mut speeds = vec![80.0; 5];
    speeds.extend([95.0; 2]); // 2 s: too short
    speeds.extend([80.0; 10]);
    speeds.extend([125.0; 20]); // 35 over: critical
    speeds.extend([80.0; 10]);
    let mut e = engine();
    e.process(1, &with_speeds(&speeds, 9));
    let out = e.take_output();
    let os: Vec<_> = out.events.iter().filter(|e| e.kind == "overspeed").collect();
    assert_eq!(os.len(), 1, "{:?}", os);
    assert_eq!(os[0].magnitude, Some(35.0));
    assert_eq!(os[0].severity.as_deref(), Some("critical"));
    assert_eq!(os[0].attributes["limit_kmh"], 90.0);
}

#[test]
fn online_offline_and_quiet_trip_end_from_timers() {
    let mut e = engine();
    e.process(1, &drive(1, 0, 300, 0.0, 40.0, Some(true)));
    let out = e.take_output();
    assert_eq!(out.events[0].kind, "device_online");
    e.tick(at(400));
    assert!(e.take_output().events.is_empty(), "not quiet long enough");
    e.tick(at(299 + 600));
    let k: Vec<String> = e.take_output().events.into_iter().map(|e| e.kind).collect();
    assert!(k.contains(&"device_offline".to_string()), "{k:?}");
    assert!(k.contains(&"trip_end".to_string()), "{k:?}");
    e.process(1, &drive(1, 2000, 5, 0.0, 0.0, Some(false)));
    assert_eq!(e.take_output().events[0].kind, "device_online");
}

/// A detector in the `analytics` shape: counts samples, flags a low battery once.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct LowBattery {
    seen: u64,
    low_since: Option<DateTime<Utc>>,
}

impl LowBattery {
    fn push(&mut self, s: &Sample, out: &mut Vec<Detection>) {
        self.seen += 1;
        if s.battery_v.is_some_and(|v| v < 11.5) && self.low_since.is_none() {
            self.low_since = Some(s.time);
            out.push(Detection {
                kind: "low_battery".into(),
                time: s.time,
                end_time: None,
                magnitude: s.battery_v,
                severity: Some("medium".into()),
                lat: Some(s.lat),
                lon: Some(s.lon),
                attributes: serde_json::json!({}),
            });
        }
    }
    fn tick(&mut self, _now: DateTime<Utc>, _out: &mut Vec<Detection>) {}
}

#[test]
fn detectors_plug_in_and_checkpoint_with_the_device() {
    let factory: operators::DetectorFactory = Arc::new(|_| {
        vec![Box::new(Plug::new(
            "battery",
            LowBattery::default(),
            LowBattery::push,
            LowBattery::tick,
        ))]
    });
    let mut e = engine();
    e.set_detectors(factory.clone());
    let mut rows = drive(1, 0, 10, 0.0, 0.0, Some(false));
    rows[5].battery_v = Some(11.0);
    e.process(1, &rows);
    assert!(kinds(&e.take_output().events).contains(&"low_battery"));
    let parts = e.take_dirty();
    let snap: Vec<Vec<u8>> = parts.iter().map(|p| e.snapshot(*p)).collect();
    let mut e2 = engine();
    e2.set_detectors(factory);
    for s in &snap {
        e2.restore(s).unwrap();
    }
    let mut more = drive(1, 10, 5, 0.0, 0.0, Some(false));
    more[0].battery_v = Some(11.0);
    e2.process(1, &more);
    let k = kinds(&e2.take_output().events)
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>();
    assert!(
        !k.contains(&"low_battery".to_string()),
        "restored state remembers the alert: {k:?}"
    );
}

#[test]
fn a_restored_engine_emits_what_an_uninterrupted_one_does() {
    let mut rows = drive(1, 0, 400, 0.0, 50.0, Some(true));
    for (i, r) in rows.iter_mut().enumerate() {
        let g = if (100..103).contains(&i) { -500 } else { 0 };
        r.attributes = Some(serde_json::json!({ "accel_mg": [g, 0, 1000] }));
    }
    rows.extend(drive(1, 400, 200, 50.0 / 3.6 * 400.0, 0.0, Some(false)));
    let mut whole = engine();
    whole.process(1, &rows);
    let mut expect = whole.take_output().events;

    let mut a = engine();
    a.process(1, &rows[..101]);
    let mut got = a.take_output().events;
    let snaps: Vec<Vec<u8>> = a.take_dirty().iter().map(|p| a.snapshot(*p)).collect();
    let mut b = engine();
    for s in &snaps {
        b.restore(s).unwrap();
    }
    // Replay overlaps what `a` already saw: the cursor skips it.
    b.process(1, &rows[50..]);
    got.extend(b.take_output().events);
    let key = |e: &OperatorEvent| (e.kind.clone(), e.time);
    // JSON checkpoints keep coordinates to ~1e-15 relative, not to the last bit.
    let round = |v: &mut Vec<OperatorEvent>| {
        for e in v.iter_mut() {
            e.lat = e.lat.map(|x| (x * 1e9).round() / 1e9);
            e.lon = e.lon.map(|x| (x * 1e9).round() / 1e9);
        }
    };
    round(&mut expect);
    round(&mut got);
    expect.sort_by_key(key);
    got.sort_by_key(key);
    assert_eq!(got, expect);
    assert!(got.iter().any(|e| e.kind == "harsh_braking"));
}
