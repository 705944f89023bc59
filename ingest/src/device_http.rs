//! HTTP device transport (OsmAnd and any protocol whose codec speaks `Transport::Http`):
//! a `GET` hands the codec its request target, a `POST` its body. The answer is the
//! ack: `200` only after the records are durable, `400` for a request without a known
//! device (as Traccar answers), `503` when the records could not be made durable (the
//! client retries).
//!
//! Downlink: an HTTP device is reachable only while it is asking, so the `200` of a
//! report carries the device's oldest queued command as its body (Traccar's OsmAnd
//! behaviour: the body is the command text, from the codec's `encode_command`), and
//! the command is marked `sent`. One command per response; the next report gets the
//! next one.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use protocols::{Protocol, Transport};
use std::net::SocketAddr;
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

async fn handle(
    State(s): State<DeviceHttp>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    answer(s, peer, method, uri, body).await.into_response()
}

async fn answer(s: DeviceHttp, peer: SocketAddr, method: Method, uri: Uri, body: Bytes) -> Response {
    let span = tracing::info_span!("http", protocol = %s.protocol, device = tracing::field::Empty);
    async move {
        let proto = s.protocol.name();
        // Same limit as TCP connections: HTTP devices are connections too.
        let Ok(_permit) = s.shared.limit.clone().try_acquire_owned() else {
            metrics::counter!(m::CONNECTIONS_CLOSED, "protocol" => proto, "reason" => "limit").increment(1);
            return (StatusCode::SERVICE_UNAVAILABLE, "busy\n").into_response();
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
            return (StatusCode::NOT_FOUND, "not served\n").into_response();
        };
        let now = Utc::now();
        let Some(messages) = decode_whole(codec.as_mut(), &input, s.shared.config.max_frame_bytes, now) else {
            return (StatusCode::PAYLOAD_TOO_LARGE, "too large\n").into_response();
        };
        let Some(identifier) = messages.iter().find_map(|m| crate::identity::identity(s.protocol, m)) else {
            return (StatusCode::BAD_REQUEST, "no device id\n").into_response();
        };
        let device_id = match resolve(&s.shared, s.protocol, &identifier, Some(peer)).await {
            Ok(id) => id,
            Err(_) => return (StatusCode::BAD_REQUEST, "unknown device\n").into_response(),
        };
        tracing::Span::current().record("device", device_id);
        let receipt = match publish(&s.shared, s.protocol, device_id, &messages, now).await {
            Ok(r) => r,
            Err(_) => return (StatusCode::SERVICE_UNAVAILABLE, "not stored, retry\n").into_response(),
        };
        if let Some(receipt) = receipt
            && let Err(error) = receipt.await
        {
            metrics::counter!(m::ACKS_WITHHELD, "protocol" => proto, "reason" => "not_durable").increment(1);
            tracing::warn!(%error, "request not durable: answering 503");
            return (StatusCode::SERVICE_UNAVAILABLE, "not stored, retry\n").into_response();
        }
        metrics::histogram!(m::ACK_LATENCY, "protocol" => proto).record(received.elapsed().as_secs_f64());
        let command =
            match crate::commands::take_queued(s.shared.registry.pool(), device_id, &identifier, codec.as_mut(), 1)
                .await
            {
                Ok(mut c) => c.pop(),
                Err(error) => {
                    // The report is stored either way; the command stays queued.
                    tracing::warn!(%error, "reading queued commands failed");
                    None
                }
            };
        match command {
            Some(body) => (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], body).into_response(),
            None => StatusCode::OK.into_response(),
        }
    }
    .instrument(span)
    .await
}
