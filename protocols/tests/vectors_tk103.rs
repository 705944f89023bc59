//! TK103 against the shared real-device vectors: the generic checks, plus the command
//! code, Traccar attributes we map (VIN, alarm, ignition…) and the downlink vectors.

mod common;

use common::{Decoded, Report, Vector};
use protocols::{Alarm, Command, IoValue, Protocol, Transport, tk103};
use serde_json::Value;

fn alarm_name(a: &Alarm) -> String {
    match a {
        Alarm::Sos => "sos".into(),
        Alarm::Accident => "accident".into(),
        Alarm::Vibration => "vibration".into(),
        Alarm::LowSpeed => "lowspeed".into(),
        Alarm::Overspeed => "overspeed".into(),
        Alarm::GeofenceExit => "geofenceExit".into(),
        Alarm::LowBattery => "lowBattery".into(),
        Alarm::Idle => "idle".into(),
        Alarm::HardAcceleration => "hardAcceleration".into(),
        Alarm::HardBraking => "hardBraking".into(),
        Alarm::Temperature => "temperature".into(),
        Alarm::Movement => "movement".into(),
        Alarm::PowerCut => "powerCut".into(),
        Alarm::Removing => "removing".into(),
        Alarm::Tampering => "tampering".into(),
        Alarm::LowPower => "lowPower".into(),
        other => format!("{other:?}"),
    }
}

/// Checks the Traccar attribute keys this decoder maps; other keys are not ours to judge.
fn check_attributes(r: &mut Report, v: &Vector, d: &Decoded, attrs: &Value) {
    let Some(map) = attrs.as_object() else { return };
    let all_attrs: Vec<&protocols::Attributes> = d
        .messages
        .iter()
        .flat_map(|m| std::iter::once(&m.attributes).chain(m.positions.iter().map(|p| &p.attributes)))
        .collect();
    for (key, want) in map {
        let ok = match key.as_str() {
            "vin" => all_attrs.iter().any(|a| a.vin.as_deref() == want.as_str()),
            "alarm" => all_attrs
                .iter()
                .any(|a| a.alarms.iter().any(|x| Some(alarm_name(x).as_str()) == want.as_str())),
            "ignition" => all_attrs.iter().any(|a| a.ignition == want.as_bool()),
            "odometer" => all_attrs.iter().any(|a| a.odometer_m == want.as_f64()),
            "fuel" | "fuelLevel" => all_attrs
                .iter()
                .any(|a| matches!(a.io.get_name("fuel"), Some(IoValue::U64(f)) if Some(*f as f64) == want.as_f64())),
            "batteryLevel" => all_attrs.iter().any(|a| a.battery_pct == want.as_f64()),
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
    if let Some(cmd) = e["command"].as_str() {
        r.checked_values += 1;
        if !d.messages.iter().any(|m| m.message_type.as_deref() == Some(cmd)) {
            let ours: Vec<_> = d.messages.iter().map(|m| m.message_type.clone()).collect();
            r.fail(v, format!("command {cmd:?} not among {ours:?}"));
        }
    }
    check_attributes(r, v, d, &e["attributes"]);
    if v.kind == "command_response" {
        r.checked_values += 1;
        if !d.messages.iter().any(|m| m.result.is_some()) {
            r.fail(v, "command response without result text");
        }
    }
}

#[test]
fn tk103_uplink_vectors() {
    common::run_protocol(Protocol::Tk103, extra);
}

fn command_for(input: &Value) -> Command {
    let data = || input["data"].as_str().unwrap_or("").to_owned();
    let alternative = input["alternative"].as_bool().unwrap_or(false);
    match input["command_type"].as_str().expect("command_type") {
        "outputControl" => Command::OutputControl {
            index: 1,
            active: data() == "1",
        },
        "engineStop" => Command::EngineStop,
        "engineResume" => Command::EngineResume,
        "positionSingle" => Command::Locate,
        "positionStop" => Command::SetInterval { seconds: 0 },
        "positionPeriodic" => Command::SetInterval {
            seconds: input["frequency"].as_u64().unwrap_or(60) as u32,
        },
        "rebootDevice" => Command::Reboot,
        "custom" => Command::Custom { text: data() },
        // No typed command: these go out as the protocol's own text.
        "getVersion" => Command::Custom {
            text: if alternative { "*about*" } else { "AP07" }.into(),
        },
        "setOdometer" => Command::Custom { text: "AX01".into() },
        "identification" => Command::Custom { text: "999999".into() },
        "powerOff" => Command::Custom {
            text: "*turnoff*".into(),
        },
        "getDeviceStatus" => Command::Custom {
            text: "*status*".into(),
        },
        "alarmSos" => Command::Custom {
            text: if input["enable"].as_bool().unwrap_or(false) {
                "*soson*"
            } else {
                "*sosoff*"
            }
            .into(),
        },
        "setConnection" => Command::Custom {
            text: format!(
                "*setip*{}*{}*",
                input["server"].as_str().expect("server").replace('.', "*"),
                input["port"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| input["port"].to_string())
            ),
        },
        other => panic!("no mapping for TK103 command {other}"),
    }
}

#[test]
fn tk103_downlink_vectors() {
    let ctx = common::ctx();
    let codec = Protocol::Tk103.codec(Transport::Tcp).expect("codec");
    let mut n = 0;
    for v in common::load("tk103").iter().filter(|v| v.direction == "downlink") {
        let input = &v.expect["encoder_input"];
        let imei = input["device_unique_id"].as_str().expect("id");
        let cmd = command_for(input);
        let ours = if input["alternative"].as_bool().unwrap_or(false) {
            tk103::encode_alternative_command(&cmd)
        } else {
            codec.encode_command(imei, &cmd, &ctx)
        }
        .unwrap_or_else(|e| panic!("{}: {e}", v.label()));
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
    assert_eq!(enc(Command::EngineStop), "(123456789012345AV010)");
    assert_eq!(enc(Command::EngineResume), "(123456789012345AV011)");
    assert_eq!(
        enc(Command::SetInterval { seconds: 60 }),
        "(123456789012345AR00003C0000)"
    );
    assert!(
        codec
            .encode_command("1", &Command::SetInterval { seconds: 70_000 }, &ctx)
            .is_err()
    );
    assert!(codec.encode_command("1", &Command::AlarmArm, &ctx).is_err());
}

/// Every real frame, truncated at each byte and with each byte replaced by separators,
/// digits, letters, invalid UTF-8 or a multi-byte character, decodes or fails cleanly.
#[test]
fn tk103_vector_mutations_never_panic() {
    let ctx = common::ctx();
    let replacements: [&[u8]; 9] = [b"", b",", b".", b"-", b"9", b"A", b"\xff", "é".as_bytes(), b"#)*;$"];
    for v in common::load("tk103").iter().filter(|v| v.direction == "uplink") {
        for i in 0..v.bytes.len() {
            for with in replacements {
                let mut bytes = v.bytes.clone();
                bytes.splice(i..i + 1, with.iter().copied());
                for input in [&bytes[..], &v.bytes[..i]] {
                    let mut codec = Protocol::Tk103.codec(v.transport).expect("codec");
                    let _ = protocols::decode_all(codec.as_mut(), input, &ctx);
                    let _ = codec.decode(input, &ctx);
                }
            }
        }
    }
}
