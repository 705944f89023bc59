//! GPS103 (Xexun / Coban "TK103-2", TK102, GPS-103 … text protocol), TCP and UDP.
//!
//! **Framing.** Sentences end with `;` (a few firmwares end with `*`, or with a bare
//! line break); Traccar's frame decoder splits on `\r\n`, `\n`, `;` and `*` and keeps
//! `;`/`*` in the frame. Filler (CR LF, spaces) between sentences is skipped. With
//! `eof` an unterminated tail is a frame (several devices send the last sentence
//! without a terminator). Sentences are at most 2048 bytes.
//!
//! **Messages.**
//! * `##,imei:<IMEI>,A;` — login; ack `LOAD`. As in Traccar, any sentence containing
//!   `imei:` that is at most 30 bytes long is answered with `LOAD` too (Traccar only
//!   recognises the login by that length; here a `##` sentence is a login at any length).
//! * `<IMEI>;` (starts with a digit) — heartbeat; ack `ON`. If an `imei:` sentence
//!   follows the digits in the same frame it is decoded as well.
//! * `imei:<IMEI>,<keyword>,<local yymmddhhmm[ss]>,<phone|rfid>,F,<UTC hhmmss.sss>,A|V,
//!   lat,N|S,lon,E|W,speed,course[,altitude,acc,door,fuel1%,fuel2%,temp]` — a fix.
//!   The time follows Traccar exactly: date and hh:mm from the local field, seconds
//!   from the UTC field, minus the local−UTC difference wrapped into (−12 h, +12 h].
//!   When the local date is unusable the UTC time is placed on the day nearest to the
//!   server time (Traccar would use 1970). `L` instead of `F` means no GPS: the LAC and
//!   CID (hex) are kept and the message has no fix.
//! * Keywords → alarms (`help me` SOS, `low battery`, `stockade` geofence, `move`,
//!   `speed` overspeed, `door alarm`, `ac alarm` power cut, `accident alarm`,
//!   `sensor alarm` vibration, `bonnet alarm`, `footbrake alarm`, `DTC` fault (codes in
//!   `dtcs`), `T:<temp>` temperature, `oil…` fuel leak); `acc on`/`acc off` → ignition;
//!   `rfid` → driver id; a numeric keyword → `event`. Messages with an alarm are `alarm`,
//!   others `position`. `help me` is also answered with `**,imei:<IMEI>,E;`.
//! * `imei:<IMEI>,OBD,<yymmddhhmmss>,odometer,fuel instant,fuel average,engine hours,
//!   speed,load%,coolant,throttle%,rpm,battery V,<DTC>…` → `obd` with the typed values.
//! * The alternative `…,*` format (decimal degrees, km/h, HDOP, satellites).
//! * `vr` photo chunks → `other` with the hex data kept.
//!
//! **Speed unit.** The `F` block is a copy of the NMEA RMC sentence (UTC time with
//! milliseconds, A/V, ddmm.mmmm, speed, course), and RMC speed is knots; Traccar keeps
//! the value unconverted in its knots field and converts the alternative format from
//! km/h, which says the same. So speed here is knots × 1.852 → km/h. OBD speed is km/h.
//!
//! **Downlink** (`Gps103ProtocolEncoder`): `**,imei:<IMEI>,<cmd>`: `B` locate, `C,<nn>s|m|h`
//! interval (`A` stops), `J`/`K` engine stop/resume, `L`/`M` arm/disarm, `160` photo,
//! custom text as given.

use chrono::{DateTime, Datelike, Duration, Timelike, Utc};

use crate::codec::{Codec, DecodeContext, DeviceEncoder, Framing, Transport};
use crate::error::{DecodeError, EncodeError, FrameError};
use crate::h02::text::{
    all_digits, dec_with_point, dm, format_deg_min, hex_uint, int, is_filler, lenient_datetime, nearest_day, push_text,
    push_time, sdec, split_deg_min, triple, two, udec, uint,
};
use crate::model::{Alarm, Attributes, Command, IoValue, KMH_PER_KNOT, Message, MessageKind, Position};

const MAX_FRAME: usize = 2048;
/// Traccar answers `LOAD` to any `imei:` sentence up to this length.
const LOGIN_MAX_LEN: usize = 30;

pub fn codec(transport: Transport) -> Option<Box<dyn Codec>> {
    match transport {
        Transport::Tcp | Transport::Udp => Some(Box::new(Gps103Codec::default())),
        Transport::Http => None,
    }
}

pub fn device(transport: Transport) -> Option<Box<dyn DeviceEncoder>> {
    match transport {
        Transport::Tcp | Transport::Udp => Some(Box::new(Gps103Device)),
        Transport::Http => None,
    }
}

/// One GPS103 session.
#[derive(Debug, Default)]
pub struct Gps103Codec {
    imei: Option<String>,
}

impl Codec for Gps103Codec {
    fn protocol(&self) -> crate::Protocol {
        crate::Protocol::Gps103
    }

    fn frame(&self, buf: &[u8], eof: bool) -> Framing {
        let Some(start) = buf.iter().position(|b| !is_filler(*b)) else {
            return Framing::Incomplete;
        };
        let rest = &buf[start..];
        let window = &rest[..rest.len().min(MAX_FRAME)];
        match window.iter().position(|b| matches!(b, b';' | b'*' | b'\n' | b'\r')) {
            Some(i) => {
                // `;` and `*` stay in the frame (the `*` marks the alternative format);
                // a line break is a delimiter only.
                let end = if matches!(rest[i], b';' | b'*') { i + 1 } else { i };
                if end == 0 {
                    return Framing::Resync {
                        discard: start + 1,
                        error: FrameError::new("gps103: empty sentence"),
                    };
                }
                Framing::Frame {
                    start,
                    end: start + end,
                }
            }
            None if rest.len() >= MAX_FRAME => Framing::Resync {
                discard: start + MAX_FRAME,
                error: FrameError::new(format!("gps103: sentence longer than {MAX_FRAME} bytes")),
            },
            None if eof => Framing::Frame { start, end: buf.len() },
            None => Framing::Incomplete,
        }
    }

    fn decode(&mut self, frame: &[u8], ctx: &DecodeContext) -> Result<Vec<Message>, DecodeError> {
        let start = frame.iter().position(|b| !is_filler(*b)).unwrap_or(frame.len());
        let end = frame.iter().rposition(|b| !is_filler(*b)).map_or(start, |i| i + 1);
        let trimmed = frame.get(start..end).unwrap_or(&[]);
        if trimmed.is_empty() {
            return Err(DecodeError::truncated(frame));
        }
        let text = String::from_utf8_lossy(trimmed);
        let mut sentence: &str = &text;
        let mut ack: Option<&[u8]> = None;

        let login = sentence.starts_with("##") && sentence.contains("imei:");
        if login || (sentence.contains("imei:") && sentence.len() <= LOGIN_MAX_LEN) {
            ack = Some(b"LOAD");
            if let Some(imei) = imei_after(sentence) {
                self.imei = Some(imei.to_owned());
            }
            if login {
                let mut m = Message::new(MessageKind::Login)
                    .with_type("##")
                    .with_ack(b"LOAD".to_vec());
                m.imei = self.imei.clone();
                return Ok(vec![m]);
            }
        }
        if sentence.as_bytes()[0].is_ascii_digit() {
            let digits = sentence.bytes().take_while(u8::is_ascii_digit).count();
            let imei = &sentence[..digits];
            if digits >= 8 {
                self.imei = Some(imei.to_owned());
            }
            match sentence.find("imei:") {
                Some(i) => {
                    ack = Some(b"ON");
                    sentence = &sentence[i..];
                }
                None => {
                    let mut m = Message::new(MessageKind::Heartbeat)
                        .with_type("heartbeat")
                        .with_ack(b"ON".to_vec());
                    m.imei = self.imei.clone();
                    return Ok(vec![m]);
                }
            }
        }
        let Some(after) = sentence.strip_prefix("imei:") else {
            return Err(DecodeError::invalid(
                "sentence",
                "a GPS103 report starts with 'imei:'",
                frame,
            ));
        };
        let alternative = after.ends_with('*');
        let body = after.strip_suffix([';', '*']).unwrap_or(after);
        let fields: Vec<&str> = body.split(',').collect();
        let imei = fields[0];
        if !all_digits(imei) {
            return Err(DecodeError::invalid("imei", "not digits", frame));
        }
        self.imei = Some(imei.to_owned());
        let keyword = fields.get(1).copied().unwrap_or("");

        let mut m = if keyword.starts_with("vr") {
            let mut m = Message::new(MessageKind::Other);
            if let Some(data) = body.splitn(3, ',').nth(2) {
                push_text(&mut m.attributes.io, "data", data);
            }
            m
        } else if keyword == "OBD" {
            decode_obd(&fields)
        } else if alternative {
            decode_alternative(&fields)
        } else {
            decode_regular(&fields, ctx)
        };
        if keyword == "help me" {
            // Traccar answers an SOS with the alarm acknowledgement (after any ON/LOAD).
            let mut bytes = ack.map(<[u8]>::to_vec).unwrap_or_default();
            bytes.extend_from_slice(format!("**,imei:{imei},E;").as_bytes());
            m.ack = Some(bytes);
        } else if let Some(a) = ack {
            m.ack = Some(a.to_vec());
        }
        m.imei = self.imei.clone();
        m.message_type = Some(keyword.to_owned());
        Ok(vec![m])
    }

    fn encode_command(&self, imei: &str, command: &Command, _ctx: &DecodeContext) -> Result<Vec<u8>, EncodeError> {
        if imei.is_empty() || !all_digits(imei) {
            return Err(EncodeError::Invalid {
                field: "imei",
                reason: format!("{imei:?}: GPS103 addresses devices by their numeric IMEI"),
            });
        }
        let cmd = match command {
            Command::Custom { text } => text.clone(),
            Command::SetInterval { seconds: 0 } => "A".into(),
            Command::Locate => "B".into(),
            Command::SetInterval { seconds } => {
                let s = *seconds;
                if s / 3600 > 0 {
                    format!("C,{:02}h", s / 3600)
                } else if s / 60 > 0 {
                    format!("C,{:02}m", s / 60)
                } else {
                    format!("C,{s:02}s")
                }
            }
            Command::EngineStop => "J".into(),
            Command::EngineResume => "K".into(),
            Command::AlarmArm => "L".into(),
            Command::AlarmDisarm => "M".into(),
            Command::RequestPhoto => "160".into(),
            other => {
                return Err(EncodeError::Unsupported {
                    protocol: "gps103",
                    what: format!("{other:?}"),
                });
            }
        };
        Ok(format!("**,imei:{imei},{cmd}").into_bytes())
    }
}

/// The digits after `imei:`.
fn imei_after(s: &str) -> Option<&str> {
    let rest = &s[s.find("imei:")? + 5..];
    let n = rest.bytes().take_while(u8::is_ascii_digit).count();
    (n > 0).then(|| &rest[..n])
}

fn alarm_for(keyword: &str) -> Option<Alarm> {
    if keyword.starts_with("T:") {
        return Some(Alarm::Temperature);
    }
    if keyword.starts_with("oil") {
        return Some(Alarm::FuelLeak);
    }
    Some(match keyword {
        "help me" => Alarm::Sos,
        "low battery" => Alarm::LowBattery,
        "stockade" => Alarm::Geofence,
        "move" => Alarm::Movement,
        "speed" => Alarm::Overspeed,
        "door alarm" => Alarm::Door,
        "ac alarm" => Alarm::PowerCut,
        "accident alarm" => Alarm::Accident,
        "sensor alarm" => Alarm::Vibration,
        "bonnet alarm" => Alarm::Other("bonnet".into()),
        "footbrake alarm" => Alarm::Other("footBrake".into()),
        "DTC" => Alarm::Fault,
        _ => return None,
    })
}

/// `(dd)/?(dd)/?(dd) ?(dd):?(dd)(?:dd)?` — local date and time.
fn local_datetime(s: &str) -> Option<[i64; 5]> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut out = [0i64; 5];
    let seps = [Some(b'/'), Some(b'/'), Some(b' '), Some(b':'), None];
    for (k, sep) in seps.iter().enumerate() {
        out[k] = two(b, i)?;
        i += 2;
        if sep.is_some() && b.get(i).copied() == *sep {
            i += 1;
        }
    }
    match b.len() - i {
        0 => Some(out),
        2 if two(b, i).is_some() => Some(out),
        _ => None,
    }
}

/// `(dd)(dd)(dd)(?:.d+)?` — the UTC time of the fix.
fn utc_time(s: &str) -> Option<(i64, i64, i64)> {
    let hms = match s.split_once('.') {
        Some((a, f)) if all_digits(f) => a,
        Some(_) => return None,
        None => s,
    };
    triple(hms)
}

/// `(d+)(dd.d+)` with a hemisphere letter before or after.
fn coordinate(value: &str, hemisphere: Option<u8>, latitude: bool) -> Option<f64> {
    let (deg, min) = split_deg_min(value, 1)?;
    let v = dm(deg, min, hemisphere);
    let limit = if latitude { 90.0 } else { 180.0 };
    (v.abs() <= limit).then_some(v)
}

fn hemisphere(s: Option<&&str>, letters: [&str; 2]) -> Option<u8> {
    s.filter(|h| letters.contains(h)).map(|h| h.as_bytes()[0])
}

fn decode_regular(f: &[&str], ctx: &DecodeContext) -> Message {
    let keyword = f.get(1).copied().unwrap_or("");
    let alarm = alarm_for(keyword);
    let mut m = Message::new(if alarm.is_some() {
        MessageKind::Alarm
    } else {
        MessageKind::Position
    });
    let mut attrs = Attributes::default();
    if let Some(alarm) = alarm {
        attrs.raise(alarm);
    }
    push_text(&mut attrs.io, "keyword", keyword);
    match keyword {
        "acc on" => attrs.ignition = Some(true),
        "acc off" => attrs.ignition = Some(false),
        "rfid" => {
            if let Some(id) = f.get(3).filter(|v| !v.is_empty()) {
                attrs.driver_id = Some((*id).to_owned());
            }
        }
        k if k.starts_with("T:") => {
            if let Some(t) = sdec(&k[2..]) {
                attrs.io.push_name("temp1", IoValue::F64(t));
            }
        }
        k if k.starts_with("oil ") => {
            if let Some(v) = udec(&k[4..]) {
                attrs.io.push_name("fuel", IoValue::F64(v));
            }
        }
        k if k.starts_with("vt") => {
            if let Some(n) = uint(&k[2..]) {
                attrs.io.push_name("photo_packets", IoValue::U64(n));
            }
        }
        k if all_digits(k) => attrs.event = uint(k).and_then(|v| u32::try_from(v).ok()),
        _ => {}
    }
    if let Some(phone) = f.get(3).filter(|v| !v.is_empty()) {
        push_text(&mut attrs.io, "phone", phone);
    }

    let local = f.get(2).copied().unwrap_or("");
    let local_dt = local_datetime(local);
    let local_ok = local_dt.is_some() || local.bytes().all(|b| b.is_ascii_digit());
    match f.get(4).copied() {
        Some("F") if local_ok => match regular_fix(f, local_dt, ctx, &mut attrs) {
            Some(p) => {
                m.positions.push(p);
                return m;
            }
            None => push_text(&mut attrs.io, "data", &f[2..].join(",")),
        },
        Some("L") => {
            if let (Some(lac), Some(cid)) = (f.get(7).and_then(|v| hex_uint(v)), f.get(9).and_then(|v| hex_uint(v))) {
                attrs.io.push_name("lac", IoValue::U64(lac));
                attrs.io.push_name("cid", IoValue::U64(cid));
            } else if f.len() > 2 {
                push_text(&mut attrs.io, "data", &f[2..].join(","));
            }
        }
        _ => {
            if f.len() > 2 {
                push_text(&mut attrs.io, "data", &f[2..].join(","));
            }
        }
    }
    m.attributes = attrs;
    m
}

fn regular_fix(f: &[&str], local: Option<[i64; 5]>, ctx: &DecodeContext, attrs: &mut Attributes) -> Option<Position> {
    let utc_field = *f.get(5)?;
    let utc = utc_time(utc_field);
    if utc.is_none() && !utc_field.is_empty() {
        // `(?:d{1,5}.d+)?`: a number that is not a time (some firmwares put HDOP here).
        dec_with_point(utc_field)?;
    }
    let valid = match *f.get(6)? {
        "A" => true,
        "V" => false,
        _ => return None,
    };
    let mut i = 7;
    let mut lat_hem = hemisphere(f.get(i), ["N", "S"]);
    if lat_hem.is_some() {
        i += 1;
    }
    let lat_raw = *f.get(i)?;
    i += 1;
    if let Some(h) = hemisphere(f.get(i), ["N", "S"]).filter(|_| i + 1 < f.len()) {
        lat_hem = Some(h);
        i += 1;
    }
    let mut lon_hem = hemisphere(f.get(i), ["E", "W"]).filter(|_| i + 1 < f.len());
    if lon_hem.is_some() {
        i += 1;
    }
    let lon_raw = *f.get(i)?;
    i += 1;
    // The longitude must be followed by a comma.
    if i >= f.len() {
        return None;
    }
    if let Some(v) = f
        .get(i)
        .filter(|v| matches!(**v, "E" | "W" | ""))
        .filter(|_| i + 1 < f.len())
    {
        if !v.is_empty() {
            lon_hem = Some(v.as_bytes()[0]);
        }
        i += 1;
    }
    let latitude = coordinate(lat_raw, lat_hem, true)?;
    let longitude = coordinate(lon_raw, lon_hem, false)?;

    let time = match (local, utc) {
        (Some([y, mo, d, h, mi]), Some((uh, um, us))) => {
            let mut delta = (h - uh) * 60 + (mi - um);
            if delta <= -12 * 60 {
                delta += 24 * 60;
            } else if delta > 12 * 60 {
                delta -= 24 * 60;
            }
            lenient_datetime(y, mo, d, h, mi, us)?.checked_sub_signed(Duration::try_minutes(delta)?)?
        }
        (Some([y, mo, d, h, mi]), None) => lenient_datetime(y, mo, d, h, mi, 0)?,
        (None, Some((uh, um, us))) => nearest_day(ctx.now, uh, um, us)?,
        (None, None) => ctx.now,
    };
    let mut p = Position::new(time, latitude, longitude, valid);
    p.attributes = std::mem::take(attrs);

    let i = optional_tail(f, i, &mut p);
    let rest = f.get(i..).unwrap_or(&[]);
    let a = &mut p.attributes;
    // DTC reports carry the codes after the fix.
    for code in rest.iter().filter(|c| is_dtc(c)) {
        a.dtcs.push((*code).to_owned());
    }
    if rest.iter().any(|v| !v.is_empty()) {
        push_text(&mut a.io, "extra", &rest.join(","));
    }
    Some(p)
}

/// `speed,course,altitude,acc,door,fuel1%,fuel2%,temp` after the coordinates, each
/// optional; the first field that does not fit ends the tail (Traccar's `.*`).
/// Returns the index of the first field not consumed.
fn optional_tail(f: &[&str], mut i: usize, p: &mut Position) -> usize {
    let field = |i: usize| f.get(i).copied();
    let number = |v: &str| v.is_empty() || udec(v).is_some();
    let flag = |v: &str| matches!(v, "" | "0" | "1");
    match field(i) {
        Some(v) if number(v) => p.speed_kmh = udec(v).map(|k| k * KMH_PER_KNOT),
        _ => return i,
    }
    i += 1;
    match field(i) {
        Some(v) if number(v) => p.course_deg = udec(v),
        _ => return i,
    }
    i += 1;
    match field(i) {
        Some(v) if v.is_empty() || sdec_no_plus(v).is_some() => p.altitude_m = sdec_no_plus(v),
        _ => return i,
    }
    i += 1;
    let a = &mut p.attributes;
    match field(i) {
        Some(v) if flag(v) => a.ignition = (!v.is_empty()).then_some(v == "1"),
        _ => return i,
    }
    i += 1;
    match field(i) {
        Some(v) if flag(v) => {
            if !v.is_empty() {
                a.io.push_name("door", IoValue::Bool(v == "1"));
            }
        }
        _ => return i,
    }
    i += 1;
    let fuel1 = field(i).and_then(|v| percent(v, false));
    let fuel2 = field(i + 1).and_then(|v| percent(v, true));
    if let (Some(f1), Some(f2)) = (fuel1, fuel2) {
        if let Some(v) = f1 {
            a.fuel_level_pct = Some(v);
            a.io.push_name("fuel1", IoValue::F64(v));
        }
        if let Some(v) = f2 {
            a.io.push_name("fuel2", IoValue::F64(v));
        }
        i += 2;
    }
    if let Some(v) = field(i).filter(|v| !v.is_empty()).and_then(int) {
        a.io.push_name("temp1", IoValue::I64(v));
        i += 1;
    }
    i
}

fn sdec_no_plus(v: &str) -> Option<f64> {
    if v.starts_with('+') { None } else { sdec(v) }
}

/// `(d+.d+)%` (or also a bare integer for the second fuel field); `Some(None)` = empty.
fn percent(v: &str, allow_int: bool) -> Option<Option<f64>> {
    if v.is_empty() {
        return Some(None);
    }
    if let Some(n) = v.strip_suffix('%') {
        return dec_with_point(n).map(Some);
    }
    if allow_int && all_digits(v) {
        return uint(v).map(|n| Some(n as f64));
    }
    None
}

fn is_dtc(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 5 && matches!(b[0], b'P' | b'C' | b'B' | b'U') && b[1..].iter().all(u8::is_ascii_hexdigit)
}

/// `OBD,yymmddhhmmss,odometer,fuel instant,fuel average,hours,speed,load%,coolant,
/// throttle%,rpm,battery,dtc…`. Each field is read when it has the expected form, so a
/// partly empty report (ignition off) still yields what it has.
fn decode_obd(f: &[&str]) -> Message {
    let mut m = Message::new(MessageKind::Obd);
    let a = &mut m.attributes;
    let get = |i: usize| f.get(i).copied().unwrap_or("");
    let t = get(2);
    if t.len() == 12 && all_digits(t) {
        let b = t.as_bytes();
        let v: Option<Vec<i64>> = (0..6).map(|k| two(b, k * 2)).collect();
        if let Some(time) = v.and_then(|v| lenient_datetime(v[0], v[1], v[2], v[3], v[4], v[5])) {
            push_time(&mut a.io, time);
        }
    }
    if let Some(v) = uint(get(3)) {
        a.odometer_m = Some(v as f64);
        a.io.push_name("odometer", IoValue::U64(v));
    }
    if let Some(v) = udec(get(4)) {
        a.io.push_name("fuel_instant", IoValue::F64(v));
    }
    if let Some(v) = udec(get(5)) {
        a.io.push_name("fuel_consumption", IoValue::F64(v));
    }
    if let Some(v) = uint(get(6)) {
        a.engine_hours = Some(v as f64);
        a.io.push_name("hours", IoValue::U64(v));
    }
    if let Some(v) = uint(get(7)) {
        a.obd_speed_kmh = Some(v as f64);
        a.io.push_name("obd_speed", IoValue::U64(v));
    }
    if let Some(v) = get(8).strip_suffix('%').and_then(udec) {
        a.engine_load_pct = Some(v);
        a.io.push_name("engine_load", IoValue::F64(v));
    }
    if let Some(v) = int(get(9)) {
        a.coolant_c = Some(v as f64);
        a.io.push_name("coolant_temp", IoValue::I64(v));
    }
    if let Some(v) = get(10).strip_suffix('%').and_then(udec) {
        a.throttle_pct = Some(v);
        a.io.push_name("throttle", IoValue::F64(v));
    }
    if let Some(v) = uint(get(11)) {
        a.rpm = Some(v as f64);
        a.io.push_name("rpm", IoValue::U64(v));
    }
    if let Some(v) = udec(get(12)) {
        // The vehicle battery as the dongle measures it.
        a.power_v = Some(v);
        a.io.push_name("battery", IoValue::F64(v));
    }
    for code in f.iter().skip(13).filter(|c| !c.is_empty()) {
        a.dtcs.push((*code).to_owned());
    }
    if !a.dtcs.is_empty() {
        push_text(&mut a.io, "dtcs", &a.dtcs.join(" "));
    }
    m
}

/// `name,event,sensor id,sensor V,hhmmss,ddmmyy,rssi,gps,lat,lon,km/h,course,alt,hdop,
/// sats,ignition,charge,error,*` with `---` for empty values.
fn decode_alternative(f: &[&str]) -> Message {
    let mut m = Message::new(MessageKind::Position);
    let fix = (|| {
        let get = |i: usize| f.get(i).copied();
        let (h, mi, s) = triple(get(5)?)?;
        let (d, mo, y) = triple(get(6)?)?;
        let time = lenient_datetime(y, mo, d, h, mi, s)?;
        let rssi = uint(get(7)?)?;
        let gps = uint(get(8)?)?;
        let lat = sdec(get(9)?).filter(|v| v.abs() <= 90.0)?;
        let lon = sdec(get(10)?).filter(|v| v.abs() <= 180.0)?;
        let mut p = Position::new(time, lat, lon, gps > 0);
        p.speed_kmh = Some(uint(get(11)?)? as f64);
        p.course_deg = Some(uint(get(12)?)? as f64);
        p.altitude_m = Some(int(get(13)?)? as f64);
        p.hdop = Some(udec(get(14)?)?);
        p.satellites = u8::try_from(uint(get(15)?)?).ok();
        let a = &mut p.attributes;
        a.ignition = Some(uint(get(16)?)? > 0);
        a.io.push_name("charge", IoValue::Bool(uint(get(17)?)? > 0));
        a.rssi = i32::try_from(rssi).ok();
        a.io.push_name("rssi", IoValue::U64(rssi));
        for (i, name) in [(2, "event"), (3, "sensor_id"), (4, "sensor_voltage"), (18, "error")] {
            if let Some(v) = get(i).filter(|v| !v.is_empty() && !v.bytes().all(|b| b == b'-')) {
                push_text(&mut a.io, name, v);
            }
        }
        Some(p)
    })();
    match fix {
        Some(p) => m.positions.push(p),
        None => {
            if f.len() > 1 {
                push_text(&mut m.attributes.io, "data", &f[1..].join(","));
            }
        }
    }
    m
}

/// Device side: what a GPS103 tracker sends (`##` login, bare-IMEI heartbeat, `tracker`
/// positions, alarm keywords, `OBD` reports). Positions carry local time = UTC.
#[derive(Debug, Default)]
pub struct Gps103Device;

impl DeviceEncoder for Gps103Device {
    fn encode(&mut self, msg: &Message) -> Result<Vec<u8>, EncodeError> {
        let imei = msg
            .imei
            .as_deref()
            .filter(|i| all_digits(i))
            .ok_or(EncodeError::Invalid {
                field: "imei",
                reason: "a GPS103 sentence carries the numeric IMEI".into(),
            })?;
        let mut out = String::new();
        match msg.kind {
            MessageKind::Login => out.push_str(&format!("##,imei:{imei},A;")),
            MessageKind::Heartbeat => out.push_str(&format!("{imei};")),
            MessageKind::Position | MessageKind::Alarm => {
                let keyword = if msg.kind == MessageKind::Alarm {
                    let alarm = msg
                        .positions
                        .first()
                        .and_then(|p| p.attributes.alarms.first())
                        .or(msg.attributes.alarms.first());
                    keyword_for(alarm)?
                } else {
                    "tracker".to_owned()
                };
                if msg.positions.is_empty() {
                    return Err(EncodeError::Invalid {
                        field: "positions",
                        reason: "a GPS103 report carries a fix".into(),
                    });
                }
                for p in &msg.positions {
                    out.push_str(&position_sentence(imei, &keyword, p));
                }
            }
            MessageKind::Obd => out.push_str(&obd_sentence(imei, msg)?),
            MessageKind::CommandResponse | MessageKind::Other => {
                return Err(EncodeError::Unsupported {
                    protocol: "gps103",
                    what: format!("{} messages", msg.kind.as_str()),
                });
            }
        }
        Ok(out.into_bytes())
    }
}

fn keyword_for(alarm: Option<&Alarm>) -> Result<String, EncodeError> {
    Ok(match alarm {
        Some(Alarm::Sos) => "help me".into(),
        Some(Alarm::LowBattery) => "low battery".into(),
        Some(Alarm::Geofence) => "stockade".into(),
        Some(Alarm::Movement) => "move".into(),
        Some(Alarm::Overspeed) => "speed".into(),
        Some(Alarm::Door) => "door alarm".into(),
        Some(Alarm::PowerCut) => "ac alarm".into(),
        Some(Alarm::Accident) => "accident alarm".into(),
        Some(Alarm::Vibration) => "sensor alarm".into(),
        Some(Alarm::Fault) => "DTC".into(),
        Some(Alarm::FuelLeak) => "oil".into(),
        Some(Alarm::Other(name)) if name == "bonnet" => "bonnet alarm".into(),
        Some(Alarm::Other(name)) if name == "footBrake" => "footbrake alarm".into(),
        other => {
            return Err(EncodeError::Unsupported {
                protocol: "gps103",
                what: format!("alarm {other:?}"),
            });
        }
    })
}

fn position_sentence(imei: &str, keyword: &str, p: &Position) -> String {
    let t = p.time;
    let mut s = format!(
        "imei:{imei},{keyword},{:02}{:02}{:02}{:02}{:02}{:02},,F,{:02}{:02}{:02}.{:03},{},{},{},{},{},{:.2},{:.2}",
        t.year().rem_euclid(100),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.hour(),
        t.minute(),
        t.second(),
        t.timestamp_subsec_millis().min(999),
        if p.valid { 'A' } else { 'V' },
        format_deg_min(p.latitude, 2, 5),
        if p.latitude < 0.0 { 'S' } else { 'N' },
        format_deg_min(p.longitude, 3, 5),
        if p.longitude < 0.0 { 'W' } else { 'E' },
        p.speed_kmh.unwrap_or(0.0).max(0.0) / KMH_PER_KNOT,
        p.course_deg.unwrap_or(0.0).rem_euclid(360.0),
    );
    let altitude = p.altitude_m.map(|a| format!("{a:.1}")).unwrap_or_default();
    let ignition = p
        .attributes
        .ignition
        .map(|i| u8::from(i).to_string())
        .unwrap_or_default();
    // altitude, acc, door, fuel 1, fuel 2, temperature; fault codes after them.
    s.push_str(&format!(",{altitude},{ignition},,,,"));
    if keyword == "DTC" {
        for code in &p.attributes.dtcs {
            s.push_str(&format!(",{code}"));
        }
    }
    s.push(';');
    s
}

fn obd_sentence(imei: &str, msg: &Message) -> Result<String, EncodeError> {
    let a = &msg.attributes;
    let time: DateTime<Utc> = match (msg.positions.first(), a.io.get_name("time")) {
        (Some(p), _) => p.time,
        (None, Some(IoValue::Text(t))) => t.parse().map_err(|_| EncodeError::Invalid {
            field: "time",
            reason: "not RFC 3339".into(),
        })?,
        _ => {
            return Err(EncodeError::Invalid {
                field: "time",
                reason: "an OBD report needs a time (a position or io.time)".into(),
            });
        }
    };
    let opt = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map(f).unwrap_or_default();
    let mut s = format!(
        "imei:{imei},OBD,{:02}{:02}{:02}{:02}{:02}{:02},{},{},{},{},{:.0},{:.2}%,{},{:.2}%,{:.0},{:.2}",
        time.year().rem_euclid(100),
        time.month(),
        time.day(),
        time.hour(),
        time.minute(),
        time.second(),
        opt(a.odometer_m, &|v| format!("{:.0}", v.max(0.0))),
        match a.io.get_name("fuel_instant") {
            Some(IoValue::F64(v)) => format!("{v:.2}"),
            _ => String::new(),
        },
        match a.io.get_name("fuel_consumption") {
            Some(IoValue::F64(v)) => format!("{v:.2}"),
            _ => String::new(),
        },
        opt(a.engine_hours, &|v| format!("{:.0}", v.max(0.0))),
        a.obd_speed_kmh.unwrap_or(0.0).max(0.0),
        a.engine_load_pct.unwrap_or(0.0).max(0.0),
        opt(a.coolant_c, &|v| format!("{v:.0}")),
        a.throttle_pct.unwrap_or(0.0).max(0.0),
        a.rpm.unwrap_or(0.0).max(0.0),
        a.power_v.unwrap_or(0.0).max(0.0),
    );
    for code in &a.dtcs {
        if code.contains([',', ';']) {
            return Err(EncodeError::Invalid {
                field: "dtcs",
                reason: "a DTC cannot contain ',' or ';'".into(),
            });
        }
        s.push(',');
        s.push_str(code);
    }
    s.push_str(",,;");
    Ok(s)
}
