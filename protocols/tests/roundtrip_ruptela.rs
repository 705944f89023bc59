//! Ruptela round trips: `RuptelaDevice` encodes, the codec frames and decodes, and the values
//! come back within wire precision, for every kind the protocol carries (identification,
//! heartbeat, cmd-1 and cmd-68 record batches, DTCs, command replies).

// The shared harness is not ours to reformat.
#[rustfmt::skip]
mod common;

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use protocols::{Alarm, Attributes, DecodeError, IoValue, Message, MessageKind, Position, Protocol, Transport};

const IMEI: &str = "868324023580306";

fn decode(bytes: &[u8]) -> (Vec<Message>, Vec<DecodeError>) {
    let mut codec = Protocol::Ruptela.codec(Transport::Tcp).unwrap();
    protocols::decode_all(codec.as_mut(), bytes, &common::ctx())
}

fn encode(msg: &Message) -> Vec<u8> {
    let mut dev = Protocol::Ruptela.device_encoder(Transport::Tcp).unwrap();
    dev.encode(msg).expect("encode")
}

fn time_strategy() -> impl Strategy<Value = DateTime<Utc>> {
    (0i64..u32::MAX as i64).prop_map(|s| Utc.timestamp_opt(s, 0).single().unwrap())
}

fn close(a: Option<f64>, b: Option<f64>, tol: f64) -> bool {
    match (a, b) {
        (Some(x), Some(y)) => (x - y).abs() <= tol,
        (None, None) => true,
        _ => false,
    }
}

prop_compose! {
    fn fix()(time in time_strategy(), lat in -900_000_000i32..900_000_000, lon in -1_800_000_000i32..1_800_000_000,
             alt in 0u16..60000, course in 0u16..36000, sats in 0u8..40, speed in 0u16..400, hdop in 0u8..255,
             event in 0u32..256, ignition in proptest::option::of(any::<bool>()),
             power_mv in proptest::option::of(0u32..40_000), battery_mv in proptest::option::of(0u32..5_000),
             odo in proptest::option::of(0u32..4_000_000_000), rpm8 in proptest::option::of(0u32..64_000),
             fuel in proptest::option::of(0u32..250), fuel_used in proptest::option::of(0u32..1_000_000),
             raw_io in proptest::collection::vec((140u32..150, any::<u32>()), 0..4))
        -> Position {
        let mut p = Position::new(time, f64::from(lat) / 1e7, f64::from(lon) / 1e7, true);
        p.altitude_m = Some(f64::from(alt) / 10.0);
        p.course_deg = Some(f64::from(course) / 100.0);
        p.satellites = Some(sats);
        p.speed_kmh = Some(f64::from(speed));
        p.hdop = Some(f64::from(hdop) / 10.0);
        let mut a = Attributes {
            event: Some(event),
            ignition,
            power_v: power_mv.map(|v| f64::from(v) / 1000.0),
            battery_v: battery_mv.map(|v| f64::from(v) / 1000.0),
            odometer_m: odo.map(f64::from),
            rpm: rpm8.map(|v| f64::from(v) / 8.0),
            fuel_level_pct: fuel.map(|v| f64::from(v) * 0.4),
            fuel_used_l: fuel_used.map(|v| f64::from(v) * 0.5),
            ..Attributes::default()
        };
        // Unmapped ids travel raw; the last value of a repeated id wins.
        let mut seen = std::collections::BTreeMap::new();
        for (id, v) in raw_io {
            seen.insert(id, u64::from(v));
        }
        for (id, v) in seen {
            a.io.push_id(id, IoValue::U64(v));
        }
        p.attributes = a;
        p
    }
}

fn same_record(got: &Position, want: &Position) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.time, want.time);
    prop_assert!((got.latitude - want.latitude).abs() < 1e-7);
    prop_assert!((got.longitude - want.longitude).abs() < 1e-7);
    prop_assert_eq!(got.valid, want.valid);
    prop_assert!(close(got.altitude_m, want.altitude_m, 0.05));
    prop_assert!(close(got.course_deg, want.course_deg, 0.005));
    prop_assert_eq!(got.satellites, want.satellites);
    prop_assert!(close(got.speed_kmh, want.speed_kmh, 0.5));
    prop_assert!(close(got.hdop, want.hdop, 0.05));
    let (a, w) = (&got.attributes, &want.attributes);
    prop_assert_eq!(a.event, w.event);
    prop_assert_eq!(a.ignition, w.ignition);
    prop_assert!(close(a.power_v, w.power_v, 0.0005));
    prop_assert!(close(a.battery_v, w.battery_v, 0.0005));
    prop_assert!(close(a.odometer_m, w.odometer_m, 0.5));
    prop_assert!(close(a.rpm, w.rpm, 0.0625), "rpm {:?} vs {:?}", a.rpm, w.rpm);
    prop_assert!(close(a.fuel_level_pct, w.fuel_level_pct, 0.2));
    prop_assert!(close(a.fuel_used_l, w.fuel_used_l, 0.25));
    for (k, v) in &w.io.0 {
        if let protocols::IoKey::Id(id) = k {
            prop_assert_eq!(a.io.get_id(*id), Some(v), "io {}", id);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 150, ..ProptestConfig::default() })]

    #[test]
    fn records_cmd1(fixes in proptest::collection::vec(fix(), 1..120)) {
        let msg = Message::new(MessageKind::Position).with_imei(IMEI).with_positions(fixes.clone());
        let bytes = encode(&msg);
        let (out, errors) = decode(&bytes);
        prop_assert!(errors.is_empty(), "{:?}", errors);
        prop_assert!(out.iter().all(|m| m.kind == MessageKind::Position && m.imei.as_deref() == Some(IMEI)));
        // Every id and event fits a byte: the compact cmd-1 layout.
        prop_assert!(out.iter().all(|m| m.message_type.as_deref() == Some("1")));
        let got: Vec<&Position> = out.iter().flat_map(|m| m.positions.iter()).collect();
        prop_assert_eq!(got.len(), fixes.len());
        for (g, w) in got.iter().zip(&fixes) {
            same_record(g, w)?;
        }
        for m in &out {
            prop_assert_eq!(m.ack.as_deref(), Some(&[0x00, 0x02, 0x64, 0x01, 0x13, 0xBC][..]));
        }
    }

    #[test]
    fn records_cmd68_with_alarms(fixes in proptest::collection::vec(fix(), 1..20), event in 256u32..65536,
                                 alarm in prop_oneof![Just(Alarm::Tow), Just(Alarm::Accident), Just(Alarm::Tampering),
                                                      Just(Alarm::HardBraking), Just(Alarm::HardAcceleration),
                                                      Just(Alarm::Jamming)]) {
        let mut fixes = fixes;
        for f in &mut fixes {
            f.attributes.event = Some(event);
            f.attributes.alarms = vec![alarm.clone()];
            f.attributes.motion = Some(true);
        }
        let msg = Message::new(MessageKind::Alarm).with_imei(IMEI).with_positions(fixes.clone());
        let (out, errors) = decode(&encode(&msg));
        prop_assert!(errors.is_empty(), "{:?}", errors);
        prop_assert!(out.iter().all(|m| m.message_type.as_deref() == Some("68")));
        let got: Vec<&Position> = out.iter().flat_map(|m| m.positions.iter()).collect();
        prop_assert_eq!(got.len(), fixes.len());
        for (g, w) in got.iter().zip(&fixes) {
            same_record(g, w)?;
            prop_assert!(g.attributes.alarms.contains(&alarm));
            prop_assert_eq!(g.attributes.motion, Some(true));
        }
    }
}

#[test]
fn invalid_fix_reuses_last_known() {
    let t = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).single().unwrap();
    let good = Position::new(t, 54.5, 25.25, true);
    let bad = Position::new(t + chrono::Duration::seconds(30), 0.0, 0.0, false);
    let msg = Message::new(MessageKind::Position)
        .with_imei(IMEI)
        .with_positions(vec![good, bad]);
    let (out, errors) = decode(&encode(&msg));
    assert!(errors.is_empty(), "{errors:?}");
    let p = &out[0].positions[1];
    assert!(!p.valid);
    assert_eq!((p.latitude, p.longitude), (54.5, 25.25));
}

#[test]
fn identification_round_trip() {
    let mut msg = Message::new(MessageKind::Login).with_imei(IMEI);
    msg.attributes
        .io
        .push_name("version", IoValue::Text("FMP400.01.08.00".into()));
    msg.attributes
        .io
        .push_name("imsi", IoValue::Text("214074206785173".into()));
    let (out, errors) = decode(&encode(&msg));
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(out[0].kind, MessageKind::Login);
    assert_eq!(out[0].imei.as_deref(), Some(IMEI));
    assert_eq!(
        out[0].attributes.io.get_name("version"),
        Some(&IoValue::Text("FMP400.01.08.00".into()))
    );
    assert_eq!(
        out[0].attributes.io.get_name("imsi"),
        Some(&IoValue::Text("214074206785173".into()))
    );
    assert_eq!(hex::encode(out[0].ack.as_ref().unwrap()), "00027301cb25");
}

#[test]
fn heartbeat_round_trip() {
    let msg = Message::new(MessageKind::Heartbeat).with_imei(IMEI);
    let (out, errors) = decode(&encode(&msg));
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(out[0].kind, MessageKind::Heartbeat);
    assert_eq!(out[0].imei.as_deref(), Some(IMEI));
    assert_eq!(hex::encode(out[0].ack.as_ref().unwrap()), "00027401862d");
}

#[test]
fn dtc_round_trip() {
    let t = Utc.with_ymd_and_hms(2011, 10, 17, 22, 52, 28).single().unwrap();
    let mut p1 = Position::new(t, 43.755129, 13.1467505, true);
    p1.attributes.dtcs = vec!["P0010".into()];
    let mut p2 = p1.clone();
    p2.attributes.dtcs = vec!["P0011".into(), "C1234".into()];
    let msg = Message::new(MessageKind::Obd)
        .with_imei(IMEI)
        .with_positions(vec![p1, p2]);
    let (out, errors) = decode(&encode(&msg));
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(out[0].kind, MessageKind::Obd);
    assert_eq!(out[0].attributes.dtcs, vec!["P0010", "P0011", "C1234"]);
    assert_eq!(out[0].positions.len(), 3);
    assert!((out[0].positions[0].latitude - 43.755129).abs() < 1e-7);
    assert_eq!(hex::encode(out[0].ack.as_ref().unwrap()), "00026d01c4a4");
    // Message-level codes without a fix still make a DTC frame.
    let mut bare = Message::new(MessageKind::Obd).with_imei(IMEI);
    bare.attributes.dtcs = vec!["U0100".into()];
    let (out, errors) = decode(&encode(&bare));
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(out[0].attributes.dtcs, vec!["U0100"]);
}

#[test]
fn obd_values_go_as_records() {
    let t = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).single().unwrap();
    let mut p = Position::new(t, 1.0, 2.0, true);
    p.attributes.rpm = Some(1800.0);
    p.attributes.obd_speed_kmh = Some(88.0);
    p.attributes.engine_load_pct = Some(40.0);
    p.attributes.fuel_rate_lph = Some(7.5);
    p.attributes.trip_odometer_m = Some(12_345.0);
    let msg = Message::new(MessageKind::Obd).with_imei(IMEI).with_positions(vec![p]);
    let (out, errors) = decode(&encode(&msg));
    assert!(errors.is_empty(), "{errors:?}");
    let a = &out[0].positions[0].attributes;
    assert_eq!(a.rpm, Some(1800.0));
    assert_eq!(a.obd_speed_kmh, Some(88.0));
    assert_eq!(a.engine_load_pct, Some(40.0));
    assert_eq!(a.fuel_rate_lph, Some(7.5));
    assert_eq!(a.trip_odometer_m, Some(12_345.0));
}

#[test]
fn command_response_round_trip() {
    for (ty, result) in [
        (None, "SETIO configuration data ok"),
        (Some("3"), "FMPro4 v1.2"),
        (Some("17"), "1"),
    ] {
        let mut msg = Message::new(MessageKind::CommandResponse).with_imei(IMEI);
        if let Some(t) = ty {
            msg = msg.with_type(t);
        }
        msg.result = Some(result.to_owned());
        let (out, errors) = decode(&encode(&msg));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(out[0].kind, MessageKind::CommandResponse);
        assert_eq!(out[0].result.as_deref(), Some(result));
        assert_eq!(out[0].message_type.as_deref(), Some(ty.unwrap_or("7")));
    }
}

/// Re-seal a mutated device frame (length and CRC) so decoding reaches the record parser.
fn reseal(mut body: Vec<u8>) -> Vec<u8> {
    body.truncate(4090);
    let mut out = ((body.len()) as u16).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    let crc = protocols::checksum::crc16_kermit(&body);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// The public uplink vectors, read once.
fn uplink_frames() -> &'static [Vec<u8>] {
    static FRAMES: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    FRAMES.get_or_init(|| {
        common::load("ruptela")
            .into_iter()
            .filter(|v| v.direction == "uplink")
            .map(|v| v.bytes)
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Valid-CRC frames with corrupted contents decode or fail with a typed error, never panic.
    #[test]
    fn sealed_garbage_never_panics(which in 0usize..6, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..12),
                                   cut in any::<usize>()) {
        let vectors = uplink_frames();
        let frame = &vectors[which % vectors.len()];
        let mut body = frame[2..frame.len().saturating_sub(2).max(2)].to_vec();
        for (pos, byte) in flips {
            if !body.is_empty() {
                let i = pos % body.len();
                body[i] = byte;
            }
        }
        if body.len() > 9 {
            body.truncate(9 + cut % (body.len() - 8));
        }
        let _ = decode(&reseal(body));
    }
}
