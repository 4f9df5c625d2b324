//! Publishing a release (SPEC §6 `POST /releases`): verify, then make it visible atomically.
//!
//! Order matters for crash safety: the image is staged (streamed, hashed, synced), checked,
//! moved into place by a directory rename, and only then is the database row inserted — the
//! row is what makes a release visible. Publishes are serialised so two uploads of one
//! version cannot race. Yanking (the release stays, but is never served again) lives here
//! too. Used by the admin API; knows nothing of HTTP.

use std::path::PathBuf;
use std::sync::Arc;

use time::OffsetDateTime;

use super::{ServiceError, ServiceResult};
use crate::db::audit::AuditEntry;
use crate::db::releases::{NewRelease, ReleaseRow};
use crate::db::{Db, DbError};
use crate::domain::{Model, Version};
use crate::store::{self, ReleaseFiles, ReleaseStore};
use fwdist_release::manifest::Manifest;
use fwdist_release::signing::TrustedKeys;

/// What a front handles while an upload streams in.
pub use crate::store::{Staged, StagedImage, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The upload is not an acceptable release (422).
    #[error("{0}")]
    Rejected(String),
    /// The version exists with other bytes (409).
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Db(#[from] DbError),
}

#[derive(Debug)]
pub enum Published {
    /// A new release (201).
    Created(ReleaseRow),
    /// The same bytes were already published (200).
    Unchanged(ReleaseRow),
}

#[derive(Debug)]
pub struct Publisher {
    db: Db,
    store: Arc<dyn ReleaseStore>,
    trusted_keys: PathBuf,
    max_image_bytes: u64,
    commit_lock: tokio::sync::Mutex<()>,
}

impl Publisher {
    pub fn new(db: Db, store: Arc<dyn ReleaseStore>, trusted_keys: PathBuf, max_image_bytes: u64) -> Self {
        Publisher {
            db,
            store,
            trusted_keys,
            max_image_bytes,
            commit_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Starts receiving an image.
    ///
    /// # Errors
    /// Store I/O failure.
    pub async fn stage(&self) -> Result<Staged, StoreError> {
        store::stage(&self.store, self.max_image_bytes).await
    }

    /// Verifies a received release and publishes it. The staged image is consumed: moved into
    /// place or removed.
    ///
    /// # Errors
    /// [`PublishError::Rejected`] for a bad manifest, signature, size, digest or sequence;
    /// [`PublishError::Conflict`] for other bytes under an existing version; store or
    /// database failures.
    pub async fn publish(
        &self,
        manifest: &[u8],
        signature: &[u8],
        image: StagedImage,
        actor: &str,
    ) -> Result<Published, PublishError> {
        let checked = self.check(manifest, signature, &image);
        let m = match checked {
            Ok(m) => m,
            Err(e) => {
                image.abandon().await;
                return Err(e);
            }
        };
        let _guard = self.commit_lock.lock().await;
        if let Some(existing) = self.db.release(&m.model, &m.version).await? {
            image.abandon().await;
            return if existing.manifest == manifest {
                Ok(Published::Unchanged(existing))
            } else {
                Err(PublishError::Conflict(format!(
                    "{} {} is already published with other bytes; releases are immutable, publish a new version",
                    m.model, m.version
                )))
            };
        }
        if let Some(last) = self.db.max_sequence(&m.model).await?
            && m.sequence <= last
        {
            image.abandon().await;
            return Err(PublishError::Rejected(format!(
                "sequence {} is not above the last sequence of model {} ({last})",
                m.sequence, m.model
            )));
        }
        let files = ReleaseFiles {
            model: &m.model,
            version: &m.version,
            file: &m.file,
            manifest,
            signature,
        };
        let (size, sha256) = (image.size, image.sha256);
        image.commit(&files).await?;
        let row = NewRelease {
            model: &m.model,
            version: &m.version,
            sequence: m.sequence,
            file: &m.file,
            size,
            sha256: &sha256,
            manifest,
            signature,
        };
        let audit = AuditEntry::new(
            actor,
            "release.publish",
            format!("{}/{}", m.model, m.version),
            serde_json::json!({"sequence": m.sequence, "file": m.file, "size": size, "sha256": sha256.to_string()}),
        );
        match self.db.insert_release(&row, &audit).await {
            Ok(r) => {
                tracing::info!(model = %m.model, version = %m.version, sequence = m.sequence, size, "release published");
                Ok(Published::Created(r))
            }
            Err(e) => {
                self.store.discard(&m.model, &m.version).await;
                Err(e.into())
            }
        }
    }

    /// Removes releases that are in the store without a database row once no publish can
    /// still be finishing them (a crash between the store commit and the row insert leaves
    /// such debris; IQs never saw it, as they are only offered rows). Run at start. Returns
    /// how many were removed.
    ///
    /// # Errors
    /// The store cannot be listed, or the database read.
    pub async fn remove_orphans(&self) -> Result<usize, PublishError> {
        let _guard = self.commit_lock.lock().await;
        let mut removed = 0;
        for (model, version) in self.store.settled().await? {
            if self.db.release(&model, &version).await?.is_none() {
                tracing::warn!(%model, %version, "removing a release from the store that has no database row (a publish cut short)");
                self.store.discard(&model, &version).await;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Yanks a release: it stays listed but is never served again (SPEC §6).
    ///
    /// # Errors
    /// No such release, database failure.
    pub async fn yank(&self, model: &Model, version: &Version, actor: &str) -> ServiceResult<ReleaseRow> {
        let missing = || ServiceError::NotFound(format!("no release {model} {version}"));
        let audit = AuditEntry::new(
            actor,
            "release.yank",
            format!("{model}/{version}"),
            serde_json::json!({}),
        );
        if !self.db.yank_release(model, version, &audit).await? {
            return Err(missing());
        }
        let r = self.db.release(model, version).await?.ok_or_else(missing)?;
        tracing::info!(model = %model, version = %version, "release yanked");
        Ok(r)
    }

    fn check(
        &self,
        manifest: &[u8],
        signature: &[u8],
        image: &StagedImage,
    ) -> Result<Manifest, PublishError> {
        let reject = |s: String| PublishError::Rejected(s);
        let m = Manifest::parse(manifest).map_err(|e| reject(e.to_string()))?;
        let keys = TrustedKeys::load_dir(&self.trusted_keys).map_err(|e| reject(e.to_string()))?;
        keys.verify(signature, manifest)
            .map_err(|e| reject(e.to_string()))?;
        if image.size != m.size {
            return Err(reject(format!(
                "image is {} bytes, manifest says {}",
                image.size, m.size
            )));
        }
        if image.sha256 != m.sha256 {
            return Err(reject(format!(
                "image sha256 is {}, manifest says {}",
                image.sha256, m.sha256
            )));
        }
        if m.sequence > i64::MAX as u64 {
            return Err(reject("sequence is too large".into()));
        }
        if m.expires_at.is_some_and(|e| e <= OffsetDateTime::now_utc()) {
            return Err(reject("manifest has already expired".into()));
        }
        Ok(m)
    }
}
