//! `ingest`: the device-facing tier.
//!
//! This crate owns everything between a tracker's socket and the bus: one generic TCP
//! server per protocol port (a tokio-util framer around the protocol's [`Codec`]), UDP
//! for protocols that use it, the device registry (identifier → device, unknown-device
//! policy), the session rule that an ack leaves only after the store's durability
//! receipt for the frame's records, connection limits and timeouts, and the ingest
//! metrics. It knows protocols only through `protocols::Protocol`, so a codec that lands
//! is served without a change here.
//!
//! [`Codec`]: protocols::Codec
//!
//! # Layout
//! - [`config`]: the `[ingest]` section (policy, limits, timeouts, ports).
//! - [`framing`]: `CodecFramer`, the `Decoder` over `Codec::frame` with a byte cap.
//! - `session`: one TCP connection, reader and in-order ack writer.
//! - `udp`: one datagram, one ack.
//! - `device_http`: OsmAnd over HTTP, `200` as the ack after durability.
//! - [`registry`]: the device cache over `devices`, unknown devices seen (in memory and
//!   in `unknown_devices`), `add_device`.
//! - `identity`: which identifier a message names its device by (Freematics feed ids).
//! - [`commands`]: the downlink queue (`device_commands`), its poller and delivery.
//! - [`pipeline`]: `DeviceBatch` (what goes on the bus) and `StoreSink` (durability =
//!   the store writer's COMMIT).
//! - [`mqtt`]: the embedded MQTT broker (with per-device auth and topic ACL) and the
//!   client mode for an external broker.
//! - [`http`]: `/health`, `/metrics`.
//! - [`metrics`]: metric names and the Prometheus recorder.
//! - [`Ingest`]: the handle that starts listeners and drains them on shutdown.

pub mod commands;
pub mod config;
mod device_http;
mod error;
pub mod framing;
pub mod http;
mod identity;
pub mod metrics;
pub mod mqtt;
pub mod pipeline;
pub mod registry;
mod session;
mod udp;

use std::net::SocketAddr;
use std::sync::Arc;

use protocols::{Protocol, Transport};
use stream::Bus;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{IngestConfig, MqttConfig, MqttTls, Ports, UnknownDevices};
pub use error::{IngestError, Result};
pub use mqtt::MqttHandle;
pub use pipeline::{DeviceBatch, StoreSink};
pub use registry::Registry;

/// Why a session ended; the `reason` label of the closed-connections counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopReason {
    Closed,
    Shutdown,
    LoginTimeout,
    IdleTimeout,
    NoIdentity,
    UnknownDevice,
    Registry,
    Bus,
    WriteFailed,
    Unsupported,
    Framing(&'static str),
}

impl StopReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            StopReason::Closed => "closed",
            StopReason::Shutdown => "shutdown",
            StopReason::LoginTimeout => "login_timeout",
            StopReason::IdleTimeout => "idle_timeout",
            StopReason::NoIdentity => "no_identity",
            StopReason::UnknownDevice => "unknown_device",
            StopReason::Registry => "registry",
            StopReason::Bus => "bus",
            StopReason::WriteFailed => "write_failed",
            StopReason::Unsupported => "unsupported",
            StopReason::Framing(o) => o,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: IngestConfig,
    pub(crate) registry: Arc<Registry>,
    pub(crate) bus: Arc<dyn Bus<DeviceBatch>>,
    /// Connections (TCP) and datagrams being handled (UDP), all listeners together.
    pub(crate) limit: Arc<Semaphore>,
    pub(crate) hub: Arc<commands::Hub>,
    pub(crate) tracker: TaskTracker,
    pub(crate) cancel: CancellationToken,
}

/// A listener that is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listening {
    pub protocol: Protocol,
    pub transport: Transport,
    pub addr: SocketAddr,
}

/// The ingest tier. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Ingest {
    shared: Arc<Shared>,
}

impl Ingest {
    /// Must be called inside a tokio runtime: it starts the command poller.
    pub fn new(config: IngestConfig, registry: Arc<Registry>, bus: Arc<dyn Bus<DeviceBatch>>) -> Self {
        let limit = Arc::new(Semaphore::new(config.max_connections.max(1)));
        let hub = Arc::new(commands::Hub::default());
        let shared = Arc::new(Shared {
            config,
            registry,
            bus,
            limit,
            hub: hub.clone(),
            tracker: TaskTracker::new(),
            cancel: CancellationToken::new(),
        });
        shared.tracker.spawn(commands::poll(
            shared.registry.pool().clone(),
            hub,
            shared.config.command_poll(),
            shared.cancel.clone(),
        ));
        shared.tracker.spawn(registry::flush_unknown_loop(
            shared.registry.clone(),
            shared.cancel.clone(),
        ));
        Ingest { shared }
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.shared.registry
    }

    /// Starts every configured listener (port ≠ 0) over the transports each protocol
    /// uses. A protocol whose codec is not available for a transport is skipped with a
    /// log line rather than failing start-up.
    pub async fn start_configured(&self) -> Result<Vec<Listening>> {
        let mut out = Vec::new();
        for protocol in Protocol::ALL {
            let port = self.shared.config.ports.get(protocol);
            if port == 0 {
                continue;
            }
            let addr = SocketAddr::new(self.shared.config.bind, port);
            for &transport in protocol.transports() {
                let started = match transport {
                    Transport::Tcp => self.listen_tcp(protocol, addr).await,
                    Transport::Udp => self.listen_udp(protocol, addr).await,
                    Transport::Http => self.listen_http(protocol, addr).await,
                };
                match started {
                    Ok(l) => out.push(l),
                    Err(IngestError::Unsupported(e)) => tracing::warn!("{e}: codec not available, not listening"),
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(out)
    }

    /// Serves `protocol` over TCP on `addr` (port 0 picks a free one).
    pub async fn listen_tcp(&self, protocol: Protocol, addr: SocketAddr) -> Result<Listening> {
        protocol.codec(Transport::Tcp)?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| IngestError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| IngestError::Bind { addr, source })?;
        let shared = self.shared.clone();
        self.shared.tracker.spawn(accept_loop(shared, protocol, listener));
        tracing::info!(%protocol, %addr, "listening (tcp)");
        Ok(Listening {
            protocol,
            transport: Transport::Tcp,
            addr,
        })
    }

    /// Serves `protocol` over UDP on `addr`.
    pub async fn listen_udp(&self, protocol: Protocol, addr: SocketAddr) -> Result<Listening> {
        protocol.codec(Transport::Udp)?;
        let socket = UdpSocket::bind(addr)
            .await
            .map_err(|source| IngestError::Bind { addr, source })?;
        let addr = socket
            .local_addr()
            .map_err(|source| IngestError::Bind { addr, source })?;
        self.shared
            .tracker
            .spawn(udp::serve(self.shared.clone(), protocol, socket));
        tracing::info!(%protocol, %addr, "listening (udp)");
        Ok(Listening {
            protocol,
            transport: Transport::Udp,
            addr,
        })
    }

    /// Serves `protocol`'s HTTP device transport on `addr`.
    pub async fn listen_http(&self, protocol: Protocol, addr: SocketAddr) -> Result<Listening> {
        protocol.codec(Transport::Http)?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| IngestError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| IngestError::Bind { addr, source })?;
        let app = device_http::router(self.shared.clone(), protocol);
        let cancel = self.shared.cancel.clone();
        self.shared.tracker.spawn(async move {
            if let Err(error) = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
                .with_graceful_shutdown(cancel.cancelled_owned())
                .await
            {
                tracing::error!(%protocol, %error, "HTTP device listener failed");
            }
        });
        tracing::info!(%protocol, %addr, "listening (http)");
        Ok(Listening {
            protocol,
            transport: Transport::Http,
            addr,
        })
    }

    /// Starts MQTT ingest as configured: client mode when `mqtt.external` is set, else
    /// the embedded broker on `mqtt.port` (`0`: no MQTT). `None` when disabled.
    pub async fn start_mqtt(&self) -> Result<Option<MqttHandle>> {
        let cfg = &self.shared.config.mqtt;
        if let Some(url) = &cfg.external {
            return self.connect_mqtt(url).await.map(Some);
        }
        if cfg.port == 0 {
            return Ok(None);
        }
        let addr = SocketAddr::new(self.shared.config.bind, cfg.port);
        self.listen_mqtt(addr).await.map(Some)
    }

    /// Runs the embedded broker on `addr` (port 0 picks a free one).
    pub async fn listen_mqtt(&self, addr: SocketAddr) -> Result<MqttHandle> {
        mqtt::start_embedded(self.shared.clone(), addr).await
    }

    /// Reads devices from the external broker at `url` (client mode).
    pub async fn connect_mqtt(&self, url: &str) -> Result<MqttHandle> {
        mqtt::start_external(self.shared.clone(), url).await
    }

    /// Stops accepting and reading, lets every connection receive the acks owed for
    /// batches already durable (the store writer must still run), up to the configured
    /// drain deadline. Returns whether everything finished in time.
    pub async fn shutdown(&self) -> bool {
        self.shared.cancel.cancel();
        self.shared.tracker.close();
        tokio::time::timeout(self.shared.config.drain_timeout(), self.shared.tracker.wait())
            .await
            .is_ok()
    }
}

async fn accept_loop(shared: Arc<Shared>, protocol: Protocol, listener: TcpListener) {
    loop {
        // Take the slot before accepting: at the limit new connections wait in the
        // kernel backlog instead of being accepted and dropped.
        let permit = tokio::select! {
            _ = shared.cancel.cancelled() => return,
            p = shared.limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let (socket, peer) = tokio::select! {
            _ = shared.cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(error) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(%protocol, %error, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        shared
            .tracker
            .spawn(session::run_tcp(shared.clone(), protocol, socket, peer, permit));
    }
}
