//! Monthly invoices for fleets: completed bookings not paid on the spot, a subscription
//! per active vehicle, and usage (distance driven) from the telemetry rollups. Issuing
//! posts the receivable; an invoice is generated once per tenant, month and currency.

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::error::{Result, ServiceError};
use crate::ledger::{self, AccountKind, Leg, Owner};

/// What a fleet pays per month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub currency: String,
    /// Per device that reported during the month, minor units.
    pub per_active_device: i64,
    /// Per 100 km driven, minor units.
    pub per_100_km: i64,
    pub tax_region: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Invoice {
    pub id: i64,
    pub tenant_id: i64,
    pub period_start: NaiveDate,
    pub currency: String,
    pub subtotal: i64,
    pub tax: i64,
    pub total: i64,
    pub status: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Line {
    pub kind: String,
    pub description: String,
    pub quantity: f64,
    pub unit_price: i64,
    pub amount: i64,
    pub booking_id: Option<i64>,
}

const COLUMNS: &str = "id, tenant_id, period_start, currency, subtotal, tax, total, status";

/// Issues (or returns the already issued) invoice of `tenant` for the month containing `month`.
pub async fn issue_monthly(pool: &PgPool, tenant: i64, month: NaiveDate, plan: &Plan) -> Result<(Invoice, Vec<Line>)> {
    let start =
        NaiveDate::from_ymd_opt(month.year(), month.month(), 1).ok_or_else(|| ServiceError::invalid("bad month"))?;
    let end = start
        .checked_add_months(chrono::Months::new(1))
        .ok_or_else(|| ServiceError::invalid("bad month"))?;
    if plan.per_active_device < 0 || plan.per_100_km < 0 {
        return Err(ServiceError::invalid("prices must not be negative"));
    }
    let mut tx = pool.begin().await?;
    // One generator per tenant at a time; a second one finds the first's invoice.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('clutch.invoice'), $1::int)")
        .bind(tenant as i32)
        .execute(&mut *tx)
        .await?;
    let existing: Option<Invoice> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM invoices WHERE tenant_id = $1 AND period_start = $2 AND currency = $3"
    )))
    .bind(tenant)
    .bind(start)
    .bind(&plan.currency)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(inv) = existing {
        drop(tx);
        let lines = lines(pool, inv.id).await?;
        return Ok((inv, lines));
    }
    let mut lines: Vec<Line> = Vec::new();
    let bookings: Vec<(i64, String, i64, i64)> = sqlx::query_as(
        "SELECT b.id, b.service, b.price, b.partner_id FROM bookings b
         WHERE b.tenant_id = $1 AND b.status = 'completed' AND b.currency = $2 AND b.invoice_id IS NULL
           AND b.payment_intent_id IS NULL AND lower(b.slot) < $3::date
         ORDER BY b.id FOR UPDATE",
    )
    .bind(tenant)
    .bind(&plan.currency)
    .bind(end)
    .fetch_all(&mut *tx)
    .await?;
    for (id, service, price, _) in &bookings {
        lines.push(Line {
            kind: "booking".into(),
            description: format!("booking {id}: {service}"),
            quantity: 1.0,
            unit_price: *price,
            amount: *price,
            booking_id: Some(*id),
        });
    }
    let (active, metres): (i64, f64) = sqlx::query_as(
        "SELECT count(DISTINCT h.device_id), coalesce(sum(h.distance_m), 0)::float8
         FROM positions_hourly h JOIN devices d ON d.id = h.device_id
         WHERE d.tenant_id = $1 AND h.bucket >= $2::date AND h.bucket < $3::date",
    )
    .bind(tenant)
    .bind(start)
    .bind(end)
    .fetch_one(&mut *tx)
    .await?;
    if active > 0 && plan.per_active_device > 0 {
        lines.push(Line {
            kind: "subscription".into(),
            description: format!("{active} active device(s)"),
            quantity: active as f64,
            unit_price: plan.per_active_device,
            amount: active * plan.per_active_device,
            booking_id: None,
        });
    }
    let km = metres / 1000.0;
    if km > 0.0 && plan.per_100_km > 0 {
        lines.push(Line {
            kind: "usage".into(),
            description: format!("{km:.1} km driven"),
            quantity: (km * 10.0).round() / 10.0,
            unit_price: plan.per_100_km,
            amount: (km / 100.0 * plan.per_100_km as f64).round() as i64,
            booking_id: None,
        });
    }
    let subtotal: i64 = lines.iter().map(|l| l.amount).sum();
    let bp: i64 = match &plan.tax_region {
        None => 0,
        Some(r) => sqlx::query_scalar::<_, i32>(
            "SELECT rate_bp FROM tax_rates WHERE region = $1 AND valid_from <= $2 ORDER BY valid_from DESC LIMIT 1",
        )
        .bind(r)
        .bind(start)
        .fetch_optional(&mut *tx)
        .await?
        .map(i64::from)
        .ok_or_else(|| ServiceError::invalid(format!("no tax rate for region {r:?}")))?,
    };
    let tax = ledger::basis_points(subtotal, bp);
    let mut inv: Invoice = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO invoices (tenant_id, period_start, currency, subtotal, tax, total) VALUES ($1, $2, $3, $4, $5, $6)
         RETURNING {COLUMNS}"
    )))
    .bind(tenant)
    .bind(start)
    .bind(&plan.currency)
    .bind(subtotal)
    .bind(tax)
    .bind(subtotal + tax)
    .fetch_one(&mut *tx)
    .await?;
    for l in &lines {
        sqlx::query(
            "INSERT INTO invoice_lines (invoice_id, kind, description, quantity, unit_price, amount, booking_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(inv.id)
        .bind(&l.kind)
        .bind(&l.description)
        .bind(l.quantity)
        .bind(l.unit_price)
        .bind(l.amount)
        .bind(l.booking_id)
        .execute(&mut *tx)
        .await?;
    }
    if subtotal + tax > 0 {
        let c = &plan.currency;
        let receivable = ledger::account(&mut tx, AccountKind::CustomerReceivable, Owner::Tenant(tenant), c).await?;
        let revenue = ledger::account(&mut tx, AccountKind::PlatformRevenue, Owner::Platform, c).await?;
        let tax_acc = ledger::account(&mut tx, AccountKind::TaxPayable, Owner::Platform, c).await?;
        let mut legs = vec![Leg::debit(receivable, subtotal + tax), Leg::credit(tax_acc, tax)];
        let mut platform = subtotal;
        // Booking lines are owed on to the partner who did the work.
        for (id, _, price, partner) in &bookings {
            let payable = ledger::account(&mut tx, AccountKind::PartnerPayable, Owner::Partner(*partner), c).await?;
            legs.push(Leg::credit(payable, *price));
            platform -= price;
            sqlx::query("UPDATE bookings SET invoice_id = $2 WHERE id = $1")
                .bind(id)
                .bind(inv.id)
                .execute(&mut *tx)
                .await?;
        }
        legs.push(Leg::credit(revenue, platform));
        let ledger_tx = ledger::post(&mut tx, "invoice", Some(&format!("invoice:{}", inv.id)), &legs, None).await?;
        sqlx::query("UPDATE invoices SET ledger_tx = $2 WHERE id = $1")
            .bind(inv.id)
            .bind(ledger_tx)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    inv.status = "issued".into();
    Ok((inv, lines))
}

pub async fn lines(pool: &PgPool, invoice: i64) -> Result<Vec<Line>> {
    Ok(sqlx::query_as(
        "SELECT kind, description, quantity, unit_price, amount, booking_id FROM invoice_lines WHERE invoice_id = $1 ORDER BY id",
    )
    .bind(invoice)
    .fetch_all(pool)
    .await?)
}
