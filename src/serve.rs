//! `clutch serve`: the composition root.
//!
//! config → PostgreSQL (managed under the data dir, or `DATABASE_URL`) → migrations →
//! store writer → bus → the roles this process runs (`--roles`, default all): device
//! listeners (ingest), the bus → store writer (writer, distributed bus only) → HTTP
//! (health, metrics). The bus is in-process (durability = the writer's receipt; every
//! role in this process) or NATS JetStream (durability = the JetStream publish ack;
//! roles spread over processes, see `roles`). Shutdown runs the other way: stop
//! accepting and reading, let connections receive the acks owed for durable batches (to
//! a deadline), stop HTTP, finish the writer role's batches and commits, flush the
//! writer, stop the managed PostgreSQL.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use ingest::{DeviceBatch, Ingest, Registry, StoreSink, UnknownDevices};
use stream::{Backend, Bus, InProcessBus, NatsBus};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, database};
use crate::roles::{Role, Roles};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where the managed PostgreSQL keeps its files (ignored with DATABASE_URL).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A TOML file layered over the defaults (and under `CLUTCH__…` variables).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Auto-register every device into a "demo" tenant, for the quickstart.
    #[arg(long)]
    demo: bool,
    /// The roles this process runs, comma-separated: ingest, operators, writer, api (or
    /// all). Anything but all needs a distributed bus (`bus.backend = "nats"`).
    #[arg(long, default_value = "all")]
    roles: Roles,
    /// Read MQTT devices from this external broker (`mqtt://[user:pass@]host:port`) with
    /// a shared subscription instead of running the embedded broker.
    #[arg(long, value_name = "URL")]
    mqtt_external: Option<String>,
}

pub fn run(args: ServeArgs) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,rumqttd=warn")),
        )
        .init();
    let result = Config::load(args.config.as_deref(), args.data_dir.as_deref()).and_then(|mut config| {
        if args.demo {
            config.ingest.unknown_devices = UnknownDevices::Register;
            config.ingest.default_tenant = "demo".into();
        }
        if let Some(url) = args.mqtt_external {
            config.ingest.mqtt.external = Some(url);
        }
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(serve(config, args.roles, args.demo))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config, roles: Roles, demo: bool) -> anyhow::Result<()> {
    tracing::info!(?config, %roles, "starting");
    anyhow::ensure!(
        config.bus.backend != Backend::InProcess || roles.is_all(),
        "--roles {roles}: the in-process bus runs every role in one process; \
         set bus.backend = \"nats\" (and bus.nats_url) to split roles over processes"
    );
    // Before anything starts, so a misconfiguration fails in a second.
    anyhow::ensure!(
        cfg!(feature = "fluvio") || config.bus.backend != Backend::Fluvio,
        "bus.backend = \"fluvio\": this clutch was built without Fluvio (cargo build --features fluvio)"
    );
    let metrics = ingest::metrics::install();

    let (url, mut cluster) = database(&config).await?;
    let pool = store::connect(&url, config.store.max_connections)
        .await
        .context("connecting to PostgreSQL")?;
    let st = store::Store::open(pool.clone()).await.context("migrating")?;
    tracing::info!(mode = ?st.mode(), "database ready");
    let (maint_stop, maint_rx) = tokio::sync::watch::channel(false);
    let maintenance = store::maintenance::spawn(st.clone(), config.store.maintenance.clone(), maint_rx);

    let writer = store::Writer::spawn(pool.clone(), config.store.writer.clone());
    let bus: Arc<dyn Bus<DeviceBatch>> = match config.bus.backend {
        Backend::InProcess => Arc::new(InProcessBus::new(&config.bus, Arc::new(StoreSink::new(writer.clone())))),
        Backend::Nats => Arc::new(
            NatsBus::<DeviceBatch>::connect(&config.bus, "batches")
                .await
                .context("starting the NATS bus")?,
        ),
        Backend::Fluvio => fluvio_bus(&config).await?,
    };
    // Operators subscribe before any device can connect, so they see every batch; they
    // catch up from the store for whatever the bus does not replay.
    let operators = if config.operators.enabled && roles.has(Role::Operators) {
        let handle = operators::start(
            pool.clone(),
            bus.as_ref(),
            config.operators.clone(),
            Arc::new(operators::SystemClock),
            Some(operators::analytics_factory()),
        )
        .await
        .context("starting the stream operators")?;
        Some(handle)
    } else {
        None
    };

    let tasks = TaskTracker::new();
    let stop = CancellationToken::new();
    // The writer role stops after ingest has drained, before the store writer.
    let writer_stop = CancellationToken::new();
    let writer_role = (config.bus.backend != Backend::InProcess && roles.has(Role::Writer)).then(|| {
        let bus = bus.clone();
        let sink = StoreSink::new(writer.clone());
        let stop = writer_stop.clone();
        tokio::spawn(async move {
            let result = crate::roles::run_writer(bus, sink, stop).await;
            if let Err(e) = &result {
                tracing::error!("writer role failed: {e:#}");
            }
            result
        })
    });

    let mut ingest = None;
    let mut listening = Vec::new();
    let mut mqtt = None;
    if demo {
        demo_user(&pool, &config.ingest.default_tenant).await?;
    }
    if roles.has(Role::Ingest) {
        if config.ingest.unknown_devices == UnknownDevices::Register {
            ingest::registry::ensure_tenant(&pool, &config.ingest.default_tenant).await?;
        }
        let registry = Arc::new(Registry::new(
            pool.clone(),
            config.ingest.unknown_devices,
            config.ingest.default_tenant.clone(),
        ));
        let i = Ingest::new(config.ingest.clone(), registry, bus.clone());
        listening = i.start_configured().await?;
        mqtt = i.start_mqtt().await?;
        ingest = Some(i);
    }
    if config.http.port != 0 {
        let addr = SocketAddr::new(config.http.bind, config.http.port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the HTTP port {addr}"))?;
        let mut api_config = config.api.clone();
        if api_config.jwt_secret.is_none() && api_config.jwt_secret_file.is_none() {
            api_config.jwt_secret_file = Some(config.store.managed.data_dir.join("api-jwt.key"));
        }
        let secret = api_config.load_secret().context("API token secret")?;
        let mut api_state = api::AppState::new(pool.clone(), api_config, &secret, Some(bus.clone() as api::DeviceBus));
        // `/ready`: the bus connection and the MQTT broker, beside the store.
        let probe_bus = bus.clone();
        api_state = api_state.with_ready_check(
            "bus_connection",
            Arc::new(move || {
                let r = probe_bus.check();
                Box::pin(async move { r })
            }),
        );
        if let Some(m) = mqtt.clone() {
            api_state = api_state.with_ready_check(
                "mqtt",
                Arc::new(move || {
                    let m = m.clone();
                    Box::pin(async move { m.check().await })
                }),
            );
        }
        if config.api.reports_precompute_days > 0 {
            // Settled report days, computed ahead so a year's report never computes on
            // request; the first run backfills, later ones add about a day per tenant.
            let (pool, stop, days) = (pool.clone(), stop.clone(), config.api.reports_precompute_days);
            tasks.spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(3600));
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = every.tick() => {}
                    }
                    // A shutdown mid-backfill drops the open transaction (rolled back).
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        r = api::reports::precompute_settled(&pool, days) => match r {
                            Ok(0) => {}
                            Ok(n) => tracing::info!(days = n, "daily report days computed ahead"),
                            Err(e) => tracing::warn!("daily report precompute: {e:?}"),
                        },
                    }
                }
            });
        }
        // The admin health endpoint reads the recorder and this process's writer.
        api_state = api_state.with_system(api::admin::SystemProbe::new(
            Some(metrics.clone()),
            Some(writer.clone()),
        ));
        if let Some(ops) = &operators {
            // Operator events to the live stream, as JSON; a lagging forwarder skips ahead
            // (the events are in the store either way).
            let (tx, _) = tokio::sync::broadcast::channel::<serde_json::Value>(4096);
            let mut rx = ops.subscribe();
            let out = tx.clone();
            let stop = stop.clone();
            tasks.spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        e = rx.recv() => match e {
                            Ok(e) => { let _ = out.send(serde_json::to_value(&e).unwrap_or_default()); }
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                        }
                    }
                }
            });
            api_state = api_state.with_operator_events(tx);
        }
        let app = ingest::http::router(ingest::http::HttpState {
            pool: pool.clone(),
            metrics: metrics.clone(),
        })
        .merge(api::router(api_state))
        // The fleet dashboard at `/`, assets embedded in the binary.
        .merge(dashboard::router());
        let stop = stop.clone();
        tasks.spawn(async move {
            // Connect info: rate limits key unauthenticated callers by address.
            let app = app.into_make_service_with_connect_info::<SocketAddr>();
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
            {
                tracing::error!(error = %e, "HTTP server failed");
            }
        });
        tracing::info!(%addr, "listening (http: / dashboard, /health, /metrics, /ready, /api/v1, /docs)");
    }
    tasks.spawn(sample_gauges(stop.clone(), bus.clone(), writer.clone()));
    if roles.has(Role::Operators) {
        // Maintenance events (DTC raised, service due) → service recommendations with
        // matched shops. Reads the events table, so it is idempotent and misses nothing.
        let (pool, stop) = (pool.clone(), stop.clone());
        tasks.spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = every.tick() => {
                        let since = chrono::Utc::now() - chrono::Duration::days(7);
                        match services::recommendations::sweep(&pool, since).await {
                            Ok(0) => {}
                            Ok(n) => tracing::info!(n, "service recommendations created"),
                            Err(e) => tracing::warn!("recommendation sweep: {e}"),
                        }
                    }
                }
            }
        });
    }

    let mut ports: Vec<String> = listening
        .iter()
        .map(|l| format!("{}/{}:{}", l.protocol, l.transport.as_str(), l.addr.port()))
        .collect();
    match mqtt.as_ref().map(|m| (m.addr, &m.external)) {
        Some((Some(addr), _)) => ports.push(format!("mqtt/tcp:{}", addr.port())),
        Some((None, Some(ext))) => ports.push(format!("mqtt/external:{ext}")),
        _ => {}
    }
    // One stable line that scripts and tests wait for.
    tracing::info!(listeners = %ports.join(" "), %roles, "clutch ready");

    // A writer role that fails (bus gone for good) takes the process down, so that a
    // supervisor restarts it rather than it running without writing.
    let mut writer_role = writer_role;
    let mut failure = None;
    tokio::select! {
        _ = shutdown_signal() => {}
        r = async {
            match writer_role.as_mut() {
                Some(h) => h.await,
                None => std::future::pending().await,
            }
        } => {
            writer_role = None;
            failure = Some(match r {
                Ok(Ok(())) => anyhow::anyhow!("writer role stopped"),
                Ok(Err(e)) => e,
                Err(e) => anyhow::anyhow!("writer role panicked: {e}"),
            });
        }
    }
    tracing::info!("shutting down: no new connections, draining");
    if let Some(ingest) = &ingest
        && !ingest.shutdown().await
    {
        tracing::warn!("drain deadline passed; remaining connections are dropped unacknowledged");
    }
    writer_stop.cancel();
    if let Some(h) = writer_role
        && let Ok(Err(e)) = h.await
    {
        tracing::warn!("writer role: {e:#}");
    }
    stop.cancel();
    tasks.close();
    tasks.wait().await;
    drop(ingest);
    // Write what they have and checkpoint, while the store is still up.
    if let Some(ops) = operators {
        ops.stop().await;
    }
    drop(bus);
    writer.shutdown().await;
    maint_stop.send_replace(true);
    let _ = maintenance.await;
    pool.close().await;
    if let Some(mut c) = cluster.take() {
        tokio::task::spawn_blocking(move || c.stop()).await??;
    }
    tracing::info!("stopped");
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(feature = "fluvio")]
async fn fluvio_bus(config: &Config) -> anyhow::Result<Arc<dyn Bus<DeviceBatch>>> {
    Ok(Arc::new(
        stream::fluvio::FluvioBus::<DeviceBatch>::connect(&config.bus, "batches")
            .await
            .context("starting the Fluvio bus")?,
    ))
}

#[cfg(not(feature = "fluvio"))]
async fn fluvio_bus(_: &Config) -> anyhow::Result<Arc<dyn Bus<DeviceBatch>>> {
    anyhow::bail!("bus.backend = \"fluvio\": this clutch was built without Fluvio (cargo build --features fluvio)")
}

/// Gauges that are states rather than events, sampled once a second.
async fn sample_gauges(stop: CancellationToken, bus: Arc<dyn Bus<DeviceBatch>>, writer: store::WriterHandle) {
    use ingest::metrics as m;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        metrics::gauge!(m::BUS_DEPTH).set(bus.depth() as f64);
        let s = writer.stats();
        metrics::counter!(m::WRITER_GROUPS).absolute(s.groups_committed);
        metrics::counter!(m::WRITER_ROWS).absolute(s.rows_committed);
        metrics::counter!(m::WRITER_RETRIES).absolute(s.retries);
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// `--demo`: the first time, a demo tenant admin so the dashboard can be opened at once.
/// The password is generated and printed once (only its hash is stored); later starts
/// keep the existing user.
async fn demo_user(pool: &store::sqlx::PgPool, tenant: &str) -> anyhow::Result<()> {
    let tenant_id = ingest::registry::ensure_tenant(pool, tenant).await?;
    let users: i64 = store::sqlx::query_scalar("SELECT count(*) FROM users WHERE tenant_id = $1")
        .bind(tenant_id)
        .fetch_one(pool)
        .await?;
    if users > 0 {
        return Ok(());
    }
    let email = "demo@example.com";
    let (_, password) = api::users::create_user_in(pool, tenant_id, email, "Demo admin", api::auth::Role::Admin, None)
        .await
        .map_err(|e| anyhow::anyhow!("creating the demo user: {e:?}"))?;
    if let Some(p) = password {
        // stdout, not only the log: the one thing a newcomer needs from this run.
        println!("demo dashboard login: {email} / {p}  (shown once; http://localhost:8080/)");
        tracing::info!(email, "demo user created; its password was printed on stdout");
    }
    Ok(())
}
