//! HTTP device transport (OsmAnd and any protocol whose codec speaks `Transport::Http`):
//! a `GET` hands the codec its request target, a `POST` its body. The answer is the
//! ack: `200` only after the records are durable, `400` for a request without a known
//! device (as Traccar answers), `503` when the records could not be made durable (the
//! client retries).

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use chrono::Utc;
use protocols::{Protocol, Transport};
use tracing::Instrument;

use crate::Shared;
use crate::metrics as m;
use crate::session::{publish, resolve};
use crate::udp::decode_whole;

#[derive(Debug, Clone)]
struct DeviceHttp {
    shared: Arc<Shared>,
    protocol: Protocol,
}

pub(crate) fn router(shared: Arc<Shared>, protocol: Protocol) -> Router {
    Router::new()
        .fallback(handle)
        .with_state(DeviceHttp { shared, protocol })
}

async fn handle(State(s): State<DeviceHttp>, method: Method, uri: Uri, body: Bytes) -> (StatusCode, &'static str) {
    let span = tracing::info_span!("http", protocol = %s.protocol, device = tracing::field::Empty);
    async move {
        let proto = s.protocol.name();
        // Same limit as TCP connections: HTTP devices are connections too.
        let Ok(_permit) = s.shared.limit.clone().try_acquire_owned() else {
            metrics::counter!(m::CONNECTIONS_CLOSED, "protocol" => proto, "reason" => "limit").increment(1);
            return (StatusCode::SERVICE_UNAVAILABLE, "busy\n");
        };
        metrics::counter!(m::CONNECTIONS, "protocol" => proto, "transport" => "http").increment(1);
        let received = Instant::now();
        let input: Vec<u8> = if method == Method::POST && !body.is_empty() {
            body.to_vec()
        } else {
            uri.path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/")
                .as_bytes()
                .to_vec()
        };
        let Ok(mut codec) = s.protocol.codec(Transport::Http) else {
            return (StatusCode::NOT_FOUND, "not served\n");
        };
        let now = Utc::now();
        let Some(messages) = decode_whole(codec.as_mut(), &input, s.shared.config.max_frame_bytes, now) else {
            return (StatusCode::PAYLOAD_TOO_LARGE, "too large\n");
        };
        let Some(login) = messages.iter().find(|m| m.imei.is_some()) else {
            return (StatusCode::BAD_REQUEST, "no device id\n");
        };
        let device_id = match resolve(&s.shared, s.protocol, login).await {
            Ok(id) => id,
            Err(_) => return (StatusCode::BAD_REQUEST, "unknown device\n"),
        };
        tracing::Span::current().record("device", device_id);
        let receipt = match publish(&s.shared, s.protocol, device_id, &messages, now).await {
            Ok(r) => r,
            Err(_) => return (StatusCode::SERVICE_UNAVAILABLE, "not stored, retry\n"),
        };
        if let Some(receipt) = receipt
            && let Err(error) = receipt.await
        {
            metrics::counter!(m::ACKS_WITHHELD, "protocol" => proto, "reason" => "not_durable").increment(1);
            tracing::warn!(%error, "request not durable: answering 503");
            return (StatusCode::SERVICE_UNAVAILABLE, "not stored, retry\n");
        }
        metrics::histogram!(m::ACK_LATENCY, "protocol" => proto).record(received.elapsed().as_secs_f64());
        (StatusCode::OK, "")
    }
    .instrument(span)
    .await
}
