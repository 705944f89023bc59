//! Ruptela binary protocol (FM-Eco4, FM-Pro4, FM-Tco4, Trace5, HCV5, LCV5…).
//!
//! # Transport and framing
//! TCP only. A device frame is `u16 length | u64 IMEI | u8 command | payload | u16 CRC`, all
//! big-endian: `length` counts IMEI + command + payload, the CRC is CRC-16/KERMIT over the same
//! bytes, and the IMEI is a binary integer printed with 15 digits. There is no start marker to
//! hunt for, so a length field below 9 or above [`MAX_DATA_LEN`] closes the stream
//! ([`Framing::Fatal`]); a frame whose CRC does not match is [`DecodeError::Checksum`], one whose
//! bytes do not match its length field is [`DecodeError::Length`]. Every frame carries the IMEI.
//!
//! # What is decoded
//! * 1 records / 68 extended records: records left, count, then per record Unix time, timestamp
//!   extension, (68: record extension), priority, longitude/latitude ×10⁻⁷ (`i32::MIN` = no fix:
//!   the session's last fix is reused, marked invalid), altitude ×0.1 m, course ×0.01°, satellites,
//!   speed km/h, HDOP ×0.1, event id (u8; u16 for 68), then IO groups of 1-, 2-, 4- and 8-byte
//!   values, each `u8 count` + (id, value) with u8 ids (u16 for 68). Every raw value is kept in `io`
//!   under its numeric id (unsigned, as sent) and the known ids are mapped as PROTOCOLS.md §9 lists
//!   (see `apply_io`): motion 13/173, power 29 and battery 30 (mV), iButton 34, engine load 39,
//!   odometer 65 / 163 (×5) / 645 (OBD, km), jamming 88, RPM 94 (×0.25) / 166, 197 (×0.125), OBD
//!   speed 95 / 165 (/256), fuel level 98 (×100/255) / 205 / 207 (×0.4), fuel rate 100 (/20), harsh
//!   braking 134 and acceleration 136, trip 164 (×5), fuel used 208 (×0.5), ignition 251/409, tow
//!   410, accident 411, GPS antenna 415, tamper 758, driver ids from 126/127 and 155/156, tag id
//!   760/761, temperatures 32/74/78–80 (as `device_temp`/`tempN` in `io`). All-ones values of the
//!   engine-bus ids are SAE J1939 "not available" and are not mapped (the raw value stays in `io`).
//!   A cmd-68 record split over several parts (record extension `0xNC`: N parts, this is part C)
//!   is still one position per part, but the first part also gets the typed attributes and raw
//!   values of the later parts, so a consumer keeping one fix per timestamp keeps everything.
//!   A record batch is one `Position` message (`records_left`/`record_count` in its `io`; a
//!   record's non-zero priority, timestamp extension and the cmd-68 record extension in the
//!   record's `io`); IO alarms are attributes of their record.
//! * 9 DTCs → one `Obd` message, a position per code (`dtcs`), `archive` flag in `io`.
//! * 15 identification → `Login` (firmware version, IMSI and operator code in `io`, laid out as
//!   real FM devices send them), 16 heartbeat → `Heartbeat`.
//! * 2/3/4/7 (configuration, version, firmware, SMS-via-GPRS replies) → `CommandResponse` with the
//!   payload text, 17 (set IO reply) → `CommandResponse` with the status byte.
//! * 36 driver card (tachograph / DLT) → `Other` with `driver_id` = `track1|track2|track3`.
//! * 37 files (photos) → `Other` with the file chunk in `io`; the next chunk is requested in the
//!   ack (photos are not reassembled here). Any other command → `Other` with the raw payload.
//!
//! # Acknowledgements
//! Server frames are `u16 length | command | payload | CRC-16/KERMIT(command..payload)`, the
//! command being the device's plus 100: records (1, 68) → `0002 64 01 13BC`, DTCs →
//! `0002 6D 01 C4A4`, identification → `0002 73 01 CB25`, heartbeat → `0002 74 01 862D`, driver
//! card → `0002 88 01 5385`, file chunk → a cmd-137 request for the next chunk. Identification and
//! heartbeat are answered with command 115/116 as Traccar's `RuptelaProtocolEncoder.encodeContent`
//! (which adds 100) and Ruptela's protocol do; PROTOCOLS.md §9's example `00020F019241` leaves the
//! 100 out and would not be recognised by a device.
//!
//! # Downlink
//! Same server framing: `Custom` text goes out as SMS-via-GPRS (cmd 108, e.g. `" Setio 2,1"`), or
//! verbatim when it is nothing but hex pairs (a pre-built frame); engine stop/resume are the
//! immobiliser SMS commands Traccar sends (`pass immobilizer 10` / `pass resetimmob`, which assume
//! the device's default SMS password `pass`); `OutputControl` is set-IO (cmd 117, u32 index, u32
//! state) and `RequestPhoto` a file request (cmd 137).
//!
//! # Device side
//! [`RuptelaDevice`] writes identification, record batches (cmd 1, or 68 when an IO id or event
//! needs 16 bits or the message type says `68`; split into several frames when needed), heartbeats,
//! DTC reports (cmd 9) and command replies (cmd 7 / the reply type named in `message_type`).

use chrono::{DateTime, TimeZone, Utc};

use crate::Protocol;
use crate::checksum::crc16_kermit;
use crate::codec::{Codec, DecodeContext, DeviceEncoder, Framing, Transport};
use crate::error::{DecodeError, EncodeError, FrameError};
use crate::model::{Alarm, Attributes, Command, IoMap, IoValue, Message, MessageKind, Position};

/// Largest length field accepted (FM devices keep frames near 1 kB; file chunks are ~1 kB).
pub const MAX_DATA_LEN: usize = 4096;
/// IMEI + command.
const MIN_DATA_LEN: usize = 9;

const CMD_RECORDS: u8 = 1;
const CMD_DEVICE_CONFIGURATION: u8 = 2;
const CMD_DEVICE_VERSION: u8 = 3;
const CMD_FIRMWARE_UPDATE: u8 = 4;
const CMD_SMS_VIA_GPRS_RESPONSE: u8 = 7;
const CMD_SMS_VIA_GPRS: u8 = 8;
const CMD_DTCS: u8 = 9;
const CMD_IDENTIFICATION: u8 = 15;
const CMD_HEARTBEAT: u8 = 16;
const CMD_SET_IO: u8 = 17;
const CMD_DRIVER_CARD: u8 = 36;
const CMD_FILES: u8 = 37;
const CMD_EXTENDED_RECORDS: u8 = 68;
/// Server commands are the device's plus this.
const SERVER_OFFSET: u8 = 100;
/// Records per frame written by [`RuptelaDevice`] (the count field is a byte).
const MAX_RECORDS_PER_FRAME: usize = 255;
/// Payload budget per frame written by [`RuptelaDevice`], keeping frames under ~1 kB as devices do.
const DEVICE_PAYLOAD_BUDGET: usize = 1000;

pub fn codec(transport: Transport) -> Option<Box<dyn Codec>> {
    match transport {
        Transport::Tcp => Some(Box::new(RuptelaCodec::new())),
        _ => None,
    }
}

pub fn device(transport: Transport) -> Option<Box<dyn DeviceEncoder>> {
    match transport {
        Transport::Tcp => Some(Box::new(RuptelaDevice::new())),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Wire helpers

/// A big-endian cursor that turns running out of bytes into [`DecodeError::Truncated`].
#[derive(Debug)]
struct Be<'a> {
    buf: &'a [u8],
    pos: usize,
    frame: &'a [u8],
}

impl<'a> Be<'a> {
    fn new(buf: &'a [u8], frame: &'a [u8]) -> Self {
        Be { buf, pos: 0, frame }
    }
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or_else(|| DecodeError::truncated(self.frame))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(self.u32()? as i32)
    }
    /// An unsigned big-endian value of 1..=8 bytes.
    fn uint(&mut self, width: usize) -> Result<u64, DecodeError> {
        Ok(self.take(width)?.iter().fold(0u64, |a, &b| (a << 8) | u64::from(b)))
    }
}

/// A server→device frame: `u16 length | command | payload | CRC-16/KERMIT(command..payload)`.
fn server_frame(command: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 5);
    out.extend_from_slice(&((1 + payload.len()) as u16).to_be_bytes());
    out.push(command);
    out.extend_from_slice(payload);
    let crc = crc16_kermit(&out[2..]);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// The one-byte "accepted" reply to a device command (records, 1 and 68, are both answered
/// with 100).
fn ack(device_command: u8) -> Vec<u8> {
    let reply = match device_command {
        CMD_RECORDS | CMD_EXTENDED_RECORDS => SERVER_OFFSET,
        other => other.wrapping_add(SERVER_OFFSET),
    };
    server_frame(reply, &[1])
}

/// A device→server frame: `u16 length | u64 IMEI | command | payload | CRC-16/KERMIT`.
fn device_frame(imei: u64, command: u8, payload: &[u8]) -> Result<Vec<u8>, EncodeError> {
    let len = 9 + payload.len();
    if len > MAX_DATA_LEN {
        return Err(EncodeError::Invalid {
            field: "payload",
            reason: format!("{len} bytes exceed the {MAX_DATA_LEN}-byte frame limit"),
        });
    }
    let mut out = Vec::with_capacity(len + 4);
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&imei.to_be_bytes());
    out.push(command);
    out.extend_from_slice(payload);
    let crc = crc16_kermit(&out[2..]);
    out.extend_from_slice(&crc.to_be_bytes());
    Ok(out)
}

fn unix_time(secs: u32, frame: &[u8]) -> Result<DateTime<Utc>, DecodeError> {
    Utc.timestamp_opt(i64::from(secs), 0)
        .single()
        .ok_or_else(|| DecodeError::invalid("time", "timestamp out of range", frame))
}

fn sign_extend(raw: u64, width: usize) -> i64 {
    let shift = 64 - 8 * width.clamp(1, 8) as u32;
    ((raw << shift) as i64) >> shift
}

/// J1939-style "not available": every bit set for the value's width.
fn all_ones(raw: u64, width: usize) -> bool {
    let bits = 8 * width.clamp(1, 8) as u32;
    raw == u64::MAX >> (64 - bits)
}

fn printable(bytes: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(bytes).ok()?;
    let t = text.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    (!t.is_empty() && t.chars().all(|c| !c.is_control())).then(|| t.to_owned())
}

// ---------------------------------------------------------------------------------------------
// IO elements

/// Map one IO element onto typed attributes (PROTOCOLS.md §9). The raw value is pushed to `io`
/// by the caller.
fn apply_io(attrs: &mut Attributes, id: u32, raw: u64, width: usize) {
    let v = raw as f64;
    let signed = || sign_extend(raw, width) as f64;
    // Engine-bus and sensor values use all-ones for "not available".
    let available = !all_ones(raw, width);
    match id {
        13 | 173 => attrs.motion = Some(raw > 0),
        29 if available => attrs.power_v = Some(v / 1000.0),
        30 if available => attrs.battery_v = Some(v / 1000.0),
        32 => attrs.io.push_name("device_temp", IoValue::I64(sign_extend(raw, width))),
        34 => {
            let bytes = raw.to_be_bytes();
            attrs.driver_id = Some(hex::encode(&bytes[8 - width.clamp(1, 8)..]));
        }
        39 if available => attrs.engine_load_pct = Some(v),
        65 if available => attrs.odometer_m = Some(v),
        74 => attrs.io.push_name("temp3", IoValue::F64(signed() / 10.0)),
        78..=80 => attrs
            .io
            .push_name(format!("temp{}", id - 78), IoValue::F64(signed() / 10.0)),
        88 if raw > 0 => attrs.raise(Alarm::Jamming),
        94 if available => attrs.rpm = Some(v / 4.0),
        95 if available => attrs.obd_speed_kmh = Some(v),
        98 if available => attrs.fuel_level_pct = Some(v * 100.0 / 255.0),
        100 if available => attrs.fuel_rate_lph = Some(v / 20.0),
        134 if raw > 0 => attrs.raise(Alarm::HardBraking),
        136 if raw > 0 => attrs.raise(Alarm::HardAcceleration),
        163 if available => attrs.odometer_m = Some(v * 5.0),
        164 if available => attrs.trip_odometer_m = Some(v * 5.0),
        165 if available => attrs.obd_speed_kmh = Some(v / 256.0),
        166 | 197 if available => attrs.rpm = Some(v / 8.0),
        205 if available => attrs.fuel_level_pct = Some(v),
        207 if available => attrs.fuel_level_pct = Some(v * 0.4),
        208 if available => attrs.fuel_used_l = Some(v * 0.5),
        251 | 409 => attrs.ignition = Some(raw > 0),
        410 if raw > 0 => attrs.raise(Alarm::Tow),
        411 if raw > 0 => attrs.raise(Alarm::Accident),
        415 if raw == 0 => attrs.raise(Alarm::GpsAntennaCut),
        758 if raw == 1 => attrs.raise(Alarm::Tampering),
        _ => {}
    }
}

fn io_raw(io: &IoMap, id: u32) -> Option<u64> {
    match io.get_id(id)? {
        IoValue::U64(v) => Some(*v),
        _ => None,
    }
}

/// Values that need several IO elements (or a fallback) once a record is complete.
fn finish_record(attrs: &mut Attributes) {
    for (a, b) in [(126, 127), (155, 156)] {
        if let (Some(x), Some(y)) = (io_raw(&attrs.io, a), io_raw(&attrs.io, b)) {
            let mut bytes = [0u8; 16];
            bytes[..8].copy_from_slice(&x.to_be_bytes());
            bytes[8..].copy_from_slice(&y.to_be_bytes());
            if let Some(id) = printable(&bytes) {
                attrs.driver_id = Some(id);
            }
        }
    }
    if let (Some(x), Some(y)) = (io_raw(&attrs.io, 760), io_raw(&attrs.io, 761))
        && attrs.io.get_name("tag_id").is_none()
    {
        attrs.io.push_name("tag_id", IoValue::Text(format!("{x:x}{y:x}")));
    }
    if attrs.odometer_m.is_none()
        && let Some(km) = io_raw(&attrs.io, 645).filter(|&v| !all_ones(v, 4))
    {
        attrs.odometer_m = Some(km as f64 * 1000.0);
    }
}

// ---------------------------------------------------------------------------------------------
// The codec

/// One Ruptela TCP session. Remembers the last fix for records sent without one.
#[derive(Debug, Default)]
pub struct RuptelaCodec {
    last_fix: Option<(f64, f64)>,
}

impl RuptelaCodec {
    pub fn new() -> Self {
        RuptelaCodec::default()
    }

    fn decode_records(
        &mut self,
        imei: &str,
        command: u8,
        payload: &[u8],
        frame: &[u8],
    ) -> Result<Vec<Message>, DecodeError> {
        let extended = command == CMD_EXTENDED_RECORDS;
        let mut r = Be::new(payload, frame);
        let records_left = r.u8()?;
        let count = usize::from(r.u8()?);
        let min_record = if extended { 25 } else { 23 };
        let mut positions: Vec<Position> = Vec::with_capacity(count.min(r.remaining() / min_record));
        // First part of the cmd-68 record being continued by later parts.
        let mut leader: Option<usize> = None;
        for _ in 0..count {
            let time = unix_time(r.u32()?, frame)?;
            let timestamp_extension = r.u8()?;
            let record_extension = if extended { Some(r.u8()?) } else { None };
            let priority = r.u8()?;
            let lon_raw = r.i32()?;
            let lat_raw = r.i32()?;
            let altitude = r.u16()?;
            let angle = r.u16()?;
            let satellites = r.u8()?;
            let speed = r.u16()?;
            let hdop = r.u8()?;
            let event = if extended {
                u32::from(r.u16()?)
            } else {
                u32::from(r.u8()?)
            };

            let has_fix = lon_raw != i32::MIN && lat_raw != i32::MIN;
            let mut pos = if has_fix {
                let (lat, lon) = (f64::from(lat_raw) / 1e7, f64::from(lon_raw) / 1e7);
                if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
                    return Err(DecodeError::invalid(
                        "coordinates",
                        format!("{lat},{lon} out of range"),
                        frame,
                    ));
                }
                self.last_fix = Some((lat, lon));
                let mut p = Position::new(time, lat, lon, true);
                p.altitude_m = Some(f64::from(altitude) / 10.0);
                p.course_deg = Some(f64::from(angle) / 100.0);
                p.satellites = Some(satellites);
                p.speed_kmh = Some(f64::from(speed));
                p.hdop = Some(f64::from(hdop) / 10.0);
                p
            } else {
                let (lat, lon) = self.last_fix.unwrap_or((0.0, 0.0));
                Position::new(time, lat, lon, false)
            };

            let mut attrs = Attributes {
                event: Some(event),
                ..Attributes::default()
            };
            // Zero is by far the common case; leaving it out saves two allocations per record.
            if priority != 0 {
                attrs.io.push_name("priority", IoValue::U64(u64::from(priority)));
            }
            if timestamp_extension != 0 {
                attrs
                    .io
                    .push_name("timestamp_extension", IoValue::U64(u64::from(timestamp_extension)));
            }
            if let Some(ext) = record_extension {
                attrs.io.push_name("record_extension", IoValue::U64(u64::from(ext)));
            }
            // (id, raw, width) of this record's elements, kept to merge continuation parts.
            let mut elements: Vec<(u32, u64, usize)> = Vec::new();
            for width in [1usize, 2, 4, 8] {
                let n = usize::from(r.u8()?);
                let id_len = if extended { 2 } else { 1 };
                let bounded = n.min(r.remaining() / (width + id_len));
                attrs.io.0.reserve(bounded);
                elements.reserve(bounded);
                for _ in 0..n {
                    let id = if extended {
                        u32::from(r.u16()?)
                    } else {
                        u32::from(r.u8()?)
                    };
                    let raw = r.uint(width)?;
                    attrs.io.push_id(id, IoValue::U64(raw));
                    apply_io(&mut attrs, id, raw, width);
                    elements.push((id, raw, width));
                }
            }
            finish_record(&mut attrs);

            let continuation = record_extension.is_some_and(|e| {
                let (parts, current) = (e >> 4, e & 0x0F);
                current > 0 && current <= parts
            });
            match (continuation, leader) {
                (true, Some(l)) => {
                    // Give the first part everything this part carries.
                    if let Some(first) = positions.get_mut(l) {
                        let fa = &mut first.attributes;
                        for &(id, raw, width) in &elements {
                            fa.io.push_id(id, IoValue::U64(raw));
                            apply_io(fa, id, raw, width);
                        }
                        finish_record(fa);
                    }
                }
                (true, None) => {}
                (false, _) => leader = extended.then_some(positions.len()),
            }
            pos.attributes = attrs;
            positions.push(pos);
        }
        let mut msg = Message::new(MessageKind::Position)
            .with_imei(imei)
            .with_type(command.to_string())
            .with_positions(positions)
            .with_ack(ack(command));
        msg.attributes
            .io
            .push_name("records_left", IoValue::U64(u64::from(records_left)));
        msg.attributes.io.push_name("record_count", IoValue::U64(count as u64));
        Ok(vec![msg])
    }
}

fn decode_dtcs(imei: &str, payload: &[u8], frame: &[u8]) -> Result<Vec<Message>, DecodeError> {
    const RECORD: usize = 19;
    let mut r = Be::new(payload, frame);
    let count = usize::from(r.u8()?);
    let mut positions = Vec::with_capacity(count.min(r.remaining() / RECORD));
    let mut all = Vec::with_capacity(positions.capacity());
    for _ in 0..count {
        let reserved = r.u8()?;
        let time = unix_time(r.u32()?, frame)?;
        let lon = f64::from(r.i32()?) / 1e7;
        let lat = f64::from(r.i32()?) / 1e7;
        let archive = r.u8()?;
        let code = r.take(5)?;
        let code = printable(code).ok_or_else(|| DecodeError::invalid("dtc", "code is not ASCII", frame))?;
        let valid = (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon);
        let mut p = Position::new(
            time,
            if valid { lat } else { 0.0 },
            if valid { lon } else { 0.0 },
            valid,
        );
        p.attributes.dtcs.push(code.clone());
        p.attributes.io.push_name("reserved", IoValue::U64(u64::from(reserved)));
        p.attributes.io.push_name("archive", IoValue::Bool(archive == 2));
        all.push(code);
        positions.push(p);
    }
    let mut msg = Message::new(MessageKind::Obd)
        .with_imei(imei)
        .with_type(CMD_DTCS.to_string())
        .with_positions(positions)
        .with_ack(ack(CMD_DTCS));
    msg.attributes.dtcs = all;
    Ok(vec![msg])
}

/// Identification: 15-byte firmware version, u64 IMSI, u32 operator code, then settings that
/// are kept raw.
fn decode_identification(imei: &str, payload: &[u8]) -> Vec<Message> {
    let mut msg = Message::new(MessageKind::Login)
        .with_imei(imei)
        .with_type(CMD_IDENTIFICATION.to_string())
        .with_ack(ack(CMD_IDENTIFICATION));
    let io = &mut msg.attributes.io;
    if let Some(version) = payload.get(..15).and_then(printable) {
        io.push_name("version", IoValue::Text(version));
    }
    if let Some(b) = payload.get(15..23) {
        let imsi = b.iter().fold(0u64, |a, &x| (a << 8) | u64::from(x));
        io.push_name("imsi", IoValue::Text(imsi.to_string()));
    }
    if let Some(b) = payload.get(23..27) {
        io.push_name(
            "operator",
            IoValue::U64(u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))),
        );
    }
    io.push_name("payload", IoValue::Bytes(payload.to_vec()));
    vec![msg]
}

/// Driver card (cmd 36): sub-command, time, registration and card status, track id, then three
/// magnetic-card tracks (u16 length + text each).
fn read_driver_card(payload: &[u8], frame: &[u8], a: &mut Attributes) -> Result<(), DecodeError> {
    let mut r = Be::new(payload, frame);
    a.io.push_name("subcommand", IoValue::U64(u64::from(r.u8()?)));
    a.io.push_name("time", IoValue::Text(unix_time(r.u32()?, frame)?.to_rfc3339()));
    a.io.push_name("registration_status", IoValue::U64(u64::from(r.u8()?)));
    a.io.push_name("card_status", IoValue::U64(u64::from(r.u8()?)));
    a.io.push_name("track_id", IoValue::U64(u64::from(r.u8()?)));
    let mut tracks = Vec::with_capacity(3);
    for _ in 0..3 {
        let len = usize::from(r.u16()?);
        tracks.push(String::from_utf8_lossy(r.take(len)?).into_owned());
    }
    a.driver_id = Some(tracks.join("|"));
    Ok(())
}

fn decode_driver_card(imei: &str, payload: &[u8], frame: &[u8]) -> Vec<Message> {
    let mut msg = Message::new(MessageKind::Other)
        .with_imei(imei)
        .with_type(CMD_DRIVER_CARD.to_string())
        .with_ack(ack(CMD_DRIVER_CARD));
    // The device resends until acknowledged, so a card read that does not parse is still acked.
    let a = &mut msg.attributes;
    if let Err(e) = read_driver_card(payload, frame, a) {
        a.io.push_name("error", IoValue::Text(e.to_string()));
    }
    a.io.push_name("payload", IoValue::Bytes(payload.to_vec()));
    vec![msg]
}

fn decode_files(imei: &str, payload: &[u8], frame: &[u8]) -> Result<Vec<Message>, DecodeError> {
    let mut r = Be::new(payload, frame);
    let subtype = r.u8()?;
    let source = r.u8()?;
    let mut msg = Message::new(MessageKind::Other)
        .with_imei(imei)
        .with_type(CMD_FILES.to_string());
    let io = &mut msg.attributes.io;
    io.push_name("subtype", IoValue::U64(u64::from(subtype)));
    io.push_name("source", IoValue::U64(u64::from(source)));
    if subtype == 2 {
        let file = r.take(8)?;
        let total = r.u16()?;
        let current = r.u16()?;
        io.push_name(
            "file",
            IoValue::Text(printable(file).unwrap_or_else(|| hex::encode(file))),
        );
        io.push_name("total", IoValue::U64(u64::from(total)));
        io.push_name("current", IoValue::U64(u64::from(current)));
        io.push_name("chunk", IoValue::Bytes(r.rest().to_vec()));
        if u32::from(current) + 1 < u32::from(total) {
            let mut request = Vec::with_capacity(12);
            request.extend_from_slice(&[subtype, source]);
            request.extend_from_slice(file);
            request.extend_from_slice(&(current + 1).to_be_bytes());
            msg.ack = Some(server_frame(CMD_FILES + SERVER_OFFSET, &request));
        }
    } else {
        io.push_name("payload", IoValue::Bytes(r.rest().to_vec()));
    }
    Ok(vec![msg])
}

fn decode_reply(imei: &str, command: u8, payload: &[u8]) -> Vec<Message> {
    let mut msg = Message::new(MessageKind::CommandResponse)
        .with_imei(imei)
        .with_type(command.to_string());
    msg.result = Some(if command == CMD_SET_IO {
        payload.first().map(u8::to_string).unwrap_or_default()
    } else {
        String::from_utf8_lossy(payload)
            .trim_matches(|c: char| c == '\0' || c.is_whitespace())
            .to_owned()
    });
    msg.attributes.io.push_name("payload", IoValue::Bytes(payload.to_vec()));
    vec![msg]
}

impl Codec for RuptelaCodec {
    fn protocol(&self) -> Protocol {
        Protocol::Ruptela
    }

    fn frame(&self, buf: &[u8], eof: bool) -> Framing {
        let Some(&[hi, lo]) = buf.get(..2) else {
            return Framing::Incomplete;
        };
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        if !(MIN_DATA_LEN..=MAX_DATA_LEN).contains(&len) {
            return Framing::Fatal(FrameError::new(format!(
                "Ruptela length field {len} outside {MIN_DATA_LEN}..={MAX_DATA_LEN}"
            )));
        }
        let total = len + 4;
        if buf.len() >= total {
            Framing::Frame { start: 0, end: total }
        } else if eof {
            // Let decode say how short it is.
            Framing::Frame {
                start: 0,
                end: buf.len(),
            }
        } else {
            Framing::Incomplete
        }
    }

    fn decode(&mut self, frame: &[u8], _ctx: &DecodeContext) -> Result<Vec<Message>, DecodeError> {
        let Some(&[hi, lo]) = frame.get(..2) else {
            return Err(DecodeError::truncated(frame));
        };
        let declared = usize::from(u16::from_be_bytes([hi, lo]));
        let actual = frame.len().saturating_sub(4);
        if declared != actual || declared < MIN_DATA_LEN {
            return Err(DecodeError::Length {
                declared,
                actual,
                excerpt: crate::error::hex_excerpt(frame),
            });
        }
        let body = &frame[2..frame.len() - 2];
        let carried = u16::from_be_bytes([frame[frame.len() - 2], frame[frame.len() - 1]]);
        let computed = crc16_kermit(body);
        if carried != computed {
            return Err(DecodeError::checksum(
                format!("{computed:04X}"),
                format!("{carried:04X}"),
                frame,
            ));
        }
        let mut imei_bytes = [0u8; 8];
        imei_bytes.copy_from_slice(&body[..8]);
        let imei = format!("{:015}", u64::from_be_bytes(imei_bytes));
        let command = body[8];
        let payload = &body[9..];
        match command {
            CMD_RECORDS | CMD_EXTENDED_RECORDS => self.decode_records(&imei, command, payload, frame),
            CMD_DTCS => decode_dtcs(&imei, payload, frame),
            CMD_IDENTIFICATION => Ok(decode_identification(&imei, payload)),
            CMD_HEARTBEAT => {
                let mut msg = Message::new(MessageKind::Heartbeat)
                    .with_imei(imei)
                    .with_type(command.to_string())
                    .with_ack(ack(CMD_HEARTBEAT));
                if !payload.is_empty() {
                    msg.attributes.io.push_name("payload", IoValue::Bytes(payload.to_vec()));
                }
                Ok(vec![msg])
            }
            CMD_DEVICE_CONFIGURATION
            | CMD_DEVICE_VERSION
            | CMD_FIRMWARE_UPDATE
            | CMD_SMS_VIA_GPRS_RESPONSE
            | CMD_SET_IO => Ok(decode_reply(&imei, command, payload)),
            CMD_DRIVER_CARD => Ok(decode_driver_card(&imei, payload, frame)),
            CMD_FILES => decode_files(&imei, payload, frame),
            _ => {
                let mut msg = Message::new(MessageKind::Other)
                    .with_imei(imei)
                    .with_type(command.to_string());
                msg.attributes.io.push_name("payload", IoValue::Bytes(payload.to_vec()));
                Ok(vec![msg])
            }
        }
    }

    fn encode_command(&self, _imei: &str, command: &Command, _ctx: &DecodeContext) -> Result<Vec<u8>, EncodeError> {
        let sms = |text: &str| {
            if text.is_empty() || text.len() > MAX_DATA_LEN - 1 || !text.is_ascii() {
                return Err(EncodeError::Invalid {
                    field: "text",
                    reason: "Ruptela SMS-via-GPRS text is 1..4095 ASCII bytes".into(),
                });
            }
            Ok(server_frame(CMD_SMS_VIA_GPRS + SERVER_OFFSET, text.as_bytes()))
        };
        match command {
            Command::Custom { text } => {
                // Hex pairs only: a frame the operator built by hand, sent as is.
                let is_hex = !text.is_empty() && text.len() % 2 == 0 && text.bytes().all(|b| b.is_ascii_hexdigit());
                if is_hex && let Ok(bytes) = hex::decode(text) {
                    return Ok(bytes);
                }
                sms(text)
            }
            Command::EngineStop => sms("pass immobilizer 10"),
            Command::EngineResume => sms("pass resetimmob"),
            Command::OutputControl { index, active } => {
                let mut payload = Vec::with_capacity(8);
                payload.extend_from_slice(&u32::from(*index).to_be_bytes());
                payload.extend_from_slice(&u32::from(*active).to_be_bytes());
                Ok(server_frame(CMD_SET_IO + SERVER_OFFSET, &payload))
            }
            Command::RequestPhoto => {
                let mut payload = vec![1, 0];
                payload.extend_from_slice(&0u32.to_be_bytes());
                payload.extend_from_slice(&(i32::MAX as u32).to_be_bytes());
                Ok(server_frame(CMD_FILES + SERVER_OFFSET, &payload))
            }
            other => Err(EncodeError::Unsupported {
                protocol: "ruptela",
                what: format!("{other:?}"),
            }),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Device side

/// What a Ruptela FM device sends.
#[derive(Debug, Default)]
pub struct RuptelaDevice;

impl RuptelaDevice {
    pub fn new() -> Self {
        RuptelaDevice
    }
}

fn device_imei(msg: &Message) -> Result<u64, EncodeError> {
    let imei = msg.imei.as_deref().ok_or(EncodeError::Invalid {
        field: "imei",
        reason: "Ruptela frames carry the IMEI".into(),
    })?;
    if imei.is_empty() || !imei.bytes().all(|b| b.is_ascii_digit()) {
        return Err(EncodeError::Invalid {
            field: "imei",
            reason: format!("{imei:?} is not numeric"),
        });
    }
    imei.parse::<u64>().map_err(|e| EncodeError::Invalid {
        field: "imei",
        reason: e.to_string(),
    })
}

fn round_clamp(v: f64, max: u64) -> u64 {
    if v.is_nan() {
        0
    } else {
        v.round().clamp(0.0, max as f64) as u64
    }
}

/// IO elements `(id, value, width)` for one record: typed attributes first, in the widths FM
/// devices use for them (their ids win), then raw `io` ids in the smallest width that holds them.
fn record_io(attrs: &Attributes) -> Vec<(u32, u64, usize)> {
    let mut out: Vec<(u32, u64, usize)> = Vec::with_capacity(attrs.io.len() + 12);
    let mut put = |id: u32, v: u64, width: usize| {
        if !out.iter().any(|(i, _, _)| *i == id) {
            out.push((id, v, width));
        }
    };
    if let Some(b) = attrs.ignition {
        put(251, u64::from(b), 1);
    }
    if let Some(b) = attrs.motion {
        put(173, u64::from(b), 1);
    }
    if let Some(v) = attrs.power_v {
        put(29, round_clamp(v * 1000.0, 0xFFFE), 2);
    }
    if let Some(v) = attrs.battery_v {
        put(30, round_clamp(v * 1000.0, 0xFFFE), 2);
    }
    if let Some(v) = attrs.engine_load_pct {
        put(39, round_clamp(v, 0xFE), 1);
    }
    if let Some(v) = attrs.odometer_m {
        put(65, round_clamp(v, 0xFFFF_FFFE), 4);
    }
    if let Some(v) = attrs.rpm {
        put(197, round_clamp(v * 8.0, 0xFFFE), 2);
    }
    if let Some(v) = attrs.obd_speed_kmh {
        put(165, round_clamp(v * 256.0, 0xFFFE), 2);
    }
    if let Some(v) = attrs.fuel_level_pct {
        put(207, round_clamp(v / 0.4, 0xFE), 1);
    }
    if let Some(v) = attrs.fuel_rate_lph {
        put(100, round_clamp(v * 20.0, 0xFFFE), 2);
    }
    if let Some(v) = attrs.trip_odometer_m {
        put(164, round_clamp(v / 5.0, 0xFFFF_FFFE), 4);
    }
    if let Some(v) = attrs.fuel_used_l {
        put(208, round_clamp(v / 0.5, 0xFFFF_FFFE), 4);
    }
    for alarm in &attrs.alarms {
        match alarm {
            Alarm::Jamming => put(88, 1, 1),
            Alarm::HardBraking => put(134, 1, 1),
            Alarm::HardAcceleration => put(136, 1, 1),
            Alarm::Tow => put(410, 1, 1),
            Alarm::Accident => put(411, 1, 1),
            Alarm::GpsAntennaCut => put(415, 0, 1),
            Alarm::Tampering => put(758, 1, 1),
            _ => {}
        }
    }
    // Ids whose meaning the typed values above already carry, under another id.
    let replaced: &[u32] = &[409, 13, 94, 166, 95, 98, 205, 163, 645];
    for (key, value) in &attrs.io.0 {
        if let (crate::model::IoKey::Id(id), IoValue::U64(v)) = (key, value) {
            // Ids are 16 bits on the wire at most.
            if *id > 0xFFFF {
                continue;
            }
            let typed_elsewhere = replaced.contains(id)
                && match id {
                    409 => attrs.ignition.is_some(),
                    13 => attrs.motion.is_some(),
                    94 | 166 => attrs.rpm.is_some(),
                    95 => attrs.obd_speed_kmh.is_some(),
                    98 | 205 => attrs.fuel_level_pct.is_some(),
                    163 | 645 => attrs.odometer_m.is_some(),
                    _ => false,
                };
            if !typed_elsewhere {
                put(*id, *v, width_for(*v));
            }
        }
    }
    out
}

fn width_for(v: u64) -> usize {
    match v {
        0..=0xFF => 1,
        0x100..=0xFFFF => 2,
        0x1_0000..=0xFFFF_FFFF => 4,
        _ => 8,
    }
}

fn io_name_u64(attrs: &Attributes, name: &str) -> Option<u64> {
    match attrs.io.get_name(name)? {
        IoValue::U64(v) => Some(*v),
        _ => None,
    }
}

/// One record in cmd-1 or cmd-68 layout.
fn encode_record(out: &mut Vec<u8>, pos: &Position, event: u32, extended: bool) -> Result<(), EncodeError> {
    let secs = u32::try_from(pos.time.timestamp()).map_err(|_| EncodeError::Invalid {
        field: "time",
        reason: format!("{} is outside the u32 Unix time range", pos.time),
    })?;
    let a = &pos.attributes;
    out.extend_from_slice(&secs.to_be_bytes());
    out.push(io_name_u64(a, "timestamp_extension").map_or(0, |v| v as u8));
    if extended {
        out.push(0);
    }
    out.push(io_name_u64(a, "priority").map_or(0, |v| v as u8));
    if pos.valid && !((-90.0..=90.0).contains(&pos.latitude) && (-180.0..=180.0).contains(&pos.longitude)) {
        return Err(EncodeError::Invalid {
            field: "coordinates",
            reason: format!("{},{} is not a position", pos.latitude, pos.longitude),
        });
    }
    if pos.valid {
        let coord = |v: f64| (v * 1e7).round().clamp(f64::from(i32::MIN + 1), f64::from(i32::MAX)) as i32;
        out.extend_from_slice(&coord(pos.longitude).to_be_bytes());
        out.extend_from_slice(&coord(pos.latitude).to_be_bytes());
    } else {
        out.extend_from_slice(&i32::MIN.to_be_bytes());
        out.extend_from_slice(&i32::MIN.to_be_bytes());
    }
    out.extend_from_slice(&(round_clamp(pos.altitude_m.unwrap_or(0.0) * 10.0, 0xFFFF) as u16).to_be_bytes());
    out.extend_from_slice(&(round_clamp(pos.course_deg.unwrap_or(0.0) * 100.0, 0xFFFF) as u16).to_be_bytes());
    out.push(pos.satellites.unwrap_or(0));
    out.extend_from_slice(&(round_clamp(pos.speed_kmh.unwrap_or(0.0), 0xFFFF) as u16).to_be_bytes());
    out.push(round_clamp(pos.hdop.unwrap_or(0.0) * 10.0, 0xFF) as u8);
    if extended {
        out.extend_from_slice(&(event as u16).to_be_bytes());
    } else {
        out.push(event as u8);
    }
    let io = record_io(a);
    for width in [1usize, 2, 4, 8] {
        let group: Vec<&(u32, u64, usize)> = io.iter().filter(|(_, _, w)| *w == width).collect();
        if group.len() > 255 {
            return Err(EncodeError::Invalid {
                field: "io",
                reason: "more than 255 IO elements of one size".into(),
            });
        }
        out.push(group.len() as u8);
        for (id, v, _) in group {
            if extended {
                out.extend_from_slice(&(*id as u16).to_be_bytes());
            } else {
                out.push(*id as u8);
            }
            out.extend_from_slice(&v.to_be_bytes()[8 - width..]);
        }
    }
    Ok(())
}

fn record_event(msg: &Message, pos: &Position) -> u32 {
    pos.attributes.event.or(msg.attributes.event).unwrap_or(0)
}

impl RuptelaDevice {
    fn records(&self, imei: u64, msg: &Message) -> Result<Vec<u8>, EncodeError> {
        if msg.positions.is_empty() {
            return Err(EncodeError::Invalid {
                field: "positions",
                reason: "a Ruptela record batch needs at least one fix".into(),
            });
        }
        let needs_u16 = msg
            .positions
            .iter()
            .any(|p| record_event(msg, p) > 0xFF || record_io(&p.attributes).iter().any(|(id, _, _)| *id > 0xFF));
        let extended = needs_u16 || msg.message_type.as_deref() == Some("68");
        if msg.positions.iter().any(|p| record_event(msg, p) > 0xFFFF) {
            return Err(EncodeError::Invalid {
                field: "event",
                reason: "Ruptela event ids are at most 16 bits".into(),
            });
        }
        let command = if extended { CMD_EXTENDED_RECORDS } else { CMD_RECORDS };
        let mut encoded: Vec<Vec<u8>> = Vec::with_capacity(msg.positions.len());
        for p in &msg.positions {
            let mut rec = Vec::with_capacity(64);
            encode_record(&mut rec, p, record_event(msg, p), extended)?;
            if rec.len() + 2 > MAX_DATA_LEN - MIN_DATA_LEN {
                return Err(EncodeError::Invalid {
                    field: "io",
                    reason: "one record does not fit a Ruptela frame".into(),
                });
            }
            encoded.push(rec);
        }
        // Greedy packing: as many records as fit the budget and the count byte.
        let mut frames: Vec<Vec<Vec<u8>>> = vec![Vec::new()];
        let mut size = 2;
        for rec in encoded {
            let current = frames.last().map_or(0, Vec::len);
            if current > 0 && (current == MAX_RECORDS_PER_FRAME || size + rec.len() > DEVICE_PAYLOAD_BUDGET) {
                frames.push(Vec::new());
                size = 2;
            }
            size += rec.len();
            if let Some(f) = frames.last_mut() {
                f.push(rec);
            }
        }
        let mut out = Vec::new();
        let total_frames = frames.len();
        for (i, recs) in frames.into_iter().enumerate() {
            let mut payload = Vec::with_capacity(2 + recs.iter().map(Vec::len).sum::<usize>());
            // "Records left" counts the frames still to come, capped at a byte.
            payload.push((total_frames - 1 - i).min(255) as u8);
            payload.push(recs.len() as u8);
            for r in recs {
                payload.extend_from_slice(&r);
            }
            out.extend_from_slice(&device_frame(imei, command, &payload)?);
        }
        Ok(out)
    }

    fn dtcs(&self, imei: u64, msg: &Message) -> Result<Vec<u8>, EncodeError> {
        let mut entries: Vec<(&Position, &str)> = Vec::new();
        for p in &msg.positions {
            for code in &p.attributes.dtcs {
                entries.push((p, code));
            }
        }
        let fallback;
        if entries.is_empty() {
            let now = Utc::now();
            fallback = msg.positions.first().cloned().unwrap_or_else(|| {
                Position::new(
                    Utc.timestamp_opt(now.timestamp(), 0).single().unwrap_or(now),
                    0.0,
                    0.0,
                    false,
                )
            });
            entries = msg.attributes.dtcs.iter().map(|c| (&fallback, c.as_str())).collect();
        }
        let mut out = Vec::new();
        for chunk in entries.chunks(50) {
            let mut payload = Vec::with_capacity(1 + chunk.len() * 19);
            payload.push(chunk.len() as u8);
            for (p, code) in chunk {
                let secs = u32::try_from(p.time.timestamp()).map_err(|_| EncodeError::Invalid {
                    field: "time",
                    reason: format!("{} is outside the u32 Unix time range", p.time),
                })?;
                if code.len() != 5 || !code.is_ascii() {
                    return Err(EncodeError::Invalid {
                        field: "dtcs",
                        reason: format!("{code:?} is not a 5-character code"),
                    });
                }
                payload.push(0);
                payload.extend_from_slice(&secs.to_be_bytes());
                payload.extend_from_slice(&((p.longitude * 1e7).round() as i32).to_be_bytes());
                payload.extend_from_slice(&((p.latitude * 1e7).round() as i32).to_be_bytes());
                payload.push(1);
                payload.extend_from_slice(code.as_bytes());
            }
            out.extend_from_slice(&device_frame(imei, CMD_DTCS, &payload)?);
        }
        Ok(out)
    }
}

impl DeviceEncoder for RuptelaDevice {
    fn encode(&mut self, msg: &Message) -> Result<Vec<u8>, EncodeError> {
        let imei = device_imei(msg)?;
        match msg.kind {
            MessageKind::Login => {
                let a = &msg.attributes;
                let mut payload = Vec::with_capacity(37);
                let version = match a.io.get_name("version") {
                    Some(IoValue::Text(v)) => v.as_str(),
                    _ => "CLUTCH-SIM.01.00",
                };
                let mut v = [0u8; 15];
                for (d, s) in v.iter_mut().zip(version.bytes().filter(u8::is_ascii)) {
                    *d = s;
                }
                payload.extend_from_slice(&v);
                let imsi = match a.io.get_name("imsi") {
                    Some(IoValue::Text(s)) => s.parse::<u64>().unwrap_or(0),
                    _ => 0,
                };
                payload.extend_from_slice(&imsi.to_be_bytes());
                let operator = io_name_u64(a, "operator").unwrap_or(0);
                payload.extend_from_slice(&(operator as u32).to_be_bytes());
                // Settings block as FM devices send it (kept raw by the decoder).
                payload.extend_from_slice(&[0; 10]);
                device_frame(imei, CMD_IDENTIFICATION, &payload)
            }
            MessageKind::Heartbeat => device_frame(imei, CMD_HEARTBEAT, &[]),
            MessageKind::Obd
                if !msg.attributes.dtcs.is_empty() || msg.positions.iter().any(|p| !p.attributes.dtcs.is_empty()) =>
            {
                self.dtcs(imei, msg)
            }
            MessageKind::Position | MessageKind::Alarm | MessageKind::Obd => self.records(imei, msg),
            MessageKind::CommandResponse => {
                let command = match msg.message_type.as_deref().and_then(|t| t.parse::<u8>().ok()) {
                    Some(
                        c @ (CMD_DEVICE_CONFIGURATION
                        | CMD_DEVICE_VERSION
                        | CMD_FIRMWARE_UPDATE
                        | CMD_SMS_VIA_GPRS_RESPONSE
                        | CMD_SET_IO),
                    ) => c,
                    _ => CMD_SMS_VIA_GPRS_RESPONSE,
                };
                let result = msg.result.as_deref().unwrap_or_default();
                if command == CMD_SET_IO {
                    let status = result.parse::<u8>().map_err(|_| EncodeError::Invalid {
                        field: "result",
                        reason: "a set-IO reply is one status byte".into(),
                    })?;
                    device_frame(imei, command, &[status])
                } else {
                    device_frame(imei, command, result.as_bytes())
                }
            }
            MessageKind::Other => Err(EncodeError::Unsupported {
                protocol: "ruptela",
                what: "other messages".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_match_traccar() {
        assert_eq!(hex::encode(ack(CMD_RECORDS)), "0002640113bc");
        assert_eq!(hex::encode(ack(CMD_EXTENDED_RECORDS)), "0002640113bc");
        assert_eq!(hex::encode(ack(CMD_DTCS)), "00026d01c4a4");
        assert_eq!(hex::encode(ack(CMD_IDENTIFICATION)), "00027301cb25");
        assert_eq!(hex::encode(ack(CMD_HEARTBEAT)), "00027401862d");
        assert_eq!(hex::encode(ack(CMD_DRIVER_CARD)), "000288015385");
        assert_eq!(
            hex::encode(server_frame(CMD_SMS_VIA_GPRS + SERVER_OFFSET, b" Setio 2,1")),
            "000b6c20536574696f20322c31eb3e"
        );
    }

    #[test]
    fn sign_extension() {
        assert_eq!(sign_extend(0xF6, 1), -10);
        assert_eq!(sign_extend(0xFFF6, 2), -10);
        assert_eq!(sign_extend(0x7F, 1), 127);
        assert!(all_ones(0xFFFF, 2) && !all_ones(0xFFFF, 4));
    }
}
