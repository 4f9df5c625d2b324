//! `[store]` for object storage: `store.url = "s3://…"` and how to reach the bucket, from the
//! config keys first and the usual `AWS_*` variables after (SPEC §13), checked at startup.

use super::{ConfigError, StoreConfig, invalid};
use crate::secret::Secret;
use crate::store::s3::{S3Location, S3Settings};

impl StoreConfig {
    /// The object storage settings when `url` is set (`None`: the local store): the
    /// `[store]` keys first, then the usual `AWS_*` variables.
    ///
    /// # Errors
    /// A bad url or endpoint, S3 keys without `url`, half a key pair, or no credentials.
    pub fn s3(&self) -> Result<Option<S3Settings>, ConfigError> {
        self.s3_with_env(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    fn s3_with_env(&self, env: impl Fn(&str) -> Option<String>) -> Result<Option<S3Settings>, ConfigError> {
        let Some(url) = &self.url else {
            let set = [
                ("store.endpoint", self.endpoint.is_some()),
                ("store.region", self.region.is_some()),
                ("store.access_key_id", self.access_key_id.is_some()),
                ("store.secret_access_key", self.secret_access_key.is_some()),
            ];
            if let Some((key, _)) = set.into_iter().find(|(_, set)| *set) {
                return Err(invalid(
                    key,
                    "is only read with store.url = \"s3://BUCKET/PREFIX\"",
                ));
            }
            return Ok(None);
        };
        let location = S3Location::parse(url).map_err(|e| invalid("store.url", e.to_string()))?;
        let endpoint = match &self.endpoint {
            Some(e) => Some(e.clone()),
            None => env("AWS_ENDPOINT_URL_S3").or_else(|| env("AWS_ENDPOINT_URL")),
        };
        if let Some(e) = &endpoint {
            check_endpoint(e)?;
        }
        let region = match &self.region {
            Some(r) => r.clone(),
            None => env("AWS_REGION")
                .or_else(|| env("AWS_DEFAULT_REGION"))
                .unwrap_or_else(|| "us-east-1".into()),
        };
        if region.is_empty() || !region.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-') {
            return Err(invalid(
                "store.region",
                format!("{region:?}: expected a region name like eu-west-1"),
            ));
        }
        let (access_key_id, secret_access_key, session_token) =
            match (&self.access_key_id, &self.secret_access_key) {
                (Some(id), Some(secret)) => (id.clone(), secret.clone(), None),
                (Some(_), None) => {
                    return Err(invalid(
                        "store.secret_access_key",
                        "must be set with store.access_key_id",
                    ));
                }
                (None, Some(_)) => {
                    return Err(invalid(
                        "store.access_key_id",
                        "must be set with store.secret_access_key",
                    ));
                }
                (None, None) => match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
                    (Some(id), Some(secret)) => (
                        id,
                        Secret::from_client(secret),
                        env("AWS_SESSION_TOKEN").map(Secret::from_client),
                    ),
                    _ => {
                        return Err(invalid(
                            "store.access_key_id",
                            "no S3 credentials: set store.access_key_id and store.secret_access_key, \
                         or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
                        ));
                    }
                },
            };
        if access_key_id.is_empty() || secret_access_key.expose().is_empty() {
            return Err(invalid(
                "store.access_key_id",
                "the S3 key id and secret must not be empty",
            ));
        }
        Ok(Some(S3Settings {
            location,
            endpoint,
            region,
            access_key_id,
            secret_access_key,
            session_token,
        }))
    }
}

/// An endpoint is `http(s)://host[:port][/]`: no path (requests are path-style under it),
/// and never credentials in the URL, which would end up in logs.
fn check_endpoint(e: &str) -> Result<(), ConfigError> {
    let key = "store.endpoint";
    // First, so that no message below echoes a URL with a password in it.
    if e.contains('@') {
        return Err(invalid(
            key,
            "must not carry credentials; use store.access_key_id and store.secret_access_key",
        ));
    }
    let Some(rest) = e.strip_prefix("https://").or_else(|| e.strip_prefix("http://")) else {
        return Err(invalid(key, format!("{e:?}: expected http(s)://HOST[:PORT]")));
    };
    let host = rest.strip_suffix('/').unwrap_or(rest);
    if host.is_empty() || host.contains(['/', '?', '#', ' ']) {
        return Err(invalid(
            key,
            format!("{e:?}: expected http(s)://HOST[:PORT], without a path"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn store(url: &str) -> StoreConfig {
        StoreConfig {
            url: Some(url.into()),
            ..StoreConfig::default()
        }
    }

    fn resolve(c: &StoreConfig, env: &[(&str, &str)]) -> Result<Option<S3Settings>, ConfigError> {
        let env: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        c.s3_with_env(|k| env.get(k).cloned())
    }

    #[test]
    fn the_local_store_needs_no_s3_keys_and_refuses_stray_ones() {
        assert!(
            resolve(&StoreConfig::default(), &[("AWS_ACCESS_KEY_ID", "x")])
                .unwrap()
                .is_none()
        );
        let c = StoreConfig {
            endpoint: Some("http://127.0.0.1:8333".into()),
            ..StoreConfig::default()
        };
        let e = resolve(&c, &[]).unwrap_err().to_string();
        assert!(
            e.contains("store.endpoint") && e.contains("only read with store.url"),
            "{e}"
        );
    }

    #[test]
    fn config_keys_come_before_the_aws_variables() {
        let mut c = store("s3://fw-images/prod");
        c.endpoint = Some("http://127.0.0.1:8333".into());
        c.access_key_id = Some("cfg-id".into());
        c.secret_access_key = Some(Secret::from_client("cfg-secret"));
        let env = [
            ("AWS_ACCESS_KEY_ID", "env-id"),
            ("AWS_SECRET_ACCESS_KEY", "env-secret"),
            ("AWS_REGION", "eu-west-1"),
            ("AWS_ENDPOINT_URL", "https://s3.example.com"),
        ];
        let s = resolve(&c, &env).unwrap().unwrap();
        assert_eq!((s.location.bucket(), s.location.prefix()), ("fw-images", "prod"));
        assert_eq!(s.endpoint.as_deref(), Some("http://127.0.0.1:8333"));
        assert_eq!(s.region, "eu-west-1");
        assert_eq!(
            (s.access_key_id.as_str(), s.secret_access_key.expose()),
            ("cfg-id", "cfg-secret")
        );
        assert!(s.session_token.is_none());
        let debug = format!("{s:?} {c:?}");
        assert!(!debug.contains("cfg-secret"), "{debug}");
        assert!(!format!("{s:?}").contains("cfg-id"), "{s:?}");

        let s = resolve(&store("s3://fw-images"), &env).unwrap().unwrap();
        assert_eq!(s.endpoint.as_deref(), Some("https://s3.example.com"));
        assert_eq!(
            (s.access_key_id.as_str(), s.secret_access_key.expose()),
            ("env-id", "env-secret")
        );
        let s = resolve(
            &store("s3://fw-images"),
            &[("AWS_ACCESS_KEY_ID", "a"), ("AWS_SECRET_ACCESS_KEY", "b")],
        )
        .unwrap()
        .unwrap();
        assert_eq!((s.region.as_str(), s.endpoint), ("us-east-1", None));
    }

    #[test]
    fn bad_combinations_are_refused_naming_the_key() {
        let creds: &[(&str, &str)] = &[("AWS_ACCESS_KEY_ID", "a"), ("AWS_SECRET_ACCESS_KEY", "b")];
        let none: &[(&str, &str)] = &[];
        let half = StoreConfig {
            access_key_id: Some("id".into()),
            ..store("s3://fw-images")
        };
        // (config, environment, key named, reason given)
        type Case<'a> = (StoreConfig, &'a [(&'a str, &'a str)], &'a str, &'a str);
        let cases: Vec<Case> = vec![
            (
                store("https://fw-images/prod"),
                creds,
                "store.url",
                "expected s3://",
            ),
            (store("s3:///prod"), creds, "store.url", "bucket name is empty"),
            (
                store("s3://fw-images"),
                none,
                "store.access_key_id",
                "no S3 credentials",
            ),
            (
                store("s3://fw-images"),
                &creds[..1],
                "store.access_key_id",
                "no S3 credentials",
            ),
            (
                half,
                creds,
                "store.secret_access_key",
                "must be set with store.access_key_id",
            ),
            (
                StoreConfig {
                    endpoint: Some("ftp://127.0.0.1".into()),
                    ..store("s3://fw-images")
                },
                creds,
                "store.endpoint",
                "expected http(s)://",
            ),
            (
                StoreConfig {
                    endpoint: Some("https://key:secret@s3.example.com".into()),
                    ..store("s3://fw-images")
                },
                creds,
                "store.endpoint",
                "must not carry credentials",
            ),
            (
                StoreConfig {
                    endpoint: Some("http://127.0.0.1:8333/bucket".into()),
                    ..store("s3://fw-images")
                },
                creds,
                "store.endpoint",
                "without a path",
            ),
            (
                StoreConfig {
                    region: Some("eu west".into()),
                    ..store("s3://fw-images")
                },
                creds,
                "store.region",
                "region name",
            ),
        ];
        for (c, env, key, why) in cases {
            let e = resolve(&c, env).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains(why), "{c:?}: {e}");
            assert!(!e.contains("secret@"), "{e}");
        }
    }

    #[test]
    fn root_and_url_together_are_refused_but_url_alone_loads() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("fwdist.toml");
        let keys = "access_key_id = \"k\"\nsecret_access_key = \"s\"\n";
        std::fs::write(
            &file,
            format!("[store]\nroot = \"x\"\nurl = \"s3://fw-images\"\n{keys}"),
        )
        .unwrap();
        let e = crate::config::Config::load(Some(&file)).unwrap_err().to_string();
        assert!(e.contains("store.root") && e.contains("not both"), "{e}");
        std::fs::write(&file, format!("[store]\nurl = \"s3://fw-images/p\"\n{keys}")).unwrap();
        let c = crate::config::Config::load(Some(&file)).unwrap();
        assert_eq!(
            c.store.s3().unwrap().unwrap().location.to_string(),
            "s3://fw-images/p"
        );
    }
}
