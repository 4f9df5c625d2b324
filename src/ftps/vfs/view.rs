//! What a device sees: its servable releases and current target read once per command
//! ([`View`]), how a resolved [`Node`] maps onto them ([`Found`], [`Part`]), and the
//! libunftp metadata ([`Meta`]) for the directories and files of that tree.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use unftp_core::storage::{self, Permissions};

use super::{DeviceVfs, local, not_found};
use crate::db::DbError;
use crate::db::releases::ReleaseRow;
use crate::domain::Version;
use crate::ftps::path::{MetaFile, Node, ReleaseFile, resolve};
use crate::ftps::principal::DeviceLogin;

#[derive(Debug, Clone)]
pub struct Meta {
    pub(super) len: u64,
    pub(super) dir: bool,
    pub(super) modified: SystemTime,
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

pub(super) fn dir_meta(modified: SystemTime) -> Meta {
    Meta {
        len: 0,
        dir: true,
        modified,
    }
}

/// Which bytes of a release a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Part {
    Meta(MetaFile),
    Image,
}

/// The device's releases and current target, read once per command.
pub(super) struct View {
    releases: Vec<ReleaseRow>,
    target: Option<Version>,
}

pub(super) enum Found<'a> {
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

    pub(super) fn lookup(&self, node: &Node) -> Option<Found<'_>> {
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
            // Write-only: nothing to list or read there.
            Node::Report => None,
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

pub(super) fn part_name(r: &ReleaseRow, p: Part) -> &str {
    match p {
        Part::Meta(m) => m.name(),
        Part::Image => &r.file,
    }
}

pub(super) fn part_bytes(r: &ReleaseRow, m: MetaFile) -> &[u8] {
    match m {
        MetaFile::Manifest => &r.manifest,
        MetaFile::Signature => &r.signature,
    }
}

pub(super) fn file_meta(r: &ReleaseRow, p: Part) -> Meta {
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

impl DeviceVfs {
    pub(super) async fn view(&self, user: &DeviceLogin) -> Result<View, DbError> {
        let d = self.shared.targeting.releases_for(&user.id, &user.model).await?;
        Ok(View {
            releases: d.releases,
            target: d.target,
        })
    }

    pub(super) async fn found<T>(
        &self,
        user: &DeviceLogin,
        path: &Path,
        f: impl FnOnce(Found<'_>) -> storage::Result<T>,
    ) -> storage::Result<T> {
        let node = resolve(path).ok_or_else(not_found)?;
        let view = self.view(user).await.map_err(local)?;
        let found = view.lookup(&node).ok_or_else(not_found)?;
        f(found)
    }
}
