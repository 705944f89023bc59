//! Read queries. All of them bound their result size: reports must not time out and an
//! API caller must not be able to ask for a year of 1 Hz fixes in one response.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::AssertSqlSafe;
use sqlx::PgPool;

use crate::copy::POSITION_COLUMNS;
use crate::row::{EventRow, PositionRow};
use crate::{Result, StoreError};

/// Upper bound on rows any query returns, whatever the caller asks for.
pub const MAX_ROWS: i64 = 100_000;

fn limit(requested: Option<i64>) -> i64 {
    requested.unwrap_or(MAX_ROWS).clamp(1, MAX_ROWS)
}

fn check_range(from: DateTime<Utc>, to: DateTime<Utc>) -> Result<()> {
    if from >= to {
        return Err(StoreError::Invalid(format!("empty time range {from} .. {to}")));
    }
    Ok(())
}

/// Latest fix of each listed device (devices with none are absent). One index probe per
/// device on a table with one row per device, so 10k devices is one fast query.
pub async fn latest_positions(pool: &PgPool, device_ids: &[i64]) -> Result<Vec<PositionRow>> {
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {POSITION_COLUMNS} FROM device_last_position WHERE device_id = ANY($1) ORDER BY device_id"
    )))
    .bind(device_ids)
    .fetch_all(pool)
    .await?)
}

/// Latest fix of every device of a tenant.
pub async fn latest_positions_for_tenant(pool: &PgPool, tenant_id: i64) -> Result<Vec<PositionRow>> {
    let cols: Vec<String> = POSITION_COLUMNS.split(',').map(|c| format!("l.{}", c.trim())).collect();
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {} FROM device_last_position l JOIN devices d ON d.id = l.device_id \
         WHERE d.tenant_id = $1 ORDER BY l.device_id",
        cols.join(", ")
    )))
    .bind(tenant_id)
    .fetch_all(pool)
    .await?)
}

/// Options for [`history`].
#[derive(Debug, Clone, Default)]
pub struct HistoryOptions {
    /// Keep only the first fix of each interval of this length (map tracks over long ranges).
    pub downsample: Option<Duration>,
    /// Only fixes the device marked valid.
    pub valid_only: bool,
    pub limit: Option<i64>,
}

/// Above this many downsampling bins, [`history`] scans the range once instead of
/// probing the index per bin.
const MAX_PROBED_BINS: i64 = 20_000;

/// Fixes of one device in `[from, to)`, oldest first.
pub async fn history(
    pool: &PgPool,
    device_id: i64,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    opts: &HistoryOptions,
) -> Result<Vec<PositionRow>> {
    check_range(from, to)?;
    let valid = if opts.valid_only { "AND valid" } else { "" };
    let rows = match opts.downsample {
        None => {
            sqlx::query_as(AssertSqlSafe(format!(
                "SELECT {POSITION_COLUMNS} FROM positions \
                 WHERE device_id = $1 AND fix_time >= $2 AND fix_time < $3 {valid} \
                 ORDER BY fix_time LIMIT $4"
            )))
            .bind(device_id)
            .bind(from)
            .bind(to)
            .bind(limit(opts.limit))
            .fetch_all(pool)
            .await?
        }
        Some(step) => {
            let step_us = i64::try_from(step.as_micros())
                .ok()
                .filter(|s| *s > 0)
                .ok_or_else(|| StoreError::Invalid(format!("bad downsample interval {step:?}")))?;
            // Bins are aligned to a fixed origin so that pages and overlapping ranges
            // agree. Few bins (a day at one per minute is 1 440): one probe of the
            // (device_id, fix_time) index per bin, so a 1 Hz day costs 1 440 index reads
            // instead of reading and sorting 86 400 rows. Many bins: one pass over the
            // range is cheaper than a probe per (mostly empty) bin.
            let span_us = (to - from).num_microseconds().unwrap_or(i64::MAX);
            let bins = span_us / step_us + 2;
            if bins <= MAX_PROBED_BINS {
                sqlx::query_as(AssertSqlSafe(format!(
                    "SELECT p.* FROM generate_series( \
                       date_bin($4 * interval '1 microsecond', $2::timestamptz, '2000-01-01 00:00:00+00'), \
                       $3::timestamptz - interval '1 microsecond', $4 * interval '1 microsecond') AS b, \
                     LATERAL (SELECT {POSITION_COLUMNS} FROM positions \
                       WHERE device_id = $1 AND fix_time >= greatest(b, $2::timestamptz) \
                         AND fix_time < least(b + $4 * interval '1 microsecond', $3::timestamptz) {valid} \
                       ORDER BY fix_time LIMIT 1) p \
                     ORDER BY p.fix_time LIMIT $5"
                )))
                .bind(device_id)
                .bind(from)
                .bind(to)
                .bind(step_us)
                .bind(limit(opts.limit))
                .fetch_all(pool)
                .await?
            } else {
                sqlx::query_as(AssertSqlSafe(format!(
                    "SELECT {POSITION_COLUMNS} FROM ( \
                       SELECT DISTINCT ON (b) date_bin($4 * interval '1 microsecond', fix_time, \
                              '2000-01-01 00:00:00+00') AS b, {POSITION_COLUMNS} FROM positions \
                       WHERE device_id = $1 AND fix_time >= $2 AND fix_time < $3 {valid} \
                       ORDER BY b, fix_time) s \
                     ORDER BY fix_time LIMIT $5"
                )))
                .bind(device_id)
                .bind(from)
                .bind(to)
                .bind(step_us)
                .bind(limit(opts.limit))
                .fetch_all(pool)
                .await?
            }
        }
    };
    Ok(rows)
}

/// Filters for [`events`]; `None` means "any".
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub device_ids: Option<Vec<i64>>,
    pub kinds: Option<Vec<String>>,
    pub geofence_id: Option<i64>,
    pub limit: Option<i64>,
}

/// Events in `[from, to)` matching the filter, oldest first.
pub async fn events(
    pool: &PgPool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    filter: &EventFilter,
) -> Result<Vec<EventRow>> {
    check_range(from, to)?;
    Ok(sqlx::query_as(
        "SELECT device_id, time, kind, lat, lon, geofence_id, attributes FROM events \
         WHERE time >= $1 AND time < $2 \
           AND ($3::int8[] IS NULL OR device_id = ANY($3)) \
           AND ($4::text[] IS NULL OR kind = ANY($4)) \
           AND ($5::int8 IS NULL OR geofence_id = $5) \
         ORDER BY time, device_id LIMIT $6",
    )
    .bind(from)
    .bind(to)
    .bind(filter.device_ids.as_deref())
    .bind(filter.kinds.as_deref())
    .bind(filter.geofence_id)
    .bind(limit(filter.limit))
    .fetch_all(pool)
    .await?)
}

/// One trip as the trip detector reports it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct TripRow {
    pub device_id: i64,
    pub start_time: DateTime<Utc>,
    pub end_time: Option<DateTime<Utc>>,
    pub start_lat: Option<f64>,
    pub start_lon: Option<f64>,
    pub end_lat: Option<f64>,
    pub end_lon: Option<f64>,
    pub distance_m: Option<f64>,
    pub max_speed_kmh: Option<f32>,
    pub avg_speed_kmh: Option<f32>,
    pub fuel_used_l: Option<f64>,
    pub driver_id: Option<i64>,
    pub attributes: serde_json::Value,
}

/// Inserts or completes a trip (keyed by device and start time): the detector writes an
/// open trip at its start and the same key again with its end. Returns the trip id.
pub async fn upsert_trip(pool: &PgPool, t: &TripRow) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "INSERT INTO trips (device_id, start_time, end_time, start_lat, start_lon, end_lat, end_lon, \
                            distance_m, max_speed_kmh, avg_speed_kmh, fuel_used_l, driver_id, attributes) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
         ON CONFLICT (device_id, start_time) DO UPDATE SET end_time = excluded.end_time, \
            end_lat = excluded.end_lat, end_lon = excluded.end_lon, distance_m = excluded.distance_m, \
            max_speed_kmh = excluded.max_speed_kmh, avg_speed_kmh = excluded.avg_speed_kmh, \
            fuel_used_l = excluded.fuel_used_l, driver_id = excluded.driver_id, attributes = excluded.attributes \
         RETURNING id",
    )
    .bind(t.device_id)
    .bind(t.start_time)
    .bind(t.end_time)
    .bind(t.start_lat)
    .bind(t.start_lon)
    .bind(t.end_lat)
    .bind(t.end_lon)
    .bind(t.distance_m)
    .bind(t.max_speed_kmh)
    .bind(t.avg_speed_kmh)
    .bind(t.fuel_used_l)
    .bind(t.driver_id)
    .bind(&t.attributes)
    .fetch_one(pool)
    .await?)
}

/// Trips of a device that started in `[from, to)`, oldest first.
pub async fn trips(pool: &PgPool, device_id: i64, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Vec<TripRow>> {
    check_range(from, to)?;
    Ok(sqlx::query_as(
        "SELECT device_id, start_time, end_time, start_lat, start_lon, end_lat, end_lon, distance_m, \
                max_speed_kmh, avg_speed_kmh, fuel_used_l, driver_id, attributes \
         FROM trips WHERE device_id = $1 AND start_time >= $2 AND start_time < $3 \
         ORDER BY start_time LIMIT $4",
    )
    .bind(device_id)
    .bind(from)
    .bind(to)
    .bind(MAX_ROWS)
    .fetch_all(pool)
    .await?)
}

/// One device-hour of `positions_hourly`.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct HourlyRow {
    pub device_id: i64,
    pub bucket: DateTime<Utc>,
    pub samples: i64,
    /// Path length over the hour's valid fixes, metres. Segments that cross an hour
    /// boundary belong to neither hour (the price of a definition a continuous aggregate
    /// can compute); for devices reporting every few seconds that is negligible.
    pub distance_m: f64,
    pub max_speed_kmh: Option<f32>,
    pub avg_speed_kmh: Option<f64>,
    /// Rise of the cumulative fuel counter within the hour, litres.
    pub fuel_used_l: Option<f64>,
    pub first_fix: DateTime<Utc>,
    pub last_fix: DateTime<Utc>,
}

/// Hourly figures for the listed devices with `bucket` in `[from, to)`. Closed hours only.
pub async fn hourly(
    pool: &PgPool,
    device_ids: &[i64],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<HourlyRow>> {
    check_range(from, to)?;
    Ok(sqlx::query_as(
        "SELECT device_id, bucket, samples, distance_m, max_speed_kmh, avg_speed_kmh, fuel_used_l, \
                first_fix, last_fix \
         FROM positions_hourly WHERE device_id = ANY($1) AND bucket >= $2 AND bucket < $3 \
         ORDER BY device_id, bucket LIMIT $4",
    )
    .bind(device_ids)
    .bind(from)
    .bind(to)
    .bind(MAX_ROWS)
    .fetch_all(pool)
    .await?)
}
