//! Freematics ONE+ / Esprit OBD-II dongles speaking the Freematics Hub protocol
//! (PROTOCOLS.md §7; firmware `telelogger`, Traccar `FreematicsProtocolDecoder`).
//!
//! **Transports.** UDP (the firmware's default; one datagram = one frame) and TCP (a dongle
//! configured for it). Both are framed alike: a frame ends after `*` and its one or two
//! checksum digits (so frames written back to back, as a capture file or a bench holds
//! them, still split); CR LF or whitespace between frames is filler; a line that ends
//! without `*` is discarded (resync at the next line). A one-digit checksum directly
//! followed by a frame whose id starts with a hex digit is ambiguous — real datagrams
//! never do that, and our encoder always writes two digits.
//!
//! **Frame.** `<device id>#<payload>*<checksum>`, the checksum being the sum of every byte
//! before `*`, mod 256, in hex. The firmware prints it with `%X` (one digit when < 0x10),
//! Traccar with `%02X`; both are accepted, a mismatch is [`DecodeError::Checksum`].
//!
//! **Identity.** `Message.imei` is the id before `#`: the device id (`devid`) on current
//! firmware, which sends `<devid>#` in every datagram. Old firmware put a hub "feed id"
//! there (`0` before login, then whatever the server's reply assigned — `1` from us and
//! Traccar); for those the real identity is only in the login's `ID=` / `VIN=`, kept in
//! `attributes.io` (`ID`, always as text) and `attributes.vin`.
//!
//! **Events** (`EV=` anywhere in the payload; `KEY=VALUE` pairs). The firmware's event
//! numbers (PROTOCOLS.md, outside Traccar): 1 login, 2 logout, 3 sync, 4 reconnect,
//! 5 command, 6 ack, 7 ping. Kinds: 1 and 4 (and any event carrying a server key `SK`)
//! → `Login`; 7 → `Heartbeat`; 6 → `CommandResponse`; 2, 3, 5 and unknown → `Other`.
//! `message_type` is `EV=<n>`. Like Traccar, every event that carries `EV`, `TS` and `ID`
//! or `VIN` is answered `1#EV=<ev>,RX=1,TS=<ts>*<sum>` (the `1` becomes the device's feed
//! id on old firmware). `SSI` → `rssi`, `VIN` → `vin`; every pair is kept in `io` by name.
//!
//! **Data** (`<hex key>:<value>` or `=`, comma separated; no reply). Key `0` (device ms
//! counter) starts a record; each record becomes one message with one position: kind
//! `Obd` when it carries OBD-II PIDs (keys `0x100 + PID`), else `Position`. Mapped keys:
//! `10` UTC time `hhmmsscc`, `11` UTC date `ddmmyy`, `A`/`B` latitude/longitude, `C`
//! altitude m, `D` speed km/h, `E` course, `F` satellites, `12` HDOP, `20` accelerometer
//! (`x;y;z`: integers are 1/100 g as old firmware sends, decimals are g as v5 firmware
//! sends → `accel_mg`), `24` battery ×0.01 V → `battery_v`, `81` RSSI → `rssi`; PIDs go
//! through [`crate::obd`] with the firmware's own scaling (`COBD::normalizeData`: values
//! are already in J1979 units as integers — `10C:4375` is 4375 rpm — except PID A6, sent
//! as the raw 0.1 km count, and PID 01, sent as its byte A). `82` (device temperature;
//! Traccar scales it ×0.1, v5 firmware sends whole °C), `30` (trip distance) and every
//! other key stay raw in `io` only, keyed by their numeric id. Every raw value is kept in
//! `io` as well.
//!
//! **Time.** Date `11` + time `10` → that UTC time. Time `10` alone (v5 firmware logs no
//! date) → that time of day on the date, among yesterday/today/tomorrow of `ctx.now`,
//! that lies nearest to `ctx.now` (Traccar puts it on the server's current date).
//! Neither, or values that are no valid date/time → `ctx.now`.
//!
//! **Position.** `valid` is true when the record has `A` and `B` and they are not both 0;
//! a record without coordinates still yields a position (0, 0, `valid: false`) carrying
//! its attributes, as Traccar does.
//!
//! **Downlink.** PROTOCOLS.md documents no hub command form: [`Command::Custom`] is sent
//! as `1#<text>*<sum>` (the hub envelope the firmware verifies), every other command is
//! `EncodeError::Unsupported`.
//!
//! **Device side** ([`FreematicsDevice`]): login `EV=1,TS,ID[,VIN][,SSI]`, heartbeat
//! `EV=7` (ping), and data datagrams with one record per position (date, time, GPS,
//! battery, accelerometer, RSSI and the OBD PIDs the typed attributes hold), checksum
//! as two hex digits; TCP frames end with CR LF.

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};

use crate::checksum::sum8;
use crate::codec::{Codec, DecodeContext, DeviceEncoder, Framing, Transport};
use crate::error::{DecodeError, EncodeError, FrameError};
use crate::model::{Attributes, Command, IoValue, Message, MessageKind, Position};
use crate::obd::{self, MonitorStatus, PidValue};

/// Largest frame accepted: firmware buffers are a few KiB; a UDP datagram cannot exceed 64 KiB.
pub const MAX_FRAME: usize = 16 * 1024;

/// A session codec for one datagram source (UDP) or connection (TCP).
pub fn codec(transport: Transport) -> Option<Box<dyn Codec>> {
    match transport {
        Transport::Udp | Transport::Tcp => Some(Box::new(FreematicsCodec { transport })),
        Transport::Http => None,
    }
}

/// A device-side encoder (what a Freematics dongle sends).
pub fn device(transport: Transport) -> Option<Box<dyn DeviceEncoder>> {
    match transport {
        Transport::Udp | Transport::Tcp => Some(Box::new(FreematicsDevice::new(transport))),
        Transport::Http => None,
    }
}

#[derive(Debug, Clone)]
pub struct FreematicsCodec {
    transport: Transport,
}

fn is_filler(b: u8) -> bool {
    b.is_ascii_whitespace() || b == 0
}

impl Codec for FreematicsCodec {
    fn protocol(&self) -> crate::Protocol {
        crate::Protocol::Freematics
    }

    fn frame(&self, buf: &[u8], eof: bool) -> Framing {
        let Some(start) = buf.iter().position(|b| !is_filler(*b)) else {
            return Framing::Incomplete;
        };
        // A datagram is complete: what it ends with is all there is.
        let eof = eof || self.transport == Transport::Udp;
        let window_end = buf.len().min(start.saturating_add(MAX_FRAME));
        let window = buf.get(start..window_end).unwrap_or_default();
        match memchr::memchr2(b'*', b'\n', window) {
            Some(i) if window.get(i) == Some(&b'\n') => Framing::Resync {
                discard: start + i + 1,
                error: FrameError::new("line without '*' checksum"),
            },
            Some(i) => {
                let after = start + i + 1;
                let hex_at = |j: usize| buf.get(j).is_some_and(|b| b.is_ascii_hexdigit());
                let end = if hex_at(after) && hex_at(after + 1) {
                    after + 2
                } else if hex_at(after) {
                    // One digit: a second may still be on its way.
                    if after + 1 >= buf.len() && !eof {
                        return Framing::Incomplete;
                    }
                    after + 1
                } else {
                    if after >= buf.len() && !eof {
                        return Framing::Incomplete;
                    }
                    after
                };
                Framing::Frame { start, end }
            }
            None if window.len() >= MAX_FRAME => Framing::Resync {
                discard: window_end,
                error: FrameError::new(format!("no '*' checksum within {MAX_FRAME} bytes")),
            },
            None if eof => Framing::Frame { start, end: buf.len() },
            None => Framing::Incomplete,
        }
    }

    fn decode(&mut self, frame: &[u8], ctx: &DecodeContext) -> Result<Vec<Message>, DecodeError> {
        decode_frame(frame, ctx)
    }

    fn encode_command(&self, _imei: &str, command: &Command, _ctx: &DecodeContext) -> Result<Vec<u8>, EncodeError> {
        match command {
            Command::Custom { text } => {
                if text.is_empty() || text.bytes().any(|b| b == b'*' || b.is_ascii_control()) {
                    return Err(EncodeError::Invalid {
                        field: "text",
                        reason: "must be non-empty, without '*' or control characters".into(),
                    });
                }
                Ok(envelope("1", text).into_bytes())
            }
            other => Err(EncodeError::Unsupported {
                protocol: "freematics",
                what: format!("{other:?}"),
            }),
        }
    }
}

/// `<id>#<payload>*<sum>` with the sum as two upper-case hex digits.
fn envelope(id: &str, payload: &str) -> String {
    let mut s = String::with_capacity(id.len() + payload.len() + 4);
    s.push_str(id);
    s.push('#');
    s.push_str(payload);
    let sum = sum8(s.as_bytes());
    s.push_str(&format!("*{sum:02X}"));
    s
}

fn trim(mut b: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = b
        && is_filler(*first)
    {
        b = rest;
    }
    while let [rest @ .., last] = b
        && is_filler(*last)
    {
        b = rest;
    }
    b
}

fn decode_frame(frame: &[u8], ctx: &DecodeContext) -> Result<Vec<Message>, DecodeError> {
    let text = trim(frame);
    if text.len() > MAX_FRAME {
        return Err(DecodeError::Length {
            declared: MAX_FRAME,
            actual: text.len(),
            excerpt: crate::error::hex_excerpt(text),
        });
    }
    let star = memchr::memchr(b'*', text).ok_or_else(|| DecodeError::invalid("checksum", "no '*'", frame))?;
    let (body, tail) = text.split_at(star);
    let digits = tail.get(1..).unwrap_or_default();
    if digits.is_empty() || digits.len() > 2 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(DecodeError::invalid(
            "checksum",
            "expected one or two hex digits after '*'",
            frame,
        ));
    }
    let carried = digits.iter().fold(0u8, |acc, d| {
        (acc << 4) | (*d as char).to_digit(16).map_or(0, |v| v as u8)
    });
    let computed = sum8(body);
    if carried != computed {
        return Err(DecodeError::checksum(
            format!("{computed:02X}"),
            String::from_utf8_lossy(digits),
            frame,
        ));
    }
    let body = std::str::from_utf8(body).map_err(|_| DecodeError::invalid("frame", "not ASCII text", frame))?;
    let (id, payload) = body
        .split_once('#')
        .ok_or_else(|| DecodeError::invalid("device id", "no '#'", frame))?;
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(DecodeError::invalid(
            "device id",
            "empty, too long or not printable",
            frame,
        ));
    }
    let is_event = payload.split(',').any(|p| {
        let key = p.split_once(['=', ':']).map_or(p, |(k, _)| k);
        key.trim() == "EV"
    });
    if is_event {
        Ok(vec![decode_event(id, payload)])
    } else if payload.trim().is_empty() {
        Ok(vec![Message::new(MessageKind::Other).with_imei(id).with_type("empty")])
    } else {
        decode_data(id, payload, ctx, frame)
    }
}

/// A raw text value as the most specific IO value it reads as.
fn io_value(v: &str) -> IoValue {
    if let Ok(u) = v.parse::<u64>() {
        IoValue::U64(u)
    } else if let Ok(i) = v.parse::<i64>() {
        IoValue::I64(i)
    } else if let Some(f) = v.parse::<f64>().ok().filter(|f| f.is_finite()) {
        IoValue::F64(f)
    } else {
        IoValue::Text(v.to_owned())
    }
}

fn decode_event(id: &str, payload: &str) -> Message {
    let mut attrs = Attributes::default();
    let mut ev: Option<&str> = None;
    let mut ts: Option<&str> = None;
    let mut identity = false;
    let mut server_key = false;
    for pair in payload.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "EV" => ev = Some(v),
            "TS" => ts = Some(v),
            "ID" => identity = true,
            "VIN" => {
                identity = true;
                if !v.is_empty() {
                    attrs.vin = Some(v.to_owned());
                }
            }
            "SSI" => attrs.rssi = v.parse().ok(),
            "SK" => server_key = true,
            _ => {}
        }
        // `ID` is an identifier: kept as the text it is (`0123` must not become 123).
        let value = if k == "ID" {
            IoValue::Text(v.to_owned())
        } else {
            io_value(v)
        };
        attrs.io.push_name(k, value);
    }
    let code = ev.and_then(|e| e.parse::<u32>().ok());
    attrs.event = code;
    let kind = match code {
        _ if server_key => MessageKind::Login,
        Some(1 | 4) => MessageKind::Login,
        Some(7) => MessageKind::Heartbeat,
        Some(6) => MessageKind::CommandResponse,
        _ => MessageKind::Other,
    };
    let mut msg = Message::new(kind)
        .with_imei(id)
        .with_type(format!("EV={}", ev.unwrap_or("")));
    msg.attributes = attrs;
    if let (Some(ev), Some(ts), true) = (ev, ts, identity) {
        msg.ack = Some(envelope("1", &format!("EV={ev},RX=1,TS={ts}")).into_bytes());
    }
    msg
}

#[derive(Default)]
struct Record {
    time: Option<(u32, u32, u32, u32)>,
    date: Option<(u32, u32, u32)>,
    lat: Option<f64>,
    lon: Option<f64>,
    altitude: Option<f64>,
    speed: Option<f64>,
    course: Option<f64>,
    satellites: Option<u8>,
    hdop: Option<f64>,
    attrs: Attributes,
    obd: bool,
}

/// `n` decimal digits, left-padded with zeros as the firmware drops leading zeros.
fn digits_padded(v: &str, n: usize) -> Option<Vec<u32>> {
    if v.is_empty() || v.len() > n || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut out = vec![0u32; n - v.len()];
    out.extend(v.bytes().map(|b| u32::from(b - b'0')));
    Some(out)
}

fn two(d: &[u32], i: usize) -> u32 {
    d.get(i).copied().unwrap_or(0) * 10 + d.get(i + 1).copied().unwrap_or(0)
}

fn parse_f64(v: &str, field: &'static str, frame: &[u8]) -> Result<f64, DecodeError> {
    v.trim()
        .parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .ok_or_else(|| DecodeError::invalid(field, format!("{v:?} is not a number"), frame))
}

/// `x;y;z`: integers are 1/100 g (old firmware), decimals are g (v5 `ELEMENT_FLOAT_D2`).
fn parse_accel(v: &str) -> Option<[i32; 3]> {
    let mut it = v.split(';');
    let parts = [it.next()?, it.next()?, it.next()?];
    if it.next().is_some() {
        return None;
    }
    let in_g = parts.iter().any(|p| p.contains('.'));
    let mut out = [0i32; 3];
    for (o, p) in out.iter_mut().zip(parts) {
        let f: f64 = p.trim().parse().ok().filter(|f: &f64| f.is_finite())?;
        let mg = if in_g { f * 1000.0 } else { f * 10.0 };
        if mg.abs() > 1.0e6 {
            return None;
        }
        *o = mg.round() as i32;
    }
    Some(out)
}

/// The firmware's scaled PID value as our typed value (see the module docs).
fn scaled_pid(pid: u8, v: f64) -> Option<PidValue> {
    match pid {
        0x01 => {
            let a = (0.0..=255.0).contains(&v).then_some(v as u8)?;
            Some(PidValue::MonitorStatus(MonitorStatus::from_raw([a, 0, 0, 0])))
        }
        0xA6 => Some(PidValue::Number(v / 10.0)),
        _ => Some(PidValue::Number(v)),
    }
}

fn apply_field(rec: &mut Record, key: u16, v: &str, frame: &[u8]) -> Result<(), DecodeError> {
    match key {
        0x10 => {
            let d = digits_padded(v, 8).ok_or_else(|| DecodeError::invalid("time", format!("{v:?}"), frame))?;
            rec.time = Some((two(&d, 0), two(&d, 2), two(&d, 4), two(&d, 6)));
        }
        0x11 => {
            let d = digits_padded(v, 6).ok_or_else(|| DecodeError::invalid("date", format!("{v:?}"), frame))?;
            rec.date = Some((two(&d, 0), two(&d, 2), two(&d, 4)));
        }
        0xA => rec.lat = Some(parse_f64(v, "latitude", frame)?),
        0xB => rec.lon = Some(parse_f64(v, "longitude", frame)?),
        0xC => rec.altitude = Some(parse_f64(v, "altitude", frame)?),
        0xD => rec.speed = Some(parse_f64(v, "speed", frame)?),
        0xE => rec.course = Some(parse_f64(v, "course", frame)?),
        0xF => rec.satellites = v.trim().parse::<u8>().ok(),
        0x12 => rec.hdop = Some(parse_f64(v, "hdop", frame)?),
        0x20 => rec.attrs.accel_mg = parse_accel(v),
        0x24 => rec.attrs.battery_v = Some(parse_f64(v, "battery", frame)? * 0.01),
        0x81 => rec.attrs.rssi = v.trim().parse().ok(),
        0x100..=0x1FF => {
            rec.obd = true;
            let pid = (key & 0xFF) as u8;
            if let Some(pv) = v
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .and_then(|value| scaled_pid(pid, value))
            {
                obd::apply(&mut rec.attrs, pid, &pv);
            }
        }
        _ => {}
    }
    rec.attrs.io.push_id(u32::from(key), io_value(v));
    Ok(())
}

/// The fix time of a record (see the module docs).
fn record_time(rec: &Record, now: DateTime<Utc>) -> DateTime<Utc> {
    let Some((h, m, s, cs)) = rec.time else {
        return now;
    };
    let Some(tod) = NaiveTime::from_hms_milli_opt(h, m, s, cs * 10) else {
        return now;
    };
    if let Some((d, mo, y)) = rec.date {
        return NaiveDate::from_ymd_opt(2000 + y as i32, mo, d).map_or(now, |date| date.and_time(tod).and_utc());
    }
    let today = now.date_naive();
    [today.pred_opt(), Some(today), today.succ_opt()]
        .into_iter()
        .flatten()
        .map(|d| d.and_time(tod).and_utc())
        .min_by_key(|t| (*t - now).abs())
        .unwrap_or(now)
}

fn finish(rec: Record, id: &str, ctx: &DecodeContext, frame: &[u8]) -> Result<Message, DecodeError> {
    let time = record_time(&rec, ctx.now);
    let mut p = match (rec.lat, rec.lon) {
        (Some(lat), Some(lon)) => {
            if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
                return Err(DecodeError::invalid(
                    "coordinates",
                    format!("{lat},{lon} out of range"),
                    frame,
                ));
            }
            Position::new(time, lat, lon, !(lat == 0.0 && lon == 0.0))
        }
        _ => Position::new(time, 0.0, 0.0, false),
    };
    p.altitude_m = rec.altitude;
    p.speed_kmh = rec.speed;
    p.course_deg = rec.course;
    p.satellites = rec.satellites;
    p.hdop = rec.hdop;
    p.attributes = rec.attrs;
    let kind = if rec.obd {
        MessageKind::Obd
    } else {
        MessageKind::Position
    };
    Ok(Message::new(kind)
        .with_imei(id)
        .with_type("data")
        .with_positions(vec![p]))
}

fn decode_data(id: &str, payload: &str, ctx: &DecodeContext, frame: &[u8]) -> Result<Vec<Message>, DecodeError> {
    let mut out = Vec::new();
    let mut rec: Option<Record> = None;
    for pair in payload.split(',') {
        let pair = pair.trim();
        if pair.is_empty() {
            continue;
        }
        let (k, v) = pair
            .split_once([':', '='])
            .ok_or_else(|| DecodeError::invalid("field", format!("{pair:?} has no ':'"), frame))?;
        let k = k.trim();
        if k.is_empty() || k.len() > 4 {
            return Err(DecodeError::invalid(
                "field",
                format!("key {k:?} is not 1-4 hex digits"),
                frame,
            ));
        }
        let key = u16::from_str_radix(k, 16)
            .map_err(|_| DecodeError::invalid("field", format!("key {k:?} is not hex"), frame))?;
        if key == 0
            && let Some(done) = rec.take()
        {
            out.push(finish(done, id, ctx, frame)?);
        }
        let r = rec.get_or_insert_with(Record::default);
        apply_field(r, key, v, frame)?;
    }
    if let Some(done) = rec.take() {
        out.push(finish(done, id, ctx, frame)?);
    }
    if out.is_empty() {
        out.push(Message::new(MessageKind::Other).with_imei(id).with_type("empty"));
    }
    Ok(out)
}

/// What a Freematics dongle sends. Keeps the device's millisecond counter (`TS` and
/// record key `0`), which advances one second per record.
#[derive(Debug, Clone)]
pub struct FreematicsDevice {
    transport: Transport,
    ms: u64,
}

impl FreematicsDevice {
    pub fn new(transport: Transport) -> Self {
        FreematicsDevice { transport, ms: 20_000 }
    }

    fn tick(&mut self) -> u64 {
        self.ms = self.ms.saturating_add(1000);
        self.ms
    }
}

fn round_int(v: f64) -> Option<i64> {
    (v.is_finite() && v.abs() < 9.0e15).then(|| v.round() as i64)
}

/// The OBD keys the firmware sends, from the typed attributes, in firmware units.
fn obd_fields(a: &Attributes) -> Vec<(u16, i64)> {
    let pid = |p: u8, v: Option<f64>| v.and_then(round_int).map(|x| (0x100 | u16::from(p), x));
    [
        pid(0x04, a.engine_load_pct),
        pid(0x05, a.coolant_c),
        pid(0x0B, a.map_kpa),
        pid(0x0C, a.rpm),
        pid(0x0D, a.obd_speed_kmh),
        pid(0x0F, a.intake_temp_c),
        pid(0x10, a.maf_gs),
        pid(0x11, a.throttle_pct),
        pid(0x1F, a.run_time_s),
        pid(0x21, a.distance_mil_on_km),
        pid(0x2F, a.fuel_level_pct),
        pid(0x31, a.distance_since_clear_km),
        pid(0x42, a.power_v),
        pid(0x46, a.ambient_c),
        pid(0x5C, a.oil_temp_c),
        pid(0x5E, a.fuel_rate_lph),
        pid(0xA6, a.odometer_m.map(|m| m / 100.0)),
    ]
    .into_iter()
    .flatten()
    .collect()
}

impl FreematicsDevice {
    fn record(&mut self, out: &mut String, p: Option<&Position>, attrs: &Attributes) {
        use std::fmt::Write;
        if !out.is_empty() {
            out.push(',');
        }
        let _ = write!(out, "0:{}", self.tick());
        for (k, v) in obd_fields(attrs) {
            let _ = write!(out, ",{k:X}:{v}");
        }
        if let Some(p) = p {
            let t = p.time;
            let _ = write!(
                out,
                ",11:{},10:{}{:02}",
                t.format("%d%m%y"),
                t.format("%H%M%S"),
                (t.timestamp_subsec_millis() / 10).min(99)
            );
            if p.valid {
                let _ = write!(out, ",A:{:.6},B:{:.6}", p.latitude, p.longitude);
            }
            if let Some(alt) = p.altitude_m.filter(|v| v.is_finite()) {
                let _ = write!(out, ",C:{alt:.1}");
            }
            if let Some(s) = p.speed_kmh.filter(|v| v.is_finite()) {
                let _ = write!(out, ",D:{s:.1}");
            }
            if let Some(c) = p.course_deg.and_then(round_int) {
                let _ = write!(out, ",E:{c}");
            }
            if let Some(n) = p.satellites {
                let _ = write!(out, ",F:{n}");
            }
            if let Some(h) = p.hdop.and_then(round_int) {
                let _ = write!(out, ",12:{h}");
            }
        }
        if let Some(v) = attrs.battery_v.and_then(|v| round_int(v * 100.0)) {
            let _ = write!(out, ",24:{v}");
        }
        if let Some([x, y, z]) = attrs.accel_mg {
            let cg = |v: i32| (f64::from(v) / 10.0).round() as i64;
            let _ = write!(out, ",20:{};{};{}", cg(x), cg(y), cg(z));
        }
        if let Some(r) = attrs.rssi {
            let _ = write!(out, ",81:{r}");
        }
    }

    fn finish(&self, id: &str, payload: &str) -> Result<Vec<u8>, EncodeError> {
        let mut frame = envelope(id, payload);
        if frame.len() > MAX_FRAME {
            return Err(EncodeError::Invalid {
                field: "positions",
                reason: format!("datagram of {} bytes exceeds {MAX_FRAME}", frame.len()),
            });
        }
        if self.transport == Transport::Tcp {
            frame.push_str("\r\n");
        }
        Ok(frame.into_bytes())
    }
}

fn check_text(field: &'static str, v: &str) -> Result<(), EncodeError> {
    if v.is_empty()
        || v.bytes()
            .any(|b| !b.is_ascii_graphic() || matches!(b, b'#' | b'*' | b',' | b'=' | b':'))
    {
        return Err(EncodeError::Invalid {
            field,
            reason: format!("{v:?} must be printable ASCII without # * , = :"),
        });
    }
    Ok(())
}

impl DeviceEncoder for FreematicsDevice {
    fn encode(&mut self, msg: &Message) -> Result<Vec<u8>, EncodeError> {
        let id = msg.imei.as_deref().ok_or(EncodeError::Invalid {
            field: "imei",
            reason: "Freematics frames carry the device id".into(),
        })?;
        check_text("imei", id)?;
        match msg.kind {
            MessageKind::Login => {
                let mut payload = format!("EV=1,TS={},ID={id}", self.tick());
                if let Some(vin) = &msg.attributes.vin {
                    check_text("vin", vin)?;
                    payload.push_str(&format!(",VIN={vin}"));
                }
                if let Some(r) = msg.attributes.rssi {
                    payload.push_str(&format!(",SSI={r}"));
                }
                self.finish(id, &payload)
            }
            MessageKind::Heartbeat => {
                let payload = format!("EV=7,TS={},ID={id}", self.tick());
                self.finish(id, &payload)
            }
            MessageKind::Position | MessageKind::Obd | MessageKind::Alarm => {
                let mut payload = String::with_capacity(64 + msg.positions.len() * 160);
                if msg.positions.is_empty() {
                    if msg.attributes.is_empty() {
                        return Err(EncodeError::Invalid {
                            field: "positions",
                            reason: "nothing to send".into(),
                        });
                    }
                    self.record(&mut payload, None, &msg.attributes);
                }
                for p in &msg.positions {
                    self.record(&mut payload, Some(p), &p.attributes);
                }
                self.finish(id, &payload)
            }
            MessageKind::CommandResponse | MessageKind::Other => Err(EncodeError::Unsupported {
                protocol: "freematics",
                what: format!("{:?} messages", msg.kind),
            }),
        }
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

    #[test]
    fn one_digit_checksum_and_tcp_framing() {
        // sum = 0x0D with a one-digit checksum as the firmware prints it.
        let mut body = String::from("AB#0:1,24:1");
        while sum8(body.as_bytes()) != 0x0D {
            body.push('1');
        }
        let frame = format!("{body}*D");
        let c = codec(Transport::Tcp).unwrap();
        let two = format!("{frame}\r\n{frame}");
        assert_eq!(
            c.frame(two.as_bytes(), false),
            Framing::Frame {
                start: 0,
                end: frame.len()
            }
        );
        assert_eq!(c.frame(frame.as_bytes(), false), Framing::Incomplete);
        assert_eq!(
            c.frame(frame.as_bytes(), true),
            Framing::Frame {
                start: 0,
                end: frame.len()
            }
        );
        assert!(matches!(
            c.frame(b"garbage\r\nX#", false),
            Framing::Resync { discard: 9, .. }
        ));
        let mut c = codec(Transport::Udp).unwrap();
        let m = c.decode(frame.as_bytes(), &ctx()).unwrap();
        assert_eq!(m[0].imei.as_deref(), Some("AB"));
    }

    #[test]
    fn events() {
        let mut c = codec(Transport::Udp).unwrap();
        let f = envelope("1", "EV=2,TS=1871902,ID=ESP32305C06C40A24");
        let m = c.decode(f.as_bytes(), &ctx()).unwrap();
        assert_eq!(m[0].kind, MessageKind::Other);
        assert_eq!(m[0].imei.as_deref(), Some("1"));
        assert_eq!(
            m[0].ack.as_deref(),
            Some(envelope("1", "EV=2,RX=1,TS=1871902").as_bytes())
        );
        let f = envelope("X", "EV=7,TS=5");
        let m = c.decode(f.as_bytes(), &ctx()).unwrap();
        assert_eq!(m[0].kind, MessageKind::Heartbeat);
        assert_eq!(m[0].ack, None, "no identity, no reply");
    }

    #[test]
    fn time_only_uses_nearest_day() {
        let mut c = codec(Transport::Udp).unwrap();
        // 23:59:00 with now = 03:04:05 on Jan 2 → Jan 1 23:59.
        let f = envelope("X", "0:1,10:23590000,A:1.5,B:2.5");
        let m = c.decode(f.as_bytes(), &ctx()).unwrap();
        assert_eq!(
            m[0].positions[0].time,
            Utc.with_ymd_and_hms(2026, 1, 1, 23, 59, 0).single().unwrap()
        );
        let f = envelope("X", "0:1,10:2590000,A:1.5,B:2.5");
        let m = c.decode(f.as_bytes(), &ctx()).unwrap();
        assert_eq!(
            m[0].positions[0].time,
            Utc.with_ymd_and_hms(2026, 1, 2, 2, 59, 0).single().unwrap()
        );
    }

    #[test]
    fn obd_keys_and_accel() {
        let mut c = codec(Transport::Udp).unwrap();
        let f = envelope("X", "0:1,10C:4375,1A6:123456,142:13,101:131,20:0.01;-0.02;0.98,13:5");
        let m = c.decode(f.as_bytes(), &ctx()).unwrap();
        assert_eq!(m[0].kind, MessageKind::Obd);
        let a = &m[0].positions[0].attributes;
        assert_eq!(a.rpm, Some(4375.0));
        assert_eq!(a.odometer_m, Some(12_345_600.0));
        assert_eq!(a.power_v, Some(13.0));
        assert_eq!(a.accel_mg, Some([10, -20, 980]));
        assert_eq!(a.io.get_id(0x13), Some(&IoValue::U64(5)));
        assert_eq!(a.io.get_id(0x101), Some(&IoValue::U64(131)));
    }

    #[test]
    fn custom_command() {
        let c = codec(Transport::Udp).unwrap();
        let out = c
            .encode_command(
                "X",
                &Command::Custom {
                    text: "EV=5,CMD=REBOOT".into(),
                },
                &ctx(),
            )
            .unwrap();
        assert_eq!(out, envelope("1", "EV=5,CMD=REBOOT").into_bytes());
        assert!(c.encode_command("X", &Command::EngineStop, &ctx()).is_err());
    }
}
