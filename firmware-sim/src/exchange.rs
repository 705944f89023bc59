//! `replay` and `check`: send captured frames to a server one by one and report what it
//! answered. `check` also says whether each answer was the ack the protocol requires
//! (the expected ack comes from decoding the frame with the protocol's own codec).

use std::net::SocketAddr;
use std::time::Duration;

use protocols::{Protocol, Transport};
use serde::Serialize;
use tokio::time::Instant;

use crate::ack::{Expect, Match, expect_for};
use crate::transport::Link;

/// How a capture line is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Hex when the line is only hex digits (even count), text otherwise.
    Auto,
    Hex,
    Text,
}

/// Parse a capture: one frame a line; blank lines and `#` comments skipped. Text frames
/// get `line_ending` appended (text trackers end frames with CR LF; HTTP targets get none).
pub fn parse_capture(text: &str, format: Format, line_ending: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut frames = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end_matches('\r');
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let looks_hex = t.len() % 2 == 0 && t.bytes().all(|b| b.is_ascii_hexdigit());
        let as_hex = match format {
            Format::Hex => true,
            Format::Text => false,
            Format::Auto => looks_hex,
        };
        if as_hex {
            let compact: String = t.chars().filter(|c| !c.is_whitespace()).collect();
            frames.push(hex::decode(&compact).map_err(|e| format!("line {}: not hex: {e}", i + 1))?);
        } else {
            let mut f = t.as_bytes().to_vec();
            f.extend_from_slice(line_ending);
            frames.push(f);
        }
    }
    if frames.is_empty() {
        return Err("the capture holds no frames".into());
    }
    Ok(frames)
}

/// What happened to one frame.
#[derive(Debug, Clone, Serialize)]
pub struct Exchange {
    pub index: usize,
    pub sent_hex: String,
    /// What the protocol's codec reads in the frame (`kind` per message).
    pub decoded: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub local_decode_errors: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_ack_hex: Option<String>,
    pub received_hex: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub received_text: Option<String>,
    /// `acked`, `refused`, `unexpected`, `no_answer`, `no_ack_expected`, `closed`.
    pub verdict: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
}

impl Exchange {
    pub fn ok(&self) -> bool {
        matches!(self.verdict, "acked" | "no_ack_expected")
    }
}

/// Send `frames` over one connection (reconnecting if the server closes it) and collect
/// each answer. `wait` bounds the wait for an ack; when none is expected, whatever
/// arrives within a short quiet period is shown.
pub async fn exchange(
    protocol: Protocol,
    transport: Transport,
    target: SocketAddr,
    frames: &[Vec<u8>],
    wait: Duration,
) -> Result<Vec<Exchange>, String> {
    let mut mirror = protocol.codec(transport).map_err(|e| e.to_string())?;
    let mut link: Option<Link> = None;
    let mut out = Vec::new();
    let mut scratch = vec![0u8; 65536];
    for (index, frame) in frames.iter().enumerate() {
        if link.is_none() {
            link = Some(
                Link::connect(transport, target, None, Duration::from_secs(10))
                    .await
                    .map_err(|e| format!("cannot connect to {target}: {e}"))?,
            );
        }
        let Some(l) = link.as_mut() else { continue };
        let requests = l.send(frame).await.map_err(|e| format!("send failed: {e}"))?;
        let sent_at = Instant::now();
        let (expect, msgs, _) = expect_for(protocol, transport, &mut *mirror, frame, requests);
        let (_, errs) = protocols::decode_all(
            &mut *protocol.codec(transport).map_err(|e| e.to_string())?,
            frame,
            &protocols::DecodeContext::now(),
        );
        let mut rx = Vec::new();
        let deadline = sent_at
            + if expect == Expect::Nothing {
                wait.min(Duration::from_millis(500))
            } else {
                wait
            };
        let mut verdict = if expect == Expect::Nothing {
            "no_ack_expected"
        } else {
            "no_answer"
        };
        let mut latency = None;
        loop {
            if expect != Expect::Nothing && !rx.is_empty() {
                match expect.check(&rx) {
                    Match::Acked(_) => {
                        verdict = "acked";
                        latency = Some(sent_at.elapsed().as_secs_f64() * 1000.0);
                        break;
                    }
                    Match::Refused(_) => {
                        verdict = "refused";
                        break;
                    }
                    Match::Other => verdict = "unexpected",
                    Match::Partial | Match::Stale(_) => {}
                }
            }
            let r = tokio::time::timeout_at(deadline, l.recv(&mut scratch, &mut rx)).await;
            match r {
                Err(_) => break,
                Ok(Ok(0)) => {
                    if verdict == "no_answer" || verdict == "no_ack_expected" {
                        verdict = "closed";
                    }
                    link = None;
                    mirror = protocol.codec(transport).map_err(|e| e.to_string())?;
                    break;
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(format!("receive failed: {e}")),
            }
        }
        let printable = !rx.is_empty() && rx.iter().all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace());
        out.push(Exchange {
            index,
            sent_hex: hex::encode(frame),
            decoded: msgs.iter().map(|m| m.kind.as_str().to_owned()).collect(),
            local_decode_errors: errs.iter().map(ToString::to_string).collect(),
            expected_ack_hex: match &expect {
                Expect::Bytes(b) | Expect::DigitsMayDiffer(b) => Some(hex::encode(b)),
                Expect::Http(_) => Some("HTTP 2xx".into()),
                Expect::Nothing => None,
                Expect::JsonSeq(n) => Some(format!("{{\"seq\":{n}}}")),
            },
            received_hex: hex::encode(&rx),
            received_text: printable.then(|| String::from_utf8_lossy(&rx).into_owned()),
            verdict,
            latency_ms: latency.map(|l| (l * 100.0).round() / 100.0),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_lines() {
        let f = parse_capture("# c\n78780d01\n\n$$A,1*AB\n", Format::Auto, b"\r\n").unwrap();
        assert_eq!(f, vec![vec![0x78, 0x78, 0x0d, 0x01], b"$$A,1*AB\r\n".to_vec()]);
        assert!(parse_capture("# only\n", Format::Auto, b"").is_err());
        assert!(parse_capture("zz\n", Format::Hex, b"").is_err());
    }
}
