//! Load benchmark: simulated devices over loopback TCP into PostgreSQL (fsync on), and
//! in the same run the raw `COPY` rate of the very rows that were stored.
//!
//! ```text
//! cargo run --release -p ingest --example load -- [seconds] [SCENARIO…]
//!     SCENARIO = protocol[+ops]:records_per_frame:devices:pace[:max_delay_ms[:workers]]
//!     pace = N (N frames in flight per device, closed loop) or @MS (a frame every MS ms, open loop)
//!     e.g. gt06:1:200:4  teltonika:20:200:2  gt06:1:200:4:50:2  teltonika+ops:20:200:2
//! cargo run --release -p ingest --example load -- idle [connections]
//! ```
//!
//! Every scenario gets a fresh database, a fresh server (ingest + in-process bus + store
//! writer, in this process) and a fresh device generator in a **child process**, so CPU
//! is reported apart for the server, the generator and PostgreSQL (all its processes).
//! A numeric pace is how many frames a device has in flight before it waits for an ack
//! (the server's ceiling); `@MS` sends on a schedule instead (latency at a given load).
//! `max_delay_ms`/`workers` override the store writer's settings (`clutch serve`'s
//! otherwise), to compare settings in one run. `+ops` runs the stream operators on the
//! bus as `clutch serve` does (all of them, with the analytics detectors), writing their
//! events and checkpoints to the same database: the cost of operators on ingest.
//!
//! After each scenario the stored rows are copied out (untimed) and written back under
//! other device ids with binary `COPY`, ≤ 10 000 rows per transaction (the writer's group
//! cap): that is the "raw COPY rate of the same rows". The CPU-normalised ratio divides
//! positions per CPU-second of server + PostgreSQL by COPY rows per CPU-second of the
//! COPY client + PostgreSQL, which takes the generator out of the comparison.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chrono::{TimeZone, Utc};
use ingest::{DeviceBatch, Ingest, IngestConfig, Registry, StoreSink, UnknownDevices};
use protocols::{DecodeContext, Framing, Message, MessageKind, Position, Protocol, Transport};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use store::testing::{TestCluster, TestClusterOptions};
use store::{Writer, WriterConfig};
use stream::{BusConfig, InProcessBus};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// utime + stime of a process in seconds (`children` adds its reaped children's), from
/// `/proc/<pid>/stat` (clock ticks, USER_HZ = 100 on Linux).
fn cpu_of(pid: &str, children: bool) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<f64> = after.split_whitespace().map(|s| s.parse().unwrap_or(0.0)).collect();
    // After the `)`: state is field 0, utime 11, stime 12, cutime 13, cstime 14.
    let get = |i: usize| f.get(i).copied().unwrap_or(0.0);
    let mut ticks = get(11) + get(12);
    if children {
        ticks += get(13) + get(14);
    }
    ticks / 100.0
}

fn ppid_of(pid: &str) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')').next()?.split_whitespace().nth(1)?.parse().ok()
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// CPU seconds of the whole PostgreSQL cluster: the postmaster (with the backends it has
/// already reaped) plus every live child.
fn postgres_cpu(postmaster: u32) -> f64 {
    let mut total = cpu_of(&postmaster.to_string(), true);
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let name = e.file_name();
            let Some(pid) = name.to_str().filter(|s| s.bytes().all(|b| b.is_ascii_digit())) else {
                continue;
            };
            if ppid_of(pid) == Some(postmaster) {
                total += cpu_of(pid, false);
            }
        }
    }
    total
}

async fn postmaster_pid(pool: &PgPool) -> Result<u32> {
    let dir: String = sqlx::query_scalar("SHOW data_directory").fetch_one(pool).await?;
    let pidfile = std::fs::read_to_string(format!("{dir}/postmaster.pid")).context("postmaster.pid")?;
    Ok(pidfile.lines().next().context("empty postmaster.pid")?.trim().parse()?)
}

#[derive(Debug, Clone, Copy)]
struct CpuSnap {
    at: Instant,
    server: f64,
    postgres: f64,
}

impl CpuSnap {
    fn take(postmaster: u32) -> Self {
        CpuSnap {
            at: Instant::now(),
            server: cpu_of("self", false),
            postgres: postgres_cpu(postmaster),
        }
    }
}

/// `clutch serve`'s writer `max_delay` (src/config.rs): commit when the queue is empty.
const SERVE_MAX_DELAY_MS: u64 = 0;

#[derive(Debug, Clone)]
struct Scenario {
    protocol: Protocol,
    operators: bool,
    records: usize,
    devices: usize,
    pace: Pace,
    max_delay_ms: Option<u64>,
    workers: Option<usize>,
}

impl std::str::FromStr for Scenario {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let p: Vec<&str> = s.split(':').collect();
        if p.len() < 4 {
            bail!("scenario {s:?}: want protocol[+ops]:records:devices:pace[:max_delay_ms[:workers]]");
        }
        let (name, operators) = match p[0].strip_suffix("+ops") {
            Some(n) => (n, true),
            None => (p[0], false),
        };
        let protocol: Protocol = name.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Scenario {
            protocol,
            operators,
            records: p[1].parse()?,
            devices: p[2].parse()?,
            pace: p[3].parse()?,
            max_delay_ms: p.get(4).map(|v| v.parse()).transpose()?,
            workers: p.get(5).map(|v| v.parse()).transpose()?,
        })
    }
}

/// How devices send: a closed loop (`window` frames in flight, the next when one is
/// acked: saturates the server, so ack latency is in-flight ÷ throughput by Little's law)
/// or open loop (`@MS`: one frame every MS milliseconds per device whatever the acks, as
/// real trackers report; latency is timed from the scheduled send, so a stall is charged
/// to every frame that should have gone out during it).
#[derive(Debug, Clone, Copy)]
enum Pace {
    Window(usize),
    Every(Duration),
}

impl std::str::FromStr for Pace {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.strip_prefix('@') {
            Some(ms) => {
                let ms: u64 = ms.parse()?;
                anyhow::ensure!(ms > 0, "pace @{ms}: the interval must be at least 1 ms");
                Ok(Pace::Every(Duration::from_millis(ms)))
            }
            None => Ok(Pace::Window(s.parse::<usize>()?.max(1))),
        }
    }
}

impl std::fmt::Display for Pace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pace::Window(n) => write!(f, "{n} frames in flight each"),
            Pace::Every(d) => write!(f, "a frame every {} ms each (open loop)", d.as_millis()),
        }
    }
}

impl std::fmt::Display for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}{} × {} rec/frame, {} devices, {}",
            self.protocol,
            if self.operators { " with operators" } else { "" },
            self.records,
            self.devices,
            self.pace
        )?;
        let d = WriterConfig::default();
        write!(
            f,
            ", writer max_delay {} ms × {} workers",
            self.max_delay_ms.unwrap_or(SERVE_MAX_DELAY_MS),
            self.workers.unwrap_or(d.workers)
        )
    }
}

/// What the generator child reports on its last stdout line.
#[derive(Debug, Serialize, Deserialize)]
struct ClientReport {
    frames: u64,
    positions: u64,
    elapsed_s: f64,
    cpu_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("client") => return client(&args[1..]).await,
        Some("idle-client") => return idle_client(args[1].parse()?, args[2].parse()?).await,
        Some("idle") => return idle(args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10_000)).await,
        _ => {}
    }
    let seconds: u64 = args.first().and_then(|s| s.parse().ok()).unwrap_or(10);
    let mut scenarios: Vec<Scenario> = args.iter().skip(1).map(|s| s.parse()).collect::<Result<_>>()?;
    if scenarios.is_empty() {
        scenarios = vec!["gt06:1:200:4".parse()?, "teltonika:20:200:2".parse()?];
    }
    let cluster = TestCluster::start(TestClusterOptions { durable: true })?;
    println!(
        "machine: {} CPUs, load average at start {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
    );
    for sc in &scenarios {
        run_scenario(&cluster, sc, seconds).await?;
    }
    Ok(())
}

async fn run_scenario(cluster: &TestCluster, sc: &Scenario, seconds: u64) -> Result<()> {
    let db = cluster.fresh_db().await;
    let postmaster = postmaster_pid(&db.pool).await?;
    let mut wc = WriterConfig {
        max_delay: Duration::from_millis(sc.max_delay_ms.unwrap_or(SERVE_MAX_DELAY_MS)),
        ..WriterConfig::default()
    };
    if let Some(w) = sc.workers {
        wc.workers = w;
    }
    let writer = Writer::spawn(db.pool.clone(), wc);
    let bus: std::sync::Arc<InProcessBus<DeviceBatch>> = std::sync::Arc::new(InProcessBus::new(
        &BusConfig::default(),
        std::sync::Arc::new(StoreSink::new(writer.clone())),
    ));
    let operators = if sc.operators {
        Some(
            operators::start(
                db.pool.clone(),
                bus.as_ref(),
                operators::OperatorsConfig::default(),
                std::sync::Arc::new(operators::SystemClock),
                Some(operators::analytics_factory()),
            )
            .await?,
        )
    } else {
        None
    };
    let config = IngestConfig {
        unknown_devices: UnknownDevices::Register,
        ..IngestConfig::default()
    };
    ingest::registry::ensure_tenant(&db.pool, "bench").await?;
    let registry = std::sync::Arc::new(Registry::new(db.pool.clone(), config.unknown_devices, "bench"));
    let ingest = Ingest::new(config, registry, bus);
    let l = ingest.listen_tcp(sc.protocol, "127.0.0.1:0".parse()?).await?;

    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args([
            "client".to_string(),
            l.addr.to_string(),
            sc.protocol.name().to_string(),
            sc.records.to_string(),
            sc.devices.to_string(),
            match sc.pace {
                Pace::Window(n) => n.to_string(),
                Pace::Every(d) => format!("@{}", d.as_millis()),
            },
            seconds.to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    // "ready" once every device is logged in: the measured window starts there.
    let first = lines.next_line().await?.context("generator ended early")?;
    if first != "ready" {
        bail!("generator said {first:?}");
    }
    let rss0 = rss_kib();
    let s0 = CpuSnap::take(postmaster);
    let mut peak_rss = rss0;
    let report_line = loop {
        tokio::select! {
            l = lines.next_line() => break l?.context("generator ended without a report")?,
            _ = tokio::time::sleep(Duration::from_millis(250)) => peak_rss = peak_rss.max(rss_kib()),
        }
    };
    let s1 = CpuSnap::take(postmaster);
    child.wait().await?;
    let r: ClientReport = serde_json::from_str(&report_line)?;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM positions")
        .fetch_one(&db.pool)
        .await?;
    let wall = s1.at.duration_since(s0.at).as_secs_f64();
    let rate = r.positions as f64 / r.elapsed_s;
    let server_cpu = s1.server - s0.server;
    let pg_cpu = s1.postgres - s0.postgres;
    let ws = writer.stats();
    ingest.shutdown().await;
    let mut ops_line = None;
    if let Some(ops) = operators {
        // A live tap that falls behind is told how many batches it missed and reads them
        // back from the store (catch-up); fixes seen twice that way are dropped as stale.
        if let Some(s) = ops.sync().await {
            ops_line = Some(format!(
                "operators: {} fixes in ({} used, {} stale), {} batches missed by the live tap \
                 and {} fixes read back in {} catch-ups, {} events written",
                s.engine.fixes,
                s.engine.used,
                s.engine.stale,
                s.lagged_batches,
                s.caught_up_fixes,
                s.catch_ups,
                s.events_written
            ));
        }
        ops.stop().await;
    }
    writer.shutdown().await;

    let (copied, copy) = raw_copy(&db.pool, postmaster).await?;
    let copy_rate = copied as f64 / copy.0;
    let copy_cpu = copy.1 + copy.2;

    println!("\n## {sc}, {seconds} s");
    println!(
        "acked positions {} in {} frames ({stored} rows stored); ingest {rate:.0} positions/s ({:.0} frames/s)",
        r.positions,
        r.frames,
        r.frames as f64 / r.elapsed_s
    );
    println!(
        "writer: {} groups, {:.0} rows per group, {} on the deduplicating path",
        ws.groups_committed,
        ws.rows_committed as f64 / ws.groups_committed.max(1) as f64,
        ws.slow_path_groups
    );
    println!(
        "ack latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        r.p50_ms, r.p99_ms, r.max_ms
    );
    println!(
        "CPU over {wall:.1} s (% of one core): server {:.0}%, generator {:.0}%, PostgreSQL {:.0}%; \
         server RSS {} → peak {} MiB",
        server_cpu / wall * 100.0,
        r.cpu_s / r.elapsed_s * 100.0,
        pg_cpu / wall * 100.0,
        rss0 / 1024,
        peak_rss / 1024
    );
    println!(
        "raw COPY of the same {copied} rows: {copy_rate:.0} rows/s (client {:.0}%, PostgreSQL {:.0}% of one core)",
        copy.1 / copy.0 * 100.0,
        copy.2 / copy.0 * 100.0
    );
    let per_cpu_ingest = r.positions as f64 / (server_cpu + pg_cpu).max(1e-9);
    let per_cpu_copy = copied as f64 / copy_cpu.max(1e-9);
    println!(
        "ingest/COPY = {:.2} (wall clock); per CPU-second without the generator: ingest {per_cpu_ingest:.0}, \
         COPY {per_cpu_copy:.0} rows → {:.2}",
        rate / copy_rate,
        per_cpu_ingest / per_cpu_copy
    );
    if let Some(l) = ops_line {
        println!("{l}");
    }
    Ok(())
}

/// Copies the stored rows out (untimed), then back in under other device ids with
/// binary COPY, ≤ 10 000 rows per transaction. Returns (rows, (seconds, client CPU,
/// PostgreSQL CPU)).
async fn raw_copy(pool: &PgPool, postmaster: u32) -> Result<(u64, (f64, f64, f64))> {
    let per_device: Vec<(i64, i64)> = sqlx::query_as("SELECT device_id, count(*) FROM positions GROUP BY 1 ORDER BY 1")
        .fetch_all(pool)
        .await?;
    // Device ranges of about 10 000 rows each.
    let mut ranges: Vec<(i64, i64, i64)> = Vec::new();
    for (d, n) in per_device {
        match ranges.last_mut() {
            Some((_, hi, rows)) if *rows + n <= 10_000 => {
                *hi = d;
                *rows += n;
            }
            _ => ranges.push((d, d, n)),
        }
    }
    let rest = store::copy::POSITION_COLUMNS
        .split_once(',')
        .map(|(_, r)| r)
        .unwrap_or_default();
    let mut conn = pool.acquire().await?;
    let mut chunks = Vec::new();
    for (lo, hi, _) in &ranges {
        let q = format!(
            "COPY (SELECT device_id + 1000000000, {rest} FROM positions WHERE device_id BETWEEN {lo} AND {hi}) \
             TO STDOUT (FORMAT binary)"
        );
        let mut out = conn.copy_out_raw(&q).await?;
        let mut bytes = Vec::new();
        use futures_util::StreamExt;
        while let Some(b) = out.next().await {
            bytes.extend_from_slice(&b?);
        }
        chunks.push(bytes);
    }
    let total: i64 = ranges.iter().map(|r| r.2).sum();
    let s0 = CpuSnap::take(postmaster);
    let statement = format!(
        "COPY positions ({}) FROM STDIN (FORMAT binary)",
        store::copy::POSITION_COLUMNS
    );
    for bytes in &chunks {
        let mut tx = sqlx::Acquire::begin(&mut *conn).await?;
        let mut copy = tx.copy_in_raw(&statement).await?;
        copy.send(&bytes[..]).await?;
        copy.finish().await?;
        tx.commit().await?;
    }
    let s1 = CpuSnap::take(postmaster);
    Ok((
        total as u64,
        (
            s1.at.duration_since(s0.at).as_secs_f64(),
            s1.server - s0.server,
            s1.postgres - s0.postgres,
        ),
    ))
}

// ---------------------------------------------------------------------------------------
// The generator (child process)
// ---------------------------------------------------------------------------------------

fn fix(imei: &str, i: u64, records: usize) -> Message {
    let base = Utc::now().timestamp() - 30 * 86_400;
    let positions = (0..records as u64)
        .map(|k| {
            let n = i * records as u64 + k;
            let t = Utc.timestamp_opt(base + n as i64, 0).single().expect("time");
            let mut p = Position::new(t, 54.0 + (n % 1000) as f64 * 1e-4, 25.0, true);
            p.speed_kmh = Some(50.0);
            p.course_deg = Some(180.0);
            p.satellites = Some(9);
            p.altitude_m = Some(120.0);
            p
        })
        .collect();
    Message::new(MessageKind::Position)
        .with_imei(imei)
        .with_positions(positions)
}

/// Bytes of the server's answer to `frame`, from an independent codec session.
fn ack_len(protocol: Protocol, login: &[u8], frame: &[u8]) -> usize {
    let mut c = protocol.codec(Transport::Tcp).expect("codec");
    let mut n = 0;
    for bytes in [login, frame].into_iter().filter(|b| !b.is_empty()) {
        n = match c.frame(bytes, true) {
            Framing::Frame { start, end } => c
                .decode(&bytes[start..end], &DecodeContext::now())
                .map(|ms| ms.iter().map(|m| m.ack.as_ref().map_or(0, Vec::len)).sum())
                .unwrap_or(0),
            _ => 0,
        };
    }
    n
}

struct Device {
    rd: tokio::net::tcp::OwnedReadHalf,
    wr: tokio::net::tcp::OwnedWriteHalf,
    enc: Box<dyn protocols::DeviceEncoder>,
    imei: String,
    ack: usize,
}

async fn connect(addr: SocketAddr, protocol: Protocol, imei: String, records: usize) -> Result<Device> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let mut enc = protocol.device_encoder(Transport::Tcp)?;
    let login = enc.encode(&Message::new(MessageKind::Login).with_imei(&imei))?;
    s.write_all(&login).await?;
    let mut probe = protocol.device_encoder(Transport::Tcp)?;
    let login_ack = ack_len(protocol, &login, &[]);
    let mut buf = vec![0u8; login_ack];
    s.read_exact(&mut buf).await?;
    // Ack size of a data frame (the same for every frame of a scenario).
    let sample = probe.encode(&fix(&imei, 0, records))?;
    let ack = ack_len(protocol, &login, &sample);
    if ack == 0 {
        bail!("{protocol} data frames are not acknowledged; cannot measure ack latency");
    }
    let (rd, wr) = s.into_split();
    Ok(Device { rd, wr, enc, imei, ack })
}

/// One device: keeps `window` frames in flight, timing each from its write to its ack.
async fn drive(mut d: Device, records: usize, window: usize, until: Instant) -> Result<(u64, Vec<Duration>)> {
    let mut sent: VecDeque<Instant> = VecDeque::new();
    let mut i = 0u64;
    let mut lat = Vec::new();
    let mut buf = vec![0u8; d.ack * window.max(1) * 2];
    let mut have = 0usize;
    let mut out = Vec::new();
    loop {
        let running = Instant::now() < until;
        if running && sent.len() < window {
            // Fill the window with one write, as a device sending its backlog does.
            out.clear();
            while sent.len() < window {
                out.extend_from_slice(&d.enc.encode(&fix(&d.imei, i, records))?);
                i += 1;
                sent.push_back(Instant::now());
            }
            d.wr.write_all(&out).await?;
        }
        if sent.is_empty() {
            break;
        }
        let n = d.rd.read(&mut buf[have..]).await?;
        if n == 0 {
            bail!("server closed the connection");
        }
        have += n;
        let acks = have / d.ack;
        for _ in 0..acks {
            let t = sent.pop_front().context("more acks than frames")?;
            lat.push(t.elapsed());
        }
        buf.copy_within(acks * d.ack..have, 0);
        have -= acks * d.ack;
    }
    Ok((i, lat))
}

/// One device in open loop: a frame every `every` from `start` until `until`, each timed
/// from its scheduled send to its ack; then waits (at most 10 s) for the last acks.
async fn drive_paced(
    mut d: Device,
    records: usize,
    every: Duration,
    start: Instant,
    until: Instant,
) -> Result<(u64, Vec<Duration>)> {
    let mut sent: VecDeque<Instant> = VecDeque::new();
    let mut i = 0u64;
    let mut lat = Vec::new();
    let mut buf = vec![0u8; d.ack * 64];
    let mut have = 0usize;
    let mut next = start;
    let drain_until = until + Duration::from_secs(10);
    loop {
        let now = Instant::now();
        if now >= until && sent.is_empty() {
            break;
        }
        anyhow::ensure!(now < drain_until, "{} frames never acked", sent.len());
        if now >= next && now < until {
            // Behind schedule (a stalled write): every frame due goes out now, each
            // timed from when it was due.
            let mut out = Vec::new();
            while next <= now && next < until {
                out.extend_from_slice(&d.enc.encode(&fix(&d.imei, i, records))?);
                i += 1;
                sent.push_back(next);
                next += every;
            }
            d.wr.write_all(&out).await?;
            continue;
        }
        let wake = if now < until { next.min(until) } else { drain_until };
        tokio::select! {
            r = d.rd.read(&mut buf[have..]) => {
                let n = r?;
                if n == 0 {
                    bail!("server closed the connection");
                }
                have += n;
                let acks = have / d.ack;
                for _ in 0..acks {
                    let t = sent.pop_front().context("more acks than frames")?;
                    lat.push(t.elapsed());
                }
                buf.copy_within(acks * d.ack..have, 0);
                have -= acks * d.ack;
            }
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
    }
    Ok((i, lat))
}

async fn client(args: &[String]) -> Result<()> {
    let addr: SocketAddr = args[0].parse()?;
    let protocol: Protocol = args[1].parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    let records: usize = args[2].parse()?;
    let devices: usize = args[3].parse()?;
    let pace: Pace = args[4].parse()?;
    let seconds: u64 = args[5].parse()?;
    let mut conns = Vec::with_capacity(devices);
    for d in 0..devices {
        conns.push(connect(addr, protocol, format!("86{:013}", d + 1), records).await?);
    }
    println!("ready");
    let cpu0 = cpu_of("self", false);
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(k, d)| match pace {
            Pace::Window(window) => tokio::spawn(drive(d, records, window, until)),
            // Spread over the interval, so the devices do not report in lockstep.
            Pace::Every(every) => {
                let offset = every.mul_f64(k as f64 / devices.max(1) as f64);
                tokio::spawn(drive_paced(d, records, every, started + offset, until))
            }
        })
        .collect();
    let mut lat = Vec::new();
    let mut frames = 0;
    for t in tasks {
        let (n, l) = t.await??;
        frames += n;
        lat.extend(l);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_of("self", false) - cpu0;
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len().max(1) - 1) as f64 * p) as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let report = ClientReport {
        frames,
        positions: frames * records as u64,
        elapsed_s: elapsed,
        cpu_s: cpu,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        max_ms: pct(1.0),
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Idle connections
// ---------------------------------------------------------------------------------------

const IDLE_PROTOCOL: Protocol = Protocol::Gt06;

/// Opens `count` idle device connections (logged in) and reports the server-side RSS
/// growth per connection. Devices use 127.0.0.x source addresses to stay clear of the
/// ephemeral-port limit.
async fn idle(count: usize) -> Result<()> {
    raise_nofile(count as u64 * 2 + 1024);
    let cluster = TestCluster::start(TestClusterOptions::default())?;
    let db = cluster.fresh_db().await;
    let writer = Writer::spawn(db.pool.clone(), WriterConfig::default());
    let bus: std::sync::Arc<InProcessBus<DeviceBatch>> = std::sync::Arc::new(InProcessBus::new(
        &BusConfig::default(),
        std::sync::Arc::new(StoreSink::new(writer.clone())),
    ));
    let config = IngestConfig {
        unknown_devices: UnknownDevices::Register,
        ..IngestConfig::default()
    };
    ingest::registry::ensure_tenant(&db.pool, "bench").await?;
    let registry = std::sync::Arc::new(Registry::new(db.pool.clone(), config.unknown_devices, "bench"));
    let ingest = Ingest::new(config, registry, bus);
    let l = ingest.listen_tcp(IDLE_PROTOCOL, "127.0.0.1:0".parse()?).await?;
    // Warm the registry path and allocator with one device first.
    let warm = login(l.addr, 0, 0).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss0 = rss_kib();
    // The devices live in a child process so this RSS is the server's alone.
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args(["idle-client", &l.addr.to_string(), &count.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut out = child.stdout.take().context("stdout")?;
    let mut ready = [0u8; 1];
    out.read_exact(&mut ready).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss1 = rss_kib();
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
    let mut enc = IDLE_PROTOCOL.device_encoder(Transport::Tcp)?;
    let login = enc.encode(&Message::new(MessageKind::Login).with_imei(format!("87{:013}", i + 1)))?;
    s.write_all(&login).await?;
    let mut buf = vec![0u8; ack_len(IDLE_PROTOCOL, &login, &[])];
    s.read_exact(&mut buf).await?;
    Ok(s)
}

fn raise_nofile(want: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, want.min(hard), hard);
    }
}
