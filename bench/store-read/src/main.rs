//! Reads the same published image through fwdist's `FsStore::open_range` and through
//! unftp-sbe-fs's `Filesystem::get` (the backend fwdist's device tree could have wrapped),
//! alternating rounds, and prints MiB/s for a large file and µs per open-and-read for a
//! small one. Usage: `store-read ROOT LARGE_REL SMALL_REL ROUNDS` (paths relative to ROOT,
//! as `releases/<model>/<version>/<file>`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use fwdist::domain::{Model, Version};
use fwdist::store::{FileRef, FsStore, ReleaseStore};
use tokio::io::AsyncRead;
use unftp_core::auth::UserDetail;
use unftp_core::storage::StorageBackend;

#[derive(Debug)]
struct User;

impl std::fmt::Display for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("bench")
    }
}

impl UserDetail for User {}

async fn drain(mut r: impl AsyncRead + Unpin) -> u64 {
    tokio::io::copy(&mut r, &mut tokio::io::sink())
        .await
        .expect("read")
}

fn parts(rel: &str) -> (Model, Version, String) {
    let p: Vec<&str> = rel.split('/').collect();
    assert!(
        p.len() == 4 && p[0] == "releases",
        "expected releases/<model>/<version>/<file>"
    );
    (
        Model::parse(p[1]).expect("model"),
        Version::parse(p[2]).expect("version"),
        p[3].to_owned(),
    )
}

async fn fwdist_read(store: &Arc<dyn ReleaseStore>, rel: &str, len: u64) -> u64 {
    let (model, version, file) = parts(rel);
    let f = FileRef {
        model: &model,
        version: &version,
        file: &file,
    };
    drain(store.open_range(f, 0, len).await.expect("open_range")).await
}

async fn sbe_read(fs: &unftp_sbe_fs::Filesystem, rel: &str) -> u64 {
    drain(fs.get(&User, Path::new(rel), 0).await.expect("get")).await
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    assert!(
        args.len() == 5,
        "usage: store-read ROOT LARGE_REL SMALL_REL ROUNDS"
    );
    let root = PathBuf::from(&args[1]);
    let (large, small) = (&args[2], &args[3]);
    let rounds: usize = args[4].parse().expect("rounds");
    let large_len = std::fs::metadata(root.join(large)).expect("large").len();
    let small_len = std::fs::metadata(root.join(small)).expect("small").len();
    let store: Arc<dyn ReleaseStore> = Arc::new(FsStore::open(&root).await.expect("store"));
    let sbe = unftp_sbe_fs::Filesystem::new(&root).expect("unftp-sbe-fs");
    const LARGE_READS: usize = 20;
    const SMALL_READS: usize = 2000;
    println!("round  store         large MiB/s  small µs/read");
    for round in 1..=rounds {
        for name in ["fwdist FsStore", "unftp-sbe-fs"] {
            let t = Instant::now();
            for _ in 0..LARGE_READS {
                let n = match name {
                    "unftp-sbe-fs" => sbe_read(&sbe, large).await,
                    _ => fwdist_read(&store, large, large_len).await,
                };
                assert_eq!(n, large_len);
            }
            let mib_s = (large_len as f64 * LARGE_READS as f64 / 1048576.0) / t.elapsed().as_secs_f64();
            let t = Instant::now();
            for _ in 0..SMALL_READS {
                let n = match name {
                    "unftp-sbe-fs" => sbe_read(&sbe, small).await,
                    _ => fwdist_read(&store, small, small_len).await,
                };
                assert_eq!(n, small_len);
            }
            let us = t.elapsed().as_secs_f64() * 1e6 / SMALL_READS as f64;
            println!("{round:>5}  {name:<14}{mib_s:>12.0}  {us:>13.1}");
        }
    }
}
