//! One device connection: login → resolve device → decode → publish → await
//! durability → ack, in frame order.
//!
//! ```text
//! socket ─read─▶ FramedRead<CodecFramer> ─frame─▶ decode ─batch─▶ bus.publish ──┐
//!                                                                               │ receipt
//! socket ◀─write── ack writer task ◀── (receipt, ack bytes) in frame order ◀───┘
//! ```
//!
//! Reading and acknowledging are two tasks joined by a bounded channel, so a device may
//! have up to `in_flight_per_connection` frames awaiting durability (group commit needs
//! several in flight to be efficient) while acks still leave strictly in frame order.
//! When a batch does not become durable its ack is withheld and the connection closed:
//! the device keeps the records and resends them on its next connection, and no later
//! ack can make it believe otherwise.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use futures_util::StreamExt;
use protocols::error::hex_excerpt;
use protocols::{DecodeContext, Message, Protocol, Transport};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::framing::{CodecFramer, FrameEvent};
use crate::metrics as m;
use crate::pipeline::DeviceBatch;
use crate::registry::Resolution;
use crate::{Shared, StopReason};

/// An ack owed to the device once `receipt` (if any) resolves.
#[derive(Debug)]
struct PendingAck {
    receipt: Option<stream::PublishReceipt>,
    ack: Vec<u8>,
    received: Instant,
}

pub(crate) async fn run_tcp(
    shared: Arc<Shared>,
    protocol: Protocol,
    socket: TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
) {
    let span = tracing::info_span!("conn", %protocol, %peer, device = tracing::field::Empty);
    async move {
        metrics::counter!(m::CONNECTIONS, "protocol" => protocol.name(), "transport" => "tcp").increment(1);
        let active = metrics::gauge!(m::CONNECTIONS_ACTIVE, "protocol" => protocol.name());
        active.increment(1.0);
        let reason = session(&shared, protocol, socket, peer).await;
        active.decrement(1.0);
        metrics::counter!(m::CONNECTIONS_CLOSED, "protocol" => protocol.name(), "reason" => reason.as_str())
            .increment(1);
        tracing::debug!(reason = reason.as_str(), "connection closed");
        drop(permit);
    }
    .instrument(span)
    .await
}

async fn session(shared: &Shared, protocol: Protocol, socket: TcpStream, peer: SocketAddr) -> StopReason {
    let cfg = &shared.config;
    let codec = match protocol.codec(Transport::Tcp) {
        Ok(c) => c,
        Err(_) => return StopReason::Unsupported,
    };
    let _ = socket.set_nodelay(true);
    let (rd, wr) = socket.into_split();
    // Tracker frames are small and most connections sit idle between them: start the
    // read buffer at 1 KiB rather than tokio-util's 8 KiB (it grows up to the frame
    // cap when a frame needs it). Measured in ingest/README.md.
    let mut framed = FramedRead::with_capacity(rd, CodecFramer::new(codec, cfg.max_frame_bytes), 1024);
    let (ack_tx, ack_rx) = mpsc::channel(cfg.in_flight_per_connection.max(1));
    let conn = shared.cancel.child_token();
    let acker = shared
        .tracker
        .spawn(ack_writer(ack_rx, wr, protocol, conn.clone()).instrument(tracing::Span::current()));
    let proto = protocol.name();
    let mut device: Option<i64> = None;
    let mut identifier = String::new();
    let mut logged_in = false;
    // Set once the device is known: wakes the session when commands are queued for it.
    let mut commands: Option<Arc<tokio::sync::Notify>> = None;

    let reason = loop {
        let wait = if device.is_none() {
            cfg.login_timeout()
        } else {
            cfg.idle_timeout()
        };
        let next = tokio::select! {
            biased;
            _ = conn.cancelled() => break StopReason::Shutdown,
            _ = async { commands.as_ref().expect("guarded").notified().await }, if commands.is_some() => {
                let Some(device_id) = device else { continue };
                if let Err(reason) = deliver(shared, device_id, &identifier, framed.decoder_mut().codec.as_mut(), &ack_tx).await {
                    break reason;
                }
                continue;
            }
            // FramedRead keeps partial frames in its buffer, so dropping this future
            // when a command arrives loses nothing.
            r = tokio::time::timeout(wait, framed.next()) => r,
        };
        let event = match next {
            Err(_) if device.is_none() => break StopReason::LoginTimeout,
            Err(_) => break StopReason::IdleTimeout,
            Ok(None) => break StopReason::Closed,
            Ok(Some(Err(e))) => {
                metrics::counter!(m::FRAMES, "protocol" => proto, "outcome" => e.outcome()).increment(1);
                tracing::warn!(device, error = %e, "closing connection");
                break StopReason::Framing(e.outcome());
            }
            Ok(Some(Ok(ev))) => ev,
        };
        let frame = match event {
            FrameEvent::Resync { discarded, error } => {
                metrics::counter!(m::FRAMES, "protocol" => proto, "outcome" => "resync").increment(1);
                tracing::warn!(device, %error, bytes = discarded.len(), excerpt = %hex_excerpt(&discarded),
                    "resync: dropped bytes that cannot start a frame");
                continue;
            }
            FrameEvent::Frame(f) => f,
        };
        let received = Instant::now();
        let now = Utc::now();
        let messages = match framed.decoder_mut().codec.decode(&frame, &DecodeContext { now }) {
            Ok(ms) => ms,
            Err(error) => {
                // Not acknowledged, so the device resends it; the frames around it are kept.
                metrics::counter!(m::FRAMES, "protocol" => proto, "outcome" => "decode_error").increment(1);
                metrics::counter!(m::DECODE_ERRORS, "protocol" => proto).increment(1);
                tracing::warn!(device, %error, excerpt = %hex_excerpt(&frame), "frame not decodable, dropped");
                continue;
            }
        };
        metrics::counter!(m::FRAMES, "protocol" => proto, "outcome" => "ok").increment(1);

        if device.is_none() {
            let Some((login, named)) = messages
                .iter()
                .find_map(|m| crate::identity::identity(protocol, m).map(|id| (m, id)))
            else {
                tracing::warn!(excerpt = %hex_excerpt(&frame), "data before identification, closing");
                break StopReason::NoIdentity;
            };
            match resolve(shared, protocol, &named, Some(peer)).await {
                Ok(id) => {
                    tracing::Span::current().record("device", id);
                    device = Some(id);
                    identifier = named;
                    commands = Some(shared.hub.register(id));
                }
                Err(reason) => {
                    if reason == StopReason::UnknownDevice
                        && let Some(bytes) = framed.decoder().codec.refusal(login)
                    {
                        let _ = ack_tx
                            .send(PendingAck {
                                receipt: None,
                                ack: bytes,
                                received,
                            })
                            .await;
                    }
                    break reason;
                }
            }
        }
        let Some(device_id) = device else {
            break StopReason::NoIdentity;
        };

        let receipt = match publish(shared, protocol, device_id, &messages, now).await {
            Ok(r) => r,
            Err(reason) => break reason,
        };
        for r in messages
            .iter()
            .filter(|m| m.kind == protocols::MessageKind::CommandResponse)
        {
            let text = r.result.as_deref().or(r.message_type.as_deref()).unwrap_or_default();
            if let Err(error) = crate::commands::record_response(shared.registry.pool(), device_id, text).await {
                tracing::warn!(%error, "recording a command response failed");
            }
        }
        let ack: Vec<u8> = messages
            .iter()
            .filter_map(|m| m.ack.as_deref())
            .flatten()
            .copied()
            .collect();
        let first_frame = commands.is_some() && !logged_in;
        logged_in = true;
        if !(ack.is_empty() && receipt.is_none()) && ack_tx.send(PendingAck { receipt, ack, received }).await.is_err() {
            break StopReason::WriteFailed;
        }
        // Commands queued while the device was away go right after its login's ack.
        if first_frame
            && let Err(reason) = deliver(
                shared,
                device_id,
                &identifier,
                framed.decoder_mut().codec.as_mut(),
                &ack_tx,
            )
            .await
        {
            break reason;
        }
    };
    if let (Some(id), Some(n)) = (device, &commands) {
        shared.hub.unregister(id, n);
    }
    // The ack writer sends what is owed for durable frames, then ends.
    drop(ack_tx);
    let _ = acker.await;
    reason
}

/// Writes the device's queued commands after the acks already owed.
async fn deliver(
    shared: &Shared,
    device_id: i64,
    identifier: &str,
    // `&mut`: the codec is Send but not Sync, and this future must be Send.
    codec: &mut dyn protocols::Codec,
    ack_tx: &mpsc::Sender<PendingAck>,
) -> Result<(), StopReason> {
    let queued =
        match crate::commands::take_queued(shared.registry.pool(), device_id, identifier, codec, usize::MAX).await {
            Ok(q) => q,
            Err(error) => {
                // The commands stay queued; the next wake-up retries.
                tracing::warn!(%error, "reading queued commands failed");
                return Ok(());
            }
        };
    for bytes in queued {
        let p = PendingAck {
            receipt: None,
            ack: bytes,
            received: Instant::now(),
        };
        ack_tx.send(p).await.map_err(|_| StopReason::WriteFailed)?;
    }
    Ok(())
}

/// Identifies a device by the identifier its messages name (see `identity`).
pub(crate) async fn resolve(
    shared: &Shared,
    protocol: Protocol,
    identifier: &str,
    peer: Option<SocketAddr>,
) -> Result<i64, StopReason> {
    match shared.registry.resolve_from(protocol, identifier, peer).await {
        Ok(Resolution::Known(id)) => Ok(id),
        Ok(Resolution::Refused { first_time }) => {
            if first_time {
                tracing::warn!(
                    identifier,
                    "unknown device refused (ingest.unknown_devices = refuse); \
                    register it with `clutch device add`"
                );
            } else {
                tracing::debug!(identifier, "unknown device refused again");
            }
            Err(StopReason::UnknownDevice)
        }
        Err(error) => {
            tracing::error!(identifier, %error, "device registry unavailable");
            Err(StopReason::Registry)
        }
    }
}

/// Puts the records of one frame on the bus. `Ok(None)` when there is nothing to store.
pub(crate) async fn publish(
    shared: &Shared,
    protocol: Protocol,
    device_id: i64,
    messages: &[Message],
    now: chrono::DateTime<Utc>,
) -> Result<Option<stream::PublishReceipt>, StopReason> {
    let batch = DeviceBatch::from_messages(device_id, messages, now);
    if batch.is_empty() {
        return Ok(None);
    }
    let n = batch.positions.len();
    match shared.bus.publish(batch).await {
        Ok(r) => {
            metrics::counter!(m::POSITIONS, "protocol" => protocol.name()).increment(n as u64);
            Ok(Some(r))
        }
        Err(error) => {
            metrics::counter!(m::ACKS_WITHHELD, "protocol" => protocol.name(), "reason" => "bus").increment(1);
            tracing::warn!(%error, "bus refused the batch; not acknowledged, closing");
            Err(StopReason::Bus)
        }
    }
}

/// Most bytes gathered into one write: acks are a few bytes, this only bounds a burst.
const ACK_WRITE_MAX: usize = 16 * 1024;

async fn ack_writer(
    mut rx: mpsc::Receiver<PendingAck>,
    mut wr: OwnedWriteHalf,
    protocol: Protocol,
    conn: CancellationToken,
) {
    let mut out: Vec<u8> = Vec::new();
    let mut received: Vec<Instant> = Vec::new();
    let mut next: Option<PendingAck> = None;
    let mut failed = false;
    'outer: loop {
        let mut p = match next.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => break,
            },
        };
        if let Some(receipt) = p.receipt.take()
            && let Err(error) = receipt.await
        {
            not_durable(protocol, &error);
            failed = true;
            break;
        }
        push_ack(&mut out, &mut received, p);
        // Frames of one connection usually become durable in the same group commit:
        // gather the acks that are already owed into one write (one syscall instead of
        // one per frame; measured in README), never waiting for one that is not.
        while out.len() < ACK_WRITE_MAX {
            let Ok(mut q) = rx.try_recv() else { break };
            match q.receipt.as_mut().map(futures_util::FutureExt::now_or_never) {
                None | Some(Some(Ok(_))) => push_ack(&mut out, &mut received, q),
                Some(None) => {
                    next = Some(q);
                    break;
                }
                Some(Some(Err(error))) => {
                    // The acks gathered so far are durable and still go out.
                    not_durable(protocol, &error);
                    failed = true;
                    let _ = write_acks(&mut wr, &mut out, &mut received, protocol).await;
                    break 'outer;
                }
            }
        }
        if !write_acks(&mut wr, &mut out, &mut received, protocol).await {
            conn.cancel();
            return;
        }
    }
    if failed {
        conn.cancel();
        return;
    }
    let _ = write_acks(&mut wr, &mut out, &mut received, protocol).await;
    let _ = wr.shutdown().await;
}

fn push_ack(out: &mut Vec<u8>, received: &mut Vec<Instant>, p: PendingAck) {
    if !p.ack.is_empty() {
        out.extend_from_slice(&p.ack);
        received.push(p.received);
    }
}

fn not_durable(protocol: Protocol, error: &stream::BusError) {
    metrics::counter!(m::ACKS_WITHHELD, "protocol" => protocol.name(), "reason" => "not_durable").increment(1);
    tracing::warn!(%error, "batch not durable: ack withheld, closing so the device resends");
}

/// Writes the gathered acks; false when the socket is gone.
async fn write_acks(
    wr: &mut OwnedWriteHalf,
    out: &mut Vec<u8>,
    received: &mut Vec<Instant>,
    protocol: Protocol,
) -> bool {
    if out.is_empty() {
        return true;
    }
    if let Err(error) = wr.write_all(out).await {
        tracing::debug!(%error, "ack write failed");
        return false;
    }
    let h = metrics::histogram!(m::ACK_LATENCY, "protocol" => protocol.name());
    for t in received.drain(..) {
        h.record(t.elapsed().as_secs_f64());
    }
    out.clear();
    true
}
