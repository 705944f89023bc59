//! GT06 real-device vectors: the generic harness plus GT06-specific checks (protocol
//! number, serial, `gps_positioned`, Traccar attributes, result presence) and the
//! downlink command vectors.

mod common;

use common::{Decoded, Report, Vector};
use protocols::{Alarm, Codec, Command, IoValue, Message, MessageKind, Protocol, Transport};
use serde_json::Value;

/// Traccar's alarm strings (as the vectors hold them) → ours.
fn alarm_from_traccar(s: &str) -> Option<Alarm> {
    Some(match s {
        "general" => Alarm::General,
        "sos" => Alarm::Sos,
        "vibration" => Alarm::Vibration,
        "overspeed" => Alarm::Overspeed,
        "lowBattery" => Alarm::LowBattery,
        "lowPower" => Alarm::LowPower,
        "powerCut" => Alarm::PowerCut,
        "powerOff" => Alarm::PowerOff,
        "powerOn" => Alarm::PowerOn,
        "geofence" => Alarm::Geofence,
        "geofenceEnter" => Alarm::GeofenceEnter,
        "geofenceExit" => Alarm::GeofenceExit,
        "hardBraking" => Alarm::HardBraking,
        "hardAcceleration" => Alarm::HardAcceleration,
        "hardCornering" => Alarm::HardCornering,
        "accident" => Alarm::Accident,
        "tampering" => Alarm::Tampering,
        "removing" => Alarm::Removing,
        "door" => Alarm::Door,
        "fallDown" => Alarm::FallDown,
        "jamming" => Alarm::Jamming,
        "temperature" => Alarm::Temperature,
        "idle" => Alarm::Idle,
        "fuelLeak" => Alarm::FuelLeak,
        "tow" => Alarm::Tow,
        _ => return None,
    })
}

fn all_attrs(m: &Message) -> impl Iterator<Item = &protocols::Attributes> {
    std::iter::once(&m.attributes).chain(m.positions.iter().map(|p| &p.attributes))
}

fn io_value<'a>(d: &'a Decoded, key: &str) -> Option<&'a IoValue> {
    d.messages.iter().flat_map(all_attrs).find_map(|a| a.io.get_name(key))
}

fn io_matches(v: &IoValue, want: &Value) -> bool {
    match (v, want) {
        (IoValue::Text(s), Value::String(w)) => s == w,
        (IoValue::U64(n), Value::Number(w)) => w.as_f64().is_some_and(|w| (*n as f64 - w).abs() < 1e-6),
        (IoValue::I64(n), Value::Number(w)) => w.as_f64().is_some_and(|w| (*n as f64 - w).abs() < 1e-6),
        (IoValue::F64(x), Value::Number(w)) => w.as_f64().is_some_and(|w| (x - w).abs() < 1e-6),
        (IoValue::Bool(b), Value::Bool(w)) => b == w,
        _ => false,
    }
}

fn check_attribute(r: &mut Report, v: &Vector, d: &Decoded, key: &str, want: &Value) {
    r.checked_values += 1;
    match key {
        "alarm" => {
            let Some(name) = want.as_str() else {
                if !d.messages.iter().flat_map(all_attrs).all(|a| a.alarms.is_empty()) {
                    r.fail(v, "alarm expected absent");
                }
                return;
            };
            let Some(want) = alarm_from_traccar(name) else {
                r.fail(v, format!("unknown Traccar alarm {name}"));
                return;
            };
            if !d.messages.iter().flat_map(all_attrs).any(|a| a.alarms.contains(&want)) {
                r.fail(v, format!("alarm {want:?} not decoded"));
            }
        }
        "driverUniqueId" => {
            let ours: Vec<_> = d
                .messages
                .iter()
                .flat_map(all_attrs)
                .filter_map(|a| a.driver_id.clone())
                .collect();
            if !ours.iter().any(|id| Some(id.as_str()) == want.as_str()) {
                r.fail(v, format!("driver id {ours:?} != {want}"));
            }
        }
        "batteryLevel" => {
            let ours: Vec<_> = d
                .messages
                .iter()
                .flat_map(all_attrs)
                .filter_map(|a| a.battery_pct)
                .collect();
            if !ours.iter().any(|p| want.as_f64().is_some_and(|w| (p - w).abs() < 1e-6)) {
                r.fail(v, format!("battery_pct {ours:?} != {want}"));
            }
        }
        _ => match io_value(d, key) {
            Some(ours) if io_matches(ours, want) => {}
            other => r.fail(v, format!("io {key}: {other:?} != expected {want}")),
        },
    }
}

fn extra(r: &mut Report, v: &Vector, d: &Decoded) {
    let e = &v.expect;
    if let Some(pn) = e["protocol_number"].as_str() {
        r.checked_values += 1;
        let want = format!("0x{}", pn.trim_start_matches("0x").to_ascii_uppercase());
        if !d
            .messages
            .iter()
            .all(|m| m.message_type.as_deref() == Some(want.as_str()))
        {
            let ours: Vec<_> = d.messages.iter().map(|m| m.message_type.clone()).collect();
            r.fail(v, format!("message types {ours:?} != {want}"));
        }
    }
    if let Some(serial) = e["serial"].as_str() {
        r.checked_values += 1;
        let want = u64::from_str_radix(serial, 16).expect("hex serial");
        match io_value(d, "packetSerial") {
            Some(IoValue::U64(n)) if *n == want => {}
            other => r.fail(v, format!("serial {other:?} != {want:#06x}")),
        }
    }
    if let Some(valid) = e["gps_positioned"].as_bool() {
        r.checked_values += 1;
        match d.positions().first() {
            Some(p) if p.valid == valid => {}
            other => r.fail(v, format!("gps_positioned {valid}: fix {other:?}")),
        }
    }
    if let Some(attrs) = e["attributes"].as_object() {
        for (k, want) in attrs {
            check_attribute(r, v, d, k, want);
        }
    }
    let results: Vec<&str> = match &e["traccar_result"] {
        Value::String(s) => vec![s.as_str()],
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    if results.iter().any(|s| *s == "position" || *s == "positions") {
        r.checked_values += 1;
        if d.positions().is_empty() {
            r.fail(v, "Traccar decodes a fix here; none decoded");
        }
    }
    // A login the harness identified must also stick to the session: the codec is
    // the same one, so its messages all carry the IMEI.
    if let Some(imei) = e["imei"].as_str() {
        r.checked_values += 1;
        if !d.messages.iter().all(|m| m.imei.as_deref() == Some(imei)) {
            r.fail(v, "IMEI not on every message of the session");
        }
    }
    // Command replies carry their text.
    if d.messages.iter().any(|m| m.kind == MessageKind::CommandResponse) {
        r.checked_values += 1;
        if !d
            .messages
            .iter()
            .any(|m| m.result.as_deref().is_some_and(|t| !t.is_empty()))
        {
            r.fail(v, "command response without result text");
        }
    }
}

#[test]
fn gt06_vectors() {
    common::run_protocol(Protocol::Gt06, extra);
}

fn command_from(input: &Value) -> Command {
    match input["command_type"].as_str() {
        Some("engineStop") => Command::EngineStop,
        Some("engineResume") => Command::EngineResume,
        Some("custom") => Command::Custom {
            text: input["data"].as_str().unwrap_or("").to_owned(),
        },
        other => panic!("downlink vector with unhandled command {other:?}"),
    }
}

#[test]
fn gt06_downlink_vectors() {
    let vectors = common::load("gt06");
    let downlink: Vec<_> = vectors.iter().filter(|v| v.direction == "downlink").collect();
    assert!(!downlink.is_empty(), "no downlink vectors");
    for v in downlink {
        let codec = Protocol::Gt06.codec(Transport::Tcp).expect("codec");
        let cmd = command_from(&v.expect["encoder_input"]);
        let ours = codec
            .encode_command("123456789012345", &cmd, &common::ctx())
            .expect("encodes");
        assert_eq!(hex::encode(&ours), hex::encode(&v.bytes), "{}", v.label());
    }
}

#[test]
fn command_serial_counts_up() {
    let codec = Protocol::Gt06.codec(Transport::Tcp).expect("codec");
    let a = codec
        .encode_command("1", &Command::EngineResume, &common::ctx())
        .expect("a");
    let b = codec
        .encode_command("1", &Command::EngineResume, &common::ctx())
        .expect("b");
    let n = a.len();
    assert_eq!(&a[..4], &[0x78, 0x78, 0x12, 0x80]);
    assert_eq!(&a[n - 6..n - 4], &[0, 0]);
    assert_eq!(&b[n - 6..n - 4], &[0, 1]);
    assert_eq!(&a[9..17], b"Relay,0#");
    // Every command round-trips our own framing and CRC check.
    let mut codec2 = Protocol::Gt06.codec(Transport::Tcp).expect("codec");
    let (msgs, errs) = protocols::decode_all(codec2.as_mut(), &b, &common::ctx());
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(msgs.len(), 1);
    assert!(msgs[0].ack.is_none(), "command echoes are not acknowledged");
}

#[test]
fn unsupported_and_invalid_commands() {
    let codec = Protocol::Gt06.codec(Transport::Tcp).expect("codec");
    let ctx = common::ctx();
    assert!(
        codec
            .encode_command("1", &Command::SetInterval { seconds: 30 }, &ctx)
            .is_err()
    );
    let long = Command::Custom { text: "x".repeat(246) };
    assert!(codec.encode_command("1", &long, &ctx).is_err());
    let ok = Command::Custom { text: "x".repeat(245) };
    assert_eq!(codec.encode_command("1", &ok, &ctx).expect("fits").len(), 255 + 5);
    let utf = Command::Custom { text: "é".into() };
    assert!(codec.encode_command("1", &utf, &ctx).is_err());
}

/// The codec value is `Box<dyn Codec>`; make sure the trait object is usable across threads.
#[test]
fn codec_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let c: Box<dyn Codec> = Protocol::Gt06.codec(Transport::Tcp).expect("codec");
    assert_send(&c);
}
