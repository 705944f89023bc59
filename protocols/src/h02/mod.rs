//! H02 ("HQ" protocol: Sinotrack ST-90x, many clones), TCP and UDP.
//!
//! **Framing.** Text sentences `*HQ,<id>,<type>,…#` (maker `HQ`, `hq` or `TH`) and
//! fixed-size binary records starting with `$` arrive back to back on one stream. A
//! text frame runs to its `#`; the CR LF after it is filler. Binary records have no
//! length field: 32 bytes (short), 45 bytes (long) or 42 bytes (8-byte device id). The
//! length is chosen by looking where the next frame starts (a `$`/`X` record with a
//! valid BCD date, a `*XX,` sentence, CR LF or the end of a datagram); a 32/45 choice
//! confirmed that way is remembered for the session so a record split by TCP is not
//! cut short later. `X…` records (32 bytes) are framed and reported as `other`, as
//! Traccar ignores them. No checksum exists in either form.
//!
//! **Decoding.** Position sentences (`V1`, `V2`, `V19`, `VI1`, any other `V…`) follow
//! Traccar's `H02ProtocolDecoder` pattern field by field, including the
//! `-23-29.0095` and `DDMMmmmm` coordinate forms and 5-decimal minutes. Speed is knots
//! on the wire and converted to km/h. The status word (active-low alarm bits) maps to
//! `alarms` (vibration, SOS, overspeed, power cut — one, by Traccar's priority) and
//! bit 10 to `ignition`; the raw word is kept as `io.status`. `V4` is a command
//! response (`result` = the reply text, plus its fix), `NBR`/`V3` cell reports are
//! `other`, `LINK`/`HTBT`/`V0`/`XT` heartbeats, `VP1` a position, `SMS` a command
//! response, anything else `other` with the raw fields in `io.data`. A `V…` sentence
//! whose fix cannot be parsed (empty coordinates on a cold start) is still a position
//! message, just without a fix; a fix with a time but no date is placed on the day
//! nearest the server time (Traccar uses the server time). Fields with no typed home
//! stay in `io` (`status`, `battery`, `sim`, `io1…`, `odometer`/`temp1`/`fuel`/`lac`/`cid`).
//!
//! **Acks** (§3.4): `V1` → `*HQ,<id>,V4,V1,<server UTC yyyyMMddHHmmss>#`, `NBR` →
//! `*HQ,<id>,V4,NBR,<…>#`, `HTBT`/`V0` → the sentence echoed up to its type. Server
//! time is `ctx.now`. Binary records get nothing.
//!
//! **Downlink** (§3.5): `*HQ,<id>,<cmd>,<hhmmss of ctx.now>,<args>#` for arm/disarm
//! (`SCF`), engine stop/resume (`S20`), reporting interval (`S71,22,<s>`); custom text
//! `CMD,args` gets the same envelope (a text that already starts with `*` is sent as is).
//!
//! The field helpers in [`text`] are shared with the TCP text protocols TK103 and GPS103.

pub(crate) mod text;

use std::cell::Cell;

use chrono::{DateTime, Datelike, Timelike, Utc};

use crate::codec::{Codec, DecodeContext, DeviceEncoder, Framing, Transport};
use crate::error::{DecodeError, EncodeError, FrameError};
use crate::model::{Alarm, Attributes, Command, IoValue, KMH_PER_KNOT, Message, MessageKind, Position};
use text::{
    all_digits, all_hex, dec_with_point, digits_n, dm, format_deg_min, hex_uint, int, is_filler, lenient_datetime,
    nearest_day, push_text, push_time, split_deg_min, triple, udec, uint,
};

/// Longest text sentence accepted; real ones are under 300 bytes.
const MAX_TEXT_FRAME: usize = 1024;
const SHORT: usize = 32;
const LONG: usize = 45;
const LONG_ID: usize = 42;
/// A datagram (or the tail of a file) holding one binary record of an unusual length
/// is taken whole up to this size.
const MAX_BINARY_RECORD: usize = 64;

pub fn codec(transport: Transport) -> Option<Box<dyn Codec>> {
    match transport {
        Transport::Tcp | Transport::Udp => Some(Box::new(H02Codec::default())),
        Transport::Http => None,
    }
}

pub fn device(transport: Transport) -> Option<Box<dyn DeviceEncoder>> {
    match transport {
        Transport::Tcp | Transport::Udp => Some(Box::new(H02Device)),
        Transport::Http => None,
    }
}

/// One H02 session.
#[derive(Debug, Default)]
pub struct H02Codec {
    /// The last device id seen: a few sentences (`*HQ,,V1,…`) omit it.
    id: Option<String>,
    /// Binary record length (32 or 45) once the stream has shown which one it uses.
    binary_len: Cell<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    Yes,
    No,
    Maybe,
}

/// Whether `s` begins a new frame (or is the end of the input when `eof`). CR LF after
/// a record counts when a frame start (or the end) follows it.
fn starts_frame(s: &[u8], eof: bool) -> Start {
    let filler = s.iter().take_while(|b| is_filler(**b)).count();
    let s = &s[filler..];
    let short = if eof { Start::No } else { Start::Maybe };
    match s.first() {
        None => {
            if eof {
                Start::Yes
            } else {
                Start::Maybe
            }
        }
        Some(b'*') => {
            if s.len() < 4 {
                return short;
            }
            if s[1].is_ascii_alphabetic() && s[2].is_ascii_alphabetic() && s[3] == b',' {
                Start::Yes
            } else {
                Start::No
            }
        }
        Some(b'$' | b'X') => {
            if s.len() < 15 {
                return short;
            }
            if bcd_datetime_ok(s, 6) || bcd_datetime_ok(s, 9) {
                Start::Yes
            } else {
                Start::No
            }
        }
        Some(_) => Start::No,
    }
}

fn bcd_ok(b: u8) -> bool {
    b >> 4 <= 9 && b & 0x0f <= 9
}

fn bcd2(b: u8) -> i64 {
    i64::from(b >> 4) * 10 + i64::from(b & 0x0f)
}

/// A plausible `hhmmss ddmmyy` BCD time at `off`.
fn bcd_datetime_ok(s: &[u8], off: usize) -> bool {
    let Some(t) = s.get(off..off + 6) else {
        return false;
    };
    t.iter().all(|b| bcd_ok(*b))
        && bcd2(t[0]) < 24
        && bcd2(t[1]) < 60
        && bcd2(t[2]) < 60
        && (1..=31).contains(&bcd2(t[3]))
        && (1..=12).contains(&bcd2(t[4]))
}

/// Whether a record laid out with its time at `base` (6: 5-byte id, 9: 8-byte id) has a
/// plausible BCD time, latitude and longitude there.
fn layout_ok(s: &[u8], base: usize) -> bool {
    let Some(b) = s.get(base..base + 16) else {
        return false;
    };
    bcd_datetime_ok(s, base)
        && b[6..10].iter().all(|x| bcd_ok(*x))
        && bcd2(b[6]) <= 90
        && bcd2(b[7]) < 60
        && b[11..15].iter().all(|x| bcd_ok(*x))
        && b[15] >> 4 <= 9
        && bcd2(b[11]) * 10 + i64::from(b[12] >> 4) <= 180
        && b[12] & 0x0f <= 5
}

impl H02Codec {
    fn frame_text(&self, buf: &[u8], start: usize, eof: bool) -> Framing {
        let rest = &buf[start..];
        let window = &rest[..rest.len().min(MAX_TEXT_FRAME)];
        match memchr::memchr(b'#', window) {
            Some(i) => Framing::Frame {
                start,
                end: start + i + 1,
            },
            None if rest.len() >= MAX_TEXT_FRAME => Framing::Resync {
                discard: start + 1,
                error: FrameError::new(format!("h02 text sentence without '#' in {MAX_TEXT_FRAME} bytes")),
            },
            None if eof => Framing::Frame { start, end: buf.len() },
            None => Framing::Incomplete,
        }
    }

    fn frame_binary(&self, buf: &[u8], start: usize, eof: bool) -> Framing {
        let rest = &buf[start..];
        let take = |len: usize| Framing::Frame {
            start,
            end: start + len,
        };
        if rest[0] == b'X' {
            // Traccar's frame decoder cuts X records at 32 bytes, whatever follows.
            return if rest.len() >= SHORT {
                take(SHORT)
            } else if eof {
                take(rest.len())
            } else {
                Framing::Incomplete
            };
        }
        if rest.len() < SHORT {
            return if eof { take(rest.len()) } else { Framing::Incomplete };
        }
        let short_ok = layout_ok(rest, 6);
        let long_ok = layout_ok(rest, 9);
        let candidates: &[usize] = match (short_ok, long_ok) {
            (false, true) => &[LONG_ID],
            (true, true) => &[SHORT, LONG_ID, LONG],
            _ => &[SHORT, LONG],
        };
        let mut waiting = false;
        let mut after_short = Start::No;
        for &len in candidates {
            if rest.len() < len {
                waiting = true;
                continue;
            }
            let next = starts_frame(&rest[len..], eof);
            if len == SHORT {
                after_short = next;
            }
            match next {
                Start::Yes => {
                    if len != LONG_ID && rest.len() > len {
                        self.binary_len.set(len);
                    }
                    return take(len);
                }
                Start::Maybe => waiting = true,
                Start::No => {}
            }
        }
        let learned = self.binary_len.get();
        if eof {
            if rest.len() <= MAX_BINARY_RECORD {
                // One datagram or the end of a capture: a record of an odd length (the
                // 46- and 48-byte variants in Traccar's tests) is all that is left.
                return take(rest.len());
            }
        } else if waiting {
            // Nothing confirms a length yet. A device that sends one record and then
            // waits must not stall, so a buffer holding exactly one record of a
            // plausible length is taken (Traccar: exactly 45 bytes is long, else short).
            return match rest.len() {
                SHORT if short_ok && learned != LONG => take(SHORT),
                LONG_ID if long_ok && !short_ok => take(LONG_ID),
                LONG if candidates.contains(&LONG) && after_short == Start::No && learned != SHORT => take(LONG),
                _ => Framing::Incomplete,
            };
        }
        // Whatever follows is not a frame start: fall back to what the session showed.
        match (learned, long_ok && !short_ok) {
            (_, true) => take(LONG_ID),
            (0, false) => take(SHORT),
            (len, false) => take(len.min(rest.len())),
        }
    }

    fn decode_binary(&mut self, f: &[u8]) -> Result<Message, DecodeError> {
        if f.len() < SHORT {
            return Err(DecodeError::truncated(f));
        }
        let long_id = f.len() == LONG_ID && (layout_ok(f, 9) || !layout_ok(f, 6));
        let (id, base) = if long_id {
            let mut id = hex::encode(&f[1..9]);
            id.truncate(15);
            (id, 9)
        } else {
            (hex::encode(&f[1..6]), 6)
        };
        let b = &f[base..];
        // 23 bytes of fix and status follow the id; `f.len() >= 32` guarantees them.
        if b.len() < 23 {
            return Err(DecodeError::truncated(f));
        }
        let time = lenient_datetime(bcd2(b[5]), bcd2(b[4]), bcd2(b[3]), bcd2(b[0]), bcd2(b[1]), bcd2(b[2]))
            .ok_or_else(|| DecodeError::invalid("time", "BCD date out of range", f))?;
        let lat_deg = bcd2(b[6]) as f64;
        let lat_min = (bcd2(b[7]) * 10_000 + bcd2(b[8]) * 100 + bcd2(b[9])) as f64 / 10_000.0;
        let battery = b[10];
        let lon_deg = (bcd2(b[11]) * 10 + i64::from(b[12] >> 4)) as f64;
        let five = bcd2(b[13]) * 1000 + bcd2(b[14]) * 10 + i64::from(b[15] >> 4);
        let lon_min = f64::from(b[12] & 0x0f) * 10.0 + five as f64 / 10_000.0;
        let flags = b[15] & 0x0f;
        let speed_knots = i64::from(b[16] >> 4) * 100 + i64::from(b[16] & 0x0f) * 10 + i64::from(b[17] >> 4);
        let course = i64::from(b[17] & 0x0f) * 100 + bcd2(b[18]);
        let status = u32::from_be_bytes([b[19], b[20], b[21], b[22]]);

        let lat = dm(lat_deg, lat_min, Some(if flags & 0x04 == 0 { b'S' } else { b'N' }));
        let lon = dm(lon_deg, lon_min, Some(if flags & 0x08 == 0 { b'W' } else { b'E' }));
        let mut p = Position::new(time, lat, lon, flags & 0x02 != 0);
        p.speed_kmh = Some(speed_knots as f64 * KMH_PER_KNOT);
        p.course_deg = Some(course as f64);
        p.attributes.battery_pct = battery_level(battery);
        p.attributes.io.push_name("battery", IoValue::U64(u64::from(battery)));
        apply_status(&mut p.attributes, status);
        if let Some(extra) = f.get(base + 23..).filter(|e| !e.is_empty()) {
            p.attributes.io.push_name("extra", IoValue::Bytes(extra.to_vec()));
        }
        self.id = Some(id.clone());
        Ok(Message::new(MessageKind::Position)
            .with_imei(id)
            .with_type(if long_id { "binary42" } else { "binary" })
            .with_positions(vec![p]))
    }

    fn decode_text(&mut self, frame: &[u8], ctx: &DecodeContext) -> Result<Message, DecodeError> {
        let end = frame.iter().rposition(|b| !is_filler(*b)).map_or(0, |i| i + 1);
        let trimmed = &frame[..end];
        if trimmed.len() < 2 || trimmed.last() != Some(&b'#') {
            return Err(DecodeError::truncated(frame));
        }
        // SMS replies may carry text in a local code page: keep what is readable.
        let s = String::from_utf8_lossy(trimmed);
        let body = &s[1..s.len() - 1];
        let mut parts = body.splitn(4, ',');
        let maker = parts.next().unwrap_or("");
        let id = parts.next().unwrap_or("");
        let ty = parts.next().unwrap_or("");
        let data = parts.next().unwrap_or("");
        if id.len() > 32 || ty.len() > 16 {
            return Err(DecodeError::invalid("sentence", "not an H02 header", frame));
        }
        if !id.is_empty() && self.id.as_deref() != Some(id) {
            self.id = Some(id.to_owned());
        }
        let fields: Vec<&str> = if data.is_empty() && !body.ends_with(',') {
            Vec::new()
        } else {
            data.split(',').collect()
        };
        let stamp = ctx.now.format("%Y%m%d%H%M%S");
        let mut msg = match ty {
            "V0" | "HTBT" => {
                let mut m = Message::new(MessageKind::Heartbeat);
                if let Some(level) = fields.first().and_then(|v| uint(v)) {
                    m.attributes.battery_pct = Some(level as f64);
                }
                keep_data(&mut m.attributes, data);
                m.ack = Some(format!("*{maker},{id},{ty}#").into_bytes());
                m
            }
            "LINK" => decode_link(&fields, data),
            "XT" => {
                let mut m = Message::new(MessageKind::Heartbeat);
                keep_data(&mut m.attributes, data);
                m
            }
            "NBR" => {
                let mut m = decode_nbr(&fields, data);
                if !id.is_empty() {
                    m.ack = Some(format!("*HQ,{id},V4,NBR,{stamp}#").into_bytes());
                }
                m
            }
            "V3" => decode_v3(&fields, data),
            "VP1" => decode_vp1(&fields, data),
            "V4" => decode_v4(&fields, data, ctx),
            "SMS" => {
                let mut m = Message::new(MessageKind::CommandResponse);
                m.result = Some(data.to_owned());
                m
            }
            t if t.starts_with('V') => {
                let mut m = Message::new(MessageKind::Position);
                match parse_fix(&fields).and_then(|fix| fix.position(ctx)) {
                    Some(p) => m.positions.push(p),
                    None => keep_data(&mut m.attributes, data),
                }
                if t == "V1" && !id.is_empty() {
                    m.ack = Some(format!("*HQ,{id},V4,V1,{stamp}#").into_bytes());
                }
                m
            }
            _ => {
                let mut m = Message::new(MessageKind::Other);
                keep_data(&mut m.attributes, data);
                m
            }
        };
        msg.imei = self.id.clone();
        msg.message_type = Some(ty.to_owned());
        Ok(msg)
    }
}

impl Codec for H02Codec {
    fn protocol(&self) -> crate::Protocol {
        crate::Protocol::H02
    }

    fn frame(&self, buf: &[u8], eof: bool) -> Framing {
        let Some(start) = buf.iter().position(|b| !is_filler(*b)) else {
            return Framing::Incomplete;
        };
        match buf[start] {
            b'*' => self.frame_text(buf, start, eof),
            b'$' | b'X' => self.frame_binary(buf, start, eof),
            _ => {
                let skip = buf[start + 1..]
                    .iter()
                    .position(|b| matches!(b, b'*' | b'$' | b'X'))
                    .map_or(buf.len(), |i| start + 1 + i);
                Framing::Resync {
                    discard: skip,
                    error: FrameError::new("h02: bytes before a '*', '$' or 'X' frame marker"),
                }
            }
        }
    }

    fn decode(&mut self, frame: &[u8], ctx: &DecodeContext) -> Result<Vec<Message>, DecodeError> {
        let msg = match frame.first() {
            Some(b'*') => self.decode_text(frame, ctx)?,
            Some(b'$') => self.decode_binary(frame)?,
            Some(b'X') => {
                let mut m = Message::new(MessageKind::Other).with_type("X");
                m.attributes.io.push_name("data", IoValue::Bytes(frame.to_vec()));
                m.imei = self.id.clone();
                m
            }
            _ => {
                return Err(DecodeError::invalid(
                    "marker",
                    "an H02 frame starts with '*', '$' or 'X'",
                    frame,
                ));
            }
        };
        Ok(vec![msg])
    }

    fn encode_command(&self, imei: &str, command: &Command, ctx: &DecodeContext) -> Result<Vec<u8>, EncodeError> {
        check_id(imei)?;
        let time = ctx.now.format("%H%M%S");
        let (cmd, args): (&str, String) = match command {
            Command::AlarmArm => ("SCF", "0,0".into()),
            Command::AlarmDisarm => ("SCF", "1,1".into()),
            Command::EngineStop => ("S20", "1,1".into()),
            Command::EngineResume => ("S20", "1,0".into()),
            Command::SetInterval { seconds } => ("S71", format!("22,{seconds}")),
            Command::Custom { text } => {
                if text.contains('#') && !text.starts_with('*') {
                    return Err(EncodeError::Invalid {
                        field: "text",
                        reason: "'#' ends an H02 sentence".into(),
                    });
                }
                if text.starts_with('*') {
                    return Ok(text.clone().into_bytes());
                }
                match text.split_once(',') {
                    Some((cmd, args)) => return Ok(format!("*HQ,{imei},{cmd},{time},{args}#").into_bytes()),
                    None => return Ok(format!("*HQ,{imei},{text},{time}#").into_bytes()),
                }
            }
            other => {
                return Err(EncodeError::Unsupported {
                    protocol: "h02",
                    what: format!("{other:?}"),
                });
            }
        };
        Ok(format!("*HQ,{imei},{cmd},{time},{args}#").into_bytes())
    }
}

fn check_id(id: &str) -> Result<(), EncodeError> {
    if id.is_empty()
        || id
            .bytes()
            .any(|b| matches!(b, b',' | b'#' | b'*') || !b.is_ascii_graphic())
    {
        return Err(EncodeError::Invalid {
            field: "imei",
            reason: format!("{id:?} is not a usable H02 device id"),
        });
    }
    Ok(())
}

fn keep_data(a: &mut Attributes, data: &str) {
    if !data.is_empty() {
        push_text(&mut a.io, "data", data);
    }
}

/// Traccar's `decodeBattery`: a level code (1–6), a percentage, or 0xF1–0xF6.
fn battery_level(v: u8) -> Option<f64> {
    let pct = match v {
        0 => return None,
        1..=3 => (i32::from(v) - 1) * 10,
        4..=6 => (i32::from(v) - 1) * 20,
        7..=100 => i32::from(v),
        0xF1..=0xF6 => i32::from(v) - 0xF0,
        _ => return None,
    };
    Some(f64::from(pct))
}

/// The status word's alarm bits are active low; only the first alarm in Traccar's
/// priority order is raised.
fn apply_status(a: &mut Attributes, status: u32) {
    let bit = |n: u32| status & (1 << n) != 0;
    if !bit(0) {
        a.raise(Alarm::Vibration);
    } else if !bit(1) || !bit(18) {
        a.raise(Alarm::Sos);
    } else if !bit(2) {
        a.raise(Alarm::Overspeed);
    } else if !bit(19) {
        a.raise(Alarm::PowerCut);
    }
    a.ignition = Some(bit(10));
    a.io.push_name("status", IoValue::U64(u64::from(status)));
}

fn status_field(s: &str) -> Option<u32> {
    if s.len() == 8 && all_hex(s) {
        hex_uint(s).and_then(|v| u32::try_from(v).ok())
    } else {
        None
    }
}

/// A date `ddmmyy` and an optional time `hhmmss` (midnight when absent).
fn date_time(date: &str, time: Option<(i64, i64, i64)>) -> Option<DateTime<Utc>> {
    let (d, m, y) = triple(date)?;
    let (h, mi, s) = time.unwrap_or((0, 0, 0));
    lenient_datetime(y, m, d, h, mi, s)
}

/// One coordinate in any of the forms Traccar's H02 pattern accepts.
fn coordinate(value: &str, hemisphere: &str, latitude: bool) -> Option<f64> {
    let hem = match (hemisphere, latitude) {
        ("N" | "S", true) | ("E" | "W", false) => hemisphere.as_bytes()[0],
        _ => return None,
    };
    let (deg, min) = if let Some(rest) = value.strip_prefix('-') {
        // `-23-29.0095`: degrees and minutes each with a leading minus.
        let (d, m) = rest.split_once('-')?;
        (uint(d)? as f64, dec_with_point(m)?)
    } else if value.contains('.') {
        split_deg_min(value, 0)?
    } else {
        // `DDMMmmmm`: minutes with an implied point before the last four digits.
        if value.len() < 7 || !all_digits(value) {
            return None;
        }
        let n = value.len();
        let deg = uint(&value[..n - 6])? as f64;
        let min = uint(&value[n - 6..n - 4])? as f64 + uint(&value[n - 4..])? as f64 / 10_000.0;
        (deg, min)
    };
    let v = dm(deg, min, Some(hem));
    let limit = if latitude { 90.0 } else { 180.0 };
    (v.abs() <= limit).then_some(v)
}

/// The fix part of a `V…` sentence, starting at its time field.
#[derive(Debug)]
struct Fix<'a> {
    time: Option<(i64, i64, i64)>,
    valid: bool,
    latitude: f64,
    longitude: f64,
    speed_knots: f64,
    course: Option<f64>,
    battery: Option<&'a str>,
    date: Option<&'a str>,
    sim: Option<&'a [&'a str]>,
    status: Option<u32>,
    rest: &'a [&'a str],
}

/// Field-by-field version of Traccar's H02 `PATTERN` from the time field on. The part
/// after the course is ambiguous (optional battery, date, SIM info, status); it is
/// resolved in the order the regex's backtracking tries the alternatives.
fn parse_fix<'a>(f: &'a [&'a str]) -> Option<Fix<'a>> {
    let time_field = *f.first()?;
    let time = if time_field.is_empty() {
        None
    } else {
        Some(triple(time_field)?)
    };
    let validity = *f.get(1)?;
    let valid = match validity {
        "A" => true,
        "B" | "V" | "" => false,
        // A number here is Traccar's "coding scheme" (V2/VI1): the fix is good.
        v if all_digits(v) => true,
        _ => return None,
    };
    let latitude = coordinate(f.get(2)?, f.get(3)?, true)?;
    let longitude = coordinate(f.get(4)?, f.get(5)?, false)?;
    let speed_knots = udec(f.get(6)?.trim_start_matches(' '))?;
    let course = match *f.get(7)? {
        "" => None,
        c => Some(udec(c)?),
    };
    let tail = f.get(8..).unwrap_or(&[]);
    let (battery, date, after) = split_tail(tail)?;
    let (sim, status, rest) = split_status(after)?;
    Some(Fix {
        time,
        valid,
        latitude,
        longitude,
        speed_knots,
        course,
        battery,
        date,
        sim,
        status,
        rest,
    })
}

type TailParts<'a> = (Option<&'a str>, Option<&'a str>, &'a [&'a str]);

/// `[battery,][ddmmyy]` then what follows the date.
///
/// Traccar's regex tries the optional battery group first, which makes it read a date
/// as a battery when SIM fields follow (the fix then gets the server time) and status
/// words as SIM fields. Here the reading with a date and a status word wins when it
/// exists, and the battery reading is the fallback.
fn split_tail<'a>(t: &'a [&'a str]) -> Option<TailParts<'a>> {
    let plain = match t.first() {
        None => Some((None, None, t)),
        Some(d) if digits_n(d, 6) => Some((None, Some(*d), &t[1..])),
        Some(&"") => Some((None, None, &t[1..])),
        Some(_) => None,
    };
    if let Some(p) = plain.filter(|(_, _, rest)| split_status(rest).is_some()) {
        return Some(p);
    }
    if t.len() >= 2 && all_digits(t[0]) && (digits_n(t[1], 6) || t[1].is_empty()) && split_status(&t[2..]).is_some() {
        let date = (!t[1].is_empty()).then_some(t[1]);
        return Some((Some(t[0]), date, &t[2..]));
    }
    None
}

type StatusParts<'a> = (Option<&'a [&'a str]>, Option<u32>, &'a [&'a str]);

/// `[,sim,sim,sim][,status[,…]]` after the date; a status word right after the date
/// is preferred over reading it as SIM information.
fn split_status<'a>(p: &'a [&'a str]) -> Option<StatusParts<'a>> {
    let Some(first) = p.first() else {
        return Some((None, None, p));
    };
    if let Some(status) = status_field(first) {
        return Some((None, Some(status), &p[1..]));
    }
    match p.len() {
        3 => Some((Some(p), None, &[])),
        n if n > 3 => Some((Some(&p[..3]), Some(status_field(p[3])?), &p[4..])),
        _ => None,
    }
}

impl Fix<'_> {
    fn position(&self, ctx: &DecodeContext) -> Option<Position> {
        let time = match (self.date, self.time) {
            (Some(d), time) => date_time(d, time)?,
            // A time without a date: the day that puts it nearest the server time.
            (None, Some((h, m, s))) => nearest_day(ctx.now, h, m, s)?,
            // Neither (cold start): Traccar stamps the fix with the server time.
            (None, None) => ctx.now,
        };
        let mut p = Position::new(time, self.latitude, self.longitude, self.valid);
        p.speed_kmh = Some(self.speed_knots * KMH_PER_KNOT);
        p.course_deg = self.course;
        let a = &mut p.attributes;
        if let Some(status) = self.status {
            apply_status(a, status);
        }
        if let Some(b) = self.battery.and_then(uint) {
            a.io.push_name("battery", IoValue::U64(b));
        }
        if let Some(sim) = self.sim {
            push_text(&mut a.io, "sim", &sim.join(","));
        }
        if let Some(six) = six_fields(self.rest) {
            a.odometer_m = Some(six.odometer as f64);
            a.io.push_name("odometer", IoValue::U64(six.odometer));
            a.io.push_name("temp1", IoValue::I64(six.temperature));
            a.io.push_name("fuel", IoValue::F64(six.fuel));
            p.altitude_m = Some(six.altitude as f64);
            a.io.push_name("lac", IoValue::U64(six.lac));
            a.io.push_name("cid", IoValue::U64(six.cid));
        } else {
            for (i, v) in self.rest.iter().enumerate() {
                a.io.push_name(format!("io{}", i + 1), IoValue::Text(v.trim().to_owned()));
            }
        }
        Some(p)
    }
}

/// `odometer,temperature,fuel,altitude,lac,cid` (some ST-901 firmwares).
#[derive(Debug, Clone, Copy)]
struct Six {
    odometer: u64,
    temperature: i64,
    fuel: f64,
    altitude: i64,
    lac: u64,
    cid: u64,
}

fn six_fields(r: &[&str]) -> Option<Six> {
    let [odo, temp, fuel, alt, lac, cid] = r else {
        return None;
    };
    let signed = |v: &str| if v.starts_with('+') { None } else { int(v) };
    Some(Six {
        odometer: uint(odo)?,
        temperature: signed(temp)?,
        fuel: dec_with_point(fuel)?,
        altitude: signed(alt)?,
        lac: hex_uint(lac)?,
        cid: hex_uint(cid)?,
    })
}

/// `LINK,hhmmss,rssi,satellites,battery,steps,turnovers,ddmmyy,status`.
fn decode_link(f: &[&str], data: &str) -> Message {
    let mut m = Message::new(MessageKind::Heartbeat);
    let parsed = (|| {
        let [time, rssi, sats, battery, steps, turnovers, date, status, ..] = f else {
            return None;
        };
        let time = date_time(date, Some(triple(time)?))?;
        let status = status_field(status)?;
        let (rssi, sats, battery, steps, turnovers) =
            (uint(rssi)?, uint(sats)?, uint(battery)?, uint(steps)?, uint(turnovers)?);
        Some((time, rssi, sats, battery, steps, turnovers, status))
    })();
    let a = &mut m.attributes;
    match parsed {
        Some((time, rssi, sats, battery, steps, turnovers, status)) => {
            push_time(&mut a.io, time);
            a.rssi = i32::try_from(rssi).ok();
            a.battery_pct = Some(battery as f64);
            a.io.push_name("rssi", IoValue::U64(rssi));
            a.io.push_name("satellites", IoValue::U64(sats));
            a.io.push_name("battery", IoValue::U64(battery));
            a.io.push_name("steps", IoValue::U64(steps));
            a.io.push_name("turnovers", IoValue::U64(turnovers));
            apply_status(a, status);
        }
        None => keep_data(a, data),
    }
    m
}

/// `NBR,hhmmss,mcc,mnc,delay,count,(lac,cid,rssi,)+ddmmyy,status[,…]`.
fn decode_nbr(f: &[&str], data: &str) -> Message {
    let mut m = Message::new(MessageKind::Other);
    let parsed = (|| {
        let time = triple(f.first()?)?;
        let (mcc, mnc) = (uint(f.get(1)?)?, uint(f.get(2)?)?);
        // The status is the first 8-hex field preceded by a date, after the cells.
        let k = (6..f.len()).find(|&k| status_field(f[k]).is_some() && digits_n(f[k - 1], 6))?;
        let time = date_time(f[k - 1], Some(time))?;
        let status = status_field(f[k])?;
        Some((time, mcc, mnc, f.get(5..k - 1)?, status, &f[k + 1..]))
    })();
    let a = &mut m.attributes;
    match parsed {
        Some((time, mcc, mnc, cells, status, rest)) => {
            push_time(&mut a.io, time);
            a.io.push_name("mcc", IoValue::U64(mcc));
            a.io.push_name("mnc", IoValue::U64(mnc));
            push_text(&mut a.io, "cells", &cells.join(","));
            apply_status(a, status);
            if !rest.is_empty() {
                push_text(&mut a.io, "extra", &rest.join(","));
            }
        }
        None => keep_data(a, data),
    }
    m
}

/// `V3,hhmmss,<mcc><mnc>,count,<cells>,battery(hex),reboot,X,ddmmyy,status`.
fn decode_v3(f: &[&str], data: &str) -> Message {
    let mut m = Message::new(MessageKind::Other);
    let parsed = (|| {
        let n = f.len();
        if n < 8 {
            return None;
        }
        let time = date_time(f[n - 2], Some(triple(f[0])?))?;
        let status = status_field(f[n - 1])?;
        let network = f[1];
        if network.len() < 4 || !all_digits(network) {
            return None;
        }
        let (mcc, mnc) = (uint(&network[..3])?, uint(&network[3..])?);
        let battery = hex_uint(f[n - 5])?;
        Some((time, mcc, mnc, &f[3..n - 5], battery, status))
    })();
    let a = &mut m.attributes;
    match parsed {
        Some((time, mcc, mnc, cells, battery, status)) => {
            push_time(&mut a.io, time);
            a.io.push_name("mcc", IoValue::U64(mcc));
            a.io.push_name("mnc", IoValue::U64(mnc));
            push_text(&mut a.io, "cells", &cells.join(","));
            // Traccar stores this as `battery` without a unit; the scale is unknown.
            a.io.push_name("battery", IoValue::U64(battery));
            apply_status(a, status);
        }
        None => keep_data(a, data),
    }
    m
}

/// `VP1,A|B,lat,N,lon,E,speed,course,ddmmyy` or `VP1,V,mcc,mnc,<cells>`.
fn decode_vp1(f: &[&str], data: &str) -> Message {
    let mut m = Message::new(MessageKind::Position);
    let fix = (|| {
        if !matches!(*f.first()?, "A" | "B") {
            return None;
        }
        let lat = split_deg_min(f.get(1)?, 1)?;
        let lon = split_deg_min(f.get(3)?, 1)?;
        let lat = dm(lat.0, lat.1, Some(*f.get(2)?.as_bytes().first()?));
        let lon = dm(lon.0, lon.1, Some(*f.get(4)?.as_bytes().first()?));
        let time = date_time(f.get(7)?, None)?;
        let mut p = Position::new(time, lat, lon, true);
        p.speed_kmh = Some(dec_with_point(f.get(5)?)? * KMH_PER_KNOT);
        p.course_deg = Some(dec_with_point(f.get(6)?)?);
        Some(p)
    })();
    match fix {
        Some(p) => m.positions.push(p),
        None => keep_data(&mut m.attributes, data),
    }
    m
}

/// `V4,<reply…>,hhmmss,<fix…>`: the reply is everything before the last point where a
/// whole fix follows (Traccar's greedy `V4,(.*),`).
fn decode_v4(f: &[&str], data: &str, ctx: &DecodeContext) -> Message {
    let mut m = Message::new(MessageKind::CommandResponse);
    for k in (1..f.len()).rev() {
        if let Some(p) = parse_fix(&f[k..]).and_then(|fix| fix.position(ctx)) {
            m.result = Some(f[..k].join(","));
            m.positions.push(p);
            return m;
        }
    }
    m.result = Some(data.to_owned());
    m
}

/// Device side: what an H02 tracker sends. Positions and alarms are `V1` sentences
/// (or 32/42-byte binary records when the message type is `"binary"`), heartbeats
/// `HTBT`, command responses `V4`. H02 has no login and no OBD data.
#[derive(Debug, Default)]
pub struct H02Device;

impl DeviceEncoder for H02Device {
    fn encode(&mut self, msg: &Message) -> Result<Vec<u8>, EncodeError> {
        let id = msg.imei.as_deref().ok_or(EncodeError::Invalid {
            field: "imei",
            reason: "an H02 frame carries the device id".into(),
        })?;
        check_id(id)?;
        let binary = msg.message_type.as_deref().is_some_and(|t| t.starts_with("binary"));
        match msg.kind {
            MessageKind::Position | MessageKind::Alarm => {
                if msg.positions.is_empty() {
                    return Err(EncodeError::Invalid {
                        field: "positions",
                        reason: "an H02 report needs a fix".into(),
                    });
                }
                let mut out = Vec::new();
                for p in &msg.positions {
                    let status = status_word(p, &msg.attributes)?;
                    if binary {
                        out.extend_from_slice(&binary_record(id, p, status)?);
                    } else {
                        out.extend_from_slice(format!("*HQ,{id},V1,{}#", fix_fields(p, status)).as_bytes());
                    }
                }
                Ok(out)
            }
            MessageKind::Heartbeat => Ok(match msg.attributes.battery_pct {
                Some(b) => format!("*HQ,{id},HTBT,{}#", b.round().clamp(0.0, 100.0) as u8),
                None => format!("*HQ,{id},HTBT#"),
            }
            .into_bytes()),
            MessageKind::CommandResponse => {
                let result = msg.result.as_deref().unwrap_or("");
                if result.contains('#') {
                    return Err(EncodeError::Invalid {
                        field: "result",
                        reason: "'#' ends an H02 sentence".into(),
                    });
                }
                Ok(match msg.positions.first() {
                    Some(p) => {
                        let status = status_word(p, &msg.attributes)?;
                        format!("*HQ,{id},V4,{result},{}#", fix_fields(p, status))
                    }
                    None => format!("*HQ,{id},V4,{result}#"),
                }
                .into_bytes())
            }
            MessageKind::Login | MessageKind::Obd | MessageKind::Other => Err(EncodeError::Unsupported {
                protocol: "h02",
                what: format!("{} messages", msg.kind.as_str()),
            }),
        }
    }
}

/// The status word for a fix: the raw word when the message carries one, else "all
/// clear", then ignition and alarms applied (alarm bits are active low).
fn status_word(p: &Position, msg_attrs: &Attributes) -> Result<u32, EncodeError> {
    let raw = p
        .attributes
        .io
        .get_name("status")
        .or_else(|| msg_attrs.io.get_name("status"));
    let mut status = match raw {
        Some(IoValue::U64(v)) => u32::try_from(*v).unwrap_or(u32::MAX),
        _ => 0xFFFF_FFFF,
    };
    match p.attributes.ignition.or(msg_attrs.ignition) {
        Some(true) => status |= 1 << 10,
        Some(false) => status &= !(1 << 10),
        None => {}
    }
    for alarm in p.attributes.alarms.iter().chain(&msg_attrs.alarms) {
        let bit = match alarm {
            Alarm::Vibration => 0,
            Alarm::Sos => 1,
            Alarm::Overspeed => 2,
            Alarm::PowerCut => 19,
            other => {
                return Err(EncodeError::Unsupported {
                    protocol: "h02",
                    what: format!("alarm {other:?}"),
                });
            }
        };
        status &= !(1 << bit);
    }
    Ok(status)
}

/// `hhmmss,A,DDMM.mmmm,N,DDDMM.mmmm,E,knots,course,ddmmyy,STATUS`.
fn fix_fields(p: &Position, status: u32) -> String {
    let t = p.time;
    format!(
        "{:02}{:02}{:02},{},{},{},{},{},{:.2},{:.2},{:02}{:02}{:02},{status:08X}",
        t.hour(),
        t.minute(),
        t.second(),
        if p.valid { 'A' } else { 'V' },
        format_deg_min(p.latitude, 2, 4),
        if p.latitude < 0.0 { 'S' } else { 'N' },
        format_deg_min(p.longitude, 3, 4),
        if p.longitude < 0.0 { 'W' } else { 'E' },
        p.speed_kmh.unwrap_or(0.0).max(0.0) / KMH_PER_KNOT,
        p.course_deg.unwrap_or(0.0).rem_euclid(360.0),
        t.day(),
        t.month(),
        t.year().rem_euclid(100),
    )
}

fn bcd_byte(v: u32) -> u8 {
    // Callers pass 0..=99.
    (((v / 10) % 10) << 4 | (v % 10)) as u8
}

/// A 32-byte record (10-digit id) or a 42-byte one (15-digit id).
fn binary_record(id: &str, p: &Position, status: u32) -> Result<Vec<u8>, EncodeError> {
    let digits = id.len();
    if !all_digits(id) || !(digits <= 10 || digits == 15) {
        return Err(EncodeError::Invalid {
            field: "imei",
            reason: "binary H02 records carry a 10- or 15-digit id".into(),
        });
    }
    let (id_hex, total) = if digits == 15 {
        (format!("{id}0"), LONG_ID)
    } else {
        (format!("{id:0>10}"), SHORT)
    };
    let mut out = Vec::with_capacity(total);
    out.push(b'$');
    out.extend(hex::decode(&id_hex).map_err(|_| EncodeError::Invalid {
        field: "imei",
        reason: "not decimal".into(),
    })?);
    let t = p.time;
    let year = t.year().rem_euclid(100) as u32;
    for v in [t.hour(), t.minute(), t.second(), t.day(), t.month(), year] {
        out.push(bcd_byte(v));
    }
    let lat = format_deg_min(p.latitude, 2, 4).replace('.', "");
    let lon = format_deg_min(p.longitude, 3, 4).replace('.', "");
    let mut flags = 0u8;
    if p.valid {
        flags |= 0x02;
    }
    if p.latitude >= 0.0 {
        flags |= 0x04;
    }
    if p.longitude >= 0.0 {
        flags |= 0x08;
    }
    let battery = p
        .attributes
        .battery_pct
        .map_or(0, |b| (b.round().clamp(7.0, 100.0)) as u8);
    let nibbles = |s: &str| s.bytes().map(|c| c.wrapping_sub(b'0')).collect::<Vec<u8>>();
    let lat = nibbles(&lat);
    let lon = nibbles(&lon);
    if lat.len() != 8 || lon.len() != 9 {
        return Err(EncodeError::Invalid {
            field: "position",
            reason: "coordinate out of range".into(),
        });
    }
    for pair in lat.chunks(2) {
        out.push(pair[0] << 4 | pair[1]);
    }
    out.push(battery);
    let mut lon_nibbles = lon;
    lon_nibbles.push(flags);
    for pair in lon_nibbles.chunks(2) {
        out.push(pair[0] << 4 | pair[1]);
    }
    let knots = (p.speed_kmh.unwrap_or(0.0).max(0.0) / KMH_PER_KNOT).round().min(999.0) as u32;
    let course = p.course_deg.unwrap_or(0.0).rem_euclid(360.0).round() as u32 % 360;
    out.push(bcd_byte(knots / 10));
    out.push(((knots % 10) as u8) << 4 | (course / 100) as u8);
    out.push(bcd_byte(course % 100));
    out.extend_from_slice(&status.to_be_bytes());
    out.extend_from_slice(&[0xFF, 0x00, 0x00]);
    out.resize(total, 0);
    Ok(out)
}
