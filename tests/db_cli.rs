//! `clutch db …` against the managed PostgreSQL: the cluster is created once, reused by
//! every later clutch process with its data, and never left running.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use store::managed::ManagedCluster;
use store::{ManagedConfig, PositionRow, Writer, WriterConfig};

fn clutch(data_dir: &Path, port: u16, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_clutch"))
        .arg("db")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--pg-port")
        .arg(port.to_string())
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn row(device_id: i64, secs: i64) -> PositionRow {
    let t = chrono::DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap();
    let p = protocols::model::Position::new(t, 54.0, 25.0, true);
    PositionRow::from_position(device_id, &p, t)
}

#[test]
fn managed_cluster_survives_clutch_restarts_with_its_data() {
    let root = std::env::temp_dir().join(format!("clutch-db-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let data_dir: PathBuf = root.join("data");
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();

    let (ok, _, err) = clutch(&data_dir, port, &["url"]);
    assert!(!ok && err.contains("no managed PostgreSQL"), "{err}");

    let (ok, out, err) = clutch(&data_dir, port, &["migrate"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["mode"] == "partitioned" || v["mode"] == "timescale_db", "{v}");
    let pid_file = data_dir.join("postgres/data/postmaster.pid");
    assert!(!pid_file.exists(), "clutch db migrate left PostgreSQL running");
    let version = std::fs::metadata(data_dir.join("postgres/data/PG_VERSION"))
        .unwrap()
        .modified()
        .unwrap();

    // Another clutch process writes through the managed cluster, then stops it.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cfg = ManagedConfig {
        data_dir: data_dir.clone(),
        port,
        ..ManagedConfig::default()
    };
    rt.block_on(async {
        let c = cfg.clone();
        let m = tokio::task::spawn_blocking(move || ManagedCluster::start(&c))
            .await
            .unwrap()
            .unwrap();
        m.ensure_database().await.unwrap();
        let pool = store::connect(&m.socket_url(), 2).await.unwrap();
        let w = Writer::spawn(pool.clone(), WriterConfig::default());
        let rows: Vec<PositionRow> = (0..10).map(|i| row(1, i)).collect();
        w.submit(rows).await.unwrap().await.unwrap();
        w.shutdown().await;
        pool.close().await;
        tokio::task::spawn_blocking(move || drop(m)).await.unwrap();
    });
    assert!(!pid_file.exists());

    // A restarted clutch reuses the cluster (no second initdb) and finds the data.
    let (ok, out, err) = clutch(&data_dir, port, &["info"]);
    assert!(ok, "{err}");
    let info: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(info["migrated"], true, "{info}");
    assert_eq!(
        std::fs::metadata(data_dir.join("postgres/data/PG_VERSION"))
            .unwrap()
            .modified()
            .unwrap(),
        version
    );
    let (ok, url, _) = clutch(&data_dir, port, &["url"]);
    assert!(ok && url.starts_with("postgres://clutch:"), "{url}");
    rt.block_on(async {
        let c = cfg.clone();
        let m = tokio::task::spawn_blocking(move || ManagedCluster::start(&c))
            .await
            .unwrap()
            .unwrap();
        let pool = store::connect(url.trim(), 2).await.unwrap();
        let n: i64 = store::sqlx::query_scalar("SELECT count(*) FROM positions")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(n, 10);
        pool.close().await;
        tokio::task::spawn_blocking(move || drop(m)).await.unwrap();
    });
    assert!(!pid_file.exists());
    let _ = std::fs::remove_dir_all(&root);
}
