//! The managed local PostgreSQL: what `clutch` runs when no `DATABASE_URL` is given.
//!
//! Layout under clutch's data directory:
//!
//! ```text
//! <data-dir>/
//!   postgres.lock      flock held by the clutch process that owns the cluster
//!   postgres.json      port, user, database, password (0600, clutch's own user)
//!   postgres/          owned by the PostgreSQL OS user, 0700
//!     data/            PGDATA (initdb'd once, reused on every start)
//!     run/             unix socket directory (0700)
//!     log/postgres.log server log
//! ```
//!
//! * **Binaries** come from the system: `initdb`, `pg_ctl` and `postgres` on PATH, else
//!   the newest `/usr/lib/postgresql/*/bin` (Debian/Ubuntu layout).
//! * **Root.** PostgreSQL refuses to run as root, so when clutch is root the server runs
//!   as `postgres` (if that user exists; else `nobody`, or `store.managed.run_as`).
//!   `std`'s `Command::uid/gid` drop privileges in the child (and clear supplementary
//!   groups), so no `su`/`runuser` and no unsafe code are needed; the cluster's
//!   directories are chowned to that user.
//! * **Authentication.** `trust` on the unix socket, whose directory is 0700 and owned by
//!   the server's OS user, so only that user (and root) can reach it. `scram-sha-256` on
//!   TCP, which listens on 127.0.0.1 only, with a random password kept in
//!   `postgres.json`: other local users cannot connect without reading clutch's file.
//! * **One owner.** The process holding `postgres.lock` starts, adopts (after a crash)
//!   and stops the cluster. Another clutch process on the same data dir (say `clutch db
//!   info` while the server runs) attaches as a guest and never stops it.
//! * **Tuning** for ingest lives in `data/clutch.conf`, rewritten at every start and
//!   included from `postgresql.conf`: `synchronous_commit` stays on (durability is the
//!   product; the writer's group commit amortises the fsync), WAL compression, spaced
//!   checkpoints with a large `max_wal_size`, modest `shared_buffers`.
//! * The postmaster runs in its own process group, so a Ctrl-C aimed at clutch does not
//!   stop the database under a writer that is still draining.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::Connection;
use sqlx::postgres::PgConnection;

use crate::config::ManagedConfig;
use crate::{Result, StoreError};

/// Where the server binaries are and which major version they are.
#[derive(Debug, Clone)]
pub struct PgBinaries {
    pub dir: PathBuf,
    pub major: u32,
}

impl PgBinaries {
    pub fn bin(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Whether the TimescaleDB extension is installed for these binaries, so that the
    /// cluster can preload it: its control file in the share directory **and** its
    /// library `timescaledb.so` in `pg_config --pkglibdir`. Preloading a library that is
    /// not there would stop the server from starting at all.
    pub fn has_timescaledb(&self) -> bool {
        let pg_config = |arg: &str| {
            Command::new(self.bin("pg_config"))
                .arg(arg)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        };
        let mut shares = vec![
            PathBuf::from(format!("/usr/share/postgresql/{}/extension", self.major)),
            self.dir.join("../share/extension"),
            self.dir.join("../share/postgresql/extension"),
        ];
        let mut libs = vec![
            PathBuf::from(format!("/usr/lib/postgresql/{}/lib", self.major)),
            self.dir.join("../lib"),
            self.dir.join("../lib/postgresql"),
        ];
        if let Some(d) = pg_config("--sharedir") {
            shares.insert(0, d.join("extension"));
        }
        if let Some(d) = pg_config("--pkglibdir") {
            libs.insert(0, d);
        }
        shares.iter().any(|d| d.join("timescaledb.control").exists())
            && libs.iter().any(|d| d.join("timescaledb.so").exists())
    }
}

const SERVER_BINARIES: [&str; 3] = ["initdb", "pg_ctl", "postgres"];

/// Finds `initdb`, `pg_ctl` and `postgres` together: on PATH first, then the newest
/// `/usr/lib/postgresql/<major>/bin`.
pub fn find_binaries() -> Result<PgBinaries> {
    find_binaries_in(std::env::var_os("PATH"), Path::new("/usr/lib/postgresql"))
}

fn find_binaries_in(path: Option<std::ffi::OsString>, lib_root: &Path) -> Result<PgBinaries> {
    let complete = |dir: &Path| SERVER_BINARIES.iter().all(|b| dir.join(b).is_file());
    let mut found = None;
    if let Some(path) = path {
        found = std::env::split_paths(&path).find(|d| complete(d));
    }
    if found.is_none() {
        let mut versions: Vec<(u32, PathBuf)> = fs::read_dir(lib_root)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let major = e.file_name().to_str()?.parse::<u32>().ok()?;
                let bin = e.path().join("bin");
                complete(&bin).then_some((major, bin))
            })
            .collect();
        // Numeric, so 9 < 10 < 15.
        versions.sort();
        found = versions.pop().map(|(_, b)| b);
    }
    let dir = found.ok_or(StoreError::NoPostgresBinaries)?;
    let out = Command::new(dir.join("postgres"))
        .arg("--version")
        .output()
        .map_err(|e| StoreError::io(dir.join("postgres"), e))?;
    // "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
    let text = String::from_utf8_lossy(&out.stdout);
    let major = text
        .split_whitespace()
        .find_map(|w| w.split('.').next()?.parse::<u32>().ok())
        .ok_or_else(|| StoreError::Managed(format!("cannot read a version from `postgres --version`: {text}")))?;
    Ok(PgBinaries { dir, major })
}

/// The OS user the server runs as when clutch is root.
#[derive(Debug, Clone)]
pub struct RunAs {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// `None` when clutch is not root (the server then runs as clutch's own user).
pub fn resolve_run_as(configured: Option<&str>) -> Result<Option<RunAs>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let lookup = |name: &str| nix::unistd::User::from_name(name).ok().flatten();
    let user = match configured {
        Some(name) => {
            lookup(name).ok_or_else(|| StoreError::Managed(format!("run_as user {name:?} does not exist")))?
        }
        None => lookup("postgres").or_else(|| lookup("nobody")).ok_or_else(|| {
            StoreError::Managed(
                "running as root, and neither a `postgres` nor a `nobody` user exists to run PostgreSQL as; \
                 create one or set store.managed.run_as"
                    .into(),
            )
        })?,
    };
    if user.uid.is_root() {
        return Err(StoreError::Managed(
            "PostgreSQL cannot run as root; run_as must name another user".into(),
        ));
    }
    Ok(Some(RunAs {
        name: user.name,
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
    }))
}

/// A command for a PostgreSQL binary: as `run_as` when set, in its own process group,
/// with the `PG*` variables that would redirect it removed.
pub(crate) fn pg_command(program: &Path, run_as: Option<&RunAs>, cwd: &Path) -> Command {
    let mut c = Command::new(program);
    for var in [
        "PGDATA",
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "PGDATABASE",
        "PGOPTIONS",
        "PGPASSWORD",
    ] {
        c.env_remove(var);
    }
    c.env("LC_ALL", "C")
        .current_dir(cwd)
        .stdin(Stdio::null())
        .process_group(0);
    if let Some(u) = run_as {
        c.uid(u.uid).gid(u.gid);
    }
    c
}

/// Runs to completion; a failure carries the command's output.
pub(crate) fn run(mut c: Command, what: &str) -> Result<String> {
    let out = c
        .output()
        .map_err(|e| StoreError::Managed(format!("{what}: cannot run {:?}: {e}", c.get_program())))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(StoreError::Managed(format!(
            "{what} failed ({}): {}",
            out.status,
            text.trim()
        )))
    }
}

/// Creates `dir` (and parents), owned by `run_as` when set, with `mode`.
pub(crate) fn make_dir(dir: &Path, run_as: Option<&RunAs>, mode: u32) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
    if let Some(u) = run_as {
        std::os::unix::fs::chown(dir, Some(u.uid), Some(u.gid)).map_err(|e| StoreError::io(dir, e))?;
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(mode)).map_err(|e| StoreError::io(dir, e))
}

pub(crate) fn write_file(path: &Path, contents: &str, run_as: Option<&RunAs>, mode: u32) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(|e| StoreError::io(path, e))?;
    f.write_all(contents.as_bytes()).map_err(|e| StoreError::io(path, e))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| StoreError::io(path, e))?;
    if let Some(u) = run_as {
        std::os::unix::fs::chown(path, Some(u.uid), Some(u.gid)).map_err(|e| StoreError::io(path, e))?;
    }
    Ok(())
}

/// Fails early, with advice, when the server's user cannot reach `dir` (a data dir under
/// `/root`, say), instead of letting initdb fail obscurely.
pub(crate) fn check_reachable(dir: &Path, run_as: Option<&RunAs>) -> Result<()> {
    let Some(u) = run_as else { return Ok(()) };
    let mut c = pg_command(Path::new("/bin/sh"), Some(u), Path::new("/"));
    c.arg("-c").arg("cd \"$1\"").arg("sh").arg(dir);
    let ok = c.status().map(|s| s.success()).unwrap_or(false);
    if ok {
        Ok(())
    } else {
        Err(StoreError::Managed(format!(
            "PostgreSQL runs as user `{}` (clutch is root) and cannot enter {}: choose a --data-dir that \
             user can reach (not under /root), or make its parents searchable (chmod o+x)",
            u.name,
            dir.display()
        )))
    }
}

/// Parameters for [`initdb`].
pub(crate) struct InitDb<'a> {
    pub bins: &'a PgBinaries,
    pub pgdata: &'a Path,
    pub superuser: &'a str,
    pub password_file: Option<&'a Path>,
    pub run_as: Option<&'a RunAs>,
    /// Skip fsync of the new cluster (throwaway test clusters only).
    pub no_sync: bool,
}

pub(crate) fn initdb(p: InitDb<'_>) -> Result<()> {
    let cwd = p.pgdata.parent().unwrap_or(Path::new("/"));
    let mut c = pg_command(&p.bins.bin("initdb"), p.run_as, cwd);
    c.arg("-D")
        .arg(p.pgdata)
        .arg("-U")
        .arg(p.superuser)
        .args(["-E", "UTF8", "--locale=C", "--auth-local=trust"]);
    match p.password_file {
        Some(f) => {
            c.arg("--auth-host=scram-sha-256")
                .arg(format!("--pwfile={}", f.display()));
        }
        None => {
            c.arg("--auth-host=trust");
        }
    }
    if p.no_sync {
        c.arg("--no-sync");
    }
    run(c, "initdb").map(|_| ())
}

/// Writes `clutch.conf` into PGDATA and makes sure `postgresql.conf` includes it.
pub(crate) fn write_conf(pgdata: &Path, settings: &[(&str, String)], run_as: Option<&RunAs>) -> Result<()> {
    let mut conf = String::from("# Written by clutch at every start; edit store.managed config instead.\n");
    for (k, v) in settings {
        conf.push_str(&format!("{k} = {v}\n"));
    }
    write_file(&pgdata.join("clutch.conf"), &conf, run_as, 0o600)?;
    let main = pgdata.join("postgresql.conf");
    let mut text = String::new();
    File::open(&main)
        .and_then(|mut f| f.read_to_string(&mut text))
        .map_err(|e| StoreError::io(&main, e))?;
    const INCLUDE: &str = "include_if_exists = 'clutch.conf'";
    if !text.lines().any(|l| l.trim() == INCLUDE) {
        text.push_str(&format!("\n{INCLUDE}\n"));
        write_file(&main, &text, run_as, 0o600)?;
    }
    Ok(())
}

pub(crate) fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `pg_ctl status`: whether a postmaster is running on `pgdata`.
pub(crate) fn is_running(bins: &PgBinaries, pgdata: &Path, run_as: Option<&RunAs>) -> bool {
    let cwd = pgdata.parent().unwrap_or(Path::new("/"));
    let mut c = pg_command(&bins.bin("pg_ctl"), run_as, cwd);
    c.arg("status")
        .arg("-D")
        .arg(pgdata)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c.status().map(|s| s.success()).unwrap_or(false)
}

pub(crate) fn pg_ctl_start(bins: &PgBinaries, pgdata: &Path, log: &Path, run_as: Option<&RunAs>) -> Result<()> {
    let cwd = pgdata.parent().unwrap_or(Path::new("/"));
    let mut c = pg_command(&bins.bin("pg_ctl"), run_as, cwd);
    c.arg("start")
        .arg("-D")
        .arg(pgdata)
        .arg("-l")
        .arg(log)
        .args(["-w", "-t", "120"]);
    run(c, "pg_ctl start").map(|_| ()).map_err(|e| {
        let tail = fs::read_to_string(log)
            .map(|t| {
                t.lines()
                    .rev()
                    .take(15)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default();
        StoreError::Managed(format!("{e}\nlast lines of {}:\n{tail}", log.display()))
    })
}

/// `mode`: `smart`, `fast` (clean, disconnects clients) or `immediate` (crash-like).
pub(crate) fn pg_ctl_stop(bins: &PgBinaries, pgdata: &Path, mode: &str, run_as: Option<&RunAs>) -> Result<()> {
    let cwd = pgdata.parent().unwrap_or(Path::new("/"));
    let mut c = pg_command(&bins.bin("pg_ctl"), run_as, cwd);
    c.arg("stop")
        .arg("-D")
        .arg(pgdata)
        .args(["-m", mode, "-w", "-t", "120"]);
    run(c, "pg_ctl stop").map(|_| ())
}

pub(crate) fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| StoreError::io("/dev/urandom", e))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Unix socket paths are limited to 107 bytes.
pub(crate) fn check_socket_path(socket_dir: &Path, port: u16) -> Result<()> {
    let len = socket_dir.join(format!(".s.PGSQL.{port}")).as_os_str().len();
    if len > 100 {
        return Err(StoreError::Managed(format!(
            "the socket path under {} would be {len} bytes, over the unix limit; use a shorter --data-dir",
            socket_dir.display()
        )));
    }
    Ok(())
}

/// What `postgres.json` records.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    port: u16,
    user: String,
    database: String,
    password: String,
}

const SUPERUSER: &str = "clutch";
const DATABASE: &str = "clutch";

/// Paths of a data dir's cluster.
#[derive(Debug, Clone)]
struct Paths {
    data_dir: PathBuf,
    root: PathBuf,
    pgdata: PathBuf,
    run: PathBuf,
    log_dir: PathBuf,
    state: PathBuf,
    lock: PathBuf,
}

impl Paths {
    fn new(data_dir: &Path, create: bool) -> Result<Paths> {
        if create {
            fs::create_dir_all(data_dir).map_err(|e| StoreError::io(data_dir, e))?;
        }
        let data_dir = data_dir.canonicalize().map_err(|e| StoreError::io(data_dir, e))?;
        let root = data_dir.join("postgres");
        Ok(Paths {
            pgdata: root.join("data"),
            run: root.join("run"),
            log_dir: root.join("log"),
            state: data_dir.join("postgres.json"),
            lock: data_dir.join("postgres.lock"),
            root,
            data_dir,
        })
    }
}

fn read_state(path: &Path) -> Result<Option<State>> {
    match fs::read_to_string(path) {
        Ok(t) => serde_json::from_str(&t)
            .map(Some)
            .map_err(|e| StoreError::Managed(format!("{} is corrupt: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io(path, e)),
    }
}

fn urls(state: &State, run: &Path) -> (String, String) {
    let tcp = format!(
        "postgres://{}:{}@127.0.0.1:{}/{}",
        state.user, state.password, state.port, state.database
    );
    let socket = format!(
        "postgres://{}@localhost:{}/{}?host={}",
        state.user,
        state.port,
        state.database,
        run.display()
    );
    (tcp, socket)
}

/// The URLs of an initialised data dir, without starting anything (`clutch db url`).
/// Returns (TCP URL with password, unix-socket URL).
pub fn read_urls(data_dir: &Path) -> Result<(String, String)> {
    let missing = || {
        StoreError::Managed(format!(
            "no managed PostgreSQL in {} yet: start clutch (or run `clutch db migrate`) once to create it",
            data_dir.display()
        ))
    };
    let paths = Paths::new(data_dir, false).map_err(|_| missing())?;
    let state = read_state(&paths.state)?.ok_or_else(|| {
        StoreError::Managed(format!(
            "no managed PostgreSQL in {} yet: start clutch (or run `clutch db migrate`) once to create it",
            paths.data_dir.display()
        ))
    })?;
    Ok(urls(&state, &paths.run))
}

/// A running managed cluster. Dropping the owner stops it (fast shutdown).
#[derive(Debug)]
pub struct ManagedCluster {
    bins: PgBinaries,
    paths: Paths,
    run_as: Option<RunAs>,
    state: State,
    /// Held by the owner for its lifetime; `None` for a guest.
    lock: Option<File>,
    stopped: bool,
}

impl ManagedCluster {
    /// Initialises (first time), configures and starts the cluster, or adopts one that is
    /// already running. Blocking: call it from `spawn_blocking` inside a runtime, then
    /// [`ManagedCluster::ensure_database`].
    pub fn start(cfg: &ManagedConfig) -> Result<ManagedCluster> {
        let bins = find_binaries()?;
        let run_as = resolve_run_as(cfg.run_as.as_deref())?;
        let paths = Paths::new(&cfg.data_dir, true)?;

        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&paths.lock)
            .map_err(|e| StoreError::io(&paths.lock, e))?;
        let owner = match lock_file.try_lock() {
            Ok(()) => true,
            Err(std::fs::TryLockError::WouldBlock) => false,
            Err(std::fs::TryLockError::Error(e)) => return Err(StoreError::io(&paths.lock, e)),
        };
        if !owner {
            // Another clutch owns it: attach if it is up, never start or stop it.
            let state = read_state(&paths.state)?;
            return match state {
                Some(state) if is_running(&bins, &paths.pgdata, run_as.as_ref()) => Ok(ManagedCluster {
                    bins,
                    paths,
                    run_as,
                    state,
                    lock: None,
                    stopped: true,
                }),
                _ => Err(StoreError::Locked(paths.data_dir.clone(), paths.lock.clone())),
            };
        }

        let state = match read_state(&paths.state)? {
            Some(mut s) => {
                s.port = cfg.port;
                s
            }
            None => State {
                port: cfg.port,
                user: SUPERUSER.into(),
                database: DATABASE.into(),
                password: random_hex(18)?,
            },
        };
        // Written before initdb: a crash in between must not lose the password.
        write_file(
            &paths.state,
            &serde_json::to_string_pretty(&state).unwrap_or_default(),
            None,
            0o600,
        )?;

        make_dir(&paths.root, run_as.as_ref(), 0o700)?;
        make_dir(&paths.run, run_as.as_ref(), 0o700)?;
        make_dir(&paths.log_dir, run_as.as_ref(), 0o700)?;
        check_reachable(&paths.root, run_as.as_ref())?;
        check_socket_path(&paths.run, state.port)?;

        let version_file = paths.pgdata.join("PG_VERSION");
        if version_file.exists() {
            let v = fs::read_to_string(&version_file).map_err(|e| StoreError::io(&version_file, e))?;
            if v.trim() != bins.major.to_string() {
                return Err(StoreError::Managed(format!(
                    "the cluster in {} was created by PostgreSQL {} but the binaries found ({}) are {}; \
                     install PostgreSQL {} or upgrade the cluster with pg_upgrade",
                    paths.pgdata.display(),
                    v.trim(),
                    bins.dir.display(),
                    bins.major,
                    v.trim()
                )));
            }
        } else {
            tracing::info!(pgdata = %paths.pgdata.display(), bin = %bins.dir.display(), "initialising PostgreSQL cluster");
            let _ = fs::remove_dir_all(&paths.pgdata); // a half-done earlier initdb
            let pwfile = paths.root.join("initdb.pw");
            write_file(&pwfile, &state.password, run_as.as_ref(), 0o600)?;
            let res = initdb(InitDb {
                bins: &bins,
                pgdata: &paths.pgdata,
                superuser: &state.user,
                password_file: Some(&pwfile),
                run_as: run_as.as_ref(),
                no_sync: false,
            });
            let _ = fs::remove_file(&pwfile);
            res?;
        }

        let mut settings = vec![
            ("listen_addresses", quote("127.0.0.1")),
            ("port", state.port.to_string()),
            ("unix_socket_directories", quote(&paths.run.to_string_lossy())),
            ("unix_socket_permissions", "0700".into()),
            ("shared_buffers", quote(&cfg.shared_buffers)),
            ("synchronous_commit", "on".into()),
            ("wal_compression", "on".into()),
            ("wal_buffers", quote("16MB")),
            ("max_wal_size", quote("4GB")),
            ("min_wal_size", quote("256MB")),
            ("checkpoint_timeout", quote("15min")),
            ("checkpoint_completion_target", "0.9".into()),
            ("max_connections", "100".into()),
            ("password_encryption", quote("scram-sha-256")),
            ("log_min_duration_statement", quote("2s")),
        ];
        if bins.has_timescaledb() {
            settings.push(("shared_preload_libraries", quote("timescaledb")));
            settings.push(("timescaledb.telemetry_level", quote("off")));
        }
        write_conf(&paths.pgdata, &settings, run_as.as_ref())?;

        if is_running(&bins, &paths.pgdata, run_as.as_ref()) {
            tracing::info!("adopting the managed PostgreSQL left running by an earlier clutch");
        } else {
            tracing::info!(port = state.port, "starting managed PostgreSQL");
            pg_ctl_start(
                &bins,
                &paths.pgdata,
                &paths.log_dir.join("postgres.log"),
                run_as.as_ref(),
            )?;
        }
        Ok(ManagedCluster {
            bins,
            paths,
            run_as,
            state,
            lock: Some(lock_file),
            stopped: false,
        })
    }

    /// Creates the `clutch` database on first start.
    pub async fn ensure_database(&self) -> Result<()> {
        let (_, socket) = urls(&self.state, &self.paths.run);
        let admin = socket.replace(&format!("/{}?", self.state.database), "/postgres?");
        let mut conn = PgConnection::connect(&admin).await?;
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&self.state.database)
            .fetch_one(&mut conn)
            .await?;
        if !exists {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "CREATE DATABASE \"{}\"",
                self.state.database.replace('"', "\"\"")
            )))
            .execute(&mut conn)
            .await?;
        }
        conn.close().await?;
        Ok(())
    }

    /// TCP URL (127.0.0.1, with password): for tools and other machines' tunnels.
    pub fn url(&self) -> String {
        urls(&self.state, &self.paths.run).0
    }

    /// Unix-socket URL: what clutch itself uses (no TCP, no password).
    pub fn socket_url(&self) -> String {
        urls(&self.state, &self.paths.run).1
    }

    pub fn data_dir(&self) -> &Path {
        &self.paths.data_dir
    }

    pub fn binaries(&self) -> &PgBinaries {
        &self.bins
    }

    /// Whether this process owns (and will stop) the cluster.
    pub fn is_owner(&self) -> bool {
        self.lock.is_some()
    }

    pub fn is_running(&self) -> bool {
        is_running(&self.bins, &self.paths.pgdata, self.run_as.as_ref())
    }

    /// Clean (fast) shutdown; a no-op for a guest. Call after the writer has drained.
    pub fn stop(&mut self) -> Result<()> {
        if self.stopped || self.lock.is_none() {
            return Ok(());
        }
        self.stopped = true;
        if self.is_running() {
            tracing::info!("stopping managed PostgreSQL");
            pg_ctl_stop(&self.bins, &self.paths.pgdata, "fast", self.run_as.as_ref())?;
        }
        Ok(())
    }
}

impl Drop for ManagedCluster {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::error!(error = %e, "stopping managed PostgreSQL failed");
        }
    }
}

/// How long [`ManagedCluster::start`] may take in the worst case (initdb + start).
pub const START_TIMEOUT: Duration = Duration::from_secs(180);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binaries_say_what_to_install_or_configure() {
        let empty = std::env::temp_dir().join(format!("clutch-no-pg-{}", std::process::id()));
        fs::create_dir_all(&empty).unwrap();
        let err = find_binaries_in(Some(empty.clone().into_os_string()), &empty.join("none")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("apt-get install postgresql"), "{msg}");
        assert!(msg.contains("DATABASE_URL"), "{msg}");
        let _ = fs::remove_dir_all(&empty);
    }

    #[test]
    fn the_newest_major_wins() {
        let root = std::env::temp_dir().join(format!("clutch-pg-versions-{}", std::process::id()));
        for v in ["9", "10", "15"] {
            let bin = root.join(v).join("bin");
            fs::create_dir_all(&bin).unwrap();
            for b in SERVER_BINARIES {
                // `postgres --version` is what reports the major; a script stands in for it.
                write_file(
                    &bin.join(b),
                    &format!("#!/bin/sh\necho 'postgres (PostgreSQL) {v}.1'\n"),
                    None,
                    0o755,
                )
                .unwrap();
            }
        }
        let found = find_binaries_in(None, &root).unwrap();
        assert_eq!(found.major, 15);
        assert_eq!(found.dir, root.join("15/bin"));
        let _ = fs::remove_dir_all(&root);
    }
}
