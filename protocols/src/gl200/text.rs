//! Queclink ASCII reports: `+RESP:GTxxx,<protocol version>,<IMEI>,<device name>,…,<send time>,<count>`.
//!
//! Every report keeps all its fields, raw, in `io` keyed by field index (`"0"` is the header,
//! `"1"` the protocol version …), so nothing the device sent is lost even where the layout
//! below is not known. Decoded values go to typed attributes where the model has a home for
//! them, otherwise to `io` under Traccar's attribute names (`power2`, `adBlueLevel`, `tag1Id`,
//! `temp1`, `iccid` …). Report-level values (battery, odometer, status) belong to the last fix
//! of a report, as in Traccar; a report without a fix carries them on the message.
//!
//! Location blocks are `<accuracy>,<speed km/h>,<azimuth>,<altitude>,<lon>,<lat>,<fix time>`
//! followed by an optional Wi-Fi list, `<MCC>,<MNC>,<LAC hex>,<cell hex>` and one reserved /
//! odometer field. Where a report has a fixed layout (GTERI, GTIGN, GTDAT, GTOBD, GTCAN) the
//! decoder walks it by index, like Traccar; everywhere else, and as a fallback when a model
//! inserts fields we do not know, a block is found by its two consecutive coordinate fields
//! (`-?d{1,3}.dddddd`), which no other field has. GPS accuracy 0 means "last known fix":
//! such a position is decoded with `valid = false`.
//!
//! Per-model differences (which fields GTERI/GTINF/GTCAN carry) follow the protocol version's
//! device-type prefix, with the same model table Traccar uses.

use std::borrow::Cow;

use chrono::{DateTime, Utc};

use super::parse_time14;
use crate::codec::DecodeContext;
use crate::error::DecodeError;
use crate::model::{Alarm, Attributes, IoKey, IoValue, Message, MessageKind, Position};

/// Device model by protocol-version prefix (2 characters, or 6 for 10-character versions).
const MODELS: &[(&str, &str)] = &[
    ("02", "GL200"),
    ("04", "GV200"),
    ("06", "GV300"),
    ("08", "GMT100"),
    ("09", "GV50P"),
    ("0F", "GV55"),
    ("10", "GV55 LITE"),
    ("11", "GL500"),
    ("1A", "GL300"),
    ("1F", "GV500"),
    ("21", "GL200"),
    ("25", "GV300"),
    ("27", "GV300W"),
    ("28", "GL300VC"),
    ("2C", "GL300W"),
    ("2D", "GV500VC"),
    ("2F", "GV55"),
    ("4F", "GV56"),
    ("30", "GL300"),
    ("31", "GV65"),
    ("35", "GV200"),
    ("36", "GV500"),
    ("3F", "GMT100"),
    ("40", "GL500"),
    ("41", "GV75W"),
    ("42", "GT501"),
    ("44", "GL530"),
    ("45", "GB100"),
    ("50", "GV55W"),
    ("52", "GL50"),
    ("55", "GL50B"),
    ("5E", "GV500MAP"),
    ("6E", "GV310LAU"),
    ("74", "GV350CEU"),
    ("BD", "CV200"),
    ("C2", "GV600M"),
    ("C3", "GL320M"),
    ("DC", "GV600MG"),
    ("DE", "GL500M"),
    ("DF", "CV100LG"),
    ("F1", "GV350M"),
    ("F8", "GV800W"),
    ("FC", "GV600W"),
    ("802004", "GV58LAU"),
    ("802005", "GV355CEU"),
    ("80201E", "GV30CEU"),
];

/// Model for a protocol version field (`""` when unknown).
pub(crate) fn model_of(version: &str) -> &'static str {
    let prefix = if version.len() > 6 {
        version.get(..6)
    } else {
        version.get(..2)
    };
    prefix
        .and_then(|p| MODELS.iter().find(|(k, _)| k.eq_ignore_ascii_case(p)))
        .map_or("", |(_, m)| m)
}

/// Report types whose message is an alarm (Traccar's alarm mapping; GTSTT is a motion-state
/// report and stays a position even though it can raise `movement`).
const ALARM_TYPES: &[&str] = &[
    "SOS", "SPD", "TOW", "IDL", "PNA", "PFA", "EPN", "MPN", "EPF", "MPF", "BPL", "SWG", "TMP", "TEM", "JDR", "JDS",
    "HBM", "DAR",
];
/// Reports without a vehicle fix of their own (device info, cell/Wi-Fi lists, accessory and
/// transparent-data reports): `other`, even when they append the last known location.
const OTHER_TYPES: &[&str] = &["INF", "VER", "GSM", "LBS", "WIF", "BID", "BAA", "DTT", "DAT"];

pub(super) fn kind_of(prefix: &str, ty: &str) -> MessageKind {
    if prefix == "+ACK" {
        if ty == "HBD" {
            MessageKind::Heartbeat
        } else {
            MessageKind::CommandResponse
        }
    } else if ty == "OBD" || ty == "CAN" {
        MessageKind::Obd
    } else if ALARM_TYPES.contains(&ty) {
        MessageKind::Alarm
    } else if OTHER_TYPES.contains(&ty) {
        MessageKind::Other
    } else {
        MessageKind::Position
    }
}

// ---------------------------------------------------------------------------------------------
// Field helpers. Every accessor is total: an index past the end reads as an empty field.

struct Report<'a> {
    v: Vec<&'a str>,
    model: &'static str,
    send_time: Option<DateTime<Utc>>,
}

impl<'a> Report<'a> {
    fn get(&self, i: usize) -> &'a str {
        self.v.get(i).copied().unwrap_or("")
    }
    fn n(&self) -> usize {
        self.v.len()
    }
    /// Index of the send time (second to last field).
    fn tail(&self) -> usize {
        self.n().saturating_sub(2)
    }
}

/// A read position in a report's fields, for layouts walked field by field.
struct Cursor<'r, 'a> {
    r: &'r Report<'a>,
    i: usize,
}

impl<'a> Cursor<'_, 'a> {
    fn next(&mut self) -> &'a str {
        let f = self.r.get(self.i);
        self.i = self.i.saturating_add(1);
        f
    }
    fn skip(&mut self, n: usize) {
        self.i = self.i.saturating_add(n);
    }
    /// No more fields before the send time.
    fn done(&self) -> bool {
        self.i >= self.r.tail()
    }
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn digits(s: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&s.len()) && all_digits(s)
}

fn all_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn uint(s: &str) -> Option<u64> {
    if s.len() <= 19 && all_digits(s) {
        s.parse().ok()
    } else {
        None
    }
}

fn int(s: &str) -> Option<i64> {
    let body = s.strip_prefix('-').or_else(|| s.strip_prefix('+')).unwrap_or(s);
    if body.len() <= 18 && all_digits(body) {
        s.parse().ok()
    } else {
        None
    }
}

fn hex(s: &str) -> Option<u64> {
    if s.len() <= 16 && all_hex(s) {
        u64::from_str_radix(s, 16).ok()
    } else {
        None
    }
}

/// A plain decimal (`-12.5`, `300`, `.5`); no exponents, `nan` or `inf`.
fn num(s: &str) -> Option<f64> {
    let body = s.strip_prefix('-').or_else(|| s.strip_prefix('+')).unwrap_or(s);
    let mut seen_digit = false;
    let mut seen_dot = false;
    for b in body.bytes() {
        match b {
            b'0'..=b'9' => seen_digit = true,
            b'.' if !seen_dot => seen_dot = true,
            _ => return None,
        }
    }
    if !seen_digit || body.len() > 24 {
        return None;
    }
    s.parse::<f64>().ok().filter(|f| f.is_finite())
}

/// `d{1,max}.d` — Queclink's one-decimal mileage/odometer fields.
fn dec1(s: &str, max_int: usize) -> bool {
    match s.split_once('.') {
        Some((i, f)) => digits(i, 1, max_int) && digits(f, 1, 1),
        None => false,
    }
}

/// `-?d{1,3}.dddddd`: how every longitude and latitude is written.
fn is_coord(s: &str) -> bool {
    let body = s.strip_prefix('-').unwrap_or(s);
    match body.split_once('.') {
        Some((i, f)) => digits(i, 1, 3) && digits(f, 6, 6),
        None => false,
    }
}

/// 15-digit IMEI or the 14-hex-digit MEID some CDMA units send.
fn looks_like_imei(s: &str) -> bool {
    (s.len() == 15 && all_digits(s)) || (s.len() == 14 && all_hex(s))
}

fn is_vin(s: &str) -> bool {
    s.len() == 17 && s.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
}

/// `HHHHH:MM:SS` hour meter, in hours.
fn hours(s: &str) -> Option<f64> {
    if s.is_empty() {
        return None;
    }
    let mut parts = s.split(':');
    let h = uint(parts.next()?)?;
    let m = parts.next().map_or(Some(0), uint)?;
    let sec = parts.next().map_or(Some(0), uint)?;
    Some(h as f64 + m as f64 / 60.0 + sec as f64 / 3600.0)
}

fn is_hours(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 11 && b[5] == b':' && b[8] == b':' && [&s[..5], &s[6..8], &s[9..]].iter().all(|p| all_digits(p))
}

fn set_io(a: &mut Attributes, name: &str, v: IoValue) {
    a.io.push_name(name, v);
}

fn io_f64(a: &mut Attributes, name: &str, v: Option<f64>) {
    if let Some(v) = v {
        set_io(a, name, IoValue::F64(v));
    }
}

fn io_i64(a: &mut Attributes, name: &str, v: Option<i64>) {
    if let Some(v) = v {
        set_io(a, name, IoValue::I64(v));
    }
}

fn io_text(a: &mut Attributes, name: &str, v: &str) {
    if !v.is_empty() {
        set_io(a, name, IoValue::Text(v.to_owned()));
    }
}

/// Move every value `src` has into `dst` (report-level values onto the last fix).
fn merge(dst: &mut Attributes, src: Attributes) {
    macro_rules! take {
        ($($f:ident),*) => { $( if src.$f.is_some() { dst.$f = src.$f; } )* };
    }
    take!(
        ignition,
        motion,
        odometer_m,
        trip_odometer_m,
        fuel_level_pct,
        fuel_level_l,
        fuel_used_l,
        fuel_rate_lph,
        rpm,
        obd_speed_kmh,
        engine_load_pct,
        throttle_pct,
        coolant_c,
        intake_temp_c,
        ambient_c,
        oil_temp_c,
        map_kpa,
        maf_gs,
        run_time_s,
        engine_hours,
        distance_mil_on_km,
        distance_since_clear_km,
        battery_v,
        battery_pct,
        power_v,
        accel_mg,
        vin,
        driver_id,
        rssi,
        event
    );
    dst.dtcs.extend(src.dtcs);
    for alarm in src.alarms {
        dst.raise(alarm);
    }
    dst.io.0.extend(src.io.0);
}

// ---------------------------------------------------------------------------------------------
// Location blocks.

/// The GPS part of a block starting at `s` (accuracy … fix time) plus a Wi-Fi list after it.
/// Returns the fix, when longitude and latitude are present, and the index of the MCC field.
fn gps_at(r: &Report, s: usize) -> (Option<Position>, usize) {
    let hdop = num(r.get(s));
    let lon = num(r.get(s + 4));
    let lat = num(r.get(s + 5));
    let time_field = r.get(s + 6);
    let time = if time_field.is_empty() {
        r.send_time
    } else {
        parse_time14(time_field)
    };
    let mut idx = s + 7;
    let pos = match (lon, lat, time) {
        (Some(lon), Some(lat), Some(time)) if lon.abs() <= 180.0 && lat.abs() <= 90.0 => {
            let mut p = Position::new(time, lat, lon, hdop != Some(0.0));
            p.hdop = hdop;
            p.speed_kmh = num(r.get(s + 1));
            p.course_deg = num(r.get(s + 2));
            p.altitude_m = num(r.get(s + 3));
            Some(p)
        }
        _ => None,
    };
    // GL300/GT501-style Wi-Fi list: <count>,(<mac>,<rssi>,,,)*
    let next = r.get(idx + 1);
    if next.len() == 12
        && all_hex(next)
        && let Some(count) = uint(r.get(idx))
    {
        idx += 1;
        for _ in 0..count {
            if idx >= r.n() {
                break;
            }
            idx += 5;
        }
    }
    (pos, idx)
}

/// `<MCC>,<MNC>,<LAC hex>,<cell hex>` at `idx`; returns the index after it.
fn cell_at(r: &Report, idx: usize, pos: Option<&mut Position>) -> usize {
    if let Some(p) = pos {
        let (mcc, mnc, lac, cid) = (r.get(idx), r.get(idx + 1), r.get(idx + 2), r.get(idx + 3));
        if let (Some(mcc), Some(mnc), Some(lac), Some(cid)) = (uint(mcc), uint(mnc), hex(lac), hex(cid)) {
            let io = &mut p.attributes.io;
            io.push_name("mcc", IoValue::U64(mcc));
            io.push_name("mnc", IoValue::U64(mnc));
            io.push_name("lac", IoValue::U64(lac));
            io.push_name("cid", IoValue::U64(cid));
        }
    }
    idx + 4
}

/// The first block whose coordinates sit in `[from + 4, to)`: the index of its accuracy field.
fn find_fix(r: &Report, from: usize, to: usize) -> Option<usize> {
    let to = to.min(r.n());
    (from + 4..to.saturating_sub(1))
        .find(|&i| {
            is_coord(r.get(i)) && is_coord(r.get(i + 1)) && {
                let t = r.get(i + 2);
                t.is_empty() || digits(t, 14, 14)
            }
        })
        .map(|i| i - 4)
}

/// Block start for layouts walked by index: `expected`, unless its coordinates are missing
/// and a block with coordinates follows (a model with fields we do not know about).
fn block_start(r: &Report, expected: usize) -> usize {
    if r.get(expected + 4).is_empty() || is_coord(r.get(expected + 4)) {
        return expected;
    }
    find_fix(r, expected, r.tail()).unwrap_or(expected)
}

/// Traccar's index-walked block: GPS, Wi-Fi, cell, then the model-dependent tail (GL5xx CSQ
/// fields; odometer or an append mask whose bit 0 adds satellites, bit 1 a trigger type,
/// bit 4 a jamming state).
fn block_walk(r: &Report, s: usize, out: &mut Vec<Position>) -> usize {
    let (mut pos, idx) = gps_at(r, s);
    let mut idx = cell_at(r, idx, pos.as_mut());
    let model = r.model;
    if model.starts_with("GL5") {
        idx += 2;
    }
    if model == "GT500MA" || model == "GT501" {
        idx += 1;
    } else if model != "GL320M" {
        let f = r.get(idx);
        idx += 1;
        if f.contains('.') {
            if let (Some(p), Some(km)) = (pos.as_mut(), num(f)) {
                p.attributes.odometer_m = Some(km * 1000.0);
            }
        } else if let Some(mask) = hex(f) {
            if mask & 1 != 0 {
                if let (Some(p), Some(sats)) = (pos.as_mut(), uint(r.get(idx))) {
                    p.satellites = u8::try_from(sats).ok();
                }
                idx += 1;
            }
            if mask & 2 != 0 {
                idx += 1;
            }
            if mask & 0x10 != 0 {
                idx += 1;
            }
        }
    }
    out.extend(pos);
    idx
}

/// Models whose GTFRI blocks end with an append mask rather than a reserved field.
const APPEND_MASK_MODELS: &[&str] = &["GV310LAU", "GV350CEU", "GV58LAU", "GV355CEU", "GV30CEU"];

/// All consecutive blocks from `first` (found by coordinates): returns the index of the last
/// block's reserved/odometer field.
fn blocks_scanned(r: &Report, first: usize, out: &mut Vec<Position>) -> usize {
    let mut s = first;
    loop {
        let (mut pos, idx) = gps_at(r, s);
        let mut idx = cell_at(r, idx, pos.as_mut());
        let twelfth = r.get(idx);
        if APPEND_MASK_MODELS.contains(&r.model) && twelfth.len() == 2 {
            // Newer firmware: an append mask (bit 0 satellites, bit 1 trigger type, bit 4
            // jamming state) whose fields sit between the cell and the report trailer.
            if let Some(mask) = hex(twelfth) {
                if mask & 1 != 0
                    && let (Some(p), Some(sats)) = (pos.as_mut(), uint(r.get(idx + 1)))
                {
                    p.satellites = u8::try_from(sats).ok();
                }
                idx += [1, 2, 0x10].iter().filter(|b| mask & **b != 0).count();
            }
        }
        let next = find_fix(r, idx, r.tail()).filter(|&n| n <= idx + 1);
        // The field after the cell is reserved, CSQ or (GL300W, GV500) the odometer in km.
        if (next.is_none() || next == Some(idx + 1))
            && idx < r.tail()
            && dec1(twelfth, 7)
            && let (Some(p), Some(km)) = (pos.as_mut(), num(twelfth))
        {
            p.attributes.odometer_m = Some(km * 1000.0);
        }
        out.extend(pos);
        match next {
            Some(n) if n > s => s = n,
            _ => return idx,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Shared attribute decoders.

/// Device status `XXYYZZ`: ignition state byte, digital inputs, digital outputs.
fn device_status(a: &mut Attributes, value: u64) {
    let ignition = (value >> 16) & 0xff;
    if ignition & 0x10 != 0 {
        a.ignition = Some(false);
    } else if ignition & 0x20 != 0 {
        a.ignition = Some(true);
    }
    let input = (value >> 8) & 0xff;
    let output = value & 0xff;
    set_io(a, "input", IoValue::U64(input));
    set_io(a, "in1", IoValue::Bool(input & 2 != 0));
    set_io(a, "in2", IoValue::Bool(input & 4 != 0));
    set_io(a, "output", IoValue::U64(output));
    set_io(a, "out1", IoValue::Bool(output & 1 != 0));
    set_io(a, "out2", IoValue::Bool(output & 2 != 0));
}

/// Motion/ignition state code of GTINF and GTSTT (`11` ignition off at rest … `42` moving).
fn motion_state(a: &mut Attributes, state: u64) {
    let (ignition, motion) = match state {
        0x16 | 0x1A | 0x12 => (Some(false), Some(true)),
        0x11 => (Some(false), Some(false)),
        0x21 => (Some(true), Some(false)),
        0x22 => (Some(true), Some(true)),
        0x41 => (None, Some(false)),
        0x42 => (None, Some(true)),
        _ => (None, None),
    };
    if ignition.is_some() {
        a.ignition = ignition;
    }
    if motion.is_some() {
        a.motion = motion;
    }
}

/// Analog input `n`: millivolts, or `F<level>` when configured as a fuel sensor.
fn analog(a: &mut Attributes, n: u32, s: &str) {
    if let Some(level) = s.strip_prefix('F') {
        io_i64(a, &format!("fuel{n}"), int(level));
    } else {
        io_f64(a, &format!("adc{n}"), int(s).map(|mv| mv as f64 / 1000.0));
    }
}

fn battery_pct(a: &mut Attributes, s: &str) {
    if let Some(v) = uint(s) {
        a.battery_pct = Some(v as f64);
    }
}

/// SAE J2012 trouble codes from Queclink's hex DTC list (4 hex digits per code).
pub(crate) fn dtcs_from_hex(s: &str) -> Vec<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len() / 4);
    for chunk in b.chunks_exact(4) {
        let Ok(code) = std::str::from_utf8(chunk) else { continue };
        let Ok(v) = u16::from_str_radix(code, 16) else { continue };
        if v == 0 {
            continue;
        }
        let letter = ['P', 'C', 'B', 'U'][usize::from(v >> 14)];
        out.push(format!("{letter}{}{:03X}", (v >> 12) & 3, v & 0xfff));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Report decoders.

#[derive(Default)]
struct Out {
    positions: Vec<Position>,
    attrs: Attributes,
    result: Option<String>,
}

/// GTFRI and its siblings (GTGEO, GTRTL, GTDOG): one or more blocks between a variable
/// prefix and one of four known trailers (the alternatives of Traccar's pattern, in its order).
fn decode_fri(r: &Report) -> Out {
    let mut out = Out::default();
    let vin = r.get(3);
    let name_i = if is_vin(vin) {
        out.attrs.vin = Some(vin.to_owned());
        4
    } else {
        3
    };
    let Some(first) = find_fix(r, name_i + 1, r.tail()) else {
        return out;
    };
    // <external power mV>,<report id/type>,<number>[,<reserved>][,<battery %>]
    let pre: &[&str] = r.v.get(name_i + 1..first).unwrap_or_default();
    let power = pre.first().copied().and_then(uint);
    if let Some(mv) = power.filter(|p| *p > 10) {
        out.attrs.power_v = Some(mv as f64 / 1000.0);
    }
    let report_type = pre.get(1).copied().filter(|s| digits(s, 1, 2)).and_then(uint);
    if let Some(b) = pre.get(4) {
        battery_pct(&mut out.attrs, b);
    }

    let last = blocks_scanned(r, first, &mut out.positions);
    let t: &[&str] = r.v.get(last + 1..r.tail()).unwrap_or_default();
    let a = &mut out.attrs;
    let opt = |s: &str, p: &dyn Fn(&str) -> bool| s.is_empty() || p(s);
    let g = |i: usize| t.get(i).copied().unwrap_or("");
    let temp = |s: &str| {
        let body = s.strip_prefix('-').unwrap_or(s);
        matches!(body.split_once('.'), Some((i, f)) if digits(i, 1, 2) && digits(f, 1, 1))
    };
    let fuel_cons = |s: &str| s == "Inf" || s == "NaN" || num(s).is_some_and(|_| !s.starts_with(['-', '+']));
    let dec = |s: &str| dec1(s, 7);
    let d = |min: usize, max: usize| move |s: &str| digits(s, min, max);
    let alt_gv = |k: usize| {
        // k = 1 with the reserved field, 0 without.
        t.len() >= 9 + k
            && opt(g(0), &dec)
            && opt(g(1), &is_hours)
            && opt(g(2), &all_hex)
            && opt(g(3), &all_hex)
            && (k == 0 || g(4).bytes().all(|b| b.is_ascii_digit()))
            && opt(g(4 + k), &d(1, 3))
            && opt(g(5 + k), &|s: &str| s.len() == 6 && all_hex(s))
            && opt(g(6 + k), &all_digits)
            && opt(g(7 + k), &fuel_cons)
            && opt(g(8 + k), &all_digits)
    };
    if t.len() >= 6
        && digits(g(0), 1, 2)
        && opt(g(1), &d(1, 5))
        && digits(g(2), 1, 3)
        && matches!(g(3), "0" | "1")
        && matches!(g(4), "" | "0" | "1")
        && opt(g(5), &temp)
    {
        // GL300/GL500 trailer: <reserved>,<battery mV>,<battery %>,<mode>,<motion>,<temperature>
        a.battery_v = int(g(1)).map(|mv| mv as f64 / 1000.0);
        battery_pct(a, g(2));
        io_f64(a, "temp1", num(g(5)));
    } else if let Some(k) = [1, 0].into_iter().find(|k| alt_gv(*k)) {
        // GV trailer: <mileage km>,<hour meter>,<adc1>,<adc2>[,<reserved>],<battery %>,
        // <device status>,<rpm>,<fuel consumption>,<fuel level>
        if let Some(km) = num(g(0)) {
            a.odometer_m = Some(km * 1000.0);
        }
        a.engine_hours = hours(g(1));
        io_text(a, "adc1", g(2));
        io_text(a, "adc2", g(3));
        battery_pct(a, g(4 + k));
        if let Some(status) = hex(g(5 + k)) {
            device_status(a, status);
        }
        a.rpm = uint(g(6 + k)).map(|v| v as f64);
        io_text(a, "fuelConsumption", g(7 + k));
        a.fuel_level_pct = uint(g(8 + k)).map(|v| v as f64);
    } else if t.len() >= 2 && digits(g(0).strip_prefix('-').unwrap_or(g(0)), 1, 1) && digits(g(1), 1, 3) {
        // GL200-era trailer: <CSQ>,<battery %>
        if let Some(rt) = report_type {
            a.motion = Some(rt & 1 != 0);
            set_io(a, "charge", IoValue::Bool(rt & 2 != 0));
        }
        a.rssi = int(g(0)).and_then(|v| i32::try_from(v).ok());
        battery_pct(a, g(1));
    } else if t.len() >= 2 && opt(g(0), &dec) && opt(g(1), &d(1, 3)) {
        // [<mileage>],<battery %>
        if let Some(km) = num(g(0)) {
            a.odometer_m = Some(km * 1000.0);
        }
        battery_pct(a, g(1));
    } else if !t.is_empty() && opt(g(0), &d(1, 3)) {
        battery_pct(a, g(0));
    }
    out
}

/// GTERI: GTFRI plus a mask of extra data (digital fuel sensor, 1-wire temperature, CAN,
/// fuel sensors, BLE accessories).
fn decode_eri(r: &Report) -> Out {
    let mut out = Out::default();
    let model = r.model;
    let mut c = Cursor { r, i: 3 };
    if model == "GV500" {
        let vin = c.next();
        if !vin.is_empty() {
            out.attrs.vin = Some(vin.to_owned());
        }
    }
    c.skip(1); // device name
    let mask = hex(c.next()).unwrap_or(0);
    let power = int(c.next()).map(|mv| mv as f64 / 1000.0);
    c.skip(1); // report type
    let count = uint(c.next()).unwrap_or(0);
    for n in 0..count {
        if c.done() {
            break;
        }
        let s = if n == 0 { block_start(r, c.i) } else { c.i };
        c.i = block_walk(r, s, &mut out.positions);
    }
    let a = &mut out.attrs;
    a.power_v = power;
    let bit = |b: u32| mask & (1 << b) != 0;
    if !model.starts_with("GL5") {
        a.odometer_m = num(c.next()).map(|km| km * 1000.0);
    }
    if !model.starts_with("GL5") && model != "GL320M" {
        a.engine_hours = hours(c.next());
        analog(a, 1, c.next());
    }
    if model.starts_with("GV") && !model.starts_with("GV6") && model != "GV350M" {
        analog(a, 2, c.next());
    }
    if matches!(model, "GV200" | "GV310LAU" | "GV350CEU") {
        analog(a, 3, c.next());
    } else if (model.starts_with("GV3") && model.ends_with("CEU")) || model.starts_with("GV600M") {
        c.skip(1); // reserved
    }
    if model.starts_with("GL5") {
        battery_pct(a, c.next());
        c.skip(1); // mode selection
        a.motion = int(c.next()).map(|m| m > 0);
    } else if model == "GV200" {
        io_i64(a, "input", hex(c.next()).map(|v| v as i64));
        io_i64(a, "output", hex(c.next()).map(|v| v as i64));
        c.skip(1); // UART device type
    } else if model == "GL320M" {
        battery_pct(a, c.next());
        if bit(7) {
            io_i64(a, "externalBattery", int(c.next()));
        }
    } else {
        battery_pct(a, c.next());
        if let Some(status) = hex(c.next()) {
            device_status(a, status);
        }
        c.skip(1); // reserved / UART device type
    }
    let fuel_hex = |a: &mut Attributes, s: &str| io_i64(a, "fuel", hex(s).map(|v| v as i64));
    if bit(0) && model != "GV350M" {
        fuel_hex(a, c.next());
    }
    if bit(29) {
        c.skip(2);
        let data_mask = hex(c.next()).unwrap_or(0);
        if data_mask & 1 != 0 {
            fuel_hex(a, c.next());
        }
        if data_mask & 2 != 0 {
            c.skip(1); // fuel height
        }
    }
    if bit(1) {
        // 1-wire temperature sensors: <count>,(<id>,<type>,<temp hex, 1/16 °C>)*
        let devices = uint(c.next()).unwrap_or(0);
        for k in 1..=devices {
            if c.done() {
                break;
            }
            c.skip(2);
            let raw = hex(c.next()).and_then(|v| u16::try_from(v).ok());
            io_f64(a, &format!("temp{k}"), raw.map(|v| f64::from(v as i16) * 0.0625));
        }
    }
    if bit(2) {
        // CAN data follows; its layout is GTCAN's and is not decoded here (kept raw).
        return out;
    }
    if (bit(3) || bit(4) || (bit(0) && model == "GV350M")) && !c.done() {
        let devices = uint(c.next()).unwrap_or(0);
        for _ in 0..devices {
            if c.done() {
                break;
            }
            c.skip(1); // type
            if model == "GV350M" {
                c.skip(1); // UART id
                if bit(0) {
                    fuel_hex(a, c.next());
                }
            }
            if bit(3) {
                io_f64(a, "fuel", num(c.next()));
            }
            if bit(4) {
                c.skip(1); // volume
            }
            if bit(10) {
                c.skip(1); // fuel temperature
            }
        }
    }
    if bit(7) && model != "GL320M" {
        let devices = uint(c.next()).unwrap_or(0);
        for _ in 0..devices {
            if c.done() {
                break;
            }
            c.skip(1); // serial number
            let ty = int(c.next());
            c.skip(if ty == Some(2) { 2 } else { 1 }); // temperature [, humidity]
        }
    }
    if bit(8) && model != "GL320M" {
        // BLE accessories: <count>,(<index>,<type>,<model>,[<len>,]<raw>,<mask>,<fields by mask>)*
        let devices = uint(c.next()).unwrap_or(0);
        for k in 1..=devices {
            if c.done() {
                break;
            }
            c.skip(if model.starts_with("GV600M") { 5 } else { 4 });
            let dm = hex(c.next()).unwrap_or(0);
            let has = |b: u32| dm & (1 << b) != 0;
            if has(0) {
                c.skip(1); // name
            }
            if has(1) {
                io_text(a, &format!("tag{k}Id"), c.next());
            }
            if has(2) {
                c.skip(1); // status
            }
            if has(3) {
                c.skip(1); // battery level
            }
            if has(4) {
                io_f64(a, &format!("tag{k}Temp"), num(c.next()));
            }
            if has(5) {
                io_i64(a, &format!("tag{k}Humidity"), int(c.next()));
            }
            for b in 7..=12 {
                if has(b) {
                    c.skip(1);
                }
            }
            if has(13) {
                io_i64(a, &format!("tag{k}Battery"), int(c.next()));
            }
            if has(14) {
                c.skip(1); // relay
            }
        }
    }
    out
}

/// GTIGN/GTIGF (ignition on/off), GTVGN/GTVGF (virtual ignition).
fn decode_ign(r: &Report, ty: &str) -> Out {
    let mut out = Out::default();
    let mut i = 4;
    if r.model == "CV200" {
        i += 2; // reserved, report type
    }
    i += 1; // duration of the previous ignition state
    let s = block_start(r, i);
    let mut i = block_walk(r, s, &mut out.positions);
    out.attrs.ignition = Some(ty.contains("GN"));
    out.attrs.engine_hours = hours(r.get(i));
    i += 1;
    out.attrs.odometer_m = num(r.get(i)).map(|km| km * 1000.0);
    out
}

/// GTOBD (GV500 OBD report). The report mask says which fields are present:
/// bit 0 VIN, 1 OBD connected, 2 OBD power mV, 3 supported PIDs, 4 RPM, 5 speed km/h,
/// 6 coolant °C, 7 fuel consumption, 8 distance since DTCs cleared km, 9 distance with MIL on
/// km, 10 MIL status, 11 number of DTCs, 12 DTCs (4 hex digits each), 13 throttle %,
/// 14 engine load %, 15 fuel level %, 16 OBD protocol, 17–18 (one field each, unnamed),
/// 19 OBD mileage km, 20 GPS block, 21 cell (MCC, MNC, LAC, cell, reserved), 22 mileage km.
fn decode_obd(r: &Report) -> Out {
    let mut out = Out::default();
    // <VIN>,<device name>,<report type>,<mask>; some firmware omits the leading VIN field.
    let mut i = if matches!(r.get(5), "0" | "1") && hex(r.get(6)).is_some() {
        6
    } else {
        5
    };
    let lead_vin = if i == 6 { r.get(3) } else { "" };
    let mask = hex(r.get(i)).unwrap_or(0);
    i += 1;
    let a = &mut out.attrs;
    if is_vin(lead_vin) {
        a.vin = Some(lead_vin.to_owned());
    }
    for bit in 0..20 {
        if mask & (1 << bit) == 0 {
            continue;
        }
        let f = r.get(i);
        i += 1;
        match bit {
            0 if !f.is_empty() => a.vin = Some(f.to_owned()),
            1 => io_i64(a, "obdConnect", int(f)),
            2 => a.power_v = uint(f).map(|mv| mv as f64 / 1000.0),
            3 => io_text(a, "supportedPids", f),
            4 => a.rpm = uint(f).map(|v| v as f64),
            5 => a.obd_speed_kmh = uint(f).map(|v| v as f64),
            6 => a.coolant_c = int(f).map(|v| v as f64),
            7 => io_f64(a, "fuelConsumption", num(f)),
            8 => a.distance_since_clear_km = uint(f).map(|v| v as f64),
            9 => a.distance_mil_on_km = uint(f).map(|v| v as f64),
            10 => io_i64(a, "milStatus", int(f)),
            11 => io_i64(a, "dtcsNumber", int(f)),
            12 => a.dtcs = dtcs_from_hex(f),
            13 => a.throttle_pct = uint(f).map(|v| v as f64),
            14 => a.engine_load_pct = uint(f).map(|v| v as f64),
            15 => a.fuel_level_pct = uint(f).map(|v| v as f64),
            16 => io_text(a, "obdProtocol", f),
            19 => a.odometer_m = uint(f).map(|km| km as f64 * 1000.0),
            _ => {}
        }
    }
    if mask & (1 << 20) != 0 || mask == 0 {
        let s = block_start(r, i);
        let (mut pos, idx) = gps_at(r, s);
        i = idx;
        if mask & (1 << 21) != 0 {
            i = cell_at(r, i, pos.as_mut()) + 1;
        }
        out.positions.extend(pos);
    }
    if mask & (1 << 22) != 0 && i < r.tail() {
        io_f64(&mut out.attrs, "mileage", num(r.get(i)).map(|km| km * 1000.0));
    }
    out
}

/// GTCAN (CAN100 / FMS bus report). A 32-bit report mask, an extension mask (bit 29) and a
/// third mask (extension bit 31) select the fields; models GV350M and GV35xCEU insert extra
/// ones. The fix (mask bit 30) is found by its coordinates.
fn decode_can(r: &Report) -> Out {
    let mut out = Out::default();
    let model = r.model;
    let ceu = model.len() == 8 && model.starts_with("GV35") && model.ends_with("CEU");
    let mask = hex(r.get(6));
    let m = mask.unwrap_or(0);
    let mut c = Cursor { r, i: 7 };
    let a = &mut out.attrs;
    let bit = |mask: u64, b: u32| mask & (1 << b) != 0;
    let strip = |s: &str| -> Option<f64> { num(s.strip_prefix(['L', 'P']).unwrap_or(s)) };
    if bit(m, 0) {
        let vin = c.next();
        if !vin.is_empty() {
            a.vin = Some(vin.to_owned());
        }
    }
    if bit(m, 1) {
        a.ignition = int(c.next()).map(|v| v > 0);
    }
    if bit(m, 2) {
        // Vehicle odometer in hectometres, `H` prefixed.
        a.odometer_m = c.next().strip_prefix('H').and_then(uint).map(|hm| hm as f64 * 100.0);
    }
    if bit(m, 3) {
        let f = c.next();
        if !f.starts_with('K') {
            a.fuel_used_l = strip(f);
        }
    }
    if bit(m, 5) {
        a.rpm = uint(c.next()).map(|v| v as f64);
    }
    if bit(m, 4) {
        a.obd_speed_kmh = uint(c.next()).map(|v| v as f64);
    }
    if bit(m, 6) {
        a.coolant_c = int(c.next()).map(|v| v as f64);
    }
    if bit(m, 7) {
        a.fuel_rate_lph = c.next().strip_prefix("L/H").and_then(num);
    }
    if bit(m, 8) {
        // Fuel level: `P` percent, `L` litres.
        let f = c.next();
        let value = f.get(1..).and_then(num);
        match f.as_bytes().first() {
            Some(b'P') => a.fuel_level_pct = value,
            Some(b'L') => a.fuel_level_l = value,
            _ => {}
        }
        io_f64(a, "fuel", value);
    }
    if bit(m, 9) {
        io_i64(a, "range", int(c.next()).map(|v| v.saturating_mul(100)));
    }
    if bit(m, 10) {
        a.throttle_pct = uint(c.next()).map(|v| v as f64);
    }
    if bit(m, 11) {
        a.engine_hours = num(c.next());
    }
    for (b, name) in [(12, "drivingTime"), (13, "idleHours")] {
        if bit(m, b) {
            io_f64(a, name, num(c.next()));
        }
    }
    if bit(m, 14) {
        let f = c.next();
        if !f.starts_with('K') {
            io_f64(a, "idleFuelConsumption", strip(f));
        }
    }
    if bit(m, 15) {
        io_i64(a, "axleWeight", int(c.next()));
    }
    for (b, name) in [
        (16, "tachographInfo"),
        (17, "indicators"),
        (18, "lights"),
        (19, "doors"),
    ] {
        if bit(m, b) {
            io_i64(a, name, hex(c.next()).map(|v| v as i64));
        }
    }
    for (b, name) in [(20, "vehicleOverspeed"), (21, "engineOverspeed")] {
        if bit(m, b) {
            io_f64(a, name, num(c.next()));
        }
    }
    let model_bits: &[u32] = if model == "GV350M" {
        &[22, 23, 24]
    } else if ceu {
        &[23, 24, 25, 26, 27]
    } else {
        &[]
    };
    for b in model_bits {
        if bit(m, *b) {
            c.skip(1);
        }
    }
    let ext = if bit(m, 29) { hex(c.next()).unwrap_or(0) } else { 0 };
    if bit(ext, 0) {
        io_f64(a, "adBlueLevel", strip(c.next()));
    }
    for (b, name) in [(1, "axleWeight1"), (2, "axleWeight3"), (3, "axleWeight4")] {
        if bit(ext, b) {
            io_i64(a, name, int(c.next()));
        }
    }
    for b in 4..=6 {
        if bit(ext, b) {
            c.skip(1);
        }
    }
    if bit(ext, 7) {
        io_f64(a, "adc1", int(c.next()).map(|mv| mv as f64 / 1000.0));
    }
    for b in 8..=14 {
        if bit(ext, b) {
            c.skip(1);
        }
    }
    for (b, name) in [
        (15, "driver1Card"),
        (16, "driver2Card"),
        (17, "driver1Name"),
        (18, "driver2Name"),
        (19, "registration"),
    ] {
        if bit(ext, b) {
            let f = c.next();
            if b == 15 && !f.is_empty() {
                a.driver_id = Some(f.to_owned());
            }
            io_text(a, name, f);
        }
    }
    // The remaining masks only decide where the fix sits, which is found by its coordinates.
    if (bit(m, 30) || mask.is_none())
        && let Some(s) = find_fix(r, 7, r.tail())
    {
        let (mut pos, idx) = gps_at(r, s);
        if let Some(p) = pos.as_mut() {
            // In GTCAN the accuracy field is a fix flag (0 = last known position).
            p.valid = int(r.get(s)).is_some_and(|v| v > 0);
        }
        if bit(m, 31) {
            cell_at(r, idx, pos.as_mut());
        }
        out.positions.extend(pos);
    }
    out
}

/// GTINF: device information (state, ICCID, CSQ, power, battery, charging).
fn decode_inf(r: &Report) -> Out {
    let mut out = Out::default();
    let a = &mut out.attrs;
    if r.get(1).len() > 10 {
        return out; // GT300 protocol: a different layout, kept raw
    }
    // GV500-class units put the VIN before the device name.
    let has_vin = is_vin(r.get(3));
    let model = if has_vin { "" } else { r.model };
    let mut c = Cursor {
        r,
        i: if has_vin { 5 } else { 4 },
    };
    if has_vin {
        a.vin = Some(r.get(3).to_owned());
    }
    if let Some(state) = hex(c.next()) {
        motion_state(a, state);
    }
    io_text(a, "iccid", c.next());
    a.rssi = int(c.next()).and_then(|v| i32::try_from(v).ok());
    c.skip(2); // signal quality, external power supply
    if r.get(c.i + 1).len() >= 12 {
        c.skip(1); // BLE sensor MAC
        io_i64(a, "deviceTemp", int(c.next()));
        io_i64(a, "humidity", int(c.next()));
    }
    let f = c.next();
    if f.contains('.') {
        a.odometer_m = num(f).map(|km| km * 1000.0);
    } else {
        a.power_v = int(f).map(|mv| mv as f64 / 1000.0);
    }
    if model != "GV500VC" {
        let f = c.next();
        if model != "GV350M" && model != "GV310LAU" {
            io_f64(a, "power2", int(f).map(|mv| mv as f64 / 1000.0));
        }
    }
    a.battery_v = num(c.next());
    if int(c.next()) == Some(1) {
        set_io(a, "charge", IoValue::Bool(true));
    }
    if model == "GV310LAU" {
        c.skip(5); // LED state, power saving, external antenna, last fix time, pin mask
        for n in 1..=3 {
            io_i64(a, &format!("adc{n}"), int(c.next()));
        }
    }
    out
}

/// Reports without a dedicated layout (GTSOS, GTSPD, GTHBM, GTSTT, GTNMR, GTSTR …): the
/// report type (field 5), the first block with coordinates, and a battery level just before
/// the send time.
fn decode_basic(r: &Report, ty: &str) -> Out {
    let mut out = Out::default();
    let a = &mut out.attrs;
    let report_type = Some(r.get(5)).filter(|s| (1..=2).contains(&s.len())).and_then(hex);
    if let Some(rt) = report_type {
        match ty {
            "STR" | "CTN" if matches!(r.model, "GL500" | "GL530") => battery_pct(a, r.get(8)),
            "NMR" => a.motion = Some(rt == 1),
            "DIS" => set_io(a, &format!("in{}", rt / 16), IoValue::Bool(rt % 16 == 1)),
            "IGL" => a.ignition = Some(rt % 16 == 1),
            "HBM" => match rt % 16 {
                0 | 3 => a.raise(Alarm::HardBraking),
                1 | 4 => a.raise(Alarm::HardAcceleration),
                2 => a.raise(Alarm::HardCornering),
                _ => {}
            },
            _ => {}
        }
    }
    if let Some(s) = find_fix(r, 2, r.tail()) {
        let (mut pos, idx) = gps_at(r, s);
        cell_at(r, idx, pos.as_mut());
        let found = pos.is_some();
        out.positions.extend(pos);
        let before = r.get(r.tail().saturating_sub(1));
        // A reserved `00` often sits there too; a battery level has no leading zero.
        if found && r.get(r.tail()).len() == 14 && digits(before, 1, 3) && (before == "0" || !before.starts_with('0')) {
            battery_pct(&mut out.attrs, before);
        }
    }
    let a = &mut out.attrs;
    match ty {
        "SOS" => a.raise(Alarm::Sos),
        "SPD" => a.raise(Alarm::Overspeed),
        "TOW" => a.raise(Alarm::Tow),
        "IDL" => a.raise(Alarm::Idle),
        "PNA" => a.raise(Alarm::PowerOn),
        "PFA" => a.raise(Alarm::PowerOff),
        "EPN" | "MPN" => a.raise(Alarm::PowerRestored),
        "EPF" | "MPF" => a.raise(Alarm::PowerCut),
        "BPL" => {
            a.raise(Alarm::LowBattery);
            // <backup battery V> precedes the block.
            a.battery_v = num(r.get(4)).filter(|_| r.get(4).contains('.'));
        }
        "SWG" => a.raise(Alarm::Geofence),
        "TMP" | "TEM" => a.raise(Alarm::Temperature),
        "JDR" | "JDS" => a.raise(Alarm::Jamming),
        "STT" => {
            if let Some(state) = hex(r.get(4)) {
                motion_state(a, state);
                if matches!(state, 0x12 | 0x16 | 0x1A | 0x22 | 0x42) {
                    a.raise(Alarm::Movement);
                }
            }
        }
        _ => {}
    }
    out
}

/// GTLSW/GTTSW (digital input 1/2 change), GTIDA (RFID), GTDAR (driver assistance), GTBAA
/// and GTBID (BLE accessories), GTLSA (light sensor), GTDAT (data report): a few fixed
/// fields and one block found by coordinates.
fn decode_one_block(r: &Report, from: usize) -> (Out, Option<usize>) {
    let mut out = Out::default();
    let mut end = None;
    if let Some(s) = find_fix(r, from, r.tail()) {
        let (mut pos, idx) = gps_at(r, s);
        end = Some(cell_at(r, idx, pos.as_mut()));
        out.positions.extend(pos);
    }
    (out, end)
}

fn decode_special(r: &Report, ty: &str) -> Out {
    match ty {
        "LSW" | "TSW" => {
            let (mut out, _) = decode_one_block(r, 5);
            let input = if ty == "LSW" { "in1" } else { "in2" };
            if let Some(state) = int(r.get(5)) {
                set_io(&mut out.attrs, input, IoValue::Bool(state == 1));
            }
            out
        }
        "IDA" => {
            let (mut out, end) = decode_one_block(r, 5);
            let rfid = r.get(5);
            if !rfid.is_empty() {
                out.attrs.driver_id = Some(rfid.to_owned());
            }
            if let Some(end) = end {
                let odo = r.get(end + 1);
                if dec1(odo, 7) {
                    out.attrs.odometer_m = num(odo).map(|km| km * 1000.0);
                }
            }
            out
        }
        "DAR" => {
            let (mut out, _) = decode_one_block(r, 6);
            let a = &mut out.attrs;
            match (int(r.get(4)), int(r.get(5))) {
                (Some(1), degree) => {
                    a.raise(Alarm::Fatigue);
                    io_i64(a, "fatigueDegree", degree);
                }
                (Some(w), _) => {
                    io_i64(a, "warningType", Some(w));
                    a.raise(Alarm::Other(format!("driverAssistance{w}")));
                }
                _ => {}
            }
            out
        }
        "BAA" | "BID" => {
            let (mask_i, names): (usize, &[(u32, &str)]) = if ty == "BAA" {
                (
                    8,
                    &[
                        (0, "accessoryName"),
                        (1, "accessoryMac"),
                        (2, "accessoryStatus"),
                        (3, "accessoryVoltage"),
                        (4, "accessoryTemp"),
                        (5, "accessoryHumidity"),
                    ],
                )
            } else {
                (6, &[(1, "accessoryMac"), (3, "accessoryVoltage")])
            };
            let (mut out, _) = decode_one_block(r, mask_i + 1);
            let mask = hex(r.get(mask_i)).unwrap_or(0);
            let mut j = mask_i + 1;
            for (b, name) in names {
                if mask & (1 << b) == 0 {
                    continue;
                }
                let f = r.get(j);
                j += 1;
                match *name {
                    "accessoryName" | "accessoryMac" => io_text(&mut out.attrs, name, f),
                    "accessoryVoltage" => io_f64(&mut out.attrs, name, int(f).map(|mv| mv as f64 / 1000.0)),
                    _ => io_i64(&mut out.attrs, name, int(f)),
                }
            }
            out
        }
        "LSA" => {
            let (mut out, end) = decode_one_block(r, 5);
            if let Some(end) = end {
                // <reserved>,<bit error rate>,<light level>,<battery %>,<mode>,<motion>,<temperature>
                io_i64(&mut out.attrs, "lightLevel", int(r.get(end + 2)));
                battery_pct(&mut out.attrs, r.get(end + 3));
                io_f64(&mut out.attrs, "temp1", num(r.get(end + 6)));
            }
            out
        }
        _ => {
            // DAT: <report type>,<reserved>,<reserved>,<data>,<block>
            let mut out = Out::default();
            io_text(&mut out.attrs, "data", r.get(7));
            let s = block_start(r, 8);
            block_walk(r, s, &mut out.positions);
            out
        }
    }
}

/// GTDTT: transparent data from a serial accessory, hex encoded. A COMB fuel sensor line
/// (`COMB,<n>,<level>,…`) gives the fuel level.
fn decode_dtt(r: &Report) -> Out {
    let mut out = Out::default();
    let data = r.get(r.tail().saturating_sub(1));
    if let Ok(bytes) = hex::decode(data) {
        let text = String::from_utf8_lossy(&bytes);
        if text.contains("COMB") {
            io_f64(
                &mut out.attrs,
                "fuel",
                text.split(',').nth(2).and_then(|f| num(f.trim())),
            );
        }
        io_text(&mut out.attrs, "data", text.trim_end());
    }
    out
}

fn decode_ver(r: &Report) -> Out {
    let mut out = Out::default();
    io_text(&mut out.attrs, "deviceType", r.get(4));
    io_text(&mut out.attrs, "versionFw", r.get(5));
    io_text(&mut out.attrs, "versionHw", r.get(6));
    out
}

// ---------------------------------------------------------------------------------------------

/// Decode one text report. Also returns the device model its version field names, which the
/// session keeps for command passwords.
pub(super) fn decode(frame: &[u8], _ctx: &DecodeContext) -> Result<(Message, Option<&'static str>), DecodeError> {
    let mut body = frame;
    while let [rest @ .., last] = body {
        if last.is_ascii_whitespace() || *last == 0 {
            body = rest;
        } else {
            break;
        }
    }
    if let [rest @ .., b'$'] = body {
        body = rest;
    }
    let text: Cow<str> = String::from_utf8_lossy(body);
    let Some(type_at) = text.find(":GT") else {
        return Err(DecodeError::invalid("header", "no `:GT` report type", frame));
    };
    let mut v: Vec<&str> = text.split(',').collect();
    while v.len() > 1 && v.last().is_some_and(|f| f.is_empty()) {
        v.pop();
    }
    let header = v[0];
    let Some((prefix, name)) = header.split_once(':') else {
        return Err(DecodeError::invalid("header", "no `:` in the header field", frame));
    };
    if !prefix.starts_with('+') || name.len() < 5 || v.len() < 4 {
        return Err(DecodeError::invalid(
            "header",
            format!("not a Queclink report header {header:?}"),
            frame,
        ));
    }
    let ty = text.get(type_at + 3..type_at + 6).unwrap_or("");
    // The identity is field 2; GT300-era firmware (and GTTRI) put it in field 1 instead.
    let (id_index, imei) = if looks_like_imei(v[2]) {
        (2, v[2])
    } else if looks_like_imei(v[1]) {
        (1, v[1])
    } else if !v[2].is_empty() && v[2].len() <= 20 && v[2].bytes().all(|b| b.is_ascii_alphanumeric()) {
        (2, v[2])
    } else {
        return Err(DecodeError::NoIdentity(format!("{header}: no IMEI in field 2")));
    };
    let version = if id_index == 2 { v[1] } else { "" };
    let model = model_of(version);
    let count = v[v.len() - 1];
    let version_field = v[1];
    let report = Report {
        send_time: parse_time14(v[v.len() - 2]),
        model,
        v,
    };
    let kind = kind_of(prefix, ty);
    let mut out = if prefix == "+ACK" {
        Out {
            result: (kind == MessageKind::CommandResponse).then(|| text.to_string()),
            ..Out::default()
        }
    } else {
        match ty {
            "FRI" | "GEO" | "RTL" | "DOG" => decode_fri(&report),
            "ERI" => decode_eri(&report),
            "IGN" | "IGF" | "VGN" | "VGF" => decode_ign(&report, ty),
            "OBD" => decode_obd(&report),
            "CAN" => decode_can(&report),
            "INF" => decode_inf(&report),
            "VER" => decode_ver(&report),
            "DTT" => decode_dtt(&report),
            "GSM" => Out::default(),
            "LBS" => {
                let mut out = Out::default();
                battery_pct(&mut out.attrs, report.get(6));
                out
            }
            "WIF" => {
                let mut out = Out::default();
                battery_pct(&mut out.attrs, report.get(report.tail().saturating_sub(1)));
                out
            }
            "LSW" | "TSW" | "IDA" | "DAR" | "BAA" | "BID" | "LSA" | "DAT" => decode_special(&report, ty),
            _ => decode_basic(&report, ty),
        }
    };
    // Every field, raw, by index.
    let io = &mut out.attrs.io;
    io.0.reserve(report.n());
    for (i, f) in report.v.iter().enumerate() {
        if !f.is_empty() {
            io.0.push((IoKey::Id(i as u32), IoValue::Text((*f).to_owned())));
        }
    }
    let ack = if prefix == "+ACK" && ty == "HBD" {
        format!("+SACK:GTHBD,{version_field},{count}$")
    } else {
        format!("+SACK:{count}$")
    };
    let mut msg = Message::new(kind)
        .with_imei(imei)
        .with_type(name)
        .with_ack(ack.into_bytes());
    msg.result = out.result;
    match out.positions.last_mut() {
        Some(last) => merge(&mut last.attributes, out.attrs),
        None => msg.attributes = out.attrs,
    }
    msg.positions = out.positions;
    Ok((msg, Some(model).filter(|m| !m.is_empty())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtc_codes() {
        assert_eq!(
            dtcs_from_hex("03000301C1234000"),
            vec!["P0300", "P0301", "U0123", "C0000"]
        );
        assert!(dtcs_from_hex("").is_empty());
        assert!(dtcs_from_hex("zz").is_empty());
    }

    #[test]
    fn models() {
        assert_eq!(model_of("1F0101"), "GV500");
        assert_eq!(model_of("8020050605"), "GV355CEU");
        assert_eq!(model_of("802004030"), "GV58LAU");
        assert_eq!(model_of("x"), "");
        assert_eq!(model_of(""), "");
    }

    #[test]
    fn numbers_are_strict() {
        assert_eq!(num("nan"), None);
        assert_eq!(num("1e5"), None);
        assert_eq!(num("-12.5"), Some(-12.5));
        assert!(is_coord("-0.951205"));
        assert!(!is_coord("0.95120"));
        assert_eq!(hours("00117:31:26").map(|h| (h * 3600.0).round()), Some(423086.0));
    }
}
