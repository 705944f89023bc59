//! Shared body of the per-protocol fuzz targets.

use chrono::{TimeZone, Utc};
use protocols::{DecodeContext, Framing, Protocol, decode_all};

/// Frame and decode `data` with every transport of `protocol`, checking the framing
/// invariants the network tier relies on (bounds inside the buffer, progress made).
pub fn exercise(protocol: Protocol, data: &[u8]) {
    let ctx = DecodeContext {
        now: Utc.timestamp_opt(1_767_225_600, 0).single().expect("fixed time"),
    };
    for &transport in protocol.transports() {
        let Ok(mut codec) = protocol.codec(transport) else { continue };
        for eof in [false, true] {
            match codec.frame(data, eof) {
                Framing::Frame { start, end } => {
                    assert!(start <= end && end <= data.len() && end > 0, "bad frame bounds {start}..{end}");
                }
                Framing::Resync { discard, .. } => assert!(discard >= 1 && discard <= data.len()),
                Framing::Incomplete | Framing::Fatal(_) => {}
            }
        }
        let _ = decode_all(codec.as_mut(), data, &ctx);
        let _ = codec.decode(data, &ctx);
    }
}
