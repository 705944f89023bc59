//! One simulated tracker's firmware: buffer, batch, send, wait for the ack, resend what
//! was not acked, reconnect with exponential backoff and jitter, heartbeats, downlink.
//!
//! The device is one task running one loop. Records come from its [`Track`] on a timer;
//! sending is stop-and-wait (one frame in flight, as most trackers do), so the records
//! in flight are always the oldest in the buffer and an ack simply removes them. A missed
//! ack leaves them in place to be sent again; two missed acks in a row, a closed socket
//! or repeated garbage make the device drop the connection and reconnect, as firmware
//! does. Nothing the server sends can panic the device: every answer is framed by
//! [`crate::ack`] and the rest is counted.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use protocols::{Codec, DeviceEncoder, Message, MessageKind, Position, Protocol, Transport};
use rand::{Rng as _, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::time::{Instant, sleep_until};

use crate::ack::{Expect, Match, expect_for};
use crate::downlink;
use crate::mqtt::{CommandReply, MqttPayload, MqttSettings};
use crate::scenario::{DeviceAction, GroundTruth};
use crate::stats::{Stats, add, inc};
use crate::track::{Track, TrackConfig};
use crate::transport::Link;

/// How one device behaves.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// IMEI or vendor id.
    pub id: String,
    pub protocol: Protocol,
    pub transport: Transport,
    pub target: SocketAddr,
    pub source_ip: Option<IpAddr>,
    /// Real time between fixes.
    pub interval: Duration,
    /// Simulated seconds per real second (1 = real time; 60 = a minute a second).
    pub time_scale: f64,
    /// Records collected before a send, and the most one frame carries.
    pub batch: usize,
    pub ack_timeout: Duration,
    pub heartbeat: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub connect_timeout: Duration,
    /// Records kept while the server is unreachable; the oldest go first when full.
    pub max_buffer: usize,
    /// Simulated start time.
    pub start: DateTime<Utc>,
    pub seed: u64,
    /// Delay before the first connection (spreads a fleet's logins).
    pub start_delay: Duration,
    pub track: Arc<TrackConfig>,
    /// Publish to an MQTT broker at `target` instead of the protocol's own transport.
    pub mqtt: Option<MqttPayload>,
    /// MQTT acks and credentials (when `mqtt` is set).
    pub mqtt_settings: MqttSettings,
    /// OsmAnd: POST JSON bodies instead of GET query strings.
    pub osmand_json: bool,
}

impl DeviceConfig {
    pub fn new(id: impl Into<String>, protocol: Protocol, target: SocketAddr) -> DeviceConfig {
        DeviceConfig {
            id: id.into(),
            protocol,
            transport: protocol.transports()[0],
            target,
            source_ip: None,
            interval: Duration::from_secs(10),
            time_scale: 1.0,
            batch: 1,
            ack_timeout: Duration::from_secs(10),
            heartbeat: Duration::from_secs(60),
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            max_buffer: 10_000,
            start: Utc::now(),
            seed: 0,
            start_delay: Duration::ZERO,
            track: Arc::new(TrackConfig::default()),
            mqtt: None,
            mqtt_settings: MqttSettings::default(),
            osmand_json: false,
        }
    }
}

/// The device-side encoder `protocol` uses over `transport`; `osmand_json` picks OsmAnd's
/// JSON POST bodies over its GET query strings.
pub fn encoder(
    protocol: Protocol,
    transport: Transport,
    osmand_json: bool,
) -> Result<Box<dyn DeviceEncoder>, protocols::UnsupportedTransport> {
    if protocol == Protocol::Osmand && osmand_json && transport == Transport::Http {
        return Ok(Box::new(protocols::osmand::OsmandDevice::json()));
    }
    protocol.device_encoder(transport)
}

/// When a device stops.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// Stop producing records.
    pub generate_until: Instant,
    /// Stop trying to deliver the backlog.
    pub hard_stop: Instant,
}

/// Where ground truth goes.
pub type TruthSink = Arc<Mutex<Vec<GroundTruth>>>;

#[derive(Debug)]
struct Record {
    pos: Position,
    sends: u32,
}

#[derive(Debug)]
struct InFlight {
    records: usize,
    expect: Expect,
    sent_at: Instant,
    deadline: Instant,
    login: bool,
}

struct Conn {
    link: Link,
    mirror: Box<dyn Codec>,
    rx: Vec<u8>,
    garbage_in_row: u32,
}

/// Run one device to its deadlines. Never panics on anything the server does.
pub async fn run_device(cfg: DeviceConfig, deadlines: Deadlines, stats: Arc<Stats>, truth: TruthSink) {
    inc(&stats.devices);
    let (mut enc, batches) = match (
        encoder(cfg.protocol, cfg.transport, cfg.osmand_json),
        cfg.protocol.codec(cfg.transport),
    ) {
        (Ok(e), Ok(_)) => (e, batches(cfg.protocol, cfg.transport, cfg.osmand_json, &cfg.id)),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(device = %cfg.id, "{e}");
            inc(&stats.encode_errors);
            return;
        }
    };
    let mut dev = Device {
        track: Track::new(&cfg.id, &cfg.track, cfg.start, cfg.seed),
        rng: ChaCha8Rng::seed_from_u64(cfg.seed ^ 0xD3C1_CE00),
        cfg,
        stats,
        truth,
        buffer: VecDeque::new(),
        conn: None,
        inflight: None,
        backoff: Duration::ZERO,
        missed_acks: 0,
        offline_until: None,
        malformed_pending: 0,
        batches,
        seq: 0,
        last_fix: None,
    };
    dev.backoff = dev.cfg.backoff_min;
    dev.run(&mut *enc, deadlines).await;
}

struct Device {
    cfg: DeviceConfig,
    stats: Arc<Stats>,
    truth: TruthSink,
    track: Track,
    rng: ChaCha8Rng,
    buffer: VecDeque<Record>,
    conn: Option<Conn>,
    inflight: Option<InFlight>,
    backoff: Duration,
    missed_acks: u32,
    offline_until: Option<DateTime<Utc>>,
    malformed_pending: u32,
    /// Whether one frame can carry several records in this protocol.
    batches: bool,
    /// The last MQTT telemetry publish's `seq` (per device, across reconnects).
    seq: u64,
    /// The last reading (answers a `locate` command).
    last_fix: Option<Position>,
}

impl Device {
    async fn run(&mut self, enc: &mut dyn DeviceEncoder, dl: Deadlines) {
        let start = Instant::now() + self.cfg.start_delay;
        let mut next_fix = start;
        let mut next_connect = start;
        let mut last_tx = Instant::now();
        let mut scratch = vec![0u8; 4096];
        loop {
            let now = Instant::now();
            let generating = now < dl.generate_until;
            if now >= dl.hard_stop || (!generating && self.buffer.is_empty() && self.inflight.is_none()) {
                break;
            }
            let offline = self.offline_until.is_some_and(|u| self.track.now() < u);
            if !offline {
                self.offline_until = None;
            }
            if offline && self.conn.is_some() {
                self.disconnect("scenario: device offline");
            }

            // Connect when there is something to do.
            if self.conn.is_none() && !offline && now >= next_connect && now >= start {
                match self.connect(enc).await {
                    Ok(()) => {
                        self.backoff = self.cfg.backoff_min;
                        last_tx = Instant::now();
                    }
                    Err(why) => {
                        tracing::debug!(device = %self.cfg.id, "connect failed: {why}");
                        inc(&self.stats.connect_failures);
                        next_connect = Instant::now() + self.next_backoff();
                    }
                }
            }

            // Send when idle: malformed frames first (the scenario asked), then records,
            // then a heartbeat if the line has been quiet.
            if self.conn.is_some() && self.inflight.is_none() {
                if self.malformed_pending > 0 {
                    self.malformed_pending -= 1;
                    self.send_malformed(enc).await;
                    last_tx = Instant::now();
                    continue;
                }
                let backlog = self.buffer.iter().any(|r| r.sends > 0) || self.buffer.len() > self.cfg.batch;
                if !self.buffer.is_empty() && (self.buffer.len() >= self.cfg.batch || backlog || !generating) {
                    self.send_records(enc).await;
                    last_tx = Instant::now();
                    continue;
                }
                if now >= last_tx + self.cfg.heartbeat {
                    self.send_heartbeat(enc).await;
                    last_tx = Instant::now();
                    continue;
                }
            }

            let inflight_deadline = self.inflight.as_ref().map(|f| f.deadline);
            let heartbeat_at = last_tx + self.cfg.heartbeat;
            let connected = self.conn.is_some();
            let idle = self.inflight.is_none();
            let conn = &mut self.conn;
            tokio::select! {
                _ = sleep_until(next_fix.min(dl.generate_until)), if generating => {
                    if next_fix >= dl.generate_until {
                        // Woken by the deadline (or the fix falls on it): produce nothing
                        // more, deliver what is buffered, and stop.
                        continue;
                    }
                    next_fix += self.cfg.interval;
                    // A device that fell behind (overloaded machine) skips, it does not burst.
                    if next_fix < Instant::now() {
                        next_fix = Instant::now() + self.cfg.interval;
                    }
                    // The interval can change (a set_interval command); the simulated
                    // step follows it.
                    self.tick(self.cfg.interval.as_secs_f64() * self.cfg.time_scale);
                }
                r = async {
                    match conn.as_mut() {
                        Some(c) => c.link.recv(&mut scratch, &mut c.rx).await,
                        None => std::future::pending().await,
                    }
                }, if connected => {
                    match r {
                        Ok(0) => {
                            let why = if self.inflight.is_some() { "server closed the connection before acking" } else { "server closed the connection" };
                            if self.inflight.as_ref().is_some_and(|f| f.login) {
                                inc(&self.stats.rejected);
                            }
                            tracing::warn!(device = %self.cfg.id, "{why}; reconnecting with backoff");
                            self.disconnect(why);
                            next_connect = Instant::now() + self.next_backoff();
                        }
                        Ok(_) => {
                            if !self.on_bytes(enc).await {
                                next_connect = Instant::now() + self.next_backoff();
                            }
                        }
                        Err(e) => {
                            tracing::warn!(device = %self.cfg.id, "read error: {e}; reconnecting with backoff");
                            self.disconnect(&format!("read error: {e}"));
                            next_connect = Instant::now() + self.next_backoff();
                        }
                    }
                }
                _ = sleep_until(inflight_deadline.unwrap_or(dl.hard_stop)), if inflight_deadline.is_some() => {
                    inc(&self.stats.ack_timeouts);
                    let f = self.inflight.take();
                    self.missed_acks += 1;
                    tracing::debug!(device = %self.cfg.id, "no ack within {:?}", self.cfg.ack_timeout);
                    if self.missed_acks >= 2 || f.is_some_and(|f| f.login) {
                        self.disconnect("acks missing");
                        next_connect = Instant::now() + self.next_backoff();
                    }
                }
                _ = sleep_until(next_connect), if !connected => {}
                _ = sleep_until(heartbeat_at), if connected && idle => {}
                _ = sleep_until(dl.hard_stop) => {}
            }
        }
        if self.conn.is_some() {
            self.disconnect("run over");
        }
        let left = self.buffer.len();
        if left > 0 {
            tracing::info!(device = %self.cfg.id, "{left} records never acked");
        }
        let last = self.track.finish();
        self.push_truth(last);
    }

    fn next_backoff(&mut self) -> Duration {
        // Full jitter: a fleet that lost its server must not reconnect in lockstep.
        let b = self.backoff;
        self.backoff = (self.backoff * 2).min(self.cfg.backoff_max);
        b.mul_f64(self.rng.random_range(0.5..1.0))
    }

    fn push_truth(&self, t: Vec<GroundTruth>) {
        if !t.is_empty()
            && let Ok(mut sink) = self.truth.lock()
        {
            sink.extend(t);
        }
    }

    fn tick(&mut self, sim_step: f64) {
        for action in self.track.advance(sim_step) {
            match action {
                DeviceAction::GoOffline { until } => self.offline_until = Some(until),
                DeviceAction::SendMalformed { count } => self.malformed_pending += count,
            }
        }
        let pos = self.track.read();
        self.last_fix = Some(pos.clone());
        let truth = self.track.take_truth();
        self.push_truth(truth);
        inc(&self.stats.records_generated);
        if self.buffer.len() >= self.cfg.max_buffer {
            // Never drop what is in flight: the ack would then remove the wrong records.
            let keep = self.inflight.as_ref().map_or(0, |f| f.records);
            if self.buffer.len() > keep {
                self.buffer.remove(keep);
                inc(&self.stats.records_dropped);
            }
        }
        self.buffer.push_back(Record { pos, sends: 0 });
    }

    fn disconnect(&mut self, why: &str) {
        if self.conn.take().is_some() {
            tracing::debug!(device = %self.cfg.id, "disconnect: {why}");
            inc(&self.stats.disconnects);
            self.stats.connected.fetch_sub(1, Relaxed);
        }
        self.inflight = None;
        self.missed_acks = 0;
    }

    async fn connect(&mut self, enc: &mut dyn DeviceEncoder) -> Result<(), String> {
        let link = match self.cfg.mqtt {
            Some(payload) => {
                // The MQTT CONNECT is the login; connecting waits for the broker's CONNACK.
                let keep_alive = Duration::from_secs(self.cfg.heartbeat.as_secs().clamp(1, 32_767) * 2);
                let topic = payload.topic(&self.cfg.id, self.cfg.protocol);
                Link::connect_mqtt(
                    &self.cfg.id,
                    self.cfg.target,
                    self.cfg.connect_timeout,
                    keep_alive,
                    topic,
                    &self.cfg.mqtt_settings,
                )
                .await
            }
            None => {
                Link::connect(
                    self.cfg.transport,
                    self.cfg.target,
                    self.cfg.source_ip,
                    self.cfg.connect_timeout,
                )
                .await
            }
        }
        .map_err(|e| e.to_string())?;
        let mirror = self.cfg.protocol.codec(self.cfg.transport).map_err(|e| e.to_string())?;
        self.conn = Some(Conn {
            link,
            mirror,
            rx: Vec::new(),
            garbage_in_row: 0,
        });
        inc(&self.stats.connects);
        let now_connected = self.stats.connected.fetch_add(1, Relaxed) + 1;
        self.stats.peak_connected.fetch_max(now_connected, Relaxed);
        if self.cfg.mqtt.is_some() {
            return Ok(());
        }
        // Login, where the protocol has one; its ack is awaited like any other.
        let login = Message::new(MessageKind::Login).with_imei(&self.cfg.id);
        if let Ok(frame) = enc.encode(&login) {
            self.transmit(&frame, 0, true).await;
        }
        Ok(())
    }

    /// Send an MQTT PINGREQ and await the PINGRESP like an ack.
    fn mqtt_ping(&mut self) {
        let Some(c) = self.conn.as_mut() else { return };
        if c.link.ping() {
            let now = Instant::now();
            self.inflight = Some(InFlight {
                records: 0,
                expect: Expect::Bytes(crate::transport::PINGRESP.to_vec()),
                sent_at: now,
                deadline: now + self.cfg.ack_timeout,
                login: false,
            });
        }
    }

    /// Send a frame, work out its ack, and put it in flight. Over MQTT the frame (or
    /// `json`, for telemetry publishing) is published and the PUBACK is the ack.
    async fn transmit(&mut self, frame: &[u8], records: usize, login: bool) -> bool {
        self.transmit_with(frame, None, records, login).await
    }

    async fn transmit_with(&mut self, frame: &[u8], json: Option<(u64, Vec<u8>)>, records: usize, login: bool) -> bool {
        let Some(c) = self.conn.as_mut() else { return false };
        let wire: &[u8] = match (self.cfg.mqtt, &json) {
            (Some(MqttPayload::Json), Some((_, j))) => j,
            _ => frame,
        };
        let requests = match c.link.send(wire).await {
            Ok(n) => n,
            Err(e) => {
                self.disconnect(&format!("write error: {e}"));
                return false;
            }
        };
        inc(&self.stats.frames_sent);
        let (mut expect, _, errors) =
            expect_for(self.cfg.protocol, self.cfg.transport, &mut *c.mirror, frame, requests);
        if let Some(ack) = c.link.link_ack() {
            expect = Expect::Bytes(ack.to_vec());
        } else if c.link.durable_acks() {
            expect = match &json {
                // The server publishes {"seq", "records"} on clutch/<id>/ack once stored.
                Some((seq, _)) if self.cfg.mqtt == Some(MqttPayload::Json) => Expect::JsonSeq(*seq),
                // Raw frames: the protocol's own ack bytes on clutch/<id>/ack; a frame the
                // protocol acks nothing for has only the broker's PUBACK to wait for.
                _ if expect == Expect::Nothing => {
                    c.link.await_puback();
                    Expect::Bytes(crate::transport::PUBACK.to_vec())
                }
                _ => expect,
            };
        }
        if errors > 0 {
            add(&self.stats.self_decode_errors, errors);
            tracing::warn!(device = %self.cfg.id, frame = %hex::encode(&frame[..frame.len().min(64)]), "our own frame does not decode with the server codec");
        }
        let now = Instant::now();
        if expect == Expect::Nothing {
            // Nothing will come back: the records are as delivered as they will ever be.
            add(&self.stats.records_unacked_by_protocol, records);
            self.buffer.drain(..records.min(self.buffer.len()));
        } else {
            self.inflight = Some(InFlight {
                records,
                expect,
                sent_at: now,
                deadline: now + self.cfg.ack_timeout,
                login,
            });
        }
        true
    }

    async fn send_records(&mut self, enc: &mut dyn DeviceEncoder) {
        let n = if self.batches {
            self.cfg.batch.min(self.buffer.len())
        } else {
            1
        };
        let positions: Vec<Position> = self.buffer.iter().take(n).map(|r| r.pos.clone()).collect();
        let msg = Message::new(MessageKind::Position)
            .with_imei(&self.cfg.id)
            .with_positions(positions);
        let frame = match enc.encode(&msg) {
            Ok(f) => f,
            Err(e) => {
                // A record this protocol cannot carry: drop it, or it blocks the buffer.
                tracing::warn!(device = %self.cfg.id, "cannot encode record: {e}");
                inc(&self.stats.encode_errors);
                self.buffer.drain(..n);
                return;
            }
        };
        let resent = self.buffer.iter().take(n).filter(|r| r.sends > 0).count();
        for r in self.buffer.iter_mut().take(n) {
            r.sends += 1;
        }
        add(&self.stats.records_sent, n);
        add(&self.stats.records_resent, resent);
        let json = (self.cfg.mqtt == Some(MqttPayload::Json)).then(|| {
            self.seq += 1;
            let body = crate::mqtt::Telemetry {
                id: self.cfg.id.clone(),
                seq: self.seq,
                positions: self.buffer.iter().take(n).map(|r| &r.pos).collect(),
            };
            (self.seq, serde_json::to_vec(&body).unwrap_or_default())
        });
        self.transmit_with(&frame, json, n, false).await;
    }

    async fn send_heartbeat(&mut self, enc: &mut dyn DeviceEncoder) {
        if self.cfg.mqtt.is_some() {
            inc(&self.stats.heartbeats);
            self.mqtt_ping();
            return;
        }
        let mut msg = Message::new(MessageKind::Heartbeat).with_imei(&self.cfg.id);
        // Protocols without a heartbeat send their last fix instead; give them one.
        msg.positions = vec![self.track.read()];
        msg.attributes.power_v = Some(self.track.vehicle.state.power_v);
        match enc.encode(&msg) {
            Ok(frame) => {
                inc(&self.stats.heartbeats);
                self.transmit(&frame, 0, false).await;
            }
            Err(e) => tracing::debug!(device = %self.cfg.id, "no heartbeat in this protocol: {e}"),
        }
    }

    async fn send_malformed(&mut self, enc: &mut dyn DeviceEncoder) {
        let msg = Message::new(MessageKind::Position)
            .with_imei(&self.cfg.id)
            .with_positions(vec![self.track.read()]);
        let mut frame = enc.encode(&msg).unwrap_or_else(|_| b"garbage".to_vec());
        // A whole frame with one byte corrupted in the middle: the envelope still frames,
        // so the server must catch it by checksum or field syntax, and a stream server
        // stays in sync for the frames after it.
        let mid = frame.len() / 2;
        if let Some(b) = frame.get_mut(mid) {
            *b ^= 0x5A;
        }
        inc(&self.stats.malformed_sent);
        let Some(c) = self.conn.as_mut() else { return };
        if let Err(e) = c.link.send(&frame).await {
            self.disconnect(&format!("write error: {e}"));
            return;
        }
        // The broker acks the publish whatever its payload; wait for that like any ack.
        if let Some(ack) = c.link.link_ack() {
            let now = Instant::now();
            self.inflight = Some(InFlight {
                records: 0,
                expect: Expect::Bytes(ack.to_vec()),
                sent_at: now,
                deadline: now + self.cfg.ack_timeout,
                login: false,
            });
        }
    }

    /// Answer the commands that came over MQTT. Returns false when the connection was
    /// dropped.
    fn on_mqtt_commands(&mut self) -> bool {
        let Some(c) = self.conn.as_mut() else { return false };
        for cmd in c.link.take_commands() {
            let req = match cmd {
                Ok(req) => req,
                Err(why) => {
                    inc(&self.stats.garbage);
                    tracing::warn!(device = %self.cfg.id, "{why}");
                    continue;
                }
            };
            let (result, interval) = downlink::mqtt_result(&req.command, self.last_fix.as_ref());
            if let Some(s) = interval {
                // Device seconds are simulated time; the loop's interval is real time.
                self.cfg.interval = Duration::from_secs_f64(f64::from(s) / self.cfg.time_scale.max(1e-9));
            }
            tracing::debug!(device = %self.cfg.id, command = ?req.command, %result, "command over MQTT");
            if let Err(e) = c.link.reply(&CommandReply { id: req.id, result }) {
                tracing::warn!(device = %self.cfg.id, "cannot publish the command reply: {e}");
                self.disconnect(&format!("publish error: {e}"));
                return false;
            }
            inc(&self.stats.commands_answered);
        }
        true
    }

    /// Handle bytes in the receive buffer. Returns false when the connection was dropped.
    async fn on_bytes(&mut self, enc: &mut dyn DeviceEncoder) -> bool {
        if self.cfg.mqtt.is_some() && !self.on_mqtt_commands() {
            return false;
        }
        loop {
            let Some(c) = self.conn.as_mut() else { return false };
            if c.rx.is_empty() {
                return true;
            }
            let verdict = self.inflight.as_ref().map_or(Match::Other, |f| f.expect.check(&c.rx));
            match verdict {
                Match::Partial => return true,
                Match::Acked(n) => {
                    c.rx.drain(..n.min(c.rx.len()));
                    c.garbage_in_row = 0;
                    if let Some(f) = self.inflight.take() {
                        self.stats.ack_latency.record(f.sent_at.elapsed());
                        add(&self.stats.records_acked, f.records);
                        self.buffer.drain(..f.records.min(self.buffer.len()));
                    }
                    self.missed_acks = 0;
                }
                Match::Stale(n) => {
                    c.rx.drain(..n.min(c.rx.len()));
                    tracing::debug!(device = %self.cfg.id, "late ack of a frame given up on");
                }
                Match::Refused(n) => {
                    c.rx.drain(..n.min(c.rx.len()));
                    inc(&self.stats.rejected);
                    let login = self.inflight.take().is_some_and(|f| f.login);
                    tracing::info!(device = %self.cfg.id, "server refused a frame");
                    if login {
                        self.disconnect("login refused");
                        return false;
                    }
                }
                Match::Other => {
                    if let Some(d) = downlink::recognise(self.cfg.protocol, &c.rx) {
                        c.rx.clear();
                        let reply = downlink::response(&self.cfg.id, &d);
                        match enc.encode(&reply) {
                            Ok(frame) => {
                                inc(&self.stats.commands_answered);
                                let sent = c.link.send(&frame).await;
                                let _ = c.mirror.decode(&frame, &protocols::DecodeContext::now());
                                if let Err(e) = sent {
                                    self.disconnect(&format!("write error: {e}"));
                                    return false;
                                }
                            }
                            Err(e) => tracing::info!(device = %self.cfg.id, "cannot answer command: {e}"),
                        }
                        continue;
                    }
                    inc(&self.stats.garbage);
                    tracing::warn!(device = %self.cfg.id, bytes = %hex::encode(&c.rx[..c.rx.len().min(32)]), "unexpected bytes from server");
                    c.rx.clear();
                    c.garbage_in_row += 1;
                    if c.garbage_in_row >= 3 {
                        self.disconnect("server keeps sending garbage");
                        return false;
                    }
                    return true;
                }
            }
        }
    }
}

/// Whether a frame of this protocol carries several records: encode two and see what
/// the server codec reads back.
pub fn batches(protocol: Protocol, transport: Transport, osmand_json: bool, id: &str) -> bool {
    let (Ok(mut enc), Ok(mut codec)) = (encoder(protocol, transport, osmand_json), protocol.codec(transport)) else {
        return false;
    };
    let ctx = protocols::DecodeContext::now();
    if let Ok(login) = enc.encode(&Message::new(MessageKind::Login).with_imei(id)) {
        let _ = protocols::decode_all(&mut *codec, &login, &ctx);
    }
    let t = Utc::now().with_timezone(&Utc);
    let t = t - chrono::Duration::nanoseconds(i64::from(chrono::Timelike::nanosecond(&t)));
    let p = |s: i64| {
        let mut p = Position::new(t + chrono::Duration::seconds(s), 54.7, 25.3, true);
        p.speed_kmh = Some(10.0);
        p.course_deg = Some(90.0);
        p.satellites = Some(8);
        p
    };
    let msg = Message::new(MessageKind::Position)
        .with_imei(id)
        .with_positions(vec![p(0), p(1)]);
    let Ok(frame) = enc.encode(&msg) else { return false };
    let (msgs, _) = protocols::decode_all(&mut *codec, &frame, &ctx);
    let n: usize = msgs.iter().map(|m| m.positions.len()).sum();
    // OsmAnd sends one request a line; each line is a record, and it counts as batching.
    n >= 2 && (transport == Transport::Http || frame_count(&*codec, &frame) == 1)
}

fn frame_count(codec: &dyn Codec, frame: &[u8]) -> usize {
    let mut rest = frame;
    let mut n = 0;
    while let protocols::Framing::Frame { end, .. } = codec.frame(rest, true) {
        if end == 0 || end > rest.len() {
            break;
        }
        n += 1;
        rest = &rest[end..];
    }
    n
}
