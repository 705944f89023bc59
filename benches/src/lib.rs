//! Fixtures shared by the criterion benchmarks: realistic device traffic built with the
//! protocols crate's own device-side encoders, so every protocol is measured on frames
//! its decoder really sees.
//!
//! # Layout
//! - [`fleet_positions`]: a deterministic drive with the attributes trackers usually send.
//! - [`encoded_traffic`]: one buffer of back-to-back frames for a protocol, and its record count.

use chrono::{DateTime, Duration, TimeZone, Utc};
use protocols::{Attributes, DecodeContext, Message, MessageKind, Position, Protocol, Transport, decode_all};

pub const IMEI: &str = "356307042441013";

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 8, 0, 0)
        .single()
        .expect("fixed start time")
}

/// A fixed server time for decoding, so benches are reproducible.
pub fn ctx() -> DecodeContext {
    DecodeContext {
        now: start() + Duration::days(1),
    }
}

/// `n` one-second fixes of a vehicle driving north-east, with the attributes a typical
/// FMB-class tracker sends (ignition, motion, odometer, supply and battery voltage,
/// signal, fuel, rpm, speed from the bus).
pub fn fleet_positions(n: usize) -> Vec<Position> {
    (0..n)
        .map(|i| {
            let f = i as f64;
            let mut p = Position::new(
                start() + Duration::seconds(i as i64),
                54.6872 + f * 0.000_12,
                25.2797 + f * 0.000_15,
                true,
            );
            p.altitude_m = Some(120.0 + (f * 0.1).sin() * 5.0);
            p.speed_kmh = Some(40.0 + (i % 30) as f64);
            p.course_deg = Some(45.0);
            p.satellites = Some(11);
            p.hdop = Some(0.9);
            p.attributes = Attributes {
                ignition: Some(true),
                motion: Some(true),
                odometer_m: Some(120_000.0 + f * 12.0),
                power_v: Some(13.8),
                battery_v: Some(4.1),
                rssi: Some(4),
                fuel_level_pct: Some(63.0),
                rpm: Some(1800.0 + (i % 7) as f64 * 10.0),
                obd_speed_kmh: Some(40.0 + (i % 30) as f64),
                ..Attributes::default()
            };
            p
        })
        .collect()
}

/// Encode `records` fixes as `protocol`'s device would send them: a login first when
/// the protocol has one, then positions in batches of `batch` where the protocol carries
/// several fixes per frame (one per frame otherwise). Returns the bytes and the number of
/// positions our own decoder finds in them (so a bench can report records/s honestly).
pub fn encoded_traffic(protocol: Protocol, transport: Transport, records: usize, batch: usize) -> (Vec<u8>, usize) {
    let mut enc = protocol
        .device_encoder(transport)
        .expect("protocol has a device encoder");
    let mut out = Vec::new();
    let login = Message::new(MessageKind::Login).with_imei(IMEI);
    if let Ok(bytes) = enc.encode(&login) {
        out.extend_from_slice(&bytes);
    }
    for chunk in fleet_positions(records).chunks(batch.max(1)) {
        let msg = Message::new(MessageKind::Position)
            .with_imei(IMEI)
            .with_positions(chunk.to_vec());
        match enc.encode(&msg) {
            Ok(bytes) => out.extend_from_slice(&bytes),
            Err(_) => {
                // The protocol carries one fix per frame: send them one by one.
                for p in chunk {
                    let one = Message::new(MessageKind::Position)
                        .with_imei(IMEI)
                        .with_positions(vec![p.clone()]);
                    out.extend_from_slice(&enc.encode(&one).expect("single-position encode"));
                }
            }
        }
    }
    let mut codec = protocol.codec(transport).expect("codec");
    let (messages, errors) = decode_all(codec.as_mut(), &out, &ctx());
    assert!(
        errors.is_empty(),
        "{protocol}: own traffic failed to decode: {errors:?}"
    );
    let decoded = messages.iter().map(|m| m.positions.len()).sum();
    (out, decoded)
}
