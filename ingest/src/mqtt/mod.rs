//! MQTT ingest: the embedded broker (rumqttd behind our own front door) or an external
//! broker read with a shared subscription (rumqttc). Both feed one [`Core`] that treats
//! a message like a TCP frame: decode → bus → store writer's COMMIT → ack.
//!
//! # Layout
//! - [`topics`]: the topic layout and the per-device ACL (pure).
//! - [`auth`]: argon2id device secrets, CONNECT authentication, `clutch device add` helpers.
//! - [`telemetry`]: the JSON payload of `clutch/<id>/telemetry`.
//! - `broker`: the embedded broker: rumqttd's router, reached only through local links
//!   that our front door opens per authenticated device after checking every packet.
//! - `client`: client mode against an external broker.
//! - this file: [`Core`] (per message: resolve, decode, publish on the bus, ack after
//!   durable) and the downlink (queued commands → `clutch/<id>/commands`).
//!
//! What PUBACK and `clutch/<id>/ack` guarantee is written down in `ingest/README.md`.

pub mod auth;
mod broker;
mod client;
pub mod telemetry;
pub mod topics;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use protocols::error::hex_excerpt;
use protocols::{Codec, Command, DecodeContext, Message, MessageKind, Protocol, Transport};
use store::EventRow;
use tokio::sync::mpsc;

use crate::Shared;
use crate::metrics as m;
use crate::pipeline::DeviceBatch;
use auth::MqttDevice;
use topics::Inbound;

pub(crate) use broker::start as start_embedded;
pub(crate) use client::start as start_external;

/// A running MQTT ingest.
#[derive(Debug, Clone)]
pub struct MqttHandle {
    /// Where the embedded broker listens (`None` in client mode).
    pub addr: Option<SocketAddr>,
    /// The external broker (client mode).
    pub external: Option<String>,
    core: Arc<Core>,
}

impl MqttHandle {
    /// Messages this node has made durable and acknowledged (client mode tests use it
    /// to see how a shared subscription spread the load).
    pub fn messages_stored(&self) -> u64 {
        self.core.stored.load(Ordering::Relaxed)
    }

    /// For `/ready`: the embedded broker accepts a TCP connection on its port; in client
    /// mode, the connection to the external broker is up.
    pub async fn check(&self) -> std::result::Result<(), String> {
        if let Some(addr) = self.addr {
            // A wildcard bind is reached on loopback.
            let to = if addr.ip().is_unspecified() {
                let lo: std::net::IpAddr = if addr.is_ipv4() {
                    std::net::Ipv4Addr::LOCALHOST.into()
                } else {
                    std::net::Ipv6Addr::LOCALHOST.into()
                };
                SocketAddr::new(lo, addr.port())
            } else {
                addr
            };
            return match tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(to)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("embedded broker on {addr}: {e}")),
                Err(_) => Err(format!("embedded broker on {addr}: no answer")),
            };
        }
        if self.core.connected.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err(format!(
                "external broker {}: disconnected",
                self.external.as_deref().unwrap_or("?")
            ))
        }
    }

    pub(crate) fn set_connected(core: &Core, up: bool) {
        core.connected.store(up, Ordering::Relaxed);
    }
}

/// Where the server publishes acks and commands.
pub(crate) enum Outbound {
    /// The embedded router, through the ingest's own local link.
    Link(Mutex<(rumqttd::local::LinkTx, u16)>),
    /// The external broker.
    Client(rumqttc::AsyncClient),
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Outbound::Link(_) => "Outbound::Link",
            Outbound::Client(_) => "Outbound::Client",
        })
    }
}

impl Outbound {
    /// QoS 1, so the broker retransmits to a device that misses it while connected.
    async fn publish(&self, topic: String, payload: Vec<u8>) {
        match self {
            Outbound::Link(l) => {
                let mut l = lock(l);
                // Our link's packet ids only need to be non-zero and rotate: the router
                // PUBACKs them back to us and we ignore those.
                l.1 = l.1.checked_add(1).unwrap_or(1);
                let publish = qos1_publish(&topic, &payload, l.1);
                // Synchronous hand-over to the router thread's channel; it drains fast.
                let fut = l.0.send(rumqttd::protocol::Packet::Publish(publish, None));
                if let Err(error) = futures_util::FutureExt::now_or_never(fut).unwrap_or(Ok(0)) {
                    tracing::warn!(%error, "publishing to the embedded broker failed");
                }
            }
            Outbound::Client(c) => {
                if let Err(error) = c.publish(topic, rumqttc::QoS::AtLeastOnce, false, payload).await {
                    tracing::warn!(%error, "publishing to the external broker failed");
                }
            }
        }
    }
}

/// A QoS 1 PUBLISH for the router. rumqttd builds only QoS 0 ones for local links
/// (its QoS field is crate-private), so this goes through its documented wire-neutral
/// serialisation: header, packet id, topic length, topic, payload.
pub(crate) fn qos1_publish(topic: &str, payload: &[u8], pkid: u16) -> rumqttd::protocol::Publish {
    let mut b = bytes::BytesMut::with_capacity(5 + topic.len() + payload.len());
    bytes::BufMut::put_u8(&mut b, 0b0011_0010);
    bytes::BufMut::put_u16(&mut b, pkid);
    bytes::BufMut::put_u16(&mut b, topic.len() as u16);
    b.extend_from_slice(topic.as_bytes());
    b.extend_from_slice(payload);
    rumqttd::protocol::Publish::deserialize(b.freeze())
}

/// An ack owed once `receipt` resolves, in arrival order.
struct PendingAck {
    receipt: Option<stream::PublishReceipt>,
    topic: String,
    payload: Vec<u8>,
    kind: &'static str,
    received: Instant,
    /// Client mode: the broker's PUBACK for the message, sent only once durable.
    manual: Option<rumqttc::Publish>,
}

/// Per-message processing shared by both modes.
#[derive(Debug)]
pub(crate) struct Core {
    shared: Arc<Shared>,
    out: Outbound,
    /// `<id>` → device: filled at CONNECT (embedded) or by lookup (client mode).
    devices: Mutex<HashMap<String, MqttDevice>>,
    /// Raw frames are decoded with one codec per device and protocol, kept across
    /// messages like a TCP session's (some protocols keep state after a login frame).
    codecs: Mutex<HashMap<(i64, Protocol), Box<dyn Codec>>>,
    acks: mpsc::Sender<PendingAckBox>,
    /// Devices that can take commands now: subscribed (embedded) or recently heard
    /// from (client mode), with when that was last confirmed.
    online: Mutex<HashMap<i64, (MqttDevice, Instant)>>,
    /// Devices with queued commands at the last poll.
    queued: Mutex<HashSet<i64>>,
    /// Unregistered ids already logged (logged once each).
    unknown_logged: Mutex<HashSet<String>>,
    stored: AtomicU64,
    /// Client mode: whether the connection to the external broker is up (embedded mode
    /// probes its listener instead, see [`MqttHandle::check`]).
    connected: std::sync::atomic::AtomicBool,
    /// Client mode: a device counts as online this long after its last message.
    online_for: Option<Duration>,
}

// Boxed so the channel's element type stays small and `Debug` is not needed on it.
struct PendingAckBox(Box<PendingAck>);

impl std::fmt::Debug for PendingAckBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingAck")
            .field("topic", &self.0.topic)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Core {
    pub(crate) fn new(shared: Arc<Shared>, out: Outbound, online_for: Option<Duration>) -> Arc<Core> {
        let (tx, rx) = mpsc::channel(1024);
        let core = Arc::new(Core {
            shared: shared.clone(),
            out,
            devices: Mutex::new(HashMap::new()),
            codecs: Mutex::new(HashMap::new()),
            acks: tx,
            online: Mutex::new(HashMap::new()),
            queued: Mutex::new(HashSet::new()),
            unknown_logged: Mutex::new(HashSet::new()),
            stored: AtomicU64::new(0),
            connected: std::sync::atomic::AtomicBool::new(true),
            online_for,
        });
        shared.tracker.spawn(acker(core.clone(), rx));
        shared.tracker.spawn(poll_commands(core.clone()));
        core
    }

    pub(crate) fn handle(self: &Arc<Core>) -> MqttHandle {
        MqttHandle {
            addr: None,
            external: None,
            core: self.clone(),
        }
    }

    /// Remembers an authenticated device so its topics resolve without a query.
    pub(crate) fn connected(&self, d: &MqttDevice) {
        let mut devices = lock(&self.devices);
        devices.insert(d.identifier.clone(), d.clone());
        if let Some(u) = &d.username {
            devices.insert(u.clone(), d.clone());
        }
    }

    /// One message from a device. `manual` (client mode) is PUBACKed after durability.
    pub(crate) async fn message(self: &Arc<Core>, topic: &str, payload: Bytes, manual: Option<rumqttc::Publish>) {
        let received = Instant::now();
        let inbound = match topics::parse(topic) {
            Ok(i) => i,
            Err(e) => {
                count("other", "bad_topic");
                tracing::debug!(topic, ?e, "message on a topic the server does not read");
                self.puback(manual).await;
                return;
            }
        };
        let (id, kind, raw) = match &inbound {
            Inbound::Telemetry { id } => (*id, "telemetry", None),
            Inbound::Raw { id, protocol } => (*id, "raw", Some(*protocol)),
            Inbound::Responses { id } => (*id, "responses", None),
        };
        let Some(device) = self.resolve(id, raw).await else {
            count(kind, "unknown_device");
            self.puback(manual).await;
            return;
        };
        if self.online_for.is_some() {
            lock(&self.online).insert(device.device_id, (device.clone(), Instant::now()));
        }
        let now = Utc::now();
        let outcome = match inbound {
            Inbound::Telemetry { .. } => self.telemetry(&device, &payload, now),
            Inbound::Raw { protocol, .. } => self.raw(&device, protocol, &payload, now),
            Inbound::Responses { .. } => self.response(&device, &payload, now).await,
        };
        let (batch, ack) = match outcome {
            Ok(x) => x,
            Err(outcome) => {
                count(kind, outcome);
                // Refused input is not retried by the broker: it would fail again.
                self.puback(manual).await;
                return;
            }
        };
        let receipt = if batch.is_empty() {
            None
        } else {
            let n = batch.positions.len();
            match self.shared.bus.publish(batch).await {
                Ok(r) => {
                    metrics::counter!(m::POSITIONS, "protocol" => raw.map(|p| p.name()).unwrap_or("mqtt"))
                        .increment(n as u64);
                    Some(r)
                }
                Err(error) => {
                    count(kind, "bus");
                    tracing::warn!(device = device.device_id, %error, "bus refused the batch; not acknowledged");
                    return;
                }
            }
        };
        let pending = PendingAck {
            receipt,
            topic: topics::ack(id),
            payload: ack.unwrap_or_default(),
            kind,
            received,
            manual,
        };
        if self.acks.send(PendingAckBox(Box::new(pending))).await.is_err() {
            return;
        }
        if lock(&self.queued).contains(&device.device_id) {
            let core = self.clone();
            self.shared.tracker.spawn(async move { core.deliver(&device).await });
        }
    }

    async fn puback(&self, manual: Option<rumqttc::Publish>) {
        if let (Some(p), Outbound::Client(c)) = (manual, &self.out) {
            let _ = c.ack(&p).await;
        }
    }

    /// `<id>` → device. Embedded mode knows it from CONNECT; client mode asks the
    /// database and applies `ingest.unknown_devices` like the TCP path.
    async fn resolve(&self, id: &str, raw: Option<Protocol>) -> Option<MqttDevice> {
        if let Some(d) = lock(&self.devices).get(id) {
            return Some(d.clone());
        }
        let pool = self.shared.registry.pool();
        type Row = (i64, String, Option<String>, String);
        let row: Result<Option<Row>, _> = sqlx::query_as(
            "SELECT id, identifier, mqtt_username, protocol FROM devices \
             WHERE (identifier = $1 OR mqtt_username = $1) AND NOT disabled \
             ORDER BY (protocol = $2) DESC, (mqtt_username = $1) DESC NULLS LAST, id LIMIT 1",
        )
        .bind(id)
        .bind(raw.map(|p| p.name()).unwrap_or(auth::MQTT_PROTOCOL))
        .fetch_optional(pool)
        .await;
        let device = match row {
            Ok(Some((device_id, identifier, username, protocol))) => MqttDevice {
                device_id,
                username: username.filter(|u| *u != identifier),
                identifier,
                protocol,
            },
            Ok(None) => {
                let protocol = raw.map(|p| p.name()).unwrap_or(auth::MQTT_PROTOCOL);
                let registered = if self.shared.registry.policy() == crate::UnknownDevices::Register {
                    crate::registry::ensure_tenant(pool, &self.shared.config.default_tenant)
                        .await
                        .ok()
                        .map(|tenant| (tenant, protocol))
                } else {
                    None
                };
                let Some((tenant, protocol)) = registered else {
                    if lock(&self.unknown_logged).insert(id.to_string()) {
                        tracing::warn!(
                            identifier = id,
                            "MQTT message from an unknown device dropped \
                            (ingest.unknown_devices = refuse); register it with `clutch device add`"
                        );
                    }
                    return None;
                };
                let device_id: i64 = sqlx::query_scalar(
                    "INSERT INTO devices (tenant_id, identifier, protocol) VALUES ($1, $2, $3) \
                     ON CONFLICT (protocol, identifier) DO UPDATE SET identifier = EXCLUDED.identifier RETURNING id",
                )
                .bind(tenant)
                .bind(id)
                .bind(protocol)
                .fetch_one(pool)
                .await
                .ok()?;
                tracing::info!(identifier = id, device_id, "registered new MQTT device");
                MqttDevice {
                    device_id,
                    identifier: id.to_string(),
                    username: None,
                    protocol: protocol.to_string(),
                }
            }
            Err(error) => {
                tracing::error!(%error, "device lookup failed");
                return None;
            }
        };
        lock(&self.devices).insert(id.to_string(), device.clone());
        Some(device)
    }

    fn telemetry(
        &self,
        device: &MqttDevice,
        payload: &[u8],
        now: chrono::DateTime<Utc>,
    ) -> Result<(DeviceBatch, Option<Vec<u8>>), &'static str> {
        let t = telemetry::parse(payload).map_err(|error| {
            tracing::warn!(device = device.device_id, %error, excerpt = %hex_excerpt(payload), "telemetry refused");
            "decode_error"
        })?;
        let n = t.positions.len();
        let msg = Message::new(MessageKind::Position).with_positions(t.positions);
        let batch = DeviceBatch::from_messages(device.device_id, &[msg], now);
        let mut ack = serde_json::json!({ "records": n });
        if let Some(seq) = t.seq {
            ack["seq"] = seq;
        }
        Ok((batch, Some(ack.to_string().into_bytes())))
    }

    fn raw(
        &self,
        device: &MqttDevice,
        protocol: Protocol,
        payload: &[u8],
        now: chrono::DateTime<Utc>,
    ) -> Result<(DeviceBatch, Option<Vec<u8>>), &'static str> {
        let messages = {
            let mut codecs = lock(&self.codecs);
            let codec = match codecs.entry((device.device_id, protocol)) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    // Frames arrive as they would on the protocol's stream transport.
                    let c = protocol
                        .codec(Transport::Tcp)
                        .or_else(|_| protocol.codec(Transport::Udp))
                        .or_else(|_| protocol.codec(Transport::Http))
                        .map_err(|_| "unsupported")?;
                    v.insert(c)
                }
            };
            crate::udp::decode_whole(codec.as_mut(), payload, self.shared.config.max_frame_bytes, now)
                .ok_or("oversize")?
        };
        if messages.is_empty() {
            return Err("decode_error");
        }
        // The topic names the device; a frame claiming another identity is a spoof.
        if let Some(other) = messages
            .iter()
            .filter_map(|m| m.imei.as_deref())
            .find(|imei| !device.owns(imei))
        {
            metrics::counter!(m::MQTT_SPOOF_REFUSALS, "kind" => "payload").increment(1);
            tracing::warn!(
                device = device.device_id,
                claimed = other,
                "raw frame carries another device's identifier; dropped"
            );
            return Err("identity_mismatch");
        }
        for r in messages.iter().filter(|m| m.kind == MessageKind::CommandResponse) {
            let text = r.result.clone().or(r.message_type.clone()).unwrap_or_default();
            let pool = self.shared.registry.pool().clone();
            let id = device.device_id;
            self.shared.tracker.spawn(async move {
                if let Err(error) = crate::commands::record_response(&pool, id, &text).await {
                    tracing::warn!(%error, "recording a command response failed");
                }
            });
        }
        let ack: Vec<u8> = messages
            .iter()
            .filter_map(|m| m.ack.as_deref())
            .flatten()
            .copied()
            .collect();
        let batch = DeviceBatch::from_messages(device.device_id, &messages, now);
        Ok((batch, (!ack.is_empty()).then_some(ack)))
    }

    /// `{"id": <command id>, "result": "<text>"}`: recorded against that command (only
    /// the device's own) and kept as a `command_response` event like the TCP path.
    async fn response(
        &self,
        device: &MqttDevice,
        payload: &[u8],
        now: chrono::DateTime<Utc>,
    ) -> Result<(DeviceBatch, Option<Vec<u8>>), &'static str> {
        #[derive(serde::Deserialize)]
        struct Response {
            id: i64,
            #[serde(default)]
            result: serde_json::Value,
        }
        let r: Response = serde_json::from_slice(payload).map_err(|error| {
            tracing::warn!(device = device.device_id, %error, "command response refused");
            "decode_error"
        })?;
        let text = match &r.result {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => String::new(),
            other => other.to_string(),
        };
        let updated = crate::commands::record_response_to(self.shared.registry.pool(), device.device_id, r.id, &text)
            .await
            .map_err(|error| {
                tracing::warn!(%error, "recording a command response failed");
                "store_error"
            })?;
        if !updated {
            tracing::warn!(
                device = device.device_id,
                command = r.id,
                "response to a command this device was not sent"
            );
            return Err("unknown_command");
        }
        let mut e = EventRow::new(device.device_id, now, "command_response");
        e.attributes = serde_json::json!({ "result": text, "command_id": r.id });
        let batch = DeviceBatch {
            device_id: device.device_id,
            positions: Vec::new(),
            events: vec![e],
        };
        Ok((batch, None))
    }

    /// The device can take commands now (embedded: it subscribed to them).
    pub(crate) fn online(self: &Arc<Core>, device: &MqttDevice) {
        lock(&self.online).insert(device.device_id, (device.clone(), Instant::now()));
        let core = self.clone();
        let device = device.clone();
        self.shared.tracker.spawn(async move { core.deliver(&device).await });
    }

    pub(crate) fn offline(&self, device_id: i64) {
        lock(&self.online).remove(&device_id);
    }

    /// Publishes the device's queued commands: JSON on `clutch/<id>/commands` always,
    /// and the protocol-encoded bytes on `clutch/<id>/commands/raw` when the device is
    /// registered with a tracker protocol that can express the command.
    async fn deliver(&self, device: &MqttDevice) {
        let claimed = match crate::commands::claim_queued(self.shared.registry.pool(), device.device_id).await {
            Ok(c) => c,
            Err(error) => {
                tracing::warn!(%error, "reading queued commands failed");
                return;
            }
        };
        lock(&self.queued).remove(&device.device_id);
        let protocol = device.protocol.parse::<Protocol>().ok();
        for (id, json) in claimed {
            let command = serde_json::from_value::<Command>(json.clone()).ok();
            let body = serde_json::json!({ "id": id, "command": json });
            self.out
                .publish(topics::commands(&device.identifier), body.to_string().into_bytes())
                .await;
            tracing::info!(device = device.device_id, command = id, "command sent over MQTT");
            let (Some(protocol), Some(command)) = (protocol, command) else {
                continue;
            };
            let encoded = {
                let mut codecs = lock(&self.codecs);
                let key = (device.device_id, protocol);
                if !codecs.contains_key(&key)
                    && let Ok(c) = protocol.codec(Transport::Tcp)
                {
                    codecs.insert(key, c);
                }
                codecs
                    .get(&key)
                    .map(|c| c.encode_command(&device.identifier, &command, &DecodeContext::now()))
            };
            if let Some(Ok(bytes)) = encoded {
                self.out.publish(topics::commands_raw(&device.identifier), bytes).await;
            }
        }
    }
}

fn count(kind: &'static str, outcome: &'static str) {
    metrics::counter!(m::MQTT_MESSAGES, "kind" => kind, "outcome" => outcome).increment(1);
}

async fn acker(core: Arc<Core>, mut rx: mpsc::Receiver<PendingAckBox>) {
    loop {
        let next = tokio::select! {
            biased;
            n = rx.recv() => n,
            // On shutdown take nothing new but still send the acks already owed.
            _ = core.shared.cancel.cancelled(), if !rx.is_closed() => {
                rx.close();
                continue;
            }
        };
        let Some(PendingAckBox(p)) = next else { return };
        if let Some(receipt) = p.receipt
            && let Err(error) = receipt.await
        {
            count(p.kind, "not_durable");
            metrics::counter!(m::ACKS_WITHHELD, "protocol" => "mqtt", "reason" => "not_durable").increment(1);
            tracing::warn!(%error, topic = p.topic, "not durable: no ack, the device resends");
            continue;
        }
        core.stored.fetch_add(1, Ordering::Relaxed);
        count(p.kind, "ok");
        if !p.payload.is_empty() {
            core.out.publish(p.topic, p.payload).await;
            metrics::histogram!(m::ACK_LATENCY, "protocol" => "mqtt").record(p.received.elapsed().as_secs_f64());
        }
        core.puback(p.manual).await;
    }
}

/// Asks the database which devices have queued commands and delivers to those online.
async fn poll_commands(core: Arc<Core>) {
    let mut tick = tokio::time::interval(core.shared.config.command_poll());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = core.shared.cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Some(ttl) = core.online_for {
            lock(&core.online).retain(|_, (_, at)| at.elapsed() < ttl);
        }
        if lock(&core.online).is_empty() {
            continue;
        }
        let queued: Vec<i64> =
            match sqlx::query_scalar("SELECT DISTINCT device_id FROM device_commands WHERE status = 'queued'")
                .fetch_all(core.shared.registry.pool())
                .await
            {
                Ok(q) => q,
                Err(error) => {
                    tracing::warn!(%error, "command poll failed");
                    continue;
                }
            };
        *lock(&core.queued) = queued.iter().copied().collect();
        let ready: Vec<MqttDevice> = {
            let online = lock(&core.online);
            queued
                .iter()
                .filter_map(|d| online.get(d).map(|(dev, _)| dev.clone()))
                .collect()
        };
        for d in ready {
            core.deliver(&d).await;
        }
    }
}
