//! `clutch serve`: the composition root.
//!
//! config → PostgreSQL (managed under the data dir, or `DATABASE_URL`) → migrations →
//! store writer → in-process bus (durability = the writer's receipt) → device listeners
//! → HTTP (health, metrics). Shutdown runs the other way: stop accepting and reading,
//! let connections receive the acks owed for durable batches (to a deadline), stop
//! HTTP, flush the writer, stop the managed PostgreSQL.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use ingest::{DeviceBatch, Ingest, Registry, StoreSink, UnknownDevices};
use stream::{Bus, InProcessBus};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, database};

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
}

pub fn run(args: ServeArgs) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn")),
        )
        .init();
    let result = Config::load(args.config.as_deref(), args.data_dir.as_deref()).and_then(|mut config| {
        if args.demo {
            config.ingest.unknown_devices = UnknownDevices::Register;
            config.ingest.default_tenant = "demo".into();
        }
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(serve(config))
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

async fn serve(config: Config) -> anyhow::Result<()> {
    tracing::info!(?config, "starting");
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
    let bus: Arc<InProcessBus<DeviceBatch>> =
        Arc::new(InProcessBus::new(&config.bus, Arc::new(StoreSink::new(writer.clone()))));
    if config.ingest.unknown_devices == UnknownDevices::Register {
        ingest::registry::ensure_tenant(&pool, &config.ingest.default_tenant).await?;
    }
    let registry = Arc::new(Registry::new(
        pool.clone(),
        config.ingest.unknown_devices,
        config.ingest.default_tenant.clone(),
    ));
    // Operators subscribe before any device can connect, so they see every batch.
    let operators = if config.operators.enabled {
        let handle = operators::start(
            pool.clone(),
            bus.as_ref(),
            config.operators.clone(),
            Arc::new(operators::SystemClock),
            None,
        )
        .await
        .context("starting the stream operators")?;
        Some(handle)
    } else {
        None
    };
    let ingest = Ingest::new(config.ingest.clone(), registry, bus.clone());
    let listening = ingest.start_configured().await?;

    let tasks = TaskTracker::new();
    let stop = CancellationToken::new();
    if config.http.port != 0 {
        let addr = SocketAddr::new(config.http.bind, config.http.port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the HTTP port {addr}"))?;
        let app = ingest::http::router(ingest::http::HttpState {
            pool: pool.clone(),
            metrics: metrics.clone(),
        });
        let stop = stop.clone();
        tasks.spawn(async move {
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
            {
                tracing::error!(error = %e, "HTTP server failed");
            }
        });
        tracing::info!(%addr, "listening (http: /health, /metrics)");
    }
    tasks.spawn(sample_gauges(stop.clone(), bus.clone(), writer.clone()));

    let ports: Vec<String> = listening
        .iter()
        .map(|l| format!("{}/{}:{}", l.protocol, l.transport.as_str(), l.addr.port()))
        .collect();
    // One stable line that scripts and tests wait for.
    tracing::info!(listeners = %ports.join(" "), "clutch ready");

    shutdown_signal().await;
    tracing::info!("shutting down: no new connections, draining");
    if !ingest.shutdown().await {
        tracing::warn!("drain deadline passed; remaining connections are dropped unacknowledged");
    }
    stop.cancel();
    tasks.close();
    tasks.wait().await;
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
    Ok(())
}

/// Gauges that are states rather than events, sampled once a second.
async fn sample_gauges(stop: CancellationToken, bus: Arc<InProcessBus<DeviceBatch>>, writer: store::WriterHandle) {
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
