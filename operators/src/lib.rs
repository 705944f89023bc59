//! `operators`: the stream operators that turn positions into what fleets act on.
//!
//! This crate owns the operator runtime on the bus ([`runtime`]: per-device state,
//! in-order processing, timers, checkpoints in `operator_checkpoints`, catch-up from the
//! store after a restart or a lag, a durable consumer group with offsets committed after
//! each checkpoint on NATS/Fluvio, batched idempotent event writes, a broadcast of
//! [`OperatorEvent`]s for the API) and the operators themselves: trips, stops and idling
//! ([`trips`]), harsh driving and overspeed ([`behaviour`]), geofence enter/exit/dwell
//! ([`fences`] + the `geofence` crate), device online/offline ([`engine`]). Detectors
//! built elsewhere (fuel, maintenance, service plans) plug in through [`Detector`] and
//! get the registry's view of their vehicle (tank size, service plans: [`DeviceInfo`],
//! reloaded on `NOTIFY clutch_operator_config`). [`safety`] writes trip and day scores
//! (days in the tenant's time zone). [`score`] matches
//! detected events against a firmware-sim ground truth (`clutch score`).
//!
//! # Layout
//! - [`config`]: `[operators]` settings and their defaults.
//! - [`sample`]: `Sample`/`Detection`, the contract with the `analytics` crate.
//! - [`detector`]: the [`Detector`] plug-in trait and [`Plug`], an adapter.
//! - [`fix`]: a position checked and annotated for the operators.
//! - [`trips`], [`behaviour`]: per-device operator state machines.
//! - [`fences`]: fences from the `geofences` table, per tenant.
//! - [`engine`]: the pure per-device core (no IO, no clock).
//! - [`sink`]: event and trip writes.
//! - [`runtime`]: the task on the bus, checkpoints, catch-up, publishing.
//! - [`score`]: precision/recall against ground truth.

pub mod behaviour;
pub mod config;
pub mod detector;
pub mod engine;
pub mod event;
pub mod fences;
pub mod fix;
pub mod runtime;
pub mod safety;
pub mod sample;
pub mod score;
pub mod sink;
pub mod trips;

pub use config::OperatorsConfig;
pub use detector::{Detector, DetectorFactory, Plug, analytics_factory};
pub use engine::{DeviceInfo, Engine, EngineStats};
pub use event::OperatorEvent;
pub use runtime::{Clock, ManualClock, OperatorsError, OperatorsHandle, RuntimeStats, SystemClock, start};
pub use sample::{Detection, Sample};
