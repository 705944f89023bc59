//! Distances in metres on a spherical Earth.
//!
//! Two tools, picked for speed where the answer only has to be good to a few metres:
//!
//! * [`haversine_m`] for point-to-point (circles). Exact on the sphere; the sphere itself
//!   differs from WGS84 by at most ~0.5 %.
//! * [`segment_distance_m`] for point-to-edge (corridors, hysteresis at polygon edges). It
//!   projects onto a local equirectangular plane centred on the query point. Fence edges
//!   are straight lines in longitude/latitude (as in GeoJSON, PostGIS `geometry` and
//!   shapely), and that projection is affine in longitude/latitude, so an edge stays
//!   straight and the closest point is found exactly. The only error is the scale: exact
//!   at the query's latitude and off by `tan(lat) · Δlat` at the closest point, i.e.
//!   below 0.3 % for distances under 10 km south of 70° (we refuse zones beyond 85°).
//!
//! Longitude differences are wrapped into -180..180 so the antimeridian needs no special
//! case in callers.

/// Mean Earth radius (IUGG), metres.
pub const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// Metres in one degree of latitude (and of longitude at the equator) on that sphere.
pub const M_PER_DEG: f64 = EARTH_RADIUS_M * std::f64::consts::PI / 180.0;

/// Wrap a longitude difference into -180..=180.
#[inline]
pub fn wrap_lon_delta(d: f64) -> f64 {
    if (-180.0..=180.0).contains(&d) {
        d
    } else {
        let r = (d + 180.0).rem_euclid(360.0) - 180.0;
        if r == -180.0 && d > 0.0 { 180.0 } else { r }
    }
}

/// Great-circle distance between two `[lon, lat]` points in degrees, metres.
#[inline]
pub fn haversine_m(a: [f64; 2], b: [f64; 2]) -> f64 {
    let (lat1, lat2) = (a[1].to_radians(), b[1].to_radians());
    let dlat = lat2 - lat1;
    let dlon = wrap_lon_delta(b[0] - a[0]).to_radians();
    let h = (dlat * 0.5).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon * 0.5).sin().powi(2);
    2.0 * EARTH_RADIUS_M * h.sqrt().min(1.0).asin()
}

/// Distance in metres from `q` to the segment `a`→`b` (all `[lon, lat]` degrees).
///
/// `cos_q` is `cos(q.lat)`, passed in because callers test many edges against one point.
/// `a`→`b` must not itself jump across the antimeridian (store such edges unwrapped,
/// e.g. 179 → 181); `q` may be on either side.
#[inline]
pub fn segment_distance_m(q: [f64; 2], a: [f64; 2], b: [f64; 2], cos_q: f64) -> f64 {
    let kx = cos_q * M_PER_DEG;
    // Wrap only the first vertex and carry the edge's own delta: wrapping both could
    // turn a short edge behind the query's antipode into one spanning the whole globe.
    let ax = wrap_lon_delta(a[0] - q[0]) * kx;
    let ay = (a[1] - q[1]) * M_PER_DEG;
    let dx = (b[0] - a[0]) * kx;
    let dy = (b[1] - a[1]) * M_PER_DEG;
    let len2 = dx * dx + dy * dy;
    let t = if len2 > 0.0 {
        (-(ax * dx + ay * dy) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let px = ax + t * dx;
    let py = ay + t * dy;
    (px * px + py * py).sqrt()
}

/// Degrees of longitude that `m` metres span at latitude `lat` (never less than the
/// latitude degrees, and bounded for latitudes we accept).
#[inline]
pub fn lon_degrees_for(m: f64, lat: f64) -> f64 {
    let c = lat.to_radians().cos().max(1e-6);
    m / (M_PER_DEG * c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap() {
        assert_eq!(wrap_lon_delta(10.0), 10.0);
        assert_eq!(wrap_lon_delta(350.0), -10.0);
        assert_eq!(wrap_lon_delta(-350.0), 10.0);
        assert_eq!(wrap_lon_delta(540.0), 180.0);
    }

    #[test]
    fn haversine_known_distance() {
        // One degree of latitude.
        let d = haversine_m([0.0, 0.0], [0.0, 1.0]);
        assert!((d - M_PER_DEG).abs() < 1e-6);
        // Across the antimeridian: 0.2° of longitude at the equator.
        let d = haversine_m([179.9, 0.0], [-179.9, 0.0]);
        assert!((d - 0.2 * M_PER_DEG).abs() < 1e-3, "{d}");
    }

    #[test]
    fn segment_distance_matches_haversine_nearby() {
        // A point 500 m north of an east-west edge at 60°N.
        let lat = 60.0;
        let q = [10.0, lat + 500.0 / M_PER_DEG];
        let d = segment_distance_m(q, [9.9, lat], [10.1, lat], q[1].to_radians().cos());
        assert!((d - 500.0).abs() < 1.0, "{d}");
        let h = haversine_m(q, [10.0, lat]);
        assert!((d - h).abs() / h < 0.003);
    }

    #[test]
    fn segment_distance_across_antimeridian() {
        let q = [-179.99, 0.0];
        // Edge stored unwrapped: 179.9 → 180.1, i.e. passing 0.01° east of the query's west.
        let d = segment_distance_m(q, [179.9, -1.0], [179.9, 1.0], 1.0);
        assert!((d - 0.11 * M_PER_DEG).abs() < 1.0, "{d}");
        // The same edge seen from the other side.
        let d2 = segment_distance_m([179.99, 0.0], [179.9, -1.0], [179.9, 1.0], 1.0);
        assert!((d2 - 0.09 * M_PER_DEG).abs() < 1.0, "{d2}");
    }
}
