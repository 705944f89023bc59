//! A minimal acking server built from the protocols crate: frame → decode → write
//! `Message.ack`, over TCP, UDP or HTTP, with switches for misbehaving.
//!
//! It is the server the simulator's own tests run against, the target of the scale check,
//! and a way to try the simulator without a Clutch server. It acks on decode, not on
//! durability, and keeps every decoded message in memory: not for production. MQTT tests
//! run the real broker (`rumqttd`) instead; [`Seen::record_mqtt`] decodes what devices
//! published to it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use protocols::{Codec, Command, DecodeContext, Framing, Message, MessageKind, Protocol, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

/// How the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    Ack,
    /// Withhold the ack of the first position frame (globally), ack the rest.
    DropFirstPositionAck,
    /// Answer every frame with garbage.
    Garbage,
    /// Close every connection as soon as a frame arrives.
    Close,
    /// After the first ack, send an engine-stop command.
    Command,
}

/// What the server saw.
#[derive(Debug, Default)]
pub struct Seen {
    keep: bool,
    pub message_count: AtomicU64,
    pub position_count: AtomicU64,
    pub messages: Mutex<Vec<Message>>,
    pub frames: AtomicU64,
    pub decode_errors: AtomicU64,
    pub connections: AtomicU64,
    dropped: AtomicU64,
    commanded: AtomicU64,
}

impl Seen {
    /// A record of everything decoded, messages kept.
    pub fn keeping() -> Seen {
        Seen {
            keep: true,
            ..Seen::default()
        }
    }

    /// What a device published to an MQTT broker: `clutch/<id>/raw/<protocol>` payloads
    /// are decoded with that protocol's codec (one per `codecs` key, kept across calls);
    /// `clutch/<id>/telemetry` JSON positions are read back. Returns the positions seen.
    pub fn record_mqtt(&self, codecs: &mut HashMap<String, Box<dyn Codec>>, topic: &str, payload: &[u8]) -> usize {
        self.record_mqtt_acking(codecs, topic, payload).0
    }

    /// [`Seen::record_mqtt`], also returning what a Clutch server publishes on
    /// `clutch/<id>/ack` once the records are stored: the protocol's ack bytes for a raw
    /// frame (none when the protocol acks nothing), `{"seq", "records"}` for telemetry.
    /// Other topics are not recorded.
    pub fn record_mqtt_acking(
        &self,
        codecs: &mut HashMap<String, Box<dyn Codec>>,
        topic: &str,
        payload: &[u8],
    ) -> (usize, Option<Vec<u8>>) {
        let ctx = DecodeContext::now();
        let parts: Vec<&str> = topic.split('/').collect();
        if !matches!(parts.as_slice(), ["clutch", _, "raw", _] | ["clutch", _, "telemetry"]) {
            return (0, None);
        }
        self.frames.fetch_add(1, Relaxed);
        let mut positions = 0;
        let mut ack = None;
        match parts.as_slice() {
            ["clutch", id, "raw", proto] => {
                let Ok(p) = proto.parse::<Protocol>() else {
                    return (0, None);
                };
                let key = format!("{id}/{proto}");
                let codec = match codecs.entry(key) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(v) => match p.codec(Transport::Tcp) {
                        Ok(c) => v.insert(c),
                        Err(_) => return (0, None),
                    },
                };
                let (msgs, errs) = protocols::decode_all(&mut **codec, payload, &ctx);
                self.decode_errors.fetch_add(errs.len() as u64, Relaxed);
                let bytes: Vec<u8> = msgs.iter().filter_map(|m| m.ack.clone()).flatten().collect();
                ack = (!bytes.is_empty()).then_some(bytes);
                for mut m in msgs {
                    positions += m.positions.len();
                    m.imei.get_or_insert_with(|| (*id).to_owned());
                    self.record(m);
                }
            }
            ["clutch", id, "telemetry"] => {
                let v: serde_json::Value = serde_json::from_slice(payload).unwrap_or_default();
                let mut ps = Vec::new();
                for q in v["positions"].as_array().into_iter().flatten() {
                    let time = q["time"].as_str().and_then(|t| t.parse().ok());
                    let (Some(time), Some(lat), Some(lon)) = (time, q["latitude"].as_f64(), q["longitude"].as_f64())
                    else {
                        continue;
                    };
                    let mut pos = protocols::Position::new(time, lat, lon, q["valid"].as_bool().unwrap_or(true));
                    pos.speed_kmh = q["speed_kmh"].as_f64();
                    ps.push(pos);
                }
                positions = ps.len();
                if let Some(seq) = v["seq"].as_u64() {
                    ack = serde_json::to_vec(&crate::mqtt::DurableAck {
                        seq,
                        records: positions as u64,
                    })
                    .ok();
                }
                self.record(Message::new(MessageKind::Position).with_imei(*id).with_positions(ps));
            }
            _ => {}
        }
        (positions, ack)
    }

    fn record(&self, m: Message) {
        self.message_count.fetch_add(1, Relaxed);
        self.position_count.fetch_add(m.positions.len() as u64, Relaxed);
        if self.keep {
            self.messages.lock().unwrap_or_else(|e| e.into_inner()).push(m);
        }
    }

    pub fn positions(&self) -> Vec<(String, protocols::Position)> {
        let m = self.messages.lock().unwrap_or_else(|e| e.into_inner());
        m.iter()
            .filter(|m| matches!(m.kind, MessageKind::Position | MessageKind::Alarm | MessageKind::Obd))
            .flat_map(|m| {
                let id = m.imei.clone().unwrap_or_default();
                m.positions.iter().map(move |p| (id.clone(), p.clone()))
            })
            .collect()
    }
    pub fn kinds(&self, k: MessageKind) -> usize {
        self.messages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|m| m.kind == k)
            .count()
    }
}

/// A running server.
#[derive(Debug)]
pub struct TestServer {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
}

/// Start a server on an ephemeral loopback port.
pub async fn start(protocol: Protocol, transport: Transport, behaviour: Behaviour) -> TestServer {
    start_on(
        "127.0.0.1:0".parse().expect("literal address"),
        protocol,
        transport,
        behaviour,
        true,
    )
    .await
    .expect("binding an ephemeral loopback port")
}

/// Start a server on `addr`. With `keep` false, decoded messages are counted, not kept
/// (for long load runs).
pub async fn start_on(
    addr: SocketAddr,
    protocol: Protocol,
    transport: Transport,
    behaviour: Behaviour,
    keep: bool,
) -> std::io::Result<TestServer> {
    protocol.codec(transport).map_err(std::io::Error::other)?;
    let seen = Arc::new(Seen {
        keep,
        ..Seen::default()
    });
    let addr = match transport {
        Transport::Tcp | Transport::Http => {
            let l = TcpListener::bind(addr).await?;
            let addr = l.local_addr()?;
            let seen = seen.clone();
            tokio::spawn(async move {
                while let Ok((s, _)) = l.accept().await {
                    seen.connections.fetch_add(1, Relaxed);
                    let seen = seen.clone();
                    if transport == Transport::Http {
                        tokio::spawn(serve_http(s, protocol, seen, behaviour));
                    } else {
                        tokio::spawn(serve_tcp(s, protocol, seen, behaviour));
                    }
                }
            });
            addr
        }
        Transport::Udp => {
            let sock = Arc::new(UdpSocket::bind(addr).await?);
            let addr = sock.local_addr()?;
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut sessions: HashMap<SocketAddr, Box<dyn Codec>> = HashMap::new();
                let mut buf = vec![0u8; 65536];
                while let Ok((n, peer)) = sock.recv_from(&mut buf).await {
                    let codec = match sessions.entry(peer) {
                        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                        std::collections::hash_map::Entry::Vacant(v) => match protocol.codec(Transport::Udp) {
                            Ok(c) => v.insert(c),
                            Err(_) => return,
                        },
                    };
                    let (replies, _) = handle(&mut **codec, &buf[..n], true, &seen, behaviour);
                    if !replies.is_empty() {
                        let _ = sock.send_to(&replies, peer).await;
                    }
                }
            });
            addr
        }
    };
    Ok(TestServer { addr, seen })
}

/// Frame and decode everything in `buf`; returns the bytes to send back and how many
/// bytes were consumed.
fn handle(codec: &mut dyn Codec, buf: &[u8], eof: bool, seen: &Seen, behaviour: Behaviour) -> (Vec<u8>, usize) {
    let mut out = Vec::new();
    let mut at = 0;
    let ctx = DecodeContext::now();
    while at < buf.len() {
        match codec.frame(&buf[at..], eof) {
            Framing::Frame { start, end } => {
                seen.frames.fetch_add(1, Relaxed);
                match codec.decode(&buf[at + start..at + end], &ctx) {
                    Ok(msgs) => {
                        for m in msgs {
                            let is_pos = m.kind == MessageKind::Position;
                            let withhold = behaviour == Behaviour::DropFirstPositionAck
                                && is_pos
                                && seen.dropped.fetch_add(1, Relaxed) == 0;
                            match behaviour {
                                Behaviour::Garbage => out.extend_from_slice(b"\xde\xad\xbe\xefnonsense"),
                                _ if withhold => {}
                                _ => {
                                    if let Some(a) = &m.ack {
                                        out.extend_from_slice(a);
                                    }
                                }
                            }
                            if behaviour == Behaviour::Command
                                && is_pos
                                && seen.commanded.fetch_add(1, Relaxed) == 0
                                && let Some(id) = &m.imei
                                && let Ok(cmd) = codec.encode_command(id, &Command::EngineStop, &ctx)
                            {
                                out.extend_from_slice(&cmd);
                            }
                            seen.record(m);
                        }
                    }
                    Err(_) => {
                        seen.decode_errors.fetch_add(1, Relaxed);
                    }
                }
                at += end;
            }
            Framing::Incomplete => break,
            Framing::Resync { discard, .. } => {
                seen.decode_errors.fetch_add(1, Relaxed);
                at += discard.max(1);
            }
            Framing::Fatal(_) => {
                seen.decode_errors.fetch_add(1, Relaxed);
                return (out, usize::MAX);
            }
        }
    }
    (out, at)
}

async fn serve_tcp(mut s: tokio::net::TcpStream, protocol: Protocol, seen: Arc<Seen>, behaviour: Behaviour) {
    let Ok(mut codec) = protocol.codec(Transport::Tcp) else {
        return;
    };
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 8192];
    loop {
        let n = match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if behaviour == Behaviour::Close {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        let (reply, used) = handle(&mut *codec, &buf, false, &seen, behaviour);
        if !reply.is_empty() && s.write_all(&reply).await.is_err() {
            return;
        }
        if used == usize::MAX {
            return;
        }
        buf.drain(..used.min(buf.len()));
    }
}

async fn serve_http(mut s: tokio::net::TcpStream, protocol: Protocol, seen: Arc<Seen>, behaviour: Behaviour) {
    let Ok(mut codec) = protocol.codec(Transport::Http) else {
        return;
    };
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 8192];
    let ctx = DecodeContext::now();
    loop {
        let n = match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        while let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if buf.len() < head_end + 4 + len {
                break;
            }
            let target = head.split(' ').nth(1).unwrap_or("/").to_owned();
            let body = buf[head_end + 4..head_end + 4 + len].to_vec();
            buf.drain(..head_end + 4 + len);
            let input = if body.is_empty() { target.into_bytes() } else { body };
            seen.frames.fetch_add(1, Relaxed);
            let ok = match codec.decode(&input, &ctx) {
                Ok(msgs) => {
                    let ok = msgs.iter().all(|m| m.imei.is_some());
                    for m in msgs {
                        seen.record(m);
                    }
                    ok
                }
                Err(_) => {
                    seen.decode_errors.fetch_add(1, Relaxed);
                    false
                }
            };
            let reply: &[u8] = match (behaviour, ok) {
                (Behaviour::Garbage, _) => b"nonsense\r\n\r\n",
                (_, true) => b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                (_, false) => b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
            };
            if s.write_all(reply).await.is_err() {
                return;
            }
        }
    }
}
