//! Scale check: N concurrent device connections from one process against an in-process
//! acking server. `cargo run --release -p firmware-sim --example scale -- 10000 gt06 60s 10s`
//! (devices, protocol, duration, interval, and optionally the `host:port` of a server in
//! another process — with both ends in one process every connection costs two file
//! descriptors). Numbers go in the crate README.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use firmware_sim::ack_server::{Behaviour, start_on};
use firmware_sim::run::{Fleet, FleetConfig};
use firmware_sim::scenario::parse_duration;
use protocols::Protocol;

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let devices: usize = args
        .first()
        .map_or(Ok(10_000), |s| s.parse())
        .map_err(|e| format!("devices: {e}"))?;
    let protocol: Protocol = args.get(1).map_or("gt06", String::as_str).parse()?;
    let duration = parse_duration(args.get(2).map_or("60s", String::as_str))?;
    let interval = parse_duration(args.get(3).map_or("10s", String::as_str))?;
    let limit = rlimit::increase_nofile_limit(devices as u64 * 2 + 1024).map_err(|e| e.to_string())?;
    eprintln!("open-file limit {limit}");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let transport = protocol.transports()[0];
        let external: Option<std::net::SocketAddr> = match args.get(4) {
            Some(a) => Some(a.parse().map_err(|e| format!("target: {e}"))?),
            None => None,
        };
        let server = match external {
            Some(_) => None,
            None => {
                let any = "127.0.0.1:0".parse().map_err(|_| "addr")?;
                Some(
                    start_on(any, protocol, transport, Behaviour::Ack, false)
                        .await
                        .map_err(|e| e.to_string())?,
                )
            }
        };
        let target = external.or(server.as_ref().map(|s| s.addr)).ok_or("no target")?;
        let mut cfg = FleetConfig::new(devices, protocol, target);
        cfg.duration = duration;
        cfg.interval = interval;
        cfg.ramp = Duration::from_secs_f64((devices as f64 / 1000.0).min(30.0));
        cfg.drain = Duration::from_secs(15);
        cfg.ack_timeout = Duration::from_secs(15);
        cfg.source_ips = FleetConfig::loopback_sources(devices);
        cfg.seed = 7;
        let fleet = Fleet::start(&cfg);
        let (summary, _) = fleet.wait(Some(cfg.ramp + cfg.duration)).await;
        println!("{summary}");
        if let Some(server) = server {
            println!("server saw {} positions", server.seen.position_count.load(Relaxed));
        }
        Ok::<(), String>(())
    })
}
