//! Writing operator output: events in one batched statement per flush (`UNNEST` of
//! column arrays, `ON CONFLICT DO NOTHING` on the events' unique key, so a replay after
//! a restart writes nothing twice), trips upserted by (device, start time). Service-plan
//! events are per vehicle: written once whichever of its trackers raised them.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use store::query::TripRow;

use crate::event::OperatorEvent;
use crate::trips::TripUpdate;

/// Kinds about the vehicle, not the tracker: a vehicle with two trackers (an OBD dongle
/// and a GPS unit, say) has each of them run its plans, and must still be told once.
const VEHICLE_KINDS: [&str; 2] = ["service_due", "service_due_soon"];

/// Inserts events; returns how many were new.
pub async fn write_events(pool: &PgPool, events: &[OperatorEvent]) -> Result<u64, sqlx::Error> {
    let (vehicle, device): (Vec<&OperatorEvent>, Vec<&OperatorEvent>) =
        events.iter().partition(|e| VEHICLE_KINDS.contains(&e.kind.as_str()));
    let mut n = write_device_events(pool, &device).await?;
    for e in vehicle {
        n += write_vehicle_event(pool, e).await?;
    }
    Ok(n)
}

/// One vehicle-level event (rare: a few per vehicle and year), skipped when another
/// tracker of the same vehicle already wrote the same plan, cycle and occurrence. The
/// vehicle's advisory lock makes the check and the insert one step, also when two
/// operator processes handle the two trackers.
async fn write_vehicle_event(pool: &PgPool, e: &OperatorEvent) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let vehicle: Option<i64> = sqlx::query_scalar("SELECT vehicle_id FROM devices WHERE id = $1")
        .bind(e.device_id)
        .fetch_optional(&mut *tx)
        .await?
        .flatten();
    if let Some(v) = vehicle {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('clutch.vehicle_event', $1))")
            .bind(v)
            .execute(&mut *tx)
            .await?;
        let told: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM events ev JOIN devices d ON d.id = ev.device_id \
             WHERE d.vehicle_id = $1 AND ev.device_id <> $2 AND ev.kind = $3 \
               AND ev.attributes -> 'plan_id' = $4 -> 'plan_id' \
               AND ev.attributes -> 'cycle' IS NOT DISTINCT FROM $4 -> 'cycle' \
               AND ev.attributes -> 'occurrence' IS NOT DISTINCT FROM $4 -> 'occurrence')",
        )
        .bind(v)
        .bind(e.device_id)
        .bind(&e.kind)
        .bind(&e.attributes)
        .fetch_one(&mut *tx)
        .await?;
        if told {
            tx.commit().await?;
            return Ok(0);
        }
    }
    let n = write_device_events(&mut *tx, &[e]).await?;
    tx.commit().await?;
    Ok(n)
}

async fn write_device_events<'c>(db: impl sqlx::PgExecutor<'c>, events: &[&OperatorEvent]) -> Result<u64, sqlx::Error> {
    if events.is_empty() {
        return Ok(0);
    }
    let mut device = Vec::with_capacity(events.len());
    let mut time: Vec<DateTime<Utc>> = Vec::with_capacity(events.len());
    let mut kind = Vec::with_capacity(events.len());
    let mut end: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(events.len());
    let mut lat = Vec::with_capacity(events.len());
    let mut lon = Vec::with_capacity(events.len());
    let mut fence = Vec::with_capacity(events.len());
    let mut mag = Vec::with_capacity(events.len());
    let mut sev = Vec::with_capacity(events.len());
    let mut attrs = Vec::with_capacity(events.len());
    for e in events {
        device.push(e.device_id);
        time.push(e.time);
        kind.push(e.kind.clone());
        end.push(e.end_time);
        lat.push(e.lat);
        lon.push(e.lon);
        fence.push(e.geofence_id);
        mag.push(e.magnitude.filter(|m| m.is_finite()));
        sev.push(e.severity.clone());
        attrs.push(e.attributes.clone());
    }
    let r = sqlx::query(
        "INSERT INTO events (device_id, time, kind, end_time, lat, lon, geofence_id, magnitude, severity, attributes) \
         SELECT * FROM UNNEST($1::int8[], $2::timestamptz[], $3::text[], $4::timestamptz[], $5::float8[], \
                              $6::float8[], $7::int8[], $8::float8[], $9::text[], $10::jsonb[]) \
         ON CONFLICT (device_id, time, kind) DO NOTHING",
    )
    .bind(&device)
    .bind(&time)
    .bind(&kind)
    .bind(&end)
    .bind(&lat)
    .bind(&lon)
    .bind(&fence)
    .bind(&mag)
    .bind(&sev)
    .bind(&attrs)
    .execute(db)
    .await?;
    Ok(r.rows_affected())
}

pub fn trip_row(device: i64, t: &TripUpdate) -> TripRow {
    TripRow {
        device_id: device,
        start_time: t.start.time,
        end_time: t.end.map(|e| e.time),
        start_lat: Some(t.start.lat),
        start_lon: Some(t.start.lon),
        end_lat: t.end.map(|e| e.lat),
        end_lon: t.end.map(|e| e.lon),
        distance_m: Some(t.distance_m),
        max_speed_kmh: Some(t.max_speed_kmh as f32),
        avg_speed_kmh: t.avg_speed_kmh.map(|v| v as f32),
        fuel_used_l: None,
        driver_id: None,
        attributes: serde_json::json!({
            "mode": t.mode,
            "distance_source": t.distance_source,
            "duration_s": t.stats.duration_s,
            "idle_s": t.stats.idle_s,
            "event_counts": t.stats.counts(),
            "stats": t.stats,
        }),
    }
}

/// Upserts trips. A trip whose device was deleted meanwhile is skipped (foreign key).
pub async fn write_trips(pool: &PgPool, trips: &[(i64, TripUpdate)]) -> Result<(), sqlx::Error> {
    for (device, t) in trips {
        match store::query::upsert_trip(pool, &trip_row(*device, t)).await {
            Ok(trip_id) => crate::safety::write_scores(pool, *device, trip_id, t).await?,
            Err(store::StoreError::Database(sqlx::Error::Database(e))) if e.code().as_deref() == Some("23503") => {
                tracing::debug!(device, "trip of a deleted device skipped");
            }
            Err(store::StoreError::Database(e)) => return Err(e),
            Err(e) => return Err(sqlx::Error::Protocol(e.to_string())),
        }
    }
    Ok(())
}
