//! AVL records: codec 8, 8 Extended (0x8E), 16 and 7 (GH3000), and the IO element
//! table that maps FMB-family ids onto typed [`Attributes`].
//!
//! The records of one packet are parsed straight from the borrowed data field into
//! [`Position`]s. Per record there is exactly one allocation on the common path — the
//! IO vector, sized to the elements actually present (never from a declared count) —
//! plus one per variable-length (8E) value, whose raw bytes the message must own.
//! Each fixed-width IO group is bounds-checked once as a whole and then walked in
//! fixed-size chunks; the codec's id/count widths are compile-time constants
//! (`Layout`) so each codec gets its own tight loop.

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};

use super::wire::{self, Short};
use crate::model::{Alarm, Attributes, IoKey, IoMap, IoValue, Position};

/// Bytes of a codec 8/8E/16 record before its IO block: timestamp (8), priority (1),
/// longitude (4), latitude (4), altitude (2), angle (2), satellites (1), speed (2).
const HEAD: usize = 24;

/// The smallest possible codec 8 record (no IO elements): head, event id, total count
/// and four group counts. Used to bound pre-allocation by the bytes present.
const MIN_RECORD: usize = HEAD + 6;

/// 2007-01-01T00:00:00Z, the epoch of codec 7 (GH3000) timestamps.
const GH3000_EPOCH: i64 = 1_167_609_600;

/// Why the records of a packet could not be read. The caller turns it into a
/// [`crate::DecodeError`] carrying the frame excerpt.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordError {
    /// Record `record` (0-based) runs past the end of the data field.
    Short { record: usize },
    /// Record `record` carries a timestamp no calendar can hold.
    Time { record: usize, raw: u64 },
    /// Record `record` (codec 7) carries non-finite or out-of-range coordinates.
    Coordinates { record: usize },
    /// All declared records were read and `extra` bytes remain before the trailing count.
    Trailing { extra: usize },
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordError::Short { record } => write!(f, "record {record} runs past the end of the data field"),
            RecordError::Time { record, raw } => write!(f, "record {record} has an impossible timestamp {raw}"),
            RecordError::Coordinates { record } => write!(f, "record {record} has impossible coordinates"),
            RecordError::Trailing { extra } => {
                write!(f, "{extra} bytes left after the declared records")
            }
        }
    }
}

/// A failure inside one record, before the record index is known.
enum Fail {
    Short,
    Time(u64),
    Coordinates,
}

impl From<Short> for Fail {
    fn from(_: Short) -> Self {
        Fail::Short
    }
}

impl Fail {
    fn at(self, record: usize) -> RecordError {
        match self {
            Fail::Short => RecordError::Short { record },
            Fail::Time(raw) => RecordError::Time { record, raw },
            Fail::Coordinates => RecordError::Coordinates { record },
        }
    }
}

/// Milliseconds since the epoch → UTC time, remembering the last calendar day: the
/// records of a packet almost always share one, and turning a day number into a date
/// (divisions by the 400-year cycle) was a measurable share of decoding a record.
#[derive(Default)]
struct DayCache {
    day: Option<(i64, NaiveDate)>,
}

impl DayCache {
    #[inline]
    fn time(&mut self, ms: u64) -> Option<DateTime<Utc>> {
        const MS_PER_DAY: i64 = 86_400_000;
        let ms = i64::try_from(ms).ok()?;
        let (day, in_day) = (ms.div_euclid(MS_PER_DAY), ms.rem_euclid(MS_PER_DAY));
        let date = match self.day {
            Some((d, date)) if d == day => date,
            _ => {
                let date = DateTime::<Utc>::from_timestamp(day.checked_mul(86_400)?, 0)?.date_naive();
                self.day = Some((day, date));
                date
            }
        };
        // `in_day` < 86 400 000, so both conversions are exact.
        let secs = (in_day / 1000) as u32;
        let nanos = (in_day % 1000) as u32 * 1_000_000;
        let t = NaiveTime::from_num_seconds_from_midnight_opt(secs, nanos)?;
        Some(DateTime::from_naive_utc_and_offset(date.and_time(t), Utc))
    }
}

/// The last fix a session saw, used for codec 7 records that carry no GPS element
/// (the device reports IO changes without a new fix).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LastFix {
    pub latitude: f64,
    pub longitude: f64,
}

/// The field widths that distinguish codec 8, 8E and 16.
trait Layout {
    /// IO ids (and the event id) are u16 rather than u8.
    const WIDE_ID: bool;
    /// IO counts are u16 rather than u8.
    const WIDE_COUNT: bool;
    /// A generation-type byte follows the event id (codec 16).
    const GENERATION: bool;
    /// A variable-length IO group follows the fixed groups (codec 8E).
    const VARIABLE: bool;
}

struct Codec8;
struct Codec8E;
struct Codec16;

impl Layout for Codec8 {
    const WIDE_ID: bool = false;
    const WIDE_COUNT: bool = false;
    const GENERATION: bool = false;
    const VARIABLE: bool = false;
}

impl Layout for Codec8E {
    const WIDE_ID: bool = true;
    const WIDE_COUNT: bool = true;
    const GENERATION: bool = false;
    const VARIABLE: bool = true;
}

impl Layout for Codec16 {
    const WIDE_ID: bool = true;
    const WIDE_COUNT: bool = false;
    const GENERATION: bool = true;
    const VARIABLE: bool = false;
}

/// Decode `count` records of `codec` from `records` (the data field between the two
/// record counts). `None` when `codec` is not an AVL codec.
pub fn decode(
    codec: u8,
    count: u8,
    records: &[u8],
    last_fix: &mut Option<LastFix>,
) -> Option<Result<Vec<Position>, RecordError>> {
    Some(match codec {
        0x08 => with_extended_retry::<Codec8>(count, records),
        0x8E => with_extended_retry::<Codec8E>(count, records),
        0x10 => with_extended_retry::<Codec16>(count, records),
        0x07 => gh3000(count, records, last_fix),
        _ => return None,
    })
}

/// Some installations configure a 16-byte IO group after the 8-byte one (Traccar's
/// `teltonika.extended` flag). Nothing in the packet says so, but the CRC has already
/// vouched for the bytes, so a packet that does not parse with the standard layout is
/// tried once more with that group; the standard error is reported if both fail. The
/// retry costs nothing on the normal path.
fn with_extended_retry<L: Layout>(count: u8, records: &[u8]) -> Result<Vec<Position>, RecordError> {
    match fmb_records::<L>(count, records, false) {
        Ok(p) => Ok(p),
        Err(e) => fmb_records::<L>(count, records, true).map_err(|_| e),
    }
}

fn fmb_records<L: Layout>(count: u8, mut b: &[u8], extended: bool) -> Result<Vec<Position>, RecordError> {
    let n = usize::from(count);
    let mut out = Vec::with_capacity(n.min(b.len() / MIN_RECORD));
    let mut days = DayCache::default();
    for i in 0..n {
        fmb_record::<L>(&mut b, extended, &mut out, &mut days).map_err(|f| f.at(i))?;
    }
    if !b.is_empty() {
        return Err(RecordError::Trailing { extra: b.len() });
    }
    Ok(out)
}

#[inline(always)]
fn count<L: Layout>(b: &mut &[u8]) -> Result<usize, Short> {
    if L::WIDE_COUNT {
        wire::u16(b).map(usize::from)
    } else {
        wire::u8(b).map(usize::from)
    }
}

#[inline(always)]
fn id<L: Layout>(b: &mut &[u8]) -> Result<u16, Short> {
    if L::WIDE_ID {
        wire::u16(b)
    } else {
        wire::u8(b).map(u16::from)
    }
}

/// One fixed-width IO group: `n` elements of a `W`-byte id and an `S`-byte value.
/// The whole group is bounds-checked once, then walked in exact chunks. The entries
/// go in through `extend` over a trusted-length iterator, which writes each one
/// straight into the reserved buffer; `push` made the compiler build every 56-byte
/// entry on the stack and copy it, and the wide reloads of those narrow stores were
/// the single largest cost of decoding.
///
/// `E` is the element size `W + S`, spelled out because stable Rust cannot compute
/// it in a const position; `as_chunks::<E>` then hands out `[u8; E]` arrays whose
/// splits the compiler resolves at compile time.
#[inline(always)]
fn group<const W: usize, const S: usize, const E: usize>(
    b: &mut &[u8],
    n: usize,
    io: &mut IoMap,
    mut f: impl FnMut(u16, u64),
) -> Result<(), Short> {
    const { assert!(E == W + S) };
    let g = wire::bytes(b, n.saturating_mul(E))?;
    let (elements, _) = g.as_chunks::<E>();
    io.0.extend(elements.iter().map(|el| {
        // Both always `Some`: `E == W + S`.
        let id = el.first_chunk::<W>().map_or(0, wire::be) as u16;
        let v = el.last_chunk::<S>().map_or(0, wire::be);
        f(id, v);
        (IoKey::Id(u32::from(id)), IoValue::U64(v))
    }));
    Ok(())
}

/// How many IO elements the record's groups hold, counting only elements whose bytes
/// are present (0 if a count runs past the data: the parse that follows fails).
fn io_elements<L: Layout>(mut b: &[u8], extended: bool) -> usize {
    let idw = if L::WIDE_ID { 2 } else { 1 };
    let mut total = 0usize;
    let widths: &[usize] = if extended { &[1, 2, 4, 8, 16] } else { &[1, 2, 4, 8] };
    for &w in widths {
        let Ok(n) = count::<L>(&mut b) else { return 0 };
        if wire::bytes(&mut b, n.saturating_mul(idw + w)).is_err() {
            return 0;
        }
        total += n;
    }
    if L::VARIABLE {
        // Each variable-length element is at least its id and length.
        let Ok(n) = wire::u16(&mut b) else { return total };
        total += usize::from(n).min(b.len() / 4);
    }
    total
}

/// The four fixed-width groups with `W`-byte ids.
macro_rules! fixed_groups {
    ($L:ty, $W:literal, $b:expr, $io:expr, $pos:expr) => {{
        let n = count::<$L>($b)?;
        group::<$W, 1, { $W + 1 }>($b, n, $io, |id, v| map_fmb_1(id, v, &mut $pos.attributes))?;
        let n = count::<$L>($b)?;
        group::<$W, 2, { $W + 2 }>($b, n, $io, |id, v| map_fmb_2(id, v, $pos))?;
        let n = count::<$L>($b)?;
        group::<$W, 4, { $W + 4 }>($b, n, $io, |id, v| map_fmb_4(id, v, &mut $pos.attributes))?;
        let n = count::<$L>($b)?;
        group::<$W, 8, { $W + 8 }>($b, n, $io, |id, v| map_fmb_8(id, v, &mut $pos.attributes))?;
    }};
}

fn fmb_record<L: Layout>(
    b: &mut &[u8],
    extended: bool,
    out: &mut Vec<Position>,
    days: &mut DayCache,
) -> Result<(), Fail> {
    let &[
        t0,
        t1,
        t2,
        t3,
        t4,
        t5,
        t6,
        t7,
        priority,
        x0,
        x1,
        x2,
        x3,
        y0,
        y1,
        y2,
        y3,
        h0,
        h1,
        a0,
        a1,
        satellites,
        s0,
        s1,
    ] = wire::array::<HEAD>(b)?;
    let ms = u64::from_be_bytes([t0, t1, t2, t3, t4, t5, t6, t7]);
    let time = days.time(ms).ok_or(Fail::Time(ms))?;
    let event = id::<L>(b)?;
    let generation = if L::GENERATION { Some(wire::u8(b)?) } else { None };
    // The declared total IO count is read past, not trusted: 8E devices disagree on
    // whether it includes the variable-length group, and sizing from it would let
    // every record of a packet reserve room for the whole packet. The exact count of
    // elements present costs a few loads (`io_elements`).
    count::<L>(b)?;
    // Named entries (priority, generation type) only when they say something: a
    // String key is an allocation, and priority 0 ("low") is what absence means.
    let named = usize::from(priority != 0) + usize::from(generation.is_some());
    let mut io = IoMap::with_capacity(io_elements::<L>(b, extended) + named);
    if priority != 0 {
        io.push_name("priority", IoValue::U64(u64::from(priority)));
    }
    if let Some(g) = generation {
        io.push_name("generation_type", IoValue::U64(u64::from(g)));
    }

    // Built in its slot of the packet's vector: `push` made the compiler assemble the
    // ~600-byte Position on the stack and copy it, while a value produced inside
    // `extend`'s trusted-length loop is written straight into the reserved slot.
    out.extend((0..1).map(|_| Position {
        time,
        latitude: f64::from(i32::from_be_bytes([y0, y1, y2, y3])) / 1e7,
        longitude: f64::from(i32::from_be_bytes([x0, x1, x2, x3])) / 1e7,
        altitude_m: Some(f64::from(i16::from_be_bytes([h0, h1]))),
        speed_kmh: Some(f64::from(u16::from_be_bytes([s0, s1]))),
        course_deg: Some(f64::from(u16::from_be_bytes([a0, a1]))),
        satellites: Some(satellites),
        hdop: None,
        // Teltonika repeats the last fix with 0 satellites when it has none.
        valid: satellites != 0,
        attributes: Attributes {
            event: (event != 0).then_some(u32::from(event)),
            ..Attributes::default()
        },
    }));
    let Some(pos) = out.last_mut() else {
        return Err(Fail::Short);
    };

    if L::WIDE_ID {
        fixed_groups!(L, 2, b, &mut io, pos);
    } else {
        fixed_groups!(L, 1, b, &mut io, pos);
    }
    if extended {
        let n = count::<L>(b)?;
        for _ in 0..n {
            let id = id::<L>(b)?;
            let v = wire::array::<16>(b)?;
            io.push_id(u32::from(id), IoValue::Bytes(v.to_vec()));
        }
    }
    if L::VARIABLE {
        let n = wire::u16(b)?;
        for _ in 0..n {
            let id = wire::u16(b)?;
            let len = wire::u16(b)?;
            let data = wire::bytes(b, usize::from(len))?;
            io.push_id(u32::from(id), IoValue::Bytes(data.to_vec()));
            map_variable(id, data, &mut pos.attributes, &mut io);
        }
    }
    pos.attributes.io = io;
    Ok(())
}

// The FMB/FMC/FMM (and FM3/FM4 "always") IO ids with a typed home, one function per
// value width. An id only maps at its documented width: another device family that
// reuses the id for something else (codec 16 trucks send id 85 as one byte, id 113
// as four) keeps its value raw instead of landing in the wrong field. Splitting by
// width also lets each `match` compile to a small jump table inlined into the group
// loop. Ids 30–60 and 389/390 are the OBD-II dongle block of the FMB AVL id table
// (outside what Traccar maps, see PROTOCOLS.md §1.6). Where two ids feed one field
// the secondary one only fills it when empty and the primary always overwrites, so
// the primary wins whatever order the device sends them in.

// Scaled values divide by the power of ten rather than multiply by its inverse: the
// quotient is the double nearest the decimal the device meant (hdop 6 → 0.6, not
// 0.6000000000000001), which is what JSON consumers and equality checks expect.

#[inline(always)]
fn map_fmb_1(id: u16, v: u64, a: &mut Attributes) {
    let f = v as f64;
    match id {
        239 => a.ignition = Some(v != 0),
        240 => a.motion = Some(v != 0),
        21 => a.rssi = Some(v as i32),
        113 => a.battery_pct = Some(f),
        236 if v != 0 => a.raise(Alarm::General),
        246 if v != 0 => a.raise(Alarm::Tow),
        247 if v != 0 => a.raise(Alarm::Accident),
        249 if v != 0 => a.raise(Alarm::Jamming),
        251 if v != 0 => a.raise(Alarm::Idle),
        252 if v != 0 => a.raise(Alarm::PowerCut),
        253 => match v {
            1 => a.raise(Alarm::HardAcceleration),
            2 => a.raise(Alarm::HardBraking),
            3 => a.raise(Alarm::HardCornering),
            _ => {}
        },
        // LV-CAN / ALL-CAN vehicle bus.
        81 => a.obd_speed_kmh = Some(f),
        82 => a.throttle_pct = Some(f),
        89 => a.fuel_level_pct = Some(f),
        // OBD-II dongle block.
        31 => a.engine_load_pct = Some(f),
        32 => a.coolant_c = Some(wire::sext(v, 1) as f64),
        35 => a.map_kpa = Some(f),
        37 => fallback(&mut a.obd_speed_kmh, f),
        39 => a.intake_temp_c = Some(wire::sext(v, 1) as f64),
        41 => fallback(&mut a.throttle_pct, f),
        48 => fallback(&mut a.fuel_level_pct, f),
        53 => a.ambient_c = Some(wire::sext(v, 1) as f64),
        58 => a.oil_temp_c = Some(wire::sext(v, 1) as f64),
        _ => {}
    }
}

#[inline(always)]
fn map_fmb_2(id: u16, v: u64, pos: &mut Position) {
    let a = &mut pos.attributes;
    let f = v as f64;
    match id {
        66 => a.power_v = Some(f / 1000.0),
        67 => a.battery_v = Some(f / 1000.0),
        182 => pos.hdop = Some(f / 10.0),
        17..=19 => {
            let axis = a.accel_mg.get_or_insert([0; 3]);
            if let Some(slot) = axis.get_mut(usize::from(id - 17)) {
                *slot = wire::sext(v, 2) as i32;
            }
        }
        84 => a.fuel_level_l = Some(f / 10.0),
        85 => a.rpm = Some(f),
        115 => fallback(&mut a.coolant_c, wire::sext(v, 2) as f64 / 10.0),
        36 => fallback(&mut a.rpm, f),
        40 => a.maf_gs = Some(f / 100.0),
        42 => a.run_time_s = Some(f),
        43 => a.distance_mil_on_km = Some(f),
        49 => a.distance_since_clear_km = Some(f),
        51 => fallback(&mut a.power_v, f / 1000.0),
        58 => a.oil_temp_c = Some(wire::sext(v, 2) as f64),
        _ => {}
    }
}

#[inline(always)]
fn map_fmb_4(id: u16, v: u64, a: &mut Attributes) {
    let f = v as f64;
    match id {
        16 => a.odometer_m = Some(f),
        199 => a.trip_odometer_m = Some(f),
        83 => a.fuel_used_l = Some(f / 10.0),
        87 => fallback(&mut a.odometer_m, f),
        12 => fallback(&mut a.fuel_used_l, f / 1000.0),
        389 => fallback(&mut a.odometer_m, f * 1000.0),
        390 => fallback(&mut a.fuel_level_l, f / 10.0),
        _ => {}
    }
}

#[inline(always)]
fn map_fmb_8(id: u16, v: u64, a: &mut Attributes) {
    // iButton ids are sent little-endian; 0 means no key is present.
    if id == 78 && v != 0 {
        a.driver_id = Some(hex16(v.swap_bytes()));
    }
}

/// `{:016X}` without the formatting machinery, which cost more than the rest of a
/// small record put together.
fn hex16(v: u64) -> String {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut buf = [0u8; 16];
    for (i, b) in buf.iter_mut().enumerate() {
        *b = DIGITS[((v >> (4 * (15 - i))) & 0xF) as usize];
    }
    // All bytes are ASCII hex digits, so this never takes the error path; building the
    // array first and copying once beat pushing char by char (UTF-8 encoding per push).
    std::str::from_utf8(&buf).map(str::to_owned).unwrap_or_default()
}

/// Fill `slot` from a secondary id unless a primary id already did (a primary that
/// comes later overwrites it).
#[inline(always)]
fn fallback(slot: &mut Option<f64>, v: f64) {
    if slot.is_none() {
        *slot = Some(v);
    }
}

/// Codec 8E variable-length values with a typed home or a documented inner layout.
fn map_variable(id: u16, data: &[u8], a: &mut Attributes, io: &mut IoMap) {
    match id {
        256 => {
            let vin = ascii(data);
            if !vin.is_empty() {
                a.vin = Some(vin);
            }
        }
        281 if wire::is_printable(data) => {
            a.dtcs = String::from_utf8_lossy(data)
                .split([',', ' '])
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect();
        }
        385 => beacons(data, io),
        548 | 10829 | 10831 => ble_tags(data, io),
        _ => {}
    }
}

/// Printable ASCII with NUL padding and blanks trimmed; empty when not text.
fn ascii(data: &[u8]) -> String {
    let end = data.iter().rposition(|&c| c != 0).map_or(0, |i| i + 1);
    let text = data.get(..end).unwrap_or_default();
    if !wire::is_printable(text) {
        return String::new();
    }
    String::from_utf8_lossy(text).trim().to_owned()
}

fn named(io: &mut IoMap, prefix: &str, index: usize, field: &str, v: IoValue) {
    io.0.push((IoKey::Name(format!("{prefix}{index}{field}")), v));
}

/// Id 385: iBeacon / Eddystone list (a data-part byte, then per beacon a flags byte,
/// the beacon identity, RSSI and optional battery/temperature). Named as Traccar
/// names them (`beacon1Uuid`, …). A truncated list keeps what was read.
fn beacons(data: &[u8], io: &mut IoMap) {
    let mut b = data.get(1..).unwrap_or_default();
    let mut index = 1;
    while !b.is_empty() {
        let Ok(()) = beacon(&mut b, index, io) else { return };
        index += 1;
    }
}

fn beacon(b: &mut &[u8], i: usize, io: &mut IoMap) -> Result<(), Short> {
    let flags = wire::u8(b)?;
    if flags >> 4 > 0 {
        let uuid = wire::array::<16>(b)?;
        let major = wire::u16(b)?;
        let minor = wire::u16(b)?;
        named(io, "beacon", i, "Uuid", IoValue::Bytes(uuid.to_vec()));
        named(io, "beacon", i, "Major", IoValue::U64(u64::from(major)));
        named(io, "beacon", i, "Minor", IoValue::U64(u64::from(minor)));
    } else {
        let namespace = wire::array::<10>(b)?;
        let instance = wire::array::<6>(b)?;
        named(io, "beacon", i, "Namespace", IoValue::Bytes(namespace.to_vec()));
        named(io, "beacon", i, "Instance", IoValue::Bytes(instance.to_vec()));
    }
    let rssi = wire::u8(b)? as i8;
    named(io, "beacon", i, "Rssi", IoValue::I64(i64::from(rssi)));
    if flags & 0x02 != 0 {
        let mv = wire::u16(b)?;
        named(io, "beacon", i, "Battery", IoValue::F64(f64::from(mv) / 100.0));
    }
    if flags & 0x04 != 0 {
        let t = wire::u16(b)?;
        named(io, "beacon", i, "Temp", IoValue::U64(u64::from(t)));
    }
    Ok(())
}

/// Ids 548/10829/10831: BLE sensor tag lists (a header byte, then per tag a length
/// and that many bytes of id/length/value parameters). Named `tag1Rssi`,
/// `tag1Battery`, … as Traccar names them.
fn ble_tags(data: &[u8], io: &mut IoMap) {
    let mut b = data.get(1..).unwrap_or_default();
    let mut index = 1;
    while let Ok(len) = wire::u8(&mut b) {
        let Ok(mut tag) = wire::bytes(&mut b, usize::from(len)) else {
            return;
        };
        while let (Ok(pid), Ok(plen)) = (wire::u8(&mut tag), wire::u8(&mut tag)) {
            let Ok(p) = wire::bytes(&mut tag, usize::from(plen)) else {
                break;
            };
            match (pid, p) {
                (0, [rssi, ..]) => named(io, "tag", index, "Rssi", IoValue::I64(i64::from(*rssi as i8))),
                (1, id) => named(io, "tag", index, "Id", IoValue::Bytes(id.to_vec())),
                (2, [flags, rest @ ..]) => {
                    if flags & 0x40 != 0 {
                        named(io, "tag", index, "LowBattery", IoValue::Bool(true));
                    }
                    if let (true, Some(v)) = (flags & 0x80 != 0, rest.first()) {
                        named(io, "tag", index, "Voltage", IoValue::U64(u64::from(*v) * 10 + 2000));
                    }
                }
                (13, [low, ..]) => named(io, "tag", index, "LowBattery", IoValue::U64(u64::from(*low))),
                (14, [hi, lo, ..]) => named(
                    io,
                    "tag",
                    index,
                    "Battery",
                    IoValue::U64(u64::from(u16::from_be_bytes([*hi, *lo]))),
                ),
                _ => {}
            }
        }
        index += 1;
    }
}

/// Codec 7 (GH3000 personal trackers): a 30-bit timestamp from 2007 with the priority
/// in the top two bits, then a global mask saying which blocks follow, a location
/// mask for the GPS block, and 1/2/4-byte IO groups with u8 counts and ids.
fn gh3000(count: u8, mut b: &[u8], last_fix: &mut Option<LastFix>) -> Result<Vec<Position>, RecordError> {
    let n = usize::from(count);
    // A codec 7 record is at least the timestamp and the global mask.
    let mut out = Vec::with_capacity(n.min(b.len() / 5));
    for i in 0..n {
        out.push(gh3000_record(&mut b, last_fix).map_err(|f| f.at(i))?);
    }
    if !b.is_empty() {
        return Err(RecordError::Trailing { extra: b.len() });
    }
    Ok(out)
}

fn gh3000_record(b: &mut &[u8], last_fix: &mut Option<LastFix>) -> Result<Position, Fail> {
    let t = wire::u32(b)?;
    let priority = t >> 30;
    let time = DateTime::<Utc>::from_timestamp(i64::from(t & 0x3FFF_FFFF) + GH3000_EPOCH, 0)
        .ok_or(Fail::Time(u64::from(t)))?;
    let global = wire::u8(b)?;
    let mut io = IoMap::with_capacity(8);
    if priority != 0 {
        io.push_name("priority", IoValue::U64(u64::from(priority)));
    }
    // Without a GPS block the record repeats the session's last fix, marked invalid.
    let fix = last_fix.unwrap_or(LastFix {
        latitude: 0.0,
        longitude: 0.0,
    });
    let mut pos = Position::new(time, fix.latitude, fix.longitude, false);
    let mut has_fix = false;
    if global & 0x01 != 0 {
        let location = wire::u8(b)?;
        if location & 0x01 != 0 {
            let lat = f64::from(f32::from_bits(wire::u32(b)?));
            let lon = f64::from(f32::from_bits(wire::u32(b)?));
            if !(lat.is_finite() && lon.is_finite() && lat.abs() <= 90.0 && lon.abs() <= 180.0) {
                return Err(Fail::Coordinates);
            }
            pos.latitude = lat;
            pos.longitude = lon;
            has_fix = true;
        }
        if location & 0x02 != 0 {
            pos.altitude_m = Some(f64::from(wire::u16(b)?));
        }
        if location & 0x04 != 0 {
            pos.course_deg = Some(f64::from(wire::u8(b)?) * 360.0 / 256.0);
        }
        if location & 0x08 != 0 {
            pos.speed_kmh = Some(f64::from(wire::u8(b)?));
        }
        if location & 0x10 != 0 {
            pos.satellites = Some(wire::u8(b)?);
        }
        if location & 0x20 != 0 {
            let lac = wire::u16(b)?;
            let cid = wire::u16(b)?;
            io.push_name("lac", IoValue::U64(u64::from(lac)));
            io.push_name("cell_id", IoValue::U64(u64::from(cid)));
        }
        if location & 0x40 != 0 {
            let q = wire::u8(b)?;
            pos.attributes.rssi = Some(i32::from(q));
            io.push_name("signal", IoValue::U64(u64::from(q)));
        }
        if location & 0x80 != 0 {
            io.push_name("operator", IoValue::U64(u64::from(wire::u32(b)?)));
        }
    }
    if global & 0x02 != 0 {
        let n = usize::from(wire::u8(b)?);
        group::<1, 1, 2>(b, n, &mut io, |id, v| map_gh3000(id, v, &mut pos))?;
    }
    if global & 0x04 != 0 {
        let n = usize::from(wire::u8(b)?);
        group::<1, 2, 3>(b, n, &mut io, |id, v| map_gh3000(id, v, &mut pos))?;
    }
    if global & 0x08 != 0 {
        let n = usize::from(wire::u8(b)?);
        group::<1, 4, 5>(b, n, &mut io, |id, v| map_gh3000(id, v, &mut pos))?;
    }
    pos.valid = has_fix && pos.satellites != Some(0);
    if has_fix {
        *last_fix = Some(LastFix {
            latitude: pos.latitude,
            longitude: pos.longitude,
        });
    }
    pos.attributes.io = io;
    Ok(pos)
}

/// GH3000 ids differ from the FMB table.
fn map_gh3000(id: u16, v: u64, pos: &mut Position) {
    let a = &mut pos.attributes;
    match id {
        1 => a.battery_pct = Some(v as f64),
        20 => pos.hdop = Some(v as f64 / 10.0),
        67 => a.battery_v = Some(v as f64 / 1000.0),
        222 if v == 1 => a.raise(Alarm::Sos),
        240 => a.motion = Some(v != 0),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex16_matches_format() {
        for v in [0, 1, 0x0102_0304_0506_0708, u64::MAX, 0xDEAD_BEEF] {
            assert_eq!(hex16(v), format!("{v:016X}"));
        }
    }
}
