//! Meitrack real-device vectors: the generic harness plus the Meitrack-specific `expect` keys
//! (CCE batch counters, per-record index/event/fix flag, AAA event/GSM/HDOP, command name) and
//! the downlink encoder vectors.

// The shared harness is not ours to reformat.
#[rustfmt::skip]
mod common;

use common::{Decoded, Report, Vector};
use protocols::{Command, IoValue, MessageKind, Protocol};
use serde_json::Value;

fn io_u64(v: Option<&IoValue>) -> Option<u64> {
    match v? {
        IoValue::U64(n) => Some(*n),
        IoValue::I64(n) => u64::try_from(*n).ok(),
        _ => None,
    }
}

fn check_eq<T: PartialEq + std::fmt::Debug>(r: &mut Report, v: &Vector, what: &str, ours: T, want: T) {
    r.checked_values += 1;
    if ours != want {
        r.fail(v, format!("{what}: {ours:?} != expected {want:?}"));
    }
}

fn meitrack_checks(r: &mut Report, v: &Vector, d: &Decoded) {
    let e = &v.expect;
    if let Some(cmd) = e["command"].as_str() {
        let types: Vec<_> = d.messages.iter().filter_map(|m| m.message_type.as_deref()).collect();
        check_eq(r, v, "command", types.contains(&cmd), true);
    }
    let positions = d.positions();
    if let Some(rc) = e["remaining_cache"].as_u64() {
        let ours = d
            .messages
            .iter()
            .find_map(|m| io_u64(m.attributes.io.get_name("remaining_cache")));
        check_eq(r, v, "remaining_cache", ours, Some(rc));
    }
    if let Some(n) = e["record_count"].as_u64() {
        let ours = d
            .messages
            .iter()
            .find_map(|m| io_u64(m.attributes.io.get_name("record_count")));
        check_eq(r, v, "record_count", ours, Some(n));
        check_eq(r, v, "record_count (positions)", positions.len() as u64, n);
    }
    if let Some(records) = e["records"].as_array() {
        for (i, (p, rec)) in positions.iter().zip(records).enumerate() {
            if let Some(idx) = rec["index"].as_u64() {
                check_eq(
                    r,
                    v,
                    &format!("records[{i}].index"),
                    io_u64(p.attributes.io.get_name("index")),
                    Some(idx),
                );
            }
            if let Some(ev) = rec["event"].as_u64() {
                check_eq(
                    r,
                    v,
                    &format!("records[{i}].event"),
                    p.attributes.event.map(u64::from),
                    Some(ev),
                );
            }
            if let Some(fix) = rec["gps_fix"].as_u64() {
                check_eq(r, v, &format!("records[{i}].gps_fix"), p.valid, fix > 0);
                check_eq(
                    r,
                    v,
                    &format!("records[{i}].io[5]"),
                    io_u64(p.attributes.io.get_id(5)),
                    Some(fix),
                );
            }
        }
    }
    // Text reports: the values the generic harness does not know.
    if e["command"] == "AAA"
        && let Some(p) = positions.first()
    {
        if let Some(ev) = e["event"].as_u64() {
            check_eq(r, v, "event", p.attributes.event.map(u64::from), Some(ev));
            let alarm_kind = d.messages.iter().any(|m| m.kind == MessageKind::Alarm);
            check_eq(
                r,
                v,
                "alarm kind iff alarm",
                alarm_kind,
                !p.attributes.alarms.is_empty(),
            );
        }
        if let Some(gsm) = e["gsm_signal"].as_i64() {
            check_eq(r, v, "gsm_signal", p.attributes.rssi.map(i64::from), Some(gsm));
        }
        if let Some(h) = e["hdop"].as_f64() {
            r.checked_values += 1;
            if p.hdop.is_none_or(|ours| (ours - h).abs() > 1e-9) {
                r.fail(v, format!("hdop {:?} != {h}", p.hdop));
            }
        }
        // Mileage is metres on the wire: it must be the odometer.
        if let Some(m) = io_u64(p.attributes.io.get_name("mileage")) {
            check_eq(r, v, "odometer_m = mileage", p.attributes.odometer_m, Some(m as f64));
        }
    }
    if v.kind == "alarm" {
        let any_alarm = d
            .messages
            .iter()
            .flat_map(|m| m.positions.iter())
            .any(|p| !p.attributes.alarms.is_empty());
        check_eq(r, v, "alarm attribute present", any_alarm, true);
    }
    // No acknowledgement for AAA / CCE (Traccar sends none).
    if e["command"] == "AAA" || e["command"] == "CCE" {
        check_eq(r, v, "no ack", d.ack(), None);
    }
    if e["command"] == "CCC" {
        let ack = d
            .ack()
            .map(|a| String::from_utf8_lossy(&a).into_owned())
            .unwrap_or_default();
        let n = positions.len();
        let imei = e["imei"].as_str().unwrap_or("");
        r.checked_values += 1;
        if !ack.starts_with("@@") || !ack.contains(&format!(",{imei},CCC,{n}*")) || !ack.ends_with("\r\n") {
            r.fail(v, format!("CCC ack {ack:?} does not confirm {n} records"));
        }
    }
}

#[test]
fn meitrack_vectors() {
    common::run_protocol(Protocol::Meitrack, meitrack_checks);
}

fn command_from(input: &Value) -> Option<Command> {
    match input["command_type"].as_str()? {
        "requestPhoto" => Some(Command::RequestPhoto),
        "positionSingle" => Some(Command::Locate),
        "engineStop" => Some(Command::EngineStop),
        "engineResume" => Some(Command::EngineResume),
        "alarmArm" => Some(Command::AlarmArm),
        "alarmDisarm" => Some(Command::AlarmDisarm),
        "custom" => Some(Command::Custom {
            text: input["command_data"].as_str()?.to_owned(),
        }),
        _ => None,
    }
}

#[test]
fn meitrack_downlink_vectors() {
    let codec = Protocol::Meitrack.codec(protocols::Transport::Tcp).expect("codec");
    let mut checked = 0;
    for v in common::load("meitrack").iter().filter(|v| v.direction == "downlink") {
        let input = &v.expect["encoder_input"];
        let command = command_from(input).unwrap_or_else(|| panic!("{}: unknown encoder input {input}", v.label()));
        let imei = input["device_unique_id"].as_str().unwrap_or("123456789012345");
        let ours = codec.encode_command(imei, &command, &common::ctx()).expect("encode");
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&v.bytes),
            "{}: downlink frame",
            v.label()
        );
        checked += 1;
    }
    assert!(checked > 0, "no downlink vectors");
}

/// Frames from Traccar's encoder test and PROTOCOLS.md §6 that are not in the public vectors.
#[test]
fn meitrack_downlink_reference_frames() {
    let codec = Protocol::Meitrack.codec(protocols::Transport::Tcp).expect("codec");
    let ctx = common::ctx();
    let imei = "123456789012345";
    let encode = |c: Command| codec.encode_command(imei, &c, &ctx);
    let locate = encode(Command::Locate).unwrap();
    assert_eq!(locate, b"@@Q25,123456789012345,A10*68\r\n");
    let stop = String::from_utf8(encode(Command::EngineStop).unwrap()).unwrap();
    assert!(stop.starts_with("@@M33,123456789012345,C01,0,12222*"), "{stop}");
    let resume = String::from_utf8(encode(Command::EngineResume).unwrap()).unwrap();
    assert!(resume.contains(",C01,0,02222*"));
    let out2 = String::from_utf8(encode(Command::OutputControl { index: 2, active: true }).unwrap()).unwrap();
    assert!(out2.contains(",C01,0,21222*"));
    let custom = String::from_utf8(encode(Command::Custom { text: "A12,6".into() }).unwrap()).unwrap();
    assert!(custom.contains(",123456789012345,A12,6*"));
    assert!(encode(Command::OutputControl { index: 6, active: true }).is_err());
    assert!(encode(Command::Reboot).is_err());
    assert!(encode(Command::Custom { text: "A10*".into() }).is_err());
    // Every server frame must itself satisfy the length and checksum rules.
    for frame in [String::from_utf8(locate).unwrap(), stop, resume, out2, custom] {
        let b = frame.as_bytes();
        let star = frame.rfind('*').unwrap();
        let sum = b[..=star].iter().fold(0u8, |a, x| a.wrapping_add(*x));
        assert_eq!(&frame[star + 1..star + 3], format!("{sum:02X}"), "{frame}");
        let comma = frame.find(',').unwrap();
        let declared: usize = frame[3..comma].parse().unwrap();
        assert_eq!(declared, frame.len() - comma, "{frame}");
        assert!(frame.ends_with("\r\n"));
    }
}
