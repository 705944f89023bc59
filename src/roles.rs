//! `clutch serve --roles …`: which parts of the pipeline this process runs, and the
//! writer role (bus → store) that a distributed bus needs.
//!
//! In-process (`bus.backend = "in_process"`) every role runs in one process and the bus
//! itself writes to the store before a batch counts as durable. With a distributed bus
//! the roles can be spread over machines: `ingest` acks devices on the broker's publish
//! acknowledgement, `writer` consumes the bus as consumer group `writer` and writes with
//! the store's COPY writer (idempotent on (device_id, fix_time)), committing a batch's
//! offset only after the store's durability receipt.

use std::collections::BTreeSet;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use ingest::{DeviceBatch, StoreSink};
use stream::{BoxFuture, Bus, BusError, DurableSink, Offset};
use tokio_util::sync::CancellationToken;

/// One role of `clutch serve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Device listeners (TCP/UDP/HTTP): decode, publish on the bus, ack when durable.
    Ingest,
    /// Stream operators on the bus (trips, scoring, fuel, geofences…).
    Operators,
    /// Bus → PostgreSQL (only a separate role with a distributed bus).
    Writer,
    /// The HTTP API for users and services.
    Api,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Ingest, Role::Operators, Role::Writer, Role::Api];

    pub fn name(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Operators => "operators",
            Role::Writer => "writer",
            Role::Api => "api",
        }
    }
}

/// The set of roles a process runs (`--roles ingest,writer`; default: all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roles(BTreeSet<Role>);

impl Default for Roles {
    fn default() -> Self {
        Roles(Role::ALL.into_iter().collect())
    }
}

impl FromStr for Roles {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut set = BTreeSet::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if part == "all" {
                set.extend(Role::ALL);
                continue;
            }
            let role = Role::ALL
                .into_iter()
                .find(|r| r.name() == part)
                .ok_or_else(|| format!("unknown role {part:?} (roles: ingest, operators, writer, api, all)"))?;
            set.insert(role);
        }
        if set.is_empty() {
            return Err("no role given (roles: ingest, operators, writer, api, all)".into());
        }
        Ok(Roles(set))
    }
}

impl std::fmt::Display for Roles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|r| r.name()).collect();
        f.write_str(&names.join(","))
    }
}

impl Roles {
    pub fn has(&self, role: Role) -> bool {
        self.0.contains(&role)
    }

    pub fn is_all(&self) -> bool {
        self.0.len() == Role::ALL.len()
    }
}

/// The consumer group of the writer role.
pub const WRITER_GROUP: &str = "writer";

/// Batches the writer role has handed to the store and not yet seen committed.
const WRITER_IN_FLIGHT: usize = 1024;

type Written = (Offset, Arc<DeviceBatch>, Result<(), BusError>);

/// A retry of a failed write, after `delay`.
fn rewrite(sink: &StoreSink, offset: Offset, batch: Arc<DeviceBatch>, delay: Duration) -> BoxFuture<Written> {
    let sink = sink.clone();
    Box::pin(async move {
        tokio::time::sleep(delay).await;
        let result = match sink.submit(batch.clone()).await {
            Ok(pending) => pending.await,
            Err(e) => Err(e),
        };
        (offset, batch, result)
    })
}

/// The writer role: consumes group [`WRITER_GROUP`] and writes each batch with the store
/// writer, many in flight (group commit needs that), committing offsets in delivery
/// order as receipts arrive. A retryable failure is retried in place (later batches
/// wait, so a commit never passes an unwritten batch); a batch PostgreSQL rejects for
/// its data is logged and passed over, since retrying cannot succeed. Returns when
/// `stop` fires, after the batches in flight are written and their commits confirmed.
pub async fn run_writer(
    bus: Arc<dyn Bus<DeviceBatch>>,
    sink: StoreSink,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut sub = bus.consume(WRITER_GROUP).await?;
    tracing::info!("writer role: consuming the bus");
    let mut inflight: FuturesOrdered<BoxFuture<Written>> = FuturesOrdered::new();
    let mut stopping = false;
    loop {
        if stopping && inflight.is_empty() {
            break;
        }
        tokio::select! {
            biased;
            Some((offset, batch, result)) = inflight.next(), if !inflight.is_empty() => match result {
                Ok(()) => sub.commit(offset),
                Err(BusError::NotDurable { retryable: false, reason }) => {
                    metrics::counter!("clutch_writer_rejected_batches_total").increment(1);
                    tracing::error!(device_id = batch.device_id, ?offset, %reason, "batch rejected by the store; passed over");
                    sub.commit(offset);
                }
                Err(e) => {
                    tracing::warn!(device_id = batch.device_id, ?offset, error = %e, "store write failed; retrying");
                    inflight.push_front(rewrite(&sink, offset, batch, Duration::from_millis(500)));
                }
            },
            _ = stop.cancelled(), if !stopping => stopping = true,
            d = sub.recv(), if !stopping && inflight.len() < WRITER_IN_FLIGHT => match d {
                Ok(d) => {
                    // Submitted here, in delivery order (the store writer sees each
                    // device's rows in bus order); only the receipts are awaited
                    // concurrently. The submit waits when the store writer is full,
                    // which stops this loop from taking more from the bus.
                    let submitted = sink.submit(d.batch.clone()).await;
                    let (offset, batch) = (d.offset, d.batch);
                    inflight.push_back(Box::pin(async move {
                        let result = match submitted {
                            Ok(pending) => pending.await,
                            Err(e) => Err(e),
                        };
                        (offset, batch, result)
                    }));
                }
                Err(e) => {
                    // A closed distributed subscription is the backend giving up; with
                    // nothing committed past what is written, a restart resumes cleanly.
                    anyhow::bail!("writer role: the bus subscription ended: {e}");
                }
            },
        }
    }
    sub.sync_commits().await?;
    tracing::info!("writer role: stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_roles() {
        assert_eq!("all".parse::<Roles>().unwrap(), Roles::default());
        let r: Roles = "ingest, writer".parse().unwrap();
        assert!(r.has(Role::Ingest) && r.has(Role::Writer) && !r.has(Role::Api));
        assert_eq!(r.to_string(), "ingest,writer");
        assert!("ingest,wrtier".parse::<Roles>().unwrap_err().contains("wrtier"));
        assert!("".parse::<Roles>().is_err());
    }
}
