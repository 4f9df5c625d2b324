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
//! Inside: `view` (what a device sees and its metadata), `probe` (the probe account's tree)
//! and `transfer` (opening a part, and its download record).

mod probe;
mod transfer;
mod view;

use std::fmt::Debug;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite};
use unftp_core::storage::{self, ErrorKind, FEATURE_RESTART, Fileinfo, StorageBackend};

use super::auth::Device;
use super::conn::Conn;
use super::path::resolve;
use super::records::Recorder;
use super::sessions::Sessions;
use crate::db::Db;
use crate::ftps::data::Pending;
use crate::store::FsStore;
use probe::{ProbeNode, probe_from, probe_meta, probe_node};
pub use view::Meta;
use view::{Found, dir_meta, file_meta, part_name};

/// What every session's backend shares.
#[derive(Debug)]
pub struct FtpsShared {
    pub db: Db,
    pub store: FsStore,
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

fn not_found() -> storage::Error {
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
    pub async fn retr(&self, user: &Device, path: &Path, offset: u64) -> Result<Retr, RetrError> {
        if user.probe {
            if probe_node(path) != Some(ProbeNode::File) {
                return Err(RetrError::NotFound);
            }
            let bytes = probe_from(offset);
            if bytes.is_empty() {
                return Err(RetrError::PastEnd {
                    size: fwdist_release::probe::SIZE as u64,
                });
            }
            return Ok(Retr {
                len: bytes.len() as u64,
                reader: Box::new(Cursor::new(bytes)),
                record: Pending::new(None),
            });
        }
        let node = resolve(path).ok_or(RetrError::NotFound)?;
        let view = self.view(user).await.map_err(|e| RetrError::Local(local(e)))?;
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
            record: Pending::new(self.draft(user, r, part, offset, size)),
        })
    }
}

#[async_trait]
impl StorageBackend<Device> for DeviceVfs {
    type Metadata = Meta;

    fn enter(&mut self, user: &Device) -> std::io::Result<()> {
        self.serial = Some(user.serial);
        self.conn.set_user(user.clone());
        Ok(())
    }

    fn name(&self) -> &str {
        "fwdist-device-vfs"
    }

    fn supported_features(&self) -> u32 {
        FEATURE_RESTART
    }

    async fn metadata<P: AsRef<Path> + Send + Debug>(&self, user: &Device, path: P) -> storage::Result<Meta> {
        if user.probe {
            return probe_node(path.as_ref()).map(probe_meta).ok_or_else(not_found);
        }
        self.found(user, path.as_ref(), |f| match f {
            Found::Dir(_) => Ok(dir_meta(SystemTime::now())),
            Found::File(r, p) => Ok(file_meta(r, p)),
        })
        .await
    }

    async fn list<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &Device,
        path: P,
    ) -> storage::Result<Vec<Fileinfo<PathBuf, Meta>>> {
        if user.probe {
            probe_node(path.as_ref()).ok_or_else(not_found)?;
            return Ok(vec![Fileinfo {
                path: PathBuf::from(fwdist_release::probe::FILE),
                metadata: probe_meta(ProbeNode::File),
            }]);
        }
        self.found(user, path.as_ref(), |f| match f {
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
        user: &Device,
        path: P,
        start_pos: u64,
    ) -> storage::Result<Box<dyn AsyncRead + Send + Sync + Unpin>> {
        if user.probe {
            return match probe_node(path.as_ref()) {
                Some(ProbeNode::File) => Ok(Box::new(Cursor::new(probe_from(start_pos)))),
                _ => Err(not_found()),
            };
        }
        let node = resolve(path.as_ref()).ok_or_else(not_found)?;
        let view = self.view(user).await.map_err(local)?;
        match view.lookup(&node) {
            Some(Found::File(r, p)) => self.open(r, p, start_pos).await,
            _ => Err(not_found()),
        }
    }

    async fn get_into<'a, P, W: ?Sized>(
        &self,
        user: &Device,
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
        _user: &Device,
        _input: R,
        _path: P,
        _start_pos: u64,
    ) -> storage::Result<u64> {
        Err(read_only())
    }

    async fn del<P: AsRef<Path> + Send + Debug>(&self, _user: &Device, _path: P) -> storage::Result<()> {
        Err(read_only())
    }

    async fn mkd<P: AsRef<Path> + Send + Debug>(&self, _user: &Device, _path: P) -> storage::Result<()> {
        Err(read_only())
    }

    async fn rename<P: AsRef<Path> + Send + Debug>(
        &self,
        _user: &Device,
        _from: P,
        _to: P,
    ) -> storage::Result<()> {
        Err(read_only())
    }

    async fn rmd<P: AsRef<Path> + Send + Debug>(&self, _user: &Device, _path: P) -> storage::Result<()> {
        Err(read_only())
    }

    async fn cwd<P: AsRef<Path> + Send + Debug>(&self, user: &Device, path: P) -> storage::Result<()> {
        if user.probe {
            return match probe_node(path.as_ref()) {
                Some(ProbeNode::Root) => Ok(()),
                _ => Err(storage::Error::from(ErrorKind::PermanentDirectoryNotAvailable)),
            };
        }
        self.found(user, path.as_ref(), |f| match f {
            Found::Dir(_) => Ok(()),
            Found::File(..) => Err(storage::Error::from(ErrorKind::PermanentDirectoryNotAvailable)),
        })
        .await
    }
}
