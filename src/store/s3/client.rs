//! How the S3 store talks to its bucket: the settings resolved from configuration, and the
//! object_store clients built from them, each request with a deadline and bounded retries.

use std::fmt;
use std::io;
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder, S3ConditionalPut, S3CopyIfNotExists};
use object_store::{BackoffConfig, ClientOptions, RetryConfig};

use super::{CONNECT_TIMEOUT, S3Location};
use crate::secret::Secret;
use crate::store::StoreError;

/// How to reach the bucket, resolved from `[store]` and the `AWS_*` variables by the config.
#[derive(Clone)]
pub struct S3Settings {
    pub location: S3Location,
    /// `http(s)://host[:port]` of an S3-compatible service; `None` for AWS itself. Plain
    /// `http` is used only when it is spelled out here.
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
}

impl fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // No credential, not even the key id, is ever printed.
        f.debug_struct("S3Settings")
            .field("location", &self.location.to_string())
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

/// The deadlines of one client: connect, and the whole request from connect to last byte.
pub fn client_options(request: Duration) -> ClientOptions {
    ClientOptions::new()
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_timeout(request)
        .with_pool_idle_timeout(Duration::from_secs(30))
}

/// Bounded retries of transient failures (5xx, throttling, cut connections), idempotent
/// requests only: at most 3 more tries within 30 s.
pub fn retry_config() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: 3,
        retry_timeout: Duration::from_secs(30),
    }
}

pub(super) fn client(s: &S3Settings, request: Duration) -> Result<AmazonS3, StoreError> {
    let mut b = AmazonS3Builder::new()
        .with_bucket_name(s.location.bucket())
        .with_region(&s.region)
        .with_access_key_id(&s.access_key_id)
        .with_secret_access_key(s.secret_access_key.expose())
        .with_client_options(client_options(request))
        .with_retry(retry_config())
        .with_conditional_put(S3ConditionalPut::ETagMatch)
        .with_copy_if_not_exists(S3CopyIfNotExists::Header("If-None-Match".into(), "*".into()));
    if let Some(token) = &s.session_token {
        b = b.with_token(token.expose());
    }
    if let Some(endpoint) = &s.endpoint {
        // Path-style requests: S3-compatible services rarely have a DNS name per bucket.
        b = b
            .with_endpoint(endpoint)
            .with_allow_http(endpoint.starts_with("http://"))
            .with_virtual_hosted_style_request(false);
    }
    b.build().map_err(|e| StoreError::Io {
        what: format!("the S3 client for {}", s.location),
        source: io::Error::other(e),
    })
}
