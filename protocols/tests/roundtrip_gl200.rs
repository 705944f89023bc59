//! Device encoder → framing → decoder round trips for every Queclink message kind the
//! simulator sends: GTFRI batches, GTIGN/GTIGF, alarms, GTOBD, heartbeats and command acks.

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use protocols::{
    Alarm, Attributes, DecodeContext, Framing, IoValue, Message, MessageKind, Position, Protocol, Transport,
};

fn ctx() -> DecodeContext {
    DecodeContext::now()
}

/// Encode, cut with the codec's framing, decode: exactly one frame and one message.
fn round_trip(msg: &Message) -> Message {
    let mut enc = Protocol::Gl200.device_encoder(Transport::Tcp).unwrap();
    let bytes = enc.encode(msg).expect("encodes");
    let mut codec = Protocol::Gl200.codec(Transport::Tcp).unwrap();
    let Framing::Frame { start, end } = codec.frame(&bytes, false) else {
        panic!("no frame in {}", String::from_utf8_lossy(&bytes));
    };
    assert_eq!((start, end), (0, bytes.len()), "{}", String::from_utf8_lossy(&bytes));
    let mut out = codec.decode(&bytes[start..end], &ctx()).expect("decodes");
    assert_eq!(out.len(), 1);
    let m = out.remove(0);
    assert_eq!(m.imei, msg.imei);
    let ack = String::from_utf8(m.ack.clone().expect("ack")).unwrap();
    assert!(ack.starts_with("+SACK:") && ack.ends_with('$'), "{ack}");
    m
}

fn time() -> impl Strategy<Value = DateTime<Utc>> {
    (946_684_800i64..2_051_222_400).prop_map(|s| DateTime::from_timestamp(s, 0).unwrap())
}

fn imei() -> impl Strategy<Value = String> {
    "[0-9]{15}"
}

prop_compose! {
    fn cell()(mcc in 100u64..999, mnc in 0u64..999, lac in 0u64..0xffff, cid in 0u64..0xfff_ffff) -> [u64; 4] {
        [mcc, mnc, lac, cid]
    }
}

prop_compose! {
    fn fix()(
        t in time(),
        lat in -90_000_000i64..=90_000_000,
        lon in -180_000_000i64..=180_000_000,
        speed_tenths in proptest::option::of(0u32..3000),
        course in proptest::option::of(0u32..360),
        alt_tenths in proptest::option::of(-5000i32..90000),
        hdop in 0u32..=50,
        cell in proptest::option::of(cell()),
    ) -> Position {
        let mut p = Position::new(t, lat as f64 / 1e6, lon as f64 / 1e6, hdop > 0);
        p.hdop = (hdop > 0).then_some(f64::from(hdop));
        p.speed_kmh = speed_tenths.map(|s| f64::from(s) / 10.0);
        p.course_deg = course.map(f64::from);
        p.altitude_m = alt_tenths.map(|a| f64::from(a) / 10.0);
        if let Some([mcc, mnc, lac, cid]) = cell {
            for (k, v) in [("mcc", mcc), ("mnc", mnc), ("lac", lac), ("cid", cid)] {
                p.attributes.io.push_name(k, IoValue::U64(v));
            }
        }
        p
    }
}

fn cell_of(p: &Position) -> Vec<Option<IoValue>> {
    ["mcc", "mnc", "lac", "cid"]
        .iter()
        .map(|k| p.attributes.io.get_name(k).cloned())
        .collect()
}

fn close(a: Option<f64>, b: Option<f64>, tol: f64) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() <= tol,
        (None, None) => true,
        _ => false,
    }
}

fn assert_fix(ours: &Position, sent: &Position) {
    assert_eq!(ours.time, sent.time);
    assert!((ours.latitude - sent.latitude).abs() < 1e-9, "{ours:?} vs {sent:?}");
    assert!((ours.longitude - sent.longitude).abs() < 1e-9, "{ours:?} vs {sent:?}");
    assert!(
        close(ours.speed_kmh, sent.speed_kmh, 1e-9),
        "speed {ours:?} vs {sent:?}"
    );
    assert!(
        close(ours.course_deg, sent.course_deg, 1e-9),
        "course {ours:?} vs {sent:?}"
    );
    assert!(
        close(ours.altitude_m, sent.altitude_m, 1e-9),
        "altitude {ours:?} vs {sent:?}"
    );
    assert_eq!(ours.valid, sent.valid);
    if sent.valid {
        assert_eq!(ours.hdop, Some(sent.hdop.unwrap_or(1.0)));
    } else {
        assert_eq!(ours.hdop, Some(0.0));
    }
    assert_eq!(cell_of(ours), cell_of(sent));
}

prop_compose! {
    /// Report-level values a GTFRI trailer carries.
    fn fri_attrs()(
        odo_hm in proptest::option::of(0u64..10_000_000),
        battery in proptest::option::of(0u32..=100),
        ignition in proptest::option::of(any::<bool>()),
        power_mv in proptest::option::of(11u32..40_000),
        hours_s in proptest::option::of(0u64..99_999 * 3600),
        rpm in proptest::option::of(0u32..9000),
        fuel in proptest::option::of(0u32..=100),
        vin in proptest::option::of("[A-HJ-NPR-Z0-9]{17}"),
    ) -> Attributes {
        Attributes {
            odometer_m: odo_hm.map(|hm| hm as f64 * 100.0),
            battery_pct: battery.map(f64::from),
            ignition,
            power_v: power_mv.map(|mv| f64::from(mv) / 1000.0),
            engine_hours: hours_s.map(|s| s as f64 / 3600.0),
            rpm: rpm.map(f64::from),
            fuel_level_pct: fuel.map(f64::from),
            vin,
            ..Attributes::default()
        }
    }
}

fn merged(mut p: Position, a: &Attributes) -> Position {
    let io = std::mem::take(&mut p.attributes.io);
    p.attributes = a.clone();
    p.attributes.io = io;
    p
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn fri_batches(imei in imei(), fixes in proptest::collection::vec(fix(), 1..=15), attrs in fri_attrs()) {
        let n = fixes.len();
        let mut fixes = fixes;
        let last = fixes.pop().unwrap();
        fixes.push(merged(last, &attrs));
        let msg = Message::new(MessageKind::Position).with_imei(imei).with_positions(fixes.clone());
        let m = round_trip(&msg);
        prop_assert_eq!(m.kind, MessageKind::Position);
        prop_assert_eq!(m.message_type.as_deref(), Some("GTFRI"));
        prop_assert_eq!(m.positions.len(), n);
        for (ours, sent) in m.positions.iter().zip(&fixes) {
            assert_fix(ours, sent);
        }
        let a = &m.positions[n - 1].attributes;
        prop_assert!(close(a.odometer_m, attrs.odometer_m, 1e-6));
        prop_assert_eq!(a.battery_pct, attrs.battery_pct);
        prop_assert_eq!(a.ignition, attrs.ignition);
        prop_assert!(close(a.power_v, attrs.power_v, 1e-9));
        prop_assert!(close(a.engine_hours, attrs.engine_hours, 1e-6));
        prop_assert_eq!(a.rpm, attrs.rpm);
        prop_assert_eq!(a.fuel_level_pct, attrs.fuel_level_pct);
        prop_assert_eq!(&a.vin, &attrs.vin);
    }

    #[test]
    fn ignition_reports(imei in imei(), p in fix(), on in any::<bool>(), virt in any::<bool>(),
                        odo_hm in proptest::option::of(0u64..10_000_000), hours_s in proptest::option::of(0u64..99_999 * 3600)) {
        let ty = match (virt, on) { (false, true) => "GTIGN", (false, false) => "GTIGF", (true, true) => "GTVGN", (true, false) => "GTVGF" };
        let a = Attributes {
            ignition: Some(on),
            odometer_m: odo_hm.map(|hm| hm as f64 * 100.0),
            engine_hours: hours_s.map(|s| s as f64 / 3600.0),
            ..Attributes::default()
        };
        let sent = merged(p, &a);
        let msg = Message::new(MessageKind::Position).with_imei(imei).with_type(ty).with_positions(vec![sent.clone()]);
        let m = round_trip(&msg);
        prop_assert_eq!(m.message_type.as_deref(), Some(ty));
        prop_assert_eq!(m.positions.len(), 1);
        assert_fix(&m.positions[0], &sent);
        let got = &m.positions[0].attributes;
        prop_assert_eq!(got.ignition, Some(on));
        prop_assert!(close(got.odometer_m, a.odometer_m, 1e-6));
        prop_assert!(close(got.engine_hours, a.engine_hours, 1e-6));
    }

    #[test]
    fn alarms(imei in imei(), p in fix(), which in 0usize..10, battery_cv in 300u32..450) {
        let alarm = [
            Alarm::Sos, Alarm::Overspeed, Alarm::HardBraking, Alarm::HardAcceleration, Alarm::HardCornering,
            Alarm::PowerCut, Alarm::PowerRestored, Alarm::Tow, Alarm::Jamming, Alarm::LowBattery,
        ][which].clone();
        let mut sent = p;
        sent.attributes.raise(alarm.clone());
        if alarm == Alarm::LowBattery {
            sent.attributes.battery_v = Some(f64::from(battery_cv) / 100.0);
        }
        let msg = Message::new(MessageKind::Alarm).with_imei(imei).with_positions(vec![sent.clone()]);
        let m = round_trip(&msg);
        prop_assert_eq!(m.kind, MessageKind::Alarm);
        prop_assert_eq!(m.positions.len(), 1);
        assert_fix(&m.positions[0], &sent);
        prop_assert_eq!(&m.positions[0].attributes.alarms, &vec![alarm]);
        prop_assert!(close(m.positions[0].attributes.battery_v, sent.attributes.battery_v, 1e-9));
    }

    #[test]
    fn power_alarms_without_fix(imei in imei(), on in any::<bool>()) {
        let alarm = if on { Alarm::PowerOn } else { Alarm::PowerOff };
        let mut msg = Message::new(MessageKind::Alarm).with_imei(imei);
        msg.attributes.raise(alarm.clone());
        let m = round_trip(&msg);
        prop_assert_eq!(m.kind, MessageKind::Alarm);
        prop_assert!(m.positions.is_empty());
        prop_assert_eq!(&m.attributes.alarms, &vec![alarm]);
    }

    #[test]
    fn obd_reports(
        imei in imei(),
        p in proptest::option::of(fix()),
        vin in proptest::option::of("[A-HJ-NPR-Z0-9]{17}"),
        rpm in proptest::option::of(0u32..12000),
        speed in proptest::option::of(0u32..250),
        coolant in proptest::option::of(-40i32..215),
        throttle in proptest::option::of(0u32..=100),
        load in proptest::option::of(0u32..=100),
        fuel in proptest::option::of(0u32..=100),
        mv in proptest::option::of(9000u32..16000),
        km in proptest::option::of(0u64..2_000_000),
        dtcs in proptest::collection::vec(("[PCBU]", 0u16..4, 0u16..0x1000), 0..6),
    ) {
        let a = Attributes {
            vin,
            rpm: rpm.map(f64::from),
            obd_speed_kmh: speed.map(f64::from),
            coolant_c: coolant.map(f64::from),
            throttle_pct: throttle.map(f64::from),
            engine_load_pct: load.map(f64::from),
            fuel_level_pct: fuel.map(f64::from),
            power_v: mv.map(|v| f64::from(v) / 1000.0),
            odometer_m: km.map(|k| k as f64 * 1000.0),
            // P0000 encodes as 0000, which Queclink uses as padding.
            dtcs: dtcs.iter().map(|(l, d, r)| format!("{l}{d}{r:03X}")).filter(|c| c != "P0000").collect(),
            ..Attributes::default()
        };
        let mut msg = Message::new(MessageKind::Obd).with_imei(imei);
        match p.clone() {
            Some(p) => msg.positions.push(merged(p, &a)),
            None => msg.attributes = a.clone(),
        }
        let m = round_trip(&msg);
        prop_assert_eq!(m.kind, MessageKind::Obd);
        prop_assert_eq!(m.message_type.as_deref(), Some("GTOBD"));
        let got = match (&p, m.positions.first()) {
            (Some(sent), Some(ours)) => {
                assert_fix(ours, &merged(sent.clone(), &a));
                &ours.attributes
            }
            (None, None) => &m.attributes,
            _ => panic!("fix mismatch: sent {p:?}, got {:?}", m.positions),
        };
        prop_assert_eq!(&got.vin, &a.vin);
        prop_assert_eq!(got.rpm, a.rpm);
        prop_assert_eq!(got.obd_speed_kmh, a.obd_speed_kmh);
        prop_assert_eq!(got.coolant_c, a.coolant_c);
        prop_assert_eq!(got.throttle_pct, a.throttle_pct);
        prop_assert_eq!(got.engine_load_pct, a.engine_load_pct);
        prop_assert_eq!(got.fuel_level_pct, a.fuel_level_pct);
        prop_assert!(close(got.power_v, a.power_v, 1e-9));
        prop_assert_eq!(got.odometer_m, a.odometer_m);
        prop_assert_eq!(&got.dtcs, &a.dtcs);
    }

    #[test]
    fn heartbeats_and_command_acks(
        imei in imei(),
        // `+ACK:GTHBD` is the device's heartbeat, not a command response (GL200 @Track spec).
        ack_type in "GT[A-Z]{3}".prop_filter("GTHBD is the heartbeat", |t| t != "GTHBD"),
    ) {
        let hb = round_trip(&Message::new(MessageKind::Heartbeat).with_imei(imei.clone()));
        prop_assert_eq!(hb.kind, MessageKind::Heartbeat);
        prop_assert_eq!(hb.message_type.as_deref(), Some("GTHBD"));
        let ack = String::from_utf8(hb.ack.unwrap()).unwrap();
        prop_assert!(ack.starts_with("+SACK:GTHBD,1F0109,"), "{}", ack);

        let msg = Message::new(MessageKind::CommandResponse).with_imei(imei).with_type(ack_type.clone());
        let cr = round_trip(&msg);
        prop_assert_eq!(cr.kind, MessageKind::CommandResponse);
        prop_assert_eq!(cr.message_type.as_deref(), Some(ack_type.as_str()));
        let prefix = format!("+ACK:{ack_type},");
        prop_assert!(cr.result.unwrap().starts_with(&prefix));
    }
}

#[test]
fn counts_increment_per_device() {
    let mut enc = Protocol::Gl200.device_encoder(Transport::Tcp).unwrap();
    let hb = Message::new(MessageKind::Heartbeat).with_imei("135790246811220");
    let a = enc.encode(&hb).unwrap();
    let b = enc.encode(&hb).unwrap();
    assert!(a.ends_with(b",0000$") && b.ends_with(b",0001$"));
    assert!(
        enc.encode(&Message::new(MessageKind::Login).with_imei("135790246811220"))
            .is_err()
    );
    assert!(enc.encode(&Message::new(MessageKind::Position)).is_err());
}
