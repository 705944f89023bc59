//! The one codec trait every tracker protocol implements.
//!
//! Framing and decoding are separate steps. [`Codec::frame`] looks at the start of a
//! byte buffer and says where the next whole frame is (or that more bytes are needed,
//! or how many bytes to drop to resync). [`Codec::decode`] turns one whole frame into
//! [`Message`]s and says what to acknowledge. A codec value is one device session: it
//! may remember what the login told it (Teltonika sends the IMEI only once per TCP
//! connection), so create one per connection or datagram source.

use chrono::{DateTime, Utc};

use crate::error::{DecodeError, EncodeError, FrameError};
use crate::model::{Command, Message};

/// Which transport carries the bytes. Some protocols frame differently per transport
/// (Teltonika TCP vs UDP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Tcp,
    Udp,
    Http,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
            Transport::Http => "http",
        }
    }
}

impl std::str::FromStr for Transport {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Transport::Tcp),
            "udp" => Ok(Transport::Udp),
            "http" => Ok(Transport::Http),
            other => Err(format!("unknown transport {other:?} (expected tcp, udp or http)")),
        }
    }
}

/// What [`Codec::frame`] found at the start of the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framing {
    /// A whole frame is `buf[start..end]`; consume `end` bytes. Bytes before `start`
    /// are inter-frame filler (CR LF after a text frame, keep-alive padding) and are
    /// dropped silently.
    Frame { start: usize, end: usize },
    /// Not enough bytes yet. Incomplete is normal on a stream, not an error.
    Incomplete,
    /// The first `discard` bytes (always ≥ 1) can never start a valid frame: drop them
    /// and look again. The stream can continue.
    Resync { discard: usize, error: FrameError },
    /// The stream cannot be resynchronised (for example a binary length field larger
    /// than the protocol allows, with no frame marker to hunt for): close it.
    Fatal(FrameError),
}

/// Inputs a decoder needs from outside the bytes.
#[derive(Debug, Clone, Copy)]
pub struct DecodeContext {
    /// Server time: used in acks that carry it (H02, GT06 time sync) and for frames
    /// that carry no date.
    pub now: DateTime<Utc>,
}

impl DecodeContext {
    pub fn now() -> Self {
        DecodeContext { now: Utc::now() }
    }
}

/// One protocol session: framing, decoding and server-side encoding.
pub trait Codec: Send + std::fmt::Debug {
    /// The protocol's name, as used on the command line and in metrics.
    fn protocol(&self) -> crate::Protocol;

    /// Find the next frame at the start of `buf`. `eof` says no more bytes will come
    /// (end of a datagram, end of a file, connection closed): protocols whose last frame
    /// may lack a terminator take the rest as a frame then.
    fn frame(&self, buf: &[u8], eof: bool) -> Framing;

    /// Decode one whole frame as returned by [`Codec::frame`].
    fn decode(&mut self, frame: &[u8], ctx: &DecodeContext) -> Result<Vec<Message>, DecodeError>;

    /// The bytes to send when a device that sent `login` is refused (unknown device).
    /// `None` means: send nothing, just close (most protocols).
    fn refusal(&self, _login: &Message) -> Option<Vec<u8>> {
        None
    }

    /// Encode a downlink command for the device identified by `imei`.
    fn encode_command(&self, imei: &str, command: &Command, ctx: &DecodeContext) -> Result<Vec<u8>, EncodeError>;
}

/// Device-side encoding: what a tracker would send for a message. Used by the
/// simulator and by round-trip tests. One value per simulated device (some protocols
/// number their packets).
pub trait DeviceEncoder: Send + std::fmt::Debug {
    /// Encode `msg` as the device would send it. Messages carry the device identity in
    /// `imei` where the protocol needs it.
    fn encode(&mut self, msg: &Message) -> Result<Vec<u8>, EncodeError>;
}

/// Split `input` into frames with `codec` and decode them all, as `clutch decode` and
/// the tests do. Bytes that do not frame are reported as an error after the frames
/// before them are decoded; the caller decides whether a partial result is useful.
pub fn decode_all(codec: &mut dyn Codec, input: &[u8], ctx: &DecodeContext) -> (Vec<Message>, Vec<DecodeError>) {
    let mut messages = Vec::new();
    let mut errors = Vec::new();
    let mut rest = input;
    while !rest.is_empty() {
        match codec.frame(rest, true) {
            Framing::Frame { start, end } => {
                // A codec returning an empty or out-of-range frame is a bug; guard so a
                // bad codec cannot loop forever or panic here.
                if end == 0 || start > end || end > rest.len() {
                    errors.push(DecodeError::Framing(FrameError::new(format!(
                        "codec returned invalid frame bounds {start}..{end} for {} bytes",
                        rest.len()
                    ))));
                    break;
                }
                match codec.decode(&rest[start..end], ctx) {
                    Ok(mut m) => messages.append(&mut m),
                    Err(e) => errors.push(e),
                }
                rest = &rest[end..];
            }
            Framing::Incomplete => {
                if rest.iter().all(|b| b.is_ascii_whitespace()) {
                    break;
                }
                errors.push(DecodeError::Truncated {
                    excerpt: crate::error::hex_excerpt(rest),
                });
                break;
            }
            Framing::Resync { discard, error } => {
                errors.push(DecodeError::Framing(error));
                rest = &rest[discard.clamp(1, rest.len())..];
            }
            Framing::Fatal(error) => {
                errors.push(DecodeError::Framing(error));
                break;
            }
        }
    }
    (messages, errors)
}
