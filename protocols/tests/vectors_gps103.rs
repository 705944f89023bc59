//! GPS103 against the shared real-device vectors: the generic checks, plus keyword,
//! Traccar attributes we map (course, temperature, fuel, alarm…) and the downlink vector.

mod common;

use common::{Decoded, Report, Vector};
use protocols::{Alarm, Command, IoValue, MessageKind, Protocol, Transport};
use serde_json::Value;

fn alarm_name(a: &Alarm) -> String {
    match a {
        Alarm::Sos => "sos".into(),
        Alarm::LowBattery => "lowBattery".into(),
        Alarm::Geofence => "geofence".into(),
        Alarm::Movement => "movement".into(),
        Alarm::Overspeed => "overspeed".into(),
        Alarm::Door => "door".into(),
        Alarm::PowerCut => "powerCut".into(),
        Alarm::Accident => "accident".into(),
        Alarm::Vibration => "vibration".into(),
        Alarm::Fault => "fault".into(),
        Alarm::FuelLeak => "fuelLeak".into(),
        Alarm::Temperature => "temperature".into(),
        Alarm::Other(name) => name.clone(),
        other => format!("{other:?}"),
    }
}

fn io_number(v: Option<&IoValue>) -> Option<f64> {
    match v? {
        IoValue::U64(n) => Some(*n as f64),
        IoValue::I64(n) => Some(*n as f64),
        IoValue::F64(n) => Some(*n),
        _ => None,
    }
}

fn check_attributes(r: &mut Report, v: &Vector, d: &Decoded, attrs: &Value) {
    let Some(map) = attrs.as_object() else { return };
    let positions = d.positions();
    let all_attrs: Vec<&protocols::Attributes> = d
        .messages
        .iter()
        .flat_map(|m| std::iter::once(&m.attributes).chain(m.positions.iter().map(|p| &p.attributes)))
        .collect();
    for (key, want) in map {
        let close = |x: Option<f64>| matches!((x, want.as_f64()), (Some(a), Some(b)) if (a - b).abs() < 1e-6);
        let ok = match key.as_str() {
            "course" => positions.iter().any(|p| close(p.course_deg)),
            "altitude" => positions.iter().any(|p| close(p.altitude_m)),
            "temp1" => all_attrs.iter().any(|a| close(io_number(a.io.get_name("temp1")))),
            "fuel1" => all_attrs.iter().any(|a| close(io_number(a.io.get_name("fuel1")))),
            "fuel2" => all_attrs.iter().any(|a| close(io_number(a.io.get_name("fuel2")))),
            "ignition" => all_attrs.iter().any(|a| a.ignition == want.as_bool()),
            "driverUniqueId" => all_attrs.iter().any(|a| a.driver_id.as_deref() == want.as_str()),
            "alarm" => all_attrs
                .iter()
                .any(|a| a.alarms.iter().any(|x| Some(alarm_name(x).as_str()) == want.as_str())),
            "rpm" => all_attrs.iter().any(|a| close(a.rpm)),
            "coolantTemp" => all_attrs.iter().any(|a| close(a.coolant_c)),
            "dtcs" => all_attrs
                .iter()
                .any(|a| Some(a.dtcs.join(" ").as_str()) == want.as_str()),
            _ => continue,
        };
        r.checked_values += 1;
        if !ok {
            r.fail(v, format!("attribute {key} = {want} not decoded"));
        }
    }
}

fn extra(r: &mut Report, v: &Vector, d: &Decoded) {
    let e = &v.expect;
    if let Some(k) = e["keyword"].as_str() {
        r.checked_values += 1;
        if !d.messages.iter().any(|m| m.message_type.as_deref() == Some(k)) {
            let ours: Vec<_> = d.messages.iter().map(|m| m.message_type.clone()).collect();
            r.fail(v, format!("keyword {k:?} not among {ours:?}"));
        }
    }
    check_attributes(r, v, d, &e["attributes"]);
    // OBD reports carry their values typed.
    for m in d.messages.iter().filter(|m| m.kind == MessageKind::Obd) {
        r.checked_values += 1;
        if m.attributes.io.get_name("time").is_none() {
            r.fail(v, "OBD report without its time");
        }
    }
}

#[test]
fn gps103_uplink_vectors() {
    common::run_protocol(Protocol::Gps103, extra);
}

#[test]
fn gps103_obd_values() {
    let vectors = common::load("gps103");
    let v = vectors
        .iter()
        .find(|v| v.bytes.starts_with(b"imei:359710048977327,OBD"))
        .expect("OBD vector present");
    let d = common::decode(Protocol::Gps103, v);
    let a = &d.messages[0].attributes;
    assert_eq!(a.odometer_m, Some(5_000_000.0));
    assert_eq!(a.engine_hours, Some(98.0));
    assert_eq!(a.obd_speed_kmh, Some(18.0));
    assert_eq!(a.engine_load_pct, Some(68.63));
    assert_eq!(a.coolant_c, Some(55.0));
    assert_eq!(a.throttle_pct, Some(25.10));
    assert_eq!(a.rpm, Some(1368.0));
    assert_eq!(a.power_v, Some(14.24));
    let v = vectors
        .iter()
        .find(|v| v.bytes.starts_with(b"imei:868683027758113,OBD"))
        .expect("OBD vector with DTCs present");
    let d = common::decode(Protocol::Gps103, v);
    assert_eq!(
        d.messages[0].attributes.dtcs,
        vec!["P0137".to_owned(), "P0430".to_owned()]
    );
}

fn command_for(input: &Value) -> Command {
    match input["command_type"].as_str().expect("command_type") {
        "custom" => Command::Custom {
            text: input["data"].as_str().expect("data").to_owned(),
        },
        "positionSingle" => Command::Locate,
        "positionStop" => Command::SetInterval { seconds: 0 },
        "positionPeriodic" => Command::SetInterval {
            seconds: input["frequency"].as_u64().unwrap_or(300) as u32,
        },
        "engineStop" => Command::EngineStop,
        "engineResume" => Command::EngineResume,
        "alarmArm" => Command::AlarmArm,
        "alarmDisarm" => Command::AlarmDisarm,
        "requestPhoto" => Command::RequestPhoto,
        other => panic!("no mapping for GPS103 command {other}"),
    }
}

#[test]
fn gps103_downlink_vectors() {
    let ctx = common::ctx();
    let codec = Protocol::Gps103.codec(Transport::Tcp).expect("codec");
    let mut n = 0;
    for v in common::load("gps103").iter().filter(|v| v.direction == "downlink") {
        let input = &v.expect["encoder_input"];
        let imei = input["device_unique_id"].as_str().expect("id");
        let ours = codec.encode_command(imei, &command_for(input), &ctx).expect("encodes");
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&v.bytes),
            "{}",
            v.label()
        );
        n += 1;
    }
    assert!(n > 0);
    let enc = |c: Command| String::from_utf8(codec.encode_command("123456789012345", &c, &ctx).unwrap()).unwrap();
    assert_eq!(
        enc(Command::SetInterval { seconds: 300 }),
        "**,imei:123456789012345,C,05m"
    );
    assert_eq!(
        enc(Command::SetInterval { seconds: 7200 }),
        "**,imei:123456789012345,C,02h"
    );
    assert_eq!(
        enc(Command::SetInterval { seconds: 30 }),
        "**,imei:123456789012345,C,30s"
    );
    assert_eq!(enc(Command::EngineStop), "**,imei:123456789012345,J");
    assert!(codec.encode_command("12ab", &Command::Locate, &ctx).is_err());
}

/// Every real frame, truncated at each byte and with each byte replaced by separators,
/// digits, letters, invalid UTF-8 or a multi-byte character, decodes or fails cleanly.
#[test]
fn gps103_vector_mutations_never_panic() {
    let ctx = common::ctx();
    let replacements: [&[u8]; 9] = [b"", b",", b".", b"-", b"9", b"A", b"\xff", "é".as_bytes(), b"#)*;$"];
    for v in common::load("gps103").iter().filter(|v| v.direction == "uplink") {
        for i in 0..v.bytes.len() {
            for with in replacements {
                let mut bytes = v.bytes.clone();
                bytes.splice(i..i + 1, with.iter().copied());
                for input in [&bytes[..], &v.bytes[..i]] {
                    let mut codec = Protocol::Gps103.codec(v.transport).expect("codec");
                    let _ = protocols::decode_all(codec.as_mut(), input, &ctx);
                    let _ = codec.decode(input, &ctx);
                }
            }
        }
    }
}
