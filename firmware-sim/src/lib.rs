//! `firmware-sim`: simulated trackers that drive, sense, and talk to a Clutch server the
//! way real firmware does.
//!
//! This crate owns the device side of the wire: vehicles driving routes (kinematics,
//! engine, OBD, fuel, accelerometer, GPS), sensor noise, scenario injection with a ground
//! truth file, and firmware behaviour over each protocol's real transport (login,
//! batching, waiting for acks, resending, reconnecting with backoff, heartbeats, answering
//! downlink commands). It is both a library (the end-to-end tests start devices with it)
//! and the `clutch sim` command (`run`, `replay`, `check`). Everything protocol-specific
//! comes from `protocols`: a device encodes with `Protocol::device_encoder`, and learns
//! the ack it must wait for by decoding its own frame with `Protocol::codec`.
//!
//! Runs are deterministic by seed (every random choice draws from a `rand_chacha::ChaCha8Rng`
//! seeded from it): vehicles, noise and scenario outcomes depend only on
//! the seed and the device index (network timing, of course, does not).
//!
//! # Layout
//! - [`route`]: random road-like routes in a bounding box, GeoJSON LineStrings, geodesy.
//! - [`vehicle`]: pure, time-stepped vehicle model.
//! - [`noise`]: sensors — GPS jitter, fuel slosh, accelerometer noise, dropped fixes.
//! - [`scenario`]: scenario TOML, the injection engine, ground truth lines.
//! - [`track`]: vehicle + sensors + scenario = the stream of records a device reports.
//! - [`offline`]: a fleet's positions, frames and ground truth in-process, no sockets.
//! - [`ack`]: the ack a device waits for (learnt from the server codec) and matching it.
//! - [`downlink`]: recognising server commands and the device's reply.
//! - [`transport`]: TCP, UDP, HTTP/1.1 and MQTT (`rumqttc`) links.
//! - [`mqtt`]: the MQTT topics and payloads: telemetry, durable acks, commands, replies.
//! - [`device`]: the firmware loop of one device.
//! - [`run`]: a fleet — protocol mix, deadlines, ramp, source addresses, ground truth.
//! - [`stats`]: shared counters, the latency histogram, the run summary.
//! - [`exchange`]: `replay` and `check` — captured frames to a server, answers back.
//! - [`cli`]: the `clutch sim` arguments and commands.
//! - [`log`]: the devices' log events on stderr (`tracing-subscriber`, `--log` level).
//! - [`ack_server`]: a minimal acking server from the protocols crate (tests, scale checks).

pub mod ack;
pub mod ack_server;
pub mod cli;
pub mod device;
pub mod downlink;
pub mod exchange;
pub mod log;
pub mod mqtt;
pub mod noise;
pub mod offline;
pub mod route;
pub mod run;
pub mod scenario;
pub mod stats;
pub mod track;
pub mod transport;
pub mod vehicle;
