//! Teltonika codec 8 / 8E side by side: ours vs the `nom-teltonika` crate, on the same
//! frames in the same run. The frames are built by nom-teltonika's own encoder, so
//! neither side is measured on input shaped for it.
//!
//! What is compared: a whole frame turned into owned records a server can store.
//! - `ours`: `Codec::decode` (CRC check, every record into a `Position` with typed
//!   attributes and the raw IO map).
//! - `nom_evaluate`: `take_frame` (CRC and structure check) then `evaluate()` into
//!   nom-teltonika's owned `Frame`.
//! - `nom_iterate`: `take_frame` then reading every record's GPS fields and IO values
//!   through its zero-copy views (the cheapest way to get at all the data with it).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use nom_teltonika::decoder::take_frame;
use nom_teltonika::encoder::{AvlRecordFields, EncodeAvlError, encode_avl_frame};
use nom_teltonika::protocol::{AvlCodec, AvlTimestamp, FrameView, GpsElement, IoId, Priority};
use protocols::{Framing, Protocol, Transport};

const GPS: GpsElement = GpsElement {
    longitude_raw: 252_797_000,
    latitude_raw: 546_872_000,
    altitude_meters: 118,
    angle_degrees: 45,
    satellites: 11,
    speed_kph: 52,
};

// A typical FMB920 periodic record: ignition, movement, GSM signal, GNSS status, sleep
// mode, data mode (u8); external and battery voltage, GNSS PDOP/HDOP, speed (u16);
// total odometer (u32); iButton (u64).
const IO_U8: [(u16, u8); 6] = [(239, 1), (240, 1), (21, 4), (69, 1), (200, 0), (80, 1)];
const IO_U16: [(u16, u16); 5] = [(66, 13_812), (67, 4_071), (181, 9), (182, 7), (24, 52)];
const IO_U32: [(u16, u32); 1] = [(16, 1_234_567)];
const IO_U64: [(u16, u64); 1] = [(78, 0x0102_0304_0506_0708)];

fn records(count: usize) -> Vec<AvlRecordFields<'static>> {
    static U8: std::sync::LazyLock<Vec<(IoId, u8)>> =
        std::sync::LazyLock::new(|| IO_U8.iter().map(|(i, v)| ((*i).into(), *v)).collect());
    static U16: std::sync::LazyLock<Vec<(IoId, u16)>> =
        std::sync::LazyLock::new(|| IO_U16.iter().map(|(i, v)| ((*i).into(), *v)).collect());
    static U32: std::sync::LazyLock<Vec<(IoId, u32)>> =
        std::sync::LazyLock::new(|| IO_U32.iter().map(|(i, v)| ((*i).into(), *v)).collect());
    static U64: std::sync::LazyLock<Vec<(IoId, u64)>> =
        std::sync::LazyLock::new(|| IO_U64.iter().map(|(i, v)| ((*i).into(), *v)).collect());
    (0..count)
        .map(|i| {
            let millis = 1_772_352_000_000 + 1_000 * i as u64;
            AvlRecordFields::new(AvlTimestamp::from(millis), Priority::Low, GPS)
                .with_io_u8(&U8)
                .with_io_u16(&U16)
                .with_io_u32(&U32)
                .with_io_u64(&U64)
        })
        .collect()
}

/// The fullest frame of `codec` that nom-teltonika will encode (devices send up to
/// about 1280 bytes per packet), and its record count.
fn fullest_frame(codec: AvlCodec) -> (Vec<u8>, usize) {
    (1..=255)
        .map_while(|n| match encode_avl_frame(codec, &records(n)) {
            Ok(frame) => Some((frame, n)),
            Err(EncodeAvlError::TooLong { .. }) => None,
            Err(e) => panic!("{e}"),
        })
        .last()
        .expect("one record fits")
}

fn side_by_side(c: &mut Criterion) {
    let ctx = protocols::DecodeContext::now();
    for (codec, name) in [(AvlCodec::Codec8, "codec8"), (AvlCodec::Codec8Extended, "codec8e")] {
        let (frame, n) = fullest_frame(codec);
        // Both decoders must agree on the record count before we time anything.
        let mut ours = Protocol::Teltonika.codec(Transport::Tcp).expect("teltonika codec");
        assert_eq!(
            ours.frame(&frame, false),
            Framing::Frame {
                start: 0,
                end: frame.len()
            }
        );
        let decoded = ours.decode(&frame, &ctx).expect("ours decodes nom-teltonika's frame");
        assert_eq!(decoded.iter().map(|m| m.positions.len()).sum::<usize>(), n);
        assert_eq!(
            decoded[0].positions[0].attributes.io.len(),
            IO_U8.len() + IO_U16.len() + IO_U32.len() + IO_U64.len()
        );

        let mut g = c.benchmark_group(format!("teltonika_{name}"));
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("ours", n), &frame, |b, f| {
            b.iter(|| ours.decode(black_box(f), &ctx).expect("decode"))
        });
        g.bench_with_input(BenchmarkId::new("nom_evaluate", n), &frame, |b, f| {
            b.iter(|| take_frame(&mut black_box(&f[..])).expect("decode").evaluate())
        });
        g.bench_with_input(BenchmarkId::new("nom_iterate", n), &frame, |b, f| {
            b.iter(|| {
                let FrameView::Avl(packet) = take_frame(&mut black_box(&f[..])).expect("decode") else {
                    unreachable!("an AVL frame")
                };
                let mut acc = 0f64;
                for record in packet.records() {
                    let gps = record.gps();
                    acc += gps.latitude_degrees() + gps.longitude_degrees() + f64::from(gps.speed_kph);
                    for e in record.io_elements() {
                        black_box((e.id(), e.value()));
                        acc += 1.0;
                    }
                }
                acc
            })
        });
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    targets = side_by_side
}
criterion_main!(benches);
