//! Sensors: what a tracker reports of the true [`VehicleState`].
//!
//! GPS jitter is a first-order autoregressive walk (real receivers wander, they do not
//! jump independently every second) whose stationary standard deviation is the configured
//! metres. The fuel-level sensor sloshes with longitudinal acceleration and has white
//! noise; the accelerometer has white noise; a fix can be dropped (reported invalid at the
//! last good position, as trackers do).

use protocols::{Attributes, Position};
use rand::Rng as _;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::Deserialize;

use crate::route::{LatLon, offset};
use crate::vehicle::{G, VehicleState};

/// Sensor noise. All zero gives the true state.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NoiseConfig {
    /// Standard deviation of the GPS position error, metres.
    pub gps_jitter_m: f64,
    /// White noise on the fuel level, % of tank.
    pub fuel_noise_pct: f64,
    /// Slosh amplitude at 3 m/s² of acceleration, % of tank.
    pub fuel_slosh_pct: f64,
    /// Accelerometer noise, milli-g.
    pub accel_noise_mg: f64,
    /// Probability that a fix is lost.
    pub drop_fix_prob: f64,
}

/// The defaults are a cheap tracker on a float fuel sender: GPS wandering 5 m, the fuel
/// level within about ±2 % of the tank (σ 1 %) plus up to ±4 % of slosh under hard
/// acceleration or braking. Fuel-theft detectors must stay quiet on this.
impl Default for NoiseConfig {
    fn default() -> Self {
        NoiseConfig {
            gps_jitter_m: 5.0,
            fuel_noise_pct: 1.0,
            fuel_slosh_pct: 2.0,
            accel_noise_mg: 15.0,
            drop_fix_prob: 0.01,
        }
    }
}

impl NoiseConfig {
    pub const NONE: NoiseConfig = NoiseConfig {
        gps_jitter_m: 0.0,
        fuel_noise_pct: 0.0,
        fuel_slosh_pct: 0.0,
        accel_noise_mg: 0.0,
        drop_fix_prob: 0.0,
    };

    pub fn validate(&self) -> Result<(), String> {
        let fields = [
            ("gps_jitter_m", self.gps_jitter_m),
            ("fuel_noise_pct", self.fuel_noise_pct),
            ("fuel_slosh_pct", self.fuel_slosh_pct),
            ("accel_noise_mg", self.accel_noise_mg),
        ];
        for (name, v) in fields {
            if !v.is_finite() || v < 0.0 {
                return Err(format!("noise.{name} must be a non-negative number, got {v}"));
            }
        }
        if !(0.0..=1.0).contains(&self.drop_fix_prob) {
            return Err(format!(
                "noise.drop_fix_prob must be in 0..=1, got {}",
                self.drop_fix_prob
            ));
        }
        Ok(())
    }
}

/// One device's sensors.
#[derive(Debug, Clone)]
pub struct Sensors {
    cfg: NoiseConfig,
    rng: ChaCha8Rng,
    /// Current GPS error, metres east and north.
    jitter: (f64, f64),
    last_good: Option<LatLon>,
    sats: f64,
}

impl Sensors {
    pub fn new(cfg: NoiseConfig, rng: ChaCha8Rng) -> Sensors {
        Sensors {
            cfg,
            rng,
            jitter: (0.0, 0.0),
            last_good: None,
            sats: 9.0,
        }
    }

    /// Read the sensors: the position a tracker would report for `s`.
    pub fn read(&mut self, s: &VehicleState, tank_l: f64) -> Position {
        let r = &mut self.rng;
        // AR(1) with φ = 0.8: innovation scale √(1-φ²) = 0.6 keeps the stationary σ.
        let sigma = self.cfg.gps_jitter_m;
        self.jitter.0 = 0.8 * self.jitter.0 + 0.6 * sigma * n(r);
        self.jitter.1 = 0.8 * self.jitter.1 + 0.6 * sigma * n(r);
        self.sats = (self.sats + n(r) * 0.5).clamp(5.0, 14.0);
        let dropped = r.random_bool(self.cfg.drop_fix_prob.clamp(0.0, 1.0));

        let true_pos = s.pos;
        let jittered = {
            let east = offset(true_pos, 90.0, self.jitter.0);
            offset(east, 0.0, self.jitter.1)
        };
        let (at, valid, sats) = if dropped {
            (self.last_good.unwrap_or(jittered), false, r.random_range(0..3u8))
        } else {
            self.last_good = Some(jittered);
            (jittered, true, self.sats.round() as u8)
        };
        let hdop = if valid {
            (12.0 / f64::from(sats.max(1))).clamp(0.6, 5.0)
        } else {
            25.0
        };

        let slosh = self.cfg.fuel_slosh_pct * (s.accel_ms2 / 3.0).clamp(-2.0, 2.0);
        let fuel_pct_true = if tank_l > 0.0 { s.fuel_l / tank_l * 100.0 } else { 0.0 };
        let fuel_pct = (fuel_pct_true + slosh + self.cfg.fuel_noise_pct * n(r)).clamp(0.0, 100.0);
        let an = self.cfg.accel_noise_mg;
        let mg = |ms2: f64| ms2 / G * 1000.0;
        let accel = [
            (mg(s.accel_ms2) + an * n(r)).round() as i32,
            (mg(s.lateral_ms2) + an * n(r)).round() as i32,
            (1000.0 + an * n(r)).round() as i32,
        ];

        let mut p = Position::new(s.time, round6(at.lat), round6(at.lon), valid);
        p.altitude_m = Some(s.altitude_m.round());
        // Trackers report whole km/h and degrees; rounding here keeps every encoder exact.
        p.speed_kmh = Some(if valid { (s.speed_ms * 3.6).round() } else { 0.0 });
        p.course_deg = Some(s.heading_deg.round().rem_euclid(360.0));
        p.satellites = Some(sats);
        p.hdop = Some((hdop * 10.0).round() / 10.0);
        p.attributes = Attributes {
            ignition: Some(s.ignition),
            motion: Some(s.speed_ms > 0.3),
            odometer_m: Some(s.odometer_m.round()),
            fuel_level_pct: Some((fuel_pct * 10.0).round() / 10.0),
            fuel_level_l: Some((fuel_pct / 100.0 * tank_l * 10.0).round() / 10.0),
            fuel_used_l: Some((s.fuel_used_l * 100.0).round() / 100.0),
            fuel_rate_lph: Some((s.fuel_rate_lph * 10.0).round() / 10.0),
            rpm: Some(s.rpm.round()),
            obd_speed_kmh: Some((s.speed_ms * 3.6).round()),
            coolant_c: Some(s.coolant_c.round()),
            engine_hours: Some((s.engine_s / 3600.0 * 10.0).round() / 10.0),
            power_v: Some((s.power_v * 100.0).round() / 100.0),
            battery_v: Some(s.battery_v),
            dtcs: s.dtcs.clone(),
            accel_mg: Some(accel),
            ..Attributes::default()
        };
        p
    }
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// A standard normal draw.
fn n(r: &mut ChaCha8Rng) -> f64 {
    r.sample(StandardNormal)
}
