//! A fleet: N devices, a protocol mix, deadlines, stats, ground truth, progress.
//!
//! [`Fleet::start`] is the library entry point the end-to-end tests use: it spawns the
//! devices and returns a handle to watch counters, wait for acks, and collect the
//! summary and ground truth. `clutch sim run` is the same plus a progress bar.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use protocols::{Protocol, Transport};
use rand::{Rng as _, RngCore as _, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::device::{Deadlines, DeviceConfig, TruthSink, run_device};
use crate::scenario::GroundTruth;
use crate::stats::{Stats, Summary};
use crate::track::TrackConfig;

/// One entry of the protocol mix.
#[derive(Debug, Clone, PartialEq)]
pub struct MixEntry {
    pub protocol: Protocol,
    pub transport: Transport,
    pub weight: u32,
    /// Where its devices connect.
    pub target: SocketAddr,
    /// Publish to an MQTT broker at `target` instead of using `transport`.
    pub mqtt: Option<crate::mqtt::MqttPayload>,
    /// OsmAnd: POST JSON bodies instead of GET query strings.
    pub osmand_json: bool,
}

impl MixEntry {
    /// `protocol` over its usual transport to `target`, weight 1.
    pub fn new(protocol: Protocol, target: SocketAddr) -> MixEntry {
        MixEntry {
            protocol,
            transport: protocol.transports()[0],
            weight: 1,
            target,
            mqtt: None,
            osmand_json: false,
        }
    }
}

/// A fleet run.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    pub devices: usize,
    pub mix: Vec<MixEntry>,
    /// Real time between one device's fixes.
    pub interval: Duration,
    pub duration: Duration,
    /// After `duration`, how long devices keep trying to deliver their backlog.
    pub drain: Duration,
    pub time_scale: f64,
    pub batch: usize,
    pub ack_timeout: Duration,
    pub heartbeat: Duration,
    pub seed: u64,
    pub start: DateTime<Utc>,
    /// Spread logins over this long (a fleet powering up at once is a SYN flood).
    pub ramp: Duration,
    /// Source addresses to spread connections over (empty: let the OS pick).
    pub source_ips: Vec<IpAddr>,
    pub track: Arc<TrackConfig>,
    /// MQTT devices' ack mode and credentials.
    pub mqtt: crate::mqtt::MqttSettings,
}

impl FleetConfig {
    pub fn new(devices: usize, protocol: Protocol, target: SocketAddr) -> FleetConfig {
        FleetConfig {
            devices,
            mix: vec![MixEntry::new(protocol, target)],
            interval: Duration::from_secs(1),
            duration: Duration::from_secs(10),
            drain: Duration::from_secs(5),
            time_scale: 1.0,
            batch: 1,
            ack_timeout: Duration::from_secs(10),
            heartbeat: Duration::from_secs(60),
            seed: 1,
            start: Utc::now(),
            ramp: Duration::ZERO,
            source_ips: Vec::new(),
            track: Arc::new(TrackConfig::default()),
            mqtt: crate::mqtt::MqttSettings::default(),
        }
    }

    /// The ids devices get: valid (Luhn) 15-digit IMEIs derived from the seed, so a
    /// rerun with the same seed reuses the same registered devices.
    pub fn device_id(&self, index: usize) -> String {
        imei(self.seed, index)
    }

    /// Loopback source addresses for `devices` connections to one target: about 20 000
    /// ephemeral ports are safe per source address, so spread beyond that.
    pub fn loopback_sources(devices: usize) -> Vec<IpAddr> {
        let n = devices.div_ceil(20_000).clamp(1, 250);
        if n == 1 {
            return Vec::new();
        }
        (0..n)
            .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + i as u8)))
            .collect()
    }
}

/// A 15-digit IMEI with a valid Luhn check digit.
pub fn imei(seed: u64, index: usize) -> String {
    let base = ChaCha8Rng::seed_from_u64(seed).next_u64() % 900_000_000;
    let body = format!("35{:012}", (base * 1000 + index as u64) % 1_000_000_000_000);
    let digits: Vec<u32> = body.chars().filter_map(|c| c.to_digit(10)).collect();
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 0 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    format!("{body}{}", (10 - sum % 10) % 10)
}

/// A running fleet.
#[derive(Debug)]
pub struct Fleet {
    pub stats: Arc<Stats>,
    pub ids: Vec<String>,
    truth: TruthSink,
    tasks: JoinSet<()>,
    started: Instant,
    seed: u64,
}

impl Fleet {
    /// Spawn the devices. Needs a tokio runtime.
    pub fn start(cfg: &FleetConfig) -> Fleet {
        let stats = Arc::new(Stats::default());
        let truth: TruthSink = Arc::new(Mutex::new(Vec::new()));
        let started = Instant::now();
        let deadlines = Deadlines {
            generate_until: started + cfg.ramp + cfg.duration,
            hard_stop: started + cfg.ramp + cfg.duration + cfg.drain,
        };
        let total_weight: u64 = cfg.mix.iter().map(|m| u64::from(m.weight.max(1))).sum::<u64>().max(1);
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let mut tasks = JoinSet::new();
        let mut ids = Vec::with_capacity(cfg.devices);
        for i in 0..cfg.devices {
            // Deterministic weighted assignment: device i takes the slot i falls in.
            let slot = (i as u64 * total_weight / cfg.devices.max(1) as u64) % total_weight;
            let mut acc = 0;
            let entry = cfg
                .mix
                .iter()
                .find(|m| {
                    acc += u64::from(m.weight.max(1));
                    slot < acc
                })
                .unwrap_or(&cfg.mix[0]);
            let id = cfg.device_id(i);
            ids.push(id.clone());
            let mut d = DeviceConfig::new(id, entry.protocol, entry.target);
            d.transport = entry.transport;
            d.mqtt = entry.mqtt;
            d.mqtt_settings = cfg.mqtt.clone();
            d.osmand_json = entry.osmand_json;
            d.interval = cfg.interval;
            d.time_scale = cfg.time_scale;
            d.batch = cfg.batch.max(1);
            d.ack_timeout = cfg.ack_timeout;
            d.heartbeat = cfg.heartbeat;
            d.start = cfg.start;
            // One draw per device, in device order: device i's seed depends only on the
            // fleet seed and i.
            d.seed = rng.random();
            d.track = cfg.track.clone();
            d.source_ip = (!cfg.source_ips.is_empty()).then(|| cfg.source_ips[i % cfg.source_ips.len()]);
            d.start_delay = if cfg.devices > 1 {
                cfg.ramp.mul_f64(i as f64 / cfg.devices as f64)
            } else {
                Duration::ZERO
            };
            tasks.spawn(run_device(d, deadlines, stats.clone(), truth.clone()));
        }
        Fleet {
            stats,
            ids,
            truth,
            tasks,
            started,
            seed: cfg.seed,
        }
    }

    /// Wait until at least `n` records are acked, or `timeout`. Returns whether they were.
    pub async fn wait_for_acks(&self, n: u64, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if self.stats.records_acked.load(Relaxed) >= n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.stats.records_acked.load(Relaxed) >= n
    }

    /// Wait for every device to finish. With `progress` (the run's expected length), an
    /// `indicatif` bar on stderr when it is a terminal, or a line every 10 s otherwise
    /// (logs).
    pub async fn wait(mut self, progress: Option<Duration>) -> (Summary, Vec<GroundTruth>) {
        let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let bar = progress.filter(|_| tty).map(|total| {
            let bar = ProgressBar::with_draw_target(Some(total.as_secs().max(1)), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("[{bar:24}] {pos:>4}s/{len}s  {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("#>-"),
            );
            bar
        });
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                r = self.tasks.join_next() => match r {
                    None => break,
                    Some(Err(e)) => tracing::error!("device task failed: {e}"),
                    Some(Ok(())) => {}
                },
                _ = tick.tick(), if progress.is_some() => {
                    let s = &self.stats;
                    let el = self.started.elapsed().as_secs_f64();
                    let acked = s.records_acked.load(Relaxed) + s.records_unacked_by_protocol.load(Relaxed);
                    let msg = format!(
                        "{} connected  sent {}  acked {}  resent {}  {:.0} records/s",
                        s.connected.load(Relaxed),
                        s.records_sent.load(Relaxed),
                        acked,
                        s.records_resent.load(Relaxed),
                        acked as f64 / el.max(1e-3),
                    );
                    match &bar {
                        Some(bar) => {
                            bar.set_position((el as u64).min(bar.length().unwrap_or(u64::MAX)));
                            bar.set_message(msg);
                        }
                        None if (el as u64).is_multiple_of(10) && el >= 1.0 => {
                            let total = progress.unwrap_or_default().as_secs_f64();
                            let mut err = std::io::stderr().lock();
                            let _ = writeln!(err, "{el:>4.0}s/{total:.0}s  {msg}");
                        }
                        None => {}
                    }
                }
            }
        }
        if let Some(bar) = bar {
            // The summary that follows says it all; leave no half line behind.
            bar.finish_and_clear();
        }
        let summary = self.stats.summary(self.seed, self.started.elapsed());
        let mut truth = std::mem::take(&mut *self.truth.lock().unwrap_or_else(|e| e.into_inner()));
        truth.sort_by(|a, b| (a.start, &a.device, &a.kind).cmp(&(b.start, &b.device, &b.kind)));
        (summary, truth)
    }

    /// Stop every device now.
    pub fn abort(&mut self) {
        self.tasks.abort_all();
    }
}

/// Write ground truth as JSON lines.
pub fn write_truth(path: &std::path::Path, truth: &[GroundTruth]) -> std::io::Result<()> {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    for g in truth {
        serde_json::to_writer(&mut w, g)?;
        w.write_all(b"\n")?;
    }
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imeis_are_luhn_valid_and_distinct() {
        let a: Vec<String> = (0..1000).map(|i| imei(5, i)).collect();
        let mut b = a.clone();
        b.sort();
        b.dedup();
        assert_eq!(b.len(), 1000);
        assert!(a.iter().all(|s| s.len() == 15));
        assert_eq!(imei(5, 3), imei(5, 3));
    }

    #[test]
    fn sources_spread_past_20k() {
        assert!(FleetConfig::loopback_sources(10_000).is_empty());
        assert_eq!(FleetConfig::loopback_sources(50_000).len(), 3);
    }
}
