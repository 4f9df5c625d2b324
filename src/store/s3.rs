//! The S3 [`ReleaseStore`] (scale-out: `store.url = "s3://bucket/prefix"`): release files as
//! objects in any S3-compatible bucket that several nodes share, through Apache Arrow's
//! `object_store`. Owns the object keys (see [`location`]), staging, the commit order, the
//! no-overwrite rule and ranged reads; knows nothing of FTP, HTTP or SQL.
//!
//! - **Stage**: the image is streamed into `incoming/<random>` as a multipart upload (8 MiB
//!   parts, at most two in flight), hashed and capped by [`super::Staged`] as for any backend.
//! - **Commit** claims the version by writing `manifest.json` with `If-None-Match: *` (a
//!   conditional put: S3 and SeaweedFS answer 412 when it exists), then copies the image to
//!   its key (copy-if-not-exists, the same header) and writes the signature the same way,
//!   and deletes the staging object. Only one publish, on any node, can hold the claim, so no
//!   key of a release is ever overwritten. Nothing is visible to IQs yet: the caller inserts
//!   the database row afterwards, and devices are only ever offered rows.
//! - **Orphans**: a publish that died between commit and row leaves a claimed version with no
//!   row. The caller has checked there is no row before it commits, so a claim older than
//!   [`STALE_AFTER`] is such an orphan: its objects are removed (manifest last, so the claim
//!   is held until the rest is gone) and the version is claimed again. A younger claim is
//!   another node's publish in flight, and the commit is refused ([`StoreError::Exists`]).
//!   [`ReleaseStore::settled`] lists the claims older than [`STALE_AFTER`], so the orphans are
//!   also removed at the next start of any node, whether or not that version is published again.
//! - **Leftovers**: staged objects older than [`STALE_AFTER`] are removed at open. Younger
//!   ones may be another node's upload in flight, and are left alone. Multipart uploads cut
//!   off by a crash are invisible to listing; a bucket lifecycle rule
//!   (`AbortIncompleteMultipartUpload`) removes them.
//! - **Reads** are ranged GETs streamed to the caller, [`READ_WINDOW`] bytes per request, so
//!   each request has a deadline however slowly an IQ drains it, and memory stays flat.
//!
//! Every request has a deadline and bounded retries ([`client_options`], [`retry_config`]).
//! Errors name the object key and never the credentials.

mod client;
mod location;
mod read;
mod upload;

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures_util::stream::TryStreamExt as _;
use fwdist_release::manifest::{MANIFEST_NAME, SIGNATURE_NAME};
use object_store::aws::AmazonS3;
use object_store::path::Path;
use object_store::{
    CopyMode, CopyOptions, ObjectStore, ObjectStoreExt as _, PutMode, PutOptions, PutPayload, WriteMultipart,
};

pub use client::{S3Settings, client_options, retry_config};
pub use location::{InvalidLocation, S3Location};
use read::RangeReader;
use upload::MultipartSink;

use super::{FileRef, PartReader, ReleaseFiles, ReleaseStore, StagingKey, StoreError, UploadSink};
use crate::domain::{Model, Version};

/// Staged objects, and claims without a row, older than this are leftovers of a node that
/// died, never a publish in flight: a staged object exists only from the end of its upload
/// to its commit, and a claim lacks its row only from the commit to the insert, seconds each
/// (an upload still arriving is a multipart upload, which listing does not show).
pub const STALE_AFTER: Duration = Duration::from_secs(3600);
/// Bytes per ranged GET of a read: at the request deadline ([`READ_TIMEOUT`]) a window is
/// drained by any IQ faster than 68 KiB/s without a retry.
pub const READ_WINDOW: u64 = 8 * 1024 * 1024;
/// Deadline of one read window, from connect to its last byte (and of the copy of a staged
/// image to its key, which the service does in one request).
pub const READ_TIMEOUT: Duration = Duration::from_secs(120);
/// Deadline of every other request (a put of one part included).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const PART_SIZE: usize = 8 * 1024 * 1024;
const PARTS_IN_FLIGHT: usize = 2;

/// Maps an object_store error on `key`: a missing object is [`StoreError::Missing`].
fn object_err(key: &str) -> impl FnOnce(object_store::Error) -> StoreError + '_ {
    move |e| match e {
        object_store::Error::NotFound { .. } => StoreError::Missing(key.to_owned()),
        e => StoreError::Io {
            what: key.to_owned(),
            source: io::Error::other(e),
        },
    }
}

/// The S3 store; cheap to share.
pub struct S3Store {
    loc: S3Location,
    endpoint: Option<String>,
    /// Control requests (put, copy, delete, list, parts): [`REQUEST_TIMEOUT`].
    ops: Arc<AmazonS3>,
    /// Ranged reads served to IQs, and the server-side copy of a whole image at commit:
    /// [`READ_TIMEOUT`] per request.
    reads: Arc<AmazonS3>,
    /// [`STALE_AFTER`] but in tests.
    stale_after: Duration,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store")
            .field("location", &self.loc.to_string())
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl S3Store {
    /// Connects to the bucket (a listing of the staging area proves the bucket and the
    /// credentials) and removes staged uploads older than [`STALE_AFTER`].
    ///
    /// # Errors
    /// The bucket cannot be reached or listed.
    pub async fn open(settings: &S3Settings) -> Result<Self, StoreError> {
        Self::open_with(settings, STALE_AFTER).await
    }

    /// [`S3Store::open`] with another age for leftovers and orphans (tests cannot wait an
    /// hour).
    ///
    /// # Errors
    /// The bucket cannot be reached or listed.
    pub async fn open_with(settings: &S3Settings, stale_after: Duration) -> Result<Self, StoreError> {
        let store = S3Store {
            loc: settings.location.clone(),
            endpoint: settings.endpoint.clone(),
            ops: Arc::new(client::client(settings, REQUEST_TIMEOUT)?),
            reads: Arc::new(client::client(settings, READ_TIMEOUT)?),
            stale_after,
        };
        let removed = store.remove_stale_staging().await?;
        tracing::info!(location = %store.loc, endpoint = ?store.endpoint, removed_staged = removed, "S3 store opened");
        Ok(store)
    }

    pub fn location(&self) -> &S3Location {
        &self.loc
    }

    /// Every object under the key prefix `dir`.
    async fn list(&self, dir: &str) -> Result<Vec<object_store::ObjectMeta>, StoreError> {
        self.ops
            .list(Some(&Path::from(dir)))
            .try_collect()
            .await
            .map_err(|e| StoreError::Io {
                what: format!("listing {dir}/ in {}", self.loc),
                source: io::Error::other(e),
            })
    }

    async fn remove_stale_staging(&self) -> Result<usize, StoreError> {
        let dir = self.loc.incoming_dir();
        let staged = self.list(&dir).await?;
        let mut removed = 0;
        for meta in staged
            .into_iter()
            .filter(|m| is_stale(m.last_modified, self.stale_after))
        {
            self.ops
                .delete(&meta.location)
                .await
                .map_err(object_err(meta.location.as_ref()))?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Removes every object of a release, the manifest (the claim) last and only when the
    /// rest is gone, so a failure here leaves a claim that ages into an orphan.
    async fn remove_release(&self, model: &Model, version: &Version) -> Result<(), StoreError> {
        let dir = self.loc.release_dir(model, version);
        let objects = self.list(&dir).await?;
        let claim = Path::from(self.loc.release_key(model, version, MANIFEST_NAME));
        for meta in objects.iter().filter(|m| m.location != claim) {
            delete_if_present(&self.ops, &meta.location).await?;
        }
        delete_if_present(&self.ops, &claim).await
    }

    /// Writes the manifest if the version is unclaimed; replaces an orphaned claim once.
    async fn claim(&self, r: &ReleaseFiles<'_>) -> Result<(), StoreError> {
        let key = self.loc.release_key(r.model, r.version, MANIFEST_NAME);
        let path = Path::from(key.as_str());
        match put_new(&self.ops, &path, r.manifest).await {
            Err(object_store::Error::AlreadyExists { .. }) => {}
            other => return other.map_err(object_err(&key)),
        }
        let meta = self.ops.head(&path).await.map_err(object_err(&key))?;
        if !is_stale(meta.last_modified, self.stale_after) {
            return Err(StoreError::Exists(format!(
                "{} {} is being published by another node (its objects appeared in {} less than an hour ago); \
                 if that publish failed, try again in an hour",
                r.model, r.version, self.loc
            )));
        }
        tracing::warn!(model = %r.model, version = %r.version, "replacing the objects of a publish that never got its database row");
        self.remove_release(r.model, r.version).await?;
        put_new(&self.ops, &path, r.manifest).await.map_err(|e| match e {
            object_store::Error::AlreadyExists { .. } => StoreError::Exists(format!(
                "{} {} was claimed by another node just now",
                r.model, r.version
            )),
            e => object_err(&key)(e),
        })
    }

    async fn commit_claimed(&self, staging: &Path, r: &ReleaseFiles<'_>) -> Result<(), StoreError> {
        let image = self.loc.release_key(r.model, r.version, r.file);
        let create = CopyOptions::new().with_mode(CopyMode::Create);
        self.reads
            .copy_opts(staging, &Path::from(image.as_str()), create)
            .await
            .map_err(object_err(&image))?;
        let sig = self.loc.release_key(r.model, r.version, SIGNATURE_NAME);
        put_new(&self.ops, &Path::from(sig.as_str()), r.signature)
            .await
            .map_err(object_err(&sig))
    }
}

/// Deletes `path`; an object already gone is not an error.
async fn delete_if_present(store: &AmazonS3, path: &Path) -> Result<(), StoreError> {
    match store.delete(path).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(object_err(path.as_ref())(e)),
    }
}

/// A put that fails with `AlreadyExists` rather than replace an object.
async fn put_new(store: &AmazonS3, path: &Path, bytes: &[u8]) -> object_store::Result<()> {
    let opts = PutOptions::from(PutMode::Create);
    store
        .put_opts(path, PutPayload::from(bytes.to_vec()), opts)
        .await
        .map(drop)
}

/// Whether an object dated `modified` (by the object store's clock) is older than
/// `stale_after` by ours: clocks a few minutes apart do not matter at an hour.
fn is_stale(modified: impl Into<SystemTime>, stale_after: Duration) -> bool {
    SystemTime::now()
        .duration_since(modified.into())
        .is_ok_and(|age| age > stale_after)
}

fn random_token() -> Result<String, StoreError> {
    let mut raw = [0u8; 12];
    getrandom::fill(&mut raw).map_err(|e| StoreError::Io {
        what: "a staging key".into(),
        source: io::Error::other(e.to_string()),
    })?;
    Ok(hex::encode(raw))
}

#[async_trait]
impl ReleaseStore for S3Store {
    async fn stage(&self) -> Result<(StagingKey, Box<dyn UploadSink>), StoreError> {
        let token = random_token()?;
        let key = self.loc.staging_key(&token);
        let upload = self
            .ops
            .put_multipart(&Path::from(key.as_str()))
            .await
            .map_err(object_err(&key))?;
        let sink = MultipartSink {
            writer: Some(WriteMultipart::new_with_chunk_size(upload, PART_SIZE)),
        };
        Ok((StagingKey(token), Box::new(sink)))
    }

    async fn abandon(&self, key: &StagingKey) {
        let path = Path::from(self.loc.staging_key(&key.0));
        if let Err(e) = delete_if_present(&self.ops, &path).await {
            tracing::warn!(error = %e, "could not remove a staged upload; it is removed at a later start");
        }
    }

    async fn commit(&self, key: &StagingKey, release: &ReleaseFiles<'_>) -> Result<(), StoreError> {
        let staging = Path::from(self.loc.staging_key(&key.0));
        let result = match self.claim(release).await {
            Ok(()) => {
                let done = self.commit_claimed(&staging, release).await;
                if done.is_err()
                    && let Err(e) = self.remove_release(release.model, release.version).await
                {
                    tracing::warn!(error = %e, "could not undo a failed commit; its claim ages into an orphan");
                }
                done
            }
            Err(e) => Err(e),
        };
        if let Err(e) = delete_if_present(&self.ops, &staging).await {
            tracing::warn!(error = %e, "could not remove a staged upload; it is removed at a later start");
        }
        result
    }

    async fn discard(&self, model: &Model, version: &Version) {
        if let Err(e) = self.remove_release(model, version).await {
            tracing::warn!(%model, %version, error = %e, "could not discard a release without a database row");
        }
    }

    /// Claims (manifests) older than the stale age: younger ones may be another node's
    /// publish between its commit and its row.
    async fn settled(&self) -> Result<Vec<(Model, Version)>, StoreError> {
        let dir = self.loc.releases_dir();
        let objects = self.list(&dir).await?;
        Ok(objects
            .into_iter()
            .filter(|m| is_stale(m.last_modified, self.stale_after))
            .filter_map(|m| self.loc.claim_of(m.location.as_ref()))
            .collect())
    }

    async fn open_range(&self, f: FileRef<'_>, offset: u64, len: u64) -> Result<PartReader, StoreError> {
        let key = self.loc.release_key(f.model, f.version, f.file);
        let path = Path::from(key.as_str());
        if len == 0 {
            // No byte to ask for (an empty range is no HTTP range), but a missing object
            // must still say so.
            self.ops.head(&path).await.map_err(object_err(&key))?;
            return Ok(Box::new(tokio::io::empty()));
        }
        // The first window is opened here, so a missing object is an error of the open (a
        // 550 before any transfer starts), as on a filesystem.
        let reader = RangeReader::open(self.reads.clone(), path, offset, len, READ_WINDOW)
            .await
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => StoreError::Missing(key.clone()),
                _ => StoreError::Io {
                    what: key.clone(),
                    source: e,
                },
            })?;
        Ok(Box::new(reader))
    }
}
