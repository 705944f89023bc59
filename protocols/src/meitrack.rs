//! Meitrack GPRS protocol (MVT100/340/380/600/800, T1/T3, T311/T322X/T333/T355, T366, TC68…).
//!
//! # Transport and framing
//! TCP only. Every uplink frame is an ASCII envelope
//! `$$<flag><len>,<IMEI>,<CMD>,<data>*<2 hex>\r\n`: the flag is a free "data identifier" byte the
//! device chooses (replies echo it), `len` counts the bytes from the first comma through the final
//! CR LF, and the checksum is the byte sum, mod 256, of everything from the first `$` through `*`.
//! `<data>` is text for `AAA` reports and command replies but raw binary for `CCE`, `CCC` and
//! `D00` (photo chunks), so the length field is what cuts frames. Both are verified: a wrong sum
//! is [`DecodeError::Checksum`]. A length field that disagrees with the bytes is tolerated only
//! when the checksum is right, because real firmware gets it wrong (Traccar's test captures hold
//! an `AAA` report off by two and a `D82` reply off by one, both with correct sums): such a frame
//! decodes, with a `length_mismatch` note in the message's `io`. For text frames whose length
//! field is wrong the framer falls back to the `*HH\r\n` terminator so the frames around it are
//! not lost; a binary frame is cut at its declared length and then fails its checksum.
//! A last frame without its CR LF is accepted at end of input (several real captures lack it), and
//! so is a frame directly followed by the next `$$`. Declared lengths above [`MAX_DECLARED_LEN`]
//! resync to the next `$$`.
//!
//! # What is decoded
//! * `AAA` (and `AFF`, which puts one extra field before the event; and any other command whose
//!   data has the report layout, e.g. an `A10` locate reply): event code, fix, satellites, GSM
//!   signal, speed, course, HDOP, altitude, mileage (→ `odometer_m`), runtime, base station, I/O
//!   status, analog inputs and, when present, event data (RFID for event 37 → `driver_id`),
//!   protocol version, fuel (→ `fuel_level_pct`), temperature probes and the trailing data block.
//!   Analog inputs in the decimal form (`4.33|12.96|…`) give `battery_v`/`power_v`; in the hex form
//!   (`0000|0000|0000|018D|04CB`) the scale depends on the device model, which the frame does not
//!   say, so only the raw values are kept (`adc1..3`, `battery_raw`, `power_raw`). Event codes map
//!   to alarms (1 SOS, 17 low battery, 18 low power, 19 overspeed, 20/21 geofence enter/exit,
//!   22 power restored, 23 power cut, 36 tow, 44 jamming, 78 accident, 90/91 cornering,
//!   129 braking, 130 acceleration, 135 fatigue); a report with one of them is an `Alarm` message.
//! * `CCE` (binary records inside the envelope): u32 LE remaining cache, u16 LE record count, then
//!   per record u16 LE length (of what follows it), u16 LE index and four parameter groups (1-, 2-,
//!   4-byte little-endian values, then id + length + bytes). Ids are one byte, or two when the first
//!   is 0xFE. Every record becomes a position; every value is kept in `io` under its numeric id and
//!   the known ids are also mapped (see `apply_cce`). A batch is one `Position` message; event
//!   alarms are carried as attributes of the record that raised them.
//! * `CCC` (older binary cache upload): an 8-byte header kept raw, then 52-byte records.
//! * `D03` (reply to a photo request) → `CommandResponse`; `D00` (photo chunk) → `Other` with the
//!   file name, chunk numbers and bytes in `io` (photos are not reassembled here).
//! * Any other command → a report if its data parses as one, else a `CommandResponse` whose
//!   result is `"<CMD>,<data>"` (e.g. `D82,0`, `C01,OK`).
//!
//! # Acknowledgements
//! Traccar answers nothing to `AAA` and `CCE`, and neither do we: PROTOCOLS.md (§6) documents no
//! server acknowledgement for them, only the `CCC` one, so none is invented here. `CCC` is
//! answered with `@@<flag><len>,<IMEI>,CCC,<n>*<sum>\r\n`, which tells the device to delete the `n`
//! cached records just received (Traccar computes `len` as `27 + n/10`, which is right only below
//! 20 records; we compute the real length). `D03` is answered with a request for packet 0 of
//! `camera_picture.jpg` and every eighth `D00` chunk with a request for the next one, as Traccar
//! does (`@@O<len>,<IMEI>,D00,<file>,<index>*<sum>\r\n`).
//!
//! # Downlink
//! `@@<flag><len>,<IMEI>,<cmd>[,<args>]*<sum>\r\n`, same length and checksum rules:
//! `A10` locate (flag `Q`), `C01,0,<5 digits>` output control (flag `M`; one digit per output,
//! `1` on, `0` off, `2` unchanged: engine stop is output 1 on, `C01,0,12222`, resume `C01,0,02222`,
//! alarm arm/disarm switch output 3 as Traccar does), `D03,1,camera_picture.jpg` photo (flag `D`),
//! and `Custom` text sent verbatim as `<cmd>,<args>` (flag `C`).
//!
//! # Device side
//! [`MeitrackDevice`] writes `AAA` reports for a single fix (positions, alarms with their event
//! code, heartbeats as a periodic event-35 report), `CCE` batches for several fixes (or when the
//! message type says `CCE`, or for OBD values, which only `CCE` can carry), and command replies.
//! Meitrack has no login message: the IMEI is in every frame.

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Timelike, Utc};

use crate::Protocol;
use crate::checksum::sum8;
use crate::codec::{Codec, DecodeContext, DeviceEncoder, Framing, Transport};
use crate::error::{DecodeError, EncodeError, FrameError};
use crate::model::{Alarm, Attributes, Command, IoMap, IoValue, Message, MessageKind, Position};

/// Largest length field accepted (photo chunks are ~1.1 kB, cache batches a few kB).
pub const MAX_DECLARED_LEN: usize = 16 * 1024;
/// `,<1-char IMEI>,<CMD>*HH\r\n`: anything shorter cannot be a frame.
const MIN_DECLARED_LEN: usize = 11;
const MAX_LEN_DIGITS: usize = 5;
const MAX_IMEI_LEN: usize = 20;
/// Unix time of 2000-01-01T00:00:00Z, the time base of the binary records.
const EPOCH_2000: i64 = 946_684_800;
const CCC_HEADER_LEN: usize = 8;
const CCC_RECORD_LEN: usize = 52;
/// The event code Meitrack devices use for their periodic (time interval) report.
const EVENT_TIMED_REPORT: u32 = 35;
/// The event code of an RFID card swipe (its event data is the card number).
const EVENT_RFID: u32 = 37;
/// Records per `CCE` frame written by [`MeitrackDevice`], keeping frames near 1 kB as devices do.
const CCE_RECORDS_PER_FRAME: usize = 12;

pub fn codec(transport: Transport) -> Option<Box<dyn Codec>> {
    match transport {
        Transport::Tcp => Some(Box::new(MeitrackCodec::new())),
        _ => None,
    }
}

pub fn device(transport: Transport) -> Option<Box<dyn DeviceEncoder>> {
    match transport {
        Transport::Tcp => Some(Box::new(MeitrackDevice::new())),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Framing

fn is_filler(b: u8) -> bool {
    matches!(b, b'\r' | b'\n' | b' ' | b'\t' | 0)
}

/// Commands whose data is binary: their frames can only be cut by the length field.
fn is_binary_command(cmd: &[u8]) -> bool {
    matches!(cmd, b"CCC" | b"CCE" | b"D00")
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn hex_byte(hi: u8, lo: u8) -> Option<u8> {
    Some((hex_val(hi)? << 4) | hex_val(lo)?)
}

/// `*HH` at `buf[p..p + 3]`.
fn checksum_tail_at(buf: &[u8], p: usize) -> bool {
    matches!(buf.get(p..p + 3), Some([b'*', h, l]) if hex_val(*h).is_some() && hex_val(*l).is_some())
}

/// End (exclusive) of the first `*HH` terminator at or after `from` in a text frame: followed by
/// CR LF, by the next frame's `$$`, or (at end of input) by nothing.
fn find_text_end(buf: &[u8], from: usize, eof: bool) -> Option<usize> {
    let hay = buf.get(from..)?;
    for rel in memchr::memchr_iter(b'*', hay) {
        let p = from + rel;
        if !checksum_tail_at(buf, p) {
            continue;
        }
        let t = p + 3;
        let after = &buf[t..];
        if after.starts_with(b"\r\n") {
            return Some(t + 2);
        }
        if after.starts_with(b"$$") {
            return Some(t);
        }
        if eof && after.iter().all(|&b| is_filler(b)) {
            return Some(buf.len());
        }
    }
    None
}

/// Like [`find_text_end`] while more bytes may come: only a terminator that is visibly followed
/// by another frame counts, so a frame still arriving is never cut short.
fn find_text_end_before_next(buf: &[u8], from: usize) -> Option<usize> {
    let hay = buf.get(from..)?;
    for rel in memchr::memchr_iter(b'*', hay) {
        let p = from + rel;
        if !checksum_tail_at(buf, p) {
            continue;
        }
        let t = p + 3;
        let after = &buf[t..];
        if after.starts_with(b"\r\n$$") {
            return Some(t + 2);
        }
        if after.starts_with(b"$$") {
            return Some(t);
        }
    }
    None
}

fn resync(discard: usize, reason: impl Into<String>) -> Framing {
    Framing::Resync {
        discard: discard.max(1),
        error: FrameError::new(reason),
    }
}

/// Where the next `$$` after `from` starts (a trailing lone `$` is kept: it may be half of one).
fn next_marker(buf: &[u8], from: usize) -> usize {
    match memchr::memmem::find(buf.get(from..).unwrap_or(&[]), b"$$") {
        Some(p) => from + p,
        None if buf.last() == Some(&b'$') && buf.len() > from => buf.len() - 1,
        None => buf.len(),
    }
}

/// The 3-byte command of a frame whose first comma is at `comma`, if the bytes are there.
fn command_after(buf: &[u8], comma: usize) -> Option<&[u8]> {
    let from = comma + 1;
    let window = buf.get(from..)?;
    let limit = window.len().min(MAX_IMEI_LEN + 1);
    let imei_end = window[..limit].iter().position(|&b| b == b',')?;
    window.get(imei_end + 1..imei_end + 4)
}

fn frame_meitrack(buf: &[u8], eof: bool) -> Framing {
    let Some(s) = buf.iter().position(|&b| !is_filler(b)) else {
        return Framing::Incomplete;
    };
    let rest = &buf[s..];
    if rest == b"$" {
        return if eof {
            resync(buf.len(), "lone '$' at end of input")
        } else {
            Framing::Incomplete
        };
    }
    if !rest.starts_with(b"$$") {
        let discard = next_marker(buf, s + 1);
        return resync(discard, format!("no $$ frame start at byte {s}"));
    }
    // "$$" + flag + 1..=5 digits + ','
    let mut i = 3;
    while i < rest.len() && i - 3 <= MAX_LEN_DIGITS && rest[i].is_ascii_digit() {
        i += 1;
    }
    if i >= rest.len() {
        if i - 3 <= MAX_LEN_DIGITS && !eof {
            return Framing::Incomplete;
        }
        if eof {
            return Framing::Frame {
                start: s,
                end: buf.len(),
            };
        }
    }
    if i == 3 || i - 3 > MAX_LEN_DIGITS || rest.get(i) != Some(&b',') {
        return resync(next_marker(buf, s + 2), "bad Meitrack length field");
    }
    let declared = rest[3..i].iter().fold(0usize, |a, &d| a * 10 + usize::from(d - b'0'));
    if !(MIN_DECLARED_LEN..=MAX_DECLARED_LEN).contains(&declared) {
        return resync(
            next_marker(buf, s + 2),
            format!("Meitrack length field {declared} outside {MIN_DECLARED_LEN}..={MAX_DECLARED_LEN}"),
        );
    }
    let comma = s + i;
    let end = comma + declared;
    let binary = match command_after(buf, comma) {
        Some(cmd) => is_binary_command(cmd),
        None if !eof && buf.len() < comma + MAX_IMEI_LEN + 5 => return Framing::Incomplete,
        None => false,
    };

    // The usual case: the length field is right and the frame ends in `*HH\r\n`.
    if buf.len() >= end && buf[end - 2..end] == *b"\r\n" && checksum_tail_at(buf, end - 5) {
        return Framing::Frame { start: s, end };
    }
    // Right length but no CR LF: at end of input, or the next frame follows at once.
    let bare = end - 2;
    if buf.len() >= bare && checksum_tail_at(buf, bare - 3) {
        let after = &buf[bare..];
        if (eof && after.is_empty()) || after.starts_with(b"$$") {
            return Framing::Frame { start: s, end: bare };
        }
        if !eof && (after.is_empty() || after == b"$" || after == b"\r") {
            return Framing::Incomplete;
        }
    }
    if buf.len() < end && !eof {
        if !binary && let Some(t) = find_text_end_before_next(buf, comma + 1) {
            return Framing::Frame { start: s, end: t };
        }
        return Framing::Incomplete;
    }
    // The length field does not match the bytes: cut a text frame at its terminator (decode
    // accepts it only if its checksum is right); a binary frame at its declared length.
    if !binary {
        if let Some(t) = find_text_end(buf, comma + 1, eof) {
            return Framing::Frame { start: s, end: t };
        }
        // A terminator still arriving (`*`, `*H`, `*HH`, `*HH\r`): wait for it.
        let last_star = memchr::memrchr(b'*', &buf[comma..]).map(|p| comma + p);
        if !eof && last_star.is_some_and(|p| p + 5 > buf.len()) {
            return Framing::Incomplete;
        }
    }
    Framing::Frame {
        start: s,
        end: end.min(buf.len()),
    }
}

// ---------------------------------------------------------------------------------------------
// Envelope

/// A verified frame split into its parts.
#[derive(Debug, Clone, Copy)]
struct Envelope<'a> {
    flag: u8,
    imei: &'a str,
    command: &'a str,
    data: &'a [u8],
    /// `(declared, actual)` when the length field is wrong but the checksum is right.
    length_mismatch: Option<(usize, usize)>,
}

fn parse_envelope(frame: &[u8]) -> Result<Envelope<'_>, DecodeError> {
    if !frame.starts_with(b"$$") {
        return Err(DecodeError::invalid("start", "frame does not start with $$", frame));
    }
    let digits_end = frame
        .iter()
        .skip(3)
        .position(|b| !b.is_ascii_digit())
        .map(|p| p + 3)
        .ok_or_else(|| DecodeError::truncated(frame))?;
    if digits_end == 3 || digits_end - 3 > MAX_LEN_DIGITS || frame[digits_end] != b',' {
        return Err(DecodeError::invalid(
            "length",
            "no decimal length field before the first comma",
            frame,
        ));
    }
    let declared = frame[3..digits_end]
        .iter()
        .fold(0usize, |a, &d| a * 10 + usize::from(d - b'0'));
    let comma = digits_end;
    // Tolerate a missing or partial CR LF (a last frame cut at end of input).
    let body_end = frame.len()
        - frame
            .iter()
            .rev()
            .take(2)
            .take_while(|&&b| b == b'\r' || b == b'\n')
            .count();
    if body_end < comma + 4 {
        return Err(DecodeError::truncated(frame));
    }
    let star = body_end - 3;
    if frame[star] != b'*' {
        return Err(DecodeError::invalid("checksum", "frame does not end in *HH", frame));
    }
    let carried = hex_byte(frame[star + 1], frame[star + 2])
        .ok_or_else(|| DecodeError::invalid("checksum", "checksum is not two hex digits", frame))?;
    let computed = sum8(&frame[..=star]);
    if carried != computed {
        return Err(DecodeError::checksum(
            format!("{computed:02X}"),
            String::from_utf8_lossy(&frame[star + 1..star + 3]),
            frame,
        ));
    }
    // The checksum vouches for the bytes; a length field that disagrees with them is a firmware
    // quirk seen on real devices (off by one or two with a correct checksum), kept as a note.
    let actual = body_end + 2 - comma;
    let length_mismatch = (declared != actual).then_some((declared, actual));
    let inner = &frame[comma + 1..star];
    let imei_end = inner
        .iter()
        .position(|&b| b == b',')
        .ok_or_else(|| DecodeError::invalid("imei", "no comma after the IMEI", frame))?;
    let imei = &inner[..imei_end];
    if imei.is_empty() || imei.len() > MAX_IMEI_LEN || !imei.iter().all(u8::is_ascii_alphanumeric) {
        return Err(DecodeError::invalid(
            "imei",
            "IMEI is not 1-20 alphanumeric characters",
            frame,
        ));
    }
    let rest = &inner[imei_end + 1..];
    let command = rest
        .get(..3)
        .filter(|c| c.iter().all(u8::is_ascii_alphanumeric))
        .ok_or_else(|| DecodeError::invalid("command", "no 3-character command", frame))?;
    let data: &[u8] = match rest.get(3) {
        None => &[],
        Some(b',') => &rest[4..],
        Some(_) => {
            return Err(DecodeError::invalid(
                "command",
                "command is not followed by a comma",
                frame,
            ));
        }
    };
    Ok(Envelope {
        flag: frame[2],
        // Both checked ASCII alphanumeric above.
        imei: std::str::from_utf8(imei).unwrap_or_default(),
        command: std::str::from_utf8(command).unwrap_or_default(),
        data,
        length_mismatch,
    })
}

/// A server→device frame: `@@<flag><len>,<IMEI>,<content>*<sum>\r\n`.
fn server_frame(flag: u8, imei: &str, content: &str) -> Vec<u8> {
    let len = 1 + imei.len() + 1 + content.len() + 5;
    let mut out = format!("@@{}{len:02},{imei},{content}*", flag as char).into_bytes();
    let sum = sum8(&out);
    out.extend_from_slice(format!("{sum:02X}\r\n").as_bytes());
    out
}

/// A device→server frame: `$$<flag><len>,<IMEI>,<CMD>[,<data>]*<sum>\r\n`.
fn device_frame(flag: u8, imei: &str, command: &str, data: &[u8]) -> Vec<u8> {
    let data_part = if data.is_empty() { 0 } else { 1 + data.len() };
    let len = 1 + imei.len() + 1 + command.len() + data_part + 5;
    let mut out = Vec::with_capacity(len + 8);
    out.extend_from_slice(format!("$${}{len},{imei},{command}", flag as char).as_bytes());
    if !data.is_empty() {
        out.push(b',');
        out.extend_from_slice(data);
    }
    out.push(b'*');
    let sum = sum8(&out);
    out.extend_from_slice(format!("{sum:02X}\r\n").as_bytes());
    out
}

// ---------------------------------------------------------------------------------------------
// Events and alarms

fn alarm_for_event(event: u32) -> Option<Alarm> {
    Some(match event {
        1 => Alarm::Sos,
        17 => Alarm::LowBattery,
        18 => Alarm::LowPower,
        19 => Alarm::Overspeed,
        20 => Alarm::GeofenceEnter,
        21 => Alarm::GeofenceExit,
        22 => Alarm::PowerRestored,
        23 => Alarm::PowerCut,
        36 => Alarm::Tow,
        44 => Alarm::Jamming,
        78 => Alarm::Accident,
        90 | 91 => Alarm::HardCornering,
        129 => Alarm::HardBraking,
        130 => Alarm::HardAcceleration,
        135 => Alarm::Fatigue,
        _ => return None,
    })
}

fn event_for_alarm(alarm: &Alarm) -> Option<u32> {
    Some(match alarm {
        Alarm::Sos => 1,
        Alarm::LowBattery => 17,
        Alarm::LowPower => 18,
        Alarm::Overspeed => 19,
        Alarm::GeofenceEnter => 20,
        Alarm::GeofenceExit => 21,
        Alarm::PowerRestored => 22,
        Alarm::PowerCut => 23,
        Alarm::Tow => 36,
        Alarm::Jamming => 44,
        Alarm::Accident => 78,
        Alarm::HardCornering => 90,
        Alarm::HardBraking => 129,
        Alarm::HardAcceleration => 130,
        Alarm::Fatigue => 135,
        _ => return None,
    })
}

fn set_event(attrs: &mut Attributes, event: u32) {
    attrs.event = Some(event);
    if let Some(alarm) = alarm_for_event(event) {
        attrs.raise(alarm);
    }
}

// ---------------------------------------------------------------------------------------------
// Text reports (AAA and friends)

fn is_decimal(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && digits.bytes().filter(|&b| b == b'.').count() <= 1
        && digits.bytes().any(|b| b.is_ascii_digit())
}

fn is_coordinate(s: &str) -> bool {
    s.contains('.') && is_decimal(s)
}

/// Index of the event field: 0 for `AAA`, 1 when one extra field precedes it (`AFF,0004,…`).
fn locate_event(f: &[&str]) -> Option<usize> {
    (0..=1).find(|&e| {
        f.len() >= e + 16
            && f[e].bytes().all(|b| b.is_ascii_digit())
            && !f[e].is_empty()
            && is_coordinate(f[e + 1])
            && is_coordinate(f[e + 2])
            && f[e + 3].len() == 12
            && f[e + 3].bytes().all(|b| b.is_ascii_digit())
    })
}

fn field_f64(s: &str, field: &'static str, frame: &[u8]) -> Result<Option<f64>, DecodeError> {
    if s.is_empty() {
        return Ok(None);
    }
    if !is_decimal(s) {
        return Err(DecodeError::invalid(field, format!("{s:?} is not a number"), frame));
    }
    s.parse::<f64>()
        .map(Some)
        .map_err(|e| DecodeError::invalid(field, e.to_string(), frame))
}

fn field_u64(s: &str, field: &'static str, frame: &[u8]) -> Result<Option<u64>, DecodeError> {
    if s.is_empty() {
        return Ok(None);
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DecodeError::invalid(
            field,
            format!("{s:?} is not an unsigned integer"),
            frame,
        ));
    }
    s.parse::<u64>()
        .map(Some)
        .map_err(|e| DecodeError::invalid(field, e.to_string(), frame))
}

fn hex_u64(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

/// `yymmddhhmmss`, UTC.
fn parse_yymmddhhmmss(s: &str, frame: &[u8]) -> Result<DateTime<Utc>, DecodeError> {
    let b = s.as_bytes();
    let two = |i: usize| -> u32 { u32::from(b[i] - b'0') * 10 + u32::from(b[i + 1] - b'0') };
    if b.len() != 12 || !b.iter().all(u8::is_ascii_digit) {
        return Err(DecodeError::invalid(
            "time",
            format!("{s:?} is not yymmddhhmmss"),
            frame,
        ));
    }
    NaiveDate::from_ymd_opt(2000 + two(0) as i32, two(2), two(4))
        .and_then(|d| d.and_hms_opt(two(6), two(8), two(10)))
        .map(|t| t.and_utc())
        .ok_or_else(|| DecodeError::invalid("time", format!("{s:?} is not a valid date and time"), frame))
}

/// Temperature probes: `IIVVVV` groups joined by `|`. Protocol 3 and later send a signed
/// hundredths value; older ones a signed whole part and an unsigned hundredths part.
fn parse_temperatures(s: &str, protocol: u64, io: &mut IoMap) {
    for group in s.split('|') {
        if group.len() != 6 || !group.bytes().all(|b| hex_val(b).is_some()) {
            continue;
        }
        let (Some(index), Some(raw)) = (hex_u64(&group[..2]), hex_u64(&group[2..])) else {
            continue;
        };
        let value = if protocol >= 3 {
            f64::from(raw as u16 as i16) / 100.0
        } else {
            let whole = f64::from((raw >> 8) as u8 as i8);
            let frac = (raw & 0xFF) as f64 / 100.0;
            if whole < 0.0 { whole - frac } else { whole + frac }
        };
        io.push_name(format!("temp{index}"), IoValue::F64(value));
    }
}

/// Decode the report layout `event,lat,lon,time,A|V,…`; `None` when the data does not have it.
fn parse_report(env: &Envelope<'_>, frame: &[u8]) -> Result<Option<Message>, DecodeError> {
    let Ok(text) = std::str::from_utf8(env.data) else {
        return Ok(None);
    };
    let f: Vec<&str> = text.split(',').collect();
    let Some(e) = locate_event(&f) else {
        return Ok(None);
    };
    let mut attrs = Attributes {
        io: IoMap::with_capacity(24),
        ..Attributes::default()
    };
    let io = &mut attrs.io;
    if e == 1 {
        io.push_name("prefix", IoValue::Text(f[0].to_owned()));
    }
    let event = field_u64(f[e], "event", frame)?.unwrap_or(0);
    let event = u32::try_from(event).map_err(|_| DecodeError::invalid("event", "event code too large", frame))?;
    io.push_name("event", IoValue::U64(u64::from(event)));

    let lat = field_f64(f[e + 1], "latitude", frame)?.unwrap_or(0.0);
    let lon = field_f64(f[e + 2], "longitude", frame)?.unwrap_or(0.0);
    if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
        return Err(DecodeError::invalid(
            "coordinates",
            format!("{lat},{lon} out of range"),
            frame,
        ));
    }
    let time = parse_yymmddhhmmss(f[e + 3], frame)?;
    let valid = match f[e + 4] {
        "A" => true,
        "V" => false,
        other => {
            return Err(DecodeError::invalid(
                "validity",
                format!("{other:?} is not A or V"),
                frame,
            ));
        }
    };
    let mut pos = Position::new(time, lat, lon, valid);
    if let Some(sats) = field_u64(f[e + 5], "satellites", frame)? {
        pos.satellites = Some(u8::try_from(sats).unwrap_or(u8::MAX));
    }
    if let Some(gsm) = field_u64(f[e + 6], "gsm", frame)? {
        io.push_name("gsm", IoValue::U64(gsm));
        attrs.rssi = i32::try_from(gsm).ok();
    }
    pos.speed_kmh = field_f64(f[e + 7], "speed", frame)?;
    pos.course_deg = field_f64(f[e + 8], "course", frame)?;
    pos.hdop = field_f64(f[e + 9], "hdop", frame)?;
    pos.altitude_m = field_f64(f[e + 10], "altitude", frame)?;
    if let Some(mileage) = field_u64(f[e + 11], "mileage", frame)? {
        io.push_name("mileage", IoValue::U64(mileage));
        attrs.odometer_m = Some(mileage as f64);
    }
    if let Some(runtime) = field_u64(f[e + 12], "runtime", frame)? {
        io.push_name("runtime", IoValue::U64(runtime));
    }
    // Base station: MCC|MNC decimal, LAC|CI hex (either may be empty).
    let mut cell = f[e + 13].split('|');
    for (name, hex) in [("mcc", false), ("mnc", false), ("lac", true), ("cid", true)] {
        let Some(v) = cell.next() else { break };
        let parsed = if hex { hex_u64(v) } else { v.parse::<u64>().ok() };
        if let Some(n) = parsed {
            io.push_name(name, IoValue::U64(n));
        }
    }
    // I/O status: inputs byte then outputs byte, hex.
    let status = f[e + 14];
    io.push_name("io_status", IoValue::Text(status.to_owned()));
    if status.len() == 4
        && let (Some(input), Some(output)) = (hex_u64(&status[..2]), hex_u64(&status[2..]))
    {
        io.push_name("input", IoValue::U64(input));
        io.push_name("output", IoValue::U64(output));
    }
    // Analog inputs: decimal volts (battery|power|rtc|mcu|gps) or model-scaled hex
    // (adc1|adc2|adc3|battery|power).
    let analog = f[e + 15];
    io.push_name("analog", IoValue::Text(analog.to_owned()));
    let parts: Vec<&str> = analog.split('|').collect();
    if parts.len() >= 2 && parts[..2].iter().all(|p| p.contains('.') && is_decimal(p)) {
        attrs.battery_v = parts[0].parse().ok();
        attrs.power_v = parts[1].parse().ok();
    } else {
        for (name, v) in ["adc1", "adc2", "adc3", "battery_raw", "power_raw"].iter().zip(&parts) {
            if let Some(n) = hex_u64(v) {
                io.push_name(*name, IoValue::U64(n));
            }
        }
    }
    // Optional tail: event data, reserved, protocol, fuel, temperatures, data count, data.
    if let Some(&event_data) = f.get(e + 16)
        && !event_data.is_empty()
    {
        io.push_name("event_data", IoValue::Text(event_data.to_owned()));
        if event == EVENT_RFID {
            attrs.driver_id = Some(event_data.to_owned());
        }
    }
    if let Some(&reserved) = f.get(e + 17)
        && !reserved.is_empty()
    {
        io.push_name("reserved", IoValue::Text(reserved.to_owned()));
    }
    let protocol = f.get(e + 18).and_then(|p| p.parse::<u64>().ok());
    if let Some(p) = protocol {
        io.push_name("protocol", IoValue::U64(p));
    }
    if let Some(&fuel) = f.get(e + 19)
        && !fuel.is_empty()
    {
        io.push_name("fuel", IoValue::Text(fuel.to_owned()));
        if fuel.len() == 4
            && let (Some(whole), Some(hundredths)) = (hex_u64(&fuel[..2]), hex_u64(&fuel[2..]))
        {
            attrs.fuel_level_pct = Some(whole as f64 + hundredths as f64 / 100.0);
        }
    }
    if let Some(&temps) = f.get(e + 20)
        && !temps.is_empty()
    {
        io.push_name("temperatures", IoValue::Text(temps.to_owned()));
        parse_temperatures(temps, protocol.unwrap_or(0), io);
    }
    if let Some(count) = f.get(e + 21).and_then(|c| c.parse::<u64>().ok()) {
        io.push_name("data_count", IoValue::U64(count));
    }
    if f.len() > e + 22 {
        io.push_name("data", IoValue::Text(f[e + 22..].join(",")));
    }
    set_event(&mut attrs, event);
    let kind = if attrs.alarms.is_empty() {
        MessageKind::Position
    } else {
        MessageKind::Alarm
    };
    pos.attributes = attrs;
    Ok(Some(
        Message::new(kind)
            .with_imei(env.imei)
            .with_type(env.command)
            .with_positions(vec![pos]),
    ))
}

// ---------------------------------------------------------------------------------------------
// Binary records (CCE, CCC)

/// A little-endian cursor that turns running out of bytes into [`DecodeError::Truncated`].
#[derive(Debug)]
struct Le<'a> {
    buf: &'a [u8],
    pos: usize,
    frame: &'a [u8],
}

impl<'a> Le<'a> {
    fn new(buf: &'a [u8], frame: &'a [u8]) -> Self {
        Le { buf, pos: 0, frame }
    }
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or_else(|| DecodeError::truncated(self.frame))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// A parameter id: one byte, or two (big-endian, `0xFE xx`) when the first is 0xFE.
    fn param_id(&mut self) -> Result<u32, DecodeError> {
        if self.peek() == Some(0xFE) {
            let b = self.take(2)?;
            Ok(u32::from(u16::from_be_bytes([b[0], b[1]])))
        } else {
            Ok(u32::from(self.u8()?))
        }
    }
}

fn time_since_2000(secs: u32, frame: &[u8]) -> Result<DateTime<Utc>, DecodeError> {
    Utc.timestamp_opt(EPOCH_2000 + i64::from(secs), 0)
        .single()
        .ok_or_else(|| DecodeError::invalid("time", "timestamp out of range", frame))
}

/// What one CCE record carries besides its typed attributes.
#[derive(Debug, Default)]
struct CceFix {
    lat: Option<f64>,
    lon: Option<f64>,
    time: Option<DateTime<Utc>>,
    valid: Option<bool>,
    sats: Option<u8>,
    speed: Option<f64>,
    course: Option<f64>,
    hdop: Option<f64>,
    altitude: Option<f64>,
    /// 0x9B, used for `odometer_m` only when the device mileage (0x0C) is absent.
    obd_mileage: Option<f64>,
}

/// Map one CCE parameter of a fixed-width group (1, 2 or 4 bytes) onto the fix and typed
/// attributes; the raw value always lands in `io` too.
fn apply_cce(id: u32, width: u8, raw: u32, fix: &mut CceFix, attrs: &mut Attributes) {
    let v = f64::from(raw);
    match (width, id) {
        (1, 0x01) | (2, 0x40) => set_event(attrs, raw),
        (1, 0x05) => fix.valid = Some(raw > 0),
        (1, 0x06) => fix.sats = Some(raw as u8),
        (1, 0x07) => attrs.rssi = i32::try_from(raw).ok(),
        (1, 0x97) => attrs.throttle_pct = Some(v),
        (1, 0x9D) => attrs.fuel_level_pct = Some(v),
        (1, 0xFE69) => attrs.battery_pct = Some(v),
        (2, 0x08) => fix.speed = Some(v),
        (2, 0x09) => fix.course = Some(v),
        (2, 0x0A) => fix.hdop = Some(v / 10.0),
        (2, 0x0B) => fix.altitude = Some(f64::from(raw as u16 as i16)),
        (2, 0x19) => attrs.battery_v = Some(v / 100.0),
        (2, 0x1A) => attrs.power_v = Some(v / 100.0),
        (2, 0x91 | 0x92) => attrs.obd_speed_kmh = Some(v),
        (2, 0x98) => attrs.fuel_used_l = Some(v),
        (2, 0x99) => attrs.rpm = Some(v),
        (2, 0x9C) => attrs.coolant_c = Some(v),
        (2, 0xC9) => attrs.fuel_rate_lph = Some(v),
        (4, 0x02) => fix.lat = Some(f64::from(raw as i32) / 1e6),
        (4, 0x03) => fix.lon = Some(f64::from(raw as i32) / 1e6),
        (4, 0x0C) => attrs.odometer_m = Some(v),
        (4, 0x9B) => fix.obd_mileage = Some(v),
        (4, 0xA0) => attrs.fuel_used_l = Some(v / 1000.0),
        (4, 0xA2) => attrs.fuel_rate_lph = Some(v / 100.0),
        _ => {}
    }
    // Coordinates and altitude are signed on the wire; keep them signed in `io`.
    let raw_value = match (width, id) {
        (4, 0x02 | 0x03) => IoValue::I64(i64::from(raw as i32)),
        (2, 0x0B) => IoValue::I64(i64::from(raw as u16 as i16)),
        _ => IoValue::U64(u64::from(raw)),
    };
    attrs.io.push_id(id, raw_value);
}

fn decode_cce_record(rec: &[u8], frame: &[u8], ctx: &DecodeContext) -> Result<Position, DecodeError> {
    let mut r = Le::new(rec, frame);
    let index = r.u16()?;
    let mut fix = CceFix::default();
    let mut attrs = Attributes {
        io: IoMap::with_capacity(rec.len() / 3 + 1),
        ..Attributes::default()
    };
    attrs.io.push_name("index", IoValue::U64(u64::from(index)));
    for width in [1u8, 2, 4] {
        let count = r.u8()?;
        for _ in 0..count {
            let id = r.param_id()?;
            let raw = match width {
                1 => u32::from(r.u8()?),
                2 => u32::from(r.u16()?),
                _ => r.u32()?,
            };
            if (width, id) == (4, 0x04) {
                fix.time = Some(time_since_2000(raw, frame)?);
            }
            apply_cce(id, width, raw, &mut fix, &mut attrs);
        }
    }
    let count = r.u8()?;
    for _ in 0..count {
        let id = r.param_id()?;
        let len = usize::from(r.u8()?);
        let bytes = r.take(len)?;
        attrs.io.push_id(id, IoValue::Bytes(bytes.to_vec()));
    }
    if attrs.odometer_m.is_none() {
        attrs.odometer_m = fix.obd_mileage;
    }
    let mut pos = Position::new(
        fix.time.unwrap_or(ctx.now),
        fix.lat.unwrap_or(0.0),
        fix.lon.unwrap_or(0.0),
        fix.valid.unwrap_or(false) && fix.lat.is_some() && fix.lon.is_some(),
    );
    pos.satellites = fix.sats;
    pos.speed_kmh = fix.speed;
    pos.course_deg = fix.course;
    pos.hdop = fix.hdop;
    pos.altitude_m = fix.altitude;
    pos.attributes = attrs;
    Ok(pos)
}

fn decode_cce(env: &Envelope<'_>, frame: &[u8], ctx: &DecodeContext) -> Result<Vec<Message>, DecodeError> {
    let mut r = Le::new(env.data, frame);
    let remaining_cache = r.u32()?;
    let count = usize::from(r.u16()?);
    // Each record needs at least length + index + four empty groups.
    let mut positions = Vec::with_capacity(count.min(r.remaining() / 8));
    for _ in 0..count {
        let len = usize::from(r.u16()?);
        let rec = r.take(len)?;
        positions.push(decode_cce_record(rec, frame, ctx)?);
    }
    let mut msg = Message::new(MessageKind::Position)
        .with_imei(env.imei)
        .with_type(env.command)
        .with_positions(positions);
    msg.attributes
        .io
        .push_name("remaining_cache", IoValue::U64(u64::from(remaining_cache)));
    msg.attributes.io.push_name("record_count", IoValue::U64(count as u64));
    if r.remaining() > 0 {
        msg.attributes
            .io
            .push_name("trailing", IoValue::Bytes(env.data[r.pos..].to_vec()));
    }
    Ok(vec![msg])
}

fn decode_ccc_record(rec: &[u8], frame: &[u8]) -> Result<Position, DecodeError> {
    let mut r = Le::new(rec, frame);
    let event = r.u8()?;
    let lat = f64::from(r.u32()? as i32) / 1e6;
    let lon = f64::from(r.u32()? as i32) / 1e6;
    let time = time_since_2000(r.u32()?, frame)?;
    let valid = r.u8()? == 1;
    let sats = r.u8()?;
    let rssi = r.u8()?;
    let speed = r.u16()?;
    let course = r.u16()?;
    let hdop = r.u16()?;
    let altitude = r.u16()? as i16;
    let mileage = r.u32()?;
    let runtime = r.u32()?;
    let (mcc, mnc, lac, cid) = (r.u16()?, r.u16()?, r.u16()?, r.u16()?);
    let status = r.u16()?;
    let adc1 = r.u16()?;
    let battery = r.u16()?;
    let power = r.u16()?;
    let geofence = r.u32()?;

    let mut pos = Position::new(time, lat, lon, valid);
    pos.satellites = Some(sats);
    pos.speed_kmh = Some(f64::from(speed));
    pos.course_deg = Some(f64::from(course));
    pos.hdop = Some(f64::from(hdop) / 10.0);
    pos.altitude_m = Some(f64::from(altitude));
    let a = &mut pos.attributes;
    a.rssi = Some(i32::from(rssi));
    a.odometer_m = Some(f64::from(mileage));
    a.battery_v = Some(f64::from(battery) / 100.0);
    let mut io = IoMap::with_capacity(14);
    for (name, v) in [
        ("event", u64::from(event)),
        ("gsm", u64::from(rssi)),
        ("mileage", u64::from(mileage)),
        ("runtime", u64::from(runtime)),
        ("mcc", u64::from(mcc)),
        ("mnc", u64::from(mnc)),
        ("lac", u64::from(lac)),
        ("cid", u64::from(cid)),
        ("status", u64::from(status)),
        ("adc1", u64::from(adc1)),
        ("battery_raw", u64::from(battery)),
        ("power_raw", u64::from(power)),
        ("geofence", u64::from(geofence)),
    ] {
        io.push_name(name, IoValue::U64(v));
    }
    a.io = io;
    set_event(a, u32::from(event));
    Ok(pos)
}

fn decode_ccc(env: &Envelope<'_>, frame: &[u8]) -> Result<Vec<Message>, DecodeError> {
    let header = env
        .data
        .get(..CCC_HEADER_LEN)
        .ok_or_else(|| DecodeError::truncated(frame))?;
    let body = &env.data[CCC_HEADER_LEN..];
    let mut positions = Vec::with_capacity(body.len() / CCC_RECORD_LEN);
    let mut chunks = body.chunks_exact(CCC_RECORD_LEN);
    for rec in &mut chunks {
        positions.push(decode_ccc_record(rec, frame)?);
    }
    let n = positions.len();
    let mut msg = Message::new(MessageKind::Position)
        .with_imei(env.imei)
        .with_type(env.command)
        .with_positions(positions)
        .with_ack(server_frame(env.flag, env.imei, &format!("CCC,{n}")));
    msg.attributes.io.push_name("header", IoValue::Bytes(header.to_vec()));
    msg.attributes.io.push_name("record_count", IoValue::U64(n as u64));
    if !chunks.remainder().is_empty() {
        msg.attributes
            .io
            .push_name("trailing", IoValue::Bytes(chunks.remainder().to_vec()));
    }
    Ok(vec![msg])
}

// ---------------------------------------------------------------------------------------------
// Photos and command replies

/// The server's request for one photo packet.
fn photo_packet_request(imei: &str, file: &str, index: u64) -> Vec<u8> {
    server_frame(b'O', imei, &format!("D00,{file},{index}"))
}

/// `D00,<file>,<total>,<current>,<bytes>`.
fn decode_d00(env: &Envelope<'_>, frame: &[u8]) -> Result<Vec<Message>, DecodeError> {
    let mut parts = env.data.splitn(4, |&b| b == b',');
    let (Some(file), Some(total), Some(current)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(DecodeError::invalid(
            "photo",
            "D00 needs file,total,current,data",
            frame,
        ));
    };
    let chunk = parts.next().unwrap_or_default();
    let file = std::str::from_utf8(file)
        .ok()
        .filter(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_graphic() && b != b'*'))
        .ok_or_else(|| DecodeError::invalid("photo", "bad file name", frame))?;
    let number = |b: &[u8], what: &'static str| {
        std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| DecodeError::invalid(what, "not a number", frame))
    };
    let total = number(total, "photo total")?;
    let current = number(current, "photo index")?;
    let mut msg = Message::new(MessageKind::Other)
        .with_imei(env.imei)
        .with_type(env.command);
    let io = &mut msg.attributes.io;
    io.push_name("file", IoValue::Text(file.to_owned()));
    io.push_name("total", IoValue::U64(total));
    io.push_name("current", IoValue::U64(current));
    io.push_name("chunk", IoValue::Bytes(chunk.to_vec()));
    // The device sends eight packets per request; ask for the next eight until the last.
    let next = current.saturating_add(1);
    if next < total && next % 8 == 0 {
        msg.ack = Some(photo_packet_request(env.imei, file, next));
    }
    Ok(vec![msg])
}

fn command_result(env: &Envelope<'_>) -> String {
    if env.data.is_empty() {
        return env.command.to_owned();
    }
    match std::str::from_utf8(env.data) {
        Ok(text) => format!("{},{}", env.command, text),
        Err(_) => format!("{},{}", env.command, hex::encode(env.data)),
    }
}

fn decode_command_reply(env: &Envelope<'_>) -> Vec<Message> {
    let mut msg = Message::new(MessageKind::CommandResponse)
        .with_imei(env.imei)
        .with_type(env.command);
    msg.result = Some(command_result(env));
    if env.command == "D03" {
        // The device took the photo: ask for its first packet.
        msg.ack = Some(photo_packet_request(env.imei, "camera_picture.jpg", 0));
    }
    vec![msg]
}

// ---------------------------------------------------------------------------------------------
// The codec

/// One Meitrack TCP session. Every frame carries the IMEI, so no login state is needed.
#[derive(Debug, Default)]
pub struct MeitrackCodec;

impl MeitrackCodec {
    pub fn new() -> Self {
        MeitrackCodec
    }
}

fn output_pattern(index: u8, active: bool) -> Result<String, EncodeError> {
    if !(1..=5).contains(&index) {
        return Err(EncodeError::Invalid {
            field: "index",
            reason: format!("Meitrack C01 switches outputs 1-5, not {index}"),
        });
    }
    Ok((1..=5u8)
        .map(|i| match (i == index, active) {
            (true, true) => '1',
            (true, false) => '0',
            (false, _) => '2',
        })
        .collect())
}

fn check_imei(imei: &str) -> Result<(), EncodeError> {
    if imei.is_empty() || imei.len() > MAX_IMEI_LEN || !imei.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(EncodeError::Invalid {
            field: "imei",
            reason: format!("{imei:?} is not 1-20 alphanumeric characters"),
        });
    }
    Ok(())
}

impl Codec for MeitrackCodec {
    fn protocol(&self) -> Protocol {
        Protocol::Meitrack
    }

    fn frame(&self, buf: &[u8], eof: bool) -> Framing {
        frame_meitrack(buf, eof)
    }

    fn decode(&mut self, frame: &[u8], ctx: &DecodeContext) -> Result<Vec<Message>, DecodeError> {
        let env = parse_envelope(frame)?;
        let mut messages = match env.command {
            "CCE" => decode_cce(&env, frame, ctx),
            "CCC" => decode_ccc(&env, frame),
            "D00" => decode_d00(&env, frame),
            "D03" => Ok(decode_command_reply(&env)),
            "AAA" | "AFF" => match parse_report(&env, frame)? {
                Some(msg) => Ok(vec![msg]),
                None => Err(DecodeError::invalid(
                    "report",
                    "data does not have the event,lat,lon,time,… layout",
                    frame,
                )),
            },
            _ => match parse_report(&env, frame) {
                Ok(Some(msg)) => Ok(vec![msg]),
                _ => Ok(decode_command_reply(&env)),
            },
        }?;
        if let Some((declared, actual)) = env.length_mismatch {
            for m in &mut messages {
                m.attributes.io.push_name(
                    "length_mismatch",
                    IoValue::Text(format!("declared {declared}, actual {actual}")),
                );
            }
        }
        Ok(messages)
    }

    fn encode_command(&self, imei: &str, command: &Command, _ctx: &DecodeContext) -> Result<Vec<u8>, EncodeError> {
        check_imei(imei)?;
        let (flag, content) = match command {
            Command::Locate => (b'Q', "A10".to_owned()),
            Command::EngineStop => (b'M', "C01,0,12222".to_owned()),
            Command::EngineResume => (b'M', "C01,0,02222".to_owned()),
            Command::AlarmArm => (b'M', "C01,0,22122".to_owned()),
            Command::AlarmDisarm => (b'M', "C01,0,22022".to_owned()),
            Command::OutputControl { index, active } => (b'M', format!("C01,0,{}", output_pattern(*index, *active)?)),
            Command::RequestPhoto => (b'D', "D03,1,camera_picture.jpg".to_owned()),
            Command::Custom { text } => {
                let ok = !text.is_empty()
                    && text.len() <= MAX_DECLARED_LEN - MAX_IMEI_LEN - 8
                    && text.bytes().all(|b| (0x20..0x7F).contains(&b) && b != b'*');
                if !ok {
                    return Err(EncodeError::Invalid {
                        field: "text",
                        reason: "Meitrack commands are printable ASCII without '*'".into(),
                    });
                }
                (b'C', text.clone())
            }
            other => {
                return Err(EncodeError::Unsupported {
                    protocol: "meitrack",
                    what: format!("{other:?}"),
                });
            }
        };
        Ok(server_frame(flag, imei, &content))
    }
}

// ---------------------------------------------------------------------------------------------
// Device side

/// What a Meitrack tracker sends. Each frame gets the next data-identifier letter, as devices do.
#[derive(Debug)]
pub struct MeitrackDevice {
    flag: u8,
}

impl Default for MeitrackDevice {
    fn default() -> Self {
        Self::new()
    }
}

impl MeitrackDevice {
    pub fn new() -> Self {
        MeitrackDevice { flag: b'A' }
    }

    fn next_flag(&mut self) -> u8 {
        let f = self.flag;
        self.flag = if f >= b'Z' { b'A' } else { f + 1 };
        f
    }
}

fn io_u64(attrs: &Attributes, name: &str) -> Option<u64> {
    match attrs.io.get_name(name)? {
        IoValue::U64(v) => Some(*v),
        IoValue::I64(v) => u64::try_from(*v).ok(),
        _ => None,
    }
}

/// The event code for a fix: the one it carries, else the code of its (or the message's)
/// alarm, else `fallback`.
fn event_code(msg: &Message, pos: Option<&Position>, fallback: Option<u32>) -> Result<u32, EncodeError> {
    let carried = pos.and_then(|p| p.attributes.event).or(msg.attributes.event);
    if let Some(e) = carried {
        return Ok(e);
    }
    let alarms = pos
        .map(|p| p.attributes.alarms.iter())
        .into_iter()
        .flatten()
        .chain(msg.attributes.alarms.iter());
    let mut unmapped = None;
    for a in alarms {
        match event_for_alarm(a) {
            Some(code) => return Ok(code),
            None => unmapped = Some(a),
        }
    }
    match (fallback, unmapped) {
        (Some(code), None) => Ok(code),
        (_, Some(a)) => Err(EncodeError::Invalid {
            field: "alarm",
            reason: format!("Meitrack has no event code for alarm {a:?}"),
        }),
        (None, None) => Err(EncodeError::Invalid {
            field: "alarm",
            reason: "alarm message without an alarm or event code".into(),
        }),
    }
}

fn aaa_time(t: DateTime<Utc>) -> Result<String, EncodeError> {
    if !(2000..=2099).contains(&t.year()) {
        return Err(EncodeError::Invalid {
            field: "time",
            reason: format!("{t} cannot be written as yymmddhhmmss"),
        });
    }
    Ok(format!(
        "{:02}{:02}{:02}{:02}{:02}{:02}",
        t.year() - 2000,
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    ))
}

fn check_fix(pos: &Position) -> Result<(), EncodeError> {
    if (-90.0..=90.0).contains(&pos.latitude) && (-180.0..=180.0).contains(&pos.longitude) {
        Ok(())
    } else {
        Err(EncodeError::Invalid {
            field: "coordinates",
            reason: format!("{},{} is not a position", pos.latitude, pos.longitude),
        })
    }
}

/// The data of an `AAA` report for one fix.
fn aaa_data(pos: &Position, event: u32) -> Result<String, EncodeError> {
    check_fix(pos)?;
    let a = &pos.attributes;
    let round = |v: Option<f64>| v.map_or(0, |v| v.round().max(0.0) as u64);
    let mut cell = String::new();
    for (i, (name, hex)) in [("mcc", false), ("mnc", false), ("lac", true), ("cid", true)]
        .iter()
        .enumerate()
    {
        if i > 0 {
            cell.push('|');
        }
        let v = io_u64(a, name).unwrap_or(0);
        cell.push_str(&if *hex { format!("{v:04X}") } else { v.to_string() });
    }
    let io_status = format!(
        "{:02X}{:02X}",
        io_u64(a, "input").unwrap_or(0) & 0xFF,
        io_u64(a, "output").unwrap_or(0) & 0xFF
    );
    let analog = if a.battery_v.is_some() || a.power_v.is_some() {
        format!(
            "{:.2}|{:.2}|0.00|0.00|0.00",
            a.battery_v.unwrap_or(0.0).max(0.0),
            a.power_v.unwrap_or(0.0).max(0.0)
        )
    } else {
        "0000|0000|0000|0000|0000".to_owned()
    };
    let event_data = match (&a.driver_id, event) {
        (Some(d), EVENT_RFID) if d.bytes().all(|b| b.is_ascii_alphanumeric()) => d.clone(),
        _ => String::new(),
    };
    let fuel = match a.fuel_level_pct {
        Some(f) if (0.0..256.0).contains(&f) => {
            let hundredths = (f * 100.0).round() as u32;
            format!("{:02X}{:02X}", hundredths / 100, hundredths % 100)
        }
        _ => String::new(),
    };
    Ok(format!(
        "{event},{:.6},{:.6},{},{},{},{},{},{},{:.1},{},{},{},{cell},{io_status},{analog},{event_data},,3,{fuel}",
        pos.latitude,
        pos.longitude,
        aaa_time(pos.time)?,
        if pos.valid { 'A' } else { 'V' },
        pos.satellites.unwrap_or(0),
        a.rssi.unwrap_or(0).max(0),
        round(pos.speed_kmh),
        round(pos.course_deg),
        pos.hdop.unwrap_or(0.0).max(0.0),
        pos.altitude_m.map_or(0, |v| v.round() as i64),
        round(a.odometer_m),
        io_u64(a, "runtime").unwrap_or(0),
    ))
}

fn clamp_u16(v: f64) -> u16 {
    v.round().clamp(0.0, f64::from(u16::MAX)) as u16
}

fn clamp_u32(v: f64) -> u32 {
    v.round().clamp(0.0, f64::from(u32::MAX)) as u32
}

/// One CCE record (length, index and the four groups).
fn cce_record(out: &mut Vec<u8>, index: u16, pos: &Position, event: Option<u32>) -> Result<(), EncodeError> {
    check_fix(pos)?;
    let a = &pos.attributes;
    let mut g1: Vec<(u8, u8)> = vec![(0x05, u8::from(pos.valid)), (0x06, pos.satellites.unwrap_or(0))];
    if let Some(r) = a.rssi {
        g1.push((0x07, r.clamp(0, 255) as u8));
    }
    let mut g2: Vec<(u8, u16)> = Vec::with_capacity(10);
    match event {
        Some(e) if e <= 0xFF => g1.push((0x01, e as u8)),
        Some(e) => g2.push((0x40, u16::try_from(e).unwrap_or(u16::MAX))),
        None => {}
    }
    if let Some(v) = io_u64(a, "input") {
        g1.push((0x15, (v & 0xFF) as u8));
    }
    if let Some(v) = io_u64(a, "output") {
        g1.push((0x14, (v & 0xFF) as u8));
    }
    if let Some(v) = a.throttle_pct {
        g1.push((0x97, v.round().clamp(0.0, 255.0) as u8));
    }
    if let Some(v) = a.fuel_level_pct {
        g1.push((0x9D, v.round().clamp(0.0, 255.0) as u8));
    }
    g2.push((0x08, clamp_u16(pos.speed_kmh.unwrap_or(0.0))));
    g2.push((0x09, clamp_u16(pos.course_deg.unwrap_or(0.0))));
    g2.push((0x0A, clamp_u16(pos.hdop.unwrap_or(0.0) * 10.0)));
    let alt = pos
        .altitude_m
        .unwrap_or(0.0)
        .round()
        .clamp(f64::from(i16::MIN), f64::from(i16::MAX)) as i16;
    g2.push((0x0B, alt as u16));
    if let Some(v) = a.battery_v {
        g2.push((0x19, clamp_u16(v * 100.0)));
    }
    if let Some(v) = a.power_v {
        g2.push((0x1A, clamp_u16(v * 100.0)));
    }
    if let Some(v) = a.obd_speed_kmh {
        g2.push((0x91, clamp_u16(v)));
    }
    if let Some(v) = a.rpm {
        g2.push((0x99, clamp_u16(v)));
    }
    if let Some(v) = a.coolant_c {
        g2.push((0x9C, clamp_u16(v)));
    }
    let secs = pos.time.timestamp() - EPOCH_2000;
    let secs = u32::try_from(secs).map_err(|_| EncodeError::Invalid {
        field: "time",
        reason: format!("{} is outside the 2000-based u32 time range", pos.time),
    })?;
    let coord = |v: f64| (v * 1e6).round() as i32 as u32;
    let mut g3: Vec<(u8, u32)> = vec![(0x02, coord(pos.latitude)), (0x03, coord(pos.longitude)), (0x04, secs)];
    if let Some(v) = a.odometer_m {
        g3.push((0x0C, clamp_u32(v)));
    }
    if let Some(v) = io_u64(a, "runtime") {
        g3.push((0x0D, u32::try_from(v).unwrap_or(u32::MAX)));
    }
    if let Some(v) = a.fuel_used_l {
        g3.push((0xA0, clamp_u32(v * 1000.0)));
    }

    let mut body = Vec::with_capacity(64);
    body.extend_from_slice(&index.to_le_bytes());
    body.push(g1.len() as u8);
    for (id, v) in g1 {
        body.extend_from_slice(&[id, v]);
    }
    body.push(g2.len() as u8);
    for (id, v) in g2 {
        body.push(id);
        body.extend_from_slice(&v.to_le_bytes());
    }
    body.push(g3.len() as u8);
    for (id, v) in g3 {
        body.push(id);
        body.extend_from_slice(&v.to_le_bytes());
    }
    body.push(0);
    out.extend_from_slice(&(body.len() as u16).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(())
}

impl MeitrackDevice {
    fn aaa(&mut self, imei: &str, pos: &Position, event: u32) -> Result<Vec<u8>, EncodeError> {
        let data = aaa_data(pos, event)?;
        Ok(device_frame(self.next_flag(), imei, "AAA", data.as_bytes()))
    }

    fn cce(&mut self, imei: &str, msg: &Message) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        for (chunk_no, chunk) in msg.positions.chunks(CCE_RECORDS_PER_FRAME).enumerate() {
            let mut data = Vec::with_capacity(6 + chunk.len() * 80);
            let left = msg.positions.len() - (chunk_no * CCE_RECORDS_PER_FRAME + chunk.len());
            data.extend_from_slice(&(left as u32).to_le_bytes());
            data.extend_from_slice(&(chunk.len() as u16).to_le_bytes());
            for (i, pos) in chunk.iter().enumerate() {
                let event = pos.attributes.event.or(msg.attributes.event).or_else(|| {
                    pos.attributes
                        .alarms
                        .iter()
                        .chain(&msg.attributes.alarms)
                        .find_map(event_for_alarm)
                });
                let index = io_u64(&pos.attributes, "index")
                    .and_then(|v| u16::try_from(v).ok())
                    .unwrap_or(i as u16);
                cce_record(&mut data, index, pos, event)?;
            }
            out.extend_from_slice(&device_frame(self.next_flag(), imei, "CCE", &data));
        }
        Ok(out)
    }
}

impl DeviceEncoder for MeitrackDevice {
    fn encode(&mut self, msg: &Message) -> Result<Vec<u8>, EncodeError> {
        let imei = msg.imei.as_deref().ok_or(EncodeError::Invalid {
            field: "imei",
            reason: "Meitrack frames carry the IMEI".into(),
        })?;
        check_imei(imei)?;
        let wants_cce = msg.message_type.as_deref() == Some("CCE") || msg.kind == MessageKind::Obd;
        match msg.kind {
            MessageKind::Login => Err(EncodeError::Unsupported {
                protocol: "meitrack",
                what: "login (Meitrack has none; every frame carries the IMEI)".into(),
            }),
            MessageKind::Position | MessageKind::Alarm | MessageKind::Obd
                if msg.positions.len() > 1 || (wants_cce && !msg.positions.is_empty()) =>
            {
                self.cce(imei, msg)
            }
            MessageKind::Position | MessageKind::Alarm | MessageKind::Obd => {
                let pos = msg.positions.first().ok_or(EncodeError::Invalid {
                    field: "positions",
                    reason: "a Meitrack report needs a fix".into(),
                })?;
                let fallback = (msg.kind != MessageKind::Alarm).then_some(EVENT_TIMED_REPORT);
                let event = event_code(msg, Some(pos), fallback)?;
                self.aaa(imei, pos, event)
            }
            MessageKind::Heartbeat => {
                // Meitrack has no separate heartbeat: a periodic report keeps the link alive.
                let now = Utc::now();
                let placeholder = Position::new(now.with_nanosecond(0).unwrap_or(now), 0.0, 0.0, false);
                let pos = msg.positions.first().unwrap_or(&placeholder);
                let event = pos.attributes.event.unwrap_or(EVENT_TIMED_REPORT);
                self.aaa(imei, pos, event)
            }
            MessageKind::CommandResponse => {
                let result = msg.result.as_deref().unwrap_or_default();
                let from_type = msg
                    .message_type
                    .as_deref()
                    .filter(|t| t.len() == 3 && t.bytes().all(|b| b.is_ascii_alphanumeric()));
                let (command, data) = match from_type {
                    Some(t) => (
                        t,
                        result
                            .strip_prefix(t)
                            .map_or(result, |r| r.strip_prefix(',').unwrap_or(r)),
                    ),
                    None => match result.split_once(',') {
                        Some((c, d)) if c.len() == 3 => (c, d),
                        _ if result.len() == 3 => (result, ""),
                        _ => {
                            return Err(EncodeError::Invalid {
                                field: "result",
                                reason: "a Meitrack reply is \"<CMD>,<data>\"".into(),
                            });
                        }
                    },
                };
                if !command.bytes().all(|b| b.is_ascii_alphanumeric())
                    || data.bytes().any(|b| !(0x20..0x7F).contains(&b) || b == b'*')
                {
                    return Err(EncodeError::Invalid {
                        field: "result",
                        reason: "Meitrack replies are printable ASCII without '*'".into(),
                    });
                }
                Ok(device_frame(self.next_flag(), imei, command, data.as_bytes()))
            }
            MessageKind::Other => Err(EncodeError::Unsupported {
                protocol: "meitrack",
                what: "other messages".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> DecodeContext {
        DecodeContext {
            now: Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).single().expect("valid"),
        }
    }

    #[test]
    fn server_frames_match_traccar() {
        assert_eq!(
            server_frame(b'Q', "123456789012345", "A10"),
            b"@@Q25,123456789012345,A10*68\r\n".to_vec()
        );
        let c = MeitrackCodec::new();
        assert_eq!(
            c.encode_command("123456789012345", &Command::RequestPhoto, &ctx())
                .unwrap(),
            b"@@D46,123456789012345,D03,1,camera_picture.jpg*1F\r\n".to_vec()
        );
        assert_eq!(
            c.encode_command("123456789012345", &Command::EngineStop, &ctx())
                .unwrap(),
            server_frame(b'M', "123456789012345", "C01,0,12222")
        );
        assert_eq!(output_pattern(3, false).unwrap(), "22022");
    }

    #[test]
    fn frames_without_crlf_and_back_to_back() {
        let a = b"$$D28,353358017784062,D03,OK*F3";
        let mut two = a.to_vec();
        two.extend_from_slice(a);
        assert_eq!(frame_meitrack(&two, false), Framing::Frame { start: 0, end: a.len() });
        assert_eq!(frame_meitrack(a, false), Framing::Incomplete);
        assert_eq!(frame_meitrack(a, true), Framing::Frame { start: 0, end: a.len() });
        let mut c = MeitrackCodec::new();
        let m = c.decode(a, &ctx()).unwrap();
        assert_eq!(m[0].kind, MessageKind::CommandResponse);
        assert_eq!(m[0].result.as_deref(), Some("D03,OK"));
        let ack = String::from_utf8(m[0].ack.clone().unwrap()).unwrap();
        assert!(
            ack.starts_with("@@O46,353358017784062,D00,camera_picture.jpg,0*"),
            "{ack}"
        );
    }

    #[test]
    fn photo_chunks_are_cut_by_length_and_pulled_in_eights() {
        // Binary JPEG bytes that look like a terminator and a next frame must not cut the frame.
        let mut data = b"180224072614_C1E109_N1U1D1.jpg,14,7,".to_vec();
        data.extend_from_slice(b"\xff\xd8*1F\r\n$$A12,\x00\xff");
        let frame = device_frame(b'A', "864507031219974", "D00", &data);
        assert_eq!(
            frame_meitrack(&frame, false),
            Framing::Frame {
                start: 0,
                end: frame.len()
            }
        );
        let m = MeitrackCodec::new().decode(&frame, &ctx()).unwrap();
        assert_eq!(m[0].kind, MessageKind::Other);
        assert_eq!(
            m[0].attributes.io.get_name("chunk"),
            Some(&IoValue::Bytes(b"\xff\xd8*1F\r\n$$A12,\x00\xff".to_vec()))
        );
        let ack = String::from_utf8(m[0].ack.clone().unwrap()).unwrap();
        assert!(ack.starts_with("@@O"), "{ack}");
        assert!(
            ack.contains(",864507031219974,D00,180224072614_C1E109_N1U1D1.jpg,8*"),
            "{ack}"
        );
        // Chunks in between are not answered.
        let quiet = device_frame(b'A', "864507031219974", "D00", b"f.jpg,14,3,\x01\x02");
        assert!(MeitrackCodec::new().decode(&quiet, &ctx()).unwrap()[0].ack.is_none());
    }

    #[test]
    fn bad_frames_do_not_take_their_neighbours_down() {
        let good = b"$$d138,012896000475498,AAA,35,-6.138255,106.910545,121205074819,A,7,18,0,0,0,49,3800,24965,510|10|0081|4F4F,0000,000D|0010|0012|0963|0000,,*BF\r\n";
        // Length off by two, checksum right (a real capture): decodes, with a note.
        let off = b"$$E141,863071013799553,AAA,35,-1.264521,36.801128,150307132846,A,11,20,0.2,0,5,1767,84045888,36496633,639|02|100E|844,1234,0018|||025D|00CB,*17\r\n";
        // One digit changed: wrong checksum.
        let bad = b"$$X138,862170010187175,AAA,35,-29.960365,-51.655455,130507201625,A,8,9,0,107,0.9,-7,169322,126582,724|6|0547|132B,0000,0009|000A||0278|0000,*BE\r\n";
        let mut stream = b"\r\ngarbage".to_vec();
        for f in [&good[..], off, bad, good] {
            stream.extend_from_slice(f);
        }
        let mut c = MeitrackCodec::new();
        let (msgs, errors) = crate::codec::decode_all(&mut c, &stream, &ctx());
        assert_eq!(msgs.len(), 3, "{errors:?}");
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(matches!(errors[0], DecodeError::Framing(_)));
        assert!(matches!(errors[1], DecodeError::Checksum { .. }));
        assert!(msgs[1].attributes.io.get_name("length_mismatch").is_some());
        // The same stream arriving byte by byte frames identically.
        let mut cut = Vec::new();
        let mut buf: Vec<u8> = Vec::new();
        for &b in &stream {
            buf.push(b);
            loop {
                match frame_meitrack(&buf, false) {
                    Framing::Frame { start, end } => {
                        cut.push(buf[start..end].to_vec());
                        buf.drain(..end);
                    }
                    Framing::Resync { discard, .. } => {
                        buf.drain(..discard);
                    }
                    _ => break,
                }
            }
        }
        assert_eq!(cut, vec![good.to_vec(), off.to_vec(), bad.to_vec(), good.to_vec()]);
    }

    #[test]
    fn oversized_length_resyncs() {
        let mut s = b"$$A99999,1,AAA*00\r\n".to_vec();
        s.extend_from_slice(b"$$D28,353358017784062,D03,OK*F3\r\n");
        match frame_meitrack(&s, false) {
            Framing::Resync { discard, .. } => assert_eq!(&s[discard..discard + 2], b"$$"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ccc_ack_counts_records() {
        let frame = hex::decode(
            "24245838362c3336393830303031343039303032312c4343432c020134000100000023381f91ffe354b806c5e3121b\
             0009130000000000000000d33801007cbf0200fe0101000435feeb02000500a3010000000000002a62650d0a",
        )
        .unwrap();
        let mut c = MeitrackCodec::new();
        let m = c.decode(&frame, &ctx()).unwrap();
        assert_eq!(m[0].positions.len(), 1);
        let p = &m[0].positions[0];
        assert!((p.latitude - -7.26650).abs() < 1e-5 && (p.longitude - 112.74365).abs() < 1e-5);
        assert!(!p.valid);
        assert_eq!(p.time.to_rfc3339(), "2014-05-24T04:59:49+00:00");
        let ack = m[0].ack.clone().unwrap();
        assert_eq!(ack, server_frame(b'X', "369800014090021", "CCC,1"));
        assert!(ack.starts_with(b"@@X27,369800014090021,CCC,1*"));
    }
}
