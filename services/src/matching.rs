//! Shop matching: for a vehicle's position and a needed service, the nearest qualified
//! partners that are open and have a free bay in the wanted window, ranked by distance,
//! rating (a lower confidence bound), price and earliest slot. Candidates come from an
//! R-tree over partner locations (on the unit sphere, so nearest-first order is exact
//! anywhere on Earth); slots are checked against opening hours in the partner's time
//! zone and the bookings already holding its bays.

use chrono::{DateTime, Datelike, Duration, NaiveTime, TimeZone, Utc};
use rstar::RTree;
use rstar::primitives::GeomWithData;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::error::{Result, ServiceError};
use crate::partners::rating_lower_bound;

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// Weekly opening hours, `{"mon": [["08:00", "12:00"], ["13:00", "18:00"]], …}` in the
/// partner's local time. A partner with no hours at all is taken as always open; a day
/// that is missing from non-empty hours is closed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OpeningHours {
    days: [Vec<(NaiveTime, NaiveTime)>; 7],
    always: bool,
}

impl OpeningHours {
    pub fn parse(v: &serde_json::Value) -> Result<OpeningHours> {
        let obj = v
            .as_object()
            .ok_or_else(|| ServiceError::invalid("opening_hours must be an object keyed by day"))?;
        let mut hours = OpeningHours {
            always: obj.is_empty(),
            ..Default::default()
        };
        for (k, ranges) in obj {
            let d = DAYS
                .iter()
                .position(|d| d == k)
                .ok_or_else(|| ServiceError::invalid(format!("opening_hours: unknown day {k:?}")))?;
            let ranges = ranges
                .as_array()
                .ok_or_else(|| ServiceError::invalid(format!("opening_hours.{k} must be a list of [open, close]")))?;
            for r in ranges {
                let pair = r.as_array().filter(|a| a.len() == 2);
                let parse = |x: &serde_json::Value| {
                    x.as_str()
                        .and_then(|s| NaiveTime::parse_from_str(s, "%H:%M").ok())
                        .ok_or_else(|| ServiceError::invalid(format!("opening_hours.{k}: times are \"HH:MM\"")))
                };
                let pair = pair.ok_or_else(|| ServiceError::invalid(format!("opening_hours.{k}: [open, close]")))?;
                let (open, close) = (parse(&pair[0])?, parse(&pair[1])?);
                if open >= close {
                    return Err(ServiceError::invalid(format!(
                        "opening_hours.{k}: open must be before close"
                    )));
                }
                hours.days[d].push((open, close));
            }
        }
        Ok(hours)
    }

    /// Whether `[start, end)` lies inside one opening period of one local day.
    pub fn contains(&self, tz: chrono_tz::Tz, start: DateTime<Utc>, end: DateTime<Utc>) -> bool {
        if self.always {
            return true;
        }
        let (s, e) = (
            tz.from_utc_datetime(&start.naive_utc()),
            tz.from_utc_datetime(&end.naive_utc()),
        );
        if s.date_naive() != e.date_naive() && e.time() != NaiveTime::MIN {
            return false;
        }
        let day = s.weekday().num_days_from_monday() as usize;
        let end_time = if e.date_naive() != s.date_naive() {
            NaiveTime::from_hms_opt(23, 59, 59).unwrap_or_default()
        } else {
            e.time()
        };
        self.days[day].iter().any(|&(o, c)| o <= s.time() && end_time <= c)
    }
}

/// What to match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatchRequest {
    pub lat: f64,
    pub lon: f64,
    pub service: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub limit: usize,
    pub max_distance_km: f64,
}

/// One matched shop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Match {
    pub partner_id: i64,
    pub name: String,
    pub distance_m: f64,
    pub rating: f64,
    pub ratings: i64,
    pub price: i64,
    pub currency: String,
    pub earliest_slot: DateTime<Utc>,
    /// Lower is better; how the list is ordered (see [`find_shops`]).
    pub rank_cost: f64,
}

fn unit(lat: f64, lon: f64) -> [f64; 3] {
    let (la, lo) = (lat.to_radians(), lon.to_radians());
    [la.cos() * lo.cos(), la.cos() * lo.sin(), la.sin()]
}

pub fn haversine_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * a.sqrt().min(1.0).asin()
}

type Candidate = (
    i64,
    String,
    f64,
    f64,
    i32,
    String,
    serde_json::Value,
    i64,
    i32,
    String,
    i64,
    i64,
);

/// The step between candidate slot starts.
const SLOT_STEP_MIN: i64 = 15;

/// Finds shops. Ranking cost (lower first): distance in km, plus 2 per day until the
/// earliest slot, plus 10 × price relative to the cheapest candidate's, minus 10 × the
/// rating lower bound. So 1 km ≈ half a day of waiting ≈ 10 % of price ≈ 0.1 of rating.
pub async fn find_shops(pool: &PgPool, req: &MatchRequest) -> Result<Vec<Match>> {
    if req.to <= req.from {
        return Err(ServiceError::invalid("the window must end after it starts"));
    }
    if req.to - req.from > Duration::days(31) {
        return Err(ServiceError::invalid("the window may span at most 31 days"));
    }
    let rows: Vec<Candidate> = sqlx::query_as(
        "SELECT p.id, p.name, p.lat, p.lon, p.capacity, p.time_zone, p.opening_hours, s.price, s.duration_min,
                p.currency, coalesce(sum(r.stars), 0)::bigint, count(r.stars)
         FROM partners p
         JOIN partner_services s ON s.partner_id = p.id AND s.service = $1
         LEFT JOIN partner_ratings r ON r.partner_id = p.id
         WHERE p.status = 'active' AND p.lat IS NOT NULL AND p.lon IS NOT NULL
           AND (p.qualifications_expire_at IS NULL OR p.qualifications_expire_at > $2)
         GROUP BY p.id, s.price, s.duration_min",
    )
    .bind(&req.service)
    .bind(req.to)
    .fetch_all(pool)
    .await?;
    let tree = RTree::bulk_load(
        rows.iter()
            .enumerate()
            .map(|(i, r)| GeomWithData::new(unit(r.2, r.3), i))
            .collect(),
    );
    let cheapest = rows.iter().map(|r| r.7).min().unwrap_or(0).max(1) as f64;
    let mut out = Vec::new();
    for near in tree.nearest_neighbor_iter(&unit(req.lat, req.lon)) {
        let r = &rows[near.data];
        let distance_m = haversine_m(req.lat, req.lon, r.2, r.3);
        if distance_m > req.max_distance_km * 1000.0 {
            break;
        }
        let Some(slot) = earliest_slot(pool, r, req.from, req.to).await? else {
            continue;
        };
        let rating = rating_lower_bound(r.10 as f64, r.11 as f64);
        let days_until = (slot - req.from).num_minutes() as f64 / 1440.0;
        let rank_cost = distance_m / 1000.0 + 2.0 * days_until + 10.0 * (r.7 as f64 / cheapest - 1.0) - 10.0 * rating;
        out.push(Match {
            partner_id: r.0,
            name: r.1.clone(),
            distance_m,
            rating,
            ratings: r.11,
            price: r.7,
            currency: r.9.clone(),
            earliest_slot: slot,
            rank_cost,
        });
        // Enough candidates looked at: the ranking may reorder, not the set much.
        if out.len() >= req.limit.max(1) * 4 {
            break;
        }
    }
    out.sort_by(|a, b| {
        a.rank_cost
            .total_cmp(&b.rank_cost)
            .then(a.partner_id.cmp(&b.partner_id))
    });
    out.truncate(req.limit.max(1));
    Ok(out)
}

async fn earliest_slot(
    pool: &PgPool,
    r: &Candidate,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>> {
    let tz: chrono_tz::Tz = r.5.parse().unwrap_or(chrono_tz::UTC);
    let hours = OpeningHours::parse(&r.6).unwrap_or_default();
    let busy: Vec<(DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT lower(slot), upper(slot) FROM bookings
         WHERE partner_id = $1 AND status IN ('requested', 'confirmed', 'in_progress') AND slot && tstzrange($2, $3)",
    )
    .bind(r.0)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?;
    let dur = Duration::minutes(i64::from(r.8));
    // Start on the step grid at or after `from`.
    let step = SLOT_STEP_MIN * 60;
    let first = from.timestamp().div_euclid(step) * step + if from.timestamp() % step == 0 { 0 } else { step };
    let mut t = DateTime::from_timestamp(first, 0).unwrap_or(from);
    while t + dur <= to {
        let end = t + dur;
        if hours.contains(tz, t, end) {
            let taken = busy.iter().filter(|(s, e)| *s < end && t < *e).count();
            if (taken as i32) < r.4 {
                return Ok(Some(t));
            }
        }
        t += Duration::minutes(SLOT_STEP_MIN);
    }
    Ok(None)
}

/// Where a vehicle is: the newest fix of any of its devices.
pub async fn vehicle_position(pool: &PgPool, vehicle: i64) -> Result<(f64, f64)> {
    let p: Option<(f64, f64)> = sqlx::query_as(
        "SELECT l.lat, l.lon FROM device_last_position l JOIN devices d ON d.id = l.device_id
         WHERE d.vehicle_id = $1 ORDER BY l.fix_time DESC LIMIT 1",
    )
    .bind(vehicle)
    .fetch_optional(pool)
    .await?;
    p.ok_or(ServiceError::NotFound {
        what: "vehicle position",
    })
}
