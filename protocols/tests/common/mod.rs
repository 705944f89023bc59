//! Shared harness for the real-device vectors in `../shared/vectors/public/`.
//!
//! Vectors are read at test time, never copied into the repo. Each protocol's test file
//! calls [`run_protocol`], which checks every uplink frame: it decodes without error
//! (or, for frames whose own checksum is wrong, is rejected as a checksum/length error),
//! the message kind matches the vector's classification, and every `expect` value our
//! output represents matches. Protocol-specific checks get the decoded messages back.

#![allow(dead_code)]

use std::path::PathBuf;

use chrono::{DateTime, TimeZone, Utc};
use protocols::{DecodeContext, DecodeError, Message, Position, Protocol, Transport, decode_all};
use serde_json::Value;

/// Fixed server time so acks that carry it are reproducible.
pub fn ctx() -> DecodeContext {
    DecodeContext {
        now: Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).single().expect("valid date"),
    }
}

pub fn vectors_dir() -> PathBuf {
    if let Ok(d) = std::env::var("CLUTCH_VECTORS_DIR") {
        return PathBuf::from(d);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors/public")
}

#[derive(Debug, Clone)]
pub struct Vector {
    pub line: usize,
    pub raw: Value,
    pub transport: Transport,
    pub kind: String,
    pub direction: String,
    pub integrity: String,
    pub bytes: Vec<u8>,
    pub expect: Value,
}

impl Vector {
    pub fn label(&self) -> String {
        let src = self.raw["source"].as_str().unwrap_or("");
        let src = src.rsplit('/').next().unwrap_or(src);
        format!("line {} ({src})", self.line)
    }
}

pub fn load(protocol: &str) -> Vec<Vector> {
    let path = vectors_dir().join(format!("{protocol}.jsonl"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read test vectors {}: {e}. The vectors live in the shared/ folder beside the \
             repository (../shared/vectors/public); set CLUTCH_VECTORS_DIR to point elsewhere.",
            path.display()
        )
    });
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let raw: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{protocol}.jsonl:{}: {e}", i + 1));
        let transport: Transport = raw["transport"].as_str().unwrap_or("tcp").parse().expect("transport");
        let frame = raw["frame"].as_str().expect("frame");
        let bytes = match raw["encoding"].as_str() {
            Some("hex") => hex::decode(frame).unwrap_or_else(|e| panic!("{protocol}.jsonl:{}: bad hex {e}", i + 1)),
            _ => frame.as_bytes().to_vec(),
        };
        out.push(Vector {
            line: i + 1,
            transport,
            kind: raw["kind"].as_str().unwrap_or("").to_owned(),
            direction: raw["direction"].as_str().unwrap_or("uplink").to_owned(),
            integrity: raw["integrity"].as_str().unwrap_or("").to_owned(),
            expect: raw["expect"].clone(),
            bytes,
            raw,
        });
    }
    assert!(!out.is_empty(), "no vectors in {}", path.display());
    out
}

pub struct Decoded {
    pub messages: Vec<Message>,
    pub errors: Vec<DecodeError>,
}

impl Decoded {
    pub fn positions(&self) -> Vec<&Position> {
        self.messages.iter().flat_map(|m| m.positions.iter()).collect()
    }
    pub fn ack(&self) -> Option<Vec<u8>> {
        let acks: Vec<u8> = self.messages.iter().filter_map(|m| m.ack.clone()).flatten().collect();
        if acks.is_empty() { None } else { Some(acks) }
    }
}

pub fn decode(protocol: Protocol, v: &Vector) -> Decoded {
    let mut codec = protocol
        .codec(v.transport)
        .unwrap_or_else(|e| panic!("{}: {e}", v.label()));
    let (messages, errors) = decode_all(codec.as_mut(), &v.bytes, &ctx());
    Decoded { messages, errors }
}

/// Failures are collected rather than panicking at the first, so one run shows them all.
#[derive(Default)]
pub struct Report {
    pub failures: Vec<String>,
    pub frames: usize,
    pub checked_values: usize,
    pub rejected_bad_checksum: usize,
}

impl Report {
    pub fn fail(&mut self, v: &Vector, msg: impl Into<String>) {
        self.failures.push(format!("{}: {}", v.label(), msg.into()));
    }
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

fn check_time(r: &mut Report, v: &Vector, what: &str, ours: DateTime<Utc>, expected: &Value) {
    if let Some(s) = expected.as_str() {
        let want: DateTime<Utc> = s
            .parse()
            .unwrap_or_else(|e| panic!("{}: bad timestamp {s}: {e}", v.label()));
        r.checked_values += 1;
        if ours != want {
            r.fail(v, format!("{what}: time {ours} != expected {want}"));
        }
    }
}

fn check_f64(r: &mut Report, v: &Vector, what: &str, ours: Option<f64>, expected: &Value, tol: f64) {
    if let Some(want) = expected.as_f64() {
        r.checked_values += 1;
        match ours {
            Some(o) if close(o, want, tol) => {}
            other => r.fail(v, format!("{what}: {other:?} != expected {want}")),
        }
    }
}

/// Check one fix against an expect object with the keys the vectors use.
pub fn check_position(r: &mut Report, v: &Vector, what: &str, p: &Position, e: &Value) {
    check_time(r, v, &format!("{what}.timestamp"), p.time, &e["timestamp"]);
    check_f64(
        r,
        v,
        &format!("{what}.latitude"),
        Some(p.latitude),
        &e["latitude"],
        1e-5,
    );
    check_f64(
        r,
        v,
        &format!("{what}.longitude"),
        Some(p.longitude),
        &e["longitude"],
        1e-5,
    );
    if let Some(valid) = e["valid"].as_bool() {
        r.checked_values += 1;
        if p.valid != valid {
            r.fail(v, format!("{what}.valid: {} != expected {valid}", p.valid));
        }
    }
    check_f64(r, v, &format!("{what}.speed_kmh"), p.speed_kmh, &e["speed_kmh"], 0.01);
    if let Some(knots) = e["speed_knots"].as_f64() {
        check_f64(
            r,
            v,
            &format!("{what}.speed(knots)"),
            p.speed_kmh,
            &Value::from(knots * 1.852),
            0.01,
        );
    }
    for key in ["altitude", "altitude_m"] {
        check_f64(r, v, &format!("{what}.altitude"), p.altitude_m, &e[key], 0.01);
    }
    for key in ["course", "angle"] {
        check_f64(r, v, &format!("{what}.course"), p.course_deg, &e[key], 0.01);
    }
    for key in ["satellites", "gps_satellites"] {
        check_f64(
            r,
            v,
            &format!("{what}.satellites"),
            p.satellites.map(f64::from),
            &e[key],
            0.0,
        );
    }
}

/// Run every generic check for `protocol`; `extra` gets each uplink vector and its
/// decode for protocol-specific checks. Panics with every failure listed.
pub fn run_protocol(protocol: Protocol, mut extra: impl FnMut(&mut Report, &Vector, &Decoded)) {
    let vectors = load(protocol.name());
    let mut r = Report::default();
    for v in vectors.iter().filter(|v| v.direction == "uplink") {
        r.frames += 1;
        let d = decode(protocol, v);
        if v.integrity == "checksum_mismatch_in_frame" {
            if d.errors
                .iter()
                .any(|e| matches!(e, DecodeError::Checksum { .. } | DecodeError::Length { .. }))
            {
                r.rejected_bad_checksum += 1;
            } else {
                r.fail(
                    v,
                    format!("frame with a wrong checksum was not rejected: errors {:?}", d.errors),
                );
            }
            continue;
        }
        if !d.errors.is_empty() {
            r.fail(v, format!("decode errors: {:?}", d.errors));
            continue;
        }
        if d.messages.is_empty() {
            r.fail(v, "no message decoded");
            continue;
        }
        if !v.kind.is_empty() && !d.messages.iter().any(|m| m.kind.as_str() == v.kind) {
            let ours: Vec<&str> = d.messages.iter().map(|m| m.kind.as_str()).collect();
            r.fail(v, format!("kind {:?} not among decoded kinds {ours:?}", v.kind));
        }
        let e = &v.expect;
        // Identity: the vectors call it imei, device_id or (TK103 classic) device_id_12.
        for key in ["imei", "device_id", "device_id_12"] {
            if let Some(id) = e[key].as_str() {
                r.checked_values += 1;
                if !d.messages.iter().any(|m| m.imei.as_deref() == Some(id)) {
                    let ours: Vec<_> = d.messages.iter().map(|m| m.imei.clone()).collect();
                    r.fail(v, format!("{key} {id:?} not among decoded ids {ours:?}"));
                }
            }
        }
        let positions = d.positions();
        // Top-level fix fields describe the first fix.
        if e["latitude"].is_number() || e["timestamp"].is_string() {
            match positions.first() {
                Some(p) if e["latitude"].is_number() || p.time.timestamp() != 0 => {
                    check_position(&mut r, v, "fix", p, e)
                }
                Some(_) => {}
                None if e["latitude"].is_number() => r.fail(v, "expected a fix, none decoded"),
                None => {}
            }
        }
        if e["first_fix"].is_object() {
            match positions.first() {
                Some(p) => check_position(&mut r, v, "first_fix", p, &e["first_fix"]),
                None => r.fail(v, "expected first_fix, no position decoded"),
            }
        }
        if let Some(records) = e["records"].as_array() {
            r.checked_values += 1;
            if positions.len() != records.len() {
                r.fail(
                    v,
                    format!(
                        "{} positions decoded, {} records expected",
                        positions.len(),
                        records.len()
                    ),
                );
            } else {
                for (i, (p, rec)) in positions.iter().zip(records).enumerate() {
                    check_position(&mut r, v, &format!("records[{i}]"), p, rec);
                }
            }
        }
        if let Some(want) = e["traccar_ack_hex"].as_str() {
            r.checked_values += 1;
            let ours = d.ack().map(hex::encode);
            if ours.as_deref() != Some(&want.to_ascii_lowercase()) {
                r.fail(v, format!("ack {ours:?} != expected {want}"));
            }
        }
        let ack_text = e["traccar_ack_text"]
            .as_str()
            .or(e["traccar_ack_text_if_ack_enabled"].as_str());
        if let Some(want) = ack_text {
            r.checked_values += 1;
            let ours = d.ack().map(|a| String::from_utf8_lossy(&a).into_owned());
            if ours.as_deref() != Some(want) {
                r.fail(v, format!("ack text {ours:?} != expected {want:?}"));
            }
        }
        if let Some(template) = e["traccar_ack_template"].as_str() {
            r.checked_values += 1;
            let want = template.replace(
                "<server UTC yyyyMMddHHmmss>",
                &ctx().now.format("%Y%m%d%H%M%S").to_string(),
            );
            let ours = d.ack().map(|a| String::from_utf8_lossy(&a).into_owned());
            if ours.as_deref() != Some(want.as_str()) {
                r.fail(v, format!("ack {ours:?} != expected {want:?}"));
            }
        }
        if let Some(frames) = e["frame_decoder_output"].as_array() {
            check_framing(&mut r, protocol, v, frames);
        }
        extra(&mut r, v, &d);
    }
    eprintln!(
        "{}: {} uplink frames, {} values checked, {} bad-checksum frames rejected, {} failures",
        protocol.name(),
        r.frames,
        r.checked_values,
        r.rejected_bad_checksum,
        r.failures.len()
    );
    assert!(
        r.failures.is_empty(),
        "{} vector failures for {}:\n{}",
        r.failures.len(),
        protocol.name(),
        r.failures.join("\n")
    );
}

/// The frames our framing cuts must be the ones the reference frame decoder cuts
/// (ours may keep a terminator the reference strips, at most two bytes).
fn check_framing(r: &mut Report, protocol: Protocol, v: &Vector, expected: &[Value]) {
    let codec = protocol.codec(v.transport).expect("codec");
    let mut ours: Vec<Vec<u8>> = Vec::new();
    let mut rest: &[u8] = &v.bytes;
    while !rest.is_empty() {
        match codec.frame(rest, true) {
            protocols::Framing::Frame { start, end } => {
                ours.push(rest[start..end].to_vec());
                rest = &rest[end..];
            }
            protocols::Framing::Resync { discard, .. } => rest = &rest[discard.min(rest.len())..],
            _ => break,
        }
    }
    r.checked_values += 1;
    let want: Vec<Vec<u8>> = expected
        .iter()
        .map(|f| hex::decode(f.as_str().unwrap_or("")).unwrap_or_default())
        .collect();
    let ok = ours.len() == want.len()
        && ours
            .iter()
            .zip(&want)
            .all(|(o, w)| o.starts_with(w) && o.len() <= w.len() + 2);
    if !ok {
        r.fail(
            v,
            format!(
                "framing cut {:?}, expected {:?}",
                ours.iter().map(hex::encode).collect::<Vec<_>>(),
                want.iter().map(hex::encode).collect::<Vec<_>>()
            ),
        );
    }
}

/// Replace or insert bytes, including multi-byte UTF-8 and the protocol's separators.
pub fn mutate(mut bytes: Vec<u8>, ops: &[(usize, bool, Vec<u8>)], cut: usize) -> Vec<u8> {
    for (at, insert, with) in ops {
        let i = at % bytes.len().max(1);
        if *insert {
            bytes.splice(i..i, with.iter().copied());
        } else {
            let end = (i + with.len()).min(bytes.len());
            bytes.splice(i..end, with.iter().copied());
        }
    }
    bytes.truncate(1 + cut % bytes.len().max(1));
    bytes
}

/// Feed `stream` to `codec` in chunks of the given sizes (then the rest at once), framing
/// and decoding as a network reader would; panics on a framing error or decode error.
/// Round-trip tests compare the result with decoding the whole stream in one go.
pub fn decode_in_chunks(codec: &mut dyn protocols::Codec, stream: &[u8], cuts: &[usize]) -> Vec<Message> {
    let mut buf = Vec::new();
    let mut fed = 0;
    let mut out = Vec::new();
    let mut chunks = cuts.iter().copied().chain(std::iter::repeat(usize::MAX));
    loop {
        let eof = fed >= stream.len();
        match codec.frame(&buf, eof) {
            protocols::Framing::Frame { start, end } => {
                out.extend(codec.decode(&buf[start..end], &ctx()).expect("decodes"));
                buf.drain(..end);
            }
            protocols::Framing::Incomplete if !eof => {
                let n = chunks.next().unwrap_or(usize::MAX).clamp(1, stream.len() - fed);
                buf.extend_from_slice(&stream[fed..fed + n]);
                fed += n;
            }
            protocols::Framing::Incomplete => break,
            other => panic!("{other:?}"),
        }
    }
    out
}

/// Mutations for text protocols: random bytes, multi-byte UTF-8, field separators, digits
/// and the protocol's own frame terminator.
pub fn text_mutations(
    terminator: &'static [u8],
) -> impl proptest::strategy::Strategy<Value = Vec<(usize, bool, Vec<u8>)>> {
    use proptest::prelude::*;
    let piece = prop_oneof![
        proptest::collection::vec(any::<u8>(), 1..3),
        Just("é".as_bytes().to_vec()),
        Just("€".as_bytes().to_vec()),
        Just(b",".to_vec()),
        Just(b".".to_vec()),
        Just(b"-".to_vec()),
        Just(terminator.to_vec()),
        "[0-9]{1,4}".prop_map(String::into_bytes),
    ];
    proptest::collection::vec((any::<usize>(), any::<bool>(), piece), 1..6)
}
