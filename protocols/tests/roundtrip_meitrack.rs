//! Meitrack round trips: `MeitrackDevice` encodes, the codec frames and decodes, and the values
//! come back within wire precision, for every kind the protocol carries (AAA position, alarm,
//! heartbeat, CCE batches incl. OBD values, command replies).

// The shared harness is not ours to reformat.
#[rustfmt::skip]
mod common;

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use protocols::{Alarm, Attributes, DecodeError, IoValue, Message, MessageKind, Position, Protocol, Transport};

const IMEI: &str = "864507031245110";

fn decode(bytes: &[u8]) -> (Vec<Message>, Vec<DecodeError>) {
    let mut codec = Protocol::Meitrack.codec(Transport::Tcp).unwrap();
    protocols::decode_all(codec.as_mut(), bytes, &common::ctx())
}

fn encode(msg: &Message) -> Vec<u8> {
    let mut dev = Protocol::Meitrack.device_encoder(Transport::Tcp).unwrap();
    dev.encode(msg).expect("encode")
}

fn time_strategy() -> impl Strategy<Value = DateTime<Utc>> {
    // 2000-01-01 .. 2099-12-31, whole seconds.
    (946_684_800i64..4_102_444_799).prop_map(|s| Utc.timestamp_opt(s, 0).single().unwrap())
}

fn round_to(v: f64, step: f64) -> f64 {
    (v / step).round() * step
}

prop_compose! {
    fn fix()(time in time_strategy(), lat in -90.0f64..90.0, lon in -180.0f64..180.0, valid: bool,
             sats in 0u8..40, speed in 0u16..300, course in 0u16..360, hdop in 0u16..500,
             alt in -400i32..9000, odo in 0u32..2_000_000_000, rssi in 0i32..32,
             // The decimal analog form carries battery and power together.
             volts in proptest::option::of((0u32..1000, 0u32..4000)),
             fuel in proptest::option::of(0u32..10_000))
        -> Position {
        let mut p = Position::new(time, round_to(lat, 1e-6), round_to(lon, 1e-6), valid);
        p.satellites = Some(sats);
        p.speed_kmh = Some(f64::from(speed));
        p.course_deg = Some(f64::from(course));
        p.hdop = Some(f64::from(hdop) / 10.0);
        p.altitude_m = Some(f64::from(alt));
        p.attributes = Attributes {
            odometer_m: Some(f64::from(odo)),
            rssi: Some(rssi),
            battery_v: volts.map(|(b, _)| f64::from(b) / 100.0),
            power_v: volts.map(|(_, p)| f64::from(p) / 100.0),
            fuel_level_pct: fuel.map(|f| f64::from(f) / 100.0),
            ..Attributes::default()
        };
        p
    }
}

fn close(a: Option<f64>, b: Option<f64>, tol: f64) -> bool {
    match (a, b) {
        (Some(x), Some(y)) => (x - y).abs() <= tol,
        (None, None) => true,
        _ => false,
    }
}

fn same_fix(ours: &Position, want: &Position) -> Result<(), TestCaseError> {
    prop_assert_eq!(ours.time, want.time);
    prop_assert!(
        (ours.latitude - want.latitude).abs() < 1e-6,
        "lat {} vs {}",
        ours.latitude,
        want.latitude
    );
    prop_assert!(
        (ours.longitude - want.longitude).abs() < 1e-6,
        "lon {} vs {}",
        ours.longitude,
        want.longitude
    );
    prop_assert_eq!(ours.valid, want.valid);
    prop_assert_eq!(ours.satellites, want.satellites);
    prop_assert!(close(ours.speed_kmh, want.speed_kmh, 0.5));
    prop_assert!(close(ours.course_deg, want.course_deg, 0.5));
    prop_assert!(close(ours.hdop, want.hdop, 0.05));
    prop_assert!(close(ours.altitude_m, want.altitude_m, 0.5));
    let (a, w) = (&ours.attributes, &want.attributes);
    prop_assert!(close(a.odometer_m, w.odometer_m, 0.5));
    prop_assert_eq!(a.rssi, w.rssi);
    prop_assert!(
        close(a.battery_v, w.battery_v, 0.005),
        "battery {:?} vs {:?}",
        a.battery_v,
        w.battery_v
    );
    prop_assert!(close(a.power_v, w.power_v, 0.005));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn aaa_position(p in fix(), event in prop_oneof![Just(35u32), Just(2), Just(29), Just(109)]) {
        let mut p = p;
        p.attributes.event = Some(event);
        let msg = Message::new(MessageKind::Position).with_imei(IMEI).with_positions(vec![p.clone()]);
        let (out, errors) = decode(&encode(&msg));
        prop_assert!(errors.is_empty(), "{:?}", errors);
        prop_assert_eq!(out.len(), 1);
        prop_assert_eq!(out[0].kind, MessageKind::Position);
        prop_assert_eq!(out[0].imei.as_deref(), Some(IMEI));
        prop_assert_eq!(out[0].message_type.as_deref(), Some("AAA"));
        let got = &out[0].positions[0];
        same_fix(got, &p)?;
        prop_assert_eq!(got.attributes.event, Some(event));
        prop_assert!(close(got.attributes.fuel_level_pct, p.attributes.fuel_level_pct, 0.005));
        prop_assert!(out[0].ack.is_none());
    }

    #[test]
    fn aaa_alarm(p in fix(), alarm in prop_oneof![
        Just(Alarm::Sos), Just(Alarm::Overspeed), Just(Alarm::PowerCut), Just(Alarm::GeofenceEnter),
        Just(Alarm::HardBraking), Just(Alarm::Tow), Just(Alarm::Jamming), Just(Alarm::Fatigue)]) {
        let mut p = p;
        p.attributes.alarms = vec![alarm.clone()];
        let msg = Message::new(MessageKind::Alarm).with_imei(IMEI).with_positions(vec![p.clone()]);
        let (out, errors) = decode(&encode(&msg));
        prop_assert!(errors.is_empty(), "{:?}", errors);
        prop_assert_eq!(out[0].kind, MessageKind::Alarm);
        same_fix(&out[0].positions[0], &p)?;
        prop_assert_eq!(&out[0].positions[0].attributes.alarms, &vec![alarm]);
    }

    #[test]
    fn cce_batch(fixes in proptest::collection::vec(fix(), 2..40)) {
        let mut fixes = fixes;
        for (i, f) in fixes.iter_mut().enumerate() {
            f.attributes.fuel_level_pct = None; // CCE carries whole percent only
            f.attributes.event = Some(if i % 7 == 3 { 1 } else { 35 });
            f.attributes.rpm = Some(f64::from(i as u32 * 37 % 7000));
            f.attributes.coolant_c = Some(f64::from(i as u32 % 120));
            f.attributes.obd_speed_kmh = Some(f64::from(i as u32 % 200));
            f.attributes.fuel_used_l = Some(i as f64 * 1.234);
        }
        let msg = Message::new(MessageKind::Position).with_imei(IMEI).with_positions(fixes.clone());
        let bytes = encode(&msg);
        let (out, errors) = decode(&bytes);
        prop_assert!(errors.is_empty(), "{:?}", errors);
        prop_assert!(out.iter().all(|m| m.message_type.as_deref() == Some("CCE") && m.ack.is_none()));
        let got: Vec<&Position> = out.iter().flat_map(|m| m.positions.iter()).collect();
        prop_assert_eq!(got.len(), fixes.len());
        for (g, w) in got.iter().zip(&fixes) {
            same_fix(g, w)?;
            let (a, b) = (&g.attributes, &w.attributes);
            prop_assert_eq!(a.event, b.event);
            prop_assert_eq!(a.alarms.is_empty(), b.event != Some(1));
            prop_assert!(close(a.rpm, b.rpm, 0.5));
            prop_assert!(close(a.coolant_c, b.coolant_c, 0.5));
            prop_assert!(close(a.obd_speed_kmh, b.obd_speed_kmh, 0.5));
            prop_assert!(close(a.fuel_used_l, b.fuel_used_l, 0.0005));
        }
        // The cache counter counts down to zero over the frames of one batch.
        let last = out.last().unwrap();
        prop_assert_eq!(last.attributes.io.get_name("remaining_cache"), Some(&IoValue::U64(0)));
    }
}

#[test]
fn heartbeat_is_a_periodic_report() {
    let t = Utc.with_ymd_and_hms(2024, 5, 6, 7, 8, 9).single().unwrap();
    let fix = Position::new(t, 12.5, -3.25, true);
    let msg = Message::new(MessageKind::Heartbeat)
        .with_imei(IMEI)
        .with_positions(vec![fix]);
    let (out, errors) = decode(&encode(&msg));
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(out[0].kind, MessageKind::Position);
    assert_eq!(out[0].positions[0].attributes.event, Some(35));
    assert_eq!(out[0].positions[0].time, t);
    // Without a fix the heartbeat still produces a valid frame.
    let bare = Message::new(MessageKind::Heartbeat).with_imei(IMEI);
    let (out, errors) = decode(&encode(&bare));
    assert!(errors.is_empty(), "{errors:?}");
    assert!(!out[0].positions[0].valid);
}

#[test]
fn obd_message_goes_as_cce() {
    let t = Utc.with_ymd_and_hms(2024, 5, 6, 7, 8, 9).single().unwrap();
    let mut fix = Position::new(t, 1.0, 2.0, true);
    fix.attributes.rpm = Some(2100.0);
    fix.attributes.throttle_pct = Some(35.0);
    fix.attributes.fuel_level_pct = Some(48.0);
    let msg = Message::new(MessageKind::Obd).with_imei(IMEI).with_positions(vec![fix]);
    let (out, errors) = decode(&encode(&msg));
    assert!(errors.is_empty(), "{errors:?}");
    let a = &out[0].positions[0].attributes;
    assert_eq!(out[0].message_type.as_deref(), Some("CCE"));
    assert_eq!(
        (a.rpm, a.throttle_pct, a.fuel_level_pct),
        (Some(2100.0), Some(35.0), Some(48.0))
    );
}

#[test]
fn command_response_round_trip() {
    for result in ["C01,OK", "A12,OK", "D82,0", "D03,OK"] {
        let mut msg = Message::new(MessageKind::CommandResponse).with_imei(IMEI);
        msg.result = Some(result.to_owned());
        let (out, errors) = decode(&encode(&msg));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(out[0].kind, MessageKind::CommandResponse);
        assert_eq!(out[0].result.as_deref(), Some(result));
    }
}

#[test]
fn login_is_not_a_meitrack_message() {
    let msg = Message::new(MessageKind::Login).with_imei(IMEI);
    let mut dev = Protocol::Meitrack.device_encoder(Transport::Tcp).unwrap();
    assert!(dev.encode(&msg).is_err());
}

#[test]
fn rfid_swipe_round_trip() {
    let t = Utc.with_ymd_and_hms(2015, 2, 8, 17, 34, 14).single().unwrap();
    let mut fix = Position::new(t, 54.739468, 25.273648, true);
    fix.attributes.event = Some(37);
    fix.attributes.driver_id = Some("006380DF".into());
    let msg = Message::new(MessageKind::Position)
        .with_imei(IMEI)
        .with_positions(vec![fix]);
    let (out, _) = decode(&encode(&msg));
    assert_eq!(out[0].positions[0].attributes.driver_id.as_deref(), Some("006380DF"));
}

/// Re-seal a mutated `$$` frame (length and checksum) so decoding reaches the payload parsers.
fn reseal(flag: u8, inner: &[u8]) -> Vec<u8> {
    let len = inner.len() + 1 + 5;
    let mut out = format!("$${}{len},", flag as char).into_bytes();
    out.extend_from_slice(inner);
    out.push(b'*');
    let sum = out.iter().fold(0u8, |a, b| a.wrapping_add(*b));
    out.extend_from_slice(format!("{sum:02X}\r\n").as_bytes());
    out
}

/// The public uplink vectors, read once.
fn uplink_frames() -> &'static [Vec<u8>] {
    static FRAMES: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    FRAMES.get_or_init(|| {
        common::load("meitrack")
            .into_iter()
            .filter(|v| v.direction == "uplink")
            .map(|v| v.bytes)
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Frames with a right checksum but corrupted contents decode or fail with a typed error.
    #[test]
    fn sealed_garbage_never_panics(which in 0usize..40, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..12),
                                   cut in any::<usize>()) {
        let vectors = uplink_frames();
        let frame = &vectors[which % vectors.len()];
        let Some(comma) = frame.iter().position(|&b| b == b',') else { return Ok(()) };
        let Some(star) = frame.iter().rposition(|&b| b == b'*') else { return Ok(()) };
        if star <= comma { return Ok(()); }
        let mut inner = frame[comma + 1..star].to_vec();
        // Keep the IMEI and command so the frame reaches the payload parser.
        let keep = inner.iter().position(|&b| b == b',').map_or(0, |p| p + 5).min(inner.len());
        for (pos, byte) in flips {
            if inner.len() > keep {
                let i = keep + pos % (inner.len() - keep);
                inner[i] = byte;
            }
        }
        if inner.len() > keep {
            inner.truncate(keep + cut % (inner.len() - keep + 1));
        }
        let _ = decode(&reseal(frame[2], &inner));
    }
}
