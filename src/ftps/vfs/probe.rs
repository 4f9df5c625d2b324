//! The built-in probe account's tree (see [`fwdist_release::probe`]): `/` holding the probe file,
//! served from memory and never recorded as a download.

use std::path::Path;
use std::time::UNIX_EPOCH;

use super::view::{Meta, dir_meta};

/// The probe account's whole tree: `/` holding `probe.bin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ProbeNode {
    Root,
    File,
}

pub(super) fn probe_node(path: &Path) -> Option<ProbeNode> {
    match path.to_str()?.trim_start_matches('/') {
        "" | "." => Some(ProbeNode::Root),
        f if f == fwdist_release::probe::FILE => Some(ProbeNode::File),
        _ => None,
    }
}

pub(super) fn probe_meta(n: ProbeNode) -> Meta {
    match n {
        ProbeNode::Root => dir_meta(UNIX_EPOCH),
        ProbeNode::File => Meta {
            len: fwdist_release::probe::SIZE as u64,
            dir: false,
            modified: UNIX_EPOCH,
        },
    }
}

pub(super) fn probe_from(start: u64) -> &'static [u8] {
    let b = fwdist_release::probe::cached();
    &b[usize::try_from(start).unwrap_or(usize::MAX).min(b.len())..]
}
