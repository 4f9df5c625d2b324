//! The FTPS server certificate: a self-signed development certificate is created on first
//! start when `ftps.self_signed` is on and neither file exists, and reused afterwards.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use std::sync::Arc;

use crate::config::{FtpsConfig, PassiveHost};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Which file is missing, then both paths: where the operator must put the pair (in a
    /// container, the volume to mount) is the first thing they need to know.
    #[error(
        "TLS {0} {1} not found: the FTPS server needs its PEM certificate chain at {2} and its key at {3}; \
         put both there (in a container: mount the directory that holds them), set ftps.cert/ftps.key \
         to where they are, or set ftps.self_signed = true for a development certificate"
    )]
    Missing(&'static str, String, String, String),
    #[error("cannot create the self-signed certificate: {0}")]
    Generate(String),
    #[error("cannot write {0}: {1}")]
    Write(String, std::io::Error),
    #[error(transparent)]
    Load(#[from] crate::tls::LoadError),
}

/// Makes sure `cfg.cert` and `cfg.key` exist; returns true if they were just created.
///
/// # Errors
/// Missing files with `self_signed` off, or a failure to create them.
pub fn ensure_certificate(cfg: &FtpsConfig) -> Result<bool, TlsError> {
    let (cert, key) = (cfg.cert.as_path(), cfg.key.as_path());
    match (cert.exists(), key.exists()) {
        (true, true) => return Ok(false),
        (false, false) if cfg.self_signed => {}
        (false, _) => return Err(missing("certificate", cert, cert, key)),
        (_, false) => return Err(missing("key", key, cert, key)),
    }
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    match cfg.passive_host() {
        Ok(PassiveHost::Ip(ip)) => names.push(ip.to_string()),
        Ok(PassiveHost::Dns(name)) => names.push(name),
        Err(_) => {}
    }
    names.sort();
    names.dedup();
    let ck = rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Generate(e.to_string()))?;
    write_file(cert, ck.cert.pem().as_bytes(), 0o644)?;
    write_file(key, ck.signing_key.serialize_pem().as_bytes(), 0o600)?;
    tracing::warn!(cert = %cert.display(), "created a self-signed TLS certificate for development; use a real one in production");
    Ok(true)
}

fn missing(what: &'static str, path: &Path, cert: &Path, key: &Path) -> TlsError {
    let show = |p: &Path| p.display().to_string();
    TlsError::Missing(what, show(path), show(cert), show(key))
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    let err = |e| TlsError::Write(path.display().to_string(), e);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)
}

/// The rustls configuration every control connection starts from: TLS 1.2 and 1.3, ring,
/// the configured certificate ([`crate::tls::server_config`]), and stateful resumption only
/// (session ids in TLS 1.2, ids as tickets in TLS 1.3): a stateless ticket could be replayed
/// on any session's data port, while a session id is something [`SessionTls`] can tie to one
/// control connection.
///
/// # Errors
/// Unreadable or unusable certificate or key.
pub fn server_config(cfg: &FtpsConfig) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut sc = crate::tls::server_config(&cfg.cert, &cfg.key)?;
    sc.session_storage = rustls::server::ServerSessionMemoryCache::new(SHARED_SESSIONS);
    Ok(Arc::new(sc))
}

/// Sessions remembered across control connections (an IQ that reconnects resumes).
const SHARED_SESSIONS: usize = 16 * 1024;
/// Sessions one control connection can hand to its data connections: those of the control
/// connection itself (its TLS 1.2 session, its TLS 1.3 tickets).
const SESSION_OWN: usize = 16;
/// Sessions issued on the session's data connections (TLS 1.3 sends two per handshake).
const SESSION_ISSUED: usize = 16;
/// TLS 1.3 tickets sent on a control connection (rustls' default). Each costs the server and
/// the client work on every login (measured: 8 instead of 2 cost 50 µs of server CPU per
/// session); a client that only uploads, and so never reads the tickets its data connections
/// are sent, can make two data connections per login.
const CONTROL_TICKETS: usize = 2;

/// TLS for one FTPS session: its control connection and its data connections.
///
/// A data connection belongs to its session only if it *resumes* a TLS session that this
/// control connection established or resumed (vsftpd's `require_ssl_reuse`): the control
/// connection's handshake writes the sessions it creates to the shared cache and to this
/// session's own small cache; data connections look sessions up in the own cache only. A
/// stranger at the IQ's address who connects to the passive port first cannot resume, so it
/// is turned away and the offer stays open for the IQ.
#[derive(Debug, Clone)]
pub struct SessionTls {
    control: Arc<rustls::ServerConfig>,
    data: Arc<rustls::ServerConfig>,
    keys: SessionKeys,
}

/// The keys of the TLS sessions a session's data connections may resume: what a ClientHello
/// names (`super::hello`) is checked against them to find its session in one-port mode.
#[derive(Debug, Clone)]
pub struct SessionKeys {
    own: Arc<rustls::server::ServerSessionMemoryCache>,
    issued: Arc<rustls::server::ServerSessionMemoryCache>,
}

impl SessionKeys {
    /// Keys of a session that holds `ids` (for tests of what routes by them).
    #[cfg(test)]
    pub fn with(ids: &[&[u8]]) -> Self {
        use rustls::server::StoresServerSessions as _;
        let own = rustls::server::ServerSessionMemoryCache::new(SESSION_OWN);
        for id in ids {
            own.put(id.to_vec(), b"session".to_vec());
        }
        SessionKeys {
            own,
            issued: rustls::server::ServerSessionMemoryCache::new(SESSION_ISSUED),
        }
    }

    /// Whether a data connection naming `id` would resume one of this session's sessions.
    pub fn knows(&self, id: &[u8]) -> bool {
        use rustls::server::StoresServerSessions as _;
        self.own.get(id).is_some() || self.issued.get(id).is_some()
    }
}

impl SessionTls {
    pub fn new(base: &Arc<rustls::ServerConfig>) -> Self {
        let own = rustls::server::ServerSessionMemoryCache::new(SESSION_OWN);
        let issued = rustls::server::ServerSessionMemoryCache::new(SESSION_ISSUED);
        let mut control = (**base).clone();
        // TLS 1.3 tickets are single use on the client side: a client resumes its first data
        // connections with these, later ones with tickets its data connections were sent.
        control.send_tls13_tickets = CONTROL_TICKETS;
        control.session_storage = Arc::new(ControlStore {
            shared: base.session_storage.clone(),
            own: own.clone(),
        });
        let mut data = (**base).clone();
        let keys = SessionKeys {
            own: own.clone(),
            issued: issued.clone(),
        };
        data.session_storage = Arc::new(DataStore { own, issued });
        SessionTls {
            control: Arc::new(control),
            data: Arc::new(data),
            keys,
        }
    }

    pub fn keys(&self) -> SessionKeys {
        self.keys.clone()
    }

    pub fn control(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.control.clone())
    }

    pub fn data(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.data.clone())
    }
}

/// The control connection's store: resumes from the shared cache, and copies every session
/// it creates or resumes into the session's own cache.
#[derive(Debug)]
struct ControlStore {
    shared: Arc<dyn rustls::server::StoresServerSessions>,
    own: Arc<rustls::server::ServerSessionMemoryCache>,
}

impl rustls::server::StoresServerSessions for ControlStore {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.own.put(key.clone(), value.clone());
        self.shared.put(key, value)
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        let v = self.shared.get(key)?;
        self.own.put(key.to_vec(), v.clone());
        Some(v)
    }

    /// TLS 1.3 asks to take (single use); the entry stays for the session's data connections
    /// and for clients (FileZilla, Python's `session=`) that offer one ticket more than once.
    /// Without 0-RTT a replayed ticket still needs a fresh key exchange.
    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.get(key)
    }

    fn can_cache(&self) -> bool {
        true
    }
}

/// A data connection's store: this session's sessions only — the control connection's, which
/// the tickets data connections are issued (kept apart) never push out.
#[derive(Debug)]
struct DataStore {
    own: Arc<rustls::server::ServerSessionMemoryCache>,
    issued: Arc<rustls::server::ServerSessionMemoryCache>,
}

impl rustls::server::StoresServerSessions for DataStore {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.issued.put(key, value)
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.own.get(key).or_else(|| self.issued.get(key))
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.get(key)
    }

    fn can_cache(&self) -> bool {
        true
    }
}

/// Whether a finished server handshake resumed a session (see [`SessionTls`]).
pub fn resumed(conn: &rustls::ServerConnection) -> bool {
    conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::server::StoresServerSessions;

    fn stores() -> (Arc<dyn StoresServerSessions>, ControlStore, DataStore) {
        let shared: Arc<dyn StoresServerSessions> = rustls::server::ServerSessionMemoryCache::new(64);
        let own = rustls::server::ServerSessionMemoryCache::new(SESSION_OWN);
        let control = ControlStore {
            shared: shared.clone(),
            own: own.clone(),
        };
        let data = DataStore {
            own,
            issued: rustls::server::ServerSessionMemoryCache::new(SESSION_ISSUED),
        };
        (shared, control, data)
    }

    #[test]
    fn a_missing_certificate_names_both_files_and_how_to_provide_them() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = FtpsConfig {
            cert: dir.path().join("server.crt"),
            key: dir.path().join("server.key"),
            self_signed: false,
            ..FtpsConfig::default()
        };
        let e = ensure_certificate(&cfg).unwrap_err().to_string();
        let (cert, key) = (cfg.cert.display().to_string(), cfg.key.display().to_string());
        assert!(
            e.starts_with(&format!("TLS certificate {cert} not found: ")),
            "{e}"
        );
        assert!(
            e.contains(&key) && e.contains("mount") && e.contains("self_signed = true"),
            "{e}"
        );
        std::fs::write(&cfg.cert, "").unwrap();
        let e = ensure_certificate(&cfg).unwrap_err().to_string();
        assert!(e.starts_with(&format!("TLS key {key} not found: ")), "{e}");
    }

    #[test]
    fn data_connections_resume_only_their_own_control_connections_sessions() {
        let (shared, control, data) = stores();
        control.put(b"mine".to_vec(), b"v".to_vec());
        assert_eq!(data.get(b"mine"), Some(b"v".to_vec()));
        // Another session's control connection wrote to the shared cache only.
        shared.put(b"theirs".to_vec(), b"w".to_vec());
        assert_eq!(
            data.get(b"theirs"),
            None,
            "another session's TLS session must not bind"
        );
        // A control connection that resumes a shared session can hand it to its data connections.
        assert_eq!(control.take(b"theirs"), Some(b"w".to_vec()));
        assert_eq!(data.get(b"theirs"), Some(b"w".to_vec()));
    }

    #[test]
    fn tickets_issued_on_data_connections_never_push_out_the_control_connections() {
        let (_, control, data) = stores();
        control.put(b"control".to_vec(), b"v".to_vec());
        for i in 0..1000u32 {
            data.put(i.to_be_bytes().to_vec(), b"d".to_vec());
        }
        // A client (Python's `session=`) offering the control connection's ticket every time.
        for _ in 0..100 {
            assert_eq!(data.take(b"control"), Some(b"v".to_vec()));
        }
    }
}
