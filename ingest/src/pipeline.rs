//! What the ingest tier puts on the bus, and the sink that makes it durable in
//! embedded mode (the store writer).

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use protocols::{Message, MessageKind};
use serde::{Deserialize, Serialize};
use store::{EventRow, PositionRow, WriteError, WriterHandle};
use stream::{BoxFuture, BusError, DurableSink, Keyed};

/// The records of one device frame (or datagram, or HTTP request), acknowledged together.
/// Serialisable so a networked bus can carry it as is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceBatch {
    pub device_id: i64,
    pub positions: Vec<PositionRow>,
    pub events: Vec<EventRow>,
}

impl Keyed for DeviceBatch {
    fn key(&self) -> u64 {
        self.device_id as u64
    }
    fn records(&self) -> usize {
        self.positions.len() + self.events.len()
    }
}

impl DeviceBatch {
    /// Maps decoded messages to rows. Command responses become `command_response`
    /// events so the device's answer is recorded next to its positions.
    pub fn from_messages(device_id: i64, messages: &[Message], server_time: DateTime<Utc>) -> Self {
        let mut positions = Vec::new();
        let mut events = Vec::new();
        for m in messages {
            positions.extend(
                m.positions
                    .iter()
                    .map(|p| PositionRow::from_position(device_id, p, server_time)),
            );
            if m.kind == MessageKind::CommandResponse {
                let mut e = EventRow::new(device_id, server_time, "command_response");
                e.attributes = serde_json::json!({ "result": m.result, "type": m.message_type });
                events.push(e);
            }
        }
        DeviceBatch {
            device_id,
            positions,
            events,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.positions.is_empty() && self.events.is_empty()
    }
}

/// Durability = the store writer's COMMIT receipt.
#[derive(Debug, Clone)]
pub struct StoreSink {
    writer: WriterHandle,
}

impl StoreSink {
    pub fn new(writer: WriterHandle) -> Self {
        StoreSink { writer }
    }
}

fn bus_error(e: WriteError) -> BusError {
    let retryable = !matches!(e, WriteError::Rejected(_));
    BusError::NotDurable {
        reason: e.to_string(),
        retryable,
    }
}

impl DurableSink<DeviceBatch> for StoreSink {
    fn submit(&self, batch: Arc<DeviceBatch>) -> BoxFuture<Result<BoxFuture<Result<(), BusError>>, BusError>> {
        let writer = self.writer.clone();
        Box::pin(async move {
            // A copy, because subscribers share the batch; rows are small and this keeps
            // the writer's by-value API.
            let rows = store::Batch {
                positions: batch.positions.clone(),
                events: batch.events.clone(),
            };
            let n = rows.rows();
            let started = Instant::now();
            let receipt = writer.submit(rows).await.map_err(bus_error)?;
            let pending: BoxFuture<Result<(), BusError>> = Box::pin(async move {
                let r = receipt.await.map_err(bus_error);
                metrics::histogram!(crate::metrics::WRITER_LATENCY).record(started.elapsed().as_secs_f64());
                metrics::histogram!(crate::metrics::WRITER_BATCH_ROWS).record(n as f64);
                r.map(|_| ())
            });
            Ok(pending)
        })
    }
}
