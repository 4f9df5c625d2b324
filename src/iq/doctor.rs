//! `fwdist doctor`: run from a customer's network, it says step by step whether an IQ update
//! would work there and, when not, which firewall rule to add (issue 4).
//!
//! Steps, in order, stopping at the first that makes the rest impossible: `dns`, `tcp`,
//! `greeting`, `tls`, `certificate`, `login`, `passive-range`, then one `port N` line per
//! passive port (PASV, data connection, TLS, `RETR /probe.bin`, SHA-256), then `summary`.
//! It talks through the reference IQ's own client ([`super::client`]) and shares the probe
//! account's facts with the server through [`crate::probe`]; it prints nothing itself.
//!
//! The pure parts — the verdict, the rule text, the PASV address check, the certificate
//! assessment — are here with their unit tests; `tests/it/doctor.rs` runs the whole against
//! the real server. (Long for one file: the certificate inspector and the verdict could
//! become submodules.)

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{WebPkiServerVerifier, verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use super::client::{ClientConfig, ClientError, FtpsClient, Stage, StageError};
use crate::probe;

/// Under this many days left, the certificate step warns.
pub const EXPIRY_WARN_DAYS: i64 = 30;
/// Passive ports tried when the range is unknown (no `SITE PORTS`, no `--passive-ports`).
const DISCOVERY_ATTEMPTS: usize = 8;
/// A listing is all a device account can fetch everywhere; bound it anyway.
const LISTING_LIMIT: u64 = 1 << 20;

/// What to check, and how.
#[derive(Clone)]
pub struct DoctorOptions {
    /// The server as IQs reach it.
    pub host: String,
    pub port: u16,
    /// The name its certificate must carry (HOST).
    pub server_name: ServerName<'static>,
    /// What the certificate must chain to (`--ca`).
    pub roots: Arc<RootCertStore>,
    pub login: Login,
    /// `--passive-ports`: tested instead of what `SITE PORTS` says, or when it says nothing.
    pub passive_ports: Option<RangeInclusive<u16>>,
    /// Bound on each control-channel wait.
    pub timeout: Duration,
    /// Bound on each data connection attempt.
    pub data_timeout: Duration,
    pub bind_ip: Option<IpAddr>,
}

/// Whose login to use.
#[derive(Clone)]
pub enum Login {
    /// The built-in probe account: it can read `/probe.bin`, whose hash is known.
    Probe,
    /// A real device (`USER` as given): each port is tested with a directory listing.
    Device { user: String, secret: String },
}

impl Login {
    fn user(&self) -> &str {
        match self {
            Login::Probe => probe::USER,
            Login::Device { user, .. } => user,
        }
    }

    fn password(&self) -> &str {
        match self {
            Login::Probe => probe::PASSWORD,
            Login::Device { secret, .. } => secret,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

/// One printed line: `ok   <step>: <detail>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Line {
    pub status: Status,
    pub step: String,
    pub detail: String,
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = match self.status {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        };
        write!(f, "{label:<4} {}: {}", self.step, self.detail)
    }
}

/// How one passive port fared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", content = "detail", rename_all = "snake_case")]
pub enum PortResult {
    Ok(String),
    /// The data connection timed out, was refused or unreachable.
    Blocked(String),
    TlsFailed(String),
    HashMismatch(String),
    /// Anything else (a refusal on the control channel, a lost session).
    Failed(String),
}

impl PortResult {
    pub fn is_ok(&self) -> bool {
        matches!(self, PortResult::Ok(_))
    }
}

/// A tested passive port: where the data connection went, and how it fared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortTest {
    pub port: u16,
    pub host: IpAddr,
    #[serde(flatten)]
    pub result: PortResult,
}

/// The overall answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Every step and every passive port passed: an update works.
    Works,
    /// An update works, but some passive ports fail (or went untested): IQs need retries.
    Degraded,
    /// An update cannot work from here.
    Broken,
}

impl Verdict {
    /// The process exit code: 0 works, 3 degraded, 1 broken (2 is left to bad arguments).
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Works => 0,
            Verdict::Degraded => 3,
            Verdict::Broken => 1,
        }
    }
}

/// Everything the doctor found; `--json` prints it as is.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub server: String,
    pub lines: Vec<Line>,
    pub passive_range: Option<(u16, u16)>,
    pub ports: Vec<PortTest>,
    pub untested: Vec<u16>,
    /// One line per blocked destination: what to allow, as an nftables rule.
    pub rules: Vec<String>,
    pub verdict: Verdict,
    pub exit_code: u8,
}

/// The verdict from whether a step failed and how the passive ports fared.
pub fn verdict(step_failed: bool, ports: &[PortTest], untested: usize) -> Verdict {
    if step_failed || !ports.iter().any(|p| p.result.is_ok()) {
        Verdict::Broken
    } else if untested > 0 || ports.iter().any(|p| !p.result.is_ok()) {
        Verdict::Degraded
    } else {
        Verdict::Works
    }
}

/// The nftables rule that lets IQs behind this firewall reach `to`.
pub fn allow_rule(to: SocketAddr) -> String {
    let family = if to.is_ipv4() { "ip" } else { "ip6" };
    format!(
        "nft: add rule inet filter forward {family} daddr {} tcp dport {} accept",
        to.ip(),
        to.port()
    )
}

/// `outbound TCP to 203.0.113.5:50002 is blocked (timed out)`.
pub fn blocked_text(to: SocketAddr, why: &str) -> String {
    format!("outbound TCP to {to} is blocked ({why})")
}

/// The summary's line for a blocked destination, with its rule.
pub fn rule_line(to: SocketAddr) -> String {
    format!("outbound TCP to {to} is blocked: allow it ({})", allow_rule(to))
}

/// Reachable from the internet: not private, loopback, link-local, CGNAT or unspecified.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let cgnat = v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64;
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || cgnat)
        }
        IpAddr::V6(v6) => {
            let seg = v6.segments()[0];
            let unique_local = (seg & 0xfe00) == 0xfc00;
            let link_local = (seg & 0xffc0) == 0xfe80;
            !(v6.is_loopback() || v6.is_unspecified() || unique_local || link_local)
        }
    }
}

/// What is wrong with a `227` reply's address, seen from a client that reached the server
/// at `control` (typically a NAT misconfiguration: `ftps.public_host`).
pub fn pasv_host_warning(control: IpAddr, announced: Ipv4Addr) -> Option<String> {
    let a = IpAddr::V4(announced);
    if a == control {
        return None;
    }
    if announced.is_unspecified() {
        return Some(format!(
            "PASV announces {announced}, not an address: set ftps.public_host to {control}"
        ));
    }
    if is_public(control) && !is_public(a) {
        return Some(format!(
            "PASV announces the private address {announced} while the server is reached at {control}: \
             IQs that use the announced address cannot connect (set ftps.public_host to {control})"
        ));
    }
    Some(format!(
        "PASV announces {announced}, not {control} where the control connection went: IQs that use \
         the announced address connect there (check ftps.public_host)"
    ))
}

/// Where to open the data connection for a `227` reply: the announced address, unless it
/// announces no address at all.
fn data_target(announced: SocketAddrV4, control: IpAddr) -> SocketAddr {
    if announced.ip().is_unspecified() {
        SocketAddr::new(control, announced.port())
    } else {
        SocketAddr::V4(announced)
    }
}

/// Why a connection failed, in a firewall's words: `timed out`, `refused`, …
fn connect_failure(e: &ClientError) -> String {
    match e {
        ClientError::Timeout(_) => "timed out".into(),
        ClientError::Connect { source, .. } => match source.kind() {
            io::ErrorKind::ConnectionRefused => "refused".into(),
            _ => source.to_string(),
        },
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------------------
// The certificate

/// What the server's certificate says, judged against `--ca` and HOST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    pub subject: String,
    /// Chains to `--ca` (judged at a moment inside the certificate's validity, so expiry is
    /// reported on its own).
    pub chain: Result<(), String>,
    /// Valid for HOST.
    pub name: Result<(), String>,
    /// Validity, Unix seconds; None when unreadable.
    pub validity: Option<(i64, i64)>,
    pub now: i64,
}

impl CertFacts {
    fn gather(
        ee: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        name: &ServerName<'_>,
        now: UnixTime,
        roots: &RootCertStore,
        algs: WebPkiSupportedAlgorithms,
    ) -> Self {
        let now_s = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        let x509 = x509_parser::parse_x509_certificate(ee.as_ref())
            .ok()
            .map(|(_, c)| c);
        let validity = x509.as_ref().map(|c| {
            (
                c.validity().not_before.timestamp(),
                c.validity().not_after.timestamp(),
            )
        });
        let subject = x509
            .as_ref()
            .map_or_else(|| "?".into(), |c| c.subject().to_string());
        let parsed = match ParsedCertificate::try_from(ee) {
            Ok(p) => p,
            Err(e) => {
                let bad = Err(format!("unreadable certificate: {e}"));
                return CertFacts {
                    subject,
                    chain: bad.clone(),
                    name: bad,
                    validity,
                    now: now_s,
                };
            }
        };
        let at = match validity {
            Some((_, after)) if now_s > after => after,
            Some((before, _)) if now_s < before => before,
            _ => now_s,
        };
        let at = UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(at).unwrap_or(0)));
        let chain = verify_server_cert_signed_by_trust_anchor(&parsed, roots, intermediates, at, algs.all)
            .map_err(|e| describe_cert_error(&e));
        let name = verify_server_name(&parsed, name).map_err(|e| describe_cert_error(&e));
        CertFacts {
            subject,
            chain,
            name,
            validity,
            now: now_s,
        }
    }

    /// Would an IQ accept it?
    pub fn acceptable(&self) -> bool {
        let (status, _) = assess_cert(self, "");
        status != Status::Fail
    }
}

fn describe_cert_error(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "not issued by a certificate in --ca (wrong --ca, or a TLS-inspecting middlebox)".into()
        }
        rustls::Error::InvalidCertificate(CertificateError::BadSignature) => {
            "its issuer's name is in --ca but the signature does not verify (wrong --ca, or a \
             TLS-inspecting middlebox)"
                .into()
        }
        rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
            expected,
            presented,
        }) => format!(
            "issued for {}, not for {}",
            presented.join(", "),
            expected.to_str()
        ),
        other => other.to_string(),
    }
}

fn date(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!("[year]-[month]-[day]"))
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

/// The certificate step's status and detail.
pub fn assess_cert(f: &CertFacts, host: &str) -> (Status, String) {
    let mut problems = Vec::new();
    if let Err(e) = &f.chain {
        problems.push(format!("untrusted: {e}"));
    }
    if let Err(e) = &f.name {
        problems.push(format!("name mismatch: {e}"));
    }
    let Some((before, after)) = f.validity else {
        problems.push("its validity dates are unreadable".into());
        return (Status::Fail, format!("{}: {}", f.subject, problems.join("; ")));
    };
    let days = (after - f.now).div_euclid(86_400);
    if f.now > after {
        let ago = (f.now - after) / 86_400;
        problems.push(format!("expired on {} ({ago} days ago)", date(after)));
    } else if f.now < before {
        problems.push(format!("not valid before {}", date(before)));
    }
    if !problems.is_empty() {
        return (Status::Fail, format!("{}: {}", f.subject, problems.join("; ")));
    }
    let expiry = format!("expires {} ({days} days left)", date(after));
    if days < EXPIRY_WARN_DAYS {
        (Status::Warn, format!("{}: {expiry}: renew it soon", f.subject))
    } else {
        let detail = format!("{}: chains to --ca, valid for {host}, {expiry}", f.subject);
        (Status::Ok, detail)
    }
}

/// A certificate verifier that decides exactly as rustls' WebPKI verifier does, and keeps
/// what it saw so the certificate step can say what is wrong, not just that something is.
#[derive(Debug)]
pub struct CertInspector {
    inner: Arc<WebPkiServerVerifier>,
    roots: Arc<RootCertStore>,
    algs: WebPkiSupportedAlgorithms,
    seen: Mutex<Option<CertFacts>>,
}

impl CertInspector {
    /// # Errors
    /// No usable root in `roots`.
    pub fn new(roots: Arc<RootCertStore>, provider: Arc<CryptoProvider>) -> Result<Self, String> {
        let algs = provider.signature_verification_algorithms;
        let inner = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(CertInspector {
            inner,
            roots,
            algs,
            seen: Mutex::new(None),
        })
    }

    fn take(&self) -> Option<CertFacts> {
        self.seen.lock().ok().and_then(|mut g| g.take())
    }
}

impl ServerCertVerifier for CertInspector {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let facts = CertFacts::gather(
            end_entity,
            intermediates,
            server_name,
            now,
            &self.roots,
            self.algs,
        );
        if let Ok(mut g) = self.seen.lock() {
            *g = Some(facts);
        }
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

// ---------------------------------------------------------------------------------------
// The run

/// Runs every step, handing each line to `out` as soon as it is known.
///
/// # Errors
/// Only a trust store that cannot make a verifier (no usable certificate in `--ca`); every
/// network outcome is in the [`Report`].
pub async fn run(opts: &DoctorOptions, out: &mut dyn FnMut(&Line)) -> Result<Report, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let inspector = Arc::new(CertInspector::new(opts.roots.clone(), provider.clone())?);
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(inspector.clone())
        .with_no_client_auth();
    let mut d = Doctor {
        opts,
        inspector,
        tls: Arc::new(tls),
        out,
        lines: Vec::new(),
        rules: Vec::new(),
    };
    let found = d.steps().await;
    Ok(d.finish(found))
}

/// What the passive-port steps found; None from `steps` when an earlier step failed.
struct PassiveFound {
    /// Where the control connection went.
    control: IpAddr,
    range: Option<RangeInclusive<u16>>,
    ports: BTreeMap<u16, PortTest>,
}

/// How many `PASV`s, and how long, to spend on the passive ports.
struct PortPlan {
    range: Option<RangeInclusive<u16>>,
    want: BTreeSet<u16>,
    /// No range known: test what the server hands out until it repeats itself.
    discovery: bool,
    max_attempts: usize,
    deadline: Instant,
}

impl PortPlan {
    fn new(range: Option<RangeInclusive<u16>>, opts: &DoctorOptions) -> Self {
        let want: BTreeSet<u16> = range.clone().map(Iterator::collect).unwrap_or_default();
        let discovery = want.is_empty();
        let n = if discovery { DISCOVERY_ATTEMPTS } else { want.len() };
        // Round-robin needs n PASVs; other IQs taking turns in between, refusals and lost
        // sessions need more. Each port may cost a data timeout and a few control round trips.
        let max_attempts = if discovery { n } else { 4 * n + 4 };
        let per_port = opts.data_timeout + 2 * opts.timeout;
        let budget = Duration::from_secs(30) + per_port * u32::try_from(n).unwrap_or(u32::MAX);
        PortPlan {
            range,
            want,
            discovery,
            max_attempts,
            deadline: Instant::now() + budget,
        }
    }

    fn done(&self, tested: &BTreeMap<u16, PortTest>) -> bool {
        !self.discovery && self.want.iter().all(|p| tested.contains_key(p))
    }
}

#[derive(Default)]
struct Found {
    tested: BTreeMap<u16, PortTest>,
    /// Announced addresses already checked.
    hosts: BTreeSet<Ipv4Addr>,
}

/// What to do with a session after one `PASV`.
enum Next {
    Keep,
    Fresh,
    Stop,
}

struct Doctor<'a> {
    opts: &'a DoctorOptions,
    inspector: Arc<CertInspector>,
    tls: Arc<rustls::ClientConfig>,
    out: &'a mut dyn FnMut(&Line),
    lines: Vec<Line>,
    rules: Vec<String>,
}

impl Doctor<'_> {
    fn say(&mut self, status: Status, step: &str, detail: impl Into<String>) {
        // One line each, even when a server's reply spans several.
        let detail: String = detail.into();
        let line = Line {
            status,
            step: step.to_owned(),
            detail: detail.lines().map(str::trim_end).collect::<Vec<_>>().join(" | "),
        };
        (self.out)(&line);
        self.lines.push(line);
    }

    async fn steps(&mut self) -> Option<PassiveFound> {
        let addr = self.resolve().await?;
        let cfg = ClientConfig {
            addr,
            server_name: self.opts.server_name.clone(),
            tls: self.tls.clone(),
            timeout: self.opts.timeout,
            pause_before_handshake: Duration::ZERO,
            bind_ip: self.opts.bind_ip,
        };
        let mut client = self.connect(&cfg).await?;
        self.login(&mut client).await?;
        let range = self.passive_range(&mut client).await?;
        let ports = self.test_ports(client, &cfg, range.clone()).await;
        Some(PassiveFound {
            control: addr.ip(),
            range,
            ports,
        })
    }

    async fn resolve(&mut self) -> Option<SocketAddr> {
        let (host, port) = (self.opts.host.as_str(), self.opts.port);
        let found: Vec<SocketAddr> = match tokio::net::lookup_host((host, port)).await {
            Ok(a) => a.collect(),
            Err(e) => {
                self.say(Status::Fail, "dns", format!("cannot resolve {host}: {e}"));
                return None;
            }
        };
        let same_family = |a: &&SocketAddr| self.opts.bind_ip.is_none_or(|b| b.is_ipv4() == a.is_ipv4());
        let Some(chosen) = found.iter().find(same_family).copied() else {
            self.say(Status::Fail, "dns", format!("{host} has no usable address"));
            return None;
        };
        let all: Vec<String> = found.iter().map(|a| a.ip().to_string()).collect();
        let detail = if host.parse::<IpAddr>().is_ok() {
            format!("{host} is an address, nothing to resolve")
        } else if found.len() > 1 {
            format!("{host} -> {} (using {})", all.join(", "), chosen.ip())
        } else {
            format!("{host} -> {}", all.join(", "))
        };
        self.say(Status::Ok, "dns", detail);
        Some(chosen)
    }

    /// TCP, greeting, AUTH TLS and the handshake, and the certificate: one line each.
    async fn connect(&mut self, cfg: &ClientConfig) -> Option<FtpsClient> {
        let mut retried = false;
        let mut result = FtpsClient::connect_staged(cfg.clone()).await;
        let mut facts = self.inspector.take();
        if let Err(e) = &result
            && retryable(e)
            && facts.as_ref().is_none_or(CertFacts::acceptable)
        {
            // libunftp's AUTH TLS race drops a few % of upgrades: every IQ retries once.
            let mut again = cfg.clone();
            again.pause_before_handshake = Duration::from_millis(100);
            result = FtpsClient::connect_staged(again).await;
            facts = self.inspector.take().or(facts);
            retried = true;
        }
        let (stage, error) = match result {
            Ok(c) => (None, Ok(c)),
            Err(e) => (Some(e.stage), Err(e)),
        };
        let passed = |s: Stage| stage.is_none_or(|failed| failed > s);
        if passed(Stage::Tcp) {
            self.say(Status::Ok, "tcp", format!("connected to {}", cfg.addr));
        }
        match error {
            Ok(c) => {
                self.say(Status::Ok, "greeting", c.greeting().text.clone());
                let note = if retried { " (on the second attempt)" } else { "" };
                self.say(Status::Ok, "tls", format!("AUTH TLS, {}{note}", c.tls_summary()));
                self.certificate(facts).then_some(c)
            }
            Err(e) => {
                self.report_connect_failure(cfg, e, facts, retried);
                None
            }
        }
    }

    fn report_connect_failure(
        &mut self,
        cfg: &ClientConfig,
        e: StageError,
        facts: Option<CertFacts>,
        retried: bool,
    ) {
        let t = cfg.timeout.as_secs();
        if let Some(g) = &e.greeting {
            self.say(Status::Ok, "greeting", g.text.clone());
        }
        match (e.stage, &e.error) {
            (Stage::Tcp, err) => {
                let why = match connect_failure(err).as_str() {
                    "refused" => "refused: a firewall rejects it, or nothing listens there".to_owned(),
                    other => other.to_owned(),
                };
                let detail = format!(
                    "{}: allow it ({})",
                    blocked_text(cfg.addr, &why),
                    allow_rule(cfg.addr)
                );
                self.rules.push(rule_line(cfg.addr));
                self.say(Status::Fail, "tcp", detail);
            }
            (Stage::Greeting, err) => {
                let detail = greeting_failure(err, cfg.addr.port(), t);
                self.say(Status::Fail, "greeting", detail);
            }
            (Stage::Handshake, _) if facts.as_ref().is_some_and(|f| !f.acceptable()) => {
                self.say(
                    Status::Ok,
                    "tls",
                    "AUTH TLS accepted; the handshake stopped at the certificate",
                );
                self.certificate(facts);
            }
            (Stage::AuthTls, ClientError::Reply { text, .. }) => {
                let detail = format!("AUTH TLS refused ({text}): the server does not offer explicit FTPS");
                self.say(Status::Fail, "tls", detail);
            }
            (_, err) => {
                let again = if retried {
                    " (also on a second attempt)"
                } else {
                    ""
                };
                self.say(Status::Fail, "tls", format!("TLS upgrade failed{again}: {err}"));
            }
        }
    }

    /// The certificate line; false when an IQ would refuse the certificate.
    fn certificate(&mut self, facts: Option<CertFacts>) -> bool {
        let Some(facts) = facts else {
            // A resumed session shows no certificate; the first connection never resumes.
            self.say(
                Status::Warn,
                "certificate",
                "not shown by the server (resumed session)",
            );
            return true;
        };
        let (status, detail) = assess_cert(&facts, &self.opts.host);
        self.say(status, "certificate", detail);
        status != Status::Fail
    }

    async fn login(&mut self, c: &mut FtpsClient) -> Option<()> {
        let login = &self.opts.login;
        let who = match login {
            Login::Probe => format!("the probe account ({})", probe::USER),
            Login::Device { user, .. } => format!("device {user}"),
        };
        match c.login(login.user(), login.password()).await {
            Ok(()) => {
                self.say(Status::Ok, "login", format!("logged in as {who}"));
                Some(())
            }
            Err(e) => {
                let detail = login_failure(login, &who, &e);
                self.say(Status::Fail, "login", detail);
                None
            }
        }
    }

    async fn passive_range(&mut self, c: &mut FtpsClient) -> Option<Option<RangeInclusive<u16>>> {
        let given = self.opts.passive_ports.clone();
        let show = |r: &RangeInclusive<u16>| format!("{}-{}", r.start(), r.end());
        let site = c.cmd(&format!("SITE {}", probe::SITE_PORTS), &[200]).await;
        let said = match &site {
            Ok(r) => probe::parse_ports_reply(&r.text).ok_or_else(|| r.text.clone()),
            Err(ClientError::Reply { text, .. }) => Err(text.clone()),
            Err(e) => {
                self.say(
                    Status::Fail,
                    "passive-range",
                    format!("control connection lost: {e}"),
                );
                return None;
            }
        };
        let (status, detail, range) = match (said, given) {
            (Ok(s), Some(g)) if s != g => (
                Status::Warn,
                format!(
                    "the server says {} (SITE PORTS); testing {} as --passive-ports says",
                    show(&s),
                    show(&g)
                ),
                Some(g),
            ),
            (Ok(s), _) => (Status::Ok, format!("{} (SITE PORTS)", show(&s)), Some(s)),
            (Err(text), Some(g)) => (
                Status::Ok,
                format!("{} (--passive-ports; no SITE PORTS answer: {text})", show(&g)),
                Some(g),
            ),
            (Err(text), None) => (
                Status::Warn,
                format!(
                    "unknown (no SITE PORTS answer: {text}); testing the ports the server hands out \
                     (give --passive-ports FIRST-LAST to test the whole range)"
                ),
                None,
            ),
        };
        self.say(status, "passive-range", detail);
        Some(range)
    }

    /// Issues `PASV` until every port of `range` has been tested (the server hands them out
    /// round-robin), within an attempt and a time budget.
    ///
    /// After a data connection that could not be made, the session goes on with the next
    /// `PASV`: fwdist replaces a session's unused offer with the new one. Should the server
    /// have closed the session meanwhile (its `ftps.data_connect_timeout_secs` ran out first,
    /// or another server), or after a failed transfer, the next attempt logs in afresh.
    async fn test_ports(
        &mut self,
        first: FtpsClient,
        cfg: &ClientConfig,
        range: Option<RangeInclusive<u16>>,
    ) -> BTreeMap<u16, PortTest> {
        let plan = PortPlan::new(range, self.opts);
        let mut found = Found::default();
        let mut session = Some(first);
        let mut attempts = 0;
        while attempts < plan.max_attempts && Instant::now() < plan.deadline && !plan.done(&found.tested) {
            let c = match session.take() {
                Some(c) => c,
                None => match self.fresh_session(cfg, plan.deadline).await {
                    Some(c) => c,
                    None => break,
                },
            };
            attempts += 1;
            let (c, next) = self.one_offer(c, cfg, &plan, &mut found).await;
            match next {
                Next::Keep => session = Some(c),
                Next::Fresh => quit(c).await,
                Next::Stop => {
                    quit(c).await;
                    break;
                }
            }
        }
        if let Some(c) = session {
            quit(c).await;
        }
        found.tested
    }

    /// A new logged-in session for the next attempts, waiting out transient refusals (421, or
    /// 530 from the probe's per-minute login limit once the probe has logged in before).
    async fn fresh_session(&mut self, cfg: &ClientConfig, deadline: Instant) -> Option<FtpsClient> {
        let login = &self.opts.login;
        let mut backoff = Duration::from_secs(2);
        loop {
            let e = match FtpsClient::open(cfg, login.user(), login.password()).await {
                Ok((c, _)) => return Some(c),
                Err(e) => e,
            };
            let rate_limited = matches!(login, Login::Probe) && e.code() == Some(530);
            if !(e.is_transient() || rate_limited) || Instant::now() + backoff >= deadline {
                self.say(
                    Status::Warn,
                    "passive",
                    format!("no new session for the next ports: {e}"),
                );
                return None;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(20));
        }
    }

    /// One `PASV` and, for a port not tested yet, its test. Says what to do with the session.
    async fn one_offer(
        &mut self,
        mut c: FtpsClient,
        cfg: &ClientConfig,
        plan: &PortPlan,
        found: &mut Found,
    ) -> (FtpsClient, Next) {
        let announced = match c.pasv_announced().await {
            Ok(a) => a,
            Err(ClientError::Reply { code: 425, .. }) => {
                // Every port has an offer outstanding (ours expire, or other IQs): wait.
                tokio::time::sleep(Duration::from_secs(1)).await;
                return (c, Next::Keep);
            }
            Err(e @ ClientError::Reply { .. }) => {
                self.say(Status::Fail, "passive", format!("PASV refused: {e}"));
                return (c, Next::Stop);
            }
            // The server closed the session (e.g. after an unused offer): start afresh.
            Err(_) => return (c, Next::Fresh),
        };
        if found.hosts.insert(*announced.ip())
            && let Some(w) = pasv_host_warning(cfg.addr.ip(), *announced.ip())
        {
            self.say(Status::Warn, "pasv-address", w);
        }
        let port = announced.port();
        if found.tested.contains_key(&port) {
            // Handed out again: the next PASV gets the next port of the rotation.
            let next = if plan.discovery { Next::Stop } else { Next::Keep };
            return (c, next);
        }
        if let Some(r) = plan.range.as_ref().filter(|r| !r.contains(&port)) {
            let detail = format!(
                "the server handed out port {port}, outside {}-{}",
                r.start(),
                r.end()
            );
            self.say(Status::Warn, "passive-range", detail);
        }
        let to = data_target(announced, cfg.addr.ip());
        let result = probe_port(&mut c, to, self.opts.data_timeout, &self.opts.login).await;
        self.say_port(to, &result);
        let next = match result {
            // No data connection was made, so nothing was sent: the session is intact.
            PortResult::Ok(_) | PortResult::Blocked(_) => Next::Keep,
            _ => Next::Fresh,
        };
        let test = PortTest {
            port,
            host: to.ip(),
            result,
        };
        found.tested.insert(port, test);
        (c, next)
    }

    fn say_port(&mut self, to: SocketAddr, result: &PortResult) {
        let step = format!("port {}", to.port());
        match result {
            PortResult::Ok(d) => self.say(Status::Ok, &step, d.clone()),
            PortResult::Blocked(why) => self.say(Status::Fail, &step, blocked_text(to, why)),
            PortResult::TlsFailed(e) => {
                let detail = format!("TLS on the data connection failed ({e}): a middlebox interferes?");
                self.say(Status::Fail, &step, detail);
            }
            PortResult::HashMismatch(d) | PortResult::Failed(d) => self.say(Status::Fail, &step, d.clone()),
        }
    }

    fn finish(mut self, found: Option<PassiveFound>) -> Report {
        let step_failed = found.is_none();
        let elsewhere = found
            .as_ref()
            .is_some_and(|f| f.ports.values().any(|p| p.host != f.control && !p.result.is_ok()));
        let (range, tested) = found.map_or((None, BTreeMap::new()), |f| (f.range, f.ports));
        let ports: Vec<PortTest> = tested.values().cloned().collect();
        let untested: Vec<u16> = range
            .clone()
            .map(|r| r.filter(|p| !tested.contains_key(p)).collect())
            .unwrap_or_default();
        for p in &ports {
            if let PortResult::Blocked(_) = p.result {
                self.rules.push(rule_line(SocketAddr::new(p.host, p.port)));
            }
        }
        let v = verdict(step_failed, &ports, untested.len());
        let mut detail = summary(v, step_failed, &ports, &untested);
        if elsewhere {
            detail.push_str(
                "; the failing data connections went to the address PASV announced, not the one \
                 reached: fix the server's ftps.public_host (see pasv-address) before any rule",
            );
        }
        let status = match v {
            Verdict::Works => Status::Ok,
            Verdict::Degraded => Status::Warn,
            Verdict::Broken => Status::Fail,
        };
        self.say(status, "summary", detail);
        Report {
            server: format!("{}:{}", self.opts.host, self.opts.port),
            lines: self.lines,
            passive_range: range.map(|r| (*r.start(), *r.end())),
            ports,
            untested,
            rules: self.rules,
            verdict: v,
            exit_code: v.exit_code(),
        }
    }
}

/// The summary line's detail.
fn summary(v: Verdict, step_failed: bool, ports: &[PortTest], untested: &[u16]) -> String {
    let bad = ports.iter().filter(|p| !p.result.is_ok()).count();
    let total = ports.len() + untested.len();
    let mut detail = match v {
        Verdict::Works => format!("an IQ update works from here: all {total} passive ports pass"),
        Verdict::Degraded if bad > 0 => format!(
            "updates work but degraded: {bad} of {total} passive ports fail, so an IQ that draws one needs a retry"
        ),
        Verdict::Degraded => format!(
            "updates work, but {} of {total} passive ports went untested",
            untested.len()
        ),
        Verdict::Broken if step_failed => "an IQ update cannot work from here (see the FAIL above)".into(),
        Verdict::Broken => "an IQ update cannot work from here: no passive port works".into(),
    };
    if !untested.is_empty() {
        detail.push_str(&format!(
            "; untested (attempts or time ran out): {}",
            list(untested)
        ));
    }
    detail
}

fn list(ports: &[u16]) -> String {
    ports.iter().map(u16::to_string).collect::<Vec<_>>().join(", ")
}

/// A failure worth one more connection: the TLS upgrade (libunftp's AUTH TLS race).
fn retryable(e: &StageError) -> bool {
    e.stage >= Stage::AuthTls
        && matches!(
            e.error,
            ClientError::Handshake(_) | ClientError::Io(_) | ClientError::Protocol(_)
        )
}

fn greeting_failure(e: &ClientError, port: u16, secs: u64) -> String {
    match e {
        ClientError::Timeout(_) => format!(
            "port {port} is open but no FTP greeting came within {secs} s: not an FTP server, or a \
             middlebox swallows the greeting"
        ),
        ClientError::Reply { code: 421, text } => format!(
            "{text}: the server has too many sessions open from this address (ftps.max_sessions_per_ip); \
             transient, try again when other IQs from here are done"
        ),
        ClientError::Reply { text, .. } => format!("expected 220, got {text}"),
        ClientError::Protocol(p) => format!("something that is not an FTP server answers: {p}"),
        other => format!("no greeting: {other} (the server or a middlebox closed the connection)"),
    }
}

fn login_failure(login: &Login, who: &str, e: &ClientError) -> String {
    match (login, e) {
        (Login::Probe, ClientError::Reply { code: 530, text }) => format!(
            "{text}: the server refused {who}: the probe is disabled on this server \
             (ftps.probe_enabled = false; ask its operator, or use --device MAC --secret S), or \
             this address used up the probe's logins for the minute (ftps.probe_logins_per_minute; \
             try again in a minute)"
        ),
        (Login::Device { .. }, ClientError::Reply { code: 530, text }) => format!(
            "{text}: the server refused {who}: wrong --device or --secret, or the device is unknown, \
             disabled, or locked out after failed logins"
        ),
        (_, ClientError::Reply { code: 421, text }) => format!(
            "{text}: too many sessions from this address, or the probe's login rate limit \
             (ftps.probe_logins_per_minute); transient, try again in a minute"
        ),
        (_, other) => format!("login as {who} failed: {other}"),
    }
}

/// Connects to one passive port and fetches over it: `/probe.bin` (checking its SHA-256) as
/// the probe, a directory listing as a device. No `RETR` when the connection fails.
async fn probe_port(c: &mut FtpsClient, to: SocketAddr, data_timeout: Duration, login: &Login) -> PortResult {
    let tcp = match c.connect_data(to, data_timeout).await {
        Ok(t) => t,
        Err(e) => return PortResult::Blocked(connect_failure(&e)),
    };
    let (command, limit) = match login {
        Login::Probe => (format!("RETR /{}", probe::FILE), probe::SIZE as u64),
        Login::Device { .. } => ("LIST /".to_owned(), LISTING_LIMIT),
    };
    let started = Instant::now();
    let mut got = Vec::new();
    match c.transfer_over(tcp, &command, limit, &mut got).await {
        Ok(n) => check_transfer(login, &got, n, started.elapsed()),
        Err(ClientError::Handshake(e)) => PortResult::TlsFailed(e),
        Err(e) => PortResult::Failed(format!("{command}: {e}")),
    }
}

fn check_transfer(login: &Login, got: &[u8], n: u64, took: Duration) -> PortResult {
    let secs = took.as_secs_f64();
    if let Login::Device { .. } = login {
        return PortResult::Ok(format!("directory listing over TLS ({n} bytes, {secs:.2} s)"));
    }
    let hash = hex::encode(Sha256::digest(got));
    let want = probe::sha256_hex();
    if got.len() == probe::SIZE && hash == want {
        PortResult::Ok(format!(
            "/{} over TLS, {n} bytes, sha256 ok ({secs:.2} s)",
            probe::FILE
        ))
    } else {
        PortResult::HashMismatch(format!(
            "/{} arrived altered: {n} bytes with sha256 {hash}, expected {} bytes with sha256 {want}",
            probe::FILE,
            probe::SIZE
        ))
    }
}

/// Says goodbye without waiting long on a session the server may already have closed.
async fn quit(c: FtpsClient) {
    let _ = tokio::time::timeout(Duration::from_secs(2), c.quit()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test(port: u16, result: PortResult) -> PortTest {
        PortTest {
            port,
            host: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 5)),
            result,
        }
    }

    #[test]
    fn verdict_from_steps_and_ports() {
        let ok = |p| test(p, PortResult::Ok("fine".into()));
        let blocked = |p| test(p, PortResult::Blocked("timed out".into()));
        assert_eq!(verdict(false, &[ok(1), ok(2)], 0), Verdict::Works);
        assert_eq!(verdict(false, &[ok(1), blocked(2)], 0), Verdict::Degraded);
        assert_eq!(verdict(false, &[ok(1), ok(2)], 1), Verdict::Degraded);
        let tls = test(3, PortResult::TlsFailed("reset".into()));
        assert_eq!(verdict(false, &[ok(1), tls], 0), Verdict::Degraded);
        assert_eq!(verdict(false, &[blocked(1), blocked(2)], 0), Verdict::Broken);
        assert_eq!(verdict(false, &[], 0), Verdict::Broken);
        assert_eq!(verdict(true, &[ok(1)], 0), Verdict::Broken);
        let codes: Vec<u8> = [Verdict::Works, Verdict::Degraded, Verdict::Broken]
            .iter()
            .map(|v| v.exit_code())
            .collect();
        assert_eq!(codes, [0, 3, 1]);
    }

    #[test]
    fn rules_name_the_exact_destination() {
        let to: SocketAddr = "203.0.113.5:50002".parse().unwrap();
        assert_eq!(
            rule_line(to),
            "outbound TCP to 203.0.113.5:50002 is blocked: allow it \
             (nft: add rule inet filter forward ip daddr 203.0.113.5 tcp dport 50002 accept)"
        );
        assert_eq!(
            blocked_text(to, "timed out"),
            "outbound TCP to 203.0.113.5:50002 is blocked (timed out)"
        );
        let v6: SocketAddr = "[2001:db8::5]:2121".parse().unwrap();
        assert_eq!(
            allow_rule(v6),
            "nft: add rule inet filter forward ip6 daddr 2001:db8::5 tcp dport 2121 accept"
        );
    }

    #[test]
    fn connect_failures_in_a_firewall_s_words() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let refused = ClientError::Connect {
            addr,
            source: io::ErrorKind::ConnectionRefused.into(),
        };
        assert_eq!(connect_failure(&refused), "refused");
        assert_eq!(connect_failure(&ClientError::Timeout("x")), "timed out");
    }

    #[test]
    fn pasv_address_checks() {
        let public: IpAddr = "203.0.113.5".parse().unwrap();
        let private = Ipv4Addr::new(10, 0, 0, 5);
        assert_eq!(pasv_host_warning(public, Ipv4Addr::new(203, 0, 113, 5)), None);
        let w = pasv_host_warning(public, private).unwrap();
        assert!(
            w.contains("private address 10.0.0.5") && w.contains("ftps.public_host to 203.0.113.5"),
            "{w}"
        );
        let w = pasv_host_warning(public, Ipv4Addr::new(198, 51, 100, 7)).unwrap();
        assert!(w.contains("not 203.0.113.5"), "{w}");
        assert!(pasv_host_warning(public, Ipv4Addr::UNSPECIFIED).is_some());
        // A private server reached privately: a different address is still worth saying.
        let lan: IpAddr = "192.168.1.2".parse().unwrap();
        assert!(pasv_host_warning(lan, private).is_some());
        assert_eq!(
            data_target(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 50000), public),
            SocketAddr::new(public, 50000)
        );
        assert_eq!(
            data_target(SocketAddrV4::new(private, 50000), public),
            SocketAddr::new(IpAddr::V4(private), 50000)
        );
    }

    #[test]
    fn public_and_private_addresses() {
        for ip in ["203.0.113.5", "8.8.8.8", "2001:db8::1"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.0.1",
            "127.0.0.1",
            "100.64.0.1",
            "169.254.1.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn lines_print_as_status_step_detail() {
        let line = |status| Line {
            status,
            step: "tcp".into(),
            detail: "d".into(),
        };
        assert_eq!(line(Status::Ok).to_string(), "ok   tcp: d");
        assert_eq!(line(Status::Warn).to_string(), "warn tcp: d");
        assert_eq!(line(Status::Fail).to_string(), "FAIL tcp: d");
    }

    #[test]
    fn failures_say_what_to_do() {
        let e530 = ClientError::Reply {
            code: 530,
            text: "530 Not logged in".into(),
        };
        assert!(login_failure(&Login::Probe, "the probe", &e530).contains("probe is disabled"));
        let dev = Login::Device {
            user: "aa:bb:cc:dd:ee:ff".into(),
            secret: "s".into(),
        };
        assert!(login_failure(&dev, "device", &e530).contains("wrong --device or --secret"));
        let e421 = ClientError::Reply {
            code: 421,
            text: "421 too many".into(),
        };
        assert!(login_failure(&dev, "device", &e421).contains("transient"));
        assert!(greeting_failure(&e421, 2121, 5).contains("too many sessions"));
        assert!(greeting_failure(&ClientError::Timeout("a reply"), 2121, 5).contains("port 2121 is open"));
    }

    #[test]
    fn the_probe_file_is_checked_by_hash() {
        let t = Duration::from_millis(10);
        let good = probe::bytes();
        assert!(check_transfer(&Login::Probe, &good, good.len() as u64, t).is_ok());
        let mut bad = good.clone();
        bad[1000] ^= 1;
        let r = check_transfer(&Login::Probe, &bad, bad.len() as u64, t);
        assert!(matches!(r, PortResult::HashMismatch(_)), "{r:?}");
        let short = &good[..100];
        assert!(!check_transfer(&Login::Probe, short, 100, t).is_ok());
    }

    const DAY: i64 = 86_400;

    /// A self-signed certificate for `names`, valid from `from` to `to` days from now.
    fn cert(names: &[&str], from: i64, to: i64) -> CertificateDer<'static> {
        let mut p =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now + time::Duration::seconds(from * DAY);
        p.not_after = now + time::Duration::seconds(to * DAY);
        let key = rcgen::KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().der().clone()
    }

    fn cert_named(cn: &str) -> CertificateDer<'static> {
        let mut p = rcgen::CertificateParams::new(vec!["ftp.example.com".to_owned()]).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().der().clone()
    }

    fn facts(ee: &CertificateDer<'_>, root: &CertificateDer<'_>, host: &str) -> CertFacts {
        let mut roots = RootCertStore::empty();
        roots.add(root.clone()).unwrap();
        let provider = rustls::crypto::ring::default_provider();
        let name = ServerName::try_from(host.to_owned()).unwrap();
        let now = UnixTime::now();
        CertFacts::gather(
            ee,
            &[],
            &name,
            now,
            &roots,
            provider.signature_verification_algorithms,
        )
    }

    #[test]
    fn certificate_good_expiring_expired_misnamed_untrusted() {
        let good = cert(&["ftp.example.com"], -1, 365);
        let (s, d) = assess_cert(&facts(&good, &good, "ftp.example.com"), "ftp.example.com");
        assert_eq!(s, Status::Ok, "{d}");
        assert!(d.contains("days left") && d.contains("chains to --ca"), "{d}");

        let soon = cert(&["ftp.example.com"], -300, 10);
        let (s, d) = assess_cert(&facts(&soon, &soon, "ftp.example.com"), "ftp.example.com");
        assert_eq!(s, Status::Warn, "{d}");
        assert!(d.contains("renew"), "{d}");

        let old = cert(&["ftp.example.com"], -400, -3);
        let f = facts(&old, &old, "ftp.example.com");
        assert_eq!(f.chain, Ok(()), "trust is judged apart from expiry");
        let (s, d) = assess_cert(&f, "ftp.example.com");
        assert_eq!(s, Status::Fail);
        assert!(d.contains("expired") && !d.contains("untrusted"), "{d}");
        assert!(!f.acceptable());

        let (s, d) = assess_cert(&facts(&good, &good, "other.example.com"), "other.example.com");
        assert_eq!(s, Status::Fail);
        assert!(
            d.contains("name mismatch") && d.contains("ftp.example.com"),
            "{d}"
        );

        // Same issuer name, other key (rcgen's default subject): an impostor or a stale --ca.
        let stranger = cert(&["ftp.example.com"], -1, 365);
        let (s, d) = assess_cert(&facts(&good, &stranger, "ftp.example.com"), "ftp.example.com");
        assert_eq!(s, Status::Fail);
        assert!(d.contains("untrusted") && d.contains("--ca"), "{d}");
        let (s, d) = assess_cert(
            &facts(
                &cert_named("fwdist"),
                &cert_named("someone else"),
                "ftp.example.com",
            ),
            "ftp.example.com",
        );
        assert_eq!(s, Status::Fail);
        assert!(d.contains("not issued by a certificate in --ca"), "{d}");

        let ip = cert(&["127.0.0.1"], -1, 365);
        let (s, d) = assess_cert(&facts(&ip, &ip, "127.0.0.1"), "127.0.0.1");
        assert_eq!(s, Status::Ok, "{d}");
    }
}
