//! Privacy on a real PostgreSQL: export, erasure that keeps the ledger identical, and
//! positions hidden outside consented working hours.

mod common;

use chrono::{Duration, TimeZone, Utc};
use services::ServiceError;
use services::gateway::SandboxGateway;
use services::payments::{self, Payer};
use services::privacy::{self, Consent};

#[tokio::test]
async fn export_then_erase_a_driver_keeping_the_ledger() {
    let db = common::db().await;
    let pool = &db.pool;
    let tenant = common::tenant(pool).await;
    let driver: i64 = sqlx::query_scalar(
        "INSERT INTO drivers (tenant_id, name, email, phone, external_id) VALUES ($1, 'Ada Driver', 'ada@example.com', '+331', 'CARD1') RETURNING id",
    )
    .bind(tenant)
    .fetch_one(pool)
    .await
    .unwrap();
    let device: i64 = sqlx::query_scalar(
        "INSERT INTO devices (tenant_id, identifier, protocol, driver_id) VALUES ($1, 'D1', 'gt06', $2) RETURNING id",
    )
    .bind(tenant)
    .bind(driver)
    .fetch_one(pool)
    .await
    .unwrap();
    let t0 = Utc::now() - Duration::hours(3);
    sqlx::query("INSERT INTO trips (device_id, start_time, end_time, driver_id) VALUES ($1, $2, $3, $4)")
        .bind(device)
        .bind(t0)
        .bind(t0 + Duration::minutes(30))
        .bind(driver)
        .execute(pool)
        .await
        .unwrap();
    for m in [0, 10, 20, 40] {
        sqlx::query("INSERT INTO positions (device_id, fix_time, server_time, lat, lon, valid) VALUES ($1, $2, $2, 48.0, 2.0, true)")
            .bind(device)
            .bind(t0 + Duration::minutes(m))
            .execute(pool)
            .await
            .unwrap();
    }
    let gw = SandboxGateway::new();
    payments::top_up(pool, &gw, Payer::User(driver), "EUR", 1_234, "tok", "p")
        .await
        .unwrap();
    let sums_before: Vec<(String, i64)> =
        sqlx::query_as("SELECT currency, sum(amount)::bigint FROM ledger_entries GROUP BY 1 ORDER BY 1")
            .fetch_all(pool)
            .await
            .unwrap();

    let export = privacy::export_driver(pool, tenant, driver).await.unwrap();
    assert_eq!(export["driver"]["email"], "ada@example.com");
    assert_eq!(export["trips"].as_array().unwrap().len(), 1);
    assert_eq!(export["positions_during_trips"].as_array().unwrap().len(), 3);
    // Another tenant cannot export or erase this driver.
    let other = common::tenant(pool).await;
    assert!(matches!(
        privacy::export_driver(pool, other, driver).await,
        Err(ServiceError::NotFound { .. })
    ));
    assert!(matches!(
        privacy::erase_driver(pool, other, driver).await,
        Err(ServiceError::NotFound { .. })
    ));

    let erased = privacy::erase_driver(pool, tenant, driver).await.unwrap();
    assert_eq!((erased.positions, erased.trips), (3, 1));
    let (name, email): (String, Option<String>) = sqlx::query_as("SELECT name, email FROM drivers WHERE id = $1")
        .bind(driver)
        .fetch_one(pool)
        .await
        .unwrap();
    assert!(name.starts_with("erased-") && !name.contains("Ada"), "{name}");
    assert_eq!(email, None);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM positions WHERE device_id = $1")
        .bind(device)
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(left, 1, "positions outside the driver's trips stay");
    let sums_after: Vec<(String, i64)> =
        sqlx::query_as("SELECT currency, sum(amount)::bigint FROM ledger_entries GROUP BY 1 ORDER BY 1")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(sums_before, sums_after, "the ledger is untouched");
    common::assert_ledger_sound(pool).await;
}

#[tokio::test]
async fn positions_outside_consented_hours_are_not_visible() {
    let db = common::db().await;
    let pool = &db.pool;
    let tenant = common::tenant(pool).await;
    let driver: i64 = sqlx::query_scalar("INSERT INTO drivers (tenant_id, name) VALUES ($1, 'B') RETURNING id")
        .bind(tenant)
        .fetch_one(pool)
        .await
        .unwrap();
    let device: i64 = sqlx::query_scalar(
        "INSERT INTO devices (tenant_id, identifier, protocol, driver_id) VALUES ($1, 'D2', 'gt06', $2) RETURNING id",
    )
    .bind(tenant)
    .bind(driver)
    .fetch_one(pool)
    .await
    .unwrap();
    let visible = |t: chrono::DateTime<Utc>| async move {
        sqlx::query_scalar::<_, bool>("SELECT clutch_position_visible($1, $2)")
            .bind(device)
            .bind(t)
            .fetch_one(pool)
            .await
            .unwrap()
    };
    // Monday 2026-11-23: 09:00 and 20:00 in Paris (UTC+1).
    let work = Utc.with_ymd_and_hms(2026, 11, 23, 8, 0, 0).unwrap();
    let evening = Utc.with_ymd_and_hms(2026, 11, 23, 19, 0, 0).unwrap();
    assert!(visible(evening).await, "no consent row: tracked");
    let consent = Consent {
        track_outside_hours: false,
        time_zone: "Europe/Paris".into(),
        working_hours: serde_json::json!({"mon": [["08:00", "18:00"]]}),
    };
    privacy::set_consent(pool, tenant, driver, &consent).await.unwrap();
    assert!(visible(work).await);
    assert!(!visible(evening).await);
    assert!(
        !visible(work + Duration::days(5)).await,
        "Saturday is outside working hours"
    );
    privacy::set_consent(
        pool,
        tenant,
        driver,
        &Consent {
            track_outside_hours: true,
            ..consent.clone()
        },
    )
    .await
    .unwrap();
    assert!(visible(evening).await);
    let bad = Consent {
        time_zone: "Mars/Olympus".into(),
        ..consent
    };
    assert!(matches!(
        privacy::set_consent(pool, tenant, driver, &bad).await,
        Err(ServiceError::Invalid(_))
    ));
}
