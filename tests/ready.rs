//! `/ready` of a whole `clutch serve` (all roles) on the NATS bus with the embedded MQTT
//! broker: ready while the store, the bus connection and the broker are up; not ready,
//! naming the bus, while `nats-server` is down; ready again once it is back.

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use common::{free_port, start};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use protocols::Protocol;
use stream::testing::NatsServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// (status code, JSON body) of `GET /ready`.
async fn ready(port: u16) -> Result<(u16, serde_json::Value)> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(b"GET /ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let mut text = String::new();
    s.read_to_string(&mut text).await?;
    let code: u16 = text.get(9..12).context("status line")?.parse()?;
    let body = text.split_once("\r\n\r\n").context("body")?.1;
    Ok((
        code,
        serde_json::from_str(body).with_context(|| format!("not JSON: {body}"))?,
    ))
}

/// Polls `/ready` until `want` holds, for at most 15 s.
async fn until(port: u16, what: &str, want: impl Fn(u16, &serde_json::Value) -> bool) -> Result<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (code, body) = ready(port).await?;
        if want(code, &body) {
            return Ok(body);
        }
        anyhow::ensure!(Instant::now() < deadline, "{what}: still {code} {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_follows_the_bus_connection_and_names_the_broker() -> Result<()> {
    let db = store::testing::test_db().await;
    let mut nats = NatsServer::start();
    let dir = std::env::temp_dir().join(format!("clutch-ready-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (http, mqtt) = (free_port(), free_port());
    let ports: String = Protocol::ALL.iter().map(|p| format!("{} = 0\n", p.name())).collect();
    let config = dir.join("clutch.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\nbind = \"127.0.0.1\"\nport = {http}\n[ingest]\nbind = \"127.0.0.1\"\n[ingest.ports]\n{ports}\
             [ingest.mqtt]\nport = {mqtt}\n[bus]\nbackend = \"nats\"\nnats_url = \"{}\"\npartitions = 2\n",
            nats.url()
        ),
    )?;
    let mut child = start(&db.url, &config, &[])?;

    let body = until(http, "ready at start", |c, _| c == 200).await?;
    for check in ["store", "bus", "bus_connection", "mqtt"] {
        assert_eq!(body["checks"][check], "ok", "{body}");
    }
    nats.kill();
    let body = until(http, "not ready without NATS", |c, b| {
        c == 503 && b["checks"]["bus_connection"] != "ok"
    })
    .await?;
    assert_eq!(body["status"], "not_ready", "{body}");
    assert_eq!(body["checks"]["mqtt"], "ok", "{body}");
    nats.restart();
    until(http, "ready again with NATS back", |c, _| c == 200).await?;

    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM)?;
    assert!(child.wait()?.success(), "clean shutdown");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
