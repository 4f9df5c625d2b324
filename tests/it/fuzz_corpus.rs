//! The fuzz corpus as a regression suite: every file committed under `fuzz/corpus/<target>/`
//! goes through that target's check (`fwdist::fuzzing`), the same function cargo-fuzz runs,
//! so a reproducer committed there fails `cargo test` if its bug comes back. No server.

use std::path::{Path, PathBuf};

use fwdist::fuzzing::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

#[test]
fn every_corpus_file_passes_its_targets_check() {
    let mut total = 0;
    for (name, check) in TARGETS {
        let corpus = files(&fuzz_dir().join("corpus").join(name));
        assert!(!corpus.is_empty(), "fuzz/corpus/{name} has no seeds");
        for f in &corpus {
            let data = std::fs::read(f).unwrap();
            if std::panic::catch_unwind(|| check(&data)).is_err() {
                panic!("{name}: {} fails its check", f.display());
            }
        }
        total += corpus.len();
    }
    assert!(total >= TARGETS.len());
}

/// Every target in the library has its cargo-fuzz file, calling it, and nothing else is there.
#[test]
fn every_target_has_its_fuzz_file_and_no_other_is_there() {
    let dir = fuzz_dir().join("fuzz_targets");
    let mut on_disk: Vec<String> = files(&dir)
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut named: Vec<String> = TARGETS.iter().map(|(n, _)| (*n).to_owned()).collect();
    named.sort();
    assert_eq!(on_disk, named);
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    for (name, check) in TARGETS {
        let _ = check;
        let src = std::fs::read_to_string(dir.join(format!("{name}.rs"))).unwrap();
        assert!(
            src.contains("fwdist::fuzzing::"),
            "{name}.rs does not call the library's check"
        );
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "fuzz/Cargo.toml has no [[bin]] {name}"
        );
    }
}
