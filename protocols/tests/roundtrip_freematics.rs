//! Freematics device encoder → framing → decoder gives back what was sent, within the
//! wire's precision, for logins, pings, position batches and OBD records, over UDP and TCP.

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use protocols::{Attributes, DecodeContext, Message, MessageKind, Position, Protocol, Transport, decode_all};

fn ctx() -> DecodeContext {
    DecodeContext {
        now: Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).single().expect("date"),
    }
}

fn round_trip(transport: Transport, msg: &Message) -> Vec<Message> {
    let mut enc = Protocol::Freematics.device_encoder(transport).expect("encoder");
    let mut bytes = enc.encode(msg).expect("encode");
    // Two frames back to back exercise the TCP framing.
    if transport == Transport::Tcp {
        bytes.extend(enc.encode(msg).expect("encode"));
    }
    let mut codec = Protocol::Freematics.codec(transport).expect("codec");
    let (out, errors) = decode_all(codec.as_mut(), &bytes, &ctx());
    assert!(errors.is_empty(), "{errors:?} for {}", String::from_utf8_lossy(&bytes));
    if transport == Transport::Tcp {
        let half = out.len() / 2;
        // The device counter (TS, record key 0) differs between the two; the rest must not.
        let kinds = |m: &[Message]| {
            m.iter()
                .map(|m| (m.kind, m.imei.clone(), m.positions.len()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            kinds(&out[..half]),
            kinds(&out[half..]),
            "the two TCP frames decode alike"
        );
        return out[..half].to_vec();
    }
    out
}

fn transport() -> impl Strategy<Value = Transport> {
    prop_oneof![Just(Transport::Udp), Just(Transport::Tcp)]
}

fn time() -> impl Strategy<Value = DateTime<Utc>> {
    // ddmmyy dates: 2000-2099; hhmmsscc: 10 ms steps.
    (946_684_800i64..4_102_444_799, 0u32..100)
        .prop_map(|(s, cs)| DateTime::from_timestamp(s, cs * 10_000_000).expect("time"))
}

fn position() -> impl Strategy<Value = Position> {
    (
        time(),
        -89.9f64..89.9,
        -179.9f64..179.9,
        proptest::option::of(-400.0f64..9000.0),
        proptest::option::of(0.0f64..300.0),
        proptest::option::of(0u16..360),
        proptest::option::of(0u8..40),
        proptest::option::of(0u8..50),
        (
            proptest::option::of(0.0f64..30.0),
            proptest::option::of(any::<[i16; 3]>()),
            proptest::option::of(0i32..32),
        ),
    )
        .prop_map(|(t, lat, lon, alt, speed, course, sats, hdop, (batt, acc, rssi))| {
            let mut p = Position::new(t, lat, lon, true);
            p.altitude_m = alt;
            p.speed_kmh = speed;
            p.course_deg = course.map(f64::from);
            p.satellites = sats;
            p.hdop = hdop.map(f64::from);
            p.attributes.battery_v = batt;
            p.attributes.accel_mg = acc.map(|a| a.map(i32::from));
            p.attributes.rssi = rssi;
            p
        })
}

fn obd_attributes() -> impl Strategy<Value = Attributes> {
    (
        (0.0f64..8000.0, -40.0f64..215.0, 0.0f64..255.0, 0.0f64..100.0),
        (0.0f64..100.0, 0.0f64..100.0, 9.0f64..16.0, 0.0f64..2_000_000_000.0),
        (0.0f64..255.0, 0.0f64..600.0, -40.0f64..215.0, 0.0f64..100.0),
    )
        .prop_map(
            |((rpm, coolant, speed, load), (throttle, fuel, volts, odo), (map, maf, intake, rate))| Attributes {
                rpm: Some(rpm),
                coolant_c: Some(coolant),
                obd_speed_kmh: Some(speed),
                engine_load_pct: Some(load),
                throttle_pct: Some(throttle),
                fuel_level_pct: Some(fuel),
                power_v: Some(volts),
                odometer_m: Some(odo),
                map_kpa: Some(map),
                maf_gs: Some(maf),
                intake_temp_c: Some(intake),
                fuel_rate_lph: Some(rate),
                ..Attributes::default()
            },
        )
}

fn close(a: Option<f64>, b: Option<f64>, tol: f64) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => (a - b).abs() <= tol,
        _ => false,
    }
}

fn check_position(sent: &Position, got: &Position) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.time, sent.time);
    prop_assert!(
        (got.latitude - sent.latitude).abs() <= 1e-6,
        "lat {} vs {}",
        got.latitude,
        sent.latitude
    );
    prop_assert!((got.longitude - sent.longitude).abs() <= 1e-6);
    prop_assert_eq!(got.valid, sent.valid);
    prop_assert!(close(got.altitude_m, sent.altitude_m, 0.05 + 1e-9));
    prop_assert!(close(got.speed_kmh, sent.speed_kmh, 0.05 + 1e-9));
    prop_assert!(close(got.course_deg, sent.course_deg, 0.0));
    prop_assert_eq!(got.satellites, sent.satellites);
    prop_assert!(close(got.hdop, sent.hdop, 0.0));
    let (a, b) = (&got.attributes, &sent.attributes);
    prop_assert!(close(a.battery_v, b.battery_v, 0.005 + 1e-9));
    prop_assert_eq!(a.rssi, b.rssi);
    match (a.accel_mg, b.accel_mg) {
        (Some(x), Some(y)) => {
            for i in 0..3 {
                prop_assert!((x[i] - y[i]).abs() <= 5, "accel {:?} vs {:?}", x, y);
            }
        }
        (x, y) => prop_assert_eq!(x, y),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn login(t in transport(), id in "[A-Z0-9]{4,16}", vin in proptest::option::of("[A-HJ-NPR-Z0-9]{17}"), rssi in proptest::option::of(-110i32..-40)) {
        let mut msg = Message::new(MessageKind::Login).with_imei(id.clone());
        msg.attributes.vin = vin.clone();
        msg.attributes.rssi = rssi;
        let out = round_trip(t, &msg);
        prop_assert_eq!(out.len(), 1);
        prop_assert_eq!(out[0].kind, MessageKind::Login);
        prop_assert_eq!(out[0].imei.as_deref(), Some(id.as_str()));
        prop_assert_eq!(&out[0].attributes.vin, &vin);
        prop_assert_eq!(out[0].attributes.rssi, rssi);
        prop_assert!(out[0].ack.as_ref().is_some_and(|a| a.starts_with(b"1#EV=1,RX=1,TS=")));
    }

    #[test]
    fn heartbeat(t in transport(), id in "[A-Z0-9]{4,16}") {
        let out = round_trip(t, &Message::new(MessageKind::Heartbeat).with_imei(id.clone()));
        prop_assert_eq!(out.len(), 1);
        prop_assert_eq!(out[0].kind, MessageKind::Heartbeat);
        prop_assert_eq!(out[0].imei.as_deref(), Some(id.as_str()));
    }

    #[test]
    fn positions(t in transport(), id in "[A-Z0-9]{4,16}", ps in proptest::collection::vec(position(), 1..6)) {
        let msg = Message::new(MessageKind::Position).with_imei(id.clone()).with_positions(ps.clone());
        let out = round_trip(t, &msg);
        prop_assert_eq!(out.len(), ps.len());
        for (m, sent) in out.iter().zip(&ps) {
            prop_assert_eq!(m.kind, MessageKind::Position);
            prop_assert_eq!(m.imei.as_deref(), Some(id.as_str()));
            prop_assert_eq!(m.positions.len(), 1);
            check_position(sent, &m.positions[0])?;
        }
    }

    #[test]
    fn obd(t in transport(), id in "[A-Z0-9]{4,16}", mut p in position(), attrs in obd_attributes()) {
        let (batt, acc, rssi) = (p.attributes.battery_v, p.attributes.accel_mg, p.attributes.rssi);
        p.attributes = attrs.clone();
        p.attributes.battery_v = batt;
        p.attributes.accel_mg = acc;
        p.attributes.rssi = rssi;
        let msg = Message::new(MessageKind::Obd).with_imei(id).with_positions(vec![p.clone()]);
        let out = round_trip(t, &msg);
        prop_assert_eq!(out.len(), 1);
        prop_assert_eq!(out[0].kind, MessageKind::Obd);
        let got = &out[0].positions[0];
        check_position(&p, got)?;
        let a = &got.attributes;
        // The firmware sends whole units (odometer in 0.1 km).
        for (name, x, y) in [
            ("rpm", a.rpm, attrs.rpm),
            ("coolant", a.coolant_c, attrs.coolant_c),
            ("speed", a.obd_speed_kmh, attrs.obd_speed_kmh),
            ("load", a.engine_load_pct, attrs.engine_load_pct),
            ("throttle", a.throttle_pct, attrs.throttle_pct),
            ("fuel", a.fuel_level_pct, attrs.fuel_level_pct),
            ("power", a.power_v, attrs.power_v),
            ("map", a.map_kpa, attrs.map_kpa),
            ("maf", a.maf_gs, attrs.maf_gs),
            ("intake", a.intake_temp_c, attrs.intake_temp_c),
            ("rate", a.fuel_rate_lph, attrs.fuel_rate_lph),
        ] {
            prop_assert!(close(x, y, 0.5 + 1e-9), "{}: {:?} vs {:?}", name, x, y);
        }
        prop_assert!(close(a.odometer_m, attrs.odometer_m, 50.0 + 1e-6));
    }
}

#[test]
fn record_without_fix_is_an_invalid_position() {
    let mut msg = Message::new(MessageKind::Obd).with_imei("X1");
    msg.attributes.rpm = Some(900.0);
    let out = round_trip(Transport::Udp, &msg);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].kind, MessageKind::Obd);
    assert!(!out[0].positions[0].valid);
    assert_eq!(out[0].positions[0].attributes.rpm, Some(900.0));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// The TCP codec (not in the registry's transport list) is as total as the UDP one,
    /// also on text that looks like Freematics frames.
    #[test]
    fn tcp_codec_is_total(
        bytes in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..400),
            "[0-9A-F#*:=,;.\\-EVTSID\\r\\n]{0,300}".prop_map(String::into_bytes),
        ],
        eof in any::<bool>(),
    ) {
        let mut codec = Protocol::Freematics.codec(Transport::Tcp).expect("codec");
        match codec.frame(&bytes, eof) {
            protocols::Framing::Frame { start, end } => prop_assert!(start <= end && end <= bytes.len() && end > 0),
            protocols::Framing::Resync { discard, .. } => prop_assert!(discard >= 1 && discard <= bytes.len()),
            _ => {}
        }
        let _ = decode_all(codec.as_mut(), &bytes, &ctx());
        let _ = codec.decode(&bytes, &ctx());
    }
}

/// Frames written back to back (a capture, the benches) split again, over either transport.
#[test]
fn concatenated_frames_split() {
    for transport in [Transport::Udp, Transport::Tcp] {
        let mut enc = Protocol::Freematics.device_encoder(transport).expect("encoder");
        let mut bytes = enc
            .encode(&Message::new(MessageKind::Login).with_imei("D1"))
            .expect("login");
        let p = Position::new(
            Utc.with_ymd_and_hms(2024, 5, 6, 7, 8, 9).single().expect("t"),
            1.5,
            2.5,
            true,
        );
        for _ in 0..3 {
            let msg = Message::new(MessageKind::Position)
                .with_imei("D1")
                .with_positions(vec![p.clone(), p.clone()]);
            bytes.extend(enc.encode(&msg).expect("encode"));
        }
        let mut codec = Protocol::Freematics.codec(transport).expect("codec");
        let (out, errors) = decode_all(codec.as_mut(), &bytes, &ctx());
        assert!(errors.is_empty(), "{transport:?}: {errors:?}");
        assert_eq!(out.len(), 7, "{transport:?}");
        assert_eq!(out.iter().map(|m| m.positions.len()).sum::<usize>(), 6);
    }
}
