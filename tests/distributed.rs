//! Distributed mode: two `clutch serve` processes — one `--roles ingest`, one
//! `--roles writer` — against one JetStream `nats-server` (and a Fluvio cluster when
//! built with `--features fluvio` and `CLUTCH_FLUVIO_ENDPOINT` is set). Devices are acked on the
//! JetStream publish acknowledgement; the writer consumes the bus and writes to
//! PostgreSQL. The writer is SIGKILLed mid-load and restarted: ingest keeps acking while
//! it is down, and every acked position lands in PostgreSQL exactly once.

mod common;

use common::{PROTOCOL, ack_len, config_file, fix_time, free_port, position, start};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use chrono::{DateTime, Utc};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use protocols::{Message, MessageKind, Transport};
use stream::testing::NatsServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DEVICES: usize = 6;

/// One device: logs in, then sends positions, each after the previous is acknowledged,
/// until `stop` or a failure; reconnects after a failure and resends the unacked one.
async fn device(port: u16, imei: String, stop: Arc<AtomicBool>, acked: Arc<Mutex<Vec<(String, usize)>>>) {
    let mut next = 0;
    while !stop.load(Ordering::Relaxed) {
        next = session(port, &imei, next, &stop, &acked).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn session(
    port: u16,
    imei: &str,
    mut next: usize,
    stop: &AtomicBool,
    acked: &Mutex<Vec<(String, usize)>>,
) -> usize {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)).await else {
        return next;
    };
    let mut enc = PROTOCOL.device_encoder(Transport::Tcp).expect("encoder");
    let login = enc
        .encode(&Message::new(MessageKind::Login).with_imei(imei))
        .expect("login");
    let mut buf = [0u8; 64];
    if s.write_all(&login).await.is_err() {
        return next;
    }
    let n = ack_len(&login);
    if tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf[..n]))
        .await
        .map_or(true, |r| r.is_err())
    {
        return next;
    }
    while !stop.load(Ordering::Relaxed) {
        let frame = enc.encode(&position(imei, next)).expect("position");
        let n = ack_len(&frame);
        assert!(n > 0, "GT06 acks positions");
        if s.write_all(&frame).await.is_err() {
            return next;
        }
        match tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf[..n])).await {
            Ok(Ok(_)) => {
                acked.lock().unwrap().push((imei.to_string(), next));
                next += 1;
            }
            _ => return next,
        }
        // A steady rate rather than a flood: the point is the writer's crash mid-load.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    next
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_and_writer_processes_over_nats_lose_nothing_when_the_writer_is_killed() -> Result<()> {
    let nats = NatsServer::start();
    writer_killed_mid_load(
        "nats",
        &format!(
            "[bus]\nbackend = \"nats\"\nnats_url = \"{}\"\npartitions = 4\n",
            nats.url()
        ),
    )
    .await
}

/// The same over a Fluvio cluster: `cargo test -p clutch --features fluvio --test
/// distributed` with `CLUTCH_FLUVIO_ENDPOINT=host:port` (the SC's public address); without
/// the variable it says so and passes, as the bus contract suite does.
#[cfg(feature = "fluvio")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_and_writer_processes_over_fluvio_lose_nothing_when_the_writer_is_killed() -> Result<()> {
    let Some(endpoint) = std::env::var("CLUTCH_FLUVIO_ENDPOINT").ok().filter(|e| !e.is_empty()) else {
        eprintln!("skipped: set CLUTCH_FLUVIO_ENDPOINT=host:port to run this against a Fluvio cluster");
        return Ok(());
    };
    // A topic of its own per run.
    let prefix = format!("distributed-{}", std::process::id());
    writer_killed_mid_load(
        "fluvio",
        &format!(
            "[bus]\nbackend = \"fluvio\"\nfluvio_endpoint = \"{endpoint}\"\nprefix = \"{prefix}\"\npartitions = 4\n"
        ),
    )
    .await
}

async fn writer_killed_mid_load(label: &str, bus_toml: &str) -> Result<()> {
    let db = store::testing::test_db().await;
    let dir = std::env::temp_dir().join(format!("clutch-distributed-{label}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let port = free_port();
    let config = config_file(&dir, port, bus_toml);
    let imeis: Vec<String> = (0..DEVICES).map(|d| format!("86{:013}", 515_151 + d)).collect();
    let pool = &db.pool;
    // Register the devices (the writer process migrates the database first).
    let mut writer = start(&db.url, &config, &["--roles", "writer"])?;
    sqlx::query("INSERT INTO tenants (name) VALUES ('distributed')")
        .execute(pool)
        .await?;
    for imei in &imeis {
        sqlx::query("INSERT INTO devices (tenant_id, identifier, protocol) SELECT min(id), $1, $2 FROM tenants")
            .bind(imei)
            .bind(PROTOCOL.name())
            .execute(pool)
            .await?;
    }
    let mut ingest = start(&db.url, &config, &["--roles", "ingest"])?;

    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = imeis
        .iter()
        .map(|imei| tokio::spawn(device(port, imei.clone(), stop.clone(), acked.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    kill(Pid::from_raw(writer.id() as i32), Signal::SIGKILL)?;
    let _ = writer.wait();
    let at_kill = acked.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let while_down = acked.lock().unwrap().len() - at_kill;
    assert!(
        at_kill > DEVICES * 5,
        "load was running ({at_kill} acks before the kill)"
    );
    assert!(
        while_down > DEVICES * 5,
        "ingest acks on the bus's receipt, without the writer ({while_down} acks while it was down)"
    );
    let mut writer = start(&db.url, &config, &["--roles", "writer"])?;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    for h in load {
        h.await?;
    }
    let acked = acked.lock().unwrap().clone();

    // The writer catches up: wait until every acked position is in PostgreSQL.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stored: Vec<(String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT d.identifier, p.fix_time FROM positions p JOIN devices d ON d.id = p.device_id \
             WHERE d.identifier = ANY($1)",
        )
        .bind(&imeis)
        .fetch_all(pool)
        .await?;
        let stored: std::collections::HashSet<(String, DateTime<Utc>)> = stored.into_iter().collect();
        let missing = acked
            .iter()
            .filter(|(imei, i)| !stored.contains(&(imei.clone(), fix_time(*i))))
            .count();
        if missing == 0 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{missing} of {} acked positions not stored after 60 s",
            acked.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for c in [&mut ingest, &mut writer] {
        kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM)?;
        let status = c.wait()?;
        assert!(status.success(), "clean shutdown: {status}");
    }

    for imei in &imeis {
        let rows: Vec<(DateTime<Utc>, i64)> = sqlx::query_as(
            "SELECT p.fix_time, count(*) FROM positions p JOIN devices d ON d.id = p.device_id \
             WHERE d.identifier = $1 GROUP BY p.fix_time",
        )
        .bind(imei)
        .fetch_all(pool)
        .await?;
        assert!(rows.iter().all(|(_, n)| *n == 1), "{imei}: a position stored twice");
        let stored: std::collections::HashSet<DateTime<Utc>> = rows.into_iter().map(|(t, _)| t).collect();
        for (_, i) in acked.iter().filter(|(d, _)| d == imei) {
            assert!(stored.contains(&fix_time(*i)), "{imei}: acked position {i} missing");
        }
    }
    eprintln!(
        "{} acks ({at_kill} before the writer was killed, {while_down} while it was down), all stored exactly once",
        acked.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
