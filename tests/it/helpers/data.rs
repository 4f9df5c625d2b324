//! Test data: deterministic images, hashes, directory snapshots, timestamps.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Deterministic pseudo-random bytes (xorshift64*), so images never compress or collide.
pub fn image(size: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(size + 8);
    while out.len() < size {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(size);
    out
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Every file under `root` (recursively) with its sha256, skipping the SQLite files.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if !entry.file_name().to_string_lossy().starts_with("fwdist.sqlite") {
                out.insert(path.clone(), sha256_hex(&fs::read(&path).unwrap_or_default()));
            }
        }
    }
    out
}

/// Parses an RFC 3339 timestamp, panicking with `what` if it is not one.
pub fn rfc3339(v: &Value, what: &str) -> time::OffsetDateTime {
    let s = v.as_str().unwrap_or_else(|| panic!("{what}: not a string: {v}"));
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{what}: {s:?} is not RFC 3339: {e}"))
}
