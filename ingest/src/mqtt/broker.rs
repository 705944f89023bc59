//! The embedded broker.
//!
//! rumqttd's router does the MQTT work (sessions, QoS 1 retransmission, fan-out), but
//! no device socket reaches it directly: rumqttd 0.20 has a CONNECT auth hook
//! (client id, username, password → bool) and nothing per connection after that — no
//! publish/subscribe ACL, and what it forwards does not say who published. So this
//! front door owns the listener (plain or TLS), reads every packet with rumqttd's own
//! MQTT 3.1.1 codec, authenticates CONNECT itself (and answers refusals with a proper
//! CONNACK code, which rumqttd's hook cannot), and hands a device's packets to the
//! router through an in-process local link only after checking each PUBLISH topic,
//! SUBSCRIBE filter and will against the device's identity. A spoofed publish is never
//! handed over: it is counted, logged and the connection is closed.
//!
//! ```text
//! device ─TCP/TLS─▶ front door ──ACL──▶ LinkTx ─▶ router ─▶ ingest link ─▶ Core ─▶ bus ─▶ store
//! device ◀──────── front door ◀─────── LinkRx ◀─ router ◀─ ack/commands (Outbound::Link)
//! ```

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use rumqttd::local::{LinkBuilder, LinkRx, LinkTx};
use rumqttd::protocol::v4::V4;
use rumqttd::protocol::{
    ConnAck, ConnectReturnCode, Disconnect, DisconnectReasonCode, LastWill, Packet, Protocol as _, Publish,
};
use rumqttd::{Notification, RouterConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tracing::Instrument;

use super::auth::{Authenticator, MqttDevice, Refusal};
use super::{Core, MqttHandle, Outbound, lock, topics};
use crate::config::MqttConfig;
use crate::error::{IngestError, Result};
use crate::metrics as m;
use crate::{Shared, UnknownDevices};

/// Opens a router session (client id, clean session). The error is a string: rumqttd's
/// `LinkError` is over 800 bytes.
type LinkFactory = Arc<dyn Fn(&str, bool) -> std::result::Result<(LinkTx, LinkRx, Notification), String> + Send + Sync>;

struct FrontDoor {
    core: Arc<Core>,
    auth: Authenticator,
    links: LinkFactory,
    cfg: MqttConfig,
    idle: Duration,
    /// (username, reason) pairs already logged: a device retrying with a wrong secret
    /// is logged once, counted always.
    refused_logged: Mutex<HashSet<(String, &'static str)>>,
}

/// Starts the router, the ingest's link to it and the front door on `addr`.
pub(crate) async fn start(shared: Arc<Shared>, addr: SocketAddr) -> Result<MqttHandle> {
    let cfg = shared.config.mqtt.clone();
    let tls = match &cfg.tls {
        Some(t) => Some(tls_acceptor(t)?),
        None => None,
    };
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| IngestError::Bind { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| IngestError::Bind { addr, source })?;

    let router = rumqttd::Router::new(
        0,
        RouterConfig {
            // Device sessions plus our own link; the front door's limit is the real one.
            max_connections: shared.config.max_connections.saturating_add(16),
            max_outgoing_packet_count: 200,
            // Commit logs per subscription filter: what the ingest link has not read yet
            // waits here. 4 × 4 MiB per filter bounds memory; see the README for what a
            // consumer that falls that far behind means (no `ack`, the device resends).
            max_segment_size: 4 << 20,
            max_segment_count: 4,
            ..RouterConfig::default()
        },
    );
    let router_tx = router.spawn();
    let links: LinkFactory = Arc::new(move |client_id: &str, clean: bool| {
        LinkBuilder::new(client_id, router_tx.clone())
            .clean_session(clean)
            .build()
            .map_err(|e| e.to_string())
    });

    let (mut ingest_tx, mut ingest_rx) = {
        let links = links.clone();
        tokio::task::spawn_blocking(move || links("clutch.ingest", true))
            .await
            .map_err(|e| IngestError::Mqtt(e.to_string()))?
            .map(|(tx, rx, _)| (tx, rx))
            .map_err(IngestError::Mqtt)?
    };
    for f in topics::INGEST_FILTERS {
        ingest_tx.subscribe(f).map_err(|e| IngestError::Mqtt(e.to_string()))?;
    }
    let core = Core::new(shared.clone(), Outbound::Link(Mutex::new((ingest_tx, 0))), None);

    // The ingest link: everything devices publish on the ingest filters.
    {
        let core = core.clone();
        let cancel = shared.cancel.clone();
        shared.tracker.spawn(async move {
            loop {
                let n = tokio::select! {
                    _ = cancel.cancelled() => return,
                    n = ingest_rx.next() => n,
                };
                match n {
                    Ok(Some(Notification::Forward(f))) => {
                        let topic = String::from_utf8_lossy(&f.publish.topic).into_owned();
                        core.message(&topic, f.publish.payload, None).await;
                    }
                    Ok(Some(Notification::Unschedule)) => {
                        let _ = ingest_rx.wake().await;
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::error!(%error, "embedded broker link closed");
                        return;
                    }
                }
            }
        });
    }

    let register_into =
        (shared.config.unknown_devices == UnknownDevices::Register).then(|| shared.config.default_tenant.clone());
    let door = Arc::new(FrontDoor {
        core: core.clone(),
        auth: Authenticator::new(shared.registry.pool().clone(), register_into),
        links,
        cfg,
        idle: shared.config.idle_timeout(),
        refused_logged: Mutex::new(HashSet::new()),
    });
    shared.tracker.spawn(accept_loop(shared.clone(), door, listener, tls));
    tracing::info!(%addr, tls = shared.config.mqtt.tls.is_some(), "listening (mqtt)");
    let mut h = core.handle();
    h.addr = Some(addr);
    Ok(h)
}

fn tls_acceptor(t: &crate::config::MqttTls) -> Result<tokio_rustls::TlsAcceptor> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |what: &str, e: &dyn std::fmt::Display| IngestError::Mqtt(format!("TLS {what}: {e}"));
    let certs = CertificateDer::pem_file_iter(&t.cert)
        .map_err(|e| bad(&format!("certificate {}", t.cert.display()), &e))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(&format!("certificate {}", t.cert.display()), &e))?;
    let key = PrivateKeyDer::from_pem_file(&t.key).map_err(|e| bad(&format!("key {}", t.key.display()), &e))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("versions", &e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| bad("certificate/key", &e))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

async fn accept_loop(
    shared: Arc<Shared>,
    door: Arc<FrontDoor>,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    loop {
        let permit = tokio::select! {
            _ = shared.cancel.cancelled() => return,
            p = shared.limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let (socket, peer) = tokio::select! {
            _ = shared.cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(error) => {
                    tracing::warn!(%error, "mqtt accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = socket.set_nodelay(true);
        let door = door.clone();
        let tls = tls.clone();
        let cancel = shared.cancel.clone();
        let span = tracing::info_span!("mqtt", %peer, device = tracing::field::Empty);
        shared.tracker.spawn(
            async move {
                let _permit = permit;
                match tls {
                    Some(acceptor) => {
                        let timeout = Duration::from_millis(door.cfg.connect_timeout_ms);
                        match tokio::time::timeout(timeout, acceptor.accept(socket)).await {
                            Ok(Ok(s)) => door.connection(s, cancel).await,
                            Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
                            Err(_) => tracing::debug!("TLS handshake timed out"),
                        }
                    }
                    None => door.connection(socket, cancel).await,
                }
            }
            .instrument(span),
        );
    }
}

#[derive(Debug)]
enum ReadError {
    Closed,
    Io(std::io::Error),
    Mqtt(rumqttd::protocol::Error),
}

/// Reads one packet with rumqttd's v4 codec (which checks the size cap before buffering).
async fn read_packet<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    max: usize,
) -> std::result::Result<Packet, ReadError> {
    loop {
        if !buf.is_empty() {
            match V4.read_mut(buf, max) {
                Ok(p) => return Ok(p),
                Err(rumqttd::protocol::Error::InsufficientBytes(_)) => {}
                Err(e) => return Err(ReadError::Mqtt(e)),
            }
        }
        buf.reserve(1024);
        match rd.read_buf(buf).await {
            Ok(0) => return Err(ReadError::Closed),
            Ok(_) => {}
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
}

/// v4 cannot carry properties; the router adds some (CONNACK's topic alias maximum)
/// that its v4 codec would refuse to write.
fn without_properties(p: Packet) -> Packet {
    match p {
        Packet::ConnAck(a, _) => Packet::ConnAck(a, None),
        Packet::Publish(a, _) => Packet::Publish(a, None),
        Packet::PubAck(a, _) => Packet::PubAck(a, None),
        Packet::SubAck(a, _) => Packet::SubAck(a, None),
        Packet::PubRec(a, _) => Packet::PubRec(a, None),
        Packet::PubRel(a, _) => Packet::PubRel(a, None),
        Packet::PubComp(a, _) => Packet::PubComp(a, None),
        Packet::UnsubAck(a, _) => Packet::UnsubAck(a, None),
        Packet::Disconnect(a, _) => Packet::Disconnect(a, None),
        Packet::Subscribe(a, _) => Packet::Subscribe(a, None),
        Packet::Unsubscribe(a, _) => Packet::Unsubscribe(a, None),
        Packet::Connect(a, _, w, _, l) => Packet::Connect(a, None, w, None, l),
        p @ (Packet::PingReq(_) | Packet::PingResp(_)) => p,
    }
}

async fn write_packet<W: AsyncWrite + Unpin>(wr: &mut W, p: Packet) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    V4.write(without_properties(p), &mut out)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    wr.write_all(&out).await
}

/// Why a device connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The device sent DISCONNECT: no will.
    Clean,
    Closed,
    Shutdown,
    KeepAlive,
    Protocol,
    Spoof,
    Router,
}

impl FrontDoor {
    async fn refuse<W: AsyncWrite + Unpin>(
        &self,
        wr: &mut W,
        username: &str,
        reason: &'static str,
        code: ConnectReturnCode,
    ) {
        metrics::counter!(m::MQTT_AUTH_REFUSALS, "reason" => reason).increment(1);
        if lock(&self.refused_logged).insert((username.to_string(), reason)) {
            tracing::warn!(username, reason, "MQTT CONNECT refused");
        } else {
            tracing::debug!(username, reason, "MQTT CONNECT refused again");
        }
        let ack = ConnAck {
            session_present: false,
            code,
        };
        let _ = write_packet(wr, Packet::ConnAck(ack, None)).await;
        let _ = wr.shutdown().await;
    }

    async fn connection<S: AsyncRead + AsyncWrite + Unpin + Send>(
        &self,
        stream: S,
        cancel: tokio_util::sync::CancellationToken,
    ) {
        let (mut rd, mut wr) = tokio::io::split(stream);
        let mut buf = BytesMut::with_capacity(1024);
        let max = self.cfg.max_payload_bytes;
        let first = tokio::time::timeout(
            Duration::from_millis(self.cfg.connect_timeout_ms),
            read_packet(&mut rd, &mut buf, max),
        )
        .await;
        let (connect, will, login) = match first {
            Ok(Ok(Packet::Connect(c, _, will, _, login))) => (c, will, login),
            Ok(Err(ReadError::Mqtt(rumqttd::protocol::Error::InvalidProtocolLevel(level)))) => {
                let reason = "protocol";
                tracing::debug!(level, "MQTT protocol level other than 3.1.1 refused");
                self.refuse(&mut wr, "", reason, ConnectReturnCode::RefusedProtocolVersion)
                    .await;
                return;
            }
            Ok(Ok(other)) => {
                tracing::debug!(?other, "first packet is not CONNECT; closing");
                return;
            }
            Ok(Err(e)) => {
                tracing::debug!(error = ?e, "no CONNECT; closing");
                return;
            }
            Err(_) => {
                tracing::debug!("no CONNECT in time; closing");
                return;
            }
        };
        let login = login.unwrap_or(rumqttd::protocol::Login {
            username: String::new(),
            password: String::new(),
        });
        let device = match self
            .auth
            .check(&connect.client_id, &login.username, &login.password)
            .await
        {
            Ok(d) => d,
            Err(r) => {
                let code = match r {
                    Refusal::NoCredentials | Refusal::WrongSecret => ConnectReturnCode::BadUserNamePassword,
                    Refusal::Unavailable => ConnectReturnCode::ServiceUnavailable,
                    Refusal::ClientId => ConnectReturnCode::ClientIdentifierNotValid,
                    _ => ConnectReturnCode::NotAuthorized,
                };
                self.refuse(&mut wr, &login.username, r.as_str(), code).await;
                return;
            }
        };
        if let Some(w) = &will
            && !topics::may_publish(&String::from_utf8_lossy(&w.topic), |id| device.owns(id))
        {
            metrics::counter!(m::MQTT_SPOOF_REFUSALS, "kind" => "will").increment(1);
            tracing::warn!(device = device.device_id, topic = %String::from_utf8_lossy(&w.topic), "will outside the device's own topics refused");
            self.refuse(&mut wr, &login.username, "will_topic", ConnectReturnCode::NotAuthorized)
                .await;
            return;
        }
        tracing::Span::current().record("device", device.device_id);

        // The router keys sessions by client id; ours are prefixed so no device can take
        // over the ingest link, and cleaned of what the router refuses.
        // An empty client id (allowed with a clean session) gets a unique one, as the
        // spec asks: two such clients of one device must not end each other's session.
        let base = if connect.client_id.is_empty() {
            format!("{}.{:016x}", device.identifier, rand::random::<u64>())
        } else {
            connect.client_id.clone()
        };
        let router_id: String = format!("d.{base}")
            .chars()
            .map(|c| if "+$#/".contains(c) { '_' } else { c })
            .collect();
        let links = self.links.clone();
        let clean = connect.clean_session;
        let link = tokio::task::spawn_blocking(move || links(&router_id, clean)).await;
        let (mut tx, mut rx, connack) = match link {
            Ok(Ok(l)) => l,
            other => {
                tracing::warn!(result = ?other.map(|r| r.err()), "broker refused the session");
                self.refuse(
                    &mut wr,
                    &login.username,
                    "unavailable",
                    ConnectReturnCode::ServiceUnavailable,
                )
                .await;
                return;
            }
        };
        if let Notification::DeviceAck(ack) = connack {
            let p: Packet = ack.into();
            if write_packet(&mut wr, p).await.is_err() {
                let _ = tx.send(Packet::Disconnect(normal(), None)).await;
                return;
            }
        }
        metrics::counter!(m::MQTT_CONNECTIONS).increment(1);
        let active = metrics::gauge!(m::MQTT_CONNECTIONS_ACTIVE);
        active.increment(1.0);
        self.core.connected(&device);
        tracing::debug!(client_id = connect.client_id, "MQTT device connected");

        let end = self
            .session(
                &device,
                &mut rd,
                &mut wr,
                &mut buf,
                &mut tx,
                &mut rx,
                connect.keep_alive,
                &cancel,
            )
            .await;
        self.core.offline(device.device_id);
        if end != End::Clean
            && let Some(w) = will
        {
            let _ = tx.send(Packet::Publish(will_publish(w), None)).await;
        }
        // Tell the router the session is over (it keeps a clean=false session's state);
        // after the device's own DISCONNECT it already knows.
        if !matches!(end, End::Clean | End::Router) {
            let _ = tx.send(Packet::Disconnect(normal(), None)).await;
        }
        if end == End::Shutdown {
            let _ = write_packet(
                &mut wr,
                Packet::Disconnect(
                    Disconnect {
                        reason_code: DisconnectReasonCode::ServerShuttingDown,
                    },
                    None,
                ),
            )
            .await;
        }
        let _ = wr.shutdown().await;
        active.decrement(1.0);
        tracing::debug!(?end, "MQTT connection closed");
    }

    #[allow(clippy::too_many_arguments)]
    async fn session<R, W>(
        &self,
        device: &MqttDevice,
        rd: &mut R,
        wr: &mut W,
        buf: &mut BytesMut,
        tx: &mut LinkTx,
        rx: &mut LinkRx,
        keep_alive: u16,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> End
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        // MQTT: the server may close after 1.5 × keep-alive without a packet. A device
        // that asks for no keep-alive gets the TCP idle timeout.
        let silence = if keep_alive == 0 {
            self.idle
        } else {
            Duration::from_millis(u64::from(keep_alive) * 1500)
        };
        let max = self.cfg.max_payload_bytes;
        let owns = |id: &str| device.owns(id);
        let mut deadline = tokio::time::Instant::now() + silence;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return End::Shutdown,
                _ = tokio::time::sleep_until(deadline) => return End::KeepAlive,
                n = rx.next() => match n {
                    Ok(Some(Notification::Unschedule)) => {
                        if rx.wake().await.is_err() { return End::Router; }
                    }
                    Ok(Some(Notification::Disconnect(d, _))) => {
                        let _ = write_packet(wr, Packet::Disconnect(d, None)).await;
                        return End::Router;
                    }
                    Ok(Some(n)) => {
                        let p: Option<Packet> = n.into();
                        if let Some(p) = p && write_packet(wr, p).await.is_err() {
                            return End::Closed;
                        }
                    }
                    Ok(None) => {}
                    Err(_) => return End::Router,
                },
                p = read_packet(rd, buf, max) => {
                    let p = match p {
                        Ok(p) => p,
                        Err(ReadError::Closed) => return End::Closed,
                        Err(ReadError::Io(e)) => {
                            tracing::debug!(error = %e, "read failed");
                            return End::Closed;
                        }
                        Err(ReadError::Mqtt(e)) => {
                            tracing::warn!(device = device.device_id, error = %e, "malformed MQTT packet; closing");
                            return End::Protocol;
                        }
                    };
                    deadline = tokio::time::Instant::now() + silence;
                    let mut subscribed_commands = false;
                    match &p {
                        Packet::Publish(publish, _) => {
                            let topic = String::from_utf8_lossy(&publish.topic);
                            if !topics::may_publish(&topic, owns) {
                                metrics::counter!(m::MQTT_SPOOF_REFUSALS, "kind" => "publish").increment(1);
                                tracing::warn!(device = device.device_id, identifier = device.identifier, %topic,
                                    "publish outside the device's own topics refused; closing the connection");
                                return End::Spoof;
                            }
                        }
                        Packet::Subscribe(s, _) => {
                            if let Some(f) = s.filters.iter().find(|f| !topics::may_subscribe(&f.path, owns)) {
                                metrics::counter!(m::MQTT_SPOOF_REFUSALS, "kind" => "subscribe").increment(1);
                                tracing::warn!(device = device.device_id, filter = f.path,
                                    "subscription outside the device's own topics refused; closing the connection");
                                return End::Spoof;
                            }
                            subscribed_commands = s.filters.iter().any(|f| {
                                rumqttd::protocol::matches(&topics::commands(&device.identifier), &f.path)
                            });
                        }
                        Packet::Connect(..) => return End::Protocol,
                        _ => {}
                    }
                    let clean = matches!(p, Packet::Disconnect(..));
                    if tx.send(p).await.is_err() {
                        return End::Router;
                    }
                    if clean {
                        return End::Clean;
                    }
                    if subscribed_commands {
                        self.core.online(device);
                    }
                }
            }
        }
    }
}

fn normal() -> Disconnect {
    Disconnect {
        reason_code: DisconnectReasonCode::NormalDisconnection,
    }
}

fn will_publish(w: LastWill) -> Publish {
    // QoS 0 whatever the will asked: nobody is left to take a PUBACK.
    Publish::new(w.topic, w.message, w.retain)
}
