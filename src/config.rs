//! Configuration (SPEC §2): one TOML file, every key overridable by `FWDIST_<SECTION>__<KEY>`,
//! defaults that make `fwdist serve` usable with no file at all. Relative paths are relative
//! to the working directory. Everything is validated once, at startup.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

pub use crate::domain::PassiveMode;
use crate::secret::Secret;

mod s3;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} not found")]
    Missing(PathBuf),
    #[error("invalid configuration: {0}")]
    Parse(String),
    #[error("invalid configuration: {key}: {msg}")]
    Invalid { key: &'static str, msg: String },
}

fn invalid(key: &'static str, msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key, msg: msg.into() }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Name of this server in download records (`node`); defaults to the host name.
    pub node: String,
    pub ftps: FtpsConfig,
    pub admin: AdminConfig,
    pub store: StoreConfig,
    pub db: DbConfig,
    pub signing: SigningConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FtpsConfig {
    /// Control port (explicit FTPS: AUTH TLS). Port 0 lets the system choose (for tests):
    /// the server logs the address it bound, and `network-requirements` then needs
    /// `public_port`.
    pub listen: SocketAddr,
    /// Inclusive passive port range, `"FIRST-LAST"`; or `"same"`: passive replies name the
    /// control port itself, and the front tells data connections from control connections
    /// on it (one port in the firewall, see [`PassiveMode::Same`]).
    pub passive_ports: String,
    /// IPv4 address or DNS name announced in PASV replies.
    pub public_host: String,
    /// PEM certificate chain and key.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Create a self-signed certificate at `cert`/`key` when both are missing (dev default;
    /// set to false in production so a missing certificate is an error).
    pub self_signed: bool,
    pub idle_timeout_secs: u64,
    /// Failed logins (same device and IP) before a lockout; 0 disables the lockout.
    pub max_failed_logins: u32,
    pub lockout_secs: u64,
    /// Record every RETR (SPEC §5). Only turn off to measure what recording costs.
    pub record_downloads: bool,
    /// The control port IQs connect to, when a NAT or port forward maps it to `listen`
    /// (default: the port of `listen`). Only used in `network-requirements` and `doctor`.
    pub public_port: Option<u16>,
    /// Concurrent control sessions from one client IP; the next one gets `421` at connect.
    /// Protects a site's uplink and the passive range from one busy NAT address. 0 = no limit.
    pub max_sessions_per_ip: u32,
    /// FTPS sessions in all; beyond, `421 Too many sessions; try again later`. 0: as many as
    /// the descriptor budget affords (logged at start); a value above that is lowered to it.
    pub max_sessions: u32,
    /// How long a passive port waits for the IQ's data connection. When it expires the port
    /// is freed and the command waiting on it gets `425`; a session's second unused offer
    /// closes it (libunftp alone would leave a RETR hanging).
    pub data_connect_timeout_secs: u64,
    /// The built-in `probe` account (password `probe`) used by `fwdist doctor`: it can read
    /// only `/probe.bin`, and logs in at most `probe_logins_per_minute` times per client IP.
    pub probe_enabled: bool,
    pub probe_logins_per_minute: u32,
    /// Every connection to the control port and the passive ports starts with a PROXY
    /// protocol v1 header from a TCP balancer (HAProxy `send-proxy`), naming the IQ's real
    /// address; connections without one are closed. Off by default (SPEC §13).
    pub proxy_protocol: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// The longest a client may take to send a request's head (request line and headers),
    /// counted from when the server starts waiting for it: the accept (the TLS handshake has
    /// the same bound) or the end of the previous response. Closes a slowloris connection
    /// and, since the wait between requests counts, an idle keep-alive connection too.
    pub header_timeout_secs: u64,
    /// A connection on which no byte moves for this long while the server waits on the
    /// client — for its next request, for a request body that stopped arriving, for it to
    /// read the response — is closed. A request the server is still working on is not.
    pub idle_timeout_secs: u64,
    /// Concurrent connections; more are accepted and closed at once, unanswered. Part of the
    /// descriptor budget ([`crate::descriptors`]), so the API cannot take what FTPS needs.
    pub max_connections: u32,
    /// PEM certificate chain and key, both or neither: with them the API speaks HTTPS only.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// The local store's directory (the embedded default). Not read when `url` is set, and
    /// setting both is refused.
    pub root: PathBuf,
    /// Object storage instead of `root`: `s3://BUCKET` or `s3://BUCKET/PREFIX`, shared by
    /// every node (SPEC §13).
    pub url: Option<String>,
    /// `http(s)://host[:port]` of an S3-compatible service (SeaweedFS, MinIO, ...); unset:
    /// AWS itself, or `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`. Plain `http` only when
    /// spelled out.
    pub endpoint: Option<String>,
    /// Unset: `AWS_REGION`, `AWS_DEFAULT_REGION`, else `us-east-1`.
    pub region: Option<String>,
    /// Both or neither; neither: `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (and
    /// `AWS_SESSION_TOKEN` if set). The secret is never printed or logged.
    pub access_key_id: Option<String>,
    #[serde(skip_serializing)]
    pub secret_access_key: Option<Secret>,
    /// Largest firmware image accepted on upload.
    pub max_image_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DbConfig {
    pub url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SigningConfig {
    /// Directory of trusted release keys (`*.pub`, SPKI PEM); read at every upload.
    pub trusted_keys: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node: default_node(),
            ftps: FtpsConfig::default(),
            admin: AdminConfig::default(),
            store: StoreConfig::default(),
            db: DbConfig::default(),
            signing: SigningConfig::default(),
        }
    }
}

impl Default for FtpsConfig {
    fn default() -> Self {
        FtpsConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 2121)),
            passive_ports: "50000-50049".into(),
            public_host: "127.0.0.1".into(),
            cert: "certs/server.crt".into(),
            key: "certs/server.key".into(),
            self_signed: true,
            idle_timeout_secs: 300,
            max_failed_logins: 5,
            lockout_secs: 300,
            record_downloads: true,
            public_port: None,
            max_sessions_per_ip: 16,
            max_sessions: 0,
            data_connect_timeout_secs: 5,
            probe_enabled: true,
            probe_logins_per_minute: 20,
            proxy_protocol: false,
        }
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            header_timeout_secs: 10,
            idle_timeout_secs: 60,
            max_connections: 256,
            cert: None,
            key: None,
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            root: "firmware-store".into(),
            url: None,
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            max_image_bytes: 4 << 30,
        }
    }
}

impl Default for DbConfig {
    fn default() -> Self {
        DbConfig {
            url: "sqlite://firmware-store/fwdist.sqlite".into(),
        }
    }
}

impl Default for SigningConfig {
    fn default() -> Self {
        SigningConfig {
            trusted_keys: "certs/release-keys".into(),
        }
    }
}

fn default_node() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "fwdist".into())
}

impl Config {
    /// Defaults, then the file (if given), then `FWDIST_*` environment variables; validated.
    ///
    /// # Errors
    /// Missing file, bad syntax, unknown keys, or values that fail [`Config::validate`].
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        // What the operator set, without the defaults: `store.root` has a default, and only
        // a root that was written down can conflict with `store.url`.
        let mut given = Figment::new();
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Missing(path.to_owned()));
            }
            given = given.merge(Toml::file(path));
        }
        let given = given.merge(
            Env::prefixed("FWDIST_")
                .filter(|k| is_config_var(k.as_str()))
                .split("__"),
        );
        Self::from_given(given)
    }

    /// Pure: a configuration file's text alone, with no environment (what [`Config::load`]
    /// does with the file, by the same code); validated.
    ///
    /// # Errors
    /// Bad syntax, unknown keys, or values that fail [`Config::validate`].
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::from_given(Figment::new().merge(Toml::string(text)))
    }

    /// Defaults under what the operator gave; validated.
    fn from_given(given: Figment) -> Result<Self, ConfigError> {
        let root_given = given.find_value("store.root").is_ok();
        let cfg: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(given)
            .extract()
            .map_err(|e| ConfigError::Parse(e.to_string()))?;
        if root_given && cfg.store.url.is_some() {
            return Err(invalid(
                "store.root",
                "set store.root (a local store) or store.url (object storage), not both: with store.url no release lives under store.root",
            ));
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// # Errors
    /// The first invalid value, naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.ftps.passive_mode()?;
        self.ftps.passive_host()?;
        if !(1..=86_400 * 7).contains(&self.ftps.idle_timeout_secs) {
            return Err(invalid("ftps.idle_timeout_secs", "must be 1-604800"));
        }
        if !(1..=15).contains(&self.ftps.data_connect_timeout_secs) {
            // libunftp's own, fixed wait is 15 s; a longer bound would never fire.
            return Err(invalid("ftps.data_connect_timeout_secs", "must be 1-15"));
        }
        if self.ftps.probe_logins_per_minute == 0 {
            return Err(invalid(
                "ftps.probe_logins_per_minute",
                "must be above 0 (to turn the probe account off, set ftps.probe_enabled = false)",
            ));
        }
        if self.ftps.public_port == Some(0) {
            return Err(invalid("ftps.public_port", "must be 1-65535"));
        }
        if self.ftps.proxy_protocol
            && !self.ftps.listen.ip().is_unspecified()
            && self.ftps.public_host.trim().parse::<IpAddr>().ok() == Some(self.ftps.listen.ip())
        {
            // IQs would be told to open data connections to the node itself, past the balancer
            // and so without a PROXY header: every one would be refused.
            return Err(invalid(
                "ftps.public_host",
                "with ftps.proxy_protocol = true it must be the balancer's address, not the node's own (ftps.listen)",
            ));
        }
        self.admin.validate()?;
        if self.node.is_empty() || self.node.len() > 64 {
            return Err(invalid("node", "must be 1-64 characters"));
        }
        self.store.s3()?;
        let scheme = self.db.url.split_once("://").map(|(s, _)| s);
        if !matches!(scheme, Some("sqlite" | "postgres" | "postgresql")) {
            // The URL may hold a password: name only its scheme.
            return Err(invalid(
                "db.url",
                format!(
                    "scheme {:?} is not supported: use sqlite://PATH or postgres://USER:PASSWORD@HOST/DB",
                    scheme.unwrap_or("")
                ),
            ));
        }
        if self.store.max_image_bytes == 0 {
            return Err(invalid("store.max_image_bytes", "must be above 0"));
        }
        Ok(())
    }
}

impl AdminConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        // A day at most: deadlines are added to the clock, which must not overflow.
        if !(1..=86_400).contains(&self.header_timeout_secs) {
            return Err(invalid("admin.header_timeout_secs", "must be 1-86400"));
        }
        if !(1..=86_400).contains(&self.idle_timeout_secs) {
            return Err(invalid("admin.idle_timeout_secs", "must be 1-86400"));
        }
        if self.max_connections == 0 {
            return Err(invalid("admin.max_connections", "must be above 0"));
        }
        match (&self.cert, &self.key) {
            (Some(_), None) => Err(invalid("admin.key", "must be set with admin.cert")),
            (None, Some(_)) => Err(invalid("admin.cert", "must be set with admin.key")),
            _ => Ok(()),
        }
    }

    /// The PEM certificate chain and key, when the API speaks HTTPS.
    pub fn tls_files(&self) -> Option<(&Path, &Path)> {
        Some((self.cert.as_deref()?, self.key.as_deref()?))
    }
}

/// Which `FWDIST_*` variables are configuration: `FWDIST_<SECTION>__<KEY>` and `FWDIST_NODE`.
/// Others (`FWDIST_DEVICE_SECRET` for `fetch`/`doctor`, test switches) are not, and must not
/// make `serve` refuse to start as unknown keys.
fn is_config_var(key_after_prefix: &str) -> bool {
    key_after_prefix.contains("__") || key_after_prefix.eq_ignore_ascii_case("node")
}

/// What PASV replies announce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassiveHost {
    Ip(std::net::Ipv4Addr),
    Dns(String),
}

impl FtpsConfig {
    /// # Errors
    /// Unless `passive_ports` is `same` or `FIRST-LAST` with 1024 <= FIRST <= LAST.
    pub fn passive_mode(&self) -> Result<PassiveMode, ConfigError> {
        let key = "ftps.passive_ports";
        if self.passive_ports.trim().eq_ignore_ascii_case(PassiveMode::SAME) {
            return Ok(PassiveMode::Same);
        }
        let msg = || {
            invalid(
                key,
                format!(
                    "{:?}: expected FIRST-LAST, e.g. 50000-50049, or \"same\" (the control port)",
                    self.passive_ports
                ),
            )
        };
        let (a, b) = self.passive_ports.split_once('-').ok_or_else(msg)?;
        let a: u16 = a.trim().parse().map_err(|_| msg())?;
        let b: u16 = b.trim().parse().map_err(|_| msg())?;
        if a < 1024 || a > b {
            return Err(invalid(key, format!("{a}-{b}: need 1024 <= FIRST <= LAST")));
        }
        if (a..=b).contains(&self.listen.port()) {
            return Err(invalid(
                key,
                "must not contain the control port (for one port, write \"same\")",
            ));
        }
        Ok(PassiveMode::Range(a..=b))
    }

    /// The control port as IQs see it.
    pub fn public_control_port(&self) -> u16 {
        self.public_port.unwrap_or(self.listen.port())
    }

    /// What decides an IQ's firewall rules, for [`crate::network`].
    ///
    /// # Errors
    /// An invalid passive range or host (already refused at startup).
    pub fn network_site(&self) -> Result<crate::network::Site, ConfigError> {
        if self.public_control_port() == 0 {
            return Err(invalid(
                "ftps.listen",
                "port 0 is only chosen when the server starts; set ftps.public_port to the port IQs use",
            ));
        }
        let (host, host_is_dns_name) = match self.passive_host()? {
            PassiveHost::Ip(ip) => (ip.to_string(), false),
            PassiveHost::Dns(name) => (name, true),
        };
        Ok(crate::network::Site {
            host,
            host_is_dns_name,
            control_port: self.public_control_port(),
            passive: self.passive_mode()?,
            max_sessions_per_ip: self.max_sessions_per_ip,
            data_connect_timeout_secs: self.data_connect_timeout_secs,
            probe_enabled: self.probe_enabled,
        })
    }

    /// # Errors
    /// An IPv6 literal (PASV can only announce IPv4) or an invalid DNS name.
    pub fn passive_host(&self) -> Result<PassiveHost, ConfigError> {
        let h = self.public_host.trim();
        match h.parse::<IpAddr>() {
            Ok(IpAddr::V4(ip)) => Ok(PassiveHost::Ip(ip)),
            Ok(IpAddr::V6(_)) => Err(invalid(
                "ftps.public_host",
                "PASV can only announce an IPv4 address",
            )),
            Err(_) => {
                let ok = !h.is_empty()
                    && h.len() <= 253
                    && h.split('.').all(|l| {
                        !l.is_empty()
                            && l.len() <= 63
                            && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
                    });
                if ok {
                    Ok(PassiveHost::Dns(h.to_owned()))
                } else {
                    Err(invalid(
                        "ftps.public_host",
                        format!("{h:?} is neither an IPv4 address nor a DNS name"),
                    ))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_spec_defaults() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.ftps.listen.to_string(), "127.0.0.1:2121");
        assert_eq!(c.ftps.passive_mode().unwrap(), PassiveMode::Range(50000..=50049));
        assert_eq!(c.admin.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(
            (
                c.admin.header_timeout_secs,
                c.admin.idle_timeout_secs,
                c.admin.max_connections
            ),
            (10, 60, 256)
        );
        assert_eq!(c.admin.tls_files(), None);
        assert_eq!(c.store.root, PathBuf::from("firmware-store"));
        assert_eq!(c.db.url, "sqlite://firmware-store/fwdist.sqlite");
        assert_eq!(c.signing.trusted_keys, PathBuf::from("certs/release-keys"));
    }

    #[test]
    fn example_file_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fwdist.example.toml");
        let c = Config::load(Some(&path)).unwrap();
        assert_eq!(c.ftps.passive_mode().unwrap(), PassiveMode::Range(50000..=50049));
    }

    #[test]
    fn a_file_text_parses_as_the_file_does() {
        let text = include_str!("../fwdist.example.toml");
        let c = Config::from_toml(text).unwrap();
        assert_eq!(c.ftps.passive_mode().unwrap(), PassiveMode::Range(50000..=50049));
        let c = Config::from_toml("[ftps]\npassive_ports = \"same\"\n").unwrap();
        assert_eq!(c.ftps.passive_mode().unwrap(), PassiveMode::Same);
        for bad in [
            "[ftps]\nbogus = 1\n",
            "[ftps]\npassive_ports = \"80-90\"\n",
            "[ftps",
            "node = \"\"\n",
        ] {
            assert!(Config::from_toml(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bad_values_name_their_key() {
        let mut c = Config::default();
        for bad in ["", "50000", "b-c", "50010-50000", "80-90", "2121-2200", "1-70000"] {
            c.ftps.passive_ports = bad.into();
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("ftps.passive_ports"), "{bad}: {e}");
        }
        for same in ["same", " SAME ", "Same"] {
            c.ftps.passive_ports = same.into();
            assert_eq!(c.ftps.passive_mode().unwrap(), PassiveMode::Same, "{same:?}");
        }
        c = Config::default();
        c.ftps.data_connect_timeout_secs = 16;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("data_connect_timeout_secs")
        );
        c = Config::default();
        c.ftps.probe_logins_per_minute = 0;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("probe_enabled = false")
        );
        c = Config::default();
        // Port 0 is allowed (the server reports what it bound) but names no firewall rule.
        c.ftps.listen = "127.0.0.1:0".parse().unwrap();
        assert!(c.validate().is_ok());
        assert!(
            c.ftps
                .network_site()
                .unwrap_err()
                .to_string()
                .contains("ftps.public_port")
        );
        c.ftps.public_port = Some(2100);
        assert_eq!(c.ftps.network_site().unwrap().control_port, 2100);
        c.ftps.listen = "127.0.0.1:2121".parse().unwrap();
        c = Config::default();
        c.ftps.public_port = Some(0);
        assert!(c.validate().unwrap_err().to_string().contains("public_port"));
        c = Config::default();
        c.ftps.public_host = "::1".into();
        assert!(c.validate().unwrap_err().to_string().contains("public_host"));
        c.ftps.public_host = "fw.example.com".into();
        assert_eq!(
            c.ftps.passive_host().unwrap(),
            PassiveHost::Dns("fw.example.com".into())
        );
    }

    #[test]
    fn behind_a_balancer_the_public_host_is_the_balancers() {
        let mut c = Config::default();
        c.ftps.proxy_protocol = true;
        c.ftps.listen = "10.0.0.11:2121".parse().unwrap();
        c.ftps.public_host = "10.0.0.11".into();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("ftps.public_host") && e.contains("balancer"), "{e}");
        c.ftps.public_host = "10.0.0.2".into();
        c.validate().unwrap();
        // A wildcard listen address cannot be compared; a name is the operator's to choose.
        c.ftps.listen = "0.0.0.0:2121".parse().unwrap();
        c.ftps.public_host = "10.0.0.11".into();
        c.validate().unwrap();
        c.ftps.proxy_protocol = false;
        c.ftps.listen = "10.0.0.11:2121".parse().unwrap();
        c.validate().unwrap();
    }

    #[test]
    fn admin_limits_are_above_zero_and_tls_files_come_in_pairs() {
        for (key, set) in [
            (
                "admin.header_timeout_secs",
                (|c| c.header_timeout_secs = 0) as fn(&mut AdminConfig),
            ),
            ("admin.idle_timeout_secs", |c| c.idle_timeout_secs = 0),
            ("admin.max_connections", |c| c.max_connections = 0),
            ("admin.key", |c| c.cert = Some("a.crt".into())),
            ("admin.cert", |c| c.key = Some("a.key".into())),
        ] {
            let mut c = Config::default();
            set(&mut c.admin);
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(key), "{key}: {e}");
        }
        let mut c = Config::default();
        c.admin.cert = Some("a.crt".into());
        c.admin.key = Some("a.key".into());
        c.validate().unwrap();
        assert_eq!(
            c.admin.tls_files(),
            Some((Path::new("a.crt"), Path::new("a.key")))
        );
    }

    #[test]
    fn only_section_variables_are_configuration() {
        assert!(is_config_var("FTPS__LISTEN"));
        assert!(
            is_config_var("ftps__typo"),
            "typos in a section are still refused later"
        );
        assert!(is_config_var("NODE"));
        assert!(!is_config_var("DEVICE_SECRET"));
        assert!(!is_config_var("SYSTEM_TESTS"));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[ftps]\nlisten_typo = \"x\"\n").unwrap();
        assert!(Config::load(Some(&p)).is_err());
        assert!(matches!(
            Config::load(Some(&dir.path().join("nope.toml"))),
            Err(ConfigError::Missing(_))
        ));
    }

    #[test]
    fn the_default_site_is_what_network_tests_assume() {
        let mut c = Config::default();
        assert_eq!(
            c.ftps.network_site().unwrap(),
            crate::network::tests::default_site()
        );
        c.ftps.public_port = Some(21);
        c.ftps.public_host = "fw.example.com".into();
        let site = c.ftps.network_site().unwrap();
        assert_eq!((site.control_port, site.host_is_dns_name), (21, true));
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
        let want = crate::network::NetworkRequirements::new(&Config::default().ftps.network_site().unwrap())
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
