//! FX conversions and monthly invoices on a real PostgreSQL.

mod common;

use chrono::{Duration, NaiveDate, TimeZone, Utc};
use services::gateway::SandboxGateway;
use services::invoices::{self, Plan};
use services::ledger::{self, AccountKind, Owner};
use services::payments::{self, Payer};
use services::{ServiceError, fx};

#[test]
fn conversion_math_is_exact_across_exponents() {
    let rate = fx::parse_rate("1.0850").unwrap();
    assert_eq!(fx::convert_minor(10_000, rate, 2, 2), 10_850); // 100.00 EUR → 108.50 USD
    let jpy = fx::parse_rate("162.37").unwrap();
    assert_eq!(fx::convert_minor(10_000, jpy, 2, 0), 16_237); // 100.00 EUR → ¥16,237
    let kwd = fx::parse_rate("0.3345").unwrap();
    assert_eq!(fx::convert_minor(10_000, kwd, 2, 3), 33_450); // 100.00 EUR → 33.450 KWD
    for bad in ["", "-1", "0", "1e5", "abc", "1.12345678901"] {
        assert!(fx::parse_rate(bad).is_err(), "{bad:?}");
    }
}

#[tokio::test]
async fn fx_conversion_balances_each_currency_and_records_the_rate() {
    let db = common::db().await;
    let pool = &db.pool;
    let gw = SandboxGateway::new();
    payments::top_up(pool, &gw, Payer::User(1), "EUR", 10_000, "tok", "fx")
        .await
        .unwrap();
    fx::set_rate(pool, "EUR", "USD", "1.0850", Utc::now() - Duration::hours(1))
        .await
        .unwrap();
    let mut conn = pool.acquire().await.unwrap();
    let eur = ledger::account(&mut conn, AccountKind::CustomerWallet, Owner::User(1), "EUR")
        .await
        .unwrap();
    let usd = ledger::account(&mut conn, AccountKind::CustomerWallet, Owner::User(1), "USD")
        .await
        .unwrap();
    drop(conn);
    let c = fx::convert(pool, eur, usd, 10_000, 100).await.unwrap();
    assert_eq!(
        (c.credited, c.spread),
        (10_850 - 109, 109),
        "1 % spread, rounded half up"
    );
    assert_eq!(ledger::balance(pool, usd).await.unwrap(), 10_741);
    assert_eq!(ledger::balance(pool, eur).await.unwrap(), 0);
    let recorded: serde_json::Value = sqlx::query_scalar("SELECT fx FROM ledger_transactions WHERE id = $1")
        .bind(c.transaction)
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(recorded["rate"], "1.0850000000");
    // Converting more than the wallet holds is refused, and nothing moves.
    assert!(matches!(
        fx::convert(pool, eur, usd, 1, 0).await,
        Err(ServiceError::InsufficientFunds)
    ));
    assert!(
        matches!(fx::convert(pool, usd, eur, 100, 0).await, Err(ServiceError::Invalid(_))),
        "no USD→EUR rate"
    );
    common::assert_ledger_sound(pool).await;
}

#[tokio::test]
async fn monthly_invoice_bills_bookings_subscription_and_usage_once() {
    let db = common::db().await;
    let pool = &db.pool;
    let tenant = common::tenant(pool).await;
    let partner = common::partner(pool, 1, "EUR").await;
    let device: i64 = sqlx::query_scalar(
        "INSERT INTO devices (tenant_id, identifier, protocol) VALUES ($1, 'X1', 'gt06') RETURNING id",
    )
    .bind(tenant)
    .fetch_one(pool)
    .await
    .unwrap();
    let month = NaiveDate::from_ymd_opt(2026, 10, 1).unwrap();
    let hour = Utc.with_ymd_and_hms(2026, 10, 12, 8, 0, 0).unwrap();
    sqlx::query(
        "INSERT INTO positions_hourly (device_id, bucket, samples, distance_m, first_fix, last_fix) VALUES ($1, $2, 60, 250000, $2, $2)",
    )
    .bind(device)
    .bind(hour)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO bookings (tenant_id, partner_id, service, bay, slot, status, price, currency)
         VALUES ($1, $2, 'oil_change', 1, tstzrange($3, $4, '[)'), 'completed', 8000, 'EUR')",
    )
    .bind(tenant)
    .bind(partner)
    .bind(hour)
    .bind(hour + Duration::hours(1))
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO tax_rates (region, valid_from, rate_bp) VALUES ('DE', '2020-01-01', 1900)")
        .execute(pool)
        .await
        .unwrap();
    let plan = Plan {
        currency: "EUR".into(),
        per_active_device: 900,
        per_100_km: 50,
        tax_region: Some("DE".into()),
    };
    let (inv, lines) = invoices::issue_monthly(pool, tenant, month, &plan).await.unwrap();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(inv.subtotal, 8_000 + 900 + 125);
    assert_eq!(inv.tax, ledger::basis_points(inv.subtotal, 1900));
    assert_eq!(inv.total, inv.subtotal + inv.tax);
    let (again, _) = invoices::issue_monthly(pool, tenant, month, &plan).await.unwrap();
    assert_eq!(again.id, inv.id, "issued once per month");
    let mut conn = pool.acquire().await.unwrap();
    let receivable = ledger::account(&mut conn, AccountKind::CustomerReceivable, Owner::Tenant(tenant), "EUR")
        .await
        .unwrap();
    let payable = ledger::account(&mut conn, AccountKind::PartnerPayable, Owner::Partner(partner), "EUR")
        .await
        .unwrap();
    drop(conn);
    assert_eq!(ledger::balance(pool, receivable).await.unwrap(), inv.total);
    assert_eq!(ledger::balance(pool, payable).await.unwrap(), 8_000);
    // The next month has no booking left to bill.
    let (next, next_lines) =
        invoices::issue_monthly(pool, tenant, NaiveDate::from_ymd_opt(2026, 11, 1).unwrap(), &plan)
            .await
            .unwrap();
    assert!(next_lines.iter().all(|l| l.kind != "booking"));
    assert_eq!(next.total, 0);
    common::assert_ledger_sound(pool).await;
}
