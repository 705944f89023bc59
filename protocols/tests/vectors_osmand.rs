//! OsmAnd vectors: the generic harness plus the HTTP status Traccar answers (200 when the
//! request decodes with a device id, 400 when it has none — the HTTP layer's rule) and
//! the Transistorsoft `coords.speed` in m/s.

mod common;

use protocols::Protocol;

#[test]
fn osmand_vectors() {
    common::run_protocol(Protocol::Osmand, |r, v, d| {
        let e = &v.expect;
        if let Some(status) = e["traccar_http_status"].as_u64() {
            r.checked_values += 1;
            let has_id = d.errors.is_empty() && d.messages.iter().any(|m| m.imei.is_some());
            match status {
                200 if !has_id => r.fail(v, "HTTP 200 expected: the request must decode with a device id"),
                400 if has_id => r.fail(v, "HTTP 400 expected: the request must have no device id"),
                200 | 400 => {}
                other => r.fail(v, format!("unexpected status {other} in vector")),
            }
        }
        if let Some(mps) = e["coords_speed"].as_f64() {
            r.checked_values += 1;
            let ours = d.positions().first().and_then(|p| p.speed_kmh);
            let ok = if mps < 0.0 {
                ours.is_none()
            } else {
                ours.is_some_and(|k| (k - mps * 3.6).abs() < 1e-6)
            };
            if !ok {
                r.fail(v, format!("coords.speed {mps} m/s decoded as {ours:?} km/h"));
            }
        }
        if e["traccar_result"].as_str() == Some("position") {
            r.checked_values += 1;
            if d.positions().len() != 1 {
                r.fail(v, format!("one position expected, {} decoded", d.positions().len()));
            }
        }
    });
}

#[test]
fn osmand_downlink_vectors() {
    let codec = Protocol::Osmand.codec(protocols::Transport::Http).expect("codec");
    for v in common::load("osmand").iter().filter(|v| v.direction == "downlink") {
        let cmd: protocols::Command =
            serde_json::from_value(v.expect["encoder_input"].clone()).unwrap_or_else(|e| panic!("{}: {e}", v.label()));
        let out = codec
            .encode_command("", &cmd, &common::ctx())
            .unwrap_or_else(|e| panic!("{}: {e}", v.label()));
        assert_eq!(out, v.bytes, "{}", v.label());
    }
}
