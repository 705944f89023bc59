//! Metric names (one scheme: `clutch_<crate>_<thing>_<unit|total>`) and the Prometheus
//! recorder.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// `{protocol, outcome}`: outcome is `ok`, `decode_error`, `resync`, `fatal`, `oversize`.
pub const FRAMES: &str = "clutch_ingest_frames_total";
pub const DECODE_ERRORS: &str = "clutch_ingest_decode_errors_total";
/// `{protocol, transport}`: accepted connections.
pub const CONNECTIONS: &str = "clutch_ingest_connections_total";
pub const CONNECTIONS_ACTIVE: &str = "clutch_ingest_connections_active";
/// `{protocol, reason}`: `unknown_device`, `login_timeout`, `idle_timeout`, `limit`, `no_identity`.
pub const CONNECTIONS_CLOSED: &str = "clutch_ingest_connections_closed_total";
/// Distinct unregistered identifiers refused since start (the admin list's length).
pub const UNKNOWN_DEVICES: &str = "clutch_ingest_unknown_devices";
pub const POSITIONS: &str = "clutch_ingest_positions_total";
/// Seconds from a frame's arrival to its ack being written.
pub const ACK_LATENCY: &str = "clutch_ingest_ack_latency_seconds";
/// `{protocol, reason}`: frames whose ack was withheld because they did not become durable.
pub const ACKS_WITHHELD: &str = "clutch_ingest_acks_withheld_total";
/// Authenticated MQTT connections to the embedded broker.
pub const MQTT_CONNECTIONS: &str = "clutch_ingest_mqtt_connections_total";
pub const MQTT_CONNECTIONS_ACTIVE: &str = "clutch_ingest_mqtt_connections_active";
/// `{reason}`: CONNECTs refused (`unknown_device`, `wrong_secret`, `disabled`, `no_secret`,
/// `no_credentials`, `client_id`, `protocol`, `unavailable`).
pub const MQTT_AUTH_REFUSALS: &str = "clutch_ingest_mqtt_auth_refusals_total";
/// `{kind}`: a device publishing (`publish`, `will`), subscribing (`subscribe`) or sending
/// a raw frame (`payload`) under another device's identity; the connection is dropped.
pub const MQTT_SPOOF_REFUSALS: &str = "clutch_ingest_mqtt_spoof_refusals_total";
/// `{kind, outcome}`: kind `telemetry`, `raw`, `responses`, `other`; outcome `ok`,
/// `decode_error`, `bad_topic`, `unknown_device`, `identity_mismatch`, `bus`, `not_durable`…
pub const MQTT_MESSAGES: &str = "clutch_ingest_mqtt_messages_total";
pub const BUS_DEPTH: &str = "clutch_bus_depth";
pub const WRITER_BATCH_ROWS: &str = "clutch_store_writer_batch_rows";
pub const WRITER_LATENCY: &str = "clutch_store_writer_latency_seconds";
pub const WRITER_GROUPS: &str = "clutch_store_writer_groups_total";
pub const WRITER_ROWS: &str = "clutch_store_writer_rows_total";
pub const WRITER_RETRIES: &str = "clutch_store_writer_retries_total";

/// Installs the process-wide recorder once and returns its handle (later calls return
/// the same handle, so tests can call it freely).
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let latency = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
            let sizes = [1.0, 2.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_rows".into()), &sizes));
            match builder.and_then(|b| b.install_recorder()) {
                Ok(h) => h,
                // Another recorder is installed (a test harness): render from a private one.
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed");
                    PrometheusBuilder::new().build_recorder().handle()
                }
            }
        })
        .clone()
}
