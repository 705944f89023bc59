//! The ledger invariant under random operation sequences (SERVICES.md, ledger 1–6):
//! after every operation, every currency sums to zero, stored balances match entries, no
//! wallet is overdrawn, and no payment refunded more than it captured. proptest prints
//! the failing sequence and persists its seed.

mod common;

use proptest::prelude::*;
use services::gateway::SandboxGateway;
use services::payments::{self, NewIntent, Payer};

#[derive(Debug, Clone)]
enum Op {
    TopUp {
        user: i64,
        amount: i64,
        jpy: bool,
    },
    Debit {
        user: i64,
        amount: i64,
        jpy: bool,
    },
    Pay {
        amount: i64,
        partner: bool,
        capture_part: u8,
    },
    Refund {
        which: usize,
        amount: i64,
    },
    Settle {
        which: usize,
    },
    Payout {
        jpy: bool,
    },
    Reverse {
        which: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..3i64, 1..5_000i64, any::<bool>()).prop_map(|(user, amount, jpy)| Op::TopUp { user, amount, jpy }),
        (0..3i64, 1..3_000i64, any::<bool>()).prop_map(|(user, amount, jpy)| Op::Debit { user, amount, jpy }),
        (1..20_000i64, any::<bool>(), 1..=100u8).prop_map(|(amount, partner, capture_part)| Op::Pay {
            amount,
            partner,
            capture_part
        }),
        (0..8usize, 1..10_000i64).prop_map(|(which, amount)| Op::Refund { which, amount }),
        (0..8usize).prop_map(|which| Op::Settle { which }),
        any::<bool>().prop_map(|jpy| Op::Payout { jpy }),
        (0..16usize).prop_map(|which| Op::Reverse { which }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn ledger_balances_after_every_operation(ops in proptest::collection::vec(op(), 1..25)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(ops));
    }
}

async fn run(ops: Vec<Op>) {
    let db = common::db().await;
    let pool = &db.pool;
    let gw = SandboxGateway::new();
    let t = common::tenant(pool).await;
    let eur = common::partner(pool, 1, "EUR").await;
    let jpy = common::partner(pool, 1, "JPY").await;
    let mut intents: Vec<i64> = Vec::new();
    for (n, op) in ops.into_iter().enumerate() {
        let currency = |jpy: bool| if jpy { "JPY" } else { "EUR" };
        // Business refusals (insufficient funds, over-refunds, double settlement) are
        // expected outcomes of random sequences; only the invariants must hold.
        let _ = match op {
            Op::TopUp { user, amount, jpy } => payments::top_up(
                pool,
                &gw,
                Payer::User(user),
                currency(jpy),
                amount,
                "tok",
                &format!("t{n}"),
            )
            .await
            .map(drop),
            Op::Debit { user, amount, jpy } => {
                payments::wallet_debit(pool, Payer::User(user), currency(jpy), amount, &format!("d{n}"))
                    .await
                    .map(drop)
            }
            Op::Pay {
                amount,
                partner,
                capture_part,
            } => {
                let new = NewIntent {
                    tenant_id: Some(t),
                    currency: if partner { "EUR".into() } else { "JPY".into() },
                    amount,
                    reference: None,
                    partner_id: Some(if partner { eur } else { jpy }),
                    tax_region: None,
                    parts: vec![],
                };
                let i = payments::create_intent(pool, &new, None).await.unwrap();
                payments::authorize(pool, &gw, i.id, "tok").await.unwrap();
                let amt = (amount * i64::from(capture_part) / 100).max(1);
                payments::capture(pool, &gw, i.id, Some(amt)).await.unwrap();
                intents.push(i.id);
                Ok(())
            }
            Op::Refund { which, amount } if !intents.is_empty() => {
                payments::refund(pool, &gw, intents[which % intents.len()], amount, None)
                    .await
                    .map(drop)
            }
            Op::Settle { which } if !intents.is_empty() => {
                payments::settle(pool, intents[which % intents.len()]).await.map(drop)
            }
            Op::Payout { jpy: j } => payments::payout(pool, if j { jpy } else { eur }, currency(j))
                .await
                .map(drop),
            Op::Reverse { which } => {
                let txs: Vec<i64> = sqlx::query_scalar("SELECT id FROM ledger_transactions ORDER BY id")
                    .fetch_all(pool)
                    .await
                    .unwrap();
                if txs.is_empty() {
                    Ok(())
                } else {
                    let mut tx = pool.begin().await.unwrap();
                    match services::ledger::reverse(&mut tx, txs[which % txs.len()], "prop").await {
                        Ok(_) => tx.commit().await.map_err(Into::into).map(drop),
                        Err(e) => Err(e),
                    }
                }
            }
            _ => Ok(()),
        };
        common::assert_ledger_sound(pool).await;
    }
}

proptest! {
    #[test]
    fn split_sums_exactly(total in -1_000_000_000i64..1_000_000_000, weights in proptest::collection::vec(0u64..1_000_000, 1..8)) {
        let parts = services::ledger::split(total, &weights);
        prop_assert_eq!(parts.len(), weights.len());
        prop_assert_eq!(parts.iter().map(|&p| i128::from(p)).sum::<i128>(), i128::from(total));
    }
}
