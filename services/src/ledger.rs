//! The double-entry ledger. Every movement of money is one [`post`]: a transaction of at
//! least two legs that sums to zero per currency, checked again by the database at
//! commit. Posted entries are never changed; [`reverse`] posts the mirror image.
//!
//! Sign convention: a leg's amount is a debit when positive and a credit when negative.
//! Balances are read on each account's normal side (see the migration), so a wallet
//! holding 10.00 EUR reads `1000`.

use std::collections::BTreeMap;

use sqlx::{PgConnection, PgPool};

use crate::error::{Result, ServiceError};

/// What an account is for. Its normal side (debit for assets, credit for what the
/// platform owes or earned) follows from the kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AccountKind {
    CustomerWallet,
    PartnerPayable,
    PlatformRevenue,
    TaxPayable,
    GatewayClearing,
    FxSpread,
    FxPosition,
    CustomerReceivable,
    PayoutClearing,
}

impl AccountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::CustomerWallet => "customer_wallet",
            AccountKind::PartnerPayable => "partner_payable",
            AccountKind::PlatformRevenue => "platform_revenue",
            AccountKind::TaxPayable => "tax_payable",
            AccountKind::GatewayClearing => "gateway_clearing",
            AccountKind::FxSpread => "fx_spread",
            AccountKind::FxPosition => "fx_position",
            AccountKind::CustomerReceivable => "customer_receivable",
            AccountKind::PayoutClearing => "payout_clearing",
        }
    }

    /// Only money customers hold with us may not go below zero. A partner payable may
    /// (refund after payout: the partner owes us); clearing accounts swing both ways.
    fn allow_negative(self) -> bool {
        !matches!(self, AccountKind::CustomerWallet)
    }
}

/// Whose account it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Owner {
    Platform,
    User(i64),
    Tenant(i64),
    Partner(i64),
}

impl Owner {
    fn parts(self) -> (Option<&'static str>, Option<i64>) {
        match self {
            Owner::Platform => (None, None),
            Owner::User(id) => (Some("user"), Some(id)),
            Owner::Tenant(id) => (Some("tenant"), Some(id)),
            Owner::Partner(id) => (Some("partner"), Some(id)),
        }
    }
}

/// One leg of a posting: debit (> 0) or credit (< 0) an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leg {
    pub account: i64,
    pub amount: i64,
}

impl Leg {
    pub fn debit(account: i64, amount: i64) -> Leg {
        Leg { account, amount }
    }
    pub fn credit(account: i64, amount: i64) -> Leg {
        Leg {
            account,
            amount: -amount,
        }
    }
}

/// The account of `kind` owned by `owner` in `currency`, created on first use.
pub async fn account(conn: &mut PgConnection, kind: AccountKind, owner: Owner, currency: &str) -> Result<i64> {
    let (owner_kind, owner_id) = owner.parts();
    if let Some(id) = find_account(&mut *conn, kind, owner, currency).await? {
        return Ok(id);
    }
    let known: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM currencies WHERE code = $1)")
        .bind(currency)
        .fetch_one(&mut *conn)
        .await?;
    if !known {
        return Err(ServiceError::invalid(format!("unknown currency {currency:?}")));
    }
    sqlx::query(
        "INSERT INTO ledger_accounts (kind, owner_kind, owner_id, currency, allow_negative)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (kind, coalesce(owner_kind, ''), coalesce(owner_id, 0), currency) DO NOTHING",
    )
    .bind(kind.as_str())
    .bind(owner_kind)
    .bind(owner_id)
    .bind(currency)
    .bind(kind.allow_negative())
    .execute(&mut *conn)
    .await?;
    find_account(conn, kind, owner, currency)
        .await?
        .ok_or(ServiceError::NotFound { what: "account" })
}

async fn find_account(conn: &mut PgConnection, kind: AccountKind, owner: Owner, currency: &str) -> Result<Option<i64>> {
    let (owner_kind, owner_id) = owner.parts();
    Ok(sqlx::query_scalar(
        "SELECT id FROM ledger_accounts
         WHERE kind = $1 AND coalesce(owner_kind, '') = coalesce($2, '') AND coalesce(owner_id, 0) = coalesce($3, 0)
           AND currency = $4",
    )
    .bind(kind.as_str())
    .bind(owner_kind)
    .bind(owner_id)
    .bind(currency)
    .fetch_optional(conn)
    .await?)
}

/// Posts a balanced transaction inside the caller's database transaction and returns
/// its id. Checked here first for a clear error (the database checks again at commit):
/// at least two non-zero legs, accounts exist, and the legs sum to zero per currency.
pub async fn post(
    conn: &mut PgConnection,
    kind: &str,
    reference: Option<&str>,
    legs: &[Leg],
    fx: Option<serde_json::Value>,
) -> Result<i64> {
    post_linked(conn, kind, reference, legs, fx, None).await
}

async fn post_linked(
    conn: &mut PgConnection,
    kind: &str,
    reference: Option<&str>,
    legs: &[Leg],
    fx: Option<serde_json::Value>,
    reverses: Option<i64>,
) -> Result<i64> {
    let legs: Vec<Leg> = legs.iter().copied().filter(|l| l.amount != 0).collect();
    if legs.len() < 2 {
        return Err(ServiceError::invalid("a posting needs at least two non-zero legs"));
    }
    let ids: Vec<i64> = legs.iter().map(|l| l.account).collect();
    let currencies: Vec<(i64, String)> = sqlx::query_as("SELECT id, currency FROM ledger_accounts WHERE id = ANY($1)")
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await?;
    let currency_of: BTreeMap<i64, String> = currencies.into_iter().collect();
    let mut sums: BTreeMap<&str, i128> = BTreeMap::new();
    let mut leg_currencies = Vec::with_capacity(legs.len());
    for l in &legs {
        let c = currency_of
            .get(&l.account)
            .ok_or(ServiceError::NotFound { what: "account" })?;
        *sums.entry(c.as_str()).or_default() += i128::from(l.amount);
        leg_currencies.push(c.clone());
    }
    if let Some((c, s)) = sums.iter().find(|(_, s)| **s != 0) {
        return Err(ServiceError::invalid(format!(
            "posting does not balance in {c}: off by {s}"
        )));
    }
    let tx_id: i64 = sqlx::query_scalar(
        "INSERT INTO ledger_transactions (kind, reference, fx, reverses) VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(kind)
    .bind(reference)
    .bind(fx)
    .bind(reverses)
    .fetch_one(&mut *conn)
    .await?;
    let amounts: Vec<i64> = legs.iter().map(|l| l.amount).collect();
    sqlx::query(
        "INSERT INTO ledger_entries (transaction_id, account_id, amount, currency)
         SELECT $1, a, m, c FROM unnest($2::bigint[], $3::bigint[], $4::text[]) AS t(a, m, c)",
    )
    .bind(tx_id)
    .bind(&ids)
    .bind(&amounts)
    .bind(&leg_currencies)
    .execute(&mut *conn)
    .await?;
    Ok(tx_id)
}

/// Posts the mirror image of transaction `tx_id`, linked to it. A transaction is reversed
/// at most once (unique index on `reverses`).
pub async fn reverse(conn: &mut PgConnection, tx_id: i64, reason: &str) -> Result<i64> {
    let legs: Vec<(i64, i64)> =
        sqlx::query_as("SELECT account_id, amount FROM ledger_entries WHERE transaction_id = $1 ORDER BY id")
            .bind(tx_id)
            .fetch_all(&mut *conn)
            .await?;
    if legs.is_empty() {
        return Err(ServiceError::NotFound {
            what: "ledger transaction",
        });
    }
    let already: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM ledger_transactions WHERE reverses = $1)")
        .bind(tx_id)
        .fetch_one(&mut *conn)
        .await?;
    if already {
        return Err(ServiceError::conflict(format!(
            "transaction {tx_id} is already reversed"
        )));
    }
    let mirror: Vec<Leg> = legs
        .iter()
        .map(|&(account, amount)| Leg {
            account,
            amount: -amount,
        })
        .collect();
    post_linked(
        conn,
        "reversal",
        Some(&format!("ledger_transaction:{tx_id}: {reason}")),
        &mirror,
        None,
        Some(tx_id),
    )
    .await
}

/// An account's balance on its normal side, in minor units.
pub async fn balance(pool: &PgPool, account: i64) -> Result<i64> {
    sqlx::query_scalar("SELECT balance FROM ledger_accounts WHERE id = $1")
        .bind(account)
        .fetch_optional(pool)
        .await?
        .ok_or(ServiceError::NotFound { what: "account" })
}

/// The sum of every entry per currency: zero in a sound ledger.
pub async fn trial_balance(pool: &PgPool) -> Result<BTreeMap<String, i128>> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT currency, sum(amount)::text FROM ledger_entries GROUP BY currency ORDER BY currency")
            .fetch_all(pool)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(c, s)| (c, s.parse::<i128>().unwrap_or(i128::MAX)))
        .collect())
}

/// Accounts whose stored balance disagrees with their entries: empty in a sound ledger.
pub async fn balance_mismatches(pool: &PgPool) -> Result<Vec<i64>> {
    Ok(sqlx::query_scalar(
        "SELECT a.id FROM ledger_accounts a
         LEFT JOIN (SELECT account_id, sum(amount) AS s FROM ledger_entries GROUP BY account_id) e
                ON e.account_id = a.id
         WHERE a.balance <> a.normal_side * coalesce(e.s, 0)
         ORDER BY a.id",
    )
    .fetch_all(pool)
    .await?)
}

/// Splits `total` in proportion to `weights` so the parts sum to exactly `total`
/// (largest remainder: the rounding remainders go to the parts that lost the most).
pub fn split(total: i64, weights: &[u64]) -> Vec<i64> {
    let sum: u128 = weights.iter().map(|&w| u128::from(w)).sum();
    if weights.is_empty() {
        return Vec::new();
    }
    if sum == 0 {
        let mut v = vec![0; weights.len()];
        v[0] = total;
        return v;
    }
    let sign: i128 = if total < 0 { -1 } else { 1 };
    let abs = i128::from(total).abs();
    let mut parts: Vec<i128> = Vec::with_capacity(weights.len());
    let mut rems: Vec<(u128, usize)> = Vec::with_capacity(weights.len());
    for (i, &w) in weights.iter().enumerate() {
        let num = abs as u128 * u128::from(w);
        parts.push((num / sum) as i128);
        rems.push((num % sum, i));
    }
    let mut left = abs - parts.iter().sum::<i128>();
    // Larger remainder first; ties to the earlier part, deterministically.
    rems.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for &(_, i) in &rems {
        if left == 0 {
            break;
        }
        parts[i] += 1;
        left -= 1;
    }
    parts.into_iter().map(|p| (p * sign) as i64).collect()
}

/// `amount * bp / 10000`, rounded half away from zero, in i128 so nothing overflows.
pub fn basis_points(amount: i64, bp: i64) -> i64 {
    let n = i128::from(amount) * i128::from(bp);
    let q = (n.abs() + 5_000) / 10_000;
    (if n < 0 { -q } else { q }) as i64
}
