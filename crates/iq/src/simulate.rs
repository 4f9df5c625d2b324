//! `fwdist simulate`: many IQs at once against a server, to rehearse a rollout's load.
//!
//! Each simulated IQ logs in (retrying a failed TLS upgrade once, as IQs must), reads its
//! target manifest and signature, verifies them when trusted keys are given, downloads the
//! image while hashing it, checks size and SHA-256 and says `QUIT`. Sessions run with a
//! fixed concurrency; failures are counted by kind.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::io::AsyncWrite;

use super::client::{ClientConfig, ClientError, FtpsClient};
use fwdist_release::manifest::{MAX_MANIFEST_BYTES, Manifest};
use fwdist_release::signing::TrustedKeys;

/// What each simulated session does.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Log in, read the target manifest and signature, download and check the image.
    Update,
    /// Log in and read the target manifest only (session setup cost).
    Manifest,
    /// Log in and RETR one path (any FTPS server: used to compare with vsftpd).
    Get(String),
    /// Log in and stay idle this long (memory per session).
    Hold(Duration),
    /// No FTP: a TLS connection and `GET path` over HTTP/1.0 (a raw TLS ceiling for the
    /// load generator itself, e.g. against nginx).
    Https(String),
}

/// What a simulated IQ reports after an update (`STOR /report.json`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReportPlan {
    Installed,
    Failed,
    /// This fraction of devices (chosen by a stable hash of the device id) report `failed`,
    /// the others `installed`.
    Mix(f64),
}

impl ReportPlan {
    /// `installed`, `failed` or `mix:F` (0 ≤ F ≤ 1).
    ///
    /// # Errors
    /// Anything else, in words.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "installed" => Ok(Self::Installed),
            "failed" => Ok(Self::Failed),
            _ => s
                .strip_prefix("mix:")
                .and_then(|f| f.parse::<f64>().ok())
                .filter(|f| (0.0..=1.0).contains(f))
                .map(Self::Mix)
                .ok_or_else(|| format!("{s:?}: expected installed, failed or mix:F with 0 <= F <= 1")),
        }
    }

    /// The outcome `device` reports.
    pub fn outcome(self, device: &str) -> &'static str {
        let failed = match self {
            Self::Installed => false,
            Self::Failed => true,
            Self::Mix(f) => {
                let h = Sha256::digest(device.as_bytes());
                let x = u64::from_be_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]]);
                (x as f64 / u64::MAX as f64) < f
            }
        };
        if failed { "failed" } else { "installed" }
    }
}

pub struct Plan {
    pub client: ClientConfig,
    /// After an update, report this (`Mode::Update` only).
    pub report: Option<ReportPlan>,
    /// `(user, secret)` pairs; sessions cycle through them.
    pub devices: Vec<(String, String)>,
    pub sessions: usize,
    pub concurrency: usize,
    /// Source addresses to spread sessions over (round robin); empty: the default route.
    pub source_ips: Vec<IpAddr>,
    pub trust: Option<TrustedKeys>,
    pub mode: Mode,
    /// Extra attempts of a whole session after a transient failure (as a real IQ retries),
    /// after a short jittered back-off. Refusals (5xx, bad hash) are never retried.
    pub retries: u32,
}

#[derive(Debug, Default)]
pub struct Report {
    pub ok: usize,
    pub failed: usize,
    pub bytes: u64,
    pub elapsed: Duration,
    /// Session latencies of successful sessions, sorted.
    pub latencies: Vec<Duration>,
    pub errors: BTreeMap<String, usize>,
    /// The first message seen for each error kind.
    pub examples: BTreeMap<String, String>,
    /// Sessions that needed their one TLS-upgrade retry (and then succeeded or not).
    pub handshake_retries: usize,
    /// Sessions that succeeded only on a later attempt, by the first failure's kind.
    pub recovered: BTreeMap<String, usize>,
    /// Sessions whose device had nothing to fetch (`/target` answered 550): not errors.
    pub no_update: usize,
    /// Reports stored by the server, by outcome.
    pub reports: BTreeMap<String, usize>,
}

impl Report {
    pub fn sessions_per_sec(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn mib_per_sec(&self) -> f64 {
        self.bytes as f64 / (1024.0 * 1024.0) / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i.min(self.latencies.len() - 1)]
    }
}

/// Back-off before retry `attempt` (1, 2, …) of session `i`: exponential from 100 ms, capped
/// at 5 s, with jitter from the session index so that IQs turned away together (a `421` for a
/// busy NAT address, say) do not come back together.
pub fn retry_delay(i: usize, attempt: u32) -> Duration {
    let ceiling = (100u64 << attempt.min(6)).min(5_000);
    let spread = (i as u64)
        .wrapping_mul(2_654_435_761)
        .wrapping_add(u64::from(attempt) * 97)
        % (ceiling / 2 + 1);
    Duration::from_millis(ceiling / 2 + spread)
}

/// Why a simulated session failed, as counted in the report.
fn kind(e: &SessionError) -> String {
    match e {
        SessionError::Client(ClientError::Reply { code, .. }) => code.to_string(),
        SessionError::Client(ClientError::Handshake(_)) => "handshake".into(),
        SessionError::Client(ClientError::Timeout(_)) => "timeout".into(),
        SessionError::Client(ClientError::Connect { .. }) => "connect".into(),
        SessionError::Client(ClientError::Io(_)) => "io".into(),
        SessionError::Client(ClientError::Protocol(_)) => "protocol".into(),
        SessionError::Verify(_) => "verify".into(),
        SessionError::Hash => "hash mismatch".into(),
        SessionError::NoUpdate => "no update".into(),
    }
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error(transparent)]
    Client(ClientError),
    /// `/target/manifest.json` is 550: no update for this device (counted apart).
    #[error("no update for this device")]
    NoUpdate,
    #[error("manifest refused: {0}")]
    Verify(String),
    #[error("image does not match the manifest's size and sha256")]
    Hash,
}

impl SessionError {
    fn is_transient(&self) -> bool {
        match self {
            SessionError::Client(e) => e.is_transient(),
            SessionError::Verify(_) | SessionError::Hash | SessionError::NoUpdate => false,
        }
    }
}

impl From<ClientError> for SessionError {
    fn from(e: ClientError) -> Self {
        SessionError::Client(e)
    }
}

/// Counts and hashes what it is given; keeps nothing.
struct HashSink {
    h: Sha256,
    n: u64,
}

impl AsyncWrite for HashSink {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.h.update(buf);
        self.n += buf.len() as u64;
        std::task::Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// One simulated IQ: returns bytes downloaded and whether the TLS upgrade was retried.
async fn session(
    plan: &Plan,
    cfg: ClientConfig,
    user: &str,
    pass: &str,
) -> (Result<Done, SessionError>, bool) {
    if let Mode::Https(path) = &plan.mode {
        return (
            https_get(&cfg, path)
                .await
                .map(|n| (n, None))
                .map_err(SessionError::from),
            false,
        );
    }
    let (mut c, retried) = match FtpsClient::open(&cfg, user, pass).await {
        Ok(x) => x,
        Err(e) => return (Err(e.into()), false),
    };
    let r = match &plan.mode {
        Mode::Update => update(plan, &mut c, user).await,
        Mode::Manifest => c
            .retr_small("/target/manifest.json", MAX_MANIFEST_BYTES as u64)
            .await
            .map(|m| (m.len() as u64, None))
            .map_err(Into::into),
        Mode::Get(path) => {
            let mut sink = HashSink {
                h: Sha256::new(),
                n: 0,
            };
            c.retr(path, 0, u64::MAX, &mut sink)
                .await
                .map(|(n, _)| (n, None))
                .map_err(Into::into)
        }
        Mode::Hold(d) => {
            tokio::time::sleep(*d).await;
            Ok((0, None))
        }
        Mode::Https(_) => Ok((0, None)),
    };
    c.quit().await;
    (r, retried)
}

/// What a session did besides the bytes: the outcome it reported, if any.
type Done = (u64, Option<&'static str>);

async fn update(plan: &Plan, c: &mut FtpsClient, user: &str) -> Result<Done, SessionError> {
    let manifest = match c
        .retr_small("/target/manifest.json", MAX_MANIFEST_BYTES as u64)
        .await
    {
        Err(e) if e.code() == Some(550) => return Err(SessionError::NoUpdate),
        r => r?,
    };
    // The target can go between the two reads (the rollout paused): no update either.
    let sig = match c
        .retr_small("/target/manifest.json.sig", MAX_MANIFEST_BYTES as u64)
        .await
    {
        Err(e) if e.code() == Some(550) => return Err(SessionError::NoUpdate),
        r => r?,
    };
    if let Some(trust) = &plan.trust {
        trust
            .verify(&sig, &manifest)
            .map_err(|e| SessionError::Verify(e.to_string()))?;
    }
    let m = Manifest::parse(&manifest).map_err(|e| SessionError::Verify(e.to_string()))?;
    let mut sink = HashSink {
        h: Sha256::new(),
        n: 0,
    };
    c.retr(
        &format!("/releases/{}/{}", m.version, m.file),
        0,
        m.size,
        &mut sink,
    )
    .await?;
    if sink.n != m.size || <[u8; 32]>::from(sink.h.finalize()) != m.sha256.0 {
        return Err(SessionError::Hash);
    }
    let Some(report) = plan.report else {
        return Ok((m.size, None));
    };
    let outcome = report.outcome(user);
    let body = format!(r#"{{"version": "{}", "outcome": "{outcome}"}}"#, m.version);
    c.stor("/report.json", body.as_bytes()).await?;
    Ok((m.size, Some(outcome)))
}

/// `GET path` over TLS (HTTP/1.0, read to EOF): bytes received, headers included.
async fn https_get(cfg: &ClientConfig, path: &str) -> Result<u64, ClientError> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let tcp = tokio::time::timeout(cfg.timeout, tokio::net::TcpStream::connect(cfg.addr))
        .await
        .map_err(|_| ClientError::Timeout("the TCP connection"))?
        .map_err(|source| ClientError::Connect {
            addr: cfg.addr,
            source,
        })?;
    let connector = tokio_rustls::TlsConnector::from(cfg.tls.clone());
    let mut tls = connector
        .connect(cfg.server_name.clone(), tcp)
        .await
        .map_err(|e| ClientError::Handshake(e.to_string()))?;
    tls.write_all(format!("GET {path} HTTP/1.0\r\nHost: bench\r\n\r\n").as_bytes())
        .await?;
    tls.flush().await?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut n_total = 0u64;
    loop {
        match tls.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                if n_total == 0
                    && !buf[..n].starts_with(b"HTTP/1.1 200")
                    && !buf[..n].starts_with(b"HTTP/1.0 200")
                {
                    let line = String::from_utf8_lossy(&buf[..n.min(40)]).into_owned();
                    return Err(ClientError::Protocol(format!("HTTP answer is not 200: {line:?}")));
                }
                n_total += n as u64;
            }
            // Servers often skip close_notify after an HTTP/1.0 response.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && n_total > 0 => break,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(n_total)
}

/// Runs the plan and reports.
pub async fn run(plan: Plan) -> Report {
    let plan = Arc::new(plan);
    let sem = Arc::new(tokio::sync::Semaphore::new(plan.concurrency.max(1)));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..plan.sessions {
        let Ok(permit) = sem.clone().acquire_owned().await else {
            break;
        };
        let plan = plan.clone();
        tasks.spawn(async move {
            let (user, pass) = &plan.devices[i % plan.devices.len()];
            let mut cfg = plan.client.clone();
            if !plan.source_ips.is_empty() {
                cfg.bind_ip = Some(plan.source_ips[i % plan.source_ips.len()]);
            }
            let t0 = Instant::now();
            let mut first_failure = None;
            let mut attempt = 0;
            let (r, retried) = loop {
                let (r, retried) = session(&plan, cfg.clone(), user, pass).await;
                match &r {
                    Err(e) if attempt < plan.retries && e.is_transient() => {
                        first_failure.get_or_insert_with(|| kind(e));
                        attempt += 1;
                        tokio::time::sleep(retry_delay(i, attempt)).await;
                    }
                    _ => break (r, retried),
                }
            };
            drop(permit);
            let recovered = if r.is_ok() { first_failure } else { None };
            (r, retried, recovered, t0.elapsed())
        });
    }
    let mut report = Report::default();
    while let Some(joined) = tasks.join_next().await {
        let Ok((r, retried, recovered, took)) = joined else {
            report.failed += 1;
            *report.errors.entry("panic".into()).or_default() += 1;
            continue;
        };
        report.handshake_retries += usize::from(retried);
        if let Some(k) = recovered {
            *report.recovered.entry(k).or_default() += 1;
        }
        match r {
            Ok((bytes, reported)) => {
                report.ok += 1;
                report.bytes += bytes;
                report.latencies.push(took);
                if let Some(outcome) = reported {
                    *report.reports.entry(outcome.to_owned()).or_default() += 1;
                }
            }
            Err(SessionError::NoUpdate) => report.no_update += 1,
            Err(e) => {
                report.failed += 1;
                let k = kind(&e);
                report.examples.entry(k.clone()).or_insert_with(|| e.to_string());
                *report.errors.entry(k).or_default() += 1;
            }
        }
    }
    report.elapsed = start.elapsed();
    report.latencies.sort();
    report
}

/// Parses `A-B` (inclusive, IPv4, same /24 or not) or a single address.
///
/// # Errors
/// Anything else, or a range of more than 65,536 addresses.
pub fn parse_ip_range(s: &str) -> Result<Vec<IpAddr>, String> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let a: std::net::Ipv4Addr = a
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: expected A.B.C.D-E.F.G.H"))?;
    let b: std::net::Ipv4Addr = b
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: expected A.B.C.D-E.F.G.H"))?;
    let (a, b) = (u32::from(a), u32::from(b));
    if a > b || b - a >= 65_536 {
        return Err(format!("{s:?}: need FIRST <= LAST and at most 65536 addresses"));
    }
    Ok((a..=b).map(|n| IpAddr::V4(n.into())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_grow_are_capped_and_spread() {
        assert!(retry_delay(0, 1) >= Duration::from_millis(100));
        assert!(retry_delay(0, 1) <= Duration::from_millis(200));
        for i in 0..100 {
            assert!(retry_delay(i, 40) <= Duration::from_millis(5_000));
            assert!(retry_delay(i, 40) >= Duration::from_millis(2_500));
        }
        let distinct: std::collections::BTreeSet<_> = (0..50).map(|i| retry_delay(i, 3)).collect();
        assert!(distinct.len() > 10, "jitter spreads sessions: {distinct:?}");
    }

    #[test]
    fn ip_ranges() {
        assert_eq!(parse_ip_range("127.0.0.2-127.0.0.4").unwrap().len(), 3);
        assert_eq!(parse_ip_range("127.0.0.9").unwrap().len(), 1);
        assert!(parse_ip_range("127.0.0.9-127.0.0.2").is_err());
        assert!(parse_ip_range("x").is_err());
    }

    #[test]
    fn report_plans() {
        assert_eq!(ReportPlan::parse("installed"), Ok(ReportPlan::Installed));
        assert_eq!(ReportPlan::parse("mix:0.2"), Ok(ReportPlan::Mix(0.2)));
        assert!(ReportPlan::parse("mix:2").is_err());
        assert!(ReportPlan::parse("sometimes").is_err());
        let devices: Vec<String> = (0..1000)
            .map(|i| format!("aa:bb:cc:00:{:02x}:{:02x}", i / 256, i % 256))
            .collect();
        let failed = devices
            .iter()
            .filter(|d| ReportPlan::Mix(0.2).outcome(d) == "failed")
            .count();
        assert!((150..250).contains(&failed), "about 20% fail: {failed}");
        assert_eq!(
            ReportPlan::Mix(0.2).outcome(&devices[0]),
            ReportPlan::Mix(0.2).outcome(&devices[0]),
            "stable"
        );
        assert_eq!(ReportPlan::Failed.outcome("x"), "failed");
    }

    #[test]
    fn percentiles() {
        let r = Report {
            latencies: (1..=100).map(Duration::from_millis).collect(),
            ..Default::default()
        };
        assert_eq!(r.percentile(0.5), Duration::from_millis(51));
        assert_eq!(r.percentile(0.99), Duration::from_millis(99));
    }
}
