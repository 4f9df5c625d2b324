//! `fwdist doctor`: run from a customer's network, it says step by step whether an IQ update
//! would work there and, when not, which firewall rule to add (issue 4).
//!
//! Steps, in order, stopping at the first that makes the rest impossible: `dns`, `tcp`,
//! `greeting`, `tls`, `certificate`, `login`, `passive-range`, then one `port N` line per
//! passive port (PASV, data connection, TLS, `RETR /probe.bin`, SHA-256), then `summary`.
//! Against a one-port server (`SITE PORTS` says `passive=same`) the `passive-range` line says
//! so and the one `port N` line is the control port's: its PASV must name the control port.
//! It talks through the reference IQ's own client ([`super::client`]) and shares the probe
//! account's facts with the server through [`fwdist_release::probe`]; it prints nothing itself.
//!
//! The pure parts — the verdict, the rule text, the PASV address check, the certificate
//! assessment — have their unit tests next to them; `tests/it/doctor.rs` runs the whole
//! against the real server.
//!
//! The certificate is judged against [`TrustRoots`]: the system's by default, or `--ca`'s.
//! A certificate an IQ would refuse stops the run at the `certificate` step, unless
//! [`DoctorOptions::insecure`]: then the line still says it is NOT trusted, the later steps
//! run, and the verdict is at best [`Verdict::Untrusted`] (exit 4), never `works`.
//!
//! Here: the options, the report and the step driver. `connect.rs`: the steps up to `login`;
//! `passive.rs`: `passive-range` and the passive ports; `cert.rs`: the certificate inspector
//! and its assessment; `roots.rs`: the trust roots (system or `--ca`); `verdict.rs`: the
//! verdict, the port results, the rule and summary texts.

mod cert;
mod connect;
mod passive;
pub mod roots;
mod verdict;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use serde::Serialize;

use super::client::ClientConfig;
use fwdist_release::probe;
use verdict::{Scope, summary};

pub use cert::{CertFacts, CertInspector, EXPIRY_WARN_DAYS, assess_cert};
pub use roots::{RootSource, TrustRoots};
pub use verdict::{
    PortResult, PortTest, Verdict, allow_rule, blocked_text, is_public, pasv_host_warning, rule_line, verdict,
};

/// What to check, and how.
#[derive(Clone)]
pub struct DoctorOptions {
    /// The server as IQs reach it.
    pub host: String,
    pub port: u16,
    /// The name its certificate must carry (HOST).
    pub server_name: ServerName<'static>,
    /// What the certificate must chain to: the system's roots, or `--ca`'s.
    pub roots: TrustRoots,
    /// `--insecure`: go on past a certificate an IQ would refuse (having said what is wrong).
    pub insecure: bool,
    pub login: Login,
    /// `--passive-ports`: tested instead of what `SITE PORTS` says, or when it says nothing
    /// (a one-port server hands out no other port: there it is ignored, with a warning).
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

/// Where the server's passive data connections go, in the [`Report`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PassiveMode {
    /// Ports of their own (`SITE PORTS` said `passive=FIRST-LAST`, or `--passive-ports`).
    Range,
    /// The control port (`SITE PORTS` said `passive=same`).
    Same,
}

/// What the passive-port steps test: from `SITE PORTS` and `--passive-ports`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// Every port of a range.
    Range(RangeInclusive<u16>),
    /// One port, the control port as the doctor reached it: one PASV must name it.
    Same(u16),
    /// Neither says: whatever the server hands out.
    Unknown,
}

impl Target {
    fn mode(&self) -> Option<PassiveMode> {
        match self {
            Target::Range(_) => Some(PassiveMode::Range),
            Target::Same(_) => Some(PassiveMode::Same),
            Target::Unknown => None,
        }
    }

    /// The ports data connections should go to; `None` when unknown.
    fn ports(&self) -> Option<RangeInclusive<u16>> {
        match self {
            Target::Range(r) => Some(r.clone()),
            Target::Same(p) => Some(*p..=*p),
            Target::Unknown => None,
        }
    }
}

/// Everything the doctor found; `--json` prints it as is.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub server: String,
    pub lines: Vec<Line>,
    /// `range`, `same` (one port: the control port), or null when the server did not say
    /// (no `SITE PORTS` answer and no `--passive-ports`).
    pub passive_mode: Option<PassiveMode>,
    /// The ports data connections should go to: the range, or in one-port mode the control
    /// port (first = last); null when unknown.
    pub passive_range: Option<(u16, u16)>,
    pub ports: Vec<PortTest>,
    pub untested: Vec<u16>,
    /// What the certificate was judged against: `system` or `--ca FILE`.
    pub roots: String,
    pub insecure: bool,
    /// One line per blocked destination: what to allow, as an nftables rule.
    pub rules: Vec<String>,
    pub verdict: Verdict,
    pub exit_code: u8,
}

/// Runs every step, handing each line to `out` as soon as it is known.
///
/// # Errors
/// Only a trust store that cannot make a verifier (no usable root in it); every network
/// outcome is in the [`Report`].
pub async fn run(opts: &DoctorOptions, out: &mut dyn FnMut(&Line)) -> Result<Report, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let inspector = Arc::new(CertInspector::new(
        opts.roots.clone(),
        provider.clone(),
        opts.insecure,
    )?);
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
        untrusted: false,
    };
    let found = d.steps().await;
    Ok(d.finish(found))
}

/// What the passive-port steps found; None from `steps` when an earlier step failed.
struct PassiveFound {
    /// Where the control connection went.
    control: IpAddr,
    target: Target,
    ports: BTreeMap<u16, PortTest>,
}

/// The step driver: runs the steps in order, saying each line as it goes, and keeps them
/// (and the rules to add) for the [`Report`].
struct Doctor<'a> {
    opts: &'a DoctorOptions,
    inspector: Arc<CertInspector>,
    tls: Arc<rustls::ClientConfig>,
    out: &'a mut dyn FnMut(&Line),
    lines: Vec<Line>,
    rules: Vec<String>,
    /// The certificate failed and `--insecure` went on past it.
    untrusted: bool,
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
            sessions: crate::resume::shared_store(),
            timeout: self.opts.timeout,
            pause_before_handshake: Duration::ZERO,
            bind_ip: self.opts.bind_ip,
        };
        let mut client = self.connect(&cfg).await?;
        self.login(&mut client).await?;
        let target = self.passive_range(&mut client).await?;
        let ports = self.test_ports(client, &cfg, &target).await;
        Some(PassiveFound {
            control: addr.ip(),
            target,
            ports,
        })
    }

    fn finish(mut self, found: Option<PassiveFound>) -> Report {
        let step_failed = found.is_none();
        let elsewhere = found
            .as_ref()
            .is_some_and(|f| f.ports.values().any(|p| p.host != f.control && !p.result.is_ok()));
        let (target, tested) = found.map_or((Target::Unknown, BTreeMap::new()), |f| (f.target, f.ports));
        let ports: Vec<PortTest> = tested.values().cloned().collect();
        let untested: Vec<u16> = target
            .ports()
            .map(|r| r.filter(|p| !tested.contains_key(p)).collect())
            .unwrap_or_default();
        for p in &ports {
            if let PortResult::Blocked(_) = p.result {
                self.rules.push(rule_line(SocketAddr::new(p.host, p.port)));
            }
        }
        let v = verdict(step_failed, self.untrusted, &ports, untested.len());
        let scope = match target {
            Target::Same(p) => Scope::OnePort(p),
            Target::Range(_) | Target::Unknown => Scope::Ports,
        };
        let mut detail = summary(v, scope, step_failed, self.untrusted, &ports, &untested);
        if elsewhere {
            detail.push_str(
                "; the failing data connections went to the address PASV announced, not the one \
                 reached: fix the server's ftps.public_host (see pasv-address) before any rule",
            );
        }
        let status = match v {
            Verdict::Works => Status::Ok,
            Verdict::Degraded => Status::Warn,
            Verdict::Untrusted | Verdict::Broken => Status::Fail,
        };
        self.say(status, "summary", detail);
        Report {
            server: format!("{}:{}", self.opts.host, self.opts.port),
            lines: self.lines,
            passive_mode: target.mode(),
            passive_range: target.ports().map(|r| (*r.start(), *r.end())),
            ports,
            untested,
            roots: self.opts.roots.source.describe(),
            insecure: self.opts.insecure,
            rules: self.rules,
            verdict: v,
            exit_code: v.exit_code(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
