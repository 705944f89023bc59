//! The one error type of the crate: every way a fence definition can be refused.
//!
//! Messages name the ring, the vertex and the limit so a dashboard can show them to the
//! person who drew the zone without translation. Nothing here is a runtime failure of
//! evaluation: once an index is built, evaluating positions cannot fail.

use crate::FenceId;

/// Why a fence (or a set of fences) was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum FenceError {
    #[error("coordinate {lon}, {lat} is out of range (longitude -180..180, latitude -90..90, finite)")]
    CoordinateOutOfRange { lon: f64, lat: f64 },

    #[error(
        "latitude {lat} is beyond ±{max}°: zones this close to a pole are refused (degree-based geometry degenerates there)"
    )]
    HighLatitude { lat: f64, max: f64 },

    #[error("{what} needs at least {min} distinct points, got {got}")]
    TooFewPoints { what: String, min: usize, got: usize },

    #[error("{what} intersects itself or another ring near {lon}, {lat}")]
    SelfIntersection { what: String, lon: f64, lat: f64 },

    #[error("hole {hole} is not inside the exterior ring")]
    HoleOutsideShell { hole: usize },

    #[error("hole {hole} lies inside hole {other}")]
    NestedHoles { hole: usize, other: usize },

    #[error("{what} has zero area")]
    ZeroArea { what: String },

    #[error("{what} spans 360° of longitude (it encloses a pole or wraps the globe): split it into smaller zones")]
    WrapsGlobe { what: String },

    #[error("{what} of {value} m is outside the accepted range {min}..={max} m")]
    OutOfRange {
        what: &'static str,
        value: f64,
        min: f64,
        max: f64,
    },

    #[error("multipolygon has no polygons")]
    EmptyMultiPolygon,

    #[error("fence id {0} appears more than once")]
    DuplicateId(FenceId),

    #[error("fence {id}: {source}")]
    InFence {
        id: FenceId,
        #[source]
        source: Box<FenceError>,
    },

    #[error("invalid rule: {0}")]
    Rule(String),

    #[error("invalid GeoJSON: {0}")]
    GeoJson(String),
}

impl FenceError {
    /// Attach the fence id so an error from a batch of fences says which one failed.
    pub(crate) fn in_fence(self, id: FenceId) -> FenceError {
        match self {
            e @ FenceError::InFence { .. } => e,
            e => FenceError::InFence {
                id,
                source: Box::new(e),
            },
        }
    }
}
