//! What an IQ's network must allow, derived from the live FTPS configuration (SPEC §6
//! `GET /network-requirements`). Pure: no I/O.

use serde::Serialize;

use crate::config::{ConfigError, FtpsConfig, PassiveHost};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NetworkRequirements {
    /// Every rule is outbound from the IQ; it needs no inbound rule at all.
    pub direction: &'static str,
    pub inbound: &'static str,
    pub rules: Vec<Rule>,
    pub tls_versions: [&'static str; 2],
    pub notes: Vec<&'static str>,
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

impl NetworkRequirements {
    /// # Errors
    /// An invalid passive range or host (already refused at startup).
    pub fn from_config(cfg: &FtpsConfig) -> Result<Self, ConfigError> {
        let host = match cfg.passive_host()? {
            PassiveHost::Ip(ip) => ip.to_string(),
            PassiveHost::Dns(name) => name,
        };
        let passive = cfg.passive_range()?;
        let control = cfg.listen.port();
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
                    host,
                    first_port: *passive.start(),
                    last_port: *passive.end(),
                },
            ],
            tls_versions: ["1.2", "1.3"],
            notes: vec![
                "explicit FTPS (AUTH TLS) on the control port; TLS on every data connection",
                "passive mode only: the IQ opens every connection, so no inbound rule is needed",
                "FTP-aware firewall helpers (ALG, nf_conntrack_ftp) cannot read the encrypted PASV reply: allow the passive range explicitly",
            ],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
