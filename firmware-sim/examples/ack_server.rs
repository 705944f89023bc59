//! A standalone acking server for trying `clutch sim` without a Clutch server:
//! `cargo run -p firmware-sim --example ack_server -- gt06 127.0.0.1:5023 [tcp|udp|http]`.

use std::time::Duration;

use firmware_sim::ack_server::{Behaviour, start_on};
use protocols::{Protocol, Transport};

#[tokio::main]
async fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let protocol: Protocol = args.first().map_or("teltonika", String::as_str).parse()?;
    let addr = args
        .get(1)
        .map_or_else(|| format!("127.0.0.1:{}", protocol.default_port()), Clone::clone)
        .parse()
        .map_err(|e| format!("bad listen address: {e}"))?;
    let transport: Transport = match args.get(2) {
        Some(t) => t.parse()?,
        None => protocol.transports()[0],
    };
    let _ = rlimit::increase_nofile_limit(1 << 20);
    let server = start_on(addr, protocol, transport, Behaviour::Ack, false)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    eprintln!("acking {protocol}/{} on {}", transport.as_str(), server.addr);
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let n = server.seen.position_count.load(std::sync::atomic::Ordering::Relaxed);
        eprintln!("{} positions ({}/s)", n, (n - last) / 5);
        last = n;
    }
}
