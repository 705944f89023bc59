//! A stored position, checked and annotated once for every operator: is it believable,
//! how far it moved, which speed to use.

use chrono::{DateTime, Utc};
use store::PositionRow;

/// One position as the operators see it.
#[derive(Debug, Clone, Copy)]
pub struct Fix {
    pub time: DateTime<Utc>,
    pub lat: f64,
    pub lon: f64,
    /// A real GNSS fix that passed the quality gate and is not a teleport: usable for
    /// anything position-based.
    pub good: bool,
    /// GPS speed when the fix is good, else the engine bus speed when the device sends it.
    pub speed_kmh: Option<f64>,
    /// Metres from the previous good fix (0 when this one is not good).
    pub moved_m: f64,
    /// Seconds since the previous processed fix of the device (0 for the first).
    pub dt_s: f64,
    pub ignition: Option<bool>,
    pub odometer_m: Option<f64>,
    pub rpm: Option<f64>,
    pub course: Option<f64>,
    pub satellites: Option<i16>,
    pub hdop: Option<f32>,
    /// Accelerometer x (longitudinal), y (lateral), z, in g.
    pub accel_g: Option<[f64; 3]>,
}

impl Fix {
    pub fn from_row(r: &PositionRow) -> Fix {
        let attrs = r.attributes.as_ref();
        let accel_g = attrs.and_then(|a| a.get("accel_mg")).and_then(|v| {
            let a = v.as_array()?;
            if a.len() < 3 {
                return None;
            }
            let g = |i: usize| a[i].as_f64().map(|x| x / 1000.0);
            Some([g(0)?, g(1)?, g(2)?])
        });
        let obd = attrs.and_then(|a| a.get("obd_speed_kmh")).and_then(|v| v.as_f64());
        Fix {
            time: r.fix_time,
            lat: r.lat,
            lon: r.lon,
            good: false,
            speed_kmh: if r.valid {
                r.speed_kmh.map(f64::from).or(obd)
            } else {
                obd
            },
            moved_m: 0.0,
            dt_s: 0.0,
            ignition: r.ignition,
            odometer_m: r.odometer_m.filter(|o| o.is_finite() && *o >= 0.0),
            rpm: r.rpm.map(f64::from),
            course: r.course.map(f64::from).filter(|c| c.is_finite()),
            satellites: r.satellites,
            hdop: r.hdop,
            accel_g: accel_g.filter(|a| a.iter().all(|x| x.is_finite() && x.abs() < 16.0)),
        }
    }
}
