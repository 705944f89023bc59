//! Daily summaries per vehicle and per driver (issue 8, item 3).
//!
//! `report_daily` holds one row per (tenant, time zone, subject, local day), derived from
//! the store's rollups: distance and fuel from `positions_hourly`, engine/driving/idle
//! time and trip counts from `trips` (the trip detector's `duration_s` and `idle_s`),
//! event counts from `events`; the day's score is joined from `scores` when read.
//! A day is computed on first request (days are local calendar days of the requested
//! zone, DST included) and recomputed on later requests until it has settled — one full
//! day after it ended, so late fixes still count — and never more than once a minute.
//! Settled days are a plain range read, so a year of a whole fleet answers in well under
//! a second (see the README for the measurement).
//!
//! Attribution: a trip counts on the local day it started; a driver is the trip's
//! driver, else the vehicle's assignment at the trip's start, else the device's driver;
//! a driver's events are those inside their trips. Hourly rollups are UTC hours: in a
//! zone with a non-whole-hour offset (India, Nepal) up to 45 minutes of distance near
//! midnight falls on the neighbouring day.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use sqlx::PgPool;

use crate::error::{ApiError, ApiQuery, ApiResult, ErrorBody};
use crate::{AppState, Ctx};

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DailyQuery {
    /// `vehicle` (default) or `driver`.
    pub group_by: Option<String>,
    /// First day, `YYYY-MM-DD` (or an RFC 3339 instant: its day in `tz`). Default: 7 days before `to`.
    pub from: Option<String>,
    /// Last day, inclusive, `YYYY-MM-DD` (or an RFC 3339 instant, exclusive). Default: today.
    /// At most 366 days from `from`.
    pub to: Option<String>,
    /// IANA time zone whose calendar days are reported; default the tenant's
    /// `settings.time_zone`, else UTC.
    pub tz: Option<String>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
    /// Only these vehicles (or drivers, with `group_by=driver`): comma-separated ids.
    pub ids: Option<String>,
}

/// One subject's day.
#[derive(Debug, Serialize, ToSchema)]
pub struct DailyRow {
    pub day: NaiveDate,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vehicle_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver_id: Option<i64>,
    pub name: String,
    pub distance_km: f64,
    pub engine_hours: f64,
    pub driving_s: f64,
    pub idle_s: f64,
    pub fuel_used_l: Option<f64>,
    pub trips: i32,
    /// Events by kind.
    #[schema(value_type = Object)]
    pub event_counts: Value,
    /// The day's safety score (0–100) when the operators computed one.
    pub score: Option<f32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DailyReport {
    pub group_by: String,
    pub tz: String,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub items: Vec<DailyRow>,
}

/// A settled day is not recomputed; an open one at most this often.
const RECOMPUTE_EVERY_S: i64 = 60;

fn parse_day(field: &str, s: &str, tz: chrono_tz::Tz, end: bool) -> ApiResult<NaiveDate> {
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d);
    }
    match DateTime::parse_from_rfc3339(s) {
        Ok(t) => {
            // An exclusive end instant: the last day is the one holding the instant before.
            let t = if end {
                t.with_timezone(&Utc) - Duration::microseconds(1)
            } else {
                t.with_timezone(&Utc)
            };
            Ok(t.with_timezone(&tz).date_naive())
        }
        Err(_) => Err(ApiError::validation(field, "a date YYYY-MM-DD or an RFC 3339 time")),
    }
}

/// Start of a local day as an instant (the first instant of that date, across DST gaps).
fn day_start(tz: chrono_tz::Tz, d: NaiveDate) -> DateTime<Utc> {
    let midnight = d.and_hms_opt(0, 0, 0).expect("midnight exists");
    match tz.from_local_datetime(&midnight) {
        chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _) => t.with_timezone(&Utc),
        // Midnight skipped by a DST jump (some zones switch at 00:00): one hour later exists.
        chrono::LocalResult::None => tz
            .from_local_datetime(&(midnight + Duration::hours(1)))
            .earliest()
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(|| Utc.from_utc_datetime(&midnight)),
    }
}

async fn tenant_tz(state: &AppState, ctx: &Ctx) -> ApiResult<String> {
    let tz: Option<String> = sqlx::query_scalar(
        // `timezone` is the operators' older spelling of the same setting.
        "SELECT coalesce(settings->>'time_zone', settings->>'timezone') FROM tenants WHERE id = $1",
    )
    .bind(ctx.tenant_id)
    .fetch_one(&state.pool)
    .await?;
    Ok(tz.unwrap_or_else(|| "UTC".into()))
}

/// Days of `[from, last]` to (re)compute: unknown, or computed before they settled (one
/// full day after they ended, so late fixes count) and not in the last minute.
async fn due_days(
    pool: &PgPool,
    tenant: i64,
    tz: chrono_tz::Tz,
    from: NaiveDate,
    last: NaiveDate,
) -> ApiResult<Vec<NaiveDate>> {
    let known: Vec<(NaiveDate, DateTime<Utc>)> = sqlx::query_as(
        "SELECT day, computed_at FROM report_days WHERE tenant_id = $1 AND tz = $2 AND day BETWEEN $3 AND $4",
    )
    .bind(tenant)
    .bind(tz.name())
    .bind(from)
    .bind(last)
    .fetch_all(pool)
    .await?;
    let known: BTreeMap<NaiveDate, DateTime<Utc>> = known.into_iter().collect();
    let now = Utc::now();
    let mut todo = Vec::new();
    let mut d = from;
    while d <= last {
        let end = day_start(tz, d + Duration::days(1));
        match known.get(&d) {
            Some(at) if *at >= end + Duration::days(1) => {}
            Some(at) if *at > now - Duration::seconds(RECOMPUTE_EVERY_S) => {}
            _ => todo.push(d),
        }
        d += Duration::days(1);
    }
    Ok(todo)
}

/// Days computed per transaction by [`precompute_settled`]: the report lock is held for
/// about a second, not for the whole backfill.
const PRECOMPUTE_CHUNK: usize = 31;

/// The nightly side of the report: every tenant with devices gets each settled day of the
/// last `days_back` days, in its own zone, computed once after it settled, so a year's
/// report is a range read on its first request too (computing 365 days on request took
/// 10 s for 500 vehicles; see the README). Days already settled are skipped, so after
/// the first backfill a run computes about one day per tenant. Returns the days computed.
pub async fn precompute_settled(pool: &PgPool, days_back: i64) -> ApiResult<usize> {
    let tenants: Vec<(i64, Option<String>)> = sqlx::query_as(
        "SELECT t.id, coalesce(t.settings->>'time_zone', t.settings->>'timezone') FROM tenants t \
         WHERE EXISTS (SELECT 1 FROM devices d WHERE d.tenant_id = t.id) ORDER BY t.id",
    )
    .fetch_all(pool)
    .await?;
    let mut computed = 0;
    for (tenant, tz) in tenants {
        let Ok(tz) = tz.as_deref().unwrap_or("UTC").parse::<chrono_tz::Tz>() else {
            tracing::warn!(
                tenant,
                "report precompute: the tenant's time zone is not an IANA name; skipped"
            );
            continue;
        };
        // The last settled day: it ended more than a day ago.
        let today = Utc::now().with_timezone(&tz).date_naive();
        let last = today - Duration::days(2);
        let todo = due_days(pool, tenant, tz, today - Duration::days(days_back), last).await?;
        for chunk in todo.chunks(PRECOMPUTE_CHUNK) {
            compute_days(pool, tenant, tz.name(), chunk).await?;
            computed += chunk.len();
        }
    }
    Ok(computed)
}

/// Computes (or recomputes) `days` for a tenant and zone from the rollups.
async fn compute_days(pool: &PgPool, tenant: i64, tz: &str, days: &[NaiveDate]) -> ApiResult<()> {
    if days.is_empty() {
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    // One computation per tenant and zone at a time; a concurrent request waits and then
    // finds the days done.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('clutch_report:' || $1::text || ':' || $2, 0))")
        .bind(tenant)
        .bind(tz)
        .execute(&mut *tx)
        .await?;
    let todo: Vec<NaiveDate> = sqlx::query_scalar(
        "SELECT d FROM unnest($3::date[]) AS d WHERE NOT EXISTS (SELECT 1 FROM report_days r \
         WHERE r.tenant_id = $1 AND r.tz = $2 AND r.day = d AND r.computed_at > now() - make_interval(secs => $4))",
    )
    .bind(tenant)
    .bind(tz)
    .bind(days)
    .bind(RECOMPUTE_EVERY_S as f64)
    .fetch_all(&mut *tx)
    .await?;
    if todo.is_empty() {
        return Ok(tx.commit().await?);
    }
    sqlx::query("DELETE FROM report_daily WHERE tenant_id = $1 AND tz = $2 AND day = ANY ($3)")
        .bind(tenant)
        .bind(tz)
        .bind(&todo)
        .execute(&mut *tx)
        .await?;
    sqlx::query(COMPUTE)
        .bind(tenant)
        .bind(tz)
        .bind(&todo)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO report_days (tenant_id, tz, day, computed_at) SELECT $1, $2, d, now() FROM unnest($3::date[]) d \
         ON CONFLICT (tenant_id, tz, day) DO UPDATE SET computed_at = now()",
    )
    .bind(tenant)
    .bind(tz)
    .bind(&todo)
    .execute(&mut *tx)
    .await?;
    Ok(tx.commit().await?)
}

/// `$1` tenant, `$2` zone, `$3` local days: every vehicle's and driver's rows.
const COMPUTE: &str = "\
WITH days AS ( \
    SELECT day, (day::timestamp AT TIME ZONE $2) AS t0, ((day + 1)::timestamp AT TIME ZONE $2) AS t1 \
    FROM unnest($3::date[]) AS day), \
devs AS (SELECT id, vehicle_id, driver_id FROM devices WHERE tenant_id = $1), \
hourly AS ( \
    SELECT dv.vehicle_id, dy.day, sum(h.distance_m) AS dist, sum(h.fuel_used_l) AS fuel \
    FROM days dy JOIN positions_hourly h ON h.bucket >= dy.t0 AND h.bucket < dy.t1 \
    JOIN devs dv ON dv.id = h.device_id WHERE dv.vehicle_id IS NOT NULL GROUP BY 1, 2), \
tr AS ( \
    SELECT t.device_id, dv.vehicle_id, dy.day, t.start_time, coalesce(t.end_time, dy.t1) AS end_time, \
        coalesce(t.distance_m, 0) AS dist, t.fuel_used_l AS fuel, \
        coalesce(CASE WHEN jsonb_typeof(t.attributes->'duration_s') = 'number' \
                      THEN (t.attributes->>'duration_s')::float8 END, \
                 extract(epoch FROM coalesce(t.end_time, least(now(), dy.t1)) - t.start_time)::float8, 0) AS dur, \
        coalesce(CASE WHEN jsonb_typeof(t.attributes->'idle_s') = 'number' \
                      THEN (t.attributes->>'idle_s')::float8 END, 0) AS idle, \
        coalesce(t.driver_id, \
            (SELECT a.driver_id FROM driver_assignments a WHERE a.vehicle_id = dv.vehicle_id \
               AND a.start_time <= t.start_time AND (a.end_time IS NULL OR a.end_time > t.start_time) \
             ORDER BY a.start_time DESC LIMIT 1), \
            dv.driver_id) AS driver_id \
    FROM days dy JOIN trips t ON t.start_time >= dy.t0 AND t.start_time < dy.t1 \
    JOIN devs dv ON dv.id = t.device_id), \
ev AS ( \
    SELECT e.device_id, dv.vehicle_id, dy.day, e.kind, e.time \
    FROM days dy JOIN events e ON e.time >= dy.t0 AND e.time < dy.t1 JOIN devs dv ON dv.id = e.device_id), \
v_tr AS (SELECT vehicle_id, day, sum(dist) AS dist, sum(fuel) AS fuel, sum(dur) AS dur, sum(least(idle, dur)) AS idle, \
         count(*) AS n FROM tr WHERE vehicle_id IS NOT NULL GROUP BY 1, 2), \
v_ev AS (SELECT vehicle_id, day, jsonb_object_agg(kind, n) AS counts FROM \
         (SELECT vehicle_id, day, kind, count(*) AS n FROM ev WHERE vehicle_id IS NOT NULL GROUP BY 1, 2, 3) x \
         GROUP BY 1, 2), \
v_keys AS (SELECT vehicle_id, day FROM hourly UNION SELECT vehicle_id, day FROM v_tr \
           UNION SELECT vehicle_id, day FROM v_ev), \
d_tr AS (SELECT driver_id, day, sum(dist) AS dist, sum(fuel) AS fuel, sum(dur) AS dur, sum(least(idle, dur)) AS idle, \
         count(*) AS n FROM tr WHERE driver_id IS NOT NULL GROUP BY 1, 2), \
d_ev AS (SELECT driver_id, day, jsonb_object_agg(kind, n) AS counts FROM \
         (SELECT t.driver_id, t.day, e.kind, count(*) AS n FROM tr t JOIN ev e ON e.device_id = t.device_id \
            AND e.time >= t.start_time AND e.time <= t.end_time WHERE t.driver_id IS NOT NULL GROUP BY 1, 2, 3) x \
         GROUP BY 1, 2) \
INSERT INTO report_daily (tenant_id, tz, subject_kind, subject_id, day, distance_m, engine_s, driving_s, idle_s, \
    fuel_used_l, trips, event_counts) \
SELECT $1, $2, 'vehicle', k.vehicle_id, k.day, coalesce(h.dist, t.dist, 0), coalesce(t.dur, 0), \
    coalesce(t.dur - t.idle, 0), coalesce(t.idle, 0), coalesce(h.fuel, t.fuel), coalesce(t.n, 0)::int, \
    coalesce(e.counts, '{}') \
FROM v_keys k LEFT JOIN hourly h USING (vehicle_id, day) LEFT JOIN v_tr t USING (vehicle_id, day) \
    LEFT JOIN v_ev e USING (vehicle_id, day) \
UNION ALL \
SELECT $1, $2, 'driver', t.driver_id, t.day, t.dist, t.dur, t.dur - t.idle, t.idle, t.fuel, t.n::int, \
    coalesce(e.counts, '{}') \
FROM d_tr t LEFT JOIN d_ev e USING (driver_id, day)";

type ReportRow = (
    i64,
    String,
    NaiveDate,
    f64,
    f64,
    f64,
    f64,
    Option<f64>,
    i32,
    Value,
    Option<f32>,
);

/// Daily summary per vehicle or per driver: distance, engine hours, driving and idle
/// time, fuel used, trips, event counts by kind and score, per local day of `tz`.
#[utoipa::path(get, path = "/api/v1/reports/daily", tag = "reports", params(DailyQuery),
    responses((status = 200, body = DailyReport, description = "JSON, or CSV with `format=csv`"),
              (status = 422, body = ErrorBody)))]
pub async fn daily(State(state): State<AppState>, ctx: Ctx, ApiQuery(q): ApiQuery<DailyQuery>) -> ApiResult<Response> {
    let group_by = q.group_by.as_deref().unwrap_or("vehicle");
    if group_by != "vehicle" && group_by != "driver" {
        return Err(ApiError::validation("group_by", "vehicle or driver"));
    }
    let format = q.format.as_deref().unwrap_or("json");
    if format != "json" && format != "csv" {
        return Err(ApiError::validation("format", "json or csv"));
    }
    let tz_name = match &q.tz {
        Some(t) => t.clone(),
        None => tenant_tz(&state, &ctx).await?,
    };
    let tz: chrono_tz::Tz = tz_name
        .parse()
        .map_err(|_| ApiError::validation("tz", "an IANA time zone such as Europe/Paris"))?;
    let tz_name = tz.name().to_string();
    let today = Utc::now().with_timezone(&tz).date_naive();
    let to = match &q.to {
        Some(s) => parse_day("to", s, tz, true)?,
        None => today,
    };
    let from = match &q.from {
        Some(s) => parse_day("from", s, tz, false)?,
        None => to - Duration::days(6),
    };
    if from > to {
        return Err(ApiError::validation("to", "must not be before from"));
    }
    if (to - from).num_days() >= 366 {
        return Err(ApiError::validation("to", "at most 366 days"));
    }
    let ids: Option<Vec<i64>> = match &q.ids {
        None => None,
        Some(s) => Some(
            s.split(',')
                .filter(|s| !s.trim().is_empty())
                .map(|v| v.trim().parse::<i64>())
                .collect::<Result<_, _>>()
                .map_err(|_| ApiError::validation("ids", "comma-separated integers"))?,
        ),
    };
    // Drivers and customers see only their own subjects.
    let ids = match crate::scope::subjects(&state, &ctx, group_by).await? {
        None => ids,
        Some(mine) => Some(match ids {
            None => mine,
            Some(asked) => asked.into_iter().filter(|i| mine.contains(i)).collect(),
        }),
    };
    // Days to (re)compute: unknown, or not yet settled (ended less than a day ago).
    let last_computable = to.min(today);
    if from <= last_computable {
        let todo = due_days(&state.pool, ctx.tenant_id, tz, from, last_computable).await?;
        compute_days(&state.pool, ctx.tenant_id, &tz_name, &todo).await?;
    }
    let (from_ts, to_ts) = (
        day_start(tz, from) - Duration::days(1),
        day_start(tz, to + Duration::days(1)) + Duration::days(1),
    );
    let rows: Vec<ReportRow> = sqlx::query_as(
        "WITH s AS (SELECT subject_id, ((period_start + interval '12 hours') AT TIME ZONE $2)::date AS day, score \
             FROM scores WHERE tenant_id = $1 AND period = 'day' AND subject_kind = $3 \
             AND period_start >= $6 AND period_start < $7) \
         SELECT r.subject_id, coalesce(v.name, dr.name, ''), r.day, r.distance_m, r.engine_s, r.driving_s, r.idle_s, \
             r.fuel_used_l, r.trips, r.event_counts, s.score \
         FROM report_daily r LEFT JOIN s ON s.subject_id = r.subject_id AND s.day = r.day \
         LEFT JOIN vehicles v ON $3 = 'vehicle' AND v.id = r.subject_id AND v.tenant_id = $1 \
         LEFT JOIN drivers dr ON $3 = 'driver' AND dr.id = r.subject_id AND dr.tenant_id = $1 \
         WHERE r.tenant_id = $1 AND r.tz = $2 AND r.subject_kind = $3 AND r.day BETWEEN $4 AND $5 \
           AND ($8::int8[] IS NULL OR r.subject_id = ANY ($8)) \
         ORDER BY r.day, r.subject_id",
    )
    .bind(ctx.tenant_id)
    .bind(&tz_name)
    .bind(group_by)
    .bind(from)
    .bind(to)
    .bind(from_ts)
    .bind(to_ts)
    .bind(&ids)
    .fetch_all(&state.pool)
    .await?;
    let vehicle = group_by == "vehicle";
    let items: Vec<DailyRow> = rows
        .into_iter()
        .map(|r| DailyRow {
            day: r.2,
            vehicle_id: vehicle.then_some(r.0),
            driver_id: (!vehicle).then_some(r.0),
            name: r.1,
            distance_km: round3(r.3 / 1000.0),
            engine_hours: round3(r.4 / 3600.0),
            driving_s: r.5.round(),
            idle_s: r.6.round(),
            fuel_used_l: r.7.map(round3),
            trips: r.8,
            event_counts: r.9,
            score: r.10,
        })
        .collect();
    if format == "csv" {
        let name = format!("clutch-daily-{group_by}-{from}-{to}.csv");
        return Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\"")),
            ],
            to_csv(group_by, &items),
        )
            .into_response());
    }
    Ok(axum::Json(DailyReport {
        group_by: group_by.into(),
        tz: tz_name,
        from,
        to,
        items,
    })
    .into_response())
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// RFC 4180 quoting, and a leading `'` on text a spreadsheet would run as a formula.
pub fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

fn to_csv(group_by: &str, items: &[DailyRow]) -> String {
    let kinds: BTreeSet<&str> = items
        .iter()
        .filter_map(|r| r.event_counts.as_object())
        .flat_map(|o| o.keys().map(String::as_str))
        .collect();
    let mut s = format!(
        "day,{group_by}_id,name,distance_km,engine_hours,driving_s,idle_s,fuel_used_l,trips,score,events_total"
    );
    for k in &kinds {
        s.push(',');
        s.push_str(&csv_field(&format!("events_{k}")));
    }
    s.push_str("\r\n");
    let opt = |v: Option<String>| v.unwrap_or_default();
    for r in items {
        let counts = r.event_counts.as_object();
        let total: i64 = counts.map(|o| o.values().filter_map(Value::as_i64).sum()).unwrap_or(0);
        let _ = write!(
            s,
            "{},{},{},{},{},{},{},{},{},{},{}",
            r.day,
            r.vehicle_id.or(r.driver_id).unwrap_or_default(),
            csv_field(&r.name),
            r.distance_km,
            r.engine_hours,
            r.driving_s,
            r.idle_s,
            opt(r.fuel_used_l.map(|v| v.to_string())),
            r.trips,
            opt(r.score.map(|v| v.to_string())),
            total
        );
        for k in &kinds {
            let n = counts.and_then(|o| o.get(*k)).and_then(Value::as_i64).unwrap_or(0);
            let _ = write!(s, ",{n}");
        }
        s.push_str("\r\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quoting() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
        assert_eq!(csv_field("=HYPERLINK(1)"), "'=HYPERLINK(1)");
        assert_eq!(csv_field("-1,2"), "\"'-1,2\"");
    }

    #[test]
    fn local_days_follow_dst() {
        let tz: chrono_tz::Tz = "Europe/Paris".parse().unwrap();
        // 2026-03-29: clocks go forward at 02:00; the day is 23 hours long.
        let d = NaiveDate::from_ymd_opt(2026, 3, 29).unwrap();
        let len = day_start(tz, d + Duration::days(1)) - day_start(tz, d);
        assert_eq!(len, Duration::hours(23));
        assert_eq!(day_start(tz, d).to_rfc3339(), "2026-03-28T23:00:00+00:00");
        // An exclusive end instant at local midnight ends the previous day.
        let to = parse_day("to", "2026-03-30T00:00:00+02:00", tz, true).unwrap();
        assert_eq!(to, d);
    }
}
