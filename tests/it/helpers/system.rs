//! Tests that need the machine itself (root, system daemons, user accounts, network tools).
//!
//! Such a test lists what it needs in a [`Requirements`] and asks [`Requirements::met`]. When
//! something is missing it is skipped (`skipped: <reason>` on stderr, the test passes) so that
//! `cargo test` works on a developer laptop — unless `FWDIST_SYSTEM_TESTS=require` is set, as
//! CI does, and then it fails naming what is missing: CI can never skip one silently.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// Set to `require` to turn a skipped system test into a failure.
pub const ENV: &str = "FWDIST_SYSTEM_TESTS";

/// Where programs are looked for besides `PATH`: a non-login root shell often lacks sbin.
const SBIN: [&str; 4] = ["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin"];

#[derive(Debug, Default)]
pub struct Requirements {
    missing: Vec<String>,
}

impl Requirements {
    pub fn new() -> Self {
        Self::default()
    }

    /// The test runs as root (effective uid 0).
    pub fn root(&mut self) -> &mut Self {
        let euid = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
        if euid != Some(0) {
            let who = euid.map_or_else(|| "unknown".to_owned(), |u| u.to_string());
            self.missing.push(format!("root (running as uid {who})"));
        }
        self
    }

    /// An executable: an absolute path as given, or a name searched in `PATH` and the sbin
    /// directories. Returns where it is (the name itself when missing, recorded as such).
    pub fn program(&mut self, name: &str) -> PathBuf {
        match find_program(name) {
            Some(path) => path,
            None => {
                self.missing.push(format!("the program {name}"));
                PathBuf::from(name)
            }
        }
    }

    /// A file that must exist, e.g. a PAM service; `what` says what it is for.
    pub fn file(&mut self, path: &str, what: &str) -> &mut Self {
        if !Path::new(path).exists() {
            self.missing.push(format!("{path} ({what})"));
        }
        self
    }

    /// An environment variable that must be set (a service the test uses); `what` says what.
    pub fn env(&mut self, name: &str, what: &str) -> &mut Self {
        if std::env::var_os(name).is_none() {
            self.missing.push(format!("{name} ({what})"));
        }
        self
    }

    /// True when everything is there. Otherwise prints `skipped: <reason>` and returns false,
    /// or panics when `FWDIST_SYSTEM_TESTS=require`.
    pub fn met(&self, test: &str) -> bool {
        if self.missing.is_empty() {
            return true;
        }
        let reason = format!("{test} needs {}", self.missing.join(", "));
        if std::env::var(ENV).is_ok_and(|v| v == "require") {
            panic!("{ENV}=require, but {reason}");
        }
        eprintln!("skipped: {reason} (set {ENV}=require to make this a failure)");
        false
    }
}

fn find_program(name: &str) -> Option<PathBuf> {
    let executable =
        |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if name.contains('/') {
        let p = PathBuf::from(name);
        return executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SBIN.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| executable(p))
}
