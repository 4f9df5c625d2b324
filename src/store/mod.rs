//! The firmware store seam: where release files live, behind [`ReleaseStore`].
//!
//! A release is staged (the image streamed in, hashed and size-capped here, whatever the
//! backend), committed (manifest and signature written beside the image and the whole
//! release made visible at once), discarded (when the database row that makes it visible
//! could not be written) and read back as byte ranges. Callers hold an
//! `Arc<dyn ReleaseStore>` and never see a file handle or an object key: the local
//! filesystem ([`fs::FsStore`], the embedded default) and S3-compatible object storage
//! ([`s3::S3Store`], for several nodes sharing one bucket).
//!
//! Knows nothing of FTP, HTTP or SQL.

pub mod fs;
pub mod s3;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use tokio::io::AsyncRead;

use crate::domain::{Model, Sha256Digest, Version};

pub use fs::FsStore;
pub use s3::S3Store;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store I/O failed on {what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("image is larger than the limit of {0} bytes")]
    TooLarge(u64),
    #[error("{0} is not in the store")]
    Missing(String),
    /// The release's objects exist already (another node publishing it): never overwritten.
    #[error("{0}")]
    Exists(String),
}

/// A reader of part of a stored file.
pub type PartReader = Box<dyn AsyncRead + Send + Unpin>;

/// The parts of a release that [`ReleaseStore::commit`] writes beside the staged image.
pub struct ReleaseFiles<'a> {
    pub model: &'a Model,
    pub version: &'a Version,
    pub file: &'a str,
    pub manifest: &'a [u8],
    pub signature: &'a [u8],
}

/// One stored file of a published release.
#[derive(Debug, Clone, Copy)]
pub struct FileRef<'a> {
    pub model: &'a Model,
    pub version: &'a Version,
    pub file: &'a str,
}

/// Names one staged upload inside its store; opaque to callers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagingKey(pub(crate) String);

/// Where a staged image's bytes go while it is received.
#[async_trait]
pub trait UploadSink: Send {
    async fn write(&mut self, chunk: &[u8]) -> std::io::Result<()>;
    /// Makes everything written durable.
    async fn finish(&mut self) -> std::io::Result<()>;
}

/// A firmware store. Published releases are immutable: a (model, version) is committed once,
/// or replaced only when it has no database row (an earlier crash between commit and insert).
#[async_trait]
pub trait ReleaseStore: Send + Sync + fmt::Debug + 'static {
    /// Starts a private staging area for one upload.
    async fn stage(&self) -> Result<(StagingKey, Box<dyn UploadSink>), StoreError>;
    /// Removes a staging area (a failed or refused upload). Never fails: leftovers are
    /// removed when the store next opens.
    async fn abandon(&self, key: &StagingKey);
    /// Makes a finished staged image visible as `release.file`, with the manifest and
    /// signature beside it, all at once. The staging area is gone afterwards, either way.
    async fn commit(&self, key: &StagingKey, release: &ReleaseFiles<'_>) -> Result<(), StoreError>;
    /// Removes a committed release whose database insert failed.
    async fn discard(&self, model: &Model, version: &Version);
    /// Committed releases that no publish can still be finishing: any of them without a
    /// database row is debris of a publish that died between commit and insert, which the
    /// caller removes with [`ReleaseStore::discard`]. Entries whose names are not a model
    /// and a version are never listed, so never removed.
    async fn settled(&self) -> Result<Vec<(Model, Version)>, StoreError>;
    /// Reads `len` bytes of a published file from `offset`.
    async fn open_range(&self, file: FileRef<'_>, offset: u64, len: u64) -> Result<PartReader, StoreError>;
}

/// Starts receiving an image into `store`, refusing it past `max_bytes`.
///
/// # Errors
/// The store could not create a staging area.
pub async fn stage(store: &Arc<dyn ReleaseStore>, max_bytes: u64) -> Result<Staged, StoreError> {
    let (key, sink) = store.stage().await?;
    Ok(Staged {
        store: store.clone(),
        key,
        sink,
        hasher: Sha256::new(),
        len: 0,
        max_bytes,
    })
}

/// An image being received: streamed to the store and hashed as it arrives, so memory stays
/// flat whatever the image size. Dropping it without [`Staged::finish`] leaves a staging area
/// that the store removes when it next opens; [`Staged::abandon`] removes it now.
pub struct Staged {
    store: Arc<dyn ReleaseStore>,
    key: StagingKey,
    sink: Box<dyn UploadSink>,
    hasher: Sha256,
    len: u64,
    max_bytes: u64,
}

impl Staged {
    /// # Errors
    /// Write failure, or the image grew past the limit.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        self.len += chunk.len() as u64;
        if self.len > self.max_bytes {
            return Err(StoreError::TooLarge(self.max_bytes));
        }
        self.hasher.update(chunk);
        self.sink.write(chunk).await.map_err(|source| StoreError::Io {
            what: "a staged upload".into(),
            source,
        })
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Makes the image durable; returns it with its size and digest.
    ///
    /// # Errors
    /// Flush or sync failure.
    pub async fn finish(mut self) -> Result<StagedImage, StoreError> {
        self.sink.finish().await.map_err(|source| StoreError::Io {
            what: "a staged upload".into(),
            source,
        })?;
        Ok(StagedImage {
            store: self.store,
            key: self.key,
            size: self.len,
            sha256: Sha256Digest(self.hasher.finalize().into()),
        })
    }

    pub async fn abandon(self) {
        self.store.abandon(&self.key).await;
    }
}

/// A fully received image, not yet visible.
pub struct StagedImage {
    store: Arc<dyn ReleaseStore>,
    key: StagingKey,
    pub size: u64,
    pub sha256: Sha256Digest,
}

impl fmt::Debug for StagedImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StagedImage")
            .field("key", &self.key)
            .field("size", &self.size)
            .field("sha256", &self.sha256)
            .finish()
    }
}

impl StagedImage {
    /// Commits the image into its store as `release`.
    ///
    /// # Errors
    /// Store failure; the staging area is removed either way.
    pub async fn commit(self, release: &ReleaseFiles<'_>) -> Result<(), StoreError> {
        self.store.commit(&self.key, release).await
    }

    pub async fn abandon(self) {
        self.store.abandon(&self.key).await;
    }
}
