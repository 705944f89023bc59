//! Migrations on an empty cluster, and the storage mode they choose.

use store::testing::{TestCluster, test_db, timescaledb_required};
use store::{MIGRATOR, StorageMode, Store};

#[tokio::test]
async fn migrations_run_on_an_empty_database_and_are_idempotent() {
    let cluster = TestCluster::shared();
    // A database that the template did not touch: the migrations run from zero here.
    let mut admin = sqlx::PgPool::connect(&cluster.url("postgres")).await.unwrap();
    sqlx::query("CREATE DATABASE empty_for_migrations")
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    admin = sqlx::PgPool::connect(&cluster.url("empty_for_migrations"))
        .await
        .unwrap();
    let store = Store::open(admin.clone()).await.unwrap();
    // Running again is a no-op.
    MIGRATOR.run(&admin).await.unwrap();

    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&admin)
        .await
        .unwrap();
    assert_eq!(applied as usize, MIGRATOR.iter().count());
    for table in [
        "tenants",
        "devices",
        "vehicles",
        "drivers",
        "positions",
        "events",
        "trips",
        "geofences",
        "device_last_position",
        "positions_hourly",
    ] {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(table)
            .fetch_one(&admin)
            .await
            .unwrap();
        assert!(exists, "{table} missing");
    }
    let info = store.info().await.unwrap();
    if info.timescaledb_available.is_some() && info.timescaledb_preloaded {
        assert_eq!(store.mode(), StorageMode::TimescaleDb);
    } else {
        assert_eq!(store.mode(), StorageMode::Partitioned);
    }
}

#[tokio::test]
async fn native_mode_without_timescaledb() {
    let db = test_db().await;
    let info = db.store.info().await.unwrap();
    println!(
        "storage mode: {:?}, timescaledb available: {:?}",
        info.mode, info.timescaledb_available
    );
    if info.timescaledb_available.is_none() {
        assert_eq!(info.mode, StorageMode::Partitioned);
        let kind: String = sqlx::query_scalar(
            "SELECT partstrat::text FROM pg_partitioned_table WHERE partrelid = 'positions'::regclass",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert_eq!(kind, "r");
    }
}

#[tokio::test]
async fn timescaledb_mode_when_available() {
    if !timescaledb_required() {
        println!("TimescaleDB test NOT RUN: set CLUTCH_TEST_TIMESCALEDB=1 on a machine with the extension");
        return;
    }
    let db = test_db().await;
    let info = db.store.info().await.unwrap();
    assert!(
        info.timescaledb_available.is_some(),
        "CLUTCH_TEST_TIMESCALEDB=1 but timescaledb is not in pg_available_extensions"
    );
    assert_eq!(info.mode, StorageMode::TimescaleDb, "{info:?}");
    let hypertables: Vec<String> =
        sqlx::query_scalar("SELECT hypertable_name::text FROM timescaledb_information.hypertables ORDER BY 1")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert!(hypertables.contains(&"positions".to_string()), "{hypertables:?}");
    assert!(hypertables.contains(&"events".to_string()), "{hypertables:?}");
    let compressed: bool = sqlx::query_scalar(
        "SELECT compression_enabled FROM timescaledb_information.hypertables WHERE hypertable_name = 'positions'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(compressed);
    store::maintenance::apply_timescale_policies(&db.store, &store::MaintenanceConfig::default())
        .await
        .unwrap();
    let jobs: i64 =
        sqlx::query_scalar("SELECT count(*) FROM timescaledb_information.jobs WHERE proc_name = 'policy_retention'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(jobs >= 2);
}

#[tokio::test]
async fn open_configured_uses_the_configured_url_and_prepares_today() {
    if std::env::var("DATABASE_URL").is_ok() {
        println!("NOT RUN: DATABASE_URL is set and would take precedence");
        return;
    }
    let db = test_db().await;
    let cfg = store::StoreConfig {
        url: Some(db.url.clone()),
        ..Default::default()
    };
    let (store, managed) = store::open_configured(&cfg).await.unwrap();
    assert!(managed.is_none());
    if store.mode() == StorageMode::Partitioned {
        let today = chrono::Utc::now().format("positions_p%Y%m%d").to_string();
        let parts = store::maintenance::list_partitions(store.pool(), "positions")
            .await
            .unwrap();
        assert!(parts.contains(&today), "{parts:?}");
    }
}
