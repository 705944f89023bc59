//! The device's link to the server: TCP, UDP (connected socket), HTTP/1.1 keep-alive, or
//! MQTT to a broker through `rumqttc`.
//!
//! MQTT topics follow the Clutch layout: `clutch/<id>/raw/<protocol>` carries the
//! protocol's own frame bytes and `clutch/<id>/telemetry` the positions as JSON. Frames are
//! published at QoS 1 and the broker's PUBACK is the ack the device waits for; the MQTT
//! link hands the device [`PUBACK`] (or [`PINGRESP`]) when the packet it awaits arrives.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use protocols::Transport;
use rumqttc::{AsyncClient, ConnectReturnCode, Event, EventLoop, MqttOptions, Outgoing, Packet, PingReq, QoS, Request};
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
    /// A publish awaits its PUBACK: `Some(None)` until rumqttc has given it a packet id.
    publish: Option<Option<u16>>,
    /// A PINGREQ awaits its PINGRESP.
    ping: bool,
}

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
    pub async fn connect_mqtt(
        client_id: &str,
        target: SocketAddr,
        timeout: Duration,
        keep_alive: Duration,
        topic: String,
    ) -> io::Result<Link> {
        let mut options = MqttOptions::new(client_id, target.ip().to_string(), target.port());
        options
            .set_keep_alive(keep_alive.max(Duration::from_secs(1)))
            .set_clean_session(true)
            .set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut events) = AsyncClient::new(options, 16);
        let mut net = events.network_options();
        net.set_connection_timeout(timeout.as_secs().max(1));
        net.set_tcp_nodelay(true);
        events.set_network_options(net);
        match tokio::time::timeout(timeout, events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) if ack.code == ConnectReturnCode::Success => {
                Ok(Link::Mqtt(Box::new(MqttLink {
                    client,
                    events,
                    topic,
                    publish: None,
                    ping: false,
                })))
            }
            Ok(Ok(other)) => Err(io::Error::other(format!("broker answered CONNECT with {other:?}"))),
            Ok(Err(e)) => Err(io::Error::other(e)),
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
        }
    }

    /// The ack the last send waits for when the link, not the protocol, decides it: an
    /// MQTT publish's [`PUBACK`].
    pub fn link_ack(&self) -> Option<&'static [u8]> {
        match self {
            Link::Mqtt(_) => Some(PUBACK),
            _ => None,
        }
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
                // Any earlier publish still unacked is forgotten: only this one's PUBACK counts.
                m.publish = Some(None);
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
                let got = m.next_answer().await?;
                rx.extend_from_slice(got);
                return Ok(got.len());
            }
            Link::Udp(s) => {
                let n = s.recv(scratch).await?;
                if n == 0 {
                    // An empty datagram is not a close on UDP; report it as one byte-less
                    // read the caller ignores.
                    return Ok(usize::MAX);
                }
                n
            }
        };
        rx.extend_from_slice(&scratch[..n]);
        Ok(n)
    }
}

impl MqttLink {
    /// Drive the event loop until the packet awaited arrives: [`PUBACK`], [`PINGRESP`],
    /// or empty when the broker disconnected. Cancel-safe: rumqttc keeps partial reads
    /// and unflushed writes in its own buffers, and our state changes only on an event.
    async fn next_answer(&mut self) -> io::Result<&'static [u8]> {
        loop {
            match self.events.poll().await.map_err(io::Error::other)? {
                Event::Outgoing(Outgoing::Publish(pkid)) if self.publish == Some(None) => {
                    self.publish = Some(Some(pkid));
                }
                Event::Incoming(Packet::PubAck(ack)) if self.publish == Some(Some(ack.pkid)) => {
                    self.publish = None;
                    return Ok(PUBACK);
                }
                Event::Incoming(Packet::PingResp) if self.ping => {
                    self.ping = false;
                    return Ok(PINGRESP);
                }
                Event::Incoming(Packet::Disconnect) => return Ok(&[]),
                // Late PUBACKs of publishes given up on, rumqttc's own keep-alive pings.
                other => tracing::trace!(client = %self.events.mqtt_options.client_id(), "mqtt {other:?}"),
            }
        }
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
