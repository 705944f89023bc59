//! Shared set-up for the services tests: a fresh database per test and a few rows.
#![allow(dead_code)]

use sqlx::PgPool;

pub async fn db() -> store::testing::TestDb {
    store::testing::test_db().await
}

/// An active partner with `capacity` bays, paid in `currency`, offering a 60-minute
/// `oil_change` for 8000 minor units, commission 10 %.
pub async fn partner(pool: &PgPool, capacity: i32, currency: &str) -> i64 {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO partners (name, kind, status, lat, lon, capacity, currency, commission_bp)
         VALUES ('Garage', 'repair_center', 'active', 48.85, 2.35, $1, $2, 1000) RETURNING id",
    )
    .bind(capacity)
    .bind(currency)
    .fetch_one(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO partner_services (partner_id, service, price, duration_min) VALUES ($1, 'oil_change', 8000, 60)",
    )
    .bind(id)
    .execute(pool)
    .await
    .unwrap();
    id
}

pub async fn tenant(pool: &PgPool) -> i64 {
    sqlx::query_scalar("INSERT INTO tenants (name) VALUES ('fleet') RETURNING id")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The ledger's global invariants; panics with the offending numbers.
pub async fn assert_ledger_sound(pool: &PgPool) {
    let tb = services::ledger::trial_balance(pool).await.unwrap();
    for (c, s) in &tb {
        assert_eq!(*s, 0, "ledger does not balance in {c}: {tb:?}");
    }
    let bad = services::ledger::balance_mismatches(pool).await.unwrap();
    assert!(
        bad.is_empty(),
        "stored balances disagree with entries for accounts {bad:?}"
    );
    let overdrawn: i64 =
        sqlx::query_scalar("SELECT count(*) FROM ledger_accounts WHERE kind = 'customer_wallet' AND balance < 0")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(overdrawn, 0, "a wallet is overdrawn");
    let over: i64 =
        sqlx::query_scalar("SELECT count(*) FROM payment_intents WHERE refunded > captured OR captured > authorized")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(
        over, 0,
        "a payment refunded more than captured or captured more than authorised"
    );
}
