//! Device side: what an FMB-family tracker sends, for the simulator, the benches and
//! the round-trip tests.
//!
//! Positions become AVL records. Raw values in `attributes.io` (numeric ids) are
//! written as they are; typed attributes are written under their FMB ids unless the
//! raw map already carries that id, so a decoded message re-encodes to the same
//! values and a simulator can fill only typed fields. The width of a raw value is the
//! FMB table's width for ids the decoder maps, otherwise the smallest that holds it.

use chrono::{DateTime, TimeZone, Utc};

use super::gprs::{self, CODEC_12, TYPE_RESPONSE};
use super::{MAX_DATA_LEN, MAX_IMEI_LEN, tcp_envelope};
use crate::codec::{DeviceEncoder, Transport};
use crate::error::EncodeError;
use crate::model::{Alarm, Attributes, IoKey, IoMap, IoValue, Message, MessageKind, Position};

/// The AVL codec a simulated device sends positions with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AvlCodec {
    /// Codec 8: u8 ids and counts (FMB/FMC/FMM default).
    Codec8,
    /// Codec 8 Extended: u16 ids and counts, plus variable-length values (VIN, DTCs).
    #[default]
    Codec8E,
    /// Codec 16: u16 ids, u8 counts, a generation type per record (FMB6/FM6 trucks).
    Codec16,
}

impl AvlCodec {
    pub fn id(self) -> u8 {
        match self {
            AvlCodec::Codec8 => 0x08,
            AvlCodec::Codec8E => 0x8E,
            AvlCodec::Codec16 => 0x10,
        }
    }
    fn wide_id(self) -> bool {
        !matches!(self, AvlCodec::Codec8)
    }
    fn wide_count(self) -> bool {
        matches!(self, AvlCodec::Codec8E)
    }
}

fn unsupported(what: impl Into<String>) -> EncodeError {
    EncodeError::Unsupported {
        protocol: "teltonika",
        what: what.into(),
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> EncodeError {
    EncodeError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// One simulated Teltonika device.
///
/// TCP: `Login` → IMEI packet, `Heartbeat` → `0xFF`, `Position`/`Alarm`/`Obd` → AVL
/// packets of up to 255 records each (several packets back to back for longer
/// batches), `CommandResponse` → codec 12 type 0x06 with the `result` text.
/// UDP: every datagram carries the IMEI (`Message.imei` is required), packet ids and
/// AVL packet ids count up per datagram; there is no login or keep-alive, and a batch
/// must fit one datagram (≤ 255 records).
#[derive(Debug, Clone)]
pub struct TeltonikaDevice {
    transport: Transport,
    codec: AvlCodec,
    packet_id: u16,
    avl_packet_id: u8,
}

impl TeltonikaDevice {
    pub fn new(transport: Transport, codec: AvlCodec) -> Self {
        TeltonikaDevice {
            transport,
            codec,
            packet_id: 0,
            avl_packet_id: 0,
        }
    }

    pub fn codec(&self) -> AvlCodec {
        self.codec
    }

    fn login(&self, msg: &Message) -> Result<Vec<u8>, EncodeError> {
        let imei = identity(msg)?;
        let mut out = Vec::with_capacity(imei.len() + 2);
        out.extend_from_slice(&(imei.len() as u16).to_be_bytes());
        out.extend_from_slice(imei.as_bytes());
        Ok(out)
    }

    fn avl(&mut self, msg: &Message) -> Result<Vec<u8>, EncodeError> {
        if msg.positions.is_empty() {
            return Err(invalid("positions", "a Teltonika AVL packet needs at least one record"));
        }
        let mut records = Vec::with_capacity(msg.positions.len());
        for p in &msg.positions {
            let mut r = Vec::with_capacity(64);
            encode_record(&mut r, self.codec, p)?;
            records.push(r);
        }
        // Greedy packing: up to 255 records (the count is a byte) and the frame size cap.
        let mut out = Vec::new();
        let mut start = 0;
        while start < records.len() {
            let mut end = start;
            let mut size = 3;
            while end < records.len() && end - start < 255 {
                let len = records.get(end).map_or(0, Vec::len);
                if size + len > MAX_DATA_LEN && end > start {
                    break;
                }
                size += len;
                end += 1;
            }
            if size > MAX_DATA_LEN {
                return Err(invalid(
                    "positions",
                    format!("one record is {size} bytes, over the frame cap"),
                ));
            }
            let batch = records.get(start..end).unwrap_or_default();
            let mut data = Vec::with_capacity(size);
            data.push(self.codec.id());
            data.push(batch.len() as u8);
            for r in batch {
                data.extend_from_slice(r);
            }
            data.push(batch.len() as u8);
            match self.transport {
                Transport::Udp => {
                    if start > 0 || end < records.len() {
                        return Err(invalid(
                            "positions",
                            format!(
                                "{} records do not fit one UDP datagram; send at most 255",
                                records.len()
                            ),
                        ));
                    }
                    out = self.datagram(msg, &data)?;
                }
                _ => out.extend_from_slice(&tcp_envelope(&data)),
            }
            start = end;
        }
        Ok(out)
    }

    fn command_response(&mut self, msg: &Message) -> Result<Vec<u8>, EncodeError> {
        let text = msg.result.as_deref().unwrap_or_default();
        let data = gprs::data_field(CODEC_12, TYPE_RESPONSE, text.as_bytes())?;
        match self.transport {
            Transport::Udp => self.datagram(msg, &data),
            _ => Ok(tcp_envelope(&data)),
        }
    }

    /// UDP channel header (length, packet id, packet type 0x01) and AVL packet header
    /// (AVL packet id, IMEI), then the data field with no CRC.
    fn datagram(&mut self, msg: &Message, data: &[u8]) -> Result<Vec<u8>, EncodeError> {
        let imei = identity(msg)?;
        let body = 2 + 1 + 1 + 2 + imei.len() + data.len();
        let len = u16::try_from(body).map_err(|_| invalid("positions", format!("datagram of {body} bytes")))?;
        self.packet_id = self.packet_id.wrapping_add(1);
        self.avl_packet_id = self.avl_packet_id.wrapping_add(1);
        let mut out = Vec::with_capacity(body + 2);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&self.packet_id.to_be_bytes());
        out.push(0x01);
        out.push(self.avl_packet_id);
        out.extend_from_slice(&(imei.len() as u16).to_be_bytes());
        out.extend_from_slice(imei.as_bytes());
        out.extend_from_slice(data);
        Ok(out)
    }
}

fn identity(msg: &Message) -> Result<&str, EncodeError> {
    let imei = msg
        .imei
        .as_deref()
        .ok_or_else(|| invalid("imei", "the message carries no IMEI"))?;
    if imei.is_empty() || imei.len() > MAX_IMEI_LEN || !imei.bytes().all(|c| c.is_ascii_graphic()) {
        return Err(invalid(
            "imei",
            format!("{imei:?} is not 1–{MAX_IMEI_LEN} printable ASCII characters"),
        ));
    }
    Ok(imei)
}

impl DeviceEncoder for TeltonikaDevice {
    fn encode(&mut self, msg: &Message) -> Result<Vec<u8>, EncodeError> {
        match (msg.kind, self.transport) {
            (MessageKind::Login, Transport::Tcp) => self.login(msg),
            (MessageKind::Heartbeat, Transport::Tcp) => Ok(vec![0xFF]),
            (MessageKind::Login | MessageKind::Heartbeat, _) => Err(unsupported(format!(
                "{} over {} (every UDP datagram carries the IMEI; there is no login or keep-alive)",
                msg.kind.as_str(),
                self.transport.as_str()
            ))),
            (MessageKind::Position | MessageKind::Alarm | MessageKind::Obd, _) => self.avl(msg),
            (MessageKind::CommandResponse, _) => self.command_response(msg),
            (MessageKind::Other, _) => Err(unsupported("messages of kind other")),
        }
    }
}

/// An IO element value on the wire.
enum Val<'a> {
    Fixed(u8, u64),
    Var(std::borrow::Cow<'a, [u8]>),
}

/// FMB widths of the ids the decoder maps, so a decoded value goes back at the width
/// it came in (and is recognised again).
fn known_width(id: u32) -> Option<u8> {
    Some(match id {
        1..=4 | 21 | 30..=33 | 35 | 37..=39 | 41 | 46..=48 | 50 | 52 | 53 | 57 | 58 | 69 | 80..=82 | 89 | 113 => 1,
        179 | 180 | 200 | 236 | 239 | 240 | 246..=253 => 1,
        9 | 10 | 17..=19 | 24 | 34 | 36 | 40 | 42..=45 | 49 | 51 | 54..=56 | 59 | 60 | 66..=68 => 2,
        84 | 85 | 115 | 181 | 182 | 205 | 206 => 2,
        12 | 16 | 83 | 87 | 199 | 241 | 389 | 390 => 4,
        11 | 14 | 78 => 8,
        _ => return None,
    })
}

fn min_width(v: u64) -> u8 {
    match v {
        0..=0xFF => 1,
        0x100..=0xFFFF => 2,
        0x1_0000..=0xFFFF_FFFF => 4,
        _ => 8,
    }
}

fn max_of(width: u8) -> u64 {
    match width {
        1 => 0xFF,
        2 => 0xFFFF,
        4 => 0xFFFF_FFFF,
        _ => u64::MAX,
    }
}

/// `v` rounded into an unsigned field of `width` bytes (saturating; NaN → 0).
fn unsigned(v: f64, width: u8) -> u64 {
    let r = v.round();
    if r.is_nan() || r <= 0.0 {
        0
    } else if r >= max_of(width) as f64 {
        max_of(width)
    } else {
        r as u64
    }
}

/// `v` rounded into a two's complement field of `width` bytes (saturating).
fn signed(v: f64, width: u8) -> u64 {
    let bits = u32::from(width) * 8;
    let max = ((1u64 << (bits - 1)) - 1) as f64;
    let r = v.round().clamp(-max - 1.0, max);
    let i = if r.is_nan() { 0 } else { r as i64 };
    (i as u64) & max_of(width)
}

fn encode_record(out: &mut Vec<u8>, codec: AvlCodec, p: &Position) -> Result<(), EncodeError> {
    let a = &p.attributes;
    let ms = u64::try_from(p.time.timestamp_millis()).map_err(|_| invalid("time", "before 1970"))?;
    if !(p.latitude.is_finite() && p.latitude.abs() <= 90.0) {
        return Err(invalid("latitude", format!("{}", p.latitude)));
    }
    if !(p.longitude.is_finite() && p.longitude.abs() <= 180.0) {
        return Err(invalid("longitude", format!("{}", p.longitude)));
    }

    let mut priority = 0u8;
    let mut generation = None;
    let mut elems: Vec<(u16, Val<'_>)> = Vec::with_capacity(a.io.len() + 16);
    for (key, value) in &a.io.0 {
        let id = match key {
            IoKey::Id(id) => *id,
            IoKey::Name(name) => {
                match (name.as_str(), value) {
                    ("priority", IoValue::U64(v)) => priority = u8::try_from(*v).unwrap_or(u8::MAX),
                    ("generation_type", IoValue::U64(v)) => generation = Some(u8::try_from(*v).unwrap_or(u8::MAX)),
                    // Other names are derived values (BLE tag fields, …) that the raw
                    // element they came from already carries.
                    _ => {}
                }
                continue;
            }
        };
        let max_id = if codec.wide_id() { 0xFFFF } else { 0xFF };
        let id16 = u16::try_from(id)
            .ok()
            .filter(|i| u32::from(*i) <= max_id)
            .ok_or_else(|| invalid("io", format!("id {id} does not fit codec 0x{:02X}", codec.id())))?;
        let val = match value {
            IoValue::U64(v) => {
                let w = known_width(id).filter(|w| *v <= max_of(*w)).unwrap_or(min_width(*v));
                Val::Fixed(w, *v)
            }
            IoValue::I64(v) => {
                let w = known_width(id).unwrap_or(match *v {
                    -0x80..=0x7F => 1,
                    -0x8000..=0x7FFF => 2,
                    -0x8000_0000..=0x7FFF_FFFF => 4,
                    _ => 8,
                });
                Val::Fixed(w, (*v as u64) & max_of(w))
            }
            IoValue::Bool(b) => Val::Fixed(1, u64::from(*b)),
            IoValue::Bytes(b) => bytes_val(codec, id, b)?,
            IoValue::Text(t) => bytes_val(codec, id, t.as_bytes())?,
            IoValue::F64(_) => return Err(invalid("io", format!("id {id} holds a float; the wire has integers"))),
        };
        elems.push((id16, val));
    }

    let mut typed = |id: u16, val: Val<'static>| {
        if (codec.wide_id() || id <= 0xFF) && !elems.iter().any(|(i, _)| *i == id) {
            elems.push((id, val));
        }
    };
    let fixed = |w: u8, v: u64| Val::Fixed(w, v);
    if let Some(v) = a.ignition {
        typed(239, fixed(1, u64::from(v)));
    }
    if let Some(v) = a.motion {
        typed(240, fixed(1, u64::from(v)));
    }
    if let Some(v) = a.odometer_m {
        typed(16, fixed(4, unsigned(v, 4)));
    }
    if let Some(v) = a.trip_odometer_m {
        typed(199, fixed(4, unsigned(v, 4)));
    }
    if let Some(v) = a.power_v {
        typed(66, fixed(2, unsigned(v * 1000.0, 2)));
    }
    if let Some(v) = a.battery_v {
        typed(67, fixed(2, unsigned(v * 1000.0, 2)));
    }
    if let Some(v) = a.battery_pct {
        typed(113, fixed(1, unsigned(v, 1)));
    }
    if let Some(v) = a.rssi {
        typed(21, fixed(1, unsigned(f64::from(v), 1)));
    }
    if let Some([x, y, z]) = a.accel_mg {
        typed(17, fixed(2, signed(f64::from(x), 2)));
        typed(18, fixed(2, signed(f64::from(y), 2)));
        typed(19, fixed(2, signed(f64::from(z), 2)));
    }
    if let Some(h) = p.hdop {
        typed(182, fixed(2, unsigned(h * 10.0, 2)));
    }
    if let Some(id) = a.driver_id.as_deref().and_then(|s| u64::from_str_radix(s, 16).ok()) {
        typed(78, fixed(8, id.swap_bytes()));
    }
    if let Some(v) = a.obd_speed_kmh {
        typed(81, fixed(1, unsigned(v, 1)));
    }
    if let Some(v) = a.throttle_pct {
        typed(82, fixed(1, unsigned(v, 1)));
    }
    if let Some(v) = a.fuel_used_l {
        typed(83, fixed(4, unsigned(v * 10.0, 4)));
    }
    if let Some(v) = a.fuel_level_l {
        typed(84, fixed(2, unsigned(v * 10.0, 2)));
    }
    if let Some(v) = a.rpm {
        typed(85, fixed(2, unsigned(v, 2)));
    }
    if let Some(v) = a.fuel_level_pct {
        typed(89, fixed(1, unsigned(v, 1)));
    }
    if let Some(v) = a.engine_load_pct {
        typed(31, fixed(1, unsigned(v, 1)));
    }
    if let Some(v) = a.coolant_c {
        typed(32, fixed(1, signed(v, 1)));
    }
    if let Some(v) = a.map_kpa {
        typed(35, fixed(1, unsigned(v, 1)));
    }
    if let Some(v) = a.intake_temp_c {
        typed(39, fixed(1, signed(v, 1)));
    }
    if let Some(v) = a.maf_gs {
        typed(40, fixed(2, unsigned(v * 100.0, 2)));
    }
    if let Some(v) = a.run_time_s {
        typed(42, fixed(2, unsigned(v, 2)));
    }
    if let Some(v) = a.distance_mil_on_km {
        typed(43, fixed(2, unsigned(v, 2)));
    }
    if let Some(v) = a.distance_since_clear_km {
        typed(49, fixed(2, unsigned(v, 2)));
    }
    if let Some(v) = a.ambient_c {
        typed(53, fixed(1, signed(v, 1)));
    }
    if let Some(v) = a.oil_temp_c {
        typed(58, fixed(1, signed(v, 1)));
    }
    let mut alarm_event = None;
    for alarm in &a.alarms {
        let (id, v) = match alarm {
            Alarm::HardAcceleration => (253, 1),
            Alarm::HardBraking => (253, 2),
            Alarm::HardCornering => (253, 3),
            Alarm::Accident => (247, 1),
            Alarm::Tow => (246, 1),
            Alarm::Jamming => (249, 1),
            Alarm::Idle => (251, 1),
            Alarm::PowerCut => (252, 1),
            Alarm::General => (236, 1),
            // No FMB element carries the others.
            _ => continue,
        };
        alarm_event.get_or_insert(id);
        typed(id, fixed(1, v));
    }
    if codec == AvlCodec::Codec8E {
        if let Some(vin) = &a.vin {
            typed(256, Val::Var(vin.clone().into_bytes().into()));
        }
        if !a.dtcs.is_empty() {
            typed(281, Val::Var(a.dtcs.join(",").into_bytes().into()));
        }
    }

    let event = a.event.or(alarm_event.map(u32::from)).unwrap_or(0);
    let max_event = if codec.wide_id() { 0xFFFF } else { 0xFF };
    if event > max_event {
        return Err(invalid(
            "event",
            format!("{event} does not fit codec 0x{:02X}", codec.id()),
        ));
    }

    out.extend_from_slice(&ms.to_be_bytes());
    out.push(priority);
    out.extend_from_slice(&(signed(p.longitude * 1e7, 4) as u32).to_be_bytes());
    out.extend_from_slice(&(signed(p.latitude * 1e7, 4) as u32).to_be_bytes());
    out.extend_from_slice(&(signed(p.altitude_m.unwrap_or(0.0), 2) as u16).to_be_bytes());
    out.extend_from_slice(&(unsigned(p.course_deg.unwrap_or(0.0).rem_euclid(360.0), 2) as u16).to_be_bytes());
    // The decoder reads "0 satellites" as "no fix", so the two must agree.
    let sats = if p.valid { p.satellites.unwrap_or(1).max(1) } else { 0 };
    out.push(sats);
    out.extend_from_slice(&(unsigned(p.speed_kmh.unwrap_or(0.0), 2) as u16).to_be_bytes());
    put(out, codec.wide_id(), u64::from(event));
    if codec == AvlCodec::Codec16 {
        let g = generation.unwrap_or(if event == 0 { 7 } else { 5 });
        out.push(g);
    }

    let total = elems.len();
    let count_max = if codec.wide_count() { 0xFFFF } else { 0xFF };
    if total > count_max {
        return Err(invalid(
            "io",
            format!("{total} IO elements do not fit codec 0x{:02X}", codec.id()),
        ));
    }
    put(out, codec.wide_count(), total as u64);
    for width in [1u8, 2, 4, 8] {
        let n = elems
            .iter()
            .filter(|(_, v)| matches!(v, Val::Fixed(w, _) if *w == width))
            .count();
        put(out, codec.wide_count(), n as u64);
        for (id, v) in &elems {
            if let Val::Fixed(w, v) = v
                && *w == width
            {
                put(out, codec.wide_id(), u64::from(*id));
                out.extend_from_slice(v.to_be_bytes().get(8 - usize::from(width)..).unwrap_or_default());
            }
        }
    }
    if codec == AvlCodec::Codec8E {
        let vars: Vec<(u16, &[u8])> = elems
            .iter()
            .filter_map(|(id, v)| match v {
                Val::Var(b) => Some((*id, b.as_ref())),
                Val::Fixed(..) => None,
            })
            .collect();
        put(out, true, vars.len() as u64);
        for (id, b) in vars {
            let len = u16::try_from(b.len())
                .map_err(|_| invalid("io", format!("id {id}: {} bytes exceed a u16 length", b.len())))?;
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(b);
        }
    }
    Ok(())
}

fn bytes_val<'a>(codec: AvlCodec, id: u32, b: &'a [u8]) -> Result<Val<'a>, EncodeError> {
    if codec == AvlCodec::Codec8E {
        return Ok(Val::Var(b.into()));
    }
    match b.len() {
        1 | 2 | 4 | 8 => Ok(Val::Fixed(
            b.len() as u8,
            b.iter().fold(0u64, |v, &x| (v << 8) | u64::from(x)),
        )),
        n => Err(invalid(
            "io",
            format!("id {id}: {n} raw bytes need codec 8E's variable-length group"),
        )),
    }
}

/// A u8 or u16 big-endian field (the caller has checked the range).
fn put(out: &mut Vec<u8>, wide: bool, v: u64) {
    if wide {
        out.extend_from_slice(&(v as u16).to_be_bytes());
    } else {
        out.push(v as u8);
    }
}

/// A realistic FMB920 record for benches and the simulator: the 16 IO elements of
/// that tracker's default configuration as seen in real captures (ignition, movement,
/// data mode, GSM signal, sleep mode, GNSS status, PDOP, HDOP, external voltage,
/// speed, cell id, LAC, battery voltage and current, operator, total odometer), the
/// fix moving along a straight road. `i` numbers the record; times are one second
/// apart from 2024-01-01.
pub fn sample_position(i: u64) -> Position {
    let base: DateTime<Utc> = Utc.timestamp_opt(1_704_067_200, 0).single().unwrap_or_default();
    let time = base + chrono::Duration::seconds(i64::try_from(i % (1 << 40)).unwrap_or(0));
    let step = (i % 10_000) as f64;
    let speed = 40 + (i % 50);
    let mut io = IoMap::with_capacity(16);
    for (id, v) in [
        (239, 1),
        (240, 1),
        (80, 1),
        (21, 4),
        (200, 0),
        (69, 1),
        (181, 9),
        (182, 7),
        (66, 13_900 + i % 300),
        (24, speed),
        (205, 21_457),
        (206, 10_432),
        (67, 4_050),
        (68, 0),
        (241, 24_602),
        (16, 1_250_000 + 14 * i),
    ] {
        io.push_id(id, IoValue::U64(v));
    }
    let mut p = Position::new(time, 54.6872 + step * 1e-4, 25.2797 + step * 1.5e-4, true);
    p.altitude_m = Some(112.0);
    p.speed_kmh = Some(speed as f64);
    p.course_deg = Some(56.0);
    p.satellites = Some(12);
    p.hdop = Some(0.7);
    p.attributes = Attributes {
        ignition: Some(true),
        motion: Some(true),
        odometer_m: Some((1_250_000 + 14 * i) as f64),
        power_v: Some((13_900 + i % 300) as f64 / 1000.0),
        battery_v: Some(4.05),
        rssi: Some(4),
        io,
        ..Attributes::default()
    };
    p
}

/// `records` [`sample_position`]s encoded by a TCP device with `codec`: one AVL
/// packet per 255 records, back to back — a realistic input for decode benches
/// (86 bytes per codec 8 record, 114 per codec 8E record).
pub fn sample_packet(codec: AvlCodec, records: usize) -> Vec<u8> {
    let positions = (0..records as u64).map(sample_position).collect();
    let msg = Message::new(MessageKind::Position)
        .with_imei("356307042441013")
        .with_positions(positions);
    TeltonikaDevice::new(Transport::Tcp, codec)
        .encode(&msg)
        .unwrap_or_default()
}
