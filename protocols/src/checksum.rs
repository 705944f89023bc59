//! The checksums the protocols use, as named in the CRC catalogue.

use crc::{CRC_16_ARC, CRC_16_IBM_SDLC, CRC_16_KERMIT, Crc};

const ARC: Crc<u16> = Crc::<u16>::new(&CRC_16_ARC);
const X25: Crc<u16> = Crc::<u16>::new(&CRC_16_IBM_SDLC);
const KERMIT: Crc<u16> = Crc::<u16>::new(&CRC_16_KERMIT);

/// CRC-16/ARC (Teltonika "CRC-16/IBM").
pub fn crc16_arc(data: &[u8]) -> u16 {
    ARC.checksum(data)
}

/// CRC-16/X-25 (GT06/Concox "CRC-ITU").
pub fn crc16_x25(data: &[u8]) -> u16 {
    X25.checksum(data)
}

/// CRC-16/KERMIT (Ruptela).
pub fn crc16_kermit(data: &[u8]) -> u16 {
    KERMIT.checksum(data)
}

/// Sum of bytes mod 256 (Meitrack, Freematics).
pub fn sum8(data: &[u8]) -> u8 {
    data.iter().fold(0u8, |a, b| a.wrapping_add(*b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_check_values() {
        assert_eq!(crc16_arc(b"123456789"), 0xBB3D);
        assert_eq!(crc16_x25(b"123456789"), 0x906E);
        assert_eq!(crc16_kermit(b"123456789"), 0x2189);
        assert_eq!(sum8(&[0xFF, 0x02]), 0x01);
    }
}
