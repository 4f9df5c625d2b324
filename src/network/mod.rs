//! What an IQ's network must allow, derived from the live FTPS configuration (SPEC §6
//! `GET /network-requirements`, `fwdist network-requirements`), and the same answer rendered
//! as text, as nftables rules and as iptables rules. Pure: no I/O, and it takes plain values
//! ([`Site`]), not the configuration: `config` builds a `Site` from `[ftps]`.
//!
//! The rules are outbound only: IQs use passive mode, so every connection is one the IQ
//! opens, and the server's packets are return traffic of those connections.
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
        // Interim (one-port rendering to come): "same" is the control port.
        let (first, last) = match &site.passive {
            PassiveMode::Range(r) => (*r.start(), *r.end()),
            PassiveMode::Same => (site.control_port, site.control_port),
        };
        let passive_ports = PortRange { first, last };
        let control = site.control_port;
        let check = format!("fwdist doctor {host}:{control} --ca SERVER-CA.pem");
        let notes = notes(site, &check);

        NetworkRequirements {
            direction: "outbound",
            inbound: "none",
            rules: vec![
                Rule {
                    purpose: "ftps-control",
                    protocol: "tcp",
                    host: host.clone(),
                    first_port: control,
                    last_port: control,
                },
                Rule {
                    purpose: "ftps-passive-data",
                    protocol: "tcp",
                    host: host.clone(),
                    first_port: passive_ports.first,
                    last_port: passive_ports.last,
                },
            ],
            tls_versions: ["1.2", "1.3"],
            host,
            host_is_dns_name,
            control_port: control,
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
        "FTP helpers/ALGs (nf_conntrack_ftp etc.) cannot read the encrypted PASV reply: allow \
         the passive range explicitly"
            .to_owned(),
    ];
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
