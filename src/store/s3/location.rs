//! Where the S3 store keeps things: `s3://bucket/prefix` parsed once, and the object keys of
//! releases and staged uploads under that prefix. Pure: no I/O, no object_store types.
//!
//! ```text
//! <prefix>/releases/<model>/<version>/manifest.json      written first: claims the version
//! <prefix>/releases/<model>/<version>/manifest.json.sig
//! <prefix>/releases/<model>/<version>/<file>
//! <prefix>/incoming/<random>                             uploads being received
//! ```
//! Model, version and file name are validated before they get here (`[a-z0-9-]`, semver,
//! `[A-Za-z0-9._-]` not starting with a dot), so a key can never leave its release's
//! directory; the prefix is held to the same alphabet, segment by segment.

use std::fmt;

use crate::domain::{Model, Version};

/// A bad `store.url`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{url:?}: {why}")]
pub struct InvalidLocation {
    url: String,
    why: &'static str,
}

/// A bucket and a key prefix (no leading or trailing `/`, possibly empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    bucket: String,
    prefix: String,
}

const RELEASES: &str = "releases";
const INCOMING: &str = "incoming";

impl S3Location {
    /// Parses `s3://bucket` or `s3://bucket/prefix[/]`.
    ///
    /// # Errors
    /// Another scheme, a bucket name S3 would refuse (3-63 of `a-z0-9.-`, starting and ending
    /// with a letter or digit), or a prefix with an empty, `.`/`..` or oddly spelled segment.
    pub fn parse(url: &str) -> Result<Self, InvalidLocation> {
        let bad = |why| InvalidLocation {
            url: url.to_owned(),
            why,
        };
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| bad("expected s3://BUCKET/PREFIX"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad("the bucket name is empty"));
        }
        if !valid_bucket(bucket) {
            return Err(bad(
                "bucket names are 3-63 characters of a-z, 0-9, '.' and '-', starting and ending with a letter or digit",
            ));
        }
        let prefix = prefix.strip_suffix('/').unwrap_or(prefix);
        if !prefix.is_empty() && !prefix.split('/').all(valid_segment) {
            return Err(bad(
                "prefix segments are non-empty, not '.' or '..', and use only A-Z, a-z, 0-9, '.', '_' and '-'",
            ));
        }
        Ok(S3Location {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        })
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn key(&self, parts: &[&str]) -> String {
        let mut key = self.prefix.clone();
        for p in parts {
            if !key.is_empty() {
                key.push('/');
            }
            key.push_str(p);
        }
        key
    }

    /// The directory (key prefix, no trailing `/`) of one release's objects.
    pub fn release_dir(&self, model: &Model, version: &Version) -> String {
        self.key(&[RELEASES, model.as_str(), version.as_str()])
    }

    /// One object of a release: its image, `manifest.json` or `manifest.json.sig`.
    pub fn release_key(&self, model: &Model, version: &Version, name: &str) -> String {
        self.key(&[RELEASES, model.as_str(), version.as_str(), name])
    }

    /// The directory (key prefix) of every release.
    pub fn releases_dir(&self) -> String {
        self.key(&[RELEASES])
    }

    /// The release whose claim (`manifest.json`) `key` is; `None` for any other key.
    pub fn claim_of(&self, key: &str) -> Option<(Model, Version)> {
        let rest = key.strip_prefix(&self.releases_dir())?.strip_prefix('/')?;
        let mut parts = rest.split('/');
        let (model, version, name) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || name != fwdist_release::manifest::MANIFEST_NAME {
            return None;
        }
        Some((Model::parse(model).ok()?, Version::parse(version).ok()?))
    }

    /// The directory of staged uploads.
    pub fn incoming_dir(&self) -> String {
        self.key(&[INCOMING])
    }

    /// A staged upload's object; `token` is hex from the store.
    pub fn staging_key(&self, token: &str) -> String {
        self.key(&[INCOMING, token])
    }
}

impl fmt::Display for S3Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix.is_empty() {
            write!(f, "s3://{}", self.bucket)
        } else {
            write!(f, "s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

fn valid_bucket(b: &str) -> bool {
    let edge = |c: Option<u8>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    (3..=63).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
        && edge(b.bytes().next())
        && edge(b.bytes().last())
        && !b.contains("..")
}

fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn release(m: &str, v: &str) -> (Model, Version) {
        (
            Model::parse(m).expect("test model"),
            Version::parse(v).expect("test version"),
        )
    }

    #[test]
    fn only_a_release_claim_names_its_release() {
        let (m, v) = release("iq-gw", "1.2.3");
        for url in ["s3://fwb", "s3://fwb/prod/eu-1"] {
            let loc = S3Location::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            let claim = loc.release_key(&m, &v, "manifest.json");
            assert_eq!(loc.claim_of(&claim), Some((m.clone(), v.clone())), "{claim}");
            for other in [
                loc.release_key(&m, &v, "manifest.json.sig"),
                loc.release_key(&m, &v, "iq.bin"),
                loc.staging_key("00ff"),
                format!("{}/Bad_Model/1.2.3/manifest.json", loc.releases_dir()),
                format!("{}/iq-gw/not-semver/manifest.json", loc.releases_dir()),
                format!("{}/iq-gw/1.2.3/x/manifest.json", loc.releases_dir()),
                format!("{}x/iq-gw/1.2.3/manifest.json", loc.releases_dir()),
            ] {
                assert_eq!(loc.claim_of(&other), None, "{other}");
            }
        }
    }

    #[test]
    fn urls_parse_into_bucket_and_prefix() {
        for (url, bucket, prefix) in [
            ("s3://fw-images", "fw-images", ""),
            ("s3://fw-images/", "fw-images", ""),
            ("s3://fw.images/prod", "fw.images", "prod"),
            ("s3://fwb/prod/eu-1/", "fwb", "prod/eu-1"),
        ] {
            let loc = S3Location::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!((loc.bucket(), loc.prefix()), (bucket, prefix), "{url}");
        }
    }

    #[test]
    fn bad_urls_are_refused_with_the_reason() {
        for (url, why) in [
            ("https://fw/prod", "expected s3://"),
            ("s3:///prod", "bucket name is empty"),
            ("s3://", "bucket name is empty"),
            ("s3://Fw-Images", "bucket names"),
            ("s3://ab", "bucket names"),
            ("s3://-fw", "bucket names"),
            ("s3://fw..x", "bucket names"),
            ("s3://fwb/a//b", "prefix segments"),
            ("s3://fwb/../b", "prefix segments"),
            ("s3://fwb/a b", "prefix segments"),
            ("s3://fwb/a?b", "prefix segments"),
        ] {
            let err = S3Location::parse(url).expect_err(url).to_string();
            assert!(err.contains(why), "{url}: {err}");
        }
    }

    #[test]
    fn keys_sit_under_the_prefix() {
        let (m, v) = release("iq2", "1.2.3+build.5");
        let loc = S3Location::parse("s3://fwb/prod").expect("url");
        assert_eq!(loc.release_dir(&m, &v), "prod/releases/iq2/1.2.3+build.5");
        assert_eq!(
            loc.release_key(&m, &v, "fw.bin"),
            "prod/releases/iq2/1.2.3+build.5/fw.bin"
        );
        assert_eq!(loc.staging_key("ab12"), "prod/incoming/ab12");
        let bare = S3Location::parse("s3://fwb").expect("url");
        assert_eq!(
            bare.release_key(&m, &v, "manifest.json"),
            "releases/iq2/1.2.3+build.5/manifest.json"
        );
        assert_eq!(bare.incoming_dir(), "incoming");
    }

    fn segment() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_-][A-Za-z0-9._-]{0,11}"
    }

    proptest! {
        /// Printing and parsing a location gives it back, and every key of a release lies in
        /// that release's directory, never in another release's or among staged uploads.
        #[test]
        fn locations_round_trip_and_keys_never_collide(
            bucket in "[a-z0-9][a-z0-9-]{1,20}[a-z0-9]",
            prefix in proptest::collection::vec(segment(), 0..4),
            m1 in "[a-z0-9][a-z0-9-]{0,8}", m2 in "[a-z0-9][a-z0-9-]{0,8}",
            v1 in (0u32..20, 0u32..20), v2 in (0u32..20, 0u32..20),
            file in "[A-Za-z0-9_-][A-Za-z0-9._-]{0,20}",
            token in "[0-9a-f]{24}",
        ) {
            let url = format!("s3://{bucket}/{}", prefix.join("/"));
            let loc = S3Location::parse(&url).expect("generated url");
            prop_assert_eq!(S3Location::parse(&loc.to_string()).expect("printed url"), loc.clone());
            let (ma, va) = release(&m1, &format!("{}.{}.0", v1.0, v1.1));
            let (mb, vb) = release(&m2, &format!("{}.{}.0", v2.0, v2.1));
            let key = loc.release_key(&ma, &va, &file);
            let dir = format!("{}/", loc.release_dir(&ma, &va));
            prop_assert!(key.starts_with(&dir));
            prop_assert!(!key[dir.len()..].contains('/'));
            let other_dir = loc.release_dir(&mb, &vb) + "/";
            if (&ma, &va) != (&mb, &vb) {
                prop_assert!(!key.starts_with(&other_dir));
            }
            let incoming = loc.incoming_dir() + "/";
            prop_assert!(!key.starts_with(&incoming));
            prop_assert!(loc.staging_key(&token).starts_with(&incoming));
            let prefix = loc.prefix().to_owned() + "/";
            if !loc.prefix().is_empty() {
                prop_assert!(key.starts_with(&prefix));
            }
        }
    }
}
