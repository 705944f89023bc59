//! Content decoders, one per GT06 message family, after Traccar's
//! `Gt06ProtocolDecoder` (PROTOCOLS.md §2). Each reads one frame's content through a
//! bounds-checked cursor; a layout that does not fit the bytes yields [`Short`].

use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, TimeZone, Timelike, Utc};

use super::cursor::{Cur, R, Short};
use super::{Envelope, Session, packet};
use crate::codec::DecodeContext;
use crate::error::DecodeError;
use crate::model::{Alarm, Attributes, IoValue, Message, MessageKind, Position};

// Protocol numbers (Traccar's names in comments where they differ in meaning).
const LOGIN: u8 = 0x01;
const GPS: u8 = 0x10;
const GPS_LBS_6: u8 = 0x11;
const GPS_LBS_1: u8 = 0x12;
const STATUS: u8 = 0x13;
const STRING: u8 = 0x15;
const GPS_LBS_STATUS_1: u8 = 0x16;
const WIFI: u8 = 0x17;
const LBS_EXTEND: u8 = 0x18;
const LBS_STATUS: u8 = 0x19;
const GPS_PHONE: u8 = 0x1A;
const GPS_LBS_EXTEND: u8 = 0x1E;
const STRING_INFO: u8 = 0x21;
const GPS_LBS_2: u8 = 0x22;
const HEARTBEAT: u8 = 0x23;
const LBS_MULTIPLE_3: u8 = 0x24;
const GPS_LBS_DRIVER: u8 = 0x25;
const GPS_LBS_STATUS_2: u8 = 0x26;
const GPS_LBS_STATUS_3: u8 = 0x27;
const LBS_MULTIPLE_1: u8 = 0x28;
const ADDRESS_REQUEST: u8 = 0x2A;
const LBS_WIFI: u8 = 0x2C;
const GPS_LBS_4: u8 = 0x2D;
const LBS_MULTIPLE_2: u8 = 0x2E;
const GPS_LBS_5: u8 = 0x31;
/// 0x32: GPS_LBS_STATUS_4 in a standard packet, AZ735 GPS in an extended one.
const AZ735_GPS: u8 = 0x32;
/// 0x33: WiFi (6 cells) in a standard packet, AZ735 alarm in an extended one.
const AZ735_ALARM: u8 = 0x33;
const X1_GPS: u8 = 0x34;
const X1_PHOTO_INFO: u8 = 0x35;
const GPS_LBS_3: u8 = 0x37;
const GPS_LBS_8: u8 = 0x38;
const ALARM_MODULE: u8 = 0x39;
const BMS: u8 = 0x40;
const MULTIMEDIA: u8 = 0x41;
const WIFI_2: u8 = 0x69;
const GPS_MODULAR: u8 = 0x70;
const OBD: u8 = 0x8C;
const DTC: u8 = 0x65;
const PID: u8 = 0x66;
const TIME_REQUEST: u8 = 0x8A;
const INFO: u8 = 0x94;
const ALARM: u8 = 0x95;
const ADDRESS_RESPONSE: u8 = 0x97;
const SERIAL: u8 = 0x9B;
const GPS_LBS_7: u8 = 0xA0;
const LBS_2: u8 = 0xA1;
const WIFI_3: u8 = 0xA2;
const FENCE_SINGLE: u8 = 0xA3;
const FENCE_MULTI: u8 = 0xA4;
const LBS_ALARM: u8 = 0xA5;
const LBS_ADDRESS: u8 = 0xA7;
const WIFI_ALARM: u8 = 0xA9;
const DEVICE_STATUS: u8 = 0xF1;
const PERIPHERAL: u8 = 0xF2;
const WIFI_4: u8 = 0xF3;

/// Degrees per unit of the latitude/longitude fields (minutes × 30000).
const COORD_SCALE: f64 = 1_800_000.0;

/// Models Traccar recognises from the header, protocol number and length alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Standard,
    Vxt01,
    WanwayS20,
    Sr411Mini,
    Gt06eCard,
    Benway,
    S5,
    Space10x,
    Obd6,
    WeTrust,
    Jc400,
    Rfid,
}

impl Variant {
    fn detect(env: &Envelope) -> Variant {
        if env.ext {
            return Variant::Standard;
        }
        match (env.ty, env.declared) {
            (GPS_LBS_1 | GPS_LBS_STATUS_1, 0x24) => Variant::Vxt01,
            (LBS_MULTIPLE_3, 0x31) => Variant::WanwayS20,
            (LBS_MULTIPLE_3, 0x2e) => Variant::Sr411Mini,
            (GPS_LBS_1, l) if l >= 0x71 => Variant::Gt06eCard,
            (GPS_LBS_1, 0x21) => Variant::Benway,
            (GPS_LBS_1, 0x2b) => Variant::S5,
            (LBS_STATUS, l) if l >= 0x17 => Variant::Space10x,
            (STATUS, 0x13) => Variant::Obd6,
            (GPS_LBS_1, 0x29) => Variant::WeTrust,
            (ALARM, _) if env.content.starts_with(&[0xff, 0xff]) => Variant::Jc400,
            (WIFI, 0x28) => Variant::Rfid,
            _ => Variant::Standard,
        }
    }
}

fn has_gps(ty: u8, v: Variant) -> bool {
    matches!(
        ty,
        GPS | GPS_LBS_1
            | GPS_LBS_2
            | GPS_LBS_DRIVER
            | GPS_LBS_3
            | GPS_LBS_4
            | GPS_LBS_5
            | GPS_LBS_6
            | GPS_LBS_STATUS_1
            | GPS_LBS_STATUS_2
            | GPS_LBS_STATUS_3
            | AZ735_GPS
            | GPS_PHONE
            | GPS_LBS_EXTEND
            | GPS_LBS_7
            | FENCE_SINGLE
            | FENCE_MULTI
            | ALARM_MODULE
    ) || (ty == WIFI && v == Variant::Rfid)
}

fn has_lbs(ty: u8, v: Variant) -> bool {
    matches!(
        ty,
        LBS_STATUS
            | GPS_LBS_1
            | GPS_LBS_2
            | GPS_LBS_DRIVER
            | GPS_LBS_3
            | GPS_LBS_4
            | GPS_LBS_5
            | GPS_LBS_6
            | GPS_LBS_STATUS_1
            | GPS_LBS_STATUS_2
            | GPS_LBS_STATUS_3
            | AZ735_GPS
            | GPS_LBS_7
            | FENCE_SINGLE
            | FENCE_MULTI
            | ALARM_MODULE
            | LBS_ALARM
            | LBS_ADDRESS
    ) || (ty == WIFI && v == Variant::Rfid)
}

fn has_status(ty: u8) -> bool {
    matches!(
        ty,
        STATUS
            | LBS_STATUS
            | GPS_LBS_STATUS_1
            | GPS_LBS_STATUS_2
            | GPS_LBS_STATUS_3
            | AZ735_GPS
            | FENCE_MULTI
            | ALARM_MODULE
            | LBS_ALARM
    )
}

fn is_multi_lbs(ty: u8, ext: bool) -> bool {
    matches!(
        ty,
        LBS_MULTIPLE_1 | LBS_MULTIPLE_2 | LBS_MULTIPLE_3 | LBS_EXTEND | LBS_WIFI | LBS_2 | WIFI_3 | WIFI_ALARM
    ) || (ty == AZ735_ALARM && !ext)
}

/// The message kind a protocol number stands for (vectors/README.md "kind rules"):
/// alarm packets are alarms whatever their code; GPS reports are positions when they
/// carry a fix; LBS/WiFi/fence/info packets are `other` (their alarms, if any, still
/// travel in the attributes) unless an alarm-only packet carries an alarm.
fn kind_for(ty: u8, ext: bool, has_fix: bool, has_alarm: bool) -> MessageKind {
    match ty {
        LOGIN => MessageKind::Login,
        STATUS | HEARTBEAT => MessageKind::Heartbeat,
        STRING | STRING_INFO => MessageKind::CommandResponse,
        OBD => MessageKind::Obd,
        GPS_LBS_STATUS_1 | GPS_LBS_STATUS_2 | GPS_LBS_STATUS_3 | ALARM => MessageKind::Alarm,
        FENCE_MULTI | LBS_ALARM | WIFI_ALARM | ALARM_MODULE if has_alarm => MessageKind::Alarm,
        AZ735_ALARM if ext && has_alarm => MessageKind::Alarm,
        GPS | GPS_LBS_6 | GPS_LBS_1 | GPS_PHONE | GPS_LBS_EXTEND | GPS_LBS_2 | LBS_MULTIPLE_3 | GPS_LBS_DRIVER
        | GPS_LBS_4 | GPS_LBS_5 | AZ735_GPS | X1_GPS | GPS_LBS_3 | GPS_LBS_8 | GPS_MODULAR | GPS_LBS_7 | WIFI
            if has_fix =>
        {
            MessageKind::Position
        }
        _ => MessageKind::Other,
    }
}

/// What the server sends back for a frame, decided from the envelope alone so a frame
/// whose content fails to parse is still acknowledged when its CRC vouches for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AckRule {
    None,
    /// `<header> 05 <protocol> <serial> <crc> 0D 0A` in the request's shape.
    Standard,
    Wifi,
    Time,
    Address,
}

fn ack_rule(env: &Envelope, v: Variant) -> AckRule {
    let ty = env.ty;
    match ty {
        TIME_REQUEST => AckRule::Time,
        ADDRESS_REQUEST => AckRule::Address,
        WIFI | WIFI_2 if !env.ext && v != Variant::Rfid => AckRule::Wifi,
        X1_GPS | X1_PHOTO_INFO | 0x36 | INFO | STRING_INFO | OBD | SERIAL | WIFI_4 | GPS_LBS_8 | 0x80..=0x82 => {
            AckRule::None
        }
        LBS_STATUS if v == Variant::Space10x => AckRule::None,
        LOGIN | STATUS | HEARTBEAT | STRING | ALARM | BMS | MULTIMEDIA | GPS_MODULAR | AZ735_GPS | AZ735_ALARM
        | DEVICE_STATUS | PERIPHERAL => AckRule::Standard,
        _ if has_gps(ty, v) || has_lbs(ty, v) || has_status(ty) || is_multi_lbs(ty, env.ext) => AckRule::Standard,
        _ if env.ext => AckRule::None,
        _ => AckRule::Standard,
    }
}

/// What a content decoder produced.
#[derive(Debug, Default)]
struct Out {
    fix: Option<Position>,
    attrs: Attributes,
    result: Option<String>,
    /// Set by a verified login.
    login: Option<(String, Option<i32>)>,
    /// Decoded but not a message of its usual kind (unverified login, cut-off frame).
    force_other: bool,
    /// Extra content of the ack (WiFi time bytes).
    wifi_time: Option<[u8; 6]>,
}

fn put(a: &mut Attributes, key: &'static str, v: IoValue) {
    a.io.push_name(key, v);
}

fn put_u(a: &mut Attributes, key: &'static str, v: impl Into<u64>) {
    a.io.push_name(key, IoValue::U64(v.into()));
}

fn put_f(a: &mut Attributes, key: &'static str, v: f64) {
    a.io.push_name(key, IoValue::F64(v));
}

fn put_b(a: &mut Attributes, key: &'static str, v: bool) {
    a.io.push_name(key, IoValue::Bool(v));
}

fn put_t(a: &mut Attributes, key: &'static str, v: impl Into<String>) {
    a.io.push_name(key, IoValue::Text(v.into()));
}

fn bit(v: u32, n: u32) -> bool {
    v >> n & 1 == 1
}

/// Bits `from..to` of `v` (Traccar's `BitUtil.between`).
fn between(v: u32, from: u32, to: u32) -> u32 {
    (v >> from) & ((1u32 << (to - from)) - 1)
}

fn ascii(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Text up to the first NUL (fixed-size fields are NUL-padded).
fn until_nul(b: &[u8]) -> &[u8] {
    b.split(|c| *c == 0).next().unwrap_or(b)
}

/// Local broken-down time in the device zone → UTC.
fn local_time(y: u32, mo: u32, d: u32, h: u32, mi: u32, s: u32, tz_offset_s: i32) -> Option<DateTime<Utc>> {
    let year = i32::try_from(y).ok()?.checked_add(2000)?;
    let naive = NaiveDate::from_ymd_opt(year, mo, d)?.and_hms_opt(h, mi, s)?;
    Utc.from_utc_datetime(&naive)
        .checked_sub_signed(TimeDelta::seconds(i64::from(tz_offset_s)))
}

/// Six binary bytes YY MM DD hh mm ss in the device zone. `None` for an impossible date
/// (all-zero placeholders are common).
fn date(c: &mut Cur, tz: i32) -> R<Option<DateTime<Utc>>> {
    let b = c.take(6)?;
    let f = |i: usize| b.get(i).copied().map(u32::from).unwrap_or(0);
    Ok(local_time(f(0), f(1), f(2), f(3), f(4), f(5), tz))
}

fn iso(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Record a timestamp that belongs to no fix (LBS/OBD/info packets).
fn put_time(a: &mut Attributes, t: Option<DateTime<Utc>>) {
    if let Some(t) = t {
        put_t(a, "time", iso(t));
    }
}

#[derive(Debug, Clone, Copy)]
struct GpsLayout {
    /// A length byte follows the date; 0 means no GPS block.
    has_length: bool,
    satellites: bool,
    speed: bool,
    long_speed: bool,
    /// The course/status word comes before the speed (JC400).
    flags_first: bool,
}

const GPS_STD: GpsLayout = GpsLayout {
    has_length: false,
    satellites: true,
    speed: true,
    long_speed: false,
    flags_first: false,
};

/// Apply the course/status word's sign bits to raw coordinates (§2.3).
fn make_fix(time: DateTime<Utc>, lat_raw: u32, lon_raw: u32, flags: u16, a: &mut Attributes) -> Position {
    let flags = u32::from(flags);
    let mut lat = f64::from(lat_raw) / COORD_SCALE;
    let mut lon = f64::from(lon_raw) / COORD_SCALE;
    if !bit(flags, 10) {
        lat = -lat;
    }
    if bit(flags, 11) {
        lon = -lon;
    }
    let mut p = Position::new(time, lat, lon, bit(flags, 12));
    p.course_deg = Some(f64::from(flags & 0x3ff));
    if bit(flags, 14) {
        a.ignition = Some(bit(flags, 15));
    }
    p
}

/// The GPS block: date, [length], [satellites], latitude, longitude, [speed], course/status.
fn gps(c: &mut Cur, tz: i32, l: GpsLayout, a: &mut Attributes) -> R<Option<Position>> {
    let time = date(c, tz)?;
    if l.has_length && c.u8()? == 0 {
        put_time(a, time);
        return Ok(None);
    }
    let sats = if l.satellites { Some(c.u8()? & 0x0f) } else { None };
    let lat = c.u32()?;
    let lon = c.u32()?;
    let mut flags = if l.flags_first { c.u16()? } else { 0 };
    let speed = match (l.speed, l.long_speed) {
        (false, _) => None,
        (true, false) => Some(f64::from(c.u8()?)),
        (true, true) => Some(f64::from(c.u16()?)),
    };
    if !l.flags_first {
        flags = c.u16()?;
    }
    let Some(time) = time else {
        put_t(a, "gpsInvalid", "date");
        return Ok(None);
    };
    let mut p = make_fix(time, lat, lon, flags, a);
    p.satellites = sats;
    p.speed_kmh = speed;
    Ok(Some(p))
}

/// One cell tower (§2.3 LBS part). Returns false when the block is absent (length 0).
fn lbs(c: &mut Cur, ty: u8, has_length: bool, a: &mut Attributes) -> R<bool> {
    let start = c.remaining();
    let mut length = 0usize;
    if has_length {
        length = usize::from(c.u8()?);
        if length == 0 {
            // Some models pad a missing LBS block with zeros up to 45 bytes.
            if c.peek_rest().get(9..45).is_some_and(|w| w.iter().all(|b| *b == 0)) {
                c.skip_max(45);
            }
            return Ok(false);
        }
    }
    let cell_type = if matches!(ty, GPS_LBS_8 | ALARM_MODULE) {
        c.u8()?
    } else {
        0
    };
    let mcc = c.u16()?;
    let wide_mnc = mcc & 0x8000 != 0 || ty == GPS_LBS_6;
    let mnc = if wide_mnc {
        u32::from(c.u16()?)
    } else {
        u32::from(c.u8()?)
    };
    // A length byte tells the LAC/cell-id widths outright (4G models use 4 + 8 bytes
    // under the same protocol numbers); without one, the protocol number decides.
    let lac_cid_len = length.checked_sub(if wide_mnc { 5 } else { 4 }).filter(|_| has_length);
    let long = match lac_cid_len {
        Some(12) => true,
        Some(_) => false,
        None => cell_type >= 3 || matches!(ty, LBS_ALARM | GPS_LBS_7),
    };
    let lac = if long { i64::from(c.i32()?) } else { i64::from(c.u16()?) };
    let cid = if long {
        c.u64()?
    } else if lac_cid_len == Some(6) || matches!(ty, GPS_LBS_6 | GPS_LBS_DRIVER) {
        u64::from(c.u32()?)
    } else {
        u64::from(c.u24()?)
    };
    if cell_type >= 3 {
        c.u16()?;
    } else if matches!(ty, GPS_LBS_8 | ALARM_MODULE) {
        c.u8()?;
    }
    put_u(a, "mcc", mcc & 0x7fff);
    put_u(a, "mnc", mnc);
    a.io.push_name("lac", IoValue::I64(lac));
    put_u(a, "cid", cid);
    // The length byte counts itself; skip whatever the block holds beyond one tower.
    let used = start - c.remaining();
    if length > used {
        c.skip_max(length - used);
    }
    Ok(true)
}

/// Terminal-information byte (§2.3).
fn terminal_info(b: u8, a: &mut Attributes, v: Variant) {
    let s = u32::from(b);
    put_u(a, "status", b);
    a.ignition = Some(bit(s, 1));
    put_b(a, "charge", bit(s, 2));
    put_b(a, "blocked", bit(s, 7));
    let alarm = match between(s, 3, 6) {
        1 => Some(Alarm::Vibration),
        2 => Some(Alarm::PowerCut),
        3 => Some(Alarm::LowBattery),
        4 => Some(Alarm::Sos),
        6 => Some(Alarm::Geofence),
        7 if v == Variant::Vxt01 => Some(Alarm::Overspeed),
        7 => Some(Alarm::Removing),
        _ => None,
    };
    if let Some(al) = alarm {
        a.raise(al);
    }
}

/// Voltage level 0–6 (older models) or a percentage (newer ones).
fn battery_level(b: u8, a: &mut Attributes) {
    let pct = match b {
        0..=6 => u32::from(b) * 100 / 6,
        7..=100 => u32::from(b),
        _ => return,
    };
    a.battery_pct = Some(f64::from(pct));
    put_u(a, "batteryLevel", pct);
}

/// The alarm/language byte's alarm codes (§2.3; codes beyond §2.3 as Traccar maps them
/// for models it cannot tell apart from the packet).
fn status_alarm(code: u32) -> Option<Alarm> {
    Some(match code {
        0x01 => Alarm::Sos,
        0x02 => Alarm::PowerCut,
        0x03 | 0x09 => Alarm::Vibration,
        0x04 => Alarm::GeofenceEnter,
        0x05 => Alarm::GeofenceExit,
        0x06 => Alarm::Overspeed,
        0x0E | 0x0F | 0x19 => Alarm::LowBattery,
        0x11 => Alarm::PowerOff,
        0x0C | 0x13 | 0x25 | 0x32 => Alarm::Tampering,
        0x14 => Alarm::Door,
        0x18 => Alarm::Removing,
        0x1A | 0x27 | 0x28 | 0x30 | 0xF1 => Alarm::HardBraking,
        0x1B | 0x2A | 0x2B | 0x2E => Alarm::HardCornering,
        0x23 => Alarm::FallDown,
        0x26 | 0x29 | 0xF0 => Alarm::HardAcceleration,
        0x2C | 0xF2 => Alarm::Accident,
        0x33 => Alarm::Other("lock".into()),
        0x34 => Alarm::Other("unlock".into()),
        0x53 => Alarm::FuelLeak,
        0x5B | 0x5C => Alarm::Temperature,
        0xC9 => Alarm::Idle,
        0x0107 | 0x010B => Alarm::Jamming,
        _ => return None,
    })
}

fn raise_code(a: &mut Attributes, code: u32) {
    if let Some(al) = status_alarm(code) {
        a.raise(al);
    }
}

/// Decode one frame into a message, updating the session on a verified login.
pub(super) fn decode(env: &Envelope, s: &mut Session, ctx: &DecodeContext) -> Result<Message, DecodeError> {
    let mut out = Out::default();
    let mut parsed = body(env, Variant::detect(env), s, &mut out);
    let shorter;
    let mut env = env;
    if parsed.is_err() && !env.verified() && env.content.len() != env.after_type.len() {
        // Without a CRC we only guessed that the last four bytes are serial and CRC;
        // truncated frames (a login cut after its IMEI) carry neither.
        shorter = Envelope {
            content: env.after_type,
            serial: None,
            ..env.clone()
        };
        env = &shorter;
        out = Out::default();
        parsed = body(env, Variant::detect(env), s, &mut out);
    }
    let rule = ack_rule(env, Variant::detect(env));
    if parsed.is_err() {
        if !env.verified() {
            return Err(DecodeError::truncated(env.frame));
        }
        // The CRC vouches for the bytes; the layout is one we do not know. Keep them raw.
        out = Out {
            force_other: true,
            wifi_time: out.wifi_time,
            ..Out::default()
        };
        raw(&mut Cur::new(env.content), &mut out.attrs);
    }
    if let Some((imei, tz)) = out.login.take() {
        s.imei = Some(imei);
        if let Some(tz) = tz {
            s.tz_offset_s = tz;
        }
    }
    match env.serial {
        Some(serial) if env.verified() => put_u(&mut out.attrs, "packetSerial", serial),
        _ => put_t(&mut out.attrs, "integrity", "unverified"),
    }
    let login_ok = env.ty != LOGIN || (env.verified() && parsed.is_ok());
    let ack = if !env.terminated || !login_ok {
        None
    } else {
        match rule {
            AckRule::None => None,
            AckRule::Standard => env.serial.map(|n| packet(env.ext, env.ty, &[], n)),
            AckRule::Wifi => out.wifi_time.map(|t| {
                let mut r = Vec::with_capacity(12);
                r.extend_from_slice(&[0x78, 0x78, 0x00, env.ty]);
                r.extend_from_slice(&t);
                r.extend_from_slice(&[0x0d, 0x0a]);
                r
            }),
            AckRule::Time => {
                let n = ctx.now;
                // Every field is below 100 (year modulo 100), so the casts are exact.
                let content = [
                    n.year().rem_euclid(100) as u8,
                    n.month() as u8,
                    n.day() as u8,
                    n.hour() as u8,
                    n.minute() as u8,
                    n.second() as u8,
                ];
                Some(packet(env.ext, TIME_REQUEST, &content, 0))
            }
            AckRule::Address => {
                // Traccar's "address unknown" answer, always an extended packet.
                let text = b"NA&&NA&&0##";
                let mut content = Vec::with_capacity(5 + text.len());
                content.push(text.len() as u8);
                content.extend_from_slice(&[0, 0, 0, 0]);
                content.extend_from_slice(text);
                Some(packet(true, ADDRESS_RESPONSE, &content, 0))
            }
        }
    };
    let has_alarm = !out.attrs.alarms.is_empty();
    let kind = if out.force_other || !env.terminated || !login_ok {
        MessageKind::Other
    } else {
        kind_for(env.ty, env.ext, out.fix.is_some(), has_alarm)
    };
    let mut msg = Message::new(kind).with_type(format!("0x{:02X}", env.ty));
    msg.imei = s.imei.clone();
    msg.result = out.result;
    msg.ack = ack;
    match out.fix {
        Some(mut p) => {
            p.attributes = out.attrs;
            msg.positions = vec![p];
        }
        None => msg.attributes = out.attrs,
    }
    Ok(msg)
}

fn body(env: &Envelope, v: Variant, s: &Session, out: &mut Out) -> R<()> {
    let tz = s.tz_offset_s;
    let mut c = Cur::new(env.content);
    let a = &mut out.attrs;
    match env.ty {
        LOGIN => login(env, &mut c, out),
        HEARTBEAT => {
            let st = u32::from(c.u8()?);
            put_u(a, "status", st);
            put_b(a, "armed", bit(st, 0));
            a.ignition = Some(bit(st, 1));
            put_b(a, "charge", bit(st, 2));
            if c.remaining() >= 2 {
                let b = f64::from(c.u16()?) / 100.0;
                a.battery_v = Some(b);
                put_f(a, "battery", b);
            }
            if c.remaining() >= 1 {
                let r = c.u8()?;
                a.rssi = Some(i32::from(r));
                put_u(a, "rssi", r);
            }
            if c.remaining() == 2 {
                put_u(a, "language", c.u16()?);
            }
            raw(&mut c, a);
            Ok(())
        }
        ADDRESS_REQUEST => {
            // GK310 asks for a street address: its position and the phone to answer.
            out.fix = gps(&mut c, tz, GPS_STD, a)?;
            let rest = c.rest();
            let phone = rest.get(..rest.len().saturating_sub(2)).unwrap_or(&[]);
            let phone = ascii(until_nul(phone));
            if !phone.is_empty() {
                put_t(a, "phone", phone);
            }
            Ok(())
        }
        TIME_REQUEST | X1_PHOTO_INFO | BMS | MULTIMEDIA | 0x36 | 0x80..=0x82 => {
            raw(&mut c, a);
            Ok(())
        }
        X1_GPS => x1_gps(&mut c, tz, out),
        WIFI | WIFI_2 if v != Variant::Rfid && !env.ext => wifi(env, out),
        WIFI_4 => wifi(env, out),
        INFO if !env.ext => {
            let p = f64::from(c.i16()?) / 100.0;
            a.power_v = Some(p);
            put_f(a, "power", p);
            Ok(())
        }
        INFO => info(env, &mut c, tz, a),
        LBS_MULTIPLE_3 if v == Variant::Sr411Mini => {
            out.fix = gps(&mut c, tz, GPS_STD, a)?;
            lbs(&mut c, env.ty, false, a)?;
            a.ignition = Some(c.u8()? > 0);
            let p = f64::from(c.u16()?) / 100.0;
            a.power_v = Some(p);
            put_f(a, "power", p);
            let b = f64::from(c.u16()?) / 100.0;
            a.battery_v = Some(b);
            put_f(a, "battery", b);
            Ok(())
        }
        ty if is_multi_lbs(ty, env.ext) => multi_lbs(&mut c, ty, v, tz, a),
        STRING => string(&mut c, out),
        STATUS if env.content.len() == 16 => long_status(&mut c, a),
        STRING_INFO => string_info(&mut c, out),
        AZ735_GPS | AZ735_ALARM if env.ext => az735(&mut c, env.ty, tz, out),
        LBS_STATUS if v == Variant::Space10x => {
            // Multi-LBS in a status number; Traccar ignores it.
            raw(&mut c, a);
            Ok(())
        }
        ty if has_gps(ty, v) || has_lbs(ty, v) || has_status(ty) => gps_family(env, &mut c, v, tz, out),
        ALARM => alarm(env, &mut c, v, tz, out),
        OBD => obd(&mut c, tz, a, true),
        // FM08ABC DTC/PID reports share the OBD layout; their keys have no typed home.
        DTC | PID if env.ext => obd(&mut c, tz, a, false),
        GPS_MODULAR => modular(&mut c, out),
        SERIAL => serial(&mut c, a),
        GPS_LBS_8 => {
            out.fix = gps(&mut c, tz, GPS_STD, a)?;
            put_u(a, "uploadMode", c.u8()?);
            put_b(a, "archive", c.u8()? > 0);
            lbs(&mut c, env.ty, false, a)?;
            Ok(())
        }
        _ => {
            raw(&mut c, a);
            Ok(())
        }
    }
}

/// Keep undecoded content so nothing the device sent is lost.
fn raw(c: &mut Cur, a: &mut Attributes) {
    let rest = c.rest();
    if !rest.is_empty() {
        put(a, "undecoded", IoValue::Bytes(rest.to_vec()));
    }
}

fn login(env: &Envelope, c: &mut Cur, out: &mut Out) -> R<()> {
    let imei_bcd = c.take(8)?;
    // 16 nibbles with a leading 0 pad: 15 IMEI digits.
    let mut imei = hex::encode(imei_bcd);
    imei.remove(0);
    let a = &mut out.attrs;
    put_t(a, "imei", imei.clone());
    if c.remaining() >= 2 {
        put_u(a, "typeCode", c.u16()?);
    }
    // Time-zone word: bits 15..4 = offset written as decimal hhmm, bit 3 = west.
    let mut tz = None;
    if c.remaining() >= 2 {
        let w = c.u16()?;
        put_u(a, "timezoneWord", w);
        let hhmm = i32::from(w >> 4);
        let mut offset = (hhmm / 100 * 60 + hhmm % 100) * 60;
        if w & 0x8 != 0 {
            offset = -offset;
        }
        if offset.abs() <= 14 * 3600 {
            tz = Some(offset);
            put(a, "timezoneOffset", IoValue::I64(i64::from(offset)));
        }
    }
    if env.verified() {
        out.login = Some((imei, tz));
    } else {
        out.force_other = true;
    }
    Ok(())
}

fn x1_gps(c: &mut Cur, tz: i32, out: &mut Out) -> R<()> {
    let a = &mut out.attrs;
    put_u(a, "dataAlarm", c.u32()?);
    out.fix = gps(c, tz, GPS_STD, a)?;
    put_u(a, "terminalInfo", c.u16()?);
    let odo = c.u32()?;
    a.odometer_m = Some(f64::from(odo));
    put_u(a, "odometer", odo);
    put_u(a, "mcc", c.u16()?);
    put_u(a, "mnc", c.u8()?);
    put_u(a, "lac", c.u16()?);
    put_u(a, "cid", c.u32()?);
    let driver = c.u32()?;
    if driver > 0 {
        a.driver_id = Some(driver.to_string());
        put_t(a, "driverUniqueId", driver.to_string());
    }
    let battery = f64::from(c.u16()?) / 100.0;
    a.battery_v = Some(battery);
    put_f(a, "battery", battery);
    let power = f64::from(c.u16()?) / 100.0;
    a.power_v = Some(power);
    put_f(a, "power", power);
    let port_info = c.u32()?;
    put_u(a, "portInfo", port_info);
    put_u(a, "input", c.u8()?);
    put_u(a, "output", c.u8()?);
    const ADC: [&str; 15] = [
        "adc1", "adc2", "adc3", "adc4", "adc5", "adc6", "adc7", "adc8", "adc9", "adc10", "adc11", "adc12", "adc13",
        "adc14", "adc15",
    ];
    let n = between(port_info, 20, 24) as usize;
    for key in ADC.iter().take(n) {
        put_f(a, key, f64::from(c.u16()?) / 100.0);
    }
    Ok(())
}

/// BCD digits as Traccar reads them: each nibble is a digit, even when above 9.
fn bcd_time(b: &[u8; 6]) -> Option<DateTime<Utc>> {
    let d = |x: u8| u32::from(x >> 4) * 10 + u32::from(x & 0x0f);
    local_time(d(b[0]), d(b[1]), d(b[2]), d(b[3]), d(b[4]), d(b[5]), 0)
}

fn mac(b: &[u8]) -> String {
    let mut s = String::with_capacity(17);
    for (i, x) in b.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        s.push_str(&format!("{x:02x}"));
    }
    s
}

/// WiFi packets 0x69/0x17 (access-point count in the length byte, no CRC) and 0xF3.
fn wifi(env: &Envelope, out: &mut Out) -> R<()> {
    let f4 = env.ty == WIFI_4;
    let mut c = Cur::new(if f4 { env.content } else { env.after_type });
    let a = &mut out.attrs;
    let time: [u8; 6] = c.take(6)?.try_into().map_err(|_| Short)?;
    if !f4 {
        out.wifi_time = Some(time);
    }
    // 0x69/0x17 send BCD; 0xF3 sends the binary date every other packet uses
    // (Traccar reads it as BCD too, which turns 0x0C into "12" by luck only).
    let t = if f4 {
        date(&mut Cur::new(&time), 0).ok().flatten()
    } else {
        bcd_time(&time)
    };
    match t {
        Some(t) => put_t(a, "time", iso(t)),
        None => put(a, "time", IoValue::Bytes(time.to_vec())),
    }
    let count = if f4 {
        c.u8()?
    } else {
        env.frame.get(2).copied().unwrap_or(0)
    };
    let mut aps = String::new();
    for _ in 0..count {
        if f4 {
            c.skip(2)?;
        }
        let m = mac(c.take(6)?);
        if !aps.is_empty() {
            aps.push(';');
        }
        aps.push_str(&m);
        if !f4 {
            aps.push_str(&format!(",{}", c.u8()?));
        }
    }
    if !aps.is_empty() {
        put_t(a, "wifi", aps);
    }
    if !f4 {
        let cells = c.u8()?;
        let mcc = c.u16()?;
        let mnc = c.u8()?;
        let mut list = String::new();
        for _ in 0..cells {
            let (lac, ci, rssi) = (c.u16()?, c.u16()?, c.u8()?);
            if !list.is_empty() {
                list.push(';');
            }
            list.push_str(&format!("{mcc},{mnc},{lac},{ci},{rssi}"));
        }
        if !list.is_empty() {
            put_t(a, "cells", list);
        }
    }
    Ok(())
}

/// Extended info packet 0x94 and its sub-types (§2.3).
fn info(env: &Envelope, c: &mut Cur, tz: i32, a: &mut Attributes) -> R<()> {
    let sub = c.u8()?;
    put_u(a, "infoType", sub);
    match sub {
        0x00 => {
            let v = f64::from(c.u16()?) / 100.0;
            a.power_v = Some(v);
            put_f(a, "adc1", v);
        }
        0x04 => {
            let text = ascii(c.rest());
            for pair in text.split(';') {
                let mut kv = pair.splitn(2, '=');
                let (Some(k), Some(v)) = (kv.next(), kv.next()) else {
                    continue;
                };
                match k {
                    "ICCID" => put_t(a, "iccid", v.trim_end_matches(['F', 'f'])),
                    "ALM1" | "ALM2" | "ALM3" | "ALM4" | "STA1" | "DYD" => {
                        if let Ok(n) = u64::from_str_radix(v, 16) {
                            let key = match k {
                                "ALM1" => "alarm1Status",
                                "ALM2" => "alarm2Status",
                                "ALM3" => "alarm3Status",
                                "ALM4" => "alarm4Status",
                                "STA1" => "otherStatus",
                                _ => "engineStatus",
                            };
                            put_u(a, key, n);
                        }
                    }
                    _ => {}
                }
            }
            put_t(a, "info", text);
        }
        0x05 => {
            if c.remaining() >= 7 {
                put_time(a, date(c, tz)?);
            }
            let flags = u32::from(c.u8()?);
            put_b(a, "door", bit(flags, 0));
            put_b(a, "io1", bit(flags, 2));
        }
        0x0a => {
            put_t(a, "imei", hex::encode(c.take(8)?));
            put_t(a, "imsi", hex::encode(c.take(8)?));
            let iccid = hex::encode(c.take(10)?);
            put_t(a, "iccid", iccid.trim_end_matches('f'));
        }
        0x0b => match env.content.len() {
            2 => put_t(a, "networkTechnology", if c.u8()? > 0 { "4G" } else { "2G" }),
            3 => {
                let v = f64::from(c.u16()?) / 100.0;
                a.power_v = Some(v);
                put_f(a, "power", v);
            }
            _ => raw(c, a),
        },
        0x0d => {
            // Fuel sensor text `!AIOIL,…`, optionally after a 6-byte date.
            if c.peek() != Some(b'!') {
                put_time(a, date(c, tz)?);
            }
            let text = ascii(c.rest());
            if let Some((temp, level)) = aioil(&text) {
                put_f(a, "temp1", temp);
                put_f(a, "fuel", level);
            }
            put_t(a, "fuelSensor", text);
        }
        0x1b => {
            if c.peek().is_some_and(|b| b.is_ascii_alphabetic()) {
                put_t(a, "serial", ascii(c.rest()).trim());
            } else {
                put_u(a, "ibuttonHeader", c.u8()?);
                put_u(a, "ibuttonType", c.u8()?);
                let id = hex::encode(c.take(4)?);
                a.driver_id = Some(id.clone());
                put_t(a, "driverUniqueId", id);
            }
        }
        0x1e => {
            put_f(a, "temp1", f64::from(c.i32()?) / 10.0);
            put_f(a, "humidity", f64::from(c.i32()?) / 10.0);
        }
        _ => raw(c, a),
    }
    Ok(())
}

/// `!AIOIL,addr,output,temp,version,wave+status,measured,movement,times,checksum` →
/// (temperature, measured level), as Traccar's fuel pattern reads it.
fn aioil(text: &str) -> Option<(f64, f64)> {
    let body = text.strip_prefix("!AIOIL,")?;
    let f: Vec<&str> = body.split(',').collect();
    if f.len() < 9 {
        return None;
    }
    let temp = f.get(2)?.parse().ok()?;
    let level = f.get(5)?.parse().ok()?;
    Some((temp, level))
}

fn multi_lbs(c: &mut Cur, ty: u8, v: Variant, tz: i32, a: &mut Attributes) -> R<()> {
    put_time(a, date(c, tz)?);
    let s20 = v == Variant::WanwayS20;
    if s20 {
        put_u(a, "ta", c.u8()?);
    }
    let mcc = c.u16()?;
    let mnc = if mcc & 0x8000 != 0 {
        u32::from(c.u16()?)
    } else {
        u32::from(c.u8()?)
    };
    let cell4g = ty == WIFI_ALARM && c.u8()? > 0;
    let count = if s20 || ty == WIFI_ALARM {
        c.u8()?
    } else if ty == AZ735_ALARM {
        6
    } else {
        7
    };
    let long = matches!(ty, LBS_2 | WIFI_3) || cell4g;
    let mut cells = String::new();
    for _ in 0..count {
        let (lac, cid) = if long {
            (i64::from(c.i32()?), c.u64()?)
        } else if ty == AZ735_ALARM {
            (i64::from(c.u16()?), u64::from(c.u32()?))
        } else {
            (i64::from(c.u16()?), u64::from(c.u24()?))
        };
        let rssi = c.u8()?;
        if lac > 0 {
            if !cells.is_empty() {
                cells.push(';');
            }
            cells.push_str(&format!("{},{mnc},{lac},{cid},{rssi}", mcc & 0x7fff));
        }
    }
    if !cells.is_empty() {
        put_t(a, "cells", cells);
    }
    if !s20 {
        put_u(a, "ta", c.u8()?);
    }
    if !matches!(ty, LBS_MULTIPLE_1 | LBS_MULTIPLE_2 | LBS_MULTIPLE_3 | LBS_2) {
        let n = c.u8()?;
        let mut aps = String::new();
        for _ in 0..n {
            let m = mac(c.take(6)?);
            let r = c.u8()?;
            if !aps.is_empty() {
                aps.push(';');
            }
            aps.push_str(&format!("{m},{r}"));
        }
        if !aps.is_empty() {
            put_t(a, "wifi", aps);
        }
    }
    if ty == WIFI_ALARM {
        let code = u32::from(c.u8()?);
        let lang = u32::from(c.u8()?);
        put_u(a, "alarmCode", code);
        raise_code(a, (lang >> 4) << 8 | code);
    }
    Ok(())
}

/// 0x15: command length, server flag, ASCII reply, language.
fn string(c: &mut Cur, out: &mut Out) -> R<()> {
    let len = usize::from(c.u8()?);
    let a = &mut out.attrs;
    put_u(a, "serverFlag", c.u32()?);
    // Some firmwares send a zero length and NUL-pad the text: fall back to the NUL.
    let text = match len.checked_sub(4) {
        Some(n) if n > 0 && n <= c.remaining() => c.take(n)?,
        _ => c.rest(),
    };
    let text = ascii(until_nul(text));
    if let Some(iccid) = text.strip_prefix("<ICCID:") {
        put_t(a, "iccid", iccid.split('>').next().unwrap_or(iccid));
    }
    if c.remaining() >= 2 {
        put_u(a, "language", c.u16()?);
    }
    out.result = Some(text);
    Ok(())
}

/// 0x21: server flag, encoding (1 ASCII, else UTF-16BE), reply text.
fn string_info(c: &mut Cur, out: &mut Out) -> R<()> {
    put_u(&mut out.attrs, "serverFlag", c.u32()?);
    let encoding = c.u8()?;
    let data = c.rest();
    let text = if encoding == 1 {
        ascii(until_nul(data))
    } else {
        let units: Vec<u16> = data
            .chunks_exact(2)
            .filter_map(|p| <[u8; 2]>::try_from(p).ok())
            .map(u16::from_be_bytes)
            .take_while(|u| *u != 0)
            .collect();
        String::from_utf16_lossy(&units)
    };
    if let Some(p) = current_position(&text) {
        out.fix = Some(p);
    }
    out.result = Some(text);
    Ok(())
}

/// `Current position!Lat:N54.739332,Lon:E25.273270,Course:126.53,Speed:0.0000,DateTime:2017-05-26  10:27:47`
fn current_position(text: &str) -> Option<Position> {
    let rest = text.strip_prefix("Current position!Lat:")?;
    let (lat, rest) = rest.split_once(",Lon:")?;
    let (lon, rest) = rest.split_once(",Course:")?;
    let (course, rest) = rest.split_once(",Speed:")?;
    let (speed, dt) = rest.split_once(",DateTime:")?;
    let hem = |s: &str, neg: char| -> Option<f64> {
        let mut ch = s.chars();
        let h = ch.next()?;
        let v: f64 = ch.as_str().parse().ok()?;
        Some(if h == neg { -v } else { v })
    };
    let lat = hem(lat, 'S')?;
    let lon = hem(lon, 'W')?;
    let dt = dt.split_whitespace().collect::<Vec<_>>().join(" ");
    let naive = chrono::NaiveDateTime::parse_from_str(dt.get(..19)?, "%Y-%m-%d %H:%M:%S").ok()?;
    let mut p = Position::new(Utc.from_utc_datetime(&naive), lat, lon, true);
    p.course_deg = course.parse().ok();
    p.speed_kmh = speed.parse().ok();
    Some(p)
}

/// 0x13 with 16 content bytes: the long status some models send.
fn long_status(c: &mut Cur, a: &mut Attributes) -> R<()> {
    put_u(a, "infoContent", c.u8()?);
    put_u(a, "satellites", c.u16()?);
    let alarm = c.u8()?;
    put_u(a, "alarmCode", alarm);
    raise_code(a, u32::from(alarm));
    put_u(a, "language", c.u8()?);
    let level = c.u8()?;
    a.battery_pct = Some(f64::from(level));
    put_u(a, "batteryLevel", level);
    put_u(a, "mode", c.u8()?);
    put_u(a, "workingVoltage", c.u16()?);
    c.u8()?;
    put_u(a, "workingTimes", c.u16()?);
    put_u(a, "workingTime", c.u16()?);
    let t = u32::from(c.u16()?);
    let temp = f64::from(t & 0x7fff) / 10.0;
    put_f(a, "temp1", if bit(t, 15) { temp } else { -temp });
    Ok(())
}

/// AZ735 extended 0x32 (GPS) / 0x33 (alarm).
fn az735(c: &mut Cur, ty: u8, tz: i32, out: &mut Out) -> R<()> {
    let a = &mut out.attrs;
    let layout = GpsLayout {
        has_length: true,
        ..GPS_STD
    };
    out.fix = gps(c, tz, layout, a)?;
    if lbs(c, ty, true, a)? {
        let r = c.u8()?;
        a.rssi = Some(i32::from(r));
        put_u(a, "rssi", r);
    }
    let n = usize::from(c.u8()?);
    c.skip(n)?; // additional cell towers
    let n = usize::from(c.u8()?);
    c.skip(n)?; // WiFi access points
    let status = c.u8()?;
    put_u(a, "status", status);
    if ty == AZ735_ALARM {
        match status {
            0xA0 => put_b(a, "armed", true),
            0xA1 => put_b(a, "armed", false),
            0xA2 | 0xA3 => a.raise(Alarm::LowBattery),
            0xA4 => a.raise(Alarm::General),
            0xA5 => a.raise(Alarm::Door),
            _ => {}
        }
    }
    let n = usize::from(c.u8()?);
    c.skip(n)?; // reserved extension
    Ok(())
}

/// The GPS / LBS / status family (0x10, 0x12, 0x13, 0x16, 0x19, 0x22, 0x26, …).
fn gps_family(env: &Envelope, c: &mut Cur, v: Variant, tz: i32, out: &mut Out) -> R<()> {
    let ty = env.ty;
    let a = &mut out.attrs;
    if has_gps(ty, v) {
        out.fix = gps(c, tz, GPS_STD, a)?;
    }
    if has_lbs(ty, v) && c.remaining() > 0 {
        let has_length = has_status(ty)
            && !matches!(ty, LBS_STATUS | LBS_ALARM | ALARM_MODULE)
            && !(ty == GPS_LBS_STATUS_1 && v == Variant::Vxt01);
        lbs(c, ty, has_length, a)?;
    }
    if has_status(ty) {
        if v == Variant::Obd6 {
            terminal_info(c.u8()?, a, v);
            let signal = u32::from(c.u16()?);
            put_u(a, "sat", between(signal, 10, 15) + between(signal, 5, 10));
            a.rssi = Some((signal & 0x1f) as i32);
            put_u(a, "rssi", signal & 0x1f);
            let code = c.u8()?;
            put_u(a, "alarmCode", code);
            raise_code(a, u32::from(code));
            c.u8()?; // language
            let level = c.u8()?;
            a.battery_pct = Some(f64::from(level));
            put_u(a, "batteryLevel", level);
            let mode = c.u8()?;
            let p = f64::from(c.u16()?) / 100.0;
            a.power_v = Some(p);
            put_f(a, "power", p);
            c.u8()?; // reserved
            put_u(a, "workingTime", c.u16()?);
            if mode == 4 {
                put_f(a, "temp1", f64::from(c.i16()?) / 10.0);
            }
        } else {
            terminal_info(c.u8()?, a, v);
            battery_level(c.u8()?, a);
            let r = c.u8()?;
            a.rssi = Some(i32::from(r));
            put_u(a, "rssi", r);
            let mut code = u32::from(c.u8()?);
            if matches!(ty, GPS_LBS_STATUS_3 | FENCE_MULTI | ALARM_MODULE) {
                code += u32::from(c.peek().unwrap_or(0) >> 4) << 8;
            }
            put_u(a, "alarmCode", code);
            if v != Variant::Vxt01 {
                raise_code(a, code);
            }
        }
    }
    if matches!(ty, GPS_LBS_STATUS_3 | FENCE_MULTI | ALARM_MODULE) {
        put_u(a, "language", c.u8()?);
    }
    if ty == GPS_LBS_1 {
        gps_lbs_1_variant(c, v, a)?;
    }
    if matches!(ty, GPS_LBS_2 | GPS_LBS_3 | GPS_LBS_4 | GPS_LBS_5) && c.remaining() >= 3 {
        a.ignition = Some(c.u8()? > 0);
        let e = c.u8()?;
        a.event = Some(u32::from(e));
        put_u(a, "event", e);
        put_b(a, "archive", c.u8()? > 0);
    }
    if ty == GPS_LBS_3 {
        // Modules: id u16, length u8, value.
        while c.remaining() >= 3 {
            let id = c.u16()?;
            let len = usize::from(c.u8()?);
            let mut m = Cur::new(c.take(len)?);
            match (id, len) {
                (0x0027, 2) => {
                    let p = f64::from(m.u16()?) / 100.0;
                    a.power_v = Some(p);
                    put_f(a, "power", p);
                }
                (0x002E, 4) => {
                    let o = m.u32()?;
                    a.odometer_m = Some(f64::from(o));
                    put_u(a, "odometer", o);
                }
                (0x003B, 2) => put_f(a, "accuracy", f64::from(m.u16()?) / 100.0),
                _ => {
                    a.io.push_name(format!("module{id:04X}"), IoValue::Bytes(m.rest().to_vec()))
                }
            }
        }
    }
    if ty == WIFI && v == Variant::Rfid {
        let id = hex::encode(c.take(8)?);
        a.driver_id = Some(id.clone());
        put_t(a, "driverUniqueId", id);
        put_u(a, "validity", c.u8()?);
    }
    match c.remaining() {
        3 | 7 => {
            a.ignition = Some(c.u8()? > 0);
            put_u(a, "uploadMode", c.u8()?);
            put_b(a, "archive", c.u8()? > 0);
        }
        _ => {}
    }
    if c.remaining() == 4 {
        let o = c.u32()?;
        a.odometer_m = Some(f64::from(o));
        put_u(a, "odometer", o);
    }
    if matches!(ty, GPS_LBS_STATUS_3 | FENCE_MULTI) && c.remaining() > 0 {
        put_u(a, "geofence", c.u8()?);
    }
    // The fifth status byte (alarm/language) carries the language in its low half.
    if has_status(ty) && c.remaining() == 1 {
        put_u(a, "language", c.u8()?);
    }
    raw(c, a);
    Ok(())
}

/// Model-specific tails of 0x12 that Traccar recognises by length.
fn gps_lbs_1_variant(c: &mut Cur, v: Variant, a: &mut Attributes) -> R<()> {
    match v {
        Variant::Gt06eCard | Variant::WeTrust => {
            let o = c.u32()?;
            a.odometer_m = Some(f64::from(o));
            put_u(a, "odometer", o);
            let n = usize::from(c.u8()?);
            let card = ascii(c.take(n)?).trim().to_owned();
            if !card.is_empty() {
                a.driver_id = Some(card.clone());
            }
            put_t(a, "card", card);
            let alarm = c.u8()?;
            if v == Variant::WeTrust {
                if alarm > 0 {
                    a.raise(Alarm::General);
                }
                put_u(a, "cardStatus", c.u8()?);
                put_u(a, "drivingTime", c.u16()?);
            } else {
                put_u(a, "alarmCode", alarm);
                put_u(a, "swiped", c.u8()?);
            }
        }
        Variant::Benway => {
            let mask = u32::from(c.u16()?);
            a.ignition = Some(bit(mask, 15));
            put_b(a, "in2", bit(mask, 14));
            if bit(mask, 12) {
                let mut value = (mask & 0x1ff) as i64;
                if bit(mask, 9) {
                    value = -value;
                }
                a.io.push_name("temp1", IoValue::I64(value));
            } else {
                let value = mask & 0x3ff;
                let adc = if bit(mask, 13) {
                    f64::from(value)
                } else {
                    f64::from(value) / 10.0
                };
                put_f(a, "adc1", adc);
            }
        }
        Variant::Vxt01 => {
            terminal_info(c.u8()?, a, v);
            let p = f64::from(c.u16()?) / 100.0;
            a.power_v = Some(p);
            put_f(a, "power", p);
            let r = c.u8()?;
            a.rssi = Some(i32::from(r));
            put_u(a, "rssi", r);
            put_u(a, "alarmExtension", c.u8()?);
        }
        Variant::S5 => {
            terminal_info(c.u8()?, a, v);
            let p = f64::from(c.u16()?) / 100.0;
            a.power_v = Some(p);
            put_f(a, "power", p);
            let r = c.u8()?;
            a.rssi = Some(i32::from(r));
            put_u(a, "rssi", r);
            let code = c.u8()?;
            put_u(a, "alarmCode", code);
            raise_code(a, u32::from(code));
            put_u(a, "oil", c.u16()?);
            let t = c.u8()?;
            let temp = if t & 0x80 != 0 {
                -i64::from(t & 0x7f)
            } else {
                i64::from(t)
            };
            a.io.push_name("temp1", IoValue::I64(temp));
            let o = u64::from(c.u32()?) * 10;
            a.odometer_m = Some(o as f64);
            put_u(a, "odometer", o);
        }
        _ => {}
    }
    Ok(())
}

/// JC100/JC400 alarm 0x95: a date (or a whole GPS block) and an event code.
fn alarm(env: &Envelope, c: &mut Cur, v: Variant, tz: i32, out: &mut Out) -> R<()> {
    let a = &mut out.attrs;
    let jc400 = v == Variant::Jc400;
    let extended = env.content.len() > 7;
    if extended {
        if jc400 {
            c.u16()?; // marker
            put_u(a, "version", c.u8()?);
        }
        let layout = GpsLayout {
            has_length: false,
            satellites: jc400,
            speed: jc400,
            long_speed: jc400,
            flags_first: jc400,
        };
        out.fix = gps(c, tz, layout, a)?;
    } else {
        put_time(a, date(c, tz)?);
    }
    if jc400 {
        let p = f64::from(c.u16()?) / 10.0;
        a.power_v = Some(p);
        put_f(a, "power", p);
    }
    let event = c.u8()?;
    a.event = Some(u32::from(event));
    put_u(a, "event", event);
    if c.remaining() >= 2 {
        put_u(a, "eventData", c.u16()?);
    }
    let al = match event {
        0x01 if extended => Alarm::Sos,
        0x0E => Alarm::LowPower,
        0x76 => Alarm::Temperature,
        0x80 => Alarm::Vibration,
        0x87 => Alarm::Overspeed,
        0x88 => Alarm::PowerCut,
        0x90 => Alarm::HardAcceleration,
        0x91 => Alarm::HardBraking,
        0x92 => Alarm::HardCornering,
        0x93 => Alarm::Accident,
        _ => Alarm::General,
    };
    a.raise(al);
    let files = c.rest();
    if !files.is_empty() {
        put_t(a, "eventFiles", ascii(files));
    }
    Ok(())
}

/// FM08ABC OBD 0x8C: date, ignition, `KKK=VVVV` hex pairs, 12 trailing binary bytes.
fn obd(c: &mut Cur, tz: i32, a: &mut Attributes, typed: bool) -> R<()> {
    put_time(a, date(c, tz)?);
    a.ignition = Some(c.u8()? > 0);
    let rest = c.rest();
    let (text, tail) = rest.split_at(rest.len().saturating_sub(12));
    let text = ascii(text);
    for pair in text.split(',') {
        let Some((k, val)) = pair.split_once('=') else { continue };
        let k = k.trim();
        if k.is_empty() {
            continue;
        }
        a.io.push_name(k.to_owned(), IoValue::Text(val.to_owned()));
        if !typed {
            continue;
        }
        // The first two hex digits of the key select the value (Traccar compares them
        // as hex against 40, 43, 45, 53, 54, 71, 73, 74 in decimal, i.e. 0x28, 0x2B…).
        let Some(sel) = k.get(..2).and_then(|s| u8::from_str_radix(s, 16).ok()) else {
            continue;
        };
        if sel == 0x4A {
            if !val.is_empty() {
                a.vin = Some(val.to_owned());
            }
            continue;
        }
        let Ok(n) = u64::from_str_radix(val, 16) else { continue };
        let x = n as f64 / 100.0;
        match sel {
            0x28 => a.odometer_m = Some(x),
            0x2B => a.fuel_level_pct = Some(x),
            0x2D => a.coolant_c = Some(x),
            0x35 => a.obd_speed_kmh = Some(x),
            0x36 => a.rpm = Some(x),
            0x47 => a.fuel_used_l = Some(x),
            0x49 => a.engine_hours = Some(x),
            _ => {}
        }
    }
    if !tail.is_empty() {
        put(a, "tail", IoValue::Bytes(tail.to_vec()));
    }
    Ok(())
}

/// Modular GPS 0x70: a sequence of `id u16, length u16, value` modules.
fn modular(c: &mut Cur, out: &mut Out) -> R<()> {
    let a = &mut out.attrs;
    let mut sats = None;
    let mut hdop = None;
    while c.remaining() > 0 {
        let id = c.u16()?;
        let len = usize::from(c.u16()?);
        let body = c.take(len)?;
        let mut m = Cur::new(body);
        let ok: R<()> = (|| {
            match id {
                0x03 => put_t(a, "iccid", hex::encode(m.take(10)?)),
                0x09 => sats = Some(m.u8()?),
                0x0a => put_u(a, "satVisible", m.u8()?),
                0x11 => {
                    let (mcc, mnc, lac, cid, rssi) = (m.u16()?, m.u16()?, m.u16()?, m.u24()?, m.u8()?);
                    if cid > 0 {
                        put_t(a, "cells", format!("{mcc},{mnc},{lac},{cid},{rssi}"));
                    }
                }
                0x18 => {
                    let b = f64::from(m.u16()?) / 100.0;
                    a.battery_v = Some(b);
                    put_f(a, "battery", b);
                }
                0x28 => hdop = Some(f64::from(m.u8()?) / 10.0),
                0x29 => put_u(a, "index", m.u32()?),
                0x2a => {
                    let input = m.u8()?;
                    put_b(a, "door", input & 0x0f > 0);
                    put_b(a, "tamper", input >> 4 > 0);
                }
                0x2b => put_u(a, "bootReason", m.u8()?),
                // Traccar reads this (and the 0x34 time) little-endian; every
                // sample has them big-endian (the 0x34 time is a 2019 epoch BE).
                0x2e => {
                    let o = m.u32()?;
                    a.odometer_m = Some(f64::from(o));
                    put_u(a, "odometer", o);
                }
                0x33 => {
                    let secs = m.u32()?;
                    let s = m.u8()?;
                    let alt = m.i16()?;
                    let (lat, lon, speed, flags) = (m.u32()?, m.u32()?, m.u8()?, m.u16()?);
                    // A zero timestamp is the "no fix yet" placeholder.
                    if secs > 0
                        && let Some(t) = Utc.timestamp_opt(i64::from(secs), 0).single()
                    {
                        let mut p = make_fix(t, lat, lon, flags, a);
                        p.satellites = Some(s);
                        p.altitude_m = Some(f64::from(alt));
                        p.speed_kmh = Some(f64::from(speed));
                        out.fix = Some(p);
                    }
                }
                0x34 => {
                    let event = m.u8()?;
                    let al = match event {
                        0x10 => Some(Alarm::Door),
                        0x12 => Some(Alarm::Removing),
                        0x14 => Some(Alarm::GeofenceEnter),
                        0x15 => Some(Alarm::GeofenceExit),
                        0x16 => Some(Alarm::Temperature),
                        0x1A => Some(Alarm::LowBattery),
                        0x1B => Some(Alarm::Overspeed),
                        0x1C => Some(Alarm::PowerOn),
                        0x1D => Some(Alarm::PowerOff),
                        0x20 => Some(Alarm::Vibration),
                        0x21 => Some(Alarm::PowerCut),
                        0x23 => Some(Alarm::Tampering),
                        _ => None,
                    };
                    if let Some(al) = al {
                        a.raise(al);
                    }
                    a.event = Some(u32::from(event));
                    put_u(a, "event", event);
                    let t = m.u32()?;
                    if let Some(t) = Utc.timestamp_opt(i64::from(t), 0).single() {
                        put_t(a, "eventTime", iso(t));
                    }
                }
                _ => a.io.push_name(format!("module{id:04X}"), IoValue::Bytes(body.to_vec())),
            }
            Ok(())
        })();
        if ok.is_err() {
            a.io.push_name(format!("module{id:04X}"), IoValue::Bytes(body.to_vec()));
        }
    }
    if let Some(p) = out.fix.as_mut() {
        if sats.is_some() {
            p.satellites = sats;
        }
        p.hdop = hdop;
    } else if let Some(s) = sats {
        put_u(a, "sat", s);
    }
    Ok(())
}

/// Serial passthrough 0x9B: a temperature probe's text or an RFID card.
fn serial(c: &mut Cur, a: &mut Attributes) -> R<()> {
    put_u(a, "deviceType", c.u8()?);
    let data = c.rest();
    // Traccar's layout: the value, then two checksum bytes and a terminator.
    let n = data.len().saturating_sub(3);
    if n > 0 && n < 8 {
        let text = ascii(data.get(..n - 1).unwrap_or(&[]));
        match text.trim().parse::<f64>() {
            Ok(t) => put_f(a, "temp1", t),
            Err(_) => put_t(a, "result", text),
        }
    } else if n >= 8 {
        let card = ascii(data.get(1..n).unwrap_or(&[]));
        a.driver_id = Some(card.clone());
        put_t(a, "driverUniqueId", card);
    }
    put(a, "serialData", IoValue::Bytes(data.to_vec()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Codec;
    use crate::gt06::Gt06Codec;

    fn ctx() -> DecodeContext {
        DecodeContext {
            now: Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).single().expect("date"),
        }
    }

    fn one(codec: &mut Gt06Codec, frame: &[u8]) -> Message {
        let mut m = codec.decode(frame, &ctx()).expect("decodes");
        assert_eq!(m.len(), 1);
        m.remove(0)
    }

    fn login_frame(tz_word: Option<u16>) -> Vec<u8> {
        let mut c = hex::decode("0123456789012347").expect("hex");
        c.extend_from_slice(&[0x36, 0x08]);
        if let Some(w) = tz_word {
            c.extend_from_slice(&w.to_be_bytes());
        }
        packet(false, LOGIN, &c, 1)
    }

    /// 0x12 at 2020-01-02 03:04:05 device time, 10 N / 20 E, fixed, course 90, ACC on.
    fn gps_frame() -> Vec<u8> {
        let mut c = vec![20, 1, 2, 3, 4, 5, 0xC7];
        c.extend_from_slice(&18_000_000u32.to_be_bytes());
        c.extend_from_slice(&36_000_000u32.to_be_bytes());
        c.push(50);
        c.extend_from_slice(&(0xC000u16 | 1 << 12 | 1 << 10 | 90).to_be_bytes());
        c.extend_from_slice(&[0x01, 0xCC, 0x00, 0x28, 0x7D, 0x00, 0x1F, 0x71]);
        packet(false, GPS_LBS_1, &c, 2)
    }

    #[test]
    fn login_time_zone_applies_to_later_fixes() {
        let mut codec = Gt06Codec::new();
        // 0x3200 >> 4 = 800 → +08:00; bit 3 clear → east.
        let login = one(&mut codec, &login_frame(Some(0x3200)));
        assert_eq!(login.kind, MessageKind::Login);
        assert_eq!(login.imei.as_deref(), Some("123456789012347"));
        assert_eq!(
            hex::encode(login.ack.expect("ack")),
            hex::encode(packet(false, LOGIN, &[], 1))
        );
        let pos = one(&mut codec, &gps_frame());
        assert_eq!(pos.kind, MessageKind::Position);
        assert_eq!(pos.imei.as_deref(), Some("123456789012347"));
        let p = &pos.positions[0];
        assert_eq!(
            p.time,
            Utc.with_ymd_and_hms(2020, 1, 1, 19, 4, 5).single().expect("date")
        );
        assert!((p.latitude - 10.0).abs() < 1e-9 && (p.longitude - 20.0).abs() < 1e-9);
        assert_eq!(
            (p.valid, p.course_deg, p.speed_kmh, p.satellites),
            (true, Some(90.0), Some(50.0), Some(7))
        );
        assert_eq!(p.attributes.ignition, Some(true));

        // 0x1F48 >> 4 = 500 → 05:00, bit 3 set → west.
        let mut codec = Gt06Codec::new();
        one(&mut codec, &login_frame(Some(0x1F48)));
        let p = one(&mut codec, &gps_frame()).positions.remove(0);
        assert_eq!(
            p.time,
            Utc.with_ymd_and_hms(2020, 1, 2, 8, 4, 5).single().expect("date")
        );
    }

    #[test]
    fn default_zone_is_utc_and_fix_bits_negate() {
        let mut codec = Gt06Codec::new();
        let mut f = gps_frame();
        // South (bit 10 clear) and west (bit 11 set), ACC flag absent (bit 14 clear).
        let flags = (1u16 << 11 | 1 << 12 | 90).to_be_bytes();
        f[20] = flags[0];
        f[21] = flags[1];
        let f = packet(false, GPS_LBS_1, &f[4..f.len() - 6], 2);
        let m = one(&mut codec, &f);
        assert_eq!(m.imei, None);
        let p = &m.positions[0];
        assert_eq!(
            p.time,
            Utc.with_ymd_and_hms(2020, 1, 2, 3, 4, 5).single().expect("date")
        );
        assert!(p.latitude < 0.0 && p.longitude < 0.0);
        assert_eq!(p.attributes.ignition, None);
    }

    #[test]
    fn status_bits_and_battery() {
        let mut codec = Gt06Codec::new();
        // ACC on, charging, SOS in bits 3–5, level 3 of 6, GSM 4, alarm 0x06, English.
        let m = one(
            &mut codec,
            &packet(false, STATUS, &[0x02 | 0x04 | 4 << 3, 3, 4, 0x06, 2], 9),
        );
        assert_eq!(m.kind, MessageKind::Heartbeat);
        let a = &m.attributes;
        assert_eq!(a.ignition, Some(true));
        assert_eq!(a.battery_pct, Some(50.0));
        assert_eq!(a.alarms, vec![Alarm::Sos, Alarm::Overspeed]);
        assert_eq!(a.io.get_name("charge"), Some(&IoValue::Bool(true)));
        assert_eq!(
            hex::encode(m.ack.expect("ack")),
            hex::encode(packet(false, STATUS, &[], 9))
        );
    }

    #[test]
    fn time_request_answers_with_server_time() {
        let mut codec = Gt06Codec::new();
        let m = one(&mut codec, &packet(false, TIME_REQUEST, &[], 6));
        let want = packet(false, TIME_REQUEST, &[26, 1, 2, 3, 4, 5], 0);
        assert_eq!(hex::encode(m.ack.expect("ack")), hex::encode(want));
        assert_eq!(m.kind, MessageKind::Other);
    }

    #[test]
    fn wifi_ack_echoes_time_without_serial_or_crc() {
        let mut codec = Gt06Codec::new();
        // One access point announced in the length byte, one cell.
        let mut f = vec![0x78, 0x78, 0x01, WIFI_2, 0x26, 0x01, 0x02, 0x03, 0x04, 0x05];
        f.extend_from_slice(&[0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 60]);
        f.extend_from_slice(&[1, 0x01, 0xcc, 0x00, 0x28, 0x7d, 0x1f, 0x71, 70, 0x0d, 0x0a]);
        let m = one(&mut codec, &f);
        assert_eq!(m.kind, MessageKind::Other);
        assert_eq!(hex::encode(m.ack.expect("ack")), "787800692601020304050d0a");
        assert_eq!(
            m.attributes.io.get_name("wifi"),
            Some(&IoValue::Text("aa:bb:cc:dd:ee:ff,60".into()))
        );
        assert_eq!(
            m.attributes.io.get_name("time"),
            Some(&IoValue::Text("2026-01-02T03:04:05Z".into()))
        );
    }

    #[test]
    fn extended_packets_are_answered_in_extended_shape() {
        let mut codec = Gt06Codec::new();
        let content = &gps_frame()[4..gps_frame().len() - 6].to_vec();
        let m = one(&mut codec, &packet(true, GPS_LBS_1, content, 0x1234));
        assert_eq!(m.kind, MessageKind::Position);
        assert_eq!(
            hex::encode(m.ack.expect("ack")),
            hex::encode(packet(true, GPS_LBS_1, &[], 0x1234))
        );
        assert!(hex::encode(packet(true, GPS_LBS_1, &[], 0x1234)).starts_with("7979000512"));
        // Unknown extended types and info packets get nothing.
        assert!(one(&mut codec, &packet(true, 0x84, &[], 1)).ack.is_none());
        assert!(
            one(&mut codec, &packet(true, INFO, &[0x00, 0x04, 0xeb], 1))
                .ack
                .is_none()
        );
        // Unknown standard types are acknowledged, command echoes are not.
        assert!(one(&mut codec, &packet(false, 0x1f, &[1, 2], 1)).ack.is_some());
        assert!(one(&mut codec, &packet(false, 0x81, &[1, 2], 1)).ack.is_none());
    }

    #[test]
    fn info_voltage_to_power() {
        let mut codec = Gt06Codec::new();
        let m = one(&mut codec, &packet(false, INFO, &[0x04, 0xeb], 1));
        assert_eq!(m.attributes.power_v, Some(12.59));
        let m = one(&mut codec, &packet(true, INFO, &[0x00, 0x04, 0xeb], 1));
        assert_eq!(m.attributes.power_v, Some(12.59));
    }

    #[test]
    fn unverified_login_sets_no_identity_and_gets_no_ack() {
        let mut codec = Gt06Codec::new();
        // Length byte says 13, the frame carries IMEI and one byte, no serial or CRC.
        let f = [
            0x78, 0x78, 0x0d, 0x01, 1, 0x23, 0x45, 0x67, 0x89, 0x01, 0x23, 0x45, 0x77, 0x0d, 0x0a,
        ];
        let m = one(&mut codec, &f);
        assert_eq!(m.kind, MessageKind::Other);
        assert!(m.ack.is_none() && m.imei.is_none());
        assert_eq!(
            m.attributes.io.get_name("integrity"),
            Some(&IoValue::Text("unverified".into()))
        );
        let m = one(&mut codec, &packet(false, STATUS, &[0, 6, 4, 0, 2], 3));
        assert!(m.imei.is_none());
    }

    #[test]
    fn frame_cut_before_terminator_is_other_without_ack() {
        let mut codec = Gt06Codec::new();
        let f = gps_frame();
        let m = one(&mut codec, &f[..f.len() - 1]);
        assert_eq!(m.kind, MessageKind::Other);
        assert!(m.ack.is_none());
        assert_eq!(m.positions.len(), 1, "the fix is still reported");
        let m = one(&mut codec, &f[..f.len() - 2]);
        assert_eq!(m.kind, MessageKind::Other);
    }

    #[test]
    fn verified_frame_with_unknown_layout_is_kept_and_acked() {
        let mut codec = Gt06Codec::new();
        let m = one(&mut codec, &packet(false, GPS_LBS_1, &[1, 2, 3], 0x99));
        assert_eq!(m.kind, MessageKind::Other);
        assert_eq!(
            m.attributes.io.get_name("undecoded"),
            Some(&IoValue::Bytes(vec![1, 2, 3]))
        );
        assert_eq!(
            hex::encode(m.ack.expect("ack")),
            hex::encode(packet(false, GPS_LBS_1, &[], 0x99))
        );
    }

    #[test]
    fn string_reply_and_iccid() {
        let mut codec = Gt06Codec::new();
        let text = b"<ICCID:89860000000000000017>";
        let mut c = vec![4 + text.len() as u8, 0, 0, 0, 0];
        c.extend_from_slice(text);
        c.extend_from_slice(&[0, 2]);
        let m = one(&mut codec, &packet(false, STRING, &c, 5));
        assert_eq!(m.kind, MessageKind::CommandResponse);
        assert_eq!(m.result.as_deref(), Some("<ICCID:89860000000000000017>"));
        assert_eq!(
            m.attributes.io.get_name("iccid"),
            Some(&IoValue::Text("89860000000000000017".into()))
        );
        assert!(m.ack.is_some());
    }

    #[test]
    fn obd_keys_map_to_typed_attributes() {
        let mut codec = Gt06Codec::new();
        let mut c = vec![18, 11, 21, 2, 18, 27, 1];
        c.extend_from_slice(b"2D3=0000189c,353=000016a8,363=00028ac8,4A3=1HGCM82633A004352,283=00002710");
        c.extend_from_slice(&[0; 12]);
        let m = one(&mut codec, &packet(true, OBD, &c, 5));
        assert_eq!(m.kind, MessageKind::Obd);
        let a = &m.attributes;
        assert_eq!(a.coolant_c, Some(63.0));
        assert_eq!(a.obd_speed_kmh, Some(58.0));
        assert_eq!(a.rpm, Some(1666.0));
        assert_eq!(a.odometer_m, Some(100.0));
        assert_eq!(a.vin.as_deref(), Some("1HGCM82633A004352"));
        assert_eq!(a.ignition, Some(true));
        assert!(m.ack.is_none());
    }

    #[test]
    fn alarm_0x95_short_and_with_fix() {
        let mut codec = Gt06Codec::new();
        let m = one(&mut codec, &packet(false, ALARM, &[19, 10, 7, 18, 35, 32, 0x91], 1));
        assert_eq!(m.kind, MessageKind::Alarm);
        assert_eq!(m.attributes.alarms, vec![Alarm::HardBraking]);
        assert!(m.positions.is_empty());
        let mut c = vec![20, 10, 7, 12, 20, 52];
        c.extend_from_slice(&18_000_000u32.to_be_bytes());
        c.extend_from_slice(&36_000_000u32.to_be_bytes());
        c.extend_from_slice(&(1u16 << 12 | 1 << 10).to_be_bytes());
        c.extend_from_slice(&[0x01, 0, 0]);
        let m = one(&mut codec, &packet(false, ALARM, &c, 1));
        assert_eq!(m.positions.len(), 1);
        assert_eq!(m.positions[0].attributes.alarms, vec![Alarm::Sos]);
    }
}
