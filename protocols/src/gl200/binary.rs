//! Queclink binary ("HEX mode") messages, sent instead of the ASCII reports when a device is
//! configured for the HEX protocol format.
//!
//! Common envelope: 4-byte header (`+RSP`, `+EVT` …), message type, report mask, length, …,
//! and a fixed tail: send time (u16 year, month, day, hour, minute, second), count number
//! (u16), CRC-16/CCITT-FALSE over everything from byte 4 up to the CRC, CR LF. The CRC is
//! checked. Location reports (`+RSP`/`+BSP`, plain and compressed) and event reports
//! (`+EVT`/`+BVT`) are decoded with the layout Traccar uses (report mask `00FC1FBF`-style
//! devices); the IMEI is 7 bytes of two decimal digits each plus the check digit. Everything
//! else (`+INF`, `+HBD`, `+LGN`, `+CRD`, a binary `+ACK` …) is kept raw: `io.raw` holds the
//! whole frame, with the type, count number and send time alongside.

use chrono::{DateTime, NaiveDate, Utc};
use crc::{CRC_16_IBM_3740, Crc};

use crate::error::{DecodeError, hex_excerpt};
use crate::model::{Alarm, Attributes, IoValue, Message, MessageKind, Position};

const CCITT_FALSE: Crc<u16> = Crc::<u16>::new(&CRC_16_IBM_3740);

/// Send time, count number, CRC, CR LF.
const TAIL: usize = 7 + 2 + 2 + 2;

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|s| s[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|s| u16::from_be_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn i32(&mut self) -> Option<i32> {
        self.u32().map(|v| v as i32)
    }
    fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }
    fn time(&mut self) -> Option<DateTime<Utc>> {
        let year = self.u16()?;
        let s = self.take(5)?;
        NaiveDate::from_ymd_opt(i32::from(year), u32::from(s[0]), u32::from(s[1]))?
            .and_hms_opt(u32::from(s[2]), u32::from(s[3]), u32::from(s[4]))
            .map(|t| t.and_utc())
    }
}

/// Big-endian bit reader for compressed location records.
struct Bits<'a> {
    b: &'a [u8],
    bit: usize,
}

impl Bits<'_> {
    fn unsigned(&mut self, n: usize) -> u32 {
        let mut v = 0u32;
        for _ in 0..n {
            let byte = self.b.get(self.bit / 8).copied().unwrap_or(0);
            v = (v << 1) | u32::from((byte >> (7 - self.bit % 8)) & 1);
            self.bit += 1;
        }
        v
    }
    fn signed(&mut self, n: usize) -> i32 {
        let v = self.unsigned(n);
        let sign = 1u32 << (n - 1);
        if v & sign != 0 {
            v as i32 - (1i32 << n)
        } else {
            v as i32
        }
    }
}

/// 7 bytes of two decimal digits each plus one check digit; anything else as Traccar prints
/// it (the 8 bytes as one decimal number).
fn imei_from(b: &[u8]) -> Option<String> {
    let b: [u8; 8] = b.try_into().ok()?;
    if b[..7].iter().all(|x| *x < 100) && b[7] < 10 {
        let mut s = String::with_capacity(15);
        for x in &b[..7] {
            s.push(char::from(b'0' + x / 10));
            s.push(char::from(b'0' + x % 10));
        }
        s.push(char::from(b'0' + b[7]));
        Some(s)
    } else {
        Some(format!("{:015}", u64::from_be_bytes(b)))
    }
}

/// MCC/MNC are sent as their decimal digits in hex nibbles (`0x0460` = 460).
fn bcd_like(v: u16) -> u64 {
    let s = format!("{v:04x}");
    s.parse().unwrap_or(u64::from(v))
}

/// One 32-byte location record: accuracy, speed, azimuth, altitude, longitude, latitude,
/// fix time, MCC, MNC, LAC, cell, reserved.
fn record(r: &mut Reader, attrs: &Attributes) -> Option<Option<Position>> {
    let hdop = r.u8()?;
    // Speed: integer km/h (u16) then tenths (u8).
    let speed = f64::from(r.u16()?) + f64::from(r.u8()?) / 10.0;
    let course = r.u16()?;
    let altitude = r.u16()? as i16;
    let lon = r.i32()?;
    let lat = r.i32()?;
    let time = r.time();
    let (mcc, mnc, lac, cid) = (r.u16()?, r.u16()?, r.u16()?, r.u16()?);
    r.skip(1)?;
    let (lat, lon) = (f64::from(lat) / 1e6, f64::from(lon) / 1e6);
    let Some(time) = time.filter(|_| lat.abs() <= 90.0 && lon.abs() <= 180.0) else {
        return Some(None);
    };
    let mut p = Position::new(time, lat, lon, hdop > 0);
    p.hdop = Some(f64::from(hdop));
    p.speed_kmh = Some(speed);
    p.course_deg = Some(f64::from(course));
    p.altitude_m = Some(f64::from(altitude));
    p.attributes = attrs.clone();
    let io = &mut p.attributes.io;
    io.push_name("mcc", IoValue::U64(bcd_like(mcc)));
    io.push_name("mnc", IoValue::U64(bcd_like(mnc)));
    io.push_name("lac", IoValue::U64(u64::from(lac)));
    io.push_name("cid", IoValue::U64(u64::from(cid)));
    Some(Some(p))
}

/// The header shared by `+RSP` and `+EVT`: returns the IMEI, battery %, power mV and satellites.
struct Head {
    ty: u8,
    imei: Option<String>,
    attrs: Attributes,
    satellites: u8,
}

fn head(r: &mut Reader) -> Option<Head> {
    let ty = r.u8()?;
    r.skip(4 + 2 + 1 + 2)?; // mask, length, device type, protocol version
    let fw = r.u16()?;
    let imei = imei_from(r.take(8)?);
    let battery = r.u8()?;
    let power = r.u16()?;
    let mut attrs = Attributes {
        battery_pct: Some(f64::from(battery)),
        power_v: Some(f64::from(power) / 1000.0),
        ..Attributes::default()
    };
    attrs.io.push_name("versionFw", IoValue::Text(format!("{fw:04X}")));
    if ty == 8 {
        r.skip(2)?; // GEO: reserved
    }
    r.skip(1)?; // motion status
    let satellites = r.u8()?;
    Some(Head {
        ty,
        imei,
        attrs,
        satellites,
    })
}

fn location(r: &mut Reader, out: &mut Message) -> Option<()> {
    let h = head(r)?;
    out.imei = h.imei;
    if h.ty != 100 {
        r.skip(1)?; // index
    }
    if h.ty == 3 {
        // LCB: phone number, BCD, ended by an F nibble.
        r.skip(1)?;
        loop {
            let b = r.u8()?;
            if b & 0xf == 0xf || b & 0xf0 == 0xf0 {
                break;
            }
        }
    }
    if h.ty == 100 {
        let count = r.u16()?;
        let (mut speed, mut heading, mut lat, mut lon, mut time) = (0i64, 0i64, 0i64, 0i64, 0u32);
        for _ in 0..count {
            if time > 0 {
                time = time.saturating_add(1);
            }
            let first = *r.b.get(r.at)?;
            match first >> 6 {
                1 => {
                    let mut bits = Bits { b: r.take(3)?, bit: 3 };
                    speed = i64::from(bits.unsigned(12));
                    heading = i64::from(bits.unsigned(9));
                    lon = i64::from(r.i32()?);
                    lat = i64::from(r.i32()?);
                    if time == 0 {
                        time = r.u32()?;
                    }
                }
                2 => {
                    let mut bits = Bits { b: r.take(5)?, bit: 3 };
                    speed += i64::from(bits.signed(7));
                    heading += i64::from(bits.signed(7));
                    lon += i64::from(bits.signed(12));
                    lat += i64::from(bits.signed(11));
                }
                _ => {
                    r.skip(1)?; // invalid or repeated point
                    continue;
                }
            }
            let (la, lo) = (lat as f64 / 1e6, lon as f64 / 1e6);
            let Some(t) = DateTime::from_timestamp(i64::from(time), 0) else {
                continue;
            };
            if la.abs() > 90.0 || lo.abs() > 180.0 {
                continue;
            }
            let mut p = Position::new(t, la, lo, true);
            p.speed_kmh = Some(speed as f64 / 10.0);
            p.course_deg = Some(heading as f64);
            out.positions.push(p);
        }
        if let Some(last) = out.positions.last_mut() {
            last.attributes = h.attrs;
        }
    } else {
        let count = r.u8()?;
        for _ in 0..count {
            if let Some(mut p) = record(r, &h.attrs)? {
                p.satellites = Some(h.satellites);
                out.positions.push(p);
            }
        }
    }
    Some(())
}

fn event(r: &mut Reader, out: &mut Message) -> Option<()> {
    let h = head(r)?;
    out.imei = h.imei;
    let mut attrs = h.attrs;
    let skip = match h.ty {
        6 => {
            attrs.raise(Alarm::LowBattery);
            2 // backup battery voltage
        }
        45 | 46 => {
            attrs.ignition = Some(h.ty == 45);
            2 + 1 + 4 // reserved, report type, ignition duration
        }
        15 => 3,     // update code, retry
        17 => 4,     // idling duration
        21 => 1 + 4, // GPS signal status, reserved
        26 => 12,    // geofence id, enable, mode, radius, check interval
        31 => 2,     // GPS jamming
        35 => 1,     // roaming
        33 => {
            attrs.raise(Alarm::Jamming);
            1
        }
        23 => {
            attrs.raise(Alarm::Accident);
            1 // crash counter
        }
        34 => 3, // command id, result
        _ => 0,
    };
    attrs.event = Some(u32::from(h.ty));
    r.skip(skip)?;
    r.skip(1)?; // count
    if !attrs.alarms.is_empty() {
        out.kind = MessageKind::Alarm;
    }
    if let Some(mut p) = record(r, &attrs)? {
        p.satellites = Some(h.satellites);
        out.positions.push(p);
    } else {
        out.attributes = attrs;
    }
    Some(())
}

pub(super) fn decode(frame: &[u8]) -> Result<Message, DecodeError> {
    let n = frame.len();
    if n < 4 + 1 + TAIL || !frame.ends_with(b"\r\n") {
        return Err(DecodeError::truncated(frame));
    }
    let header = &frame[..4];
    if let Some((at, width)) = super::binary_length_field(header) {
        let declared = frame
            .get(at..at + width)
            .map_or(0, |f| f.iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b)));
        if declared != n {
            return Err(DecodeError::Length {
                declared,
                actual: n,
                excerpt: hex_excerpt(frame),
            });
        }
    }
    let carried = u16::from_be_bytes([frame[n - 4], frame[n - 3]]);
    let computed = CCITT_FALSE.checksum(&frame[4..n - 4]);
    if carried != computed {
        return Err(DecodeError::checksum(
            format!("{computed:04X}"),
            format!("{carried:04X}"),
            frame,
        ));
    }
    let name = String::from_utf8_lossy(header).into_owned();
    let ty = frame[4];
    let kind = match header {
        b"+RSP" | b"+BSP" => MessageKind::Position,
        b"+HBD" => MessageKind::Heartbeat,
        b"+ACK" => MessageKind::CommandResponse,
        _ => MessageKind::Other,
    };
    let mut msg = Message::new(kind).with_type(name);
    let mut r = Reader {
        b: &frame[..n - TAIL],
        at: 4,
    };
    // A body shorter than its layout leaves the message raw rather than failing it.
    match header {
        b"+RSP" | b"+BSP" => {
            let _ = location(&mut r, &mut msg);
        }
        b"+EVT" | b"+BVT" => {
            let _ = event(&mut r, &mut msg);
        }
        b"+LGN" => msg.imei = frame.get(15..23).and_then(imei_from).filter(|i| i.len() == 15),
        _ => {}
    }
    let mut tail = Reader { b: frame, at: n - TAIL };
    let send_time = tail.time();
    let count = tail.u16().unwrap_or(0);
    let target = match msg.positions.last_mut() {
        Some(p) => &mut p.attributes,
        None => &mut msg.attributes,
    };
    let io = &mut target.io;
    io.push_name("type", IoValue::U64(u64::from(ty)));
    io.push_name("count", IoValue::Text(format!("{count:04X}")));
    if let Some(t) = send_time {
        io.push_name("sendTime", IoValue::Text(t.format("%Y%m%d%H%M%S").to_string()));
    }
    io.push_name("raw", IoValue::Bytes(frame.to_vec()));
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_report() {
        let f = hex::decode(
            "2b4556540c00fc1fbf005c4501010108563254030003430564312a41090100000000003f007dff75a11a025c6a78\
             07e1070a14041202680003189c1ac500000000000000000000000000000000000007e1070b041134054e5c6e0d0a",
        )
        .unwrap();
        let m = decode(&f).unwrap();
        assert_eq!(m.imei.as_deref(), Some("865084030003675"));
        let p = &m.positions[0];
        assert!((p.longitude + 9.068262).abs() < 1e-9);
        assert!((p.latitude - 39.611).abs() < 1e-9);
        assert_eq!(p.time.to_rfc3339(), "2017-07-10T20:04:18+00:00");
        assert_eq!(p.attributes.io.get_name("mcc"), Some(&IoValue::U64(268)));
        let mut bad = f.clone();
        bad[30] ^= 1;
        assert!(matches!(decode(&bad), Err(DecodeError::Checksum { .. })));
    }

    #[test]
    fn compressed_location_batch() {
        let f = hex::decode(concat!(
            "2b5253506400fc1fbf058e450102020956325403000343056438ed2205010e61c6f0ff75a1b4025c6af959803d8ba07f",
            "fe17dea03f7e1fdda0007df7dfa03e7e3fd0a0befdf7cea001fddfd8a000fdefdca042fd9fe1a0427d6fe9a0017db7dc",
            "a0407d47e7a0027d67e5bfc0fd77eca03ffd8fe4bfff7dcfddbffd7dbfdebffdfddfe2bfbe7e0fe1bf7f7e67e2bf7bfe",
            "d7e2bf7c7f5fe2bffbffc7e3a12880a7daa0b9013fe3a0f801b7dfa0bd81efe1a03f8207e0a03e8217e4a07e023fe9a0",
            "bd824feca03a02affda07b02d004a07f02e007a00002d808a041830001a003834fefa00402b7eebf8382a7ebbfc28267",
            "e9bf81821fe3bf0181d7e3bf01016fe9bf010117edbf4080c7f6bf7f8087fabfbf805ff9a0fa8097fca23401300aa0b4",
            "016019a13a817026a13b81883ea0be81a83fa0bd81b03ba00101d83abfc0039874bfc081b835bfbf819834bfc081982f",
            "a01004702ea00502500da002827802bfc0825fffbf41821fffbf4081d801bf3f816802bec180fffebec20077fdbf8000",
            "2801bfc0000800a000000800e0e0a202804ffba14a8127eea0460107e4a0cc809fd9a0c4004fcda0c2004fcaa080007f",
            "bfa0410067bebfc100c7b6a03f8037c1bfbf004fc6a03f0057c6a0410027c5a081001fbaa0418017baa001001fb8a000",
            "7fe7bca000ffdfb7a0817fc7b7a040ffbfb3a0407fb7b4a0407fb7b1bf807fbfb3a0007fb7b5a0007fb7b1a0007fb7b2",
            "a0007fbfb3a0407fafaba000ffb7ada0017f97aba040ff7faca001ff77b6bf3fff67b3bf007f87bea082ff47b4bfc27f",
            "17c1bfffff3fc2bebdff9fcabe3effbfe0bf3cff47e9a03c002ff0a1740097e9a1f8813fe1a12f01f7fca0fa028ff8a0",
            "7f02a7fea041829007a00302bff8bf810287f2a0080257e1a0050207dbbfc481cfd3a044819fcda043015fc3a043810f",
            "c2a0c680a7b2a0448027b0a0857fa7aea0c37f67a2a0017ee7a7a0407f0f9fa000ff079fa03ffeffa1a03ffeffa2a07f",
            "ff17a0a03fff1fa0a03fff2fa2a03fff3fa0a07fff47a2a0007f579fa03fff4f9da03fff679ca0007f679ea000ff4f9c",
            "a07fff5f9ca0007f579cbfc07f5f9fbf407f6fa6bf807f6fabbfc07f7fadbf807f87b2a0407f87b0a0407f77aba000ff",
            "77afbfc07f77aea03fff7fada07fff7faca000ff7fada0007f77abbfc0ff77b0a000ff7faea042ff2faba0037ee7ada0",
            "437e57a1a0037e27abbfc1fdf7bcbf827defc5bf01fe0fcebf017e3fd5bfc17e2fdca0ff7e27d7a13cfe27cba0bd7e0f",
            "a7a07d7e6fb9a07d7eb7b3a07efedfaea03ffef7afa0c07eefa7a07f7f07a3a03fff0fa3a03f7f27a2a03f7f37a4bfff",
            "7f6fa3bfff7f5fa3a07eff979fa03f7fbfa2a03f7fdfa1bfbf8017a5bfbf0037adbeff004fb8bfbf004fc1beff804fcb",
            "bf7f8047d5bf408027debf408007e8a03e804fdebf7e8027f2bf00ffefffa0400017efa0418017f1a041002feca04100",
            "17edbf007fbffea0007fdff6a1018027e4bf81ffc7f6a1008017dca0c10087bea0018097baa083ffc7cda0837fafc7a1",
            "02ff0fc8a0c27effb9a0c2fe87c1a143fbf78ea07f7dcfc0a0bd7dffb3a03d7e47b1a03ffe77afa07ffe77ada0007e77",
            "aebfc07e77afbfc07e8faea03ffea7afbfbf7ecfb4bfbcfeffbbbf7bff8fb8bf7d0027bebffb809fc7bffa00ffc9bf78",
            "813fd9a03d8197e1a03b81d7e6a07e01efdda00081bfdda00101bfdba03f81a7dfbfc001afdbbfbd81a7f1bfbe0187ee",
            "bf80814feea0028127e7a081813fe2a0010147e6a03e8147f4a0408167eca040817fe7a0018157e4bfc8011fdaa08b00",
            "2fd1a009ffa7d5a009fe57f6a04b7df7f4a0097e07eca0027df7edbf807e2feca000fe3feca07ffe37f0a0407e0ff7a0",
            "40fde7f0a0007de7eea000fdcff4a001fddffaa000fdcff8a0027dcffda07f7dbff3a03f7dc7f402680003189c355300",
            "000109000002120700000000000000000007e1080108290019e63b5c0d0a"
        ))
        .unwrap();
        let m = decode(&f).unwrap();
        assert!(m.positions.len() > 100, "{}", m.positions.len());
        let p = &m.positions[0];
        assert!(
            (p.latitude - 39.611).abs() < 0.01 && (p.longitude + 9.06).abs() < 0.01,
            "{p:?}"
        );
    }

    proptest::proptest! {
        /// Random bodies behind a valid envelope (length, CRC, CR LF) reach every layout path.
        #[test]
        fn random_bodies_with_valid_envelope(
            header in proptest::sample::select(vec![b"+RSP", b"+BSP", b"+EVT", b"+BVT", b"+LGN", b"+INF", b"+ACK", b"+HBD"]),
            ty in proptest::sample::select(vec![0u8, 3, 6, 7, 8, 12, 15, 17, 21, 23, 26, 31, 33, 34, 35, 45, 46, 100]),
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
        ) {
            let mut f = header.to_vec();
            f.push(ty);
            f.extend_from_slice(&body);
            f.extend_from_slice(&[0; 9]); // send time + count
            let n = f.len() + 4;
            let Some((at, width)) = crate::gl200::binary_length_field(header) else { return Ok(()) };
            if at + width > f.len() || (width == 1 && n > 255) {
                return Ok(());
            }
            if width == 1 {
                f[at] = n as u8;
            } else {
                f[at..at + 2].copy_from_slice(&(n as u16).to_be_bytes());
            }
            let crc = CCITT_FALSE.checksum(&f[4..]);
            f.extend_from_slice(&crc.to_be_bytes());
            f.extend_from_slice(b"\r\n");
            proptest::prop_assert!(decode(&f).is_ok());
        }
    }
}
