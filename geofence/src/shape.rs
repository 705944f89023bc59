//! Fence shapes, their validation, and the step from a drawn shape to prepared parts.
//!
//! Conventions, decided once:
//! * Coordinates are `[longitude, latitude]` degrees (GeoJSON order), WGS84.
//! * Polygon and corridor edges are straight in longitude/latitude, as GeoJSON, PostGIS
//!   `geometry` and shapely treat them.
//! * The antimeridian is handled: a ring or line whose consecutive vertices jump by more
//!   than 180° of longitude is read as crossing it (RFC 7946 asks writers to split such
//!   shapes; we accept both). A shape whose longitudes then span 360° encloses a pole or
//!   wraps the globe and is refused.
//! * High latitudes are refused explicitly: nothing may reach beyond ±85°, where degree
//!   geometry and our metre approximations degrade.
//! * Rings may be given closed or open; they are stored closed.
//! * Polygon rings must not touch or cross themselves or each other (stricter than OGC,
//!   which lets a hole touch the shell at one point; a drawn zone never needs that).

use geo::{Coord, Intersects, Line, LineString, MultiPolygon, Point, Polygon};
use rstar::{AABB, RTree, RTreeObject};
use serde::{Deserialize, Serialize};

use crate::error::FenceError;
use crate::metres::M_PER_DEG;
use crate::prepared::Part;
use crate::rules::FenceRules;

/// Nothing may reach closer to a pole than this.
pub const MAX_ABS_LATITUDE: f64 = 85.0;
pub const MIN_RADIUS_M: f64 = 1.0;
pub const MAX_RADIUS_M: f64 = 200_000.0;
pub const MIN_CORRIDOR_WIDTH_M: f64 = 1.0;
pub const MAX_CORRIDOR_WIDTH_M: f64 = 20_000.0;
/// Segments per corridor chunk: small enough that a chunk's envelope hugs the route.
const CORRIDOR_CHUNK: usize = 8;

/// Stable fence identifier (the fence's primary key upstream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FenceId(pub u64);

impl std::fmt::Display for FenceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A zone as drawn. Use [`Fence::new`] to validate it.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    Polygon(Polygon<f64>),
    MultiPolygon(MultiPolygon<f64>),
    /// Centre and radius in metres (great-circle distance).
    Circle {
        center: Point<f64>,
        radius_m: f64,
    },
    /// A route: every point within `width_m / 2` of the polyline.
    Corridor {
        line: LineString<f64>,
        width_m: f64,
    },
}

/// A validated, prepared fence: shape, rules and the parts the index tests against.
#[derive(Debug, Clone)]
pub struct Fence {
    id: FenceId,
    name: Option<String>,
    shape: Shape,
    rules: FenceRules,
    pub(crate) parts: Vec<Part>,
}

impl Fence {
    /// Validate `shape` and `rules` and build the prepared form.
    pub fn new(id: FenceId, shape: Shape, rules: FenceRules) -> Result<Fence, FenceError> {
        Self::build(id, shape, rules).map_err(|e| e.in_fence(id))
    }

    fn build(id: FenceId, shape: Shape, rules: FenceRules) -> Result<Fence, FenceError> {
        let rules = rules.validate()?;
        let (shape, parts) = prepare(shape)?;
        Ok(Fence {
            id,
            name: None,
            shape,
            rules,
            parts,
        })
    }

    pub fn with_name(mut self, name: impl Into<String>) -> Fence {
        self.name = Some(name.into());
        self
    }

    pub fn id(&self) -> FenceId {
        self.id
    }
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
    /// The shape as given, with rings closed.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }
    pub fn rules(&self) -> &FenceRules {
        &self.rules
    }

    /// Exact containment of `(lon, lat)`, without the index.
    pub fn contains(&self, lon: f64, lat: f64) -> bool {
        self.parts.iter().any(|p| p.contains([lon, lat]))
    }

    /// Whether `(lon, lat)` is inside or within `m` metres of the fence.
    pub fn within_m(&self, lon: f64, lat: f64, m: f64) -> bool {
        self.parts.iter().any(|p| p.within_m([lon, lat], m))
    }

    /// Total vertices of the prepared polygons (for diagnostics and benchmarks).
    pub fn vertex_count(&self) -> usize {
        self.parts
            .iter()
            .map(|p| match &p.geom {
                crate::prepared::PartGeom::Polygon(pp) => pp.vertex_count(),
                crate::prepared::PartGeom::Circle { .. } => 1,
                crate::prepared::PartGeom::Corridor { vertices, .. } => vertices.len(),
            })
            .sum()
    }
}

fn prepare(shape: Shape) -> Result<(Shape, Vec<Part>), FenceError> {
    match shape {
        Shape::Polygon(p) => {
            let (closed, rings) = normalize_polygon(&p, "polygon")?;
            Ok((Shape::Polygon(closed), vec![Part::polygon(&rings)]))
        }
        Shape::MultiPolygon(mp) => {
            if mp.0.is_empty() {
                return Err(FenceError::EmptyMultiPolygon);
            }
            let mut closed = Vec::with_capacity(mp.0.len());
            let mut parts = Vec::with_capacity(mp.0.len());
            for (i, p) in mp.0.iter().enumerate() {
                let (c, rings) = normalize_polygon(p, &format!("polygon {i}"))?;
                closed.push(c);
                parts.push(Part::polygon(&rings));
            }
            Ok((Shape::MultiPolygon(MultiPolygon(closed)), parts))
        }
        Shape::Circle { center, radius_m } => {
            let c = check_coord(center.0)?;
            check_range("radius", radius_m, MIN_RADIUS_M, MAX_RADIUS_M)?;
            check_reach(c[1], radius_m)?;
            Ok((Shape::Circle { center, radius_m }, vec![Part::circle(c, radius_m)]))
        }
        Shape::Corridor { line, width_m } => {
            check_range("corridor width", width_m, MIN_CORRIDOR_WIDTH_M, MAX_CORRIDOR_WIDTH_M)?;
            let mut pts = line.0.iter().map(|c| check_coord(*c)).collect::<Result<Vec<_>, _>>()?;
            unwrap_lons(&mut pts);
            pts.dedup();
            if pts.len() < 2 {
                return Err(FenceError::TooFewPoints {
                    what: "corridor".into(),
                    min: 2,
                    got: pts.len(),
                });
            }
            let half = width_m / 2.0;
            for p in &pts {
                check_reach(p[1], half)?;
            }
            shift_into_range(&mut pts, "corridor")?;
            let parts = pts
                .windows(CORRIDOR_CHUNK + 1)
                .step_by(CORRIDOR_CHUNK)
                .map(|w| w.to_vec())
                .chain(tail_chunk(&pts))
                .map(|mut chunk| {
                    // Each chunk's own longitudes start inside -180..180.
                    let min_x = chunk.iter().map(|p| p[0]).fold(f64::INFINITY, f64::min);
                    if min_x >= 180.0 {
                        chunk.iter_mut().for_each(|p| p[0] -= 360.0);
                    }
                    Part::corridor(&chunk, half)
                })
                .collect();
            Ok((Shape::Corridor { line, width_m }, parts))
        }
    }
}

/// The vertices after the last full chunk, when they form at least one segment.
fn tail_chunk(pts: &[[f64; 2]]) -> Option<Vec<[f64; 2]>> {
    let segs = pts.len() - 1;
    let full = if segs >= CORRIDOR_CHUNK {
        (segs - CORRIDOR_CHUNK) / CORRIDOR_CHUNK + 1
    } else {
        0
    };
    let start = full * CORRIDOR_CHUNK;
    (start < segs).then(|| pts[start..].to_vec())
}

fn check_range(what: &'static str, value: f64, min: f64, max: f64) -> Result<(), FenceError> {
    if value.is_finite() && value >= min && value <= max {
        Ok(())
    } else {
        Err(FenceError::OutOfRange { what, value, min, max })
    }
}

fn check_coord(c: Coord<f64>) -> Result<[f64; 2], FenceError> {
    let (lon, lat) = (c.x, c.y);
    if !(lon.is_finite() && lat.is_finite() && (-180.0..=180.0).contains(&lon) && (-90.0..=90.0).contains(&lat)) {
        return Err(FenceError::CoordinateOutOfRange { lon, lat });
    }
    check_reach(lat, 0.0)?;
    Ok([lon, lat])
}

/// Refuse anything that reaches within `MAX_ABS_LATITUDE` of a pole, `m` metres included.
fn check_reach(lat: f64, m: f64) -> Result<(), FenceError> {
    let reach = lat.abs() + m / M_PER_DEG;
    if reach > MAX_ABS_LATITUDE {
        Err(FenceError::HighLatitude {
            lat: if lat < 0.0 { -reach } else { reach },
            max: MAX_ABS_LATITUDE,
        })
    } else {
        Ok(())
    }
}

/// Make longitudes continuous: each vertex within 180° of the previous one.
fn unwrap_lons(pts: &mut [[f64; 2]]) {
    for i in 1..pts.len() {
        let prev = pts[i - 1][0];
        let mut x = pts[i][0];
        while x - prev > 180.0 {
            x -= 360.0;
        }
        while prev - x > 180.0 {
            x += 360.0;
        }
        pts[i][0] = x;
    }
}

/// Shift by a multiple of 360 so the smallest longitude is in -180..180; refuse a span of 360.
fn shift_into_range(pts: &mut [[f64; 2]], what: &str) -> Result<(), FenceError> {
    let min_x = pts.iter().map(|p| p[0]).fold(f64::INFINITY, f64::min);
    let max_x = pts.iter().map(|p| p[0]).fold(f64::NEG_INFINITY, f64::max);
    if max_x - min_x >= 360.0 {
        return Err(FenceError::WrapsGlobe { what: what.into() });
    }
    let shift = if min_x < -180.0 {
        360.0
    } else if min_x >= 180.0 {
        -360.0
    } else {
        0.0
    };
    if shift != 0.0 {
        pts.iter_mut().for_each(|p| p[0] += shift);
    }
    Ok(())
}

/// Validate one polygon. Returns it with closed rings (as given otherwise) and the open,
/// unwrapped rings for preparation.
/// Open, unwrapped rings: exterior first, then holes.
type Rings = Vec<Vec<[f64; 2]>>;

fn normalize_polygon(p: &Polygon<f64>, what: &str) -> Result<(Polygon<f64>, Rings), FenceError> {
    let mut rings = Vec::with_capacity(1 + p.interiors().len());
    rings.push(normalize_ring(p.exterior(), &format!("{what} exterior ring"))?);
    for (i, h) in p.interiors().iter().enumerate() {
        rings.push(normalize_ring(h, &format!("{what} hole {i}"))?);
    }
    // Holes follow the shell across the antimeridian: put each within 180° of it.
    let shell_x = rings[0][0][0];
    for ring in rings.iter_mut().skip(1) {
        let d = ring[0][0] - shell_x;
        let shift = if d > 180.0 {
            -360.0
        } else if d < -180.0 {
            360.0
        } else {
            0.0
        };
        ring.iter_mut().for_each(|c| c[0] += shift);
    }
    {
        let mut all: Vec<[f64; 2]> = rings.iter().flatten().copied().collect();
        let min_before = all.iter().map(|c| c[0]).fold(f64::INFINITY, f64::min);
        shift_into_range(&mut all, what)?;
        let shift = all.iter().map(|c| c[0]).fold(f64::INFINITY, f64::min) - min_before;
        if shift != 0.0 {
            rings.iter_mut().flatten().for_each(|c| c[0] += shift);
        }
    }
    // Crossings first: a bow-tie's two lobes cancel out and would look like zero area.
    check_no_intersections(&rings, what)?;
    for (i, r) in rings.iter().enumerate() {
        if signed_area(r) == 0.0 {
            return Err(FenceError::ZeroArea {
                what: ring_name(what, i),
            });
        }
    }
    for h in 1..rings.len() {
        if !ring_contains(&rings[0], rings[h][0]) {
            return Err(FenceError::HoleOutsideShell { hole: h - 1 });
        }
        for o in 1..rings.len() {
            if o != h && ring_contains(&rings[o], rings[h][0]) {
                return Err(FenceError::NestedHoles {
                    hole: h - 1,
                    other: o - 1,
                });
            }
        }
    }
    let mut closed = p.clone();
    closed.exterior_mut(|r| r.close());
    closed.interiors_mut(|hs| hs.iter_mut().for_each(|r| r.close()));
    Ok((closed, rings))
}

fn ring_name(what: &str, i: usize) -> String {
    if i == 0 {
        format!("{what} exterior ring")
    } else {
        format!("{what} hole {}", i - 1)
    }
}

/// Check coordinates, unwrap, drop repeated and closing vertices; at least 3 remain.
fn normalize_ring(ring: &LineString<f64>, what: &str) -> Result<Vec<[f64; 2]>, FenceError> {
    let mut pts = ring.0.iter().map(|c| check_coord(*c)).collect::<Result<Vec<_>, _>>()?;
    unwrap_lons(&mut pts);
    pts.dedup();
    if pts.len() >= 2 {
        let (first, last) = (pts[0], pts[pts.len() - 1]);
        if last == first {
            pts.pop();
        } else if last[1] == first[1] && (last[0] - first[0]).abs() == 360.0 {
            // Closed on the same vertex, but only after a full turn of longitude.
            return Err(FenceError::WrapsGlobe { what: what.into() });
        }
    }
    if pts.len() < 3 {
        return Err(FenceError::TooFewPoints {
            what: what.into(),
            min: 3,
            got: pts.len(),
        });
    }
    // An open ring is closed by an edge from the last vertex to the first; that edge
    // must not be the one that crosses the antimeridian the other way round.
    let span_back = pts[pts.len() - 1][0] - pts[0][0];
    if span_back.abs() > 180.0 {
        return Err(FenceError::WrapsGlobe { what: what.into() });
    }
    Ok(pts)
}

fn signed_area(r: &[[f64; 2]]) -> f64 {
    let n = r.len();
    (0..n)
        .map(|i| {
            let (a, b) = (r[i], r[(i + 1) % n]);
            a[0] * b[1] - b[0] * a[1]
        })
        .sum::<f64>()
        / 2.0
}

fn ring_contains(r: &[[f64; 2]], q: [f64; 2]) -> bool {
    let n = r.len();
    let mut inside = false;
    for i in 0..n {
        let (a, b) = (r[i], r[(i + 1) % n]);
        if (a[1] > q[1]) != (b[1] > q[1]) {
            let t = (b[0] - a[0]) * (q[1] - a[1]) - (q[0] - a[0]) * (b[1] - a[1]);
            if (t > 0.0) == (b[1] > a[1]) {
                inside = !inside;
            }
        }
    }
    inside
}

struct Seg {
    line: Line<f64>,
    ring: usize,
    idx: usize,
}

impl RTreeObject for Seg {
    type Envelope = AABB<[f64; 2]>;
    fn envelope(&self) -> Self::Envelope {
        AABB::from_corners(
            [self.line.start.x, self.line.start.y],
            [self.line.end.x, self.line.end.y],
        )
    }
}

/// No ring may cross or touch itself (other than at its own consecutive vertices) or
/// another ring. An R-tree over the segments keeps this O(n log n): a 500-vertex ring is
/// checked in well under a millisecond, so validating 10k fences stays cheap.
fn check_no_intersections(rings: &[Vec<[f64; 2]>], what: &str) -> Result<(), FenceError> {
    let mut segs = Vec::with_capacity(rings.iter().map(Vec::len).sum());
    for (ri, r) in rings.iter().enumerate() {
        for i in 0..r.len() {
            let (a, b) = (r[i], r[(i + 1) % r.len()]);
            segs.push(Seg {
                line: Line::new(Coord { x: a[0], y: a[1] }, Coord { x: b[0], y: b[1] }),
                ring: ri,
                idx: i,
            });
        }
    }
    let check = |s: &Seg, o: &Seg| -> Result<(), FenceError> {
        if (o.ring, o.idx) <= (s.ring, s.idx) {
            return Ok(());
        }
        let n = rings[s.ring].len();
        let adjacent = o.ring == s.ring && (o.idx == s.idx + 1 || (s.idx == 0 && o.idx == n - 1));
        let bad = if adjacent {
            // Consecutive edges share a vertex by construction; they are bad only
            // when they fold back over each other (a spike).
            let (first, second) = if o.idx == s.idx + 1 { (s, o) } else { (o, s) };
            folds_back(first.line, second.line)
        } else {
            s.line.intersects(&o.line)
        };
        if bad {
            let at = s.line.start;
            return Err(FenceError::SelfIntersection {
                what: format!("{what} {}", ring_name("", s.ring).trim_start()),
                lon: at.x,
                lat: at.y,
            });
        }
        Ok(())
    };
    // Small rings: all pairs is cheaper than building a tree.
    if segs.len() <= 64 {
        for s in &segs {
            for o in &segs {
                check(s, o)?;
            }
        }
        return Ok(());
    }
    let tree = RTree::bulk_load(segs);
    for s in tree.iter() {
        for o in tree.locate_in_envelope_intersecting(&s.envelope()) {
            check(s, o)?;
        }
    }
    Ok(())
}

fn folds_back(a: Line<f64>, b: Line<f64>) -> bool {
    let (u, v) = (a.delta(), b.delta());
    let cross = u.x * v.y - u.y * v.x;
    let dot = u.x * v.x + u.y * v.y;
    cross == 0.0 && dot < 0.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use geo::{line_string, point, polygon};

    fn fence(shape: Shape) -> Result<Fence, FenceError> {
        Fence::new(FenceId(1), shape, FenceRules::default()).map_err(|e| match e {
            FenceError::InFence { source, .. } => *source,
            e => e,
        })
    }

    #[test]
    fn square_with_hole() {
        let p = polygon!(
            exterior: [(x: 0.0, y: 0.0), (x: 1.0, y: 0.0), (x: 1.0, y: 1.0), (x: 0.0, y: 1.0)],
            interiors: [[(x: 0.4, y: 0.4), (x: 0.6, y: 0.4), (x: 0.6, y: 0.6), (x: 0.4, y: 0.6)]],
        );
        let f = fence(Shape::Polygon(p)).unwrap();
        assert!(f.contains(0.2, 0.2));
        assert!(!f.contains(0.5, 0.5));
        assert!(!f.contains(2.0, 0.5));
    }

    #[test]
    fn refuses_bowtie() {
        let p = polygon![(x: 0.0, y: 0.0), (x: 1.0, y: 1.0), (x: 1.0, y: 0.0), (x: 0.0, y: 1.0)];
        assert!(matches!(
            fence(Shape::Polygon(p)),
            Err(FenceError::SelfIntersection { .. })
        ));
    }

    #[test]
    fn refuses_spike() {
        let p = polygon![(x: 0.0, y: 0.0), (x: 2.0, y: 0.0), (x: 1.0, y: 0.0), (x: 1.0, y: 1.0)];
        assert!(fence(Shape::Polygon(p)).is_err());
    }

    #[test]
    fn refuses_too_few_points() {
        let p = polygon![(x: 0.0, y: 0.0), (x: 1.0, y: 0.0), (x: 0.0, y: 0.0)];
        assert!(matches!(
            fence(Shape::Polygon(p)),
            Err(FenceError::TooFewPoints { min: 3, got: 2, .. })
        ));
    }

    #[test]
    fn refuses_hole_outside_and_crossing() {
        let outside = polygon!(
            exterior: [(x: 0.0, y: 0.0), (x: 1.0, y: 0.0), (x: 1.0, y: 1.0), (x: 0.0, y: 1.0)],
            interiors: [[(x: 2.0, y: 2.0), (x: 3.0, y: 2.0), (x: 3.0, y: 3.0)]],
        );
        assert_eq!(
            fence(Shape::Polygon(outside)).unwrap_err(),
            FenceError::HoleOutsideShell { hole: 0 }
        );
        let crossing = polygon!(
            exterior: [(x: 0.0, y: 0.0), (x: 1.0, y: 0.0), (x: 1.0, y: 1.0), (x: 0.0, y: 1.0)],
            interiors: [[(x: 0.5, y: 0.5), (x: 1.5, y: 0.5), (x: 1.5, y: 0.6)]],
        );
        assert!(matches!(
            fence(Shape::Polygon(crossing)),
            Err(FenceError::SelfIntersection { .. })
        ));
    }

    #[test]
    fn refuses_out_of_range_and_poles() {
        let p = polygon![(x: 0.0, y: 0.0), (x: 190.0, y: 0.0), (x: 0.0, y: 1.0)];
        assert!(matches!(
            fence(Shape::Polygon(p)),
            Err(FenceError::CoordinateOutOfRange { .. })
        ));
        let p = polygon![(x: 0.0, y: 86.0), (x: 1.0, y: 86.0), (x: 0.0, y: 87.0)];
        assert!(matches!(fence(Shape::Polygon(p)), Err(FenceError::HighLatitude { .. })));
        let c = Shape::Circle {
            center: point!(x: 0.0, y: 84.9),
            radius_m: 50_000.0,
        };
        assert!(matches!(fence(c), Err(FenceError::HighLatitude { .. })));
        let c = Shape::Circle {
            center: point!(x: f64::NAN, y: 0.0),
            radius_m: 5.0,
        };
        assert!(matches!(fence(c), Err(FenceError::CoordinateOutOfRange { .. })));
    }

    #[test]
    fn refuses_absurd_radii_and_widths() {
        for r in [0.0, -5.0, 1e9, f64::INFINITY, f64::NAN] {
            let c = Shape::Circle {
                center: point!(x: 0.0, y: 0.0),
                radius_m: r,
            };
            assert!(matches!(fence(c), Err(FenceError::OutOfRange { .. })), "{r}");
        }
        let c = Shape::Corridor {
            line: line_string![(x: 0.0, y: 0.0), (x: 1.0, y: 0.0)],
            width_m: 0.1,
        };
        assert!(matches!(fence(c), Err(FenceError::OutOfRange { .. })));
        let c = Shape::Corridor {
            line: line_string![(x: 0.0, y: 0.0), (x: 0.0, y: 0.0)],
            width_m: 10.0,
        };
        assert!(matches!(fence(c), Err(FenceError::TooFewPoints { .. })));
    }

    #[test]
    fn polygon_across_antimeridian() {
        // A box from 179°E to 179°W, written with raw longitudes.
        let p = polygon![(x: 179.0, y: -1.0), (x: -179.0, y: -1.0), (x: -179.0, y: 1.0), (x: 179.0, y: 1.0)];
        let f = fence(Shape::Polygon(p)).unwrap();
        assert!(f.contains(179.5, 0.0));
        assert!(f.contains(-179.5, 0.0));
        assert!(f.contains(180.0, 0.0));
        assert!(f.contains(-180.0, 0.0));
        assert!(!f.contains(0.0, 0.0));
        assert!(!f.contains(178.9, 0.0));
        assert!(!f.contains(-178.9, 0.0));
        // 11 km west of the western edge at 178.9°E is within 12 km.
        assert!(f.within_m(178.9, 0.0, 12_000.0));
        assert!(f.within_m(-178.9, 0.0, 12_000.0));
        assert!(!f.within_m(-178.0, 0.0, 12_000.0));
    }

    #[test]
    fn ring_around_the_pole_is_refused() {
        // Longitudes go all the way round at 80°N: that ring encloses the pole.
        let p = polygon![
            (x: 0.0, y: 80.0), (x: 90.0, y: 80.0), (x: 180.0, y: 80.0), (x: -90.0, y: 80.0), (x: 0.0, y: 80.0)
        ];
        assert!(matches!(fence(Shape::Polygon(p)), Err(FenceError::WrapsGlobe { .. })));
    }

    #[test]
    fn circle_and_corridor_across_antimeridian() {
        let c = fence(Shape::Circle {
            center: point!(x: 179.999, y: 10.0),
            radius_m: 1_000.0,
        })
        .unwrap();
        assert!(c.contains(-179.999, 10.0));
        assert!(!c.contains(-179.98, 10.0));
        let k = fence(Shape::Corridor {
            line: line_string![(x: 179.5, y: 0.0), (x: -179.5, y: 0.0), (x: -179.5, y: 1.0)],
            width_m: 200.0,
        })
        .unwrap();
        assert!(k.contains(180.0, 0.0005));
        assert!(k.contains(-179.5005, 0.5));
        assert!(!k.contains(-179.51, 0.5));
        assert!(!k.contains(0.0, 0.0));
    }

    #[test]
    fn long_corridor_is_chunked() {
        let line: LineString<f64> = (0..=20).map(|i| (i as f64 * 0.01, 0.0)).collect::<Vec<_>>().into();
        let f = fence(Shape::Corridor { line, width_m: 50.0 }).unwrap();
        assert_eq!(f.parts.len(), 3);
        for i in 0..200 {
            assert!(f.contains(i as f64 * 0.001, 0.0001), "{i}");
        }
        assert!(!f.contains(0.201, 0.0));
    }
}
