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
/// An upload may take long, but never this long without a byte taken by the connection.
pub const STALL: Duration = Duration::from_secs(60);
/// Largest answer read (a list page of 1,000 items is far below it).
const MAX_ANSWER: usize = 8 << 20;

pub struct Api {
    http: reqwest::Client,
    /// The same client without a per-read deadline: reqwest's `read_timeout` runs from the
    /// moment a request is sent, so an upload longer than it would fail. Uploads watch their
    /// own progress instead ([`Api::upload`]).
    upload: reqwest::Client,
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
        let tls = if url.scheme() == "https" {
            let roots = match &args.ca {
                Some(ca) => TrustRoots::pinned(ca),
                None => TrustRoots::system(),
            }
            .map_err(anyhow::Error::msg)?;
            let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
            Some(
                rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()?
                    .with_root_certificates(roots.store.as_ref().clone())
                    .with_no_client_auth(),
            )
        } else {
            None
        };
        let builder = || {
            let b = reqwest::Client::builder()
                .connect_timeout(CONNECT)
                .no_proxy()
                .user_agent(concat!("fwdist/", env!("CARGO_PKG_VERSION")));
            match &tls {
                Some(t) => b.use_preconfigured_tls(t.clone()),
                None => b,
            }
        };
        Ok(Api {
            upload: builder().build().context("building the HTTP client")?,
            http: builder()
                .read_timeout(REQUEST)
                .build()
                .context("building the HTTP client")?,
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

    /// A GET with query parameters, encoded by the URL builder (never pasted into the path).
    ///
    /// # Errors
    /// As [`Api::call`].
    pub async fn get_query(&self, path: &str, query: &[(&str, &str)]) -> anyhow::Result<Value> {
        let resp = self
            .http
            .get(self.url(path))
            .query(query)
            .bearer_auth(&self.token)
            .timeout(REQUEST)
            .send()
            .await
            .map_err(|e| reach_error(&self.base, &e))?;
        answer(resp).await.map(|(_, v)| v)
    }

    /// Uploads a multipart form with no overall deadline (an image may be large), failing
    /// when `progress` (bumped by the body stream as the connection takes bytes) stands still
    /// for [`STALL`]. Returns the status and the body.
    ///
    /// # Errors
    /// As [`Api::call`], or a stalled upload.
    pub async fn upload(
        &self,
        path: &str,
        form: reqwest::multipart::Form,
        progress: &Progress,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let send = self
            .upload
            .post(self.url(path))
            .bearer_auth(&self.token)
            .multipart(form)
            .send();
        let watchdog = async {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if progress.idle() > STALL {
                    return;
                }
            }
        };
        let resp = tokio::select! {
            r = send => r.map_err(|e| reach_error(&self.base, &e))?,
            () = watchdog => bail!("{}: the upload made no progress for {} s", self.base, STALL.as_secs()),
        };
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

/// When an upload last moved, shared by its body stream and its watchdog.
#[derive(Debug, Clone)]
pub struct Progress(std::sync::Arc<std::sync::Mutex<std::time::Instant>>);

impl Default for Progress {
    fn default() -> Self {
        Progress(std::sync::Arc::new(std::sync::Mutex::new(
            std::time::Instant::now(),
        )))
    }
}

impl Progress {
    pub fn bump(&self) {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = std::time::Instant::now();
    }

    fn idle(&self) -> Duration {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .elapsed()
    }
}

async fn answer(mut resp: reqwest::Response) -> anyhow::Result<(StatusCode, Value)> {
    let status = resp.status();
    let mut bytes = Vec::new();
    while let Some(chunk) = resp.chunk().await.context("reading the API's answer")? {
        if bytes.len() + chunk.len() > MAX_ANSWER {
            bail!("the API's answer is larger than {} MiB", MAX_ANSWER >> 20);
        }
        bytes.extend_from_slice(&chunk);
    }
    let text = String::from_utf8_lossy(&bytes).into_owned();
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
        // One line, and a short one (a proxy's HTML error page is not a message).
        let mut msg = msg.split_whitespace().collect::<Vec<_>>().join(" ");
        if msg.len() > 300 {
            let mut cut = 300;
            while !msg.is_char_boundary(cut) {
                cut -= 1;
            }
            msg.truncate(cut);
            msg.push('…');
        }
        bail!(
            "{} {}: {msg}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        );
    }
    Ok((status, body))
}
