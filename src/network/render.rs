//! The requirements rendered as text, as nftables rules and as iptables rules.

use std::fmt::Write as _;

use super::{Chain, Format, NetworkRequirements, PortRange};

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
    use crate::network::{PassiveMode, Site};
    use crate::network::tests::default_site;

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
}
