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
//! and hands back a pending receipt. A Fluvio or NATS JetStream backend (operators
//! issue) is durable when its broker has replicated the record; its consumers then
//! write to the store. That is why batches must be serialisable (`B: Serialize` is
//! what such a backend adds as a bound) and why a [`Delivery`] carries an explicit
//! offset that the consumer commits.
//!
//! # Layout
//! - [`Bus`], [`Keyed`], [`FullPolicy`], [`BusError`], [`PublishReceipt`]: the contract.
//! - [`DurableSink`]: what makes a batch durable in embedded mode.
//! - [`InProcessBus`]: shards by device, a submit stage and an in-order completion stage
//!   per shard, broadcast to subscribers after durability.
//! - [`Subscription`], [`Delivery`]: the consumer side.

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
    /// Durable batches from now on, in per-key order.
    fn subscribe(&self) -> Subscription<B>;
    /// Batches published and not yet durable.
    fn depth(&self) -> usize;
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
/// safe in the store; a replaying consumer reads it from there).
#[derive(Debug)]
pub struct Subscription<B> {
    rx: broadcast::Receiver<Delivery<B>>,
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
    pub async fn recv(&mut self) -> Result<Delivery<B>, RecvError> {
        match self.rx.recv().await {
            Ok(d) => Ok(d),
            Err(broadcast::error::RecvError::Lagged(n)) => Err(RecvError::Lagged(n)),
            Err(broadcast::error::RecvError::Closed) => Err(RecvError::Closed),
        }
    }

    /// Marks everything up to `offset` as processed. A no-op in-process (nothing is
    /// replayed); a persistent backend stores it as the consumer group's position.
    pub fn commit(&mut self, _offset: Offset) {}
}

/// [`InProcessBus`] settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    /// Devices are spread over this many independent ordered lanes.
    pub shards: usize,
    /// Batches queued per shard before the [`FullPolicy`] applies.
    pub shard_capacity: usize,
    /// Batches submitted to the sink and awaiting durability, per shard. Bounded so a
    /// stalled sink stops the shard (and, through it, the sockets).
    pub in_flight_per_shard: usize,
    pub full_policy: FullPolicy,
    pub subscriber_capacity: usize,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
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
            rx: self.inner.subscribers.subscribe(),
        }
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
