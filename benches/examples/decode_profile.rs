//! Decode a protocol's realistic traffic (the `decode` bench's input) `N` times, for
//! profiling with callgrind or timing with `/usr/bin/time` on a busy machine.
//!
//! `target/release/examples/decode_profile teltonika 100`

use std::hint::black_box;

use clutch_benches::{ctx, encoded_traffic};
use protocols::{Protocol, decode_all};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let protocol: Protocol = args
        .get(1)
        .map_or("teltonika", String::as_str)
        .parse()
        .expect("protocol name");
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100);
    let transport = protocol.transports()[0];
    let (bytes, records) = encoded_traffic(protocol, transport, 2_000, 25);
    let ctx = ctx();
    let mut decoded = 0;
    for _ in 0..n {
        let mut codec = protocol.codec(transport).expect("codec");
        let (messages, _) = decode_all(codec.as_mut(), black_box(&bytes), &ctx);
        decoded += messages.iter().map(|m| m.positions.len()).sum::<usize>();
    }
    println!(
        "{protocol}: {decoded} records ({records} per pass, {} bytes per pass)",
        bytes.len()
    );
}
