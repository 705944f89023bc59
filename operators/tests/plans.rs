//! What the operators read from the registry, through the real runtime and store:
//! service plans (odometer, engine hours, calendar) giving one `service_due` each, also
//! across restarts; a tank size turning a level in % into litres; day scores cut at the
//! tenant's local midnight.

mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{at, drive, publish, row};
use operators::{ManualClock, OperatorsConfig};
use sqlx::PgPool;
use stream::BusConfig;

fn cfg() -> OperatorsConfig {
    OperatorsConfig {
        flush_interval_ms: 20,
        ..OperatorsConfig::default()
    }
}

async fn vehicle(pool: &PgPool, tenant: i64, name: &str, tank_l: Option<f64>) -> i64 {
    sqlx::query_scalar("INSERT INTO vehicles (tenant_id, name, fuel_tank_l) VALUES ($1, $2, $3) RETURNING id")
        .bind(tenant)
        .bind(name)
        .bind(tank_l)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn fit(pool: &PgPool, device: i64, vehicle: i64) {
    sqlx::query("UPDATE devices SET vehicle_id = $2 WHERE id = $1")
        .bind(device)
        .bind(vehicle)
        .execute(pool)
        .await
        .unwrap();
}

/// (plan_id, time, stage) of every `service_due` of the device.
async fn service_due(pool: &PgPool, device: i64) -> Vec<(i64, DateTime<Utc>, String)> {
    sqlx::query_as(
        "SELECT (attributes->>'plan_id')::int8, time, attributes->>'stage' FROM events \
         WHERE device_id = $1 AND kind = 'service_due' ORDER BY time",
    )
    .bind(device)
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn wait_reloads(ops: &operators::OperatorsHandle, at_least: u64) -> u64 {
    for _ in 0..200 {
        let n = ops.sync().await.unwrap().fence_reloads;
        if n >= at_least {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the operators did not reload within 10 s");
}

/// A 10-minute drive east at 50 km/h with ignition, odometer from 10 km, engine hours in
/// the attributes from 1099 h (a fast-running counter: 1100 h two minutes in); then
/// parked 3 minutes.
fn trip_with_hours(dev: i64) -> Vec<store::PositionRow> {
    let mut rows = drive(dev, 0, 600, 0.0, 50.0, Some(true));
    rows.extend(drive(dev, 600, 180, 50.0 / 3.6 * 600.0, 0.0, Some(false)));
    for (i, r) in rows.iter_mut().enumerate() {
        let h = 1099.0 + i.min(600) as f64 / 120.0;
        r.attributes = Some(serde_json::json!({ "engine_hours": h }));
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_plans_due_once_each_also_after_restarts() {
    let env = common::env(BusConfig::default()).await;
    let pool = env.db.pool.clone();
    let dev = common::device(&pool, env.tenant, "S1").await;
    let veh = vehicle(&pool, env.tenant, "van", None).await;
    fit(&pool, dev, veh).await;
    let plan = |name: &str, km: Option<f64>, h: Option<f64>, days: Option<i32>, at: Option<DateTime<Utc>>| {
        let pool = pool.clone();
        let name = name.to_owned();
        async move {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO service_plans (vehicle_id, name, every_km, every_engine_hours, every_days, \
                 last_done_at, last_done_km, last_done_engine_h) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
            )
            .bind(veh)
            .bind(name)
            .bind(km)
            .bind(h)
            .bind(days)
            .bind(at)
            .bind(km.map(|_| 10.0))
            .bind(h.map(|_| 1000.0))
            .fetch_one(&pool)
            .await
            .unwrap();
            id
        }
    };
    // Odometer: serviced at 10 km, every 5 km: due at 15 km, 5 km into the drive.
    let oil = plan("oil", Some(5.0), None, None, None).await;
    // Engine hours: serviced at 1000 h, every 100 h: due at 1100 h, 2 minutes in.
    let filter = plan("filter", None, Some(100.0), None, None).await;

    let clock = ManualClock::new(at(0));
    let ops = operators::start(
        pool.clone(),
        env.bus.as_ref(),
        cfg(),
        clock.clone(),
        Some(operators::analytics_factory()),
    )
    .await
    .unwrap();
    // Calendar, added while running (NOTIFY): serviced 30 days before the data starts
    // less an hour, every 30 days: due at 01:00 into the data, while the van is parked.
    let first = wait_reloads(&ops, 1).await;
    let inspection = plan(
        "inspection",
        None,
        None,
        Some(30),
        Some(at(3600) - chrono::Duration::days(30)),
    )
    .await;
    wait_reloads(&ops, first + 1).await;

    let rows = trip_with_hours(dev);
    let (early, late) = rows.split_at(100);
    for chunk in early.chunks(10) {
        publish(&env.bus, dev, chunk.to_vec()).await;
    }
    ops.sync().await.unwrap();
    ops.checkpoint().await.unwrap();
    for chunk in late.chunks(10) {
        publish(&env.bus, dev, chunk.to_vec()).await;
    }
    ops.sync().await.unwrap();
    let due = service_due(&pool, dev).await;
    // 1100 h at 120 s; 15 km of odometer at 5000 m / (50 km/h) = 360 s.
    assert_eq!(
        due,
        vec![(filter, at(120), "due".to_owned()), (oil, at(360), "due".to_owned())]
    );
    // Killed before the next checkpoint: the restart replays from the store, the same
    // events come again with the same keys and are absorbed.
    drop(ops);
    let ops = operators::start(
        pool.clone(),
        env.bus.as_ref(),
        cfg(),
        clock.clone(),
        Some(operators::analytics_factory()),
    )
    .await
    .unwrap();
    ops.sync().await.unwrap();
    assert_eq!(service_due(&pool, dev).await.len(), 2);
    // Parked, silent: the calendar plan comes due on the timer, at its due instant.
    clock.set(at(2 * 3600));
    ops.tick().await.unwrap();
    let due = service_due(&pool, dev).await;
    assert_eq!(due.len(), 3, "{due:?}");
    assert_eq!(due[2], (inspection, at(3600), "due".to_owned()));
    let soon: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE device_id = $1 AND kind = 'service_due_soon'")
            .bind(dev)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(soon, 3, "one early warning per plan");
    ops.stop().await;

    // A clean restart, more data and more ticks within the same intervals: nothing new.
    let ops = operators::start(
        pool.clone(),
        env.bus.as_ref(),
        cfg(),
        clock.clone(),
        Some(operators::analytics_factory()),
    )
    .await
    .unwrap();
    let more = drive(dev, 3 * 3600, 60, 50.0 / 3.6 * 600.0, 30.0, Some(true));
    publish(&env.bus, dev, more).await;
    ops.sync().await.unwrap();
    clock.set(at(5 * 3600));
    ops.tick().await.unwrap();
    assert_eq!(service_due(&pool, dev).await.len(), 3);

    // A recorded service at 16 km starts a new cycle: due again at 21 km (as "due", where
    // the old cycle would have said "overdue" at 20 km).
    let r = wait_reloads(&ops, 1).await; // the listener is connected
    sqlx::query("UPDATE service_plans SET last_done_km = 16.0 WHERE id = $1")
        .bind(oil)
        .execute(&pool)
        .await
        .unwrap();
    wait_reloads(&ops, r + 1).await;
    let next = drive(dev, 4 * 3600, 300, 9000.0, 30.0, Some(true));
    for chunk in next.chunks(30) {
        publish(&env.bus, dev, chunk.to_vec()).await;
    }
    ops.sync().await.unwrap();
    let due = service_due(&pool, dev).await;
    assert_eq!(due.len(), 4, "{due:?}");
    assert_eq!(due[3], (oil, at(4 * 3600 + 240), "due".to_owned()));
    ops.stop().await;
}

/// Parked, ignition off, one reading every 30 s: 20 % for 20 minutes, a refuel to 80 %
/// over 2 minutes, 80 % for 20 minutes; the device reports only percent.
fn refuel_rows(dev: i64) -> Vec<store::PositionRow> {
    (0..84)
        .map(|i| {
            let s = i * 30;
            let mut r = row(dev, s, 54.69, 25.28, 0.0);
            r.ignition = Some(false);
            let level = match s {
                ..1200 => 20.0,
                1200..1320 => 20.0 + 60.0 * (s - 1200) as f64 / 120.0,
                _ => 80.0,
            };
            // A little sensor noise, deterministic.
            let noise = [0.3, -0.2, 0.0, 0.2, -0.3][i as usize % 5];
            r.fuel_level_pct = Some((level + noise) as f32);
            r
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuel_in_litres_from_percent_with_the_vehicle_tank() {
    let env = common::env(BusConfig::default()).await;
    let pool = env.db.pool.clone();
    let with_tank = common::device(&pool, env.tenant, "F1").await;
    let without = common::device(&pool, env.tenant, "F2").await;
    let v1 = vehicle(&pool, env.tenant, "tanker", Some(60.0)).await;
    let v2 = vehicle(&pool, env.tenant, "unknown tank", None).await;
    fit(&pool, with_tank, v1).await;
    fit(&pool, without, v2).await;
    let ops = operators::start(
        pool.clone(),
        env.bus.as_ref(),
        cfg(),
        ManualClock::new(at(0)),
        Some(operators::analytics_factory()),
    )
    .await
    .unwrap();
    for dev in [with_tank, without] {
        for chunk in refuel_rows(dev).chunks(6) {
            publish(&env.bus, dev, chunk.to_vec()).await;
        }
    }
    ops.sync().await.unwrap();
    let refuel = |dev: i64| {
        let pool = pool.clone();
        async move {
            let rows: Vec<(Option<f64>, serde_json::Value)> =
                sqlx::query_as("SELECT magnitude, attributes FROM events WHERE device_id = $1 AND kind = 'refuel'")
                    .bind(dev)
                    .fetch_all(&pool)
                    .await
                    .unwrap();
            rows
        }
    };
    let r = refuel(with_tank).await;
    assert_eq!(r.len(), 1, "{r:?}");
    let litres = r[0].0.expect("litres with a known tank");
    assert!((litres - 36.0).abs() < 2.5, "60 % of 60 L is 36 L, got {litres}");
    let r = refuel(without).await;
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0].0, None, "no litres without a tank size: {r:?}");
    ops.stop().await;
}

/// A 10-minute drive at 50 km/h from second `from`, then 3 minutes parked.
fn trip_at(dev: i64, from: i64, x0: f64) -> Vec<store::PositionRow> {
    let mut rows = drive(dev, from, 600, x0, 50.0, Some(true));
    rows.extend(drive(dev, from + 600, 180, x0 + 50.0 / 3.6 * 600.0, 0.0, Some(false)));
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn day_scores_split_at_the_tenants_local_midnight() {
    let env = common::env(BusConfig::default()).await;
    let pool = env.db.pool.clone();
    sqlx::query("UPDATE tenants SET settings = '{\"timezone\": \"Europe/Paris\"}' WHERE id = $1")
        .bind(env.tenant)
        .execute(&pool)
        .await
        .unwrap();
    let dev = common::device(&pool, env.tenant, "D1").await;
    let clock = ManualClock::new(at(0));
    let ops = operators::start(pool.clone(), env.bus.as_ref(), cfg(), clock.clone(), None)
        .await
        .unwrap();
    // at(0) is 2026-03-02 07:00Z. Trips at 22:20Z (23:20 in Paris, UTC+1 in March) and
    // at 23:20Z (00:20 the next day in Paris): one UTC day, two local days.
    let a = 15 * 3600 + 20 * 60;
    let b = a + 3600;
    let mut rows = trip_at(dev, a, 0.0);
    rows.extend(trip_at(dev, b, 50.0 / 3.6 * 600.0));
    for chunk in rows.chunks(20) {
        publish(&env.bus, dev, chunk.to_vec()).await;
    }
    ops.sync().await.unwrap();
    clock.set(at(b + 3600));
    ops.tick().await.unwrap();
    let trips = store::query::trips(&pool, dev, at(0), at(b + 7200)).await.unwrap();
    assert_eq!(trips.len(), 2, "{trips:?}");
    let days: Vec<(DateTime<Utc>, f64)> = sqlx::query_as(
        "SELECT period_start, distance_m FROM scores WHERE subject_kind = 'device' AND subject_id = $1 \
         AND period = 'day' ORDER BY period_start",
    )
    .bind(dev)
    .fetch_all(&pool)
    .await
    .unwrap();
    let starts: Vec<DateTime<Utc>> = days.iter().map(|d| d.0).collect();
    let ts = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().to_utc();
    assert_eq!(
        starts,
        vec![ts("2026-03-01T23:00:00Z"), ts("2026-03-02T23:00:00Z")],
        "Paris midnights"
    );
    // Each local day holds one trip's distance, not both.
    for (_, d) in &days {
        assert!((d - 50.0 / 3.6 * 599.0).abs() < 100.0, "{days:?}");
    }
    ops.stop().await;
}

#[test]
fn local_day_across_dst() {
    let tz: chrono_tz::Tz = "Europe/Paris".parse().unwrap();
    let ts = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().to_utc();
    // 2026-03-29: clocks go forward, a 23-hour day.
    let (s, e) = operators::safety::local_day(tz, ts("2026-03-29T12:00:00Z"));
    assert_eq!((s, e), (ts("2026-03-28T23:00:00Z"), ts("2026-03-29T22:00:00Z")));
    // America/Santiago changes at midnight: 2026-09-06 starts at 01:00 local.
    let tz: chrono_tz::Tz = "America/Santiago".parse().unwrap();
    let (s, _) = operators::safety::local_day(tz, ts("2026-09-06T12:00:00Z"));
    assert_eq!(s, ts("2026-09-06T04:00:00Z"));
    // Unknown names fall back to UTC.
    let tz = operators::safety::tenant_tz(1, &serde_json::json!({"timezone": "Mars/Olympus"}));
    assert_eq!(tz, chrono_tz::Tz::UTC);
    // The API's reports read `time_zone`; both spellings give the same days, `time_zone` first.
    let tz = operators::safety::tenant_tz(1, &serde_json::json!({"time_zone": "Europe/Paris"}));
    assert_eq!(tz, chrono_tz::Europe::Paris);
    let tz = operators::safety::tenant_tz(
        1,
        &serde_json::json!({"time_zone": "Europe/Paris", "timezone": "America/Santiago"}),
    );
    assert_eq!(tz, chrono_tz::Europe::Paris);
}

/// A vehicle with two trackers (both report the odometer, one a few seconds behind):
/// each runs the vehicle's plans, the store keeps one `service_due` per occurrence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_trackers_on_one_vehicle_are_told_once() {
    let env = common::env(BusConfig::default()).await;
    let pool = env.db.pool.clone();
    let veh = vehicle(&pool, env.tenant, "truck", None).await;
    let obd = common::device(&pool, env.tenant, "OBD1").await;
    let gps = common::device(&pool, env.tenant, "GPS1").await;
    fit(&pool, obd, veh).await;
    fit(&pool, gps, veh).await;
    let oil: i64 = sqlx::query_scalar(
        "INSERT INTO service_plans (vehicle_id, name, every_km, last_done_km) VALUES ($1, 'oil', 5, 10) RETURNING id",
    )
    .bind(veh)
    .fetch_one(&pool)
    .await
    .unwrap();
    let ops = operators::start(
        pool.clone(),
        env.bus.as_ref(),
        cfg(),
        ManualClock::new(at(0)),
        Some(operators::analytics_factory()),
    )
    .await
    .unwrap();
    // 15 minutes at 50 km/h from 10 km: due at 15 km, overdue at 20 km.
    let (a, b) = (
        drive(obd, 0, 900, 0.0, 50.0, Some(true)),
        drive(gps, 3, 900, 0.0, 50.0, Some(true)),
    );
    for (ca, cb) in a.chunks(30).zip(b.chunks(30)) {
        publish(&env.bus, obd, ca.to_vec()).await;
        publish(&env.bus, gps, cb.to_vec()).await;
    }
    ops.sync().await.unwrap();
    let all: Vec<(i64, String, i64)> = sqlx::query_as(
        "SELECT (attributes->>'plan_id')::int8, attributes->>'stage', (attributes->>'occurrence')::int8 \
         FROM events WHERE device_id IN ($1, $2) AND kind = 'service_due' ORDER BY time",
    )
    .bind(obd)
    .bind(gps)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(all, vec![(oil, "due".into(), 1), (oil, "overdue".into(), 2)]);
    let soon: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE device_id IN ($1, $2) AND kind = 'service_due_soon'")
            .bind(obd)
            .bind(gps)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(soon, 1);
    ops.stop().await;
}
