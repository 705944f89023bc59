//! Helpers shared by the tests that drive a real `clutch serve` child process with GT06
//! devices (crash.rs, distributed.rs).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, TimeZone, Utc};
use protocols::{DecodeContext, Framing, Message, MessageKind, Position, Protocol, Transport};

pub const PROTOCOL: Protocol = Protocol::Gt06;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A config with only the GT06 port (on `port`), HTTP and MQTT off, a short writer
/// delay, and `extra` TOML sections appended.
pub fn config_file(dir: &std::path::Path, port: u16, extra: &str) -> std::path::PathBuf {
    let mut ports = String::new();
    for p in Protocol::ALL {
        ports.push_str(&format!("{} = {}\n", p.name(), if p == PROTOCOL { port } else { 0 }));
    }
    let text = format!(
        "[http]\nport = 0\n[ingest]\nbind = \"127.0.0.1\"\n[ingest.ports]\n{ports}\
         [ingest.mqtt]\nport = 0\n[store.writer]\nmax_delay_ms = 5\n{extra}"
    );
    let path = dir.join("clutch.toml");
    std::fs::write(&path, text).expect("config");
    path
}

/// Starts `clutch serve ARGS --config CONFIG` and waits for its ready line.
pub fn start(url: &str, config: &std::path::Path, args: &[&str]) -> Result<Child> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_clutch"))
        .arg("serve")
        .args(args)
        .arg("--config")
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
        .with_context(|| format!("clutch serve {args:?} did not become ready"))?;
    Ok(child)
}

/// Recent times: the server's maintenance applies retention, and a restart runs it.
pub fn fix_time(i: usize) -> DateTime<Utc> {
    static BASE: std::sync::OnceLock<DateTime<Utc>> = std::sync::OnceLock::new();
    let base = BASE.get_or_init(|| {
        let t = Utc::now() - chrono::Duration::hours(1);
        Utc.timestamp_opt(t.timestamp(), 0).single().expect("t")
    });
    *base + chrono::Duration::seconds(i as i64)
}

pub fn position(imei: &str, i: usize) -> Message {
    let mut p = Position::new(fix_time(i), 54.0 + i as f64 * 1e-4, 25.0, true);
    p.speed_kmh = Some(30.0);
    p.course_deg = Some(10.0);
    p.satellites = Some(7);
    Message::new(MessageKind::Position)
        .with_imei(imei)
        .with_positions(vec![p])
}

pub fn ack_len(bytes: &[u8]) -> usize {
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
