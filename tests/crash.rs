//! Crash test: `clutch serve` under steady multi-device load is SIGKILLed; after a restart
//! the devices resend what was never acknowledged, and every acknowledged position is in
//! PostgreSQL exactly once. Real binary, real PostgreSQL, GT06 devices from the
//! protocols crate's encoder.

mod common;

use common::{PROTOCOL, ack_len, config_file, fix_time, free_port, position, start};

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use chrono::{DateTime, Utc};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use protocols::{Message, MessageKind, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DEVICES: usize = 8;

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
    let config = config_file(&dir, port, "");
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
    let child = start(&db.url, &config, &[])?;
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
    let mut child = start(&db.url, &config, &[])?;
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
