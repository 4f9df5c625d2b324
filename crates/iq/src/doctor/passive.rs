//! The passive ports: `passive-range` (what `SITE PORTS` says), then one `PASV` after another
//! until every port of the range has been tested, one `port N` line each. A one-port server
//! (`passive=same`) gets one `PASV`, which must name the control port, and one `port N` line.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

use super::verdict::{blocked_text, connect_failure, data_target};
use super::{Doctor, DoctorOptions, Login, PortResult, PortTest, Status, Target, pasv_host_warning};
use crate::client::{ClientConfig, ClientError, FtpsClient};
use fwdist_release::probe::{self, Ports};

/// Passive ports tried when the range is unknown (no `SITE PORTS`, no `--passive-ports`).
const DISCOVERY_ATTEMPTS: usize = 8;
/// A listing is all a device account can fetch everywhere; bound it anyway.
const LISTING_LIMIT: u64 = 1 << 20;

/// How many `PASV`s, and how long, to spend on the passive ports.
struct PortPlan {
    target: Target,
    want: BTreeSet<u16>,
    /// No range known: test what the server hands out until it repeats itself.
    discovery: bool,
    max_attempts: usize,
    deadline: Instant,
}

impl PortPlan {
    fn new(target: &Target, opts: &DoctorOptions) -> Self {
        let want: BTreeSet<u16> = target.ports().map(Iterator::collect).unwrap_or_default();
        let discovery = want.is_empty();
        let n = if discovery { DISCOVERY_ATTEMPTS } else { want.len() };
        // Round-robin needs n PASVs; other IQs taking turns in between, refusals and lost
        // sessions need more. Each port may cost a data timeout and a few control round trips.
        let max_attempts = if discovery { n } else { 4 * n + 4 };
        let per_port = opts.data_timeout + 2 * opts.timeout;
        let budget = Duration::from_secs(30) + per_port * u32::try_from(n).unwrap_or(u32::MAX);
        PortPlan {
            target: target.clone(),
            want,
            discovery,
            max_attempts,
            deadline: Instant::now() + budget,
        }
    }

    fn done(&self, tested: &BTreeMap<u16, PortTest>) -> bool {
        match self.target {
            // One offer tells it all: the control port, or the port it wrongly names instead.
            Target::Same(_) => !tested.is_empty(),
            Target::Range(_) => self.want.iter().all(|p| tested.contains_key(p)),
            Target::Unknown => false,
        }
    }

    /// What is wrong with a port the server handed out, for a `passive-range` warning.
    fn unexpected(&self, port: u16, control: u16) -> Option<String> {
        match &self.target {
            Target::Same(c) if port != *c => Some(format!(
                "the server says one port (SITE PORTS passive=same), but PASV handed out port \
                 {port}, not the control port {c}: IQs whose firewall allows only {c} cannot \
                 fetch (testing {port})"
            )),
            Target::Range(r) if port == control => Some(format!(
                "the server handed out the control port {port}, though SITE PORTS says {}-{} \
                 (a one-port server says passive=same)",
                r.start(),
                r.end()
            )),
            Target::Range(r) if !r.contains(&port) => Some(format!(
                "the server handed out port {port}, outside {}-{}",
                r.start(),
                r.end()
            )),
            _ => None,
        }
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

impl Doctor<'_> {
    pub(super) async fn passive_range(&mut self, c: &mut FtpsClient) -> Option<Target> {
        let given = self.opts.passive_ports.clone();
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
        let (status, detail, target) = choose_target(said, given, self.opts.port);
        self.say(status, "passive-range", detail);
        Some(target)
    }

    /// Issues `PASV` until every port of the range has been tested (the server hands them
    /// out round-robin), or in one-port mode once, within an attempt and a time budget.
    ///
    /// After a data connection that could not be made, the session goes on with the next
    /// `PASV`: fwdist replaces a session's unused offer with the new one. Should the server
    /// have closed the session meanwhile (its `ftps.data_connect_timeout_secs` ran out first,
    /// or another server), or after a failed transfer, the next attempt logs in afresh.
    pub(super) async fn test_ports(
        &mut self,
        first: FtpsClient,
        cfg: &ClientConfig,
        target: &Target,
    ) -> BTreeMap<u16, PortTest> {
        let plan = PortPlan::new(target, self.opts);
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
        if let Some(detail) = plan.unexpected(port, self.opts.port) {
            self.say(Status::Warn, "passive-range", detail);
        }
        let next = self.test_port(&mut c, announced, cfg.addr.ip(), found).await;
        (c, next)
    }

    /// Tests the port of a `227` reply, says how it fared and records it.
    async fn test_port(
        &mut self,
        c: &mut FtpsClient,
        announced: SocketAddrV4,
        control: IpAddr,
        found: &mut Found,
    ) -> Next {
        let to = data_target(announced, control);
        let result = probe_port(c, to, self.opts.data_timeout, &self.opts.login).await;
        self.say_port(to, &result);
        let next = match result {
            // No data connection was made, so nothing was sent: the session is intact.
            PortResult::Ok(_) | PortResult::Blocked(_) => Next::Keep,
            _ => Next::Fresh,
        };
        let test = PortTest {
            port: announced.port(),
            host: to.ip(),
            result,
        };
        found.tested.insert(announced.port(), test);
        next
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
}

/// The `passive-range` line and what to test, from what `SITE PORTS` said (or its refusal's
/// text), `--passive-ports`, and the control port the doctor reached.
fn choose_target(
    said: Result<Ports, String>,
    given: Option<RangeInclusive<u16>>,
    control: u16,
) -> (Status, String, Target) {
    let show = |r: &RangeInclusive<u16>| format!("{}-{}", r.start(), r.end());
    let one_port = format!("one port: data connections use the control port {control} (SITE PORTS)");
    match (said, given) {
        (Ok(Ports::Same), None) => (Status::Ok, one_port, Target::Same(control)),
        // The server hands out no other port: a range could never be tested.
        (Ok(Ports::Same), Some(g)) => (
            Status::Warn,
            format!(
                "{one_port}; --passive-ports {} ignored: this server hands out no other port",
                show(&g)
            ),
            Target::Same(control),
        ),
        (Ok(Ports::Range(s)), Some(g)) if s != g => (
            Status::Warn,
            format!(
                "the server says {} (SITE PORTS); testing {} as --passive-ports says",
                show(&s),
                show(&g)
            ),
            Target::Range(g),
        ),
        (Ok(Ports::Range(s)), _) => (Status::Ok, format!("{} (SITE PORTS)", show(&s)), Target::Range(s)),
        (Err(text), Some(g)) => (
            Status::Ok,
            format!("{} (--passive-ports; no SITE PORTS answer: {text})", show(&g)),
            Target::Range(g),
        ),
        (Err(text), None) => (
            Status::Warn,
            format!(
                "unknown (no SITE PORTS answer: {text}); testing the ports the server hands out \
                 (give --passive-ports FIRST-LAST to test the whole range)"
            ),
            Target::Unknown,
        ),
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

    fn plan(target: Target) -> PortPlan {
        PortPlan {
            want: target.ports().map(Iterator::collect).unwrap_or_default(),
            discovery: target == Target::Unknown,
            target,
            max_attempts: 8,
            deadline: Instant::now(),
        }
    }

    fn tested(port: u16) -> BTreeMap<u16, PortTest> {
        let t = PortTest {
            port,
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            result: PortResult::Ok("fine".into()),
        };
        BTreeMap::from([(port, t)])
    }

    #[test]
    fn a_one_port_server_is_tested_on_the_control_port_whatever_the_arguments() {
        let (status, detail, target) = choose_target(Ok(Ports::Same), None, 2121);
        assert_eq!(status, Status::Ok);
        assert_eq!(
            detail,
            "one port: data connections use the control port 2121 (SITE PORTS)"
        );
        assert_eq!(target, Target::Same(2121));
        // --passive-ports cannot make a one-port server hand out other ports: said, ignored.
        let (status, detail, target) = choose_target(Ok(Ports::Same), Some(50000..=50003), 2121);
        assert_eq!(status, Status::Warn);
        assert!(
            detail.starts_with("one port: data connections use the control port 2121")
                && detail
                    .ends_with("--passive-ports 50000-50003 ignored: this server hands out no other port"),
            "{detail}"
        );
        assert_eq!(target, Target::Same(2121));
    }

    #[test]
    fn a_range_server_is_chosen_as_before() {
        let (status, detail, target) = choose_target(Ok(Ports::Range(50000..=50003)), None, 2121);
        assert_eq!(
            (status, detail.as_str()),
            (Status::Ok, "50000-50003 (SITE PORTS)")
        );
        assert_eq!(target, Target::Range(50000..=50003));
        let (status, _, target) = choose_target(Ok(Ports::Range(50000..=50003)), Some(40000..=40001), 2121);
        assert_eq!((status, target), (Status::Warn, Target::Range(40000..=40001)));
        let (status, detail, target) = choose_target(Err("502 no".into()), None, 2121);
        assert_eq!((status, target), (Status::Warn, Target::Unknown));
        assert!(
            detail.starts_with("unknown (no SITE PORTS answer: 502 no)"),
            "{detail}"
        );
        let (status, _, target) = choose_target(Err("502 no".into()), Some(7..=8), 2121);
        assert_eq!((status, target), (Status::Ok, Target::Range(7..=8)));
    }

    #[test]
    fn handed_out_ports_are_checked_against_what_the_server_said() {
        let one = plan(Target::Same(2121));
        assert_eq!(one.unexpected(2121, 2121), None);
        let w = one
            .unexpected(50000, 2121)
            .expect("another port than the control port");
        assert!(
            w.contains("says one port") && w.contains("port 50000, not the control port 2121"),
            "{w}"
        );
        assert!(!one.done(&BTreeMap::new()));
        assert!(one.done(&tested(50000)), "one offer tells it all");

        let range = plan(Target::Range(50000..=50001));
        assert_eq!(range.unexpected(50001, 2121), None);
        let w = range
            .unexpected(2121, 2121)
            .expect("the control port from a range server");
        assert!(
            w.contains("handed out the control port 2121") && w.contains("passive=same"),
            "{w}"
        );
        let w = range.unexpected(50007, 2121).expect("outside the range");
        assert_eq!(w, "the server handed out port 50007, outside 50000-50001");
        assert!(!range.done(&tested(50000)), "every port of a range");

        assert_eq!(plan(Target::Unknown).unexpected(2121, 2121), None);
    }
}
