//! Queclink "@Track" protocol family (GL200/GL300/GL500, GV55/GV300/GV350/GV500/GV600,
//! GB100, CV100/CV200, GT501 …), as Traccar calls it: `gl200`. TCP and UDP.
//!
//! # What this module owns
//! - **Framing** ([`Gl200Codec::frame`]). Two formats share one port:
//!   - ASCII reports `+RESP:GTxxx,…$`, `+BUFF:GTxxx,…$` (buffered resend) and `+ACK:GTxxx,…$`
//!     (command acknowledgement), cut at `$`. CR, LF or NUL also end a text frame (no field ever
//!     contains them), and a text frame that never got its `$` is cut where the next report
//!     header starts; at end of input the rest is one frame.
//!   - Queclink's binary ("HEX mode") messages `+RSP`, `+BSP`, `+EVT`, `+BVT`, `+INF`, `+BNF`,
//!     `+HBD`, `+CRD`, `+BRD`, `+LGN` and a binary `+ACK` (no `:` after it): length-prefixed,
//!     the length counting the whole frame; where the length sits depends on the header
//!     (`+ACK` u8 at 6, `+HBD` u8 at 5, `+INF`/`+BNF` u16 at 7, `+CRD`/`+BRD`/`+LGN` u16 at 6,
//!     the others u16 at 9). Every binary frame ends with send time (7 bytes), count number
//!     (u16), a CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) over everything after the 4-byte
//!     header up to the CRC, and CR LF. A length outside 11..=[`MAX_BINARY`] or a frame not
//!     ending in CR LF makes the framer resynchronise on the next `+`.
//! - **Decoding** text reports into [`Message`]s (see `text.rs` for the per-report layouts and
//!   which Traccar attribute names the raw values keep) and binary reports (`binary.rs`).
//!   Kinds: `+ACK:GTHBD` heartbeat, other `+ACK:` command_response (result = the whole
//!   acknowledgement); GTOBD/GTCAN obd; SOS, SPD, TOW, IDL, PNA/PFA, EPN/MPN, EPF/MPF, BPL,
//!   SWG, TMP/TEM, JDR/JDS, HBM, DAR alarm; INF, VER, GSM, LBS, WIF, BID, BAA, DTT, DAT other;
//!   every other report (FRI, ERI, IGN/IGF/VGN/VGF, STT, NMR, STR, LSW, IDA …) position.
//! - **Acks.** `+ACK:GTHBD,<ver>,…,<count>` (heartbeat) is answered `+SACK:GTHBD,<ver>,<count>$`;
//!   every other text message `+SACK:<count>$`. Traccar sends the latter only when `gl200.ack`
//!   is configured; we always send it, because acknowledging only after durable storage is the
//!   point of our ingest, and a Queclink configured for SACK (AT+GTSRI/AT+GTQSS "SACK enable")
//!   resends unacknowledged reports as `+BUFF:` — a device with SACK disabled simply ignores it.
//!   Binary messages get no ack (Traccar sends none and the HEX-mode SACK layout is not pinned
//!   down by any vector).
//! - **Downlink** ([`Gl200Codec::encode_command`]): Queclink AT commands. Every AT command
//!   carries the device password as its first parameter. A Queclink ships with its model name
//!   in lower case as the password (`gl200`, `gl300`, `gv300`, `gv500` …); the codec uses the
//!   model learnt from the session's protocol version field, or `gl200` before any report was
//!   seen. A device whose password was changed is commanded with [`Command::Custom`], whose
//!   text is sent verbatim (a full `AT+GT…=<password>,…$` line).
//! - **Device side** (`encode::Gl200Device`): what a GV500-class tracker sends, for the
//!   simulator and round-trip tests.
//!
//! # Coverage
//! Fully laid out (every field named or typed): GTFRI/GEO/RTL/DOG (all four trailer variants),
//! GTERI (fuel, 1-wire, BLE masks), GTIGN/IGF/VGN/VGF, GTOBD (report mask bits 0–22), GTINF,
//! GTVER, GTIDA, GTLSW/TSW, GTBID/BAA, GTDTT, GTDAT, GTPNA/PFA, `+ACK`. Partly: GTCAN (the
//! first and extension masks are decoded; third-mask and EV/tyre data are kept raw), GTERI with
//! CAN data (mask bit 2, kept raw), GTLSA, GTGSM/LBS/WIF (cell and Wi-Fi lists raw), the
//! generic reports (alarms, STT, NMR, STR …: fix, report type, battery) and binary messages
//! (`+RSP`/`+EVT` fixes only; others raw).

mod binary;
pub(crate) mod encode;
mod text;

use chrono::{DateTime, Utc};

use crate::codec::{Codec, DecodeContext, DeviceEncoder, Framing, Transport};
use crate::error::{DecodeError, EncodeError, FrameError};
use crate::model::{Command, Message};

/// Longest text report accepted. The longest real reports (GTCAN with every mask bit, GTERI
/// with several BLE accessories) stay well under 2 kB.
pub const MAX_TEXT: usize = 8192;
/// Longest binary message accepted (the length field allows 65535; compressed `+RSP`
/// batches seen in the wild are about 1.5 kB).
pub const MAX_BINARY: usize = 8192;
/// Shortest binary message (header, type, mask, length; Traccar's minimum).
const MIN_BINARY: usize = 11;

const BINARY_HEADERS: [&[u8; 4]; 10] = [
    b"+RSP", b"+BSP", b"+EVT", b"+BVT", b"+INF", b"+BNF", b"+HBD", b"+CRD", b"+BRD", b"+LGN",
];

pub fn codec(transport: Transport) -> Option<Box<dyn Codec>> {
    match transport {
        Transport::Tcp | Transport::Udp => Some(Box::new(Gl200Codec::default())),
        Transport::Http => None,
    }
}

pub fn device(transport: Transport) -> Option<Box<dyn DeviceEncoder>> {
    match transport {
        Transport::Tcp | Transport::Udp => Some(Box::new(encode::Gl200Device::default())),
        Transport::Http => None,
    }
}

/// One Queclink session.
#[derive(Debug, Default)]
pub struct Gl200Codec {
    /// The device identity last seen (binary heartbeats and info messages carry none).
    imei: Option<String>,
    /// Device model derived from the protocol version field; picks the default password.
    model: Option<&'static str>,
}

/// Where a binary message's length field sits and how wide it is, by header.
fn binary_length_field(header: &[u8]) -> Option<(usize, usize)> {
    match header {
        b"+ACK" => Some((6, 1)),
        b"+HBD" => Some((5, 1)),
        b"+INF" | b"+BNF" => Some((7, 2)),
        b"+CRD" | b"+BRD" | b"+LGN" => Some((6, 2)),
        b"+RSP" | b"+BSP" | b"+EVT" | b"+BVT" => Some((9, 2)),
        _ => None,
    }
}

/// Whether the bytes start a binary message. `None` when too few bytes are present to tell.
fn is_binary(buf: &[u8]) -> Option<bool> {
    let header = buf.get(..4)?;
    if header == b"+ACK" {
        return buf.get(4).map(|b| *b != b':');
    }
    Some(BINARY_HEADERS.iter().any(|h| h.as_slice() == header))
}

/// Index of the next `+` after position 0, the only byte a frame can start with.
fn next_marker(buf: &[u8]) -> Option<usize> {
    buf.get(1..).and_then(|rest| memchr::memchr(b'+', rest)).map(|i| i + 1)
}

fn resync(buf_len: usize, offset: usize, rest: &[u8], reason: String) -> Framing {
    let discard = match next_marker(rest) {
        Some(i) => offset + i,
        None => buf_len,
    };
    Framing::Resync {
        discard: discard.max(1),
        error: FrameError::new(reason),
    }
}

/// Report headers a missing `$` is recovered at.
const TEXT_HEADERS: [&[u8]; 3] = [b"+RESP:", b"+BUFF:", b"+ACK:"];

fn frame_text(buf: &[u8], start: usize, eof: bool) -> Framing {
    let rest = &buf[start..];
    let limit = rest.len().min(MAX_TEXT + 1);
    let mut end = None;
    let mut i = 1;
    while i < limit {
        match rest[i] {
            b'$' => {
                end = Some((i, i + 1));
                break;
            }
            // NUL is consumed with the frame (Traccar's delimiter); CR/LF stay as filler.
            0 => {
                end = Some((i, i + 1));
                break;
            }
            b'\r' | b'\n' => {
                end = Some((i, i));
                break;
            }
            b'+' if TEXT_HEADERS.iter().any(|h| rest[i..].starts_with(h)) => {
                end = Some((i, i));
                break;
            }
            _ => {}
        }
        i += 1;
    }
    match end {
        Some((body_len, consumed)) if body_len <= MAX_TEXT => Framing::Frame {
            start,
            end: start + consumed,
        },
        Some(_) => resync(
            buf.len(),
            start,
            rest,
            format!("text report longer than {MAX_TEXT} bytes"),
        ),
        None if rest.len() > MAX_TEXT => resync(
            buf.len(),
            start,
            rest,
            format!("no `$` within {MAX_TEXT} bytes of a report start"),
        ),
        None if eof => Framing::Frame { start, end: buf.len() },
        None => Framing::Incomplete,
    }
}

fn frame_binary(buf: &[u8], start: usize) -> Framing {
    let rest = &buf[start..];
    let Some((at, width)) = rest.get(..4).and_then(binary_length_field) else {
        return resync(buf.len(), start, rest, "unknown binary header".into());
    };
    let Some(field) = rest.get(at..at + width) else {
        return Framing::Incomplete;
    };
    let length = field.iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
    if !(MIN_BINARY..=MAX_BINARY).contains(&length) || length < at + width + 2 {
        return resync(
            buf.len(),
            start,
            rest,
            format!("binary length field {length} outside {MIN_BINARY}..={MAX_BINARY}"),
        );
    }
    let Some(frame) = rest.get(..length) else {
        return Framing::Incomplete;
    };
    if !frame.ends_with(b"\r\n") {
        return resync(buf.len(), start, rest, "binary message does not end with CR LF".into());
    }
    Framing::Frame {
        start,
        end: start + length,
    }
}

impl Codec for Gl200Codec {
    fn protocol(&self) -> crate::Protocol {
        crate::Protocol::Gl200
    }

    fn frame(&self, buf: &[u8], eof: bool) -> Framing {
        let Some(start) = buf.iter().position(|b| !is_filler(*b)) else {
            return Framing::Incomplete;
        };
        let rest = &buf[start..];
        if rest[0] != b'+' {
            return resync(buf.len(), start, rest, "report does not start with `+`".into());
        }
        match is_binary(rest) {
            Some(true) => frame_binary(buf, start),
            Some(false) => frame_text(buf, start, eof),
            None if eof => Framing::Frame { start, end: buf.len() },
            None => Framing::Incomplete,
        }
    }

    fn decode(&mut self, frame: &[u8], ctx: &DecodeContext) -> Result<Vec<Message>, DecodeError> {
        let trimmed = trim_ascii_start(frame);
        let mut msg = if is_binary(trimmed) == Some(true) {
            binary::decode(trimmed)?
        } else {
            let (msg, model) = text::decode(trimmed, ctx)?;
            if model.is_some() {
                self.model = model;
            }
            msg
        };
        match &msg.imei {
            Some(imei) => {
                if self.imei.as_deref() != Some(imei.as_str()) {
                    self.imei = Some(imei.clone());
                }
            }
            None => msg.imei = self.imei.clone(),
        }
        Ok(vec![msg])
    }

    fn encode_command(&self, _imei: &str, command: &Command, _ctx: &DecodeContext) -> Result<Vec<u8>, EncodeError> {
        encode::command(command, &self.password())
    }
}

impl Gl200Codec {
    /// The default password of the model this session talks to (see the module docs).
    fn password(&self) -> String {
        match self.model {
            Some(model) if !model.is_empty() => model.to_ascii_lowercase().replace(' ', ""),
            _ => "gl200".to_owned(),
        }
    }
}

/// Bytes dropped silently between frames: line ends and NUL padding.
fn is_filler(b: u8) -> bool {
    b.is_ascii_whitespace() || b == 0
}

fn trim_ascii_start(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|c| is_filler(**c)).count();
    &b[n..]
}

/// `yyyyMMddHHmmss` (UTC) as Queclink writes every time field.
pub(crate) fn parse_time14(s: &str) -> Option<DateTime<Utc>> {
    let b = s.as_bytes();
    if b.len() != 14 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n =
        |from: usize, len: usize| -> u32 { b[from..from + len].iter().fold(0, |a, d| a * 10 + u32::from(d - b'0')) };
    let year = i32::try_from(n(0, 4)).ok()?;
    let date = chrono::NaiveDate::from_ymd_opt(year, n(4, 2), n(6, 2))?;
    let time = date.and_hms_opt(n(8, 2), n(10, 2), n(12, 2))?;
    Some(time.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(input: &[u8]) -> Vec<Vec<u8>> {
        let c = Gl200Codec::default();
        let mut out = Vec::new();
        let mut rest = input;
        while !rest.is_empty() {
            match c.frame(rest, true) {
                Framing::Frame { start, end } => {
                    out.push(rest[start..end].to_vec());
                    rest = &rest[end..];
                }
                Framing::Resync { discard, .. } => rest = &rest[discard..],
                _ => break,
            }
        }
        out
    }

    #[test]
    fn cuts_text_reports_at_dollar_and_recovers_missing_terminators() {
        let input = b"+ACK:GTHBD,1A0401,135790246811220,,20100214093254,11F0$\r\n\
            +RESP:GTPNA,F50201,866425030235982,GL300M,20190208124909,0BD5\
            +RESP:GTPFA,F50201,866425030235982,GL300M,20190208124849,0BD4\r\n";
        let frames = cut(input);
        assert_eq!(frames.len(), 3);
        assert!(frames[0].ends_with(b"11F0$"));
        assert!(frames[1].ends_with(b"0BD5"));
        assert!(frames[2].ends_with(b"0BD4"));
    }

    #[test]
    fn text_frame_waits_for_its_terminator() {
        let c = Gl200Codec::default();
        assert_eq!(c.frame(b"+RESP:GTFRI,02010", false), Framing::Incomplete);
        assert_eq!(c.frame(b"+RE", false), Framing::Incomplete);
        assert_eq!(c.frame(b"\r\n", false), Framing::Incomplete);
        assert!(matches!(c.frame(b"xx+RESP", false), Framing::Resync { discard: 2, .. }));
    }

    #[test]
    fn binary_frames_use_their_length_field() {
        let lgn = hex::decode("2b4c474e00ff0026fe110b07020106563454040d054905000007e4031911213905083abd0d0a").unwrap();
        let c = Gl200Codec::default();
        assert_eq!(c.frame(&lgn[..20], false), Framing::Incomplete);
        let mut two = lgn.clone();
        two.extend_from_slice(b"+RESP:GTPNA,F50201,866425030235982,GL300M,20190208124909,0BD5$");
        let frames = cut(&two);
        assert_eq!(frames[0], lgn);
        assert_eq!(frames.len(), 2);
        // A length field beyond the maximum resynchronises on the next `+`.
        let mut bad = b"+RSP\x00\x00\x00\x00\x00\xff\xff".to_vec();
        bad.extend_from_slice(b"+ACK:GTHBD,1A0401,135790246811220,,20100214093254,11F0$");
        assert_eq!(cut(&bad).len(), 1);
    }

    #[test]
    fn time_fields() {
        assert_eq!(
            parse_time14("20090214013254").map(|t| t.to_rfc3339()),
            Some("2009-02-14T01:32:54+00:00".into())
        );
        assert_eq!(parse_time14("20091314013254"), None);
        assert_eq!(parse_time14("2009021401325"), None);
    }
}
