//! Teltonika FMB/FMC/FMM/FMx6/GH trackers (PROTOCOLS.md §1): TCP and UDP.
//!
//! # What this module owns
//! * **TCP framing.** A stream carries three kinds of frame: the IMEI packet
//!   (`u16` length + ASCII IMEI), the AVL packet (`00000000`, `u32` data length,
//!   data, `u32` CRC field = `0000` + CRC-16/ARC of the data) and a lone `0xFF`
//!   keep-alive. A run of `0xFF` bytes followed by another frame is filler before that
//!   frame (older firmwares prefix the IMEI packet with it); `0xFF` with nothing after
//!   it is a keep-alive frame and decodes to a `Heartbeat`. An IMEI length above
//!   [`MAX_IMEI_LEN`], an AVL preamble that is not four zero bytes or a data length
//!   above [`MAX_DATA_LEN`] is `Fatal`: a binary stream without frame markers cannot be
//!   resynchronised, and the device reconnects and resends what was not acknowledged.
//! * **UDP framing.** One datagram = `u16` length, `u16` packet id, packet type,
//!   AVL packet id, `u16`-prefixed IMEI, then the data field (no CRC).
//! * **Sessions.** A TCP codec remembers the IMEI from the login and sets `imei` on
//!   every later message of the connection; a UDP codec takes it from each datagram.
//! * **Acknowledgements.** IMEI packet → `01` (refusal → `00`, see
//!   [`Codec::refusal`]); AVL packet (codecs 7, 8, 8E, 16) → the record count as a
//!   4-byte big-endian integer over TCP, `0005 <packet id> 01 <AVL packet id> <count>`
//!   over UDP; codec 12/13/14/15 messages, keep-alives and unknown codecs get nothing.
//!   The UDP reply **echoes the datagram's packet id**, as Teltonika's protocol
//!   documentation specifies and devices check; Traccar writes `0000` there (its UDP
//!   test is disabled). [`UdpAckPacketId::Zero`] reproduces Traccar for a deployment
//!   that needs byte parity with it.
//! * **Integrity.** The TCP CRC is checked (Traccar does not): a mismatch is
//!   [`DecodeError::Checksum`] and nothing is acknowledged, so the device resends.
//! * **Decoding** (`avl`, [`gprs`]): codecs 8, 8E (with its variable-length group),
//!   16 (u16 ids, generation type), 7 (GH3000), the optional 16-byte IO group some
//!   installations enable (detected: see `avl::with_extended_retry`), and GPRS
//!   messages: codec 12 (type 0x06 response → `CommandResponse` with `result`;
//!   0x0D camera → `Other` with the raw payload; weighing-scale `UUUUww…SSS` replies
//!   also as named axle values), 13 (timestamped response; its timestamp in `io`;
//!   `GTSL` tachograph reports also set `driver_id`), 14 (IMEI-addressed response),
//!   15 (serial data). Codec 7 records without a GPS block repeat the session's last
//!   fix (or 0, 0) with `valid = false`, so their IO values are not lost.
//! * **IO mapping.** Every raw value is kept in `attributes.io` under its numeric id
//!   (fixed groups as `U64`, variable-length values as `Bytes`, shown as hex). The
//!   FMB table's ids with a typed home are mapped on top (ignition 239, motion 240,
//!   odometer 16, power 66, battery 67, CAN 81–89, OBD-II block 30–60 and 389/390,
//!   green driving 253 and the other alarm ids, iButton 78, axes 17–19, hdop 182,
//!   GSM signal 21, VIN 256, DTCs 281, BLE tag and beacon lists as Traccar names
//!   them; see `avl::map_fmb_1` and its siblings). `event` is the event IO id
//!   (absent for periodic records, id 0). The record priority goes into `io` as
//!   `"priority"` only when it is not 0 (low), to keep a string allocation off the
//!   common path; codec 16's generation type is `"generation_type"`.
//! * **Messages.** One AVL packet → one `Position` message holding all its records
//!   (alarms ride on each fix's `attributes.alarms`: a batch mixes alarm and periodic
//!   records, and one ack covers them all). `message_type` is the codec (`"8"`, `"8E"`,
//!   `"16"`, `"7"`) for AVL packets and the GPRS type byte (`"0x06"`) for codec 12–15.
//! * **Downlink** ([`Codec::encode_command`]): codec 12 type 0x05 commands, see
//!   [`gprs::command_payload`] for the text each `Command` becomes.
//! * **Device side** ([`TeltonikaDevice`]): IMEI login, AVL batches in codec 8, 8E or
//!   16, codec 12 responses, keep-alive, UDP datagrams; [`sample_packet`] builds
//!   realistic multi-record packets for benches.

mod avl;
mod device;
pub mod gprs;
mod wire;

pub use avl::RecordError;
pub use device::{AvlCodec, TeltonikaDevice, sample_packet, sample_position};

use crate::codec::{Codec, DecodeContext, DeviceEncoder, Framing, Transport};
use crate::error::{DecodeError, EncodeError, FrameError};
use crate::model::{Command, IoMap, IoValue, Message, MessageKind};

/// Longest identity accepted in an IMEI packet or datagram header. IMEIs are 15
/// digits; the margin admits odd firmwares without letting a garbage length field
/// make the framer wait for kilobytes.
pub const MAX_IMEI_LEN: usize = 32;

/// Largest AVL data field accepted. Devices send at most 1280 bytes of records; camera
/// chunks over codec 12 are about 2 KiB. 64 KiB leaves room for long batches from
/// simulators and benches while bounding what a bad length field can make us buffer.
pub const MAX_DATA_LEN: usize = 64 * 1024;

/// A fresh session for one TCP connection or one UDP source.
pub fn codec(transport: Transport) -> Option<Box<dyn Codec>> {
    match transport {
        Transport::Tcp | Transport::Udp => Some(Box::new(TeltonikaCodec::new(transport))),
        Transport::Http => None,
    }
}

/// A simulated device sending codec 8E (see [`TeltonikaDevice::new`] for 8 and 16).
pub fn device(transport: Transport) -> Option<Box<dyn DeviceEncoder>> {
    match transport {
        Transport::Tcp | Transport::Udp => Some(Box::new(TeltonikaDevice::new(transport, AvlCodec::Codec8E))),
        Transport::Http => None,
    }
}

/// What the UDP acknowledgement carries in its packet-id field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum UdpAckPacketId {
    /// The datagram's own packet id (Teltonika's documentation; devices match it).
    #[default]
    Echo,
    /// Zeros, as Traccar writes.
    Zero,
}

/// One Teltonika session.
#[derive(Debug, Clone)]
pub struct TeltonikaCodec {
    transport: Transport,
    imei: Option<String>,
    udp_ack: UdpAckPacketId,
    last_fix: Option<avl::LastFix>,
}

/// How an AVL packet is acknowledged.
#[derive(Clone, Copy)]
enum Ack {
    Tcp,
    Udp { packet_id: u16, avl_packet_id: u8 },
}

impl TeltonikaCodec {
    pub fn new(transport: Transport) -> Self {
        TeltonikaCodec {
            transport,
            imei: None,
            udp_ack: UdpAckPacketId::default(),
            last_fix: None,
        }
    }

    /// Choose what the UDP acknowledgement's packet-id field carries.
    pub fn with_udp_ack(mut self, policy: UdpAckPacketId) -> Self {
        self.udp_ack = policy;
        self
    }

    /// The IMEI this session has seen, if any.
    pub fn imei(&self) -> Option<&str> {
        self.imei.as_deref()
    }

    fn ack_bytes(&self, ack: Ack, count: u8) -> Vec<u8> {
        match ack {
            Ack::Tcp => u32::from(count).to_be_bytes().to_vec(),
            Ack::Udp {
                packet_id,
                avl_packet_id,
            } => {
                let [p0, p1] = match self.udp_ack {
                    UdpAckPacketId::Echo => packet_id.to_be_bytes(),
                    UdpAckPacketId::Zero => [0, 0],
                };
                vec![0x00, 0x05, p0, p1, 0x01, avl_packet_id, count]
            }
        }
    }

    fn decode_tcp(&mut self, frame: &[u8]) -> Result<Vec<Message>, DecodeError> {
        match frame {
            [0xFF] => Ok(vec![
                self.session(Message::new(MessageKind::Heartbeat).with_type("keepalive")),
            ]),
            [0, 0, ..] => self.decode_tcp_avl(frame),
            [] | [_] => Err(DecodeError::truncated(frame)),
            _ => self.decode_login(frame),
        }
    }

    fn decode_login(&mut self, frame: &[u8]) -> Result<Vec<Message>, DecodeError> {
        let mut b = frame;
        let len = usize::from(wire::u16(&mut b).map_err(|_| DecodeError::truncated(frame))?);
        if b.len() != len {
            return Err(DecodeError::Length {
                declared: len + 2,
                actual: frame.len(),
                excerpt: crate::error::hex_excerpt(frame),
            });
        }
        let imei = identity(b, frame)?;
        self.imei = Some(imei.clone());
        Ok(vec![
            Message::new(MessageKind::Login)
                .with_imei(imei)
                .with_type("imei")
                .with_ack(vec![0x01]),
        ])
    }

    fn decode_tcp_avl(&mut self, frame: &[u8]) -> Result<Vec<Message>, DecodeError> {
        let Some((&[_, _, p2, p3, l0, l1, l2, l3], rest)) = frame.split_first_chunk::<8>() else {
            return Err(DecodeError::truncated(frame));
        };
        if p2 != 0 || p3 != 0 {
            return Err(DecodeError::invalid(
                "preamble",
                "an AVL packet starts with four zero bytes",
                frame,
            ));
        }
        let data_len = u32::from_be_bytes([l0, l1, l2, l3]);
        let declared = usize::try_from(data_len).unwrap_or(usize::MAX).saturating_add(12);
        if frame.len() != declared {
            return Err(DecodeError::Length {
                declared,
                actual: frame.len(),
                excerpt: crate::error::hex_excerpt(frame),
            });
        }
        let Some((data, &[c0, c1, c2, c3])) = rest.split_last_chunk::<4>() else {
            return Err(DecodeError::truncated(frame));
        };
        let carried = u32::from_be_bytes([c0, c1, c2, c3]);
        let computed = wire::crc16(data);
        if carried != u32::from(computed) {
            return Err(DecodeError::checksum(
                format!("{computed:08x}"),
                format!("{carried:08x}"),
                frame,
            ));
        }
        self.decode_data(frame, data, Ack::Tcp)
    }

    fn decode_udp(&mut self, frame: &[u8]) -> Result<Vec<Message>, DecodeError> {
        let short = |_| DecodeError::truncated(frame);
        let mut b = frame;
        let len = usize::from(wire::u16(&mut b).map_err(short)?);
        if b.len() != len {
            return Err(DecodeError::Length {
                declared: len + 2,
                actual: frame.len(),
                excerpt: crate::error::hex_excerpt(frame),
            });
        }
        let packet_id = wire::u16(&mut b).map_err(short)?;
        let _packet_type = wire::u8(&mut b).map_err(short)?;
        let avl_packet_id = wire::u8(&mut b).map_err(short)?;
        let imei_len = usize::from(wire::u16(&mut b).map_err(short)?);
        let imei = wire::bytes(&mut b, imei_len).map_err(short)?;
        self.imei = Some(identity(imei, frame)?);
        self.decode_data(
            frame,
            b,
            Ack::Udp {
                packet_id,
                avl_packet_id,
            },
        )
    }

    /// The data field (codec id through the trailing count), shared by TCP and UDP.
    fn decode_data(&mut self, frame: &[u8], data: &[u8], ack: Ack) -> Result<Vec<Message>, DecodeError> {
        let [codec, count, body @ .., trailing] = data else {
            return Err(DecodeError::invalid(
                "data field",
                format!("{} bytes; codec id and two record counts need 3", data.len()),
                frame,
            ));
        };
        if trailing != count {
            return Err(DecodeError::invalid(
                "record count",
                format!("{count} before the records, {trailing} after"),
                frame,
            ));
        }
        let bad = |e: RecordError| DecodeError::invalid("records", e.to_string(), frame);

        if let Some(result) = avl::decode(*codec, *count, body, &mut self.last_fix) {
            // Fields set in place: each builder method moves the ~650-byte Message,
            // which shows on packets of few records.
            let mut msg = Message::new(MessageKind::Position);
            msg.positions = result.map_err(bad)?;
            msg.message_type = Some(codec_name(*codec).to_owned());
            msg.ack = Some(self.ack_bytes(ack, *count));
            msg.imei.clone_from(&self.imei);
            return Ok(vec![msg]);
        }
        let mut messages = match gprs::decode(*codec, *count, body) {
            Some(result) => result.map_err(bad)?,
            // An unknown codec with a valid envelope: kept raw, not acknowledged (an
            // ack would tell the device data we could not read is stored).
            None => Vec::new(),
        };
        if messages.is_empty() {
            let mut m = Message::new(MessageKind::Other).with_type(format!("0x{codec:02X}"));
            let mut io = IoMap::with_capacity(2);
            io.push_name("codec", IoValue::U64(u64::from(*codec)));
            io.push_name("data", IoValue::Bytes(data.to_vec()));
            m.attributes.io = io;
            messages.push(m);
        }
        Ok(messages.into_iter().map(|m| self.session(m)).collect())
    }

    fn session(&self, mut msg: Message) -> Message {
        msg.imei.clone_from(&self.imei);
        msg
    }
}

fn codec_name(codec: u8) -> &'static str {
    match codec {
        0x07 => "7",
        0x08 => "8",
        0x8E => "8E",
        0x10 => "16",
        _ => "?",
    }
}

/// An IMEI (or other identity) as sent in a login or datagram header.
fn identity(b: &[u8], frame: &[u8]) -> Result<String, DecodeError> {
    if b.is_empty() || b.len() > MAX_IMEI_LEN || !b.iter().all(u8::is_ascii_graphic) {
        return Err(DecodeError::invalid(
            "imei",
            format!(
                "expected 1–{MAX_IMEI_LEN} printable ASCII characters, got {} bytes",
                b.len()
            ),
            frame,
        ));
    }
    Ok(String::from_utf8_lossy(b).into_owned())
}

/// `buf[..total]` when it is all there; with `eof`, whatever is there (decoding then
/// reports the precise length error); otherwise wait.
fn whole(buf: &[u8], total: usize, eof: bool) -> Framing {
    if buf.len() >= total {
        Framing::Frame { start: 0, end: total }
    } else if eof && !buf.is_empty() {
        Framing::Frame {
            start: 0,
            end: buf.len(),
        }
    } else {
        Framing::Incomplete
    }
}

fn frame_tcp(buf: &[u8], eof: bool) -> Framing {
    let ff = buf.iter().take_while(|&&b| b == 0xFF).count();
    if ff == 0 {
        return frame_tcp_at(buf, eof);
    }
    if ff == buf.len() {
        // Keep-alive: one heartbeat for the run, the rest is filler.
        return Framing::Frame { start: ff - 1, end: ff };
    }
    match frame_tcp_at(buf.get(ff..).unwrap_or_default(), eof) {
        Framing::Frame { start, end } => Framing::Frame {
            start: ff + start,
            end: ff + end,
        },
        Framing::Resync { discard, error } => Framing::Resync {
            discard: ff + discard,
            error,
        },
        other => other,
    }
}

fn frame_tcp_at(buf: &[u8], eof: bool) -> Framing {
    let Some(&[h0, h1]) = buf.first_chunk::<2>() else {
        return whole(buf, 2, eof);
    };
    let first = usize::from(u16::from_be_bytes([h0, h1]));
    if first != 0 {
        if first > MAX_IMEI_LEN {
            return Framing::Fatal(FrameError::new(format!(
                "IMEI packet length {first} exceeds {MAX_IMEI_LEN}: not a Teltonika stream"
            )));
        }
        return whole(buf, first + 2, eof);
    }
    let Some(&[_, _, p2, p3, l0, l1, l2, l3]) = buf.first_chunk::<8>() else {
        return whole(buf, 8, eof);
    };
    if p2 != 0 || p3 != 0 {
        return Framing::Fatal(FrameError::new(format!(
            "AVL preamble {:02x}{:02x}{p2:02x}{p3:02x} is not four zero bytes",
            h0, h1
        )));
    }
    let data_len = usize::try_from(u32::from_be_bytes([l0, l1, l2, l3])).unwrap_or(usize::MAX);
    if data_len > MAX_DATA_LEN {
        return Framing::Fatal(FrameError::new(format!(
            "AVL data length {data_len} exceeds {MAX_DATA_LEN}"
        )));
    }
    whole(buf, data_len + 12, eof)
}

fn frame_udp(buf: &[u8], eof: bool) -> Framing {
    match buf.first_chunk::<2>() {
        Some(&[h0, h1]) => whole(buf, usize::from(u16::from_be_bytes([h0, h1])) + 2, eof),
        None => whole(buf, 2, eof),
    }
}

/// The TCP envelope around a data field: preamble, length, data, CRC field.
pub(crate) fn tcp_envelope(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 12);
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&u32::from(wire::crc16(data)).to_be_bytes());
    out
}

impl Codec for TeltonikaCodec {
    fn protocol(&self) -> crate::Protocol {
        crate::Protocol::Teltonika
    }

    fn frame(&self, buf: &[u8], eof: bool) -> Framing {
        match self.transport {
            Transport::Udp => frame_udp(buf, eof),
            _ => frame_tcp(buf, eof),
        }
    }

    fn decode(&mut self, frame: &[u8], _ctx: &DecodeContext) -> Result<Vec<Message>, DecodeError> {
        match self.transport {
            Transport::Udp => self.decode_udp(frame),
            _ => self.decode_tcp(frame),
        }
    }

    fn refusal(&self, login: &Message) -> Option<Vec<u8>> {
        (self.transport == Transport::Tcp && login.kind == MessageKind::Login).then(|| vec![0x00])
    }

    /// A codec 12 command frame (type 0x05) in the TCP envelope. Sent as is over UDP
    /// too, as Traccar does: the GPRS command channel is the same on both.
    fn encode_command(&self, _imei: &str, command: &Command, _ctx: &DecodeContext) -> Result<Vec<u8>, EncodeError> {
        let payload = gprs::command_payload(command)?;
        let data = gprs::data_field(gprs::CODEC_12, gprs::TYPE_COMMAND, &payload)?;
        if data.len() > MAX_DATA_LEN {
            return Err(EncodeError::Invalid {
                field: "command",
                reason: format!("{} bytes exceed the {MAX_DATA_LEN}-byte frame cap", data.len()),
            });
        }
        Ok(tcp_envelope(&data))
    }
}
