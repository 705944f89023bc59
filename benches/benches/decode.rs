//! Decode throughput per protocol on realistic traffic (records/s and bytes/s), built by
//! each protocol's device-side encoder: many fixes per packet where the protocol allows.

use std::hint::black_box;

use clutch_benches::{ctx, encoded_traffic};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use protocols::{Protocol, decode_all};

const RECORDS: usize = 2_000;
const BATCH: usize = 25;

fn decode(c: &mut Criterion) {
    for protocol in Protocol::ALL {
        let transport = protocol.transports()[0];
        let (bytes, records) = encoded_traffic(protocol, transport, RECORDS, BATCH);
        let ctx = ctx();
        let run = || {
            let mut codec = protocol.codec(transport).expect("codec");
            let (messages, errors) = decode_all(codec.as_mut(), black_box(&bytes), &ctx);
            black_box((messages, errors))
        };
        let mut g = c.benchmark_group("decode_records");
        g.throughput(Throughput::Elements(records as u64));
        g.bench_function(protocol.name(), |b| b.iter(run));
        g.finish();
        let mut g = c.benchmark_group("decode_bytes");
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function(protocol.name(), |b| b.iter(run));
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(2));
    targets = decode
}
criterion_main!(benches);
