//! Payments: intents that are authorised, captured (at most what was authorised),
//! refunded (at most what was captured), voided; split across methods and payers;
//! settled (platform commission per partner agreement) and paid out to partners; and
//! customer wallets. Every money movement is a ledger posting in the same database
//! transaction as the state change it belongs to.
//!
//! Calls to the gateway follow "record the intent, call, record the result": the step is
//! committed before the call, the call carries an idempotency key derived from our ids,
//! and a call interrupted by a crash is resumed by calling again with the same key, so a
//! customer is never charged twice. Concurrency is serialised on the intent's row lock,
//! and the amount limits are also CHECK constraints, so they hold even against a bug.

use serde::{Deserialize, Serialize};
use sqlx::{AssertSqlSafe, PgConnection, PgPool};

use crate::error::{Result, ServiceError};
use crate::gateway::{Gateway, GatewayError};
use crate::idempotency::{self, Claim};
use crate::ledger::{self, AccountKind, Leg, Owner};

/// How one part of a payment is paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// An external method through the gateway (card token in `NewIntent::card_token`).
    Card,
    /// The payer's wallet in the intent's currency.
    Wallet,
}

/// Who pays a part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum Payer {
    User(i64),
    Tenant(i64),
}

impl Payer {
    fn owner(self) -> Owner {
        match self {
            Payer::User(id) => Owner::User(id),
            Payer::Tenant(id) => Owner::Tenant(id),
        }
    }
    fn parts(self) -> (&'static str, i64) {
        match self {
            Payer::User(id) => ("user", id),
            Payer::Tenant(id) => ("tenant", id),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Part {
    pub method: Method,
    pub payer: Payer,
    pub amount: i64,
}

/// A payment to create. `parts` must sum to `amount` exactly; empty means one card part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewIntent {
    pub tenant_id: Option<i64>,
    pub currency: String,
    /// Gross, tax included, in minor units.
    pub amount: i64,
    #[serde(default)]
    pub reference: Option<String>,
    /// The partner paid by this payment; without one the money is platform revenue.
    #[serde(default)]
    pub partner_id: Option<i64>,
    #[serde(default)]
    pub tax_region: Option<String>,
    #[serde(default)]
    pub parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Intent {
    pub id: i64,
    pub tenant_id: Option<i64>,
    pub currency: String,
    pub amount: i64,
    pub authorized: i64,
    pub captured: i64,
    pub refunded: i64,
    pub status: String,
    pub reference: Option<String>,
    pub partner_id: Option<i64>,
    pub tax_region: Option<String>,
    pub gateway_ref: Option<String>,
    pub gateway_step: String,
    /// The amount of a capture in progress (recorded before the gateway call).
    pub pending_amount: Option<i64>,
}

const INTENT_COLUMNS: &str = "id, tenant_id, currency, amount, authorized, captured, refunded, status, reference, \
                              partner_id, tax_region, gateway_ref, gateway_step, pending_amount";

/// Creates a payment intent; with an idempotency key, a repeat returns the first answer.
pub async fn create_intent(pool: &PgPool, new: &NewIntent, idempotency_key: Option<&str>) -> Result<Intent> {
    let hash = idempotency::request_hash(new);
    let mut tx = pool.begin().await?;
    if let Some(key) = idempotency_key {
        match idempotency::claim::<Intent>(&mut tx, "payment_intent", key, &hash).await? {
            Claim::Fresh => {}
            Claim::Replay(Ok(i)) => return Ok(i),
            Claim::Replay(Err(e)) => return Err(ServiceError::Invalid(e.message)),
        }
    }
    match insert_intent(&mut tx, new).await {
        Ok(intent) => {
            if let Some(key) = idempotency_key {
                idempotency::complete(&mut tx, "payment_intent", key, &intent).await?;
            }
            tx.commit().await?;
            Ok(intent)
        }
        Err(e) => {
            drop(tx);
            if let Some(key) = idempotency_key {
                idempotency::record_error(pool, "payment_intent", key, &hash, &e).await?;
            }
            Err(e)
        }
    }
}

async fn insert_intent(conn: &mut PgConnection, new: &NewIntent) -> Result<Intent> {
    if new.amount <= 0 {
        return Err(ServiceError::invalid("amount must be a positive number of minor units"));
    }
    let known: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM currencies WHERE code = $1)")
        .bind(&new.currency)
        .fetch_one(&mut *conn)
        .await?;
    if !known {
        return Err(ServiceError::invalid(format!("unknown currency {:?}", new.currency)));
    }
    if let Some(p) = new.partner_id {
        let currency: Option<String> = sqlx::query_scalar("SELECT currency FROM partners WHERE id = $1")
            .bind(p)
            .fetch_optional(&mut *conn)
            .await?;
        match currency {
            None => return Err(ServiceError::NotFound { what: "partner" }),
            Some(c) if c != new.currency => {
                return Err(ServiceError::invalid(format!(
                    "currency mismatch: the partner is paid in {c}, the payment is in {}",
                    new.currency
                )));
            }
            Some(_) => {}
        }
    }
    if let Some(region) = &new.tax_region {
        tax_rate_bp(conn, Some(region)).await?;
    }
    if !new.parts.is_empty() {
        if new.parts.iter().any(|p| p.amount <= 0) {
            return Err(ServiceError::invalid("every part must be a positive amount"));
        }
        let sum: i128 = new.parts.iter().map(|p| i128::from(p.amount)).sum();
        if sum != i128::from(new.amount) {
            return Err(ServiceError::invalid(format!(
                "parts sum to {sum}, not the amount {}",
                new.amount
            )));
        }
    }
    let intent: Intent = sqlx::query_as(AssertSqlSafe(format!(
        "INSERT INTO payment_intents (tenant_id, currency, amount, reference, partner_id, tax_region)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {INTENT_COLUMNS}"
    )))
    .bind(new.tenant_id)
    .bind(&new.currency)
    .bind(new.amount)
    .bind(&new.reference)
    .bind(new.partner_id)
    .bind(&new.tax_region)
    .fetch_one(&mut *conn)
    .await?;
    for p in &new.parts {
        let (kind, id) = p.payer.parts();
        sqlx::query(
            "INSERT INTO payment_parts (intent_id, method, payer_kind, payer_id, amount) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(intent.id)
        .bind(match p.method {
            Method::Card => "card",
            Method::Wallet => "wallet",
        })
        .bind(kind)
        .bind(id)
        .bind(p.amount)
        .execute(&mut *conn)
        .await?;
    }
    Ok(intent)
}

pub async fn get_intent(pool: &PgPool, id: i64) -> Result<Intent> {
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {INTENT_COLUMNS} FROM payment_intents WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await?
    .ok_or(ServiceError::NotFound { what: "payment intent" })
}

async fn lock_intent(conn: &mut PgConnection, id: i64) -> Result<Intent> {
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {INTENT_COLUMNS} FROM payment_intents WHERE id = $1 FOR UPDATE"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or(ServiceError::NotFound { what: "payment intent" })
}

async fn parts_of(conn: &mut PgConnection, intent: &Intent) -> Result<Vec<Part>> {
    let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
        "SELECT method, payer_kind, payer_id, amount FROM payment_parts WHERE intent_id = $1 ORDER BY id",
    )
    .bind(intent.id)
    .fetch_all(conn)
    .await?;
    if rows.is_empty() {
        let payer = Payer::Tenant(intent.tenant_id.unwrap_or(0));
        return Ok(vec![Part {
            method: Method::Card,
            payer,
            amount: intent.amount,
        }]);
    }
    Ok(rows
        .into_iter()
        .map(|(m, pk, pid, amount)| Part {
            method: if m == "wallet" { Method::Wallet } else { Method::Card },
            payer: if pk == "user" {
                Payer::User(pid)
            } else {
                Payer::Tenant(pid)
            },
            amount,
        })
        .collect())
}

/// Tax rate in basis points for a region today; no region means no tax.
async fn tax_rate_bp(conn: &mut PgConnection, region: Option<&str>) -> Result<i64> {
    let Some(region) = region else { return Ok(0) };
    let rate: Option<i32> = sqlx::query_scalar(
        "SELECT rate_bp FROM tax_rates WHERE region = $1 AND valid_from <= current_date ORDER BY valid_from DESC LIMIT 1",
    )
    .bind(region)
    .fetch_optional(conn)
    .await?;
    rate.map(i64::from)
        .ok_or_else(|| ServiceError::invalid(format!("no tax rate for region {region:?}")))
}

/// The tax included in a gross amount at `bp` basis points: gross × bp / (10000 + bp).
pub fn included_tax(gross: i64, bp: i64) -> i64 {
    if bp == 0 {
        return 0;
    }
    let n = i128::from(gross) * i128::from(bp);
    let d = 10_000 + i128::from(bp);
    ((n + d / 2) / d) as i64
}

fn gateway_error(e: GatewayError) -> ServiceError {
    match e {
        GatewayError::Declined(m) => ServiceError::Declined(m),
        GatewayError::Unavailable(m) => ServiceError::GatewayUnavailable(m),
    }
}

/// Authorises the intent: the card part with the gateway (`card_token` names the
/// method), wallet parts by checking the balance (they are debited at capture, where the
/// overdraft CHECK makes the final decision).
pub async fn authorize(pool: &PgPool, gw: &dyn Gateway, id: i64, card_token: &str) -> Result<Intent> {
    let mut tx = pool.begin().await?;
    let intent = lock_intent(&mut tx, id).await?;
    if intent.status != "requires_authorization" {
        return Err(ServiceError::conflict(format!(
            "cannot authorise a payment that is {}",
            intent.status
        )));
    }
    let parts = parts_of(&mut tx, &intent).await?;
    for p in parts.iter().filter(|p| p.method == Method::Wallet) {
        let wallet = ledger::account(&mut tx, AccountKind::CustomerWallet, p.payer.owner(), &intent.currency).await?;
        let bal: i64 = sqlx::query_scalar("SELECT balance FROM ledger_accounts WHERE id = $1")
            .bind(wallet)
            .fetch_one(&mut *tx)
            .await?;
        if bal < p.amount {
            return Err(ServiceError::InsufficientFunds);
        }
    }
    let card: i64 = parts
        .iter()
        .filter(|p| p.method == Method::Card)
        .map(|p| p.amount)
        .sum();
    sqlx::query("UPDATE payment_intents SET gateway_step = 'authorizing', updated_at = now() WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;

    let reference = if card > 0 {
        match gw
            .authorize(&format!("authorize:{id}"), card_token, &intent.currency, card)
            .await
        {
            Ok(r) => Some(r),
            Err(GatewayError::Declined(m)) => {
                sqlx::query(
                    "UPDATE payment_intents SET status = 'failed', gateway_step = 'declined', updated_at = now()
                     WHERE id = $1 AND status = 'requires_authorization'",
                )
                .bind(id)
                .execute(pool)
                .await?;
                return Err(ServiceError::Declined(m));
            }
            Err(e) => return Err(gateway_error(e)),
        }
    } else {
        None
    };
    let intent: Option<Intent> = sqlx::query_as(AssertSqlSafe(format!(
        "UPDATE payment_intents SET authorized = amount, status = 'authorized', gateway_ref = $2,
                gateway_step = 'authorized', updated_at = now()
         WHERE id = $1 AND status = 'requires_authorization' RETURNING {INTENT_COLUMNS}"
    )))
    .bind(id)
    .bind(reference)
    .fetch_optional(pool)
    .await?;
    match intent {
        Some(i) => Ok(i),
        // A concurrent authorise won; its result is the answer.
        None => get_intent(pool, id).await,
    }
}

/// Captures `amount` (default: all that was authorised) once. The money lands in the
/// ledger: card share at the gateway, wallet shares out of the wallets, the included tax
/// to tax payable, the rest to the partner's payable (or platform revenue).
pub async fn capture(pool: &PgPool, gw: &dyn Gateway, id: i64, amount: Option<i64>) -> Result<Intent> {
    let mut tx = pool.begin().await?;
    let intent = lock_intent(&mut tx, id).await?;
    let amt = match intent.status.as_str() {
        // Resuming a capture interrupted after its step was recorded: same amount, same key.
        "authorized" if intent.gateway_step == "capturing" => intent.pending_amount.unwrap_or(intent.authorized),
        "authorized" => amount.unwrap_or(intent.authorized),
        "captured" | "partially_refunded" | "refunded" => return Ok(intent),
        s => return Err(ServiceError::conflict(format!("cannot capture a payment that is {s}"))),
    };
    if amt <= 0 || amt > intent.authorized {
        return Err(ServiceError::invalid(format!(
            "capture amount must be between 1 and the authorised {}",
            intent.authorized
        )));
    }
    // Record the step and the amount before calling out.
    sqlx::query(
        "UPDATE payment_intents SET gateway_step = 'capturing', pending_amount = $2, updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(amt)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;

    let parts = {
        let mut c = pool.acquire().await?;
        parts_of(&mut c, &intent).await?
    };
    let weights: Vec<u64> = parts.iter().map(|p| p.amount as u64).collect();
    let shares = ledger::split(amt, &weights);
    let card: i64 = parts
        .iter()
        .zip(&shares)
        .filter(|(p, _)| p.method == Method::Card)
        .map(|(_, s)| s)
        .sum();
    if card > 0 {
        let reference = intent.gateway_ref.clone().unwrap_or_default();
        gw.capture(&format!("capture:{id}"), &reference, card)
            .await
            .map_err(gateway_error)?;
    }

    let mut tx = pool.begin().await?;
    let intent = lock_intent(&mut tx, id).await?;
    if intent.gateway_step != "capturing" {
        return Ok(intent); // a concurrent resumer finished it
    }
    let bp = tax_rate_bp(&mut tx, intent.tax_region.as_deref()).await?;
    let tax = included_tax(amt, bp);
    let c = intent.currency.clone();
    let mut legs = Vec::new();
    for (p, share) in parts.iter().zip(&shares) {
        let account = match p.method {
            Method::Card => ledger::account(&mut tx, AccountKind::GatewayClearing, Owner::Platform, &c).await?,
            Method::Wallet => ledger::account(&mut tx, AccountKind::CustomerWallet, p.payer.owner(), &c).await?,
        };
        legs.push(Leg::debit(account, *share));
    }
    let tax_account = ledger::account(&mut tx, AccountKind::TaxPayable, Owner::Platform, &c).await?;
    legs.push(Leg::credit(tax_account, tax));
    let payee = match intent.partner_id {
        Some(p) => ledger::account(&mut tx, AccountKind::PartnerPayable, Owner::Partner(p), &c).await?,
        None => ledger::account(&mut tx, AccountKind::PlatformRevenue, Owner::Platform, &c).await?,
    };
    legs.push(Leg::credit(payee, amt - tax));
    ledger::post(&mut tx, "capture", Some(&format!("payment_intent:{id}")), &legs, None).await?;
    let intent: Intent = sqlx::query_as(AssertSqlSafe(format!(
        "UPDATE payment_intents SET captured = $2, status = 'captured', gateway_step = 'captured',
                pending_amount = NULL, updated_at = now()
         WHERE id = $1 RETURNING {INTENT_COLUMNS}"
    )))
    .bind(id)
    .bind(amt)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(intent)
}

/// Releases an authorisation that was never captured.
pub async fn void(pool: &PgPool, gw: &dyn Gateway, id: i64) -> Result<Intent> {
    let intent = get_intent(pool, id).await?;
    match (intent.status.as_str(), intent.gateway_step.as_str()) {
        ("voided", _) => return Ok(intent),
        ("authorized", "authorized") | ("requires_authorization", _) => {}
        (s, _) => return Err(ServiceError::conflict(format!("cannot void a payment that is {s}"))),
    }
    if let Some(reference) = &intent.gateway_ref {
        gw.void(&format!("void:{id}"), reference).await.map_err(gateway_error)?;
    }
    let updated: Option<Intent> = sqlx::query_as(AssertSqlSafe(format!(
        "UPDATE payment_intents SET status = 'voided', gateway_step = 'voided', updated_at = now()
         WHERE id = $1 AND status IN ('authorized', 'requires_authorization') AND gateway_step <> 'capturing'
         RETURNING {INTENT_COLUMNS}"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    match updated {
        Some(i) => Ok(i),
        None => Err(ServiceError::conflict(
            "the payment changed while voiding; it was not voided",
        )),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Refund {
    pub id: i64,
    pub intent_id: i64,
    pub amount: i64,
    pub status: String,
    pub reason: Option<String>,
}

/// Refunds `amount` of a captured payment. The amount is reserved on the intent first
/// (`refunded` rises under the row lock, and a CHECK keeps it ≤ captured), so concurrent
/// refunds can never together exceed the capture; then the gateway is called with the
/// refund's id as key; then the ledger mirrors the capture's legs in proportion.
pub async fn refund(pool: &PgPool, gw: &dyn Gateway, id: i64, amount: i64, reason: Option<&str>) -> Result<Refund> {
    if amount <= 0 {
        return Err(ServiceError::invalid("refund amount must be positive"));
    }
    let mut tx = pool.begin().await?;
    let intent = lock_intent(&mut tx, id).await?;
    if !matches!(intent.status.as_str(), "captured" | "partially_refunded") {
        return Err(ServiceError::conflict(format!(
            "cannot refund a payment that is {}",
            intent.status
        )));
    }
    if intent.refunded + amount > intent.captured {
        return Err(ServiceError::invalid(format!(
            "refund of {amount} exceeds what is left to refund ({})",
            intent.captured - intent.refunded
        )));
    }
    sqlx::query("UPDATE payment_intents SET refunded = refunded + $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(amount)
        .execute(&mut *tx)
        .await?;
    let r: Refund = sqlx::query_as(
        "INSERT INTO refunds (intent_id, amount, reason) VALUES ($1, $2, $3)
         RETURNING id, intent_id, amount, status, reason",
    )
    .bind(id)
    .bind(amount)
    .bind(reason)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    finish_refund(pool, gw, r).await
}

/// Completes a pending refund: call the gateway (idempotent by the refund's id), then
/// post. Used by [`refund`] and by [`resume_pending`] after a crash.
async fn finish_refund(pool: &PgPool, gw: &dyn Gateway, r: Refund) -> Result<Refund> {
    let intent = get_intent(pool, r.intent_id).await?;
    let mut c = pool.acquire().await?;
    let parts = parts_of(&mut c, &intent).await?;
    drop(c);
    let weights: Vec<u64> = parts.iter().map(|p| p.amount as u64).collect();
    let shares = ledger::split(r.amount, &weights);
    let card: i64 = parts
        .iter()
        .zip(&shares)
        .filter(|(p, _)| p.method == Method::Card)
        .map(|(_, s)| s)
        .sum();
    if card > 0 {
        let reference = intent.gateway_ref.clone().unwrap_or_default();
        match gw.refund(&format!("refund:{}", r.id), &reference, card).await {
            Ok(()) => {}
            Err(GatewayError::Declined(m)) => {
                // Final: release the reservation.
                let mut tx = pool.begin().await?;
                let released = sqlx::query("UPDATE refunds SET status = 'failed' WHERE id = $1 AND status = 'pending'")
                    .bind(r.id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if released == 1 {
                    sqlx::query(
                        "UPDATE payment_intents SET refunded = refunded - $2, updated_at = now() WHERE id = $1",
                    )
                    .bind(r.intent_id)
                    .bind(r.amount)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                return Err(ServiceError::Declined(m));
            }
            Err(e) => return Err(gateway_error(e)),
        }
    }

    let mut tx = pool.begin().await?;
    let intent = lock_intent(&mut tx, r.intent_id).await?;
    let status: String = sqlx::query_scalar("SELECT status FROM refunds WHERE id = $1 FOR UPDATE")
        .bind(r.id)
        .fetch_one(&mut *tx)
        .await?;
    if status != "pending" {
        return sqlx::query_as("SELECT id, intent_id, amount, status, reason FROM refunds WHERE id = $1")
            .bind(r.id)
            .fetch_one(pool)
            .await
            .map_err(Into::into);
    }
    // Mirror the capture's legs, each side split in proportion to the original.
    let legs: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT e.account_id, e.amount FROM ledger_entries e JOIN ledger_transactions t ON t.id = e.transaction_id
         WHERE t.kind = 'capture' AND t.reference = $1 ORDER BY e.id",
    )
    .bind(format!("payment_intent:{}", r.intent_id))
    .fetch_all(&mut *tx)
    .await?;
    let debits: Vec<&(i64, i64)> = legs.iter().filter(|l| l.1 > 0).collect();
    let credits: Vec<&(i64, i64)> = legs.iter().filter(|l| l.1 < 0).collect();
    let back_to_payers = ledger::split(r.amount, &debits.iter().map(|l| l.1 as u64).collect::<Vec<_>>());
    let back_from_payees = ledger::split(r.amount, &credits.iter().map(|l| (-l.1) as u64).collect::<Vec<_>>());
    let mut mirror = Vec::new();
    for (l, a) in debits.iter().zip(back_to_payers) {
        mirror.push(Leg::credit(l.0, a));
    }
    for (l, a) in credits.iter().zip(back_from_payees) {
        mirror.push(Leg::debit(l.0, a));
    }
    let ledger_tx = ledger::post(&mut tx, "refund", Some(&format!("refund:{}", r.id)), &mirror, None).await?;
    let done: Refund = sqlx::query_as(
        "UPDATE refunds SET status = 'succeeded', ledger_tx = $2 WHERE id = $1
         RETURNING id, intent_id, amount, status, reason",
    )
    .bind(r.id)
    .bind(ledger_tx)
    .fetch_one(&mut *tx)
    .await?;
    let pending_left: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(amount), 0)::bigint FROM refunds WHERE intent_id = $1 AND status = 'pending'",
    )
    .bind(r.intent_id)
    .fetch_one(&mut *tx)
    .await?;
    let status = if intent.refunded == intent.captured && pending_left == 0 {
        "refunded"
    } else {
        "partially_refunded"
    };
    sqlx::query("UPDATE payment_intents SET status = $2, updated_at = now() WHERE id = $1")
        .bind(r.intent_id)
        .bind(status)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(done)
}

/// Finishes gateway steps a crash interrupted: captures in progress and pending refunds.
/// Returns how many were completed.
pub async fn resume_pending(pool: &PgPool, gw: &dyn Gateway) -> Result<usize> {
    let mut done = 0;
    let capturing: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM payment_intents WHERE gateway_step = 'capturing' AND status = 'authorized' ORDER BY id",
    )
    .fetch_all(pool)
    .await?;
    for id in capturing {
        capture(pool, gw, id, None).await?;
        done += 1;
    }
    let pending: Vec<Refund> = sqlx::query_as(
        "SELECT id, intent_id, amount, status, reason FROM refunds WHERE status = 'pending' ORDER BY id",
    )
    .fetch_all(pool)
    .await?;
    for r in pending {
        finish_refund(pool, gw, r).await?;
        done += 1;
    }
    Ok(done)
}

/// Takes the platform's commission on a captured payment once, per the partner's
/// agreement: partner payable → platform revenue, on the net of tax and refunds.
pub async fn settle(pool: &PgPool, id: i64) -> Result<i64> {
    let mut tx = pool.begin().await?;
    let intent = lock_intent(&mut tx, id).await?;
    let Some(partner) = intent.partner_id else {
        return Err(ServiceError::invalid(
            "a payment without a partner has nothing to settle",
        ));
    };
    if !matches!(intent.status.as_str(), "captured" | "partially_refunded" | "refunded") {
        return Err(ServiceError::conflict(format!(
            "cannot settle a payment that is {}",
            intent.status
        )));
    }
    let settled: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT settled_at FROM payment_intents WHERE id = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
    if settled.is_some() {
        return Err(ServiceError::conflict("the payment is already settled"));
    }
    let commission_bp: i32 = sqlx::query_scalar("SELECT commission_bp FROM partners WHERE id = $1")
        .bind(partner)
        .fetch_one(&mut *tx)
        .await?;
    let bp = tax_rate_bp(&mut tx, intent.tax_region.as_deref()).await?;
    let gross = intent.captured - intent.refunded;
    let net = gross - included_tax(gross, bp);
    let commission = ledger::basis_points(net, i64::from(commission_bp));
    if commission > 0 {
        let c = &intent.currency;
        let payable = ledger::account(&mut tx, AccountKind::PartnerPayable, Owner::Partner(partner), c).await?;
        let revenue = ledger::account(&mut tx, AccountKind::PlatformRevenue, Owner::Platform, c).await?;
        ledger::post(
            &mut tx,
            "commission",
            Some(&format!("payment_intent:{id}")),
            &[Leg::debit(payable, commission), Leg::credit(revenue, commission)],
            None,
        )
        .await?;
    }
    sqlx::query("UPDATE payment_intents SET settled_at = now(), updated_at = now() WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(commission)
}

/// Pays out a partner's whole positive payable balance in `currency`; returns the amount
/// (0 when there is nothing to pay).
pub async fn payout(pool: &PgPool, partner: i64, currency: &str) -> Result<i64> {
    let mut tx = pool.begin().await?;
    let payable = ledger::account(&mut tx, AccountKind::PartnerPayable, Owner::Partner(partner), currency).await?;
    let balance: i64 = sqlx::query_scalar("SELECT balance FROM ledger_accounts WHERE id = $1 FOR UPDATE")
        .bind(payable)
        .fetch_one(&mut *tx)
        .await?;
    if balance <= 0 {
        return Ok(0);
    }
    let clearing = ledger::account(&mut tx, AccountKind::PayoutClearing, Owner::Platform, currency).await?;
    let ledger_tx = ledger::post(
        &mut tx,
        "payout",
        Some(&format!("partner:{partner}")),
        &[Leg::debit(payable, balance), Leg::credit(clearing, balance)],
        None,
    )
    .await?;
    sqlx::query("INSERT INTO payouts (partner_id, currency, amount, ledger_tx) VALUES ($1, $2, $3, $4)")
        .bind(partner)
        .bind(currency)
        .bind(balance)
        .bind(ledger_tx)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(balance)
}

/// Tops up a wallet from a card through the gateway; idempotent by `key`.
pub async fn top_up(
    pool: &PgPool,
    gw: &dyn Gateway,
    owner: Payer,
    currency: &str,
    amount: i64,
    card_token: &str,
    key: &str,
) -> Result<i64> {
    if amount <= 0 {
        return Err(ServiceError::invalid("top-up amount must be positive"));
    }
    let reference = format!("top_up:{key}");
    let mut tx = pool.begin().await?;
    let wallet = ledger::account(&mut tx, AccountKind::CustomerWallet, owner.owner(), currency).await?;
    let done: Option<i64> =
        sqlx::query_scalar("SELECT id FROM ledger_transactions WHERE kind = 'top_up' AND reference = $1")
            .bind(&reference)
            .fetch_optional(&mut *tx)
            .await?;
    if done.is_some() {
        return ledger::balance(pool, wallet).await;
    }
    tx.commit().await?;
    let gw_ref = gw
        .authorize(&format!("top_up_auth:{key}"), card_token, currency, amount)
        .await
        .map_err(gateway_error)?;
    gw.capture(&format!("top_up:{key}"), &gw_ref, amount)
        .await
        .map_err(gateway_error)?;
    let mut tx = pool.begin().await?;
    // Serialise concurrent top-ups with one key on the wallet row, then re-check.
    sqlx::query("SELECT 1 FROM ledger_accounts WHERE id = $1 FOR UPDATE")
        .bind(wallet)
        .execute(&mut *tx)
        .await?;
    let done: Option<i64> =
        sqlx::query_scalar("SELECT id FROM ledger_transactions WHERE kind = 'top_up' AND reference = $1")
            .bind(&reference)
            .fetch_optional(&mut *tx)
            .await?;
    if done.is_none() {
        let clearing = ledger::account(&mut tx, AccountKind::GatewayClearing, Owner::Platform, currency).await?;
        ledger::post(
            &mut tx,
            "top_up",
            Some(&reference),
            &[Leg::debit(clearing, amount), Leg::credit(wallet, amount)],
            None,
        )
        .await?;
    }
    tx.commit().await?;
    ledger::balance(pool, wallet).await
}

/// Moves `amount` out of a wallet to the platform (a fee, a subscription): the
/// overdraft CHECK decides under the wallet's row lock, so with balance B and N parallel
/// debits of `a`, exactly ⌊B/a⌋ succeed.
pub async fn wallet_debit(pool: &PgPool, owner: Payer, currency: &str, amount: i64, reference: &str) -> Result<i64> {
    if amount <= 0 {
        return Err(ServiceError::invalid("amount must be positive"));
    }
    let mut tx = pool.begin().await?;
    let wallet = ledger::account(&mut tx, AccountKind::CustomerWallet, owner.owner(), currency).await?;
    let revenue = ledger::account(&mut tx, AccountKind::PlatformRevenue, Owner::Platform, currency).await?;
    let id = ledger::post(
        &mut tx,
        "wallet_debit",
        Some(reference),
        &[Leg::debit(wallet, amount), Leg::credit(revenue, amount)],
        None,
    )
    .await?;
    tx.commit().await?;
    Ok(id)
}
