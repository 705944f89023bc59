//! Freematics vectors: the generic harness plus the record fields it does not know
//! (device ms counter, battery, OBD PIDs, event fields of logins).

mod common;

use protocols::{IoValue, MessageKind, Protocol};
use serde_json::Value;

fn io_num(v: Option<&IoValue>) -> Option<f64> {
    match v? {
        IoValue::U64(u) => Some(*u as f64),
        IoValue::I64(i) => Some(*i as f64),
        IoValue::F64(f) => Some(*f),
        _ => None,
    }
}

fn io_text(v: Option<&IoValue>) -> Option<String> {
    match v? {
        IoValue::Text(s) => Some(s.clone()),
        IoValue::U64(u) => Some(u.to_string()),
        IoValue::I64(i) => Some(i.to_string()),
        IoValue::F64(f) => Some(f.to_string()),
        IoValue::Bool(b) => Some(b.to_string()),
        IoValue::Bytes(b) => Some(hex::encode(b)),
    }
}

#[test]
fn freematics_vectors() {
    common::run_protocol(Protocol::Freematics, |r, v, d| {
        let e = &v.expect;
        let positions = d.positions();
        if let Some(records) = e["records"].as_array() {
            for (i, (p, rec)) in positions.iter().zip(records).enumerate() {
                if let Some(ms) = rec["device_ms"].as_f64() {
                    r.checked_values += 1;
                    if io_num(p.attributes.io.get_id(0)) != Some(ms) {
                        r.fail(
                            v,
                            format!("records[{i}].device_ms: io[0] {:?} != {ms}", p.attributes.io.get_id(0)),
                        );
                    }
                }
                if let Some(b) = rec["battery_v"].as_f64() {
                    r.checked_values += 1;
                    if !p.attributes.battery_v.is_some_and(|x| (x - b).abs() < 1e-6) {
                        r.fail(v, format!("records[{i}].battery_v {:?} != {b}", p.attributes.battery_v));
                    }
                }
                if let Some(pids) = rec["obd_pid"].as_object() {
                    for (k, want) in pids {
                        let pid = u32::from_str_radix(k.trim_start_matches("0x"), 16).expect("pid key");
                        r.checked_values += 1;
                        if io_num(p.attributes.io.get_id(0x100 + pid)) != want.as_f64() {
                            r.fail(
                                v,
                                format!(
                                    "records[{i}] PID {k}: io {:?} != {want}",
                                    p.attributes.io.get_id(0x100 + pid)
                                ),
                            );
                        }
                    }
                    r.checked_values += 1;
                    if !d.messages.iter().any(|m| m.kind == MessageKind::Obd) {
                        r.fail(v, "record with OBD PIDs did not decode as obd");
                    }
                }
            }
        }
        // Login / event fields.
        let event_msg = d
            .messages
            .iter()
            .find(|m| m.message_type.as_deref().is_some_and(|t| t.starts_with("EV=")));
        for (key, io_name) in [("event", "EV"), ("ts", "TS"), ("id", "ID")] {
            if let Some(want) = e[key].as_str() {
                r.checked_values += 1;
                let got = event_msg.and_then(|m| io_text(m.attributes.io.get_name(io_name)));
                if got.as_deref() != Some(want) {
                    r.fail(v, format!("{key}: {got:?} != {want}"));
                }
            }
        }
        if let Some(ev) = e["event"].as_str().and_then(|s| s.parse::<u32>().ok()) {
            r.checked_values += 1;
            if event_msg.and_then(|m| m.attributes.event) != Some(ev) {
                r.fail(v, format!("typed event != {ev}"));
            }
        }
        if let Some(n) = e["record_count"].as_u64() {
            r.checked_values += 1;
            if positions.len() as u64 != n {
                r.fail(v, format!("{} positions, record_count {n}", positions.len()));
            }
        }
        // Traccar's verify call: null (no position), positions (a list).
        match &e["traccar_result"] {
            Value::String(s) if s == "null" => {
                r.checked_values += 1;
                if !positions.is_empty() {
                    r.fail(v, "Traccar returns no position for this frame, we decoded some");
                }
            }
            Value::String(s) if s.starts_with("positions") => {
                r.checked_values += 1;
                if positions.is_empty() {
                    r.fail(v, "Traccar returns positions for this frame, we decoded none");
                }
            }
            _ => {}
        }
    });
}

#[test]
fn freematics_downlink_vectors() {
    let codec = Protocol::Freematics.codec(protocols::Transport::Udp).expect("codec");
    for v in common::load("freematics").iter().filter(|v| v.direction == "downlink") {
        let cmd: protocols::Command =
            serde_json::from_value(v.expect["encoder_input"].clone()).unwrap_or_else(|e| panic!("{}: {e}", v.label()));
        let out = codec
            .encode_command("", &cmd, &common::ctx())
            .unwrap_or_else(|e| panic!("{}: {e}", v.label()));
        assert_eq!(out, v.bytes, "{}", v.label());
    }
}
