//! Bookings against a real PostgreSQL: no double booking under real concurrency, the
//! transition table, and the per-customer hold cap.

mod common;

use chrono::{Duration, DurationRound, Utc};
use services::ServiceError;
use services::bookings::{self, NewBooking, STATUSES};

fn new(partner: i64, customer: Option<i64>, hours_ahead: i64) -> NewBooking {
    let start = Utc::now().duration_trunc(Duration::hours(1)).unwrap() + Duration::hours(hours_ahead);
    NewBooking {
        tenant_id: None,
        customer_id: customer,
        vehicle_id: None,
        partner_id: partner,
        service: "oil_change".into(),
        start,
    }
}

async fn race(pool: &sqlx::PgPool, partner: i64, n: usize) -> (usize, usize) {
    let mut tasks = Vec::new();
    for c in 0..n {
        let pool = pool.clone();
        let b = new(partner, Some(c as i64 + 1), 24);
        tasks.push(tokio::spawn(async move { bookings::create(&pool, &b, "test").await }));
    }
    let (mut ok, mut conflict) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(ServiceError::Conflict(_)) => conflict += 1,
            Err(e) => panic!("unexpected: {e:?}"),
        }
    }
    (ok, conflict)
}

#[tokio::test]
async fn fifty_parallel_requests_for_one_slot_book_it_once() {
    let db = common::db().await;
    let one = common::partner(&db.pool, 1, "EUR").await;
    assert_eq!(race(&db.pool, one, 50).await, (1, 49));
    let three = common::partner(&db.pool, 3, "EUR").await;
    assert_eq!(race(&db.pool, three, 50).await, (3, 47), "one booking per bay");
    // Overlap is impossible in the database itself, whatever the application does.
    let err = sqlx::query(
        "INSERT INTO bookings (partner_id, service, bay, slot, price, currency)
         SELECT partner_id, service, bay, slot, price, currency FROM bookings WHERE partner_id = $1 LIMIT 1",
    )
    .bind(one)
    .execute(&db.pool)
    .await
    .unwrap_err();
    assert!(err.to_string().contains("bookings_no_overlap"), "{err}");
}

#[tokio::test]
async fn cancelled_slots_free_up_and_adjacent_slots_do_not_collide() {
    let db = common::db().await;
    let p = common::partner(&db.pool, 1, "EUR").await;
    let a = bookings::create(&db.pool, &new(p, Some(1), 10), "t").await.unwrap();
    // The next hour starts where this one ends: half-open ranges do not overlap.
    bookings::create(&db.pool, &new(p, Some(2), 11), "t").await.unwrap();
    assert!(matches!(
        bookings::create(&db.pool, &new(p, Some(3), 10), "t").await,
        Err(ServiceError::Conflict(_))
    ));
    bookings::transition(&db.pool, a.id, "cancelled", "t").await.unwrap();
    bookings::create(&db.pool, &new(p, Some(3), 10), "t").await.unwrap();
}

#[tokio::test]
async fn transitions_follow_the_table_and_are_audited() {
    let db = common::db().await;
    let p = common::partner(&db.pool, 100, "EUR").await;
    for from in STATUSES {
        for to in STATUSES {
            let b = bookings::create(&db.pool, &new(p, None, 5), "t").await.unwrap();
            // Walk the booking to `from` along allowed steps.
            let path: &[&str] = match from {
                "requested" => &[],
                "confirmed" => &["confirmed"],
                "in_progress" => &["confirmed", "in_progress"],
                "completed" => &["confirmed", "in_progress", "completed"],
                "cancelled" => &["cancelled"],
                "no_show" => &["confirmed", "no_show"],
                _ => unreachable!(),
            };
            for s in path {
                bookings::transition(&db.pool, b.id, s, "t").await.unwrap();
            }
            let r = bookings::transition(&db.pool, b.id, to, "t").await;
            assert_eq!(r.is_ok(), bookings::allowed(from, to), "{from} -> {to}: {r:?}");
            if r.is_err() {
                assert!(matches!(r, Err(ServiceError::Conflict(_))));
                assert_eq!(
                    bookings::get(&db.pool, b.id).await.unwrap().status,
                    from,
                    "unchanged on refusal"
                );
            }
            let audited: i64 = sqlx::query_scalar("SELECT count(*) FROM booking_audit WHERE booking_id = $1")
                .bind(b.id)
                .fetch_one(&db.pool)
                .await
                .unwrap();
            assert_eq!(audited as usize, 1 + path.len() + usize::from(r.is_ok()));
        }
    }
    assert!(matches!(
        bookings::transition(&db.pool, 999_999, "confirmed", "t").await,
        Err(ServiceError::NotFound { .. })
    ));
}

#[tokio::test]
async fn of_two_racing_confirms_one_wins() {
    let db = common::db().await;
    let p = common::partner(&db.pool, 1, "EUR").await;
    let b = bookings::create(&db.pool, &new(p, None, 3), "t").await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let pool = db.pool.clone();
        tasks.push(tokio::spawn(async move {
            bookings::transition(&pool, b.id, "confirmed", "t").await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += usize::from(t.await.unwrap().is_ok());
    }
    assert_eq!(ok, 1);
}

#[tokio::test]
async fn one_customer_cannot_hold_every_slot() {
    let db = common::db().await;
    let p = common::partner(&db.pool, 1, "EUR").await;
    let mut tasks = Vec::new();
    for h in 0..12 {
        let pool = db.pool.clone();
        let b = new(p, Some(42), 2 + h);
        tasks.push(tokio::spawn(async move { bookings::create(&pool, &b, "t").await }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += usize::from(t.await.unwrap().is_ok());
    }
    assert_eq!(ok as i64, bookings::MAX_REQUESTED_PER_CUSTOMER);
    // Unknown partner, unknown service, the past: refused.
    assert!(matches!(
        bookings::create(&db.pool, &new(9_999, None, 2), "t").await,
        Err(ServiceError::NotFound { .. })
    ));
    let mut s = new(p, None, 30);
    s.service = "teleportation".into();
    assert!(matches!(
        bookings::create(&db.pool, &s, "t").await,
        Err(ServiceError::Invalid(_))
    ));
    assert!(matches!(
        bookings::create(&db.pool, &new(p, None, -3), "t").await,
        Err(ServiceError::Invalid(_))
    ));
}
