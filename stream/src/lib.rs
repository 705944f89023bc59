//! `stream`: the bus between the ingest tier and everything downstream.
//!
//! The unit on the bus is a batch keyed by device: usually the records of one device
//! frame, acknowledged to the device together. This crate owns the [`Bus`] contract —
//! publish returns a durability receipt, batches of one device keep their order,
//! every queue is bounded with an explicit [`FullPolicy`], subscribers see a batch only
//! once it is durable — and [`InProcessBus`], the embedded implementation.
//!
//! In embedded mode "durable" means "committed by the store writer". `stream` does not
//! depend on `store`: the composition root injects a [`DurableSink`] that submits a batch
//! and hands back a pending receipt. A distributed backend ([`NatsBus`], and `FluvioBus`
//! behind the `fluvio` feature) is durable when its broker has stored the record; a
//! consumer group (the store writer role, the operators) then reads it, and commits the
//! [`Offset`] of what it has finished with. That is why those backends bound batches
//! by `Serialize + DeserializeOwned` (the embedded bus does not) and why a [`Delivery`]
//! carries an explicit offset.
//!
//! # Layout
//! - [`Bus`], [`Keyed`], [`FullPolicy`], [`BusError`], [`PublishReceipt`]: the contract.
//! - [`DurableSink`]: what makes a batch durable in embedded mode.
//! - [`InProcessBus`]: shards by device, a submit stage and an in-order completion stage
//!   per shard, broadcast to subscribers after durability.
//! - [`Subscription`], [`Delivery`]: the consumer side (live taps and consumer groups).
//! - [`nats`]: [`NatsBus`], JetStream: a stream per bus, subjects partitioned by device,
//!   durable pull consumers per group with explicit acks.
//! - `fluvio` (feature `fluvio`): `FluvioBus`, a topic partitioned by device.
//! - [`partition_of`]: the device → partition map every distributed backend shares.
//! - `testing` (feature `testing`): a throwaway `nats-server` for tests.

#[cfg(feature = "fluvio")]
pub mod fluvio;
pub mod nats;
#[cfg(feature = "testing")]
pub mod testing;

pub use nats::NatsBus;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot};

/// A boxed, sendable future; keeps the traits object-safe without an async-trait crate.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What a batch is keyed (and therefore ordered and sharded) by.
pub trait Keyed {
    /// The device this batch belongs to. Batches with the same key are delivered in
    /// publish order.
    fn key(&self) -> u64;
    /// Records in the batch, for depth and size accounting.
    fn records(&self) -> usize;
}

/// What a full bus does to a publisher. Neither policy drops data that was, or will
/// be, acknowledged: a batch that cannot be queued is simply never acknowledged, so the
/// device keeps it and resends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FullPolicy {
    /// Wait for room. The session stops reading its socket, TCP flow control pushes
    /// back on the device: the right default for trackers, which buffer on board.
    #[default]
    Block,
    /// Fail the publish at once with [`BusError::Full`]; the caller does not ack.
    Reject,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    /// [`FullPolicy::Reject`] and the device's shard is full.
    #[error("bus full")]
    Full,
    #[error("bus closed")]
    Closed,
    /// The durable sink refused or failed the batch; retryable is the sink's say.
    #[error("not durable: {reason}")]
    NotDurable { reason: String, retryable: bool },
    /// Setting up the backend failed (unreachable broker, a stream or consumer that
    /// cannot be created, a bad configuration).
    #[error("bus backend: {0}")]
    Backend(String),
}

/// Where a durable batch sits on the bus: shard and position within it. Consumers of a
/// persistent backend commit it; in-process it is informative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Offset {
    pub shard: u32,
    pub seq: u64,
}

/// The pending answer to a publish: resolves once the batch is durable (acknowledge the
/// device then) or with the reason it never will be (do not acknowledge).
#[derive(Debug)]
pub struct PublishReceipt(oneshot::Receiver<Result<Offset, BusError>>);

impl Future for PublishReceipt {
    type Output = Result<Offset, BusError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(BusError::Closed)))
    }
}

/// The bus contract. `publish` is async because a [`FullPolicy::Block`] bus waits for
/// room there, which is how back-pressure reaches the socket; the returned receipt is a
/// second wait, for durability, that callers pipeline.
pub trait Bus<B>: Send + Sync + std::fmt::Debug + 'static {
    fn publish(&self, batch: B) -> BoxFuture<Result<PublishReceipt, BusError>>;
    /// A live tap: durable batches from now on, in per-key order, with no position kept.
    fn subscribe(&self) -> Subscription<B>;
    /// Joins consumer group `group` (letters, digits, `-`, `_`): durable batches from the
    /// group's last committed [`Offset`] on, in per-key order, at least once — what was
    /// delivered and not committed is delivered again after the member restarts. A
    /// group that has never committed starts at the oldest batch the bus retains. One
    /// member per group at a time: a new member takes over the group's position.
    fn consume(&self, group: &str) -> BoxFuture<Result<Subscription<B>, BusError>>;
    /// Whether a group's committed offsets outlive this process. `false` in-process (the
    /// bus holds nothing across a restart: replay from the store); `true` for brokers.
    fn offsets_persist(&self) -> bool;
    /// Batches published and not yet durable.
    fn depth(&self) -> usize;
    /// For readiness probes: `Err` with the reason while the backend cannot take
    /// batches (a broker connection down). In-process it is always up.
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

/// The partition (shard) of a device on a distributed bus with `partitions` partitions.
/// Fibonacci hashing, because device ids are sequential. This is part of the on-the-wire
/// layout: changing it, or the partition count of an existing stream, reorders devices
/// whose batches are in flight across the change.
pub fn partition_of(key: u64, partitions: u32) -> u32 {
    ((key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % u64::from(partitions.max(1))) as u32
}

/// Checks a consumer group name: it becomes part of broker object names.
pub(crate) fn check_group(group: &str) -> Result<(), BusError> {
    if group.is_empty()
        || group.len() > 64
        || !group
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(BusError::Backend(format!(
            "consumer group {group:?}: use 1-64 letters, digits, '-' or '_'"
        )));
    }
    Ok(())
}

/// Makes a batch durable. `submit` may wait (back-pressure); the future it returns
/// resolves after durability.
pub trait DurableSink<B>: Send + Sync + 'static {
    fn submit(&self, batch: Arc<B>) -> BoxFuture<Result<BoxFuture<Result<(), BusError>>, BusError>>;
}

/// A durable batch handed to a subscriber.
#[derive(Debug)]
pub struct Delivery<B> {
    pub offset: Offset,
    pub batch: Arc<B>,
}

// By hand: the batch is shared, so cloning a delivery must not require `B: Clone`.
impl<B> Clone for Delivery<B> {
    fn clone(&self) -> Self {
        Delivery {
            offset: self.offset,
            batch: self.batch.clone(),
        }
    }
}

/// The consumer side. In-process it is a live tap: a subscriber that falls more than
/// `subscriber_capacity` batches behind is told how many it missed (the data itself is
/// safe in the store; a replaying consumer reads it from there). On a distributed bus it
/// is fed by the backend's tasks, and [`Subscription::commit`] moves the group's
/// position on the broker.
#[derive(Debug)]
pub struct Subscription<B> {
    source: Source<B>,
}

#[derive(Debug)]
enum Source<B> {
    Tap(broadcast::Receiver<Delivery<B>>),
    Feed(Feed<B>),
}

/// A backend-fed subscription: deliveries from the backend's tasks, and one commit
/// channel per partition (empty for a live tap, where commit means nothing).
#[derive(Debug)]
pub(crate) struct Feed<B> {
    pub(crate) rx: mpsc::Receiver<Delivery<B>>,
    pub(crate) commits: Vec<mpsc::UnboundedSender<CommitCmd>>,
}

/// What a subscription tells a partition task.
#[derive(Debug)]
pub(crate) enum CommitCmd {
    /// Everything up to and including this sequence is processed.
    Upto(u64),
    /// Answer once every earlier commit is confirmed by the broker.
    Sync(oneshot::Sender<Result<(), BusError>>),
}

/// Why [`Subscription::recv`] returned no batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    #[error("subscriber lagged by {0} batches")]
    Lagged(u64),
    #[error("bus closed")]
    Closed,
}

impl<B> Subscription<B> {
    pub(crate) fn from_feed(feed: Feed<B>) -> Self {
        Subscription {
            source: Source::Feed(feed),
        }
    }

    pub async fn recv(&mut self) -> Result<Delivery<B>, RecvError> {
        match &mut self.source {
            Source::Tap(rx) => match rx.recv().await {
                Ok(d) => Ok(d),
                Err(broadcast::error::RecvError::Lagged(n)) => Err(RecvError::Lagged(n)),
                Err(broadcast::error::RecvError::Closed) => Err(RecvError::Closed),
            },
            Source::Feed(f) => f.rx.recv().await.ok_or(RecvError::Closed),
        }
    }

    /// The next delivery if one is already queued, without waiting (`None`: none is).
    /// A consumer drains a burst with it: each `recv().await` in a busy process can put
    /// the consumer at the back of the scheduler's queue, behind every socket task, and a
    /// tap of one-fix batches then falls behind the bus for want of turns, not of CPU.
    pub fn try_recv(&mut self) -> Option<Result<Delivery<B>, RecvError>> {
        match &mut self.source {
            Source::Tap(rx) => match rx.try_recv() {
                Ok(d) => Some(Ok(d)),
                Err(broadcast::error::TryRecvError::Empty) => None,
                Err(broadcast::error::TryRecvError::Lagged(n)) => Some(Err(RecvError::Lagged(n))),
                Err(broadcast::error::TryRecvError::Closed) => Some(Err(RecvError::Closed)),
            },
            Source::Feed(f) => match f.rx.try_recv() {
                Ok(d) => Some(Ok(d)),
                Err(mpsc::error::TryRecvError::Empty) => None,
                Err(mpsc::error::TryRecvError::Disconnected) => Some(Err(RecvError::Closed)),
            },
        }
    }

    /// Deliveries already queued for this subscriber and not yet received. A consumer
    /// uses it to tell "behind the bus" from "the bus is quiet" without a wall clock.
    pub fn pending(&self) -> usize {
        match &self.source {
            Source::Tap(rx) => rx.len(),
            Source::Feed(f) => f.rx.len(),
        }
    }

    /// Marks everything up to `offset` in its partition as processed (commits are per
    /// partition, so commit each delivery's offset in the order received, or the last of
    /// each partition). Does not wait: commits to the broker are batched; use
    /// [`Subscription::sync_commits`] to know they landed. A no-op for a live tap and
    /// in-process (nothing is replayed there).
    pub fn commit(&mut self, offset: Offset) {
        if let Source::Feed(f) = &self.source
            && let Some(tx) = f.commits.get(offset.shard as usize)
        {
            // A closed partition task means the subscription is ending; the batch comes
            // again to the group's next member, which at-least-once allows.
            let _ = tx.send(CommitCmd::Upto(offset.seq));
        }
    }

    /// Waits until every commit made so far is confirmed by the broker. Call it before
    /// reporting a checkpoint as taken, or before a clean shutdown.
    pub async fn sync_commits(&mut self) -> Result<(), BusError> {
        let Source::Feed(f) = &self.source else {
            return Ok(());
        };
        let mut waits = Vec::with_capacity(f.commits.len());
        for tx in &f.commits {
            let (reply, rx) = oneshot::channel();
            if tx.send(CommitCmd::Sync(reply)).is_ok() {
                waits.push(rx);
            } else {
                return Err(BusError::Closed);
            }
        }
        for rx in waits {
            rx.await.map_err(|_| BusError::Closed)??;
        }
        Ok(())
    }
}

/// Which implementation of the bus `clutch serve` runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// [`InProcessBus`]: one process, durability = the store writer's commit.
    #[default]
    InProcess,
    /// [`NatsBus`]: NATS JetStream at `nats_url`.
    Nats,
    /// `FluvioBus` at `fluvio_endpoint` (needs a build with the `fluvio` feature).
    Fluvio,
}

/// The `[bus]` section: the backend, and each backend's settings.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    pub backend: Backend,
    /// NATS server(s), comma-separated; credentials in the URL are redacted in logs.
    pub nats_url: String,
    /// Fluvio SC address (`host:port`).
    pub fluvio_endpoint: String,
    /// Names: NATS stream `<PREFIX>_<BUS>` with subjects `<prefix>.<bus>.<partition>`;
    /// Fluvio topic `<prefix>-<bus>`.
    pub prefix: String,
    /// Partitions of a distributed bus; devices map to them with [`partition_of`]. Fixed
    /// for the life of a stream/topic.
    pub partitions: u32,
    /// Broker-side copies of each batch (JetStream stream replicas / Fluvio replication).
    pub replicas: u32,
    /// How long a distributed bus keeps batches: the window in which a consumer group can
    /// fall behind, or be down, without losing its place.
    pub retention_hours: u64,
    /// Publishes awaiting the broker's acknowledgement, all partitions together, before
    /// the [`FullPolicy`] applies.
    pub max_in_flight: usize,
    /// How long a publish waits for the broker's acknowledgement before it fails (the
    /// device is then not acked and resends).
    pub publish_timeout_ms: u64,
    /// Delivered, uncommitted batches per partition before the broker pauses delivery.
    pub max_uncommitted: usize,
    /// A delivered batch not committed within this is delivered again (at-least-once);
    /// longer than the slowest checkpoint interval of any group.
    pub redeliver_after_ms: u64,
    /// In-process: devices are spread over this many independent ordered lanes.
    pub shards: usize,
    /// Batches queued per shard before the [`FullPolicy`] applies.
    pub shard_capacity: usize,
    /// Batches submitted to the sink and awaiting durability, per shard. Bounded so a
    /// stalled sink stops the shard (and, through it, the sockets).
    pub in_flight_per_shard: usize,
    pub full_policy: FullPolicy,
    pub subscriber_capacity: usize,
}

impl std::fmt::Debug for BusConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BusConfig")
            .field("backend", &self.backend)
            .field("nats_url", &redact_url(&self.nats_url))
            .field("fluvio_endpoint", &self.fluvio_endpoint)
            .field("prefix", &self.prefix)
            .field("partitions", &self.partitions)
            .field("replicas", &self.replicas)
            .field("retention_hours", &self.retention_hours)
            .field("max_in_flight", &self.max_in_flight)
            .field("publish_timeout_ms", &self.publish_timeout_ms)
            .field("max_uncommitted", &self.max_uncommitted)
            .field("redeliver_after_ms", &self.redeliver_after_ms)
            .field("shards", &self.shards)
            .field("shard_capacity", &self.shard_capacity)
            .field("in_flight_per_shard", &self.in_flight_per_shard)
            .field("full_policy", &self.full_policy)
            .field("subscriber_capacity", &self.subscriber_capacity)
            .finish()
    }
}

/// `nats://user:secret@host` → `nats://***@host`, for every comma-separated URL.
pub(crate) fn redact_url(urls: &str) -> String {
    urls.split(',')
        .map(|u| match (u.find("://"), u.rfind('@')) {
            (Some(s), Some(at)) if at > s => format!("{}***{}", &u[..s + 3], &u[at..]),
            _ => u.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            backend: Backend::InProcess,
            nats_url: "nats://127.0.0.1:4222".into(),
            fluvio_endpoint: "127.0.0.1:9003".into(),
            prefix: "clutch".into(),
            partitions: 16,
            replicas: 1,
            retention_hours: 7 * 24,
            max_in_flight: 8192,
            publish_timeout_ms: 5000,
            max_uncommitted: 4096,
            redeliver_after_ms: 30_000,
            shards: 8,
            shard_capacity: 1024,
            in_flight_per_shard: 1024,
            full_policy: FullPolicy::Block,
            subscriber_capacity: 4096,
        }
    }
}

struct Job<B> {
    batch: Arc<B>,
    reply: oneshot::Sender<Result<Offset, BusError>>,
}

struct Inner<B> {
    shards: Vec<mpsc::Sender<Job<B>>>,
    policy: FullPolicy,
    depth: Arc<AtomicUsize>,
    subscribers: broadcast::Sender<Delivery<B>>,
}

/// The embedded bus. Each shard runs two tasks: a submit stage that hands batches to the
/// sink in order (waiting when the sink back-pressures) and a completion stage that
/// awaits their durability in the same order, then publishes them to subscribers and
/// resolves the publisher's receipt. Order per device therefore holds end to end, while
/// many batches of a shard are in flight at once (group commit needs that).
pub struct InProcessBus<B> {
    inner: Arc<Inner<B>>,
}

impl<B> std::fmt::Debug for InProcessBus<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessBus")
            .field("shards", &self.inner.shards.len())
            .field("policy", &self.inner.policy)
            .field("depth", &self.inner.depth.load(Ordering::Relaxed))
            .finish()
    }
}

impl<B> Clone for InProcessBus<B> {
    fn clone(&self) -> Self {
        InProcessBus {
            inner: self.inner.clone(),
        }
    }
}

impl<B: Keyed + Send + Sync + 'static> InProcessBus<B> {
    /// Starts the shard tasks on the current runtime. They end when every handle to the
    /// bus is dropped and the queued batches are done: dropping the bus is the drain.
    pub fn new(config: &BusConfig, sink: Arc<dyn DurableSink<B>>) -> Self {
        let (subscribers, _) = broadcast::channel(config.subscriber_capacity.max(1));
        let depth = Arc::new(AtomicUsize::new(0));
        let mut shards = Vec::with_capacity(config.shards.max(1));
        for shard in 0..config.shards.max(1) {
            let (tx, rx) = mpsc::channel::<Job<B>>(config.shard_capacity.max(1));
            let (done_tx, done_rx) = mpsc::channel(config.in_flight_per_shard.max(1));
            tokio::spawn(submit_stage(rx, done_tx, sink.clone()));
            tokio::spawn(complete_stage(
                shard as u32,
                done_rx,
                subscribers.clone(),
                depth.clone(),
            ));
            shards.push(tx);
        }
        InProcessBus {
            inner: Arc::new(Inner {
                shards,
                policy: config.full_policy,
                depth,
                subscribers,
            }),
        }
    }

    fn shard_of(&self, key: u64) -> usize {
        // Fibonacci hashing: device ids are sequential, spread them evenly.
        (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize % self.inner.shards.len()
    }
}

type Pending<B> = (
    Arc<B>,
    BoxFuture<Result<(), BusError>>,
    oneshot::Sender<Result<Offset, BusError>>,
);

async fn submit_stage<B: Send + Sync + 'static>(
    mut rx: mpsc::Receiver<Job<B>>,
    done: mpsc::Sender<Pending<B>>,
    sink: Arc<dyn DurableSink<B>>,
) {
    while let Some(job) = rx.recv().await {
        let pending: BoxFuture<Result<(), BusError>> = match sink.submit(job.batch.clone()).await {
            Ok(p) => p,
            Err(e) => Box::pin(std::future::ready(Err(e))),
        };
        if done.send((job.batch, pending, job.reply)).await.is_err() {
            return;
        }
    }
}

async fn complete_stage<B: Send + Sync + 'static>(
    shard: u32,
    mut rx: mpsc::Receiver<Pending<B>>,
    subscribers: broadcast::Sender<Delivery<B>>,
    depth: Arc<AtomicUsize>,
) {
    let seq = AtomicU64::new(0);
    while let Some((batch, pending, reply)) = rx.recv().await {
        let result = pending.await;
        depth.fetch_sub(1, Ordering::Relaxed);
        let result = result.map(|()| {
            let offset = Offset {
                shard,
                seq: seq.fetch_add(1, Ordering::Relaxed),
            };
            // No subscriber is fine: the store already has the batch.
            let _ = subscribers.send(Delivery { offset, batch });
            offset
        });
        // A publisher that went away (connection closed) no longer needs the answer.
        let _ = reply.send(result);
    }
}

impl<B: Keyed + Send + Sync + 'static> Bus<B> for InProcessBus<B> {
    fn publish(&self, batch: B) -> BoxFuture<Result<PublishReceipt, BusError>> {
        let tx = self.inner.shards[self.shard_of(batch.key())].clone();
        let policy = self.inner.policy;
        let depth = self.inner.depth.clone();
        Box::pin(async move {
            let (reply, rx) = oneshot::channel();
            let job = Job {
                batch: Arc::new(batch),
                reply,
            };
            depth.fetch_add(1, Ordering::Relaxed);
            let sent = match policy {
                FullPolicy::Block => tx.send(job).await.map_err(|_| BusError::Closed),
                FullPolicy::Reject => tx.try_send(job).map_err(|e| match e {
                    mpsc::error::TrySendError::Full(_) => BusError::Full,
                    mpsc::error::TrySendError::Closed(_) => BusError::Closed,
                }),
            };
            if let Err(e) = sent {
                depth.fetch_sub(1, Ordering::Relaxed);
                return Err(e);
            }
            Ok(PublishReceipt(rx))
        })
    }

    fn subscribe(&self) -> Subscription<B> {
        Subscription {
            source: Source::Tap(self.inner.subscribers.subscribe()),
        }
    }

    /// In-process a group is a live tap: the bus keeps nothing, everything it delivered
    /// is already in the store, which is where a restarted consumer replays from.
    fn consume(&self, group: &str) -> BoxFuture<Result<Subscription<B>, BusError>> {
        let sub = check_group(group).map(|()| self.subscribe());
        Box::pin(std::future::ready(sub))
    }

    fn offsets_persist(&self) -> bool {
        false
    }

    fn depth(&self) -> usize {
        self.inner.depth.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    #[derive(Debug, Clone, PartialEq)]
    struct B(u64, u32);
    impl Keyed for B {
        fn key(&self) -> u64 {
            self.0
        }
        fn records(&self) -> usize {
            1
        }
    }

    /// Durable after a delay that shrinks with the sequence number, so later batches
    /// would finish first if the bus did not keep order.
    struct Slow {
        log: Arc<Mutex<Vec<(u64, u32)>>>,
        fail: Option<u32>,
    }
    impl DurableSink<B> for Slow {
        fn submit(&self, b: Arc<B>) -> BoxFuture<Result<BoxFuture<Result<(), BusError>>, BusError>> {
            let log = self.log.clone();
            let fail = self.fail;
            Box::pin(async move {
                let p: BoxFuture<Result<(), BusError>> = Box::pin(async move {
                    tokio::time::sleep(Duration::from_millis(u64::from(20 - b.1.min(20)))).await;
                    if Some(b.1) == fail {
                        return Err(BusError::NotDurable {
                            reason: "test".into(),
                            retryable: true,
                        });
                    }
                    log.lock().unwrap().push((b.0, b.1));
                    Ok(())
                });
                Ok(p)
            })
        }
    }

    #[tokio::test]
    async fn per_device_order_and_receipts_after_durability() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let bus = InProcessBus::new(
            &BusConfig::default(),
            Arc::new(Slow {
                log: log.clone(),
                fail: Some(7),
            }),
        );
        let mut sub = bus.subscribe();
        let mut receipts = Vec::new();
        for i in 0..10u32 {
            receipts.push(bus.publish(B(42, i)).await.unwrap());
        }
        for (i, r) in receipts.into_iter().enumerate() {
            let r = r.await;
            if i == 7 {
                assert!(matches!(r, Err(BusError::NotDurable { .. })));
            } else {
                // Durable means the sink saw it before the receipt resolved.
                assert!(r.is_ok());
                assert!(log.lock().unwrap().contains(&(42, i as u32)));
            }
        }
        let mut seen = Vec::new();
        for _ in 0..9 {
            seen.push(sub.recv().await.unwrap().batch.1);
        }
        assert_eq!(
            seen,
            vec![0, 1, 2, 3, 4, 5, 6, 8, 9],
            "subscriber order, failed batch absent"
        );
        assert_eq!(bus.depth(), 0);
    }

    struct Never;
    impl DurableSink<B> for Never {
        fn submit(&self, _: Arc<B>) -> BoxFuture<Result<BoxFuture<Result<(), BusError>>, BusError>> {
            Box::pin(std::future::pending())
        }
    }

    #[tokio::test]
    async fn reject_policy_fails_when_full_block_waits() {
        let cfg = BusConfig {
            shards: 1,
            shard_capacity: 2,
            full_policy: FullPolicy::Reject,
            ..BusConfig::default()
        };
        let bus = InProcessBus::new(&cfg, Arc::new(Never));
        // One is taken by the stuck submit stage, two fill the queue.
        let mut ok = 0;
        let mut full = 0;
        for i in 0..5 {
            tokio::task::yield_now().await;
            match bus.publish(B(1, i)).await {
                Ok(_) => ok += 1,
                Err(BusError::Full) => full += 1,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!((ok, full), (3, 2));

        let cfg = BusConfig {
            full_policy: FullPolicy::Block,
            ..cfg
        };
        let bus = InProcessBus::new(&cfg, Arc::new(Never));
        for i in 0..3 {
            bus.publish(B(1, i)).await.unwrap();
            tokio::task::yield_now().await;
        }
        let blocked = tokio::time::timeout(Duration::from_millis(50), bus.publish(B(1, 9))).await;
        assert!(blocked.is_err(), "a full Block bus waits");
    }
}
