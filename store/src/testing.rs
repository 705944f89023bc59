//! Throwaway PostgreSQL for tests: real server, no mocks.
//!
//! [`TestCluster::shared`] starts one cluster per test binary on first use (initdb from
//! the system binaries into a temp dir, a free port on 127.0.0.1, its socket in the temp
//! dir), and [`test_db`] gives each test its own database cloned from a migrated
//! template, which is much faster than migrating every database.
//!
//! Nothing outlives the test binary: `cargo test` ends a test binary by returning from
//! `main` (no destructors for statics), and a panic or a kill may end it anyhow, so each
//! cluster has a watchdog process reading a pipe from the test process. When the test
//! process goes away, for whatever reason, the kernel closes the pipe and the watchdog
//! stops the server (`pg_ctl stop -m immediate`) and removes the temp dir.
//!
//! As root, the server runs as `postgres` (or `nobody`), as in [`crate::managed`].
//!
//! ```no_run
//! # async fn t() {
//! let db = store::testing::test_db().await;
//! let n: i64 = sqlx::query_scalar("SELECT count(*) FROM positions").fetch_one(&db.pool).await.unwrap();
//! # }
//! ```

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection};

use crate::managed::{
    InitDb, PgBinaries, RunAs, find_binaries, initdb, is_running, make_dir, pg_command, pg_ctl_start, pg_ctl_stop,
    quote, resolve_run_as, write_conf,
};
use crate::{MIGRATOR, Result, Store, StoreError};

const TEMPLATE: &str = "clutch_template";

/// How a test cluster is configured.
#[derive(Debug, Clone, Copy, Default)]
pub struct TestClusterOptions {
    /// Keep fsync and synchronous_commit on, as in production: for benchmarks and for
    /// tests about durability. Otherwise they are off, which is several times faster and
    /// still survives a server restart (only an OS crash would lose data).
    pub durable: bool,
}

/// One throwaway PostgreSQL server.
#[derive(Debug)]
pub struct TestCluster {
    bins: PgBinaries,
    run_as: Option<RunAs>,
    root: PathBuf,
    pgdata: PathBuf,
    socket_dir: PathBuf,
    port: u16,
    /// Held open for the life of the process; closing it tells the watchdog to clean up.
    watchdog: Mutex<Option<(Child, ChildStdin)>>,
    template: tokio::sync::OnceCell<()>,
    next_db: AtomicU64,
}

impl TestCluster {
    /// The cluster shared by every test in this binary.
    pub fn shared() -> &'static TestCluster {
        static SHARED: OnceLock<TestCluster> = OnceLock::new();
        SHARED.get_or_init(|| {
            TestCluster::start(TestClusterOptions::default())
                .unwrap_or_else(|e| panic!("cannot start the test PostgreSQL cluster: {e}"))
        })
    }

    /// A cluster of one's own (a test that restarts the server, a benchmark). Stopped and
    /// removed on drop, or by the watchdog if the process dies first.
    pub fn start(opts: TestClusterOptions) -> Result<TestCluster> {
        let bins = find_binaries()?;
        let run_as = resolve_run_as(None)?;
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let root = std::env::temp_dir().join(format!(
            "clutch-pg-{}-{}-{nanos:x}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        make_dir(&root, run_as.as_ref(), 0o700)?;
        let pgdata = root.join("data");
        let socket_dir = root.join("run");
        make_dir(&socket_dir, run_as.as_ref(), 0o700)?;

        // Armed before anything can be left behind.
        let watchdog = spawn_watchdog(&bins, &pgdata, &root, run_as.as_ref())?;

        initdb(InitDb {
            bins: &bins,
            pgdata: &pgdata,
            superuser: "postgres",
            password_file: None,
            run_as: run_as.as_ref(),
            no_sync: true,
        })?;

        // A free port can be taken by another test binary between our probe and the
        // server's bind; try a few.
        let mut last_err = None;
        for _ in 0..5 {
            let port = free_port()?;
            let mut settings = vec![
                ("listen_addresses", quote("127.0.0.1")),
                ("port", port.to_string()),
                ("unix_socket_directories", quote(&socket_dir.to_string_lossy())),
                ("max_connections", "200".into()),
                ("shared_buffers", quote("128MB")),
                ("max_wal_size", quote("2GB")),
                ("checkpoint_timeout", quote("15min")),
            ];
            if !opts.durable {
                settings.extend([
                    ("fsync", "off".into()),
                    ("synchronous_commit", "off".into()),
                    ("full_page_writes", "off".into()),
                ]);
            } else {
                settings.push(("wal_compression", "on".into()));
            }
            if bins.has_timescaledb() && !timescaledb_refused() {
                settings.push(("shared_preload_libraries", quote("timescaledb")));
                settings.push(("timescaledb.telemetry_level", quote("off")));
            }
            write_conf(&pgdata, &settings, run_as.as_ref())?;
            match pg_ctl_start(&bins, &pgdata, &root.join("postgres.log"), run_as.as_ref()) {
                Ok(()) => {
                    return Ok(TestCluster {
                        bins,
                        run_as,
                        root,
                        pgdata,
                        socket_dir,
                        port,
                        watchdog: Mutex::new(Some(watchdog)),
                        template: tokio::sync::OnceCell::new(),
                        next_db: AtomicU64::new(0),
                    });
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| StoreError::Managed("test cluster did not start".into())))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn binaries(&self) -> &PgBinaries {
        &self.bins
    }

    /// Unix-socket URL of `database` as the superuser `postgres`.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://postgres@localhost:{}/{database}?host={}",
            self.port,
            self.socket_dir.display()
        )
    }

    /// TCP URL (127.0.0.1) of `database`.
    pub fn tcp_url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Stops the server (`fast`: clean; `immediate`: like a crash). For restart tests.
    pub fn stop_server(&self, mode: &str) -> Result<()> {
        pg_ctl_stop(&self.bins, &self.pgdata, mode, self.run_as.as_ref())
    }

    /// Starts it again after [`TestCluster::stop_server`].
    pub fn start_server(&self) -> Result<()> {
        pg_ctl_start(
            &self.bins,
            &self.pgdata,
            &self.root.join("postgres.log"),
            self.run_as.as_ref(),
        )
    }

    pub fn is_running(&self) -> bool {
        is_running(&self.bins, &self.pgdata, self.run_as.as_ref())
    }

    /// A new database, migrated (cloned from a template migrated once per cluster).
    pub async fn fresh_db(&self) -> TestDb {
        self.try_fresh_db()
            .await
            .unwrap_or_else(|e| panic!("cannot create a test database: {e}"))
    }

    pub async fn try_fresh_db(&self) -> Result<TestDb> {
        self.template
            .get_or_try_init(|| async {
                // A single connection, closed before any clone: CREATE DATABASE … TEMPLATE
                // refuses while anyone is connected to the template.
                let mut admin = PgConnection::connect(&self.url("postgres")).await?;
                sqlx::query(AssertSqlSafe(format!("DROP DATABASE IF EXISTS {TEMPLATE}")))
                    .execute(&mut admin)
                    .await?;
                sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {TEMPLATE}")))
                    .execute(&mut admin)
                    .await?;
                admin.close().await?;
                let mut conn = PgConnection::connect(&self.url(TEMPLATE)).await?;
                MIGRATOR.run(&mut conn).await?;
                conn.close().await?;
                // With TimescaleDB, CREATE EXTENSION started a job scheduler connected to
                // the template, and CREATE DATABASE … TEMPLATE refuses while anyone is
                // connected. TimescaleDB stops it for each CREATE DATABASE, but its
                // launcher restarts it, racing the next clone. A template that allows no
                // connections gets no scheduler, so clones never meet one.
                let mut admin = PgConnection::connect(&self.url("postgres")).await?;
                sqlx::query(AssertSqlSafe(format!(
                    "ALTER DATABASE {TEMPLATE} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"
                )))
                .execute(&mut admin)
                .await?;
                sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
                    .bind(TEMPLATE)
                    .execute(&mut admin)
                    .await?;
                admin.close().await?;
                Ok::<(), StoreError>(())
            })
            .await?;
        let name = format!("test_{}", self.next_db.fetch_add(1, Ordering::Relaxed));
        let mut admin = PgConnection::connect(&self.url("postgres")).await?;
        // The scheduler terminated above may take a moment to go away.
        let mut attempt = 0;
        loop {
            match sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name} TEMPLATE {TEMPLATE}")))
                .execute(&mut admin)
                .await
            {
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("55006") && attempt < 50 => {
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                r => {
                    r?;
                    break;
                }
            }
        }
        admin.close().await?;
        let url = self.url(&name);
        let pool = PgPoolOptions::new().max_connections(8).connect(&url).await?;
        let store = Store::attach(pool.clone()).await?;
        Ok(TestDb { name, url, pool, store })
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        // Only owned clusters get here (statics are never dropped); the watchdog would do
        // the same when the process exits, this just does it now.
        if let Ok(mut w) = self.watchdog.lock()
            && let Some((mut child, stdin)) = w.take()
        {
            drop(stdin);
            let _ = child.wait();
        }
    }
}

/// A fresh, migrated database on the shared cluster.
pub async fn test_db() -> TestDb {
    TestCluster::shared().fresh_db().await
}

/// One test's database.
#[derive(Debug)]
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
    pub store: Store,
}

/// Whether TimescaleDB tests must run: `CLUTCH_TEST_TIMESCALEDB=1`. Tests check this,
/// then either run (and fail loudly if the extension is missing) or print that they
/// were skipped. Without the variable the clusters still preload TimescaleDB when it is
/// installed (so the whole suite runs in TimescaleDB mode there); see
/// [`timescaledb_refused`] for the opposite.
pub fn timescaledb_required() -> bool {
    std::env::var("CLUTCH_TEST_TIMESCALEDB").is_ok_and(|v| v == "1")
}

/// `CLUTCH_TEST_TIMESCALEDB=0`: the test clusters do not preload TimescaleDB even where
/// it is installed, so the whole suite runs in native (partitioned) mode, as in CI.
pub fn timescaledb_refused() -> bool {
    std::env::var("CLUTCH_TEST_TIMESCALEDB").is_ok_and(|v| v == "0")
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| StoreError::io("127.0.0.1:0", e))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| StoreError::io("127.0.0.1:0", e))
}

fn spawn_watchdog(
    bins: &PgBinaries,
    pgdata: &Path,
    root: &Path,
    run_as: Option<&RunAs>,
) -> Result<(Child, ChildStdin)> {
    // `cat` returns at EOF, i.e. when every copy of the pipe's write end is closed: ours
    // is the only one (std opens pipes close-on-exec, so no child inherits it).
    let script = r#"cat >/dev/null 2>&1; "$0" stop -D "$1" -m immediate -w >/dev/null 2>&1; rm -rf "$2""#;
    let mut c: Command = pg_command(Path::new("/bin/sh"), run_as, Path::new("/"));
    c.arg("-c")
        .arg(script)
        .arg(bins.bin("pg_ctl"))
        .arg(pgdata)
        .arg(root)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = c
        .spawn()
        .map_err(|e| StoreError::Managed(format!("cannot start the test cluster's watchdog: {e}")))?;
    let stdin = child
        .stdin
        .take()
        .ok_or_else(|| StoreError::Managed("watchdog has no stdin".into()))?;
    Ok((child, stdin))
}
