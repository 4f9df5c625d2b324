//! The local-filesystem [`ReleaseStore`] (the embedded default): release files on disk,
//! laid out by model and version, read-only once published, published by a directory rename.
//!
//! Layout under the store root:
//! ```text
//! releases/<model>/<version>/manifest.json
//! releases/<model>/<version>/manifest.json.sig
//! releases/<model>/<version>/<file>
//! .incoming/<random>/            uploads being received (wiped at start)
//! ```
//! A release becomes visible only when its directory has been renamed into place *and* the
//! database row exists (the caller inserts the row after [`ReleaseStore::commit`]). A crash at
//! any point leaves either nothing visible or an orphan directory, which is removed when the
//! server next starts ([`ReleaseStore::settled`] lists every release directory: a local store
//! belongs to one node, so at start no publish is in flight) or replaced by the next publish
//! of the same version.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use fwdist_release::manifest::{MANIFEST_NAME, SIGNATURE_NAME};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt, AsyncWriteExt, BufReader, BufWriter};

use super::{FileRef, PartReader, ReleaseFiles, ReleaseStore, StagingKey, StoreError, UploadSink};
use crate::domain::{Model, Version};

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        what: path.display().to_string(),
        source,
    }
}

/// The local-filesystem store (the embedded default).
#[derive(Debug, Clone)]
pub struct FsStore {
    root: PathBuf,
}

impl FsStore {
    /// Opens (creating if needed) the store at `root` and discards half-received uploads.
    ///
    /// # Errors
    /// When the directories cannot be created or cleaned.
    pub async fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        let store = FsStore { root };
        let incoming = store.incoming_dir();
        if tokio::fs::try_exists(&incoming)
            .await
            .map_err(io_err(&incoming))?
        {
            tokio::fs::remove_dir_all(&incoming)
                .await
                .map_err(io_err(&incoming))?;
        }
        for dir in [store.root.join("releases"), incoming] {
            tokio::fs::create_dir_all(&dir).await.map_err(io_err(&dir))?;
        }
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn incoming_dir(&self) -> PathBuf {
        self.root.join(".incoming")
    }

    fn release_dir(&self, model: &Model, version: &Version) -> PathBuf {
        self.root
            .join("releases")
            .join(model.as_str())
            .join(version.as_str())
    }

    fn staging_dir(&self, key: &StagingKey) -> PathBuf {
        self.incoming_dir().join(&key.0)
    }

    async fn commit_inner(&self, dir: &Path, r: &ReleaseFiles<'_>) -> Result<(), StoreError> {
        write_synced(&dir.join(MANIFEST_NAME), r.manifest).await?;
        write_synced(&dir.join(SIGNATURE_NAME), r.signature).await?;
        let image = dir.join(r.file);
        tokio::fs::rename(dir.join("image"), &image)
            .await
            .map_err(io_err(&image))?;
        for name in [MANIFEST_NAME, SIGNATURE_NAME, r.file] {
            set_read_only(&dir.join(name)).await?;
        }
        sync_dir(dir).await?;
        let target = self.release_dir(r.model, r.version);
        let parent = target
            .parent()
            .map(Path::to_owned)
            .unwrap_or_else(|| self.root.clone());
        tokio::fs::create_dir_all(&parent)
            .await
            .map_err(io_err(&parent))?;
        if tokio::fs::try_exists(&target).await.map_err(io_err(&target))? {
            // Only reachable for a directory without a database row: an earlier crash.
            tracing::warn!(path = %target.display(), "replacing orphaned release directory");
            tokio::fs::remove_dir_all(&target)
                .await
                .map_err(io_err(&target))?;
        }
        tokio::fs::rename(dir, &target).await.map_err(io_err(&target))?;
        sync_dir(&parent).await
    }
}

/// Buffer for reads served to IQs: measured ~2.5x faster than 4 KiB on libunftp.
pub const READ_BUFFER: usize = 1024 * 1024;
const WRITE_BUFFER: usize = 1024 * 1024;

#[async_trait]
impl ReleaseStore for FsStore {
    async fn stage(&self) -> Result<(StagingKey, Box<dyn UploadSink>), StoreError> {
        let mut raw = [0u8; 12];
        getrandom::fill(&mut raw).map_err(|e| StoreError::Io {
            what: self.incoming_dir().display().to_string(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let key = StagingKey(hex::encode(raw));
        let dir = self.staging_dir(&key);
        tokio::fs::create_dir(&dir).await.map_err(io_err(&dir))?;
        let path = dir.join("image");
        let file = tokio::fs::File::create(&path).await.map_err(io_err(&path))?;
        let sink = FileSink {
            writer: BufWriter::with_capacity(WRITE_BUFFER, file),
        };
        Ok((key, Box::new(sink)))
    }

    async fn abandon(&self, key: &StagingKey) {
        let _ = tokio::fs::remove_dir_all(self.staging_dir(key)).await;
    }

    /// Writes the manifest and signature beside the image, syncs everything, renames the
    /// directory to `releases/<model>/<version>` (replacing an orphan left by a crash) and
    /// syncs the parent.
    async fn commit(&self, key: &StagingKey, release: &ReleaseFiles<'_>) -> Result<(), StoreError> {
        let dir = self.staging_dir(key);
        let result = self.commit_inner(&dir, release).await;
        if result.is_err() {
            let _ = tokio::fs::remove_dir_all(&dir).await;
        }
        result
    }

    async fn discard(&self, model: &Model, version: &Version) {
        let _ = tokio::fs::remove_dir_all(self.release_dir(model, version)).await;
    }

    async fn settled(&self) -> Result<Vec<(Model, Version)>, StoreError> {
        let mut found = Vec::new();
        let releases = self.root.join("releases");
        for (model, path) in named_dirs(&releases, Model::parse).await? {
            for (version, _) in named_dirs(&path, Version::parse).await? {
                found.push((model.clone(), version));
            }
        }
        Ok(found)
    }

    async fn open_range(&self, f: FileRef<'_>, offset: u64, len: u64) -> Result<PartReader, StoreError> {
        let path = self.release_dir(f.model, f.version).join(f.file);
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::Missing(path.display().to_string()));
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        if offset > 0 {
            file.seek(std::io::SeekFrom::Start(offset))
                .await
                .map_err(io_err(&path))?;
        }
        // tokio's BufReader zeroes its whole buffer up front: size it to what is read
        // (profiling P2 showed a 1 MiB memset plus its page faults per small RETR).
        let cap = usize::try_from(len).unwrap_or(READ_BUFFER).clamp(1, READ_BUFFER);
        Ok(Box::new(BufReader::with_capacity(cap, file.take(len))))
    }
}

struct FileSink {
    writer: BufWriter<tokio::fs::File>,
}

#[async_trait]
impl UploadSink for FileSink {
    async fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(chunk).await
    }

    async fn finish(&mut self) -> std::io::Result<()> {
        self.writer.flush().await?;
        self.writer.get_mut().sync_all().await
    }
}

/// The subdirectories of `dir` whose names `parse` accepts; others are left out (and alone).
async fn named_dirs<T, E>(
    dir: &Path,
    parse: fn(&str) -> Result<T, E>,
) -> Result<Vec<(T, PathBuf)>, StoreError> {
    let mut entries = tokio::fs::read_dir(dir).await.map_err(io_err(dir))?;
    let mut found = Vec::new();
    while let Some(e) = entries.next_entry().await.map_err(io_err(dir))? {
        let path = e.path();
        let is_dir = e.file_type().await.map_err(io_err(&path))?.is_dir();
        match e.file_name().to_str().map(parse) {
            Some(Ok(name)) if is_dir => found.push((name, path)),
            _ => tracing::debug!(path = %path.display(), "not a release directory; left alone"),
        }
    }
    Ok(found)
}

async fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let mut f = tokio::fs::File::create(path).await.map_err(io_err(path))?;
    f.write_all(bytes).await.map_err(io_err(path))?;
    f.sync_all().await.map_err(io_err(path))
}

async fn set_read_only(path: &Path) -> Result<(), StoreError> {
    let mut perms = tokio::fs::metadata(path)
        .await
        .map_err(io_err(path))?
        .permissions();
    perms.set_readonly(true);
    tokio::fs::set_permissions(path, perms)
        .await
        .map_err(io_err(path))
}

async fn sync_dir(path: &Path) -> Result<(), StoreError> {
    let f = tokio::fs::File::open(path).await.map_err(io_err(path))?;
    f.sync_all().await.map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sha2::{Digest, Sha256};

    use super::*;
    use crate::store;

    type R = Result<(), Box<dyn std::error::Error>>;

    async fn read_all(mut r: PartReader) -> std::io::Result<String> {
        let mut s = String::new();
        r.read_to_string(&mut s).await?;
        Ok(s)
    }

    #[tokio::test]
    async fn staged_release_becomes_visible_only_on_commit() -> R {
        let tmp = tempfile::tempdir()?;
        let store: Arc<dyn ReleaseStore> = Arc::new(FsStore::open(tmp.path()).await?);
        let (model, version) = (Model::parse("iq2")?, Version::parse("1.0.0")?);
        let file = FileRef {
            model: &model,
            version: &version,
            file: "fw.bin",
        };
        let mut staged = store::stage(&store, 1 << 20).await?;
        staged.write(b"hello ").await?;
        staged.write(b"world").await?;
        let image = staged.finish().await?;
        assert_eq!(image.size, 11);
        assert_eq!(image.sha256.0, <[u8; 32]>::from(Sha256::digest(b"hello world")));
        assert!(matches!(
            store.open_range(file, 0, 11).await,
            Err(StoreError::Missing(_))
        ));
        let files = ReleaseFiles {
            model: &model,
            version: &version,
            file: "fw.bin",
            manifest: b"m",
            signature: b"s",
        };
        image.commit(&files).await?;
        assert_eq!(read_all(store.open_range(file, 6, 5).await?).await?, "world");
        assert_eq!(read_all(store.open_range(file, 2, 3).await?).await?, "llo");
        assert_eq!(read_all(store.open_range(file, 11, 0).await?).await?, "");
        let meta = tokio::fs::metadata(tmp.path().join("releases/iq2/1.0.0/fw.bin")).await?;
        assert!(meta.permissions().readonly());
        let mut staging = tokio::fs::read_dir(tmp.path().join(".incoming")).await?;
        assert!(staging.next_entry().await?.is_none());
        Ok(())
    }

    #[tokio::test]
    async fn settled_lists_release_directories_and_nothing_else() -> R {
        let tmp = tempfile::tempdir()?;
        let store = FsStore::open(tmp.path()).await?;
        let releases = tmp.path().join("releases");
        for dir in [
            "iq2/1.0.0",
            "iq2/2.0.0-rc.1",
            "iq3/0.1.0",
            "iq2/notes",
            "Bad_Model/1.0.0",
        ] {
            tokio::fs::create_dir_all(releases.join(dir)).await?;
        }
        tokio::fs::write(releases.join("iq3/1.0.0"), b"a file, not a release").await?;
        tokio::fs::write(releases.join("README"), b"").await?;
        let mut found: Vec<String> = store
            .settled()
            .await?
            .into_iter()
            .map(|(m, v)| format!("{m}/{v}"))
            .collect();
        found.sort();
        assert_eq!(found, ["iq2/1.0.0", "iq2/2.0.0-rc.1", "iq3/0.1.0"]);
        Ok(())
    }

    #[tokio::test]
    async fn oversized_upload_is_refused_and_leftovers_are_wiped() -> R {
        let tmp = tempfile::tempdir()?;
        let store: Arc<dyn ReleaseStore> = Arc::new(FsStore::open(tmp.path()).await?);
        let mut staged = store::stage(&store, 4).await?;
        assert!(matches!(
            staged.write(b"12345").await,
            Err(StoreError::TooLarge(4))
        ));
        drop(staged);
        FsStore::open(tmp.path()).await?;
        let mut left = tokio::fs::read_dir(tmp.path().join(".incoming")).await?;
        assert!(left.next_entry().await?.is_none());
        Ok(())
    }

    #[tokio::test]
    async fn abandoned_uploads_leave_nothing() -> R {
        let tmp = tempfile::tempdir()?;
        let store: Arc<dyn ReleaseStore> = Arc::new(FsStore::open(tmp.path()).await?);
        let mut staged = store::stage(&store, 100).await?;
        staged.write(b"abc").await?;
        staged.finish().await?.abandon().await;
        store::stage(&store, 100).await?.abandon().await;
        let mut left = tokio::fs::read_dir(tmp.path().join(".incoming")).await?;
        assert!(left.next_entry().await?.is_none());
        Ok(())
    }
}
