//! Multi-currency: stored FX rates and conversions posted as two linked legs plus a
//! spread leg, with the rate used recorded on the transaction.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use crate::error::{Result, ServiceError};
use crate::ledger::{self, AccountKind, Leg, Owner};

/// Rates are handled as integers scaled by 10^10 (the column's scale), never as floats.
const RATE_SCALE: i128 = 10_000_000_000;

/// Stores a rate: units of `quote` per one unit of `base`, as a decimal string.
pub async fn set_rate(pool: &PgPool, base: &str, quote: &str, rate: &str, as_of: DateTime<Utc>) -> Result<()> {
    parse_rate(rate)?;
    sqlx::query("INSERT INTO fx_rates (base, quote, as_of, rate) VALUES ($1, $2, $3, $4::numeric)")
        .bind(base)
        .bind(quote)
        .bind(as_of)
        .bind(rate)
        .execute(pool)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.code().as_deref() == Some("23503") => {
                ServiceError::invalid("unknown currency")
            }
            _ => e.into(),
        })?;
    Ok(())
}

/// A positive decimal string to a scaled integer.
pub fn parse_rate(s: &str) -> Result<i128> {
    let bad = || ServiceError::invalid(format!("not a positive decimal rate: {s:?}"));
    let (int, frac) = s.trim().split_once('.').unwrap_or((s.trim(), ""));
    if int.is_empty() && frac.is_empty()
        || frac.len() > 10
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let i: i128 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| bad())?
    };
    let f: i128 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<10}").parse().map_err(|_| bad())?
    };
    let v = i
        .checked_mul(RATE_SCALE)
        .and_then(|x| x.checked_add(f))
        .ok_or_else(bad)?;
    if v <= 0 {
        return Err(bad());
    }
    Ok(v)
}

async fn exponent(conn: &mut PgConnection, c: &str) -> Result<u32> {
    let e: Option<i16> = sqlx::query_scalar("SELECT exponent FROM currencies WHERE code = $1")
        .bind(c)
        .fetch_optional(conn)
        .await?;
    e.map(|e| e as u32)
        .ok_or_else(|| ServiceError::invalid(format!("unknown currency {c:?}")))
}

/// `amount` minor units of `from` in minor units of `to` at a scaled rate, half up.
pub fn convert_minor(amount: i64, rate_scaled: i128, from_exp: u32, to_exp: u32) -> i64 {
    let num = i128::from(amount) * rate_scaled * 10i128.pow(to_exp);
    let den = RATE_SCALE * 10i128.pow(from_exp);
    ((num + den / 2) / den) as i64
}

/// The outcome of a conversion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversion {
    pub transaction: i64,
    pub credited: i64,
    pub spread: i64,
    pub rate: String,
}

/// Moves `amount` (minor units of the source account's currency) from one account to
/// another in a different currency at the latest stored rate, keeping `spread_bp` as FX
/// revenue. Both currencies balance on their own through the platform's FX position
/// accounts, and the rate used is recorded with the transaction.
pub async fn convert(
    pool: &PgPool,
    from_account: i64,
    to_account: i64,
    amount: i64,
    spread_bp: i64,
) -> Result<Conversion> {
    if amount <= 0 || !(0..10_000).contains(&spread_bp) {
        return Err(ServiceError::invalid("amount must be positive and spread below 100 %"));
    }
    let mut tx = pool.begin().await?;
    let currencies: Vec<(i64, String)> = sqlx::query_as("SELECT id, currency FROM ledger_accounts WHERE id = ANY($1)")
        .bind(vec![from_account, to_account])
        .fetch_all(&mut *tx)
        .await?;
    let cur = |id: i64| currencies.iter().find(|c| c.0 == id).map(|c| c.1.clone());
    let (Some(from), Some(to)) = (cur(from_account), cur(to_account)) else {
        return Err(ServiceError::NotFound { what: "account" });
    };
    if from == to {
        return Err(ServiceError::invalid(
            "both accounts are in the same currency; post a transfer instead",
        ));
    }
    let rate: Option<(String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT rate::text, as_of FROM fx_rates WHERE base = $1 AND quote = $2 AND as_of <= now() ORDER BY as_of DESC LIMIT 1",
    )
    .bind(&from)
    .bind(&to)
    .fetch_optional(&mut *tx)
    .await?;
    let (rate_text, as_of) = rate.ok_or_else(|| ServiceError::invalid(format!("no FX rate {from}→{to}")))?;
    let scaled = parse_rate(&rate_text)?;
    let (fe, te) = (exponent(&mut tx, &from).await?, exponent(&mut tx, &to).await?);
    let gross = convert_minor(amount, scaled, fe, te);
    let spread = ledger::basis_points(gross, spread_bp);
    let credited = gross - spread;
    if credited <= 0 {
        return Err(ServiceError::invalid("the amount is too small to convert"));
    }
    let pos_from = ledger::account(&mut tx, AccountKind::FxPosition, Owner::Platform, &from).await?;
    let pos_to = ledger::account(&mut tx, AccountKind::FxPosition, Owner::Platform, &to).await?;
    let spread_acc = ledger::account(&mut tx, AccountKind::FxSpread, Owner::Platform, &to).await?;
    let id = ledger::post(
        &mut tx,
        "fx_conversion",
        None,
        &[
            Leg::debit(from_account, amount),
            Leg::credit(pos_from, amount),
            Leg::debit(pos_to, gross),
            Leg::credit(to_account, credited),
            Leg::credit(spread_acc, spread),
        ],
        Some(serde_json::json!({"base": from, "quote": to, "rate": rate_text, "as_of": as_of, "spread_bp": spread_bp})),
    )
    .await?;
    tx.commit().await?;
    Ok(Conversion {
        transaction: id,
        credited,
        spread,
        rate: rate_text,
    })
}
