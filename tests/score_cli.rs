//! `clutch score` against a real database: detected events vs a ground-truth file.

use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn score_reports_precision_and_recall_per_kind() {
    let db = store::testing::test_db().await;
    let tenant: i64 = sqlx::query_scalar("INSERT INTO tenants (name) VALUES ('t') RETURNING id")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let dev: i64 = sqlx::query_scalar(
        "INSERT INTO devices (tenant_id, identifier, protocol) VALUES ($1, '355552754130004', 'gt06') RETURNING id",
    )
    .bind(tenant)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    // Two harsh brakings detected, one of them 4 s after the truth, one spurious.
    for t in ["2026-03-02T07:02:07Z", "2026-03-02T07:10:00Z"] {
        sqlx::query("INSERT INTO events (device_id, time, kind) VALUES ($1, $2::timestamptz, 'harsh_braking')")
            .bind(dev)
            .bind(t)
            .execute(&db.pool)
            .await
            .unwrap();
    }
    let truth = "{\"device\":\"355552754130004\",\"kind\":\"harsh_braking\",\"start\":\"2026-03-02T07:02:03Z\",\"end\":\"2026-03-02T07:02:05Z\",\"magnitude\":0.55}\n\
                 {\"device\":\"355552754130004\",\"kind\":\"harsh_braking\",\"start\":\"2026-03-02T07:20:03Z\",\"end\":\"2026-03-02T07:20:05Z\",\"magnitude\":0.55}\n\
                 {\"device\":\"355552754130004\",\"kind\":\"offline\",\"start\":\"2026-03-02T07:40:00Z\",\"end\":\"2026-03-02T07:43:00Z\",\"magnitude\":180}\n";
    let path = std::env::temp_dir().join(format!("clutch-truth-{}.jsonl", std::process::id()));
    std::fs::write(&path, truth).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_clutch"))
        .args(["score", "--json", "--database-url", &db.url, "--truth"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let kinds = v["kinds"].as_array().unwrap();
    assert_eq!(kinds.len(), 1, "offline periods are not scored: {v}");
    let hb = &kinds[0];
    assert_eq!(hb["kind"], "harsh_braking");
    assert_eq!(hb["matched"], 1);
    assert_eq!(hb["precision"], 0.5);
    assert_eq!(hb["recall"], 0.5);

    std::fs::write(&path, "not json\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_clutch"))
        .args(["score", "--database-url", &db.url, "--truth"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 1"));
    let _ = std::fs::remove_file(&path);
}
