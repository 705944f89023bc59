//! Teltonika real-device vectors: the generic harness plus what it does not know —
//! every record's raw IO map, event id, priority and generation type, the typed
//! attributes the FMB table maps, command-response text, Traccar-asserted attributes,
//! and the downlink frames.

// The shared harness is not rustfmt-clean under the workspace config and is not ours
// to edit; skip it so `cargo fmt --check` judges only this file.
#[rustfmt::skip]
mod common;

use common::{Decoded, Report, Vector};
use protocols::{Command, IoKey, IoValue, Message, MessageKind, Position, Protocol, Transport};
use serde_json::Value;

fn io_id(p: &Position, id: u32) -> Option<&IoValue> {
    p.attributes.io.get_id(id)
}

fn io_name<'a>(p: &'a [&'a Message], name: &str) -> Option<&'a IoValue> {
    p.iter().find_map(|m| m.attributes.io.get_name(name))
}

/// Raw IO values as the vectors write them: numbers for fixed groups, hex strings for
/// 8E variable-length values.
fn as_json(v: &IoValue) -> Value {
    match v {
        IoValue::U64(n) => Value::from(*n),
        IoValue::Bytes(b) => Value::from(hex::encode(b)),
        other => Value::from(format!("{other:?}")),
    }
}

fn check_record(r: &mut Report, v: &Vector, i: usize, p: &Position, rec: &Value) {
    // The raw map holds exactly the record's IO elements (numeric keys), in any order.
    if let Some(want) = rec["io"].as_object() {
        r.checked_values += 1;
        let ours: serde_json::Map<String, Value> = p
            .attributes
            .io
            .0
            .iter()
            .filter_map(|(k, v)| match k {
                IoKey::Id(id) => Some((id.to_string(), as_json(v))),
                IoKey::Name(_) => None,
            })
            .collect();
        if &ours != want {
            r.fail(v, format!("records[{i}].io: ours {ours:?} != expected {want:?}"));
        }
    }
    if let Some(event) = rec["event_io_id"].as_u64() {
        r.checked_values += 1;
        let ours = p.attributes.event.map_or(0, u64::from);
        if ours != event {
            r.fail(v, format!("records[{i}].event: {ours} != {event}"));
        }
    }
    if let Some(priority) = rec["priority"].as_u64() {
        r.checked_values += 1;
        let ours = match p.attributes.io.get_name("priority") {
            Some(IoValue::U64(n)) => *n,
            _ => 0,
        };
        if ours != priority {
            r.fail(v, format!("records[{i}].priority: {ours} != {priority}"));
        }
    }
    if let Some(g) = rec["generation_type"].as_u64() {
        r.checked_values += 1;
        if p.attributes.io.get_name("generation_type") != Some(&IoValue::U64(g)) {
            r.fail(v, format!("records[{i}].generation_type missing or != {g}"));
        }
    }
    check_typed(r, v, i, p);
}

/// The typed attributes agree with the raw values they come from (FMB table).
fn check_typed(r: &mut Report, v: &Vector, i: usize, p: &Position) {
    let a = &p.attributes;
    let raw = |id| match io_id(p, id) {
        Some(IoValue::U64(n)) => Some(*n),
        _ => None,
    };
    let mut expect = |what: &str, ok: bool| {
        r.checked_values += 1;
        if !ok {
            r.fail(v, format!("records[{i}].{what} does not match its raw IO value"));
        }
    };
    if let Some(n) = raw(239) {
        expect("ignition", a.ignition == Some(n != 0));
    }
    if let Some(n) = raw(240) {
        expect("motion", a.motion == Some(n != 0));
    }
    if let Some(n) = raw(16) {
        expect("odometer_m", a.odometer_m == Some(n as f64));
    }
    if let Some(n) = raw(66) {
        expect(
            "power_v",
            a.power_v.is_some_and(|x| (x - n as f64 / 1000.0).abs() < 1e-9),
        );
    }
    if let Some(n) = raw(67) {
        expect(
            "battery_v",
            a.battery_v.is_some_and(|x| (x - n as f64 / 1000.0).abs() < 1e-9),
        );
    }
    if let Some(n) = raw(21) {
        expect("rssi", a.rssi == Some(n as i32));
    }
    if let Some(n) = raw(182) {
        expect("hdop", p.hdop.is_some_and(|x| (x - n as f64 / 10.0).abs() < 1e-9));
    }
    // Id 85 only maps at its FMB width (codec 16 trucks send it as one byte with
    // another meaning), so compare only when it mapped.
    if let (Some(n), Some(rpm)) = (raw(85), a.rpm) {
        expect("rpm", rpm == n as f64);
    }
    if let Some(n) = raw(253) {
        let want = match n {
            1 => Some(protocols::Alarm::HardAcceleration),
            2 => Some(protocols::Alarm::HardBraking),
            3 => Some(protocols::Alarm::HardCornering),
            _ => None,
        };
        expect("green driving alarm", want.is_none_or(|w| a.alarms.contains(&w)));
    }
    let sats = p.satellites.unwrap_or(0);
    expect("valid", p.valid == (sats != 0));
}

fn extra(r: &mut Report, v: &Vector, d: &Decoded) {
    let e = &v.expect;
    let msgs: Vec<&Message> = d.messages.iter().collect();
    let positions = d.positions();

    if let Some(records) = e["records"].as_array() {
        for (i, (p, rec)) in positions.iter().zip(records).enumerate() {
            check_record(r, v, i, p, rec);
        }
    }
    if let Some(n) = e["record_count"].as_u64()
        && e["codec"]
            .as_str()
            .is_some_and(|c| ["0x08", "0x8E", "0x10", "0x07"].contains(&c))
    {
        r.checked_values += 1;
        if positions.len() as u64 != n {
            r.fail(v, format!("{} positions for record_count {n}", positions.len()));
        }
        let codec = e["codec"].as_str().unwrap_or_default();
        let name = match codec {
            "0x08" => "8",
            "0x8E" => "8E",
            "0x10" => "16",
            _ => "7",
        };
        r.checked_values += 1;
        if !msgs.iter().any(|m| m.message_type.as_deref() == Some(name)) {
            r.fail(v, format!("no message of type {name}"));
        }
    }

    // GPRS messages: type byte, result text, codec 13 timestamp, no ack.
    if let Some(t) = e["message_type"].as_str() {
        r.checked_values += 1;
        if !msgs.iter().any(|m| m.message_type.as_deref() == Some(t)) {
            let ours: Vec<_> = msgs.iter().map(|m| m.message_type.clone()).collect();
            r.fail(v, format!("message_type {t} not among {ours:?}"));
        }
        r.checked_values += 1;
        if d.ack().is_some() {
            r.fail(v, "codec 12/13 messages must not be acknowledged");
        }
        if t == "0x0D" {
            r.checked_values += 1;
            if !msgs.iter().all(|m| m.kind == MessageKind::Other) {
                r.fail(v, "camera messages must be kind other");
            }
        }
    }
    if let Some(text) = e["payload_text"].as_str() {
        r.checked_values += 1;
        if !msgs.iter().any(|m| m.result.as_deref() == Some(text.trim())) {
            let ours: Vec<_> = msgs.iter().map(|m| m.result.clone()).collect();
            r.fail(v, format!("result {:?} not among {ours:?}", text.trim()));
        }
    }
    if let Some(ts) = e["codec13_timestamp_s"].as_u64() {
        r.checked_values += 1;
        if io_name(&msgs, "timestamp") != Some(&IoValue::U64(ts)) {
            r.fail(v, format!("codec 13 timestamp {ts} not in io"));
        }
    }

    // Attributes the Traccar test asserts, under the names Traccar gives them.
    if let Some(attrs) = e["attributes"].as_object() {
        for (key, want) in attrs {
            r.checked_values += 1;
            let ours = positions
                .iter()
                .find_map(|p| p.attributes.io.get_name(key))
                .or_else(|| io_name(&msgs, key))
                .map(as_json);
            if ours.as_ref() != Some(want) {
                r.fail(v, format!("attribute {key}: {ours:?} != {want}"));
            }
        }
    }

    // Login frames: the session remembers the IMEI; the refusal byte is 00.
    if v.kind == "login" {
        let codec = Protocol::Teltonika.codec(v.transport).expect("codec");
        if let Some(login) = msgs.iter().find(|m| m.kind == MessageKind::Login) {
            r.checked_values += 1;
            if codec.refusal(login) != Some(vec![0x00]) {
                r.fail(v, "refusal is not 00");
            }
        }
    }
}

#[test]
fn teltonika_vectors() {
    common::run_protocol(Protocol::Teltonika, extra);
}

/// The extended-group frame decodes with its VIN and DTC list typed.
#[test]
fn typed_vin_and_dtcs_from_codec_8e() {
    let vectors = common::load("teltonika");
    let v = vectors
        .iter()
        .find(|v| v.expect["records"][0]["io"]["256"].is_string())
        .expect("a vector with a VIN");
    let d = common::decode(Protocol::Teltonika, v);
    let p = d.positions()[0];
    let vin = hex::decode(v.expect["records"][0]["io"]["256"].as_str().unwrap_or_default()).expect("hex");
    assert_eq!(
        p.attributes.vin.as_deref(),
        Some(String::from_utf8_lossy(&vin).as_ref())
    );
    let dtcs = hex::decode(v.expect["records"][0]["io"]["281"].as_str().unwrap_or_default()).expect("hex");
    let dtcs = String::from_utf8_lossy(&dtcs).into_owned();
    assert_eq!(p.attributes.dtcs, dtcs.split(',').collect::<Vec<_>>());
    // Id 30 (OBD block: number of DTCs) agrees with the list.
    assert_eq!(io_id(p, 30), Some(&IoValue::U64(p.attributes.dtcs.len() as u64)));
}

/// The session carries the login IMEI onto the AVL packets that follow it.
#[test]
fn session_imei_reaches_later_messages() {
    let vectors = common::load("teltonika");
    let login = vectors.iter().find(|v| v.kind == "login").expect("login vector");
    let avl = vectors
        .iter()
        .find(|v| v.kind == "position" && v.integrity == "checksum_ok")
        .expect("position vector");
    let mut codec = Protocol::Teltonika.codec(Transport::Tcp).expect("codec");
    let mut stream = login.bytes.clone();
    stream.extend_from_slice(&avl.bytes);
    stream.push(0xFF);
    let (msgs, errors) = protocols::decode_all(codec.as_mut(), &stream, &common::ctx());
    assert!(errors.is_empty(), "{errors:?}");
    let imei = login.expect["imei"].as_str().expect("imei");
    assert_eq!(msgs.len(), 3);
    assert!(msgs.iter().all(|m| m.imei.as_deref() == Some(imei)), "{msgs:?}");
    assert_eq!(msgs[2].kind, MessageKind::Heartbeat);
    assert_eq!(msgs[2].ack, None);
}

/// Every downlink vector: `encode_command` reproduces the frame byte for byte.
#[test]
fn downlink_vectors() {
    let vectors = common::load("teltonika");
    let codec = Protocol::Teltonika.codec(Transport::Tcp).expect("codec");
    let mut n = 0;
    for v in vectors.iter().filter(|v| v.direction == "downlink") {
        let input = &v.expect["encoder_input"];
        let data = input["command_data"].as_str().unwrap_or_default().to_owned();
        let command = match input["command_type"].as_str() {
            Some("custom") => Command::Custom { text: data },
            Some("engineStop") => Command::EngineStop,
            Some("engineResume") => Command::EngineResume,
            other => panic!("{}: unmapped command type {other:?}", v.label()),
        };
        let frame = codec
            .encode_command("123456789012345", &command, &common::ctx())
            .expect("encode");
        assert_eq!(hex::encode(&frame), hex::encode(&v.bytes), "{}", v.label());
        n += 1;
    }
    assert!(n > 0, "no downlink vectors");
}

/// The text-command example of PROTOCOLS.md §1.5 (`setdigout 11`, CR LF added).
#[test]
fn text_command_frame() {
    let codec = Protocol::Teltonika.codec(Transport::Tcp).expect("codec");
    let frame = codec
        .encode_command(
            "123456789012345",
            &Command::Custom {
                text: "setdigout 11".into(),
            },
            &common::ctx(),
        )
        .expect("encode");
    assert_eq!(
        hex::encode_upper(frame),
        "00000000000000160C01050000000E7365746469676F75742031310D0A010000E258"
    );
    let stop = codec
        .encode_command("123456789012345", &Command::EngineStop, &common::ctx())
        .expect("engine stop");
    assert!(stop.windows(11).any(|w| w == b"setdigout 1"));
    assert!(matches!(
        codec.encode_command("123456789012345", &Command::AlarmArm, &common::ctx()),
        Err(protocols::EncodeError::Unsupported { .. })
    ));
}
