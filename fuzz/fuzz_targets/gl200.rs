//! Fuzz the gl200 codec: framing and decoding of arbitrary bytes over every transport.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    clutch_fuzz::exercise(protocols::Protocol::Gl200, data);
});
