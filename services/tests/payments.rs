//! Payments and the ledger against a real PostgreSQL: the invariants of SERVICES.md
//! (balanced ledger, refunds ≤ captured, no overdraft, idempotency, crash-safe gateway
//! calls) under sequential, random and truly concurrent operations.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use services::ServiceError;
use services::gateway::{Gateway, GatewayError, GatewayFuture, SandboxGateway};
use services::ledger::{self, AccountKind, Owner};
use services::payments::{self, Method, NewIntent, Part, Payer};

fn intent(tenant: i64, partner: Option<i64>, amount: i64) -> NewIntent {
    NewIntent {
        tenant_id: Some(tenant),
        currency: "EUR".into(),
        amount,
        reference: None,
        partner_id: partner,
        tax_region: None,
        parts: vec![],
    }
}

async fn captured(pool: &sqlx::PgPool, gw: &SandboxGateway, new: &NewIntent) -> payments::Intent {
    let i = payments::create_intent(pool, new, None).await.unwrap();
    payments::authorize(pool, gw, i.id, "tok_visa").await.unwrap();
    payments::capture(pool, gw, i.id, None).await.unwrap()
}

#[tokio::test]
async fn capture_settle_payout_posts_commission_tax_and_payable() {
    let db = common::db().await;
    let pool = &db.pool;
    let gw = SandboxGateway::new();
    let t = common::tenant(pool).await;
    let p = common::partner(pool, 1, "EUR").await;
    sqlx::query("INSERT INTO tax_rates (region, valid_from, rate_bp) VALUES ('FR', '2020-01-01', 2000)")
        .execute(pool)
        .await
        .unwrap();
    let mut new = intent(t, Some(p), 12_000); // 100.00 net + 20.00 VAT
    new.tax_region = Some("FR".into());
    let i = captured(pool, &gw, &new).await;
    assert_eq!((i.status.as_str(), i.captured), ("captured", 12_000));

    let mut conn = pool.acquire().await.unwrap();
    let tax = ledger::account(&mut conn, AccountKind::TaxPayable, Owner::Platform, "EUR")
        .await
        .unwrap();
    let payable = ledger::account(&mut conn, AccountKind::PartnerPayable, Owner::Partner(p), "EUR")
        .await
        .unwrap();
    let revenue = ledger::account(&mut conn, AccountKind::PlatformRevenue, Owner::Platform, "EUR")
        .await
        .unwrap();
    let clearing = ledger::account(&mut conn, AccountKind::GatewayClearing, Owner::Platform, "EUR")
        .await
        .unwrap();
    drop(conn);
    assert_eq!(ledger::balance(pool, tax).await.unwrap(), 2_000);
    assert_eq!(ledger::balance(pool, payable).await.unwrap(), 10_000);
    assert_eq!(ledger::balance(pool, clearing).await.unwrap(), 12_000);

    assert_eq!(payments::settle(pool, i.id).await.unwrap(), 1_000, "10 % of the net");
    assert!(
        matches!(payments::settle(pool, i.id).await, Err(ServiceError::Conflict(_))),
        "settles once"
    );
    assert_eq!(ledger::balance(pool, revenue).await.unwrap(), 1_000);
    assert_eq!(payments::payout(pool, p, "EUR").await.unwrap(), 9_000);
    assert_eq!(ledger::balance(pool, payable).await.unwrap(), 0);
    assert_eq!(
        payments::payout(pool, p, "EUR").await.unwrap(),
        0,
        "nothing left to pay"
    );
    common::assert_ledger_sound(pool).await;
}

#[tokio::test]
async fn refunds_never_exceed_the_capture_even_in_parallel() {
    let db = common::db().await;
    let pool = db.pool.clone();
    let gw = Arc::new(SandboxGateway::new());
    let t = common::tenant(&pool).await;
    let p = common::partner(&pool, 1, "EUR").await;
    let i = captured(&pool, &gw, &intent(t, Some(p), 10_000)).await;

    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (pool, gw) = (pool.clone(), gw.clone());
        tasks.push(tokio::spawn(async move {
            payments::refund(&pool, &*gw, i.id, 1_000, Some("race")).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(r) => {
                assert_eq!(r.status, "succeeded");
                ok += 1;
            }
            Err(ServiceError::Invalid(_)) => {}
            Err(e) => panic!("unexpected refusal: {e:?}"),
        }
    }
    assert_eq!(ok, 10, "exactly the captured amount is refundable");
    let after = payments::get_intent(&pool, i.id).await.unwrap();
    assert_eq!((after.refunded, after.status.as_str()), (10_000, "refunded"));
    assert_eq!(gw.performed("refund:"), 10, "the gateway refunded ten times, no more");
    assert!(matches!(
        payments::refund(&pool, &*gw, i.id, 1, None).await,
        Err(ServiceError::Conflict(_))
    ));
    common::assert_ledger_sound(&pool).await;
}

#[tokio::test]
async fn parallel_wallet_debits_never_overdraw() {
    let db = common::db().await;
    let pool = db.pool.clone();
    let gw = SandboxGateway::new();
    let user = Payer::User(7);
    assert_eq!(
        payments::top_up(&pool, &gw, user, "EUR", 1_000, "tok_visa", "k1")
            .await
            .unwrap(),
        1_000
    );
    // The same key again is the same top-up.
    assert_eq!(
        payments::top_up(&pool, &gw, user, "EUR", 1_000, "tok_visa", "k1")
            .await
            .unwrap(),
        1_000
    );
    let mut tasks = Vec::new();
    for n in 0..25 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            payments::wallet_debit(&pool, user, "EUR", 150, &format!("fee:{n}")).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(ServiceError::InsufficientFunds) => {}
            Err(e) => panic!("unexpected refusal: {e:?}"),
        }
    }
    assert_eq!(ok, 1_000 / 150, "exactly ⌊B/a⌋ debits succeed");
    let mut conn = pool.acquire().await.unwrap();
    let wallet = ledger::account(&mut conn, AccountKind::CustomerWallet, Owner::User(7), "EUR")
        .await
        .unwrap();
    drop(conn);
    assert_eq!(ledger::balance(&pool, wallet).await.unwrap(), 1_000 - 6 * 150);
    common::assert_ledger_sound(&pool).await;
}

#[tokio::test]
async fn split_payment_across_card_and_wallet() {
    let db = common::db().await;
    let pool = &db.pool;
    let gw = SandboxGateway::new();
    let t = common::tenant(pool).await;
    let p = common::partner(pool, 1, "EUR").await;
    payments::top_up(pool, &gw, Payer::User(1), "EUR", 3_000, "tok_visa", "w")
        .await
        .unwrap();
    let mut new = intent(t, Some(p), 10_001);
    new.parts = vec![
        Part {
            method: Method::Wallet,
            payer: Payer::User(1),
            amount: 3_000,
        },
        Part {
            method: Method::Card,
            payer: Payer::Tenant(t),
            amount: 7_001,
        },
    ];
    let i = captured(pool, &gw, &new).await;
    assert_eq!(i.captured, 10_001);
    let mut conn = pool.acquire().await.unwrap();
    let wallet = ledger::account(&mut conn, AccountKind::CustomerWallet, Owner::User(1), "EUR")
        .await
        .unwrap();
    drop(conn);
    assert_eq!(ledger::balance(pool, wallet).await.unwrap(), 0);
    // A partial refund splits back exactly in proportion, to the cent.
    payments::refund(pool, &gw, i.id, 5_000, None).await.unwrap();
    let back = ledger::balance(pool, wallet).await.unwrap();
    assert!((1_499..=1_500).contains(&back), "wallet got its share back: {back}");
    common::assert_ledger_sound(pool).await;

    // Parts that do not sum to the amount are refused, and nothing is written.
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM payment_intents")
        .fetch_one(pool)
        .await
        .unwrap();
    let mut bad = intent(t, Some(p), 100);
    bad.parts = vec![Part {
        method: Method::Card,
        payer: Payer::Tenant(t),
        amount: 99,
    }];
    assert!(matches!(
        payments::create_intent(pool, &bad, None).await,
        Err(ServiceError::Invalid(_))
    ));
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM payment_intents")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(before, after);
}

#[tokio::test]
async fn bad_requests_are_refused_cleanly() {
    let db = common::db().await;
    let pool = &db.pool;
    let gw = SandboxGateway::new();
    let t = common::tenant(pool).await;
    let p = common::partner(pool, 1, "EUR").await;
    let mut usd = intent(t, Some(p), 100);
    usd.currency = "USD".into();
    assert!(
        matches!(payments::create_intent(pool, &usd, None).await, Err(ServiceError::Invalid(m)) if m.contains("currency mismatch"))
    );
    let mut xxx = intent(t, None, 100);
    xxx.currency = "XXX".into();
    assert!(matches!(
        payments::create_intent(pool, &xxx, None).await,
        Err(ServiceError::Invalid(_))
    ));
    assert!(matches!(
        payments::create_intent(pool, &intent(t, None, 0), None).await,
        Err(ServiceError::Invalid(_))
    ));
    assert!(matches!(
        payments::create_intent(pool, &intent(t, Some(999), 10), None).await,
        Err(ServiceError::NotFound { .. })
    ));

    let i = payments::create_intent(pool, &intent(t, Some(p), 500), None)
        .await
        .unwrap();
    assert!(matches!(
        payments::authorize(pool, &gw, i.id, "tok_decline").await,
        Err(ServiceError::Declined(_))
    ));
    assert_eq!(payments::get_intent(pool, i.id).await.unwrap().status, "failed");
    assert!(matches!(
        payments::capture(pool, &gw, i.id, None).await,
        Err(ServiceError::Conflict(_))
    ));

    let j = payments::create_intent(pool, &intent(t, Some(p), 500), None)
        .await
        .unwrap();
    payments::authorize(pool, &gw, j.id, "tok_visa").await.unwrap();
    assert!(matches!(
        payments::capture(pool, &gw, j.id, Some(501)).await,
        Err(ServiceError::Invalid(_))
    ));
    let v = payments::void(pool, &gw, j.id).await.unwrap();
    assert_eq!(v.status, "voided");
    assert!(matches!(
        payments::refund(pool, &gw, j.id, 1, None).await,
        Err(ServiceError::Conflict(_))
    ));
    common::assert_ledger_sound(pool).await;
}

#[tokio::test]
async fn idempotency_keys_replay_and_refuse_mismatches() {
    let db = common::db().await;
    let pool = db.pool.clone();
    let t = common::tenant(&pool).await;
    let new = intent(t, None, 4_200);
    let a = payments::create_intent(&pool, &new, Some("key-1")).await.unwrap();
    let b = payments::create_intent(&pool, &new, Some("key-1")).await.unwrap();
    assert_eq!(a, b, "same key, same request: the stored response");
    let other = intent(t, None, 4_201);
    assert!(matches!(
        payments::create_intent(&pool, &other, Some("key-1")).await,
        Err(ServiceError::IdempotencyMismatch)
    ));
    // Errors are replayed too.
    let bad = intent(t, None, -1);
    assert!(payments::create_intent(&pool, &bad, Some("key-2")).await.is_err());
    assert!(payments::create_intent(&pool, &bad, Some("key-2")).await.is_err());

    // Concurrent requests with one key run once.
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (pool, new) = (pool.clone(), intent(t, None, 777));
        tasks.push(tokio::spawn(async move {
            payments::create_intent(&pool, &new, Some("key-3")).await
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.unwrap().unwrap().id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one intent for one key: {ids:?}");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM payment_intents WHERE amount = 777")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 1);
}

/// A gateway that is unreachable for its first `fail` calls: what a crash or an outage
/// in the middle of a capture or refund looks like from our side.
#[derive(Debug)]
struct Flaky {
    inner: SandboxGateway,
    fail: AtomicUsize,
}

impl Flaky {
    fn down(&self) -> bool {
        self.fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

impl Gateway for Flaky {
    fn name(&self) -> &'static str {
        "flaky"
    }
    fn authorize<'a>(&'a self, key: &'a str, m: &'a str, c: &'a str, a: i64) -> GatewayFuture<'a, String> {
        self.inner.authorize(key, m, c, a)
    }
    fn capture<'a>(&'a self, key: &'a str, r: &'a str, a: i64) -> GatewayFuture<'a, ()> {
        if self.down() {
            return Box::pin(async { Err(GatewayError::Unavailable("timeout".into())) });
        }
        self.inner.capture(key, r, a)
    }
    fn void<'a>(&'a self, key: &'a str, r: &'a str) -> GatewayFuture<'a, ()> {
        self.inner.void(key, r)
    }
    fn refund<'a>(&'a self, key: &'a str, r: &'a str, a: i64) -> GatewayFuture<'a, ()> {
        if self.down() {
            return Box::pin(async { Err(GatewayError::Unavailable("timeout".into())) });
        }
        self.inner.refund(key, r, a)
    }
}

#[tokio::test]
async fn interrupted_gateway_calls_resume_without_charging_twice() {
    let db = common::db().await;
    let pool = &db.pool;
    let gw = Flaky {
        inner: SandboxGateway::new(),
        fail: AtomicUsize::new(0),
    };
    let t = common::tenant(pool).await;
    let p = common::partner(pool, 1, "EUR").await;
    let i = payments::create_intent(pool, &intent(t, Some(p), 5_000), None)
        .await
        .unwrap();
    payments::authorize(pool, &gw, i.id, "tok_visa").await.unwrap();

    gw.fail.store(1, Ordering::SeqCst);
    assert!(matches!(
        payments::capture(pool, &gw, i.id, Some(4_000)).await,
        Err(ServiceError::GatewayUnavailable(_))
    ));
    let mid = payments::get_intent(pool, i.id).await.unwrap();
    assert_eq!(
        (mid.gateway_step.as_str(), mid.pending_amount),
        ("capturing", Some(4_000)),
        "the step was recorded first"
    );
    // A retry asking for another amount still completes the recorded capture.
    let done = payments::capture(pool, &gw, i.id, Some(1)).await.unwrap();
    assert_eq!(done.captured, 4_000);

    gw.fail.store(1, Ordering::SeqCst);
    assert!(payments::refund(pool, &gw, i.id, 1_500, None).await.is_err());
    // The reservation holds while the outcome is unknown: no second refund can take it.
    assert!(matches!(
        payments::refund(pool, &gw, i.id, 2_600, None).await,
        Err(ServiceError::Invalid(_))
    ));
    assert_eq!(payments::resume_pending(pool, &gw).await.unwrap(), 1);
    let after = payments::get_intent(pool, i.id).await.unwrap();
    assert_eq!((after.refunded, after.status.as_str()), (1_500, "partially_refunded"));
    assert_eq!(gw.inner.performed("capture:"), 1);
    assert_eq!(gw.inner.performed("refund:"), 1);
    common::assert_ledger_sound(pool).await;
}

#[tokio::test]
async fn postings_are_append_only_and_reversible_once() {
    let db = common::db().await;
    let pool = &db.pool;
    let gw = SandboxGateway::new();
    payments::top_up(pool, &gw, Payer::User(3), "EUR", 500, "tok_visa", "r")
        .await
        .unwrap();
    let tx: i64 = sqlx::query_scalar("SELECT id FROM ledger_transactions WHERE kind = 'top_up'")
        .fetch_one(pool)
        .await
        .unwrap();
    assert!(
        sqlx::query("UPDATE ledger_entries SET amount = amount + 1")
            .execute(pool)
            .await
            .is_err()
    );
    assert!(sqlx::query("DELETE FROM ledger_entries").execute(pool).await.is_err());
    assert!(
        sqlx::query("DELETE FROM ledger_transactions")
            .execute(pool)
            .await
            .is_err()
    );
    let mut conn = pool.acquire().await.unwrap();
    ledger::reverse(&mut conn, tx, "mistake").await.unwrap();
    assert!(matches!(
        ledger::reverse(&mut conn, tx, "again").await,
        Err(ServiceError::Conflict(_))
    ));
    // An unbalanced posting is refused before and by the database.
    let a = ledger::account(&mut conn, AccountKind::PlatformRevenue, Owner::Platform, "EUR")
        .await
        .unwrap();
    let b = ledger::account(&mut conn, AccountKind::GatewayClearing, Owner::Platform, "EUR")
        .await
        .unwrap();
    let bad = [ledger::Leg::debit(a, 10), ledger::Leg::credit(b, 9)];
    assert!(matches!(
        ledger::post(&mut conn, "x", None, &bad, None).await,
        Err(ServiceError::Invalid(_))
    ));
    drop(conn);
    common::assert_ledger_sound(pool).await;
}
