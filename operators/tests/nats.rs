//! The operators as a durable consumer group on NATS JetStream (Debian's `nats-server`,
//! started per test by `stream::testing`): offsets are committed with the checkpoints, so
//! a restart resumes after what was checkpointed, and what a crashed member processed
//! but never checkpointed comes again and is processed once more from the checkpointed
//! state (its events absorbed by their unique keys), not lost and not doubled.
//!
//! Needs `nats-server` (`apt-get install -y nats-server`, or `CLUTCH_NATS_SERVER`). The same
//! runs on a Fluvio cluster with `--features fluvio` and `CLUTCH_FLUVIO_ENDPOINT=host:port`.

mod common;

use std::time::Duration;

use common::{at, drive, events};
use ingest::DeviceBatch;
use operators::{ManualClock, OperatorsConfig, OperatorsHandle, RuntimeStats};
use stream::{Bus, BusConfig, NatsBus};

fn cfg() -> OperatorsConfig {
    OperatorsConfig {
        flush_interval_ms: 20,
        // Only the explicit checkpoints of the test commit.
        checkpoint_interval_s: 3600,
        ..OperatorsConfig::default()
    }
}

async fn publish(bus: &dyn Bus<DeviceBatch>, device_id: i64, positions: Vec<store::PositionRow>) {
    let receipt = bus
        .publish(DeviceBatch {
            device_id,
            positions,
            events: vec![],
        })
        .await
        .expect("published");
    receipt.await.expect("durable on the broker");
}

/// Waits until the runtime has processed `fixes` fixes in total.
async fn until_used(ops: &OperatorsHandle, fixes: u64) -> RuntimeStats {
    for _ in 0..300 {
        let s = ops.sync().await.unwrap();
        if s.engine.fixes >= fixes {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "the operators did not receive {fixes} fixes within 15 s: {:?}",
        ops.sync().await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_resume_from_committed_offsets_on_nats() {
    let server = stream::testing::NatsServer::start();
    let bus_cfg = BusConfig {
        nats_url: server.url(),
        partitions: 2,
        ..BusConfig::default()
    };
    let bus = NatsBus::<DeviceBatch>::connect(&bus_cfg, "batches")
        .await
        .expect("nats bus");
    resume_from_committed_offsets(&bus).await;
}

#[cfg(feature = "fluvio")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_resume_from_committed_offsets_on_fluvio() {
    let Some(endpoint) = std::env::var("CLUTCH_FLUVIO_ENDPOINT").ok().filter(|e| !e.is_empty()) else {
        eprintln!("skipped: set CLUTCH_FLUVIO_ENDPOINT=host:port to run this against a Fluvio cluster");
        return;
    };
    let bus_cfg = BusConfig {
        fluvio_endpoint: endpoint,
        // A topic of its own per run.
        prefix: format!("operators-{}", std::process::id()),
        partitions: 2,
        ..BusConfig::default()
    };
    let bus = stream::fluvio::FluvioBus::<DeviceBatch>::connect(&bus_cfg, "batches")
        .await
        .expect("fluvio bus");
    resume_from_committed_offsets(&bus).await;
}

async fn resume_from_committed_offsets(bus: &dyn Bus<DeviceBatch>) {
    assert!(bus.offsets_persist());
    let db = store::testing::test_db().await;
    let pool = db.pool.clone();
    let tenant: i64 = sqlx::query_scalar("INSERT INTO tenants (name) VALUES ('t') RETURNING id")
        .fetch_one(&pool)
        .await
        .unwrap();
    let dev = common::device(&pool, tenant, "N1").await;
    let clock = ManualClock::new(at(0));
    // A 10-minute trip, then parked 3 minutes: 780 fixes in batches of 10.
    let mut rows = drive(dev, 0, 600, 0.0, 50.0, Some(true));
    rows.extend(drive(dev, 600, 180, 50.0 / 3.6 * 600.0, 0.0, Some(false)));
    let batches: Vec<Vec<store::PositionRow>> = rows.chunks(10).map(|c| c.to_vec()).collect();
    let start = || operators::start(pool.clone(), bus, cfg(), clock.clone(), None);

    // First member: 30 batches, checkpointed (and committed), then 10 more it processes
    // but never checkpoints before it dies.
    let ops = start().await.unwrap();
    for b in &batches[..30] {
        publish(bus, dev, b.clone()).await;
    }
    until_used(&ops, 300).await;
    ops.checkpoint().await.unwrap();
    for b in &batches[30..40] {
        publish(bus, dev, b.clone()).await;
    }
    until_used(&ops, 400).await;
    ops.kill().await;

    // While no member runs, the rest becomes durable on the broker (the store has no
    // positions at all here: whatever the operators see comes from the bus).
    for b in &batches[40..] {
        publish(bus, dev, b.clone()).await;
    }
    let ops = start().await.unwrap();
    let s = until_used(&ops, 780 - 300).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s2 = ops.sync().await.unwrap();
    assert_eq!(s2.engine.fixes, s.engine.fixes, "nothing more arrives: {s2:?}");
    // From the committed offset on: the 10 uncommitted batches again (new to the state
    // restored from the checkpoint) and the 38 new ones; not the first 30.
    assert_eq!(s2.deliveries, 48, "{s2:?}");
    assert_eq!(s2.engine.stale, 0, "{s2:?}");
    assert_eq!(s2.caught_up_fixes, 0, "{s2:?}");
    ops.checkpoint().await.unwrap();
    clock.set(at(3600));
    ops.tick().await.unwrap();
    let ev = events(&pool, dev).await;
    let count = |k: &str| ev.iter().filter(|(kind, _)| kind == k).count();
    assert_eq!(count("trip_start"), 1, "{ev:?}");
    assert_eq!(count("trip_end"), 1, "{ev:?}");
    assert!(ev.contains(&("trip_end".to_string(), at(600))), "{ev:?}");
    ops.stop().await;

    // A clean restart after the commit: nothing is delivered again.
    let ops = start().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = ops.sync().await.unwrap();
    assert_eq!(s.deliveries, 0, "{s:?}");
    ops.stop().await;
}
