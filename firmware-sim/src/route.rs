//! Routes: random road-like paths in a bounding box, or a GeoJSON LineString.
//!
//! A route is an endless sequence of waypoints. Random routes grow lazily as the vehicle
//! drives (straight blocks joined by mostly right-angle turns, bounced back into the box);
//! a LineString is driven there and back. Each waypoint says how fast its leg may be
//! driven and whether the vehicle stops there (a junction or a light).

use rand::Rng as _;
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

pub const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// A point in degrees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatLon {
    pub lat: f64,
    pub lon: f64,
}

/// Great-circle distance in metres.
pub fn distance_m(a: LatLon, b: LatLon) -> f64 {
    let (p1, p2) = (a.lat.to_radians(), b.lat.to_radians());
    let dp = p2 - p1;
    let dl = (b.lon - a.lon).to_radians();
    let h = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * h.sqrt().min(1.0).asin()
}

/// Initial bearing from `a` to `b`, degrees in [0, 360).
pub fn bearing_deg(a: LatLon, b: LatLon) -> f64 {
    let (p1, p2) = (a.lat.to_radians(), b.lat.to_radians());
    let dl = (b.lon - a.lon).to_radians();
    let y = dl.sin() * p2.cos();
    let x = p1.cos() * p2.sin() - p1.sin() * p2.cos() * dl.cos();
    y.atan2(x).to_degrees().rem_euclid(360.0)
}

/// The point `dist_m` from `a` along `bearing` (local flat-earth step; legs are short).
pub fn offset(a: LatLon, bearing: f64, dist_m: f64) -> LatLon {
    let b = bearing.to_radians();
    let dlat = dist_m * b.cos() / EARTH_RADIUS_M;
    let dlon = dist_m * b.sin() / (EARTH_RADIUS_M * a.lat.to_radians().cos().max(1e-6));
    LatLon {
        lat: a.lat + dlat.to_degrees(),
        lon: a.lon + dlon.to_degrees(),
    }
}

/// Signed smallest turn from heading `from` to `to`, degrees in (-180, 180].
pub fn turn_deg(from: f64, to: f64) -> f64 {
    let d = (to - from).rem_euclid(360.0);
    if d > 180.0 { d - 360.0 } else { d }
}

/// A lat/lon box.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct BBox {
    pub min_lat: f64,
    pub min_lon: f64,
    pub max_lat: f64,
    pub max_lon: f64,
}

impl BBox {
    /// Central Vilnius, about 8 × 6 km: a city grid is where most fleet traffic is.
    pub const DEFAULT: BBox = BBox {
        min_lat: 54.66,
        min_lon: 25.22,
        max_lat: 54.72,
        max_lon: 25.34,
    };

    pub fn contains(&self, p: LatLon) -> bool {
        (self.min_lat..=self.max_lat).contains(&p.lat) && (self.min_lon..=self.max_lon).contains(&p.lon)
    }

    pub fn center(&self) -> LatLon {
        LatLon {
            lat: (self.min_lat + self.max_lat) / 2.0,
            lon: (self.min_lon + self.max_lon) / 2.0,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        let ok = self.min_lat < self.max_lat
            && self.min_lon < self.max_lon
            && self.min_lat >= -85.0
            && self.max_lat <= 85.0
            && self.min_lon >= -180.0
            && self.max_lon <= 180.0;
        if ok {
            Ok(())
        } else {
            Err(format!(
                "bad bounding box {self:?}: need min < max, |lat| ≤ 85, |lon| ≤ 180"
            ))
        }
    }
}

/// One waypoint: the end of a leg.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Waypoint {
    pub at: LatLon,
    /// Speed the leg ending here may be driven at, km/h.
    pub cruise_kmh: f64,
    /// Seconds to wait here (0: drive through).
    pub stop_s: f64,
}

/// What the route is made from.
#[derive(Debug, Clone, PartialEq)]
pub enum RouteSpec {
    Random(BBox),
    Line(Vec<LatLon>),
}

impl RouteSpec {
    /// Read a GeoJSON LineString (bare geometry, Feature, or the first LineString of a
    /// FeatureCollection). Coordinates are `[lon, lat]` as GeoJSON says.
    pub fn from_geojson(text: &str) -> Result<RouteSpec, String> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("route file is not JSON: {e}"))?;
        let line = find_linestring(&v).ok_or("route file holds no GeoJSON LineString")?;
        let coords = line
            .as_array()
            .ok_or("LineString coordinates must be an array")?
            .iter()
            .map(|c| {
                let lon = c.get(0).and_then(serde_json::Value::as_f64);
                let lat = c.get(1).and_then(serde_json::Value::as_f64);
                match (lat, lon) {
                    (Some(lat), Some(lon)) if lat.abs() <= 90.0 && lon.abs() <= 180.0 => Ok(LatLon { lat, lon }),
                    _ => Err(format!("bad LineString coordinate {c}")),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        if coords.len() < 2 {
            return Err("a route LineString needs at least two points".into());
        }
        Ok(RouteSpec::Line(coords))
    }
}

fn find_linestring(v: &serde_json::Value) -> Option<&serde_json::Value> {
    match v.get("type")?.as_str()? {
        "LineString" => v.get("coordinates"),
        "Feature" => find_linestring(v.get("geometry")?),
        "FeatureCollection" => v.get("features")?.as_array()?.iter().find_map(find_linestring),
        _ => None,
    }
}

/// An endless route.
#[derive(Debug, Clone)]
pub struct Route {
    points: Vec<Waypoint>,
    spec: RouteSpec,
    rng: ChaCha8Rng,
    /// Index in the LineString and direction, for there-and-back driving.
    line_cursor: (usize, bool),
}

impl Route {
    pub fn new(spec: RouteSpec, mut rng: ChaCha8Rng) -> Route {
        let start = match &spec {
            RouteSpec::Random(bbox) => LatLon {
                lat: rng.random_range(bbox.min_lat..bbox.max_lat),
                lon: rng.random_range(bbox.min_lon..bbox.max_lon),
            },
            RouteSpec::Line(pts) => pts[0],
        };
        let mut r = Route {
            points: vec![Waypoint {
                at: start,
                cruise_kmh: 0.0,
                stop_s: 0.0,
            }],
            spec,
            rng,
            line_cursor: (0, true),
        };
        r.ensure(3);
        r
    }

    /// Waypoint `i`, growing the route as needed.
    pub fn point(&mut self, i: usize) -> Waypoint {
        self.ensure(i + 1);
        self.points[i]
    }

    /// Forget waypoints before `keep_from`, returning how many were dropped, so an
    /// endless drive does not grow memory. Callers shift their indices by the result.
    pub fn trim(&mut self, keep_from: usize) -> usize {
        let n = keep_from.min(self.points.len().saturating_sub(1));
        self.points.drain(..n);
        n
    }

    fn ensure(&mut self, n: usize) {
        while self.points.len() < n {
            let next = match &self.spec {
                RouteSpec::Random(bbox) => {
                    let bbox = *bbox;
                    self.next_random(bbox)
                }
                RouteSpec::Line(_) => self.next_line(),
            };
            self.points.push(next);
        }
    }

    fn next_random(&mut self, bbox: BBox) -> Waypoint {
        let n = self.points.len();
        let last = self.points[n - 1].at;
        let heading = if n >= 2 {
            bearing_deg(self.points[n - 2].at, last)
        } else {
            f64::from(self.rng.random_range(0..4u8)) * 90.0
        };
        let r: f64 = self.rng.random();
        // Mostly straight on or right-angle turns, like a street grid; a few bends.
        let turn = match r {
            x if x < 0.45 => 0.0,
            x if x < 0.7 => 90.0,
            x if x < 0.95 => -90.0,
            _ => self.rng.random_range(-35.0..35.0),
        };
        let len = self.rng.random_range(150.0..900.0);
        let mut h = (heading + turn).rem_euclid(360.0);
        let mut at = offset(last, h, len);
        if !bbox.contains(at) {
            h = (bearing_deg(last, bbox.center()) + self.rng.random_range(-30.0..30.0)).rem_euclid(360.0);
            at = offset(last, h, len);
        }
        // Road class per leg: residential, city arterial, ring road.
        let cruise_kmh = match self.rng.random::<f64>() {
            x if x < 0.3 => 30.0,
            x if x < 0.85 => 50.0,
            _ => 80.0,
        };
        let stop_s = if self.rng.random_bool(0.2) {
            self.rng.random_range(5.0..45.0)
        } else {
            0.0
        };
        Waypoint { at, cruise_kmh, stop_s }
    }

    fn next_line(&mut self) -> Waypoint {
        let RouteSpec::Line(pts) = &self.spec else {
            unreachable!("next_line is only called for LineString routes")
        };
        let (i, forward) = self.line_cursor;
        let (j, fwd) = match (forward, i) {
            (true, i) if i + 1 < pts.len() => (i + 1, true),
            (true, i) => (i.saturating_sub(1), false),
            (false, 0) => (1.min(pts.len() - 1), true),
            (false, i) => (i - 1, false),
        };
        self.line_cursor = (j, fwd);
        // Turning around at an end of the line is a stop.
        let end = j == 0 || j + 1 == pts.len();
        Waypoint {
            at: pts[j],
            cruise_kmh: 50.0,
            stop_s: if end { 30.0 } else { 0.0 },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn random_route_stays_near_box() {
        let mut r = Route::new(RouteSpec::Random(BBox::DEFAULT), ChaCha8Rng::seed_from_u64(3));
        for i in 0..2000 {
            let p = r.point(i).at;
            assert!(distance_m(p, BBox::DEFAULT.center()) < 10_000.0, "{p:?}");
        }
    }

    #[test]
    fn line_route_goes_there_and_back() {
        let a = LatLon { lat: 54.0, lon: 25.0 };
        let b = offset(a, 90.0, 1000.0);
        let mut r = Route::new(RouteSpec::Line(vec![a, b]), ChaCha8Rng::seed_from_u64(1));
        assert_eq!(r.point(1).at, b);
        assert_eq!(r.point(2).at, a);
        assert_eq!(r.point(3).at, b);
    }

    #[test]
    fn geojson_feature_collection() {
        let text = r#"{"type":"FeatureCollection","features":[{"type":"Feature","geometry":{"type":"LineString","coordinates":[[25.0,54.0],[25.01,54.0]]}}]}"#;
        let RouteSpec::Line(p) = RouteSpec::from_geojson(text).unwrap() else {
            panic!()
        };
        assert_eq!(p[1], LatLon { lat: 54.0, lon: 25.01 });
        assert!(RouteSpec::from_geojson("{}").is_err());
    }
}
