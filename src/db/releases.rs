//! `releases`: published releases with their exact signed manifest bytes.

use sqlx::FromRow;

use super::audit::{AuditEntry, append_audit};
use super::{Db, DbError, DbResult, Page, to_i64, to_u64};
use crate::domain::{Model, Sha256Digest, Version, now_ms};

#[derive(Debug, Clone)]
pub struct ReleaseRow {
    pub id: i64,
    pub model: Model,
    pub version: Version,
    pub sequence: u64,
    pub file: String,
    pub size: u64,
    pub sha256: Sha256Digest,
    pub manifest: Vec<u8>,
    pub signature: Vec<u8>,
    pub created_at: i64,
    pub yanked_at: Option<i64>,
}

/// A release about to be inserted.
#[derive(Debug)]
pub struct NewRelease<'a> {
    pub model: &'a Model,
    pub version: &'a Version,
    pub sequence: u64,
    pub file: &'a str,
    pub size: u64,
    pub sha256: &'a Sha256Digest,
    pub manifest: &'a [u8],
    pub signature: &'a [u8],
}

#[derive(FromRow)]
struct Raw {
    id: i64,
    model: String,
    version: String,
    sequence: i64,
    file: String,
    size: i64,
    sha256: String,
    manifest: Vec<u8>,
    signature: Vec<u8>,
    created_at: i64,
    yanked_at: Option<i64>,
}

impl TryFrom<Raw> for ReleaseRow {
    type Error = DbError;
    fn try_from(r: Raw) -> DbResult<Self> {
        let c = |e: crate::domain::InvalidInput| DbError::Corrupt(e.0);
        Ok(ReleaseRow {
            id: r.id,
            model: Model::parse(&r.model).map_err(c)?,
            version: Version::parse(&r.version).map_err(c)?,
            sequence: to_u64(r.sequence, "sequence")?,
            file: r.file,
            size: to_u64(r.size, "size")?,
            sha256: Sha256Digest::parse(&r.sha256).map_err(c)?,
            manifest: r.manifest,
            signature: r.signature,
            created_at: r.created_at,
            yanked_at: r.yanked_at,
        })
    }
}

const COLUMNS: &str =
    "id, model, version, sequence, file, size, sha256, manifest, signature, created_at, yanked_at";

impl Db {
    /// # Errors
    /// A duplicate model+version or model+sequence (unique violation) or database failure.
    pub async fn insert_release(&self, r: &NewRelease<'_>, audit: &AuditEntry) -> DbResult<ReleaseRow> {
        let mut tx = self.pool().begin().await?;
        let raw: Raw = sqlx::query_as(&format!(
            "INSERT INTO releases (model, version, sequence, file, size, sha256, manifest, signature, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {COLUMNS}"
        ))
        .bind(r.model.as_str())
        .bind(r.version.as_str())
        .bind(to_i64(r.sequence))
        .bind(r.file)
        .bind(to_i64(r.size))
        .bind(r.sha256.to_string())
        .bind(r.manifest)
        .bind(r.signature)
        .bind(now_ms())
        .fetch_one(&mut *tx)
        .await?;
        append_audit(&mut tx, audit, now_ms()).await?;
        tx.commit().await?;
        raw.try_into()
    }

    /// # Errors
    /// Database failure.
    pub async fn release(&self, model: &Model, version: &Version) -> DbResult<Option<ReleaseRow>> {
        let raw: Option<Raw> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM releases WHERE model = $1 AND version = $2"
        ))
        .bind(model.as_str())
        .bind(version.as_str())
        .fetch_optional(self.pool())
        .await?;
        raw.map(TryInto::try_into).transpose()
    }

    /// Newest first.
    ///
    /// # Errors
    /// Database failure.
    pub async fn list_releases(&self, model: Option<&Model>, page: Page) -> DbResult<Vec<ReleaseRow>> {
        let raws: Vec<Raw> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM releases WHERE ($1 IS NULL OR model = $1) AND id < $2
             ORDER BY id DESC LIMIT $3"
        ))
        .bind(model.map(Model::as_str))
        .bind(page.before_id())
        .bind(page.fetch_limit())
        .fetch_all(self.pool())
        .await?;
        raws.into_iter().map(TryInto::try_into).collect()
    }

    /// Every published, not-yanked release of a model: what its IQs may see.
    ///
    /// # Errors
    /// Database failure.
    pub async fn unyanked_releases(&self, model: &Model) -> DbResult<Vec<ReleaseRow>> {
        let raws: Vec<Raw> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM releases WHERE model = $1 AND yanked_at IS NULL ORDER BY sequence"
        ))
        .bind(model.as_str())
        .fetch_all(self.pool())
        .await?;
        raws.into_iter().map(TryInto::try_into).collect()
    }

    /// The highest sequence ever published for a model, yanked releases included.
    ///
    /// # Errors
    /// Database failure.
    pub async fn max_sequence(&self, model: &Model) -> DbResult<Option<u64>> {
        let row: (Option<i64>,) = sqlx::query_as("SELECT MAX(sequence) FROM releases WHERE model = $1")
            .bind(model.as_str())
            .fetch_one(self.pool())
            .await?;
        row.0.map(|s| to_u64(s, "sequence")).transpose()
    }

    /// Yanks a release with its audit entry. Returns false when there is no such release.
    /// Yanking twice keeps the first time and writes no second entry.
    ///
    /// # Errors
    /// Database failure.
    pub async fn yank_release(&self, model: &Model, version: &Version, audit: &AuditEntry) -> DbResult<bool> {
        // The write first: a transaction that reads first and then writes can fail at once
        // under WAL (SQLITE_BUSY_SNAPSHOT) when the record writer commits in between, and a
        // yank is what an admin does when a bad release is being downloaded.
        let mut tx = self.pool().begin().await?;
        let r = sqlx::query(
            "UPDATE releases SET yanked_at = $3 WHERE model = $1 AND version = $2 AND yanked_at IS NULL",
        )
        .bind(model.as_str())
        .bind(version.as_str())
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            drop(tx);
            return Ok(self.release(model, version).await?.is_some());
        }
        append_audit(&mut tx, audit, now_ms()).await?;
        tx.commit().await?;
        Ok(true)
    }
}
