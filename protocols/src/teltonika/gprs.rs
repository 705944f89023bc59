//! GPRS messages: codec 12 (commands and responses, camera sub-protocol), codec 13
//! (responses with a timestamp), codec 14 (responses addressed by IMEI) and codec 15
//! (serial data with timestamp and IMEI, FMX6), plus the codec 12 command payloads
//! the server sends.
//!
//! Layout of the data field: codec, quantity, then per message a type byte, a u32
//! size and the payload, then the quantity again. Type 0x05 is a command
//! (server → device), 0x06 a response, 0x0D (codec 12) the camera sub-protocol,
//! 0x11 (codec 14) "IMEI mismatch", 0x0B (codec 15) forwarded serial data.

use super::avl::RecordError;
use super::wire;
use crate::error::EncodeError;
use crate::model::{Command, IoMap, IoValue, Message, MessageKind};

pub const CODEC_12: u8 = 0x0C;
pub const CODEC_13: u8 = 0x0D;
pub const CODEC_14: u8 = 0x0E;
pub const CODEC_15: u8 = 0x0F;

pub const TYPE_COMMAND: u8 = 0x05;
pub const TYPE_RESPONSE: u8 = 0x06;
pub const TYPE_CAMERA: u8 = 0x0D;
pub const TYPE_IMEI_MISMATCH: u8 = 0x11;

/// Decode the messages of a GPRS packet (`body` is the data field between the two
/// quantities). `None` when `codec` is not a GPRS codec.
pub fn decode(codec: u8, quantity: u8, mut body: &[u8]) -> Option<Result<Vec<Message>, RecordError>> {
    if !matches!(codec, CODEC_12 | CODEC_13 | CODEC_14 | CODEC_15) {
        return None;
    }
    let n = usize::from(quantity);
    // Each message is at least a type byte and a size.
    let mut out = Vec::with_capacity(n.min(body.len() / 5));
    for i in 0..n {
        match message(codec, &mut body) {
            Ok(m) => out.push(m),
            Err(wire::Short) => return Some(Err(RecordError::Short { record: i })),
        }
    }
    if !body.is_empty() {
        return Some(Err(RecordError::Trailing { extra: body.len() }));
    }
    Some(Ok(out))
}

fn message(codec: u8, b: &mut &[u8]) -> Result<Message, wire::Short> {
    let kind_byte = wire::u8(b)?;
    let size = usize::try_from(wire::u32(b)?).map_err(|_| wire::Short)?;
    let mut payload = wire::bytes(b, size)?;

    let mut io = IoMap::with_capacity(4);
    io.push_name("codec", IoValue::U64(u64::from(codec)));
    io.push_name("type", IoValue::U64(u64::from(kind_byte)));

    // Codecs 13 and 15 prefix the payload with a u32 timestamp (seconds), codecs 14
    // and 15 with the IMEI as 8 BCD bytes; both count in the size.
    if matches!(codec, CODEC_13 | CODEC_15) {
        let ts = wire::u32(&mut payload)?;
        io.push_name("timestamp", IoValue::U64(u64::from(ts)));
    }
    if matches!(codec, CODEC_14 | CODEC_15) {
        let imei = wire::array::<8>(&mut payload)?;
        io.push_name("imei", IoValue::Text(hex::encode(imei)));
    }

    let kind = match (codec, kind_byte) {
        (CODEC_13, _) | (CODEC_12 | CODEC_14, TYPE_RESPONSE) => MessageKind::CommandResponse,
        _ => MessageKind::Other,
    };
    let mut msg = Message::new(kind).with_type(format!("0x{kind_byte:02X}"));

    if codec == CODEC_12 && kind_byte == TYPE_CAMERA {
        // Photo announcements and chunks: kept raw for whoever assembles images.
        if let Some(sub) = payload.first() {
            io.push_name("subtype", IoValue::U64(u64::from(*sub)));
        }
        io.push_name("payload", IoValue::Bytes(payload.to_vec()));
    } else if !(codec == CODEC_14 && kind_byte == TYPE_IMEI_MISMATCH) {
        let text = text_or_hex(payload);
        if let Some(axles) = axle_weights(&text) {
            for (name, v) in axles {
                io.push_name(name, IoValue::F64(v));
            }
        }
        if codec == CODEC_13 && text.starts_with("GTSL") {
            // Tachograph/driver-card login report: the fifth field is the card id.
            if let Some(id) = text.split('|').nth(4).filter(|s| !s.is_empty()) {
                msg.attributes.driver_id = Some(id.to_owned());
            }
        }
        msg.result = Some(text);
    }
    msg.attributes.io = io;
    Ok(msg)
}

/// Printable payloads as trimmed text, anything else as lower-case hex (the reference
/// server's rule, so results compare across servers).
fn text_or_hex(payload: &[u8]) -> String {
    if wire::is_printable(payload) {
        String::from_utf8_lossy(payload).trim().to_owned()
    } else {
        hex::encode(payload)
    }
}

/// `UUUUww<8 axle weights>;<load truck>;<load trailer>;<total truck>;<total trailer>;SSS`
/// from on-board weighing scales behind the RS232 port.
fn axle_weights(text: &str) -> Option<Vec<(String, f64)>> {
    let inner = text.strip_prefix("UUUUww")?.strip_suffix("SSS")?;
    let values: Vec<f64> = inner
        .split(';')
        .filter(|s| !s.is_empty())
        .map(|s| s.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .ok()?;
    if values.len() < 12 {
        return None;
    }
    let names = (1..=8).map(|i| format!("axle{i}")).chain(
        ["loadTruck", "loadTrailer", "totalTruck", "totalTrailer"]
            .into_iter()
            .map(str::to_owned),
    );
    Some(names.zip(values).collect())
}

/// The codec 12 data field (codec through trailing quantity) of one message.
pub fn data_field(codec: u8, kind: u8, payload: &[u8]) -> Result<Vec<u8>, EncodeError> {
    let size = u32::try_from(payload.len()).map_err(|_| EncodeError::Invalid {
        field: "payload",
        reason: format!("{} bytes do not fit a u32 size", payload.len()),
    })?;
    let mut d = Vec::with_capacity(payload.len() + 8);
    d.extend_from_slice(&[codec, 1, kind]);
    d.extend_from_slice(&size.to_be_bytes());
    d.extend_from_slice(payload);
    d.push(1);
    Ok(d)
}

/// What the server sends for `command`, as the codec 12 payload.
///
/// * `Custom`: text that is entirely pairs of hex digits is sent as those raw bytes
///   (binary commands such as CAN or camera requests); anything else is a text
///   command and gets the CR LF the firmware's command parser expects.
/// * `EngineStop` / `EngineResume`: `setdigout 1` / `setdigout 0`, i.e. DOUT1 drives
///   the immobiliser relay, the usual FMB wiring and what Traccar sends. Installations
///   that wire the relay to another output use `OutputControl` or `Custom`.
/// * `OutputControl { index, active }`: `setdigout` with `?` ("leave unchanged") for
///   the other outputs, e.g. index 2 → `setdigout ?1`.
/// * `Locate`: `getgps`; `Reboot`: `cpureset`.
pub fn command_payload(command: &Command) -> Result<Vec<u8>, EncodeError> {
    let text = match command {
        Command::Custom { text } => {
            if is_hex(text) {
                return hex::decode(text).map_err(|e| EncodeError::Invalid {
                    field: "text",
                    reason: e.to_string(),
                });
            }
            text.clone()
        }
        Command::EngineStop => "setdigout 1".to_owned(),
        Command::EngineResume => "setdigout 0".to_owned(),
        Command::OutputControl { index, active } => {
            if !(1..=4).contains(index) {
                return Err(EncodeError::Invalid {
                    field: "index",
                    reason: format!("Teltonika devices have digital outputs 1–4, not {index}"),
                });
            }
            let mut pattern: String = "?".repeat(usize::from(*index - 1));
            pattern.push(if *active { '1' } else { '0' });
            format!("setdigout {pattern}")
        }
        Command::Locate => "getgps".to_owned(),
        Command::Reboot => "cpureset".to_owned(),
        other => {
            return Err(EncodeError::Unsupported {
                protocol: "teltonika",
                what: format!("{other:?}"),
            });
        }
    };
    let mut payload = text.into_bytes();
    payload.extend_from_slice(b"\r\n");
    Ok(payload)
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.len().is_multiple_of(2) && s.bytes().all(|c| c.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_custom_text_is_sent_raw_and_text_gets_crlf() {
        let raw = command_payload(&Command::Custom {
            text: "03030000000185E8".into(),
        })
        .expect("hex");
        assert_eq!(raw, [0x03, 0x03, 0, 0, 0, 0x01, 0x85, 0xE8]);
        let text = command_payload(&Command::Custom { text: "getinfo".into() }).expect("text");
        assert_eq!(text, b"getinfo\r\n");
        let out = command_payload(&Command::OutputControl { index: 2, active: true }).expect("output");
        assert_eq!(out, b"setdigout ?1\r\n");
    }

    #[test]
    fn axle_weight_reports_parse_into_named_values() {
        let v = axle_weights("UUUUww06.4;04.2;00.0;00.0;00.0;00.0;00.0;00.0;01.3;00.0;10.7;00.0;SSS").expect("axles");
        assert_eq!(v.len(), 12);
        assert_eq!(v[0], ("axle1".to_owned(), 6.4));
        assert_eq!(v[10], ("totalTruck".to_owned(), 10.7));
        assert!(axle_weights("hello").is_none());
    }
}
