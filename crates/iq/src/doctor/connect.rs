//! The steps up to a logged-in session: `dns`, `tcp`, `greeting`, `tls`, `certificate`,
//! `login`, and what to say when one fails.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::verdict::{allow_rule, blocked_text, connect_failure, rule_line};
use super::{CertFacts, Doctor, Login, Status, assess_cert};
use crate::client::{ClientConfig, ClientError, FtpsClient, Stage, StageError};
use fwdist_release::probe;

impl Doctor<'_> {
    pub(super) async fn resolve(&mut self) -> Option<SocketAddr> {
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
    pub(super) async fn connect(&mut self, cfg: &ClientConfig) -> Option<FtpsClient> {
        let mut retried = false;
        let mut result = FtpsClient::connect_staged(cfg.clone()).await;
        let mut facts = self.inspector.take();
        if let Err(e) = &result
            && retryable(e)
            && (self.opts.insecure || facts.as_ref().is_none_or(CertFacts::acceptable))
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

    /// The lines for a connection that failed at `e.stage`: the greeting if one came, then
    /// what failed.
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
            (Stage::Tcp, err) => self.tcp_blocked(cfg.addr, err),
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

    /// The `tcp` line for a control connection that could not be made, with the rule that
    /// allows it.
    fn tcp_blocked(&mut self, to: SocketAddr, err: &ClientError) {
        let why = match connect_failure(err).as_str() {
            "refused" => "refused: a firewall rejects it, or nothing listens there".to_owned(),
            other => other.to_owned(),
        };
        let detail = format!("{}: allow it ({})", blocked_text(to, &why), allow_rule(to));
        self.rules.push(rule_line(to));
        self.say(Status::Fail, "tcp", detail);
    }

    /// The certificate line; false when an IQ would refuse the certificate and the run must
    /// stop there (without `--insecure`).
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
        if status == Status::Fail && self.opts.insecure {
            self.untrusted = true;
            let detail = format!("NOT trusted, an IQ would refuse it (going on: --insecure): {detail}");
            self.say(Status::Fail, "certificate", detail);
            return true;
        }
        self.say(status, "certificate", detail);
        status != Status::Fail
    }

    pub(super) async fn login(&mut self, c: &mut FtpsClient) -> Option<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
