//! The fleet API (issue 8): REST under `/api/v1`, a live stream, OpenAPI, readiness.
//!
//! This crate owns authentication (argon2id passwords, HS256 access tokens, rotating
//! refresh tokens, API keys, TOTP, lockout), authorisation (the deny-by-default role ×
//! route table in [`perm`]), tenancy (the [`Ctx`] extractor: every query takes it, so
//! another tenant's object is a 404 by construction), the HTTP conventions (one error
//! shape, cursor pagination, ETags, idempotency keys, request ids, CORS, rate limits,
//! gzip) and the resources themselves, including the `services` domains (partners,
//! bookings, payments; issue 9), the audit trail of every mutating request ([`audit`])
//! and the admin and privacy routes ([`admin`]). `clutch serve` mounts [`router`] next
//! to its `/health` and `/metrics`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sqlx::PgPool;

pub mod admin;
pub mod audit;
pub mod auth;
pub mod ctx;
pub mod docs;
pub mod error;
pub mod http;
pub mod latest;
pub mod live;
pub mod perm;
pub mod reports;
pub mod resources;
pub mod scope;
pub mod users;
pub mod webhooks;

pub use ctx::Ctx;
pub use error::{ApiError, ApiResult};

/// The bus the live stream taps.
pub type DeviceBus = Arc<dyn stream::Bus<ingest::DeviceBatch>>;

/// `[api]` in the server configuration.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// HS256 signing secret. Unset: read from `jwt_secret_file`, generated there on first
    /// start. Redacted in `Debug`.
    pub jwt_secret: Option<String>,
    /// Where the generated secret lives; `serve` defaults it to `<data dir>/api-jwt.key`.
    pub jwt_secret_file: Option<PathBuf>,
    pub access_ttl_s: u64,
    pub refresh_ttl_s: u64,
    /// Origins allowed by CORS (`*` for any); empty: no CORS headers (same origin only).
    pub cors_origins: Vec<String>,
    /// Requests per second per credential (or per client address without one).
    pub rate_per_second: u32,
    pub rate_burst: u32,
    pub max_body_bytes: usize,
    pub max_page_size: i64,
    /// Consecutive failed logins before the account is locked out (with backoff).
    pub lockout_threshold: u32,
    /// Live-stream messages queued per client before it is dropped as too slow.
    pub stream_queue: usize,
    /// Secrets the payment gateway signs its webhooks with (several during a rotation).
    /// Empty: the webhook endpoint refuses everything. Redacted in `Debug`.
    pub gateway_webhook_secrets: Vec<String>,
    /// `[api.webhooks]`: delivery worker, retries, SSRF allow-list.
    pub webhooks: webhooks::WebhookConfig,
    /// How long the serialised whole-fleet latest positions may be reused after the bus
    /// reported a new fix (0: rebuilt as soon as a fix arrived; see `latest.rs`).
    pub latest_cache_ms: u64,
    /// `clutch serve` computes the daily report of each settled day of this many past
    /// days ahead of requests, hourly (0: only on request; see `reports.rs`).
    pub reports_precompute_days: i64,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            jwt_secret: None,
            jwt_secret_file: None,
            access_ttl_s: 900,
            refresh_ttl_s: 30 * 86_400,
            cors_origins: Vec::new(),
            rate_per_second: 100,
            rate_burst: 200,
            max_body_bytes: 1 << 20,
            max_page_size: 500,
            lockout_threshold: 5,
            stream_queue: 256,
            gateway_webhook_secrets: Vec::new(),
            webhooks: webhooks::WebhookConfig::default(),
            latest_cache_ms: 0,
            reports_precompute_days: 400,
        }
    }
}

impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConfig")
            .field("jwt_secret", &self.jwt_secret.as_ref().map(|_| "<redacted>"))
            .field("jwt_secret_file", &self.jwt_secret_file)
            .field("access_ttl_s", &self.access_ttl_s)
            .field("refresh_ttl_s", &self.refresh_ttl_s)
            .field("cors_origins", &self.cors_origins)
            .field("rate_per_second", &self.rate_per_second)
            .field("rate_burst", &self.rate_burst)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_page_size", &self.max_page_size)
            .field("lockout_threshold", &self.lockout_threshold)
            .field("stream_queue", &self.stream_queue)
            .field(
                "gateway_webhook_secrets",
                &format_args!("<{} redacted>", self.gateway_webhook_secrets.len()),
            )
            .field("webhooks", &self.webhooks)
            .field("latest_cache_ms", &self.latest_cache_ms)
            .field("reports_precompute_days", &self.reports_precompute_days)
            .finish()
    }
}

impl ApiConfig {
    /// The signing secret: configured, or read from (created in) the secret file.
    pub fn load_secret(&self) -> anyhow::Result<Vec<u8>> {
        if let Some(s) = &self.jwt_secret {
            anyhow::ensure!(s.len() >= 32, "api.jwt_secret must be at least 32 bytes");
            return Ok(s.as_bytes().to_vec());
        }
        let path = self
            .jwt_secret_file
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("neither api.jwt_secret nor api.jwt_secret_file is set"))?;
        secret_file(path)
    }
}

fn secret_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    use std::io::Write;
    match std::fs::read_to_string(path) {
        Ok(s) if s.trim().len() >= 32 => return Ok(s.trim().as_bytes().to_vec()),
        Ok(_) => anyhow::bail!("{} holds less than 32 bytes of secret", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(anyhow::anyhow!("reading {}: {e}", path.display())),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let secret = auth::random_token() + &auth::random_token();
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    match opts.open(path) {
        Ok(mut f) => {
            f.write_all(secret.as_bytes())?;
            f.sync_all()?;
            Ok(secret.into_bytes())
        }
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => secret_file(path),
        Err(e) => Err(anyhow::anyhow!("creating {}: {e}", path.display())),
    }
}

/// Something `/ready` asks: a name and whether it is ready.
pub type ReadyCheck = Arc<dyn Fn() -> futures_util::future::BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub pool: PgPool,
    pub keys: auth::JwtKeys,
    pub config: ApiConfig,
    pub bus: Option<DeviceBus>,
    pub ready_checks: Vec<(String, ReadyCheck)>,
    /// Events the stream operators detect (trips, geofences, harsh driving, fuel…), as
    /// JSON objects with at least `device_id` and `kind`, for the live stream.
    pub operator_events: Option<tokio::sync::broadcast::Sender<serde_json::Value>>,
    /// The payment gateway behind `/api/v1/payments` (the deterministic sandbox unless
    /// [`AppState::with_gateway`] sets another).
    pub gateway: Arc<dyn services::gateway::Gateway>,
    /// The running pipeline's counters, for `GET /api/v1/admin/health`.
    pub system: Option<admin::SystemProbe>,
    /// The serialised whole-fleet latest positions per tenant (see [`latest`]).
    pub latest_cache: latest::LatestCache,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("config", &self.0.config)
            .finish_non_exhaustive()
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    pub fn new(pool: PgPool, config: ApiConfig, secret: &[u8], bus: Option<DeviceBus>) -> AppState {
        AppState(Arc::new(Shared {
            pool,
            keys: auth::JwtKeys::new(secret),
            config,
            bus,
            ready_checks: Vec::new(),
            operator_events: None,
            gateway: Arc::new(services::gateway::SandboxGateway::new()),
            system: None,
            latest_cache: latest::LatestCache::default(),
        }))
    }

    /// Uses `gateway` for payments. Call before [`router`].
    pub fn with_gateway(mut self, gateway: Arc<dyn services::gateway::Gateway>) -> AppState {
        Arc::get_mut(&mut self.0)
            .expect("with_gateway before the state is shared")
            .gateway = gateway;
        self
    }

    /// Adds the operators' events to the live stream. Call before [`router`].
    pub fn with_operator_events(mut self, tx: tokio::sync::broadcast::Sender<serde_json::Value>) -> AppState {
        Arc::get_mut(&mut self.0)
            .expect("with_operator_events before the state is shared")
            .operator_events = Some(tx);
        self
    }

    /// Hands the pipeline's counters (metrics recorder, store writer) to the admin health
    /// endpoint. Call before [`router`].
    pub fn with_system(mut self, probe: admin::SystemProbe) -> AppState {
        probe.start_sampling();
        Arc::get_mut(&mut self.0)
            .expect("with_system before the state is shared")
            .system = Some(probe);
        self
    }

    /// Adds a `/ready` check (the broker, for instance). Call before [`router`].
    pub fn with_ready_check(mut self, name: &str, check: ReadyCheck) -> AppState {
        Arc::get_mut(&mut self.0)
            .expect("with_ready_check before the state is shared")
            .ready_checks
            .push((name.to_string(), check));
        self
    }
}

pub use http::router;
