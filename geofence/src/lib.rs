//! Geofencing for Clutch: which zones a position is in, and the enter / exit / dwell /
//! overspeed / time-window events that a stream of positions produces.
//!
//! This crate owns the zone shapes and their validation, the spatial index, and the
//! per-device state machines. It is pure: values in, values out. No tokio, no sockets,
//! no SQL, no wall clock (event times are the fixes' times), so the `stream` operator
//! that drives it decides about batching, checkpoints and where events go.
//!
//! ```
//! use geofence::{Engine, Fence, FenceId, FenceIndex, FenceRules, Fix, DeviceId, EventTag, Shape};
//! use chrono::{TimeZone, Utc};
//!
//! let depot = Fence::new(
//!     FenceId(1),
//!     Shape::Circle { center: geo::point!(x: 13.40, y: 52.52), radius_m: 200.0 },
//!     FenceRules::default(),
//! )?;
//! let index = FenceIndex::build([depot])?;
//! let mut engine = Engine::default();
//! let t = |s: i64| Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap();
//! let fixes = [
//!     Fix::at(DeviceId(7), t(0), 13.43, 52.52),
//!     Fix::at(DeviceId(7), t(10), 13.40, 52.52),
//! ];
//! let events = engine.process_batch(&index, &fixes);
//! assert_eq!(events.len(), 1);
//! assert_eq!(events[0].kind.tag(), EventTag::Enter);
//! # Ok::<(), geofence::FenceError>(())
//! ```
//!
//! # Layout
//!
//! - [`shape`]: [`Shape`] (polygon with holes, multipolygon, circle, corridor), [`Fence`]
//!   (a validated shape plus its [`FenceRules`]), validation, antimeridian and pole policy.
//! - `prepared`: the forms the hot path tests against: per polygon a 64×64
//!   inside/outside/edge raster and y-banded edge buckets (a point test reads one cache
//!   line or a few edges, never all of them); corridors cut into short chunks.
//! - [`index`]: [`FenceIndex`], immutable: an R-tree (`rstar`) over part envelopes as
//!   the index of record, a uniform grid over the same envelopes for point queries,
//!   exact tests behind both; [`SharedIndex`] swaps snapshots atomically (`arc-swap`).
//! - [`engine`]: [`Fix`] in, [`Event`] out; [`DeviceState`] is one device's state
//!   machines, [`Engine`] holds many and evaluates batches.
//! - [`rules`]: enter/exit confirmation, hysteresis, dwell alerts, speed limits, time
//!   windows, fence-to-device/group assignment.
//! - [`features`]: GeoJSON in and out.
//! - [`metres`]: the distance approximations and their accuracy.

pub mod engine;
pub mod error;
pub mod features;
pub mod index;
pub mod metres;
mod prepared;
pub mod rules;
pub mod shape;

pub use engine::{
    DeviceId, DeviceState, Engine, EngineStats, Event, EventKey, EventKind, EventTag, Fix, FixFilter, GroupId, Skip,
};
pub use error::FenceError;
pub use features::{fence_from_feature, fence_to_feature, fences_from_geojson, fences_to_geojson};
pub use index::{BatchHits, FenceIndex, SharedIndex};
pub use rules::{FenceRules, Scope, SpeedLimit, TimeWindow, WindowMode};
pub use shape::{Fence, FenceId, Shape};

/// Re-exported so callers build shapes with the same `geo` version.
pub use geo;
