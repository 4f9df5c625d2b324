//! The virtual tree an IQ sees (SPEC §4), as pure path resolution.
//!
//! ```text
//! /target/manifest.json
//! /target/manifest.json.sig
//! /releases/<version>/manifest.json
//! /releases/<version>/manifest.json.sig
//! /releases/<version>/<file>
//! /report.json                      write-only: the IQ's install report (SPEC §7)
//! ```
//! libunftp hands us `cwd.join(arg)` without normalising it, so `..` is resolved here one
//! component at a time and clamped at the root: nothing can climb out of the tree, and a
//! path that names nothing in it resolves to `None` (550). Names are never used to build a
//! host path; the backend looks them up among the device's releases.

use std::path::{Component, Path};

use fwdist_release::manifest::{MANIFEST_NAME, SIGNATURE_NAME};

/// A node of the virtual tree, before checking it against the device's releases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Root,
    TargetDir,
    /// `manifest.json` or `manifest.json.sig` of the target release.
    TargetFile(MetaFile),
    ReleasesDir,
    VersionDir(String),
    /// A file in `/releases/<version>/`: a manifest file or the image (by name).
    ReleaseFile(String, ReleaseFile),
    /// `/report.json`, the one path a device may write (SPEC §7); never listed or read.
    Report,
}

/// The name of the install report an IQ uploads to the root of its tree.
pub const REPORT_NAME: &str = "report.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaFile {
    Manifest,
    Signature,
}

impl MetaFile {
    pub fn name(self) -> &'static str {
        match self {
            MetaFile::Manifest => MANIFEST_NAME,
            MetaFile::Signature => SIGNATURE_NAME,
        }
    }

    fn from_name(s: &str) -> Option<Self> {
        match s {
            MANIFEST_NAME => Some(MetaFile::Manifest),
            SIGNATURE_NAME => Some(MetaFile::Signature),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseFile {
    Meta(MetaFile),
    /// Any other name: it is the image only if it equals the manifest's `file`.
    Image(String),
}

/// Normalises `path` (absolute or relative to `/`) into components, resolving `.` and `..`
/// (clamped at the root). `None` for a component that is not UTF-8.
pub fn normalise(path: &Path) -> Option<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::Prefix(_) => out.clear(),
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(s) => out.push(s.to_str()?.to_owned()),
        }
    }
    Some(out)
}

/// Resolves a path into a node of the tree, or `None` when it names nothing there.
pub fn resolve(path: &Path) -> Option<Node> {
    let parts = normalise(path)?;
    let p: Vec<&str> = parts.iter().map(String::as_str).collect();
    match p.as_slice() {
        [] => Some(Node::Root),
        ["target"] => Some(Node::TargetDir),
        ["target", f] => MetaFile::from_name(f).map(Node::TargetFile),
        ["releases"] => Some(Node::ReleasesDir),
        [REPORT_NAME] => Some(Node::Report),
        ["releases", v] => Some(Node::VersionDir((*v).to_owned())),
        ["releases", v, f] => {
            let file = match MetaFile::from_name(f) {
                Some(m) => ReleaseFile::Meta(m),
                None => ReleaseFile::Image((*f).to_owned()),
            };
            Some(Node::ReleaseFile((*v).to_owned(), file))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn r(s: &str) -> Option<Node> {
        resolve(Path::new(s))
    }

    #[test]
    fn the_tree() {
        assert_eq!(r("/"), Some(Node::Root));
        assert_eq!(r(""), Some(Node::Root));
        assert_eq!(r("/target"), Some(Node::TargetDir));
        assert_eq!(
            r("/target/manifest.json"),
            Some(Node::TargetFile(MetaFile::Manifest))
        );
        assert_eq!(
            r("target/manifest.json.sig"),
            Some(Node::TargetFile(MetaFile::Signature))
        );
        assert_eq!(r("/target/firmware.bin"), None);
        assert_eq!(r("/releases/1.0.0"), Some(Node::VersionDir("1.0.0".into())));
        assert_eq!(
            r("/releases/1.0.0/firmware.bin"),
            Some(Node::ReleaseFile(
                "1.0.0".into(),
                ReleaseFile::Image("firmware.bin".into())
            ))
        );
        assert_eq!(r("/releases/1.0.0/x/y"), None);
        assert_eq!(r("/etc/passwd"), None);
        assert_eq!(r("/report.json"), Some(Node::Report));
        assert_eq!(r("/target/../report.json"), Some(Node::Report));
        assert_eq!(
            r("/releases/report.json"),
            Some(Node::VersionDir("report.json".into()))
        );
    }

    #[test]
    fn dot_dot_is_clamped_at_the_root() {
        assert_eq!(r("/../../../etc/passwd"), None);
        assert_eq!(r("/releases/../../target"), Some(Node::TargetDir));
        assert_eq!(r("/releases/1.0.0/../../../../fwdist.sqlite"), None);
        assert_eq!(
            r("/target/./../releases/./1.0.0"),
            Some(Node::VersionDir("1.0.0".into()))
        );
        // Odd encodings are just names that match nothing.
        assert_eq!(r("/%2e%2e/%2e%2e/etc/passwd"), None);
        assert_eq!(r("/..\\..\\etc\\passwd"), None);
    }

    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("..".to_owned()),
            Just(".".to_owned()),
            Just("".to_owned()),
            Just("target".to_owned()),
            Just("releases".to_owned()),
            Just("1.0.0".to_owned()),
            Just("manifest.json".to_owned()),
            Just("firmware-store".to_owned()),
            Just("fwdist.sqlite".to_owned()),
            "[a-zA-Z0-9.%\\\\-]{1,8}",
            "\\PC{1,6}",
        ]
    }

    proptest! {
        /// Whatever the path, the result is a node of the fixed tree, and resolving is the
        /// same as resolving the normalised path from the root: `..` never reaches outside.
        #[test]
        fn no_path_escapes_the_tree(segs in proptest::collection::vec(segment(), 0..10), abs in any::<bool>()) {
            let s = format!("{}{}", if abs { "/" } else { "" }, segs.join("/"));
            let node = resolve(Path::new(&s));
            if let Some(parts) = normalise(Path::new(&s)) {
                prop_assert!(parts.iter().all(|p| p != ".." && p != "." && !p.is_empty()));
                let rebuilt = format!("/{}", parts.join("/"));
                prop_assert_eq!(resolve(Path::new(&rebuilt)), node.clone());
                if let Some(n) = node {
                    let depth_ok = match &n {
                        Node::Root => parts.is_empty(),
                        Node::Report => parts == [REPORT_NAME],
                        Node::TargetDir | Node::ReleasesDir => parts.len() == 1,
                        Node::TargetFile(_) | Node::VersionDir(_) => parts.len() == 2,
                        Node::ReleaseFile(..) => parts.len() == 3 && parts[0] == "releases",
                    };
                    prop_assert!(depth_ok, "{:?} from {:?}", n, s);
                }
            }
        }
    }
}
