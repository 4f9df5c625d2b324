//! `DeviceVfs`: the libunftp storage backend that gives each device the read-only tree of
//! SPEC §4 over the firmware store, and records every RETR.
//!
//! One instance per control connection (libunftp calls the generator per connection). Paths
//! are resolved by [`super::path`]; files are looked up among the device's servable releases
//! and opened by the database row's model, version and file name — never by a path the
//! client typed. Every mutating call is refused with `PermissionDenied` (550).
//!
//! `RETR` never reaches libunftp: the front ([`crate::ftps::control`]) opens the part with
//! [`DeviceVfs::retr`] (the same tree, resolution and lookups as every other call here) and
//! its data connection task ([`crate::ftps::data`]) sends it, waits for the IQ's
//! acknowledgements and records the download.
//!
//! Every call dispatches on the session's [`Principal`]: a device gets its tree (`view`: what
//! it sees and its metadata; `transfer`: opening a part and its download record), the probe
//! account gets its own (`probe`). The one writable path of the device tree, `/report.json`
//! (SPEC §7), resolves to its own node; the front takes `STOR` to it itself (see
//! [`crate::ftps::control`]), so a write that reaches this backend (`APPE`) is refused.

mod probe;
mod transfer;
mod view;

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite};
use unftp_core::storage::{self, ErrorKind, FEATURE_RESTART, Fileinfo, StorageBackend};

use super::conn::Conn;
use super::path::{Node, resolve};
use super::principal::{Principal, SessionUser};
use super::records::Recorder;
use super::sessions::Sessions;
use crate::db::Db;
use crate::ftps::data::Pending;
use crate::services::targeting::Targeting;
use crate::store::ReleaseStore;
pub use view::Meta;
use view::{Found, dir_meta, file_meta, part_name};

/// What every session's backend shares.
#[derive(Debug)]
pub struct FtpsShared {
    pub db: Db,
    pub store: Arc<dyn ReleaseStore>,
    pub targeting: Targeting,
    /// Install reports taken by `STOR /report.json`.
    pub reports: crate::services::reports::Reports,
    pub recorder: Recorder,
    pub sessions: Arc<Sessions>,
    pub node: String,
    /// `ftps.record_downloads`: off only to measure the cost of recording.
    pub record: bool,
}

pub struct DeviceVfs {
    shared: Arc<FtpsShared>,
    /// The control connection this session runs on (see [`super::front`]).
    conn: Arc<Conn>,
    serial: Option<u64>,
}

/// Short on purpose: libunftp logs its backend with `Debug`; the shared state would be large.
impl std::fmt::Debug for DeviceVfs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceVfs(session {:?})", self.serial)
    }
}

impl DeviceVfs {
    pub fn new(shared: Arc<FtpsShared>, conn: Arc<Conn>) -> Self {
        DeviceVfs {
            shared,
            conn,
            serial: None,
        }
    }
}

pub(super) fn not_found() -> storage::Error {
    storage::Error::from(ErrorKind::PermanentFileNotAvailable)
}

fn read_only() -> storage::Error {
    storage::Error::new(ErrorKind::PermissionDenied, "the device tree is read-only")
}

fn local(e: impl std::error::Error + Send + Sync + 'static) -> storage::Error {
    storage::Error::new(ErrorKind::LocalError, e)
}

/// What a `RETR` of a path opens: the bytes from the restart offset, and the download
/// record to complete (none for the probe file).
pub struct Retr {
    pub reader: Box<dyn AsyncRead + Send + Unpin>,
    /// Bytes to send: the part's size less the offset.
    pub len: u64,
    pub record: Pending,
}

pub enum RetrError {
    NotFound,
    /// The restart offset is at or past the end of a part of `size` bytes (RFC 3659: 554).
    PastEnd {
        size: u64,
    },
    Local(storage::Error),
}

impl DeviceVfs {
    /// Opens `path` (already joined to the session's directory) for a `RETR` from `offset`.
    ///
    /// # Errors
    /// Not in the device's tree, an offset at or past the end, a store or database failure.
    pub async fn retr(&self, user: &SessionUser, path: &Path, offset: u64) -> Result<Retr, RetrError> {
        let device = match &user.principal {
            Principal::Probe => return probe::retr(path, offset),
            Principal::Device(d) => d,
        };
        let node = resolve(path).ok_or(RetrError::NotFound)?;
        let view = self.view(device).await.map_err(|e| RetrError::Local(local(e)))?;
        let Some(Found::File(r, part)) = view.lookup(&node) else {
            return Err(RetrError::NotFound);
        };
        let size = file_meta(r, part).len;
        if offset >= size && size > 0 {
            return Err(RetrError::PastEnd { size });
        }
        let reader = self.open(r, part, offset).await.map_err(RetrError::Local)?;
        Ok(Retr {
            reader,
            len: size - offset.min(size),
            record: Pending::new(self.draft(user, device, r, part, offset, size)),
        })
    }
}

#[async_trait]
impl StorageBackend<SessionUser> for DeviceVfs {
    type Metadata = Meta;

    fn enter(&mut self, user: &SessionUser) -> std::io::Result<()> {
        self.serial = Some(user.serial);
        Ok(())
    }

    fn name(&self) -> &str {
        "fwdist-device-vfs"
    }

    fn supported_features(&self) -> u32 {
        FEATURE_RESTART
    }

    async fn metadata<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &SessionUser,
        path: P,
    ) -> storage::Result<Meta> {
        let device = match &user.principal {
            Principal::Probe => return probe::metadata(path.as_ref()),
            Principal::Device(d) => d,
        };
        self.found(device, path.as_ref(), |f| match f {
            Found::Dir(_) => Ok(dir_meta(SystemTime::now())),
            Found::File(r, p) => Ok(file_meta(r, p)),
        })
        .await
    }

    async fn list<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &SessionUser,
        path: P,
    ) -> storage::Result<Vec<Fileinfo<PathBuf, Meta>>> {
        let device = match &user.principal {
            Principal::Probe => return probe::list(path.as_ref()),
            Principal::Device(d) => d,
        };
        self.found(device, path.as_ref(), |f| match f {
            Found::Dir(entries) => Ok(entries
                .into_iter()
                .map(|(n, metadata)| Fileinfo {
                    path: PathBuf::from(n),
                    metadata,
                })
                .collect()),
            Found::File(r, p) => Ok(vec![Fileinfo {
                path: PathBuf::from(part_name(r, p)),
                metadata: file_meta(r, p),
            }]),
        })
        .await
    }

    async fn get<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &SessionUser,
        path: P,
        start_pos: u64,
    ) -> storage::Result<Box<dyn AsyncRead + Send + Sync + Unpin>> {
        // Only reached through `get_into`, which refuses: the front serves every RETR.
        let _ = (user, path, start_pos);
        Err(storage::Error::new(
            ErrorKind::PermissionDenied,
            "RETR is served by the FTPS front",
        ))
    }

    async fn get_into<'a, P, W: ?Sized>(
        &self,
        user: &SessionUser,
        path: P,
        start_pos: u64,
        _output: &'a mut W,
    ) -> storage::Result<u64>
    where
        W: AsyncWrite + Unpin + Sync + Send,
        P: AsRef<Path> + Send + Debug,
    {
        // The front answers every RETR itself (see `crate::ftps::control`): it opens the part
        // with `retr` and sends it down the data connection it owns. libunftp never gets one.
        let _ = (user, path, start_pos);
        Err(storage::Error::new(
            ErrorKind::PermissionDenied,
            "RETR is served by the FTPS front",
        ))
    }

    async fn put<P: AsRef<Path> + Send + Debug, R: AsyncRead + Send + Sync + Unpin + 'static>(
        &self,
        user: &SessionUser,
        _input: R,
        path: P,
        _start_pos: u64,
    ) -> storage::Result<u64> {
        match (&user.principal, resolve(path.as_ref())) {
            // Reports are taken by the front's STOR; an APPE of one is refused here.
            (Principal::Device(_), Some(Node::Report)) => Err(storage::Error::new(
                ErrorKind::PermissionDenied,
                "install reports are uploaded with STOR",
            )),
            _ => Err(read_only()),
        }
    }

    async fn del<P: AsRef<Path> + Send + Debug>(&self, _user: &SessionUser, _path: P) -> storage::Result<()> {
        Err(read_only())
    }

    async fn mkd<P: AsRef<Path> + Send + Debug>(&self, _user: &SessionUser, _path: P) -> storage::Result<()> {
        Err(read_only())
    }

    async fn rename<P: AsRef<Path> + Send + Debug>(
        &self,
        _user: &SessionUser,
        _from: P,
        _to: P,
    ) -> storage::Result<()> {
        Err(read_only())
    }

    async fn rmd<P: AsRef<Path> + Send + Debug>(&self, _user: &SessionUser, _path: P) -> storage::Result<()> {
        Err(read_only())
    }

    async fn cwd<P: AsRef<Path> + Send + Debug>(&self, user: &SessionUser, path: P) -> storage::Result<()> {
        let device = match &user.principal {
            Principal::Probe => return probe::cwd(path.as_ref()),
            Principal::Device(d) => d,
        };
        let no_dir = || storage::Error::from(ErrorKind::PermanentDirectoryNotAvailable);
        match self
            .found(device, path.as_ref(), |f| Ok(matches!(f, Found::Dir(_))))
            .await
        {
            Ok(true) => Ok(()),
            // A file, or nothing: either way there is no such directory.
            Ok(false) => Err(no_dir()),
            Err(e) if e.kind() == ErrorKind::PermanentFileNotAvailable => Err(no_dir()),
            Err(e) => Err(e),
        }
    }
}
