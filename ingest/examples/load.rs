//! Load benchmark: simulated GT06 devices over loopback TCP into PostgreSQL, and the raw
//! `COPY` rate of the same rows in the same run.
//!
//! ```text
//! cargo run --release -p ingest --example load -- [devices] [window] [seconds]
//! cargo run --release -p ingest --example load -- idle [connections]
//! ```
//!
//! The server (ingest + bus + writer) and the devices share this process, so CPU and RSS
//! include both; PostgreSQL runs with fsync on (`durable`). `window` is how many frames a
//! device sends before waiting for acks (1 = strictly one at a time).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::{TimeZone, Utc};
use ingest::{DeviceBatch, Ingest, IngestConfig, Registry, StoreSink, UnknownDevices};
use protocols::{DecodeContext, Framing, Message, MessageKind, Position, Protocol, Transport};
use store::testing::{TestCluster, TestClusterOptions};
use store::{PositionRow, Writer, WriterConfig};
use stream::{BusConfig, InProcessBus};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PROTOCOL: Protocol = Protocol::Gt06;

fn proc_stat() -> (f64, u64) {
    // utime + stime in clock ticks (USER_HZ = 100 on Linux), VmRSS in kB.
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f.get(11).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (ticks / 100.0, rss)
}

fn position(imei: &str, i: u64) -> Message {
    let t = Utc
        .timestamp_opt(Utc::now().timestamp() - 86_400 + i as i64, 0)
        .single()
        .expect("t");
    let mut p = Position::new(t, 54.0 + (i % 1000) as f64 * 1e-4, 25.0, true);
    p.speed_kmh = Some(50.0);
    p.course_deg = Some(180.0);
    p.satellites = Some(9);
    Message::new(MessageKind::Position)
        .with_imei(imei)
        .with_positions(vec![p])
}

fn ack_len(bytes: &[u8]) -> usize {
    let mut c = PROTOCOL.codec(Transport::Tcp).expect("codec");
    match c.frame(bytes, true) {
        Framing::Frame { start, end } => c
            .decode(&bytes[start..end], &DecodeContext::now())
            .map(|ms| ms.iter().map(|m| m.ack.as_ref().map_or(0, Vec::len)).sum())
            .unwrap_or(0),
        _ => 0,
    }
}

struct Stats {
    latencies: Mutex<Vec<Duration>>,
    positions: std::sync::atomic::AtomicU64,
}

async fn device(addr: SocketAddr, imei: String, window: usize, until: Instant, stats: Arc<Stats>) -> Result<()> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let mut enc = PROTOCOL.device_encoder(Transport::Tcp)?;
    let login = enc.encode(&Message::new(MessageKind::Login).with_imei(&imei))?;
    s.write_all(&login).await?;
    let mut buf = vec![0u8; 256];
    s.read_exact(&mut buf[..ack_len(&login)]).await?;
    let (mut rd, mut wr) = s.into_split();
    let mut sent: VecDeque<(Instant, usize)> = VecDeque::new();
    let mut i = 0u64;
    let mut lat = Vec::new();
    while Instant::now() < until {
        while sent.len() < window {
            let frame = enc.encode(&position(&imei, i))?;
            i += 1;
            sent.push_back((Instant::now(), ack_len(&frame)));
            wr.write_all(&frame).await?;
        }
        let (t, n) = sent.pop_front().context("window")?;
        rd.read_exact(&mut buf[..n]).await?;
        lat.push(t.elapsed());
        stats.positions.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    while let Some((t, n)) = sent.pop_front() {
        rd.read_exact(&mut buf[..n]).await?;
        lat.push(t.elapsed());
        stats.positions.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    stats.latencies.lock().unwrap().extend(lat);
    Ok(())
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p) as usize].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("idle-client") {
        return idle_client(args[1].parse()?, args[2].parse()?).await;
    }
    if args.first().map(String::as_str) == Some("idle") {
        return idle(args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10_000)).await;
    }
    let devices: usize = args.first().and_then(|s| s.parse().ok()).unwrap_or(200);
    let window: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(4);
    let seconds: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);

    let cluster = TestCluster::start(TestClusterOptions { durable: true })?;
    let db = cluster.fresh_db().await;
    // Group commit waits at most `max_delay` for company; at 50 ms (the store default)
    // that wait is the ack latency under light load, so the ingest path uses 5 ms.
    let writer = Writer::spawn(
        db.pool.clone(),
        WriterConfig {
            max_delay: Duration::from_millis(5),
            ..WriterConfig::default()
        },
    );
    let bus: Arc<InProcessBus<DeviceBatch>> = Arc::new(InProcessBus::new(
        &BusConfig::default(),
        Arc::new(StoreSink::new(writer.clone())),
    ));
    let config = IngestConfig {
        unknown_devices: UnknownDevices::Register,
        ..IngestConfig::default()
    };
    let registry = Arc::new(Registry::new(db.pool.clone(), config.unknown_devices, "bench"));
    ingest::registry::ensure_tenant(&db.pool, "bench").await?;
    let ingest = Ingest::new(config, registry, bus);
    let l = ingest.listen_tcp(PROTOCOL, "127.0.0.1:0".parse()?).await?;

    let stats = Arc::new(Stats {
        latencies: Mutex::new(Vec::new()),
        positions: Default::default(),
    });
    let (cpu0, _) = proc_stat();
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..devices)
        .map(|d| tokio::spawn(device(l.addr, format!("86{:013}", d + 1), window, until, stats.clone())))
        .collect();
    let mut peak_rss = 0;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(250)).await;
        peak_rss = peak_rss.max(proc_stat().1);
    }
    for t in tasks {
        t.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (cpu1, _) = proc_stat();
    let n = stats.positions.load(std::sync::atomic::Ordering::Relaxed);
    let mut lat = stats.latencies.lock().unwrap().clone();
    lat.sort();
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM positions")
        .fetch_one(&db.pool)
        .await?;
    let ingest_rate = n as f64 / elapsed;

    // Raw COPY of the same number of rows, same table, 10 000 rows per transaction (the
    // writer's group size), other device ids so keys do not collide.
    let server_time = Utc::now();
    let rows: Vec<PositionRow> = (0..n)
        .map(|i| {
            let m = position("x", i % 1_000_000);
            PositionRow::from_position(
                1_000_000 + (i / 1_000_000) as i64 + (i % 97) as i64 * 10,
                &m.positions[0],
                server_time,
            )
        })
        .collect();
    let mut conn = db.pool.acquire().await?;
    let copy_started = Instant::now();
    for chunk in rows.chunks(10_000) {
        let mut buf = store::copy::CopyBuffer::with_capacity(chunk.len() * 128);
        for r in chunk {
            buf.push_position(r);
        }
        let bytes = buf.finish();
        let mut tx = sqlx::Acquire::begin(&mut *conn).await?;
        let statement = format!(
            "COPY positions ({}) FROM STDIN (FORMAT binary)",
            store::copy::POSITION_COLUMNS
        );
        let mut copy = tx.copy_in_raw(&statement).await?;
        copy.send(&bytes[..]).await?;
        copy.finish().await?;
        tx.commit().await?;
    }
    let copy_rate = n as f64 / copy_started.elapsed().as_secs_f64();

    println!("devices {devices}, window {window}, {seconds} s, protocol {PROTOCOL}");
    println!("acked positions: {n} ({stored} rows stored)");
    println!("ingest: {ingest_rate:.0} positions/s");
    println!(
        "ack latency: p50 {:.1} ms, p99 {:.1} ms",
        pct(&lat, 0.5),
        pct(&lat, 0.99)
    );
    println!(
        "cpu (server + devices, this process): {:.0}% of one core; peak RSS {} MiB",
        (cpu1 - cpu0) / elapsed * 100.0,
        peak_rss / 1024
    );
    println!(
        "raw COPY of the same rows: {copy_rate:.0} rows/s; ingest/COPY = {:.2}",
        ingest_rate / copy_rate
    );
    ingest.shutdown().await;
    writer.shutdown().await;
    Ok(())
}

/// Opens `count` idle device connections (logged in) and reports the server-side RSS
/// growth per connection. Devices use 127.0.0.x source addresses to stay clear of the
/// ephemeral-port limit.
async fn idle(count: usize) -> Result<()> {
    raise_nofile(count as u64 * 2 + 1024);
    let cluster = TestCluster::start(TestClusterOptions::default())?;
    let db = cluster.fresh_db().await;
    let writer = Writer::spawn(db.pool.clone(), WriterConfig::default());
    let bus: Arc<InProcessBus<DeviceBatch>> = Arc::new(InProcessBus::new(
        &BusConfig::default(),
        Arc::new(StoreSink::new(writer.clone())),
    ));
    let config = IngestConfig {
        unknown_devices: UnknownDevices::Register,
        ..IngestConfig::default()
    };
    ingest::registry::ensure_tenant(&db.pool, "bench").await?;
    let registry = Arc::new(Registry::new(db.pool.clone(), config.unknown_devices, "bench"));
    let ingest = Ingest::new(config, registry, bus);
    let l = ingest.listen_tcp(PROTOCOL, "127.0.0.1:0".parse()?).await?;
    // Warm the registry path and allocator with one device first.
    let warm = login(l.addr, 0, 0).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, rss0) = proc_stat();
    // The devices live in a child process so this RSS is the server's alone.
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args(["idle-client", &l.addr.to_string(), &count.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut out = child.stdout.take().context("stdout")?;
    let mut ready = [0u8; 1];
    out.read_exact(&mut ready).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, rss1) = proc_stat();
    println!(
        "{count} idle logged-in connections: server RSS +{} MiB, {:.1} KiB per connection",
        (rss1 - rss0) / 1024,
        (rss1 - rss0) as f64 / count as f64
    );
    child.kill().await?;
    drop(warm);
    ingest.shutdown().await;
    writer.shutdown().await;
    Ok(())
}

/// The device side of `idle`: opens and logs in `count` connections, says so with one
/// byte on stdout, then holds them until killed.
async fn idle_client(addr: SocketAddr, count: usize) -> Result<()> {
    raise_nofile(count as u64 + 1024);
    let mut conns = Vec::with_capacity(count);
    for i in 1..=count {
        conns.push(login(addr, i, i / 20_000).await?);
    }
    {
        use std::io::Write;
        let mut out = std::io::stdout();
        out.write_all(b"r")?;
        out.flush()?;
    }
    std::future::pending::<()>().await;
    Ok(())
}

async fn login(addr: SocketAddr, i: usize, src: usize) -> Result<TcpStream> {
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.bind(format!("127.0.0.{}:0", 2 + src).parse()?)?;
    let mut s = sock.connect(addr).await?;
    let mut enc = PROTOCOL.device_encoder(Transport::Tcp)?;
    let login = enc.encode(&Message::new(MessageKind::Login).with_imei(format!("87{:013}", i + 1)))?;
    s.write_all(&login).await?;
    let mut buf = [0u8; 64];
    s.read_exact(&mut buf[..ack_len(&login)]).await?;
    Ok(s)
}

fn raise_nofile(want: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, want.min(hard), hard);
    }
}
