//! Privacy: export everything held about a driver, erase a driver on request, and the
//! consent settings that hide positions outside working hours (enforced in SQL by
//! `clutch_position_visible`, which every fleet-manager position read applies).
//!
//! Erasure deletes the operational personal data (the positions recorded during the
//! driver's trips, the trips themselves, scores, consent) and irreversibly pseudonymises
//! the contact details. Money is not touched: ledger entries, invoices and bookings keep
//! their amounts, so every ledger sum is identical before and after.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::error::{Result, ServiceError};
use crate::matching::OpeningHours;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Consent {
    pub track_outside_hours: bool,
    pub time_zone: String,
    /// `{"mon": [["08:00", "17:00"]], …}` in `time_zone`.
    pub working_hours: serde_json::Value,
}

/// Sets a driver's consent; `tenant` scopes the driver.
pub async fn set_consent(pool: &PgPool, tenant: i64, driver: i64, c: &Consent) -> Result<()> {
    if c.time_zone.parse::<chrono_tz::Tz>().is_err() {
        return Err(ServiceError::invalid(format!("unknown time zone {:?}", c.time_zone)));
    }
    OpeningHours::parse(&c.working_hours)?;
    let owned: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM drivers WHERE id = $1 AND tenant_id = $2)")
        .bind(driver)
        .bind(tenant)
        .fetch_one(pool)
        .await?;
    if !owned {
        return Err(ServiceError::NotFound { what: "driver" });
    }
    sqlx::query(
        "INSERT INTO driver_consent (driver_id, track_outside_hours, time_zone, working_hours) VALUES ($1, $2, $3, $4)
         ON CONFLICT (driver_id) DO UPDATE SET track_outside_hours = EXCLUDED.track_outside_hours,
             time_zone = EXCLUDED.time_zone, working_hours = EXCLUDED.working_hours, updated_at = now()",
    )
    .bind(driver)
    .bind(c.track_outside_hours)
    .bind(&c.time_zone)
    .bind(&c.working_hours)
    .execute(pool)
    .await?;
    Ok(())
}

/// Everything held about a driver, machine-readable: the driver record, consent, trips,
/// scores and events of the driver's trips.
pub async fn export_driver(pool: &PgPool, tenant: i64, driver: i64) -> Result<serde_json::Value> {
    let person: Option<serde_json::Value> =
        sqlx::query_scalar("SELECT to_jsonb(d) FROM drivers d WHERE d.id = $1 AND d.tenant_id = $2")
            .bind(driver)
            .bind(tenant)
            .fetch_optional(pool)
            .await?;
    let person = person.ok_or(ServiceError::NotFound { what: "driver" })?;
    let section = |sql: &'static str| async move {
        sqlx::query_scalar::<_, serde_json::Value>(sql)
            .bind(driver)
            .fetch_one(pool)
            .await
    };
    Ok(serde_json::json!({
        "driver": person,
        "consent": section("SELECT coalesce((SELECT to_jsonb(c) FROM driver_consent c WHERE c.driver_id = $1), 'null'::jsonb)").await?,
        "devices": section("SELECT coalesce(jsonb_agg(jsonb_build_object('id', id, 'identifier', identifier)), '[]') FROM devices WHERE driver_id = $1").await?,
        "trips": section("SELECT coalesce(jsonb_agg(to_jsonb(t) ORDER BY t.start_time), '[]') FROM trips t WHERE t.driver_id = $1").await?,
        "scores": section("SELECT coalesce(jsonb_agg(to_jsonb(s) ORDER BY s.period_start), '[]') FROM scores s WHERE s.subject_kind = 'driver' AND s.subject_id = $1").await?,
        "positions_during_trips": section(
            "SELECT coalesce(jsonb_agg(jsonb_build_object('device_id', p.device_id, 'time', p.fix_time, 'lat', p.lat, 'lon', p.lon, 'speed_kmh', p.speed_kmh) ORDER BY p.fix_time), '[]')
             FROM trips t JOIN positions p ON p.device_id = t.device_id
              AND p.fix_time >= t.start_time AND p.fix_time <= coalesce(t.end_time, t.start_time)
             WHERE t.driver_id = $1"
        ).await?,
    }))
}

/// What an erasure removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Erased {
    pub positions: u64,
    pub trips: u64,
    pub scores: u64,
}

/// Erases a driver: deletes positions of the driver's trips, the trips, scores and
/// consent, and replaces name, email, phone and card id with a one-way pseudonym.
pub async fn erase_driver(pool: &PgPool, tenant: i64, driver: i64) -> Result<Erased> {
    let mut tx = pool.begin().await?;
    let found: Option<String> =
        sqlx::query_scalar("SELECT name FROM drivers WHERE id = $1 AND tenant_id = $2 FOR UPDATE")
            .bind(driver)
            .bind(tenant)
            .fetch_optional(&mut *tx)
            .await?;
    if found.is_none() {
        return Err(ServiceError::NotFound { what: "driver" });
    }
    let positions = sqlx::query(
        "DELETE FROM positions p USING trips t
         WHERE t.driver_id = $1 AND p.device_id = t.device_id
           AND p.fix_time >= t.start_time AND p.fix_time <= coalesce(t.end_time, t.start_time)",
    )
    .bind(driver)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let scores = sqlx::query("DELETE FROM scores WHERE subject_kind = 'driver' AND subject_id = $1")
        .bind(driver)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    let trips = sqlx::query("DELETE FROM trips WHERE driver_id = $1")
        .bind(driver)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    sqlx::query("DELETE FROM driver_consent WHERE driver_id = $1")
        .bind(driver)
        .execute(&mut *tx)
        .await?;
    // A random salt makes the pseudonym irreversible even for someone who knows the name.
    let salt: Vec<u8> = sqlx::query_scalar("SELECT decode(md5(random()::text || clock_timestamp()::text), 'hex')")
        .fetch_one(&mut *tx)
        .await?;
    let mut h = Sha256::new();
    h.update(&salt);
    h.update(driver.to_be_bytes());
    let pseudonym = format!("erased-{}", &hex::encode(h.finalize())[..16]);
    sqlx::query(
        "UPDATE drivers SET name = $2, email = NULL, phone = NULL, external_id = NULL,
                attributes = jsonb_build_object('erased_at', now()) WHERE id = $1",
    )
    .bind(driver)
    .bind(&pseudonym)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE devices SET driver_id = NULL WHERE driver_id = $1")
        .bind(driver)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Erased {
        positions,
        trips,
        scores,
    })
}
