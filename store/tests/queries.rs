//! Read queries: latest per device at fleet scale, history with downsampling, events,
//! trips, hourly rollups.

mod common;

use std::time::{Duration, Instant};

use chrono::TimeDelta;
use common::{now_us, pos, track, ts};
use store::query::{self, HistoryOptions, TripRow};
use store::testing::test_db;
use store::{Writer, WriterConfig};

#[tokio::test]
async fn latest_position_for_ten_thousand_devices_is_one_fast_query() {
    let db = test_db().await;
    let w = Writer::spawn(db.pool.clone(), WriterConfig::default());
    let t = now_us() - TimeDelta::minutes(10);
    let mut receipts = Vec::new();
    for chunk in (1..=10_000i64).collect::<Vec<_>>().chunks(500) {
        let mut rows = Vec::new();
        for &d in chunk {
            rows.push(pos(d, t));
            rows.push(pos(d, t + TimeDelta::seconds(d % 60 + 1)));
        }
        receipts.push(w.submit(rows).await.unwrap());
    }
    for r in receipts {
        r.await.unwrap();
    }
    w.shutdown().await;
    let ids: Vec<i64> = (1..=10_000).collect();
    let started = Instant::now();
    let latest = query::latest_positions(&db.pool, &ids).await.unwrap();
    let took = started.elapsed();
    assert_eq!(latest.len(), 10_000);
    assert!(
        latest
            .iter()
            .all(|p| p.fix_time == t + TimeDelta::seconds(p.device_id % 60 + 1))
    );
    println!("latest positions of 10k devices: {took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[tokio::test]
async fn history_is_ordered_bounded_and_can_be_downsampled() {
    let db = test_db().await;
    let w = Writer::spawn(db.pool.clone(), WriterConfig::default());
    let start = ts("2024-05-01T10:00:00Z");
    w.submit(track(1, start, 600, 1)).await.unwrap().await.unwrap(); // 10 minutes at 1 Hz
    w.submit(track(2, start, 10, 1)).await.unwrap().await.unwrap();
    w.shutdown().await;
    let end = start + TimeDelta::minutes(10);

    let all = query::history(&db.pool, 1, start, end, &HistoryOptions::default())
        .await
        .unwrap();
    assert_eq!(all.len(), 600);
    assert!(all.windows(2).all(|w| w[0].fix_time < w[1].fix_time));
    assert!(all.iter().all(|p| p.device_id == 1));

    let per_minute = query::history(
        &db.pool,
        1,
        start,
        end,
        &HistoryOptions {
            downsample: Some(Duration::from_secs(60)),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(per_minute.len(), 10);
    assert!(per_minute.iter().all(|p| p.fix_time.timestamp() % 60 == 0));

    let limited = query::history(
        &db.pool,
        1,
        start,
        end,
        &HistoryOptions {
            limit: Some(5),
            valid_only: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(limited.len(), 5);
    assert!(limited.iter().all(|p| p.valid));
    assert!(
        query::history(&db.pool, 1, end, start, &HistoryOptions::default())
            .await
            .is_err()
    );
}

/// Both downsampling plans (an index probe per bin for few bins, one scan for many) give
/// the first fix of each origin-aligned bin, as computed here from the full history,
/// with gaps, a range starting mid-bin and the valid-only filter.
#[tokio::test]
async fn downsampling_plans_agree_with_first_fix_per_bin() {
    let db = test_db().await;
    let w = Writer::spawn(db.pool.clone(), WriterConfig::default());
    let start = ts("2024-05-01T10:00:00Z");
    // 40 minutes at 1 Hz, a 25-minute gap, then 30 minutes at 7 s.
    let mut rows = track(3, start, 2400, 1);
    rows.extend(track(3, start + TimeDelta::minutes(65), 258, 7));
    w.submit(rows).await.unwrap().await.unwrap();
    w.shutdown().await;
    let from = start + TimeDelta::seconds(37); // not on a bin edge
    let to = start + TimeDelta::minutes(100);

    for valid_only in [false, true] {
        let all = query::history(
            &db.pool,
            3,
            from,
            to,
            &HistoryOptions {
                valid_only,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        // 60 s probes 101 bins; 1 ms has 6 million bins, which takes the scan.
        for step in [
            Duration::from_secs(60),
            Duration::from_millis(1),
            Duration::from_secs(3600),
        ] {
            let step_us = step.as_micros() as i64;
            let mut want: Vec<_> = Vec::new();
            let mut last_bin = None;
            for p in &all {
                let bin =
                    (p.fix_time.timestamp_micros() - ts("2000-01-01T00:00:00Z").timestamp_micros()).div_euclid(step_us);
                if last_bin != Some(bin) {
                    want.push(p.fix_time);
                    last_bin = Some(bin);
                }
            }
            let got = query::history(
                &db.pool,
                3,
                from,
                to,
                &HistoryOptions {
                    downsample: Some(step),
                    valid_only,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
            let got: Vec<_> = got.iter().map(|p| p.fix_time).collect();
            assert_eq!(got, want, "step {step:?}, valid_only {valid_only}");
            assert!(!got.is_empty());
        }
    }
}

#[tokio::test]
async fn trips_are_upserted_by_start_and_listed() {
    let db = test_db().await;
    let tenant: i64 = sqlx::query_scalar("INSERT INTO tenants (name) VALUES ('acme') RETURNING id")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let device: i64 = sqlx::query_scalar(
        "INSERT INTO devices (tenant_id, identifier, protocol) VALUES ($1, '356307042441013', 'teltonika') RETURNING id",
    )
    .bind(tenant)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let start = ts("2024-05-01T08:00:00Z");
    let mut trip = TripRow {
        device_id: device,
        start_time: start,
        end_time: None,
        start_lat: Some(54.0),
        start_lon: Some(25.0),
        end_lat: None,
        end_lon: None,
        distance_m: None,
        max_speed_kmh: None,
        avg_speed_kmh: None,
        fuel_used_l: None,
        driver_id: None,
        attributes: serde_json::json!({}),
    };
    let id = query::upsert_trip(&db.pool, &trip).await.unwrap();
    trip.end_time = Some(start + TimeDelta::minutes(25));
    trip.distance_m = Some(12_345.0);
    assert_eq!(
        query::upsert_trip(&db.pool, &trip).await.unwrap(),
        id,
        "same trip, completed"
    );
    let trips = query::trips(
        &db.pool,
        device,
        start - TimeDelta::hours(1),
        start + TimeDelta::hours(1),
    )
    .await
    .unwrap();
    assert_eq!(trips, vec![trip]);

    // The device's latest position is visible per tenant too.
    let w = Writer::spawn(db.pool.clone(), WriterConfig::default());
    w.submit(vec![pos(device, start)]).await.unwrap().await.unwrap();
    w.shutdown().await;
    let latest = query::latest_positions_for_tenant(&db.pool, tenant).await.unwrap();
    assert_eq!(latest.len(), 1);
    assert!(
        query::latest_positions_for_tenant(&db.pool, tenant + 1)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn erasing_a_device_removes_all_its_telemetry_and_nothing_else() {
    let db = test_db().await;
    let w = Writer::spawn(db.pool.clone(), WriterConfig::default());
    let t = ts("2024-05-01T10:00:00Z");
    w.submit(track(1, t, 20, 1)).await.unwrap().await.unwrap();
    w.submit(track(2, t, 20, 1)).await.unwrap().await.unwrap();
    w.submit(vec![store::EventRow::new(1, t, "alarm")])
        .await
        .unwrap()
        .await
        .unwrap();
    w.shutdown().await;
    let table_rollup = db.store.rollup() == store::RollupKind::Table;
    if table_rollup {
        store::maintenance::refresh_rollups(&db.pool, t + TimeDelta::hours(3))
            .await
            .unwrap();
    } else {
        sqlx::query("CALL refresh_continuous_aggregate('positions_hourly', NULL, $1)")
            .bind(t + TimeDelta::hours(3))
            .execute(&db.pool)
            .await
            .unwrap();
    }
    let hourly: i64 = sqlx::query_scalar("SELECT count(*) FROM positions_hourly WHERE device_id = 1")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(hourly, 1);
    let n = db.store.erase_device_telemetry(1).await.unwrap();
    // A continuous aggregate's rows are dropped by its refresh, not counted as deleted.
    let hourly_deleted = u64::from(table_rollup);
    assert_eq!(
        n,
        20 + 1 + 1 + hourly_deleted,
        "positions, event, last position, one hourly row"
    );
    for table in ["positions", "events", "device_last_position", "positions_hourly"] {
        let left: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {table} WHERE device_id = 1"
        )))
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert_eq!(left, 0, "{table}");
    }
    let other: i64 = sqlx::query_scalar("SELECT count(*) FROM positions WHERE device_id = 2")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(other, 20);
}
