//! The built-in probe account's tree (see [`crate::probe`]): `/` holding the probe file,
//! served from memory and never recorded as a download.

use std::path::Path;
use std::time::UNIX_EPOCH;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use unftp_core::storage;

use super::view::{Meta, dir_meta};
use super::{closed, not_found};

/// The probe account's whole tree: `/` holding `probe.bin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ProbeNode {
    Root,
    File,
}

pub(super) fn probe_node(path: &Path) -> Option<ProbeNode> {
    match path.to_str()?.trim_start_matches('/') {
        "" | "." => Some(ProbeNode::Root),
        f if f == crate::probe::FILE => Some(ProbeNode::File),
        _ => None,
    }
}

pub(super) fn probe_meta(n: ProbeNode) -> Meta {
    match n {
        ProbeNode::Root => dir_meta(UNIX_EPOCH),
        ProbeNode::File => Meta {
            len: crate::probe::SIZE as u64,
            dir: false,
            modified: UNIX_EPOCH,
        },
    }
}

pub(super) fn probe_from(start: u64) -> &'static [u8] {
    let b = crate::probe::cached();
    &b[usize::try_from(start).unwrap_or(usize::MAX).min(b.len())..]
}

/// RETR of the probe file from `start`: writes and flushes it, returns the bytes written.
pub(super) async fn probe_into<W>(path: &Path, start: u64, output: &mut W) -> storage::Result<u64>
where
    W: AsyncWrite + Unpin + Send + ?Sized,
{
    if probe_node(path) != Some(ProbeNode::File) {
        return Err(not_found());
    }
    let bytes = probe_from(start);
    output.write_all(bytes).await.map_err(closed)?;
    output.flush().await.map_err(closed)?;
    Ok(bytes.len() as u64)
}
