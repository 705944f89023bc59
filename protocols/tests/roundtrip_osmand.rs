//! OsmAnd device encoder (request targets and Transistorsoft JSON) → framing → decoder
//! gives back what was sent, for positions (batches too), OBD, alarm and fix-less reports.

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use protocols::osmand::OsmandDevice;
use protocols::{Alarm, DecodeContext, DeviceEncoder, Message, MessageKind, Position, Protocol, Transport, decode_all};

fn ctx() -> DecodeContext {
    DecodeContext {
        now: Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).single().expect("date"),
    }
}

fn decode(bytes: &[u8]) -> Vec<Message> {
    let mut codec = Protocol::Osmand.codec(Transport::Http).expect("codec");
    let (out, errors) = decode_all(codec.as_mut(), bytes, &ctx());
    assert!(errors.is_empty(), "{errors:?} for {}", String::from_utf8_lossy(bytes));
    out
}

fn time(ms_only: bool) -> impl Strategy<Value = DateTime<Utc>> {
    (0i64..4_102_444_799, 0u32..1_000_000_000, any::<bool>()).prop_map(move |(s, ns, whole)| {
        let ns = if whole {
            0
        } else if ms_only {
            ns / 1_000_000 * 1_000_000
        } else {
            ns
        };
        DateTime::from_timestamp(s, ns).expect("time")
    })
}

fn position(json: bool) -> impl Strategy<Value = Position> {
    (
        time(json),
        -90.0f64..=90.0,
        -180.0f64..=180.0,
        proptest::option::of(-400.0f64..9000.0),
        proptest::option::of(0.0f64..400.0),
        proptest::option::of(0.0f64..360.0),
        proptest::option::of(0.0f64..50.0),
        any::<bool>(),
        proptest::option::of(0.0f64..=100.0),
    )
        .prop_map(move |(t, lat, lon, alt, speed, course, hdop, valid, batt)| {
            let mut p = Position::new(t, lat, lon, valid || json);
            p.altitude_m = alt;
            p.speed_kmh = speed;
            p.course_deg = course;
            // JSON has no HDOP field.
            p.hdop = if json { None } else { hdop };
            p.attributes.battery_pct = batt;
            p
        })
}

fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * a.abs().max(1.0),
        _ => false,
    }
}

fn check(sent: &Position, got: &Position, json: bool) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.time, sent.time);
    // Query text is exact; serde_json's default float parser may be one ulp off.
    let tol = if json { 1e-12 } else { 0.0 };
    prop_assert!(
        (got.latitude - sent.latitude).abs() <= tol,
        "lat {} vs {}",
        got.latitude,
        sent.latitude
    );
    prop_assert!(
        (got.longitude - sent.longitude).abs() <= tol,
        "lon {} vs {}",
        got.longitude,
        sent.longitude
    );
    prop_assert_eq!(got.valid, sent.valid);
    prop_assert!(
        close(got.speed_kmh, sent.speed_kmh),
        "speed {:?} vs {:?}",
        got.speed_kmh,
        sent.speed_kmh
    );
    prop_assert!(close(got.course_deg, sent.course_deg));
    if json {
        prop_assert!(close(got.altitude_m, sent.altitude_m.or(Some(0.0))));
    } else {
        prop_assert!(close(got.altitude_m, sent.altitude_m));
        prop_assert!(close(got.hdop, sent.hdop));
    }
    prop_assert!(close(got.attributes.battery_pct, sent.attributes.battery_pct));
    Ok(())
}

fn encoder(json: bool) -> OsmandDevice {
    if json {
        OsmandDevice::json()
    } else {
        OsmandDevice::query()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn positions_query(id in "[A-Za-z0-9_-]([A-Za-z0-9 _-]{0,18}[A-Za-z0-9_-])?", ps in proptest::collection::vec(position(false), 1..5)) {
        let msg = Message::new(MessageKind::Position).with_imei(id.clone()).with_positions(ps.clone());
        let out = decode(&encoder(false).encode(&msg).expect("encode"));
        prop_assert_eq!(out.len(), ps.len());
        for (m, p) in out.iter().zip(&ps) {
            prop_assert_eq!(m.kind, MessageKind::Position);
            prop_assert_eq!(m.imei.as_deref(), Some(id.as_str()));
            check(p, &m.positions[0], false)?;
        }
    }

    #[test]
    fn positions_json(id in "[A-Za-z0-9_-]([A-Za-z0-9 _-]{0,18}[A-Za-z0-9_-])?", ps in proptest::collection::vec(position(true), 1..5)) {
        let msg = Message::new(MessageKind::Position).with_imei(id.clone()).with_positions(ps.clone());
        let out = decode(&encoder(true).encode(&msg).expect("encode"));
        prop_assert_eq!(out.len(), ps.len());
        for (m, p) in out.iter().zip(&ps) {
            prop_assert_eq!(m.kind, MessageKind::Position);
            prop_assert_eq!(m.imei.as_deref(), Some(id.as_str()));
            check(p, &m.positions[0], true)?;
        }
    }

    #[test]
    fn obd(json in any::<bool>(), mut p in position(false), rpm in 0.0f64..8000.0, fuel in 0.0f64..90.0, ign in any::<bool>()) {
        if json {
            p.hdop = None;
            p.valid = true;
            p.time = DateTime::from_timestamp_millis(p.time.timestamp_millis()).expect("time");
        }
        p.attributes.rpm = Some(rpm);
        p.attributes.fuel_level_l = Some(fuel);
        p.attributes.ignition = Some(ign);
        let msg = Message::new(MessageKind::Obd).with_imei("car-1").with_positions(vec![p.clone()]);
        let out = decode(&encoder(json).encode(&msg).expect("encode"));
        prop_assert_eq!(out.len(), 1);
        prop_assert_eq!(out[0].kind, MessageKind::Obd);
        let got = &out[0].positions[0];
        check(&p, got, json)?;
        prop_assert!(close(got.attributes.rpm, Some(rpm)));
        prop_assert!(close(got.attributes.fuel_level_l, Some(fuel)));
        prop_assert_eq!(got.attributes.ignition, Some(ign));
    }

    #[test]
    fn alarm(json in any::<bool>(), mut p in position(true)) {
        p.attributes.raise(Alarm::Sos);
        let msg = Message::new(MessageKind::Alarm).with_imei("a1").with_positions(vec![p.clone()]);
        let out = decode(&encoder(json).encode(&msg).expect("encode"));
        prop_assert_eq!(out[0].kind, MessageKind::Alarm);
        prop_assert_eq!(&out[0].positions[0].attributes.alarms, &vec![Alarm::Sos]);
        check(&p, &out[0].positions[0], json)?;
    }

    #[test]
    fn report_without_fix(json in any::<bool>(), batt in 0.0f64..=100.0) {
        let mut msg = Message::new(MessageKind::Heartbeat).with_imei("h1");
        msg.attributes.battery_pct = Some(batt);
        let out = decode(&encoder(json).encode(&msg).expect("encode"));
        prop_assert_eq!(out.len(), 1);
        prop_assert_eq!(out[0].kind, MessageKind::Other);
        prop_assert!(out[0].positions.is_empty());
        prop_assert!(close(out[0].attributes.battery_pct, Some(batt)));
    }
}

#[test]
fn login_is_not_an_osmand_message() {
    let msg = Message::new(MessageKind::Login).with_imei("1");
    assert!(OsmandDevice::query().encode(&msg).is_err());
}

/// Request targets of several encodes concatenate into a capture that splits again.
#[test]
fn concatenated_targets_split() {
    let mut enc = OsmandDevice::query();
    let p = Position::new(
        Utc.with_ymd_and_hms(2024, 5, 6, 7, 8, 9).single().expect("t"),
        1.5,
        2.5,
        true,
    );
    let mut bytes = Vec::new();
    for _ in 0..3 {
        let msg = Message::new(MessageKind::Position)
            .with_imei("d")
            .with_positions(vec![p.clone(), p.clone()]);
        bytes.extend(enc.encode(&msg).expect("encode"));
    }
    assert_eq!(decode(&bytes).len(), 6);
}
