//! Crash test: `clutch serve` under steady multi-device load is SIGKILLed; after a restart
//! the devices resend what was never acknowledged, and every acknowledged position is in
//! PostgreSQL exactly once. Real binary, real PostgreSQL, GT06 devices from the
//! protocols crate's encoder.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, TimeZone, Utc};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use protocols::{DecodeContext, Framing, Message, MessageKind, Position, Protocol, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DEVICES: usize = 8;
const PROTOCOL: Protocol = Protocol::Gt06;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn config_file(dir: &std::path::Path, port: u16) -> std::path::PathBuf {
    let mut ports = String::new();
    for p in Protocol::ALL {
        ports.push_str(&format!("{} = {}\n", p.name(), if p == PROTOCOL { port } else { 0 }));
    }
    let text = format!(
        "[http]\nport = 0\n[ingest]\nbind = \"127.0.0.1\"\n[ingest.ports]\n{ports}\
         [ingest.mqtt]\nport = 0\n[store.writer]\nmax_delay_ms = 5\n"
    );
    let path = dir.join("clutch.toml");
    std::fs::write(&path, text).expect("config");
    path
}

/// Starts `clutch serve` and waits for its ready line.
fn start(url: &str, config: &std::path::Path) -> Result<Child> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_clutch"))
        .args(["serve", "--config"])
        .arg(config)
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let out = child.stdout.take().context("stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(out).lines().map_while(|l| l.ok()) {
            if line.contains("clutch ready")
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60))
        .context("clutch did not become ready")?;
    Ok(child)
}

/// Recent times: the server's maintenance applies retention, and a restart runs it.
fn fix_time(i: usize) -> DateTime<Utc> {
    static BASE: std::sync::OnceLock<DateTime<Utc>> = std::sync::OnceLock::new();
    let base = BASE.get_or_init(|| {
        let t = Utc::now() - chrono::Duration::hours(1);
        Utc.timestamp_opt(t.timestamp(), 0).single().expect("t")
    });
    *base + chrono::Duration::seconds(i as i64)
}

fn position(imei: &str, i: usize) -> Message {
    let mut p = Position::new(fix_time(i), 54.0 + i as f64 * 1e-4, 25.0, true);
    p.speed_kmh = Some(30.0);
    p.course_deg = Some(10.0);
    p.satellites = Some(7);
    Message::new(MessageKind::Position)
        .with_imei(imei)
        .with_positions(vec![p])
}

fn ack_len(bytes: &[u8]) -> usize {
    let mut c = PROTOCOL.codec(Transport::Tcp).expect("codec");
    let ctx = DecodeContext::now();
    // A fresh session for a lone position frame still yields its ack.
    match c.frame(bytes, true) {
        Framing::Frame { start, end } => c
            .decode(&bytes[start..end], &ctx)
            .map(|ms| ms.iter().map(|m| m.ack.as_ref().map_or(0, Vec::len)).sum())
            .unwrap_or(0),
        _ => 0,
    }
}

/// One device: logs in, then sends positions from `next` on, each after the previous is
/// acknowledged, until `stop_at` or the connection fails. Returns the first unacked index.
async fn device(
    port: u16,
    imei: String,
    mut next: usize,
    stop_at: usize,
    acked: Arc<Mutex<Vec<(String, usize)>>>,
) -> usize {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)).await else {
        return next;
    };
    let mut enc = PROTOCOL.device_encoder(Transport::Tcp).expect("encoder");
    let login = enc
        .encode(&Message::new(MessageKind::Login).with_imei(&imei))
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
    while next < stop_at {
        let frame = enc.encode(&position(&imei, next)).expect("position");
        let n = ack_len(&frame);
        assert!(n > 0, "GT06 acks positions");
        if s.write_all(&frame).await.is_err() {
            return next;
        }
        match tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf[..n])).await {
            Ok(Ok(_)) => {
                acked.lock().unwrap().push((imei.clone(), next));
                next += 1;
            }
            _ => return next,
        }
    }
    next
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_acked_position() -> Result<()> {
    let db = store::testing::test_db().await;
    let dir = std::env::temp_dir().join(format!("clutch-crash-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let port = free_port();
    let config = config_file(&dir, port);
    let imeis: Vec<String> = (0..DEVICES).map(|d| format!("86{:013}", 424_242 + d)).collect();
    let pool = &db.pool;
    for imei in &imeis {
        sqlx::query("INSERT INTO tenants (name) SELECT 'crash' WHERE NOT EXISTS (SELECT 1 FROM tenants)")
            .execute(pool)
            .await?;
        sqlx::query("INSERT INTO devices (tenant_id, identifier, protocol) SELECT min(id), $1, $2 FROM tenants")
            .bind(imei)
            .bind(PROTOCOL.name())
            .execute(pool)
            .await?;
    }

    let acked = Arc::new(Mutex::new(Vec::new()));
    let child = start(&db.url, &config)?;
    let load: Vec<_> = imeis
        .iter()
        .map(|imei| tokio::spawn(device(port, imei.clone(), 0, usize::MAX, acked.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL)?;
    let mut resume = Vec::new();
    for h in load {
        resume.push(h.await?);
    }
    let before = acked.lock().unwrap().len();
    assert!(before > DEVICES * 5, "load was running ({before} acks before the kill)");

    // Restart; every device resends from its first unacknowledged position, plus a few.
    let mut child = start(&db.url, &config)?;
    let tasks: Vec<_> = imeis
        .iter()
        .zip(&resume)
        .map(|(imei, &from)| tokio::spawn(device(port, imei.clone(), from, from + 5, acked.clone())))
        .collect();
    for (t, &from) in tasks.into_iter().zip(&resume) {
        assert_eq!(t.await?, from + 5, "after the restart every resend is acknowledged");
    }
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM)?;
    let _ = child.wait();

    let acked = acked.lock().unwrap().clone();
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
            assert!(
                stored.contains(&fix_time(*i)),
                "{imei}: acked position {i} missing after the crash"
            );
        }
    }
    eprintln!(
        "{} acks before the kill, {} in total, all present exactly once",
        before,
        acked.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
