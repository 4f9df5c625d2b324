//! `DeviceVfs`: the libunftp storage backend that gives each device the read-only tree of
//! SPEC §4 over the firmware store, and records every RETR.
//!
//! One instance per control connection (libunftp calls the generator per connection). Paths
//! are resolved by [`super::path`]; files are looked up among the device's servable releases
//! and opened by the database row's model, version and file name — never by a path the
//! client typed. Every mutating call is refused with `PermissionDenied` (550).
//!
//! Recording: RETR goes through `get_into`, which copies with a large buffer, counts the
//! bytes written to the data channel and records the outcome: `complete` when the copy and
//! flush succeeded (libunftp then replies 226), `aborted` with the bytes written otherwise —
//! including when the transfer future is dropped mid-way.

use std::fmt::Debug;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use unftp_core::storage::{self, ErrorKind, FEATURE_RESTART, Fileinfo, Permissions, StorageBackend};

use super::auth::Device;
use super::front::Conn;
use super::path::{MetaFile, Node, ReleaseFile, resolve};
use super::records::Recorder;
use super::sessions::Sessions;
use crate::catalog;
use crate::db::downloads::DownloadRecord;
use crate::db::releases::ReleaseRow;
use crate::db::{Db, DbError};
use crate::domain::{Outcome, Version, now_ms};
use crate::store::{FsStore, READ_BUFFER};

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

/// Short on purpose: libunftp formats its data-channel executor (which holds this) with
/// `Debug` for every transfer (see `datachan_guard`); the shared state would be large.
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

/// Counts a transfer in progress on the connection while it lives (shutdown lets those finish).
struct Busy<'a>(&'a Conn);

impl<'a> Busy<'a> {
    fn new(c: &'a Conn) -> Self {
        c.transfer_started();
        Busy(c)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.transfer_ended();
    }
}

/// The probe account's whole tree: `/` holding `probe.bin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProbeNode {
    Root,
    File,
}

fn probe_node(path: &Path) -> Option<ProbeNode> {
    match path.to_str()?.trim_start_matches('/') {
        "" | "." => Some(ProbeNode::Root),
        f if f == crate::probe::FILE => Some(ProbeNode::File),
        _ => None,
    }
}

fn probe_meta(n: ProbeNode) -> Meta {
    match n {
        ProbeNode::Root => dir_meta(UNIX_EPOCH),
        ProbeNode::File => Meta {
            len: crate::probe::SIZE as u64,
            dir: false,
            modified: UNIX_EPOCH,
        },
    }
}

fn probe_from(start: u64) -> &'static [u8] {
    let b = crate::probe::cached();
    &b[usize::try_from(start).unwrap_or(usize::MAX).min(b.len())..]
}

#[derive(Debug, Clone)]
pub struct Meta {
    len: u64,
    dir: bool,
    modified: SystemTime,
}

impl storage::Metadata for Meta {
    fn len(&self) -> u64 {
        self.len
    }
    fn is_dir(&self) -> bool {
        self.dir
    }
    fn is_file(&self) -> bool {
        !self.dir
    }
    fn is_symlink(&self) -> bool {
        false
    }
    fn modified(&self) -> storage::Result<SystemTime> {
        Ok(self.modified)
    }
    fn gid(&self) -> u32 {
        0
    }
    fn uid(&self) -> u32 {
        0
    }
    fn permissions(&self) -> Permissions {
        Permissions(if self.dir { 0o555 } else { 0o444 })
    }
}

fn time_of(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

fn dir_meta(modified: SystemTime) -> Meta {
    Meta {
        len: 0,
        dir: true,
        modified,
    }
}

/// Which bytes of a release a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Meta(MetaFile),
    Image,
}

/// The device's releases and current target, read once per command.
struct View {
    releases: Vec<ReleaseRow>,
    target: Option<Version>,
}

enum Found<'a> {
    Dir(Vec<(String, Meta)>),
    File(&'a ReleaseRow, Part),
}

impl View {
    fn release(&self, version: &str) -> Option<&ReleaseRow> {
        self.releases.iter().find(|r| r.version.as_str() == version)
    }

    fn target(&self) -> Option<&ReleaseRow> {
        self.target.as_ref().and_then(|v| self.release(v.as_str()))
    }

    fn newest(&self) -> SystemTime {
        self.releases
            .iter()
            .map(|r| time_of(r.created_at))
            .max()
            .unwrap_or(UNIX_EPOCH)
    }

    fn lookup(&self, node: &Node) -> Option<Found<'_>> {
        let files = |r: &ReleaseRow| -> Vec<(String, Meta)> {
            [
                Part::Meta(MetaFile::Manifest),
                Part::Meta(MetaFile::Signature),
                Part::Image,
            ]
            .into_iter()
            .map(|p| (part_name(r, p).to_owned(), file_meta(r, p)))
            .collect()
        };
        match node {
            Node::Root => Some(Found::Dir(vec![
                ("target".into(), dir_meta(self.newest())),
                ("releases".into(), dir_meta(self.newest())),
            ])),
            Node::TargetDir => Some(Found::Dir(match self.target() {
                Some(r) => files(r).into_iter().take(2).collect(),
                None => Vec::new(),
            })),
            Node::TargetFile(m) => self.target().map(|r| Found::File(r, Part::Meta(*m))),
            Node::ReleasesDir => Some(Found::Dir(
                self.releases
                    .iter()
                    .map(|r| (r.version.to_string(), dir_meta(time_of(r.created_at))))
                    .collect(),
            )),
            Node::VersionDir(v) => self.release(v).map(|r| Found::Dir(files(r))),
            Node::ReleaseFile(v, f) => {
                let r = self.release(v)?;
                match f {
                    ReleaseFile::Meta(m) => Some(Found::File(r, Part::Meta(*m))),
                    ReleaseFile::Image(name) if *name == r.file => Some(Found::File(r, Part::Image)),
                    ReleaseFile::Image(_) => None,
                }
            }
        }
    }
}

fn part_name(r: &ReleaseRow, p: Part) -> &str {
    match p {
        Part::Meta(m) => m.name(),
        Part::Image => &r.file,
    }
}

fn part_bytes(r: &ReleaseRow, m: MetaFile) -> &[u8] {
    match m {
        MetaFile::Manifest => &r.manifest,
        MetaFile::Signature => &r.signature,
    }
}

fn file_meta(r: &ReleaseRow, p: Part) -> Meta {
    let len = match p {
        Part::Meta(m) => part_bytes(r, m).len() as u64,
        Part::Image => r.size,
    };
    Meta {
        len,
        dir: false,
        modified: time_of(r.created_at),
    }
}

/// Transfers and listings run inside libunftp's data-channel span; refuse them when that
/// channel has no TLS (see [`super::datachan_guard`]). `list` is only ever called for a data
/// transfer (LIST/NLST/MLSD), so the check holds there too.
fn refuse_plaintext(user: &Device) -> storage::Result<()> {
    if super::datachan_guard::data_channel_is_plain() {
        tracing::warn!(device = %user.id, ip = %user.ip, "refused a transfer over a data channel without TLS (PROT C)");
        return Err(storage::Error::new(
            ErrorKind::PermissionDenied,
            "TLS is required on the data channel",
        ));
    }
    Ok(())
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

impl DeviceVfs {
    async fn view(&self, user: &Device) -> Result<View, DbError> {
        let db = &self.shared.db;
        let releases = db.servable_releases(&user.model).await?;
        let target = catalog::target_of(db, &user.id, &user.model)
            .await?
            .map(|t| t.version);
        Ok(View { releases, target })
    }

    async fn found<T>(
        &self,
        user: &Device,
        path: &Path,
        f: impl FnOnce(Found<'_>) -> storage::Result<T>,
    ) -> storage::Result<T> {
        let node = resolve(path).ok_or_else(not_found)?;
        let view = self.view(user).await.map_err(local)?;
        let found = view.lookup(&node).ok_or_else(not_found)?;
        f(found)
    }

    /// Opens a release part from `offset`; returns the reader and the part's size.
    async fn open(
        &self,
        r: &ReleaseRow,
        part: Part,
        offset: u64,
    ) -> storage::Result<Box<dyn AsyncRead + Send + Sync + Unpin>> {
        match part {
            Part::Meta(m) => {
                let bytes = part_bytes(r, m);
                let start = usize::try_from(offset).unwrap_or(usize::MAX).min(bytes.len());
                Ok(Box::new(Cursor::new(bytes[start..].to_vec())))
            }
            Part::Image => {
                let offset = offset.min(r.size);
                let f = self
                    .shared
                    .store
                    .open_file(&r.model, &r.version, &r.file, offset)
                    .await
                    .map_err(local)?;
                // tokio's BufReader zeroes its whole buffer up front: size it to what is left
                // (profiling P2 showed a 1 MiB memset plus its page faults per small RETR).
                let left = usize::try_from(r.size - offset).unwrap_or(READ_BUFFER);
                Ok(Box::new(BufReader::with_capacity(left.clamp(1, READ_BUFFER), f)))
            }
        }
    }
}

/// Sends the record when dropped before [`Transfer::finish`]: a transfer cut off by the
/// session ending is still recorded, as `aborted`.
struct Transfer {
    recorder: Recorder,
    record: Option<DownloadRecord>,
}

impl Transfer {
    fn add(&mut self, n: u64) {
        if let Some(r) = &mut self.record {
            r.bytes += n;
        }
    }

    async fn finish(mut self, outcome: Outcome) {
        if let Some(mut r) = self.record.take() {
            r.outcome = outcome;
            r.finished_at = now_ms();
            self.recorder.record(r).await;
        }
    }
}

impl Drop for Transfer {
    fn drop(&mut self) {
        if let Some(mut r) = self.record.take() {
            r.finished_at = now_ms();
            self.recorder.record_detached(r);
        }
    }
}

#[async_trait]
impl StorageBackend<Device> for DeviceVfs {
    type Metadata = Meta;

    fn enter(&mut self, user: &Device) -> std::io::Result<()> {
        self.serial = Some(user.serial);
        if !user.probe {
            self.conn.set_device(user.id);
        }
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
        refuse_plaintext(user)?;
        if user.probe {
            probe_node(path.as_ref()).ok_or_else(not_found)?;
            return Ok(vec![Fileinfo {
                path: PathBuf::from(crate::probe::FILE),
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
        output: &'a mut W,
    ) -> storage::Result<u64>
    where
        W: AsyncWrite + Unpin + Sync + Send,
        P: AsRef<Path> + Send + Debug,
    {
        refuse_plaintext(user)?;
        let _busy = Busy::new(&self.conn);
        if user.probe {
            if probe_node(path.as_ref()) != Some(ProbeNode::File) {
                return Err(not_found());
            }
            let bytes = probe_from(start_pos);
            output
                .write_all(bytes)
                .await
                .map_err(|e| storage::Error::new(ErrorKind::ConnectionClosed, e))?;
            output
                .flush()
                .await
                .map_err(|e| storage::Error::new(ErrorKind::ConnectionClosed, e))?;
            return Ok(bytes.len() as u64);
        }
        let node = resolve(path.as_ref()).ok_or_else(not_found)?;
        let view = self.view(user).await.map_err(local)?;
        let Some(Found::File(r, part)) = view.lookup(&node) else {
            return Err(not_found());
        };
        let mut reader = self.open(r, part, start_pos).await?;
        let size = file_meta(r, part).len;
        let mut t = Transfer {
            recorder: self.shared.recorder.clone(),
            record: self.shared.record.then(|| DownloadRecord {
                device: user.id,
                model: r.model.clone(),
                version: r.version.clone(),
                file: part_name(r, part).to_owned(),
                offset: start_pos,
                bytes: 0,
                size,
                outcome: Outcome::Aborted,
                started_at: now_ms(),
                finished_at: 0,
                client_ip: user.ip.to_string(),
                data_port: self.conn.passive_port(),
                node: self.shared.node.clone(),
            }),
        };
        let mut buf = vec![
            0u8;
            READ_BUFFER
                .min(usize::try_from(size).unwrap_or(READ_BUFFER))
                .max(1)
        ];
        let mut total = 0u64;
        let result: storage::Result<()> = async {
            loop {
                let n = reader.read(&mut buf).await.map_err(local)?;
                if n == 0 {
                    break;
                }
                output
                    .write_all(&buf[..n])
                    .await
                    .map_err(|e| storage::Error::new(ErrorKind::ConnectionClosed, e))?;
                total += n as u64;
                t.add(n as u64);
            }
            output
                .flush()
                .await
                .map_err(|e| storage::Error::new(ErrorKind::ConnectionClosed, e))
        }
        .await;
        match result {
            Ok(()) => {
                tracing::info!(device = %user.id, version = %r.version, file = part_name(r, part), offset = start_pos, bytes = total, "download complete");
                t.finish(Outcome::Complete).await;
                Ok(total)
            }
            Err(e) => {
                tracing::warn!(device = %user.id, version = %r.version, file = part_name(r, part), offset = start_pos, bytes = total, error = %e, "download aborted");
                t.finish(Outcome::Aborted).await;
                Err(e)
            }
        }
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
