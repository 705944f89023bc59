//! GT06 / Concox binary protocol (and the many clones that speak it), over TCP.
//!
//! # Framing
//! Standard packets are `78 78 <len u8> <protocol> <content> <serial u16> <crc u16> 0D 0A`;
//! extended packets use `79 79 <len u16>`. The length counts protocol number, content,
//! serial and CRC. The CRC is CRC-16/X-25 over the bytes from the length field through
//! the serial, big-endian.
//!
//! [`Codec::frame`] follows Traccar's frame decoder: a frame ends where its length field
//! says if `0D 0A` is there; otherwise it ends at the first `0D 0A`. That fallback is
//! needed because WiFi/LBS packets (0x69, 0x17) of several models put the access-point
//! count where the length belongs and carry no CRC. Unlike Traccar, on a live stream a
//! frame whose length field points beyond the bytes received so far is waited for, and
//! only cut short at a `0D 0A` that is followed by the next frame's start marker, so a
//! partial read is never mistaken for a short frame. At end of input a frame missing only
//! its `0D 0A` (or only the `0A`) is still handed to the decoder.
//!
//! # Integrity
//! A frame whose length field matches its size has a CRC at a known place: it must
//! match or the frame is rejected with [`DecodeError::Checksum`]. A frame whose length
//! field does not match (the fallback above) is accepted as verified if the two bytes
//! before `0D 0A` are a correct CRC of what precedes them (some devices get only the
//! length byte wrong); otherwise it has no usable checksum and is decoded best-effort,
//! marked `io.integrity = "unverified"`. An unverified login never sets the session
//! identity: it is reported as `other`.
//!
//! # Acknowledgements (`Message::ack`)
//! As Traccar answers (PROTOCOLS.md §2.2): `78 78 05 <protocol> <serial> <crc> 0D 0A`
//! after login, heartbeat/status, GPS/LBS/status packets, multi-LBS/WiFi-LBS, string
//! 0x15, alarm 0x95, BMS and unknown standard types; WiFi 0x69/0x17 get
//! `78 78 00 <type> <the request's 6 time bytes> 0D 0A`; time request 0x8A gets the
//! server's UTC time (`ctx.now`) with serial 0; address request 0x2A gets the extended
//! 0x97 "no address" answer. Nothing is sent for X1 GPS 0x34, info 0x94, string 0x21,
//! OBD 0x8C, photo info 0x35, WiFi 0xF3, serial passthrough 0x9B, command echoes
//! 0x80–0x82, Space10X multi-LBS 0x19, or a frame cut off before its `0D 0A`.
//!
//! **Extended (0x7979) rule.** An extended packet is answered only for the types Traccar
//! answers in that form or that carry the same meaning as an answered standard packet
//! (login, heartbeat/status, GPS/LBS/status family, AZ735 0x32/0x33, modular GPS 0x70,
//! multimedia 0x41, 0xF1/0xF2, 0x8A, 0x95); the answer has the request's shape:
//! `79 79 00 05 <protocol> <serial> <crc> 0D 0A` (CRC over `00 05 <protocol> <serial>`).
//! Traccar itself sends a 0x7878 answer to extended 0x70/0xF1/0xF2; a device that sent a
//! 0x7979 packet understands 0x7979, so we keep the shape. Unknown extended types get no
//! answer (as in Traccar).
//!
//! # What is mapped
//! Login 0x01 (BCD IMEI, type code, time-zone word → the session's device time zone,
//! default UTC); GPS/LBS/status packets 0x10/0x11/0x12/0x16/0x1A/0x1E/0x22/0x24/0x25/
//! 0x26/0x27/0x2D/0x31/0x32/0x37/0xA0/0xA3/0xA4/0xA5/0xA7 (course/status word: bit 10
//! north, bit 11 west, bit 12 fixed → `valid`, bit 14 → bit 15 is `ignition`);
//! terminal-info byte → ignition, charging, alarms; voltage level → `battery_pct`;
//! status 0x13 and heartbeat 0x23; alarm codes → [`Alarm`](crate::Alarm); JC100/JC400
//! alarm 0x95; X1 GPS 0x34; string replies 0x15/0x21 (→ `result`, `<ICCID:…>` →
//! `io.iccid`, "Current position!" → a fix); info 0x94 (voltage → `power_v`, ICCID,
//! door, iButton, fuel sensor); OBD 0x8C; modular GPS 0x70; AZ735 0x32/0x33; WiFi
//! 0x69/0x17/0xF3 and multi-LBS 0x18/0x24/0x28/0x2C/0x2E/0x33/0xA1/0xA2/0xA9 (cells and
//! access points as text in `io`); serial passthrough 0x9B; length-detected model
//! variants (VXT01, Wanway S20, SR411 mini, GT06E card, Benway, S5, Space10X, OBD6,
//! WeTrust, JC400, RFID) as Traccar detects them. Raw values go to `io` under Traccar's
//! attribute names (`status`, `rssi`, `adc1`, `temp1`, `iccid`, `event`, …); anything
//! else becomes `other` with its content in `io.undecoded`.
//!
//! # Downlink and device side
//! [`Codec::encode_command`] builds command packet 0x80 (`Relay,1#` engine stop,
//! `Relay,0#` resume, `WHERE#` locate, `RESET#` reboot, custom text) with a per-session
//! serial starting at 0. The [`DeviceEncoder`] writes login 0x01, positions as 0x22
//! (GPS + LBS + ACC), heartbeat 0x13 (or 0x23), alarm 0x26, OBD 0x8C and command reply
//! 0x15 (0x21 for long text), numbering its packets.

mod cursor;
mod decode;
mod encode;

use std::sync::atomic::{AtomicU16, Ordering};

use crate::Protocol;
use crate::checksum::crc16_x25;
use crate::codec::{Codec, DecodeContext, DeviceEncoder, Framing, Transport};
use crate::error::{DecodeError, EncodeError, FrameError};
use crate::model::{Command, Message};

pub use encode::Gt06Device;

/// Largest frame accepted (Traccar's `MAX_FRAME_LENGTH_LARGE`). Only 0x7979 length
/// fields and the `0D 0A` scan can reach it.
pub const MAX_FRAME: usize = 32 * 1024;

const STD: [u8; 2] = [0x78, 0x78];
const EXT: [u8; 2] = [0x79, 0x79];
const CRLF: [u8; 2] = [0x0d, 0x0a];

/// A GT06 session over TCP (the only transport these trackers use).
pub fn codec(transport: Transport) -> Option<Box<dyn Codec>> {
    match transport {
        Transport::Tcp => Some(Box::new(Gt06Codec::new())),
        _ => None,
    }
}

/// A simulated GT06 tracker.
pub fn device(transport: Transport) -> Option<Box<dyn DeviceEncoder>> {
    match transport {
        Transport::Tcp => Some(Box::new(Gt06Device::new())),
        _ => None,
    }
}

/// One GT06 connection: remembers the IMEI and device time zone from the login.
#[derive(Debug, Default)]
pub struct Gt06Codec {
    session: Session,
    /// Serial of the next downlink command; `encode_command` takes `&self`.
    command_serial: AtomicU16,
}

/// What the login told us.
#[derive(Debug, Default, Clone)]
pub(crate) struct Session {
    pub(crate) imei: Option<String>,
    /// Device local time minus UTC, seconds (from the login's time-zone word).
    pub(crate) tz_offset_s: i32,
}

impl Gt06Codec {
    pub fn new() -> Self {
        Self::default()
    }
}

/// Whether the frame's CRC was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Integrity {
    Verified,
    /// The length field does not locate a CRC and the tail is not one.
    Unverified,
}

/// One frame split into its parts.
#[derive(Debug, Clone)]
pub(crate) struct Envelope<'a> {
    pub(crate) frame: &'a [u8],
    pub(crate) ext: bool,
    pub(crate) ty: u8,
    /// The length field's value.
    pub(crate) declared: usize,
    /// Bytes after the protocol number, up to the serial (or to the end when the frame
    /// is too short to hold a serial and CRC).
    pub(crate) content: &'a [u8],
    /// Everything after the protocol number up to the terminator: WiFi packets that
    /// misuse the length byte carry no serial or CRC at all.
    pub(crate) after_type: &'a [u8],
    pub(crate) serial: Option<u16>,
    pub(crate) integrity: Integrity,
    /// False when the frame ended without its `0D 0A` (cut off at end of input).
    pub(crate) terminated: bool,
}

impl<'a> Envelope<'a> {
    pub(crate) fn parse(frame: &'a [u8]) -> Result<Self, DecodeError> {
        let ext = match frame.get(..2) {
            Some(h) if h == STD => false,
            Some(h) if h == EXT => true,
            Some(_) => return Err(DecodeError::invalid("header", "expected 7878 or 7979", frame)),
            None => return Err(DecodeError::truncated(frame)),
        };
        let hl = if ext { 4 } else { 3 };
        let declared = match frame.get(2..hl) {
            Some([l]) => usize::from(*l),
            Some([h, l]) => usize::from(u16::from_be_bytes([*h, *l])),
            _ => return Err(DecodeError::truncated(frame)),
        };
        let total = hl + declared + 2;
        let len = frame.len();
        let ends_crlf = frame.ends_with(&CRLF);
        // Where the bytes before the terminator end, and whether the terminator is whole.
        let (body_end, terminated) = if len == total && ends_crlf {
            (len - 2, true)
        } else if len + 1 == total && frame.last() == Some(&0x0d) {
            (len - 1, false)
        } else if len + 2 == total {
            (len, false)
        } else if ends_crlf {
            (len - 2, true)
        } else {
            return Err(DecodeError::Length {
                declared: total,
                actual: len,
                excerpt: crate::error::hex_excerpt(frame),
            });
        };
        let payload = frame.get(hl..body_end).unwrap_or(&[]);
        let Some((&ty, after_type)) = payload.split_first() else {
            return Err(DecodeError::truncated(frame));
        };
        let crc_span = frame.get(2..body_end.saturating_sub(2)).unwrap_or(&[]);
        let wire_crc = frame
            .get(body_end.saturating_sub(2)..body_end)
            .and_then(|b| <[u8; 2]>::try_from(b).ok())
            .map(u16::from_be_bytes);
        let has_tail = payload.len() >= 5;
        let integrity = if payload.len() == declared && has_tail {
            let expected = crc16_x25(crc_span);
            let actual = wire_crc.unwrap_or_default();
            if expected != actual {
                return Err(DecodeError::checksum(
                    format!("{expected:04x}"),
                    format!("{actual:04x}"),
                    frame,
                ));
            }
            Integrity::Verified
        } else if has_tail && wire_crc == Some(crc16_x25(crc_span)) {
            Integrity::Verified
        } else {
            Integrity::Unverified
        };
        let (content, serial) = if has_tail {
            let n = after_type.len();
            let serial = after_type
                .get(n - 4..n - 2)
                .and_then(|b| <[u8; 2]>::try_from(b).ok())
                .map(u16::from_be_bytes);
            (after_type.get(..n - 4).unwrap_or(&[]), serial)
        } else {
            (after_type, None)
        };
        Ok(Envelope {
            frame,
            ext,
            ty,
            declared,
            content,
            after_type,
            serial,
            integrity,
            terminated,
        })
    }

    pub(crate) fn verified(&self) -> bool {
        self.integrity == Integrity::Verified
    }
}

/// A server → device packet: `78 78` (or `79 79`) + length + protocol + content +
/// serial + CRC + `0D 0A`.
pub(crate) fn packet(ext: bool, ty: u8, content: &[u8], serial: u16) -> Vec<u8> {
    let len = 5 + content.len();
    let mut v = Vec::with_capacity(len + 6);
    if ext {
        v.extend_from_slice(&EXT);
        v.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes());
    } else {
        v.extend_from_slice(&STD);
        v.push(u8::try_from(len).unwrap_or(u8::MAX));
    }
    v.push(ty);
    v.extend_from_slice(content);
    v.extend_from_slice(&serial.to_be_bytes());
    let crc = crc16_x25(v.get(2..).unwrap_or(&[]));
    v.extend_from_slice(&crc.to_be_bytes());
    v.extend_from_slice(&CRLF);
    v
}

fn is_filler(b: u8) -> bool {
    matches!(b, b'\r' | b'\n' | b' ' | b'\t')
}

fn is_marker(s: &[u8]) -> bool {
    s == STD || s == EXT
}

/// Index of the first possible frame start in `buf` at or after `from`: a whole marker,
/// or a lone last byte that may become one.
fn next_marker(buf: &[u8], from: usize) -> usize {
    let mut i = from;
    while let Some(off) = buf.get(i..).and_then(|s| memchr::memchr2(0x78, 0x79, s)) {
        let at = i + off;
        match buf.get(at..at + 2) {
            Some(pair) if is_marker(pair) => return at,
            None => return at,
            Some(_) => i = at + 1,
        }
    }
    buf.len()
}

/// Index of the first `0D 0A` in `buf[from..to]` (the index of the `0D`).
fn find_crlf(buf: &[u8], from: usize, to: usize) -> Option<usize> {
    let hay = buf.get(from..to.min(buf.len()))?;
    memchr::memmem::find(hay, &CRLF).map(|i| from + i)
}

/// Index of the first `0D 0A` directly followed by a frame marker.
fn find_crlf_before_marker(buf: &[u8], from: usize, to: usize) -> Option<usize> {
    let mut i = from;
    while let Some(at) = find_crlf(buf, i, to) {
        if buf.get(at + 2..at + 4).is_some_and(is_marker) {
            return Some(at);
        }
        i = at + 1;
    }
    None
}

pub(crate) fn frame(buf: &[u8], eof: bool) -> Framing {
    let skip = buf.iter().take_while(|b| is_filler(**b)).count();
    let rest = buf.get(skip..).unwrap_or(&[]);
    match rest.get(..2) {
        None => {
            return match rest.first() {
                Some(b) if *b != 0x78 && *b != 0x79 => Framing::Resync {
                    discard: skip + 1,
                    error: FrameError::new("gt06: byte outside a frame"),
                },
                _ => Framing::Incomplete,
            };
        }
        Some(h) if !is_marker(h) => {
            let at = next_marker(rest, 1);
            return Framing::Resync {
                discard: skip + at,
                error: FrameError::new(format!(
                    "gt06: {at} bytes outside a frame ({})",
                    crate::error::hex_excerpt(rest.get(..at).unwrap_or(rest))
                )),
            };
        }
        Some(_) => {}
    }
    let ext = rest.first() == Some(&0x79);
    let hl = if ext { 4 } else { 3 };
    let declared = match rest.get(2..hl) {
        Some([l]) => usize::from(*l),
        Some([h, l]) => usize::from(u16::from_be_bytes([*h, *l])),
        _ => return Framing::Incomplete,
    };
    let total = hl + declared + 2;
    if total > MAX_FRAME {
        return Framing::Resync {
            discard: skip + 2,
            error: FrameError::new(format!(
                "gt06: length field {declared} beyond the {MAX_FRAME}-byte limit"
            )),
        };
    }
    if rest.get(total - 2..total) == Some(&CRLF[..]) {
        return Framing::Frame {
            start: skip,
            end: skip + total,
        };
    }
    // The type byte comes first; a terminator cannot start before it.
    let from = hl + 1;
    let limit = rest.len().min(MAX_FRAME);
    if rest.len() < total && !eof {
        return match find_crlf_before_marker(rest, from, limit) {
            Some(at) => Framing::Frame {
                start: skip,
                end: skip + at + 2,
            },
            None => Framing::Incomplete,
        };
    }
    match find_crlf(rest, from, limit) {
        Some(at) => Framing::Frame {
            start: skip,
            end: skip + at + 2,
        },
        None if eof && (rest.len() + 2 == total || (rest.len() + 1 == total && rest.last() == Some(&0x0d))) => {
            Framing::Frame {
                start: skip,
                end: skip + rest.len(),
            }
        }
        None if rest.len() < total || (!eof && rest.len() < MAX_FRAME) => Framing::Incomplete,
        None => Framing::Resync {
            discard: skip + 2,
            error: FrameError::new("gt06: no 0D0A terminator where the length field or a scan puts it"),
        },
    }
}

impl Codec for Gt06Codec {
    fn protocol(&self) -> Protocol {
        Protocol::Gt06
    }

    fn frame(&self, buf: &[u8], eof: bool) -> Framing {
        frame(buf, eof)
    }

    fn decode(&mut self, frame: &[u8], ctx: &DecodeContext) -> Result<Vec<Message>, DecodeError> {
        let env = Envelope::parse(frame)?;
        decode::decode(&env, &mut self.session, ctx).map(|m| vec![m])
    }

    fn encode_command(&self, _imei: &str, command: &Command, _ctx: &DecodeContext) -> Result<Vec<u8>, EncodeError> {
        let text = encode::command_text(command)?;
        encode::check_command_text(text)?;
        let serial = self.command_serial.fetch_add(1, Ordering::Relaxed);
        Ok(encode::command_packet(text, serial))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Build a standard frame around `ty` + `content` with a correct CRC.
    fn std_frame(ty: u8, content: &[u8], serial: u16) -> Vec<u8> {
        packet(false, ty, content, serial)
    }

    #[test]
    fn frames_whole_packets_and_skips_filler() {
        let f = std_frame(0x13, &[0x44, 6, 4, 0, 2], 7);
        let mut buf = b"\r\n".to_vec();
        buf.extend_from_slice(&f);
        assert_eq!(
            frame(&buf, false),
            Framing::Frame {
                start: 2,
                end: 2 + f.len()
            }
        );
    }

    #[test]
    fn waits_for_declared_length_on_a_stream() {
        let f = std_frame(0x12, &[0x0d, 0x0a, 1, 2, 3, 4, 5, 6, 7, 8], 1);
        for cut in 0..f.len() {
            assert_eq!(frame(&f[..cut], false), Framing::Incomplete, "cut at {cut}");
        }
    }

    #[test]
    fn short_length_field_is_cut_at_terminator_followed_by_next_frame() {
        // A login whose length byte says 3 bytes more than it carries.
        let mut bad = vec![
            0x78, 0x78, 0x0d, 0x01, 1, 0x23, 0x45, 0x67, 0x89, 0x01, 0x23, 0x45, 0x77, 0x0d, 0x0a,
        ];
        assert_eq!(frame(&bad, false), Framing::Incomplete);
        let next = std_frame(0x13, &[0x44, 6, 4, 0, 2], 7);
        bad.extend_from_slice(&next);
        assert_eq!(frame(&bad, false), Framing::Frame { start: 0, end: 15 });
    }

    #[test]
    fn resyncs_over_garbage_to_next_marker() {
        let f = std_frame(0x13, &[0x44, 6, 4, 0, 2], 7);
        let mut buf = vec![0x01, 0x78, 0x02, 0x79];
        buf.extend_from_slice(&f);
        match frame(&buf, false) {
            Framing::Resync { discard, .. } => assert_eq!(discard, 4),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn oversized_extended_length_resyncs() {
        let buf = [0x79, 0x79, 0xff, 0xff, 0x70, 0, 0];
        assert!(matches!(frame(&buf, false), Framing::Resync { discard: 2, .. }));
    }

    #[test]
    fn envelope_rejects_bad_crc() {
        let mut f = std_frame(0x13, &[0x44, 6, 4, 0, 2], 7);
        let n = f.len();
        f[n - 3] ^= 1;
        assert!(matches!(Envelope::parse(&f), Err(DecodeError::Checksum { .. })));
    }

    #[test]
    fn envelope_accepts_honest_crc_behind_wrong_length() {
        let mut f = std_frame(0x13, &[0x44, 6, 4, 0, 2], 0x44d);
        f[2] = 8;
        // The device computed its CRC over the wrong length byte.
        let n = f.len();
        let crc = crc16_x25(&f[2..n - 4]);
        f[n - 4..n - 2].copy_from_slice(&crc.to_be_bytes());
        let env = Envelope::parse(&f).expect("parses");
        assert!(env.verified());
        assert_eq!(env.serial, Some(0x44d));
    }
}
