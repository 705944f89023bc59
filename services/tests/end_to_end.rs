//! The end-to-end path on a real PostgreSQL: a vehicle raises a DTC → a
//! recommendation with the matched shop → booking → completion → payment captured →
//! commission and partner payout in the ledger → audit entries present.

mod common;

use chrono::{Duration, Utc};
use services::gateway::SandboxGateway;
use services::ledger::{self, AccountKind, Owner};
use services::matching::{self, MatchRequest};
use services::partners::{self, NewPartner};
use services::{ServiceError, bookings, payments, recommendations};

fn every_day(open: &str, close: &str) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for d in ["mon", "tue", "wed", "thu", "fri", "sat", "sun"] {
        m.insert(d.into(), serde_json::json!([[open, close]]));
    }
    serde_json::Value::Object(m)
}

async fn onboard(pool: &sqlx::PgPool, name: &str, lat: f64, lon: f64, price: i64, activate: bool) -> i64 {
    let p = partners::create(
        pool,
        &NewPartner {
            name: name.into(),
            kind: "repair_center".into(),
            lat,
            lon,
            capacity: 2,
            time_zone: "Europe/Paris".into(),
            opening_hours: every_day("00:00", "23:59"),
            currency: "EUR".into(),
            commission_bp: 1500,
            tax_region: None,
        },
        "admin@test",
    )
    .await
    .unwrap();
    let steps: &[&str] = if activate {
        &["documents_submitted", "approved", "active"]
    } else {
        &["documents_submitted", "approved"]
    };
    for s in steps {
        partners::transition(pool, p.id, s, "admin@test", None).await.unwrap();
    }
    partners::set_service(pool, p.id, "diagnostics", price, 60)
        .await
        .unwrap();
    p.id
}

#[tokio::test]
async fn dtc_to_recommendation_to_booking_to_payment_to_payout() {
    let db = common::db().await;
    let pool = &db.pool;
    let gw = SandboxGateway::new();
    let tenant = common::tenant(pool).await;
    let vehicle: i64 = sqlx::query_scalar("INSERT INTO vehicles (tenant_id, name) VALUES ($1, 'Van 7') RETURNING id")
        .bind(tenant)
        .fetch_one(pool)
        .await
        .unwrap();
    let device: i64 = sqlx::query_scalar(
        "INSERT INTO devices (tenant_id, identifier, protocol, vehicle_id) VALUES ($1, '356307042441013', 'teltonika', $2) RETURNING id",
    )
    .bind(tenant)
    .bind(vehicle)
    .fetch_one(pool)
    .await
    .unwrap();
    let now = Utc::now();
    sqlx::query(
        "INSERT INTO device_last_position (device_id, fix_time, server_time, lat, lon, valid) VALUES ($1, $2, $2, 48.8566, 2.3522, true)",
    )
    .bind(device)
    .bind(now)
    .execute(pool)
    .await
    .unwrap();

    let near = onboard(pool, "Near garage", 48.86, 2.36, 6_000, true).await;
    let _far = onboard(pool, "Far garage", 48.95, 2.60, 5_000, true).await;
    let _pending = onboard(pool, "Not yet active", 48.8567, 2.3523, 1_000, false).await;

    sqlx::query("INSERT INTO events (device_id, time, kind, attributes) VALUES ($1, $2, 'dtc_raised', $3)")
        .bind(device)
        .bind(now)
        .bind(serde_json::json!({"code": "P0301", "description": "Cylinder 1 misfire detected"}))
        .execute(pool)
        .await
        .unwrap();
    assert_eq!(recommendations::sweep(pool, now - Duration::hours(1)).await.unwrap(), 1);
    assert_eq!(
        recommendations::sweep(pool, now - Duration::hours(1)).await.unwrap(),
        0,
        "one per event"
    );
    let recs = recommendations::list(pool, tenant).await.unwrap();
    assert_eq!(recs.len(), 1);
    let rec = &recs[0];
    assert_eq!(rec.service, "diagnostics");
    assert!(rec.reason.contains("P0301"), "{}", rec.reason);
    let matches: Vec<matching::Match> = serde_json::from_value(rec.matches.clone()).unwrap();
    assert!(!matches.is_empty());
    assert_eq!(matches[0].partner_id, near, "nearest active shop first: {matches:?}");
    assert!(
        matches.iter().all(|m| m.name != "Not yet active"),
        "only active partners are offered"
    );

    // Another tenant cannot accept it.
    let other = common::tenant(pool).await;
    assert!(matches!(
        recommendations::accept(pool, other, rec.id, near, matches[0].earliest_slot, None, "x").await,
        Err(ServiceError::NotFound { .. })
    ));
    let booking = recommendations::accept(
        pool,
        tenant,
        rec.id,
        near,
        matches[0].earliest_slot,
        Some(5),
        "manager@test",
    )
    .await
    .unwrap();
    assert!(matches!(
        recommendations::accept(
            pool,
            tenant,
            rec.id,
            near,
            matches[0].earliest_slot,
            Some(5),
            "manager@test"
        )
        .await,
        Err(ServiceError::Conflict(_))
    ));
    assert_eq!(
        (booking.vehicle_id, booking.price),
        (Some(vehicle), 6_000),
        "price snapshot from the catalogue"
    );
    for s in ["confirmed", "in_progress", "completed"] {
        bookings::transition(pool, booking.id, s, "partner@test").await.unwrap();
    }

    let intent = payments::create_intent(
        pool,
        &payments::NewIntent {
            tenant_id: Some(tenant),
            currency: booking.currency.clone(),
            amount: booking.price,
            reference: Some(format!("booking:{}", booking.id)),
            partner_id: Some(near),
            tax_region: None,
            parts: vec![],
        },
        Some("booking-pay-1"),
    )
    .await
    .unwrap();
    payments::authorize(pool, &gw, intent.id, "tok_visa").await.unwrap();
    let paid = payments::capture(pool, &gw, intent.id, None).await.unwrap();
    assert_eq!(paid.status, "captured");
    assert_eq!(payments::settle(pool, intent.id).await.unwrap(), 900, "15 % commission");
    assert_eq!(payments::payout(pool, near, "EUR").await.unwrap(), 5_100);

    let mut conn = pool.acquire().await.unwrap();
    let revenue = ledger::account(&mut conn, AccountKind::PlatformRevenue, Owner::Platform, "EUR")
        .await
        .unwrap();
    drop(conn);
    assert_eq!(ledger::balance(pool, revenue).await.unwrap(), 900);
    common::assert_ledger_sound(pool).await;

    partners::rate(pool, booking.id, 5, Some("quick")).await.unwrap();
    assert!(matches!(
        partners::rate(pool, booking.id, 1, None).await,
        Err(ServiceError::Conflict(_))
    ));

    let booking_audit: i64 = sqlx::query_scalar("SELECT count(*) FROM booking_audit WHERE booking_id = $1")
        .bind(booking.id)
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(booking_audit, 4, "requested, confirmed, in_progress, completed");
    let partner_audit: i64 = sqlx::query_scalar("SELECT count(*) FROM partner_audit WHERE partner_id = $1")
        .bind(near)
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(partner_audit, 4, "applied, documents_submitted, approved, active");
}

#[tokio::test]
async fn matching_respects_opening_hours_time_zone_and_capacity() {
    let db = common::db().await;
    let pool = &db.pool;
    // Open 09:00–10:00 Tokyo time only, one bay.
    let p = partners::create(
        pool,
        &NewPartner {
            name: "Tokyo".into(),
            kind: "both".into(),
            lat: 35.68,
            lon: 139.76,
            capacity: 1,
            time_zone: "Asia/Tokyo".into(),
            opening_hours: every_day("09:00", "10:00"),
            currency: "JPY".into(),
            commission_bp: 1000,
            tax_region: None,
        },
        "a",
    )
    .await
    .unwrap();
    for s in ["documents_submitted", "approved", "active"] {
        partners::transition(pool, p.id, s, "a", None).await.unwrap();
    }
    partners::set_service(pool, p.id, "diagnostics", 5_000, 60)
        .await
        .unwrap();
    let from = Utc::now() + Duration::days(1);
    let req = MatchRequest {
        lat: 35.6,
        lon: 139.7,
        service: "diagnostics".into(),
        from,
        to: from + Duration::days(3),
        limit: 5,
        max_distance_km: 50.0,
    };
    let m = matching::find_shops(pool, &req).await.unwrap();
    assert_eq!(m.len(), 1);
    let slot = m[0].earliest_slot;
    let local = slot.with_timezone(&chrono_tz::Asia::Tokyo);
    assert_eq!(
        local.format("%H:%M").to_string(),
        "09:00",
        "the only hour it is open, in its own zone"
    );
    // Book it; the next match is a day later.
    bookings::create(
        pool,
        &bookings::NewBooking {
            tenant_id: None,
            customer_id: None,
            vehicle_id: None,
            partner_id: p.id,
            service: "diagnostics".into(),
            start: slot,
        },
        "t",
    )
    .await
    .unwrap();
    let m2 = matching::find_shops(pool, &req).await.unwrap();
    assert_eq!(m2[0].earliest_slot, slot + Duration::days(1));
    // Out of range, or a service nobody offers: nothing.
    assert!(
        matching::find_shops(
            pool,
            &MatchRequest {
                lat: 48.0,
                lon: 2.0,
                ..req.clone()
            }
        )
        .await
        .unwrap()
        .is_empty()
    );
    assert!(
        matching::find_shops(
            pool,
            &MatchRequest {
                service: "x".into(),
                ..req.clone()
            }
        )
        .await
        .unwrap()
        .is_empty()
    );
    assert!(matches!(
        matching::find_shops(pool, &MatchRequest { to: req.from, ..req }).await,
        Err(ServiceError::Invalid(_))
    ));
}

#[tokio::test]
async fn onboarding_workflow_and_inventory_reservations() {
    let db = common::db().await;
    let pool = db.pool.clone();
    let p = common::partner(&pool, 1, "EUR").await; // inserted active directly
    assert!(matches!(
        partners::transition(&pool, p, "approved", "a", None).await,
        Err(ServiceError::Conflict(_))
    ));
    partners::transition(&pool, p, "suspended", "a", Some("expired insurance"))
        .await
        .unwrap();
    partners::transition(&pool, p, "active", "a", None).await.unwrap();

    partners::set_stock(&pool, p, "OIL-5W30", "Engine oil 5W-30 5 L", 3_500, 5)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            partners::reserve_part(&pool, p, "OIL-5W30", 1, None).await
        }));
    }
    let mut held = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(id) => held.push(id),
            Err(ServiceError::Conflict(_)) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(held.len(), 5, "never more reserved than in stock");
    assert!(matches!(
        partners::set_stock(&pool, p, "OIL-5W30", "oil", 3_500, 4).await,
        Err(ServiceError::Conflict(_))
    ));
    partners::finish_reservation(&pool, held[0], true).await.unwrap();
    partners::finish_reservation(&pool, held[1], false).await.unwrap();
    assert!(matches!(
        partners::finish_reservation(&pool, held[1], true).await,
        Err(ServiceError::Conflict(_))
    ));
    let (stock, reserved): (i32, i32) =
        sqlx::query_as("SELECT stock, reserved FROM partner_parts WHERE partner_id = $1 AND sku = 'OIL-5W30'")
            .bind(p)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((stock, reserved), (4, 3));
}

#[test]
fn rating_lower_bound_prefers_evidence() {
    let few = partners::rating_lower_bound(15.0, 3.0); // three 5-star
    let many = partners::rating_lower_bound(4.8 * 300.0, 300.0);
    assert!(many > few, "{many} vs {few}");
    assert_eq!(partners::rating_lower_bound(0.0, 0.0), 0.0);
}
