//! GPS103 round trips: device encoder → framing → decoder gives back what was encoded
//! (within wire precision): login, heartbeat, positions, alarm keywords, OBD reports;
//! streams cut anywhere; and mutated sentences never panic.

mod common;

use chrono::{DateTime, TimeZone, Utc};
use common::{ctx, mutate};
use proptest::prelude::*;
use protocols::{Alarm, Framing, IoValue, Message, MessageKind, Position, Protocol, Transport, decode_all};

fn time() -> impl Strategy<Value = DateTime<Utc>> {
    (946_684_800i64..4_102_444_799).prop_map(|s| Utc.timestamp_opt(s, 0).single().expect("in range"))
}

prop_compose! {
    fn fix()(t in time(), lat in -89.9f64..89.9, lon in -179.9f64..179.9, speed in 0.0f64..300.0,
             course in 0.0f64..359.9, valid in any::<bool>(), ignition in proptest::option::of(any::<bool>()),
             altitude in proptest::option::of(-400.0f64..9000.0)) -> Position {
        let mut p = Position::new(t, lat, lon, valid);
        p.speed_kmh = Some(speed);
        p.course_deg = Some(course);
        p.altitude_m = altitude;
        p.attributes.ignition = ignition;
        p
    }
}

fn imei() -> impl Strategy<Value = String> {
    "[0-9]{15}"
}

fn encode(msg: &Message) -> Vec<u8> {
    let mut dev = Protocol::Gps103.device_encoder(Transport::Tcp).expect("device");
    dev.encode(msg).unwrap_or_else(|e| panic!("{e} for {msg:?}"))
}

fn decode(bytes: &[u8]) -> Vec<Message> {
    let mut codec = Protocol::Gps103.codec(Transport::Tcp).expect("codec");
    let (messages, errors) = decode_all(codec.as_mut(), bytes, &ctx());
    assert!(
        errors.is_empty(),
        "errors {errors:?} for {:?}",
        String::from_utf8_lossy(bytes)
    );
    messages
}

fn same_fix(a: &Position, b: &Position) -> Result<(), TestCaseError> {
    prop_assert_eq!(a.time, b.time);
    prop_assert!(
        (a.latitude - b.latitude).abs() < 2e-7,
        "lat {} vs {}",
        a.latitude,
        b.latitude
    );
    prop_assert!(
        (a.longitude - b.longitude).abs() < 2e-7,
        "lon {} vs {}",
        a.longitude,
        b.longitude
    );
    prop_assert_eq!(a.valid, b.valid);
    let (sa, sb) = (a.speed_kmh.unwrap_or(0.0), b.speed_kmh.unwrap_or(-1.0));
    prop_assert!((sa - sb).abs() <= 0.011, "speed {} vs {}", sa, sb);
    let (ca, cb) = (a.course_deg.unwrap_or(0.0), b.course_deg.unwrap_or(-1.0));
    let diff = (ca - cb).rem_euclid(360.0);
    prop_assert!(diff.min(360.0 - diff) <= 0.006, "course {} vs {}", ca, cb);
    match (a.altitude_m, b.altitude_m) {
        (Some(x), Some(y)) => prop_assert!((x - y).abs() <= 0.051, "altitude {} vs {}", x, y),
        (x, y) => prop_assert_eq!(x, y),
    }
    prop_assert_eq!(a.attributes.ignition, b.attributes.ignition);
    Ok(())
}

fn ops() -> impl Strategy<Value = Vec<(usize, bool, Vec<u8>)>> {
    common::text_mutations(b";")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn login_and_heartbeat(imei in imei()) {
        let got = decode(&encode(&Message::new(MessageKind::Login).with_imei(imei.clone())));
        prop_assert_eq!(got[0].kind, MessageKind::Login);
        prop_assert_eq!(got[0].imei.as_deref(), Some(imei.as_str()));
        prop_assert_eq!(got[0].ack.as_deref(), Some(&b"LOAD"[..]));
        let got = decode(&encode(&Message::new(MessageKind::Heartbeat).with_imei(imei.clone())));
        prop_assert_eq!(got[0].kind, MessageKind::Heartbeat);
        prop_assert_eq!(got[0].imei.as_deref(), Some(imei.as_str()));
        prop_assert_eq!(got[0].ack.as_deref(), Some(&b"ON"[..]));
    }

    #[test]
    fn positions(imei in imei(), fixes in proptest::collection::vec(fix(), 1..4)) {
        let msg = Message::new(MessageKind::Position).with_imei(imei.clone()).with_positions(fixes.clone());
        let got = decode(&encode(&msg));
        prop_assert_eq!(got.len(), fixes.len());
        for (m, p) in got.iter().zip(&fixes) {
            prop_assert_eq!(m.kind, MessageKind::Position);
            prop_assert_eq!(m.imei.as_deref(), Some(imei.as_str()));
            same_fix(p, &m.positions[0])?;
        }
    }

    #[test]
    fn alarms(imei in imei(), p in fix(), alarm in prop_oneof![
        Just(Alarm::Sos), Just(Alarm::LowBattery), Just(Alarm::Geofence), Just(Alarm::Movement),
        Just(Alarm::Overspeed), Just(Alarm::Door), Just(Alarm::PowerCut), Just(Alarm::Accident),
        Just(Alarm::Vibration), Just(Alarm::Fault), Just(Alarm::FuelLeak),
        Just(Alarm::Other("bonnet".into())), Just(Alarm::Other("footBrake".into()))],
        dtcs in proptest::collection::vec("P[0-3][0-9A-F]{3}", 0..3)) {
        let mut p = p;
        if alarm == Alarm::Fault {
            p.attributes.dtcs = dtcs.clone();
        }
        let mut msg = Message::new(MessageKind::Alarm).with_imei(imei.clone()).with_positions(vec![p.clone()]);
        msg.attributes.raise(alarm.clone());
        let got = decode(&encode(&msg));
        prop_assert_eq!(got[0].kind, MessageKind::Alarm);
        let a = &got[0].positions[0].attributes;
        prop_assert_eq!(&a.alarms, &vec![alarm.clone()]);
        same_fix(&p, &got[0].positions[0])?;
        if alarm == Alarm::Sos {
            let want = format!("**,imei:{imei},E;");
            prop_assert_eq!(got[0].ack.as_deref(), Some(want.as_bytes()));
        }
        if alarm == Alarm::Fault {
            prop_assert_eq!(&a.dtcs, &dtcs);
        }
    }

    #[test]
    fn obd(imei in imei(), t in time(), odometer in proptest::option::of(0u32..10_000_000),
           hours in proptest::option::of(0u32..100_000), speed in 0u32..250, load in 0.0f64..100.0,
           coolant in proptest::option::of(-40i32..130), throttle in 0.0f64..100.0, rpm in 0u32..9000,
           battery in 0.0f64..16.0, dtcs in proptest::collection::vec("[PCBU][0-3][0-9A-F]{3}", 0..4)) {
        let mut msg = Message::new(MessageKind::Obd).with_imei(imei.clone());
        let a = &mut msg.attributes;
        a.io.push_name("time", IoValue::Text(t.to_rfc3339()));
        a.odometer_m = odometer.map(f64::from);
        a.engine_hours = hours.map(f64::from);
        a.obd_speed_kmh = Some(f64::from(speed));
        a.engine_load_pct = Some((load * 100.0).round() / 100.0);
        a.coolant_c = coolant.map(f64::from);
        a.throttle_pct = Some((throttle * 100.0).round() / 100.0);
        a.rpm = Some(f64::from(rpm));
        a.power_v = Some((battery * 100.0).round() / 100.0);
        a.dtcs = dtcs.clone();
        let got = decode(&encode(&msg));
        let a = &msg.attributes;
        prop_assert_eq!(got[0].kind, MessageKind::Obd);
        let b = &got[0].attributes;
        prop_assert_eq!(b.odometer_m, a.odometer_m);
        prop_assert_eq!(b.engine_hours, a.engine_hours);
        prop_assert_eq!(b.obd_speed_kmh, a.obd_speed_kmh);
        prop_assert_eq!(b.engine_load_pct, a.engine_load_pct);
        prop_assert_eq!(b.coolant_c, a.coolant_c);
        prop_assert_eq!(b.throttle_pct, a.throttle_pct);
        prop_assert_eq!(b.rpm, a.rpm);
        prop_assert_eq!(b.power_v, a.power_v);
        prop_assert_eq!(&b.dtcs, &dtcs);
        let want_time = t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        prop_assert_eq!(b.io.get_name("time"), Some(&IoValue::Text(want_time)));
    }

    #[test]
    fn stream_cut_anywhere(imei in imei(), fixes in proptest::collection::vec(fix(), 1..5),
                           cuts in proptest::collection::vec(1usize..60, 0..30)) {
        let mut stream = encode(&Message::new(MessageKind::Login).with_imei(imei.clone()));
        for p in &fixes {
            stream.extend(encode(&Message::new(MessageKind::Position).with_imei(imei.clone()).with_positions(vec![p.clone()])));
            stream.extend_from_slice(b"\r\n");
        }
        stream.extend(encode(&Message::new(MessageKind::Heartbeat).with_imei(imei.clone())));
        let whole = decode(&stream);
        prop_assert_eq!(whole.len(), fixes.len() + 2);
        let mut codec = Protocol::Gps103.codec(Transport::Tcp).expect("codec");
        let streamed = common::decode_in_chunks(codec.as_mut(), &stream, &cuts);
        prop_assert_eq!(whole, streamed);
    }

    #[test]
    fn mutated_sentences_never_panic(p in fix(), which in 0u8..3, ops in ops(), cut in any::<usize>()) {
        let imei = "359710049092324";
        let msg = match which {
            0 => Message::new(MessageKind::Position).with_imei(imei).with_positions(vec![p]),
            1 => {
                let mut m = Message::new(MessageKind::Obd).with_imei(imei).with_positions(vec![p]);
                m.attributes.dtcs = vec!["P0137".into()];
                m
            }
            _ => Message::new(MessageKind::Login).with_imei(imei),
        };
        let bytes = mutate(encode(&msg), &ops, cut);
        let mut codec = Protocol::Gps103.codec(Transport::Tcp).expect("codec");
        let _ = decode_all(codec.as_mut(), &bytes, &ctx());
        let _ = codec.decode(&bytes, &ctx());
    }
}

#[test]
fn framing() {
    let codec = Protocol::Gps103.codec(Transport::Tcp).unwrap();
    assert_eq!(
        codec.frame(b"##,imei:359586015829802,A;", false),
        Framing::Frame { start: 0, end: 26 }
    );
    assert_eq!(
        codec.frame(b"\r\n359586015829802;", false),
        Framing::Frame { start: 2, end: 18 }
    );
    // No terminator yet: wait; at the end of the input the rest is the sentence.
    assert_eq!(codec.frame(b"imei:359586015829802,tracker", false), Framing::Incomplete);
    assert_eq!(
        codec.frame(b"imei:359586015829802,tracker", true),
        Framing::Frame { start: 0, end: 28 }
    );
    // A line break ends a sentence too (and is not part of it).
    assert_eq!(
        codec.frame(b"359586015829802\r\nimei:", false),
        Framing::Frame { start: 0, end: 15 }
    );
}

#[test]
fn command_responses_are_not_gps103_messages() {
    let mut dev = Protocol::Gps103.device_encoder(Transport::Tcp).unwrap();
    let mut m = Message::new(MessageKind::CommandResponse).with_imei("359586015829802");
    m.result = Some("ok".into());
    assert!(dev.encode(&m).is_err());
    assert!(dev.encode(&Message::new(MessageKind::Login).with_imei("abc")).is_err());
    // An OBD report needs a time.
    assert!(
        dev.encode(&Message::new(MessageKind::Obd).with_imei("359586015829802"))
            .is_err()
    );
}
