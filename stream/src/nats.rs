//! [`NatsBus`]: the bus on NATS JetStream.
//!
//! One JetStream stream per bus (`<PREFIX>_<BUS>`, file storage, `replicas` copies,
//! kept `retention_hours`), subjects `<prefix>.<bus>.<partition>` with the partition
//! from [`partition_of`], so the batches of one device share a subject and JetStream
//! keeps their order.
//!
//! - Publish: the batch is serialised (MessagePack, see below) and published; the
//!   JetStream publish acknowledgement — the server has stored it (and, with replicas,
//!   replicated it) — resolves the [`PublishReceipt`] with the stream sequence. At most
//!   `max_in_flight` publishes await their acknowledgement; then the [`FullPolicy`]
//!   applies. An acknowledgement that does not come within `publish_timeout_ms` (server
//!   down, reconnecting) fails the receipt as retryable: the device is not acked and
//!   resends, which is what makes a broker outage lossless.
//! - Consume: a durable pull consumer per (group, partition), `AckPolicy::All`, so a
//!   commit of stream sequence `s` acknowledges everything up to `s` in the partition.
//!   Commits are sent as double acks (confirmed by the server), coalesced per partition.
//!   When a member starts, it recreates each consumer at the group's ack floor: batches
//!   that a crashed member received but never committed come back at once and in
//!   order, instead of after the redelivery timeout and behind newer ones.
//! - Reconnects are the client's: it reconnects forever; publishes fail (retryably)
//!   while it is away, pull consumers resume when it is back.
//!
//! Why MessagePack (`rmp-serde`, maps with field names): the rows carry
//! `serde_json::Value` attributes, which needs a self-describing format — bincode and
//! postcard cannot deserialise it — and named fields let an ingest and a writer of
//! different versions read each other's batches while fields are only added. It is about
//! half the size of JSON and cheaper to produce (measured in the README).

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::{
    BoxFuture, Bus, BusConfig, BusError, CommitCmd, Delivery, Feed, FullPolicy, Keyed, Offset, PublishReceipt,
    Subscription, check_group, partition_of, redact_url,
};

/// The JetStream bus. Cheap to share behind an `Arc`; one NATS connection.
pub struct NatsBus<B> {
    js: jetstream::Context,
    client: async_nats::Client,
    stream: String,
    subject: String,
    partitions: u32,
    policy: FullPolicy,
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    max_uncommitted: usize,
    redeliver_after: Duration,
    tap_capacity: usize,
    _batches: PhantomData<fn() -> B>,
}

impl<B> std::fmt::Debug for NatsBus<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBus")
            .field("stream", &self.stream)
            .field("subject", &self.subject)
            .field("partitions", &self.partitions)
            .field("policy", &self.policy)
            .field("in_flight", &(self.max_in_flight - self.in_flight.available_permits()))
            .finish()
    }
}

fn backend(what: &str, e: impl std::fmt::Display) -> BusError {
    BusError::Backend(format!("{what}: {e}"))
}

/// Stream and subject names for bus `bus` under `prefix`.
fn names(prefix: &str, bus: &str) -> Result<(String, String), BusError> {
    let ok = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !ok(prefix) || !ok(bus) {
        return Err(BusError::Backend(format!(
            "bus names {prefix:?}/{bus:?}: use letters, digits, '-' or '_'"
        )));
    }
    let stream = format!("{}_{}", prefix, bus).to_ascii_uppercase().replace('-', "_");
    Ok((stream, format!("{prefix}.{bus}")))
}

impl<B> NatsBus<B>
where
    B: Keyed + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// Connects to `config.nats_url` and creates (or opens) the stream of bus `bus`
    /// (e.g. `"batches"`). Fails when the server cannot be reached or has no JetStream.
    pub async fn connect(config: &BusConfig, bus: &str) -> Result<Self, BusError> {
        let (stream_name, subject) = names(&config.prefix, bus)?;
        let url = redact_url(&config.nats_url);
        let client = async_nats::ConnectOptions::new()
            .name(format!("clutch-{bus}"))
            .connection_timeout(Duration::from_secs(5))
            .max_reconnects(None)
            .event_callback(move |event| async move {
                // Disconnects and reconnects are the events an operator needs to see.
                tracing::info!(%event, "nats connection");
            })
            .connect(config.nats_url.as_str())
            .await
            .map_err(|e| backend(&format!("connecting to NATS at {url}"), e))?;
        let timeout = Duration::from_millis(config.publish_timeout_ms.max(1));
        let js = jetstream::ContextBuilder::new()
            .timeout(timeout)
            .ack_timeout(timeout)
            .build(client.clone());
        let replicas = config.replicas.max(1) as usize;
        let wanted = stream::Config {
            name: stream_name.clone(),
            subjects: vec![format!("{subject}.*")],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            max_age: Duration::from_secs(config.retention_hours.max(1) * 3600),
            num_replicas: replicas,
            // Publishers never retry blindly (a failed receipt means the device resends),
            // so the dedup window only costs memory.
            duplicate_window: Duration::from_secs(1),
            ..Default::default()
        };
        let mut st = js.get_or_create_stream(wanted).await.map_err(|e| {
            backend(
                &format!("creating JetStream stream {stream_name} (is JetStream enabled?)"),
                e,
            )
        })?;
        let info = st.info().await.map_err(|e| backend("reading the stream", e))?;
        if info.config.subjects != [format!("{subject}.*")] {
            return Err(BusError::Backend(format!(
                "stream {stream_name} exists with subjects {:?}, expected {subject}.*",
                info.config.subjects
            )));
        }
        tracing::info!(stream = %stream_name, %url, partitions = config.partitions, replicas, "nats bus ready");
        let max_in_flight = config.max_in_flight.max(1);
        Ok(NatsBus {
            js,
            client,
            stream: stream_name,
            subject,
            partitions: config.partitions.max(1),
            policy: config.full_policy,
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            max_uncommitted: config.max_uncommitted.max(1),
            redeliver_after: Duration::from_millis(config.redeliver_after_ms.max(1000)),
            tap_capacity: config.subscriber_capacity.max(1),
            _batches: PhantomData,
        })
    }

    /// The JetStream stream this bus lives in.
    pub fn stream_name(&self) -> &str {
        &self.stream
    }

    /// Waits until everything published so far has left this process (for shutdown).
    pub async fn flush(&self) -> Result<(), BusError> {
        self.client.flush().await.map_err(|e| backend("flushing", e))
    }

    /// Reads the batch stored at `offset` straight from the stream (tests, tools).
    pub async fn read_at(&self, offset: Offset) -> Result<B, BusError> {
        let st = self
            .js
            .get_stream(&self.stream)
            .await
            .map_err(|e| backend("opening the stream", e))?;
        let m = st
            .get_raw_message(offset.seq)
            .await
            .map_err(|e| backend("reading a message", e))?;
        if m.subject.as_str() != format!("{}.{}", self.subject, offset.shard) {
            return Err(BusError::Backend(format!(
                "offset {offset:?} is on subject {}, not partition {}",
                m.subject, offset.shard
            )));
        }
        decode(&m.payload)
    }
}

fn decode<B: DeserializeOwned>(payload: &[u8]) -> Result<B, BusError> {
    rmp_serde::from_slice(payload).map_err(|e| BusError::NotDurable {
        reason: format!("undecodable batch: {e}"),
        retryable: false,
    })
}

impl<B> Bus<B> for NatsBus<B>
where
    B: Keyed + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn publish(&self, batch: B) -> BoxFuture<Result<PublishReceipt, BusError>> {
        let partition = partition_of(batch.key(), self.partitions);
        let subject = format!("{}.{}", self.subject, partition);
        let payload = rmp_serde::to_vec_named(&batch);
        let js = self.js.clone();
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
            // Returns once the message is queued on the connection, in call order: the
            // next publish of this device goes out after it, which is what keeps order.
            let ack = js
                .publish(subject, payload.into())
                .await
                .map_err(|e| BusError::NotDurable {
                    reason: format!("publish: {e}"),
                    retryable: true,
                })?;
            let (tx, rx) = oneshot::channel();
            tokio::spawn(async move {
                let result = ack.await;
                drop(permit);
                let result = result
                    .map(|a| Offset {
                        shard: partition,
                        seq: a.sequence,
                    })
                    .map_err(|e| BusError::NotDurable {
                        reason: format!("no JetStream acknowledgement: {e}"),
                        retryable: true,
                    });
                let _ = tx.send(result);
            });
            Ok(PublishReceipt(rx))
        })
    }

    /// An ordered ephemeral consumer from the current time on; nothing to commit.
    fn subscribe(&self) -> Subscription<B> {
        let (tx, rx) = mpsc::channel(self.tap_capacity);
        let js = self.js.clone();
        let stream = self.stream.clone();
        let subject = self.subject.clone();
        let start_time = time::OffsetDateTime::now_utc();
        tokio::spawn(async move {
            if let Err(e) = tap(js, stream, subject, start_time, tx).await {
                tracing::error!(error = %e, "nats live tap ended");
            }
        });
        Subscription::from_feed(Feed {
            rx,
            commits: Vec::new(),
        })
    }

    fn consume(&self, group: &str) -> BoxFuture<Result<Subscription<B>, BusError>> {
        let group = group.to_string();
        let js = self.js.clone();
        let stream_name = self.stream.clone();
        let subject = self.subject.clone();
        let partitions = self.partitions;
        let max_uncommitted = self.max_uncommitted;
        let redeliver_after = self.redeliver_after;
        Box::pin(async move {
            check_group(&group)?;
            let st = js
                .get_stream(&stream_name)
                .await
                .map_err(|e| backend("opening the stream", e))?;
            // The hand-over channel is small: the broker's max_uncommitted is the bound
            // that matters, and a small buffer keeps redelivery after a crash cheap.
            let (tx, rx) = mpsc::channel(256);
            let mut commits = Vec::with_capacity(partitions as usize);
            for p in 0..partitions {
                let spec = ConsumerSpec {
                    name: format!("{group}-p{p}"),
                    filter: format!("{subject}.{p}"),
                    max_uncommitted,
                    redeliver_after,
                };
                let consumer = open_consumer(&st, &spec).await?;
                let (ctx, crx) = mpsc::unbounded_channel();
                commits.push(ctx);
                tokio::spawn(partition_task::<B>(st.clone(), spec, consumer, p, tx.clone(), crx));
            }
            tracing::info!(%group, stream = %stream_name, partitions, "joined consumer group");
            Ok(Subscription::from_feed(Feed { rx, commits }))
        })
    }

    fn check(&self) -> Result<(), String> {
        match self.client.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            other => Err(format!("NATS connection {other}")),
        }
    }

    fn offsets_persist(&self) -> bool {
        true
    }

    fn depth(&self) -> usize {
        self.max_in_flight - self.in_flight.available_permits()
    }
}

struct ConsumerSpec {
    name: String,
    filter: String,
    max_uncommitted: usize,
    redeliver_after: Duration,
}

type PullConsumer = consumer::Consumer<consumer::pull::Config>;

/// Opens the group's consumer for one partition at the group's committed position.
async fn open_consumer(st: &stream::Stream, spec: &ConsumerSpec) -> Result<PullConsumer, BusError> {
    let deliver_policy = match st.consumer_info(&spec.name).await {
        Ok(info) => {
            // Recreated so that what the previous member received and never committed
            // is delivered again now, in order (a kept consumer would hold it back until
            // the redelivery timeout, then deliver it after newer batches). A crash
            // between delete and create leaves no consumer: the group then starts from
            // the oldest retained batch — duplicates, never loss.
            let next = info.ack_floor.stream_sequence + 1;
            st.delete_consumer(&spec.name)
                .await
                .map_err(|e| backend(&format!("resetting consumer {}", spec.name), e))?;
            consumer::DeliverPolicy::ByStartSequence { start_sequence: next }
        }
        Err(e) if e.to_string().contains("not found") => consumer::DeliverPolicy::All,
        Err(e) => return Err(backend(&format!("reading consumer {}", spec.name), e)),
    };
    let config = consumer::pull::Config {
        durable_name: Some(spec.name.clone()),
        filter_subject: spec.filter.clone(),
        deliver_policy,
        ack_policy: consumer::AckPolicy::All,
        ack_wait: spec.redeliver_after,
        max_ack_pending: spec.max_uncommitted as i64,
        ..Default::default()
    };
    st.create_consumer(config)
        .await
        .map_err(|e| backend(&format!("creating consumer {}", spec.name), e))
}

/// Fetches one partition for a group, hands deliveries over in order, and turns the
/// subscription's commits into acknowledgements. Ends when the subscription is dropped.
async fn partition_task<B: DeserializeOwned + Send + Sync + 'static>(
    st: stream::Stream,
    spec: ConsumerSpec,
    mut consumer: PullConsumer,
    partition: u32,
    tx: mpsc::Sender<Delivery<B>>,
    mut commits: mpsc::UnboundedReceiver<CommitCmd>,
) {
    // Delivered and not yet committed, by stream sequence; acking the newest of those
    // up to a commit acknowledges all of them (AckPolicy::All).
    let mut pending: BTreeMap<u64, jetstream::message::Acker> = BTreeMap::new();
    let mut backoff = Duration::from_millis(100);
    'consumer: loop {
        let mut messages = match consumer
            .stream()
            .max_messages_per_batch(256)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
        {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(consumer = %spec.name, error = %e, "pulling failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        let mut ready: Option<Delivery<B>> = None;
        loop {
            tokio::select! {
                biased;
                cmd = commits.recv() => match cmd {
                    None => return,
                    Some(cmd) => handle_commit(cmd, &mut commits, &mut pending, &spec.name).await,
                },
                permit = tx.reserve(), if ready.is_some() => match permit {
                    Ok(permit) => permit.send(ready.take().expect("guarded")),
                    Err(_) => return,
                },
                m = messages.next(), if ready.is_none() => match m {
                    None => continue 'consumer,
                    Some(Err(e)) => {
                        use consumer::pull::MessagesErrorKind as K;
                        match e.kind() {
                            // Heartbeats missed during a reconnect: the stream recovers.
                            K::MissingHeartbeat | K::Pull | K::Other => {
                                tracing::debug!(consumer = %spec.name, error = %e, "pull interrupted");
                            }
                            _ => {
                                tracing::warn!(consumer = %spec.name, error = %e, "consumer lost; reopening");
                                tokio::time::sleep(backoff).await;
                                match open_consumer(&st, &spec).await {
                                    Ok(c) => {
                                        consumer = c;
                                        pending.clear();
                                        continue 'consumer;
                                    }
                                    Err(e) => tracing::warn!(consumer = %spec.name, error = %e, "reopen failed"),
                                }
                            }
                        }
                    }
                    Some(Ok(msg)) => {
                        backoff = Duration::from_millis(100);
                        let seq = match msg.info() {
                            Ok(i) => i.stream_sequence,
                            Err(e) => {
                                tracing::warn!(consumer = %spec.name, error = %e, "message without JetStream metadata");
                                continue;
                            }
                        };
                        let (msg, acker) = msg.split();
                        pending.insert(seq, acker);
                        match decode::<B>(&msg.payload) {
                            Ok(b) => {
                                ready = Some(Delivery {
                                    offset: Offset { shard: partition, seq },
                                    batch: Arc::new(b),
                                })
                            }
                            // Kept in the stream for inspection; the group moves past it
                            // with its next commit rather than stalling the partition.
                            Err(e) => {
                                metrics::counter!("clutch_bus_undecodable_total").increment(1);
                                tracing::error!(consumer = %spec.name, seq, error = %e, "skipping a batch");
                            }
                        }
                    }
                },
            }
        }
    }
}

async fn handle_commit(
    first: CommitCmd,
    commits: &mut mpsc::UnboundedReceiver<CommitCmd>,
    pending: &mut BTreeMap<u64, jetstream::message::Acker>,
    name: &str,
) {
    // Coalesce whatever is queued: one confirmed ack covers them all.
    let mut target = 0u64;
    let mut syncs = Vec::new();
    let mut next = Some(first);
    while let Some(cmd) = next {
        match cmd {
            CommitCmd::Upto(s) => target = target.max(s),
            CommitCmd::Sync(reply) => syncs.push(reply),
        }
        next = commits.try_recv().ok();
    }
    let mut result = Ok(());
    if let Some((&seq, _)) = pending.range(..=target).next_back() {
        let acker = pending.remove(&seq).expect("present");
        match acker.double_ack().await {
            Ok(()) => pending.retain(|&s, _| s > seq),
            Err(e) => {
                // Kept, so the next commit (or sync) tries again; the broker redelivers
                // if nobody does, which at-least-once allows.
                tracing::warn!(consumer = %name, seq, error = %e, "commit not confirmed");
                pending.insert(seq, acker);
                result = Err(BusError::Backend(format!("commit of {seq} not confirmed: {e}")));
            }
        }
    }
    for reply in syncs {
        let _ = reply.send(result.clone());
    }
}

/// The live tap: an ordered consumer, which re-creates itself across reconnects.
async fn tap<B: DeserializeOwned + Send + Sync + 'static>(
    js: jetstream::Context,
    stream_name: String,
    subject: String,
    start_time: time::OffsetDateTime,
    tx: mpsc::Sender<Delivery<B>>,
) -> Result<(), BusError> {
    let st = js
        .get_stream(&stream_name)
        .await
        .map_err(|e| backend("opening the stream", e))?;
    let consumer = st
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: format!("{subject}.*"),
            deliver_policy: consumer::DeliverPolicy::ByStartTime { start_time },
            ..Default::default()
        })
        .await
        .map_err(|e| backend("creating the live tap", e))?;
    let mut messages = consumer.messages().await.map_err(|e| backend("live tap", e))?;
    let prefix = format!("{subject}.");
    while let Some(m) = messages.next().await {
        let m = match m {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, "live tap interrupted");
                continue;
            }
        };
        let Some(partition) = m.subject.strip_prefix(&prefix).and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(info) = m.info() else { continue };
        let seq = info.stream_sequence;
        match decode::<B>(&m.payload) {
            Ok(b) => {
                let d = Delivery {
                    offset: Offset { shard: partition, seq },
                    batch: Arc::new(b),
                };
                if tx.send(d).await.is_err() {
                    return Ok(());
                }
            }
            Err(e) => tracing::error!(seq, error = %e, "live tap: skipping a batch"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_partitions() {
        assert_eq!(
            names("clutch", "batches").unwrap(),
            ("CLUTCH_BATCHES".to_string(), "clutch.batches".to_string())
        );
        assert!(names("clutch", "a.b").is_err());
        assert!(names("clutch", "").is_err());
        // Sequential device ids spread over all partitions.
        let mut seen = [0usize; 16];
        for d in 0..1600u64 {
            seen[partition_of(d, 16) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
        assert_eq!(partition_of(7, 1), 0);
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("nats://u:secret@h1:4222,nats://h2:4222"),
            "nats://***@h1:4222,nats://h2:4222"
        );
    }
}
