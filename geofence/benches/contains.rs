//! Point → containing fences over 10k realistic polygons (20–500 vertices), plus index
//! build time and the engine's batched path. Numbers and machine are in the README.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use geofence::{DeviceId, Engine, FenceIndex, Fix};

#[path = "support/datagen.rs"]
mod datagen;

const FENCES: usize = 10_000;
const POINTS: usize = 100_000;

fn contains(c: &mut Criterion) {
    let polys = datagen::polygons(FENCES, 42);
    let index = FenceIndex::build(datagen::to_fences(&polys)).unwrap();
    let points = datagen::points(POINTS, &polys, 7);

    let mut g = c.benchmark_group("contains");
    g.throughput(Throughput::Elements(POINTS as u64));
    g.bench_function("10k_polygons_point_to_fences", |b| {
        b.iter(|| black_box(index.count_containing(black_box(&points))))
    });
    g.bench_function("10k_polygons_batch_ids", |b| {
        b.iter(|| black_box(index.containing_batch(black_box(&points))))
    });
    g.finish();

    // Validation + preparation + indexing, on a tenth of the fences to keep the run short.
    let mut g = c.benchmark_group("build");
    g.sample_size(10);
    g.throughput(Throughput::Elements(1000));
    g.bench_function("validate_prepare_index_1k_polygons", |b| {
        b.iter(|| FenceIndex::build(datagen::to_fences(&polys[..1000])).unwrap())
    });
    g.finish();

    // 1000 devices, 100 fixes each, every fix 10 s apart: the stream operator's shape.
    let t0 = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
    let fixes: Vec<Fix> = points
        .iter()
        .enumerate()
        .map(|(i, p)| {
            Fix::at(
                DeviceId((i % 1000) as u64),
                t0 + chrono::TimeDelta::seconds(10 * (i / 1000) as i64),
                p[0],
                p[1],
            )
        })
        .collect();
    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(fixes.len() as u64));
    g.bench_function("process_batch_1k_devices", |b| {
        b.iter_batched(
            Engine::default,
            |mut e| black_box(e.process_batch(&index, &fixes)),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, contains);
criterion_main!(benches);
