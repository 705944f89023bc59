//! Bad input: stuck and flapping fuel sensors, out-of-order and duplicated samples,
//! missing tank size, negative and absurd values; plus DTC, service and battery rules.

mod common;

use analytics::fuel::{FuelConfig, FuelDetector, FuelSource, TripFuel};
use analytics::maintenance::{
    BatteryConfig, BatteryDetector, DtcConfig, DtcDetector, ServiceConfig, ServiceDueDetector, ServicePlan,
};
use analytics::{Detection, Sample};
use chrono::{DateTime, Duration, TimeZone, Utc};
use common::{Lcg, TANK_L, fuel_scenario};

fn t(s: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 5, 1, 8, 0, 0).unwrap() + Duration::seconds(s)
}

fn fuel(cfg: FuelConfig) -> FuelDetector {
    FuelDetector::new(cfg).unwrap()
}

fn tank() -> FuelConfig {
    FuelConfig {
        tank_l: Some(TANK_L),
        ..FuelConfig::default()
    }
}

fn run(d: &mut FuelDetector, samples: &[Sample]) -> Vec<Detection> {
    let mut out = Vec::new();
    for s in samples {
        d.push(s, &mut out);
    }
    out
}

/// A parked car read every 30 s: level(i) in litres, with noise σ `noise`.
fn parked(n: usize, level: impl Fn(usize) -> f64, noise: f64, seed: u64) -> Vec<Sample> {
    let mut r = Lcg(seed);
    (0..n)
        .map(|i| {
            // Sum of uniforms ≈ normal, σ = noise.
            let e: f64 = (0..12).map(|_| r.next_f64()).sum::<f64>() - 6.0;
            Sample {
                time: t(i as i64 * 30),
                lat: 54.7,
                lon: 25.3,
                valid: true,
                speed_kmh: Some(0.0),
                ignition: Some(false),
                fuel_level_l: Some(level(i) + noise * e),
                ..Sample::default()
            }
        })
        .collect()
}

#[test]
fn sudden_theft_and_refuel_while_parked() {
    let s = parked(
        200,
        |i| {
            if i < 60 {
                40.0
            } else if i < 130 {
                25.0
            } else {
                50.0
            }
        },
        1.0,
        1,
    );
    let out = run(&mut fuel(tank()), &s);
    let kinds: Vec<_> = out
        .iter()
        .map(|d| (d.kind.as_str(), d.time, d.magnitude.unwrap()))
        .collect();
    assert_eq!(kinds.len(), 2, "{out:#?}");
    assert_eq!(kinds[0].0, "fuel_theft");
    assert_eq!(kinds[0].1, t(60 * 30));
    assert!((kinds[0].2 - 15.0).abs() < 1.5, "{kinds:?}");
    assert_eq!(kinds[1].0, "refuel");
    assert_eq!(kinds[1].1, t(130 * 30));
    assert!((kinds[1].2 - 25.0).abs() < 1.5, "{kinds:?}");
}

#[test]
fn slow_drain_has_a_span() {
    // 12 L over 40 minutes (80 samples), parked.
    let s = parked(
        300,
        |i| 45.0 - 12.0 * ((i as f64 - 60.0) / 80.0).clamp(0.0, 1.0),
        0.8,
        2,
    );
    let out = run(&mut fuel(tank()), &s);
    assert_eq!(out.len(), 1, "{out:#?}");
    let d = &out[0];
    assert_eq!(d.kind, "fuel_theft");
    assert_eq!(d.attributes["drain"], "slow");
    let (start, end) = (d.time, d.end_time.unwrap());
    assert!((start - t(60 * 30)).num_seconds().abs() <= 300, "start {start}");
    assert!((end - t(140 * 30)).num_seconds().abs() <= 300, "end {end}");
    assert!((d.magnitude.unwrap() - 12.0).abs() < 1.5);
}

#[test]
fn replay_gives_the_same_times_and_checkpoints_round_trip() {
    let (samples, _) = fuel_scenario(7, 4.0, 10.0);
    let mut a = fuel(tank());
    let full = run(&mut a, &samples);
    assert!(!full.is_empty());
    // Checkpoint halfway through, restore, feed the rest plus the replayed overlap.
    let mut b = fuel(tank());
    let half = samples.len() / 2;
    let mut out = run(&mut b, &samples[..half]);
    let saved = serde_json::to_string(&b).unwrap();
    let mut c: FuelDetector = serde_json::from_str(&saved).unwrap();
    out.extend(run(&mut c, &samples[half - 100..]));
    assert_eq!(c.dropped, 100, "replayed samples are dropped as out of order");
    assert_eq!(out, full);
}

#[test]
fn duplicated_and_out_of_order_samples_are_dropped() {
    let s = parked(200, |i| if i < 60 { 40.0 } else { 25.0 }, 1.0, 3);
    let mut shuffled = Vec::new();
    for (i, x) in s.iter().enumerate() {
        shuffled.push(x.clone());
        if i % 7 == 0 {
            shuffled.push(x.clone());
        }
        if i % 11 == 0 && i > 5 {
            shuffled.push(s[i - 5].clone());
        }
    }
    let mut d = fuel(tank());
    let out = run(&mut d, &shuffled);
    assert_eq!(run(&mut fuel(tank()), &s), out);
    assert!(d.dropped > 40);
}

#[test]
fn stuck_sensor_is_a_fault_and_hides_the_theft() {
    // Driving with the engine burning fuel while the level never changes, then a "drop"
    // when it unsticks: a fault, not a theft.
    let mut s = Vec::new();
    for i in 0..240 {
        s.push(Sample {
            time: t(i * 30),
            valid: true,
            lat: 54.7,
            lon: 25.3 + i as f64 * 0.004,
            speed_kmh: Some(50.0),
            ignition: Some(true),
            fuel_used_l: Some(i as f64 * 0.05),
            fuel_level_l: Some(if i < 200 { 42.0 } else { 30.0 }),
            ..Sample::default()
        });
    }
    let out = run(&mut fuel(tank()), &s);
    assert!(
        out.iter()
            .any(|d| d.kind == "fuel_sensor_fault" && d.attributes["reason"] == "stuck"),
        "{out:#?}"
    );
    assert!(!out.iter().any(|d| d.kind == "fuel_theft"), "{out:#?}");
    let fault = out.iter().find(|d| d.kind == "fuel_sensor_fault").unwrap();
    assert_eq!(fault.time, t(0), "the fault starts at the first stuck reading");
}

#[test]
fn flapping_sensor_is_a_fault_without_theft_or_refuel() {
    let s = parked(300, |i| if (i / 3) % 2 == 0 { 40.0 } else { 20.0 }, 0.3, 4);
    let out = run(&mut fuel(tank()), &s);
    assert_eq!(
        out.iter().filter(|d| d.kind == "fuel_sensor_fault").count(),
        1,
        "{out:#?}"
    );
    assert!(out.iter().all(|d| d.kind == "fuel_sensor_fault"), "{out:#?}");
    assert_eq!(out[0].attributes["reason"], "flapping");
}

#[test]
fn negative_absurd_and_nan_values_never_panic_or_alarm() {
    let mut s = parked(200, |_| 40.0, 0.5, 5);
    for (i, x) in s.iter_mut().enumerate() {
        match i % 10 {
            3 => x.fuel_level_l = Some(-5.0),
            5 => x.fuel_level_l = Some(f64::NAN),
            7 => x.fuel_level_pct = Some(1e12),
            _ => {}
        }
        if i % 13 == 0 {
            x.speed_kmh = Some(f64::INFINITY);
            x.fuel_used_l = Some(-1.0);
            x.odometer_m = Some(f64::NAN);
            x.lat = 1000.0;
        }
    }
    let mut d = fuel(tank());
    let out = run(&mut d, &s);
    assert!(
        !out.iter().any(|d| d.kind == "fuel_theft" || d.kind == "refuel"),
        "{out:#?}"
    );
    assert!(d.rejected_levels >= 20);
    let json = serde_json::to_string(&d).unwrap();
    assert!(!json.contains("NaN"));
    // Mostly garbage: out-of-range is a sensor fault.
    let mut g = parked(60, |_| 40.0, 0.5, 6);
    for x in g.iter_mut().skip(20) {
        x.fuel_level_l = Some(500.0);
    }
    let out = run(&mut fuel(tank()), &g);
    assert!(out.iter().any(|d| d.attributes["reason"] == "out_of_range"), "{out:#?}");
}

#[test]
fn missing_tank_size_works_in_percent() {
    let mut s = parked(200, |i| if i < 60 { 70.0 } else { 45.0 }, 1.0, 7);
    for x in &mut s {
        x.fuel_level_pct = x.fuel_level_l.take();
    }
    let out = run(&mut fuel(FuelConfig::default()), &s);
    assert_eq!(out.len(), 1, "{out:#?}");
    assert_eq!(out[0].kind, "fuel_theft");
    assert_eq!(out[0].magnitude, None, "no litres without a tank size");
    assert_eq!(out[0].attributes["tank_size_unknown"], true);
    assert!((out[0].attributes["percent"].as_f64().unwrap() - 25.0).abs() < 2.0);
    // With the tank size the same readings give litres.
    let out = run(&mut fuel(tank()), &s);
    assert!((out[0].magnitude.unwrap() - 15.0).abs() < 1.5, "{out:#?}");
    // Bad configs are refused with every problem listed.
    let e = FuelDetector::new(FuelConfig {
        tank_l: Some(-3.0),
        noise_k: f64::NAN,
        ..FuelConfig::default()
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("tank_l") && e.contains("noise_k"), "{e}");
}

#[test]
fn trip_consumption_never_goes_negative_across_refuels() {
    let mut trip = TripFuel::new(3.0);
    // Level-only device: 40 L → refuel to 55 L mid-trip → 50 L at the end, 20 km.
    for i in 0..120 {
        let level = if i < 60 {
            40.0 - i as f64 * 0.05
        } else {
            55.0 - (i - 60) as f64 * 0.08
        };
        trip.push(
            &Sample {
                time: t(i * 30),
                odometer_m: Some(100_000.0 + i as f64 * 170.0),
                speed_kmh: Some(40.0),
                ignition: Some(true),
                fuel_level_l: Some(level),
                ..Sample::default()
            },
            None,
        );
    }
    trip.refuelled_l = 18.0;
    let r = trip.finish().unwrap();
    assert_eq!(r.source, FuelSource::Level);
    assert!(r.litres > 0.0 && r.litres < 10.0, "{r:?}");
    assert!((r.distance_km - 20.23).abs() < 0.1);
    // Counter device with a counter reset: the reset is skipped, not subtracted.
    let mut trip = TripFuel::new(3.0);
    for i in 0..100 {
        let used = if i < 50 {
            1000.0 + i as f64 * 0.02
        } else {
            (i - 50) as f64 * 0.02
        };
        trip.push(
            &Sample {
                time: t(i * 30),
                speed_kmh: Some(0.0),
                ignition: Some(true),
                fuel_used_l: Some(used),
                fuel_rate_lph: Some(2.4),
                ..Sample::default()
            },
            None,
        );
    }
    let r = trip.finish().unwrap();
    assert_eq!(r.source, FuelSource::Counter);
    assert!((r.litres - 1.96).abs() < 0.05, "{r:?}");
    assert!((r.idle_lph.unwrap() - 2.4).abs() < 0.1, "{r:?}");
    assert_eq!(r.l_per_100km, None);
}

#[test]
fn consumption_anomaly_against_own_baseline() {
    let mut d = fuel(tank());
    let mut out = Vec::new();
    let mut clock = 0i64;
    // 15 normal trips of ~10 L/100 km, then one of 16 L/100 km.
    for trip in 0..16 {
        let l100 = if trip == 15 {
            16.0
        } else {
            10.0 + (trip % 3) as f64 * 0.4
        };
        for i in 0..=60 {
            d.push(
                &Sample {
                    time: t(clock),
                    ignition: Some(i < 60),
                    speed_kmh: Some(if i < 60 { 60.0 } else { 0.0 }),
                    odometer_m: Some(trip as f64 * 100_000.0 + i as f64 * 500.0),
                    fuel_used_l: Some(trip as f64 * 100.0 + i as f64 * 0.5 * l100 / 100.0),
                    ..Sample::default()
                },
                &mut out,
            );
            clock += 30;
        }
        clock += 3600;
    }
    let anomalies: Vec<_> = out.iter().filter(|d| d.kind == "fuel_consumption_anomaly").collect();
    assert_eq!(anomalies.len(), 1, "{out:#?}");
    assert_eq!(anomalies[0].attributes["direction"], "high");
    assert!((anomalies[0].magnitude.unwrap() - 16.0).abs() < 0.5);
    assert!((d.last_trip.as_ref().unwrap().distance_km - 30.0).abs() < 0.1);
}

fn dtc(time: i64, codes: &[&str]) -> Sample {
    Sample {
        time: t(time),
        dtcs: Some(codes.iter().map(|c| c.to_string()).collect()),
        ..Sample::default()
    }
}

#[test]
fn dtcs_raise_debounce_and_clear() {
    let mut d = DtcDetector::new(DtcConfig::default());
    let mut out = Vec::new();
    let seq = [
        dtc(0, &[]),
        dtc(10, &["p0301 ", "P0420", "garbage", "P0301"]),
        dtc(20, &["P0301"]),          // P0420 absent once
        dtc(30, &["P0301", "P0420"]), // back: no clear
        dtc(40, &[]),
        dtc(45, &[]),
        dtc(50, &[]), // third absence: both cleared, at 40
    ];
    for s in &seq {
        d.push(s, &mut out);
    }
    d.push(&dtc(5, &["P0171"]), &mut out); // out of order: dropped
    d.push(
        &Sample {
            time: t(60),
            ..Sample::default()
        },
        &mut out,
    ); // no list: no news
    let summary: Vec<_> = out
        .iter()
        .map(|e| {
            (
                e.kind.as_str(),
                e.attributes["code"].as_str().unwrap().to_owned(),
                e.time,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("dtc_raised", "P0301".to_owned(), t(10)),
            ("dtc_raised", "P0420".to_owned(), t(10)),
            ("dtc_cleared", "P0301".to_owned(), t(40)),
            ("dtc_cleared", "P0420".to_owned(), t(40)),
        ]
    );
    assert_eq!(out[0].attributes["description"], "Cylinder 1 misfire detected");
    assert_eq!(out[0].severity.as_deref(), Some("high"));
    assert_eq!(d.invalid_codes, 1);
    assert_eq!(d.dropped, 1);
    // Time-based clearing: one absent list, then one 10 minutes later.
    let mut d = DtcDetector::new(DtcConfig {
        clear_samples: 100,
        clear_after_s: 300.0,
    });
    let mut out = Vec::new();
    for s in [dtc(0, &["U0100"]), dtc(60, &[]), dtc(660, &[])] {
        d.push(&s, &mut out);
    }
    assert_eq!(out.last().unwrap().kind, "dtc_cleared");
    assert_eq!(out.last().unwrap().time, t(60));
}

#[test]
fn service_due_once_per_occurrence() {
    let plan = ServicePlan {
        id: 1,
        name: "oil".into(),
        every_km: Some(10_000.0),
        every_engine_hours: Some(250.0),
        every_days: Some(365),
        last_done_at: Some(t(0)),
        last_done_km: Some(50_000.0),
        last_done_engine_h: Some(1000.0),
        created_at: None,
    };
    let mut d = ServiceDueDetector::new(ServiceConfig::default(), vec![plan.clone()]).unwrap();
    let mut out = Vec::new();
    let sample = |day: i64, km: f64, h: f64| Sample {
        time: t(day * 86_400),
        odometer_m: Some(km * 1000.0),
        engine_hours: Some(h),
        ..Sample::default()
    };
    for (day, km) in [
        (1, 55_000.0),
        (10, 58_999.0),
        (11, 59_000.0),
        (12, 59_500.0),
        (13, 60_000.0),
        (14, 60_100.0),
    ] {
        d.push(&sample(day, km, 1100.0), &mut out);
    }
    d.push(&sample(15, 20.0, 1100.0), &mut out); // odometer glitch: ignored
    let stages: Vec<_> = out
        .iter()
        .map(|e| (e.kind.as_str(), e.time, e.attributes["stage"].as_str().unwrap()))
        .collect();
    assert_eq!(
        stages,
        vec![
            ("service_due_soon", t(11 * 86_400), "warning"),
            ("service_due", t(13 * 86_400), "due")
        ]
    );
    // Engine hours running out later in the same cycle do not make it due again.
    let n = out.len();
    d.push(&sample(16, 60_200.0, 1260.0), &mut out);
    assert_eq!(out.len(), n, "{:#?}", &out[n..]);
    // Overdue one interval later.
    d.push(&sample(40, 70_000.0, 1260.0), &mut out);
    assert_eq!(out.last().unwrap().attributes["stage"], "overdue");
    assert_eq!(out.last().unwrap().severity.as_deref(), Some("high"));
    assert_eq!(out.len(), n + 1);

    // Calendar alone: a tick past the interval gives the due instant, not the tick's time.
    let cal_plan = ServicePlan {
        id: 2,
        name: "inspection".into(),
        every_km: None,
        every_engine_hours: None,
        every_days: Some(365),
        last_done_at: Some(t(0)),
        last_done_km: None,
        last_done_engine_h: None,
        created_at: None,
    };
    let mut d = ServiceDueDetector::new(ServiceConfig::default(), vec![cal_plan]).unwrap();
    let mut out = Vec::new();
    d.push(&sample(1, 1.0, 1.0), &mut out);
    d.tick(t(400 * 86_400), &mut out);
    assert_eq!(out.len(), 1, "one event when jumping past warning and due: {out:#?}");
    assert_eq!(out[0].kind, "service_due");
    assert_eq!(out[0].time, t(365 * 86_400), "the due instant, not the tick's time");
    assert_eq!(out[0].attributes["triggers"][0]["trigger"], "days");
    d.tick(t(401 * 86_400), &mut out);
    assert_eq!(out.len(), 1);

    // A recorded service starts a new cycle.
    let mut d = ServiceDueDetector::new(ServiceConfig::default(), vec![plan.clone()]).unwrap();
    let mut out = Vec::new();
    d.push(&sample(40, 70_000.0, 1100.0), &mut out);
    assert_eq!(out.len(), 1);
    let serviced = ServicePlan {
        last_done_km: Some(70_000.0),
        last_done_at: Some(t(40 * 86_400)),
        ..plan
    };
    d.set_plans(vec![serviced]).unwrap();
    d.push(&sample(41, 70_100.0, 1100.0), &mut out);
    assert_eq!(out.len(), 1);
    // Bad plans are refused.
    let bad = ServicePlan {
        id: 2,
        name: "x".into(),
        every_km: None,
        every_engine_hours: None,
        every_days: None,
        last_done_at: None,
        last_done_km: None,
        last_done_engine_h: None,
        created_at: None,
    };
    assert!(ServiceDueDetector::new(ServiceConfig::default(), vec![bad]).is_err());
}

fn volts(time: i64, v: f64, ign: Option<bool>) -> Sample {
    Sample {
        time: t(time),
        power_v: Some(v),
        ignition: ign,
        ..Sample::default()
    }
}

#[test]
fn low_battery_hysteresis_engine_off_on_and_24v() {
    let mut d = BatteryDetector::new(BatteryConfig::default()).unwrap();
    let mut out = Vec::new();
    // Engine off, sagging: 12.4 → 11.7 for 5 minutes, bouncing in the band, recovering.
    let seq = [
        12.4, 12.2, 11.8, 11.7, 11.7, 11.9, 11.7, 11.6, 12.0, 12.1, 12.4, 11.8, 11.7, 11.7, 11.7, 11.7,
    ];
    for (i, v) in seq.iter().enumerate() {
        d.push(&volts(i as i64 * 60, *v, Some(false)), &mut out);
    }
    assert_eq!(out.len(), 2, "{out:#?}");
    assert_eq!(out[0].time, t(120));
    assert_eq!(out[0].attributes["engine"], "off");
    assert_eq!(
        out[1].time,
        t(11 * 60),
        "a new episode after the voltage recovered past 12.3"
    );
    // Engine on and not charging (12.5 V for minutes), after the cranking dip is ignored.
    let mut d = BatteryDetector::new(BatteryConfig::default()).unwrap();
    let mut out = Vec::new();
    d.push(&volts(0, 9.5, Some(true)), &mut out); // cranking
    for i in 1..10 {
        d.push(&volts(i * 60, 12.5, Some(true)), &mut out);
    }
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].attributes["reason"], "not_charging");
    // 24 V truck resting at 25.2 V is fine; at 23.2 V it is low.
    let mut d = BatteryDetector::new(BatteryConfig::default()).unwrap();
    let mut out = Vec::new();
    for i in 0..5 {
        d.push(&volts(i * 60, 25.2, Some(false)), &mut out);
    }
    assert!(out.is_empty());
    for i in 5..12 {
        d.push(&volts(i * 60, 23.2, Some(false)), &mut out);
    }
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].attributes["system_v"], 24.0);
    // Absurd and disconnected readings are ignored.
    let mut d = BatteryDetector::new(BatteryConfig::default()).unwrap();
    let mut out = Vec::new();
    for (i, v) in [f64::NAN, -3.0, 0.0, 1e9, 0.1, 0.2, 0.1, 0.1].iter().enumerate() {
        d.push(&volts(i as i64 * 60, *v, None), &mut out);
    }
    assert!(out.is_empty(), "{out:#?}");
}
