//! Counters shared by every simulated device, and the run summary built from them.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde::Serialize;

/// Ack latency in microseconds: an HDR histogram (3 significant digits, up to an hour)
/// for p50/p99 without storing samples, and the exact maximum.
#[derive(Debug)]
pub struct Histogram {
    inner: Mutex<(hdrhistogram::Histogram<u64>, u64)>,
}

/// The longest latency the histogram resolves; longer ones count as this.
const HIGHEST_US: u64 = 3_600_000_000;

impl Default for Histogram {
    fn default() -> Self {
        let h = hdrhistogram::Histogram::new_with_bounds(1, HIGHEST_US, 3).expect("valid histogram bounds");
        Histogram {
            inner: Mutex::new((h, 0)),
        }
    }
}

impl Histogram {
    fn lock(&self) -> std::sync::MutexGuard<'_, (hdrhistogram::Histogram<u64>, u64)> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn record(&self, d: Duration) {
        let us = d.as_micros().min(u128::from(u64::MAX)) as u64;
        let mut g = self.lock();
        g.0.saturating_record(us);
        g.1 = g.1.max(us);
    }

    pub fn count(&self) -> u64 {
        self.lock().0.len()
    }

    /// The `q` quantile (0..=1), in microseconds.
    pub fn quantile(&self, q: f64) -> u64 {
        let g = self.lock();
        if g.0.is_empty() {
            return 0;
        }
        g.0.value_at_quantile(q).min(g.1)
    }

    pub fn max(&self) -> u64 {
        self.lock().1
    }
}

/// Everything counted during a run. Records are positions; frames are what went on the
/// wire (one frame can carry many records).
#[derive(Debug, Default)]
pub struct Stats {
    pub devices: AtomicU64,
    pub connected: AtomicI64,
    pub peak_connected: AtomicI64,
    pub connects: AtomicU64,
    pub connect_failures: AtomicU64,
    pub disconnects: AtomicU64,
    pub frames_sent: AtomicU64,
    pub records_generated: AtomicU64,
    pub records_sent: AtomicU64,
    pub records_acked: AtomicU64,
    /// Sent again after a missing ack.
    pub records_resent: AtomicU64,
    /// Sent on a protocol that acknowledges nothing for them.
    pub records_unacked_by_protocol: AtomicU64,
    /// Dropped because the device buffer was full (oldest first, as firmware does).
    pub records_dropped: AtomicU64,
    /// The server answered with a refusal (a nack, an HTTP 4xx/5xx, a login closed).
    pub rejected: AtomicU64,
    pub ack_timeouts: AtomicU64,
    /// Bytes from the server that were neither an ack nor a command.
    pub garbage: AtomicU64,
    pub heartbeats: AtomicU64,
    pub malformed_sent: AtomicU64,
    pub commands_answered: AtomicU64,
    pub encode_errors: AtomicU64,
    /// Frames of ours the protocol's own server codec could not decode (a bug to report).
    pub self_decode_errors: AtomicU64,
    pub ack_latency: Histogram,
}

/// Add one.
pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}

/// Add n.
pub fn add(c: &AtomicU64, n: usize) {
    c.fetch_add(n as u64, Relaxed);
}

/// A run's final numbers.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub seed: u64,
    pub devices: u64,
    pub elapsed_s: f64,
    pub peak_connections: i64,
    pub connects: u64,
    pub connect_failures: u64,
    pub disconnects: u64,
    pub frames_sent: u64,
    pub records_generated: u64,
    pub records_sent: u64,
    pub records_acked: u64,
    pub records_resent: u64,
    pub records_unacked_by_protocol: u64,
    pub records_dropped: u64,
    pub rejected: u64,
    pub ack_timeouts: u64,
    pub garbage: u64,
    pub heartbeats: u64,
    pub malformed_sent: u64,
    pub commands_answered: u64,
    pub encode_errors: u64,
    pub self_decode_errors: u64,
    pub ack_latency_ms: Latency,
    /// Acked (or delivered, on protocols without acks) records per second.
    pub throughput_per_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Stats {
    pub fn summary(&self, seed: u64, elapsed: Duration) -> Summary {
        let g = |c: &AtomicU64| c.load(Relaxed);
        let ms = |us: u64| (us as f64 / 1000.0 * 100.0).round() / 100.0;
        let delivered = g(&self.records_acked) + g(&self.records_unacked_by_protocol);
        let secs = elapsed.as_secs_f64().max(1e-9);
        Summary {
            seed,
            devices: g(&self.devices),
            elapsed_s: (secs * 100.0).round() / 100.0,
            peak_connections: self.peak_connected.load(Relaxed),
            connects: g(&self.connects),
            connect_failures: g(&self.connect_failures),
            disconnects: g(&self.disconnects),
            frames_sent: g(&self.frames_sent),
            records_generated: g(&self.records_generated),
            records_sent: g(&self.records_sent),
            records_acked: g(&self.records_acked),
            records_resent: g(&self.records_resent),
            records_unacked_by_protocol: g(&self.records_unacked_by_protocol),
            records_dropped: g(&self.records_dropped),
            rejected: g(&self.rejected),
            ack_timeouts: g(&self.ack_timeouts),
            garbage: g(&self.garbage),
            heartbeats: g(&self.heartbeats),
            malformed_sent: g(&self.malformed_sent),
            commands_answered: g(&self.commands_answered),
            encode_errors: g(&self.encode_errors),
            self_decode_errors: g(&self.self_decode_errors),
            ack_latency_ms: Latency {
                p50: ms(self.ack_latency.quantile(0.5)),
                p99: ms(self.ack_latency.quantile(0.99)),
                max: ms(self.ack_latency.max()),
            },
            throughput_per_s: (delivered as f64 / secs * 10.0).round() / 10.0,
        }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "seed {}  devices {}  elapsed {:.1}s",
            self.seed, self.devices, self.elapsed_s
        )?;
        writeln!(
            f,
            "records: generated {}  sent {}  acked {}  resent {}  delivered-without-ack {}  dropped {}",
            self.records_generated,
            self.records_sent,
            self.records_acked,
            self.records_resent,
            self.records_unacked_by_protocol,
            self.records_dropped
        )?;
        writeln!(
            f,
            "frames sent {}  heartbeats {}  rejected {}  ack timeouts {}  garbage {}  malformed sent {}  commands answered {}",
            self.frames_sent,
            self.heartbeats,
            self.rejected,
            self.ack_timeouts,
            self.garbage,
            self.malformed_sent,
            self.commands_answered
        )?;
        writeln!(
            f,
            "connections: peak {} concurrent  {} connects  {} failures  {} disconnects",
            self.peak_connections, self.connects, self.connect_failures, self.disconnects
        )?;
        if self.encode_errors + self.self_decode_errors > 0 {
            writeln!(
                f,
                "encoder problems: {} encode errors  {} frames the server codec could not decode",
                self.encode_errors, self.self_decode_errors
            )?;
        }
        write!(
            f,
            "ack latency p50 {} ms  p99 {} ms  max {} ms  throughput {:.1} records/s",
            self.ack_latency_ms.p50, self.ack_latency_ms.p99, self.ack_latency_ms.max, self.throughput_per_s
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles() {
        let h = Histogram::default();
        for ms in 1..=100u64 {
            h.record(Duration::from_millis(ms));
        }
        let p50 = h.quantile(0.5) as f64 / 1000.0;
        let p99 = h.quantile(0.99) as f64 / 1000.0;
        assert!((p50 - 50.0).abs() < 4.0, "{p50}");
        assert!((p99 - 99.0).abs() < 7.0, "{p99}");
        assert_eq!(h.max(), 100_000);
        assert_eq!(h.count(), 100);
        // Past the resolved range: counted, and the exact maximum kept.
        h.record(Duration::from_secs(7200));
        assert_eq!(h.count(), 101);
        assert_eq!(h.max(), 7_200_000_000);
    }
}
