//! The bus contract, one suite run against every backend present:
//! - in-process: always;
//! - NATS JetStream: always (a `nats-server` per test from Debian's package; a missing
//!   binary fails with how to install it);
//! - Fluvio: with `--features fluvio` and `CLUTCH_FLUVIO_ENDPOINT` pointing at a cluster
//!   (skipped with a message otherwise).
//!
//! Each property is a function over a [`Backend`]; `suite!` instantiates them all.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use stream::testing::NatsServer;
use stream::{
    BoxFuture, Bus, BusConfig, BusError, Delivery, DurableSink, FullPolicy, InProcessBus, Keyed, NatsBus, Offset,
};
use tokio::sync::watch;
use tokio::time::timeout;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Tb {
    key: u64,
    n: u32,
    note: String,
}

impl Keyed for Tb {
    fn key(&self) -> u64 {
        self.key
    }
    fn records(&self) -> usize {
        1
    }
}

fn tb(key: u64, n: u32) -> Tb {
    Tb {
        key,
        n,
        note: format!("device {key} batch {n}"),
    }
}

/// In-process durability: a log, and a gate that holds batches back while closed.
struct GateSink {
    log: Arc<Mutex<Vec<(u64, u32)>>>,
    open: watch::Receiver<bool>,
}

impl DurableSink<Tb> for GateSink {
    fn submit(&self, b: Arc<Tb>) -> BoxFuture<Result<BoxFuture<Result<(), BusError>>, BusError>> {
        let log = self.log.clone();
        let mut open = self.open.clone();
        Box::pin(async move {
            let p: BoxFuture<Result<(), BusError>> = Box::pin(async move {
                open.wait_for(|o| *o).await.map_err(|_| BusError::Closed)?;
                log.lock().unwrap().push((b.key, b.n));
                Ok(())
            });
            Ok(p)
        })
    }
}

enum Backend {
    InProcess {
        log: Arc<Mutex<Vec<(u64, u32)>>>,
        gate: watch::Sender<bool>,
    },
    Nats {
        server: Mutex<NatsServer>,
    },
    /// An existing cluster: a fresh bus (topic) name per test keeps runs apart.
    #[cfg(feature = "fluvio")]
    Fluvio {
        endpoint: String,
        bus: String,
    },
}

impl Backend {
    fn in_process() -> Self {
        Backend::InProcess {
            log: Arc::default(),
            gate: watch::channel(true).0,
        }
    }

    fn nats() -> Self {
        Backend::Nats {
            server: Mutex::new(NatsServer::start()),
        }
    }

    /// `None` (the suite is skipped, said on stderr) unless `CLUTCH_FLUVIO_ENDPOINT` is set.
    #[cfg(feature = "fluvio")]
    fn fluvio() -> Option<Self> {
        let Some(endpoint) = std::env::var("CLUTCH_FLUVIO_ENDPOINT").ok().filter(|e| !e.is_empty()) else {
            eprintln!("skipped: set CLUTCH_FLUVIO_ENDPOINT=host:port to run the contract against a Fluvio cluster");
            return None;
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        Some(Backend::Fluvio {
            endpoint,
            bus: format!("contract-{nanos}"),
        })
    }

    /// Whether durability can be stalled on purpose (not on a shared remote cluster).
    fn can_stall(&self) -> bool {
        match self {
            Backend::InProcess { .. } | Backend::Nats { .. } => true,
            #[cfg(feature = "fluvio")]
            Backend::Fluvio { .. } => false,
        }
    }

    #[cfg(feature = "fluvio")]
    fn fluvio_config(endpoint: &str, max_in_flight: usize, policy: FullPolicy) -> BusConfig {
        BusConfig {
            fluvio_endpoint: endpoint.to_string(),
            partitions: 4,
            max_in_flight,
            full_policy: policy,
            publish_timeout_ms: 10_000,
            ..BusConfig::default()
        }
    }

    /// A bus handle; for a broker, a new connection to the same stream each call.
    async fn bus(&self, max_in_flight: usize, policy: FullPolicy) -> Arc<dyn Bus<Tb>> {
        match self {
            Backend::InProcess { log, gate } => {
                let cfg = BusConfig {
                    shards: 4,
                    shard_capacity: max_in_flight,
                    in_flight_per_shard: max_in_flight,
                    full_policy: policy,
                    ..BusConfig::default()
                };
                let sink = GateSink {
                    log: log.clone(),
                    open: gate.subscribe(),
                };
                Arc::new(InProcessBus::new(&cfg, Arc::new(sink)))
            }
            Backend::Nats { server } => {
                let cfg = BusConfig {
                    nats_url: server.lock().unwrap().url(),
                    partitions: 4,
                    max_in_flight,
                    full_policy: policy,
                    publish_timeout_ms: 10_000,
                    ..BusConfig::default()
                };
                Arc::new(NatsBus::<Tb>::connect(&cfg, "contract").await.expect("nats bus"))
            }
            #[cfg(feature = "fluvio")]
            Backend::Fluvio { endpoint, bus } => {
                let cfg = Self::fluvio_config(endpoint, max_in_flight, policy);
                Arc::new(
                    stream::fluvio::FluvioBus::<Tb>::connect(&cfg, bus)
                        .await
                        .expect("fluvio bus"),
                )
            }
        }
    }

    /// Is the batch at `offset` durable, by the backend's own definition?
    async fn is_durable(&self, offset: Offset, b: &Tb) -> bool {
        match self {
            Backend::InProcess { log, .. } => log.lock().unwrap().contains(&(b.key, b.n)),
            Backend::Nats { server } => {
                // Read back over a separate connection, from the broker's store.
                let cfg = BusConfig {
                    nats_url: server.lock().unwrap().url(),
                    partitions: 4,
                    ..BusConfig::default()
                };
                let bus = NatsBus::<Tb>::connect(&cfg, "contract").await.expect("nats bus");
                bus.read_at(offset).await.map(|x| x == *b).unwrap_or(false)
            }
            // Acknowledged by the in-sync replicas is Fluvio's durability; what this
            // suite checks there is that a consumer then reads it back.
            #[cfg(feature = "fluvio")]
            Backend::Fluvio { .. } => {
                let _ = (offset, b);
                true
            }
        }
    }

    /// Makes durability stall (nothing becomes durable) / resume.
    fn stall(&self, stalled: bool) {
        match self {
            Backend::InProcess { gate, .. } => {
                gate.send_replace(!stalled);
            }
            Backend::Nats { server } => {
                let s = server.lock().unwrap();
                if stalled { s.pause() } else { s.resume() }
            }
            #[cfg(feature = "fluvio")]
            Backend::Fluvio { .. } => unreachable!("can_stall() is false"),
        }
    }
}

async fn recv(sub: &mut stream::Subscription<Tb>) -> Delivery<Tb> {
    timeout(Duration::from_secs(20), sub.recv())
        .await
        .expect("a delivery within 20 s")
        .expect("a delivery")
}

/// Per-key order on taps and groups; a receipt resolves with the batch's offset.
async fn order_and_receipts(be: &Backend) {
    let bus = be.bus(1024, FullPolicy::Block).await;
    let mut tap = bus.subscribe();
    let mut group = bus.consume("order").await.expect("group");
    // The live tap of a broker starts from "now" as the broker sees it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut receipts = Vec::new();
    for n in 0..50u32 {
        for key in 0..8u64 {
            receipts.push((key, n, bus.publish(tb(key, n)).await.expect("publish")));
        }
    }
    for (key, n, r) in receipts {
        let off = r.await.expect("durable");
        assert!(
            be.is_durable(off, &tb(key, n)).await,
            "receipt {key}/{n} before durable"
        );
    }
    for sub in [&mut tap, &mut group] {
        let mut last: BTreeMap<u64, u32> = BTreeMap::new();
        for _ in 0..400 {
            let d = recv(sub).await;
            if let Some(prev) = last.insert(d.batch.key, d.batch.n) {
                assert_eq!(d.batch.n, prev + 1, "device {} out of order", d.batch.key);
            } else {
                assert_eq!(d.batch.n, 0);
            }
        }
        assert!(last.values().all(|&n| n == 49));
    }
    assert_eq!(bus.depth(), 0);
}

/// With durability stalled, the bus holds a bounded number of batches; then Reject
/// fails at once and Block waits. Nothing accepted is lost when durability resumes.
async fn bounded_full_policy(be: &Backend) {
    const CAP: usize = 8;
    if !be.can_stall() {
        eprintln!("skipped: durability of this backend cannot be stalled from the test");
        return;
    }
    let bus = be.bus(CAP, FullPolicy::Reject).await;
    let mut group = bus.consume("bounded").await.expect("group");
    be.stall(true);
    let mut accepted = Vec::new();
    let mut full = 0;
    for n in 0..(CAP as u32 * 20) {
        match bus.publish(tb(1, n)).await {
            Ok(r) => accepted.push(r),
            Err(BusError::Full) => full += 1,
            Err(e) => panic!("{e}"),
        }
        tokio::task::yield_now().await;
    }
    assert!(full > 0, "a stalled Reject bus fills up");
    assert!(
        (1..=3 * CAP + 2).contains(&accepted.len()),
        "bounded: {} accepted",
        accepted.len()
    );
    be.stall(false);
    let n_accepted = accepted.len();
    for r in accepted.drain(..) {
        r.await.expect("accepted batches become durable");
    }
    let mut seen = HashSet::new();
    while seen.len() < n_accepted {
        seen.insert(recv(&mut group).await.batch.n);
    }

    let bus = be.bus(CAP, FullPolicy::Block).await;
    be.stall(true);
    let mut blocked = false;
    let mut held = Vec::new();
    for n in 0..(CAP as u32 * 20) {
        match timeout(Duration::from_millis(300), bus.publish(tb(2, n))).await {
            Ok(r) => held.push(r.expect("publish")),
            Err(_) => {
                blocked = true;
                break;
            }
        }
    }
    assert!(blocked, "a stalled Block bus makes the publisher wait");
    be.stall(false);
    for r in held {
        r.await.expect("durable after the stall");
    }
}

/// A subscriber never sees a batch before it is durable.
async fn subscriber_sees_only_durable(be: &Backend) {
    if !be.can_stall() {
        eprintln!("skipped: durability of this backend cannot be stalled from the test");
        return;
    }
    let bus = be.bus(64, FullPolicy::Block).await;
    let mut group = bus.consume("durable-only").await.expect("group");
    let mut tap = bus.subscribe();
    tokio::time::sleep(Duration::from_millis(200)).await;
    be.stall(true);
    let mut receipts = Vec::new();
    for n in 0..10 {
        receipts.push(bus.publish(tb(3, n)).await.expect("publish"));
    }
    assert!(
        timeout(Duration::from_millis(500), group.recv()).await.is_err(),
        "a group saw a batch that is not durable"
    );
    assert!(
        timeout(Duration::from_millis(100), tap.recv()).await.is_err(),
        "a tap saw a batch that is not durable"
    );
    be.stall(false);
    for r in receipts {
        r.await.expect("durable");
    }
    for sub in [&mut group, &mut tap] {
        for n in 0..10 {
            let d = recv(sub).await;
            assert_eq!(d.batch.n, n);
            assert!(be.is_durable(d.offset, &d.batch).await);
        }
    }
}

/// A group member that stops (process gone: new connection) after committing part of
/// what it received resumes after its commits: nothing lost, nothing committed again.
async fn commit_and_resume(be: &Backend) {
    let bus = be.bus(1024, FullPolicy::Block).await;
    if !bus.offsets_persist() {
        eprintln!("skipped: this backend keeps no offsets across a restart (replay comes from the store)");
        return;
    }
    let mut sub = bus.consume("resume").await.expect("group");
    let mut receipts = Vec::new();
    for n in 0..60u32 {
        receipts.push(bus.publish(tb(u64::from(n % 6), n)).await.expect("publish"));
    }
    for r in receipts {
        r.await.expect("durable");
    }
    let mut committed = HashSet::new();
    for i in 0..45 {
        let d = recv(&mut sub).await;
        // Commit the first 30 received; receive 15 more without committing.
        if i < 30 {
            sub.commit(d.offset);
            committed.insert(d.batch.n);
        }
    }
    sub.sync_commits().await.expect("commits confirmed");
    drop(sub);
    drop(bus);

    let bus = be.bus(1024, FullPolicy::Block).await;
    let mut sub = bus.consume("resume").await.expect("group again");
    let mut again = HashSet::new();
    while again.len() < 30 {
        let d = recv(&mut sub).await;
        assert!(
            !committed.contains(&d.batch.n),
            "batch {} was committed yet delivered again",
            d.batch.n
        );
        again.insert(d.batch.n);
    }
    let all: HashSet<u32> = (0..60).collect();
    let union: HashSet<u32> = committed.union(&again).copied().collect();
    assert_eq!(union, all, "no batch lost across the restart");
    assert!(
        timeout(Duration::from_millis(500), sub.recv()).await.is_err(),
        "nothing beyond the uncommitted rest"
    );
    // A different group is independent: it starts at the oldest retained batch.
    let mut other = bus.consume("other").await.expect("other group");
    let mut seen = HashSet::new();
    while seen.len() < 60 {
        seen.insert(recv(&mut other).await.batch.n);
    }
}

macro_rules! suite {
    ($name:ident, $make:expr) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn order_and_receipts() {
                if let Some(be) = $make {
                    super::order_and_receipts(&be).await;
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn bounded_full_policy() {
                if let Some(be) = $make {
                    super::bounded_full_policy(&be).await;
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn subscriber_sees_only_durable() {
                if let Some(be) = $make {
                    super::subscriber_sees_only_durable(&be).await;
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn commit_and_resume() {
                if let Some(be) = $make {
                    super::commit_and_resume(&be).await;
                }
            }
        }
    };
}

suite!(in_process, Some(Backend::in_process()));
suite!(nats, Some(Backend::nats()));
#[cfg(feature = "fluvio")]
suite!(fluvio, Backend::fluvio());

/// NATS only: what JetStream acknowledged survives a SIGKILL of the server and a restart
/// on the same store; while the server is down publishes fail (the device would not be
/// acked), and the client reconnects on its own when it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_server_restart_loses_nothing_acked() {
    let be = Backend::nats();
    let bus = be.bus(1024, FullPolicy::Block).await;
    // A group member that lives through the restart.
    let mut live = bus.consume("live").await.expect("group");
    let mut receipts = Vec::new();
    for n in 0..200u32 {
        receipts.push(bus.publish(tb(u64::from(n % 10), n)).await.expect("publish"));
    }
    for r in receipts {
        r.await.expect("durable");
    }
    for _ in 0..200 {
        let d = recv(&mut live).await;
        live.commit(d.offset);
    }
    live.sync_commits().await.expect("commits confirmed");
    let Backend::Nats { server } = &be else {
        unreachable!("a NATS backend")
    };
    server.lock().unwrap().kill();

    let r = match bus.publish(tb(99, 0)).await {
        Ok(r) => timeout(Duration::from_secs(15), r).await.expect("the receipt resolves"),
        Err(e) => Err(e),
    };
    assert!(
        matches!(r, Err(BusError::NotDurable { retryable: true, .. })),
        "publishing to a dead server is a retryable failure: {r:?}"
    );

    server.lock().unwrap().restart();
    // The old connection reconnects by itself.
    let mut ok = false;
    for _ in 0..100 {
        if let Ok(r) = bus.publish(tb(99, 1)).await
            && r.await.is_ok()
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "publishes succeed again after the server is back");
    // The member's pull consumers resume by themselves after the reconnect.
    loop {
        let d = recv(&mut live).await;
        // The publish whose receipt failed may still have been stored (the client
        // sends what it buffered once reconnected): not acked, so a device resends it
        // and the store dedups it. At least once, never lost.
        if d.batch.key == 99 && d.batch.n == 1 {
            break;
        }
        if d.batch.key == 99 {
            continue;
        }
        assert!(d.batch.n < 200, "only committed batches can come again");
    }

    let bus = be.bus(1024, FullPolicy::Block).await;
    let mut sub = bus.consume("after-restart").await.expect("group");
    let mut seen = HashSet::new();
    while seen.len() < 200 {
        let d = recv(&mut sub).await;
        if d.batch.key != 99 {
            seen.insert(d.batch.n);
        }
    }
}
