//! Metadata database: tokens, devices, pins, releases, rollouts, download records, install
//! reports and the audit log.
//!
//! [`Db`] is the one interface callers use; each table's queries live in their own file as
//! `impl Db` blocks. It holds a [`Backend`]: the embedded default is SQLite (WAL mode, one
//! file); PostgreSQL (scale-out) is another arm of it, so callers never change. Queries use
//! `$n` parameters and integer unix-millisecond times, which both dialects read alike.
//! The schema is not shared: each backend has its own migrations, `migrations/<backend>/`
//! (SQLite's `INTEGER PRIMARY KEY AUTOINCREMENT` and `BLOB` are not PostgreSQL; the first
//! SQLite migration's header calls itself portable, which it is not, but a migration that
//! has been applied cannot be edited: sqlx checks its checksum at every start).
//!
//! Stores and returns rows; knows no rule about them (which rollout targets whom, what is
//! served: that is `services`). Knows nothing of FTP or HTTP.

pub mod audit;
pub mod devices;
pub mod downloads;
pub mod fleet;
pub mod members;
pub mod pins;
pub mod releases;
pub mod reports;
pub mod rollouts;
pub mod samples;
pub mod tokens;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database URL {0:?} is not supported (use sqlite://PATH; postgres:// is not available yet)")]
    UnsupportedUrl(String),
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot create database directory {0}: {1}")]
    Dir(String, std::io::Error),
    #[error("stored row is corrupt: {0}")]
    Corrupt(String),
}

impl DbError {
    /// True for a UNIQUE/PRIMARY KEY violation: the caller turns it into a 409.
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, DbError::Sqlx(sqlx::Error::Database(e)) if e.is_unique_violation())
    }
}

pub type DbResult<T> = Result<T, DbError>;

/// Handle to the metadata database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Db {
    backend: Backend,
}

/// The database behind [`Db`], chosen by the URL's scheme.
#[derive(Debug, Clone)]
enum Backend {
    Sqlite(SqlitePool),
}

impl Db {
    /// Opens the database at `url` and applies its backend's migrations.
    ///
    /// # Errors
    /// Unsupported URL, unreadable file, or a failed migration.
    pub async fn connect(url: &str) -> DbResult<Self> {
        match url.split_once("://") {
            Some(("sqlite", path)) => Ok(Db {
                backend: Backend::Sqlite(Self::connect_sqlite(path).await?),
            }),
            _ => Err(DbError::UnsupportedUrl(url.to_owned())),
        }
    }

    /// The file of a SQLite `url` when it does not exist (None: it exists, or the database is
    /// not a file).
    pub fn missing_file(url: &str) -> Option<std::path::PathBuf> {
        let path = url.strip_prefix("sqlite://")?;
        let path = Path::new(path.split('?').next().unwrap_or(path));
        (!path.exists()).then(|| path.to_path_buf())
    }

    /// Opens (creating the file if needed) the SQLite database at `path`.
    async fn connect_sqlite(path: &str) -> DbResult<SqlitePool> {
        let path = path.split('?').next().unwrap_or(path);
        if let Some(dir) = Path::new(path).parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| DbError::Dir(dir.display().to_string(), e))?;
        }
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        // SQLite has no migration lock, and switching a new file to WAL needs it exclusively:
        // when `fwdist token create` and a starting server open a new file at once, one of
        // them gets "database is locked" or "table exists". A retry then finds the file ready.
        let mut attempt = 0;
        let pool = loop {
            match Self::open_and_migrate(opts.clone()).await {
                Ok(pool) => break pool,
                Err(e) if attempt < 8 => {
                    attempt += 1;
                    tracing::debug!(error = %e, attempt, "opening the database raced another process; retrying");
                    tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
                }
                Err(e) => return Err(e),
            }
        };
        Ok(pool)
    }

    async fn open_and_migrate(opts: SqliteConnectOptions) -> DbResult<SqlitePool> {
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(opts)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(pool)
    }

    /// A trivial query, for health checks.
    ///
    /// # Errors
    /// When the database does not answer.
    pub async fn ping(&self) -> DbResult<()> {
        sqlx::query("SELECT 1").execute(self.pool()).await?;
        Ok(())
    }

    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite(p) => p.close().await,
        }
    }

    /// The SQLite pool the table files run their queries on.
    pub(crate) fn pool(&self) -> &SqlitePool {
        match &self.backend {
            Backend::Sqlite(p) => p,
        }
    }
}

/// Converts a stored u64-ish column (SQLite has only i64).
pub(crate) fn to_u64(v: i64, what: &str) -> DbResult<u64> {
    u64::try_from(v).map_err(|_| DbError::Corrupt(format!("{what} is negative")))
}

/// Converts a u64 for storage.
pub(crate) fn to_i64(v: u64) -> i64 {
    // Sizes, offsets and sequences above i64::MAX are refused at the edge; saturate otherwise.
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Newest-first pagination: `after` is the cursor (an id) from the previous page.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub limit: u32,
    pub after: Option<i64>,
}

impl Page {
    pub const MAX: u32 = 1000;

    pub(crate) fn before_id(&self) -> i64 {
        self.after.unwrap_or(i64::MAX)
    }

    /// Fetch one extra row to know whether there is a next page.
    pub(crate) fn fetch_limit(&self) -> i64 {
        i64::from(self.limit.min(Self::MAX)) + 1
    }

    /// Trims the extra row and returns the cursor for the next page.
    pub fn finish<T>(&self, mut rows: Vec<T>, id: impl Fn(&T) -> i64) -> (Vec<T>, Option<String>) {
        let limit = self.limit.min(Self::MAX) as usize;
        if rows.len() > limit {
            rows.truncate(limit);
            let next = rows.last().map(|r| id(r).to_string());
            (rows, next)
        } else {
            (rows, None)
        }
    }
}
