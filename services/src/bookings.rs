//! Bookings: a vehicle's visit to a partner for a service, taking one of the partner's
//! bays for the service's duration. Overlap on a bay is impossible in the database (an
//! exclusion constraint over active statuses); creation tries the bays in order and
//! treats the constraint as "taken", so 50 parallel requests for a one-bay slot yield
//! exactly one booking and 49 conflicts. Status changes follow [`TRANSITIONS`] through
//! conditional updates, so of two racing confirms only one wins.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{AssertSqlSafe, PgPool};

use crate::error::{Result, ServiceError};

/// Booking statuses in the order a visit goes through them.
pub const STATUSES: [&str; 6] = [
    "requested",
    "confirmed",
    "in_progress",
    "completed",
    "cancelled",
    "no_show",
];

/// Allowed `from → to` changes. Anything else is refused with a conflict.
pub const TRANSITIONS: &[(&str, &str)] = &[
    ("requested", "confirmed"),
    ("requested", "cancelled"),
    ("confirmed", "in_progress"),
    ("confirmed", "cancelled"),
    ("confirmed", "no_show"),
    ("in_progress", "completed"),
];

/// How many not-yet-confirmed bookings one customer may hold at once (SECURITY API6: one
/// customer cannot hold every slot).
pub const MAX_REQUESTED_PER_CUSTOMER: i64 = 5;

pub fn allowed(from: &str, to: &str) -> bool {
    TRANSITIONS.iter().any(|&(f, t)| f == from && t == to)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewBooking {
    pub tenant_id: Option<i64>,
    pub customer_id: Option<i64>,
    pub vehicle_id: Option<i64>,
    pub partner_id: i64,
    pub service: String,
    pub start: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Booking {
    pub id: i64,
    pub tenant_id: Option<i64>,
    pub customer_id: Option<i64>,
    pub vehicle_id: Option<i64>,
    pub partner_id: i64,
    pub service: String,
    pub bay: i32,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub status: String,
    pub price: i64,
    pub currency: String,
}

const BOOKING_COLUMNS: &str = "id, tenant_id, customer_id, vehicle_id, partner_id, service, bay, lower(slot) AS start, \
                               upper(slot) AS \"end\", status, price, currency";

/// Books the service at `start` on the first free bay; `Conflict` when every bay is taken.
pub async fn create(pool: &PgPool, new: &NewBooking, actor: &str) -> Result<Booking> {
    let partner: Option<(String, i32, Option<DateTime<Utc>>, String)> =
        sqlx::query_as("SELECT status, capacity, qualifications_expire_at, currency FROM partners WHERE id = $1")
            .bind(new.partner_id)
            .fetch_optional(pool)
            .await?;
    let Some((status, capacity, expires, currency)) = partner else {
        return Err(ServiceError::NotFound { what: "partner" });
    };
    if status != "active" || expires.is_some_and(|e| e <= new.start) {
        return Err(ServiceError::NotFound { what: "partner" });
    }
    let service: Option<(i64, i32)> =
        sqlx::query_as("SELECT price, duration_min FROM partner_services WHERE partner_id = $1 AND service = $2")
            .bind(new.partner_id)
            .bind(&new.service)
            .fetch_optional(pool)
            .await?;
    let Some((price, minutes)) = service else {
        return Err(ServiceError::invalid(format!(
            "the partner does not offer {:?}",
            new.service
        )));
    };
    if new.start < Utc::now() - Duration::minutes(5) {
        return Err(ServiceError::invalid("cannot book a slot in the past"));
    }
    let end = new.start + Duration::minutes(i64::from(minutes));

    for bay in 1..=capacity {
        let mut tx = pool.begin().await?;
        if let Some(customer) = new.customer_id {
            // One customer's holds are counted under a per-customer lock, so parallel
            // requests cannot all pass the cap together.
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext('clutch.booking.customer'), $1::int)")
                .bind(customer as i32)
                .execute(&mut *tx)
                .await?;
            let held: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM bookings WHERE customer_id = $1 AND status = 'requested' AND upper(slot) > now()",
            )
            .bind(customer)
            .fetch_one(&mut *tx)
            .await?;
            if held >= MAX_REQUESTED_PER_CUSTOMER {
                return Err(ServiceError::conflict(format!(
                    "a customer may hold at most {MAX_REQUESTED_PER_CUSTOMER} unconfirmed bookings"
                )));
            }
        }
        let inserted: std::result::Result<Booking, sqlx::Error> = sqlx::query_as(AssertSqlSafe(format!(
            "INSERT INTO bookings (tenant_id, customer_id, vehicle_id, partner_id, service, bay, slot, price, currency)
             VALUES ($1, $2, $3, $4, $5, $6, tstzrange($7, $8, '[)'), $9, $10)
             RETURNING {BOOKING_COLUMNS}"
        )))
        .bind(new.tenant_id)
        .bind(new.customer_id)
        .bind(new.vehicle_id)
        .bind(new.partner_id)
        .bind(&new.service)
        .bind(bay)
        .bind(new.start)
        .bind(end)
        .bind(price)
        .bind(&currency)
        .fetch_one(&mut *tx)
        .await;
        match inserted {
            Ok(b) => {
                audit(&mut tx, b.id, None, "requested", actor).await?;
                tx.commit().await?;
                return Ok(b);
            }
            Err(sqlx::Error::Database(db)) if db.constraint() == Some("bookings_no_overlap") => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ServiceError::conflict("no free bay for that slot"))
}

async fn audit(conn: &mut sqlx::PgConnection, id: i64, from: Option<&str>, to: &str, actor: &str) -> Result<()> {
    sqlx::query("INSERT INTO booking_audit (booking_id, from_status, to_status, actor) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(from)
        .bind(to)
        .bind(actor)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn get(pool: &PgPool, id: i64) -> Result<Booking> {
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {BOOKING_COLUMNS} FROM bookings WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await?
    .ok_or(ServiceError::NotFound { what: "booking" })
}

/// Moves a booking to `to` if the table allows it from its current status. A
/// conditional update: of concurrent changes from the same status, one wins.
pub async fn transition(pool: &PgPool, id: i64, to: &str, actor: &str) -> Result<Booking> {
    if !STATUSES.contains(&to) {
        return Err(ServiceError::invalid(format!("unknown status {to:?}")));
    }
    let from: Vec<&str> = TRANSITIONS.iter().filter(|t| t.1 == to).map(|t| t.0).collect();
    let mut tx = pool.begin().await?;
    let current: Option<String> = sqlx::query_scalar("SELECT status FROM bookings WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(current) = current else {
        return Err(ServiceError::NotFound { what: "booking" });
    };
    if !from.contains(&current.as_str()) {
        return Err(ServiceError::conflict(format!(
            "a {current} booking cannot become {to}"
        )));
    }
    sqlx::query("UPDATE bookings SET status = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(to)
        .execute(&mut *tx)
        .await?;
    audit(&mut tx, id, Some(&current), to, actor).await?;
    tx.commit().await?;
    get(pool, id).await
}
