//! Maintenance events from the stream become service recommendations for the vehicle's
//! owner, with matched shops; accepting one books it. Driven by [`sweep`], which reads
//! the events table (so it neither misses events published while it was down nor
//! depends on which bus is in use) and is idempotent: one recommendation per event.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::bookings::{self, Booking, NewBooking};
use crate::error::{Result, ServiceError};
use crate::matching::{self, MatchRequest};

/// The catalogue service a maintenance event calls for.
pub fn service_for(kind: &str, attributes: &serde_json::Value) -> Option<(String, String)> {
    match kind {
        "dtc_raised" => {
            let code = attributes.get("code").and_then(|c| c.as_str()).unwrap_or("?");
            let what = attributes
                .get("description")
                .and_then(|c| c.as_str())
                .unwrap_or("fault code");
            Some(("diagnostics".into(), format!("{code}: {what}")))
        }
        "service_due" => {
            let plan = attributes
                .get("plan")
                .or_else(|| attributes.get("name"))
                .and_then(|c| c.as_str())
                .unwrap_or("scheduled service");
            Some(("scheduled_service".into(), format!("{plan} due")))
        }
        _ => None,
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Recommendation {
    pub id: i64,
    pub tenant_id: i64,
    pub vehicle_id: Option<i64>,
    pub service: String,
    pub reason: String,
    pub matches: serde_json::Value,
    pub status: String,
    pub booking_id: Option<i64>,
}

/// device, kind, time, attributes, tenant, vehicle.
type SourceEvent = (i64, String, DateTime<Utc>, serde_json::Value, i64, Option<i64>);

const COLUMNS: &str = "id, tenant_id, vehicle_id, service, reason, matches, status, booking_id";

/// Creates recommendations for maintenance events since `since` that have none yet;
/// returns how many were created. Matches look a week ahead within 50 km.
pub async fn sweep(pool: &PgPool, since: DateTime<Utc>) -> Result<usize> {
    let events: Vec<SourceEvent> = sqlx::query_as(
        "SELECT e.device_id, e.kind, e.time, e.attributes, d.tenant_id, d.vehicle_id
         FROM events e JOIN devices d ON d.id = e.device_id
         WHERE e.kind IN ('dtc_raised', 'service_due') AND e.time >= $1
           AND NOT EXISTS (SELECT 1 FROM recommendations r
                           WHERE r.device_id = e.device_id AND r.event_kind = e.kind AND r.event_time = e.time)
         ORDER BY e.time",
    )
    .bind(since)
    .fetch_all(pool)
    .await?;
    let mut created = 0;
    for (device, kind, time, attrs, tenant, vehicle) in events {
        let Some((service, reason)) = service_for(&kind, &attrs) else {
            continue;
        };
        let position: Option<(f64, f64)> =
            sqlx::query_as("SELECT lat, lon FROM device_last_position WHERE device_id = $1")
                .bind(device)
                .fetch_optional(pool)
                .await?;
        let matches = match position {
            Some((lat, lon)) => {
                let now = Utc::now();
                matching::find_shops(
                    pool,
                    &MatchRequest {
                        lat,
                        lon,
                        service: service.clone(),
                        from: now,
                        to: now + Duration::days(7),
                        limit: 3,
                        max_distance_km: 50.0,
                    },
                )
                .await?
            }
            None => Vec::new(),
        };
        let n = sqlx::query(
            "INSERT INTO recommendations (tenant_id, vehicle_id, device_id, event_kind, event_time, service, reason, matches)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
        )
        .bind(tenant)
        .bind(vehicle)
        .bind(device)
        .bind(&kind)
        .bind(time)
        .bind(&service)
        .bind(&reason)
        .bind(serde_json::to_value(&matches).unwrap_or_default())
        .execute(pool)
        .await?
        .rows_affected();
        created += n as usize;
    }
    Ok(created)
}

pub async fn list(pool: &PgPool, tenant: i64) -> Result<Vec<Recommendation>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM recommendations WHERE tenant_id = $1 ORDER BY id DESC"
    )))
    .bind(tenant)
    .fetch_all(pool)
    .await?)
}

/// Accepts a recommendation by booking one of the shops at `start`. Only an open
/// recommendation of this tenant can be accepted, once.
pub async fn accept(
    pool: &PgPool,
    tenant: i64,
    id: i64,
    partner: i64,
    start: DateTime<Utc>,
    customer: Option<i64>,
    actor: &str,
) -> Result<Booking> {
    let mut tx = pool.begin().await?;
    let rec: Option<(String, String, Option<i64>)> = sqlx::query_as(
        "SELECT status, service, vehicle_id FROM recommendations WHERE id = $1 AND tenant_id = $2 FOR UPDATE",
    )
    .bind(id)
    .bind(tenant)
    .fetch_optional(&mut *tx)
    .await?;
    let (status, service, vehicle) = rec.ok_or(ServiceError::NotFound { what: "recommendation" })?;
    if status != "open" {
        return Err(ServiceError::conflict(format!(
            "the recommendation is already {status}"
        )));
    }
    let booking = bookings::create(
        pool,
        &NewBooking {
            tenant_id: Some(tenant),
            customer_id: customer,
            vehicle_id: vehicle,
            partner_id: partner,
            service,
            start,
        },
        actor,
    )
    .await?;
    sqlx::query("UPDATE recommendations SET status = 'accepted', booking_id = $2 WHERE id = $1")
        .bind(id)
        .bind(booking.id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(booking)
}
