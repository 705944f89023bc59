//! A device's stream of records: vehicle + sensors + scenario, stepped in simulated time.

use chrono::{DateTime, Utc};
use protocols::Position;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::noise::{NoiseConfig, Sensors};
use crate::route::RouteSpec;
use crate::scenario::{DeviceAction, EventSpec, Geofence, GroundTruth, ScenarioRun, SpeedZone};
use crate::vehicle::{Vehicle, VehicleConfig};

/// Everything that shapes one device's traffic.
#[derive(Debug, Clone)]
pub struct TrackConfig {
    pub vehicle: VehicleConfig,
    pub noise: NoiseConfig,
    pub route: RouteSpec,
    pub events: Vec<EventSpec>,
    pub geofences: Vec<Geofence>,
    pub speed_zones: Vec<SpeedZone>,
}

impl Default for TrackConfig {
    fn default() -> Self {
        TrackConfig {
            vehicle: VehicleConfig::default(),
            noise: NoiseConfig::default(),
            route: RouteSpec::Random(crate::route::BBox::DEFAULT),
            events: Vec::new(),
            geofences: Vec::new(),
            speed_zones: Vec::new(),
        }
    }
}

/// One device's simulated world.
#[derive(Debug, Clone)]
pub struct Track {
    pub vehicle: Vehicle,
    sensors: Sensors,
    scenario: ScenarioRun,
    /// Actions due at the start time, handed out by the first `advance`.
    early: Vec<DeviceAction>,
}

impl Track {
    pub fn new(device: &str, cfg: &TrackConfig, start: DateTime<Utc>, seed: u64) -> Track {
        // Independent streams for the vehicle and its sensors, all from the one seed.
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let vehicle = Vehicle::new(
            cfg.vehicle.clone(),
            cfg.route.clone(),
            start,
            ChaCha8Rng::from_rng(&mut rng),
        );
        let sensors = Sensors::new(cfg.noise.clone(), ChaCha8Rng::from_rng(&mut rng));
        let mut vehicle = vehicle;
        let mut scenario = ScenarioRun::new(device, start, &cfg.events, &cfg.geofences, &cfg.speed_zones);
        let early = scenario.before_step(&mut vehicle);
        Track {
            vehicle,
            sensors,
            scenario,
            early,
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.vehicle.state.time
    }

    /// Advance `dt` seconds in ≤ 1 s physics steps; device actions the scenario asked
    /// for on the way are returned.
    pub fn advance(&mut self, dt: f64) -> Vec<DeviceAction> {
        let mut actions = std::mem::take(&mut self.early);
        let mut left = dt.max(0.0);
        while left > 1e-9 {
            let step = left.min(1.0);
            self.vehicle.step(step);
            self.scenario.after_step(&mut self.vehicle);
            // Events due at the new instant take effect before anyone reads the sensors,
            // so a reading stamped T shows what happened at T.
            actions.extend(self.scenario.before_step(&mut self.vehicle));
            left -= step;
        }
        actions
    }

    /// What the tracker reports now.
    pub fn read(&mut self) -> Position {
        self.sensors.read(&self.vehicle.state, self.vehicle.cfg.tank_l)
    }

    pub fn take_truth(&mut self) -> Vec<GroundTruth> {
        self.scenario.take_truth()
    }

    /// Close open trips, DTCs and dwells; returns the last ground truth.
    pub fn finish(&mut self) -> Vec<GroundTruth> {
        self.scenario.finish(&mut self.vehicle);
        self.scenario.take_truth()
    }
}
