//! UDP: one datagram is one self-contained report (it carries the device identity),
//! answered with one ack datagram once its records are durable.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use protocols::error::hex_excerpt;
use protocols::{DecodeContext, Framing, Protocol, Transport};
use tokio::net::UdpSocket;
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use crate::Shared;
use crate::identity::FeedIds;
use crate::metrics as m;
use crate::session::{publish, resolve};

/// Largest UDP payload; trackers stay far below.
pub(crate) const MAX_DATAGRAM: usize = 65_535;

pub(crate) async fn serve(shared: Arc<Shared>, protocol: Protocol, socket: UdpSocket) {
    let socket = Arc::new(socket);
    let feed_ids = Arc::new(FeedIds::default());
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, peer) = tokio::select! {
            _ = shared.cancel.cancelled() => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(error) => {
                    tracing::warn!(%protocol, %error, "udp receive failed");
                    continue;
                }
            },
        };
        // A datagram that finds no free slot is dropped unacknowledged: the device resends.
        let Ok(permit) = shared.limit.clone().try_acquire_owned() else {
            metrics::counter!(m::CONNECTIONS_CLOSED, "protocol" => protocol.name(), "reason" => "limit").increment(1);
            continue;
        };
        let data = buf[..n].to_vec();
        let span = tracing::info_span!("datagram", %protocol, %peer, device = tracing::field::Empty);
        shared.tracker.spawn(
            datagram(
                shared.clone(),
                protocol,
                socket.clone(),
                feed_ids.clone(),
                data,
                peer,
                permit,
            )
            .instrument(span),
        );
    }
}

async fn datagram(
    shared: Arc<Shared>,
    protocol: Protocol,
    socket: Arc<UdpSocket>,
    feed_ids: Arc<FeedIds>,
    data: Vec<u8>,
    peer: SocketAddr,
    _permit: OwnedSemaphorePermit,
) {
    let received = Instant::now();
    let proto = protocol.name();
    metrics::counter!(m::CONNECTIONS, "protocol" => proto, "transport" => "udp").increment(1);
    let Ok(mut codec) = protocol.codec(Transport::Udp) else {
        return;
    };
    let now = Utc::now();
    let Some(messages) = decode_whole(codec.as_mut(), &data, shared.config.max_frame_bytes, now) else {
        return;
    };
    let Some(identifier) = feed_ids.identify(protocol, &messages, peer) else {
        if !messages.is_empty() {
            tracing::warn!(excerpt = %hex_excerpt(&data), "datagram without device identity dropped");
        }
        return;
    };
    let device_id = match resolve(&shared, protocol, &identifier, Some(peer)).await {
        Ok(id) => id,
        Err(_) => {
            if let Some(login) = messages.iter().find(|m| m.imei.is_some())
                && let Some(bytes) = codec.refusal(login)
            {
                let _ = socket.send_to(&bytes, peer).await;
            }
            return;
        }
    };
    tracing::Span::current().record("device", device_id);
    let receipt = match publish(&shared, protocol, device_id, &messages, now).await {
        Ok(r) => r,
        Err(_) => return,
    };
    if let Some(receipt) = receipt
        && let Err(error) = receipt.await
    {
        metrics::counter!(m::ACKS_WITHHELD, "protocol" => proto, "reason" => "not_durable").increment(1);
        tracing::warn!(%error, "datagram not durable: ack withheld");
        return;
    }
    let ack: Vec<u8> = messages
        .iter()
        .filter_map(|m| m.ack.as_deref())
        .flatten()
        .copied()
        .collect();
    if !ack.is_empty() {
        if let Err(error) = socket.send_to(&ack, peer).await {
            tracing::debug!(%error, "udp ack send failed");
            return;
        }
        metrics::histogram!(m::ACK_LATENCY, "protocol" => proto).record(received.elapsed().as_secs_f64());
    }
}

/// Frames and decodes a self-contained input (a datagram, an HTTP request target or
/// body) as the codec cuts it, counting and logging every bad part. `None` when the
/// input is refused whole (a frame over the cap).
pub(crate) fn decode_whole(
    codec: &mut dyn protocols::Codec,
    data: &[u8],
    max_frame: usize,
    now: chrono::DateTime<Utc>,
) -> Option<Vec<protocols::Message>> {
    let proto = codec.protocol().name();
    let ctx = DecodeContext { now };
    let mut messages = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        match codec.frame(rest, true) {
            Framing::Frame { start, end } if end > 0 && start <= end && end <= rest.len() => {
                if end - start > max_frame {
                    metrics::counter!(m::FRAMES, "protocol" => proto, "outcome" => "oversize").increment(1);
                    tracing::warn!(bytes = end - start, excerpt = %hex_excerpt(rest), "frame over the size cap");
                    return None;
                }
                match codec.decode(&rest[start..end], &ctx) {
                    Ok(mut ms) => {
                        metrics::counter!(m::FRAMES, "protocol" => proto, "outcome" => "ok").increment(1);
                        messages.append(&mut ms);
                    }
                    Err(error) => {
                        metrics::counter!(m::FRAMES, "protocol" => proto, "outcome" => "decode_error").increment(1);
                        metrics::counter!(m::DECODE_ERRORS, "protocol" => proto).increment(1);
                        tracing::warn!(%error, excerpt = %hex_excerpt(&rest[start..end]), "frame not decodable");
                    }
                }
                rest = &rest[end..];
            }
            Framing::Resync { discard, error } => {
                metrics::counter!(m::FRAMES, "protocol" => proto, "outcome" => "resync").increment(1);
                tracing::warn!(%error, excerpt = %hex_excerpt(rest), "resync inside the input");
                rest = &rest[discard.clamp(1, rest.len())..];
            }
            Framing::Incomplete if rest.iter().all(u8::is_ascii_whitespace) => break,
            other => {
                let outcome = if matches!(other, Framing::Incomplete) {
                    "truncated"
                } else {
                    "fatal"
                };
                metrics::counter!(m::FRAMES, "protocol" => proto, "outcome" => outcome).increment(1);
                tracing::warn!(?other, excerpt = %hex_excerpt(rest), "rest of the input dropped");
                break;
            }
        }
    }
    Some(messages)
}
