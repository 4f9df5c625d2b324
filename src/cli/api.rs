//! The admin API as the operator commands reach it (SPEC §12): `--server URL` (env
//! `FWDIST_SERVER`), `--token T` (env `FWDIST_TOKEN`), HTTPS trusted through the system's roots
//! or `--ca FILE`; every wait bounded. An answer of 4xx/5xx becomes one error line carrying
//! the status and the API's own `error` text.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use fwdist_iq::doctor::roots::TrustRoots;

/// What every operator command takes to reach the API.
#[derive(Debug, Clone, clap::Args)]
pub struct ApiArgs {
    /// The admin API's base URL.
    #[arg(long, env = "FWDIST_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// An API token (better given through the environment than the command line).
    #[arg(long, env = "FWDIST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM CA certificate(s) an HTTPS server's certificate must chain to, instead of the
    /// system's roots.
    #[arg(long, env = "FWDIST_CA")]
    pub ca: Option<PathBuf>,
    /// Print the API's JSON answer instead of words.
    #[arg(long)]
    pub json: bool,
}

/// Bound on connecting, and on each request that is not an upload.
const CONNECT: Duration = Duration::from_secs(10);
const REQUEST: Duration = Duration::from_secs(60);
/// An upload may take long, but never a minute without progress.
const READ: Duration = Duration::from_secs(60);

pub struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
    pub json: bool,
}

impl Api {
    /// # Errors
    /// No token, a malformed URL, an unusable CA file or trust store.
    pub fn new(args: &ApiArgs) -> anyhow::Result<Self> {
        let Some(token) = args.token.clone().filter(|t| !t.trim().is_empty()) else {
            bail!("no API token: give --token or set FWDIST_TOKEN (`fwdist token create` makes one)");
        };
        let base = args.server.trim_end_matches('/').to_owned();
        let url = reqwest::Url::parse(&base).with_context(|| format!("--server {base:?} is not a URL"))?;
        if !matches!(url.scheme(), "http" | "https") {
            bail!("--server {base:?}: use http:// or https://");
        }
        let mut b = reqwest::Client::builder()
            .connect_timeout(CONNECT)
            .read_timeout(READ)
            .no_proxy()
            .user_agent(concat!("fwdist/", env!("CARGO_PKG_VERSION")));
        if url.scheme() == "https" {
            let roots = match &args.ca {
                Some(ca) => TrustRoots::pinned(ca),
                None => TrustRoots::system(),
            }
            .map_err(anyhow::Error::msg)?;
            let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
            let tls = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots.store.as_ref().clone())
                .with_no_client_auth();
            b = b.use_preconfigured_tls(tls);
        }
        Ok(Api {
            http: b.build().context("building the HTTP client")?,
            base,
            token,
            json: args.json,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    /// One JSON request; the answer's body (`Null` for 204).
    ///
    /// # Errors
    /// Unreachable server, timeout, or a 4xx/5xx (its `error` text).
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .request(method.clone(), self.url(path))
            .bearer_auth(&self.token)
            .timeout(REQUEST);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| reach_error(&self.base, &e))?;
        answer(resp).await.map(|(_, v)| v)
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(Method::GET, path, None).await
    }

    /// Uploads a multipart form (no overall deadline: an image may be large; each read is
    /// bounded). Returns the status and the body.
    ///
    /// # Errors
    /// As [`Api::call`].
    pub async fn upload(
        &self,
        path: &str,
        form: reqwest::multipart::Form,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let resp = self
            .http
            .post(self.url(path))
            .bearer_auth(&self.token)
            .multipart(form)
            .send()
            .await
            .map_err(|e| reach_error(&self.base, &e))?;
        answer(resp).await
    }

    /// Prints `v` as pretty JSON (for `--json`).
    pub fn print_json(v: &Value) {
        println!(
            "{}",
            serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
        );
    }
}

fn reach_error(base: &str, e: &reqwest::Error) -> anyhow::Error {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    // The innermost cause says why (refused, certificate, DNS) in one line.
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    anyhow::anyhow!("{base}: {what}: {cause}")
}

async fn answer(resp: reqwest::Response) -> anyhow::Result<(StatusCode, Value)> {
    let status = resp.status();
    let text = resp.text().await.context("reading the API's answer")?;
    let body: Value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    if status.is_client_error() || status.is_server_error() {
        let msg = body
            .get("error")
            .and_then(Value::as_str)
            .map_or_else(|| body.to_string(), str::to_owned);
        bail!(
            "{} {}: {msg}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        );
    }
    Ok((status, body))
}
