//! `FluvioBus`: the bus on a Fluvio cluster (feature `fluvio`).
//!
//! One topic per bus (`<prefix>-<bus>`, `partitions` partitions, `replicas` copies),
//! created if missing. The producer's partitioner is [`partition_of`] over the device id
//! sent as the record key, so one device's batches share a partition and keep their
//! order. The producer runs with `Isolation::ReadCommitted`: a record's metadata (its
//! partition and offset) comes back once the in-sync replicas have it, and that is the
//! [`PublishReceipt`]. Each (group, partition) is a consumer stream with a server-side
//! consumer offset (consumer id = the group) under manual offset management.
//!
//! Fluvio commits "the last record the stream yielded", not an arbitrary offset, and the
//! delivering stream runs ahead of what the consumer has finished. So each partition has
//! a second stream under the same consumer id, the **committer**, that only trails: to
//! commit offset `t` it reads (and drops) records up to `t`, then commits and flushes. A
//! restarted member resumes right after the last committed batch, whatever was delivered
//! beyond it. The partition task stops taking batches while `max_uncommitted` are
//! outstanding, which bounds how far the committer can trail.
//!
//! Tests: the contract suite in `tests/contract.rs` runs against a cluster when
//! `CLUTCH_FLUVIO_ENDPOINT` is set; see the crate README for whether it has been.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use fluvio::consumer::{ConsumerConfigExtBuilder, ConsumerStream, OffsetManagementStrategy};
use fluvio::metadata::topic::TopicSpec;
use fluvio::{
    Fluvio, FluvioClusterConfig, Isolation, Partitioner, PartitionerConfig, TopicProducerConfigBuilder,
    TopicProducerPool,
};
use futures_util::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::{
    BoxFuture, Bus, BusConfig, BusError, CommitCmd, Delivery, Feed, FullPolicy, Keyed, Offset, PublishReceipt,
    Subscription, check_group, partition_of,
};

fn backend(what: &str, e: impl std::fmt::Display) -> BusError {
    BusError::Backend(format!("{what}: {e}"))
}

/// Device id (big-endian key) → partition, the same map as every other backend.
#[derive(Debug)]
struct DevicePartitioner;

impl Partitioner for DevicePartitioner {
    fn partition(&self, config: &PartitionerConfig, key: Option<&[u8]>, _value: &[u8]) -> fluvio::PartitionId {
        let key = key
            .and_then(|k| <[u8; 8]>::try_from(k).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0);
        partition_of(key, config.partition_count)
    }
}

/// The Fluvio bus.
pub struct FluvioBus<B> {
    fluvio: Arc<Fluvio>,
    producer: Arc<TopicProducerPool>,
    topic: String,
    partitions: u32,
    policy: FullPolicy,
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    max_uncommitted: usize,
    _batches: PhantomData<fn() -> B>,
}

impl<B> std::fmt::Debug for FluvioBus<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FluvioBus")
            .field("topic", &self.topic)
            .field("partitions", &self.partitions)
            .field("policy", &self.policy)
            .finish()
    }
}

impl<B> FluvioBus<B>
where
    B: Keyed + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// Connects to the SC at `config.fluvio_endpoint` and creates (or opens) the topic
    /// of bus `bus`.
    pub async fn connect(config: &BusConfig, bus: &str) -> Result<Self, BusError> {
        let topic = format!("{}-{}", config.prefix, bus)
            .to_ascii_lowercase()
            .replace('_', "-");
        let fluvio = Fluvio::connect_with_config(&FluvioClusterConfig::new(config.fluvio_endpoint.clone()))
            .await
            .map_err(|e| backend(&format!("connecting to Fluvio at {}", config.fluvio_endpoint), e))?;
        let partitions = config.partitions.max(1);
        let spec = TopicSpec::new_computed(partitions, config.replicas.max(1), None);
        if let Err(e) = fluvio.admin().await.create(topic.clone(), false, spec).await {
            // An existing topic is the normal case after the first start.
            if !e.to_string().to_ascii_lowercase().contains("exist") {
                return Err(backend(&format!("creating topic {topic}"), e));
            }
        }
        let producer_config = TopicProducerConfigBuilder::default()
            .partitioner(Arc::new(DevicePartitioner))
            .isolation(Isolation::ReadCommitted)
            // Devices wait for this ack: a short linger keeps it low, batching still
            // happens under load.
            .linger(Duration::from_millis(2))
            .timeout(Duration::from_millis(config.publish_timeout_ms.max(1)))
            .build()
            .map_err(|e| backend("producer config", e))?;
        let producer = fluvio
            .topic_producer_with_config(topic.clone(), producer_config)
            .await
            .map_err(|e| backend(&format!("producer for {topic}"), e))?;
        let max_in_flight = config.max_in_flight.max(1);
        tracing::info!(%topic, partitions, "fluvio bus ready");
        Ok(FluvioBus {
            fluvio: Arc::new(fluvio),
            producer: Arc::new(producer),
            topic,
            partitions,
            policy: config.full_policy,
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            max_uncommitted: config.max_uncommitted.max(1),
            _batches: PhantomData,
        })
    }

    /// Sends what the producer still batches (call before dropping the bus).
    pub async fn flush(&self) -> Result<(), BusError> {
        self.producer.flush().await.map_err(|e| backend("flushing", e))
    }
}

impl<B> Bus<B> for FluvioBus<B>
where
    B: Keyed + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn publish(&self, batch: B) -> BoxFuture<Result<PublishReceipt, BusError>> {
        let key = batch.key();
        let payload = rmp_serde::to_vec_named(&batch);
        let producer = self.producer.clone();
        let sem = self.in_flight.clone();
        let policy = self.policy;
        Box::pin(async move {
            let payload = payload.map_err(|e| BusError::NotDurable {
                reason: format!("cannot serialise the batch: {e}"),
                retryable: false,
            })?;
            let permit = match policy {
                FullPolicy::Block => sem.acquire_owned().await.map_err(|_| BusError::Closed)?,
                FullPolicy::Reject => sem.try_acquire_owned().map_err(|e| match e {
                    tokio::sync::TryAcquireError::NoPermits => BusError::Full,
                    tokio::sync::TryAcquireError::Closed => BusError::Closed,
                })?,
            };
            let output =
                producer
                    .send(key.to_be_bytes().to_vec(), payload)
                    .await
                    .map_err(|e| BusError::NotDurable {
                        reason: format!("produce: {e}"),
                        retryable: true,
                    })?;
            let (tx, rx) = oneshot::channel();
            tokio::spawn(async move {
                let result = output.wait().await;
                drop(permit);
                let result = result
                    .map(|m| Offset {
                        shard: m.partition_id(),
                        seq: m.offset() as u64,
                    })
                    .map_err(|e| BusError::NotDurable {
                        reason: format!("no Fluvio acknowledgement: {e}"),
                        retryable: true,
                    });
                let _ = tx.send(result);
            });
            Ok(PublishReceipt(rx))
        })
    }

    /// A live tap: every partition from its end, no offsets kept.
    fn subscribe(&self) -> Subscription<B> {
        let (tx, rx) = mpsc::channel(1024);
        for p in 0..self.partitions {
            let fluvio = self.fluvio.clone();
            let topic = self.topic.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let config = ConsumerConfigExtBuilder::default()
                    .topic(topic)
                    .partition(p)
                    .offset_start(fluvio::Offset::end())
                    .build();
                let mut stream = match config {
                    Ok(c) => match fluvio.consumer_with_config(c).await {
                        Ok(s) => s,
                        Err(e) => return tracing::error!(error = %e, "fluvio live tap"),
                    },
                    Err(e) => return tracing::error!(error = %e, "fluvio live tap"),
                };
                while let Some(r) = stream.next().await {
                    let Ok(r) = r else { continue };
                    match rmp_serde::from_slice::<B>(r.value()) {
                        Ok(b) => {
                            let d = Delivery {
                                offset: Offset {
                                    shard: p,
                                    seq: r.offset() as u64,
                                },
                                batch: Arc::new(b),
                            };
                            if tx.send(d).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => tracing::error!(offset = r.offset(), error = %e, "live tap: skipping a batch"),
                    }
                }
            });
        }
        Subscription::from_feed(Feed {
            rx,
            commits: Vec::new(),
        })
    }

    fn consume(&self, group: &str) -> BoxFuture<Result<Subscription<B>, BusError>> {
        let group = group.to_string();
        let fluvio = self.fluvio.clone();
        let topic = self.topic.clone();
        let partitions = self.partitions;
        let max_uncommitted = self.max_uncommitted;
        Box::pin(async move {
            check_group(&group)?;
            let (tx, rx) = mpsc::channel(256);
            let mut commits = Vec::with_capacity(partitions as usize);
            for p in 0..partitions {
                let config = ConsumerConfigExtBuilder::default()
                    .topic(topic.clone())
                    .partition(p)
                    .offset_consumer(group.clone())
                    // Used only when the group has no committed offset yet.
                    .offset_start(fluvio::Offset::beginning())
                    .offset_strategy(OffsetManagementStrategy::Manual)
                    .build()
                    .map_err(|e| backend("consumer config", e))?;
                let stream = fluvio
                    .consumer_with_config(config.clone())
                    .await
                    .map_err(|e| backend(&format!("consumer {group} on {topic}/{p}"), e))?;
                let committer = fluvio
                    .consumer_with_config(config)
                    .await
                    .map_err(|e| backend(&format!("committer {group} on {topic}/{p}"), e))?;
                let (ctx, crx) = mpsc::unbounded_channel();
                commits.push(ctx);
                tokio::spawn(partition_task::<B, _>(
                    stream,
                    committer,
                    p,
                    max_uncommitted,
                    tx.clone(),
                    crx,
                ));
            }
            Ok(Subscription::from_feed(Feed { rx, commits }))
        })
    }

    fn offsets_persist(&self) -> bool {
        true
    }

    fn depth(&self) -> usize {
        self.max_in_flight - self.in_flight.available_permits()
    }
}

async fn partition_task<B, S>(
    mut stream: S,
    mut committer: S,
    partition: u32,
    max_uncommitted: usize,
    tx: mpsc::Sender<Delivery<B>>,
    mut commits: mpsc::UnboundedReceiver<CommitCmd>,
) where
    B: DeserializeOwned + Send + Sync + 'static,
    S: ConsumerStream + Send,
{
    // Offsets yielded by the stream and not yet committed, oldest first.
    let mut taken: std::collections::VecDeque<u64> = std::collections::VecDeque::new();
    let mut target: Option<u64> = None;
    // The last offset committed (= the last the committer yielded).
    let mut committed: Option<u64> = None;
    let mut ready: Option<Delivery<B>> = None;
    loop {
        tokio::select! {
            biased;
            cmd = commits.recv() => {
                let Some(cmd) = cmd else { return };
                let mut syncs = Vec::new();
                let mut next = Some(cmd);
                while let Some(c) = next {
                    match c {
                        CommitCmd::Upto(s) => target = Some(target.map_or(s, |t| t.max(s))),
                        CommitCmd::Sync(reply) => syncs.push(reply),
                    }
                    next = commits.try_recv().ok();
                }
                let mut result = Ok(());
                if let Some(t) = target
                    && committed.is_none_or(|c| t > c)
                {
                    result = commit_at(&mut committer, partition, t).await;
                    if result.is_ok() {
                        committed = Some(t);
                        while taken.front().is_some_and(|&o| o <= t) {
                            taken.pop_front();
                        }
                    }
                }
                for reply in syncs {
                    let _ = reply.send(result.clone());
                }
            }
            permit = tx.reserve(), if ready.is_some() => match permit {
                Ok(permit) => permit.send(ready.take().expect("guarded")),
                Err(_) => return,
            },
            r = stream.next(), if ready.is_none() && taken.len() < max_uncommitted => match r {
                None => return,
                Some(Err(e)) => {
                    tracing::warn!(partition, error = ?e, "fluvio consumer error");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Some(Ok(r)) => {
                    let offset = r.offset() as u64;
                    taken.push_back(offset);
                    match rmp_serde::from_slice::<B>(r.value()) {
                        Ok(b) => ready = Some(Delivery { offset: Offset { shard: partition, seq: offset }, batch: Arc::new(b) }),
                        Err(e) => {
                            metrics::counter!("clutch_bus_undecodable_total").increment(1);
                            tracing::error!(partition, offset, error = %e, "skipping a batch");
                        }
                    }
                }
            },
        }
    }
}

/// Moves the committer to offset `t` (a batch already delivered, so it is there) and
/// commits it: Fluvio commits the last record a stream yielded.
async fn commit_at<S: ConsumerStream + Send>(committer: &mut S, partition: u32, t: u64) -> Result<(), BusError> {
    let reach = async {
        loop {
            match committer.next().await {
                Some(Ok(r)) if r.offset() as u64 >= t => return Ok(()),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(backend("committer", format!("{e:?}"))),
                None => return Err(BusError::Closed),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), reach)
        .await
        .map_err(|_| {
            backend(
                "committer",
                format!("partition {partition}: offset {t} not reached in 30 s"),
            )
        })??;
    committer
        .offset_commit()
        .await
        .map_err(|e| backend("offset commit", e))?;
    committer.offset_flush().await.map_err(|e| backend("offset flush", e))
}
