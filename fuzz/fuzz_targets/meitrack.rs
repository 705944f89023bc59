//! Fuzz the meitrack codec: framing and decoding of arbitrary bytes over every transport.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    clutch_fuzz::exercise(protocols::Protocol::Meitrack, data);
});
