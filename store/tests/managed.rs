//! The managed cluster: initdb on first start, reuse on the next, clean stop, one owner.
//! As root, PostgreSQL runs as `postgres` (or `nobody`); that path is the one exercised
//! when the tests run as root.

mod common;

use std::net::TcpListener;
use std::path::PathBuf;

use common::{now_us, track};
use store::managed::{ManagedCluster, read_urls};
use store::{ManagedConfig, Store, Writer, WriterConfig};

fn temp_data_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("clutch-managed-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("data")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn start(cfg: &ManagedConfig) -> ManagedCluster {
    let cfg = cfg.clone();
    let m = tokio::task::spawn_blocking(move || ManagedCluster::start(&cfg))
        .await
        .unwrap()
        .unwrap();
    m.ensure_database().await.unwrap();
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_cluster_starts_is_reused_and_keeps_data_across_restarts() {
    let data_dir = temp_data_dir();
    let cfg = ManagedConfig {
        data_dir: data_dir.clone(),
        port: free_port(),
        run_as: None,
        shared_buffers: "32MB".into(),
    };

    // First start: initdb, start, create the database, migrate, write.
    let mut m = start(&cfg).await;
    assert!(m.is_owner() && m.is_running());
    assert!(data_dir.join("postgres/data/PG_VERSION").exists());
    let pool = store::connect(&m.socket_url(), 4).await.unwrap();
    let store = Store::open(pool.clone()).await.unwrap();
    let w = Writer::spawn(pool.clone(), WriterConfig::default());
    let t = now_us();
    w.submit(track(1, t, 100, 1)).await.unwrap().await.unwrap();
    w.shutdown().await;

    // The TCP URL works, with its password (scram) and not without.
    let (tcp, socket) = read_urls(&data_dir).unwrap();
    assert_eq!(tcp, m.url());
    assert_eq!(socket, m.socket_url());
    let tcp_pool = store::connect(&tcp, 2).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM positions")
        .fetch_one(&tcp_pool)
        .await
        .unwrap();
    assert_eq!(n, 100);
    tcp_pool.close().await;
    let no_password = format!("postgres://clutch@127.0.0.1:{}/clutch", cfg.port);
    assert!(store::connect(&no_password, 2).await.is_err());

    // A second clutch on the same data dir attaches as a guest and leaves it running.
    let guest = start(&cfg).await;
    assert!(!guest.is_owner());
    drop(guest);
    assert!(m.is_running());

    // Clean stop, then a new "clutch process" reuses the cluster with its data.
    pool.close().await;
    drop(store);
    m.stop().unwrap();
    assert!(!m.is_running());
    drop(m);
    let m2 = start(&cfg).await;
    assert!(m2.is_owner());
    let pool = store::connect(&m2.socket_url(), 2).await.unwrap();
    let store = Store::open(pool.clone()).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM positions")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 100, "data survives the restart");
    let latest = store::query::latest_positions(store.pool(), &[1]).await.unwrap();
    assert_eq!(latest[0].fix_time, t + chrono::TimeDelta::seconds(99));
    pool.close().await;
    drop(m2); // stops it

    let (probe, _) = read_urls(&data_dir).unwrap();
    assert!(store::connect(&probe, 1).await.is_err(), "stopped on drop");
    let _ = std::fs::remove_dir_all(data_dir.parent().unwrap());
}
