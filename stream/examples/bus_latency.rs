//! Publish → receipt latency and pipelined throughput, in-process vs NATS JetStream on
//! this machine (a `nats-server` from `stream::testing`). Numbers go in the README.
//!
//! `cargo run --release -p stream --example bus_latency`
//!
//! It also compares wire formats on a batch shaped like ingest's `DeviceBatch` (three
//! positions with typed columns and a JSON attribute remainder).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use stream::testing::NatsServer;
use stream::{BoxFuture, Bus, BusConfig, BusError, DurableSink, InProcessBus, Keyed, NatsBus};

/// About the size of one tracker frame's batch on the wire (a few positions).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Batch {
    device: u64,
    n: u64,
    payload: Vec<f64>,
}

impl Keyed for Batch {
    fn key(&self) -> u64 {
        self.device
    }
    fn records(&self) -> usize {
        1
    }
}

/// In-process durability at no cost: what remains is the bus itself.
struct Instant0;
impl DurableSink<Batch> for Instant0 {
    fn submit(&self, _: Arc<Batch>) -> BoxFuture<Result<BoxFuture<Result<(), BusError>>, BusError>> {
        Box::pin(async { Ok(Box::pin(async { Ok(()) }) as BoxFuture<Result<(), BusError>>) })
    }
}

fn batch(device: u64, n: u64) -> Batch {
    Batch {
        device,
        n,
        payload: vec![54.123_456; 40],
    }
}

async fn measure(name: &str, bus: Arc<dyn Bus<Batch>>) {
    let mut lat = Vec::with_capacity(2000);
    for n in 0..2000u64 {
        let t = Instant::now();
        bus.publish(batch(n % 64, n))
            .await
            .expect("publish")
            .await
            .expect("durable");
        lat.push(t.elapsed());
    }
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    const N: u64 = 50_000;
    let t = Instant::now();
    let mut receipts = Vec::with_capacity(N as usize);
    for n in 0..N {
        receipts.push(bus.publish(batch(n % 1000, n)).await.expect("publish"));
    }
    for r in receipts {
        r.await.expect("durable");
    }
    let el = t.elapsed();
    println!(
        "{name:<11} latency p50 {:>7.1} µs  p99 {:>7.1} µs   pipelined {:>8.0} batches/s",
        us(pct(0.5)),
        us(pct(0.99)),
        N as f64 / el.as_secs_f64()
    );
}

/// The shape of `store::PositionRow` (stream does not depend on store).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Row {
    device_id: i64,
    fix_time: String,
    server_time: String,
    lat: f64,
    lon: f64,
    altitude: Option<f32>,
    speed_kmh: Option<f32>,
    course: Option<f32>,
    satellites: Option<i16>,
    hdop: Option<f32>,
    valid: bool,
    ignition: Option<bool>,
    motion: Option<bool>,
    odometer_m: Option<f64>,
    fuel_level_pct: Option<f32>,
    fuel_used_l: Option<f64>,
    rpm: Option<f32>,
    coolant_c: Option<f32>,
    power_v: Option<f32>,
    battery_v: Option<f32>,
    event: Option<i32>,
    alarms: Option<Vec<String>>,
    dtcs: Option<Vec<String>>,
    attributes: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct RowBatch {
    device_id: i64,
    positions: Vec<Row>,
}

fn row_batch() -> RowBatch {
    let row = |i: i64| Row {
        device_id: 4711,
        fix_time: format!("2026-11-22T06:0{i}:00Z"),
        server_time: "2026-11-22T06:10:00.123456Z".into(),
        lat: 54.687_157,
        lon: 25.279_652,
        altitude: Some(112.0),
        speed_kmh: Some(48.0),
        course: Some(270.0),
        satellites: Some(9),
        hdop: Some(0.9),
        valid: true,
        ignition: Some(true),
        motion: Some(true),
        odometer_m: Some(123_456_789.0),
        fuel_level_pct: Some(57.5),
        fuel_used_l: None,
        rpm: Some(1800.0),
        coolant_c: Some(88.0),
        power_v: Some(13.9),
        battery_v: Some(4.1),
        event: None,
        alarms: None,
        dtcs: None,
        attributes: Some(serde_json::json!({ "io": { "239": 1, "240": 1, "21": 5, "66": 13900 } })),
    };
    RowBatch {
        device_id: 4711,
        positions: (0..3).map(row).collect(),
    }
}

fn formats() {
    let b = row_batch();
    type Enc = fn(&RowBatch) -> Vec<u8>;
    type Dec = fn(&[u8]) -> RowBatch;
    let cases: [(&str, Enc, Dec); 3] = [
        (
            "json",
            |b| serde_json::to_vec(b).expect("json"),
            |v| serde_json::from_slice(v).expect("json"),
        ),
        (
            "msgpack (named)",
            |b| rmp_serde::to_vec_named(b).expect("rmp"),
            |v| rmp_serde::from_slice(v).expect("rmp"),
        ),
        (
            "msgpack (arrays)",
            |b| rmp_serde::to_vec(b).expect("rmp"),
            |v| rmp_serde::from_slice(v).expect("rmp"),
        ),
    ];
    for (name, enc, dec) in cases {
        let bytes = enc(&b);
        assert_eq!(dec(&bytes), b);
        const N: u32 = 20_000;
        let t = Instant::now();
        for _ in 0..N {
            std::hint::black_box(dec(&enc(std::hint::black_box(&b))));
        }
        println!(
            "format {name:<17} {:>5} bytes  encode+decode {:>6.2} µs/batch",
            bytes.len(),
            us(t.elapsed()) / f64::from(N)
        );
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[tokio::main]
async fn main() {
    formats();
    measure(
        "in-process",
        Arc::new(InProcessBus::new(&BusConfig::default(), Arc::new(Instant0))),
    )
    .await;
    let server = NatsServer::start();
    let cfg = BusConfig {
        nats_url: server.url(),
        ..BusConfig::default()
    };
    measure(
        "nats",
        Arc::new(NatsBus::<Batch>::connect(&cfg, "bench").await.expect("nats")),
    )
    .await;
}
