//! What an IQ's network must allow, derived from the live FTPS configuration (SPEC §6
//! `GET /network-requirements`, `fwdist network-requirements`), and the same answer rendered
//! as text, as nftables rules and as iptables rules. Pure: no I/O.
//!
//! The rules are outbound only: IQs use passive mode, so every connection is one the IQ
//! opens, and the server's packets are return traffic of those connections.

use std::fmt::Write as _;

use serde::Serialize;

use crate::config::{ConfigError, FtpsConfig, PassiveHost};
use crate::probe;

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

impl PortRange {
    /// `FIRST<sep>LAST`, or just `FIRST` when the range is one port.
    fn render(self, sep: &str) -> String {
        if self.first == self.last {
            self.first.to_string()
        } else {
            format!("{}{sep}{}", self.first, self.last)
        }
    }
}

/// How the requirements are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The JSON document of `GET /api/v1/network-requirements`.
    Json,
    /// A few human-readable lines.
    Text,
    /// `add rule inet filter CHAIN ...` lines for `nft -f FILE`.
    Nftables,
    /// `iptables-restore --noflush` input for the filter table.
    Iptables,
}

/// A format name that is not one of [`Format::NAMES`].
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown format {0:?}: use json, text, nftables or iptables")]
pub struct UnknownFormat(pub String);

impl Format {
    pub const NAMES: [&'static str; 4] = ["json", "text", "nftables", "iptables"];

    /// # Errors
    /// Anything but the exact (lowercase) names in [`Format::NAMES`].
    pub fn parse(s: &str) -> Result<Format, UnknownFormat> {
        match s {
            "json" => Ok(Format::Json),
            "text" => Ok(Format::Text),
            "nftables" => Ok(Format::Nftables),
            "iptables" => Ok(Format::Iptables),
            _ => Err(UnknownFormat(s.to_owned())),
        }
    }
}

/// A firewall chain name for the nftables/iptables formats: an ASCII letter, then ASCII
/// letters, digits, `_` or `-`; at most 32 characters. (nft rejects a name that starts with a
/// digit, and iptables would read a leading `-` as an option.)
///
/// The built-in chain names are spelled as each tool expects, whatever their case:
/// `input`/`forward`/`output` for nftables (Debian's `table inet filter`), `INPUT`/`FORWARD`/
/// `OUTPUT` for iptables; so `--chain output` means the IQ host's own output chain in both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain(String);

/// Why a chain name was refused.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "invalid chain {0:?}: use 1-{max} ASCII letters, digits, '_' or '-', starting with a letter",
    max = Chain::MAX_LEN
)]
pub struct InvalidChain(pub String);

impl Chain {
    pub const MAX_LEN: usize = 32;
    const BUILTIN: [&'static str; 3] = ["input", "forward", "output"];

    /// # Errors
    /// A name outside the rule in [`Chain`]'s documentation.
    pub fn parse(s: &str) -> Result<Chain, InvalidChain> {
        let ok = s.len() <= Self::MAX_LEN
            && s.bytes().next().is_some_and(|c| c.is_ascii_alphabetic())
            && s.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-');
        if ok {
            Ok(Chain(s.to_owned()))
        } else {
            Err(InvalidChain(s.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn is_builtin(&self) -> bool {
        Self::BUILTIN.iter().any(|b| self.0.eq_ignore_ascii_case(b))
    }

    fn nftables(chain: Option<&Chain>) -> String {
        match chain {
            None => "forward".into(),
            Some(c) if c.is_builtin() => c.0.to_ascii_lowercase(),
            Some(c) => c.0.clone(),
        }
    }

    fn iptables(chain: Option<&Chain>) -> String {
        match chain {
            None => "FORWARD".into(),
            Some(c) if c.is_builtin() => c.0.to_ascii_uppercase(),
            Some(c) => c.0.clone(),
        }
    }
}

impl std::str::FromStr for Chain {
    type Err = InvalidChain;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Chain::parse(s)
    }
}

impl NetworkRequirements {
    /// # Errors
    /// An invalid passive range or host (already refused at startup).
    pub fn from_config(cfg: &FtpsConfig) -> Result<Self, ConfigError> {
        let (host, host_is_dns_name) = match cfg.passive_host()? {
            PassiveHost::Ip(ip) => (ip.to_string(), false),
            PassiveHost::Dns(name) => (name, true),
        };
        let passive = cfg.passive_range()?;
        let passive_ports = PortRange {
            first: *passive.start(),
            last: *passive.end(),
        };
        let control = cfg.public_control_port();
        let check = format!("fwdist doctor {host}:{control} --ca SERVER-CA.pem");

        let mut notes = vec![
            "explicit FTPS (AUTH TLS); TLS 1.2 or 1.3 on the control and on every data connection".to_owned(),
            "nothing inbound: passive mode only, so the server's replies are return traffic of \
             connections the IQ opened (allow established,related)"
                .to_owned(),
            "FTP helpers/ALGs (nf_conntrack_ftp etc.) cannot read the encrypted PASV reply: allow \
             the passive range explicitly"
                .to_owned(),
        ];
        if host_is_dns_name {
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
        notes.push(match cfg.max_sessions_per_ip {
            0 => "no limit on how many IQs behind one NAT address are served at once".to_owned(),
            1 => "at most 1 IQ behind one NAT address is served at once; more get 421 and retry".to_owned(),
            n => format!("at most {n} IQs behind one NAT address are served at once; more get 421 and retry"),
        });
        notes.push(format!(
            "the IQ must open each data connection within {} s of the PASV/EPSV reply",
            cfg.data_connect_timeout_secs
        ));
        notes.push(
            "the control connection idles during a download: firewall/NAT TCP idle timeouts must \
             outlast the longest download"
                .to_owned(),
        );
        notes.push(if cfg.probe_enabled {
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

        Ok(NetworkRequirements {
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
            max_sessions_per_ip: cfg.max_sessions_per_ip,
            data_connect_timeout_secs: cfg.data_connect_timeout_secs,
            probe_enabled: cfg.probe_enabled,
            check,
            notes,
        })
    }

    /// The requirements in `format`; `chain` matters only to nftables and iptables.
    ///
    /// # Errors
    /// Only if JSON serialisation fails, which it does not for this type.
    pub fn render(&self, format: Format, chain: Option<&Chain>) -> Result<String, serde_json::Error> {
        Ok(match format {
            Format::Json => serde_json::to_string_pretty(self)? + "\n",
            Format::Text => self.render_text(),
            Format::Nftables => self.render_nftables(chain),
            Format::Iptables => self.render_iptables(chain),
        })
    }

    /// A few lines for a person: the two rules, then the notes.
    pub fn render_text(&self) -> String {
        let control = PortRange {
            first: self.control_port,
            last: self.control_port,
        };
        let rows = [
            (control, "FTPS control"),
            (self.passive_ports, "FTPS passive data"),
        ];
        let dests: Vec<String> = rows
            .iter()
            .map(|(r, _)| format!("{}:{}", self.host, r.render("-")))
            .collect();
        let width = dests.iter().map(String::len).max().unwrap_or(0);
        let mut out = String::from("Outbound from the IQ (nothing inbound), TLS 1.2 or 1.3:\n");
        for (dest, (_, what)) in dests.iter().zip(rows) {
            let _ = writeln!(out, "  tcp  {dest:<width$}  {what}");
        }
        for note in &self.notes {
            let _ = writeln!(out, "- {note}");
        }
        out
    }

    /// Comment lines and `add rule inet filter CHAIN ...` lines, loadable verbatim with
    /// `nft -f FILE` where `table inet filter` has the chain (default `forward`).
    pub fn render_nftables(&self, chain: Option<&Chain>) -> String {
        let chain = Chain::nftables(chain);
        let mut out = self.rules_preamble("nft -f FILE", "table inet filter", &chain, "forward", "output");
        if self.host_is_dns_name {
            let _ = writeln!(
                out,
                "# nft resolves {} when it loads these rules: reload them when its address changes.",
                self.host
            );
        }
        out.push_str(
            "# `add rule` appends to the chain: if the chain ends in a drop or reject rule, use\n\
             # `insert rule` instead so these come first.\n",
        );
        let rule = |m: &str| format!("add rule inet filter {chain} {m}\n");
        out.push_str("# Return traffic of the IQ's connections (most rule sets already have this rule).\n");
        out.push_str(&rule("ct state established,related accept"));
        out.push_str("# FTPS control: explicit FTPS (AUTH TLS).\n");
        out.push_str(&rule(&format!(
            "ip daddr {} tcp dport {} accept",
            self.host, self.control_port
        )));
        out.push_str("# FTPS passive data.\n");
        out.push_str(&rule(&format!(
            "ip daddr {} tcp dport {} accept",
            self.host,
            self.passive_ports.render("-")
        )));
        out
    }

    /// `iptables-restore --noflush` input: `*filter`, `-A CHAIN ...` lines (default
    /// `FORWARD`), `COMMIT`.
    pub fn render_iptables(&self, chain: Option<&Chain>) -> String {
        let chain = Chain::iptables(chain);
        let mut out = self.rules_preamble(
            "iptables-restore --noflush < FILE",
            "the filter table",
            &chain,
            "FORWARD",
            "OUTPUT",
        );
        if self.host_is_dns_name {
            let _ = writeln!(
                out,
                "# iptables resolves {} when it loads these rules: reload them when its address changes.",
                self.host
            );
        }
        out.push_str(
            "# -A appends to the chain: if the chain ends in a DROP or REJECT rule, use -I instead\n\
             # so these come first.\n",
        );
        out.push_str("*filter\n");
        let _ = writeln!(
            out,
            "# Return traffic of the IQ's connections (most rule sets already have this rule).\n\
             -A {chain} -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT"
        );
        let _ = writeln!(
            out,
            "# FTPS control: explicit FTPS (AUTH TLS).\n-A {chain} -p tcp -d {} --dport {} -j ACCEPT",
            self.host, self.control_port
        );
        let _ = writeln!(
            out,
            "# FTPS passive data.\n-A {chain} -p tcp -d {} --dport {} -j ACCEPT",
            self.host,
            self.passive_ports.render(":")
        );
        out.push_str("COMMIT\n");
        out
    }

    /// The comment lines both rule formats start with.
    fn rules_preamble(&self, load: &str, table: &str, chain: &str, gateway: &str, host: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# fwdist: what an IQ's network must allow, outbound TCP to {} (TLS 1.2 or 1.3).",
            self.host
        );
        let _ = writeln!(out, "# Load with `{load}`; chain {chain} of {table} must exist.");
        if chain == gateway {
            let _ = writeln!(
                out,
                "# Chain {chain}: the site's gateway. For a firewall on the IQ host itself use --chain {host}."
            );
        } else if chain == host {
            let _ = writeln!(out, "# Chain {chain}: a firewall on the IQ host itself.");
        }
        out.push_str(
            "# The IQ needs no inbound rule: it uses passive mode only, so the server's packets are\n\
             # return traffic of connections the IQ opened.\n\
             # FTP helpers/ALGs (nf_conntrack_ftp) cannot read the encrypted PASV reply, so the\n\
             # passive range is allowed explicitly.\n",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sample of the unit tests: a public address, control 2121, passive 50000-50003.
    fn sample() -> NetworkRequirements {
        let cfg = FtpsConfig {
            passive_ports: "50000-50003".into(),
            public_host: "203.0.113.5".into(),
            ..FtpsConfig::default()
        };
        NetworkRequirements::from_config(&cfg).unwrap()
    }

    fn rule_lines(text: &str) -> Vec<&str> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .collect()
    }

    #[test]
    fn defaults_name_the_control_port_and_the_passive_range() {
        let r = NetworkRequirements::from_config(&FtpsConfig::default()).unwrap();
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
        let cfg = FtpsConfig {
            public_port: Some(21),
            ..FtpsConfig::default()
        };
        let r = NetworkRequirements::from_config(&cfg).unwrap();
        assert_eq!((r.rules[0].first_port, r.rules[0].last_port), (21, 21));
        assert_eq!(r.control_port, 21);
        assert!(r.render_nftables(None).contains("tcp dport 21 accept\n"));
    }

    #[test]
    fn nftables_for_the_sample_is_exact() {
        let got = sample().render_nftables(None);
        let want = "\
# fwdist: what an IQ's network must allow, outbound TCP to 203.0.113.5 (TLS 1.2 or 1.3).
# Load with `nft -f FILE`; chain forward of table inet filter must exist.
# Chain forward: the site's gateway. For a firewall on the IQ host itself use --chain output.
# The IQ needs no inbound rule: it uses passive mode only, so the server's packets are
# return traffic of connections the IQ opened.
# FTP helpers/ALGs (nf_conntrack_ftp) cannot read the encrypted PASV reply, so the
# passive range is allowed explicitly.
# `add rule` appends to the chain: if the chain ends in a drop or reject rule, use
# `insert rule` instead so these come first.
# Return traffic of the IQ's connections (most rule sets already have this rule).
add rule inet filter forward ct state established,related accept
# FTPS control: explicit FTPS (AUTH TLS).
add rule inet filter forward ip daddr 203.0.113.5 tcp dport 2121 accept
# FTPS passive data.
add rule inet filter forward ip daddr 203.0.113.5 tcp dport 50000-50003 accept
";
        assert_eq!(got, want);
    }

    #[test]
    fn nftables_output_chain_and_single_port() {
        let cfg = FtpsConfig {
            passive_ports: "50000-50000".into(),
            public_host: "203.0.113.5".into(),
            ..FtpsConfig::default()
        };
        let r = NetworkRequirements::from_config(&cfg).unwrap();
        let chain = Chain::parse("OUTPUT").unwrap();
        let got = r.render_nftables(Some(&chain));
        assert_eq!(
            rule_lines(&got),
            [
                "add rule inet filter output ct state established,related accept",
                "add rule inet filter output ip daddr 203.0.113.5 tcp dport 2121 accept",
                "add rule inet filter output ip daddr 203.0.113.5 tcp dport 50000 accept",
            ]
        );
        assert!(
            got.contains("# Chain output: a firewall on the IQ host itself.\n"),
            "{got}"
        );
        let custom = Chain::parse("iq_out-2").unwrap();
        assert!(
            r.render_nftables(Some(&custom))
                .contains("add rule inet filter iq_out-2 ct state established,related accept\n")
        );
    }

    #[test]
    fn iptables_for_the_sample_is_exact() {
        let got = sample().render_iptables(None);
        let want = "\
# fwdist: what an IQ's network must allow, outbound TCP to 203.0.113.5 (TLS 1.2 or 1.3).
# Load with `iptables-restore --noflush < FILE`; chain FORWARD of the filter table must exist.
# Chain FORWARD: the site's gateway. For a firewall on the IQ host itself use --chain OUTPUT.
# The IQ needs no inbound rule: it uses passive mode only, so the server's packets are
# return traffic of connections the IQ opened.
# FTP helpers/ALGs (nf_conntrack_ftp) cannot read the encrypted PASV reply, so the
# passive range is allowed explicitly.
# -A appends to the chain: if the chain ends in a DROP or REJECT rule, use -I instead
# so these come first.
*filter
# Return traffic of the IQ's connections (most rule sets already have this rule).
-A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
# FTPS control: explicit FTPS (AUTH TLS).
-A FORWARD -p tcp -d 203.0.113.5 --dport 2121 -j ACCEPT
# FTPS passive data.
-A FORWARD -p tcp -d 203.0.113.5 --dport 50000:50003 -j ACCEPT
COMMIT
";
        assert_eq!(got, want);
        let output = sample().render_iptables(Some(&Chain::parse("output").unwrap()));
        assert!(output.contains("\n-A OUTPUT -p tcp -d 203.0.113.5 --dport 50000:50003 -j ACCEPT\n"));
    }

    #[test]
    fn text_for_the_sample_is_exact() {
        let got = sample().render_text();
        let want = "\
Outbound from the IQ (nothing inbound), TLS 1.2 or 1.3:
  tcp  203.0.113.5:2121         FTPS control
  tcp  203.0.113.5:50000-50003  FTPS passive data
- explicit FTPS (AUTH TLS); TLS 1.2 or 1.3 on the control and on every data connection
- nothing inbound: passive mode only, so the server's replies are return traffic of connections the IQ opened (allow established,related)
- FTP helpers/ALGs (nf_conntrack_ftp etc.) cannot read the encrypted PASV reply: allow the passive range explicitly
- 802.1X: allowlist the IQ's MAC for MAC Authentication Bypass (MAB); the MAC is also its fwdist device id
- at most 16 IQs behind one NAT address are served at once; more get 421 and retry
- the IQ must open each data connection within 5 s of the PASV/EPSV reply
- the control connection idles during a download: firewall/NAT TCP idle timeouts must outlast the longest download
- check a site from the IQ's network: `fwdist doctor 203.0.113.5:2121 --ca SERVER-CA.pem` (logs in as the built-in probe account, user probe, password probe)
";
        assert_eq!(got, want);
    }

    #[test]
    fn a_dns_name_and_other_settings_show_in_the_notes() {
        let cfg = FtpsConfig {
            public_host: "fw.example.com".into(),
            max_sessions_per_ip: 0,
            probe_enabled: false,
            data_connect_timeout_secs: 9,
            ..FtpsConfig::default()
        };
        let r = NetworkRequirements::from_config(&cfg).unwrap();
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
        let one = FtpsConfig {
            max_sessions_per_ip: 1,
            ..FtpsConfig::default()
        };
        let text = NetworkRequirements::from_config(&one).unwrap().render_text();
        assert!(
            text.contains("at most 1 IQ behind one NAT address is served"),
            "{text}"
        );
    }

    #[test]
    fn json_keeps_the_established_fields() {
        let json = sample().render(Format::Json, None).unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["direction"], "outbound");
        assert_eq!(v["inbound"], "none");
        assert_eq!(v["rules"][1]["purpose"], "ftps-passive-data");
        assert_eq!(v["rules"][1]["protocol"], "tcp");
        assert_eq!(v["rules"][1]["host"], "203.0.113.5");
        assert_eq!(v["rules"][1]["first_port"], 50000);
        assert_eq!(v["rules"][1]["last_port"], 50003);
        assert_eq!(v["tls_versions"], serde_json::json!(["1.2", "1.3"]));
        assert_eq!(v["max_sessions_per_ip"], 16);
        assert!(v["notes"].as_array().unwrap().len() >= 5);
    }

    #[test]
    fn formats_and_chains_are_validated() {
        for name in Format::NAMES {
            assert!(Format::parse(name).is_ok(), "{name}");
        }
        for bad in ["", "JSON", "yaml", "nft"] {
            assert!(Format::parse(bad).is_err(), "{bad:?}");
        }
        for good in ["forward", "OUTPUT", "iq_out-2", "a", &"c".repeat(32)] {
            assert!(Chain::parse(good).is_ok(), "{good:?}");
        }
        for bad in [
            "",
            "1abc",
            "-A",
            "_x",
            "a b",
            "a;drop",
            "a\nb",
            "fwd.x",
            "é",
            &"c".repeat(33),
        ] {
            assert!(Chain::parse(bad).is_err(), "{bad:?}");
        }
    }

    /// The README's "Firewall requirements" block is what `fwdist network-requirements`
    /// prints for the default configuration.
    #[test]
    fn readme_shows_the_text_for_the_default_config() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
        let begin = "<!-- network-requirements:begin -->\n```text\n";
        let end = "```\n<!-- network-requirements:end -->";
        let start = readme
            .find(begin)
            .expect("README has the begin marker and ```text fence")
            + begin.len();
        let stop = readme[start..].find(end).expect("README has the end marker") + start;
        let want = NetworkRequirements::from_config(&crate::config::Config::default().ftps)
            .unwrap()
            .render_text();
        assert!(
            readme[start..stop] == want,
            "README.md's firewall block is out of date. Replace the lines between the markers \
             (inside the ```text fence) with the output of\n  \
             cargo run -q -- network-requirements --format text\n\
             run with no --config and no FWDIST_* variables set, i.e. with:\n{want}"
        );
    }
}
