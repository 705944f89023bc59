//! The index must answer exactly what a brute-force scan with independent oracles
//! answers: `geo`'s `Contains` for polygons, haversine for circles, and a plain
//! distance-to-polyline for corridors. Shapes are random (star polygons with and
//! without holes, multipolygons, circles, corridors), including ones written across
//! the antimeridian.

use geo::{Contains, Coord, LineString, MultiPolygon, Point, Polygon};
use geofence::metres::{haversine_m, segment_distance_m};
use geofence::{Fence, FenceId, FenceIndex, FenceRules, Shape};
use proptest::prelude::*;

/// Longitude written as a device or a map editor would: wrapped into -180..180.
fn wrap(lon: f64) -> f64 {
    if lon > 180.0 {
        lon - 360.0
    } else if lon < -180.0 {
        lon + 360.0
    } else {
        lon
    }
}

/// A star-shaped ring (always simple) around `c`, radii in degrees.
fn star(c: (f64, f64), radii: &[f64], scale: f64) -> Vec<(f64, f64)> {
    let n = radii.len();
    (0..n)
        .map(|i| {
            let a = std::f64::consts::TAU * i as f64 / n as f64;
            (c.0 + scale * radii[i] * a.cos(), c.1 + scale * radii[i] * a.sin())
        })
        .collect()
}

#[derive(Debug, Clone)]
enum Spec {
    Star {
        c: (f64, f64),
        radii: Vec<f64>,
        hole: bool,
    },
    Multi {
        a: (f64, f64),
        b: (f64, f64),
        radii: Vec<f64>,
    },
    Circle {
        c: (f64, f64),
        r_m: f64,
    },
    Corridor {
        pts: Vec<(f64, f64)>,
        w_m: f64,
    },
}

fn spec(lon0: f64) -> impl Strategy<Value = Spec> {
    let c = (lon0 - 0.5..lon0 + 0.5, -0.5..0.5f64);
    let radii = prop::collection::vec(0.3..1.0f64, 3..40);
    prop_oneof![
        (c.clone(), radii.clone(), any::<bool>()).prop_map(|(c, radii, hole)| Spec::Star { c, radii, hole }),
        (c.clone(), c.clone(), radii).prop_map(|(a, b, radii)| Spec::Multi { a, b, radii }),
        (c.clone(), 10.0..20_000.0f64).prop_map(|(c, r_m)| Spec::Circle { c, r_m }),
        (prop::collection::vec(c, 2..20), 10.0..5_000.0f64).prop_map(|(pts, w_m)| Spec::Corridor { pts, w_m }),
    ]
}

fn ring(pts: &[(f64, f64)]) -> LineString<f64> {
    pts.iter().map(|&(x, y)| Coord { x: wrap(x), y }).collect()
}

fn shape(s: &Spec) -> Shape {
    match s {
        Spec::Star { c, radii, hole } => {
            let outer = ring(&star(*c, radii, 0.3));
            // Outer edges stay at least 0.045° from the centre (3 vertices at the minimum
            // radius), so a hole of radius 0.03° never touches them.
            let holes = if *hole {
                vec![ring(&star(*c, &[1.0; 6], 0.03))]
            } else {
                vec![]
            };
            Shape::Polygon(Polygon::new(outer, holes))
        }
        Spec::Multi { a, b, radii } => {
            // Two small stars; they may overlap, which the fence allows.
            Shape::MultiPolygon(MultiPolygon(vec![
                Polygon::new(ring(&star(*a, radii, 0.1)), vec![]),
                Polygon::new(ring(&star(*b, radii, 0.1)), vec![]),
            ]))
        }
        Spec::Circle { c, r_m } => Shape::Circle {
            center: Point::new(wrap(c.0), c.1),
            radius_m: *r_m,
        },
        Spec::Corridor { pts, w_m } => Shape::Corridor {
            line: ring(pts),
            width_m: *w_m,
        },
    }
}

/// The same test with nothing from the crate but its distance helper for corridors.
fn oracle(s: &Spec, lon: f64, lat: f64) -> bool {
    // Unwrapped coordinates: try the point at its own longitude and one turn either way.
    let shifted = [lon, lon + 360.0, lon - 360.0];
    let in_poly = |p: &Polygon<f64>| shifted.iter().any(|&x| p.contains(&Point::new(x, lat)));
    let unwrapped = |pts: &[(f64, f64)]| -> LineString<f64> { pts.iter().map(|&(x, y)| Coord { x, y }).collect() };
    match s {
        Spec::Star { c, radii, hole } => {
            let holes = if *hole {
                vec![unwrapped(&star(*c, &[1.0; 6], 0.03))]
            } else {
                vec![]
            };
            in_poly(&Polygon::new(unwrapped(&star(*c, radii, 0.3)), holes))
        }
        Spec::Multi { a, b, radii } => {
            in_poly(&Polygon::new(unwrapped(&star(*a, radii, 0.1)), vec![]))
                || in_poly(&Polygon::new(unwrapped(&star(*b, radii, 0.1)), vec![]))
        }
        Spec::Circle { c, r_m } => haversine_m([c.0, c.1], [lon, lat]) <= *r_m,
        Spec::Corridor { pts, w_m } => {
            let cos = lat.to_radians().cos();
            let mut v: Vec<[f64; 2]> = pts.iter().map(|&(x, y)| [x, y]).collect();
            v.dedup();
            v.windows(2)
                .any(|w| segment_distance_m([lon, lat], w[0], w[1], cos) <= w_m / 2.0)
        }
    }
}

fn check(specs: Vec<Spec>, points: Vec<(f64, f64)>) -> Result<(), TestCaseError> {
    let fences: Vec<Fence> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            Fence::new(FenceId(i as u64), shape(s), FenceRules::default()).expect("generated shapes are valid")
        })
        .collect();
    let index = FenceIndex::build(fences).unwrap();
    let pts: Vec<[f64; 2]> = points.iter().map(|&(x, y)| [wrap(x), y]).collect();
    let batch = index.containing_batch(&pts);
    for (i, p) in pts.iter().enumerate() {
        let want: Vec<FenceId> = specs
            .iter()
            .enumerate()
            .filter(|(_, s)| oracle(s, p[0], p[1]))
            .map(|(i, _)| FenceId(i as u64))
            .collect();
        let got = index.containing(p[0], p[1]);
        prop_assert_eq!(&got, &want, "point {:?}", p);
        prop_assert_eq!(batch.of(i), &want[..]);
        prop_assert_eq!(index.containing_via_rtree(p[0], p[1]), want.clone());
        // Fence::contains (no index) agrees too.
        let scan: Vec<FenceId> = index
            .fences()
            .iter()
            .filter(|f| f.contains(p[0], p[1]))
            .map(|f| f.id())
            .collect();
        prop_assert_eq!(scan, want);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn index_equals_brute_force(
        specs in prop::collection::vec(spec(10.0), 1..25),
        points in prop::collection::vec((9.3..10.7f64, -0.7..0.7f64), 200),
    ) {
        check(specs, points)?;
    }

    #[test]
    fn index_equals_brute_force_across_antimeridian(
        specs in prop::collection::vec(spec(180.0), 1..25),
        points in prop::collection::vec((179.3..180.7f64, -0.7..0.7f64), 200),
    ) {
        check(specs, points)?;
    }
}

#[test]
fn large_polygon_matches_geo() {
    // 2000 vertices: many bands, many edges per polygon.
    let radii: Vec<f64> = (0..2000)
        .map(|i| 0.6 + 0.35 * ((i as f64 * 0.37).sin() * (i as f64 * 0.11).cos()))
        .collect();
    let s = Spec::Star {
        c: (10.0, 0.0),
        radii,
        hole: true,
    };
    let pts: Vec<(f64, f64)> = (0..20_000)
        .map(|i| {
            let a = i as f64 * 0.618_033_988_749;
            (10.0 + 0.35 * (a * 7.0).sin(), 0.35 * (a * 3.0).cos())
        })
        .collect();
    check(vec![s], pts).unwrap();
}
