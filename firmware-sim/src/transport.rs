//! The device's link to the server: TCP, UDP (connected socket), HTTP/1.1 keep-alive, or
//! MQTT to a broker.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use protocols::Transport;
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
    Mqtt {
        stream: TcpStream,
        topic: String,
        next_pid: u16,
    },
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

    /// Connect to an MQTT broker; the caller sends CONNECT (it is the device's login).
    pub async fn connect_mqtt(
        target: SocketAddr,
        source: Option<IpAddr>,
        timeout: Duration,
        topic: String,
    ) -> io::Result<Link> {
        match Link::connect(Transport::Tcp, target, source, timeout).await? {
            Link::Tcp(stream) => Ok(Link::Mqtt {
                stream,
                topic,
                next_pid: 0,
            }),
            other => Ok(other),
        }
    }

    /// Write bytes as they are (MQTT control packets).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Link::Tcp(s) | Link::Http { stream: s, .. } | Link::Mqtt { stream: s, .. } => s.write_all(bytes).await,
            Link::Udp(s) => s.send(bytes).await.map(|_| ()),
        }
    }

    /// The PUBACK the last publish waits for (MQTT links only).
    pub fn last_puback(&self) -> Option<[u8; 4]> {
        match self {
            Link::Mqtt { next_pid, .. } => Some(crate::mqtt::puback(*next_pid)),
            _ => None,
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
            Link::Mqtt {
                stream,
                topic,
                next_pid,
            } => {
                // Packet id 0 is not allowed at QoS 1.
                *next_pid = next_pid.checked_add(1).unwrap_or(1);
                stream
                    .write_all(&crate::mqtt::publish(topic, *next_pid, frame, false))
                    .await?;
                Ok(1)
            }
        }
    }

    /// Append what arrives to `rx`. `Ok(0)` means the server closed the connection.
    /// Cancel-safe: bytes are only appended when a read completes.
    pub async fn recv(&mut self, scratch: &mut [u8], rx: &mut Vec<u8>) -> io::Result<usize> {
        let n = match self {
            Link::Tcp(s) | Link::Http { stream: s, .. } | Link::Mqtt { stream: s, .. } => s.read(scratch).await?,
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
