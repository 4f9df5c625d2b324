//! The requirements rendered as text, as nftables rules and as iptables rules, each made
//! from the same `rules` the JSON lists (one rule in one-port mode, two with a range).

use std::fmt::Write as _;

use super::{CONTROL, Chain, Format, NetworkRequirements, PassiveKind, PortRange, Rule};

impl Rule {
    fn ports(&self) -> PortRange {
        PortRange {
            first: self.first_port,
            last: self.last_port,
        }
    }
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

impl NetworkRequirements {
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

    /// A few lines for a person: the rules, then the notes.
    pub fn render_text(&self) -> String {
        let dests: Vec<String> = self
            .rules
            .iter()
            .map(|r| format!("{}:{}", r.host, r.ports().render("-")))
            .collect();
        let width = dests.iter().map(String::len).max().unwrap_or(0);
        let mut out = String::from("Outbound from the IQ (nothing inbound), TLS 1.2 or 1.3");
        out.push_str(match self.passive_mode {
            PassiveKind::Range => ":\n",
            PassiveKind::Same => "; the firewall needs one port only:\n",
        });
        for (dest, rule) in dests.iter().zip(&self.rules) {
            let _ = writeln!(out, "  {}  {dest:<width$}  {}", rule.protocol, self.label(rule));
        }
        for note in &self.notes {
            let _ = writeln!(out, "- {note}");
        }
        out
    }

    /// What a rule is for, in words.
    fn label(&self, rule: &Rule) -> &'static str {
        match (rule.purpose, self.passive_mode) {
            (CONTROL, PassiveKind::Same) => "FTPS control and passive data (one port)",
            (CONTROL, PassiveKind::Range) => "FTPS control",
            _ => "FTPS passive data",
        }
    }

    /// The comment line above a rule in the nftables and iptables formats.
    fn rule_comment(&self, rule: &Rule) -> String {
        if rule.purpose == CONTROL {
            format!("# {}: explicit FTPS (AUTH TLS).", self.label(rule))
        } else {
            format!("# {}.", self.label(rule))
        }
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
        for r in &self.rules {
            let _ = writeln!(out, "{}", self.rule_comment(r));
            out.push_str(&rule(&format!(
                "ip daddr {} {} dport {} accept",
                r.host,
                r.protocol,
                r.ports().render("-")
            )));
        }
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
        for r in &self.rules {
            let _ = writeln!(
                out,
                "{}\n-A {chain} -p {} -d {} --dport {} -j ACCEPT",
                self.rule_comment(r),
                r.protocol,
                r.host,
                r.ports().render(":")
            );
        }
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
             # return traffic of connections the IQ opened.\n",
        );
        out.push_str(match self.passive_mode {
            PassiveKind::Range => {
                "# FTP helpers/ALGs (nf_conntrack_ftp) cannot read the encrypted PASV reply, so the\n\
                 # passive range is allowed explicitly.\n"
            }
            PassiveKind::Same => {
                "# One port (ftps.passive_ports = \"same\"): the passive data connections go to the\n\
                 # control port too, so its one rule covers them; no FTP helper/ALG needed.\n"
            }
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::tests::default_site;
    use crate::network::{PassiveMode, Site};

    /// The sample of the unit tests: a public address, control 2121, passive 50000-50003.
    fn sample() -> NetworkRequirements {
        NetworkRequirements::new(&Site {
            passive: PassiveMode::Range(50000..=50003),
            host: "203.0.113.5".into(),
            ..default_site()
        })
    }

    fn rule_lines(text: &str) -> Vec<&str> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .collect()
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
        let r = NetworkRequirements::new(&Site {
            passive: PassiveMode::Range(50000..=50000),
            host: "203.0.113.5".into(),
            ..default_site()
        });
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

    /// The one-port sample: the sample's site with `ftps.passive_ports = "same"`.
    fn one_port() -> NetworkRequirements {
        NetworkRequirements::new(&Site {
            passive: PassiveMode::Same,
            host: "203.0.113.5".into(),
            ..default_site()
        })
    }

    #[test]
    fn nftables_for_one_port_is_exact() {
        let got = one_port().render_nftables(None);
        let want = "\
# fwdist: what an IQ's network must allow, outbound TCP to 203.0.113.5 (TLS 1.2 or 1.3).
# Load with `nft -f FILE`; chain forward of table inet filter must exist.
# Chain forward: the site's gateway. For a firewall on the IQ host itself use --chain output.
# The IQ needs no inbound rule: it uses passive mode only, so the server's packets are
# return traffic of connections the IQ opened.
# One port (ftps.passive_ports = \"same\"): the passive data connections go to the
# control port too, so its one rule covers them; no FTP helper/ALG needed.
# `add rule` appends to the chain: if the chain ends in a drop or reject rule, use
# `insert rule` instead so these come first.
# Return traffic of the IQ's connections (most rule sets already have this rule).
add rule inet filter forward ct state established,related accept
# FTPS control and passive data (one port): explicit FTPS (AUTH TLS).
add rule inet filter forward ip daddr 203.0.113.5 tcp dport 2121 accept
";
        assert_eq!(got, want);
    }

    #[test]
    fn iptables_for_one_port_is_exact() {
        let got = one_port().render_iptables(None);
        let want = "\
# fwdist: what an IQ's network must allow, outbound TCP to 203.0.113.5 (TLS 1.2 or 1.3).
# Load with `iptables-restore --noflush < FILE`; chain FORWARD of the filter table must exist.
# Chain FORWARD: the site's gateway. For a firewall on the IQ host itself use --chain OUTPUT.
# The IQ needs no inbound rule: it uses passive mode only, so the server's packets are
# return traffic of connections the IQ opened.
# One port (ftps.passive_ports = \"same\"): the passive data connections go to the
# control port too, so its one rule covers them; no FTP helper/ALG needed.
# -A appends to the chain: if the chain ends in a DROP or REJECT rule, use -I instead
# so these come first.
*filter
# Return traffic of the IQ's connections (most rule sets already have this rule).
-A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
# FTPS control and passive data (one port): explicit FTPS (AUTH TLS).
-A FORWARD -p tcp -d 203.0.113.5 --dport 2121 -j ACCEPT
COMMIT
";
        assert_eq!(got, want);
    }

    #[test]
    fn text_for_one_port_is_exact() {
        let got = one_port().render_text();
        let want = "\
Outbound from the IQ (nothing inbound), TLS 1.2 or 1.3; the firewall needs one port only:
  tcp  203.0.113.5:2121  FTPS control and passive data (one port)
- explicit FTPS (AUTH TLS); TLS 1.2 or 1.3 on the control and on every data connection
- nothing inbound: passive mode only, so the server's replies are return traffic of connections the IQ opened (allow established,related)
- one port: the passive data connections go to the control port too, so the one rule covers them; no passive range and no FTP helper/ALG needed
- one port's trade-off: a new control connection from an address whose other IQs have passive offers outstanding is greeted only once those offers' data connections are known (normally within a round trip or two, at most ftps.data_connect_timeout_secs); a separate passive range (ftps.passive_ports = \"FIRST-LAST\") greets it at once
- 802.1X: allowlist the IQ's MAC for MAC Authentication Bypass (MAB); the MAC is also its fwdist device id
- at most 16 IQs behind one NAT address are served at once; more get 421 and retry
- the IQ must open each data connection within 5 s of the PASV/EPSV reply
- the control connection idles during a download: firewall/NAT TCP idle timeouts must outlast the longest download
- check a site from the IQ's network: `fwdist doctor 203.0.113.5:2121 --ca SERVER-CA.pem` (logs in as the built-in probe account, user probe, password probe)
";
        assert_eq!(got, want);
    }

    #[test]
    fn json_for_one_port_has_one_rule_and_says_the_mode() {
        let v: serde_json::Value =
            serde_json::from_str(&one_port().render(Format::Json, None).unwrap()).unwrap();
        assert_eq!(v["passive_mode"], "same");
        assert_eq!(
            v["rules"],
            serde_json::json!([{"purpose": "ftps-control", "protocol": "tcp",
                                "host": "203.0.113.5", "first_port": 2121, "last_port": 2121}])
        );
        assert_eq!(v["control_port"], 2121);
        assert_eq!(
            v["passive_ports"],
            serde_json::json!({"first": 2121, "last": 2121})
        );
        let range: serde_json::Value =
            serde_json::from_str(&sample().render(Format::Json, None).unwrap()).unwrap();
        assert_eq!(range["passive_mode"], "range");
        assert_eq!(
            range["passive_ports"],
            serde_json::json!({"first": 50000, "last": 50003})
        );
        assert_eq!(range["rules"].as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn one_port_follows_the_public_port_and_the_chain() {
        let r = NetworkRequirements::new(&Site {
            passive: PassiveMode::Same,
            control_port: 21,
            ..default_site()
        });
        assert_eq!(
            rule_lines(&r.render_nftables(Some(&Chain::parse("OUTPUT").unwrap()))),
            [
                "add rule inet filter output ct state established,related accept",
                "add rule inet filter output ip daddr 127.0.0.1 tcp dport 21 accept",
            ]
        );
        assert_eq!(
            rule_lines(&r.render_iptables(Some(&Chain::parse("iq_out").unwrap()))),
            [
                "*filter",
                "-A iq_out -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
                "-A iq_out -p tcp -d 127.0.0.1 --dport 21 -j ACCEPT",
                "COMMIT",
            ]
        );
    }
}
