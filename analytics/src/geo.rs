//! Distances between fixes (haversine on the mean Earth radius: metres-level accuracy is
//! plenty for consumption per 100 km and motion checks).

const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// Great-circle distance, metres.
pub(crate) fn distance_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * a.sqrt().min(1.0).asin()
}

/// Whether a coordinate pair can be a real fix.
pub(crate) fn plausible(lat: f64, lon: f64) -> bool {
    lat.is_finite() && lon.is_finite() && lat.abs() <= 90.0 && lon.abs() <= 180.0 && !(lat == 0.0 && lon == 0.0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_degree_of_latitude() {
        let d = super::distance_m(54.0, 25.0, 55.0, 25.0);
        assert!((d - 111_195.0).abs() < 50.0, "{d}");
    }
}
