//! Recognising downlink commands and answering them as the device would.
//!
//! The protocols crate encodes commands server-side but has no device-side command
//! decoder, so a device recognises a command by its envelope (a small per-protocol table
//! below) and answers with the protocol's command response from its
//! [`protocols::DeviceEncoder`]. Bytes that are neither the awaited ack nor a command
//! envelope are garbage: logged, counted, and ignored.
//!
//! | protocol | command envelope |
//! |---|---|
//! | teltonika | `00000000` length, codec `0C`, type `05` |
//! | gt06 | `78 78 <len> 80 … 0D 0A` |
//! | meitrack | `@@` (after the awaited ack was ruled out) |
//! | ruptela | `<u16 len> <command ≥ 101> … <CRC-16/KERMIT>`, CRC checked (100 is the ack) |
//! | h02 | `*HQ,` |
//! | tk103 / gps103 | `(` / `**,imei:` |
//! | gl200 | `AT+GT` |

use protocols::{Message, MessageKind, Protocol};

/// A recognised command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downlink {
    /// The protocol's name for the reply type, when it has one.
    pub reply_type: Option<String>,
    pub text: String,
}

pub fn recognise(p: Protocol, rx: &[u8]) -> Option<Downlink> {
    let text = || String::from_utf8_lossy(rx).trim().to_string();
    match p {
        Protocol::Teltonika if rx.len() >= 11 && rx[..4] == [0, 0, 0, 0] && rx[8] == 0x0C && rx[10] == 0x05 => {
            let body = rx.get(15..rx.len().saturating_sub(5)).unwrap_or_default();
            Some(Downlink {
                reply_type: None,
                text: String::from_utf8_lossy(body).into_owned(),
            })
        }
        Protocol::Gt06 if gt06_command(rx) => Some(Downlink {
            reply_type: None,
            text: "OK".into(),
        }),
        Protocol::Meitrack if rx.starts_with(b"@@") => {
            let t = text();
            let cmd = t.split(',').nth(2).filter(|c| c.len() == 3).map(str::to_owned);
            Some(Downlink {
                reply_type: cmd.clone(),
                text: cmd.map_or_else(|| "OK".into(), |c| format!("{c},OK")),
            })
        }
        Protocol::Ruptela if ruptela_command(rx) => {
            let (ty, text) = if rx[2] == 117 { ("17", "1") } else { ("7", "OK") };
            Some(Downlink {
                reply_type: Some(ty.into()),
                text: text.into(),
            })
        }
        Protocol::H02 if rx.starts_with(b"*HQ,") => Some(Downlink {
            reply_type: None,
            text: text(),
        }),
        Protocol::Tk103 if rx.starts_with(b"(") => Some(Downlink {
            reply_type: None,
            text: text(),
        }),
        Protocol::Gps103 if rx.starts_with(b"**,imei:") => Some(Downlink {
            reply_type: None,
            text: text(),
        }),
        Protocol::Gl200 if rx.starts_with(b"AT+GT") => Some(Downlink {
            reply_type: None,
            text: text(),
        }),
        _ => None,
    }
}

/// `78 78 <len> 80 … <crc> 0D 0A` with the length landing on the terminator.
fn gt06_command(rx: &[u8]) -> bool {
    rx.len() >= 4
        && rx[..2] == [0x78, 0x78]
        && rx[3] == 0x80
        && rx.get(usize::from(rx[2]) + 3..usize::from(rx[2]) + 5) == Some(&b"\r\n"[..])
}

/// `<u16 len> <command> <payload> <CRC-16/KERMIT>`, whole and checked, command ≥ 101.
fn ruptela_command(rx: &[u8]) -> bool {
    if rx.len() < 5 || rx[2] <= 100 {
        return false;
    }
    let len = usize::from(u16::from_be_bytes([rx[0], rx[1]]));
    let Some(body) = rx.get(2..2 + len) else { return false };
    let Some(crc) = rx.get(2 + len..4 + len) else {
        return false;
    };
    protocols::checksum::crc16_kermit(body).to_be_bytes() == crc
}

/// The command response message a device sends for `d`.
pub fn response(id: &str, d: &Downlink) -> Message {
    let mut m = Message::new(MessageKind::CommandResponse).with_imei(id);
    m.message_type = d.reply_type.clone();
    m.result = Some(d.text.clone());
    m
}

/// What a device answers to a command that came over MQTT (`result` of the reply), and the
/// new report interval when the command sets one.
pub fn mqtt_result(cmd: &protocols::Command, last: Option<&protocols::Position>) -> (String, Option<u32>) {
    use protocols::Command as C;
    match cmd {
        C::EngineStop => ("engine stopped".into(), None),
        C::EngineResume => ("engine resumed".into(), None),
        C::Locate => (
            last.map_or_else(
                || "no fix yet".into(),
                |p| {
                    format!(
                        "position {:.6},{:.6} at {}",
                        p.latitude,
                        p.longitude,
                        p.time.to_rfc3339()
                    )
                },
            ),
            None,
        ),
        C::SetInterval { seconds } if *seconds > 0 => (format!("interval set to {seconds} s"), Some(*seconds)),
        C::SetInterval { .. } => ("error: interval must be at least 1 s".into(), None),
        C::Reboot => ("rebooting".into(), None),
        C::OutputControl { index, active } => (format!("output {index} {}", if *active { "on" } else { "off" }), None),
        C::AlarmArm => ("alarm armed".into(), None),
        C::AlarmDisarm => ("alarm disarmed".into(), None),
        C::RequestPhoto => ("error: no camera attached".into(), None),
        C::Custom { text } => (format!("{text}: OK"), None),
    }
}
