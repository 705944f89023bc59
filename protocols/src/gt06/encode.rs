//! Server commands (packet 0x80) and the device side: what a GT06 tracker sends.

use chrono::{DateTime, Datelike, Timelike, Utc};

use super::packet;
use crate::codec::DeviceEncoder;
use crate::error::EncodeError;
use crate::model::{Alarm, Attributes, Command, IoValue, Message, MessageKind, Position};

const PROTOCOL: &str = "gt06";

/// Longest command text a standard 0x80 packet holds: length byte
/// = protocol + command length + flag (4) + text + serial + CRC ≤ 255.
const MAX_COMMAND_TEXT: usize = 255 - 10;

pub(super) fn command_text(command: &Command) -> Result<&str, EncodeError> {
    Ok(match command {
        Command::EngineStop => "Relay,1#",
        Command::EngineResume => "Relay,0#",
        // Concox SMS/server command set [outside Traccar — verify per model].
        Command::Locate => "WHERE#",
        Command::Reboot => "RESET#",
        Command::Custom { text } => text,
        other => {
            return Err(EncodeError::Unsupported {
                protocol: PROTOCOL,
                what: format!("{other:?}"),
            });
        }
    })
}

pub(super) fn check_command_text(text: &str) -> Result<(), EncodeError> {
    if !text.is_ascii() {
        return Err(EncodeError::Invalid {
            field: "text",
            reason: "GT06 commands are ASCII".into(),
        });
    }
    if text.len() > MAX_COMMAND_TEXT {
        return Err(EncodeError::Invalid {
            field: "text",
            reason: format!("{} bytes, at most {MAX_COMMAND_TEXT} fit a 0x80 packet", text.len()),
        });
    }
    Ok(())
}

/// `78 78 <len> 80 <4 + text len> 00000000 <text> <serial> <crc> 0D 0A`.
pub(super) fn command_packet(text: &str, serial: u16) -> Vec<u8> {
    let mut content = Vec::with_capacity(5 + text.len());
    content.push(u8::try_from(4 + text.len()).unwrap_or(u8::MAX));
    content.extend_from_slice(&[0, 0, 0, 0]);
    content.extend_from_slice(text.as_bytes());
    packet(false, 0x80, &content, serial)
}

/// A simulated GT06 tracker: numbers its packets from 1, as devices do after power-up.
#[derive(Debug)]
pub struct Gt06Device {
    serial: u16,
}

impl Default for Gt06Device {
    fn default() -> Self {
        Self::new()
    }
}

impl Gt06Device {
    pub fn new() -> Self {
        Gt06Device { serial: 1 }
    }

    fn next_serial(&mut self) -> u16 {
        let s = self.serial;
        self.serial = self.serial.wrapping_add(1);
        s
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> EncodeError {
    EncodeError::Invalid {
        field,
        reason: reason.into(),
    }
}

fn push_date(v: &mut Vec<u8>, t: DateTime<Utc>) -> Result<(), EncodeError> {
    let year = u8::try_from(t.year() - 2000).map_err(|_| invalid("time", "GT06 dates cover 2000–2255"))?;
    // Month, day and clock fields are always below 60, so the casts are exact.
    v.extend_from_slice(&[
        year,
        t.month() as u8,
        t.day() as u8,
        t.hour() as u8,
        t.minute() as u8,
        t.second() as u8,
    ]);
    Ok(())
}

fn coord(deg: f64, field: &'static str, max: f64) -> Result<u32, EncodeError> {
    if !deg.is_finite() || deg.abs() > max {
        return Err(invalid(field, format!("{deg} out of range")));
    }
    // |deg| ≤ 180 → ≤ 324e6, inside u32.
    Ok((deg.abs() * 1_800_000.0).round() as u32)
}

/// Date, GPS info byte, latitude, longitude, speed, course/status word.
fn push_gps(v: &mut Vec<u8>, p: &Position, ignition: Option<bool>) -> Result<(), EncodeError> {
    push_date(v, p.time)?;
    let sats = p.satellites.unwrap_or(0).min(15);
    v.push(0xC0 | sats);
    v.extend_from_slice(&coord(p.latitude, "latitude", 90.0)?.to_be_bytes());
    v.extend_from_slice(&coord(p.longitude, "longitude", 180.0)?.to_be_bytes());
    let speed = p.speed_kmh.unwrap_or(0.0);
    v.push(if speed.is_finite() {
        speed.round().clamp(0.0, 255.0) as u8
    } else {
        0
    });
    let course = p.course_deg.unwrap_or(0.0);
    let course = if course.is_finite() {
        course.round().rem_euclid(360.0) as u16
    } else {
        0
    };
    let mut flags = course & 0x3ff;
    if p.latitude >= 0.0 {
        flags |= 1 << 10;
    }
    if p.longitude < 0.0 {
        flags |= 1 << 11;
    }
    if p.valid {
        flags |= 1 << 12;
    }
    if let Some(on) = ignition {
        flags |= 1 << 14;
        if on {
            flags |= 1 << 15;
        }
    }
    v.extend_from_slice(&flags.to_be_bytes());
    Ok(())
}

fn io_u(a: &Attributes, key: &str) -> Option<u64> {
    match a.io.get_name(key)? {
        IoValue::U64(n) => Some(*n),
        IoValue::I64(n) => u64::try_from(*n).ok(),
        _ => None,
    }
}

fn io_b(a: &Attributes, key: &str) -> Option<bool> {
    match a.io.get_name(key)? {
        IoValue::Bool(b) => Some(*b),
        _ => None,
    }
}

/// MCC u16, MNC u8 (u16 with MCC bit 15), LAC u16, cell id u24, from `io` if present.
fn push_cell(v: &mut Vec<u8>, a: &Attributes) {
    let mcc = io_u(a, "mcc").unwrap_or(0).min(0x7fff) as u16;
    let mnc = io_u(a, "mnc").unwrap_or(0);
    if mnc > 0xff {
        v.extend_from_slice(&(mcc | 0x8000).to_be_bytes());
        v.extend_from_slice(&(mnc.min(0xffff) as u16).to_be_bytes());
    } else {
        v.extend_from_slice(&mcc.to_be_bytes());
        v.push(mnc as u8);
    }
    v.extend_from_slice(&(io_u(a, "lac").unwrap_or(0).min(0xffff) as u16).to_be_bytes());
    let cid = io_u(a, "cid").unwrap_or(0).min(0xff_ffff) as u32;
    v.extend_from_slice(&cid.to_be_bytes()[1..]);
}

/// Battery percentage → the 0–6 voltage level GT06 status bytes carry.
fn voltage_level(a: &Attributes) -> u8 {
    match a.battery_pct {
        Some(p) if p.is_finite() => (p.clamp(0.0, 100.0) * 6.0 / 100.0).round() as u8,
        _ => 6,
    }
}

fn alarm_code(a: &Attributes) -> u8 {
    a.alarms
        .iter()
        .find_map(|al| {
            Some(match al {
                Alarm::Sos => 0x01,
                Alarm::PowerCut => 0x02,
                Alarm::Vibration => 0x03,
                Alarm::GeofenceEnter => 0x04,
                Alarm::GeofenceExit => 0x05,
                Alarm::Overspeed => 0x06,
                Alarm::LowBattery => 0x0E,
                Alarm::PowerOff => 0x11,
                Alarm::Tampering => 0x13,
                Alarm::Door => 0x14,
                Alarm::Removing => 0x18,
                Alarm::FallDown => 0x23,
                Alarm::HardAcceleration => 0x29,
                Alarm::HardCornering => 0x2A,
                Alarm::Accident => 0x2C,
                Alarm::HardBraking => 0x30,
                Alarm::FuelLeak => 0x53,
                Alarm::Temperature => 0x5B,
                Alarm::Idle => 0xC9,
                _ => return None,
            })
        })
        .unwrap_or(0)
}

/// Terminal-information byte: bit 1 ACC, bit 2 charging, bit 6 GPS tracking on.
fn terminal_info(a: &Attributes) -> u8 {
    let mut b = 0x40;
    if a.ignition == Some(true) {
        b |= 0x02;
    }
    if io_b(a, "charge") == Some(true) {
        b |= 0x04;
    }
    b
}

fn rssi_level(a: &Attributes) -> u8 {
    a.rssi.map(|r| r.clamp(0, 4) as u8).unwrap_or(4)
}

/// Attributes of a message's first fix, else of the message.
fn attrs(msg: &Message) -> &Attributes {
    msg.positions.first().map(|p| &p.attributes).unwrap_or(&msg.attributes)
}

/// Hex value ×100 as the 0x8C text carries it (never negative on the wire).
fn obd_hex(x: f64) -> String {
    let n = if x.is_finite() {
        (x * 100.0).round().clamp(0.0, f64::from(u32::MAX))
    } else {
        0.0
    };
    format!("{:08x}", n as u32)
}

impl Gt06Device {
    fn login(&mut self, msg: &Message) -> Result<Vec<u8>, EncodeError> {
        let imei = msg
            .imei
            .as_deref()
            .ok_or_else(|| invalid("imei", "a login needs the IMEI"))?;
        if imei.len() != 15 || !imei.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid("imei", format!("{imei:?} is not 15 digits")));
        }
        let bcd = hex::decode(format!("0{imei}")).map_err(|e| invalid("imei", e.to_string()))?;
        let mut content = Vec::with_capacity(12);
        content.extend_from_slice(&bcd);
        content.extend_from_slice(&[0x36, 0x08]); // type identification code
        content.extend_from_slice(&[0x00, 0x00]); // time zone word: UTC
        Ok(packet(false, 0x01, &content, self.next_serial()))
    }

    /// 0x22: GPS + LBS + ACC/upload-mode/re-upload bytes.
    fn position(&mut self, p: &Position) -> Result<Vec<u8>, EncodeError> {
        let a = &p.attributes;
        let mut c = Vec::with_capacity(30);
        push_gps(&mut c, p, a.ignition)?;
        push_cell(&mut c, a);
        if let Some(on) = a.ignition {
            c.push(u8::from(on));
            c.push(a.event.map(|e| e.min(0xff) as u8).unwrap_or(0));
            c.push(u8::from(io_b(a, "archive") == Some(true)));
        }
        Ok(packet(false, 0x22, &c, self.next_serial()))
    }

    /// 0x26: GPS + LBS (with its length byte) + status.
    fn alarm(&mut self, p: &Position, msg_attrs: &Attributes) -> Result<Vec<u8>, EncodeError> {
        let a = if p.attributes.alarms.is_empty() {
            msg_attrs
        } else {
            &p.attributes
        };
        let mut c = Vec::with_capacity(34);
        push_gps(&mut c, p, None)?;
        let mut cell = Vec::with_capacity(9);
        push_cell(&mut cell, &p.attributes);
        c.push(cell.len() as u8 + 1);
        c.extend_from_slice(&cell);
        c.push(terminal_info(&p.attributes));
        c.push(voltage_level(&p.attributes));
        c.push(rssi_level(&p.attributes));
        c.push(alarm_code(a));
        c.push(0x02); // language: English
        Ok(packet(false, 0x26, &c, self.next_serial()))
    }

    fn heartbeat(&mut self, msg: &Message) -> Vec<u8> {
        let a = attrs(msg);
        if msg.message_type.as_deref() == Some("0x23") {
            let mut st = 0u8;
            if io_b(a, "armed") == Some(true) {
                st |= 1;
            }
            if a.ignition == Some(true) {
                st |= 2;
            }
            if io_b(a, "charge") == Some(true) {
                st |= 4;
            }
            let volts = a.battery_v.filter(|v| v.is_finite()).unwrap_or(4.0);
            let mut c = vec![st];
            c.extend_from_slice(&((volts * 100.0).round().clamp(0.0, 65535.0) as u16).to_be_bytes());
            c.push(rssi_level(a));
            c.extend_from_slice(&[0x00, 0x02]); // language
            return packet(false, 0x23, &c, self.next_serial());
        }
        let c = [terminal_info(a), voltage_level(a), rssi_level(a), alarm_code(a), 0x02];
        packet(false, 0x13, &c, self.next_serial())
    }

    /// 0x8C (extended): date, ignition, `KKK=VVVVVVVV` pairs, 12 reserved bytes.
    fn obd(&mut self, msg: &Message) -> Result<Vec<u8>, EncodeError> {
        let a = attrs(msg);
        let time = msg.positions.first().map(|p| p.time).unwrap_or_else(Utc::now);
        let mut c = Vec::with_capacity(200);
        push_date(&mut c, time)?;
        c.push(u8::from(a.ignition == Some(true)));
        let mut pairs: Vec<String> = Vec::with_capacity(8);
        let fields = [
            ("283", a.odometer_m),
            ("2B3", a.fuel_level_pct),
            ("2D3", a.coolant_c),
            ("353", a.obd_speed_kmh),
            ("363", a.rpm),
            ("473", a.fuel_used_l),
            ("493", a.engine_hours),
        ];
        for (k, v) in fields {
            if let Some(v) = v {
                pairs.push(format!("{k}={}", obd_hex(v)));
            }
        }
        if let Some(vin) = &a.vin {
            if !vin.is_ascii() || vin.contains([',', '=']) {
                return Err(invalid("vin", "must be ASCII without ',' or '='"));
            }
            pairs.push(format!("4A3={vin}"));
        }
        c.extend_from_slice(pairs.join(",").as_bytes());
        c.extend_from_slice(&[0u8; 12]);
        if c.len() + 5 > usize::from(u16::MAX) {
            return Err(invalid("vin", "OBD packet too long"));
        }
        Ok(packet(true, 0x8C, &c, self.next_serial()))
    }

    /// 0x15 for text that fits a standard packet, else extended 0x21 (ASCII).
    fn command_response(&mut self, msg: &Message) -> Result<Vec<u8>, EncodeError> {
        let text = msg.result.as_deref().unwrap_or("");
        if text.as_bytes().contains(&0) {
            return Err(invalid("result", "NUL in reply text"));
        }
        let serial = self.next_serial();
        if text.len() <= 243 {
            let mut c = Vec::with_capacity(text.len() + 7);
            c.push((4 + text.len()) as u8);
            c.extend_from_slice(&[0, 0, 0, 0]);
            c.extend_from_slice(text.as_bytes());
            c.extend_from_slice(&[0x00, 0x02]);
            return Ok(packet(false, 0x15, &c, serial));
        }
        if text.len() > usize::from(u16::MAX) - 10 {
            return Err(invalid("result", "reply text too long"));
        }
        let mut c = Vec::with_capacity(text.len() + 5);
        c.extend_from_slice(&[0, 0, 0, 0, 1]);
        c.extend_from_slice(text.as_bytes());
        Ok(packet(true, 0x21, &c, serial))
    }
}

impl DeviceEncoder for Gt06Device {
    fn encode(&mut self, msg: &Message) -> Result<Vec<u8>, EncodeError> {
        match msg.kind {
            MessageKind::Login => self.login(msg),
            MessageKind::Position => {
                if msg.positions.is_empty() {
                    return Err(invalid("positions", "a position message needs a fix"));
                }
                let mut out = Vec::with_capacity(msg.positions.len() * 40);
                for p in &msg.positions {
                    out.extend_from_slice(&self.position(p)?);
                }
                Ok(out)
            }
            MessageKind::Heartbeat => Ok(self.heartbeat(msg)),
            MessageKind::Alarm => {
                if msg.positions.is_empty() {
                    return Err(invalid("positions", "a GT06 alarm packet carries a fix"));
                }
                let mut out = Vec::with_capacity(msg.positions.len() * 44);
                for p in &msg.positions {
                    out.extend_from_slice(&self.alarm(p, &msg.attributes)?);
                }
                Ok(out)
            }
            MessageKind::Obd => self.obd(msg),
            MessageKind::CommandResponse => self.command_response(msg),
            MessageKind::Other => Err(EncodeError::Unsupported {
                protocol: PROTOCOL,
                what: "other messages".into(),
            }),
        }
    }
}
