//! Webhooks for integrators: a tenant subscribes endpoints to event kinds and each
//! matching event is POSTed there, signed, retried and recorded.
//!
//! - **Queue**: `webhook_deliveries`, one row per (webhook, event id) — the unique key is
//!   the deduplication. Rows are added from the operators' live events (already durable
//!   when they are broadcast) and by a catch-up scan of the `events` table (a restart, a
//!   lagging broadcast, events written by other processes), both through the same
//!   `INSERT … SELECT … ON CONFLICT DO NOTHING`. Pending rows survive restarts.
//! - **Worker**: claims due rows with `FOR UPDATE SKIP LOCKED` and a lease (so several
//!   processes can run one, and a crash mid-delivery retries after the lease), delivers,
//!   records each attempt in `webhook_attempts`, and reschedules failures with exponential
//!   backoff and full jitter until `max_attempts`.
//! - **Signature**: `Clutch-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`
//!   with `Clutch-Timestamp` (Unix seconds) and `Clutch-Event-Id`.
//! - **SSRF**: the host is resolved and every address checked (loopback, private,
//!   link-local, CGNAT, multicast, unspecified, documentation, IPv4-mapped/NAT64/6to4
//!   forms of those) at subscription and again at every delivery, and the delivery
//!   connects to the very address that was checked — there is no second lookup to rebind.
//!   `api.webhooks.allow_hosts` names hosts or addresses exempt from the check. Redirects
//!   are not followed; answers are read up to a cap; every step has a timeout.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;
use tokio::sync::Notify;
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, ErrorBody};
use crate::resources::{ListQuery, Page, order, page};
use crate::{AppState, Ctx, sqlf};

/// `[api.webhooks]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// Run the delivery worker in this process.
    pub worker: bool,
    /// Hosts, as written in the URL (a name or an IP literal), exempt from the SSRF check
    /// and allowed over plain `http`. For tests and on-premise receivers; empty in production.
    pub allow_hosts: Vec<String>,
    /// Attempts per delivery before it is marked failed.
    pub max_attempts: i32,
    /// First retry delay; doubles per attempt, with full jitter, up to `max_backoff_ms`.
    pub base_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// Connect + send + read timeout of one attempt.
    pub timeout_ms: u64,
    /// How far back the catch-up scan of `events` looks (on start and periodically).
    pub catchup_s: u64,
    pub scan_interval_ms: u64,
    /// Webhooks per tenant.
    pub max_per_tenant: i64,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            worker: true,
            allow_hosts: Vec::new(),
            max_attempts: 8,
            base_backoff_ms: 2_000,
            max_backoff_ms: 3_600_000,
            timeout_ms: 10_000,
            catchup_s: 3_600,
            scan_interval_ms: 5_000,
            max_per_tenant: 50,
        }
    }
}

// ---------------------------------------------------------------- SSRF

/// Why an address may not be a webhook target, or None when it may.
pub fn blocked_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => blocked_v4(v4),
        IpAddr::V6(v6) => {
            // Embedded IPv4 forms reach the same hosts as the plain address.
            if let Some(v4) = v6.to_ipv4_mapped() {
                return blocked_v4(v4);
            }
            let s = v6.segments();
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
                // NAT64 well-known prefix 64:ff9b::/96.
                let v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
                return blocked_v4(v4).or(Some("NAT64"));
            }
            if s[0] == 0x2002 {
                // 6to4 2002::/16 carries an IPv4 address in the next 32 bits.
                let v4 = Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8);
                if let Some(r) = blocked_v4(v4) {
                    return Some(r);
                }
            }
            if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_multicast() {
                Some("multicast")
            } else if s[0] & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if s[0] & 0xfe00 == 0xfc00 {
                // Unique local, which also holds cloud metadata (fd00:ec2::254).
                Some("private")
            } else if s[0] == 0x2001 && s[1] == 0x0db8 {
                Some("documentation")
            } else if s[0..6] == [0, 0, 0, 0, 0, 0] {
                // IPv4-compatible (deprecated) ::a.b.c.d
                Some("reserved")
            } else {
                None
            }
        }
    }
}

fn blocked_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    if ip == Ipv4Addr::new(169, 254, 169, 254) {
        Some("cloud metadata")
    } else if o[0] == 0 {
        Some("unspecified")
    } else if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
        Some("shared address space (CGNAT)")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if ip.is_broadcast()
        || o[0] >= 240
        || ip.is_documentation()
        || (o[0] == 198 && (o[1] & 0xfe) == 18)
        || (o[0] == 192 && o[1] == 0 && o[2] == 0)
    {
        Some("reserved")
    } else {
        None
    }
}

/// A checked destination: where to connect, and what to say in Host/SNI.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: url::Url,
    pub addr: SocketAddr,
    pub host: String,
    pub https: bool,
}

/// Parses, resolves and checks a webhook URL. The error is for the client (422).
pub async fn resolve_target(raw: &str, cfg: &WebhookConfig) -> Result<Target, String> {
    if raw.len() > 2048 {
        return Err("at most 2048 bytes".into());
    }
    let url = url::Url::parse(raw).map_err(|e| format!("not a URL: {e}"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("credentials in the URL are not allowed (use the signature)".into());
    }
    let host = url.host().ok_or("no host")?;
    let host_str = match &host {
        url::Host::Domain(d) => d.trim_end_matches('.').to_ascii_lowercase(),
        url::Host::Ipv4(a) => a.to_string(),
        url::Host::Ipv6(a) => a.to_string(),
    };
    let host_allowed = cfg.allow_hosts.iter().any(|h| h.eq_ignore_ascii_case(&host_str));
    let https = match url.scheme() {
        "https" => true,
        "http" if host_allowed => false,
        "http" => return Err("must be https".into()),
        _ => return Err("must be https".into()),
    };
    let port = url.port_or_known_default().ok_or("no port")?;
    let addrs: Vec<SocketAddr> = match host {
        url::Host::Ipv4(a) => vec![SocketAddr::new(a.into(), port)],
        url::Host::Ipv6(a) => vec![SocketAddr::new(a.into(), port)],
        url::Host::Domain(_) => {
            match tokio::time::timeout(
                Duration::from_secs(5),
                tokio::net::lookup_host((host_str.as_str(), port)),
            )
            .await
            {
                Ok(Ok(it)) => it.collect(),
                Ok(Err(_)) => return Err(format!("{host_str} does not resolve")),
                Err(_) => return Err(format!("resolving {host_str} timed out")),
            }
        }
    };
    if addrs.is_empty() {
        return Err(format!("{host_str} does not resolve"));
    }
    // Every address must pass: a name with one public and one private address could be
    // answered either way at connect time.
    // The allow-list matches the host as written, never what a name resolves to: an
    // allowed 127.0.0.1 does not let some other name that points there through.
    for a in &addrs {
        if host_allowed {
            continue;
        }
        if let Some(why) = blocked_reason(a.ip()) {
            return Err(format!("{host_str} is, or resolves to, a {why} address ({})", a.ip()));
        }
    }
    Ok(Target {
        url,
        addr: addrs[0],
        host: host_str,
        https,
    })
}

// ---------------------------------------------------------------- signing

type HmacSha256 = Hmac<Sha256>;

/// `v1=<hex>` over `"<timestamp>.<body>"`.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The stable id of an event: its idempotency key (device, start time to the
/// microsecond, kind), hashed. The SQL in [`ENQUEUE`] computes the same string.
pub fn event_id(device_id: i64, time: DateTime<Utc>, kind: &str) -> String {
    let h = crate::auth::sha256(&format!("{device_id}|{}|{kind}", time.timestamp_micros()));
    format!("evt_{}", hex::encode(&h[..12]))
}

// ---------------------------------------------------------------- delivery

/// What one attempt gave.
#[derive(Debug)]
pub struct Outcome {
    pub status: Option<u16>,
    pub error: Option<String>,
    pub response: Option<String>,
}

fn tls_connector() -> tokio_rustls::TlsConnector {
    static CFG: std::sync::OnceLock<Arc<tokio_rustls::rustls::ClientConfig>> = std::sync::OnceLock::new();
    let cfg = CFG.get_or_init(|| {
        let mut roots = tokio_rustls::rustls::RootCertStore::empty();
        for c in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(c);
        }
        let cfg = tokio_rustls::rustls::ClientConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        Arc::new(cfg)
    });
    tokio_rustls::TlsConnector::from(cfg.clone())
}

/// POSTs `body` to the checked target. Never follows a redirect.
pub async fn post(target: &Target, headers: &[(&str, String)], body: Vec<u8>, timeout: Duration) -> Outcome {
    match tokio::time::timeout(timeout, post_inner(target, headers, body)).await {
        Ok(Ok((status, response))) => Outcome {
            status: Some(status),
            error: if (200..300).contains(&status) {
                None
            } else if (300..400).contains(&status) {
                Some("redirect not followed".into())
            } else {
                Some(format!("HTTP {status}"))
            },
            response: Some(response),
        },
        Ok(Err(e)) => Outcome {
            status: None,
            error: Some(e),
            response: None,
        },
        Err(_) => Outcome {
            status: None,
            error: Some("timed out".into()),
            response: None,
        },
    }
}

async fn post_inner(target: &Target, headers: &[(&str, String)], body: Vec<u8>) -> Result<(u16, String), String> {
    use hyper_util::rt::TokioIo;
    let tcp = tokio::net::TcpStream::connect(target.addr)
        .await
        .map_err(|e| format!("connect {}: {e}", target.addr))?;
    let _ = tcp.set_nodelay(true);
    let path = match target.url.query() {
        Some(q) => format!("{}?{q}", target.url.path()),
        None => target.url.path().to_string(),
    };
    let host_header = match target.url.port() {
        Some(p) => format!("{}:{p}", target.url.host_str().unwrap_or_default()),
        None => target.url.host_str().unwrap_or_default().to_string(),
    };
    let mut req = hyper::Request::post(path)
        .header("host", host_header)
        .header("content-type", "application/json")
        .header("user-agent", "Clutch-Webhooks/1");
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let req = req
        .body(http_body_util::Full::new(axum::body::Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    async fn exchange<I>(
        io: I,
        req: hyper::Request<http_body_util::Full<axum::body::Bytes>>,
    ) -> Result<(u16, String), String>
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
        let driver = tokio::spawn(conn);
        let resp = send.send_request(req).await.map_err(|e| format!("sending: {e}"))?;
        let status = resp.status().as_u16();
        // Read a little of the answer for the attempt log; never all of it.
        let limited = http_body_util::Limited::new(resp.into_body(), 64 * 1024);
        let text = match limited.collect().await {
            Ok(b) => {
                let b = b.to_bytes();
                String::from_utf8_lossy(&b[..b.len().min(1024)]).into_owned()
            }
            Err(_) => String::from("(answer too large or broken)"),
        };
        driver.abort();
        Ok((status, text))
    }
    if target.https {
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from(target.host.clone())
            .map_err(|e| format!("TLS name: {e}"))?;
        let tls = tls_connector()
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        exchange(TokioIo::new(tls), req).await
    } else {
        exchange(TokioIo::new(tcp), req).await
    }
}

/// Delay before attempt `n + 1` after `n` failures: exponential, full jitter, capped.
pub fn backoff(cfg: &WebhookConfig, failures: i32) -> Duration {
    let exp = cfg
        .base_backoff_ms
        .saturating_mul(1u64 << failures.clamp(0, 30).saturating_sub(1) as u32);
    let cap = exp.min(cfg.max_backoff_ms).max(1);
    // Full jitter, but never less than half, so retries keep spreading out.
    let ms = cap / 2 + rand::random_range(0..=cap / 2);
    Duration::from_millis(ms)
}

/// Enqueues deliveries for events matching `$1` (device, or null for any), `$2` (time,
/// or null), `$3` (kind, or null) and recorded since `$4`, for every enabled webhook of
/// the device's tenant subscribed to the kind and created before the event was recorded.
const ENQUEUE: &str = "\
    INSERT INTO webhook_deliveries (webhook_id, event_id, kind, payload) \
    SELECT w.id, ev.event_id, e.kind, jsonb_build_object( \
        'id', ev.event_id, 'type', e.kind, 'created_at', e.server_time, 'tenant_id', d.tenant_id, \
        'data', jsonb_build_object('device_id', e.device_id, 'vehicle_id', d.vehicle_id, 'kind', e.kind, \
            'time', e.time, 'end_time', e.end_time, 'lat', e.lat, 'lon', e.lon, 'geofence_id', e.geofence_id, \
            'magnitude', e.magnitude, 'severity', e.severity, 'attributes', e.attributes)) \
    FROM events e \
    JOIN devices d ON d.id = e.device_id \
    JOIN webhooks w ON w.tenant_id = d.tenant_id AND w.enabled \
        AND (cardinality(w.kinds) = 0 OR e.kind = ANY (w.kinds)) AND w.created_at <= e.server_time \
    CROSS JOIN LATERAL (SELECT 'evt_' || substr(encode(sha256(convert_to( \
        e.device_id::text || '|' || (extract(epoch FROM e.time) * 1000000)::bigint::text || '|' || e.kind, \
        'UTF8')), 'hex'), 1, 24) AS event_id) ev \
    WHERE ($1::int8 IS NULL OR e.device_id = $1) AND ($2::timestamptz IS NULL OR e.time = $2) \
      AND ($3::text IS NULL OR e.kind = $3) \
      AND ($4::timestamptz IS NULL OR (e.server_time >= $4 AND e.time >= $4 - interval '1 day')) \
    ON CONFLICT (webhook_id, event_id) DO NOTHING";

#[derive(sqlx::FromRow)]
struct Claimed {
    id: i64,
    event_id: String,
    payload: String,
    attempts: i32,
    url: String,
    secret: String,
    enabled: bool,
}

/// The delivery worker: wakes on new operator events, on its own timer for due retries
/// and for the catch-up scan. Runs until the runtime stops.
pub fn spawn_worker(state: AppState) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let wake = Arc::new(Notify::new());
    if let Some(tx) = &state.operator_events {
        let mut rx = tx.subscribe();
        let state = state.clone();
        let wake = wake.clone();
        rt.spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(e) => {
                        let (Some(dev), Some(time), Some(kind)) = (
                            e.get("device_id").and_then(Value::as_i64),
                            e.get("time")
                                .and_then(Value::as_str)
                                .and_then(|t| DateTime::parse_from_rfc3339(t).ok()),
                            e.get("kind").and_then(Value::as_str),
                        ) else {
                            continue;
                        };
                        let time = time.with_timezone(&Utc);
                        // The row in `events` has the time rounded to microseconds.
                        let time = DateTime::from_timestamp_micros(time.timestamp_micros()).unwrap_or(time);
                        match sqlx::query(ENQUEUE)
                            .bind(Some(dev))
                            .bind(Some(time))
                            .bind(Some(kind))
                            .bind(None::<DateTime<Utc>>)
                            .execute(&state.pool)
                            .await
                        {
                            Ok(r) if r.rows_affected() > 0 => wake.notify_one(),
                            Ok(_) => {}
                            Err(e) => tracing::warn!(error = %e, "webhook enqueue failed; the catch-up scan retries"),
                        }
                    }
                    // The scan picks up what a lag skipped.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => wake.notify_one(),
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }
    rt.spawn(worker(state, wake));
}

async fn worker(state: AppState, wake: Arc<Notify>) {
    let cfg = state.config.webhooks.clone();
    let mut last_scan: Option<Instant> = None;
    let mut scan_from = Utc::now() - chrono::Duration::seconds(cfg.catchup_s as i64);
    loop {
        if last_scan.is_none_or(|t| t.elapsed() >= Duration::from_millis(cfg.scan_interval_ms)) {
            let started = Utc::now();
            match scan(&state, scan_from).await {
                Ok(()) => {
                    // Overlap the next scan: rows commit after their server_time.
                    scan_from = started - chrono::Duration::seconds(60);
                }
                Err(e) => tracing::warn!(error = %e, "webhook catch-up scan failed"),
            }
            last_scan = Some(Instant::now());
        }
        let n = match deliver_due(&state, &cfg).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "webhook delivery round failed");
                0
            }
        };
        if n > 0 {
            continue;
        }
        let next_due: Option<DateTime<Utc>> =
            sqlx::query_scalar("SELECT min(next_attempt_at) FROM webhook_deliveries WHERE status = 'pending'")
                .fetch_one(&state.pool)
                .await
                .unwrap_or(None);
        let mut sleep = Duration::from_millis(cfg.scan_interval_ms.max(50));
        if let Some(t) = next_due {
            let until = (t - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            sleep = sleep.min(until.max(Duration::from_millis(10)));
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(sleep) => {}
        }
        if state.pool.is_closed() {
            return;
        }
    }
}

async fn scan(state: &AppState, since: DateTime<Utc>) -> Result<(), sqlx::Error> {
    let any: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM webhooks WHERE enabled)")
        .fetch_one(&state.pool)
        .await?;
    if any {
        sqlx::query(ENQUEUE)
            .bind(None::<i64>)
            .bind(None::<DateTime<Utc>>)
            .bind(None::<String>)
            .bind(Some(since))
            .execute(&state.pool)
            .await?;
    }
    Ok(())
}

/// One round: claim what is due, deliver concurrently, record. Returns how many.
pub async fn deliver_due(state: &AppState, cfg: &WebhookConfig) -> Result<usize, sqlx::Error> {
    let lease = (cfg.timeout_ms / 1000 + 30) as f64;
    let claimed: Vec<Claimed> = sqlx::query_as(
        "WITH c AS (UPDATE webhook_deliveries SET attempts = attempts + 1, \
             next_attempt_at = now() + make_interval(secs => $2) \
           WHERE id IN (SELECT id FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= now() \
                        ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
           RETURNING id, webhook_id, event_id, payload::text AS payload, attempts) \
         SELECT c.id, c.event_id, c.payload, c.attempts, w.url, w.secret, w.enabled \
         FROM c JOIN webhooks w ON w.id = c.webhook_id",
    )
    .bind(16i64)
    .bind(lease)
    .fetch_all(&state.pool)
    .await?;
    let n = claimed.len();
    let jobs = claimed.into_iter().map(|c| deliver_one(state, cfg, c));
    for r in futures_util::future::join_all(jobs).await {
        r?;
    }
    Ok(n)
}

async fn deliver_one(state: &AppState, cfg: &WebhookConfig, c: Claimed) -> Result<(), sqlx::Error> {
    let started = Instant::now();
    let outcome = if !c.enabled {
        Outcome {
            status: None,
            error: Some("webhook disabled".into()),
            response: None,
        }
    } else {
        match resolve_target(&c.url, cfg).await {
            Err(e) => Outcome {
                status: None,
                error: Some(format!("refused: {e}")),
                response: None,
            },
            Ok(target) => {
                let ts = Utc::now().timestamp();
                let body = c.payload.into_bytes();
                let headers = [
                    ("clutch-event-id", c.event_id.clone()),
                    ("clutch-timestamp", ts.to_string()),
                    ("clutch-signature", signature(&c.secret, ts, &body)),
                ];
                post(&target, &headers, body, Duration::from_millis(cfg.timeout_ms)).await
            }
        }
    };
    let ms = started.elapsed().as_millis().min(i32::MAX as u128) as i32;
    let ok = outcome.error.is_none();
    let give_up = !c.enabled || c.attempts >= cfg.max_attempts;
    let delay = backoff(cfg, c.attempts);
    let mut tx = state.pool.begin().await?;
    sqlx::query(
        "INSERT INTO webhook_attempts (delivery_id, attempt, duration_ms, status_code, error, response) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(c.id)
    .bind(c.attempts)
    .bind(ms)
    .bind(outcome.status.map(i32::from))
    .bind(&outcome.error)
    .bind(&outcome.response)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE webhook_deliveries SET last_status = $2, last_error = $3, \
           status = CASE WHEN $4 THEN 'delivered' WHEN $5 THEN 'failed' ELSE 'pending' END, \
           delivered_at = CASE WHEN $4 THEN now() END, \
           next_attempt_at = now() + make_interval(secs => $6) WHERE id = $1",
    )
    .bind(c.id)
    .bind(outcome.status.map(i32::from))
    .bind(&outcome.error)
    .bind(ok)
    .bind(give_up)
    .bind(delay.as_secs_f64())
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

// ---------------------------------------------------------------- routes

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Webhook {
    pub id: i64,
    pub url: String,
    /// Event kinds delivered; empty: every kind.
    pub kinds: Vec<String>,
    pub description: String,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const HOOK_COLS: &str = "id, url, kinds, description, enabled, created_at, updated_at";

/// The subscription with its signing secret, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedWebhook {
    #[serde(flatten)]
    pub webhook: Webhook,
    /// HMAC-SHA256 key for `Clutch-Signature`; not shown again.
    pub secret: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookBody {
    /// `https://…` (plain http only for allow-listed hosts).
    pub url: Option<String>,
    pub kinds: Option<Vec<String>>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
}

fn check_kinds(kinds: &[String]) -> ApiResult<()> {
    if kinds.len() > 100 {
        return Err(ApiError::validation("kinds", "at most 100 kinds"));
    }
    for k in kinds {
        if k.is_empty() || k.len() > 64 || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.') {
            return Err(ApiError::validation(
                "kinds",
                "event kinds are 1 to 64 letters, digits, '_' or '.'",
            ));
        }
    }
    Ok(())
}

async fn check_url(state: &AppState, url: &str) -> ApiResult<()> {
    resolve_target(url, &state.config.webhooks)
        .await
        .map(|_| ())
        .map_err(|e| ApiError::validation("url", e))
}

fn check_description(d: &str) -> ApiResult<()> {
    if d.len() > 500 {
        return Err(ApiError::validation("description", "at most 500 bytes"));
    }
    Ok(())
}

#[utoipa::path(get, path = "/api/v1/webhooks", tag = "webhooks", params(ListQuery),
    responses((status = 200, body = Page<Webhook>)))]
pub async fn list_webhooks(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Page<Webhook>>> {
    let (cursor, desc, limit) = q.keyset(&state)?;
    let (cmp, ord) = order(desc);
    let rows: Vec<Webhook> = sqlx::query_as(sqlf!(
        "SELECT {HOOK_COLS} FROM webhooks WHERE tenant_id = $1 AND ($2::int8 IS NULL OR id {cmp} $2) \
         AND ($3::text IS NULL OR url ILIKE '%' || $3 || '%' OR description ILIKE '%' || $3 || '%') \
         ORDER BY id {ord} LIMIT $4"
    ))
    .bind(ctx.tenant_id)
    .bind(cursor)
    .bind(&q.q)
    .bind(limit + 1)
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(page(rows, &q, &state, |w| w.id)?))
}

/// Subscribes an endpoint. The answer carries the signing secret, once.
#[utoipa::path(post, path = "/api/v1/webhooks", tag = "webhooks", request_body = WebhookBody,
    params(("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = CreatedWebhook), (status = 422, body = ErrorBody)))]
pub async fn create_webhook(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiJson(b): ApiJson<WebhookBody>,
) -> ApiResult<Response> {
    let url = b.url.ok_or_else(|| ApiError::validation("url", "required"))?;
    let kinds = b.kinds.unwrap_or_default();
    check_kinds(&kinds)?;
    let description = b.description.unwrap_or_default();
    check_description(&description)?;
    check_url(&state, &url).await?;
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM webhooks WHERE tenant_id = $1")
        .bind(ctx.tenant_id)
        .fetch_one(&state.pool)
        .await?;
    if count >= state.config.webhooks.max_per_tenant {
        return Err(ApiError::validation("url", "too many webhooks in this tenant"));
    }
    let secret = format!("whsec_{}", crate::auth::random_token());
    let webhook: Webhook = sqlx::query_as(sqlf!(
        "INSERT INTO webhooks (tenant_id, url, kinds, description, secret, enabled) VALUES ($1, $2, $3, $4, $5, $6) \
         RETURNING {HOOK_COLS}"
    ))
    .bind(ctx.tenant_id)
    .bind(&url)
    .bind(&kinds)
    .bind(&description)
    .bind(&secret)
    .bind(b.enabled.unwrap_or(true))
    .fetch_one(&state.pool)
    .await?;
    Ok((StatusCode::CREATED, Json(CreatedWebhook { webhook, secret })).into_response())
}

async fn get_hook(state: &AppState, ctx: &Ctx, id: i64) -> ApiResult<Webhook> {
    sqlx::query_as(sqlf!(
        "SELECT {HOOK_COLS} FROM webhooks WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(ctx.tenant_id)
    .bind(id)
    .fetch_optional(&state.pool)
    .await?
    .ok_or_else(ApiError::not_found)
}

#[utoipa::path(get, path = "/api/v1/webhooks/{id}", tag = "webhooks", params(("id" = i64, Path)),
    responses((status = 200, body = Webhook), (status = 404, body = ErrorBody)))]
pub async fn read_webhook(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Webhook>> {
    Ok(Json(get_hook(&state, &ctx, id).await?))
}

#[utoipa::path(patch, path = "/api/v1/webhooks/{id}", tag = "webhooks", params(("id" = i64, Path)),
    request_body = WebhookBody,
    responses((status = 200, body = Webhook), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn patch_webhook(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<i64>,
    ApiJson(b): ApiJson<WebhookBody>,
) -> ApiResult<Json<Webhook>> {
    get_hook(&state, &ctx, id).await?;
    if let Some(k) = &b.kinds {
        check_kinds(k)?;
    }
    if let Some(d) = &b.description {
        check_description(d)?;
    }
    if let Some(u) = &b.url {
        check_url(&state, u).await?;
    }
    Ok(Json(
        sqlx::query_as(sqlf!(
            "UPDATE webhooks SET url = coalesce($3, url), kinds = coalesce($4, kinds), \
             description = coalesce($5, description), enabled = coalesce($6, enabled), updated_at = now() \
             WHERE tenant_id = $1 AND id = $2 RETURNING {HOOK_COLS}"
        ))
        .bind(ctx.tenant_id)
        .bind(id)
        .bind(b.url)
        .bind(b.kinds)
        .bind(b.description)
        .bind(b.enabled)
        .fetch_one(&state.pool)
        .await?,
    ))
}

#[utoipa::path(delete, path = "/api/v1/webhooks/{id}", tag = "webhooks", params(("id" = i64, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_webhook(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<StatusCode> {
    let n = sqlx::query("DELETE FROM webhooks WHERE tenant_id = $1 AND id = $2")
        .bind(ctx.tenant_id)
        .bind(id)
        .execute(&state.pool)
        .await?
        .rows_affected();
    if n == 0 {
        Err(ApiError::not_found())
    } else {
        Ok(StatusCode::NO_CONTENT)
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Attempt {
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i32,
    pub status_code: Option<i32>,
    pub error: Option<String>,
    /// The first bytes of the receiver's answer.
    pub response: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Delivery {
    pub id: i64,
    pub event_id: String,
    pub kind: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    #[schema(value_type = Object)]
    pub payload: Value,
    pub attempt_log: Vec<Attempt>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryFilter {
    /// `pending`, `delivered` or `failed`.
    pub status: Option<String>,
}

/// (delivery id, attempt, started, ms, status, error, response).
type AttemptRow = (
    i64,
    i32,
    DateTime<Utc>,
    i32,
    Option<i32>,
    Option<String>,
    Option<String>,
);

type DeliveryRow = (
    i64,
    String,
    String,
    String,
    i32,
    DateTime<Utc>,
    Option<i32>,
    Option<String>,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    Value,
);

/// Deliveries of one webhook, newest first by default, each with its attempts.
#[utoipa::path(get, path = "/api/v1/webhooks/{id}/deliveries", tag = "webhooks",
    params(("id" = i64, Path), ListQuery, DeliveryFilter),
    responses((status = 200, body = Page<Delivery>), (status = 404, body = ErrorBody)))]
pub async fn list_deliveries(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<ListQuery>,
    ApiQuery(f): ApiQuery<DeliveryFilter>,
) -> ApiResult<Json<Page<Delivery>>> {
    get_hook(&state, &ctx, id).await?;
    if f.status
        .as_deref()
        .is_some_and(|s| !["pending", "delivered", "failed"].contains(&s))
    {
        return Err(ApiError::validation("status", "one of pending, delivered, failed"));
    }
    let (cursor, _, limit) = q.keyset(&state)?;
    let desc = q.sort.as_deref() != Some("id") && q.sort.as_deref() != Some("created_at");
    let (cmp, ord) = order(desc);
    let rows: Vec<DeliveryRow> = sqlx::query_as(sqlf!(
        "SELECT id, event_id, kind, status, attempts, next_attempt_at, last_status, last_error, created_at, \
         delivered_at, payload FROM webhook_deliveries WHERE webhook_id = $1 AND ($2::int8 IS NULL OR id {cmp} $2) \
         AND ($3::text IS NULL OR status = $3) ORDER BY id {ord} LIMIT $4"
    ))
    .bind(id)
    .bind(cursor)
    .bind(&f.status)
    .bind(limit + 1)
    .fetch_all(&state.pool)
    .await?;
    let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
    let attempts: Vec<AttemptRow> = sqlx::query_as(
        "SELECT delivery_id, attempt, started_at, duration_ms, status_code, error, response FROM webhook_attempts \
             WHERE delivery_id = ANY ($1) ORDER BY delivery_id, attempt",
    )
    .bind(&ids)
    .fetch_all(&state.pool)
    .await?;
    let mut by_delivery: std::collections::HashMap<i64, Vec<Attempt>> = std::collections::HashMap::new();
    for (d, attempt, started_at, duration_ms, status_code, error, response) in attempts {
        by_delivery.entry(d).or_default().push(Attempt {
            attempt,
            started_at,
            duration_ms,
            status_code,
            error,
            response,
        });
    }
    let items: Vec<Delivery> = rows
        .into_iter()
        .map(|r| Delivery {
            id: r.0,
            event_id: r.1,
            kind: r.2,
            next_attempt_at: (r.3 == "pending").then_some(r.5),
            status: r.3,
            attempts: r.4,
            last_status: r.6,
            last_error: r.7,
            created_at: r.8,
            delivered_at: r.9,
            payload: r.10,
            attempt_log: by_delivery.remove(&r.0).unwrap_or_default(),
        })
        .collect();
    Ok(Json(page(items, &q, &state, |d| d.id)?))
}
