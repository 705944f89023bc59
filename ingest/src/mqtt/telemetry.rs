//! `clutch/<id>/telemetry` payloads: positions (with OBD values in their attributes) as
//! JSON, in the `clutch decode` field names.
//!
//! Accepted shapes: `{"id": …, "seq": n, "positions": [ … ]}` (what `clutch sim`
//! publishes), one position object, or an array of them. A position needs `time`
//! (RFC 3339, or Unix seconds), `latitude` and `longitude`; everything else is optional.
//! Unknown attribute names are kept in the raw IO map rather than dropped.

use chrono::{DateTime, TimeZone, Utc};
use protocols::{Alarm, Attributes, IoValue, Position};
use serde_json::{Map, Value};

/// A decoded telemetry payload.
#[derive(Debug)]
pub struct Telemetry {
    pub seq: Option<Value>,
    pub positions: Vec<Position>,
}

/// Why a payload was refused (it is counted and logged, not acked).
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("expected an object with `positions`, a position, or an array of positions")]
    Shape,
    #[error("position {index}: {reason}")]
    Position { index: usize, reason: String },
    #[error("{0} positions in one message (limit {MAX_POSITIONS})")]
    TooMany(usize),
}

/// Positions in one message; a device's offline buffer is sent in slices.
pub const MAX_POSITIONS: usize = 10_000;

pub fn parse(payload: &[u8]) -> Result<Telemetry, TelemetryError> {
    let v: Value = serde_json::from_slice(payload)?;
    let (seq, list) = match v {
        Value::Array(a) => (None, a),
        Value::Object(mut o) if o.contains_key("positions") => {
            let seq = o.remove("seq");
            match o.remove("positions") {
                Some(Value::Array(a)) => (seq, a),
                _ => return Err(TelemetryError::Shape),
            }
        }
        Value::Object(o) => {
            let seq = o.get("seq").cloned();
            (seq, vec![Value::Object(o)])
        }
        _ => return Err(TelemetryError::Shape),
    };
    if list.len() > MAX_POSITIONS {
        return Err(TelemetryError::TooMany(list.len()));
    }
    let positions = list
        .into_iter()
        .enumerate()
        .map(|(index, p)| position(p).map_err(|reason| TelemetryError::Position { index, reason }))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Telemetry { seq, positions })
}

fn position(v: Value) -> Result<Position, String> {
    let Value::Object(o) = v else {
        return Err("not an object".into());
    };
    let time = match o.get("time").or_else(|| o.get("timestamp")) {
        Some(Value::String(s)) => DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| format!("time: {e}"))?,
        Some(Value::Number(n)) => n
            .as_f64()
            .and_then(|s| Utc.timestamp_millis_opt((s * 1000.0) as i64).single())
            .ok_or("time: out of range")?,
        _ => return Err("missing `time`".into()),
    };
    let coord = |names: &[&str], limit: f64| -> Result<f64, String> {
        let x = names
            .iter()
            .find_map(|n| o.get(*n).and_then(Value::as_f64))
            .ok_or_else(|| format!("missing `{}`", names[0]))?;
        if x.is_finite() && x.abs() <= limit {
            Ok(x)
        } else {
            Err(format!("`{}` out of range: {x}", names[0]))
        }
    };
    let mut p = Position::new(
        time,
        coord(&["latitude", "lat"], 90.0)?,
        coord(&["longitude", "lon", "lng"], 180.0)?,
        o.get("valid").and_then(Value::as_bool).unwrap_or(true),
    );
    let f = |k: &str| o.get(k).and_then(Value::as_f64).filter(|x| x.is_finite());
    p.altitude_m = f("altitude_m");
    p.speed_kmh = f("speed_kmh");
    p.course_deg = f("course_deg");
    p.hdop = f("hdop");
    p.satellites = o.get("satellites").and_then(Value::as_u64).map(|s| s.min(255) as u8);
    if let Some(Value::Object(a)) = o.get("attributes") {
        p.attributes = attributes(a);
    }
    Ok(p)
}

fn attributes(a: &Map<String, Value>) -> Attributes {
    let mut out = Attributes::default();
    for (k, v) in a {
        let num = v.as_f64().filter(|x| x.is_finite());
        let known = match k.as_str() {
            "ignition" => v.as_bool().map(|b| out.ignition = Some(b)).is_some(),
            "motion" => v.as_bool().map(|b| out.motion = Some(b)).is_some(),
            "odometer_m" => num.map(|x| out.odometer_m = Some(x)).is_some(),
            "trip_odometer_m" => num.map(|x| out.trip_odometer_m = Some(x)).is_some(),
            "fuel_level_pct" => num.map(|x| out.fuel_level_pct = Some(x)).is_some(),
            "fuel_level_l" => num.map(|x| out.fuel_level_l = Some(x)).is_some(),
            "fuel_used_l" => num.map(|x| out.fuel_used_l = Some(x)).is_some(),
            "fuel_rate_lph" => num.map(|x| out.fuel_rate_lph = Some(x)).is_some(),
            "rpm" => num.map(|x| out.rpm = Some(x)).is_some(),
            "obd_speed_kmh" => num.map(|x| out.obd_speed_kmh = Some(x)).is_some(),
            "engine_load_pct" => num.map(|x| out.engine_load_pct = Some(x)).is_some(),
            "throttle_pct" => num.map(|x| out.throttle_pct = Some(x)).is_some(),
            "coolant_c" => num.map(|x| out.coolant_c = Some(x)).is_some(),
            "intake_temp_c" => num.map(|x| out.intake_temp_c = Some(x)).is_some(),
            "ambient_c" => num.map(|x| out.ambient_c = Some(x)).is_some(),
            "oil_temp_c" => num.map(|x| out.oil_temp_c = Some(x)).is_some(),
            "map_kpa" => num.map(|x| out.map_kpa = Some(x)).is_some(),
            "maf_gs" => num.map(|x| out.maf_gs = Some(x)).is_some(),
            "run_time_s" => num.map(|x| out.run_time_s = Some(x)).is_some(),
            "engine_hours" => num.map(|x| out.engine_hours = Some(x)).is_some(),
            "distance_mil_on_km" => num.map(|x| out.distance_mil_on_km = Some(x)).is_some(),
            "distance_since_clear_km" => num.map(|x| out.distance_since_clear_km = Some(x)).is_some(),
            "battery_v" => num.map(|x| out.battery_v = Some(x)).is_some(),
            "battery_pct" => num.map(|x| out.battery_pct = Some(x)).is_some(),
            "power_v" => num.map(|x| out.power_v = Some(x)).is_some(),
            "rssi" => v
                .as_i64()
                .map(|x| out.rssi = Some(x.clamp(i32::MIN as i64, i32::MAX as i64) as i32))
                .is_some(),
            "event" => v
                .as_u64()
                .map(|x| out.event = Some(x.min(u32::MAX as u64) as u32))
                .is_some(),
            "vin" => v.as_str().map(|x| out.vin = Some(x.to_string())).is_some(),
            "driver_id" => v.as_str().map(|x| out.driver_id = Some(x.to_string())).is_some(),
            "dtcs" => v
                .as_array()
                .map(|a| out.dtcs = a.iter().filter_map(|d| d.as_str().map(String::from)).collect())
                .is_some(),
            "alarm" | "alarms" => {
                let list: Vec<Value> = match v {
                    Value::Array(a) => a.clone(),
                    other => vec![other.clone()],
                };
                for a in list {
                    if let Ok(alarm) = serde_json::from_value::<Alarm>(a) {
                        out.raise(alarm);
                    }
                }
                true
            }
            "accel_mg" => v
                .as_array()
                .filter(|a| a.len() == 3)
                .and_then(|a| {
                    let g = |i: usize| a[i].as_i64().map(|x| x.clamp(i32::MIN as i64, i32::MAX as i64) as i32);
                    Some([g(0)?, g(1)?, g(2)?])
                })
                .map(|x| out.accel_mg = Some(x))
                .is_some(),
            "io" => {
                if let Value::Object(io) = v {
                    for (ik, iv) in io {
                        push_io(&mut out, ik, iv);
                    }
                }
                true
            }
            _ => false,
        };
        if !known {
            push_io(&mut out, k, v);
        }
    }
    out
}

fn push_io(out: &mut Attributes, k: &str, v: &Value) {
    let value = match v {
        Value::Bool(b) => IoValue::Bool(*b),
        Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => IoValue::U64(u),
            (_, Some(i), _) => IoValue::I64(i),
            (_, _, Some(f)) => IoValue::F64(f),
            _ => return,
        },
        Value::String(s) => IoValue::Text(s.clone()),
        Value::Null => return,
        other => IoValue::Text(other.to_string()),
    };
    match k.parse::<u32>() {
        Ok(id) => out.io.push_id(id, value),
        Err(_) => out.io.push_name(k, value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_three_shapes_and_round_trips_the_serialised_position() {
        let mut p = Position::new(Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(), 54.1, 25.3, true);
        p.speed_kmh = Some(40.0);
        p.attributes.ignition = Some(true);
        p.attributes.rpm = Some(1800.0);
        p.attributes.io.push_id(239, IoValue::U64(1));
        let one = serde_json::to_value(&p).unwrap();
        let sim = serde_json::json!({"id": "A", "seq": 7, "positions": [one.clone(), one.clone()]});
        let t = parse(sim.to_string().as_bytes()).unwrap();
        assert_eq!(t.seq, Some(serde_json::json!(7)));
        assert_eq!(t.positions, vec![p.clone(), p.clone()]);
        let t = parse(one.to_string().as_bytes()).unwrap();
        assert_eq!(t.positions, vec![p.clone()]);
        let t = parse(serde_json::json!([one]).to_string().as_bytes()).unwrap();
        assert_eq!(t.positions.len(), 1);
        let t = parse(br#"{"time": 1700000000, "lat": 1.5, "lon": 2.5, "attributes": {"coolant_c": 90, "x": "y"}}"#)
            .unwrap();
        assert_eq!(t.positions[0].time.timestamp(), 1_700_000_000);
        assert_eq!(t.positions[0].attributes.coolant_c, Some(90.0));
        assert_eq!(
            t.positions[0].attributes.io.get_name("x"),
            Some(&IoValue::Text("y".into()))
        );
    }

    #[test]
    fn refuses_bad_payloads() {
        assert!(matches!(parse(b"garbage"), Err(TelemetryError::Json(_))));
        assert!(matches!(parse(b"42"), Err(TelemetryError::Shape)));
        assert!(matches!(parse(br#"{"positions": 1}"#), Err(TelemetryError::Shape)));
        assert!(matches!(
            parse(br#"{"time": "2026-01-01T00:00:00Z", "latitude": 91, "longitude": 0}"#),
            Err(TelemetryError::Position { .. })
        ));
        assert!(matches!(
            parse(br#"[{"latitude": 1, "longitude": 2}]"#),
            Err(TelemetryError::Position { .. })
        ));
    }
}
