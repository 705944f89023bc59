//! The plug-in point for per-device detectors that live outside this crate (the
//! `analytics` fuel and maintenance detectors). The runtime gives each device its own
//! detector instances, feeds them the device's samples in time order, calls `tick` on
//! its timer, checkpoints their state with the rest of the device's state, and writes
//! and publishes what they emit like any other operator event.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::sample::{Detection, Sample};

/// One device's instance of a detector.
pub trait Detector: Send + Sync + fmt::Debug {
    /// Stable name: the key its checkpointed state is stored under.
    fn name(&self) -> &str;
    fn push(&mut self, s: &Sample, out: &mut Vec<Detection>);
    /// Timers. `now` is the operator clock (wall time in production, a test clock in tests).
    fn tick(&mut self, now: DateTime<Utc>, out: &mut Vec<Detection>);
    /// State for the checkpoint.
    fn save(&self) -> serde_json::Value;
    /// Restores what [`Detector::save`] returned. An error drops the saved state (the
    /// detector starts fresh, logged), it never stops the runtime.
    fn restore(&mut self, state: serde_json::Value) -> Result<(), String>;
}

/// Makes the detectors of one device (called once per device, on its first sample).
pub type DetectorFactory = Arc<dyn Fn(i64) -> Vec<Box<dyn Detector>> + Send + Sync>;

/// Adapts a plain struct with `push`/`tick` methods (the `analytics` shape) to
/// [`Detector`]: `Plug::new("fuel", FuelDetector::default(), FuelDetector::push, FuelDetector::tick)`.
pub struct Plug<T> {
    name: String,
    inner: T,
    push: fn(&mut T, &Sample, &mut Vec<Detection>),
    tick: fn(&mut T, DateTime<Utc>, &mut Vec<Detection>),
}

impl<T: fmt::Debug> fmt::Debug for Plug<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plug")
            .field("name", &self.name)
            .field("inner", &self.inner)
            .finish()
    }
}

impl<T> Plug<T> {
    pub fn new(
        name: impl Into<String>,
        inner: T,
        push: fn(&mut T, &Sample, &mut Vec<Detection>),
        tick: fn(&mut T, DateTime<Utc>, &mut Vec<Detection>),
    ) -> Self {
        Plug {
            name: name.into(),
            inner,
            push,
            tick,
        }
    }

    pub fn inner(&self) -> &T {
        &self.inner
    }
}

impl<T: Serialize + DeserializeOwned + Send + Sync + fmt::Debug> Detector for Plug<T> {
    fn name(&self) -> &str {
        &self.name
    }
    fn push(&mut self, s: &Sample, out: &mut Vec<Detection>) {
        (self.push)(&mut self.inner, s, out)
    }
    fn tick(&mut self, now: DateTime<Utc>, out: &mut Vec<Detection>) {
        (self.tick)(&mut self.inner, now, out)
    }
    fn save(&self) -> serde_json::Value {
        serde_json::to_value(&self.inner).unwrap_or(serde_json::Value::Null)
    }
    fn restore(&mut self, state: serde_json::Value) -> Result<(), String> {
        self.inner = serde_json::from_value(state).map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// The `analytics` detectors every device gets: fuel (refuel, theft/drain, sensor fault,
/// consumption anomaly), DTC raised/cleared and low battery, with their default
/// settings. Tank size is not known per device here, so fuel works in % of the tank (and
/// litres when the device reports them). Service plans need the store and are not yet
/// plugged in.
pub fn analytics_factory() -> DetectorFactory {
    Arc::new(|_device| {
        let mut v: Vec<Box<dyn Detector>> = Vec::new();
        match analytics::fuel::FuelDetector::new(analytics::fuel::FuelConfig::default()) {
            Ok(d) => v.push(Box::new(Plug::new(
                "fuel",
                d,
                analytics::fuel::FuelDetector::push,
                analytics::fuel::FuelDetector::tick,
            ))),
            Err(e) => tracing::error!("fuel detector defaults refused: {e}"),
        }
        v.push(Box::new(Plug::new(
            "dtc",
            analytics::maintenance::DtcDetector::new(analytics::maintenance::DtcConfig::default()),
            analytics::maintenance::DtcDetector::push,
            analytics::maintenance::DtcDetector::tick,
        )));
        match analytics::maintenance::BatteryDetector::new(analytics::maintenance::BatteryConfig::default()) {
            Ok(d) => v.push(Box::new(Plug::new(
                "battery",
                d,
                analytics::maintenance::BatteryDetector::push,
                analytics::maintenance::BatteryDetector::tick,
            ))),
            Err(e) => tracing::error!("battery detector defaults refused: {e}"),
        }
        v
    })
}
