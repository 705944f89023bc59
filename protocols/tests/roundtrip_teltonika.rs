//! Round trips: `TeltonikaDevice` encodes, the Teltonika codec frames and decodes, and
//! the values come back within wire precision — for login, keep-alive, AVL batches
//! (codec 8, 8E and 16, TCP and UDP), alarms, OBD values, command responses and the
//! server's own command frames.

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use protocols::teltonika::{AvlCodec, TeltonikaDevice, sample_packet};
use protocols::{
    Alarm, Attributes, Command, DecodeContext, DeviceEncoder, IoKey, IoMap, IoValue, Message, MessageKind, Position,
    Protocol, Transport, decode_all,
};

fn ctx() -> DecodeContext {
    DecodeContext {
        now: Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).single().expect("date"),
    }
}

fn decode(transport: Transport, bytes: &[u8]) -> Vec<Message> {
    let mut codec = Protocol::Teltonika.codec(transport).expect("codec");
    let (msgs, errors) = decode_all(codec.as_mut(), bytes, &ctx());
    assert!(errors.is_empty(), "decode errors: {errors:?}");
    msgs
}

const IMEI: &str = "356307042441013";

fn codec_strategy() -> impl Strategy<Value = AvlCodec> {
    prop_oneof![Just(AvlCodec::Codec8), Just(AvlCodec::Codec8E), Just(AvlCodec::Codec16)]
}

fn alarm_strategy() -> impl Strategy<Value = Vec<Alarm>> {
    let green = prop_oneof![
        Just(None),
        Just(Some(Alarm::HardAcceleration)),
        Just(Some(Alarm::HardBraking)),
        Just(Some(Alarm::HardCornering)),
    ];
    let others = proptest::sample::subsequence(
        vec![
            Alarm::Accident,
            Alarm::Tow,
            Alarm::Jamming,
            Alarm::Idle,
            Alarm::PowerCut,
            Alarm::General,
        ],
        0..3,
    );
    (green, others).prop_map(|(g, mut o)| {
        if let Some(g) = g {
            o.insert(0, g);
        }
        o
    })
}

prop_compose! {
    /// Typed values at the precision the wire keeps (integers, 0.1, 0.001 steps).
    fn typed_strategy()(
        ignition in any::<Option<bool>>(),
        motion in any::<Option<bool>>(),
        odometer in proptest::option::of(0u32..u32::MAX),
        power_mv in proptest::option::of(0u16..u16::MAX),
        battery_mv in proptest::option::of(0u16..5000),
        rssi in proptest::option::of(0i32..=5),
        fuel_dl in proptest::option::of(0u16..u16::MAX),
        fuel_pct in proptest::option::of(0u8..=100),
        fuel_used_dl in proptest::option::of(0u32..1_000_000),
        rpm in proptest::option::of(0u16..9000),
        obd_speed in proptest::option::of(0u8..=255),
        coolant in proptest::option::of(-40i8..=127),
        load in proptest::option::of(0u8..=100),
        accel in proptest::option::of((-4000i16..4000, -4000i16..4000, -4000i16..4000)),
        driver in proptest::option::of(1u64..u64::MAX),
        alarms in alarm_strategy(),
    ) -> Attributes {
        Attributes {
            ignition,
            motion,
            odometer_m: odometer.map(f64::from),
            power_v: power_mv.map(|v| f64::from(v) / 1000.0),
            battery_v: battery_mv.map(|v| f64::from(v) / 1000.0),
            rssi,
            fuel_level_l: fuel_dl.map(|v| f64::from(v) / 10.0),
            fuel_level_pct: fuel_pct.map(f64::from),
            fuel_used_l: fuel_used_dl.map(|v| f64::from(v) / 10.0),
            rpm: rpm.map(f64::from),
            obd_speed_kmh: obd_speed.map(f64::from),
            coolant_c: coolant.map(f64::from),
            engine_load_pct: load.map(f64::from),
            accel_mg: accel.map(|(x, y, z)| [i32::from(x), i32::from(y), i32::from(z)]),
            driver_id: driver.map(|d| format!("{d:016X}")),
            alarms,
            ..Attributes::default()
        }
    }
}

prop_compose! {
    fn position_strategy(codec: AvlCodec)(
        ms in 946_684_800_000i64..4_102_444_800_000,
        lat in -900_000_000i32..=900_000_000,
        lon in -1_800_000_000i32..=1_800_000_000,
        alt in any::<i16>(),
        course in 0u16..360,
        sats in 0u8..30,
        speed in 0u16..400,
        hdop in proptest::option::of(0u16..300),
        event in proptest::option::of(1u32..=255),
        priority in 0u8..=2,
        mut attrs in typed_strategy(),
        // Ids outside the FMB table's mapped ones, so they stay raw-only.
        raw in proptest::collection::vec((prop_oneof![150u32..170, 220u32..235], any::<u64>()), 0..6),
        vin in proptest::option::of("[A-HJ-NPR-Z0-9]{17}"),
        dtcs in proptest::collection::vec("[PCBU][0-3][0-9A-F]{3}", 0..4),
    ) -> Position {
        let time = DateTime::<Utc>::from_timestamp_millis(ms).expect("time");
        let mut p = Position::new(time, f64::from(lat) / 1e7, f64::from(lon) / 1e7, sats != 0);
        p.altitude_m = Some(f64::from(alt));
        p.course_deg = Some(f64::from(course));
        p.satellites = Some(sats);
        p.speed_kmh = Some(f64::from(speed));
        p.hdop = hdop.map(|h| f64::from(h) / 10.0);
        let mut io = IoMap::default();
        if priority != 0 {
            io.push_name("priority", IoValue::U64(u64::from(priority)));
        }
        let mut seen = Vec::new();
        for (id, v) in raw {
            if !seen.contains(&id) {
                seen.push(id);
                io.push_id(id, IoValue::U64(v));
            }
        }
        attrs.io = io;
        attrs.event = event;
        if codec == AvlCodec::Codec8E {
            attrs.vin = vin;
            attrs.dtcs = dtcs;
        }
        p.attributes = attrs;
        p
    }
}

fn close(a: Option<f64>, b: Option<f64>, tol: f64) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() <= tol,
        (None, None) => true,
        _ => false,
    }
}

/// Everything the original position said is in the decoded one.
fn assert_same(ours: &Position, orig: &Position) -> Result<(), TestCaseError> {
    prop_assert_eq!(ours.time, orig.time);
    prop_assert!((ours.latitude - orig.latitude).abs() < 1e-9);
    prop_assert!((ours.longitude - orig.longitude).abs() < 1e-9);
    prop_assert_eq!(ours.altitude_m, orig.altitude_m);
    prop_assert_eq!(ours.course_deg, orig.course_deg);
    prop_assert_eq!(ours.satellites, orig.satellites);
    prop_assert_eq!(ours.speed_kmh, orig.speed_kmh);
    prop_assert_eq!(ours.valid, orig.valid);
    prop_assert!(close(ours.hdop, orig.hdop, 1e-9));
    let (a, o) = (&ours.attributes, &orig.attributes);
    prop_assert_eq!(a.ignition, o.ignition);
    prop_assert_eq!(a.motion, o.motion);
    prop_assert_eq!(a.odometer_m, o.odometer_m);
    prop_assert!(close(a.power_v, o.power_v, 1e-9));
    prop_assert!(close(a.battery_v, o.battery_v, 1e-9));
    prop_assert_eq!(a.rssi, o.rssi);
    prop_assert!(close(a.fuel_level_l, o.fuel_level_l, 1e-9));
    prop_assert_eq!(a.fuel_level_pct, o.fuel_level_pct);
    prop_assert!(close(a.fuel_used_l, o.fuel_used_l, 1e-9));
    prop_assert_eq!(a.rpm, o.rpm);
    prop_assert_eq!(a.obd_speed_kmh, o.obd_speed_kmh);
    prop_assert_eq!(a.coolant_c, o.coolant_c);
    prop_assert_eq!(a.engine_load_pct, o.engine_load_pct);
    prop_assert_eq!(a.accel_mg, o.accel_mg);
    prop_assert_eq!(&a.driver_id, &o.driver_id);
    prop_assert_eq!(&a.vin, &o.vin);
    prop_assert_eq!(&a.dtcs, &o.dtcs);
    let mut alarms = a.alarms.clone();
    let mut want = o.alarms.clone();
    alarms.sort_by_key(|x| format!("{x:?}"));
    want.sort_by_key(|x| format!("{x:?}"));
    prop_assert_eq!(alarms, want);
    // An alarm record without an explicit event carries the alarm's IO id as event.
    if o.event.is_some() {
        prop_assert_eq!(a.event, o.event);
    }
    for (k, v) in &o.io.0 {
        let got = match k {
            IoKey::Id(id) => a.io.get_id(*id),
            IoKey::Name(n) => a.io.get_name(n),
        };
        prop_assert_eq!(got, Some(v), "io {}", k);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn avl_batches_round_trip_over_tcp(
        (codec, positions) in codec_strategy().prop_flat_map(|c| {
            (Just(c), proptest::collection::vec(position_strategy(c), 1..40))
        }),
        kind in prop_oneof![Just(MessageKind::Position), Just(MessageKind::Alarm), Just(MessageKind::Obd)],
    ) {
        let msg = Message::new(kind).with_imei(IMEI).with_positions(positions.clone());
        let mut dev = TeltonikaDevice::new(Transport::Tcp, codec);
        let mut stream = dev.encode(&Message::new(MessageKind::Login).with_imei(IMEI)).expect("login");
        stream.extend(dev.encode(&msg).expect("encode"));
        let msgs = decode(Transport::Tcp, &stream);
        prop_assert_eq!(msgs.len(), 2);
        prop_assert_eq!(msgs[0].kind, MessageKind::Login);
        prop_assert_eq!(msgs[0].ack.as_deref(), Some(&[1u8][..]));
        let avl = &msgs[1];
        prop_assert_eq!(avl.imei.as_deref(), Some(IMEI));
        let count = positions.len() as u32;
        prop_assert_eq!(avl.ack.clone(), Some(count.to_be_bytes().to_vec()));
        prop_assert_eq!(avl.positions.len(), positions.len());
        for (ours, orig) in avl.positions.iter().zip(&positions) {
            assert_same(ours, orig)?;
        }
    }

    #[test]
    fn avl_datagrams_round_trip_over_udp(
        (codec, positions) in codec_strategy().prop_flat_map(|c| {
            (Just(c), proptest::collection::vec(position_strategy(c), 1..20))
        }),
        repeats in 1usize..4,
    ) {
        let msg = Message::new(MessageKind::Position).with_imei(IMEI).with_positions(positions.clone());
        let mut dev = TeltonikaDevice::new(Transport::Udp, codec);
        let mut codec = Protocol::Teltonika.codec(Transport::Udp).expect("codec");
        for n in 1..=repeats {
            let datagram = dev.encode(&msg).expect("encode");
            let (msgs, errors) = decode_all(codec.as_mut(), &datagram, &ctx());
            prop_assert!(errors.is_empty(), "{:?}", errors);
            prop_assert_eq!(msgs.len(), 1);
            prop_assert_eq!(msgs[0].imei.as_deref(), Some(IMEI));
            // Packet id echoed, AVL packet id, record count.
            let [p0, p1] = (n as u16).to_be_bytes();
            let want = vec![0, 5, p0, p1, 1, n as u8, positions.len() as u8];
            prop_assert_eq!(msgs[0].ack.clone(), Some(want));
            for (ours, orig) in msgs[0].positions.iter().zip(&positions) {
                assert_same(ours, orig)?;
            }
        }
    }

    #[test]
    fn command_responses_round_trip(text in "[ -~]{1,200}", transport in prop_oneof![Just(Transport::Tcp), Just(Transport::Udp)]) {
        let mut msg = Message::new(MessageKind::CommandResponse).with_imei(IMEI);
        msg.result = Some(text.clone());
        let bytes = TeltonikaDevice::new(transport, AvlCodec::Codec8E).encode(&msg).expect("encode");
        let msgs = decode(transport, &bytes);
        prop_assert_eq!(msgs.len(), 1);
        prop_assert_eq!(msgs[0].kind, MessageKind::CommandResponse);
        prop_assert_eq!(msgs[0].result.as_deref(), Some(text.trim()));
        prop_assert_eq!(msgs[0].ack.as_ref(), None);
    }

    #[test]
    fn server_commands_decode_as_the_text_sent(text in "[a-z][ -~]{0,60}") {
        // An all-hex custom text of even length is sent as raw bytes, by design (the
        // Traccar convention for binary commands): not a text command.
        prop_assume!(!(text.len().is_multiple_of(2) && text.bytes().all(|c| c.is_ascii_hexdigit())));
        let codec = Protocol::Teltonika.codec(Transport::Tcp).expect("codec");
        let frame = codec.encode_command(IMEI, &Command::Custom { text: text.clone() }, &ctx()).expect("encode");
        let msgs = decode(Transport::Tcp, &frame);
        prop_assert_eq!(msgs[0].message_type.as_deref(), Some("0x05"));
        prop_assert_eq!(msgs[0].result.as_deref(), Some(text.trim()));
    }

    #[test]
    fn imei_login_round_trips(imei in "[0-9]{15}") {
        let bytes = TeltonikaDevice::new(Transport::Tcp, AvlCodec::Codec8)
            .encode(&Message::new(MessageKind::Login).with_imei(imei.clone()))
            .expect("encode");
        let msgs = decode(Transport::Tcp, &bytes);
        prop_assert_eq!(msgs[0].kind, MessageKind::Login);
        prop_assert_eq!(msgs[0].imei.as_deref(), Some(imei.as_str()));
    }
}

#[test]
fn keepalive_round_trips_and_udp_has_none() {
    let mut dev = TeltonikaDevice::new(Transport::Tcp, AvlCodec::Codec8E);
    let bytes = dev.encode(&Message::new(MessageKind::Heartbeat)).expect("heartbeat");
    assert_eq!(bytes, [0xFF]);
    let msgs = decode(Transport::Tcp, &bytes);
    assert_eq!(msgs[0].kind, MessageKind::Heartbeat);
    assert_eq!(msgs[0].ack, None);
    let mut udp = TeltonikaDevice::new(Transport::Udp, AvlCodec::Codec8E);
    assert!(udp.encode(&Message::new(MessageKind::Heartbeat)).is_err());
    assert!(udp.encode(&Message::new(MessageKind::Login).with_imei(IMEI)).is_err());
}

/// More than 255 records split into several packets, each acknowledged on its own.
#[test]
fn long_batches_split_into_packets() {
    for codec in [AvlCodec::Codec8, AvlCodec::Codec8E, AvlCodec::Codec16] {
        let bytes = sample_packet(codec, 600);
        let msgs = decode(Transport::Tcp, &bytes);
        let counts: Vec<usize> = msgs.iter().map(|m| m.positions.len()).collect();
        assert_eq!(counts, [255, 255, 90], "{codec:?}");
        let acks: Vec<_> = msgs.iter().map(|m| m.ack.clone().expect("ack")).collect();
        assert_eq!(acks, [vec![0, 0, 0, 255], vec![0, 0, 0, 255], vec![0, 0, 0, 90]]);
        let p = &msgs[2].positions[89];
        let ids = p
            .attributes
            .io
            .0
            .iter()
            .filter(|(k, _)| matches!(k, IoKey::Id(_)))
            .count();
        assert_eq!(ids, 16, "{codec:?}");
        assert_eq!(p.attributes.ignition, Some(true));
        assert!(p.hdop.is_some_and(|h| (h - 0.7).abs() < 1e-9));
    }
}

/// Frames cut anywhere wait for the rest; a wrong CRC is a checksum error.
#[test]
fn partial_frames_wait_and_bad_crc_is_rejected() {
    let bytes = sample_packet(AvlCodec::Codec8E, 3);
    let codec = Protocol::Teltonika.codec(Transport::Tcp).expect("codec");
    for cut in 1..bytes.len() {
        assert_eq!(
            codec.frame(&bytes[..cut], false),
            protocols::Framing::Incomplete,
            "cut at {cut}"
        );
    }
    let mut bad = bytes.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0x55;
    let mut codec = Protocol::Teltonika.codec(Transport::Tcp).expect("codec");
    let (_, errors) = decode_all(codec.as_mut(), &bad, &ctx());
    assert!(
        matches!(errors.as_slice(), [protocols::DecodeError::Checksum { .. }]),
        "{errors:?}"
    );
}

/// UDP acks can reproduce Traccar's zero packet id.
#[test]
fn udp_ack_packet_id_policy() {
    use protocols::Codec;
    use protocols::teltonika::{TeltonikaCodec, UdpAckPacketId};
    let msg = Message::new(MessageKind::Position)
        .with_imei(IMEI)
        .with_positions(vec![protocols::teltonika::sample_position(0)]);
    let datagram = TeltonikaDevice::new(Transport::Udp, AvlCodec::Codec8)
        .encode(&msg)
        .expect("encode");
    let mut zero = TeltonikaCodec::new(Transport::Udp).with_udp_ack(UdpAckPacketId::Zero);
    let msgs = zero.decode(&datagram, &ctx()).expect("decode");
    assert_eq!(msgs[0].ack.as_deref(), Some(&[0, 5, 0, 0, 1, 1, 1][..]));
}

/// Re-seal a TCP AVL frame after its data field was changed, so the content parser
/// (not just the CRC check) sees the damage.
fn reseal(frame: &mut [u8]) {
    let len = frame.len();
    if len < 12 {
        return;
    }
    let data_len = (len - 12) as u32;
    frame[4..8].copy_from_slice(&data_len.to_be_bytes());
    let crc = protocols::checksum::crc16_arc(&frame[8..len - 4]);
    frame[len - 4..].copy_from_slice(&u32::from(crc).to_be_bytes());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// Damaged content behind a valid envelope is a typed error or a value, never a
    /// panic, over TCP (CRC recomputed) and UDP (no CRC at all).
    #[test]
    fn damaged_content_never_panics(
        codec in prop_oneof![Just(AvlCodec::Codec8), Just(AvlCodec::Codec8E), Just(AvlCodec::Codec16)],
        records in 1usize..4,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        codec_byte in prop_oneof![Just(None), Just(Some(0x07u8)), Just(Some(0x0C)), Just(Some(0x0D)), Just(Some(0x0E)), Just(Some(0x0F)), any::<u8>().prop_map(Some)],
    ) {
        let mut frame = sample_packet(codec, records);
        let data_end = frame.len() - 4;
        for (i, b) in &edits {
            let at = 8 + i.index(data_end - 8);
            frame[at] = *b;
        }
        if let Some(c) = codec_byte {
            frame[8] = c;
        }
        let mut cut_frame = frame[..8 + cut.index(data_end - 8) + 1].to_vec();
        cut_frame.extend_from_slice(&[0, 0, 0, 0]);
        for mut f in [frame, cut_frame] {
            reseal(&mut f);
            let mut tcp = Protocol::Teltonika.codec(Transport::Tcp).expect("codec");
            let _ = decode_all(tcp.as_mut(), &f, &ctx());
            // The same data field in a UDP datagram.
            let data = &f[8..f.len() - 4];
            let mut d = Vec::new();
            let body = (6 + IMEI.len() + data.len()) as u16;
            d.extend_from_slice(&body.to_be_bytes());
            d.extend_from_slice(&[0xCA, 0xFE, 0x01, 0x22, 0x00, IMEI.len() as u8]);
            d.extend_from_slice(IMEI.as_bytes());
            d.extend_from_slice(data);
            let mut udp = Protocol::Teltonika.codec(Transport::Udp).expect("codec");
            let _ = decode_all(udp.as_mut(), &d, &ctx());
        }
    }
}

/// A declared IO total is not trusted for sizing: 255 records that each claim 65 535
/// elements and carry none reserve nothing.
#[test]
fn declared_io_totals_do_not_size_allocations() {
    let mut p = protocols::teltonika::sample_position(0);
    p.attributes = Attributes::default();
    p.hdop = None;
    let msg = Message::new(MessageKind::Position)
        .with_imei(IMEI)
        .with_positions(vec![p; 255]);
    let mut frame = TeltonikaDevice::new(Transport::Tcp, AvlCodec::Codec8E)
        .encode(&msg)
        .expect("encode");
    // 8E record without IO: head (24), event (2), total (2), four counts (8), var count (2).
    const RECORD: usize = 38;
    for r in 0..255 {
        let at = 10 + r * RECORD + 26;
        frame[at..at + 2].copy_from_slice(&[0xFF, 0xFF]);
    }
    reseal(&mut frame);
    let msgs = decode(Transport::Tcp, &frame);
    assert_eq!(msgs[0].positions.len(), 255);
    assert!(msgs[0].positions.iter().all(|p| p.attributes.io.0.capacity() == 0));
}
