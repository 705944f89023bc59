//! Traffic without sockets: a fleet's positions (or protocol frames) and its ground truth
//! generated in-process, as fast as the vehicle model steps.
//!
//! This is for analytics tests that need a lot of realistic traffic with known truth,
//! e.g. "no false fuel-theft alarm over 1 000 vehicle-days of noise-only driving":
//!
//! ```
//! use firmware_sim::offline::{OfflineConfig, simulate};
//! use firmware_sim::scenario::Scenario;
//!
//! // Noise only (default noise, no injected events), 2 vehicles × 1 hour, a fix every 30 s.
//! let scenario = Scenario::from_toml("[vehicle]\nignition_cycles = true").unwrap();
//! let mut cfg = OfflineConfig::from_scenario(&scenario, None, 7).unwrap();
//! cfg.devices = 2;
//! cfg.duration = std::time::Duration::from_secs(3600);
//! cfg.interval = std::time::Duration::from_secs(30);
//! let mut sim = simulate(cfg);
//! let samples: Vec<_> = sim.by_ref().collect();
//! assert_eq!(samples.len(), 2 * 120);
//! let truth = sim.into_truth(); // trips, automatic refuels…; never a fuel_theft here
//! assert!(truth.iter().all(|g| g.kind != "fuel_theft"));
//! ```
//!
//! Devices are simulated one after the other (each one's whole period, then the next),
//! so memory stays flat however long the run. Ids and per-device seeds are drawn exactly
//! as a [`crate::run::Fleet`] with the same seed draws them, so device `i` drives the
//! same roads offline as in a live run (live timing aside). `interval` is simulated time:
//! a live run's `interval × time_scale`.
//!
//! Scenario device actions have no socket to act on here: during an `offline` event the
//! positions are still produced (a real device buffers them and sends the backlog later,
//! with the same fix times), and `malformed` frames are not produced; both stay in the
//! ground truth.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use protocols::{
    DeviceEncoder, EncodeError, Message, MessageKind, Position, Protocol, Transport, UnsupportedTransport,
};
use rand::{Rng as _, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::scenario::{GroundTruth, Scenario};
use crate::track::{Track, TrackConfig};

/// What to simulate.
#[derive(Debug, Clone)]
pub struct OfflineConfig {
    pub devices: usize,
    /// Simulated time per device.
    pub duration: Duration,
    /// Simulated time between fixes.
    pub interval: Duration,
    /// Simulated start (every device starts then).
    pub start: DateTime<Utc>,
    pub seed: u64,
    pub track: Arc<TrackConfig>,
}

impl OfflineConfig {
    /// One device for one day, a fix every 10 s, starting at midnight UTC today.
    pub fn new(track: TrackConfig, seed: u64) -> OfflineConfig {
        let today = Utc::now()
            .date_naive()
            .and_hms_opt(0, 0, 0)
            .unwrap_or_default()
            .and_utc();
        OfflineConfig {
            devices: 1,
            duration: Duration::from_secs(86_400),
            interval: Duration::from_secs(10),
            start: today,
            seed,
            track: Arc::new(track),
        }
    }

    /// From a scenario (its route file, when it names one, relative to `base_dir`), with
    /// its `start` when it has one.
    pub fn from_scenario(
        scenario: &Scenario,
        base_dir: Option<&std::path::Path>,
        seed: u64,
    ) -> Result<OfflineConfig, String> {
        let mut cfg = OfflineConfig::new(scenario.track_config(base_dir)?, seed);
        if let Some(s) = scenario.start {
            cfg.start = s;
        }
        Ok(cfg)
    }

    /// `devices` vehicles for `days` days each.
    pub fn vehicle_days(mut self, devices: usize, days: u32) -> OfflineConfig {
        self.devices = devices;
        self.duration = Duration::from_secs(86_400 * u64::from(days));
        self
    }

    /// Device `i`'s id: the same IMEI a live fleet with this seed gives it.
    pub fn device_id(&self, i: usize) -> String {
        crate::run::imei(self.seed, i)
    }

    /// Fixes per device.
    pub fn fixes_per_device(&self) -> u64 {
        let step = self.interval.as_secs_f64().max(1e-3);
        (self.duration.as_secs_f64() / step).floor() as u64
    }
}

/// One fix of one device.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Index in the fleet (0-based).
    pub index: usize,
    pub device: Arc<str>,
    pub position: Position,
}

/// A running offline simulation: an iterator of [`Sample`]s, device after device, in
/// time order within a device; the ground truth accumulates as it goes.
#[derive(Debug)]
pub struct Simulation {
    cfg: OfflineConfig,
    seeds: ChaCha8Rng,
    next_device: usize,
    current: Option<Current>,
    truth: Vec<GroundTruth>,
}

#[derive(Debug)]
struct Current {
    index: usize,
    id: Arc<str>,
    track: Track,
    left: u64,
}

/// Start simulating `cfg`. Nothing runs until the iterator is pulled.
pub fn simulate(cfg: OfflineConfig) -> Simulation {
    Simulation {
        seeds: ChaCha8Rng::seed_from_u64(cfg.seed),
        cfg,
        next_device: 0,
        current: None,
        truth: Vec::new(),
    }
}

impl Simulation {
    pub fn config(&self) -> &OfflineConfig {
        &self.cfg
    }

    /// Ground truth so far (the current device's open trips, DTCs and dwells are closed
    /// when it ends).
    pub fn truth(&self) -> &[GroundTruth] {
        &self.truth
    }

    /// Take the ground truth so far.
    pub fn take_truth(&mut self) -> Vec<GroundTruth> {
        std::mem::take(&mut self.truth)
    }

    /// Run to the end, dropping the remaining samples, and return the whole ground truth
    /// (what was not taken yet), sorted by start, device and kind.
    pub fn into_truth(mut self) -> Vec<GroundTruth> {
        for _ in self.by_ref() {}
        let mut t = std::mem::take(&mut self.truth);
        t.sort_by(|a, b| (a.start, &a.device, &a.kind).cmp(&(b.start, &b.device, &b.kind)));
        t
    }

    /// The same traffic as protocol frames: per device a login frame (when the protocol
    /// has one) then position frames of up to `batch` records (one when the protocol's
    /// frames carry one). Frames are what a device would send over `transport`.
    pub fn frames(
        self,
        protocol: Protocol,
        transport: Transport,
        batch: usize,
    ) -> Result<Frames, UnsupportedTransport> {
        protocol.device_encoder(transport)?;
        Ok(Frames {
            sim: self,
            protocol,
            transport,
            batch: batch.max(1),
            encoder: None,
            pending: None,
        })
    }

    fn start_next(&mut self) -> bool {
        if self.next_device >= self.cfg.devices {
            return false;
        }
        let index = self.next_device;
        self.next_device += 1;
        // One draw per device, in order, as `Fleet::start` does.
        let seed: u64 = self.seeds.random();
        let id: Arc<str> = self.cfg.device_id(index).into();
        let track = Track::new(&id, &self.cfg.track, self.cfg.start, seed);
        self.current = Some(Current {
            index,
            id,
            track,
            left: self.cfg.fixes_per_device(),
        });
        true
    }
}

impl Iterator for Simulation {
    type Item = Sample;

    fn next(&mut self) -> Option<Sample> {
        loop {
            if self.current.is_none() && !self.start_next() {
                return None;
            }
            let c = self.current.as_mut()?;
            if c.left == 0 {
                let mut c = self.current.take()?;
                self.truth.extend(c.track.finish());
                continue;
            }
            c.left -= 1;
            // Device actions (offline, malformed) need a socket; offline they only stay in
            // the ground truth.
            let _ = c.track.advance(self.cfg.interval.as_secs_f64());
            let position = c.track.read();
            self.truth.extend(c.track.take_truth());
            return Some(Sample {
                index: c.index,
                device: c.id.clone(),
                position,
            });
        }
    }
}

/// One encoded frame of one device.
#[derive(Debug, Clone)]
pub struct Frame {
    pub device: Arc<str>,
    pub bytes: Vec<u8>,
    /// Positions it carries (0 for a login).
    pub positions: usize,
}

/// [`Simulation::frames`].
pub struct Frames {
    sim: Simulation,
    protocol: Protocol,
    transport: Transport,
    batch: usize,
    encoder: Option<(Arc<str>, Box<dyn DeviceEncoder>, bool)>,
    /// A sample of the next device, read while finishing the last one's batch.
    pending: Option<Sample>,
}

impl std::fmt::Debug for Frames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frames")
            .field("protocol", &self.protocol)
            .field("transport", &self.transport)
            .field("batch", &self.batch)
            .finish_non_exhaustive()
    }
}

impl Frames {
    /// The simulation underneath (its ground truth so far).
    pub fn simulation(&self) -> &Simulation {
        &self.sim
    }

    pub fn into_truth(self) -> Vec<GroundTruth> {
        self.sim.into_truth()
    }
}

impl Iterator for Frames {
    type Item = Result<Frame, EncodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        let first = self.pending.take().or_else(|| self.sim.next())?;
        let same = self.encoder.as_ref().is_some_and(|(id, _, _)| *id == first.device);
        if !same {
            // Checked by `Simulation::frames`.
            let mut enc = self.protocol.device_encoder(self.transport).ok()?;
            let batches = crate::device::batches(self.protocol, self.transport, false, &first.device);
            let login = enc.encode(&Message::new(MessageKind::Login).with_imei(&*first.device));
            self.encoder = Some((first.device.clone(), enc, batches));
            if let Ok(bytes) = login {
                self.pending = Some(first.clone());
                return Some(Ok(Frame {
                    device: first.device,
                    bytes,
                    positions: 0,
                }));
            }
        }
        let (_, enc, batches) = self.encoder.as_mut()?;
        let limit = if *batches { self.batch } else { 1 };
        let device = first.device.clone();
        let mut positions = vec![first.position];
        while positions.len() < limit {
            match self.sim.next() {
                Some(s) if s.device == device => positions.push(s.position),
                Some(s) => {
                    self.pending = Some(s);
                    break;
                }
                None => break,
            }
        }
        let n = positions.len();
        let msg = Message::new(MessageKind::Position)
            .with_imei(&*device)
            .with_positions(positions);
        Some(enc.encode(&msg).map(|bytes| Frame {
            device,
            bytes,
            positions: n,
        }))
    }
}
