//! Instruction-count companion to the `teltonika_vs_nom` bench, for machines too busy for
//! stable wall-clock numbers: run each decoder under `valgrind --tool=callgrind` and divide
//! the instruction total by the records decoded.
//!
//! `cargo build --release -p clutch-benches --example teltonika_instr`
//! `valgrind --tool=callgrind target/release/examples/teltonika_instr ours 8e 20000`
//! `/usr/bin/time -f %U target/release/examples/teltonika_instr nom_evaluate 8 300000` (CPU seconds)
//!
//! `IBUTTON=0` sends records without a driver key (id 78 = 0), as most FMB records are.

use std::hint::black_box;

use nom_teltonika::decoder::take_frame;
use nom_teltonika::encoder::{AvlRecordFields, encode_avl_frame};
use nom_teltonika::protocol::{AvlCodec, AvlTimestamp, FrameView, GpsElement, IoId, Priority};
use protocols::{DecodeContext, Protocol, Transport};

const GPS: GpsElement = GpsElement {
    longitude_raw: 252_797_000,
    latitude_raw: 546_872_000,
    altitude_meters: 118,
    angle_degrees: 45,
    satellites: 11,
    speed_kph: 52,
};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let which = args.get(1).map(String::as_str).unwrap_or("ours");
    let codec = match args.get(2).map(String::as_str) {
        Some("8") => AvlCodec::Codec8,
        _ => AvlCodec::Codec8Extended,
    };
    let iterations: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let u8s: Vec<(IoId, u8)> = [(239, 1), (240, 1), (21, 4), (69, 1), (200, 0), (80, 1)]
        .iter()
        .map(|(i, v)| (IoId::from(*i), *v))
        .collect();
    let u16s: Vec<(IoId, u16)> = [(66, 13_812), (67, 4_071), (181, 9), (182, 7), (24, 52)]
        .iter()
        .map(|(i, v)| (IoId::from(*i), *v))
        .collect();
    let u32s: Vec<(IoId, u32)> = vec![(IoId::from(16), 1_234_567)];
    let u64s: Vec<(IoId, u64)> = vec![(
        IoId::from(78),
        std::env::var("IBUTTON")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x0102_0304_0506_0708),
    )];
    let records: Vec<AvlRecordFields<'_>> = (0..10)
        .map(|i| {
            AvlRecordFields::new(AvlTimestamp::from(1_772_352_000_000 + 1_000 * i), Priority::Low, GPS)
                .with_io_u8(&u8s)
                .with_io_u16(&u16s)
                .with_io_u32(&u32s)
                .with_io_u64(&u64s)
        })
        .collect();
    let frame = encode_avl_frame(codec, &records).expect("encode");
    let ctx = DecodeContext::now();
    let mut ours = Protocol::Teltonika.codec(Transport::Tcp).expect("codec");
    let mut total = 0usize;
    for _ in 0..iterations {
        total += match which {
            "ours" => ours.decode(black_box(&frame), &ctx).expect("decode")[0].positions.len(),
            "nom_evaluate" => match take_frame(&mut black_box(&frame[..])).expect("decode").evaluate() {
                nom_teltonika::protocol::Frame::Avl(p) => p.records().len(),
                _ => 0,
            },
            "nom_iterate" => {
                let FrameView::Avl(packet) = take_frame(&mut black_box(&frame[..])).expect("decode") else {
                    unreachable!("an AVL frame")
                };
                let mut n = 0;
                for record in packet.records() {
                    let gps = record.gps();
                    black_box((gps.latitude_degrees(), gps.longitude_degrees(), gps.speed_kph));
                    for e in record.io_elements() {
                        black_box((e.id(), e.value()));
                    }
                    n += 1;
                }
                n
            }
            other => panic!("unknown decoder {other}: ours, nom_evaluate or nom_iterate"),
        };
    }
    println!("{which}: {total} records, {} bytes per frame", frame.len());
}
