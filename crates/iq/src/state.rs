//! The reference IQ's state directory: the installed image and what it was.
//!
//! ```text
//! state.json          {"version", "sequence", "sha256"} of the installed image
//! firmware.bin        the installed image
//! manifest.json       its manifest
//! download.part       an interrupted download, resumed next time
//! ```
//! The image is renamed into place before `state.json` is replaced, each by a rename of a
//! synced file, so a power cut leaves either the old state or the new one.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use fwdist_release::id::Sha256Digest;
use fwdist_release::manifest::Manifest;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state directory {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("state file {0} is corrupt: {1}")]
    Corrupt(PathBuf, String),
}

impl StateError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        StateError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct State {
    #[serde(skip)]
    dir: PathBuf,
    pub version: Option<String>,
    pub sequence: Option<u64>,
    pub sha256: Option<Sha256Digest>,
}

impl State {
    /// Reads `state.json`; a missing file is a fresh IQ. Creates the directory.
    ///
    /// # Errors
    /// Unreadable or corrupt state.
    pub fn load(dir: &Path) -> Result<Self, StateError> {
        std::fs::create_dir_all(dir).map_err(|e| StateError::io(dir, e))?;
        let path = dir.join("state.json");
        let mut s: State = match std::fs::read(&path) {
            Ok(b) => {
                serde_json::from_slice(&b).map_err(|e| StateError::Corrupt(path.clone(), e.to_string()))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(StateError::io(&path, e)),
        };
        s.dir = dir.to_owned();
        Ok(s)
    }

    /// Moves a verified image into place and records it.
    ///
    /// # Errors
    /// Any I/O failure; the old state stays valid until the final rename.
    pub async fn install(&self, part: &Path, manifest_bytes: &[u8], m: &Manifest) -> Result<(), StateError> {
        let dir = &self.dir;
        let image = dir.join("firmware.bin");
        tokio::fs::rename(part, &image)
            .await
            .map_err(|e| StateError::io(&image, e))?;
        write_synced(&dir.join("manifest.json"), manifest_bytes).await?;
        let next = State {
            dir: dir.clone(),
            version: Some(m.version.to_string()),
            sequence: Some(m.sequence),
            sha256: Some(m.sha256),
        };
        let bytes =
            serde_json::to_vec_pretty(&next).map_err(|e| StateError::Corrupt(dir.clone(), e.to_string()))?;
        let tmp = dir.join("state.json.tmp");
        write_synced(&tmp, &bytes).await?;
        let path = dir.join("state.json");
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(|e| StateError::io(&path, e))?;
        let d = tokio::fs::File::open(dir)
            .await
            .map_err(|e| StateError::io(dir, e))?;
        d.sync_all().await.map_err(|e| StateError::io(dir, e))
    }
}

async fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let mut f = tokio::fs::File::create(path)
        .await
        .map_err(|e| StateError::io(path, e))?;
    f.write_all(bytes).await.map_err(|e| StateError::io(path, e))?;
    f.sync_all().await.map_err(|e| StateError::io(path, e))
}
