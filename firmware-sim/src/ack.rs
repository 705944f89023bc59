//! What a device waits for after sending a frame, and how it recognises it.
//!
//! The server-side codec of the same protocol knows the exact ack bytes for every frame
//! it decodes, so a device decodes its own frame with a mirror session
//! ([`protocols::Protocol::codec`], fed every frame the device sends on this connection,
//! login included) and waits for exactly those bytes. Two exceptions, kept in a table:
//!
//! | protocol | why the bytes cannot be known | how the ack is matched |
//! |---|---|---|
//! | h02 | the `V4` ack carries the server's clock (`yyyyMMddHHmmss`) | same length, bytes equal except where both are ASCII digits |
//! | osmand (HTTP) | the ack is the HTTP response | one `2xx` response per request |
//!
//! An answer of the ack's length that starts like the ack but differs is a refusal (a
//! Teltonika server answering `00000000` to a batch it did not take); anything else
//! unexpected is either a downlink command ([`crate::downlink`]) or garbage.

use protocols::{Codec, DecodeContext, Message, Protocol, Transport, decode_all};

/// What to wait for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// The protocol answers nothing to this frame.
    Nothing,
    Bytes(Vec<u8>),
    /// Like `Bytes`, but digits may differ (server time inside the ack).
    DigitsMayDiffer(Vec<u8>),
    /// `n` HTTP responses, all 2xx.
    Http(usize),
    /// An MQTT durable ack for a telemetry publish: `{"seq": n, "records": …}` on
    /// `clutch/<id>/ack`.
    JsonSeq(u64),
}

/// How the received bytes compare with what is expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// The ack is there; consume this many bytes.
    Acked(usize),
    /// What arrived so far is a prefix of the ack.
    Partial,
    /// The server answered with the ack's shape but said no (consume this many bytes).
    Refused(usize),
    /// An answer to an earlier frame the device gave up on (consume this many bytes,
    /// quietly).
    Stale(usize),
    /// Something else arrived.
    Other,
}

/// Whether the protocol's acks carry server time.
fn ack_has_server_time(p: Protocol) -> bool {
    matches!(p, Protocol::H02)
}

/// Decode `frame` (as the server would) with the connection's mirror session and work
/// out the ack to wait for. Also returns the decoded messages and any decode errors, so
/// a frame the server's own codec cannot read is noticed here.
pub fn expect_for(
    protocol: Protocol,
    transport: Transport,
    mirror: &mut dyn Codec,
    frame: &[u8],
    requests: usize,
) -> (Expect, Vec<Message>, usize) {
    let (messages, errors) = decode_all(mirror, frame, &DecodeContext::now());
    if transport == Transport::Http {
        return (Expect::Http(requests.max(1)), messages, errors.len());
    }
    let mut ack = Vec::new();
    for m in &messages {
        if let Some(a) = &m.ack {
            ack.extend_from_slice(a);
        }
    }
    let expect = if ack.is_empty() {
        Expect::Nothing
    } else if ack_has_server_time(protocol) {
        Expect::DigitsMayDiffer(ack)
    } else {
        Expect::Bytes(ack)
    };
    (expect, messages, errors.len())
}

impl Expect {
    pub fn check(&self, rx: &[u8]) -> Match {
        match self {
            Expect::Nothing => Match::Other,
            Expect::Bytes(e) => compare(e, rx, |a, b| a == b),
            Expect::DigitsMayDiffer(e) => compare(e, rx, |a, b| a == b || (a.is_ascii_digit() && b.is_ascii_digit())),
            Expect::Http(n) => check_http(*n, rx),
            Expect::JsonSeq(seq) => match serde_json::from_slice::<crate::mqtt::DurableAck>(rx) {
                Ok(a) if a.seq == *seq => Match::Acked(rx.len()),
                Ok(a) if a.seq < *seq => Match::Stale(rx.len()),
                _ => Match::Other,
            },
        }
    }
}

fn compare(e: &[u8], rx: &[u8], eq: impl Fn(u8, u8) -> bool) -> Match {
    let n = e.len().min(rx.len());
    let same = e[..n].iter().zip(&rx[..n]).all(|(&a, &b)| eq(a, b));
    match (same, rx.len() >= e.len()) {
        (true, true) => Match::Acked(e.len()),
        (true, false) => Match::Partial,
        // Same envelope (first byte), other content: the server's way of saying no.
        (false, true) if e.first().zip(rx.first()).is_some_and(|(&a, &b)| eq(a, b)) => Match::Refused(e.len()),
        (false, true) => Match::Other,
        (false, false) => {
            // Shorter and already different: wait for the rest only if it could still be
            // a same-length refusal; the caller's timeout ends the wait either way.
            Match::Partial
        }
    }
}

/// One parsed HTTP response: status and total length.
pub fn parse_http_response(rx: &[u8]) -> Option<Result<(u16, usize), ()>> {
    let head_end = rx.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&rx[..head_end]).ok();
    let Some(head) = head else { return Some(Err(())) };
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split(' ');
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        return Some(Err(()));
    };
    let Ok(code) = code.parse::<u16>() else {
        return Some(Err(()));
    };
    if !version.starts_with("HTTP/1.") {
        return Some(Err(()));
    }
    let mut len = 0usize;
    for l in lines {
        if let Some((k, v)) = l.split_once(':')
            && k.trim().eq_ignore_ascii_case("content-length")
        {
            match v.trim().parse::<usize>() {
                Ok(n) if n <= 1 << 20 => len = n,
                _ => return Some(Err(())),
            }
        }
    }
    if rx.len() < head_end + len {
        return None;
    }
    Some(Ok((code, head_end + len)))
}

fn check_http(n: usize, rx: &[u8]) -> Match {
    let mut at = 0;
    for _ in 0..n {
        match parse_http_response(&rx[at..]) {
            None => {
                return if rx[at..].is_empty() || b"HTTP/1.".starts_with(&rx[at..rx.len().min(at + 7)]) {
                    Match::Partial
                } else {
                    Match::Other
                };
            }
            Some(Err(())) => return Match::Other,
            Some(Ok((code, len))) => {
                at += len;
                if !(200..300).contains(&code) {
                    return Match::Refused(at);
                }
            }
        }
    }
    Match::Acked(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes() {
        let e = Expect::Bytes(vec![0, 0, 0, 2]);
        assert_eq!(e.check(&[0, 0]), Match::Partial);
        assert_eq!(e.check(&[0, 0, 0, 2, 9]), Match::Acked(4));
        assert_eq!(e.check(&[0, 0, 0, 0]), Match::Refused(4));
        assert_eq!(e.check(&[9, 9, 9, 9]), Match::Other);
    }

    #[test]
    fn digits() {
        let e = Expect::DigitsMayDiffer(b"*HQ,1,V4,V1,20260101000000#".to_vec());
        assert_eq!(e.check(b"*HQ,1,V4,V1,20261122031500#"), Match::Acked(27));
        assert_eq!(e.check(b"*HQ,1,V4,V1,2026112203150X#"), Match::Refused(27));
    }

    #[test]
    fn http() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n\r\n";
        assert_eq!(Expect::Http(2).check(ok), Match::Acked(ok.len()));
        assert_eq!(Expect::Http(2).check(&ok[..10]), Match::Partial);
        let bad = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
        assert!(matches!(Expect::Http(1).check(bad), Match::Refused(_)));
        assert_eq!(Expect::Http(1).check(b"garbage\r\n\r\n"), Match::Other);
    }

    #[test]
    fn json_seq() {
        let e = Expect::JsonSeq(7);
        let ack = br#"{"seq": 7, "records": 3}"#;
        assert_eq!(e.check(ack), Match::Acked(ack.len()));
        assert_eq!(e.check(br#"{"seq":6,"records":3}"#), Match::Stale(21));
        assert_eq!(e.check(br#"{"seq":8,"records":3}"#), Match::Other);
        assert_eq!(e.check(b"not json"), Match::Other);
    }
}
