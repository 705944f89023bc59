//! Hand-encoded PostgreSQL binary COPY (`PGCOPY`) for positions.
//!
//! Binary rather than text COPY: no float formatting or parsing, no escaping, and the
//! server's per-column input cost is a byte swap. The format is documented under
//! "Binary Format" in the COPY reference: an 11-byte signature, flags and header
//! extension, then per tuple a field count and length-prefixed big-endian fields
//! (length -1 = NULL), then a -1 trailer.

use chrono::{DateTime, Utc};

use crate::row::PositionRow;

/// Column order of [`encode_position`], for `COPY positions (…)`.
pub const POSITION_COLUMNS: &str = "device_id, fix_time, server_time, lat, lon, altitude, speed_kmh, course, \
     satellites, hdop, valid, ignition, motion, odometer_m, fuel_level_pct, fuel_used_l, rpm, coolant_c, \
     power_v, battery_v, event, alarms, dtcs, attributes";

const POSITION_FIELDS: i16 = 24;
const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;
const TEXT_OID: u32 = 25;
const JSONB_VERSION: u8 = 1;

/// Builds one COPY stream. `new` writes the header, `finish` the trailer.
#[derive(Debug)]
pub struct CopyBuffer {
    buf: Vec<u8>,
    rows: usize,
}

impl CopyBuffer {
    pub fn with_capacity(bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(bytes.max(32));
        buf.extend_from_slice(SIGNATURE);
        buf.extend_from_slice(&0i32.to_be_bytes()); // flags: no OIDs
        buf.extend_from_slice(&0i32.to_be_bytes()); // header extension length
        CopyBuffer { buf, rows: 0 }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn push_position(&mut self, r: &PositionRow) {
        encode_position(&mut self.buf, r);
        self.rows += 1;
    }

    /// Appends tuples encoded earlier by [`encode_tuples`].
    pub fn push_encoded(&mut self, tuples: &[u8], rows: usize) {
        self.buf.extend_from_slice(tuples);
        self.rows += rows;
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
        self.buf
    }
}

/// Tuples only (no header or trailer), to be framed later by a [`CopyBuffer`].
pub fn encode_tuples(rows: &[PositionRow]) -> Vec<u8> {
    let mut b = Vec::with_capacity(rows.len() * 200);
    for r in rows {
        encode_position(&mut b, r);
    }
    b
}

/// Appends one tuple in [`POSITION_COLUMNS`] order.
pub fn encode_position(b: &mut Vec<u8>, r: &PositionRow) {
    b.extend_from_slice(&POSITION_FIELDS.to_be_bytes());
    put_i64(b, r.device_id);
    put_ts(b, r.fix_time);
    put_ts(b, r.server_time);
    put_f64(b, r.lat);
    put_f64(b, r.lon);
    opt_f32(b, r.altitude);
    opt_f32(b, r.speed_kmh);
    opt_f32(b, r.course);
    match r.satellites {
        Some(v) => {
            b.extend_from_slice(&2i32.to_be_bytes());
            b.extend_from_slice(&v.to_be_bytes());
        }
        None => null(b),
    }
    opt_f32(b, r.hdop);
    put_bool(b, r.valid);
    opt_bool(b, r.ignition);
    opt_bool(b, r.motion);
    opt_f64(b, r.odometer_m);
    opt_f32(b, r.fuel_level_pct);
    opt_f64(b, r.fuel_used_l);
    opt_f32(b, r.rpm);
    opt_f32(b, r.coolant_c);
    opt_f32(b, r.power_v);
    opt_f32(b, r.battery_v);
    match r.event {
        Some(v) => {
            b.extend_from_slice(&4i32.to_be_bytes());
            b.extend_from_slice(&v.to_be_bytes());
        }
        None => null(b),
    }
    opt_text_array(b, r.alarms.as_deref());
    opt_text_array(b, r.dtcs.as_deref());
    match &r.attributes {
        Some(v) => {
            let at = b.len();
            b.extend_from_slice(&[0; 4]);
            b.push(JSONB_VERSION);
            // Writing into a Vec cannot fail, and a serde_json::Value always serialises.
            let _ = serde_json::to_writer(&mut *b, v);
            patch_len(b, at);
        }
        None => null(b),
    }
}

fn patch_len(b: &mut [u8], at: usize) {
    let len = (b.len() - at - 4) as i32;
    b[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn null(b: &mut Vec<u8>) {
    b.extend_from_slice(&(-1i32).to_be_bytes());
}

fn put_i64(b: &mut Vec<u8>, v: i64) {
    b.extend_from_slice(&8i32.to_be_bytes());
    b.extend_from_slice(&v.to_be_bytes());
}

fn put_ts(b: &mut Vec<u8>, t: DateTime<Utc>) {
    put_i64(b, t.timestamp_micros() - PG_EPOCH_OFFSET_US);
}

fn put_f64(b: &mut Vec<u8>, v: f64) {
    b.extend_from_slice(&8i32.to_be_bytes());
    b.extend_from_slice(&v.to_be_bytes());
}

fn opt_f64(b: &mut Vec<u8>, v: Option<f64>) {
    match v {
        Some(v) => put_f64(b, v),
        None => null(b),
    }
}

fn opt_f32(b: &mut Vec<u8>, v: Option<f32>) {
    match v {
        Some(v) => {
            b.extend_from_slice(&4i32.to_be_bytes());
            b.extend_from_slice(&v.to_be_bytes());
        }
        None => null(b),
    }
}

fn put_bool(b: &mut Vec<u8>, v: bool) {
    b.extend_from_slice(&1i32.to_be_bytes());
    b.push(v as u8);
}

fn opt_bool(b: &mut Vec<u8>, v: Option<bool>) {
    match v {
        Some(v) => put_bool(b, v),
        None => null(b),
    }
}

/// One-dimensional `text[]`: ndim, has-nulls flag, element OID, then (length, lower
/// bound) for the dimension, then the elements.
fn opt_text_array(b: &mut Vec<u8>, v: Option<&[String]>) {
    let Some(items) = v else {
        return null(b);
    };
    let at = b.len();
    b.extend_from_slice(&[0; 4]);
    if items.is_empty() {
        b.extend_from_slice(&0i32.to_be_bytes());
        b.extend_from_slice(&0i32.to_be_bytes());
        b.extend_from_slice(&TEXT_OID.to_be_bytes());
    } else {
        b.extend_from_slice(&1i32.to_be_bytes());
        b.extend_from_slice(&0i32.to_be_bytes());
        b.extend_from_slice(&TEXT_OID.to_be_bytes());
        b.extend_from_slice(&(items.len() as i32).to_be_bytes());
        b.extend_from_slice(&1i32.to_be_bytes());
        for s in items {
            b.extend_from_slice(&(s.len() as i32).to_be_bytes());
            b.extend_from_slice(s.as_bytes());
        }
    }
    patch_len(b, at);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_trailer() {
        let buf = CopyBuffer::with_capacity(0).finish();
        assert_eq!(&buf[..11], SIGNATURE);
        assert_eq!(buf.len(), 11 + 4 + 4 + 2);
        assert_eq!(&buf[19..], &[0xff, 0xff]);
    }

    #[test]
    fn timestamps_count_from_the_postgres_epoch() {
        let mut b = Vec::new();
        put_ts(
            &mut b,
            DateTime::parse_from_rfc3339("2000-01-01T00:00:01Z").unwrap().to_utc(),
        );
        assert_eq!(&b[4..], &1_000_000i64.to_be_bytes());
    }
}
