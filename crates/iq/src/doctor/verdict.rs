//! How the passive ports fared, the overall verdict, and the texts that say what to allow.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

use serde::Serialize;

use crate::client::ClientError;

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
    /// Only with `--insecure`: the certificate is not trusted (an IQ refuses it), while the
    /// steps after it worked, all passive ports or some.
    Untrusted,
    /// An update cannot work from here.
    Broken,
}

impl Verdict {
    /// The process exit code: 0 works, 3 degraded, 4 untrusted, 1 broken (2 is left to bad
    /// arguments).
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Works => 0,
            Verdict::Degraded => 3,
            Verdict::Untrusted => 4,
            Verdict::Broken => 1,
        }
    }
}

/// The verdict from whether a step failed, whether the certificate was gone past untrusted
/// (`--insecure`), and how the passive ports fared. A network problem outranks the
/// certificate (the more to fix; the certificate line still says it), the certificate
/// outranks a degraded range.
pub fn verdict(step_failed: bool, untrusted: bool, ports: &[PortTest], untested: usize) -> Verdict {
    if step_failed || !ports.iter().any(|p| p.result.is_ok()) {
        Verdict::Broken
    } else if untrusted {
        Verdict::Untrusted
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
pub(super) fn data_target(announced: SocketAddrV4, control: IpAddr) -> SocketAddr {
    if announced.ip().is_unspecified() {
        SocketAddr::new(control, announced.port())
    } else {
        SocketAddr::V4(announced)
    }
}

/// Why a connection failed, in a firewall's words: `timed out`, `refused`, …
pub(super) fn connect_failure(e: &ClientError) -> String {
    match e {
        ClientError::Timeout(_) => "timed out".into(),
        ClientError::Connect { source, .. } => match source.kind() {
            io::ErrorKind::ConnectionRefused => "refused".into(),
            _ => source.to_string(),
        },
        other => other.to_string(),
    }
}

/// What the passive ports were, for the summary's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scope {
    /// A range, or whatever the server handed out.
    Ports,
    /// One port (`SITE PORTS` said `passive=same`): the control port.
    OnePort(u16),
}

/// The summary line's detail.
pub(super) fn summary(
    v: Verdict,
    scope: Scope,
    step_failed: bool,
    untrusted: bool,
    ports: &[PortTest],
    untested: &[u16],
) -> String {
    let bad = ports.iter().filter(|p| !p.result.is_ok()).count();
    let total = ports.len() + untested.len();
    // One port tested but not the control port: the server named another (said above).
    let named_another = matches!(scope, Scope::OnePort(_)) && !ports.is_empty();
    let untested_said = !untested.is_empty() && !named_another;
    let mut detail = match (v, scope) {
        (Verdict::Broken, _) if step_failed => {
            "an IQ update cannot work from here (see the FAIL above)".into()
        }
        (Verdict::Works, Scope::OnePort(c)) => {
            format!("an IQ update works from here: one port, {c}, carries control and data")
        }
        (Verdict::Works, Scope::Ports) => {
            format!("an IQ update works from here: all {total} passive ports pass")
        }
        // The one port went untested: the server's PASV named another (which worked).
        (Verdict::Degraded, Scope::OnePort(c)) => format!(
            "updates work from here, but not over the control port {c} as the server's SITE \
             PORTS says (see passive-range): IQs whose firewall allows only port {c} cannot fetch"
        ),
        (Verdict::Degraded, Scope::Ports) if bad > 0 => format!(
            "updates work but degraded: {bad} of {total} passive ports fail, so an IQ that draws one needs a retry"
        ),
        (Verdict::Degraded, Scope::Ports) => format!(
            "updates work, but {} of {total} passive ports went untested",
            untested.len()
        ),
        (Verdict::Untrusted, _) => {
            let ports = match scope {
                Scope::OnePort(c) if bad == 0 => format!("one port, {c}, carries control and data"),
                Scope::OnePort(c) => format!("data connections to the control port {c} fail"),
                Scope::Ports if bad > 0 => format!("{bad} of {total} passive ports fail"),
                Scope::Ports => format!("all {total} passive ports pass"),
            };
            format!(
                "an IQ update cannot work from here until the certificate is trusted (see the \
                 certificate FAIL above); the rest, checked because of --insecure: {ports}"
            )
        }
        (Verdict::Broken, Scope::OnePort(c)) => {
            format!("an IQ update cannot work from here: no data connection to the control port {c} works")
        }
        (Verdict::Broken, Scope::Ports) => "an IQ update cannot work from here: no passive port works".into(),
    };
    if untrusted && v == Verdict::Broken {
        detail.push_str("; the certificate is NOT trusted either (--insecure went on past it)");
    }
    if untested_said {
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
        assert_eq!(verdict(false, false, &[ok(1), ok(2)], 0), Verdict::Works);
        assert_eq!(verdict(false, false, &[ok(1), blocked(2)], 0), Verdict::Degraded);
        assert_eq!(verdict(false, false, &[ok(1), ok(2)], 1), Verdict::Degraded);
        let tls = test(3, PortResult::TlsFailed("reset".into()));
        assert_eq!(verdict(false, false, &[ok(1), tls], 0), Verdict::Degraded);
        assert_eq!(
            verdict(false, false, &[blocked(1), blocked(2)], 0),
            Verdict::Broken
        );
        assert_eq!(verdict(false, false, &[], 0), Verdict::Broken);
        assert_eq!(verdict(true, false, &[ok(1)], 0), Verdict::Broken);
        // An untrusted certificate (--insecure) is never success; the network outranks it.
        assert_eq!(verdict(false, true, &[ok(1), ok(2)], 0), Verdict::Untrusted);
        assert_eq!(verdict(false, true, &[ok(1), blocked(2)], 0), Verdict::Untrusted);
        assert_eq!(verdict(false, true, &[blocked(1)], 0), Verdict::Broken);
        assert_eq!(verdict(true, true, &[], 0), Verdict::Broken);
        let codes: Vec<u8> = [
            Verdict::Works,
            Verdict::Degraded,
            Verdict::Untrusted,
            Verdict::Broken,
        ]
        .iter()
        .map(|v| v.exit_code())
        .collect();
        assert_eq!(codes, [0, 3, 4, 1]);
    }

    #[test]
    fn summaries_with_an_untrusted_certificate() {
        let ok = |p| test(p, PortResult::Ok("fine".into()));
        let blocked = |p| test(p, PortResult::Blocked("timed out".into()));
        assert_eq!(
            summary(
                Verdict::Untrusted,
                Scope::Ports,
                false,
                true,
                &[ok(1), ok(2)],
                &[]
            ),
            "an IQ update cannot work from here until the certificate is trusted (see the certificate \
             FAIL above); the rest, checked because of --insecure: all 2 passive ports pass"
        );
        let s = summary(
            Verdict::Untrusted,
            Scope::Ports,
            false,
            true,
            &[ok(1), blocked(2)],
            &[],
        );
        assert!(s.ends_with("--insecure: 1 of 2 passive ports fail"), "{s}");
        let s = summary(Verdict::Broken, Scope::Ports, false, true, &[blocked(1)], &[]);
        assert!(
            s.starts_with("an IQ update cannot work from here: no passive port works")
                && s.ends_with("the certificate is NOT trusted either (--insecure went on past it)"),
            "{s}"
        );
    }

    #[test]
    fn summaries_of_a_one_port_server() {
        let ok = |p| test(p, PortResult::Ok("fine".into()));
        let blocked = |p| test(p, PortResult::Blocked("timed out".into()));
        let one = Scope::OnePort(2121);
        assert_eq!(
            summary(Verdict::Works, one, false, false, &[ok(2121)], &[]),
            "an IQ update works from here: one port, 2121, carries control and data"
        );
        assert_eq!(
            summary(Verdict::Broken, one, false, false, &[blocked(2121)], &[]),
            "an IQ update cannot work from here: no data connection to the control port 2121 works"
        );
        // The PASV named another port, which worked: not the one port the firewall allows.
        let s = summary(Verdict::Degraded, one, false, false, &[ok(50000)], &[2121]);
        assert!(
            s.starts_with("updates work from here, but not over the control port 2121")
                && !s.contains("untested"),
            "{s}"
        );
        // No PASV got through at all: the port went untested, and that is said.
        let s = summary(Verdict::Broken, one, false, false, &[], &[2121]);
        assert!(s.ends_with("untested (attempts or time ran out): 2121"), "{s}");
        let s = summary(Verdict::Untrusted, one, false, true, &[ok(2121)], &[]);
        assert!(
            s.ends_with("--insecure: one port, 2121, carries control and data"),
            "{s}"
        );
        assert_eq!(
            summary(Verdict::Works, Scope::Ports, false, false, &[ok(1), ok(2)], &[]),
            "an IQ update works from here: all 2 passive ports pass",
            "a range says what it said before"
        );
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
}
