//! Pure codecs for the trackers and OBD2 dongles Clutch ingests.
//!
//! This crate owns the wire: cutting byte streams into frames, decoding frames into
//! normalised [`Message`]s (UTC, degrees, km/h, metres, typed attributes plus the raw IO
//! map), the exact acknowledgement bytes each message requires, server-side command
//! encoding, and device-side encoders for the simulator and round-trip tests. It does
//! no I/O: no tokio, no sockets, no SQL. Every decoder is total — any bytes give a value
//! or a typed [`DecodeError`], never a panic, and no allocation is sized from a length
//! field before that length is checked against the bytes present.
//!
//! # Layout
//! - [`model`]: `Message`, `Position`, `Attributes`, `Alarm`, `Command`.
//! - [`codec`]: the [`Codec`] trait (framing + decoding + downlink), [`DeviceEncoder`],
//!   and [`decode_all`] for whole buffers.
//! - [`error`]: typed framing, decoding and encoding errors.
//! - [`checksum`]: the CRCs and byte sums the protocols use.
//! - [`obd`]: SAE J1979 mode 01 PIDs, mode 03 DTCs, ELM327 response text.
//! - one module per protocol: [`teltonika`], [`gt06`], [`h02`], [`tk103`], [`gps103`],
//!   [`gl200`], [`meitrack`], [`ruptela`], [`freematics`], [`osmand`].
//! - [`Protocol`]: the registry that names them and builds sessions.

pub mod checksum;
pub mod codec;
pub mod error;
pub mod model;
pub mod obd;

pub mod freematics;
pub mod gl200;
pub mod gps103;
pub mod gt06;
pub mod h02;
pub mod meitrack;
pub mod osmand;
pub mod ruptela;
pub mod teltonika;
pub mod tk103;

pub use codec::{Codec, DecodeContext, DeviceEncoder, Framing, Transport, decode_all};
pub use error::{DecodeError, EncodeError, FrameError};
pub use model::{Alarm, Attributes, Command, IoKey, IoMap, IoValue, Message, MessageKind, Position};

/// Every protocol Clutch speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Teltonika,
    Gt06,
    H02,
    Tk103,
    Gps103,
    Gl200,
    Meitrack,
    Ruptela,
    Freematics,
    Osmand,
}

impl Protocol {
    pub const ALL: [Protocol; 10] = [
        Protocol::Teltonika,
        Protocol::Gt06,
        Protocol::H02,
        Protocol::Tk103,
        Protocol::Gps103,
        Protocol::Gl200,
        Protocol::Meitrack,
        Protocol::Ruptela,
        Protocol::Freematics,
        Protocol::Osmand,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Teltonika => "teltonika",
            Protocol::Gt06 => "gt06",
            Protocol::H02 => "h02",
            Protocol::Tk103 => "tk103",
            Protocol::Gps103 => "gps103",
            Protocol::Gl200 => "gl200",
            Protocol::Meitrack => "meitrack",
            Protocol::Ruptela => "ruptela",
            Protocol::Freematics => "freematics",
            Protocol::Osmand => "osmand",
        }
    }

    /// The transports the protocol really uses; the first is its usual one.
    pub fn transports(self) -> &'static [Transport] {
        match self {
            Protocol::Teltonika => &[Transport::Tcp, Transport::Udp],
            Protocol::Gt06 | Protocol::Tk103 | Protocol::Gps103 | Protocol::Meitrack | Protocol::Ruptela => {
                &[Transport::Tcp]
            }
            Protocol::H02 | Protocol::Gl200 => &[Transport::Tcp, Transport::Udp],
            Protocol::Freematics => &[Transport::Udp, Transport::Tcp],
            Protocol::Osmand => &[Transport::Http],
        }
    }

    /// The port trackers of this protocol are commonly configured for.
    pub fn default_port(self) -> u16 {
        match self {
            Protocol::Teltonika => 5027,
            Protocol::Gt06 => 5023,
            Protocol::H02 => 5013,
            Protocol::Tk103 => 5002,
            Protocol::Gps103 => 5001,
            Protocol::Gl200 => 5004,
            Protocol::Meitrack => 5020,
            Protocol::Ruptela => 5046,
            Protocol::Freematics => 5170,
            Protocol::Osmand => 5055,
        }
    }

    /// A fresh decoding session for one connection (TCP) or one datagram source (UDP).
    pub fn codec(self, transport: Transport) -> Result<Box<dyn Codec>, UnsupportedTransport> {
        let codec = match self {
            Protocol::Teltonika => teltonika::codec(transport),
            Protocol::Gt06 => gt06::codec(transport),
            Protocol::H02 => h02::codec(transport),
            Protocol::Tk103 => tk103::codec(transport),
            Protocol::Gps103 => gps103::codec(transport),
            Protocol::Gl200 => gl200::codec(transport),
            Protocol::Meitrack => meitrack::codec(transport),
            Protocol::Ruptela => ruptela::codec(transport),
            Protocol::Freematics => freematics::codec(transport),
            Protocol::Osmand => osmand::codec(transport),
        };
        codec.ok_or(UnsupportedTransport {
            protocol: self,
            transport,
        })
    }

    /// A device-side encoder (what a tracker of this protocol sends).
    pub fn device_encoder(self, transport: Transport) -> Result<Box<dyn DeviceEncoder>, UnsupportedTransport> {
        let enc = match self {
            Protocol::Teltonika => teltonika::device(transport),
            Protocol::Gt06 => gt06::device(transport),
            Protocol::H02 => h02::device(transport),
            Protocol::Tk103 => tk103::device(transport),
            Protocol::Gps103 => gps103::device(transport),
            Protocol::Gl200 => gl200::device(transport),
            Protocol::Meitrack => meitrack::device(transport),
            Protocol::Ruptela => ruptela::device(transport),
            Protocol::Freematics => freematics::device(transport),
            Protocol::Osmand => osmand::device(transport),
        };
        enc.ok_or(UnsupportedTransport {
            protocol: self,
            transport,
        })
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        Protocol::ALL.into_iter().find(|p| p.name() == lower).ok_or_else(|| {
            let names: Vec<&str> = Protocol::ALL.iter().map(|p| p.name()).collect();
            format!("unknown protocol {s:?} (known: {})", names.join(", "))
        })
    }
}

/// A protocol asked for over a transport it does not use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{protocol} does not run over {}", transport.as_str())]
pub struct UnsupportedTransport {
    pub protocol: Protocol,
    pub transport: Transport,
}
