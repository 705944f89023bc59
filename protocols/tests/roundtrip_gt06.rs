//! GT06 round trips: DeviceEncoder → Codec framing → decode gives back what was encoded,
//! within wire precision (1/1 800 000 degree, whole km/h and degrees, whole seconds,
//! battery as a 0–6 level, OBD values in hundredths).

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use protocols::{
    Alarm, Attributes, DecodeContext, IoValue, Message, MessageKind, Position, Protocol, Transport, decode_all,
};

fn ctx() -> DecodeContext {
    DecodeContext {
        now: Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).single().expect("date"),
    }
}

/// Encode with a fresh device and decode the bytes as one stream, fed in two parts
/// to exercise framing across reads.
fn roundtrip(msg: &Message, split: usize) -> Vec<Message> {
    let mut dev = Protocol::Gt06.device_encoder(Transport::Tcp).expect("device");
    let bytes = dev.encode(msg).expect("encodes");
    let mut codec = Protocol::Gt06.codec(Transport::Tcp).expect("codec");
    let cut = split.min(bytes.len());
    let mut out = Vec::new();
    let mut buf: Vec<u8> = bytes[..cut].to_vec();
    let mut rest = &bytes[cut..];
    loop {
        match codec.frame(&buf, false) {
            protocols::Framing::Frame { start, end } => {
                let mut m = codec.decode(&buf[start..end], &ctx()).expect("decodes");
                // Everything but OBD and the extended 0x21 reply is acknowledged.
                let unacked = |m: &Message| m.kind == MessageKind::Obd || m.message_type.as_deref() == Some("0x21");
                assert!(m.iter().all(|m| m.ack.is_some() != unacked(m)), "ack rule");
                out.append(&mut m);
                buf.drain(..end);
            }
            protocols::Framing::Incomplete if !rest.is_empty() => {
                buf.extend_from_slice(rest);
                rest = &[];
            }
            protocols::Framing::Incomplete => break,
            other => panic!("framing {other:?} on {}", hex::encode(&bytes)),
        }
    }
    assert!(buf.is_empty(), "left over {}", hex::encode(&buf));
    out
}

fn time() -> impl Strategy<Value = DateTime<Utc>> {
    // 2000-01-01 .. 2099-12-31, whole seconds.
    (946_684_800i64..4_102_444_799).prop_map(|s| Utc.timestamp_opt(s, 0).single().expect("in range"))
}

prop_compose! {
    fn fix()(t in time(), lat in -90.0f64..90.0, lon in -180.0f64..180.0, speed in 0u8..=255,
             course in 0u16..360, sats in 0u8..16, valid: bool, ign in proptest::option::of(any::<bool>()),
             mcc in 0u64..1000, mnc in 0u64..1000, lac in 0u64..65536, cid in 0u64..0x100_0000) -> Position {
        let mut p = Position::new(t, lat, lon, valid);
        p.speed_kmh = Some(f64::from(speed));
        p.course_deg = Some(f64::from(course));
        p.satellites = Some(sats);
        p.attributes.ignition = ign;
        for (k, v) in [("mcc", mcc), ("mnc", mnc), ("lac", lac), ("cid", cid)] {
            p.attributes.io.push_name(k, IoValue::U64(v));
        }
        p
    }
}

fn io_u(a: &Attributes, k: &str) -> Option<u64> {
    match a.io.get_name(k) {
        Some(IoValue::U64(n)) => Some(*n),
        Some(IoValue::I64(n)) => u64::try_from(*n).ok(),
        _ => None,
    }
}

fn same_fix(ours: &Position, want: &Position) {
    assert_eq!(ours.time, want.time);
    assert!(
        (ours.latitude - want.latitude).abs() <= 0.5 / 1_800_000.0 + 1e-12,
        "lat {ours:?} vs {want:?}"
    );
    assert!(
        (ours.longitude - want.longitude).abs() <= 0.5 / 1_800_000.0 + 1e-12,
        "lon"
    );
    assert_eq!(ours.speed_kmh, want.speed_kmh);
    assert_eq!(ours.course_deg, want.course_deg);
    assert_eq!(ours.satellites, want.satellites);
    assert_eq!(ours.valid, want.valid);
    for k in ["mcc", "mnc", "lac", "cid"] {
        assert_eq!(io_u(&ours.attributes, k), io_u(&want.attributes, k), "{k}");
    }
}

const ALARMS: [Alarm; 16] = [
    Alarm::Sos,
    Alarm::PowerCut,
    Alarm::Vibration,
    Alarm::GeofenceEnter,
    Alarm::GeofenceExit,
    Alarm::Overspeed,
    Alarm::LowBattery,
    Alarm::PowerOff,
    Alarm::Tampering,
    Alarm::Door,
    Alarm::Removing,
    Alarm::FallDown,
    Alarm::HardAcceleration,
    Alarm::HardCornering,
    Alarm::Accident,
    Alarm::HardBraking,
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn login(digits in "[0-9]{15}", split in 0usize..40) {
        let msg = Message::new(MessageKind::Login).with_imei(digits.clone());
        let out = roundtrip(&msg, split);
        prop_assert_eq!(out.len(), 1);
        prop_assert_eq!(out[0].kind, MessageKind::Login);
        prop_assert_eq!(out[0].imei.as_deref(), Some(digits.as_str()));
    }

    #[test]
    fn positions(fixes in proptest::collection::vec(fix(), 1..5), split in 0usize..200) {
        let msg = Message::new(MessageKind::Position).with_positions(fixes.clone());
        let out = roundtrip(&msg, split);
        prop_assert_eq!(out.len(), fixes.len());
        for (m, want) in out.iter().zip(&fixes) {
            prop_assert_eq!(m.kind, MessageKind::Position);
            prop_assert_eq!(m.positions.len(), 1);
            same_fix(&m.positions[0], want);
            prop_assert_eq!(m.positions[0].attributes.ignition, want.attributes.ignition);
        }
    }

    #[test]
    fn heartbeat(ign: bool, charge: bool, level in 0u8..=6, rssi in 0i32..=4, alarm in proptest::option::of(0usize..ALARMS.len())) {
        let mut msg = Message::new(MessageKind::Heartbeat);
        msg.attributes.ignition = Some(ign);
        msg.attributes.battery_pct = Some(f64::from(u32::from(level) * 100 / 6));
        msg.attributes.rssi = Some(rssi);
        msg.attributes.io.push_name("charge", IoValue::Bool(charge));
        if let Some(i) = alarm {
            msg.attributes.alarms.push(ALARMS[i].clone());
        }
        let out = roundtrip(&msg, 7);
        prop_assert_eq!(out.len(), 1);
        let m = &out[0];
        prop_assert_eq!(m.kind, MessageKind::Heartbeat);
        prop_assert_eq!(m.message_type.as_deref(), Some("0x13"));
        prop_assert_eq!(m.attributes.ignition, Some(ign));
        prop_assert_eq!(m.attributes.battery_pct, msg.attributes.battery_pct);
        prop_assert_eq!(m.attributes.rssi, Some(rssi));
        prop_assert_eq!(m.attributes.io.get_name("charge"), Some(&IoValue::Bool(charge)));
        prop_assert_eq!(&m.attributes.alarms, &msg.attributes.alarms);
    }

    #[test]
    fn heartbeat_0x23(ign: bool, armed: bool, centivolts in 0u16..=6000, rssi in 0i32..=4) {
        let mut msg = Message::new(MessageKind::Heartbeat).with_type("0x23");
        msg.attributes.ignition = Some(ign);
        msg.attributes.battery_v = Some(f64::from(centivolts) / 100.0);
        msg.attributes.rssi = Some(rssi);
        msg.attributes.io.push_name("armed", IoValue::Bool(armed));
        let out = roundtrip(&msg, 3);
        let m = &out[0];
        prop_assert_eq!(m.kind, MessageKind::Heartbeat);
        prop_assert_eq!(m.message_type.as_deref(), Some("0x23"));
        prop_assert_eq!(m.attributes.ignition, Some(ign));
        prop_assert_eq!(m.attributes.battery_v, msg.attributes.battery_v);
        prop_assert_eq!(m.attributes.rssi, Some(rssi));
        prop_assert_eq!(m.attributes.io.get_name("armed"), Some(&IoValue::Bool(armed)));
    }

    #[test]
    fn alarm(mut p in fix(), i in 0usize..ALARMS.len(), ign: bool, pct in 0.0f64..=100.0, split in 0usize..60) {
        p.attributes.ignition = Some(ign);
        p.attributes.battery_pct = Some(pct);
        p.attributes.alarms.push(ALARMS[i].clone());
        let msg = Message::new(MessageKind::Alarm).with_positions(vec![p.clone()]);
        let out = roundtrip(&msg, split);
        prop_assert_eq!(out.len(), 1);
        let m = &out[0];
        prop_assert_eq!(m.kind, MessageKind::Alarm);
        prop_assert_eq!(m.positions.len(), 1);
        let got = &m.positions[0];
        same_fix(got, &p);
        prop_assert_eq!(&got.attributes.alarms, &p.attributes.alarms);
        prop_assert_eq!(got.attributes.ignition, Some(ign));
        // Battery travels as a 0–6 voltage level.
        let back = got.attributes.battery_pct.expect("battery");
        prop_assert!((back - pct).abs() <= 100.0 / 12.0 + 1.0, "{} vs {}", back, pct);
    }

    #[test]
    fn obd(t in time(), ign: bool, rpm in 0u32..20_000_000, coolant in 0u32..30_000, speed in 0u32..30_000,
           fuel in 0u32..10_000, used in 0u32..1_000_000, hours in 0u32..10_000_000, odo in 0u32..u32::MAX,
           vin in proptest::option::of("[A-HJ-NPR-Z0-9]{17}")) {
        let mut p = Position::new(t, 0.0, 0.0, false);
        let a = &mut p.attributes;
        a.ignition = Some(ign);
        a.rpm = Some(f64::from(rpm) / 100.0);
        a.coolant_c = Some(f64::from(coolant) / 100.0);
        a.obd_speed_kmh = Some(f64::from(speed) / 100.0);
        a.fuel_level_pct = Some(f64::from(fuel) / 100.0);
        a.fuel_used_l = Some(f64::from(used) / 100.0);
        a.engine_hours = Some(f64::from(hours) / 100.0);
        a.odometer_m = Some(f64::from(odo) / 100.0);
        a.vin = vin.clone();
        let msg = Message::new(MessageKind::Obd).with_positions(vec![p.clone()]);
        let out = roundtrip(&msg, 20);
        prop_assert_eq!(out.len(), 1);
        let m = &out[0];
        prop_assert_eq!(m.kind, MessageKind::Obd);
        prop_assert!(m.ack.is_none(), "0x8C is not acknowledged");
        let g = &m.attributes;
        let close = |x: Option<f64>, y: Option<f64>| match (x, y) {
            (Some(x), Some(y)) => (x - y).abs() < 1e-6,
            _ => false,
        };
        prop_assert_eq!(g.ignition, Some(ign));
        prop_assert!(close(g.rpm, p.attributes.rpm));
        prop_assert!(close(g.coolant_c, p.attributes.coolant_c));
        prop_assert!(close(g.obd_speed_kmh, p.attributes.obd_speed_kmh));
        prop_assert!(close(g.fuel_level_pct, p.attributes.fuel_level_pct));
        prop_assert!(close(g.fuel_used_l, p.attributes.fuel_used_l));
        prop_assert!(close(g.engine_hours, p.attributes.engine_hours));
        prop_assert!(close(g.odometer_m, p.attributes.odometer_m));
        prop_assert_eq!(&g.vin, &vin);
        let want_time = t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
        prop_assert_eq!(g.io.get_name("time"), Some(&IoValue::Text(want_time)));
    }

    #[test]
    fn command_response(text in "[ -~]{1,600}", split in 0usize..100) {
        let mut msg = Message::new(MessageKind::CommandResponse);
        msg.result = Some(text.clone());
        let out = roundtrip(&msg, split);
        prop_assert_eq!(out.len(), 1);
        let m = &out[0];
        prop_assert_eq!(m.kind, MessageKind::CommandResponse);
        prop_assert_eq!(m.result.as_deref(), Some(text.as_str()));
        let want = if text.len() <= 243 { "0x15" } else { "0x21" };
        prop_assert_eq!(m.message_type.as_deref(), Some(want));
    }
}

#[test]
fn login_sets_the_session_imei() {
    let mut dev = Protocol::Gt06.device_encoder(Transport::Tcp).expect("device");
    let mut bytes = dev
        .encode(&Message::new(MessageKind::Login).with_imei("490154203237518"))
        .expect("login");
    let mut hb = Message::new(MessageKind::Heartbeat);
    hb.attributes.ignition = Some(true);
    bytes.extend(dev.encode(&hb).expect("heartbeat"));
    let mut codec = Protocol::Gt06.codec(Transport::Tcp).expect("codec");
    let (msgs, errs) = decode_all(codec.as_mut(), &bytes, &ctx());
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(msgs.len(), 2);
    assert!(msgs.iter().all(|m| m.imei.as_deref() == Some("490154203237518")));
    // Serials count up from 1 and the acks echo them.
    let acks: Vec<_> = msgs.iter().map(|m| hex::encode(m.ack.as_ref().expect("ack"))).collect();
    assert!(acks[0].starts_with("787805010001"), "{}", acks[0]);
    assert!(acks[1].starts_with("787805130002"), "{}", acks[1]);
}

#[test]
fn device_rejects_what_it_cannot_send() {
    let mut dev = Protocol::Gt06.device_encoder(Transport::Tcp).expect("device");
    assert!(dev.encode(&Message::new(MessageKind::Login)).is_err());
    assert!(
        dev.encode(&Message::new(MessageKind::Login).with_imei("12345"))
            .is_err()
    );
    assert!(dev.encode(&Message::new(MessageKind::Position)).is_err());
    assert!(dev.encode(&Message::new(MessageKind::Alarm)).is_err());
    assert!(dev.encode(&Message::new(MessageKind::Other)).is_err());
    let bad = Position::new(Utc::now(), 91.0, 0.0, true);
    assert!(
        dev.encode(&Message::new(MessageKind::Position).with_positions(vec![bad]))
            .is_err()
    );
}

/// A well-formed envelope (correct length and CRC) around arbitrary content, so every
/// content decoder sees hostile bytes behind a valid checksum.
fn envelope(ext: bool, ty: u8, content: &[u8], serial: u16) -> Vec<u8> {
    let len = 5 + content.len();
    let mut v = if ext {
        let mut v = vec![0x79, 0x79];
        v.extend_from_slice(&(len as u16).to_be_bytes());
        v
    } else {
        vec![0x78, 0x78, len as u8]
    };
    v.push(ty);
    v.extend_from_slice(content);
    v.extend_from_slice(&serial.to_be_bytes());
    let crc = protocols::checksum::crc16_x25(&v[2..]);
    v.extend_from_slice(&crc.to_be_bytes());
    v.extend_from_slice(&[0x0d, 0x0a]);
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn hostile_content_behind_valid_crc_never_panics(
        ext: bool,
        ty: u8,
        content in proptest::collection::vec(any::<u8>(), 0..240),
        serial: u16,
        login_first: bool,
    ) {
        let mut codec = Protocol::Gt06.codec(Transport::Tcp).expect("codec");
        if login_first {
            let mut dev = Protocol::Gt06.device_encoder(Transport::Tcp).expect("device");
            let login = dev.encode(&Message::new(MessageKind::Login).with_imei("490154203237518")).expect("login");
            codec.decode(&login, &ctx()).expect("login decodes");
        }
        let f = envelope(ext, ty, &content, serial);
        // A frame whose CRC is right must always decode to exactly one message.
        let m = codec.decode(&f, &ctx());
        prop_assert!(m.as_ref().is_ok_and(|m| m.len() == 1), "{:?} for {}", m, hex::encode(&f));
        // And through framing, with the length byte mangled as some models do.
        let mut g = f.clone();
        if !ext {
            g[2] = content.first().copied().unwrap_or(0);
        }
        let _ = decode_all(codec.as_mut(), &g, &ctx());
        let _ = codec.decode(&g, &ctx());
        let _ = codec.decode(&g[..g.len().saturating_sub(1)], &ctx());
    }

    #[test]
    fn noisy_streams_never_panic_or_stall(
        parts in proptest::collection::vec(
            (any::<bool>(), any::<u8>(), proptest::collection::vec(any::<u8>(), 0..60), proptest::collection::vec(any::<u8>(), 0..8)),
            1..6),
        eof: bool,
    ) {
        let mut stream = Vec::new();
        for (ext, ty, content, noise) in &parts {
            stream.extend_from_slice(&envelope(*ext, *ty, content, 7));
            stream.extend_from_slice(noise);
        }
        let codec = Protocol::Gt06.codec(Transport::Tcp).expect("codec");
        let mut rest: &[u8] = &stream;
        let mut steps = 0;
        while !rest.is_empty() {
            steps += 1;
            prop_assert!(steps <= stream.len() + 1, "framing does not progress");
            match codec.frame(rest, eof) {
                protocols::Framing::Frame { start, end } => {
                    prop_assert!(start <= end && end <= rest.len() && end > 0);
                    rest = &rest[end..];
                }
                protocols::Framing::Resync { discard, .. } => {
                    prop_assert!(discard >= 1 && discard <= rest.len());
                    rest = &rest[discard..];
                }
                protocols::Framing::Incomplete | protocols::Framing::Fatal(_) => break,
            }
        }
        let mut codec = Protocol::Gt06.codec(Transport::Tcp).expect("codec");
        let _ = decode_all(codec.as_mut(), &stream, &ctx());
    }
}
