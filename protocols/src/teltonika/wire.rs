//! Byte-level helpers shared by the Teltonika decoders and encoders: a bounds-checked
//! big-endian cursor over a borrowed slice, and the CRC the TCP envelope carries.
//!
//! The cursor is hand-rolled rather than built from nom combinators because the AVL
//! record loop is the hottest path in ingest: `split_first_chunk` gives one bounds
//! check per field (or per whole IO group), no error values are built on the happy
//! path, and a failure is a zero-sized [`Short`] that the caller turns into a typed
//! [`crate::DecodeError`] once, with the frame excerpt.

/// The reflected CRC-16/ARC polynomial (0x8005 bit-reversed).
const POLY: u16 = 0xA001;

/// Slicing-by-16 tables: `TABLES[k][b]` is the CRC of byte `b` followed by `k` zero
/// bytes, so the 16 lookups of one step are independent of each other.
static TABLES: [[u16; 256]; 16] = tables();

const fn tables() -> [[u16; 256]; 16] {
    let mut t = [[0u16; 256]; 16];
    let mut b = 0;
    while b < 256 {
        let mut crc = b as u16;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ POLY } else { crc >> 1 };
            bit += 1;
        }
        t[0][b] = crc;
        b += 1;
    }
    let mut k = 1;
    while k < 16 {
        let mut b = 0;
        while b < 256 {
            let prev = t[k - 1][b];
            t[k][b] = (prev >> 8) ^ t[0][(prev & 0xFF) as usize];
            b += 1;
        }
        k += 1;
    }
    t
}

/// Half of a two-lane block of [`crc16`].
const LANE: usize = 64;

/// "Append `LANE` zero bytes" as a linear map of the CRC state, split by the state's
/// low and high byte: `SKIP[0][lo] ^ SKIP[1][hi]`.
static SKIP: [[u16; 256]; 2] = skip_tables();

const fn skip_tables() -> [[u16; 256]; 2] {
    let t0 = tables();
    let mut s = [[0u16; 256]; 2];
    let mut half = 0;
    while half < 2 {
        let mut x = 0;
        while x < 256 {
            let mut crc = (x as u16) << (8 * half);
            let mut i = 0;
            while i < LANE {
                crc = (crc >> 8) ^ t0[0][(crc & 0xFF) as usize];
                i += 1;
            }
            s[half][x] = crc;
            x += 1;
        }
        half += 1;
    }
    s
}

/// One slicing-by-16 step: the state after `c` from state `crc`. Two little-endian
/// words instead of sixteen byte loads, since the table lookups already keep the load
/// ports busy. Only the first two bytes meet the (reflected) state, so the other
/// fourteen lookups are combined first, off the state → state dependency chain.
#[inline(always)]
fn step16(crc: u16, c: &[u8; 16]) -> u16 {
    let t = &TABLES;
    let (Some(lo), Some(hi)) = (c.first_chunk::<8>(), c.last_chunk::<8>()) else {
        return crc;
    };
    let lo = u64::from_le_bytes(*lo);
    let hi = u64::from_le_bytes(*hi);
    let byte = |w: u64, k: u32| usize::from((w >> (8 * k)) as u8);
    let data = ((t[13][byte(lo, 2)] ^ t[12][byte(lo, 3)]) ^ (t[11][byte(lo, 4)] ^ t[10][byte(lo, 5)]))
        ^ ((t[9][byte(lo, 6)] ^ t[8][byte(lo, 7)]) ^ (t[7][byte(hi, 0)] ^ t[6][byte(hi, 1)]))
        ^ ((t[5][byte(hi, 2)] ^ t[4][byte(hi, 3)]) ^ (t[3][byte(hi, 4)] ^ t[2][byte(hi, 5)]))
        ^ (t[1][byte(hi, 6)] ^ t[0][byte(hi, 7)]);
    let [s0, s1] = ((lo as u16) ^ crc).to_le_bytes();
    data ^ (t[15][usize::from(s0)] ^ t[14][usize::from(s1)])
}

/// CRC-16/ARC (Teltonika calls it CRC-16/IBM) of `data`, as the TCP AVL envelope
/// carries it.
///
/// The checksum covers every byte of every packet, so it gets some care: slicing-by-16
/// over exact chunks (no bounds checks, unlike the generic `crc` crate path behind
/// `crate::checksum::crc16_arc`), and two independent lanes per 128-byte block. A
/// single lane is bound by the latency of its state → lookup → state chain; the CRC is
/// linear, so the second half of a block can run from state 0 alongside the first and
/// be merged with `state(A‖B) = skip(state(A), |B|) ^ state₀(B)`.
#[inline]
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc = 0u16;
    let (blocks, rest) = data.as_chunks::<{ 2 * LANE }>();
    for block in blocks {
        let Some((a, b)) = block.split_first_chunk::<LANE>() else {
            continue;
        };
        let (a, b) = (a.as_chunks::<16>().0, b.as_chunks::<16>().0);
        let mut lane_b = 0u16;
        for (ca, cb) in a.iter().zip(b) {
            crc = step16(crc, ca);
            lane_b = step16(lane_b, cb);
        }
        crc = SKIP[0][usize::from(crc as u8)] ^ SKIP[1][usize::from((crc >> 8) as u8)] ^ lane_b;
    }
    let (chunks, tail) = rest.as_chunks::<16>();
    for c in chunks {
        crc = step16(crc, c);
    }
    for &b in tail {
        crc = (crc >> 8) ^ TABLES[0][usize::from((crc as u8) ^ b)];
    }
    crc
}

/// The input ended before a field the layout requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Short;

/// Take `N` bytes as an array.
#[inline(always)]
pub fn array<'a, const N: usize>(b: &mut &'a [u8]) -> Result<&'a [u8; N], Short> {
    let (head, tail) = b.split_first_chunk::<N>().ok_or(Short)?;
    *b = tail;
    Ok(head)
}

/// Take `n` bytes.
#[inline(always)]
pub fn bytes<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], Short> {
    let (head, tail) = b.split_at_checked(n).ok_or(Short)?;
    *b = tail;
    Ok(head)
}

#[inline(always)]
pub fn u8(b: &mut &[u8]) -> Result<u8, Short> {
    let (&head, tail) = b.split_first().ok_or(Short)?;
    *b = tail;
    Ok(head)
}

#[inline(always)]
pub fn u16(b: &mut &[u8]) -> Result<u16, Short> {
    array::<2>(b).map(|a| u16::from_be_bytes(*a))
}

#[inline(always)]
pub fn u32(b: &mut &[u8]) -> Result<u32, Short> {
    array::<4>(b).map(|a| u32::from_be_bytes(*a))
}

/// An unsigned big-endian integer of `N` ≤ 8 bytes.
#[inline(always)]
pub fn be<const N: usize>(a: &[u8; N]) -> u64 {
    a.iter().fold(0u64, |v, &x| (v << 8) | u64::from(x))
}

/// Sign-extend the low `width` bytes of `v` (a value read unsigned from the wire).
#[inline]
pub fn sext(v: u64, width: u8) -> i64 {
    match width {
        1 => i64::from(v as u8 as i8),
        2 => i64::from(v as u16 as i16),
        4 => i64::from(v as u32 as i32),
        _ => v as i64,
    }
}

/// Whether bytes are text a person would read: ASCII from space up, plus CR, LF and
/// TAB. Anything else (control bytes, bytes ≥ 0x80) is shown as hex instead, as the
/// reference server does.
pub fn is_printable(b: &[u8]) -> bool {
    b.iter()
        .all(|&c| (0x20..0x7F).contains(&c) || matches!(c, b'\r' | b'\n' | b'\t'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_catalogue_and_the_shared_helper() {
        assert_eq!(crc16(b"123456789"), 0xBB3D);
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        for n in 0..data.len() {
            assert_eq!(crc16(&data[..n]), crate::checksum::crc16_arc(&data[..n]), "{n} bytes");
        }
    }

    #[test]
    fn cursor_reads_big_endian_and_stops_short() {
        let mut b: &[u8] = &[1, 2, 3, 4, 5, 6, 7];
        assert_eq!(u8(&mut b), Ok(1));
        assert_eq!(u16(&mut b), Ok(0x0203));
        assert_eq!(u32(&mut b), Ok(0x0405_0607));
        assert_eq!(u8(&mut b), Err(Short));
        assert_eq!(be(&[0xFF, 0xFE]), 0xFFFE);
        assert_eq!(sext(0xFE, 1), -2);
        assert_eq!(sext(0xFFFE, 2), -2);
        assert_eq!(sext(0x7F, 1), 127);
    }
}
