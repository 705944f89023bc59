//! Queclink (gl200) vectors: the generic harness plus the `expect` fields it does not know —
//! message type, header, HDOP of the first fix, Traccar `attributes` (mapped onto our typed
//! attributes or the Traccar-named `io` entries), Traccar's result class, and downlink frames.

mod common;

use common::{Decoded, Report, Vector};
use protocols::{Alarm, Attributes, Command, IoValue, Message, Protocol, Transport};
use serde_json::Value;

/// Our alarm in Traccar's vocabulary.
fn traccar_alarm(a: &Alarm) -> String {
    match a {
        Alarm::Sos => "sos".into(),
        Alarm::Overspeed => "overspeed".into(),
        Alarm::LowSpeed => "lowspeed".into(),
        Alarm::HardAcceleration => "hardAcceleration".into(),
        Alarm::HardBraking => "hardBraking".into(),
        Alarm::HardCornering => "hardCornering".into(),
        Alarm::Accident => "accident".into(),
        Alarm::Vibration => "vibration".into(),
        Alarm::Movement => "movement".into(),
        Alarm::Tow => "tow".into(),
        Alarm::Idle => "idle".into(),
        Alarm::PowerCut => "powerCut".into(),
        Alarm::PowerRestored => "powerRestored".into(),
        Alarm::PowerOn => "powerOn".into(),
        Alarm::PowerOff => "powerOff".into(),
        Alarm::LowBattery => "lowBattery".into(),
        Alarm::LowPower => "lowPower".into(),
        Alarm::GeofenceEnter => "geofenceEnter".into(),
        Alarm::GeofenceExit => "geofenceExit".into(),
        Alarm::Geofence => "geofence".into(),
        Alarm::Jamming => "jamming".into(),
        Alarm::Tampering => "tampering".into(),
        Alarm::Removing => "removing".into(),
        Alarm::Door => "door".into(),
        Alarm::Temperature => "temperature".into(),
        Alarm::Fatigue => "fatigueDriving".into(),
        Alarm::FallDown => "fallDown".into(),
        Alarm::GpsAntennaCut => "gpsAntennaCut".into(),
        Alarm::FuelLeak => "fuelLeak".into(),
        Alarm::Fault => "fault".into(),
        Alarm::General => "general".into(),
        Alarm::Other(s) => s.clone(),
    }
}

fn io_json(v: &IoValue) -> Value {
    match v {
        IoValue::U64(v) => Value::from(*v),
        IoValue::I64(v) => Value::from(*v),
        IoValue::F64(v) => Value::from(*v),
        IoValue::Bool(v) => Value::from(*v),
        IoValue::Text(v) => Value::from(v.as_str()),
        IoValue::Bytes(v) => Value::from(hex::encode(v)),
    }
}

/// Where a Traccar attribute lives in our model. Several candidates where Traccar's key is
/// ambiguous (`fuel` is litres, percent or a raw sensor level depending on the report).
fn lookup(key: &str, a: &Attributes, m: &Message) -> Vec<Value> {
    let f = |v: Option<f64>| v.map(Value::from);
    let typed = match key {
        "batteryLevel" => vec![f(a.battery_pct)],
        "battery" => vec![f(a.battery_v)],
        "power" => vec![f(a.power_v)],
        "ignition" => vec![a.ignition.map(Value::from)],
        "motion" => vec![a.motion.map(Value::from)],
        "fuel" => vec![f(a.fuel_level_l), f(a.fuel_level_pct)],
        "fuelUsed" => vec![f(a.fuel_used_l)],
        "rpm" => vec![f(a.rpm)],
        "obdSpeed" => vec![f(a.obd_speed_kmh)],
        "coolantTemp" => vec![f(a.coolant_c)],
        "throttle" => vec![f(a.throttle_pct)],
        "engineLoad" => vec![f(a.engine_load_pct)],
        "odometer" | "obdOdometer" => vec![f(a.odometer_m)],
        // Traccar keeps hours in milliseconds.
        "hours" => vec![f(a.engine_hours.map(|h| h * 3_600_000.0))],
        "vin" => vec![a.vin.as_deref().map(Value::from)],
        "driverUniqueId" => vec![a.driver_id.as_deref().map(Value::from)],
        "rssi" => vec![a.rssi.map(Value::from)],
        "dtcs" => vec![(!a.dtcs.is_empty()).then(|| Value::from(a.dtcs.join(" ")))],
        "alarm" => a.alarms.iter().map(|x| Some(Value::from(traccar_alarm(x)))).collect(),
        "result" => vec![m.result.as_deref().map(Value::from)],
        _ => vec![],
    };
    let io = a.io.get_name(key).map(io_json);
    typed.into_iter().chain(std::iter::once(io)).flatten().collect()
}

fn same(ours: &Value, want: &Value) -> bool {
    match (ours.as_f64(), want.as_f64()) {
        (Some(a), Some(b)) => (a - b).abs() <= 1e-6 * b.abs().max(1.0),
        _ => ours == want,
    }
}

/// Attribute maps to search: the last fix of each message (where report values go), then the
/// message itself.
fn attribute_maps(d: &Decoded) -> Vec<(&Attributes, &Message)> {
    let mut out = Vec::new();
    for m in &d.messages {
        for p in m.positions.iter().rev() {
            out.push((&p.attributes, m));
        }
        out.push((&m.attributes, m));
    }
    out
}

fn check_attributes(r: &mut Report, v: &Vector, d: &Decoded) {
    let Some(attrs) = v.expect["attributes"].as_object() else {
        return;
    };
    for (key, want) in attrs {
        r.checked_values += 1;
        let found: Vec<Value> = attribute_maps(d)
            .into_iter()
            .flat_map(|(a, m)| lookup(key, a, m))
            .collect();
        if want.is_null() {
            if !found.is_empty() {
                r.fail(v, format!("attribute {key}: expected absent, found {found:?}"));
            }
        } else if !found.iter().any(|o| same(o, want)) {
            r.fail(v, format!("attribute {key}: expected {want}, found {found:?}"));
        }
    }
}

fn check_extra(r: &mut Report, v: &Vector, d: &Decoded) {
    let e = &v.expect;
    for key in ["message_type", "binary_header"] {
        if let Some(want) = e[key].as_str() {
            r.checked_values += 1;
            if !d.messages.iter().any(|m| m.message_type.as_deref() == Some(want)) {
                let ours: Vec<_> = d.messages.iter().map(|m| m.message_type.clone()).collect();
                r.fail(v, format!("{key} {want:?} not among {ours:?}"));
            }
        }
    }
    if let Some(want) = e["header"].as_str() {
        r.checked_values += 1;
        let raw_header = |a: &Attributes| a.io.get_id(0).cloned();
        let ours: Vec<_> = attribute_maps(d)
            .into_iter()
            .filter_map(|(a, _)| raw_header(a))
            .collect();
        if !ours.contains(&IoValue::Text(want.to_owned())) {
            r.fail(v, format!("header {want:?} not kept raw (io \"0\"): {ours:?}"));
        }
    }
    if let Some(count) = e["count_number"].as_str() {
        // The count number is what the server acknowledges.
        r.checked_values += 1;
        let ack = d
            .ack()
            .map(|a| String::from_utf8_lossy(&a).into_owned())
            .unwrap_or_default();
        if !(ack.ends_with(&format!(",{count}$")) || ack.ends_with(&format!(":{count}$"))) {
            r.fail(v, format!("count number {count:?} not acknowledged: {ack:?}"));
        }
    }
    if let Some(want) = e["first_fix"]["hdop"].as_f64() {
        r.checked_values += 1;
        let ours = d.positions().first().and_then(|p| p.hdop);
        if ours != Some(want) {
            r.fail(v, format!("first_fix.hdop {ours:?} != {want}"));
        }
    }
    let results: Vec<&str> = match &e["traccar_result"] {
        Value::String(s) => vec![s.as_str()],
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    if results.iter().any(|r| matches!(*r, "position" | "positions")) {
        r.checked_values += 1;
        if d.positions().is_empty() {
            r.fail(v, "Traccar decodes a fix here; we decoded none");
        }
    }
    check_attributes(r, v, d);
}

#[test]
fn gl200_vectors() {
    common::run_protocol(Protocol::Gl200, check_extra);
}

/// Traccar command names onto ours.
fn command_of(input: &Value) -> Option<Command> {
    Some(match input["command_type"].as_str()? {
        "engineStop" => Command::EngineStop,
        "engineResume" => Command::EngineResume,
        "positionSingle" => Command::Locate,
        "rebootDevice" => Command::Reboot,
        "custom" => Command::Custom {
            text: input["data"].as_str()?.to_owned(),
        },
        _ => return None,
    })
}

#[test]
fn gl200_downlink_vectors() {
    let ctx = common::ctx();
    for v in common::load("gl200").iter().filter(|v| v.direction == "downlink") {
        let command =
            command_of(&v.expect["encoder_input"]).unwrap_or_else(|| panic!("{}: unknown command", v.label()));
        let codec = Protocol::Gl200.codec(v.transport).expect("codec");
        let imei = v.expect["encoder_input"]["device_unique_id"].as_str().unwrap_or("");
        let ours = codec.encode_command(imei, &command, &ctx).expect("encodes");
        assert_eq!(ours, v.bytes, "{}", v.label());
    }
}

#[test]
fn command_password_follows_the_session_model() {
    let ctx = common::ctx();
    let mut codec = Protocol::Gl200.codec(Transport::Tcp).unwrap();
    let stop = codec.encode_command("", &Command::EngineStop, &ctx).unwrap();
    assert_eq!(stop, b"AT+GTOUT=gl200,1,,,0,0,0,0,0,0,0,,,,,,,FFFF$");
    codec
        .decode(b"+ACK:GTHBD,1F0101,135790246811220,,20100214093254,11F0$", &ctx)
        .unwrap();
    let locate = codec.encode_command("", &Command::Locate, &ctx).unwrap();
    assert_eq!(locate, b"AT+GTRTO=gv500,1,,,,,,FFFF$");
}

mod mutations {
    use super::*;
    use proptest::prelude::*;

    fn frames() -> &'static [Vec<u8>] {
        static FRAMES: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
        FRAMES.get_or_init(|| common::load("gl200").into_iter().map(|v| v.bytes).collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

        /// Real reports with fields dropped, duplicated or replaced, or cut short, reach the
        /// deep per-report layouts that random bytes never do: they must decode or fail cleanly.
        #[test]
        fn mutated_reports_never_panic(
            pick in any::<prop::sample::Index>(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..4, "[-0-9A-Fa-f.:$]{0,20}"), 1..6),
            cut in any::<prop::sample::Index>(),
        ) {
            let frame = pick.get(frames()).clone();
            let text = String::from_utf8_lossy(&frame).into_owned();
            let mut fields: Vec<String> = text.split(',').map(str::to_owned).collect();
            for (at, op, value) in edits {
                if fields.is_empty() {
                    break;
                }
                let i = at.index(fields.len());
                match op {
                    0 => { fields.remove(i); }
                    1 => { let f = fields[i].clone(); fields.insert(i, f); }
                    2 => fields[i] = value,
                    _ => fields.insert(i, value),
                }
            }
            let mutated = fields.join(",").into_bytes();
            let end = cut.index(mutated.len() + 1);
            let ctx = common::ctx();
            for input in [&mutated[..], &mutated[..end], &frame[..cut.index(frame.len() + 1)]] {
                let mut codec = Protocol::Gl200.codec(Transport::Tcp).unwrap();
                let _ = protocols::decode_all(codec.as_mut(), input, &ctx);
                let _ = codec.decode(input, &ctx);
            }
        }
    }
}
