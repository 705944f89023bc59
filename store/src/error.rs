//! The crate's error type.

use std::path::PathBuf;

/// Everything the store can fail with. Variants say whose fault it is; [`StoreError::is_retryable`]
/// says whether trying again later can help.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// No PostgreSQL server binaries to run a managed cluster with.
    #[error(
        "no PostgreSQL server binaries found (looked for initdb, pg_ctl and postgres on PATH and in \
         /usr/lib/postgresql/*/bin). Install them (Debian/Ubuntu: `apt-get install postgresql`; \
         Fedora: `dnf install postgresql-server`) or point clutch at an existing server with \
         DATABASE_URL=postgres://user:password@host/db (or `store.url` in the config)"
    )]
    NoPostgresBinaries,
    /// A managed-cluster step (initdb, pg_ctl, file layout) failed.
    #[error("managed PostgreSQL: {0}")]
    Managed(String),
    /// Another clutch process owns this data directory's cluster.
    #[error("data directory {0} is in use by another clutch process (lock {1} held)")]
    Locked(PathBuf, PathBuf),
    #[error("I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The request itself is wrong (bad range, bad argument); retrying cannot help.
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl StoreError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.into(),
            source,
        }
    }

    /// Whether the same operation may succeed later without any change to the data: the
    /// server was down, restarting, overloaded, or the transaction lost a race.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Database(e) => is_retryable_sqlx(e),
            _ => false,
        }
    }
}

/// Classifies sqlx errors: transport and "server not ready" conditions retry; anything
/// the data itself caused (a bad value, a violated constraint) does not.
pub(crate) fn is_retryable_sqlx(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => match db.code() {
            Some(code) => {
                let code: &str = &code;
                // 08: connection exception; 53: insufficient resources; 57P0x: shutdown /
                // cannot connect now / crash recovery; 40001/40P01: serialization/deadlock;
                // 55P03: lock not available; 58: system error (I/O).
                code.starts_with("08")
                    || code.starts_with("53")
                    || code.starts_with("57P")
                    || code.starts_with("58")
                    || code == "40001"
                    || code == "40P01"
                    || code == "55P03"
            }
            None => false,
        },
        _ => false,
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
