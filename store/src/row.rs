//! The rows the writer persists, and their mapping from `protocols` model types.

use chrono::{DateTime, Utc};
use protocols::model::{Attributes, Position};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One fix as stored in `positions`. Common attributes are typed columns so that reports
/// and rollups never parse JSON; everything else the device sent (including the raw IO
/// map) stays in `attributes` so nothing is lost.
///
/// Columns that PostgreSQL stores as `real` are `f32` here: speed, course, voltages and
/// the like carry no more precision than that, and the row is 4 bytes narrower per field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct PositionRow {
    pub device_id: i64,
    pub fix_time: DateTime<Utc>,
    pub server_time: DateTime<Utc>,
    pub lat: f64,
    pub lon: f64,
    pub altitude: Option<f32>,
    pub speed_kmh: Option<f32>,
    pub course: Option<f32>,
    pub satellites: Option<i16>,
    pub hdop: Option<f32>,
    pub valid: bool,
    pub ignition: Option<bool>,
    pub motion: Option<bool>,
    pub odometer_m: Option<f64>,
    pub fuel_level_pct: Option<f32>,
    pub fuel_used_l: Option<f64>,
    pub rpm: Option<f32>,
    pub coolant_c: Option<f32>,
    pub power_v: Option<f32>,
    pub battery_v: Option<f32>,
    pub event: Option<i32>,
    /// Alarm names (`sos`, `overspeed`, or a vendor code kept verbatim). Stored as NULL
    /// when empty, which is nearly always.
    pub alarms: Option<Vec<String>>,
    pub dtcs: Option<Vec<String>>,
    /// The attributes with no typed column, as a JSON object; `None` when there are none.
    pub attributes: Option<Value>,
}

/// Attribute keys that have their own column, removed from the JSON remainder.
const TYPED_KEYS: &[&str] = &[
    "ignition",
    "motion",
    "odometer_m",
    "fuel_level_pct",
    "fuel_used_l",
    "rpm",
    "coolant_c",
    "power_v",
    "battery_v",
    "event",
    "alarm",
    "dtcs",
];

impl PositionRow {
    /// Maps a decoded fix for a resolved device. `server_time` is when the frame arrived.
    pub fn from_position(device_id: i64, p: &Position, server_time: DateTime<Utc>) -> Self {
        let a = &p.attributes;
        PositionRow {
            device_id,
            fix_time: p.time,
            server_time,
            lat: p.latitude,
            lon: p.longitude,
            altitude: p.altitude_m.map(|v| v as f32),
            speed_kmh: p.speed_kmh.map(|v| v as f32),
            course: p.course_deg.map(|v| v as f32),
            satellites: p.satellites.map(i16::from),
            hdop: p.hdop.map(|v| v as f32),
            valid: p.valid,
            ignition: a.ignition,
            motion: a.motion,
            odometer_m: a.odometer_m,
            fuel_level_pct: a.fuel_level_pct.map(|v| v as f32),
            fuel_used_l: a.fuel_used_l,
            rpm: a.rpm.map(|v| v as f32),
            coolant_c: a.coolant_c.map(|v| v as f32),
            power_v: a.power_v.map(|v| v as f32),
            battery_v: a.battery_v.map(|v| v as f32),
            // An event code that does not fit a PostgreSQL integer is still kept, in JSON.
            event: a.event.and_then(|e| i32::try_from(e).ok()),
            alarms: (!a.alarms.is_empty()).then(|| {
                a.alarms
                    .iter()
                    .map(|al| match serde_json::to_value(al) {
                        Ok(Value::String(s)) => s,
                        other => format!("{other:?}"),
                    })
                    .collect()
            }),
            dtcs: (!a.dtcs.is_empty()).then(|| a.dtcs.clone()),
            attributes: remainder(a),
        }
    }
}

fn remainder(a: &Attributes) -> Option<Value> {
    let Ok(Value::Object(mut map)) = serde_json::to_value(a) else {
        return None;
    };
    for k in TYPED_KEYS {
        // `event` only has a typed home when it fits the column.
        if *k == "event" && a.event.is_some_and(|e| i32::try_from(e).is_err()) {
            continue;
        }
        map.remove(*k);
    }
    (!map.is_empty()).then_some(Value::Object(map))
}

/// One event (alarm, geofence crossing, trip start, DTC…) as stored in `events`.
/// `(device_id, time, kind)` is unique, so an operator that replays its input after a
/// restart does not duplicate what it already emitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct EventRow {
    pub device_id: i64,
    pub time: DateTime<Utc>,
    pub kind: String,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub geofence_id: Option<i64>,
    pub attributes: Value,
}

impl EventRow {
    pub fn new(device_id: i64, time: DateTime<Utc>, kind: impl Into<String>) -> Self {
        EventRow {
            device_id,
            time,
            kind: kind.into(),
            lat: None,
            lon: None,
            geofence_id: None,
            attributes: Value::Object(Default::default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocols::model::{Alarm, IoValue};

    #[test]
    fn typed_attributes_become_columns_and_the_rest_stays_in_json() {
        let t = DateTime::parse_from_rfc3339("2024-05-01T10:00:00Z").unwrap().to_utc();
        let mut p = Position::new(t, 54.1, 25.3, true);
        p.speed_kmh = Some(40.0);
        p.satellites = Some(9);
        p.attributes.ignition = Some(true);
        p.attributes.odometer_m = Some(1234.0);
        p.attributes.rssi = Some(4);
        p.attributes.raise(Alarm::Sos);
        p.attributes.raise(Alarm::Other("X7".into()));
        p.attributes.io.push_id(239, IoValue::U64(1));
        let row = PositionRow::from_position(7, &p, t);
        assert_eq!(row.device_id, 7);
        assert_eq!(row.speed_kmh, Some(40.0));
        assert_eq!(row.satellites, Some(9));
        assert_eq!(row.ignition, Some(true));
        assert_eq!(row.odometer_m, Some(1234.0));
        assert_eq!(row.alarms, Some(vec!["sos".to_string(), "X7".to_string()]));
        assert_eq!(row.attributes, Some(serde_json::json!({"rssi": 4, "io": {"239": 1}})));
    }

    #[test]
    fn a_bare_fix_has_no_json() {
        let t = Utc::now();
        let row = PositionRow::from_position(1, &Position::new(t, 1.0, 2.0, false), t);
        assert_eq!(row.attributes, None);
        assert_eq!(row.alarms, None);
    }
}
