//! Writing operator output: events in one batched statement per flush (`UNNEST` of
//! column arrays, `ON CONFLICT DO NOTHING` on the events' unique key, so a replay after
//! a restart writes nothing twice), trips upserted by (device, start time).

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use store::query::TripRow;

use crate::event::OperatorEvent;
use crate::trips::TripUpdate;

/// Inserts events; returns how many were new.
pub async fn write_events(pool: &PgPool, events: &[OperatorEvent]) -> Result<u64, sqlx::Error> {
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
    .execute(pool)
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
