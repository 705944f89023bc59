//! Downlink AT commands and the device-side encoder.
//!
//! The device side speaks like a GV500 (protocol version `1F0109`): GTFRI with one or more
//! fixes and the GV trailer (mileage, hour meter, battery, device status), GTIGN/GTIGF,
//! GTOBD with report mask `78FFFF`, alarm reports (GTSOS, GTSPD, GTHBM …), `+ACK:GTHBD`
//! heartbeats and `+ACK:GTxxx` command acknowledgements.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use crate::codec::DeviceEncoder;
use crate::error::EncodeError;
use crate::model::{Alarm, Attributes, Command, IoValue, Message, MessageKind, Position};

const PROTOCOL: &str = "gl200";
const VERSION: &str = "1F0109";

/// The AT command for `command`, with `password` as its first parameter. The serial number
/// `FFFF` asks for no particular correlation (the device echoes it in its `+ACK`).
pub(super) fn command(command: &Command, password: &str) -> Result<Vec<u8>, EncodeError> {
    let unsupported = |what: &str| EncodeError::Unsupported {
        protocol: PROTOCOL,
        what: what.to_owned(),
    };
    let text = match command {
        // Output 1 drives the immobiliser relay on Queclink vehicle trackers.
        Command::EngineStop => format!("AT+GTOUT={password},1,,,0,0,0,0,0,0,0,,,,,,,FFFF$"),
        Command::EngineResume => format!("AT+GTOUT={password},0,,,0,0,0,0,0,0,0,,,,,,,FFFF$"),
        Command::Locate => format!("AT+GTRTO={password},1,,,,,,FFFF$"),
        Command::Reboot => format!("AT+GTRTO={password},3,,,,,,FFFF$"),
        Command::Custom { text } => {
            if text.is_empty() {
                return Err(EncodeError::Invalid {
                    field: "text",
                    reason: "empty command".into(),
                });
            }
            text.clone()
        }
        Command::SetInterval { .. } => return Err(unsupported("set_interval (use a custom AT+GTFRI command)")),
        Command::OutputControl { .. } => {
            return Err(unsupported(
                "output_control (AT+GTOUT sets every output at once; use a custom command)",
            ));
        }
        Command::AlarmArm | Command::AlarmDisarm => return Err(unsupported("alarm arm/disarm")),
        Command::RequestPhoto => return Err(unsupported("request_photo")),
    };
    Ok(text.into_bytes())
}

/// A simulated GV500: numbers its reports with a 16-bit count.
#[derive(Debug, Default)]
pub struct Gl200Device {
    count: u16,
}

fn fmt_opt(v: Option<f64>, decimals: usize) -> String {
    v.map(|v| format!("{v:.decimals$}")).unwrap_or_default()
}

fn time14(t: DateTime<Utc>) -> String {
    t.format("%Y%m%d%H%M%S").to_string()
}

fn io_u64(p: &Position, name: &str) -> Option<u64> {
    match p.attributes.io.get_name(name)? {
        IoValue::U64(v) => Some(*v),
        _ => None,
    }
}

/// `<accuracy>,<speed>,<azimuth>,<altitude>,<lon>,<lat>,<fix time>,<MCC>,<MNC>,<LAC>,<cell>,<reserved>`
fn block(out: &mut String, p: Option<&Position>) {
    let Some(p) = p else {
        out.push_str(",,,,,,,,,,,");
        return;
    };
    let hdop = if p.valid {
        p.hdop.map_or(1, |h| (h.round() as i64).clamp(1, 50))
    } else {
        0
    };
    let _ = write!(
        out,
        "{hdop},{},{},{},{:.6},{:.6},{},",
        fmt_opt(p.speed_kmh, 1),
        p.course_deg
            .map(|c| (c.round() as i64).rem_euclid(360).to_string())
            .unwrap_or_default(),
        fmt_opt(p.altitude_m, 1),
        p.longitude,
        p.latitude,
        time14(p.time),
    );
    match (io_u64(p, "mcc"), io_u64(p, "mnc"), io_u64(p, "lac"), io_u64(p, "cid")) {
        (Some(mcc), Some(mnc), Some(lac), Some(cid)) => {
            let _ = write!(out, "{mcc:04},{mnc:04},{lac:04X},{cid:04X},00");
        }
        _ => out.push_str(",,,,00"),
    }
}

/// The device status field: ignition state byte (0x21 on, 0x11 off, 0x41 unknown), inputs, outputs.
fn status(a: &Attributes) -> &'static str {
    match a.ignition {
        Some(true) => "210000",
        Some(false) => "110000",
        None => "410000",
    }
}

fn hour_meter(h: f64) -> String {
    let secs = (h * 3600.0).round().max(0.0) as u64;
    format!("{:05}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

impl Gl200Device {
    fn next_count(&mut self) -> String {
        let c = self.count;
        self.count = self.count.wrapping_add(1);
        format!("{c:04X}")
    }

    fn finish(&mut self, mut s: String, send_time: DateTime<Utc>) -> Vec<u8> {
        let count = self.next_count();
        let _ = write!(s, ",{},{count}$", time14(send_time));
        s.into_bytes()
    }
}

fn alarm_of(msg: &Message) -> Option<&Alarm> {
    msg.attributes
        .alarms
        .first()
        .or_else(|| msg.positions.iter().find_map(|p| p.attributes.alarms.first()))
}

impl DeviceEncoder for Gl200Device {
    fn encode(&mut self, msg: &Message) -> Result<Vec<u8>, EncodeError> {
        let imei = msg
            .imei
            .as_deref()
            .filter(|i| !i.is_empty() && !i.contains([',', '$']))
            .ok_or(EncodeError::Invalid {
                field: "imei",
                reason: "a Queclink report needs the device IMEI".into(),
            })?;
        let last = msg.positions.last();
        let send_time = last.map_or_else(Utc::now, |p| p.time);
        let attrs = last.map_or(&msg.attributes, |p| &p.attributes);
        let ty = msg.message_type.as_deref().unwrap_or("");
        let mut s = String::with_capacity(128 + 96 * msg.positions.len());
        match msg.kind {
            MessageKind::Heartbeat => {
                let _ = write!(s, "+ACK:GTHBD,{VERSION},{imei},");
            }
            MessageKind::CommandResponse => {
                let ack = ty.strip_prefix("+ACK:").unwrap_or(ty);
                let ack = if ack.starts_with("GT") && ack.len() == 5 {
                    ack
                } else {
                    "GTOUT"
                };
                let _ = write!(s, "+ACK:{ack},{VERSION},{imei},,FFFF");
            }
            MessageKind::Obd => {
                let vin = attrs.vin.as_deref().unwrap_or("");
                let a = attrs;
                let u = |v: Option<f64>| v.map(|v| format!("{:.0}", v.max(0.0))).unwrap_or_default();
                let dtcs = dtcs_hex(&a.dtcs);
                let _ = write!(
                    s,
                    "+RESP:GTOBD,{VERSION},{imei},{vin},,0,78FFFF,{vin},1,{},,{},{},{},,{},{},{},{},{dtcs},{},{},{},{},",
                    u(a.power_v.map(|v| v * 1000.0)),
                    u(a.rpm),
                    u(a.obd_speed_kmh),
                    a.coolant_c.map(|c| format!("{c:.0}")).unwrap_or_default(),
                    u(a.distance_since_clear_km),
                    u(a.distance_mil_on_km),
                    if a.dtcs.is_empty() { 0 } else { 1 },
                    a.dtcs.len(),
                    u(a.throttle_pct),
                    u(a.engine_load_pct),
                    u(a.fuel_level_pct),
                    u(a.odometer_m.map(|m| m / 1000.0)),
                );
                block(&mut s, last);
                s.push(',');
            }
            MessageKind::Position if matches!(ty, "GTIGN" | "GTIGF" | "GTVGN" | "GTVGF") => {
                let _ = write!(s, "+RESP:{ty},{VERSION},{imei},,,");
                block(&mut s, last);
                let _ = write!(
                    s,
                    ",{},{}",
                    attrs.engine_hours.map(hour_meter).unwrap_or_default(),
                    fmt_opt(attrs.odometer_m.map(|m| m / 1000.0), 1)
                );
            }
            MessageKind::Position => {
                if msg.positions.is_empty() {
                    return Err(EncodeError::Invalid {
                        field: "positions",
                        reason: "a GTFRI report needs at least one fix".into(),
                    });
                }
                if msg.positions.len() > 15 {
                    return Err(EncodeError::Invalid {
                        field: "positions",
                        reason: "GTFRI carries at most 15 fixes".into(),
                    });
                }
                let vin = attrs.vin.as_deref().map(|v| format!("{v},")).unwrap_or_default();
                let power = attrs
                    .power_v
                    .map(|v| format!("{:.0}", (v * 1000.0).max(0.0)))
                    .unwrap_or_default();
                let _ = write!(
                    s,
                    "+RESP:GTFRI,{VERSION},{imei},{vin},{power},10,{},",
                    msg.positions.len()
                );
                for (i, p) in msg.positions.iter().enumerate() {
                    if i > 0 {
                        s.push(',');
                    }
                    block(&mut s, Some(p));
                }
                let _ = write!(
                    s,
                    ",{},{},,,{},{},{},,{}",
                    fmt_opt(attrs.odometer_m.map(|m| m / 1000.0), 1),
                    attrs.engine_hours.map(hour_meter).unwrap_or_default(),
                    attrs
                        .battery_pct
                        .map(|b| format!("{:.0}", b.clamp(0.0, 100.0)))
                        .unwrap_or_default(),
                    status(attrs),
                    attrs.rpm.map(|r| format!("{:.0}", r.max(0.0))).unwrap_or_default(),
                    attrs
                        .fuel_level_pct
                        .map(|f| format!("{:.0}", f.clamp(0.0, 100.0)))
                        .unwrap_or_default(),
                );
            }
            MessageKind::Alarm => {
                let alarm = alarm_of(msg).ok_or(EncodeError::Invalid {
                    field: "alarm",
                    reason: "an alarm message needs an alarm".into(),
                })?;
                let (report, report_type) = match alarm {
                    Alarm::Sos => ("GTSOS", "00"),
                    Alarm::Overspeed => ("GTSPD", "00"),
                    Alarm::Tow => ("GTTOW", "00"),
                    Alarm::Idle => ("GTIDL", "00"),
                    Alarm::Geofence | Alarm::GeofenceEnter | Alarm::GeofenceExit => ("GTSWG", "00"),
                    Alarm::Jamming => ("GTJDS", "00"),
                    Alarm::Temperature => ("GTTEM", "00"),
                    Alarm::PowerCut => ("GTEPF", "00"),
                    Alarm::PowerRestored => ("GTEPN", "00"),
                    Alarm::HardBraking => ("GTHBM", "10"),
                    Alarm::HardAcceleration => ("GTHBM", "11"),
                    Alarm::HardCornering => ("GTHBM", "12"),
                    Alarm::PowerOn | Alarm::PowerOff => {
                        let name = if *alarm == Alarm::PowerOn { "GTPNA" } else { "GTPFA" };
                        let _ = write!(s, "+RESP:{name},{VERSION},{imei},");
                        return Ok(self.finish(s, send_time));
                    }
                    Alarm::LowBattery => {
                        let _ = write!(s, "+RESP:GTBPL,{VERSION},{imei},,{},", fmt_opt(attrs.battery_v, 2));
                        block(&mut s, last);
                        let _ = write!(s, ",{}", fmt_opt(attrs.odometer_m.map(|m| m / 1000.0), 1));
                        return Ok(self.finish(s, send_time));
                    }
                    other => {
                        return Err(EncodeError::Unsupported {
                            protocol: PROTOCOL,
                            what: format!("alarm {other:?}"),
                        });
                    }
                };
                let _ = write!(s, "+RESP:{report},{VERSION},{imei},,,{report_type},1,");
                block(&mut s, last);
                let _ = write!(s, ",{}", fmt_opt(attrs.odometer_m.map(|m| m / 1000.0), 1));
            }
            MessageKind::Login | MessageKind::Other => {
                return Err(EncodeError::Unsupported {
                    protocol: PROTOCOL,
                    what: format!(
                        "{} messages (a Queclink has no login; every report carries the IMEI)",
                        msg.kind.as_str()
                    ),
                });
            }
        }
        Ok(self.finish(s, send_time))
    }
}

/// DTC list back to Queclink's hex form (4 hex digits per code).
fn dtcs_hex(dtcs: &[String]) -> String {
    let mut out = String::with_capacity(dtcs.len() * 4);
    for code in dtcs {
        let b = code.as_bytes();
        let (Some(letter), Some(digit)) = (b.first(), b.get(1)) else {
            continue;
        };
        let high = match letter {
            b'P' => 0u16,
            b'C' => 1,
            b'B' => 2,
            b'U' => 3,
            _ => continue,
        };
        let Some(d) = (*digit as char).to_digit(4) else {
            continue;
        };
        let Some(rest) = code.get(2..).and_then(|r| u16::from_str_radix(r, 16).ok()) else {
            continue;
        };
        if rest > 0xfff {
            continue;
        }
        let _ = write!(out, "{:04X}", (high << 14) | ((d as u16) << 12) | rest);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_follow_the_at_syntax() {
        let c = |cmd: Command| String::from_utf8(command(&cmd, "gv500").unwrap()).unwrap();
        assert_eq!(c(Command::EngineStop), "AT+GTOUT=gv500,1,,,0,0,0,0,0,0,0,,,,,,,FFFF$");
        assert_eq!(c(Command::EngineResume), "AT+GTOUT=gv500,0,,,0,0,0,0,0,0,0,,,,,,,FFFF$");
        assert_eq!(c(Command::Locate), "AT+GTRTO=gv500,1,,,,,,FFFF$");
        assert_eq!(c(Command::Reboot), "AT+GTRTO=gv500,3,,,,,,FFFF$");
        assert_eq!(
            c(Command::Custom {
                text: "AT+GTFRI=secret,1,1,,,0000,2359,30,30,,,FFFF$".into()
            }),
            "AT+GTFRI=secret,1,1,,,0000,2359,30,30,,,FFFF$"
        );
        assert!(command(&Command::SetInterval { seconds: 30 }, "x").is_err());
    }

    #[test]
    fn dtc_round_trip() {
        let codes = vec!["P0300".to_owned(), "U0123".to_owned(), "C1234".to_owned()];
        assert_eq!(super::super::text::dtcs_from_hex(&dtcs_hex(&codes)), codes);
    }
}
