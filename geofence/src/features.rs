//! GeoJSON in and out.
//!
//! A fence is a GeoJSON Feature:
//!
//! ```json
//! { "type": "Feature", "id": 17,
//!   "geometry": { "type": "Polygon", "coordinates": [[[13.4, 52.5], ...]] },
//!   "properties": { "name": "Depot", "rules": { "enter_dwell_s": 30, "hysteresis_m": 25 } } }
//! ```
//!
//! GeoJSON has no circle or corridor, so they ride on a Point with `radius_m` and on a
//! LineString with `width_m` in the properties (the convention most map editors use).
//! The id must be a non-negative integer (or a string holding one). Unknown properties
//! are ignored; unknown keys inside `rules` are refused, so a typo is not silently lost.

use geo::{Coord, LineString, MultiPolygon, Point, Polygon};
use geojson::{Feature, FeatureCollection, GeoJson, Geometry, GeometryValue, JsonObject, Position, feature::Id};

use crate::error::FenceError;
use crate::rules::FenceRules;
use crate::shape::{Fence, FenceId, Shape};

fn gj_err(msg: impl Into<String>) -> FenceError {
    FenceError::GeoJson(msg.into())
}

/// Parse a FeatureCollection (or a single Feature) into validated fences.
pub fn fences_from_geojson(text: &str) -> Result<Vec<Fence>, FenceError> {
    let gj: GeoJson = text.parse().map_err(|e: geojson::Error| gj_err(e.to_string()))?;
    match gj {
        GeoJson::FeatureCollection(fc) => fc
            .features
            .iter()
            .enumerate()
            .map(|(i, f)| {
                fence_from_feature(f).map_err(|e| match e {
                    FenceError::GeoJson(m) => gj_err(format!("feature {i}: {m}")),
                    e => e,
                })
            })
            .collect(),
        GeoJson::Feature(f) => Ok(vec![fence_from_feature(&f)?]),
        GeoJson::Geometry(_) => Err(gj_err("expected a Feature or FeatureCollection, got a bare geometry")),
    }
}

/// Write fences as a FeatureCollection.
pub fn fences_to_geojson(fences: &[Fence]) -> String {
    let fc: FeatureCollection = fences.iter().map(fence_to_feature).collect();
    GeoJson::FeatureCollection(fc).to_string()
}

/// One Feature → one validated fence.
pub fn fence_from_feature(f: &Feature) -> Result<Fence, FenceError> {
    let id = match &f.id {
        Some(Id::Number(n)) => n.as_u64(),
        Some(Id::String(s)) => s.parse().ok(),
        None => None,
    }
    .map(FenceId)
    .ok_or_else(|| gj_err("feature id must be a non-negative integer"))?;
    let props = f.properties.as_ref();
    let prop = |k: &str| props.and_then(|p| p.get(k));
    let num = |k: &str| -> Result<f64, FenceError> {
        prop(k)
            .and_then(|v| v.as_f64())
            .ok_or_else(|| gj_err(format!("fence {id}: property {k:?} (a number, metres) is required")))
    };
    let geometry = f
        .geometry
        .as_ref()
        .ok_or_else(|| gj_err(format!("fence {id}: feature has no geometry")))?;
    let shape = match &geometry.value {
        GeometryValue::Polygon { coordinates } => Shape::Polygon(polygon(coordinates)?),
        GeometryValue::MultiPolygon { coordinates } => Shape::MultiPolygon(MultiPolygon(
            coordinates.iter().map(|p| polygon(p)).collect::<Result<_, _>>()?,
        )),
        GeometryValue::Point { coordinates } => Shape::Circle {
            center: Point(coord(coordinates)?),
            radius_m: num("radius_m")?,
        },
        GeometryValue::LineString { coordinates } => Shape::Corridor {
            line: line(coordinates)?,
            width_m: num("width_m")?,
        },
        other => {
            return Err(gj_err(format!(
                "fence {id}: geometry {} is not a fence shape (Polygon, MultiPolygon, Point+radius_m, LineString+width_m)",
                other.type_name()
            )));
        }
    };
    let rules = match prop("rules") {
        None | Some(serde_json::Value::Null) => FenceRules::default(),
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| FenceError::InFence {
            id,
            source: Box::new(FenceError::Rule(e.to_string())),
        })?,
    };
    let fence = Fence::new(id, shape, rules)?;
    Ok(match prop("name").and_then(|v| v.as_str()) {
        Some(n) => fence.with_name(n),
        None => fence,
    })
}

/// One fence → one Feature (the shape as given, rings closed).
pub fn fence_to_feature(fence: &Fence) -> Feature {
    let mut props = JsonObject::new();
    if let Some(n) = fence.name() {
        props.insert("name".into(), n.into());
    }
    let value = match fence.shape() {
        Shape::Polygon(p) => GeometryValue::Polygon {
            coordinates: polygon_out(p),
        },
        Shape::MultiPolygon(mp) => GeometryValue::MultiPolygon {
            coordinates: mp.0.iter().map(polygon_out).collect(),
        },
        Shape::Circle { center, radius_m } => {
            props.insert("radius_m".into(), (*radius_m).into());
            GeometryValue::Point {
                coordinates: pos(center.0),
            }
        }
        Shape::Corridor { line, width_m } => {
            props.insert("width_m".into(), (*width_m).into());
            GeometryValue::LineString {
                coordinates: line.0.iter().map(|c| pos(*c)).collect(),
            }
        }
    };
    props.insert(
        "rules".into(),
        serde_json::to_value(fence.rules()).unwrap_or(serde_json::Value::Null),
    );
    Feature {
        bbox: None,
        geometry: Some(Geometry::new(value)),
        id: Some(Id::Number(fence.id().0.into())),
        properties: Some(props),
        foreign_members: None,
    }
}

fn coord(p: &Position) -> Result<Coord<f64>, FenceError> {
    let s = p.as_slice();
    if s.len() < 2 {
        return Err(gj_err(format!(
            "position has {} values, needs longitude and latitude",
            s.len()
        )));
    }
    Ok(Coord { x: s[0], y: s[1] })
}

fn line(ps: &[Position]) -> Result<LineString<f64>, FenceError> {
    Ok(LineString(ps.iter().map(coord).collect::<Result<_, _>>()?))
}

fn polygon(rings: &[Vec<Position>]) -> Result<Polygon<f64>, FenceError> {
    let mut it = rings.iter();
    let exterior = line(it.next().ok_or_else(|| gj_err("polygon has no rings"))?)?;
    let interiors = it.map(|r| line(r)).collect::<Result<_, _>>()?;
    Ok(Polygon::new(exterior, interiors))
}

fn pos(c: Coord<f64>) -> Position {
    Position::from([c.x, c.y])
}

fn polygon_out(p: &Polygon<f64>) -> Vec<Vec<Position>> {
    std::iter::once(p.exterior())
        .chain(p.interiors())
        .map(|r| r.0.iter().map(|c| pos(*c)).collect())
        .collect()
}
