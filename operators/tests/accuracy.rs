//! Accuracy against ground truth: firmware-sim vehicles (default noise) drive in
//! simulated time; their readings go through the real bus into the real store, the
//! operators detect events, and the scorer compares the store with the simulator's
//! ground truth. Prints the table that operators/README.md shows.

mod common;

use chrono::Duration;
use firmware_sim::noise::NoiseConfig;
use firmware_sim::route::{BBox, RouteSpec};
use firmware_sim::scenario::{Dur, EventKind, EventSpec, Geofence};
use firmware_sim::track::{Track, TrackConfig};
use firmware_sim::vehicle::VehicleConfig;
use operators::score::{TruthLine, parse_truth, score_store};
use operators::{ManualClock, OperatorsConfig};
use store::PositionRow;

const DEVICES: usize = 4;
const HOURS: f64 = 3.0;
const BATCH_S: usize = 10;

fn event(kind: EventKind, at_s: f64) -> EventSpec {
    let mut e = EventSpec {
        kind,
        at: Dur(std::time::Duration::from_secs_f64(at_s)),
        duration: None,
        magnitude_g: None,
        speed_kmh: None,
        limit_kmh: None,
        litres: None,
        code: None,
        clear_at: None,
        count: None,
    };
    match kind {
        EventKind::HarshBraking => {
            e.magnitude_g = Some(0.55);
            e.duration = Some(Dur(std::time::Duration::from_secs(2)));
        }
        EventKind::HarshAcceleration => {
            e.magnitude_g = Some(0.47);
            e.duration = Some(Dur(std::time::Duration::from_secs(3)));
        }
        EventKind::HarshCornering => {
            e.magnitude_g = Some(0.52);
            e.duration = Some(Dur(std::time::Duration::from_secs(2)));
        }
        EventKind::Overspeed => {
            e.speed_kmh = Some(118.0);
            e.limit_kmh = Some(90.0);
            e.duration = Some(Dur(std::time::Duration::from_secs(40)));
        }
        _ => {}
    }
    e
}

/// Drives until the first ignition-off (at most 4000 s); returns the seconds driven.
fn warm_up(track: &mut Track) -> i64 {
    let mut warm = 0;
    loop {
        track.advance(1.0);
        warm += 1;
        if !track.vehicle.state.ignition || warm > 4000 {
            return warm;
        }
    }
}

fn fences() -> Vec<Geofence> {
    let f = |name: &str, lat, lon, radius_m| Geofence {
        dwell: Dur(std::time::Duration::from_secs(120)),
        ..Geofence::circle(name, lat, lon, radius_m)
    };
    vec![
        f("depot", 54.69, 25.28, 400.0),
        f("west", 54.675, 25.25, 300.0),
        f("east", 54.705, 25.31, 350.0),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detections_match_ground_truth() {
    let env = common::env(stream::BusConfig::default()).await;
    let pool = env.db.pool.clone();
    let mut fence_ids = Vec::new();
    for g in fences() {
        fence_ids.push(
            common::fence(
                &pool,
                env.tenant,
                &g.name,
                g.lat.expect("circle"),
                g.lon.expect("circle"),
                g.radius_m.expect("circle"),
                serde_json::json!({"dwell_alert_s": 120}),
            )
            .await,
        );
    }
    let start = common::t0();
    let clock = ManualClock::new(start);
    let ops = operators::start(
        pool.clone(),
        env.bus.as_ref(),
        OperatorsConfig::default(),
        clock.clone(),
        None,
    )
    .await
    .unwrap();

    let kinds = [
        EventKind::HarshBraking,
        EventKind::HarshAcceleration,
        EventKind::HarshCornering,
        EventKind::Overspeed,
    ];
    let mut tracks = Vec::new();
    for i in 0..DEVICES {
        let ident = format!("35555275413{i:04}");
        let id = common::device(&pool, env.tenant, &ident).await;
        // An injected event every 4–6 minutes, kinds in turn, from the 20th minute.
        let mut events = Vec::new();
        let mut t = 1200.0 + 37.0 * i as f64;
        let mut k = i;
        while t < HOURS * 3600.0 - 600.0 {
            events.push(event(kinds[k % kinds.len()], t));
            k += 1;
            t += 240.0 + (k % 3) as f64 * 60.0;
        }
        let cfg = TrackConfig {
            vehicle: VehicleConfig {
                ignition_cycles: true,
                // Short: the simulator restarts a trip's clock at every waypoint stop, so
                // only a trip timer shorter than the gaps between stops ends a trip.
                trip_min_s: 150.0,
                trip_max_s: 300.0,
                park_min_s: 120.0,
                park_max_s: 400.0,
                ..VehicleConfig::default()
            },
            noise: NoiseConfig::default(),
            route: RouteSpec::Random(BBox::DEFAULT),
            speed_zones: Vec::new(),
            events,
            geofences: fences(),
        };
        // The simulated car starts mid-trip (ignition on, no trip_start in the truth):
        // drive until its first ignition-off, unobserved, and score from there. The
        // warm-up's length differs per car, so a first run measures it and the car starts
        // that much before `start`: every car then reports on one clock, as real devices
        // do. (With clocks minutes apart, a car behind the others looked silent to the
        // timers, which closed its episodes whenever they happened to run.)
        let warm = warm_up(&mut Track::new(&ident, &cfg, start, 1000 + i as u64));
        let mut track = Track::new(&ident, &cfg, start - Duration::seconds(warm), 1000 + i as u64);
        assert_eq!(warm_up(&mut track), warm, "the simulator is deterministic per seed");
        let _ = track.take_truth();
        tracks.push((id, track, Vec::<PositionRow>::new()));
    }

    let mut truth: Vec<TruthLine> = Vec::new();
    let steps = (HOURS * 3600.0) as usize;
    let mut last = start;
    for s in 0..steps {
        for (id, track, buf) in tracks.iter_mut() {
            track.advance(1.0);
            let p = track.read();
            buf.push(PositionRow::from_position(*id, &p, p.time));
            last = last.max(p.time);
        }
        if (s + 1) % BATCH_S == 0 {
            for (id, _, buf) in tracks.iter_mut() {
                common::publish(&env.bus, *id, std::mem::take(buf)).await;
            }
            // The runtime reads everything published so far before the clock moves on, so
            // its timers never run ahead of data it has not seen, however the machine
            // schedules the two tasks (a loaded CI machine once split an overspeed episode).
            ops.sync().await.unwrap();
            clock.set(last);
            if (s + 1) % 60 == 0 {
                ops.tick().await.unwrap();
            }
        }
    }
    for (id, track, buf) in tracks.iter_mut() {
        common::publish(&env.bus, *id, std::mem::take(buf)).await;
        for g in track.take_truth().into_iter().chain(track.finish()) {
            truth.push(serde_json::from_value(serde_json::to_value(g).unwrap()).unwrap());
        }
    }
    ops.sync().await.unwrap();
    // Long after the end: trips still open close at their last fix.
    clock.set(last + Duration::hours(2));
    let stats = ops.tick().await.unwrap();
    eprintln!("runtime stats: {stats:?}");

    // Through the file format, as `clutch score` reads it.
    let text: String = truth.iter().map(|t| serde_json::to_string(t).unwrap() + "\n").collect();
    if let Ok(p) = std::env::var("CLUTCH_TRUTH_OUT") {
        std::fs::write(p, &text).unwrap();
    }
    let truth = parse_truth(&text).unwrap();
    let report = score_store(&pool, &truth, 10.0).await.unwrap();
    if let Ok(p) = std::env::var("CLUTCH_EVENTS_OUT") {
        type Row = (
            String,
            String,
            chrono::DateTime<chrono::Utc>,
            Option<chrono::DateTime<chrono::Utc>>,
            Option<f64>,
        );
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT d.identifier, e.kind, e.time, e.end_time, e.magnitude FROM events e \
                 JOIN devices d ON d.id = e.device_id ORDER BY d.identifier, e.kind, e.time",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        let text: String = rows.iter().map(|r| format!("{r:?}\n")).collect();
        std::fs::write(p, text).unwrap();
    }
    eprintln!("{}", report.table());
    for kind in [
        "harsh_braking",
        "harsh_acceleration",
        "harsh_cornering",
        "overspeed",
        "geofence_enter",
        "geofence_exit",
        "trip_start",
        "trip_end",
    ] {
        let k = report
            .kind(kind)
            .unwrap_or_else(|| panic!("no {kind} in the truth: {}", report.table()));
        assert!(k.truth >= 5, "too few {kind} to judge: {}", report.table());
        assert!(
            k.precision >= 0.95 && k.recall >= 0.95,
            "{kind}: precision {:.3} recall {:.3}\n{}",
            k.precision,
            k.recall,
            report.table()
        );
    }

    // Every finished trip has a safety score per device, and harsh trips score lower.
    let finished: i64 = sqlx::query_scalar("SELECT count(*) FROM trips WHERE end_time IS NOT NULL")
        .fetch_one(&pool)
        .await
        .unwrap();
    let scored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM scores WHERE subject_kind = 'device' AND period = 'trip'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(
        finished > 0 && scored == finished,
        "{scored} trip scores for {finished} finished trips"
    );
    let (clean, harsh): (Option<f64>, Option<f64>) = sqlx::query_as(
        "SELECT avg(s.score) FILTER (WHERE t.attributes -> 'event_counts' = '{}'::jsonb)::float8,
                avg(s.score) FILTER (WHERE t.attributes -> 'event_counts' ? 'harsh_braking')::float8
         FROM scores s JOIN trips t ON t.id = s.trip_id WHERE s.subject_kind = 'device' AND s.period = 'trip'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    if let (Some(clean), Some(harsh)) = (clean, harsh) {
        assert!(
            harsh < clean,
            "trips with harsh braking score {harsh:.1}, clean ones {clean:.1}"
        );
    }
    let days: i64 = sqlx::query_scalar("SELECT count(*) FROM scores WHERE period = 'day'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(days > 0, "day scores are written");
    ops.stop().await;
}
