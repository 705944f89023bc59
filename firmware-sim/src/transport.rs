//! The device's link to the server: TCP, UDP (connected socket), HTTP/1.1 keep-alive, or
//! MQTT to a broker through `rumqttc`.
//!
//! MQTT topics follow the Clutch layout ([`crate::mqtt`]): `clutch/<id>/raw/<protocol>`
//! carries the protocol's own frame bytes and `clutch/<id>/telemetry` the positions as
//! JSON. Frames are published at QoS 1. With [`MqttAck::Puback`] the broker's PUBACK is the
//! ack the device waits for and the link hands the device [`PUBACK`] when it arrives; with
//! [`MqttAck::Durable`] the link hands over the payloads the server publishes on
//! `clutch/<id>/ack`, which the device matches like a socket's ack bytes. [`PINGRESP`]
//! answers a heartbeat. Commands on `clutch/<id>/commands` are queued for the device
//! ([`Link::take_commands`]), which replies through [`Link::reply`].

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use protocols::Transport;
use rumqttc::{
    AsyncClient, ConnectReturnCode, Event, EventLoop, MqttOptions, Outgoing, Packet, PingReq, QoS, Request,
    SubscribeFilter, SubscribeReasonCode,
};

use crate::mqtt::{CommandReply, CommandRequest, MqttAck, MqttSettings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

/// An open link.
#[derive(Debug)]
pub enum Link {
    Tcp(TcpStream),
    Udp(UdpSocket),
    Http {
        stream: TcpStream,
        host: String,
    },
    /// MQTT to a broker: every frame is a QoS 1 PUBLISH to `topic`.
    Mqtt(Box<MqttLink>),
}

/// What an MQTT link reports when the PUBACK of the last publish arrives.
pub const PUBACK: &[u8] = b"mqtt PUBACK";
/// What an MQTT link reports when the PINGRESP to its PINGREQ arrives.
pub const PINGRESP: &[u8] = b"mqtt PINGRESP";

/// A `rumqttc` client and its event loop, polled by the device's own loop.
pub struct MqttLink {
    client: AsyncClient,
    events: EventLoop,
    topic: String,
    ack_topic: String,
    commands_topic: String,
    responses_topic: String,
    ack: MqttAck,
    /// A publish awaits its PUBACK: `Some(None)` until rumqttc has given it a packet id.
    publish: Option<Option<u16>>,
    /// Publishes queued whose PUBACK nobody awaits (command replies, malformed frames in
    /// durable mode): their `Outgoing::Publish` events come first (rumqttc sends in
    /// order) and must not be taken for the awaited one's.
    untracked: usize,
    /// A PINGREQ awaits its PINGRESP.
    ping: bool,
    /// Commands received, not yet taken by the device.
    commands: std::collections::VecDeque<Result<CommandRequest, String>>,
}

/// What an MQTT link's `recv` produced that is not bytes for the ack matcher: the
/// device checks [`Link::take_commands`]. (Also what UDP returns for an empty datagram.)
pub const NOTHING_TO_MATCH: usize = usize::MAX;

impl std::fmt::Debug for MqttLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttLink")
            .field("client_id", &self.events.mqtt_options.client_id())
            .field("topic", &self.topic)
            .field("publish", &self.publish)
            .field("ping", &self.ping)
            .finish_non_exhaustive()
    }
}

impl Link {
    /// Connect from `source` (when given: spreads many devices over 127.0.0.x so one
    /// source address does not run out of ephemeral ports).
    pub async fn connect(
        transport: Transport,
        target: SocketAddr,
        source: Option<IpAddr>,
        timeout: Duration,
    ) -> io::Result<Link> {
        let fut = async {
            match transport {
                Transport::Tcp | Transport::Http => {
                    let socket = if target.is_ipv4() {
                        TcpSocket::new_v4()?
                    } else {
                        TcpSocket::new_v6()?
                    };
                    if let Some(ip) = source {
                        socket.bind(SocketAddr::new(ip, 0))?;
                    }
                    let stream = socket.connect(target).await?;
                    stream.set_nodelay(true)?;
                    Ok(if transport == Transport::Http {
                        Link::Http {
                            stream,
                            host: target.to_string(),
                        }
                    } else {
                        Link::Tcp(stream)
                    })
                }
                Transport::Udp => {
                    let bind_ip = source.unwrap_or(if target.is_ipv4() {
                        IpAddr::from([0, 0, 0, 0])
                    } else {
                        IpAddr::from([0u16; 8])
                    });
                    let socket = UdpSocket::bind(SocketAddr::new(bind_ip, 0)).await?;
                    socket.connect(target).await?;
                    Ok(Link::Udp(socket))
                }
            }
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))?
    }

    /// Connect to an MQTT broker as `client_id` (clean session) and wait for its CONNACK:
    /// the MQTT CONNECT is the device's login. `keep_alive` is whole seconds, at least 1.
    /// rumqttc connects from the default source address (`source` is not applied).
    /// Then subscribe to the device's `ack` and `commands` topics and wait for the SUBACK.
    /// A refused `ack` subscription fails the connection in [`MqttAck::Durable`] mode (the
    /// device could never learn its records are stored); a refused `commands` one is
    /// logged.
    pub async fn connect_mqtt(
        client_id: &str,
        target: SocketAddr,
        timeout: Duration,
        keep_alive: Duration,
        topic: String,
        settings: &MqttSettings,
    ) -> io::Result<Link> {
        let mut options = MqttOptions::new(client_id, target.ip().to_string(), target.port());
        options
            .set_keep_alive(keep_alive.max(Duration::from_secs(1)))
            .set_clean_session(true)
            .set_max_packet_size(1 << 20, 1 << 20);
        if let Some((user, secret)) = settings.credentials(client_id) {
            options.set_credentials(user, secret);
        }
        let (client, mut events) = AsyncClient::new(options, 16);
        let mut net = events.network_options();
        net.set_connection_timeout(timeout.as_secs().max(1));
        net.set_tcp_nodelay(true);
        events.set_network_options(net);
        let mut link = MqttLink {
            client,
            events,
            topic,
            ack_topic: crate::mqtt::ack_topic(client_id),
            commands_topic: crate::mqtt::commands_topic(client_id),
            responses_topic: crate::mqtt::responses_topic(client_id),
            ack: settings.ack,
            publish: None,
            untracked: 0,
            ping: false,
            commands: Default::default(),
        };
        tokio::time::timeout(timeout, link.handshake())
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        Ok(Link::Mqtt(Box::new(link)))
    }

    /// The ack the last send waits for when the link, not the protocol, decides it: an
    /// MQTT publish's [`PUBACK`] (in [`MqttAck::Puback`] mode).
    pub fn link_ack(&self) -> Option<&'static [u8]> {
        match self {
            Link::Mqtt(m) if m.ack == MqttAck::Puback => Some(PUBACK),
            _ => None,
        }
    }

    /// Whether this is an MQTT link waiting for durable acks on `clutch/<id>/ack`.
    pub fn durable_acks(&self) -> bool {
        matches!(self, Link::Mqtt(m) if m.ack == MqttAck::Durable)
    }

    /// Make the next publish one whose PUBACK is awaited ([`PUBACK`]), whatever the mode:
    /// a raw frame whose protocol acks nothing has no durable ack to wait for.
    pub fn await_puback(&mut self) {
        if let Link::Mqtt(m) = self
            && m.publish.is_none()
        {
            // `send` counted it as untracked: it is the last queued, so the others'
            // events still come before it.
            m.untracked = m.untracked.saturating_sub(1);
            m.publish = Some(None);
        }
    }

    /// Commands received over MQTT since the last call (errors: payloads that are not a
    /// command, with why).
    pub fn take_commands(&mut self) -> Vec<Result<CommandRequest, String>> {
        match self {
            Link::Mqtt(m) => m.commands.drain(..).collect(),
            _ => Vec::new(),
        }
    }

    /// Publish a command reply on `clutch/<id>/responses` (QoS 1, PUBACK not awaited).
    pub fn reply(&mut self, reply: &CommandReply) -> io::Result<()> {
        let Link::Mqtt(m) = self else {
            return Err(io::Error::other("replies over MQTT only"));
        };
        let body = serde_json::to_vec(reply).map_err(io::Error::other)?;
        m.client
            .try_publish(m.responses_topic.clone(), QoS::AtLeastOnce, false, body)
            .map_err(io::Error::other)?;
        m.untracked += 1;
        Ok(())
    }

    /// Send an MQTT PINGREQ (the heartbeat); [`PINGRESP`] arrives when answered. `false`
    /// when this is not an MQTT link.
    pub fn ping(&mut self) -> bool {
        match self {
            Link::Mqtt(m) => {
                m.events.pending.push_back(Request::PingReq(PingReq));
                m.ping = true;
                true
            }
            _ => false,
        }
    }

    /// Send one frame as the device would. For HTTP the frame is what the OsmAnd encoder
    /// produced (request targets one a line, or a JSON body); returns the number of
    /// requests it became.
    pub async fn send(&mut self, frame: &[u8]) -> io::Result<usize> {
        match self {
            Link::Tcp(s) => {
                s.write_all(frame).await?;
                Ok(1)
            }
            Link::Udp(s) => {
                s.send(frame).await?;
                Ok(1)
            }
            Link::Http { stream, host } => {
                let (bytes, n) = http_requests(frame, host);
                stream.write_all(&bytes).await?;
                Ok(n)
            }
            Link::Mqtt(m) => {
                m.client
                    .try_publish(m.topic.clone(), QoS::AtLeastOnce, false, frame.to_vec())
                    .map_err(io::Error::other)?;
                if m.ack == MqttAck::Puback {
                    // Any earlier publish still unacked is forgotten: only this one's
                    // PUBACK counts.
                    if m.publish == Some(None) {
                        m.untracked += 1;
                    }
                    m.publish = Some(None);
                } else {
                    m.untracked += 1;
                }
                Ok(1)
            }
        }
    }

    /// Append what arrives to `rx`. `Ok(0)` means the server closed the connection.
    /// Cancel-safe: bytes are only appended when a read completes.
    pub async fn recv(&mut self, scratch: &mut [u8], rx: &mut Vec<u8>) -> io::Result<usize> {
        let n = match self {
            Link::Tcp(s) | Link::Http { stream: s, .. } => s.read(scratch).await?,
            Link::Mqtt(m) => {
                return match m.next_answer().await? {
                    Answer::Link(got) => {
                        rx.extend_from_slice(got);
                        Ok(got.len())
                    }
                    Answer::Ack(payload) => {
                        rx.extend_from_slice(&payload);
                        // An empty ack payload is not a close.
                        Ok(payload.len().max(1))
                    }
                    Answer::Command => Ok(NOTHING_TO_MATCH),
                };
            }
            Link::Udp(s) => {
                let n = s.recv(scratch).await?;
                if n == 0 {
                    // An empty datagram is not a close on UDP; report it as one byte-less
                    // read the caller ignores.
                    return Ok(NOTHING_TO_MATCH);
                }
                n
            }
        };
        rx.extend_from_slice(&scratch[..n]);
        Ok(n)
    }
}

/// What the MQTT event loop produced for the device.
enum Answer {
    /// [`PUBACK`], [`PINGRESP`], or empty when the broker disconnected.
    Link(&'static [u8]),
    /// A payload on `clutch/<id>/ack`.
    Ack(Vec<u8>),
    /// A command was queued.
    Command,
}

impl MqttLink {
    /// CONNECT → CONNACK, SUBSCRIBE → SUBACK.
    async fn handshake(&mut self) -> io::Result<()> {
        match self.events.poll().await.map_err(io::Error::other)? {
            Event::Incoming(Packet::ConnAck(ack)) if ack.code == ConnectReturnCode::Success => {}
            Event::Incoming(Packet::ConnAck(ack)) => {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("broker refused CONNECT: {:?}", ack.code),
                ));
            }
            other => return Err(io::Error::other(format!("broker answered CONNECT with {other:?}"))),
        }
        self.client
            .try_subscribe_many([
                SubscribeFilter::new(self.ack_topic.clone(), QoS::AtLeastOnce),
                SubscribeFilter::new(self.commands_topic.clone(), QoS::AtLeastOnce),
            ])
            .map_err(io::Error::other)?;
        loop {
            match self.events.poll().await.map_err(io::Error::other)? {
                Event::Incoming(Packet::SubAck(ack)) => {
                    let refused =
                        |i: usize| matches!(ack.return_codes.get(i), Some(SubscribeReasonCode::Failure) | None);
                    if refused(0) && self.ack == MqttAck::Durable {
                        return Err(io::Error::new(
                            io::ErrorKind::PermissionDenied,
                            format!("broker refused the subscription to {}", self.ack_topic),
                        ));
                    }
                    if refused(1) {
                        tracing::warn!(topic = %self.commands_topic, "broker refused the subscription; no downlink commands");
                    }
                    return Ok(());
                }
                Event::Incoming(Packet::Disconnect) => return Err(io::Error::other("broker disconnected")),
                other => self.other(other),
            }
        }
    }

    /// Drive the event loop until something for the device arrives. Cancel-safe: rumqttc
    /// keeps partial reads and unflushed writes in its own buffers, and our state changes
    /// only on an event.
    async fn next_answer(&mut self) -> io::Result<Answer> {
        loop {
            match self.events.poll().await.map_err(io::Error::other)? {
                Event::Outgoing(Outgoing::Publish(pkid)) => {
                    if self.untracked > 0 {
                        self.untracked -= 1;
                    } else if self.publish == Some(None) {
                        self.publish = Some(Some(pkid));
                    }
                }
                Event::Incoming(Packet::PubAck(ack)) if self.publish == Some(Some(ack.pkid)) => {
                    self.publish = None;
                    return Ok(Answer::Link(PUBACK));
                }
                Event::Incoming(Packet::PingResp) if self.ping => {
                    self.ping = false;
                    return Ok(Answer::Link(PINGRESP));
                }
                Event::Incoming(Packet::Publish(p)) if p.topic == self.ack_topic => {
                    return Ok(Answer::Ack(p.payload.to_vec()));
                }
                Event::Incoming(Packet::Publish(p)) if p.topic == self.commands_topic => {
                    let cmd = serde_json::from_slice::<CommandRequest>(&p.payload).map_err(|e| {
                        let text = String::from_utf8_lossy(&p.payload[..p.payload.len().min(200)]).into_owned();
                        format!("not a command ({e}): {text}")
                    });
                    self.commands.push_back(cmd);
                    return Ok(Answer::Command);
                }
                Event::Incoming(Packet::Disconnect) => return Ok(Answer::Link(&[])),
                other => self.other(other),
            }
        }
    }

    /// Late PUBACKs of publishes given up on, rumqttc's own keep-alive pings, SUBACKs…
    fn other(&self, e: Event) {
        tracing::trace!(client = %self.events.mqtt_options.client_id(), "mqtt {e:?}");
    }
}

/// Wrap an OsmAnd frame in HTTP/1.1 requests.
pub fn http_requests(frame: &[u8], host: &str) -> (Vec<u8>, usize) {
    let trimmed = frame.trim_ascii_start();
    if trimmed.starts_with(b"{") || trimmed.starts_with(b"[") {
        let mut out = format!(
            "POST / HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            frame.len()
        )
        .into_bytes();
        out.extend_from_slice(frame);
        return (out, 1);
    }
    let mut out = Vec::with_capacity(frame.len() + 64);
    let mut n = 0;
    for line in frame.split(|&b| b == b'\n').filter(|l| !l.trim_ascii().is_empty()) {
        out.extend_from_slice(b"GET ");
        out.extend_from_slice(line.trim_ascii());
        out.extend_from_slice(format!(" HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes());
        n += 1;
    }
    (out, n)
}
