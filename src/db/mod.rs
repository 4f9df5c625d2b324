//! Metadata database: tokens, devices, pins, releases, rollouts, download records, install
//! reports and the audit log.
//!
//! [`Db`] is the one interface callers use; each table's queries live in their own file as
//! `impl Db` blocks. It holds a [`Backend`]: the embedded default is SQLite (WAL mode, one
//! file); PostgreSQL (scale-out) is another arm of it, so callers never change. Queries use
//! `$n` parameters and integer unix-millisecond times, which both dialects read alike, and run
//! through sqlx's `Any` driver, so each query is written once; flags are integers on both
//! ([`Flag`] reads them and PostgreSQL's boolean expressions), sums are cast to `BIGINT`
//! (PostgreSQL's `SUM` of a `BIGINT` is `NUMERIC`), and the one query shape with no common
//! form (a label in a JSON array) asks [`Db::dialect`].
//! The DDL is not shared: each backend has its own migrations, `migrations/<backend>/`
//! (SQLite's `INTEGER PRIMARY KEY AUTOINCREMENT` and `BLOB` are not PostgreSQL's; an applied
//! migration cannot be edited: sqlx checks its checksum at every start). What keeps them one
//! schema is a test (`tests/it/schema.rs`): both migrated databases are read back
//! (columns, types, nullability, keys, indexes) and must describe the same tables.
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
use std::sync::Once;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyTypeInfo, AnyTypeInfoKind};
use sqlx::{Any, AnyPool, Decode, Executor as _, Type};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database URL {0:?} is not supported (use sqlite://PATH or postgres://USER:PASSWORD@HOST/DB)")]
    UnsupportedUrl(String),
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot create database directory {0}: {1}")]
    Dir(String, std::io::Error),
    #[error("cannot create or protect database file {0}: {1}")]
    File(String, std::io::Error),
    #[error("stored row is corrupt: {0}")]
    Corrupt(String),
}

impl DbError {
    /// True for a UNIQUE/PRIMARY KEY violation: the caller turns it into a 409.
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, DbError::Sqlx(sqlx::Error::Database(e)) if e.is_unique_violation())
    }

    /// True when PostgreSQL gave up a transaction it may run again: a deadlock it broke
    /// (`40P01`) or a serialization failure (`40001`). Nothing of it was written.
    pub fn is_retryable(&self) -> bool {
        matches!(self, DbError::Sqlx(sqlx::Error::Database(e))
            if matches!(e.code().as_deref(), Some("40P01" | "40001")))
    }
}

pub type DbResult<T> = Result<T, DbError>;

/// Handle to the metadata database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    dialect: Dialect,
}

/// Which database is behind [`Db`], chosen by the URL's scheme. Queries are the same text on
/// both except where a dialect has no common form (JSON arrays); [`Db::dialect`] picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// Connections per node to PostgreSQL (each node has its own pool).
const PG_CONNECTIONS: u32 = 16;
/// Connections to the SQLite file (one writer at a time; readers in parallel under WAL).
const SQLITE_CONNECTIONS: u32 = 8;
/// How long a query waits for a connection from the pool.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

static DRIVERS: Once = Once::new();

impl Db {
    /// Opens the database at `url` and applies its backend's migrations.
    ///
    /// # Errors
    /// Unsupported URL, unreadable file, unreachable server, or a failed migration.
    pub async fn connect(url: &str) -> DbResult<Self> {
        DRIVERS.call_once(|| {
            sqlx::any::install_drivers(&[sqlx::sqlite::any::DRIVER, sqlx::postgres::any::DRIVER])
                .unwrap_or_else(|e| tracing::error!(error = %e, "database drivers were installed twice"));
        });
        match url.split_once("://") {
            Some(("sqlite", path)) => Ok(Db {
                pool: Self::connect_sqlite(path).await?,
                dialect: Dialect::Sqlite,
            }),
            Some(("postgres" | "postgresql", _)) => Ok(Db {
                pool: Self::connect_postgres(url).await?,
                dialect: Dialect::Postgres,
            }),
            _ => Err(DbError::UnsupportedUrl(url.to_owned())),
        }
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The file of a SQLite `url` when it does not exist (None: it exists, or the database is
    /// not a file).
    pub fn missing_file(url: &str) -> Option<std::path::PathBuf> {
        let path = url.strip_prefix("sqlite://")?;
        let path = Path::new(path.split('?').next().unwrap_or(path));
        (!path.exists()).then(|| path.to_path_buf())
    }

    /// Opens (creating the file if needed) the SQLite database at `path`.
    async fn connect_sqlite(path: &str) -> DbResult<AnyPool> {
        let path = path.split('?').next().unwrap_or(path);
        if let Some(dir) = Path::new(path).parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| DbError::Dir(dir.display().to_string(), e))?;
        }
        private_file(Path::new(path)).map_err(|e| DbError::File(path.to_owned(), e))?;
        let opts: AnyConnectOptions = format!("sqlite://{path}?mode=rwc").parse()?;
        // SQLite has no migration lock, and switching a new file to WAL needs it exclusively:
        // when `fwdist token create` and a starting server open a new file at once, one of
        // them gets "database is locked" or "table exists". A retry then finds the file ready.
        let mut attempt = 0;
        let pool = loop {
            match Self::open_sqlite(opts.clone()).await {
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

    async fn open_sqlite(opts: AnyConnectOptions) -> DbResult<AnyPool> {
        let pool = AnyPoolOptions::new()
            .max_connections(SQLITE_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    // busy_timeout first: the journal mode switch itself may have to wait.
                    conn.execute(
                        "PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL; \
                         PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
                    )
                    .await?;
                    Ok(())
                })
            })
            .connect_with(opts)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(pool)
    }

    /// Connects to PostgreSQL and migrates. sqlx takes an advisory lock around migrations,
    /// so nodes starting together apply each migration once; the others wait and find it
    /// applied.
    async fn connect_postgres(url: &str) -> DbResult<AnyPool> {
        let opts: AnyConnectOptions = url.parse()?;
        let pool = AnyPoolOptions::new()
            .max_connections(PG_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    // Every statement has a deadline: a lock held by a stuck node cannot hang
                    // this one's requests forever.
                    conn.execute("SET statement_timeout = 30000; SET lock_timeout = 10000;")
                        .await?;
                    Ok(())
                })
            })
            .connect_with(opts)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
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
        self.pool.close().await;
    }

    /// The pool the table files run their queries on.
    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

/// ` FOR UPDATE OF {table}` on PostgreSQL (rows read to be changed in the same transaction
/// stay as read until it ends), nothing on SQLite, whose writers take turns anyway.
pub(crate) fn for_update(tx: &mut sqlx::Transaction<'_, Any>, table: &str) -> String {
    if (**tx).backend_name() == "PostgreSQL" {
        format!(" FOR UPDATE OF {table}")
    } else {
        String::new()
    }
}

/// A stored flag: SQLite and this schema's PostgreSQL tables keep flags as integers (0/1),
/// while PostgreSQL answers boolean expressions (`EXISTS`, comparisons) as booleans; this
/// reads either. Bind flags as `i64::from(b)` when they go into a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Flag(pub bool);

impl Type<Any> for Flag {
    fn type_info() -> AnyTypeInfo {
        <i64 as Type<Any>>::type_info()
    }

    fn compatible(ty: &AnyTypeInfo) -> bool {
        ty.kind().is_integer() || ty.kind() == AnyTypeInfoKind::Bool
    }
}

impl<'r> Decode<'r, Any> for Flag {
    fn decode(value: sqlx::any::AnyValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        match <bool as Decode<Any>>::decode(value.clone()) {
            Ok(b) => Ok(Flag(b)),
            Err(_) => <i64 as Decode<Any>>::decode(value).map(|n| Flag(n != 0)),
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

/// The database file holds token and secret hashes and every record: owner-only (0600).
/// A new file is created so; an existing looser one is tightened with a WARN. SQLite gives
/// its `-wal` and `-shm` files the main file's mode.
fn private_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let mode = std::fs::metadata(path)?.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "database file readable by others; setting it to 0600");
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    #[tokio::test]
    async fn a_new_database_and_its_wal_are_owner_only_and_a_loose_one_is_tightened() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fwdist.sqlite");
        let db = super::Db::connect(&format!("sqlite://{}", path.display()))
            .await
            .expect("open");
        let mode = |p: &std::path::Path| std::fs::metadata(p).expect("file").permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("fwdist.sqlite-wal")), 0o600);
        drop(db);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let _db = super::Db::connect(&format!("sqlite://{}", path.display()))
            .await
            .expect("reopen");
        assert_eq!(mode(&path), 0o600);
    }
}
