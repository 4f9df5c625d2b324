//! `fwdist fetch`: how an IQ must update, as runnable reference.
//!
//! 1. Log in over explicit FTPS (a failed TLS handshake is retried once).
//! 2. Read `/target/manifest.json`, then the signature of *that* release:
//!    `/releases/<version>/manifest.json.sig` (see [`signature_path`]); verify it against the
//!    trusted keys; refuse another model, an expired manifest, or a `sequence` not above the one in
//!    the state directory (rollback protection).
//! 3. Download `/releases/<version>/<file>` into `<state>/download.part`, resuming with `REST`
//!    from the bytes already there after any interruption (bounded retries with back-off),
//!    never reading past `size`.
//! 4. Check size and SHA-256, move the image into place atomically, then store the new state.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::client::{ClientConfig, ClientError, FtpsClient};
use super::state::{State, StateError};
use fwdist_release::id::{Model, Sha256Digest};
use fwdist_release::manifest::{MAX_MANIFEST_BYTES, Manifest};
use fwdist_release::signing::TrustedKeys;

/// The process exit codes of `fwdist fetch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A new image is installed in the state directory.
    Updated = 0,
    /// Nothing targets this IQ, or it already has the target.
    NoUpdate = 10,
    /// The server offered something this IQ must not install.
    Refused = 20,
    /// The server could not be reached or the transfer kept failing.
    NetworkFailure = 30,
    /// The server refused the login (530): retrying will not help.
    LoginRefused = 31,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("refused: {0}")]
    Refused(String),
    #[error("network failure: {0}")]
    Network(ClientError),
    #[error("login refused: {0}")]
    Login(ClientError),
    #[error(transparent)]
    State(#[from] StateError),
}

impl FetchError {
    pub fn outcome(&self) -> Outcome {
        match self {
            FetchError::Refused(_) => Outcome::Refused,
            FetchError::Network(_) => Outcome::NetworkFailure,
            FetchError::Login(_) => Outcome::LoginRefused,
            // A state directory we cannot write is local trouble; report it as a refusal to
            // install rather than as something a network retry would fix.
            FetchError::State(_) => Outcome::Refused,
        }
    }
}

pub struct FetchOptions {
    pub client: ClientConfig,
    /// The `USER` sent at login: the device id as the operator gave it, already validated as
    /// a MAC. fwdist accepts all three forms (SPEC §4); another FTP server serving the same
    /// tree (a vsftpd account, which cannot contain ':') needs the name verbatim.
    pub user: String,
    pub secret: String,
    pub model: Model,
    pub trust: TrustedKeys,
    pub state_dir: PathBuf,
    /// Transfer attempts before giving up (each resumes where the last stopped).
    pub attempts: u32,
    pub backoff: Duration,
}

/// What a successful run did.
#[derive(Debug)]
pub enum Fetched {
    Updated {
        version: String,
        sequence: u64,
        resumed_from: u64,
    },
    NoUpdate(String),
}

/// Runs one update check.
///
/// # Errors
/// See [`FetchError`]; [`FetchError::outcome`] gives the exit code.
pub async fn fetch(o: &FetchOptions) -> Result<Fetched, FetchError> {
    let state = State::load(&o.state_dir)?;
    let mut c = connect(o).await?;
    let manifest = match c
        .retr_small("/target/manifest.json", MAX_MANIFEST_BYTES as u64)
        .await
    {
        Ok(m) => m,
        Err(e) if e.code() == Some(550) => {
            c.quit().await;
            return Ok(Fetched::NoUpdate("no release is targeted at this IQ".into()));
        }
        Err(e) => return Err(FetchError::Network(e)),
    };
    let sig = c
        .retr_small(&signature_path(&manifest), MAX_MANIFEST_BYTES as u64)
        .await
        .map_err(FetchError::Network)?;
    let m = check_manifest(o, &state, &manifest, &sig)?;
    if state.sequence == Some(m.sequence) && state.sha256 == Some(m.sha256) {
        c.quit().await;
        return Ok(Fetched::NoUpdate(format!(
            "{} (sequence {}) is already installed",
            m.version, m.sequence
        )));
    }
    let part = o.state_dir.join("download.part");
    let resumed_from = part_len(&part, m.size).await?;
    let path = format!("/releases/{}/{}", m.version, m.file);
    let mut client = Some(c);
    let mut last_err = None;
    for attempt in 0..o.attempts.max(1) {
        if attempt > 0 {
            tokio::time::sleep(o.backoff * 2u32.saturating_pow(attempt - 1)).await;
        }
        let mut c = match client.take() {
            Some(c) => c,
            None => match connect(o).await {
                Ok(c) => c,
                Err(FetchError::Network(e)) => {
                    last_err = Some(e);
                    continue;
                }
                Err(e) => return Err(e),
            },
        };
        let have = part_len(&part, m.size).await?;
        if have == m.size {
            c.quit().await;
            break;
        }
        match download(&mut c, &path, &part, have, m.size).await {
            Ok(()) => {
                c.quit().await;
                last_err = None;
                break;
            }
            Err(e) if e.is_transient() => last_err = Some(e),
            Err(e) => return Err(FetchError::Network(e)),
        }
    }
    if let Some(e) = last_err {
        return Err(FetchError::Network(e));
    }
    let (size, digest) = hash_file(&part).await?;
    if size != m.size || digest != m.sha256 {
        let _ = tokio::fs::remove_file(&part).await;
        return Err(FetchError::Refused(format!(
            "downloaded image is {size} bytes with sha256 {digest}; the manifest says {} bytes, {}",
            m.size, m.sha256
        )));
    }
    state.install(&part, &manifest, &m).await?;
    Ok(Fetched::Updated {
        version: m.version.to_string(),
        sequence: m.sequence,
        resumed_from,
    })
}

/// Connects and logs in (one handshake retry, see [`FtpsClient::open`]).
async fn connect(o: &FetchOptions) -> Result<FtpsClient, FetchError> {
    match FtpsClient::open(&o.client, &o.user, &o.secret).await {
        Ok((c, _)) => Ok(c),
        Err(e) if e.code() == Some(530) => Err(FetchError::Login(e)),
        Err(e) => Err(FetchError::Network(e)),
    }
}

/// Where the signature of the manifest just read from `/target/` is:
/// `/releases/<version>/manifest.json.sig` of the version it names. The target can change
/// between two reads (a new rollout starts), and `/target/manifest.json.sig` would then be the
/// next release's; a release's own directory never changes. A manifest that does not parse
/// names no version: `/target/`'s signature is read, and verification refuses the pair.
pub fn signature_path(manifest: &[u8]) -> String {
    match Manifest::parse(manifest) {
        Ok(m) => format!("/releases/{}/manifest.json.sig", m.version),
        Err(_) => "/target/manifest.json.sig".to_owned(),
    }
}

fn check_manifest(o: &FetchOptions, state: &State, bytes: &[u8], sig: &[u8]) -> Result<Manifest, FetchError> {
    let refuse = |s: String| FetchError::Refused(s);
    o.trust
        .verify(sig, bytes)
        .map_err(|e| refuse(format!("manifest signature: {e}")))?;
    let m = Manifest::parse(bytes).map_err(|e| refuse(e.to_string()))?;
    if m.model != o.model {
        return Err(refuse(format!(
            "manifest is for model {}, this IQ is a {}",
            m.model, o.model
        )));
    }
    if let Some(exp) = m.expires_at
        && exp <= OffsetDateTime::now_utc()
    {
        return Err(refuse(format!("manifest for {} expired at {exp}", m.version)));
    }
    if let Some(installed) = state.sequence
        && m.sequence < installed
    {
        return Err(refuse(format!(
            "rollback: target sequence {} is below the installed sequence {installed}",
            m.sequence
        )));
    }
    if state.sequence == Some(m.sequence) && state.sha256 != Some(m.sha256) {
        return Err(refuse(format!(
            "sequence {} is installed with other bytes; refusing a replay",
            m.sequence
        )));
    }
    Ok(m)
}

/// Length of the partial download; a file longer than the image is discarded.
async fn part_len(part: &Path, size: u64) -> Result<u64, FetchError> {
    match tokio::fs::metadata(part).await {
        Ok(meta) if meta.len() <= size => Ok(meta.len()),
        Ok(_) => {
            tokio::fs::remove_file(part)
                .await
                .map_err(|e| StateError::io(part, e))?;
            Ok(0)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(StateError::io(part, e).into()),
    }
}

async fn download(
    c: &mut FtpsClient,
    path: &str,
    part: &Path,
    have: u64,
    size: u64,
) -> Result<(), ClientError> {
    let mut f = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(part)
        .await?;
    let result = c.retr(path, have, size - have, &mut f).await;
    f.sync_all().await?;
    result.map(|_| ())
}

async fn hash_file(path: &Path) -> Result<(u64, Sha256Digest), FetchError> {
    let mut f = tokio::fs::File::open(path)
        .await
        .map_err(|e| StateError::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n_total = 0u64;
    loop {
        let n = f.read(&mut buf).await.map_err(|e| StateError::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        n_total += n as u64;
    }
    let _ = f.flush().await;
    Ok((n_total, Sha256Digest(h.finalize().into())))
}

#[cfg(test)]
mod tests {
    use super::signature_path;

    #[test]
    fn the_signature_is_read_from_the_directory_of_the_version_the_manifest_names() {
        let manifest = br#"{"schema": 1, "model": "iq2", "version": "2.4.1-rc.1", "sequence": 42, "file": "firmware.bin", "size": 4194304, "sha256": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "created_at": "2026-11-24T17:00:00Z"}"#;
        assert_eq!(signature_path(manifest), "/releases/2.4.1-rc.1/manifest.json.sig");
        // Nothing to name a version by: the target's, which then fails verification.
        for junk in [&b""[..], b"{}", b"not json", br#"{"version": "../../x"}"#] {
            assert_eq!(signature_path(junk), "/target/manifest.json.sig");
        }
    }
}
