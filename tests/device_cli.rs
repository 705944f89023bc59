//! `clutch device unknown` / `clutch device add` against a real PostgreSQL
//! (`DATABASE_URL` pointing at a throwaway `store::testing` database): the list shows
//! what the ingest tier recorded, registering a device takes it off the list.

use std::process::Command;

fn clutch(url: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_clutch"))
        .arg("device")
        .args(args)
        .env("DATABASE_URL", url)
        .output()
        .expect("run clutch");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_devices_are_listed_until_registered() {
    let db = store::testing::test_db().await;
    let (ok, out, err) = clutch(&db.url, &["unknown"]);
    assert!(ok, "{err}");
    assert!(out.contains("no unknown devices"), "{out}");

    // What a refused tracker leaves behind (written by the ingest registry's flush).
    sqlx::query(
        "INSERT INTO unknown_devices (protocol, identifier, attempts, remote_addr) VALUES \
         ('gt06', '359999000000123', 7, '203.0.113.9:40211'), ('osmand', 'phone-9', 1, NULL)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let (ok, out, err) = clutch(&db.url, &["unknown"]);
    assert!(ok, "{err}");
    assert!(
        out.lines().any(|l| l.contains("gt06")
            && l.contains("359999000000123")
            && l.contains(" 7 ")
            && l.contains("203.0.113.9:40211")),
        "{out}"
    );
    let (ok, out, err) = clutch(&db.url, &["unknown", "--json"]);
    assert!(ok, "{err}");
    let rows: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 2, "{out}");

    let (ok, _, err) = clutch(
        &db.url,
        &["add", "--identifier", "359999000000123", "--protocol", "gt06"],
    );
    assert!(ok, "{err}");
    let (ok, out, err) = clutch(&db.url, &["unknown", "--json"]);
    assert!(ok, "{err}");
    assert!(
        !out.contains("359999000000123"),
        "registered device still listed: {out}"
    );
    assert!(out.contains("phone-9"), "{out}");
}
