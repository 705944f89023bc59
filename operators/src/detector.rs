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

use crate::engine::DeviceInfo;
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
    /// What the registry says about the device changed (or is first known, after a
    /// restore): tank size, service plans. The default ignores it.
    fn configure(&mut self, _info: &DeviceInfo) {}
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
    configure: Option<fn(&mut T, &DeviceInfo)>,
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
            configure: None,
        }
    }

    /// Called with the device's registry data on start and whenever it changes.
    pub fn on_configure(mut self, f: fn(&mut T, &DeviceInfo)) -> Self {
        self.configure = Some(f);
        self
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
    fn configure(&mut self, info: &DeviceInfo) {
        if let Some(f) = self.configure {
            f(&mut self.inner, info)
        }
    }
}

/// The `analytics` detectors every device gets, with their default settings: fuel
/// (refuel, theft/drain, sensor fault, consumption anomaly; in litres when the vehicle's
/// tank size is known or the device reports litres, else in % of the tank), DTC
/// raised/cleared, low battery, and `service_due` from the vehicle's service plans. Tank
/// size and plans come from [`DeviceInfo`] (loaded and reloaded by the runtime).
pub fn analytics_factory() -> DetectorFactory {
    use analytics::fuel::{FuelConfig, FuelDetector};
    use analytics::maintenance::{ServiceConfig, ServiceDueDetector};
    Arc::new(|_device| {
        let mut v: Vec<Box<dyn Detector>> = Vec::new();
        match FuelDetector::new(FuelConfig::default()) {
            Ok(d) => v.push(Box::new(
                Plug::new("fuel", d, FuelDetector::push, FuelDetector::tick).on_configure(configure_fuel),
            )),
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
        match ServiceDueDetector::new(ServiceConfig::default(), Vec::new()) {
            Ok(d) => v.push(Box::new(
                Plug::new("service", d, ServiceDueDetector::push, ServiceDueDetector::tick)
                    .on_configure(configure_service),
            )),
            Err(e) => tracing::error!("service detector defaults refused: {e}"),
        }
        v
    })
}

/// A new tank size restarts the fuel detector with it: its state is in the old unit (%
/// of tank, or litres of another tank), so keeping it would mix the two. What a restart
/// costs is a refuel or drain in progress at that moment.
fn configure_fuel(d: &mut analytics::fuel::FuelDetector, info: &DeviceInfo) {
    if d.config().tank_l == info.tank_l {
        return;
    }
    let cfg = analytics::fuel::FuelConfig {
        tank_l: info.tank_l,
        ..d.config().clone()
    };
    match analytics::fuel::FuelDetector::new(cfg) {
        Ok(fresh) => *d = fresh,
        Err(e) => tracing::warn!(tank_l = ?info.tank_l, "tank size refused, fuel detector unchanged: {e}"),
    }
}

/// The vehicle's plans; an invalid one (the table's checks let few through) is skipped,
/// not allowed to stop the others.
fn configure_service(d: &mut analytics::maintenance::ServiceDueDetector, info: &DeviceInfo) {
    let plans: Vec<_> = info
        .service_plans
        .iter()
        .filter(|p| match p.validate() {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(plan = p.id, "service plan skipped: {e}");
                false
            }
        })
        .cloned()
        .collect();
    if d.plans().eq(plans.iter()) {
        return;
    }
    if let Err(e) = d.set_plans(plans) {
        tracing::warn!("service plans refused: {e}");
    }
}
