//! `fwdist simulate`: many IQs at once against a server, to rehearse a rollout's load.
//!
//! Each simulated IQ logs in (retrying a failed TLS upgrade once, as IQs must), reads its
//! target manifest and signature, verifies them when trusted keys are given, downloads the
//! image while hashing it, checks size and SHA-256 and says `QUIT`. Sessions run with a
//! fixed concurrency, as fast as it allows or started on a fixed schedule (a rate, for a soak);
//! failures are counted by kind. A fraction of downloads can be cut half way (the connection
//! dropped, as a lost link does) and resumed with `REST` in a new session, as an IQ resumes.

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
    /// Sessions started per second on a fixed schedule (session i at i / rate, still at most
    /// `concurrency` at once); `None`: each as soon as a slot is free.
    pub rate: Option<f64>,
    /// This fraction of image downloads (`Mode::Update`, first attempt) is cut half way: the
    /// control and data connections dropped without a word, then a new session resumes the
    /// image with `REST` from the bytes received, as an IQ resumes after a lost link.
    pub cut: f64,
}

/// When session `i` starts, from the run's start, at `rate` sessions per second.
pub fn start_offset(i: usize, rate: f64) -> Duration {
    Duration::try_from_secs_f64(i as f64 / rate).unwrap_or(Duration::MAX)
}

/// How many sessions a run of `duration` at `rate` sessions per second starts.
pub fn sessions_for(duration: Duration, rate: f64) -> usize {
    let n = (duration.as_secs_f64() * rate).floor();
    if n.is_finite() && n > 0.0 { n as usize } else { 0 }
}

/// Whether session `i` has its download cut, for a cut `fraction`: spread evenly, so that any
/// run of sessions has that fraction cut, to one session.
pub fn is_cut(i: usize, fraction: f64) -> bool {
    let f = fraction.clamp(0.0, 1.0);
    ((i as f64 + 1.0) * f).floor() > (i as f64 * f).floor()
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
    /// Downloads cut half way and then resumed with `REST` (successful sessions only).
    pub cut: usize,
    /// Sessions that started more than a second behind the schedule (`rate`): every slot was
    /// busy. Zero means the rate held.
    pub late: usize,
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

/// Counts and hashes what it is given; keeps nothing. With `cut_at`, refuses to take more
/// than that many bytes (an error then: the download is cut there).
struct HashSink {
    h: Sha256,
    n: u64,
    cut_at: Option<u64>,
}

impl HashSink {
    fn new(cut_at: Option<u64>) -> Self {
        HashSink {
            h: Sha256::new(),
            n: 0,
            cut_at,
        }
    }

    fn is_cut(&self) -> bool {
        self.cut_at.is_some_and(|c| self.n >= c)
    }
}

impl AsyncWrite for HashSink {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let take = match self.cut_at {
            Some(c) if self.n >= c => {
                return std::task::Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "download cut on purpose",
                )));
            }
            Some(c) => buf.len().min(usize::try_from(c - self.n).unwrap_or(usize::MAX)),
            None => buf.len(),
        };
        self.h.update(&buf[..take]);
        self.n += take as u64;
        std::task::Poll::Ready(Ok(take))
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

/// One simulated IQ: what it did and whether the TLS upgrade was retried. `cut`: cut the
/// image download half way and resume it (see [`Plan::cut`]).
async fn session(
    plan: &Plan,
    cfg: ClientConfig,
    user: &str,
    pass: &str,
    cut: bool,
) -> (Result<Done, SessionError>, bool) {
    if let Mode::Https(path) = &plan.mode {
        return (
            https_get(&cfg, path)
                .await
                .map(Done::bytes)
                .map_err(SessionError::from),
            false,
        );
    }
    let (mut c, retried) = match FtpsClient::open(&cfg, user, pass).await {
        Ok(x) => x,
        Err(e) => return (Err(e.into()), false),
    };
    let r = match &plan.mode {
        Mode::Update => update(plan, &cfg, &mut c, (user, pass), cut).await,
        Mode::Manifest => c
            .retr_small("/target/manifest.json", MAX_MANIFEST_BYTES as u64)
            .await
            .map(|m| Done::bytes(m.len() as u64))
            .map_err(Into::into),
        Mode::Get(path) => {
            let mut sink = HashSink::new(None);
            c.retr(path, 0, u64::MAX, &mut sink)
                .await
                .map(|(n, _)| Done::bytes(n))
                .map_err(Into::into)
        }
        Mode::Hold(d) => {
            tokio::time::sleep(*d).await;
            Ok(Done::bytes(0))
        }
        Mode::Https(_) => Ok(Done::bytes(0)),
    };
    c.quit().await;
    (r, retried)
}

/// What a successful session did.
struct Done {
    bytes: u64,
    /// The outcome it reported, if any.
    reported: Option<&'static str>,
    /// Its download was cut and resumed.
    cut: bool,
}

impl Done {
    fn bytes(bytes: u64) -> Self {
        Done {
            bytes,
            reported: None,
            cut: false,
        }
    }
}

async fn update(
    plan: &Plan,
    cfg: &ClientConfig,
    c: &mut FtpsClient,
    (user, pass): (&str, &str),
    cut: bool,
) -> Result<Done, SessionError> {
    let manifest = match c
        .retr_small("/target/manifest.json", MAX_MANIFEST_BYTES as u64)
        .await
    {
        Err(e) if e.code() == Some(550) => return Err(SessionError::NoUpdate),
        r => r?,
    };
    // The signature of this very release (the target may change between the reads: the
    // soak met it); a release gone meanwhile (yanked) is no update either.
    let sig = match c
        .retr_small(
            &crate::fetch::signature_path(&manifest),
            MAX_MANIFEST_BYTES as u64,
        )
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
    let image = format!("/releases/{}/{}", m.version, m.file);
    let cut = cut && m.size >= 2;
    let mut sink = HashSink::new(cut.then_some(m.size / 2));
    match c.retr(&image, 0, m.size, &mut sink).await {
        Ok(_) => {}
        Err(_) if sink.is_cut() => {
            // The link went: both connections drop without a word (the old client goes here,
            // unread data in its sockets makes them reset). A new session resumes the image.
            let (fresh, _) = FtpsClient::open(cfg, user, pass).await?;
            drop(std::mem::replace(c, fresh));
            sink.cut_at = None;
            let have = sink.n;
            c.retr(&image, have, m.size - have, &mut sink).await?;
        }
        Err(e) => return Err(e.into()),
    }
    if sink.n != m.size || <[u8; 32]>::from(sink.h.finalize()) != m.sha256.0 {
        return Err(SessionError::Hash);
    }
    let Some(report) = plan.report else {
        return Ok(Done {
            bytes: m.size,
            reported: None,
            cut,
        });
    };
    let outcome = report.outcome(user);
    let body = format!(r#"{{"version": "{}", "outcome": "{outcome}"}}"#, m.version);
    c.stor("/report.json", body.as_bytes()).await?;
    Ok(Done {
        bytes: m.size,
        reported: Some(outcome),
        cut,
    })
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
    let mut report = Report::default();
    let mut late = 0;
    for i in 0..plan.sessions {
        let due = plan.rate.map(|r| start + start_offset(i, r));
        if let Some(due) = due {
            tokio::time::sleep_until(due.into()).await;
        }
        let Ok(permit) = sem.clone().acquire_owned().await else {
            break;
        };
        if due.is_some_and(|d| d.elapsed() > Duration::from_secs(1)) {
            late += 1;
        }
        // Reap finished sessions as we go: a long run must not keep them all.
        while let Some(joined) = tasks.try_join_next() {
            report.add(joined);
        }
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
                let cut = attempt == 0 && matches!(plan.mode, Mode::Update) && is_cut(i, plan.cut);
                let (r, retried) = session(&plan, cfg.clone(), user, pass, cut).await;
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
    while let Some(joined) = tasks.join_next().await {
        report.add(joined);
    }
    report.late = late;
    report.elapsed = start.elapsed();
    report.latencies.sort();
    report
}

/// A finished session task: its result, whether its TLS upgrade was retried, the first
/// failure's kind when a later attempt succeeded, and its latency.
type Finished = (Result<Done, SessionError>, bool, Option<String>, Duration);

impl Report {
    fn add(&mut self, joined: Result<Finished, tokio::task::JoinError>) {
        let Ok((r, retried, recovered, took)) = joined else {
            self.failed += 1;
            *self.errors.entry("panic".into()).or_default() += 1;
            return;
        };
        self.handshake_retries += usize::from(retried);
        if let Some(k) = recovered {
            *self.recovered.entry(k).or_default() += 1;
        }
        match r {
            Ok(done) => {
                self.ok += 1;
                self.bytes += done.bytes;
                self.cut += usize::from(done.cut);
                self.latencies.push(took);
                if let Some(outcome) = done.reported {
                    *self.reports.entry(outcome.to_owned()).or_default() += 1;
                }
            }
            Err(SessionError::NoUpdate) => self.no_update += 1,
            Err(e) => {
                self.failed += 1;
                let k = kind(&e);
                self.examples.entry(k.clone()).or_insert_with(|| e.to_string());
                *self.errors.entry(k).or_default() += 1;
            }
        }
    }
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
    fn schedule_starts_sessions_at_the_rate() {
        assert_eq!(start_offset(0, 4.0), Duration::ZERO);
        assert_eq!(start_offset(1, 4.0), Duration::from_millis(250));
        assert_eq!(start_offset(10, 0.5), Duration::from_secs(20));
        let gaps: Vec<Duration> = (1..100)
            .map(|i| start_offset(i, 8.0) - start_offset(i - 1, 8.0))
            .collect();
        assert!(gaps.iter().all(|g| *g == Duration::from_millis(125)), "{gaps:?}");
        assert_eq!(sessions_for(Duration::from_secs(3600), 5.0), 18_000);
        assert_eq!(sessions_for(Duration::from_secs(10), 0.25), 2);
        assert_eq!(sessions_for(Duration::from_secs(1), 0.5), 0);
        assert_eq!(sessions_for(Duration::ZERO, 5.0), 0);
        assert!(start_offset(sessions_for(Duration::from_secs(60), 3.0) - 1, 3.0) < Duration::from_secs(60));
    }

    #[test]
    fn cuts_are_the_fraction_of_any_run() {
        assert!((0..1000).all(|i| !is_cut(i, 0.0)));
        assert!((0..1000).all(|i| is_cut(i, 1.0)));
        assert_eq!((0..1000).filter(|&i| is_cut(i, 0.1)).count(), 100);
        for start in [0, 7, 333] {
            let n = (start..start + 50).filter(|&i| is_cut(i, 0.2)).count();
            assert!((9..=11).contains(&n), "about 10 of 50 from {start}: {n}");
        }
        assert_eq!(is_cut(17, 0.3), is_cut(17, 0.3), "stable");
    }

    #[tokio::test]
    async fn a_cut_sink_takes_bytes_up_to_the_cut_then_refuses() {
        use tokio::io::AsyncWriteExt as _;
        let mut sink = HashSink::new(Some(10));
        assert!(sink.write_all(&[1; 6]).await.is_ok());
        assert!(!sink.is_cut());
        let e = sink.write_all(&[2; 6]).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionAborted);
        assert_eq!(sink.n, 10, "stops exactly at the cut");
        assert!(sink.is_cut());
        sink.cut_at = None;
        sink.write_all(&[2; 2]).await.unwrap();
        let whole = Sha256::digest([[1u8; 6].as_slice(), &[2; 6]].concat());
        assert_eq!(sink.h.finalize(), whole, "resumed bytes continue the hash");
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
