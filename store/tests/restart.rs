//! The writer keeps going through a PostgreSQL restart, and nothing it acknowledged is
//! lost. Its own test binary: it stops and starts its (dedicated, durable) cluster.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use common::{now_us, track};
use store::testing::{TestCluster, TestClusterOptions};
use store::{Writer, WriterConfig};
use tokio::sync::Mutex;

/// A stored row's identity.
type Key = (i64, DateTime<Utc>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_survives_postgres_restarts_mid_stream_with_nothing_acked_lost() {
    let cluster = Arc::new(TestCluster::start(TestClusterOptions { durable: true }).unwrap());
    let db = cluster.fresh_db().await;
    let start = now_us() - TimeDelta::minutes(30);
    store::maintenance::run_once(&db.store, &store::MaintenanceConfig::default(), Utc::now())
        .await
        .unwrap();
    let pool = store::connect(&db.url, 4).await.unwrap();
    let writer = Writer::spawn(
        pool.clone(),
        WriterConfig {
            max_rows: 500,
            max_delay: Duration::from_millis(10),
            channel_capacity: 16,
            retry_initial_delay: Duration::from_millis(20),
            retry_max_delay: Duration::from_millis(500),
            give_up_after: Duration::from_secs(60),
            ..WriterConfig::default()
        },
    );

    let acked: Arc<Mutex<Vec<Key>>> = Arc::default();
    let (receipt_tx, mut receipt_rx) = tokio::sync::mpsc::unbounded_channel();
    let collector = {
        let acked = acked.clone();
        tokio::spawn(async move {
            let mut failed = 0;
            while let Some((keys, receipt)) = receipt_rx.recv().await {
                let receipt: store::Receipt = receipt;
                let keys: Vec<(i64, DateTime<Utc>)> = keys;
                match receipt.await {
                    Ok(_) => acked.lock().await.extend(keys),
                    Err(_) => failed += 1,
                }
            }
            failed
        })
    };

    let frames = 1_500usize;
    let producer = {
        let writer = writer.clone();
        tokio::spawn(async move {
            for i in 0..frames {
                let device = (i % 50) as i64;
                let frame = track(device, start + TimeDelta::seconds((i / 50) as i64 * 10), 10, 1);
                let keys = frame.iter().map(|r| (r.device_id, r.fix_time)).collect::<Vec<_>>();
                let receipt = writer.submit(frame).await.unwrap();
                receipt_tx.send((keys, receipt)).unwrap();
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        })
    };

    // Crash-like stop, then a clean one, each while batches keep coming.
    for mode in ["immediate", "fast"] {
        tokio::time::sleep(Duration::from_millis(1_200)).await;
        let before = acked.lock().await.len();
        let c = cluster.clone();
        let m = mode.to_string();
        tokio::task::spawn_blocking(move || c.stop_server(&m))
            .await
            .unwrap()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let c = cluster.clone();
        tokio::task::spawn_blocking(move || c.start_server())
            .await
            .unwrap()
            .unwrap();
        println!("restarted ({mode}) after {before} acked rows");
    }

    producer.await.unwrap();
    let failed = collector.await.unwrap();
    writer.shutdown().await;
    assert_eq!(failed, 0, "no batch may fail: the outage is shorter than give_up_after");
    let stats = writer.stats();
    assert!(stats.retries > 0, "the restarts were not noticed: {stats:?}");

    let stored: HashSet<(i64, DateTime<Utc>)> = sqlx::query_as("SELECT device_id, fix_time FROM positions")
        .fetch_all(&pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
    let acked = acked.lock().await;
    assert_eq!(acked.len(), frames * 10);
    let missing: Vec<_> = acked.iter().filter(|k| !stored.contains(k)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged rows lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert_eq!(stored.len(), acked.len());
}
