//! OsmAnd over HTTP (PROTOCOLS.md §8; Traccar `OsmAndProtocolDecoder`): the query-string
//! protocol of the OsmAnd app, Traccar Client and many scripts, plus the Transistorsoft
//! background-geolocation JSON body.
//!
//! **Frames** (transport `Http` only; the ingest tier owns the HTTP exchange and hands us
//! the request target or the body):
//! - a request target `/?id=…&lat=…` (a `GET`; `GET /… HTTP/1.1` request lines and full
//!   URLs are accepted too) — several targets separated by newlines are several frames;
//! - a form body `id=…&lat=…` (a `POST` without JSON) — the whole input is one frame;
//! - a JSON body (starts with `{` or `[`) — the whole input is one frame: an object with
//!   `location` (an object, or an array as Transistorsoft's batch sync sends) and
//!   `device_id`, an array of such objects, or a bare location object.
//!
//! **Parameters** (names as Traccar reads them, percent-decoded, `+` = space, `&` or `;`
//! separated): `id`/`deviceid` → `imei`; `timestamp` as epoch seconds, epoch milliseconds
//! (above 2³¹−1), decimal epoch seconds, ISO-8601 (contains `T`; no offset = UTC) or
//! `yyyy-MM-dd HH:mm:ss` — **taken as UTC** (Traccar uses the server's zone; our servers
//! run UTC); no timestamp → `ctx.now`. `lat`/`lon` or `location=lat,lon`; `speed` is
//! **knots** (Traccar's default; the OsmAnd app really sends m/s, but devices are
//! configured against Traccar's reading) → km/h; `bearing`/`heading` → course;
//! `altitude`; `hdop`; `sat`; `valid` (`true`/`1`); `batt` → `battery_pct`;
//! `driverUniqueId` → `driver_id`; `cell`/`wifi`/`accuracy`/`charge` → `io`; and the
//! Traccar attribute names a sender may use directly: `ignition`, `motion`, `rpm`,
//! `fuel` (litres, Traccar's `fuel`), `fuelLevel` (%), `fuelUsed`, `fuelConsumption`,
//! `odometer`, `tripOdometer`, `hours` (ms), `power`, `battery`, `batteryLevel`,
//! `coolantTemp`, `engineLoad`, `throttle`, `obdSpeed`, `vin`, `rssi`, `event`, `alarm`,
//! `dtcs`. Every parameter is also kept raw in `io` under its name (number, boolean or
//! text, as Traccar stores unknown ones).
//!
//! **JSON** (Transistorsoft): `location.timestamp`, `coords.latitude/longitude/altitude`,
//! `coords.speed` in m/s (negative = unknown) → km/h, `coords.heading` (negative =
//! unknown), `coords.accuracy` → `io`, `is_moving` → `motion`, `odometer` (m),
//! `battery.level` (0-1, negative = unknown) → `battery_pct`, `battery.is_charging`,
//! `activity.type`, `event`, `mock`, `uuid` → `io`, `alarm`, and `extras` read like query
//! parameters. One message per location.
//!
//! **Messages.** Kind: `Alarm` when an alarm is present, `Obd` when `rpm` or `fuel` is,
//! `Position` when there are coordinates, else `Other` (Traccar would reuse the last fix;
//! we send no position and keep the values as message attributes). A request without an
//! id still decodes (the vectors require every frame to decode), to a message without
//! `imei`.
//!
//! **Replies.** `ack` is always `None`: the HTTP layer answers `200 OK` when the message
//! has an `imei` of a known device and `400 Bad Request` when the id is missing or
//! unknown (Traccar answers 404 for an unknown JSON `device_id`).
//!
//! **Downlink.** OsmAnd has no command channel: the only way to reach the device is the
//! body of the `200` reply to its next request. [`Command::Custom`] encodes to its text,
//! which the HTTP layer sends as that body; every other command is
//! `EncodeError::Unsupported`.
//!
//! **Device side** ([`OsmandDevice`]): `GET` request targets, one `\n`-terminated line per
//! position (send each line as one request; the lines concatenate into a capture our
//! framing splits again), or Transistorsoft JSON bodies with [`OsmandDevice::json`].

use std::borrow::Cow;

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};

use crate::codec::{Codec, DecodeContext, DeviceEncoder, Framing, Transport};
use crate::error::{DecodeError, EncodeError, FrameError};
use crate::model::{Alarm, Attributes, Command, IoValue, KMH_PER_KNOT, Message, MessageKind, Position};

/// Largest request target or body accepted.
pub const MAX_FRAME: usize = 1 << 20;

pub fn codec(transport: Transport) -> Option<Box<dyn Codec>> {
    match transport {
        Transport::Http => Some(Box::new(OsmandCodec)),
        Transport::Tcp | Transport::Udp => None,
    }
}

pub fn device(transport: Transport) -> Option<Box<dyn DeviceEncoder>> {
    match transport {
        Transport::Http => Some(Box::new(OsmandDevice::query())),
        Transport::Tcp | Transport::Udp => None,
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct OsmandCodec;

fn starts_with_ci(b: &[u8], prefix: &str) -> bool {
    b.get(..prefix.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(prefix.as_bytes()))
}

/// A request target (or request line / URL) rather than a body.
fn is_target(b: &[u8]) -> bool {
    matches!(b.first(), Some(b'/' | b'?'))
        || starts_with_ci(b, "GET ")
        || starts_with_ci(b, "POST ")
        || starts_with_ci(b, "http://")
        || starts_with_ci(b, "https://")
}

impl Codec for OsmandCodec {
    fn protocol(&self) -> crate::Protocol {
        crate::Protocol::Osmand
    }

    fn frame(&self, buf: &[u8], eof: bool) -> Framing {
        let Some(start) = buf.iter().position(|b| !b.is_ascii_whitespace()) else {
            return Framing::Incomplete;
        };
        let rest = buf.get(start..).unwrap_or_default();
        if is_target(rest) {
            match memchr::memchr(b'\n', rest) {
                Some(i) if i > MAX_FRAME => Framing::Resync {
                    discard: start + i + 1,
                    error: FrameError::new(format!("request target longer than {MAX_FRAME} bytes")),
                },
                Some(i) => Framing::Frame { start, end: start + i },
                None if rest.len() > MAX_FRAME => {
                    Framing::Fatal(FrameError::new(format!("request target longer than {MAX_FRAME} bytes")))
                }
                None if eof => Framing::Frame { start, end: buf.len() },
                None => Framing::Incomplete,
            }
        } else if rest.len() > MAX_FRAME {
            Framing::Fatal(FrameError::new(format!("body longer than {MAX_FRAME} bytes")))
        } else if eof {
            Framing::Frame { start, end: buf.len() }
        } else {
            Framing::Incomplete
        }
    }

    fn decode(&mut self, frame: &[u8], ctx: &DecodeContext) -> Result<Vec<Message>, DecodeError> {
        let text = frame.trim_ascii();
        if text.is_empty() {
            return Err(DecodeError::truncated(frame));
        }
        if text.len() > MAX_FRAME {
            return Err(DecodeError::Length {
                declared: MAX_FRAME,
                actual: text.len(),
                excerpt: crate::error::hex_excerpt(text),
            });
        }
        match text.first() {
            Some(b'{' | b'[') => decode_json(text, ctx),
            _ => decode_query(text, ctx).map(|m| vec![m]),
        }
    }

    fn encode_command(&self, _imei: &str, command: &Command, _ctx: &DecodeContext) -> Result<Vec<u8>, EncodeError> {
        match command {
            Command::Custom { text } => Ok(text.clone().into_bytes()),
            other => Err(EncodeError::Unsupported {
                protocol: "osmand",
                what: format!("{other:?} (OsmAnd has no downlink; only custom text in the 200 reply body)"),
            }),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------

fn hex_val(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|v| v as u8)
}

/// `application/x-www-form-urlencoded` decoding (`+` is a space).
fn pct_decode<'a>(s: &'a [u8], frame: &[u8]) -> Result<Cow<'a, str>, DecodeError> {
    if !s.iter().any(|b| matches!(b, b'%' | b'+')) {
        return Ok(String::from_utf8_lossy(s));
    }
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while let Some(&b) = s.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = s.get(i + 1).copied().and_then(hex_val);
                let lo = s.get(i + 2).copied().and_then(hex_val);
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(DecodeError::invalid("query", "bad percent escape", frame));
                };
                out.push(hi << 4 | lo);
                i += 2;
            }
            _ => out.push(b),
        }
        i += 1;
    }
    Ok(Cow::Owned(String::from_utf8_lossy(&out).into_owned()))
}

/// The query part of a frame: after `?` for targets, the whole text for a form body.
fn query_part(text: &[u8]) -> &[u8] {
    let mut t = text;
    for m in ["GET ", "POST "] {
        if starts_with_ci(t, m) {
            t = t.get(m.len()..).unwrap_or_default().trim_ascii_start();
            if let Some(i) = t.windows(6).rposition(|w| w.eq_ignore_ascii_case(b" HTTP/")) {
                t = t.get(..i).unwrap_or_default();
            }
        }
    }
    if is_target(t) {
        match memchr::memchr(b'?', t) {
            Some(q) => {
                let after = t.get(q + 1..).unwrap_or_default();
                let end = memchr::memchr(b'#', after).unwrap_or(after.len());
                after.get(..end).unwrap_or_default()
            }
            None => &[],
        }
    } else {
        t
    }
}

/// What one request or location says, before it becomes a message.
#[derive(Default)]
struct Report {
    id: Option<String>,
    time: Option<DateTime<Utc>>,
    lat: Option<f64>,
    lon: Option<f64>,
    valid: Option<bool>,
    speed_kmh: Option<f64>,
    course: Option<f64>,
    altitude: Option<f64>,
    hdop: Option<f64>,
    satellites: Option<u8>,
    attrs: Attributes,
    obd: bool,
}

fn parse_number(v: &str) -> Option<f64> {
    v.trim().parse::<f64>().ok().filter(|f| f.is_finite())
}

fn parse_bool(v: &str) -> Option<bool> {
    let v = v.trim();
    if v.eq_ignore_ascii_case("true") || v == "1" {
        Some(true)
    } else if v.eq_ignore_ascii_case("false") || v == "0" {
        Some(false)
    } else {
        None
    }
}

/// Traccar stores an unknown parameter as a number, a boolean or text.
fn io_value(v: &str) -> IoValue {
    if let Ok(u) = v.parse::<u64>() {
        IoValue::U64(u)
    } else if let Ok(i) = v.parse::<i64>() {
        IoValue::I64(i)
    } else if let Some(f) = v.parse::<f64>().ok().filter(|f| f.is_finite()) {
        IoValue::F64(f)
    } else if v == "true" || v == "false" {
        IoValue::Bool(v == "true")
    } else {
        IoValue::Text(v.to_owned())
    }
}

/// Timestamps in every form §8 lists (see the module docs).
fn parse_timestamp(v: &str) -> Option<DateTime<Utc>> {
    let v = v.trim();
    if let Ok(n) = v.parse::<i64>() {
        return if n < i64::from(i32::MAX) {
            DateTime::from_timestamp(n, 0)
        } else {
            DateTime::from_timestamp_millis(n)
        };
    }
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let f: f64 = v.parse().ok()?;
        let secs = f.floor();
        if !(0.0..9.0e12).contains(&secs) {
            return None;
        }
        let nanos = ((f - secs) * 1e9).round().min(999_999_999.0) as u32;
        return DateTime::from_timestamp(secs as i64, nanos);
    }
    if v.contains('T') {
        if let Ok(t) = DateTime::parse_from_rfc3339(v) {
            return Some(t.with_timezone(&Utc));
        }
        if let Ok(t) = DateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S%.f%z") {
            return Some(t.with_timezone(&Utc));
        }
        let local = v.strip_suffix('Z').unwrap_or(v);
        return NaiveDateTime::parse_from_str(local, "%Y-%m-%dT%H:%M:%S%.f")
            .or_else(|_| NaiveDateTime::parse_from_str(local, "%Y-%m-%dT%H:%M"))
            .ok()
            .map(|t| t.and_utc());
    }
    NaiveDateTime::parse_from_str(v, "%Y-%m-%d %H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc())
}

/// Traccar's alarm names ↔ ours.
fn alarm_from_name(name: &str) -> Alarm {
    match name {
        "general" => Alarm::General,
        "sos" => Alarm::Sos,
        "overspeed" => Alarm::Overspeed,
        "lowspeed" => Alarm::LowSpeed,
        "hardAcceleration" => Alarm::HardAcceleration,
        "hardBraking" => Alarm::HardBraking,
        "hardCornering" => Alarm::HardCornering,
        "accident" => Alarm::Accident,
        "vibration" => Alarm::Vibration,
        "movement" => Alarm::Movement,
        "tow" => Alarm::Tow,
        "idle" => Alarm::Idle,
        "powerCut" => Alarm::PowerCut,
        "powerRestored" => Alarm::PowerRestored,
        "powerOn" => Alarm::PowerOn,
        "powerOff" => Alarm::PowerOff,
        "lowBattery" => Alarm::LowBattery,
        "lowPower" => Alarm::LowPower,
        "geofenceEnter" => Alarm::GeofenceEnter,
        "geofenceExit" => Alarm::GeofenceExit,
        "geofence" => Alarm::Geofence,
        "jamming" => Alarm::Jamming,
        "tampering" => Alarm::Tampering,
        "removing" => Alarm::Removing,
        "door" => Alarm::Door,
        "temperature" => Alarm::Temperature,
        "fatigueDriving" => Alarm::Fatigue,
        "fallDown" => Alarm::FallDown,
        "gpsAntennaCut" => Alarm::GpsAntennaCut,
        "fuelLeak" => Alarm::FuelLeak,
        "fault" => Alarm::Fault,
        other => Alarm::Other(other.to_owned()),
    }
}

fn alarm_name(a: &Alarm) -> &str {
    match a {
        Alarm::General => "general",
        Alarm::Sos => "sos",
        Alarm::Overspeed => "overspeed",
        Alarm::LowSpeed => "lowspeed",
        Alarm::HardAcceleration => "hardAcceleration",
        Alarm::HardBraking => "hardBraking",
        Alarm::HardCornering => "hardCornering",
        Alarm::Accident => "accident",
        Alarm::Vibration => "vibration",
        Alarm::Movement => "movement",
        Alarm::Tow => "tow",
        Alarm::Idle => "idle",
        Alarm::PowerCut => "powerCut",
        Alarm::PowerRestored => "powerRestored",
        Alarm::PowerOn => "powerOn",
        Alarm::PowerOff => "powerOff",
        Alarm::LowBattery => "lowBattery",
        Alarm::LowPower => "lowPower",
        Alarm::GeofenceEnter => "geofenceEnter",
        Alarm::GeofenceExit => "geofenceExit",
        Alarm::Geofence => "geofence",
        Alarm::Jamming => "jamming",
        Alarm::Tampering => "tampering",
        Alarm::Removing => "removing",
        Alarm::Door => "door",
        Alarm::Temperature => "temperature",
        Alarm::Fatigue => "fatigueDriving",
        Alarm::FallDown => "fallDown",
        Alarm::GpsAntennaCut => "gpsAntennaCut",
        Alarm::FuelLeak => "fuelLeak",
        Alarm::Fault => "fault",
        Alarm::Other(s) => s,
    }
}

impl Report {
    /// The Traccar attribute names a sender may use directly, onto typed attributes.
    /// Returns false when `key` is not one of them.
    fn traccar_attribute(&mut self, key: &str, v: &str) -> bool {
        let a = &mut self.attrs;
        let num = parse_number(v);
        match key {
            "ignition" => a.ignition = parse_bool(v),
            "motion" => a.motion = parse_bool(v),
            "rpm" => {
                self.obd = true;
                a.rpm = num;
            }
            "fuel" => {
                self.obd = true;
                a.fuel_level_l = num;
            }
            "fuelLevel" => a.fuel_level_pct = num,
            "fuelUsed" => a.fuel_used_l = num,
            "fuelConsumption" => a.fuel_rate_lph = num,
            "odometer" => a.odometer_m = num,
            "tripOdometer" => a.trip_odometer_m = num,
            "hours" => a.engine_hours = num.map(|ms| ms / 3_600_000.0),
            "power" => a.power_v = num,
            "battery" => a.battery_v = num,
            "batteryLevel" | "batt" => a.battery_pct = num,
            "coolantTemp" => a.coolant_c = num,
            "engineLoad" => a.engine_load_pct = num,
            "throttle" => a.throttle_pct = num,
            "obdSpeed" => a.obd_speed_kmh = num,
            "vin" => a.vin = Some(v.to_owned()).filter(|s| !s.is_empty()),
            "driverUniqueId" => a.driver_id = Some(v.to_owned()).filter(|s| !s.is_empty()),
            "rssi" => a.rssi = num.filter(|f| f.abs() < 1e9).map(|f| f.round() as i32),
            "event" => a.event = v.trim().parse().ok(),
            "alarm" => {
                for name in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    a.raise(alarm_from_name(name));
                }
            }
            "dtcs" => {
                a.dtcs = v
                    .split([' ', ','])
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
            }
            "sat" => self.satellites = num.filter(|f| (0.0..=255.0).contains(f)).map(|f| f as u8),
            _ => return false,
        }
        true
    }

    fn param(&mut self, key: &str, v: &str, frame: &[u8]) -> Result<(), DecodeError> {
        let number = |field: &'static str| {
            parse_number(v).ok_or_else(|| DecodeError::invalid(field, format!("{v:?} is not a number"), frame))
        };
        match key {
            "id" | "deviceid" => self.id = Some(v.trim().to_owned()).filter(|s| !s.is_empty()),
            "timestamp" => {
                self.time =
                    Some(parse_timestamp(v).ok_or_else(|| DecodeError::invalid("timestamp", format!("{v:?}"), frame))?);
            }
            "lat" => self.lat = Some(number("lat")?),
            "lon" => self.lon = Some(number("lon")?),
            "location" => {
                let (la, lo) = v
                    .split_once(',')
                    .ok_or_else(|| DecodeError::invalid("location", "expected lat,lon", frame))?;
                let bad = || DecodeError::invalid("location", format!("{v:?}"), frame);
                self.lat = Some(parse_number(la).ok_or_else(bad)?);
                self.lon = Some(parse_number(lo).ok_or_else(bad)?);
            }
            "valid" => self.valid = Some(parse_bool(v).unwrap_or(false)),
            "speed" => self.speed_kmh = Some(number("speed")? * KMH_PER_KNOT),
            "bearing" | "heading" => self.course = Some(number("bearing")?),
            "altitude" => self.altitude = Some(number("altitude")?),
            "hdop" => self.hdop = Some(number("hdop")?),
            _ => {
                self.traccar_attribute(key, v);
            }
        }
        // Identity and time have their own fields; everything else is kept raw too.
        if !matches!(key, "id" | "deviceid") {
            self.attrs.io.push_name(key, io_value(v));
        }
        Ok(())
    }

    fn into_message(self, ctx: &DecodeContext, frame: &[u8], message_type: &str) -> Result<Message, DecodeError> {
        let kind = if !self.attrs.alarms.is_empty() {
            MessageKind::Alarm
        } else if self.obd {
            MessageKind::Obd
        } else if self.lat.is_some() && self.lon.is_some() {
            MessageKind::Position
        } else {
            MessageKind::Other
        };
        let mut msg = Message::new(kind).with_type(message_type);
        msg.imei = self.id;
        match (self.lat, self.lon) {
            (Some(lat), Some(lon)) => {
                if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
                    return Err(DecodeError::invalid(
                        "coordinates",
                        format!("{lat},{lon} out of range"),
                        frame,
                    ));
                }
                let mut p = Position::new(self.time.unwrap_or(ctx.now), lat, lon, self.valid.unwrap_or(true));
                p.speed_kmh = self.speed_kmh;
                p.course_deg = self.course;
                p.altitude_m = self.altitude;
                p.hdop = self.hdop;
                p.satellites = self.satellites;
                p.attributes = self.attrs;
                msg.positions.push(p);
            }
            _ => msg.attributes = self.attrs,
        }
        Ok(msg)
    }
}

fn decode_query(text: &[u8], ctx: &DecodeContext) -> Result<Message, DecodeError> {
    let query = query_part(text);
    let mut r = Report::default();
    for param in query.split(|b| matches!(b, b'&' | b';')) {
        if param.is_empty() {
            continue;
        }
        let (k, v) = match memchr::memchr(b'=', param) {
            Some(i) => (
                param.get(..i).unwrap_or_default(),
                param.get(i + 1..).unwrap_or_default(),
            ),
            None => (param, &[][..]),
        };
        let k = pct_decode(k, text)?;
        if k.is_empty() {
            continue;
        }
        let v = pct_decode(v, text)?;
        r.param(&k, &v, text)?;
    }
    r.into_message(ctx, text, "query")
}

fn json_str(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn json_f64(v: Option<&Value>) -> Option<f64> {
    v.and_then(Value::as_f64).filter(|f| f.is_finite())
}

fn json_io(v: &Value) -> Option<IoValue> {
    Some(match v {
        Value::Bool(b) => IoValue::Bool(*b),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                IoValue::U64(u)
            } else if let Some(i) = n.as_i64() {
                IoValue::I64(i)
            } else {
                IoValue::F64(n.as_f64()?)
            }
        }
        Value::String(s) => IoValue::Text(s.clone()),
        _ => return None,
    })
}

fn decode_location(
    loc: &Map<String, Value>,
    id: Option<String>,
    ctx: &DecodeContext,
    frame: &[u8],
) -> Result<Message, DecodeError> {
    let mut r = Report {
        id: id.or_else(|| loc.get("device_id").and_then(json_str)),
        ..Report::default()
    };
    if let Some(ts) = loc.get("timestamp") {
        let s = json_str(ts).ok_or_else(|| DecodeError::invalid("timestamp", "not a string", frame))?;
        r.time = Some(parse_timestamp(&s).ok_or_else(|| DecodeError::invalid("timestamp", s.clone(), frame))?);
    }
    if let Some(coords) = loc.get("coords") {
        let coords = coords
            .as_object()
            .ok_or_else(|| DecodeError::invalid("coords", "not an object", frame))?;
        let need = |k: &'static str| {
            json_f64(coords.get(k)).ok_or_else(|| DecodeError::invalid(k, "missing or not a number", frame))
        };
        r.lat = Some(need("latitude")?);
        r.lon = Some(need("longitude")?);
        r.speed_kmh = json_f64(coords.get("speed")).filter(|s| *s >= 0.0).map(|mps| mps * 3.6);
        r.course = json_f64(coords.get("heading")).filter(|h| *h >= 0.0);
        r.altitude = json_f64(coords.get("altitude"));
        if let Some(acc) = coords.get("accuracy").and_then(json_io) {
            r.attrs.io.push_name("accuracy", acc);
        }
    }
    if let Some(m) = loc.get("is_moving").and_then(Value::as_bool) {
        r.attrs.motion = Some(m);
    }
    if let Some(o) = json_f64(loc.get("odometer")) {
        r.attrs.odometer_m = Some(o);
    }
    if let Some(battery) = loc.get("battery").and_then(Value::as_object) {
        if let Some(level) = json_f64(battery.get("level")).filter(|l| *l >= 0.0) {
            r.attrs.battery_pct = Some(level * 100.0);
        }
        if let Some(c) = battery.get("is_charging").and_then(Value::as_bool) {
            r.attrs.io.push_name("charge", IoValue::Bool(c));
        }
    }
    if let Some(t) = loc.get("activity").and_then(|a| a.get("type")).and_then(Value::as_str) {
        r.attrs.io.push_name("activity", IoValue::Text(t.to_owned()));
    }
    for key in ["event", "mock", "uuid", "age"] {
        if let Some(v) = loc.get(key).and_then(json_io) {
            r.attrs.io.push_name(key, v);
        }
    }
    if let Some(a) = loc.get("alarm").and_then(Value::as_str) {
        r.traccar_attribute("alarm", a);
        r.attrs.io.push_name("alarm", IoValue::Text(a.to_owned()));
    }
    if let Some(extras) = loc.get("extras").and_then(Value::as_object) {
        for (k, v) in extras {
            if k == "alarm" && loc.contains_key("alarm") {
                continue;
            }
            let Some(io) = json_io(v) else { continue };
            let text = match v {
                Value::String(s) => Cow::Borrowed(s.as_str()),
                other => Cow::Owned(other.to_string()),
            };
            r.traccar_attribute(k, &text);
            r.attrs.io.push_name(k.as_str(), io);
        }
    }
    r.into_message(ctx, frame, "json")
}

fn decode_json(text: &[u8], ctx: &DecodeContext) -> Result<Vec<Message>, DecodeError> {
    let root: Value = serde_json::from_slice(text).map_err(|e| DecodeError::invalid("json", e.to_string(), text))?;
    let mut out = Vec::new();
    let items: Vec<&Value> = match &root {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    for item in items {
        let obj = item
            .as_object()
            .ok_or_else(|| DecodeError::invalid("json", "expected an object", text))?;
        let id = ["device_id", "id", "deviceid"]
            .iter()
            .find_map(|k| obj.get(*k).and_then(json_str))
            .filter(|s| !s.is_empty());
        match obj.get("location") {
            Some(Value::Object(loc)) => out.push(decode_location(loc, id, ctx, text)?),
            Some(Value::Array(locs)) => {
                for loc in locs {
                    let loc = loc
                        .as_object()
                        .ok_or_else(|| DecodeError::invalid("location", "expected an object", text))?;
                    out.push(decode_location(loc, id.clone(), ctx, text)?);
                }
            }
            Some(_) => return Err(DecodeError::invalid("location", "expected an object or array", text)),
            None => out.push(decode_location(obj, id, ctx, text)?),
        }
    }
    if out.is_empty() {
        return Err(DecodeError::invalid("json", "no location", text));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Device side
// ---------------------------------------------------------------------------------------

/// What an OsmAnd-protocol client sends: `GET` request targets (default) or
/// Transistorsoft JSON bodies.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsmandDevice {
    json: bool,
}

impl OsmandDevice {
    /// `/?id=…&lat=…` request targets, newline separated for several positions.
    pub fn query() -> Self {
        OsmandDevice { json: false }
    }
    /// Transistorsoft JSON bodies (`location` as an array for several positions).
    pub fn json() -> Self {
        OsmandDevice { json: true }
    }
}

fn pct_encode(out: &mut String, s: &str) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b',' | b':') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// The typed attributes as Traccar parameter names, in wire units.
fn attribute_params(a: &Attributes) -> Vec<(&'static str, String)> {
    let mut p: Vec<(&'static str, String)> = Vec::new();
    let mut num = |k: &'static str, v: Option<f64>| {
        if let Some(v) = v.filter(|v| v.is_finite()) {
            p.push((k, v.to_string()));
        }
    };
    num("batt", a.battery_pct);
    num("rpm", a.rpm);
    num("fuel", a.fuel_level_l);
    num("fuelLevel", a.fuel_level_pct);
    num("fuelUsed", a.fuel_used_l);
    num("fuelConsumption", a.fuel_rate_lph);
    num("odometer", a.odometer_m);
    num("tripOdometer", a.trip_odometer_m);
    num("hours", a.engine_hours.map(|h| h * 3_600_000.0));
    num("power", a.power_v);
    num("battery", a.battery_v);
    num("coolantTemp", a.coolant_c);
    num("engineLoad", a.engine_load_pct);
    num("throttle", a.throttle_pct);
    num("obdSpeed", a.obd_speed_kmh);
    if let Some(v) = a.ignition {
        p.push(("ignition", v.to_string()));
    }
    if let Some(v) = a.motion {
        p.push(("motion", v.to_string()));
    }
    if let Some(v) = a.rssi {
        p.push(("rssi", v.to_string()));
    }
    if let Some(v) = a.event {
        p.push(("event", v.to_string()));
    }
    if let Some(v) = &a.vin {
        p.push(("vin", v.clone()));
    }
    if let Some(v) = &a.driver_id {
        p.push(("driverUniqueId", v.clone()));
    }
    if !a.alarms.is_empty() {
        p.push(("alarm", a.alarms.iter().map(alarm_name).collect::<Vec<_>>().join(",")));
    }
    if !a.dtcs.is_empty() {
        p.push(("dtcs", a.dtcs.join(" ")));
    }
    p
}

/// Epoch seconds when whole, epoch ms when that reads unambiguously, else ISO-8601.
fn wire_timestamp(t: DateTime<Utc>) -> String {
    let nanos = t.timestamp_subsec_nanos();
    if nanos == 0 && t.timestamp() < i64::from(i32::MAX) {
        t.timestamp().to_string()
    } else if nanos.is_multiple_of(1_000_000) && t.timestamp_millis() >= i64::from(i32::MAX) {
        t.timestamp_millis().to_string()
    } else {
        t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
    }
}

impl OsmandDevice {
    fn target(id: &str, p: Option<&Position>, attrs: &Attributes) -> String {
        let mut s = String::with_capacity(160);
        s.push_str("/?id=");
        pct_encode(&mut s, id);
        if let Some(p) = p {
            s.push_str(&format!("&timestamp={}", wire_timestamp(p.time)));
            s.push_str(&format!("&lat={}&lon={}", p.latitude, p.longitude));
            if !p.valid {
                s.push_str("&valid=false");
            }
            if let Some(v) = p.speed_kmh.filter(|v| v.is_finite()) {
                s.push_str(&format!("&speed={}", v / KMH_PER_KNOT));
            }
            if let Some(v) = p.course_deg.filter(|v| v.is_finite()) {
                s.push_str(&format!("&bearing={v}"));
            }
            if let Some(v) = p.altitude_m.filter(|v| v.is_finite()) {
                s.push_str(&format!("&altitude={v}"));
            }
            if let Some(v) = p.hdop.filter(|v| v.is_finite()) {
                s.push_str(&format!("&hdop={v}"));
            }
            if let Some(v) = p.satellites {
                s.push_str(&format!("&sat={v}"));
            }
        }
        for (k, v) in attribute_params(attrs) {
            s.push('&');
            s.push_str(k);
            s.push('=');
            pct_encode(&mut s, &v);
        }
        s
    }

    fn location(p: Option<&Position>, attrs: &Attributes, now_hint: Option<DateTime<Utc>>) -> Value {
        let mut loc = Map::new();
        if let Some(t) = p.map(|p| p.time).or(now_hint) {
            loc.insert(
                "timestamp".into(),
                Value::String(t.to_rfc3339_opts(SecondsFormat::Millis, true)),
            );
        }
        if let Some(p) = p {
            let num = |v: f64| serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number);
            let mut c = Map::new();
            c.insert("latitude".into(), num(p.latitude));
            c.insert("longitude".into(), num(p.longitude));
            c.insert("accuracy".into(), num(p.hdop.unwrap_or(0.0)));
            c.insert("speed".into(), num(p.speed_kmh.map_or(-1.0, |v| v / 3.6)));
            c.insert("heading".into(), num(p.course_deg.unwrap_or(-1.0)));
            c.insert("altitude".into(), num(p.altitude_m.unwrap_or(0.0)));
            loc.insert("coords".into(), Value::Object(c));
        }
        if let Some(m) = attrs.motion {
            loc.insert("is_moving".into(), Value::Bool(m));
        }
        if let Some(o) = attrs.odometer_m.filter(|o| o.is_finite()) {
            loc.insert("odometer".into(), Value::from(o.round() as i64));
        }
        if let Some(b) = attrs.battery_pct.filter(|b| b.is_finite()) {
            let mut bat = Map::new();
            bat.insert("level".into(), Value::from(b / 100.0));
            bat.insert("is_charging".into(), Value::Bool(false));
            loc.insert("battery".into(), Value::Object(bat));
        }
        if let Some(a) = attrs.alarms.first() {
            loc.insert("alarm".into(), Value::String(alarm_name(a).to_owned()));
        }
        let mut extras = Map::new();
        for (k, v) in attribute_params(attrs) {
            if matches!(k, "batt" | "motion" | "odometer" | "alarm") {
                continue;
            }
            let value = match k {
                "ignition" => Value::Bool(v == "true"),
                "vin" | "driverUniqueId" | "dtcs" => Value::String(v),
                _ => v.parse::<f64>().ok().map_or(Value::String(v), Value::from),
            };
            extras.insert(k.into(), value);
        }
        loc.insert("extras".into(), Value::Object(extras));
        Value::Object(loc)
    }
}

impl DeviceEncoder for OsmandDevice {
    fn encode(&mut self, msg: &Message) -> Result<Vec<u8>, EncodeError> {
        let id = msg
            .imei
            .as_deref()
            .filter(|s| !s.is_empty())
            .ok_or(EncodeError::Invalid {
                field: "imei",
                reason: "OsmAnd requests carry the device id".into(),
            })?;
        if matches!(msg.kind, MessageKind::Login | MessageKind::CommandResponse) {
            return Err(EncodeError::Unsupported {
                protocol: "osmand",
                what: format!("{:?} messages (OsmAnd only reports positions)", msg.kind),
            });
        }
        if self.json {
            let locs: Vec<Value> = if msg.positions.is_empty() {
                vec![Self::location(None, &msg.attributes, None)]
            } else {
                msg.positions
                    .iter()
                    .map(|p| Self::location(Some(p), &p.attributes, None))
                    .collect()
            };
            let location = match <[Value; 1]>::try_from(locs) {
                Ok([one]) => one,
                Err(many) => Value::Array(many),
            };
            let mut root = Map::new();
            root.insert("location".into(), location);
            root.insert("device_id".into(), Value::String(id.to_owned()));
            return serde_json::to_vec(&Value::Object(root)).map_err(|e| EncodeError::Invalid {
                field: "json",
                reason: e.to_string(),
            });
        }
        let lines: Vec<String> = if msg.positions.is_empty() {
            vec![Self::target(id, None, &msg.attributes)]
        } else {
            msg.positions
                .iter()
                .map(|p| Self::target(id, Some(p), &p.attributes))
                .collect()
        };
        let mut out = lines.join("\n");
        out.push('\n');
        Ok(out.into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn ctx() -> DecodeContext {
        DecodeContext {
            now: Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).single().unwrap(),
        }
    }

    fn one(frame: &str) -> Message {
        let mut c = OsmandCodec;
        let mut m = c.decode(frame.as_bytes(), &ctx()).unwrap();
        assert_eq!(m.len(), 1);
        m.remove(0)
    }

    #[test]
    fn timestamps() {
        let t = |s| parse_timestamp(s).map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true));
        assert_eq!(t("1377177267").as_deref(), Some("2013-08-22T13:14:27.000Z"));
        assert_eq!(t("1442068686579").as_deref(), Some("2015-09-12T14:38:06.579Z"));
        assert_eq!(t("2016-01-27T18:55:47Z").as_deref(), Some("2016-01-27T18:55:47.000Z"));
        assert_eq!(
            t("2016-01-27T20:55:47+02:00").as_deref(),
            Some("2016-01-27T18:55:47.000Z")
        );
        assert_eq!(t("2016-01-27T18:55:47").as_deref(), Some("2016-01-27T18:55:47.000Z"));
        assert_eq!(t("2014-06-04 09:10:11").as_deref(), Some("2014-06-04T09:10:11.000Z"));
        assert_eq!(t("1377177267.5").as_deref(), Some("2013-08-22T13:14:27.500Z"));
        assert_eq!(t("yesterday"), None);
        assert_eq!(t("99999999999999999999"), None);
    }

    #[test]
    fn query_forms() {
        let m = one("GET /?id=7&location=60.5,30.25&speed=10&alarm=sos HTTP/1.1\r\n");
        assert_eq!(m.imei.as_deref(), Some("7"));
        assert_eq!(m.kind, MessageKind::Alarm);
        assert_eq!(m.positions[0].latitude, 60.5);
        assert!((m.positions[0].speed_kmh.unwrap() - 18.52).abs() < 1e-9);
        let m = one("id=abc%20d&lat=1&lon=2&ignition=true&valid=0");
        assert_eq!(m.imei.as_deref(), Some("abc d"));
        assert!(!m.positions[0].valid);
        assert_eq!(m.positions[0].attributes.ignition, Some(true));
        let m = one("/?timestamp=1377177267&lat=60.0&lon=30.0");
        assert_eq!(m.imei, None);
        let mut c = OsmandCodec;
        assert!(c.decode(b"/?id=1&lat=x&lon=2", &ctx()).is_err());
        assert!(c.decode(b"/?id=1&lat=%zz", &ctx()).is_err());
        assert!(c.decode(b"/?id=1&lat=95&lon=2", &ctx()).is_err());
    }

    #[test]
    fn several_targets_are_several_frames() {
        let mut c = OsmandCodec;
        let (m, e) = crate::decode_all(&mut c, b"/?id=1&lat=1&lon=2\r\n/?id=2&lat=3&lon=4\n", &ctx());
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].imei.as_deref(), Some("2"));
    }

    #[test]
    fn json_batch() {
        let body = r#"{"location":[{"timestamp":"2025-06-15T13:45:12.862Z","coords":{"latitude":1,"longitude":2,"speed":10,"heading":90,"altitude":3,"accuracy":5}},{"timestamp":"2025-06-15T13:45:13Z","coords":{"latitude":1.5,"longitude":2.5,"speed":-1,"heading":-1,"altitude":3,"accuracy":5},"extras":{"rpm":900}}],"device_id":"d1"}"#;
        let mut c = OsmandCodec;
        let m = c.decode(body.as_bytes(), &ctx()).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].positions[0].speed_kmh, Some(36.0));
        assert_eq!(m[1].kind, MessageKind::Obd);
        assert_eq!(m[1].positions[0].speed_kmh, None);
        assert_eq!(m[1].imei.as_deref(), Some("d1"));
        assert!(c.decode(b"{\"location\":", &ctx()).is_err());
    }

    #[test]
    fn custom_command_is_the_reply_body() {
        let c = OsmandCodec;
        assert_eq!(
            c.encode_command("1", &Command::Custom { text: "hello".into() }, &ctx()),
            Ok(b"hello".to_vec())
        );
        assert!(c.encode_command("1", &Command::Reboot, &ctx()).is_err());
    }
}
