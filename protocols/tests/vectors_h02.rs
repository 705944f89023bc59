//! H02 against the shared real-device vectors: the generic checks, plus message type,
//! raw status word and the downlink encoder vectors.

mod common;

use chrono::{TimeZone, Utc};
use common::{Decoded, Report, Vector};
use protocols::{Command, DecodeContext, IoValue, Protocol, Transport};

fn status_of(d: &Decoded) -> Vec<u64> {
    let mut out = Vec::new();
    for m in &d.messages {
        if let Some(IoValue::U64(s)) = m.attributes.io.get_name("status") {
            out.push(*s);
        }
        for p in &m.positions {
            if let Some(IoValue::U64(s)) = p.attributes.io.get_name("status") {
                out.push(*s);
            }
        }
    }
    out
}

fn extra(r: &mut Report, v: &Vector, d: &Decoded) {
    let e = &v.expect;
    if let Some(t) = e["message_type"].as_str() {
        r.checked_values += 1;
        if !d.messages.iter().any(|m| m.message_type.as_deref() == Some(t)) {
            let ours: Vec<_> = d.messages.iter().map(|m| m.message_type.clone()).collect();
            r.fail(v, format!("message_type {t:?} not among {ours:?}"));
        }
    }
    if let Some(hexs) = e["status_hex"].as_str() {
        r.checked_values += 1;
        let want = u64::from_str_radix(hexs, 16).expect("status hex");
        let ours = status_of(d);
        if !ours.contains(&want) {
            r.fail(v, format!("status {want:08x} not among {ours:x?}"));
        }
    }
    // Binary records are never acknowledged.
    for m in d
        .messages
        .iter()
        .filter(|m| m.message_type.as_deref().is_some_and(|t| t.starts_with("binary")))
    {
        r.checked_values += 1;
        if m.ack.is_some() {
            r.fail(v, "binary record must not be acknowledged");
        }
    }
}

#[test]
fn h02_uplink_vectors() {
    common::run_protocol(Protocol::H02, extra);
}

fn command_for(input: &serde_json::Value) -> Command {
    match input["command_type"].as_str().expect("command_type") {
        "alarmArm" => Command::AlarmArm,
        "alarmDisarm" => Command::AlarmDisarm,
        "engineStop" => Command::EngineStop,
        "engineResume" => Command::EngineResume,
        "positionPeriodic" => Command::SetInterval {
            seconds: input["frequency"].as_u64().unwrap_or(10) as u32,
        },
        "custom" => Command::Custom {
            text: input["data"].as_str().expect("data").to_owned(),
        },
        other => panic!("no mapping for H02 command {other}"),
    }
}

#[test]
fn h02_downlink_vectors() {
    // The encoder vectors were produced with the command time 01:02:03.
    let ctx = DecodeContext {
        now: Utc.with_ymd_and_hms(2026, 1, 2, 1, 2, 3).single().expect("date"),
    };
    let codec = Protocol::H02.codec(Transport::Tcp).expect("codec");
    let mut n = 0;
    for v in common::load("h02").iter().filter(|v| v.direction == "downlink") {
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
    // The other Traccar encoder tests (arm, engine stop, periodic reporting).
    let enc = |c: Command| String::from_utf8(codec.encode_command("123456789012345", &c, &ctx).unwrap()).unwrap();
    assert_eq!(enc(Command::AlarmArm), "*HQ,123456789012345,SCF,010203,0,0#");
    assert_eq!(enc(Command::EngineStop), "*HQ,123456789012345,S20,010203,1,1#");
    assert_eq!(
        enc(Command::SetInterval { seconds: 10 }),
        "*HQ,123456789012345,S71,010203,22,10#"
    );
    assert_eq!(
        enc(Command::Custom {
            text: "S71,22,30".into()
        }),
        "*HQ,123456789012345,S71,010203,22,30#"
    );
    assert!(codec.encode_command("1", &Command::Reboot, &ctx).is_err());
}

/// Every real frame, truncated at each byte and with each byte replaced by separators,
/// digits, letters, invalid UTF-8 or a multi-byte character, decodes or fails cleanly.
#[test]
fn h02_vector_mutations_never_panic() {
    let ctx = common::ctx();
    let replacements: [&[u8]; 9] = [b"", b",", b".", b"-", b"9", b"A", b"\xff", "é".as_bytes(), b"#)*;$"];
    for v in common::load("h02").iter().filter(|v| v.direction == "uplink") {
        for i in 0..v.bytes.len() {
            for with in replacements {
                let mut bytes = v.bytes.clone();
                bytes.splice(i..i + 1, with.iter().copied());
                for input in [&bytes[..], &v.bytes[..i]] {
                    let mut codec = Protocol::H02.codec(v.transport).expect("codec");
                    let _ = protocols::decode_all(codec.as_mut(), input, &ctx);
                    let _ = codec.decode(input, &ctx);
                }
            }
        }
    }
}
