//! What an IQ's network must allow, derived from the live FTPS configuration (SPEC §6
//! `GET /network-requirements`, `fwdist network-requirements`), and the same answer rendered
//! as text, as nftables rules and as iptables rules. Pure: no I/O, and it takes plain values
//! ([`Site`]), not the configuration: `config` builds a `Site` from `[ftps]`.
//!
//! The rules are outbound only: IQs use passive mode, so every connection is one the IQ
//! opens, and the server's packets are return traffic of those connections.
//!
//! Two shapes, by `ftps.passive_ports`: a range gives two rules (`ftps-control`, then
//! `ftps-passive-data` for the range); one port (`"same"`) gives the one rule
//! `ftps-control`, which then carries the passive data connections too. `passive_mode`
//! says which; `passive_ports` always names the ports data connections go to (in one-port
//! mode the control port, first = last), so a reader of it alone still allows the right
//! port. Every rendering is made from `rules`, so the JSON and the firewall text agree.
//!
//! `format.rs` holds the output formats and chain names (validated), `render.rs` the
//! renderings; each with its unit tests.

mod format;
mod render;

use serde::Serialize;

use fwdist_release::probe;

pub use crate::domain::PassiveMode;

pub use format::{Chain, Format, InvalidChain, UnknownFormat};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NetworkRequirements {
    /// Every rule is outbound from the IQ; it needs no inbound rule at all.
    pub direction: &'static str,
    pub inbound: &'static str,
    pub rules: Vec<Rule>,
    pub tls_versions: [&'static str; 2],
    /// `ftps.public_host`: the IPv4 address or DNS name IQs connect to.
    pub host: String,
    /// True when `host` is a DNS name: the site's DNS must resolve it, and nft/iptables
    /// resolve it when the rules are loaded.
    pub host_is_dns_name: bool,
    /// The control port as IQs see it (`ftps.public_port`, else the port of `ftps.listen`).
    pub control_port: u16,
    /// Where passive data connections go: ports of their own, or the control port.
    pub passive_mode: PassiveKind,
    /// The ports passive data connections go to: the range, or in one-port mode the control
    /// port (first = last = `control_port`).
    pub passive_ports: PortRange,
    /// IQs served at once from one client (NAT) address; the next gets 421. 0 = no limit.
    pub max_sessions_per_ip: u32,
    /// How long the server waits for the IQ's data connection after a PASV/EPSV reply.
    pub data_connect_timeout_secs: u64,
    /// Whether `fwdist doctor` can log in with the built-in probe account.
    pub probe_enabled: bool,
    /// The command that checks a site from the IQ's network (`--ca`: the server's CA certificate).
    pub check: String,
    pub notes: Vec<String>,
}

/// `passive_mode` in the JSON: `"range"` or `"same"` (the spelling of `ftps.passive_ports`
/// for one port).
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PassiveKind {
    /// `ftps.passive_ports = "FIRST-LAST"`: a rule for the control port, one for the range.
    Range,
    /// `ftps.passive_ports = "same"`: one rule, the control port, for control and data.
    Same,
}

/// `purpose` of the control port's rule (in one-port mode it carries the data too).
pub const CONTROL: &str = "ftps-control";
/// `purpose` of the passive range's rule (a range only).
pub const PASSIVE_DATA: &str = "ftps-passive-data";

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Rule {
    pub purpose: &'static str,
    pub protocol: &'static str,
    /// The address IQs connect to (`ftps.public_host`).
    pub host: String,
    pub first_port: u16,
    pub last_port: u16,
}

/// An inclusive port range.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn one(port: u16) -> Self {
        PortRange {
            first: port,
            last: port,
        }
    }
}

/// The facts of a server's FTPS setup that decide what an IQ's network must allow, as IQs
/// see them (already validated).
#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    /// The IPv4 address or DNS name IQs connect to (`ftps.public_host`).
    pub host: String,
    pub host_is_dns_name: bool,
    /// The control port as IQs see it.
    pub control_port: u16,
    pub passive: PassiveMode,
    pub max_sessions_per_ip: u32,
    pub data_connect_timeout_secs: u64,
    pub probe_enabled: bool,
}

impl NetworkRequirements {
    pub fn new(site: &Site) -> Self {
        let host = site.host.clone();
        let host_is_dns_name = site.host_is_dns_name;
        let control = site.control_port;
        let rule = |purpose, ports: PortRange| Rule {
            purpose,
            protocol: "tcp",
            host: host.clone(),
            first_port: ports.first,
            last_port: ports.last,
        };
        let control_rule = rule(CONTROL, PortRange::one(control));
        let (passive_mode, passive_ports, rules) = match &site.passive {
            PassiveMode::Range(r) => {
                let range = PortRange {
                    first: *r.start(),
                    last: *r.end(),
                };
                (
                    PassiveKind::Range,
                    range,
                    vec![control_rule, rule(PASSIVE_DATA, range)],
                )
            }
            PassiveMode::Same => (PassiveKind::Same, PortRange::one(control), vec![control_rule]),
        };
        let check = format!("fwdist doctor {host}:{control} --ca SERVER-CA.pem");
        let notes = notes(site, &check);

        NetworkRequirements {
            direction: "outbound",
            inbound: "none",
            rules,
            tls_versions: ["1.2", "1.3"],
            host,
            host_is_dns_name,
            control_port: control,
            passive_mode,
            passive_ports,
            max_sessions_per_ip: site.max_sessions_per_ip,
            data_connect_timeout_secs: site.data_connect_timeout_secs,
            probe_enabled: site.probe_enabled,
            check,
            notes,
        }
    }
}

/// What else the IQ's network must allow or know, in the order the text format lists it.
fn notes(site: &Site, check: &str) -> Vec<String> {
    let host = &site.host;
    let mut notes = vec![
        "explicit FTPS (AUTH TLS); TLS 1.2 or 1.3 on the control and on every data connection".to_owned(),
        "nothing inbound: passive mode only, so the server's replies are return traffic of \
         connections the IQ opened (allow established,related)"
            .to_owned(),
    ];
    match site.passive {
        PassiveMode::Range(_) => notes.push(
            "FTP helpers/ALGs (nf_conntrack_ftp etc.) cannot read the encrypted PASV reply: allow \
             the passive range explicitly"
                .to_owned(),
        ),
        PassiveMode::Same => notes.extend([
            "one port: the passive data connections go to the control port too, so the one rule \
             covers them; no passive range and no FTP helper/ALG needed"
                .to_owned(),
            "one port's trade-off: a new control connection from an address whose other IQs \
             have passive offers outstanding is greeted only once those offers' data \
             connections are known (normally within a round trip or two, at most \
             ftps.data_connect_timeout_secs); a separate passive range \
             (ftps.passive_ports = \"FIRST-LAST\") greets it at once"
                .to_owned(),
        ]),
    }
    if site.host_is_dns_name {
        notes.push(format!(
            "the IQ's DNS must resolve {host}; nft and iptables resolve it when the rules are \
             loaded, so reload them when its address changes"
        ));
    }
    notes.push(
        "802.1X: allowlist the IQ's MAC for MAC Authentication Bypass (MAB); the MAC is also its \
         fwdist device id"
            .to_owned(),
    );
    notes.push(match site.max_sessions_per_ip {
        0 => "no limit on how many IQs behind one NAT address are served at once".to_owned(),
        1 => "at most 1 IQ behind one NAT address is served at once; more get 421 and retry".to_owned(),
        n => format!("at most {n} IQs behind one NAT address are served at once; more get 421 and retry"),
    });
    notes.push(format!(
        "the IQ must open each data connection within {} s of the PASV/EPSV reply",
        site.data_connect_timeout_secs
    ));
    notes.push(
        "the control connection idles during a download: firewall/NAT TCP idle timeouts must \
         outlast the longest download"
            .to_owned(),
    );
    notes.push(if site.probe_enabled {
        format!(
            "check a site from the IQ's network: `{check}` (logs in as the built-in probe \
             account, user {}, password {})",
            probe::USER,
            probe::PASSWORD
        )
    } else {
        format!(
            "`{check}` checks a site from the IQ's network, but the built-in probe account it \
             logs in with is disabled on this server (ftps.probe_enabled)"
        )
    });
    notes
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The site of the default configuration (`config` checks that it is).
    pub(crate) fn default_site() -> Site {
        Site {
            host: "127.0.0.1".into(),
            host_is_dns_name: false,
            control_port: 2121,
            passive: PassiveMode::Range(50000..=50049),
            max_sessions_per_ip: 16,
            data_connect_timeout_secs: 5,
            probe_enabled: true,
        }
    }

    #[test]
    fn defaults_name_the_control_port_and_the_passive_range() {
        let r = NetworkRequirements::new(&default_site());
        assert_eq!(r.rules[0].first_port, 2121);
        assert_eq!((r.rules[1].first_port, r.rules[1].last_port), (50000, 50049));
        assert!(
            r.rules
                .iter()
                .all(|x| x.host == "127.0.0.1" && x.protocol == "tcp")
        );
        assert_eq!(r.inbound, "none");
        assert_eq!(r.direction, "outbound");
        assert_eq!(r.check, "fwdist doctor 127.0.0.1:2121 --ca SERVER-CA.pem");
    }

    #[test]
    fn one_port_is_one_rule_that_carries_the_data_too() {
        let site = Site {
            passive: PassiveMode::Same,
            ..default_site()
        };
        let r = NetworkRequirements::new(&site);
        assert_eq!(r.passive_mode, PassiveKind::Same);
        assert_eq!(r.rules.len(), 1, "{:?}", r.rules);
        assert_eq!(
            (r.rules[0].purpose, r.rules[0].first_port, r.rules[0].last_port),
            (CONTROL, 2121, 2121)
        );
        assert_eq!(r.passive_ports, PortRange::one(2121));
        assert!(
            r.notes.iter().any(|n| n.contains("greeted only once")),
            "the trade-off is said: {:?}",
            r.notes
        );
        assert!(!r.notes.iter().any(|n| n.contains("allow the passive range")));
        let range = NetworkRequirements::new(&default_site());
        assert_eq!(range.passive_mode, PassiveKind::Range);
        assert_eq!(
            range.rules.iter().map(|x| x.purpose).collect::<Vec<_>>(),
            [CONTROL, PASSIVE_DATA]
        );
        assert!(!range.notes.iter().any(|n| n.contains("greeted only once")));
    }

    #[test]
    fn the_public_port_is_the_control_port() {
        let site = Site {
            control_port: 21,
            ..default_site()
        };
        let r = NetworkRequirements::new(&site);
        assert_eq!((r.rules[0].first_port, r.rules[0].last_port), (21, 21));
        assert_eq!(r.control_port, 21);
        assert!(r.render_nftables(None).contains("tcp dport 21 accept\n"));
    }

    #[test]
    fn a_dns_name_and_other_settings_show_in_the_notes() {
        let site = Site {
            host: "fw.example.com".into(),
            host_is_dns_name: true,
            max_sessions_per_ip: 0,
            probe_enabled: false,
            data_connect_timeout_secs: 9,
            ..default_site()
        };
        let r = NetworkRequirements::new(&site);
        assert!(r.host_is_dns_name);
        let text = r.render_text();
        for want in [
            "the IQ's DNS must resolve fw.example.com",
            "no limit on how many IQs",
            "within 9 s",
            "probe account it logs in with is disabled",
        ] {
            assert!(text.contains(want), "{want:?} in:\n{text}");
        }
        assert!(
            r.render_nftables(None)
                .contains("add rule inet filter forward ip daddr fw.example.com tcp dport 2121 accept\n")
        );
        assert!(r.render_nftables(None).contains("# nft resolves fw.example.com"));
        assert!(
            r.render_iptables(None)
                .contains("# iptables resolves fw.example.com")
        );
        let one = Site {
            max_sessions_per_ip: 1,
            ..default_site()
        };
        let text = NetworkRequirements::new(&one).render_text();
        assert!(
            text.contains("at most 1 IQ behind one NAT address is served"),
            "{text}"
        );
    }
}
