//! The built-in probe account's tree (see [`fwdist_release::probe`]): `/` holding the probe
//! file, served from memory and never recorded as a download. It shares nothing with the
//! device tree but the metadata type.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use unftp_core::storage::{self, ErrorKind, Fileinfo};

use super::view::{Meta, dir_meta};
use super::{Retr, RetrError, not_found};
use crate::ftps::data::Pending;

/// The probe account's whole tree: `/` holding `probe.bin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Root,
    File,
}

fn node(path: &Path) -> Option<Node> {
    match path.to_str()?.trim_start_matches('/') {
        "" | "." => Some(Node::Root),
        f if f == fwdist_release::probe::FILE => Some(Node::File),
        _ => None,
    }
}

fn meta(n: Node) -> Meta {
    match n {
        Node::Root => dir_meta(UNIX_EPOCH),
        Node::File => Meta {
            len: fwdist_release::probe::SIZE as u64,
            dir: false,
            modified: UNIX_EPOCH,
        },
    }
}

fn bytes_from(start: u64) -> &'static [u8] {
    let b = fwdist_release::probe::cached();
    &b[usize::try_from(start).unwrap_or(usize::MAX).min(b.len())..]
}

pub(super) fn metadata(path: &Path) -> storage::Result<Meta> {
    node(path).map(meta).ok_or_else(not_found)
}

pub(super) fn list(path: &Path) -> storage::Result<Vec<Fileinfo<PathBuf, Meta>>> {
    node(path).ok_or_else(not_found)?;
    Ok(vec![Fileinfo {
        path: PathBuf::from(fwdist_release::probe::FILE),
        metadata: meta(Node::File),
    }])
}

pub(super) fn cwd(path: &Path) -> storage::Result<()> {
    match node(path) {
        Some(Node::Root) => Ok(()),
        _ => Err(storage::Error::from(ErrorKind::PermanentDirectoryNotAvailable)),
    }
}

pub(super) fn retr(path: &Path, offset: u64) -> Result<Retr, RetrError> {
    if node(path) != Some(Node::File) {
        return Err(RetrError::NotFound);
    }
    let bytes = bytes_from(offset);
    if bytes.is_empty() {
        return Err(RetrError::PastEnd {
            size: fwdist_release::probe::SIZE as u64,
        });
    }
    Ok(Retr {
        len: bytes.len() as u64,
        reader: Box::new(Cursor::new(bytes)),
        record: Pending::new(None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_root_and_the_probe_file_exist() {
        assert!(cwd(Path::new("/")).is_ok());
        assert!(cwd(Path::new("/probe.bin")).is_err());
        assert!(metadata(Path::new("/target")).is_err());
        assert_eq!(
            metadata(Path::new("/probe.bin")).map(|m| m.len).ok(),
            Some(fwdist_release::probe::SIZE as u64)
        );
        assert!(matches!(
            retr(Path::new("/releases"), 0),
            Err(RetrError::NotFound)
        ));
        assert!(matches!(
            retr(Path::new("/probe.bin"), fwdist_release::probe::SIZE as u64),
            Err(RetrError::PastEnd { .. })
        ));
        let r = retr(Path::new("probe.bin"), 10).unwrap_or_else(|_| unreachable!());
        assert_eq!(r.len, fwdist_release::probe::SIZE as u64 - 10);
    }
}
