//! Partners — repair centres and parts shops, one model: the onboarding workflow (each
//! step audited), service catalogue, opening hours, parts inventory with reservations,
//! and ratings that only completed bookings can give.

use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::error::{Result, ServiceError};
use crate::matching::OpeningHours;

/// Onboarding and life-cycle changes a partner may go through.
pub const TRANSITIONS: &[(&str, &str)] = &[
    ("applied", "documents_submitted"),
    ("documents_submitted", "approved"),
    ("documents_submitted", "rejected"),
    ("rejected", "documents_submitted"),
    ("approved", "active"),
    ("active", "suspended"),
    ("suspended", "active"),
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPartner {
    pub name: String,
    /// `repair_center`, `parts_shop` or `both`.
    pub kind: String,
    pub lat: f64,
    pub lon: f64,
    #[serde(default = "one")]
    pub capacity: i32,
    #[serde(default = "utc")]
    pub time_zone: String,
    #[serde(default)]
    pub opening_hours: serde_json::Value,
    #[serde(default = "eur")]
    pub currency: String,
    #[serde(default = "ten_percent")]
    pub commission_bp: i32,
    #[serde(default)]
    pub tax_region: Option<String>,
}

fn one() -> i32 {
    1
}
fn utc() -> String {
    "UTC".into()
}
fn eur() -> String {
    "EUR".into()
}
fn ten_percent() -> i32 {
    1000
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Partner {
    pub id: i64,
    pub name: String,
    pub kind: String,
    pub status: String,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub capacity: i32,
    pub time_zone: String,
    pub opening_hours: serde_json::Value,
    pub currency: String,
    pub commission_bp: i32,
}

const COLUMNS: &str = "id, name, kind, status, lat, lon, capacity, time_zone, opening_hours, currency, commission_bp";

pub async fn create(pool: &PgPool, new: &NewPartner, actor: &str) -> Result<Partner> {
    if new.name.trim().is_empty() {
        return Err(ServiceError::invalid("name must not be empty"));
    }
    if !["repair_center", "parts_shop", "both"].contains(&new.kind.as_str()) {
        return Err(ServiceError::invalid("kind must be repair_center, parts_shop or both"));
    }
    if !(-90.0..=90.0).contains(&new.lat) || !(-180.0..=180.0).contains(&new.lon) {
        return Err(ServiceError::invalid("lat/lon out of range"));
    }
    if new.time_zone.parse::<chrono_tz::Tz>().is_err() {
        return Err(ServiceError::invalid(format!("unknown time zone {:?}", new.time_zone)));
    }
    let hours = if new.opening_hours.is_null() {
        serde_json::json!({})
    } else {
        OpeningHours::parse(&new.opening_hours)?;
        new.opening_hours.clone()
    };
    let mut tx = pool.begin().await?;
    let p: Partner = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO partners (name, kind, lat, lon, capacity, time_zone, opening_hours, currency, commission_bp, tax_region)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {COLUMNS}"
    )))
    .bind(new.name.trim())
    .bind(&new.kind)
    .bind(new.lat)
    .bind(new.lon)
    .bind(new.capacity)
    .bind(&new.time_zone)
    .bind(hours)
    .bind(&new.currency)
    .bind(new.commission_bp)
    .bind(&new.tax_region)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(d) if d.code().as_deref() == Some("23503") => {
            ServiceError::invalid(format!("unknown currency {:?}", new.currency))
        }
        sqlx::Error::Database(d) if d.code().as_deref() == Some("23514") => {
            ServiceError::invalid(format!("out of range: {}", d.constraint().unwrap_or("value")))
        }
        _ => e.into(),
    })?;
    sqlx::query(
        "INSERT INTO partner_audit (partner_id, from_status, to_status, actor) VALUES ($1, NULL, 'applied', $2)",
    )
    .bind(p.id)
    .bind(actor)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(p)
}

pub async fn get(pool: &PgPool, id: i64) -> Result<Partner> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM partners WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await?
    .ok_or(ServiceError::NotFound { what: "partner" })
}

/// Moves a partner along the onboarding workflow; every step is audited with its actor.
pub async fn transition(pool: &PgPool, id: i64, to: &str, actor: &str, note: Option<&str>) -> Result<Partner> {
    let mut tx = pool.begin().await?;
    let from: Option<String> = sqlx::query_scalar("SELECT status FROM partners WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    let from = from.ok_or(ServiceError::NotFound { what: "partner" })?;
    if !TRANSITIONS.iter().any(|&(f, t)| f == from && t == to) {
        return Err(ServiceError::conflict(format!(
            "a partner that is {from} cannot become {to}"
        )));
    }
    sqlx::query("UPDATE partners SET status = $2 WHERE id = $1")
        .bind(id)
        .bind(to)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO partner_audit (partner_id, from_status, to_status, actor, note) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(&from)
    .bind(to)
    .bind(actor)
    .bind(note)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    get(pool, id).await
}

/// Adds or reprices a catalogue service (price in the partner's currency, minor units).
pub async fn set_service(pool: &PgPool, partner: i64, service: &str, price: i64, duration_min: i32) -> Result<()> {
    if service.trim().is_empty() || price < 0 || !(1..=24 * 60).contains(&duration_min) {
        return Err(ServiceError::invalid(
            "service needs a name, a price ≥ 0 and a duration of 1 to 1440 minutes",
        ));
    }
    get(pool, partner).await?;
    sqlx::query(
        "INSERT INTO partner_services (partner_id, service, price, duration_min) VALUES ($1, $2, $3, $4)
         ON CONFLICT (partner_id, service) DO UPDATE SET price = EXCLUDED.price, duration_min = EXCLUDED.duration_min",
    )
    .bind(partner)
    .bind(service.trim())
    .bind(price)
    .bind(duration_min)
    .execute(pool)
    .await?;
    Ok(())
}

/// Sets stock for a part (creating it).
pub async fn set_stock(pool: &PgPool, partner: i64, sku: &str, name: &str, price: i64, stock: i32) -> Result<()> {
    if stock < 0 || price < 0 {
        return Err(ServiceError::invalid("stock and price must not be negative"));
    }
    get(pool, partner).await?;
    sqlx::query(
        "INSERT INTO partner_parts (partner_id, sku, name, price, stock) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (partner_id, sku) DO UPDATE SET name = EXCLUDED.name, price = EXCLUDED.price, stock = EXCLUDED.stock",
    )
    .bind(partner)
    .bind(sku)
    .bind(name)
    .bind(price)
    .bind(stock)
    .execute(pool)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(d) if d.constraint() == Some("partner_parts_reserved_le_stock") => {
            ServiceError::conflict("stock cannot go below what is reserved")
        }
        _ => e.into(),
    })?;
    Ok(())
}

/// Reserves `quantity` of a part for a booking; refused when not enough is free.
pub async fn reserve_part(pool: &PgPool, partner: i64, sku: &str, quantity: i32, booking: Option<i64>) -> Result<i64> {
    if quantity <= 0 {
        return Err(ServiceError::invalid("quantity must be positive"));
    }
    let mut tx = pool.begin().await?;
    let updated = sqlx::query("UPDATE partner_parts SET reserved = reserved + $3 WHERE partner_id = $1 AND sku = $2")
        .bind(partner)
        .bind(sku)
        .bind(quantity)
        .execute(&mut *tx)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.constraint() == Some("partner_parts_reserved_le_stock") => {
                ServiceError::conflict("not enough stock")
            }
            _ => e.into(),
        })?;
    if updated.rows_affected() == 0 {
        return Err(ServiceError::NotFound { what: "part" });
    }
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO part_reservations (partner_id, sku, booking_id, quantity) VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(partner)
    .bind(sku)
    .bind(booking)
    .bind(quantity)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// Ends a reservation: `consume` takes the parts out of stock, otherwise they are freed.
pub async fn finish_reservation(pool: &PgPool, id: i64, consume: bool) -> Result<()> {
    let mut tx = pool.begin().await?;
    let r: Option<(i64, String, i32)> = sqlx::query_as(
        "UPDATE part_reservations SET status = $2 WHERE id = $1 AND status = 'held' RETURNING partner_id, sku, quantity",
    )
    .bind(id)
    .bind(if consume { "consumed" } else { "released" })
    .fetch_optional(&mut *tx)
    .await?;
    let Some((partner, sku, q)) = r else {
        return Err(ServiceError::conflict("the reservation is not held"));
    };
    let stock_change = if consume { q } else { 0 };
    sqlx::query(
        "UPDATE partner_parts SET reserved = reserved - $3, stock = stock - $4 WHERE partner_id = $1 AND sku = $2",
    )
    .bind(partner)
    .bind(&sku)
    .bind(q)
    .bind(stock_change)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Rates the partner of a completed booking, once.
pub async fn rate(pool: &PgPool, booking: i64, stars: i16, comment: Option<&str>) -> Result<()> {
    if !(1..=5).contains(&stars) {
        return Err(ServiceError::invalid("stars must be 1 to 5"));
    }
    let b: Option<(i64, String)> = sqlx::query_as("SELECT partner_id, status FROM bookings WHERE id = $1")
        .bind(booking)
        .fetch_optional(pool)
        .await?;
    let (partner, status) = b.ok_or(ServiceError::NotFound { what: "booking" })?;
    if status != "completed" {
        return Err(ServiceError::conflict("only a completed booking can be rated"));
    }
    let inserted = sqlx::query(
        "INSERT INTO partner_ratings (booking_id, partner_id, stars, comment) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    )
    .bind(booking)
    .bind(partner)
    .bind(stars)
    .bind(comment)
    .execute(pool)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(ServiceError::conflict("the booking is already rated"));
    }
    Ok(())
}

/// A rating to rank by: the lower bound of the 95 % Wilson interval of the share of
/// "good" stars (stars scaled to 0..1), so three 5-star reviews do not outrank three
/// hundred 4.8-star ones. 0 with no ratings.
pub fn rating_lower_bound(stars_sum: f64, n: f64) -> f64 {
    if n <= 0.0 {
        return 0.0;
    }
    let p = ((stars_sum / n) - 1.0) / 4.0;
    let z = 1.96_f64;
    let z2 = z * z;
    let centre = p + z2 / (2.0 * n);
    let spread = z * ((p * (1.0 - p) + z2 / (4.0 * n)) / n).sqrt();
    ((centre - spread) / (1.0 + z2 / n)).clamp(0.0, 1.0)
}
