//! Prepared geometry: the forms the hot path tests points against.
//!
//! A fence becomes one or more [`Part`]s; each part is what one R-tree entry points at.
//! Polygons get a y-banded edge index so a point test touches only the edges in one
//! horizontal band (a handful) instead of every vertex; corridors are cut into chunks
//! of a few segments so a long route does not put one huge envelope in the tree.
//!
//! Coordinates here are "unwrapped": a part that crosses the antimeridian keeps
//! continuous longitudes (e.g. 175..185) and a query longitude is shifted by ±360 to
//! meet it. That keeps every test planar without splitting shapes.

use crate::metres::{M_PER_DEG, haversine_m, lon_degrees_for, segment_distance_m};

/// Axis-aligned bounds in unwrapped degrees. `min_x` is in -180..180; `max_x` may pass 180.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Bbox {
    pub min_x: f64,
    pub min_y: f64,
    pub max_x: f64,
    pub max_y: f64,
}

impl Bbox {
    pub fn of(points: impl IntoIterator<Item = [f64; 2]>) -> Bbox {
        let mut b = Bbox {
            min_x: f64::INFINITY,
            min_y: f64::INFINITY,
            max_x: f64::NEG_INFINITY,
            max_y: f64::NEG_INFINITY,
        };
        for [x, y] in points {
            b.min_x = b.min_x.min(x);
            b.min_y = b.min_y.min(y);
            b.max_x = b.max_x.max(x);
            b.max_y = b.max_y.max(y);
        }
        b
    }

    /// Grow by `m` metres on every side (longitude growth taken at the widest latitude).
    pub fn grown_m(self, m: f64) -> Bbox {
        let dlat = m / M_PER_DEG;
        let lat = self.min_y.abs().max(self.max_y.abs()) + dlat;
        let dlon = lon_degrees_for(m, lat.min(89.0));
        Bbox {
            min_x: self.min_x - dlon,
            min_y: self.min_y - dlat,
            max_x: self.max_x + dlon,
            max_y: self.max_y + dlat,
        }
    }

    /// The query longitude shifted by a multiple of 360 into `[min_x - margin, max_x + margin]`,
    /// or `None` when no shift lands there.
    #[inline]
    pub fn align_x(&self, x: f64, margin: f64) -> Option<f64> {
        let (lo, hi) = (self.min_x - margin, self.max_x + margin);
        if x >= lo && x <= hi {
            return Some(x);
        }
        let up = x + 360.0;
        if up >= lo && up <= hi {
            return Some(up);
        }
        let down = x - 360.0;
        if down >= lo && down <= hi {
            return Some(down);
        }
        None
    }

    /// The bounds as one or two boxes inside -180..180, for the R-tree.
    pub fn wrapped_envelopes(&self) -> Vec<([f64; 2], [f64; 2])> {
        let (lo, hi) = (self.min_x, self.max_x);
        let (y0, y1) = (self.min_y, self.max_y);
        if hi - lo >= 360.0 {
            vec![([-180.0, y0], [180.0, y1])]
        } else if lo < -180.0 {
            vec![([lo + 360.0, y0], [180.0, y1]), ([-180.0, y0], [hi, y1])]
        } else if hi > 180.0 {
            vec![([lo, y0], [180.0, y1]), ([-180.0, y0], [hi - 360.0, y1])]
        } else {
            vec![([lo, y0], [hi, y1])]
        }
    }
}

/// One indexed piece of a fence.
#[derive(Debug, Clone)]
pub(crate) struct Part {
    pub geom: PartGeom,
    /// Bounds of everything the part can contain (circles and corridors grown by their size).
    pub bbox: Bbox,
}

// The polygon variant carries its 256-byte raster inline on purpose: it is read on every
// polygon test, and boxing it would add a cache miss to the hot path.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub(crate) enum PartGeom {
    Polygon(PreparedPolygon),
    Circle {
        center: [f64; 2],
        radius_m: f64,
    },
    /// A run of corridor segments (consecutive vertices, unwrapped).
    Corridor {
        vertices: Box<[[f64; 2]]>,
        half_width_m: f64,
    },
}

impl Part {
    pub fn polygon(rings: &[Vec<[f64; 2]>]) -> Part {
        let p = PreparedPolygon::new(rings);
        Part {
            bbox: p.quick.bbox,
            geom: PartGeom::Polygon(p),
        }
    }

    pub fn circle(center: [f64; 2], radius_m: f64) -> Part {
        // A little slack so rounding in the envelope never cuts off the rim.
        let bbox = Bbox::of([center]).grown_m(radius_m * 1.001 + 0.01);
        Part {
            geom: PartGeom::Circle { center, radius_m },
            bbox,
        }
    }

    pub fn corridor(vertices: &[[f64; 2]], half_width_m: f64) -> Part {
        let bbox = Bbox::of(vertices.iter().copied()).grown_m(half_width_m * 1.001 + 0.01);
        Part {
            geom: PartGeom::Corridor {
                vertices: vertices.into(),
                half_width_m,
            },
            bbox,
        }
    }

    /// Exact containment of a `[lon, lat]` point (lon in -180..180).
    #[inline]
    pub fn contains(&self, q: [f64; 2]) -> bool {
        match &self.geom {
            PartGeom::Polygon(p) => p.contains(q),
            PartGeom::Circle { center, radius_m } => haversine_m(*center, q) <= *radius_m,
            PartGeom::Corridor { vertices, half_width_m } => corridor_within(vertices, q, *half_width_m),
        }
    }

    /// The raster shortcut, for polygon parts.
    pub fn quick(&self) -> Option<&QuickTest> {
        match &self.geom {
            PartGeom::Polygon(p) => Some(&p.quick),
            _ => None,
        }
    }

    /// Containment after the quick test said `Edges(x)`.
    #[inline]
    pub fn contains_after_quick(&self, x: f64, q: [f64; 2]) -> bool {
        match &self.geom {
            PartGeom::Polygon(p) => p.contains_aligned(x, q[1]),
            _ => self.contains(q),
        }
    }

    /// Whether the point is inside the part or within `m` metres of it.
    pub fn within_m(&self, q: [f64; 2], m: f64) -> bool {
        match &self.geom {
            PartGeom::Polygon(p) => p.within_m(q, m),
            PartGeom::Circle { center, radius_m } => haversine_m(*center, q) <= *radius_m + m,
            PartGeom::Corridor { vertices, half_width_m } => corridor_within(vertices, q, *half_width_m + m),
        }
    }
}

fn corridor_within(vertices: &[[f64; 2]], q: [f64; 2], d: f64) -> bool {
    let cos_q = q[1].to_radians().cos();
    vertices
        .windows(2)
        .any(|w| segment_distance_m(q, w[0], w[1], cos_q) <= d)
}

/// A polygon (exterior plus holes) prepared for point tests in two layers.
///
/// 1. A 32×32 raster over the bounding box, 2 bits a cell: cells that no edge touches
///    are classified once as inside or outside, so most points inside the box are
///    answered from one cache line.
/// 2. For the rest, the crossing-number test over every ring at once (holes fall out of
///    the parity), restricted to the edges overlapping the point's horizontal band.
///
/// The band count is picked from the edges' total height so that the band lists hold
/// at most about three entries per edge: jagged outlines get wider bands, smooth ones
/// get about one band per edge and a couple of edges per band. Either way a point test
/// reads a handful of edges, not all of them.
#[derive(Debug, Clone)]
pub(crate) struct PreparedPolygon {
    /// Bounding box and raster: also copied into the index's grid entries.
    pub quick: QuickTest,
    /// `[ax, ay, bx, by]` per edge, all rings, in ring order.
    edges: Vec<[f64; 4]>,
    /// CSR: band `i` holds `band_edges[band_start[i]..band_start[i + 1]]`.
    band_start: Vec<u32>,
    band_edges: Vec<u32>,
    inv_band_h: f64,
}

const MAX_BANDS: usize = 1 << 14;
/// Band list entries allowed per edge (memory bound of the band index).
const BAND_ENTRIES_PER_EDGE: f64 = 2.0;

const RASTER: usize = 64;
const CELL_BOUNDARY: u8 = 0;
const CELL_OUTSIDE: u8 = 1;
const CELL_INSIDE: u8 = 2;

/// The answer a raster gives without looking at edges.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Verdict {
    Inside,
    Outside,
    /// Test the edges, at this (aligned) longitude.
    Edges(f64),
}

/// A polygon's bounding box and raster: everything needed to answer most point tests
/// from one or two cache lines.
#[derive(Debug, Clone)]
pub(crate) struct QuickTest {
    pub bbox: Bbox,
    raster: Raster,
}

impl QuickTest {
    #[inline]
    pub fn test(&self, q: [f64; 2]) -> Verdict {
        let y = q[1];
        if y < self.bbox.min_y || y > self.bbox.max_y {
            return Verdict::Outside;
        }
        let Some(x) = self.bbox.align_x(q[0], 0.0) else {
            return Verdict::Outside;
        };
        match self.raster.get(self.raster.cell(&self.bbox, x, y)) {
            CELL_INSIDE => Verdict::Inside,
            CELL_OUTSIDE => Verdict::Outside,
            _ => Verdict::Edges(x),
        }
    }
}

/// 2 bits per cell: boundary (test edges), outside, inside.
#[derive(Debug, Clone)]
struct Raster {
    inv: [f64; 2],
    bits: [u64; RASTER * RASTER / 32],
}

impl Raster {
    /// Cell of an (aligned) point known to be inside the bounding box. Monotone in each
    /// coordinate, which is what makes the classification sound (see `build`).
    #[inline]
    fn cell(&self, bbox: &Bbox, x: f64, y: f64) -> usize {
        let cx = (((x - bbox.min_x) * self.inv[0]) as usize).min(RASTER - 1);
        let cy = (((y - bbox.min_y) * self.inv[1]) as usize).min(RASTER - 1);
        cy * RASTER + cx
    }

    #[inline]
    fn get(&self, c: usize) -> u8 {
        ((self.bits[c / 32] >> ((c % 32) * 2)) & 3) as u8
    }

    fn set(&mut self, c: usize, v: u8) {
        let shift = (c % 32) * 2;
        self.bits[c / 32] = (self.bits[c / 32] & !(3 << shift)) | ((v as u64) << shift);
    }
}

impl PreparedPolygon {
    /// `rings` are open (no repeated closing vertex), validated and unwrapped.
    pub fn new(rings: &[Vec<[f64; 2]>]) -> PreparedPolygon {
        let mut edges = Vec::with_capacity(rings.iter().map(Vec::len).sum());
        for ring in rings {
            for i in 0..ring.len() {
                let a = ring[i];
                let b = ring[(i + 1) % ring.len()];
                edges.push([a[0], a[1], b[0], b[1]]);
            }
        }
        let bbox = Bbox::of(rings.iter().flatten().copied());
        let height = bbox.max_y - bbox.min_y;
        let total_span: f64 = edges.iter().map(|e| (e[3] - e[1]).abs()).sum();
        // entries ≈ edges + bands · total_span / height; keep that under the budget.
        let n_bands = if total_span > 0.0 {
            (BAND_ENTRIES_PER_EDGE * edges.len() as f64 * height / total_span) as usize
        } else {
            1
        }
        .clamp(1, MAX_BANDS);
        let inv_band_h = if height > 0.0 { n_bands as f64 / height } else { 0.0 };

        let band_of = |y: f64| -> usize { (((y - bbox.min_y) * inv_band_h).max(0.0) as usize).min(n_bands - 1) };
        let mut counts = vec![0u32; n_bands + 1];
        for e in &edges {
            let (lo, hi) = (band_of(e[1].min(e[3])), band_of(e[1].max(e[3])));
            for c in &mut counts[lo..=hi] {
                *c += 1;
            }
        }
        let mut band_start = Vec::with_capacity(n_bands + 1);
        let mut acc = 0u32;
        for c in &counts[..n_bands] {
            band_start.push(acc);
            acc += c;
        }
        band_start.push(acc);
        let mut fill: Vec<u32> = band_start[..n_bands].to_vec();
        let mut band_edges = vec![0u32; acc as usize];
        for (i, e) in edges.iter().enumerate() {
            let (lo, hi) = (band_of(e[1].min(e[3])), band_of(e[1].max(e[3])));
            for f in &mut fill[lo..=hi] {
                band_edges[*f as usize] = i as u32;
                *f += 1;
            }
        }
        let width = bbox.max_x - bbox.min_x;
        let mut p = PreparedPolygon {
            quick: QuickTest {
                bbox,
                raster: Raster {
                    inv: [
                        if width > 0.0 { RASTER as f64 / width } else { 0.0 },
                        if height > 0.0 { RASTER as f64 / height } else { 0.0 },
                    ],
                    // Every cell starts as "test the edges".
                    bits: [CELL_BOUNDARY as u64; RASTER * RASTER / 32],
                },
            },
            edges,
            band_start,
            band_edges,
            inv_band_h,
        };
        p.classify_cells();
        p
    }

    /// Mark every cell an edge's bounding box touches as boundary; classify the others
    /// by testing a point that maps to them. Sound because the cell function is
    /// monotone: if an edge separated two points of one cell, the crossing point would
    /// map to that cell too and lie in the edge's box, so the cell would be marked.
    fn classify_cells(&mut self) {
        let bbox = self.quick.bbox;
        let mut touched = [false; RASTER * RASTER];
        for e in &self.edges {
            let c0 = self.quick.raster.cell(&bbox, e[0].min(e[2]), e[1].min(e[3]));
            let c1 = self.quick.raster.cell(&bbox, e[0].max(e[2]), e[1].max(e[3]));
            let (x0, y0, x1, y1) = (c0 % RASTER, c0 / RASTER, c1 % RASTER, c1 / RASTER);
            for y in y0..=y1 {
                touched[y * RASTER + x0..=y * RASTER + x1].fill(true);
            }
        }
        let (w, h) = (bbox.max_x - bbox.min_x, bbox.max_y - bbox.min_y);
        for (c, &t) in touched.iter().enumerate() {
            if t {
                continue;
            }
            let x = bbox.min_x + w * ((c % RASTER) as f64 + 0.5) / RASTER as f64;
            let y = bbox.min_y + h * ((c / RASTER) as f64 + 0.5) / RASTER as f64;
            // Rounding could put the centre of a sliver cell in a neighbour; such a
            // cell simply stays "test the edges".
            if self.quick.raster.cell(&bbox, x, y) == c {
                let v = if self.crossing_parity(x, y) {
                    CELL_INSIDE
                } else {
                    CELL_OUTSIDE
                };
                self.quick.raster.set(c, v);
            }
        }
    }

    #[inline]
    fn band(&self, y: f64) -> usize {
        let n = self.band_start.len() - 1;
        (((y - self.quick.bbox.min_y) * self.inv_band_h).max(0.0) as usize).min(n - 1)
    }

    #[inline]
    fn band_slice(&self, b: usize) -> &[u32] {
        &self.band_edges[self.band_start[b] as usize..self.band_start[b + 1] as usize]
    }

    #[inline]
    pub fn contains(&self, q: [f64; 2]) -> bool {
        match self.quick.test(q) {
            Verdict::Inside => true,
            Verdict::Outside => false,
            Verdict::Edges(x) => self.crossing_parity(x, q[1]),
        }
    }

    /// The edge test at an already aligned longitude (after a `Verdict::Edges`).
    #[inline]
    pub fn contains_aligned(&self, x: f64, y: f64) -> bool {
        self.crossing_parity(x, y)
    }

    /// `contains` without the raster: what the raster is tested against.
    #[cfg(test)]
    fn contains_by_edges(&self, q: [f64; 2]) -> bool {
        let y = q[1];
        let b = &self.quick.bbox;
        if y < b.min_y || y > b.max_y {
            return false;
        }
        b.align_x(q[0], 0.0).is_some_and(|x| self.crossing_parity(x, y))
    }

    #[inline]
    fn crossing_parity(&self, x: f64, y: f64) -> bool {
        let mut inside = false;
        for &i in self.band_slice(self.band(y)) {
            let [ax, ay, bx, by] = self.edges[i as usize];
            if (ay > y) != (by > y) {
                // Sign of the cross product says on which side of the edge the point
                // lies; no division, so no rounding beyond one multiply-subtract.
                let t = (bx - ax) * (y - ay) - (x - ax) * (by - ay);
                if (t > 0.0) == (by > ay) {
                    inside = !inside;
                }
            }
        }
        inside
    }

    pub fn within_m(&self, q: [f64; 2], m: f64) -> bool {
        let b = &self.quick.bbox;
        let dlat = m / M_PER_DEG;
        let y = q[1];
        if y < b.min_y - dlat || y > b.max_y + dlat {
            return false;
        }
        let dlon = lon_degrees_for(m, (y.abs() + dlat).min(89.0));
        let Some(x) = b.align_x(q[0], dlon) else {
            return false;
        };
        let in_bbox = y >= b.min_y && y <= b.max_y && x >= b.min_x && x <= b.max_x;
        if in_bbox && self.crossing_parity(x, y) {
            return true;
        }
        let cos_q = y.to_radians().cos();
        let (b0, b1) = (self.band(y - dlat), self.band(y + dlat));
        for b in b0..=b1 {
            for &i in self.band_slice(b) {
                let [ax, ay, bx, by] = self.edges[i as usize];
                if ax.min(bx) - dlon > x || ax.max(bx) + dlon < x {
                    continue;
                }
                if segment_distance_m([x, y], [ax, ay], [bx, by], cos_q) <= m {
                    return true;
                }
            }
        }
        false
    }

    pub fn vertex_count(&self) -> usize {
        self.edges.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square(x0: f64, y0: f64, s: f64) -> Vec<[f64; 2]> {
        vec![[x0, y0], [x0 + s, y0], [x0 + s, y0 + s], [x0, y0 + s]]
    }

    #[test]
    fn polygon_with_hole() {
        let p = PreparedPolygon::new(&[square(0.0, 0.0, 1.0), square(0.25, 0.25, 0.5)]);
        assert!(p.contains([0.1, 0.1]));
        assert!(!p.contains([0.5, 0.5]));
        assert!(!p.contains([1.5, 0.5]));
        assert!(p.within_m([1.0 + 100.0 / M_PER_DEG, 0.5], 150.0));
        assert!(!p.within_m([1.0 + 200.0 / M_PER_DEG, 0.5], 150.0));
        // Inside the hole, 0.25° from the hole's edge: not within 150 m of the polygon.
        assert!(!p.within_m([0.5, 0.5], 150.0));
    }

    #[test]
    fn raster_agrees_with_edges() {
        // A jagged star with a hole: many boundary cells, many decided ones.
        let n = 300;
        let outer: Vec<[f64; 2]> = (0..n)
            .map(|i| {
                let a = std::f64::consts::TAU * i as f64 / n as f64;
                let r = 1.0 + 0.3 * (a * 5.0).sin() + 0.05 * ((i * 7919) % 13) as f64 / 13.0;
                [r * a.cos(), r * a.sin()]
            })
            .collect();
        let hole = vec![[-0.2, -0.2], [0.2, -0.2], [0.2, 0.2], [-0.2, 0.2]];
        let p = PreparedPolygon::new(&[outer, hole]);
        let decided = (0..RASTER * RASTER)
            .filter(|&c| p.quick.raster.get(c) != CELL_BOUNDARY)
            .count();
        assert!(decided > RASTER * RASTER / 2, "{decided}");
        for i in 0..200_000 {
            let a = i as f64 * 0.618_033_988_749_895;
            let q = [-1.5 + 3.0 * a.fract(), -1.5 + 3.0 * (a * 1.618).fract()];
            assert_eq!(p.contains(q), p.contains_by_edges(q), "{q:?}");
        }
    }

    #[test]
    fn envelopes_split_at_antimeridian() {
        let b = Bbox {
            min_x: 179.0,
            min_y: 0.0,
            max_x: 181.0,
            max_y: 1.0,
        };
        assert_eq!(
            b.wrapped_envelopes(),
            vec![([179.0, 0.0], [180.0, 1.0]), ([-180.0, 0.0], [-179.0, 1.0])]
        );
    }
}
