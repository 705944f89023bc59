//! Ruptela real-device vectors: the generic harness plus the Ruptela-specific `expect` keys
//! (command, per-record raw IO map, event id, priority, record extension, HDOP, records left,
//! reply text) and the downlink encoder vectors.

// The shared harness is not ours to reformat.
#[rustfmt::skip]
mod common;

use common::{Decoded, Report, Vector};
use protocols::{Command, IoValue, MessageKind, Protocol};

fn io_u64(v: Option<&IoValue>) -> Option<u64> {
    match v? {
        IoValue::U64(n) => Some(*n),
        _ => None,
    }
}

fn check_eq<T: PartialEq + std::fmt::Debug>(r: &mut Report, v: &Vector, what: &str, ours: T, want: T) {
    r.checked_values += 1;
    if ours != want {
        r.fail(v, format!("{what}: {ours:?} != expected {want:?}"));
    }
}

fn ruptela_checks(r: &mut Report, v: &Vector, d: &Decoded) {
    let e = &v.expect;
    if let Some(cmd) = e["command"].as_u64() {
        let types: Vec<_> = d.messages.iter().filter_map(|m| m.message_type.clone()).collect();
        check_eq(r, v, "command", types.contains(&cmd.to_string()), true);
    }
    if let Some(left) = e["records_left"].as_u64() {
        let ours = d
            .messages
            .iter()
            .find_map(|m| io_u64(m.attributes.io.get_name("records_left")));
        check_eq(r, v, "records_left", ours, Some(left));
    }
    if let Some(n) = e["record_count"].as_u64() {
        check_eq(r, v, "record_count", d.positions().len() as u64, n);
    }
    if let Some(records) = e["records"].as_array() {
        let positions = d.positions();
        for (i, (p, rec)) in positions.iter().zip(records).enumerate() {
            if let Some(ev) = rec["event_id"].as_u64() {
                check_eq(
                    r,
                    v,
                    &format!("records[{i}].event_id"),
                    p.attributes.event.map(u64::from),
                    Some(ev),
                );
            }
            if let Some(pr) = rec["priority"].as_u64() {
                check_eq(
                    r,
                    v,
                    &format!("records[{i}].priority"),
                    // Left out when zero.
                    io_u64(p.attributes.io.get_name("priority")).unwrap_or(0),
                    pr,
                );
            }
            if let Some(x) = rec["record_extension"].as_u64() {
                let ours = io_u64(p.attributes.io.get_name("record_extension"));
                check_eq(r, v, &format!("records[{i}].record_extension"), ours, Some(x));
            }
            if let Some(h) = rec["hdop"].as_f64() {
                r.checked_values += 1;
                if p.hdop.is_none_or(|o| (o - h).abs() > 1e-9) {
                    r.fail(v, format!("records[{i}].hdop {:?} != {h}", p.hdop));
                }
            }
            if let Some(io) = rec["io"].as_object() {
                for (id, want) in io {
                    let id: u32 = id.parse().expect("numeric IO id");
                    // A merged cmd-68 part keeps its own values; the first part also gets the
                    // later parts' values appended, so look at the part's own (first) entry.
                    let ours = p
                        .attributes
                        .io
                        .0
                        .iter()
                        .find(|(k, _)| *k == protocols::IoKey::Id(id))
                        .and_then(|(_, v)| io_u64(Some(v)));
                    check_eq(r, v, &format!("records[{i}].io[{id}]"), ours, want.as_u64());
                }
            }
            // Typed mappings the vectors let us verify from the raw values.
            let a = &p.attributes;
            if let Some(mv) = io_u64(a.io.get_id(29)) {
                check_eq(
                    r,
                    v,
                    &format!("records[{i}].power_v"),
                    a.power_v,
                    Some(mv as f64 / 1000.0),
                );
            }
            if let Some(odo) = io_u64(a.io.get_id(65)) {
                check_eq(
                    r,
                    v,
                    &format!("records[{i}].odometer_m"),
                    a.odometer_m,
                    Some(odo as f64),
                );
            }
            if let Some(ign) = io_u64(a.io.get_id(409)) {
                check_eq(r, v, &format!("records[{i}].ignition"), a.ignition, Some(ign > 0));
            }
            if let Some(m) = io_u64(a.io.get_id(173)) {
                check_eq(r, v, &format!("records[{i}].motion"), a.motion, Some(m > 0));
            }
        }
    }
    if let Some(text) = e["payload_text"].as_str() {
        let ours = d.messages.iter().find_map(|m| m.result.clone());
        check_eq(r, v, "payload_text", ours.as_deref(), Some(text));
    }
    if v.kind == "obd" {
        let dtcs = d
            .messages
            .iter()
            .any(|m| m.kind == MessageKind::Obd && !m.attributes.dtcs.is_empty());
        check_eq(r, v, "dtcs present", dtcs, true);
    }
}

#[test]
fn ruptela_vectors() {
    common::run_protocol(Protocol::Ruptela, ruptela_checks);
}

#[test]
fn ruptela_downlink_vectors() {
    let codec = Protocol::Ruptela.codec(protocols::Transport::Tcp).expect("codec");
    let mut checked = 0;
    for v in common::load("ruptela").iter().filter(|v| v.direction == "downlink") {
        let input = &v.expect["encoder_input"];
        let command = match input["command_type"].as_str() {
            Some("custom") => Command::Custom {
                text: input["command_data"].as_str().expect("command_data").to_owned(),
            },
            Some("engineStop") => Command::EngineStop,
            Some("engineResume") => Command::EngineResume,
            Some("requestPhoto") => Command::RequestPhoto,
            other => panic!("{}: unknown encoder input {other:?}", v.label()),
        };
        let ours = codec.encode_command("", &command, &common::ctx()).expect("encode");
        assert_eq!(
            hex::encode(&ours),
            hex::encode(&v.bytes),
            "{}: downlink frame",
            v.label()
        );
        checked += 1;
    }
    assert!(checked > 0, "no downlink vectors");
}

/// Frames and replies from Traccar's tests and decoder that are not among the public vectors.
#[test]
fn ruptela_reference_frames() {
    let ctx = common::ctx();
    let codec = Protocol::Ruptela.codec(protocols::Transport::Tcp).expect("codec");
    // A raw hex frame passes through untouched (Traccar encoder test).
    let raw = "000b890100000000007fffffff89f0";
    let ours = codec
        .encode_command("", &Command::Custom { text: raw.into() }, &ctx)
        .unwrap();
    assert_eq!(hex::encode(ours), raw);
    // The photo request is that same frame.
    assert_eq!(
        hex::encode(codec.encode_command("", &Command::RequestPhoto, &ctx).unwrap()),
        raw
    );

    // Identification (Traccar decoder test): login, answered with command 115.
    let mut c = Protocol::Ruptela.codec(protocols::Transport::Tcp).unwrap();
    let login = hex::decode(
        "002e000316d53d58d6020f4573303430302e30332e36382e30340000c2b3090d0e950000827b000003e80000003c003c1681",
    )
    .unwrap();
    let (m, errors) = protocols::decode_all(c.as_mut(), &login, &ctx);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(m[0].kind, MessageKind::Login);
    assert_eq!(m[0].imei.as_deref(), Some("869530043209218"));
    assert_eq!(hex::encode(m[0].ack.as_ref().unwrap()), "00027301cb25");
    assert_eq!(
        m[0].attributes.io.get_name("version"),
        Some(&IoValue::Text("Es0400.03.68.04".into()))
    );
    assert_eq!(
        m[0].attributes.io.get_name("imsi"),
        Some(&IoValue::Text("214074206785173".into()))
    );

    // SMS-via-GPRS reply with a valid CRC (Traccar decoder test, cmd 7).
    let reply = hex::decode(
        "0044000313612d76c5cb0744494e313d312c44494e323d302c44494e333d302c44494e343d302c444f5554313d312c\
         444f5554323d312c41494e313d31372c41494e323d3236ac80",
    )
    .unwrap();
    let (m, errors) = protocols::decode_all(c.as_mut(), &reply, &ctx);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(m[0].kind, MessageKind::CommandResponse);
    assert_eq!(
        m[0].result.as_deref(),
        Some("DIN1=1,DIN2=0,DIN3=0,DIN4=0,DOUT1=1,DOUT2=1,AIN1=17,AIN2=26")
    );
}
