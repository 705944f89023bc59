//! TK103 round trips: device encoder → framing → decoder gives back what was encoded
//! (within wire precision) for the classic 12-character-id form and the comma form:
//! login, positions, heartbeat, alarms, command responses; streams cut anywhere; and
//! mutated frames never panic.

mod common;

use chrono::{DateTime, TimeZone, Utc};
use common::{ctx, mutate};
use proptest::prelude::*;
use protocols::{Alarm, Framing, Message, MessageKind, Position, Protocol, Transport, decode_all};

fn time() -> impl Strategy<Value = DateTime<Utc>> {
    (946_684_800i64..4_102_444_799).prop_map(|s| Utc.timestamp_opt(s, 0).single().expect("in range"))
}

prop_compose! {
    fn fix()(t in time(), lat in -89.9f64..89.9, lon in -179.9f64..179.9, speed in 0.0f64..999.0,
             course in 0.0f64..359.9, valid in any::<bool>(), ignition in any::<bool>(),
             odometer in 0u32..4_000_000_000) -> Position {
        let mut p = Position::new(t, lat, lon, valid);
        p.speed_kmh = Some(speed);
        p.course_deg = Some(course);
        p.attributes.ignition = Some(ignition);
        p.attributes.odometer_m = Some(f64::from(odometer));
        p
    }
}

fn classic_id() -> impl Strategy<Value = String> {
    "[0-9]{12}"
}

fn comma_id() -> impl Strategy<Value = String> {
    "[0-9]{15}"
}

fn encode(msg: &Message) -> Vec<u8> {
    let mut dev = Protocol::Tk103.device_encoder(Transport::Tcp).expect("device");
    dev.encode(msg).unwrap_or_else(|e| panic!("{e} for {msg:?}"))
}

fn decode(bytes: &[u8]) -> Vec<Message> {
    let mut codec = Protocol::Tk103.codec(Transport::Tcp).expect("codec");
    let (messages, errors) = decode_all(codec.as_mut(), bytes, &ctx());
    assert!(
        errors.is_empty(),
        "errors {errors:?} for {:?}",
        String::from_utf8_lossy(bytes)
    );
    messages
}

/// Classic payloads carry ignition and odometer; the comma form does not.
fn same_fix(a: &Position, b: &Position, classic: bool) -> Result<(), TestCaseError> {
    prop_assert_eq!(a.time, b.time);
    prop_assert!(
        (a.latitude - b.latitude).abs() < 2e-6,
        "lat {} vs {}",
        a.latitude,
        b.latitude
    );
    prop_assert!(
        (a.longitude - b.longitude).abs() < 2e-6,
        "lon {} vs {}",
        a.longitude,
        b.longitude
    );
    prop_assert_eq!(a.valid, b.valid);
    let (sa, sb) = (a.speed_kmh.unwrap_or(0.0), b.speed_kmh.unwrap_or(-1.0));
    prop_assert!((sa - sb).abs() <= 0.051, "speed {} vs {}", sa, sb);
    let (ca, cb) = (a.course_deg.unwrap_or(0.0), b.course_deg.unwrap_or(-1.0));
    let diff = (ca - cb).rem_euclid(360.0);
    prop_assert!(diff.min(360.0 - diff) <= 0.006, "course {} vs {}", ca, cb);
    if classic {
        prop_assert_eq!(a.attributes.ignition, b.attributes.ignition);
        prop_assert_eq!(a.attributes.odometer_m, b.attributes.odometer_m);
    }
    Ok(())
}

fn ops() -> impl Strategy<Value = Vec<(usize, bool, Vec<u8>)>> {
    common::text_mutations(b")")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn classic_positions(id in classic_id(), fixes in proptest::collection::vec(fix(), 1..4)) {
        let msg = Message::new(MessageKind::Position).with_imei(id.clone()).with_positions(fixes.clone());
        let got = decode(&encode(&msg));
        prop_assert_eq!(got.len(), fixes.len());
        for (m, p) in got.iter().zip(&fixes) {
            prop_assert_eq!(m.imei.as_deref(), Some(id.as_str()));
            prop_assert_eq!(m.kind, MessageKind::Position);
            prop_assert_eq!(m.message_type.as_deref(), Some("BR00"));
            prop_assert!(m.ack.is_none());
            same_fix(p, &m.positions[0], true)?;
        }
    }

    #[test]
    fn comma_positions(id in comma_id(), fixes in proptest::collection::vec(fix(), 1..4)) {
        let msg = Message::new(MessageKind::Position).with_imei(id.clone()).with_positions(fixes.clone());
        let got = decode(&encode(&msg));
        prop_assert_eq!(got.len(), fixes.len());
        for (m, p) in got.iter().zip(&fixes) {
            prop_assert_eq!(m.imei.as_deref(), Some(id.as_str()));
            prop_assert_eq!(m.kind, MessageKind::Position);
            same_fix(p, &m.positions[0], false)?;
        }
    }

    #[test]
    fn login(classic in any::<bool>(), cid in classic_id(), mid in comma_id(), p in proptest::option::of(fix())) {
        let id = if classic { cid } else { mid };
        let msg = Message::new(MessageKind::Login).with_imei(id.clone()).with_positions(p.iter().cloned().collect());
        let got = decode(&encode(&msg));
        prop_assert_eq!(got.len(), 1);
        prop_assert_eq!(got[0].kind, MessageKind::Login);
        prop_assert_eq!(got[0].imei.as_deref(), Some(id.as_str()));
        if classic {
            let want = format!("({id}AP05)");
            prop_assert_eq!(got[0].ack.as_deref(), Some(want.as_bytes()));
        }
        if let Some(p) = &p {
            same_fix(p, &got[0].positions[0], classic)?;
        }
    }

    #[test]
    fn heartbeat(id in classic_id()) {
        let got = decode(&encode(&Message::new(MessageKind::Heartbeat).with_imei(id.clone())));
        prop_assert_eq!(got[0].kind, MessageKind::Heartbeat);
        let want = format!("({id}AP01HSO)");
        prop_assert_eq!(got[0].ack.as_deref(), Some(want.as_bytes()));
    }

    #[test]
    fn classic_alarms(id in classic_id(), p in fix(), alarm in prop_oneof![
        Just(Alarm::Accident), Just(Alarm::Sos), Just(Alarm::Vibration), Just(Alarm::LowSpeed),
        Just(Alarm::Overspeed), Just(Alarm::GeofenceExit), Just(Alarm::LowBattery), Just(Alarm::Idle),
        Just(Alarm::HardAcceleration), Just(Alarm::HardBraking), Just(Alarm::Temperature)]) {
        let mut msg = Message::new(MessageKind::Alarm).with_imei(id).with_positions(vec![p.clone()]);
        msg.attributes.raise(alarm.clone());
        let got = decode(&encode(&msg));
        prop_assert_eq!(got[0].kind, MessageKind::Alarm);
        prop_assert_eq!(&got[0].positions[0].attributes.alarms, &vec![alarm]);
        same_fix(&p, &got[0].positions[0], true)?;
    }

    #[test]
    fn comma_alarms(id in comma_id(), p in fix(), alarm in prop_oneof![
        Just(Alarm::Movement), Just(Alarm::LowBattery), Just(Alarm::PowerCut), Just(Alarm::Removing),
        Just(Alarm::Sos), Just(Alarm::Tampering), Just(Alarm::LowPower)]) {
        let mut msg = Message::new(MessageKind::Alarm).with_imei(id).with_positions(vec![p.clone()]);
        msg.attributes.raise(alarm.clone());
        let got = decode(&encode(&msg));
        prop_assert_eq!(got[0].kind, MessageKind::Alarm);
        prop_assert_eq!(&got[0].positions[0].attributes.alarms, &vec![alarm]);
    }

    #[test]
    fn command_response(id in comma_id(), text in "[ -#%-'*-~]{0,60}") {
        let mut msg = Message::new(MessageKind::CommandResponse).with_imei(id);
        msg.result = Some(text.clone());
        let got = decode(&encode(&msg));
        prop_assert_eq!(got[0].kind, MessageKind::CommandResponse);
        prop_assert_eq!(got[0].result.as_deref(), Some(text.as_str()));
    }

    #[test]
    fn stream_cut_anywhere(id in classic_id(), fixes in proptest::collection::vec(fix(), 1..5),
                           cuts in proptest::collection::vec(1usize..60, 0..30)) {
        let mut stream = Vec::new();
        for p in &fixes {
            stream.extend(encode(&Message::new(MessageKind::Position).with_imei(id.clone()).with_positions(vec![p.clone()])));
            stream.extend_from_slice(b"\r\n");
        }
        let whole = decode(&stream);
        prop_assert_eq!(whole.len(), fixes.len());
        let mut codec = Protocol::Tk103.codec(Transport::Tcp).expect("codec");
        let streamed = common::decode_in_chunks(codec.as_mut(), &stream, &cuts);
        prop_assert_eq!(whole, streamed);
    }

    #[test]
    fn mutated_frames_never_panic(p in fix(), classic in any::<bool>(), ops in ops(), cut in any::<usize>()) {
        let id = if classic { "027044702512" } else { "864768011069660" };
        let mut bytes = encode(&Message::new(MessageKind::Position).with_imei(id).with_positions(vec![p]));
        bytes = mutate(bytes, &ops, cut);
        let mut codec = Protocol::Tk103.codec(Transport::Tcp).expect("codec");
        let _ = decode_all(codec.as_mut(), &bytes, &ctx());
        let _ = codec.decode(&bytes, &ctx());
    }
}

#[test]
fn free_text_may_hold_parentheses() {
    let codec = Protocol::Tk103.codec(Transport::Tcp).unwrap();
    let frame = b"(864555555555555,ZC03,191117,234207,$Interval (minutes): 5$)(087073005534BP00HSO)";
    assert_eq!(codec.frame(frame, false), Framing::Frame { start: 0, end: 60 });
    // A frame cut short by the next one is dropped up to the next '('.
    assert!(matches!(
        codec.frame(b"(0870730055(087073005534BP00HSO)", false),
        Framing::Resync { discard: 11, .. }
    ));
    assert!(matches!(
        codec.frame(b"xx(087073005534BP00HSO)", false),
        Framing::Resync { discard: 2, .. }
    ));
    assert_eq!(codec.frame(b"(087073005534BP0", false), Framing::Incomplete);
}

#[test]
fn unsupported_kinds_are_errors() {
    let mut dev = Protocol::Tk103.device_encoder(Transport::Tcp).unwrap();
    assert!(
        dev.encode(&Message::new(MessageKind::Obd).with_imei("027044702512"))
            .is_err()
    );
    assert!(
        dev.encode(&Message::new(MessageKind::Heartbeat).with_imei("864768011069660"))
            .is_err()
    );
    assert!(
        dev.encode(&Message::new(MessageKind::Position).with_imei("bad,id"))
            .is_err()
    );
}
