//! Publish → receipt latency and pipelined throughput, in-process vs NATS JetStream on
//! this machine (a `nats-server` from `stream::testing`). Numbers go in the README.
//!
//! `cargo run --release -p stream --example bus_latency`

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

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[tokio::main]
async fn main() {
    let size = rmp_serde::to_vec_named(&batch(1, 1)).expect("encode").len();
    println!("batch: {size} bytes as MessagePack");
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
