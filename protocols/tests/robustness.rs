//! Arbitrary bytes never panic any codec, over any transport, framed or decoded directly.

use proptest::prelude::*;
use protocols::{DecodeContext, Framing, Protocol, decode_all};

fn ctx() -> DecodeContext {
    DecodeContext::now()
}

fn every_codec() -> Vec<(Protocol, Box<dyn protocols::Codec>)> {
    let mut out = Vec::new();
    for p in Protocol::ALL {
        for t in p.transports() {
            if let Ok(c) = p.codec(*t) {
                out.push((p, c));
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        for (_, mut codec) in every_codec() {
            let _ = decode_all(codec.as_mut(), &bytes, &ctx());
            // Decoding a buffer that framing did not vouch for must be total too.
            let _ = codec.decode(&bytes, &ctx());
        }
    }

    #[test]
    fn framing_is_consistent(bytes in proptest::collection::vec(any::<u8>(), 0..600), eof in any::<bool>()) {
        for (p, codec) in every_codec() {
            match codec.frame(&bytes, eof) {
                Framing::Frame { start, end } => {
                    prop_assert!(start <= end && end <= bytes.len() && end > 0, "{p}: bad bounds {start}..{end}");
                }
                Framing::Resync { discard, .. } => {
                    prop_assert!(discard >= 1 && discard <= bytes.len(), "{p}: bad discard {discard}");
                }
                Framing::Incomplete | Framing::Fatal(_) => {}
            }
        }
    }
}
