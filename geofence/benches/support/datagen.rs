//! The benchmark data set, shared by the criterion bench and the `bench_points` example
//! (which writes it to files for the shapely / PostGIS comparison).
//!
//! Deterministic: a fixed seed and a small PRNG of our own, so every run and every tool
//! sees the same fences and points.
//!
//! Fences: star-shaped polygons (always simple) with 20–500 vertices, radius 200 m–5 km
//! (log-uniform), outlines of a few smooth lobes plus ±2 % vertex noise,
//! centred uniformly over a 10°×10° region of central Europe. Points: half uniform over
//! the region, half near a random fence (within twice its radius), so both the "no
//! fence here" and the "inside or near a detailed polygon" paths are exercised.

#![allow(dead_code)]

/// SplitMix64: tiny, fast, good enough for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.f64()
    }
}

pub const REGION: ([f64; 2], [f64; 2]) = ([5.0, 45.0], [15.0, 55.0]);
const M_PER_DEG: f64 = 111_195.08;

pub struct Polygon {
    pub center: [f64; 2],
    pub radius_m: f64,
    /// Open ring, counter-clockwise.
    pub ring: Vec<[f64; 2]>,
}

pub fn polygons(n: usize, seed: u64) -> Vec<Polygon> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            let center = [rng.range(REGION.0[0], REGION.1[0]), rng.range(REGION.0[1], REGION.1[1])];
            let verts = 20 + (rng.next_u64() % 481) as usize;
            // Log-uniform size: many small sites, some big areas.
            let radius_m = (200f64.ln() + rng.f64() * (5000f64.ln() - 200f64.ln())).exp();
            let kx = 1.0 / (M_PER_DEG * center[1].to_radians().cos());
            let ky = 1.0 / M_PER_DEG;
            // An outline as a digitised zone looks: a few smooth lobes (three harmonics)
            // plus small per-vertex noise. Radii stay above 0.6·R, angles increase, so
            // the ring is star-shaped and therefore simple.
            let harmonics: Vec<(f64, f64, f64)> = [(2, 4, 0.18), (5, 9, 0.1), (10, 20, 0.05)]
                .iter()
                .map(|&(k0, k1, amp)| {
                    let k = (k0 + rng.next_u64() % (k1 - k0 + 1)) as f64;
                    (k, amp * rng.f64(), std::f64::consts::TAU * rng.f64())
                })
                .collect();
            let ring = (0..verts)
                .map(|i| {
                    let a = std::f64::consts::TAU * (i as f64 + 0.8 * rng.f64()) / verts as f64;
                    let shape: f64 = harmonics.iter().map(|(k, amp, ph)| amp * (k * a + ph).sin()).sum();
                    let r = radius_m * (1.0 + shape) * (1.0 + 0.04 * (rng.f64() - 0.5));
                    [center[0] + r * a.cos() * kx, center[1] + r * a.sin() * ky]
                })
                .collect();
            Polygon { center, radius_m, ring }
        })
        .collect()
}

pub fn points(n: usize, polys: &[Polygon], seed: u64) -> Vec<[f64; 2]> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|i| {
            if i % 2 == 0 || polys.is_empty() {
                [rng.range(REGION.0[0], REGION.1[0]), rng.range(REGION.0[1], REGION.1[1])]
            } else {
                let p = &polys[(rng.next_u64() % polys.len() as u64) as usize];
                let d = 2.0 * p.radius_m;
                let kx = 1.0 / (M_PER_DEG * p.center[1].to_radians().cos());
                [
                    p.center[0] + rng.range(-d, d) * kx,
                    p.center[1] + rng.range(-d, d) / M_PER_DEG,
                ]
            }
        })
        .collect()
}

pub fn to_fences(polys: &[Polygon]) -> Vec<geofence::Fence> {
    polys
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let ring: geo::LineString<f64> = p.ring.iter().map(|c| (c[0], c[1])).collect::<Vec<_>>().into();
            geofence::Fence::new(
                geofence::FenceId(i as u64),
                geofence::Shape::Polygon(geo::Polygon::new(ring, vec![])),
                geofence::FenceRules::default(),
            )
            .expect("star polygons are simple")
        })
        .collect()
}
