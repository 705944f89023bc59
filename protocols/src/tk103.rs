//! TK103 (the `(…)`-framed protocol of the original TK103 and its many clones), TCP and UDP.
//!
//! **Framing.** A frame is `(` … `)`. A `)` inside `$…$` free text (command replies) does
//! not close it, as in Traccar's `Tk103FrameDecoder`. Filler (CR LF, spaces) before `(`
//! is skipped; other bytes before it, or a `(` inside an unterminated frame, are
//! resynchronised on the next `(`. Frames are at most 4 KiB; with `eof` an unterminated
//! tail is handed to the decoder, which reports it as truncated unless it parses.
//!
//! **Forms.** Classic: 12-character device id immediately followed by a 4-character
//! command (`(027044702512BP00…)`); the device id is taken as the frame carries it
//! (characters 1–12, even when a firmware sends an 11- or 15-character id there).
//! Comma form: `(<IMEI>,<CMD>,<fields…>)`, recognised by an all-digit id before the
//! first comma. The compact position payload (`yymmdd`, or `ddmmyy` in the comma form,
//! `A|V`, `DDMM.mmmm N|S`, `DDDMM.mmmm E|W`, speed km/h, `hhmmss`, course, 8 status
//! characters, `L` + odometer hex, optional `+ddd.d` temperature) is decoded the way
//! Traccar's regex reads it, with its backtracking over the speed and course widths.
//! Dates that are out of range roll over as `java.util.Calendar` does.
//!
//! **Messages.** `BP00` heartbeat, `BP05` login (with its fix), `BR00`/`BP02`/`DW3x`/`ZCxx`
//! positions, alarms for `BO01` (accident, SOS, vibration, low speed, overspeed,
//! geofence exit), `BQ81` (low battery, overspeed, idle, acceleration, braking,
//! temperature) and the `ZC`/`DW` alarm codes, `ZC15`/`ZC16`/`ZC29` ignition, `BV00`
//! VIN, `BZ00` cell, `ZC20` battery status, `ZC03` command reply (the `$…$` text) and
//! `DW5x` LBS/Wi-Fi reports (`DW5B`, the periodic one, counts as a position report).
//! Unknown commands are `other` with the raw text in `io.data`; `BR`/`BQ` reports whose
//! payload does not parse (e.g. `BQ86` vehicle data) stay position reports without a fix.
//!
//! **Acks** (Traccar `Tk103ProtocolDecoder.decode`): characters 1–12 are the id,
//! 13–16 the command: `BP00` → `(<id>AP01HSO)`, `BP05` → `(<id>AP05)`. Nothing else.
//!
//! **Downlink** (`Tk103ProtocolEncoder`): `(<id>AV010)` engine stop, `AV011` resume,
//! `AV00<0|1>` output 1, `AP00` locate, `AR00<seconds as 4 hex>0000` interval (0 stops),
//! `AT00` reboot, custom `(<id><text>)`; [`encode_alternative_command`] produces the
//! `[begin]sms2,…,[end]` form of the "alternative" firmware.

use chrono::{DateTime, Datelike, Timelike, Utc};

use crate::codec::{Codec, DecodeContext, DeviceEncoder, Framing, Transport};
use crate::error::{DecodeError, EncodeError, FrameError};
use crate::h02::text::{
    all_digits, all_hex, format_deg_min, hex_uint, is_filler, lenient_datetime, push_text, push_time, split_deg_min,
    triple, udec, uint,
};
use crate::model::{Alarm, Attributes, Command, IoValue, Message, MessageKind, Position};

const MAX_FRAME: usize = 4096;

pub fn codec(transport: Transport) -> Option<Box<dyn Codec>> {
    match transport {
        Transport::Tcp | Transport::Udp => Some(Box::new(Tk103Codec::default())),
        Transport::Http => None,
    }
}

pub fn device(transport: Transport) -> Option<Box<dyn DeviceEncoder>> {
    match transport {
        Transport::Tcp | Transport::Udp => Some(Box::new(Tk103Device)),
        Transport::Http => None,
    }
}

/// One TK103 session.
#[derive(Debug, Default)]
pub struct Tk103Codec {
    id: Option<String>,
}

impl Codec for Tk103Codec {
    fn protocol(&self) -> crate::Protocol {
        crate::Protocol::Tk103
    }

    fn frame(&self, buf: &[u8], eof: bool) -> Framing {
        let Some(start) = buf.iter().position(|b| !is_filler(*b)) else {
            return Framing::Incomplete;
        };
        if buf[start] != b'(' {
            let next = memchr::memchr(b'(', &buf[start..]).map_or(buf.len(), |i| start + i);
            return Framing::Resync {
                discard: next,
                error: FrameError::new("tk103: bytes before '('"),
            };
        }
        let mut in_text = false;
        for (i, &b) in buf.iter().enumerate().skip(start + 1) {
            if i - start >= MAX_FRAME {
                return Framing::Resync {
                    discard: start + 1,
                    error: FrameError::new(format!("tk103: no ')' within {MAX_FRAME} bytes")),
                };
            }
            match b {
                b'$' => in_text = !in_text,
                b')' if !in_text => return Framing::Frame { start, end: i + 1 },
                // A new frame starts before this one closed: this one was cut short.
                b'(' if !in_text => {
                    return Framing::Resync {
                        discard: i,
                        error: FrameError::new("tk103: frame interrupted by a new '('"),
                    };
                }
                _ => {}
            }
        }
        if eof {
            Framing::Frame { start, end: buf.len() }
        } else {
            Framing::Incomplete
        }
    }

    fn decode(&mut self, frame: &[u8], _ctx: &DecodeContext) -> Result<Vec<Message>, DecodeError> {
        let start = frame.iter().position(|b| !is_filler(*b)).unwrap_or(frame.len());
        let end = frame.iter().rposition(|b| !is_filler(*b)).map_or(start, |i| i + 1);
        let trimmed = frame.get(start..end).unwrap_or(&[]);
        let Some(inner) = trimmed.strip_prefix(b"(") else {
            return Err(DecodeError::invalid("frame", "a TK103 frame starts with '('", frame));
        };
        let (inner, closed) = match inner.strip_suffix(b")") {
            Some(i) => (i, true),
            None => (inner, false),
        };
        let body = String::from_utf8_lossy(inner);
        let msg = self
            .decode_body(&body, closed)
            .ok_or_else(|| DecodeError::truncated(frame))?;
        Ok(vec![msg])
    }

    fn encode_command(&self, imei: &str, command: &Command, _ctx: &DecodeContext) -> Result<Vec<u8>, EncodeError> {
        check_id(imei)?;
        let body = match command {
            Command::EngineStop => "AV010".to_owned(),
            Command::EngineResume => "AV011".to_owned(),
            Command::OutputControl { index: 1, active } => format!("AV00{}", u8::from(*active)),
            Command::Locate => "AP00".to_owned(),
            Command::SetInterval { seconds } => {
                let s = u16::try_from(*seconds).map_err(|_| EncodeError::Invalid {
                    field: "seconds",
                    reason: "TK103 intervals are at most 65535 s".into(),
                })?;
                format!("AR00{s:04X}0000")
            }
            Command::Reboot => "AT00".to_owned(),
            Command::Custom { text } => {
                if text.starts_with('(') || text.starts_with('[') {
                    return Ok(text.clone().into_bytes());
                }
                text.clone()
            }
            other => {
                return Err(EncodeError::Unsupported {
                    protocol: "tk103",
                    what: format!("{other:?}"),
                });
            }
        };
        Ok(format!("({imei}{body})").into_bytes())
    }
}

/// Commands for the "alternative" TK103 firmware (Traccar's `tk103.alternative`), sent
/// as `[begin]sms2,<sms text>,[end]`. Custom text is the SMS command itself.
pub fn encode_alternative_command(command: &Command) -> Result<Vec<u8>, EncodeError> {
    let text = match command {
        Command::Locate => "*getposl*",
        Command::SetInterval { seconds: 0 } => "*routetrackoff*",
        Command::SetInterval { .. } => "*routetrack*99*",
        Command::Reboot => "88888888",
        Command::Custom { text } => text.as_str(),
        other => {
            return Err(EncodeError::Unsupported {
                protocol: "tk103 (alternative)",
                what: format!("{other:?}"),
            });
        }
    };
    Ok(format!("[begin]sms2,{text},[end]").into_bytes())
}

fn check_id(id: &str) -> Result<(), EncodeError> {
    if id.is_empty()
        || id
            .bytes()
            .any(|b| matches!(b, b'(' | b')' | b',') || !b.is_ascii_graphic())
    {
        return Err(EncodeError::Invalid {
            field: "imei",
            reason: format!("{id:?} is not a usable TK103 device id"),
        });
    }
    Ok(())
}

impl Tk103Codec {
    fn decode_body(&mut self, body: &str, closed: bool) -> Option<Message> {
        let comma = body.find(',');
        let comma_form = comma.is_some_and(|c| c > 0 && all_digits(&body[..c]));
        let mut msg = if comma_form {
            let c = comma.unwrap_or(0);
            let id = &body[..c];
            let rest = &body[c + 1..];
            let (ty, payload) = rest.split_at(rest.find(',').unwrap_or(rest.len()));
            let m = decode_comma(ty, payload, closed)?;
            self.id = Some(id.to_owned());
            m.with_type(ty)
        } else {
            let id = body.get(..12)?;
            let ty = body.get(12..16)?;
            let m = decode_classic(ty, &body[12..], closed)?;
            self.id = Some(id.to_owned());
            m.with_type(ty)
        };
        // Traccar reads the ack from fixed offsets, whatever the form.
        if let (Some(id), Some(ty)) = (body.get(..12), body.get(12..16)) {
            match ty {
                "BP00" => msg.ack = Some(format!("({id}AP01HSO)").into_bytes()),
                "BP05" => msg.ack = Some(format!("({id}AP05)").into_bytes()),
                _ => {}
            }
        }
        msg.imei = self.id.clone();
        Some(msg)
    }
}

/// Alarm and ignition meaning of a command code (Traccar `decodeType`).
fn decode_type(ty: &str, data: &str) -> (Option<Alarm>, Option<bool>) {
    let alarm = match ty {
        "BQ81" => match data {
            "0" => Some(Alarm::LowBattery),
            "1" => Some(Alarm::Overspeed),
            "2" => Some(Alarm::Idle),
            "3" => Some(Alarm::HardAcceleration),
            "4" => Some(Alarm::HardBraking),
            "5" => Some(Alarm::Temperature),
            _ => None,
        },
        "BO01" => Some(match data.as_bytes().first() {
            Some(b'1') => Alarm::Accident,
            Some(b'2') => Alarm::Sos,
            Some(b'3') => Alarm::Vibration,
            Some(b'4') => Alarm::LowSpeed,
            Some(b'5') => Alarm::Overspeed,
            Some(b'6') => Alarm::GeofenceExit,
            // Still an alarm frame; the code is kept in io.
            _ => Alarm::General,
        }),
        "ZC11" | "DW31" | "DW51" => Some(Alarm::Movement),
        "ZC12" | "DW32" | "DW52" => Some(Alarm::LowBattery),
        "ZC13" | "DW33" | "DW53" => Some(Alarm::PowerCut),
        "ZC17" | "DW37" | "DW57" => Some(Alarm::Removing),
        "ZC25" | "DW3E" | "DW5E" => Some(Alarm::Sos),
        "ZC26" | "DW3F" | "DW5F" => Some(Alarm::Tampering),
        "ZC27" | "DW40" | "DW60" => Some(Alarm::LowPower),
        _ => None,
    };
    let ignition = match ty {
        "ZC15" | "DW35" | "DW55" | "ZC29" | "DW42" | "DW62" => Some(true),
        "ZC16" | "DW36" | "DW56" => Some(false),
        _ => None,
    };
    (alarm, ignition)
}

/// `from_type` is the frame from the command on (`BR00150428A…`).
fn decode_classic(ty: &str, from_type: &str, closed: bool) -> Option<Message> {
    let payload = &from_type[4..];
    let mut m;
    match ty {
        "BP00" => {
            m = Message::new(MessageKind::Heartbeat);
            keep(&mut m.attributes, "data", payload);
        }
        "BV00" => {
            m = Message::new(MessageKind::Other);
            let vin = payload
                .get(..17)
                .filter(|v| v.bytes().all(|b| b.is_ascii_alphanumeric()));
            match vin {
                Some(vin) => {
                    m.attributes.vin = Some(vin.to_owned());
                    push_text(&mut m.attributes.io, "vin", vin);
                }
                None => keep(&mut m.attributes, "data", payload),
            }
        }
        "BZ00" => {
            m = Message::new(MessageKind::Other);
            let f: Vec<&str> = payload.trim_start_matches(',').split(',').collect();
            let io = &mut m.attributes.io;
            match (f.first().and_then(|v| uint(v)), f.get(1).and_then(|v| uint(v))) {
                (Some(mcc), Some(mnc)) => {
                    io.push_name("mcc", IoValue::U64(mcc));
                    io.push_name("mnc", IoValue::U64(mnc));
                    if let (Some(lac), Some(cid)) =
                        (f.get(2).and_then(|v| hex_uint(v)), f.get(3).and_then(|v| hex_uint(v)))
                    {
                        io.push_name("lac", IoValue::U64(lac));
                        io.push_name("cid", IoValue::U64(cid));
                    }
                    push_text(io, "cells", &f[2..].join(","));
                }
                _ => keep(&mut m.attributes, "data", payload),
            }
        }
        _ => {
            // Firmwares with an 11-character id shift everything by one: look for the
            // payload from the command on, without data digits.
            let parsed = parse_payload(payload, false).or_else(|| {
                parse_payload(from_type, false).map(|mut p| {
                    p.data = "";
                    p
                })
            });
            if parsed.is_none() && !closed {
                return None;
            }
            let data = parsed.as_ref().map_or("", |p| p.data);
            let (alarm, ignition) = decode_type(ty, data);
            let kind = if ty == "BP05" {
                MessageKind::Login
            } else if alarm.is_some() {
                MessageKind::Alarm
            } else if parsed.is_some() || ty.starts_with("BR") || ty.starts_with("BQ") {
                MessageKind::Position
            } else {
                MessageKind::Other
            };
            m = Message::new(kind);
            match parsed {
                Some(p) => {
                    let mut pos = p.position(DateOrder::Ymd)?;
                    apply_type(&mut pos.attributes, alarm, ignition);
                    if !p.data.is_empty() {
                        push_text(&mut pos.attributes.io, "data", p.data);
                    }
                    m.positions.push(pos);
                }
                None => {
                    apply_type(&mut m.attributes, alarm, ignition);
                    keep(&mut m.attributes, "data", payload);
                }
            }
        }
    }
    Some(m)
}

fn apply_type(a: &mut Attributes, alarm: Option<Alarm>, ignition: Option<bool>) {
    if let Some(alarm) = alarm {
        a.raise(alarm);
    }
    if ignition.is_some() {
        a.ignition = ignition;
    }
}

fn keep(a: &mut Attributes, name: &str, value: &str) {
    if !value.is_empty() {
        push_text(&mut a.io, name, value);
    }
}

/// `ddmmyy` + `hhmmss` fields (comma form).
fn dmy_hms(date: &str, time: &str) -> Option<DateTime<Utc>> {
    let (d, mo, y) = triple(date)?;
    let (h, mi, s) = triple(time)?;
    lenient_datetime(y, mo, d, h, mi, s)
}

fn decode_comma(ty: &str, payload: &str, closed: bool) -> Option<Message> {
    // `payload` starts at the comma after the command (or is empty).
    let fields: Vec<&str> = payload.split(',').skip(1).collect();
    let mut m;
    match ty {
        "ZC20" => {
            m = Message::new(MessageKind::Other);
            let a = &mut m.attributes;
            let parsed = (|| {
                let time = dmy_hms(fields.first()?, fields.get(1)?)?;
                Some((
                    time,
                    uint(fields.get(2)?)?,
                    uint(fields.get(3)?)?,
                    uint(fields.get(4)?)?,
                ))
            })();
            match parsed {
                Some((time, level, battery, power)) => {
                    push_time(&mut a.io, time);
                    a.io.push_name("battery_level", IoValue::U64(level));
                    a.io.push_name("battery", IoValue::U64(battery));
                    a.io.push_name("power", IoValue::U64(power));
                    a.battery_pct = match level {
                        6 => Some(100.0),
                        5 => Some(80.0),
                        4 => Some(50.0),
                        3 => Some(20.0),
                        2 => Some(10.0),
                        _ => None,
                    };
                    // 65535 means "not measured".
                    a.battery_v = (battery != 65535).then_some(battery as f64 * 0.01);
                    a.power_v = (power != 65535).then_some(power as f64 * 0.1);
                    if let Some(installed) = fields.get(5) {
                        push_text(&mut a.io, "installed", installed);
                    }
                }
                None => keep(a, "data", payload),
            }
        }
        "ZC03" => {
            m = Message::new(MessageKind::CommandResponse);
            if let Some(time) = fields.first().zip(fields.get(1)).and_then(|(d, t)| dmy_hms(d, t)) {
                push_time(&mut m.attributes.io, time);
            }
            let text = payload.find('$').map(|i| &payload[i + 1..]);
            m.result = Some(match text {
                Some(t) => t.split('$').next().unwrap_or("").to_owned(),
                None => payload.trim_start_matches(',').to_owned(),
            });
        }
        t if t.starts_with("DW5") => {
            let (alarm, ignition) = decode_type(t, "0");
            // DW5B is the periodic location report; the others are event reports.
            m = Message::new(if t == "DW5B" {
                MessageKind::Position
            } else {
                MessageKind::Other
            });
            let a = &mut m.attributes;
            apply_type(a, alarm, ignition);
            let parsed = (|| {
                let n = fields.len();
                let time = dmy_hms(fields.get(n.checked_sub(2)?)?, fields.get(n - 1)?)?;
                let nums: Vec<u64> = fields.get(..5)?.iter().map(|v| uint(v)).collect::<Option<_>>()?;
                Some((time, nums, fields.get(5..n - 2)?))
            })();
            match parsed {
                Some((time, nums, wifi)) => {
                    push_time(&mut a.io, time);
                    for (name, v) in ["mcc", "mnc", "lac", "cid", "wifi_count"].iter().zip(nums) {
                        a.io.push_name(*name, IoValue::U64(v));
                    }
                    if !wifi.is_empty() {
                        push_text(&mut a.io, "wifi", &wifi.join(","));
                    }
                }
                None => keep(a, "data", payload),
            }
        }
        _ => {
            let parsed = parse_payload(payload, true);
            if parsed.is_none() && !closed {
                return None;
            }
            let data = parsed.as_ref().map_or("", |p| p.data);
            let (alarm, ignition) = decode_type(ty, data);
            let kind = if ty == "BP05" {
                MessageKind::Login
            } else if alarm.is_some() {
                MessageKind::Alarm
            } else if parsed.is_some() {
                MessageKind::Position
            } else {
                MessageKind::Other
            };
            m = Message::new(kind);
            match parsed {
                Some(p) => {
                    let mut pos = p.position(DateOrder::Dmy)?;
                    apply_type(&mut pos.attributes, alarm, ignition);
                    m.positions.push(pos);
                }
                None => {
                    apply_type(&mut m.attributes, alarm, ignition);
                    keep(&mut m.attributes, "data", payload);
                }
            }
        }
    }
    Some(m)
}

#[derive(Debug, Clone, Copy)]
enum DateOrder {
    /// `yymmdd` (classic form).
    Ymd,
    /// `ddmmyy` (comma form).
    Dmy,
}

/// The 8 status characters and odometer after the course in the classic payload.
#[derive(Debug, Clone, Copy)]
struct Status<'a> {
    raw: &'a str,
    charge: bool,
    ignition: bool,
    fuel: u64,
    odometer: u64,
}

#[derive(Debug)]
struct Payload<'a> {
    /// Digits (or `,ALARM,<code>,<n>,`) between the command and the date.
    data: &'a str,
    date: (i64, i64, i64),
    valid: bool,
    latitude: f64,
    longitude: f64,
    speed_kmh: Option<f64>,
    time: (i64, i64, i64),
    course: Option<f64>,
    status: Option<Status<'a>>,
    rest: &'a str,
}

impl Payload<'_> {
    fn position(&self, order: DateOrder) -> Option<Position> {
        let (a, b, c) = self.date;
        let (y, mo, d) = match order {
            DateOrder::Ymd => (a, b, c),
            DateOrder::Dmy => (c, b, a),
        };
        let (h, mi, s) = self.time;
        let time = lenient_datetime(y, mo, d, h, mi, s)?;
        let mut p = Position::new(time, self.latitude, self.longitude, self.valid);
        p.speed_kmh = self.speed_kmh;
        p.course_deg = self.course;
        let attrs = &mut p.attributes;
        if let Some(st) = self.status {
            attrs.ignition = Some(st.ignition);
            attrs.odometer_m = Some(st.odometer as f64);
            push_text(&mut attrs.io, "status", st.raw);
            attrs.io.push_name("charge", IoValue::Bool(st.charge));
            attrs.io.push_name("fuel", IoValue::U64(st.fuel));
            attrs.io.push_name("odometer", IoValue::U64(st.odometer));
        }
        let mut rest = self.rest.trim_start_matches(',');
        // A trailing `+ddd.d` is a temperature sensor reading.
        if let Some(t) = rest.len().checked_sub(6).and_then(|i| rest.get(i..)) {
            let b = t.as_bytes();
            let shaped = matches!(b[0], b'+' | b'-') && b[4] == b'.' && all_digits(&t[1..4]) && b[5].is_ascii_digit();
            if let Some(v) = shaped.then(|| udec(&t[1..])).flatten() {
                attrs
                    .io
                    .push_name("temp1", IoValue::F64(if b[0] == b'-' { -v } else { v }));
                rest = &rest[..rest.len() - 6];
            }
        }
        if !rest.is_empty() {
            push_text(&mut attrs.io, "extra", rest);
        }
        Some(p)
    }
}

/// ` *(d*)(dd.d+)` then the hemisphere letter; returns the value and the bytes used.
fn coordinate(s: &str, hemispheres: [u8; 2]) -> Option<(f64, usize)> {
    let spaces = s.len() - s.trim_start_matches(' ').len();
    let t = &s[spaces..];
    let len = t.bytes().take_while(|b| b.is_ascii_digit() || *b == b'.').count();
    let hem = *t.as_bytes().get(len)?;
    if !hemispheres.contains(&hem) {
        return None;
    }
    let (deg, min) = split_deg_min(&t[..len], 0)?;
    let v = crate::h02::text::dm(deg, min, Some(hem));
    let limit = if hemispheres[0] == b'N' { 90.0 } else { 180.0 };
    (v.abs() <= limit).then_some((v, spaces + len + 1))
}

fn skip_comma(s: &str) -> &str {
    s.strip_prefix(',').unwrap_or(s)
}

/// The compact position payload, found by its `<6 digits>[,]A|V` anchor.
fn parse_payload(s: &str, comma_form: bool) -> Option<Payload<'_>> {
    let bytes = s.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b != b'A' && b != b'V' {
            continue;
        }
        let date_end = if comma_form && i > 0 && bytes[i - 1] == b',' {
            i - 1
        } else {
            i
        };
        let Some(date_start) = date_end.checked_sub(6) else {
            continue;
        };
        let Some(date) = s.get(date_start..date_end).and_then(triple) else {
            continue;
        };
        if let Some(p) = parse_after_validity(&s[i + 1..], b == b'A', date, &s[..date_start]) {
            return Some(p);
        }
    }
    None
}

fn parse_after_validity<'a>(s: &'a str, valid: bool, date: (i64, i64, i64), data: &'a str) -> Option<Payload<'a>> {
    let s = skip_comma(s);
    let (latitude, n) = coordinate(s, [b'N', b'S'])?;
    let s = skip_comma(&s[n..]);
    let (longitude, n) = coordinate(s, [b'E', b'W'])?;
    let s = skip_comma(&s[n..]);
    let data = data.trim_start_matches(',');
    // `,ALARM,<code>,<n>,` (BQ81) carries the alarm code in place of the data digits.
    let data = match data.strip_prefix("ALARM,") {
        Some(rest) => rest.split(',').next().unwrap_or(""),
        None => data,
    };
    let speed_chars = s
        .bytes()
        .take(5)
        .take_while(|b| b.is_ascii_digit() || *b == b' ' || *b == b'.')
        .count();
    // The regex tries the widest speed first, then narrower ones.
    for width in (1..=speed_chars).rev() {
        let speed = &s[..width];
        let after = &s[width..];
        // `(?:d*,)?` — digits and a comma between speed and time, tried before skipping.
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        let mut options = [None, Some(after)];
        if after.as_bytes().get(digits) == Some(&b',') {
            options[0] = Some(&after[digits + 1..]);
        }
        for rest in options.into_iter().flatten() {
            let Some(time) = rest.get(..6).and_then(triple) else {
                continue;
            };
            let rest = skip_comma(&rest[6..]);
            if let Some((course, status, rest)) = course_block(rest) {
                return Some(Payload {
                    data,
                    date,
                    valid,
                    latitude,
                    longitude,
                    speed_kmh: udec(speed.trim()),
                    time,
                    course,
                    status,
                    rest,
                });
            }
        }
    }
    None
}

/// `(?:([ d.]{6})|(dd)),?` + status + `L(x+)`, or a plain `d+.d+` course.
fn course_block(s: &str) -> Option<(Option<f64>, Option<Status<'_>>, &str)> {
    let b = s.as_bytes();
    for width in [6, 2] {
        let Some(course) = s.get(..width) else {
            continue;
        };
        let ok = if width == 6 {
            course.bytes().all(|c| c.is_ascii_digit() || c == b' ' || c == b'.')
        } else {
            all_digits(course)
        };
        if !ok {
            continue;
        }
        let rest = skip_comma(&s[width..]);
        if let Some((status, rest)) = status_block(rest) {
            return Some((udec(course.trim()), Some(status), rest));
        }
    }
    let int = b.iter().take_while(|c| c.is_ascii_digit()).count();
    if int > 0 && b.get(int) == Some(&b'.') {
        let frac = b[int + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if frac > 0 {
            let end = int + 1 + frac;
            return Some((udec(&s[..end]), None, &s[end..]));
        }
    }
    None
}

/// `[01][01]xxx` + 3 hex fuel digits + `L` + hex odometer.
fn status_block(s: &str) -> Option<(Status<'_>, &str)> {
    let raw = s.get(..8)?;
    let b = raw.as_bytes();
    if !matches!(b[0], b'0' | b'1') || !matches!(b[1], b'0' | b'1') || !all_hex(&raw[2..]) {
        return None;
    }
    let rest = s[8..].strip_prefix('L')?;
    let odo_len = rest.bytes().take_while(u8::is_ascii_hexdigit).count();
    let odometer = hex_uint(&rest[..odo_len])?;
    Some((
        Status {
            raw,
            charge: b[0] == b'0',
            ignition: b[1] == b'1',
            fuel: hex_uint(&raw[5..8])?,
            odometer,
        },
        &rest[odo_len..],
    ))
}

/// Device side: what a TK103 tracker sends. A 12-character id uses the classic form
/// (`BP05` login, `BR00` positions, `BP00` heartbeat, `BO01`/`BQ81` alarms); any other
/// all-digit id the comma form (`BP05`, `DW30` positions, `ZCxx` alarms). Command
/// responses are `ZC03` (numeric ids). TK103 has no OBD data here.
#[derive(Debug, Default)]
pub struct Tk103Device;

impl DeviceEncoder for Tk103Device {
    fn encode(&mut self, msg: &Message) -> Result<Vec<u8>, EncodeError> {
        let id = msg.imei.as_deref().ok_or(EncodeError::Invalid {
            field: "imei",
            reason: "a TK103 frame carries the device id".into(),
        })?;
        check_id(id)?;
        let classic = id.len() == 12;
        if !classic && !all_digits(id) {
            return Err(EncodeError::Invalid {
                field: "imei",
                reason: "TK103 ids are 12 characters (classic) or digits (comma form)".into(),
            });
        }
        let unsupported = |what: String| EncodeError::Unsupported {
            protocol: "tk103",
            what,
        };
        let mut out = Vec::new();
        match msg.kind {
            MessageKind::Login => {
                let p = msg.positions.first();
                if classic {
                    let data = match msg.attributes.io.get_name("data") {
                        Some(IoValue::Text(d)) if all_digits(d) => d.clone(),
                        _ => format!("000{id}"),
                    };
                    let payload = p.map_or_else(no_fix_payload, classic_payload);
                    out.extend(format!("({id}BP05{data}{payload})").bytes());
                } else {
                    let payload = p.map_or_else(
                        || ",010100,V,0000.0000N,00000.0000E,000.0,000000,000.00".into(),
                        comma_payload,
                    );
                    out.extend(format!("({id},BP05{payload})").bytes());
                }
            }
            MessageKind::Position => {
                for p in &msg.positions {
                    if classic {
                        out.extend(format!("({id}BR00{})", classic_payload(p)).bytes());
                    } else {
                        out.extend(format!("({id},DW30{})", comma_payload(p)).bytes());
                    }
                }
            }
            MessageKind::Alarm => {
                let alarm = msg
                    .positions
                    .first()
                    .and_then(|p| p.attributes.alarms.first())
                    .or(msg.attributes.alarms.first())
                    .ok_or_else(|| unsupported("an alarm message without an alarm".into()))?;
                for p in &msg.positions {
                    if classic {
                        let (ty, data) = match alarm {
                            Alarm::Accident => ("BO01", "1"),
                            Alarm::Sos => ("BO01", "2"),
                            Alarm::Vibration => ("BO01", "3"),
                            Alarm::LowSpeed => ("BO01", "4"),
                            Alarm::Overspeed => ("BO01", "5"),
                            Alarm::GeofenceExit => ("BO01", "6"),
                            Alarm::LowBattery => ("BQ81", ",ALARM,0,0,"),
                            Alarm::Idle => ("BQ81", ",ALARM,2,0,"),
                            Alarm::HardAcceleration => ("BQ81", ",ALARM,3,0,"),
                            Alarm::HardBraking => ("BQ81", ",ALARM,4,0,"),
                            Alarm::Temperature => ("BQ81", ",ALARM,5,0,"),
                            other => return Err(unsupported(format!("classic alarm {other:?}"))),
                        };
                        out.extend(format!("({id}{ty}{data}{})", classic_payload(p)).bytes());
                    } else {
                        let ty = match alarm {
                            Alarm::Movement => "ZC11",
                            Alarm::LowBattery => "ZC12",
                            Alarm::PowerCut => "ZC13",
                            Alarm::Removing => "ZC17",
                            Alarm::Sos => "ZC25",
                            Alarm::Tampering => "ZC26",
                            Alarm::LowPower => "ZC27",
                            other => return Err(unsupported(format!("comma-form alarm {other:?}"))),
                        };
                        out.extend(format!("({id},{ty}{})", comma_payload(p)).bytes());
                    }
                }
                if msg.positions.is_empty() {
                    return Err(EncodeError::Invalid {
                        field: "positions",
                        reason: "a TK103 alarm carries a fix".into(),
                    });
                }
            }
            MessageKind::Heartbeat if classic => out.extend(format!("({id}BP00HSO)").bytes()),
            MessageKind::CommandResponse if all_digits(id) => {
                let text = msg.result.as_deref().unwrap_or("");
                if text.contains('$') {
                    return Err(EncodeError::Invalid {
                        field: "result",
                        reason: "'$' delimits the reply text".into(),
                    });
                }
                let t = msg.positions.first().map(|p| p.time);
                let stamp = t.map_or_else(|| "010100,000000".into(), |t| format!("{},{}", dmy(t), hms(t)));
                out.extend(format!("({id},ZC03,{stamp},${text}$)").bytes());
            }
            other => return Err(unsupported(format!("{} messages for id {id}", other.as_str()))),
        }
        if out.is_empty() {
            return Err(EncodeError::Invalid {
                field: "positions",
                reason: "nothing to encode".into(),
            });
        }
        Ok(out)
    }
}

fn ymd(t: DateTime<Utc>) -> String {
    format!("{:02}{:02}{:02}", t.year().rem_euclid(100), t.month(), t.day())
}

fn dmy(t: DateTime<Utc>) -> String {
    format!("{:02}{:02}{:02}", t.day(), t.month(), t.year().rem_euclid(100))
}

fn hms(t: DateTime<Utc>) -> String {
    format!("{:02}{:02}{:02}", t.hour(), t.minute(), t.second())
}

fn lat_lon(p: &Position) -> (String, String) {
    (
        format!(
            "{}{}",
            format_deg_min(p.latitude, 2, 4),
            if p.latitude < 0.0 { 'S' } else { 'N' }
        ),
        format!(
            "{}{}",
            format_deg_min(p.longitude, 3, 4),
            if p.longitude < 0.0 { 'W' } else { 'E' }
        ),
    )
}

fn no_fix_payload() -> String {
    "000101V0000.0000N00000.0000E000.0000000000.0000000000L00000000".into()
}

fn classic_payload(p: &Position) -> String {
    let (lat, lon) = lat_lon(p);
    let speed = p.speed_kmh.unwrap_or(0.0).clamp(0.0, 999.9);
    let course = p.course_deg.unwrap_or(0.0).rem_euclid(360.0);
    let ignition = u8::from(p.attributes.ignition == Some(true));
    let fuel = match p.attributes.io.get_name("fuel") {
        Some(IoValue::U64(f)) => (*f).min(0xFFF),
        _ => 0,
    };
    let odometer = p.attributes.odometer_m.unwrap_or(0.0).clamp(0.0, u32::MAX as f64) as u64;
    format!(
        "{}{}{lat}{lon}{speed:05.1}{}{course:06.2}0{ignition}000{fuel:03X}L{odometer:08X}",
        ymd(p.time),
        if p.valid { 'A' } else { 'V' },
        hms(p.time),
    )
}

fn comma_payload(p: &Position) -> String {
    let (lat, lon) = lat_lon(p);
    format!(
        ",{},{},{lat},{lon},{:.1},{},{:.2}",
        dmy(p.time),
        if p.valid { 'A' } else { 'V' },
        p.speed_kmh.unwrap_or(0.0).max(0.0),
        hms(p.time),
        p.course_deg.unwrap_or(0.0).rem_euclid(360.0),
    )
}
