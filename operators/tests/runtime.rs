//! The runtime against the real store and the real in-process bus: restart from a
//! checkpoint with catch-up, lag recovery, geofence reload on NOTIFY, publishing.

mod common;

use std::time::Duration;

use common::{at, drive, events, publish};
use operators::{ManualClock, OperatorsConfig};
use stream::BusConfig;

fn cfg() -> OperatorsConfig {
    OperatorsConfig {
        flush_interval_ms: 20,
        ..OperatorsConfig::default()
    }
}

/// A 10-minute ignition trip east at 50 km/h, then ignition off, parked 3 minutes.
fn trip_rows(dev: i64) -> Vec<store::PositionRow> {
    let mut rows = drive(dev, 0, 600, 0.0, 50.0, Some(true));
    let x = 50.0 / 3.6 * 600.0;
    rows.extend(drive(dev, 600, 180, x, 0.0, Some(false)));
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_without_losing_or_duplicating() {
    let env = common::env(BusConfig::default()).await;
    let pool = env.db.pool.clone();
    let dev = common::device(&pool, env.tenant, "A1").await;
    let clock = ManualClock::new(at(0));
    let rows = trip_rows(dev);
    let (first, second) = rows.split_at(300);

    let ops = operators::start(pool.clone(), env.bus.as_ref(), cfg(), clock.clone(), None)
        .await
        .unwrap();
    for chunk in first.chunks(10) {
        publish(&env.bus, dev, chunk.to_vec()).await;
    }
    ops.sync().await.unwrap();
    ops.checkpoint().await.unwrap();
    // Processed after the checkpoint, then lost with the process: must come back once.
    for chunk in second[..100].chunks(10) {
        publish(&env.bus, dev, chunk.to_vec()).await;
    }
    ops.sync().await.unwrap();
    drop(ops); // no final checkpoint: as if killed

    // While down, the rest arrives (durable in the store, nobody listening).
    for chunk in second[100..].chunks(10) {
        publish(&env.bus, dev, chunk.to_vec()).await;
    }
    let ops = operators::start(pool.clone(), env.bus.as_ref(), cfg(), clock.clone(), None)
        .await
        .unwrap();
    let stats = ops.sync().await.unwrap();
    assert!(stats.caught_up_fixes >= 380, "{stats:?}");
    // Duplicate delivery of old data after the restart is skipped by the cursor.
    publish(&env.bus, dev, first[..10].to_vec()).await;
    let stats = ops.sync().await.unwrap();
    assert!(stats.engine.stale >= 10, "{stats:?}");
    clock.set(at(3600));
    ops.tick().await.unwrap();

    let ev = events(&pool, dev).await;
    let kinds: Vec<&str> = ev.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "trip_start").count(), 1, "{ev:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "trip_end").count(), 1, "{ev:?}");
    assert!(ev.contains(&("trip_start".to_string(), at(0))), "{ev:?}");
    assert!(ev.contains(&("trip_end".to_string(), at(600))), "{ev:?}");
    let trips = store::query::trips(&pool, dev, at(-10), at(7200)).await.unwrap();
    assert_eq!(trips.len(), 1);
    let t = &trips[0];
    assert_eq!(t.end_time, Some(at(600)));
    let d = t.distance_m.unwrap();
    assert!((d - 50.0 / 3.6 * 599.0).abs() < 50.0, "distance {d}");
    assert_eq!(t.attributes["distance_source"], "odometer");
    ops.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_subscriber_catches_up_from_the_store() {
    let bus_cfg = BusConfig {
        subscriber_capacity: 4,
        ..BusConfig::default()
    };
    let env = common::env(bus_cfg).await;
    let pool = env.db.pool.clone();
    let dev = common::device(&pool, env.tenant, "L1").await;
    let clock = ManualClock::new(at(0));
    let ops = operators::start(pool.clone(), env.bus.as_ref(), cfg(), clock.clone(), None)
        .await
        .unwrap();
    let rows = trip_rows(dev);
    publish(&env.bus, dev, rows[..5].to_vec()).await;
    // Hold the events table so the operators' next write blocks: they stop reading the
    // bus while batches keep becoming durable.
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    for chunk in rows[5..].chunks(5) {
        publish(&env.bus, dev, chunk.to_vec()).await;
    }
    lock.rollback().await.unwrap();
    let stats = ops.sync().await.unwrap();
    assert!(
        stats.lagged_batches > 0,
        "the test did not make the subscriber lag: {stats:?}"
    );
    assert_eq!(stats.engine.used, rows.len() as u64, "{stats:?}");
    let ev = events(&pool, dev).await;
    assert!(ev.contains(&("trip_end".to_string(), at(600))), "{ev:?}");
    ops.stop().await;
}

/// The catch-up reads many devices per statement, in pages: three devices two hours
/// behind (7 200 fixes each, more than a page) and 250 a few minutes behind (more devices
/// than one statement takes) are all replayed in order, each fix exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_replays_many_devices_in_pages_and_in_order() {
    let env = common::env(BusConfig::default()).await;
    let pool = env.db.pool.clone();
    let mut long = Vec::new();
    for i in 0..3 {
        let dev = common::device(&pool, env.tenant, &format!("LONG{i}")).await;
        let mut rows = drive(dev, 0, 7000, 0.0, 50.0, Some(true));
        rows.extend(drive(dev, 7000, 200, 50.0 / 3.6 * 7000.0, 0.0, Some(false)));
        for chunk in rows.chunks(600) {
            publish(&env.bus, dev, chunk.to_vec()).await;
        }
        long.push(dev);
    }
    for i in 0..250 {
        let dev = common::device(&pool, env.tenant, &format!("SHORT{i}")).await;
        publish(&env.bus, dev, drive(dev, 0, 150, 0.0, 30.0, Some(true))).await;
    }
    // Started after the data: everything comes from the store.
    let ops = operators::start(pool.clone(), env.bus.as_ref(), cfg(), ManualClock::new(at(7200)), None)
        .await
        .unwrap();
    let stats = ops.sync().await.unwrap();
    let total = 3 * 7200 + 250 * 150;
    assert_eq!(stats.caught_up_fixes, total, "{stats:?}");
    assert_eq!(stats.engine.used, total, "every fix once and in order: {stats:?}");
    assert_eq!(stats.engine.stale, 0, "{stats:?}");
    for dev in long {
        let ev = events(&pool, dev).await;
        let starts: Vec<_> = ev.iter().filter(|(k, _)| k == "trip_start").collect();
        assert_eq!(starts, vec![&("trip_start".to_string(), at(0))], "{ev:?}");
        assert!(ev.contains(&("trip_end".to_string(), at(7000))), "{ev:?}");
        let trips = store::query::trips(&pool, dev, at(-10), at(7300)).await.unwrap();
        assert_eq!(trips.len(), 1, "{trips:?}");
        let d = trips[0].distance_m.unwrap();
        assert!((d - 50.0 / 3.6 * 6999.0).abs() < 100.0, "distance {d}");
    }
    ops.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fences_reload_on_change_and_events_are_published() {
    let env = common::env(BusConfig::default()).await;
    let pool = env.db.pool.clone();
    let dev = common::device(&pool, env.tenant, "G1").await;
    let clock = ManualClock::new(at(0));
    let ops = operators::start(pool.clone(), env.bus.as_ref(), cfg(), clock.clone(), None)
        .await
        .unwrap();
    let mut rx = ops.subscribe();
    let before = ops.sync().await.unwrap().fence_reloads;
    // A zone 1–2 km east, limit 40 km/h, created after start.
    let fence = common::fence(
        &pool,
        env.tenant,
        "school",
        54.69,
        common::lon_east(1500.0),
        500.0,
        serde_json::json!({"speed_limit": {"limit_kmh": 40}}),
    )
    .await;
    let mut reloaded = false;
    for _ in 0..100 {
        if ops.sync().await.unwrap().fence_reloads > before {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reloaded, "no reload after the NOTIFY");
    // Through the zone at 50 km/h: enter, overspeed against the zone limit, exit.
    for chunk in drive(dev, 0, 300, 0.0, 50.0, Some(true)).chunks(10) {
        publish(&env.bus, dev, chunk.to_vec()).await;
    }
    ops.sync().await.unwrap();
    let rows: Vec<(String, Option<i64>, Option<f64>, serde_json::Value)> = sqlx::query_as(
        "SELECT kind, geofence_id, magnitude, attributes FROM events WHERE device_id = $1 ORDER BY time, kind",
    )
    .bind(dev)
    .fetch_all(&pool)
    .await
    .unwrap();
    let enter = rows.iter().find(|r| r.0 == "geofence_enter").expect("enter");
    assert_eq!(enter.1, Some(fence));
    assert!(
        rows.iter().any(|r| r.0 == "geofence_exit" && r.1 == Some(fence)),
        "{rows:?}"
    );
    let over = rows.iter().find(|r| r.0 == "overspeed").expect("zone overspeed");
    assert_eq!(over.2, Some(10.0));
    assert_eq!(over.3["zone"], fence);
    assert_eq!(over.3["limit_kmh"], 40.0);
    // Published after the write, in order.
    let mut seen = Vec::new();
    while let Ok(e) = rx.try_recv() {
        seen.push(e.kind);
    }
    for k in ["device_online", "geofence_enter", "overspeed", "geofence_exit"] {
        assert!(seen.iter().any(|s| s == k), "{k} not published: {seen:?}");
    }
    ops.stop().await;
}
