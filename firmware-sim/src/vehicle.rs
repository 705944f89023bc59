//! The vehicle: kinematics along a route, engine and OBD state, fuel, accelerometer.
//!
//! Pure and time-stepped with explicit time: [`Vehicle::step`] advances the true state by
//! `dt` seconds (callers pass ≤ 1 s), so tests can drive hours of traffic in milliseconds.
//! What sensors report (jitter, slosh, dropped fixes) is [`crate::noise`]'s business.
//!
//! The driver is a speed controller: it aims for the leg's cruise speed but never faster
//! than lets it slow to the next corner's (or stop's) speed with a comfortable
//! deceleration. Longitudinal acceleration is clamped to the configured limits and the
//! heading turns no faster than the lateral-acceleration limit allows, so the limits hold
//! by construction; only injected events ([`Overrides`]) exceed them.

use chrono::{DateTime, Duration, Utc};
use rand::{Rng as _, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

use crate::route::{LatLon, Route, RouteSpec, bearing_deg, distance_m, turn_deg};

pub const G: f64 = 9.806_65;

/// Vehicle parameters. Defaults describe a mid-size petrol car.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VehicleConfig {
    pub tank_l: f64,
    pub initial_fuel_pct: f64,
    /// Normal driving limits, m/s².
    pub max_accel_ms2: f64,
    pub max_brake_ms2: f64,
    pub max_lateral_ms2: f64,
    pub idle_lph: f64,
    pub ambient_c: f64,
    pub base_altitude_m: f64,
    /// Drive, park with the ignition off, drive again.
    pub ignition_cycles: bool,
    pub trip_min_s: f64,
    pub trip_max_s: f64,
    pub park_min_s: f64,
    pub park_max_s: f64,
    /// Refuel (and record it) when the tank falls below this, %.
    pub refuel_below_pct: f64,
    /// Park overnight: from the first hour to the second (UTC, 0–24, e.g. `[20, 6]`). The
    /// driver finishes at the next stop after the evening hour and sets off at the
    /// morning one; a start inside the window starts parked.
    pub night_park_hours: Option<[f64; 2]>,
}

impl Default for VehicleConfig {
    fn default() -> Self {
        VehicleConfig {
            tank_l: 60.0,
            initial_fuel_pct: 70.0,
            max_accel_ms2: 2.5,
            max_brake_ms2: 3.5,
            max_lateral_ms2: 3.0,
            idle_lph: 0.8,
            ambient_c: 15.0,
            base_altitude_m: 120.0,
            ignition_cycles: false,
            trip_min_s: 600.0,
            trip_max_s: 2400.0,
            park_min_s: 120.0,
            park_max_s: 1200.0,
            refuel_below_pct: 8.0,
            night_park_hours: None,
        }
    }
}

/// The true state at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct VehicleState {
    pub time: DateTime<Utc>,
    pub pos: LatLon,
    pub altitude_m: f64,
    pub heading_deg: f64,
    pub speed_ms: f64,
    /// Longitudinal acceleration, m/s² (negative = braking).
    pub accel_ms2: f64,
    /// Lateral acceleration, m/s² (positive = turning right).
    pub lateral_ms2: f64,
    pub odometer_m: f64,
    pub engine_s: f64,
    pub ignition: bool,
    pub gear: u8,
    pub rpm: f64,
    pub coolant_c: f64,
    pub power_v: f64,
    pub battery_v: f64,
    pub fuel_l: f64,
    pub fuel_used_l: f64,
    pub fuel_rate_lph: f64,
    pub dtcs: Vec<String>,
}

/// What injected events force on the vehicle. The scenario engine sets and clears them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    /// Forced longitudinal acceleration, m/s² (harsh braking / acceleration).
    pub accel_ms2: Option<f64>,
    /// Forced lateral acceleration, m/s² (harsh cornering).
    pub lateral_ms2: Option<f64>,
    /// Cruise speed overriding the road's, km/h (speeding).
    pub cruise_kmh: Option<f64>,
    /// The most the driver will drive, km/h (a speed zone obeyed). Below `cruise_kmh`'s
    /// wish it does not apply: a speeding driver ignores the sign.
    pub cap_kmh: Option<f64>,
    /// Stop and stay stopped with the engine running (idling).
    pub idle: bool,
    /// Stop and switch the ignition off (parked for a refuel or a theft).
    pub park: bool,
}

/// Things that happened on their own (not injected) that ground truth must know.
#[derive(Debug, Clone, PartialEq)]
pub enum VehicleEvent {
    IgnitionOn(DateTime<Utc>),
    IgnitionOff(DateTime<Utc>),
    /// Automatic refuel: litres added.
    Refuel(DateTime<Utc>, f64),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Driving {
        until: DateTime<Utc>,
    },
    /// Waiting at a junction or light until then.
    Waiting {
        until: DateTime<Utc>,
    },
    Parked {
        until: DateTime<Utc>,
    },
}

/// A simulated vehicle.
#[derive(Debug, Clone)]
pub struct Vehicle {
    pub cfg: VehicleConfig,
    pub state: VehicleState,
    pub overrides: Overrides,
    route: Route,
    /// The leg being driven ends at waypoint `leg`.
    leg: usize,
    /// Metres driven along the current leg.
    along: f64,
    phase: Phase,
    /// A stop waypoint was passed before the car could halt: brake to zero first.
    stop_pending: Option<f64>,
    rng: ChaCha8Rng,
    alt_phase: f64,
    events: Vec<VehicleEvent>,
}

impl Vehicle {
    pub fn new(cfg: VehicleConfig, route: RouteSpec, start: DateTime<Utc>, mut rng: ChaCha8Rng) -> Vehicle {
        let route_rng = ChaCha8Rng::from_rng(&mut rng);
        let mut route = Route::new(route, route_rng);
        let p0 = route.point(0).at;
        let p1 = route.point(1).at;
        let fuel_l = (cfg.tank_l * cfg.initial_fuel_pct / 100.0).clamp(0.0, cfg.tank_l);
        let trip = rng.random_range(cfg.trip_min_s..cfg.trip_max_s.max(cfg.trip_min_s + 1.0));
        let state = VehicleState {
            time: start,
            pos: p0,
            altitude_m: cfg.base_altitude_m,
            heading_deg: bearing_deg(p0, p1),
            speed_ms: 0.0,
            accel_ms2: 0.0,
            lateral_ms2: 0.0,
            odometer_m: rng.random_range(5_000_000.0f64..150_000_000.0).round(),
            engine_s: rng.random_range(200.0f64..5000.0).round() * 3600.0,
            ignition: true,
            gear: 0,
            rpm: 800.0,
            coolant_c: cfg.ambient_c,
            power_v: 14.1,
            battery_v: 4.1,
            fuel_l,
            fuel_used_l: 0.0,
            fuel_rate_lph: 0.0,
            dtcs: Vec::new(),
        };
        let alt_phase = rng.random_range(0.0..std::f64::consts::TAU);
        let mut state = state;
        let (phase, events) = match night_end(&cfg, start) {
            Some(until) => {
                state.ignition = false;
                state.rpm = 0.0;
                state.power_v = 12.6;
                (Phase::Parked { until }, Vec::new())
            }
            None => (
                Phase::Driving {
                    until: start + secs(trip),
                },
                vec![VehicleEvent::IgnitionOn(start)],
            ),
        };
        Vehicle {
            cfg,
            state,
            overrides: Overrides::default(),
            route,
            leg: 1,
            along: 0.0,
            phase,
            stop_pending: None,
            rng,
            alt_phase,
            events,
        }
    }

    /// Events since the last call.
    pub fn take_events(&mut self) -> Vec<VehicleEvent> {
        std::mem::take(&mut self.events)
    }

    /// Whether the vehicle is stopped with the ignition off.
    pub fn is_parked(&self) -> bool {
        !self.state.ignition && self.state.speed_ms == 0.0
    }

    /// Whether the driver is on the road (not parked, waiting or idling on purpose): a
    /// harsh acceleration can only happen then.
    pub fn is_driving(&self) -> bool {
        matches!(self.phase, Phase::Driving { .. })
            && self.state.ignition
            && self.stop_pending.is_none()
            && !self.overrides.park
            && !self.overrides.idle
    }

    /// Advance by `dt` seconds (positive, ≤ 1 s keeps the physics honest).
    pub fn step(&mut self, dt: f64) {
        let dt = dt.clamp(0.0, 1.0);
        if dt == 0.0 {
            return;
        }
        let now = self.state.time + secs(dt);
        self.update_phase(now);

        let v = self.state.speed_ms;
        let target = self.target_speed();
        let mut a = ((target - v) * 1.2).clamp(-self.cfg.max_brake_ms2, self.cfg.max_accel_ms2);
        if let Some(forced) = self.overrides.accel_ms2 {
            a = forced;
        }
        // Never reverse: clip the acceleration that would take speed below zero.
        if v + a * dt < 0.0 {
            a = -v / dt;
        }
        let v_new = (v + a * dt).max(0.0);
        let dist = ((v + v_new) / 2.0 * dt).max(0.0);
        self.advance(dist);
        self.state.speed_ms = v_new;
        self.state.accel_ms2 = a;

        // Heading follows the leg, turning no faster than the lateral limit allows.
        let leg_heading = self.leg_heading();
        let want = turn_deg(self.state.heading_deg, leg_heading);
        let lateral_limit = self.overrides.lateral_ms2.map_or(self.cfg.max_lateral_ms2, f64::abs);
        let max_turn = if v_new > 0.5 {
            (lateral_limit / v_new).to_degrees() * dt
        } else {
            // Standing or crawling: a car turns its wheels, not its body; let it align.
            180.0
        };
        let turn = want.clamp(-max_turn, max_turn);
        self.state.heading_deg = (self.state.heading_deg + turn).rem_euclid(360.0);
        self.state.lateral_ms2 = if v_new > 0.5 {
            v_new * turn.to_radians() / dt
        } else {
            0.0
        };
        if let Some(forced) = self.overrides.lateral_ms2 {
            self.state.lateral_ms2 = forced;
        }

        self.state.time = now;
        self.update_engine(dt);
    }

    fn update_phase(&mut self, now: DateTime<Utc>) {
        let standing = self.state.speed_ms < 0.05;
        if self.overrides.park || self.overrides.idle {
            if standing {
                let want_ignition = !self.overrides.park;
                self.set_ignition(want_ignition, now);
            }
            return;
        }
        if !matches!(self.phase, Phase::Parked { .. })
            && standing
            && let Some(until) = night_end(&self.cfg, now)
        {
            self.phase = Phase::Parked { until };
            self.set_ignition(false, now);
            return;
        }
        match self.phase {
            Phase::Driving { until } if self.cfg.ignition_cycles && now >= until && standing => {
                let park = self
                    .rng
                    .random_range(self.cfg.park_min_s..self.cfg.park_max_s.max(self.cfg.park_min_s + 1.0));
                self.phase = Phase::Parked {
                    until: now + secs(park),
                };
                self.set_ignition(false, now);
            }
            Phase::Waiting { until } | Phase::Parked { until } if now >= until => {
                let trip = self
                    .rng
                    .random_range(self.cfg.trip_min_s..self.cfg.trip_max_s.max(self.cfg.trip_min_s + 1.0));
                self.phase = Phase::Driving {
                    until: now + secs(trip),
                };
                self.set_ignition(true, now);
            }
            _ => {
                if !matches!(self.phase, Phase::Parked { .. }) {
                    self.set_ignition(true, now);
                }
            }
        }
    }

    fn set_ignition(&mut self, on: bool, now: DateTime<Utc>) {
        if self.state.ignition != on {
            self.state.ignition = on;
            self.events.push(if on {
                VehicleEvent::IgnitionOn(now)
            } else {
                VehicleEvent::IgnitionOff(now)
            });
        }
    }

    fn leg_heading(&mut self) -> f64 {
        let a = self.route.point(self.leg - 1).at;
        let b = self.route.point(self.leg).at;
        bearing_deg(a, b)
    }

    /// The speed the driver aims for now, m/s.
    fn target_speed(&mut self) -> f64 {
        let must_stand = self.overrides.idle
            || self.overrides.park
            || matches!(self.phase, Phase::Waiting { .. } | Phase::Parked { .. })
            || self.stop_pending.is_some()
            || (self.cfg.ignition_cycles && matches!(self.phase, Phase::Driving { until } if self.state.time >= until))
            || night_end(&self.cfg, self.state.time).is_some();
        if must_stand {
            return 0.0;
        }
        let wp = self.route.point(self.leg);
        let from = self.route.point(self.leg - 1).at;
        let next = self.route.point(self.leg + 1);
        let cruise = self.overrides.cruise_kmh.unwrap_or(wp.cruise_kmh) / 3.6;
        if self.overrides.cruise_kmh.is_some() {
            // A speeding driver does not slow for corners either (the lateral limit still
            // bounds how fast the heading turns).
            return cruise;
        }
        let cruise = self.overrides.cap_kmh.map_or(cruise, |c| cruise.min(c / 3.6));
        let leg_len = distance_m(from, wp.at);
        let remaining = (leg_len - self.along).max(0.0);
        let corner = if wp.stop_s > 0.0 {
            0.0
        } else {
            let theta = turn_deg(bearing_deg(from, wp.at), bearing_deg(wp.at, next.at)).abs();
            (15.0 * (1.0 - theta / 180.0).powi(2)).clamp(3.0, 15.0)
        };
        // Plan with 60% of the braking limit so the controller's lag stays inside it.
        let b = 0.6 * self.cfg.max_brake_ms2;
        cruise.min((corner * corner + 2.0 * b * remaining).sqrt())
    }

    /// Move `dist` metres along the route, crossing waypoints as needed.
    fn advance(&mut self, mut dist: f64) {
        if let Some(rem) = self.stop_pending {
            // Braking past a stop line: keep rolling on the next leg until halted.
            let left = rem - dist;
            self.stop_pending = if self.state.speed_ms < 0.05 {
                None
            } else {
                Some(left.max(0.0))
            };
        }
        loop {
            let from = self.route.point(self.leg - 1).at;
            let wp = self.route.point(self.leg);
            let leg_len = distance_m(from, wp.at);
            if self.along + dist < leg_len {
                self.along += dist;
                break;
            }
            dist -= leg_len - self.along;
            self.state.odometer_m += leg_len - self.along;
            self.leg += 1;
            self.along = 0.0;
            if wp.stop_s > 0.0 {
                if dist > 0.5 {
                    self.stop_pending = Some(0.0);
                }
                let until = self.state.time + secs(wp.stop_s);
                if matches!(self.phase, Phase::Driving { .. }) {
                    self.phase = Phase::Waiting { until };
                }
            }
            let dropped = self.route.trim(self.leg.saturating_sub(1));
            self.leg -= dropped;
            if dist <= 0.0 {
                break;
            }
        }
        self.state.odometer_m += dist.max(0.0);
        let from = self.route.point(self.leg - 1).at;
        let to = self.route.point(self.leg).at;
        let len = distance_m(from, to).max(1e-9);
        let f = (self.along / len).clamp(0.0, 1.0);
        self.state.pos = LatLon {
            lat: from.lat + (to.lat - from.lat) * f,
            lon: from.lon + (to.lon - from.lon) * f,
        };
        let o = self.state.odometer_m;
        self.state.altitude_m =
            self.cfg.base_altitude_m + 25.0 * (o / 2_000.0 + self.alt_phase).sin() + 6.0 * (o / 450.0).sin();
    }

    fn update_engine(&mut self, dt: f64) {
        let s = &mut self.state;
        let kmh = s.speed_ms * 3.6;
        if s.ignition {
            s.engine_s += dt;
            const GEARS: [(f64, f64); 5] = [(0.0, 110.0), (15.0, 62.0), (30.0, 43.0), (50.0, 33.0), (70.0, 27.0)];
            let (gear, ratio) = GEARS
                .iter()
                .enumerate()
                .rev()
                .find(|(_, (from, _))| kmh >= *from)
                .map_or((0, 0.0), |(i, (_, r))| (i as u8 + 1, *r));
            s.gear = if kmh < 1.0 { 0 } else { gear };
            let load = (s.accel_ms2.max(0.0) * 150.0).min(600.0);
            s.rpm = if s.gear == 0 {
                800.0
            } else {
                (kmh * ratio).max(900.0) + load
            };
            s.coolant_c += (90.0 - s.coolant_c) * (dt / 300.0).min(1.0);
            s.power_v = 14.1 - 0.1 * (s.rpm < 1000.0) as u8 as f64;
            let accel_term = s.accel_ms2.max(0.0) * s.speed_ms * 0.25;
            s.fuel_rate_lph = self.cfg.idle_lph + 0.0006 * kmh * kmh + 0.02 * kmh + accel_term;
        } else {
            s.gear = 0;
            s.rpm = 0.0;
            s.coolant_c += (self.cfg.ambient_c - s.coolant_c) * (dt / 1800.0).min(1.0);
            s.power_v = 12.6;
            s.fuel_rate_lph = 0.0;
        }
        let burnt = (s.fuel_rate_lph * dt / 3600.0).min(s.fuel_l);
        s.fuel_l -= burnt;
        s.fuel_used_l += burnt;
        if s.fuel_l < self.cfg.tank_l * self.cfg.refuel_below_pct / 100.0 && !self.overrides.park {
            // Drivers refuel before the tank is dry; it is a real event, so report it.
            let added = self.cfg.tank_l * 0.9 - s.fuel_l;
            s.fuel_l += added;
            self.events.push(VehicleEvent::Refuel(s.time, added));
        }
    }

    /// Remove `litres` from the tank (theft); returns what was removed.
    pub fn drain_fuel(&mut self, litres: f64) -> f64 {
        let take = litres.clamp(0.0, self.state.fuel_l);
        self.state.fuel_l -= take;
        take
    }

    /// Add `litres` (refuel); returns what fitted.
    pub fn add_fuel(&mut self, litres: f64) -> f64 {
        let add = litres.clamp(0.0, self.cfg.tank_l - self.state.fuel_l);
        self.state.fuel_l += add;
        add
    }
}

/// When `t` falls in the configured night, the morning it ends.
fn night_end(cfg: &VehicleConfig, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    use chrono::Timelike as _;
    let [from, to] = cfg.night_park_hours?;
    let h = f64::from(t.hour()) + f64::from(t.minute()) / 60.0 + f64::from(t.second()) / 3600.0;
    let inside = if from <= to {
        (from..to).contains(&h)
    } else {
        h >= from || h < to
    };
    if !inside {
        return None;
    }
    let midnight = t.date_naive().and_hms_opt(0, 0, 0)?.and_utc();
    let morning = midnight + secs(to * 3600.0);
    Some(if morning > t {
        morning
    } else {
        morning + Duration::days(1)
    })
}

pub fn secs(s: f64) -> Duration {
    Duration::milliseconds((s * 1000.0).round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::BBox;
    use chrono::TimeZone;

    #[test]
    fn drives_and_burns_fuel() {
        let start = Utc.with_ymd_and_hms(2026, 1, 1, 8, 0, 0).unwrap();
        let mut v = Vehicle::new(
            VehicleConfig::default(),
            RouteSpec::Random(BBox::DEFAULT),
            start,
            ChaCha8Rng::seed_from_u64(5),
        );
        let odo0 = v.state.odometer_m;
        let fuel0 = v.state.fuel_l;
        for _ in 0..1800 {
            v.step(1.0);
        }
        let km = (v.state.odometer_m - odo0) / 1000.0;
        assert!(km > 5.0 && km < 40.0, "{km} km in 30 min");
        assert!(v.state.fuel_l < fuel0);
        assert!(v.state.coolant_c > 80.0);
    }
}
