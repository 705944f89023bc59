//! Safety scores into the `scores` table: per finished trip and per day, for the device,
//! its vehicle and its driver, with the formula and defaults of `analytics::score`
//! (configurable per tenant in `tenants.settings -> 'score'`). Days run from midnight to
//! midnight in the tenant's time zone (`tenants.settings -> 'time_zone'`, as the API's
//! reports read it; `'timezone'` is accepted too; an IANA name
//! such as `"Europe/Paris"`; UTC when absent or unknown), so a day has 23 or 25 hours
//! across a DST change; `period_start` is that local midnight.
//!
//! Day scores are recomputed from the day's stored trips each time one of them ends, so
//! they are idempotent and a replayed trip changes nothing.

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use sqlx::PgPool;

use crate::trips::{TripStats, TripUpdate};

fn to_analytics(s: &TripStats) -> analytics::score::TripStats {
    analytics::score::TripStats {
        distance_m: s.distance_m,
        duration_s: s.duration_s,
        idle_s: s.idle_s,
        events: s
            .events
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.iter()
                        .map(|&m| analytics::score::EventSeverity::Magnitude(m))
                        .collect(),
                )
            })
            .collect(),
    }
}

/// Writes the trip's and its day's scores once the trip has ended.
pub async fn write_scores(pool: &PgPool, device: i64, trip_id: i64, t: &TripUpdate) -> Result<(), sqlx::Error> {
    if t.end.is_none() {
        return Ok(());
    }
    let owner: Option<(i64, Option<i64>, Option<i64>, serde_json::Value)> = sqlx::query_as(
        "SELECT d.tenant_id, d.vehicle_id, d.driver_id, t.settings FROM devices d JOIN tenants t ON t.id = d.tenant_id
         WHERE d.id = $1",
    )
    .bind(device)
    .fetch_optional(pool)
    .await?;
    let Some((tenant, vehicle, driver, settings)) = owner else {
        return Ok(());
    };
    let cfg = analytics::score::ScoreConfig::from_settings(&settings).unwrap_or_else(|e| {
        tracing::warn!(tenant, "tenant score settings refused, using the defaults: {e}");
        analytics::score::ScoreConfig::default()
    });
    let mut subjects = vec![("device", device)];
    subjects.extend(vehicle.map(|v| ("vehicle", v)));
    subjects.extend(driver.map(|d| ("driver", d)));

    let trip = analytics::score::score(&cfg, &to_analytics(&t.stats));
    for &(kind, id) in &subjects {
        upsert(
            pool,
            tenant,
            kind,
            id,
            "trip",
            t.start.time,
            Some(trip_id),
            &t.stats,
            &trip,
        )
        .await?;
    }

    // The local day the trip started in, from every stored trip of this device that day.
    let tz = tenant_tz(tenant, &settings);
    let (day, day_end) = local_day(tz, t.start.time);
    let stats: Vec<serde_json::Value> = sqlx::query_scalar(
        "SELECT attributes -> 'stats' FROM trips WHERE device_id = $1 AND start_time >= $2 AND start_time < $3
           AND end_time IS NOT NULL AND attributes ? 'stats'",
    )
    .bind(device)
    .bind(day)
    .bind(day_end)
    .fetch_all(pool)
    .await?;
    let mut total = TripStats::default();
    for s in stats {
        if let Ok(s) = serde_json::from_value::<TripStats>(s) {
            total.merge(&s);
        }
    }
    let daily = analytics::score::score(&cfg, &to_analytics(&total));
    for &(kind, id) in &subjects {
        upsert(pool, tenant, kind, id, "day", day, None, &total, &daily).await?;
    }
    Ok(())
}

/// The tenant's time zone from its settings; UTC (logged) when the name is unknown.
pub fn tenant_tz(tenant: i64, settings: &serde_json::Value) -> Tz {
    // One key for every reader (the API's daily reports use `time_zone`), so a tenant's
    // score days and report days never disagree; the older spelling still counts.
    let name = settings
        .get("time_zone")
        .or_else(|| settings.get("timezone"))
        .and_then(|v| v.as_str());
    match name {
        None => Tz::UTC,
        Some(name) => name.parse::<Tz>().unwrap_or_else(|e| {
            tracing::warn!(tenant, timezone = name, "unknown tenant time zone, days are UTC: {e}");
            Tz::UTC
        }),
    }
}

/// The local day containing `t` in `tz`: its first instant and the next day's.
pub fn local_day(tz: Tz, t: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let date = t.with_timezone(&tz).date_naive();
    let start = day_start(tz, date).unwrap_or(t);
    let end = date
        .succ_opt()
        .and_then(|d| day_start(tz, d))
        .filter(|e| *e > start)
        .unwrap_or(start + Duration::days(1));
    (start, end)
}

/// The first instant of a local date. Midnight can fall in a DST gap (zones that change
/// at 00:00): then the day starts at the first valid time after it.
fn day_start(tz: Tz, date: NaiveDate) -> Option<DateTime<Utc>> {
    (0..=3 * 60).find_map(|m| {
        let local = date.and_hms_opt(0, 0, 0)? + Duration::minutes(m);
        tz.from_local_datetime(&local).earliest().map(|d| d.with_timezone(&Utc))
    })
}

#[allow(clippy::too_many_arguments)]
async fn upsert(
    pool: &PgPool,
    tenant: i64,
    kind: &str,
    id: i64,
    period: &str,
    start: DateTime<Utc>,
    trip: Option<i64>,
    stats: &TripStats,
    s: &analytics::score::Score,
) -> Result<(), sqlx::Error> {
    let score = if s.score.is_finite() {
        s.score.clamp(0.0, 100.0)
    } else {
        100.0
    };
    sqlx::query(
        "INSERT INTO scores (tenant_id, subject_kind, subject_id, period, period_start, trip_id, distance_m, duration_s,
                             score, breakdown)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (subject_kind, subject_id, period, period_start) DO UPDATE SET
             trip_id = excluded.trip_id, distance_m = excluded.distance_m, duration_s = excluded.duration_s,
             score = excluded.score, breakdown = excluded.breakdown, updated_at = now()",
    )
    .bind(tenant)
    .bind(kind)
    .bind(id)
    .bind(period)
    .bind(start)
    .bind(trip)
    .bind(stats.distance_m)
    .bind(stats.duration_s)
    .bind(score as f32)
    .bind(&s.breakdown)
    .execute(pool)
    .await?;
    Ok(())
}
