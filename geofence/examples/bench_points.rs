//! Side-by-side benchmark driver (used by `benches/geofence_compare.sh`).
//!
//! `bench_points gen DIR [FENCES] [POINTS]` writes the deterministic data set:
//!   DIR/fences.geojson  (FeatureCollection, what we load)
//!   DIR/fences.tsv      (`id<TAB>WKT`, what shapely and PostGIS load)
//!   DIR/points.csv      (`lon,lat`)
//! `bench_points run DIR [THREADS]` loads the GeoJSON, builds the index, times point →
//! containing fences over all points (best of 3), then once more through the R-tree
//! alone (no grid), and prints one JSON line.

use std::fmt::Write as _;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use geofence::{FenceIndex, fences_from_geojson};

#[path = "../benches/support/datagen.rs"]
mod datagen;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("gen") => {
            let dir = args.get(1).context("gen DIR")?;
            let n_f = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(10_000);
            let n_p = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(1_000_000);
            generate(dir, n_f, n_p)
        }
        Some("run") => {
            let dir = args.get(1).context("run DIR")?;
            let threads = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(1);
            run(dir, threads)
        }
        _ => bail!("usage: bench_points gen DIR [FENCES] [POINTS] | run DIR [THREADS]"),
    }
}

fn generate(dir: &str, n_fences: usize, n_points: usize) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let polys = datagen::polygons(n_fences, 42);
    let fences = datagen::to_fences(&polys);
    std::fs::write(format!("{dir}/fences.geojson"), geofence::fences_to_geojson(&fences))?;
    let mut tsv = String::new();
    for (i, p) in polys.iter().enumerate() {
        write!(tsv, "{i}\tPOLYGON((")?;
        for c in p.ring.iter().chain(std::iter::once(&p.ring[0])) {
            if !tsv.ends_with('(') {
                tsv.push(',');
            }
            write!(tsv, "{} {}", c[0], c[1])?;
        }
        tsv.push_str("))\n");
    }
    std::fs::write(format!("{dir}/fences.tsv"), tsv)?;
    let mut csv = String::new();
    for p in datagen::points(n_points, &polys, 7) {
        writeln!(csv, "{},{}", p[0], p[1])?;
    }
    std::fs::write(format!("{dir}/points.csv"), csv)?;
    let vertices: usize = polys.iter().map(|p| p.ring.len()).sum();
    println!(r#"{{"fences":{n_fences},"vertices":{vertices},"points":{n_points}}}"#);
    Ok(())
}

fn run(dir: &str, threads: usize) -> Result<()> {
    let text = std::fs::read_to_string(format!("{dir}/fences.geojson"))?;
    let t = Instant::now();
    let fences = fences_from_geojson(&text)?;
    let index = FenceIndex::build(fences)?;
    let build_s = t.elapsed().as_secs_f64();
    let points: Vec<[f64; 2]> = std::fs::read_to_string(format!("{dir}/points.csv"))?
        .lines()
        .map(|l| {
            let (a, b) = l.split_once(',').context("lon,lat")?;
            Ok([a.parse()?, b.parse()?])
        })
        .collect::<Result<_>>()?;
    let threads = threads.max(1);
    let mut best = f64::INFINITY;
    let mut best_cpu = f64::INFINITY;
    let mut pairs = 0;
    for _ in 0..3 {
        let t = Instant::now();
        let cpu = thread_cpu_s();
        pairs = if threads == 1 {
            index.count_containing(&points)
        } else {
            let chunk = points.len().div_ceil(threads);
            std::thread::scope(|s| {
                let handles: Vec<_> = points
                    .chunks(chunk)
                    .map(|c| {
                        let index = &index;
                        s.spawn(move || index.count_containing(c))
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().expect("worker")).sum()
            })
        };
        best = best.min(t.elapsed().as_secs_f64());
        // schedstat advances at scheduler ticks: ignore a reading too short to count.
        if let (Some(a), Some(b)) = (cpu, thread_cpu_s())
            && b > a
        {
            best_cpu = best_cpu.min(b - a);
        }
    }
    // The same query through the R-tree alone, single-threaded, for the README.
    let t = Instant::now();
    let rtree_pairs: usize = points
        .iter()
        .map(|p| index.containing_via_rtree(p[0], p[1]).len())
        .sum();
    let rtree_s = t.elapsed().as_secs_f64();
    if rtree_pairs as u64 != pairs {
        bail!("grid path found {pairs} pairs, R-tree path {rtree_pairs}");
    }
    println!(
        r#"{{"tool":"geofence","threads":{threads},"fences":{},"points":{},"pairs":{pairs},"build_s":{build_s:.3},"query_s":{best:.4},"points_per_s":{:.0},"cpu_points_per_s":{},"rtree_only_points_per_s":{:.0}}}"#,
        index.len(),
        points.len(),
        points.len() as f64 / best,
        // `null` when not measured: several threads, or a run shorter than a tick.
        if threads == 1 && best_cpu.is_finite() {
            format!("{:.0}", points.len() as f64 / best_cpu)
        } else {
            "null".into()
        },
        points.len() as f64 / rtree_s
    );
    Ok(())
}

/// CPU time of this thread, seconds (Linux `schedstat`: nanoseconds on CPU). The machine
/// this runs on is shared, so wall time alone says as much about the neighbours as
/// about us.
fn thread_cpu_s() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: f64 = s.split_whitespace().next()?.parse().ok()?;
    Some(ns / 1e9)
}
